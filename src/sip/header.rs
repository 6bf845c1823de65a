//! Structured header values: name-addr (From, To, Contact), Via, CSeq, and the Contact list of
//! a REGISTER.

use std::fmt;

use super::message::{SipError, SipMessage};
use super::uri::{find_param, is_valid_host, parse_port, write_params, SipUri};

fn invalid(what: &'static str, value: &str, reason: &'static str) -> SipError {
    SipError::Invalid { what, value: value.to_string(), reason }
}

/// `["display name"] <uri>;params` or a bare `uri;params` (From, To, Contact, Route, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name without its quotes, escapes resolved.
    pub display_name: Option<String>,
    /// The URI text as received: inside `<>` (URI parameters included), or the bare addr-spec.
    uri_text: String,
    /// Header parameters (`tag`, `expires`, …) in order; values as received (quotes kept).
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(input: &str) -> Result<NameAddr, SipError> {
        const WHAT: &str = "name-addr";
        let text = input.trim();
        if text.is_empty() {
            return Err(invalid(WHAT, input, "empty"));
        }
        // A token display name cannot contain `;` or `"`, a bare addr-spec cannot contain `<`
        // before its parameters: whichever of the three comes first tells the forms apart.
        let first_special = text.find(['<', ';', '"']).map(|i| (i, text.as_bytes()[i]));
        let (display_name, uri_text, rest) = match first_special {
            Some((0, b'"')) => {
                let (name, after) =
                    quoted_string(text).ok_or_else(|| invalid(WHAT, text, "unterminated quoted display name"))?;
                let after = after.trim_start();
                if !after.starts_with('<') {
                    return Err(invalid(WHAT, text, "display name not followed by <uri>"));
                }
                let (uri, rest) = bracketed(after).ok_or_else(|| invalid(WHAT, text, "missing `>`"))?;
                (Some(name), uri, rest)
            }
            Some((lt, b'<')) => {
                let name = text[..lt].trim();
                let (uri, rest) = bracketed(&text[lt..]).ok_or_else(|| invalid(WHAT, text, "missing `>`"))?;
                (if name.is_empty() { None } else { Some(name.to_string()) }, uri, rest)
            }
            Some((_, b'"')) => return Err(invalid(WHAT, text, "quote in the middle of the address")),
            Some((semicolon, _)) => {
                // Bare addr-spec: RFC 3261 §20 says its `;params` are header parameters.
                (None, text[..semicolon].trim(), &text[semicolon..])
            }
            None => (None, text, ""),
        };
        if uri_text.is_empty() {
            return Err(invalid(WHAT, text, "empty URI"));
        }
        if uri_text.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"')) {
            return Err(invalid(WHAT, text, "white space, control character, `<`, `>` or `\"` inside the URI"));
        }
        let params = parse_header_params(WHAT, text, rest)?;
        Ok(NameAddr { display_name, uri_text: uri_text.to_string(), params })
    }

    /// The URI text exactly as received (inside `<>`, URI parameters included, header
    /// parameters excluded): what the registrar stores as `contact`.
    pub fn uri_str(&self) -> &str {
        &self.uri_text
    }

    /// The URI parsed; an error when it is not a valid sip/sips URI.
    pub fn uri(&self) -> Result<SipUri, SipError> {
        SipUri::parse(&self.uri_text)
    }

    /// Value of a header parameter, name compared case-insensitively; valueless gives `Some("")`.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    /// The raw `expires` parameter (`Some("")` when valueless): kept as text because the
    /// registrar must see non-numeric values too.
    pub fn expires_param(&self) -> Option<&str> {
        self.param("expires")
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.display_name {
            f.write_str("\"")?;
            for c in name.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>", self.uri_text)?;
        write_params(f, &self.params)
    }
}

