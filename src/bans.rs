//! The brute-force defence: sources whose authentications keep failing are banned for a while
//! (in the spirit of Kamailio's pike and htable modules).
//!
//! Every failed authentication (`403 Invalid credentials`, a forged nonce, …) is recorded
//! against the source IP with [`Bans::record_failure`]. The [`BanSettings::max_failures`]-th
//! failure within [`BanSettings::window`] of a source's first counted failure bans it for
//! [`BanSettings::ban`]; while banned, its REGISTERs are answered `403` at once by the caller,
//! without a webhook or MySQL call ([`Bans::banned`]). After `window` without reaching the
//! threshold the count starts again (a fixed window per source, starting at its first failure).
//!
//! Choices worth knowing:
//!
//! * A failure from a source that is already banned **does not extend the ban**: an attacker
//!   gains nothing by stopping, and a phone with a wrong password that retries every few
//!   seconds still gets a chance once the ban is over. Those failures are still counted
//!   (they show in `sbcctl bans`). After the ban ends the source starts from zero.
//! * IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) count as the IPv4 address. An IPv6
//!   source counts as its /64: one subscriber line or host gets a /64, and a guesser that
//!   rotates through the addresses of its own /64 is still one source.
//! * Sources inside [`BanSettings::exempt`] (`SBC_AUTH_BAN_EXEMPT`: an office NAT, a partner's
//!   gateways) are never counted or banned.
//! * Only failures the source provably made itself are recorded (the caller's rule): an answer
//!   to a nonce issued to this very source IP, or one over a connection.
//! * The table holds at most [`BanSettings::capacity`] sources. When a new source would
//!   exceed it, expired bans are dropped first; if none, the source with the oldest last
//!   failure that is *not* banned is forgotten; only when every entry is a ban in force does the
//!   ban that ends soonest go. Each of these is amortised O(1): two queues in the order entries
//!   were (re)queued, with stale items skipped and the queues compacted once at least half of
//!   them is stale. A flood of spoofed sources therefore costs neither memory nor time per call,
//!   and it cannot push a banned source out while there are unbanned ones to forget. The map
//!   uses the standard library's randomly keyed SipHash, so chosen addresses cannot make
//!   lookups slow either.
//!
//! The table is shared behind an `Arc` by the registrar's triage thread, its auth workers and
//! the CLI server; one mutex guards it (a poisoned one is recovered, never a panic).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::net::Cidr;

/// How the defence counts and bans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanSettings {
    /// Failures within [`window`](Self::window) that start a ban. Zero disables the defence.
    pub max_failures: u32,
    /// How long a source's failures are counted from its first one.
    pub window: Duration,
    /// How long a ban lasts.
    pub ban: Duration,
    /// Most sources tracked at once (zero is taken as one).
    pub capacity: usize,
    /// Sources never counted or banned.
    pub exempt: Vec<Cidr>,
}

impl Default for BanSettings {
    /// 10 failures within 60 s ban a source for 300 s; 65536 sources tracked.
    fn default() -> Self {
        BanSettings {
            max_failures: 10,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
            capacity: 65536,
            exempt: Vec::new(),
        }
    }
}

/// A source and its failures: a ban in force (from [`Bans::banned`], [`Bans::list`] and
/// [`Bans::record_failure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanEntry {
    /// The source, IPv4-mapped IPv6 shown as IPv4; for IPv6 the network address of its /64.
    pub ip: IpAddr,
    /// 32 for an IPv4 source, 64 for an IPv6 one.
    pub prefix_len: u8,
    /// Failures counted since its window started, those during the ban included.
    pub failures: u32,
    /// Until the ban ends.
    pub remaining: Duration,
}

/// The ban table. `Send + Sync`: share it behind an `Arc`.
pub struct Bans {
    settings: BanSettings,
    table: Mutex<Table>,
}

impl Bans {
    pub fn new(settings: BanSettings) -> Bans {
        Bans { settings, table: Mutex::new(Table::default()) }
    }

