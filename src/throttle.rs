//! Rate-limited log lines: at most one line per interval for each kind of event, with the
//! number of lines not written since.
//!
//! A flood of refused requests must not push the lines that matter (a ban, a lost connection)
//! out of journald's own rate limit, nor fill the disk. The state is one small record per
//! reason — the reasons are `&'static str` chosen by the code, never by a sender — so a flood
//! from many addresses cannot grow it.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::Level;

/// At most one line per reason in this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One line per interval; what is not logged is counted and reported with the next.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(interval: Duration) -> Throttle {
        Throttle { interval, last: None, suppressed: 0 }
    }

    /// `Some(n)` when a line should be logged now (`n` lines were suppressed since the last
    /// one), `None` when this one is suppressed.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Throttled log lines keyed by reason, shareable between threads (`&self`).
///
/// ```
/// # use sbc_sidecar::throttle::Refusals;
/// static REFUSALS: Refusals = Refusals::new();
/// REFUSALS.note("bad contact", || format!("registrar: rejecting REGISTER source={}", "127.0.0.1:5060"));
/// ```
/// writes `registrar: rejecting REGISTER source=127.0.0.1:5060 not_logged_since_last=0` at
/// info level, then nothing for that reason for [`LOG_INTERVAL`] (the message closure is not
/// even called), then the next line with the count of those it left out.
#[derive(Debug)]
pub struct Refusals {
    interval: Duration,
    by_reason: Mutex<Vec<(&'static str, Throttle)>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals::new()
    }
}

impl Refusals {
    /// One line per reason per [`LOG_INTERVAL`].
    pub const fn new() -> Refusals {
        Refusals::with_interval(LOG_INTERVAL)
    }

    pub const fn with_interval(interval: Duration) -> Refusals {
        Refusals { interval, by_reason: Mutex::new(Vec::new()) }
    }

    /// Logs `line()` at info level unless a line for `reason` was logged less than the
    /// interval ago.
    pub fn note(&self, reason: &'static str, line: impl FnOnce() -> String) {
        self.note_at(Level::Info, reason, line);
    }

    /// [`Refusals::note`] at `level`.
    pub fn note_at(&self, level: Level, reason: &'static str, line: impl FnOnce() -> String) {
        if !log::log_enabled!(level) {
            return;
        }
        if let Some(suppressed) = self.allow(reason, Instant::now()) {
            log::log!(level, "{} not_logged_since_last={suppressed}", line());
        }
    }

    /// `Some(suppressed)` when a line for `reason` may be written at `now`.
    pub fn allow(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut by_reason = self.by_reason.lock().unwrap_or_else(PoisonError::into_inner);
        match by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, throttle)) => throttle.allow(now),
            None => {
                let mut throttle = Throttle::new(self.interval);
                let allowed = throttle.allow(now);
                by_reason.push((reason, throttle));
                allowed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_a_count_of_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(30)), Some(1));
    }

    #[test]
    fn each_reason_has_its_own_budget() {
        let r = Refusals::new();
        let t0 = Instant::now();
        assert_eq!(r.allow("a", t0), Some(0));
        assert_eq!(r.allow("b", t0), Some(0));
        assert_eq!(r.allow("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(r.allow("b", t0 + Duration::from_secs(2)), None);
        assert_eq!(r.allow("a", t0 + Duration::from_secs(12)), Some(2));
        assert_eq!(r.allow("b", t0 + Duration::from_secs(12)), Some(1));
    }
}
