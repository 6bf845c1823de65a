//! The alert model (spec 10.2): one [`Alert`] per point in InfluxDB 1.x, database `alerts`,
//! measurement `alerts`, tags `account_sid`, `alert_type`, `service_provider_sid`, fields
//! `message` (and `detail` when there is one), nanosecond timestamps.
//!
//! Every role builds its alerts here, with the constructor named after the situation; the
//! wording of each message is the Node sidecar's, because the portal shows it to customers.
//! Unlike the Node client, a tag without a value is left out instead of being written as the
//! string `undefined` (spec 14, item 24).

use std::fmt;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::line_protocol::write_point;

const MEASUREMENT: &str = "alerts";

/// The `alert_type` tag values the sidecar writes. Carrier and OPTIONS-ping alerts have none,
/// as in the Node program (the portal lists them without a type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertType {
    AccountDeviceLimit,
    WebhookFailure,
    WebhookConnectionFailure,
}

impl AlertType {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::AccountDeviceLimit => "account-device-limit",
            AlertType::WebhookFailure => "webhook-failure",
            AlertType::WebhookConnectionFailure => "webhook-connection-failure",
        }
    }
}

impl fmt::Display for AlertType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a gateway OPTIONS ping failed (spec 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingFailure<'a> {
    /// A final response other than 200.
    Status(u16),
    /// The request could not be sent; the text of the error.
    Error(&'a str),
}

/// One alert point. Build it with the constructor named after the situation; the wording of
/// every message is the Node sidecar's, because the portal shows it to customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    alert_type: Option<AlertType>,
    account_sid: Option<String>,
    service_provider_sid: Option<String>,
    message: String,
    detail: Option<String>,
    time: SystemTime,
}

impl Alert {
    fn new(alert_type: Option<AlertType>, account_sid: Option<&str>, sp_sid: Option<&str>, message: String) -> Alert {
        Alert {
            alert_type,
            account_sid: non_empty(account_sid),
            service_provider_sid: non_empty(sp_sid),
            message,
            detail: None,
            time: SystemTime::now(),
        }
    }

    /// Hosting mode: the account's device limit is 0 or exceeded (spec 4.1 step 6); `count`
    /// is the limit.
    pub fn account_device_limit(account_sid: &str, count: u64) -> Alert {
        Alert::new(
            Some(AlertType::AccountDeviceLimit),
            Some(account_sid),
            None,
            format!(
                "you have exceeded your account limit of {count} registered devices; please consider upgrading your plan"
            ),
        )
    }

    /// The registration webhook answered with an HTTP status other than 200. `url` goes into
    /// the message as it is: build this alert with
    /// [`registrar::alerts::webhook_failure`](crate::registrar::alerts::webhook_failure), which
    /// takes the credentials, query and fragment out of the URL first.
    pub fn webhook_failure(account_sid: &str, url: &str, status: u16) -> Alert {
        Alert::new(Some(AlertType::WebhookFailure), Some(account_sid), None, format!("{url} returned {status}"))
    }

    /// The registration webhook could not be reached (refused, DNS, TLS, timeout). As for
    /// [`webhook_failure`](Alert::webhook_failure), build it with
    /// [`registrar::alerts::webhook_connection_failure`](crate::registrar::alerts::webhook_connection_failure),
    /// which keeps secrets out of the URL.
    pub fn webhook_connection_failure(account_sid: &str, url: &str) -> Alert {
        Alert::new(
            Some(AlertType::WebhookConnectionFailure),
            Some(account_sid),
            None,
            format!("failed to connect to {url}"),
        )
    }

    /// Too many registration failures: `requires_register` switched off (spec 6.4).
    pub fn carrier_disabled(name: &str, sid: &str, account_sid: Option<&str>, sp_sid: Option<&str>) -> Alert {
        Alert::new(None, account_sid, sp_sid, format!("Disabling Outbound Registration for carrier {name} (sid:{sid})"))
    }

    /// Too many registration failures of a registration trunk: carrier deactivated (spec 6.4).
    pub fn carrier_deactivated(name: &str, sid: &str, account_sid: Option<&str>, sp_sid: Option<&str>) -> Alert {
        Alert::new(
            None,
            account_sid,
            sp_sid,
            format!("Deactivating carrier {name} (sid:{sid}) due to registration errors"),
        )
    }

