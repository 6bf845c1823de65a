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

use std::collections::HashMap;
use std::sync::Mutex;
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

#[derive(Debug, Default)]
struct AccountState {
    timeouts_in_a_row: u32,
    /// Set while open; also pushed forward while a probe runs.
    open_until: Option<Instant>,
    /// When the webhook last answered: a timeout of a call started before that is stale.
    answered_at: Option<Instant>,
}

impl AccountState {
    fn healthy(&self) -> bool {
        self.timeouts_in_a_row == 0 && self.open_until.is_none()
    }
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

/// Accounts whose webhook was called (healthy ones are forgotten first when the map is full).
pub struct HookBreaker {
    settings: BreakerSettings,
    accounts: Mutex<HashMap<String, AccountState>>,
}

/// More accounts than this timing out at once means the network, not the accounts: the map is
/// cleared rather than grown.
const MAX_TRACKED: usize = 10_000;

impl HookBreaker {
    pub fn new(settings: BreakerSettings) -> HookBreaker {
        HookBreaker { settings, accounts: Mutex::new(HashMap::new()) }
    }

    /// The accounts whose breaker is open, sorted by account sid.
    pub fn open(&self, now: Instant) -> Vec<OpenBreaker> {
        let accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let mut open: Vec<OpenBreaker> = accounts
            .iter()
            .filter_map(|(sid, state)| {
                let until = state.open_until?;
                Some(OpenBreaker {
                    account_sid: sid.clone(),
                    timeouts: state.timeouts_in_a_row,
                    retry_in: until.saturating_duration_since(now),
                })
            })
            .collect();
        open.sort_by(|a, b| a.account_sid.cmp(&b.account_sid));
        open
    }

    pub fn admit(&self, account_sid: &str, now: Instant) -> Admission {
        if self.settings.threshold == 0 {
            return Admission::Call;
        }
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = accounts.get_mut(account_sid) else {
            return Admission::Call;
        };
        match state.open_until {
            Some(until) if now < until => Admission::Refuse { retry_after: until - now },
            Some(_) => {
                // Half open: this call is the probe; the others wait for its outcome.
                state.open_until = Some(now + self.settings.cooldown);
                Admission::Call
            }
            None => Admission::Call,
        }
    }

