//! Requests the app sends (`<id>|sip||` / `<id>|sip|||<proxy>`), as drachtio puts them on the
//! wire (drachtio-protocol.md §7.5): validation of the start line, the next hop, and the
//! headers the stack adds, drops, rewrites and orders.
//!
//! Wire order: Via, Max-Forwards, From, To, Call-ID, CSeq, the app's other well-known headers in
//! the app's order, Content-Length, then the app's custom (`X-…`) headers.

use std::net::{IpAddr, SocketAddr};

use super::build_response::push_header;
use super::headers::{custom_name_on_wire, discarded_from_app, same_header, well_known};
use super::ids::{self, CallIdGenerator};
use super::sip_text::{header_param, SipText};
use super::sip_transport::Transport;

/// The methods drachtio accepts on a new request; anything else is an invalid request-uri.
const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "PRACK",
    "UPDATE",
    "MESSAGE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "PUBLISH",
];

/// Headers the stack places itself, right after Via, whatever the app's order.
const STACK_PLACED: &[&str] = &["Max-Forwards", "From", "To", "Call-ID", "CSeq"];

/// Methods for which the stack adds a Contact when the app gave none.
const CONTACT_ADDED_FOR: &[&str] = &["INVITE", "SUBSCRIBE"];

/// `METHOD sip:… SIP/2.0` checked like drachtio does; the error is the NOK text.
pub(crate) fn validate_start_line(start_line: &str) -> Result<(String, String), String> {
    let invalid = || format!("invalid request-uri: {start_line}");
    let parts: Vec<&str> = start_line.split(' ').filter(|p| !p.is_empty()).collect();
    let [method, uri, version] = parts[..] else { return Err(invalid()) };
    let lower_uri = uri.to_ascii_lowercase();
    let is_sip_uri = lower_uri.starts_with("sip:") || lower_uri.starts_with("sips:");
    if !KNOWN_METHODS.contains(&method) || !is_sip_uri || version != "SIP/2.0" {
        return Err(invalid());
    }
    Ok((method.to_string(), uri.to_string()))
}

/// The parts of a SIP URI the double needs to route a request.
#[derive(Debug, Clone)]
pub(crate) struct HopUri {
    pub host: String,
    pub port: u16,
    /// `;transport=` in lower case, if present.
    pub transport: Option<String>,
    pub secure: bool,
}

impl HopUri {
    pub(crate) fn parse(uri: &str) -> Option<HopUri> {
        let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
        let (scheme, rest) = uri.split_once(':')?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "sip" => false,
            "sips" => true,
            _ => return None,
        };
        let (addr_part, params) = match rest.find([';', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let host_port = addr_part.rsplit_once('@').map_or(addr_part, |(_, hp)| hp);
        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => 5060,
        };
        let transport = params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("transport"))
            .map(|(_, v)| v.trim().to_ascii_lowercase());
        Some(HopUri { host: host.to_string(), port, transport, secure })
    }

    /// The address, when the host is an IP literal (the double resolves no names).
    pub(crate) fn socket_addr(&self) -> Option<SocketAddr> {
        self.host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// A request ready for the wire, and what a synthetic response to it has to repeat.
#[derive(Debug, Clone)]
pub(crate) struct OutgoingRequest {
    pub wire: Vec<u8>,
    pub method: String,
    pub request_uri: String,
    pub branch: String,
    pub via: String,
    pub from: String,
    pub to: String,
    /// The To of a synthetic 408/503: the To as sent, except that a To the stack defaulted
    /// from the Request-URI comes back as the bare URI string (no angle brackets), as captured.
    pub to_in_synthetic: String,
    pub call_id: String,
    /// The whole CSeq value, `<number> <METHOD>`.
    pub cseq: String,
}

impl OutgoingRequest {
    /// `<Call-ID>;from-tag=<our tag>` for dialog-creating methods, empty otherwise.
    pub(crate) fn dialog_id(&self) -> String {
        if self.method != "INVITE" && self.method != "SUBSCRIBE" {
            return String::new();
        }
        let tag = header_param(&self.from, "tag").unwrap_or("");
        format!("{};from-tag={tag}", self.call_id)
    }
}

/// Replaces the host (and any port) after `marker` with our address: `@localhost` →
/// `@127.0.0.10:5060`. Hosts that merely start with `localhost` (`@localhost.example`) are kept.
fn replace_localhost(value: &str, marker: &str, hostport: &str) -> String {
    let mut out = String::with_capacity(value.len() + hostport.len());
    let mut rest = value;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i]);
        let after = &rest[i + marker.len()..];
        if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
            out.push_str(marker);
            rest = after;
            continue;
        }
        let after = match after.strip_prefix(':') {
            Some(port_and_more) if port_and_more.starts_with(|c: char| c.is_ascii_digit()) => {
                port_and_more.trim_start_matches(|c: char| c.is_ascii_digit())
            }
            _ => after,
        };
        out.push_str(&marker[..marker.len() - "localhost".len()]);
        out.push_str(hostport);
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `@localhost` in From, To, Contact and P-Asserted-Identity becomes our address; in From a
/// bare `sip:localhost` does too.
fn rewrite_localhost(header: &str, value: &str, hostport: &str) -> String {
    let rewritten = replace_localhost(value, "@localhost", hostport);
    if same_header(header, "From") {
        replace_localhost(&rewritten, "sip:localhost", hostport)
    } else {
        rewritten
    }
}

fn rewrites_localhost(header: &str) -> bool {
    ["From", "To", "Contact", "P-Asserted-Identity"].iter().any(|h| same_header(h, header))
}

