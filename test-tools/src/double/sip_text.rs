//! Just enough SIP text handling for the double: a message is a start line, header lines in
//! arrival order and a body. Work stays at the level of header lines as text, so that what the
//! double forwards is what it received, byte for byte, except where drachtio itself changes it.
//!
//! Independent of the production parser on purpose. Nothing here panics on garbage: parsing
//! returns `None` and the caller drops the message or answers with an error.

use std::net::SocketAddr;

use super::headers::same_header;

#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub(crate) struct SipText {
    pub start_line: String,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where the header block ends: the index of the empty line's CRLF pair, if there is one.
fn head_end(bytes: &[u8]) -> Option<usize> {
    find(bytes, b"\r\n\r\n")
}

impl SipText {
    /// Parses a message. Without an empty line the whole text is taken as the header block (an
    /// app may omit it); the head must be UTF-8.
    pub(crate) fn parse(bytes: &[u8]) -> Option<SipText> {
        let (head, body) = match head_end(bytes) {
            Some(i) => (&bytes[..i], bytes[i + 4..].to_vec()),
            None => (bytes, Vec::new()),
        };
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let start_line = lines.next()?.trim().to_string();
        if start_line.is_empty() {
            return None;
        }
        let mut headers: Vec<Header> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // folded continuation of the previous header
                if let Some(last) = headers.last_mut() {
                    last.value.push(' ');
                    last.value.push_str(line.trim());
                }
                continue;
            }
            let Some((name, value)) = line.split_once(':') else { continue };
            let name = name.trim();
            if name.is_empty() || name.contains(' ') {
                continue;
            }
            headers.push(Header { name: name.to_string(), value: value.trim().to_string() });
        }
        Some(SipText { start_line, headers, body })
    }

    pub(crate) fn is_response(&self) -> bool {
        self.start_line.starts_with("SIP/")
    }

    /// Status code of a response.
    pub(crate) fn status(&self) -> Option<u16> {
        if !self.is_response() {
            return None;
        }
        self.start_line.split_whitespace().nth(1)?.parse().ok().filter(|c| (100..=699).contains(c))
    }

    /// Reason phrase of a response (may be empty).
    pub(crate) fn reason(&self) -> &str {
        let mut parts = self.start_line.splitn(3, ' ');
        parts.nth(2).unwrap_or("").trim()
    }

    /// Method of a request.
    pub(crate) fn method(&self) -> Option<&str> {
        if self.is_response() {
            return None;
        }
        self.start_line.split_whitespace().next()
    }

    pub(crate) fn request_uri(&self) -> Option<&str> {
        if self.is_response() {
            return None;
        }
        self.start_line.split_whitespace().nth(1)
    }

    /// The first value of a header (compact forms and case handled).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| same_header(&h.name, name)).map(|h| h.value.as_str())
    }

    /// Every line of a header, in order.
    pub(crate) fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |h| same_header(&h.name, name)).map(|h| h.value.as_str())
    }

    /// `(number, method)` of the CSeq header.
    pub(crate) fn cseq(&self) -> Option<(&str, &str)> {
        let mut parts = self.get("CSeq")?.split_whitespace();
        Some((parts.next()?, parts.next()?))
    }

    /// The topmost Via value (the first one of the first Via line).
    pub(crate) fn top_via(&self) -> Option<&str> {
        let first_line = self.get("Via")?;
        Some(first_line.split(',').next().unwrap_or(first_line).trim())
    }

    pub(crate) fn top_via_branch(&self) -> Option<&str> {
        header_param(self.top_via()?, "branch").filter(|b| !b.is_empty())
    }
}

/// The part of a header value after its URI or sent-by: `;tag=x;foo` of `<sip:a@b;x=y>;tag=x;foo`.
fn params_part(value: &str) -> &str {
    let after_uri = match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if close > open => &value[close + 1..],
        _ => value,
    };
    match after_uri.find(';') {
        Some(i) => &after_uri[i..],
        None => "",
    }
}

/// `name=value` or a bare `name` parameter.
fn split_param(param: &str) -> (&str, Option<&str>) {
    match param.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (param.trim(), None),
    }
}

/// A header parameter's value (`Some("")` for a flag like `;rport`).
pub(crate) fn header_param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    params_part(value)
        .split(';')
        .skip(1)
        .map(split_param)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.unwrap_or(""))
}

