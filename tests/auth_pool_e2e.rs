//! The auth workers under slow webhooks, through the drachtio double: phones (the UDP load
//! generator) → double → sbc-sidecar → the accounts' webhooks (real HTTP servers that answer
//! late) and Redis. What a phone sees: every REGISTER answered once, another account's
//! phones served while one account's webhook keeps its requests waiting, `503` with
//! `Retry-After` when an account's share is used up, and `sbcctl status` naming who holds the
//! workers. No assertion measures a duration: the webhooks answer after seconds, and the
//! checks are about what has been answered before that.

use std::thread;
use std::time::{Duration, Instant};

use redis::Commands;
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::loadgen::{LoadGen, LoadResult, Pace, User};
use sbc_test_tools::webhook::WebhookServer;

const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "pool-e2e-pw";

struct Account {
    sid: String,
    realm: String,
    hook: WebhookServer,
}

struct Rig {
    _db: TestDb,
    double: Double,
    daemon: Daemon,
    slow: Account,
    fast: Account,
}

impl Rig {
    /// Two accounts with webhooks of their own; the `slow` one's answers after `slow_delay`.
    fn start(slow_delay: Duration, env_extra: &[(&str, &str)]) -> Rig {
        let db = TestDb::create();
        let account = |name: &str| {
            let hook = WebhookServer::start();
            let realm = format!("{name}{:08x}.sip.example.com", rand::random::<u32>());
            let sid = db.add_webhook_account(name, &realm, &hook.url("/auth"), "pool-secret");
            Account { sid, realm, hook }
        };
        let slow = account("slow");
        let fast = account("fast");
        slow.hook.delay(slow_delay);
        let double = Double::start(DoubleConfig::default()).unwrap();
        let mut env = base_env(double.admin_addr().port(), &db.name);
        env.insert("JAMBONES_LOGLEVEL".into(), "info".into());
        // The slow webhook answers within the timeout: it is slow, not dead.
        env.insert("SBC_WEBHOOK_TIMEOUT_MS".into(), "15000".into());
        for (k, v) in env_extra {
            env.insert(k.to_string(), v.to_string());
        }
        let daemon = Daemon::start(env, &[]);
        assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());
        Rig { _db: db, double, daemon, slow, fast }
    }

    /// `n` users of `account` from `source`, known to its webhook.
    fn phones(&self, account: &Account, source: &'static str, n: usize) -> (LoadGen, Vec<User>) {
        let gen = LoadGen::new(&[source], self.double.sip_addr(), &account.realm, 3600).unwrap();
        let users: Vec<User> = (0..n)
            .map(|i| User { name: format!("p{i}-{:x}", rand::random::<u16>()), password: PASSWORD.into(), socket: 0 })
            .collect();
        for u in &users {
            account.hook.set_password(&u.name, PASSWORD);
        }
        (gen, users)
    }

    /// The `status` reply's data, as the CLI socket gives it.
    fn status_json(&self) -> serde_json::Value {
        let reply = raw_status(&self.daemon);
        reply.get("data").cloned().unwrap_or(reply)
    }

    fn forget(&self, account: &Account, users: &[User]) {
        if let Ok(mut r) = redis::Client::open("redis://127.0.0.1:6379/").and_then(|c| c.get_connection()) {
            for u in users {
                let key = format!("user:{}@{}", u.name, account.realm);
                let _: Result<(), _> = r.del(&key);
                let _: Result<(), _> = r.zrem("active-user", &key);
            }
        }
    }
}

