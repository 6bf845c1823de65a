//! The drachtio control connection: framing, message types, and the client that keeps one
//! authenticated connection to drachtio-server alive (reader and writer threads).
//!
//! Roles see three things: incoming requests of the methods they route (each answered with
//! exactly one final response through its [`Responder`]), connection events, and a
//! [`DrachtioHandle`] to send requests of their own and receive the responses.

pub mod client;
pub mod frame;
pub mod message;

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::sip::{ResponseBuilder, SipMessage};
pub use client::{ClientConfig, DrachtioClient, DrachtioHandle, Outgoing, Route, UacError, UacEvent};
pub use message::SipDelivery;

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

/// Sends the one response to an incoming request through the writer thread.
#[derive(Debug)]
pub struct Responder {
    pub(crate) transaction_id: String,
    pub(crate) writer: Sender<client::Outgoing>,
}

impl Responder {
    /// A responder that writes to `writer`; the client makes these, tests may too.
    pub fn new(transaction_id: String, writer: Sender<client::Outgoing>) -> Responder {
        Responder { transaction_id, writer }
    }

    pub fn transaction_id(&self) -> &str {
        &self.transaction_id
    }

    pub fn send(self, sip: Vec<u8>) {
        let msg_id = message::new_message_id();
        let payload = message::sip_response(&msg_id, &self.transaction_id, &sip);
        // The writer only goes away at shutdown, when there is nobody left to answer anyway.
        let _ = self.writer.send(client::Outgoing::Frame { msg_id, payload, reply: None });
    }
}
