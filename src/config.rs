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

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use getopts::Options;
use log::LevelFilter;

use crate::logging::{self, LogFacility, LogTarget};
use crate::net::Cidr;
use crate::registrar::bans::BanSettings;

/// The program name used in usage and version texts.
pub const PROGRAM: &str = "sbc-sidecar";

/// Exit status for a command-line mistake (sysexits.h `EX_USAGE`).
pub const EX_USAGE: i32 = 64;
/// Exit status for a missing or malformed environment variable (sysexits.h `EX_CONFIG`).
pub const EX_CONFIG: i32 = 78;

pub const DEFAULT_SOCKET_PATH: &str = "/tmp/sbc-sip-sidecar.sock";
/// Exactly the Node default, narrow `/24` and `/16` included (spec 14, item 22).
pub const DEFAULT_NETWORK_CIDR: &str = "192.168.0.0/24,172.16.0.0/16,10.0.0.0/8";
/// Where feature servers and RTP servers live unless `SBC_HEARTBEAT_CIDRS` says otherwise:
/// loopback, RFC 1918, RFC 6598 (carrier-grade NAT, used by some clouds), IPv6 unique-local
/// and link-local. Heartbeats from anywhere else are refused.
pub const DEFAULT_HEARTBEAT_CIDRS: &str =
    "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7,fe80::/10";
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
    ("SBC_AUTH_WORKERS", "8", "number of threads authenticating REGISTERs (webhook or clients table)"),
    ("SBC_AUTH_QUEUE", "1024", "REGISTERs waiting for an auth worker; when full, new ones are answered 503"),
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
    /// `--help`: the usage text to print on stdout.
    Help(String),
    /// `--version`: the version line to print on stdout.
    Version(String),
}

/// A value that must never reach a log line: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The actual value, for the one place that needs it (a hash, an AUTH command).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
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
            ConfigError::Missing(_) | ConfigError::Invalid { .. } => EX_CONFIG,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(message) => write!(f, "{message}; try '{PROGRAM} --help'"),
            ConfigError::Missing(message) => f.write_str(message),
            ConfigError::Invalid { var, value, expected } => write!(f, "invalid {var}={value:?}: expected {expected}"),
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
    pub drachtio: DrachtioConfig,
    /// The read pool (and the write pool too when `mysql_write` is `None`).
    pub mysql: MysqlConfig,
    /// A separate pool for UPDATE/INSERT/DELETE, when all four `JAMBONES_MYSQL_WRITE_*`
    /// variables are set.
    pub mysql_write: Option<MysqlConfig>,
    /// `JAMBONES_MYSQL_REFRESH_TTL` (s): cache SELECT results this long; `None` = no cache.
    pub mysql_refresh_ttl: Option<Duration>,
    /// `JAMBONES_MYSQL_KEEP_ALIVE_INTERVAL_MS`: ping idle pool connections; `None` = never.
    pub mysql_keep_alive_interval: Option<Duration>,
    pub redis: RedisConfig,
    /// `JAMBONES_TIME_SERIES_HOST`: InfluxDB 1.x host (port 8086, http) for alerts.
    pub time_series_host: String,
    /// `SBC_TIME_SERIES_PORT`, default 8086 (the Node client's fixed port).
    pub time_series_port: u16,
    /// `None` unless `ENABLE_METRICS` parses to the integer 1.
    pub metrics: Option<MetricsConfig>,

    // --- behaviour ----------------------------------------------------------------------
    /// `NODE_ENV=test`: Influx flush every 7 s instead of 20 s.
    pub node_env_test: bool,
    /// `JAMBONES_HOSTING` truthy: unknown realm → 403, device limits enforced.
    pub hosting: bool,
    /// `JAMBONES_CLUSTER_ID`, default `default`: prefix of cluster-scoped Redis keys.
    pub cluster_id: String,
    /// `JAMBONES_NETWORK_CIDR`: used to pick the private TCP SIP address.
    pub network_cidrs: Vec<Cidr>,
    /// `SBC_HEARTBEAT_CIDRS`, default [`DEFAULT_HEARTBEAT_CIDRS`]: the only sources whose
    /// feature/RTP-server heartbeats are accepted.
    pub heartbeat_cidrs: Vec<Cidr>,
    /// `SBC_PUBLIC_ADDRESS_KEEP_ALIVE_IN_MILISECOND` (sic), default 900 000 ms.
    pub sbc_public_address_keep_alive: Duration,
    /// `DEAD_SBC_IN_SECOND`, default 3600 s: `sbc_addresses` rows older than this are deleted.
    pub dead_sbc_age: Duration,
    /// `CHECK_EXPIRES_INTERVAL`, default 20 000 ms between FS/RTP expiry sweeps.
    pub check_expires_interval: Duration,
    /// `EXPIRES_INTERVAL`, default 60 000 ms without a check-in before a server is removed.
    pub expires_interval: Duration,
    /// `SEND_OPTIONS_PING_INTERVAL`, default 60 s between gateway OPTIONS rounds.
    pub options_ping_interval: Duration,
    /// `OPTIONS_PING_TTL`, default 300 s: TTL of the gateway blacklist key.
    pub options_ping_ttl: Duration,
    /// `OPTIONS_RESPONSE_REMOVE`: OPTIONS answers that switch a gateway's pings off.
    pub options_response_remove: Vec<u16>,
    /// `REGISTER_RESPONSE_REMOVE`: REGISTER answers counting toward auto-disable.
    pub register_response_remove: Vec<u16>,
    pub regbot: RegbotConfig,

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
    /// `SBC_AUTH_WORKERS`.
    pub auth_workers: usize,
    /// `SBC_AUTH_QUEUE`.
    pub auth_queue: usize,
    /// `SBC_NONCE_TTL_S`.
    pub nonce_ttl: Duration,
    /// `SBC_WEBHOOK_AOR_CHECK`, default on.
    pub webhook_aor_check: bool,
    /// `SBC_ACCOUNT_CACHE_MS`: how long the registrar reuses an account lookup (0 = never).
    pub account_cache_ttl: Duration,
    /// `SBC_AUTH_BAN_FAILURES`, `SBC_AUTH_BAN_WINDOW_S`, `SBC_AUTH_BAN_TIME_S`,
    /// `SBC_AUTH_BAN_TABLE_SIZE`: the brute-force defence (`max_failures` 0 = off).
    pub ban: BanSettings,

    /// Things an operator should know that did not stop the start; log them once the
    /// logger is up.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrachtioConfig {
    /// `DRACHTIO_HOST`
    pub host: String,
    /// `DRACHTIO_PORT`
    pub port: u16,
    /// `DRACHTIO_SECRET`
    pub secret: Secret,
    /// `SBC_DRACHTIO_PING_INTERVAL_MS`
    pub ping_interval: Duration,
    /// `SBC_DRACHTIO_PONG_TIMEOUT_MS`
    pub pong_timeout: Duration,
    /// `SBC_DRACHTIO_BACKOFF_MIN_MS`
    pub backoff_min: Duration,
    /// `SBC_DRACHTIO_BACKOFF_MAX_MS`
    pub backoff_max: Duration,
}

/// One MySQL pool. TLS and the timeout apply to both pools, as in db-helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlConfig {
    pub host: String,
    /// Default 3306.
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
    /// Pool size: `JAMBONES_MYSQL_CONNECTION_LIMIT` (read) or
    /// `JAMBONES_MYSQL_WRITE_CONNECTION_LIMIT` (write), default 10.
    pub connection_limit: u32,
    pub tls: Option<MysqlTls>,
    /// `SBC_MYSQL_TIMEOUT_MS`: connect and checkout timeout.
    pub timeout: Duration,
}

/// TLS to MySQL: on when `JAMBONES_MYSQL_REJECT_UNAUTHORIZED` is set or all three
/// `JAMBONES_MYSQL_SSL_*_FILE` variables are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTls {
    /// Verify the server certificate: false only for `JAMBONES_MYSQL_REJECT_UNAUTHORIZED=0`.
    pub verify: bool,
    pub files: Option<MysqlTlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub mode: RedisMode,
    /// `ENABLE_JAMBONES_REDIS_TLS` truthy: TLS to the Redis node. With Sentinel only when
    /// `SBC_REDIS_SENTINEL_MASTER_TLS` is on too (see `redis()`); the sentinels are plain.
    pub tls: Option<RedisTls>,
    /// `SBC_REDIS_TIMEOUT_MS`: connect and pool checkout timeout.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    /// `JAMBONES_REDIS_HOST` / `_PORT` (6379) / `_USERNAME` / `_PASSWORD`.
    Standalone { host: String, port: u16, username: Option<String>, password: Option<Secret> },
    /// `JAMBONES_REDIS_SENTINELS` is set.
    Sentinel {
        /// `host[:port]` entries, port default 26379.
        sentinels: Vec<HostPort>,
        /// `JAMBONES_REDIS_SENTINEL_MASTER_NAME`
        master_name: String,
        /// `JAMBONES_REDIS_SENTINEL_USERNAME`: for the master found through the sentinels.
        username: Option<String>,
        /// `JAMBONES_REDIS_SENTINEL_PASSWORD`: for the master found through the sentinels.
        password: Option<Secret>,
        /// `JAMBONES_REDIS_SENTINEL_SERVER_PASSWORD`: for the sentinels themselves.
        sentinel_password: Option<Secret>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

/// PEM files for Redis TLS; any of them may be absent (system trust store, no client cert).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// statsd settings (`STATS_*`), read only when `ENABLE_METRICS=1`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Default `127.0.0.1`.
    pub host: String,
    /// Default 8125.
    pub port: u16,
    /// Default udp.
    pub protocol: StatsProtocol,
    /// Prepended verbatim to every metric name; default empty.
    pub prefix: String,
    /// Global tags, `STATS_TAGS` comma list.
    pub tags: Vec<String>,
    /// Default 1.
    pub sample_rate: f64,
    /// `STATS_MAX_BUFFER_SIZE` bytes, default 0 (send each metric at once).
    pub max_buffer_size: usize,
    /// `STATS_BUFFER_FLUSH_INTERVAL` (ms), used with a buffer.
    pub buffer_flush_interval: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsProtocol {
    Udp,
    Tcp,
}

/// Outbound registration settings (`JAMBONES_REGBOT_*` and our `SBC_REGBOT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegbotConfig {
    /// Consecutive "remove" failures before auto-disable; default 3.
    pub failure_threshold: u32,
    /// Default 300 s.
    pub failure_retry_interval: Duration,
    /// Expires we ask for, and the fallback when the 200 has none; default 3600 s.
    pub default_expires: Duration,
    /// Floor for the expires a carrier grants; default 30 s.
    pub min_expires: Duration,
    /// `JAMBONES_REGBOT_CONTACT_USE_IP` truthy.
    pub contact_use_ip: bool,
    /// Default `Jambonz 0.9.6`.
    pub user_agent: String,
    /// Pause after this many newly started regbots; default 10.
    pub batch_size: usize,
    /// Default 250 ms.
    pub batch_sleep: Duration,
    /// `SBC_REGBOT_STATUS_INTERVAL_MS`
    pub status_interval: Duration,
    /// `SBC_REGBOT_TOKEN_TTL_S`
    pub token_ttl: Duration,
    /// `SBC_REGBOT_CLAIM_JITTER_MS`
    pub claim_jitter: Duration,
    /// `SBC_REGBOT_MODE`
    pub mode: RegbotMode,
}

