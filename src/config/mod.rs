//! Environment + command line → a validated [`Config`].
//!
//! [`parse`] is a pure function of an environment map and the arguments, so every default
//! and every error message is unit-tested without touching the process environment.
//!
//! The environment variables are the Node sidecar's (spec section 3): same names, same
//! defaults, same units, with `""` treated as unset because the Node program reads
//! `process.env.X || default`. "Truthy" means any non-empty string (`"0"` and `"false"`
//! included), as in Node. Our own additions are listed in [`NEW_VARIABLES`].
//!
//! Where the Node program accepted nonsense silently (a port of `abc`, a negative
//! interval) we refuse to start with one line naming the variable and what was expected.
//! Configurations the Node program accepted but half-ignored (three of the four
//! `JAMBONES_MYSQL_WRITE_*` variables) still start, with a line in [`Config::warnings`].
//! So do the helper-library variables listed in [`IGNORED_VARIABLES`].
//!
//! Configuration flows one way: each role owns its settings type and every type those
//! settings need ([`ClientConfig`], [`RegbotSettings`], [`MetricsSettings`], [`BanSettings`],
//! [`MysqlSettings`], [`RedisSettings`], the TLS files, [`RegbotMode`]); this module depends on
//! the roles and fills their settings, and no role imports it (tests/module_graph.rs checks).
//! Settings built from variables several roles share (the registrar's, the heartbeat's, the
//! CLI server's, the alerts') come from `derived.rs`. TLS files are named here and read by the
//! pools; the daemon checks them at startup.
//!
//! `cli.rs` reads the command line, `env.rs` the environment; `stores.rs` and `roles.rs`
//! turn groups of variables into settings; `derived.rs` builds the settings of the rest.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::bans::BanSettings;
use crate::drachtio::ClientConfig;
use crate::logging::{LogFacility, LogTarget};
use crate::net::Cidr;
use crate::regbot::RegbotSettings;
use crate::registrar::fair_pool::PoolLimits;
use crate::registrar::request::ExpiresBounds;
use crate::store::mysql::MysqlSettings;
use crate::store::redis::RedisSettings;
use crate::telemetry::MetricsSettings;

mod cli;
mod derived;
mod env;
mod roles;
mod stores;
#[cfg(test)]
mod tests;

pub use cli::{usage, version};

/// The program name used in usage and version texts.
pub const PROGRAM: &str = "sbc-sidecar";

pub use crate::regbot::RegbotMode;
pub use crate::secret::Secret;
pub use crate::store::tls::{MysqlTls, MysqlTlsFiles, RedisTls};
pub use crate::sysexits::{EX_CONFIG, EX_USAGE};
pub use crate::telemetry::StatsProtocol;

/// The environment file of the Debian package, named in error messages.
pub const DEFAULTS_FILE: &str = "/etc/default/sbc-sidecar";
/// The `ENCRYPTION_SECRET` the packaged defaults file ships: refused at startup.
pub const PLACEHOLDER_SECRET: &str = "change-me";
/// A shorter `ENCRYPTION_SECRET` is accepted (it must match the API server's) with a warning.
pub const MIN_SECRET_LEN: usize = 16;

