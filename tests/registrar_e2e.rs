//! Phones registering through the drachtio double: sipp → double → sbc-sidecar (webhook
//! authentication against a real HTTP server, bindings in real Redis) → double → sipp.

use std::time::{Duration, Instant};

use redis::Commands;
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
// A phone written by hand over UDP, for what sipp cannot do: send a captured Authorization
// again, byte for byte, from another socket.
use sbc_test_tools::node_sidecar::{authorization, challenge_nonce, header_of, status_of, RawPhone};
use sbc_test_tools::sipp::{self, Sipp};
use sbc_test_tools::soak_servers::PrivateRedis;
use sbc_test_tools::webhook::WebhookServer;

const WAIT: Duration = Duration::from_secs(10);
const WEBHOOK_SECRET: &str = "wh-secret-e2e";

struct Rig {
    _db: TestDb,
    hook: WebhookServer,
    double: Double,
    daemon: Daemon,
    realm: String,
    redis_port: u16,
}

impl Rig {
    fn start(env_extra: &[(&str, String)]) -> Rig {
        let db = TestDb::create();
        let hook = WebhookServer::start();
        let realm = format!("r{:08x}.sip.example.com", rand::random::<u32>());
        db.add_webhook_account("e2e", &realm, &hook.url("/auth"), WEBHOOK_SECRET);
        let double = Double::start(DoubleConfig::default()).unwrap();
        let mut env = base_env(double.admin_addr().port(), &db.name);
        env.insert("JAMBONES_NETWORK_CIDR".into(), "127.0.0.0/8".into());
        let mut redis_port = 6379;
        for (k, v) in env_extra {
            if *k == "JAMBONES_REDIS_PORT" {
                redis_port = v.parse().unwrap();
            }
            env.insert(k.to_string(), v.clone());
        }
        let daemon = Daemon::start(env, &[]);
        assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());
        Rig { _db: db, hook, double, daemon, realm, redis_port }
    }

    /// Users for an injection file: `user;password;realm;[authentication …]`. The scenarios
    /// answer each challenge with the user's own credentials from the fourth field (the
    /// registrar requires the digest username to be the To user); the webhook knows every
    /// password.
    fn users(&self, prefix: &str, n: usize) -> Vec<Vec<String>> {
        let password = format!("pw-{prefix}-{:x}", rand::random::<u32>());
        (0..n)
            .map(|i| {
                let user = format!("{prefix}{i}");
                self.hook.set_password(&user, &password);
                let auth = format!("[authentication username={user} password={password}]");
                vec![user, password.clone(), self.realm.clone(), auth]
            })
            .collect()
    }

    fn sipp(&self, scenario: &str, ip: &'static str, users: &[Vec<String>], transport: &'static str) -> sipp::SippRun {
        let inf = sipp::injection_file(users);
        let mut s = Sipp::new(scenario, &self.double.sip_addr().to_string(), ip, sipp::free_port(ip));
        s.transport = transport;
        s.calls = users.len() as u32;
        s.timeout = Duration::from_secs(30);
        s.extra = vec![
            "-inf".into(),
            inf.display().to_string(),
            // the digest uri is the Request-URI, as phones compute it
            "-auth_uri".into(),
            self.realm.clone(),
            "-r".into(),
            "100".into(),
            "-l".into(),
            "200".into(),
        ];
        let run = s.run();
        let _ = std::fs::remove_dir_all(inf.parent().unwrap());
        run
    }

    fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.redis_port)).unwrap().get_connection().unwrap()
    }

    fn binding(&self, user: &str) -> Option<serde_json::Value> {
        let raw: Option<String> = self.redis().get(format!("user:{user}@{}", self.realm)).unwrap();
        raw.map(|r| serde_json::from_str(&r).unwrap())
    }

    fn forget(&self, users: &[Vec<String>]) {
        if let Ok(mut r) =
            redis::Client::open(format!("redis://127.0.0.1:{}/", self.redis_port)).and_then(|c| c.get_connection())
        {
            for u in users {
                let key = format!("user:{}@{}", u[0], self.realm);
                let _: Result<(), _> = r.del(&key);
                let _: Result<(), _> = r.zrem("active-user", &key);
            }
        }
    }
}

