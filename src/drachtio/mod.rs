//! The drachtio control connection: framing, message types, and the client that keeps one
//! authenticated connection to drachtio-server alive (reader and writer threads).
//!
//! Roles see three things: incoming requests of the methods they route (each answered with
//! exactly one final response through its [`Responder`]), connection events, and a
//! [`DrachtioHandle`] to send requests of their own and receive the responses.

pub(crate) mod client;
mod connect_error;
pub mod frame;
pub mod message;
pub(crate) mod writer;

use std::net::IpAddr;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::net::{parse_hostports, Cidr};
use crate::sip::{ResponseBuilder, SipMessage};
use crate::throttle::Refusals;
pub use client::{ClientConfig, DrachtioClient, DrachtioHandle, Route, UacError, UacEvent};
pub use connect_error::ConnectError;
pub use message::SipDelivery;
pub use writer::{Outgoing, WriterStats, UNANSWERED_METRIC};

/// What the connection learned when drachtio accepted our secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// `tcp/1.2.3.4:5060,udp/1.2.3.4:5060,…`: the public SIP contacts; also every request's
    /// `server.hostport` and what registrations store as `sbcAddress`.
    pub hostports: String,
    pub version: String,
    /// Same list with the locally bound addresses.
    pub local_hostports: String,
}

impl ConnectionInfo {
    /// `ip:port` of the last `tcp` entry of the local hostports whose IP is inside one of the
    /// private networks (`JAMBONES_NETWORK_CIDR`), as the Node sidecar computes it.
    pub fn private_sip_address(&self, private_networks: &[Cidr]) -> Option<String> {
        parse_hostports(&self.local_hostports)
            .filter(|hp| hp.transport == "tcp")
            .filter(|hp| hp.ip.parse::<IpAddr>().is_ok_and(|ip| private_networks.iter().any(|c| c.contains(ip))))
            .last()
            .map(|hp| format!("{}:{}", hp.ip, hp.port))
    }
}

/// Connection state changes, sent to every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    Connected(ConnectionInfo),
    Disconnected { reason: String },
}

/// A request drachtio delivered to us, waiting for its one final response.
#[derive(Debug)]
pub struct IncomingRequest {
    /// The meta fields of the delivery (source address/port, protocol, transaction id).
    pub meta: SipDelivery,
    pub message: SipMessage,
    /// The drachtio hostports of the connection the request arrived on.
    pub server_hostport: Arc<str>,
    /// `ip:port` of drachtio's private TCP SIP address (see
    /// [`ConnectionInfo::private_sip_address`]), stored with registrations as `privateSbcAddress`.
    pub private_sip_address: Option<Arc<str>>,
    pub responder: Responder,
}

impl IncomingRequest {
    pub fn method(&self) -> &str {
        self.message.method().unwrap_or("")
    }

    /// Starts a response to this request with From/To/Call-ID/CSeq copied.
    pub fn response(&self, status: u16) -> ResponseBuilder {
        ResponseBuilder::new(&self.message, status)
    }

    /// Sends the final response. A request must be answered exactly once; the responder is
    /// consumed so the compiler enforces it.
    pub fn respond(self, response: ResponseBuilder) {
        self.responder.send(response.build());
    }
}

/// What a request gets when it was never answered: drachtio's stack copies Via, From, To,
/// Call-ID and CSeq from the request itself (as for any app response without them), and
/// devices come back after `Retry-After`, here or on another SBC.
pub const UNANSWERED_RESPONSE: &[u8] =
    b"SIP/2.0 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n";

/// What an answer too large for a drachtio frame is replaced with: drachtio's stack copies
/// Via, From, To, Call-ID and CSeq from the request, as for [`UNANSWERED_RESPONSE`].
pub const OVERSIZED_RESPONSE: &[u8] = b"SIP/2.0 500 Server Internal Error\r\nContent-Length: 0\r\n\r\n";

/// Oversized answers are logged once per interval.
static OVERSIZED: Refusals = Refusals::new();

/// Sends the one response to an incoming request, through the writer thread (see `writer`).
///
/// A responder dropped without [`Responder::send`] — a queue dropped at shutdown, a thread
/// that ended, a code path that forgot — answers [`UNANSWERED_RESPONSE`] itself (the writer
/// counts these and reports them as the `sbc.sip.unanswered` metric), so no request drachtio
/// delivered is left to time out.
#[derive(Debug)]
pub struct Responder {
    pub(crate) transaction_id: String,
    pub(crate) writer: Sender<writer::Outgoing>,
    /// Set by `send`, so that `Drop` never answers a second time.
    answered: bool,
}

