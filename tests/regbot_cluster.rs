//! Outbound registration across SBCs: two `sbc-sidecar` processes against one Redis and one
//! MariaDB database, each beside its own drachtio double on its own loopback address, and a
//! sipp carrier that records every REGISTER.
//!
//! Leader mode: exactly one SBC registers; the role moves on SIGKILL, SIGTERM and when the
//! leader loses Redis, within the role key's TTL plus one status interval; the new leader
//! re-registers at the pacing rate; the old one, back, stays standby; `register_status` never
//! says `fail` on the way; a removed carrier is de-registered once.
//!
//! Every mode (`SBC_REGBOT_MODE=every`): each SBC registers with its own Call-ID and Contact,
//! refreshes, de-registers at SIGTERM and on removal; `register_status` counts the SBCs that
//! hold a registration; the failure threshold counts across SBCs. Switching a cluster between
//! the modes one daemon at a time leaves no stale binding at the carrier.
//!
//! The intervals are short (role key 2 s, check every 300 ms, carrier grants 4 s) and every
//! wait is bounded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql::prelude::Queryable;
use sbc_test_tools::carrier::{Peer, Traced};
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::tcp_proxy::TcpProxy;
use sbc_test_tools::wait_until;

const TOKEN_TTL: Duration = Duration::from_secs(2);
const STATUS_INTERVAL: Duration = Duration::from_millis(300);
const BATCH_SLEEP: Duration = Duration::from_millis(400);
/// What the documentation promises for a hand-over (the role key's TTL + one status
/// interval; the claim jitter is 0 here), plus 3 s for a loaded machine and sbcctl.
const HANDOVER: Duration = TOKEN_TTL.saturating_add(STATUS_INTERVAL).saturating_add(Duration::from_secs(3));
const WAIT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

