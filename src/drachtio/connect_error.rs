//! Why the drachtio reader could not open its connection (it logs the reason and retries).

use std::fmt;
use std::io;

#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// `DRACHTIO_HOST` did not resolve.
    Resolve { host: String, source: io::Error },
    /// It resolved to no address at all.
    NoAddress,
    /// No address accepted the TCP connection; the error of the last one tried.
    Connect(io::Error),
    /// The connected socket could not be set up (no-delay, clone, timeouts, non-blocking).
    SocketSetup(io::Error),
    /// The socket could not be registered with the reader's poll.
    PollRegister(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            ConnectError::NoAddress => write!(f, "no address"),
            ConnectError::Connect(e) => write!(f, "{e}"),
            ConnectError::SocketSetup(e) => write!(f, "socket setup: {e}"),
            ConnectError::PollRegister(e) => write!(f, "poll register: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Resolve { source: e, .. }
            | ConnectError::Connect(e)
            | ConnectError::SocketSetup(e)
            | ConnectError::PollRegister(e) => Some(e),
            ConnectError::NoAddress => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn the_text_is_the_reason_logged_and_the_io_error_its_source() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(ConnectError::Connect(refused()).to_string(), refused().to_string());
        let e = ConnectError::Resolve { host: "drachtio".into(), source: io::Error::other("no such host") };
        assert_eq!(e.to_string(), "cannot resolve drachtio: no such host");
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("no such host"));
        assert_eq!(ConnectError::SocketSetup(refused()).to_string(), format!("socket setup: {}", refused()));
        assert!(ConnectError::NoAddress.source().is_none());
    }
}
