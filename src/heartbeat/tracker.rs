//! One heartbeat at a time, and the expiry sweep (spec 5.2–5.4), as plain methods so that
//! tests can drive them against a real Redis with injected instants and no threads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::drain::{fs_member_key, DrainedServers};
use super::guard::HeartbeatGuard;
use crate::drachtio::IncomingRequest;
use crate::net::Cidr;
use crate::sip::{ResponseBuilder, SipMessage};
use crate::store::keys::ClusterSets;
use crate::store::outage::OutageLog;
use crate::store::redis::{checkout, retry_on_lost_connection, RedisPool};
use crate::store::StoreError;
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Feature,
    Rtp,
}

/// What an OPTIONS request is (spec 5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ping<'a> {
    /// A heartbeat from a feature server (`X-FS-Status`) or an RTP server (`X-RTP-Status`,
    /// which wins when both are present).
    Internal { kind: ServerKind, status: &'a str, service_url: Option<&'a str> },
    /// Anything else (carriers, monitoring): answered `200` and otherwise ignored.
    External,
}

pub fn classify(message: &SipMessage) -> Ping<'_> {
    let service_url = message.header("X-FS-ServiceUrl");
    if let Some(status) = message.header("X-RTP-Status") {
        Ping::Internal { kind: ServerKind::Rtp, status, service_url }
    } else if let Some(status) = message.header("X-FS-Status") {
        Ping::Internal { kind: ServerKind::Feature, status, service_url }
    } else {
        Ping::External
    }
}

/// Only this exact, case-sensitive value keeps a server in its set; `closed`, an empty value
/// or anything else takes it out (spec 5.2).
const OPEN: &str = "open";

/// One Redis set and when this process last heard from each of its members.
#[derive(Debug)]
struct Tracked {
    set: String,
    last_seen: HashMap<String, Instant>,
}

impl Tracked {
    fn new(set: &str) -> Tracked {
        Tracked { set: set.to_string(), last_seen: HashMap::new() }
    }

    /// Queues `SADD`/`SREM` plus `SCARD` on `pipe`.
    fn queue(&self, pipe: &mut redis::Pipeline, open: bool, member: &str) {
        pipe.cmd(if open { "SADD" } else { "SREM" }).arg(&self.set).arg(member);
        pipe.cmd("SCARD").arg(&self.set);
    }

    /// Records what Redis confirmed. Only then: a member whose `SREM` failed must stay
    /// tracked, or nobody would ever expire it.
    fn confirmed(&mut self, open: bool, member: &str, now: Instant) {
        if open {
            self.last_seen.insert(member.to_string(), now);
        } else {
            self.last_seen.remove(member);
        }
    }

    /// Logs a set change (`changed` is the SADD/SREM reply); unchanged sets are not logged,
    /// so a server that keeps checking in does not fill the log.
    fn log_change(&self, open: bool, member: &str, changed: i64, count: i64) {
        if changed == 0 {
            return;
        }
        if open {
            info!("added new member {member} to {} we now have {count}", self.set);
        } else {
            info!("removed member {member} from {} we now have {count}", self.set);
        }
    }

    fn expired(&self, now: Instant, expires: Duration) -> Vec<String> {
        let mut keys: Vec<String> = self
            .last_seen
            .iter()
            .filter(|(_, seen)| now.saturating_duration_since(**seen) > expires)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }
}

/// The heartbeat state of one sidecar: the local lastSeen maps of the three sets.
///
/// Expiry is per process (spec 5.4): each SBC expires only what it tracked itself, so these
/// maps are the truth for expiry and Redis is the truth for membership.
pub struct Tracker {
    sets: ClusterSets,
    redis: RedisPool,
    expires: Duration,
    fs: Tracked,
    rtp: Tracked,
    urls: Tracked,
    /// Redis failures are logged once per outage, not once per heartbeat.
    redis_outage: OutageLog,
    metrics: Metrics,
    /// Which sources may send heartbeats, which service URLs are stored.
    guard: HeartbeatGuard,
    /// The member (`ip:port`) whose heartbeat stored each service URL: a `closed` heartbeat
    /// removes a URL only when it comes from there. URLs loaded at startup have no entry (their
    /// host is then the only check).
    url_owner: HashMap<String, String>,
    /// `SBC_HEARTBEAT_MAX_SERVERS`: the most members each local map (and so what this process
    /// adds to each set) holds; a new one beyond it gets 503.
    max_members: usize,
}

