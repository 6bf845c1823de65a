//! The OPTIONS role (spec 5): heartbeats from feature servers and RTP servers keep them in the
//! cluster's Redis sets, a periodic sweep expires those that went silent, and operators drain
//! feature servers through `<cluster>:drained-fs` (written by the CLI server, read here).
//!
//! One thread: requests and the sweep timer are multiplexed with `select!`, so the lastSeen
//! maps need no lock. The per-heartbeat logic lives in [`Tracker`] and is tested against a real
//! Redis without threads.

pub(crate) mod drain;
pub mod guard;
pub(crate) mod tracker;

use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, tick, Receiver};
use log::{debug, info, warn};

use crate::drachtio::IncomingRequest;
use crate::net::Cidr;
use crate::shared::Shared;
pub use crate::store::keys::ClusterSets;
pub use drain::{fs_member_key, DrainedServers, FsEndpoint};
pub use guard::{valid_service_url, HeartbeatGuard, DEFAULT_HEARTBEAT_CIDRS};
pub use tracker::{classify, Ping, ServerKind, Tracker, DEFAULT_MAX_SERVERS};

#[derive(Debug, Clone)]
pub struct HeartbeatSettings {
    /// `JAMBONES_CLUSTER_ID` (`default` when unset): the prefix of the Redis set names.
    pub cluster_id: String,
    /// `CHECK_EXPIRES_INTERVAL`: how often the expiry sweep runs (Node default 20 s).
    pub check_interval: Duration,
    /// `EXPIRES_INTERVAL`: a member silent for longer than this is expired (Node default 60 s).
    pub expires_interval: Duration,
    /// `SBC_HEARTBEAT_CIDRS`: the only sources whose heartbeats change the server sets.
    pub allowed_sources: Vec<Cidr>,
    /// `SBC_HEARTBEAT_MAX_SERVERS`: the most members tracked per set; beyond, 503.
    pub max_servers: usize,
}

/// The sweep never runs more often than this, whatever the configuration says: a zero
/// interval would turn the timer into a busy loop.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The heartbeat role: answers every OPTIONS drachtio routes to us and runs the expiry sweep.
pub struct HeartbeatRole {
    settings: HeartbeatSettings,
    tracker: Tracker,
    requests: Receiver<IncomingRequest>,
    shutdown: Receiver<()>,
}

impl HeartbeatRole {
    /// Answers the OPTIONS of `requests`, keeps the sets in `shared.redis`, sends the
    /// `featureservers` / `rtpservers` gauges to `shared.metrics`.
    pub fn new(settings: HeartbeatSettings, shared: &Shared, requests: Receiver<IncomingRequest>) -> HeartbeatRole {
        let mut tracker = Tracker::new(&settings.cluster_id, settings.expires_interval, shared.redis.clone());
        tracker.set_allowed_sources(settings.allowed_sources.clone());
        tracker.set_max_members(settings.max_servers);
        tracker.set_metrics(shared.metrics.clone());
        HeartbeatRole { settings, tracker, requests, shutdown: shared.shutdown.clone() }
    }

    /// Runs until `shutdown` receives a message or is disconnected.
    pub fn run(self) {
        let HeartbeatRole { settings, mut tracker, mut requests, shutdown } = self;
        info!(
            "heartbeat role started cluster={} check_interval_ms={} expires_ms={}",
            settings.cluster_id,
            settings.check_interval.as_millis(),
            settings.expires_interval.as_millis()
        );
        // If Redis is down at startup the load is retried before each sweep until it works:
        // without it, members left behind by servers that died while we were down never expire.
        let mut loaded = tracker.load(Instant::now()).is_ok();
        let sweep = tick(settings.check_interval.max(MIN_CHECK_INTERVAL));
        loop {
            select! {
                recv(requests) -> request => match request {
                    Ok(request) => answer(&mut tracker, request),
                    Err(_) => {
                        // The drachtio client has gone; servers that stop checking in must
                        // still expire, so keep sweeping until told to stop.
                        debug!("heartbeat role: request channel closed");
                        requests = never();
                    }
                },
                recv(sweep) -> _ => {
                    let now = Instant::now();
                    if !loaded {
                        loaded = tracker.load(now).is_ok();
                    }
                    // A failed sweep keeps its members and is retried on the next tick; the
                    // tracker logs the outage.
                    let _ = tracker.sweep(now);
                }
                recv(shutdown) -> _ => {
                    // The drachtio client hands out nothing new once we are told to stop:
                    // answer the heartbeats it already queued.
                    while let Ok(request) = requests.try_recv() {
                        answer(&mut tracker, request);
                    }
                    break;
                }
            }
        }
        info!("heartbeat role stopped");
    }
}

fn answer(tracker: &mut Tracker, request: IncomingRequest) {
    if !request.method().eq_ignore_ascii_case("OPTIONS") {
        // drachtio only routes OPTIONS here; anything else is a wiring mistake, not a heartbeat.
        warn!("heartbeat role got a {} request; answering 405", request.method());
        let response = request.response(405).header("Allow", "OPTIONS");
        request.respond(response);
        return;
    }
    let response = tracker.answer(&request, Instant::now());
    request.respond(response);
}
