//! The REGISTER pipeline end to end, against a real MariaDB (a database per test, created from
//! the project's schema), a real Redis and a real HTTP webhook (test-tools/src/webhook.rs).
//! Requests are built from SIP text and answered through a `Responder`, exactly as the
//! drachtio reader hands them to the auth workers.
//!
//! Redis keys: every test uses its own random realm, so `user:<aor>` keys and `active-user`
//! members never collide with parallel tests; each fixture removes what it created.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use crossbeam_channel::{bounded, unbounded, Receiver};
use hmac::{Hmac, Mac};
use mysql::prelude::Queryable;
use rand::Rng;
use serde_json::{json, Value};
use sha2::Sha256;

use sbc_sidecar::drachtio::{IncomingRequest, Outgoing, Responder, SipDelivery};
use sbc_sidecar::registrar::fair_pool::PoolLimits;
use sbc_sidecar::registrar::nonce::NonceSigner;
use sbc_sidecar::registrar::{
    AuthPool, HookError, HookRequest, HookResponse, HookTransport, Registrar, RegistrarSettings,
};
use sbc_sidecar::sip::SipMessage;
use sbc_sidecar::store::mysql::{MysqlPool, MysqlSettings};
use sbc_sidecar::store::redis::{pool as redis_pool, RedisPool, RedisSettings};

use sbc_test_tools::db::{self, TestDb};
use sbc_test_tools::webhook::{digest_response, WebhookServer};

const SBC_HOSTPORT: &str = "tcp/192.0.2.10:5060,udp/192.0.2.10:5060,tls/192.0.2.10:5061,wss/192.0.2.10:8443";
const PRIVATE_SBC: &str = "127.0.10.10:5060";
const PASSWORD: &str = "s3cr3t";
const WEBHOOK_SECRET: &str = "whsec-0123456789";
const HOOK_USER: &str = "hookuser";
const HOOK_PASS: &str = "hookpass";
const USER_AGENT: &str = "sbc-sidecar-test/1";
/// docs/spec/test-vectors.md: secret `foobarbazzle`, plaintext `1234`.
const ENCRYPTION_SECRET: &str = "foobarbazzle";
const CBC_1234: &str = r#"{"iv":"00112233445566778899aabbccddeeff","content":"821935d816a26c5a9a4a17094c28c9e4"}"#;
const CTR_1234: &str = r#"{"iv":"00112233445566778899aabbccddeeff","content":"1e2f1f71"}"#;
const RESPONSE_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Fixture: database, pools, registrar, webhook, and cleanup of the Redis keys it touched.

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn mysql_settings(database: &str, port: u16) -> MysqlSettings {
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

fn redis_settings(port: u16, timeout: Duration) -> RedisSettings {
    RedisSettings::direct("127.0.0.1", port, timeout, 4)
}

fn redis_conn() -> redis::Connection {
    redis::Client::open("redis://127.0.0.1:6379/").unwrap().get_connection().expect("Redis on 127.0.0.1:6379")
}

fn base_settings() -> RegistrarSettings {
    RegistrarSettings {
        encryption_secret: ENCRYPTION_SECRET.into(),
        private_sbc_address: Some(PRIVATE_SBC.into()),
        http_user_agent: Some(USER_AGENT.into()),
        webhook_timeout: Duration::from_secs(3),
        ..RegistrarSettings::default()
    }
}

struct Fx {
    realm: String,
    registrar: Registrar,
    hook: WebhookServer,
    /// AORs this test registered (or may have): removed from Redis on drop.
    aors: Mutex<Vec<String>>,
    db: TestDb,
}

impl Fx {
    fn new() -> Fx {
        Fx::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut RegistrarSettings)) -> Fx {
        Fx::build(
            tweak,
            |db| MysqlPool::new(&mysql_settings(db, 3306)).unwrap(),
            || redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
        )
    }

    fn build(
        tweak: impl FnOnce(&mut RegistrarSettings),
        mysql: impl FnOnce(&str) -> MysqlPool,
        redis: impl FnOnce() -> RedisPool,
    ) -> Fx {
        let db = TestDb::create();
        let realm = format!("r{:08x}.sbc-test.example", rand::thread_rng().gen::<u32>());
        let mut settings = base_settings();
        tweak(&mut settings);
        let registrar = Registrar::new(settings, mysql(&db.name), redis());
        Fx { realm, registrar, hook: WebhookServer::start(), aors: Mutex::new(Vec::new()), db }
    }

    /// An active account for `realm`, with a registration webhook (method, path) or none.
    fn add_account(&self, realm: &str, active: bool, hook: Option<(&str, &str)>) -> String {
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

    fn add_client(&self, account_sid: &str, username: &str, stored_password: &str, active: bool) {
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
    fn add_capacity(&self, account_sid: &str, products: &[(&str, i64)]) {
        let mut c = self.db.conn();
        let subscription = uuid();
        c.exec_drop(
            "INSERT INTO account_subscriptions (account_subscription_sid, account_sid, pending) VALUES (?, ?, 0)",
            (&subscription, account_sid),
        )
        .unwrap();
        for (category, quantity) in products {
            let product = uuid();
            c.exec_drop(
                "INSERT INTO products (product_sid, name, category) VALUES (?, ?, ?)",
                (&product, category, category),
            )
            .unwrap();
            c.exec_drop(
                "INSERT INTO account_products (account_product_sid, account_subscription_sid, product_sid, quantity) \
                 VALUES (?, ?, ?, ?)",
                (uuid(), &subscription, &product, quantity),
            )
            .unwrap();
        }
    }

    fn aor(&self, user: &str) -> String {
        format!("{user}@{}", self.realm)
    }

    /// A REGISTER from `user` of this realm over UDP from 127.0.0.1:5070, 3600 s.
    fn reg(&self, user: &str) -> Reg {
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
    fn send(&self, reg: &Reg) -> Resp {
        self.send_to(&self.registrar, reg)
    }

    fn send_to(&self, registrar: &Registrar, reg: &Reg) -> Resp {
        self.aors.lock().unwrap().push(format!("{}@{}", reg.user, reg.to_host));
        let (request, rx) = incoming(reg);
        registrar.handle(request);
        let resp = response_from(&rx);
        assert!(rx.try_recv().is_err(), "a second response was sent");
        resp
    }

    /// 401 challenge, then the REGISTER again with digest credentials for `password`.
    fn register_with_password(&self, reg: &Reg, password: &str) -> Resp {
        let challenge = self.send(reg);
        assert_eq!(challenge.status, 401, "expected a challenge first: {}", challenge.raw);
        let nonce = nonce_of(&challenge);
        self.send(&reg.clone().authorized(password, &nonce))
    }

    fn binding(&self, user: &str) -> Option<String> {
        redis::cmd("GET").arg(format!("user:{}", self.aor(user))).query(&mut redis_conn()).unwrap()
    }

    fn ttl(&self, user: &str) -> i64 {
        redis::cmd("TTL").arg(format!("user:{}", self.aor(user))).query(&mut redis_conn()).unwrap()
    }

    fn score(&self, user: &str) -> Option<f64> {
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
struct Reg {
    ruri: String,
    /// To header value.
    to: String,
    user: String,
    to_host: String,
    contact: Option<String>,
    expires: Option<String>,
    via_transport: &'static str,
    /// Transport drachtio reports (`udp`, `tcp`, `tls`, `wss`).
    protocol: &'static str,
    /// Source address drachtio reports.
    address: String,
    port: u16,
    authorization: Option<String>,
}

impl Reg {
    /// Answers the challenge as a phone does: the digest `uri` is the Request-URI.
    fn authorized(mut self, password: &str, nonce: &str) -> Reg {
        let answer = digest_answer(&self.user, &self.to_host, &self.ruri, password, nonce, "00000001", "0a4f113b");
        self.authorization = Some(answer);
        self
    }

    fn text(&self) -> String {
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

fn authorization(user: &str, realm: &str, password: &str, nonce: &str) -> String {
    authorization_with(user, realm, password, nonce, "00000001", "0a4f113b")
}

/// An answer to `qop="auth"` with the given count and client nonce, for `sip:<realm>`.
fn authorization_with(user: &str, realm: &str, password: &str, nonce: &str, nc: &str, cnonce: &str) -> String {
    digest_answer(user, realm, &format!("sip:{realm}"), password, nonce, nc, cnonce)
}

/// An answer to `qop="auth"` computed for `uri`.
fn digest_answer(user: &str, realm: &str, uri: &str, password: &str, nonce: &str, nc: &str, cnonce: &str) -> String {
    let response = digest_response(user, realm, password, "REGISTER", uri, nonce, nc, cnonce, "auth");
    format!(
        r#"Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc={nc}"#
    )
}

fn incoming(reg: &Reg) -> (IncomingRequest, Receiver<Outgoing>) {
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
struct Resp {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    raw: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

fn response_from(rx: &Receiver<Outgoing>) -> Resp {
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

fn nonce_of(challenge: &Resp) -> String {
    let h = challenge.header("WWW-Authenticate").expect("WWW-Authenticate");
    let start = h.find("nonce=\"").expect("nonce") + 7;
    h[start..start + h[start..].find('"').unwrap()].to_string()
}

/// `Digest realm="<realm>", algorithm=MD5, qop="auth", nonce="<secs>.<16 hex>.<32 hex>"[, stale=true]`
fn assert_challenge(resp: &Resp, realm: &str, stale: bool) {
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

fn hmac_hex(secret: &str, text: &str) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(text.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Checks `Jambonz-Signature: t=<secs>,v1=<hex>` against the spec's formula over `signed`.
fn assert_signature(header: Option<&str>, signed: &str) {
    let header = header.expect("Jambonz-Signature header");
    let (t, v1) = header.strip_prefix("t=").and_then(|r| r.split_once(",v1=")).expect("t=…,v1=… format");
    assert!(t.parse::<u64>().unwrap().abs_diff(now_secs()) < 60);
    assert_eq!(v1, hmac_hex(WEBHOOK_SECRET, &format!("{t}.{signed}")));
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Appendix B, row by row, before authentication.

#[test]
fn request_uri_with_an_ipv4_host_is_forbidden() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let mut reg = fx.reg("alice");
    reg.ruri = "sip:127.0.0.1:5060".into();
    let r = fx.send(&reg);
    assert_eq!((r.status, r.reason.as_str()), (403, "Forbidden"));
    assert!(!r.has("X-Reason"));
}

#[test]
fn register_without_contact_is_400_with_x_reason() {
    let fx = Fx::new();
    let mut reg = fx.reg("alice");
    reg.contact = None;
    let r = fx.send(&reg);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("X-Reason"), Some("Contact header is required for REGISTER requests"));
}

#[test]
fn register_without_any_expires_is_a_plain_400() {
    let fx = Fx::new();
    let mut reg = fx.reg("alice");
    reg.contact = Some("<sip:alice@127.0.0.1:5070>".into());
    reg.expires = None;
    let r = fx.send(&reg);
    assert_eq!(r.status, 400);
    assert!(!r.has("X-Reason"));
}

#[test]
fn unparseable_to_uri_is_403_invalid_address_of_record() {
    let fx = Fx::new();
    let mut reg = fx.reg("jane");
    reg.to = format!("<sip:jane@{0}@{0}>", fx.realm);
    let r = fx.send(&reg);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("Invalid address of record"));
}

#[test]
fn unknown_realm_without_hosting_is_403_unknown_or_invalid_realm() {
    let fx = Fx::new();
    let r = fx.send(&fx.reg("alice"));
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("Unknown or invalid realm"));
}

#[test]
fn unknown_realm_in_hosting_mode_is_a_plain_403() {
    let fx = Fx::with(|s| s.hosting = true);
    let r = fx.send(&fx.reg("alice"));
    assert_eq!(r.status, 403);
    assert!(!r.has("X-Reason"));
}

#[test]
fn deactivated_account_is_403_for_register_and_unregister() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, false, Some(("POST", "/auth")));
    let r = fx.send(&fx.reg("alice"));
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("Account has been deactivated"));
    let mut unreg = fx.reg("alice");
    unreg.expires = Some("0".into());
    unreg.contact = Some("<sip:alice@127.0.0.1:5070>".into());
    assert_eq!(fx.send(&unreg).header("X-Reason"), Some("Account has been deactivated"));
    assert_eq!(fx.hook.request_count(), 0);
}

#[test]
fn first_register_is_challenged_with_the_exact_www_authenticate() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let r = fx.send(&fx.reg("alice"));
    assert_challenge(&r, &fx.realm, false);
    assert_eq!(fx.hook.request_count(), 0);
}

#[test]
fn a_sub_domain_realm_finds_the_account_of_its_parent_domain() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("alice", PASSWORD);
    let mut reg = fx.reg("alice");
    reg.to_host = format!("sip.{}", fx.realm);
    reg.to = format!("<sip:alice@{}>", reg.to_host);
    let challenge = fx.send(&reg);
    // the challenge realm is the To host, not the account's realm
    assert_challenge(&challenge, &reg.to_host, false);
    let ok = fx.send(&reg.clone().authorized(PASSWORD, &nonce_of(&challenge)));
    assert_eq!(ok.status, 200, "{}", ok.raw);
}

// ---------------------------------------------------------------------------------------------
// Webhook authentication: what is sent, what is stored, what the device is told.

#[test]
fn webhook_post_register_over_udp_is_told_30_seconds_but_stored_for_the_grant() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("alice", PASSWORD);
    let reg = fx.reg("alice");
    let challenge = fx.send(&reg);
    let nonce = nonce_of(&challenge);
    let before = now_ms();
    let ok = fx.send(&reg.clone().authorized(PASSWORD, &nonce));
    let after = now_ms();

    assert_eq!((ok.status, ok.reason.as_str()), (200, "OK"), "{}", ok.raw);
    assert_eq!(ok.header("Contact"), Some("<sip:alice@127.0.0.1:5070;transport=udp>;expires=30"));
    assert_eq!(ok.header("Expires"), Some("30"));

    // Redis: the JSON string, field order of the contract, TTL and score of the full grant.
    let stored = fx.binding("alice").expect("user:<aor> written");
    let v: Value = serde_json::from_str(&stored).unwrap();
    let expiry = v["expiryTime"].as_u64().expect("expiryTime is an integer");
    assert!((before + 3_600_000..=after + 3_600_000).contains(&expiry), "{expiry}");
    assert_eq!(
        stored,
        format!(
            r#"{{"contact":"sip:alice@127.0.0.1:5070;transport=udp","sbcAddress":"{SBC_HOSTPORT}","privateSbcAddress":"{PRIVATE_SBC}","protocol":"udp","proxy":"sip:127.0.0.1:5070","allow_direct_app_calling":false,"allow_direct_queue_calling":false,"allow_direct_user_calling":false,"expiryTime":{expiry}}}"#
        )
    );
    assert!((3590..=3600).contains(&fx.ttl("alice")), "ttl {}", fx.ttl("alice"));
    assert_eq!(fx.score("alice"), Some(expiry as f64));

    // The webhook request.
    let requests = fx.hook.requests();
    assert_eq!(requests.len(), 1, "only the authenticated REGISTER calls the webhook");
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/auth"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("user-agent"), Some(USER_AGENT));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{HOOK_USER}:{HOOK_PASS}"));
    assert_eq!(r.header("authorization"), Some(format!("Basic {basic}").as_str()));
    assert_signature(r.header("jambonz-signature"), &r.body);

    let p = r.payload();
    let keys: Vec<&str> = p.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "source_address",
            "source_port",
            "method",
            "headers",
            "expires",
            "scheme",
            "username",
            "realm",
            "nonce",
            "uri",
            "algorithm",
            "response",
            "qop",
            "nc",
            "cnonce"
        ]
    );
    assert_eq!(p["source_address"], json!("127.0.0.1"));
    assert_eq!(p["source_port"], json!(5070));
    assert_eq!(p["method"], json!("REGISTER"));
    assert_eq!(p["expires"], json!(3600));
    assert_eq!(p["scheme"], json!("digest"));
    assert_eq!(p["username"], json!("alice"));
    assert_eq!(p["realm"], json!(fx.realm));
    assert_eq!(p["nonce"], json!(nonce));
    assert_eq!(p["uri"], json!(format!("sip:{}", fx.realm)));
    assert_eq!(p["algorithm"], json!("MD5"));
    assert_eq!(
        (p["qop"].clone(), p["nc"].clone(), p["cnonce"].clone()),
        (json!("auth"), json!("00000001"), json!("0a4f113b"))
    );
    let headers = p["headers"].as_object().unwrap();
    let names: Vec<&str> = headers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "via",
            "max-forwards",
            "from",
            "to",
            "call-id",
            "cseq",
            "contact",
            "expires",
            "authorization",
            "user-agent",
            "content-length"
        ]
    );
    assert_eq!(headers["contact"], json!("<sip:alice@127.0.0.1:5070;transport=udp>;expires=3600"));
}

