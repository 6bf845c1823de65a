//! The REGISTER outcomes of the last minute, by class, for `sbcctl status`: what an operator
//! needs when registrations fail is whether the answers are challenges (401), refusals (403),
//! overload or outage (503) or errors, right now.
//!
//! Sixty one-second buckets in a ring, each stamped with the second it counts; a bucket whose
//! stamp is older than the window is stale and reused. Fixed memory, one short lock per answer.

use std::sync::Mutex;

use crate::clock::unix_secs;

/// Seconds the counts cover.
pub const WINDOW_SECS: u64 = 60;

/// The classes, in the order `status` lists them.
pub const CLASSES: [&str; 6] = ["200", "401", "403", "503", "5xx", "other"];

fn class_of(status: u16) -> usize {
    match status {
        200 => 0,
        401 => 1,
        403 => 2,
        503 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    counts: [u64; CLASSES.len()],
}

pub struct RegisterOutcomes {
    ring: Mutex<[Bucket; WINDOW_SECS as usize]>,
}

impl Default for RegisterOutcomes {
    fn default() -> Self {
        RegisterOutcomes::new()
    }
}

impl RegisterOutcomes {
    pub fn new() -> RegisterOutcomes {
        RegisterOutcomes { ring: Mutex::new([Bucket::default(); WINDOW_SECS as usize]) }
    }

    /// Counts one final response to a REGISTER.
    pub fn record(&self, status: u16) {
        self.record_at(status, unix_secs());
    }

    pub fn record_at(&self, status: u16, second: u64) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = &mut ring[(second % WINDOW_SECS) as usize];
        if bucket.second != second {
            *bucket = Bucket { second, counts: [0; CLASSES.len()] };
        }
        bucket.counts[class_of(status)] += 1;
    }

    /// The counts of the last [`WINDOW_SECS`] seconds, in the order of [`CLASSES`].
    pub fn last_minute(&self) -> [u64; CLASSES.len()] {
        self.last_minute_at(unix_secs())
    }

    pub fn last_minute_at(&self, now: u64) -> [u64; CLASSES.len()] {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = [0; CLASSES.len()];
        for bucket in ring.iter().filter(|b| b.second <= now && now - b.second < WINDOW_SECS) {
            for (t, c) in total.iter_mut().zip(bucket.counts) {
                *t += c;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_counted_by_class() {
        let o = RegisterOutcomes::new();
        for s in [200, 200, 401, 403, 503, 500, 504, 400, 404] {
            o.record_at(s, 1000);
        }
        assert_eq!(o.last_minute_at(1000), [2, 1, 1, 1, 2, 2]);
    }

    #[test]
    fn only_the_last_sixty_seconds_count_and_old_buckets_are_reused() {
        let o = RegisterOutcomes::new();
        o.record_at(200, 1000);
        o.record_at(503, 1030);
        assert_eq!(o.last_minute_at(1059), [1, 0, 0, 1, 0, 0]);
        assert_eq!(o.last_minute_at(1060), [0, 0, 0, 1, 0, 0], "the second 1000 is out of the window");
        o.record_at(401, 1060); // the same slot as 1000
        assert_eq!(o.last_minute_at(1060), [0, 1, 0, 1, 0, 0]);
        assert_eq!(o.last_minute_at(2000), [0; 6]);
    }
}
