//! The drachtio client against a scripted server that sends the bytes captured from a live
//! drachtio-server (docs/spec/drachtio-capture*.txt) and checks what the client sends.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver};
use sbc_sidecar::drachtio::frame::FrameDecoder;
use sbc_sidecar::drachtio::{
    ClientConfig, ConnectionEvent, DrachtioClient, IncomingRequest, Route, UacError, UacEvent,
};
use sbc_sidecar::supervise::Supervisor;
use sbc_sidecar::telemetry::Metrics;
use sbc_test_tools::capture::{self, CapturedFrame, Dir};

const WAIT: Duration = Duration::from_secs(5);

fn config(port: u16) -> ClientConfig {
    ClientConfig {
        host: "127.0.0.1".into(),
        port,
        secret: "cymru".into(),
        ping_interval: Duration::from_secs(30),
        pong_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        private_networks: vec!["127.0.0.0/8".parse().unwrap()],
    }
}

/// The server side of one control connection, reading frames with the production decoder.
struct ScriptedServer {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl ScriptedServer {
    fn accept(listener: &TcpListener) -> ScriptedServer {
        listener.set_nonblocking(false).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        ScriptedServer { stream, decoder: FrameDecoder::default() }
    }

    fn read_payload(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(p) = self.decoder.next_frame().unwrap() {
                return p;
            }
            let n = self.stream.read(&mut buf).expect("client sent a frame in time");
            assert!(n > 0, "client closed the connection");
            self.decoder.push(&buf[..n]);
        }
    }

    fn send(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).unwrap();
    }

    /// Sends a captured frame with one message id swapped for another of the same length.
    fn send_with_id(&mut self, frame: &CapturedFrame, captured_id: &str, id: &str) {
        self.send(&replace(&frame.bytes, captured_id, id));
    }

    /// Authenticates the client with the captured OK and answers its route messages.
    fn authenticate(&mut self, frames: &[CapturedFrame]) -> Vec<String> {
        let auth = self.read_payload();
        let id = msg_id(&auth);
        assert_eq!(String::from_utf8_lossy(&auth), format!("{id}|authenticate|cymru|"));
        let ok = frames.iter().find(|f| f.dir == Dir::ToApp && f.meta()[3] == "OK").unwrap();
        self.send_with_id(ok, &ok.meta()[2], &id);
        let route_ok = frames.iter().find(|f| f.dir == Dir::ToApp && f.meta().len() == 4).unwrap();
        let mut verbs = Vec::new();
        for _ in 0..2 {
            let p = String::from_utf8(self.read_payload()).unwrap();
            let t: Vec<&str> = p.split('|').collect();
            assert_eq!(t.len(), 3, "route frame {p}");
            assert_eq!(t[1], "route");
            verbs.push(t[2].to_string());
            self.send_with_id(route_ok, &route_ok.meta()[2], t[0]);
        }
        verbs.sort();
        verbs
    }
}

fn msg_id(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).split('|').next().unwrap().to_string()
}

fn replace(hay: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "ids of equal length keep the length prefix valid");
    let s = hay.to_vec();
    let pos = s.windows(from.len()).position(|w| w == from.as_bytes()).expect("id present");
    let mut out = s[..pos].to_vec();
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(&s[pos + from.len()..]);
    out
}

struct Harness {
    listener: TcpListener,
    client: Option<DrachtioClient>,
    register: Receiver<IncomingRequest>,
    events: Receiver<ConnectionEvent>,
}

fn start(register_queue: usize, cfg: impl FnOnce(&mut ClientConfig)) -> Harness {
    start_counting(register_queue, cfg, Metrics::disabled())
}

