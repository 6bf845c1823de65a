//! The parts of the REGISTER pipeline that only look at the message (spec 4.1 steps 3–5):
//! the Request-URI check, Contact and expires, and the address of record.

use log::debug;

use super::reply::Reply;
use crate::sip::{parse_contacts, Contacts, NameAddr, SipError, SipMessage, SipUri};

/// `X-Reason` of the `400` for a REGISTER without Contact.
pub const NO_CONTACT_REASON: &str = "Contact header is required for REGISTER requests";
/// `X-Reason` of the `403` for an unparseable To URI.
pub const BAD_AOR_REASON: &str = "Invalid address of record";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register,
    /// `expires` 0: remove the binding.
    Unregister,
}

/// What regParser extracts from Contact / Expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub kind: Kind,
    /// The requested expires (seconds).
    pub expires: u32,
    /// Every Contact header value joined with `,`, as drachtio-srf's `req.get('Contact')`
    /// returns it: echoed in the 200 (with `expires=` rewritten).
    pub raw_contact: String,
    /// URI of the first contact (inside `<>`, URI parameters kept, header parameters dropped):
    /// stored as `contact`. `None` for `Contact: *`.
    pub contact_uri: Option<String>,
}

/// The address of record, from the To URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aor {
    pub user: Option<String>,
    /// The To host: also the realm of the challenge and of the account lookup.
    pub host: String,
}

impl Aor {
    /// `<user>@<host>` (port and parameters dropped, case kept). A To URI without a user part
    /// gives `undefined@<host>`, the string the Node sidecar built: other jambonz components
    /// look registrations up by this key, so it is reproduced as is.
    pub fn key(&self) -> String {
        format!("{}@{}", self.user.as_deref().unwrap_or("undefined"), self.host)
    }

    pub fn realm(&self) -> &str {
        &self.host
    }

    /// The user part as counted for device limits (`undefined` without one, like the key).
    pub fn user_part(&self) -> &str {
        self.user.as_deref().unwrap_or("undefined")
    }
}

/// rejectIpv4: the Request-URI must parse and its host must not be a dotted quad (a SIP
/// realm is required). IPv6 hosts are let through, as in the Node sidecar.
pub fn check_request_uri(msg: &SipMessage) -> Result<(), Reply> {
    let uri = msg.request_uri().unwrap_or("");
    match SipUri::parse(uri) {
        Ok(u) if !u.host_is_ipv4_literal() => Ok(()),
        Ok(_) => {
            debug!("rejecting REGISTER from {uri} as it has an ipv4 address and sip realm is required");
            Err(Reply::new(403))
        }
        Err(e) => {
            debug!("rejecting REGISTER: {e}");
            Err(Reply::new(403))
        }
    }
}

/// regParser: Contact and expires.
///
/// Where the Node parser let a non-numeric or negative expires through as `NaN` (and then
/// answered 200 without storing anything), we answer `400`: the device learns its request is
/// wrong instead of believing it is registered. A malformed Contact is a `400` too.
pub fn parse_registration(msg: &SipMessage) -> Result<Registration, Reply> {
    let contacts = match parse_contacts(msg) {
        Ok(c) => c,
        Err(SipError::MissingHeader(_)) => return Err(Reply::with_reason(400, NO_CONTACT_REASON)),
        Err(e) => {
            debug!("rejecting REGISTER: {e}");
            return Err(Reply::new(400));
        }
    };
    let first = match &contacts {
        Contacts::List(list) => list.first(),
        Contacts::Star => None,
    };
    // The Contact `expires` parameter wins when present and non-empty, then the Expires header.
    let expires_text = match first.and_then(NameAddr::expires_param).filter(|v| !v.is_empty()) {
        Some(v) => v,
        None => match msg.header("Expires").filter(|v| !v.is_empty()) {
            Some(v) => v,
            None => return Err(Reply::new(400)),
        },
    };
    let Some(expires) = parse_expires(expires_text) else {
        debug!("rejecting REGISTER: expires `{expires_text}` is not a number of seconds");
        return Err(Reply::new(400));
    };
    if contacts == Contacts::Star && expires != 0 {
        // RFC 3261 10.3 step 6: the wildcard only removes bindings.
        debug!("rejecting REGISTER: Contact * with expires {expires}");
        return Err(Reply::new(400));
    }
    Ok(Registration {
        kind: if expires == 0 { Kind::Unregister } else { Kind::Register },
        expires,
        raw_contact: msg.header_all("Contact").collect::<Vec<_>>().join(","),
        contact_uri: first.map(|c| c.uri_str().to_string()),
    })
}

/// JavaScript `parseInt(text, 10)` restricted to what a SIP expires can be: optional leading
/// white space and `+`, then the leading decimal digits (`"3600abc"` is 3600). `None` for no
/// digits, a negative number or one beyond `u32`.
pub fn parse_expires(text: &str) -> Option<u32> {
    let t = text.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    let digits: &str = &t[..t.bytes().take_while(u8::is_ascii_digit).count()];
    if digits.is_empty() {
        return None;
    }
    digits.parse().ok()
}

