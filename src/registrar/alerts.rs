//! Alerts the registrar raises (spec 10.2): logged at warn, and sent to InfluxDB through the
//! telemetry writer when the daemon plugged one in.

use log::warn;

use super::webhook::url_for_logs;
use super::Registrar;
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
}

impl Alert {
    pub fn alert_type(&self) -> &'static str {
        match self {
            Alert::AccountDeviceLimit { .. } => "account-device-limit",
            Alert::WebhookFailure { .. } => "webhook-failure",
            Alert::WebhookConnectionFailure { .. } => "webhook-connection-failure",
        }
    }

    pub fn account_sid(&self) -> &str {
        match self {
            Alert::AccountDeviceLimit { account_sid, .. }
            | Alert::WebhookFailure { account_sid, .. }
            | Alert::WebhookConnectionFailure { account_sid, .. } => account_sid,
        }
    }

    /// The `message` field, worded exactly as the Node sidecar's (the portal shows it).
    pub fn message(&self) -> String {
        match self {
            Alert::AccountDeviceLimit { count, .. } => format!(
                "you have exceeded your account limit of {count} registered devices; please consider upgrading your plan"
            ),
            Alert::WebhookFailure { url, status, .. } => format!("{url} returned {status}"),
            Alert::WebhookConnectionFailure { url, .. } => format!("failed to connect to {url}"),
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
                telemetry::Alert::webhook_failure(account_sid, url, *status)
            }
            Alert::WebhookConnectionFailure { account_sid, url } => {
                telemetry::Alert::webhook_connection_failure(account_sid, url)
            }
        }
    }
}

impl Registrar {
    /// The one place where the registrar's alerts (`account-device-limit`, `webhook-failure`,
    /// `webhook-connection-failure`) are emitted: a warn line, and a point for InfluxDB.
    pub fn raise_alert(&self, alert: &Alert) {
        // The log shows the URL without credentials or query; the alert message keeps it whole.
        let detail = match alert {
            Alert::AccountDeviceLimit { count, .. } => format!("limit={count}"),
            Alert::WebhookFailure { url, status, .. } => format!("url={} status={status}", url_for_logs(url)),
            Alert::WebhookConnectionFailure { url, .. } => format!("url={}", url_for_logs(url)),
        };
        warn!("alert alert_type={} account_sid={} {detail}", alert.alert_type(), alert.account_sid());
        if let Some(sender) = &self.alerts {
            sender.send(alert.to_telemetry());
        }
    }
}

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
}
