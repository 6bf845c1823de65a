//! Outbound registration ("regbot", spec 6), the gateway OPTIONS pinger (spec 7) and the
//! `sbc_addresses` publisher (spec 8).
//!
//! Threads (all named, all stopped by the shutdown channel):
//!
//! * `regbot-leader` is the [`leader::Coordinator`]: it holds or waits for
//!   `<cluster>:regbot-token` (in `every` mode it needs no election) and reads carriers and
//!   gateways ([`leader`], `reconcile`) into `spec::RegistrationSpec`s;
//! * `regbot` is the scheduler: the timer and REGISTER in flight of every
//!   `registration::Registration` (`scheduler`, `registration`);
//! * `regbot-store` writes `register_status`, disables carriers and keeps the ephemeral
//!   gateways (`store_writer`, `ephemeral`, `dns`; the SQL is in `crate::store::carriers`);
//! * `gw-pinger` pings carrier gateways with OPTIONS (`pinger`);
//! * `sbc-addresses` publishes our public addresses (`sbc_addresses`).
//!
//! Each thread that follows the drachtio connection is a subscriber of the drachtio client
//! of its own: the daemon gets their senders from [`subscribe`] before it starts the client,
//! calls [`start`] with the [`RegbotEvents`], drops the shutdown sender to stop, joins
//! [`RegbotHandles::join`] and only then shuts the drachtio client down. The CLI asks for a
//! [`RegbotSnapshot`] through [`RegbotHandles::status`] (see [`query_status`]).
//!
//! In leader mode (`SBC_REGBOT_MODE=leader`, the default) nothing is de-registered when the
//! role moves to another SBC: the bindings belong to the cluster, and the next leader
//! refreshes them with the same Call-IDs. With `SBC_REGBOT_MODE=every` each SBC registers
//! every carrier with its own Call-ID and Contact, and de-registers them when it stops
//! ([`RegbotHandles::prepare_stop`]); `cluster` describes what the SBCs share in Redis.

pub(crate) mod addresses;
pub mod alert_sink;
pub(crate) mod cluster;
pub(crate) mod dns;
pub(crate) mod ephemeral;
pub mod leader;
mod mode;
pub(crate) mod pinger;
pub(crate) mod reconcile;
pub(crate) mod register_status;
pub(crate) mod registration;
pub(crate) mod sbc_addresses;
pub(crate) mod scheduler;
pub(crate) mod spec;
pub(crate) mod status;
pub(crate) mod store_writer;
pub(crate) mod timing;

use std::fmt;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use log::{error, warn};

use crate::drachtio::{ConnectionEvent, DrachtioHandle};
use crate::shared::Shared;
use crate::store::mysql::MysqlPool;
use crate::store::redis::RedisPool;
use alert_sink::AlertSink;
pub use dns::DnsSettings;
pub use mode::{RegbotMode, SentBy};
pub use status::{query_status, RegbotInfo, RegbotRole, RegbotSnapshot, RegbotState, StatusRequest};

/// Jobs waiting for the store writer; beyond this they are dropped with a warning (the next
/// REGISTER outcome writes the status again).
const STORE_QUEUE: usize = 4096;
/// CLI status requests waiting for the scheduler.
const STATUS_QUEUE: usize = 16;

