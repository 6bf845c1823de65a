//! The parts of the REGISTER pipeline that only look at the message (spec 4.1 steps 3–5):
//! the Request-URI check, Contact and expires, and the address of record.

use log::{debug, Level};

use super::reply::Reply;
use crate::sip::{parse_contacts, Contacts, NameAddr, SipError, SipMessage, SipUri};
use crate::throttle::Refusals;

/// The registrar's refusal log lines: at most one per reason per 10 s, with the count of the
/// rest. `REFUSALS.note("malformed authorization", || format!(…))` logs at info,
/// `note_at(Level::Debug, …)` at another level; the closure runs only for a line written.
pub static REFUSALS: Refusals = Refusals::new();

/// `X-Reason` of the `400` for a REGISTER without Contact.
pub const NO_CONTACT_REASON: &str = "Contact header is required for REGISTER requests";
/// `X-Reason` of the `403` for an unparseable To URI.
pub const BAD_AOR_REASON: &str = "Invalid address of record";
/// `X-Reason` of the `400` for a REGISTER with more than [`MAX_CONTACTS`] contacts.
pub const TOO_MANY_CONTACTS_REASON: &str = "Too many contacts";
/// `X-Reason` of the `400` for a contact that is not a `sip:`/`sips:` URI of at most
/// [`MAX_CONTACT_LEN`] bytes.
pub const BAD_CONTACT_REASON: &str = "Contact must be a sip or sips URI";

/// The most contacts one REGISTER may bind: a phone binds one, a few for forking. Every
/// contact is echoed in the 200, so their number and size bound the answer too.
pub const MAX_CONTACTS: usize = 8;
/// The longest contact value (name-addr with its parameters) accepted, in bytes.
pub const MAX_CONTACT_LEN: usize = 512;

/// `SBC_REGISTER_MIN_EXPIRES` / `SBC_REGISTER_MAX_EXPIRES`: the interval a registration may
/// ask for. Below the minimum is `423 Interval Too Brief` with `Min-Expires` (RFC 3261 10.3);
/// above the maximum is granted the maximum (Kamailio's default 3600): a binding must not
/// outlive a password change by years.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiresBounds {
    pub min: u32,
    pub max: u32,
}

impl ExpiresBounds {
    pub const DEFAULT_MIN: u32 = 60;
    pub const DEFAULT_MAX: u32 = 3600;

    /// What may be granted for `seconds` (requested or from the webhook): at most the maximum.
    pub fn cap(&self, seconds: u32) -> u32 {
        seconds.min(self.max)
    }
}