/// The `Expires` of the response to the scenario's third REGISTER (the cached refresh), from
/// sipp's message log.
fn cached_expires(run: &sipp::SippRun) -> Option<u32> {
    run.messages
        .split("-----------------------------------------------")
        .filter(|block| block.contains("message received") && block.contains("CSeq: 3 REGISTER"))
        .find_map(|block| block.lines().find_map(|l| l.strip_prefix("Expires: ")).and_then(|v| v.trim().parse().ok()))
}

fn assert_ok(run: &sipp::SippRun, rig: &Rig, what: &str) {
    assert_eq!(
        run.status,
        Some(0),
        "{what}: {}\n{}\nmessages:\n{}\nlog:\n{}",
        run.stdout.lines().filter(|l| l.contains("Successful") || l.contains("Failed")).collect::<Vec<_>>().join("\n"),
        run.stderr,
        run.messages.chars().take(6000).collect::<String>(),
        rig.daemon.log().chars().rev().take(6000).collect::<String>().chars().rev().collect::<String>()
    );
}

#[test]
fn a_phone_registers_over_udp_with_webhook_auth_and_refreshes_from_cache() {
    let rig = Rig::start(&[]);
    let users = rig.users("alice", 1);
    let run = rig.sipp("register_auth.xml", "127.0.0.51", &users, "u1");
    assert_ok(&run, &rig, "register over UDP");
    // UDP: the phone is told 30 s, Redis keeps the full grant
    assert!(run.messages.contains("Expires: 30\r") || run.messages.contains("Expires: 30\n"), "{}", run.messages);
    assert_eq!(cached_expires(&run), Some(30), "the cached refresh over UDP: {}", run.messages);
    let b = rig.binding("alice0").expect("binding stored");
    let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "contact",
            "sbcAddress",
            "privateSbcAddress",
            "protocol",
            "proxy",
            "allow_direct_app_calling",
            "allow_direct_queue_calling",
            "allow_direct_user_calling",
            "expiryTime"
        ],
        "{b}"
    );
    assert_eq!(b["sbcAddress"], rig.double.hostports());
    assert_eq!(b["privateSbcAddress"], format!("127.0.0.1:{}", rig.double.sip_addr().port()));
    assert_eq!(b["protocol"], "udp");
    assert!(b["proxy"].as_str().unwrap().starts_with("sip:127.0.0.51:"), "{b}");
    assert!(b["contact"].as_str().unwrap().starts_with("sip:alice0@127.0.0.51:"), "{b}");
    let ttl: i64 = rig.redis().ttl(format!("user:alice0@{}", rig.realm)).unwrap();
    assert!((3590..=3600).contains(&ttl), "TTL is the full grant: {ttl}");
    // the webhook was called once (the cached refresh did not call it), with a valid signature
    let reqs = rig.hook.requests();
    assert_eq!(reqs.len(), 1, "one webhook call for challenge + auth + cached refresh");
    assert!(reqs[0].header("jambonz-signature").is_some_and(|s| s.starts_with("t=")));
    assert_eq!(reqs[0].payload()["source_address"], "127.0.0.51");
    rig.forget(&users);
}

#[test]
fn a_phone_registers_over_tcp_and_is_told_the_whole_grant() {
    let rig = Rig::start(&[]);
    rig.hook.ok_fields(serde_json::json!({"expires": 600, "call_hook": "https://example.com/call"}));
    let users = rig.users("bob", 1);
    let run = rig.sipp("register_auth.xml", "127.0.0.52", &users, "t1");
    assert_ok(&run, &rig, "register over TCP");
    assert!(run.messages.contains("Expires: 600"), "TCP gets the grant: {}", run.messages);
    // the refresh answered from the cache tells the seconds the binding has left, not 30
    let told = cached_expires(&run).unwrap_or_else(|| panic!("no cached reply in {}", run.messages));
    assert!((590..=600).contains(&told), "cached reply over TCP says {told}: {}", run.messages);
    let b = rig.binding("bob0").expect("binding stored");
    assert_eq!(b["protocol"], "tcp");
    assert_eq!(b["callHook"], "https://example.com/call");
    rig.forget(&users);
}

