//! Which gateways to register (spec 6.2): read carriers and gateways, filter, deduplicate,
//! derive each regbot's spec, and compare with the running regbots by identity key.
//!
//! Reading is [`Inventory::load`]; everything after it is pure, so the rules are unit-tested
//! without a database.

use std::collections::{BTreeMap, HashMap, HashSet};

use log::{debug, info};
use md5::{Digest, Md5};
use mysql::PooledConn;
use serde::Serialize;

use super::mode::SentBy;
use super::spec::{valid_from_domain, RegistrationSpec};
use crate::store::carriers::{self, CarrierRow, GatewayRow};
use crate::store::StoreError;

/// The rows a reconcile is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// Carriers with `requires_register` and `is_active`, in query order.
    pub carriers: Vec<CarrierRow>,
    /// Their `outbound` and `is_active` gateways.
    pub gateways: Vec<GatewayRow>,
    /// `accounts.sip_realm` of the accounts whose carriers use an account realm in the Contact.
    pub account_realms: BTreeMap<String, Option<String>>,
    /// `system_information.sip_domain_name`.
    pub sip_domain: Option<String>,
}

impl Inventory {
    pub fn load(conn: &mut PooledConn) -> Result<Inventory, StoreError> {
        let carriers: Vec<CarrierRow> =
            carriers::carriers(conn)?.into_iter().filter(|c| c.requires_register && c.is_active).collect();
        let mut by_carrier: HashMap<String, Vec<GatewayRow>> = HashMap::new();
        for g in carriers::registering_gateways(conn)?.into_iter().filter(|g| g.outbound && g.is_active) {
            by_carrier.entry(g.voip_carrier_sid.clone()).or_default().push(g);
        }
        let mut gateways = Vec::new();
        let mut account_realms = BTreeMap::new();
        for carrier in &carriers {
            // Carrier order first, then the query's order within a carrier, as before.
            gateways.extend(by_carrier.remove(&carrier.voip_carrier_sid).unwrap_or_default());
            if let Some(account) = carrier.account_sid.as_deref().filter(|_| !carrier.register_public_ip_in_contact) {
                if !account_realms.contains_key(account) {
                    account_realms.insert(account.to_string(), carriers::account_sip_realm(conn, account)?);
                }
            }
        }
        let sip_domain = carriers::sip_domain_name(conn)?;
        Ok(Inventory { carriers, gateways, account_realms, sip_domain })
    }

    /// MD5 over the JSON of everything read: equal fingerprints mean nothing to do. It covers
    /// the credentials, so it is compared, never logged.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Md5::digest(&json))
    }
}

/// The regbots that should run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub specs: Vec<RegistrationSpec>,
    /// Carriers whose effective From domain is invalid: `(voip_carrier_sid, domain)`.
    pub invalid_from_domain: Vec<(String, String)>,
    pub sip_domain: Option<String>,
    /// Leader mode: gateway sid → the Contact (`user@host`) a previous leader registered it
    /// with (`<cluster>:regbot-leader-contacts`).
    pub leader_contacts: HashMap<String, String>,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Derives the wanted regbots (spec 6.2 step 4). `contact_use_ip` is