/// One Via value: `SIP/2.0/UDP host:port;branch=…;received=…;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `SIP/2.0/UDP`, white space removed, case as received.
    pub protocol: String,
    /// The transport part of the protocol, case as received (`UDP`, `tcp`, `WSS`, …).
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn parse(input: &str) -> Result<Via, SipError> {
        const WHAT: &str = "Via";
        let text = input.trim();
        let bad = |reason| invalid(WHAT, text, reason);

        // sent-protocol: name / version / transport, with optional white space around `/`.
        let mut parts = text.splitn(3, '/');
        let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("no SIP/2.0/<transport>"));
        };
        let (name, version, rest) = (name.trim(), version.trim(), rest.trim_start());
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(bad("protocol is not SIP/2.0"));
        }
        let transport_end = rest.find(|c: char| c.is_whitespace()).ok_or_else(|| bad("no sent-by"))?;
        let transport = &rest[..transport_end];
        if transport.is_empty() || !transport.bytes().all(is_token_byte) {
            return Err(bad("bad transport"));
        }

        // sent-by: host [ ":" port ], then `;params`. White space is allowed around the colon.
        let rest = rest[transport_end..].trim_start();
        let end = rest.find(';').unwrap_or(rest.len());
        let sent_by = rest[..end].trim();
        let host_end = if sent_by.starts_with('[') {
            sent_by.find(']').map_or(sent_by.len(), |i| i + 1)
        } else {
            sent_by.find(|c: char| c == ':' || c.is_whitespace()).unwrap_or(sent_by.len())
        };
        let host = &sent_by[..host_end];
        if !is_valid_host(host) {
            return Err(bad("bad sent-by host"));
        }
        let after_host = sent_by[host_end..].trim_start();
        let port = if after_host.is_empty() {
            None
        } else {
            let port = after_host.strip_prefix(':').ok_or_else(|| bad("text after sent-by"))?.trim_start();
            Some(parse_port(port).ok_or_else(|| bad("sent-by port is not a number from 0 to 65535"))?)
        };
        let params = parse_header_params(WHAT, text, &rest[end..])?;
        let via = Via {
            protocol: format!("{name}/{version}/{transport}"),
            transport: transport.to_string(),
            host: host.to_string(),
            port,
            params,
        };
        if let Some(rport) = via.param("rport") {
            if !rport.is_empty() && parse_port(rport).is_none() {
                return Err(bad("rport is not a port number"));
            }
        }
        Ok(via)
    }

    /// The transport lower-cased (`udp`, `tcp`, `tls`, `ws`, `wss`, …).
    pub fn transport_lower(&self) -> String {
        self.transport.to_ascii_lowercase()
    }

    /// Value of a Via parameter, name compared case-insensitively; valueless gives `Some("")`.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch")
    }

    pub fn received(&self) -> Option<&str> {
        self.param("received")
    }

    /// `None` without `rport`, `Some(None)` for a bare `;rport` (a request for one),
    /// `Some(Some(port))` when filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(parse_port)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)
    }
}

/// The topmost Via of a message: first element of the first Via header.
pub fn top_via(message: &SipMessage) -> Result<Via, SipError> {
    let first = message.header_values("Via").into_iter().next().ok_or(SipError::MissingHeader("Via"))?;
    Via::parse(first)
}

/// `CSeq: 1 REGISTER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: String,
}

impl CSeq {
    pub fn parse(input: &str) -> Result<CSeq, SipError> {
        const WHAT: &str = "CSeq";
        let mut words = input.split_whitespace();
        let (Some(seq), Some(method), None) = (words.next(), words.next(), words.next()) else {
            return Err(invalid(WHAT, input, "expected `<number> <method>`"));
        };
        // u32::from_str would also take a leading `+`; the grammar is digits only.
        if seq.len() > 10 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(WHAT, input, "sequence number is not a 32-bit number"));
        }
        let seq = seq.parse().map_err(|_| invalid(WHAT, input, "sequence number is not a 32-bit number"))?;
        if !method.bytes().all(is_token_byte) {
            return Err(invalid(WHAT, input, "bad method"));
        }
        Ok(CSeq { seq, method: method.to_string() })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// The Contact header(s) of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (remove all bindings).
    Star,
    /// Every contact across repeated headers and comma lists, in order.
    List(Vec<NameAddr>),
}

/// Parses every Contact header of a message. No Contact header at all is
/// `SipError::MissingHeader("Contact")`, so the registrar can answer its dedicated 400.
pub fn parse_contacts(message: &SipMessage) -> Result<Contacts, SipError> {
    if !message.has_header("Contact") {
        return Err(SipError::MissingHeader("Contact"));
    }
    let values = message.header_values("Contact");
    if values.is_empty() {
        return Err(invalid("Contact", "", "empty"));
    }
    if values.contains(&"*") {
        if values.len() == 1 {
            return Ok(Contacts::Star);
        }
        return Err(invalid("Contact", &values.join(", "), "`*` mixed with other contacts"));
    }
    values.into_iter().map(NameAddr::parse).collect::<Result<Vec<_>, _>>().map(Contacts::List)
}

