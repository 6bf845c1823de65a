//! The settings of the roles: the drachtio connection, the regbot, the brute-force defence,
//! the networks and statsd.

use super::env::{invalid, js_parse_int, list_items, parse_port, u32_from, usize_from, Env, Required};
use super::{ConfigError, RegbotMode, Secret, StatsProtocol, DEFAULT_REGBOT_USER_AGENT};
use crate::bans::BanSettings;
use crate::drachtio::ClientConfig;
use crate::net::Cidr;
use crate::regbot::{DnsSettings, RegbotSettings};
use crate::registrar::fair_pool::PoolLimits;
use crate::telemetry::MetricsSettings;

/// The drachtio connection; `private_networks` is `JAMBONES_NETWORK_CIDR`.
pub(super) fn drachtio(
    env: &Env<'_>,
    required: &Required<'_>,
    private_networks: Vec<Cidr>,
) -> Result<ClientConfig, ConfigError> {
    let drachtio = ClientConfig {
        host: required.drachtio_host.to_string(),
        port: parse_port("DRACHTIO_PORT", required.drachtio_port)?,
        secret: Secret::new(required.drachtio_secret),
        ping_interval: env.millis("SBC_DRACHTIO_PING_INTERVAL_MS", 15_000, 1)?,
        pong_timeout: env.millis("SBC_DRACHTIO_PONG_TIMEOUT_MS", 10_000, 1)?,
        backoff_min: env.millis("SBC_DRACHTIO_BACKOFF_MIN_MS", 150, 1)?,
        backoff_max: env.millis("SBC_DRACHTIO_BACKOFF_MAX_MS", 30_000, 1)?,
        private_networks,
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

/// `JAMBONES_CLUSTER_ID`, default `default`: prefix of cluster-scoped Redis keys.
pub(super) fn cluster_id(env: &Env<'_>) -> String {
    env.string("JAMBONES_CLUSTER_ID", "default")
}

/// Outbound registration, the gateway pinger and the `sbc_addresses` publisher.
pub(super) fn regbot(env: &Env<'_>) -> Result<RegbotSettings, ConfigError> {
    let regbot = RegbotSettings {
        cluster_id: cluster_id(env),
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
        register_response_remove: env.status_list("REGISTER_RESPONSE_REMOVE")?,
        options_ping_interval: env.secs("SEND_OPTIONS_PING_INTERVAL", 60, 1)?,
        options_ping_ttl: env.secs("OPTIONS_PING_TTL", 300, 1)?,
        options_response_remove: env.status_list("OPTIONS_RESPONSE_REMOVE")?,
        sbc_public_address_keep_alive: env.millis("SBC_PUBLIC_ADDRESS_KEEP_ALIVE_IN_MILISECOND", 900_000, 1)?,
        dead_sbc_age: env.secs("DEAD_SBC_IN_SECOND", 3600, 1)?,
        // Not from the environment: `regbot::start` reads /etc/resolv.conf.
        dns: DnsSettings::parse_resolv_conf(""),
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
pub(super) fn ban(env: &Env<'_>) -> Result<BanSettings, ConfigError> {
    Ok(BanSettings {
        max_failures: u32_from(env.count("SBC_AUTH_BAN_FAILURES", 10, 0, 1_000_000)?),
        window: env.secs("SBC_AUTH_BAN_WINDOW_S", 60, 1)?,
        ban: env.secs("SBC_AUTH_BAN_TIME_S", 300, 1)?,
        capacity: usize_from(env.count("SBC_AUTH_BAN_TABLE_SIZE", 65536, 1, 1_000_000)?),
        exempt: parse_cidrs("SBC_AUTH_BAN_EXEMPT", env.get("SBC_AUTH_BAN_EXEMPT").unwrap_or(""))?,
    })
}

/// The auth workers: `SBC_AUTH_WORKERS` threads kept, up to `SBC_AUTH_MAX_INFLIGHT`
/// authentications at once, `SBC_AUTH_ACCOUNT_SHARE` percent of those (and of the
/// `SBC_AUTH_QUEUE` waiting places) per account. The defaults carry 400 registrations/s
/// through a webhook that answers in 1 s. The queue is capped because the reader's queue in
/// front of it is a channel allocated up front.
pub(super) fn auth_limits(env: &Env<'_>) -> Result<PoolLimits, ConfigError> {
    let min_threads = usize_from(env.count("SBC_AUTH_WORKERS", 8, 1, 1024)?);
    let max_in_flight = usize_from(env.count("SBC_AUTH_MAX_INFLIGHT", 512, 1, 4096)?);
    if max_in_flight < min_threads {
        return Err(invalid(
            "SBC_AUTH_MAX_INFLIGHT",
            &max_in_flight.to_string(),
            format!("at least SBC_AUTH_WORKERS ({min_threads})"),
        ));
    }
    let share = env.count("SBC_AUTH_ACCOUNT_SHARE", 25, 1, 100)?;
    let queue = usize_from(env.count("SBC_AUTH_QUEUE", 1024, 1, 1_000_000)?);
    Ok(PoolLimits::from_share(min_threads, max_in_flight, queue, u8::try_from(share).unwrap_or(100)))
}

pub(super) fn parse_cidrs(var: &str, list: &str) -> Result<Vec<Cidr>, ConfigError> {
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
pub(super) fn metrics(env: &Env<'_>) -> Result<MetricsSettings, ConfigError> {
    if !metrics_enabled(env) {
        return Ok(MetricsSettings::disabled());
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
    Ok(MetricsSettings {
        enabled: true,
        host: env.string("STATS_HOST", "127.0.0.1"),
        port: env.port("STATS_PORT", 8125)?,
        protocol,
        prefix: env.string("STATS_PREFIX", ""),
        tags: env.get("STATS_TAGS").map(|tags| list_items(tags).map(str::to_string).collect()).unwrap_or_default(),
        sample_rate,
    })
}

/// `ENABLE_METRICS` parses (JavaScript `parseInt`) to exactly 1.
pub(super) fn metrics_enabled(env: &Env<'_>) -> bool {
    env.get("ENABLE_METRICS").and_then(js_parse_int) == Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::*;
    use std::time::Duration;

    use crate::config::StatsProtocol;

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
    fn auth_ban_settings_and_their_errors() {
        let env = with(
            minimal_env(),
            &[
                ("SBC_AUTH_BAN_FAILURES", "5"),
                ("SBC_AUTH_BAN_WINDOW_S", "30"),
                ("SBC_AUTH_BAN_TIME_S", "3600"),
                ("SBC_AUTH_BAN_TABLE_SIZE", "1000"),
                ("SBC_AUTH_BAN_EXEMPT", "192.0.2.0/24, 2001:db8::/32"),
            ],
        );
        assert_eq!(
            run(&env, &[]).ban,
            BanSettings {
                max_failures: 5,
                window: Duration::from_secs(30),
                ban: Duration::from_secs(3600),
                capacity: 1000,
                exempt: vec!["192.0.2.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
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
    fn metrics_only_when_enable_metrics_parses_to_one() {
        for off in ["0", "true", "yes", "2", "-1"] {
            let c = run(&with(minimal_env(), &[("ENABLE_METRICS", off)]), &[]);
            assert_eq!(c.metrics, MetricsSettings::disabled(), "ENABLE_METRICS={off}");
        }
        // With metrics off the STATS_* variables are not looked at.
        let c = run(&with(minimal_env(), &[("ENABLE_METRICS", "0"), ("STATS_PORT", "x")]), &[]);
        assert_eq!(c.metrics, MetricsSettings::disabled());

        for on in ["1", " 1", "1abc", "01", "1.5"] {
            let c = run(&with(minimal_env(), &[("ENABLE_METRICS", on)]), &[]);
            assert_eq!(
                c.metrics,
                MetricsSettings { enabled: true, ..MetricsSettings::disabled() },
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
            ],
        );
        let m = run(&env, &[]).metrics;
        assert!(m.enabled);
        assert_eq!(m.host, "statsd.local");
        assert_eq!(m.port, 9125);
        assert_eq!(m.protocol, StatsProtocol::Tcp);
        assert_eq!(m.prefix, "sbc.");
        assert_eq!(m.tags, ["env:prod", "region:eu"]);
        assert_eq!(m.sample_rate, 0.5);

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
        let private = |s| c.drachtio.private_networks.iter().any(|n| n.contains(ip(s)));
        assert!(private("192.168.0.10"));
        assert!(!private("192.168.1.10"));
        assert!(private("172.16.9.9"));
        assert!(!private("172.17.0.1"));
        assert!(private("10.200.0.1"));
        assert!(!private("8.8.8.8"));
    }
}