/// `JAMBONES_REGBOT_CONTACT_USE_IP`.
pub fn wanted(inv: &Inventory, contact_use_ip: bool) -> Wanted {
    let mut out = Wanted { sip_domain: inv.sip_domain.clone(), ..Wanted::default() };
    // Node's key is `<ipv4>:<realm (always undefined)>:<user>:<password>`: one registration
    // per host and credentials across all carriers, the first one wins.
    let mut seen: HashSet<(String, String, String)> = HashSet::new();
    for carrier in &inv.carriers {
        for gw in inv.gateways.iter().filter(|g| g.voip_carrier_sid == carrier.voip_carrier_sid) {
            let Some(password) = non_empty(&carrier.register_password) else {
                info!("Gateway {} does not have a password, ignoring", gw.ipv4);
                continue;
            };
            let username = non_empty(&carrier.register_username).unwrap_or("").to_string();
            if !seen.insert((gw.ipv4.clone(), username.clone(), password.to_string())) {
                debug!(
                    "regbot: gateway {} of carrier {} duplicates an earlier registration, skipped",
                    gw.ipv4, carrier.voip_carrier_sid
                );
                continue;
            }
            let sip_realm = non_empty(&carrier.register_sip_realm).unwrap_or(&gw.ipv4).to_string();
            let from_user = non_empty(&carrier.register_from_user).unwrap_or(&username).to_string();
            let from_domain = non_empty(&carrier.register_from_domain).unwrap_or(&sip_realm).to_string();
            if !valid_from_domain(&from_domain) {
                out.invalid_from_domain.push((carrier.voip_carrier_sid.clone(), from_domain));
                continue;
            }
            let account_sip_realm = if carrier.register_public_ip_in_contact {
                None
            } else {
                carrier.account_sid.as_ref().and_then(|a| inv.account_realms.get(a).cloned().flatten())
            };
            out.specs.push(RegistrationSpec {
                voip_carrier_sid: carrier.voip_carrier_sid.clone(),
                sip_gateway_sid: gw.sip_gateway_sid.clone(),
                call_id: gw.sip_gateway_sid.clone(),
                sent_by: SentBy::Leader,
                host: gw.ipv4.trim().to_string(),
                port: gw.port,
                protocol: gw.protocol.clone().unwrap_or_else(|| "udp".to_string()),
                use_sips_scheme: gw.use_sips_scheme,
                username: username.clone(),
                password: password.to_string(),
                sip_realm,
                from_user,
                from_domain,
                use_public_ip_in_contact: carrier.register_public_ip_in_contact || contact_use_ip,
                outbound_sip_proxy: non_empty(&carrier.outbound_sip_proxy).map(str::to_string),
                trunk_type: carrier.trunk_type.clone(),
                account_sip_realm,
            });
        }
    }
    out
}

/// How to get from the running regbots to the wanted ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Gateway sids whose regbot keeps running untouched.
    pub keep: Vec<String>,
    /// New gateways.
    pub start: Vec<RegistrationSpec>,
    /// Gateways whose configuration changed.
    pub replace: Vec<RegistrationSpec>,
    /// Gateway sids no longer wanted.
    pub retire: Vec<String>,
}

