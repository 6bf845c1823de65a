//! Outbound registration, gateway pings and `sbc_addresses` with real parts: carriers and
//! gateways are rows in a throw-away MariaDB database, the registrars and gateways are sipp
//! UAS instances on their own 127.0.0.x addresses, Redis is the real one, and the roles run in
//! process with a real `DrachtioClient` connected to the drachtio double (which puts our
//! REGISTERs and OPTIONS on the wire and makes up the 408 of a silent peer).
//!
//! Every test has its own database, cluster id (hence leader key) and IP addresses, and every
//! wait is bounded.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, unbounded, Sender};
use mysql::prelude::Queryable;
use sbc_sidecar::config::RegbotMode;
use sbc_sidecar::drachtio::{ClientConfig, DrachtioClient};
use sbc_sidecar::regbot::leader::{Extension, LeaderElection};
use sbc_sidecar::regbot::{
    self, query_status, DnsSettings, RegbotHandles, RegbotRole, RegbotSettings, RegbotSnapshot, RegbotState,
    StatusRequest,
};
use sbc_sidecar::store::mysql::{MysqlPool, MysqlSettings};
use sbc_sidecar::store::redis::{pool, RedisPool, RedisSettings};
use sbc_test_tools::carrier::Peer;
use sbc_test_tools::db::{mysql_password, mysql_user, TestDb};
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::wait_until;

const WAIT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

fn cluster() -> String {
    format!("test-regbot-{}", uuid::Uuid::new_v4().simple())
}

fn settings(cluster: &str) -> RegbotSettings {
    RegbotSettings {
        cluster_id: cluster.to_string(),
        failure_threshold: 3,
        failure_retry_interval: Duration::from_secs(2),
        default_expires: Duration::from_secs(3600),
        min_expires: Duration::from_secs(2),
        contact_use_ip: false,
        user_agent: "Jambonz 0.9.6".into(),
        batch_size: 10,
        batch_sleep: Duration::from_millis(50),
        status_interval: Duration::from_millis(300),
        token_ttl: Duration::from_secs(1),
        claim_jitter: Duration::ZERO,
        mode: RegbotMode::Leader,
        register_response_remove: vec![],
        options_ping_interval: Duration::from_secs(3600),
        options_ping_ttl: Duration::from_secs(300),
        options_response_remove: vec![],
        sbc_public_address_keep_alive: Duration::from_secs(900),
        dead_sbc_age: Duration::from_secs(3600),
        // Nothing listens on port 9: lookups time out fast (only the DNS test needs them).
        dns: DnsSettings {
            servers: vec!["127.0.0.1:9".parse().unwrap()],
            timeout: Duration::from_millis(100),
            attempts: 1,
        },
    }
}

fn redis() -> RedisPool {
    pool(&RedisSettings::direct("127.0.0.1", 6379, Duration::from_secs(2), 8)).unwrap()
}

fn redis_query<T: redis::FromRedisValue>(cmd: &mut redis::Cmd) -> T {
    let mut conn = redis().get().unwrap();
    cmd.query(&mut *conn).unwrap()
}

fn mysql_pool(database: &str) -> MysqlPool {
    MysqlPool::new(&MysqlSettings {
        host: "127.0.0.1".into(),
        port: 3306,
        user: mysql_user(),
        password: mysql_password(),
        database: database.into(),
        connection_limit: 4,
        timeout: Duration::from_secs(2),
        tls: None,
    })
    .unwrap()
}

