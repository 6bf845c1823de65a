//! The auth worker pool: a fixed number of named threads taking REGISTERs from the bounded
//! queue the drachtio reader fills (the reader answers `503` itself when the queue is full).
//! Webhook calls and database reads block a worker, never the reader.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{select, Receiver};
use log::{debug, error};

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
        for i in 0..n_workers.max(1) {
            let (registrar, queue, shutdown) = (registrar.clone(), queue.clone(), shutdown.clone());
            let handle = thread::Builder::new()
                .name(format!("auth-worker-{i}"))
                .spawn(move || work(&registrar, &queue, &shutdown))?;
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

fn work(registrar: &Registrar, queue: &Receiver<IncomingRequest>, shutdown: &Receiver<()>) {
    loop {
        select! {
            recv(queue) -> msg => match msg {
                Ok(req) => registrar.handle(req),
                Err(_) => break,
            },
            recv(shutdown) -> _ => {
                // Drain what is left without blocking; other workers do the same.
                let mut refused = 0usize;
                while let Ok(req) = queue.try_recv() {
                    registrar.answer_unavailable(req);
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
