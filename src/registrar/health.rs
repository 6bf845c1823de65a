//! Logs a store going away and coming back once per change, not once per REGISTER (through
//! [`OutageLog`]): during a Redis outage thousands of devices re-register, and each still
//! gets its 503.
//!
//! It also keeps REGISTERs from waiting on a store known to be down. A server that does not
//! answer at all (a dead host, a black-holed route) costs every attempt the whole connect or
//! read timeout, and the registrar's threads would spend the outage waiting in turn while the
//! queue behind them grew. Once a store has failed, only one attempt per [`PROBE_EVERY`] goes
//! to it, to notice its return; the other requests get their 503 at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::outage::OutageLog;
use crate::store::StoreError;

#[derive(Debug, Clone, Default)]
struct StoreRecord {
    since_unix_ms: u64,
    last_error: Option<String>,
    last_error_unix_ms: Option<u64>,
}

/// One store as the registrar sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreReport {
    /// The last operation worked (true before the first one).
    pub reachable: bool,
    /// When it became reachable or unreachable (the registrar's start when it never changed).
    pub since_unix_ms: u64,
    /// The last failure, up or down now, and when.
    pub last_error: Option<String>,
    pub last_error_unix_ms: Option<u64>,
}

/// While a store is down, how often a request may try it.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

pub struct StoreHealth {
    outage: OutageLog,
    /// For `sbcctl status`: since when the store is up or down, and its last error.
    record: Mutex<StoreRecord>,
    /// When the next attempt may go to a store that is down, in ms since `epoch`.
    next_probe_ms: AtomicU64,
    epoch: Instant,
}

impl StoreHealth {
    pub fn new(name: &'static str) -> StoreHealth {
        StoreHealth {
            outage: OutageLog::new("registrar", name).with_consequence(", answering REGISTER with 503 while it lasts"),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            record: Mutex::new(StoreRecord { since_unix_ms: super::unix_millis(), ..StoreRecord::default() }),
        }
    }

    /// Whether the store answered last time, since when, and its last error.
    pub fn report(&self) -> StoreReport {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner()).clone();
        StoreReport {
            reachable: !self.outage.is_down(),
            since_unix_ms: record.since_unix_ms,
            last_error: record.last_error,
            last_error_unix_ms: record.last_error_unix_ms,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this request should use the store: always while it is up; while it is down,
    /// only the first request after each [`PROBE_EVERY`].
    pub fn admit(&self) -> bool {
        if !self.outage.is_down() {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_probe_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(next, now + PROBE_EVERY.as_millis() as u64, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub fn failed(&self, what: &str, error: &StoreError) {
        self.next_probe_ms.store(self.now_ms() + PROBE_EVERY.as_millis() as u64, Ordering::Relaxed);
        let started = self.outage.failed(what, error);
        let now = super::unix_millis();
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        if started {
            record.since_unix_ms = now;
        }
        record.last_error = Some(format!("{what}: {error}"));
        record.last_error_unix_ms = Some(now);
    }

    pub fn succeeded(&self) {
        if self.outage.succeeded() {
            self.record.lock().unwrap_or_else(|p| p.into_inner()).since_unix_ms = super::unix_millis();
        }
    }
}

#[cfg(test)]
mod store_health_tests {
    use super::*;

    #[test]
    fn a_store_that_failed_is_tried_once_per_probe_interval_until_it_answers() {
        let h = StoreHealth::new("redis");
        assert!(h.admit() && h.admit(), "up: every request");
        h.failed("reading", &StoreError::RedisUnavailable("refused".into()));
        assert!(!h.admit(), "just failed: no attempt before the interval");
        std::thread::sleep(PROBE_EVERY + Duration::from_millis(20));
        assert!(h.admit(), "one probe after the interval");
        assert!(!h.admit(), "and only one");
        h.succeeded();
        assert!(h.admit() && h.admit(), "up again: every request");
    }

    #[test]
    fn the_report_says_since_when_and_the_last_error() {
        let h = StoreHealth::new("redis");
        let up = h.report();
        assert!(up.reachable && up.last_error.is_none());
        std::thread::sleep(Duration::from_millis(5));
        h.failed("reading", &StoreError::RedisUnavailable("refused".into()));
        let down = h.report();
        assert!(!down.reachable);
        assert!(down.since_unix_ms > up.since_unix_ms);
        assert_eq!(down.last_error.as_deref(), Some("reading: redis unavailable: refused"));
        h.failed("writing", &StoreError::RedisUnavailable("refused".into()));
        assert_eq!(h.report().since_unix_ms, down.since_unix_ms, "down since the first failure");
        h.succeeded();
        let back = h.report();
        assert!(back.reachable && back.since_unix_ms >= down.since_unix_ms);
        assert!(back.last_error.is_some(), "the last error stays readable");
    }
}