/// The URI of a name-addr (`<…>`) or of a plain addr-spec (up to its first `;`).
pub(crate) fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if close > open => &value[open + 1..close],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// The host of a Via sent-by (`SIP/2.0/UDP 127.0.0.1:5070` → `127.0.0.1`), IPv6 brackets removed.
fn via_host(protocol_and_sent_by: &str) -> &str {
    let sent_by = protocol_and_sent_by.split_whitespace().nth(1).unwrap_or("");
    if let Some(rest) = sent_by.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    sent_by.split(':').next().unwrap_or("")
}

/// What the stack does to the top Via of a request it receives: fill in `rport=<source port>`
/// (a bare `;rport` gets its value in place, a missing one is appended) and append
/// `received=<source ip>` when the packet did not come from the host the Via names.
fn stamp_via_value(value: &str, source: SocketAddr) -> String {
    let (first, others) = match value.find(',') {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    let mut segments: Vec<String> = first.split(';').map(str::to_string).collect();
    let source_ip = source.ip().to_string();
    let needs_received = via_host(&segments[0]) != source_ip;
    let mut has_rport = false;
    let mut has_received = false;
    for segment in segments.iter_mut().skip(1) {
        let (name, param_value) = split_param(segment);
        if name.eq_ignore_ascii_case("rport") {
            has_rport = true;
            if param_value.is_none_or(str::is_empty) {
                *segment = format!("rport={}", source.port());
            }
        } else if name.eq_ignore_ascii_case("received") && needs_received {
            has_received = true;
            *segment = format!("received={source_ip}");
        }
    }
    if needs_received && !has_received {
        segments.push(format!("received={source_ip}"));
    }
    if !has_rport {
        segments.push(format!("rport={}", source.port()));
    }
    format!("{}{}", segments.join(";"), others)
}

/// The raw message with its top Via stamped (see [`stamp_via_value`]); everything else is kept
/// byte for byte. A message without a Via is returned unchanged.
pub(crate) fn stamp_top_via(raw: &[u8], source: SocketAddr) -> Vec<u8> {
    let head_len = head_end(raw).unwrap_or(raw.len());
    let Some(first_line_end) = find(&raw[..head_len], b"\r\n") else { return raw.to_vec() };
    let mut pos = first_line_end + 2;
    while pos < head_len {
        let line_end = find(&raw[pos..head_len], b"\r\n").map_or(head_len, |i| pos + i);
        if let Ok(line) = std::str::from_utf8(&raw[pos..line_end]) {
            if let Some((name, value)) = line.split_once(':') {
                if same_header(name, "Via") {
                    let leading_ws = &value[..value.len() - value.trim_start().len()];
                    let stamped = stamp_via_value(value.trim(), source);
                    let mut out = raw[..pos].to_vec();
                    out.extend_from_slice(format!("{name}:{leading_ws}{stamped}").as_bytes());
                    out.extend_from_slice(&raw[line_end..]);
                    return out;
                }
            }
        }
        pos = line_end + 2;
    }
    raw.to_vec()
}

/// The result of looking for one SIP message at the front of a TCP stream buffer.
pub(crate) enum StreamCut {
    /// Not a whole message yet.
    Incomplete,
    /// One message (head and Content-Length bytes of body), removed from the buffer.
    Message(Vec<u8>),
    /// The stream cannot be a SIP stream; the connection should be dropped.
    Garbage,
}

/// Largest header block or body the double accepts on a stream.
const MAX_STREAM_MESSAGE: usize = 256 * 1024;

/// Cuts one message off a stream, framed by its Content-Length (RFC 3261 §18.3); keep-alive
/// CRLFs between messages are skipped. A missing Content-Length counts as 0.
pub(crate) fn cut_stream_message(buf: &mut Vec<u8>) -> StreamCut {
    let keepalive = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    buf.drain(..keepalive);
    let Some(head_len) = head_end(buf) else {
        return if buf.len() > MAX_STREAM_MESSAGE { StreamCut::Garbage } else { StreamCut::Incomplete };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_len]) else { return StreamCut::Garbage };
    let mut body_len = 0usize;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if same_header(name, "Content-Length") {
                match value.trim().parse::<usize>() {
                    Ok(n) if n <= MAX_STREAM_MESSAGE => body_len = n,
                    _ => return StreamCut::Garbage,
                }
            }
        }
    }
    let total = head_len + 4 + body_len;
    if buf.len() < total {
        return StreamCut::Incomplete;
    }
    StreamCut::Message(buf.drain(..total).collect())
}
