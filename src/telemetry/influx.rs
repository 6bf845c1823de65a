//! The InfluxDB 1.x HTTP API calls the alerts writer makes: `CREATE DATABASE` and line
//! protocol writes, each with its own timeout, and what can go wrong with them.

use std::fmt;
use std::time::Duration;

use ureq::Agent;

use super::alert_writer::AlertSettings;

/// Error bodies are read for the log line only.
const MAX_ERROR_BODY: u64 = 4096;

/// Why alerts could not be written (or the writer not started).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlertError {
    /// No HTTP answer: connection refused, DNS failure, timeout, connection reset.
    Unreachable(String),
    /// InfluxDB answered with an unexpected HTTP status; `body` is the start of its answer.
    Status { status: u16, body: String },
    /// `CREATE DATABASE` was answered 200 with an error in the JSON.
    Query(String),
    /// The writer thread could not be started.
    Spawn(String),
}

impl AlertError {
    /// InfluxDB refused the points themselves: sending them again will not help. Auth errors,
    /// a missing database and overload are states that may pass, so they are retried.
    pub(super) fn is_rejection(&self) -> bool {
        matches!(self, AlertError::Status { status, .. }
            if (400..500).contains(status) && ![401, 403, 404, 408, 429].contains(status))
    }
}

impl fmt::Display for AlertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertError::Unreachable(e) => write!(f, "InfluxDB unreachable: {e}"),
            AlertError::Status { status, body } => write!(f, "InfluxDB answered HTTP {status}: {}", body.trim()),
            AlertError::Query(e) => write!(f, "InfluxDB query failed: {e}"),
            AlertError::Spawn(e) => write!(f, "cannot start the alerts thread: {e}"),
        }
    }
}

impl std::error::Error for AlertError {}

/// The InfluxDB HTTP API calls the writer makes.
pub(super) struct Influx {
    agent: Agent,
    write_url: String,
    query_url: String,
    database: String,
}

impl Influx {
    pub(super) fn new(settings: &AlertSettings) -> Influx {
        // Plain http as in the Node program. Statuses are answers here, not errors; redirects
        // are not followed (an InfluxDB does not redirect writes).
        let config = Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("sbc-sidecar/", env!("CARGO_PKG_VERSION")))
            .build();
        let base = settings.base_url();
        Influx {
            agent: Agent::new_with_config(config),
            write_url: format!("{base}/write"),
            query_url: format!("{base}/query"),
            database: settings.database.clone(),
        }
    }

    /// `CREATE DATABASE` is a no-op when the database exists, so no need to list them first.
    pub(super) fn create_database(&self, timeout: Duration) -> Result<(), AlertError> {
        let statement = format!("CREATE DATABASE \"{}\"", self.database.replace('\\', "\\\\").replace('"', "\\\""));
        let mut response = self
            .agent
            .post(&self.query_url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send_form([("q", statement.as_str())])
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(MAX_ERROR_BODY).read_to_string().unwrap_or_default();
        if status != 200 {
            return Err(AlertError::Status { status, body });
        }
        // A failed statement still gets 200, with {"results":[{"error":"…"}]}.
        let error = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["results"][0]["error"].as_str().map(str::to_string));
        match error {
            Some(error) => Err(AlertError::Query(error)),
            None => Ok(()),
        }
    }

    pub(super) fn write(&self, lines: &str, timeout: Duration) -> Result<(), AlertError> {
        let mut response = self
            .agent
            .post(&self.write_url)
            .query("db", &self.database)
            .query("precision", "ns")
            .header("Content-Type", "text/plain; charset=utf-8")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(lines)
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = response.body_mut().with_config().limit(MAX_ERROR_BODY).read_to_string().unwrap_or_default();
        Err(AlertError::Status { status, body })
    }
}

fn unreachable(e: ureq::Error) -> AlertError {
    AlertError::Unreachable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_4xx_other_than_auth_missing_database_and_overload() {
        let status = |status| AlertError::Status { status, body: String::new() };
        assert!(status(400).is_rejection());
        assert!(status(413).is_rejection());
        for retried in [401, 403, 404, 408, 429, 500, 503] {
            assert!(!status(retried).is_rejection(), "{retried}");
        }
        assert!(!AlertError::Unreachable("refused".into()).is_rejection());
    }
}