    /// A gateway OPTIONS ping failed (spec 7). `port` is shown only when set and not 0, and
    /// `protocol` is the gateway's protocol column as it is.
    pub fn options_ping_failed(
        ipv4: &str,
        port: Option<u16>,
        protocol: &str,
        failure: PingFailure<'_>,
        account_sid: Option<&str>,
        sp_sid: Option<&str>,
    ) -> Alert {
        let port = port.filter(|p| *p != 0).map(|p| format!(":{p}")).unwrap_or_default();
        let outcome = match failure {
            PingFailure::Status(status) => format!("received: {status}"),
            PingFailure::Error(error) => format!("error: {error}"),
        };
        Alert::new(
            None,
            account_sid,
            sp_sid,
            format!("Options ping {ipv4}{port};transport={protocol} unsuccessfully, {outcome}"),
        )
    }

    /// The answer to a gateway OPTIONS ping is in `OPTIONS_RESPONSE_REMOVE`: pings switched
    /// off for that gateway (spec 7).
    pub fn options_ping_disabled(
        ipv4: &str,
        carrier_name: &str,
        carrier_sid: &str,
        status: u16,
        account_sid: Option<&str>,
        sp_sid: Option<&str>,
    ) -> Alert {
        Alert::new(
            None,
            account_sid,
            sp_sid,
            format!("Disabling Options ping for {ipv4} in carrier {carrier_name}:{carrier_sid} due to {status}"),
        )
    }

    /// Not in the Node sidecar: a source failed to authenticate too often and is refused for
    /// a while. No `alert_type` and no account (the source may have tried any realm).
    pub fn registration_source_banned(ip: IpAddr, failures: u32, window_secs: u64, ban_secs: u64) -> Alert {
        Alert::new(
            None,
            None,
            None,
            format!(
                "registrations from {ip} refused for {ban_secs} s after {failures} failed authentications within {window_secs} s"
            ),
        )
    }

    /// An alert without `alert_type`, as the regbot and gateway-pinger alerts are (spec 10.2).
    pub fn without_type(account_sid: Option<&str>, sp_sid: Option<&str>, message: String) -> Alert {
        Alert::new(None, account_sid, sp_sid, message)
    }

    /// Adds the optional `detail` field (the alerts schema has it; the sidecar's alerts of
    /// spec 10.2 do not use it).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Alert {
        self.detail = Some(detail.into()).filter(|d| !d.is_empty());
        self
    }

    /// Replaces the timestamp (taken when the alert was built).
    pub fn with_time(mut self, time: SystemTime) -> Alert {
        self.time = time;
        self
    }

    pub fn alert_type(&self) -> Option<AlertType> {
        self.alert_type
    }

    pub fn account_sid(&self) -> Option<&str> {
        self.account_sid.as_deref()
    }

    pub fn service_provider_sid(&self) -> Option<&str> {
        self.service_provider_sid.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub fn time(&self) -> SystemTime {
        self.time
    }

    pub(super) fn unix_nanos(&self) -> u128 {
        self.time.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    }

    /// One line of line protocol, tags in key order.
    pub(super) fn write_line(&self, out: &mut String, timestamp_ns: u128) {
        let tags = [
            ("account_sid", self.account_sid.as_deref().unwrap_or("")),
            ("alert_type", self.alert_type.map(AlertType::as_str).unwrap_or("")),
            ("service_provider_sid", self.service_provider_sid.as_deref().unwrap_or("")),
        ];
        match &self.detail {
            Some(detail) => {
                write_point(out, MEASUREMENT, &tags, &[("message", &self.message), ("detail", detail)], timestamp_ns)
            }
            None => write_point(out, MEASUREMENT, &tags, &[("message", &self.message)], timestamp_ns),
        }
    }
}

/// The warn line a role logs when it raises the alert: the message, then the tags (`-` when
/// absent).
impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} alert_type={} account_sid={} service_provider_sid={}",
            self.message,
            self.alert_type.map(AlertType::as_str).unwrap_or("-"),
            self.account_sid.as_deref().unwrap_or("-"),
            self.service_provider_sid.as_deref().unwrap_or("-")
        )
    }
}

