//! The regbot phase's database: `N` carriers with one gateway each, the optional index, and the
//! count of `register_status` rows that say `ok`.

use super::*;

pub fn insert_carriers(db: &TestDb, gateways: usize, port: u16) -> Vec<String> {
    let mut conn = db.conn();
    let mut gateway_sids = Vec::with_capacity(gateways);
    let mut start = 0;
    while start < gateways {
        let end = (start + INSERT_CHUNK).min(gateways);
        let mut carrier_params: Vec<mysql::Value> = Vec::new();
        let mut gateway_params: Vec<mysql::Value> = Vec::new();
        for i in start..end {
            let carrier = uuid::Uuid::new_v4().to_string();
            let gateway = uuid::Uuid::new_v4().to_string();
            carrier_params.extend([
                carrier.clone().into(),
                format!("bench regbot {i}").into(),
                format!("bench{i:05}").into(),
                PASSWORD.into(),
                REALM.into(),
            ]);
            gateway_params.extend([gateway.clone().into(), port.into(), carrier.into()]);
            gateway_sids.push(gateway);
        }
        let n = end - start;
        let carriers_sql = format!(
            "INSERT INTO voip_carriers (voip_carrier_sid, name, requires_register, register_username, \
             register_password, register_sip_realm, trunk_type, is_active) VALUES {}",
            vec!["(?, ?, 1, ?, ?, ?, 'static_ip', 1)"; n].join(", ")
        );
        conn.exec_drop(carriers_sql, carrier_params).expect("insert carriers");
        let gateways_sql = format!(
            "INSERT INTO sip_gateways (sip_gateway_sid, ipv4, port, inbound, outbound, voip_carrier_sid, protocol) \
             VALUES {}",
            vec!["(?, '127.0.0.1', ?, 0, 1, ?, 'udp')"; n].join(", ")
        );
        conn.exec_drop(gateways_sql, gateway_params).expect("insert gateways");
        start = end;
    }
    gateway_sids
}

/// `SBC_BENCH_REGBOT_INDEX=1`: index `sip_gateways.voip_carrier_sid`, as the foreign key of the
/// jambonz schema does; `src/store/schema.sql` has no such index.
pub fn add_gateway_index(db: &TestDb) {
    db.conn()
        .query_drop("CREATE INDEX bench_gw_carrier ON sip_gateways (voip_carrier_sid)")
        .expect("index on sip_gateways.voip_carrier_sid");
}

pub fn count_ok(db: &TestDb) -> Option<u64> {
    db.conn()
        .query_first("SELECT COUNT(*) FROM voip_carriers WHERE register_status LIKE '%\"status\":\"ok\"%'")
        .ok()
        .flatten()
}