fn start_double(uac_timeout: Duration) -> Double {
    Double::start(DoubleConfig { uac_timeout, ..DoubleConfig::default() }).expect("double starts")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The roles of one sidecar, in process, connected to the double.
struct Instance {
    client: Option<DrachtioClient>,
    handles: Option<RegbotHandles>,
    shutdown: Option<Sender<()>>,
    status: Sender<StatusRequest>,
}

impl Instance {
    fn start(double: &Double, db: &TestDb, settings: RegbotSettings) -> Instance {
        let (subscribers, events) = regbot::subscribe();
        let client = DrachtioClient::start(
            ClientConfig {
                host: "127.0.0.1".into(),
                port: double.admin_addr().port(),
                secret: "cymru".into(),
                ping_interval: Duration::from_secs(30),
                pong_timeout: Duration::from_secs(5),
                backoff_min: Duration::from_millis(50),
                backoff_max: Duration::from_millis(300),
                private_networks: vec![],
            },
            vec![],
            subscribers,
        )
        .expect("drachtio client starts");
        let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
        let mysql = mysql_pool(&db.name);
        let handles = regbot::start_with(settings, redis(), mysql.clone(), mysql, client.handle(), events, shutdown_rx)
            .expect("regbot roles start");
        let status = handles.status.clone();
        Instance { client: Some(client), handles: Some(handles), shutdown: Some(shutdown_tx), status }
    }

    fn snapshot(&self) -> RegbotSnapshot {
        query_status(&self.status, Duration::from_secs(2)).expect("the scheduler answers")
    }

    fn wait_for(&self, what: &str, mut cond: impl FnMut(&RegbotSnapshot) -> bool) -> RegbotSnapshot {
        let mut last = None;
        let ok = wait_until(WAIT, || {
            let s = self.snapshot();
            let done = cond(&s);
            last = Some(s);
            done
        });
        let last = last.unwrap();
        assert!(ok, "{what}; last snapshot: {last:#?}");
        last
    }

    /// Stops like the daemon does at SIGTERM: roles first, then the drachtio client.
    fn stop(&mut self) {
        drop(self.shutdown.take());
        if let Some(h) = self.handles.take() {
            h.join();
        }
        if let Some(c) = self.client.take() {
            c.shutdown();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

// --- database rows -------------------------------------------------------------------------

struct CarrierRow<'a> {
    username: &'a str,
    password: &'a str,
    realm: Option<&'a str>,
    from_domain: Option<&'a str>,
    public_ip_in_contact: bool,
    trunk_type: &'a str,
    requires_register: bool,
}

impl Default for CarrierRow<'_> {
    fn default() -> Self {
        CarrierRow {
            username: "alice",
            password: "s3cret",
            realm: None,
            from_domain: None,
            public_ip_in_contact: false,
            trunk_type: "static_ip",
            requires_register: true,
        }
    }
}

fn add_carrier(db: &TestDb, row: CarrierRow<'_>) -> String {
    let sid = uuid::Uuid::new_v4().to_string();
    db.conn()
        .exec_drop(
            "INSERT INTO voip_carriers (voip_carrier_sid, name, requires_register, register_username, register_password, \
             register_sip_realm, register_from_domain, register_public_ip_in_contact, trunk_type, is_active) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                &sid,
                format!("carrier {}", &sid[..8]),
                row.requires_register,
                row.username,
                row.password,
                row.realm,
                row.from_domain,
                row.public_ip_in_contact,
                row.trunk_type,
            ),
        )
        .unwrap();
    sid
}

fn add_gateway(db: &TestDb, carrier: &str, host: &str, port: Option<u16>, protocol: &str, ping: bool) -> String {
    let sid = uuid::Uuid::new_v4().to_string();
    db.conn()
        .exec_drop(
            "INSERT INTO sip_gateways (sip_gateway_sid, ipv4, port, inbound, outbound, voip_carrier_sid, protocol, send_options_ping) \
             VALUES (?, ?, ?, 1, 1, ?, ?, ?)",
            (&sid, host, port, carrier, protocol, ping),
        )
        .unwrap();
    sid
}

fn register_status(db: &TestDb, carrier: &str) -> Option<serde_json::Value> {
    let raw: Option<Option<String>> = db
        .conn()
        .exec_first("SELECT register_status FROM voip_carriers WHERE voip_carrier_sid = ?", (carrier,))
        .unwrap();
    raw.flatten().map(|s| serde_json::from_str(&s).expect("register_status is JSON"))
}

fn wait_for_status(
    db: &TestDb,
    carrier: &str,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let ok = wait_until(WAIT, || register_status(db, carrier).is_some_and(|s| cond(&s)));
    let last = register_status(db, carrier);
    assert!(ok, "{what}; register_status: {last:?}");
    last.unwrap()
}

fn carrier_flags(db: &TestDb, carrier: &str) -> (bool, bool) {
    let row: Option<(i64, i64)> = db
        .conn()
        .exec_first("SELECT requires_register, is_active FROM voip_carriers WHERE voip_carrier_sid = ?", (carrier,))
        .unwrap();
    let (r, a) = row.unwrap();
    (r != 0, a != 0)
}

fn eph_field(ip: &str, carrier: &str) -> Option<u64> {
    redis_query::<Option<u64>>(redis::cmd("HGET").arg(format!("eph-gw-ip:{ip}")).arg(carrier))
}

// ------------------------------------------------------------------------------------------
// tests
// ------------------------------------------------------------------------------------------

#[test]
fn registers_through_a_digest_challenge_with_the_contract_headers_and_refreshes_at_half_the_expires() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar = Peer::start(
        "regbot_challenge.xml",
        "127.0.0.151",
        &[("user", "alice"), ("pass", "s3cret"), ("realm", "sip.carrier.test"), ("expires", "4")],
    );
    let carrier = add_carrier(
        &db,
        CarrierRow { realm: Some("sip.carrier.test"), public_ip_in_contact: true, ..CarrierRow::default() },
    );
    let gateway = add_gateway(&db, &carrier, "127.0.0.151", Some(registrar.port), "udp", false);
    let cluster = cluster();
    let mut sidecar = Instance::start(&double, &db, settings(&cluster));

    let status = wait_for_status(&db, &carrier, "registered", |s| s["status"] == "ok");
    let regs = registrar.wait_for_requests("REGISTER", 2, WAIT);
    let (first, second) = (&regs[0], &regs[1]);
    assert_eq!(first.first_line(), "REGISTER sip:sip.carrier.test SIP/2.0");
    assert_eq!(first.header("Call-ID").as_deref(), Some(gateway.as_str()), "Call-ID is the gateway sid");
    let from = first.header("From").unwrap();
    assert!(from.starts_with("<sip:alice@sip.carrier.test>;tag="), "{from}");
    assert_eq!(first.header("To").as_deref(), Some("<sip:alice@sip.carrier.test>"));
    assert_eq!(
        first.header("Contact"),
        Some(format!("<sip:alice@{};transport=udp>;expires=3600", double.sip_addr())),
        "public address from the drachtio hostports"
    );
    assert_eq!(first.header("Expires").as_deref(), Some("3600"));
    assert_eq!(first.header("User-Agent").as_deref(), Some("Jambonz 0.9.6"));
    assert!(first.header("Authorization").is_none());
    // the digest answer: same Call-ID and From tag, CSeq + 1
    assert_eq!(second.header("Call-ID"), first.header("Call-ID"));
    assert_eq!(second.header("From"), first.header("From"));
    assert_eq!(second.cseq(), first.cseq() + 1);
    let auth = second.header("Authorization").expect("digest answer");
    for part in [
        "username=\"alice\"",
        "realm=\"sip.carrier.test\"",
        "uri=\"sip:sip.carrier.test\"",
        "qop=auth",
        "nc=00000001",
        "opaque=\"opq-",
        "cnonce=\"",
        "algorithm=MD5",
    ] {
        assert!(auth.contains(part), "{part} in {auth}");
    }
    // sipp checked the response itself (verifyauth) and answered 200
    assert_eq!(status["reason"], "200 OK");
    assert_eq!(status["cseq"], format!("{} REGISTER", first.cseq()), "the unchallenged CSeq");
    assert_eq!(status["callId"], gateway.as_str());
    assert_eq!(status["expires"], 4);
    let keys: Vec<&String> = status.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["status", "reason", "cseq", "callId", "timestamp", "expires"]);
    let ts = status["timestamp"].as_str().unwrap();
    assert!(ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T", "{ts}");

    // refresh at expires/2 (4 s granted → 1.8–2 s) after the 200, challenged again
    let regs = registrar.wait_for_requests("REGISTER", 3, Duration::from_secs(6));
    let ok_sent = registrar
        .messages()
        .into_iter()
        .find(|m| !m.received && m.first_line().starts_with("SIP/2.0 200"))
        .expect("sipp sent a 200");
    let gap = regs[2].at - ok_sent.at;
    assert!((1.6..=2.8).contains(&gap), "refresh {gap:.3}s after the 200");
    assert!(regs[2].cseq() > second.cseq(), "CSeq keeps increasing");
    assert!(regs[2].header("Authorization").is_none(), "a refresh starts unchallenged");

    let snap = sidecar.wait_for("registered", |s| s.registered == 1);
    assert_eq!(snap.role, RegbotRole::Leader);
    assert_eq!((snap.total, snap.failing), (1, 0));
    assert_eq!(snap.regbots[0].sip_gateway_sid, gateway);
    assert_eq!(snap.regbots[0].aor, "alice@sip.carrier.test");
    let token_ttl: i64 = redis_query(redis::cmd("TTL").arg(format!("{cluster}:regbot-token")));
    assert!((0..=1).contains(&token_ttl), "leader key with the configured TTL: {token_ttl}");

    // stopping the daemon leaves the registration in place: no Expires: 0
    sidecar.stop();
    thread::sleep(Duration::from_millis(300));
    assert!(
        registrar.requests("REGISTER").iter().all(|r| r.header("Expires").as_deref() != Some("0")),
        "no de-registration at shutdown"
    );
    let key_left: bool = redis_query(redis::cmd("EXISTS").arg(format!("{cluster}:regbot-token")));
    assert!(!key_left, "a clean stop releases the leader key");
}

