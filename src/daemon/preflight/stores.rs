//! The MySQL and Redis checks of `--check`.
//!
//! MySQL: log in; read `information_schema.COLUMNS` for every table and column the sidecar
//! reads (spec 12.2); then try each kind of statement it writes. Grants are checked by trial,
//! not by parsing `SHOW GRANTS`: grants come through roles, wildcards (`sbc\_%`.*), table and
//! column privileges, and the server is the one authority on what they add up to. Each trial
//! statement matches no row (`WHERE 1 = 0`) and all of them run inside a transaction that is
//! rolled back, so they change nothing even for a user that has every grant; the server still
//! checks the privileges of a statement before it looks for rows, so a read-only user gets
//! `UPDATE command denied` for exactly the statement it may not run. A server in `read_only`
//! mode (a replica) is reported the same way.

use std::time::{SystemTime, UNIX_EPOCH};

use mysql::prelude::Queryable;
use mysql::PooledConn;

use super::{Line, Outcome, CHECK_TIMEOUT};
use crate::config::Config;
use crate::store::mysql::{MysqlPool, MysqlSettings};
use crate::store::redis::{self as redis_store, RedisSettings, RedisTarget};
use crate::store::StoreError;

/// The tables and columns the sidecar reads (spec 12.2).
pub const READ_COLUMNS: &[(&str, &[&str])] = &[
    (
        "accounts",
        &["account_sid", "sip_realm", "is_active", "webhook_secret", "device_to_call_ratio", "registration_hook_sid"],
    ),
    ("webhooks", &["webhook_sid", "url", "method", "username", "password"]),
    ("products", &["product_sid", "category"]),
    ("account_products", &["account_subscription_sid", "product_sid", "quantity"]),
    ("account_subscriptions", &["account_subscription_sid", "account_sid", "pending", "effective_end_date"]),
    (
        "clients",
        &[
            "client_sid",
            "account_sid",
            "is_active",
            "username",
            "password",
            "allow_direct_app_calling",
            "allow_direct_queue_calling",
            "allow_direct_user_calling",
        ],
    ),
    (
        "voip_carriers",
        &[
            "voip_carrier_sid",
            "name",
            "account_sid",
            "service_provider_sid",
            "requires_register",
            "is_active",
            "register_username",
            "register_password",
            "register_sip_realm",
            "register_from_user",
            "register_from_domain",
            "register_public_ip_in_contact",
            "outbound_sip_proxy",
            "trunk_type",
            "register_status",
        ],
    ),
    (
        "sip_gateways",
        &[
            "sip_gateway_sid",
            "voip_carrier_sid",
            "ipv4",
            "port",
            "protocol",
            "outbound",
            "is_active",
            "send_options_ping",
            "use_sips_scheme",
        ],
    ),
    ("sbc_addresses", &["sbc_address_sid", "ipv4", "port", "tls_port", "wss_port", "last_updated"]),
    ("system_information", &["sip_domain_name"]),
];

/// The statements the sidecar writes, as trials that match no row: (grant needed, table,
/// statement).
pub const WRITE_TRIALS: &[(&str, &str, &str)] = &[
    (
        "UPDATE",
        "voip_carriers",
        "UPDATE voip_carriers SET register_status = register_status, requires_register = requires_register, \
         is_active = is_active WHERE 1 = 0",
    ),
    ("UPDATE", "sip_gateways", "UPDATE sip_gateways SET send_options_ping = send_options_ping WHERE 1 = 0"),
    (
        "INSERT",
        "sbc_addresses",
        "INSERT INTO sbc_addresses (sbc_address_sid, ipv4, port, tls_port, wss_port, last_updated) \
         SELECT sbc_address_sid, ipv4, port, tls_port, wss_port, last_updated FROM sbc_addresses WHERE 1 = 0",
    ),
    (
        "UPDATE",
        "sbc_addresses",
        "UPDATE sbc_addresses SET port = port, tls_port = tls_port, wss_port = wss_port, last_updated = NOW() \
         WHERE 1 = 0",
    ),
    ("DELETE", "sbc_addresses", "DELETE FROM sbc_addresses WHERE 1 = 0"),
];

fn describe(s: &MysqlSettings) -> String {
    format!("{}@{}:{}/{}", s.user, s.host, s.port, s.database)
}

