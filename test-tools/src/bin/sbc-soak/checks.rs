//! What the soak watches while it runs: the daemon's RSS and file descriptors per instance, the
//! recoveries after each fault, the 200s checked against their Redis bindings, and the events of
//! the fault thread.

use super::*;

/// VmRSS (KiB) and open file descriptors of a process.
pub fn sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Instance {
    pub pid: u32,
    pub rss_kib_start: u64,
    pub rss_kib_end: u64,
    pub fds_start: u64,
    pub fds_end: u64,
    #[serde(skip)]
    pub started: Option<Instant>,
    #[serde(skip)]
    pub sampled_start: bool,
}

/// One fault's end and when each kind of recovery was seen after it.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub fault: Fault,
    pub ended: Instant,
    pub registration: Option<Duration>,
    pub heartbeats: Option<Duration>,
    pub regbot: Option<Duration>,
}

/// The checks of the 200s against Redis.
#[derive(Debug, Default)]
pub struct Bindings {
    pub pending: Vec<Granted>,
    pub checked: u64,
    pub false_success: Vec<String>,
    /// Latest 200 per address of record: when, and for how long the device was told.
    pub last: HashMap<String, (Instant, u64)>,
}

impl Bindings {
    /// Checks what is pending; keeps it for later when Redis does not answer.
    pub fn check(&mut self, redis: &mut Option<redis::Connection>, url: &str) {
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

pub struct State {
    pub events: Receiver<Event>,
    pub instances: Vec<Instance>,
    pub recoveries: Vec<Recovery>,
    pub fault_log: Vec<(Fault, Duration)>,
    pub planned_exits: Vec<(Option<i32>, Duration)>,
    pub unplanned_exits: Vec<Option<i32>>,
    pub problems: Vec<String>,
    pub bindings: Bindings,
    pub redis: Option<redis::Connection>,
    pub redis_url: String,
    pub active_fs_key: String,
    pub sbcctl: PathBuf,
    pub socket: PathBuf,
}

impl Recovery {
    pub fn open(&self) -> bool {
        self.registration.is_none() || self.heartbeats.is_none() || self.regbot.is_none()
    }
}

impl State {
    pub fn take_grants(&mut self, udp: &mut RegLoad, tcp: &mut RegLoad) {
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

    pub fn drain_events(&mut self) {
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

    pub fn sample_instances(&mut self, pid: u32, end: bool) {
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
    pub fn events_and_checks(&mut self, pid: u32) {
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
    pub fn check_regbot(&mut self) {
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
