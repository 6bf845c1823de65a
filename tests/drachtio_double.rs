//! Fidelity of the drachtio double: every test replays a step of `docs/spec/drachtio-capture.txt` or
//! `docs/spec/drachtio-capture-uac.txt` and checks that the double answers with the captured shape,
//! token by token (ids, times, tags and branches differ; counts, positions and texts must not).
//! The app side is a raw TCP client; the SIP side is sipp or a raw UDP socket.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sbc_sidecar::drachtio::frame::{encode_unchecked, FrameDecoder};
use sbc_sidecar::drachtio::message::new_message_id;
use sbc_test_tools::double::{Direction, Double, DoubleConfig};

/// How long any single expected event may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing else arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// The app side: a raw control-protocol client
// ---------------------------------------------------------------------------------------------

/// One frame from the double: meta tokens and the SIP text after the first CRLF.
#[derive(Debug)]
struct Frame {
    tokens: Vec<String>,
    sip: Vec<u8>,
}

impl Frame {
    fn parse(payload: &[u8]) -> Frame {
        let (meta, sip) = match payload.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (&payload[..i], payload[i + 2..].to_vec()),
            None => (payload, Vec::new()),
        };
        let tokens = String::from_utf8(meta.to_vec()).expect("meta is UTF-8").split('|').map(str::to_string).collect();
        Frame { tokens, sip }
    }

    fn tok(&self, i: usize) -> &str {
        self.tokens.get(i).map_or("<missing>", String::as_str)
    }

    fn text(&self) -> String {
        String::from_utf8(self.sip.clone()).expect("SIP text is UTF-8")
    }

    fn start_line(&self) -> String {
        self.text().split("\r\n").next().unwrap_or("").to_string()
    }

    fn header(&self, name: &str) -> Option<String> {
        header(&self.text(), name)
    }
}

/// The value of the first header line with this name.
fn header(text: &str, name: &str) -> Option<String> {
    text.split("\r\n").skip(1).take_while(|l| !l.is_empty()).find_map(|l| {
        l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
    })
}

fn header_names(text: &str) -> Vec<String> {
    text.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.to_string())
        .collect()
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36 && s == s.to_ascii_lowercase()
}

fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && b.iter().enumerate().all(|(i, c)| [2, 5, 8].contains(&i) || c.is_ascii_digit())
}