/// `SBC_HEARTBEAT_MAX_SERVERS` default: far more feature and RTP servers than a cluster has.
pub const DEFAULT_MAX_SERVERS: usize = 1000;

impl Tracker {
    pub fn new(cluster_id: &str, expires: Duration, redis: RedisPool) -> Tracker {
        let sets = ClusterSets::new(cluster_id);
        Tracker {
            fs: Tracked::new(&sets.active_fs),
            rtp: Tracked::new(&sets.active_rtp),
            urls: Tracked::new(&sets.fs_service_url),
            sets,
            redis,
            expires,
            redis_outage: OutageLog::new("heartbeat", "redis")
                .with_consequence(", heartbeats get 503 until it works again"),
            metrics: Metrics::disabled(),
            guard: HeartbeatGuard::default(),
            url_owner: HashMap::new(),
            max_members: DEFAULT_MAX_SERVERS,
        }
    }

    /// At most `max` members per set are tracked; a heartbeat that would add one more gets
    /// 503 (see [`DEFAULT_MAX_SERVERS`]).
    pub fn set_max_members(&mut self, max: usize) {
        self.max_members = max;
    }

    /// Heartbeats are accepted only from these networks (`SBC_HEARTBEAT_CIDRS`); without
    /// this call, from the default list (loopback and private networks).
    pub fn set_allowed_sources(&mut self, allowed: Vec<Cidr>) {
        self.guard = HeartbeatGuard::new(allowed);
    }