/// Replaces the first `expires=<digits>` in a raw Contact value with `expires=<new>`, leaving
/// the rest untouched (the Node sidecar's `replace(/expires=\d+/, …)`: case-sensitive, ASCII
/// digits). Without such a substring the value is returned unchanged.
pub fn replace_first_expires(raw_contact: &str, new: u32) -> String {
    const KEY: &str = "expires=";
    let mut from = 0;
    while let Some(found) = raw_contact[from..].find(KEY) {
        let digits_start = from + found + KEY.len();
        let digits = raw_contact[digits_start..].bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            return format!("{}{new}{}", &raw_contact[..digits_start], &raw_contact[digits_start + digits..]);
        }
        from = digits_start;
    }
    raw_contact.to_string()
}

/// `"quoted \"string\""…` at the start of `text`: the unescaped content and what follows the
/// closing quote. `None` when unterminated.
pub(crate) fn quoted_string(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &text[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// `<uri>rest` → (uri trimmed, rest).
fn bracketed(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix('<')?;
    let close = inner.find('>')?;
    Some((inner[..close].trim(), &inner[close + 1..]))
}

/// Header parameters `;name[=value]…` (generic-param of RFC 3261). Values are kept as received,
/// quoted strings with their quotes. Empty segments (`;;`, a trailing `;`) are skipped, as the
/// Node parser did, so sloppy phones still register.
fn parse_header_params(what: &'static str, whole: &str, text: &str) -> Result<Vec<(String, Option<String>)>, SipError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let Some(mut rest) = text.strip_prefix(';') else {
        return Err(invalid(what, whole, "unexpected text after the address"));
    };
    let mut params = Vec::new();
    loop {
        // One segment runs to the next `;` outside a quoted string.
        let mut end = rest.len();
        let mut in_quotes = false;
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                ';' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        if in_quotes {
            return Err(invalid(what, whole, "unterminated quoted parameter value"));
        }
        let segment = rest[..end].trim();
        if !segment.is_empty() {
            let (name, value) = match segment.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (segment, None),
            };
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(invalid(what, whole, "bad parameter name"));
            }
            if let Some(v) = value {
                let quoted_ok = v.starts_with('"') && quoted_string(v).is_some_and(|(_, after)| after.is_empty());
                if !quoted_ok && v.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
                    return Err(invalid(what, whole, "bad parameter value"));
                }
            }
            params.push((name.to_string(), value.map(str::to_string)));
        }
        if end == rest.len() {
            return Ok(params);
        }
        rest = &rest[end + 1..];
    }
}

