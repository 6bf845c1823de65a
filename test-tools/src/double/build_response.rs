//! Responses as drachtio's stack puts them on the wire, for requests received from the network.
//!
//! Header order, as captured: Via (copied from the request as delivered, so with its `rport`),
//! From, To (tagged), Call-ID, CSeq, then the app's other well-known headers in the app's order,
//! then Content-Length computed by the stack, then the app's custom (`X-…`) headers.

use super::headers::{custom_name_on_wire, discarded_from_app, same_header, well_known};
use super::sip_text::{header_param, SipText};

/// Headers the stack writes itself at fixed places (the app may supply the values).
const DIALOG_HEADERS: &[&str] = &["From", "To", "Call-ID", "CSeq"];

pub(crate) fn push_header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

/// Appends `;tag=` unless the value already carries a tag. The stack tags every response > 100.
fn with_to_tag(to: &str, status: u16, tag: &str) -> String {
    if status > 100 && header_param(to, "tag").is_none() {
        format!("{to};tag={tag}")
    } else {
        to.to_string()
    }
}

/// The standard reason phrase, for responses the stack makes up or an app that gave none.
pub(crate) fn standard_reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// Via, From, To, Call-ID, CSeq of a response: the request's, or the app's where it gave them.
fn response_head(request: &SipText, app: Option<&SipText>, status: u16, reason: &str, to_tag: &str) -> String {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for via in request.get_all("Via") {
        push_header(&mut out, "Via", via);
    }
    for name in DIALOG_HEADERS {
        let value = app.and_then(|a| a.get(name)).or_else(|| request.get(name));
        if let Some(value) = value {
            let value = if *name == "To" { with_to_tag(value, status, to_tag) } else { value.to_string() };
            push_header(&mut out, name, &value);
        }
    }
    out
}

/// A response the stack generates by itself (503 when nobody routed the method, 100 Trying,
/// 487 after CANCEL, 500 after a provisional to a non-INVITE): no body, no extra headers.
pub(crate) fn stack_response(request: &SipText, status: u16, to_tag: &str) -> Vec<u8> {
    let mut out = response_head(request, None, status, standard_reason(status), to_tag);
    push_header(&mut out, "Content-Length", "0");
    out.push_str("\r\n");
    out.into_bytes()
}

/// The app's response to a delivered request, as it goes on the wire. `None` when the app's
/// text is not a response with a status code.
pub(crate) fn app_response(request: &SipText, app: &SipText, to_tag: &str) -> Option<Vec<u8>> {
    let status = app.status()?;
    let reason = if app.reason().is_empty() { standard_reason(status) } else { app.reason() };
    let mut out = response_head(request, Some(app), status, reason, to_tag);
    let mut custom: Vec<(String, &str)> = Vec::new();
    for header in &app.headers {
        if discarded_from_app(&header.name) || DIALOG_HEADERS.iter().any(|d| same_header(d, &header.name)) {
            continue;
        }
        match well_known(&header.name) {
            Some(canonical) => push_header(&mut out, canonical, &header.value),
            None => custom.push((custom_name_on_wire(&header.name), &header.value)),
        }
    }
    push_header(&mut out, "Content-Length", &app.body.len().to_string());
    for (name, value) in custom {
        push_header(&mut out, &name, value);
    }
    out.push_str("\r\n");
    let mut wire = out.into_bytes();
    wire.extend_from_slice(&app.body);
    Some(wire)
}
