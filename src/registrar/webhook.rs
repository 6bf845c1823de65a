//! The HTTP registration hook contract (spec 4.2): what is sent, how it is signed, and how
//! the answer is read. The HTTP exchange itself is behind [`HookTransport`]
//! (see `hook_transport.rs`), so everything here is tested without a network.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::grant::{AuthVerdict, Denial, Grant};
use crate::sip::digest::DigestCredentials;
use crate::sip::message::canonical_name;
use crate::sip::SipMessage;

/// The `webhooks` row of the account's `registration_hook_sid`.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationHook {
    pub url: String,
    /// `webhooks.method` (ENUM `GET`/`POST`), upper-cased, `POST` when absent.
    pub method: HookMethod,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for RegistrationHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationHook")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookMethod {
    Get,
    Post,
}

impl HookMethod {
    /// Upper-cased `GET` is GET; anything else (including absent) is the default POST.
    pub fn from_column(method: Option<&str>) -> HookMethod {
        match method {
            Some(m) if m.eq_ignore_ascii_case("GET") => HookMethod::Get,
            _ => HookMethod::Post,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HookMethod::Get => "GET",
            HookMethod::Post => "POST",
        }
    }
}

/// One HTTP request to a registration hook.
#[derive(Clone, PartialEq, Eq)]
pub struct HookRequest {
    pub method: HookMethod,
    /// For GET, with the query string appended.
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The JSON body of a POST.
    pub body: Option<String>,
}

/// Leaves out header values and the body: they carry the Basic credentials and the
/// signature.
impl fmt::Debug for HookRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HookRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &names)
            .field("body_len", &self.body.as_ref().map(String::len))
            .finish()
    }
}

/// What came back over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a webhook exchange did not produce a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// No connection: refused, unknown host, TLS failure.
    Connect(String),
    /// No complete answer within the configured timeout.
    Timeout,
    /// The connection broke or the HTTP exchange was not understood.
    Transport(String),
    /// An HTTP status other than 200.
    Status(u16),
    /// A 200 whose body is not a JSON object.
    InvalidJson(String),
    /// A JSON object without a string `status`.
    NoStatus,
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::Connect(e) => write!(f, "registration webhook: cannot connect: {e}"),
            HookError::Timeout => write!(f, "registration webhook: no answer within the timeout"),
            HookError::Transport(e) => write!(f, "registration webhook: HTTP exchange failed: {e}"),
            HookError::Status(s) => write!(f, "registration webhook: answered HTTP {s}"),
            HookError::InvalidJson(e) => write!(f, "registration webhook: answer is not a JSON object: {e}"),
            HookError::NoStatus => write!(f, "registration webhook: answer has no `status` string"),
        }
    }
}

impl std::error::Error for HookError {}

impl HookError {
    /// The SIP status the device gets: the HTTP status itself when it is a valid final SIP
    /// failure status (4xx–6xx), else 500 (network errors, timeouts, bad JSON, 3xx, 2xx ≠ 200).
    pub fn sip_status(&self) -> u16 {
        match self {
            HookError::Status(s) if (400..=699).contains(s) => *s,
            _ => 500,
        }
    }

    /// The webhook could not be reached at all (the `webhook-connection-failure` alert).
    pub fn is_connection_failure(&self) -> bool {
        matches!(self, HookError::Connect(_) | HookError::Timeout | HookError::Transport(_))
    }
}

/// The HTTP client, behind a trait so tests can feed canned answers.
pub trait HookTransport: Send + Sync {
    /// Performs the exchange. Only `Connect`, `Timeout` and `Transport` errors come from here;
    /// any HTTP status is a response.
    fn send(&self, request: &HookRequest) -> Result<HookResponse, HookError>;
}

/// The payload object (spec 4.2), fields in this order: `source_address`, `source_port`,
/// `method`, `headers` (POST only), `expires`, then the parsed Authorization fields.
pub fn payload(
    source_address: &str,
    source_port: u16,
    request: &SipMessage,
    method: HookMethod,
    expires: u32,
    credentials: &DigestCredentials,
) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("source_address".into(), source_address.into());
    data.insert("source_port".into(), source_port.into());
    data.insert("method".into(), "REGISTER".into());
    if method == HookMethod::Post {
        data.insert("headers".into(), Value::Object(request_headers(request)));
    }
    data.insert("expires".into(), expires.into());
    for (name, value) in credentials.fields() {
        data.insert(name.into(), value.into());
    }
    data
}

