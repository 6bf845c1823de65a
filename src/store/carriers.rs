//! The MySQL statements of the regbot, the gateway pinger and the `sbc_addresses` publisher
//! (spec 6.2, 6.4, 7, 8, 12.3). Values are always bound as parameters. Columns are named
//! instead of `SELECT *` (same rows, typed, and robust to columns the schema adds).

use mysql::prelude::{FromValue, Queryable};
use mysql::{PooledConn, Row};
use serde::Serialize;

use crate::store::StoreError;

/// `voip_carriers.trunk_type`. Only a registration trunk (`reg`) changes what the regbot does
/// (ephemeral gateways, spec 6.6); NULL is `static_ip`, and a value this program does not know
/// is kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TrunkType {
    #[default]
    StaticIp,
    Auth,
    Reg,
    Other(String),
}

impl TrunkType {
    pub fn from_sql(value: Option<String>) -> TrunkType {
        match value.as_deref() {
            None | Some("static_ip") => TrunkType::StaticIp,
            Some("auth") => TrunkType::Auth,
            Some("reg") => TrunkType::Reg,
            Some(_) => TrunkType::Other(value.unwrap_or_default()),
        }
    }

    /// The value as the database holds it.
    pub fn as_str(&self) -> &str {
        match self {
            TrunkType::StaticIp => "static_ip",
            TrunkType::Auth => "auth",
            TrunkType::Reg => "reg",
            TrunkType::Other(other) => other,
        }
    }
}

impl Serialize for TrunkType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A `voip_carriers` row as the reconcile reads it.
/// `Debug` is written by hand: the password must not reach a log line.
#[derive(Clone, PartialEq, Eq, Default, Serialize)]
pub struct CarrierRow {
    pub voip_carrier_sid: String,
    pub requires_register: bool,
    pub is_active: bool,
    pub register_username: Option<String>,
    pub register_password: Option<String>,
    pub register_sip_realm: Option<String>,
    pub register_from_user: Option<String>,
    pub register_from_domain: Option<String>,
    pub register_public_ip_in_contact: bool,
    pub outbound_sip_proxy: Option<String>,
    pub account_sid: Option<String>,
    pub trunk_type: TrunkType,
}

impl std::fmt::Debug for CarrierRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarrierRow")
            .field("voip_carrier_sid", &self.voip_carrier_sid)
            .field("requires_register", &self.requires_register)
            .field("is_active", &self.is_active)
            .field("register_username", &self.register_username)
            .field("register_password", &self.register_password.as_ref().map(|_| "<redacted>"))
            .field("register_sip_realm", &self.register_sip_realm)
            .field("register_from_user", &self.register_from_user)
            .field("register_from_domain", &self.register_from_domain)
            .field("register_public_ip_in_contact", &self.register_public_ip_in_contact)
            .field("outbound_sip_proxy", &self.outbound_sip_proxy)
            .field("account_sid", &self.account_sid)
            .field("trunk_type", &self.trunk_type)
            .finish()
    }
}

/// A `sip_gateways` row.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct GatewayRow {
    pub sip_gateway_sid: String,
    pub voip_carrier_sid: String,
    pub ipv4: String,
    pub port: Option<u16>,
    pub protocol: Option<String>,
    pub outbound: bool,
    pub is_active: bool,
    pub use_sips_scheme: bool,
}

/// What the disable step and the alerts need to know about a carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierInfo {
    pub name: String,
    pub trunk_type: TrunkType,
    pub account_sid: Option<String>,
    pub service_provider_sid: Option<String>,
}

const CARRIERS: &str = "SELECT voip_carrier_sid, requires_register, is_active, register_username, \
     register_password, register_sip_realm, register_from_user, register_from_domain, \
     register_public_ip_in_contact, outbound_sip_proxy, account_sid, trunk_type \
     FROM voip_carriers \
     WHERE account_sid IS NULL OR account_sid IN (SELECT account_sid FROM accounts WHERE is_active = 1)";

const GATEWAY_COLUMNS: &str =
    "sip_gateway_sid, voip_carrier_sid, ipv4, port, protocol, outbound, is_active, use_sips_scheme";

