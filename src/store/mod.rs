//! Connection pools for MySQL and Redis, shared by the roles.
//!
//! Both pools are created without contacting their server: the daemon must start and keep its
//! drachtio connection while MySQL or Redis is down, and recover by itself when they return.
//! Checkout and connect timeouts are short because a SIP transaction cannot wait for r2d2's
//! default of 30 seconds.

pub mod carriers;
pub mod mysql;
pub mod outage;
pub mod redis;
pub mod tls;

use std::fmt;

#[derive(Debug)]
pub enum StoreError {
    /// No Redis connection could be had within the checkout timeout.
    RedisUnavailable(String),
    /// A pooled Redis connection turned out to be dead (Redis restarted since it was made).
    RedisConnectionLost(String),
    /// A Redis command failed.
    Redis(::redis::RedisError),
    /// No MySQL connection could be had within the checkout timeout.
    MysqlUnavailable(String),
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

impl std::error::Error for StoreError {}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        if e.is_connection_dropped() {
            StoreError::RedisConnectionLost(e.to_string())
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
            StoreError::RedisUnavailable(e.to_string())
        } else {
            StoreError::Redis(e)
        }
    }
}

impl From<::mysql::Error> for StoreError {
    fn from(e: ::mysql::Error) -> Self {
        match e {
            ::mysql::Error::IoError(_) | ::mysql::Error::DriverError(_) | ::mysql::Error::TlsError(_) => {
                StoreError::MysqlUnavailable(e.to_string())
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
