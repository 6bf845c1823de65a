//! Gateway OPTIONS pings (blacklist, clear, stop on remove codes, never duplicated by reconnects)
//! and the `sbc_addresses` rows of this SBC. The rig is tests/support/regbot_rig.rs.

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::Duration;

use mysql::prelude::Queryable;
use sbc_test_tools::carrier::Peer;
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::wait_until;

#[path = "support/regbot_rig.rs"]
mod regbot_rig;
use regbot_rig::*;

#[test]
fn gateway_pings_blacklist_failures_clear_on_success_and_stop_on_remove_codes() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(2));
    let carrier = add_carrier(&db, CarrierRow { requires_register: false, ..CarrierRow::default() });
    let failing =
        Peer::start("regbot_options.xml", "127.0.0.162", &[("status", "503"), ("reason", "Service Unavailable")]);
    let port = failing.port;
    let g1 = add_gateway(&db, &carrier, "127.0.0.162", Some(port), "udp", true);
    let gone = Peer::start("regbot_options.xml", "127.0.0.163", &[("status", "404"), ("reason", "Not Found")]);
    let g2 = add_gateway(&db, &carrier, "127.0.0.163", Some(gone.port), "udp", true);
    let mut s = settings(&cluster());
    s.options_ping_interval = Duration::from_millis(300);
    s.options_ping_ttl = Duration::from_secs(60);
    s.options_response_remove = vec![404];
    let _sidecar = Instance::start(&double, &db, s);

    let key1 = format!("blacklist-sip-gateway:{g1}");
    let key2 = format!("blacklist-sip-gateway:{g2}");
    let exists = |k: &str| redis_query::<bool>(redis::cmd("EXISTS").arg(k));
    assert!(wait_until(WAIT, || exists(&key1)), "503 gateway blacklisted");
    let value: String = redis_query(redis::cmd("GET").arg(&key1));
    assert_eq!(value, "1");
    let ttl: i64 = redis_query(redis::cmd("TTL").arg(&key1));
    assert!((1..=60).contains(&ttl), "OPTIONS_PING_TTL: {ttl}");
    let pings = failing.wait_for_requests("OPTIONS", 1, WAIT);
    assert!(
        pings[0].first_line().starts_with(&format!("OPTIONS sip:127.0.0.162:{port} SIP/2.0")),
        "{}",
        pings[0].first_line()
    );

    // 404 is in OPTIONS_RESPONSE_REMOVE: pings switched off for that gateway
    let ping_flag = |g: &str| -> i64 {
        db.conn()
            .exec_first("SELECT send_options_ping FROM sip_gateways WHERE sip_gateway_sid = ?", (g,))
            .unwrap()
            .unwrap()
    };
    assert!(wait_until(WAIT, || ping_flag(&g2) == 0), "send_options_ping = 0 after a 404");
    assert!(exists(&key2));
    let pinged = gone.requests("OPTIONS").len();
    thread::sleep(Duration::from_millis(900));
    assert_eq!(gone.requests("OPTIONS").len(), pinged, "no more pings to a removed gateway");
    assert_eq!(ping_flag(&g1), 1, "503 is not a remove code");

    // the gateway answers again: off the blacklist
    drop(failing);
    let _healthy = Peer::start_on("regbot_options.xml", "127.0.0.162", port, &[("status", "200"), ("reason", "OK")]);
    assert!(wait_until(WAIT, || !exists(&key1)), "a 200 clears the blacklist");
    let _: () = redis_query(redis::cmd("DEL").arg(&key2));
}

#[test]
fn the_pinger_is_not_duplicated_by_reconnects() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(2));
    let admin_port = double.admin_addr().port();
    let gw = Peer::start("regbot_options.xml", "127.0.0.164", &[("status", "200"), ("reason", "OK")]);
    let carrier = add_carrier(&db, CarrierRow { requires_register: false, ..CarrierRow::default() });
    add_gateway(&db, &carrier, "127.0.0.164", Some(gw.port), "udp", true);
    let mut s = settings(&cluster());
    s.options_ping_interval = Duration::from_millis(400);
    let _sidecar = Instance::start(&double, &db, s);
    gw.wait_for_requests("OPTIONS", 2, WAIT);

    // drachtio restarts twice on the same control port
    double.stop();
    let double = Double::start(DoubleConfig {
        admin: SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port)),
        uac_timeout: Duration::from_secs(2),
        ..DoubleConfig::default()
    })
    .unwrap();
    assert!(wait_until(WAIT, || double.app_connections() == 1));
    double.stop();
    let double = Double::start(DoubleConfig {
        admin: SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port)),
        uac_timeout: Duration::from_secs(2),
        ..DoubleConfig::default()
    })
    .unwrap();
    assert!(wait_until(WAIT, || double.app_connections() == 1));

    let before = gw.requests("OPTIONS").len();
    thread::sleep(Duration::from_millis(2400));
    let during = gw.requests("OPTIONS").len() - before;
    // one pinger: about 6 rounds in 2.4 s; three pingers would make about 18
    assert!((3..=8).contains(&during), "{during} pings in 2.4 s at a 400 ms interval");
}

#[test]
fn sbc_addresses_are_published_on_connect_refreshed_and_stale_rows_removed() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(2));
    {
        let mut c = db.conn();
        c.query_drop(
            "INSERT INTO sbc_addresses (sbc_address_sid, ipv4, port, last_updated) VALUES \
             ('stale-1', '198.51.100.77', 5060, DATE_SUB(NOW(), INTERVAL 2 HOUR)), \
             ('stale-2', '198.51.100.78', 5060, NULL), \
             ('alive-1', '198.51.100.79', 5060, DATE_SUB(NOW(), INTERVAL 10 MINUTE))",
        )
        .unwrap();
    }
    let mut s = settings(&cluster());
    s.sbc_public_address_keep_alive = Duration::from_millis(500);
    let _sidecar = Instance::start(&double, &db, s);

    type Row = (String, u16, Option<u16>, Option<u16>, Option<String>);
    let rows = || -> Vec<Row> {
        db.conn()
            .query("SELECT ipv4, port, tls_port, wss_port, CAST(last_updated AS CHAR) FROM sbc_addresses ORDER BY ipv4")
            .unwrap()
    };
    assert!(wait_until(WAIT, || rows().iter().any(|r| r.0 == "127.0.0.1")), "our row inserted: {:?}", rows());
    assert!(wait_until(WAIT, || rows().len() == 2), "stale rows removed: {:?}", rows());
    let ours = rows().into_iter().find(|r| r.0 == "127.0.0.1").unwrap();
    assert_eq!((ours.1, ours.2, ours.3), (double.sip_addr().port(), None, None));
    assert!(rows().iter().any(|r| r.0 == "198.51.100.79"), "a live SBC's row is kept");
    let first_update = ours.4.clone();
    assert!(first_update.is_some(), "last_updated set");
    assert!(
        wait_until(WAIT, || rows().into_iter().find(|r| r.0 == "127.0.0.1").is_some_and(|r| r.4 > first_update)),
        "last_updated refreshed every keep-alive interval"
    );
    let count: i64 =
        db.conn().query_first("SELECT COUNT(*) FROM sbc_addresses WHERE ipv4 = '127.0.0.1'").unwrap().unwrap();
    assert_eq!(count, 1, "updated in place, not inserted again");
}
