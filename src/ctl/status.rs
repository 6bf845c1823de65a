//! The sections of the `status` reply that explain failing registrations, from the
//! registrar's report: one JSON object per area, so that another area (the auth queue and
//! workers, say) is one more key.
//!
//! ```text
//! "stores":   {"redis": {"reachable": bool, "since_ms": <unix ms>, "for_s": <seconds>,
//!                        "last_error": <text>|null, "last_error_ms": <unix ms>|null},
//!              "mysql": {…}},
//! "webhooks": {"open_breakers": [{"account_sid": …, "timeouts": <n>, "retry_in_s": <n>}, …]},
//! "bans":     {"active": <n>},
//! "register": {"window_s": 60, "200": <n>, "401": <n>, "403": <n>, "503": <n>, "5xx": <n>,
//!              "other": <n>}
//! ```

use serde_json::{Map, Value};

use crate::clock::unix_millis;
use crate::registrar::outcomes::WINDOW_SECS;
use crate::registrar::report::RegistrarReport;

fn store(reachable: bool, since_ms: u64, last_error: Option<&str>, last_error_ms: Option<u64>) -> Value {
    let mut m = Map::new();
    m.insert("reachable".into(), Value::Bool(reachable));
    m.insert("since_ms".into(), Value::from(since_ms));
    m.insert("for_s".into(), Value::from(unix_millis().saturating_sub(since_ms) / 1000));
    m.insert("last_error".into(), last_error.map(|e| Value::String(e.to_string())).unwrap_or(Value::Null));
    m.insert("last_error_ms".into(), last_error_ms.map(Value::from).unwrap_or(Value::Null));
    Value::Object(m)
}

/// Adds `stores`, `webhooks`, `bans` and `register` to `reply`.
pub(crate) fn add_sections(reply: &mut Map<String, Value>, report: &RegistrarReport) {
    let mut stores = Map::new();
    for (name, s) in [("redis", &report.redis), ("mysql", &report.mysql)] {
        stores.insert(name.into(), store(s.reachable, s.since_unix_ms, s.last_error.as_deref(), s.last_error_unix_ms));
    }
    reply.insert("stores".into(), Value::Object(stores));

    let breakers: Vec<Value> = report
        .open_breakers
        .iter()
        .map(|b| {
            let mut m = Map::new();
            m.insert("account_sid".into(), Value::String(b.account_sid.clone()));
            m.insert("timeouts".into(), Value::from(b.timeouts));
            m.insert("retry_in_s".into(), Value::from(b.retry_in.as_secs_f64().ceil() as u64));
            Value::Object(m)
        })
        .collect();
    let mut webhooks = Map::new();
    webhooks.insert("open_breakers".into(), Value::Array(breakers));
    reply.insert("webhooks".into(), Value::Object(webhooks));

    let mut bans = Map::new();
    bans.insert("active".into(), Value::from(report.active_bans));
    reply.insert("bans".into(), Value::Object(bans));

    let mut register = Map::new();
    register.insert("window_s".into(), Value::from(WINDOW_SECS));
    for (class, n) in &report.outcomes {
        register.insert((*class).into(), Value::from(*n));
    }
    reply.insert("register".into(), Value::Object(register));
}
