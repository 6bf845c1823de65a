//! The auth worker pool: a fixed number of named threads taking REGISTERs from the bounded
//! queue the drachtio reader fills (the reader answers `503` itself when the queue is full).
//! Webhook calls and database reads block a worker, never the reader.
//!
//! Under load a worker takes every REGISTER already waiting (up to [`MAX_BATCH`]) and reads
//! all their stored bindings with one `MGET`: one wake-up and one Redis round trip for the
//! batch instead of one each. Refreshes answered from the cache window and challenges cost
//! no more than that. A request that carries credentials (it will call the webhook) is handed
//! back to the pool through a second queue, so webhook calls still run in parallel on
//! different workers; requests from that queue are handled on their own, so nothing goes round
//! in circles.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{select, unbounded, Receiver, Sender};
use log::{debug, error};

use super::bindings::StoredBinding;
use super::Registrar;
use crate::drachtio::IncomingRequest;

pub struct AuthPool {
    workers: Vec<JoinHandle<()>>,
}

impl AuthPool {
    /// Starts `n_workers` threads (at least one) named `auth-worker-<i>`.
    ///
    /// A worker stops when `queue` is closed and empty, or when `shutdown` fires (a message,
    /// or its sender dropped). It finishes the request in hand first; requests still queued
    /// at shutdown are answered `503` with `Retry-After`, so devices retry (possibly through
    /// another SBC) instead of waiting for a timeout.
    pub fn start(
        n_workers: usize,
        registrar: Arc<Registrar>,
        queue: Receiver<IncomingRequest>,
        shutdown: Receiver<()>,
    ) -> io::Result<AuthPool> {
        let mut workers = Vec::with_capacity(n_workers.max(1));
        // Holds at most MAX_BATCH - 1 requests per worker at a time.
        let (handed_back_tx, handed_back) = unbounded();
        for i in 0..n_workers.max(1) {
            let worker = Worker {
                registrar: registrar.clone(),
                queue: queue.clone(),
                handed_back: handed_back.clone(),
                hand_back: handed_back_tx.clone(),
                shutdown: shutdown.clone(),
            };
            let handle = thread::Builder::new().name(format!("auth-worker-{i}")).spawn(move || worker.run())?;
            workers.push(handle);
        }
        Ok(AuthPool { workers })
    }

    /// Waits for every worker to exit.
    pub fn join(self) {
        for w in self.workers {
            let name = w.thread().name().unwrap_or("auth-worker").to_string();
            if w.join().is_err() {
                error!("registrar: {name} ended with a panic");
            }
        }
    }
}

type HandedBack = (IncomingRequest, Option<Option<StoredBinding>>);

/// The most REGISTERs a worker takes from the queue at once.
pub const MAX_BATCH: usize = 32;

struct Worker {
    registrar: Arc<Registrar>,
    queue: Receiver<IncomingRequest>,
    /// Requests another worker took in a batch and handed back (they carry credentials),
    /// with the binding that worker already read for them.
    handed_back: Receiver<HandedBack>,
    hand_back: Sender<HandedBack>,
    shutdown: Receiver<()>,
}

impl Worker {
    fn run(self) {
        loop {
            select! {
                recv(self.handed_back) -> msg => if let Ok((req, stored)) = msg {
                    self.registrar.handle_prefetched(req, stored);
                },
                recv(self.queue) -> msg => match msg {
                    Ok(req) => self.batch(req),
                    Err(_) => break,
                },
                recv(self.shutdown) -> _ => {
                    // Drain what is left without blocking; other workers do the same.
                    let mut refused = 0usize;
                    while let Ok(req) = self.queue.try_recv().or_else(|_| self.handed_back.try_recv().map(|(r, _)| r)) {
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
        if batch.len() == 1 {
            for req in batch {
                self.registrar.handle(req);
            }
            return;
        }
        let prefetched = self.registrar.prefetch(&batch);
        for (i, (req, stored)) in batch.into_iter().zip(prefetched).enumerate() {
            if i > 0 && req.message.has_header("Authorization") {
                if let Err(e) = self.hand_back.send((req, stored)) {
                    let (req, stored) = e.into_inner();
                    self.registrar.handle_prefetched(req, stored);
                }
            } else {
                self.registrar.handle_prefetched(req, stored);
            }
        }
    }
}
