//! The rig of the drachtio double's fidelity tests (tests/drachtio_double_*.rs): the app side
//! is a raw control-protocol client over TCP, the SIP side raw sockets on loopback addresses or
//! sipp; and the checks of the captured frame shapes shared by several files.
//!
//! Included by each test file with `#[path = "support/double_rig.rs"] mod double_rig;`; not
//! every file uses every helper.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sbc_sidecar::drachtio::frame::{encode_unchecked, FrameDecoder};
use sbc_sidecar::drachtio::message::new_message_id;
use sbc_test_tools::double::{Double, DoubleConfig};

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing else arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// The app side: a raw control-protocol client
// ---------------------------------------------------------------------------------------------

/// One frame from the double: meta tokens and the SIP text after the first CRLF.
#[derive(Debug)]
pub struct Frame {
    pub tokens: Vec<String>,
    pub sip: Vec<u8>,
}

impl Frame {
    pub fn parse(payload: &[u8]) -> Frame {
        let (meta, sip) = match payload.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (&payload[..i], payload[i + 2..].to_vec()),
            None => (payload, Vec::new()),
        };
        let tokens = String::from_utf8(meta.to_vec()).expect("meta is UTF-8").split('|').map(str::to_string).collect();
        Frame { tokens, sip }
    }

    pub fn tok(&self, i: usize) -> &str {
        self.tokens.get(i).map_or("<missing>", String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.sip.clone()).expect("SIP text is UTF-8")
    }

    pub fn start_line(&self) -> String {
        self.text().split("\r\n").next().unwrap_or("").to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.text(), name)
    }
}

/// The value of the first header line with this name.
pub fn header(text: &str, name: &str) -> Option<String> {
    text.split("\r\n").skip(1).take_while(|l| !l.is_empty()).find_map(|l| {
        l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
    })
}

pub fn header_names(text: &str) -> Vec<String> {
    text.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.to_string())
        .collect()
}

pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36 && s == s.to_ascii_lowercase()
}

pub fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && b.iter().enumerate().all(|(i, c)| [2, 5, 8].contains(&i) || c.is_ascii_digit())
}

