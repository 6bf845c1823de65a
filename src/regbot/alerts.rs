//! The alerts of the regbot and the gateway pinger (spec 6.4, 7, 10.2).
//!
//! Sending them to InfluxDB is later work (the telemetry role). Until then [`raise_alert`] is
//! the one place where they are emitted, and it only logs them at warn level; the messages
//! and tags are already the ones the alerts measurement will carry (no `alert_type`).

use log::warn;

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

/// Emits an alert. For now: a warn-level log line (InfluxDB delivery is not wired yet).
pub fn raise_alert(alert: &Alert) {
    warn!(
        "alert (not yet sent to InfluxDB): {} account_sid={} service_provider_sid={}",
        alert.message,
        alert.account_sid.as_deref().unwrap_or("-"),
        alert.service_provider_sid.as_deref().unwrap_or("-")
    );
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