/// Compares the running regbots (gateway sid → identity key) with the wanted specs.
pub fn plan(running: &HashMap<String, String>, wanted: &[RegistrationSpec]) -> Plan {
    let mut p = Plan::default();
    let mut wanted_sids = HashSet::new();
    for spec in wanted {
        wanted_sids.insert(spec.sip_gateway_sid.as_str());
        match running.get(&spec.sip_gateway_sid) {
            None => p.start.push(spec.clone()),
            Some(identity) if *identity == spec.identity() => p.keep.push(spec.sip_gateway_sid.clone()),
            Some(_) => p.replace.push(spec.clone()),
        }
    }
    p.retire = running.keys().filter(|sid| !wanted_sids.contains(sid.as_str())).cloned().collect();
    p.retire.sort();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrier(sid: &str) -> CarrierRow {
        CarrierRow {
            voip_carrier_sid: sid.into(),
            requires_register: true,
            is_active: true,
            register_username: Some("user".into()),
            register_password: Some("pass".into()),
            trunk_type: crate::store::carriers::TrunkType::StaticIp,
            ..CarrierRow::default()
        }
    }

    fn gateway(sid: &str, carrier: &str, host: &str) -> GatewayRow {
        GatewayRow {
            sip_gateway_sid: sid.into(),
            voip_carrier_sid: carrier.into(),
            ipv4: host.into(),
            port: Some(5060),
            protocol: Some("udp".into()),
            outbound: true,
            is_active: true,
            use_sips_scheme: false,
        }
    }

    #[test]
    fn specs_get_the_effective_values() {
        let mut c = carrier("c1");
        c.register_from_domain = Some("from.example".into());
        c.account_sid = Some("a1".into());
        let inv = Inventory {
            carriers: vec![c],
            gateways: vec![gateway("g1", "c1", "192.0.2.1")],
            account_realms: [("a1".to_string(), Some("acct.example".to_string()))].into(),
            sip_domain: Some("sys.example".into()),
        };
        let w = wanted(&inv, false);
        assert_eq!(w.specs.len(), 1);
        let s = &w.specs[0];
        assert_eq!(s.sip_realm, "192.0.2.1", "realm defaults to the gateway host");
        assert_eq!(s.from_user, "user");
        assert_eq!(s.from_domain, "from.example");
        assert_eq!(s.account_sip_realm.as_deref(), Some("acct.example"));
        assert!(!s.use_public_ip_in_contact);
        assert_eq!(w.sip_domain.as_deref(), Some("sys.example"));
        assert!(wanted(&inv, true).specs[0].use_public_ip_in_contact, "the env switch applies to every carrier");
    }

    #[test]
    fn no_password_duplicates_and_bad_from_domains_are_skipped() {
        let mut no_pass = carrier("c0");
        no_pass.register_password = Some(String::new());
        let mut bad = carrier("c3");
        bad.register_from_domain = Some("bad domain".into());
        bad.register_username = Some("other".into());
        let inv = Inventory {
            carriers: vec![no_pass, carrier("c1"), carrier("c2"), bad],
            gateways: vec![
                gateway("g0", "c0", "192.0.2.1"),
                gateway("g1", "c1", "192.0.2.1"),
                gateway("g2", "c2", "192.0.2.1"),
                gateway("g2b", "c2", "192.0.2.2"),
                gateway("g3", "c3", "192.0.2.3"),
            ],
            ..Inventory::default()
        };
        let w = wanted(&inv, false);
        let sids: Vec<&str> = w.specs.iter().map(|s| s.sip_gateway_sid.as_str()).collect();
        assert_eq!(sids, vec!["g1", "g2b"], "same host + credentials: the first carrier wins");
        assert_eq!(w.invalid_from_domain, vec![("c3".to_string(), "bad domain".to_string())]);
    }

    #[test]
    fn the_plan_keeps_unchanged_regbots_and_replaces_changed_ones() {
        let inv = Inventory {
            carriers: vec![carrier("c1")],
            gateways: vec![gateway("g1", "c1", "192.0.2.1"), gateway("g2", "c1", "192.0.2.2")],
            ..Inventory::default()
        };
        let specs = wanted(&inv, false).specs;
        let mut changed = specs[1].clone();
        changed.password = "old".into();
        let running: HashMap<String, String> = [
            ("g1".to_string(), specs[0].identity()),
            ("g2".to_string(), changed.identity()),
            ("gone".to_string(), "x".to_string()),
        ]
        .into();
        let p = plan(&running, &specs);
        assert_eq!(p.keep, vec!["g1".to_string()]);
        assert_eq!(p.replace.len(), 1);
        assert_eq!(p.replace[0].sip_gateway_sid, "g2");
        assert!(p.start.is_empty());
        assert_eq!(p.retire, vec!["gone".to_string()]);
        let fresh = plan(&HashMap::new(), &specs);
        assert_eq!(fresh.start.len(), 2);
    }

    #[test]
    fn the_fingerprint_changes_with_any_row() {
        let mut inv = Inventory { carriers: vec![carrier("c1")], ..Inventory::default() };
        let before = inv.fingerprint();
        assert_eq!(before, inv.clone().fingerprint());
        inv.carriers[0].register_password = Some("new".into());
        assert_ne!(before, inv.fingerprint());
        assert_eq!(before.len(), 32);
    }
}
