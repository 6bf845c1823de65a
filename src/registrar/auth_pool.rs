//! The registrar's threads: one triage thread and a fixed number of auth workers.
//!
//! The drachtio reader fills a bounded queue (and answers `503` itself when it is full). The
//! **triage** thread takes every REGISTER already waiting (up to [`MAX_BATCH`]), reads all
//! their stored bindings with one `MGET`, and answers whatever needs no authentication call:
//! refreshes from the cache window, challenges, malformed requests, unknown realms. A request
//! whose credentials must be checked — by the account's webhook or against the `clients`
//! table — goes on to the **auth workers** through a second bounded queue, already parsed
//! and checked ([`Checked`]): a worker only authenticates, stores and answers.
//!
//! So a slow or hanging webhook holds auth workers only: the cache-window refreshes of every
//! other device keep being answered. When the auth queue is full the triage thread answers
//! `503` with `Retry-After` at once rather than let devices wait past their transaction timer.

use std::cell::Cell;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};
use log::{debug, error, warn};

use super::{Checked, Prefetched, Registrar, Triage};
use crate::drachtio::IncomingRequest;

/// The most REGISTERs the triage thread takes from the queue at once.
pub const MAX_BATCH: usize = 32;

pub struct AuthPool {
    threads: Vec<JoinHandle<()>>,
}

impl AuthPool {
    /// Starts the triage thread (`auth-triage`) and `n_workers` auth workers (at least one,
    /// named `auth-worker-<i>`).
    ///
    /// Threads stop when `shutdown` fires (a message, or its sender dropped), or when `queue`
    /// is closed and empty. Each finishes the request in hand; requests still queued at
    /// shutdown are answered `503` with `Retry-After`, so devices retry (possibly through
    /// another SBC) instead of waiting for a timeout.
    pub fn start(
        n_workers: usize,
        registrar: Arc<Registrar>,
        queue: Receiver<IncomingRequest>,
        shutdown: Receiver<()>,
    ) -> io::Result<AuthPool> {
        let n_workers = n_workers.max(1);
        // As long as the queue the reader fills (SBC_AUTH_QUEUE): the same bound on how many
        // REGISTERs may wait for a thread.
        let (auth_tx, auth_rx) = bounded::<Checked>(queue.capacity().unwrap_or(1024).max(1));
        let mut threads = Vec::with_capacity(n_workers + 1);
        let triage = TriageThread {
            registrar: registrar.clone(),
            queue,
            auth: auth_tx,
            shutdown: shutdown.clone(),
            refused_since_warning: Cell::new(0),
            last_warning: Cell::new(None),
        };
        threads.push(crate::supervise::spawn("auth-triage", move || triage.run())?);
        for i in 0..n_workers {
            let worker = Worker { registrar: registrar.clone(), auth: auth_rx.clone(), shutdown: shutdown.clone() };
            threads.push(crate::supervise::spawn(format!("auth-worker-{i}"), move || worker.run())?);
        }
        Ok(AuthPool { threads })
    }

    /// Waits for every thread to exit.
    pub fn join(self) {
        for t in self.threads {
            let name = t.thread().name().unwrap_or("auth thread").to_string();
            if t.join().is_err() {
                error!("registrar: {name} ended with a panic");
            }
        }
    }
}

struct TriageThread {
    registrar: Arc<Registrar>,
    queue: Receiver<IncomingRequest>,
    auth: Sender<Checked>,
    shutdown: Receiver<()>,
    /// REGISTERs refused because the auth queue was full, and when that was last logged:
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
                    // The reader is gone; dropping `auth` on return lets the workers finish.
                    Err(_) => break,
                },
                recv(self.shutdown) -> _ => {
                    let mut refused = 0usize;
                    while let Ok(req) = self.queue.try_recv() {
                        self.registrar.answer_unavailable(req);
                        refused += 1;
                    }
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
        // The pipeline catches its own panics; this is the one other place a bug could take
        // the thread — and with it every registration — down.
        let prefetched =
            panic::catch_unwind(AssertUnwindSafe(|| self.registrar.prefetch(&batch))).unwrap_or_else(|_| {
                error!("registrar: internal error reading a batch of bindings; each REGISTER reads its own");
                batch.iter().map(|_| Prefetched::default()).collect()
            });
        for (req, stored) in batch.into_iter().zip(prefetched) {
            let Triage::NeedsAuthentication(checked) = self.registrar.triage(req, stored) else { continue };
            match self.auth.try_send(checked) {
                Ok(()) => {}
                Err(TrySendError::Full(checked)) => {
                    let req = checked.request();
                    debug!(
                        "registrar: auth queue full; REGISTER from {}:{} answered 503",
                        req.meta.address, req.meta.port
                    );
                    self.registrar.answer_unavailable(checked.into_request());
                    self.note_refusal();
                }
                // No worker left (shutting down): finish it here rather than drop it.
                Err(TrySendError::Disconnected(checked)) => self.registrar.complete(checked),
            }
        }
    }
}

impl TriageThread {
    fn note_refusal(&self) {
        self.refused_since_warning.set(self.refused_since_warning.get() + 1);
        let now = Instant::now();
        if self.last_warning.get().is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return;
        }
        warn!(
            "registrar: every auth worker is busy (slow webhooks?) and their queue is full; {} REGISTERs \
             answered 503 since the last warning (SBC_AUTH_WORKERS may be too low)",
            self.refused_since_warning.get()
        );
        self.refused_since_warning.set(0);
        self.last_warning.set(Some(now));
    }
}

struct Worker {
    registrar: Arc<Registrar>,
    auth: Receiver<Checked>,
    shutdown: Receiver<()>,
}

impl Worker {
    fn run(self) {
        loop {
            select! {
                recv(self.auth) -> msg => match msg {
                    Ok(checked) => self.registrar.complete(checked),
                    // The triage thread has stopped and everything it passed on is done.
                    Err(_) => break,
                },
                recv(self.shutdown) -> _ => {
                    while let Ok(checked) = self.auth.try_recv() {
                        self.registrar.answer_unavailable(checked.into_request());
                    }
                    break;
                }
            }
        }
    }
}