#[test]
fn a_refusing_registrar_is_retried_with_growing_backoff_then_registration_is_disabled() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.152", &[("status", "403"), ("reason", "Forbidden"), ("expires", "0")]);
    let carrier = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &carrier, "127.0.0.152", Some(registrar.port), "udp", false);
    let mut s = settings(&cluster());
    s.register_response_remove = vec![403];
    s.failure_threshold = 4;
    // backoff base 3.2 s / 16 = 200 ms: retries after 100–200, 200–400, 400–800 ms
    s.failure_retry_interval = Duration::from_millis(3200);
    let sidecar = Instance::start(&double, &db, s);

    assert!(wait_until(WAIT, || !carrier_flags(&db, &carrier).0), "requires_register set to 0");
    assert_eq!(carrier_flags(&db, &carrier), (false, true), "static_ip carrier: registration disabled, carrier kept");
    let status = register_status(&db, &carrier).unwrap();
    assert_eq!(status["status"], "fail");
    assert_eq!(status["reason"], "403 Forbidden");
    assert_eq!(status["expires"], 0);

    let regs = registrar.requests("REGISTER");
    assert_eq!(regs.len(), 4, "exactly the threshold: {regs:#?}");
    let gaps: Vec<f64> = regs.windows(2).map(|w| w[1].at - w[0].at).collect();
    let bounds = [(0.1, 0.2), (0.2, 0.4), (0.4, 0.8)];
    for (gap, (lo, hi)) in gaps.iter().zip(bounds) {
        assert!(*gap >= lo - 0.02 && *gap <= hi + 0.25, "gap {gap:.3}s outside {lo}–{hi}: {gaps:?}");
    }
    assert!(gaps[2] > gaps[0], "backoff grows: {gaps:?}");

    // the database change removes the regbot; nothing more is sent, nothing to de-register
    sidecar.wait_for("regbot removed after the carrier was disabled", |s| s.total == 0);
    thread::sleep(Duration::from_millis(800));
    assert_eq!(registrar.requests("REGISTER").len(), 4, "no REGISTER after giving up");
}