/// A sipp carrier answering each REGISTER in a sipp call of its own (see
/// `regbot_reply_each.xml`), so that it answers whichever SBC sent it.
fn carrier(ip: &str, status: &str, reason: &str, expires: &str) -> Peer {
    let keys = [("status", status), ("reason", reason), ("expires", expires)];
    Peer::start_with("regbot_reply_each.xml", ip, sbc_test_tools::sipp::free_port(ip), &keys, &["-deadcall_wait", "0"])
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn redis_conn() -> redis::Connection {
    sbc_test_tools::services::redis()
}

/// A unique cluster id whose Redis keys (`<cluster>:*`) are deleted when dropped.
struct Cluster(String);

impl Cluster {
    fn new() -> Cluster {
        Cluster(format!("test-cluster-{}", uuid::Uuid::new_v4().simple()))
    }
}

impl std::ops::Deref for Cluster {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open("redis://127.0.0.1:6379/") else { return };
        let Ok(mut conn) = client.get_connection() else { return };
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", self.0)).query(&mut conn).unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// One SBC: a drachtio double on `ip` and the daemon beside it.
struct Sbc {
    ip: &'static str,
    double: Double,
    daemon: Option<Daemon>,
    env: HashMap<String, String>,
}

impl Sbc {
    fn start(ip: &'static str, db: &TestDb, cluster: &str, mode: &str, extra: &[(&str, &str)]) -> Sbc {
        let double = Double::start(DoubleConfig {
            admin: format!("{ip}:0").parse().unwrap(),
            sip_ip: ip.parse().unwrap(),
            uac_timeout: Duration::from_secs(2),
            ..DoubleConfig::default()
        })
        .expect("double starts");
        let mut env = base_env(double.admin_addr().port(), &db.name);
        for (k, v) in [
            ("DRACHTIO_HOST", ip),
            ("JAMBONES_CLUSTER_ID", cluster),
            ("SBC_REGBOT_MODE", mode),
            ("SBC_REGBOT_CLAIM_JITTER_MS", "0"),
            ("SBC_REGBOT_STATUS_INTERVAL_MS", &STATUS_INTERVAL.as_millis().to_string()),
            ("SBC_REGBOT_TOKEN_TTL_S", &TOKEN_TTL.as_secs().to_string()),
            ("JAMBONES_REGBOT_MIN_EXPIRES_INTERVAL", "4"),
            ("JAMBONES_REGBOT_FAILURE_RETRY_INTERVAL", "2"),
            ("JAMBONES_REGBOT_BATCH_SIZE", "1"),
            ("JAMBONES_REGBOT_BATCH_SLEEP_MS", &BATCH_SLEEP.as_millis().to_string()),
        ] {
            env.insert(k.into(), v.to_string());
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let daemon = Daemon::start(env.clone(), &[]);
        Sbc { ip, double, daemon: Some(daemon), env }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// `ip:port` of our SIP address: the id of this SBC in every mode.
    fn public(&self) -> String {
        self.double.sip_addr().to_string()
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// The `regbot.role` of `sbcctl --json status`.
    fn role(&self) -> String {
        let Some(daemon) = &self.daemon else { return "stopped".into() };
        let out = Command::new(env!("CARGO_BIN_EXE_sbcctl"))
            .arg("--socket")
            .arg(&daemon.socket_path)
            .args(["--json", "status"])
            .output()
            .expect("sbcctl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["regbot"]["role"].as_str().unwrap_or("unknown").to_string()
    }

    fn wait_role(&self, role: &str, timeout: Duration) {
        let ok = wait_until(timeout, || self.role() == role);
        assert!(ok, "{} is not {role} but {}; log:\n{}", self.ip, self.role(), self.log());
    }

    fn regbot_list(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_sbcctl"))
            .arg("--socket")
            .arg(&self.daemon().socket_path)
            .args(["regbot", "list"])
            .output()
            .expect("sbcctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGTERM and wait for the exit (status 0).
    fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let status = d.stop(Duration::from_secs(15));
            assert_eq!(status.and_then(|s| s.code()), Some(0), "clean exit of {}; log:\n{}", self.ip, d.log());
        }
    }

    /// SIGKILL: nothing is cleaned up.
    fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.signal("KILL");
            assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "killed");
        }
    }

    /// Starts the daemon again beside the same double, in `mode`.
    fn restart(&mut self, mode: &str) {
        self.stop();
        self.env.insert("SBC_REGBOT_MODE".into(), mode.into());
        self.daemon = Some(Daemon::start(self.env.clone(), &[]));
    }
}

/// A carrier row and its gateway on the sipp carrier.
fn add_carrier(db: &TestDb, username: &str, trunk_type: &str, carrier: &Peer) -> (String, String) {
    add_carrier_with(db, username, trunk_type, carrier, false)
}

/// … with `register_public_ip_in_contact` as given.
fn add_carrier_with(
    db: &TestDb,
    username: &str,
    trunk_type: &str,
    carrier: &Peer,
    public_ip_in_contact: bool,
) -> (String, String) {
    let carrier_sid = uuid::Uuid::new_v4().to_string();
    let gateway_sid = uuid::Uuid::new_v4().to_string();
    let mut c = db.conn();
    c.exec_drop(
        "INSERT INTO voip_carriers (voip_carrier_sid, name, requires_register, register_username, register_password, \
         register_sip_realm, register_public_ip_in_contact, trunk_type, is_active) \
         VALUES (?, ?, 1, ?, 's3cret', 'sip.carrier.test', ?, ?, 1)",
        (&carrier_sid, format!("carrier {username}"), username, public_ip_in_contact, trunk_type),
    )
    .unwrap();
    c.exec_drop(
        "INSERT INTO sip_gateways (sip_gateway_sid, ipv4, port, inbound, outbound, voip_carrier_sid, protocol) \
         VALUES (?, ?, ?, 1, 1, ?, 'udp')",
        (&gateway_sid, &carrier.ip, carrier.port, &carrier_sid),
    )
    .unwrap();
    (carrier_sid, gateway_sid)
}

fn register_status(db: &TestDb, carrier: &str) -> Option<serde_json::Value> {
    let raw: Option<Option<String>> = db
        .conn()
        .exec_first("SELECT register_status FROM voip_carriers WHERE voip_carrier_sid = ?", (carrier,))
        .unwrap();
    raw.flatten().and_then(|s| serde_json::from_str(&s).ok())
}

fn wait_for_status(db: &TestDb, carrier: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let ok = wait_until(WAIT, || register_status(db, carrier).is_some_and(|s| cond(&s)));
    assert!(ok, "{what}; register_status: {:?}", register_status(db, carrier));
}

/// Watches `register_status` of some carriers in the background and remembers every value
/// that was not `ok`.
struct StatusWatch {
    stop: Arc<AtomicBool>,
    bad: Arc<Mutex<Vec<String>>>,
    handle: Option<JoinHandle<()>>,
}

impl StatusWatch {
    fn start(db: &TestDb, carriers: &[String]) -> StatusWatch {
        let pool = db.pool();
        let carriers = carriers.to_vec();
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let (s, b) = (stop.clone(), bad.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Ok(mut conn) = pool.get_conn() {
                    for c in &carriers {
                        let raw: Option<Option<String>> = conn
                            .exec_first("SELECT register_status FROM voip_carriers WHERE voip_carrier_sid = ?", (c,))
                            .unwrap_or(None);
                        if let Some(json) = raw.flatten().filter(|j| !j.contains(r#""status":"ok""#)) {
                            b.lock().unwrap().push(json);
                        }
                    }
                }
                thread::sleep(Duration::from_millis(40));
            }
        });
        StatusWatch { stop, bad, handle: Some(handle) }
    }

    /// Stops watching; the values that were not `ok`.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.bad.lock().unwrap().clone()
    }
}

/// The host of the top Via: which double (hence which SBC) sent the request.
fn via_host(m: &Traced) -> String {
    let via = m.header("Via").unwrap_or_default();
    let sent_by = via.split_whitespace().nth(1).unwrap_or("");
    sent_by.split([':', ';']).next().unwrap_or("").to_string()
}

fn contact_uri(m: &Traced) -> String {
    let c = m.header("Contact").unwrap_or_default();
    c.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(u, _)| u.to_string()).unwrap_or(c)
}

