//! Digest authentication (RFC 2617 / RFC 7616, MD5 only).
//!
//! Two directions:
//! * registrar (UAS): [`www_authenticate`] builds the challenge, [`parse_authorization`] reads
//!   the answer with exactly the semantics of the Node `digest-utils` parser (spec 4.3), quirks
//!   included, because the parsed fields go verbatim into the customer's webhook;
//! * regbot (UAC): [`parse_challenge`] reads what real servers send, [`authorization_header`]
//!   answers it.

use md5::{Digest, Md5};

use super::digest_strict::strict_reading;
use super::header::quoted_string;
use super::message::SipError;

/// The Authorization fields, as digest-utils extracts them. `Some("")` is possible (a value
/// consisting only of `"`), and the webhook payload includes such fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: Option<String>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub uri: Option<String>,
    /// `MD5` when absent or empty.
    pub algorithm: String,
    pub response: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

impl DigestCredentials {
    /// digest-utils reports the scheme as `digest` whatever the header said.
    pub const SCHEME: &'static str = "digest";

    /// Errors when `username`, `realm`, `nonce`, `uri` or `response` is missing or empty
    /// (digest-utils throws on a falsy value; the registrar answers 400).
    pub fn require_complete(&self) -> Result<(), SipError> {
        let required = [
            ("username", &self.username),
            ("realm", &self.realm),
            ("nonce", &self.nonce),
            ("uri", &self.uri),
            ("response", &self.response),
        ];
        for (name, value) in required {
            if value.as_deref().unwrap_or("").is_empty() {
                return Err(SipError::MissingCredential(name));
            }
        }
        Ok(())
    }

    /// The fields in the webhook payload order (`scheme` first, then digest-utils' token
    /// order), absent ones left out.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        let optional =
            [("username", &self.username), ("realm", &self.realm), ("nonce", &self.nonce), ("uri", &self.uri)];
        let after_algorithm = [
            ("response", &self.response),
            ("qop", &self.qop),
            ("nc", &self.nc),
            ("cnonce", &self.cnonce),
            ("opaque", &self.opaque),
        ];
        let mut out = vec![("scheme", Self::SCHEME)];
        out.extend(optional.iter().filter_map(|(n, v)| v.as_deref().map(|v| (*n, v))));
        out.push(("algorithm", self.algorithm.as_str()));
        out.extend(after_algorithm.iter().filter_map(|(n, v)| v.as_deref().map(|v| (*n, v))));
        out
    }

    /// The response a client knowing `password` would have computed for these fields
    /// (missing fields count as empty, as in the Node code's `join(':')`).
    pub fn expected_response(&self, method: &str, password: &str) -> String {
        compute_response(&DigestInput {
            username: self.username.as_deref().unwrap_or(""),
            realm: self.realm.as_deref().unwrap_or(""),
            password,
            method,
            uri: self.uri.as_deref().unwrap_or(""),
            nonce: self.nonce.as_deref().unwrap_or(""),
            nc: self.nc.as_deref(),
            cnonce: self.cnonce.as_deref(),
            qop: self.qop.as_deref(),
        })
    }
}

