//! What the registrar needs from the configuration, as plain fields.
//!
//! The daemon maps its `Config` into this struct; the registrar never reads the environment
//! itself, so every behaviour can be tested with a literal value.

use std::fmt;
use std::time::Duration;

use super::hook_breaker::BreakerSettings;

/// Settings of the REGISTER pipeline. [`Default`] gives the documented defaults with an empty
/// encryption secret, which the daemon must fill in (`ENCRYPTION_SECRET` or `JWT_SECRET`).
#[derive(Clone)]
pub struct RegistrarSettings {
    /// `JAMBONES_HOSTING`: unknown realms get `403` and the device limits of each account's
    /// subscription are enforced.
    pub hosting: bool,
    /// Stored as `privateSbcAddress` with every registration: `ip:port` of drachtio's private
    /// TCP contact (spec section 2), computed by the daemon; `None` leaves the field out.
    pub private_sbc_address: Option<String>,
    /// `ENCRYPTION_SECRET`, or `JWT_SECRET` when that is unset: key material of the encrypted
    /// `clients.password` column.
    pub encryption_secret: String,
    /// `LEGACY_CRYPTO`: `clients.password` is AES-256-CTR instead of AES-256-CBC.
    pub legacy_crypto: bool,
    /// Whole-exchange timeout of a registration webhook call (the Node sidecar had none, so a
    /// hanging webhook left the REGISTER unanswered). Default 3 s.
    pub webhook_timeout: Duration,
    /// `JAMBONES_HTTP_USER_AGENT_HEADER`: `user-agent` of webhook requests; `None` keeps the
    /// HTTP client's own.
    pub http_user_agent: Option<String>,
    /// How long a challenge nonce may be answered; an older one gets `401` with `stale=true`.
    /// Default 300 s.
    pub nonce_ttl: Duration,
    /// Key material for signing nonces. `None`: a random key per process (nonces then do not
    /// survive a restart and are not accepted by other SBCs of the cluster). With the same
    /// secret on every SBC, a challenge from one SBC can be answered through another.
    pub nonce_secret: Option<String>,
    /// Hosting mode: the per-realm device counts are read from `active-user` at most this
    /// often (all auth workers share the snapshot). Default 3 s.
    pub device_count_max_age: Duration,
    /// `Retry-After` (seconds) of the `503` sent when MySQL or Redis cannot be reached.
    /// Default 5.
    pub retry_after_secs: u32,
    /// How long an account lookup by realm is reused (`SBC_ACCOUNT_CACHE_MS`); zero disables
    /// the cache. Default 5 s.
    pub account_cache_ttl: Duration,
    /// Idle connections kept open to each webhook host: one per authentication that may be in
    /// flight, so workers calling the same webhook at once all reuse a connection (ureq keeps
    /// 3 by default, and the rest were closed and opened again — a TCP and TLS handshake — on
    /// every call).
    pub webhook_idle_connections: usize,
    /// When an account's webhook has timed out too often in a row, its REGISTERs get `503`
    /// without calling it for a while (see `hook_breaker`). Default: 3 timeouts, 10 s.
    pub webhook_breaker: BreakerSettings,
    /// `SBC_WEBHOOK_AOR_CHECK`: the Authorization `username`/`realm` of a REGISTER for an
    /// account with a registration webhook must be the To user/host, as for `clients`-table
    /// accounts (always). Off for webhooks that map users to addresses of record themselves.
    /// Default on.
    pub webhook_aor_check: bool,
    /// `SBC_REGISTER_MIN_EXPIRES` / `SBC_REGISTER_MAX_EXPIRES` (60 / 3600 s).
    pub expires_bounds: super::request::ExpiresBounds,
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        RegistrarSettings {
            hosting: false,
            private_sbc_address: None,
            encryption_secret: String::new(),
            legacy_crypto: false,
            webhook_timeout: Duration::from_secs(3),
            http_user_agent: None,
            nonce_ttl: Duration::from_secs(300),
            nonce_secret: None,
            device_count_max_age: Duration::from_secs(3),
            retry_after_secs: 5,
            account_cache_ttl: Duration::from_secs(5),
            webhook_idle_connections: 8,
            webhook_breaker: BreakerSettings::default(),
            webhook_aor_check: true,
            expires_bounds: Default::default(),
        }
    }
}

/// Secrets are shown as `<redacted>` so the settings can be logged at startup.
impl fmt::Debug for RegistrarSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<unset>" };
        f.debug_struct("RegistrarSettings")
            .field("hosting", &self.hosting)
            .field("private_sbc_address", &self.private_sbc_address)
            .field("encryption_secret", &redacted(!self.encryption_secret.is_empty()))
            .field("legacy_crypto", &self.legacy_crypto)
            .field("webhook_timeout", &self.webhook_timeout)
            .field("http_user_agent", &self.http_user_agent)
            .field("nonce_ttl", &self.nonce_ttl)
            .field("nonce_secret", &redacted(self.nonce_secret.is_some()))
            .field("device_count_max_age", &self.device_count_max_age)
            .field("retry_after_secs", &self.retry_after_secs)
            .field("account_cache_ttl", &self.account_cache_ttl)
            .field("webhook_idle_connections", &self.webhook_idle_connections)
            .field("webhook_breaker", &self.webhook_breaker)
            .field("webhook_aor_check", &self.webhook_aor_check)
            .field("expires_bounds", &self.expires_bounds)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let s = RegistrarSettings {
            encryption_secret: "topsecret".into(),
            nonce_secret: Some("alsosecret".into()),
            ..RegistrarSettings::default()
        };
        let text = format!("{s:?}");
        assert!(!text.contains("topsecret") && !text.contains("alsosecret"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