fn expires(m: &Traced) -> u64 {
    m.header("Expires").and_then(|e| e.parse().ok()).unwrap_or(u64::MAX)
}

fn call_id(m: &Traced) -> String {
    m.header("Call-ID").unwrap_or_default()
}

fn from_user(m: &Traced) -> String {
    let from = m.header("From").unwrap_or_default();
    from.split_once("sip:").and_then(|(_, r)| r.split_once('@')).map(|(u, _)| u.to_string()).unwrap_or_default()
}

/// The REGISTERs the carrier accepted: all of them, or with a digest challenge only those
/// that carry an Authorization.
fn accepted(carrier: &Peer, challenged: bool) -> Vec<Traced> {
    carrier.requests("REGISTER").into_iter().filter(|m| !challenged || m.header("Authorization").is_some()).collect()
}

/// The bindings the carrier holds, as (Call-ID, Contact URI): those whose last accepted
/// REGISTER asked for a non-zero expires.
fn live_bindings(carrier: &Peer, challenged: bool) -> BTreeSet<(String, String)> {
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    for m in accepted(carrier, challenged) {
        last.insert((call_id(&m), contact_uri(&m)), expires(&m));
    }
    last.into_iter().filter(|(_, e)| *e > 0).map(|(k, _)| k).collect()
}

fn wait_for_bindings(carrier: &Peer, challenged: bool, want: &BTreeSet<(String, String)>, what: &str) {
    let ok = wait_until(WAIT, || live_bindings(carrier, challenged) == *want);
    assert!(ok, "{what}: carrier holds {:#?}, expected {want:#?}", live_bindings(carrier, challenged));
}

// ------------------------------------------------------------------------------------------
// leader mode
// ------------------------------------------------------------------------------------------

