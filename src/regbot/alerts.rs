//! The alerts of the regbot and the gateway pinger (spec 6.4, 7, 10.2).
//!
//! [`AlertSink::raise`] is the one place where they are emitted: a warn line, and a point for
//! InfluxDB (no `alert_type`, as in the Node sidecar) when the daemon gave us the writer.

use log::warn;

use crate::telemetry::{self, AlertSender};

/// Where the alerts of this module go; without a sender they are only logged (tests).
#[derive(Clone, Default)]
pub struct AlertSink(Option<AlertSender>);

impl AlertSink {
    pub fn new(sender: AlertSender) -> AlertSink {
        AlertSink(Some(sender))
    }

    pub fn raise(&self, alert: &Alert) {
        warn!(
            "alert: {} account_sid={} service_provider_sid={}",
            alert.message,
            alert.account_sid.as_deref().unwrap_or("-"),
            alert.service_provider_sid.as_deref().unwrap_or("-")
        );
        if let Some(sender) = &self.0 {
            sender.send(telemetry::Alert::without_type(
                alert.account_sid.as_deref(),
                alert.service_provider_sid.as_deref(),
                alert.message.clone(),
            ));
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub message: String,
    pub account_sid: Option<String>,
    pub service_provider_sid: Option<String>,
}

impl Alert {
    /// `Disabling Outbound Registration for carrier <name> (sid:<sid>)`
    pub fn registration_disabled(name: &str, voip_carrier_sid: &str) -> String {
        format!("Disabling Outbound Registration for carrier {name} (sid:{voip_carrier_sid})")
    }

    /// `Deactivating carrier <name> (sid:<sid>) due to registration errors`
    pub fn carrier_deactivated(name: &str, voip_carrier_sid: &str) -> String {
        format!("Deactivating carrier {name} (sid:{voip_carrier_sid}) due to registration errors")
    }

    /// `Options ping <ipv4>[:<port>];transport=<protocol> unsuccessfully, received: <status>`
    /// or `…, error: <text>`.
    pub fn options_ping_failed(ipv4: &str, port: Option<u16>, protocol: &str, what: &str) -> String {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("Options ping {ipv4}{port};transport={protocol} unsuccessfully, {what}")
    }

    /// `Disabling Options ping for <ipv4> in carrier <name>:<sid> due to <status>`
    pub fn options_ping_disabled(ipv4: &str, carrier_name: &str, voip_carrier_sid: &str, status: u16) -> String {
        format!("Disabling Options ping for {ipv4} in carrier {carrier_name}:{voip_carrier_sid} due to {status}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_messages_are_the_node_texts() {
        assert_eq!(
            Alert::registration_disabled("Acme", "c1"),
            "Disabling Outbound Registration for carrier Acme (sid:c1)"
        );
        assert_eq!(
            Alert::carrier_deactivated("Acme", "c1"),
            "Deactivating carrier Acme (sid:c1) due to registration errors"
        );
        assert_eq!(
            Alert::options_ping_failed("1.2.3.4", Some(5080), "udp", "received: 503"),
            "Options ping 1.2.3.4:5080;transport=udp unsuccessfully, received: 503"
        );
        assert_eq!(
            Alert::options_ping_failed("gw.example", None, "tls/srtp", "error: not connected to drachtio"),
            "Options ping gw.example;transport=tls/srtp unsuccessfully, error: not connected to drachtio"
        );
        assert_eq!(
            Alert::options_ping_disabled("1.2.3.4", "Acme", "c1", 404),
            "Disabling Options ping for 1.2.3.4 in carrier Acme:c1 due to 404"
        );
    }
}
