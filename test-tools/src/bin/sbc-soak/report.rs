//! The end of the soak: the invariants checked against what was seen, printed for a person and
//! as one JSON line.

use super::*;

pub struct Report {
    pub text: String,
    pub json: serde_json::Value,
    pub ok: bool,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
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