impl Default for ExpiresBounds {
    fn default() -> Self {
        ExpiresBounds { min: Self::DEFAULT_MIN, max: Self::DEFAULT_MAX }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register,
    /// `expires` 0: remove the binding.
    Unregister,
}

/// What a REGISTER asks of the registrar, as regParser extracts it from Contact / Expires:
/// register or unregister, for how long, which contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRequest {
    pub kind: Kind,
    /// The requested expires (seconds), capped at [`ExpiresBounds::max`].
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
/// wrong instead of believing it is registered. A malformed Contact is a `400` too, and so is
/// one that is not a `sip:`/`sips:` URI, longer than [`MAX_CONTACT_LEN`], or one too many
/// (more than [`MAX_CONTACTS`]). An expires below `bounds.min` is `423` (except 0, which
/// removes the binding); one above `bounds.max` is granted the maximum.
pub fn parse_registration(msg: &SipMessage, bounds: ExpiresBounds) -> Result<BindingRequest, Reply> {
    let contacts = match parse_contacts(msg) {
        Ok(c) => c,
        Err(SipError::MissingHeader(_)) => return Err(Reply::with_reason(400, NO_CONTACT_REASON)),
        Err(e) => {
            REFUSALS.note_at(Level::Debug, "malformed contact", || format!("rejecting REGISTER: {e}"));
            return Err(Reply::new(400));
        }
    };
    let first = match &contacts {
        Contacts::List(list) => {
            check_contacts(msg, list)?;
            list.first()
        }
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
        REFUSALS.note_at(Level::Debug, "bad expires", || {
            format!("rejecting REGISTER: expires `{expires_text}` is not a number of seconds")
        });
        return Err(Reply::new(400));
    };
    if contacts == Contacts::Star && expires != 0 {
        // RFC 3261 10.3 step 6: the wildcard only removes bindings.
        REFUSALS.note_at(Level::Debug, "wildcard contact", || {
            format!("rejecting REGISTER: Contact * with expires {expires}")
        });
        return Err(Reply::new(400));
    }
    if expires != 0 && expires < bounds.min {
        REFUSALS.note_at(Level::Debug, "interval too brief", || {
            format!("rejecting REGISTER: expires {expires} is below the minimum {}: 423", bounds.min)
        });
        return Err(Reply::new(423).header("Min-Expires", bounds.min.to_string()));
    }
    Ok(BindingRequest {
        kind: if expires == 0 { Kind::Unregister } else { Kind::Register },
        expires: bounds.cap(expires),
        raw_contact: msg.header_all("Contact").collect::<Vec<_>>().join(","),
        contact_uri: first.map(|c| c.uri_str().to_string()),
    })
}

/// At most [`MAX_CONTACTS`] contacts, each a `sip:`/`sips:` URI of at most [`MAX_CONTACT_LEN`]
/// bytes: a binding is a place to send SIP, never `http://169.254.169.254/`.
fn check_contacts(msg: &SipMessage, list: &[NameAddr]) -> Result<(), Reply> {
    if list.len() > MAX_CONTACTS {
        REFUSALS.note_at(Level::Debug, "too many contacts", || {
            format!("rejecting REGISTER: {} contacts, at most {MAX_CONTACTS}", list.len())
        });
        return Err(Reply::with_reason(400, TOO_MANY_CONTACTS_REASON));
    }
    let too_long = msg.header_values("Contact").iter().any(|v| v.len() > MAX_CONTACT_LEN);
    let not_sip = list.iter().any(|c| {
        let uri = c.uri_str();
        let scheme = uri.split_once(':').map_or("", |(scheme, _)| scheme);
        !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) || SipUri::parse(uri).is_err()
    });
    if too_long || not_sip {
        REFUSALS.note_at(Level::Debug, "bad contact", || {
            format!("rejecting REGISTER: a contact is not a sip/sips URI of at most {MAX_CONTACT_LEN} bytes")
        });
        return Err(Reply::with_reason(400, BAD_CONTACT_REASON));
    }
    Ok(())
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
        let r = parse_registration(&msg("sip:a.org", "Expires: 60\r\n"), ExpiresBounds::default()).unwrap_err();
        assert_eq!(r, Reply::with_reason(400, NO_CONTACT_REASON));
    }

    #[test]
    fn contact_expires_param_wins_over_expires_header() {
        let m = msg("sip:a.org", "Contact: <sip:u@1.2.3.4;transport=udp>;expires=120\r\nExpires: 3600\r\n");
        let r = parse_registration(&m, ExpiresBounds::default()).unwrap();
        assert_eq!((r.kind, r.expires), (Kind::Register, 120));
        assert_eq!(r.contact_uri.as_deref(), Some("sip:u@1.2.3.4;transport=udp"));
        assert_eq!(r.raw_contact, "<sip:u@1.2.3.4;transport=udp>;expires=120");
    }

    #[test]
    fn empty_expires_param_falls_back_to_the_header() {
        let m = msg("sip:a.org", "Contact: <sip:u@h>;expires\r\nExpires: 0\r\n");
        assert_eq!(parse_registration(&m, ExpiresBounds::default()).unwrap().kind, Kind::Unregister);
    }

    #[test]
    fn no_expires_anywhere_is_a_plain_400() {
        let r = parse_registration(&msg("sip:a.org", "Contact: <sip:u@h>\r\n"), ExpiresBounds::default()).unwrap_err();
        assert_eq!(r, Reply::new(400));
    }

    #[test]
    fn non_numeric_or_negative_expires_is_400() {
        for bad in ["soon", "-1", "99999999999"] {
            let m = msg("sip:a.org", &format!("Contact: <sip:u@h>\r\nExpires: {bad}\r\n"));
            assert_eq!(parse_registration(&m, ExpiresBounds::default()).unwrap_err(), Reply::new(400), "{bad}");
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
        assert_eq!(
            parse_registration(&m, ExpiresBounds::default()).unwrap().raw_contact,
            "<sip:u@h>;expires=60,<sip:v@h>"
        );
    }

    #[test]
    fn wildcard_contact_only_unregisters() {
        let m = msg("sip:a.org", "Contact: *\r\nExpires: 0\r\n");
        let r = parse_registration(&m, ExpiresBounds::default()).unwrap();
        assert_eq!((r.kind, r.contact_uri), (Kind::Unregister, None));
        let m = msg("sip:a.org", "Contact: *\r\nExpires: 60\r\n");
        assert_eq!(parse_registration(&m, ExpiresBounds::default()).unwrap_err(), Reply::new(400));
    }

    #[test]
    fn malformed_contact_is_400() {
        let m = msg("sip:a.org", "Contact: <sip:u@h\r\nExpires: 60\r\n");
        assert_eq!(parse_registration(&m, ExpiresBounds::default()).unwrap_err(), Reply::new(400));
    }

    fn reg(headers: &str) -> Result<BindingRequest, Reply> {
        parse_registration(&msg("sip:a.org", headers), ExpiresBounds::default())
    }

    #[test]
    fn expires_below_the_minimum_is_423_with_min_expires() {
        let r = reg("Contact: <sip:u@h>\r\nExpires: 59\r\n").unwrap_err();
        assert_eq!(r, Reply::new(423).header("Min-Expires", "60"));
        assert_eq!(reg("Contact: <sip:u@h>;expires=1\r\nExpires: 3600\r\n").unwrap_err().status, 423);
        assert_eq!(reg("Contact: <sip:u@h>\r\nExpires: 60\r\n").unwrap().expires, 60);
        // unregistering is always allowed
        assert_eq!(reg("Contact: <sip:u@h>\r\nExpires: 0\r\n").unwrap().kind, Kind::Unregister);
        assert_eq!(reg("Contact: *\r\nExpires: 0\r\n").unwrap().kind, Kind::Unregister);
        let lax = ExpiresBounds { min: 10, max: 3600 };
        assert_eq!(
            parse_registration(&msg("sip:a.org", "Contact: <sip:u@h>;expires=20\r\n"), lax).unwrap().expires,
            20
        );
    }

    #[test]
    fn expires_above_the_maximum_is_granted_the_maximum() {
        for asked in ["3601", "4294967295", "86400"] {
            let r = reg(&format!("Contact: <sip:u@h>\r\nExpires: {asked}\r\n")).unwrap();
            assert_eq!(r.expires, 3600, "{asked}");
        }
        let short = ExpiresBounds { min: 60, max: 600 };
        let r = parse_registration(&msg("sip:a.org", "Contact: <sip:u@h>;expires=3600\r\n"), short).unwrap();
        assert_eq!(r.expires, 600);
        assert_eq!(short.cap(7200), 600);
        assert_eq!(short.cap(120), 120);
    }

    #[test]
    fn contacts_must_be_sip_uris_of_bounded_length() {
        for bad in ["<http://169.254.169.254/>", "<tel:+15551234>", "<mailto:a@b.c>", "http://evil.example/", "<sip:>"]
        {
            let r = reg(&format!("Contact: {bad}\r\nExpires: 600\r\n")).unwrap_err();
            assert_eq!(r, Reply::with_reason(400, BAD_CONTACT_REASON), "{bad}");
        }
        assert!(reg("Contact: <SIPS:u@h;transport=tls>\r\nExpires: 600\r\n").is_ok());
        let long_user = "u".repeat(MAX_CONTACT_LEN);
        let r = reg(&format!("Contact: <sip:{long_user}@h>\r\nExpires: 600\r\n")).unwrap_err();
        assert_eq!(r, Reply::with_reason(400, BAD_CONTACT_REASON));
        let fits = format!("<sip:{}@h>", "u".repeat(MAX_CONTACT_LEN - 8));
        assert_eq!(fits.len(), MAX_CONTACT_LEN);
        assert!(reg(&format!("Contact: {fits}\r\nExpires: 600\r\n")).is_ok());
    }

    #[test]
    fn at_most_a_few_contacts() {
        let list = |n: usize| (0..n).map(|i| format!("<sip:u{i}@h>")).collect::<Vec<_>>().join(", ");
        assert!(reg(&format!("Contact: {}\r\nExpires: 600\r\n", list(MAX_CONTACTS))).is_ok());
        let r = reg(&format!("Contact: {}\r\nExpires: 600\r\n", list(MAX_CONTACTS + 1))).unwrap_err();
        assert_eq!(r, Reply::with_reason(400, TOO_MANY_CONTACTS_REASON));
        // in separate header lines too
        let lines: String = (0..=MAX_CONTACTS).map(|i| format!("Contact: <sip:u{i}@h>\r\n")).collect();
        assert_eq!(reg(&format!("{lines}Expires: 600\r\n")).unwrap_err().status, 400);
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
