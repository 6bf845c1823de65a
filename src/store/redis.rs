//! The Redis pool: r2d2 over the `redis` crate, plain or through Sentinel, optionally over TLS.
//!
//! TLS (`ENABLE_JAMBONES_REDIS_TLS`) applies to the Redis node: the standalone host, or the
//! master a sentinel names, whose certificate must then be valid for the address the sentinel
//! returned. The sentinels themselves are asked over plain TCP, as ioredis does unless given
//! `sentinelTLS` (which the Node program never sets).
//!
//! Whether a Sentinel master gets TLS is the configuration's decision (`config`): the
//! Node program reached it in clear text, so by default so do we.

use std::time::Duration;

use redis::{
    ConnectionAddr, ConnectionInfo, ConnectionLike, IntoConnectionInfo, RedisConnectionInfo, RedisResult,
    TlsCertificates,
};

use super::tls::RedisTls;
use super::{tls, StoreError};

/// Where Redis is and how to log in; filled by `config`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub target: RedisTarget,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Database number (tests use their own).
    pub db: i64,
    /// Connect, read and write timeout of every connection, and the pool checkout timeout.
    pub timeout: Duration,
    pub max_connections: u32,
    /// TLS to the Redis node (`ENABLE_JAMBONES_REDIS_TLS`); `None` for plain TCP. [`pool`]
    /// reads the files; the daemon checks them at startup (`store::tls`).
    pub tls: Option<RedisTls>,
}

impl RedisSettings {
    /// One server in clear text, no login, database 0 (tests and tools).
    pub fn direct(host: &str, port: u16, timeout: Duration, max_connections: u32) -> RedisSettings {
        RedisSettings {
            target: RedisTarget::Direct { host: host.to_string(), port },
            username: None,
            password: None,
            db: 0,
            timeout,
            max_connections,
            tls: None,
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("target", &self.target)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Direct {
        host: String,
        port: u16,
    },
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master_name: String,
        sentinel_username: Option<String>,
        sentinel_password: Option<String>,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Direct { host, port } => write!(f, "{host}:{port}"),
            RedisTarget::Sentinel { sentinels, master_name, .. } => {
                write!(f, "sentinel master {master_name} via {sentinels:?}")
            }
        }
    }
}

pub type RedisPool = r2d2::Pool<RedisManager>;
pub type RedisConn = r2d2::PooledConnection<RedisManager>;

/// Opens connections with timeouts; with Sentinel, asks for the current master on every new
/// connection so that a failover is followed as soon as the old connections break.
pub struct RedisManager {
    source: Source,
    node_info: RedisConnectionInfo,
    /// For the master found through Sentinel; a direct node's address has it already.
    tls: Option<TlsCertificates>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Direct(info) => write!(f, "RedisManager({:?})", info.addr()),
            Source::Sentinel { master_name, .. } => write!(f, "RedisManager(sentinel master {master_name})"),
        }
    }
}

enum Source {
    Direct(ConnectionInfo),
    /// The sentinels to ask, in order, for the address of `master_name`.
    Sentinel {
        sentinels: Vec<ConnectionInfo>,
        master_name: String,
    },
}

/// The address of a Redis node (never a sentinel): `rediss` when TLS is configured. The
/// certificate is verified for `host`.
fn node_addr(host: &str, port: u16, tls: Option<&TlsCertificates>) -> RedisResult<ConnectionInfo> {
    match tls {
        None => ConnectionAddr::Tcp(host.to_string(), port).into_connection_info(),
        Some(certificates) => {
            let addr = ConnectionAddr::TcpTls { host: host.to_string(), port, insecure: false, tls_params: None };
            // The crate parses the PEM bytes into the address's TLS parameters here.
            Ok(redis::Client::build_with_tls(addr, certificates.clone())?.get_connection_info().clone())
        }
    }
}

impl RedisManager {
    /// A connection with our timeouts on both directions.
    ///
    /// The TLS handshake happens within the connect timeout too: the redis crate bounds the
    /// whole setup (connect, handshake, AUTH/SELECT) by it, so a server that accepts and never
    /// completes the handshake fails the connect instead of hanging it.
    fn open(&self, info: ConnectionInfo) -> Result<redis::Connection, redis::RedisError> {
        let conn = redis::Client::open(info)?.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }

    /// Asks the sentinels in turn for the current master and connects to it, checking that it
    /// really is the master (right after a failover a sentinel may still name the old one).
    ///
    /// Done here rather than with the redis crate's `Sentinel`, whose sync calls have no
    /// timeouts: one sentinel that accepts connections and never answers would block every
    /// pool connect for good.
    fn connect_through_sentinels(
        &self,
        sentinels: &[ConnectionInfo],
        master_name: &str,
    ) -> Result<redis::Connection, redis::RedisError> {
        let mut last_error = None;
        for sentinel in sentinels {
            let attempt = self.open(sentinel.clone()).and_then(|mut s| {
                let addr: Option<(String, u16)> =
                    redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(master_name).query(&mut s)?;
                let (host, port) = addr.ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Io, "sentinel does not know the master"))
                })?;
                let info = node_addr(&host, port, self.tls.as_ref())?.set_redis_settings(self.node_info.clone());
                let mut master = self.open(info)?;
                let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut master)?;
                match role.first() {
                    Some(redis::Value::BulkString(r)) if r.as_slice() == b"master" => Ok(master),
                    _ => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the address sentinel gave is not a master",
                    ))),
                }
            });
            match attempt {
                Ok(conn) => return Ok(conn),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no sentinel configured"))))
    }
}

