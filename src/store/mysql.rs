//! The MySQL pools (read, and optionally a separate write pool), optionally over TLS.

use std::time::Duration;

use mysql::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, PooledConn, SslOpts};

use super::tls::MysqlTls;
use super::{tls, StoreError};

/// One MySQL pool, filled by `config`. TLS and the timeout apply to both pools, as in
/// db-helpers.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
    /// `JAMBONES_MYSQL_CONNECTION_LIMIT` (read) or `JAMBONES_MYSQL_WRITE_CONNECTION_LIMIT`
    /// (write), default 10.
    pub connection_limit: usize,
    /// `SBC_MYSQL_TIMEOUT_MS`: connect, read and write timeout, and the checkout timeout.
    pub timeout: Duration,
    /// TLS; `None` for plain TCP. The daemon checks the files at startup (`store::tls`).
    pub tls: Option<MysqlTls>,
}

impl std::fmt::Debug for MysqlSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mysql://{}@{}:{}/{}", self.user, self.host, self.port, self.database)?;
        if self.tls.is_some() {
            f.write_str(" (tls)")?;
        }
        Ok(())
    }
}

/// A pool plus the checkout timeout to use with it.
#[derive(Clone)]
pub struct MysqlPool {
    pool: Pool,
    timeout: Duration,
}

impl MysqlPool {
    /// Builds the pool without connecting (minimum of zero idle connections).
    pub fn new(s: &MysqlSettings) -> Result<MysqlPool, StoreError> {
        let ssl_opts: Option<SslOpts> = s
            .tls
            .as_ref()
            .map(tls::mysql_ssl_opts)
            .transpose()
            .map_err(|e| StoreError::MysqlUnavailable(Box::new(e)))?;
        let constraints = PoolConstraints::new(0, s.connection_limit.max(1))
            .ok_or_else(|| StoreError::BadData("mysql pool constraints".into()))?;
        let opts: Opts = OptsBuilder::new()
            .ip_or_hostname(Some(s.host.clone()))
            .tcp_port(s.port)
            .user(Some(s.user.clone()))
            .pass(Some(s.password.clone()))
            .db_name(Some(s.database.clone()))
            .prefer_socket(false)
            // The handshake runs on the socket with the read and write timeouts below.
            .ssl_opts(ssl_opts)
            .tcp_connect_timeout(Some(s.timeout))
            .read_timeout(Some(s.timeout * 5))
            .write_timeout(Some(s.timeout * 5))
            .pool_opts(PoolOpts::new().with_constraints(constraints))
            .into();
        let pool = Pool::new(opts).map_err(|e| StoreError::MysqlUnavailable(Box::new(e)))?;
        Ok(MysqlPool { pool, timeout: s.timeout })
    }

    pub fn conn(&self) -> Result<PooledConn, StoreError> {
        self.pool.try_get_conn(self.timeout).map_err(|e| StoreError::MysqlUnavailable(Box::new(e)))
    }
}
