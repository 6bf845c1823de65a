//! A parsed SIP message: start line, headers in arrival order, body.
//!
//! Parsing is deliberately lenient about what drachtio already validated (it re-serialises what
//! it received) and strict about structure: anything that is not a SIP message is a typed error,
//! never a panic.

use std::fmt;

/// Header compact forms (RFC 3261 §7.3.3 and extensions) mapped to their full names.
const COMPACT_FORMS: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("f", "From"),
    ("t", "To"),
    ("v", "Via"),
    ("m", "Contact"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("k", "Supported"),
    ("e", "Content-Encoding"),
    ("s", "Subject"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("u", "Allow-Events"),
    ("x", "Session-Expires"),
];

/// The one place where header names are compared: case-insensitive, compact forms expanded.
pub fn header_name_eq(a: &str, b: &str) -> bool {
    canonical_name(a).eq_ignore_ascii_case(canonical_name(b))
}

/// Full name for a compact form, the name itself otherwise.
pub fn canonical_name(name: &str) -> &str {
    if name.len() == 1 {
        for (short, long) in COMPACT_FORMS {
            if name.eq_ignore_ascii_case(short) {
                return long;
            }
        }
    }
    name
}

/// The largest SIP message parsed: what fits one UDP datagram. drachtio passes TCP messages of
/// any size, and nothing the sidecar answers (REGISTER, OPTIONS) needs more.
pub const MAX_MESSAGE_BYTES: usize = 65_535;

/// The most header lines parsed (a phone's REGISTER has about 15): each becomes an allocation,
/// so a message of tiny lines must not become tens of thousands of them.
pub const MAX_HEADER_LINES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipError {
    Empty,
    NotUtf8,
    BadStartLine(String),
    BadHeader(String),
    MissingHeader(&'static str),
    BadHeaderValue {
        header: &'static str,
        value: String,
    },
    BadUri(String),
    /// A value that could not be parsed: `what` names the element (URI, Via, CSeq, …),
    /// `reason` says which part was wrong.
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Digest credentials lack a field the registrar needs (`username`, `realm`, …).
    MissingCredential(&'static str),
    /// A challenge asks for a digest algorithm we cannot compute.
    UnsupportedAlgorithm(String),
    /// Larger than `MAX_MESSAGE_BYTES`: refused before anything is parsed.
    TooLarge(usize),
    /// More than `MAX_HEADER_LINES` header lines: refused before anything is parsed.
    TooManyHeaders,
}

impl fmt::Display for SipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SipError::Empty => write!(f, "SIP: empty message"),
            SipError::NotUtf8 => write!(f, "SIP: headers are not UTF-8"),
            SipError::BadStartLine(l) => write!(f, "SIP: bad start line `{}`", truncate(l)),
            SipError::BadHeader(l) => write!(f, "SIP: bad header line `{}`", shown(l)),
            SipError::MissingHeader(h) => write!(f, "SIP: missing {h} header"),
            SipError::BadHeaderValue { header, value } if is_credential_header(header) => {
                write!(f, "SIP: bad {header} header ({} characters, not shown)", value.chars().count())
            }
            SipError::BadHeaderValue { header, value } => {
                write!(f, "SIP: bad {header} header `{}`", truncate(value))
            }
            SipError::BadUri(u) => write!(f, "SIP: bad URI `{}`", truncate(u)),
            SipError::Invalid { what, value, reason } => {
                write!(f, "SIP: bad {what} `{}`: {reason}", truncate(value))
            }
            SipError::MissingCredential(field) => {
                write!(f, "SIP: digest credentials have no {field}")
            }
            SipError::UnsupportedAlgorithm(a) => {
                write!(f, "SIP: digest algorithm `{}` is not supported", truncate(a))
            }
            SipError::TooLarge(n) => write!(f, "SIP: message of {n} bytes exceeds {MAX_MESSAGE_BYTES}"),
            SipError::TooManyHeaders => write!(f, "SIP: more than {MAX_HEADER_LINES} header lines"),
        }
    }
}