/// [`start`] with the client counting in `metrics`.
fn start_counting(register_queue: usize, cfg: impl FnOnce(&mut ClientConfig), metrics: Metrics) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config(listener.local_addr().unwrap().port());
    cfg(&mut c);
    let (reg_tx, register) = bounded(register_queue);
    let (opt_tx, _opt_rx) = bounded(16);
    let (ev_tx, events) = unbounded();
    let routes =
        vec![Route { method: "REGISTER".into(), queue: reg_tx }, Route { method: "OPTIONS".into(), queue: opt_tx }];
    let client = DrachtioClient::start(c, routes, vec![ev_tx], metrics, &Supervisor::unwatched()).unwrap();
    // keep the OPTIONS receiver alive for the client's lifetime
    std::mem::forget(_opt_rx);
    Harness { listener, client: Some(client), register, events }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            c.shutdown();
        }
    }
}

#[test]
fn client_authenticates_routes_and_answers_the_captured_register_byte_for_byte() {
    let frames = capture::load("drachtio-capture.txt");
    let h = start(16, |_| {});
    let mut server = ScriptedServer::accept(&h.listener);
    assert_eq!(server.authenticate(&frames), vec!["options", "register"]);
    match h.events.recv_timeout(WAIT).unwrap() {
        ConnectionEvent::Connected(info) => {
            assert_eq!(info.hostports, "tcp/127.0.0.1:5060,udp/127.0.0.1:5060");
            assert_eq!(info.version, "v0.9.10-1-g9c2dd4cb6a");
            assert_eq!(info.local_hostports, "tcp/127.0.0.1:5060,udp/127.0.0.1:5060");
        }
        other => panic!("expected Connected, got {other:?}"),
    }

    // The UDP REGISTER delivery, written one byte at a time: any split must work.
    let deliveries: Vec<&CapturedFrame> =
        frames.iter().filter(|f| f.dir == Dir::ToApp && f.meta()[1] == "sip").collect();
    let answers: Vec<&CapturedFrame> =
        frames.iter().filter(|f| f.dir == Dir::ToServer && f.meta()[1] == "sip").collect();
    for (delivery, answer) in deliveries.iter().zip(answers.iter()) {
        for b in &delivery.bytes {
            server.send(&[*b]);
        }
        let req = h.register.recv_timeout(WAIT).expect("REGISTER delivered to its route");
        let meta = delivery.meta();
        assert_eq!(req.meta.protocol, meta[4]);
        assert_eq!(req.meta.address, "127.0.0.1");
        assert_eq!(req.meta.port, 5070);
        assert_eq!(req.meta.transaction_id, meta[8]);
        assert_eq!(req.meta.local_port, Some(5060));
        assert_eq!(&*req.server_hostport, "tcp/127.0.0.1:5060,udp/127.0.0.1:5060");
        assert_eq!(req.private_sip_address.as_deref(), Some("127.0.0.1:5060"), "the local tcp entry");
        assert_eq!(req.method(), "REGISTER");
        let contact = req.message.header("Contact").unwrap().to_string();
        let resp = req.response(200).header("Contact", &contact).header("Expires", "3600");
        req.respond(resp);

        let sent = server.read_payload();
        let expected = replace(answer.payload(), &answer.meta()[0], &msg_id(&sent));
        assert_eq!(String::from_utf8_lossy(&sent), String::from_utf8_lossy(&expected));
        // drachtio's echo of the response is consumed without effect
        let echo = frames.iter().find(|f| f.dir == Dir::ToApp && f.meta().get(2) == Some(&answer.meta()[0])).unwrap();
        server.send_with_id(echo, &answer.meta()[0], &msg_id(&sent));
    }
}