pub const DEFAULT_SOCKET_PATH: &str = "/tmp/sbc-sip-sidecar.sock";
/// Exactly the Node default, narrow `/24` and `/16` included (spec 14, item 22).
pub const DEFAULT_NETWORK_CIDR: &str = "192.168.0.0/24,172.16.0.0/16,10.0.0.0/8";
pub use crate::heartbeat::DEFAULT_HEARTBEAT_CIDRS;
/// `Jambonz ` + the version of the Node package we replace: carriers may match on it.
pub const DEFAULT_REGBOT_USER_AGENT: &str = "Jambonz 0.9.6";
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Environment variables this program adds to the Node program's set:
/// `(name, default, meaning)`. README and the man page are checked against this table, and a
/// unit test checks that every default here is the default [`parse`] applies.
pub const NEW_VARIABLES: &[(&str, &str, &str)] = &[
    ("SBC_WEBHOOK_TIMEOUT_MS", "3000", "timeout of one registration-webhook HTTP request, connect to last byte (ms)"),
    (
        "SBC_SHUTDOWN_GRACE_MS",
        "5000",
        "after SIGTERM, how long (beyond SBC_WEBHOOK_TIMEOUT_MS) roles may finish what they hold; \
         whatever is left is then answered 503 and the daemon exits 0 (ms)",
    ),
    (
        "SBC_AUTH_WORKERS",
        "8",
        "threads authenticating REGISTERs (webhook or clients table) kept even when idle; more are started \
         while authentications wait, up to SBC_AUTH_MAX_INFLIGHT",
    ),
    (
        "SBC_AUTH_MAX_INFLIGHT",
        "512",
        "most authentications (webhook calls, clients-table lookups) in progress at once, one thread each; \
         threads idle for 10 s end",
    ),
    (
        "SBC_AUTH_ACCOUNT_SHARE",
        "25",
        "percent of SBC_AUTH_MAX_INFLIGHT and of SBC_AUTH_QUEUE one account may hold while others need them; \
         beyond it an account only borrows idle threads and never the last share",
    ),
    (
        "SBC_AUTH_QUEUE",
        "1024",
        "REGISTERs waiting for an authentication; when full, or when one account's part is, new ones are answered 503",
    ),
    ("SBC_REDIS_TIMEOUT_MS", "1000", "Redis connect and pool checkout timeout (ms)"),
    ("SBC_MYSQL_TIMEOUT_MS", "1000", "MySQL connect and pool checkout timeout (ms)"),
    (
        "SBC_REDIS_SENTINEL_MASTER_TLS",
        "0",
        "1: with JAMBONES_REDIS_SENTINELS and ENABLE_JAMBONES_REDIS_TLS, reach the master over TLS \
         (the Node sidecar, and 0, use plain TCP)",
    ),
    (
        "SBC_DRACHTIO_PING_INTERVAL_MS",
        "15000",
        "interval between keep-alive pings on the drachtio control connection (ms)",
    ),
    (
        "SBC_DRACHTIO_PONG_TIMEOUT_MS",
        "10000",
        "a ping unanswered this long drops and re-opens the drachtio connection (ms)",
    ),
    ("SBC_DRACHTIO_BACKOFF_MIN_MS", "150", "first delay before reconnecting to drachtio (ms); grows ×1.7 per attempt"),
    ("SBC_DRACHTIO_BACKOFF_MAX_MS", "30000", "longest delay between drachtio reconnect attempts (ms)"),
    (
        "SBC_ACCOUNT_CACHE_MS",
        "5000",
        "how long an account looked up by realm is reused by the registrar; 0 disables (ms)",
    ),
    ("SBC_NONCE_TTL_S", "300", "lifetime of a digest nonce; older ones are answered 401 with stale=true (s)"),
    (
        "SBC_WEBHOOK_AOR_CHECK",
        "1",
        "1: the Authorization username/realm must be the To user/host for webhook accounts too; \
         0 for webhooks that map users to addresses of record themselves",
    ),
    (
        "SBC_AUTH_BAN_FAILURES",
        "10",
        "failed authentications from one source IP within SBC_AUTH_BAN_WINDOW_S that ban it; 0 disables the ban",
    ),
    ("SBC_AUTH_BAN_WINDOW_S", "60", "how long failures from one source are counted from its first one (s)"),
    ("SBC_AUTH_BAN_TIME_S", "300", "how long a banned source's REGISTERs are answered 403 without authentication (s)"),
    (
        "SBC_AUTH_BAN_TABLE_SIZE",
        "65536",
        "most source IPs the ban table tracks; when full, the least recently failed unbanned one is forgotten",
    ),
    (
        "SBC_AUTH_BAN_EXEMPT",
        "",
        "comma list of CIDR blocks whose sources are never counted or banned (an office NAT, partners' gateways)",
    ),
    ("SBC_LOG_FACILITY", "daemon", "syslog facility with --log syslog: daemon, user, local0 … local7"),
    ("SBC_SYSLOG_SOCKET", "/dev/log", "the syslog socket used with --log syslog"),
    ("SBC_TIME_SERIES_PORT", "8086", "HTTP port of the InfluxDB at JAMBONES_TIME_SERIES_HOST"),
    (
        "SBC_LOG_LEVEL_FILE",
        "/etc/default/sbc-sidecar",
        "on SIGHUP the log level is re-read from the JAMBONES_LOGLEVEL line of this file",
    ),
    (
        "SBC_REGBOT_STATUS_INTERVAL_MS",
        "60000",
        "how often the regbot leader extends its claim and others check it (ms)",
    ),
    ("SBC_REGBOT_TOKEN_TTL_S", "70", "lifetime of the regbot leader key; must exceed the status interval (s)"),
    (
        "SBC_REGBOT_CLAIM_JITTER_MS",
        "15000",
        "random delay, 0 up to this, before first trying to claim the regbot role (ms)",
    ),
    (
        "SBC_REGBOT_MODE",
        "leader",
        "leader: one elected SBC per cluster registers to the carriers (the Node behaviour); \
         every: each SBC registers every registration carrier itself, with its own Contact and Call-ID",
    ),
    (
        "SBC_HEARTBEAT_CIDRS",
        DEFAULT_HEARTBEAT_CIDRS,
        "OPTIONS with X-FS-Status or X-RTP-Status are accepted only from these networks (comma list); \
         others get 403 and change nothing",
    ),
    (
        "SBC_HEARTBEAT_MAX_SERVERS",
        "1000",
        "most feature servers, RTP servers and service URLs tracked per set; a heartbeat adding one more gets 503",
    ),
    (
        "SBC_REGISTER_MIN_EXPIRES",
        "60",
        "a REGISTER asking for fewer seconds gets 423 Interval Too Brief with Min-Expires (Expires: 0 always unregisters)",
    ),
    (
        "SBC_REGISTER_MAX_EXPIRES",
        "3600",
        "longest registration granted (s): a REGISTER, or a webhook answer, asking for more is granted this",
    ),
];

