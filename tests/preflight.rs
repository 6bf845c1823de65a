//! `sbc-sidecar --check`, the real binary: all ok against the drachtio double, MariaDB and
//! Redis; then each dependency broken in turn, which names it, says the fix and exits 69
//! (`EX_UNAVAILABLE`) or 78 (`EX_CONFIG`).

use std::collections::HashMap;
use std::process::Command;

use mysql::prelude::Queryable;
use sbc_test_tools::daemon::{base_env, program};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::sipp;

struct Rig {
    db: TestDb,
    _double: Double,
    env: HashMap<String, String>,
    dir: std::path::PathBuf,
}

impl Rig {
    fn start() -> Rig {
        let db = TestDb::create();
        let double = Double::start(DoubleConfig::default()).expect("double");
        let dir = sipp::tempdir();
        let mut env = base_env(double.admin_addr().port(), &db.name);
        env.insert("SBC_SOCKET_PATH".into(), dir.join("sbc.sock").display().to_string());
        env.insert("ENABLE_METRICS".into(), "1".into());
        Rig { db, _double: double, env, dir }
    }

    fn with(&self, overrides: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env = self.env.clone();
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `sbc-sidecar --check`: (exit status, stdout lines).
fn check(env: &HashMap<String, String>) -> (i32, Vec<String>) {
    let out = Command::new(program("sbc-sidecar"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .arg("--check")
        .output()
        .expect("sbc-sidecar runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout.lines().map(str::to_string).collect())
}

/// The line of check `name`.
fn line<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| panic!("no line for {name}: {lines:#?}"))
}

const CHECKS: &[&str] = &[
    "configuration",
    "mysql login",
    "mysql schema",
    "mysql grants",
    "redis",
    "drachtio",
    "statsd",
    "influxdb",
    "control socket",
];

#[test]
fn every_check_passes_against_the_double_mariadb_and_redis() {
    let rig = Rig::start();
    let (code, lines) = check(&rig.env);
    assert_eq!(code, 0, "{lines:#?}");
    for name in CHECKS {
        assert!(line(&lines, name).starts_with("ok "), "{name}: {lines:#?}");
    }
    assert!(line(&lines, "drachtio").contains("authenticated"), "{lines:#?}");
    assert_eq!(lines.last().map(String::as_str), Some("all checks passed"));
    assert_eq!(lines.len(), CHECKS.len() + 1, "one line per check: {lines:#?}");
    // Nothing left behind: no scratch key, no probe file, no socket.
    let mut redis = sbc_test_tools::services::redis();
    let keys: Vec<String> = redis::cmd("KEYS").arg("default:sbc-sidecar-preflight:*").query(&mut redis).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(std::fs::read_dir(&rig.dir).unwrap().count(), 0, "the socket directory is as it was");
}

#[test]
fn mysql_where_nothing_listens_is_unavailable() {
    let rig = Rig::start();
    let port = sipp::free_port("127.0.0.1").to_string();
    let (code, lines) = check(&rig.with(&[("JAMBONES_MYSQL_PORT", &port)]));
    assert_eq!(code, 69, "{lines:#?}");
    let mysql = line(&lines, "mysql login");
    assert!(mysql.starts_with("FAIL") && mysql.contains(&format!(":{port}/")), "{mysql}");
    assert!(mysql.contains("fix: start MySQL"), "{mysql}");
    // The other dependencies are still checked.
    assert!(line(&lines, "redis").starts_with("ok "), "{lines:#?}");
    assert!(line(&lines, "drachtio").starts_with("ok "), "{lines:#?}");
}

#[test]
fn a_wrong_mysql_password_is_a_configuration_problem() {
    let rig = Rig::start();
    let (code, lines) = check(&rig.with(&[("JAMBONES_MYSQL_PASSWORD", "not-the-password")]));
    assert_eq!(code, 78, "{lines:#?}");
    let mysql = line(&lines, "mysql login");
    assert!(mysql.contains("login refused") && mysql.contains("JAMBONES_MYSQL_PASSWORD"), "{mysql}");
    assert!(!lines.iter().any(|l| l.contains("not-the-password")), "no password printed: {lines:#?}");
}

#[test]
fn a_missing_column_and_a_statement_that_cannot_be_written_are_named() {
    let rig = Rig::start();
    let mut c = rig.db.conn();
    c.query_drop("ALTER TABLE voip_carriers DROP COLUMN register_status").unwrap();
    // A view with DISTINCT cannot be written through, whatever the user's grants.
    c.query_drop("RENAME TABLE sbc_addresses TO sbc_addresses_base").unwrap();
    c.query_drop("CREATE VIEW sbc_addresses AS SELECT DISTINCT * FROM sbc_addresses_base").unwrap();
    let (code, lines) = check(&rig.env);
    assert_eq!(code, 78, "{lines:#?}");
    let schema = line(&lines, "mysql schema");
    assert!(schema.starts_with("FAIL") && schema.contains("voip_carriers.register_status"), "{schema}");
    let grants = line(&lines, "mysql grants");
    assert!(grants.starts_with("FAIL"), "{grants}");
    for statement in ["INSERT sbc_addresses", "UPDATE sbc_addresses", "DELETE sbc_addresses"] {
        assert!(grants.contains(statement), "{statement}: {grants}");
    }
    assert!(grants.contains("make sbc_addresses writable"), "not a grant problem: {grants}");
    assert!(!grants.contains("GRANT"), "{grants}");
}

#[test]
fn redis_at_a_closed_port_is_unavailable() {
    let rig = Rig::start();
    let port = sipp::free_port("127.0.0.1").to_string();
    let (code, lines) = check(&rig.with(&[("JAMBONES_REDIS_PORT", &port)]));
    assert_eq!(code, 69, "{lines:#?}");
    let redis = line(&lines, "redis");
    assert!(redis.starts_with("FAIL") && redis.contains(&format!("127.0.0.1:{port}")), "{redis}");
    assert!(redis.contains("fix: start Redis"), "{redis}");
    assert!(line(&lines, "mysql grants").starts_with("ok "), "{lines:#?}");
}

#[test]
fn a_wrong_drachtio_secret_is_a_configuration_problem() {
    let rig = Rig::start();
    let (code, lines) = check(&rig.with(&[("DRACHTIO_SECRET", "not-cymru")]));
    assert_eq!(code, 78, "{lines:#?}");
    let drachtio = line(&lines, "drachtio");
    assert!(drachtio.starts_with("FAIL") && drachtio.contains("authentication refused"), "{drachtio}");
    assert!(drachtio.contains("DRACHTIO_SECRET"), "{drachtio}");
    assert!(!lines.iter().any(|l| l.contains("not-cymru")), "no secret printed: {lines:#?}");
}

#[test]
fn drachtio_where_nothing_listens_is_unavailable() {
    let rig = Rig::start();
    let port = sipp::free_port("127.0.0.1").to_string();
    let (code, lines) = check(&rig.with(&[("DRACHTIO_PORT", &port)]));
    assert_eq!(code, 69, "{lines:#?}");
    assert!(line(&lines, "drachtio").contains("fix: start drachtio-server"), "{lines:#?}");
}

#[test]
fn an_unwritable_socket_directory_is_a_configuration_problem() {
    let rig = Rig::start();
    // Not even root may create a file in /proc.
    let (code, lines) = check(&rig.with(&[("SBC_SOCKET_PATH", "/proc/sbc-sidecar-check.sock")]));
    assert_eq!(code, 78, "{lines:#?}");
    let socket = line(&lines, "control socket");
    assert!(socket.starts_with("FAIL") && socket.contains("/proc: cannot create a file"), "{socket}");
    assert!(socket.contains("SBC_SOCKET_PATH"), "{socket}");
}

#[test]
fn a_configuration_error_stops_before_any_dependency_is_tried() {
    let rig = Rig::start();
    let mut env = rig.env.clone();
    env.remove("DRACHTIO_SECRET");
    let out =
        Command::new(program("sbc-sidecar")).env_clear().envs(&env).arg("--check").output().expect("sbc-sidecar runs");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing DRACHTIO_SECRET env var"));
    assert!(out.stdout.is_empty(), "no check ran: {}", String::from_utf8_lossy(&out.stdout));
}