#[test]
fn unregister_removes_the_binding() {
    let rig = Rig::start(&[]);
    let users = rig.users("carol", 1);
    assert_ok(&rig.sipp("register_auth.xml", "127.0.0.53", &users, "u1"), &rig, "register");
    assert!(rig.binding("carol0").is_some());
    assert_ok(&rig.sipp("unregister_auth.xml", "127.0.0.53", &users, "u1"), &rig, "unregister");
    assert!(rig.binding("carol0").is_none(), "binding deleted");
    let score: Option<f64> = rig.redis().zscore("active-user", format!("user:carol0@{}", rig.realm)).unwrap();
    assert_eq!(score, None, "active-user member removed");
}

#[test]
fn two_hundred_phones_register_at_once() {
    // Six threads at most (the pool grows beyond SBC_AUTH_WORKERS while work waits, up to
    // SBC_AUTH_MAX_INFLIGHT), so at most six webhook connections whatever the machine's speed.
    let rig = Rig::start(&[("SBC_AUTH_WORKERS", "6".into()), ("SBC_AUTH_MAX_INFLIGHT", "6".into())]);
    rig.hook.keep_alive(true);
    let users = rig.users("crowd", 200);
    let run = rig.sipp("register_auth.xml", "127.0.0.54", &users, "u1");
    assert_ok(&run, &rig, "200 registrations");
    let mut r = rig.redis();
    let stored = users.iter().filter(|u| r.exists::<_, bool>(format!("user:{}@{}", u[0], rig.realm)).unwrap()).count();
    assert_eq!(stored, 200);
    // A kept-alive webhook connection is reused: at most one per auth worker is ever opened
    // (tests/registrar_auth_pool.rs has the test that loads every worker at once).
    assert_eq!(rig.hook.request_count(), 200, "one webhook call per registration");
    let opened = rig.hook.connection_count();
    assert!(opened <= 6, "{opened} webhook connections for 200 calls from 6 workers");
    rig.forget(&users);
}

