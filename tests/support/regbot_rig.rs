//! The rig of the outbound registration tests (tests/regbot_*.rs except regbot_cluster.rs and
//! regbot_e2e.rs): carriers and gateways are rows in a throw-away MariaDB database, the
//! registrars and gateways are sipp UAS instances on their own 127.0.0.x addresses, Redis is the
//! real one, and the roles run in process with a real `DrachtioClient` connected to the
//! drachtio double (which puts our REGISTERs and OPTIONS on the wire and makes up the 408 of a
//! silent peer).
//!
//! Every test has its own database, cluster id (hence leader key) and IP addresses, and every
//! wait is bounded.
//!
//! Included by each test file with `#[path = "support/regbot_rig.rs"] mod regbot_rig;`; not
//! every file uses every helper.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Sender};
use mysql::prelude::Queryable;
use sbc_sidecar::config::RegbotMode;
use sbc_sidecar::drachtio::{ClientConfig, DrachtioClient};
use sbc_sidecar::regbot::{
    self, query_status, DnsSettings, RegbotHandles, RegbotSettings, RegbotSnapshot, StatusRequest,
};
use sbc_sidecar::shared::Shared;
use sbc_sidecar::store::mysql::{MysqlPool, MysqlSettings};
use sbc_sidecar::store::redis::{pool, RedisPool, RedisSettings};
use sbc_sidecar::supervise::Supervisor;
use sbc_sidecar::telemetry::Metrics;
use sbc_test_tools::db::{mysql_password, mysql_user, TestDb};
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::wait_until;

pub const WAIT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

pub fn cluster() -> String {
    format!("test-regbot-{}", uuid::Uuid::new_v4().simple())
}

pub fn settings(cluster: &str) -> RegbotSettings {
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

pub fn redis() -> RedisPool {
    sbc_test_tools::services::require_redis();
    pool(&RedisSettings::direct("127.0.0.1", 6379, Duration::from_secs(2), 8)).unwrap()
}

pub fn redis_query<T: redis::FromRedisValue>(cmd: &mut redis::Cmd) -> T {
    let mut conn = redis().get().unwrap();
    cmd.query(&mut *conn).unwrap()
}

pub fn mysql_pool(database: &str) -> MysqlPool {
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

pub fn start_double(uac_timeout: Duration) -> Double {
    Double::start(DoubleConfig { uac_timeout, ..DoubleConfig::default() }).expect("double starts")
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The roles of one sidecar, in process, connected to the double.
pub struct Instance {
    pub client: Option<DrachtioClient>,
    pub handles: Option<RegbotHandles>,
    pub shutdown: Option<Sender<()>>,
    pub status: Sender<StatusRequest>,
}

impl Instance {
    pub fn start(double: &Double, db: &TestDb, settings: RegbotSettings) -> Instance {
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
            Metrics::disabled(),
            &Supervisor::unwatched(),
        )
        .expect("drachtio client starts");
        let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
        let mysql = mysql_pool(&db.name);
        let shared = Shared { shutdown: shutdown_rx, ..Shared::for_tests(mysql, redis()) };
        let handles = regbot::start_with(settings, &shared, client.handle(), events).expect("regbot roles start");
        let status = handles.status.clone();
        Instance { client: Some(client), handles: Some(handles), shutdown: Some(shutdown_tx), status }
    }

    pub fn snapshot(&self) -> RegbotSnapshot {
        query_status(&self.status, Duration::from_secs(2)).expect("the scheduler answers")
    }

    pub fn wait_for(&self, what: &str, mut cond: impl FnMut(&RegbotSnapshot) -> bool) -> RegbotSnapshot {
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
    pub fn stop(&mut self) {
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

pub struct CarrierRow<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub realm: Option<&'a str>,
    pub from_domain: Option<&'a str>,
    pub public_ip_in_contact: bool,
    pub trunk_type: &'a str,
    pub requires_register: bool,
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

pub fn add_carrier(db: &TestDb, row: CarrierRow<'_>) -> String {
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

pub fn add_gateway(db: &TestDb, carrier: &str, host: &str, port: Option<u16>, protocol: &str, ping: bool) -> String {
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

pub fn register_status(db: &TestDb, carrier: &str) -> Option<serde_json::Value> {
    let raw: Option<Option<String>> = db
        .conn()
        .exec_first("SELECT register_status FROM voip_carriers WHERE voip_carrier_sid = ?", (carrier,))
        .unwrap();
    raw.flatten().map(|s| serde_json::from_str(&s).expect("register_status is JSON"))
}

pub fn wait_for_status(
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

pub fn carrier_flags(db: &TestDb, carrier: &str) -> (bool, bool) {
    let row: Option<(i64, i64)> = db
        .conn()
        .exec_first("SELECT requires_register, is_active FROM voip_carriers WHERE voip_carrier_sid = ?", (carrier,))
        .unwrap();
    let (r, a) = row.unwrap();
    (r != 0, a != 0)
}

pub fn eph_field(ip: &str, carrier: &str) -> Option<u64> {
    redis_query::<Option<u64>>(redis::cmd("HGET").arg(format!("eph-gw-ip:{ip}")).arg(carrier))
}