/// `status` over the CLI socket, as the Node CLI sends it: one JSON line each way.
fn raw_status(daemon: &Daemon) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let path = &daemon.socket_path;
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("CLI socket");
    stream.write_all(b"{\"action\":\"status\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).expect("a JSON reply")
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn run_in_background(gen: LoadGen, users: Vec<User>, pace: Pace) -> thread::JoinHandle<LoadResult> {
    thread::spawn(move || gen.run(&users, pace, Duration::from_secs(30), Duration::from_secs(60)))
}

/// A burst of one account's phones waits on its webhook; another account's phones are
/// authenticated by their own webhook meanwhile — before the slow one has answered a single
/// request — and every phone of both ends with 200. With the fixed pool of 8 workers the
/// second account's REGISTERs waited behind the burst.
#[test]
fn a_slow_webhooks_burst_does_not_hold_up_another_accounts_phones() {
    let rig = Rig::start(Duration::from_secs(4), &[]);
    let (slow_gen, slow_users) = rig.phones(&rig.slow, "127.0.0.71", 40);
    let (fast_gen, fast_users) = rig.phones(&rig.fast, "127.0.0.72", 20);
    let slow_names: Vec<User> = slow_users.clone();
    let burst = run_in_background(slow_gen, slow_users, Pace::Window(40));
    wait_until("the burst reaches the slow webhook", WAIT, || rig.slow.hook.request_count() >= 40);

    // While all forty wait on their webhook: the auth workers' load, by account.
    let status = rig.status_json();
    let auth = &status["auth"];
    assert_eq!(auth["in_flight"], 40, "{status}");
    assert_eq!(auth["accounts"][0]["account_sid"], rig.slow.sid.as_str(), "{status}");
    assert_eq!(auth["accounts"][0]["in_flight"], 40, "{status}");
    assert!(auth["threads"].as_u64().unwrap() >= 40, "a thread per authentication in flight: {status}");
    let (code, out, err) = rig.daemon.sbcctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("auth: 40 running (at most 512, 128 per account while others wait), 0 waiting"), "{out}");
    assert!(out.contains(&format!("  account {}: 40 running, 0 waiting", rig.slow.sid)), "{out}");

    let fast = fast_gen.run(&fast_users, Pace::Window(4), Duration::from_secs(30), Duration::from_secs(60));
    assert_eq!((fast.ok, fast.failed), (20, 0), "statuses {:?}", fast.statuses);
    eprintln!(
        "the other account during the burst: p50 {:?}, p99 {:?} (its webhook answers at once)",
        fast.percentile(0.5),
        fast.percentile(0.99)
    );
    // The slow webhook has not answered yet: the fast account did not wait for it.
    assert!(
        rig.slow.hook.requests().len() >= 40 && !burst.is_finished(),
        "the burst finished before the other account was served"
    );
    let burst = burst.join().unwrap();
    assert_eq!((burst.ok, burst.failed), (40, 0), "statuses {:?}", burst.statuses);
    assert_eq!(rig.fast.hook.request_count(), 20);
    rig.forget(&rig.slow, &slow_names);
    rig.forget(&rig.fast, &fast_users);
}

/// With room for 8 authentications and a share of a quarter (2, borrowing up to 6) and a queue
/// of 8 (2 per account): of a burst of 20 from one account, 6 run, 2 wait, 12 get 503 with
/// Retry-After at once; the other account still registers. The threads never exceed the
/// bound.
#[test]
fn one_account_gets_its_share_and_borrowed_room_and_the_rest_is_503() {
    let rig = Rig::start(
        Duration::from_secs(3),
        &[
            ("SBC_AUTH_WORKERS", "2"),
            ("SBC_AUTH_MAX_INFLIGHT", "8"),
            ("SBC_AUTH_ACCOUNT_SHARE", "25"),
            ("SBC_AUTH_QUEUE", "8"),
        ],
    );
    let (slow_gen, slow_users) = rig.phones(&rig.slow, "127.0.0.73", 20);
    let (fast_gen, fast_users) = rig.phones(&rig.fast, "127.0.0.74", 4);
    let slow_names = slow_users.clone();
    // Paced a little (5 ms apart), so that the reader's queue in front of the triage thread,
    // which is as small as the auth queue here, never fills: the refusals are the pool's.
    let burst = run_in_background(slow_gen, slow_users, Pace::Rate { per_second: 200.0, max_in_flight: 20 });
    wait_until("six reach the slow webhook", WAIT, || rig.slow.hook.request_count() >= 6);
    wait_until("the refused ones are answered", WAIT, || {
        let auth = &rig.status_json()["auth"];
        auth["refused"].as_u64() == Some(12) && auth["waiting"].as_u64() == Some(2)
    });
    let status = rig.status_json();
    assert_eq!(status["auth"]["in_flight"], 6, "{status}");
    assert_eq!(status["auth"]["max_in_flight"], 8, "{status}");
    assert_eq!(status["auth"]["account_share"], 2, "{status}");

    let fast = fast_gen.run(&fast_users, Pace::Window(2), Duration::from_secs(30), Duration::from_secs(60));
    assert_eq!((fast.ok, fast.failed), (4, 0), "statuses {:?}", fast.statuses);
    assert!(!burst.is_finished(), "the other account was served while the burst still waited");

    let burst = burst.join().unwrap();
    assert_eq!(burst.ok, 8, "statuses {:?}", burst.statuses);
    assert_eq!(burst.statuses.get(&503), Some(&12), "statuses {:?}", burst.statuses);
    assert_eq!(rig.slow.hook.request_count(), 8, "the refused ones never reached the webhook");
    let status = rig.status_json();
    assert!(status["auth"]["peak_threads"].as_u64().unwrap() <= 8, "{status}");
    assert!(rig.daemon.log().contains("authentications waiting too long"), "one warning:\n{}", rig.daemon.log());
    rig.forget(&rig.slow, &slow_names);
    rig.forget(&rig.fast, &fast_users);
}

