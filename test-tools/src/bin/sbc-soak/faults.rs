//! The faults of the soak and the rig they act on: the daemon child (SIGHUP, SIGTERM and
//! restart), the private Redis and MariaDB, the webhook (down, hanging) and the drachtio double;
//! when each fault happens, and the events the fault thread reports.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Sighup,
    Redis,
    Sigterm,
    Mysql,
    WebhookDown,
    WebhookHang,
    Drachtio,
}

pub const FAULTS: [Fault; 7] = [
    Fault::Sighup,
    Fault::Redis,
    Fault::Sigterm,
    Fault::Mysql,
    Fault::WebhookDown,
    Fault::WebhookHang,
    Fault::Drachtio,
];

impl Fault {
    pub fn name(self) -> &'static str {
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

pub enum Event {
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

/// Everything the daemon child needs.
pub struct DaemonSpec {
    pub binary: String,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

impl DaemonSpec {
    pub fn spawn(&self) -> Result<Child, String> {
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

pub fn signal(pid: u32, sig: &str) {
    if pid > 0 {
        let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
    }
}

/// What the fault thread owns: the servers it stops and starts, and the daemon.
pub struct Rig {
    pub redis: PrivateRedis,
    pub mysql: PrivateMariadb,
    pub webhook: Option<WebhookServer>,
    pub webhook_addr: SocketAddr,
    pub passwords: Arc<Mutex<Vec<String>>>,
    pub double: Option<Double>,
    pub double_config: DoubleConfig,
    pub daemon: Option<Child>,
    pub daemon_spec: DaemonSpec,
    pub daemon_pid: Arc<AtomicU32>,
    pub events: Sender<Event>,
}

impl Rig {
    pub fn start_daemon(&mut self) {
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
    pub fn watch_daemon(&mut self) {
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
    pub fn wait(&mut self, until: Instant, stop: &AtomicBool) {
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            self.watch_daemon();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait for the exit (bounded), report it.
    pub fn stop_daemon(&mut self) {
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

    pub fn start_webhook(&mut self) {
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

    pub fn start_double(&mut self) {
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

    pub fn begin(&mut self, fault: Fault) {
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

    pub fn end(&mut self, fault: Fault) {
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
pub fn schedule(start: Instant, total: Duration) -> Vec<(Fault, Instant, Duration)> {
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
pub fn run_faults(mut rig: Rig, plan: Vec<(Fault, Instant, Duration)>, stop: Arc<AtomicBool>) -> Rig {
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
