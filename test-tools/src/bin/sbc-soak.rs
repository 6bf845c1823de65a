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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Sighup,
    Redis,
    Sigterm,
    Mysql,
    WebhookDown,
    WebhookHang,
    Drachtio,
}

const FAULTS: [Fault; 7] = [
    Fault::Sighup,
    Fault::Redis,
    Fault::Sigterm,
    Fault::Mysql,
    Fault::WebhookDown,
    Fault::WebhookHang,
    Fault::Drachtio,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Sighup => "sighup",
            Fault::Redis => "redis-kill",
            Fault::Sigterm => "sigterm-restart",
            Fault::Mysql => "mysql-stop",
            Fault::WebhookDown => "webhook-down",
            Fault::WebhookHang => "webhook-hang",
            Fault::Drachtio => "drachtio-restart",
        }
    }
}

enum Event {
    Started(Fault, Instant),
    Ended(Fault, Instant),
    DaemonStarted(u32),
    /// A planned stop: exit status and how long the drain took.
    PlannedExit {
        code: Option<i32>,
        drain: Duration,
    },
    UnplannedExit {
        code: Option<i32>,
    },
    Problem(String),
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Everything the daemon child needs.
struct DaemonSpec {
    binary: String,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl DaemonSpec {
    fn spawn(&self) -> Result<Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["--log", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e} (run `cargo build --release --bins`)", self.binary))
    }
}

fn signal(pid: u32, sig: &str) {
    if pid > 0 {
        let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
    }
}

/// What the fault thread owns: the servers it stops and starts, and the daemon.
struct Rig {
    redis: PrivateRedis,
    mysql: PrivateMariadb,
    webhook: Option<WebhookServer>,
    webhook_addr: SocketAddr,
    passwords: Arc<Mutex<Vec<String>>>,
    double: Option<Double>,
    double_config: DoubleConfig,
    daemon: Option<Child>,
    daemon_spec: DaemonSpec,
    daemon_pid: Arc<AtomicU32>,
    events: Sender<Event>,
}

impl Rig {
    fn start_daemon(&mut self) {
        match self.daemon_spec.spawn() {
            Ok(child) => {
                self.daemon_pid.store(child.id(), Ordering::SeqCst);
                let _ = self.events.send(Event::DaemonStarted(child.id()));
                self.daemon = Some(child);
            }
            Err(e) => {
                let _ = self.events.send(Event::Problem(e));
            }
        }
    }