impl std::error::Error for SipError {}

/// Headers whose value is a credential (a `Basic` one is a password in base64): error texts
/// end up in logs, so their values are never shown.
fn is_credential_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("Authorization") || name.eq_ignore_ascii_case("Proxy-Authorization")
}

/// A header line for an error text: cut to 80 characters, and only the name of a credential
/// header (a line that may hold one, e.g. `Authorization Basic …` without its colon).
fn shown(line: &str) -> std::borrow::Cow<'_, str> {
    let lower = line.trim_start().to_ascii_lowercase();
    if lower.starts_with("authorization") || lower.starts_with("proxy-authorization") {
        return format!("<credential header, {} characters, not shown>", line.chars().count()).into();
    }
    truncate(line).into()
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { status: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    /// Headers in arrival order, names as received, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SipMessage {
    pub fn parse(bytes: &[u8]) -> Result<SipMessage, SipError> {
        if bytes.is_empty() {
            return Err(SipError::Empty);
        }
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(SipError::TooLarge(bytes.len()));
        }
        let (head, body) = match find(bytes, b"\r\n\r\n") {
            Some(i) => (&bytes[..i], &bytes[i + 4..]),
            None => (bytes, &b""[..]),
        };
        // Line breaks counted before any allocation: one before each header line.
        if head.iter().filter(|&&b| b == b'\n').count() > MAX_HEADER_LINES {
            return Err(SipError::TooManyHeaders);
        }
        let head = std::str::from_utf8(head).map_err(|_| SipError::NotUtf8)?;
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let start = parse_start_line(first)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                // Folded continuation line (obsolete but legal): append to the previous value,
                // one space between, so the value stays trimmed like every other value.
                match headers.last_mut() {
                    Some((_, v)) => {
                        let more = line.trim();
                        if !more.is_empty() {
                            if !v.is_empty() {
                                v.push(' ');
                            }
                            v.push_str(more);
                        }
                        continue;
                    }
                    None => return Err(SipError::BadHeader(line.to_string())),
                }
            }
            let Some(colon) = line.find(':') else {
                return Err(SipError::BadHeader(line.to_string()));
            };
            let name = line[..colon].trim();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(SipError::BadHeader(line.to_string()));
            }
            headers.push((name.to_string(), line[colon + 1..].trim().to_string()));
        }
        Ok(SipMessage { start, headers, body: body.to_vec() })
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    /// First value of a header (case-insensitive, compact forms understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| header_name_eq(n, name)).map(|(_, v)| v.as_str())
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Every occurrence of a header, raw values in arrival order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| header_name_eq(n, name)).map(|(_, v)| v.as_str())
    }

    /// All values of a header, repeated headers and comma-separated lists flattened.
    /// Commas inside quotes or angle brackets do not split.
    pub fn header_values<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        self.header_all(name).flat_map(split_header_list).collect()
    }

    /// Serialises the message with CRLF line endings.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.extend_from_slice(format!("{method} {uri} SIP/2.0\r\n").as_bytes())
            }
            StartLine::Response { status, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {status} {reason}\r\n").as_bytes())
            }
        }
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Splits a header value on commas that are outside quotes and angle brackets.
pub fn split_header_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                let part = value[start..i].trim();
                if !part.is_empty() {
                    out.push(part);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let part = value[start..].trim();
    if !part.is_empty() {
        out.push(part);
    }
    out
}

fn parse_start_line(line: &str) -> Result<StartLine, SipError> {
    let bad = || SipError::BadStartLine(line.to_string());
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = code.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&status) {
            return Err(bad());
        }
        return Ok(StartLine::Response { status, reason: reason.to_string() });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if version != "SIP/2.0" || method.is_empty() || uri.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(bad());
    }
    Ok(StartLine::Request { method: method.to_string(), uri: uri.to_string() })
}