fn col<T: FromValue>(row: &mut Row, name: &str) -> Result<T, StoreError> {
    match row.take_opt::<T, _>(name) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(StoreError::BadData(format!("column {name}: {e}"))),
        None => Err(StoreError::BadData(format!("column {name} missing"))),
    }
}

fn flag(row: &mut Row, name: &str) -> Result<bool, StoreError> {
    Ok(col::<Option<i64>>(row, name)?.unwrap_or(0) != 0)
}

fn port(row: &mut Row, name: &str) -> Result<Option<u16>, StoreError> {
    Ok(col::<Option<i64>>(row, name)?.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0))
}

/// Carriers without an account or whose account is active (spec 6.2 step 1), unfiltered.
pub fn carriers(conn: &mut PooledConn) -> Result<Vec<CarrierRow>, StoreError> {
    let rows: Vec<Row> = conn.query(CARRIERS)?;
    rows.into_iter()
        .map(|mut r| {
            Ok(CarrierRow {
                voip_carrier_sid: col(&mut r, "voip_carrier_sid")?,
                requires_register: flag(&mut r, "requires_register")?,
                is_active: flag(&mut r, "is_active")?,
                register_username: col(&mut r, "register_username")?,
                register_password: col(&mut r, "register_password")?,
                register_sip_realm: col(&mut r, "register_sip_realm")?,
                register_from_user: col(&mut r, "register_from_user")?,
                register_from_domain: col(&mut r, "register_from_domain")?,
                register_public_ip_in_contact: flag(&mut r, "register_public_ip_in_contact")?,
                outbound_sip_proxy: col(&mut r, "outbound_sip_proxy")?,
                account_sid: col(&mut r, "account_sid")?,
                trunk_type: TrunkType::from_sql(col(&mut r, "trunk_type")?),
            })
        })
        .collect()
}

fn gateway_row(mut r: Row) -> Result<GatewayRow, StoreError> {
    Ok(GatewayRow {
        sip_gateway_sid: col(&mut r, "sip_gateway_sid")?,
        voip_carrier_sid: col(&mut r, "voip_carrier_sid")?,
        ipv4: col(&mut r, "ipv4")?,
        port: port(&mut r, "port")?,
        protocol: col(&mut r, "protocol")?,
        outbound: flag(&mut r, "outbound")?,
        is_active: flag(&mut r, "is_active")?,
        use_sips_scheme: flag(&mut r, "use_sips_scheme")?,
    })
}

/// Every `outbound` and `is_active` gateway, in one query: the reconcile groups them by
/// carrier. (The Node program asked once per carrier, which is 10,000 round trips for 10,000
/// carriers.)
pub fn registering_gateways(conn: &mut PooledConn) -> Result<Vec<GatewayRow>, StoreError> {
    let rows: Vec<Row> = conn.exec(
        format!("SELECT {GATEWAY_COLUMNS} FROM sip_gateways WHERE outbound = ? AND is_active = ?"),
        (true, true),
    )?;
    rows.into_iter().map(gateway_row).collect()
}

/// The gateways to ping (spec 7): `send_options_ping`, `outbound` and `is_active` all true.
pub fn options_ping_gateways(conn: &mut PooledConn) -> Result<Vec<GatewayRow>, StoreError> {
    let rows: Vec<Row> = conn.exec(
        format!(
            "SELECT {GATEWAY_COLUMNS} FROM sip_gateways WHERE send_options_ping = ? AND outbound = ? AND is_active = ?"
        ),
        (true, true, true),
    )?;
    rows.into_iter().map(gateway_row).collect()
}

pub fn disable_options_ping(conn: &mut PooledConn, sip_gateway_sid: &str) -> Result<(), StoreError> {
    conn.exec_drop("UPDATE sip_gateways SET send_options_ping = 0 WHERE sip_gateway_sid = ?", (sip_gateway_sid,))?;
    Ok(())
}

