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

/// Polls `cond` every 25 ms until it holds (`true`) or `timeout` has passed (`false`).
pub fn wait_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}