#[test]
fn client_correlates_echoes_and_responses_of_its_own_requests() {
    let frames = capture::load("drachtio-capture-uac.txt");
    let h = start(16, |_| {});
    let mut server = ScriptedServer::accept(&h.listener);
    server.authenticate(&capture::load("drachtio-capture.txt"));
    let handle = h.client.as_ref().unwrap().handle();

    // Every app request of the capture with an OK echo and a SIP response: steps a, b, c1, c2, d1, d3
    let mut checked = 0;
    for (i, f) in frames.iter().enumerate() {
        if f.dir != Dir::ToServer || f.meta()[1] != "sip" || !f.meta()[2].is_empty() {
            continue;
        }
        let Some(echo) = frames[i + 1..].iter().find(|e| e.dir == Dir::ToApp && e.meta()[2] == f.meta()[0]) else {
            continue;
        };
        let proxy = f.meta().get(4).cloned().filter(|p| !p.is_empty());
        let rx = handle.send_request(f.sip().unwrap().to_vec(), proxy.as_deref());
        let sent = server.read_payload();
        let id = msg_id(&sent);
        assert_eq!(sent, replace(f.payload(), &f.meta()[0], &id), "request frame as captured");
        server.send_with_id(echo, &f.meta()[0], &id);
        if echo.meta()[3] != "OK" {
            match rx.recv_timeout(WAIT).unwrap() {
                UacEvent::Failed(UacError::Rejected(text)) => assert_eq!(text, echo.meta()[4]),
                other => panic!("expected a rejection, got {other:?}"),
            }
            checked += 1;
            continue;
        }
        let txn = echo.meta()[10].clone();
        match rx.recv_timeout(WAIT).unwrap() {
            UacEvent::Sent { transaction_id, echo: text } => {
                assert_eq!(transaction_id, txn);
                assert!(text.starts_with(f.sip().unwrap().split(|b| *b == b'\r').next().unwrap()));
            }
            other => panic!("expected Sent, got {other:?}"),
        }
        if let Some(resp) =
            frames[i + 1..].iter().find(|r| r.dir == Dir::ToApp && r.meta()[1] == "sip" && r.meta()[8] == txn)
        {
            server.send(&resp.bytes);
            match rx.recv_timeout(WAIT).unwrap() {
                UacEvent::Response { meta, message } => {
                    assert_eq!(meta.transaction_id, txn);
                    assert_eq!(meta.address, resp.meta()[5], "synthetic responses have an empty address");
                    assert_eq!(meta.port.to_string(), resp.meta()[6]);
                    let status_line = String::from_utf8_lossy(resp.sip().unwrap()).lines().next().unwrap().to_string();
                    assert_eq!(
                        format!("SIP/2.0 {} {}", message.status().unwrap(), message.reason().unwrap()),
                        status_line
                    );
                }
                other => panic!("expected a response, got {other:?}"),
            }
        }
        checked += 1;
    }
    assert!(checked >= 9, "requests of the capture replayed: {checked}");
}

#[test]
fn nok_for_a_response_of_ours_keeps_the_connection() {
    let h = start(16, |_| {});
    let mut server = ScriptedServer::accept(&h.listener);
    server.authenticate(&capture::load("drachtio-capture.txt"));
    let uac = capture::load("drachtio-capture-uac.txt");
    let nok = uac
        .iter()
        .find(|f| f.meta().get(4).map(String::as_str) == Some("Response not sent due to unknown transaction"))
        .unwrap();
    server.send(&nok.bytes);
    // The connection is still in use: a request of ours still goes out on it.
    let rx =
        h.client.as_ref().unwrap().handle().send_request(b"OPTIONS sip:127.0.0.16:5060 SIP/2.0\r\n\r\n".to_vec(), None);
    let sent = server.read_payload();
    assert!(String::from_utf8_lossy(&sent).contains("|sip||\r\nOPTIONS sip:127.0.0.16:5060 SIP/2.0"));
    assert!(rx.try_recv().is_err(), "no failure reported for a written request");
}

#[test]
fn wrong_secret_is_retried_with_backoff_not_in_a_tight_loop() {
    let frames = capture::load("drachtio-capture.txt");
    let no = frames
        .iter()
        .find(|f| f.dir == Dir::ToApp && f.meta().get(3).map(String::as_str) == Some("NO"))
        .unwrap()
        .clone();
    let h = start(16, |c| {
        c.backoff_min = Duration::from_millis(100);
        c.backoff_max = Duration::from_millis(400);
    });
    let started = Instant::now();
    let mut attempts = 0;
    h.listener.set_nonblocking(true).unwrap();
    while started.elapsed() < Duration::from_millis(1500) {
        match h.listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(WAIT)).unwrap();
                let mut s = ScriptedServer { stream, decoder: FrameDecoder::default() };
                let auth = s.read_payload();
                s.send_with_id(&no, &no.meta()[2], &msg_id(&auth));
                attempts += 1;
                // drachtio closes after NO
                drop(s);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    // 100 ms × 1.7ⁿ (±20 %) capped at 400 ms gives about 4–7 attempts in 1.5 s; a tight
    // loop would give hundreds.
    assert!((2..=10).contains(&attempts), "attempts in 1.5 s: {attempts}");
    assert!(h.events.try_recv().is_err(), "no Connected event with a wrong secret");
}

