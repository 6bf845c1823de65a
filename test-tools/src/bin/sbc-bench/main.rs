//! `make bench`: REGISTER load against the real daemon, through the drachtio double.
//!
//! Runs the release `sbc-sidecar` as a child process with a local webhook, MariaDB and Redis,
//! drives it with the UDP generator of `loadgen.rs` from several 127.0.0.x sources, and reads
//! the daemon's CPU time and memory from /proc. Prints a table and one JSON line.
//!
//! First fixed-rate steps — full registrations (REGISTER → 401 → REGISTER → webhook → 200) and
//! then cached refreshes offered at constant rates, where every thread hand-off costs a sleep
//! and a wake-up — then the saturation phases (a window of transactions in flight).
//!
//! Customers' webhooks answer in 50–500 ms, so the full-registration steps run once per
//! webhook latency (the bench's webhook sleeps that long before answering): throughput must
//! not depend on it. The daemon's thread count and memory are sampled during every step.
//!
//! Knobs (environment): `SBC_BENCH_RATES` (registrations/s of the fixed-rate steps, default
//! `100,400,1600`; empty skips them), `SBC_BENCH_HOOK_DELAY_MS` (webhook latencies of the
//! full-registration steps, default `0,100,500`), `SBC_BENCH_STEP_SECONDS` (length of each
//! step, default 10), `SBC_BENCH_SKIP_REGBOT=1` (leave out the regbot phase at the end), `SBC_BENCH_USERS` (saturation users, default 20000), `SBC_BENCH_WINDOW` (transactions
//! in flight at saturation, default 200), `SBC_BENCH_SECONDS` (upper bound per phase, default
//! 120).

mod regbot;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mysql::prelude::Queryable;
use redis::Commands;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::loadgen::{LoadGen, LoadResult, Pace, User};
use sbc_test_tools::{db, webhook};

const SOURCES: [&str; 8] = [
    "127.0.0.101",
    "127.0.0.102",
    "127.0.0.103",
    "127.0.0.104",
    "127.0.0.105",
    "127.0.0.106",
    "127.0.0.107",
    "127.0.0.108",
];

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time (user + system) of a process, from /proc/<pid>/stat, in microseconds.
fn cpu_micros(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `comm` in parentheses; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    ticks * 10_000
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The daemon's thread count (`Threads:` of /proc/<pid>/status).
fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// The most threads and the most resident memory the daemon had while `f` ran (sampled every
/// 50 ms).
fn sampled<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64, u64) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut max_threads, mut max_rss) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                max_threads = max_threads.max(threads(pid));
                max_rss = max_rss.max(memory_kib(pid).0);
                std::thread::sleep(Duration::from_millis(50));
            }
            (max_threads, max_rss)
        })
    };
    let result = f();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (max_threads, max_rss) = sampler.join().unwrap_or((0, 0));
    (result, max_threads, max_rss)
}

struct Phase {
    name: String,
    result: LoadResult,
    cpu_us: u64,
    /// What the CPU is divided by: REGISTER requests (cached) or registrations (full auth).
    per: u64,
    /// The most threads and resident KiB the daemon had during the phase.
    max_threads: u64,
    max_rss_kib: u64,
}

impl Phase {
    fn cpu_per(&self) -> f64 {
        self.cpu_us as f64 / self.per.max(1) as f64
    }

    fn print(&self) {
        let r = &self.result;
        println!(
            "{:<30} {:>7} ok {:>5} failed {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  cpu {:>7.1} µs/{:<12}  threads ≤{:>4}  RSS ≤{:>6.1} MB",
            self.name,
            r.ok,
            r.failed,
            r.per_second(),
            r.percentile(0.50).as_secs_f64() * 1e3,
            r.percentile(0.99).as_secs_f64() * 1e3,
            self.cpu_per(),
            if self.name.starts_with("cached") { "REGISTER" } else { "registration" },
            self.max_threads,
            self.max_rss_kib as f64 / 1024.0,
        );
        if r.failed > 0 {
            println!("{:<24} statuses: {:?}", "", r.statuses);
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.result.ok,
            "failed": self.result.failed,
            "per_second": (self.result.per_second() * 10.0).round() / 10.0,
            "p50_ms": self.result.percentile(0.50).as_secs_f64() * 1e3,
            "p99_ms": self.result.percentile(0.99).as_secs_f64() * 1e3,
            "cpu_us_per": (self.cpu_per() * 10.0).round() / 10.0,
            "max_threads": self.max_threads,
            "max_rss_kib": self.max_rss_kib,
        })
    }
}