/// All SIP request headers as drachtio-srf exposes them: lower-case full names (compact forms
/// expanded), in order of first appearance, repeated headers joined with `,`.
pub fn request_headers(request: &SipMessage) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    for (name, value) in &request.headers {
        let key = canonical_name(name).to_ascii_lowercase();
        match out.get_mut(&key) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(value);
            }
            _ => {
                out.insert(key, Value::String(value.clone()));
            }
        }
    }
    out
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>`.
pub fn signature(secret: &str, unix_secs: u64, payload: &str) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC key length"));
    mac.update(format!("{unix_secs}.{payload}").as_bytes());
    format!("t={unix_secs},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a GET request's signature covers: the Node code signed `JSON.stringify(null)` for a
/// body-less request, i.e. these six characters. Receivers verify exactly this, so it stays.
pub const GET_SIGNED_PAYLOAD: &str = "\"null\"";

/// `qs.stringify` of a flat object: `key=value&…` in insertion order, keys and values
/// percent-encoded with RFC 3986 unreserved characters left as they are.
pub fn query_string(data: &Map<String, Value>) -> String {
    let mut parts = Vec::with_capacity(data.len());
    for (key, value) in data {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            // Nested values never occur: `headers` is only sent with POST.
            Value::Array(_) | Value::Object(_) => continue,
        };
        parts.push(format!("{}={}", percent_encode(key), percent_encode(&text)));
    }
    parts.join("&")
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds the request: POST with the JSON body, or GET with the payload in the query string;
/// `Content-Type: application/json` on both; Basic auth when the hook has a user name and a
/// password; `Jambonz-Signature` when the account has a webhook secret.
///
/// One conscious fix: the Node code appended `?` even when the URL already had a query,
/// producing a URL no server reads correctly; here `&` joins an existing query.
pub fn build_request(
    hook: &RegistrationHook,
    webhook_secret: Option<&str>,
    payload: &Map<String, Value>,
    unix_secs: u64,
) -> HookRequest {
    let (url, body) = match hook.method {
        HookMethod::Post => (hook.url.clone(), Some(Value::Object(payload.clone()).to_string())),
        HookMethod::Get => {
            let joiner = if hook.url.contains('?') { '&' } else { '?' };
            (format!("{}{joiner}{}", hook.url, query_string(payload)), None)
        }
    };
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if let (Some(user), Some(pass)) = (non_empty(&hook.username), non_empty(&hook.password)) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        headers.push(("Authorization".to_string(), format!("Basic {token}")));
    }
    if let Some(secret) = webhook_secret.filter(|s| !s.is_empty()) {
        let signed = body.as_deref().unwrap_or(GET_SIGNED_PAYLOAD);
        headers.push(("Jambonz-Signature".to_string(), signature(secret, unix_secs, signed)));
    }
    HookRequest { method: hook.method, url, headers, body }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// The URL as it may appear in logs: without user info (`user:pass@`) and without the query,
/// either of which can carry a customer's credentials.
pub fn url_for_logs(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or("");
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => without_query.to_string(),
    }
}

/// Reads the answer: HTTP 200 with a JSON object whose `status` is `ok` (any case) grants,
/// any other `status` denies (with `blacklist` and `headers` if given).
pub fn interpret(response: &HookResponse) -> Result<AuthVerdict, HookError> {
    if response.status != 200 {
        return Err(HookError::Status(response.status));
    }
    let json: Value = serde_json::from_slice(&response.body).map_err(|e| HookError::InvalidJson(e.to_string()))?;
    let Value::Object(json) = json else {
        return Err(HookError::InvalidJson("not an object".into()));
    };
    let Some(status) = json.get("status").and_then(Value::as_str) else {
        return Err(HookError::NoStatus);
    };
    if status.eq_ignore_ascii_case("ok") {
        return Ok(AuthVerdict::Granted(Grant::from_hook_json(&json)));
    }
    Ok(AuthVerdict::Denied(Denial {
        blacklist: json.get("blacklist").and_then(Value::as_bool) == Some(true),
        headers: json.get("headers").and_then(Value::as_object).map(sip_headers).unwrap_or_default(),
    }))
}

/// The webhook's `headers` object as SIP headers. Names that are not SIP tokens and values
/// with line breaks are dropped: a customer's webhook must not be able to inject headers or
/// break the response.
fn sip_headers(obj: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in obj {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
        if name_ok && !value.contains(['\r', '\n']) {
            out.push((name.clone(), value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse_authorization;
    use serde_json::json;

    const AUTH: &str = r#"Digest username="john", realm="jambonz.org", nonce="157590482938000", uri="sip:jambonz.org", response="941658f7cac3f357d4258ae52074c5e7", algorithm=MD5, cnonce="6b8b4567", qop=auth, nc=00000001"#;

    fn register() -> SipMessage {
        let text = format!(
            "REGISTER sip:jambonz.org SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1\r\nv: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\nFrom: <sip:john@jambonz.org>;tag=1\r\nTo: <sip:john@jambonz.org>\r\nCall-ID: c1\r\nCSeq: 2 REGISTER\r\nContact: <sip:john@10.0.0.1:5070>\r\nExpires: 3600\r\nAuthorization: {AUTH}\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse(text.as_bytes()).unwrap()
    }

    fn creds() -> DigestCredentials {
        parse_authorization(AUTH).unwrap()
    }

    fn hook(method: HookMethod, url: &str) -> RegistrationHook {
        RegistrationHook {
            url: url.into(),
            method,
            username: Some("hookuser".into()),
            password: Some("hookpass".into()),
        }
    }

    #[test]
    fn signature_matches_the_spec_vector() {
        assert_eq!(
            signature("foobar", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=3bc13b246f1fa0173efd4a6ef76776addd4e1022965a546cdc3e2e15e51f3980"
        );
    }

    #[test]
    fn post_payload_fields_come_in_contract_order() {
        let p = payload("10.0.0.1", 5070, &register(), HookMethod::Post, 3600, &creds());
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
        assert_eq!(p["source_port"], json!(5070));
        assert_eq!(p["expires"], json!(3600));
        assert_eq!(p["scheme"], json!("digest"));
        let text = Value::Object(p).to_string();
        assert!(
            text.starts_with(
                r#"{"source_address":"10.0.0.1","source_port":5070,"method":"REGISTER","headers":{"via":"#
            ),
            "{text}"
        );
    }

    #[test]
    fn headers_are_lower_case_full_names_with_repeats_joined() {
        let h = request_headers(&register());
        assert_eq!(h["via"], json!("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1,SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2"));
        assert_eq!(h["call-id"], json!("c1"));
        assert_eq!(h.keys().next().map(String::as_str), Some("via"));
        assert!(h.contains_key("authorization"));
    }

    #[test]
    fn get_payload_has_no_headers_and_goes_in_the_query_string() {
        let p = payload("10.0.0.1", 5070, &register(), HookMethod::Get, 60, &creds());
        assert!(!p.contains_key("headers"));
        let r = build_request(&hook(HookMethod::Get, "https://h.example/reg"), Some("s3cret"), &p, 1_700_000_000);
        assert_eq!(r.body, None);
        assert_eq!(
            r.url,
            "https://h.example/reg?source_address=10.0.0.1&source_port=5070&method=REGISTER&expires=60&scheme=digest&username=john&realm=jambonz.org&nonce=157590482938000&uri=sip%3Ajambonz.org&algorithm=MD5&response=941658f7cac3f357d4258ae52074c5e7&qop=auth&nc=00000001&cnonce=6b8b4567"
        );
        let sig = r.headers.iter().find(|(n, _)| n == "Jambonz-Signature").unwrap();
        assert_eq!(sig.1, signature("s3cret", 1_700_000_000, "\"null\""));
    }

    #[test]
    fn get_url_with_a_query_is_joined_with_an_ampersand() {
        let mut p = Map::new();
        p.insert("a".into(), json!("x y/é"));
        let r = build_request(&hook(HookMethod::Get, "https://h/reg?k=1"), None, &p, 0);
        assert_eq!(r.url, "https://h/reg?k=1&a=x%20y%2F%C3%A9");
    }

    #[test]
    fn post_request_is_signed_over_its_exact_body_with_basic_auth() {
        let p = payload("10.0.0.1", 5070, &register(), HookMethod::Post, 3600, &creds());
        let r = build_request(&hook(HookMethod::Post, "http://h/reg"), Some("s3cret"), &p, 1_700_000_001);
        let body = r.body.clone().unwrap();
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), Value::Object(p));
        let header = |name: &str| r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(header("Content-Type"), Some("application/json"));
        assert_eq!(header("Authorization"), Some("Basic aG9va3VzZXI6aG9va3Bhc3M="));
        assert_eq!(header("Jambonz-Signature"), Some(signature("s3cret", 1_700_000_001, &body).as_str()));
        assert!(!format!("{r:?}").contains("aG9va3"));
    }

    #[test]
    fn no_basic_auth_without_both_credentials_and_no_signature_without_secret() {
        let mut h = hook(HookMethod::Post, "http://h/reg");
        h.password = Some(String::new());
        let r = build_request(&h, Some(""), &Map::new(), 0);
        assert_eq!(r.headers, vec![("Content-Type".to_string(), "application/json".to_string())]);
    }

    fn answer(status: u16, body: &str) -> Result<AuthVerdict, HookError> {
        interpret(&HookResponse { status, body: body.as_bytes().to_vec() })
    }

    #[test]
    fn urls_in_logs_lose_credentials_and_query() {
        assert_eq!(url_for_logs("https://u:p@h.example:8443/reg?token=x#f"), "https://h.example:8443/reg");
        assert_eq!(url_for_logs("http://h/reg"), "http://h/reg");
        assert_eq!(url_for_logs("http://h?x=1"), "http://h");
        assert_eq!(url_for_logs("not a url?x"), "not a url");
    }

    #[test]
    fn ok_in_any_case_grants() {
        let Ok(AuthVerdict::Granted(g)) = answer(200, r#"{"status":"OK","expires":120}"#) else { panic!() };
        assert_eq!(g.expires, Some(120));
    }

    #[test]
    fn other_status_denies_with_blacklist_and_headers() {
        assert_eq!(answer(200, r#"{"status":"fail","msg":"nope"}"#), Ok(AuthVerdict::Denied(Denial::default())));
        let v = answer(
            200,
            r#"{"status":"fail","blacklist":true,"headers":{"X-Why":"spam","X-N":3,"Bad Name":"x","X-Inj":"a\r\nB: c"}}"#,
        );
        assert_eq!(
            v,
            Ok(AuthVerdict::Denied(Denial {
                blacklist: true,
                headers: vec![("X-Why".into(), "spam".into()), ("X-N".into(), "3".into())]
            }))
        );
    }

    #[test]
    fn http_and_json_failures_map_to_sip_statuses() {
        assert_eq!(answer(404, "").unwrap_err().sip_status(), 404);
        assert_eq!(answer(503, "{}").unwrap_err().sip_status(), 503);
        assert_eq!(answer(302, "").unwrap_err().sip_status(), 500);
        assert_eq!(answer(201, r#"{"status":"ok"}"#).unwrap_err().sip_status(), 500);
        assert_eq!(answer(200, "<html>").unwrap_err().sip_status(), 500);
        assert_eq!(answer(200, "[1]").unwrap_err().sip_status(), 500);
        assert_eq!(answer(200, r#"{"expires":60}"#), Err(HookError::NoStatus));
        assert_eq!(answer(200, r#"{"status":1}"#), Err(HookError::NoStatus));
        assert_eq!(HookError::Timeout.sip_status(), 500);
        assert!(HookError::Connect("refused".into()).is_connection_failure());
        assert!(!HookError::Status(404).is_connection_failure());
    }
}
