//! What the registrar tells `sbcctl status`: its stores (reachable, since when, last error),
//! the accounts whose webhook breaker is open, the active bans and the REGISTER outcomes of
//! the last minute.
//!
//! The store state is what REGISTERs last found, refreshed by one probe per store (`PING`,
//! `SELECT 1`) when the status is asked for, so an idle SBC whose Redis went away still says
//! so. A store known to be down is probed at most once per `health::PROBE_EVERY`, as for
//! REGISTERs.

use std::time::Instant;

use mysql::prelude::Queryable;

use super::health::{StoreHealth, StoreReport};
use super::hook_breaker::OpenBreaker;
use super::outcomes::CLASSES;
use super::Registrar;
use crate::store::redis::run;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarReport {
    pub redis: StoreReport,
    pub mysql: StoreReport,
    pub open_breakers: Vec<OpenBreaker>,
    pub active_bans: usize,
    /// `(class, count)` in the order of `outcomes::CLASSES`.
    pub outcomes: Vec<(&'static str, u64)>,
}

fn probe(health: &StoreHealth, what: &str, attempt: impl FnOnce() -> Result<(), StoreError>) {
    if !health.admit() {
        return;
    }
    match attempt() {
        Ok(()) => health.succeeded(),
        Err(e) => health.failed(what, &e),
    }
}

impl Registrar {
    /// Probes both stores once and reports.
    pub fn status_report(&self) -> RegistrarReport {
        probe(&self.redis_health, "status probe (PING)", || {
            run(&self.redis, |conn| Ok(redis::cmd("PING").query::<String>(&mut **conn).map(|_| ())?))
        });
        probe(&self.mysql_health, "status probe (SELECT 1)", || {
            let mut conn = self.mysql.conn()?;
            conn.query_drop("SELECT 1").map_err(StoreError::from)
        });
        let now = Instant::now();
        RegistrarReport {
            redis: self.redis_health.report(),
            mysql: self.mysql_health.report(),
            open_breakers: self.account_states.open_breakers(now),
            active_bans: self.bans.list(now).len(),
            outcomes: CLASSES.iter().copied().zip(self.outcomes.last_minute()).collect(),
        }
    }
}
