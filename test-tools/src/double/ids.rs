//! Identifiers and clock readings in the shapes drachtio-server and its SIP stack (sofia) use:
//! 13-character tags and branch suffixes, time-based Call-IDs, the time-derived default CSeq and
//! the `HH:MM:SS.uuuuuu` UTC time token of the control protocol.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::distributions::Alphanumeric;
use rand::Rng;

/// Sofia's tags and branch suffixes are 13 alphanumeric characters (captures: `tag=tae2H0c32Q2KB`).
const TOKEN_LEN: usize = 13;

/// Seconds between the NTP epoch (1900) and the Unix epoch; sofia derives default CSeqs from NTP time.
const NTP_EPOCH_OFFSET: u64 = 2_208_988_800;

/// 100-ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
const UUID_EPOCH_OFFSET: u64 = 0x01B2_1DD2_1381_4000;

fn random_alnum(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// A To/From tag as the stack generates it.
pub(crate) fn new_tag() -> String {
    random_alnum(TOKEN_LEN)
}

/// An RFC 3261 branch: magic cookie + 13 alphanumerics (`z9hG4bKKFjZBQ80SS5je`).
pub(crate) fn new_branch() -> String {
    format!("z9hG4bK{}", random_alnum(TOKEN_LEN))
}

/// Server message ids and transaction ids are lower-case UUID v4 strings.
pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn unix_now() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The time token of `sip` and `response` frames: time of day in UTC with microseconds.
pub(crate) fn time_token() -> String {
    let now = unix_now();
    let secs_of_day = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs_of_day / 3600,
        (secs_of_day / 60) % 60,
        secs_of_day % 60,
        now.subsec_micros()
    )
}

/// The CSeq number sofia picks when the app gives none: NTP seconds halved, 27 bits. Every
/// request sent within the same two-second window gets the same number (as captured).
pub(crate) fn default_cseq() -> u64 {
    ((unix_now().as_secs() + NTP_EPOCH_OFFSET) >> 1) & 0x7FF_FFFF
}

/// Generates Call-IDs shaped like sofia's time-based (version 1) UUIDs, e.g.
/// `6052eca3-64f2-1240-4c97-d2ca60ea5eec`: the first group moves with every request, the last
/// two groups are fixed for the life of one double (as they are for one drachtio process).
pub(crate) struct CallIdGenerator {
    clock_seq: u16,
    node: u64,
    /// Keeps ids unique when two requests fall into the same 100-ns tick.
    last_tick: AtomicU64,
}

impl CallIdGenerator {
    pub(crate) fn new() -> CallIdGenerator {
        let mut rng = rand::thread_rng();
        CallIdGenerator {
            clock_seq: rng.gen::<u16>() & 0x3FFF | 0x8000,
            node: rng.gen::<u64>() & 0xFFFF_FFFF_FFFF,
            last_tick: AtomicU64::new(0),
        }
    }

    pub(crate) fn next(&self) -> String {
        let now_tick = unix_now().as_nanos() as u64 / 100 + UUID_EPOCH_OFFSET;
        let mut prev = self.last_tick.load(Ordering::Relaxed);
        let tick = loop {
            let candidate = now_tick.max(prev + 1);
            match self.last_tick.compare_exchange(prev, candidate, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break candidate,
                Err(actual) => prev = actual,
            }
        };
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            tick & 0xFFFF_FFFF,
            (tick >> 32) & 0xFFFF,
            ((tick >> 48) & 0x0FFF) | 0x1000,
            self.clock_seq,
            self.node
        )
    }
}
