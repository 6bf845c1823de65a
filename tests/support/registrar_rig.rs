//! The rig of the registrar tests (tests/registrar_*.rs): a fixture with its own MariaDB
//! database (created from the project's schema), pools, a `Registrar` and a real HTTP webhook
//! (test-tools/src/webhook.rs); REGISTERs built from SIP text and answered through a
//! `Responder`, exactly as the drachtio reader hands them to the auth workers.
//!
//! Redis keys: every test uses its own random realm, so `user:<aor>` keys and `active-user`
//! members never collide with parallel tests; each fixture removes what it created.
//!
//! Included by each test file with `#[path = "support/registrar_rig.rs"] mod registrar_rig;`;
//! not every file uses every helper.
#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{unbounded, Receiver};
use hmac::{Hmac, Mac};
use mysql::prelude::Queryable;
use rand::Rng;
use sha2::Sha256;

use sbc_sidecar::drachtio::{IncomingRequest, Outgoing, Responder, SipDelivery};
use sbc_sidecar::registrar::fair_pool::PoolLimits;
use sbc_sidecar::registrar::{Registrar, RegistrarSettings};
use sbc_sidecar::shared::Shared;
use sbc_sidecar::sip::SipMessage;
use sbc_sidecar::store::mysql::{MysqlPool, MysqlSettings};
use sbc_sidecar::store::redis::{pool as redis_pool, RedisPool, RedisSettings};

use sbc_test_tools::db::{self, TestDb};
use sbc_test_tools::webhook::{digest_response, WebhookServer};

pub const SBC_HOSTPORT: &str = "tcp/192.0.2.10:5060,udp/192.0.2.10:5060,tls/192.0.2.10:5061,wss/192.0.2.10:8443";
pub const PRIVATE_SBC: &str = "127.0.10.10:5060";
pub const PASSWORD: &str = "s3cr3t";
pub const WEBHOOK_SECRET: &str = "whsec-0123456789";
pub const HOOK_USER: &str = "hookuser";
pub const HOOK_PASS: &str = "hookpass";
pub const USER_AGENT: &str = "sbc-sidecar-test/1";
/// docs/spec/test-vectors.md: secret `foobarbazzle`, plaintext `1234`.
pub const ENCRYPTION_SECRET: &str = "foobarbazzle";
pub const CBC_1234: &str = r#"{"iv":"00112233445566778899aabbccddeeff","content":"821935d816a26c5a9a4a17094c28c9e4"}"#;
pub const CTR_1234: &str = r#"{"iv":"00112233445566778899aabbccddeeff","content":"1e2f1f71"}"#;
pub const RESPONSE_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Fixture: database, pools, registrar, webhook, and cleanup of the Redis keys it touched.

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn mysql_settings(database: &str, port: u16) -> MysqlSettings {
    MysqlSettings {
        host: "127.0.0.1".into(),
        port,
        user: db::mysql_user(),
        password: db::mysql_password(),
        database: database.into(),
        connection_limit: 4,
        timeout: Duration::from_millis(500),
        tls: None,
    }
}

pub fn redis_settings(port: u16, timeout: Duration) -> RedisSettings {
    RedisSettings::direct("127.0.0.1", port, timeout, 4)
}

pub fn redis_conn() -> redis::Connection {
    sbc_test_tools::services::redis()
}

pub fn base_settings() -> RegistrarSettings {
    RegistrarSettings {
        encryption_secret: ENCRYPTION_SECRET.into(),
        private_sbc_address: Some(PRIVATE_SBC.into()),
        http_user_agent: Some(USER_AGENT.into()),
        webhook_timeout: Duration::from_secs(3),
        ..RegistrarSettings::default()
    }
}

pub struct Fx {
    pub realm: String,
    pub registrar: Registrar,
    pub hook: WebhookServer,
    /// AORs this test registered (or may have): removed from Redis on drop.
    pub aors: Mutex<Vec<String>>,
    pub db: TestDb,
}

