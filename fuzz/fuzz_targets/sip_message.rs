//! The SIP message parser and what the registrar and the heartbeat role read from a parsed
//! message (top Via, Contacts, Expires, AOR, Request-URI, OPTIONS classification).
//!
//! Properties: parse → print → parse gives the same message; the printed form is at most
//! linearly larger than the input; every Contact prints and parses back to itself; what the
//! registrar stores (raw Contact) is no larger than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc_sidecar::heartbeat::classify;
use sbc_sidecar::registrar::request::{check_request_uri, parse_aor, parse_expires, parse_registration, ExpiresBounds};
use sbc_sidecar::sip::{parse_contacts, top_via, CSeq, Contacts, NameAddr, SipMessage, Via};
use sbc_sidecar_fuzz::assert_linear;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = SipMessage::parse(data) else { return };

    let stored: usize = message.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() + message.body.len();
    assert_linear("parsed message", stored, data.len(), 1, 0);
    assert!(message.headers.len() <= data.len() / 2, "{} headers from {} bytes", message.headers.len(), data.len());

    let printed = message.to_bytes();
    // Each header gains at most ": " + CRLF over `name:` + CRLF; the start line and the blank
    // line at most a few bytes.
    assert_linear("printed message", printed.len(), data.len(), 1, 2 * message.headers.len() + 16);
    let again = SipMessage::parse(&printed).expect("a printed message parses");
    assert_eq!(again, message, "parse → print → parse changed the message");

    for name in ["Via", "Contact", "Route", "Record-Route", "Supported"] {
        for value in message.header_values(name) {
            assert!(!value.is_empty() && value.trim() == value);
        }
    }

    if let Ok(via) = top_via(&message) {
        let again = Via::parse(&via.to_string()).expect("a printed Via parses");
        assert_eq!(again, via);
    }
    if let Some(cseq) = message.header("CSeq").and_then(|v| CSeq::parse(v).ok()) {
        assert_eq!(CSeq::parse(&cseq.to_string()), Ok(cseq));
    }
    if let Ok(Contacts::List(contacts)) = parse_contacts(&message) {
        for contact in contacts {
            let printed = contact.to_string();
            assert_eq!(NameAddr::parse(&printed).as_ref(), Ok(&contact), "Contact `{printed}`");
        }
    }
    let bounds = ExpiresBounds::default();
    if let Ok(registration) = parse_registration(&message, bounds) {
        assert_linear("stored Contact", registration.raw_contact.len(), data.len(), 1, 0);
        assert!(registration.contact_uri.as_ref().is_none_or(|u| u.len() <= data.len()));
        let expires_text = message.header("Expires").unwrap_or("");
        if let (Some(header_expires), false) = (
            parse_expires(expires_text),
            // any Contact header: an empty first one is skipped by the Contact list
            message.header_all("Contact").any(|c| c.to_ascii_lowercase().contains("expires")),
        ) {
            // what was asked for, at most the maximum (below the minimum is a 423, not Ok)
            assert_eq!(registration.expires, bounds.cap(header_expires), "Expires header ignored");
        }
    }
    let _ = check_request_uri(&message);
    if let Ok(aor) = parse_aor(&message) {
        assert!(aor.key().len() <= data.len() + 1);
    }
    let _ = classify(&message);
});
