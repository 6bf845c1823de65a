//! Fidelity of the drachtio double, the control port: authenticate, route, ping, wrong secrets,
//! malformed messages, round robin between apps, stop and restart, garbage on either side.
//!
//! Every test replays a step of `docs/spec/drachtio-capture.txt` or `docs/spec/drachtio-capture-uac.txt`
//! and checks that the double answers with the captured shape, token by token (ids, times, tags
//! and branches differ; counts, positions and texts must not). The rig is
//! tests/support/double_rig.rs.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sbc_sidecar::drachtio::message::new_message_id;
use sbc_test_tools::double::{Direction, Double, DoubleConfig};

#[path = "support/double_rig.rs"]
mod double_rig;
use double_rig::*;

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
