//! The Node sidecar's regbot leader election, played against real Redis exactly as spec 6.1
//! describes it, so that a test can put `sbc-sidecar` into a cluster whose other SBCs still
//! run the Node program:
//!
//! * a random initial delay of `floor(random × 15)` whole seconds (0–14 s), then
//!   `SET <c>:regbot-token <token> NX` and, only when that said `OK`, a **separate**
//!   `EXPIRE <key> 70`;
//! * every 60 s `GET <key>`: active and ours → `SET <key> <token> EX 70` (not atomic with the
//!   GET); active and another token → stand down (the flag stays set, spec 14, item 4, so the next
//!   check finds "active and another token" again); active and missing → stand down and grab;
//!   inactive and present → nothing; inactive and missing → grab.
//!
//! The three numbers (delay bound, check interval, TTL) are parameters so a test can shorten
//! them in the same proportion as the daemon's own (`SBC_REGBOT_CLAIM_JITTER_MS`,
//! `SBC_REGBOT_STATUS_INTERVAL_MS`, `SBC_REGBOT_TOKEN_TTL_S`). [`NodeTiming::NODE`] holds
//! the Node program's values.
//!
//! The player registers nothing itself; it records, for the test, whether and when it held
//! the role. [`NodeLeader::stop`] stops it the way a killed Node process stops: no release,
//! the key lapses with its TTL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::Rng;

/// The timing of the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTiming {
    /// The initial delay is a whole number of `delay_unit`s, `floor(random × delay_steps)`.
    pub delay_unit: Duration,
    pub delay_steps: u32,
    /// `checkStatus` interval.
    pub check_interval: Duration,
    /// TTL of the key, whole seconds (Redis `EXPIRE` / `EX` take seconds).
    pub ttl_secs: u64,
}

impl NodeTiming {
    /// The Node program: 0–14 s initial delay, a check every 60 s, the key for 70 s.
    pub const NODE: NodeTiming = NodeTiming {
        delay_unit: Duration::from_secs(1),
        delay_steps: 15,
        check_interval: Duration::from_secs(60),
        ttl_secs: 70,
    };
}

/// What the player did, in order, for the test to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// `SET NX` said OK (then `EXPIRE` was sent).
    Claimed,
    /// `SET NX` found the key taken.
    ClaimRefused,
    /// `GET` found our token and `SET EX` renewed it.
    Refreshed,
    /// `GET` found another token while active.
    StoodDown,
}

#[derive(Default)]
struct Shared {
    /// The `active` flag of the Node program.
    active: AtomicBool,
    /// Whether the player ever obtained the key.
    ever_claimed: AtomicBool,
    events: Mutex<Vec<(Instant, NodeEvent)>>,
    /// The last Redis error (the Node client retries silently; the test may want it).
    last_error: Mutex<Option<String>>,
}

/// One Node sidecar's election thread.
pub struct NodeLeader {
    pub token: String,
    pub key: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// A short-uuid-like token (22 base58 characters), as the Node program generates.
pub fn node_token() -> String {
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..22).map(|_| BASE58[rng.gen_range(0..BASE58.len())] as char).collect()
}

impl NodeLeader {
    /// Starts playing the election for cluster `cluster_id` against `redis_url`.
    pub fn start(redis_url: &str, cluster_id: &str, timing: NodeTiming) -> NodeLeader {
        let token = node_token();
        let key = format!("{cluster_id}:regbot-token");
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let client = redis::Client::open(redis_url).expect("a redis URL");
        let (t, k, s, st) = (token.clone(), key.clone(), shared.clone(), stop.clone());
        let handle = thread::Builder::new()
            .name("node-leader".into())
            .spawn(move || run(client, k, t, timing, s, st))
            .expect("node-leader thread");
        NodeLeader { token, key, shared, stop, handle: Some(handle) }
    }

    /// The Node program's `active` flag (it stays set after a stand-down: spec 14, item 4).
    pub fn is_active(&self) -> bool {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Whether `SET NX` ever succeeded.
    pub fn ever_claimed(&self) -> bool {
        self.shared.ever_claimed.load(Ordering::SeqCst)
    }

    pub fn events(&self) -> Vec<(Instant, NodeEvent)> {
        self.shared.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// When the key was last written with our token (claim or refresh).
    pub fn last_write(&self) -> Option<Instant> {
        self.events()
            .into_iter()
            .filter(|(_, e)| matches!(e, NodeEvent::Claimed | NodeEvent::Refreshed))
            .map(|(at, _)| at)
            .next_back()
    }

    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Stops like a killed process: no further command, the key is left to lapse.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for NodeLeader {
    fn drop(&mut self) {
        self.stop();
    }
}

fn note(shared: &Shared, event: NodeEvent) {
    if let Ok(mut events) = shared.events.lock() {
        events.push((Instant::now(), event));
    }
}

/// Sleeps `d` in small steps; false when asked to stop meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())));
    }
    !stop.load(Ordering::SeqCst)
}

fn run(client: redis::Client, key: String, token: String, t: NodeTiming, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let steps = rand::thread_rng().gen_range(0..t.delay_steps.max(1));
    if !sleep_unless_stopped(t.delay_unit * steps, &stop) {
        return;
    }
    let mut conn: Option<redis::Connection> = None;
    let mut with_conn = |f: &mut dyn FnMut(&mut redis::Connection) -> redis::RedisResult<()>| {
        if conn.is_none() {
            conn = client.get_connection_with_timeout(Duration::from_secs(1)).ok();
        }
        let result = match conn.as_mut() {
            Some(c) => f(c),
            None => Err(redis::RedisError::from(std::io::Error::other("no connection to redis"))),
        };
        if let Err(e) = result {
            conn = None;
            if let Ok(mut last) = shared.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
    };
    // grab = SET NX, then (separately) EXPIRE.
    let grab = |c: &mut redis::Connection, shared: &Shared| -> redis::RedisResult<()> {
        let ok: Option<String> = redis::cmd("SET").arg(&key).arg(&token).arg("NX").query(c)?;
        if ok.is_some() {
            redis::cmd("EXPIRE").arg(&key).arg(t.ttl_secs).query::<()>(c)?;
            shared.active.store(true, Ordering::SeqCst);
            shared.ever_claimed.store(true, Ordering::SeqCst);
            note(shared, NodeEvent::Claimed);
        } else {
            shared.active.store(false, Ordering::SeqCst);
            note(shared, NodeEvent::ClaimRefused);
        }
        Ok(())
    };
    with_conn(&mut |c| grab(c, &shared));
    while sleep_unless_stopped(t.check_interval, &stop) {
        with_conn(&mut |c| {
            let value: Option<String> = redis::cmd("GET").arg(&key).query(c)?;
            let active = shared.active.load(Ordering::SeqCst);
            match (active, value) {
                (true, Some(v)) if v == token => {
                    redis::cmd("SET").arg(&key).arg(&token).arg("EX").arg(t.ttl_secs).query::<()>(c)?;
                    note(&shared, NodeEvent::Refreshed);
                }
                // The Node bug: the flag is not cleared.
                (true, Some(_)) => note(&shared, NodeEvent::StoodDown),
                (true, None) => {
                    note(&shared, NodeEvent::StoodDown);
                    grab(c, &shared)?;
                }
                (false, Some(_)) => {}
                (false, None) => grab(c, &shared)?,
            }
            Ok(())
        });
    }
}