impl Fx {
    pub fn new() -> Fx {
        Fx::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut RegistrarSettings)) -> Fx {
        // The registrar would answer 503 without Redis: say what is missing instead.
        sbc_test_tools::services::require_redis();
        Fx::build(
            tweak,
            |db| MysqlPool::new(&mysql_settings(db, 3306)).unwrap(),
            || redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
        )
    }

    pub fn build(
        tweak: impl FnOnce(&mut RegistrarSettings),
        mysql: impl FnOnce(&str) -> MysqlPool,
        redis: impl FnOnce() -> RedisPool,
    ) -> Fx {
        let db = TestDb::create();
        let realm = format!("r{:08x}.sbc-test.example", rand::thread_rng().gen::<u32>());
        let mut settings = base_settings();
        tweak(&mut settings);
        let registrar = Registrar::new(settings, &Shared::for_tests(mysql(&db.name), redis()));
        Fx { realm, registrar, hook: WebhookServer::start(), aors: Mutex::new(Vec::new()), db }
    }

    /// What a second registrar on this fixture's database and the shared Redis is given
    /// (replace a field to observe it: `Shared { bans, ..fx.shared() }`).
    pub fn shared(&self) -> Shared {
        Shared::for_tests(
            MysqlPool::new(&mysql_settings(&self.db.name, 3306)).unwrap(),
            redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
        )
    }

    /// An active account for `realm`, with a registration webhook (method, path) or none.
    pub fn add_account(&self, realm: &str, active: bool, hook: Option<(&str, &str)>) -> String {
        let mut c = self.db.conn();
        let hook_sid = hook.map(|(method, path)| {
            let sid = uuid();
            c.exec_drop(
                "INSERT INTO webhooks (webhook_sid, url, method, username, password) VALUES (?, ?, ?, ?, ?)",
                (&sid, self.hook.url(path), method, HOOK_USER, HOOK_PASS),
            )
            .unwrap();
            sid
        });
        let sid = uuid();
        c.exec_drop(
            "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, \
             is_active, webhook_secret, device_to_call_ratio) VALUES (?, ?, ?, ?, ?, ?, ?, 5)",
            (&sid, "test account", realm, uuid(), hook_sid, active, WEBHOOK_SECRET),
        )
        .unwrap();
        sid
    }

    pub fn add_client(&self, account_sid: &str, username: &str, stored_password: &str, active: bool) {
        self.db
            .conn()
            .exec_drop(
                "INSERT INTO clients (client_sid, account_sid, is_active, username, password, \
                 allow_direct_app_calling, allow_direct_queue_calling, allow_direct_user_calling) \
                 VALUES (?, ?, ?, ?, ?, 1, 0, 1)",
                (uuid(), account_sid, active, username, stored_password),
            )
            .unwrap();
    }

    /// A current subscription with these product quantities.
    pub fn add_capacity(&self, account_sid: &str, products: &[(&str, i64)]) {
        self.db.add_capacity(account_sid, products);
    }

    pub fn aor(&self, user: &str) -> String {
        format!("{user}@{}", self.realm)
    }

    /// A REGISTER from `user` of this realm over UDP from 127.0.0.1:5070, 3600 s.
    pub fn reg(&self, user: &str) -> Reg {
        Reg {
            ruri: format!("sip:{}", self.realm),
            to: format!("<sip:{user}@{}>", self.realm),
            user: user.into(),
            to_host: self.realm.clone(),
            contact: Some(format!("<sip:{user}@127.0.0.1:5070;transport=udp>;expires=3600")),
            expires: Some("3600".into()),
            via_transport: "UDP",
            protocol: "udp",
            address: "127.0.0.1".into(),
            port: 5070,
            authorization: None,
        }
    }

    /// Hands the request to the registrar and returns the one response it sent.
    pub fn send(&self, reg: &Reg) -> Resp {
        self.send_to(&self.registrar, reg)
    }

    pub fn send_to(&self, registrar: &Registrar, reg: &Reg) -> Resp {
        self.aors.lock().unwrap().push(format!("{}@{}", reg.user, reg.to_host));
        let (request, rx) = incoming(reg);
        registrar.handle(request);
        let resp = response_from(&rx);
        assert!(rx.try_recv().is_err(), "a second response was sent");
        resp
    }

    /// 401 challenge, then the REGISTER again with digest credentials for `password`.
    pub fn register_with_password(&self, reg: &Reg, password: &str) -> Resp {
        let challenge = self.send(reg);
        assert_eq!(challenge.status, 401, "expected a challenge first: {}", challenge.raw);
        let nonce = nonce_of(&challenge);
        self.send(&reg.clone().authorized(password, &nonce))
    }

    pub fn binding(&self, user: &str) -> Option<String> {
        redis::cmd("GET").arg(format!("user:{}", self.aor(user))).query(&mut redis_conn()).unwrap()
    }

    pub fn ttl(&self, user: &str) -> i64 {
        redis::cmd("TTL").arg(format!("user:{}", self.aor(user))).query(&mut redis_conn()).unwrap()
    }

    pub fn score(&self, user: &str) -> Option<f64> {
        redis::cmd("ZSCORE")
            .arg("active-user")
            .arg(format!("user:{}", self.aor(user)))
            .query(&mut redis_conn())
            .unwrap()
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        let mut c = redis_conn();
        for aor in self.aors.lock().unwrap().iter() {
            let key = format!("user:{aor}");
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query(&mut c);
            let _: redis::RedisResult<()> = redis::cmd("ZREM").arg("active-user").arg(&key).query(&mut c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SIP requests and responses.

#[derive(Clone)]
pub struct Reg {
    pub ruri: String,
    /// To header value.
    pub to: String,
    pub user: String,
    pub to_host: String,
    pub contact: Option<String>,
    pub expires: Option<String>,
    pub via_transport: &'static str,
    /// Transport drachtio reports (`udp`, `tcp`, `tls`, `wss`).
    pub protocol: &'static str,
    /// Source address drachtio reports.
    pub address: String,
    pub port: u16,
    pub authorization: Option<String>,
}

impl Reg {
    /// Answers the challenge as a phone does: the digest `uri` is the Request-URI.
    pub fn authorized(mut self, password: &str, nonce: &str) -> Reg {
        let answer = digest_answer(&self.user, &self.to_host, &self.ruri, password, nonce, "00000001", "0a4f113b");
        self.authorization = Some(answer);
        self
    }

    pub fn text(&self) -> String {
        let mut t = format!(
            "REGISTER {} SIP/2.0\r\nVia: SIP/2.0/{} 127.0.0.1:{};branch=z9hG4bK-{}\r\nMax-Forwards: 70\r\n\
             From: <sip:{}@{}>;tag=ft{}\r\nTo: {}\r\nCall-ID: {}@127.0.0.1\r\nCSeq: 1 REGISTER\r\n",
            self.ruri,
            self.via_transport,
            self.port,
            uuid(),
            self.user,
            self.to_host,
            self.port,
            self.to,
            uuid()
        );
        if let Some(c) = &self.contact {
            t.push_str(&format!("Contact: {c}\r\n"));
        }
        if let Some(e) = &self.expires {
            t.push_str(&format!("Expires: {e}\r\n"));
        }
        if let Some(a) = &self.authorization {
            t.push_str(&format!("Authorization: {a}\r\n"));
        }
        t.push_str("User-Agent: test-phone\r\nContent-Length: 0\r\n\r\n");
        t
    }
}

pub fn authorization(user: &str, realm: &str, password: &str, nonce: &str) -> String {
    authorization_with(user, realm, password, nonce, "00000001", "0a4f113b")
}

/// An answer to `qop="auth"` with the given count and client nonce, for `sip:<realm>`.
pub fn authorization_with(user: &str, realm: &str, password: &str, nonce: &str, nc: &str, cnonce: &str) -> String {
    digest_answer(user, realm, &format!("sip:{realm}"), password, nonce, nc, cnonce)
}

/// An answer to `qop="auth"` computed for `uri`.
pub fn digest_answer(
    user: &str,
    realm: &str,
    uri: &str,
    password: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
) -> String {
    let response = digest_response(user, realm, password, "REGISTER", uri, nonce, nc, cnonce, "auth");
    format!(
        r#"Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc={nc}"#
    )
}

pub fn incoming(reg: &Reg) -> (IncomingRequest, Receiver<Outgoing>) {
    let bytes = reg.text().into_bytes();
    let message = SipMessage::parse(&bytes).expect("test REGISTER parses");
    let (tx, rx) = unbounded();
    let txn = uuid();
    let meta = SipDelivery {
        msg_id: uuid(),
        source: "network".into(),
        bytes: bytes.len(),
        protocol: reg.protocol.into(),
        address: reg.address.clone(),
        port: reg.port,
        time: "10:00:00.000000".into(),
        transaction_id: txn.clone(),
        dialog_id: String::new(),
        local_address: None,
        local_port: None,
        sip: bytes,
    };
    let request = IncomingRequest {
        meta,
        message,
        server_hostport: Arc::from(SBC_HOSTPORT),
        private_sip_address: None,
        responder: Responder::new(txn, tx),
    };
    (request, rx)
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub raw: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

pub fn response_from(rx: &Receiver<Outgoing>) -> Resp {
    let Ok(Outgoing::Frame { payload, .. }) = rx.recv_timeout(RESPONSE_WAIT) else {
        panic!("no response frame");
    };
    let at = payload.windows(2).position(|w| w == b"\r\n").expect("frame has a SIP part");
    let sip = &payload[at + 2..];
    let m = SipMessage::parse(sip).expect("response parses");
    Resp {
        status: m.status().unwrap(),
        reason: m.reason().unwrap().to_string(),
        headers: m.headers.clone(),
        raw: String::from_utf8_lossy(sip).into_owned(),
    }
}

pub fn nonce_of(challenge: &Resp) -> String {
    let h = challenge.header("WWW-Authenticate").expect("WWW-Authenticate");
    let start = h.find("nonce=\"").expect("nonce") + 7;
    h[start..start + h[start..].find('"').unwrap()].to_string()
}

/// `Digest realm="<realm>", algorithm=MD5, qop="auth", nonce="<secs>.<16 hex>.<32 hex>"[, stale=true]`
pub fn assert_challenge(resp: &Resp, realm: &str, stale: bool) {
    assert_eq!(resp.status, 401, "{}", resp.raw);
    let nonce = nonce_of(resp);
    let parts: Vec<&str> = nonce.split('.').collect();
    let [ts, random, mac] = parts[..] else { panic!("nonce format: {nonce}") };
    assert!(ts.parse::<u64>().unwrap().abs_diff(now_secs()) < 60, "{nonce}");
    assert!(random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()), "{nonce}");
    assert!(mac.len() == 32 && mac.bytes().all(|b| b.is_ascii_hexdigit()), "{nonce}");
    let mut expected = format!(r#"Digest realm="{realm}", algorithm=MD5, qop="auth", nonce="{nonce}""#);
    if stale {
        expected.push_str(", stale=true");
    }
    assert_eq!(resp.header("WWW-Authenticate"), Some(expected.as_str()));
}

pub fn hmac_hex(secret: &str, text: &str) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(text.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Checks `Jambonz-Signature: t=<secs>,v1=<hex>` against the spec's formula over `signed`.
pub fn assert_signature(header: Option<&str>, signed: &str) {
    let header = header.expect("Jambonz-Signature header");
    let (t, v1) = header.strip_prefix("t=").and_then(|r| r.split_once(",v1=")).expect("t=…,v1=… format");
    assert!(t.parse::<u64>().unwrap().abs_diff(now_secs()) < 60);
    assert_eq!(v1, hmac_hex(WEBHOOK_SECRET, &format!("{t}.{signed}")));
}

pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// Hosting mode (device limits, unknown realms).

pub fn hosting() -> Fx {
    Fx::with(|s| {
        s.hosting = true;
        s.device_count_max_age = Duration::ZERO;
    })
}
// The worker pool.

/// `n` auth workers that neither grow nor shrink, one account may use them all, and as many
/// may wait for them as the reader's queue holds.
pub fn fixed_workers(n: usize, queue: &crossbeam_channel::Receiver<IncomingRequest>) -> PoolLimits {
    PoolLimits::from_share(n, n, queue.capacity().unwrap_or(1024), 100)
}