#[test]
fn a_reg_trunk_that_keeps_failing_is_deactivated() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar = Peer::start(
        "regbot_reply.xml",
        "127.0.0.153",
        &[("status", "503"), ("reason", "Service Unavailable"), ("expires", "0")],
    );
    let carrier = add_carrier(&db, CarrierRow { trunk_type: "reg", ..CarrierRow::default() });
    add_gateway(&db, &carrier, "127.0.0.153", Some(registrar.port), "udp", false);
    let mut s = settings(&cluster());
    s.register_response_remove = vec![503];
    s.failure_threshold = 2;
    s.failure_retry_interval = Duration::from_millis(800);
    let _sidecar = Instance::start(&double, &db, s);

    assert!(wait_until(WAIT, || !carrier_flags(&db, &carrier).1), "is_active set to 0");
    assert_eq!(carrier_flags(&db, &carrier), (true, false), "reg trunk: carrier deactivated");
    assert_eq!(register_status(&db, &carrier).unwrap()["reason"], "503 Service Unavailable");
    assert!(wait_until(WAIT, || eph_field("127.0.0.153", &carrier).is_none()), "ephemeral gateway deleted");
}

#[test]
fn a_silent_registrar_is_reported_with_the_stacks_408_and_retried() {
    let db = TestDb::create();
    let double = start_double(Duration::from_millis(1500));
    let registrar = Peer::start("regbot_silent.xml", "127.0.0.154", &[]);
    let carrier = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &carrier, "127.0.0.154", Some(registrar.port), "udp", false);
    let mut s = settings(&cluster());
    s.failure_retry_interval = Duration::from_millis(800);
    let sidecar = Instance::start(&double, &db, s);

    let status = wait_for_status(&db, &carrier, "408 recorded", |s| s["reason"] == "408 Request Timeout");
    assert_eq!(status["status"], "fail");
    assert_eq!(status["expires"], 0);
    let snap = sidecar.wait_for("failing", |s| s.failing == 1);
    assert_eq!(snap.regbots[0].state, RegbotState::Failing);
    assert_eq!(snap.regbots[0].last_status.as_deref(), Some("408 Request Timeout"));
    // retried after the backoff with a new CSeq (the double's retransmissions repeat the old one)
    let first_cseq = registrar.requests("REGISTER")[0].cseq();
    assert!(
        wait_until(WAIT, || registrar.requests("REGISTER").iter().any(|r| r.cseq() > first_cseq)),
        "a retry after the 408"
    );
}

#[test]
fn a_removed_gateway_is_deregistered_and_its_ephemeral_gateway_deleted() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.155", &[("status", "200"), ("reason", "OK"), ("expires", "60")]);
    let carrier = add_carrier(&db, CarrierRow { trunk_type: "reg", ..CarrierRow::default() });
    let gateway = add_gateway(&db, &carrier, "127.0.0.155", Some(registrar.port), "udp", false);
    let sidecar = Instance::start(&double, &db, settings(&cluster()));

    wait_for_status(&db, &carrier, "registered", |s| s["status"] == "ok");
    assert!(wait_until(WAIT, || eph_field("127.0.0.155", &carrier).is_some()), "ephemeral gateway written");
    let until = eph_field("127.0.0.155", &carrier).unwrap();
    let now = unix_now();
    assert!(until >= now + 55 && until <= now + 61, "now + granted expires: {until} vs {now}");
    let key_ttl: i64 = redis_query(redis::cmd("TTL").arg("eph-gw-ip:127.0.0.155"));
    assert!((7000..=7200).contains(&key_ttl), "{key_ttl}");

    db.conn().exec_drop("DELETE FROM sip_gateways WHERE sip_gateway_sid = ?", (&gateway,)).unwrap();
    let regs = registrar.wait_for_requests("REGISTER", 2, WAIT);
    let unreg = &regs[1];
    assert_eq!(unreg.header("Expires").as_deref(), Some("0"));
    assert!(unreg.header("Contact").unwrap().ends_with(";expires=0"), "{:?}", unreg.header("Contact"));
    assert_eq!(unreg.header("Call-ID").as_deref(), Some(gateway.as_str()));
    assert_eq!(unreg.header("From"), regs[0].header("From"), "same From tag");
    assert!(unreg.cseq() > regs[0].cseq());
    sidecar.wait_for("regbot gone", |s| s.total == 0);
    assert!(wait_until(WAIT, || eph_field("127.0.0.155", &carrier).is_none()), "ephemeral gateway deleted");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(registrar.requests("REGISTER").len(), 2, "nothing after the de-registration");
}