/// Everything the roles of this module read from the configuration; `config` fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegbotSettings {
    /// `JAMBONES_CLUSTER_ID`: prefix of `<cluster>:regbot-token`.
    pub cluster_id: String,
    /// `JAMBONES_REGBOT_REGISTER_FAILURE_THRESHOLD`: consecutive "remove" failures before
    /// auto-disable; default 3.
    pub failure_threshold: u32,
    /// `JAMBONES_REGBOT_FAILURE_RETRY_INTERVAL`, default 300 s.
    pub failure_retry_interval: Duration,
    /// `JAMBONES_REGBOT_DEFAULT_EXPIRES_INTERVAL`: the Expires we ask for, and the fallback
    /// when the 200 has none; default 3600 s.
    pub default_expires: Duration,
    /// `JAMBONES_REGBOT_MIN_EXPIRES_INTERVAL`: floor for the expires a carrier grants; 30 s.
    pub min_expires: Duration,
    /// `JAMBONES_REGBOT_CONTACT_USE_IP` truthy.
    pub contact_use_ip: bool,
    /// `JAMBONES_REGBOT_USER_AGENT`, default `Jambonz 0.9.6`.
    pub user_agent: String,
    /// `JAMBONES_REGBOT_BATCH_SIZE`: pause after this many newly started regbots; default 10.
    pub batch_size: usize,
    /// `JAMBONES_REGBOT_BATCH_SLEEP_MS`, default 250 ms.
    pub batch_sleep: Duration,
    /// `SBC_REGBOT_STATUS_INTERVAL_MS`
    pub status_interval: Duration,
    /// `SBC_REGBOT_TOKEN_TTL_S`
    pub token_ttl: Duration,
    /// `SBC_REGBOT_CLAIM_JITTER_MS`
    pub claim_jitter: Duration,
    /// `SBC_REGBOT_MODE`: one elected SBC, or every SBC, registers.
    pub mode: RegbotMode,
    /// `REGISTER_RESPONSE_REMOVE`: REGISTER answers counting toward auto-disable.
    pub register_response_remove: Vec<u16>,
    /// `SEND_OPTIONS_PING_INTERVAL`, default 60 s between gateway OPTIONS rounds.
    pub options_ping_interval: Duration,
    /// `OPTIONS_PING_TTL`, default 300 s: TTL of the gateway blacklist key.
    pub options_ping_ttl: Duration,
    /// `OPTIONS_RESPONSE_REMOVE`: OPTIONS answers that switch a gateway's pings off.
    pub options_response_remove: Vec<u16>,
    /// `SBC_PUBLIC_ADDRESS_KEEP_ALIVE_IN_MILISECOND` (sic), default 900 000 ms.
    pub sbc_public_address_keep_alive: Duration,
    /// `DEAD_SBC_IN_SECOND`, default 3600 s: `sbc_addresses` rows older than this are deleted.
    pub dead_sbc_age: Duration,
    /// Where SRV/A lookups for registration trunks go. `config` is a pure function of the
    /// environment and leaves glibc's fallback (127.0.0.1); [`start`] reads `/etc/resolv.conf`.
    pub dns: DnsSettings,
}

#[derive(Debug)]
pub enum RegbotError {
    /// A thread could not be started.
    Spawn { thread: &'static str, error: std::io::Error },
    /// The scheduler is not running (stopped, or did not answer in time).
    NotRunning,
}

impl fmt::Display for RegbotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegbotError::Spawn { thread, error } => write!(f, "cannot start thread {thread}: {error}"),
            RegbotError::NotRunning => write!(f, "the regbot scheduler is not running"),
        }
    }
}

impl std::error::Error for RegbotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegbotError::Spawn { error, .. } => Some(error),
            RegbotError::NotRunning => None,
        }
    }
}

/// The running threads of this module and the CLI's way in.
pub struct RegbotHandles {
    pub threads: Vec<(&'static str, JoinHandle<()>)>,
    /// Send a [`StatusRequest`] to get a [`RegbotSnapshot`].
    pub status: Sender<StatusRequest>,
    prepare: Sender<leader::PrepareStop>,
}

impl RegbotHandles {
    /// Call before the drachtio connection stops reading: de-registers what must be
    /// de-registered at shutdown (everything with `SBC_REGBOT_MODE=every`; in leader mode only
    /// when no other leader-mode SBC is left to refresh the bindings), and waits for it, at most
    /// `timeout`. Returns false when that did not finish in time.
    pub fn prepare_stop(&self, timeout: Duration) -> bool {
        let (done, finished) = bounded(1);
        if self.prepare.send(leader::PrepareStop { done }).is_err() {
            return true;
        }
        match finished.recv_timeout(timeout) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => true,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                warn!("regbot: de-registration before stopping unfinished after {timeout:?}");
                false
            }
        }
    }

    /// Waits for every thread (after the shutdown sender was dropped).
    pub fn join(self) {
        for (name, handle) in self.threads {
            if handle.join().is_err() {
                error!("thread {name} ended with a panic");
            }
        }
    }
}

/// Starts every thread of this module with `settings`; the DNS servers come from
/// /etc/resolv.conf (read here, not by the configuration, which is a function of the
/// environment only).
pub fn start(
    settings: &RegbotSettings,
    shared: &Shared,
    drachtio: DrachtioHandle,
    events: RegbotEvents,
) -> Result<RegbotHandles, RegbotError> {
    let settings =
        RegbotSettings { dns: DnsSettings::from_resolv_conf(Path::new("/etc/resolv.conf")), ..settings.clone() };
    start_with(settings, shared, drachtio, events)
}

/// The drachtio connection events of the roles of this module, one subscription each.
pub struct RegbotEvents {
    leader: Receiver<ConnectionEvent>,
    scheduler: Receiver<ConnectionEvent>,
    pinger: Receiver<ConnectionEvent>,
    sbc_addresses: Receiver<ConnectionEvent>,
}