    /// The ban in force on `ip` at `now`, if any (the caller answers 403 at once, no
    /// webhook/MySQL call).
    pub fn banned(&self, ip: IpAddr, now: Instant) -> Option<BanEntry> {
        if self.disabled() {
            return None;
        }
        let ip = self.source_of(ip)?;
        let table = self.lock();
        let slot = table.entries.get(&ip)?;
        self.ban_in_force(ip, slot, now)
    }

    /// One failed authentication from `ip` (403 Invalid credentials, forged nonce, …). Returns
    /// `Some(entry)` exactly when this failure starts a ban (so the caller logs once and alerts
    /// once). A failure during a ban is counted but does not extend it.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> Option<BanEntry> {
        if self.disabled() {
            return None;
        }
        let ip = self.source_of(ip)?;
        let mut guard = self.lock();
        let table = &mut *guard;
        if !table.entries.contains_key(&ip) {
            table.make_room(self.capacity(), self.settings.ban, now);
        }
        let seq = table.next_seq();
        let slot = table.entries.entry(ip).or_insert(Slot { failures: 0, since: now, banned: false, seq });
        if slot.banned {
            if now.saturating_duration_since(slot.since) < self.settings.ban {
                slot.failures = slot.failures.saturating_add(1);
                return None;
            }
            // The ban is over: this failure is the first of a new window.
            *slot = Slot { failures: 0, since: now, banned: false, seq };
        } else if now.saturating_duration_since(slot.since) >= self.settings.window {
            slot.failures = 0;
            slot.since = now;
        }
        slot.seq = seq;
        slot.failures = slot.failures.saturating_add(1);
        let started = if slot.failures >= self.settings.max_failures {
            slot.banned = true;
            slot.since = now;
            table.banned.push_back((ip, seq));
            Some(BanEntry { ip, prefix_len: prefix_len(ip), failures: slot.failures, remaining: self.settings.ban })
        } else {
            table.counting.push_back((ip, seq));
            None
        };
        table.compact();
        started
    }

    /// Bans in force at `now`, longest remaining first (then by address).
    pub fn list(&self, now: Instant) -> Vec<BanEntry> {
        if self.disabled() {
            return Vec::new();
        }
        let table = self.lock();
        let mut bans: Vec<BanEntry> =
            table.entries.iter().filter_map(|(ip, slot)| self.ban_in_force(*ip, slot, now)).collect();
        bans.sort_by(|a, b| b.remaining.cmp(&a.remaining).then_with(|| a.ip.cmp(&b.ip)));
        bans
    }

    /// Lifts the ban on `ip` (and forgets its failures); false when none was in force.
    pub fn clear(&self, ip: IpAddr) -> bool {
        self.clear_at(ip, Instant::now())
    }

    /// [`clear`](Self::clear) with an explicit clock. The source's failures are forgotten
    /// whether or not a ban was in force.
    pub fn clear_at(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = source_key(ip);
        let mut table = self.lock();
        let Some(slot) = table.entries.remove(&ip) else {
            return false;
        };
        let lifted = self.ban_in_force(ip, &slot, now).is_some();
        table.compact();
        lifted
    }

    pub fn settings(&self) -> &BanSettings {
        &self.settings
    }

    /// Sources tracked now: counting failures or banned (expired bans included until they are
    /// dropped to make room). Never more than the capacity.
    pub fn tracked(&self) -> usize {
        self.lock().entries.len()
    }

    /// The table's key for `ip` (see [`source_key`]), or `None` when it is exempt.
    fn source_of(&self, ip: IpAddr) -> Option<IpAddr> {
        let ip = ip.to_canonical();
        (!self.settings.exempt.iter().any(|c| c.contains(ip))).then(|| source_key(ip))
    }

    fn disabled(&self) -> bool {
        self.settings.max_failures == 0
    }

    fn capacity(&self) -> usize {
        self.settings.capacity.max(1)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ban_in_force(&self, ip: IpAddr, slot: &Slot, now: Instant) -> Option<BanEntry> {
        if !slot.banned {
            return None;
        }
        let elapsed = now.saturating_duration_since(slot.since);
        let remaining = self.settings.ban.checked_sub(elapsed).filter(|r| !r.is_zero())?;
        Some(BanEntry { ip, prefix_len: prefix_len(ip), failures: slot.failures, remaining })
    }
}

