//! Reading the environment with the Node program's conventions, and assembling [`Config`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use super::cli::CommandLine;
use super::roles::{auth_limits, ban, cluster_id, drachtio, metrics, metrics_enabled, parse_cidrs, regbot};
use super::stores::{mysql_pools, redis};
use super::{
    Config, ConfigError, Secret, DEFAULTS_FILE, DEFAULT_HEARTBEAT_CIDRS, DEFAULT_NETWORK_CIDR, DEFAULT_SOCKET_PATH,
    IGNORED_VARIABLES, MAX_MILLIS, MAX_SECS, MIN_SECRET_LEN, PLACEHOLDER_SECRET,
};
use crate::logging::{self, LogFacility};
use crate::registrar::request::ExpiresBounds;

/// Read access to the environment map with the Node program's conventions.
pub(super) struct Env<'a> {
    vars: &'a HashMap<String, String>,
}

impl<'a> Env<'a> {
    pub(super) fn new(vars: &'a HashMap<String, String>) -> Env<'a> {
        Env { vars }
    }

    /// The value, with `""` treated as unset (`process.env.X || default`).
    pub(super) fn get(&self, name: &str) -> Option<&'a str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Any non-empty string, `"0"` and `"false"` included.
    pub(super) fn truthy(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub(super) fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    pub(super) fn optional(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    pub(super) fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    /// A path that must be absolute: the daemon runs with `/` as its working directory.
    pub(super) fn absolute_path(&self, name: &str, default: &str) -> Result<PathBuf, ConfigError> {
        let path = PathBuf::from(self.get(name).unwrap_or(default));
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(invalid(name, &path.display().to_string(), "an absolute path".to_string()))
        }
    }

    /// An on/off switch of ours: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off` (any case).
    /// Unlike the Node program's "set means on", anything else is refused.
    pub(super) fn switch(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
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
    pub(super) fn number(&self, name: &str, default: u64, min: u64, max: u64, what: &str) -> Result<u64, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        parse_decimal(raw)
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| invalid(name, raw, format!("{what} from {min} to {max}")))
    }

    pub(super) fn count(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        self.number(name, default, min, max, "a whole number")
    }

    pub(super) fn millis(&self, name: &str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        self.number(name, default, min, MAX_MILLIS, "a whole number of milliseconds").map(Duration::from_millis)
    }

    pub(super) fn secs(&self, name: &str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        self.number(name, default, min, MAX_SECS, "a whole number of seconds").map(Duration::from_secs)
    }

    pub(super) fn port(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => parse_port(name, raw),
        }
    }

    /// A comma list of SIP status codes; empty entries are skipped.
    pub(super) fn status_list(&self, name: &str) -> Result<Vec<u16>, ConfigError> {
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
pub(super) fn parse_decimal(raw: &str) -> Option<u64> {
    let text = raw.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub(super) fn parse_port(name: &str, raw: &str) -> Result<u16, ConfigError> {
    parse_decimal(raw)
        .filter(|p| (1..=65535).contains(p))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| invalid(name, raw, "a port number 1-65535".into()))
}

/// JavaScript `parseInt(s)` for the `ENABLE_METRICS` test: leading blanks, an optional
/// sign, then as many digits as there are (`"1abc"` → 1, `" 1"` → 1, `"yes"` → none).
pub(super) fn js_parse_int(raw: &str) -> Option<i64> {
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
pub(super) fn list_items(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn is_secret_var(name: &str) -> bool {
    name.contains("PASSWORD") || name.contains("SECRET")
}

pub(super) fn invalid(var: &str, value: &str, expected: String) -> ConfigError {
    let value = if is_secret_var(var) { "<redacted>".to_string() } else { value.to_string() };
    ConfigError::Invalid { var: var.to_string(), value, expected }
}

pub(super) fn missing(message: &str) -> ConfigError {
    ConfigError::Missing(message.to_string())
}

/// The required variables, checked in the Node program's assertion order so the first
/// complaint is the one its operators know.
pub(super) struct Required<'a> {
    pub(super) drachtio_host: &'a str,
    pub(super) drachtio_port: &'a str,
    pub(super) drachtio_secret: &'a str,
    pub(super) redis_sentinels: Option<&'a str>,
    pub(super) time_series_host: &'a str,
    pub(super) encryption_secret: &'a str,
}

pub(super) fn required<'a>(env: &Env<'a>) -> Result<Required<'a>, ConfigError> {
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
        encryption_secret: encryption_secret(env)?,
    })
}

