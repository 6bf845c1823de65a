//! The registration webhook's reply (`interpret`) and the 403 built from a denial.
//!
//! Properties: only HTTP 200 with a JSON object that has a string `status` gives a verdict;
//! `ok` in any case grants, anything else denies; a granted `expires` is positive; the
//! headers a denial asks for are SIP tokens without line breaks, and a 403 carrying them
//! parses back with exactly those headers (no header injection, no broken response).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc_sidecar::registrar::grant::AuthVerdict;
use sbc_sidecar::registrar::webhook::{interpret, HookError, HookResponse};
use sbc_sidecar::sip::{header_name_eq, ResponseBuilder, SipMessage};
use serde_json::Value;

const REQUEST: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let status = match selector {
        0..=239 => 200,
        other => u16::from(other) * 2,
    };
    let response = HookResponse { status, body: body.to_vec() };
    let verdict = interpret(&response);
    if status != 200 {
        assert_eq!(verdict, Err(HookError::Status(status)));
        return;
    }
    let json: Option<serde_json::Map<String, Value>> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    };
    let Some(json) = json else {
        assert!(verdict.is_err(), "a verdict from a body that is not a JSON object");
        return;
    };
    let status_field = json.get("status").and_then(Value::as_str);
    match (verdict, status_field) {
        (Err(HookError::NoStatus), None) => {}
        (Ok(AuthVerdict::Granted(grant)), Some(s)) if s.eq_ignore_ascii_case("ok") => {
            assert!(grant.expires.is_none_or(|e| e > 0));
        }
        (Ok(AuthVerdict::Denied(denial)), Some(s)) if !s.eq_ignore_ascii_case("ok") => {
            assert_eq!(denial.blacklist, json.get("blacklist") == Some(&Value::Bool(true)));
            assert!(denial.headers.len() <= json.get("headers").and_then(Value::as_object).map_or(0, |h| h.len()));
            let request = SipMessage::parse(REQUEST).expect("fixed request");
            let extra: Vec<(&str, &str)> = denial.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let built = ResponseBuilder::new(&request, 403).headers(extra.iter().copied()).build();
            let answer = SipMessage::parse(&built).expect("the 403 parses");
            let sent: Vec<&(String, String)> = extra_headers(&answer);
            let asked: Vec<(&str, &str)> =
                extra.into_iter().filter(|(n, _)| !header_name_eq(n, "Content-Length")).collect();
            assert_eq!(sent.len(), asked.len(), "the 403 has other headers than the webhook asked for");
            for ((n, v), (an, av)) in sent.iter().zip(asked) {
                assert_eq!((n.as_str(), v.as_str()), (an, av.trim()));
            }
        }
        (other, s) => panic!("verdict {other:?} for status {s:?}"),
    }
});

/// The headers of the built 403 after the four copied from the request, Content-Length left out.
fn extra_headers(answer: &SipMessage) -> Vec<&(String, String)> {
    answer.headers.iter().skip(4).filter(|(n, _)| !header_name_eq(n, "Content-Length")).collect()
}