/// Parses an Authorization (or Proxy-Authorization) value the way digest-utils does: for each
/// field, the first `<sep><name>=` where sep is a comma or white space, an optional opening
/// quote, then the shortest value up to the next `"` or `,` (JS regex
/// `[,\s]{1}<name>="?(.+?)[",]`). An unquoted value at the very end of the header is therefore
/// not found, which digest-utils patches for `nc` and `qop` only by taking everything after the
/// first `nc=` / `qop=` to the end of the header. Unlike digest-utils, text inside a quoted
/// string is never searched for a field (`opaque="x username=bob"` names no user).
///
/// The fields go verbatim into the customer's webhook, which may also parse the raw header
/// itself: the header is accepted only when the strict RFC 7616 reading gives the same fields
/// (same username, same algorithm, …). Anything else, e.g. a quoted value with a comma that
/// digest-utils cuts, a repeated field or a last unquoted `algorithm`, is an error (400).
///
/// Fails when none of the fields is present (blank value, `Basic …`) or the readings differ;
/// use [`DigestCredentials::require_complete`] before trusting the result.
pub fn parse_authorization(value: &str) -> Result<DigestCredentials, SipError> {
    let chars: Vec<char> = value.chars().collect();
    let stops = next_stop_table(&chars);
    let outside = outside_quotes_table(&chars);
    let field = |name: &str| digest_utils_field(&chars, &stops, &outside, name);

    let mut creds = DigestCredentials {
        username: field("username"),
        realm: field("realm"),
        nonce: field("nonce"),
        uri: field("uri"),
        algorithm: String::new(),
        response: field("response"),
        qop: field("qop"),
        nc: field("nc"),
        cnonce: field("cnonce"),
        opaque: field("opaque"),
    };
    let algorithm = field("algorithm");
    // JS truthiness: an empty value counts as absent for the fallbacks and the default.
    if creds.nc.as_deref().unwrap_or("").is_empty() {
        if let Some(rest) = rest_after_last_occurrence_line(&chars, &outside, "nc=") {
            creds.nc = Some(rest);
        }
    }
    if creds.qop.as_deref().unwrap_or("").is_empty() {
        if let Some(rest) = rest_after_last_occurrence_line(&chars, &outside, "qop=") {
            creds.qop = Some(rest);
        }
    }
    let found_any = algorithm.is_some()
        || [
            &creds.username,
            &creds.realm,
            &creds.nonce,
            &creds.uri,
            &creds.response,
            &creds.qop,
            &creds.nc,
            &creds.cnonce,
            &creds.opaque,
        ]
        .iter()
        .any(|v| v.is_some());
    if !found_any {
        return Err(SipError::Invalid {
            what: "Authorization",
            value: value.to_string(),
            reason: "no digest parameters",
        });
    }
    creds.algorithm = match algorithm {
        Some(a) if !a.is_empty() => a,
        _ => "MD5".to_string(),
    };
    let refuse = |reason| SipError::Invalid { what: "Authorization", value: value.to_string(), reason };
    if strict_reading(value).map_err(refuse)? != creds {
        return Err(refuse("digest-utils and RFC 7616 read the parameters differently"));
    }
    Ok(creds)
}

/// JavaScript `\s`.
fn is_js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
    )
}

/// Characters JavaScript's `.` does not match.
fn is_js_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

/// `stops[i]` = index of the first `"`, `,` or line terminator at or after `i` (`len` if none):
/// lets each candidate match of `(.+?)[",]` be decided in constant time, so a hostile header
/// cannot make the search quadratic.
fn next_stop_table(chars: &[char]) -> Vec<usize> {
    let mut stops = vec![chars.len(); chars.len() + 1];
    for i in (0..chars.len()).rev() {
        let c = chars[i];
        stops[i] = if c == '"' || c == ',' || is_js_line_terminator(c) { i } else { stops[i + 1] };
    }
    stops
}

/// `outside[i]`: whether character `i` is outside every quoted string (an opening quote is
/// outside, what follows it up to and including the closing quote is inside; `\` escapes the
/// next character inside a quoted string).
fn outside_quotes_table(chars: &[char]) -> Vec<bool> {
    let mut outside = Vec::with_capacity(chars.len());
    let (mut quoted, mut escaped) = (false, false);
    for &c in chars {
        outside.push(!quoted);
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        }
    }
    outside
}

/// `[,\s]{1}<name>="?(.+?)[",]` at the leftmost position outside quoted strings where it
/// matches; a value of just `"` becomes empty.
fn digest_utils_field(chars: &[char], stops: &[usize], outside: &[bool], name: &str) -> Option<String> {
    let key: Vec<char> = name.chars().chain(std::iter::once('=')).collect();
    for sep in 0..chars.len() {
        if !outside[sep] || !(chars[sep] == ',' || is_js_space(chars[sep])) || !chars[sep + 1..].starts_with(&key) {
            continue;
        }
        let after_eq = sep + 1 + key.len();
        // `"?` is greedy: first try with the opening quote consumed, then without it.
        let with_quote = if chars.get(after_eq) == Some(&'"') { lazy_value(chars, stops, after_eq + 1) } else { None };
        if let Some(value) = with_quote.or_else(|| lazy_value(chars, stops, after_eq)) {
            return Some(if value == "\"" { String::new() } else { value });
        }
    }
    None
}