#[test]
fn one_leader_registers_a_killed_leader_hands_over_paced_and_back_it_stays_standby() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let carrier = carrier("127.0.0.211", "200", "OK", "4");
    let carriers: Vec<(String, String)> =
        ["u1", "u2", "u3"].iter().map(|u| add_carrier(&db, u, "static_ip", &carrier)).collect();
    let carrier_sids: Vec<String> = carriers.iter().map(|(c, _)| c.clone()).collect();

    let mut a = Sbc::start("127.0.0.212", &db, &cluster, "leader", &[]);
    a.wait_role("leader", WAIT);
    for c in &carrier_sids {
        wait_for_status(&db, c, "the leader registers every carrier", |s| s["status"] == "ok");
    }
    let b = Sbc::start("127.0.0.213", &db, &cluster, "leader", &[]);
    b.wait_role("standby", WAIT);
    // Both run a few status intervals and refreshes: only the leader registers.
    thread::sleep(Duration::from_secs(2));
    let senders: BTreeSet<String> = carrier.requests("REGISTER").iter().map(via_host).collect();
    assert_eq!(senders, BTreeSet::from([a.ip.to_string()]), "exactly one SBC registers");
    let refreshed: BTreeSet<String> = carrier.requests("REGISTER").iter().map(from_user).collect();
    assert_eq!(refreshed.len(), 3, "every carrier registered");

    let watch = StatusWatch::start(&db, &carrier_sids);
    let before = carrier.requests("REGISTER").len();
    let killed = Instant::now();
    a.kill();
    b.wait_role("leader", HANDOVER);
    let took = killed.elapsed();
    let ok = wait_until(WAIT, || {
        let users: BTreeSet<String> =
            carrier.requests("REGISTER")[before..].iter().filter(|m| via_host(m) == b.ip).map(from_user).collect();
        users.len() == 3
    });
    assert!(ok, "the new leader re-registers every carrier; log:\n{}", b.log());
    eprintln!("hand-over after SIGKILL took {took:?} (TTL {TOKEN_TTL:?} + interval {STATUS_INTERVAL:?})");

    // Paced: JAMBONES_REGBOT_BATCH_SIZE=1 with 400 ms between batches.
    let mut firsts: BTreeMap<String, f64> = BTreeMap::new();
    for m in carrier.requests("REGISTER")[before..].iter().filter(|m| via_host(m) == b.ip) {
        firsts.entry(from_user(m)).or_insert(m.at);
    }
    let mut starts: Vec<f64> = firsts.values().copied().collect();
    starts.sort_by(f64::total_cmp);
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= BATCH_SLEEP.as_secs_f64() / 2.0, "a burst above the pacing rate: {starts:?}");
    }

    // The killed one comes back: it stays standby and registers nothing.
    let back_from = carrier.requests("REGISTER").len();
    a.daemon = Some(Daemon::start(a.env.clone(), &[]));
    a.wait_role("standby", WAIT);
    thread::sleep(TOKEN_TTL + STATUS_INTERVAL * 3);
    assert_eq!(a.role(), "standby");
    assert!(
        carrier.requests("REGISTER")[back_from..].iter().all(|m| via_host(m) == b.ip),
        "the old leader registers in parallel; log:\n{}",
        a.log()
    );
    let bad = watch.finish();
    assert!(bad.is_empty(), "register_status flapped during the hand-over: {bad:?}");

    // A removed carrier is de-registered once, by the leader only.
    let (_, gone_gateway) = &carriers[0];
    db.conn().exec_drop("DELETE FROM sip_gateways WHERE sip_gateway_sid = ?", (gone_gateway,)).unwrap();
    let unregisters = || -> Vec<Traced> {
        carrier.requests("REGISTER").into_iter().filter(|m| expires(m) == 0 && call_id(m) == *gone_gateway).collect()
    };
    assert!(wait_until(WAIT, || !unregisters().is_empty()), "the removed gateway is de-registered");
    thread::sleep(STATUS_INTERVAL * 6);
    let sent = unregisters();
    assert_eq!(sent.len(), 1, "de-registered once: {sent:#?}");
    assert_eq!(via_host(&sent[0]), b.ip);
}