#[test]
fn missing_pongs_make_the_client_reconnect_and_reauthenticate() {
    let frames = capture::load("drachtio-capture.txt");
    let h = start(16, |c| {
        c.ping_interval = Duration::from_millis(100);
        c.pong_timeout = Duration::from_millis(300);
    });
    let mut first = ScriptedServer::accept(&h.listener);
    first.authenticate(&frames);
    assert!(matches!(h.events.recv_timeout(WAIT).unwrap(), ConnectionEvent::Connected(_)));
    let ping = first.read_payload();
    assert!(String::from_utf8_lossy(&ping).ends_with("|ping"));
    // never answer: the client must give up on this connection and come back
    let mut second = ScriptedServer::accept(&h.listener);
    match h.events.recv_timeout(WAIT).unwrap() {
        ConnectionEvent::Disconnected { reason } => assert!(reason.contains("pong"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(second.authenticate(&frames), vec!["options", "register"]);
    assert!(matches!(h.events.recv_timeout(WAIT).unwrap(), ConnectionEvent::Connected(_)));
    // answered pings keep the connection
    let pong = frames.iter().find(|f| f.meta().get(4).map(String::as_str) == Some("pong")).unwrap();
    for _ in 0..4 {
        let p = second.read_payload();
        second.send_with_id(pong, &pong.meta()[2], &msg_id(&p));
    }
    assert!(h.events.try_recv().is_err(), "answered pings keep the connection");
}

#[test]
fn a_closed_connection_fails_requests_in_flight_and_reconnects() {
    let frames = capture::load("drachtio-capture.txt");
    let h = start(16, |_| {});
    let mut first = ScriptedServer::accept(&h.listener);
    first.authenticate(&frames);
    assert!(matches!(h.events.recv_timeout(WAIT).unwrap(), ConnectionEvent::Connected(_)));
    let rx =
        h.client.as_ref().unwrap().handle().send_request(b"OPTIONS sip:127.0.0.16:5060 SIP/2.0\r\n\r\n".to_vec(), None);
    let _ = first.read_payload();
    drop(first);
    match rx.recv_timeout(WAIT).unwrap() {
        UacEvent::Failed(UacError::Disconnected) => {}
        other => panic!("expected Disconnected failure, got {other:?}"),
    }
    assert!(matches!(h.events.recv_timeout(WAIT).unwrap(), ConnectionEvent::Disconnected { .. }));
    let mut second = ScriptedServer::accept(&h.listener);
    assert_eq!(second.authenticate(&frames), vec!["options", "register"]);
}

#[test]
fn a_full_queue_is_answered_503_with_retry_after() {
    let frames = capture::load("drachtio-capture.txt");
    let h = start(1, |_| {});
    let mut server = ScriptedServer::accept(&h.listener);
    server.authenticate(&frames);
    let delivery = frames.iter().find(|f| f.dir == Dir::ToApp && f.meta()[1] == "sip").unwrap();
    server.send(&delivery.bytes); // fills the queue of one
    server.send(&delivery.bytes); // no room: 503
    let sent = String::from_utf8(server.read_payload()).unwrap();
    assert!(sent.contains(&format!("|sip|{}|\r\nSIP/2.0 503 Service Unavailable\r\n", delivery.meta()[8])), "{sent}");
    assert!(sent.contains("\r\nRetry-After: 5\r\n"), "{sent}");
    assert!(h.register.try_recv().is_ok(), "the first request is still queued");
}

#[test]
fn an_unparsable_request_gets_400_and_the_connection_survives() {
    let frames = capture::load("drachtio-capture.txt");
    let h = start(16, |_| {});
    let mut server = ScriptedServer::accept(&h.listener);
    server.authenticate(&frames);
    let garbage = b"abc|sip|network|5|udp|127.0.0.1|5070|10:02:44.185253|txn-1||127.0.0.1|5060|\r\nhello";
    server.send(&sbc_sidecar::drachtio::frame::encode_unchecked(garbage));
    let sent = String::from_utf8(server.read_payload()).unwrap();
    assert!(sent.contains("|sip|txn-1|\r\nSIP/2.0 400 Bad Request\r\n"), "{sent}");
    let delivery = frames.iter().find(|f| f.dir == Dir::ToApp && f.meta()[1] == "sip").unwrap();
    server.send(&delivery.bytes);
    assert!(h.register.recv_timeout(WAIT).is_ok(), "later requests still delivered");
}

#[test]
fn oversized_requests_are_refused_instead_of_stalling_drachtio() {
    let h = start(16, |_| {});
    let _server = ScriptedServer::accept(&h.listener);
    let mut big = b"MESSAGE sip:a@127.0.0.1 SIP/2.0\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 13 * 1024));
    let rx = h.client.as_ref().unwrap().handle().send_request(big, None);
    match rx.recv_timeout(WAIT).unwrap() {
        UacEvent::Failed(UacError::TooLarge(n)) => assert!(n > 12 * 1024),
        UacEvent::Failed(UacError::NotConnected) => panic!("size must be checked first"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// The captured REGISTER delivery with its transaction id replaced by one of the same length
/// ending in `tag`, so that several deliveries are distinct transactions.
fn delivery_with_txn(frames: &[CapturedFrame], tag: char) -> (Vec<u8>, String) {
    let delivery = frames.iter().find(|f| f.dir == Dir::ToApp && f.meta()[1] == "sip").unwrap();
    let captured = delivery.meta()[8].clone();
    let mut txn = captured.clone();
    txn.pop();
    txn.push(tag);
    (replace(&delivery.bytes, &captured, &txn), txn)
}

#[test]
fn a_request_whose_responder_is_dropped_is_answered_503_once() {
    let frames = capture::load("drachtio-capture.txt");
    let h = start(16, |_| {});
    let mut server = ScriptedServer::accept(&h.listener);
    server.authenticate(&frames);
    let (bytes, txn) = delivery_with_txn(&frames, 'a');
    server.send(&bytes);
    let req = h.register.recv_timeout(WAIT).expect("REGISTER delivered");
    drop(req);
    let sent = String::from_utf8(server.read_payload()).unwrap();
    assert!(sent.contains(&format!("|sip|{txn}|\r\nSIP/2.0 503 Service Unavailable\r\n")), "{sent}");
    assert!(sent.contains("\r\nRetry-After: 5\r\n"), "{sent}");
    // An answered request is not answered again when its responder goes away.
    let (bytes, txn) = delivery_with_txn(&frames, 'b');
    server.send(&bytes);
    let req = h.register.recv_timeout(WAIT).expect("second REGISTER delivered");
    let resp = req.response(200);
    req.respond(resp);
    let sent = String::from_utf8(server.read_payload()).unwrap();
    assert!(sent.contains(&format!("|sip|{txn}|\r\nSIP/2.0 200 OK\r\n")), "{sent}");
    // The next frame is the authenticated ping or nothing: no second answer for `txn`.
    server.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 512];
    match server.stream.read(&mut buf) {
        Ok(n) => assert!(!String::from_utf8_lossy(&buf[..n]).contains(&txn), "answered twice"),
        Err(e) => assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}"),
    }
}

#[test]
fn draining_answers_new_requests_503_and_shutdown_withdraws_routes_before_closing() {
    let frames = capture::load("drachtio-capture.txt");
    let mut h = start(16, |_| {});
    let mut server = ScriptedServer::accept(&h.listener);
    server.authenticate(&frames);
    // A: handed to the role, which still holds it when the client shuts down.
    let (bytes, held) = delivery_with_txn(&frames, 'a');
    server.send(&bytes);
    let held_request = h.register.recv_timeout(WAIT).expect("REGISTER delivered");

    let client = h.client.take().unwrap();
    client.drain();
    assert!(client.is_draining());
    // B: arrives while draining: answered by the reader, never reaches the role.
    let (bytes, txn_b) = delivery_with_txn(&frames, 'b');
    server.send(&bytes);
    let sent = String::from_utf8(server.read_payload()).unwrap();
    assert!(sent.contains(&format!("|sip|{txn_b}|\r\nSIP/2.0 503 Service Unavailable\r\n")), "{sent}");
    assert!(sent.contains("\r\nRetry-After: 5\r\n"), "{sent}");
    assert!(h.register.try_recv().is_err(), "nothing new for the role while draining");

    let stopper = std::thread::spawn(move || client.shutdown());
    // The routes are withdrawn, one remove_route per verb.
    let mut last_id = String::new();
    for verb in ["options", "register"] {
        let p = String::from_utf8(server.read_payload()).unwrap();
        let t: Vec<&str> = p.split('|').collect();
        assert_eq!(&t[1..], &["remove_route", verb], "{p}");
        last_id = t[0].to_string();
    }
    // C: delivered before drachtio processed the withdrawal: still answered.
    let (bytes, txn_c) = delivery_with_txn(&frames, 'c');
    server.send(&bytes);
    let sent = String::from_utf8(server.read_payload()).unwrap();
    assert!(sent.contains(&format!("|sip|{txn_c}|\r\nSIP/2.0 503 Service Unavailable\r\n")), "{sent}");
    server.send(&sbc_sidecar::drachtio::frame::encode_unchecked(format!("{last_id}|response|{last_id}|OK").as_bytes()));
    // A, still held by the role, is answered by the writer before it closes.
    let sent = String::from_utf8(server.read_payload()).unwrap();
    assert!(sent.contains(&format!("|sip|{held}|\r\nSIP/2.0 503 Service Unavailable\r\n")), "{sent}");
    let stats = stopper.join().expect("shutdown returns");
    assert_eq!(stats.unanswered_at_close, 1);
    assert_eq!(stats.unanswered_dropped, 0);
    let mut buf = [0u8; 64];
    assert_eq!(server.stream.read(&mut buf).unwrap_or(0), 0, "connection closed after the flush");
    drop(held_request);
}

#[test]
fn unanswered_requests_are_counted_in_statsd() {
    use sbc_sidecar::config::StatsProtocol;
    use sbc_sidecar::telemetry::MetricsSettings;
    let statsd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    statsd.set_read_timeout(Some(WAIT)).unwrap();
    let settings = MetricsSettings {
        enabled: true,
        host: "127.0.0.1".into(),
        port: statsd.local_addr().unwrap().port(),
        protocol: StatsProtocol::Udp,
        prefix: String::new(),
        tags: Vec::new(),
        sample_rate: 1.0,
    };
    let frames = capture::load("drachtio-capture.txt");
    let h = start_counting(16, |_| {}, Metrics::new(&settings).unwrap());
    let mut server = ScriptedServer::accept(&h.listener);
    server.authenticate(&frames);
    let (bytes, txn) = delivery_with_txn(&frames, 'd');
    server.send(&bytes);
    drop(h.register.recv_timeout(WAIT).expect("REGISTER delivered"));
    let sent = String::from_utf8(server.read_payload()).unwrap();
    assert!(sent.contains(&format!("|sip|{txn}|\r\nSIP/2.0 503 Service Unavailable\r\n")), "{sent}");
    let mut buf = [0u8; 512];
    let n = statsd.recv(&mut buf).expect("a statsd datagram");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "sbc.sip.unanswered:1|c|#reason:dropped");
}

/// The captured REGISTER delivery as transaction number `n` (its id's last six characters
/// replaced by the number, so the length prefix stays valid).
fn delivery_number(frames: &[CapturedFrame], n: usize) -> (Vec<u8>, String) {
    let delivery = frames.iter().find(|f| f.dir == Dir::ToApp && f.meta()[1] == "sip").unwrap();
    let captured = delivery.meta()[8].clone();
    let txn = format!("{}{n:06}", &captured[..captured.len() - 6]);
    (replace(&delivery.bytes, &captured, &txn), txn)
}

fn sysctl_max(path: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_whitespace().last().and_then(|v| v.parse().ok()).unwrap_or(4 << 20)
}

/// Padding of each answer of the two tests below.
const ANSWER_PAD: usize = 2900;

/// A client and an authenticated server with enough REGISTER deliveries (returned, not yet
/// sent, with their transaction ids) that answers of [`ANSWER_PAD`] bytes are more than the
/// kernel buffers between the two sockets hold while the server reads nothing (the sender's
/// buffer grows to tcp_wmem's maximum, the receiver's stays near its default until the
/// application reads), so writes must wait for room.
fn more_answers_than_the_kernel_buffers() -> (Harness, ScriptedServer, usize, Vec<u8>, HashSet<String>) {
    let frames = capture::load("drachtio-capture.txt");
    let buffered = sysctl_max("/proc/sys/net/ipv4/tcp_wmem") + (1 << 20);
    let count = buffered / ANSWER_PAD + 300;
    let h = start(count + 16, |_| {});
    let mut server = ScriptedServer::accept(&h.listener);
    server.authenticate(&frames);
    let mut deliveries = Vec::with_capacity(count * 1100);
    let mut expected = HashSet::new();
    for n in 0..count {
        let (bytes, txn) = delivery_number(&frames, n);
        deliveries.extend_from_slice(&bytes);
        expected.insert(txn);
    }
    (h, server, count, deliveries, expected)
}

#[test]
fn a_drachtio_that_stops_reading_gets_every_answer_whole_once_it_reads_again() {
    let (h, mut server, count, deliveries, expected) = more_answers_than_the_kernel_buffers();
    server.send(&deliveries);
    let register = h.register.clone();
    let role = std::thread::spawn(move || {
        let pad = "x".repeat(ANSWER_PAD);
        for _ in 0..count {
            let req = register.recv_timeout(WAIT).expect("REGISTER delivered");
            let resp = req.response(200).header("X-Pad", &pad);
            req.respond(resp);
        }
    });
    // drachtio is busy: nothing read for a while (shorter than the writer's 5 s stall limit).
    std::thread::sleep(Duration::from_millis(1500));
    let mut answered = HashSet::new();
    while answered.len() < count {
        let payload = String::from_utf8(server.read_payload()).expect("whole UTF-8 frames");
        let t: Vec<&str> = payload.splitn(4, '|').collect();
        assert_eq!(t[1], "sip", "an answer frame, not {:?}", &payload[..payload.len().min(120)]);
        assert!(t[3].starts_with("\r\nSIP/2.0 200 OK\r\n"), "a whole response: {:?}", &t[3][..t[3].len().min(80)]);
        assert!(t[3].ends_with("\r\n\r\n"), "frames never interleave");
        assert!(expected.contains(t[2]), "an answer to a delivered transaction: {}", t[2]);
        assert!(answered.insert(t[2].to_string()), "answered twice: {}", t[2]);
    }
    role.join().expect("the role answered everything");
    // Same connection throughout: no new authenticate, no event.
    assert!(h.events.try_iter().all(|e| matches!(e, ConnectionEvent::Connected(_))), "no disconnect");
}

#[test]
fn answers_from_many_threads_all_arrive_once_each_in_frames_drachtio_parses() {
    const COUNT: usize = 2000;
    const ROLES: usize = 8;
    // Every seventh request is dropped unanswered: it still gets exactly one answer, a 503.
    let dropped = |n: usize| n.is_multiple_of(7);
    let number = |txn: &str| -> usize { txn[txn.len() - 6..].parse().expect("numbered transaction") };
    let frames = capture::load("drachtio-capture.txt");
    let mut h = start(COUNT + 16, |_| {});
    let mut server = ScriptedServer::accept(&h.listener);
    server.authenticate(&frames);
    let mut deliveries = Vec::with_capacity(COUNT * 1100);
    let mut expected = std::collections::HashSet::new();
    for n in 0..COUNT {
        let (bytes, txn) = delivery_number(&frames, n);
        deliveries.extend_from_slice(&bytes);
        expected.insert(txn);
    }
    server.send(&deliveries);
    let roles: Vec<_> = (0..ROLES)
        .map(|_| {
            let register = h.register.clone();
            std::thread::spawn(move || {
                while let Ok(req) = register.recv_timeout(Duration::from_millis(500)) {
                    if dropped(number(&req.meta.transaction_id)) {
                        drop(req);
                    } else {
                        let resp = req.response(200);
                        req.respond(resp);
                    }
                }
            })
        })
        .collect();
    let mut answered = HashSet::new();
    while answered.len() < COUNT {
        let payload = String::from_utf8(server.read_payload()).expect("whole UTF-8 frames");
        let t: Vec<&str> = payload.splitn(4, '|').collect();
        assert_eq!(t[1], "sip", "an answer frame, not {:?}", &payload[..payload.len().min(120)]);
        assert!(expected.contains(t[2]), "an answer to a delivered transaction: {}", t[2]);
        assert!(answered.insert(t[2].to_string()), "answered twice: {}", t[2]);
        let status = if dropped(number(t[2])) { "503 Service Unavailable" } else { "200 OK" };
        assert!(t[3].starts_with(&format!("\r\nSIP/2.0 {status}\r\n")), "{}: {:?}", t[2], &t[3][..t[3].len().min(60)]);
        assert!(t[3].ends_with("\r\n\r\n"), "a whole response");
    }
    for role in roles {
        role.join().expect("the role answered what it took");
    }
    let stats = h.client.take().unwrap().shutdown();
    assert_eq!(stats.unanswered_dropped as usize, (0..COUNT).filter(|n| dropped(*n)).count());
    assert_eq!(stats.unanswered_at_close, 0, "every request was answered before the close");
    // What came after the answers (the route withdrawals) answers nothing a second time.
    let mut rest = Vec::new();
    server.stream.read_to_end(&mut rest).expect("the client closes the connection at shutdown");
    server.decoder.push(&rest);
    while let Some(payload) = server.decoder.next_frame().expect("whole frames") {
        assert!(!String::from_utf8_lossy(&payload).contains("|sip|"), "an answer after all were answered");
    }
}

#[test]
fn a_drachtio_that_stops_reading_for_good_is_reconnected_after_the_write_timeout() {
    let (h, mut server, _, deliveries, _) = more_answers_than_the_kernel_buffers();
    server.send(&deliveries);
    let register = h.register.clone();
    let role = std::thread::spawn(move || {
        let pad = "x".repeat(ANSWER_PAD);
        while let Ok(req) = register.recv_timeout(Duration::from_secs(1)) {
            let resp = req.response(200).header("X-Pad", &pad);
            req.respond(resp);
        }
    });
    // The server never reads again: after the writer's 5 s without progress the client gives
    // the connection up and connects anew.
    let started = Instant::now();
    let lost = loop {
        match h.events.recv_timeout(Duration::from_secs(15)).expect("a connection event") {
            ConnectionEvent::Connected(_) => continue,
            ConnectionEvent::Disconnected { reason } => break reason,
        }
    };
    assert!(started.elapsed() >= Duration::from_secs(4), "not before the write timeout: {lost}");
    let mut again = ScriptedServer::accept(&h.listener);
    again.authenticate(&capture::load("drachtio-capture.txt"));
    role.join().expect("the role answered everything");
    drop(server);
}
