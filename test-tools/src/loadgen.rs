//! A REGISTER load generator over UDP for the benchmark: many users, either a window of
//! transactions in flight (saturation) or new registrations at a fixed offered rate (what
//! operators run), digest answers computed locally. One thread, non-blocking sockets on several
//! 127.0.0.x source addresses, so it can outrun the daemon on a small machine.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// One simulated device.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    /// Index of the source socket this user always registers from (the cache keys on ip:port).
    pub socket: usize,
}

#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Registrations that ended in 200.
    pub ok: u64,
    /// Registrations that ended in anything else, or timed out.
    pub failed: u64,
    /// SIP transactions sent (a challenged registration counts two).
    pub transactions: u64,
    pub elapsed: Duration,
    /// Latency of each successful registration (first send to the 200).
    pub latencies: Vec<Duration>,
    pub statuses: HashMap<u16, u64>,
    /// When the first and the last 200 arrived, from the start of the run.
    pub first_ok: Option<Duration>,
    pub last_ok: Option<Duration>,
}

impl LoadResult {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.latencies.clone();
        v.sort();
        let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[idx.min(v.len() - 1)]
    }

    /// Registrations completed per second, from the first 200 to the last: the rate the
    /// daemon kept up with. (Dividing by the whole run would count the last registrations'
    /// latency as lost throughput: 4,000 registrations offered over 10 s through a 500 ms
    /// webhook end at 10.5 s.)
    pub fn per_second(&self) -> f64 {
        match (self.first_ok, self.last_ok) {
            (Some(first), Some(last)) if self.ok > 1 && last > first => {
                (self.ok - 1) as f64 / (last - first).as_secs_f64()
            }
            _ => self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9),
        }
    }
}

/// How new registrations are started.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the daemon answers, with this many transactions in flight.
    Window(usize),
    /// `per_second` new registrations every second (open loop: a slow answer does not slow
    /// the offered rate), with at most `max_in_flight` outstanding.
    Rate { per_second: f64, max_in_flight: usize },
}

struct InFlight {
    user: usize,
    started: Instant,
    sent_at: Instant,
    cseq: u32,
    call_id: String,
    retransmits: u32,
    request: Vec<u8>,
}

