//! `sbcctl status` explains failing registrations: a hanging webhook shows as an open breaker
//! for its account and as 503s in the minute's REGISTER outcomes; an unreachable Redis shows
//! as down, since when, with its error. The real daemon, the drachtio double, a real HTTP
//! webhook, MariaDB and Redis; phones written by hand over UDP.

use std::time::Duration;

use mysql::prelude::Queryable;
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::node_sidecar::{authorization, challenge_nonce, status_of, RawPhone};
use sbc_test_tools::sipp;
use sbc_test_tools::webhook::WebhookServer;

const WAIT: Duration = Duration::from_secs(10);

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn json_status(daemon: &Daemon) -> serde_json::Value {
    let (code, out, err) = daemon.sbcctl(&["--json", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_hanging_webhook_shows_as_an_open_breaker_and_503s() {
    let db = TestDb::create();
    let hook = WebhookServer::start();
    hook.delay(Duration::from_secs(3));
    let realm = format!("st{:08x}.example.com", rand::random::<u32>());
    let hook_sid = uuid();
    let account_sid = uuid();
    let mut c = db.conn();
    c.exec_drop(
        "INSERT INTO webhooks (webhook_sid, url, method) VALUES (?, ?, 'POST')",
        (&hook_sid, hook.url("/auth")),
    )
    .unwrap();
    c.exec_drop(
        "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, \
         is_active, webhook_secret) VALUES (?, 'status', ?, ?, ?, 1, 'wh')",
        (&account_sid, &realm, uuid(), &hook_sid),
    )
    .unwrap();
    let double = Double::start(DoubleConfig::default()).unwrap();
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("SBC_WEBHOOK_TIMEOUT_MS".into(), "300".into());
    let daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());

    let before = json_status(&daemon);
    assert_eq!(before["webhooks"]["open_breakers"], serde_json::json!([]), "{before}");
    assert_eq!(before["register"]["503"], 0, "{before}");

    // Three authentications time out (breaker threshold 3), the fourth is refused at once.
    let phone = RawPhone::new("127.0.0.246", double.sip_addr());
    let mut answers = Vec::new();
    for i in 0..4u32 {
        let challenge = phone.register(&realm, "sam", 2 * i + 1, None);
        assert_eq!(status_of(&challenge), 401, "{challenge}");
        let nonce = challenge_nonce(&challenge).unwrap();
        let resp = phone.register(&realm, "sam", 2 * i + 2, Some(&authorization(&realm, "sam", "pw", &nonce)));
        answers.push(status_of(&resp));
    }
    assert_eq!(answers[3], 503, "the open breaker refuses: {answers:?}\nlog:\n{}", daemon.log());

    let status = json_status(&daemon);
    let open = status["webhooks"]["open_breakers"].as_array().expect("a list");
    assert_eq!(open.len(), 1, "{status}");
    assert_eq!(open[0]["account_sid"], account_sid.as_str());
    assert_eq!(open[0]["timeouts"], 3);
    assert!(open[0]["retry_in_s"].as_u64().is_some_and(|s| (1..=10).contains(&s)), "{status}");
    let register = &status["register"];
    assert_eq!(register["window_s"], 60);
    assert_eq!(register["401"], 4, "{status}");
    let unavailable = register["503"].as_u64().unwrap();
    let refusals = answers.iter().filter(|s| **s == 503).count() as u64;
    assert_eq!(unavailable, refusals, "every 503 the phone got is counted: {answers:?} {status}");
    let total: u64 = ["200", "401", "403", "503", "5xx", "other"].iter().map(|k| register[k].as_u64().unwrap()).sum();
    assert_eq!(total, 8, "one count per final response: {status}");
    assert_eq!(status["stores"]["redis"]["reachable"], true, "{status}");
    assert_eq!(status["stores"]["mysql"]["reachable"], true, "{status}");
    assert_eq!(status["bans"]["active"], 0);

    let (code, text, _) = daemon.sbcctl(&["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("webhook breakers open: 1"), "{text}");
    assert!(text.contains(&format!("account {account_sid}: 3 timeouts in a row")), "{text}");
    assert!(text.contains(&format!("REGISTER answers, last 60 s: 200=0 401=4 403=0 503={unavailable}")), "{text}");
    assert!(text.contains("redis: reachable"), "{text}");
}

#[test]
fn an_unreachable_redis_shows_as_down_with_its_error() {
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).unwrap();
    let mut env = base_env(double.admin_addr().port(), &db.name);
    let closed = sipp::free_port("127.0.0.1");
    env.insert("JAMBONES_REDIS_PORT".into(), closed.to_string());
    let daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());

    let status = json_status(&daemon);
    let redis = &status["stores"]["redis"];
    assert_eq!(redis["reachable"], false, "{status}");
    let error = redis["last_error"].as_str().expect("the error");
    assert!(error.contains("redis unavailable"), "{error}");
    assert!(redis["since_ms"].as_u64().is_some_and(|ms| ms > 0), "{status}");
    assert_eq!(status["stores"]["mysql"]["reachable"], true, "{status}");

    let (code, text, _) = daemon.sbcctl(&["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("redis: DOWN"), "{text}");
    assert!(text.contains("last error"), "{text}");
    assert!(text.contains("mysql: reachable"), "{text}");
}
