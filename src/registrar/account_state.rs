//! What the registrar remembers about each account between REGISTERs, in one table.
//!
//! Per account: its webhook's circuit breaker (`hook_breaker.rs`) and health (failing or not,
//! so that a dead webhook is logged once per change, not per REGISTER), its device limit read
//! from MySQL (hosting mode, reused for the account cache's ttl), and when its last
//! `account-device-limit` alert went out. These used to be a table each, each bounded and
//! evicting in its own way, and the webhook's health was kept twice (the breaker and a health
//! set each logged the same recovery). Now there is one entry per account, one bound
//! ([`MAX_ACCOUNTS`]), one eviction rule (least recently used out, `lru.rs`) and one lock, held
//! for a map operation only — never across MySQL, Redis or a webhook call.
//!
//! Keys are account sids, which come from MySQL: a REGISTER reaches this table only once its
//! realm resolved to an account, so a device cannot make up new keys (made-up realms are the
//! account cache's business, `account_cache.rs`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::hook_breaker::{Admission, Breaker, BreakerSettings, OpenBreaker, Transition};
use super::lru::Lru;

/// Accounts remembered. Keys are account sids from MySQL, so the table only ever holds
/// accounts that were in use; the bound is a backstop above the active accounts of any
/// platform we know (the tables this replaces held 10,000 each), at a few hundred bytes an
/// entry a few MB at most. An account whose devices keep registering is used on every REGISTER,
/// so what goes when it is full is the state of the account idle for longest: at worst one
/// alert more, or a breaker that counts its timeouts from zero again.
pub const MAX_ACCOUNTS: usize = 16_384;

/// How a webhook call ended, as far as this table cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOutcome {
    /// An HTTP 200 with a verdict (granted or denied).
    Answered,
    /// Any other failure: an error status, a refused connection, an unreadable answer.
    Failed,
    /// No answer within the webhook timeout: the only failure the breaker counts.
    TimedOut,
}

/// The webhook's health after a call, for the log: the first failure is logged at warn,
/// repeats at debug, the first success after failures at info. (Every failure still raises its
/// alert: InfluxDB is where an operator counts them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookHealth {
    /// It worked, as before.
    Working,
    /// It worked after failing.
    Recovered,
    /// It failed after working (or on its first call).
    Failing,
    /// It failed, as before.
    StillFailing,
}

/// What a webhook call's outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookNews {
    pub breaker: Transition,
    pub health: HookHealth,
}

impl HookNews {
    /// Whether the breaker's closing needs a line of its own. Not when the webhook recovered:
    /// one recovery is one line, and the health's names the webhook. Only when a fast failure
    /// (an error status, a refused connection) closed it: only timeouts hold workers.
    pub fn closed_without_recovery(&self) -> bool {
        self.breaker == Transition::Closed && self.health != HookHealth::Recovered
    }
}

#[derive(Debug, Default)]
struct AccountState {
    breaker: Breaker,
    /// The webhook failed last time it was called.
    hook_failing: bool,
    /// The device limit, and when it was read.
    device_limit: Option<(Instant, u64)>,
    /// When the last `account-device-limit` alert went out.
    device_limit_alert: Option<Instant>,
}

/// The table (see the module documentation). Shared by the triage thread (device limits) and
/// the auth workers (webhooks).
pub struct AccountStates {
    breaker: BreakerSettings,
    /// How long a device limit is reused; zero: read every time.
    limit_ttl: Duration,
    /// How often one account's `account-device-limit` alert may go out.
    alert_interval: Duration,
    table: Mutex<Lru<AccountState>>,
}

impl AccountStates {
    pub fn new(breaker: BreakerSettings, limit_ttl: Duration, alert_interval: Duration) -> AccountStates {
        AccountStates::with_capacity(breaker, limit_ttl, alert_interval, MAX_ACCOUNTS)
    }

    fn with_capacity(
        breaker: BreakerSettings,
        limit_ttl: Duration,
        alert_interval: Duration,
        capacity: usize,
    ) -> AccountStates {
        AccountStates { breaker, limit_ttl, alert_interval, table: Mutex::new(Lru::new(capacity)) }
    }

