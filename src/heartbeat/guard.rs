//! Who may send heartbeats, and which service URLs are stored.
//!
//! The Node program took `X-FS-Status` / `X-RTP-Status` from any source: anyone able to send
//! an OPTIONS to the SBC could add itself to `<cluster>:active-fs` (and any URL to
//! `<cluster>:fs-service-url`, where calls are sent), or take a real server out with
//! `closed`. Heartbeats are now accepted only from the networks of `SBC_HEARTBEAT_CIDRS`
//! (private and loopback networks by default, where feature and RTP servers live), and a
//! service URL is stored only when it is a plain `http(s)://host…` URL of bounded length
//! whose host is the heartbeat's own source address: a feature server announces where it
//! itself can be reached (jambonz feature servers send `http://<their IP>:3000`), never
//! another host. A host name is refused, even one that would resolve inside
//! `SBC_HEARTBEAT_CIDRS`: resolving it would put a DNS lookup (and whoever answers it) into the
//! heartbeat thread, and a name may point elsewhere tomorrow.
//!
//! Refusals are logged, but at most one line per [`WARNING_INTERVAL`] for each kind of
//! refusal, with the number of refusals not logged since: the state is two counters, so a
//! flood from many addresses cannot grow it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::warn;

use super::tracker::ServerKind;
use crate::net::{parse_ip, split_host_port, Cidr};
use crate::throttle::Throttle;

/// Where feature servers and RTP servers live unless `SBC_HEARTBEAT_CIDRS` says otherwise:
/// loopback, RFC 1918, RFC 6598 (carrier-grade NAT, used by some clouds), IPv6 unique-local
/// and link-local. Heartbeats from anywhere else are refused.
pub const DEFAULT_HEARTBEAT_CIDRS: &str =
    "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7,fe80::/10";
/// At most one warning line per kind of refusal in this interval.
pub const WARNING_INTERVAL: Duration = crate::throttle::LOG_INTERVAL;

/// Longest `X-FS-ServiceUrl` stored in `<cluster>:fs-service-url`.
pub const MAX_SERVICE_URL_LEN: usize = 512;