#[test]
fn redis_going_away_gives_503_and_registrations_resume_when_it_returns() {
    // A Redis server of this test's own, on a port outside the ephemeral range so that no other
    // socket takes it while it is down: it can be stopped without disturbing other tests.
    let dir = std::env::temp_dir().join(format!("sbc-e2e-redis-{}", std::process::id()));
    let mut redis = PrivateRedis::start(&dir).unwrap_or_else(|e| panic!("private redis: {e}"));
    let rig = Rig::start(&[("JAMBONES_REDIS_PORT", redis.port.to_string())]);
    let before = rig.users("early", 1);
    assert_ok(&rig.sipp("register_auth.xml", "127.0.0.55", &before, "u1"), &rig, "before the outage");
    redis.kill();
    let during = rig.users("during", 1);
    assert_ok(&rig.sipp("register_unavailable.xml", "127.0.0.55", &during, "u1"), &rig, "503 during the outage");
    redis.restart().unwrap_or_else(|e| panic!("private redis again: {e}"));
    // While Redis is down the registrar tries it at most every 500 ms (StoreHealth); a device
    // answered 503 in that window comes back after Retry-After. This one comes after it.
    std::thread::sleep(Duration::from_millis(600));
    let after = rig.users("after", 1);
    assert_ok(&rig.sipp("register_auth.xml", "127.0.0.55", &after, "u1"), &rig, "after Redis returned");
    assert!(rig.binding("after0").is_some());
    let mut daemon = rig.daemon;
    assert!(daemon.is_running(), "no crash");
    redis.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_webhook_raises_an_alert_in_influxdb_and_response_times_reach_statsd() {
    let influx = sbc_test_tools::influx::Influxd::start();
    let statsd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    statsd.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let rig = Rig::start(&[
        ("ENABLE_METRICS", "1".to_string()),
        ("STATS_PORT", statsd.local_addr().unwrap().port().to_string()),
        ("SBC_TIME_SERIES_PORT", influx.port.to_string()),
    ]);
    rig.hook.fixed(404, "no such user");
    let users = rig.users("dave", 1);
    assert_ok(&rig.sipp("register_404.xml", "127.0.0.56", &users, "u1"), &rig, "404 from the webhook");
    // the challenge and the rejection, each with its status tag
    let mut datagrams = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < WAIT && !datagrams.iter().any(|d: &String| d.contains("#status:404")) {
        if let Ok(n) = statsd.recv(&mut buf) {
            datagrams.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(
        datagrams
            .iter()
            .any(|d| d.starts_with("sbc.registration.total.response_time:") && d.ends_with("|h|#status:401")),
        "{datagrams:?}"
    );
    assert!(datagrams.iter().any(|d| d.ends_with("|h|#status:404")), "{datagrams:?}");
    // the alert is flushed at the latest when the daemon stops
    let mut daemon = rig.daemon;
    assert_eq!(daemon.stop(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
    assert!(influx.wait_for_count(1, WAIT) >= 1, "alert written");
    let rows = influx.query("SELECT * FROM alerts");
    let row = rows
        .iter()
        .find(|r| r.get("alert_type").and_then(|v| v.as_str()) == Some("webhook-failure"))
        .expect("webhook-failure alert");
    assert_eq!(row["message"], format!("{} returned 404", rig.hook.url("/auth")));
    assert!(row.get("account_sid").and_then(|v| v.as_str()).is_some_and(|s| s.len() == 36), "{row:?}");
    assert!(rows.iter().all(|r| r.values().all(|v| v != "undefined")), "no undefined tags");
}

/// The Authorization a phone sends for `user`/`password` in answer to `challenge`.
fn answer(challenge: &str, realm: &str, user: &str, password: &str) -> String {
    authorization(realm, user, password, &challenge_nonce(challenge).expect("a challenge"))
}

#[test]
fn a_captured_authorization_sent_again_from_another_socket_is_challenged_and_changes_nothing() {
    let rig = Rig::start(&[]);
    rig.hook.set_password("vic", "vic-pw");
    let phone = RawPhone::new("127.0.0.58", rig.double.sip_addr());
    let challenge = phone.register(&rig.realm, "vic", 1, None);
    assert_eq!(status_of(&challenge), 401, "{challenge}");
    let captured = answer(&challenge, &rig.realm, "vic", "vic-pw");
    let ok = phone.register(&rig.realm, "vic", 2, Some(&captured));
    assert_eq!(status_of(&ok), 200, "{ok}\nlog:\n{}", rig.daemon.log());
    let contact = rig.binding("vic").expect("binding")["contact"].as_str().unwrap().to_string();
    assert!(contact.starts_with("sip:vic@127.0.0.58:"), "{contact}");

    let attacker = RawPhone::new("127.0.0.59", rig.double.sip_addr());
    let replay = attacker.register(&rig.realm, "vic", 2, Some(&captured));
    assert_eq!(status_of(&replay), 401, "{replay}");
    assert!(header_of(&replay, "WWW-Authenticate").is_some_and(|w| !w.contains("stale")), "{replay}");
    assert_eq!(rig.binding("vic").unwrap()["contact"], contact.as_str(), "the binding is the phone's still");
    assert_eq!(rig.hook.request_count(), 1, "the replay never reached the webhook");
    // The nonce was issued to the phone's address: from another address it does not verify,
    // and that proves nothing about the sender, so it is not counted either.
    assert!(rig.daemon.log().contains("nonce not issued to this source"), "{}", rig.daemon.log());
    rig.forget(&[vec!["vic".to_string()]]);
}

#[test]
fn wrong_passwords_from_one_source_ban_it_and_sbcctl_lifts_the_ban() {
    let influx = sbc_test_tools::influx::Influxd::start();
    let rig = Rig::start(&[("SBC_TIME_SERIES_PORT", influx.port.to_string())]);
    rig.hook.set_password("wes", "wes-pw");
    let guesser = RawPhone::new("127.0.0.60", rig.double.sip_addr());
    let mut cseq = 0;
    let mut attempt = |password: &str| {
        cseq += 2;
        let challenge = guesser.register(&rig.realm, "wes", cseq - 1, None);
        assert_eq!(status_of(&challenge), 401, "{challenge}");
        guesser.register(&rig.realm, "wes", cseq, Some(&answer(&challenge, &rig.realm, "wes", password)))
    };
    for i in 1..=10 {
        let r = attempt(&format!("guess-{i}"));
        assert_eq!(status_of(&r), 403, "attempt {i}: {r}");
        assert_eq!(header_of(&r, "X-Reason"), Some("Invalid credentials"), "attempt {i}");
    }
    assert_eq!(rig.hook.request_count(), 10);
    // now refused before any challenge or webhook call
    let refused = guesser.register(&rig.realm, "wes", 100, None);
    assert_eq!(status_of(&refused), 403, "{refused}");
    assert_eq!(header_of(&refused, "X-Reason"), Some("Too many failed authentications"));
    assert_eq!(rig.hook.request_count(), 10);
    assert!(rig.daemon.log().contains("source=127.0.0.60 banned for 300 s after 10 failed authentications"));

    // the phone of the real user, elsewhere, is not affected
    let phone = RawPhone::new("127.0.0.61", rig.double.sip_addr());
    let challenge = phone.register(&rig.realm, "wes", 1, None);
    let ok = phone.register(&rig.realm, "wes", 2, Some(&answer(&challenge, &rig.realm, "wes", "wes-pw")));
    assert_eq!(status_of(&ok), 200, "{ok}");

    let (code, out, err) = rig.daemon.sbcctl(&["bans"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("127.0.0.60"), "{out}");
    assert!(!out.contains("127.0.0.61"), "{out}");
    let (code, out, err) = rig.daemon.sbcctl(&["bans", "clear", "127.0.0.60"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(status_of(&guesser.register(&rig.realm, "wes", 200, None)), 401, "challenged again after the clear");
    rig.forget(&[vec!["wes".to_string()]]);

    // One alert for the ban, read back from InfluxDB (flushed at the latest when the daemon stops).
    let mut daemon = rig.daemon;
    assert_eq!(daemon.stop(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
    influx.wait_for_count(1, WAIT);
    let rows = influx.query("SELECT * FROM alerts");
    let bans: Vec<_> = rows
        .iter()
        .filter(|r| r.get("message").and_then(|v| v.as_str()).is_some_and(|m| m.starts_with("registrations from")))
        .collect();
    assert_eq!(bans.len(), 1, "one alert per ban: {rows:?}");
    assert_eq!(
        bans[0]["message"],
        "registrations from 127.0.0.60 refused for 300 s after 10 failed authentications within 60 s"
    );
    assert!(!rows.iter().any(|r| r.values().any(|v| v.as_str().is_some_and(|t| t.contains("guess-")))), "no password");
}

/// Issue 19: digest-utils read `username=bob` out of the quoted opaque, while the webhook (which
/// also gets the raw header) reads `alice`. The registrar now never searches quoted strings,
/// and refuses with 400, before any webhook call, a header that a strict reader reads otherwise.
#[test]
fn a_username_inside_a_quoted_string_is_not_the_username() {
    let rig = Rig::start(&[]);
    rig.hook.set_password("alice", "alice-pw");
    let phone = RawPhone::new("127.0.0.57", rig.double.sip_addr());
    let challenge = phone.register(&rig.realm, "alice", 1, None);
    assert_eq!(status_of(&challenge), 401, "{challenge}");
    let honest = answer(&challenge, &rig.realm, "alice", "alice-pw");
    let confusing = honest.replacen("Digest ", "Digest opaque=\"x username=bob\", ", 1);
    let ok = phone.register(&rig.realm, "alice", 2, Some(&confusing));
    assert_eq!(status_of(&ok), 200, "{ok}\nlog:\n{}", rig.daemon.log());
    let requests = rig.hook.requests();
    assert_eq!(requests.len(), 1);
    let payload = requests[0].payload();
    assert_eq!(payload["username"], "alice", "{payload:?}");
    assert_eq!(payload["opaque"], "x username=bob", "{payload:?}");

    // Two readings (digest-utils cuts the quoted value at its comma): 400, no webhook call.
    // Another user, so that no cached registration answers.
    rig.hook.set_password("carol", "carol-pw");
    let challenge = phone.register(&rig.realm, "carol", 1, None);
    assert_eq!(status_of(&challenge), 401, "{challenge}");
    let cut = answer(&challenge, &rig.realm, "carol", "carol-pw").replacen("Digest ", "Digest opaque=\"a, b\", ", 1);
    let refused = phone.register(&rig.realm, "carol", 2, Some(&cut));
    assert_eq!(status_of(&refused), 400, "{refused}");
    assert_eq!(rig.hook.request_count(), 1, "the ambiguous header never reached the webhook");
    assert!(rig.binding("carol").is_none());
    rig.forget(&[vec!["alice".to_string()], vec!["carol".to_string()]]);
}
