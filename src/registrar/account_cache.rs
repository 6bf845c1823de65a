//! A short-lived cache of MySQL lookups: accounts by realm, device limits by account.
//!
//! Every REGISTER needs the account of its realm, twice per registration (challenge, then the
//! authenticated retry), and in hosting mode the account's device limit. Without a cache that
//! is MySQL round trips per device for data that changes a few times a year; with it, a busy
//! SBC asks MySQL about each realm (and each account's capacities) at most once per `ttl`.
//! Unknown realms are cached too (a scanner hammering random realms must not reach MySQL on
//! every packet). The price: deactivating an account or changing its plan takes effect
//! within `ttl`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::accounts::Account;

/// Accounts by realm (`None`: no account has that realm).
pub type AccountCache = TtlCache<Option<Account>>;

/// At most this many realms are remembered; when full, expired entries are dropped, and if
/// none has expired the whole cache is cleared (a flood of random realms cannot grow memory).
const MAX_ENTRIES: usize = 10_000;

/// Shared by the auth workers: a `Mutex` held only for a map lookup or insert, never across
/// MySQL.
pub struct TtlCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    /// A zero `ttl` disables the cache.
    pub fn new(ttl: Duration) -> TtlCache<V> {
        TtlCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// `Some(value)` when a fresh answer is cached (for accounts, possibly "no such account").
    pub fn get(&self, realm: &str) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(realm).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, a)| a.clone())
    }

    pub fn put(&self, realm: &str, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(realm) {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(realm.to_string(), (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(sid: &str) -> Account {
        Account {
            account_sid: sid.into(),
            sip_realm: "a.example.com".into(),
            is_active: true,
            webhook_secret: None,
            device_to_call_ratio: 5,
            hook: None,
        }
    }

    #[test]
    fn answers_within_the_ttl_including_unknown_realms() {
        let c = AccountCache::new(Duration::from_secs(60));
        assert_eq!(c.get("a.example.com"), None);
        c.put("a.example.com", Some(account("s1")));
        c.put("nowhere.example.com", None);
        assert_eq!(c.get("a.example.com"), Some(Some(account("s1"))));
        assert_eq!(c.get("nowhere.example.com"), Some(None));
    }

    #[test]
    fn expired_entries_are_misses_and_zero_ttl_disables() {
        let c = AccountCache::new(Duration::from_millis(1));
        c.put("a.example.com", Some(account("s1")));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("a.example.com"), None);
        let off: AccountCache = TtlCache::new(Duration::ZERO);
        off.put("a.example.com", Some(account("s1")));
        assert_eq!(off.get("a.example.com"), None);
    }

    #[test]
    fn a_flood_of_realms_does_not_grow_without_bound() {
        let c = AccountCache::new(Duration::from_secs(60));
        for i in 0..(MAX_ENTRIES + 10) {
            c.put(&format!("r{i}.example.com"), None);
        }
        assert!(c.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
