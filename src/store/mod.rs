//! Connection pools for MySQL and Redis, shared by the roles.
//!
//! Both pools are created without contacting their server: the daemon must start and keep its
//! drachtio connection while MySQL or Redis is down, and recover by itself when they return.
//! Checkout and connect timeouts are short because a SIP transaction cannot wait for r2d2's
//! default of 30 seconds.

pub(crate) mod carriers;
pub(crate) mod keys;
pub mod mysql;
pub(crate) mod outage;
pub mod redis;
pub mod tls;

use std::fmt;

/// The error a store failure came from, kept for [`std::error::Error::source`].
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum StoreError {
    /// No Redis connection could be had within the checkout timeout.
    RedisUnavailable(Cause),
    /// A pooled Redis connection turned out to be dead (Redis restarted since it was made).
    RedisConnectionLost(Cause),
    /// A Redis command failed.
    Redis(::redis::RedisError),
    /// No MySQL connection could be had within the checkout timeout.
    MysqlUnavailable(Cause),
    /// A MySQL statement failed.
    Mysql(::mysql::Error),
    /// Stored data could not be understood.
    BadData(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::RedisUnavailable(e) => write!(f, "redis unavailable: {e}"),
            StoreError::RedisConnectionLost(e) => write!(f, "redis connection lost: {e}"),
            StoreError::Redis(e) => write!(f, "redis command failed: {e}"),
            StoreError::MysqlUnavailable(e) => write!(f, "mysql unavailable: {e}"),
            StoreError::Mysql(e) => write!(f, "mysql statement failed: {e}"),
            StoreError::BadData(e) => write!(f, "unexpected stored data: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::RedisUnavailable(e) | StoreError::RedisConnectionLost(e) | StoreError::MysqlUnavailable(e) => {
                Some(e.as_ref())
            }
            StoreError::Redis(e) => Some(e),
            StoreError::Mysql(e) => Some(e),
            StoreError::BadData(_) => None,
        }
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        if e.is_connection_dropped() {
            StoreError::RedisConnectionLost(Box::new(e))
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
            StoreError::RedisUnavailable(Box::new(e))
        } else {
            StoreError::Redis(e)
        }
    }
}

impl From<::mysql::Error> for StoreError {
    fn from(e: ::mysql::Error) -> Self {
        match e {
            ::mysql::Error::IoError(_) | ::mysql::Error::DriverError(_) | ::mysql::Error::TlsError(_) => {
                StoreError::MysqlUnavailable(Box::new(e))
            }
            other => StoreError::Mysql(other),
        }
    }
}

impl StoreError {
    /// True when the server could not be reached (as opposed to a command that failed):
    /// callers answer SIP with 503 + Retry-After in that case.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::RedisUnavailable(_) | StoreError::RedisConnectionLost(_) | StoreError::MysqlUnavailable(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::io;

    use super::StoreError;

    #[test]
    fn an_unreachable_store_keeps_the_error_it_came_from() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let e = StoreError::from(::redis::RedisError::from(refused()));
        assert!(e.is_unavailable());
        assert!(e.to_string().ends_with(&::redis::RedisError::from(refused()).to_string()), "{e}");
        let source = e.source().expect("the redis error is the source");
        assert!(source.downcast_ref::<::redis::RedisError>().is_some(), "{source:?}");

        let e = StoreError::from(::mysql::Error::IoError(refused()));
        assert!(e.is_unavailable());
        assert!(e.source().and_then(|s| s.downcast_ref::<::mysql::Error>()).is_some());
        assert!(StoreError::BadData("x".into()).source().is_none());
    }
}