#[test]
fn database_changes_are_picked_up_and_new_credentials_replace_the_old_binding() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let reply = [("status", "200"), ("reason", "OK"), ("expires", "60")];
    let first_registrar = Peer::start("regbot_reply.xml", "127.0.0.156", &reply);
    let second_registrar = Peer::start("regbot_reply.xml", "127.0.0.157", &reply);
    let first = add_carrier(&db, CarrierRow { realm: Some("one.test"), ..CarrierRow::default() });
    add_gateway(&db, &first, "127.0.0.156", Some(first_registrar.port), "udp", false);
    let sidecar = Instance::start(&double, &db, settings(&cluster()));
    wait_for_status(&db, &first, "first carrier registered", |s| s["status"] == "ok");

    // a carrier added while running
    let second = add_carrier(&db, CarrierRow { username: "bob", realm: Some("two.test"), ..CarrierRow::default() });
    add_gateway(&db, &second, "127.0.0.157", Some(second_registrar.port), "udp", false);
    wait_for_status(&db, &second, "new carrier registered", |s| s["status"] == "ok");
    sidecar.wait_for("two regbots", |s| s.registered == 2);

    // a carrier with an invalid From domain is reported and not registered
    let bad = add_carrier(&db, CarrierRow { from_domain: Some("bad domain"), ..CarrierRow::default() });
    add_gateway(&db, &bad, "127.0.0.158", Some(5060), "udp", false);
    let status = wait_for_status(&db, &bad, "invalid from domain reported", |s| s["status"] == "fail");
    assert_eq!(status, serde_json::json!({"status": "fail", "reason": "Invalid from_domain bad domain"}));

    // new credentials: the old binding is removed first, then the new one registered
    db.conn()
        .exec_drop("UPDATE voip_carriers SET register_username = 'carol' WHERE voip_carrier_sid = ?", (&first,))
        .unwrap();
    let regs = first_registrar.wait_for_requests("REGISTER", 3, WAIT);
    assert_eq!(regs[1].header("Expires").as_deref(), Some("0"));
    assert!(regs[1].header("To").unwrap().contains("sip:alice@one.test"), "old AOR de-registered");
    assert_eq!(regs[2].header("Expires").as_deref(), Some("3600"));
    assert!(regs[2].header("To").unwrap().contains("sip:carol@one.test"), "new AOR registered");
    assert!(regs[2].cseq() > regs[1].cseq());
    assert_eq!(regs[2].header("Call-ID"), regs[0].header("Call-ID"));
    sidecar.wait_for("carol registered", |s| {
        s.regbots.iter().any(|r| r.aor == "carol@one.test" && r.state == RegbotState::Registered)
    });

    // the unchanged carrier kept running untouched: one REGISTER only
    assert_eq!(second_registrar.requests("REGISTER").len(), 1);

    // registration switched off for a carrier: its binding is removed
    db.conn()
        .exec_drop("UPDATE voip_carriers SET requires_register = 0 WHERE voip_carrier_sid = ?", (&second,))
        .unwrap();
    let regs = second_registrar.wait_for_requests("REGISTER", 2, WAIT);
    assert_eq!(regs[1].header("Expires").as_deref(), Some("0"));
    sidecar.wait_for("one regbot left", |s| s.total == 1);
}

#[test]
fn new_regbots_start_in_batches() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.166", &[("status", "200"), ("reason", "OK"), ("expires", "60")]);
    for user in ["u1", "u2", "u3"] {
        let carrier = add_carrier(&db, CarrierRow { username: user, ..CarrierRow::default() });
        add_gateway(&db, &carrier, "127.0.0.166", Some(registrar.port), "udp", false);
    }
    let mut s = settings(&cluster());
    s.batch_size = 1;
    s.batch_sleep = Duration::from_millis(400);
    let sidecar = Instance::start(&double, &db, s);
    sidecar.wait_for("three registered", |s| s.registered == 3);
    let regs = registrar.requests("REGISTER");
    assert_eq!(regs.len(), 3, "one REGISTER per gateway (distinct credentials on one host)");
    let gaps: Vec<f64> = regs.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps.iter().all(|g| (0.3..=1.0).contains(g)), "one regbot per 400 ms batch: {gaps:?}");
}

#[test]
fn claim_extend_and_release_are_compare_and_set() {
    let cluster = format!("test-{}", uuid::Uuid::new_v4().simple());
    let a = LeaderElection::new(redis(), &cluster, "token-a".into(), Duration::from_secs(30));
    let b = LeaderElection::new(redis(), &cluster, "token-b".into(), Duration::from_secs(30));
    assert_eq!(a.key(), format!("{cluster}:regbot-token"));
    assert!(a.claim().unwrap());
    assert!(!b.claim().unwrap(), "NX: only one holder");
    let mut conn = redis().get().unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(a.key()).query(&mut *conn).unwrap();
    assert!((1..=30).contains(&ttl), "claimed with a TTL in one step: {ttl}");
    assert_eq!(a.extend().unwrap(), Extension::Extended);
    assert_eq!(b.extend().unwrap(), Extension::TakenByOther, "b cannot extend a's claim");
    assert!(!b.release().unwrap(), "nor release it");
    let value: String = redis::cmd("GET").arg(a.key()).query(&mut *conn).unwrap();
    assert_eq!(value, "token-a");
    assert!(a.release().unwrap());
    assert_eq!(a.extend().unwrap(), Extension::Lapsed);
    assert!(b.claim().unwrap());
    assert!(b.release().unwrap());
}

#[test]
fn the_standby_registers_everything_when_the_leader_stops() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let reply = [("status", "200"), ("reason", "OK"), ("expires", "60")];
    let r1 = Peer::start("regbot_reply.xml", "127.0.0.159", &reply);
    let r2 = Peer::start("regbot_reply.xml", "127.0.0.160", &reply);
    let c1 = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &c1, "127.0.0.159", Some(r1.port), "udp", false);
    let c2 = add_carrier(&db, CarrierRow { username: "bob", ..CarrierRow::default() });
    add_gateway(&db, &c2, "127.0.0.160", Some(r2.port), "udp", false);
    let cluster = cluster();

    let mut leader = Instance::start(&double, &db, settings(&cluster));
    leader.wait_for("first instance leads and registers both", |s| s.role == RegbotRole::Leader && s.registered == 2);
    let standby = Instance::start(&double, &db, settings(&cluster));
    thread::sleep(Duration::from_millis(900));
    let snap = standby.snapshot();
    assert_eq!((snap.role, snap.total), (RegbotRole::Standby, 0), "one leader per cluster");
    assert_eq!(r1.requests("REGISTER").len() + r2.requests("REGISTER").len(), 2);

    leader.stop();
    standby.wait_for("standby takes over and registers both", |s| s.role == RegbotRole::Leader && s.registered == 2);
    for r in [&r1, &r2] {
        let regs = r.wait_for_requests("REGISTER", 2, WAIT);
        assert!(regs.iter().all(|m| m.header("Expires").as_deref() == Some("3600")), "no de-registration on failover");
        assert_eq!(regs[0].header("Call-ID"), regs[1].header("Call-ID"), "same Call-ID from both SBCs");
    }
}