#[test]
fn webhook_get_sends_the_payload_as_query_and_signs_null() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("GET", "/auth")));
    fx.hook.set_password("bob", PASSWORD);
    let ok = fx.register_with_password(&fx.reg("bob"), PASSWORD);
    assert_eq!(ok.status, 200, "{}", ok.raw);

    let requests = fx.hook.requests();
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path(), r.body.as_str()), ("GET", "/auth", ""));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_signature(r.header("jambonz-signature"), "\"null\"");
    let pairs = r.query_pairs();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "source_address",
            "source_port",
            "method",
            "expires",
            "scheme",
            "username",
            "realm",
            "nonce",
            "uri",
            "algorithm",
            "response",
            "qop",
            "nc",
            "cnonce"
        ]
    );
    assert!(r.query().unwrap().contains(&format!("uri=sip%3A{}", fx.realm)));
    assert_eq!(pairs[1], ("source_port".to_string(), "5070".to_string()));
}

#[test]
fn register_over_tcp_gets_the_webhook_grant_and_stores_its_hooks() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("carol", PASSWORD);
    fx.hook.ok_fields(json!({
        "expires": 120,
        "call_hook": "https://app.example/call",
        "call_status_hook": {"url": "https://app.example/status", "method": "POST"},
        "allow_direct_app_calling": true,
        "allow_direct_user_calling": false
    }));
    let mut reg = fx.reg("carol");
    reg.via_transport = "TCP";
    reg.protocol = "tcp";
    reg.contact = Some("<sip:carol@127.0.0.1:5070;transport=tcp>;expires=3600".into());
    let ok = fx.register_with_password(&reg, PASSWORD);
    assert_eq!(ok.status, 200, "{}", ok.raw);
    assert_eq!(ok.header("Contact"), Some("<sip:carol@127.0.0.1:5070;transport=tcp>;expires=120"));
    assert_eq!(ok.header("Expires"), Some("120"));
    let v: Value = serde_json::from_str(&fx.binding("carol").unwrap()).unwrap();
    assert_eq!(v["protocol"], json!("tcp"));
    assert_eq!(v["callHook"], json!("https://app.example/call"));
    assert_eq!(v["callStatusHook"], json!({"url": "https://app.example/status", "method": "POST"}));
    assert_eq!(v["allow_direct_app_calling"], json!(true));
    assert_eq!(v["allow_direct_queue_calling"], json!(false));
    assert!(fx.ttl("carol") <= 120 && fx.ttl("carol") > 100);
}