/// The To the stack writes when the app gave none: the Request-URI in angle brackets, its URI
/// parameters moved out as header parameters (`<sip:127.0.0.18:5060>;transport=tcp`).
fn default_to(request_uri: &str) -> String {
    match request_uri.split_once(';') {
        Some((uri, params)) => format!("<{uri}>;{params}"),
        None => format!("<{request_uri}>"),
    }
}

/// How the double's own address appears in Via and in default From/Contact.
fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Builds the wire request. `local` is the double's SIP address. The error is the NOK text.
pub(crate) fn build_request(
    app: &SipText,
    method: &str,
    request_uri: &str,
    local: SocketAddr,
    transport: Transport,
    call_ids: &CallIdGenerator,
) -> Result<OutgoingRequest, String> {
    let host = host_of(local.ip());
    let hostport = format!("{host}:{}", local.port());
    let transport_param = if transport == Transport::Tcp { ";transport=tcp" } else { "" };
    let branch = ids::new_branch();
    let via = match transport {
        Transport::Udp => format!("SIP/2.0/UDP {host};rport;branch={branch}"),
        Transport::Tcp => format!("SIP/2.0/TCP {host};branch={branch}"),
    };
    let max_forwards = app.get("Max-Forwards").unwrap_or("70").to_string();
    let from = match app.get("From") {
        Some(given) => {
            let from = rewrite_localhost("From", given, &hostport);
            if header_param(&from, "tag").is_some() {
                from
            } else {
                format!("{from};tag={}", ids::new_tag())
            }
        }
        None => format!("<sip:{hostport}{transport_param}>;tag={}", ids::new_tag()),
    };
    let (to, to_in_synthetic) = match app.get("To") {
        Some(given) => {
            let to = rewrite_localhost("To", given, &hostport);
            (to.clone(), to)
        }
        None => (default_to(request_uri), request_uri.to_string()),
    };
    let call_id = app.get("Call-ID").map_or_else(|| call_ids.next(), str::to_string);
    let cseq = app.get("CSeq").map_or_else(|| format!("{} {method}", ids::default_cseq()), str::to_string);

    let mut head = format!("{method} {request_uri} SIP/2.0\r\n");
    push_header(&mut head, "Via", &via);
    push_header(&mut head, "Max-Forwards", &max_forwards);
    push_header(&mut head, "From", &from);
    push_header(&mut head, "To", &to);
    push_header(&mut head, "Call-ID", &call_id);
    push_header(&mut head, "CSeq", &cseq);
    if CONTACT_ADDED_FOR.contains(&method) && app.get("Contact").is_none() {
        push_header(&mut head, "Contact", &format!("<sip:{hostport}{transport_param}>"));
    }
    let mut custom: Vec<(String, String)> = Vec::new();
    for header in &app.headers {
        let name = header.name.as_str();
        if discarded_from_app(name) || STACK_PLACED.iter().any(|s| same_header(s, name)) {
            continue;
        }
        let value = if rewrites_localhost(name) {
            rewrite_localhost(name, &header.value, &hostport)
        } else {
            header.value.clone()
        };
        match well_known(name) {
            Some(canonical) => push_header(&mut head, canonical, &value),
            None => custom.push((custom_name_on_wire(name), value)),
        }
    }
    if !app.body.is_empty() && app.get("Content-Type").is_none() {
        if app.body.starts_with(b"v=0") {
            push_header(&mut head, "Content-Type", "application/sdp");
        } else {
            return Err("missing content-type".to_string());
        }
    }
    push_header(&mut head, "Content-Length", &app.body.len().to_string());
    for (name, value) in &custom {
        push_header(&mut head, name, value);
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    wire.extend_from_slice(&app.body);

    Ok(OutgoingRequest {
        wire,
        method: method.to_string(),
        request_uri: request_uri.to_string(),
        branch,
        via,
        from,
        to,
        to_in_synthetic,
        call_id,
        cseq,
    })
}

/// The CANCEL the stack sends for one of the app's INVITEs: same Request-URI, Via (branch),
/// From, To, Call-ID and CSeq number.
pub(crate) fn build_cancel(invite: &OutgoingRequest) -> OutgoingRequest {
    let number = invite.cseq.split_whitespace().next().unwrap_or("1");
    let cseq = format!("{number} CANCEL");
    let mut head = format!("CANCEL {} SIP/2.0\r\n", invite.request_uri);
    push_header(&mut head, "Via", &invite.via);
    push_header(&mut head, "Max-Forwards", "70");
    push_header(&mut head, "From", &invite.from);
    push_header(&mut head, "To", &invite.to);
    push_header(&mut head, "Call-ID", &invite.call_id);
    push_header(&mut head, "CSeq", &cseq);
    push_header(&mut head, "Content-Length", "0");
    head.push_str("\r\n");
    OutgoingRequest { wire: head.into_bytes(), method: "CANCEL".to_string(), cseq, ..invite.clone() }
}

/// The ACK the stack sends by itself for a non-2xx final response to an INVITE.
pub(crate) fn build_ack(invite: &OutgoingRequest, response: &SipText) -> Vec<u8> {
    let number = invite.cseq.split_whitespace().next().unwrap_or("1");
    let mut head = format!("ACK {} SIP/2.0\r\n", invite.request_uri);
    push_header(&mut head, "Via", &invite.via);
    push_header(&mut head, "Max-Forwards", "70");
    push_header(&mut head, "From", &invite.from);
    push_header(&mut head, "To", response.get("To").unwrap_or(&invite.to));
    push_header(&mut head, "Call-ID", &invite.call_id);
    push_header(&mut head, "CSeq", &format!("{number} ACK"));
    push_header(&mut head, "Content-Length", "0");
    head.push_str("\r\n");
    head.into_bytes()
}
