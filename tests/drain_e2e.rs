//! SIGTERM in the middle of a REGISTER load: the drain leaves no transaction unanswered.
//!
//! UDP phones → drachtio double → sbc-sidecar (webhook authentication against a real HTTP
//! server that takes its time, bindings in real Redis) → double → phones. The phones count
//! every transaction by `(Call-ID, CSeq)`.

use std::time::{Duration, Instant};

use redis::Commands;
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::regload::{Phone, RegLoad, Transport};
use sbc_test_tools::webhook::WebhookServer;

const WAIT: Duration = Duration::from_secs(10);
const SOURCES: [&str; 4] = ["127.0.0.61", "127.0.0.62", "127.0.0.63", "127.0.0.64"];

/// Starts REGISTERs at `rate` per second (each phone one transaction at a time) until
/// `until`, pumping answers all along.
fn drive(load: &mut RegLoad, rate: f64, from: Instant, until: Instant, started: &mut u64) {
    let phones = load.phones.len();
    let mut next = 0usize;
    while Instant::now() < until {
        let due = (from.elapsed().as_secs_f64() * rate) as u64;
        let mut tries = 0;
        while *started < due && tries < phones {
            if load.begin_register(next % phones) {
                *started += 1;
            }
            next += 1;
            tries += 1;
        }
        if !load.pump() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn sigterm_under_400_registers_per_second_leaves_no_transaction_unanswered() {
    let db = TestDb::create();
    let hook = WebhookServer::start();
    hook.keep_alive(true);
    // Slow enough that the auth workers hold requests when SIGTERM arrives.
    hook.delay(Duration::from_millis(40));
    let realm = format!("drain{:08x}.example.com", rand::random::<u32>());
    db.add_webhook_account("drain", &realm, &hook.url("/auth"), "drain-secret");
    let double = Double::start(DoubleConfig::default()).unwrap();
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("JAMBONES_NETWORK_CIDR".into(), "127.0.0.0/8".into());
    env.insert("JAMBONES_LOGLEVEL".into(), "info".into());
    let mut daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());

    let mut load = RegLoad::new(&SOURCES, Transport::Udp, double.sip_addr(), &realm, 600, Duration::from_secs(20))
        .expect("phone sockets");
    for i in 0..1000 {
        let name = format!("d{i}");
        let password = format!("pw-{i}");
        hook.set_password(&name, &password);
        load.add_phone(Phone::new(&name, &password, i % SOURCES.len()));
    }

    let start = Instant::now();
    let mut started = 0u64;
    drive(&mut load, 400.0, start, start + Duration::from_millis(2500), &mut started);
    daemon.signal("TERM");
    // The load goes on through the drain and after the exit (the double then answers 503).
    drive(&mut load, 400.0, start, start + Duration::from_millis(5000), &mut started);
    load.settle(Duration::from_secs(25));
    let status = daemon.wait_exit(Duration::from_secs(20)).map(|s| s.code());
    let log = daemon.log();

    let totals = load.totals();
    eprintln!("drain test tally: {:?}", load.tally);
    let summary = format!("{:#?}\ndaemon log (end):\n{}", load.tally, tail(&log, 4000));
    assert!(totals.sent >= 1000, "the load ran: {summary}");
    assert_eq!(status, Some(Some(0)), "exit 0 after the drain: {summary}");
    assert!(log.contains("SIGTERM received"), "{summary}");
    assert_eq!(totals.unanswered, 0, "every REGISTER got a final response: {summary}");
    assert_eq!(totals.conflicting, 0, "no REGISTER got two different final responses: {summary}");
    assert_eq!(totals.aborted, 0, "UDP has no connection to lose: {summary}");
    assert_eq!(totals.answered, totals.sent, "{summary}");
    let statuses = |kind: &str| load.tally.get(kind).map(|k| k.statuses.clone()).unwrap_or_default();
    assert!(statuses("register-auth").get(&200).copied().unwrap_or(0) > 0, "registrations succeeded: {summary}");
    let refused: u64 = load.tally.values().map(|k| k.statuses.get(&503).copied().unwrap_or(0)).sum();
    assert!(refused > 0, "the drain and the exit were under load (503s): {summary}");

    // Every phone told 200 has its binding.
    let mut r = sbc_test_tools::services::redis();
    for g in load.take_granted() {
        let key = format!("user:{}", g.aor);
        let ttl: i64 = r.ttl(&key).unwrap();
        assert!(ttl > 0, "{key} told 200 but stored with TTL {ttl}");
    }
    for p in &load.phones {
        let key = format!("user:{}@{realm}", p.name);
        let _: Result<(), _> = r.del(&key);
        let _: Result<(), _> = r.zrem("active-user", &key);
    }
}

fn tail(s: &str, n: usize) -> String {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    s[start..].to_string()
}
