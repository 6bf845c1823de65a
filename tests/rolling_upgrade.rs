//! A rolling upgrade from the Node sidecar, and its rollback: one `sbc-sidecar` daemon joins a
//! cluster whose other SBCs run the Node program, sharing one Redis and one MariaDB.
//!
//! The Node SBCs are played by what they leave in Redis: the regbot leader election exactly
//! as spec 6.1 describes it (`sbc_test_tools::node_leader`), and bindings, heartbeat sets and
//! drain state as spec 4.5, 5.2 and 9.1 show them (`sbc_test_tools::node_sidecar`). The
//! daemon talks SIP through the drachtio double to a sipp carrier and hand-written phones.
//!
//! Both sides of the election are shortened in the same way: the daemon's status interval to
//! 300 ms (`SBC_REGBOT_STATUS_INTERVAL_MS`), the Node player's to 1.5 s, the key's TTL to 2 s
//! on both (`SBC_REGBOT_TOKEN_TTL_S`; Node's 70 s), the initial delays to 0 (daemon) and 0–1.4 s
//! (Node, 15 steps of 100 ms).

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql::prelude::Queryable;
use redis::Commands;
use sbc_test_tools::carrier::Peer;
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::node_leader::{NodeEvent, NodeLeader, NodeTiming};
use sbc_test_tools::node_sidecar::{
    authorization, challenge_nonce, header_of, node_cache_hit, node_nonce, status_of, NodeBinding, RawPhone,
    BINDING_FIELDS, REGISTER_STATUS_FIELDS,
};
use sbc_test_tools::webhook::WebhookServer;
use sbc_test_tools::{sipp, wait_until};

const TOKEN_TTL: Duration = Duration::from_secs(2);
const STATUS_INTERVAL: Duration = Duration::from_millis(300);
const NODE: NodeTiming = NodeTiming {
    delay_unit: Duration::from_millis(100),
    delay_steps: 15,
    check_interval: Duration::from_millis(1500),
    ttl_secs: 2,
};
/// What the README promises for a take-over (the key's TTL + the daemon's status interval),
/// plus 3 s for a loaded machine.
const TAKEOVER: Duration = TOKEN_TTL.saturating_add(STATUS_INTERVAL).saturating_add(Duration::from_secs(3));
const WAIT: Duration = Duration::from_secs(15);
const REDIS: &str = "redis://127.0.0.1:6379/";