/// Subscribes the roles of this module to the drachtio connection: the senders go into the
/// drachtio client's subscriber list, the [`RegbotEvents`] to [`start`].
pub fn subscribe() -> (Vec<Sender<ConnectionEvent>>, RegbotEvents) {
    let (leader_tx, leader) = unbounded();
    let (scheduler_tx, scheduler) = unbounded();
    let (pinger_tx, pinger) = unbounded();
    let (sbc_addresses_tx, sbc_addresses) = unbounded();
    (
        vec![leader_tx, scheduler_tx, pinger_tx, sbc_addresses_tx],
        RegbotEvents { leader, scheduler, pinger, sbc_addresses },
    )
}

/// The stores the roles of this module use.
pub struct RegbotPools {
    pub redis: RedisPool,
    pub mysql_read: MysqlPool,
    /// UPDATEs and INSERTs (the write pool when one is configured).
    pub mysql_write: MysqlPool,
}

/// [`start`] with the settings as given, DNS servers included (tests shorten the intervals
/// and point DNS elsewhere).
pub fn start_with(
    settings: RegbotSettings,
    shared: &Shared,
    drachtio: DrachtioHandle,
    events: RegbotEvents,
) -> Result<RegbotHandles, RegbotError> {
    let alerts = AlertSink::new(shared.alerts.clone());
    let shared_supervisor = shared.supervisor.clone();
    let shutdown = shared.shutdown.clone();
    let (redis, mysql_read, mysql_write) = (shared.redis.clone(), shared.mysql.clone(), shared.mysql_write.clone());
    let (commands_tx, commands) = unbounded();
    let (store_tx, store_rx) = bounded(STORE_QUEUE);
    let (status_tx, status_rx) = bounded(STATUS_QUEUE);
    let (prepare_tx, prepare_rx) = bounded(1);
    // Nothing is ever sent: the leader sees it disconnected when the scheduler thread is gone.
    let (scheduler_alive, scheduler_liveness) = bounded::<()>(0);

    let election =
        leader::LeaderElection::new(redis.clone(), &settings.cluster_id, leader::new_token(), settings.token_ttl);
    let leader_role = leader::Coordinator::new(
        settings.clone(),
        election,
        mysql_read.clone(),
        leader::CoordinatorLinks {
            events: events.leader,
            scheduler: commands_tx,
            scheduler_alive: scheduler_liveness,
            prepare_stop: prepare_rx,
            shutdown: shutdown.clone(),
        },
    );
    let scheduler = scheduler::Scheduler::new(
        settings.clone(),
        drachtio.clone(),
        commands,
        events.scheduler,
        status_rx,
        store_tx,
        shutdown.clone(),
    );
    let ephemeral =
        ephemeral::EphemeralGateways::new(redis.clone(), Box::new(dns::Resolver::new(settings.dns.clone())));
    let writer = store_writer::StoreWriter::new(
        (redis.clone(), settings.cluster_id.clone()),
        mysql_read.clone(),
        mysql_write.clone(),
        ephemeral,
        store_rx,
        shutdown.clone(),
        alerts.clone(),
    );
    let pinger = pinger::GatewayPinger::new(
        settings.clone(),
        RegbotPools { redis, mysql_read, mysql_write: mysql_write.clone() },
        drachtio,
        events.pinger,
        shutdown.clone(),
        alerts,
    );
    let publisher = sbc_addresses::SbcAddressPublisher::new(
        settings.sbc_public_address_keep_alive,
        settings.dead_sbc_age,
        mysql_write,
        events.sbc_addresses,
        shutdown.clone(),
    );

    let mut threads = Vec::new();
    let mut spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| -> Result<(), RegbotError> {
        let handle = shared_supervisor.spawn(name, f).map_err(|error| RegbotError::Spawn { thread: name, error })?;
        threads.push((name, handle));
        Ok(())
    };
    // Consumers first, so no event is sent to a thread that does not exist yet.
    spawn("regbot-store", Box::new(move || writer.run()))?;
    spawn(
        "regbot",
        Box::new(move || {
            // Dropped when the scheduler ends or panics: the leader then gives up the role.
            let _alive = scheduler_alive;
            scheduler.run()
        }),
    )?;
    spawn("regbot-leader", Box::new(move || leader_role.run()))?;
    spawn("gw-pinger", Box::new(move || pinger.run()))?;
    spawn("sbc-addresses", Box::new(move || publisher.run()))?;
    Ok(RegbotHandles { threads, status: status_tx, prepare: prepare_tx })
}
