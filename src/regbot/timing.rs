//! When a regbot sends its next REGISTER: refresh with jitter, retry with exponential backoff
//! and jitter (spec 14, item 6 fixed: Node refreshed at exactly expires/2 and retried every 300 s).
//! The random part is passed in (a number in `[0, 1)`) so the arithmetic is testable.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Smallest first retry, whatever the configured cap: a zero cap must not become a busy loop.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Refresh at half the granted expires, up to 10 % earlier, so that many regbots registered in
/// the same second spread out over the following cycles.
pub fn refresh_delay(granted: Duration, jitter: f64) -> Duration {
    let half = granted / 2;
    // `mul_f64` panics when the result does not fit; the checked form cannot.
    Duration::try_from_secs_f64(half.as_secs_f64() * (1.0 - 0.1 * jitter.clamp(0.0, 1.0))).unwrap_or(half)
}

/// `now + delay` without the panic of `Instant + Duration` on overflow: a delay too long to
/// represent becomes a year (then a day), which no regbot timer ever reaches anyway.
pub fn after(now: Instant, delay: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);
    now.checked_add(delay).or_else(|| now.checked_add(YEAR)).or_else(|| now.checked_add(DAY)).unwrap_or(now)
}

/// Delay before retry number `attempt` (0 for the first failure): `cap/16 · 2^attempt`,
/// capped at `cap` (`JAMBONES_REGBOT_FAILURE_RETRY_INTERVAL`), then "equal jitter": somewhere
/// between half of that and all of it. With the default 300 s cap: ≈19 s, 38 s, 75 s, 150 s,
/// then 300 s.
pub fn failure_delay(attempt: u32, cap: Duration, jitter: f64) -> Duration {
    let cap = cap.max(MIN_BACKOFF);
    let base = (cap / 16).max(MIN_BACKOFF);
    let factor = 2u32.saturating_pow(attempt.min(20));
    let full = base.saturating_mul(factor).min(cap);
    let half = full / 2;
    let extra = Duration::try_from_secs_f64(half.as_secs_f64() * jitter.clamp(0.0, 1.0)).unwrap_or(half);
    half.saturating_add(extra)
}

/// The first CSeq of a regbot: the Unix time in seconds (within 31 bits). A registrar drops a
/// REGISTER whose CSeq is not above the last one it saw for the Call-ID (RFC 3261 §10.3), and
/// the Call-ID is the gateway sid, the same on every SBC and across restarts: starting from
/// the clock keeps a new leader above what the old one sent, as long as a regbot sends less
/// than one request per second on average (refreshes are ≥ 15 s apart, retries back off).
pub fn initial_cseq(now: SystemTime) -> u32 {
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    (secs % (1 << 31)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_at_half_the_expires_and_never_later() {
        assert_eq!(refresh_delay(Duration::from_secs(3600), 0.0), Duration::from_secs(1800));
        assert_eq!(refresh_delay(Duration::from_secs(3600), 1.0), Duration::from_secs(1620));
        let d = refresh_delay(Duration::from_secs(30), 0.5);
        assert!(d < Duration::from_secs(15) && d > Duration::from_secs(13));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let cap = Duration::from_secs(300);
        let full: Vec<u64> = (0..7).map(|a| failure_delay(a, cap, 1.0).as_millis() as u64).collect();
        assert_eq!(full, vec![18_750, 37_500, 75_000, 150_000, 300_000, 300_000, 300_000]);
        let low: Vec<u64> = (0..3).map(|a| failure_delay(a, cap, 0.0).as_millis() as u64).collect();
        assert_eq!(low, vec![9_375, 18_750, 37_500]);
        assert_eq!(failure_delay(1000, cap, 1.0), cap, "no overflow for long outages");
        assert_eq!(failure_delay(0, Duration::ZERO, 1.0), Duration::from_millis(100));
        let short = Duration::from_millis(1600);
        assert_eq!(failure_delay(0, short, 1.0), Duration::from_millis(100));
        assert_eq!(failure_delay(2, short, 1.0), Duration::from_millis(400));
    }

    #[test]
    fn the_first_cseq_follows_the_clock() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(initial_cseq(t), 1_700_000_000);
        assert!(initial_cseq(UNIX_EPOCH + Duration::from_secs(5_000_000_000)) < 1 << 31);
    }
}
