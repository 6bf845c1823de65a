//! Hosting mode: how many distinct devices (user parts) each realm has registered, across
//! every SBC of the cluster.
//!
//! The Node code ran `ZSCAN active-user MATCH *<realm>` over the whole set for every REGISTER.
//! Here one `ZRANGEBYSCORE active-user <now> +inf` builds a snapshot of all realms, reused for
//! `max_age` (a few seconds). Registrations made by this process in the meantime are added to
//! the snapshot at once, so its own burst of REGISTERs cannot overshoot a limit; other SBCs'
//! registrations show up at the next refresh.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::bindings;
use crate::store::redis::{run, RedisPool};
use crate::store::StoreError;

struct Snapshot {
    taken: Instant,
    /// Lower-cased realm → distinct user parts.
    users: HashMap<String, HashSet<String>>,
}

/// The realm's count and whether the asking user is part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealmCount {
    pub devices: usize,
    pub includes_user: bool,
}

/// Shared by all auth workers. A `Mutex` rather than a role with a channel: the state is a
/// small cache that each worker reads in the middle of its own request, and the lock is
/// also what makes a stale snapshot be refreshed by one worker while the others wait for the
/// result instead of all running the same Redis query. It is never held across a webhook call.
pub struct DeviceCounter {
    max_age: Duration,
    snapshot: Mutex<Option<Snapshot>>,
}

impl DeviceCounter {
    pub fn new(max_age: Duration) -> DeviceCounter {
        DeviceCounter { max_age, snapshot: Mutex::new(None) }
    }

    pub fn count(&self, redis: &RedisPool, realm: &str, user: &str, now_ms: u64) -> Result<RealmCount, StoreError> {
        // A worker that panicked while holding the lock left at worst a stale snapshot.
        let mut guard = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = guard.as_ref().is_some_and(|s| s.taken.elapsed() < self.max_age);
        if !fresh {
            let members = run(redis, |conn| bindings::active_members(conn, now_ms))?;
            *guard = Some(Snapshot { taken: Instant::now(), users: users_by_realm(&members) });
        }
        let users = guard.as_ref().and_then(|s| s.users.get(&realm.to_ascii_lowercase()));
        Ok(RealmCount {
            devices: users.map_or(0, HashSet::len),
            includes_user: users.is_some_and(|u| u.contains(user)),
        })
    }

    /// Counts a registration this process just stored, until the next refresh sees it.
    pub fn note_registered(&self, realm: &str, user: &str) {
        let mut guard = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = guard.as_mut() {
            s.users.entry(realm.to_ascii_lowercase()).or_default().insert(user.to_string());
        }
    }
}

/// `user:<user>@<realm>` members → realm → user parts. The user part is everything before
/// the last `@` (the Node regex `^(.*)@<realm>$`), the realm matched exactly (the Node
/// `*<realm>` pattern also counted `sub.<realm>` and `x<realm>`).
fn users_by_realm(members: &[String]) -> HashMap<String, HashSet<String>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for m in members {
        if let Some((user, realm)) = m.strip_prefix("user:").and_then(|aor| aor.rsplit_once('@')) {
            out.entry(realm.to_ascii_lowercase()).or_default().insert(user.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_grouped_by_exact_realm_with_distinct_users() {
        let members: Vec<String> = [
            "user:alice@a.org",
            "user:bob@A.org",
            "user:alice@sub.a.org",
            "user:carol@xa.org",
            "user:we@ird@a.org",
            "user:alice@a.org",
            "garbage",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let m = users_by_realm(&members);
        assert_eq!(m["a.org"].len(), 3);
        assert!(m["a.org"].contains("we@ird"));
        assert_eq!(m["sub.a.org"].len(), 1);
        assert_eq!(m["xa.org"].len(), 1);
        assert_eq!(m.len(), 3);
    }
}
