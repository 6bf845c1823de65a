//! `make soak`: a bounded chaos run of the release daemon on real parts, with invariants.
//!
//! Parts: the release `sbc-sidecar` as a child process; the drachtio double; the registration
//! webhook (a real HTTP server); a private Redis (AOF, fsync always) and a private MariaDB, so
//! they can be killed without touching shared servers; phones over UDP and TCP (new devices,
//! cached refreshes, devices with a wrong password) and feature-server heartbeats, all counted
//! per transaction by `regload.rs`; a sipp carrier registrar for the regbot.
//!
//! Faults, one after the other (repeated when the run is long): SIGHUP; Redis killed and
//! restarted; SIGTERM and restart of the daemon (a deploy); MariaDB stopped and restarted; the
//! webhook down; the webhook hanging past its timeout; the drachtio double stopped and restarted.
//!
//! Invariants, printed at the end with one JSON line; the exit status is 1 when one fails:
//! * every request got exactly one final response (per kind: sent, answered, unanswered,
//!   conflicting; `aborted` = TCP connection broken by a drachtio restart, reported apart);
//! * no false success: every 200 to a REGISTER has its `user:<aor>` binding in Redis, living at
//!   least as long as the device was told (checked right after the 200, or as soon as Redis is
//!   back); no binding for a device that was only refused; no lost binding at the end;
//! * recovery: after each fault ends, a full registration (challenge, webhook, MySQL, Redis)
//!   succeeds again, the feature-server set is complete and the regbot is registered, each within
//!   [`RECOVERY_LIMIT`];
//! * the daemon never exits except by the planned SIGTERMs, and exits 0 then;
//! * open file descriptors and RSS of the daemon: first and last sample of each instance.
//!
//! Knobs: `SOAK_SECONDS` (default 300), `SOAK_RATE` (REGISTERs started per second, default 100),
//! `SOAK_DIR` (where logs go, default target/soak).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use mysql::prelude::Queryable;
use redis::Commands;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::regload::{Granted, Phone, RegLoad, Transport};
use sbc_test_tools::soak_servers::{self, PrivateMariadb, PrivateRedis};
use sbc_test_tools::webhook::WebhookServer;

/// Each recovery must happen within this after its fault ended.
const RECOVERY_LIMIT: Duration = Duration::from_secs(45);
/// A UDP transaction is unanswered after this (RFC 3261 timer F).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(32);
const UDP_SOURCES: [&str; 8] =
    ["127.0.0.81", "127.0.0.82", "127.0.0.83", "127.0.0.84", "127.0.0.85", "127.0.0.86", "127.0.0.87", "127.0.0.88"];
/// Devices with a wrong password register from here (their source gets banned: also a refusal).
const BAD_SOURCE: &str = "127.0.0.89";
const FS_SOURCES: [&str; 3] = ["127.0.0.91", "127.0.0.92", "127.0.0.93"];
const CARRIER_IP: &str = "127.0.0.172";
const PASSWORD: &str = "soak-password";
const EXPIRES: u32 = 600;

mod checks;
mod faults;
mod report;

