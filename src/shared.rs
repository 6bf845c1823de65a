//! [`Shared`]: what every role is given when it starts — the stores, telemetry, the ban table,
//! the stop signal and the supervisor of its threads. Built once by the daemon; a role takes
//! what it needs from it, and a collaborator production needs cannot be forgotten: there is no
//! optional builder that would fall back to a silent default.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::bans::{BanSettings, Bans};
use crate::store::mysql::MysqlPool;
use crate::store::redis::RedisPool;
use crate::supervise::Supervisor;
use crate::telemetry::{AlertSender, Metrics};

#[derive(Clone)]
pub struct Shared {
    pub redis: RedisPool,
    /// The read pool (and the write pool when no separate one is configured).
    pub mysql: MysqlPool,
    /// UPDATEs and INSERTs: the write pool when one is configured, else the read pool.
    pub mysql_write: MysqlPool,
    /// statsd (disabled unless `ENABLE_METRICS=1`).
    pub metrics: Metrics,
    /// InfluxDB alerts, through the alerts writer's queue.
    pub alerts: AlertSender,
    /// Failed authentications per source and the bans they lead to: counted by the registrar,
    /// listed and lifted over the CLI socket.
    pub bans: Arc<Bans>,
    /// Roles stop when every sender of this channel is gone (the daemon drops its one).
    pub shutdown: Receiver<()>,
    /// Starts the roles' threads and tells the daemon when one ends.
    pub supervisor: Supervisor,
}

impl Shared {
    /// For tests of one role: the given stores, metrics off, alerts into a queue nobody reads,
    /// a ban table with the default settings, a stop signal that never comes, threads nobody
    /// watches. Replace a field with struct update syntax to observe it
    /// (`Shared { bans, ..Shared::for_tests(…) }`).
    pub fn for_tests(mysql: MysqlPool, redis: RedisPool) -> Shared {
        Shared {
            redis,
            mysql_write: mysql.clone(),
            mysql,
            metrics: Metrics::disabled(),
            alerts: AlertSender::in_memory(1).0,
            bans: Arc::new(Bans::new(BanSettings::default())),
            shutdown: crossbeam_channel::never(),
            supervisor: Supervisor::unwatched(),
        }
    }
}
