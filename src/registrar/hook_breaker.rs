//! A circuit breaker per account for registration webhooks that stop answering.
//!
//! Every auth worker that calls a hanging webhook is held for the whole webhook timeout. With
//! a fixed pool, one account's dead webhook would soon hold every worker, and the REGISTERs
//! of every other account on the platform — even refreshes answered from the cache window —
//! would wait behind it in the queue until it overflowed. So after [`BreakerSettings::threshold`]
//! timeouts in a row, the account's webhook is not called for [`BreakerSettings::cooldown`]:
//! its REGISTERs get `503` with `Retry-After` at once. When the cool-down is over, one
//! REGISTER goes through as a probe (the others are still refused while it runs); an answer
//! closes the breaker, another timeout opens it again.
//!
//! Only timeouts count: a webhook that refuses connections or answers with an error status
//! fails fast and holds nobody. And only timeouts of calls that started after the webhook last
//! answered: when a hang ends, the calls made during it still time out one after the other,
//! but the webhook is already answering the calls made since — counting those stale timeouts
//! opened the breaker after the webhook had recovered and refused every REGISTER for the
//! cool-down (found by `make soak`).
//!
//! This file is one account's breaker ([`Breaker`]); the table of them, with the rest of what the
//! registrar keeps per account, is `account_state.rs`.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Webhook timeouts in a row that open the breaker. Zero disables it.
    pub threshold: u32,
    /// How long an open breaker refuses calls before it lets a probe through.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { threshold: 3, cooldown: Duration::from_secs(10) }
    }
}

/// Whether a webhook call may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Call,
    /// The breaker is open: answer without calling, and tell the device when to come back.
    Refuse {
        retry_after: Duration,
    },
}

/// What a call's outcome changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    /// This timeout opened the breaker.
    Opened,
    /// The probe timed out too: open for another cool-down.
    StillOpen,
    /// The webhook answered after the breaker had opened.
    Closed,
}

/// An account whose breaker is open (or half open, its probe running), for `sbcctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBreaker {
    pub account_sid: String,
    /// Timeouts in a row that opened it (and kept it open).
    pub timeouts: u32,
    /// Until the next probe may go (zero while a probe is due or running).
    pub retry_in: Duration,
}

/// One account's breaker (closed when new).
#[derive(Debug, Default, Clone)]
pub struct Breaker {
    timeouts_in_a_row: u32,
    /// Set while open; also pushed forward while a probe runs.
    open_until: Option<Instant>,
    /// When the webhook last answered: a timeout of a call started before that is stale.
    answered_at: Option<Instant>,
}

impl Breaker {
    /// `Some((timeouts in a row, until the next probe))` while open or half open.
    pub fn open(&self, now: Instant) -> Option<(u32, Duration)> {
        let until = self.open_until?;
        Some((self.timeouts_in_a_row, until.saturating_duration_since(now)))
    }

    pub fn admit(&mut self, settings: &BreakerSettings, now: Instant) -> Admission {
        if settings.threshold == 0 {
            return Admission::Call;
        }
        match self.open_until {
            Some(until) if now < until => Admission::Refuse { retry_after: until - now },
            Some(_) => {
                // Half open: this call is the probe; the others wait for its outcome.
                self.open_until = Some(now + settings.cooldown);
                Admission::Call
            }
            None => Admission::Call,
        }
    }