impl Responder {
    /// A responder that writes to `writer`; the client makes these, tests may too.
    pub fn new(transaction_id: String, writer: Sender<writer::Outgoing>) -> Responder {
        Responder { transaction_id, writer, answered: false }
    }

    pub fn transaction_id(&self) -> &str {
        &self.transaction_id
    }

    pub fn send(mut self, sip: Vec<u8>) {
        self.answered = true;
        let msg_id = message::new_message_id();
        let mut payload = message::sip_response(&msg_id, &self.transaction_id, &sip);
        if payload.len() > frame::MAX_OUTGOING_PAYLOAD {
            // drachtio could not take it whole (and the writer would drop it): the request
            // still gets a final answer, without the headers that made it too large.
            OVERSIZED.note_at(log::Level::Warn, "oversized answer", || {
                format!(
                    "answer of {} bytes is too large for a drachtio frame (at most {}): sending 500 instead \
                     transaction={}",
                    payload.len(),
                    frame::MAX_OUTGOING_PAYLOAD,
                    self.transaction_id
                )
            });
            payload = message::sip_response(&msg_id, &self.transaction_id, OVERSIZED_RESPONSE);
        }
        let answers = Some(std::mem::take(&mut self.transaction_id));
        // The writer only goes away at shutdown, after it answered what was still open.
        let _ = self.writer.send(writer::Outgoing::Frame { msg_id, payload, reply: None, answers });
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let transaction_id = std::mem::take(&mut self.transaction_id);
        let _ = self.writer.send(writer::Outgoing::Unanswered { transaction_id });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &str) -> Vec<Cidr> {
        list.split(',').map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn private_sip_address_is_the_last_private_tcp_entry() {
        let info = ConnectionInfo {
            hostports: "tcp/3.148.70.168:5060,udp/3.148.70.168:5060".into(),
            version: "v0.9.10".into(),
            local_hostports: "udp/10.0.0.5:5060,tcp/10.0.0.5:5060,tcp/10.0.1.7:5070,tcp/3.3.3.3:5060,wss/10.0.0.5:8443"
                .into(),
        };
        let default = cidrs("192.168.0.0/24,172.16.0.0/16,10.0.0.0/8");
        assert_eq!(info.private_sip_address(&default).as_deref(), Some("10.0.1.7:5070"));
        assert_eq!(info.private_sip_address(&cidrs("192.168.0.0/24")), None);
    }

    #[test]
    fn a_responder_dropped_unanswered_asks_the_writer_for_a_503() {
        let (tx, rx) = crossbeam_channel::unbounded();
        drop(Responder::new("txn-9".into(), tx));
        match rx.try_recv() {
            Ok(writer::Outgoing::Unanswered { transaction_id }) => assert_eq!(transaction_id, "txn-9"),
            other => panic!("expected Unanswered, got {other:?}"),
        }
        assert!(rx.try_recv().is_err(), "one message only");
    }

    #[test]
    fn an_answer_too_large_for_a_frame_becomes_a_bare_500() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let huge = format!("SIP/2.0 200 OK\r\nVia: {}\r\nContent-Length: 0\r\n\r\n", "x".repeat(20_000));
        Responder::new("txn-8".into(), tx).send(huge.into_bytes());
        match rx.try_recv() {
            Ok(writer::Outgoing::Frame { payload, answers, .. }) => {
                assert_eq!(answers.as_deref(), Some("txn-8"));
                assert!(frame::encode(&payload).is_ok(), "fits a frame");
                let text = String::from_utf8_lossy(&payload);
                assert!(
                    text.ends_with("|sip|txn-8|\r\nSIP/2.0 500 Server Internal Error\r\nContent-Length: 0\r\n\r\n"),
                    "{text}"
                );
            }
            other => panic!("expected the response frame, got {other:?}"),
        }
    }

    #[test]
    fn a_responder_that_answered_sends_exactly_one_frame() {
        let (tx, rx) = crossbeam_channel::unbounded();
        Responder::new("txn-7".into(), tx).send(b"SIP/2.0 200 OK\r\n\r\n".to_vec());
        match rx.try_recv() {
            Ok(writer::Outgoing::Frame { payload, answers, reply, .. }) => {
                assert_eq!(answers.as_deref(), Some("txn-7"));
                assert!(reply.is_none());
                assert!(String::from_utf8_lossy(&payload).contains("|sip|txn-7|\r\nSIP/2.0 200 OK"));
            }
            other => panic!("expected the response frame, got {other:?}"),
        }
        assert!(rx.try_recv().is_err(), "no fallback after an answer");
    }
}
