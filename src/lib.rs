//! sbc-sidecar: the SIP sidecar of a jambonz SBC node.
#![forbid(unsafe_code)]

pub mod bans;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod drachtio;
pub mod heartbeat;
pub mod logging;
pub mod net;
pub mod regbot;
pub mod registrar;
pub mod secret;
pub mod shared;
pub mod signals;
pub mod sip;
pub mod store;
pub mod supervise;
pub mod sysexits;
pub mod telemetry;
pub mod throttle;
