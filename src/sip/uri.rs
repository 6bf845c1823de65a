//! SIP and SIPS URIs (RFC 3261 §19.1): `sip:user:password@host:port;uri-params?headers`.
//!
//! The grammar accepted is the one drachtio-srf's `parseUri` accepts (what the Node sidecar saw),
//! with two deliberate differences: the scheme is case-insensitive and the port must fit a u16.
//! Escaped characters (`%40`) are kept as received: the registrar builds Redis keys from the raw
//! user part, exactly like the Node code.

use std::fmt;

use super::message::SipError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips`, lower-cased.
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Domain name, IPv4 literal, or IPv6 reference with its brackets (`[::1]`).
    pub host: String,
    pub port: Option<u16>,
    /// `;name[=value]` parameters in order, names and values as received.
    pub params: Vec<(String, Option<String>)>,
    /// Everything after `?`, unparsed.
    pub headers: Option<String>,
}

fn invalid(uri: &str, reason: &'static str) -> SipError {
    SipError::Invalid { what: "URI", value: uri.to_string(), reason }
}

impl SipUri {
    pub fn parse(input: &str) -> Result<SipUri, SipError> {
        let uri = input.trim();
        if uri.is_empty() {
            return Err(invalid(input, "empty"));
        }
        if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(uri, "contains white space or control characters"));
        }
        let Some((scheme, rest)) = uri.split_once(':') else {
            return Err(invalid(uri, "no scheme"));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Err(invalid(uri, "scheme is not sip or sips"));
        }

        // The user part may itself contain `;` and `?` (RFC 3261 user-unreserved), so the first
        // `@` decides where the host starts. A second `@` then lands in the host and is refused
        // (GitHub issue 83: `sip:jane@jambonz.org@jambonz.org`).
        let (user, password, rest) = match rest.split_once('@') {
            Some((userinfo, rest)) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                if user.is_empty() {
                    return Err(invalid(uri, "empty user part"));
                }
                if !user.chars().all(is_user_char) || !password.unwrap_or("").chars().all(is_user_char) {
                    return Err(invalid(uri, "bad character in user part"));
                }
                (Some(user.to_string()), password.map(str::to_string), rest)
            }
            None => (None, None, rest),
        };

        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_string())),
            None => (rest, None),
        };
        let (hostport, params) = match rest.split_once(';') {
            Some((hp, p)) => (hp, parse_uri_params(uri, p)?),
            None => (rest, Vec::new()),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| invalid(uri, "bad host"))?;
        let port = match port {
            None => None,
            Some(p) => Some(parse_port(p).ok_or_else(|| invalid(uri, "port is not a number from 0 to 65535"))?),
        };
        if !is_valid_host(host) {
            return Err(invalid(uri, "bad host"));
        }
        Ok(SipUri { scheme, user, password, host: host.to_string(), port, params, headers })
    }

    /// True when the host is a dotted quad, with the Node sidecar's regex semantics
    /// `^(?:[0-9]{1,3}\.){3}[0-9]{1,3}$` (so `999.1.1.1` counts, `1.2.3` does not).
    pub fn host_is_ipv4_literal(&self) -> bool {
        is_ipv4_literal(&self.host)
    }

    pub fn host_is_ipv6_reference(&self) -> bool {
        self.host.starts_with('[')
    }

    /// Value of a URI parameter, name compared case-insensitively; a valueless parameter
    /// (`;lr`) gives `Some("")`.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.param(name).is_some()
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(password) = &self.password {
                write!(f, ":{password}")?;
            }
            f.write_str("@")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)?;
        if let Some(headers) = &self.headers {
            write!(f, "?{headers}")?;
        }
        Ok(())
    }
}

/// `;name[=value]…` as used by URIs and headers.
pub(crate) fn write_params(f: &mut fmt::Formatter<'_>, params: &[(String, Option<String>)]) -> fmt::Result {
    for (name, value) in params {
        match value {
            Some(v) => write!(f, ";{name}={v}")?,
            None => write!(f, ";{name}")?,
        }
    }
    Ok(())
}

/// Case-insensitive parameter lookup shared by URIs and headers.
pub(crate) fn find_param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref().unwrap_or(""))
}

/// URI parameters after the first `;`. Like drachtio-srf, every parameter needs a name: `;;` or
/// a trailing `;` make the URI invalid.
fn parse_uri_params(uri: &str, text: &str) -> Result<Vec<(String, Option<String>)>, SipError> {
    let mut params = Vec::new();
    for part in text.split(';') {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (part, None),
        };
        if name.is_empty() || !name.chars().all(is_param_char) {
            return Err(invalid(uri, "bad parameter name"));
        }
        if let Some(v) = value {
            if !v.chars().all(is_param_char) {
                return Err(invalid(uri, "bad parameter value"));
            }
        }
        params.push((name.to_string(), value.map(str::to_string)));
    }
    Ok(params)
}

/// Splits `host[:port]`, keeping an IPv6 reference whole. `None` when the brackets are broken
/// or something other than `:port` follows the host.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if text.starts_with('[') {
        let close = text.find(']')?;
        let (host, after) = text.split_at(close + 1);
        match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => Some((host, Some(port))),
            None => Some((text, None)),
        }
    }
}

/// Decimal port: digits only (no sign, no spaces), at most 65535.
pub(crate) fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Domain name (labels of letters, digits, `-` and `_` joined by single dots), IPv4 literal,
/// or bracketed IPv6 reference.
pub(crate) fn is_valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else { return false };
        // Hex groups, colons, and a dotted IPv4 tail (`::ffff:1.2.3.4`); at least one colon.
        return inner.contains(':') && inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    }
    !host.is_empty()
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

pub(crate) fn is_ipv4_literal(host: &str) -> bool {
    let groups: Vec<&str> = host.split('.').collect();
    groups.len() == 4 && groups.iter().all(|g| (1..=3).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_digit()))
}

/// Characters allowed in the user and password parts: anything visible except what would end
/// the user part or break out of a name-addr.
fn is_user_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !matches!(c, '@' | ':' | '<' | '>' | '"')
}

fn is_param_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !matches!(c, ';' | '=' | '?' | '<' | '>' | '"' | '@')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> SipUri {
        SipUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_part() {
        let u = uri("sip:alice:secret@example.com:5080;transport=tcp;lr?subject=hi&x=y");
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5080));
        assert_eq!(u.params, vec![("transport".to_string(), Some("tcp".to_string())), ("lr".to_string(), None)]);
        assert_eq!(u.headers.as_deref(), Some("subject=hi&x=y"));
    }

    #[test]
    fn uri_without_user_is_valid() {
        let u = uri("sip:127.0.0.1:5060");
        assert_eq!(u.user, None);
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, Some(5060));
        let u = uri("sip:sip.jambonz.org");
        assert_eq!((u.user, u.host.as_str(), u.port), (None, "sip.jambonz.org", None));
    }

    #[test]
    fn scheme_is_case_insensitive_and_only_sip_or_sips() {
        assert_eq!(uri("SIP:a@b.c").scheme, "sip");
        assert_eq!(uri("SiPs:a@b.c").scheme, "sips");
        assert!(SipUri::parse("tel:+15551234").is_err());
        assert!(SipUri::parse("http://example.com").is_err());
        assert!(SipUri::parse("example.com").is_err());
    }

    #[test]
    fn two_at_signs_are_an_invalid_address_of_record() {
        let err = SipUri::parse("sip:jane@jambonz.org@jambonz.org").unwrap_err();
        assert!(err.to_string().contains("bad host"), "{err}");
    }

    #[test]
    fn ipv6_host_keeps_its_brackets() {
        let u = uri("sip:bob@[2001:db8::1]:5062;transport=udp");
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5062));
        assert!(u.host_is_ipv6_reference());
        assert!(!u.host_is_ipv4_literal());
        assert_eq!(uri("sip:[::ffff:1.2.3.4]").host, "[::ffff:1.2.3.4]");
        assert!(SipUri::parse("sip:[2001:db8::1").is_err());
        assert!(SipUri::parse("sip:[2001:db8::1]x").is_err());
        assert!(SipUri::parse("sip:[zz]").is_err());
    }

    #[test]
    fn port_out_of_range_or_not_a_number_is_refused() {
        assert_eq!(uri("sip:a@b:65535").port, Some(65535));
        assert_eq!(uri("sip:a@b:0").port, Some(0));
        assert!(SipUri::parse("sip:a@b:65536").is_err());
        assert!(SipUri::parse("sip:a@b:99999999999999999999").is_err());
        assert!(SipUri::parse("sip:a@b:").is_err());
        assert!(SipUri::parse("sip:a@b:+5").is_err());
        assert!(SipUri::parse("sip:a@b:50x").is_err());
        let err = SipUri::parse("sip:a@b:70000").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn ipv4_literal_uses_the_sidecar_regex_semantics() {
        assert!(uri("sip:127.0.0.1").host_is_ipv4_literal());
        assert!(uri("sip:alice@10.0.0.1:5060").host_is_ipv4_literal());
        assert!(uri("sip:999.999.999.999").host_is_ipv4_literal());
        assert!(!uri("sip:1.2.3").host_is_ipv4_literal());
        assert!(!uri("sip:1.2.3.4.5").host_is_ipv4_literal());
        assert!(!uri("sip:1234.1.1.1").host_is_ipv4_literal());
        assert!(!uri("sip:1.2.3.a").host_is_ipv4_literal());
        assert!(!uri("sip:jambonz.org").host_is_ipv4_literal());
    }

    #[test]
    fn params_are_looked_up_case_insensitively() {
        let u = uri("sip:a@b;Transport=TCP;lr");
        assert_eq!(u.param("transport"), Some("TCP"));
        assert_eq!(u.param("LR"), Some(""));
        assert!(u.has_param("lr"));
        assert_eq!(u.param("maddr"), None);
    }

    #[test]
    fn empty_or_broken_params_are_refused() {
        assert!(SipUri::parse("sip:a@b;").is_err());
        assert!(SipUri::parse("sip:a@b;;lr").is_err());
        assert!(SipUri::parse("sip:a@b;=x").is_err());
        assert!(SipUri::parse("sip:a@b;x=<y>").is_err());
    }

    #[test]
    fn user_part_may_hold_semicolons_and_escapes() {
        let u = uri("sip:alice;day=tuesday@atlanta.com");
        assert_eq!(u.user.as_deref(), Some("alice;day=tuesday"));
        assert!(u.params.is_empty());
        let u = uri("sip:%2B1555@x.org");
        assert_eq!(u.user.as_deref(), Some("%2B1555"));
    }

    #[test]
    fn structurally_broken_uris_are_errors() {
        for bad in ["", "sip:", "sip:@host", "sip:a@", "sip:a b@c", "sip:a@b..c", "sip:a@.b", "sip:a@b.", "sip:<a>@b"] {
            assert!(SipUri::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn display_reserialises() {
        for s in [
            "sip:alice:secret@example.com:5080;transport=tcp;lr?subject=hi",
            "sips:[::1]:5061",
            "sip:127.0.0.1",
            "sip:reguser@localhost;transport=udp",
        ] {
            assert_eq!(uri(s).to_string(), s);
        }
        assert_eq!(uri("SIP:Bob@Example.com").to_string(), "sip:Bob@Example.com");
    }

    #[test]
    fn errors_say_what_failed() {
        let err = SipUri::parse("tel:123").unwrap_err();
        assert_eq!(err.to_string(), "SIP: bad URI `tel:123`: scheme is not sip or sips");
    }
}
