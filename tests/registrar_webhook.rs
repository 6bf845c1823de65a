//! Authentication by the account's registration webhook: what is sent (POST or GET, signed),
//! what is stored in Redis, what the device is told, the cache window and unregistering. The
//! rig is tests/support/registrar_rig.rs.

use base64::Engine;
use serde_json::{json, Value};

#[path = "support/registrar_rig.rs"]
mod registrar_rig;
use registrar_rig::*;

// ---------------------------------------------------------------------------------------------
// Webhook authentication: what is sent, what is stored, what the device is told.

#[test]
fn webhook_post_register_over_udp_is_told_30_seconds_but_stored_for_the_grant() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("alice", PASSWORD);
    let reg = fx.reg("alice");
    let challenge = fx.send(&reg);
    let nonce = nonce_of(&challenge);
    let before = now_ms();
    let ok = fx.send(&reg.clone().authorized(PASSWORD, &nonce));
    let after = now_ms();

    assert_eq!((ok.status, ok.reason.as_str()), (200, "OK"), "{}", ok.raw);
    assert_eq!(ok.header("Contact"), Some("<sip:alice@127.0.0.1:5070;transport=udp>;expires=30"));
    assert_eq!(ok.header("Expires"), Some("30"));

    // Redis: the JSON string, field order of the contract, TTL and score of the full grant.
    let stored = fx.binding("alice").expect("user:<aor> written");
    let v: Value = serde_json::from_str(&stored).unwrap();
    let expiry = v["expiryTime"].as_u64().expect("expiryTime is an integer");
    assert!((before + 3_600_000..=after + 3_600_000).contains(&expiry), "{expiry}");
    assert_eq!(
        stored,
        format!(
            r#"{{"contact":"sip:alice@127.0.0.1:5070;transport=udp","sbcAddress":"{SBC_HOSTPORT}","privateSbcAddress":"{PRIVATE_SBC}","protocol":"udp","proxy":"sip:127.0.0.1:5070","allow_direct_app_calling":false,"allow_direct_queue_calling":false,"allow_direct_user_calling":false,"expiryTime":{expiry}}}"#
        )
    );
    assert!((3590..=3600).contains(&fx.ttl("alice")), "ttl {}", fx.ttl("alice"));
    assert_eq!(fx.score("alice"), Some(expiry as f64));

    // The webhook request.
    let requests = fx.hook.requests();
    assert_eq!(requests.len(), 1, "only the authenticated REGISTER calls the webhook");
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/auth"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("user-agent"), Some(USER_AGENT));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{HOOK_USER}:{HOOK_PASS}"));
    assert_eq!(r.header("authorization"), Some(format!("Basic {basic}").as_str()));
    assert_signature(r.header("jambonz-signature"), &r.body);

    let p = r.payload();
    let keys: Vec<&str> = p.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "source_address",
            "source_port",
            "method",
            "headers",
            "expires",
            "scheme",
            "username",
            "realm",
            "nonce",
            "uri",
            "algorithm",
            "response",
            "qop",
            "nc",
            "cnonce"
        ]
    );
    assert_eq!(p["source_address"], json!("127.0.0.1"));
    assert_eq!(p["source_port"], json!(5070));
    assert_eq!(p["method"], json!("REGISTER"));
    assert_eq!(p["expires"], json!(3600));
    assert_eq!(p["scheme"], json!("digest"));
    assert_eq!(p["username"], json!("alice"));
    assert_eq!(p["realm"], json!(fx.realm));
    assert_eq!(p["nonce"], json!(nonce));
    assert_eq!(p["uri"], json!(format!("sip:{}", fx.realm)));
    assert_eq!(p["algorithm"], json!("MD5"));
    assert_eq!(
        (p["qop"].clone(), p["nc"].clone(), p["cnonce"].clone()),
        (json!("auth"), json!("00000001"), json!("0a4f113b"))
    );
    let headers = p["headers"].as_object().unwrap();
    let names: Vec<&str> = headers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "via",
            "max-forwards",
            "from",
            "to",
            "call-id",
            "cseq",
            "contact",
            "expires",
            "authorization",
            "user-agent",
            "content-length"
        ]
    );
    assert_eq!(headers["contact"], json!("<sip:alice@127.0.0.1:5070;transport=udp>;expires=3600"));
}

