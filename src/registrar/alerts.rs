//! The registrar's alerts (spec 10.2). `Registrar::raise_alert` logs them at warn and sends them
//! to InfluxDB through the telemetry writer when the daemon plugged one in; how often one
//! account's `account-device-limit` alert may go out is kept with the account's other state
//! (`account_state.rs`).
//!
//! The alerts are the telemetry model's [`Alert`]s; the webhook ones are built here, because
//! their URL must be shown without credentials, query or fragment: alerts are read by people
//! who must not learn the webhook's password or token.

use std::time::Duration;

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
}
