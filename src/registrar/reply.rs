//! The final response the pipeline decided on, before it is turned into SIP.
//!
//! Every step of the pipeline returns a [`Step`]: `Continue` with what it found, or `Break` with
//! the final response, and `?` stops the chain there, exactly like a Node middleware that sends
//! a final response and does not call `next()`. Not a `Result`: a `200` from the cache window
//! or a `401` challenge is an answer, not a failure, and `Err` is kept for real failures (a
//! store that did not answer, a malformed request).

use std::ops::ControlFlow;

use crate::drachtio::IncomingRequest;
use crate::sip::ResponseBuilder;

/// A step of the pipeline: `Continue(value)` goes on, `Break(reply)` is the final response.
pub type Step<T> = ControlFlow<Reply, T>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Replaces the standard reason phrase (`503 Max Devices Registered`).
    pub reason: Option<&'static str>,
    /// Headers after From/To/Call-ID/CSeq, in order.
    pub headers: Vec<(String, String)>,
    /// The answer came from the cache window (no webhook, no Redis write): metrics tell the two
    /// apart.
    pub cached: bool,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply { status, reason: None, headers: Vec::new(), cached: false }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// `<status>` with `X-Reason: <text>`.
    pub fn with_reason(status: u16, x_reason: &str) -> Reply {
        Reply::new(status).header("X-Reason", x_reason)
    }

    /// `503 Service Unavailable` with `Retry-After`: a store we need is unreachable, the device
    /// should come back shortly (or try another SBC) rather than believe it is registered.
    pub fn unavailable(retry_after_secs: u32) -> Reply {
        Reply::new(503).header("Retry-After", retry_after_secs.to_string())
    }

    pub fn internal_error() -> Reply {
        Reply::new(500)
    }

    pub fn to_builder(&self, req: &IncomingRequest) -> ResponseBuilder {
        let mut b = req.response(self.status);
        if let Some(reason) = self.reason {
            b = b.reason(reason);
        }
        b.headers(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }
}