/// `(.+?)[",]` starting at `start`: at least one character, none a line terminator, ended by
/// the first `"` or `,` after the first character.
fn lazy_value(chars: &[char], stops: &[usize], start: usize) -> Option<String> {
    let first = *chars.get(start)?;
    if is_js_line_terminator(first) {
        return None;
    }
    let end = stops[start + 1];
    match chars.get(end) {
        Some('"') | Some(',') => Some(chars[start..end].iter().collect()),
        _ => None,
    }
}

/// JS `/<key>(.*)$/`: the leftmost `key` outside quoted strings with no line terminator
/// between it and the end of the header, i.e. the first such occurrence after the last line
/// terminator.
fn rest_after_last_occurrence_line(chars: &[char], outside: &[bool], key: &str) -> Option<String> {
    let key: Vec<char> = key.chars().collect();
    let from = chars.iter().rposition(|&c| is_js_line_terminator(c)).map_or(0, |i| i + 1);
    let at = (from..chars.len()).find(|&i| outside[i] && chars[i..].starts_with(&key))?;
    Some(chars[at + key.len()..].iter().collect())
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    /// The offered qop values (`auth`, `auth-int`), empty when the server offered none.
    pub qop: Vec<String>,
    pub opaque: Option<String>,
    pub algorithm: Option<String>,
    pub stale: bool,
}

