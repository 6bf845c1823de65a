//! Every byte from outside bounded and escaped, through the drachtio double: bounded
//! registrations (423 with Min-Expires, the maximum grant, SIP contacts only, a few of them),
//! log lines without the control characters a device sent, a 500 instead of an answer too
//! large for a drachtio frame, and no start with the packaged placeholder secret.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use redis::Commands;
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::webhook::{self, WebhookServer};

const WAIT: Duration = Duration::from_secs(10);

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

struct Rig {
    _db: TestDb,
    hook: WebhookServer,
    double: Double,
    daemon: Daemon,
    realm: String,
}

impl Rig {
    fn start(extra: &[(&str, &str)]) -> Rig {
        let db = TestDb::create();
        let hook = WebhookServer::start();
        let realm = format!("r{:08x}.sip.example.com", rand::random::<u32>());
        db.add_webhook_account("bounds", &realm, &hook.url("/auth"), "wh-secret");
        let double = Double::start(DoubleConfig::default()).unwrap();
        let mut env = base_env(double.admin_addr().port(), &db.name);
        env.insert("JAMBONES_NETWORK_CIDR".into(), "127.0.0.0/8".into());
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let daemon = Daemon::start(env, &[]);
        assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());
        Rig { _db: db, hook, double, daemon, realm }
    }

    fn redis(&self) -> redis::Connection {
        sbc_test_tools::services::redis()
    }

    fn forget(&self, user: &str) {
        let key = format!("user:{user}@{}", self.realm);
        let mut r = self.redis();
        let _: Result<(), _> = r.del(&key);
        let _: Result<(), _> = r.zrem("active-user", &key);
    }
}

/// A phone written by hand over UDP: any header it likes.
struct Phone {
    sock: UdpSocket,
    to: SocketAddr,
}

impl Phone {
    fn new(ip: &str, to: SocketAddr) -> Phone {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        Phone { sock, to }
    }

    /// Sends `text` (with `{local}` replaced by this socket's address) and returns the final
    /// response.
    fn send(&self, text: &str) -> String {
        let text = text.replace("{local}", &self.sock.local_addr().unwrap().to_string());
        self.sock.send_to(text.as_bytes(), self.to).unwrap();
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, _) = self.sock.recv_from(&mut buf).expect("a response within the wait");
            let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !resp.starts_with("SIP/2.0 1") {
                return resp;
            }
        }
    }

    /// A REGISTER for `user@realm` with `headers` (Contact, Expires, …) and the final response.
    fn register(&self, realm: &str, user: &str, cseq: u32, headers: &str) -> String {
        self.send(&format!(
            "REGISTER sip:{realm} SIP/2.0\r\nVia: SIP/2.0/UDP {{local}};branch=z9hG4bK-{}\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@{realm}>;tag=b{cseq}\r\nTo: <sip:{user}@{realm}>\r\nCall-ID: {user}@bounds\r\n\
             CSeq: {cseq} REGISTER\r\n{headers}Content-Length: 0\r\n\r\n",
            uuid()
        ))
    }
}