fn run_phase(name: impl Into<String>, gen: &LoadGen, users: &[User], pid: u32, pace: Pace, limit: Duration) -> Phase {
    let name = name.into();
    let before = cpu_micros(pid);
    let (result, max_threads, max_rss_kib) = sampled(pid, || gen.run(users, pace, Duration::from_secs(10), limit));
    // Let the daemon finish what is in flight before reading its clock.
    std::thread::sleep(Duration::from_millis(200));
    let cpu_us = cpu_micros(pid).saturating_sub(before);
    let per = result.ok.max(1);
    Phase { name, result, cpu_us, per, max_threads, max_rss_kib }
}

fn main() {
    // The regbot phase alone (it starts its own daemon, database and drachtio double).
    if std::env::var("SBC_BENCH_SKIP_REGISTRAR").is_ok_and(|v| v == "1") {
        regbot::main_phase();
        return;
    }
    let total_users = env_num("SBC_BENCH_USERS", 20_000) as usize;
    let window = env_num("SBC_BENCH_WINDOW", 200) as usize;
    let limit = Duration::from_secs(env_num("SBC_BENCH_SECONDS", 120));
    let binary = std::env::var("SBC_BENCH_DAEMON")
        .unwrap_or_else(|_| sbc_test_tools::repo_root().join("target/release/sbc-sidecar").display().to_string());

    let db = db::TestDb::create();
    let hook = webhook::WebhookServer::start();
    let realm = format!("bench{:06x}.example.com", rand::random::<u32>() & 0xffffff);
    let password = "bench-password";
    {
        let mut c = db.conn();
        let hook_sid = uuid::Uuid::new_v4().to_string();
        c.exec_drop(
            "INSERT INTO webhooks (webhook_sid, url, method) VALUES (?, ?, 'POST')",
            (&hook_sid, hook.url("/auth")),
        )
        .expect("webhook row");
        c.exec_drop(
            "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, \
             is_active, webhook_secret) VALUES (?, 'bench', ?, ?, ?, 1, 'bench-secret')",
            (uuid::Uuid::new_v4().to_string(), &realm, uuid::Uuid::new_v4().to_string(), &hook_sid),
        )
        .expect("account row");
    }
    let double = Double::start(DoubleConfig::default()).expect("drachtio double");
    let socket = std::env::temp_dir().join(format!("sbc-bench-{}.sock", std::process::id()));
    let mut daemon: Child = Command::new(&binary)
        .env_clear()
        .env("DRACHTIO_HOST", "127.0.0.1")
        .env("DRACHTIO_PORT", double.admin_addr().port().to_string())
        .env("DRACHTIO_SECRET", "cymru")
        .env("JAMBONES_MYSQL_HOST", "127.0.0.1")
        .env("JAMBONES_MYSQL_USER", db::mysql_user())
        .env("JAMBONES_MYSQL_PASSWORD", db::mysql_password())
        .env("JAMBONES_MYSQL_DATABASE", &db.name)
        .env("JAMBONES_REDIS_HOST", "127.0.0.1")
        .env("JAMBONES_TIME_SERIES_HOST", "127.0.0.1")
        .env("ENCRYPTION_SECRET", "bench")
        .env("JAMBONES_LOGLEVEL", "info")
        .env("SBC_SOCKET_PATH", &socket)
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_") || k.starts_with("SBC_AUTH")))
        .args(["--log", "stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e} (run `cargo build --release --bins`)"));
    let pid = daemon.id();
    assert!(double.wait_for_route("register", Duration::from_secs(10)), "the daemon did not connect to the double");

    let gen = LoadGen::new(&SOURCES, double.sip_addr(), &realm, 3600).expect("generator sockets");
    let users: Vec<User> = (0..total_users)
        .map(|i| User { name: format!("u{i}"), password: password.to_string(), socket: i % gen.socket_count() })
        .collect();
    for u in &users {
        hook.set_password(&u.name, password);
    }
    // Production webhooks keep their connections alive; ureq reuses them.
    hook.keep_alive(std::env::var("SBC_BENCH_WEBHOOK_CLOSE").is_err());

    println!("sbc-bench: {total_users} users, window {window}, daemon pid {pid} ({binary})");
    let (rss_start, _) = memory_kib(pid);
    let saturation = Pace::Window(window);
    let first = total_users.min(1_000);
    let warm = run_phase("full auth (first 1k)", &gen, &users[..first], pid, saturation, limit);
    let (rss_1k, _) = memory_kib(pid);

    // Fixed rates: fresh users for each full step, the same users again for the cached steps.
    let rates: Vec<u64> = std::env::var("SBC_BENCH_RATES")
        .unwrap_or_else(|_| "100,400,1600".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .filter(|r| *r > 0)
        .collect();
    let delays: Vec<u64> = std::env::var("SBC_BENCH_HOOK_DELAY_MS")
        .unwrap_or_else(|_| "0,100,500".into())
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let step = env_num("SBC_BENCH_STEP_SECONDS", 10).max(1);
    let mut fixed_full = Vec::new();
    let mut fixed_cached = Vec::new();
    // Fresh users for every (latency, rate) step; the cached steps refresh the first latency's.
    let mut step_users: Vec<Vec<Vec<User>>> = Vec::new();
    for delay in &delays {
        let mut per_rate = Vec::new();
        for rate in &rates {
            let users: Vec<User> = (0..(rate * step) as usize)
                .map(|i| User {
                    name: format!("f{delay}-{rate}-{i}"),
                    password: password.to_string(),
                    socket: i % gen.socket_count(),
                })
                .collect();
            for u in &users {
                hook.set_password(&u.name, password);
            }
            per_rate.push(users);
        }
        step_users.push(per_rate);
    }
    // Pace at the rate, with room for two seconds of answers in flight (a 500 ms webhook holds
    // each registration that long).
    let paced = |rate: u64| Pace::Rate { per_second: rate as f64, max_in_flight: (2 * rate as usize).max(100) };
    for (delay, per_rate) in delays.iter().zip(&step_users) {
        hook.delay(Duration::from_millis(*delay));
        for (rate, users) in rates.iter().zip(per_rate) {
            let name = format!("full auth @{rate}/s hook {delay} ms");
            fixed_full.push(((*delay, *rate), run_phase(name, &gen, users, pid, paced(*rate), limit)));
        }
    }
    hook.delay(Duration::ZERO);
    if let Some(per_rate) = step_users.first() {
        for (rate, users) in rates.iter().zip(per_rate) {
            fixed_cached.push(run_phase(format!("cached refresh @{rate}/s"), &gen, users, pid, paced(*rate), limit));
        }
    }

    let full = run_phase("full auth", &gen, &users[first..], pid, saturation, limit);
    let (rss_all, _) = memory_kib(pid);
    let cached = run_phase("cached refresh", &gen, &users[..total_users.min(20_000)], pid, saturation, limit);
    let (rss_end, hwm) = memory_kib(pid);

    for p in fixed_full.iter().map(|(_, p)| p).chain(&fixed_cached) {
        p.print();
    }
    warm.print();
    full.print();
    cached.print();
    println!(
        "memory: VmRSS start {} KiB, after 1k users {} KiB, after {} users {} KiB, end {} KiB; peak (VmHWM) {} KiB",
        rss_start, rss_1k, total_users, rss_all, rss_end, hwm
    );
    let json = serde_json::json!({
        "users": total_users,
        "window": window,
        "full_auth": full.json(),
        "cached": cached.json(),
        "step_seconds": step,
        "fixed_rate": {
            "full_auth": fixed_full.iter().map(|((d, r), p)| (format!("{r}@hook{d}ms"), p.json())).collect::<serde_json::Map<_, _>>(),
            "cached": rates.iter().zip(&fixed_cached).map(|(r, p)| (r.to_string(), p.json())).collect::<serde_json::Map<_, _>>(),
        },
        "rss_kib": {"start": rss_start, "after_1k": rss_1k, "after_all": rss_all, "end": rss_end, "peak": hwm},
    });
    println!("{json}");

    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = daemon.wait();
    let skip_regbot = std::env::var("SBC_BENCH_SKIP_REGBOT").is_ok_and(|v| v == "1");
    // Leave Redis as we found it.
    if let Ok(mut r) = redis::Client::open("redis://127.0.0.1:6379/").and_then(|c| c.get_connection()) {
        for u in users.iter().chain(step_users.iter().flatten().flatten()) {
            let key = format!("user:{}@{realm}", u.name);
            let _: Result<(), _> = r.del(&key);
            let _: Result<(), _> = r.zrem("active-user", &key);
        }
    }
    if !skip_regbot {
        regbot::main_phase();
    }
}