/// Parses a challenge as real servers send it (RFC 7616 §3.3): `Digest` then comma-separated
/// `name=token` or `name="quoted \"string\""` in any order, names case-insensitive, unknown
/// parameters ignored, the first occurrence of a repeated one kept.
pub fn parse_challenge(value: &str) -> Result<Challenge, SipError> {
    let bad = |reason| SipError::Invalid { what: "digest challenge", value: value.to_string(), reason };
    let text = value.trim();
    let scheme_end = text.find(|c: char| c.is_whitespace()).unwrap_or(text.len());
    if !text[..scheme_end].eq_ignore_ascii_case("Digest") {
        return Err(bad("scheme is not Digest"));
    }

    let mut params: Vec<(String, String)> = Vec::new();
    let mut rest = &text[scheme_end..];
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        let name_end = rest.find(|c: char| c == '=' || c == ',' || c.is_whitespace()).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err(bad("parameter without a name"));
        }
        rest = rest[name_end..].trim_start();
        rest = rest.strip_prefix('=').ok_or_else(|| bad("parameter without `=`"))?.trim_start();
        let value = if rest.starts_with('"') {
            let (value, after) = quoted_string(rest).ok_or_else(|| bad("unterminated quoted string"))?;
            rest = after;
            value
        } else {
            let end = rest.find(|c: char| c == ',' || c.is_whitespace()).unwrap_or(rest.len());
            let value = &rest[..end];
            if value.is_empty() {
                return Err(bad("parameter without a value"));
            }
            rest = &rest[end..];
            value.to_string()
        };
        rest = rest.trim_start();
        if !rest.is_empty() && !rest.starts_with(',') {
            return Err(bad("parameters not separated by commas"));
        }
        if !params.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            params.push((name.to_ascii_lowercase(), value));
        }
    }

    let get = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    Ok(Challenge {
        realm: get("realm").ok_or_else(|| bad("no realm"))?,
        nonce: get("nonce").ok_or_else(|| bad("no nonce"))?,
        qop: get("qop")
            .map(|q| q.split(',').map(str::trim).filter(|q| !q.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        opaque: get("opaque"),
        algorithm: get("algorithm"),
        stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// Everything that goes into a digest response.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    pub nc: Option<&'a str>,
    pub cnonce: Option<&'a str>,
    pub qop: Option<&'a str>,
}

/// `MD5(HA1:nonce[:nc:cnonce][:qop]:HA2)` in lower-case hex, with HA1 = `MD5(user:realm:pass)`,
/// HA2 = `MD5(method:uri)`; `nc:cnonce` only with a non-empty cnonce and `qop` only when
/// non-empty (the Node code's truthiness tests).
pub fn compute_response(input: &DigestInput<'_>) -> String {
    let ha1 = md5_hex(&format!("{}:{}:{}", input.username, input.realm, input.password));
    let ha2 = md5_hex(&format!("{}:{}", input.method, input.uri));
    let mut parts = vec![ha1.as_str(), input.nonce];
    if let Some(cnonce) = input.cnonce.filter(|c| !c.is_empty()) {
        parts.push(input.nc.unwrap_or(""));
        parts.push(cnonce);
    }
    if let Some(qop) = input.qop.filter(|q| !q.is_empty()) {
        parts.push(qop);
    }
    parts.push(&ha2);
    md5_hex(&parts.join(":"))
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// The Authorization value a UAC sends back, in the form drachtio-srf produced in the capture:
/// `Digest username="…", realm="…", nonce="…", uri="…", response="…", algorithm=MD5,
/// cnonce="…", qop=auth, nc=00000001[, opaque="…"]`. Without `auth` among the offered qop
/// values the RFC 2069 form is used (no cnonce, qop, nc). Only MD5 can be answered.
pub fn authorization_header(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> Result<String, SipError> {
    if let Some(algorithm) = &challenge.algorithm {
        if !algorithm.eq_ignore_ascii_case("MD5") {
            return Err(SipError::UnsupportedAlgorithm(algorithm.clone()));
        }
    }
    let use_qop = challenge.qop.iter().any(|q| q.eq_ignore_ascii_case("auth"));
    let nc = format!("{nc:08x}");
    let response = compute_response(&DigestInput {
        username,
        realm: &challenge.realm,
        password,
        method,
        uri,
        nonce: &challenge.nonce,
        nc: use_qop.then_some(nc.as_str()),
        cnonce: use_qop.then_some(cnonce),
        qop: use_qop.then_some("auth"),
    });
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm=MD5",
        quote(username),
        quote(&challenge.realm),
        quote(&challenge.nonce),
        quote(uri),
    );
    if use_qop {
        out.push_str(&format!(", cnonce={}, qop=auth, nc={nc}", quote(cnonce)));
    }
    if let Some(opaque) = &challenge.opaque {
        out.push_str(&format!(", opaque={}", quote(opaque)));
    }
    Ok(out)
}

/// The registrar's challenge, byte for byte what digest-utils sends.
pub fn www_authenticate(realm: &str, nonce: &str, stale: bool) -> String {
    let mut out = format!("Digest realm=\"{realm}\", algorithm=MD5, qop=\"auth\", nonce=\"{nonce}\"");
    if stale {
        out.push_str(", stale=true");
    }
    out
}

/// A quoted-string with `"` and `\` escaped.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURED_AUTHORIZATION: &str = r#"Digest username="foo", realm="sip.jambonz.org", nonce="acc32103n1", uri="sip:sip.jambonz.org", response="5f9843497b7bbedafb3f55300bf36b1a", algorithm=MD5, cnonce="c5502d28", qop=auth, nc=00000001"#;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn authorization_from_capture_parses_every_field() {
        let c = parse_authorization(CAPTURED_AUTHORIZATION).unwrap();
        assert_eq!(c.username, s("foo"));
        assert_eq!(c.realm, s("sip.jambonz.org"));
        assert_eq!(c.nonce, s("acc32103n1"));
        assert_eq!(c.uri, s("sip:sip.jambonz.org"));
        assert_eq!(c.response, s("5f9843497b7bbedafb3f55300bf36b1a"));
        assert_eq!(c.algorithm, "MD5");
        assert_eq!(c.cnonce, s("c5502d28"));
        assert_eq!(c.qop, s("auth"));
        assert_eq!(c.nc, s("00000001"));
        assert_eq!(c.opaque, None);
        assert!(c.require_complete().is_ok());
    }

    #[test]
    fn authorization_with_unquoted_last_nc_takes_rest_of_header() {
        // the regex needs a `"` or `,` after the value, so the fallback takes everything
        let c = parse_authorization(r#"Digest username="a", nc=00000001"#).unwrap();
        assert_eq!(c.nc, s("00000001"));
        // … including trailing white space, which a strict reader drops: two readings, refused
        assert!(parse_authorization(r#"Digest username="a", nc=00000001 "#).is_err());
    }

    #[test]
    fn authorization_with_unquoted_last_qop_takes_rest_of_header() {
        let c = parse_authorization(r#"Digest username="a", nc=00000002, qop=auth"#).unwrap();
        assert_eq!(c.qop, s("auth"));
        assert_eq!(c.nc, s("00000002"));
    }

    #[test]
    fn authorization_fallback_does_not_search_quoted_strings() {
        // digest-utils' plain search would take `1", nc=00000003` from inside the opaque
        let c = parse_authorization(r#"Digest opaque="xnc=1", nc=00000003"#).unwrap();
        assert_eq!(c.nc, s("00000003"));
    }

    #[test]
    fn authorization_never_searches_quoted_strings_for_fields() {
        // issue 19: digest-utils reads `bob` here, a strict reader (and a webhook) `alice`
        let c = parse_authorization(
            r#"Digest opaque="x username=bob", username="alice", realm="r", nonce="n", uri="sip:r", response="0""#,
        )
        .unwrap();
        assert_eq!(c.username, s("alice"));
        assert_eq!(c.opaque, s("x username=bob"));
    }

    #[test]
    fn authorization_unquoted_last_field_other_than_nc_qop_is_refused() {
        // digest-utils loses it (MD5, no opaque) where a strict reader sees it: two readings
        assert!(parse_authorization(r#"Digest username="a", algorithm=SHA-256"#).is_err());
        assert!(parse_authorization(r#"Digest username="a", opaque=xyz"#).is_err());
        // where both read the same, it is accepted
        assert_eq!(parse_authorization(r#"Digest username="a", algorithm=MD5"#).unwrap().algorithm, "MD5");
    }

    #[test]
    fn authorization_algorithm_defaults_to_md5() {
        let c = parse_authorization(r#"Digest username="a", realm="r""#).unwrap();
        assert_eq!(c.algorithm, "MD5");
        let c = parse_authorization(r#"Digest username="a", algorithm=MD5-sess, realm="r""#).unwrap();
        assert_eq!(c.algorithm, "MD5-sess");
    }

    #[test]
    fn authorization_quoted_value_with_comma_is_refused() {
        // digest-utils cuts it at the comma (`smith`), a strict reader does not
        let err = parse_authorization(r#"Digest username="smith, john", realm="r""#).unwrap_err();
        assert!(err.to_string().contains("read the parameters differently"), "{err}");
    }

    #[test]
    fn authorization_that_is_not_rfc_7616_is_refused() {
        for bad in [
            r#"Digest username="a", username="b""#,
            r#"Digest username="a" realm="r""#,
            r#"Digest username="a", username*=UTF-8''b"#,
            r#"Digest username="a", algorithm="""#,
            r#"Digest username="a\", realm="r""#,
            "Digest username=\"a\u{1b}[2J\"",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authorization_empty_quoted_value_becomes_empty() {
        let c = parse_authorization(r#"Digest username="", realm="r", nonce="n""#).unwrap();
        assert_eq!(c.username, s(""));
        assert_eq!(c.require_complete(), Err(SipError::MissingCredential("username")));
    }

    #[test]
    fn authorization_field_needs_a_comma_or_space_before_it() {
        // `xrealm=` is not `realm=`
        let c = parse_authorization(r#"Digest xrealm="b", nonce="n""#).unwrap();
        assert_eq!(c.realm, None);
        assert_eq!(c.nonce, s("n"));
        let c = parse_authorization(r#"Digest username="tab",realm="comma""#).unwrap();
        assert_eq!((c.username, c.realm), (s("tab"), s("comma")));
        // no field at the very start, and a tab after the scheme is not RFC 7235
        assert!(parse_authorization(r#"username="a",xrealm="b", nonce="n""#).is_err());
        assert!(parse_authorization(r#"Digest	username="tab",realm="comma""#).is_err());
    }

    #[test]
    fn authorization_names_differing_in_case_are_refused() {
        // digest-utils matches names case-sensitively, RFC 7235 does not: two readings
        assert!(parse_authorization(r#"Digest Username="a", nonce="n""#).is_err());
    }

    #[test]
    fn authorization_scheme_is_reported_as_digest() {
        let c = parse_authorization(r#"digest username="a""#).unwrap();
        assert_eq!(c.fields()[0], ("scheme", "digest"));
        assert!(parse_authorization(r#"Foo username="a""#).is_err());
    }

    #[test]
    fn authorization_without_any_field_is_an_error() {
        assert!(parse_authorization("").is_err());
        assert!(parse_authorization("Basic dXNlcjpwYXNz").is_err());
        let err = parse_authorization("Digest").unwrap_err();
        assert!(err.to_string().contains("no digest parameters"), "{err}");
    }

    #[test]
    fn incomplete_authorization_names_the_missing_field() {
        let c = parse_authorization(r#"Digest username="a", realm="r", nonce="n", uri="u""#).unwrap();
        let err = c.require_complete().unwrap_err();
        assert_eq!(err, SipError::MissingCredential("response"));
        assert_eq!(err.to_string(), "SIP: digest credentials have no response");
    }

    #[test]
    fn authorization_fields_come_in_webhook_order() {
        let c = parse_authorization(r#"Digest response="x", opaque="o", username="u", realm="r""#).unwrap();
        assert_eq!(
            c.fields(),
            vec![
                ("scheme", "digest"),
                ("username", "u"),
                ("realm", "r"),
                ("algorithm", "MD5"),
                ("response", "x"),
                ("opaque", "o")
            ]
        );
    }

    #[test]
    fn response_matches_spec_test_vector() {
        let r = compute_response(&DigestInput {
            username: "john",
            realm: "jambonz.org",
            password: "1234",
            method: "REGISTER",
            uri: "sip:jambonz.org",
            nonce: "157590482938000",
            nc: Some("00000001"),
            cnonce: Some("6b8b4567"),
            qop: Some("auth"),
        });
        assert_eq!(r, "941658f7cac3f357d4258ae52074c5e7");
    }

    #[test]
    fn response_matches_capture_vector() {
        let r = compute_response(&DigestInput {
            username: "foo",
            realm: "sip.jambonz.org",
            password: "bar",
            method: "REGISTER",
            uri: "sip:sip.jambonz.org",
            nonce: "acc32103n1",
            nc: Some("00000001"),
            cnonce: Some("c5502d28"),
            qop: Some("auth"),
        });
        assert_eq!(r, "5f9843497b7bbedafb3f55300bf36b1a");
        assert_eq!(md5_hex("foo:sip.jambonz.org:bar"), "f142bfac174d7fc8251199e074fd3f72");
        assert_eq!(md5_hex("REGISTER:sip:sip.jambonz.org"), "4fb721495ca8a9acb55b2ac97409eb75");
    }

    #[test]
    fn response_without_qop_is_rfc2069() {
        let input = DigestInput {
            username: "u",
            realm: "r",
            password: "p",
            method: "REGISTER",
            uri: "sip:r",
            nonce: "n",
            nc: None,
            cnonce: None,
            qop: None,
        };
        let ha1 = md5_hex("u:r:p");
        let ha2 = md5_hex("REGISTER:sip:r");
        assert_eq!(compute_response(&input), md5_hex(&format!("{ha1}:n:{ha2}")));
        // empty strings count as absent, like the Node truthiness tests
        let empty = DigestInput { cnonce: Some(""), qop: Some(""), nc: Some("1"), ..input };
        assert_eq!(compute_response(&empty), compute_response(&input));
    }

    #[test]
    fn parsed_credentials_verify_against_the_password() {
        let c = parse_authorization(CAPTURED_AUTHORIZATION).unwrap();
        assert_eq!(c.expected_response("REGISTER", "bar"), c.response.clone().unwrap());
        assert_ne!(c.expected_response("REGISTER", "baz"), c.response.unwrap());
    }

    #[test]
    fn challenge_from_capture_parses() {
        let c = parse_challenge(r#"Digest realm="sip.jambonz.org", nonce="acc32103n1", qop="auth", algorithm=MD5"#)
            .unwrap();
        assert_eq!(c.realm, "sip.jambonz.org");
        assert_eq!(c.nonce, "acc32103n1");
        assert_eq!(c.qop, vec!["auth"]);
        assert_eq!(c.algorithm.as_deref(), Some("MD5"));
        assert_eq!(c.opaque, None);
        assert!(!c.stale);
    }

    #[test]
    fn challenge_params_in_any_order_with_escapes_and_spacing() {
        let c = parse_challenge(
            "digest stale=TRUE ,opaque = \"o\\\"p\" ,qop=\"auth-int, auth\",\r\n nonce=\"a,b\", REALM=\"My \\\\ Realm\", domain=\"sip:x\"",
        )
        .unwrap();
        assert_eq!(c.realm, r"My \ Realm");
        assert_eq!(c.nonce, "a,b");
        assert_eq!(c.qop, vec!["auth-int", "auth"]);
        assert_eq!(c.opaque.as_deref(), Some("o\"p"));
        assert!(c.stale);
        assert_eq!(c.algorithm, None);
    }

    #[test]
    fn challenge_with_unquoted_qop_token() {
        let c = parse_challenge("Digest realm=r, nonce=n, qop=auth").unwrap();
        assert_eq!((c.realm.as_str(), c.nonce.as_str(), c.qop.clone()), ("r", "n", vec!["auth".to_string()]));
    }

    #[test]
    fn broken_challenges_are_errors() {
        for bad in [
            "",
            "Basic realm=\"x\"",
            "Digest nonce=\"n\"",
            "Digest realm=\"r\"",
            "Digest realm=\"r, nonce=\"n\"",
            "Digest realm=\"r\" nonce=\"n\"",
            "Digest realm=, nonce=n",
            "Digest =x, realm=r, nonce=n",
            "Digest realm r, nonce=n",
        ] {
            assert!(parse_challenge(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn authorization_header_matches_the_capture() {
        let challenge =
            parse_challenge(r#"Digest realm="sip.jambonz.org", nonce="acc32103n1", qop="auth", algorithm=MD5"#)
                .unwrap();
        let h =
            authorization_header(&challenge, "foo", "bar", "REGISTER", "sip:sip.jambonz.org", 1, "c5502d28").unwrap();
        assert_eq!(h, CAPTURED_AUTHORIZATION);
    }

    #[test]
    fn authorization_header_echoes_opaque() {
        let challenge = parse_challenge(r#"Digest realm="r", nonce="n", qop="auth", opaque="xyz""#).unwrap();
        let h = authorization_header(&challenge, "u", "p", "REGISTER", "sip:r", 0x1a, "cn").unwrap();
        assert!(h.ends_with(r#", cnonce="cn", qop=auth, nc=0000001a, opaque="xyz""#), "{h}");
        let parsed = parse_authorization(&h).unwrap();
        assert_eq!(parsed.expected_response("REGISTER", "p"), parsed.response.unwrap());
    }

    #[test]
    fn authorization_header_without_auth_qop_omits_qop_cnonce_nc() {
        let challenge = parse_challenge(r#"Digest realm="r", nonce="n", qop="auth-int""#).unwrap();
        let h = authorization_header(&challenge, "u", "p", "REGISTER", "sip:r", 1, "cn").unwrap();
        let expected = compute_response(&DigestInput {
            username: "u",
            realm: "r",
            password: "p",
            method: "REGISTER",
            uri: "sip:r",
            nonce: "n",
            nc: None,
            cnonce: None,
            qop: None,
        });
        assert_eq!(
            h,
            format!(r#"Digest username="u", realm="r", nonce="n", uri="sip:r", response="{expected}", algorithm=MD5"#)
        );
    }

    #[test]
    fn authorization_header_escapes_quotes() {
        let challenge = parse_challenge(r#"Digest realm="a\"b", nonce="n""#).unwrap();
        let h = authorization_header(&challenge, "u\\", "p", "REGISTER", "sip:r", 1, "cn").unwrap();
        assert!(h.starts_with(r#"Digest username="u\\", realm="a\"b","#), "{h}");
    }

    #[test]
    fn authorization_header_refuses_other_algorithms() {
        let challenge = parse_challenge(r#"Digest realm="r", nonce="n", algorithm=SHA-256"#).unwrap();
        let err = authorization_header(&challenge, "u", "p", "REGISTER", "sip:r", 1, "cn").unwrap_err();
        assert_eq!(err, SipError::UnsupportedAlgorithm("SHA-256".into()));
        let md5 = parse_challenge(r#"Digest realm="r", nonce="n", algorithm=md5"#).unwrap();
        assert!(authorization_header(&md5, "u", "p", "REGISTER", "sip:r", 1, "cn").is_ok());
    }

    #[test]
    fn www_authenticate_is_byte_exact() {
        assert_eq!(
            www_authenticate("jambonz.org", "157590482938000", false),
            r#"Digest realm="jambonz.org", algorithm=MD5, qop="auth", nonce="157590482938000""#
        );
        assert_eq!(
            www_authenticate("jambonz.org", "n1", true),
            r#"Digest realm="jambonz.org", algorithm=MD5, qop="auth", nonce="n1", stale=true"#
        );
    }

    #[test]
    fn our_challenge_parses_back() {
        let c = parse_challenge(&www_authenticate("example.com", "123", true)).unwrap();
        assert_eq!((c.realm.as_str(), c.nonce.as_str(), c.stale), ("example.com", "123", true));
        assert_eq!(c.qop, vec!["auth"]);
    }
}