#[test]
fn a_stopped_leader_hands_over_without_deregistering_and_a_leader_cut_from_redis_stands_down() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let carrier = carrier("127.0.0.214", "200", "OK", "4");
    let (c1, _) = add_carrier(&db, "u1", "static_ip", &carrier);
    let (c2, _) = add_carrier(&db, "u2", "static_ip", &carrier);
    let upstream: SocketAddr = "127.0.0.1:6379".parse().unwrap();
    let proxy = TcpProxy::start("127.0.0.215:0", upstream).expect("redis proxy");
    let port = proxy.addr().port().to_string();
    let redis_via_proxy = [("JAMBONES_REDIS_HOST", "127.0.0.215"), ("JAMBONES_REDIS_PORT", port.as_str())];

    // a reaches Redis through the proxy and leads; b is the standby.
    let a = Sbc::start("127.0.0.216", &db, &cluster, "leader", &redis_via_proxy);
    a.wait_role("leader", WAIT);
    wait_for_status(&db, &c1, "registered", |s| s["status"] == "ok");
    let mut b = Sbc::start("127.0.0.217", &db, &cluster, "leader", &[]);
    b.wait_role("standby", WAIT);
    let watch = StatusWatch::start(&db, &[c1.clone(), c2.clone()]);

    // Redis goes away for a only.
    let cut_at = carrier.requests("REGISTER").len();
    proxy.cut();
    b.wait_role("leader", HANDOVER);
    assert!(wait_until(WAIT, || a.role() == "standby"), "a stood down; log:\n{}", a.log());
    assert!(a.log().contains("standing down"), "{}", a.log());
    let msgs = carrier.requests("REGISTER");
    let b_first = msgs[cut_at..].iter().position(|m| via_host(m) == b.ip).map(|i| i + cut_at);
    let b_first = b_first.unwrap_or_else(|| panic!("b registers; log:\n{}", b.log()));
    proxy.restore();
    thread::sleep(TOKEN_TTL + STATUS_INTERVAL * 3);
    assert_eq!(a.role(), "standby", "back with Redis, a finds b's key");
    let late_a: Vec<Traced> =
        carrier.requests("REGISTER")[b_first..].iter().filter(|m| via_host(m) == a.ip).cloned().collect();
    assert!(late_a.is_empty(), "a registered while b held the role: {late_a:#?}");

    // SIGTERM of the leader: the standby takes over at once (the key is released), and the
    // bindings stay (no Expires: 0), as a leader-mode standby refreshes them.
    let stopped_at = carrier.requests("REGISTER").len();
    let stopping = Instant::now();
    b.stop();
    a.wait_role("leader", HANDOVER);
    eprintln!("hand-over after SIGTERM took {:?}", stopping.elapsed());
    assert!(wait_until(WAIT, || carrier.requests("REGISTER")[stopped_at..].iter().any(|m| via_host(m) == a.ip)));
    let zeros: Vec<Traced> = carrier.requests("REGISTER").into_iter().filter(|m| expires(m) == 0).collect();
    assert!(zeros.is_empty(), "nothing de-registered at a leader-mode hand-over: {zeros:#?}");
    let bad = watch.finish();
    assert!(bad.is_empty(), "register_status flapped during the hand-overs: {bad:?}");
}

// ------------------------------------------------------------------------------------------
// every mode
// ------------------------------------------------------------------------------------------