    /// Reports (and replaces) a daemon that exited by itself.
    fn watch_daemon(&mut self) {
        let exited = match self.daemon.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.code()),
            _ => None,
        };
        if let Some(code) = exited {
            let _ = self.events.send(Event::UnplannedExit { code });
            self.daemon = None;
            self.start_daemon();
        }
    }

    /// Sleeps until `until`, watching the daemon.
    fn wait(&mut self, until: Instant, stop: &AtomicBool) {
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            self.watch_daemon();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait for the exit (bounded), report it.
    fn stop_daemon(&mut self) {
        let Some(mut child) = self.daemon.take() else { return };
        let sent = Instant::now();
        signal(child.id(), "TERM");
        let mut code = None;
        while sent.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = child.try_wait() {
                code = Some(status.code());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let drain = sent.elapsed();
        match code {
            Some(code) => {
                let _ = self.events.send(Event::PlannedExit { code, drain });
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = self.events.send(Event::PlannedExit { code: None, drain });
            }
        }
    }

    fn start_webhook(&mut self) {
        // The port was ours a moment ago; it may take a moment to be free again.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match WebhookServer::start_at(self.webhook_addr) {
                Ok(hook) => {
                    if let Ok(names) = self.passwords.lock() {
                        for name in names.iter() {
                            hook.set_password(name, PASSWORD);
                        }
                    }
                    self.webhook = Some(hook);
                    return;
                }
                Err(e) if Instant::now() >= until => {
                    let _ = self.events.send(Event::Problem(format!("webhook restart: {e}")));
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn start_double(&mut self) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match Double::start(self.double_config.clone()) {
                Ok(d) => {
                    self.double = Some(d);
                    return;
                }
                Err(e) if Instant::now() >= until => {
                    let _ = self.events.send(Event::Problem(format!("drachtio double restart: {e}")));
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn begin(&mut self, fault: Fault) {
        match fault {
            Fault::Sighup => {
                if let Some(c) = &self.daemon {
                    signal(c.id(), "HUP");
                }
            }
            Fault::Redis => self.redis.kill(),
            Fault::Sigterm => self.stop_daemon(),
            Fault::Mysql => self.mysql.stop(),
            Fault::WebhookDown => self.webhook = None,
            Fault::WebhookHang => {
                if let Some(h) = &self.webhook {
                    h.delay(Duration::from_secs(8));
                }
            }
            Fault::Drachtio => self.double = None,
        }
    }

    fn end(&mut self, fault: Fault) {
        match fault {
            Fault::Sighup => {}
            Fault::Redis => {
                if let Err(e) = self.redis.restart() {
                    let _ = self.events.send(Event::Problem(format!("redis restart: {e}")));
                }
            }
            Fault::Sigterm => self.start_daemon(),
            Fault::Mysql => {
                if let Err(e) = self.mysql.restart() {
                    let _ = self.events.send(Event::Problem(format!("mariadb restart: {e}")));
                }
            }
            Fault::WebhookDown => self.start_webhook(),
            Fault::WebhookHang => {
                if let Some(h) = &self.webhook {
                    h.delay(Duration::ZERO);
                }
            }
            Fault::Drachtio => self.start_double(),
        }
    }
}

/// When each fault starts and how long it lasts.
fn schedule(start: Instant, total: Duration) -> Vec<(Fault, Instant, Duration)> {
    let warmup = Duration::from_secs(8).max(total / 20);
    let tail = Duration::from_secs(20).max(total / 10);
    let window = total.saturating_sub(warmup + tail);
    // Short runs fit every fault once; long ones repeat them with 30 s slots.
    let slot = (window / FAULTS.len() as u32).min(Duration::from_secs(30)).max(Duration::from_secs(3));
    let length = (slot / 3).clamp(Duration::from_secs(2), Duration::from_secs(10));
    let mut plan = Vec::new();
    let mut at = warmup;
    let mut i = 0;
    while at + slot <= warmup + window || i < FAULTS.len() {
        let fault = FAULTS[i % FAULTS.len()];
        let length = if fault == Fault::Sighup { Duration::ZERO } else { length };
        plan.push((fault, start + at, length));
        at += slot;
        i += 1;
        if i >= FAULTS.len() && at + slot > warmup + window {
            break;
        }
    }
    plan
}

/// Runs the plan, then watches the daemon until told to stop; stops it and hands the rig back
/// (Redis and MariaDB still up for the final checks).
fn run_faults(mut rig: Rig, plan: Vec<(Fault, Instant, Duration)>, stop: Arc<AtomicBool>) -> Rig {
    for (fault, at, length) in plan {
        rig.wait(at, &stop);
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let started = Instant::now();
        let _ = rig.events.send(Event::Started(fault, started));
        rig.begin(fault);
        rig.wait(started + length, &stop);
        rig.end(fault);
        let _ = rig.events.send(Event::Ended(fault, Instant::now()));
    }
    while !stop.load(Ordering::SeqCst) {
        rig.watch_daemon();
        std::thread::sleep(Duration::from_millis(50));
    }
    // The planned end of the run.
    rig.stop_daemon();
    rig
}

/// VmRSS (KiB) and open file descriptors of a process.
fn sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Instance {
    pid: u32,
    rss_kib_start: u64,
    rss_kib_end: u64,
    fds_start: u64,
    fds_end: u64,
    #[serde(skip)]
    started: Option<Instant>,
    #[serde(skip)]
    sampled_start: bool,
}

/// One fault's end and when each kind of recovery was seen after it.
#[derive(Debug, Clone)]
struct Recovery {
    fault: Fault,
    ended: Instant,
    registration: Option<Duration>,
    heartbeats: Option<Duration>,
    regbot: Option<Duration>,
}

/// The checks of the 200s against Redis.
#[derive(Debug, Default)]
struct Bindings {
    pending: Vec<Granted>,
    checked: u64,
    false_success: Vec<String>,
    /// Latest 200 per address of record: when, and for how long the device was told.
    last: HashMap<String, (Instant, u64)>,
}

impl Bindings {
    /// Checks what is pending; keeps it for later when Redis does not answer.
    fn check(&mut self, redis: &mut Option<redis::Connection>, url: &str) {
        if self.pending.is_empty() {
            return;
        }
        if redis.is_none() {
            *redis = redis::Client::open(url)
                .ok()
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)).ok());
        }
        let Some(conn) = redis.as_mut() else { return };
        let mut pipe = redis::pipe();
        for g in &self.pending {
            pipe.cmd("PTTL").arg(format!("user:{}", g.aor));
        }
        let ttls: Vec<i64> = match pipe.query(conn) {
            Ok(t) => t,
            Err(_) => {
                *redis = None;
                return;
            }
        };
        let now = Instant::now();
        for (g, ttl_ms) in std::mem::take(&mut self.pending).into_iter().zip(ttls) {
            self.checked += 1;
            if g.aor.starts_with("bad") {
                self.false_success.push(format!("{}: 200 to a device with a wrong password", g.aor));
                continue;
            }
            // The binding must outlive what the device was told (1 s for clocks and rounding).
            let told_left_ms = (g.expires as i64 * 1000).saturating_sub(now.duration_since(g.at).as_millis() as i64);
            if ttl_ms < 0 || ttl_ms + 1000 < told_left_ms {
                self.false_success.push(format!(
                    "{}: told {} s {} ms ago, binding TTL {} ms",
                    g.aor,
                    g.expires,
                    now.duration_since(g.at).as_millis(),
                    ttl_ms
                ));
            }
        }
    }
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

struct State {
    events: Receiver<Event>,
    instances: Vec<Instance>,
    recoveries: Vec<Recovery>,
    fault_log: Vec<(Fault, Duration)>,
    planned_exits: Vec<(Option<i32>, Duration)>,
    unplanned_exits: Vec<Option<i32>>,
    problems: Vec<String>,
    bindings: Bindings,
    redis: Option<redis::Connection>,
    redis_url: String,
    active_fs_key: String,
    sbcctl: PathBuf,
    socket: PathBuf,
}

impl Recovery {
    fn open(&self) -> bool {
        self.registration.is_none() || self.heartbeats.is_none() || self.regbot.is_none()
    }
}

impl State {
    fn take_grants(&mut self, udp: &mut RegLoad, tcp: &mut RegLoad) {
        for g in udp.take_granted().into_iter().chain(tcp.take_granted()) {
            if g.kind == "register-auth" {
                for r in self.recoveries.iter_mut().filter(|r| r.registration.is_none() && g.at > r.ended) {
                    r.registration = Some(g.at.duration_since(r.ended));
                }
            }
            self.bindings.last.insert(g.aor.clone(), (g.at, g.expires));
            self.bindings.pending.push(g);
        }
    }

    fn drain_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                Event::Started(f, at) => {
                    println!("  fault {} begins", f.name());
                    self.fault_log.push((f, at.elapsed()));
                }
                Event::Ended(f, at) => {
                    println!("  fault {} ends", f.name());
                    self.recoveries.push(Recovery {
                        fault: f,
                        ended: at,
                        registration: None,
                        heartbeats: None,
                        regbot: None,
                    });
                }
                Event::DaemonStarted(pid) => {
                    self.instances.push(Instance { pid, started: Some(Instant::now()), ..Instance::default() })
                }
                Event::PlannedExit { code, drain } => {
                    println!("  daemon stopped by SIGTERM: exit {code:?} after {} ms", drain.as_millis());
                    self.planned_exits.push((code, drain));
                }
                Event::UnplannedExit { code } => {
                    println!("  daemon EXITED BY ITSELF: {code:?}");
                    self.unplanned_exits.push(code);
                }
                Event::Problem(p) => {
                    println!("  problem: {p}");
                    self.problems.push(p);
                }
            }
        }
    }

    fn sample_instances(&mut self, pid: u32, end: bool) {
        let Some(inst) = self.instances.iter_mut().rev().find(|i| i.pid == pid) else { return };
        let Some((rss, fds)) = sample(pid) else { return };
        // The first sample once the instance has warmed up (connected, pools filled).
        let warm = inst.started.is_some_and(|s| s.elapsed() >= Duration::from_secs(5));
        if !inst.sampled_start && warm {
            inst.sampled_start = true;
            inst.rss_kib_start = rss;
            inst.fds_start = fds;
        }
        if inst.sampled_start || end {
            inst.rss_kib_end = rss;
            inst.fds_end = fds;
        }
    }

    /// Once a second: fault events, the daemon's memory and descriptors, the bindings, the
    /// feature-server set.
    fn events_and_checks(&mut self, pid: u32) {
        self.drain_events();
        self.sample_instances(pid, false);
        let url = self.redis_url.clone();
        self.bindings.check(&mut self.redis, &url);
        if self.recoveries.iter().any(|r| r.heartbeats.is_none()) {
            let complete = self.redis.as_mut().is_some_and(|c| {
                let members: Vec<String> = c.smembers(&self.active_fs_key).unwrap_or_default();
                FS_SOURCES.iter().all(|ip| members.iter().any(|m| m.starts_with(&format!("{ip}:")) || m == ip))
            });
            if complete {
                let now = Instant::now();
                for r in self.recoveries.iter_mut().filter(|r| r.heartbeats.is_none()) {
                    r.heartbeats = Some(now.duration_since(r.ended));
                }
            }
        }
    }

    /// `sbcctl --json status`: the regbot is registered.
    fn check_regbot(&mut self) {
        if !self.recoveries.iter().any(|r| r.regbot.is_none()) {
            return;
        }
        let out = Command::new(&self.sbcctl).arg("--socket").arg(&self.socket).args(["--json", "status"]).output();
        let registered = out
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["regbot"]["registered"].as_u64())
            .unwrap_or(0);
        if registered >= 1 {
            let now = Instant::now();
            for r in self.recoveries.iter_mut().filter(|r| r.regbot.is_none()) {
                r.regbot = Some(now.duration_since(r.ended));
            }
        }
    }
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

