//! What a digest Authorization must say before its `response` is worth checking.
//!
//! The Node sidecar passed any parsed Authorization to the webhook. Here the registrar first
//! makes sure the answer fits the challenge it sent (`algorithm=MD5`, `qop="auth"` with `nc`
//! and `cnonce`), that it was computed for this request (the digest `uri` is the
//! Request-URI), and that the identity it proves is the address being registered (the
//! `username` is the To user and the `realm` the To host). An Authorization that fails any
//! of these never reaches the webhook or MySQL.

use super::request::Aor;
use crate::sip::digest::DigestCredentials;
use crate::sip::SipUri;

/// `X-Reason` of the `403` for credentials of another identity than the To URI.
pub const AOR_MISMATCH_REASON: &str = "Authorization user does not match the address of record";
/// `X-Reason` of the `400` for a digest `uri` other than the Request-URI.
pub const URI_MISMATCH_REASON: &str = "Digest uri names neither the Request-URI nor this SBC";
/// `X-Reason` of the `400` for an algorithm we did not offer.
pub const UNSUPPORTED_ALGORITHM_REASON: &str = "Unsupported digest algorithm (only MD5 is offered)";

/// Longest `cnonce` accepted: real clients send 8 to 40 characters; the value becomes part
/// of a Redis key (`replay.rs`), so an attacker must not choose its size.
pub const MAX_CNONCE_LEN: usize = 128;

/// Why the form of an Authorization does not answer our challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormProblem {
    /// An `algorithm` other than MD5 (SHA-256, MD5-sess, …): `400`.
    UnsupportedAlgorithm,
    /// Our challenge demands `qop="auth"`; no `qop`, another one, or no valid `nc`/`cnonce`
    /// (RFC 2617 answers without qop cannot be made one-time): a fresh `401`.
    NoQopAuth,
}

/// The parts of an answer to `qop="auth"` that make it one-time: `nc` as a number and the
/// client's `cnonce`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceUse {
    pub nc: u32,
    pub cnonce: String,
}

/// Checks `algorithm`, `qop`, `nc` and `cnonce` against what [`crate::sip::www_authenticate`]
/// offers.
pub fn check_form(creds: &DigestCredentials) -> Result<NonceUse, FormProblem> {
    if !creds.algorithm.eq_ignore_ascii_case("MD5") {
        return Err(FormProblem::UnsupportedAlgorithm);
    }
    if !creds.qop.as_deref().is_some_and(|q| q.trim().eq_ignore_ascii_case("auth")) {
        return Err(FormProblem::NoQopAuth);
    }
    let nc = creds.nc.as_deref().map(str::trim).and_then(parse_nc).ok_or(FormProblem::NoQopAuth)?;
    let cnonce = creds.cnonce.as_deref().unwrap_or("");
    if cnonce.is_empty() || cnonce.len() > MAX_CNONCE_LEN || cnonce.bytes().any(|b| b.is_ascii_control()) {
        return Err(FormProblem::NoQopAuth);
    }
    Ok(NonceUse { nc, cnonce: cnonce.to_string() })
}

/// `nc`: 8 hex digits in RFC 2617; 1 to 8 are accepted (`1` and `00000001` are the same
/// count). A count of zero is not one a client can send.
fn parse_nc(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok().filter(|n| *n > 0)
}

/// Whether a device may answer with this digest `uri`: the Request-URI ([`uri_matches`]), or a
/// SIP URI whose host is an address this SBC listens on — one of drachtio's `hostports`
/// (`udp/1.2.3.4:5060,tcp/…`) or its private address (`ip:port`) — with no port or one of that
/// address's ports. sipp computes `sip:<registrar ip>:<port>`, and so do gateways given a proxy
/// address and a domain (AudioCodes' ProxyName); the Node sidecar accepted them. With one-time
/// nonces bound to the source, a stricter `uri` would add no protection against replay.
pub fn uri_acceptable(digest_uri: &str, request_uri: &str, hostports: &str, private_address: Option<&str>) -> bool {
    if uri_matches(digest_uri, request_uri) {
        return true;
    }
    let Ok(d) = SipUri::parse(digest_uri) else {
        return false;
    };
    let host = d.host.trim_matches(['[', ']']);
    let ours = |ip: &str, port: u16| {
        ip.trim_matches(['[', ']']).eq_ignore_ascii_case(host) && d.port.is_none_or(|p| p == port)
    };
    let private =
        private_address.and_then(|a| a.rsplit_once(':')).and_then(|(ip, port)| Some((ip, port.parse().ok()?)));
    crate::net::parse_hostports(hostports).any(|hp| ours(hp.ip, hp.port))
        || private.is_some_and(|(ip, port)| ours(ip, port))
}

/// Whether the digest `uri` names the Request-URI: the same text, or the same scheme, user,
/// host (case-insensitive) and port. Parameters are not compared: some clients leave out
/// `;transport=…` in one of the two.
pub fn uri_matches(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    let (Ok(d), Ok(r)) = (SipUri::parse(digest_uri), SipUri::parse(request_uri)) else {
        return false;
    };
    d.scheme == r.scheme && d.user == r.user && d.host.eq_ignore_ascii_case(&r.host) && d.port == r.port
}

