//! The registrar: answers REGISTER requests from SIP devices and WebRTC clients (spec 4).
//!
//! A REGISTER goes through the steps of spec 4.1 in order — Request-URI check, Contact and
//! expires, address of record, cache window, account lookup, hosting device limits, digest
//! challenge, authentication by the account's webhook or the `clients` table — and ends with
//! the binding written to (or removed from) Redis. Every request gets exactly one final
//! response.
//!
//! Where we deliberately differ from the Node sidecar (spec 14): nonces are signed,
//! time-limited, unique per challenge and verified (`nonce.rs`), and each answer to one is
//! accepted once cluster-wide (`replay.rs`); an Authorization must answer our challenge as
//! offered and prove the identity of the address being registered (`credentials.rs`);
//! sources that keep failing to authenticate are refused for a while (`bans.rs`); webhook
//! calls have a timeout; a malformed
//! Authorization is `400`; a binding that cannot be stored is `500`, an unreachable MySQL or
//! Redis is `503` with `Retry-After`, instead of a false `200`; device limits are exactly
//! `limit` devices, counted without a keyspace scan per REGISTER (`device_count.rs`); TLS
//! clients are stored with `protocol: "tls"`.
//!
//! Files, one idea each: `pipeline` (the steps), `request` (what the message says),
//! `credentials` (what an Authorization must say), `accounts` (MySQL reads), `webhook` +
//! `hook_transport` (the HTTP hook), `clients` + `crypto` (the `clients` table), `nonce`,
//! `replay`, `bans`, `bindings` (Redis), `device_count`, `grant`, `reply`, `alerts`, `health`,
//! `account_cache` (accounts by realm), `account_state` + `lru` (what is kept per account:
//! webhook breaker and health, device limit, alerts — one bounded table), `hook_breaker`,
//! `auth_pool` (the triage thread and the workers), `fair_pool` (the elastic, fair worker
//! pool), `settings`.

mod account_cache;
pub use account_cache::NEW_REALM_LOOKUPS_PER_SEC;
mod account_state;
pub(crate) mod accounts;
pub mod alerts;
pub(crate) mod auth_pool;
mod authorization;

pub(crate) mod bindings;
pub(crate) mod clients;
mod complete;
pub mod credentials;
pub(crate) mod crypto;
pub(crate) mod device_count;
pub mod fair_pool;
pub mod grant;
mod health;
pub mod hook_breaker;
pub(crate) mod hook_resolver;
pub mod hook_transport;
mod lru;
pub mod nonce;
pub(crate) mod outcomes;
mod pipeline;
pub mod replay;
pub(crate) mod reply;
pub(crate) mod report;
pub mod request;
pub(crate) mod settings;
pub mod webhook;

use std::sync::Arc;

pub use crate::bans::{BanSettings, Bans};
pub use auth_pool::AuthPool;
pub use pipeline::Checked;
pub use settings::RegistrarSettings;
pub use webhook::{HookError, HookRequest, HookResponse, HookTransport};

use account_cache::AccountCache;
use account_state::AccountStates;
use alerts::DEVICE_LIMIT_ALERT_INTERVAL;
use crypto::PasswordKey;
use device_count::DeviceCounter;
use health::StoreHealth;
use hook_transport::UreqTransport;
use nonce::NonceSigner;

use crate::shared::Shared;
use crate::store::mysql::MysqlPool;
use crate::store::redis::{run, RedisPool};
use crate::store::StoreError;
use crate::telemetry::{AlertSender, Metrics};

/// The REGISTER pipeline with everything it needs. Shared by the triage thread and the auth
/// workers behind an `Arc`; all methods take `&self`.
pub struct Registrar {
    settings: RegistrarSettings,
    mysql: MysqlPool,
    redis: RedisPool,
    nonces: NonceSigner,
    password_key: PasswordKey,
    hook: Box<dyn HookTransport>,
    devices: DeviceCounter,
    accounts: AccountCache,
    /// Per account: webhook breaker and health, device limit, device-limit alerts.
    account_states: AccountStates,
    /// Sources refused after repeated failed authentications; shared with the CLI server.
    bans: Arc<Bans>,
    mysql_health: StoreHealth,
    redis_health: StoreHealth,
    outcomes: outcomes::RegisterOutcomes,
    /// Where alerts go (InfluxDB).
    alerts: AlertSender,
    metrics: Metrics,
}

impl Registrar {
    /// A registrar calling webhooks with the real HTTP client (ureq, `webhook_timeout`,
    /// `http_user_agent`).
    pub fn new(settings: RegistrarSettings, shared: &Shared) -> Registrar {
        let hook = Box::new(UreqTransport::new(
            settings.webhook_timeout,
            settings.http_user_agent.as_deref(),
            settings.webhook_idle_connections,
        ));
        Registrar::with_hook_transport(settings, shared, hook)
    }

    /// A registrar with another webhook transport (tests feed canned answers).
    pub fn with_hook_transport(
        settings: RegistrarSettings,
        shared: &Shared,
        hook: Box<dyn HookTransport>,
    ) -> Registrar {
        let nonces = match &settings.nonce_secret {
            Some(secret) => NonceSigner::from_secret(secret, settings.nonce_ttl),
            None => NonceSigner::random(settings.nonce_ttl),
        };
        Registrar {
            password_key: PasswordKey::derive(&settings.encryption_secret, settings.legacy_crypto),
            devices: DeviceCounter::new(settings.device_count_max_age),
            accounts: AccountCache::new(settings.account_cache_ttl),
            account_states: AccountStates::new(
                settings.webhook_breaker,
                settings.account_cache_ttl,
                DEVICE_LIMIT_ALERT_INTERVAL,
            ),
            bans: Arc::clone(&shared.bans),
            nonces,
            settings,
            mysql: shared.mysql.clone(),
            redis: shared.redis.clone(),
            hook,
            mysql_health: StoreHealth::new("mysql"),
            redis_health: StoreHealth::new("redis"),
            outcomes: outcomes::RegisterOutcomes::new(),
            alerts: shared.alerts.clone(),
            metrics: shared.metrics.clone(),
        }
    }

    pub fn bans(&self) -> &Arc<Bans> {
        &self.bans
    }

    pub fn settings(&self) -> &RegistrarSettings {
        &self.settings
    }

    /// `ZREMRANGEBYSCORE active-user 0 <now>`: the daemon calls this every 10 minutes, as the
    /// Node registrar did, so expired members do not accumulate. Returns how many went.
    pub fn prune_expired(&self) -> Result<u64, StoreError> {
        run(&self.redis, |conn| bindings::prune(conn, unix_millis()))
    }

    /// The `sbc.users.count` gauge as the Node registrar computed it: distinct user parts of
    /// the live members of `active-user` (the same user name in two realms counts once).
    pub fn registered_users(&self) -> Result<u64, StoreError> {
        run(&self.redis, |conn| bindings::registered_users(conn, unix_millis()))
    }
}

pub(crate) use crate::clock::{unix_millis, unix_secs};