use checks::*;
use faults::*;
use report::*;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sbc-soak: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let total = Duration::from_secs(env_num("SOAK_SECONDS", 300).max(30));
    let rate = env_num("SOAK_RATE", 100).max(1) as f64;
    let root = sbc_test_tools::repo_root();
    let dir = std::env::var("SOAK_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target/soak"));
    let dir = dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let binary = std::env::var("SBC_SOAK_DAEMON")
        .unwrap_or_else(|_| root.join("target/release/sbc-sidecar").display().to_string());
    let sbcctl = root.join("target/release/sbcctl");
    println!("sbc-soak: {} s, {rate} REGISTER/s, logs in {}", total.as_secs(), dir.display());

    let redis = PrivateRedis::start(&dir).map_err(|e| e.to_string())?;
    let mysql = PrivateMariadb::start(&dir).map_err(|e| e.to_string())?;
    let hook = WebhookServer::start_at("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
        .map_err(|e| format!("webhook: {e}"))?;
    let realm = format!("soak{:06x}.example.com", rand::random::<u32>() & 0xffffff);
    let cluster = format!("soak-{:06x}", rand::random::<u32>() & 0xffffff);
    let carrier = setup_database(&mysql, &hook, &realm)?;
    let mut carrier_sipp = start_carrier(total, &dir)?;
    let double_config = DoubleConfig {
        admin: SocketAddr::new([127, 0, 0, 1].into(), soak_servers::free_port().map_err(|e| e.to_string())?),
        ..DoubleConfig::default()
    };
    let first_double = Double::start(double_config.clone()).map_err(|e| format!("drachtio double: {e}"))?;
    let sip = first_double.sip_addr();
    let double_config = DoubleConfig { sip_port: sip.port(), ..double_config };
    let socket = dir.join("sbc.sock");
    let env: Vec<(String, String)> = [
        ("DRACHTIO_HOST", "127.0.0.1".to_string()),
        ("DRACHTIO_PORT", double_config.admin.port().to_string()),
        ("DRACHTIO_SECRET", "cymru".to_string()),
        ("JAMBONES_MYSQL_HOST", "127.0.0.1".to_string()),
        ("JAMBONES_MYSQL_PORT", mysql.port.to_string()),
        ("JAMBONES_MYSQL_USER", PrivateMariadb::USER.to_string()),
        ("JAMBONES_MYSQL_PASSWORD", PrivateMariadb::PASSWORD.to_string()),
        ("JAMBONES_MYSQL_DATABASE", PrivateMariadb::DATABASE.to_string()),
        ("JAMBONES_REDIS_HOST", "127.0.0.1".to_string()),
        ("JAMBONES_REDIS_PORT", redis.port.to_string()),
        ("JAMBONES_TIME_SERIES_HOST", "127.0.0.1".to_string()),
        ("JAMBONES_CLUSTER_ID", cluster.clone()),
        ("JAMBONES_NETWORK_CIDR", "127.0.0.0/8".to_string()),
        ("JAMBONES_LOGLEVEL", "info".to_string()),
        ("ENCRYPTION_SECRET", "soak-secret".to_string()),
        ("SBC_SOCKET_PATH", socket.display().to_string()),
        ("SBC_DRACHTIO_BACKOFF_MIN_MS", "100".to_string()),
        ("SBC_DRACHTIO_BACKOFF_MAX_MS", "1000".to_string()),
        ("SBC_LOG_LEVEL_FILE", dir.join("default-env").display().to_string()),
        ("SBC_REGBOT_STATUS_INTERVAL_MS", "5000".to_string()),
        ("SBC_REGBOT_TOKEN_TTL_S", "10".to_string()),
        ("SBC_REGBOT_CLAIM_JITTER_MS", "0".to_string()),
        ("JAMBONES_REGBOT_FAILURE_RETRY_INTERVAL", "5".to_string()),
        ("CHECK_EXPIRES_INTERVAL", "5000".to_string()),
        ("EXPIRES_INTERVAL", "20000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let _ = std::fs::write(dir.join("default-env"), "JAMBONES_LOGLEVEL=info\n");

    // Phones: regular UDP devices (and the wrong-password ones on their own source), TCP
    // devices, feature servers.
    let mut udp_sources: Vec<&str> = UDP_SOURCES.to_vec();
    udp_sources.push(BAD_SOURCE);
    let mut udp = RegLoad::new(&udp_sources, Transport::Udp, sip, &realm, EXPIRES, TRANSACTION_TIMEOUT)
        .map_err(|e| format!("UDP phones: {e}"))?;
    let mut tcp = RegLoad::new(&["127.0.0.1"; 10], Transport::Tcp, sip, &realm, EXPIRES, TRANSACTION_TIMEOUT)
        .map_err(|e| format!("TCP phones: {e}"))?;
    let mut fs = RegLoad::new(&FS_SOURCES, Transport::Udp, sip, &realm, EXPIRES, TRANSACTION_TIMEOUT)
        .map_err(|e| format!("feature servers: {e}"))?;
    let passwords = Arc::new(Mutex::new(Vec::new()));
    let mut names = Vec::new();
    let regular: Vec<usize> = (0..400)
        .map(|i| {
            names.push(format!("u{i}"));
            udp.add_phone(Phone::new(&format!("u{i}"), PASSWORD, i % UDP_SOURCES.len()))
        })
        .collect();
    let bad: Vec<usize> =
        (0..10).map(|i| udp.add_phone(Phone::new(&format!("bad{i}"), "wrong", UDP_SOURCES.len()))).collect();
    let tcp_phones: Vec<usize> = (0..100)
        .map(|i| {
            names.push(format!("t{i}"));
            tcp.add_phone(Phone::new(&format!("t{i}"), PASSWORD, i % 10))
        })
        .collect();
    // New devices keep coming, so full registrations go on through every fault.
    let fresh_total = (total.as_secs_f64() * rate / 10.0) as usize + 10;
    for i in 0..fresh_total {
        names.push(format!("n{i}"));
    }
    for n in &names {
        hook.set_password(n, PASSWORD);
    }
    if let Ok(mut p) = passwords.lock() {
        *p = names;
    }

    let (events_tx, events) = unbounded();
    let daemon_pid = Arc::new(AtomicU32::new(0));
    let mut rig = Rig {
        redis,
        mysql,
        webhook_addr: hook.addr(),
        webhook: Some(hook),
        passwords,
        double: Some(first_double),
        double_config,
        daemon: None,
        daemon_spec: DaemonSpec { binary, env, log: dir.join("daemon.log") },
        daemon_pid: daemon_pid.clone(),
        events: events_tx,
    };
    let redis_url = rig.redis.url();
    rig.start_daemon();
    let ready = {
        let start = Instant::now();
        let mut ok = false;
        while start.elapsed() < Duration::from_secs(15) && !ok {
            ok = rig.double.as_ref().is_some_and(|d| d.wait_for_route("register", Duration::from_millis(100)));
        }
        ok
    };
    if !ready {
        return Err(format!("the daemon did not connect to the double; log in {}", dir.display()));
    }
    let start = Instant::now();
    let plan = schedule(start, total);
    println!("fault schedule: {}", describe_plan(&plan, start));
    let stop = Arc::new(AtomicBool::new(false));
    let faults = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("soak-faults".into())
            .spawn(move || run_faults(rig, plan, stop))
            .map_err(|e| format!("fault thread: {e}"))?
    };

    let mut state = State {
        events,
        instances: Vec::new(),
        recoveries: Vec::new(),
        fault_log: Vec::new(),
        planned_exits: Vec::new(),
        unplanned_exits: Vec::new(),
        problems: Vec::new(),
        bindings: Bindings::default(),
        redis: None,
        redis_url,
        active_fs_key: format!("{cluster}:active-fs"),
        sbcctl,
        socket,
    };
    let mut started = 0u64;
    let mut fresh_next = 0usize;
    let mut rr = (0usize, 0usize, 0usize);
    let mut last_second = Instant::now();
    let mut last_regbot_check = Instant::now();
    while start.elapsed() < total {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while started < due {
            started += 1;
            let n = started;
            if n.is_multiple_of(50) {
                rr.2 += 1;
                udp.begin_register(bad[rr.2 % bad.len()]);
            } else if n % 10 == 1 && fresh_next < fresh_total {
                let p = udp.add_phone(Phone::new(&format!("n{fresh_next}"), PASSWORD, fresh_next % UDP_SOURCES.len()));
                fresh_next += 1;
                udp.begin_register(p);
            } else if n % 5 == 2 {
                rr.1 += 1;
                tcp.begin_register(tcp_phones[rr.1 % tcp_phones.len()]);
            } else {
                rr.0 += 1;
                udp.begin_register(regular[rr.0 % regular.len()]);
            }
        }
        let busy = udp.pump() | tcp.pump() | fs.pump();
        state.take_grants(&mut udp, &mut tcp);
        if last_second.elapsed() >= Duration::from_secs(1) {
            last_second = Instant::now();
            for link in 0..FS_SOURCES.len() {
                fs.begin_options(link);
            }
            state.events_and_checks(daemon_pid.load(Ordering::SeqCst));
            if last_regbot_check.elapsed() >= Duration::from_secs(2) {
                last_regbot_check = Instant::now();
                state.check_regbot();
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    println!("load ends; waiting for the last answers");
    let settle_until = Instant::now() + TRANSACTION_TIMEOUT + Duration::from_secs(2);
    while Instant::now() < settle_until && (udp.in_flight() + tcp.in_flight() + fs.in_flight()) > 0 {
        let busy = udp.pump() | tcp.pump() | fs.pump();
        state.take_grants(&mut udp, &mut tcp);
        if !busy {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Recoveries still open get a last chance (bounded by their limit).
    let recover_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < recover_until && state.recoveries.iter().any(|r| r.open()) {
        state.events_and_checks(daemon_pid.load(Ordering::SeqCst));
        state.check_regbot();
        std::thread::sleep(Duration::from_millis(500));
    }
    state.events_and_checks(daemon_pid.load(Ordering::SeqCst));
    let pid_at_end = daemon_pid.load(Ordering::SeqCst);
    state.sample_instances(pid_at_end, true);
    stop.store(true, Ordering::SeqCst);
    let Ok(rig) = faults.join() else {
        return Err("the fault thread panicked".into());
    };
    state.drain_events();
    state.bindings.check(&mut state.redis, &state.redis_url.clone());
    if state.redis.is_none() {
        state.redis = redis::Client::open(state.redis_url.as_str()).ok().and_then(|c| c.get_connection().ok());
    }

    // Final sweep of the bindings: every device still inside what it was told has one, and
    // no wrong-password device has one.
    let mut lost = Vec::new();
    let mut refused_bound = Vec::new();
    if let Some(conn) = state.redis.as_mut() {
        let now = Instant::now();
        for (aor, (at, told)) in &state.bindings.last {
            if now.duration_since(*at) + Duration::from_secs(1) < Duration::from_secs(*told) {
                match conn.exists::<_, bool>(format!("user:{aor}")) {
                    Ok(true) => {}
                    Ok(false) => lost.push(aor.clone()),
                    Err(e) => state.problems.push(format!("final sweep: EXISTS user:{aor}: {e}")),
                }
            }
        }
        for i in 0..bad.len() {
            match conn.exists::<_, bool>(format!("user:bad{i}@{realm}")) {
                Ok(false) => {}
                Ok(true) => refused_bound.push(format!("bad{i}@{realm}")),
                Err(e) => state.problems.push(format!("final sweep: EXISTS user:bad{i}: {e}")),
            }
        }
    } else {
        state.problems.push("Redis unreachable for the final sweep".into());
    }
    let regbot_status = rig.mysql.conn().and_then(|mut c| {
        c.exec_first::<Option<String>, _, _>(
            "SELECT register_status FROM voip_carriers WHERE voip_carrier_sid = ?",
            (&carrier,),
        )
        .ok()
        .flatten()
        .flatten()
    });
    let _ = carrier_sipp.kill();
    let _ = carrier_sipp.wait();
    drop(rig);

    let report = Report::build(&state, &udp, &tcp, &fs, lost, refused_bound, regbot_status, total, rate);
    print!("{}", report.text);
    println!("{}", report.json);
    println!("logs: {}", dir.display());
    Ok(report.ok)
}

fn describe_plan(plan: &[(Fault, Instant, Duration)], start: Instant) -> String {
    let mut s = String::new();
    for (f, at, len) in plan {
        let _ = write!(s, "{}@{}s+{}s ", f.name(), at.duration_since(start).as_secs(), len.as_secs());
    }
    s
}

/// An account with the webhook, a carrier with a gateway for the regbot.
fn setup_database(mysql: &PrivateMariadb, hook: &WebhookServer, realm: &str) -> Result<String, String> {
    let mut c = mysql.conn().ok_or("no connection to the private MariaDB")?;
    let uuid = || uuid::Uuid::new_v4().to_string();
    let hook_sid = uuid();
    c.exec_drop(
        "INSERT INTO webhooks (webhook_sid, url, method) VALUES (?, ?, 'POST')",
        (&hook_sid, hook.url("/auth")),
    )
    .map_err(|e| format!("webhook row: {e}"))?;
    c.exec_drop(
        "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, \
         is_active, webhook_secret) VALUES (?, 'soak', ?, ?, ?, 1, 'soak-webhook-secret')",
        (uuid(), realm, uuid(), &hook_sid),
    )
    .map_err(|e| format!("account row: {e}"))?;
    let carrier = uuid();
    c.exec_drop(
        "INSERT INTO voip_carriers (voip_carrier_sid, name, requires_register, register_username, \
         register_password, register_sip_realm, trunk_type, is_active) VALUES (?, 'soak carrier', 1, 'alice', 's3cret', \
         'sip.carrier.test', 'static_ip', 1)",
        (&carrier,),
    )
    .map_err(|e| format!("carrier row: {e}"))?;
    c.exec_drop(
        "INSERT INTO sip_gateways (sip_gateway_sid, ipv4, port, inbound, outbound, voip_carrier_sid, protocol) \
         VALUES (?, ?, ?, 1, 1, ?, 'udp')",
        (uuid(), CARRIER_IP, carrier_port(), &carrier),
    )
    .map_err(|e| format!("gateway row: {e}"))?;
    Ok(carrier)
}

/// The carrier registrar's port: fixed per run so the gateway row can name it before sipp runs.
fn carrier_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        std::net::UdpSocket::bind((CARRIER_IP, 0)).and_then(|s| s.local_addr()).map(|a| a.port()).unwrap_or(15060)
    })
}

/// sipp as the carrier's registrar (401, then 200 with Expires 60), for the whole run.
fn start_carrier(total: Duration, dir: &Path) -> Result<Child, String> {
    let scenario = sbc_test_tools::repo_root().join("tests/scenarios/regbot_challenge.xml");
    let media = 20_000 + 4 * (rand::random::<u16>() % 2_000);
    let timeout = format!("{}s", total.as_secs() + 180);
    Command::new("sipp")
        .arg("-sf")
        .arg(scenario)
        .args(["-i", CARRIER_IP, "-p", &carrier_port().to_string(), "-t", "u1", "-timeout", &timeout, "-nostdin"])
        .args(["-mp", &media.to_string()])
        .args(["-key", "user", "alice", "-key", "pass", "s3cret", "-key", "realm", "sip.carrier.test"])
        .args(["-key", "expires", "60"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("sipp (the carrier registrar): {e}"))
}