/// Who registers to the carriers (`SBC_REGBOT_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegbotMode {
    /// One elected SBC per cluster (the Node behaviour).
    #[default]
    Leader,
    /// Every SBC, each with its own Contact and Call-ID.
    Every,
}

impl RegbotMode {
    pub const NAMES: &'static str = "leader, every";

    pub fn as_str(self) -> &'static str {
        match self {
            RegbotMode::Leader => "leader",
            RegbotMode::Every => "every",
        }
    }
}

impl FromStr for RegbotMode {
    type Err = ();

    fn from_str(s: &str) -> Result<RegbotMode, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "leader" => Ok(RegbotMode::Leader),
            "every" => Ok(RegbotMode::Every),
            _ => Err(()),
        }
    }
}

impl fmt::Display for RegbotMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ------------------------------------------------------------------------------------------
// Command line
// ------------------------------------------------------------------------------------------

fn options() -> Options {
    let mut opts = Options::new();
    opts.optflag("h", "help", "print this help and exit");
    opts.optflag("V", "version", "print the version and exit");
    opts.optflag("", "foreground", "stay in the foreground (the default; what systemd runs)");
    opts.optflag("", "daemon", "detach from the terminal and run in the background");
    opts.optopt("", "pidfile", "with --daemon: write the process id to PATH", "PATH");
    opts.optopt("", "log", "where log lines go: stderr (default) or syslog", "stderr|syslog");
    opts.optopt(
        "",
        "log-level",
        "trace, debug, info, warn, error, fatal or silent; overrides JAMBONES_LOGLEVEL (default info)",
        "LEVEL",
    );
    opts.optopt(
        "",
        "socket",
        "path of the sbcctl control socket; overrides SBC_SOCKET_PATH (default /tmp/sbc-sip-sidecar.sock)",
        "PATH",
    );
    opts
}

/// The `--help` text.
pub fn usage() -> String {
    let brief = format!(
        "Usage: {PROGRAM} [OPTIONS]\n\n\
         SIP sidecar of a jambonz SBC node: registrar, feature-server tracking, carrier\n\
         registration. Settings come from environment variables (see {PROGRAM}(8));\n\
         the options below override them."
    );
    format!(
        "{}\nExit status: 0 on a clean shutdown, {EX_USAGE} for a command-line mistake, \
         {EX_CONFIG} for a missing or malformed environment variable.\n",
        options().usage(&brief)
    )
}

/// The `--version` line.
pub fn version() -> String {
    format!("{PROGRAM} {}", env!("CARGO_PKG_VERSION"))
}

/// The command-line choices, before the environment is looked at.
struct CommandLine {
    run_mode: RunMode,
    log_target: LogTarget,
    log_level: Option<LevelFilter>,
    socket_path: Option<PathBuf>,
}

/// Parses the command line and the environment.
///
/// `args` is the command line **without** the program name (`env::args().skip(1)`), so a
/// stray program path shows up as an unexpected argument instead of silently shifting
/// everything. `--help` and `--version` win over everything else and need no environment.
/// Options given on the command line win over their environment variables.
pub fn parse(env: &HashMap<String, String>, args: &[String]) -> Result<Command, ConfigError> {
    let matches = options().parse(args).map_err(|e| ConfigError::Usage(e.to_string()))?;
    if matches.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    if matches.opt_present("version") {
        return Ok(Command::Version(version()));
    }
    if let Some(extra) = matches.free.first() {
        return Err(ConfigError::Usage(format!("unexpected argument {extra:?}")));
    }
    let command_line = command_line(&matches)?;
    parse_env(&Env { vars: env }, command_line).map(Command::Run)
}

fn command_line(matches: &getopts::Matches) -> Result<CommandLine, ConfigError> {
    let daemon = matches.opt_present("daemon");
    if daemon && matches.opt_present("foreground") {
        return Err(ConfigError::Usage("--daemon and --foreground exclude each other".into()));
    }
    let pidfile = matches.opt_str("pidfile").map(PathBuf::from);
    if pidfile.is_some() && !daemon {
        return Err(ConfigError::Usage("--pidfile only makes sense with --daemon".into()));
    }
    let run_mode = if daemon { RunMode::Daemon { pidfile } } else { RunMode::Foreground };
    let log_target = match matches.opt_str("log") {
        None => LogTarget::Stderr,
        Some(name) => name
            .parse()
            .map_err(|_| ConfigError::Usage(format!("invalid --log {name:?}: expected stderr or syslog")))?,
    };
    let log_level = match matches.opt_str("log-level") {
        None => None,
        Some(name) => Some(logging::parse_level(&name).map_err(|_| {
            ConfigError::Usage(format!("invalid --log-level {name:?}: expected one of {}", logging::LEVEL_NAMES))
        })?),
    };
    let socket_path = match matches.opt_str("socket") {
        Some(path) if path.is_empty() => return Err(ConfigError::Usage("--socket needs a non-empty path".into())),
        other => other.map(PathBuf::from),
    };
    Ok(CommandLine { run_mode, log_target, log_level, socket_path })
}

// ------------------------------------------------------------------------------------------
// Environment
// ------------------------------------------------------------------------------------------

/// Read access to the environment map with the Node program's conventions.
struct Env<'a> {
    vars: &'a HashMap<String, String>,
}

impl<'a> Env<'a> {
    /// The value, with `""` treated as unset (`process.env.X || default`).
    fn get(&self, name: &str) -> Option<&'a str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Any non-empty string, `"0"` and `"false"` included.
    fn truthy(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    fn optional(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        self.get(name).map(Secret::new)
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    /// A path that must be absolute: the daemon runs with `/` as its working directory.
    fn absolute_path(&self, name: &str, default: &str) -> Result<PathBuf, ConfigError> {
        let path = PathBuf::from(self.get(name).unwrap_or(default));
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(invalid(name, &path.display().to_string(), "an absolute path".to_string()))
        }
    }

    /// An on/off switch of ours: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off` (any case).
    /// Unlike the Node program's "set means on", anything else is refused.
    fn switch(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(invalid(name, raw, "1 or 0 (true/false, yes/no, on/off)".to_string())),
        }
    }

    /// A whole number in `min..=max`; `what` describes it for the error message.
    fn number(&self, name: &str, default: u64, min: u64, max: u64, what: &str) -> Result<u64, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        parse_decimal(raw)
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| invalid(name, raw, format!("{what} from {min} to {max}")))
    }

    fn count(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        self.number(name, default, min, max, "a whole number")
    }

    fn millis(&self, name: &str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        self.number(name, default, min, MAX_MILLIS, "a whole number of milliseconds").map(Duration::from_millis)
    }

    fn secs(&self, name: &str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        self.number(name, default, min, MAX_SECS, "a whole number of seconds").map(Duration::from_secs)
    }

    fn port(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => parse_port(name, raw),
        }
    }

    /// A comma list of SIP status codes; empty entries are skipped.
    fn status_list(&self, name: &str) -> Result<Vec<u16>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(Vec::new());
        };
        list_items(raw)
            .map(|item| {
                parse_decimal(item)
                    .filter(|n| (100..=699).contains(n))
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| invalid(name, item, "a comma list of SIP status codes 100-699".into()))
            })
            .collect()
    }
}

/// Digits only, surrounding blanks allowed. Stricter than JavaScript's `parseInt`, which
/// would read `60s` as 60: a unit typo should be reported, not half-understood.
fn parse_decimal(raw: &str) -> Option<u64> {
    let text = raw.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_port(name: &str, raw: &str) -> Result<u16, ConfigError> {
    parse_decimal(raw)
        .filter(|p| (1..=65535).contains(p))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| invalid(name, raw, "a port number 1-65535".into()))
}

/// JavaScript `parseInt(s)` for the `ENABLE_METRICS` test: leading blanks, an optional
/// sign, then as many digits as there are (`"1abc"` → 1, `" 1"` → 1, `"yes"` → none).
fn js_parse_int(raw: &str) -> Option<i64> {
    let text = raw.trim_start();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let end = digits.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    let value: i64 = digits[..end].parse().ok()?;
    Some(if negative { -value } else { value })
}

