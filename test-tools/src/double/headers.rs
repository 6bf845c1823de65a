//! What the double knows about SIP header names: compact forms, the headers sofia parses into
//! structures ("well-known": printed with their canonical name, placed before Content-Length)
//! and how drachtio re-cases the names of all other headers (placed after Content-Length).
//!
//! Kept independent of the production SIP code on purpose: the double exists to catch its bugs.

/// RFC 3261 §7.3.3 compact forms and the extensions sofia knows.
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

/// Headers sofia-sip parses into structures, with the spelling it prints them in. drachtio
/// hands these to the stack as tags, so they come out before Content-Length in the app's order.
const WELL_KNOWN: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authentication-Info",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-Sub",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Remote-Party-ID",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Headers drachtio throws away from what the app sends: the stack owns them.
const DISCARDED_FROM_APP: &[&str] = &["Via", "Route", "Record-Route", "RSeq", "Content-Length"];

/// Expands a compact form; other names are returned unchanged.
pub(crate) fn expand_compact(name: &str) -> &str {
    COMPACT_FORMS.iter().find(|(short, _)| short.eq_ignore_ascii_case(name)).map_or(name, |(_, long)| long)
}

/// The one place header names are compared: case-insensitive, compact forms expanded,
/// `-` and `_` equivalent (as drachtio matches them).
pub(crate) fn same_header(a: &str, b: &str) -> bool {
    let (a, b) = (expand_compact(a.trim()), expand_compact(b.trim()));
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let norm = |c: u8| if c == b'_' { b'-' } else { c.to_ascii_lowercase() };
            norm(x) == norm(y)
        })
}

/// The canonical spelling of a well-known header, or `None` for a custom header.
pub(crate) fn well_known(name: &str) -> Option<&'static str> {
    WELL_KNOWN.iter().copied().find(|known| same_header(known, name))
}

pub(crate) fn discarded_from_app(name: &str) -> bool {
    DISCARDED_FROM_APP.iter().any(|d| same_header(d, name))
}

/// How a custom header name goes on the wire: `X-`/`x-` headers exactly as given; others with
/// the first letter and every letter after a `-` upper-cased (`my-header` → `My-Header`).
pub(crate) fn custom_name_on_wire(name: &str) -> String {
    let name = name.trim();
    if name.len() >= 2 && name[..2].eq_ignore_ascii_case("x-") {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len());
    let mut upper_next = true;
    for c in name.chars() {
        out.push(if upper_next { c.to_ascii_uppercase() } else { c });
        upper_next = c == '-';
    }
    out
}