#[test]
fn losing_and_regaining_the_role_stops_then_restarts_every_regbot() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.161", &[("status", "200"), ("reason", "OK"), ("expires", "60")]);
    let carrier = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &carrier, "127.0.0.161", Some(registrar.port), "udp", false);
    let cluster = cluster();
    let key = format!("{cluster}:regbot-token");
    let sidecar = Instance::start(&double, &db, settings(&cluster));
    sidecar.wait_for("registered", |s| s.registered == 1);

    // another SBC's token appears: stand down, no de-registration
    let _: () = redis_query(redis::cmd("SET").arg(&key).arg("someone-else").arg("EX").arg(30));
    sidecar.wait_for("stood down", |s| s.role == RegbotRole::Standby && s.total == 0);
    let token: String = redis_query(redis::cmd("GET").arg(&key));
    assert_eq!(token, "someone-else", "the other SBC's claim is not touched");
    assert_eq!(registrar.requests("REGISTER").len(), 1);

    // the other SBC goes away: the role comes back and every regbot starts again
    let _: () = redis_query(redis::cmd("DEL").arg(&key));
    sidecar.wait_for("leader again with the regbot registered", |s| s.role == RegbotRole::Leader && s.registered == 1);
    let regs = registrar.wait_for_requests("REGISTER", 2, WAIT);
    assert!(regs.iter().all(|r| r.header("Expires").as_deref() == Some("3600")));
}

#[test]
fn gateway_pings_blacklist_failures_clear_on_success_and_stop_on_remove_codes() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(2));
    let carrier = add_carrier(&db, CarrierRow { requires_register: false, ..CarrierRow::default() });
    let failing =
        Peer::start("regbot_options.xml", "127.0.0.162", &[("status", "503"), ("reason", "Service Unavailable")]);
    let port = failing.port;
    let g1 = add_gateway(&db, &carrier, "127.0.0.162", Some(port), "udp", true);
    let gone = Peer::start("regbot_options.xml", "127.0.0.163", &[("status", "404"), ("reason", "Not Found")]);
    let g2 = add_gateway(&db, &carrier, "127.0.0.163", Some(gone.port), "udp", true);
    let mut s = settings(&cluster());
    s.options_ping_interval = Duration::from_millis(300);
    s.options_ping_ttl = Duration::from_secs(60);
    s.options_response_remove = vec![404];
    let _sidecar = Instance::start(&double, &db, s);

    let key1 = format!("blacklist-sip-gateway:{g1}");
    let key2 = format!("blacklist-sip-gateway:{g2}");
    let exists = |k: &str| redis_query::<bool>(redis::cmd("EXISTS").arg(k));
    assert!(wait_until(WAIT, || exists(&key1)), "503 gateway blacklisted");
    let value: String = redis_query(redis::cmd("GET").arg(&key1));
    assert_eq!(value, "1");
    let ttl: i64 = redis_query(redis::cmd("TTL").arg(&key1));
    assert!((1..=60).contains(&ttl), "OPTIONS_PING_TTL: {ttl}");
    let pings = failing.wait_for_requests("OPTIONS", 1, WAIT);
    assert!(
        pings[0].first_line().starts_with(&format!("OPTIONS sip:127.0.0.162:{port} SIP/2.0")),
        "{}",
        pings[0].first_line()
    );

    // 404 is in OPTIONS_RESPONSE_REMOVE: pings switched off for that gateway
    let ping_flag = |g: &str| -> i64 {
        db.conn()
            .exec_first("SELECT send_options_ping FROM sip_gateways WHERE sip_gateway_sid = ?", (g,))
            .unwrap()
            .unwrap()
    };
    assert!(wait_until(WAIT, || ping_flag(&g2) == 0), "send_options_ping = 0 after a 404");
    assert!(exists(&key2));
    let pinged = gone.requests("OPTIONS").len();
    thread::sleep(Duration::from_millis(900));
    assert_eq!(gone.requests("OPTIONS").len(), pinged, "no more pings to a removed gateway");
    assert_eq!(ping_flag(&g1), 1, "503 is not a remove code");

    // the gateway answers again: off the blacklist
    drop(failing);
    let _healthy = Peer::start_on("regbot_options.xml", "127.0.0.162", port, &[("status", "200"), ("reason", "OK")]);
    assert!(wait_until(WAIT, || !exists(&key1)), "a 200 clears the blacklist");
    let _: () = redis_query(redis::cmd("DEL").arg(&key2));
}

