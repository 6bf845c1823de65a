//! Hosting mode device limits: an account's capacity, devices registered through other SBCs,
//! sub-domains counting against their account, and the device-limit alert. The rig is
//! tests/support/registrar_rig.rs.

use mysql::prelude::Queryable;

use sbc_sidecar::registrar::Registrar;
use sbc_sidecar::shared::Shared;

#[path = "support/registrar_rig.rs"]
mod registrar_rig;
use registrar_rig::*;

// ---------------------------------------------------------------------------------------------
// Hosting mode device limits.

fn assert_max_devices(r: &Resp) {
    assert_eq!((r.status, r.reason.as_str()), (503, "Max Devices Registered"), "{}", r.raw);
    assert!(r.raw.starts_with("SIP/2.0 503 Max Devices Registered\r\n"));
}

#[test]
fn account_without_capacity_gets_503_max_devices_registered() {
    let fx = hosting();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    assert_max_devices(&fx.send(&fx.reg("sam")));
}

#[test]
fn limit_reached_is_503_but_a_registered_aor_may_refresh() {
    let fx = hosting();
    let sid = fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    // 0 sessions × 5 + 2 devices = exactly 2 devices
    fx.add_capacity(&sid, &[("voice_call_session", 0), ("device", 2)]);
    for user in ["tom", "uma", "vic"] {
        fx.hook.set_password(user, PASSWORD);
    }
    assert_eq!(fx.register_with_password(&fx.reg("tom"), PASSWORD).status, 200);
    assert_eq!(fx.register_with_password(&fx.reg("uma"), PASSWORD).status, 200);
    assert_max_devices(&fx.send(&fx.reg("vic")));

    // tom again from another port (not the cache): still allowed
    let mut again = fx.reg("tom");
    again.port = 5072;
    assert_eq!(fx.register_with_password(&again, PASSWORD).status, 200);
}

#[test]
fn devices_registered_through_other_sbcs_count_against_the_limit() {
    let fx = hosting();
    let sid = fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.add_capacity(&sid, &[("voice_call_session", 1), ("device", 0)]);
    fx.db.conn().exec_drop("UPDATE accounts SET device_to_call_ratio = 1 WHERE account_sid = ?", (&sid,)).unwrap();
    // another SBC registered wes (only in active-user; its user:<aor> lives elsewhere)
    fx.aors.lock().unwrap().push(fx.aor("wes"));
    let _: () = redis::cmd("ZADD")
        .arg("active-user")
        .arg(now_ms() + 60_000)
        .arg(format!("user:{}", fx.aor("wes")))
        .query(&mut redis_conn())
        .unwrap();
    assert_max_devices(&fx.send(&fx.reg("xia")));
    // wes itself may refresh through this SBC
    fx.hook.set_password("wes", PASSWORD);
    assert_eq!(fx.register_with_password(&fx.reg("wes"), PASSWORD).status, 200);
}

#[test]
fn sub_domains_falling_back_to_an_account_count_against_its_device_limit() {
    let fx = hosting();
    let sid = fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.add_capacity(&sid, &[("voice_call_session", 0), ("device", 2)]);
    for user in ["gus", "hal", "ike"] {
        fx.hook.set_password(user, PASSWORD);
    }
    let sub_reg = |user: &str, sub: &str| {
        let host = format!("{sub}.{}", fx.realm);
        let mut r = fx.reg(user);
        r.ruri = format!("sip:{host}");
        r.to = format!("<sip:{user}@{host}>");
        r.to_host = host;
        r
    };
    assert_eq!(fx.register_with_password(&fx.reg("gus"), PASSWORD).status, 200);
    assert_eq!(fx.register_with_password(&sub_reg("hal", "x"), PASSWORD).status, 200);
    // the account has its 2 devices; a third under yet another sub-domain is refused
    assert_max_devices(&fx.send(&sub_reg("ike", "y")));
    assert_max_devices(&fx.send(&fx.reg("ike")));
}

#[test]
fn the_device_limit_alert_is_raised_once_per_account_not_per_register() {
    let db_fx = hosting();
    let (alerts, alert_rx) = sbc_sidecar::telemetry::AlertSender::in_memory(16);
    let mut settings = base_settings();
    settings.hosting = true;
    let registrar = Registrar::new(settings, &Shared { alerts, ..db_fx.shared() });
    db_fx.add_account(&db_fx.realm, true, Some(("POST", "/auth")));
    for _ in 0..5 {
        let r = db_fx.send_to(&registrar, &db_fx.reg("jo"));
        assert_max_devices(&r);
    }
    let raised: Vec<_> = alert_rx.try_iter().collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].alert_type().map(|t| t.as_str()), Some("account-device-limit"));
}
