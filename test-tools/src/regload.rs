//! SIP phones and feature-server heartbeats at a steady rate, counting every transaction's final
//! responses: the drain test and `make soak` use it to check that every request sent got exactly
//! one final response.
//!
//! One thread drives everything: [`RegLoad::begin_register`] and [`RegLoad::begin_options`]
//! start transactions, [`RegLoad::pump`] reads what came back, answers challenges (a second
//! transaction with the digest), retransmits over UDP (500 ms doubling, as RFC 3261 timer E) and
//! gives up after the timeout. Phones keep one Call-ID and count their CSeq up, as real phones
//! do, so a transaction is `(Call-ID, CSeq)`. Over TCP, a connection that breaks (drachtio
//! restarted) ends the transactions it carried as `aborted`: a phone resends on a new one.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What each kind of transaction came to.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct KindTally {
    pub sent: u64,
    /// Exactly one final status (retransmitted copies of it excepted).
    pub answered: u64,
    /// No final response within the timeout.
    pub unanswered: u64,
    /// A second, different final response to the same transaction.
    pub conflicting: u64,
    /// TCP only: the connection broke before the answer.
    pub aborted: u64,
    pub statuses: BTreeMap<u16, u64>,
}

/// A `200 OK` to a REGISTER: what the registrar granted, and when.
#[derive(Debug, Clone)]
pub struct Granted {
    /// `register-auth` (a full registration) or `refresh`/`register` (answered from the cache).
    pub kind: &'static str,
    pub aor: String,
    pub expires: u64,
    pub at: Instant,
}

/// One phone: an account user, always registering from the same link.
#[derive(Debug, Clone)]
pub struct Phone {
    pub name: String,
    pub password: String,
    pub link: usize,
    call_id: String,
    cseq: u32,
    /// Got a 200 at least once (later registrations are counted as refreshes).
    pub registered: bool,
}

impl Phone {
    pub fn new(name: &str, password: &str, link: usize) -> Phone {
        Phone {
            name: name.to_string(),
            password: password.to_string(),
            link,
            call_id: format!("{name}-{:08x}", rand::random::<u32>()),
            cseq: 0,
            registered: false,
        }
    }
}

enum LinkIo {
    Udp(UdpSocket),
    Tcp { stream: Option<TcpStream>, buf: Vec<u8>, generation: u64 },
}

struct Link {
    io: LinkIo,
    source: String,
}

struct InFlight {
    kind: &'static str,
    /// Index into `phones`, or `usize::MAX` for a heartbeat.
    phone: usize,
    link: usize,
    started: Instant,
    sent_at: Instant,
    retransmits: u32,
    request: Vec<u8>,
    /// The TCP connection generation the request went out on.
    generation: u64,
}

