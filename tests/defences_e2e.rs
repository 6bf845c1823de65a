//! The registrar's defences tried as an attacker would, through the drachtio double, against
//! the daemon with real Redis, MariaDB and webhooks — and each time the real phone that the
//! defence protects, which must not pay for it.
//!
//! On loopback a "forged" source is a socket bound to the victim's address on another port: it
//! sends what a blind spoofer could send (made-up nonces, nonces fetched from its own address)
//! and never uses what comes back to the victim's address.

use std::thread;
use std::time::{Duration, Instant};

use redis::Commands;
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::loadgen::{LoadGen, Pace, User};
use sbc_test_tools::node_sidecar::{authorization, challenge_nonce, header_of, status_of, RawPhone};
use sbc_test_tools::sipp::{self, Sipp};
use sbc_test_tools::webhook::WebhookServer;

const WAIT: Duration = Duration::from_secs(10);

struct Account {
    realm: String,
    hook: WebhookServer,
}

struct Rig {
    _db: TestDb,
    double: Double,
    daemon: Daemon,
    accounts: Vec<Account>,
}

impl Rig {
    /// `n` accounts, each with a registration webhook of its own.
    fn start(n: usize, env_extra: &[(&str, &str)]) -> Rig {
        let db = TestDb::create();
        let accounts = (0..n)
            .map(|i| {
                let hook = WebhookServer::start();
                let realm = format!("d{i}x{:08x}.sip.example.com", rand::random::<u32>());
                db.add_webhook_account("defences", &realm, &hook.url("/auth"), "defences-secret");
                Account { realm, hook }
            })
            .collect();
        let double = Double::start(DoubleConfig::default()).unwrap();
        let mut env = base_env(double.admin_addr().port(), &db.name);
        env.insert("JAMBONES_LOGLEVEL".into(), "info".into());
        for (k, v) in env_extra {
            env.insert(k.to_string(), v.to_string());
        }
        let daemon = Daemon::start(env, &[]);
        assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());
        Rig { _db: db, double, daemon, accounts }
    }

    fn redis(&self) -> redis::Connection {
        sbc_test_tools::services::redis()
    }

    fn forget(&self, realm: &str, users: &[&str]) {
        let mut r = self.redis();
        for u in users {
            let key = format!("user:{u}@{realm}");
            let _: Result<(), _> = r.del(&key);
            let _: Result<(), _> = r.zrem("active-user", &key);
        }
    }
}