/// Trimmed, non-empty items of a comma list.
fn list_items(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn is_secret_var(name: &str) -> bool {
    name.contains("PASSWORD") || name.contains("SECRET")
}

fn invalid(var: &str, value: &str, expected: String) -> ConfigError {
    let value = if is_secret_var(var) { "<redacted>".to_string() } else { value.to_string() };
    ConfigError::Invalid { var: var.to_string(), value, expected }
}

fn missing(message: &str) -> ConfigError {
    ConfigError::Missing(message.to_string())
}

/// The required variables, checked in the Node program's assertion order so the first
/// complaint is the one its operators know.
struct Required<'a> {
    drachtio_host: &'a str,
    drachtio_port: &'a str,
    drachtio_secret: &'a str,
    redis_sentinels: Option<&'a str>,
    time_series_host: &'a str,
    encryption_secret: &'a str,
}

fn required<'a>(env: &Env<'a>) -> Result<Required<'a>, ConfigError> {
    let mysql_vars =
        ["JAMBONES_MYSQL_HOST", "JAMBONES_MYSQL_USER", "JAMBONES_MYSQL_PASSWORD", "JAMBONES_MYSQL_DATABASE"];
    if mysql_vars.iter().any(|v| env.get(v).is_none()) {
        return Err(missing("missing JAMBONES_MYSQL_XXX env vars"));
    }
    let redis_sentinels = env.get("JAMBONES_REDIS_SENTINELS");
    if redis_sentinels.is_some() {
        if env.get("JAMBONES_REDIS_SENTINEL_MASTER_NAME").is_none() {
            return Err(missing(
                "missing JAMBONES_REDIS_SENTINEL_MASTER_NAME env var, \
                 JAMBONES_REDIS_SENTINEL_PASSWORD env var is optional",
            ));
        }
    } else if env.get("JAMBONES_REDIS_HOST").is_none() {
        return Err(missing("missing JAMBONES_REDIS_HOST env var"));
    }
    let get = |name: &str, message: &str| env.get(name).ok_or_else(|| missing(message));
    Ok(Required {
        drachtio_host: get("DRACHTIO_HOST", "missing DRACHTIO_HOST env var")?,
        drachtio_port: get("DRACHTIO_PORT", "missing DRACHTIO_PORT env var")?,
        drachtio_secret: get("DRACHTIO_SECRET", "missing DRACHTIO_SECRET env var")?,
        redis_sentinels,
        time_series_host: get("JAMBONES_TIME_SERIES_HOST", "missing JAMBONES_TIME_SERIES_HOST env var")?,
        // The Node program dies at module load without one of these (spec 1.1).
        encryption_secret: env
            .get("ENCRYPTION_SECRET")
            .or_else(|| env.get("JWT_SECRET"))
            .ok_or_else(|| missing("missing ENCRYPTION_SECRET (or JWT_SECRET) env var"))?,
    })
}

fn parse_env(env: &Env<'_>, command_line: CommandLine) -> Result<Config, ConfigError> {
    let required = required(env)?;
    let mut warnings = Vec::new();

    let log_level = match command_line.log_level {
        Some(level) => level,
        None => match env.get("JAMBONES_LOGLEVEL") {
            None => LevelFilter::Info,
            Some(name) => logging::parse_level(name)
                .map_err(|_| invalid("JAMBONES_LOGLEVEL", name, format!("one of {}", logging::LEVEL_NAMES)))?,
        },
    };
    let log_facility = match env.get("SBC_LOG_FACILITY") {
        None => LogFacility::Daemon,
        Some(name) => {
            name.parse().map_err(|_| invalid("SBC_LOG_FACILITY", name, format!("one of {}", LogFacility::NAMES)))?
        }
    };
    let socket_path =
        command_line.socket_path.unwrap_or_else(|| PathBuf::from(env.string("SBC_SOCKET_PATH", DEFAULT_SOCKET_PATH)));
    let (mysql, mysql_write) = mysql_pools(env, &mut warnings)?;
    let network_cidrs =
        parse_cidrs("JAMBONES_NETWORK_CIDR", env.get("JAMBONES_NETWORK_CIDR").unwrap_or(DEFAULT_NETWORK_CIDR))?;
    let heartbeat_cidrs =
        parse_cidrs("SBC_HEARTBEAT_CIDRS", env.get("SBC_HEARTBEAT_CIDRS").unwrap_or(DEFAULT_HEARTBEAT_CIDRS))?;
    if heartbeat_cidrs.is_empty() {
        return Err(invalid(
            "SBC_HEARTBEAT_CIDRS",
            env.get("SBC_HEARTBEAT_CIDRS").unwrap_or(""),
            "at least one CIDR block such as 10.0.0.0/8".into(),
        ));
    }

    Ok(Config {
        run_mode: command_line.run_mode,
        log_target: command_line.log_target,
        log_level,
        log_facility,
        syslog_socket: env.absolute_path("SBC_SYSLOG_SOCKET", "/dev/log")?,
        log_level_file: env.absolute_path("SBC_LOG_LEVEL_FILE", "/etc/default/sbc-sidecar")?,
        socket_path,
        drachtio: drachtio(env, &required)?,
        mysql,
        mysql_write,
        // "If set" in db-helpers; a zero TTL or interval means nothing useful, so none.
        mysql_refresh_ttl: Some(env.secs("JAMBONES_MYSQL_REFRESH_TTL", 0, 0)?).filter(|d| !d.is_zero()),
        mysql_keep_alive_interval: Some(env.millis("JAMBONES_MYSQL_KEEP_ALIVE_INTERVAL_MS", 0, 0)?)
            .filter(|d| !d.is_zero()),
        redis: redis(env, required.redis_sentinels, &mut warnings)?,
        time_series_host: required.time_series_host.to_string(),
        time_series_port: env.port("SBC_TIME_SERIES_PORT", 8086)?,
        metrics: metrics(env)?,
        node_env_test: env.get("NODE_ENV") == Some("test"),
        hosting: env.truthy("JAMBONES_HOSTING"),
        cluster_id: env.string("JAMBONES_CLUSTER_ID", "default"),
        network_cidrs,
        heartbeat_cidrs,
        sbc_public_address_keep_alive: env.millis("SBC_PUBLIC_ADDRESS_KEEP_ALIVE_IN_MILISECOND", 900_000, 1)?,
        dead_sbc_age: env.secs("DEAD_SBC_IN_SECOND", 3600, 1)?,
        check_expires_interval: env.millis("CHECK_EXPIRES_INTERVAL", 20_000, 1)?,
        expires_interval: env.millis("EXPIRES_INTERVAL", 60_000, 1)?,
        options_ping_interval: env.secs("SEND_OPTIONS_PING_INTERVAL", 60, 1)?,
        options_ping_ttl: env.secs("OPTIONS_PING_TTL", 300, 1)?,
        options_response_remove: env.status_list("OPTIONS_RESPONSE_REMOVE")?,
        register_response_remove: env.status_list("REGISTER_RESPONSE_REMOVE")?,
        regbot: regbot(env)?,
        encryption_secret: Secret::new(required.encryption_secret),
        legacy_crypto: env.truthy("LEGACY_CRYPTO"),
        http_user_agent: env.optional("JAMBONES_HTTP_USER_AGENT_HEADER"),
        webhook_timeout: env.millis("SBC_WEBHOOK_TIMEOUT_MS", 3000, 1)?,
        shutdown_grace: env.millis("SBC_SHUTDOWN_GRACE_MS", 5000, 0)?,
        auth_workers: usize_from(env.count("SBC_AUTH_WORKERS", 8, 1, 1024)?),
        // The queue is a bounded channel allocated up front: cap it.
        auth_queue: usize_from(env.count("SBC_AUTH_QUEUE", 1024, 1, 1_000_000)?),
        nonce_ttl: env.secs("SBC_NONCE_TTL_S", 300, 1)?,
        webhook_aor_check: env.switch("SBC_WEBHOOK_AOR_CHECK", true)?,
        account_cache_ttl: env.millis("SBC_ACCOUNT_CACHE_MS", 5000, 0)?,
        ban: ban(env)?,
        warnings,
    })
}

fn drachtio(env: &Env<'_>, required: &Required<'_>) -> Result<DrachtioConfig, ConfigError> {
    let drachtio = DrachtioConfig {
        host: required.drachtio_host.to_string(),
        port: parse_port("DRACHTIO_PORT", required.drachtio_port)?,
        secret: Secret::new(required.drachtio_secret),
        ping_interval: env.millis("SBC_DRACHTIO_PING_INTERVAL_MS", 15_000, 1)?,
        pong_timeout: env.millis("SBC_DRACHTIO_PONG_TIMEOUT_MS", 10_000, 1)?,
        backoff_min: env.millis("SBC_DRACHTIO_BACKOFF_MIN_MS", 150, 1)?,
        backoff_max: env.millis("SBC_DRACHTIO_BACKOFF_MAX_MS", 30_000, 1)?,
    };
    if drachtio.backoff_max < drachtio.backoff_min {
        return Err(invalid(
            "SBC_DRACHTIO_BACKOFF_MAX_MS",
            &drachtio.backoff_max.as_millis().to_string(),
            format!("at least SBC_DRACHTIO_BACKOFF_MIN_MS ({} ms)", drachtio.backoff_min.as_millis()),
        ));
    }
    Ok(drachtio)
}

