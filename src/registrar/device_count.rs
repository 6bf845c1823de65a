//! Hosting mode: how many distinct devices (user parts) each realm has registered, across
//! every SBC of the cluster. An account's devices are those of its realm plus those of the
//! sub-domains that fall back to it (`x.<realm>` without an account of its own), so a tenant
//! cannot pass its limit by spreading devices over made-up sub-domains.
//!
//! The Node code ran `ZSCAN active-user MATCH *<realm>` over the whole set for every REGISTER.
//! Here one `ZRANGEBYSCORE active-user <now> +inf` builds a snapshot of all realms, reused for
//! `max_age` (a few seconds). Registrations made by this process in the meantime are added to
//! the snapshot at once, so its own burst of REGISTERs cannot overshoot a limit; other SBCs'
//! registrations show up at the next refresh.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::accounts::parent_domain;
use super::bindings;
use crate::store::redis::{run, RedisPool};
use crate::store::StoreError;

struct Snapshot {
    taken: Instant,
    /// Lower-cased realm → distinct user parts.
    users: HashMap<String, HashSet<String>>,
    /// Lower-cased realm → its direct sub-domains that have registrations: the realms whose
    /// REGISTERs may fall back to the realm's account (`accounts::parent_domain`).
    children: HashMap<String, HashSet<String>>,
}

impl Snapshot {
    fn new(members: &[String]) -> Snapshot {
        let mut s = Snapshot { taken: Instant::now(), users: HashMap::new(), children: HashMap::new() };
        for m in members {
            if let Some((user, realm)) = crate::store::keys::aor_of_member(m).and_then(|aor| aor.rsplit_once('@')) {
                s.add(&realm.to_ascii_lowercase(), user);
            }
        }
        s
    }

    fn add(&mut self, realm: &str, user: &str) {
        if !self.users.contains_key(realm) {
            if let Some(parent) = parent_domain(realm) {
                self.children.entry(parent.to_string()).or_default().insert(realm.to_string());
            }
        }
        self.users.entry(realm.to_string()).or_default().insert(user.to_string());
    }
}

/// One realm's count, and whether the asking device is part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmCount {
    /// Lower-cased.
    pub realm: String,
    pub devices: usize,
    pub includes_user: bool,
}

/// Shared by the triage thread. A `Mutex` rather than a role with a channel: the state is a
/// small cache read in the middle of a request, and the lock is also what makes a stale
/// snapshot be refreshed once while other readers wait for the result instead of all running
/// the same Redis query. It is never held across a MySQL or webhook call.
pub struct DeviceCounter {
    max_age: Duration,
    snapshot: Mutex<Option<Snapshot>>,
}

impl DeviceCounter {
    pub fn new(max_age: Duration) -> DeviceCounter {
        DeviceCounter { max_age, snapshot: Mutex::new(None) }
    }

    /// The counts of `realm` and of each of its direct sub-domains with registrations
    /// (`realm` first, even when it has none), with `includes_user` set where
    /// `asking_realm`/`asking_user` is registered. Which sub-domains belong to the same
    /// account is for the caller to decide (a sub-domain may have an account of its own).
    pub fn count_under(
        &self,
        redis: &RedisPool,
        realm: &str,
        asking: (&str, &str),
        now_ms: u64,
    ) -> Result<Vec<RealmCount>, StoreError> {
        // A thread that panicked while holding the lock left at worst a stale snapshot.
        let mut guard = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = guard.as_ref().is_some_and(|s| s.taken.elapsed() < self.max_age);
        if !fresh {
            let members = run(redis, |conn| bindings::active_members(conn, now_ms))?;
            *guard = Some(Snapshot::new(&members));
        }
        let Some(snapshot) = guard.as_ref() else { return Ok(Vec::new()) };
        let realm = realm.to_ascii_lowercase();
        let (asking_realm, asking_user) = (asking.0.to_ascii_lowercase(), asking.1);
        let count = |r: &str| {
            let users = snapshot.users.get(r);
            RealmCount {
                realm: r.to_string(),
                devices: users.map_or(0, HashSet::len),
                includes_user: r == asking_realm && users.is_some_and(|u| u.contains(asking_user)),
            }
        };
        let mut out = vec![count(&realm)];
        if let Some(children) = snapshot.children.get(&realm) {
            out.extend(children.iter().map(|c| count(c)));
        }
        Ok(out)
    }

    /// Counts a registration this process just stored, until the next refresh sees it.
    pub fn note_registered(&self, realm: &str, user: &str) {
        let mut guard = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = guard.as_mut() {
            s.add(&realm.to_ascii_lowercase(), user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_grouped_by_exact_realm_with_distinct_users_and_sub_domains_indexed() {
        let members: Vec<String> = [
            "user:alice@a.org",
            "user:bob@A.org",
            "user:alice@sub.a.org",
            "user:carol@xa.org",
            "user:we@ird@a.org",
            "user:alice@a.org",
            "user:dan@deep.sub.a.org",
            "garbage",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = Snapshot::new(&members);
        assert_eq!(s.users["a.org"].len(), 3);
        assert!(s.users["a.org"].contains("we@ird"));
        assert_eq!(s.users["sub.a.org"].len(), 1);
        assert_eq!(s.users["xa.org"].len(), 1);
        assert_eq!(s.users.len(), 4);
        // only direct sub-domains fall back to an account, as accounts::account_by_realm does
        assert_eq!(s.children["a.org"], HashSet::from(["sub.a.org".to_string()]));
        assert_eq!(s.children["sub.a.org"], HashSet::from(["deep.sub.a.org".to_string()]));
        assert!(!s.children.contains_key("org"), "two-label realms have no parent");
    }

    #[test]
    fn a_noted_registration_of_a_new_sub_domain_is_indexed_under_its_parent() {
        let mut s = Snapshot::new(&["user:alice@a.org".to_string()]);
        s.add("x.a.org", "mallory");
        s.add("x.a.org", "mallory2");
        assert_eq!(s.children["a.org"], HashSet::from(["x.a.org".to_string()]));
        assert_eq!(s.users["x.a.org"].len(), 2);
    }
}