    /// Records how a call that [`admit`](Self::admit) let through at `started` ended at `now`.
    pub fn record(&self, account_sid: &str, timed_out: bool, started: Instant, now: Instant) -> Transition {
        if self.settings.threshold == 0 {
            return Transition::None;
        }
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if !accounts.contains_key(account_sid) && accounts.len() >= MAX_TRACKED {
            accounts.retain(|_, state| !state.healthy());
            if accounts.len() >= MAX_TRACKED {
                accounts.clear();
            }
        }
        if !timed_out {
            let state = accounts.entry(account_sid.to_string()).or_default();
            let was_open = state.open_until.is_some();
            *state = AccountState { answered_at: Some(now), ..AccountState::default() };
            return if was_open { Transition::Closed } else { Transition::None };
        }
        let state = accounts.entry(account_sid.to_string()).or_default();
        if state.answered_at.is_some_and(|answered| answered >= started) {
            // The webhook answered since this call went out: it says nothing about now.
            return Transition::None;
        }
        state.timeouts_in_a_row = state.timeouts_in_a_row.saturating_add(1);
        if state.timeouts_in_a_row < self.settings.threshold {
            return Transition::None;
        }
        let was_open = state.open_until.is_some();
        state.open_until = Some(now + self.settings.cooldown);
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

    fn breaker() -> HookBreaker {
        HookBreaker::new(BreakerSettings { threshold: 3, cooldown: COOLDOWN })
    }

    #[test]
    fn three_timeouts_in_a_row_open_it_for_the_cooldown() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit("a1", t0), Admission::Call);
            assert_eq!(b.record("a1", true, t0, t0), Transition::None);
        }
        assert_eq!(b.record("a1", true, t0, t0), Transition::Opened);
        assert_eq!(
            b.admit("a1", t0 + Duration::from_secs(4)),
            Admission::Refuse { retry_after: COOLDOWN - Duration::from_secs(4) }
        );
        assert_eq!(b.admit("a2", t0), Admission::Call, "other accounts are not affected");
    }

    #[test]
    fn open_breakers_are_listed_until_the_webhook_answers() {
        let b = breaker();
        let t0 = Instant::now();
        assert!(b.open(t0).is_empty());
        for _ in 0..3 {
            b.record("a2", true, t0, t0);
        }
        b.record("a1", true, t0, t0);
        let open = b.open(t0 + Duration::from_secs(4));
        assert_eq!(
            open,
            vec![OpenBreaker { account_sid: "a2".into(), timeouts: 3, retry_in: COOLDOWN - Duration::from_secs(4) }]
        );
        b.record("a2", false, t0, t0 + COOLDOWN);
        assert!(b.open(t0 + COOLDOWN).is_empty());
    }

    #[test]
    fn an_answer_in_between_starts_the_count_again() {
        let b = breaker();
        let t0 = Instant::now();
        b.record("a1", true, t0, t0);
        b.record("a1", true, t0, t0);
        assert_eq!(b.record("a1", false, t0, t0), Transition::None);
        assert_eq!(b.record("a1", true, t0, t0), Transition::None);
        assert_eq!(b.admit("a1", t0), Admission::Call);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_outcome_decides() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record("a1", true, t0, t0);
        }
        let later = t0 + COOLDOWN;
        assert_eq!(b.admit("a1", later), Admission::Call, "the probe");
        assert!(matches!(b.admit("a1", later), Admission::Refuse { .. }), "only one probe at a time");
        assert_eq!(b.record("a1", true, later, later), Transition::StillOpen);
        assert!(matches!(b.admit("a1", later + Duration::from_secs(1)), Admission::Refuse { .. }));

        let again = later + COOLDOWN;
        assert_eq!(b.admit("a1", again), Admission::Call);
        assert_eq!(b.record("a1", false, again, again), Transition::Closed);
        assert_eq!(b.admit("a1", again), Admission::Call);
        assert_eq!(b.record("a1", true, again, again), Transition::None, "closed: counting from zero");
    }

    #[test]
    fn timeouts_of_calls_made_before_the_webhook_answered_again_do_not_open_it() {
        // A hang: three calls go out; it ends; a call made after it is answered; then the three
        // calls made during the hang time out.
        let b = breaker();
        let t0 = Instant::now();
        let answered = t0 + Duration::from_millis(1200);
        assert_eq!(b.record("a1", false, t0 + Duration::from_secs(1), answered), Transition::None);
        for _ in 0..3 {
            assert_eq!(b.record("a1", true, t0, t0 + Duration::from_secs(3)), Transition::None);
        }
        assert_eq!(b.admit("a1", t0 + Duration::from_secs(3)), Admission::Call, "the webhook answers: keep calling");
        // Calls made after the answer still count.
        let late = answered + Duration::from_millis(1);
        for _ in 0..2 {
            assert_eq!(b.record("a1", true, late, late + Duration::from_secs(3)), Transition::None);
        }
        assert_eq!(b.record("a1", true, late, late + Duration::from_secs(3)), Transition::Opened);
    }

    #[test]
    fn healthy_accounts_are_forgotten_before_the_ones_that_time_out() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record("hanging", true, t0, t0);
        }
        for i in 0..MAX_TRACKED {
            b.record(&format!("ok{i}"), false, t0, t0);
        }
        assert!(matches!(b.admit("hanging", t0), Admission::Refuse { .. }), "still open");
        assert!(b.accounts.lock().unwrap().len() <= MAX_TRACKED);
    }

    #[test]
    fn threshold_zero_disables_it() {
        let b = HookBreaker::new(BreakerSettings { threshold: 0, cooldown: COOLDOWN });
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.record("a1", true, t0, t0), Transition::None);
        }
        assert_eq!(b.admit("a1", t0), Admission::Call);
    }
}
