//! What [`parse`] makes of whole environments, and the helpers every test module of
//! `config` uses.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use super::*;
use crate::bans::BanSettings;
use crate::logging::{LogFacility, LogTarget};
use crate::registrar::fair_pool::PoolLimits;
use crate::store::redis::RedisTarget;

/// The smallest environment the program starts with.
pub(super) fn minimal_env() -> HashMap<String, String> {
    [
        ("JAMBONES_MYSQL_HOST", "db.local"),
        ("JAMBONES_MYSQL_USER", "jambones"),
        ("JAMBONES_MYSQL_PASSWORD", "mysql-pw-4711"),
        ("JAMBONES_MYSQL_DATABASE", "jambones"),
        ("JAMBONES_REDIS_HOST", "redis.local"),
        ("DRACHTIO_HOST", "127.0.0.1"),
        ("DRACHTIO_PORT", "9022"),
        ("DRACHTIO_SECRET", "drachtio-secret-cymru"),
        ("JAMBONES_TIME_SERIES_HOST", "influx.local"),
        ("ENCRYPTION_SECRET", "encryption-secret-xyzzy"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub(super) fn with(mut env: HashMap<String, String>, pairs: &[(&str, &str)]) -> HashMap<String, String> {
    for (k, v) in pairs {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

pub(super) fn without(mut env: HashMap<String, String>, names: &[&str]) -> HashMap<String, String> {
    for name in names {
        env.remove(*name);
    }
    env
}

pub(super) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub(super) fn run(env: &HashMap<String, String>, argv: &[&str]) -> Config {
    match parse(env, &args(argv)) {
        Ok(Command::Run(config)) => config,
        other => panic!("expected Run, got {other:?}"),
    }
}

pub(super) fn error(env: &HashMap<String, String>, argv: &[&str]) -> ConfigError {
    match parse(env, &args(argv)) {
        Err(e) => e,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

pub(super) fn env_error(pairs: &[(&str, &str)]) -> String {
    error(&with(minimal_env(), pairs), &[]).to_string()
}

#[test]
fn every_default() {
    let c = run(&minimal_env(), &[]);
    assert_eq!(c.run_mode, RunMode::Foreground);
    assert_eq!(c.log_target, LogTarget::Stderr);
    assert_eq!(c.log_level, LevelFilter::Info);
    assert_eq!(c.log_facility, LogFacility::Daemon);
    assert_eq!(c.socket_path, PathBuf::from("/tmp/sbc-sip-sidecar.sock"));

    assert_eq!(c.drachtio.host, "127.0.0.1");
    assert_eq!(c.drachtio.port, 9022);
    assert_eq!(c.drachtio.secret.expose(), "drachtio-secret-cymru");
    assert_eq!(c.drachtio.ping_interval, Duration::from_millis(15_000));
    assert_eq!(c.drachtio.pong_timeout, Duration::from_millis(10_000));
    assert_eq!(c.drachtio.backoff_min, Duration::from_millis(150));
    assert_eq!(c.drachtio.backoff_max, Duration::from_millis(30_000));
    let cidrs: Vec<String> = c.drachtio.private_networks.iter().map(Cidr::to_string).collect();
    assert_eq!(cidrs, ["192.168.0.0/24", "172.16.0.0/16", "10.0.0.0/8"]);

    assert_eq!(c.mysql.host, "db.local");
    assert_eq!(c.mysql.port, 3306);
    assert_eq!(c.mysql.user, "jambones");
    assert_eq!(c.mysql.password, "mysql-pw-4711");
    assert_eq!(c.mysql.database, "jambones");
    assert_eq!(c.mysql.connection_limit, 10);
    assert_eq!(c.mysql.tls, None);
    assert_eq!(c.mysql.timeout, Duration::from_millis(1000));
    assert_eq!(c.mysql_write, None);

    assert_eq!(c.redis.target, RedisTarget::Direct { host: "redis.local".into(), port: 6379 });
    assert_eq!((c.redis.username.as_deref(), c.redis.password.as_deref()), (None, None));
    assert_eq!(c.redis.db, 0);
    assert_eq!(c.redis.tls, None);
    assert_eq!(c.redis.timeout, Duration::from_millis(1000));
    // A sixteenth of the in-flight limit (at least the workers kept) and the other roles.
    assert_eq!(c.redis.max_connections, 40);
    assert_eq!(c.time_series_host, "influx.local");
    assert_eq!(c.metrics, MetricsSettings::disabled());

    assert!(!c.node_env_test);
    assert!(!c.hosting);
    assert_eq!(c.cluster_id, "default");
    assert_eq!(c.check_expires_interval, Duration::from_millis(20_000));
    assert_eq!(c.expires_interval, Duration::from_millis(60_000));

    assert_eq!(
        c.regbot,
        RegbotSettings {
            cluster_id: "default".into(),
            failure_threshold: 3,
            failure_retry_interval: Duration::from_secs(300),
            default_expires: Duration::from_secs(3600),
            min_expires: Duration::from_secs(30),
            contact_use_ip: false,
            user_agent: "Jambonz 0.9.6".into(),
            batch_size: 10,
            batch_sleep: Duration::from_millis(250),
            status_interval: Duration::from_millis(60_000),
            token_ttl: Duration::from_secs(70),
            claim_jitter: Duration::from_millis(15_000),
            mode: RegbotMode::Leader,
            register_response_remove: Vec::new(),
            options_ping_interval: Duration::from_secs(60),
            options_ping_ttl: Duration::from_secs(300),
            options_response_remove: Vec::new(),
            sbc_public_address_keep_alive: Duration::from_millis(900_000),
            dead_sbc_age: Duration::from_secs(3600),
            dns: crate::regbot::DnsSettings::parse_resolv_conf(""),
        }
    );

    assert_eq!(c.encryption_secret.expose(), "encryption-secret-xyzzy");
    assert!(!c.legacy_crypto);
    assert_eq!(c.http_user_agent, None);
    assert_eq!(c.webhook_timeout, Duration::from_millis(3000));
    assert_eq!(c.shutdown_grace, Duration::from_millis(5000));
    assert_eq!(c.auth, PoolLimits::from_share(8, 512, 1024, 25));
    assert_eq!((c.auth.share, c.auth.key_queue), (128, 256));
    assert_eq!(c.nonce_ttl, Duration::from_secs(300));
    assert!(c.webhook_aor_check);
    assert_eq!(
        c.ban,
        BanSettings {
            max_failures: 10,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
            capacity: 65536,
            exempt: Vec::new(),
        }
    );
    assert_eq!(c.ban, BanSettings::default());
    assert!(c.warnings.is_empty());
}

#[test]
fn the_new_variables_table_states_the_defaults_parse_applies() {
    let defaults = run(&minimal_env(), &[]);
    for (name, default, meaning) in NEW_VARIABLES {
        assert!(!meaning.is_empty());
        assert!(name.starts_with("SBC_"), "{name}");
        let explicit = run(&with(minimal_env(), &[(name, default)]), &[]);
        assert_eq!(explicit, defaults, "{name}={default} is not the default");
    }
    // And every table entry is actually read: a bad value must be refused.
    for (name, _, _) in NEW_VARIABLES {
        let result = parse(&with(minimal_env(), &[(name, "bogus")]), &[]);
        assert!(result.is_err(), "{name} is not read");
    }
}

#[test]
fn debug_output_never_contains_secret_values() {
    let env = with(
        minimal_env(),
        &[
            ("JAMBONES_MYSQL_WRITE_HOST", "primary.local"),
            ("JAMBONES_MYSQL_WRITE_USER", "writer"),
            ("JAMBONES_MYSQL_WRITE_PASSWORD", "write-pw-0815"),
            ("JAMBONES_MYSQL_WRITE_DATABASE", "jambones"),
            ("JAMBONES_REDIS_PASSWORD", "redis-pw-2342"),
        ],
    );
    let c = run(&env, &[]);
    let debug = format!("{c:?}");
    for secret in
        ["mysql-pw-4711", "drachtio-secret-cymru", "encryption-secret-xyzzy", "write-pw-0815", "redis-pw-2342"]
    {
        assert!(!debug.contains(secret), "{secret} leaked");
    }
    assert!(debug.contains("<redacted>"));
    assert_eq!(Secret::new("x").to_string(), "<redacted>");

    let env = with(
        without(minimal_env(), &["JAMBONES_REDIS_HOST"]),
        &[
            ("JAMBONES_REDIS_SENTINELS", "s1"),
            ("JAMBONES_REDIS_SENTINEL_MASTER_NAME", "m"),
            ("JAMBONES_REDIS_SENTINEL_PASSWORD", "master-pw-777"),
            ("JAMBONES_REDIS_SENTINEL_SERVER_PASSWORD", "sentinel-pw-888"),
        ],
    );
    let debug = format!("{:?}", run(&env, &[]));
    assert!(!debug.contains("master-pw-777"));
    assert!(!debug.contains("sentinel-pw-888"));
}

#[test]
fn exit_codes() {
    assert_eq!(ConfigError::Usage("x".into()).exit_code(), EX_USAGE);
    assert_eq!(ConfigError::Missing("x".into()).exit_code(), EX_CONFIG);
    assert_eq!(EX_USAGE, 64);
    assert_eq!(EX_CONFIG, 78);
}