#[test]
fn tls_and_wss_clients_are_stored_with_their_protocol_and_the_full_grant() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    for (user, via, proto) in [("tls-user", "TLS", "tls"), ("wss-user", "WSS", "wss")] {
        fx.hook.set_password(user, PASSWORD);
        let mut reg = fx.reg(user);
        reg.via_transport = via;
        reg.protocol = proto;
        let ok = fx.register_with_password(&reg, PASSWORD);
        assert_eq!(ok.header("Expires"), Some("3600"), "{}", ok.raw);
        let v: Value = serde_json::from_str(&fx.binding(user).unwrap()).unwrap();
        assert_eq!(v["protocol"], json!(proto));
    }
}

#[test]
fn short_expires_is_kept_over_udp_and_not_cached() {
    // an operator who allows intervals shorter than the default minimum of 60 s
    let fx = Fx::with(|s| s.expires_bounds.min = 10);
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("dave", PASSWORD);
    let mut reg = fx.reg("dave");
    reg.contact = Some("<sip:dave@127.0.0.1:5070>;expires=20".into());
    let ok = fx.register_with_password(&reg, PASSWORD);
    assert_eq!(ok.header("Contact"), Some("<sip:dave@127.0.0.1:5070>;expires=20"));
    assert_eq!(ok.header("Expires"), Some("20"));
    assert!(fx.ttl("dave") <= 20);
    // expiring within the 30 s window: a re-REGISTER goes through the challenge again
    assert_eq!(fx.send(&reg).status, 401);
}

#[test]
fn re_register_from_the_same_source_is_answered_from_the_cache() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("erin", PASSWORD);
    let mut reg = fx.reg("erin");
    reg.via_transport = "TCP";
    reg.protocol = "tcp";
    assert_eq!(fx.register_with_password(&reg, PASSWORD).status, 200);
    let stored = fx.binding("erin");
    let calls = fx.hook.request_count();

    // no Authorization needed, no webhook call, no Redis write; over TCP the device is told
    // what its binding has left (3600 s granted a moment ago), not 30 s
    let cached = fx.send(&reg);
    assert_eq!(cached.status, 200, "{}", cached.raw);
    let told: u32 = cached.header("Expires").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&told), "{}", cached.raw);
    assert_eq!(
        cached.header("Contact").map(String::from),
        Some(format!("<sip:erin@127.0.0.1:5070;transport=udp>;expires={told}"))
    );
    assert_eq!(fx.hook.request_count(), calls);
    assert_eq!(fx.binding("erin"), stored);

    // the same over UDP: 30 s (every UDP client is assumed to be behind NAT)
    let mut udp = fx.reg("erin");
    udp.port = 5073;
    assert_eq!(fx.register_with_password(&udp, PASSWORD).status, 200);
    let cached = fx.send(&udp);
    assert_eq!((cached.status, cached.header("Expires")), (200, Some("30")), "{}", cached.raw);
    assert_eq!(cached.header("Contact"), Some("<sip:erin@127.0.0.1:5070;transport=udp>;expires=30"));

    // another source port is another device: full challenge
    let mut moved = reg.clone();
    moved.port = 5071;
    assert_eq!(fx.send(&moved).status, 401);
}

#[test]
fn unregister_removes_the_binding_and_echoes_the_contact() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("fay", PASSWORD);
    assert_eq!(fx.register_with_password(&fx.reg("fay"), PASSWORD).status, 200);
    assert!(fx.binding("fay").is_some() && fx.score("fay").is_some());

    let mut unreg = fx.reg("fay");
    unreg.contact = Some("<sip:fay@127.0.0.1:5070;transport=udp>;expires=0".into());
    unreg.expires = None;
    // authentication is still required
    let ok = fx.register_with_password(&unreg, PASSWORD);
    assert_eq!(ok.status, 200, "{}", ok.raw);
    assert_eq!(ok.header("Contact"), Some("<sip:fay@127.0.0.1:5070;transport=udp>;expires=0"));
    assert_eq!(ok.header("Expires"), Some("0"));
    assert_eq!(fx.binding("fay"), None);
    assert_eq!(fx.score("fay"), None);
}

#[test]
fn webhook_denial_is_403_invalid_credentials() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("gus", PASSWORD);
    let r = fx.register_with_password(&fx.reg("gus"), "wrong");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("Invalid credentials"));
    assert_eq!(fx.binding("gus"), None);
}

#[test]
fn webhook_blacklist_and_headers_end_up_on_the_403() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.fail_fields(json!({"blacklist": true, "headers": {"X-Block-Reason": "too many attempts", "X-Count": 7}}));
    let mut reg = fx.reg("hal");
    reg.port = 5099;
    let r = fx.register_with_password(&reg, "whatever");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("detected potential spammer from 127.0.0.1:5099"));
    assert_eq!(r.header("X-Block-Reason"), Some("too many attempts"));
    assert_eq!(r.header("X-Count"), Some("7"));
}

/// Registers `ivy` against a webhook programmed by `program` and returns the final status.
fn status_with_webhook(program: impl FnOnce(&Fx), tweak: impl FnOnce(&mut RegistrarSettings)) -> (u16, Duration) {
    let fx = Fx::with(tweak);
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    program(&fx);
    let reg = fx.reg("ivy");
    let challenge = fx.send(&reg);
    let started = Instant::now();
    let r = fx.send(&reg.clone().authorized(PASSWORD, &nonce_of(&challenge)));
    assert_eq!(fx.binding("ivy"), None);
    (r.status, started.elapsed())
}

#[test]
fn webhook_http_status_becomes_the_sip_status() {
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(404, "not here"), |_| {}).0, 404);
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(503, "{}"), |_| {}).0, 503);
}

#[test]
fn webhook_redirect_is_not_followed_and_is_500() {
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(302, ""), |_| {}).0, 500);
}

#[test]
fn webhook_garbage_or_statusless_json_is_500() {
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(200, "<html>oops</html>"), |_| {}).0, 500);
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(200, r#"{"expires":60}"#), |_| {}).0, 500);
}

#[test]
fn webhook_that_refuses_connections_is_500() {
    let fx = Fx::new();
    let port = closed_port();
    let mut c = fx.db.conn();
    let hook_sid = uuid();
    c.exec_drop(
        "INSERT INTO webhooks (webhook_sid, url, method) VALUES (?, ?, 'POST')",
        (&hook_sid, format!("http://127.0.0.1:{port}/auth")),
    )
    .unwrap();
    c.exec_drop(
        "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, webhook_secret) \
         VALUES (?, 'a', ?, ?, ?, 's')",
        (uuid(), &fx.realm, uuid(), &hook_sid),
    )
    .unwrap();
    let r = fx.register_with_password(&fx.reg("jo"), PASSWORD);
    assert_eq!(r.status, 500);
}

#[test]
fn webhook_slower_than_the_timeout_is_500_without_waiting_for_it() {
    let (status, elapsed) = status_with_webhook(
        |fx| {
            fx.hook.set_password("ivy", PASSWORD);
            fx.hook.delay(Duration::from_secs(5));
        },
        |s| s.webhook_timeout = Duration::from_millis(300),
    );
    assert_eq!(status, 500);
    assert!(elapsed < Duration::from_secs(4), "waited {elapsed:?} for a 300 ms timeout");
}

/// A transport with a canned answer that remembers what it was asked.
struct Canned {
    answer: Result<HookResponse, HookError>,
    seen: Arc<Mutex<Vec<HookRequest>>>,
}

impl HookTransport for Canned {
    fn send(&self, request: &HookRequest) -> Result<HookResponse, HookError> {
        self.seen.lock().unwrap().push(request.clone());
        self.answer.clone()
    }
}

#[test]
fn the_webhook_transport_is_replaceable_by_canned_answers() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let canned = |answer: Result<HookResponse, HookError>| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let registrar = Registrar::with_hook_transport(
            base_settings(),
            MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
            redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
            Box::new(Canned { answer, seen: seen.clone() }),
        );
        (registrar, seen)
    };
    let mut reg = fx.reg("cid");
    reg.via_transport = "TCP";
    reg.protocol = "tcp";

    let (registrar, seen) = canned(Ok(HookResponse { status: 200, body: br#"{"status":"ok","expires":45}"#.to_vec() }));
    let nonce = nonce_of(&fx.send_to(&registrar, &reg));
    let ok = fx.send_to(&registrar, &reg.clone().authorized("any", &nonce));
    assert_eq!(ok.header("Expires"), Some("45"), "{}", ok.raw);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].url, fx.hook.url("/auth"));
    assert_eq!(fx.hook.request_count(), 0, "the real webhook was not called");

    let (registrar, _) = canned(Err(HookError::Timeout));
    let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg("dee")));
    assert_eq!(fx.send_to(&registrar, &fx.reg("dee").authorized("any", &nonce)).status, 500);
}

// ---------------------------------------------------------------------------------------------
// Nonces and Authorization.

#[test]
fn expired_nonce_gets_401_with_stale_true_and_no_webhook_call() {
    let fx = Fx::with(|s| {
        s.nonce_secret = Some("cluster-secret".into());
        s.nonce_ttl = Duration::from_secs(300);
    });
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("kim", PASSWORD);
    // a nonce signed with the shared secret, 1000 s ago
    let signer = NonceSigner::from_secret("cluster-secret", Duration::from_secs(300));
    let phone = Some("127.0.0.1".parse().unwrap());
    let old = signer.issue_at(&fx.realm, phone, now_secs() - 1000);
    let r = fx.send(&fx.reg("kim").authorized(PASSWORD, &old));
    assert_challenge(&r, &fx.realm, true);
    assert_eq!(fx.hook.request_count(), 0);
    // a fresh one from another signer with the same secret (another SBC) is accepted
    let fresh = signer.issue(&fx.realm, phone);
    assert_eq!(fx.send(&fx.reg("kim").authorized(PASSWORD, &fresh)).status, 200);
}

