//! The test tooling of sbc-sidecar, shared by the daemon's integration tests (`tests/*.rs`, a
//! dev-dependency) and the programs of this crate (`drachtio-double`, `sbc-bench`, `sbc-soak`):
//! captured drachtio bytes, the drachtio double, throw-away databases, sipp, the registration
//! webhook, private TLS servers, load generators, and the daemon as a child process.
//!
//! Nothing here is part of the daemon or its Debian package.

use std::path::Path;

pub mod capture;
pub mod carrier;
pub mod ctl_server;
pub mod daemon;
pub mod db;
pub mod double;
pub mod https_webhook;
pub mod influx;
pub mod loadgen;
pub mod node_leader;
pub mod node_sidecar;
pub mod regload;
pub mod services;
pub mod sipp;
pub mod soak_servers;
pub mod tcp_proxy;
pub mod tls;
pub mod webhook;

/// The repository's root, the daemon's package: where `tests/scenarios`, `docs/spec` (the
/// drachtio captures) and `target/` are.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("test-tools/ is inside the repository")
}

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
