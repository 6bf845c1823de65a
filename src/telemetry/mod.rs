//! Alerts to InfluxDB and metrics to statsd (spec 10.1, 10.2).
//!
//! Both are best effort: a missing InfluxDB or statsd must never slow down or fail a SIP
//! transaction. So nothing here is ever waited for by a caller:
//!
//! * [`AlertSender::send`] is a `try_send` into a bounded channel. A single writer thread
//!   ([`AlertWriter`], thread name `alerts`) batches the points and writes them with the
//!   InfluxDB 1.x HTTP line protocol. When the channel is full or InfluxDB is down, alerts are
//!   dropped and counted; the log says so once per state change and in a summary every minute,
//!   never once per alert.
//! * [`Metrics`] formats a Datadog-style statsd line and hands it to a non-blocking UDP socket
//!   (or, for `STATS_PROTOCOL=tcp`, to a small sender thread). With `ENABLE_METRICS` unset it
//!   is an empty handle whose methods return at once.
//!
//! # Starting and stopping (in `main`)
//!
//! ```
//! use sbc_sidecar::telemetry::{AlertError, AlertSettings, AlertWriter, Metrics, MetricsSettings};
//!
//! // The daemon passes `config.alert_settings()` and `config.metrics`.
//! fn start(alerts: AlertSettings, metrics: &MetricsSettings) -> Result<(AlertWriter, Metrics), AlertError> {
//!     let alerts = AlertWriter::start(alerts)?;
//!     let metrics = Metrics::new(metrics).unwrap_or_else(|e| {
//!         log::warn!("statsd metrics disabled: {e}");
//!         Metrics::disabled()
//!     });
//!     Ok((alerts, metrics))
//! }
//!
//! // … give `alerts.sender()` and `metrics.clone()` to the roles …
//!
//! fn stop(alerts: AlertWriter) {
//!     // After the roles have been joined: writes what is queued, in bounded time.
//!     let stats = alerts.shutdown();
//!     log::info!("alerts: {} dropped", stats.dropped());
//! }
//! ```
//!
//! # The one-line calls each role makes
//!
//! Each role holds a [`Metrics`] clone and an [`AlertSender`] (the registrar sends through
//! [`Registrar::raise_alert`](crate::registrar::Registrar::raise_alert), the regbot and the
//! pinger through [`AlertSink`](crate::regbot::alert_sink::AlertSink), both of which also log the
//! alert).
//!
//! Registrar (auth workers / REGISTER pipeline, spec 4.1 and 10.1). The webhook alerts are
//! built by [`registrar::alerts`](crate::registrar::alerts), never by the [`Alert`]
//! constructors directly: it takes the credentials, query and fragment out of the webhook URL,
//! because alerts are read by people who must not learn the webhook's password or token.
//!
//! ```
//! use std::time::Instant;
//! use sbc_sidecar::registrar::alerts;
//! use sbc_sidecar::telemetry::{Alert, AlertSender, Metrics};
//!
//! let (sender, received) = AlertSender::in_memory(8);
//! let metrics = Metrics::disabled();
//! let started = Instant::now();
//! metrics.registration_response_time(false, 200, started.elapsed()); // every final response
//! metrics.hook_response_time(403, started.elapsed()); // after the webhook's verdict
//! sender.send(Alert::account_device_limit("acct-sid", 10));
//!
//! let hook_url = "https://user:pa55word@hooks.example/register?token=t0ken";
//! sender.send(alerts::webhook_failure("acct-sid", hook_url, 500));
//! sender.send(alerts::webhook_connection_failure("acct-sid", hook_url));
//! let webhook_alert = received.try_iter().nth(1).unwrap();
//! assert_eq!(webhook_alert.message(), "https://hooks.example/register returned 500");
//!
//! metrics.users_count(42); // the daemon's 30 s registered-user gauge
//! ```
//!
//! Heartbeat role (each FS / RTP OPTIONS, spec 5.2):
//!
//! ```
//! # let metrics = sbc_sidecar::telemetry::Metrics::disabled();
//! # let (tracked_fs_count, tracked_rtp_count) = (2, 1);
//! metrics.feature_servers(tracked_fs_count);
//! metrics.rtp_servers(tracked_rtp_count);
//! ```
//!
//! Regbot (spec 6.4) and gateway pinger (spec 7), through the regbot's
//! [`AlertSink`](crate::regbot::alert_sink::AlertSink):
//!
//! ```
//! use sbc_sidecar::regbot::alert_sink::AlertSink;
//! use sbc_sidecar::telemetry::{Alert, AlertSender, PingFailure};
//!
//! let (sender, _received) = AlertSender::in_memory(8);
//! let sink = AlertSink::new(sender);
//! let (name, carrier_sid, account_sid, sp_sid) = ("carrier-a", "carrier-sid", Some("acct-sid"), None);
//! let (ipv4, port, protocol) = ("192.0.2.10", Some(5060), "udp");
//! sink.raise(Alert::carrier_disabled(name, carrier_sid, account_sid, sp_sid));
//! sink.raise(Alert::carrier_deactivated(name, carrier_sid, account_sid, sp_sid));
//! sink.raise(Alert::options_ping_failed(ipv4, port, protocol, PingFailure::Status(408), account_sid, sp_sid));
//! sink.raise(Alert::options_ping_failed(ipv4, port, protocol, PingFailure::Error("timeout"), account_sid, sp_sid));
//! sink.raise(Alert::options_ping_disabled(ipv4, name, carrier_sid, 403, account_sid, sp_sid));
//! ```
//!
//! Unit tests of a role that raises alerts can use [`AlertSender::in_memory`] and read what
//! the role sent from the returned receiver, without any writer thread or InfluxDB.

pub(crate) mod alert;
pub(crate) mod alert_writer;
mod influx;
mod line_protocol;
pub(crate) mod metrics;

pub use alert::{Alert, AlertType, PingFailure};
pub use alert_writer::{AlertSender, AlertSettings, AlertStats, AlertWriter};
pub use influx::AlertError;
pub use metrics::{Metrics, MetricsError, MetricsSettings, StatsProtocol};
