//! sbc-sidecar: the SIP sidecar of a jambonz SBC node.
#![forbid(unsafe_code)]

pub mod drachtio;
pub mod sip;
pub mod store;