#[test]
fn nonce_we_did_not_issue_gets_a_fresh_401() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("lee", PASSWORD);
    for forged in [
        "157590482938000",
        "1700000000.00112233445566778899aabbccddeeff",
        "1700000000.0011223344556677.00112233445566778899aabbccddeeff",
    ] {
        let r = fx.send(&fx.reg("lee").authorized(PASSWORD, forged));
        assert_challenge(&r, &fx.realm, false);
    }
    // a nonce issued for another realm does not work here either
    let other = Fx::new();
    other.add_account(&other.realm, true, Some(("POST", "/auth")));
    let foreign_nonce = nonce_of(&other.send(&other.reg("lee")));
    assert_challenge(&fx.send(&fx.reg("lee").authorized(PASSWORD, &foreign_nonce)), &fx.realm, false);
    assert_eq!(fx.hook.request_count(), 0);
}

#[test]
fn malformed_authorization_is_400_not_500() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    for bad in [format!(r#"Digest username="max", realm="{}""#, fx.realm), "Basic bWF4OnB3".to_string()] {
        let mut reg = fx.reg("max");
        reg.authorization = Some(bad.clone());
        assert_eq!(fx.send(&reg).status, 400, "{bad}");
    }
    assert_eq!(fx.hook.request_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// clients table authentication.

#[test]
fn clients_table_success_stores_the_flags_as_numbers() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "nina", CBC_1234, true);
    let ok = fx.register_with_password(&fx.reg("nina"), "1234");
    assert_eq!(ok.status, 200, "{}", ok.raw);
    let v: Value = serde_json::from_str(&fx.binding("nina").unwrap()).unwrap();
    assert_eq!(
        (
            v["allow_direct_app_calling"].clone(),
            v["allow_direct_queue_calling"].clone(),
            v["allow_direct_user_calling"].clone()
        ),
        (json!(1), json!(0), json!(1))
    );
    assert!(v.get("callHook").is_none());
    assert_eq!(fx.hook.request_count(), 0);
}

#[test]
fn clients_table_failures_are_403_invalid_credentials() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "oli", CBC_1234, true);
    fx.add_client(&sid, "pam", CBC_1234, false);
    for (user, password) in [("oli", "4321"), ("pam", "1234"), ("nobody", "1234")] {
        let r = fx.register_with_password(&fx.reg(user), password);
        assert_eq!(r.status, 403, "{user}");
        assert_eq!(r.header("X-Reason"), Some("Invalid credentials"), "{user}");
        assert_eq!(fx.binding(user), None);
    }
}

#[test]
fn clients_table_password_that_cannot_be_decrypted_is_500() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "quinn", "1234", true);
    assert_eq!(fx.register_with_password(&fx.reg("quinn"), "1234").status, 500);
}

#[test]
fn clients_table_with_legacy_crypto_uses_aes_ctr() {
    let fx = Fx::with(|s| s.legacy_crypto = true);
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "rob", CTR_1234, true);
    assert_eq!(fx.register_with_password(&fx.reg("rob"), "1234").status, 200);
}

// ---------------------------------------------------------------------------------------------
// Hosting mode device limits.

fn hosting() -> Fx {
    Fx::with(|s| {
        s.hosting = true;
        s.device_count_max_age = Duration::ZERO;
    })
}

fn assert_max_devices(r: &Resp) {
    assert_eq!((r.status, r.reason.as_str()), (503, "Max Devices Registered"), "{}", r.raw);
    assert!(r.raw.starts_with("SIP/2.0 503 Max Devices Registered\r\n"));
}

#[test]
fn account_without_capacity_gets_503_max_devices_registered() {
    let fx = hosting();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    assert_max_devices(&fx.send(&fx.reg("sam")));
}

#[test]
fn limit_reached_is_503_but_a_registered_aor_may_refresh() {
    let fx = hosting();
    let sid = fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    // 0 sessions × 5 + 2 devices = exactly 2 devices
    fx.add_capacity(&sid, &[("voice_call_session", 0), ("device", 2)]);
    for user in ["tom", "uma", "vic"] {
        fx.hook.set_password(user, PASSWORD);
    }
    assert_eq!(fx.register_with_password(&fx.reg("tom"), PASSWORD).status, 200);
    assert_eq!(fx.register_with_password(&fx.reg("uma"), PASSWORD).status, 200);
    assert_max_devices(&fx.send(&fx.reg("vic")));

    // tom again from another port (not the cache): still allowed
    let mut again = fx.reg("tom");
    again.port = 5072;
    assert_eq!(fx.register_with_password(&again, PASSWORD).status, 200);
}

#[test]
fn devices_registered_through_other_sbcs_count_against_the_limit() {
    let fx = hosting();
    let sid = fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.add_capacity(&sid, &[("voice_call_session", 1), ("device", 0)]);
    fx.db.conn().exec_drop("UPDATE accounts SET device_to_call_ratio = 1 WHERE account_sid = ?", (&sid,)).unwrap();
    // another SBC registered wes (only in active-user; its user:<aor> lives elsewhere)
    fx.aors.lock().unwrap().push(fx.aor("wes"));
    let _: () = redis::cmd("ZADD")
        .arg("active-user")
        .arg(now_ms() + 60_000)
        .arg(format!("user:{}", fx.aor("wes")))
        .query(&mut redis_conn())
        .unwrap();
    assert_max_devices(&fx.send(&fx.reg("xia")));
    // wes itself may refresh through this SBC
    fx.hook.set_password("wes", PASSWORD);
    assert_eq!(fx.register_with_password(&fx.reg("wes"), PASSWORD).status, 200);
}

// ---------------------------------------------------------------------------------------------
// Stores unreachable or failing.

#[test]
fn redis_unreachable_is_503_with_retry_after() {
    let fx = Fx::build(
        |_| {},
        |db| MysqlPool::new(&mysql_settings(db, 3306)).unwrap(),
        || redis_pool(&redis_settings(1, Duration::from_millis(200))).unwrap(),
    );
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let started = Instant::now();
    let r = fx.send(&fx.reg("yan"));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("5"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn mysql_unreachable_is_503_with_retry_after() {
    let fx = Fx::build(
        |_| {},
        |db| MysqlPool::new(&mysql_settings(db, closed_port())).unwrap(),
        || redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
    );
    let started = Instant::now();
    let r = fx.send(&fx.reg("zed"));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("5"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn binding_that_cannot_be_stored_is_500_not_a_false_200() {
    // A Redis user that may do everything except ZADD: the MULTI is refused as a whole.
    let acl_user = format!("sbc_test_{:08x}", rand::thread_rng().gen::<u32>());
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&acl_user)
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-zadd")
        .query(&mut redis_conn())
        .unwrap();
    let fx = Fx::build(
        |_| {},
        |db| MysqlPool::new(&mysql_settings(db, 3306)).unwrap(),
        || {
            let mut s = redis_settings(6379, Duration::from_secs(2));
            s.username = Some(acl_user.clone());
            s.password = Some("pw".into());
            redis_pool(&s).unwrap()
        },
    );
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("abe", PASSWORD);
    let r = fx.register_with_password(&fx.reg("abe"), PASSWORD);
    let _: redis::RedisResult<()> = redis::cmd("ACL").arg("DELUSER").arg(&acl_user).query(&mut redis_conn());
    assert_eq!(r.status, 500, "{}", r.raw);
    // all or nothing: the SETEX of the refused transaction did not happen either
    assert_eq!(fx.binding("abe"), None);
}

// ---------------------------------------------------------------------------------------------
// The worker pool.

/// `n` auth workers that neither grow nor shrink, one account may use them all, and as many
/// may wait for them as the reader's queue holds.
fn fixed_workers(n: usize, queue: &crossbeam_channel::Receiver<IncomingRequest>) -> PoolLimits {
    PoolLimits::from_share(n, n, queue.capacity().unwrap_or(1024), 100)
}

#[test]
fn auth_pool_answers_every_request_once_and_stops_on_shutdown() {
    let fx = Fx::new();
    let registrar = Arc::new(Registrar::new(
        base_settings(),
        MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
        redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
    ));
    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(16);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool =
        AuthPool::start(fixed_workers(2, &queue_rx), registrar.clone(), queue_rx.clone(), shutdown_rx.clone()).unwrap();

    // IPv4 Request-URIs are answered without touching any store
    let mut reg = fx.reg("pool");
    reg.ruri = "sip:127.0.0.1".into();
    let mut responses = Vec::new();
    for _ in 0..4 {
        let (req, rx) = incoming(&reg);
        queue_tx.send(req).unwrap();
        responses.push(rx);
    }
    for rx in &responses {
        assert_eq!(response_from(rx).status, 403);
    }
    drop(shutdown_tx);
    pool.join();

    // A request still queued when shutdown is signalled gets exactly one answer: handled if
    // a worker took it first, else refused with 503 + Retry-After.
    let (late, late_rx) = incoming(&reg);
    queue_tx.send(late).unwrap();
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx).unwrap();
    pool.join();
    let r = response_from(&late_rx);
    assert!(r.status == 503 || r.status == 403, "{}", r.raw);
    if r.status == 503 {
        assert_eq!(r.header("Retry-After"), Some("5"));
    }
    assert!(late_rx.try_recv().is_err());
}

#[test]
fn a_worker_takes_queued_registers_as_a_batch_and_answers_each_once() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let cached: Vec<String> = (0..5).map(|i| format!("batch-cached-{i}")).collect();
    let fresh: Vec<String> = (0..5).map(|i| format!("batch-fresh-{i}")).collect();
    let authed: Vec<String> = (0..5).map(|i| format!("batch-auth-{i}")).collect();
    for u in cached.iter().chain(&fresh).chain(&authed) {
        fx.hook.set_password(u, PASSWORD);
    }
    // Registered beforehand: their refreshes from the same source are cache hits.
    for u in &cached {
        assert_eq!(fx.register_with_password(&fx.reg(u), PASSWORD).status, 200);
    }
    let registrar = Arc::new(Registrar::new(
        base_settings(),
        MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
        redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
    ));
    // Challenged beforehand (by the pool's registrar: nonces are signed per instance here):
    // their authorized REGISTERs need the webhook.
    let nonces: Vec<String> = authed.iter().map(|u| nonce_of(&fx.send_to(&registrar, &fx.reg(u)))).collect();

    // Everything is queued before the single worker starts, so it takes one batch.
    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(64);
    let mut expected = Vec::new();
    for u in &cached {
        let (req, rx) = incoming(&fx.reg(u));
        queue_tx.send(req).unwrap();
        expected.push((rx, 200, Some("30"), u.clone()));
    }
    for (u, nonce) in authed.iter().zip(&nonces) {
        fx.aors.lock().unwrap().push(fx.aor(u));
        let (req, rx) = incoming(&fx.reg(u).authorized(PASSWORD, nonce));
        queue_tx.send(req).unwrap();
        expected.push((rx, 200, Some("30"), u.clone()));
    }
    for u in &fresh {
        let (req, rx) = incoming(&fx.reg(u));
        queue_tx.send(req).unwrap();
        expected.push((rx, 401, None, u.clone()));
    }
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let hook_calls_before = fx.hook.request_count();
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx).unwrap();
    for (rx, status, expires, user) in &expected {
        let r = response_from(rx);
        assert_eq!(r.status, *status, "{user}: {}", r.raw);
        if let Some(e) = expires {
            assert_eq!(r.header("Expires"), Some(*e), "{user}");
        }
        assert!(rx.try_recv().is_err(), "{user} got a second response");
    }
    for u in &authed {
        assert!(fx.binding(u).is_some(), "{u} stored");
    }
    // only the authorized REGISTERs reached the webhook; the refreshes were cache hits
    assert_eq!(fx.hook.request_count() - hook_calls_before, authed.len());
    drop(shutdown_tx);
    pool.join();
}

