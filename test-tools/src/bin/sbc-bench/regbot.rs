//! `make bench`, regbot phase: the release daemon keeps `N` carrier gateways registered.
//!
//! A throw-away database holds `N` carriers (`requires_register`, `static_ip`, one distinct
//! `register_username` each, realm `sip.bench.test`) with one outbound UDP gateway each, all
//! pointing at an in-process registrar on 127.0.0.1 that answers every REGISTER with `200 OK`
//! granting `E` seconds and records when each one arrived. A fresh drachtio double and the
//! release `sbc-sidecar` (its own `JAMBONES_CLUSTER_ID`, claim jitter 0, log level warn) run
//! against it. Measured:
//!
//! * the first reconcile: from the daemon's start until every gateway's first REGISTER reached
//!   the registrar, the daemon's CPU time (from /proc) for it, in total and per REGISTER, and
//!   MariaDB's;
//! * the pace of the start batches: REGISTERs in the busiest 1 s and 100 ms windows and the
//!   bursts, against the documented rate `JAMBONES_REGBOT_BATCH_SIZE` per
//!   `JAMBONES_REGBOT_BATCH_SLEEP_MS` (10 per 250 ms = 40/s by default; a window of width `w`
//!   may hold `floor(w / pause) + 1` batches, i.e. 50 in 1 s and 10 in 100 ms by default);
//! * the refreshes: the busiest second of refresh REGISTERs, and when each gateway's second
//!   REGISTER came relative to its first, as a fraction of `E` (the daemon refreshes at `E/2`
//!   minus up to 10 % jitter, so 0.45–0.50 is expected), and the CPU of that window;
//! * the daemon's CPU per thread (`/proc/<pid>/task`), for both windows;
//! * memory: VmRSS when the daemon connected to drachtio (before it read the carriers), at its
//!   first REGISTER and once every gateway is registered, and VmHWM;
//! * how many `register_status` rows say `ok` (one COUNT right after the first reconcile, one at
//!   the end), and how long SIGTERM takes.
//!
//! Knobs (environment):
//!
//! * `SBC_BENCH_GATEWAYS`: gateways, default 10000; 0 skips this phase;
//! * `SBC_BENCH_REGBOT_EXPIRES`: the `E` the registrar grants, default 120 s;
//! * `SBC_BENCH_REGBOT_SECONDS`: bound on the refresh window after the first reconcile,
//!   default `E`;
//! * `SBC_BENCH_REGBOT_INITIAL_SECONDS`: bound on the first reconcile, default twice the
//!   documented duration + 120 s;
//! * `SBC_BENCH_REGBOT_BATCH_SIZE`, `SBC_BENCH_REGBOT_BATCH_SLEEP_MS`: passed to the daemon as
//!   `JAMBONES_REGBOT_BATCH_SIZE` / `_BATCH_SLEEP_MS` (unset: the daemon's defaults);
//! * `SBC_BENCH_REGBOT_STOP_SECONDS`: how long SIGTERM may take before SIGKILL, default 15;
//! * `SBC_BENCH_REGBOT_INDEX=1`: index `sip_gateways.voip_carrier_sid`, as the jambonz schema
//!   does (`src/store/schema.sql` has no such index);
//! * `SBC_KEEP_TEST_LOGS`: keep the daemon's log (`$TMPDIR/sbc-bench-regbot-*.log`).
//!
//! `SBC_BENCH_SKIP_REGISTRAR=1` makes `sbc-bench` run this phase only. The summary is printed
//! as text, then as one JSON line `{"regbot": {...}}` (after the REGISTER phases' own line).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::{json, Value};

use sbc_test_tools::db::{self, TestDb};
use sbc_test_tools::double::{Double, DoubleConfig};

use crate::{cpu_micros, memory_kib};

mod arithmetic;
mod daemon;
mod database;
mod registrar;

use arithmetic::*;
use daemon::*;
use database::*;
use registrar::*;