/// What one source is: the IPv4 address, or the /64 of an IPv6 one (its network address).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

fn prefix_len(key: IpAddr) -> u8 {
    if key.is_ipv4() {
        32
    } else {
        64
    }
}

/// One tracked source.
#[derive(Debug, Clone, Copy)]
struct Slot {
    failures: u32,
    /// Start of the counting window, or of the ban once `banned`.
    since: Instant,
    banned: bool,
    /// Identifies the slot's one live queue item; items with another number are stale.
    seq: u64,
}

#[derive(Default)]
struct Table {
    entries: HashMap<IpAddr, Slot>,
    /// Unbanned sources, oldest last failure first.
    counting: VecDeque<(IpAddr, u64)>,
    /// Banned sources in the order their bans started, which (bans all lasting the same and
    /// never being extended) is the order they end.
    banned: VecDeque<(IpAddr, u64)>,
    seq: u64,
}

impl Table {
    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn is_live(&self, item: &(IpAddr, u64), banned: bool) -> bool {
        self.entries.get(&item.0).is_some_and(|slot| slot.seq == item.1 && slot.banned == banned)
    }

    /// Frees one place for a new source when the table is full.
    fn make_room(&mut self, capacity: usize, ban: Duration, now: Instant) {
        if self.entries.len() < capacity {
            return;
        }
        // Expired bans go first, every one that is due (they are at the front).
        while let Some(item) = self.banned.front().copied() {
            if self.is_live(&item, true) {
                let expired = self.entries.get(&item.0).is_some_and(|s| now.saturating_duration_since(s.since) >= ban);
                if !expired {
                    break;
                }
                self.entries.remove(&item.0);
            }
            self.banned.pop_front();
        }
        // Then the unbanned source that failed least recently, then the ban ending soonest.
        while self.entries.len() >= capacity {
            let (item, banned) = match self.counting.pop_front() {
                Some(item) => (item, false),
                None => match self.banned.pop_front() {
                    Some(item) => (item, true),
                    None => break,
                },
            };
            if self.is_live(&item, banned) {
                self.entries.remove(&item.0);
            }
        }
    }

    /// Drops stale queue items once they are at least half of a queue, so that the queues stay
    /// within twice the table (plus a little) at an amortised O(1) cost per call.
    fn compact(&mut self) {
        let limit = 2 * self.entries.len() + 64;
        if self.counting.len() > limit {
            let mut queue = std::mem::take(&mut self.counting);
            queue.retain(|item| self.is_live(item, false));
            self.counting = queue;
        }
        if self.banned.len() > limit {
            let mut queue = std::mem::take(&mut self.banned);
            queue.retain(|item| self.is_live(item, true));
            self.banned = queue;
        }
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.counting.len() + self.banned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);
    const BAN: Duration = Duration::from_secs(300);

