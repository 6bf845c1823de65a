//! Operating the daemon: syslog output, SIGHUP log level, --daemon with a pidfile.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn syslog_lines_reach_the_socket_with_ident_and_pid() {
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).unwrap();
    let dir = sbc_test_tools::sipp::tempdir();
    let socket_path = dir.join("log.sock");
    let syslog = UnixDatagram::bind(&socket_path).unwrap();
    syslog.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("SBC_SYSLOG_SOCKET".into(), socket_path.display().to_string());
    env.insert("SBC_LOG_FACILITY".into(), "local3".into());
    env.insert("DRACHTIO_SECRET".into(), "cymru".into());
    let mut daemon = Daemon::start(env, &["--log", "syslog"]);
    let pid = daemon.pid();
    let mut lines = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 8192];
    while start.elapsed() < WAIT && !lines.iter().any(|l: &String| l.contains("connected to drachtio")) {
        if let Ok(n) = syslog.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let connected = lines.iter().find(|l| l.contains("connected to drachtio")).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(connected.contains(&format!("sbc-sidecar[{pid}]")), "{connected}");
    // local3 (19) * 8 + info (6) = 158
    assert!(connected.starts_with("<158>"), "{connected}");
    assert!(lines.iter().all(|l| !l.contains("cymru")), "the secret never reaches syslog");
    assert_eq!(daemon.stop(Duration::from_secs(5)).and_then(|s| s.code()), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sighup_rereads_the_log_level_from_the_environment_file() {
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).unwrap();
    let dir = sbc_test_tools::sipp::tempdir();
    let level_file = dir.join("sbc-sidecar.default");
    std::fs::write(&level_file, "JAMBONES_LOGLEVEL=info\n").unwrap();
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("JAMBONES_LOGLEVEL".into(), "info".into());
    env.insert("SBC_LOG_LEVEL_FILE".into(), level_file.display().to_string());
    let mut daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("options", WAIT), "{}", daemon.log());
    assert!(!daemon.log().contains(" DEBUG "), "no debug lines at level info");
    std::fs::write(&level_file, "# edited by the operator\nJAMBONES_LOGLEVEL=debug\n").unwrap();
    daemon.signal("HUP");
    assert!(daemon.wait_for_log("SIGHUP: log level now DEBUG", WAIT), "{}", daemon.log());
    // a plain OPTIONS is now logged at debug somewhere along the way, and the daemon still runs
    assert!(daemon.is_running());
    std::fs::write(&level_file, "JAMBONES_LOGLEVEL=nonsense\n").unwrap();
    daemon.signal("HUP");
    assert!(daemon.wait_for_log("SIGHUP: log level unchanged", WAIT), "{}", daemon.log());
    assert_eq!(daemon.stop(Duration::from_secs(5)).and_then(|s| s.code()), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn daemon_mode_writes_the_pidfile_and_stops_on_sigterm() {
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).unwrap();
    let dir = sbc_test_tools::sipp::tempdir();
    let pidfile = dir.join("sbc.pid");
    let env = base_env(double.admin_addr().port(), &db.name);
    let pidfile_arg = pidfile.display().to_string();
    let mut parent = Daemon::start(env, &["--daemon", "--pidfile", &pidfile_arg]);
    assert_eq!(parent.wait_exit(WAIT).and_then(|s| s.code()), Some(0), "the launching process returns at once");
    assert!(double.wait_for_route("options", WAIT), "the detached daemon connects to drachtio");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let start = Instant::now();
    while start.elapsed() < WAIT && std::path::Path::new(&format!("/proc/{pid}/status")).exists() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.contains("State:\tZ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(status.is_empty() || status.contains("State:\tZ"), "stopped on SIGTERM: {status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn systemd_is_told_ready_watchdog_and_stopping() {
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).unwrap();
    let dir = sbc_test_tools::sipp::tempdir();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("NOTIFY_SOCKET".into(), notify_path.display().to_string());
    env.insert("WATCHDOG_USEC".into(), "300000".into());
    let mut daemon = Daemon::start(env, &[]);
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 512];
    let start = Instant::now();
    while start.elapsed() < WAIT
        && !(seen.iter().any(|m| m == "READY=1") && seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2)
    {
        if let Ok(n) = notify.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
    }
    assert!(seen.iter().any(|m| m == "READY=1"), "READY=1 once drachtio accepted us: {seen:?}");
    assert!(double.app_connections() == 1, "READY only after the drachtio connection");
    assert!(seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2, "watchdog petted at half the interval: {seen:?}");
    daemon.signal("TERM");
    let start = Instant::now();
    while start.elapsed() < WAIT && !seen.iter().any(|m| m == "STOPPING=1") {
        if let Ok(n) = notify.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
    }
    assert!(seen.iter().any(|m| m == "STOPPING=1"), "{seen:?}");
    assert_eq!(daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