/// Whether `url` may go into `<cluster>:fs-service-url`: `http://` or `https://` (any case),
/// a non-empty host, at most [`MAX_SERVICE_URL_LEN`] bytes, no whitespace or control
/// characters.
pub fn valid_service_url(url: &str) -> bool {
    if url.is_empty() || url.len() > MAX_SERVICE_URL_LEN {
        return false;
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // user:password@ is not something a feature server announces.
    if authority.contains('@') {
        return false;
    }
    let Some((host, port)) = split_host_port(authority) else { return false };
    if port.is_some_and(|p| !valid_port(p)) {
        return false;
    }
    if authority.starts_with('[') {
        return host.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The host of a URL that passed [`valid_service_url`] as an IP address; `None` for a name.
fn url_ip(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    split_host_port(authority)?.0.parse().ok()
}

/// Whether `url`'s host is the address `source` (IPv4-mapped IPv6 and IPv4 compare equal).
pub fn url_is_from(url: &str, source: &str) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match (url_ip(url), parse_ip(source)) {
        (Some(host), Some(source)) => canonical(host) == canonical(source),
        _ => false,
    }
}

/// The heartbeat source filter and service-URL check of one heartbeat role.
#[derive(Debug)]
pub struct HeartbeatGuard {
    allowed: Vec<Cidr>,
    refused_warnings: Throttle,
    url_warnings: Throttle,
    foreign_url_warnings: Throttle,
    full_warnings: Throttle,
}

impl Default for HeartbeatGuard {
    /// The `SBC_HEARTBEAT_CIDRS` default: loopback and private networks.
    fn default() -> HeartbeatGuard {
        let allowed = DEFAULT_HEARTBEAT_CIDRS.split(',').filter_map(|c| c.parse().ok()).collect();
        HeartbeatGuard::new(allowed)
    }
}

impl HeartbeatGuard {
    pub fn new(allowed: Vec<Cidr>) -> HeartbeatGuard {
        HeartbeatGuard {
            allowed,
            refused_warnings: Throttle::new(WARNING_INTERVAL),
            url_warnings: Throttle::new(WARNING_INTERVAL),
            foreign_url_warnings: Throttle::new(WARNING_INTERVAL),
            full_warnings: Throttle::new(WARNING_INTERVAL),
        }
    }

    /// Whether a heartbeat from `address` may change the server sets. An address that does
    /// not parse is refused.
    pub fn allows_source(&self, address: &str) -> bool {
        parse_ip(address).is_some_and(|ip| self.allowed.iter().any(|c| c.contains(ip)))
    }

    /// Logs (rate-limited) a heartbeat refused because of its source.
    pub fn note_refused(&mut self, kind: ServerKind, address: &str, port: u16, now: Instant) {
        if let Some(suppressed) = self.refused_warnings.allow(now) {
            let kind = match kind {
                ServerKind::Feature => "X-FS-Status",
                ServerKind::Rtp => "X-RTP-Status",
            };
            warn!(
                "heartbeat refused with 403: source outside SBC_HEARTBEAT_CIDRS source={} port={port} \
                 header={kind} not_logged_since_last={suppressed}",
                printable(address)
            );
        }
    }

    /// Whether `url` may be stored (or removed) by a heartbeat from `address`; when not, logs
    /// (rate-limited) that it was ignored.
    pub fn check_service_url(&mut self, url: &str, address: &str, now: Instant) -> bool {
        if valid_service_url(url) {
            if url_is_from(url, address) {
                return true;
            }
            if let Some(suppressed) = self.foreign_url_warnings.allow(now) {
                warn!(
                    "heartbeat X-FS-ServiceUrl ignored (its host is not the heartbeat's source address) source={} \
                     url={:?} not_logged_since_last={suppressed}",
                    printable(address),
                    url.chars().take(80).collect::<String>()
                );
            }
            return false;
        }
        if let Some(suppressed) = self.url_warnings.allow(now) {
            warn!(
                "heartbeat X-FS-ServiceUrl ignored (not an http(s) URL with a host of at most {MAX_SERVICE_URL_LEN} \
                 bytes) source={} url={:?} not_logged_since_last={suppressed}",
                printable(address),
                url.chars().take(80).collect::<String>()
            );
        }
        false
    }
}

impl HeartbeatGuard {
    /// Logs (rate-limited) a heartbeat answered 503 because the tracked servers reached
    /// their bound.
    pub fn note_full(&mut self, set: &str, max: usize, address: &str, port: u16, now: Instant) {
        if let Some(suppressed) = self.full_warnings.allow(now) {
            warn!(
                "heartbeat refused with 503: {set} already tracks {max} members (SBC_HEARTBEAT_MAX_SERVERS) \
                 source={} port={port} not_logged_since_last={suppressed}",
                printable(address)
            );
        }
    }
}

/// A source address for a log line: short and without control characters.
fn printable(s: &str) -> String {
    s.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(list: &str) -> HeartbeatGuard {
        HeartbeatGuard::new(list.split(',').map(|c| c.parse().unwrap()).collect())
    }

    #[test]
    fn the_default_allows_loopback_and_private_networks_only() {
        let g = HeartbeatGuard::default();
        for inside in [
            "127.0.0.1",
            "127.9.8.7",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.10",
            "100.64.0.1",
            "100.127.255.254",
            "::1",
            "[::1]",
            "fd00::5",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.5",
        ] {
            assert!(g.allows_source(inside), "{inside} refused");
        }
        for outside in
            ["8.8.8.8", "172.32.0.1", "192.169.0.1", "100.128.0.1", "11.0.0.1", "2001:db8::1", "::2", "", "localhost"]
        {
            assert!(!g.allows_source(outside), "{outside} allowed");
        }
    }

    #[test]
    fn a_configured_list_replaces_the_default() {
        let g = guard("100.64.0.0/10,2001:db8::/32");
        assert!(g.allows_source("100.64.1.1"));
        assert!(g.allows_source("2001:db8::7"));
        assert!(!g.allows_source("127.0.0.1"));
        assert!(!g.allows_source("10.0.0.1"));
    }

    #[test]
    fn a_service_url_is_accepted_only_from_its_own_host() {
        assert!(url_is_from("http://127.0.0.20:3000", "127.0.0.20"));
        assert!(url_is_from("https://127.0.0.20/x", "127.0.0.20"));
        assert!(url_is_from("http://[fd00::5]:3000", "[fd00::5]"));
        assert!(url_is_from("http://10.0.0.5:3000", "::ffff:10.0.0.5"));
        assert!(!url_is_from("http://127.0.0.21:3000", "127.0.0.20"));
        assert!(!url_is_from("http://localhost:3000", "127.0.0.1"));
        assert!(!url_is_from("http://fs1.internal:3000", "10.0.0.5"));
        let mut g = HeartbeatGuard::default();
        let now = Instant::now();
        assert!(g.check_service_url("http://127.0.0.20:3000", "127.0.0.20", now));
        assert!(!g.check_service_url("http://127.0.0.99:3000", "127.0.0.20", now));
        assert!(!g.check_service_url("http://fs1.internal:3000", "127.0.0.20", now));
    }

    #[test]
    fn service_urls_must_be_http_with_a_host_and_bounded() {
        for good in [
            "http://10.0.0.5:3000",
            "https://fs1.example.com/path?x=1",
            "HTTP://fs-1:80",
            "http://[fd00::5]:3000/",
            "http://[::1]",
            "http://host_name.internal",
        ] {
            assert!(valid_service_url(good), "{good} refused");
        }
        let long = format!("http://{}.example", "a".repeat(MAX_SERVICE_URL_LEN));
        for bad in [
            "",
            "10.0.0.5:3000",
            "ftp://10.0.0.5",
            "javascript:alert(1)",
            "http://",
            "http:///path",
            "http://:3000",
            "http://host:0",
            "http://host:99999",
            "http://host:abc",
            "http://user:pw@evil.example",
            "http://evil.example/a b",
            "http://evil.example/\r\nX: y",
            "http://evil\u{0}.example",
            "http://[fd00::5",
            "http://[not-v6]:80",
            "http://ev!l.example",
            long.as_str(),
        ] {
            assert!(!valid_service_url(bad), "{bad:?} accepted");
        }
        let just_fits = format!("http://{}", "a".repeat(MAX_SERVICE_URL_LEN - 7));
        assert!(valid_service_url(&just_fits));
    }
}
