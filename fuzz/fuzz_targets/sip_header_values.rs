//! The header-value parsers on their own: SIP URI, name-addr (From, To, Contact), Via, CSeq,
//! comma lists, Expires, the Node-compatible `expires=` rewrite, and the heartbeat's and CLI's
//! feature-server endpoints and service URLs.
//!
//! Properties: parse → print → parse gives the same value; Expires agrees with an independent
//! reading of `parseInt` limited to u32; list elements are trimmed pieces of the input; no
//! output grows faster than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc_sidecar::heartbeat::guard::MAX_SERVICE_URL_LEN;
use sbc_sidecar::heartbeat::{valid_service_url, FsEndpoint};
use sbc_sidecar::registrar::request::parse_expires;
use sbc_sidecar::sip::{replace_first_expires, split_header_list, CSeq, NameAddr, SipUri, Via};
use sbc_sidecar_fuzz::{assert_linear, text};

/// JavaScript `parseInt(text, 10)` as the registrar restricts it: leading white space, an
/// optional `+`, decimal digits; `None` without digits or beyond u32.
fn reference_expires(text: &str) -> Option<u32> {
    let t = text.trim_start_matches(char::is_whitespace);
    let t = t.strip_prefix('+').unwrap_or(t);
    let digits: Vec<u8> = t.bytes().take_while(u8::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for d in digits {
        value = value * 10 + u64::from(d - b'0');
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    Some(value as u32)
}

fuzz_target!(|data: &[u8]| {
    let s = text(data);
    let s = s.as_ref();

    if let Ok(uri) = SipUri::parse(s) {
        let printed = uri.to_string();
        assert_linear("URI", printed.len(), s.len(), 1, 0);
        assert_eq!(SipUri::parse(&printed).as_ref(), Ok(&uri), "URI `{printed}`");
    }
    if let Ok(na) = NameAddr::parse(s) {
        let printed = na.to_string();
        // quotes and `\` escapes around a display name at most double it
        assert_linear("name-addr", printed.len(), s.len(), 2, 5);
        assert_eq!(NameAddr::parse(&printed).as_ref(), Ok(&na), "name-addr `{printed}`");
        if let Ok(uri) = na.uri() {
            assert_eq!(SipUri::parse(&uri.to_string()), Ok(uri));
        }
    }
    if let Ok(via) = Via::parse(s) {
        let printed = via.to_string();
        assert_linear("Via", printed.len(), s.len(), 1, 0);
        assert_eq!(Via::parse(&printed).as_ref(), Ok(&via), "Via `{printed}`");
    }
    if let Ok(cseq) = CSeq::parse(s) {
        assert_eq!(CSeq::parse(&cseq.to_string()), Ok(cseq));
    }

    let parts = split_header_list(s);
    assert!(parts.iter().map(|p| p.len()).sum::<usize>() <= s.len());
    for part in &parts {
        assert!(!part.is_empty() && part.trim() == *part && s.contains(part));
    }

    assert_eq!(parse_expires(s), reference_expires(s), "Expires `{s}`");
    let rewritten = replace_first_expires(s, u32::MAX);
    assert_linear("rewritten Contact", rewritten.len(), s.len(), 1, 10);
    if s.contains("expires=")
        && s.split("expires=").skip(1).any(|after| after.starts_with(|c: char| c.is_ascii_digit()))
    {
        assert!(rewritten.contains(&format!("expires={}", u32::MAX)), "`{s}` → `{rewritten}`");
    } else {
        assert_eq!(rewritten, s);
    }

    for parsed in [FsEndpoint::parse(s), FsEndpoint::parse_member(s)].into_iter().flatten() {
        let canonical = parsed.to_string();
        assert_eq!(FsEndpoint::parse(&canonical), Some(parsed), "endpoint `{s}` → `{canonical}`");
    }
    if valid_service_url(s) {
        assert!(s.len() <= MAX_SERVICE_URL_LEN);
        let lower = s.to_ascii_lowercase();
        assert!(lower.starts_with("http://") || lower.starts_with("https://"), "`{s}`");
        assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()));
    }
});