pub struct RegLoad {
    links: Vec<Link>,
    pub transport: Transport,
    target: SocketAddr,
    realm: String,
    expires: u32,
    timeout: Duration,
    pub phones: Vec<Phone>,
    in_flight: HashMap<(String, u32), InFlight>,
    /// Final status of finished transactions, kept a while to spot a conflicting second one.
    done: HashMap<(String, u32), (u16, Instant)>,
    pub tally: BTreeMap<&'static str, KindTally>,
    /// 200s to REGISTERs not yet taken by [`RegLoad::take_granted`].
    granted: Vec<Granted>,
    branch: u64,
    heartbeat_cseq: u32,
    last_prune: Instant,
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

impl RegLoad {
    /// One link (socket or connection) per source address.
    pub fn new(
        sources: &[&str],
        transport: Transport,
        target: SocketAddr,
        realm: &str,
        expires: u32,
        timeout: Duration,
    ) -> std::io::Result<RegLoad> {
        let mut links = Vec::new();
        for ip in sources {
            let io = match transport {
                Transport::Udp => {
                    let s = UdpSocket::bind((*ip, 0))?;
                    s.set_nonblocking(true)?;
                    LinkIo::Udp(s)
                }
                Transport::Tcp => LinkIo::Tcp { stream: None, buf: Vec::new(), generation: 0 },
            };
            links.push(Link { io, source: ip.to_string() });
        }
        Ok(RegLoad {
            links,
            transport,
            target,
            realm: realm.to_string(),
            expires,
            timeout,
            phones: Vec::new(),
            in_flight: HashMap::new(),
            done: HashMap::new(),
            tally: BTreeMap::new(),
            granted: Vec::new(),
            branch: rand::random::<u32>() as u64,
            heartbeat_cseq: 0,
            last_prune: Instant::now(),
        })
    }

    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Points the links at a new address (the drachtio double restarted on another SIP port).
    pub fn retarget(&mut self, target: SocketAddr) {
        self.target = target;
        for link in &mut self.links {
            if let LinkIo::Tcp { stream, .. } = &mut link.io {
                *stream = None;
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The 200s to REGISTERs since the last call.
    pub fn take_granted(&mut self) -> Vec<Granted> {
        std::mem::take(&mut self.granted)
    }

    fn local(&self, link: usize) -> String {
        match &self.links[link].io {
            LinkIo::Udp(s) => s.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            LinkIo::Tcp { stream: Some(s), .. } => s.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            LinkIo::Tcp { .. } => format!("{}:5060", self.links[link].source),
        }
    }

    fn via(&self) -> &'static str {
        match self.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    fn register_text(&mut self, phone: usize, auth: Option<String>) -> Vec<u8> {
        self.branch += 1;
        let p = &self.phones[phone];
        let local = self.local(p.link);
        let transport_param = if self.transport == Transport::Tcp { ";transport=tcp" } else { "" };
        let mut s = format!(
            "REGISTER sip:{realm} SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK{branch:x};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{name}@{realm}>;tag={call_id}\r\nTo: <sip:{name}@{realm}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{name}@{local}{transport_param}>;expires={expires}\r\n\
             Expires: {expires}\r\nUser-Agent: sbc-regload\r\n",
            realm = self.realm,
            via = self.via(),
            branch = self.branch,
            name = p.name,
            call_id = p.call_id,
            cseq = p.cseq,
            expires = self.expires,
        );
        if let Some(a) = auth {
            s.push_str(&format!("Authorization: {a}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }

    fn authorization(&self, phone: &Phone, challenge: &str) -> Option<String> {
        let nonce = param(challenge, "nonce")?;
        let realm = param(challenge, "realm").unwrap_or_else(|| self.realm.clone());
        let uri = format!("sip:{}", self.realm);
        let cnonce = format!("{:08x}", rand::random::<u32>());
        let ha1 = md5_hex(&format!("{}:{}:{}", phone.name, realm, phone.password));
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        Some(format!(
            "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", \
             algorithm=MD5, cnonce=\"{cnonce}\", qop=auth, nc=00000001",
            phone.name
        ))
    }

    /// Adds a phone; returns its index.
    pub fn add_phone(&mut self, phone: Phone) -> usize {
        self.phones.push(phone);
        self.phones.len() - 1
    }

    /// Whether the phone has a transaction in flight (a phone does one at a time).
    pub fn busy(&self, phone: usize) -> bool {
        let p = &self.phones[phone];
        self.in_flight.contains_key(&(p.call_id.clone(), p.cseq))
    }

    /// Starts a REGISTER from `phone` (no Authorization: a new device is challenged, a
    /// refresh inside the registrar's cache window is not). False when the phone is busy.
    pub fn begin_register(&mut self, phone: usize) -> bool {
        if self.busy(phone) {
            return false;
        }
        self.phones[phone].cseq += 1;
        let kind = if self.phones[phone].registered { "refresh" } else { "register" };
        let request = self.register_text(phone, None);
        let p = &self.phones[phone];
        let key = (p.call_id.clone(), p.cseq);
        let link = p.link;
        self.start(key, kind, phone, link, request);
        true
    }

    /// A feature-server heartbeat (`OPTIONS` with `X-FS-Status: open`) from `link`.
    pub fn begin_options(&mut self, link: usize) {
        self.heartbeat_cseq += 1;
        self.branch += 1;
        let local = self.local(link);
        let call_id = format!("hb-{link}-{:08x}", rand::random::<u32>());
        let request = format!(
            "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK{branch:x};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:fs@{local}>;tag={call_id}\r\nTo: <sip:{target}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} OPTIONS\r\nX-FS-Status: open\r\n\
             X-FS-ServiceUrl: http://{local}/ping\r\nContent-Length: 0\r\n\r\n",
            target = self.target,
            via = self.via(),
            branch = self.branch,
            cseq = self.heartbeat_cseq,
        )
        .into_bytes();
        self.start((call_id, self.heartbeat_cseq), "options", usize::MAX, link, request);
    }

    fn start(&mut self, key: (String, u32), kind: &'static str, phone: usize, link: usize, request: Vec<u8>) {
        self.tally.entry(kind).or_default().sent += 1;
        let Some(generation) = self.send(link, &request) else {
            // TCP: no connection could be opened or written (drachtio is down); a phone
            // learns that at once from its transport.
            self.tally.entry(kind).or_default().aborted += 1;
            return;
        };
        let now = Instant::now();
        self.in_flight.insert(
            key,
            InFlight { kind, phone, link, started: now, sent_at: now, retransmits: 0, request, generation },
        );
    }

    /// Sends on a link; returns the TCP connection generation used (0 for UDP), or `None`
    /// when TCP could not send.
    fn send(&mut self, link: usize, bytes: &[u8]) -> Option<u64> {
        let target = self.target;
        let l = &mut self.links[link];
        match &mut l.io {
            LinkIo::Udp(s) => {
                let _ = s.send_to(bytes, target);
                Some(0)
            }
            LinkIo::Tcp { stream, buf, generation } => {
                if stream.is_none() {
                    if let Ok(s) = connect_from(&l.source, target) {
                        *stream = Some(s);
                        buf.clear();
                        *generation += 1;
                    }
                }
                let s = stream.as_mut()?;
                if write_all_nonblocking(s, bytes).is_ok() {
                    return Some(*generation);
                }
                *stream = None;
                let broken = *generation;
                self.abort_connection(link, broken);
                None
            }
        }
    }

    /// The transactions a broken TCP connection carried end as `aborted`.
    fn abort_connection(&mut self, link: usize, generation: u64) {
        let lost: Vec<(String, u32)> = self
            .in_flight
            .iter()
            .filter(|(_, t)| t.link == link && t.generation == generation)
            .map(|(k, _)| k.clone())
            .collect();
        for key in lost {
            if let Some(t) = self.in_flight.remove(&key) {
                self.tally.entry(t.kind).or_default().aborted += 1;
            }
        }
    }

    /// Reads every answer waiting, retransmits (UDP), expires old transactions.
    pub fn pump(&mut self) -> bool {
        let mut got_any = false;
        let mut messages: Vec<String> = Vec::new();
        let mut broken: Vec<(usize, u64)> = Vec::new();
        let mut buf = vec![0u8; 65536];
        for (i, link) in self.links.iter_mut().enumerate() {
            match &mut link.io {
                LinkIo::Udp(s) => {
                    while let Ok((n, _)) = s.recv_from(&mut buf) {
                        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                }
                LinkIo::Tcp { stream: Some(s), buf: acc, generation } => loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            broken.push((i, *generation));
                            break;
                        }
                        Ok(n) => acc.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => {
                            broken.push((i, *generation));
                            break;
                        }
                    }
                },
                LinkIo::Tcp { .. } => {}
            }
            if let LinkIo::Tcp { buf: acc, .. } = &mut link.io {
                while let Some(end) = find(acc, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&acc[..end + 4]).into_owned();
                    let body = header(&head, "Content-Length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                    if acc.len() < end + 4 + body {
                        break;
                    }
                    acc.drain(..end + 4 + body);
                    messages.push(head);
                }
            }
        }
        for (i, generation) in broken {
            if let LinkIo::Tcp { stream, .. } = &mut self.links[i].io {
                *stream = None;
            }
            self.abort_connection(i, generation);
        }
        for text in messages {
            got_any = true;
            self.on_message(&text);
        }
        self.timers();
        got_any
    }

    fn on_message(&mut self, text: &str) {
        if !text.starts_with("SIP/2.0 ") {
            return;
        }
        let Some(status) = text.get(8..11).and_then(|s| s.parse::<u16>().ok()) else { return };
        if status < 200 {
            return;
        }
        let Some(call_id) = header(text, "Call-ID") else { return };
        let Some(cseq) = header(text, "CSeq").and_then(|c| c.split_whitespace().next()?.parse::<u32>().ok()) else {
            return;
        };
        let key = (call_id, cseq);
        let Some(t) = self.in_flight.remove(&key) else {
            if let Some((first, _)) = self.done.get(&key) {
                if *first != status {
                    // Which kind it was is gone with the transaction; count it on its own.
                    self.tally.entry("conflict").or_default().conflicting += 1;
                }
            }
            return;
        };
        let now = Instant::now();
        self.done.insert(key, (status, now));
        let kt = self.tally.entry(t.kind).or_default();
        kt.answered += 1;
        *kt.statuses.entry(status).or_default() += 1;
        if t.phone == usize::MAX {
            return;
        }
        match status {
            401 if t.kind != "register-auth" => {
                let challenge = header(text, "WWW-Authenticate").unwrap_or_default();
                let Some(auth) = self.authorization(&self.phones[t.phone], &challenge) else { return };
                self.phones[t.phone].cseq += 1;
                let request = self.register_text(t.phone, Some(auth));
                let p = &self.phones[t.phone];
                let key = (p.call_id.clone(), p.cseq);
                self.start(key, "register-auth", t.phone, t.link, request);
            }
            200 => {
                let p = &mut self.phones[t.phone];
                p.registered = true;
                let expires = contact_expires(text).or_else(|| header(text, "Expires")?.parse().ok()).unwrap_or(0);
                self.granted.push(Granted {
                    kind: t.kind,
                    aor: format!("{}@{}", p.name, self.realm),
                    expires,
                    at: now,
                });
            }
            _ => {}
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut resend = Vec::new();
        for (key, t) in self.in_flight.iter_mut() {
            if now.duration_since(t.started) > self.timeout {
                expired.push(key.clone());
            } else if self.transport == Transport::Udp
                && now.duration_since(t.sent_at) > Duration::from_millis(500) * (1 << t.retransmits.min(3))
            {
                t.sent_at = now;
                t.retransmits += 1;
                resend.push((t.link, t.request.clone()));
            }
        }
        for (link, bytes) in resend {
            self.send(link, &bytes);
        }
        for key in expired {
            if let Some(t) = self.in_flight.remove(&key) {
                self.tally.entry(t.kind).or_default().unanswered += 1;
            }
        }
        if now.duration_since(self.last_prune) > Duration::from_secs(10) {
            self.last_prune = now;
            self.done.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(64));
        }
    }

    /// Pumps until nothing is in flight or `limit` has passed.
    pub fn settle(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.in_flight.is_empty() && Instant::now() < until {
            if !self.pump() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// Sums over every kind.
    pub fn totals(&self) -> KindTally {
        let mut t = KindTally::default();
        for k in self.tally.values() {
            t.sent += k.sent;
            t.answered += k.answered;
            t.unanswered += k.unanswered;
            t.conflicting += k.conflicting;
            t.aborted += k.aborted;
        }
        t
    }
}

fn connect_from(source: &str, target: SocketAddr) -> std::io::Result<TcpStream> {
    // std has no bind-before-connect; sources only matter for the registrar's cache key and
    // the daemon sees drachtio's view anyway, so TCP phones share 127.0.0.1 source addresses
    // chosen by the kernel unless the source is 127.0.0.1 itself.
    let _ = source;
    let s = TcpStream::connect_timeout(&target, Duration::from_millis(500))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn write_all_nonblocking(s: &mut TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    let until = Instant::now() + Duration::from_millis(500);
    while !bytes.is_empty() {
        match s.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn header(text: &str, name: &str) -> Option<String> {
    text.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// `expires=` of the Contact of a 200.
fn contact_expires(text: &str) -> Option<u64> {
    let contact = header(text, "Contact")?;
    let at = contact.find("expires=")? + "expires=".len();
    contact[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn param(challenge: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    let start = challenge.find(&key)? + key.len();
    let rest = &challenge[start..];
    if let Some(stripped) = rest.strip_prefix('"') {
        stripped.split('"').next().map(str::to_string)
    } else {
        rest.split([',', ' ']).next().map(str::to_string)
    }
}
