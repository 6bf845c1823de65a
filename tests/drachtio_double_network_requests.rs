//! Fidelity of the drachtio double, requests from the network: a phone's REGISTER over UDP and
//! TCP, a feature server's OPTIONS, UDP retransmissions, received/rport, unrouted requests and
//! the stack's own answers.
//!
//! Every test replays a step of `docs/spec/drachtio-capture.txt` or `docs/spec/drachtio-capture-uac.txt`
//! and checks that the double answers with the captured shape, token by token (ids, times, tags
//! and branches differ; counts, positions and texts must not). The rig is
//! tests/support/double_rig.rs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sbc_sidecar::drachtio::message::new_message_id;

#[path = "support/double_rig.rs"]
mod double_rig;
use double_rig::*;

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
