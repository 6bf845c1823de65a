//! A small synchronous DNS client for the ephemeral gateways of registration trunks (spec 6.6):
//! SRV and A queries over UDP to the servers of `/etc/resolv.conf`, each exchange bounded by a
//! timeout. Packets are built and parsed with `simple-dns`; there is no resolver runtime and
//! no cache (a few lookups per registration refresh).
//!
//! A truncated (TC) answer is asked again over TCP from the same server (RFC 7766): a carrier
//! with many SRV targets easily exceeds what fits in a UDP answer. When the TCP exchange fails,
//! the truncated answer is used as far as it goes.
//!
//! Not handled: `search`/`ndots` are ignored (gateway names are used as given), no IPv6 (AAAA).

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, RCODE, TYPE};

/// Longest wait per server and attempt, whatever resolv.conf says (glibc's default is 5 s):
/// lookups run on the regbot store thread and must not hold it long.
const MAX_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_ATTEMPTS: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    pub servers: Vec<SocketAddr>,
    /// Per server and attempt.
    pub timeout: Duration,
    pub attempts: u32,
}

impl DnsSettings {
    /// Reads `nameserver` and `options timeout:/attempts:` from a resolv.conf; without any
    /// nameserver, `127.0.0.1` as glibc does.
    pub fn from_resolv_conf(path: &Path) -> DnsSettings {
        Self::parse_resolv_conf(&std::fs::read_to_string(path).unwrap_or_default())
    }

    pub fn parse_resolv_conf(text: &str) -> DnsSettings {
        let mut servers = Vec::new();
        let mut timeout = MAX_TIMEOUT;
        let mut attempts = MAX_ATTEMPTS;
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A scoped IPv6 address (`fe80::1%eth0`) cannot be parsed by std; skip it.
                    if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                        servers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("options") => {
                    for opt in words {
                        if let Some(n) = opt.strip_prefix("timeout:").and_then(|n| n.parse::<u64>().ok()) {
                            timeout = Duration::from_secs(n.max(1)).min(MAX_TIMEOUT);
                        } else if let Some(n) = opt.strip_prefix("attempts:").and_then(|n| n.parse::<u32>().ok()) {
                            attempts = n.clamp(1, MAX_ATTEMPTS);
                        }
                    }
                }
                _ => {}
            }
        }
        if servers.is_empty() {
            servers.push(SocketAddr::from((Ipv4Addr::LOCALHOST, 53)));
        }
        DnsSettings { servers, timeout, attempts }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name cannot be put in a query.
    BadName(String),
    /// No server answered in time.
    Timeout(String),
    /// The server answered with an error code other than NXDOMAIN.
    ServerError(String),
    /// The answer could not be parsed.
    BadResponse(String),
    Io(String),
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::BadName(n) => write!(f, "invalid DNS name {n:?}"),
            DnsError::Timeout(n) => write!(f, "no DNS answer for {n}"),
            DnsError::ServerError(e) => write!(f, "DNS server error: {e}"),
            DnsError::BadResponse(e) => write!(f, "unreadable DNS answer: {e}"),
            DnsError::Io(e) => write!(f, "DNS socket error: {e}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// Answers of an SRV query: the records (sorted by priority, then weight descending) and any
/// A records the server added for the targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrvAnswer {
    pub records: Vec<SrvRecord>,
    pub additional_a: Vec<(String, Ipv4Addr)>,
}

pub struct Resolver {
    settings: DnsSettings,
}

impl Resolver {
    pub fn new(settings: DnsSettings) -> Resolver {
        Resolver { settings }
    }

    /// A records of `name` (CNAMEs followed by the server); NXDOMAIN or no data is empty.
    pub fn lookup_a(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        let (id, query) = new_query(name, TYPE::A)?;
        let answer = self.exchange(name, id, &query)?;
        parse_a(&answer, id)
    }

    pub fn lookup_srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
        let (id, query) = new_query(name, TYPE::SRV)?;
        let answer = self.exchange(name, id, &query)?;
        parse_srv(&answer, id)
    }

    /// Tries every server, `attempts` rounds, until one answers the query with our id.
    fn exchange(&self, name: &str, id: u16, query: &[u8]) -> Result<Vec<u8>, DnsError> {
        let mut last_error = DnsError::Timeout(name.to_string());
        for _ in 0..self.settings.attempts.max(1) {
            for server in &self.settings.servers {
                match exchange_with(*server, id, query, self.settings.timeout) {
                    Ok(Some(answer)) if is_truncated(&answer) => {
                        return Ok(exchange_tcp(*server, id, query, self.settings.timeout).unwrap_or(answer));
                    }
                    Ok(Some(answer)) => return Ok(answer),
                    Ok(None) => last_error = DnsError::Timeout(name.to_string()),
                    Err(e) => last_error = e,
                }
            }
        }
        Err(last_error)
    }
}

