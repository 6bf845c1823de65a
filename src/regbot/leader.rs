//! Leader election (spec 6.1, made atomic): one sidecar per cluster holds
//! `<cluster>:regbot-token` and runs the regbots. The leader thread also reads the database for
//! the reconcile (spec 6.2) and hands the result to the scheduler.
//!
//! Fixed from Node (spec 14, item 4): the claim is `SET NX EX` (no key without TTL after a crash),
//! the extension is compare-and-extend in one Lua script (no GET-then-SET race), standing
//! down really clears the leader flag, and regaining the role starts every regbot again. A
//! clean stop releases the key (compare-and-delete) so another SBC takes over at its next
//! check instead of after the TTL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, tick, Receiver, Sender};
use log::{debug, error, info, warn};
use rand::Rng;

use super::cluster;
use super::reconcile::{wanted, Inventory};
use super::scheduler::SchedulerCmd;
use super::timing::after;
use super::RegbotMode;
use super::RegbotSettings;
use crate::clock::unix_millis;
use crate::drachtio::ConnectionEvent;
use crate::store::mysql::MysqlPool;
use crate::store::outage::OutageLog;
use crate::store::redis::{run, RedisPool};
use crate::store::StoreError;

/// 1 = extended, 0 = someone else holds it, -1 = nobody holds it.
const EXTEND: &str = "local v = redis.call('GET', KEYS[1]) \
     if v == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1 \
     elseif v then return 0 else return -1 end";

const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// The result of trying to keep the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    Extended,
    /// Another instance's token is in the key.
    TakenByOther,
    /// The key expired (e.g. Redis was unreachable for longer than the TTL).
    Lapsed,
}

/// The Redis side of the election.
pub struct LeaderElection {
    redis: RedisPool,
    key: String,
    token: String,
    ttl_secs: u64,
}