/// `ENCRYPTION_SECRET`, else `JWT_SECRET`. The Node program dies at module load without one
/// of them (spec 1.1); we also refuse the packaged placeholder, from which anyone could derive
/// the nonce key and the `clients.password` key.
fn encryption_secret<'a>(env: &Env<'a>) -> Result<&'a str, ConfigError> {
    let (var, value) = match env.get("ENCRYPTION_SECRET") {
        Some(v) => ("ENCRYPTION_SECRET", v),
        None => match env.get("JWT_SECRET") {
            Some(v) => ("JWT_SECRET", v),
            None => return Err(missing("missing ENCRYPTION_SECRET (or JWT_SECRET) env var")),
        },
    };
    if value.trim() == PLACEHOLDER_SECRET {
        return Err(ConfigError::PlaceholderSecret { var });
    }
    Ok(value)
}

/// The startup warning for a short secret (it must equal the API server's, so it is not
/// refused).
fn short_secret_warning(env: &Env<'_>, secret: &str) -> Option<String> {
    let var = if env.get("ENCRYPTION_SECRET").is_some() { "ENCRYPTION_SECRET" } else { "JWT_SECRET" };
    (secret.len() < MIN_SECRET_LEN).then(|| {
        format!(
            "{var} is shorter than {MIN_SECRET_LEN} bytes: nonces and client passwords are only as safe as it is; \
             set a longer one in {DEFAULTS_FILE} (and in the jambonz API server)"
        )
    })
}

pub(super) fn parse_env(env: &Env<'_>, command_line: CommandLine) -> Result<Config, ConfigError> {
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
    warnings.extend(ignored_variables(env));
    warnings.extend(short_secret_warning(env, required.encryption_secret));
    let auth = auth_limits(env)?;

    Ok(Config {
        run_mode: command_line.run_mode,
        log_target: command_line.log_target,
        log_level,
        log_facility,
        syslog_socket: env.absolute_path("SBC_SYSLOG_SOCKET", "/dev/log")?,
        log_level_file: env.absolute_path("SBC_LOG_LEVEL_FILE", "/etc/default/sbc-sidecar")?,
        socket_path,
        drachtio: drachtio(env, &required, network_cidrs)?,
        mysql,
        mysql_write,
        redis: redis(env, required.redis_sentinels, &auth, &mut warnings)?,
        time_series_host: required.time_series_host.to_string(),
        time_series_port: env.port("SBC_TIME_SERIES_PORT", 8086)?,
        metrics: metrics(env)?,
        node_env_test: env.get("NODE_ENV") == Some("test"),
        hosting: env.truthy("JAMBONES_HOSTING"),
        cluster_id: cluster_id(env),
        heartbeat_cidrs,
        check_expires_interval: env.millis("CHECK_EXPIRES_INTERVAL", 20_000, 1)?,
        expires_interval: env.millis("EXPIRES_INTERVAL", 60_000, 1)?,
        regbot: regbot(env)?,
        encryption_secret: Secret::new(required.encryption_secret),
        legacy_crypto: env.truthy("LEGACY_CRYPTO"),
        http_user_agent: env.optional("JAMBONES_HTTP_USER_AGENT_HEADER"),
        webhook_timeout: env.millis("SBC_WEBHOOK_TIMEOUT_MS", 3000, 1)?,
        shutdown_grace: env.millis("SBC_SHUTDOWN_GRACE_MS", 5000, 0)?,
        auth,
        nonce_ttl: env.secs("SBC_NONCE_TTL_S", 300, 1)?,
        webhook_aor_check: env.switch("SBC_WEBHOOK_AOR_CHECK", true)?,
        register_expires: register_expires(env)?,
        ctl_group: env.optional("SBC_CTL_GROUP"),
        heartbeat_max_servers: usize_from(env.count(
            "SBC_HEARTBEAT_MAX_SERVERS",
            crate::heartbeat::DEFAULT_MAX_SERVERS as u64,
            1,
            1_000_000,
        )?),
        account_cache_ttl: env.millis("SBC_ACCOUNT_CACHE_MS", 5000, 0)?,
        ban: ban(env)?,
        warnings,
    })
}

