//! Where the alerts of the regbot and the gateway pinger go (spec 6.4, 7, 10.2). They are
//! built with the [`Alert`] constructors of the telemetry model (no `alert_type`, as in the
//! Node sidecar).
//!
//! [`AlertSink::raise`] is the one place where they are emitted: a warn line, and a point for
//! InfluxDB when the daemon gave us the writer.

use log::warn;

use crate::telemetry::{Alert, AlertSender};

/// Where the alerts of this module go; without a sender they are only logged (tests).
#[derive(Clone, Default)]
pub struct AlertSink(Option<AlertSender>);

impl AlertSink {
    pub fn new(sender: AlertSender) -> AlertSink {
        AlertSink(Some(sender))
    }

    pub fn raise(&self, alert: Alert) {
        warn!("alert: {alert}");
        if let Some(sender) = &self.0 {
            sender.send(alert);
        }
    }
}
