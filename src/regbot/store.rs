//! The regbot's writes, on a thread of their own so that a slow database, Redis or DNS never
//! holds up the scheduler: `register_status` (spec 6.4), disabling a carrier after too many
//! failures, and the ephemeral gateways of registration trunks (spec 6.6).

use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver};
use log::{debug, info, warn};

use super::alerts::{Alert, AlertSink};
use super::ephemeral::{EphGateway, EphemeralGateways};
use super::queries;
use super::register_status::RegisterStatus;
use crate::store::mysql::MysqlPool;
use crate::store::StoreError;

/// Work for the store writer, executed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreJob {
    /// `UPDATE voip_carriers SET register_status = ?`: one row per carrier, last write wins.
    Status { voip_carrier_sid: String, status: RegisterStatus },
    /// The failure threshold was reached: re-read the carrier, then `requires_register = 0`
    /// (or `is_active = 0` for a `reg` trunk) and the alert.
    Disable { voip_carrier_sid: String },
    /// Write the gateway's addresses to `eph-gw-ip:*` with `now + expires`.
    EphRefresh { gateway: EphGateway, expires: u64 },
    /// The carrier has no regbot left: delete its `eph-gw-ip:*` fields.
    EphDelete { voip_carrier_sid: String },
}

pub struct StoreWriter {
    mysql_read: MysqlPool,
    mysql_write: MysqlPool,
    ephemeral: EphemeralGateways,
    jobs: Receiver<StoreJob>,
    shutdown: Receiver<()>,
    alerts: AlertSink,
}

impl StoreWriter {
    pub fn new(
        mysql_read: MysqlPool,
        mysql_write: MysqlPool,
        ephemeral: EphemeralGateways,
        jobs: Receiver<StoreJob>,
        shutdown: Receiver<()>,
        alerts: AlertSink,
    ) -> StoreWriter {
        StoreWriter { mysql_read, mysql_write, ephemeral, jobs, shutdown, alerts }
    }

    /// Runs until shutdown or until the scheduler (the only sender) has gone. Jobs still queued
    /// at shutdown are dropped: statuses are rewritten by the next leader's first REGISTER.
    pub fn run(mut self) {
        loop {
            select! {
                recv(self.jobs) -> job => match job {
                    Ok(job) => self.execute(job),
                    Err(_) => break,
                },
                recv(self.shutdown) -> _ => break,
            }
        }
        debug!("regbot store writer stopped");
    }

    pub fn execute(&mut self, job: StoreJob) {
        let what = match &job {
            StoreJob::Status { .. } => "register_status",
            StoreJob::Disable { .. } => "disable carrier",
            StoreJob::EphRefresh { .. } => "ephemeral gateways",
            StoreJob::EphDelete { .. } => "delete ephemeral gateways",
        };
        if let Err(e) = self.try_execute(job) {
            warn!("regbot store: {what} failed: {e}");
        }
    }

    fn try_execute(&mut self, job: StoreJob) -> Result<(), StoreError> {
        match job {
            StoreJob::Status { voip_carrier_sid, status } => {
                let json = status.to_json();
                queries::write_register_status(&mut self.mysql_write.conn()?, &voip_carrier_sid, &json)?;
                debug!("register_status carrier={voip_carrier_sid} {json}");
                Ok(())
            }
            StoreJob::Disable { voip_carrier_sid } => self.disable(&voip_carrier_sid),
            StoreJob::EphRefresh { gateway, expires } => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                self.ephemeral.refresh(&gateway, expires, now)?;
                Ok(())
            }
            StoreJob::EphDelete { voip_carrier_sid } => self.ephemeral.delete_carrier(&voip_carrier_sid),
        }
    }

    /// Spec 6.4 after the threshold. A carrier that vanished meanwhile is only logged (Node
    /// dereferenced null there, spec 14.9).
    fn disable(&mut self, voip_carrier_sid: &str) -> Result<(), StoreError> {
        let Some(carrier) = queries::carrier_by_sid(&mut self.mysql_read.conn()?, voip_carrier_sid)? else {
            info!("regbot: carrier {voip_carrier_sid} is gone; nothing to disable");
            return Ok(());
        };
        let mut conn = self.mysql_write.conn()?;
        let message = if carrier.trunk_type != "reg" {
            queries::disable_registration(&mut conn, voip_carrier_sid)?;
            Alert::registration_disabled(&carrier.name, voip_carrier_sid)
        } else {
            queries::deactivate_carrier(&mut conn, voip_carrier_sid)?;
            Alert::carrier_deactivated(&carrier.name, voip_carrier_sid)
        };
        self.alerts.raise(&Alert {
            message,
            account_sid: carrier.account_sid,
            service_provider_sid: carrier.service_provider_sid,
        });
        Ok(())
    }
}
