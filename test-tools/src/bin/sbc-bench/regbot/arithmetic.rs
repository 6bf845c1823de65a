//! Arithmetic on arrival times and CPU samples for the regbot phase's summary: busiest windows,
//! bursts, per-thread CPU, rounding and quantiles.

use super::*;

/// The most events (sorted offsets) in any half-open window of `width`.
pub fn peak(sorted: &[Duration], width: Duration) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= width {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Groups sorted offsets into bursts separated by more than `gap`: (the start of each burst,
/// the largest burst).
pub fn bursts(sorted: &[Duration], gap: Duration) -> (Vec<Duration>, usize) {
    let mut starts: Vec<Duration> = Vec::new();
    let mut largest = 0;
    let mut current = 0;
    for (i, t) in sorted.iter().enumerate() {
        if i == 0 || *t - sorted[i - 1] > gap {
            starts.push(*t);
            current = 0;
        }
        current += 1;
        largest = largest.max(current);
    }
    (starts, largest)
}

/// CPU time (µs) of each thread of `pid`, summed by thread name, largest first.
pub fn thread_cpu(pid: u32) -> Vec<(String, u64)> {
    let mut by_name: HashMap<String, u64> = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let name = head.split_once('(').map_or("?", |(_, n)| n).to_string();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        *by_name.entry(name).or_default() += ticks * 10_000;
    }
    let mut v: Vec<(String, u64)> = by_name.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// `after - before` per thread name, as JSON, threads that used no CPU left out.
pub fn thread_cpu_delta(before: &[(String, u64)], after: &[(String, u64)]) -> Value {
    let mut out = serde_json::Map::new();
    let mut delta: Vec<(&str, u64)> = after
        .iter()
        .map(|(n, a)| (n.as_str(), a.saturating_sub(before.iter().find(|(b, _)| b == n).map_or(0, |(_, b)| *b))))
        .filter(|(_, d)| *d > 0)
        .collect();
    delta.sort_by_key(|d| std::cmp::Reverse(d.1));
    for (n, d) in delta {
        out.insert(n.to_string(), json!(d));
    }
    Value::Object(out)
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn frac4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}
