//! A map bounded by its number of entries, the least recently used going first when it is full.
//!
//! The registrar's per-account state lives in one of these (`account_state.rs`): one bound, one
//! eviction rule, instead of a table per concern each forgetting in its own way. Not a lock:
//! the owner decides how the table is shared.
//!
//! Use order is a counter per touch, kept in a `BTreeMap` beside the entries, so finding the
//! least recently used entry is a `pop_first` rather than a scan of the table.

use std::collections::{BTreeMap, HashMap};

pub struct Lru<V> {
    capacity: usize,
    /// Key → (its last use, value).
    entries: HashMap<String, (u64, V)>,
    /// Last use → key: the first is the least recently used.
    order: BTreeMap<u64, String>,
    /// Counts uses; the next use gets this number.
    clock: u64,
}

impl<V: Default> Lru<V> {
    /// A table of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Lru<V> {
        Lru { capacity: capacity.max(1), entries: HashMap::new(), order: BTreeMap::new(), clock: 0 }
    }

    /// The value of `key`, if held, marked as just used.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let used = self.entries.get(key)?.0;
        let now = self.touch(used);
        let (used, value) = self.entries.get_mut(key)?;
        *used = now;
        Some(value)
    }

    /// The value of `key`, marked as just used; a default one when it was not held, for which
    /// the least recently used entry makes room when the table is full.
    pub fn entry(&mut self, key: &str) -> &mut V {
        let now = match self.entries.get(key) {
            Some((used, _)) => self.touch(*used),
            None => {
                while self.entries.len() >= self.capacity {
                    let Some((_, oldest)) = self.order.pop_first() else { break };
                    self.entries.remove(&oldest);
                }
                let now = self.tick();
                self.order.insert(now, key.to_string());
                now
            }
        };
        let (used, value) = self.entries.entry(key.to_string()).or_insert_with(|| (now, V::default()));
        *used = now;
        value
    }

    /// Moves a held entry last used at `used` to the end of the order; returns its new use.
    fn touch(&mut self, used: u64) -> u64 {
        let now = self.tick();
        if let Some(name) = self.order.remove(&used) {
            self.order.insert(now, name);
        }
        now
    }

    /// Every entry, in no particular order; not a use.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, (_, v))| (k.as_str(), v))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_when_the_table_is_full() {
        let mut t: Lru<u32> = Lru::new(3);
        *t.entry("a") = 1;
        *t.entry("b") = 2;
        *t.entry("c") = 3;
        assert_eq!(t.get_mut("a"), Some(&mut 1), "a is used again: b is now the oldest");
        *t.entry("d") = 4;
        assert_eq!(t.len(), 3);
        assert_eq!(t.get_mut("b"), None);
        assert_eq!(t.get_mut("a"), Some(&mut 1));
        *t.entry("e") = 5;
        assert_eq!(t.get_mut("c"), None, "c was the oldest after a's second use");
        let mut held: Vec<(&str, u32)> = t.iter().map(|(k, v)| (k, *v)).collect();
        held.sort();
        assert_eq!(held, vec![("a", 1), ("d", 4), ("e", 5)]);
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound_and_keeps_the_order_index_in_step() {
        let mut t: Lru<u64> = Lru::new(100);
        for i in 0..10_000u64 {
            *t.entry(&format!("k{i}")) = i;
            if i % 7 == 0 {
                t.entry("hot");
            }
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.order.len(), 100);
        assert!(t.get_mut("hot").is_some(), "a key in steady use is never the least recently used");
        assert_eq!(t.get_mut("k9999"), Some(&mut 9999));
        assert_eq!(t.get_mut("k0"), None);
    }
}