    fn settings(max_failures: u32, capacity: usize) -> BanSettings {
        BanSettings { max_failures, window: WINDOW, ban: BAN, capacity, exempt: Vec::new() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// `n` failures from `source` at `at`; the result of the last one.
    fn fail(bans: &Bans, source: &str, n: u32, at: Instant) -> Option<BanEntry> {
        let mut last = None;
        for _ in 0..n {
            last = bans.record_failure(ip(source), at);
        }
        last
    }

    #[test]
    fn the_defaults_are_ten_failures_a_minute_five_minutes_65536_sources() {
        assert_eq!(
            BanSettings::default(),
            BanSettings { max_failures: 10, window: secs(60), ban: secs(300), capacity: 65536, exempt: Vec::new() }
        );
        let bans = Bans::new(BanSettings::default());
        assert_eq!(bans.settings(), &BanSettings::default());
    }

    #[test]
    fn the_tenth_failure_within_the_window_starts_a_ban_and_says_so_once() {
        let bans = Bans::new(settings(10, 100));
        let t0 = Instant::now();
        for i in 0..9 {
            assert_eq!(bans.record_failure(ip("192.0.2.1"), t0 + secs(i)), None, "failure {}", i + 1);
            assert_eq!(bans.banned(ip("192.0.2.1"), t0 + secs(i)), None);
        }
        let started = bans.record_failure(ip("192.0.2.1"), t0 + secs(9));
        let expected = BanEntry { ip: ip("192.0.2.1"), prefix_len: 32, failures: 10, remaining: BAN };
        assert_eq!(started, Some(expected.clone()));
        assert_eq!(bans.banned(ip("192.0.2.1"), t0 + secs(9)), Some(expected));
        // The next failures are counted but start nothing and extend nothing.
        assert_eq!(bans.record_failure(ip("192.0.2.1"), t0 + secs(100)), None);
        assert_eq!(
            bans.banned(ip("192.0.2.1"), t0 + secs(109)),
            Some(BanEntry { ip: ip("192.0.2.1"), prefix_len: 32, failures: 11, remaining: BAN - secs(100) })
        );
        // Other sources are not affected.
        assert_eq!(bans.banned(ip("192.0.2.2"), t0 + secs(9)), None);
    }

    #[test]
    fn the_ban_ends_after_its_time_and_the_count_starts_again() {
        let bans = Bans::new(settings(3, 100));
        let t0 = Instant::now();
        assert!(fail(&bans, "192.0.2.1", 3, t0).is_some());
        let end = t0 + BAN;
        assert!(bans.banned(ip("192.0.2.1"), end - Duration::from_millis(1)).is_some());
        assert_eq!(bans.banned(ip("192.0.2.1"), end), None);
        assert_eq!(bans.list(end), Vec::new());
        // Failing during the ban did not extend it.
        assert_eq!(fail(&bans, "192.0.2.1", 1, t0 + secs(299)), None);
        assert_eq!(bans.banned(ip("192.0.2.1"), end), None);
        // After the ban: a fresh count, three more to be banned again.
        assert_eq!(fail(&bans, "192.0.2.1", 2, end), None);
        assert_eq!(bans.banned(ip("192.0.2.1"), end), None);
        assert_eq!(
            fail(&bans, "192.0.2.1", 1, end + secs(1)),
            Some(BanEntry { ip: ip("192.0.2.1"), prefix_len: 32, failures: 3, remaining: BAN })
        );
    }

    #[test]
    fn failures_spread_beyond_the_window_never_ban() {
        let bans = Bans::new(settings(3, 100));
        let t0 = Instant::now();
        // Two failures, then the window closes; two more start a new window.
        assert_eq!(fail(&bans, "192.0.2.1", 2, t0), None);
        assert_eq!(fail(&bans, "192.0.2.1", 2, t0 + WINDOW), None);
        assert_eq!(bans.banned(ip("192.0.2.1"), t0 + WINDOW), None);
        // The window is counted from the first failure, not the last.
        assert_eq!(
            fail(&bans, "192.0.2.1", 1, t0 + WINDOW + secs(59)),
            Some(BanEntry { ip: ip("192.0.2.1"), prefix_len: 32, failures: 3, remaining: BAN })
        );
        let bans = Bans::new(settings(3, 100));
        assert_eq!(fail(&bans, "192.0.2.9", 1, t0), None);
        assert_eq!(fail(&bans, "192.0.2.9", 1, t0 + secs(50)), None);
        assert_eq!(fail(&bans, "192.0.2.9", 1, t0 + secs(61)), None, "the first failure left the window");
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_the_ipv4_address() {
        let bans = Bans::new(settings(2, 100));
        let t0 = Instant::now();
        assert_eq!(fail(&bans, "::ffff:192.0.2.7", 1, t0), None);
        let started = fail(&bans, "192.0.2.7", 1, t0);
        assert_eq!(started, Some(BanEntry { ip: ip("192.0.2.7"), prefix_len: 32, failures: 2, remaining: BAN }));
        assert!(bans.banned(ip("::ffff:192.0.2.7"), t0).is_some());
        assert!(bans.clear_at(ip("::ffff:192.0.2.7"), t0));
        assert_eq!(bans.banned(ip("192.0.2.7"), t0), None);
        // Plain IPv6 is a source of its own, by its /64.
        assert_eq!(fail(&bans, "2001:db8::7", 2, t0).map(|e| e.ip), Some(ip("2001:db8::")));
    }

    #[test]
    fn list_shows_bans_in_force_longest_remaining_first() {
        let bans = Bans::new(settings(2, 100));
        let t0 = Instant::now();
        fail(&bans, "192.0.2.1", 2, t0);
        fail(&bans, "2001:db8::1", 3, t0 + secs(10));
        fail(&bans, "192.0.2.3", 2, t0 + secs(5));
        fail(&bans, "192.0.2.4", 1, t0 + secs(5)); // counting, not banned
        fail(&bans, "192.0.2.5", 2, t0 + secs(5)); // same remaining as .3: ordered by address
        let now = t0 + secs(20);
        let listed: Vec<(IpAddr, u32, u64)> =
            bans.list(now).into_iter().map(|e| (e.ip, e.failures, e.remaining.as_secs())).collect();
        assert_eq!(
            listed,
            vec![
                (ip("2001:db8::"), 3, 290),
                (ip("192.0.2.3"), 2, 285),
                (ip("192.0.2.5"), 2, 285),
                (ip("192.0.2.1"), 2, 280)
            ]
        );
        assert_eq!(bans.list(t0 + secs(300)).len(), 3, "the first ban ended");
        assert_eq!(bans.list(t0 + secs(310)), Vec::new());
    }

    #[test]
    fn clear_lifts_a_ban_and_forgets_the_failures() {
        let bans = Bans::new(settings(3, 100));
        let t0 = Instant::now();
        fail(&bans, "192.0.2.1", 3, t0);
        assert!(bans.clear_at(ip("192.0.2.1"), t0 + secs(1)));
        assert_eq!(bans.banned(ip("192.0.2.1"), t0 + secs(1)), None);
        assert!(!bans.clear_at(ip("192.0.2.1"), t0 + secs(1)), "nothing left to lift");
        // Counting starts from zero again.
        assert_eq!(fail(&bans, "192.0.2.1", 2, t0 + secs(2)), None);
        // Clearing a source that is only counting forgets its failures but lifted nothing.
        assert!(!bans.clear_at(ip("192.0.2.1"), t0 + secs(2)));
        fail(&bans, "192.0.2.1", 2, t0 + secs(3));
        assert_eq!(bans.banned(ip("192.0.2.1"), t0 + secs(3)), None, "two failures, not four");
        // An expired ban is not "in force".
        fail(&bans, "192.0.2.2", 3, t0);
        assert!(!bans.clear_at(ip("192.0.2.2"), t0 + BAN));
        // clear() uses the real clock.
        fail(&bans, "192.0.2.3", 3, Instant::now());
        assert!(bans.clear(ip("192.0.2.3")));
        assert!(!bans.clear(ip("192.0.2.3")));
    }

    #[test]
    fn zero_max_failures_disables_the_defence() {
        let bans = Bans::new(settings(0, 100));
        let t0 = Instant::now();
        assert_eq!(fail(&bans, "192.0.2.1", 1000, t0), None);
        assert_eq!(bans.banned(ip("192.0.2.1"), t0), None);
        assert_eq!(bans.list(t0), Vec::new());
        assert_eq!(bans.tracked(), 0, "nothing is even tracked");
    }

    #[test]
    fn one_failure_bans_when_the_threshold_is_one() {
        let bans = Bans::new(settings(1, 100));
        let t0 = Instant::now();
        assert_eq!(fail(&bans, "192.0.2.1", 1, t0).map(|e| e.failures), Some(1));
    }

    #[test]
    fn a_full_table_drops_expired_bans_first() {
        let bans = Bans::new(settings(2, 3));
        let t0 = Instant::now();
        fail(&bans, "192.0.2.1", 2, t0); // banned until t0 + 300
        fail(&bans, "192.0.2.2", 1, t0 + secs(290));
        fail(&bans, "192.0.2.3", 1, t0 + secs(291));
        assert_eq!(bans.tracked(), 3);
        fail(&bans, "192.0.2.4", 1, t0 + secs(301));
        assert_eq!(bans.tracked(), 3);
        // .2 and .3 kept their counts: one more failure bans each.
        assert!(fail(&bans, "192.0.2.2", 1, t0 + secs(302)).is_some());
        assert!(fail(&bans, "192.0.2.3", 1, t0 + secs(302)).is_some());
        assert_eq!(bans.banned(ip("192.0.2.1"), t0), None, "the expired ban was dropped");
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_failed_unbanned_source_before_any_ban() {
        let bans = Bans::new(settings(2, 3));
        let t0 = Instant::now();
        fail(&bans, "192.0.2.1", 1, t0);
        fail(&bans, "192.0.2.2", 2, t0 + secs(1)); // banned
        fail(&bans, "192.0.2.3", 1, t0 + secs(2));
        fail(&bans, "192.0.2.1", 1, t0 + secs(3)); // .1 banned now, .3 is the only unbanned
        fail(&bans, "192.0.2.4", 1, t0 + secs(4)); // evicts .3
        assert_eq!(bans.tracked(), 3);
        assert!(bans.banned(ip("192.0.2.1"), t0 + secs(4)).is_some());
        assert!(bans.banned(ip("192.0.2.2"), t0 + secs(4)).is_some());
        assert_eq!(fail(&bans, "192.0.2.3", 1, t0 + secs(5)), None, ".3 starts from zero");
        // That evicted .4 (now the unbanned source failed least recently).
        assert_eq!(fail(&bans, "192.0.2.4", 1, t0 + secs(6)), None, ".4 starts from zero");
        // A recent failure moves a source to the back of the line.
        let bans = Bans::new(settings(5, 2));
        fail(&bans, "192.0.2.1", 1, t0);
        fail(&bans, "192.0.2.2", 1, t0 + secs(1));
        fail(&bans, "192.0.2.1", 1, t0 + secs(2));
        fail(&bans, "192.0.2.3", 1, t0 + secs(3)); // evicts .2, not .1
        assert_eq!(fail(&bans, "192.0.2.1", 3, t0 + secs(4)).map(|e| e.failures), Some(5));
    }

    #[test]
    fn a_table_full_of_bans_gives_up_the_one_ending_soonest() {
        let bans = Bans::new(settings(1, 2));
        let t0 = Instant::now();
        fail(&bans, "192.0.2.1", 1, t0);
        fail(&bans, "192.0.2.2", 1, t0 + secs(1));
        let started = fail(&bans, "192.0.2.3", 1, t0 + secs(2));
        assert!(started.is_some());
        assert_eq!(bans.tracked(), 2);
        let listed: Vec<IpAddr> = bans.list(t0 + secs(2)).into_iter().map(|e| e.ip).collect();
        assert_eq!(listed, vec![ip("192.0.2.3"), ip("192.0.2.2")]);
    }

    #[test]
    fn a_flood_of_spoofed_sources_stays_within_capacity_and_keeps_the_bans() {
        const CAPACITY: usize = 1000;
        let bans = Bans::new(settings(3, CAPACITY));
        let t0 = Instant::now();
        let attacker = ip("198.51.100.1");
        assert!(fail(&bans, "198.51.100.1", 3, t0).is_some());
        // Counting, about to be banned: forgotten under the flood.
        fail(&bans, "198.51.100.2", 2, t0);
        for i in 0..200_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i / 1000));
            let source = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            assert_eq!(bans.record_failure(source, now), None);
            if i % 1000 == 0 {
                // The banned attacker keeps failing; that neither extends nor loses its ban.
                assert_eq!(bans.record_failure(attacker, now), None);
            }
            if i % 10_000 == 0 {
                assert!(bans.tracked() <= CAPACITY, "{} sources after {i}", bans.tracked());
                assert!(bans.lock().queued() <= 2 * (2 * CAPACITY + 64), "queues {}", bans.lock().queued());
            }
        }
        assert_eq!(bans.tracked(), CAPACITY);
        let now = t0 + secs(1);
        let ban = bans.banned(attacker, now).expect("the attacker is still banned");
        assert_eq!(ban.failures, 3 + 200);
        assert_eq!(ban.remaining, BAN - secs(1));
        assert_eq!(fail(&bans, "198.51.100.2", 1, now), None, "forgotten: counting from one");
    }

    #[test]
    fn a_source_failing_over_and_over_does_not_grow_the_queues() {
        let bans = Bans::new(settings(1_000_000, 10));
        let t0 = Instant::now();
        for i in 0..100_000u64 {
            bans.record_failure(ip("192.0.2.1"), t0 + Duration::from_micros(i));
        }
        assert_eq!(bans.tracked(), 1);
        assert!(bans.lock().queued() <= 2 + 64 + 1, "queued {}", bans.lock().queued());
    }

    #[test]
    fn a_poisoned_lock_is_recovered() {
        let bans = std::sync::Arc::new(Bans::new(settings(2, 10)));
        let shared = bans.clone();
        let _ = std::thread::spawn(move || {
            let _guard = shared.table.lock();
            panic!("poison the table");
        })
        .join();
        assert!(bans.table.is_poisoned());
        let t0 = Instant::now();
        assert!(fail(&bans, "192.0.2.1", 2, t0).is_some());
        assert!(bans.banned(ip("192.0.2.1"), t0).is_some());
    }

    #[test]
    fn bans_are_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Bans>();
        let bans = std::sync::Arc::new(Bans::new(settings(400, 100)));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let bans = bans.clone();
                std::thread::spawn(move || (0..100).filter_map(|_| bans.record_failure(ip("192.0.2.1"), t0)).count())
            })
            .collect();
        let started: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(started, 1, "exactly one failure starts the ban");
        assert_eq!(bans.banned(ip("192.0.2.1"), t0).map(|e| e.failures), Some(400));
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64() {
        let bans = Bans::new(settings(3, 100));
        let now = Instant::now();
        let in_64 = |host: u16| -> IpAddr { format!("2001:db8:1:2::{host:x}").parse().unwrap() };
        assert_eq!(bans.record_failure(in_64(1), now), None);
        assert_eq!(bans.record_failure(in_64(2), now), None);
        let ban = bans.record_failure(in_64(0xbeef), now).expect("the third failure of the /64 bans it");
        assert_eq!((ban.ip, ban.prefix_len), ("2001:db8:1:2::".parse().unwrap(), 64));
        assert!(bans.banned("2001:db8:1:2:ffff::9".parse().unwrap(), now).is_some(), "every address of the /64");
        assert!(bans.banned("2001:db8:1:3::1".parse().unwrap(), now).is_none(), "not the next /64");
        assert_eq!(bans.tracked(), 1);
        assert!(bans.clear_at(in_64(7), now), "clearing any address of it lifts it");
        // IPv4 stays per address
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            bans.record_failure(v4, now);
        }
        assert_eq!(bans.banned(v4, now).map(|b| b.prefix_len), Some(32));
        assert!(bans.banned("192.0.2.8".parse().unwrap(), now).is_none());
    }

    #[test]
    fn exempt_sources_are_never_counted_or_banned() {
        let exempt = vec!["192.0.2.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        let bans = Bans::new(BanSettings { exempt, ..settings(1, 100) });
        let now = Instant::now();
        for ip in ["192.0.2.9", "2001:db8:5::1", "::ffff:192.0.2.10"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(bans.record_failure(ip, now), None, "{ip}");
            assert_eq!(bans.banned(ip, now), None, "{ip}");
        }
        assert_eq!(bans.tracked(), 0);
        assert!(bans.record_failure("198.51.100.1".parse().unwrap(), now).is_some(), "others still are");
    }
}
