//! Ephemeral gateways of registration trunks (`trunk_type = 'reg'`, spec 6.6): after each
//! REGISTER outcome the carrier's addresses are written to `eph-gw-ip:<ip>` (field = carrier
//! sid, value = Unix seconds until which the registration holds), so that sbc-inbound accepts
//! INVITEs from them.
//!
//! SRV is looked up per the gateway's own transport (`_sip._udp`, `_sip._tcp`, `_sips._tcp`);
//! Node always used `_sip._udp` (spec 14, item 10).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use log::{debug, warn};

use super::dns::{DnsError, Resolver, SrvAnswer};
use crate::store::redis::{run, RedisPool};
use crate::store::StoreError;

/// Lifetime of an `eph-gw-ip:*` hash after its last write.
pub const EPH_KEY_TTL_SECS: u64 = 7200;

pub use crate::store::keys::ephemeral_gateway as eph_key;

/// The SRV service label for a transport (RFC 3263 §4.1).
pub fn srv_service(transport: &str) -> &'static str {
    match transport {
        "tcp" => "_sip._tcp",
        "tls" => "_sips._tcp",
        _ => "_sip._udp",
    }
}

/// The DNS questions the ephemeral gateways ask; a trait so tests can answer them.
pub trait Lookup {
    fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError>;
    fn srv(&self, name: &str) -> Result<SrvAnswer, DnsError>;
}

impl Lookup for Resolver {
    fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        self.lookup_a(name)
    }

    fn srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
        self.lookup_srv(name)
    }
}