/// The triage thread claims the nonce uses of a batch in the round trip that reads its
/// bindings: a replay queued in the same batch as the original, or in a later one, is
/// challenged there and never reaches an auth worker or the webhook.
#[test]
fn a_replay_in_a_batch_is_challenged_by_the_triage_thread() {
    use sbc_sidecar::registrar::credentials::NonceUse;
    use sbc_sidecar::registrar::replay;
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("kai", PASSWORD);
    let registrar = Arc::new(Registrar::new(
        base_settings(),
        MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
        redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
    ));
    let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg("kai")));
    let original = fx.reg("kai").authorized(PASSWORD, &nonce);
    let mut replay = original.clone();
    replay.port = 6001;
    replay.contact = Some("<sip:kai@127.0.0.1:6001;transport=udp>;expires=3600".into());
    fx.aors.lock().unwrap().push(fx.aor("kai"));

    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(8);
    let (req, first_rx) = incoming(&original);
    queue_tx.send(req).unwrap();
    let (req, replay_rx) = incoming(&replay);
    queue_tx.send(req).unwrap();
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx).unwrap();
    assert_eq!(response_from(&first_rx).status, 200);
    assert_challenge(&response_from(&replay_rx), &fx.realm, false);
    // and again in a batch of its own
    let (req, later_rx) = incoming(&replay);
    queue_tx.send(req).unwrap();
    assert_challenge(&response_from(&later_rx), &fx.realm, false);
    assert_eq!(fx.hook.request_count(), 1);
    let json: Value = serde_json::from_str(&fx.binding("kai").unwrap()).unwrap();
    assert_eq!(json["contact"], "sip:kai@127.0.0.1:5070;transport=udp");
    // the record of the use, kept as long as the nonce is valid
    let used = NonceUse { nc: 1, cnonce: "0a4f113b".into() };
    let ttl: i64 = redis::cmd("TTL").arg(replay::key(&nonce, &used)).query(&mut redis_conn()).unwrap();
    assert!((300..=360).contains(&ttl), "TTL {ttl}");
    drop(shutdown_tx);
    pool.join();
}

/// A banned source is refused in the batch before anything is read or claimed for it: its
/// well-formed answers create no one-time key in Redis.
#[test]
fn a_banned_source_creates_no_one_time_keys() {
    use sbc_sidecar::registrar::credentials::NonceUse;
    use sbc_sidecar::registrar::{replay, BanSettings, Bans};
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("lou", PASSWORD);
    let bans = Arc::new(Bans::new(BanSettings { max_failures: 1, ..BanSettings::default() }));
    let registrar = Arc::new(
        Registrar::new(
            base_settings(),
            MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
            redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
        )
        .with_bans(bans.clone()),
    );
    let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg("lou")));
    assert!(bans.record_failure("127.0.0.1".parse().unwrap(), Instant::now()).is_some());
    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(8);
    let (req, rx) = incoming(&fx.reg("lou").authorized(PASSWORD, &nonce));
    queue_tx.send(req).unwrap();
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx).unwrap();
    let r = response_from(&rx);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
    let key = replay::key(&nonce, &NonceUse { nc: 1, cnonce: "0a4f113b".into() });
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut redis_conn()).unwrap();
    assert!(!exists, "{key} was created for a banned source");
    assert_eq!(fx.hook.request_count(), 0);
    drop(shutdown_tx);
    pool.join();
}

/// Auth workers calling one kept-alive webhook at the same time reuse their connections:
/// over many rounds the server sees at most one connection per worker. (ureq's default pool
/// keeps 3 idle connections per host; with more workers the rest were closed after every
/// call and opened again on the next — a TCP handshake and a thread per REGISTER.)
#[test]
fn concurrent_webhook_calls_reuse_one_connection_per_worker() {
    const WORKERS: usize = 8;
    const ROUNDS: usize = 10;
    let hook = WebhookServer::start();
    hook.keep_alive(true);
    hook.fixed(200, r#"{"status":"ok"}"#);
    // Long enough that all workers are inside a call together in every round.
    hook.delay(Duration::from_millis(20));
    let transport =
        Arc::new(sbc_sidecar::registrar::hook_transport::UreqTransport::new(Duration::from_secs(3), None, WORKERS));
    let url = hook.url("/auth");
    for _ in 0..ROUNDS {
        let barrier = Arc::new(std::sync::Barrier::new(WORKERS));
        let calls: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (transport, url, barrier) = (transport.clone(), url.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let request = HookRequest {
                        method: sbc_sidecar::registrar::webhook::HookMethod::Post,
                        url,
                        headers: vec![("content-type".into(), "application/json".into())],
                        body: Some("{}".into()),
                    };
                    transport.send(&request).map(|r| r.status)
                })
            })
            .collect();
        for c in calls {
            assert_eq!(c.join().unwrap().unwrap(), 200);
        }
    }
    assert_eq!(hook.request_count(), WORKERS * ROUNDS);
    let opened = hook.connection_count();
    assert!(opened <= WORKERS, "{opened} connections for {} calls from {WORKERS} workers", WORKERS * ROUNDS);
}

/// A keep-alive webhook server that closes an idle connection just as the next request
/// arrives (Node's http server does so after 5 s idle): the request goes again, once, on a new
/// connection, instead of failing the REGISTER with 500.
#[test]
fn a_kept_alive_connection_closed_by_the_server_is_retried_once_on_a_new_one() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/auth", listener.local_addr().unwrap());
    // Reads one request (head and body) off the connection; false at end of stream.
    fn read_request(reader: &mut BufReader<std::net::TcpStream>) -> bool {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return false;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).is_ok()
    }
    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        // First connection: answers one request, then drops the connection on the second.
        let (first, _) = listener.accept().unwrap();
        let mut writer = first.try_clone().unwrap();
        let mut reader = BufReader::new(first);
        requests.push(("first", read_request(&mut reader)));
        writer.write_all(OK).unwrap();
        requests.push(("first", read_request(&mut reader)));
        drop(writer);
        drop(reader);
        // Second connection: the retry.
        let (second, _) = listener.accept().unwrap();
        let mut writer = second.try_clone().unwrap();
        let mut reader = BufReader::new(second);
        requests.push(("second", read_request(&mut reader)));
        writer.write_all(OK).unwrap();
        requests
    });
    let transport = sbc_sidecar::registrar::hook_transport::UreqTransport::new(Duration::from_secs(3), None, 4);
    let request = HookRequest {
        method: sbc_sidecar::registrar::webhook::HookMethod::Post,
        url,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some("{}".into()),
    };
    assert_eq!(transport.send(&request).map(|r| r.status), Ok(200));
    assert_eq!(transport.send(&request).map(|r| r.status), Ok(200), "the second call survives the close");
    assert_eq!(server.join().unwrap(), vec![("first", true), ("first", true), ("second", true)]);
}

