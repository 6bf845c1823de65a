//! Authentication against the `clients` table (no webhook): stored flags, failures, passwords
//! that cannot be decrypted, legacy AES-CTR. The rig is tests/support/registrar_rig.rs.

use serde_json::{json, Value};

#[path = "support/registrar_rig.rs"]
mod registrar_rig;
use registrar_rig::*;

// ---------------------------------------------------------------------------------------------
// clients table authentication.

#[test]
fn clients_table_success_stores_the_flags_as_numbers() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "nina", CBC_1234, true);
    let ok = fx.register_with_password(&fx.reg("nina"), "1234");
    assert_eq!(ok.status, 200, "{}", ok.raw);
    let v: Value = serde_json::from_str(&fx.binding("nina").unwrap()).unwrap();
    assert_eq!(
        (
            v["allow_direct_app_calling"].clone(),
            v["allow_direct_queue_calling"].clone(),
            v["allow_direct_user_calling"].clone()
        ),
        (json!(1), json!(0), json!(1))
    );
    assert!(v.get("callHook").is_none());
    assert_eq!(fx.hook.request_count(), 0);
}

#[test]
fn clients_table_failures_are_403_invalid_credentials() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "oli", CBC_1234, true);
    fx.add_client(&sid, "pam", CBC_1234, false);
    for (user, password) in [("oli", "4321"), ("pam", "1234"), ("nobody", "1234")] {
        let r = fx.register_with_password(&fx.reg(user), password);
        assert_eq!(r.status, 403, "{user}");
        assert_eq!(r.header("X-Reason"), Some("Invalid credentials"), "{user}");
        assert_eq!(fx.binding(user), None);
    }
}

#[test]
fn clients_table_password_that_cannot_be_decrypted_is_500() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "quinn", "1234", true);
    assert_eq!(fx.register_with_password(&fx.reg("quinn"), "1234").status, 500);
}

#[test]
fn clients_table_with_legacy_crypto_uses_aes_ctr() {
    let fx = Fx::with(|s| s.legacy_crypto = true);
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "rob", CTR_1234, true);
    assert_eq!(fx.register_with_password(&fx.reg("rob"), "1234").status, 200);
}
