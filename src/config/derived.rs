//! Settings of the roles that read variables shared with other roles (the cluster id, the
//! secret, the auth pool's size): built from the parsed [`Config`] here, the one place that
//! maps variables to role settings, so that the daemon only wires.

use super::Config;
use crate::ctl::CtlSettings;
use crate::heartbeat::HeartbeatSettings;
use crate::registrar::RegistrarSettings;
use crate::telemetry::alert_writer::{DEFAULT_FLUSH_INTERVAL, TEST_FLUSH_INTERVAL};
use crate::telemetry::AlertSettings;

impl Config {
    /// InfluxDB alerts: `JAMBONES_TIME_SERIES_HOST`, `SBC_TIME_SERIES_PORT`, and `NODE_ENV=test`
    /// flushing every 7 s as the Node client did.
    pub fn alert_settings(&self) -> AlertSettings {
        AlertSettings {
            flush_interval: if self.node_env_test { TEST_FLUSH_INTERVAL } else { DEFAULT_FLUSH_INTERVAL },
            port: self.time_series_port,
            ..AlertSettings::new(self.time_series_host.clone())
        }
    }

    /// Feature-server and RTP-server heartbeats.
    pub fn heartbeat_settings(&self) -> HeartbeatSettings {
        HeartbeatSettings {
            cluster_id: self.cluster_id.clone(),
            check_interval: self.check_expires_interval,
            expires_interval: self.expires_interval,
            allowed_sources: self.heartbeat_cidrs.clone(),
            max_servers: self.heartbeat_max_servers,
        }
    }

    /// The CLI socket's server.
    pub fn ctl_settings(&self) -> CtlSettings {
        CtlSettings { cluster_id: self.cluster_id.clone(), group: self.ctl_group.clone() }
    }

    /// The registrar's settings.
    pub fn registrar_settings(&self) -> RegistrarSettings {
        RegistrarSettings {
            hosting: self.hosting,
            // Filled per request from the drachtio connection (IncomingRequest::private_sip_address).
            private_sbc_address: None,
            encryption_secret: self.encryption_secret.expose().to_string(),
            legacy_crypto: self.legacy_crypto,
            webhook_timeout: self.webhook_timeout,
            http_user_agent: self.http_user_agent.clone(),
            nonce_ttl: self.nonce_ttl,
            webhook_aor_check: self.webhook_aor_check,
            expires_bounds: self.register_expires,
            account_cache_ttl: self.account_cache_ttl,
            // Every authentication in flight may be a call to the same webhook host.
            webhook_idle_connections: self.auth.max_in_flight,
            // A stable key: nonces survive a restart and are accepted by every SBC of the cluster
            // (they share ENCRYPTION_SECRET), so a retried REGISTER is not challenged again.
            nonce_secret: Some(format!("sbc-sidecar nonce key:{}", self.encryption_secret.expose())),
            ..RegistrarSettings::default()
        }
    }
}
