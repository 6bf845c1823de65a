//! Test support shared by the integration tests: captured drachtio bytes, a throw-away database,
//! sipp, and the daemon as a child process. The drachtio double lives in `support/double/` and
//! is included with `#[path]` by the tests that need it.
#![allow(dead_code)]

pub mod capture;
pub mod carrier;
pub mod ctl_server;
pub mod daemon;
pub mod db;
pub mod influx;
pub mod sipp;
pub mod tcp_proxy;
pub mod tls;