/// The read pool and, when all four `JAMBONES_MYSQL_WRITE_*` variables are set, the write
/// pool. Only called after the read pool's variables were checked present.
fn mysql_pools(env: &Env<'_>, warnings: &mut Vec<String>) -> Result<(MysqlConfig, Option<MysqlConfig>), ConfigError> {
    let tls = mysql_tls(env, warnings);
    let timeout = env.millis("SBC_MYSQL_TIMEOUT_MS", 1000, 1)?;
    let pool = |prefix: &str, limit_var: &str| -> Result<MysqlConfig, ConfigError> {
        let var = |suffix: &str| format!("{prefix}{suffix}");
        Ok(MysqlConfig {
            host: env.string(&var("HOST"), ""),
            port: env.port(&var("PORT"), 3306)?,
            user: env.string(&var("USER"), ""),
            password: Secret::new(env.string(&var("PASSWORD"), "")),
            database: env.string(&var("DATABASE"), ""),
            connection_limit: u32_from(env.count(limit_var, 10, 1, 1000)?),
            tls: tls.clone(),
            timeout,
        })
    };
    let read = pool("JAMBONES_MYSQL_", "JAMBONES_MYSQL_CONNECTION_LIMIT")?;

    let write_vars = [
        "JAMBONES_MYSQL_WRITE_HOST",
        "JAMBONES_MYSQL_WRITE_USER",
        "JAMBONES_MYSQL_WRITE_PASSWORD",
        "JAMBONES_MYSQL_WRITE_DATABASE",
    ];
    let write_vars_set = write_vars.iter().filter(|v| env.truthy(v)).count();
    let write = if write_vars_set == write_vars.len() {
        Some(pool("JAMBONES_MYSQL_WRITE_", "JAMBONES_MYSQL_WRITE_CONNECTION_LIMIT")?)
    } else {
        if write_vars_set > 0 {
            warnings.push(
                "only some of JAMBONES_MYSQL_WRITE_HOST/_USER/_PASSWORD/_DATABASE are set; \
                 all four are needed for a write pool, so writes use the read pool"
                    .to_string(),
            );
        }
        None
    };
    Ok((read, write))
}

fn redis(env: &Env<'_>, sentinels: Option<&str>, warnings: &mut Vec<String>) -> Result<RedisConfig, ConfigError> {
    let mode = match sentinels {
        Some(list) => RedisMode::Sentinel {
            sentinels: parse_sentinels(list)?,
            master_name: env.string("JAMBONES_REDIS_SENTINEL_MASTER_NAME", ""),
            username: env.optional("JAMBONES_REDIS_SENTINEL_USERNAME"),
            password: env.secret("JAMBONES_REDIS_SENTINEL_PASSWORD"),
            sentinel_password: env.secret("JAMBONES_REDIS_SENTINEL_SERVER_PASSWORD"),
        },
        None => RedisMode::Standalone {
            host: env.string("JAMBONES_REDIS_HOST", ""),
            port: env.port("JAMBONES_REDIS_PORT", 6379)?,
            username: env.optional("JAMBONES_REDIS_USERNAME"),
            password: env.secret("JAMBONES_REDIS_PASSWORD"),
        },
    };
    let mut tls = env.truthy("ENABLE_JAMBONES_REDIS_TLS").then(|| RedisTls {
        ca_file: env.path("JAMBONES_REDIS_TLS_CA_FILE"),
        cert_file: env.path("JAMBONES_REDIS_TLS_CERT_FILE"),
        key_file: env.path("JAMBONES_REDIS_TLS_KEY_FILE"),
    });
    // With Sentinel the Node program reaches the master in clear text whatever
    // ENABLE_JAMBONES_REDIS_TLS says (ioredis applies `tls` to a Sentinel master only with
    // `enableTLSForSentinelMode`, which realtimedb-helpers never sets). A cluster that works
    // today therefore has a plain master port; following the variable would cut this SBC off
    // from it. TLS to the master is ours to opt into.
    let sentinel_master_tls = env.switch("SBC_REDIS_SENTINEL_MASTER_TLS", false)?;
    if matches!(mode, RedisMode::Sentinel { .. }) && tls.is_some() && !sentinel_master_tls {
        warnings.push(
            "ENABLE_JAMBONES_REDIS_TLS is set with JAMBONES_REDIS_SENTINELS: the master is reached over plain TCP, \
             as the Node sidecar does; set SBC_REDIS_SENTINEL_MASTER_TLS=1 for TLS to the master"
                .to_string(),
        );
        tls = None;
    }
    Ok(RedisConfig { mode, tls, timeout: env.millis("SBC_REDIS_TIMEOUT_MS", 1000, 1)? })
}

fn regbot(env: &Env<'_>) -> Result<RegbotConfig, ConfigError> {
    let regbot = RegbotConfig {
        failure_threshold: u32_from(env.count("JAMBONES_REGBOT_REGISTER_FAILURE_THRESHOLD", 3, 1, 10_000)?),
        failure_retry_interval: env.secs("JAMBONES_REGBOT_FAILURE_RETRY_INTERVAL", 300, 1)?,
        default_expires: env.secs("JAMBONES_REGBOT_DEFAULT_EXPIRES_INTERVAL", 3600, 1)?,
        min_expires: env.secs("JAMBONES_REGBOT_MIN_EXPIRES_INTERVAL", 30, 1)?,
        contact_use_ip: env.truthy("JAMBONES_REGBOT_CONTACT_USE_IP"),
        user_agent: env.string("JAMBONES_REGBOT_USER_AGENT", DEFAULT_REGBOT_USER_AGENT),
        batch_size: usize_from(env.count("JAMBONES_REGBOT_BATCH_SIZE", 10, 1, 100_000)?),
        batch_sleep: env.millis("JAMBONES_REGBOT_BATCH_SLEEP_MS", 250, 0)?,
        status_interval: env.millis("SBC_REGBOT_STATUS_INTERVAL_MS", 60_000, 1)?,
        token_ttl: env.secs("SBC_REGBOT_TOKEN_TTL_S", 70, 1)?,
        claim_jitter: env.millis("SBC_REGBOT_CLAIM_JITTER_MS", 15_000, 0)?,
        mode: match env.get("SBC_REGBOT_MODE") {
            None => RegbotMode::Leader,
            Some(name) => {
                name.parse().map_err(|_| invalid("SBC_REGBOT_MODE", name, format!("one of {}", RegbotMode::NAMES)))?
            }
        },
    };
    // A claim that lapses between two check-ins would hand the role to another SBC every
    // cycle.
    if regbot.token_ttl <= regbot.status_interval {
        return Err(invalid(
            "SBC_REGBOT_TOKEN_TTL_S",
            &regbot.token_ttl.as_secs().to_string(),
            format!("more than SBC_REGBOT_STATUS_INTERVAL_MS ({} ms) in seconds", regbot.status_interval.as_millis()),
        ));
    }
    Ok(regbot)
}

/// The brute-force defence. The table size is capped because each tracked source costs
/// about 100 bytes; a million is some 100 MB.
fn ban(env: &Env<'_>) -> Result<BanSettings, ConfigError> {
    Ok(BanSettings {
        max_failures: u32_from(env.count("SBC_AUTH_BAN_FAILURES", 10, 0, 1_000_000)?),
        window: env.secs("SBC_AUTH_BAN_WINDOW_S", 60, 1)?,
        ban: env.secs("SBC_AUTH_BAN_TIME_S", 300, 1)?,
        capacity: usize_from(env.count("SBC_AUTH_BAN_TABLE_SIZE", 65536, 1, 1_000_000)?),
    })
}

/// The range checks above keep these far below the target types' limits; saturate rather
/// than panic all the same.
fn u32_from(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn usize_from(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// db-helpers semantics: `JAMBONES_MYSQL_REJECT_UNAUTHORIZED` set ⇒ TLS, verifying unless it
/// is `0`; all three `JAMBONES_MYSQL_SSL_*_FILE` set ⇒ TLS with those files (verifying).
fn mysql_tls(env: &Env<'_>, warnings: &mut Vec<String>) -> Option<MysqlTls> {
    let reject_unauthorized = env.get("JAMBONES_MYSQL_REJECT_UNAUTHORIZED");
    let ca = env.path("JAMBONES_MYSQL_SSL_CA_FILE");
    let cert = env.path("JAMBONES_MYSQL_SSL_CERT_FILE");
    let key = env.path("JAMBONES_MYSQL_SSL_KEY_FILE");
    let files = match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Some(MysqlTlsFiles { ca, cert, key }),
        (None, None, None) => None,
        _ => {
            warnings.push(
                "only some of JAMBONES_MYSQL_SSL_CA_FILE/_CERT_FILE/_KEY_FILE are set; \
                 all three are needed, so they are ignored"
                    .to_string(),
            );
            None
        }
    };
    if reject_unauthorized.is_none() && files.is_none() {
        return None;
    }
    Some(MysqlTls { verify: reject_unauthorized.map(str::trim) != Some("0"), files })
}

/// `host[:port]` entries; IPv6 hosts as `[::1]:26379` or bare `::1`.
fn parse_sentinels(list: &str) -> Result<Vec<HostPort>, ConfigError> {
    const VAR: &str = "JAMBONES_REDIS_SENTINELS";
    let bad = |item: &str| invalid(VAR, item, "a comma list of host[:port]".into());
    let mut sentinels = Vec::new();
    for item in list_items(list) {
        let (host, port) = if let Some(rest) = item.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad(item))?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| bad(item))?)),
            }
        } else if item.parse::<Ipv6Addr>().is_ok() {
            (item, None)
        } else {
            match item.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (item, None),
            }
        };
        if host.is_empty() {
            return Err(bad(item));
        }
        let port = match port {
            None => DEFAULT_SENTINEL_PORT,
            Some(port) => parse_decimal(port)
                .filter(|p| (1..=65535).contains(p))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad(item))?,
        };
        sentinels.push(HostPort { host: host.to_string(), port });
    }
    if sentinels.is_empty() {
        return Err(bad(list));
    }
    Ok(sentinels)
}