/// Variables of the Node program's helper libraries that we accept and ignore:
/// `(name, what the Node program did with it)`. Set to anything but `0`, they are named in
/// one startup warning; the man page and README say the same.
pub const IGNORED_VARIABLES: &[(&str, &str)] = &[
    ("JAMBONES_MYSQL_REFRESH_TTL", "db-helpers cached every SELECT result in memory for this many seconds"),
    ("JAMBONES_MYSQL_KEEP_ALIVE_INTERVAL_MS", "db-helpers pinged every pool connection at this interval"),
    ("STATS_MAX_BUFFER_SIZE", "stats-collector buffered metrics up to this many bytes"),
    ("STATS_BUFFER_FLUSH_INTERVAL", "stats-collector flushed its metrics buffer at this interval"),
];

/// Upper bound of every duration: large enough for any sane setting, small enough that
/// `Instant::now() + d` can never overflow (which would panic) in the roles.
const MAX_MILLIS: u64 = 365 * 24 * 3600 * 1000;
const MAX_SECS: u64 = MAX_MILLIS / 1000;

/// What `parse` decided the process should do.
// `Run` is much bigger than the others; the value is built once at start and moved into
// `main`, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Config),
    /// `--check`: validate the configuration, try every dependency once, report, exit.
    Check(Config),
    /// `--help`: the usage text to print on stdout.
    Help(String),
    /// `--version`: the version line to print on stdout.
    Version(String),
}

/// Why the configuration was refused. See [`ConfigError::exit_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The command line is wrong: an unknown option, a missing argument, a bad option value.
    /// The text starts with getopts' own message where getopts found the problem.
    Usage(String),
    /// A required environment variable is missing. The text is the Node program's assertion
    /// message (e.g. `missing DRACHTIO_HOST env var`), so existing runbooks still match.
    Missing(String),
    /// An environment variable is set to something we cannot use. `value` is `<redacted>`
    /// for passwords and secrets.
    Invalid { var: String, value: String, expected: String },
    /// `ENCRYPTION_SECRET` (or `JWT_SECRET`, named in `var`) is the placeholder the package
    /// ships: anyone could forge nonces and read the `clients` passwords of such an install.
    PlaceholderSecret { var: &'static str },
}

