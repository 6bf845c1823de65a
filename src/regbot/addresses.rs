//! What drachtio's `hostports` list says about this SBC's SIP addresses (spec 2, 8): the public
//! address a regbot puts in its Contact, and the rows of `sbc_addresses`.

use std::net::Ipv4Addr;

use crate::net::parse_hostports;

/// `sbcPublicIpAddress` of the Node sidecar: `ip:port` per transport, from the public
/// hostports. The last entry of a transport wins; `tcp` and `ws` entries are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicAddresses {
    pub udp: Option<String>,
    pub tls: Option<String>,
    pub wss: Option<String>,
}

impl PublicAddresses {
    pub fn from_hostports(list: &str) -> PublicAddresses {
        let mut out = PublicAddresses::default();
        let mut last_udp_ip = None;
        for hp in parse_hostports(list) {
            let value = format!("{}:{}", hp.ip, hp.port);
            match hp.transport {
                "udp" => {
                    last_udp_ip = Some(hp.ip);
                    out.udp = Some(value);
                }
                "tls" => out.tls = Some(value),
                "wss" => out.wss = Some(value),
                _ => {}
            }
        }
        // Node: without a TLS listener the TLS address is assumed to be the UDP ip on 5061.
        if out.tls.is_none() {
            out.tls = last_udp_ip.map(|ip| format!("{ip}:5061"));
        }
        out
    }

    /// The address for a Contact over `transport`: the UDP address, or the entry of that
    /// transport when there is one (only `tls`/`wss` exist, so TCP uses the UDP address).
    pub fn for_transport(&self, transport: &str) -> Option<&str> {
        let specific = match transport {
            "tls" => self.tls.as_deref(),
            "wss" => self.wss.as_deref(),
            _ => None,
        };
        specific.or(self.udp.as_deref())
    }
}

/// One row of `sbc_addresses` to upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbcAddressRow {
    pub ipv4: String,
    /// From the `udp` entry; 5060 when there is none.
    pub port: u16,
    pub tls_port: Option<u16>,
    pub wss_port: Option<u16>,
}

/// Groups the public hostports by IP (spec 8): `port` from `udp`, `tls_port` from `tls`,
/// `wss_port` from `wss`; `tcp`/`ws` ignored. RFC 1918 addresses are dropped (IPv6 strings are
/// never private here, as in Node). Order of first appearance is kept.
pub fn sbc_address_rows(list: &str) -> Vec<SbcAddressRow> {
    let mut rows: Vec<SbcAddressRow> = Vec::new();
    for hp in parse_hostports(list) {
        if !matches!(hp.transport, "udp" | "tls" | "wss") || is_rfc1918(hp.ip) {
            continue;
        }
        let at = match rows.iter().position(|r| r.ipv4 == hp.ip) {
            Some(at) => at,
            None => {
                rows.push(SbcAddressRow { ipv4: hp.ip.to_string(), port: 5060, tls_port: None, wss_port: None });
                rows.len() - 1
            }
        };
        let row = &mut rows[at];
        match hp.transport {
            "udp" => row.port = hp.port,
            "tls" => row.tls_port = Some(hp.port),
            _ => row.wss_port = Some(hp.port),
        }
    }
    rows
}

/// 10/8, 172.16/12, 192.168/16.
pub fn is_rfc1918(ip: &str) -> bool {
    ip.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_private())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_take_the_last_entry_and_default_tls_to_5061() {
        let p = PublicAddresses::from_hostports("tcp/1.1.1.1:5060,udp/1.1.1.1:5060,udp/2.2.2.2:5062");
        assert_eq!(p.udp.as_deref(), Some("2.2.2.2:5062"));
        assert_eq!(p.tls.as_deref(), Some("2.2.2.2:5061"));
        assert_eq!(p.for_transport("tcp"), Some("2.2.2.2:5062"));
        assert_eq!(p.for_transport("tls"), Some("2.2.2.2:5061"));
        let p = PublicAddresses::from_hostports("udp/1.1.1.1:5060,tls/1.1.1.1:5071");
        assert_eq!(p.for_transport("tls"), Some("1.1.1.1:5071"));
    }

    #[test]
    fn sbc_address_rows_group_by_ip_and_drop_private_addresses() {
        let rows = sbc_address_rows(
            "tcp/3.1.1.1:5060,udp/3.1.1.1:5080,tls/3.1.1.1:5061,wss/3.1.1.1:8443,udp/10.0.0.5:5060,udp/172.20.1.1:5060,tls/4.4.4.4:5061",
        );
        assert_eq!(
            rows,
            vec![
                SbcAddressRow { ipv4: "3.1.1.1".into(), port: 5080, tls_port: Some(5061), wss_port: Some(8443) },
                SbcAddressRow { ipv4: "4.4.4.4".into(), port: 5060, tls_port: Some(5061), wss_port: None },
            ]
        );
        assert!(!is_rfc1918("127.0.0.1"));
        assert!(is_rfc1918("192.168.1.1"));
    }
}