pub struct LoadGen {
    sockets: Vec<UdpSocket>,
    target: SocketAddr,
    realm: String,
    expires: u32,
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

impl LoadGen {
    /// Binds one socket per source address (port 0).
    pub fn new(sources: &[&str], target: SocketAddr, realm: &str, expires: u32) -> std::io::Result<LoadGen> {
        let mut sockets = Vec::new();
        for ip in sources {
            let s = UdpSocket::bind((*ip, 0))?;
            s.set_nonblocking(true)?;
            sockets.push(s);
        }
        Ok(LoadGen { sockets, target, realm: realm.to_string(), expires })
    }

    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    fn build(&self, user: &User, call_id: &str, cseq: u32, branch: u64, auth: Option<String>) -> Vec<u8> {
        let local = self.sockets[user.socket].local_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut s = format!(
            "REGISTER sip:{realm} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch:x};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{name}@{realm}>;tag={call_id}\r\nTo: <sip:{name}@{realm}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{name}@{local}>;expires={expires}\r\n\
             Expires: {expires}\r\nUser-Agent: sbc-bench\r\n",
            realm = self.realm,
            name = user.name,
            expires = self.expires,
        );
        if let Some(a) = auth {
            s.push_str(&format!("Authorization: {a}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }

    fn authorization(&self, user: &User, challenge: &str) -> Option<String> {
        let nonce = param(challenge, "nonce")?;
        let realm = param(challenge, "realm").unwrap_or_else(|| self.realm.clone());
        let uri = format!("sip:{}", self.realm);
        let cnonce = format!("{:08x}", rand::random::<u32>());
        let ha1 = md5_hex(&format!("{}:{}:{}", user.name, realm, user.password));
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        Some(format!(
            "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, cnonce=\"{cnonce}\", qop=auth, nc=00000001",
            user.name
        ))
    }

    /// Registers every user once, paced by `pace`. Gives up on a transaction after `timeout` (a
    /// few retransmissions at 500 ms in between).
    pub fn run(&self, users: &[User], pace: Pace, timeout: Duration, deadline: Duration) -> LoadResult {
        let mut result = LoadResult::default();
        let mut in_flight: HashMap<String, InFlight> = HashMap::new();
        let mut next_user = 0usize;
        let mut branch: u64 = rand::random::<u32>() as u64;
        let started = Instant::now();
        let mut buf = vec![0u8; 65536];
        let retransmit_after = Duration::from_millis(500);
        while (next_user < users.len() || !in_flight.is_empty()) && started.elapsed() < deadline {
            loop {
                let may_start = match pace {
                    Pace::Window(window) => in_flight.len() < window,
                    Pace::Rate { per_second, max_in_flight } => {
                        in_flight.len() < max_in_flight
                            && started.elapsed().as_secs_f64() * per_second >= next_user as f64
                    }
                };
                if next_user >= users.len() || !may_start {
                    break;
                }
                let user = &users[next_user];
                let call_id = format!("bench-{next_user}-{:x}", rand::random::<u32>());
                branch += 1;
                let req = self.build(user, &call_id, 1, branch, None);
                let _ = self.sockets[user.socket].send_to(&req, self.target);
                result.transactions += 1;
                let now = Instant::now();
                in_flight.insert(
                    call_id.clone(),
                    InFlight {
                        user: next_user,
                        started: now,
                        sent_at: now,
                        cseq: 1,
                        call_id,
                        retransmits: 0,
                        request: req,
                    },
                );
                next_user += 1;
            }
            let mut got_any = false;
            for sock in &self.sockets {
                while let Ok((n, _)) = sock.recv_from(&mut buf) {
                    got_any = true;
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let Some(status) = text.get(8..11).and_then(|s| s.parse::<u16>().ok()) else { continue };
                    let Some(call_id) = header(&text, "Call-ID") else { continue };
                    let Some(mut tx) = in_flight.remove(&call_id) else { continue };
                    let cseq_ok = header(&text, "CSeq")
                        .and_then(|c| c.split_whitespace().next().and_then(|n| n.parse::<u32>().ok()))
                        == Some(tx.cseq);
                    if !cseq_ok {
                        in_flight.insert(call_id, tx);
                        continue;
                    }
                    match status {
                        401 if tx.cseq == 1 => {
                            let user = &users[tx.user];
                            let auth = header(&text, "WWW-Authenticate").and_then(|c| self.authorization(user, &c));
                            let Some(auth) = auth else {
                                result.failed += 1;
                                continue;
                            };
                            branch += 1;
                            tx.cseq = 2;
                            tx.request = self.build(user, &tx.call_id, 2, branch, Some(auth));
                            tx.sent_at = Instant::now();
                            tx.retransmits = 0;
                            let _ = self.sockets[user.socket].send_to(&tx.request, self.target);
                            result.transactions += 1;
                            in_flight.insert(call_id, tx);
                        }
                        s if s >= 200 => {
                            *result.statuses.entry(s).or_default() += 1;
                            if s == 200 {
                                result.ok += 1;
                                result.latencies.push(tx.started.elapsed());
                                result.first_ok.get_or_insert(started.elapsed());
                                result.last_ok = Some(started.elapsed());
                            } else {
                                result.failed += 1;
                            }
                        }
                        _ => {
                            in_flight.insert(call_id, tx);
                        }
                    }
                }
            }
            let now = Instant::now();
            let mut expired = Vec::new();
            for (id, tx) in in_flight.iter_mut() {
                if now.duration_since(tx.started) > timeout {
                    expired.push(id.clone());
                } else if now.duration_since(tx.sent_at) > retransmit_after * (1 << tx.retransmits.min(3)) {
                    let _ = self.sockets[users[tx.user].socket].send_to(&tx.request, self.target);
                    tx.sent_at = now;
                    tx.retransmits += 1;
                }
            }
            for id in expired {
                in_flight.remove(&id);
                result.failed += 1;
                *result.statuses.entry(408).or_default() += 1;
            }
            if !got_any {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        result.failed += in_flight.len() as u64;
        result.elapsed = started.elapsed();
        result
    }
}

fn header(text: &str, name: &str) -> Option<String> {
    text.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
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
