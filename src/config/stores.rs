//! The MySQL and Redis settings (hosts, pools, TLS, Sentinel).

use std::net::Ipv6Addr;

use super::env::{invalid, list_items, parse_decimal, usize_from, Env};
use super::{ConfigError, MysqlTls, MysqlTlsFiles, RedisTls, DEFAULT_SENTINEL_PORT};
use crate::net::split_host_port;
use crate::registrar::fair_pool::PoolLimits;
use crate::store::mysql::MysqlSettings;
use crate::store::redis::{RedisSettings, RedisTarget};

/// The read pool and, when all four `JAMBONES_MYSQL_WRITE_*` variables are set, the write
/// pool. Only called after the read pool's variables were checked present.
pub(super) fn mysql_pools(
    env: &Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<(MysqlSettings, Option<MysqlSettings>), ConfigError> {
    let tls = mysql_tls(env, warnings);
    let timeout = env.millis("SBC_MYSQL_TIMEOUT_MS", 1000, 1)?;
    let pool = |prefix: &str, limit_var: &str| -> Result<MysqlSettings, ConfigError> {
        let var = |suffix: &str| format!("{prefix}{suffix}");
        Ok(MysqlSettings {
            host: env.string(&var("HOST"), ""),
            port: env.port(&var("PORT"), 3306)?,
            user: env.string(&var("USER"), ""),
            password: env.string(&var("PASSWORD"), ""),
            database: env.string(&var("DATABASE"), ""),
            connection_limit: usize_from(env.count(limit_var, 10, 1, 1000)?),
            tls: tls.clone(),
            timeout,
        })
    };
    let read = pool("JAMBONES_MYSQL_", "JAMBONES_MYSQL_CONNECTION_LIMIT")?;

    let write_vars = [
        "JAMBONES_MYSQL_WRITE_HOST",
        "JAMBONES_MYSQL_WRITE_USER",
        "JAMBONES_MYSQL_WRITE_PASSWORD",
        "JAMBONES_MYSQL_WRITE_DATABASE",
    ];
    let write_vars_set = write_vars.iter().filter(|v| env.truthy(v)).count();
    let write = if write_vars_set == write_vars.len() {
        Some(pool("JAMBONES_MYSQL_WRITE_", "JAMBONES_MYSQL_WRITE_CONNECTION_LIMIT")?)
    } else {
        if write_vars_set > 0 {
            warnings.push(
                "only some of JAMBONES_MYSQL_WRITE_HOST/_USER/_PASSWORD/_DATABASE are set; \
                 all four are needed for a write pool, so writes use the read pool"
                    .to_string(),
            );
        }
        None
    };
    Ok((read, write))
}

/// Standalone (`JAMBONES_REDIS_HOST`/`_PORT`/`_USERNAME`/`_PASSWORD`) or, when
/// `JAMBONES_REDIS_SENTINELS` is set, through the sentinels: `JAMBONES_REDIS_SENTINEL_USERNAME`
/// and `_PASSWORD` log in to the master they name, `_SERVER_PASSWORD` to the sentinels
/// themselves. `max_connections`: an auth worker holds a connection for well under a
/// millisecond after its webhook answered, so a sixteenth of the in-flight limit (at least the
/// workers always kept, at most 64) plus room for the other roles keeps them from waiting.
pub(super) fn redis(
    env: &Env<'_>,
    sentinels: Option<&str>,
    auth: &PoolLimits,
    warnings: &mut Vec<String>,
) -> Result<RedisSettings, ConfigError> {
    let (target, username, password) = match sentinels {
        Some(list) => (
            RedisTarget::Sentinel {
                sentinels: parse_sentinels(list)?,
                master_name: env.string("JAMBONES_REDIS_SENTINEL_MASTER_NAME", ""),
                sentinel_username: None,
                sentinel_password: env.optional("JAMBONES_REDIS_SENTINEL_SERVER_PASSWORD"),
            },
            env.optional("JAMBONES_REDIS_SENTINEL_USERNAME"),
            env.optional("JAMBONES_REDIS_SENTINEL_PASSWORD"),
        ),
        None => (
            RedisTarget::Direct {
                host: env.string("JAMBONES_REDIS_HOST", ""),
                port: env.port("JAMBONES_REDIS_PORT", 6379)?,
            },
            env.optional("JAMBONES_REDIS_USERNAME"),
            env.optional("JAMBONES_REDIS_PASSWORD"),
        ),
    };
    let mut tls = env.truthy("ENABLE_JAMBONES_REDIS_TLS").then(|| RedisTls {
        ca_file: env.path("JAMBONES_REDIS_TLS_CA_FILE"),
        cert_file: env.path("JAMBONES_REDIS_TLS_CERT_FILE"),
        key_file: env.path("JAMBONES_REDIS_TLS_KEY_FILE"),
    });
    // With Sentinel the Node program reaches the master in clear text whatever
    // ENABLE_JAMBONES_REDIS_TLS says (ioredis applies `tls` to a Sentinel master only with
    // `enableTLSForSentinelMode`, which realtimedb-helpers never sets). A cluster that works
    // today therefore has a plain master port; following the variable would cut this SBC off
    // from it. TLS to the master is ours to opt into.
    let sentinel_master_tls = env.switch("SBC_REDIS_SENTINEL_MASTER_TLS", false)?;
    if matches!(target, RedisTarget::Sentinel { .. }) && tls.is_some() && !sentinel_master_tls {
        warnings.push(
            "ENABLE_JAMBONES_REDIS_TLS is set with JAMBONES_REDIS_SENTINELS: the master is reached over plain TCP, \
             as the Node sidecar does; set SBC_REDIS_SENTINEL_MASTER_TLS=1 for TLS to the master"
                .to_string(),
        );
        tls = None;
    }
    Ok(RedisSettings {
        target,
        username,
        password,
        db: 0,
        timeout: env.millis("SBC_REDIS_TIMEOUT_MS", 1000, 1)?,
        max_connections: u32::try_from((auth.max_in_flight / 16).clamp(auth.min_threads, 64.max(auth.min_threads)))
            .unwrap_or(u32::MAX)
            .saturating_add(8),
        tls,
    })
}

/// db-helpers semantics: `JAMBONES_MYSQL_REJECT_UNAUTHORIZED` set ⇒ TLS, verifying unless it
/// is `0`; all three `JAMBONES_MYSQL_SSL_*_FILE` set ⇒ TLS with those files (verifying).
fn mysql_tls(env: &Env<'_>, warnings: &mut Vec<String>) -> Option<MysqlTls> {
    let reject_unauthorized = env.get("JAMBONES_MYSQL_REJECT_UNAUTHORIZED");
    let ca = env.path("JAMBONES_MYSQL_SSL_CA_FILE");
    let cert = env.path("JAMBONES_MYSQL_SSL_CERT_FILE");
    let key = env.path("JAMBONES_MYSQL_SSL_KEY_FILE");
    let files = match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Some(MysqlTlsFiles { ca, cert, key }),
        (None, None, None) => None,
        _ => {
            warnings.push(
                "only some of JAMBONES_MYSQL_SSL_CA_FILE/_CERT_FILE/_KEY_FILE are set; \
                 all three are needed, so they are ignored"
                    .to_string(),
            );
            None
        }
    };
    if reject_unauthorized.is_none() && files.is_none() {
        return None;
    }
    Some(MysqlTls { verify: reject_unauthorized.map(str::trim) != Some("0"), files })
}