impl LeaderElection {
    pub fn new(redis: RedisPool, cluster_id: &str, token: String, ttl: Duration) -> LeaderElection {
        LeaderElection {
            redis,
            key: crate::store::keys::regbot_token(cluster_id),
            token,
            ttl_secs: ttl.as_secs().max(1),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// `SET <key> <token> NX EX <ttl>`: true when the role is now ours.
    pub fn claim(&self) -> Result<bool, StoreError> {
        let reply: Option<String> = run(&self.redis, |conn| {
            Ok(redis::cmd("SET")
                .arg(&self.key)
                .arg(&self.token)
                .arg("NX")
                .arg("EX")
                .arg(self.ttl_secs)
                .query(&mut **conn)?)
        })?;
        Ok(reply.is_some())
    }

    /// Extends the TTL only while the key still holds our token, in one step.
    pub fn extend(&self) -> Result<Extension, StoreError> {
        let r: i64 = run(&self.redis, |conn| {
            Ok(redis::cmd("EVAL")
                .arg(EXTEND)
                .arg(1)
                .arg(&self.key)
                .arg(&self.token)
                .arg(self.ttl_secs)
                .query(&mut **conn)?)
        })?;
        Ok(match r {
            1 => Extension::Extended,
            0 => Extension::TakenByOther,
            _ => Extension::Lapsed,
        })
    }

    /// Deletes the key if it still holds our token; true when it did.
    pub fn release(&self) -> Result<bool, StoreError> {
        let r: i64 = run(&self.redis, |conn| {
            Ok(redis::cmd("EVAL").arg(RELEASE).arg(1).arg(&self.key).arg(&self.token).query(&mut **conn)?)
        })?;
        Ok(r == 1)
    }
}

/// A leader that cannot reach Redis gives the role up when the key could lapse before its
/// next check: `elapsed` since the last confirmation plus one interval reaches the TTL.
pub fn must_stand_down(elapsed: Duration, interval: Duration, ttl: Duration) -> bool {
    elapsed.saturating_add(interval) >= ttl
}

/// How long after a confirmation the scheduler may register: halfway between the status
/// interval (when the next extension is due) and the key's TTL (when another SBC may take the
/// role), so a punctual extension always renews it and a missed one stops the regbots before
/// the key can lapse.
pub fn lease_length(interval: Duration, ttl: Duration) -> Duration {
    interval.saturating_add(ttl) / 2
}

/// A random token like Node's short-uuid: 22 base58 characters.
pub fn new_token() -> String {
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..22).map(|_| BASE58[rng.gen_range(0..BASE58.len())] as char).collect()
}

/// The daemon is about to stop: de-register what must be (see `cluster::leader_successor`)
/// and answer on `done` when that is written, before the drachtio connection goes.
#[derive(Debug)]
pub struct PrepareStop {
    pub done: Sender<()>,
}

/// The channels a [`Coordinator`] works with, all required.
pub struct CoordinatorLinks {
    /// Connection events of the drachtio client.
    pub events: Receiver<ConnectionEvent>,
    /// Where the inventory of registrations to run goes.
    pub scheduler: Sender<SchedulerCmd>,
    /// Disconnected when the scheduler thread is gone (nothing is ever sent on it): the role is
    /// then given up at once — the key deleted if it still holds our token — and this thread
    /// ends, instead of renewing a role whose registrations nobody runs.
    pub scheduler_alive: Receiver<()>,
    /// The daemon's [`PrepareStop`] requests.
    pub prepare_stop: Receiver<PrepareStop>,
    /// Disconnected when the daemon stops.
    pub shutdown: Receiver<()>,
}

/// The thread that decides which registrations this SBC runs: in `leader` mode it holds or
/// waits for the cluster's leader key and, while it leads, reads the carriers for the
/// scheduler; in `every` mode it reads them always and keeps this SBC's presence in the
/// cluster, without any election.
pub struct Coordinator {
    settings: RegbotSettings,
    election: LeaderElection,
    mysql_read: MysqlPool,
    events: Receiver<ConnectionEvent>,
    scheduler: Sender<SchedulerCmd>,
    shutdown: Receiver<()>,
    /// Disconnected when the scheduler thread is gone (nothing is ever sent on it).
    scheduler_alive: Receiver<()>,
    prepare: Receiver<PrepareStop>,
    leader: bool,
    /// When the key was last confirmed ours.
    confirmed_at: Instant,
    /// Fingerprint of the last inventory handed to the scheduler; `None` forces a full one.
    last_fingerprint: Option<String>,
    redis_outage: OutageLog,
    mysql_outage: OutageLog,
}

impl Coordinator {
    pub fn new(
        settings: RegbotSettings,
        election: LeaderElection,
        mysql_read: MysqlPool,
        links: CoordinatorLinks,
    ) -> Coordinator {
        let CoordinatorLinks { events, scheduler, scheduler_alive, prepare_stop, shutdown } = links;
        Coordinator {
            settings,
            election,
            mysql_read,
            events,
            scheduler,
            shutdown,
            scheduler_alive,
            prepare: prepare_stop,
            leader: false,
            confirmed_at: Instant::now(),
            last_fingerprint: None,
            redis_outage: OutageLog::new("regbot", "redis"),
            mysql_outage: OutageLog::new("regbot", "database"),
        }
    }

    fn every(&self) -> bool {
        self.settings.mode == RegbotMode::Every
    }

    pub fn run(mut self) {
        // Node starts the regbot on the first drachtio connect only.
        if !self.wait_for_first_connect() {
            return;
        }
        if self.every() {
            return self.run_every();
        }
        let jitter = if self.settings.claim_jitter.is_zero() {
            Duration::ZERO
        } else {
            rand::thread_rng().gen_range(Duration::ZERO..self.settings.claim_jitter)
        };
        info!(
            "waiting {}ms before attempting to claim regbot responsibility with token {}",
            jitter.as_millis(),
            self.election.token()
        );
        let waited = after(Instant::now(), jitter);
        loop {
            select! {
                recv(self.shutdown) -> _ => return,
                recv(self.scheduler_alive) -> _ => return self.scheduler_gone(),
                recv(self.prepare) -> req => self.on_prepare(req.ok()),
                default(waited.saturating_duration_since(Instant::now())) => break,
            }
        }
        if self.serve(Self::check) == Served::SchedulerGone {
            return self.scheduler_gone();
        }
        self.leave();
        if self.leader {
            match self.election.release() {
                Ok(true) => info!("released the regbot role ({})", self.election.key()),
                Ok(false) => {}
                Err(e) => warn!("could not release the regbot role: {e}"),
            }
        }
        debug!("regbot leader election stopped");
    }