/// An account whose webhook keeps timing out stops holding auth workers: after 3 timeouts in
/// a row its REGISTERs get 503 with Retry-After at once, without a call, until the cool-down is
/// over; then one goes through, and an answer closes the breaker. Other accounts keep calling
/// their webhooks meanwhile.
#[test]
fn a_webhook_that_keeps_timing_out_is_rested_without_touching_other_accounts() {
    use sbc_sidecar::registrar::hook_breaker::BreakerSettings;
    let cooldown = Duration::from_millis(1500);
    let fx = Fx::with(|s| {
        s.webhook_timeout = Duration::from_millis(200);
        s.webhook_breaker = BreakerSettings { threshold: 3, cooldown };
    });
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ann", PASSWORD);
    fx.hook.delay(Duration::from_secs(2));

    // A second account on another realm, with a webhook that answers at once.
    let other_hook = WebhookServer::start();
    other_hook.set_password("bob", PASSWORD);
    let other_realm = format!("o{:08x}.sbc-test.example", rand::thread_rng().gen::<u32>());
    {
        let mut c = fx.db.conn();
        let hook_sid = uuid();
        c.exec_drop(
            "INSERT INTO webhooks (webhook_sid, url, method) VALUES (?, ?, 'POST')",
            (&hook_sid, other_hook.url("/auth")),
        )
        .unwrap();
        c.exec_drop(
            "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, \
             is_active, webhook_secret) VALUES (?, 'other', ?, ?, ?, 1, ?)",
            (uuid(), &other_realm, uuid(), &hook_sid, WEBHOOK_SECRET),
        )
        .unwrap();
    }
    let mut bob = fx.reg("bob");
    bob.ruri = format!("sip:{other_realm}");
    bob.to = format!("<sip:bob@{other_realm}>");
    bob.to_host = other_realm.clone();

    for attempt in 1..=3 {
        let r = fx.register_with_password(&fx.reg("ann"), PASSWORD);
        assert_eq!(r.status, 500, "timeout {attempt}");
    }
    assert_eq!(fx.hook.request_count(), 3);

    let r = fx.register_with_password(&fx.reg("ann"), PASSWORD);
    assert_eq!(r.status, 503, "{}", r.raw);
    let retry_after: u64 = r.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after} for a 1.5 s cool-down");
    assert_eq!(fx.hook.request_count(), 3, "not called while the breaker is open");

    assert_eq!(fx.register_with_password(&bob, PASSWORD).status, 200, "another account's webhook is still called");
    assert_eq!(other_hook.request_count(), 1);

    // The webhook recovers; after the cool-down the next REGISTER is tried and succeeds.
    fx.hook.delay(Duration::ZERO);
    std::thread::sleep(cooldown + Duration::from_millis(100));
    assert_eq!(fx.register_with_password(&fx.reg("ann"), PASSWORD).status, 200);
    assert_eq!(fx.hook.request_count(), 4);
    // (ann is now answered from the cache window; another phone of the account calls again.)
    fx.hook.set_password("cat", PASSWORD);
    assert_eq!(fx.register_with_password(&fx.reg("cat"), PASSWORD).status, 200, "closed again");
    assert_eq!(fx.hook.request_count(), 5);
}

/// The triage thread answers refreshes from the cache window while every auth worker is held
/// by a slow webhook: one tenant's slow webhook does not delay the other devices' refreshes.
#[test]
fn cache_window_refreshes_are_answered_while_every_auth_worker_waits_on_a_webhook() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    for u in ["steady", "slowpoke"] {
        fx.hook.set_password(u, PASSWORD);
    }
    assert_eq!(fx.register_with_password(&fx.reg("steady"), PASSWORD).status, 200);
    let registrar = Arc::new(Registrar::new(
        base_settings(),
        MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
        redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
    ));
    let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg("slowpoke")));
    fx.aors.lock().unwrap().push(fx.aor("slowpoke"));

    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(16);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx).unwrap();
    fx.hook.delay(Duration::from_secs(2));
    let (slow, slow_rx) = incoming(&fx.reg("slowpoke").authorized(PASSWORD, &nonce));
    queue_tx.send(slow).unwrap();
    // Wait until the only worker is inside the webhook call.
    let deadline = Instant::now() + Duration::from_secs(2);
    while fx.hook.request_count() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(fx.hook.request_count(), 2, "the worker is calling the webhook");

    let (refresh, refresh_rx) = incoming(&fx.reg("steady"));
    queue_tx.send(refresh).unwrap();
    let r = response_from(&refresh_rx);
    assert!(slow_rx.try_recv().is_err(), "the refresh was answered while the webhook call was still running");
    assert_eq!((r.status, r.header("Expires")), (200, Some("30")), "{}", r.raw);
    assert_eq!(response_from(&slow_rx).status, 200, "and the slow registration completes");
    drop(shutdown_tx);
    pool.join();
}

/// A Redis that accepts connections and never answers (a hung server, a black-holed route)
/// costs one timeout, not one per REGISTER: the batch's MGET times out, Redis is marked down,
/// and every queued REGISTER gets its 503 at once. While it stays down only one request per
/// probe interval tries it.
#[test]
fn a_redis_that_never_answers_costs_one_timeout_not_one_per_register() {
    use std::io::Read;
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            for stream in silent.incoming() {
                let Ok(mut stream) = stream else { return };
                let received = received.clone();
                std::thread::spawn(move || {
                    let slot = {
                        let mut r = received.lock().unwrap();
                        r.push(Vec::new());
                        r.len() - 1
                    };
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        received.lock().unwrap()[slot].extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
    }
    // Every attempt is a new connection: the client's handshake (CLIENT SETINFO) is never
    // answered, so no connection ever makes it into the pool.
    let attempts = || received.lock().unwrap().len();

    let fx = Fx::new();
    let registrar = Arc::new(Registrar::new(
        base_settings(),
        MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
        redis_pool(&redis_settings(port, Duration::from_millis(300))).unwrap(),
    ));
    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(64);
    let mut answers = Vec::new();
    for i in 0..20 {
        let (req, rx) = incoming(&fx.reg(&format!("hung{i}")));
        queue_tx.send(req).unwrap();
        answers.push(rx);
    }
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(2, &queue_rx), registrar, queue_rx, shutdown_rx).unwrap();
    for rx in &answers {
        let r = response_from(rx);
        assert_eq!((r.status, r.header("Retry-After")), (503, Some("5")), "{}", r.raw);
    }
    assert_eq!(attempts(), 1, "one attempt for the batch, not one per REGISTER");

    // Still down and within the probe interval: answered without another attempt.
    let (req, rx) = incoming(&fx.reg("hung-again"));
    queue_tx.send(req).unwrap();
    assert_eq!(response_from(&rx).status, 503);
    assert_eq!(attempts(), 1, "no attempt within the probe interval");
    drop(shutdown_tx);
    pool.join();
}

/// When every auth worker is busy and as many REGISTERs wait for one as the queue holds, the
/// next one needing authentication gets 503 with Retry-After at once; every request gets
/// exactly one answer, and the waiting ones are served when the worker is free again.
#[test]
fn a_full_auth_queue_answers_503_at_once_and_every_request_once() {
    const QUEUE: usize = 4;
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let registrar = Arc::new(Registrar::new(
        base_settings(),
        MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
        redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
    ));
    let users: Vec<String> = (0..QUEUE + 3).map(|i| format!("crowd{i}")).collect();
    let authorized: Vec<Reg> = users
        .iter()
        .map(|u| {
            fx.hook.set_password(u, PASSWORD);
            fx.aors.lock().unwrap().push(fx.aor(u));
            let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg(u)));
            fx.reg(u).authorized(PASSWORD, &nonce)
        })
        .collect();

    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(QUEUE);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx).unwrap();
    fx.hook.delay(Duration::from_millis(1500));
    let mut answers = Vec::new();
    // The first holds the only worker inside the webhook call.
    let (req, rx) = incoming(&authorized[0]);
    queue_tx.send(req).unwrap();
    answers.push(rx);
    let deadline = Instant::now() + Duration::from_secs(2);
    while fx.hook.request_count() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The next ones wait for it; the auth queue holds QUEUE of them.
    for reg in &authorized[1..] {
        let (req, rx) = incoming(reg);
        queue_tx.send(req).unwrap();
        answers.push(rx);
    }
    let overflow = QUEUE + 1..answers.len();
    for i in overflow.clone() {
        let r = response_from(&answers[i]);
        assert_eq!((r.status, r.header("Retry-After")), (503, Some("5")), "request {i}: {}", r.raw);
    }
    assert_eq!(fx.hook.request_count(), 1, "the refused ones were answered while the worker was still busy");
    fx.hook.delay(Duration::ZERO);
    for (i, rx) in answers.iter().enumerate() {
        if !overflow.contains(&i) {
            assert_eq!(response_from(rx).status, 200, "request {i}");
        }
        assert!(rx.try_recv().is_err(), "request {i} answered twice");
    }
    drop(shutdown_tx);
    pool.join();
}

// ---------------------------------------------------------------------------------------------
// A hostile network: replays, other people's addresses of record, guessing, answers that do
// not fit the challenge.

/// The REGISTER of `reg`, challenged and answered with `password`: (the authorized request,
/// its response).
fn register_and_keep(fx: &Fx, reg: &Reg, password: &str) -> (Reg, Resp) {
    let challenge = fx.send(reg);
    assert_eq!(challenge.status, 401, "{}", challenge.raw);
    let authorized = reg.clone().authorized(password, &nonce_of(&challenge));
    let resp = fx.send(&authorized);
    (authorized, resp)
}

fn contact_of_binding(fx: &Fx, user: &str) -> String {
    let json: Value = serde_json::from_str(&fx.binding(user).expect("binding")).unwrap();
    json["contact"].as_str().unwrap().to_string()
}