    /// Sends the `featureservers` / `rtpservers` gauges to `metrics`.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = metrics;
    }

    /// Startup load (spec 5.4): every member already in the three sets is treated as seen
    /// `now`, so members left behind by dead servers expire unless they check in. Members this
    /// process already tracks keep their own time.
    pub fn load(&mut self, now: Instant) -> Result<(), StoreError> {
        let pool = self.redis.clone();
        let result = retry_on_lost_connection(&pool, || self.load_sets(now));
        self.redis_outage.note(&result, "loading the feature/RTP server sets");
        result
    }

    fn load_sets(&mut self, now: Instant) -> Result<(), StoreError> {
        let mut conn = checkout(&self.redis)?;
        let (fs, rtp, urls): (Vec<String>, Vec<String>, Vec<String>) = redis::pipe()
            .cmd("SMEMBERS")
            .arg(&self.fs.set)
            .cmd("SMEMBERS")
            .arg(&self.rtp.set)
            .cmd("SMEMBERS")
            .arg(&self.urls.set)
            .query(&mut *conn)?;
        for (tracked, members) in [(&mut self.fs, fs), (&mut self.rtp, rtp), (&mut self.urls, urls)] {
            for m in members {
                tracked.last_seen.entry(m).or_insert(now);
            }
        }
        Ok(())
    }

    /// Answers one OPTIONS request: plain `200` for external pings; for heartbeats `200` with
    /// `X-Members: <count of the FS or RTP set>`, `503` when Redis failed, or `403` (and no
    /// change) when the source is outside `SBC_HEARTBEAT_CIDRS`. An invalid `X-FS-ServiceUrl`
    /// is ignored; the heartbeat itself still counts.
    pub fn answer(&mut self, request: &IncomingRequest, now: Instant) -> ResponseBuilder {
        match classify(&request.message) {
            Ping::External => request.response(200),
            Ping::Internal { kind, status, service_url } => {
                let source = (request.meta.address.as_str(), request.meta.port);
                if !self.guard.allows_source(source.0) {
                    self.guard.note_refused(kind, source.0, source.1, now);
                    return request.response(403);
                }
                let guard = &mut self.guard;
                let service_url = service_url.filter(|url| guard.check_service_url(url, source.0, now));
                if status == OPEN {
                    if let Some(set) = self.full_set(kind, source, service_url) {
                        let set = set.to_string();
                        self.guard.note_full(&set, self.max_members, source.0, source.1, now);
                        return request.response(503);
                    }
                }
                match self.heartbeat(kind, source, status, service_url, now) {
                    Ok(members) => request.response(200).header("X-Members", &members.to_string()),
                    Err(_) => request.response(503),
                }
            }
        }
    }

    /// The name of the set an `open` heartbeat would add a member to although its local map
    /// is full; `None` when it may be recorded.
    fn full_set(&self, kind: ServerKind, (address, port): (&str, u16), service_url: Option<&str>) -> Option<&str> {
        let (tracked, member) = match kind {
            ServerKind::Feature => (&self.fs, fs_member_key(address, port)),
            ServerKind::Rtp => (&self.rtp, address.to_string()),
        };
        let full = |t: &Tracked, m: &str| t.last_seen.len() >= self.max_members && !t.last_seen.contains_key(m);
        if full(tracked, &member) {
            return Some(&tracked.set);
        }
        service_url.filter(|url| full(&self.urls, url)).map(|_| self.urls.set.as_str())
    }

    /// Records one heartbeat and returns the size of the FS or RTP set afterwards.
    ///
    /// One Redis round trip in the steady state. An `open` feature server first needs the
    /// drained set; that read also asks whether the server (and its URL) is already a member,
    /// so a server that keeps checking in costs that single pipeline. Only a change (a new
    /// server, a drained one to take out) needs a second one. Every other heartbeat is one
    /// `SADD`/`SREM` + `SCARD` pipeline. The drained set is read whole (it holds a handful of
    /// entries) so that IPs and `ip:port`s in any spelling match.
    pub fn heartbeat(
        &mut self,
        kind: ServerKind,
        (address, port): (&str, u16),
        status: &str,
        service_url: Option<&str>,
        now: Instant,
    ) -> Result<i64, StoreError> {
        // Local state only changes after Redis confirmed, so a repeated attempt is harmless.
        let pool = self.redis.clone();
        let result = retry_on_lost_connection(&pool, || self.record(kind, (address, port), status, service_url, now));
        self.redis_outage.note(&result, "recording a heartbeat");
        result
    }

    fn record(
        &mut self,
        kind: ServerKind,
        (address, port): (&str, u16),
        status: &str,
        service_url: Option<&str>,
        now: Instant,
    ) -> Result<i64, StoreError> {
        let mut conn = checkout(&self.redis)?;
        let mut open = status == OPEN;
        let member = match kind {
            ServerKind::Feature => fs_member_key(address, port),
            ServerKind::Rtp => address.to_string(),
        };
        if open && kind == ServerKind::Feature {
            let mut pipe = redis::pipe();
            pipe.cmd("SMEMBERS").arg(&self.sets.drained_fs);
            pipe.cmd("SISMEMBER").arg(&self.fs.set).arg(&member);
            pipe.cmd("SCARD").arg(&self.fs.set);
            let (drained, present, count, url_present): (Vec<String>, bool, i64, bool) = match service_url {
                Some(url) => pipe.cmd("SISMEMBER").arg(&self.urls.set).arg(url).query(&mut *conn)?,
                None => {
                    let (drained, present, count) = pipe.query(&mut *conn)?;
                    (drained, present, count, true)
                }
            };
            if DrainedServers::new(drained).contains_source(address, port) {
                warn!("drained feature server attempted to check in - rejecting server={member}");
                open = false;
            } else if present && url_present {
                self.fs.confirmed(true, &member, now);
                if let Some(url) = service_url {
                    self.urls.confirmed(true, url, now);
                    self.url_owner.insert(url.to_string(), member.clone());
                }
                tracked_servers_gauge(&self.metrics, kind, self.tracked(kind));
                return Ok(count);
            }
        }
        // `closed` takes out only the URL this very server put in (another server on the same
        // host may have announced it).
        let service_url = service_url.filter(|url| open || self.url_owner.get(*url).is_none_or(|o| *o == member));
        let tracked = match kind {
            ServerKind::Feature => &mut self.fs,
            ServerKind::Rtp => &mut self.rtp,
        };
        let mut pipe = redis::pipe();
        tracked.queue(&mut pipe, open, &member);
        let count = match service_url {
            None => {
                let (changed, count): (i64, i64) = pipe.query(&mut *conn)?;
                tracked.confirmed(open, &member, now);
                tracked.log_change(open, &member, changed, count);
                count
            }
            Some(url) => {
                self.urls.queue(&mut pipe, open, url);
                let (changed, count, url_changed, url_count): (i64, i64, i64, i64) = pipe.query(&mut *conn)?;
                tracked.confirmed(open, &member, now);
                tracked.log_change(open, &member, changed, count);
                self.urls.confirmed(open, url, now);
                self.urls.log_change(open, url, url_changed, url_count);
                if open {
                    self.url_owner.insert(url.to_string(), member.clone());
                } else {
                    self.url_owner.remove(url);
                }
                count
            }
        };
        tracked_servers_gauge(&self.metrics, kind, self.tracked(kind));
        Ok(count)
    }

    /// Removes every member not heard from for longer than the expiry interval from its set
    /// (spec 5.4), in one pipeline. A member is forgotten locally only once Redis confirmed
    /// the `SREM`, so an outage delays expiry instead of losing it. Returns how many expired.
    pub fn sweep(&mut self, now: Instant) -> Result<usize, StoreError> {
        let pool = self.redis.clone();
        let result = retry_on_lost_connection(&pool, || self.expire(now));
        self.redis_outage.note(&result, "expiring feature/RTP servers");
        result
    }

    fn expire(&mut self, now: Instant) -> Result<usize, StoreError> {
        let expires = self.expires;
        let mut all = [&mut self.fs, &mut self.rtp, &mut self.urls];
        let expired: Vec<(usize, String)> = all
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.expired(now, expires).into_iter().map(move |k| (i, k)))
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let mut conn = checkout(&self.redis)?;
        let mut pipe = redis::pipe();
        for (i, key) in &expired {
            let set = &all[*i].set;
            pipe.cmd("SREM").arg(set).arg(key).ignore().cmd("SCARD").arg(set);
        }
        let counts: Vec<i64> = pipe.query(&mut *conn)?;
        for ((i, key), count) in expired.iter().zip(counts) {
            let tracked = &mut all[*i];
            tracked.last_seen.remove(key);
            if *i == 2 {
                self.url_owner.remove(key);
            }
            info!("expired member {key} from {} we now have {count}", tracked.set);
        }
        for kind in [ServerKind::Feature, ServerKind::Rtp] {
            tracked_servers_gauge(&self.metrics, kind, self.tracked(kind));
        }
        Ok(expired.len())
    }

    /// How many servers of a kind this process tracks (the value of the statsd gauge).
    pub fn tracked(&self, kind: ServerKind) -> usize {
        match kind {
            ServerKind::Feature => self.fs.last_seen.len(),
            ServerKind::Rtp => self.rtp.last_seen.len(),
        }
    }
}