/// One query to one server; `None` on timeout. Packets from elsewhere or with another id are
/// ignored (a late answer to an earlier query, or spoofing).
fn exchange_with(server: SocketAddr, id: u16, query: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>, DnsError> {
    let io = |e: std::io::Error| DnsError::Io(e.to_string());
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(io)?;
    socket.send_to(query, server).map_err(io)?;
    let deadline = super::timing::after(Instant::now(), timeout);
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left)).map_err(io)?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == server && n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                return Ok(Some(buf[..n].to_vec()));
            }
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            // ICMP port unreachable surfaces as ConnectionRefused on some systems: next server.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
            Err(e) => return Err(io(e)),
        }
    }
}

/// The TC flag: the server had more than fits in a UDP answer.
fn is_truncated(answer: &[u8]) -> bool {
    answer.len() > 2 && answer[2] & 0x02 != 0
}

/// The largest answer accepted over TCP (the protocol's limit is 65535).
const MAX_TCP_ANSWER: usize = 65535;

/// One query over TCP: each message is preceded by its length in two bytes (RFC 1035 4.2.2).
/// Connect, write and read all end by `timeout`.
fn exchange_tcp(server: SocketAddr, id: u16, query: &[u8], timeout: Duration) -> Result<Vec<u8>, DnsError> {
    let io = |e: std::io::Error| DnsError::Io(e.to_string());
    let deadline = super::timing::after(Instant::now(), timeout);
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(DnsError::Timeout(format!("TCP answer from {server}")))
        } else {
            Ok(d)
        }
    };
    let mut stream = TcpStream::connect_timeout(&server, left()?).map_err(io)?;
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    let len = u16::try_from(query.len()).map_err(|_| DnsError::BadName("query too long".into()))?;
    let mut message = Vec::with_capacity(query.len() + 2);
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(query);
    stream.write_all(&message).map_err(io)?;
    let mut read_exact = |buf: &mut [u8]| -> Result<(), DnsError> {
        let mut filled = 0;
        while filled < buf.len() {
            stream.set_read_timeout(Some(left()?)).map_err(io)?;
            match stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(DnsError::BadResponse(format!("{server} closed the TCP connection"))),
                Ok(n) => filled += n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(DnsError::Timeout(format!("TCP answer from {server}")))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    };
    let mut len = [0u8; 2];
    read_exact(&mut len)?;
    let len = usize::from(u16::from_be_bytes(len)).min(MAX_TCP_ANSWER);
    let mut answer = vec![0u8; len];
    read_exact(&mut answer)?;
    if answer.len() < 2 || u16::from_be_bytes([answer[0], answer[1]]) != id {
        return Err(DnsError::BadResponse(format!("TCP answer from {server} is not for our query")));
    }
    Ok(answer)
}

fn new_query(name: &str, qtype: TYPE) -> Result<(u16, Vec<u8>), DnsError> {
    let id: u16 = rand::thread_rng().gen();
    Ok((id, build_query(id, name, qtype)?))
}

/// A recursive query for one name and type.
pub fn build_query(id: u16, name: &str, qtype: TYPE) -> Result<Vec<u8>, DnsError> {
    let bad = || DnsError::BadName(name.to_string());
    let qname = Name::new(name.trim_end_matches('.')).map_err(|_| bad())?;
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(qname, qtype.into(), CLASS::IN.into(), false));
    packet.build_bytes_vec().map_err(|_| bad())
}

/// Parses an answer and checks it is a response to `id`; NXDOMAIN is an empty answer.
fn parse_answer(bytes: &[u8], id: u16) -> Result<Option<Packet<'_>>, DnsError> {
    let packet = Packet::parse(bytes).map_err(|e| DnsError::BadResponse(e.to_string()))?;
    if packet.id() != id || !packet.has_flags(PacketFlag::RESPONSE) {
        return Err(DnsError::BadResponse("not an answer to our query".into()));
    }
    match packet.rcode() {
        RCODE::NoError => Ok(Some(packet)),
        RCODE::NameError => Ok(None),
        other => Err(DnsError::ServerError(format!("{other:?}"))),
    }
}