impl r2d2::ManageConnection for RedisManager {
    type Connection = redis::Connection;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<redis::Connection, redis::RedisError> {
        match &self.source {
            Source::Direct(info) => self.open(info.clone().set_redis_settings(self.node_info.clone())),
            Source::Sentinel { sentinels, master_name } => self.connect_through_sentinels(sentinels, master_name),
        }
    }

    fn is_valid(&self, conn: &mut redis::Connection) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query::<String>(conn).map(|_| ())
    }

    fn has_broken(&self, conn: &mut redis::Connection) -> bool {
        !conn.is_open()
    }
}

/// Builds the pool without connecting: the first checkout connects.
pub fn pool(settings: &RedisSettings) -> Result<RedisPool, StoreError> {
    let certificates = settings
        .tls
        .as_ref()
        .map(tls::redis_certificates)
        .transpose()
        .map_err(|e| StoreError::RedisUnavailable(Box::new(e)))?;
    let source = match &settings.target {
        RedisTarget::Direct { host, port } => Source::Direct(node_addr(host, *port, certificates.as_ref())?),
        RedisTarget::Sentinel { sentinels, master_name, sentinel_username, sentinel_password } => {
            let mut sentinel_auth = RedisConnectionInfo::default();
            if let Some(u) = sentinel_username {
                sentinel_auth = sentinel_auth.set_username(u);
            }
            if let Some(p) = sentinel_password {
                sentinel_auth = sentinel_auth.set_password(p);
            }
            let mut infos: Vec<ConnectionInfo> = Vec::new();
            for (host, port) in sentinels {
                let info = ConnectionAddr::Tcp(host.clone(), *port).into_connection_info()?;
                infos.push(info.set_redis_settings(sentinel_auth.clone()));
            }
            Source::Sentinel { sentinels: infos, master_name: master_name.clone() }
        }
    };
    let mut node_info = RedisConnectionInfo::default().set_db(settings.db);
    if let Some(u) = &settings.username {
        node_info = node_info.set_username(u);
    }
    if let Some(p) = &settings.password {
        node_info = node_info.set_password(p);
    }
    let manager = RedisManager { source, node_info, tls: certificates, timeout: settings.timeout };
    Ok(r2d2::Pool::builder()
        .max_size(settings.max_connections.max(1))
        .min_idle(Some(0))
        .connection_timeout(settings.timeout)
        // No PING on every checkout: it doubles the round trips of every command. A connection
        // that died while pooled is detected by the command itself, and `run` retries it.
        .test_on_check_out(false)
        // r2d2 logs every failed connect at error level; we report availability changes ourselves.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(manager))
}

/// Checks a connection out of the pool, mapping the failure to `StoreError::RedisUnavailable`.
pub fn checkout(pool: &RedisPool) -> Result<RedisConn, StoreError> {
    pool.get().map_err(|e| StoreError::RedisUnavailable(Box::new(e)))
}

/// Runs `op` on a pooled connection. When the connection turns out to have died while it sat
/// in the pool (Redis restarted, or Sentinel moved the master), the broken connection is
/// dropped and `op` runs again on another one, a few times at most: a restart must not cost
/// every pooled connection a failed request.
pub fn run<T>(pool: &RedisPool, mut op: impl FnMut(&mut RedisConn) -> Result<T, StoreError>) -> Result<T, StoreError> {
    retry_on_lost_connection(pool, || {
        let mut conn = checkout(pool)?;
        op(&mut conn)
    })
}

/// Calls `attempt` (which checks out its own connection) again while it fails with
/// [`StoreError::RedisConnectionLost`]. For callers whose work spans several commands on one
/// connection; every attempt must be safe to repeat.
pub fn retry_on_lost_connection<T>(
    pool: &RedisPool,
    mut attempt: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Every pooled connection may be dead after a restart, plus one fresh one.
    let attempts = (pool.max_size() + 1).clamp(2, 5);
    let mut last = None;
    for _ in 0..attempts {
        match attempt() {
            Err(StoreError::RedisConnectionLost(e)) => last = Some(e),
            other => return other,
        }
    }
    Err(StoreError::RedisConnectionLost(last.unwrap_or_else(|| "".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_is_reported_as_unavailable() {
        let pool = pool(&RedisSettings::direct("127.0.0.1", 1, Duration::from_millis(200), 1)).unwrap();
        let err = run(&pool, |c| Ok(redis::cmd("PING").query::<String>(&mut **c)?)).unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }
}
