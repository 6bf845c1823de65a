//! The registrar's threads: one triage thread and an elastic, fair pool of auth workers.
//!
//! The drachtio reader fills a bounded queue (and answers `503` itself when it is full). The
//! **triage** thread takes every REGISTER already waiting (up to [`MAX_BATCH`]), reads all
//! their stored bindings with one `MGET`, and answers whatever needs no authentication call:
//! refreshes from the cache window, challenges, malformed requests, unknown realms. A request
//! whose credentials must be checked — by the account's webhook or against the `clients`
//! table — goes on to the **auth workers**, already parsed and checked ([`Checked`]): a worker
//! only authenticates, stores and answers.
//!
//! The workers are a [`FairPool`] keyed by account: as many run at once as the webhooks' latency
//! needs (up to `SBC_AUTH_MAX_INFLIGHT`), and no account takes more than its share while others
//! wait (see `fair_pool.rs`). So a slow or hanging webhook holds threads of its own account
//! only: the cache-window refreshes of every device and the authentications of every other
//! account keep being answered. When a queue is full the triage thread answers `503` with
//! `Retry-After` at once rather than let devices wait past their transaction timer.

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use log::{debug, error, warn};

use super::fair_pool::{FairPool, LoadProbe, PoolLimits, PoolLoad, Refusal};
use super::{Checked, Registrar};
use crate::drachtio::IncomingRequest;
use crate::supervise::Supervisor;
use crate::telemetry::Metrics;

/// The most REGISTERs the triage thread takes from the queue at once.
pub const MAX_BATCH: usize = 32;

pub struct AuthPool {
    triage: JoinHandle<()>,
    load: LoadProbe,
}

impl AuthPool {
    /// Starts the triage thread (`auth-triage`) and the auth workers (`auth-worker-<n>`,
    /// `limits.min_threads` at first).
    ///
    /// Threads stop when `shutdown` fires (a message, or its sender dropped), or when `queue`
    /// is closed and empty. Each worker finishes the request in hand; requests still queued at
    /// shutdown are answered `503` with `Retry-After`, so devices retry (possibly through
    /// another SBC) instead of waiting for a timeout.
    pub fn start(
        limits: PoolLimits,
        registrar: Arc<Registrar>,
        queue: Receiver<IncomingRequest>,
        shutdown: Receiver<()>,
        supervisor: &Supervisor,
    ) -> io::Result<AuthPool> {
        let for_workers = Arc::clone(&registrar);
        let workers = FairPool::start("auth-worker", limits, supervisor.clone(), move |checked: Checked| {
            for_workers.complete(checked)
        })?;
        let load = workers.probe();
        let triage = TriageThread {
            registrar,
            queue,
            workers,
            shutdown,
            refused_since_warning: Cell::new(0),
            last_warning: Cell::new(None),
        };
        let triage = supervisor.spawn("auth-triage", move || triage.run())?;
        Ok(AuthPool { triage, load })
    }

    /// How busy the auth workers are (for `sbcctl status` and the statsd gauges).
    pub fn load_probe(&self) -> LoadProbe {
        self.load.clone()
    }

    /// Waits for the triage thread, which waits for every worker.
    pub fn join(self) {
        if self.triage.join().is_err() {
            error!("registrar: auth-triage ended with a panic");
        }
    }
}

/// Statsd gauges of the pool's load (every [`AUTH_GAUGE_INTERVAL`]): `sbc.auth.inflight`,
/// `sbc.auth.queued`, `sbc.auth.threads`, and per busiest account `sbc.auth.account.inflight`
/// and `sbc.auth.account.queued` tagged `account_sid:<sid>` (at most
/// [`BUSIEST_KEYS`](super::fair_pool::BUSIEST_KEYS) accounts: a bounded number of tag values).
pub fn report_load(load: &PoolLoad, metrics: &Metrics) {
    metrics.gauge("sbc.auth.inflight", load.in_flight as u64, &[]);
    metrics.gauge("sbc.auth.queued", load.waiting as u64, &[]);
    metrics.gauge("sbc.auth.threads", load.threads as u64, &[]);
    for account in &load.busiest {
        let tag = format!("account_sid:{}", account.key);
        metrics.gauge("sbc.auth.account.inflight", account.in_flight as u64, &[&tag]);
        metrics.gauge("sbc.auth.account.queued", account.waiting as u64, &[&tag]);
    }
}

/// How often the daemon sends [`report_load`]'s gauges.
pub const AUTH_GAUGE_INTERVAL: Duration = Duration::from_secs(10);

struct TriageThread {
    registrar: Arc<Registrar>,
    queue: Receiver<IncomingRequest>,
    workers: FairPool<Checked>,
    shutdown: Receiver<()>,
    /// REGISTERs refused because a queue was full, and when that was last logged:
    /// one warning per [`WARN_EVERY`] at most, not one per request of an overload.
    refused_since_warning: Cell<u64>,
    last_warning: Cell<Option<Instant>>,
}

const WARN_EVERY: Duration = Duration::from_secs(10);

impl TriageThread {
    fn run(self) {
        loop {
            select! {
                recv(self.queue) -> msg => match msg {
                    Ok(req) => self.batch(req),
                    // The reader is gone: the workers finish what they were given, then end.
                    Err(_) => {
                        self.workers.finish();
                        break;
                    }
                },
                recv(self.shutdown) -> _ => {
                    let mut refused = 0usize;
                    while let Ok(req) = self.queue.try_recv() {
                        self.registrar.answer_unavailable(req);
                        refused += 1;
                    }
                    self.workers.close(|checked| {
                        self.registrar.refuse_checked(checked);
                        refused += 1;
                    });
                    if refused > 0 {
                        debug!("registrar: shutting down, answered {refused} queued REGISTERs with 503");
                    }
                    break;
                }
            }
        }
    }

    /// `first` and whatever else is already waiting, with one read of their bindings.
    fn batch(&self, first: IncomingRequest) {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.queue.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        // Every step catches its own panics and answers 500.
        for checked in self.registrar.triage_batch(batch) {
            let account_sid = checked.account_sid().to_string();
            match self.workers.submit(&account_sid, checked) {
                Ok(()) => {}
                // Only after our own close, which ends this thread: answer it here all the same.
                Err((checked, Refusal::Closed)) => self.registrar.refuse_checked(checked),
                Err((checked, why)) => {
                    let req = checked.request();
                    debug!(
                        "registrar: {why} (account_sid={account_sid}); REGISTER from {}:{} answered 503",
                        req.meta.address, req.meta.port
                    );
                    self.registrar.refuse_checked(checked);
                    self.note_refusal(why);
                }
            }
        }
    }
}

impl TriageThread {
    fn note_refusal(&self, why: Refusal) {
        self.refused_since_warning.set(self.refused_since_warning.get() + 1);
        let now = Instant::now();
        if self.last_warning.get().is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return;
        }
        let load = self.workers.load();
        let busiest = load
            .busiest
            .iter()
            .take(3)
            .map(|k| format!("{} ({} running, {} waiting)", k.key, k.in_flight, k.waiting))
            .collect::<Vec<_>>()
            .join(", ");
        warn!(
            "registrar: authentications waiting too long ({why}); {} REGISTERs answered 503 since the last warning; \
             {} running of at most {} (SBC_AUTH_MAX_INFLIGHT), {} waiting; busiest accounts: {busiest}",
            self.refused_since_warning.get(),
            load.in_flight,
            load.max_in_flight,
            load.waiting,
        );
        self.refused_since_warning.set(0);
        self.last_warning.set(Some(now));
    }
}
