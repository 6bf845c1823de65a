//! Which feature servers are drained (spec 5.3, with the fix of spec 14 item 20).
//!
//! `<cluster>:drained-fs` is written by operators through the CLI and may hold a bare IP
//! (drains every feature server on that host) or an `ip:port` (drains one; IPv6 as
//! `[addr]:port`). `<cluster>:active-fs` holds `ip:port`. The Node sidecar compared the two
//! sets as strings, so draining by IP never matched a real member; here both sides are parsed
//! and compared as addresses, which also makes `FE80::1`, `fe80::1` and `::ffff:10.0.0.1` /
//! `10.0.0.1` the same server.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A feature server as an operator names it: an IP, optionally with a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsEndpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl FsEndpoint {
    /// Parses operator input and `drained-fs` members: an IPv4 dotted quad (octets 0–255, as
    /// spec 9.1 validates them), an IPv6 address in any standard notation, `a.b.c.d:port`, or
    /// `[ipv6]:port`. `None` when it is none of these.
    pub fn parse(s: &str) -> Option<FsEndpoint> {
        if let Some(rest) = s.strip_prefix('[') {
            let (addr, port) = rest.split_once("]:")?;
            return Some(FsEndpoint { ip: IpAddr::V6(addr.parse::<Ipv6Addr>().ok()?), port: Some(parse_port(port)?) });
        }
        if let Some(ip) = parse_ipv4(s) {
            return Some(FsEndpoint { ip: IpAddr::V4(ip), port: None });
        }
        if let Ok(ip) = s.parse::<Ipv6Addr>() {
            return Some(FsEndpoint { ip: IpAddr::V6(ip), port: None });
        }
        let (addr, port) = s.rsplit_once(':')?;
        Some(FsEndpoint { ip: IpAddr::V4(parse_ipv4(addr)?), port: Some(parse_port(port)?) })
    }

    /// Parses an `active-fs` member. Besides what [`FsEndpoint::parse`] accepts, this reads the
    /// unbracketed `addr:port` the Node sidecar wrote for IPv6 feature servers: a member always
    /// carries a port, so a trailing `:<digits>` after a valid IPv6 address is taken as one.
    pub fn parse_member(s: &str) -> Option<FsEndpoint> {
        if !s.starts_with('[') && s.matches(':').count() > 1 {
            if let Some((addr, port)) = s.rsplit_once(':') {
                if let (Ok(ip), Some(port)) = (addr.parse::<Ipv6Addr>(), parse_port(port)) {
                    return Some(FsEndpoint { ip: IpAddr::V6(ip), port: Some(port) });
                }
            }
        }
        FsEndpoint::parse(s)
    }

    /// Does this drained entry cover the server at `ip` (and `port`, when the entry names one)?
    fn covers(&self, ip: IpAddr, port: Option<u16>) -> bool {
        self.ip.to_canonical() == ip.to_canonical() && (self.port.is_none() || self.port == port)
    }
}

/// The canonical spelling: `10.0.0.1`, `10.0.0.1:5070`, `fe80::1`, `[fe80::1]:5070`.
impl fmt::Display for FsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, None) => write!(f, "{ip}"),
            (IpAddr::V4(ip), Some(port)) => write!(f, "{ip}:{port}"),
            (IpAddr::V6(ip), Some(port)) => write!(f, "[{ip}]:{port}"),
        }
    }
}

/// The `active-fs` member of a feature server whose OPTIONS came from `address:port`:
/// `ip:port`, with IPv6 addresses in brackets so that the port can be told apart.
pub fn fs_member_key(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// The members of `<cluster>:drained-fs`, ready to be asked about a server.
#[derive(Debug, Clone, Default)]
pub struct DrainedServers {
    endpoints: Vec<FsEndpoint>,
    /// Members that are not addresses (written by hand into Redis): matched as exact strings,
    /// which is all the Node sidecar ever did.
    other: Vec<String>,
}

impl DrainedServers {
    pub fn new<I: IntoIterator<Item = String>>(members: I) -> DrainedServers {
        let mut drained = DrainedServers::default();
        for m in members {
            match FsEndpoint::parse(&m) {
                Some(e) => drained.endpoints.push(e),
                None => drained.other.push(m),
            }
        }
        drained
    }

    /// Is the feature server that sent an OPTIONS from `address:port` drained?
    pub fn contains_source(&self, address: &str, port: u16) -> bool {
        match address.parse::<IpAddr>() {
            Ok(ip) => self.endpoints.iter().any(|e| e.covers(ip, Some(port))),
            Err(_) => {
                let key = fs_member_key(address, port);
                self.other.iter().any(|o| *o == address || *o == key)
            }
        }
    }

    /// Is this `active-fs` member drained? (`fs-list` / `fs-available`.)
    pub fn contains_member(&self, member: &str) -> bool {
        if self.other.iter().any(|o| o == member) {
            return true;
        }
        match FsEndpoint::parse_member(member) {
            Some(m) => self.endpoints.iter().any(|e| e.covers(m.ip, m.port)),
            None => false,
        }
    }
}

/// `a.b.c.d` with 1–3 decimal digits per octet, each at most 255 (leading zeros allowed, as the
/// Node validator allowed them; `std` rejects them).
fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in octets.iter_mut() {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse::<u8>().ok()?;
    }
    match parts.next() {
        Some(_) => None,
        None => Some(Ipv4Addr::from(octets)),
    }
}

