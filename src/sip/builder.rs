//! Building SIP responses (for requests drachtio delivered) and new requests.

use super::message::{header_name_eq, SipMessage};

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Trying",
            2 => "OK",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// A response to a request, built the way drachtio-srf builds it: Call-ID, CSeq, From and To
/// copied from the request, then the caller's headers, then `Content-Length`.
#[derive(Debug, Clone)]
pub struct ResponseBuilder {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl ResponseBuilder {
    pub fn new(request: &SipMessage, status: u16) -> Self {
        let mut headers = Vec::with_capacity(8);
        for name in ["Call-ID", "CSeq", "From", "To"] {
            if let Some(v) = request.header(name) {
                headers.push((name.to_string(), v.to_string()));
            }
        }
        ResponseBuilder { status, reason: reason_phrase(status).to_string(), headers, body: Vec::new() }
    }

    /// Replaces the standard reason phrase (e.g. `503 Max Devices Registered`).
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = reason.to_string();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn headers<'a>(mut self, headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        for (n, v) in headers {
            self.headers.push((n.to_string(), v.to_string()));
        }
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.headers.push(("Content-Type".to_string(), content_type.to_string()));
        self.body = body.to_vec();
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn build(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(format!("SIP/2.0 {} {}\r\n", self.status, self.reason).as_bytes());
        for (n, v) in &self.headers {
            if header_name_eq(n, "Content-Length") {
                continue;
            }
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// A new request for drachtio to send. drachtio adds Via, Max-Forwards and Content-Length
/// (any Content-Length we give is discarded), and fills From/To/Call-ID/CSeq when absent.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RequestBuilder {
    pub fn new(method: &str, uri: &str) -> Self {
        RequestBuilder { method: method.to_string(), uri: uri.to_string(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.headers.push(("Content-Type".to_string(), content_type.to_string()));
        self.body = body.to_vec();
        self
    }

    pub fn build(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(format!("{} {} SIP/2.0\r\n", self.method, self.uri).as_bytes());
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_copies_dialog_headers_like_srf() {
        let req = SipMessage::parse(b"OPTIONS sip:127.0.0.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.20:5060;branch=z9hG4bK-32335-1-0;rport=5060\r\nFrom: <sip:fs@127.0.0.20:5060>;tag=32335o1\r\nTo: <sip:127.0.0.10:5060>\r\nCall-ID: 1-32335@127.0.0.20\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nX-FS-Status: open\r\nContent-Length: 0\r\n\r\n").unwrap();
        let resp = ResponseBuilder::new(&req, 200).header("X-Members", "1").build();
        // the exact bytes the capture shows the app sending (step g)
        assert_eq!(
            resp,
            b"SIP/2.0 200 OK\r\nCall-ID: 1-32335@127.0.0.20\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:fs@127.0.0.20:5060>;tag=32335o1\r\nTo: <sip:127.0.0.10:5060>\r\nX-Members: 1\r\nContent-Length: 0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn custom_reason_phrase() {
        let req = SipMessage::parse(b"REGISTER sip:a.b SIP/2.0\r\nCall-ID: x\r\n\r\n").unwrap();
        let resp = ResponseBuilder::new(&req, 503).reason("Max Devices Registered").build();
        assert!(resp.starts_with(b"SIP/2.0 503 Max Devices Registered\r\n"));
    }
}