/// The MySQL error inside a store error, if the server sent one.
fn server_error(e: &StoreError) -> Option<&mysql::error::MySqlError> {
    let inner = match e {
        StoreError::Mysql(m) => Some(m),
        StoreError::MysqlUnavailable(cause) => cause.downcast_ref::<mysql::Error>(),
        _ => None,
    };
    match inner {
        Some(mysql::Error::MySqlError(me)) => Some(me),
        _ => None,
    }
}

fn connect(s: &MysqlSettings, vars: &str) -> Result<PooledConn, Outcome> {
    let mut quick = s.clone();
    quick.timeout = CHECK_TIMEOUT;
    quick.connection_limit = 1;
    let conn = MysqlPool::new(&quick).and_then(|pool| pool.conn());
    conn.map_err(|e| match server_error(&e) {
        Some(me) if me.code == 1045 => Outcome::config(
            format!("{}: login refused: {}", describe(s), me.message),
            format!("check {vars}_USER and {vars}_PASSWORD"),
        ),
        Some(me) if me.code == 1044 || me.code == 1049 => Outcome::config(
            format!("{}: {}", describe(s), me.message),
            format!("check {vars}_DATABASE and the user's grants on it"),
        ),
        _ => Outcome::unavailable(
            format!("{}: {e}", describe(s)),
            format!("start MySQL, or check {vars}_HOST and {vars}_PORT"),
        ),
    })
}

/// Login, schema and grants (on the write pool's login when there is one).
pub(super) fn mysql(config: &Config) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut read = match connect(&config.mysql, "JAMBONES_MYSQL") {
        Ok(conn) => conn,
        Err(outcome) => {
            lines.push(Line { check: "mysql login", outcome });
            return lines;
        }
    };
    lines.push(Line { check: "mysql login", outcome: Outcome::Ok(describe(&config.mysql)) });
    lines.push(Line { check: "mysql schema", outcome: schema(&mut read) });
    let outcome = match &config.mysql_write {
        None => grants(&mut read, &config.mysql),
        Some(w) => match connect(w, "JAMBONES_MYSQL_WRITE") {
            Ok(mut conn) => grants(&mut conn, w),
            Err(outcome) => outcome,
        },
    };
    lines.push(Line { check: "mysql grants", outcome });
    lines
}

fn schema(conn: &mut PooledConn) -> Outcome {
    let rows: Result<Vec<(String, String)>, mysql::Error> =
        conn.query("SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()");
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return Outcome::unavailable(format!("reading information_schema: {e}"), "check that MySQL answers"),
    };
    let mut missing = Vec::new();
    for (table, columns) in READ_COLUMNS {
        if !rows.iter().any(|(t, _)| t == table) {
            missing.push(format!("table {table}"));
            continue;
        }
        for column in *columns {
            if !rows.iter().any(|(t, c)| t == table && c == column) {
                missing.push(format!("{table}.{column}"));
            }
        }
    }
    if missing.is_empty() {
        let n: usize = READ_COLUMNS.iter().map(|(_, c)| c.len()).sum();
        Outcome::Ok(format!("{} tables, {n} columns present", READ_COLUMNS.len()))
    } else {
        Outcome::config(
            format!("missing {}", missing.join(", ")),
            "point JAMBONES_MYSQL_DATABASE at the jambonz database (schema of jambonz-api-server)",
        )
    }
}

fn grants(conn: &mut PooledConn, s: &MysqlSettings) -> Outcome {
    if let Err(e) = conn.query_drop("START TRANSACTION") {
        return Outcome::unavailable(format!("START TRANSACTION: {e}"), "check that MySQL answers");
    }
    let mut denied = Vec::new();
    let mut fixes = Vec::new();
    for (grant, table, statement) in WRITE_TRIALS {
        if let Err(e) = conn.query_drop(statement) {
            let (code, text) = match &e {
                mysql::Error::MySqlError(me) => (me.code, me.message.clone()),
                other => (0, other.to_string()),
            };
            denied.push(format!("{grant} {table}: {text}"));
            let fix = match code {
                // command or column denied
                1142 | 1143 => format!("GRANT {grant} ON `{}`.`{table}` TO '{}'", s.database, s.user),
                // --read-only: a replica
                1290 => "point the write pool (JAMBONES_MYSQL_WRITE_*) at the primary".to_string(),
                _ => format!("make {table} writable as the jambonz schema has it"),
            };
            if !fixes.contains(&fix) {
                fixes.push(fix);
            }
        }
    }
    // Nothing matched a row; the rollback is for certainty, not for cleanup.
    let _ = conn.query_drop("ROLLBACK");
    if denied.is_empty() {
        Outcome::Ok(format!("{} may UPDATE voip_carriers, sip_gateways and write sbc_addresses", s.user))
    } else {
        Outcome::config(denied.join("; "), fixes.join("; "))
    }
}

