//! What the regbot role tells the CLI: a snapshot answered on request through a channel, so
//! nobody shares the scheduler's state.

use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use serde::Serialize;

use super::RegbotError;

/// Whether this instance holds the cluster's regbot role (or registers from every SBC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegbotRole {
    Leader,
    Standby,
    /// `SBC_REGBOT_MODE=every`: this SBC registers every carrier itself.
    Every,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegbotState {
    /// Created, first REGISTER not sent yet (batches are spread out).
    Starting,
    /// First REGISTER in flight.
    Registering,
    Registered,
    /// The last attempt failed; retrying with backoff.
    Failing,
    /// Gave up after the failure threshold; the carrier was disabled or deactivated.
    Disabled,
    /// Sending `Expires: 0` before going away or changing configuration.
    Unregistering,
}

/// One regbot in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegbotInfo {
    pub voip_carrier_sid: String,
    pub sip_gateway_sid: String,
    /// `<user>@<realm>`
    pub aor: String,
    /// `<host>[:<port>];transport=<t>`
    pub target: String,
    pub state: RegbotState,
    /// `"200 OK"`, `"403 Forbidden"`, or why nothing was sent.
    pub last_status: Option<String>,
    pub consecutive_failures: u32,
    /// Until the next REGISTER (refresh or retry); `None` while one is in flight or disabled.
    pub next_request_in: Option<Duration>,
}

/// The `regbotStatus()` of the Node sidecar (`total`, `registered`, leader flag) plus the
/// number failing and the per-regbot list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegbotSnapshot {
    pub role: RegbotRole,
    pub total: usize,
    pub registered: usize,
    pub failing: usize,
    pub regbots: Vec<RegbotInfo>,
}

/// Ask the regbot scheduler for a snapshot; it answers on `reply`.
#[derive(Debug)]
pub struct StatusRequest {
    pub reply: Sender<RegbotSnapshot>,
}

/// Sends a request on `to` and waits up to `timeout` for the answer.
pub fn query_status(to: &Sender<StatusRequest>, timeout: Duration) -> Result<RegbotSnapshot, RegbotError> {
    let (tx, rx) = bounded(1);
    to.send(StatusRequest { reply: tx }).map_err(|_| RegbotError::NotRunning)?;
    rx.recv_timeout(timeout).map_err(|_| RegbotError::NotRunning)
}
