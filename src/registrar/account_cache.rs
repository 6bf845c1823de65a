//! A short-lived cache of MySQL lookups: accounts by realm.
//!
//! Every REGISTER needs the account of its realm, twice per registration (challenge, then the
//! authenticated retry). Without a cache that is MySQL round trips per device for data that
//! changes a few times a year; with it, a busy SBC asks MySQL about each realm at most once per
//! `ttl`. The price: deactivating an account takes effect within `ttl`. (The device limits of
//! hosting mode are cached as long, with the account's other state: `account_state.rs`.)
//!
//! Realms come from the To header, so an attacker chooses them. [`AccountCache`] therefore
//! keeps three tiers with bounds and eviction of their own, and a flood of made-up realms can
//! only ever evict made-up realms:
//!
//! * **known** — realms that are an account's own `sip_realm`: as many as there are accounts,
//!   whatever a device sends;
//! * **derived** — sub-domains that fell back to a parent's account (`x.<realm>`), and
//! * **unknown** — realms without an account: both bounded, oldest first out.
//!
//! A realm never seen before costs a MySQL lookup on the triage thread; such lookups are
//! limited to [`NEW_REALM_LOOKUPS_PER_SEC`] (a realm that was known once — an expired entry —
//! is always looked up again), so random realms can neither stall triage nor hammer MySQL. What
//! is refused by that limit gets `503` with `Retry-After` and is looked up on a later try.
//! Realms are compared case-insensitively (they are host names).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::accounts::Account;

/// Sub-domain and unknown realms remembered, each tier.
const MAX_STRANGERS: usize = 16_384;
/// Lookups per second of realms this cache has never held.
pub const NEW_REALM_LOOKUPS_PER_SEC: u32 = 50;

/// Accounts by realm, in tiers (see the module documentation). `Mutex` held only for a map
/// lookup or insert, never across MySQL.
pub struct AccountCache {
    ttl: Duration,
    state: Mutex<Tiers>,
}

#[derive(Default)]
struct Tiers {
    known: HashMap<String, (Instant, Account)>,
    derived: Bounded<Account>,
    unknown: Bounded<()>,
    /// New-realm lookups left in the current second, and when it started.
    lookups_left: u32,
    second_started: Option<Instant>,
}

/// What the cache knows about a realm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// A fresh answer: the account, or `None` for "no account has this realm".
    Fresh(Option<Account>),
    /// Nothing fresh, and a lookup may be made now.
    LookUp,
    /// Nothing fresh, and too many never-seen realms were looked up this second.
    Throttled,
}

impl AccountCache {
    /// A zero `ttl` disables the cache (every REGISTER looks its realm up; nothing is
    /// throttled).
    pub fn new(ttl: Duration) -> AccountCache {
        AccountCache { ttl, state: Mutex::new(Tiers::default()) }
    }

    pub fn get(&self, realm: &str) -> Cached {
        self.get_at(realm, Instant::now())
    }

    pub fn get_at(&self, realm: &str, now: Instant) -> Cached {
        if self.ttl.is_zero() {
            return Cached::LookUp;
        }
        let key = realm.to_ascii_lowercase();
        let mut t = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |at: Instant| now.saturating_duration_since(at) < self.ttl;
        if let Some((at, account)) = t.known.get(&key) {
            return if fresh(*at) { Cached::Fresh(Some(account.clone())) } else { Cached::LookUp };
        }
        if let Some((at, account)) = t.derived.get(&key) {
            return if fresh(at) { Cached::Fresh(Some(account.clone())) } else { Cached::LookUp };
        }
        if let Some((at, ())) = t.unknown.get(&key) {
            if fresh(at) {
                return Cached::Fresh(None);
            }
        }
        // Never held (or only as unknown): a lookup of a new realm, within the rate.
        if t.second_started.is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1)) {
            t.second_started = Some(now);
            t.lookups_left = NEW_REALM_LOOKUPS_PER_SEC;
        }
        if t.lookups_left == 0 {
            return Cached::Throttled;
        }
        t.lookups_left -= 1;
        Cached::LookUp
    }

    pub fn put(&self, realm: &str, found: Option<Account>) {
        self.put_at(realm, found, Instant::now());
    }

    pub fn put_at(&self, realm: &str, found: Option<Account>, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let key = realm.to_ascii_lowercase();
        let mut t = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match found {
            Some(account) if account.sip_realm.eq_ignore_ascii_case(realm) => {
                t.unknown.remove(&key);
                t.known.insert(key, (now, account));
            }
            Some(account) => {
                t.unknown.remove(&key);
                t.derived.insert(key, now, account);
            }
            None => {
                // A realm that had an account and lost it: not known any more.
                t.known.remove(&key);
                t.derived.remove(&key);
                t.unknown.insert(key, now, ());
            }
        }
    }

    /// Realms held, by tier (known, derived, unknown).
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize, usize) {
        let t = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (t.known.len(), t.derived.len(), t.unknown.len())
    }
}