struct Report {
    text: String,
    json: serde_json::Value,
    ok: bool,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn build(
        state: &State,
        udp: &RegLoad,
        tcp: &RegLoad,
        fs: &RegLoad,
        lost: Vec<String>,
        refused_bound: Vec<String>,
        regbot_status: Option<String>,
        total: Duration,
        rate: f64,
    ) -> Report {
        let mut text = String::new();
        let mut failures: Vec<String> = Vec::new();
        let mut kinds = BTreeMap::new();
        for (transport, load) in [("udp", udp), ("tcp", tcp), ("fs", fs)] {
            for (kind, t) in &load.tally {
                kinds.insert(format!("{transport}/{kind}"), t.clone());
            }
        }
        let _ = writeln!(text, "\n== sbc-soak: {} s at {rate} REGISTER/s ==", total.as_secs());
        let _ = writeln!(
            text,
            "{:<24} {:>8} {:>8} {:>10} {:>11} {:>8}  statuses",
            "requests", "sent", "answered", "unanswered", "conflicting", "aborted"
        );
        for (kind, t) in &kinds {
            let _ = writeln!(
                text,
                "{:<24} {:>8} {:>8} {:>10} {:>11} {:>8}  {:?}",
                kind, t.sent, t.answered, t.unanswered, t.conflicting, t.aborted, t.statuses
            );
            if t.unanswered > 0 {
                failures.push(format!("{kind}: {} requests without a final response", t.unanswered));
            }
            if t.conflicting > 0 {
                failures.push(format!("{kind}: {} requests with two different final responses", t.conflicting));
            }
            if t.sent != t.answered + t.unanswered + t.aborted {
                failures.push(format!(
                    "{kind}: sent {} but accounted for {}",
                    t.sent,
                    t.answered + t.unanswered + t.aborted
                ));
            }
        }
        let b = &state.bindings;
        let _ = writeln!(
            text,
            "200s to REGISTER checked against Redis: {}; false 200s: {}; lost bindings at the end: {}; refused devices with a binding: {}",
            b.checked,
            b.false_success.len(),
            lost.len(),
            refused_bound.len()
        );
        for f in b.false_success.iter().take(10) {
            let _ = writeln!(text, "  false 200: {f}");
        }
        if !b.false_success.is_empty() {
            failures.push(format!("{} false 200s", b.false_success.len()));
        }
        if !b.pending.is_empty() {
            failures.push(format!("{} 200s could not be checked (Redis unreachable)", b.pending.len()));
        }
        if !lost.is_empty() {
            failures.push(format!("{} lost bindings: {:?}", lost.len(), lost.iter().take(5).collect::<Vec<_>>()));
        }
        if !refused_bound.is_empty() {
            failures.push(format!("bindings of refused devices: {refused_bound:?}"));
        }
        let _ =
            writeln!(text, "recovery after each fault (full registration / feature-server set / regbot registered):");
        let mut longest: BTreeMap<&str, (u128, u128, u128)> = BTreeMap::new();
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis().to_string()).unwrap_or_else(|| "never".into());
        for r in &state.recoveries {
            let _ = writeln!(
                text,
                "  {:<18} {:>8} ms {:>8} ms {:>8} ms",
                r.fault.name(),
                ms(r.registration),
                ms(r.heartbeats),
                ms(r.regbot)
            );
            for (what, d) in [("registration", r.registration), ("heartbeats", r.heartbeats), ("regbot", r.regbot)] {
                match d {
                    Some(d) if d <= RECOVERY_LIMIT => {}
                    Some(d) => failures.push(format!(
                        "{}: {what} recovered after {} ms (limit {} s)",
                        r.fault.name(),
                        d.as_millis(),
                        RECOVERY_LIMIT.as_secs()
                    )),
                    None => failures.push(format!("{}: {what} did not recover", r.fault.name())),
                }
            }
            let e = longest.entry(r.fault.name()).or_default();
            let v = |d: Option<Duration>| d.map_or(u128::MAX, |d| d.as_millis());
            e.0 = e.0.max(v(r.registration));
            e.1 = e.1.max(v(r.heartbeats));
            e.2 = e.2.max(v(r.regbot));
        }
        if state.recoveries.is_empty() {
            failures.push("no fault ran".into());
        }
        for (code, drain) in &state.planned_exits {
            let _ = writeln!(text, "planned SIGTERM: exit {code:?}, drained in {} ms", drain.as_millis());
            if *code != Some(0) {
                failures.push(format!("planned SIGTERM ended with {code:?}, not exit 0"));
            }
        }
        for code in &state.unplanned_exits {
            failures.push(format!("the daemon exited by itself: {code:?}"));
        }
        for p in &state.problems {
            failures.push(format!("rig: {p}"));
        }
        let _ = writeln!(text, "daemon instances (VmRSS KiB and open fds, first sample after 5 s and last):");
        for i in &state.instances {
            let _ = writeln!(
                text,
                "  pid {:>7}: RSS {} → {} KiB, fds {} → {}",
                i.pid, i.rss_kib_start, i.rss_kib_end, i.fds_start, i.fds_end
            );
            // Flat: descriptors back to where they were (a few pooled connections may differ),
            // memory not more than doubled from the warm sample.
            if i.sampled_start && i.fds_end > i.fds_start + 16 {
                failures.push(format!("pid {}: open fds grew from {} to {}", i.pid, i.fds_start, i.fds_end));
            }
            if i.sampled_start && i.rss_kib_end > 2 * i.rss_kib_start + 16 * 1024 {
                failures.push(format!("pid {}: RSS grew from {} to {} KiB", i.pid, i.rss_kib_start, i.rss_kib_end));
            }
        }
        let _ = writeln!(text, "regbot register_status at the end: {}", regbot_status.as_deref().unwrap_or("none"));
        let ok = failures.is_empty();
        if ok {
            let _ = writeln!(text, "ALL INVARIANTS HOLD");
        } else {
            let _ = writeln!(text, "INVARIANTS FAILED:");
            for f in &failures {
                let _ = writeln!(text, "  - {f}");
            }
        }
        let show = |v: u128| if v == u128::MAX { serde_json::Value::Null } else { serde_json::Value::from(v as u64) };
        let json = serde_json::json!({
            "soak_seconds": total.as_secs(),
            "rate": rate,
            "ok": ok,
            "requests": kinds,
            "register_200s_checked": b.checked,
            "false_200s": b.false_success.len(),
            "lost_bindings": lost.len(),
            "refused_with_binding": refused_bound.len(),
            "longest_recovery_ms": longest.iter().map(|(k, (a, h, r))| (k.to_string(), serde_json::json!({
                "registration": show(*a), "heartbeats": show(*h), "regbot": show(*r)
            }))).collect::<serde_json::Map<_, _>>(),
            "planned_exits": state.planned_exits.iter().map(|(c, d)| serde_json::json!({"code": c, "drain_ms": d.as_millis() as u64})).collect::<Vec<_>>(),
            "unplanned_exits": state.unplanned_exits.len(),
            "instances": state.instances,
            "failures": failures,
        });
        Report { text, json, ok }
    }
}