/// `host[:port]` entries; IPv6 hosts as `[::1]:26379` or bare `::1`.
fn parse_sentinels(list: &str) -> Result<Vec<(String, u16)>, ConfigError> {
    const VAR: &str = "JAMBONES_REDIS_SENTINELS";
    let bad = |item: &str| invalid(VAR, item, "a comma list of host[:port]".into());
    let mut sentinels = Vec::new();
    for item in list_items(list) {
        let (host, port) = if item.parse::<Ipv6Addr>().is_ok() {
            (item, None)
        } else {
            split_host_port(item).ok_or_else(|| bad(item))?
        };
        if host.is_empty() {
            return Err(bad(item));
        }
        let port = match port {
            None => DEFAULT_SENTINEL_PORT,
            Some(port) => parse_decimal(port)
                .filter(|p| (1..=65535).contains(p))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad(item))?,
        };
        sentinels.push((host.to_string(), port));
    }
    if sentinels.is_empty() {
        return Err(bad(list));
    }
    Ok(sentinels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::*;

    #[test]
    fn write_pool_needs_all_four_variables() {
        let write = [
            ("JAMBONES_MYSQL_WRITE_HOST", "primary.local"),
            ("JAMBONES_MYSQL_WRITE_USER", "writer"),
            ("JAMBONES_MYSQL_WRITE_PASSWORD", "write-pw"),
            ("JAMBONES_MYSQL_WRITE_DATABASE", "jambones"),
        ];
        let c = run(&with(minimal_env(), &write), &[]);
        let w = c.mysql_write.unwrap();
        assert_eq!(w.host, "primary.local");
        assert_eq!(w.port, 3306);
        assert_eq!(w.user, "writer");
        assert_eq!(w.password, "write-pw");
        assert_eq!(w.connection_limit, 10);

        let env = with(
            with(minimal_env(), &write),
            &[
                ("JAMBONES_MYSQL_WRITE_PORT", "3310"),
                ("JAMBONES_MYSQL_WRITE_CONNECTION_LIMIT", "3"),
                ("JAMBONES_MYSQL_CONNECTION_LIMIT", "20"),
            ],
        );
        let c = run(&env, &[]);
        assert_eq!(c.mysql.connection_limit, 20);
        let w = c.mysql_write.unwrap();
        assert_eq!((w.port, w.connection_limit), (3310, 3));

        let c = run(&with(minimal_env(), &write[..3]), &[]);
        assert_eq!(c.mysql_write, None);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("JAMBONES_MYSQL_WRITE_HOST"));
    }

    #[test]
    fn mysql_tls_follows_db_helpers() {
        let tls = |pairs: &[(&str, &str)]| run(&with(minimal_env(), pairs), &[]).mysql.tls;
        assert_eq!(tls(&[("JAMBONES_MYSQL_REJECT_UNAUTHORIZED", "0")]), Some(MysqlTls { verify: false, files: None }));
        assert_eq!(tls(&[("JAMBONES_MYSQL_REJECT_UNAUTHORIZED", "1")]), Some(MysqlTls { verify: true, files: None }));
        assert_eq!(
            tls(&[("JAMBONES_MYSQL_REJECT_UNAUTHORIZED", "false")]),
            Some(MysqlTls { verify: true, files: None })
        );
        let files = [
            ("JAMBONES_MYSQL_SSL_CA_FILE", "/etc/ca.pem"),
            ("JAMBONES_MYSQL_SSL_CERT_FILE", "/etc/cert.pem"),
            ("JAMBONES_MYSQL_SSL_KEY_FILE", "/etc/key.pem"),
        ];
        assert_eq!(
            tls(&files),
            Some(MysqlTls {
                verify: true,
                files: Some(MysqlTlsFiles {
                    ca: "/etc/ca.pem".into(),
                    cert: "/etc/cert.pem".into(),
                    key: "/etc/key.pem".into(),
                })
            })
        );
        let c = run(&with(minimal_env(), &files[..2]), &[]);
        assert_eq!(c.mysql.tls, None);
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn redis_sentinels() {
        let env = with(
            without(minimal_env(), &["JAMBONES_REDIS_HOST"]),
            &[
                ("JAMBONES_REDIS_SENTINELS", "s1.local:26380, s2.local,[::1]:26381,::2"),
                ("JAMBONES_REDIS_SENTINEL_MASTER_NAME", "mymaster"),
                ("JAMBONES_REDIS_SENTINEL_USERNAME", "app"),
                ("JAMBONES_REDIS_SENTINEL_PASSWORD", "master-pw"),
                ("JAMBONES_REDIS_SENTINEL_SERVER_PASSWORD", "sentinel-pw"),
            ],
        );
        let c = run(&env, &[]);
        let hp = |host: &str, port| (host.to_string(), port);
        assert_eq!(
            c.redis.target,
            RedisTarget::Sentinel {
                sentinels: vec![hp("s1.local", 26380), hp("s2.local", 26379), hp("::1", 26381), hp("::2", 26379)],
                master_name: "mymaster".into(),
                sentinel_username: None,
                sentinel_password: Some("sentinel-pw".into()),
            }
        );
        // The master found through the sentinels is logged in to with these.
        assert_eq!(c.redis.username.as_deref(), Some("app"));
        assert_eq!(c.redis.password.as_deref(), Some("master-pw"));
        let bad = with(env.clone(), &[("JAMBONES_REDIS_SENTINELS", "s1.local:2637x")]);
        assert_eq!(
            error(&bad, &[]).to_string(),
            "invalid JAMBONES_REDIS_SENTINELS=\"s1.local:2637x\": expected a comma list of host[:port]"
        );
    }

    #[test]
    fn redis_tls() {
        let c = run(
            &with(
                minimal_env(),
                &[("ENABLE_JAMBONES_REDIS_TLS", "0"), ("JAMBONES_REDIS_TLS_CA_FILE", "/etc/redis-ca.pem")],
            ),
            &[],
        );
        assert_eq!(
            c.redis.tls,
            Some(RedisTls { ca_file: Some("/etc/redis-ca.pem".into()), cert_file: None, key_file: None })
        );
    }

    /// The Node program reaches a Sentinel master in clear text even with
    /// ENABLE_JAMBONES_REDIS_TLS; so do we unless SBC_REDIS_SENTINEL_MASTER_TLS says otherwise.
    #[test]
    fn redis_tls_with_sentinels_is_plain_to_the_master_unless_opted_in() {
        let tls = [("ENABLE_JAMBONES_REDIS_TLS", "1"), ("JAMBONES_REDIS_TLS_CA_FILE", "/etc/ssl/redis-ca.pem")];
        let standalone = run(&with(minimal_env(), &tls), &[]);
        assert_eq!(standalone.redis.tls.as_ref().and_then(|t| t.ca_file.clone()), Some("/etc/ssl/redis-ca.pem".into()));
        assert!(standalone.warnings.is_empty(), "{:?}", standalone.warnings);

        let sentinel = with(
            without(minimal_env(), &["JAMBONES_REDIS_HOST"]),
            &[("JAMBONES_REDIS_SENTINELS", "s1"), ("JAMBONES_REDIS_SENTINEL_MASTER_NAME", "m")],
        );
        let plain = run(&with(sentinel.clone(), &tls), &[]);
        assert_eq!(plain.redis.tls, None);
        assert!(plain.warnings.iter().any(|w| w.contains("SBC_REDIS_SENTINEL_MASTER_TLS=1")), "{:?}", plain.warnings);
        for on in ["1", "true", "YES", " on "] {
            let opted = run(&with(with(sentinel.clone(), &tls), &[("SBC_REDIS_SENTINEL_MASTER_TLS", on)]), &[]);
            assert!(opted.redis.tls.is_some(), "{on}");
            assert!(opted.warnings.is_empty(), "{:?}", opted.warnings);
        }
        let off = run(&with(with(sentinel, &tls), &[("SBC_REDIS_SENTINEL_MASTER_TLS", "off")]), &[]);
        assert_eq!(off.redis.tls, None);
        let err = error(&with(minimal_env(), &[("SBC_REDIS_SENTINEL_MASTER_TLS", "maybe")]), &[]);
        assert_eq!(
            err.to_string(),
            "invalid SBC_REDIS_SENTINEL_MASTER_TLS=\"maybe\": expected 1 or 0 (true/false, yes/no, on/off)"
        );
    }
}