pub fn is_alnum(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// Checks a frame's meta tokens against a pattern: `<uuid>`, `<time>`, `<len>` (= length of the
/// SIP text), `<number>`; anything else must match exactly (`""` = an empty token).
#[track_caller]
pub fn assert_meta(frame: &Frame, pattern: &[&str]) {
    assert_eq!(frame.tokens.len(), pattern.len(), "token count of {:?}", frame.tokens);
    for (i, (token, want)) in frame.tokens.iter().zip(pattern).enumerate() {
        let ok = match *want {
            "<uuid>" => is_uuid(token),
            "<time>" => is_time(token),
            "<len>" => token.parse::<usize>().ok() == Some(frame.sip.len()),
            "<number>" => token.parse::<usize>().is_ok(),
            exact => token == exact,
        };
        assert!(ok, "token {i} is {token:?}, wanted {want:?}; frame tokens {:?}", frame.tokens);
    }
}

pub enum Next {
    Frame(Vec<u8>),
    Closed,
    Nothing,
}

pub struct App {
    pub stream: TcpStream,
    pub decoder: FrameDecoder,
}

impl App {
    pub fn connect(d: &Double) -> App {
        let stream = TcpStream::connect(d.admin_addr()).expect("connect to the control port");
        App { stream, decoder: FrameDecoder::default() }
    }

    /// Connected and authenticated (no tags, like srf).
    pub fn authenticated(d: &Double) -> App {
        let mut app = App::connect(d);
        let reply = app.ask(&format!("{}|authenticate|cymru|", new_message_id()));
        assert_eq!(reply.tok(3), "OK");
        app
    }

    pub fn send(&mut self, payload: &str) {
        self.send_bytes(payload.as_bytes());
    }

    pub fn send_bytes(&mut self, payload: &[u8]) {
        self.stream.write_all(&encode_unchecked(payload)).expect("write to the double");
    }

    pub fn read(&mut self, timeout: Duration) -> Next {
        let until = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        loop {
            if let Some(payload) = self.decoder.next_frame().expect("well-formed frames from the double") {
                return Next::Frame(payload);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Nothing;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return Next::Closed,
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => return Next::Nothing,
                Err(_) => return Next::Closed,
            }
        }
    }

    #[track_caller]
    pub fn next(&mut self) -> Frame {
        self.next_within(WAIT)
    }

    #[track_caller]
    pub fn next_within(&mut self, timeout: Duration) -> Frame {
        match self.read(timeout) {
            Next::Frame(payload) => Frame::parse(&payload),
            Next::Closed => panic!("the double closed the connection"),
            Next::Nothing => panic!("no frame within {timeout:?}"),
        }
    }

    #[track_caller]
    pub fn ask(&mut self, payload: &str) -> Frame {
        self.send(payload);
        self.next()
    }

    #[track_caller]
    pub fn expect_closed(&mut self) {
        match self.read(WAIT) {
            Next::Closed => {}
            Next::Frame(p) => panic!("expected the connection closed, got {}", String::from_utf8_lossy(&p)),
            Next::Nothing => panic!("expected the connection closed, it stayed open"),
        }
    }

    #[track_caller]
    pub fn expect_silence(&mut self) {
        match self.read(QUIET) {
            Next::Nothing => {}
            Next::Frame(p) => panic!("expected no frame, got {}", String::from_utf8_lossy(&p)),
            Next::Closed => panic!("expected no frame, the connection closed"),
        }
    }

    #[track_caller]
    pub fn route(&mut self, d: &Double, verb: &str) {
        let id = new_message_id();
        let reply = self.ask(&format!("{id}|route|{verb}"));
        assert_meta(&reply, &["<uuid>", "response", &id, "OK"]);
        assert!(d.wait_for_route(verb, WAIT));
    }

    /// Reads whatever replies are in flight, then checks the connection still answers pings.
    pub fn ping_pong_after_replies(&mut self) {
        let id = new_message_id();
        self.send(&format!("{id}|ping"));
        loop {
            let frame = self.next();
            if frame.tok(2) == id {
                assert_meta(&frame, &["<uuid>", "response", &id, "OK", "pong"]);
                return;
            }
        }
    }

    #[track_caller]
    pub fn ping_pong(&mut self) {
        let id = new_message_id();
        assert_meta(&self.ask(&format!("{id}|ping")), &["<uuid>", "response", &id, "OK", "pong"]);
    }
}

pub fn start_double(uac_timeout: Duration) -> Double {
    Double::start(DoubleConfig { uac_timeout, ..DoubleConfig::default() }).expect("double starts")
}

pub fn sip_ip(d: &Double) -> String {
    d.sip_addr().ip().to_string()
}

pub fn sip_port(d: &Double) -> String {
    d.sip_addr().port().to_string()
}

// ---------------------------------------------------------------------------------------------
// The SIP side: loopback addresses, raw sockets, sipp
// ---------------------------------------------------------------------------------------------

/// Each peer gets its own 127.0.0.x, so peers of tests running in parallel never collide.
pub fn next_loopback_ip() -> Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(40);
    Ipv4Addr::new(127, 0, 0, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A port free for both UDP and TCP on this address right now.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((ip, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

pub fn udp_peer() -> UdpSocket {
    let socket = UdpSocket::bind((next_loopback_ip(), 0)).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

pub fn recv_datagram(socket: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 65_536];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(_) => None,
    }
}

/// Whether something listens on this UDP address (read from /proc, without touching the port).
pub fn udp_port_bound(ip: Ipv4Addr, port: u16) -> bool {
    let wanted = format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), port);
    std::fs::read_to_string("/proc/net/udp").map(|t| t.lines().any(|l| l.contains(&wanted))).unwrap_or(false)
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("drachtio-double-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A sipp process, killed if the test ends before it does.
pub struct Sipp {
    pub child: Child,
    pub error_file: PathBuf,
    pub local: SocketAddr,
}

impl Sipp {
    /// Runs one call of `scenario` from `local` (`transport` is sipp's `-t`), bounded by `-timeout`.
    pub fn spawn(
        dir: &Path,
        scenario: &str,
        local: SocketAddr,
        transport: &str,
        remote: Option<SocketAddr>,
        extra: &[&str],
    ) -> Sipp {
        let IpAddr::V4(ip) = local.ip() else { panic!("IPv4 only") };
        let scenario_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(scenario);
        let error_file = dir.join(format!("{scenario}.{}.err", local.port()));
        let mut cmd = Command::new("sipp");
        if let Some(remote) = remote {
            cmd.arg(remote.to_string());
        }
        cmd.arg("-sf")
            .arg(&scenario_path)
            .args(["-i", &local.ip().to_string(), "-p", &local.port().to_string()])
            .args(["-mp", &sbc_test_tools::sipp::media_port(&ip.to_string()).to_string()])
            .args(["-bind_local", "-t", transport, "-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&error_file)
            .args(extra)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = sbc_test_tools::services::spawn_sipp(&mut cmd);
        Sipp { child, error_file, local }
    }

    /// Waits until a sipp UAS listens on its UDP port.
    pub fn wait_listening(self) -> Sipp {
        let IpAddr::V4(ip) = self.local.ip() else { unreachable!() };
        let until = Instant::now() + WAIT;
        while !udp_port_bound(ip, self.local.port()) {
            assert!(Instant::now() < until, "sipp did not start listening on {}", self.local);
            std::thread::sleep(Duration::from_millis(10));
        }
        self
    }

    /// Waits for sipp to finish and asserts it succeeded.
    #[track_caller]
    pub fn assert_success(mut self) {
        let until = Instant::now() + Duration::from_secs(25);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let errors = std::fs::read_to_string(&self.error_file).unwrap_or_default();
                assert!(status.success(), "sipp failed with {status}: {errors}");
                return;
            }
            assert!(Instant::now() < until, "sipp did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The CSeq sofia picks without an app value, within a second or two of now.
pub fn plausible_default_cseq(n: u64) -> bool {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let now = ((secs + 2_208_988_800) >> 1) & 0x7FF_FFFF;
    n == now || n + 1 == now
}

// ---------------------------------------------------------------------------------------------
// Requests from the app: the echo and response frames (drachtio-capture-uac.txt steps a, b, c1, d2, d3)
// ---------------------------------------------------------------------------------------------

/// Checks the OK echo of a new request: 13 tokens, `Msg sent:`, bytes = echoed text.
#[track_caller]
pub fn assert_request_echo(echo: &Frame, msg_id: &str, proto: &str, addr: &str, port: &str) -> String {
    assert_meta(
        echo,
        &[
            "<uuid>",
            "response",
            msg_id,
            "OK",
            "application",
            "<len>",
            proto,
            addr,
            port,
            "<time>",
            "<uuid>",
            "Msg sent:",
            "",
        ],
    );
    echo.tok(10).to_string()
}

/// The branch of the stack's Via, after checking its form.
#[track_caller]
pub fn our_branch(echo: &Frame, d: &Double, proto: &str) -> String {
    let via = echo.header("Via").unwrap();
    let rport = if proto == "UDP" { ";rport" } else { "" };
    let prefix = format!("SIP/2.0/{proto} {}{rport};branch=z9hG4bK", sip_ip(d));
    let suffix = via.strip_prefix(&prefix).unwrap_or_else(|| panic!("Via {via} does not start with {prefix}"));
    assert!(is_alnum(suffix, 13), "{via}");
    format!("z9hG4bK{suffix}")
}

#[track_caller]
pub fn tag_of(value: &str) -> String {
    let tag = value.rsplit_once(";tag=").map(|(_, t)| t.to_string()).unwrap_or_default();
    assert!(is_alnum(&tag, 13), "13-character tag in {value}");
    tag
}

/// A response frame to the app's request: 11 tokens, token 9 empty for OPTIONS/REGISTER.
#[track_caller]
pub fn assert_response_frame(frame: &Frame, txn: &str, proto: &str, from: SocketAddr) {
    let (ip, port) = (from.ip().to_string(), from.port().to_string());
    assert_meta(frame, &["<uuid>", "sip", "network", "<len>", proto, &ip, &port, "<time>", txn, "", ""]);
}