const REALM: &str = "sip.bench.test";
const PASSWORD: &str = "bench-regbot-secret";
/// The daemon's own defaults (README), used for the documented rate when the knobs are unset.
const DEFAULT_BATCH_SIZE: u64 = 10;
const DEFAULT_BATCH_SLEEP_MS: u64 = 250;
/// Rows per multi-row INSERT.
const INSERT_CHUNK: usize = 500;

fn env_opt(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Reads the knobs, runs the phase, prints the summary and the JSON line. Called by `main`.
pub fn main_phase() {
    let gateways = env_opt("SBC_BENCH_GATEWAYS").unwrap_or(10_000) as usize;
    if gateways == 0 {
        println!("regbot bench skipped (SBC_BENCH_GATEWAYS=0)");
        return;
    }
    let binary = std::env::var("SBC_BENCH_DAEMON")
        .unwrap_or_else(|_| sbc_test_tools::repo_root().join("target/release/sbc-sidecar").display().to_string());
    let report = run(gateways, &binary);
    print_summary(&report);
    println!("{}", json!({ "regbot": report }));
}

// ---------------------------------------------------------------------------------------------
// The run

/// Runs the phase with `gateways` carrier gateways against the daemon at `binary`.
pub fn run(gateways: usize, binary: &str) -> Value {
    let expires = env_opt("SBC_BENCH_REGBOT_EXPIRES").unwrap_or(120).max(1);
    let refresh_limit = Duration::from_secs(env_opt("SBC_BENCH_REGBOT_SECONDS").unwrap_or(expires));
    let batch_size = env_opt("SBC_BENCH_REGBOT_BATCH_SIZE").unwrap_or(DEFAULT_BATCH_SIZE).max(1);
    let batch_sleep =
        Duration::from_millis(env_opt("SBC_BENCH_REGBOT_BATCH_SLEEP_MS").unwrap_or(DEFAULT_BATCH_SLEEP_MS));
    let documented_rate = (!batch_sleep.is_zero()).then(|| batch_size as f64 / batch_sleep.as_secs_f64());
    let batches = (gateways as u64).div_ceil(batch_size);
    let documented_duration = batch_sleep * (batches.saturating_sub(1) as u32);
    let initial_limit = Duration::from_secs(
        env_opt("SBC_BENCH_REGBOT_INITIAL_SECONDS").unwrap_or(documented_duration.as_secs() * 2 + 120),
    );

    let registrar = Registrar::start(expires).expect("bench registrar socket");
    let setup = Instant::now();
    let db = TestDb::create();
    let gateway_sids = insert_carriers(&db, gateways, registrar.addr.port());
    let indexed = env_opt("SBC_BENCH_REGBOT_INDEX") == Some(1);
    if indexed {
        add_gateway_index(&db);
    }
    let insert_time = setup.elapsed();
    let double = Double::start(DoubleConfig::default()).expect("drachtio double");
    let cluster = format!("bench-regbot-{:08x}", rand::random::<u32>());
    println!(
        "sbc-bench regbot: {gateways} gateways (inserted in {:.1} s), registrar 127.0.0.1:{} grants {expires} s, \
         batches of {batch_size} every {} ms ({}), cluster {cluster}",
        insert_time.as_secs_f64(),
        registrar.addr.port(),
        batch_sleep.as_millis(),
        documented_rate.map_or("no pause".to_string(), |r| format!("{r:.0}/s documented")),
    );

    let mysqld = mysqld_pid();
    let mysqld_cpu_start = mysqld.map(cpu_micros);
    let started = Instant::now();
    let mut daemon = start_daemon(binary, double.admin_addr().port(), &db.name, &cluster);
    let pid = daemon.pid();
    let connected = double.wait_for_route("register", Duration::from_secs(15));
    let connect_time = started.elapsed();
    let (rss_connect, _) = memory_kib(pid);
    let early_registers = registrar.total.load(Ordering::Relaxed);

    // The first reconcile: until every gateway's first REGISTER arrived.
    let mut at_first: Option<(u64, u64)> = None; // (cpu µs, VmRSS KiB) at the first REGISTER
    while connected && started.elapsed() < initial_limit {
        let seen = registrar.distinct.load(Ordering::Relaxed);
        if seen > 0 && at_first.is_none() {
            at_first = Some((cpu_micros(pid), memory_kib(pid).0));
        }
        if seen >= gateways {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let initial_done = started.elapsed();
    let cpu_initial = cpu_micros(pid);
    let threads_initial = thread_cpu(pid);
    let mysqld_cpu_initial = mysqld.map(cpu_micros);
    let (rss_all, hwm_all) = memory_kib(pid);
    let registered = registrar.distinct.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let ok_after_initial = count_ok(&db);

    // One refresh window: until every gateway refreshed once, within the bound.
    let refresh_started = Instant::now();
    while connected && registered > 0 && refresh_started.elapsed() < refresh_limit {
        if registrar.refreshed.load(Ordering::Relaxed) >= registered {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu_end = cpu_micros(pid);
    let threads_end = thread_cpu(pid);
    let mysqld_cpu_end = mysqld.map(cpu_micros);
    let (rss_end, hwm_end) = memory_kib(pid);
    let ok_end = count_ok(&db);
    let run_time = started.elapsed();

    let stop_limit = Duration::from_secs(env_opt("SBC_BENCH_REGBOT_STOP_SECONDS").unwrap_or(15));
    let (exit_code, stop_time) = daemon.stop(stop_limit);
    let log = std::fs::read_to_string(&daemon.log_path).unwrap_or_default();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    drop(double);
    if let Ok(mut r) = redis::Client::open("redis://127.0.0.1:6379/").and_then(|c| c.get_connection()) {
        let _: Result<(), _> = redis::cmd("DEL").arg(format!("{cluster}:regbot-token")).query(&mut r);
    }
    let book = {
        let mut guard = registrar.book.lock().expect("registrar book");
        std::mem::take(&mut *guard)
    };
    drop(registrar);
    drop(db);
    let known: std::collections::HashSet<&str> = gateway_sids.iter().map(String::as_str).collect();
    let unknown_call_ids = book.by_call_id.keys().filter(|c| !known.contains(c.as_str())).count();

    // Arrival offsets from the daemon's start.
    let off = |t: Instant| t.saturating_duration_since(started);
    let mut firsts: Vec<Duration> = book.calls.iter().map(|s| off(s.first)).collect();
    firsts.sort();
    let last_first = firsts.last().copied().unwrap_or_default();
    let first_first = firsts.first().copied();
    let mut all: Vec<Duration> = book.requests.iter().map(|r| off(r.0)).collect();
    all.sort();
    let all_initial: Vec<Duration> = all.iter().copied().filter(|t| *t <= last_first).collect();
    // Refreshes: every REGISTER of a Call-ID after its first CSeq, retransmissions excluded.
    let mut refreshes: Vec<Duration> = Vec::new();
    {
        let mut last_cseq: HashMap<usize, u64> = HashMap::new();
        let mut order: Vec<&(Instant, usize, u64, Option<u64>)> = book.requests.iter().collect();
        order.sort_by_key(|r| r.0);
        for r in order {
            let first_cseq = book.calls[r.1].first_cseq;
            let prev = last_cseq.insert(r.1, r.2);
            if r.2 != first_cseq && prev != Some(r.2) {
                refreshes.push(off(r.0));
            }
        }
    }
    let refresh_after_initial: Vec<Duration> = refreshes.iter().copied().filter(|t| *t > last_first).collect();
    let all_after_initial: Vec<Duration> = all.iter().copied().filter(|t| *t > last_first).collect();
    let mut spread: Vec<f64> = book
        .calls
        .iter()
        .filter_map(|s| s.second.map(|second| (second - s.first).as_secs_f64() / expires as f64))
        .collect();
    spread.sort_by(f64::total_cmp);
    let (burst_starts, burst_max) =
        bursts(&firsts, (batch_sleep / 2).clamp(Duration::from_millis(1), Duration::from_millis(100)));
    let burst_gaps: Vec<Duration> = burst_starts.windows(2).map(|w| w[1] - w[0]).collect();
    let burst_min_gap = burst_gaps.iter().min().copied();
    let burst_max_gap = burst_gaps.iter().max().copied();
    let short_gaps = burst_gaps.iter().filter(|g| g.as_secs_f64() < batch_sleep.as_secs_f64() * 0.9).count();
    // How late each batch went out against the ideal schedule start + k · batch_sleep (taking
    // the earliest batch, relative to that schedule, as on time).
    let lateness: Vec<f64> =
        burst_starts.iter().enumerate().map(|(k, t)| t.as_secs_f64() - batch_sleep.as_secs_f64() * k as f64).collect();
    let on_time = lateness.iter().copied().fold(f64::INFINITY, f64::min);
    let mut late: Vec<(f64, f64)> =
        lateness.iter().zip(&burst_starts).map(|(l, t)| (l - on_time, t.as_secs_f64())).collect();
    late.sort_by(|a, b| b.0.total_cmp(&a.0));
    let initial_span = first_first.map(|f| last_first - f).unwrap_or_default();
    let refresh_span = run_time.saturating_sub(last_first);
    let cpu_initial_per = cpu_initial as f64 / all_initial.len().max(1) as f64;
    let cpu_refresh = cpu_end.saturating_sub(cpu_initial);
    let refresh_requests_in_window = all_after_initial.len();
    let peak_1s = peak(&firsts, Duration::from_secs(1));
    let peak_100ms = peak(&firsts, Duration::from_millis(100));
    // At the documented pace (`batch_size` requests at once, every `batch_sleep`) a window of
    // width `w` can hold floor(w / batch_sleep) + 1 batches: one at each end when it is closed
    // or when one batch goes out a little late. The nominal rate is `documented_rate`.
    let window_limit = |w: Duration| {
        (!batch_sleep.is_zero()).then(|| batch_size as u128 * (w.as_nanos() / batch_sleep.as_nanos() + 1))
    };
    let limit_1s = window_limit(Duration::from_secs(1));
    let limit_100ms = window_limit(Duration::from_millis(100));
    let within_pace = burst_max as u64 <= batch_size
        && limit_1s.is_none_or(|l| peak_1s as u128 <= l)
        && limit_100ms.is_none_or(|l| peak_100ms as u128 <= l);
    let mut asked: Vec<(u64, usize)> = book.expires_asked.into_iter().collect();
    asked.sort();

    json!({
        "gateways": gateways,
        "expires_granted_s": expires,
        "expires_requested": asked.iter().map(|(e, n)| json!({"expires": e, "requests": n})).collect::<Vec<_>>(),
        "batch_size": batch_size,
        "batch_sleep_ms": batch_sleep.as_millis() as u64,
        "documented_rate_per_s": documented_rate,
        "documented_initial_s": documented_duration.as_secs_f64(),
        "db_insert_s": round2(insert_time.as_secs_f64()),
        "gateway_carrier_index": indexed,
        "initial": {
            "complete": registered >= gateways,
            "registered": registered,
            "drachtio_connect_ms": ms(connect_time),
            "registers_before_connect_sample": early_registers,
            "first_register_ms": first_first.map(ms),
            "all_registered_ms": ms(last_first),
            "first_to_last_ms": ms(initial_span),
            "poll_done_ms": ms(initial_done),
            "mean_rate_per_s": (!initial_span.is_zero()).then(|| round2(registered.saturating_sub(1) as f64 / initial_span.as_secs_f64())),
            "peak_1s": peak_1s,
            "peak_100ms": peak_100ms,
            "documented_limit_1s": limit_1s,
            "documented_limit_100ms": limit_100ms,
            "within_documented_pace": within_pace,
            "peak_1s_including_refreshes": peak(&all_initial, Duration::from_secs(1)),
            "bursts": burst_starts.len(),
            "largest_burst": burst_max,
            "min_burst_gap_ms": burst_min_gap.map(ms),
            "max_burst_gap_ms": burst_max_gap.map(ms),
            "burst_gaps_under_90pct_of_sleep": short_gaps,
            "max_batch_lateness_ms": late.first().map(|l| round2(l.0 * 1e3)),
            "latest_batches": late.iter().take(5).map(|(l, t)| json!({"at_s": round2(*t), "late_ms": round2(l * 1e3)})).collect::<Vec<_>>(),
            "cpu_us": cpu_initial,
            "cpu_us_to_first_register": at_first.map(|a| a.0),
            "registers_received": all_initial.len(),
            "cpu_us_per_register": (!all_initial.is_empty()).then(|| round2(cpu_initial_per)),
            "cpu_us_per_gateway": (registered > 0).then(|| round2(cpu_initial as f64 / registered as f64)),
            "cpu_us_by_thread": thread_cpu_delta(&[], &threads_initial),
            "mysqld_cpu_us": mysqld_cpu_start.zip(mysqld_cpu_initial).map(|(a, b)| b.saturating_sub(a)),
            "retransmissions_total": book.retransmissions,
        },
        "refresh": {
            "window_s": round2(refresh_span.as_secs_f64()),
            "gateways_refreshed": spread.len(),
            "refresh_requests_total": refreshes.len(),
            "requests_after_initial": refresh_requests_in_window,
            "refresh_peak_1s": peak(&refreshes, Duration::from_secs(1)),
            "refresh_peak_100ms": peak(&refreshes, Duration::from_millis(100)),
            "peak_1s_after_initial": peak(&all_after_initial, Duration::from_secs(1)),
            "mean_rate_after_initial_per_s": (!refresh_span.is_zero()).then(|| round2(refresh_after_initial.len() as f64 / refresh_span.as_secs_f64())),
            "offset_fraction_of_expires": {
                "min": spread.first().map(|x| frac4(*x)),
                "p50": quantile(&spread, 0.5).map(frac4),
                "max": spread.last().map(|x| frac4(*x)),
            },
            "cpu_us": cpu_refresh,
            "cpu_us_per_register": (refresh_requests_in_window > 0)
                .then(|| round2(cpu_refresh as f64 / refresh_requests_in_window as f64)),
            "cpu_us_by_thread": thread_cpu_delta(&threads_initial, &threads_end),
            "mysqld_cpu_us": mysqld_cpu_initial.zip(mysqld_cpu_end).map(|(a, b)| b.saturating_sub(a)),
        },
        "rss_kib": {
            "at_connect": rss_connect,
            "at_first_register": at_first.map(|a| a.1),
            "all_registered": rss_all,
            "peak_all_registered": hwm_all,
            "end": rss_end,
            "peak": hwm_end,
        },
        "rss_bytes_per_gateway": (registered > 0)
            .then(|| round2((rss_all as f64 - rss_connect as f64) * 1024.0 / registered as f64)),
        "register_status_ok": {"after_initial": ok_after_initial, "end": ok_end},
        "unknown_call_ids": unknown_call_ids,
        "unparsable_datagrams": book.unparsable,
        "daemon": {
            "exit_code": exit_code,
            "stop_ms": ms(stop_time),
            "warn_or_error_lines": warnings.len(),
            "first_warnings": warnings.iter().take(5).map(|l| l.chars().take(300).collect::<String>()).collect::<Vec<_>>(),
        },
    })
}

/// A few lines of text for a person.
pub fn print_summary(v: &Value) {
    let i = &v["initial"];
    let r = &v["refresh"];
    let m = &v["rss_kib"];
    println!(
        "regbot first reconcile: {}/{} gateways registered in {} ms after the daemon started (first REGISTER at {} ms, \
         last {} ms after it; documented {} s)",
        i["registered"], v["gateways"], i["all_registered_ms"], i["first_register_ms"], i["first_to_last_ms"],
        v["documented_initial_s"]
    );
    println!(
        "regbot cpu: {} µs for the first reconcile ({} µs to the first REGISTER; {} REGISTERs including refreshes: \
         {} µs/REGISTER, {} µs/gateway); MariaDB {} µs",
        i["cpu_us"],
        i["cpu_us_to_first_register"],
        i["registers_received"],
        i["cpu_us_per_register"],
        i["cpu_us_per_gateway"],
        i["mysqld_cpu_us"]
    );
    println!("regbot cpu by thread (first reconcile): {}", top_threads(&i["cpu_us_by_thread"]));
    println!(
        "regbot pace: mean {}/s, peak {} in 1 s (bound {}), {} in 100 ms (bound {}); {} bursts, largest {}, \
         {}–{} ms apart, {} gaps under 90 % of the pause, latest batch {} ms late (within the documented pace: \
         {}); with refreshes peak {} in 1 s",
        i["mean_rate_per_s"],
        i["peak_1s"],
        i["documented_limit_1s"],
        i["peak_100ms"],
        i["documented_limit_100ms"],
        i["bursts"],
        i["largest_burst"],
        i["min_burst_gap_ms"],
        i["max_burst_gap_ms"],
        i["burst_gaps_under_90pct_of_sleep"],
        i["max_batch_lateness_ms"],
        i["within_documented_pace"],
        i["peak_1s_including_refreshes"]
    );
    println!(
        "regbot refresh: {} gateways refreshed, second REGISTER at {}–{} (median {}) of the granted {} s; refresh \
         peak {} in 1 s, {} in 100 ms; after the first reconcile {} REGISTERs in {} s (peak {} in 1 s), \
         {} µs CPU = {} µs/REGISTER; MariaDB {} µs",
        r["gateways_refreshed"],
        r["offset_fraction_of_expires"]["min"],
        r["offset_fraction_of_expires"]["max"],
        r["offset_fraction_of_expires"]["p50"],
        v["expires_granted_s"],
        r["refresh_peak_1s"],
        r["refresh_peak_100ms"],
        r["requests_after_initial"],
        r["window_s"],
        r["peak_1s_after_initial"],
        r["cpu_us"],
        r["cpu_us_per_register"],
        r["mysqld_cpu_us"]
    );
    println!("regbot cpu by thread (refresh window): {}", top_threads(&r["cpu_us_by_thread"]));
    println!(
        "regbot memory: VmRSS at connect {} KiB, at first REGISTER {} KiB, all registered {} KiB (≈{} B/gateway), \
         end {} KiB; VmHWM {} KiB",
        m["at_connect"], m["at_first_register"], m["all_registered"], v["rss_bytes_per_gateway"], m["end"], m["peak"]
    );
    println!(
        "regbot register_status ok: {} after the first reconcile, {} at the end; retransmissions {}, unknown \
         Call-IDs {}; daemon exit {} after {} ms, {} warn/error log lines",
        v["register_status_ok"]["after_initial"],
        v["register_status_ok"]["end"],
        i["retransmissions_total"],
        v["unknown_call_ids"],
        v["daemon"]["exit_code"],
        v["daemon"]["stop_ms"],
        v["daemon"]["warn_or_error_lines"]
    );
    if let Some(lines) = v["daemon"]["first_warnings"].as_array() {
        for l in lines {
            println!("  {}", l.as_str().unwrap_or(""));
        }
    }
}

/// `name µs, …` for the five busiest threads.
fn top_threads(v: &Value) -> String {
    v.as_object().map_or(String::new(), |m| {
        m.iter().take(5).map(|(n, us)| format!("{n} {us} µs")).collect::<Vec<_>>().join(", ")
    })
}