#[test]
fn the_pinger_is_not_duplicated_by_reconnects() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(2));
    let admin_port = double.admin_addr().port();
    let gw = Peer::start("regbot_options.xml", "127.0.0.164", &[("status", "200"), ("reason", "OK")]);
    let carrier = add_carrier(&db, CarrierRow { requires_register: false, ..CarrierRow::default() });
    add_gateway(&db, &carrier, "127.0.0.164", Some(gw.port), "udp", true);
    let mut s = settings(&cluster());
    s.options_ping_interval = Duration::from_millis(400);
    let _sidecar = Instance::start(&double, &db, s);
    gw.wait_for_requests("OPTIONS", 2, WAIT);

    // drachtio restarts twice on the same control port
    double.stop();
    let double = Double::start(DoubleConfig {
        admin: SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port)),
        uac_timeout: Duration::from_secs(2),
        ..DoubleConfig::default()
    })
    .unwrap();
    assert!(wait_until(WAIT, || double.app_connections() == 1));
    double.stop();
    let double = Double::start(DoubleConfig {
        admin: SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port)),
        uac_timeout: Duration::from_secs(2),
        ..DoubleConfig::default()
    })
    .unwrap();
    assert!(wait_until(WAIT, || double.app_connections() == 1));

    let before = gw.requests("OPTIONS").len();
    thread::sleep(Duration::from_millis(2400));
    let during = gw.requests("OPTIONS").len() - before;
    // one pinger: about 6 rounds in 2.4 s; three pingers would make about 18
    assert!((3..=8).contains(&during), "{during} pings in 2.4 s at a 400 ms interval");
}

#[test]
fn sbc_addresses_are_published_on_connect_refreshed_and_stale_rows_removed() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(2));
    {
        let mut c = db.conn();
        c.query_drop(
            "INSERT INTO sbc_addresses (sbc_address_sid, ipv4, port, last_updated) VALUES \
             ('stale-1', '198.51.100.77', 5060, DATE_SUB(NOW(), INTERVAL 2 HOUR)), \
             ('stale-2', '198.51.100.78', 5060, NULL), \
             ('alive-1', '198.51.100.79', 5060, DATE_SUB(NOW(), INTERVAL 10 MINUTE))",
        )
        .unwrap();
    }
    let mut s = settings(&cluster());
    s.sbc_public_address_keep_alive = Duration::from_millis(500);
    let _sidecar = Instance::start(&double, &db, s);

    type Row = (String, u16, Option<u16>, Option<u16>, Option<String>);
    let rows = || -> Vec<Row> {
        db.conn()
            .query("SELECT ipv4, port, tls_port, wss_port, CAST(last_updated AS CHAR) FROM sbc_addresses ORDER BY ipv4")
            .unwrap()
    };
    assert!(wait_until(WAIT, || rows().iter().any(|r| r.0 == "127.0.0.1")), "our row inserted: {:?}", rows());
    assert!(wait_until(WAIT, || rows().len() == 2), "stale rows removed: {:?}", rows());
    let ours = rows().into_iter().find(|r| r.0 == "127.0.0.1").unwrap();
    assert_eq!((ours.1, ours.2, ours.3), (double.sip_addr().port(), None, None));
    assert!(rows().iter().any(|r| r.0 == "198.51.100.79"), "a live SBC's row is kept");
    let first_update = ours.4.clone();
    assert!(first_update.is_some(), "last_updated set");
    assert!(
        wait_until(WAIT, || rows().into_iter().find(|r| r.0 == "127.0.0.1").is_some_and(|r| r.4 > first_update)),
        "last_updated refreshed every keep-alive interval"
    );
    let count: i64 =
        db.conn().query_first("SELECT COUNT(*) FROM sbc_addresses WHERE ipv4 = '127.0.0.1'").unwrap().unwrap();
    assert_eq!(count, 1, "updated in place, not inserted again");
}

/// A DNS server for one zone: answers SRV and A questions from its tables, NXDOMAIN
/// otherwise, and remembers the questions.
struct FakeDns {
    addr: SocketAddr,
    questions: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDns {
    fn start(srv: Vec<(&'static str, u16, &'static str)>, a: Vec<(&'static str, Ipv4Addr)>) -> FakeDns {
        use simple_dns::rdata::{RData, A, SRV};
        use simple_dns::{Name, Packet, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = socket.local_addr().unwrap();
        let questions = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, st) = (questions.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let Ok(query) = Packet::parse(&buf[..n]) else { continue };
                let mut reply = Packet::new_reply(query.id());
                for question in &query.questions {
                    let name = question.qname.to_string();
                    let kind = if question.qtype == QTYPE::TYPE(TYPE::SRV) { "SRV" } else { "A" };
                    q.lock().unwrap().push(format!("{kind} {name}"));
                    reply.questions.push(question.clone());
                    for (n, port, target) in &srv {
                        if kind == "SRV" && *n == name {
                            let rdata = RData::SRV(SRV {
                                priority: 10,
                                weight: 0,
                                port: *port,
                                target: Name::new_unchecked(target),
                            });
                            reply.answers.push(ResourceRecord::new(Name::new_unchecked(n), CLASS::IN, 60, rdata));
                        }
                    }
                    for (n, ip) in &a {
                        if kind == "A" && *n == name {
                            let rdata = RData::A(A { address: u32::from(*ip) });
                            reply.answers.push(ResourceRecord::new(Name::new_unchecked(n), CLASS::IN, 60, rdata));
                        }
                    }
                }
                if reply.answers.is_empty() {
                    *reply.rcode_mut() = RCODE::NameError;
                }
                if let Ok(bytes) = reply.build_bytes_vec() {
                    let _ = socket.send_to(&bytes, from);
                }
            }
        });
        FakeDns { addr, questions, stop, thread: Some(thread) }
    }

