//! The daemon as a process, between the drachtio double and sipp:
//! sipp → double → sbc-sidecar → double → sipp.

use std::time::Duration;

use mysql::prelude::Queryable;

use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::sipp;
use sbc_test_tools::tls::{ClientAuth, Pki, PrivateMariadb, ServerCert, TlsRedis, X509_USER};

const WAIT: Duration = Duration::from_secs(10);

fn start_double(admin_port: u16) -> Double {
    Double::start(DoubleConfig { admin: format!("127.0.0.1:{admin_port}").parse().unwrap(), ..DoubleConfig::default() })
        .expect("double starts")
}

fn options_from(ip: &str, double: &Double) -> sipp::SippRun {
    sipp::Sipp::new("options_plain.xml", &double.sip_addr().to_string(), ip, sipp::free_port(ip)).run()
}

#[test]
fn plain_options_gets_200_through_the_double_and_the_daemon() {
    let db = TestDb::create();
    let double = start_double(0);
    let mut daemon = Daemon::start(base_env(double.admin_addr().port(), &db.name), &[]);
    assert!(double.wait_for_route("options", WAIT), "daemon routed options; log:\n{}", daemon.log());
    let run = options_from("127.0.0.31", &double);
    assert_eq!(run.status, Some(0), "sipp: {}\n{}\nlog:\n{}", run.stdout, run.stderr, daemon.log());
    assert!(run.messages.contains("SIP/2.0 200 OK"), "{}", run.messages);
    assert!(!run.messages.contains("X-Members"), "a plain OPTIONS gets no X-Members");
    let socket = daemon.socket_path.clone();
    assert!(socket.exists(), "CLI socket while running");
    assert_eq!(daemon.stop(Duration::from_secs(5)).map(|s| s.code()), Some(Some(0)), "clean exit on SIGTERM");
    assert!(daemon.log().contains("SIGTERM received"));
    assert!(!socket.exists(), "CLI socket removed at exit");
    assert_eq!(double.app_connections(), 0, "drachtio connection closed at exit");
}

#[test]
fn the_daemon_reconnects_when_drachtio_restarts_and_serves_again() {
    let db = TestDb::create();
    let double = start_double(0);
    let admin_port = double.admin_addr().port();
    let daemon = Daemon::start(base_env(admin_port, &db.name), &[]);
    assert!(double.wait_for_route("options", WAIT), "log:\n{}", daemon.log());
    double.stop();
    assert!(daemon.wait_for_log("lost connection to drachtio", WAIT), "log:\n{}", daemon.log());
    let double = start_double(admin_port);
    assert!(double.wait_for_route("options", WAIT), "re-routed after restart; log:\n{}", daemon.log());
    let run = options_from("127.0.0.32", &double);
    assert_eq!(run.status, Some(0), "sipp after restart: {}\nlog:\n{}", run.stderr, daemon.log());
}

#[test]
fn a_wrong_secret_is_logged_and_retried_until_it_is_fixed() {
    let db = TestDb::create();
    let double = start_double(0);
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("DRACHTIO_SECRET".into(), "wrong".into());
    env.insert("SBC_DRACHTIO_BACKOFF_MAX_MS".into(), "300".into());
    let mut daemon = Daemon::start(env, &[]);
    assert!(daemon.wait_for_log("rejected our secret", WAIT), "log:\n{}", daemon.log());
    std::thread::sleep(Duration::from_secs(2));
    let log = daemon.log();
    let attempts = log.matches("rejected our secret").count();
    assert!((2..=20).contains(&attempts), "retries with backoff, not a tight loop: {attempts}\n{log}");
    assert!(!log.contains("wrong"), "the secret never reaches the log");
    assert!(daemon.is_running(), "still running");
    assert_eq!(double.app_connections(), 0);
}

#[test]
fn the_daemon_serves_sip_while_mysql_and_redis_are_unreachable() {
    let double = start_double(0);
    let mut env = base_env(double.admin_addr().port(), "sbc_nowhere");
    env.insert("JAMBONES_MYSQL_PORT".into(), "1".into());
    env.insert("JAMBONES_REDIS_PORT".into(), "1".into());
    let mut daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("options", WAIT), "connected without MySQL/Redis; log:\n{}", daemon.log());
    let run = options_from("127.0.0.33", &double);
    assert_eq!(run.status, Some(0), "plain OPTIONS needs neither: {}\nlog:\n{}", run.stderr, daemon.log());
    assert_eq!(daemon.stop(Duration::from_secs(5)).map(|s| s.code()), Some(Some(0)));
}

