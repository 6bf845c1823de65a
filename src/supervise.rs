//! Role supervision: every role thread is started through [`Supervisor::spawn`], and when one
//! ends — its function returned or panicked — the daemon hears about it through the receiver
//! that [`Supervisor::new`] returned. While the daemon runs that means a role died: it logs which one and
//! exits with [`crate::daemon::EXIT_ROLE_FAILED`] so that systemd restarts it, instead of
//! running on without a drachtio reader, heartbeat role or regbot scheduler. During shutdown
//! roles end on purpose and nobody listens any more.
//!
//! The notification channel belongs to a [`Supervisor`], which the daemon makes before it
//! starts any role and hands to every role that starts threads (in [`crate::shared::Shared`]);
//! [`Supervisor::unwatched`] starts plain named threads (tests of one role).
//!
//! Debug builds only: `SBC_DEBUG_PANIC_ROLE=<thread name>[,<thread name>…]` makes each named
//! role thread panic shortly after it starts (before doing any work), so that tests can check
//! the supervision end to end (`tests/daemon_e2e.rs`). It is not a user setting: release
//! builds do not read it, and it is not in `config::NEW_VARIABLES`.

use std::io;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{unbounded, Receiver, Sender};

/// A role thread that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleEnded {
    /// The thread name (`heartbeat`, `drachtio-reader`, `auth-worker-3`, `regbot`, …).
    pub role: String,
    /// Whether it ended by panicking rather than by returning.
    pub panicked: bool,
}

/// Starts role threads and reports their end to the receiver made with it.
#[derive(Debug, Clone)]
pub struct Supervisor {
    ended: Option<Sender<RoleEnded>>,
}

impl Supervisor {
    /// A supervisor and the receiver of its threads' ends.
    pub fn new() -> (Supervisor, Receiver<RoleEnded>) {
        let (tx, rx) = unbounded();
        (Supervisor { ended: Some(tx) }, rx)
    }

    /// Starts plain named threads whose end nobody hears of.
    pub fn unwatched() -> Supervisor {
        Supervisor { ended: None }
    }

    /// Starts `f` on a thread named `name` whose end is reported.
    pub fn spawn<F, T>(&self, name: impl Into<String>, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name = name.into();
        let ended = self.ended.clone();
        thread::Builder::new().name(name.clone()).spawn(move || {
            let notify = Notify { role: name, report_return: true, ended };
            debug_panic(&notify.role);
            let result = f();
            drop(notify);
            result
        })
    }

    /// Starts `f` on a thread named `name` with a stack of `stack_size` bytes, for a pool that
    /// grows and shrinks: only a panic is reported, since such a thread returns whenever the
    /// pool no longer needs it.
    pub fn spawn_worker<F>(&self, name: impl Into<String>, stack_size: usize, f: F) -> io::Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let name = name.into();
        let ended = self.ended.clone();
        thread::Builder::new().name(name.clone()).stack_size(stack_size).spawn(move || {
            let notify = Notify { role: name, report_return: false, ended };
            debug_panic(&notify.role);
            f();
            drop(notify);
        })
    }
}

/// Sends the notification when the thread's function is over, whether it returned or
/// unwound.
struct Notify {
    role: String,
    /// Whether a plain return counts as an end too (a role), or only a panic does (an elastic
    /// worker returns when it is no longer needed).
    report_return: bool,
    ended: Option<Sender<RoleEnded>>,
}

impl Drop for Notify {
    fn drop(&mut self) {
        if !self.report_return && !thread::panicking() {
            return;
        }
        if let Some(tx) = &self.ended {
            let _ = tx.send(RoleEnded { role: std::mem::take(&mut self.role), panicked: thread::panicking() });
        }
    }
}

/// `SBC_DEBUG_PANIC_ROLE` (debug builds only; see the module documentation).
#[cfg(debug_assertions)]
fn debug_panic(role: &str) {
    let Ok(list) = std::env::var("SBC_DEBUG_PANIC_ROLE") else {
        return;
    };
    if list.split(',').any(|r| r.trim() == role) {
        thread::sleep(std::time::Duration::from_millis(300));
        panic!("SBC_DEBUG_PANIC_ROLE: role {role} panics on purpose");
    }
}

#[cfg(not(debug_assertions))]
fn debug_panic(_role: &str) {}
