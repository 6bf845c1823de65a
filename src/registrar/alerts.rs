//! Alerts the registrar raises (spec 10.2). Writing them to InfluxDB is later work: for now
//! [`Registrar::raise_alert`] logs them at warn level; the telemetry role will take them over
//! without the pipeline changing.

use log::warn;

use super::webhook::url_for_logs;
use super::Registrar;

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

impl Registrar {
    /// The one place where the registrar's alerts (`account-device-limit`, `webhook-failure`,
    /// `webhook-connection-failure`) are emitted. For now they are only logged at warn level:
    /// sending them to InfluxDB (spec 10.2) is later work, to be plugged in here.
    pub fn raise_alert(&self, alert: &Alert) {
        // The log shows the URL without credentials or query; the alert message keeps it whole.
        let detail = match alert {
            Alert::AccountDeviceLimit { count, .. } => format!("limit={count}"),
            Alert::WebhookFailure { url, status, .. } => format!("url={} status={status}", url_for_logs(url)),
            Alert::WebhookConnectionFailure { url, .. } => format!("url={}", url_for_logs(url)),
        };
        warn!("alert alert_type={} account_sid={} {detail}", alert.alert_type(), alert.account_sid());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