#[test]
fn a_replayed_authorization_from_another_port_is_challenged_and_the_binding_stays() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ann", PASSWORD);
    let (captured, first) = register_and_keep(&fx, &fx.reg("ann"), PASSWORD);
    assert_eq!(first.status, 200, "{}", first.raw);
    assert_eq!(fx.hook.request_count(), 1);
    assert_eq!(contact_of_binding(&fx, "ann"), "sip:ann@127.0.0.1:5070;transport=udp");

    // the attacker sends the captured Authorization byte for byte, from elsewhere, for itself
    let mut replay = captured.clone();
    replay.port = 6666;
    replay.contact = Some("<sip:ann@127.0.0.66:6666;transport=udp>;expires=3600".into());
    let r = fx.send(&replay);
    assert_challenge(&r, &fx.realm, false);
    assert_eq!(contact_of_binding(&fx, "ann"), "sip:ann@127.0.0.1:5070;transport=udp");

    // nor can it remove the victim's binding
    let mut unregister = captured;
    unregister.port = 6667;
    unregister.contact = Some("<sip:ann@127.0.0.66:6667;transport=udp>;expires=0".into());
    unregister.expires = Some("0".into());
    assert_challenge(&fx.send(&unregister), &fx.realm, false);
    assert!(fx.binding("ann").is_some());
    // the customer's webhook never saw the replays
    assert_eq!(fx.hook.request_count(), 1);
}

#[test]
fn a_replay_is_refused_on_another_sbc_sharing_the_secret_too() {
    let fx = Fx::with(|s| s.nonce_secret = Some("cluster".into()));
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ava", PASSWORD);
    let (captured, first) = register_and_keep(&fx, &fx.reg("ava"), PASSWORD);
    assert_eq!(first.status, 200);
    let mut settings = base_settings();
    settings.nonce_secret = Some("cluster".into());
    let other_sbc = Registrar::new(
        settings,
        MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
        redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
    );
    let mut replay = captured;
    replay.port = 7777;
    assert_eq!(fx.send_to(&other_sbc, &replay).status, 401);
    assert_eq!(fx.hook.request_count(), 1);
}

#[test]
fn the_same_nonce_with_a_new_count_and_cnonce_is_accepted() {
    for with_webhook in [true, false] {
        let fx = Fx::new();
        let sid = fx.add_account(&fx.realm, true, with_webhook.then_some(("POST", "/auth")));
        fx.hook.set_password("bea", "1234");
        fx.add_client(&sid, "bea", CBC_1234, true);
        let challenge = fx.send(&fx.reg("bea"));
        let nonce = nonce_of(&challenge);
        let answer = |nc: &str, cnonce: &str, port: u16| {
            let mut reg = fx.reg("bea");
            reg.port = port;
            reg.authorization = Some(authorization_with("bea", &fx.realm, "1234", &nonce, nc, cnonce));
            fx.send(&reg)
        };
        assert_eq!(answer("00000001", "c0ffee01", 5070).status, 200, "webhook={with_webhook}");
        // a pre-emptive refresh (another port, so not from the cache window) reusing the nonce
        assert_eq!(answer("00000002", "c0ffee02", 5071).status, 200, "webhook={with_webhook}");
        // the second answer again: a replay
        assert_eq!(answer("00000002", "c0ffee02", 5072).status, 401, "webhook={with_webhook}");
    }
}

#[test]
fn credentials_of_one_user_cannot_register_another_aor_with_the_clients_table() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "alice", CBC_1234, true);
    fx.add_client(&sid, "bob", CBC_1234, true);
    let mut as_bob = fx.reg("bob");
    let nonce = nonce_of(&fx.send(&as_bob));
    // alice's correct credentials, To: bob
    as_bob.authorization = Some(authorization("alice", &fx.realm, "1234", &nonce));
    let r = fx.send(&as_bob);
    assert_eq!(r.status, 403, "{}", r.raw);
    assert_eq!(r.header("X-Reason"), Some("Authorization user does not match the address of record"));
    assert_eq!(fx.binding("bob"), None);
    // a realm other than the To host is refused the same way
    let mut other_realm = fx.reg("alice");
    let nonce = nonce_of(&fx.send(&other_realm));
    let r_uri = other_realm.ruri.clone();
    other_realm.authorization = Some(digest_answer("alice", "elsewhere.example", &r_uri, "1234", &nonce, "1", "c1"));
    assert_eq!(fx.send(&other_realm).status, 403);
    assert_eq!(fx.binding("alice"), None);
    // alice for alice still works
    assert_eq!(fx.register_with_password(&fx.reg("alice"), "1234").status, 200);
}

#[test]
fn credentials_of_one_user_cannot_register_another_aor_with_a_webhook_unless_switched_off() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("john", PASSWORD);
    let mut as_jane = fx.reg("jane");
    let nonce = nonce_of(&fx.send(&as_jane));
    as_jane.authorization = Some(authorization("john", &fx.realm, PASSWORD, &nonce));
    let r = fx.send(&as_jane);
    assert_eq!(r.status, 403, "{}", r.raw);
    assert_eq!(r.header("X-Reason"), Some("Authorization user does not match the address of record"));
    assert_eq!(fx.binding("jane"), None);
    assert_eq!(fx.hook.request_count(), 0, "refused before the webhook");

    // SBC_WEBHOOK_AOR_CHECK=0: the webhook decides (this one only checks the password)
    let lax = Fx::with(|s| s.webhook_aor_check = false);
    lax.add_account(&lax.realm, true, Some(("POST", "/auth")));
    lax.hook.set_password("john", PASSWORD);
    let mut as_jane = lax.reg("jane");
    let nonce = nonce_of(&lax.send(&as_jane));
    as_jane.authorization = Some(authorization("john", &lax.realm, PASSWORD, &nonce));
    assert_eq!(lax.send(&as_jane).status, 200);
    assert_eq!(lax.hook.request_count(), 1);
    assert!(lax.binding("jane").is_some());
}

#[test]
fn answers_that_do_not_fit_the_challenge_are_refused_before_the_webhook() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("cy", PASSWORD);
    let reg = fx.reg("cy");
    let nonce = nonce_of(&fx.send(&reg));
    let good = authorization("cy", &fx.realm, PASSWORD, &nonce);
    let send_with = |auth: String| {
        let mut r = reg.clone();
        r.authorization = Some(auth);
        fx.send(&r)
    };
    // computed for another Request-URI
    let r = send_with(good.replace(&format!("uri=\"sip:{}\"", fx.realm), "uri=\"sip:other.example\""));
    assert_eq!((r.status, r.header("X-Reason")), (400, Some("Digest uri names neither the Request-URI nor this SBC")));
    // an algorithm we did not offer
    let r = send_with(good.replace("algorithm=MD5", "algorithm=SHA-256"));
    assert_eq!(r.status, 400);
    assert_eq!(r.header("X-Reason"), Some("Unsupported digest algorithm (only MD5 is offered)"));
    // an RFC 2069 answer (no qop, nc, cnonce) to a challenge that demands qop="auth"
    let rfc2069_response =
        digest_response("cy", &fx.realm, PASSWORD, "REGISTER", &format!("sip:{}", fx.realm), &nonce, "", "", "");
    let r = send_with(format!(
        r#"Digest username="cy", realm="{}", nonce="{nonce}", uri="sip:{}", response="{rfc2069_response}", algorithm=MD5"#,
        fx.realm, fx.realm
    ));
    assert_challenge(&r, &fx.realm, false);
    assert_eq!(fx.hook.request_count(), 0);
    assert_eq!(fx.binding("cy"), None);
    // the right answer still works: none of the refusals used the nonce up
    assert_eq!(send_with(good).status, 200);
}

#[test]
fn repeated_wrong_passwords_ban_the_source_without_touching_other_sources() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("dee", PASSWORD);
    let mut attacker = fx.reg("dee");
    attacker.address = "127.0.0.77".into();
    for i in 1..=10 {
        let r = fx.register_with_password(&attacker, "guess");
        assert_eq!(r.status, 403, "attempt {i}: {}", r.raw);
        assert_eq!(r.header("X-Reason"), Some("Invalid credentials"), "attempt {i}");
    }
    assert_eq!(fx.hook.request_count(), 10);
    // the 11th is refused at once: no challenge, no webhook call
    let r = fx.send(&attacker);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
    let mut with_password = attacker.clone();
    with_password.authorization = Some(authorization("dee", &fx.realm, PASSWORD, "1.2.3"));
    assert_eq!(fx.send(&with_password).status, 403);
    assert_eq!(fx.hook.request_count(), 10);

    // another source registers the same user normally
    let mut phone = fx.reg("dee");
    phone.address = "127.0.0.78".into();
    assert_eq!(fx.register_with_password(&phone, PASSWORD).status, 200);

    // the ban is listed, and lifting it lets the source in again
    let bans = fx.registrar.bans().list(Instant::now());
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].ip.to_string(), "127.0.0.77");
    assert!(fx.registrar.bans().clear("127.0.0.77".parse().unwrap()));
    assert_eq!(fx.register_with_password(&attacker, PASSWORD).status, 200);
}

