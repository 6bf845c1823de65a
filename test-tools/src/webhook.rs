//! A real HTTP/1.1 registration webhook for the tests, written with `std::net`.
//!
//! It listens on 127.0.0.1:0, records every request (method, path and query, headers, body)
//! and answers like the jambonz reference webhook: it reads the payload (JSON body of a POST,
//! query string of a GET), computes the digest response itself from the payload fields with
//! the password it knows for `username`, and answers `{"status":"ok",…}` or
//! `{"status":"fail"}`. Tests can instead program a fixed status and body, add fields to the
//! ok/fail answers, and delay every answer.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use md5::{Digest, Md5};
use serde_json::{Map, Value};

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as on the request line.
    pub target: String,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target.as_str(), |(p, _)| p)
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The query string decoded into ordered pairs.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// The registration payload: the JSON body of a POST, or the query of a GET (values as
    /// strings).
    pub fn payload(&self) -> Map<String, Value> {
        if self.method == "GET" {
            self.query_pairs().into_iter().map(|(k, v)| (k, Value::String(v))).collect()
        } else {
            match serde_json::from_str::<Value>(&self.body) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            }
        }
    }
}

/// How the server answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The reference webhook: verify the digest with the known passwords.
    VerifyDigest,
    /// Always this status and body (`Content-Type: application/json`).
    Fixed { status: u16, body: String },
}

struct State {
    requests: Vec<RecordedRequest>,
    answer: Answer,
    delay: Duration,
    passwords: HashMap<String, String>,
    ok_fields: Map<String, Value>,
    fail_fields: Map<String, Value>,
    keep_alive: bool,
    /// TCP connections accepted so far.
    connections: usize,
}

pub struct WebhookServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl WebhookServer {
    pub fn start() -> WebhookServer {
        WebhookServer::start_at("127.0.0.1:0".parse().expect("an address")).expect("bind webhook listener")
    }

    /// Listens on `addr` (e.g. the address of a server stopped a moment ago, to restart it).
    pub fn start_at(addr: SocketAddr) -> std::io::Result<WebhookServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            answer: Answer::VerifyDigest,
            delay: Duration::ZERO,
            passwords: HashMap::new(),
            ok_fields: Map::new(),
            fail_fields: Map::new(),
            keep_alive: false,
            connections: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::Builder::new().name("test-webhook".into()).spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    state.lock().unwrap().connections += 1;
                    let state = state.clone();
                    // One thread per connection: a delayed answer must not hold up others.
                    let _ =
                        thread::Builder::new().name("test-webhook-conn".into()).spawn(move || serve(stream, &state));
                }
            })?
        };
        Ok(WebhookServer { addr, state, stop, acceptor: Some(acceptor) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_password(&self, username: &str, password: &str) {
        self.state.lock().unwrap().passwords.insert(username.to_string(), password.to_string());
    }

    /// Fields added to every `{"status":"ok"}` answer (e.g. `expires`, `call_hook`).
    pub fn ok_fields(&self, fields: Value) {
        self.state.lock().unwrap().ok_fields = fields.as_object().cloned().unwrap_or_default();
    }

    /// Fields added to every `{"status":"fail"}` answer (e.g. `blacklist`, `headers`).
    pub fn fail_fields(&self, fields: Value) {
        self.state.lock().unwrap().fail_fields = fields.as_object().cloned().unwrap_or_default();
    }

    pub fn answer(&self, answer: Answer) {
        self.state.lock().unwrap().answer = answer;
    }

    pub fn fixed(&self, status: u16, body: &str) {
        self.answer(Answer::Fixed { status, body: body.to_string() });
    }

    /// Keep connections open between requests (as most production webhooks do), instead of
    /// `Connection: close` after every answer.
    pub fn keep_alive(&self, on: bool) {
        self.state.lock().unwrap().keep_alive = on;
    }

    pub fn delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// TCP connections the server has accepted (a client reusing connections opens few).
    pub fn connection_count(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    // With keep-alive, answer requests on this connection until the client closes it.
    loop {
        let Some(request) = read_request(&mut reader) else { return };
        let (answer, delay, verdict, keep_alive) = {
            let mut s = state.lock().unwrap();
            s.requests.push(request.clone());
            let verdict = reference_verdict(&s, &request);
            (s.answer.clone(), s.delay, verdict, s.keep_alive)
        };
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        let (status, body) = match answer {
            Answer::VerifyDigest => (200, verdict.to_string()),
            Answer::Fixed { status, body } => (status, body),
        };
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
            reason(status),
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() || writer.flush().is_err() || !keep_alive {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<RecordedRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(RecordedRequest { method, target, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// What the reference webhook answers: ok when the digest in the payload matches the known
/// password of `username`.
fn reference_verdict(state: &State, request: &RecordedRequest) -> Value {
    let p = request.payload();
    let field = |name: &str| p.get(name).and_then(Value::as_str).unwrap_or("").to_string();
    let ok = state.passwords.get(&field("username")).is_some_and(|password| {
        digest_response(
            &field("username"),
            &field("realm"),
            password,
            "REGISTER",
            &field("uri"),
            &field("nonce"),
            &field("nc"),
            &field("cnonce"),
            &field("qop"),
        ) == field("response")
    });
    let mut answer = Map::new();
    answer.insert("status".into(), Value::from(if ok { "ok" } else { "fail" }));
    let extra = if ok { &state.ok_fields } else { &state.fail_fields };
    for (k, v) in extra {
        answer.insert(k.clone(), v.clone());
    }
    Value::Object(answer)
}

/// RFC 2617 digest, computed here independently of the crate under test:
/// `MD5(HA1:nonce[:nc:cnonce][:qop]:HA2)`.
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
) -> String {
    let md5 = |s: String| hex::encode(Md5::digest(s.as_bytes()));
    let ha1 = md5(format!("{username}:{realm}:{password}"));
    let ha2 = md5(format!("{method}:{uri}"));
    let mut parts = vec![ha1, nonce.to_string()];
    if !cnonce.is_empty() {
        parts.push(nc.to_string());
        parts.push(cnonce.to_string());
    }
    if !qop.is_empty() {
        parts.push(qop.to_string());
    }
    parts.push(ha2);
    md5(parts.join(":"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[test]
fn digest_matches_the_spec_vector() {
    assert_eq!(
        digest_response(
            "john",
            "jambonz.org",
            "1234",
            "REGISTER",
            "sip:jambonz.org",
            "157590482938000",
            "00000001",
            "6b8b4567",
            "auth"
        ),
        "941658f7cac3f357d4258ae52074c5e7"
    );
}