/// RFC 3261 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] = b"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-12816-1-0;rport=5070\r\nMax-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1:5060>;tag=12816SIPpTag001\r\nTo: <sip:alice@127.0.0.1:5060>\r\nCall-ID: 1-12816@127.0.0.1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5070;transport=UDP>\r\nExpires: 3600\r\nUser-Agent: sipp-test\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn parses_captured_register() {
        let m = SipMessage::parse(REGISTER).unwrap();
        assert_eq!(m.method(), Some("REGISTER"));
        assert_eq!(m.request_uri(), Some("sip:127.0.0.1:5060"));
        assert_eq!(m.header("call-id"), Some("1-12816@127.0.0.1"));
        assert_eq!(m.header("i"), Some("1-12816@127.0.0.1"));
        assert_eq!(m.header("EXPIRES"), Some("3600"));
        assert_eq!(m.to_bytes(), REGISTER.to_vec());
    }

    #[test]
    fn size_and_header_count_are_bounded_before_parsing() {
        let many: String = (0..=MAX_HEADER_LINES).map(|i| format!("X-H{i}: v\r\n")).collect();
        let text = format!("OPTIONS sip:a SIP/2.0\r\n{many}\r\n");
        assert_eq!(SipMessage::parse(text.as_bytes()), Err(SipError::TooManyHeaders));
        let fits: String = (0..MAX_HEADER_LINES).map(|i| format!("X-H{i}: v\r\n")).collect();
        let text = format!("OPTIONS sip:a SIP/2.0\r\n{fits}\r\n");
        assert_eq!(SipMessage::parse(text.as_bytes()).unwrap().headers.len(), MAX_HEADER_LINES);
        let big = format!("OPTIONS sip:a SIP/2.0\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_MESSAGE_BYTES));
        assert!(matches!(SipMessage::parse(big.as_bytes()), Err(SipError::TooLarge(_))));
    }

    #[test]
    fn splits_lists_outside_quotes_and_brackets() {
        assert_eq!(
            split_header_list(r#"<sip:a@b;x=1,2>;expires=3, "Bob, Jr" <sip:c@d>, sip:e@f"#),
            vec!["<sip:a@b;x=1,2>;expires=3", r#""Bob, Jr" <sip:c@d>"#, "sip:e@f"]
        );
    }

    #[test]
    fn folded_continuation_lines_join_with_one_space() {
        let m =
            SipMessage::parse(b"OPTIONS sip:a SIP/2.0\r\nSubject: one\r\n  two\r\n \r\nX-Empty:\r\n\tthree\r\n\r\n")
                .unwrap();
        assert_eq!(m.header("Subject"), Some("one two"));
        assert_eq!(m.header("X-Empty"), Some("three"));
        // what is printed parses back to the same message
        assert_eq!(SipMessage::parse(&m.to_bytes()), Ok(m));
    }

    #[test]
    fn rejects_garbage() {
        assert!(SipMessage::parse(b"").is_err());
        assert!(SipMessage::parse(b"hello").is_err());
        assert!(SipMessage::parse(b"SIP/2.0 99 X\r\n\r\n").is_err());
        assert!(SipMessage::parse(b"INVITE sip:a SIP/2.0\r\nno colon\r\n\r\n").is_err());
    }

    #[test]
    fn error_texts_never_show_a_credential() {
        let secret = "Basic dXNlcjpwYXNzd29yZA==";
        let no_colon =
            SipMessage::parse(format!("REGISTER sip:a SIP/2.0\r\nAuthorization {secret}\r\n\r\n").as_bytes());
        let text = no_colon.unwrap_err().to_string();
        assert!(!text.contains("dXNlcjpw"), "{text}");
        assert!(text.contains("not shown"), "{text}");
        let value = SipError::BadHeaderValue { header: "Authorization", value: secret.into() }.to_string();
        assert!(!value.contains("dXNlcjpw") && value.contains("not shown"), "{value}");
        let other = SipError::BadHeader("X-Foo no colon".into()).to_string();
        assert!(other.contains("X-Foo no colon"), "{other}");
    }
}
