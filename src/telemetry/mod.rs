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
//! ```ignore
//! let alerts = AlertWriter::start(config.alert_settings())?;
//! let metrics = Metrics::new(&config.metrics).unwrap_or_else(|e| {
//!     log::error!("metrics disabled: {e}");
//!     Metrics::disabled()
//! });
//! // … give `alerts.sender()` and `metrics.clone()` to the roles …
//! alerts.shutdown(); // after the roles have been joined: writes what is queued, in bounded time
//! ```
//!
//! # The one-line calls each role makes
//!
//! Registrar (auth workers / REGISTER pipeline, spec 4.1 and 10.1):
//!
//! ```ignore
//! metrics.registration_response_time(cached, status, started.elapsed()); // every final response
//! metrics.hook_response_time(200 /* or 403 */, hook_started.elapsed()); // after the auth verdict
//! alerts.send(Alert::account_device_limit(&account_sid, limit));
//! alerts.send(Alert::webhook_failure(&account_sid, &url, http_status));
//! alerts.send(Alert::webhook_connection_failure(&account_sid, &url));
//! metrics.users_count(count); // the 30 s registered-user gauge
//! ```
//!
//! Heartbeat role (each FS / RTP OPTIONS, spec 5.2):
//!
//! ```ignore
//! metrics.feature_servers(tracked_fs_count);
//! metrics.rtp_servers(tracked_rtp_count);
//! ```
//!
//! Regbot (spec 6.4) and gateway pinger (spec 7):
//!
//! ```ignore
//! alerts.send(Alert::carrier_disabled(&name, &carrier_sid, account_sid, sp_sid));
//! alerts.send(Alert::carrier_deactivated(&name, &carrier_sid, account_sid, sp_sid));
//! alerts.send(Alert::options_ping_failed(&ipv4, port, &protocol, PingFailure::Status(408), account_sid, sp_sid));
//! alerts.send(Alert::options_ping_failed(&ipv4, port, &protocol, PingFailure::Error(&err), account_sid, sp_sid));
//! alerts.send(Alert::options_ping_disabled(&ipv4, &name, &carrier_sid, status, account_sid, sp_sid));
//! ```
//!
//! Unit tests of a role that raises alerts can use [`AlertSender::in_memory`] and read what
//! the role sent from the returned receiver, without any writer thread or InfluxDB.

pub mod alert;
pub mod alerts;
mod influx;
mod line_protocol;
pub mod metrics;

pub use alert::{Alert, AlertType, PingFailure};
pub use alerts::{AlertSender, AlertSettings, AlertStats, AlertWriter};
pub use influx::AlertError;
pub use metrics::{Metrics, MetricsError, MetricsSettings, StatsProtocol};