#[test]
fn every_sbc_registers_with_its_own_contact_and_call_id_refreshes_and_deregisters() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let carrier = Peer::start(
        "regbot_challenge.xml",
        "127.0.0.218",
        &[("user", "alice"), ("pass", "s3cret"), ("realm", "sip.carrier.test"), ("expires", "4")],
    );
    let (carrier_sid, gw) = add_carrier(&db, "alice", "reg", &carrier);
    let mut a = Sbc::start("127.0.0.219", &db, &cluster, "every", &[]);
    let mut b = Sbc::start("127.0.0.220", &db, &cluster, "every", &[]);
    let binding = |sbc: &Sbc| (format!("{gw}@{}", sbc.public()), format!("sip:alice@{};transport=udp", sbc.public()));
    let both = BTreeSet::from([binding(&a), binding(&b)]);
    wait_for_bindings(&carrier, true, &both, "two Contacts, two Call-IDs");
    // Each Contact is the address its SBC publishes in sbc_addresses.
    let published: Vec<(String, u16)> = db.conn().query("SELECT ipv4, port FROM sbc_addresses").unwrap();
    for sbc in [&a, &b] {
        let addr = sbc.double.sip_addr();
        assert!(published.contains(&(addr.ip().to_string(), addr.port())), "{published:?} lacks {addr}");
    }
    wait_for_status(&db, &carrier_sid, "ok from two SBCs", |s| s["status"] == "ok" && s["sbcs"] == 2);
    let status = register_status(&db, &carrier_sid).unwrap();
    assert_eq!(status["reason"], "200 OK", "{status}");
    assert!(status["callId"].as_str().is_some_and(|c| c.starts_with(&gw)), "{status}");

    // Each refreshes on its own.
    let ok = wait_until(WAIT, || {
        let regs = accepted(&carrier, true);
        both.iter().all(|(cid, _)| regs.iter().filter(|m| call_id(m) == *cid && expires(m) > 0).count() >= 3)
    });
    assert!(ok, "both refresh: {:#?}", accepted(&carrier, true).iter().map(call_id).collect::<Vec<_>>());

    // sbcctl shows this SBC's own regbot and how many SBCs hold the carrier.
    let list = a.regbot_list();
    assert!(list.contains("Regbot role: every"), "{list}");
    assert!(list.contains("SBCS REGISTERED"), "{list}");
    let row = list.lines().find(|l| l.contains(&gw)).unwrap_or_else(|| panic!("{list}"));
    assert!(row.starts_with("registered") && row.trim_end().ends_with('2'), "{row}");

    // One ephemeral gateway entry for the carrier, whoever registers.
    let eph = || -> Option<u64> {
        redis::cmd("HGET").arg("eph-gw-ip:127.0.0.218").arg(&carrier_sid).query(&mut redis_conn()).unwrap()
    };
    assert!(eph().is_some_and(|until| until > unix_now()), "ephemeral gateway published");

    // SIGTERM: a de-registers its own binding only; the cluster still holds one.
    a.stop();
    let only_b = BTreeSet::from([binding(&b)]);
    wait_for_bindings(&carrier, true, &only_b, "a de-registered at SIGTERM");
    wait_for_status(&db, &carrier_sid, "ok from one SBC", |s| s["status"] == "ok" && s["sbcs"] == 1);
    assert!(eph().is_some_and(|until| until > unix_now()), "b still holds: the ephemeral gateway stays");

    // Back, then the carrier is removed: each SBC de-registers its binding once.
    a.restart("every");
    wait_for_bindings(&carrier, true, &both, "a registers again");
    let removed_at = carrier.requests("REGISTER").len();
    db.conn()
        .exec_drop("UPDATE voip_carriers SET requires_register = 0 WHERE voip_carrier_sid = ?", (&carrier_sid,))
        .unwrap();
    wait_for_bindings(&carrier, true, &BTreeSet::new(), "both de-registered on removal");
    wait_for_status(&db, &carrier_sid, "nobody holds a registration", |s| s["status"] == "fail" && s["sbcs"] == 0);
    assert!(wait_until(WAIT, || eph().is_none()), "the ephemeral gateway goes with the last registration");
    thread::sleep(STATUS_INTERVAL * 6);
    let after: Vec<Traced> = carrier.requests("REGISTER")[removed_at..].to_vec();
    for (cid, _) in &both {
        let n = after.iter().filter(|m| call_id(m) == *cid && m.header("Authorization").is_none()).count();
        assert_eq!(n, 1, "one de-registration for {cid}: {after:#?}");
        assert!(after.iter().filter(|m| call_id(m) == *cid).all(|m| expires(m) == 0));
    }
    let quiet = carrier.requests("REGISTER").len();
    b.stop();
    a.stop();
    assert_eq!(carrier.requests("REGISTER").len(), quiet, "nothing left to de-register at shutdown");
}