fn parse_cidrs(var: &str, list: &str) -> Result<Vec<Cidr>, ConfigError> {
    list_items(list)
        .map(|item| {
            item.parse()
                .map_err(|_| invalid(var, item, "a comma list of CIDR blocks such as 10.0.0.0/8 or fd00::/8".into()))
        })
        .collect()
}

/// statsd is on only when `ENABLE_METRICS` parses (JavaScript `parseInt`) to exactly 1, as
/// in stats-collector. The `STATS_*` variables are read only then: with metrics off the Node
/// program never looked at them, so neither do we.
fn metrics(env: &Env<'_>) -> Result<Option<MetricsConfig>, ConfigError> {
    if env.get("ENABLE_METRICS").and_then(js_parse_int) != Some(1) {
        return Ok(None);
    }
    let protocol = match env.get("STATS_PROTOCOL").map(|p| p.trim().to_ascii_lowercase()) {
        None => StatsProtocol::Udp,
        Some(p) if p == "udp" => StatsProtocol::Udp,
        Some(p) if p == "tcp" => StatsProtocol::Tcp,
        Some(_) => {
            return Err(invalid("STATS_PROTOCOL", env.get("STATS_PROTOCOL").unwrap_or_default(), "udp or tcp".into()))
        }
    };
    let sample_rate = match env.get("STATS_SAMPLE_RATE") {
        None => 1.0,
        Some(raw) => raw
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| invalid("STATS_SAMPLE_RATE", raw, "a number from 0 to 1".into()))?,
    };
    Ok(Some(MetricsConfig {
        host: env.string("STATS_HOST", "127.0.0.1"),
        port: env.port("STATS_PORT", 8125)?,
        protocol,
        prefix: env.string("STATS_PREFIX", ""),
        tags: env.get("STATS_TAGS").map(|tags| list_items(tags).map(str::to_string).collect()).unwrap_or_default(),
        sample_rate,
        max_buffer_size: usize_from(env.count("STATS_MAX_BUFFER_SIZE", 0, 0, 1 << 20)?),
        buffer_flush_interval: match env.get("STATS_BUFFER_FLUSH_INTERVAL") {
            None => None,
            Some(_) => Some(env.millis("STATS_BUFFER_FLUSH_INTERVAL", 0, 1)?),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest environment the program starts with.
    fn minimal_env() -> HashMap<String, String> {
        [
            ("JAMBONES_MYSQL_HOST", "db.local"),
            ("JAMBONES_MYSQL_USER", "jambones"),
            ("JAMBONES_MYSQL_PASSWORD", "mysql-pw-4711"),
            ("JAMBONES_MYSQL_DATABASE", "jambones"),
            ("JAMBONES_REDIS_HOST", "redis.local"),
            ("DRACHTIO_HOST", "127.0.0.1"),
            ("DRACHTIO_PORT", "9022"),
            ("DRACHTIO_SECRET", "drachtio-secret-cymru"),
            ("JAMBONES_TIME_SERIES_HOST", "influx.local"),
            ("ENCRYPTION_SECRET", "encryption-secret-xyzzy"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn with(mut env: HashMap<String, String>, pairs: &[(&str, &str)]) -> HashMap<String, String> {
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }

    fn without(mut env: HashMap<String, String>, names: &[&str]) -> HashMap<String, String> {
        for name in names {
            env.remove(*name);
        }
        env
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(env: &HashMap<String, String>, argv: &[&str]) -> Config {
        match parse(env, &args(argv)) {
            Ok(Command::Run(config)) => config,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn error(env: &HashMap<String, String>, argv: &[&str]) -> ConfigError {
        match parse(env, &args(argv)) {
            Err(e) => e,
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }

    fn env_error(pairs: &[(&str, &str)]) -> String {
        error(&with(minimal_env(), pairs), &[]).to_string()
    }

    #[test]
    fn every_default() {
        let c = run(&minimal_env(), &[]);
        assert_eq!(c.run_mode, RunMode::Foreground);
        assert_eq!(c.log_target, LogTarget::Stderr);
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.log_facility, LogFacility::Daemon);
        assert_eq!(c.socket_path, PathBuf::from("/tmp/sbc-sip-sidecar.sock"));

        assert_eq!(c.drachtio.host, "127.0.0.1");
        assert_eq!(c.drachtio.port, 9022);
        assert_eq!(c.drachtio.secret.expose(), "drachtio-secret-cymru");
        assert_eq!(c.drachtio.ping_interval, Duration::from_millis(15_000));
        assert_eq!(c.drachtio.pong_timeout, Duration::from_millis(10_000));
        assert_eq!(c.drachtio.backoff_min, Duration::from_millis(150));
        assert_eq!(c.drachtio.backoff_max, Duration::from_millis(30_000));

        assert_eq!(c.mysql.host, "db.local");
        assert_eq!(c.mysql.port, 3306);
        assert_eq!(c.mysql.user, "jambones");
        assert_eq!(c.mysql.password.expose(), "mysql-pw-4711");
        assert_eq!(c.mysql.database, "jambones");
        assert_eq!(c.mysql.connection_limit, 10);
        assert_eq!(c.mysql.tls, None);
        assert_eq!(c.mysql.timeout, Duration::from_millis(1000));
        assert_eq!(c.mysql_write, None);
        assert_eq!(c.mysql_refresh_ttl, None);
        assert_eq!(c.mysql_keep_alive_interval, None);

        assert_eq!(
            c.redis.mode,
            RedisMode::Standalone { host: "redis.local".into(), port: 6379, username: None, password: None }
        );
        assert_eq!(c.redis.tls, None);
        assert_eq!(c.redis.timeout, Duration::from_millis(1000));
        assert_eq!(c.time_series_host, "influx.local");
        assert_eq!(c.metrics, None);

        assert!(!c.node_env_test);
        assert!(!c.hosting);
        assert_eq!(c.cluster_id, "default");
        let cidrs: Vec<String> = c.network_cidrs.iter().map(Cidr::to_string).collect();
        assert_eq!(cidrs, ["192.168.0.0/24", "172.16.0.0/16", "10.0.0.0/8"]);
        assert_eq!(c.sbc_public_address_keep_alive, Duration::from_millis(900_000));
        assert_eq!(c.dead_sbc_age, Duration::from_secs(3600));
        assert_eq!(c.check_expires_interval, Duration::from_millis(20_000));
        assert_eq!(c.expires_interval, Duration::from_millis(60_000));
        assert_eq!(c.options_ping_interval, Duration::from_secs(60));
        assert_eq!(c.options_ping_ttl, Duration::from_secs(300));
        assert!(c.options_response_remove.is_empty());
        assert!(c.register_response_remove.is_empty());

        assert_eq!(
            c.regbot,
            RegbotConfig {
                failure_threshold: 3,
                failure_retry_interval: Duration::from_secs(300),
                default_expires: Duration::from_secs(3600),
                min_expires: Duration::from_secs(30),
                contact_use_ip: false,
                user_agent: "Jambonz 0.9.6".into(),
                batch_size: 10,
                batch_sleep: Duration::from_millis(250),
                status_interval: Duration::from_millis(60_000),
                token_ttl: Duration::from_secs(70),
                claim_jitter: Duration::from_millis(15_000),
                mode: RegbotMode::Leader,
            }
        );

        assert_eq!(c.encryption_secret.expose(), "encryption-secret-xyzzy");
        assert!(!c.legacy_crypto);
        assert_eq!(c.http_user_agent, None);
        assert_eq!(c.webhook_timeout, Duration::from_millis(3000));
        assert_eq!(c.shutdown_grace, Duration::from_millis(5000));
        assert_eq!(c.auth_workers, 8);
        assert_eq!(c.auth_queue, 1024);
        assert_eq!(c.nonce_ttl, Duration::from_secs(300));
        assert!(c.webhook_aor_check);
        assert_eq!(
            c.ban,
            BanSettings {
                max_failures: 10,
                window: Duration::from_secs(60),
                ban: Duration::from_secs(300),
                capacity: 65536
            }
        );
        assert_eq!(c.ban, BanSettings::default());
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn heartbeat_cidrs_default_to_loopback_and_private_networks() {
        let c = run(&minimal_env(), &[]);
        let cidrs: Vec<String> = c.heartbeat_cidrs.iter().map(Cidr::to_string).collect();
        assert_eq!(
            cidrs,
            [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "fc00::/7",
                "fe80::/10"
            ]
        );
        let c = run(&with(minimal_env(), &[("SBC_HEARTBEAT_CIDRS", " 100.64.0.0/10 , 10.1.2.3 ")]), &[]);
        let cidrs: Vec<String> = c.heartbeat_cidrs.iter().map(Cidr::to_string).collect();
        assert_eq!(cidrs, ["100.64.0.0/10", "10.1.2.3/32"]);
    }

    #[test]
    fn heartbeat_cidrs_errors_name_the_variable() {
        assert_eq!(
            error(&with(minimal_env(), &[("SBC_HEARTBEAT_CIDRS", "10.0.0.0/8,10.0.0.0/33")]), &[]).to_string(),
            "invalid SBC_HEARTBEAT_CIDRS=\"10.0.0.0/33\": expected a comma list of CIDR blocks such as 10.0.0.0/8 \
             or fd00::/8"
        );
        assert_eq!(
            error(&with(minimal_env(), &[("SBC_HEARTBEAT_CIDRS", " , ")]), &[]).to_string(),
            "invalid SBC_HEARTBEAT_CIDRS=\" , \": expected at least one CIDR block such as 10.0.0.0/8"
        );
    }

    #[test]
    fn the_new_variables_table_states_the_defaults_parse_applies() {
        let defaults = run(&minimal_env(), &[]);
        for (name, default, meaning) in NEW_VARIABLES {
            assert!(!meaning.is_empty());
            assert!(name.starts_with("SBC_"), "{name}");
            let explicit = run(&with(minimal_env(), &[(name, default)]), &[]);
            assert_eq!(explicit, defaults, "{name}={default} is not the default");
        }
        // And every table entry is actually read: a bad value must be refused.
        for (name, _, _) in NEW_VARIABLES {
            let result = parse(&with(minimal_env(), &[(name, "bogus")]), &[]);
            assert!(result.is_err(), "{name} is not read");
        }
    }

    #[test]
    fn auth_ban_settings_and_their_errors() {
        let env = with(
            minimal_env(),
            &[
                ("SBC_AUTH_BAN_FAILURES", "5"),
                ("SBC_AUTH_BAN_WINDOW_S", "30"),
                ("SBC_AUTH_BAN_TIME_S", "3600"),
                ("SBC_AUTH_BAN_TABLE_SIZE", "1000"),
            ],
        );
        assert_eq!(
            run(&env, &[]).ban,
            BanSettings {
                max_failures: 5,
                window: Duration::from_secs(30),
                ban: Duration::from_secs(3600),
                capacity: 1000
            }
        );
        // 0 failures switches the defence off; the other settings stay as they are.
        let off = run(&with(minimal_env(), &[("SBC_AUTH_BAN_FAILURES", "0")]), &[]).ban;
        assert_eq!(off, BanSettings { max_failures: 0, ..BanSettings::default() });

        assert_eq!(
            env_error(&[("SBC_AUTH_BAN_FAILURES", "-1")]),
            "invalid SBC_AUTH_BAN_FAILURES=\"-1\": expected a whole number from 0 to 1000000"
        );
        assert_eq!(
            env_error(&[("SBC_AUTH_BAN_WINDOW_S", "0")]),
            "invalid SBC_AUTH_BAN_WINDOW_S=\"0\": expected a whole number of seconds from 1 to 31536000"
        );
        assert_eq!(
            env_error(&[("SBC_AUTH_BAN_TIME_S", "5m")]),
            "invalid SBC_AUTH_BAN_TIME_S=\"5m\": expected a whole number of seconds from 1 to 31536000"
        );
        assert_eq!(
            env_error(&[("SBC_AUTH_BAN_TABLE_SIZE", "0")]),
            "invalid SBC_AUTH_BAN_TABLE_SIZE=\"0\": expected a whole number from 1 to 1000000"
        );
        assert_eq!(
            env_error(&[("SBC_AUTH_BAN_TABLE_SIZE", "1000001")]),
            "invalid SBC_AUTH_BAN_TABLE_SIZE=\"1000001\": expected a whole number from 1 to 1000000"
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = run(&with(minimal_env(), &[("JAMBONES_MYSQL_PORT", ""), ("JAMBONES_CLUSTER_ID", "")]), &[]);
        assert_eq!(c.mysql.port, 3306);
        assert_eq!(c.cluster_id, "default");
        assert_eq!(
            error(&with(minimal_env(), &[("DRACHTIO_HOST", "")]), &[]).to_string(),
            "missing DRACHTIO_HOST env var"
        );
    }

    #[test]
    fn every_required_variable_message() {
        let cases: &[(&[&str], &str)] = &[
            (&["JAMBONES_MYSQL_HOST"], "missing JAMBONES_MYSQL_XXX env vars"),
            (&["JAMBONES_MYSQL_USER"], "missing JAMBONES_MYSQL_XXX env vars"),
            (&["JAMBONES_MYSQL_PASSWORD"], "missing JAMBONES_MYSQL_XXX env vars"),
            (&["JAMBONES_MYSQL_DATABASE"], "missing JAMBONES_MYSQL_XXX env vars"),
            (&["JAMBONES_REDIS_HOST"], "missing JAMBONES_REDIS_HOST env var"),
            (&["DRACHTIO_HOST"], "missing DRACHTIO_HOST env var"),
            (&["DRACHTIO_PORT"], "missing DRACHTIO_PORT env var"),
            (&["DRACHTIO_SECRET"], "missing DRACHTIO_SECRET env var"),
            (&["JAMBONES_TIME_SERIES_HOST"], "missing JAMBONES_TIME_SERIES_HOST env var"),
            (&["ENCRYPTION_SECRET"], "missing ENCRYPTION_SECRET (or JWT_SECRET) env var"),
        ];
        for (removed, message) in cases {
            let err = error(&without(minimal_env(), removed), &[]);
            assert_eq!(err, ConfigError::Missing(message.to_string()));
            assert_eq!(err.to_string(), *message);
            assert_eq!(err.exit_code(), 78);
        }
        let err = error(&with(minimal_env(), &[("JAMBONES_REDIS_SENTINELS", "s1:26379")]), &[]);
        assert_eq!(
            err.to_string(),
            "missing JAMBONES_REDIS_SENTINEL_MASTER_NAME env var, \
             JAMBONES_REDIS_SENTINEL_PASSWORD env var is optional"
        );
    }

    #[test]
    fn required_variables_are_checked_in_the_node_order() {
        let err = error(&HashMap::new(), &[]);
        assert_eq!(err.to_string(), "missing JAMBONES_MYSQL_XXX env vars");
        let err = error(&without(minimal_env(), &["DRACHTIO_SECRET", "JAMBONES_REDIS_HOST"]), &[]);
        assert_eq!(err.to_string(), "missing JAMBONES_REDIS_HOST env var");
    }

    #[test]
    fn jwt_secret_is_the_fallback_encryption_secret() {
        let env = with(without(minimal_env(), &["ENCRYPTION_SECRET"]), &[("JWT_SECRET", "jwt-secret")]);
        assert_eq!(run(&env, &[]).encryption_secret.expose(), "jwt-secret");
        let env = with(minimal_env(), &[("JWT_SECRET", "jwt-secret")]);
        assert_eq!(run(&env, &[]).encryption_secret.expose(), "encryption-secret-xyzzy");
    }

    #[test]
    fn malformed_numbers_name_the_variable_and_what_was_expected() {
        assert_eq!(
            env_error(&[("DRACHTIO_PORT", "abc")]),
            "invalid DRACHTIO_PORT=\"abc\": expected a port number 1-65535"
        );
        assert_eq!(
            env_error(&[("DRACHTIO_PORT", "70000")]),
            "invalid DRACHTIO_PORT=\"70000\": expected a port number 1-65535"
        );
        assert_eq!(
            env_error(&[("JAMBONES_MYSQL_PORT", "0")]),
            "invalid JAMBONES_MYSQL_PORT=\"0\": expected a port number 1-65535"
        );
        assert_eq!(
            env_error(&[("CHECK_EXPIRES_INTERVAL", "20s")]),
            "invalid CHECK_EXPIRES_INTERVAL=\"20s\": expected a whole number of milliseconds \
             from 1 to 31536000000"
        );
        assert_eq!(
            env_error(&[("SEND_OPTIONS_PING_INTERVAL", "-5")]),
            "invalid SEND_OPTIONS_PING_INTERVAL=\"-5\": expected a whole number of seconds \
             from 1 to 31536000"
        );
        assert_eq!(
            env_error(&[("JAMBONES_REGBOT_BATCH_SIZE", "0")]),
            "invalid JAMBONES_REGBOT_BATCH_SIZE=\"0\": expected a whole number from 1 to 100000"
        );
        assert_eq!(
            env_error(&[("OPTIONS_RESPONSE_REMOVE", "403, 4o4")]),
            "invalid OPTIONS_RESPONSE_REMOVE=\"4o4\": expected a comma list of SIP status codes \
             100-699"
        );
        assert_eq!(
            env_error(&[("JAMBONES_LOGLEVEL", "verbose")]),
            "invalid JAMBONES_LOGLEVEL=\"verbose\": expected one of trace, debug, info, warn, \
             error, fatal, silent"
        );
        assert_eq!(
            env_error(&[("SBC_LOG_FACILITY", "kern")]),
            "invalid SBC_LOG_FACILITY=\"kern\": expected one of daemon, user, local0, local1, … local7"
        );
        assert_eq!(
            env_error(&[("SBC_REGBOT_MODE", "all")]),
            "invalid SBC_REGBOT_MODE=\"all\": expected one of leader, every"
        );
        let env = with(minimal_env(), &[("SBC_REGBOT_MODE", "Every")]);
        assert_eq!(run(&env, &[]).regbot.mode, RegbotMode::Every);
        assert_eq!(
            env_error(&[("SBC_DRACHTIO_BACKOFF_MAX_MS", "100")]),
            "invalid SBC_DRACHTIO_BACKOFF_MAX_MS=\"100\": expected at least \
             SBC_DRACHTIO_BACKOFF_MIN_MS (150 ms)"
        );
        assert_eq!(
            env_error(&[("SBC_REGBOT_TOKEN_TTL_S", "60")]),
            "invalid SBC_REGBOT_TOKEN_TTL_S=\"60\": expected more than \
             SBC_REGBOT_STATUS_INTERVAL_MS (60000 ms) in seconds"
        );
        let err = error(&with(minimal_env(), &[("EXPIRES_INTERVAL", "x")]), &[]);
        assert_eq!(err.exit_code(), 78);
        assert!(matches!(err, ConfigError::Invalid { ref var, .. } if var == "EXPIRES_INTERVAL"));
    }

    #[test]
    fn numbers_may_have_surrounding_blanks() {
        let c = run(&with(minimal_env(), &[("DRACHTIO_PORT", " 9023 ")]), &[]);
        assert_eq!(c.drachtio.port, 9023);
    }

    #[test]
    fn invalid_secret_values_are_redacted() {
        let err = invalid("JAMBONES_REDIS_PASSWORD", "hunter2", "x".into());
        assert_eq!(err.to_string(), "invalid JAMBONES_REDIS_PASSWORD=\"<redacted>\": expected x");
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn values_from_the_environment() {
        let env = with(
            minimal_env(),
            &[
                ("JAMBONES_LOGLEVEL", "debug"),
                ("SBC_LOG_FACILITY", "local5"),
                ("SBC_SOCKET_PATH", "/run/sbc/ctl.sock"),
                ("JAMBONES_MYSQL_PORT", "3307"),
                ("JAMBONES_MYSQL_CONNECTION_LIMIT", "25"),
                ("JAMBONES_MYSQL_REFRESH_TTL", "30"),
                ("JAMBONES_MYSQL_KEEP_ALIVE_INTERVAL_MS", "0"),
                ("JAMBONES_REDIS_PORT", "6380"),
                ("JAMBONES_REDIS_USERNAME", "sbc"),
                ("JAMBONES_REDIS_PASSWORD", "redis-pw"),
                ("NODE_ENV", "test"),
                ("JAMBONES_HOSTING", "0"),
                ("JAMBONES_CLUSTER_ID", "eu1"),
                ("JAMBONES_NETWORK_CIDR", "10.10.0.0/16, fd00::/8"),
                ("OPTIONS_RESPONSE_REMOVE", "403,404, 405"),
                ("REGISTER_RESPONSE_REMOVE", "401"),
                ("JAMBONES_REGBOT_CONTACT_USE_IP", "false"),
                ("JAMBONES_REGBOT_USER_AGENT", "Acme SBC"),
                ("LEGACY_CRYPTO", "1"),
                ("JAMBONES_HTTP_USER_AGENT_HEADER", "jambonz"),
                ("SBC_AUTH_WORKERS", "4"),
            ],
        );
        let c = run(&env, &[]);
        assert_eq!(c.log_level, LevelFilter::Debug);
        assert_eq!(c.log_facility, LogFacility::Local5);
        assert_eq!(c.socket_path, PathBuf::from("/run/sbc/ctl.sock"));
        assert_eq!(c.mysql.port, 3307);
        assert_eq!(c.mysql.connection_limit, 25);
        assert_eq!(c.mysql_refresh_ttl, Some(Duration::from_secs(30)));
        assert_eq!(c.mysql_keep_alive_interval, None);
        match &c.redis.mode {
            RedisMode::Standalone { port, username, password, .. } => {
                assert_eq!(*port, 6380);
                assert_eq!(username.as_deref(), Some("sbc"));
                assert_eq!(password.as_ref().map(Secret::expose), Some("redis-pw"));
            }
            other => panic!("{other:?}"),
        }
        assert!(c.node_env_test);
        // Truthy is any non-empty string, as in Node.
        assert!(c.hosting);
        assert!(c.regbot.contact_use_ip);
        assert!(c.legacy_crypto);
        assert_eq!(c.cluster_id, "eu1");
        assert_eq!(c.network_cidrs.len(), 2);
        assert_eq!(c.options_response_remove, [403, 404, 405]);
        assert_eq!(c.register_response_remove, [401]);
        assert_eq!(c.regbot.user_agent, "Acme SBC");
        assert_eq!(c.http_user_agent.as_deref(), Some("jambonz"));
        assert_eq!(c.auth_workers, 4);
    }

    #[test]
    fn write_pool_needs_all_four_variables() {
        let write = [
            ("JAMBONES_MYSQL_WRITE_HOST", "primary.local"),
            ("JAMBONES_MYSQL_WRITE_USER", "writer"),
            ("JAMBONES_MYSQL_WRITE_PASSWORD", "write-pw"),
            ("JAMBONES_MYSQL_WRITE_DATABASE", "jambones"),
        ];
        let c = run(&with(minimal_env(), &write), &[]);
        let w = c.mysql_write.unwrap();
        assert_eq!(w.host, "primary.local");
        assert_eq!(w.port, 3306);
        assert_eq!(w.user, "writer");
        assert_eq!(w.password.expose(), "write-pw");
        assert_eq!(w.connection_limit, 10);

        let env = with(
            with(minimal_env(), &write),
            &[
                ("JAMBONES_MYSQL_WRITE_PORT", "3310"),
                ("JAMBONES_MYSQL_WRITE_CONNECTION_LIMIT", "3"),
                ("JAMBONES_MYSQL_CONNECTION_LIMIT", "20"),
            ],
        );
        let c = run(&env, &[]);
        assert_eq!(c.mysql.connection_limit, 20);
        let w = c.mysql_write.unwrap();
        assert_eq!((w.port, w.connection_limit), (3310, 3));

        let c = run(&with(minimal_env(), &write[..3]), &[]);
        assert_eq!(c.mysql_write, None);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("JAMBONES_MYSQL_WRITE_HOST"));
    }

    #[test]
    fn mysql_tls_follows_db_helpers() {
        let tls = |pairs: &[(&str, &str)]| run(&with(minimal_env(), pairs), &[]).mysql.tls;
        assert_eq!(tls(&[("JAMBONES_MYSQL_REJECT_UNAUTHORIZED", "0")]), Some(MysqlTls { verify: false, files: None }));
        assert_eq!(tls(&[("JAMBONES_MYSQL_REJECT_UNAUTHORIZED", "1")]), Some(MysqlTls { verify: true, files: None }));
        assert_eq!(
            tls(&[("JAMBONES_MYSQL_REJECT_UNAUTHORIZED", "false")]),
            Some(MysqlTls { verify: true, files: None })
        );
        let files = [
            ("JAMBONES_MYSQL_SSL_CA_FILE", "/etc/ca.pem"),
            ("JAMBONES_MYSQL_SSL_CERT_FILE", "/etc/cert.pem"),
            ("JAMBONES_MYSQL_SSL_KEY_FILE", "/etc/key.pem"),
        ];
        assert_eq!(
            tls(&files),
            Some(MysqlTls {
                verify: true,
                files: Some(MysqlTlsFiles {
                    ca: "/etc/ca.pem".into(),
                    cert: "/etc/cert.pem".into(),
                    key: "/etc/key.pem".into(),
                })
            })
        );
        let c = run(&with(minimal_env(), &files[..2]), &[]);
        assert_eq!(c.mysql.tls, None);
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn redis_sentinels() {
        let env = with(
            without(minimal_env(), &["JAMBONES_REDIS_HOST"]),
            &[
                ("JAMBONES_REDIS_SENTINELS", "s1.local:26380, s2.local,[::1]:26381,::2"),
                ("JAMBONES_REDIS_SENTINEL_MASTER_NAME", "mymaster"),
                ("JAMBONES_REDIS_SENTINEL_USERNAME", "app"),
                ("JAMBONES_REDIS_SENTINEL_PASSWORD", "master-pw"),
                ("JAMBONES_REDIS_SENTINEL_SERVER_PASSWORD", "sentinel-pw"),
            ],
        );
        let c = run(&env, &[]);
        let hp = |host: &str, port| HostPort { host: host.into(), port };
        assert_eq!(
            c.redis.mode,
            RedisMode::Sentinel {
                sentinels: vec![hp("s1.local", 26380), hp("s2.local", 26379), hp("::1", 26381), hp("::2", 26379)],
                master_name: "mymaster".into(),
                username: Some("app".into()),
                password: Some(Secret::new("master-pw")),
                sentinel_password: Some(Secret::new("sentinel-pw")),
            }
        );
        let bad = with(env.clone(), &[("JAMBONES_REDIS_SENTINELS", "s1.local:2637x")]);
        assert_eq!(
            error(&bad, &[]).to_string(),
            "invalid JAMBONES_REDIS_SENTINELS=\"s1.local:2637x\": expected a comma list of host[:port]"
        );
    }

    #[test]
    fn redis_tls() {
        let c = run(
            &with(
                minimal_env(),
                &[("ENABLE_JAMBONES_REDIS_TLS", "0"), ("JAMBONES_REDIS_TLS_CA_FILE", "/etc/redis-ca.pem")],
            ),
            &[],
        );
        assert_eq!(
            c.redis.tls,
            Some(RedisTls { ca_file: Some("/etc/redis-ca.pem".into()), cert_file: None, key_file: None })
        );
    }

    #[test]
    fn metrics_only_when_enable_metrics_parses_to_one() {
        for off in ["0", "true", "yes", "2", "-1"] {
            let c = run(&with(minimal_env(), &[("ENABLE_METRICS", off)]), &[]);
            assert_eq!(c.metrics, None, "ENABLE_METRICS={off}");
        }
        // With metrics off the STATS_* variables are not looked at.
        let c = run(&with(minimal_env(), &[("ENABLE_METRICS", "0"), ("STATS_PORT", "x")]), &[]);
        assert_eq!(c.metrics, None);

        for on in ["1", " 1", "1abc", "01", "1.5"] {
            let c = run(&with(minimal_env(), &[("ENABLE_METRICS", on)]), &[]);
            assert_eq!(
                c.metrics,
                Some(MetricsConfig {
                    host: "127.0.0.1".into(),
                    port: 8125,
                    protocol: StatsProtocol::Udp,
                    prefix: String::new(),
                    tags: Vec::new(),
                    sample_rate: 1.0,
                    max_buffer_size: 0,
                    buffer_flush_interval: None,
                }),
                "ENABLE_METRICS={on}"
            );
        }
        let env = with(
            minimal_env(),
            &[
                ("ENABLE_METRICS", "1"),
                ("STATS_HOST", "statsd.local"),
                ("STATS_PORT", "9125"),
                ("STATS_PROTOCOL", "tcp"),
                ("STATS_PREFIX", "sbc."),
                ("STATS_TAGS", "env:prod, region:eu"),
                ("STATS_SAMPLE_RATE", "0.5"),
                ("STATS_MAX_BUFFER_SIZE", "1400"),
                ("STATS_BUFFER_FLUSH_INTERVAL", "500"),
            ],
        );
        let m = run(&env, &[]).metrics.unwrap();
        assert_eq!(m.host, "statsd.local");
        assert_eq!(m.port, 9125);
        assert_eq!(m.protocol, StatsProtocol::Tcp);
        assert_eq!(m.prefix, "sbc.");
        assert_eq!(m.tags, ["env:prod", "region:eu"]);
        assert_eq!(m.sample_rate, 0.5);
        assert_eq!(m.max_buffer_size, 1400);
        assert_eq!(m.buffer_flush_interval, Some(Duration::from_millis(500)));

        assert_eq!(
            env_error(&[("ENABLE_METRICS", "1"), ("STATS_SAMPLE_RATE", "2")]),
            "invalid STATS_SAMPLE_RATE=\"2\": expected a number from 0 to 1"
        );
        assert_eq!(
            env_error(&[("ENABLE_METRICS", "1"), ("STATS_PROTOCOL", "uds")]),
            "invalid STATS_PROTOCOL=\"uds\": expected udp or tcp"
        );
    }

    #[test]
    fn debug_output_never_contains_secret_values() {
        let env = with(
            minimal_env(),
            &[
                ("JAMBONES_MYSQL_WRITE_HOST", "primary.local"),
                ("JAMBONES_MYSQL_WRITE_USER", "writer"),
                ("JAMBONES_MYSQL_WRITE_PASSWORD", "write-pw-0815"),
                ("JAMBONES_MYSQL_WRITE_DATABASE", "jambones"),
                ("JAMBONES_REDIS_PASSWORD", "redis-pw-2342"),
            ],
        );
        let c = run(&env, &[]);
        let debug = format!("{c:?}");
        for secret in
            ["mysql-pw-4711", "drachtio-secret-cymru", "encryption-secret-xyzzy", "write-pw-0815", "redis-pw-2342"]
        {
            assert!(!debug.contains(secret), "{secret} leaked");
        }
        assert!(debug.contains("<redacted>"));
        assert_eq!(Secret::new("x").to_string(), "<redacted>");

        let env = with(
            without(minimal_env(), &["JAMBONES_REDIS_HOST"]),
            &[
                ("JAMBONES_REDIS_SENTINELS", "s1"),
                ("JAMBONES_REDIS_SENTINEL_MASTER_NAME", "m"),
                ("JAMBONES_REDIS_SENTINEL_PASSWORD", "master-pw-777"),
                ("JAMBONES_REDIS_SENTINEL_SERVER_PASSWORD", "sentinel-pw-888"),
            ],
        );
        let debug = format!("{:?}", run(&env, &[]));
        assert!(!debug.contains("master-pw-777"));
        assert!(!debug.contains("sentinel-pw-888"));
    }

    /// The Node program reaches a Sentinel master in clear text even with
    /// ENABLE_JAMBONES_REDIS_TLS; so do we unless SBC_REDIS_SENTINEL_MASTER_TLS says otherwise.
    #[test]
    fn redis_tls_with_sentinels_is_plain_to_the_master_unless_opted_in() {
        let tls = [("ENABLE_JAMBONES_REDIS_TLS", "1"), ("JAMBONES_REDIS_TLS_CA_FILE", "/etc/ssl/redis-ca.pem")];
        let standalone = run(&with(minimal_env(), &tls), &[]);
        assert_eq!(standalone.redis.tls.as_ref().and_then(|t| t.ca_file.clone()), Some("/etc/ssl/redis-ca.pem".into()));
        assert!(standalone.warnings.is_empty(), "{:?}", standalone.warnings);

        let sentinel = with(
            without(minimal_env(), &["JAMBONES_REDIS_HOST"]),
            &[("JAMBONES_REDIS_SENTINELS", "s1"), ("JAMBONES_REDIS_SENTINEL_MASTER_NAME", "m")],
        );
        let plain = run(&with(sentinel.clone(), &tls), &[]);
        assert_eq!(plain.redis.tls, None);
        assert!(plain.warnings.iter().any(|w| w.contains("SBC_REDIS_SENTINEL_MASTER_TLS=1")), "{:?}", plain.warnings);
        for on in ["1", "true", "YES", " on "] {
            let opted = run(&with(with(sentinel.clone(), &tls), &[("SBC_REDIS_SENTINEL_MASTER_TLS", on)]), &[]);
            assert!(opted.redis.tls.is_some(), "{on}");
            assert!(opted.warnings.is_empty(), "{:?}", opted.warnings);
        }
        let off = run(&with(with(sentinel, &tls), &[("SBC_REDIS_SENTINEL_MASTER_TLS", "off")]), &[]);
        assert_eq!(off.redis.tls, None);
        let err = error(&with(minimal_env(), &[("SBC_REDIS_SENTINEL_MASTER_TLS", "maybe")]), &[]);
        assert_eq!(
            err.to_string(),
            "invalid SBC_REDIS_SENTINEL_MASTER_TLS=\"maybe\": expected 1 or 0 (true/false, yes/no, on/off)"
        );
    }

    #[test]
    fn command_line_overrides_environment() {
        let env = with(minimal_env(), &[("JAMBONES_LOGLEVEL", "debug"), ("SBC_SOCKET_PATH", "/env.sock")]);
        let c = run(&env, &["--log-level", "warn", "--socket", "/cli.sock", "--log", "syslog"]);
        assert_eq!(c.log_level, LevelFilter::Warn);
        assert_eq!(c.socket_path, PathBuf::from("/cli.sock"));
        assert_eq!(c.log_target, LogTarget::Syslog);

        // An environment value the command line replaces is not even looked at.
        let env = with(minimal_env(), &[("JAMBONES_LOGLEVEL", "verbose")]);
        let c = run(&env, &["--log-level=fatal"]);
        assert_eq!(c.log_level, LevelFilter::Error);
    }

    #[test]
    fn run_modes() {
        assert_eq!(run(&minimal_env(), &["--foreground"]).run_mode, RunMode::Foreground);
        assert_eq!(run(&minimal_env(), &["--daemon"]).run_mode, RunMode::Daemon { pidfile: None });
        assert_eq!(
            run(&minimal_env(), &["--daemon", "--pidfile", "/run/sbc.pid"]).run_mode,
            RunMode::Daemon { pidfile: Some("/run/sbc.pid".into()) }
        );
    }

    #[test]
    fn pidfile_without_daemon_is_a_usage_error() {
        let err = error(&minimal_env(), &["--pidfile", "/run/sbc.pid"]);
        assert!(matches!(err, ConfigError::Usage(_)));
        assert_eq!(err.exit_code(), 64);
        assert_eq!(err.to_string(), "--pidfile only makes sense with --daemon; try 'sbc-sidecar --help'");
    }

    #[test]
    fn usage_errors() {
        let env = minimal_env();
        let err = error(&env, &["--bogus"]);
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().starts_with("Unrecognized option: 'bogus'"), "{err}");
        let err = error(&env, &["--socket"]);
        assert!(err.to_string().starts_with("Argument to option 'socket' missing"), "{err}");
        let err = error(&env, &["--daemon", "--foreground"]);
        assert_eq!(err.exit_code(), 64);
        let err = error(&env, &["--log", "file"]);
        assert_eq!(err.to_string(), "invalid --log \"file\": expected stderr or syslog; try 'sbc-sidecar --help'");
        let err = error(&env, &["--log-level", "loud"]);
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().starts_with("invalid --log-level \"loud\""));
        // A program path passed by mistake is an unexpected argument, not silently skipped.
        let err = error(&env, &["/usr/bin/sbc-sidecar"]);
        assert_eq!(err.to_string(), "unexpected argument \"/usr/bin/sbc-sidecar\"; try 'sbc-sidecar --help'");
        // Command-line mistakes are found before environment ones.
        assert_eq!(error(&HashMap::new(), &["--bogus"]).exit_code(), 64);
    }

    #[test]
    fn help_and_version_need_no_environment() {
        let empty = HashMap::new();
        match parse(&empty, &args(&["--help"])).unwrap() {
            Command::Help(text) => {
                assert_eq!(text, usage());
                assert!(text.starts_with("Usage: sbc-sidecar [OPTIONS]"));
                for option in [
                    "--help",
                    "--version",
                    "--foreground",
                    "--daemon",
                    "--pidfile",
                    "--log ",
                    "--log-level",
                    "--socket",
                ] {
                    assert!(text.contains(option), "{option} missing from usage");
                }
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&empty, &args(&["-V"])).unwrap(),
            Command::Version(format!("sbc-sidecar {}", env!("CARGO_PKG_VERSION")))
        );
        assert!(matches!(parse(&empty, &args(&["-h"])).unwrap(), Command::Help(_)));
    }

    #[test]
    fn network_cidr_errors_name_the_variable() {
        assert_eq!(
            env_error(&[("JAMBONES_NETWORK_CIDR", "10.0.0.0/8,10.0.0.0/33")]),
            "invalid JAMBONES_NETWORK_CIDR=\"10.0.0.0/33\": expected a comma list of CIDR \
             blocks such as 10.0.0.0/8 or fd00::/8"
        );
    }

    #[test]
    fn the_default_network_cidrs_are_the_narrow_node_ones() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // The narrow Node defaults: 192.168.1.x is *not* private by this list.
        let c = run(&minimal_env(), &[]);
        let private = |s| c.network_cidrs.iter().any(|n| n.contains(ip(s)));
        assert!(private("192.168.0.10"));
        assert!(!private("192.168.1.10"));
        assert!(private("172.16.9.9"));
        assert!(!private("172.17.0.1"));
        assert!(private("10.200.0.1"));
        assert!(!private("8.8.8.8"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ConfigError::Usage("x".into()).exit_code(), EX_USAGE);
        assert_eq!(ConfigError::Missing("x".into()).exit_code(), EX_CONFIG);
        assert_eq!(EX_USAGE, 64);
        assert_eq!(EX_CONFIG, 78);
    }
}