fn redis_conn() -> redis::Connection {
    sbc_test_tools::services::redis()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A cluster id of this test; its keys go when dropped.
struct Cluster(String);

impl Cluster {
    fn new() -> Cluster {
        Cluster(format!("upgrade-{}", uuid::Uuid::new_v4().simple()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut conn = redis_conn();
        let keys: Vec<String> = conn.keys(format!("{}:*", self.0)).unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = conn.del(keys);
        }
    }
}

/// The daemon beside its own drachtio double on `ip`.
struct Sbc {
    double: Double,
    daemon: Option<Daemon>,
}

impl Sbc {
    fn start(ip: &str, db: &TestDb, cluster: &str, extra: &[(&str, &str)]) -> Sbc {
        let double = Double::start(DoubleConfig {
            admin: format!("{ip}:0").parse().unwrap(),
            sip_ip: ip.parse().unwrap(),
            uac_timeout: Duration::from_secs(2),
            ..DoubleConfig::default()
        })
        .expect("double starts");
        let mut env: HashMap<String, String> = base_env(double.admin_addr().port(), &db.name);
        for (k, v) in [
            ("DRACHTIO_HOST", ip),
            ("JAMBONES_CLUSTER_ID", cluster),
            ("JAMBONES_NETWORK_CIDR", "127.0.0.0/8"),
            ("SBC_REGBOT_CLAIM_JITTER_MS", "0"),
            ("SBC_REGBOT_STATUS_INTERVAL_MS", &STATUS_INTERVAL.as_millis().to_string()),
            ("SBC_REGBOT_TOKEN_TTL_S", &TOKEN_TTL.as_secs().to_string()),
            ("JAMBONES_REGBOT_MIN_EXPIRES_INTERVAL", "4"),
        ] {
            env.insert(k.into(), v.to_string());
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let daemon = Daemon::start(env, &[]);
        assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());
        Sbc { double, daemon: Some(daemon) }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running")
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    fn role(&self) -> String {
        let (_, out, _) = self.daemon().sbcctl(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v["regbot"]["role"].as_str().unwrap_or("unknown").to_string()
    }

    fn sbcctl(&self, args: &[&str]) -> String {
        let (code, out, err) = self.daemon().sbcctl(args);
        assert_eq!(code, 0, "sbcctl {args:?}: {out}{err}");
        out
    }
}

/// A carrier answering every REGISTER 200 (expires 4) and its row with one gateway.
fn carrier(db: &TestDb, ip: &str) -> (Peer, String) {
    let keys = [("status", "200"), ("reason", "OK"), ("expires", "4")];
    let peer = Peer::start_with("regbot_reply_each.xml", ip, sipp::free_port(ip), &keys, &["-deadcall_wait", "0"]);
    let carrier_sid = uuid();
    let mut c = db.conn();
    c.exec_drop(
        "INSERT INTO voip_carriers (voip_carrier_sid, name, requires_register, register_username, register_password, \
         register_sip_realm, trunk_type, is_active) VALUES (?, 'upgrade', 1, 'u1', 's3cret', 'sip.carrier.test', \
         'static_ip', 1)",
        (&carrier_sid,),
    )
    .unwrap();
    c.exec_drop(
        "INSERT INTO sip_gateways (sip_gateway_sid, ipv4, port, inbound, outbound, voip_carrier_sid, protocol) \
         VALUES (?, ?, ?, 1, 1, ?, 'udp')",
        (uuid(), &peer.ip, peer.port, &carrier_sid),
    )
    .unwrap();
    (peer, carrier_sid)
}

fn token_in(key: &str) -> Option<String> {
    redis_conn().get(key).unwrap()
}

fn expires_of(m: &sbc_test_tools::carrier::Traced) -> Option<u64> {
    m.header("Expires").and_then(|e| e.parse().ok())
}

// ------------------------------------------------------------------------------------------
// regbot leader election
// ------------------------------------------------------------------------------------------

#[test]
fn a_node_leader_keeps_sbc_sidecar_standby_and_sbc_sidecar_takes_over_when_it_stops() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let (carrier, _) = carrier(&db, "127.0.0.231");
    let mut node = NodeLeader::start(REDIS, &cluster.0, NODE);
    assert!(wait_until(WAIT, || node.ever_claimed()), "the Node SBC leads: {:?}", node.last_error());

    let sbc = Sbc::start("127.0.0.232", &db, &cluster.0, &[]);
    // (a) Several Node refreshes and many daemon checks: standby, nothing registered.
    let watch_until = Instant::now() + NODE.check_interval * 3 + TOKEN_TTL;
    while Instant::now() < watch_until {
        assert_eq!(sbc.role(), "standby", "log:\n{}", sbc.log());
        assert_eq!(token_in(&node.key).as_deref(), Some(node.token.as_str()), "the Node token stays in the key");
        thread::sleep(Duration::from_millis(200));
    }
    let refreshes = node.events().iter().filter(|(_, e)| *e == NodeEvent::Refreshed).count();
    assert!(refreshes >= 3, "the Node leader refreshed meanwhile: {:?}", node.events());
    assert!(node.events().iter().all(|(_, e)| *e != NodeEvent::StoodDown), "{:?}", node.events());
    assert!(carrier.requests("REGISTER").is_empty(), "sbc-sidecar registered while Node led");

    // (b) The Node process dies: the key lapses, sbc-sidecar claims it and registers.
    node.stop();
    let last_write = node.last_write().expect("the Node leader wrote the key");
    let registered = wait_until(TAKEOVER, || !carrier.requests("REGISTER").is_empty());
    let took = last_write.elapsed();
    assert!(registered, "no REGISTER {TAKEOVER:?} after the Node leader stopped; log:\n{}", sbc.log());
    eprintln!(
        "take-over after the Node leader's last refresh: {took:?} (TTL {TOKEN_TTL:?} + interval {STATUS_INTERVAL:?})"
    );
    assert_eq!(sbc.role(), "leader");
    let key_value = token_in(&node.key).expect("sbc-sidecar holds the key");
    assert_ne!(key_value, node.token);
    let ttl: i64 = redis_conn().ttl(&node.key).unwrap();
    assert!((1..=2).contains(&ttl), "sbc-sidecar's key has a TTL (Node's EXPIRE 70 shortened to 2): {ttl}");
}

#[test]
fn while_sbc_sidecar_leads_a_node_contender_never_gets_the_key_and_takes_over_after_a_rollback() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let (carrier, carrier_sid) = carrier(&db, "127.0.0.233");
    let mut sbc = Sbc::start("127.0.0.234", &db, &cluster.0, &[]);
    assert!(wait_until(WAIT, || sbc.role() == "leader"), "log:\n{}", sbc.log());
    carrier.wait_for_requests("REGISTER", 1, WAIT);

    // (c) A Node SBC joins: it polls the key every check and never obtains it.
    let fast = NodeTiming { check_interval: STATUS_INTERVAL, ..NODE };
    let mut contender = NodeLeader::start(REDIS, &cluster.0, fast);
    let key = contender.key.clone();
    let held_by_sbc = token_in(&key).expect("the daemon's token");
    let watch_until = Instant::now() + TOKEN_TTL * 3;
    while Instant::now() < watch_until {
        assert_eq!(token_in(&key).as_deref(), Some(held_by_sbc.as_str()), "the key changed hands");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(!contender.ever_claimed(), "the Node contender obtained the key: {:?}", contender.events());
    assert!(contender.events().iter().any(|(_, e)| *e == NodeEvent::ClaimRefused));
    assert_eq!(sbc.role(), "leader");

    // register_status as the webapp reads it: the Node fields, nothing else.
    let status: String = db
        .conn()
        .exec_first("SELECT register_status FROM voip_carriers WHERE voip_carrier_sid = ?", (&carrier_sid,))
        .unwrap()
        .expect("register_status written");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let fields: Vec<&str> = status.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, REGISTER_STATUS_FIELDS, "{status}");
    assert_eq!(status["status"], "ok");

    // Rollback: the unit is stopped; the key is released and the Node SBC takes the role at its
    // next check. The carrier's binding stays (no Expires: 0) for the Node leader to refresh.
    let stopping = Instant::now();
    let mut daemon = sbc.daemon.take().unwrap();
    assert_eq!(daemon.stop(WAIT).and_then(|s| s.code()), Some(0), "log:\n{}", daemon.log());
    assert!(
        wait_until(NODE.check_interval * 2 + Duration::from_secs(2), || contender.ever_claimed()),
        "the Node SBC did not take over after the rollback: {:?}",
        contender.events()
    );
    eprintln!("Node take-over after SIGTERM: {:?}", stopping.elapsed());
    assert_eq!(token_in(&key).as_deref(), Some(contender.token.as_str()));
    let ttl: i64 = redis_conn().ttl(&key).unwrap();
    assert!(ttl > 0, "Node's separate EXPIRE followed its SET NX: {ttl}");
    let zeros = carrier.requests("REGISTER").into_iter().filter(|m| expires_of(m) == Some(0)).count();
    assert_eq!(zeros, 0, "nothing de-registered when handing the role back to Node");
    contender.stop();
}

// ------------------------------------------------------------------------------------------
// registrar
// ------------------------------------------------------------------------------------------

/// An account with a registration webhook on realm `realm`; returns its sid.
fn webhook_account(db: &TestDb, hook: &WebhookServer, realm: &str) -> String {
    let mut c = db.conn();
    let hook_sid = uuid();
    c.exec_drop(
        "INSERT INTO webhooks (webhook_sid, url, method) VALUES (?, ?, 'POST')",
        (&hook_sid, hook.url("/auth")),
    )
    .unwrap();
    let sid = uuid();
    c.exec_drop(
        "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, \
         is_active, webhook_secret, device_to_call_ratio) VALUES (?, 'upgrade', ?, ?, ?, 1, 'wh', 5)",
        (&sid, realm, uuid(), &hook_sid),
    )
    .unwrap();
    sid
}

/// Hosting-mode capacity of exactly `devices` devices.
fn device_limit(db: &TestDb, account_sid: &str, devices: i64) {
    db.add_capacity(account_sid, &[("voice_call_session", 0), ("device", devices)]);
}

/// Deletes the bindings of `aors` when dropped.
struct Aors(Vec<String>);

impl Drop for Aors {
    fn drop(&mut self) {
        let mut conn = redis_conn();
        for aor in &self.0 {
            let key = format!("user:{aor}");
            let _: redis::RedisResult<()> = conn.del(&key);
            let _: redis::RedisResult<()> = conn.zrem("active-user", &key);
        }
    }
}

#[test]
fn bindings_written_by_node_are_answered_from_the_cache_window_and_count_as_devices() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let hook = WebhookServer::start();
    let realm = format!("up{:08x}.example.com", rand::random::<u32>());
    let account = webhook_account(&db, &hook, &realm);
    device_limit(&db, &account, 2);
    let aors = Aors(["nina", "omar", "pia"].iter().map(|u| format!("{u}@{realm}")).collect());
    // The double (and so the daemon's hostport list) comes first: Node wrote that address.
    let sbc = Sbc::start("127.0.0.235", &db, &cluster.0, &[("JAMBONES_HOSTING", "1")]);
    let phone = RawPhone::new("127.0.0.236", sbc.double.sip_addr());
    let local = phone.local();
    let hostports = sbc.double.hostports();
    let private = format!("127.0.0.235:{}", sbc.double.sip_addr().port());
    let mut conn = redis_conn();
    // Node's mw-registrar add(): SETEX user:<aor> + ZADD active-user.
    let mut node_writes = |aor: &str, user: &str, proxy: &str| -> String {
        let b = NodeBinding {
            contact: &format!("sip:{user}@{local};transport=udp"),
            sbc_address: &hostports,
            private_sbc_address: Some(&private),
            protocol: Some("udp"),
            proxy,
            call_hook: None,
            call_status_hook: None,
            expiry_time_ms: now_ms() + 600_000,
        };
        b.store(&mut conn, aor, 600).unwrap();
        b.json()
    };
    let nina_json = node_writes(&aors.0[0], "nina", &format!("sip:{}:{}", local.ip(), local.port()));
    node_writes(&aors.0[1], "omar", "sip:127.0.0.237:5060");
    let mut conn = redis_conn();

    // nina refreshes from the address Node stored: answered from the cache window, as Node would.
    let cached = phone.register(&realm, "nina", 1, None);
    assert_eq!(status_of(&cached), 200, "{cached}\nlog:\n{}", sbc.log());
    assert_eq!(header_of(&cached, "Expires"), Some("30"), "UDP is told 30 s: {cached}");
    assert_eq!(hook.request_count(), 0, "no webhook call for a cached refresh");
    let stored: String = conn.get(format!("user:{}", aors.0[0])).unwrap();
    assert_eq!(stored, nina_json, "a cached answer writes nothing (as in Node)");

    // The two Node devices fill the limit of 2: a third device is refused as if ours.
    let other = RawPhone::new("127.0.0.238", sbc.double.sip_addr());
    let refused = other.register(&realm, "pia", 1, None);
    assert_eq!(status_of(&refused), 503, "{refused}");
    assert!(refused.starts_with("SIP/2.0 503 Max Devices Registered"), "{refused}");

    // A phone answering a Node challenge (a Node nonce) gets a fresh 401 of ours, and the
    // webhook is not asked.
    hook.set_password("nina", "nina-pw");
    let nonce = node_nonce(now_ms());
    let node_answer = authorization(&realm, "nina", "nina-pw", &nonce);
    let fresh = other.register(&realm, "nina", 2, Some(&node_answer));
    assert_eq!(status_of(&fresh), 401, "{fresh}");
    let ours = challenge_nonce(&fresh).expect("a nonce");
    assert_ne!(ours, nonce);
    assert_eq!(
        hook.request_count(),
        0,
        "{:?}",
        hook.requests().iter().map(|r| r.path().to_string()).collect::<Vec<_>>()
    );
    // … and registers with it: a registered AOR may move even at the limit.
    let ok = other.register(&realm, "nina", 3, Some(&authorization(&realm, "nina", "nina-pw", &ours)));
    assert_eq!(status_of(&ok), 200, "{ok}\nlog:\n{}", sbc.log());
    let rewritten: String = conn.get(format!("user:{}", aors.0[0])).unwrap();
    let other_local = other.local();
    assert!(node_cache_hit(&rewritten, &other_local.ip().to_string(), other_local.port(), now_ms()), "{rewritten}");
}

// ------------------------------------------------------------------------------------------
// heartbeats and drain state
// ------------------------------------------------------------------------------------------

fn heartbeat(sbc: &Sbc, ip: &str, port: u16, kind: &str, status: &str) {
    let url = format!("http://{ip}:3000");
    let keys = [("kind", kind), ("status", status), ("service_url", url.as_str())];
    let mut s = sipp::Sipp::new("options_heartbeat.xml", &sbc.double.sip_addr().to_string(), ip, port);
    s.keys = &keys;
    let run = s.run();
    assert_eq!(run.status, Some(0), "heartbeat from {ip}:{port}: {}\n{}", run.stderr, run.messages);
}

fn members(conn: &mut redis::Connection, key: &str) -> Vec<String> {
    let mut m: Vec<String> = conn.smembers(key).unwrap();
    m.sort();
    m
}

#[test]
fn heartbeat_sets_and_drain_state_written_by_node_are_honoured_and_ours_are_node_shaped() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let c = &cluster.0;
    let mut conn = redis_conn();
    // What a Node SBC and the Node CLI left: a feature server (ip:port), drained by IP; an
    // RTP server (bare IP).
    let _: () = conn.sadd(format!("{c}:active-fs"), "127.0.0.239:5070").unwrap();
    let _: () = conn.sadd(format!("{c}:drained-fs"), "127.0.0.239").unwrap();
    let _: () = conn.sadd(format!("{c}:active-rtp"), "127.0.0.240").unwrap();
    let sbc = Sbc::start("127.0.0.241", &db, c, &[]);

    let list = sbc.sbcctl(&["fs", "list"]);
    assert!(list.contains("127.0.0.239:5070 (drained)"), "{list}");
    let drained = sbc.sbcctl(&["fs", "drained"]);
    assert!(drained.contains("127.0.0.239"), "{drained}");
    let active = sbc.sbcctl(&["fs", "active"]);
    assert!(!active.contains("127.0.0.239"), "a drained server is not available: {active}");

    // The drained feature server checks in open: treated as closed, removed (spec 5.3).
    heartbeat(&sbc, "127.0.0.239", 5070, "FS", "open");
    assert_eq!(members(&mut conn, &format!("{c}:active-fs")), Vec::<String>::new());
    // Undrained with our CLI (what Node's `fs undrain` does): the next check-in adds it back,
    // as ip:port, next to a new one of ours.
    sbc.sbcctl(&["fs", "undrain", "127.0.0.239"]);
    assert_eq!(members(&mut conn, &format!("{c}:drained-fs")), Vec::<String>::new());
    heartbeat(&sbc, "127.0.0.239", 5070, "FS", "open");
    heartbeat(&sbc, "127.0.0.242", 5070, "FS", "open");
    heartbeat(&sbc, "127.0.0.243", 5099, "RTP", "open");
    assert_eq!(members(&mut conn, &format!("{c}:active-fs")), vec!["127.0.0.239:5070", "127.0.0.242:5070"]);
    assert_eq!(members(&mut conn, &format!("{c}:active-rtp")), vec!["127.0.0.240", "127.0.0.243"]);
    let urls = members(&mut conn, &format!("{c}:fs-service-url"));
    assert!(urls.contains(&"http://127.0.0.242:3000".to_string()), "{urls:?}");

    // Our drain writes the bare IP, which is what Node's OPTIONS handler looks up
    // (SISMEMBER <c>:drained-fs <source_address>).
    sbc.sbcctl(&["fs", "drain", "127.0.0.242"]);
    assert_eq!(members(&mut conn, &format!("{c}:drained-fs")), vec!["127.0.0.242"]);
    let is_member: bool = conn.sismember(format!("{c}:drained-fs"), "127.0.0.242").unwrap();
    assert!(is_member);
}