/// `SBC_REGISTER_MIN_EXPIRES` / `SBC_REGISTER_MAX_EXPIRES`: the minimum must not exceed the
/// maximum.
fn register_expires(env: &Env<'_>) -> Result<ExpiresBounds, ConfigError> {
    let limit = u64::from(u32::MAX);
    let max = env.count("SBC_REGISTER_MAX_EXPIRES", ExpiresBounds::DEFAULT_MAX.into(), 1, limit)?;
    let min = env.count("SBC_REGISTER_MIN_EXPIRES", ExpiresBounds::DEFAULT_MIN.min(max as u32).into(), 1, max)?;
    Ok(ExpiresBounds { min: min as u32, max: max as u32 })
}

/// The one warning about [`IGNORED_VARIABLES`] set to anything but `0` (which asks for
/// nothing). The `STATS_*` ones count only with metrics on: otherwise nothing reads them.
pub(super) fn ignored_variables(env: &Env<'_>) -> Option<String> {
    let metrics = metrics_enabled(env);
    let set: Vec<&str> = IGNORED_VARIABLES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| metrics || !name.starts_with("STATS_"))
        .filter(|name| env.get(name).is_some_and(|value| value.trim() != "0"))
        .collect();
    if set.is_empty() {
        return None;
    }
    Some(format!(
        "{} set but ignored: sbc-sidecar has no SELECT cache, no MySQL connection pings and no statsd buffer \
         (every metric is sent at once); see sbc-sidecar(8)",
        set.join(", ")
    ))
}

