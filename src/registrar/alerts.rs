//! Alerts the registrar raises (spec 10.2), and the limiter that keeps one account's alert
//! from being raised on every REGISTER. `Registrar::raise_alert` logs them at warn and sends
//! them to InfluxDB through the telemetry writer when the daemon plugged one in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::webhook::url_for_logs;
use crate::telemetry;

/// One alert, with the fields the InfluxDB point will carry (`alert_type` and `account_sid`
/// tags, `message` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    /// Hosting mode: the account's device limit is 0 or reached. `count` is the limit.
    AccountDeviceLimit { account_sid: String, count: u64 },
    /// The registration webhook answered with an HTTP status other than 200.
    WebhookFailure { account_sid: String, url: String, status: u16 },
    /// The registration webhook could not be reached (refused, DNS, TLS, timeout).
    WebhookConnectionFailure { account_sid: String, url: String },
    /// Not in the Node sidecar: a source failed to authenticate too often and is refused for
    /// a while (no account: the source may have tried any realm).
    SourceBanned { ip: IpAddr, failures: u32, window_secs: u64, ban_secs: u64 },
}

impl Alert {
    pub fn alert_type(&self) -> &'static str {
        match self {
            Alert::AccountDeviceLimit { .. } => "account-device-limit",
            Alert::WebhookFailure { .. } => "webhook-failure",
            Alert::WebhookConnectionFailure { .. } => "webhook-connection-failure",
            Alert::SourceBanned { .. } => "registration-source-banned",
        }
    }

    pub fn account_sid(&self) -> &str {
        match self {
            Alert::AccountDeviceLimit { account_sid, .. }
            | Alert::WebhookFailure { account_sid, .. }
            | Alert::WebhookConnectionFailure { account_sid, .. } => account_sid,
            Alert::SourceBanned { .. } => "",
        }
    }

    /// The `message` field, worded as the Node sidecar's (the portal shows it), except that
    /// a webhook URL is shown without credentials, query or fragment: alerts are read by
    /// people who must not learn the webhook's password or token.
    pub fn message(&self) -> String {
        match self {
            Alert::AccountDeviceLimit { count, .. } => format!(
                "you have exceeded your account limit of {count} registered devices; please consider upgrading your plan"
            ),
            Alert::WebhookFailure { url, status, .. } => format!("{} returned {status}", url_for_logs(url)),
            Alert::WebhookConnectionFailure { url, .. } => format!("failed to connect to {}", url_for_logs(url)),
            Alert::SourceBanned { ip, failures, window_secs, ban_secs } => format!(
                "registrations from {ip} refused for {ban_secs} s after {failures} failed authentications within {window_secs} s"
            ),
        }
    }
}

impl Alert {
    /// The InfluxDB point for this alert.
    pub fn to_telemetry(&self) -> telemetry::Alert {
        match self {
            Alert::AccountDeviceLimit { account_sid, count } => {
                telemetry::Alert::account_device_limit(account_sid, *count)
            }
            Alert::WebhookFailure { account_sid, url, status } => {
                telemetry::Alert::webhook_failure(account_sid, &url_for_logs(url), *status)
            }
            Alert::WebhookConnectionFailure { account_sid, url } => {
                telemetry::Alert::webhook_connection_failure(account_sid, &url_for_logs(url))
            }
            Alert::SourceBanned { .. } => telemetry::Alert::without_type(None, None, self.message()),
        }
    }
}

impl Alert {
    /// What the warn line says after the type and account: the URL without credentials or
    /// query, the limit, the source.
    pub fn log_detail(&self) -> String {
        match self {
            Alert::AccountDeviceLimit { count, .. } => format!("limit={count}"),
            Alert::WebhookFailure { url, status, .. } => format!("url={} status={status}", url_for_logs(url)),
            Alert::WebhookConnectionFailure { url, .. } => format!("url={}", url_for_logs(url)),
            Alert::SourceBanned { ip, .. } => format!("source={ip}"),
        }
    }
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
    fn telemetry_points_carry_the_same_message_and_type() {
        for a in [
            Alert::AccountDeviceLimit { account_sid: "a1".into(), count: 5 },
            Alert::WebhookFailure { account_sid: "a1".into(), url: "https://h/reg".into(), status: 404 },
            Alert::WebhookConnectionFailure { account_sid: "a1".into(), url: "https://h/reg".into() },
        ] {
            let t = a.to_telemetry();
            assert_eq!(t.message(), a.message());
            assert_eq!(t.alert_type().map(|x| x.as_str()), Some(a.alert_type()));
            assert_eq!(t.account_sid(), Some("a1"));
        }
    }

    #[test]
    fn messages_match_the_node_sidecar() {
        let a = Alert::AccountDeviceLimit { account_sid: "a1".into(), count: 5 };
        assert_eq!(a.alert_type(), "account-device-limit");
        assert_eq!(
            a.message(),
            "you have exceeded your account limit of 5 registered devices; please consider upgrading your plan"
        );
        let w = Alert::WebhookFailure { account_sid: "a1".into(), url: "https://h/reg".into(), status: 404 };
        assert_eq!((w.alert_type(), w.message()), ("webhook-failure", "https://h/reg returned 404".to_string()));
        let c = Alert::WebhookConnectionFailure { account_sid: "a1".into(), url: "https://h/reg".into() };
        assert_eq!(c.message(), "failed to connect to https://h/reg");
        assert_eq!(c.account_sid(), "a1");
    }

    #[test]
    fn webhook_credentials_and_tokens_never_reach_an_alert() {
        let url = "https://user:pa55word@h.example/reg?token=t0ken#frag";
        for a in [
            Alert::WebhookFailure { account_sid: "a1".into(), url: url.into(), status: 500 },
            Alert::WebhookConnectionFailure { account_sid: "a1".into(), url: url.into() },
        ] {
            for text in [a.message(), a.to_telemetry().message().to_string()] {
                assert!(text.contains("https://h.example/reg"), "{text}");
                assert!(!text.contains("pa55word") && !text.contains("user:") && !text.contains("t0ken"), "{text}");
            }
        }
    }

    #[test]
    fn a_ban_alert_names_the_source_and_the_numbers() {
        let a = Alert::SourceBanned { ip: "127.0.0.9".parse().unwrap(), failures: 10, window_secs: 60, ban_secs: 300 };
        assert_eq!(
            a.message(),
            "registrations from 127.0.0.9 refused for 300 s after 10 failed authentications within 60 s"
        );
        assert_eq!(a.to_telemetry().message(), a.message());
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
