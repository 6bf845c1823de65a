//! Logs a store going away and coming back once per change, not once per REGISTER: during
//! a Redis outage thousands of devices re-register, and each still gets its 503.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use log::{debug, info, warn};

use crate::store::StoreError;

pub struct StoreHealth {
    name: &'static str,
    down: AtomicBool,
}

impl StoreHealth {
    pub const fn new(name: &'static str) -> StoreHealth {
        StoreHealth { name, down: AtomicBool::new(false) }
    }

    pub fn failed(&self, what: &str, error: &StoreError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            warn!("registrar: {} unreachable, answering REGISTER with 503 while it lasts: {what}: {error}", self.name);
        } else {
            debug!("registrar: {} still unreachable: {what}: {error}", self.name);
        }
    }

    pub fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            info!("registrar: {} reachable again", self.name);
        }
    }
}

/// The same for each account's registration webhook: the first failure of an account's
/// webhook is logged at warn, repeats at debug, and the first success after failures at info.
/// (Every failure still raises its alert: InfluxDB is where an operator counts them.)
pub struct HookHealth {
    /// Accounts whose webhook failed last time. Bounded: when full it is cleared, which at
    /// worst logs a failing webhook at warn once more.
    failing: Mutex<HashSet<String>>,
}

const MAX_TRACKED_HOOKS: usize = 10_000;

impl HookHealth {
    pub fn new() -> HookHealth {
        HookHealth { failing: Mutex::new(HashSet::new()) }
    }

    /// Whether this failure is news (the webhook of `account_sid` worked, or was never used).
    pub fn failed(&self, account_sid: &str) -> bool {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.contains(account_sid) {
            return false;
        }
        if failing.len() >= MAX_TRACKED_HOOKS {
            failing.clear();
        }
        failing.insert(account_sid.to_string())
    }

    /// Whether the webhook of `account_sid` was failing until now.
    pub fn succeeded(&self, account_sid: &str) -> bool {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        !failing.is_empty() && failing.remove(account_sid)
    }
}

impl Default for HookHealth {
    fn default() -> Self {
        HookHealth::new()
    }
}

#[cfg(test)]
mod hook_health_tests {
    use super::HookHealth;

    #[test]
    fn a_failing_webhook_is_news_once_until_it_works_again() {
        let h = HookHealth::new();
        assert!(!h.succeeded("a1"), "a working webhook is no news");
        assert!(h.failed("a1"), "first failure is news");
        assert!(!h.failed("a1"), "repeats are not");
        assert!(h.failed("a2"), "per account");
        assert!(h.succeeded("a1"), "recovery is news");
        assert!(!h.succeeded("a1"));
        assert!(h.failed("a1"), "and a new failure after that is news again");
    }
}
