//! Fidelity of the drachtio double, requests from the app: OPTIONS and REGISTER sent through
//! the double, the headers it keeps and rewrites, and the synthetic 408/503 of silent or
//! refusing peers.
//!
//! Every test replays a step of `docs/spec/drachtio-capture.txt` or `docs/spec/drachtio-capture-uac.txt`
//! and checks that the double answers with the captured shape, token by token (ids, times, tags
//! and branches differ; counts, positions and texts must not). The rig is
//! tests/support/double_rig.rs.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use sbc_sidecar::drachtio::message::new_message_id;

#[path = "support/double_rig.rs"]
mod double_rig;
use double_rig::*;

// ---------------------------------------------------------------------------------------------
// Requests from the app (drachtio-capture-uac.txt steps a, b, c1, c2, d2, d3, s1)
// ---------------------------------------------------------------------------------------------

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