/// A map of at most [`MAX_STRANGERS`] entries; when full, the oldest inserted goes.
struct Bounded<V> {
    entries: HashMap<String, (Instant, V)>,
    order: VecDeque<String>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Bounded { entries: HashMap::new(), order: VecDeque::new() }
    }
}

impl<V: Clone> Bounded<V> {
    fn get(&self, key: &str) -> Option<(Instant, V)> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: String, at: Instant, value: V) {
        if self.entries.insert(key.clone(), (at, value)).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > MAX_STRANGERS {
            let Some(oldest) = self.order.pop_front() else { break };
            self.entries.remove(&oldest);
        }
        // Keys removed out of order leave stale names in `order`: drop them now and then.
        if self.order.len() > 2 * MAX_STRANGERS {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(sid: &str, realm: &str) -> Account {
        Account {
            account_sid: sid.into(),
            sip_realm: realm.into(),
            is_active: true,
            webhook_secret: None,
            device_to_call_ratio: 5,
            hook: None,
        }
    }

    #[test]
    fn answers_within_the_ttl_including_unknown_realms_and_ignores_case() {
        let c = AccountCache::new(Duration::from_secs(60));
        assert_eq!(c.get("a.example.com"), Cached::LookUp);
        c.put("a.example.com", Some(account("s1", "a.example.com")));
        c.put("nowhere.example.com", None);
        assert_eq!(c.get("A.Example.COM"), Cached::Fresh(Some(account("s1", "a.example.com"))));
        assert_eq!(c.get("nowhere.example.com"), Cached::Fresh(None));
        assert_eq!(c.sizes(), (1, 0, 1));
    }

    #[test]
    fn expired_entries_are_looked_up_again_and_zero_ttl_disables() {
        let c = AccountCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        c.put_at("a.example.com", Some(account("s1", "a.example.com")), t0);
        assert_eq!(c.get_at("a.example.com", t0 + Duration::from_secs(6)), Cached::LookUp);
        let off = AccountCache::new(Duration::ZERO);
        off.put("a.example.com", Some(account("s1", "a.example.com")));
        assert_eq!(off.get("a.example.com"), Cached::LookUp);
    }

    #[test]
    fn a_flood_of_random_realms_never_evicts_a_known_account_and_is_bounded() {
        let c = AccountCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        c.put_at("real.example.com", Some(account("s1", "real.example.com")), t0);
        for i in 0..(3 * MAX_STRANGERS) {
            c.put_at(&format!("r{i}.example.com"), None, t0);
            c.put_at(&format!("x{i}.real.example.com"), Some(account("s1", "real.example.com")), t0);
        }
        let (known, derived, unknown) = c.sizes();
        assert_eq!(known, 1);
        assert!(derived <= MAX_STRANGERS && unknown <= MAX_STRANGERS, "{derived} {unknown}");
        assert_eq!(c.get_at("real.example.com", t0), Cached::Fresh(Some(account("s1", "real.example.com"))));
        // the newest strangers are still there, the oldest went
        let last = 3 * MAX_STRANGERS - 1;
        assert_eq!(c.get_at(&format!("r{last}.example.com"), t0), Cached::Fresh(None));
        assert_ne!(c.get_at("r0.example.com", t0), Cached::Fresh(None));
    }

    #[test]
    fn lookups_of_never_seen_realms_are_rate_limited_but_known_ones_never() {
        let c = AccountCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        c.put_at("real.example.com", Some(account("s1", "real.example.com")), t0);
        let later = t0 + Duration::from_secs(10);
        for i in 0..NEW_REALM_LOOKUPS_PER_SEC {
            assert_eq!(c.get_at(&format!("n{i}.example.com"), later), Cached::LookUp, "{i}");
        }
        assert_eq!(c.get_at("one-more.example.com", later), Cached::Throttled);
        // an expired known realm is looked up again, whatever the rate
        assert_eq!(c.get_at("real.example.com", later), Cached::LookUp);
        // the next second has a new allowance
        assert_eq!(c.get_at("one-more.example.com", later + Duration::from_secs(1)), Cached::LookUp);
    }
}