impl ConfigError {
    /// The process exit status for this error, from sysexits.h:
    ///
    /// * `64` (`EX_USAGE`): the command line is wrong ([`ConfigError::Usage`]);
    /// * `78` (`EX_CONFIG`): the environment is incomplete or malformed
    ///   ([`ConfigError::Missing`], [`ConfigError::Invalid`]).
    ///
    /// systemd shows both by name. Restarting cannot fix either, so a unit file can list them
    /// in `RestartPreventExitStatus=64 78`.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Usage(_) => EX_USAGE,
            ConfigError::Missing(_) | ConfigError::Invalid { .. } | ConfigError::PlaceholderSecret { .. } => EX_CONFIG,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(message) => write!(f, "{message}; try '{PROGRAM} --help'"),
            ConfigError::Missing(message) => f.write_str(message),
            ConfigError::Invalid { var, value, expected } => write!(f, "invalid {var}={value:?}: expected {expected}"),
            ConfigError::PlaceholderSecret { var } => write!(
                f,
                "{var} is still the placeholder {PLACEHOLDER_SECRET:?} of {DEFAULTS_FILE}: set it there to the \
                 ENCRYPTION_SECRET of the jambonz API server (at least {MIN_SECRET_LEN} bytes), then start again"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Foreground (the default, and what systemd runs) or detached with `--daemon`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMode {
    Foreground,
    Daemon { pidfile: Option<PathBuf> },
}

/// The whole validated configuration, built once at start and shared read-only.
/// Deriving `Debug` is safe: every secret is a [`Secret`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    // --- command line -------------------------------------------------------------------
    pub run_mode: RunMode,
    pub log_target: LogTarget,
    /// `--log-level`, else `JAMBONES_LOGLEVEL` (pino names), default `info`.
    pub log_level: LevelFilter,
    /// `SBC_LOG_FACILITY`, default `daemon`.
    pub log_facility: LogFacility,
    /// `SBC_SYSLOG_SOCKET`: syslog socket path, `/dev/log` by default.
    pub syslog_socket: PathBuf,
    /// `SBC_LOG_LEVEL_FILE`: where SIGHUP re-reads `JAMBONES_LOGLEVEL` (an environment file).
    pub log_level_file: PathBuf,
    /// `--socket`, else `SBC_SOCKET_PATH`, default `/tmp/sbc-sip-sidecar.sock`.
    pub socket_path: PathBuf,

    // --- connections --------------------------------------------------------------------
    /// `DRACHTIO_*`, `SBC_DRACHTIO_*` and `JAMBONES_NETWORK_CIDR`.
    pub drachtio: ClientConfig,
    /// The read pool (and the write pool too when `mysql_write` is `None`).
    pub mysql: MysqlSettings,
    /// A separate pool for UPDATE/INSERT/DELETE, when all four `JAMBONES_MYSQL_WRITE_*`
    /// variables are set.
    pub mysql_write: Option<MysqlSettings>,
    /// `JAMBONES_REDIS_*`, `SBC_REDIS_*`; the pool size follows `SBC_AUTH_WORKERS`.
    pub redis: RedisSettings,
    /// `JAMBONES_TIME_SERIES_HOST`: InfluxDB 1.x host (port 8086, http) for alerts.
    pub time_series_host: String,
    /// `SBC_TIME_SERIES_PORT`, default 8086 (the Node client's fixed port).
    pub time_series_port: u16,
    /// statsd: disabled unless `ENABLE_METRICS` parses to the integer 1.
    pub metrics: MetricsSettings,

    // --- behaviour ----------------------------------------------------------------------
    /// `NODE_ENV=test`: Influx flush every 7 s instead of 20 s.
    pub node_env_test: bool,
    /// `JAMBONES_HOSTING` truthy: unknown realm → 403, device limits enforced.
    pub hosting: bool,
    /// `JAMBONES_CLUSTER_ID`, default `default`: prefix of cluster-scoped Redis keys.
    pub cluster_id: String,
    /// `SBC_HEARTBEAT_CIDRS`, default [`DEFAULT_HEARTBEAT_CIDRS`]: the only sources whose
    /// feature/RTP-server heartbeats are accepted.
    pub heartbeat_cidrs: Vec<Cidr>,
    /// `CHECK_EXPIRES_INTERVAL`, default 20 000 ms between FS/RTP expiry sweeps.
    pub check_expires_interval: Duration,
    /// `EXPIRES_INTERVAL`, default 60 000 ms without a check-in before a server is removed.
    pub expires_interval: Duration,
    /// Outbound registration, the gateway pinger and `sbc_addresses` (`JAMBONES_REGBOT_*`,
    /// `SBC_REGBOT_*`, `*_RESPONSE_REMOVE`, `OPTIONS_PING_*`, …).
    pub regbot: RegbotSettings,

    // --- registrar ----------------------------------------------------------------------
    /// `ENCRYPTION_SECRET`, else `JWT_SECRET`: key material for `clients.password`.
    pub encryption_secret: Secret,
    /// `LEGACY_CRYPTO` truthy: AES-256-CTR instead of AES-256-CBC.
    pub legacy_crypto: bool,
    /// `JAMBONES_HTTP_USER_AGENT_HEADER`: `user-agent` of registration-webhook requests.
    pub http_user_agent: Option<String>,
    /// `SBC_WEBHOOK_TIMEOUT_MS`.
    pub webhook_timeout: Duration,
    /// `SBC_SHUTDOWN_GRACE_MS`: the drain after SIGTERM lasts at most this plus the webhook
    /// timeout.
    pub shutdown_grace: Duration,
    /// `SBC_AUTH_WORKERS`, `SBC_AUTH_MAX_INFLIGHT`, `SBC_AUTH_ACCOUNT_SHARE`, `SBC_AUTH_QUEUE`:
    /// the auth workers' pool.
    pub auth: PoolLimits,
    /// `SBC_NONCE_TTL_S`.
    pub nonce_ttl: Duration,
    /// `SBC_WEBHOOK_AOR_CHECK`, default on.
    pub webhook_aor_check: bool,
    /// `SBC_CTL_GROUP`: members of this group may use the CLI socket (unset: root and the
    /// daemon's own user only).
    pub ctl_group: Option<String>,
    /// `SBC_HEARTBEAT_MAX_SERVERS`, default 1000.
    pub heartbeat_max_servers: usize,
    /// `SBC_REGISTER_MIN_EXPIRES` (60) / `SBC_REGISTER_MAX_EXPIRES` (3600).
    pub register_expires: ExpiresBounds,
    /// `SBC_ACCOUNT_CACHE_MS`: how long the registrar reuses an account lookup (0 = never).
    pub account_cache_ttl: Duration,
    /// `SBC_AUTH_BAN_FAILURES`, `SBC_AUTH_BAN_WINDOW_S`, `SBC_AUTH_BAN_TIME_S`,
    /// `SBC_AUTH_BAN_TABLE_SIZE`: the brute-force defence (`max_failures` 0 = off).
    pub ban: BanSettings,

    /// Things an operator should know that did not stop the start; log them once the
    /// logger is up.
    pub warnings: Vec<String>,
}

/// Parses the command line and the environment.
///
/// `args` is the command line **without** the program name (`env::args().skip(1)`), so a
/// stray program path shows up as an unexpected argument instead of silently shifting
/// everything. `--help` and `--version` win over everything else and need no environment.
/// Options given on the command line win over their environment variables.
pub fn parse(env: &HashMap<String, String>, args: &[String]) -> Result<Command, ConfigError> {
    let matches = cli::options().parse(args).map_err(|e| ConfigError::Usage(e.to_string()))?;
    if matches.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    if matches.opt_present("version") {
        return Ok(Command::Version(version()));
    }
    if let Some(extra) = matches.free.first() {
        return Err(ConfigError::Usage(format!("unexpected argument {extra:?}")));
    }
    let command_line = cli::command_line(&matches)?;
    let check = command_line.check;
    let config = env::parse_env(&env::Env::new(env), command_line)?;
    Ok(if check { Command::Check(config) } else { Command::Run(config) })
}
