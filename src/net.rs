//! Network values shared by every role: CIDR blocks (`JAMBONES_NETWORK_CIDR`,
//! `SBC_HEARTBEAT_CIDRS`) and the entries of drachtio's hostport lists
//! (`udp/1.2.3.4:5060,tcp/…`, spec section 2).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network, e.g. `10.0.0.0/8`. Host bits in the input are cleared, as the
/// Node `cidr-matcher` does; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a CIDR block: {:?}", self.0)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// `None` if the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Cidr> {
        let network = match addr {
            IpAddr::V4(a) if prefix_len <= 32 => IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(prefix_len))),
            IpAddr::V6(a) if prefix_len <= 128 => IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(prefix_len))),
            _ => return None,
        };
        Some(Cidr { network, prefix_len })
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`)
    /// counts as the IPv4 address it carries, since sockets report IPv4 peers that way.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => u32::from(ip) & v4_mask(self.prefix_len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => u128::from(ip) & v6_mask(self.prefix_len) == u128::from(net),
            _ => false,
        }
    }
}

fn v4_mask(prefix_len: u8) -> u32 {
    // A shift by the full width overflows; /0 is the empty mask.
    u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0)
}

fn v6_mask(prefix_len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.to_string());
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix_len = match prefix {
            // Digits only: `u8::from_str` would also take a leading `+`.
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().map_err(|_| err())?,
            Some(_) => return Err(err()),
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix_len).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// One `<transport>/<ip>:<port>` entry of a drachtio hostport list, borrowed from the list.
/// `ip` is kept as drachtio wrote it (an IPv6 address keeps its brackets: `[::1]`), because
/// the Node sidecar stores and compares these strings as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort<'a> {
    pub transport: &'a str,
    pub ip: &'a str,
    pub port: u16,
}

/// An IP address written bare or in brackets (`10.0.0.1`, `::1`, `[::1]`): how drachtio
/// reports a source address, and how URLs and SIP URIs write an IPv6 host.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    bare.parse().ok()
}

/// Splits `host[:port]`, an IPv6 host in brackets (`[::1]:8080`), into the host without
/// brackets and the port text, unchecked. `None` when a bracket is not closed or anything but
/// `:port` follows it. A bare IPv6 address is not `host:port`: callers that accept one check
/// for it first.
pub fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    Some(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// Parses a hostport list such as `tcp/3.148.70.168:5060,udp/3.148.70.168:5060` with the
/// semantics of the Node sidecar's regex `^(.*)/(.*):(\d+)$` (spec section 2), applied to each
/// trimmed entry: both groups are greedy, so the port is the digits after the last `:`, and
/// the transport runs to the last `/` before it. Entries that do not match (or whose port is
/// not a port number) are skipped.
pub fn parse_hostports(list: &str) -> impl Iterator<Item = HostPort<'_>> {
    list.split(',').filter_map(|entry| {
        let (head, port) = entry.trim().rsplit_once(':')?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (transport, ip) = head.rsplit_once('/')?;
        Some(HostPort { transport, ip, port: port.parse().ok()? })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_bare_or_in_brackets() {
        assert_eq!(parse_ip("10.0.0.1"), Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(parse_ip("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(parse_ip("::1"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        for bad in ["[::1", "::1]", "[10.0.0.1", "host", "", "[]"] {
            assert_eq!(parse_ip(bad), None, "{bad:?}");
        }
        assert_eq!(split_host_port("[::1]:5060"), Some(("::1", Some("5060"))));
        assert_eq!(split_host_port("[::1]"), Some(("::1", None)));
        assert_eq!(split_host_port("example.com:80"), Some(("example.com", Some("80"))));
        assert_eq!(split_host_port("example.com"), Some(("example.com", None)));
        assert_eq!(split_host_port("[::1]x"), None);
        assert_eq!(split_host_port("[::1"), None);
    }

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.network(), IpAddr::from([10, 0, 0, 0]));
        assert_eq!(c.prefix_len(), 8);
        // Host bits are cleared.
        assert_eq!("192.168.1.77/24".parse::<Cidr>().unwrap().to_string(), "192.168.1.0/24");
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().to_string(), "10.1.2.3/32");
        assert_eq!("fd00::1/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().to_string(), "0.0.0.0/0");
        for bad in
            ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/8/8", "example.com/8", ""]
        {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cidr_containment() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let net: Cidr = "172.16.0.0/16".parse().unwrap();
        assert!(net.contains(ip("172.16.0.1")));
        assert!(net.contains(ip("172.16.255.255")));
        assert!(!net.contains(ip("172.17.0.1")));
        assert!(!net.contains(ip("fd00::1")));
        // IPv4-mapped IPv6 peers count as their IPv4 address.
        assert!(net.contains(ip("::ffff:172.16.3.4")));

        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let host: Cidr = "10.1.2.3/32".parse().unwrap();
        assert!(host.contains(ip("10.1.2.3")));
        assert!(!host.contains(ip("10.1.2.4")));

        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12:3456::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
    }

    fn entries(list: &str) -> Vec<(&str, &str, u16)> {
        parse_hostports(list).map(|hp| (hp.transport, hp.ip, hp.port)).collect()
    }

    /// Token 4 and token 6 of the `authenticate` reply in docs/spec/drachtio-capture.txt and
    /// docs/spec/drachtio-capture-uac.txt, and the example of spec section 2.
    #[test]
    fn hostports_of_the_captured_authenticate_replies() {
        let reply = "183#548f0668-c092-4300-a2b7-e06c4afd9449|response|af7dc324-2c52-496b-a00d-6cc3a859045a|OK|\
                     tcp/127.0.0.1:5060,udp/127.0.0.1:5060|v0.9.10-1-g9c2dd4cb6a|tcp/127.0.0.1:5060,udp/127.0.0.1:5060";
        let tokens: Vec<&str> = reply.split('|').collect();
        for list in [tokens[4], tokens[6]] {
            assert_eq!(entries(list), [("tcp", "127.0.0.1", 5060), ("udp", "127.0.0.1", 5060)]);
        }
        assert_eq!(
            entries("tcp/127.0.0.10:5060,udp/127.0.0.10:5060"),
            [("tcp", "127.0.0.10", 5060), ("udp", "127.0.0.10", 5060)]
        );
        assert_eq!(
            entries("tcp/3.148.70.168:5060,tls/3.148.70.168:5061,wss/3.148.70.168:8443,udp/3.148.70.168:5060"),
            [
                ("tcp", "3.148.70.168", 5060),
                ("tls", "3.148.70.168", 5061),
                ("wss", "3.148.70.168", 8443),
                ("udp", "3.148.70.168", 5060)
            ]
        );
    }

    #[test]
    fn ipv6_hostports_keep_their_brackets() {
        assert_eq!(
            entries("udp/[::1]:5060,tcp/[2001:db8::7]:5070"),
            [("udp", "[::1]", 5060), ("tcp", "[2001:db8::7]", 5070)]
        );
    }

    /// `^(.*)/(.*):(\d+)$`: greedy groups split at the last `/` and the last `:`, and the port
    /// is digits only.
    #[test]
    fn hostports_follow_the_node_regex() {
        assert_eq!(entries(" tcp/1.2.3.4:5060 ,bogus,,udp/1.2.3.4:"), [("tcp", "1.2.3.4", 5060)]);
        assert_eq!(entries("a/b/c:5060"), [("a/b", "c", 5060)]);
        assert_eq!(entries("udp/1.2.3.4:+5060,udp/1.2.3.4:70000,udp/1.2.3.4:50a0"), []);
        assert_eq!(entries("/:5060"), [("", "", 5060)]);
    }
}