/// SIGTERM while authentications wait on a slow webhook: the ones in flight finish (200), the
/// ones still queued get 503, no phone is left without a final answer, and the daemon exits 0.
#[test]
fn shutdown_answers_every_registration_the_workers_hold() {
    let mut rig = Rig::start(
        Duration::from_millis(1500),
        &[("SBC_AUTH_MAX_INFLIGHT", "8"), ("SBC_AUTH_ACCOUNT_SHARE", "100"), ("SBC_SHUTDOWN_GRACE_MS", "5000")],
    );
    let (gen, users) = rig.phones(&rig.slow, "127.0.0.75", 20);
    let names = users.clone();
    let burst = run_in_background(gen, users, Pace::Window(20));
    wait_until("eight reach the slow webhook", WAIT, || rig.slow.hook.request_count() >= 8);
    wait_until("twelve wait for a worker", WAIT, || rig.status_json()["auth"]["waiting"].as_u64() == Some(12));
    let status = rig.daemon.stop(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "log:\n{}", rig.daemon.log());
    let burst = burst.join().unwrap();
    assert_eq!(burst.ok, 8, "the eight in flight finished: {:?}", burst.statuses);
    assert_eq!(burst.statuses.get(&503), Some(&12), "the queued ones were refused: {:?}", burst.statuses);
    assert_eq!(burst.statuses.get(&408), None, "none left unanswered: {:?}", burst.statuses);
    let mut r = sbc_test_tools::services::redis();
    let stored = names
        .iter()
        .filter(|u| r.exists::<_, bool>(format!("user:{}@{}", u.name, rig.slow.realm)).unwrap_or(false))
        .count();
    assert_eq!(stored, 8, "a binding for each 200");
    rig.forget(&rig.slow, &names);
}

/// An HTTPS webhook: the daemon keeps its connections alive, so forty registrations, four at
/// a time, cost a handful of TLS handshakes, not one each. The webhook's certificate is signed
/// by the tests' own CA, which the daemon trusts through `SSL_CERT_FILE` (the system trust store
/// it reads otherwise).
#[test]
fn an_https_webhook_is_not_paid_a_tls_handshake_per_register() {
    use sbc_test_tools::https_webhook::HttpsWebhook;
    use sbc_test_tools::tls::{Pki, ServerCert};
    let pki = Pki::generate();
    let hook = HttpsWebhook::start(pki.server_cert(ServerCert::Trusted));
    let db = TestDb::create();
    let realm = format!("tls{:08x}.sip.example.com", rand::random::<u32>());
    db.add_webhook_account("tls", &realm, &hook.url("/auth"), "tls-secret");
    let double = Double::start(DoubleConfig::default()).unwrap();
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("JAMBONES_LOGLEVEL".into(), "info".into());
    env.insert("SSL_CERT_FILE".into(), pki.ca.display().to_string());
    let daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());
    let gen = LoadGen::new(&["127.0.0.76"], double.sip_addr(), &realm, 3600).unwrap();
    let users: Vec<User> =
        (0..40).map(|i| User { name: format!("t{i}"), password: PASSWORD.into(), socket: 0 }).collect();
    let result = gen.run(&users, Pace::Window(4), Duration::from_secs(30), Duration::from_secs(60));
    assert_eq!((result.ok, result.failed), (40, 0), "statuses {:?}\nlog:\n{}", result.statuses, daemon.log());
    assert_eq!(hook.request_count(), 40);
    let handshakes = hook.handshakes();
    eprintln!("{handshakes} TLS handshakes for 40 webhook calls");
    assert!(handshakes <= 8, "{handshakes} TLS handshakes for 40 webhook calls, 4 at a time");
    let mut r = sbc_test_tools::services::redis();
    for u in &users {
        let key = format!("user:{}@{realm}", u.name);
        let _: Result<(), _> = r.del(&key);
        let _: Result<(), _> = r.zrem("active-user", &key);
    }
}