pub fn parse_a(bytes: &[u8], id: u16) -> Result<Vec<Ipv4Addr>, DnsError> {
    let Some(packet) = parse_answer(bytes, id)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for rr in &packet.answers {
        if let RData::A(a) = &rr.rdata {
            let ip = Ipv4Addr::from(a.address);
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

pub fn parse_srv(bytes: &[u8], id: u16) -> Result<SrvAnswer, DnsError> {
    let Some(packet) = parse_answer(bytes, id)? else {
        return Ok(SrvAnswer::default());
    };
    let mut answer = SrvAnswer::default();
    for rr in &packet.answers {
        if let RData::SRV(srv) = &rr.rdata {
            let target = srv.target.to_string();
            // RFC 2782: a target of "." means the service is not available here.
            if target.is_empty() || target == "." {
                continue;
            }
            answer.records.push(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: target.trim_end_matches('.').to_string(),
            });
        }
    }
    for rr in &packet.additional_records {
        if let RData::A(a) = &rr.rdata {
            answer
                .additional_a
                .push((rr.name.to_string().trim_end_matches('.').to_string(), Ipv4Addr::from(a.address)));
        }
    }
    answer.records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    Ok(answer)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::thread;

    use simple_dns::rdata::{A, SRV};
    use simple_dns::ResourceRecord;

    use super::*;

    /// Builds the answer a DNS server would send for `query` with these records.
    pub(crate) fn answer_for(query: &[u8], answers: &[(&str, RData<'static>)], rcode: RCODE) -> Vec<u8> {
        let q = Packet::parse(query).unwrap();
        let mut reply = Packet::new_reply(q.id());
        *reply.rcode_mut() = rcode;
        for question in &q.questions {
            reply.questions.push(question.clone());
        }
        for (name, rdata) in answers {
            reply.answers.push(ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, 60, rdata.clone()));
        }
        reply.build_bytes_vec().unwrap()
    }

    #[test]
    fn queries_are_recursive_and_carry_one_question() {
        let bytes = build_query(0x1234, "_sip._udp.carrier.example", TYPE::SRV).unwrap();
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert!(p.has_flags(PacketFlag::RECURSION_DESIRED));
        assert!(!p.has_flags(PacketFlag::RESPONSE));
        assert_eq!(p.questions.len(), 1);
        assert_eq!(p.questions[0].qname.to_string(), "_sip._udp.carrier.example");
        assert_eq!(p.questions[0].qtype, TYPE::SRV.into());
        let long_label = format!("{}.example", "x".repeat(64));
        assert!(build_query(1, &long_label, TYPE::A).is_err(), "labels are at most 63 bytes");
    }

    #[test]
    fn a_and_srv_answers_are_parsed_sorted_and_checked() {
        let q = build_query(7, "carrier.example", TYPE::A).unwrap();
        let a = answer_for(
            &q,
            &[
                ("carrier.example", RData::A(A { address: u32::from(Ipv4Addr::new(192, 0, 2, 1)) })),
                ("carrier.example", RData::A(A { address: u32::from(Ipv4Addr::new(192, 0, 2, 2)) })),
            ],
            RCODE::NoError,
        );
        assert_eq!(parse_a(&a, 7).unwrap(), vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]);
        assert!(parse_a(&a, 8).is_err(), "another id is not our answer");
        assert_eq!(parse_a(&answer_for(&q, &[], RCODE::NameError), 7).unwrap(), Vec::<Ipv4Addr>::new());
        assert!(matches!(parse_a(&answer_for(&q, &[], RCODE::ServerFailure), 7), Err(DnsError::ServerError(_))));

        let q = build_query(9, "_sip._udp.carrier.example", TYPE::SRV).unwrap();
        let srv = |priority, weight, port, target: &'static str| {
            RData::SRV(SRV { priority, weight, port, target: Name::new_unchecked(target) })
        };
        let s = answer_for(
            &q,
            &[
                ("_sip._udp.carrier.example", srv(20, 0, 5060, "b.carrier.example")),
                ("_sip._udp.carrier.example", srv(10, 5, 5070, "a.carrier.example")),
                ("_sip._udp.carrier.example", srv(10, 50, 5080, "c.carrier.example")),
            ],
            RCODE::NoError,
        );
        let parsed = parse_srv(&s, 9).unwrap();
        let order: Vec<&str> = parsed.records.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(order, vec!["c.carrier.example", "a.carrier.example", "b.carrier.example"]);
        assert_eq!(parsed.records[0].port, 5080);
    }

    #[test]
    fn resolv_conf_is_read_with_bounded_timeouts() {
        let s = DnsSettings::parse_resolv_conf(
            "# comment\nsearch example\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver ::1\noptions timeout:9 attempts:5 rotate\n",
        );
        assert_eq!(s.servers, vec!["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!(s.timeout, MAX_TIMEOUT);
        assert_eq!(s.attempts, MAX_ATTEMPTS);
        let s = DnsSettings::parse_resolv_conf("options timeout:1 attempts:1");
        assert_eq!(s.servers, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!((s.timeout, s.attempts), (Duration::from_secs(1), 1));
    }

    #[test]
    fn a_lookup_over_udp_and_a_timeout_from_a_silent_server() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            // A stray packet with the wrong id first: must be ignored.
            let mut stray = answer_for(&buf[..n], &[], RCODE::NoError);
            stray[0] ^= 0xff;
            server.send_to(&stray, from).unwrap();
            let reply = answer_for(
                &buf[..n],
                &[("gw.example", RData::A(A { address: u32::from(Ipv4Addr::new(127, 0, 0, 9)) }))],
                RCODE::NoError,
            );
            server.send_to(&reply, from).unwrap();
        });
        let resolver = Resolver::new(DnsSettings { servers: vec![addr], timeout: Duration::from_secs(2), attempts: 1 });
        assert_eq!(resolver.lookup_a("gw.example").unwrap(), vec![Ipv4Addr::new(127, 0, 0, 9)]);
        handle.join().unwrap();

        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let resolver = Resolver::new(DnsSettings {
            servers: vec![silent.local_addr().unwrap()],
            timeout: Duration::from_millis(200),
            attempts: 2,
        });
        let started = Instant::now();
        assert!(matches!(resolver.lookup_a("gw.example"), Err(DnsError::Timeout(_))));
        assert!(started.elapsed() < Duration::from_secs(2), "bounded by timeout × attempts");
    }

    /// Serves one SRV query over UDP with the TC flag and only the first record, and (when
    /// `tcp` is given, on the same port) the whole answer over TCP.
    fn truncating_server(tcp: bool) -> (SocketAddr, thread::JoinHandle<()>) {
        let (udp, listener) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            if !tcp {
                break (udp, None);
            }
            if let Ok(l) = std::net::TcpListener::bind(udp.local_addr().unwrap()) {
                break (udp, Some(l));
            }
        };
        let addr = udp.local_addr().unwrap();
        let records: Vec<(&str, RData<'static>)> = (0..3u16)
            .map(|i| {
                let target = ["a.carrier.example", "b.carrier.example", "c.carrier.example"][usize::from(i)];
                let srv = SRV { priority: 10 + i, weight: 0, port: 5060, target: Name::new_unchecked(target) };
                ("_sip._udp.carrier.example", RData::SRV(srv))
            })
            .collect();
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = udp.recv_from(&mut buf).unwrap();
            let mut truncated = answer_for(&buf[..n], &records[..1], RCODE::NoError);
            truncated[2] |= 0x02;
            udp.send_to(&truncated, from).unwrap();
            let Some(listener) = listener else { return };
            let (mut conn, _) = listener.accept().unwrap();
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).unwrap();
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut query).unwrap();
            let full = answer_for(&query, &records, RCODE::NoError);
            // Written in two pieces: the reader must not expect one read per message.
            let mut message = (full.len() as u16).to_be_bytes().to_vec();
            message.extend_from_slice(&full);
            let (first, rest) = message.split_at(5);
            conn.write_all(first).unwrap();
            conn.flush().unwrap();
            thread::sleep(Duration::from_millis(20));
            conn.write_all(rest).unwrap();
        });
        (addr, handle)
    }

    #[test]
    fn a_truncated_udp_answer_is_asked_again_over_tcp() {
        let (addr, server) = truncating_server(true);
        let resolver = Resolver::new(DnsSettings { servers: vec![addr], timeout: Duration::from_secs(2), attempts: 1 });
        let answer = resolver.lookup_srv("_sip._udp.carrier.example").unwrap();
        let targets: Vec<&str> = answer.records.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, vec!["a.carrier.example", "b.carrier.example", "c.carrier.example"]);
        server.join().unwrap();
    }

    #[test]
    fn without_tcp_the_truncated_answer_is_used_as_far_as_it_goes() {
        let (addr, server) = truncating_server(false);
        let resolver = Resolver::new(DnsSettings { servers: vec![addr], timeout: Duration::from_secs(2), attempts: 1 });
        let started = Instant::now();
        let answer = resolver.lookup_srv("_sip._udp.carrier.example").unwrap();
        let targets: Vec<&str> = answer.records.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, vec!["a.carrier.example"]);
        assert!(started.elapsed() < Duration::from_secs(2), "a refused TCP connect does not wait for the timeout");
        server.join().unwrap();
    }
}
