//! A registration webhook that misbehaves: HTTP errors, redirects, garbage, refused
//! connections, time-outs; and the webhook transport replaced by canned answers. The rig is
//! tests/support/registrar_rig.rs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use sbc_sidecar::registrar::{HookError, HookRequest, HookResponse, HookTransport, Registrar, RegistrarSettings};

#[path = "support/registrar_rig.rs"]
mod registrar_rig;
use registrar_rig::*;

// ---------------------------------------------------------------------------------------------
// Webhook answers that are not a grant or a denial.

/// Registers `ivy` against a webhook programmed by `program` and returns the final status.
fn status_with_webhook(program: impl FnOnce(&Fx), tweak: impl FnOnce(&mut RegistrarSettings)) -> (u16, Duration) {
    let fx = Fx::with(tweak);
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    program(&fx);
    let reg = fx.reg("ivy");
    let challenge = fx.send(&reg);
    let started = Instant::now();
    let r = fx.send(&reg.clone().authorized(PASSWORD, &nonce_of(&challenge)));
    assert_eq!(fx.binding("ivy"), None);
    (r.status, started.elapsed())
}

#[test]
fn webhook_http_status_becomes_the_sip_status() {
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(404, "not here"), |_| {}).0, 404);
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(503, "{}"), |_| {}).0, 503);
}

#[test]
fn webhook_redirect_is_not_followed_and_is_500() {
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(302, ""), |_| {}).0, 500);
}

#[test]
fn webhook_garbage_or_statusless_json_is_500() {
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(200, "<html>oops</html>"), |_| {}).0, 500);
    assert_eq!(status_with_webhook(|fx| fx.hook.fixed(200, r#"{"expires":60}"#), |_| {}).0, 500);
}

#[test]
fn webhook_that_refuses_connections_is_500() {
    let fx = Fx::new();
    let port = closed_port();
    let mut c = fx.db.conn();
    let hook_sid = uuid();
    c.exec_drop(
        "INSERT INTO webhooks (webhook_sid, url, method) VALUES (?, ?, 'POST')",
        (&hook_sid, format!("http://127.0.0.1:{port}/auth")),
    )
    .unwrap();
    c.exec_drop(
        "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, webhook_secret) \
         VALUES (?, 'a', ?, ?, ?, 's')",
        (uuid(), &fx.realm, uuid(), &hook_sid),
    )
    .unwrap();
    let r = fx.register_with_password(&fx.reg("jo"), PASSWORD);
    assert_eq!(r.status, 500);
}

#[test]
fn webhook_slower_than_the_timeout_is_500_without_waiting_for_it() {
    let (status, elapsed) = status_with_webhook(
        |fx| {
            fx.hook.set_password("ivy", PASSWORD);
            fx.hook.delay(Duration::from_secs(5));
        },
        |s| s.webhook_timeout = Duration::from_millis(300),
    );
    assert_eq!(status, 500);
    assert!(elapsed < Duration::from_secs(4), "waited {elapsed:?} for a 300 ms timeout");
}

/// A transport with a canned answer that remembers what it was asked.
struct Canned {
    answer: Result<HookResponse, HookError>,
    seen: Arc<Mutex<Vec<HookRequest>>>,
}

impl HookTransport for Canned {
    fn send(&self, request: &HookRequest) -> Result<HookResponse, HookError> {
        self.seen.lock().unwrap().push(request.clone());
        self.answer.clone()
    }
}

#[test]
fn the_webhook_transport_is_replaceable_by_canned_answers() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let canned = |answer: Result<HookResponse, HookError>| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let registrar = Registrar::with_hook_transport(
            base_settings(),
            &fx.shared(),
            Box::new(Canned { answer, seen: seen.clone() }),
        );
        (registrar, seen)
    };
    let mut reg = fx.reg("cid");
    reg.via_transport = "TCP";
    reg.protocol = "tcp";

    let (registrar, seen) = canned(Ok(HookResponse { status: 200, body: br#"{"status":"ok","expires":45}"#.to_vec() }));
    let nonce = nonce_of(&fx.send_to(&registrar, &reg));
    let ok = fx.send_to(&registrar, &reg.clone().authorized("any", &nonce));
    assert_eq!(ok.header("Expires"), Some("45"), "{}", ok.raw);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].url, fx.hook.url("/auth"));
    assert_eq!(fx.hook.request_count(), 0, "the real webhook was not called");

    let (registrar, _) = canned(Err(HookError::Timeout));
    let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg("dee")));
    assert_eq!(fx.send_to(&registrar, &fx.reg("dee").authorized("any", &nonce)).status, 500);
}
