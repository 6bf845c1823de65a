//! What the Node sidecar writes to and reads from Redis (spec 4.5, 5.2, 9.1, 12.1), for tests
//! of a cluster in which Node sidecars and `sbc-sidecar` run side by side: a binding as Node
//! stores it, Node's own cache-window test of a stored binding, and a phone written by hand
//! over UDP that can send any Authorization (a Node nonce, for one).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::{Map, Value};

/// The fields of a stored registration in the order Node writes them (spec 4.5); fields whose
/// value is undefined are left out.
pub const BINDING_FIELDS: &[&str] = &[
    "contact",
    "sbcAddress",
    "privateSbcAddress",
    "protocol",
    "proxy",
    "callHook",
    "callStatusHook",
    "allow_direct_app_calling",
    "allow_direct_queue_calling",
    "allow_direct_user_calling",
    "expiryTime",
];

/// The fields of `voip_carriers.register_status`, in order (spec 6.4).
pub const REGISTER_STATUS_FIELDS: &[&str] = &["status", "reason", "cseq", "callId", "timestamp", "expires"];

/// A registration as the Node sidecar stores it (mw-registrar `add`).
pub struct NodeBinding<'a> {
    pub contact: &'a str,
    /// drachtio's whole hostport list.
    pub sbc_address: &'a str,
    pub private_sbc_address: Option<&'a str>,
    pub protocol: Option<&'a str>,
    /// `sip:<source_address>:<source_port>`
    pub proxy: &'a str,
    pub call_hook: Option<&'a str>,
    pub call_status_hook: Option<&'a str>,
    pub expiry_time_ms: u64,
}

impl NodeBinding<'_> {
    /// The JSON string, field for field as spec 4.5 shows it.
    pub fn json(&self) -> String {
        let mut m = Map::new();
        m.insert("contact".into(), self.contact.into());
        m.insert("sbcAddress".into(), self.sbc_address.into());
        if let Some(p) = self.private_sbc_address {
            m.insert("privateSbcAddress".into(), p.into());
        }
        if let Some(p) = self.protocol {
            m.insert("protocol".into(), p.into());
        }
        m.insert("proxy".into(), self.proxy.into());
        if let Some(h) = self.call_hook {
            m.insert("callHook".into(), h.into());
        }
        if let Some(h) = self.call_status_hook {
            m.insert("callStatusHook".into(), h.into());
        }
        for f in ["allow_direct_app_calling", "allow_direct_queue_calling", "allow_direct_user_calling"] {
            m.insert(f.into(), Value::Bool(false));
        }
        m.insert("expiryTime".into(), Value::from(self.expiry_time_ms));
        Value::Object(m).to_string()
    }

    /// `SETEX user:<aor> <granted> <json>` and `ZADD active-user <expiryTime> user:<aor>`.
    pub fn store(&self, conn: &mut redis::Connection, aor: &str, granted: u64) -> redis::RedisResult<()> {
        let key = format!("user:{aor}");
        redis::pipe()
            .cmd("SETEX")
            .arg(&key)
            .arg(granted)
            .arg(self.json())
            .ignore()
            .cmd("ZADD")
            .arg("active-user")
            .arg(self.expiry_time_ms)
            .arg(&key)
            .ignore()
            .query(conn)
    }
}

/// Node's checkCache (spec 4.1 step 5) on a stored JSON: whether a REGISTER from
/// `source:port` at `now_ms` is answered from the cache window.
pub fn node_cache_hit(stored: &str, source: &str, port: u16, now_ms: u64) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(stored) else { return false };
    let proxy_matches = v["proxy"].as_str() == Some(format!("sip:{source}:{port}").as_str());
    let expiry = v["expiryTime"].as_f64().unwrap_or(0.0);
    proxy_matches && (now_ms as f64 + 30_000.0) < expiry
}

/// A Node nonce (spec 4.1 step 7): the last 15 digits of 100 × Unix ms.
pub fn node_nonce(now_ms: u64) -> String {
    let n = (now_ms * 100).to_string();
    n[n.len().saturating_sub(15)..].to_string()
}

/// A phone written by hand over UDP: one socket, one REGISTER at a time, any Authorization.
pub struct RawPhone {
    sock: UdpSocket,
    to: SocketAddr,
}

impl RawPhone {
    pub fn new(ip: &str, to: SocketAddr) -> RawPhone {
        let sock = UdpSocket::bind((ip, 0)).expect("a UDP socket on the loopback address");
        sock.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        RawPhone { sock, to }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("bound")
    }

    /// One REGISTER for `user@realm` (expires 600) and its final response.
    pub fn register(&self, realm: &str, user: &str, cseq: u32, authorization: Option<&str>) -> String {
        let local = self.local();
        let id = uuid::Uuid::new_v4().simple();
        let mut text = format!(
            "REGISTER sip:{realm} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{id}\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@{realm}>;tag=raw{cseq}\r\nTo: <sip:{user}@{realm}>\r\nCall-ID: {id}@raw\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local};transport=udp>;expires=600\r\nExpires: 600\r\n"
        );
        if let Some(a) = authorization {
            text.push_str(&format!("Authorization: {a}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        self.sock.send_to(text.as_bytes(), self.to).expect("send");
        let mut buf = [0u8; 4096];
        loop {
            let (n, _) = self.sock.recv_from(&mut buf).expect("a response within 10 s");
            let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !resp.starts_with("SIP/2.0 1") {
                return resp;
            }
        }
    }
}

/// The status code of a response text.
pub fn status_of(resp: &str) -> u16 {
    resp.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A header of a response text (first one, name case-insensitive).
pub fn header_of<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

/// The Authorization a phone sends for `user`/`password` with `nonce` (digest uri
/// `sip:<realm>`).
pub fn authorization(realm: &str, user: &str, password: &str, nonce: &str) -> String {
    let uri = format!("sip:{realm}");
    let response =
        crate::webhook::digest_response(user, realm, password, "REGISTER", &uri, nonce, "00000001", "4a5b6c7d", "auth");
    format!(
        r#"Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}", algorithm=MD5, cnonce="4a5b6c7d", qop=auth, nc=00000001"#
    )
}

/// The nonce of a 401's `WWW-Authenticate`.
pub fn challenge_nonce(challenge: &str) -> Option<String> {
    let www = header_of(challenge, "WWW-Authenticate")?;
    let start = www.find("nonce=\"")? + 7;
    Some(www[start..start + www[start..].find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_has_the_node_fields_in_order() {
        let b = NodeBinding {
            contact: "sip:a@127.0.0.9:5060",
            sbc_address: "udp/127.0.0.1:5060",
            private_sbc_address: None,
            protocol: Some("udp"),
            proxy: "sip:127.0.0.9:5060",
            call_hook: None,
            call_status_hook: None,
            expiry_time_ms: 5,
        };
        let v: Value = serde_json::from_str(&b.json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let want: Vec<&str> = BINDING_FIELDS.iter().copied().filter(|f| keys.contains(f)).collect();
        assert_eq!(keys, want);
        assert!(!keys.contains(&"privateSbcAddress"));
        assert!(!node_cache_hit(&b.json(), "127.0.0.9", 5060, 0), "expiry 5 ms is past the window");
    }

    #[test]
    fn node_nonces_are_15_digits() {
        assert_eq!(node_nonce(1_575_904_829_380), "157590482938000");
    }
}