#[test]
fn webhook_get_sends_the_payload_as_query_and_signs_null() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("GET", "/auth")));
    fx.hook.set_password("bob", PASSWORD);
    let ok = fx.register_with_password(&fx.reg("bob"), PASSWORD);
    assert_eq!(ok.status, 200, "{}", ok.raw);

    let requests = fx.hook.requests();
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path(), r.body.as_str()), ("GET", "/auth", ""));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_signature(r.header("jambonz-signature"), "\"null\"");
    let pairs = r.query_pairs();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "source_address",
            "source_port",
            "method",
            "expires",
            "scheme",
            "username",
            "realm",
            "nonce",
            "uri",
            "algorithm",
            "response",
            "qop",
            "nc",
            "cnonce"
        ]
    );
    assert!(r.query().unwrap().contains(&format!("uri=sip%3A{}", fx.realm)));
    assert_eq!(pairs[1], ("source_port".to_string(), "5070".to_string()));
}

#[test]
fn register_over_tcp_gets_the_webhook_grant_and_stores_its_hooks() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("carol", PASSWORD);
    fx.hook.ok_fields(json!({
        "expires": 120,
        "call_hook": "https://app.example/call",
        "call_status_hook": {"url": "https://app.example/status", "method": "POST"},
        "allow_direct_app_calling": true,
        "allow_direct_user_calling": false
    }));
    let mut reg = fx.reg("carol");
    reg.via_transport = "TCP";
    reg.protocol = "tcp";
    reg.contact = Some("<sip:carol@127.0.0.1:5070;transport=tcp>;expires=3600".into());
    let ok = fx.register_with_password(&reg, PASSWORD);
    assert_eq!(ok.status, 200, "{}", ok.raw);
    assert_eq!(ok.header("Contact"), Some("<sip:carol@127.0.0.1:5070;transport=tcp>;expires=120"));
    assert_eq!(ok.header("Expires"), Some("120"));
    let v: Value = serde_json::from_str(&fx.binding("carol").unwrap()).unwrap();
    assert_eq!(v["protocol"], json!("tcp"));
    assert_eq!(v["callHook"], json!("https://app.example/call"));
    assert_eq!(v["callStatusHook"], json!({"url": "https://app.example/status", "method": "POST"}));
    assert_eq!(v["allow_direct_app_calling"], json!(true));
    assert_eq!(v["allow_direct_queue_calling"], json!(false));
    assert!(fx.ttl("carol") <= 120 && fx.ttl("carol") > 100);
}

#[test]
fn tls_and_wss_clients_are_stored_with_their_protocol_and_the_full_grant() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    for (user, via, proto) in [("tls-user", "TLS", "tls"), ("wss-user", "WSS", "wss")] {
        fx.hook.set_password(user, PASSWORD);
        let mut reg = fx.reg(user);
        reg.via_transport = via;
        reg.protocol = proto;
        let ok = fx.register_with_password(&reg, PASSWORD);
        assert_eq!(ok.header("Expires"), Some("3600"), "{}", ok.raw);
        let v: Value = serde_json::from_str(&fx.binding(user).unwrap()).unwrap();
        assert_eq!(v["protocol"], json!(proto));
    }
}