/// A blind spoofer sends, with the office's source address, answers to nonces it made up and
/// answers with a wrong password to a nonce it fetched from its own address. Neither can be
/// verified for that address, so neither counts: the phone behind the address registers,
/// refreshes from the cache, and `sbcctl bans` lists nothing. On the code before, twenty
/// such packets banned the office for five minutes.
#[test]
fn a_blind_spoofer_cannot_ban_the_phone_behind_an_address() {
    let rig = Rig::start(1, &[]);
    let acct = &rig.accounts[0];
    acct.hook.set_password("office", "office-pw");
    let office_ip = "127.0.0.90";
    let forged = RawPhone::new(office_ip, rig.double.sip_addr());
    let own = RawPhone::new("127.0.0.91", rig.double.sip_addr());
    for i in 0..15u32 {
        let made_up = format!("{}.{:016x}.{:032x}", 1_800_000_000 + i, i, i);
        let auth = authorization(&acct.realm, "office", "guess", &made_up);
        assert_eq!(status_of(&forged.register(&acct.realm, "office", 10 + i, Some(&auth))), 401);
        let challenge = own.register(&acct.realm, "office", 100 + i, None);
        let nonce = challenge_nonce(&challenge).expect("a challenge for the attacker's own address");
        let auth = authorization(&acct.realm, "office", "guess", &nonce);
        let r = forged.register(&acct.realm, "office", 200 + i, Some(&auth));
        assert_eq!(status_of(&r), 401, "a nonce of another address is challenged again: {r}");
    }
    assert_eq!(acct.hook.request_count(), 0, "nothing the spoofer sent reached the webhook");
    let (code, out, err) = rig.daemon.sbcctl(&["bans"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(office_ip), "the office address is not banned:\n{out}");

    let phone = RawPhone::new(office_ip, rig.double.sip_addr());
    let challenge = phone.register(&acct.realm, "office", 1, None);
    assert_eq!(status_of(&challenge), 401, "{challenge}");
    let auth = authorization(&acct.realm, "office", "office-pw", &challenge_nonce(&challenge).unwrap());
    let ok = phone.register(&acct.realm, "office", 2, Some(&auth));
    assert_eq!(status_of(&ok), 200, "{ok}\nlog:\n{}", rig.daemon.log());
    let refresh = phone.register(&acct.realm, "office", 3, None);
    assert_eq!((status_of(&refresh), header_of(&refresh, "Expires")), (200, Some("30")), "cached: {refresh}");
    assert_eq!(acct.hook.request_count(), 1);
    rig.forget(&acct.realm, &["office"]);
}

/// 300 answers to genuine challenges, each with a fresh cnonce but a digest uri naming neither
/// the Request-URI nor this SBC, are refused with 400 — and leave no one-time key behind: the
/// claim is made only after every local check passed. (Before, each left an
/// `sbc-nonce-use:` key for six minutes.)
#[test]
fn refused_answers_leave_nothing_in_redis() {
    use sbc_sidecar::registrar::credentials::NonceUse;
    use sbc_sidecar::registrar::replay;
    let rig = Rig::start(1, &[]);
    let acct = &rig.accounts[0];
    acct.hook.set_password("mallory", "m-pw");
    let attacker = RawPhone::new("127.0.0.92", rig.double.sip_addr());
    let challenge = attacker.register(&acct.realm, "mallory", 1, None);
    let nonce = challenge_nonce(&challenge).expect("a challenge");
    let mut keys = Vec::new();
    for i in 0..300u32 {
        let cnonce = format!("{i:08x}");
        let auth = authorization(&acct.realm, "mallory", "m-pw", &nonce)
            .replace(&format!("uri=\"sip:{}\"", acct.realm), "uri=\"sip:elsewhere.example.com\"")
            .replace("cnonce=\"4a5b6c7d\"", &format!("cnonce=\"{cnonce}\""));
        let r = attacker.register(&acct.realm, "mallory", 10 + i, Some(&auth));
        assert_eq!(status_of(&r), 400, "{r}");
        keys.push(replay::key(&nonce, &NonceUse { nc: 1, cnonce }));
    }
    let mut redis = rig.redis();
    let left = keys.iter().filter(|k| redis.exists::<_, bool>(k.as_str()).unwrap_or(true)).count();
    assert_eq!(left, 0, "one-time keys written for refused answers");
    assert_eq!(acct.hook.request_count(), 0);
}

/// sipp's own REGISTER computes the digest uri as `sip:<registrar ip>:<port>`, the address it
/// sends to, as gateways configured with a proxy address do; it registers (no `-auth_uri`).
#[test]
fn sipps_default_digest_uri_registers() {
    let rig = Rig::start(1, &[]);
    let acct = &rig.accounts[0];
    acct.hook.set_password("sippy", "sippy-pw");
    let ip = "127.0.0.93";
    let mut s = Sipp::new("register_user.xml", &rig.double.sip_addr().to_string(), ip, sipp::free_port(ip));
    s.keys = &[];
    s.extra = ["-s", "sippy", "-ap", "sippy-pw", "-key", "realm", acct.realm.as_str()]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let run = s.run();
    assert_eq!(run.status, Some(0), "sipp: {}\n{}\nlog:\n{}", run.stderr, run.messages, rig.daemon.log());
    let uri = format!("uri=\"sip:{}\"", rig.double.sip_addr());
    assert!(run.messages.contains(&uri), "sipp answered with its default digest uri {uri}:\n{}", run.messages);
    let stored: Option<String> = rig.redis().get(format!("user:sippy@{}", acct.realm)).unwrap();
    assert!(stored.is_some(), "binding stored");
    rig.forget(&acct.realm, &["sippy"]);
}

/// One account floods well-formed wrong answers through a webhook that takes 2 s, from many
/// sources at 200/s; another account's phones register at 20/s meanwhile. They all get 200
/// (no 503): the flood holds threads of its own account only. Their latencies are printed,
/// not asserted (timing belongs to the bench).
#[test]
fn a_flood_of_wrong_answers_for_one_account_does_not_refuse_another() {
    let rig = Rig::start(2, &[("SBC_WEBHOOK_TIMEOUT_MS", "10000")]);
    let (flooded, other) = (&rig.accounts[0], &rig.accounts[1]);
    flooded.hook.delay(Duration::from_secs(2));
    // 40 sources, so that bans (10 failures each) do not end the flood early.
    let sources: Vec<String> = (0..40).map(|i| format!("127.0.1.{}", 10 + i)).collect();
    let source_refs: Vec<&str> = sources.iter().map(String::as_str).collect();
    let flood_gen = LoadGen::new(&source_refs, rig.double.sip_addr(), &flooded.realm, 3600).unwrap();
    let flood_users: Vec<User> = (0..800)
        .map(|i| User { name: format!("f{i}"), password: "wrong".into(), socket: i % flood_gen.socket_count() })
        .collect();
    for u in &flood_users {
        flooded.hook.set_password(&u.name, "right");
    }
    let flood = thread::spawn(move || {
        flood_gen.run(
            &flood_users,
            Pace::Rate { per_second: 200.0, max_in_flight: 800 },
            Duration::from_secs(20),
            Duration::from_secs(40),
        )
    });
    thread::sleep(Duration::from_secs(1));
    let gen = LoadGen::new(&["127.0.0.94"], rig.double.sip_addr(), &other.realm, 3600).unwrap();
    let users: Vec<User> =
        (0..60).map(|i| User { name: format!("o{i}"), password: "o-pw".into(), socket: 0 }).collect();
    for u in &users {
        other.hook.set_password(&u.name, "o-pw");
    }
    let started = Instant::now();
    let result = gen.run(
        &users,
        Pace::Rate { per_second: 20.0, max_in_flight: 60 },
        Duration::from_secs(20),
        Duration::from_secs(40),
    );
    assert_eq!((result.ok, result.failed), (60, 0), "statuses {:?}", result.statuses);
    eprintln!(
        "other account during the flood: {} registrations in {:?}, p50 {:?}, p99 {:?}",
        result.ok,
        started.elapsed(),
        result.percentile(0.5),
        result.percentile(0.99)
    );
    let flood = flood.join().unwrap();
    assert_eq!(flood.ok, 0, "wrong passwords never register: {:?}", flood.statuses);
    assert!(flooded.hook.request_count() > 0, "the flood reached its webhook");
    let names: Vec<String> = (0..60).map(|i| format!("o{i}")).collect();
    rig.forget(&other.realm, &names.iter().map(String::as_str).collect::<Vec<_>>());
}
