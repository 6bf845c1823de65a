//! Logs a store outage once, then its recovery: during a Redis or MySQL outage thousands of
//! requests fail the same way, and the log should say so once, not once per request.
//!
//! Each role keeps one [`OutageLog`] per store it depends on and tells it about every
//! operation: [`failed`](OutageLog::failed) logs the first failure at warn and repeats at
//! debug, [`succeeded`](OutageLog::succeeded) logs the first success after failures at info.
//! It takes `&self` (an atomic flag), so a pool of threads can share one.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, info, warn};

/// The outage state of one store as one role sees it. The lines read
/// `<role>: <store> unreachable<consequence>: <doing>: <error>`, then
/// `<role>: <store> reachable again`.
#[derive(Debug)]
pub struct OutageLog {
    role: &'static str,
    store: &'static str,
    /// What the outage means for the role's clients, with its leading `, ` (or empty).
    consequence: &'static str,
    down: AtomicBool,
}

impl OutageLog {
    /// `role` and `store` start the log lines (`registrar`, `redis`).
    pub fn new(role: &'static str, store: &'static str) -> OutageLog {
        OutageLog { role, store, consequence: "", down: AtomicBool::new(false) }
    }

    /// What the first line adds after `unreachable`, e.g. `", answering REGISTER with 503
    /// while it lasts"`.
    pub fn with_consequence(mut self, consequence: &'static str) -> OutageLog {
        self.consequence = consequence;
        self
    }

    /// An operation failed while `doing`. Returns whether this failure started an outage
    /// (and was logged at warn).
    pub fn failed(&self, doing: &str, error: &dyn Display) -> bool {
        let started = !self.down.swap(true, Ordering::Relaxed);
        if started {
            warn!("{}: {} unreachable{}: {doing}: {error}", self.role, self.store, self.consequence);
        } else {
            debug!("{}: {} still unreachable: {doing}: {error}", self.role, self.store);
        }
        started
    }

    /// An operation worked. Returns whether this ended an outage (and was logged at info).
    pub fn succeeded(&self) -> bool {
        let ended = self.down.swap(false, Ordering::Relaxed);
        if ended {
            info!("{}: {} reachable again", self.role, self.store);
        }
        ended
    }

    /// Whether the last operation failed.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// [`succeeded`](OutageLog::succeeded) or [`failed`](OutageLog::failed), after `result`.
    pub fn note<T, E: Display>(&self, result: &Result<T, E>, doing: &str) {
        match result {
            Ok(_) => {
                self.succeeded();
            }
            Err(e) => {
                self.failed(doing, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OutageLog;

    #[test]
    fn an_outage_is_news_once_and_so_is_its_end() {
        let log = OutageLog::new("test", "redis").with_consequence(", answering 503");
        assert!(!log.succeeded(), "a working store is no news");
        assert!(!log.is_down());
        assert!(log.failed("reading", &"refused"), "the first failure starts the outage");
        assert!(!log.failed("reading", &"refused"), "repeats do not");
        assert!(!log.failed("writing", &"timeout"), "whatever was being done");
        assert!(log.is_down());
        assert!(log.succeeded(), "the first success ends it");
        assert!(!log.succeeded());
        assert!(log.failed("reading", &"refused"), "and the next failure is a new outage");
    }

    #[test]
    fn note_follows_the_result() {
        let log = OutageLog::new("test", "mysql");
        log.note(&Err::<(), _>("refused"), "reading");
        assert!(log.is_down());
        log.note(&Ok::<_, String>(1), "reading");
        assert!(!log.is_down());
    }
}