/// A nonce we did not issue to the source proves nothing about the source (a blind spoofer
/// sends those with a forged address): challenged again, never counted. An answer for another
/// user's address of record, to a nonce issued to this very source, is counted.
#[test]
fn forged_nonces_are_not_counted_and_other_peoples_aors_are() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "eve", CBC_1234, true);
    let mut scanner = fx.reg("eve");
    scanner.address = "127.0.0.79".into();
    for i in 0..20 {
        scanner.authorization = Some(authorization("eve", &fx.realm, "x", &format!("1700000000.{i:016x}.{:032x}", i)));
        assert_challenge(&fx.send(&scanner), &fx.realm, false);
    }
    assert!(fx.registrar.bans().list(Instant::now()).is_empty(), "forged nonces counted");
    let mut as_other = fx.reg("frank");
    as_other.address = "127.0.0.79".into();
    for i in 1..=10 {
        as_other.authorization = None;
        let nonce = nonce_of(&fx.send(&as_other));
        as_other.authorization = Some(authorization("eve", &fx.realm, "1234", &nonce));
        assert_eq!(fx.send(&as_other).status, 403, "attempt {i}");
        let banned = !fx.registrar.bans().list(Instant::now()).is_empty();
        assert_eq!(banned, i == 10, "banned after attempt {i}");
    }
    let r = fx.send(&fx.reg("eve").clone_from_address("127.0.0.79"));
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
}

impl Reg {
    fn clone_from_address(&self, address: &str) -> Reg {
        let mut r = self.clone();
        r.address = address.into();
        r
    }
}

#[test]
fn sub_domains_falling_back_to_an_account_count_against_its_device_limit() {
    let fx = hosting();
    let sid = fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.add_capacity(&sid, &[("voice_call_session", 0), ("device", 2)]);
    for user in ["gus", "hal", "ike"] {
        fx.hook.set_password(user, PASSWORD);
    }
    let sub_reg = |user: &str, sub: &str| {
        let host = format!("{sub}.{}", fx.realm);
        let mut r = fx.reg(user);
        r.ruri = format!("sip:{host}");
        r.to = format!("<sip:{user}@{host}>");
        r.to_host = host;
        r
    };
    assert_eq!(fx.register_with_password(&fx.reg("gus"), PASSWORD).status, 200);
    assert_eq!(fx.register_with_password(&sub_reg("hal", "x"), PASSWORD).status, 200);
    // the account has its 2 devices; a third under yet another sub-domain is refused
    assert_max_devices(&fx.send(&sub_reg("ike", "y")));
    assert_max_devices(&fx.send(&fx.reg("ike")));
}

#[test]
fn the_device_limit_alert_is_raised_once_per_account_not_per_register() {
    let db_fx = hosting();
    let (alerts, alert_rx) = sbc_sidecar::telemetry::AlertSender::in_memory(16);
    let mut settings = base_settings();
    settings.hosting = true;
    let registrar = Registrar::new(
        settings,
        MysqlPool::new(&mysql_settings(&db_fx.db.name, 3306)).unwrap(),
        redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
    )
    .with_telemetry(alerts, sbc_sidecar::telemetry::Metrics::disabled());
    db_fx.add_account(&db_fx.realm, true, Some(("POST", "/auth")));
    for _ in 0..5 {
        let r = db_fx.send_to(&registrar, &db_fx.reg("jo"));
        assert_max_devices(&r);
    }
    let raised: Vec<_> = alert_rx.try_iter().collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].alert_type().map(|t| t.as_str()), Some("account-device-limit"));
}

// ---------------------------------------------------------------------------------------------
// Defences that must not be turned against the phones they protect.

/// An address is banned (a guesser behind the same NAT as the phone, which sees our answers);
/// the phone that holds a live binding from its exact ip:port keeps getting its refreshes from
/// the cache window. Anything else from the address is refused.
#[test]
fn a_phone_behind_a_banned_address_keeps_its_cache_window_refreshes() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("pam", PASSWORD);
    fx.hook.set_password("gus", PASSWORD);
    let mut phone = fx.reg("pam");
    phone.address = "127.0.0.83".into();
    assert_eq!(fx.register_with_password(&phone, PASSWORD).status, 200);
    let mut guesser = fx.reg("gus");
    guesser.address = "127.0.0.83".into();
    guesser.port = 6100;
    for _ in 0..10 {
        assert_eq!(fx.register_with_password(&guesser, "guess").status, 403);
    }
    assert!(fx.registrar.bans().banned("127.0.0.83".parse().unwrap(), Instant::now()).is_some());
    let refresh = fx.send(&phone);
    assert_eq!((refresh.status, refresh.header("Expires")), (200, Some("30")), "{}", refresh.raw);
    // the guesser's own refresh (no binding of its own) and a new registration are refused
    let r = fx.send(&guesser);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
    let mut moved = phone.clone();
    moved.port = 6200;
    assert_eq!(fx.send(&moved).status, 403, "the same AOR from another port is not the phone's binding");
}

/// An IPv6 guesser rotating through the addresses of its /64 is one source.
#[test]
fn an_ipv6_slash_64_is_banned_as_one_source() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ivy", PASSWORD);
    for i in 1..=10 {
        let mut guesser = fx.reg("ivy");
        guesser.address = format!("2001:db8:77:1::{i:x}");
        assert_eq!(fx.register_with_password(&guesser, "guess").status, 403, "attempt {i}");
    }
    let mut next = fx.reg("ivy");
    next.address = "2001:db8:77:1:ffff::1".into();
    let r = fx.send(&next);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
    let mut neighbour = fx.reg("ivy");
    neighbour.address = "2001:db8:77:2::1".into();
    assert_eq!(fx.register_with_password(&neighbour, PASSWORD).status, 200, "the next /64 is another source");
    let bans = fx.registrar.bans().list(Instant::now());
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!((bans[0].ip.to_string(), bans[0].prefix_len), ("2001:db8:77:1::".to_string(), 64));
}

/// A webhook that times out gives the phone a 5xx; the answer's one-time use is released, so
/// the phone sending the same answer again is authenticated, not taken for a replayer.
#[test]
fn an_answer_refused_with_a_5xx_may_be_sent_again() {
    let fx = Fx::with(|s| s.webhook_timeout = Duration::from_millis(300));
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ray", PASSWORD);
    let nonce = nonce_of(&fx.send(&fx.reg("ray")));
    let answer = fx.reg("ray").authorized(PASSWORD, &nonce);
    fx.hook.delay(Duration::from_millis(800));
    let first = fx.send(&answer);
    assert!(first.status >= 500, "{}", first.raw);
    fx.hook.delay(Duration::ZERO);
    let again = fx.send(&answer);
    assert_eq!(again.status, 200, "{}", again.raw);
    assert!(fx.binding("ray").is_some());
    // and once it succeeded, the same answer is a replay (from another port: from the same
    // one the cache window answers first)
    let mut elsewhere = answer.clone();
    elsewhere.port = 6300;
    assert_challenge(&fx.send(&elsewhere), &fx.realm, false);
}

/// 20,000 REGISTERs for made-up realms: the few looked up in MySQL per second, the rest 503;
/// the known account stays cached — it is answered after its row is gone — and the caches
/// stay bounded.
#[test]
fn random_realms_neither_evict_a_known_account_nor_reach_mysql_at_line_rate() {
    let fx = Fx::with(|s| s.account_cache_ttl = Duration::from_secs(120));
    let sid = fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    assert_eq!(fx.send(&fx.reg("kim")).status, 401, "the known realm is looked up and cached");
    let mut statuses = std::collections::HashMap::<u16, u32>::new();
    for i in 0..20_000 {
        let mut scan = fx.reg("x");
        let realm = format!("s{i:05}.scan.example");
        scan.ruri = format!("sip:{realm}");
        scan.to = format!("<sip:x@{realm}>");
        scan.to_host = realm;
        *statuses.entry(fx.send(&scan).status).or_default() += 1;
    }
    let looked_up = statuses.get(&403).copied().unwrap_or(0);
    assert!((50..1_000).contains(&looked_up), "unknown realms looked up: {statuses:?}");
    assert_eq!(looked_up + statuses.get(&503).copied().unwrap_or(0), 20_000, "{statuses:?}");
    fx.db.conn().exec_drop("DELETE FROM accounts WHERE account_sid = ?", (&sid,)).unwrap();
    assert_challenge(&fx.send(&fx.reg("kim")), &fx.realm, false);
}

/// A source banned while its REGISTER waited for an auth worker (its other attempts failed
/// meanwhile) is refused when the worker takes it: no webhook call for it.
#[test]
fn the_ban_is_checked_again_when_a_worker_takes_the_request() {
    use sbc_sidecar::registrar::{BanSettings, Bans};
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("una", PASSWORD);
    fx.hook.set_password("vik", PASSWORD);
    let bans = Arc::new(Bans::new(BanSettings { max_failures: 3, ..BanSettings::default() }));
    let registrar = Arc::new(
        Registrar::new(
            base_settings(),
            MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
            redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
        )
        .with_bans(bans.clone()),
    );
    let mut holder = fx.reg("una");
    holder.address = "127.0.0.84".into();
    let mut waiting = fx.reg("vik");
    waiting.address = "127.0.0.85".into();
    let holder_answer = holder.clone().authorized(PASSWORD, &nonce_of(&fx.send_to(&registrar, &holder)));
    let waiting_answer = waiting.clone().authorized(PASSWORD, &nonce_of(&fx.send_to(&registrar, &waiting)));
    fx.aors.lock().unwrap().extend([fx.aor("una"), fx.aor("vik")]);

    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(8);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx).unwrap();
    fx.hook.delay(Duration::from_millis(800));
    let (req, holder_rx) = incoming(&holder_answer);
    queue_tx.send(req).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.hook.request_count() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The only worker is in the webhook call; the second request waits for it.
    let (req, waiting_rx) = incoming(&waiting_answer);
    queue_tx.send(req).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        bans.record_failure("127.0.0.85".parse().unwrap(), Instant::now());
    }
    assert_eq!(response_from(&holder_rx).status, 200);
    let r = response_from(&waiting_rx);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")), "{}", r.raw);
    assert_eq!(fx.hook.request_count(), 1, "the banned source's request never reached the webhook");
    drop(shutdown_tx);
    pool.join();
}