    /// `SBC_REGBOT_MODE=every`: no election; reconcile and keep our presence at every
    /// status interval.
    fn run_every(mut self) {
        info!("regbot: registering from every SBC (SBC_REGBOT_MODE=every)");
        self.leader = true;
        let _ = self.scheduler.send(SchedulerCmd::Leadership(true));
        if self.serve(Self::check_every) == Served::SchedulerGone {
            error!("the regbot scheduler thread is gone");
        }
        self.leave();
        debug!("regbot (every SBC) stopped");
    }

    /// Runs `check` now and at every status interval, and answers `prepare` requests, until
    /// shutdown or the scheduler thread ends.
    fn serve(&mut self, check: fn(&mut Self)) -> Served {
        let ticker = tick(self.settings.status_interval.max(Duration::from_millis(50)));
        check(self);
        let mut events = self.events.clone();
        loop {
            select! {
                recv(ticker) -> _ => check(self),
                // Later connection events do not concern the election; drain them.
                recv(events) -> ev => if ev.is_err() { events = never() },
                recv(self.prepare) -> req => self.on_prepare(req.ok()),
                recv(self.shutdown) -> _ => return Served::Shutdown,
                recv(self.scheduler_alive) -> _ => return Served::SchedulerGone,
            }
        }
    }

    fn check_every(&mut self) {
        self.announce();
        self.reconcile();
    }

    /// Writes our presence to `<cluster>:regbot-members`.
    fn announce(&mut self) {
        let key = cluster::members_key(&self.settings.cluster_id);
        let value = cluster::member_value(self.settings.mode, unix_millis());
        let ttl = self.member_window().as_secs().max(1);
        let token = self.election.token().to_string();
        let written = run(&self.election.redis, |conn| {
            Ok(redis::pipe()
                .cmd("HSET")
                .arg(&key)
                .arg(&token)
                .arg(&value)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(ttl)
                .ignore()
                .query::<()>(&mut **conn)?)
        });
        match written {
            Ok(()) => {
                self.redis_outage.succeeded();
            }
            Err(e) => {
                self.redis_outage.failed("leader election", &e);
            }
        }
    }

    /// How long a member's presence counts: a few status intervals, and never less than the
    /// role key's TTL.
    fn member_window(&self) -> Duration {
        self.settings.status_interval.saturating_mul(cluster::MEMBER_INTERVALS).max(self.settings.token_ttl)
    }

    /// Removes our presence.
    fn leave(&mut self) {
        let key = cluster::members_key(&self.settings.cluster_id);
        let token = self.election.token().to_string();
        if let Err(e) =
            run(&self.election.redis, |conn| Ok(redis::cmd("HDEL").arg(&key).arg(&token).query::<()>(&mut **conn)?))
        {
            debug!("regbot: could not remove our presence: {e}");
        }
    }

    /// The daemon stops. Every mode: de-register everything. Leader mode: keep the Node
    /// behaviour (the bindings belong to the cluster and the next leader refreshes them)
    /// unless no leader-mode SBC is left to do so while others register from every SBC.
    fn on_prepare(&mut self, req: Option<PrepareStop>) {
        let Some(PrepareStop { done }) = req else {
            self.prepare = never();
            return;
        };
        let unregister = if self.every() {
            true
        } else if self.leader {
            match self.other_members() {
                Ok(others) if !cluster::leader_successor(&others) => {
                    info!("regbot: no leader-mode SBC left to take over; de-registering before stopping");
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    warn!("regbot: cannot read the cluster members ({e}); leaving registrations in place");
                    false
                }
            }
        } else {
            false
        };
        if !unregister {
            let _ = done.send(());
            return;
        }
        if let Err(e) = self.scheduler.send(SchedulerCmd::UnregisterAll { done }) {
            if let SchedulerCmd::UnregisterAll { done } = e.into_inner() {
                let _ = done.send(());
            }
        }
    }

