//! A strict reading of Digest credentials (RFC 7616 §3.4 with the RFC 7235 §2.1 and RFC 7230
//! §3.2.6 grammar), written independently of the daemon's parser so that the `digest` target
//! can compare the two:
//!
//! ```text
//! credentials = "Digest" 1*SP auth-param *( OWS "," OWS auth-param )
//! auth-param  = token BWS "=" BWS ( token / quoted-string )
//! ```
//!
//! Parameter names are case-insensitive and each may occur once (RFC 7235 §2.1). Anything that
//! does not match, a repeated name, `username*` (RFC 8187 encoding, not read by the registrar)
//! or an empty `algorithm` is refused: on such a header a strict reader has no single answer.

use std::collections::BTreeMap;

/// The fields the registrar uses, as a strict reader sees them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StrictCredentials {
    pub username: Option<String>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub uri: Option<String>,
    /// `MD5` when absent (RFC 7616 §3.4).
    pub algorithm: String,
    pub response: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Byte-level cursor: the grammar is defined on octets, UTF-8 bytes ≥ 0x80 are obs-text.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ows(&mut self) {
        while self.peek().is_some_and(is_ows) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn quoted(&mut self) -> Option<String> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                    if !(e == b'\t' || e == b' ' || (0x21..=0x7e).contains(&e) || e >= 0x80) {
                        return None;
                    }
                    self.i += 1;
                    out.push(e);
                }
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => out.push(c),
                _ => return None,
            }
        }
    }
}

/// The strict reading, or `None` when a strict reader refuses the header.
pub fn parse(header: &str) -> Option<StrictCredentials> {
    let s = header.as_bytes();
    if s.len() < 7 || !s[..6].eq_ignore_ascii_case(b"Digest") || s[6] != b' ' {
        return None;
    }
    let mut c = Cursor { s, i: 6 };
    while c.peek() == Some(b' ') {
        c.i += 1;
    }
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let name = c.token()?.to_ascii_lowercase();
        c.skip_ows();
        if c.peek() != Some(b'=') {
            return None;
        }
        c.i += 1;
        c.skip_ows();
        let value = if c.peek() == Some(b'"') { c.quoted()? } else { c.token()? };
        if params.insert(name, value).is_some() {
            return None;
        }
        c.skip_ows();
        match c.peek() {
            None => break,
            Some(b',') => {
                c.i += 1;
                c.skip_ows();
            }
            Some(_) => return None,
        }
    }
    if params.contains_key("username*") {
        return None;
    }
    let algorithm = match params.get("algorithm") {
        Some(a) if a.is_empty() => return None,
        Some(a) => a.clone(),
        None => "MD5".to_string(),
    };
    let get = |n: &str| params.get(n).cloned();
    Some(StrictCredentials {
        username: get("username"),
        realm: get("realm"),
        nonce: get("nonce"),
        uri: get("uri"),
        algorithm,
        response: get("response"),
        qop: get("qop"),
        nc: get("nc"),
        cnonce: get("cnonce"),
        opaque: get("opaque"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_inside_quoted_strings_are_not_parameters() {
        let c = parse(r#"Digest opaque="x username=bob", username="alice""#).unwrap();
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.opaque.as_deref(), Some("x username=bob"));
    }

    #[test]
    fn refuses_what_has_no_single_reading() {
        for bad in [
            r#"Digest username="a", username="b""#,
            r#"Digest username="a" realm="r""#,
            r#"Basic username="a""#,
            r#"Digest username="a"#,
            r#"Digest username="a",, realm="r""#,
            r#"Digest algorithm="""#,
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_escapes_and_case_insensitive_names() {
        let c = parse("digest  USERNAME = \"a\\\"b\" ,nc=00000001").unwrap();
        assert_eq!(c.username.as_deref(), Some("a\"b"));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(c.algorithm, "MD5");
    }
}