fn describe_redis(s: &RedisSettings) -> String {
    match &s.target {
        RedisTarget::Direct { host, port } => format!("{host}:{port}"),
        RedisTarget::Sentinel { sentinels, master_name, .. } => {
            let list: Vec<String> = sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
            format!("master {master_name} via sentinels {}", list.join(","))
        }
    }
}

/// PING, then `SET <scratch> EX 30`, `GET`, `DEL`.
pub(super) fn redis(config: &Config) -> Line {
    let mut quick = config.redis.clone();
    quick.timeout = CHECK_TIMEOUT;
    quick.max_connections = 1;
    let target = describe_redis(&quick);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let key = crate::store::keys::preflight_probe(&config.cluster_id, std::process::id(), nanos);
    let result = redis_store::pool(&quick).and_then(|pool| {
        redis_store::run(&pool, |conn| {
            let _: String = redis::cmd("PING").query(&mut **conn)?;
            let _: () = redis::cmd("SET").arg(&key).arg("ok").arg("EX").arg(30).query(&mut **conn)?;
            let read: Option<String> = redis::cmd("GET").arg(&key).query(&mut **conn)?;
            let _: () = redis::cmd("DEL").arg(&key).query(&mut **conn)?;
            match read.as_deref() {
                Some("ok") => Ok(()),
                other => Err(StoreError::BadData(format!("wrote \"ok\", read back {other:?}"))),
            }
        })
    });
    let outcome = match result {
        Ok(()) => Outcome::Ok(format!("{target}: PING, SET/GET/DEL of a scratch key")),
        Err(e) => redis_failure(&target, &e),
    };
    Line { check: "redis", outcome }
}

fn redis_failure(target: &str, e: &StoreError) -> Outcome {
    let text = e.to_string();
    let upper = text.to_ascii_uppercase();
    if ["WRONGPASS", "NOAUTH", "AUTHENTICATION", "INVALID PASSWORD", "NOPERM"].iter().any(|w| upper.contains(w)) {
        Outcome::config(
            format!("{target}: login refused: {text}"),
            "check JAMBONES_REDIS_USERNAME and JAMBONES_REDIS_PASSWORD (JAMBONES_REDIS_SENTINEL_* with sentinels)",
        )
    } else if upper.contains("READONLY") || upper.contains("MISCONF") {
        Outcome::unavailable(
            format!("{target}: refuses writes: {text}"),
            "point JAMBONES_REDIS_HOST at the master, or fix its persistence (MISCONF)",
        )
    } else if upper.contains("MASTER") && upper.contains("SENTINEL") {
        Outcome::config(format!("{target}: {text}"), "check JAMBONES_REDIS_SENTINEL_MASTER_NAME")
    } else {
        Outcome::unavailable(
            format!("{target}: {text}"),
            "start Redis, or check JAMBONES_REDIS_HOST and JAMBONES_REDIS_PORT (or JAMBONES_REDIS_SENTINELS)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_failures_are_told_apart() {
        let e = StoreError::RedisUnavailable("WRONGPASS invalid username-password pair".into());
        assert!(matches!(redis_failure("h:1", &e), Outcome::Fail { failure: super::super::Failure::Config, .. }));
        let e = StoreError::RedisUnavailable("Connection refused (os error 111)".into());
        assert!(matches!(redis_failure("h:1", &e), Outcome::Fail { failure: super::super::Failure::Unavailable, .. }));
        let e = StoreError::RedisUnavailable("READONLY You can't write against a read only replica.".into());
        match redis_failure("h:1", &e) {
            Outcome::Fail { failure, what, .. } => {
                assert_eq!(failure, super::super::Failure::Unavailable);
                assert!(what.contains("refuses writes"), "{what}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_trial_statement_matches_no_row() {
        for (_, _, statement) in WRITE_TRIALS {
            assert!(statement.ends_with("WHERE 1 = 0"), "{statement}");
        }
    }
}