pub fn account_sip_realm(conn: &mut PooledConn, account_sid: &str) -> Result<Option<String>, StoreError> {
    let realm: Option<Option<String>> =
        conn.exec_first("SELECT sip_realm FROM accounts WHERE account_sid = ?", (account_sid,))?;
    Ok(realm.flatten().filter(|r| !r.is_empty()))
}

/// `system_information.sip_domain_name` of the first row.
pub fn sip_domain_name(conn: &mut PooledConn) -> Result<Option<String>, StoreError> {
    let domain: Option<Option<String>> = conn.query_first("SELECT sip_domain_name FROM system_information LIMIT 1")?;
    Ok(domain.flatten().filter(|d| !d.is_empty()))
}

pub fn carrier_by_sid(conn: &mut PooledConn, voip_carrier_sid: &str) -> Result<Option<CarrierInfo>, StoreError> {
    let row: Option<Row> = conn.exec_first(
        "SELECT name, trunk_type, account_sid, service_provider_sid FROM voip_carriers WHERE voip_carrier_sid = ?",
        (voip_carrier_sid,),
    )?;
    let Some(mut r) = row else { return Ok(None) };
    Ok(Some(CarrierInfo {
        name: col(&mut r, "name")?,
        trunk_type: TrunkType::from_sql(col(&mut r, "trunk_type")?),
        account_sid: col(&mut r, "account_sid")?,
        service_provider_sid: col(&mut r, "service_provider_sid")?,
    }))
}

pub fn write_register_status(conn: &mut PooledConn, voip_carrier_sid: &str, json: &str) -> Result<(), StoreError> {
    conn.exec_drop(
        "UPDATE voip_carriers SET register_status = ? WHERE voip_carrier_sid = ?",
        (json, voip_carrier_sid),
    )?;
    Ok(())
}

pub fn disable_registration(conn: &mut PooledConn, voip_carrier_sid: &str) -> Result<(), StoreError> {
    conn.exec_drop("UPDATE voip_carriers SET requires_register = 0 WHERE voip_carrier_sid = ?", (voip_carrier_sid,))?;
    Ok(())
}

pub fn deactivate_carrier(conn: &mut PooledConn, voip_carrier_sid: &str) -> Result<(), StoreError> {
    conn.exec_drop("UPDATE voip_carriers SET is_active = 0 WHERE voip_carrier_sid = ?", (voip_carrier_sid,))?;
    Ok(())
}

pub fn sbc_address_sid(conn: &mut PooledConn, ipv4: &str) -> Result<Option<String>, StoreError> {
    Ok(conn.exec_first("SELECT sbc_address_sid FROM sbc_addresses WHERE ipv4 = ?", (ipv4,))?)
}

pub fn update_sbc_address(
    conn: &mut PooledConn,
    sbc_address_sid: &str,
    port: u16,
    tls_port: Option<u16>,
    wss_port: Option<u16>,
) -> Result<(), StoreError> {
    conn.exec_drop(
        "UPDATE sbc_addresses SET port = ?, tls_port = ?, wss_port = ?, last_updated = NOW() WHERE sbc_address_sid = ?",
        (port, tls_port, wss_port, sbc_address_sid),
    )?;
    Ok(())
}

pub fn insert_sbc_address(
    conn: &mut PooledConn,
    sbc_address_sid: &str,
    ipv4: &str,
    port: u16,
    tls_port: Option<u16>,
    wss_port: Option<u16>,
) -> Result<(), StoreError> {
    conn.exec_drop(
        "INSERT INTO sbc_addresses (sbc_address_sid, ipv4, port, tls_port, wss_port, last_updated) \
         VALUES (?, ?, ?, ?, ?, NOW())",
        (sbc_address_sid, ipv4, port, tls_port, wss_port),
    )?;
    Ok(())
}

/// Deletes rows not refreshed for `age_secs`; returns how many.
pub fn delete_stale_sbc_addresses(conn: &mut PooledConn, age_secs: u64) -> Result<u64, StoreError> {
    conn.exec_drop(
        "DELETE FROM sbc_addresses WHERE last_updated IS NULL OR last_updated < DATE_SUB(NOW(), INTERVAL ? SECOND)",
        (age_secs,),
    )?;
    Ok(conn.affected_rows())
}