/// RFC 3261 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn na(s: &str) -> NameAddr {
        NameAddr::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn msg(headers: &str) -> SipMessage {
        let text = format!("REGISTER sip:jambonz.org SIP/2.0\r\n{headers}\r\n");
        SipMessage::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn name_addr_with_brackets_keeps_uri_params_inside_and_header_params_outside() {
        let a = na("<sip:alice@127.0.0.1:5070;transport=UDP>;expires=3600;tag=abc");
        assert_eq!(a.display_name, None);
        assert_eq!(a.uri_str(), "sip:alice@127.0.0.1:5070;transport=UDP");
        assert_eq!(a.uri().unwrap().param("transport"), Some("UDP"));
        assert_eq!(a.expires_param(), Some("3600"));
        assert_eq!(a.tag(), Some("abc"));
    }

    #[test]
    fn bare_addr_spec_params_are_header_params() {
        let a = na("sip:127.0.0.18:5060;transport=tcp;tag=tp9mtmjX208pH");
        assert_eq!(a.uri_str(), "sip:127.0.0.18:5060");
        assert_eq!(a.param("transport"), Some("tcp"));
        assert_eq!(a.tag(), Some("tp9mtmjX208pH"));
    }

    #[test]
    fn quoted_display_name_is_unescaped() {
        let a = na(r#""Bob \"The Builder\", Jr" <sips:bob@example.com>;tag=1"#);
        assert_eq!(a.display_name.as_deref(), Some(r#"Bob "The Builder", Jr"#));
        assert_eq!(a.uri_str(), "sips:bob@example.com");
        assert_eq!(a.tag(), Some("1"));
    }

    #[test]
    fn token_display_name_may_have_several_words() {
        let a = na("Alice Smith <sip:alice@example.com>");
        assert_eq!(a.display_name.as_deref(), Some("Alice Smith"));
        assert_eq!(a.uri().unwrap().user.as_deref(), Some("alice"));
    }

    #[test]
    fn quoted_param_values_are_kept_raw_even_with_brackets_inside() {
        let a = na(r#"<sip:a@b>;+sip.instance="<urn:uuid:1;x>";expires=60"#);
        assert_eq!(a.param("+sip.instance"), Some(r#""<urn:uuid:1;x>""#));
        assert_eq!(a.expires_param(), Some("60"));
        let bare = na(r#"sip:a@b;+sip.instance="<urn:uuid:1>""#);
        assert_eq!(bare.uri_str(), "sip:a@b");
        assert_eq!(bare.param("+SIP.INSTANCE"), Some(r#""<urn:uuid:1>""#));
    }

    #[test]
    fn non_numeric_expires_param_is_visible() {
        assert_eq!(na("<sip:a@b>;expires=soon").expires_param(), Some("soon"));
        assert_eq!(na("<sip:a@b>;expires").expires_param(), Some(""));
        assert_eq!(na("<sip:a@b>").expires_param(), None);
    }

    #[test]
    fn name_addr_uri_that_is_not_sip_is_reported_when_asked_for() {
        let a = na("<tel:+15551234>");
        assert_eq!(a.uri_str(), "tel:+15551234");
        assert!(a.uri().is_err());
        assert!(na("<sip:jane@jambonz.org@jambonz.org>").uri().is_err());
    }

    #[test]
    fn empty_param_segments_are_skipped() {
        assert_eq!(na("<sip:a@b>;;tag=x;").params, vec![("tag".to_string(), Some("x".to_string()))]);
    }

    #[test]
    fn broken_name_addrs_are_errors() {
        for bad in [
            "",
            "<sip:a@b",
            "<>",
            "\"Bob <sip:a@b>",
            "\"Bob\" sip:a@b",
            "<sip:a@b> junk",
            "<sip:a@b>;=x",
            "<sip:a@b>;tag=\"x",
            "<sip:a@b>;tag=a b",
            "Bob sip:a@b",
            "x\"y\" <sip:a@b>",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn name_addr_display_reserialises() {
        let a = na(r#""Bob \"B\"" <sip:bob@b.c;lr>;tag=1;expires=30"#);
        assert_eq!(a.to_string(), r#""Bob \"B\"" <sip:bob@b.c;lr>;tag=1;expires=30"#);
        assert_eq!(NameAddr::parse(&a.to_string()).unwrap(), a);
        assert_eq!(na("sip:a@b;tag=x").to_string(), "<sip:a@b>;tag=x");
    }

    #[test]
    fn via_parses_protocol_sent_by_and_params() {
        let v = Via::parse("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-12816-1-0;rport=5070").unwrap();
        assert_eq!(v.protocol, "SIP/2.0/UDP");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.transport_lower(), "udp");
        assert_eq!((v.host.as_str(), v.port), ("127.0.0.1", Some(5070)));
        assert_eq!(v.branch(), Some("z9hG4bK-12816-1-0"));
        assert_eq!(v.rport(), Some(Some(5070)));
        assert_eq!(v.received(), None);
    }

    #[test]
    fn via_rport_may_be_valueless() {
        let v = Via::parse("SIP/2.0/UDP 127.0.0.10;rport;branch=z9hG4bKKFjZBQ80SS5je").unwrap();
        assert_eq!(v.port, None);
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.branch(), Some("z9hG4bKKFjZBQ80SS5je"));
        assert_eq!(Via::parse("SIP/2.0/TCP h;branch=x").unwrap().rport(), None);
        assert!(Via::parse("SIP/2.0/UDP h;rport=abc").is_err());
    }

    #[test]
    fn via_keeps_transport_case_and_accepts_spaces_and_ipv6() {
        let v = Via::parse("SIP / 2.0 / wss  [2001:db8::9] : 443 ;received=2001:db8::1 ; branch=z9hG4bKx").unwrap();
        assert_eq!(v.protocol, "SIP/2.0/wss");
        assert_eq!(v.transport, "wss");
        assert_eq!((v.host.as_str(), v.port), ("[2001:db8::9]", Some(443)));
        assert_eq!(v.received(), Some("2001:db8::1"));
        assert_eq!(v.branch(), Some("z9hG4bKx"));
    }

    #[test]
    fn broken_vias_are_errors() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/3.0/UDP h",
            "HTTP/2.0/UDP h",
            "SIP/2.0 h",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0/UDP h x",
            "SIP/2.0/UDP a@b",
            "SIP/2.0/UDP h;=1",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn via_display_reserialises() {
        let s = "SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-12824-1-0;rport=5070";
        assert_eq!(Via::parse(s).unwrap().to_string(), s);
    }

    #[test]
    fn top_via_is_first_element_of_first_via_header() {
        let m = msg(
            "v: SIP/2.0/TCP a.example:5061;branch=1, SIP/2.0/UDP b.example;branch=2\r\nVia: SIP/2.0/UDP c;branch=3\r\n",
        );
        let v = top_via(&m).unwrap();
        assert_eq!((v.transport.as_str(), v.host.as_str(), v.branch()), ("TCP", "a.example", Some("1")));
        assert_eq!(top_via(&msg("To: <sip:a@b>\r\n")), Err(SipError::MissingHeader("Via")));
    }

    #[test]
    fn cseq_parses_number_and_method() {
        assert_eq!(CSeq::parse("1 REGISTER").unwrap(), CSeq { seq: 1, method: "REGISTER".into() });
        assert_eq!(CSeq::parse(" 4294967295\tOPTIONS ").unwrap().seq, u32::MAX);
        assert_eq!(CSeq::parse("123334345 OPTIONS").unwrap().to_string(), "123334345 OPTIONS");
        for bad in ["", "1", "REGISTER", "x REGISTER", "+1 REGISTER", "4294967296 REGISTER", "1 REG ISTER", "1 RE@G"] {
            assert!(CSeq::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn contacts_span_repeated_headers_and_comma_lists() {
        let m = msg("Contact: <sip:a@1.2.3.4>;expires=60, \"X, Y\" <sip:b@h;x=1,2>\r\nm: sip:c@h;expires=0\r\n");
        let Contacts::List(list) = parse_contacts(&m).unwrap() else { panic!("not a list") };
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].expires_param(), Some("60"));
        assert_eq!(list[1].display_name.as_deref(), Some("X, Y"));
        assert_eq!(list[1].uri_str(), "sip:b@h;x=1,2");
        assert_eq!(list[2].uri_str(), "sip:c@h");
        assert_eq!(list[2].expires_param(), Some("0"));
    }

    #[test]
    fn contact_star_is_recognised() {
        assert_eq!(parse_contacts(&msg("Contact: *\r\n")).unwrap(), Contacts::Star);
        assert!(parse_contacts(&msg("Contact: *, <sip:a@b>\r\n")).is_err());
    }

    #[test]
    fn missing_contact_is_its_own_error() {
        assert_eq!(parse_contacts(&msg("To: <sip:a@b>\r\n")), Err(SipError::MissingHeader("Contact")));
        assert!(matches!(parse_contacts(&msg("Contact:\r\n")), Err(SipError::Invalid { .. })));
        assert!(parse_contacts(&msg("Contact: <sip:a@b\r\n")).is_err());
    }

    #[test]
    fn replace_first_expires_rewrites_only_the_first_numeric_one() {
        assert_eq!(
            replace_first_expires("<sip:a@b;transport=UDP>;expires=3600", 30),
            "<sip:a@b;transport=UDP>;expires=30"
        );
        assert_eq!(
            replace_first_expires("<sip:a@b>;expires=3600, <sip:c@d>;expires=60", 30),
            "<sip:a@b>;expires=30, <sip:c@d>;expires=60"
        );
        // `expires=` without digits is skipped, the next numeric one is rewritten
        assert_eq!(replace_first_expires("<sip:a@b>;expires=;x=1;expires=10", 0), "<sip:a@b>;expires=;x=1;expires=0");
        // a URI parameter counts too: it is a plain substring search
        assert_eq!(replace_first_expires("<sip:a@b;expires=5>", 30), "<sip:a@b;expires=30>");
    }

    #[test]
    fn replace_first_expires_leaves_values_without_one_unchanged() {
        assert_eq!(replace_first_expires("<sip:a@b>", 30), "<sip:a@b>");
        assert_eq!(replace_first_expires("<sip:a@b>;Expires=60", 30), "<sip:a@b>;Expires=60");
        assert_eq!(replace_first_expires("<sip:a@b>;expires=abc", 30), "<sip:a@b>;expires=abc");
        assert_eq!(replace_first_expires("", 30), "");
    }
}