/// The addresses a gateway's INVITEs may come from: an IPv4 literal as is; a DNS name with a
/// port → its A records; without a port → the A records of its SRV targets, or of the name
/// itself when there is no SRV record. Lookup errors give an empty list (logged).
pub fn gateway_addresses(dns: &dyn Lookup, host: &str, port: Option<u16>, transport: &str) -> Vec<Ipv4Addr> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return vec![ip];
    }
    let a_records = |name: &str| match dns.a(name) {
        Ok(ips) => ips,
        Err(e) => {
            warn!("ephemeral gateway: A lookup of {name} failed: {e}");
            Vec::new()
        }
    };
    if port.is_some() {
        return a_records(host);
    }
    let service = format!("{}.{host}", srv_service(transport));
    let srv = match dns.srv(&service) {
        Ok(srv) => srv,
        Err(e) => {
            warn!("ephemeral gateway: SRV lookup of {service} failed: {e}");
            SrvAnswer::default()
        }
    };
    if srv.records.is_empty() {
        debug!("ephemeral gateway: no SRV for {service}, using A records of {host}");
        return a_records(host);
    }
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for record in &srv.records {
        let known: Vec<Ipv4Addr> = srv
            .additional_a
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&record.target))
            .map(|(_, ip)| *ip)
            .collect();
        let ips = if known.is_empty() { a_records(&record.target) } else { known };
        for ip in ips {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The gateway of a registration trunk whose addresses are to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphGateway {
    pub voip_carrier_sid: String,
    pub sip_gateway_sid: String,
    pub host: String,
    pub port: Option<u16>,
    /// `udp`, `tcp` or `tls`: picks the SRV service.
    pub transport: String,
}

/// Writes and deletes the `eph-gw-ip:*` fields, remembering which addresses it wrote for
/// which carrier so they can be deleted when the carrier's last regbot stops.
pub struct EphemeralGateways {
    redis: RedisPool,
    dns: Box<dyn Lookup + Send>,
    /// carrier sid → gateway sid → every address written for it.
    written: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
}

impl EphemeralGateways {
    pub fn new(redis: RedisPool, dns: Box<dyn Lookup + Send>) -> EphemeralGateways {
        EphemeralGateways { redis, dns, written: HashMap::new() }
    }

    /// `HSET eph-gw-ip:<ip> <carrier> <now + expires>; EXPIRE … 7200` for every address of the
    /// gateway, in one MULTI/EXEC. Expires 0 (a failure) writes `now`: readers treat the field
    /// as expired.
    pub fn refresh(&mut self, gw: &EphGateway, expires: u64, now_unix: u64) -> Result<Vec<Ipv4Addr>, StoreError> {
        let ips = gateway_addresses(self.dns.as_ref(), &gw.host, gw.port, &gw.transport);
        let voip_carrier_sid = gw.voip_carrier_sid.as_str();
        let remembered =
            self.written.entry(gw.voip_carrier_sid.clone()).or_default().entry(gw.sip_gateway_sid.clone()).or_default();
        for ip in &ips {
            if !remembered.contains(ip) {
                remembered.push(*ip);
            }
        }
        if ips.is_empty() {
            return Ok(ips);
        }
        let until = now_unix.saturating_add(expires);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for ip in &ips {
            let key = eph_key(ip);
            pipe.cmd("HSET").arg(&key).arg(voip_carrier_sid).arg(until).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(EPH_KEY_TTL_SECS).ignore();
        }
        run(&self.redis, |conn| Ok(pipe.query::<()>(&mut **conn)?))?;
        debug!("ephemeral gateways carrier={voip_carrier_sid} ips={ips:?} until={until}");
        Ok(ips)
    }

    /// `HDEL eph-gw-ip:<ip> <carrier>` for every address written for the carrier. Redis
    /// removes a hash with its last field, which is Node's "DEL when empty".
    pub fn delete_carrier(&mut self, voip_carrier_sid: &str) -> Result<(), StoreError> {
        let Some(gateways) = self.written.get(voip_carrier_sid) else {
            return Ok(());
        };
        let mut ips: Vec<Ipv4Addr> = gateways.values().flatten().copied().collect();
        ips.sort();
        ips.dedup();
        if !ips.is_empty() {
            let mut pipe = redis::pipe();
            for ip in &ips {
                pipe.cmd("HDEL").arg(eph_key(ip)).arg(voip_carrier_sid).ignore();
            }
            run(&self.redis, |conn| Ok(pipe.query::<()>(&mut **conn)?))?;
        }
        // Forgotten only once deleted: a failed delete is retried with the next one.
        self.written.remove(voip_carrier_sid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::super::dns::SrvRecord;
    use super::*;

    #[derive(Default)]
    struct FakeDns {
        a: HashMap<String, Vec<Ipv4Addr>>,
        srv: HashMap<String, SrvAnswer>,
        asked: RefCell<Vec<String>>,
    }

    impl Lookup for FakeDns {
        fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
            self.asked.borrow_mut().push(format!("A {name}"));
            self.a.get(name).cloned().ok_or_else(|| DnsError::Timeout(name.into()))
        }
        fn srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
            self.asked.borrow_mut().push(format!("SRV {name}"));
            Ok(self.srv.get(name).cloned().unwrap_or_default())
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, last)
    }

    #[test]
    fn srv_names_follow_the_transport() {
        assert_eq!(srv_service("udp"), "_sip._udp");
        assert_eq!(srv_service("tcp"), "_sip._tcp");
        assert_eq!(srv_service("tls"), "_sips._tcp");
    }

    #[test]
    fn addresses_from_literal_a_srv_and_fallback() {
        let mut dns = FakeDns::default();
        assert_eq!(gateway_addresses(&dns, "203.0.113.5", None, "udp"), vec![Ipv4Addr::new(203, 0, 113, 5)]);
        assert!(dns.asked.borrow().is_empty(), "no lookup for a literal");

        dns.a.insert("gw.example".into(), vec![ip(1), ip(2)]);
        assert_eq!(gateway_addresses(&dns, "gw.example", Some(5060), "udp"), vec![ip(1), ip(2)]);
        assert_eq!(dns.asked.borrow().as_slice(), ["A gw.example"], "a port means no SRV");

        dns.asked.borrow_mut().clear();
        assert_eq!(gateway_addresses(&dns, "gw.example", None, "tls"), vec![ip(1), ip(2)]);
        assert_eq!(dns.asked.borrow().as_slice(), ["SRV _sips._tcp.gw.example", "A gw.example"]);

        dns.srv.insert(
            "_sip._tcp.gw.example".into(),
            SrvAnswer {
                records: vec![
                    SrvRecord { priority: 10, weight: 0, port: 5060, target: "a.gw.example".into() },
                    SrvRecord { priority: 20, weight: 0, port: 5060, target: "b.gw.example".into() },
                ],
                additional_a: vec![("b.gw.example".into(), ip(8))],
            },
        );
        dns.a.insert("a.gw.example".into(), vec![ip(7), ip(8)]);
        dns.asked.borrow_mut().clear();
        assert_eq!(gateway_addresses(&dns, "gw.example", None, "tcp"), vec![ip(7), ip(8)]);
        assert_eq!(
            dns.asked.borrow().as_slice(),
            ["SRV _sip._tcp.gw.example", "A a.gw.example"],
            "additional records save a lookup"
        );

        assert!(gateway_addresses(&dns, "unknown.example", Some(5060), "udp").is_empty(), "errors give nothing");
    }
}