/// The statsd gauge `featureservers` / `rtpservers` (spec 10.1): the number of servers this
/// process tracks locally, not the size of the shared Redis set.
fn tracked_servers_gauge(metrics: &Metrics, kind: ServerKind, tracked: usize) {
    match kind {
        ServerKind::Feature => metrics.feature_servers(tracked),
        ServerKind::Rtp => metrics.rtp_servers(tracked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::{pool, RedisSettings};

    #[test]
    fn a_failed_expiry_keeps_the_member_for_the_next_sweep() {
        let unreachable = pool(&RedisSettings::direct("127.0.0.1", 1, Duration::from_millis(200), 1)).unwrap();
        let mut t = Tracker::new("test-unreachable", Duration::from_secs(60), unreachable);
        let t0 = Instant::now();
        t.fs.last_seen.insert("127.0.0.20:5070".to_string(), t0);
        assert!(t.sweep(t0 + Duration::from_secs(61)).is_err());
        assert_eq!(t.tracked(ServerKind::Feature), 1);
        // and a heartbeat that Redis did not confirm changes nothing locally
        assert!(t.heartbeat(ServerKind::Feature, ("127.0.0.20", 5070), "closed", None, t0).is_err());
        assert!(t.heartbeat(ServerKind::Rtp, ("127.0.0.30", 1), "open", None, t0).is_err());
        assert_eq!(t.tracked(ServerKind::Feature), 1);
        assert_eq!(t.tracked(ServerKind::Rtp), 0);
    }
}
