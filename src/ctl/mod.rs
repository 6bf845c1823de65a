//! The CLI socket (spec 9): a Unix stream socket where `sbcctl` drains and undrains feature
//! servers, reads a small runtime key/value map, asks for the daemon's status, lists the
//! outbound registrations of the regbot role and lists or lifts the registrar's bans of sources
//! whose authentications keep failing.
//!
//! [`protocol`] is shared by the server and the `sbcctl` binary; [`CtlServer`] is the role.

mod commands;
pub(crate) mod peer;
pub mod protocol;
mod regbot_link;
mod server;
mod status;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use server::{CtlServer, CtlSettings};

/// The regbot counts of the `status` reply: from a snapshot of the regbot role (see
/// [`CtlServer::with_regbot`]), or the default (`standby`, all zeros) when no role is linked
/// or it did not answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RegbotStatus {
    /// This sidecar holds the cluster's regbot lock and sends the outbound REGISTERs.
    pub leader: bool,
    /// Gateways that should be registered.
    pub total: u64,
    /// Of those, currently registered.
    pub registered: u64,
    /// Of those, whose last attempt failed.
    pub failing: u64,
}

impl RegbotStatus {
    /// `leader` or `standby`, as the status reply spells it.
    pub(crate) fn role(&self) -> &'static str {
        if self.leader {
            "leader"
        } else {
            "standby"
        }
    }
}

/// Why the CLI server could not start or stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum CtlError {
    /// Something that is not a socket exists at the socket path; it is never deleted.
    NotASocket(PathBuf),
    /// Another process accepts connections on the socket path.
    InUse(PathBuf),
    /// The socket path could not be examined.
    Inspect {
        path: PathBuf,
        source: io::Error,
    },
    /// A stale socket file could not be removed.
    RemoveStale {
        path: PathBuf,
        source: io::Error,
    },
    Bind {
        path: PathBuf,
        source: io::Error,
    },
    /// The socket could not be restricted to mode 0600 (it was removed again).
    Permissions {
        path: PathBuf,
        source: io::Error,
    },
    /// The event loop failed.
    Poll(io::Error),
    /// `SBC_CTL_GROUP` names a group that is not in /etc/group.
    UnknownGroup(String),
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::NotASocket(p) => {
                write!(f, "CLI socket {}: the path exists and is not a socket; refusing to delete it", p.display())
            }
            CtlError::InUse(p) => write!(f, "CLI socket {}: another process is listening on it", p.display()),
            CtlError::Inspect { path, source } => {
                write!(f, "CLI socket {}: cannot examine path: {source}", path.display())
            }
            CtlError::RemoveStale { path, source } => {
                write!(f, "CLI socket {}: cannot remove stale socket: {source}", path.display())
            }
            CtlError::Bind { path, source } => write!(f, "CLI socket {}: cannot bind: {source}", path.display()),
            CtlError::Permissions { path, source } => {
                write!(f, "CLI socket {}: cannot set mode 0600: {source}", path.display())
            }
            CtlError::Poll(e) => write!(f, "CLI socket event loop failed: {e}"),
            CtlError::UnknownGroup(g) => write!(f, "SBC_CTL_GROUP={g:?}: no such group in /etc/group"),
        }
    }
}

impl std::error::Error for CtlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CtlError::Inspect { source, .. }
            | CtlError::RemoveStale { source, .. }
            | CtlError::Bind { source, .. }
            | CtlError::Permissions { source, .. }
            | CtlError::Poll(source) => Some(source),
            CtlError::NotASocket(_) | CtlError::InUse(_) | CtlError::UnknownGroup(_) => None,
        }
    }
}