/// A NULL column and an empty string both mean "no tag".
fn non_empty(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(alert: &Alert) -> String {
        let mut out = String::new();
        alert.write_line(&mut out, 42);
        out
    }

    #[test]
    fn messages_and_types_are_the_node_sidecars() {
        let a = Alert::account_device_limit("acc", 5);
        assert_eq!(a.alert_type(), Some(AlertType::AccountDeviceLimit));
        assert_eq!(
            a.message(),
            "you have exceeded your account limit of 5 registered devices; please consider upgrading your plan"
        );
        assert_eq!(a.account_sid(), Some("acc"));

        let w = Alert::webhook_failure("acc", "https://h/reg", 404);
        assert_eq!(
            (w.alert_type().map(AlertType::as_str), w.message()),
            (Some("webhook-failure"), "https://h/reg returned 404")
        );
        let c = Alert::webhook_connection_failure("acc", "https://h/reg");
        assert_eq!(
            (c.alert_type().map(AlertType::as_str), c.message()),
            (Some("webhook-connection-failure"), "failed to connect to https://h/reg")
        );

        let d = Alert::carrier_disabled("Twilio", "c1", Some("acc"), Some("sp"));
        assert_eq!(
            (d.alert_type(), d.message()),
            (None, "Disabling Outbound Registration for carrier Twilio (sid:c1)")
        );
        assert_eq!((d.account_sid(), d.service_provider_sid()), (Some("acc"), Some("sp")));
        let x = Alert::carrier_deactivated("Reg", "c2", None, Some("sp"));
        assert_eq!(x.message(), "Deactivating carrier Reg (sid:c2) due to registration errors");

        let p = Alert::options_ping_failed("1.2.3.4", Some(5061), "tls", PingFailure::Status(503), None, None);
        assert_eq!(p.message(), "Options ping 1.2.3.4:5061;transport=tls unsuccessfully, received: 503");
        let p = Alert::options_ping_failed("1.2.3.4", None, "udp", PingFailure::Error("no route"), None, None);
        assert_eq!(p.message(), "Options ping 1.2.3.4;transport=udp unsuccessfully, error: no route");
        let p = Alert::options_ping_failed("1.2.3.4", Some(0), "udp", PingFailure::Status(408), None, None);
        assert_eq!(p.message(), "Options ping 1.2.3.4;transport=udp unsuccessfully, received: 408");

        let o = Alert::options_ping_disabled("1.2.3.4", "Carrier A", "c3", 403, Some("acc"), None);
        assert_eq!(o.message(), "Disabling Options ping for 1.2.3.4 in carrier Carrier A:c3 due to 403");
        assert_eq!(o.alert_type(), None);
    }

    #[test]
    fn a_ban_names_the_source_and_the_numbers_without_type_or_account() {
        let a = Alert::registration_source_banned("127.0.0.9".parse().unwrap(), 10, 60, 300);
        assert_eq!(
            a.message(),
            "registrations from 127.0.0.9 refused for 300 s after 10 failed authentications within 60 s"
        );
        assert_eq!((a.alert_type(), a.account_sid(), a.service_provider_sid()), (None, None, None));
    }

    #[test]
    fn the_log_line_is_the_message_then_the_tags() {
        let a = Alert::webhook_failure("acc", "https://h/reg", 404);
        assert_eq!(
            a.to_string(),
            "https://h/reg returned 404 alert_type=webhook-failure account_sid=acc service_provider_sid=-"
        );
        let d = Alert::carrier_disabled("C", "c1", None, Some("sp"));
        assert_eq!(
            d.to_string(),
            "Disabling Outbound Registration for carrier C (sid:c1) alert_type=- account_sid=- service_provider_sid=sp"
        );
    }

    #[test]
    fn missing_or_empty_sids_are_no_tags() {
        let a = Alert::carrier_disabled("C", "c1", Some(""), None);
        assert_eq!((a.account_sid(), a.service_provider_sid()), (None, None));
        assert_eq!(line(&a), "alerts message=\"Disabling Outbound Registration for carrier C (sid:c1)\" 42\n");
    }

    #[test]
    fn the_point_has_the_tags_in_key_order_and_the_detail_when_given() {
        let a = Alert::webhook_failure("acc 1", "http://h/x", 500).with_detail("boom");
        assert_eq!(
            line(&a),
            "alerts,account_sid=acc\\ 1,alert_type=webhook-failure message=\"http://h/x returned 500\",detail=\"boom\" 42\n"
        );
        let p = Alert::options_ping_failed("1.2.3.4", None, "udp", PingFailure::Status(503), Some("a"), Some("s"));
        assert_eq!(
            line(&p),
            "alerts,account_sid=a,service_provider_sid=s message=\"Options ping 1.2.3.4;transport=udp unsuccessfully, received: 503\" 42\n"
        );
    }
}