    fn questions(&self) -> Vec<String> {
        self.questions.lock().unwrap().clone()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_reg_trunk_on_a_dns_name_writes_ephemeral_gateways_from_the_srv_of_its_transport() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(2));
    let dns = FakeDns::start(
        vec![("_sip._tcp.carrier.regbot.test", 5060, "edge.carrier.regbot.test")],
        vec![("edge.carrier.regbot.test", Ipv4Addr::new(127, 0, 0, 165))],
    );
    let carrier = add_carrier(&db, CarrierRow { trunk_type: "reg", ..CarrierRow::default() });
    add_gateway(&db, &carrier, "carrier.regbot.test", None, "tcp", false);
    let mut s = settings(&cluster());
    s.dns = DnsSettings { servers: vec![dns.addr], timeout: Duration::from_millis(500), attempts: 1 };
    let sidecar = Instance::start(&double, &db, s);

    // the double resolves no names: the REGISTER gets the stack's 503, with expires 0
    let status = wait_for_status(&db, &carrier, "failure recorded", |s| s["status"] == "fail");
    assert_eq!(status["reason"], "503 Service Unavailable");
    assert!(wait_until(WAIT, || eph_field("127.0.0.165", &carrier).is_some()), "questions: {:?}", dns.questions());
    let at = eph_field("127.0.0.165", &carrier).unwrap();
    assert!(at.abs_diff(unix_now()) <= 3, "a failure writes `now`: readers see it expired");
    let questions = dns.questions();
    assert_eq!(questions[0], "SRV _sip._tcp.carrier.regbot.test", "SRV for the gateway's own transport");
    assert!(questions.contains(&"A edge.carrier.regbot.test".to_string()), "{questions:?}");
    assert!(!questions.iter().any(|q| q.contains("_sip._udp")), "{questions:?}");
    let snap = sidecar.snapshot();
    assert_eq!(snap.regbots[0].target, "carrier.regbot.test;transport=tcp");
    drop(sidecar);
    let _: () = redis_query(redis::cmd("DEL").arg("eph-gw-ip:127.0.0.165"));
}

#[test]
fn a_200_with_an_absurd_expires_is_capped_and_the_regbot_keeps_registering() {
    // Before the cap this panicked the scheduler thread (`Instant + u64::MAX seconds`).
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let huge = "99999999999999999999";
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.167", &[("status", "200"), ("reason", "OK"), ("expires", huge)]);
    let carrier = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &carrier, "127.0.0.167", Some(registrar.port), "udp", false);
    let mut s = settings(&cluster());
    // we ask for 4 s: the refresh is due 1.8–2 s after each 200
    s.default_expires = Duration::from_secs(4);
    let sidecar = Instance::start(&double, &db, s);

    let status = wait_for_status(&db, &carrier, "registered", |s| s["status"] == "ok");
    assert_eq!(status["expires"], 4, "granted = what we asked for, not {huge}: {status}");
    let snap = sidecar.wait_for("registered", |s| s.registered == 1);
    let next = snap.regbots[0].next_request_in.expect("a refresh is scheduled");
    assert!(next <= Duration::from_secs(2), "refresh at the capped interval: {next:?}");

    // and it keeps registering: two refreshes, each answered with the same absurd value
    let regs = registrar.wait_for_requests("REGISTER", 3, WAIT);
    assert!(regs.len() >= 3, "{regs:#?}");
    let gap = regs[2].at - regs[1].at;
    assert!((1.6..=2.5).contains(&gap), "refresh gap {gap:.3}s");
    let snap = sidecar.snapshot();
    assert_eq!(snap.registered, 1, "{snap:#?}");
    assert_eq!(register_status(&db, &carrier).unwrap()["status"], "ok");
}

#[test]
fn a_leader_whose_scheduler_is_gone_gives_up_the_role_at_once() {
    use sbc_sidecar::drachtio::{ConnectionEvent, ConnectionInfo};
    use sbc_sidecar::regbot::leader::{new_token, LeaderElection, LeaderRole};

    let db = TestDb::create();
    let cluster = cluster();
    let mut s = settings(&cluster);
    // a long TTL: the key can only disappear because the leader deleted it
    s.token_ttl = Duration::from_secs(60);
    let election = LeaderElection::new(redis(), &cluster, new_token(), s.token_ttl);
    let key = election.key().to_string();
    let (events_tx, events_rx) = unbounded();
    let (commands_tx, _commands_rx) = unbounded();
    let (_shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let (scheduler_alive, liveness) = bounded::<()>(0);
    let role = LeaderRole::new(s, election, mysql_pool(&db.name), events_rx, commands_tx, shutdown_rx)
        .watch_scheduler(liveness);
    let leader = thread::spawn(move || role.run());
    let info = ConnectionInfo {
        hostports: "udp/127.0.0.1:5060".into(),
        version: "v0.9.10".into(),
        local_hostports: "udp/127.0.0.1:5060".into(),
    };
    events_tx.send(ConnectionEvent::Connected(info)).unwrap();
    let holder = || -> Option<String> { redis_query(redis::cmd("GET").arg(&key)) };
    assert!(wait_until(WAIT, || holder().is_some()), "the leader claimed the role");

    let gone = Instant::now();
    drop(scheduler_alive);
    assert!(wait_until(WAIT, || holder().is_none()), "the role key was deleted");
    assert!(gone.elapsed() < Duration::from_secs(2), "at once, not after the TTL: {:?}", gone.elapsed());
    assert!(wait_until(WAIT, || leader.is_finished()), "the leader thread ended");
    drop(events_tx);
}