/// The range checks above keep these far below the target types' limits; saturate rather
/// than panic all the same.
pub(super) fn u32_from(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn usize_from(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::*;
    use crate::config::RegbotMode;
    use crate::store::redis::RedisTarget;

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
    fn the_packaged_placeholder_secret_is_refused_naming_the_variable_and_the_file() {
        for (var, env) in [
            ("ENCRYPTION_SECRET", with(minimal_env(), &[("ENCRYPTION_SECRET", "change-me")])),
            ("ENCRYPTION_SECRET", with(minimal_env(), &[("ENCRYPTION_SECRET", " change-me ")])),
            ("JWT_SECRET", with(without(minimal_env(), &["ENCRYPTION_SECRET"]), &[("JWT_SECRET", "change-me")])),
            ("JWT_SECRET", with(minimal_env(), &[("ENCRYPTION_SECRET", ""), ("JWT_SECRET", "change-me")])),
        ] {
            let err = error(&env, &[]);
            assert_eq!(err, ConfigError::PlaceholderSecret { var });
            assert_eq!(err.exit_code(), 78);
            let text = err.to_string();
            assert!(text.starts_with(var) && text.contains("/etc/default/sbc-sidecar"), "{text}");
        }
        let err = error(&with(minimal_env(), &[("ENCRYPTION_SECRET", "")]), &[]);
        assert_eq!(err.exit_code(), 78);
    }

    #[test]
    fn a_short_secret_starts_with_a_warning() {
        let c = run(&with(minimal_env(), &[("ENCRYPTION_SECRET", "short-secret")]), &[]);
        assert!(
            c.warnings.iter().any(|w| w.starts_with("ENCRYPTION_SECRET is shorter than 16 bytes")),
            "{:?}",
            c.warnings
        );
        let c = run(&with(minimal_env(), &[("ENCRYPTION_SECRET", "sixteen-bytes-ok")]), &[]);
        assert!(!c.warnings.iter().any(|w| w.contains("shorter than")), "{:?}", c.warnings);
    }

    #[test]
    fn register_expires_bounds() {
        let c = run(&minimal_env(), &[]);
        assert_eq!(c.register_expires, ExpiresBounds { min: 60, max: 3600 });
        let c =
            run(&with(minimal_env(), &[("SBC_REGISTER_MIN_EXPIRES", "30"), ("SBC_REGISTER_MAX_EXPIRES", "600")]), &[]);
        assert_eq!(c.register_expires, ExpiresBounds { min: 30, max: 600 });
        // a maximum below the default minimum lowers the default minimum with it
        let c = run(&with(minimal_env(), &[("SBC_REGISTER_MAX_EXPIRES", "45")]), &[]);
        assert_eq!(c.register_expires, ExpiresBounds { min: 45, max: 45 });
        let err = error(
            &with(minimal_env(), &[("SBC_REGISTER_MIN_EXPIRES", "700"), ("SBC_REGISTER_MAX_EXPIRES", "600")]),
            &[],
        );
        assert!(err.to_string().starts_with("invalid SBC_REGISTER_MIN_EXPIRES=\"700\""), "{err}");
        assert!(error(&with(minimal_env(), &[("SBC_REGISTER_MAX_EXPIRES", "0")]), &[])
            .to_string()
            .contains("SBC_REGISTER_MAX_EXPIRES"));
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
        assert_eq!(c.redis.target, RedisTarget::Direct { host: "redis.local".into(), port: 6380 });
        assert_eq!(c.redis.username.as_deref(), Some("sbc"));
        assert_eq!(c.redis.password.as_deref(), Some("redis-pw"));
        assert!(c.node_env_test);
        // Truthy is any non-empty string, as in Node.
        assert!(c.hosting);
        assert!(c.regbot.contact_use_ip);
        assert!(c.legacy_crypto);
        assert_eq!(c.cluster_id, "eu1");
        assert_eq!(c.drachtio.private_networks.len(), 2);
        assert_eq!(c.regbot.options_response_remove, [403, 404, 405]);
        assert_eq!(c.regbot.register_response_remove, [401]);
        assert_eq!(c.regbot.user_agent, "Acme SBC");
        assert_eq!(c.http_user_agent.as_deref(), Some("jambonz"));
        assert_eq!(c.auth.min_threads, 4);
    }

    /// The Node program's SELECT cache, MySQL pings and statsd buffer are not implemented:
    /// asking for them starts the daemon with one warning naming what is ignored.
    #[test]
    fn ignored_variables_are_named_in_one_warning() {
        let c = run(
            &with(
                minimal_env(),
                &[("JAMBONES_MYSQL_REFRESH_TTL", "30"), ("JAMBONES_MYSQL_KEEP_ALIVE_INTERVAL_MS", "abc")],
            ),
            &[],
        );
        assert_eq!(
            c.warnings,
            ["JAMBONES_MYSQL_REFRESH_TTL, JAMBONES_MYSQL_KEEP_ALIVE_INTERVAL_MS set but ignored: sbc-sidecar has no \
              SELECT cache, no MySQL connection pings and no statsd buffer (every metric is sent at once); see \
              sbc-sidecar(8)"]
        );
        // 0 asks for nothing; the STATS_* ones matter only with metrics on.
        let quiet = [
            ("JAMBONES_MYSQL_REFRESH_TTL", "0"),
            ("JAMBONES_MYSQL_KEEP_ALIVE_INTERVAL_MS", " 0"),
            ("STATS_MAX_BUFFER_SIZE", "1400"),
            ("STATS_BUFFER_FLUSH_INTERVAL", "500"),
        ];
        assert!(run(&with(minimal_env(), &quiet), &[]).warnings.is_empty());
        let metrics = run(&with(with(minimal_env(), &quiet), &[("ENABLE_METRICS", "1")]), &[]);
        assert_eq!(metrics.warnings.len(), 1);
        assert!(
            metrics.warnings[0].starts_with("STATS_MAX_BUFFER_SIZE, STATS_BUFFER_FLUSH_INTERVAL set but ignored"),
            "{:?}",
            metrics.warnings
        );
        let zero = run(&with(minimal_env(), &[("ENABLE_METRICS", "1"), ("STATS_MAX_BUFFER_SIZE", "0")]), &[]);
        assert!(zero.warnings.is_empty(), "{:?}", zero.warnings);
    }
}