    /// The modes of the other members seen recently.
    fn other_members(&self) -> Result<Vec<RegbotMode>, StoreError> {
        let key = cluster::members_key(&self.settings.cluster_id);
        let raw: HashMap<String, String> =
            run(&self.election.redis, |conn| Ok(redis::cmd("HGETALL").arg(&key).query(&mut **conn)?))?;
        let window = u64::try_from(self.member_window().as_millis()).unwrap_or(u64::MAX);
        Ok(cluster::live_members(&raw, self.election.token(), unix_millis().saturating_sub(window)))
    }

    fn wait_for_first_connect(&mut self) -> bool {
        loop {
            select! {
                recv(self.prepare) -> req => self.on_prepare(req.ok()),
                recv(self.events) -> ev => match ev {
                    Ok(ConnectionEvent::Connected(_)) => return true,
                    Ok(ConnectionEvent::Disconnected { .. }) => {}
                    Err(_) => return false,
                },
                recv(self.shutdown) -> _ => return false,
                recv(self.scheduler_alive) -> _ => {
                    self.scheduler_gone();
                    return false;
                }
            }
        }
    }

    /// The scheduler thread is gone: give the role up now (compare-and-delete, so a key
    /// another SBC holds is left alone) so another SBC takes over at its next check.
    fn scheduler_gone(&mut self) {
        error!("the regbot scheduler thread is gone: giving up the regbot role");
        self.leader = false;
        match self.election.release() {
            Ok(true) => info!("released the regbot role ({})", self.election.key()),
            Ok(false) => {}
            Err(e) => warn!("could not release the regbot role: {e}"),
        }
    }

    /// `checkStatus` of spec 6.1, every status interval.
    fn check(&mut self) {
        debug!("checking in on regbot status");
        self.announce();
        if !self.leader {
            self.try_claim();
            return;
        }
        let asked = Instant::now();
        match self.election.extend() {
            Ok(Extension::Extended) => {
                self.redis_outage.succeeded();
                self.confirmed_at = asked;
                self.send_lease();
                debug!("I am active, and shall continue in my role as regbot");
                self.reconcile();
            }
            Ok(Extension::Lapsed) => {
                self.redis_outage.succeeded();
                // Nobody holds the key: take it back without stopping the regbots.
                match self.election.claim() {
                    Ok(true) => {
                        info!("the regbot key had expired; claimed it again with token {}", self.election.token());
                        self.confirmed_at = asked;
                        self.send_lease();
                        self.reconcile();
                    }
                    Ok(false) => {
                        info!("Someone else grabbed the role!  I need to stand down");
                        self.stand_down();
                    }
                    Err(e) => {
                        self.redis_outage.failed("leader election", &e);
                    }
                }
            }
            Ok(Extension::TakenByOther) => {
                self.redis_outage.succeeded();
                info!("Someone else grabbed the role!  I need to stand down");
                self.stand_down();
            }
            Err(e) => {
                self.redis_outage.failed("leader election", &e);
                // The key expires one TTL after it was last confirmed, and another SBC may
                // take the role at once: stand down at the last check before that moment,
                // not at the first one after it, or both SBCs register for up to an interval.
                if must_stand_down(self.confirmed_at.elapsed(), self.settings.status_interval, self.settings.token_ttl)
                {
                    warn!("cannot confirm the regbot role for {:?}; standing down", self.confirmed_at.elapsed());
                    self.stand_down();
                }
            }
        }
    }