    /// Records how a call that [`admit`](Self::admit) let through at `started` ended at `now`.
    pub fn record(
        &mut self,
        settings: &BreakerSettings,
        timed_out: bool,
        started: Instant,
        now: Instant,
    ) -> Transition {
        if settings.threshold == 0 {
            return Transition::None;
        }
        if !timed_out {
            let was_open = self.open_until.is_some();
            *self = Breaker { answered_at: Some(now), ..Breaker::default() };
            return if was_open { Transition::Closed } else { Transition::None };
        }
        if self.answered_at.is_some_and(|answered| answered >= started) {
            // The webhook answered since this call went out: it says nothing about now.
            return Transition::None;
        }
        self.timeouts_in_a_row = self.timeouts_in_a_row.saturating_add(1);
        if self.timeouts_in_a_row < settings.threshold {
            return Transition::None;
        }
        let was_open = self.open_until.is_some();
        self.open_until = Some(now + settings.cooldown);
        if was_open {
            Transition::StillOpen
        } else {
            Transition::Opened
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);
    const SETTINGS: BreakerSettings = BreakerSettings { threshold: 3, cooldown: COOLDOWN };

    #[test]
    fn three_timeouts_in_a_row_open_it_for_the_cooldown() {
        let mut b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit(&SETTINGS, t0), Admission::Call);
            assert_eq!(b.record(&SETTINGS, true, t0, t0), Transition::None);
        }
        assert_eq!(b.record(&SETTINGS, true, t0, t0), Transition::Opened);
        assert_eq!(
            b.admit(&SETTINGS, t0 + Duration::from_secs(4)),
            Admission::Refuse { retry_after: COOLDOWN - Duration::from_secs(4) }
        );
        assert_eq!(b.open(t0 + Duration::from_secs(4)), Some((3, COOLDOWN - Duration::from_secs(4))));
    }

    #[test]
    fn an_answer_in_between_starts_the_count_again() {
        let mut b = Breaker::default();
        let t0 = Instant::now();
        b.record(&SETTINGS, true, t0, t0);
        b.record(&SETTINGS, true, t0, t0);
        assert_eq!(b.record(&SETTINGS, false, t0, t0), Transition::None);
        assert_eq!(b.record(&SETTINGS, true, t0, t0), Transition::None);
        assert_eq!(b.admit(&SETTINGS, t0), Admission::Call);
        assert_eq!(b.open(t0), None);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_outcome_decides() {
        let mut b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record(&SETTINGS, true, t0, t0);
        }
        let later = t0 + COOLDOWN;
        assert_eq!(b.admit(&SETTINGS, later), Admission::Call, "the probe");
        assert!(matches!(b.admit(&SETTINGS, later), Admission::Refuse { .. }), "only one probe at a time");
        assert_eq!(b.record(&SETTINGS, true, later, later), Transition::StillOpen);
        assert!(matches!(b.admit(&SETTINGS, later + Duration::from_secs(1)), Admission::Refuse { .. }));

        let again = later + COOLDOWN;
        assert_eq!(b.admit(&SETTINGS, again), Admission::Call);
        assert_eq!(b.record(&SETTINGS, false, again, again), Transition::Closed);
        assert_eq!(b.admit(&SETTINGS, again), Admission::Call);
        assert_eq!(b.record(&SETTINGS, true, again, again), Transition::None, "closed: counting from zero");
    }

    #[test]
    fn timeouts_of_calls_made_before_the_webhook_answered_again_do_not_open_it() {
        // A hang: three calls go out; it ends; a call made after it is answered; then the three
        // calls made during the hang time out.
        let mut b = Breaker::default();
        let t0 = Instant::now();
        let answered = t0 + Duration::from_millis(1200);
        assert_eq!(b.record(&SETTINGS, false, t0 + Duration::from_secs(1), answered), Transition::None);
        for _ in 0..3 {
            assert_eq!(b.record(&SETTINGS, true, t0, t0 + Duration::from_secs(3)), Transition::None);
        }
        assert_eq!(
            b.admit(&SETTINGS, t0 + Duration::from_secs(3)),
            Admission::Call,
            "the webhook answers: keep calling"
        );
        // Calls made after the answer still count.
        let late = answered + Duration::from_millis(1);
        for _ in 0..2 {
            assert_eq!(b.record(&SETTINGS, true, late, late + Duration::from_secs(3)), Transition::None);
        }
        assert_eq!(b.record(&SETTINGS, true, late, late + Duration::from_secs(3)), Transition::Opened);
    }

    #[test]
    fn threshold_zero_disables_it() {
        let off = BreakerSettings { threshold: 0, cooldown: COOLDOWN };
        let mut b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.record(&off, true, t0, t0), Transition::None);
        }
        assert_eq!(b.admit(&off, t0), Admission::Call);
    }
}
