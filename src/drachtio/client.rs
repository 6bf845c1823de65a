//! The drachtio client: one reader thread (mio) and one writer thread. (being written)

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::message::SipDelivery;
use crate::sip::SipMessage;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub secret: String,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug)]
pub enum Outgoing {
    Frame { msg_id: String, payload: Vec<u8>, reply: Option<Sender<UacEvent>> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UacError {
    Rejected(String),
    NotConnected,
    Disconnected,
    TooLarge,
}

#[derive(Debug)]
pub enum UacEvent {
    Sent { transaction_id: String, echo: Vec<u8> },
    Response { meta: SipDelivery, message: SipMessage },
    Failed(UacError),
}

#[derive(Debug, Clone)]
pub struct DrachtioHandle {
    pub(crate) writer: Sender<Outgoing>,
}

impl DrachtioHandle {
    pub fn send_request(&self, sip: Vec<u8>, proxy: Option<&str>) -> Receiver<UacEvent> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let msg_id = super::message::new_message_id();
        let payload = super::message::sip_request(&msg_id, proxy, &sip);
        let _ = self.writer.send(Outgoing::Frame { msg_id, payload, reply: Some(tx) });
        rx
    }
}

pub struct DrachtioClient;