/// Whether the credentials are those of the address of record: `username` equal to the To
/// user (case-sensitive, as SIP user parts are) and `realm` to the To host (case-insensitive).
pub fn identity_matches(creds: &DigestCredentials, aor: &Aor) -> bool {
    let user_ok = matches!((creds.username.as_deref(), aor.user.as_deref()), (Some(u), Some(a)) if u == a);
    let realm_ok = creds.realm.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(&aor.host));
    user_ok && realm_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse_authorization;

    const AUTH: &str = r#"Digest username="john", realm="jambonz.org", nonce="n1", uri="sip:jambonz.org", response="941658f7cac3f357d4258ae52074c5e7", algorithm=MD5, cnonce="6b8b4567", qop=auth, nc=00000001"#;

    fn creds(text: &str) -> DigestCredentials {
        parse_authorization(text).unwrap()
    }

    #[test]
    fn an_md5_qop_auth_answer_passes_with_its_count_and_cnonce() {
        assert_eq!(check_form(&creds(AUTH)), Ok(NonceUse { nc: 1, cnonce: "6b8b4567".into() }));
        let short_nc = AUTH.replace("nc=00000001", "nc=1a");
        assert_eq!(check_form(&creds(&short_nc)).map(|u| u.nc), Ok(0x1a));
        let no_algorithm = AUTH.replace(" algorithm=MD5,", "");
        assert!(check_form(&creds(&no_algorithm)).is_ok(), "MD5 is the default");
        let lower = AUTH.replace("algorithm=MD5", "algorithm=md5").replace("qop=auth", "qop=\"AUTH\"");
        assert!(check_form(&creds(&lower)).is_ok());
    }

    #[test]
    fn other_algorithms_are_unsupported() {
        for alg in ["SHA-256", "MD5-sess", "SHA-512-256"] {
            let text = AUTH.replace("algorithm=MD5", &format!("algorithm={alg}"));
            assert_eq!(check_form(&creds(&text)), Err(FormProblem::UnsupportedAlgorithm), "{alg}");
        }
    }

    #[test]
    fn answers_without_qop_auth_nc_or_cnonce_are_refused() {
        let rfc2069 =
            r#"Digest username="john", realm="jambonz.org", nonce="n1", uri="sip:jambonz.org", response="00""#;
        let cases = [
            rfc2069.to_string(),
            AUTH.replace("qop=auth", "qop=auth-int"),
            AUTH.replace(", nc=00000001", ""),
            AUTH.replace("nc=00000001", "nc=000000001"),
            AUTH.replace("nc=00000001", "nc=00000000"),
            AUTH.replace("nc=00000001", "nc=xyz"),
            AUTH.replace(" cnonce=\"6b8b4567\",", ""),
            AUTH.replace("6b8b4567", &"a".repeat(MAX_CNONCE_LEN + 1)),
        ];
        for text in cases {
            assert_eq!(check_form(&creds(&text)), Err(FormProblem::NoQopAuth), "{text}");
        }
    }

    #[test]
    fn the_digest_uri_must_name_the_request_uri() {
        assert!(uri_matches("sip:jambonz.org", "sip:jambonz.org"));
        assert!(uri_matches("sip:JAMBONZ.org", "sip:jambonz.org;transport=tcp"));
        assert!(!uri_matches("sip:other.org", "sip:jambonz.org"));
        assert!(!uri_matches("sip:jambonz.org:5080", "sip:jambonz.org"));
        assert!(!uri_matches("sips:jambonz.org", "sip:jambonz.org"));
        assert!(!uri_matches("sip:bob@jambonz.org", "sip:jambonz.org"));
        assert!(!uri_matches("garbage", "sip:jambonz.org"));
    }

    #[test]
    fn the_identity_must_be_the_address_of_record() {
        let aor = |user: Option<&str>, host: &str| Aor { user: user.map(String::from), host: host.into() };
        let c = creds(AUTH);
        assert!(identity_matches(&c, &aor(Some("john"), "jambonz.org")));
        assert!(identity_matches(&c, &aor(Some("john"), "Jambonz.ORG")));
        assert!(!identity_matches(&c, &aor(Some("jane"), "jambonz.org")));
        assert!(!identity_matches(&c, &aor(Some("John"), "jambonz.org")));
        assert!(!identity_matches(&c, &aor(Some("john"), "sub.jambonz.org")));
        assert!(!identity_matches(&c, &aor(None, "jambonz.org")));
    }

    #[test]
    fn a_digest_uri_naming_this_sbc_is_accepted_as_sipp_and_gateways_send_it() {
        let hostports = "tcp/203.0.113.5:5060,udp/203.0.113.5:5060,wss/203.0.113.5:8443,udp/[2001:db8::5]:5060";
        let ok = |uri: &str| uri_acceptable(uri, "sip:jambonz.org", hostports, Some("10.0.0.5:5080"));
        assert!(ok("sip:jambonz.org"), "the Request-URI");
        assert!(ok("sip:203.0.113.5:5060"), "sipp's default");
        assert!(ok("sip:203.0.113.5"), "no port");
        assert!(ok("sip:203.0.113.5:8443"), "another of its ports");
        assert!(ok("sip:[2001:db8::5]:5060"));
        assert!(ok("sip:10.0.0.5:5080"), "the private address");
        assert!(!ok("sip:203.0.113.5:5070"), "a port it does not listen on");
        assert!(!ok("sip:203.0.113.6:5060"), "another host");
        assert!(!ok("sip:10.0.0.5:5060"), "the private address on another port");
        assert!(!ok("sip:evil.example.com"));
        assert!(!ok("garbage"));
    }
}