/// checkCache, first half: the AOR from the To URI. An unparseable one (GitHub issue 83,
/// `sip:jane@jambonz.org@jambonz.org`) is `403` with `X-Reason: Invalid address of record`.
pub fn parse_aor(msg: &SipMessage) -> Result<Aor, Reply> {
    let to = msg.header("To").unwrap_or("");
    match NameAddr::parse(to).and_then(|na| na.uri()) {
        Ok(uri) => Ok(Aor { user: uri.user, host: uri.host }),
        Err(e) => {
            debug!("rejecting REGISTER: To: {e}");
            Err(Reply::with_reason(403, BAD_AOR_REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ruri: &str, headers: &str) -> SipMessage {
        let text = format!("REGISTER {ruri} SIP/2.0\r\n{headers}Content-Length: 0\r\n\r\n");
        SipMessage::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn ipv4_request_uri_is_forbidden_but_ipv6_and_domains_pass() {
        assert_eq!(check_request_uri(&msg("sip:10.0.0.1:5060", "")), Err(Reply::new(403)));
        assert_eq!(check_request_uri(&msg("sip:jambonz.org", "")), Ok(()));
        assert_eq!(check_request_uri(&msg("sip:[2001:db8::1]", "")), Ok(()));
        assert_eq!(check_request_uri(&msg("tel:1234", "")), Err(Reply::new(403)));
    }

    #[test]
    fn missing_contact_has_its_x_reason() {
        let r = parse_registration(&msg("sip:a.org", "Expires: 60\r\n")).unwrap_err();
        assert_eq!(r, Reply::with_reason(400, NO_CONTACT_REASON));
    }

    #[test]
    fn contact_expires_param_wins_over_expires_header() {
        let m = msg("sip:a.org", "Contact: <sip:u@1.2.3.4;transport=udp>;expires=120\r\nExpires: 3600\r\n");
        let r = parse_registration(&m).unwrap();
        assert_eq!((r.kind, r.expires), (Kind::Register, 120));
        assert_eq!(r.contact_uri.as_deref(), Some("sip:u@1.2.3.4;transport=udp"));
        assert_eq!(r.raw_contact, "<sip:u@1.2.3.4;transport=udp>;expires=120");
    }

    #[test]
    fn empty_expires_param_falls_back_to_the_header() {
        let m = msg("sip:a.org", "Contact: <sip:u@h>;expires\r\nExpires: 0\r\n");
        assert_eq!(parse_registration(&m).unwrap().kind, Kind::Unregister);
    }

    #[test]
    fn no_expires_anywhere_is_a_plain_400() {
        let r = parse_registration(&msg("sip:a.org", "Contact: <sip:u@h>\r\n")).unwrap_err();
        assert_eq!(r, Reply::new(400));
    }

    #[test]
    fn non_numeric_or_negative_expires_is_400() {
        for bad in ["soon", "-1", "99999999999"] {
            let m = msg("sip:a.org", &format!("Contact: <sip:u@h>\r\nExpires: {bad}\r\n"));
            assert_eq!(parse_registration(&m).unwrap_err(), Reply::new(400), "{bad}");
        }
    }

    #[test]
    fn expires_uses_parse_int_semantics() {
        assert_eq!(parse_expires("3600"), Some(3600));
        assert_eq!(parse_expires(" 60abc"), Some(60));
        assert_eq!(parse_expires("+5"), Some(5));
        assert_eq!(parse_expires("x5"), None);
        assert_eq!(parse_expires("-0"), None);
    }

    #[test]
    fn repeated_contact_headers_are_joined_like_drachtio_srf() {
        let m = msg("sip:a.org", "Contact: <sip:u@h>;expires=60\r\nContact: <sip:v@h>\r\n");
        assert_eq!(parse_registration(&m).unwrap().raw_contact, "<sip:u@h>;expires=60,<sip:v@h>");
    }

    #[test]
    fn wildcard_contact_only_unregisters() {
        let m = msg("sip:a.org", "Contact: *\r\nExpires: 0\r\n");
        let r = parse_registration(&m).unwrap();
        assert_eq!((r.kind, r.contact_uri), (Kind::Unregister, None));
        let m = msg("sip:a.org", "Contact: *\r\nExpires: 60\r\n");
        assert_eq!(parse_registration(&m).unwrap_err(), Reply::new(400));
    }

    #[test]
    fn malformed_contact_is_400() {
        let m = msg("sip:a.org", "Contact: <sip:u@h\r\nExpires: 60\r\n");
        assert_eq!(parse_registration(&m).unwrap_err(), Reply::new(400));
    }

    #[test]
    fn aor_is_user_at_host_of_the_to_uri() {
        let a = parse_aor(&msg("sip:x.org", "To: \"Jo\" <sip:Jo@Example.org:5080;transport=tcp>\r\n")).unwrap();
        assert_eq!((a.key(), a.realm()), ("Jo@Example.org".to_string(), "Example.org"));
        let a = parse_aor(&msg("sip:x.org", "To: <sip:example.org>\r\n")).unwrap();
        assert_eq!(a.key(), "undefined@example.org");
    }

    #[test]
    fn bad_to_uri_is_invalid_address_of_record() {
        for to in ["<sip:jane@jambonz.org@jambonz.org>", "<tel:123>", ""] {
            let m = msg("sip:x.org", &format!("To: {to}\r\n"));
            assert_eq!(parse_aor(&m).unwrap_err(), Reply::with_reason(403, BAD_AOR_REASON), "{to}");
        }
        assert_eq!(parse_aor(&msg("sip:x.org", "")).unwrap_err(), Reply::with_reason(403, BAD_AOR_REASON));
    }
}
