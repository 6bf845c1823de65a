//! The registrar's alerts (spec 10.2) and the limiter that keeps one account's alert from
//! being raised on every REGISTER. `Registrar::raise_alert` logs them at warn and sends them to
//! InfluxDB through the telemetry writer when the daemon plugged one in.
//!
//! The alerts are the telemetry model's [`Alert`]s; the webhook ones are built here, because
//! their URL must be shown without credentials, query or fragment: alerts are read by people
//! who must not learn the webhook's password or token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::webhook::url_for_logs;
use crate::telemetry::Alert;

/// `webhook-failure`: the registration webhook answered with an HTTP status other than 200.
pub fn webhook_failure(account_sid: &str, url: &str, status: u16) -> Alert {
    Alert::webhook_failure(account_sid, &url_for_logs(url), status)
}

/// `webhook-connection-failure`: the registration webhook could not be reached (refused, DNS,
/// TLS, timeout).
pub fn webhook_connection_failure(account_sid: &str, url: &str) -> Alert {
    Alert::webhook_connection_failure(account_sid, &url_for_logs(url))
}

/// At most one `account-device-limit` alert per account per interval: a device retrying
/// every few seconds must not write an InfluxDB point (and a warn line) each time.
pub struct AlertLimiter {
    interval: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

/// Accounts remembered by [`AlertLimiter`]; when full, the expired ones are forgotten, and if
/// none has expired, all of them (one extra alert each is the worst outcome).
const LIMITER_ENTRIES: usize = 10_000;

impl AlertLimiter {
    pub fn new(interval: Duration) -> AlertLimiter {
        AlertLimiter { interval, last: Mutex::new(HashMap::new()) }
    }

    /// Whether an alert for `key` may go out at `now` (and if so, notes it).
    pub fn admit(&self, key: &str, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.get(key).is_some_and(|at| now.saturating_duration_since(*at) < self.interval) {
            return false;
        }
        if last.len() >= LIMITER_ENTRIES && !last.contains_key(key) {
            let interval = self.interval;
            last.retain(|_, at| now.saturating_duration_since(*at) < interval);
            if last.len() >= LIMITER_ENTRIES {
                last.clear();
            }
        }
        last.insert(key.to_string(), now);
        true
    }
}

/// How often one account's `account-device-limit` alert may be raised.
pub const DEVICE_LIMIT_ALERT_INTERVAL: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_credentials_and_tokens_never_reach_an_alert() {
        let url = "https://user:pa55word@h.example/reg?token=t0ken#frag";
        for a in [webhook_failure("a1", url, 500), webhook_connection_failure("a1", url)] {
            for text in [a.message().to_string(), a.to_string()] {
                assert!(text.contains("https://h.example/reg"), "{text}");
                assert!(!text.contains("pa55word") && !text.contains("user:") && !text.contains("t0ken"), "{text}");
            }
        }
        assert_eq!(webhook_failure("a1", "https://h/reg", 404).message(), "https://h/reg returned 404");
        assert_eq!(webhook_connection_failure("a1", "https://h/reg").message(), "failed to connect to https://h/reg");
    }

    #[test]
    fn the_limiter_admits_one_alert_per_key_and_interval() {
        let l = AlertLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(l.admit("a", t0));
        assert!(!l.admit("a", t0 + Duration::from_secs(59)));
        assert!(l.admit("b", t0 + Duration::from_secs(1)));
        assert!(l.admit("a", t0 + Duration::from_secs(60)));
        for i in 0..(LIMITER_ENTRIES + 5) {
            l.admit(&format!("k{i}"), t0);
        }
        assert!(l.last.lock().unwrap().len() <= LIMITER_ENTRIES);
    }
}