fn is_alnum(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// Checks a frame's meta tokens against a pattern: `<uuid>`, `<time>`, `<len>` (= length of the
/// SIP text), `<number>`; anything else must match exactly (`""` = an empty token).
#[track_caller]
fn assert_meta(frame: &Frame, pattern: &[&str]) {
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

enum Next {
    Frame(Vec<u8>),
    Closed,
    Nothing,
}

struct App {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl App {
    fn connect(d: &Double) -> App {
        let stream = TcpStream::connect(d.admin_addr()).expect("connect to the control port");
        App { stream, decoder: FrameDecoder::default() }
    }

    /// Connected and authenticated (no tags, like srf).
    fn authenticated(d: &Double) -> App {
        let mut app = App::connect(d);
        let reply = app.ask(&format!("{}|authenticate|cymru|", new_message_id()));
        assert_eq!(reply.tok(3), "OK");
        app
    }

    fn send(&mut self, payload: &str) {
        self.send_bytes(payload.as_bytes());
    }

    fn send_bytes(&mut self, payload: &[u8]) {
        self.stream.write_all(&encode_unchecked(payload)).expect("write to the double");
    }

    fn read(&mut self, timeout: Duration) -> Next {
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
    fn next(&mut self) -> Frame {
        self.next_within(WAIT)
    }

    #[track_caller]
    fn next_within(&mut self, timeout: Duration) -> Frame {
        match self.read(timeout) {
            Next::Frame(payload) => Frame::parse(&payload),
            Next::Closed => panic!("the double closed the connection"),
            Next::Nothing => panic!("no frame within {timeout:?}"),
        }
    }

    #[track_caller]
    fn ask(&mut self, payload: &str) -> Frame {
        self.send(payload);
        self.next()
    }

    #[track_caller]
    fn expect_closed(&mut self) {
        match self.read(WAIT) {
            Next::Closed => {}
            Next::Frame(p) => panic!("expected the connection closed, got {}", String::from_utf8_lossy(&p)),
            Next::Nothing => panic!("expected the connection closed, it stayed open"),
        }
    }

    #[track_caller]
    fn expect_silence(&mut self) {
        match self.read(QUIET) {
            Next::Nothing => {}
            Next::Frame(p) => panic!("expected no frame, got {}", String::from_utf8_lossy(&p)),
            Next::Closed => panic!("expected no frame, the connection closed"),
        }
    }

    #[track_caller]
    fn route(&mut self, d: &Double, verb: &str) {
        let id = new_message_id();
        let reply = self.ask(&format!("{id}|route|{verb}"));
        assert_meta(&reply, &["<uuid>", "response", &id, "OK"]);
        assert!(d.wait_for_route(verb, WAIT));
    }

    /// Reads whatever replies are in flight, then checks the connection still answers pings.
    fn ping_pong_after_replies(&mut self) {
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
    fn ping_pong(&mut self) {
        let id = new_message_id();
        assert_meta(&self.ask(&format!("{id}|ping")), &["<uuid>", "response", &id, "OK", "pong"]);
    }
}

fn start_double(uac_timeout: Duration) -> Double {
    Double::start(DoubleConfig { uac_timeout, ..DoubleConfig::default() }).expect("double starts")
}

fn sip_ip(d: &Double) -> String {
    d.sip_addr().ip().to_string()
}

fn sip_port(d: &Double) -> String {
    d.sip_addr().port().to_string()
}

// ---------------------------------------------------------------------------------------------
// The SIP side: loopback addresses, raw sockets, sipp
// ---------------------------------------------------------------------------------------------

/// Each peer gets its own 127.0.0.x, so peers of tests running in parallel never collide.
fn next_loopback_ip() -> Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(40);
    Ipv4Addr::new(127, 0, 0, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A port free for both UDP and TCP on this address right now.
fn free_port(ip: Ipv4Addr) -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((ip, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

fn udp_peer() -> UdpSocket {
    let socket = UdpSocket::bind((next_loopback_ip(), 0)).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

fn recv_datagram(socket: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 65_536];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(_) => None,
    }
}

/// Whether something listens on this UDP address (read from /proc, without touching the port).
fn udp_port_bound(ip: Ipv4Addr, port: u16) -> bool {
    let wanted = format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), port);
    std::fs::read_to_string("/proc/net/udp").map(|t| t.lines().any(|l| l.contains(&wanted))).unwrap_or(false)
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
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
struct Sipp {
    child: Child,
    error_file: PathBuf,
    local: SocketAddr,
}

impl Sipp {
    /// Runs one call of `scenario` from `local` (`transport` is sipp's `-t`), bounded by `-timeout`.
    fn spawn(
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
            .args(["-mp", &media_port(ip).to_string()])
            .args(["-bind_local", "-t", transport, "-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&error_file)
            .args(extra)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("sipp is installed");
        Sipp { child, error_file, local }
    }

    /// Waits until a sipp UAS listens on its UDP port.
    fn wait_listening(self) -> Sipp {
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
    fn assert_success(mut self) {
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The CSeq sofia picks without an app value, within a second or two of now.
fn plausible_default_cseq(n: u64) -> bool {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let now = ((secs + 2_208_988_800) >> 1) & 0x7FF_FFFF;
    n == now || n + 1 == now
}

// ---------------------------------------------------------------------------------------------
// Control port (drachtio-capture.txt steps 1–3; drachtio-capture-uac.txt steps e, f, i)
// ---------------------------------------------------------------------------------------------

#[test]
fn authenticate_route_and_ping_are_answered_with_the_captured_shape() {
    let d = start_double(Duration::from_secs(2));
    let hostports = format!("tcp/{0},udp/{0}", d.sip_addr());
    assert_eq!(d.hostports(), hostports);
    let mut app = App::connect(&d);
    assert_eq!(d.app_connections(), 0);

    let auth_id = new_message_id();
    let reply = app.ask(&format!("{auth_id}|authenticate|cymru|"));
    assert_meta(&reply, &["<uuid>", "response", &auth_id, "OK", &hostports, "v0.9.10-1-g9c2dd4cb6a", &hostports]);
    assert_eq!(d.app_connections(), 1);

    let route_id = new_message_id();
    assert_meta(&app.ask(&format!("{route_id}|route|register")), &["<uuid>", "response", &route_id, "OK"]);
    assert_eq!(d.routes(), vec!["register".to_string()]);
    app.ping_pong();

    let log = d.frames_log();
    assert_eq!(log.len(), 6);
    assert_eq!(log[0], (Direction::FromApp, format!("{auth_id}|authenticate|cymru|").into_bytes()));
    assert_eq!(log[1].0, Direction::ToApp);
    assert!(log[1]
        .1
        .ends_with(format!("|response|{auth_id}|OK|{hostports}|v0.9.10-1-g9c2dd4cb6a|{hostports}").as_bytes()));
}

#[test]
fn wrong_secret_is_answered_no_and_the_connection_closed() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::connect(&d);
    let id = new_message_id();
    assert_meta(&app.ask(&format!("{id}|authenticate|wrong|")), &["<uuid>", "response", &id, "NO", "incorrect secret"]);
    app.expect_closed();
    assert_eq!(d.app_connections(), 0);
}

#[test]
fn malformed_messages_close_the_connection_as_drachtio_does() {
    let d = start_double(Duration::from_secs(2));

    let mut app = App::authenticated(&d);
    app.send("lonely-token");
    assert_meta(&app.next(), &["<uuid>", "response", "lonely-token", "NO", "Invalid message format"]);
    app.expect_closed();

    let mut app = App::authenticated(&d);
    let id = new_message_id();
    assert_meta(&app.ask(&format!("{id}|frobnicate|x")), &["<uuid>", "response", &id, "NO", "Unknown message type"]);
    app.expect_closed();

    let mut app = App::authenticated(&d);
    app.stream.write_all(b"12x#hello").unwrap();
    app.expect_closed();
}

#[test]
fn response_with_an_empty_transaction_id_is_answered_no_and_the_connection_closed() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    let id = new_message_id();
    let reply = app.ask(&format!(
        "{id}|sip||\r\nSIP/2.0 200 OK\r\nCall-ID: no-such-call@127.0.0.99\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:nobody@127.0.0.99>;tag=abc\r\nTo: <sip:127.0.0.10:5060>\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_meta(&reply, &["<uuid>", "response", &id, "NO", "transaction id missing"]);
    app.expect_closed();
}

#[test]
fn unknown_transactions_and_invalid_requests_get_nok_and_keep_the_connection() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);

    let id = new_message_id();
    let reply = app.ask(&format!(
        "{id}|sip|deadbeef-0000-4000-8000-000000000000|\r\nSIP/2.0 200 OK\r\nCall-ID: no-such-call@127.0.0.99\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:nobody@127.0.0.99>;tag=abc\r\nTo: <sip:127.0.0.10:5060>\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_meta(&reply, &["<uuid>", "response", &id, "NOK", "Response not sent due to unknown transaction"]);
    app.ping_pong();

    for (request, reason) in [
        ("FOO bar SIP/2.0\r\nContent-Length: 0\r\n\r\n", "invalid request-uri: FOO bar SIP/2.0"),
        ("OPTIONS bar SIP/2.0\r\n\r\n", "invalid request-uri: OPTIONS bar SIP/2.0"),
        (&format!("OPTIONS sip:{} SIP/2.0\r\n\r\n", d.sip_addr()), "can not send request to myself"),
    ] {
        let id = new_message_id();
        assert_meta(&app.ask(&format!("{id}|sip||\r\n{request}")), &["<uuid>", "response", &id, "NOK", reason]);
    }
    app.ping_pong();
    app.expect_silence();
}

#[test]
fn requests_are_shared_round_robin_and_disconnected_apps_are_skipped() {
    let d = start_double(Duration::from_secs(2));
    let mut first = App::authenticated(&d);
    first.route(&d, "options");
    let mut second = App::authenticated(&d);
    second.route(&d, "options");
    let mut shouting = App::authenticated(&d);
    shouting.route(&d, "OPTIONS"); // stored as sent, never matches the lower-cased method
    let phone = udp_peer();
    let options = |n: u32| {
        let me = phone.local_addr().unwrap();
        format!(
            "OPTIONS sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-rr-{n}\r\nFrom: <sip:rr@{me}>;tag=rr{n}\r\nTo: <sip:{0}>\r\nCall-ID: rr-{n}@{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            d.sip_addr()
        )
    };

    phone.send_to(options(1).as_bytes(), d.sip_addr()).unwrap();
    assert_eq!(first.next().header("Call-ID").unwrap(), format!("rr-1@{}", phone.local_addr().unwrap()));
    phone.send_to(options(2).as_bytes(), d.sip_addr()).unwrap();
    assert_eq!(second.next().header("Call-ID").unwrap(), format!("rr-2@{}", phone.local_addr().unwrap()));

    drop(second);
    let until = Instant::now() + WAIT;
    while d.app_connections() != 2 {
        assert!(Instant::now() < until, "the double did not notice the closed app");
        std::thread::sleep(Duration::from_millis(5));
    }
    phone.send_to(options(3).as_bytes(), d.sip_addr()).unwrap();
    assert_eq!(first.next().header("Call-ID").unwrap(), format!("rr-3@{}", phone.local_addr().unwrap()));
    shouting.expect_silence();
}

#[test]
fn stop_closes_every_app_and_frees_the_admin_port_for_a_restart() {
    let d = start_double(Duration::from_secs(2));
    let admin = d.admin_addr();
    let mut app = App::authenticated(&d);
    d.stop();
    app.expect_closed();

    let d = Double::start(DoubleConfig { admin, ..DoubleConfig::default() }).expect("same admin address again");
    assert_eq!(d.admin_addr(), admin);
    let mut app = App::authenticated(&d);
    app.ping_pong();
}

#[test]
fn garbage_on_either_side_never_stops_the_double() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    app.route(&d, "options");

    let junk: Vec<u8> = (0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let peer = udp_peer();
    for chunk in junk.chunks(300) {
        peer.send_to(chunk, d.sip_addr()).unwrap();
    }
    peer.send_to(b"OPTIONS\r\n\r\n", d.sip_addr()).unwrap();
    peer.send_to(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", d.sip_addr()).unwrap();
    peer.send_to(b"\r\n\r\n", d.sip_addr()).unwrap();
    let mut tcp = TcpStream::connect(d.sip_addr()).unwrap();
    let _ = tcp.write_all(b"INVITE sip:x SIP/2.0\r\nContent-Length: banana\r\n\r\n");
    let _ = tcp.write_all(&junk);

    // Connections that deserve to be closed are closed, and nothing else happens.
    for garbage in [&b"9#|||||||||"[..], b"5#\xff\xfe\r\n|", b"12#x|sip|\r\n\r\n\r\n"] {
        let mut other = App::connect(&d);
        other.stream.write_all(garbage).unwrap();
        while let Next::Frame(_) = other.read(WAIT) {}
    }
    // SIP nonsense from the app gets NOK replies; the connection stays.
    let id = new_message_id();
    for garbage in [
        format!("{id}|sip||\r\n\u{1}\u{2}"),
        format!("{id}|sip|||notauri\r\nOPTIONS sip:127.0.0.1 SIP/2.0\r\n\r\n"),
        format!("{id}|sip|||sip:[::1\r\nOPTIONS sip:127.0.0.1 SIP/2.0\r\n\r\n"),
        format!("{id}|sip|nope|\r\nSIP/2.0 abc\r\n\r\n"),
        format!("{id}|sip||\r\nINVITE sip:127.0.0.1:1 SIP/2.0\r\n\r\nbody without type"),
        format!("{id}|sip||"),
    ] {
        app.send(&garbage);
    }
    app.ping_pong_after_replies();
    // …and the SIP side still works.
    let probe = udp_peer();
    let me = probe.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-after\r\nFrom: <sip:g@{me}>;tag=g\r\nTo: <sip:{0}>\r\nCall-ID: after-garbage\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        d.sip_addr()
    );
    probe.send_to(options.as_bytes(), d.sip_addr()).unwrap();
    assert_eq!(app.next().header("Call-ID").unwrap(), "after-garbage");
}

// ---------------------------------------------------------------------------------------------
// Requests from the network (drachtio-capture.txt steps 4–5; drachtio-capture-uac.txt steps g, h)
// ---------------------------------------------------------------------------------------------

/// The phone's REGISTER over `transport` (`u1`/`t1`): delivered once, answered like the capture.
fn register_from_a_phone(transport: &str, proto: &str) {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    app.route(&d, "register");
    let dir = TempDir::new();
    let ip = next_loopback_ip();
    let phone = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let sipp = Sipp::spawn(&dir.0, "double_uac_register.xml", phone, transport, Some(d.sip_addr()), &[]);

    let delivery = app.next();
    let (phone_ip, phone_port) = (phone.ip().to_string(), phone.port().to_string());
    assert_meta(
        &delivery,
        &[
            "<uuid>",
            "sip",
            "network",
            "<number>",
            proto,
            &phone_ip,
            &phone_port,
            "<time>",
            "<uuid>",
            "",
            &sip_ip(&d),
            &sip_port(&d),
            "",
        ],
    );
    // The size as received: before the stack appended `;rport=<port>` to the Via.
    let stamp = format!(";rport={phone_port}");
    assert_eq!(delivery.tok(3).parse::<usize>().unwrap(), delivery.sip.len() - stamp.len());
    let via = delivery.header("Via").unwrap();
    assert!(via.starts_with(&format!("SIP/2.0/{} {phone};branch=z9hG4bK-", proto.to_uppercase())), "{via}");
    assert!(via.ends_with(&stamp), "{via}");
    assert_eq!(delivery.start_line(), format!("REGISTER sip:{} SIP/2.0", d.sip_addr()));
    assert_eq!(
        header_names(&delivery.text()),
        ["Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact", "Expires", "User-Agent", "Content-Length"]
    );

    let txn = delivery.tok(8).to_string();
    let (call_id, from, to) =
        (delivery.header("Call-ID").unwrap(), delivery.header("From").unwrap(), delivery.header("To").unwrap());
    let contact = delivery.header("Contact").unwrap();
    let answer_id = new_message_id();
    let echo = app.ask(&format!(
        "{answer_id}|sip|{txn}|\r\nSIP/2.0 200 OK\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nFrom: {from}\r\nTo: {to}\r\nContact: {contact}\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_meta(
        &echo,
        &[
            "<uuid>",
            "response",
            &answer_id,
            "OK",
            "application",
            "<len>",
            "",
            &phone_ip,
            &phone_port,
            "<time>",
            &txn,
            "",
            "",
            "Msg sent:",
            "",
        ],
    );
    let tag = echo.header("To").unwrap().rsplit_once(";tag=").map(|(_, t)| t.to_string()).unwrap();
    assert!(is_alnum(&tag, 13), "{tag}");
    assert_eq!(
        echo.text(),
        format!("SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to};tag={tag}\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: {contact}\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n")
    );
    sipp.assert_success();
    app.expect_silence();
}

#[test]
fn register_from_a_phone_over_udp_is_delivered_and_answered_like_the_capture() {
    register_from_a_phone("u1", "udp");
}

#[test]
fn register_from_a_phone_over_tcp_is_delivered_and_answered_like_the_capture() {
    register_from_a_phone("t1", "tcp");
}

#[test]
fn feature_server_options_reach_the_app_verbatim_and_x_members_goes_after_content_length() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    app.route(&d, "options");
    let dir = TempDir::new();
    let ip = next_loopback_ip();
    let fs = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let service_url = format!("http://{ip}:3000");
    let messages = dir.0.join("fs.msg");
    let sipp = Sipp::spawn(
        &dir.0,
        "double_uac_options_fs.xml",
        fs,
        "u1",
        Some(d.sip_addr()),
        &[
            "-key",
            "fs_status",
            "open",
            "-key",
            "service_url",
            &service_url,
            "-trace_msg",
            "-message_file",
            messages.to_str().unwrap(),
        ],
    );

    let delivery = app.next();
    let (fs_ip, fs_port) = (fs.ip().to_string(), fs.port().to_string());
    assert_meta(
        &delivery,
        &[
            "<uuid>",
            "sip",
            "network",
            "<number>",
            "udp",
            &fs_ip,
            &fs_port,
            "<time>",
            "<uuid>",
            "",
            &sip_ip(&d),
            &sip_port(&d),
            "",
        ],
    );
    assert_eq!(
        header_names(&delivery.text()),
        [
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Max-Forwards",
            "X-FS-Status",
            "X-FS-ServiceUrl",
            "X-FS-Calls",
            "Content-Length"
        ]
    );
    assert_eq!(delivery.header("X-FS-Status").unwrap(), "open");
    assert_eq!(delivery.header("X-FS-ServiceUrl").unwrap(), service_url);

    let txn = delivery.tok(8).to_string();
    let (call_id, from, to, via) = (
        delivery.header("Call-ID").unwrap(),
        delivery.header("From").unwrap(),
        delivery.header("To").unwrap(),
        delivery.header("Via").unwrap(),
    );
    let answer_id = new_message_id();
    let echo = app.ask(&format!(
        "{answer_id}|sip|{txn}|\r\nSIP/2.0 200 OK\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nFrom: {from}\r\nTo: {to}\r\nX-Members: 1\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_meta(
        &echo,
        &[
            "<uuid>",
            "response",
            &answer_id,
            "OK",
            "application",
            "<len>",
            "",
            &fs_ip,
            &fs_port,
            "<time>",
            &txn,
            "",
            "",
            "Msg sent:",
            "",
        ],
    );
    let to_on_wire = echo.header("To").unwrap();
    assert_eq!(
        echo.text(),
        format!("SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to_on_wire}\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\nX-Members: 1\r\n\r\n")
    );
    sipp.assert_success();
    let trace = std::fs::read(&messages).unwrap();
    assert!(contains(&trace, &echo.sip), "sipp received exactly the echoed bytes");
}

#[test]
fn udp_retransmissions_are_absorbed_and_the_final_response_is_resent_without_a_frame() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    app.route(&d, "options");
    let probe = udp_peer();
    let me = probe.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-h-ace39590\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=h0222a875\r\nTo: <sip:{0}>\r\nCall-ID: h-3f41ea29@{1}\r\nCSeq: 1 OPTIONS\r\nX-FS-Status: open\r\nContent-Length: 0\r\n\r\n",
        d.sip_addr(),
        me.ip()
    );
    probe.send_to(options.as_bytes(), d.sip_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    probe.send_to(options.as_bytes(), d.sip_addr()).unwrap();

    let delivery = app.next();
    assert_eq!(delivery.tok(3), options.len().to_string());
    app.expect_silence();
    assert!(recv_datagram(&probe, QUIET).is_none(), "nothing is sent back while the app has not answered");

    let txn = delivery.tok(8).to_string();
    let echo = app.ask(&format!(
        "{}|sip|{txn}|\r\nSIP/2.0 200 OK\r\nCall-ID: h-3f41ea29@{}\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:probe@{me}>;tag=h0222a875\r\nTo: <sip:{}>\r\nX-Members: 1\r\nContent-Length: 0\r\n\r\n",
        new_message_id(),
        me.ip(),
        d.sip_addr()
    ));
    assert_eq!(echo.tok(3), "OK");
    let (answer, from) = recv_datagram(&probe, WAIT).expect("the 200");
    assert_eq!(from, d.sip_addr());
    assert_eq!(answer, echo.sip, "the wire response is the echoed one");
    assert!(recv_datagram(&probe, QUIET).is_none(), "exactly one 200 for two copies");

    probe.send_to(options.as_bytes(), d.sip_addr()).unwrap();
    let (again, _) = recv_datagram(&probe, WAIT).expect("the 200 again");
    assert_eq!(again, answer, "a late copy gets the same bytes, To tag included");
    app.expect_silence();
}

#[test]
fn received_and_rport_are_stamped_on_the_top_via_like_the_stack_does() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    app.route(&d, "options");
    let probe = udp_peer();
    let me = probe.local_addr().unwrap();
    for (n, via, stamped) in [
        (
            1,
            "SIP/2.0/UDP 127.0.0.99:5060;branch=z9hG4bK-v1".to_string(),
            format!("SIP/2.0/UDP 127.0.0.99:5060;branch=z9hG4bK-v1;received={};rport={}", me.ip(), me.port()),
        ),
        (
            2,
            format!("SIP/2.0/UDP {me};rport;branch=z9hG4bK-v2"),
            format!("SIP/2.0/UDP {me};rport={};branch=z9hG4bK-v2", me.port()),
        ),
        (
            3,
            format!("SIP/2.0/UDP {me};branch=z9hG4bK-v3;rport=7"),
            format!("SIP/2.0/UDP {me};branch=z9hG4bK-v3;rport=7"),
        ),
    ] {
        let options = format!(
            "OPTIONS sip:{0} SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP 127.0.0.98:5060;branch=z9hG4bK-lower\r\nFrom: <sip:v@{me}>;tag=v{n}\r\nTo: <sip:{0}>\r\nCall-ID: via-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            d.sip_addr()
        );
        probe.send_to(options.as_bytes(), d.sip_addr()).unwrap();
        let delivery = app.next();
        assert_eq!(delivery.text(), options.replacen(&via, &stamped, 1));
        assert_eq!(delivery.tok(3), options.len().to_string());
    }
}

#[test]
fn a_request_nobody_routed_is_answered_503_on_the_sip_side() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    app.route(&d, "register");
    let dir = TempDir::new();
    let ip = next_loopback_ip();
    let probe = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    Sipp::spawn(&dir.0, "double_uac_options_503.xml", probe, "u1", Some(d.sip_addr()), &[]).assert_success();
    app.expect_silence();
}

#[test]
fn a_provisional_answer_to_a_non_invite_is_followed_by_the_stacks_500() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    app.route(&d, "options");
    let probe = udp_peer();
    let me = probe.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-p1\r\nFrom: <sip:p@{me}>;tag=p1\r\nTo: <sip:{0}>\r\nCall-ID: p-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        d.sip_addr()
    );
    probe.send_to(options.as_bytes(), d.sip_addr()).unwrap();
    let txn = app.next().tok(8).to_string();
    let id = new_message_id();
    let echo = app.ask(&format!("{id}|sip|{txn}|\r\nSIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n"));
    assert_eq!(echo.tok(3), "OK");
    let (ringing, _) = recv_datagram(&probe, WAIT).unwrap();
    assert!(ringing.starts_with(b"SIP/2.0 180 Ringing\r\n"));
    let (error, _) = recv_datagram(&probe, WAIT).unwrap();
    assert!(error.starts_with(b"SIP/2.0 500 Internal Server Error\r\n"));
    let id = new_message_id();
    let late = app.ask(&format!("{id}|sip|{txn}|\r\nSIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert_meta(&late, &["<uuid>", "response", &id, "NOK", "Response not sent due to unknown transaction"]);
}

// ---------------------------------------------------------------------------------------------
// Requests from the app (drachtio-capture-uac.txt steps a, b, c1, c2, d2, d3, s1)
// ---------------------------------------------------------------------------------------------

/// Checks the OK echo of a new request: 13 tokens, `Msg sent:`, bytes = echoed text.
#[track_caller]
fn assert_request_echo(echo: &Frame, msg_id: &str, proto: &str, addr: &str, port: &str) -> String {
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
fn our_branch(echo: &Frame, d: &Double, proto: &str) -> String {
    let via = echo.header("Via").unwrap();
    let rport = if proto == "UDP" { ";rport" } else { "" };
    let prefix = format!("SIP/2.0/{proto} {}{rport};branch=z9hG4bK", sip_ip(d));
    let suffix = via.strip_prefix(&prefix).unwrap_or_else(|| panic!("Via {via} does not start with {prefix}"));
    assert!(is_alnum(suffix, 13), "{via}");
    format!("z9hG4bK{suffix}")
}

#[track_caller]
fn tag_of(value: &str) -> String {
    let tag = value.rsplit_once(";tag=").map(|(_, t)| t.to_string()).unwrap_or_default();
    assert!(is_alnum(&tag, 13), "13-character tag in {value}");
    tag
}

/// A response frame to the app's request: 11 tokens, token 9 empty for OPTIONS/REGISTER.
#[track_caller]
fn assert_response_frame(frame: &Frame, txn: &str, proto: &str, from: SocketAddr) {
    let (ip, port) = (from.ip().to_string(), from.port().to_string());
    assert_meta(frame, &["<uuid>", "sip", "network", "<len>", proto, &ip, &port, "<time>", txn, "", ""]);
}

fn options_answered_by_a_sipp_gateway(code: &str, reason: &str) {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    let dir = TempDir::new();
    let ip = next_loopback_ip();
    let gateway = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let scenario = format!("double_uas_options_{code}.xml");
    let sipp = Sipp::spawn(&dir.0, &scenario, gateway, "u1", None, &[]).wait_listening();

    let id = new_message_id();
    let echo = app.ask(&format!("{id}|sip||\r\nOPTIONS sip:{gateway} SIP/2.0\r\n\r\n"));
    let txn = assert_request_echo(&echo, &id, "udp", &sip_ip(&d), &sip_port(&d));
    let branch = our_branch(&echo, &d, "UDP");
    let from = echo.header("From").unwrap();
    let from_tag = tag_of(&from);
    let call_id = echo.header("Call-ID").unwrap();
    let cseq = echo.header("CSeq").unwrap();
    let (number, method) = cseq.split_once(' ').unwrap();
    assert!(plausible_default_cseq(number.parse().unwrap()), "{cseq}");
    assert_eq!(method, "OPTIONS");
    assert_eq!(
        echo.text(),
        format!(
            "OPTIONS sip:{gateway} SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:{}>;tag={from_tag}\r\nTo: <sip:{gateway}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n",
            sip_ip(&d),
            d.sip_addr()
        )
    );

    let response = app.next();
    assert_response_frame(&response, &txn, "udp", gateway);
    assert_eq!(response.start_line(), format!("SIP/2.0 {code} {reason}"));
    assert_eq!(response.header("Via").unwrap(), echo.header("Via").unwrap());
    sipp.assert_success();
    app.expect_silence();
}

#[test]
fn options_from_the_app_is_echoed_then_its_200_delivered() {
    options_answered_by_a_sipp_gateway("200", "OK");
}

#[test]
fn options_from_the_app_is_echoed_then_its_503_delivered() {
    options_answered_by_a_sipp_gateway("503", "Service Unavailable");
}

#[test]
fn register_through_a_proxy_token_is_challenged_then_accepted_with_localhost_rewritten() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    let dir = TempDir::new();
    let ip = next_loopback_ip();
    let registrar = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let messages = dir.0.join("registrar.msg");
    let sipp = Sipp::spawn(
        &dir.0,
        "double_uas_register.xml",
        registrar,
        "u1",
        None,
        &["-trace_msg", "-message_file", messages.to_str().unwrap()],
    )
    .wait_listening();
    let proxy = format!("sip:{registrar};transport=udp");
    let register = |cseq: u32, authorization: &str| {
        format!(
            "REGISTER sip:sip.jambonz.org SIP/2.0\r\nFrom: <sip:reguser@regdomain>;tag=5cb2c73a\r\nTo: <sip:reguser@regdomain>\r\nCall-ID: reg-9a14e206\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:reguser@localhost>\r\nExpires: 3600\r\nUser-Agent: capture-uac\r\n{authorization}Content-Length: 0\r\n\r\n"
        )
    };
    let on_wire = |branch: &str, cseq: u32, authorization: &str| {
        format!(
            "REGISTER sip:sip.jambonz.org SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:reguser@regdomain>;tag=5cb2c73a\r\nTo: <sip:reguser@regdomain>\r\nCall-ID: reg-9a14e206\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:reguser@{}>\r\nExpires: 3600\r\nUser-Agent: capture-uac\r\n{authorization}Content-Length: 0\r\n\r\n",
            sip_ip(&d),
            d.sip_addr()
        )
    };

    let id = new_message_id();
    let echo1 = app.ask(&format!("{id}|sip|||{proxy}\r\n{}", register(1, "")));
    let txn1 = assert_request_echo(&echo1, &id, "udp", &sip_ip(&d), &sip_port(&d));
    assert_eq!(echo1.text(), on_wire(&our_branch(&echo1, &d, "UDP"), 1, ""));
    let challenge = app.next();
    assert_response_frame(&challenge, &txn1, "udp", registrar);
    assert_eq!(challenge.start_line(), "SIP/2.0 401 Unauthorized");
    assert!(challenge.header("WWW-Authenticate").unwrap().starts_with("Digest realm=\"sip.jambonz.org\""));

    let authorization = "Authorization: Digest username=\"foo\", realm=\"sip.jambonz.org\", nonce=\"n\", uri=\"sip:sip.jambonz.org\", response=\"5f9843497b7bbedafb3f55300bf36b1a\", algorithm=MD5, cnonce=\"c5502d28\", qop=auth, nc=00000001\r\n";
    let id = new_message_id();
    let echo2 = app.ask(&format!("{id}|sip|||{proxy}\r\n{}", register(2, authorization)));
    let txn2 = assert_request_echo(&echo2, &id, "udp", &sip_ip(&d), &sip_port(&d));
    assert_ne!(txn1, txn2);
    assert_eq!(echo2.text(), on_wire(&our_branch(&echo2, &d, "UDP"), 2, authorization));
    let accepted = app.next();
    assert_response_frame(&accepted, &txn2, "udp", registrar);
    assert_eq!(accepted.start_line(), "SIP/2.0 200 OK");
    assert_eq!(accepted.header("Contact").unwrap(), format!("<sip:reguser@{}>;expires=600", d.sip_addr()));
    assert_eq!(accepted.header("Expires").unwrap(), "900");

    sipp.assert_success();
    let trace = std::fs::read(&messages).unwrap();
    assert!(contains(&trace, &echo1.sip) && contains(&trace, &echo2.sip), "sipp received exactly the echoed requests");
    app.expect_silence();
}

#[test]
fn app_supplied_headers_are_kept_rewritten_and_ordered_like_step_s1() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    let gateway = udp_peer();
    let gw = gateway.local_addr().unwrap();
    let id = new_message_id();
    let echo = app.ask(&format!(
        "{id}|sip||\r\nOPTIONS sip:{gw} SIP/2.0\r\nFrom: <sip:probe@localhost>;tag=s1tag\r\nTo: <sip:{gw}>\r\nCall-ID: s1-bcec8fa2\r\nCSeq: 7 OPTIONS\r\nMax-Forwards: 10\r\nX-Custom: yes\r\nContact: <sip:probe@localhost>\r\nContent-Length: 0\r\n\r\n"
    ));
    let txn = assert_request_echo(&echo, &id, "udp", &sip_ip(&d), &sip_port(&d));
    let branch = our_branch(&echo, &d, "UDP");
    let me = d.sip_addr();
    assert_eq!(
        echo.text(),
        format!(
            "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch={branch}\r\nMax-Forwards: 10\r\nFrom: <sip:probe@{me}>;tag=s1tag\r\nTo: <sip:{gw}>\r\nCall-ID: s1-bcec8fa2\r\nCSeq: 7 OPTIONS\r\nContact: <sip:probe@{me}>\r\nContent-Length: 0\r\nX-Custom: yes\r\n\r\n",
            sip_ip(&d)
        )
    );
    let (request, from) = recv_datagram(&gateway, WAIT).expect("the OPTIONS");
    assert_eq!(from, d.sip_addr(), "sent from the double's SIP socket");
    assert_eq!(request, echo.sip, "the echo is what went on the wire");

    // The gateway answers 100 (swallowed), then 200, then repeats the 200 (absorbed).
    let answer = |status: &str| {
        format!(
            "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP {};rport={};branch={branch}\r\nFrom: <sip:probe@{me}>;tag=s1tag\r\nTo: <sip:{gw}>;tag=gw1\r\nCall-ID: s1-bcec8fa2\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            sip_ip(&d),
            me.port()
        )
    };
    gateway.send_to(answer("100 Trying").as_bytes(), me).unwrap();
    gateway.send_to(answer("200 OK").as_bytes(), me).unwrap();
    let response = app.next();
    assert_response_frame(&response, &txn, "udp", gw);
    assert_eq!(response.text(), answer("200 OK"));
    gateway.send_to(answer("200 OK").as_bytes(), me).unwrap();
    app.expect_silence();
}

/// A synthetic response for a UDP request whose To the stack defaulted (drachtio-protocol.md
/// §7.4): meta with empty address and port 0, the request's Via/From/Call-ID/CSeq, and a To
/// without brackets.
fn assert_synthetic_udp_failure(failure: &Frame, echo: &Frame, txn: &str, peer: SocketAddr, status_line: &str) {
    assert_meta(failure, &["<uuid>", "sip", "network", "0", "udp", "", "0", "<time>", txn, "", ""]);
    let to = failure.header("To").unwrap();
    assert_eq!(to, format!("sip:{peer};tag={}", tag_of(&to)), "a defaulted To comes back without brackets");
    assert_eq!(
        failure.text(),
        format!(
            "SIP/2.0 {status_line}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            echo.header("Via").unwrap(),
            echo.header("From").unwrap(),
            echo.header("Call-ID").unwrap(),
            echo.header("CSeq").unwrap()
        )
    );
}

#[test]
fn a_silent_udp_peer_gets_retransmissions_at_1_2_4_s_then_a_synthetic_408() {
    let d = start_double(Duration::from_millis(7500));
    let mut app = App::authenticated(&d);
    let silent = udp_peer();
    let peer = silent.local_addr().unwrap();
    let id = new_message_id();
    let sent_at = Instant::now();
    let echo = app.ask(&format!("{id}|sip||\r\nOPTIONS sip:{peer} SIP/2.0\r\n\r\n"));
    let txn = assert_request_echo(&echo, &id, "udp", &sip_ip(&d), &sip_port(&d));

    // The silent peer notes when each copy arrives while the app waits for the 408.
    let (arrivals, timeout, timed_out_after) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut arrivals = Vec::new();
            while let Some((copy, _)) =
                recv_datagram(&silent, Duration::from_millis(8500).saturating_sub(sent_at.elapsed()))
            {
                assert_eq!(copy, echo.sip, "every copy is byte-identical");
                arrivals.push(sent_at.elapsed().as_secs_f64());
            }
            arrivals
        });
        let timeout = app.next_within(Duration::from_secs(10));
        let timed_out_after = sent_at.elapsed().as_secs_f64();
        (watcher.join().unwrap(), timeout, timed_out_after)
    });
    assert_synthetic_udp_failure(&timeout, &echo, &txn, peer, "408 Request Timeout");
    assert!((7.4..8.5).contains(&timed_out_after), "408 after {timed_out_after:.3} s");
    assert_eq!(arrivals.len(), 4, "copies at {arrivals:?}");
    for (arrival, expected) in arrivals.iter().zip([0.0, 1.0, 3.0, 7.0]) {
        assert!((arrival - expected).abs() < 0.35, "copies at {arrivals:?}, wanted about 0, 1, 3, 7 s");
    }
    app.expect_silence();
}

#[test]
fn a_refused_tcp_connect_gets_a_synthetic_503() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    let ip = next_loopback_ip();
    let closed = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let id = new_message_id();
    let sent_at = Instant::now();
    let echo = app.ask(&format!("{id}|sip||\r\nOPTIONS sip:{closed};transport=tcp SIP/2.0\r\n\r\n"));
    let txn = assert_request_echo(&echo, &id, "tcp", &closed.ip().to_string(), &closed.port().to_string());
    let branch = our_branch(&echo, &d, "TCP");
    let from = echo.header("From").unwrap();
    assert_eq!(from, format!("<sip:{};transport=tcp>;tag={}", d.sip_addr(), tag_of(&from)));
    assert_eq!(echo.header("To").unwrap(), format!("<sip:{closed}>;transport=tcp"));

    let failure = app.next();
    assert!(sent_at.elapsed() < Duration::from_secs(1), "503 comes at once");
    assert_meta(&failure, &["<uuid>", "sip", "network", "0", "tcp", "", "0", "<time>", &txn, "", ""]);
    let to = failure.header("To").unwrap();
    assert_eq!(to, format!("sip:{closed};transport=tcp;tag={}", tag_of(&to)));
    assert_eq!(
        failure.text(),
        format!(
            "SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/TCP {};branch={branch}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            sip_ip(&d),
            echo.header("Call-ID").unwrap(),
            echo.header("CSeq").unwrap()
        )
    );
}

/// Capture step d1: OPTIONS over UDP to a port where nothing listens. The kernel answers with
/// ICMP port-unreachable and drachtio fails the transaction with a synthetic 503 at once (the
/// capture: 0.7 ms), not with the 408 of a silent peer.
#[test]
fn a_closed_udp_port_gets_a_synthetic_503_not_a_408() {
    let d = start_double(Duration::from_secs(20));
    let mut app = App::authenticated(&d);
    let ip = next_loopback_ip();
    let closed = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let id = new_message_id();
    let sent_at = Instant::now();
    let echo = app.ask(&format!("{id}|sip||\r\nOPTIONS sip:{closed} SIP/2.0\r\n\r\n"));
    let txn = assert_request_echo(&echo, &id, "udp", &sip_ip(&d), &sip_port(&d));

    let failure = app.next_within(Duration::from_secs(15));
    assert!(sent_at.elapsed() < Duration::from_secs(5), "503 before the first retransmissions, not at timer F");
    assert_synthetic_udp_failure(&failure, &echo, &txn, closed, "503 Service Unavailable");
    app.expect_silence();
}

#[test]
fn options_from_the_app_over_tcp_goes_down_a_connection_and_its_answer_comes_back() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    let ip = next_loopback_ip();
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let gateway = listener.local_addr().unwrap();
    let id = new_message_id();
    let echo = app.ask(&format!("{id}|sip||\r\nOPTIONS sip:{gateway};transport=tcp SIP/2.0\r\n\r\n"));
    let txn = assert_request_echo(&echo, &id, "tcp", &ip.to_string(), &gateway.port().to_string());
    let branch = our_branch(&echo, &d, "TCP");

    listener.set_nonblocking(false).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut received = vec![0u8; echo.sip.len()];
    conn.read_exact(&mut received).unwrap();
    assert_eq!(received, echo.sip);

    let answer = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP {};branch={branch}\r\nFrom: {}\r\nTo: <sip:{gateway}>;transport=tcp;tag=t1\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        sip_ip(&d),
        echo.header("From").unwrap(),
        echo.header("Call-ID").unwrap(),
        echo.header("CSeq").unwrap()
    );
    // Split in two writes: the double must frame the stream by Content-Length.
    let (a, b) = answer.as_bytes().split_at(40);
    conn.write_all(a).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    conn.write_all(b).unwrap();
    let response = app.next();
    assert_meta(
        &response,
        &["<uuid>", "sip", "network", "<len>", "tcp", &ip.to_string(), "<number>", "<time>", &txn, "", ""],
    );
    assert_eq!(response.text(), answer);
}

// ---------------------------------------------------------------------------------------------
// INVITE handling the stack does by itself (drachtio-protocol.md §2.3, §2.5, §4.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn an_invite_gets_100_at_once_and_a_cancel_is_answered_by_the_stack_then_passed_on() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    app.route(&d, "invite");
    let phone = udp_peer();
    let me = phone.local_addr().unwrap();
    let request = |method: &str| {
        format!(
            "{method} sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-inv1\r\nMax-Forwards: 70\r\nFrom: <sip:a@{me}>;tag=a1\r\nTo: <sip:{0}>\r\nCall-ID: inv-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n",
            d.sip_addr()
        )
    };
    phone.send_to(request("INVITE").as_bytes(), d.sip_addr()).unwrap();
    let (trying, _) = recv_datagram(&phone, WAIT).unwrap();
    assert!(trying.starts_with(b"SIP/2.0 100 Trying\r\n"));
    let invite = app.next();
    assert_eq!(invite.tokens.len(), 13);
    let txn = invite.tok(8).to_string();

    phone.send_to(request("CANCEL").as_bytes(), d.sip_addr()).unwrap();
    let (first, _) = recv_datagram(&phone, WAIT).unwrap();
    let (second, _) = recv_datagram(&phone, WAIT).unwrap();
    let mut answers = [String::from_utf8(first).unwrap(), String::from_utf8(second).unwrap()];
    answers.sort();
    assert!(answers[0].starts_with("SIP/2.0 200 OK\r\n") && answers[0].contains("CSeq: 1 CANCEL\r\n"), "{answers:?}");
    assert!(answers[1].starts_with("SIP/2.0 487 Request Terminated\r\n") && answers[1].contains("CSeq: 1 INVITE\r\n"));
    let cancel = app.next();
    assert_meta(
        &cancel,
        &[
            "<uuid>",
            "sip",
            "network",
            "<number>",
            "udp",
            &me.ip().to_string(),
            &me.port().to_string(),
            "<time>",
            &txn,
            "",
            "",
        ],
    );
    assert!(cancel.start_line().starts_with("CANCEL "));
    let id = new_message_id();
    let late = app.ask(&format!("{id}|sip|{txn}|\r\nSIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert_meta(&late, &["<uuid>", "response", &id, "NOK", "Response not sent due to unknown transaction"]);
}

#[test]
fn an_invite_from_the_app_gets_a_contact_a_dialog_id_and_an_automatic_ack_for_its_failure() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    let callee = udp_peer();
    let to = callee.local_addr().unwrap();
    let id = new_message_id();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let echo = app.ask(&format!("{id}|sip||\r\nINVITE sip:bob@{to} SIP/2.0\r\n\r\n{sdp}"));
    let txn = assert_request_echo(&echo, &id, "udp", &sip_ip(&d), &sip_port(&d));
    assert_eq!(echo.header("Contact").unwrap(), format!("<sip:{}>", d.sip_addr()));
    assert_eq!(echo.header("Content-Type").unwrap(), "application/sdp");
    assert_eq!(echo.header("Content-Length").unwrap(), sdp.len().to_string());
    assert!(echo.text().ends_with(sdp));
    let (invite, _) = recv_datagram(&callee, WAIT).unwrap();
    assert_eq!(invite, echo.sip);

    let busy = format!(
        "SIP/2.0 486 Busy Here\r\nVia: {}\r\nFrom: {}\r\nTo: <sip:bob@{to}>;tag=b1\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        echo.header("Via").unwrap(),
        echo.header("From").unwrap(),
        echo.header("Call-ID").unwrap(),
        echo.header("CSeq").unwrap()
    );
    callee.send_to(busy.as_bytes(), d.sip_addr()).unwrap();
    let response = app.next();
    let dialog = format!("{};from-tag={}", echo.header("Call-ID").unwrap(), tag_of(&echo.header("From").unwrap()));
    assert_meta(
        &response,
        &[
            "<uuid>",
            "sip",
            "network",
            "<len>",
            "udp",
            &to.ip().to_string(),
            &to.port().to_string(),
            "<time>",
            &txn,
            &dialog,
            "",
        ],
    );
    let (ack, _) = recv_datagram(&callee, WAIT).expect("the stack ACKs a failure itself");
    let ack = String::from_utf8(ack).unwrap();
    assert!(ack.starts_with(&format!("ACK sip:bob@{to} SIP/2.0\r\n")), "{ack}");
    assert_eq!(header(&ack, "Via"), echo.header("Via"));
    assert_eq!(header(&ack, "To").unwrap(), format!("<sip:bob@{to}>;tag=b1"));
    assert!(ack.contains(&format!("CSeq: {} ACK\r\n", echo.header("CSeq").unwrap().split(' ').next().unwrap())));
}

#[test]
fn the_app_can_cancel_its_own_invite_and_only_the_487_comes_back() {
    let d = start_double(Duration::from_secs(2));
    let mut app = App::authenticated(&d);
    let callee = udp_peer();
    let to = callee.local_addr().unwrap();
    let id = new_message_id();
    let echo = app.ask(&format!("{id}|sip||\r\nINVITE sip:bob@{to} SIP/2.0\r\n\r\n"));
    let txn = assert_request_echo(&echo, &id, "udp", &sip_ip(&d), &sip_port(&d));
    recv_datagram(&callee, WAIT).expect("the INVITE");
    let reply = |status: &str, method: &str| {
        let number = echo.header("CSeq").unwrap().split(' ').next().unwrap().to_string();
        format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: <sip:bob@{to}>;tag=b2\r\nCall-ID: {}\r\nCSeq: {number} {method}\r\nContent-Length: 0\r\n\r\n",
            echo.header("Via").unwrap(),
            echo.header("From").unwrap(),
            echo.header("Call-ID").unwrap()
        )
    };
    callee.send_to(reply("180 Ringing", "INVITE").as_bytes(), d.sip_addr()).unwrap();
    assert_eq!(app.next().start_line(), "SIP/2.0 180 Ringing");

    let id = new_message_id();
    let cancel_echo = app.ask(&format!("{id}|sip|{txn}|\r\nCANCEL sip:bob@{to} SIP/2.0\r\n\r\n"));
    let cancel_txn = assert_request_echo(&cancel_echo, &id, "udp", &sip_ip(&d), &sip_port(&d));
    assert_ne!(cancel_txn, txn);
    assert!(cancel_echo.start_line().starts_with("CANCEL "));
    assert_eq!(cancel_echo.header("Via"), echo.header("Via"), "a CANCEL shares its INVITE's branch");
    let (cancel, _) = recv_datagram(&callee, WAIT).unwrap();
    assert_eq!(cancel, cancel_echo.sip);

    callee.send_to(reply("200 OK", "CANCEL").as_bytes(), d.sip_addr()).unwrap();
    callee.send_to(reply("487 Request Terminated", "INVITE").as_bytes(), d.sip_addr()).unwrap();
    let terminated = app.next();
    assert_eq!(terminated.tok(8), txn);
    assert_eq!(terminated.start_line(), "SIP/2.0 487 Request Terminated");
    app.expect_silence();

    let id = new_message_id();
    let unknown = app.ask(&format!("{id}|sip|{txn}|\r\nCANCEL sip:bob@{to} SIP/2.0\r\n\r\n"));
    assert_meta(
        &unknown,
        &["<uuid>", "response", &id, "NOK", &format!("unable to cancel unknown transaction id: {txn}")],
    );
}

/// A port for sipp's media sockets (`-mp`): sipp binds its RTP sockets there and two above
/// even when a scenario has no media. Chosen below the kernel's ephemeral range (where
/// `free_port` and every outgoing socket live) and checked free, so that parallel tests do not
/// collide on it.
fn media_port(ip: std::net::Ipv4Addr) -> u16 {
    for _ in 0..200 {
        let base = 10_000 + 4 * (rand::random::<u16>() % 5_000);
        if (base..base + 4).all(|p| std::net::UdpSocket::bind((ip, p)).is_ok()) {
            return base;
        }
    }
    panic!("no free media port range on {ip}");
}