// ------------------------------------------------------------------------------------------
// rollback: what sbc-sidecar writes is what Node reads
// ------------------------------------------------------------------------------------------

#[test]
fn a_binding_written_by_sbc_sidecar_is_the_one_node_reads() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let hook = WebhookServer::start();
    let realm = format!("rb{:08x}.example.com", rand::random::<u32>());
    webhook_account(&db, &hook, &realm);
    let _aors = Aors(vec![format!("rita@{realm}")]);
    hook.set_password("rita", "rita-pw");
    let sbc = Sbc::start("127.0.0.244", &db, &cluster.0, &[]);
    let phone = RawPhone::new("127.0.0.245", sbc.double.sip_addr());
    let challenge = phone.register(&realm, "rita", 1, None);
    assert_eq!(status_of(&challenge), 401, "{challenge}");
    let nonce = challenge_nonce(&challenge).unwrap();
    let ok = phone.register(&realm, "rita", 2, Some(&authorization(&realm, "rita", "rita-pw", &nonce)));
    assert_eq!(status_of(&ok), 200, "{ok}\nlog:\n{}", sbc.log());

    let mut conn = redis_conn();
    let key = format!("user:rita@{realm}");
    let json: String = conn.get(&key).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let in_spec_order: Vec<&str> = BINDING_FIELDS.iter().copied().filter(|f| fields.contains(f)).collect();
    assert_eq!(fields, in_spec_order, "only Node's fields, in Node's order: {json}");
    for required in ["contact", "sbcAddress", "proxy", "expiryTime"] {
        assert!(fields.contains(&required), "{required} missing: {json}");
    }
    let local = phone.local();
    assert_eq!(v["proxy"], format!("sip:{}:{}", local.ip(), local.port()));
    assert_eq!(v["sbcAddress"], sbc.double.hostports());
    assert_eq!(v["protocol"], "udp");
    let expiry = v["expiryTime"].as_u64().expect("expiryTime in Unix ms, a number");
    assert!(expiry.abs_diff(now_ms() + 600_000) < 10_000, "{expiry}");
    let score: f64 = conn.zscore("active-user", &key).unwrap();
    assert_eq!(score as u64, expiry, "active-user scored with expiryTime");
    let ttl: i64 = conn.ttl(&key).unwrap();
    assert!((590..=600).contains(&ttl), "SETEX with the grant: {ttl}");
    // Node's checkCache on our JSON: the same phone's refresh would be answered from cache.
    assert!(node_cache_hit(&json, &local.ip().to_string(), local.port(), now_ms()));
    assert!(!node_cache_hit(&json, &local.ip().to_string(), local.port() + 1, now_ms()));
}