#[test]
fn short_expires_is_kept_over_udp_and_not_cached() {
    // an operator who allows intervals shorter than the default minimum of 60 s
    let fx = Fx::with(|s| s.expires_bounds.min = 10);
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("dave", PASSWORD);
    let mut reg = fx.reg("dave");
    reg.contact = Some("<sip:dave@127.0.0.1:5070>;expires=20".into());
    let ok = fx.register_with_password(&reg, PASSWORD);
    assert_eq!(ok.header("Contact"), Some("<sip:dave@127.0.0.1:5070>;expires=20"));
    assert_eq!(ok.header("Expires"), Some("20"));
    assert!(fx.ttl("dave") <= 20);
    // expiring within the 30 s window: a re-REGISTER goes through the challenge again
    assert_eq!(fx.send(&reg).status, 401);
}

#[test]
fn re_register_from_the_same_source_is_answered_from_the_cache() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("erin", PASSWORD);
    let mut reg = fx.reg("erin");
    reg.via_transport = "TCP";
    reg.protocol = "tcp";
    assert_eq!(fx.register_with_password(&reg, PASSWORD).status, 200);
    let stored = fx.binding("erin");
    let calls = fx.hook.request_count();

    // no Authorization needed, no webhook call, no Redis write; over TCP the device is told
    // what its binding has left (3600 s granted a moment ago), not 30 s
    let cached = fx.send(&reg);
    assert_eq!(cached.status, 200, "{}", cached.raw);
    let told: u32 = cached.header("Expires").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&told), "{}", cached.raw);
    assert_eq!(
        cached.header("Contact").map(String::from),
        Some(format!("<sip:erin@127.0.0.1:5070;transport=udp>;expires={told}"))
    );
    assert_eq!(fx.hook.request_count(), calls);
    assert_eq!(fx.binding("erin"), stored);

    // the same over UDP: 30 s (every UDP client is assumed to be behind NAT)
    let mut udp = fx.reg("erin");
    udp.port = 5073;
    assert_eq!(fx.register_with_password(&udp, PASSWORD).status, 200);
    let cached = fx.send(&udp);
    assert_eq!((cached.status, cached.header("Expires")), (200, Some("30")), "{}", cached.raw);
    assert_eq!(cached.header("Contact"), Some("<sip:erin@127.0.0.1:5070;transport=udp>;expires=30"));

    // another source port is another device: full challenge
    let mut moved = reg.clone();
    moved.port = 5071;
    assert_eq!(fx.send(&moved).status, 401);
}

#[test]
fn unregister_removes_the_binding_and_echoes_the_contact() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("fay", PASSWORD);
    assert_eq!(fx.register_with_password(&fx.reg("fay"), PASSWORD).status, 200);
    assert!(fx.binding("fay").is_some() && fx.score("fay").is_some());

    let mut unreg = fx.reg("fay");
    unreg.contact = Some("<sip:fay@127.0.0.1:5070;transport=udp>;expires=0".into());
    unreg.expires = None;
    // authentication is still required
    let ok = fx.register_with_password(&unreg, PASSWORD);
    assert_eq!(ok.status, 200, "{}", ok.raw);
    assert_eq!(ok.header("Contact"), Some("<sip:fay@127.0.0.1:5070;transport=udp>;expires=0"));
    assert_eq!(ok.header("Expires"), Some("0"));
    assert_eq!(fx.binding("fay"), None);
    assert_eq!(fx.score("fay"), None);
}

#[test]
fn webhook_denial_is_403_invalid_credentials() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("gus", PASSWORD);
    let r = fx.register_with_password(&fx.reg("gus"), "wrong");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("Invalid credentials"));
    assert_eq!(fx.binding("gus"), None);
}

#[test]
fn webhook_blacklist_and_headers_end_up_on_the_403() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.fail_fields(json!({"blacklist": true, "headers": {"X-Block-Reason": "too many attempts", "X-Count": 7}}));
    let mut reg = fx.reg("hal");
    reg.port = 5099;
    let r = fx.register_with_password(&reg, "whatever");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-Reason"), Some("detected potential spammer from 127.0.0.1:5099"));
    assert_eq!(r.header("X-Block-Reason"), Some("too many attempts"));
    assert_eq!(r.header("X-Count"), Some("7"));
}