#[test]
fn every_mode_counts_the_failure_threshold_across_sbcs() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let carrier = carrier("127.0.0.221", "403", "Forbidden", "0");
    let (carrier_sid, _) = add_carrier(&db, "u1", "static_ip", &carrier);
    // First retry 1.9–3.75 s after a failure, the next twice that: with three failures
    // needed, one SBC alone would take more than 5 s.
    let extra = [
        ("REGISTER_RESPONSE_REMOVE", "403"),
        ("JAMBONES_REGBOT_REGISTER_FAILURE_THRESHOLD", "3"),
        ("JAMBONES_REGBOT_FAILURE_RETRY_INTERVAL", "60"),
    ];
    let a = Sbc::start("127.0.0.222", &db, &cluster, "every", &extra);
    let b = Sbc::start("127.0.0.223", &db, &cluster, "every", &extra);
    let disabled = || -> bool {
        let r: Option<i64> = db
            .conn()
            .exec_first("SELECT requires_register FROM voip_carriers WHERE voip_carrier_sid = ?", (&carrier_sid,))
            .unwrap();
        r == Some(0)
    };
    assert!(wait_until(WAIT, disabled), "disabled; logs:\n{}\n{}", a.log(), b.log());
    thread::sleep(STATUS_INTERVAL * 4);
    let regs = carrier.requests("REGISTER");
    let per_sbc: BTreeMap<String, usize> = regs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(call_id(r)).or_insert(0) += 1;
        m
    });
    assert_eq!(per_sbc.len(), 2, "both SBCs tried: {per_sbc:?}");
    assert!(regs.len() >= 3, "three failures in all: {per_sbc:?}");
    assert!(per_sbc.values().all(|n| *n < 3), "no SBC reached the threshold alone: {per_sbc:?}");
    let disables = a.log().matches("failures across SBCs").count() + b.log().matches("failures across SBCs").count();
    assert_eq!(disables, 1, "disabled once:\n{}\n{}", a.log(), b.log());
    let status = register_status(&db, &carrier_sid).unwrap();
    assert_eq!((status["status"].as_str(), status["sbcs"].as_u64()), (Some("fail"), Some(0)), "{status}");
    assert_eq!(status["reason"], "403 Forbidden", "the last failure stays readable: {status}");
}

// ------------------------------------------------------------------------------------------
// switching modes
// ------------------------------------------------------------------------------------------

#[test]
fn switching_a_cluster_from_leader_to_every_and_back_leaves_no_stale_binding() {
    let db = TestDb::create();
    let cluster = Cluster::new();
    let carrier = carrier("127.0.0.224", "200", "OK", "4");
    // u1 registers with the realm in its Contact (the same from any leader), u2 with the
    // leader's public address (register_public_ip_in_contact).
    let (carrier_sid, gw1) = add_carrier(&db, "u1", "static_ip", &carrier);
    let (_, gw2) = add_carrier_with(&db, "u2", "static_ip", &carrier, true);
    let mut a = Sbc::start("127.0.0.225", &db, &cluster, "leader", &[]);
    a.wait_role("leader", WAIT);
    let mut b = Sbc::start("127.0.0.226", &db, &cluster, "leader", &[]);
    b.wait_role("standby", WAIT);
    let leader = |sbc: &Sbc| {
        BTreeSet::from([
            (gw1.clone(), "sip:u1@sip.carrier.test;transport=udp".to_string()),
            (gw2.clone(), format!("sip:u2@{};transport=udp", sbc.public())),
        ])
    };
    let every = |sbc: &Sbc| {
        let p = sbc.public();
        BTreeSet::from([
            (format!("{gw1}@{p}"), format!("sip:u1@{p};transport=udp")),
            (format!("{gw2}@{p}"), format!("sip:u2@{p};transport=udp")),
        ])
    };
    let union = |x: BTreeSet<(String, String)>, y: BTreeSet<(String, String)>| -> BTreeSet<(String, String)> {
        x.union(&y).cloned().collect()
    };
    wait_for_bindings(&carrier, false, &leader(&a), "leader mode");

    // leader → every, one daemon at a time. The new leader removes the old leader's Contact.
    a.restart("every");
    b.wait_role("leader", HANDOVER);
    wait_for_bindings(&carrier, false, &union(leader(&b), every(&a)), "mixed cluster, b leads");
    b.restart("every");
    wait_for_bindings(&carrier, false, &union(every(&a), every(&b)), "every mode, leader bindings gone");
    wait_for_status(&db, &carrier_sid, "two SBCs", |s| s["status"] == "ok" && s["sbcs"] == 2);

    // every → leader.
    a.restart("leader");
    a.wait_role("leader", WAIT);
    wait_for_bindings(&carrier, false, &union(leader(&a), every(&b)), "mixed cluster, a leads");
    b.restart("leader");
    b.wait_role("standby", WAIT);
    wait_for_bindings(&carrier, false, &leader(&a), "leader mode again");
    thread::sleep(STATUS_INTERVAL * 6);
    assert_eq!(live_bindings(&carrier, false), leader(&a), "and it stays so");
    wait_for_status(&db, &carrier_sid, "leader-mode status", |s| s["status"] == "ok");
    a.stop();
    b.stop();
}