#[test]
fn a_missing_required_variable_is_one_line_and_a_non_zero_exit() {
    let mut env = base_env(9, "sbc_nowhere");
    env.remove("DRACHTIO_SECRET");
    let mut daemon = Daemon::start(env, &[]);
    let status = daemon.wait_exit(WAIT).expect("exits by itself");
    assert_eq!(status.code(), Some(78));
    let log = daemon.log();
    assert_eq!(log.lines().count(), 1, "one line: {log}");
    assert!(log.contains("missing DRACHTIO_SECRET env var"), "{log}");
}

#[test]
fn sigint_stops_the_daemon_cleanly_even_without_drachtio() {
    let db = TestDb::create();
    let mut daemon = Daemon::start(base_env(9, &db.name), &[]);
    assert!(daemon.wait_for_log("cannot connect to drachtio", WAIT), "log:\n{}", daemon.log());
    daemon.signal("INT");
    let status = daemon.wait_exit(Duration::from_secs(5)).expect("exits within 5 s");
    assert_eq!(status.code(), Some(0));
    assert!(daemon.log().contains("SIGINT received"));
}

#[test]
fn with_redis_tls_the_daemon_keeps_its_state_in_a_tls_only_redis() {
    let pki = Pki::generate();
    let redis = TlsRedis::start(&pki, ServerCert::Trusted, ClientAuth::Optional);
    let db = TestDb::create();
    let double = start_double(0);
    let cluster = format!("tls-{:08x}", rand::random::<u32>());
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("JAMBONES_REDIS_PORT".into(), redis.port.to_string());
    env.insert("ENABLE_JAMBONES_REDIS_TLS".into(), "1".into());
    env.insert("JAMBONES_REDIS_TLS_CA_FILE".into(), pki.ca.display().to_string());
    env.insert("JAMBONES_CLUSTER_ID".into(), cluster.clone());
    env.insert("SBC_REGBOT_CLAIM_JITTER_MS".into(), "0".into());
    let mut daemon = Daemon::start(env, &[]);
    // The cheapest write the daemon makes by itself: its claim of the regbot role.
    let key = format!("{cluster}:regbot-token");
    let start = std::time::Instant::now();
    let mut token: Option<String> = None;
    while start.elapsed() < WAIT && token.is_none() {
        token = redis::cmd("GET").arg(&key).query(&mut redis.admin()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(token.is_some(), "{key} written over TLS; log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains(&format!("Redis connections use TLS, trusting CA file {}", pki.ca.display())), "{log}");
    assert_eq!(daemon.stop(Duration::from_secs(5)).map(|s| s.code()), Some(Some(0)), "{}", daemon.log());
}

#[test]
fn with_mysql_tls_the_daemon_writes_to_a_mariadb_that_requires_a_client_certificate() {
    let pki = Pki::generate();
    let mariadb = PrivateMariadb::start(&pki, ServerCert::Trusted);
    mariadb.load_schema();
    let double = start_double(0);
    let mut env = base_env(double.admin_addr().port(), PrivateMariadb::DATABASE);
    env.insert("JAMBONES_MYSQL_PORT".into(), mariadb.port.to_string());
    env.insert("JAMBONES_MYSQL_USER".into(), X509_USER.name.into());
    env.insert("JAMBONES_MYSQL_PASSWORD".into(), X509_USER.password.into());
    env.insert("JAMBONES_MYSQL_SSL_CA_FILE".into(), pki.ca.display().to_string());
    env.insert("JAMBONES_MYSQL_SSL_CERT_FILE".into(), pki.client.cert.display().to_string());
    env.insert("JAMBONES_MYSQL_SSL_KEY_FILE".into(), pki.client.key.display().to_string());
    let mut daemon = Daemon::start(env, &[]);
    // On connecting to drachtio the daemon publishes its public addresses (127.0.0.1 is not
    // RFC 1918 space) in sbc_addresses.
    let start = std::time::Instant::now();
    let mut rows = 0;
    while start.elapsed() < WAIT && rows == 0 {
        rows = mariadb
            .root()
            .query_first::<u64, _>("SELECT COUNT(*) FROM sbc_addresses WHERE ipv4 = '127.0.0.1'")
            .unwrap()
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rows, 1, "sbc_addresses written over TLS; log:\n{}", daemon.log());
    assert!(daemon.log().contains("MySQL connections use TLS, trusting CA file"), "{}", daemon.log());
    assert_eq!(daemon.stop(Duration::from_secs(5)).map(|s| s.code()), Some(Some(0)), "{}", daemon.log());
}

#[test]
fn a_missing_tls_file_is_one_line_naming_the_variable_and_exit_78() {
    let missing = "/nonexistent/sbc-sidecar-test/file.pem";
    let cases: [&[(&str, &str)]; 2] = [
        &[("ENABLE_JAMBONES_REDIS_TLS", "1"), ("JAMBONES_REDIS_TLS_CA_FILE", missing)],
        &[
            ("JAMBONES_MYSQL_SSL_CA_FILE", missing),
            ("JAMBONES_MYSQL_SSL_CERT_FILE", missing),
            ("JAMBONES_MYSQL_SSL_KEY_FILE", missing),
        ],
    ];
    for vars in cases {
        let mut env = base_env(9, "sbc_nowhere");
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        let mut daemon = Daemon::start(env, &[]);
        let status = daemon.wait_exit(WAIT).expect("exits by itself");
        let log = daemon.log();
        assert_eq!(status.code(), Some(78), "{vars:?}: {log}");
        assert_eq!(log.lines().count(), 1, "one line: {log}");
        let var = if vars[0].0.starts_with("ENABLE") { vars[1].0 } else { vars[0].0 };
        assert!(log.starts_with(&format!("sbc-sidecar: {var}={missing}: cannot read the file")), "{log}");
    }
}

/// `EXIT_ROLE_FAILED`: a role thread ended while the daemon was running.
const EXIT_ROLE_FAILED: i32 = 71;

#[test]
fn a_role_thread_that_panics_makes_the_daemon_exit_71_naming_the_role() {
    // SBC_DEBUG_PANIC_ROLE (debug builds only) makes the named thread panic 300 ms after it
    // starts, as a bug would.
    let db = TestDb::create();
    let double = start_double(0);
    for role in ["heartbeat", "drachtio-reader", "ctl", "auth-worker-0", "regbot"] {
        let cluster = format!("panic-{:08x}", rand::random::<u32>());
        let mut env = base_env(double.admin_addr().port(), &db.name);
        env.insert("SBC_DEBUG_PANIC_ROLE".into(), role.into());
        env.insert("JAMBONES_CLUSTER_ID".into(), cluster.clone());
        env.insert("SBC_REGBOT_CLAIM_JITTER_MS".into(), "0".into());
        let mut daemon = Daemon::start(env, &[]);
        let status = daemon.wait_exit(WAIT);
        let log = daemon.log();
        assert_eq!(status.and_then(|s| s.code()), Some(EXIT_ROLE_FAILED), "{role}: exit status; log:\n{log}");
        assert!(log.contains(&format!("role {role} panicked: stopping")), "{role}: the log names it:\n{log}");
        assert!(log.contains("sbc-sidecar stopped"), "{role}: stopped in order:\n{log}");
        // the regbot role is never left held by a daemon that is gone
        let mut redis = sbc_test_tools::services::redis();
        let holder: Option<String> =
            redis::cmd("GET").arg(format!("{cluster}:regbot-token")).query(&mut redis).unwrap();
        assert_eq!(holder, None, "{role}: regbot-token left behind");
    }
}

#[test]
fn without_a_failing_role_the_daemon_keeps_running_and_sigterm_exits_0() {
    let db = TestDb::create();
    let double = start_double(0);
    let mut daemon = Daemon::start(base_env(double.admin_addr().port(), &db.name), &[]);
    assert!(double.wait_for_route("options", WAIT), "log:\n{}", daemon.log());
    std::thread::sleep(Duration::from_millis(800));
    assert!(daemon.is_running(), "log:\n{}", daemon.log());
    let status = daemon.stop(WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "log:\n{}", daemon.log());
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}