/// A port: 1–5 decimal digits, 1–65535.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Option<String> {
        FsEndpoint::parse(s).map(|e| e.to_string())
    }

    #[test]
    fn operator_input_is_an_ip_or_an_ip_with_port() {
        assert_eq!(ep("192.168.1.10").as_deref(), Some("192.168.1.10"));
        assert_eq!(ep("255.255.255.255").as_deref(), Some("255.255.255.255"));
        assert_eq!(ep("010.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ep("192.168.1.10:5070").as_deref(), Some("192.168.1.10:5070"));
        assert_eq!(ep("::1").as_deref(), Some("::1"));
        assert_eq!(ep("::").as_deref(), Some("::"));
        assert_eq!(ep("2001:db8:0:0:0:0:0:1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ep("FE80::1").as_deref(), Some("fe80::1"));
        assert_eq!(ep("[2001:db8::1]:5070").as_deref(), Some("[2001:db8::1]:5070"));
    }

    #[test]
    fn invalid_input_is_rejected() {
        for bad in [
            "",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4:",
            "1.2.3.4:0",
            "1.2.3.4:65536",
            "1.2.3.4:abc",
            "[::1]",
            "[::1]:",
            "[1.2.3.4]:5060",
            "::g",
            "host.example.com",
            "1234.1.1.1",
            " 1.2.3.4",
        ] {
            assert_eq!(FsEndpoint::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn member_key_brackets_ipv6() {
        assert_eq!(fs_member_key("10.0.0.5", 5070), "10.0.0.5:5070");
        assert_eq!(fs_member_key("fe80::1", 5070), "[fe80::1]:5070");
    }

    #[test]
    fn drained_by_bare_ip_covers_every_port_of_that_host() {
        let d = DrainedServers::new(["10.0.0.5".to_string()]);
        assert!(d.contains_source("10.0.0.5", 5070));
        assert!(d.contains_source("10.0.0.5", 5080));
        assert!(!d.contains_source("10.0.0.6", 5070));
        assert!(d.contains_member("10.0.0.5:5070"));
        assert!(d.contains_member("10.0.0.5"));
        assert!(!d.contains_member("10.0.0.50:5070"));
    }

    #[test]
    fn drained_by_ip_and_port_covers_only_that_port() {
        let d = DrainedServers::new(["10.0.0.5:5070".to_string(), "[fe80::1]:5060".to_string()]);
        assert!(d.contains_source("10.0.0.5", 5070));
        assert!(!d.contains_source("10.0.0.5", 5080));
        assert!(d.contains_member("10.0.0.5:5070"));
        assert!(!d.contains_member("10.0.0.5:5080"));
        assert!(!d.contains_member("10.0.0.5"));
        assert!(d.contains_source("fe80::1", 5060));
        assert!(d.contains_source("FE80:0:0:0:0:0:0:1", 5060));
        assert!(!d.contains_source("fe80::1", 5061));
        assert!(d.contains_member("[fe80::1]:5060"));
    }

    #[test]
    fn node_style_ipv6_members_are_understood() {
        let d = DrainedServers::new(["2001:db8::1".to_string()]);
        assert!(d.contains_member("2001:db8::1:5070"));
        assert!(d.contains_member("[2001:db8::1]:5070"));
        assert_eq!(
            FsEndpoint::parse_member("2001:db8::1:5070"),
            Some(FsEndpoint { ip: "2001:db8::1".parse().unwrap(), port: Some(5070) })
        );
        assert_eq!(
            FsEndpoint::parse_member("10.0.0.1:5070"),
            Some(FsEndpoint { ip: "10.0.0.1".parse().unwrap(), port: Some(5070) })
        );
    }

    #[test]
    fn ipv4_mapped_sources_match_their_ipv4_drain() {
        let d = DrainedServers::new(["10.0.0.5".to_string()]);
        assert!(d.contains_source("::ffff:10.0.0.5", 5070));
    }

    #[test]
    fn hand_written_members_match_exactly() {
        let d = DrainedServers::new(["fs-1.internal".to_string()]);
        assert!(d.contains_member("fs-1.internal"));
        assert!(!d.contains_member("fs-2.internal"));
        assert!(!d.contains_source("10.0.0.1", 5060));
    }
}