    fn try_claim(&mut self) {
        let asked = Instant::now();
        match self.election.claim() {
            Ok(true) => {
                self.redis_outage.succeeded();
                info!("successfully claimed regbot responsibility with token {}", self.election.token());
                self.leader = true;
                self.confirmed_at = asked;
                self.last_fingerprint = None;
                let _ = self.scheduler.send(SchedulerCmd::Leadership(true));
                self.send_lease();
                self.reconcile();
            }
            Ok(false) => {
                self.redis_outage.succeeded();
                debug!("another SBC holds the regbot role");
            }
            Err(e) => {
                self.redis_outage.failed("leader election", &e);
            }
        }
    }

    /// The scheduler may register until [`lease_length`] after the claim or extension was
    /// asked for (Redis started the key's TTL no earlier).
    fn send_lease(&self) {
        let until = after(self.confirmed_at, lease_length(self.settings.status_interval, self.settings.token_ttl));
        let _ = self.scheduler.send(SchedulerCmd::Lease(until));
    }

    fn stand_down(&mut self) {
        self.leader = false;
        self.last_fingerprint = None;
        let _ = self.scheduler.send(SchedulerCmd::Leadership(false));
    }

    /// Reads the inventory and hands it to the scheduler when anything changed.
    fn reconcile(&mut self) {
        let loaded = self.mysql_read.conn().and_then(|mut conn| Inventory::load(&mut conn));
        let inventory = match loaded {
            Ok(inv) => {
                self.mysql_outage.succeeded();
                inv
            }
            Err(e) => {
                // Keep the regbots as they are until the database answers again.
                self.mysql_outage.failed("reading carriers", &e);
                return;
            }
        };
        let fingerprint = inventory.fingerprint();
        if self.last_fingerprint.as_deref() == Some(fingerprint.as_str()) {
            return;
        }
        let mut wanted = wanted(&inventory, self.settings.contact_use_ip);
        if !self.every() {
            wanted.leader_contacts = self.leader_contacts();
        }
        debug!("regbot: carriers or gateways changed, {} regbots wanted", wanted.specs.len());
        if self.scheduler.send(SchedulerCmd::Apply(wanted)).is_ok() {
            self.last_fingerprint = Some(fingerprint);
        }
    }

    /// What the previous leader registered with (empty when Redis does not answer: then an
    /// old Contact may stay until it expires).
    fn leader_contacts(&self) -> HashMap<String, String> {
        let key = cluster::leader_contacts_key(&self.settings.cluster_id);
        run(&self.election.redis, |conn| Ok(redis::cmd("HGETALL").arg(&key).query(&mut **conn)?)).unwrap_or_else(|e| {
            warn!("regbot: cannot read the previous leader's contacts: {e}");
            HashMap::new()
        })
    }
}

/// Why [`Coordinator::serve`] returned.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    Shutdown,
    SchedulerGone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_without_redis_stands_down_before_its_key_can_lapse() {
        let (interval, ttl) = (Duration::from_millis(500), Duration::from_secs(2));
        assert!(!must_stand_down(Duration::from_millis(1400), interval, ttl));
        assert!(must_stand_down(Duration::from_millis(1500), interval, ttl), "the next check would be after the TTL");
        assert!(must_stand_down(Duration::from_secs(3), interval, ttl));
    }

    #[test]
    fn the_lease_ends_after_the_next_extension_is_due_and_before_the_key_can_lapse() {
        assert_eq!(lease_length(Duration::from_secs(60), Duration::from_secs(70)), Duration::from_secs(65));
        let lease = lease_length(Duration::from_millis(300), Duration::from_secs(2));
        assert!(lease > Duration::from_millis(300) && lease < Duration::from_secs(2), "{lease:?}");
    }

    #[test]
    fn tokens_look_like_short_uuids() {
        let t = new_token();
        assert_eq!(t.len(), 22);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric() && !"0OIl".contains(c)));
        assert_ne!(t, new_token());
    }
}