    fn with_table<T>(&self, f: impl FnOnce(&mut Lru<AccountState>) -> T) -> T {
        // A thread that panicked while holding the lock left at worst one account's state
        // half updated.
        f(&mut self.table.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether the account's webhook may be called now (its breaker is not open).
    pub fn admit_webhook(&self, account_sid: &str, now: Instant) -> Admission {
        if self.breaker.threshold == 0 {
            return Admission::Call;
        }
        self.with_table(|t| match t.get_mut(account_sid) {
            Some(state) => state.breaker.admit(&self.breaker, now),
            None => Admission::Call,
        })
    }

    /// Records how a webhook call that started at `started` ended at `now`.
    pub fn webhook_outcome(&self, account_sid: &str, outcome: HookOutcome, started: Instant, now: Instant) -> HookNews {
        self.with_table(|t| {
            let state = t.entry(account_sid);
            let timed_out = outcome == HookOutcome::TimedOut;
            let breaker = state.breaker.record(&self.breaker, timed_out, started, now);
            let was_failing = std::mem::replace(&mut state.hook_failing, outcome != HookOutcome::Answered);
            let health = match (was_failing, state.hook_failing) {
                (false, false) => HookHealth::Working,
                (true, false) => HookHealth::Recovered,
                (false, true) => HookHealth::Failing,
                (true, true) => HookHealth::StillFailing,
            };
            HookNews { breaker, health }
        })
    }

    /// The accounts whose breaker is open, sorted by account sid (for `sbcctl status`).
    pub fn open_breakers(&self, now: Instant) -> Vec<OpenBreaker> {
        let mut open: Vec<OpenBreaker> = self.with_table(|t| {
            t.iter()
                .filter_map(|(sid, state)| {
                    let (timeouts, retry_in) = state.breaker.open(now)?;
                    Some(OpenBreaker { account_sid: sid.to_string(), timeouts, retry_in })
                })
                .collect()
        });
        open.sort_by(|a, b| a.account_sid.cmp(&b.account_sid));
        open
    }

    /// The account's device limit, when one read less than the ttl ago is known.
    pub fn device_limit(&self, account_sid: &str, now: Instant) -> Option<u64> {
        if self.limit_ttl.is_zero() {
            return None;
        }
        self.with_table(|t| {
            let (read, limit) = t.get_mut(account_sid)?.device_limit?;
            (now.saturating_duration_since(read) < self.limit_ttl).then_some(limit)
        })
    }

    pub fn remember_device_limit(&self, account_sid: &str, limit: u64, now: Instant) {
        if self.limit_ttl.is_zero() {
            return;
        }
        self.with_table(|t| t.entry(account_sid).device_limit = Some((now, limit)));
    }

    /// Whether an `account-device-limit` alert for the account may go out at `now` (at most
    /// one per interval: a device retrying every few seconds must not write an InfluxDB point
    /// and a warn line each time); if so, it is noted.
    pub fn admit_device_limit_alert(&self, account_sid: &str, now: Instant) -> bool {
        self.with_table(|t| {
            let last = &mut t.entry(account_sid).device_limit_alert;
            if last.is_some_and(|at| now.saturating_duration_since(at) < self.alert_interval) {
                return false;
            }
            *last = Some(now);
            true
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.with_table(|t| t.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);
    const BREAKER: BreakerSettings = BreakerSettings { threshold: 3, cooldown: COOLDOWN };
    const MINUTE: Duration = Duration::from_secs(60);

    fn states() -> AccountStates {
        AccountStates::new(BREAKER, MINUTE, MINUTE)
    }

    fn time_out(s: &AccountStates, sid: &str, at: Instant) -> HookNews {
        s.webhook_outcome(sid, HookOutcome::TimedOut, at, at)
    }

    #[test]
    fn one_accounts_breaker_leaves_the_others_alone() {
        let s = states();
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(time_out(&s, "a1", t0).breaker, Transition::None);
        }
        assert_eq!(time_out(&s, "a1", t0).breaker, Transition::Opened);
        assert!(matches!(s.admit_webhook("a1", t0 + Duration::from_secs(4)), Admission::Refuse { .. }));
        assert_eq!(s.admit_webhook("a2", t0), Admission::Call, "other accounts are not affected");
        assert_eq!(s.len(), 1, "admitting a call remembers nothing");
    }

    #[test]
    fn open_breakers_are_listed_until_the_webhook_answers() {
        let s = states();
        let t0 = Instant::now();
        assert!(s.open_breakers(t0).is_empty());
        for _ in 0..3 {
            time_out(&s, "a2", t0);
        }
        time_out(&s, "a1", t0);
        assert_eq!(
            s.open_breakers(t0 + Duration::from_secs(4)),
            vec![OpenBreaker { account_sid: "a2".into(), timeouts: 3, retry_in: COOLDOWN - Duration::from_secs(4) }]
        );
        s.webhook_outcome("a2", HookOutcome::Answered, t0, t0 + COOLDOWN);
        assert!(s.open_breakers(t0 + COOLDOWN).is_empty());
    }

    #[test]
    fn a_failing_webhook_is_news_once_until_it_works_again() {
        let s = states();
        let t0 = Instant::now();
        let call = |sid: &str, outcome| s.webhook_outcome(sid, outcome, t0, t0).health;
        assert_eq!(call("a1", HookOutcome::Answered), HookHealth::Working, "a working webhook is no news");
        assert_eq!(call("a1", HookOutcome::Failed), HookHealth::Failing, "first failure is news");
        assert_eq!(call("a1", HookOutcome::TimedOut), HookHealth::StillFailing, "repeats are not");
        assert_eq!(call("a2", HookOutcome::Failed), HookHealth::Failing, "per account");
        assert_eq!(call("a1", HookOutcome::Answered), HookHealth::Recovered, "recovery is news");
        assert_eq!(call("a1", HookOutcome::Answered), HookHealth::Working);
        assert_eq!(call("a1", HookOutcome::Failed), HookHealth::Failing, "and a new failure after that is news again");
    }

    #[test]
    fn a_recovery_after_the_breaker_opened_is_one_change_of_health() {
        let s = states();
        let t0 = Instant::now();
        for _ in 0..3 {
            time_out(&s, "a1", t0);
        }
        let later = t0 + COOLDOWN;
        assert_eq!(s.admit_webhook("a1", later), Admission::Call, "the probe");
        let news = s.webhook_outcome("a1", HookOutcome::Answered, later, later);
        assert_eq!(news, HookNews { breaker: Transition::Closed, health: HookHealth::Recovered });
        assert!(!news.closed_without_recovery(), "the recovery line alone tells it");
        // A fast error closes the breaker (only timeouts hold workers) but is no recovery.
        let hang = later + Duration::from_millis(1);
        for _ in 0..3 {
            time_out(&s, "a1", hang);
        }
        let again = hang + COOLDOWN;
        s.admit_webhook("a1", again);
        let news = s.webhook_outcome("a1", HookOutcome::Failed, again, again);
        assert_eq!(news, HookNews { breaker: Transition::Closed, health: HookHealth::StillFailing });
        assert!(news.closed_without_recovery());
    }

    #[test]
    fn the_device_limit_is_reused_within_the_ttl_and_zero_disables_it() {
        let s = states();
        let t0 = Instant::now();
        assert_eq!(s.device_limit("a1", t0), None);
        s.remember_device_limit("a1", 5, t0);
        assert_eq!(s.device_limit("a1", t0 + Duration::from_secs(59)), Some(5));
        assert_eq!(s.device_limit("a1", t0 + MINUTE), None, "read again after the ttl");
        let off = AccountStates::new(BREAKER, Duration::ZERO, MINUTE);
        off.remember_device_limit("a1", 5, t0);
        assert_eq!(off.device_limit("a1", t0), None);
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn the_limiter_admits_one_device_limit_alert_per_account_and_interval() {
        let s = states();
        let t0 = Instant::now();
        assert!(s.admit_device_limit_alert("a", t0));
        assert!(!s.admit_device_limit_alert("a", t0 + Duration::from_secs(59)));
        assert!(s.admit_device_limit_alert("b", t0 + Duration::from_secs(1)));
        assert!(s.admit_device_limit_alert("a", t0 + MINUTE));
    }

    #[test]
    fn a_flood_of_distinct_accounts_stays_within_the_bound() {
        let s = states();
        let t0 = Instant::now();
        for i in 0..(2 * MAX_ACCOUNTS) {
            let sid = format!("sid{i}");
            s.webhook_outcome(&sid, HookOutcome::Answered, t0, t0);
            s.remember_device_limit(&sid, 1, t0);
            s.admit_device_limit_alert(&sid, t0);
        }
        assert_eq!(s.len(), MAX_ACCOUNTS);
        let last = format!("sid{}", 2 * MAX_ACCOUNTS - 1);
        assert_eq!(s.device_limit(&last, t0), Some(1), "the newest are kept");
        assert_eq!(s.device_limit("sid0", t0), None, "the oldest went");
    }

    #[test]
    fn the_account_used_least_recently_goes_first_whatever_its_state() {
        let s = AccountStates::with_capacity(BREAKER, MINUTE, MINUTE, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            time_out(&s, "hanging", t0);
        }
        s.remember_device_limit("b", 7, t0);
        s.remember_device_limit("c", 8, t0);
        // The hanging account's devices keep coming: each REGISTER uses its entry.
        assert!(matches!(s.admit_webhook("hanging", t0), Admission::Refuse { .. }));
        s.remember_device_limit("d", 9, t0);
        assert_eq!(s.device_limit("b", t0), None, "b was used least recently");
        assert!(matches!(s.admit_webhook("hanging", t0), Admission::Refuse { .. }), "still open");
        // An account left alone goes, open breaker or not: its next timeouts count again.
        s.remember_device_limit("e", 1, t0);
        s.remember_device_limit("f", 1, t0);
        s.remember_device_limit("g", 1, t0);
        assert_eq!(s.admit_webhook("hanging", t0), Admission::Call);
        assert_eq!(s.len(), 3);
    }
}
