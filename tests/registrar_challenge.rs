//! What the registrar refuses before authentication (Appendix B, row by row), the 401
//! challenge it sends, and how it treats nonces and Authorization headers. The rig is
//! tests/support/registrar_rig.rs.

use std::time::Duration;

use sbc_sidecar::registrar::nonce::NonceSigner;

#[path = "support/registrar_rig.rs"]
mod registrar_rig;
use registrar_rig::*;

// ---------------------------------------------------------------------------------------------
// Appendix B, row by row, before authentication.

#[test]
fn request_uri_with_an_ipv4_host_is_forbidden() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let mut reg = fx.reg("alice");
    reg.ruri = "sip:127.0.0.1:5060".into();
    let r = fx.send(&reg);
    assert_eq!((r.status, r.reason.as_str()), (403, "Forbidden"));
    assert!(!r.has("X-Reason"));
}

#[test]
fn register_without_contact_is_400_with_x_reason() {
    let fx = Fx::new();
    let mut reg = fx.reg("alice");
    reg.contact = None;
    let r = fx.send(&reg);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("X-Reason"), Some("Contact header is required for REGISTER requests"));
}

#[test]
fn register_without_any_expires_is_a_plain_400() {
    let fx = Fx::new();
    let mut reg = fx.reg("alice");
    reg.contact = Some("<sip:alice@127.0.0.1:5070>".into());
    reg.expires = None;
    let r = fx.send(&reg);
    assert_eq!(r.status, 400);
    assert!(!r.has("X-Reason"));
}

#[test]
fn unparseable_to_uri_is_403_invalid_address_of_record() {
    let fx = Fx::new();
    let mut reg = fx.reg("jane");
    reg.to = format!("<sip:jane@{0}@{0}>", fx.realm);
    let r = fx.send(&reg);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("Invalid address of record"));
}

#[test]
fn unknown_realm_without_hosting_is_403_unknown_or_invalid_realm() {
    let fx = Fx::new();
    let r = fx.send(&fx.reg("alice"));
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("Unknown or invalid realm"));
}

#[test]
fn unknown_realm_in_hosting_mode_is_a_plain_403() {
    let fx = Fx::with(|s| s.hosting = true);
    let r = fx.send(&fx.reg("alice"));
    assert_eq!(r.status, 403);
    assert!(!r.has("X-Reason"));
}

#[test]
fn deactivated_account_is_403_for_register_and_unregister() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, false, Some(("POST", "/auth")));
    let r = fx.send(&fx.reg("alice"));
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("Account has been deactivated"));
    let mut unreg = fx.reg("alice");
    unreg.expires = Some("0".into());
    unreg.contact = Some("<sip:alice@127.0.0.1:5070>".into());
    assert_eq!(fx.send(&unreg).header("X-Reason"), Some("Account has been deactivated"));
    assert_eq!(fx.hook.request_count(), 0);
}

#[test]
fn first_register_is_challenged_with_the_exact_www_authenticate() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let r = fx.send(&fx.reg("alice"));
    assert_challenge(&r, &fx.realm, false);
    assert_eq!(fx.hook.request_count(), 0);
}

#[test]
fn a_sub_domain_realm_finds_the_account_of_its_parent_domain() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("alice", PASSWORD);
    let mut reg = fx.reg("alice");
    reg.to_host = format!("sip.{}", fx.realm);
    reg.to = format!("<sip:alice@{}>", reg.to_host);
    let challenge = fx.send(&reg);
    // the challenge realm is the To host, not the account's realm
    assert_challenge(&challenge, &reg.to_host, false);
    let ok = fx.send(&reg.clone().authorized(PASSWORD, &nonce_of(&challenge)));
    assert_eq!(ok.status, 200, "{}", ok.raw);
}

// ---------------------------------------------------------------------------------------------
// Nonces and Authorization.

#[test]
fn expired_nonce_gets_401_with_stale_true_and_no_webhook_call() {
    let fx = Fx::with(|s| {
        s.nonce_secret = Some("cluster-secret".into());
        s.nonce_ttl = Duration::from_secs(300);
    });
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("kim", PASSWORD);
    // a nonce signed with the shared secret, 1000 s ago
    let signer = NonceSigner::from_secret("cluster-secret", Duration::from_secs(300));
    let phone = Some("127.0.0.1".parse().unwrap());
    let old = signer.issue_at(&fx.realm, phone, now_secs() - 1000);
    let r = fx.send(&fx.reg("kim").authorized(PASSWORD, &old));
    assert_challenge(&r, &fx.realm, true);
    assert_eq!(fx.hook.request_count(), 0);
    // a fresh one from another signer with the same secret (another SBC) is accepted
    let fresh = signer.issue(&fx.realm, phone);
    assert_eq!(fx.send(&fx.reg("kim").authorized(PASSWORD, &fresh)).status, 200);
}

#[test]
fn nonce_we_did_not_issue_gets_a_fresh_401() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("lee", PASSWORD);
    for forged in [
        "157590482938000",
        "1700000000.00112233445566778899aabbccddeeff",
        "1700000000.0011223344556677.00112233445566778899aabbccddeeff",
    ] {
        let r = fx.send(&fx.reg("lee").authorized(PASSWORD, forged));
        assert_challenge(&r, &fx.realm, false);
    }
    // a nonce issued for another realm does not work here either
    let other = Fx::new();
    other.add_account(&other.realm, true, Some(("POST", "/auth")));
    let foreign_nonce = nonce_of(&other.send(&other.reg("lee")));
    assert_challenge(&fx.send(&fx.reg("lee").authorized(PASSWORD, &foreign_nonce)), &fx.realm, false);
    assert_eq!(fx.hook.request_count(), 0);
}

#[test]
fn malformed_authorization_is_400_not_500() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    for bad in [format!(r#"Digest username="max", realm="{}""#, fx.realm), "Basic bWF4OnB3".to_string()] {
        let mut reg = fx.reg("max");
        reg.authorization = Some(bad.clone());
        assert_eq!(fx.send(&reg).status, 400, "{bad}");
    }
    assert_eq!(fx.hook.request_count(), 0);
}
