//! The CLI server's side of the regbot status link: ask the regbot role for a snapshot and
//! turn it into `status` counts and `regbot-list` entries.

use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, SendTimeoutError, Sender};
use serde_json::{Map, Value};

use crate::regbot::{RegbotError, RegbotInfo, RegbotSnapshot, StatusRequest};

/// Longest the CLI thread waits for a snapshot. Every client of the socket waits while it
/// does, so this stays short; the scheduler answers between timers, well within it.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// Why no snapshot came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryError {
    /// The regbot role has stopped: its end of the channel is gone.
    NotRunning,
    /// The role is there but did not take the request or answer in time.
    NoAnswer(Duration),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::NotRunning => write!(f, "{}", RegbotError::NotRunning),
            QueryError::NoAnswer(timeout) => write!(f, "no answer within {} ms", timeout.as_millis()),
        }
    }
}

/// Asks for a snapshot, waiting at most `timeout` in all.
///
/// Not `regbot::query_status`: that one blocks in `send` while the scheduler's request queue
/// is full (a stuck scheduler fills it with our abandoned requests), which would stall the CLI
/// thread for good, and it reports a timeout as "not running". Here one deadline covers both
/// the send and the answer.
pub(crate) fn query(to: &Sender<StatusRequest>, timeout: Duration) -> Result<RegbotSnapshot, QueryError> {
    let deadline = Instant::now() + timeout;
    let (reply, answer) = bounded(1);
    match to.send_deadline(StatusRequest { reply }, deadline) {
        Ok(()) => {}
        Err(SendTimeoutError::Timeout(_)) => return Err(QueryError::NoAnswer(timeout)),
        Err(SendTimeoutError::Disconnected(_)) => return Err(QueryError::NotRunning),
    }
    match answer.recv_deadline(deadline) {
        Ok(snapshot) => Ok(snapshot),
        Err(RecvTimeoutError::Timeout) => Err(QueryError::NoAnswer(timeout)),
        // The scheduler dropped our request unanswered: it is on its way out.
        Err(RecvTimeoutError::Disconnected) => Err(QueryError::NotRunning),
    }
}

/// The `role` and `regbots` fields of the `regbot-list` reply (see `protocol::action`).
pub(crate) fn list_fields(snapshot: RegbotSnapshot) -> Map<String, Value> {
    let mut regbots = snapshot.regbots;
    // The scheduler keeps its regbots in no particular order; operators compare lists.
    regbots.sort_by(|a, b| (&a.voip_carrier_sid, &a.sip_gateway_sid).cmp(&(&b.voip_carrier_sid, &b.sip_gateway_sid)));
    let mut fields = Map::new();
    fields.insert("role".into(), to_json(snapshot.role));
    fields.insert("regbots".into(), Value::Array(regbots.iter().map(entry).collect()));
    fields
}

fn entry(info: &RegbotInfo) -> Value {
    let mut entry = Map::new();
    entry.insert("carrier".into(), Value::String(info.voip_carrier_sid.clone()));
    entry.insert("gateway".into(), Value::String(info.sip_gateway_sid.clone()));
    entry.insert("aor".into(), Value::String(info.aor.clone()));
    entry.insert("target".into(), Value::String(info.target.clone()));
    entry.insert("state".into(), to_json(info.state));
    entry.insert("last_status".into(), info.last_status.clone().map(Value::String).unwrap_or(Value::Null));
    entry.insert("failures".into(), Value::from(info.consecutive_failures));
    entry.insert(
        "next_refresh_s".into(),
        info.next_request_in.map(whole_seconds).map(Value::from).unwrap_or(Value::Null),
    );
    Value::Object(entry)
}

/// Rounded up, so that a REGISTER still due shows as at least 1 s away and a fresh 3600 s
/// refresh as 3600, not 3599.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The role and state enums carry their lower-case wire spelling as serde attributes; going
/// through serde keeps that spelling in one place.
fn to_json<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regbot::{RegbotRole, RegbotState};
    use serde_json::json;

    fn info(carrier: &str, gateway: &str, next: Option<Duration>) -> RegbotInfo {
        RegbotInfo {
            voip_carrier_sid: carrier.into(),
            sip_gateway_sid: gateway.into(),
            aor: "alice@sip.example.com".into(),
            target: "sip.example.com:5060;transport=udp".into(),
            state: RegbotState::Registering,
            last_status: None,
            consecutive_failures: 0,
            next_request_in: next,
        }
    }

    #[test]
    fn entries_are_sorted_by_carrier_then_gateway() {
        let snapshot = RegbotSnapshot {
            role: RegbotRole::Leader,
            total: 3,
            registered: 0,
            failing: 0,
            regbots: vec![info("c2", "g1", None), info("c1", "g2", None), info("c1", "g1", None)],
        };
        let fields = list_fields(snapshot);
        assert_eq!(fields["role"], json!("leader"));
        let order: Vec<(&str, &str)> = fields["regbots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["carrier"].as_str().unwrap(), e["gateway"].as_str().unwrap()))
            .collect();
        assert_eq!(order, [("c1", "g1"), ("c1", "g2"), ("c2", "g1")]);
        assert_eq!(fields["regbots"][0]["state"], json!("registering"));
        assert_eq!(fields["regbots"][0]["last_status"], Value::Null);
        assert_eq!(fields["regbots"][0]["next_refresh_s"], Value::Null);
    }

    #[test]
    fn next_refresh_is_rounded_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_secs(3600)), 3600);
        assert_eq!(whole_seconds(Duration::from_millis(3_599_001)), 3600);
        assert_eq!(whole_seconds(Duration::from_millis(300)), 1);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn a_silent_regbot_times_out_and_a_stopped_one_is_not_running() {
        let (tx, rx) = bounded::<StatusRequest>(1);
        let started = Instant::now();
        assert_eq!(query(&tx, Duration::from_millis(50)).unwrap_err(), QueryError::NoAnswer(Duration::from_millis(50)));
        // The queue is full of the unanswered request now: the send times out, never blocks.
        assert_eq!(query(&tx, Duration::from_millis(50)).unwrap_err(), QueryError::NoAnswer(Duration::from_millis(50)));
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(QueryError::NoAnswer(QUERY_TIMEOUT).to_string(), "no answer within 500 ms");

        // The request was taken and dropped unanswered.
        drop(rx.recv().unwrap());
        let stopping = std::thread::spawn(move || drop(rx.recv()));
        assert_eq!(query(&tx, Duration::from_secs(5)).unwrap_err(), QueryError::NotRunning);
        stopping.join().unwrap();
        assert_eq!(query(&tx, Duration::from_secs(5)).unwrap_err(), QueryError::NotRunning);
        assert_eq!(QueryError::NotRunning.to_string(), "the regbot scheduler is not running");
    }
}
