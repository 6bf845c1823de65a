//! The `regbot-store` thread: the regbot's writes, on a thread of their own so that a slow
//! database, Redis or DNS never holds up the scheduler: `register_status` (spec 6.4),
//! disabling a carrier after too many failures, and the ephemeral gateways of registration
//! trunks (spec 6.6). The SQL it runs is in [`crate::store::carriers`].

use std::collections::HashMap;

use crossbeam_channel::{select, Receiver, Sender};
use log::{debug, info, warn};

use super::alert_sink::AlertSink;
use super::cluster::{self, SbcEntry};
use super::ephemeral::{EphGateway, EphemeralGateways};
use super::register_status::RegisterStatus;
use crate::clock::unix_secs;
use crate::store::carriers::{self, TrunkType};
use crate::store::mysql::MysqlPool;
use crate::store::redis::{run, RedisPool};
use crate::store::StoreError;
use crate::telemetry::Alert;

/// Lifetime of the cluster's failure counter of a carrier after its last failure.
const FAILURES_TTL_SECS: u64 = 24 * 3600;
/// `<cluster>:regbot-leader-contacts` lives this long after the leader's last 200 (every
/// refresh writes it again).
const LEADER_CONTACTS_TTL_SECS: u64 = 24 * 3600;
/// A carrier's per-SBC hash lives at least this long after its last write.
const SBCS_MIN_TTL_SECS: u64 = 3600;

/// Work for the store writer, executed in order.
#[derive(Debug, Clone)]
pub enum StoreJob {
    /// `UPDATE voip_carriers SET register_status = ?`: one row per carrier, last write wins.
    Status { voip_carrier_sid: String, status: RegisterStatus },
    /// The failure threshold was reached: re-read the carrier, then `requires_register = 0`
    /// (or `is_active = 0` for a `reg` trunk) and the alert.
    Disable { voip_carrier_sid: String },
    /// Write the gateway's addresses to `eph-gw-ip:*` with `now + expires`.
    EphRefresh { gateway: EphGateway, expires: u64 },
    /// The carrier has no regbot left: delete its `eph-gw-ip:*` fields (unless another SBC
    /// still holds a registration for it).
    EphDelete { voip_carrier_sid: String },
    /// `SBC_REGBOT_MODE=every`: this SBC's outcome for the carrier goes into
    /// `<cluster>:regbot-sbcs:<carrier>`, and `register_status` is written from that hash.
    /// `until` is the Unix time the binding holds until (now on failure).
    SbcStatus { voip_carrier_sid: String, sbc: String, status: RegisterStatus, until: u64 },
    /// `SBC_REGBOT_MODE=every`: a failure in `REGISTER_RESPONSE_REMOVE`, counted across SBCs;
    /// the SBC whose count reaches `threshold` disables the carrier.
    CountFailure { voip_carrier_sid: String, sbc: String, threshold: u32 },
    /// `SBC_REGBOT_MODE=every`: this SBC no longer registers the carrier (removed, or the
    /// daemon stops): its entry goes, `register_status` is rewritten from the others.
    Withdraw { voip_carrier_sid: String, sbc: String },
    /// Leader mode: the Contact (`user@host`) under which the leader registered a gateway
    /// (`Some`), or that it de-registered it (`None`), in `<cluster>:regbot-leader-contacts`,
    /// so that the next leader removes a Contact that is not its own.
    LeaderContact { sip_gateway_sid: String, contact: Option<String> },
    /// Answered once every job queued before it is done.
    Flush(Sender<()>),
}

pub struct StoreWriter {
    redis: RedisPool,
    cluster_id: String,
    mysql_read: MysqlPool,
    mysql_write: MysqlPool,
    ephemeral: EphemeralGateways,
    jobs: Receiver<StoreJob>,
    shutdown: Receiver<()>,
    alerts: AlertSink,
}

