//! Fidelity of the drachtio double, the INVITE handling the stack does by itself
//! (drachtio-protocol.md §2.3, §2.5, §4.1): 100 Trying, CANCEL, the automatic ACK of a failure.
//!
//! Every test replays a step of `docs/spec/drachtio-capture.txt` or `docs/spec/drachtio-capture-uac.txt`
//! and checks that the double answers with the captured shape, token by token (ids, times, tags
//! and branches differ; counts, positions and texts must not). The rig is
//! tests/support/double_rig.rs.

use std::time::Duration;

use sbc_sidecar::drachtio::message::new_message_id;

#[path = "support/double_rig.rs"]
mod double_rig;
use double_rig::*;

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
