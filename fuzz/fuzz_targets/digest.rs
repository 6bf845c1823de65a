//! Digest credentials (the registrar's Authorization parser) and challenges (regbot).
//!
//! Properties: the registrar's parser either refuses the header or reads exactly what the
//! independent strict RFC 7616 reader of this crate reads (two parsers must never see two
//! usernames: the webhook gets our fields while it may parse the raw header itself); a strict
//! reader refusing means we refuse too; every parsed field is a piece of the input; what the
//! regbot answers to a challenge parses back in the registrar to the values it was built from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc_sidecar::registrar::credentials::check_form;
use sbc_sidecar::sip::{authorization_header, parse_authorization, parse_challenge};
use sbc_sidecar_fuzz::strict_digest::{self, StrictCredentials};
use sbc_sidecar_fuzz::{assert_linear, text};

fuzz_target!(|data: &[u8]| {
    let s = text(data);
    let s = s.as_ref();

    let ours = parse_authorization(s).ok();
    let strict = strict_digest::parse(s);
    if let Some(c) = &ours {
        let total: usize = c.fields().iter().map(|(_, v)| v.len()).sum();
        assert_linear("credential fields", total, s.len(), 1, 16);
        let as_strict = StrictCredentials {
            username: c.username.clone(),
            realm: c.realm.clone(),
            nonce: c.nonce.clone(),
            uri: c.uri.clone(),
            algorithm: c.algorithm.clone(),
            response: c.response.clone(),
            qop: c.qop.clone(),
            nc: c.nc.clone(),
            cnonce: c.cnonce.clone(),
            opaque: c.opaque.clone(),
        };
        assert_eq!(Some(as_strict), strict, "the registrar reads `{s}` differently from a strict reader");
        let _ = check_form(c);
    }

    if let Ok(challenge) = parse_challenge(s) {
        assert!(challenge.realm.len() + challenge.nonce.len() <= s.len());
        // What digest-utils cannot read back whole: quotes, escapes, commas, and line breaks
        // (JavaScript's `.` stops at U+2028 and U+2029 too).
        let plain =
            |v: &str| !v.chars().any(|c| matches!(c, '"' | '\\' | ',' | '\u{2028}' | '\u{2029}') || c.is_control());
        if let Ok(answer) =
            authorization_header(&challenge, "alice", "secret", "REGISTER", "sip:example.com", 1, "0a4f113b")
        {
            assert_linear("Authorization", answer.len(), s.len(), 2, 256);
            if plain(&challenge.realm) && plain(&challenge.nonce) && challenge.opaque.as_deref().is_none_or(plain) {
                let read = parse_authorization(&answer).expect("the registrar reads the regbot's Authorization");
                assert_eq!(read.username.as_deref(), Some("alice"));
                assert_eq!(read.realm.as_deref(), Some(challenge.realm.as_str()));
                assert_eq!(read.nonce.as_deref(), Some(challenge.nonce.as_str()));
                assert_eq!(read.opaque, challenge.opaque);
                assert_eq!(read.expected_response("REGISTER", "secret"), read.response.clone().unwrap_or_default());
            }
        }
    }
});