impl StoreWriter {
    /// `redis` and `cluster_id` hold the cluster's shared regbot state ([`cluster`]).
    pub fn new(
        (redis, cluster_id): (RedisPool, String),
        mysql_read: MysqlPool,
        mysql_write: MysqlPool,
        ephemeral: EphemeralGateways,
        jobs: Receiver<StoreJob>,
        shutdown: Receiver<()>,
        alerts: AlertSink,
    ) -> StoreWriter {
        StoreWriter { redis, cluster_id, mysql_read, mysql_write, ephemeral, jobs, shutdown, alerts }
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
            StoreJob::SbcStatus { .. } => "cluster register_status",
            StoreJob::CountFailure { .. } => "cluster failure count",
            StoreJob::Withdraw { .. } => "withdraw from the cluster status",
            StoreJob::LeaderContact { .. } => "leader contact",
            StoreJob::Flush(reply) => {
                let _ = reply.send(());
                return;
            }
        };
        if let Err(e) = self.try_execute(job) {
            warn!("regbot store: {what} failed: {e}");
        }
    }

    fn try_execute(&mut self, job: StoreJob) -> Result<(), StoreError> {
        match job {
            StoreJob::Status { voip_carrier_sid, status } => {
                let json = status.to_json();
                carriers::write_register_status(&mut self.mysql_write.conn()?, &voip_carrier_sid, &json)?;
                debug!("register_status carrier={voip_carrier_sid} {json}");
                Ok(())
            }
            StoreJob::Disable { voip_carrier_sid } => self.disable(&voip_carrier_sid),
            StoreJob::EphRefresh { gateway, expires } => {
                let now = unix_secs();
                // One entry per carrier for the whole cluster: it lasts as long as the
                // longest binding any SBC holds, not just this SBC's last outcome.
                let until = cluster::cluster_until(&self.sbc_entries(&gateway.voip_carrier_sid)?, now);
                let expires = expires.max(until.saturating_sub(now));
                self.ephemeral.refresh(&gateway, expires, now)?;
                Ok(())
            }
            StoreJob::EphDelete { voip_carrier_sid } => {
                let others = cluster::holders(&self.sbc_entries(&voip_carrier_sid)?, unix_secs());
                if !others.is_empty() {
                    debug!("ephemeral gateways of {voip_carrier_sid} kept: registered from {others:?}");
                    return Ok(());
                }
                self.ephemeral.delete_carrier(&voip_carrier_sid)
            }
            StoreJob::SbcStatus { voip_carrier_sid, sbc, status, until } => {
                self.sbc_status(&voip_carrier_sid, &sbc, &status, until)
            }
            StoreJob::CountFailure { voip_carrier_sid, sbc, threshold } => {
                let key = cluster::failures_key(&self.cluster_id, &voip_carrier_sid);
                let (count,): (u64,) = run(&self.redis, |conn| {
                    Ok(redis::pipe()
                        .atomic()
                        .cmd("INCR")
                        .arg(&key)
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(FAILURES_TTL_SECS)
                        .ignore()
                        .query(&mut **conn)?)
                })?;
                debug!("regbot: carrier {voip_carrier_sid} failed {count} times across SBCs (this one {sbc})");
                // INCR hands each value to one caller: exactly one SBC sees the threshold.
                if count == u64::from(threshold) {
                    warn!("regbot: carrier {voip_carrier_sid} reached {threshold} failures across SBCs");
                    self.disable(&voip_carrier_sid)?;
                }
                Ok(())
            }
            StoreJob::Withdraw { voip_carrier_sid, sbc } => {
                let key = cluster::sbcs_key(&self.cluster_id, &voip_carrier_sid);
                let mut entries = self.sbc_entries(&voip_carrier_sid)?;
                run(&self.redis, |conn| Ok(redis::cmd("HDEL").arg(&key).arg(&sbc).query::<()>(&mut **conn)?))?;
                // When nobody is left: our last failure says more than "gone" (a carrier
                // disabled after failing keeps its last reason).
                let fallback = match entries.remove(&sbc) {
                    Some(own) if !own.ok => own.status,
                    _ => RegisterStatus::Failure { reason: "not registered from any SBC".into() }.to_json(),
                };
                let json = cluster::aggregate_status(&entries, &sbc, &fallback, unix_secs());
                carriers::write_register_status(&mut self.mysql_write.conn()?, &voip_carrier_sid, &json)?;
                info!("regbot: SBC {sbc} withdrew from carrier {voip_carrier_sid}: {json}");
                Ok(())
            }
            StoreJob::LeaderContact { sip_gateway_sid, contact } => {
                let key = cluster::leader_contacts_key(&self.cluster_id);
                run(&self.redis, |conn| {
                    let writes = match &contact {
                        Some(c) => {
                            let mut pipe = redis::pipe();
                            pipe.cmd("HSET").arg(&key).arg(&sip_gateway_sid).arg(c).ignore();
                            pipe.cmd("EXPIRE").arg(&key).arg(LEADER_CONTACTS_TTL_SECS).ignore();
                            pipe
                        }
                        None => {
                            let mut pipe = redis::pipe();
                            pipe.cmd("HDEL").arg(&key).arg(&sip_gateway_sid).ignore();
                            pipe
                        }
                    };
                    Ok(writes.query::<()>(&mut **conn)?)
                })
            }
            StoreJob::Flush(_) => Ok(()),
        }
    }

    /// The per-SBC entries of a carrier (every mode; empty in leader mode).
    fn sbc_entries(&self, voip_carrier_sid: &str) -> Result<HashMap<String, SbcEntry>, StoreError> {
        let key = cluster::sbcs_key(&self.cluster_id, voip_carrier_sid);
        let raw: HashMap<String, String> =
            run(&self.redis, |conn| Ok(redis::cmd("HGETALL").arg(&key).query(&mut **conn)?))?;
        Ok(cluster::parse_entries(&raw))
    }

    /// Records this SBC's outcome, then writes the cluster's `register_status`. A 200 resets
    /// the cluster's failure count.
    fn sbc_status(
        &mut self,
        voip_carrier_sid: &str,
        sbc: &str,
        status: &RegisterStatus,
        until: u64,
    ) -> Result<(), StoreError> {
        let now = unix_secs();
        let ok = matches!(status, RegisterStatus::Response { ok: true, .. });
        let entry = SbcEntry { ok, until: if ok { until } else { now }, at: now, status: status.to_json() };
        let value = serde_json::to_string(&entry).unwrap_or_default();
        let key = cluster::sbcs_key(&self.cluster_id, voip_carrier_sid);
        let ttl = until.saturating_sub(now).saturating_mul(2).max(SBCS_MIN_TTL_SECS);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HSET").arg(&key).arg(sbc).arg(&value).ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
        if ok {
            pipe.cmd("DEL").arg(cluster::failures_key(&self.cluster_id, voip_carrier_sid)).ignore();
        }
        pipe.cmd("HGETALL").arg(&key);
        let (raw,): (HashMap<String, String>,) = run(&self.redis, |conn| Ok(pipe.query(&mut **conn)?))?;
        let json = cluster::aggregate_status(&cluster::parse_entries(&raw), sbc, &status.to_json(), now);
        carriers::write_register_status(&mut self.mysql_write.conn()?, voip_carrier_sid, &json)?;
        debug!("register_status carrier={voip_carrier_sid} sbc={sbc} {json}");
        Ok(())
    }

    /// Spec 6.4 after the threshold. A carrier that vanished meanwhile is only logged (Node
    /// dereferenced null there, spec 14, item 9).
    fn disable(&mut self, voip_carrier_sid: &str) -> Result<(), StoreError> {
        let Some(carrier) = carriers::carrier_by_sid(&mut self.mysql_read.conn()?, voip_carrier_sid)? else {
            info!("regbot: carrier {voip_carrier_sid} is gone; nothing to disable");
            return Ok(());
        };
        let mut conn = self.mysql_write.conn()?;
        let (account_sid, sp_sid) = (carrier.account_sid.as_deref(), carrier.service_provider_sid.as_deref());
        let alert = if carrier.trunk_type != TrunkType::Reg {
            carriers::disable_registration(&mut conn, voip_carrier_sid)?;
            Alert::carrier_disabled(&carrier.name, voip_carrier_sid, account_sid, sp_sid)
        } else {
            carriers::deactivate_carrier(&mut conn, voip_carrier_sid)?;
            Alert::carrier_deactivated(&carrier.name, voip_carrier_sid, account_sid, sp_sid)
        };
        self.alerts.raise(alert);
        Ok(())
    }
}