fn status_of(resp: &str) -> u16 {
    resp.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn header_of<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

/// The Authorization answering `challenge` as `username` (the password need not be right for
/// the checks before the webhook).
fn answer(challenge: &str, realm: &str, username: &str, password: &str) -> String {
    let www = header_of(challenge, "WWW-Authenticate").expect("a challenge");
    let start = www.find("nonce=\"").expect("nonce") + 7;
    let nonce = &www[start..start + www[start..].find('"').unwrap()];
    let uri = format!("sip:{realm}");
    let response =
        webhook::digest_response(username, realm, password, "REGISTER", &uri, nonce, "00000001", "0a1b2c3d", "auth");
    format!(
        "Authorization: Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, cnonce=\"0a1b2c3d\", qop=auth, nc=00000001\r\n"
    )
}

/// REGISTER, 401, REGISTER with credentials: the final response.
fn register_authenticated(rig: &Rig, phone: &Phone, user: &str, password: &str, headers: &str) -> String {
    let challenge = phone.register(&rig.realm, user, 1, headers);
    assert_eq!(status_of(&challenge), 401, "{challenge}\n{}", rig.daemon.log());
    let auth = answer(&challenge, &rig.realm, user, password);
    phone.register(&rig.realm, user, 2, &format!("{headers}{auth}"))
}

#[test]
fn expires_below_the_minimum_is_423_with_min_expires_and_unregistering_is_always_allowed() {
    let rig = Rig::start(&[]);
    let phone = Phone::new("127.0.0.71", rig.double.sip_addr());
    let contact = "Contact: <sip:ann@{local};transport=udp>";
    let resp = phone.register(&rig.realm, "ann", 1, &format!("{contact}\r\nExpires: 30\r\n"));
    assert_eq!(status_of(&resp), 423, "{resp}");
    assert_eq!(header_of(&resp, "Min-Expires"), Some("60"), "{resp}");
    let resp = phone.register(&rig.realm, "ann", 2, &format!("{contact};expires=59\r\nExpires: 3600\r\n"));
    assert_eq!(status_of(&resp), 423, "{resp}");
    // Expires: 0 goes on to the challenge
    let resp = phone.register(&rig.realm, "ann", 3, &format!("{contact}\r\nExpires: 0\r\n"));
    assert_eq!(status_of(&resp), 401, "{resp}");
    // an operator's own minimum
    let rig = Rig::start(&[("SBC_REGISTER_MIN_EXPIRES", "120")]);
    let phone = Phone::new("127.0.0.71", rig.double.sip_addr());
    let resp = phone.send(&format!(
        "REGISTER sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {{local}};branch=z9hG4bK-{1}\r\nFrom: <sip:ann@{0}>;tag=x\r\n\
         To: <sip:ann@{0}>\r\nCall-ID: {1}\r\nCSeq: 1 REGISTER\r\n{contact}\r\nExpires: 90\r\nContent-Length: 0\r\n\r\n",
        rig.realm,
        uuid()
    ));
    assert_eq!((status_of(&resp), header_of(&resp, "Min-Expires")), (423, Some("120")), "{resp}");
}

#[test]
fn a_registration_asking_for_136_years_is_granted_the_maximum_and_so_is_a_webhook_grant() {
    let rig = Rig::start(&[]);
    rig.hook.set_password("bea", "bea-pw");
    rig.hook.set_password("cid", "cid-pw");
    let phone = Phone::new("127.0.0.72", rig.double.sip_addr());
    let headers = "Contact: <sip:bea@{local};transport=udp>\r\nExpires: 4294967295\r\n";
    let ok = register_authenticated(&rig, &phone, "bea", "bea-pw", headers);
    assert_eq!(status_of(&ok), 200, "{ok}\n{}", rig.daemon.log());
    let ttl: i64 = rig.redis().ttl(format!("user:bea@{}", rig.realm)).unwrap();
    assert!((1..=3600).contains(&ttl), "binding TTL {ttl}");
    assert_eq!(
        rig.hook.requests().last().unwrap().payload()["expires"],
        serde_json::json!(3600),
        "the webhook is asked for the maximum"
    );
    rig.forget("bea");
    // the webhook's own expires is capped too
    rig.hook.ok_fields(serde_json::json!({"expires": 4294967295u64}));
    let phone = Phone::new("127.0.0.73", rig.double.sip_addr());
    let headers = "Contact: <sip:cid@{local};transport=udp>\r\nExpires: 600\r\n";
    let ok = register_authenticated(&rig, &phone, "cid", "cid-pw", headers);
    assert_eq!(status_of(&ok), 200, "{ok}");
    let ttl: i64 = rig.redis().ttl(format!("user:cid@{}", rig.realm)).unwrap();
    assert!((601..=3600).contains(&ttl), "binding TTL {ttl}: the webhook's grant, capped at 3600");
    rig.forget("cid");
}

#[test]
fn contacts_must_be_a_few_sip_uris_of_bounded_length() {
    let rig = Rig::start(&[]);
    let phone = Phone::new("127.0.0.74", rig.double.sip_addr());
    let cases = [
        ("Contact: <http://169.254.169.254/latest/meta-data/>\r\n", "Contact must be a sip or sips URI"),
        ("Contact: <tel:+15551234567>\r\n", "Contact must be a sip or sips URI"),
        (&*format!("Contact: <sip:{}@{{local}}>\r\n", "u".repeat(600)), "Contact must be a sip or sips URI"),
        (&*(0..9).map(|i| format!("Contact: <sip:dee{i}@{{local}}>\r\n")).collect::<String>(), "Too many contacts"),
    ];
    for (i, (contacts, reason)) in cases.iter().enumerate() {
        let resp = phone.register(&rig.realm, "dee", i as u32 + 1, &format!("{contacts}Expires: 600\r\n"));
        assert_eq!(status_of(&resp), 400, "{resp}");
        assert_eq!(header_of(&resp, "X-Reason"), Some(*reason), "{resp}");
    }
    let stored: Option<String> = rig.redis().get(format!("user:dee@{}", rig.realm)).unwrap();
    assert_eq!(stored, None);
}

#[test]
fn a_username_with_escape_sequences_and_bidi_overrides_is_logged_escaped() {
    let rig = Rig::start(&[]);
    let phone = Phone::new("127.0.0.75", rig.double.sip_addr());
    let headers = "Contact: <sip:eve@{local};transport=udp>\r\nExpires: 600\r\n";
    // credentials of another user whose name reverses the text of the operator's terminal:
    // a quoted string may hold any UTF-8, so it reaches the log line of the refusal
    let challenge = phone.register(&rig.realm, "eve", 3, headers);
    assert_eq!(status_of(&challenge), 401, "{challenge}");
    let auth = answer(&challenge, &rig.realm, "mallory\u{202e}gpj.exe", "x");
    let resp = phone.register(&rig.realm, "eve", 4, &format!("{headers}{auth}"));
    assert_eq!(status_of(&resp), 403, "{resp}");
    assert!(rig.daemon.wait_for_log("username=mallory\\u{202e}gpj.exe", WAIT), "{:?}", rig.daemon.log());
    // a control character inside a quoted string is not RFC 7616: refused (400), and the
    // line that says so does not carry the value
    let challenge = phone.register(&rig.realm, "eve", 5, headers);
    let auth = answer(&challenge, &rig.realm, "mallory\u{1b}[2J", "x");
    let resp = phone.register(&rig.realm, "eve", 6, &format!("{headers}{auth}"));
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(rig.daemon.wait_for_log("malformed Authorization", WAIT), "{:?}", rig.daemon.log());
    let log = rig.daemon.log();
    assert!(!log.contains('\u{1b}'), "a raw ESC in the log");
    assert!(!log.contains('\u{202e}'), "a raw bidi override in the log");
}

#[test]
fn an_answer_too_large_for_a_drachtio_frame_is_replaced_by_a_500() {
    let rig = Rig::start(&[]);
    let phone = Phone::new("127.0.0.76", rig.double.sip_addr());
    // a From the 200 would copy: 13 KB, more than a drachtio frame holds (12 KB)
    let pad = "p".repeat(13 * 1024);
    let resp = phone.send(&format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {{local}};branch=z9hG4bK-{}\r\nFrom: <sip:big@127.0.0.76>;tag=t;x={pad}\r\n\
         To: <sip:{}>\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        rig.double.sip_addr(),
        uuid(),
        rig.double.sip_addr(),
        uuid()
    ));
    assert_eq!(status_of(&resp), 500, "{}", &resp[..resp.len().min(200)]);
    assert!(rig.daemon.wait_for_log("too large for a drachtio frame", WAIT), "{}", rig.daemon.log());
    // and the daemon still answers
    let resp = phone.send(&format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {{local}};branch=z9hG4bK-{}\r\nFrom: <sip:small@127.0.0.76>;tag=t\r\n\
         To: <sip:{}>\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        rig.double.sip_addr(),
        uuid(),
        rig.double.sip_addr(),
        uuid()
    ));
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[test]
fn the_packaged_placeholder_secret_stops_the_start_with_exit_78() {
    for (var, unset) in [("ENCRYPTION_SECRET", None), ("JWT_SECRET", Some("ENCRYPTION_SECRET"))] {
        let db = TestDb::create();
        let mut env = base_env(1, &db.name);
        if let Some(name) = unset {
            env.remove(name);
        }
        env.insert(var.into(), "change-me".into());
        let mut daemon = Daemon::start(env, &[]);
        let status = daemon.wait_exit(WAIT).expect("the daemon exits");
        assert_eq!(status.code(), Some(78), "{}", daemon.log());
        let log = daemon.log();
        assert!(log.contains(&format!("{var} is still the placeholder")), "{log}");
        assert!(log.contains("/etc/default/sbc-sidecar"), "{log}");
    }
}

#[test]
fn a_short_secret_starts_with_a_warning() {
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).unwrap();
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("ENCRYPTION_SECRET".into(), "short".into());
    let daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());
    assert!(daemon.wait_for_log("ENCRYPTION_SECRET is shorter than 16 bytes", WAIT), "{}", daemon.log());
}
