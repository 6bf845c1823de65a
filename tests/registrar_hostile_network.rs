//! A hostile network: replays, other people's addresses of record, password guessing and bans,
//! answers that do not fit the challenge, made-up realms; and the defences must not be turned
//! against the phones they protect. The rig is tests/support/registrar_rig.rs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use mysql::prelude::Queryable;
use serde_json::Value;

use sbc_sidecar::drachtio::IncomingRequest;
use sbc_sidecar::registrar::NEW_REALM_LOOKUPS_PER_SEC;
use sbc_sidecar::registrar::{AuthPool, Registrar};
use sbc_sidecar::shared::Shared;
use sbc_sidecar::supervise::Supervisor;

use sbc_test_tools::webhook::digest_response;

#[path = "support/registrar_rig.rs"]
mod registrar_rig;
use registrar_rig::*;

// ---------------------------------------------------------------------------------------------
// A hostile network: replays, other people's addresses of record, guessing, answers that do
// not fit the challenge.

/// The REGISTER of `reg`, challenged and answered with `password`: (the authorized request,
/// its response).
fn register_and_keep(fx: &Fx, reg: &Reg, password: &str) -> (Reg, Resp) {
    let challenge = fx.send(reg);
    assert_eq!(challenge.status, 401, "{}", challenge.raw);
    let authorized = reg.clone().authorized(password, &nonce_of(&challenge));
    let resp = fx.send(&authorized);
    (authorized, resp)
}

fn contact_of_binding(fx: &Fx, user: &str) -> String {
    let json: Value = serde_json::from_str(&fx.binding(user).expect("binding")).unwrap();
    json["contact"].as_str().unwrap().to_string()
}

#[test]
fn a_replayed_authorization_from_another_port_is_challenged_and_the_binding_stays() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ann", PASSWORD);
    let (captured, first) = register_and_keep(&fx, &fx.reg("ann"), PASSWORD);
    assert_eq!(first.status, 200, "{}", first.raw);
    assert_eq!(fx.hook.request_count(), 1);
    assert_eq!(contact_of_binding(&fx, "ann"), "sip:ann@127.0.0.1:5070;transport=udp");

    // the attacker sends the captured Authorization byte for byte, from elsewhere, for itself
    let mut replay = captured.clone();
    replay.port = 6666;
    replay.contact = Some("<sip:ann@127.0.0.66:6666;transport=udp>;expires=3600".into());
    let r = fx.send(&replay);
    assert_challenge(&r, &fx.realm, false);
    assert_eq!(contact_of_binding(&fx, "ann"), "sip:ann@127.0.0.1:5070;transport=udp");

    // nor can it remove the victim's binding
    let mut unregister = captured;
    unregister.port = 6667;
    unregister.contact = Some("<sip:ann@127.0.0.66:6667;transport=udp>;expires=0".into());
    unregister.expires = Some("0".into());
    assert_challenge(&fx.send(&unregister), &fx.realm, false);
    assert!(fx.binding("ann").is_some());
    // the customer's webhook never saw the replays
    assert_eq!(fx.hook.request_count(), 1);
}

#[test]
fn a_replay_is_refused_on_another_sbc_sharing_the_secret_too() {
    let fx = Fx::with(|s| s.nonce_secret = Some("cluster".into()));
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ava", PASSWORD);
    let (captured, first) = register_and_keep(&fx, &fx.reg("ava"), PASSWORD);
    assert_eq!(first.status, 200);
    let mut settings = base_settings();
    settings.nonce_secret = Some("cluster".into());
    let other_sbc = Registrar::new(settings, &fx.shared());
    let mut replay = captured;
    replay.port = 7777;
    assert_eq!(fx.send_to(&other_sbc, &replay).status, 401);
    assert_eq!(fx.hook.request_count(), 1);
}

#[test]
fn the_same_nonce_with_a_new_count_and_cnonce_is_accepted() {
    for with_webhook in [true, false] {
        let fx = Fx::new();
        let sid = fx.add_account(&fx.realm, true, with_webhook.then_some(("POST", "/auth")));
        fx.hook.set_password("bea", "1234");
        fx.add_client(&sid, "bea", CBC_1234, true);
        let challenge = fx.send(&fx.reg("bea"));
        let nonce = nonce_of(&challenge);
        let answer = |nc: &str, cnonce: &str, port: u16| {
            let mut reg = fx.reg("bea");
            reg.port = port;
            reg.authorization = Some(authorization_with("bea", &fx.realm, "1234", &nonce, nc, cnonce));
            fx.send(&reg)
        };
        assert_eq!(answer("00000001", "c0ffee01", 5070).status, 200, "webhook={with_webhook}");
        // a pre-emptive refresh (another port, so not from the cache window) reusing the nonce
        assert_eq!(answer("00000002", "c0ffee02", 5071).status, 200, "webhook={with_webhook}");
        // the second answer again: a replay
        assert_eq!(answer("00000002", "c0ffee02", 5072).status, 401, "webhook={with_webhook}");
    }
}

#[test]
fn credentials_of_one_user_cannot_register_another_aor_with_the_clients_table() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "alice", CBC_1234, true);
    fx.add_client(&sid, "bob", CBC_1234, true);
    let mut as_bob = fx.reg("bob");
    let nonce = nonce_of(&fx.send(&as_bob));
    // alice's correct credentials, To: bob
    as_bob.authorization = Some(authorization("alice", &fx.realm, "1234", &nonce));
    let r = fx.send(&as_bob);
    assert_eq!(r.status, 403, "{}", r.raw);
    assert_eq!(r.header("X-Reason"), Some("Authorization user does not match the address of record"));
    assert_eq!(fx.binding("bob"), None);
    // a realm other than the To host is refused the same way
    let mut other_realm = fx.reg("alice");
    let nonce = nonce_of(&fx.send(&other_realm));
    let r_uri = other_realm.ruri.clone();
    other_realm.authorization = Some(digest_answer("alice", "elsewhere.example", &r_uri, "1234", &nonce, "1", "c1"));
    assert_eq!(fx.send(&other_realm).status, 403);
    assert_eq!(fx.binding("alice"), None);
    // alice for alice still works
    assert_eq!(fx.register_with_password(&fx.reg("alice"), "1234").status, 200);
}

#[test]
fn credentials_of_one_user_cannot_register_another_aor_with_a_webhook_unless_switched_off() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("john", PASSWORD);
    let mut as_jane = fx.reg("jane");
    let nonce = nonce_of(&fx.send(&as_jane));
    as_jane.authorization = Some(authorization("john", &fx.realm, PASSWORD, &nonce));
    let r = fx.send(&as_jane);
    assert_eq!(r.status, 403, "{}", r.raw);
    assert_eq!(r.header("X-Reason"), Some("Authorization user does not match the address of record"));
    assert_eq!(fx.binding("jane"), None);
    assert_eq!(fx.hook.request_count(), 0, "refused before the webhook");

    // SBC_WEBHOOK_AOR_CHECK=0: the webhook decides (this one only checks the password)
    let lax = Fx::with(|s| s.webhook_aor_check = false);
    lax.add_account(&lax.realm, true, Some(("POST", "/auth")));
    lax.hook.set_password("john", PASSWORD);
    let mut as_jane = lax.reg("jane");
    let nonce = nonce_of(&lax.send(&as_jane));
    as_jane.authorization = Some(authorization("john", &lax.realm, PASSWORD, &nonce));
    assert_eq!(lax.send(&as_jane).status, 200);
    assert_eq!(lax.hook.request_count(), 1);
    assert!(lax.binding("jane").is_some());
}

#[test]
fn answers_that_do_not_fit_the_challenge_are_refused_before_the_webhook() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("cy", PASSWORD);
    let reg = fx.reg("cy");
    let nonce = nonce_of(&fx.send(&reg));
    let good = authorization("cy", &fx.realm, PASSWORD, &nonce);
    let send_with = |auth: String| {
        let mut r = reg.clone();
        r.authorization = Some(auth);
        fx.send(&r)
    };
    // computed for another Request-URI
    let r = send_with(good.replace(&format!("uri=\"sip:{}\"", fx.realm), "uri=\"sip:other.example\""));
    assert_eq!((r.status, r.header("X-Reason")), (400, Some("Digest uri names neither the Request-URI nor this SBC")));
    // an algorithm we did not offer
    let r = send_with(good.replace("algorithm=MD5", "algorithm=SHA-256"));
    assert_eq!(r.status, 400);
    assert_eq!(r.header("X-Reason"), Some("Unsupported digest algorithm (only MD5 is offered)"));
    // an RFC 2069 answer (no qop, nc, cnonce) to a challenge that demands qop="auth"
    let rfc2069_response =
        digest_response("cy", &fx.realm, PASSWORD, "REGISTER", &format!("sip:{}", fx.realm), &nonce, "", "", "");
    let r = send_with(format!(
        r#"Digest username="cy", realm="{}", nonce="{nonce}", uri="sip:{}", response="{rfc2069_response}", algorithm=MD5"#,
        fx.realm, fx.realm
    ));
    assert_challenge(&r, &fx.realm, false);
    assert_eq!(fx.hook.request_count(), 0);
    assert_eq!(fx.binding("cy"), None);
    // the right answer still works: none of the refusals used the nonce up
    assert_eq!(send_with(good).status, 200);
}

#[test]
fn repeated_wrong_passwords_ban_the_source_without_touching_other_sources() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("dee", PASSWORD);
    let mut attacker = fx.reg("dee");
    attacker.address = "127.0.0.77".into();
    for i in 1..=10 {
        let r = fx.register_with_password(&attacker, "guess");
        assert_eq!(r.status, 403, "attempt {i}: {}", r.raw);
        assert_eq!(r.header("X-Reason"), Some("Invalid credentials"), "attempt {i}");
    }
    assert_eq!(fx.hook.request_count(), 10);
    // the 11th is refused at once: no challenge, no webhook call
    let r = fx.send(&attacker);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
    let mut with_password = attacker.clone();
    with_password.authorization = Some(authorization("dee", &fx.realm, PASSWORD, "1.2.3"));
    assert_eq!(fx.send(&with_password).status, 403);
    assert_eq!(fx.hook.request_count(), 10);

    // another source registers the same user normally
    let mut phone = fx.reg("dee");
    phone.address = "127.0.0.78".into();
    assert_eq!(fx.register_with_password(&phone, PASSWORD).status, 200);

    // the ban is listed, and lifting it lets the source in again
    let bans = fx.registrar.bans().list(Instant::now());
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].ip.to_string(), "127.0.0.77");
    assert!(fx.registrar.bans().clear("127.0.0.77".parse().unwrap()));
    assert_eq!(fx.register_with_password(&attacker, PASSWORD).status, 200);
}

/// A nonce we did not issue to the source proves nothing about the source (a blind spoofer
/// sends those with a forged address): challenged again, never counted. An answer for another
/// user's address of record, to a nonce issued to this very source, is counted.
#[test]
fn forged_nonces_are_not_counted_and_other_peoples_aors_are() {
    let fx = Fx::new();
    let sid = fx.add_account(&fx.realm, true, None);
    fx.add_client(&sid, "eve", CBC_1234, true);
    let mut scanner = fx.reg("eve");
    scanner.address = "127.0.0.79".into();
    for i in 0..20 {
        scanner.authorization = Some(authorization("eve", &fx.realm, "x", &format!("1700000000.{i:016x}.{:032x}", i)));
        assert_challenge(&fx.send(&scanner), &fx.realm, false);
    }
    assert!(fx.registrar.bans().list(Instant::now()).is_empty(), "forged nonces counted");
    let mut as_other = fx.reg("frank");
    as_other.address = "127.0.0.79".into();
    for i in 1..=10 {
        as_other.authorization = None;
        let nonce = nonce_of(&fx.send(&as_other));
        as_other.authorization = Some(authorization("eve", &fx.realm, "1234", &nonce));
        assert_eq!(fx.send(&as_other).status, 403, "attempt {i}");
        let banned = !fx.registrar.bans().list(Instant::now()).is_empty();
        assert_eq!(banned, i == 10, "banned after attempt {i}");
    }
    let r = fx.send(&fx.reg("eve").clone_from_address("127.0.0.79"));
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
}

impl Reg {
    fn clone_from_address(&self, address: &str) -> Reg {
        let mut r = self.clone();
        r.address = address.into();
        r
    }
}

// ---------------------------------------------------------------------------------------------
// Defences that must not be turned against the phones they protect.

/// An address is banned (a guesser behind the same NAT as the phone, which sees our answers);
/// the phone that holds a live binding from its exact ip:port keeps getting its refreshes from
/// the cache window. Anything else from the address is refused.
#[test]
fn a_phone_behind_a_banned_address_keeps_its_cache_window_refreshes() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("pam", PASSWORD);
    fx.hook.set_password("gus", PASSWORD);
    let mut phone = fx.reg("pam");
    phone.address = "127.0.0.83".into();
    assert_eq!(fx.register_with_password(&phone, PASSWORD).status, 200);
    let mut guesser = fx.reg("gus");
    guesser.address = "127.0.0.83".into();
    guesser.port = 6100;
    for _ in 0..10 {
        assert_eq!(fx.register_with_password(&guesser, "guess").status, 403);
    }
    assert!(fx.registrar.bans().banned("127.0.0.83".parse().unwrap(), Instant::now()).is_some());
    let refresh = fx.send(&phone);
    assert_eq!((refresh.status, refresh.header("Expires")), (200, Some("30")), "{}", refresh.raw);
    // the guesser's own refresh (no binding of its own) and a new registration are refused
    let r = fx.send(&guesser);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
    let mut moved = phone.clone();
    moved.port = 6200;
    assert_eq!(fx.send(&moved).status, 403, "the same AOR from another port is not the phone's binding");
}

/// An IPv6 guesser rotating through the addresses of its /64 is one source.
#[test]
fn an_ipv6_slash_64_is_banned_as_one_source() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ivy", PASSWORD);
    for i in 1..=10 {
        let mut guesser = fx.reg("ivy");
        guesser.address = format!("2001:db8:77:1::{i:x}");
        assert_eq!(fx.register_with_password(&guesser, "guess").status, 403, "attempt {i}");
    }
    let mut next = fx.reg("ivy");
    next.address = "2001:db8:77:1:ffff::1".into();
    let r = fx.send(&next);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
    let mut neighbour = fx.reg("ivy");
    neighbour.address = "2001:db8:77:2::1".into();
    assert_eq!(fx.register_with_password(&neighbour, PASSWORD).status, 200, "the next /64 is another source");
    let bans = fx.registrar.bans().list(Instant::now());
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!((bans[0].ip.to_string(), bans[0].prefix_len), ("2001:db8:77:1::".to_string(), 64));
}

/// A webhook that times out gives the phone a 5xx; the answer's one-time use is released, so
/// the phone sending the same answer again is authenticated, not taken for a replayer.
#[test]
fn an_answer_refused_with_a_5xx_may_be_sent_again() {
    let fx = Fx::with(|s| s.webhook_timeout = Duration::from_millis(300));
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ray", PASSWORD);
    let nonce = nonce_of(&fx.send(&fx.reg("ray")));
    let answer = fx.reg("ray").authorized(PASSWORD, &nonce);
    fx.hook.delay(Duration::from_millis(800));
    let first = fx.send(&answer);
    assert!(first.status >= 500, "{}", first.raw);
    fx.hook.delay(Duration::ZERO);
    let again = fx.send(&answer);
    assert_eq!(again.status, 200, "{}", again.raw);
    assert!(fx.binding("ray").is_some());
    // and once it succeeded, the same answer is a replay (from another port: from the same
    // one the cache window answers first)
    let mut elsewhere = answer.clone();
    elsewhere.port = 6300;
    assert_challenge(&fx.send(&elsewhere), &fx.realm, false);
}

/// 20,000 REGISTERs for made-up realms: the few looked up in MySQL per second, the rest 503;
/// the known account stays cached — it is answered after its row is gone — and the caches
/// stay bounded.
#[test]
fn random_realms_neither_evict_a_known_account_nor_reach_mysql_at_line_rate() {
    let fx = Fx::with(|s| s.account_cache_ttl = Duration::from_secs(120));
    let sid = fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    assert_eq!(fx.send(&fx.reg("kim")).status, 401, "the known realm is looked up and cached");
    let mut statuses = std::collections::HashMap::<u16, u32>::new();
    let started = std::time::Instant::now();
    for i in 0..20_000 {
        let mut scan = fx.reg("x");
        let realm = format!("s{i:05}.scan.example");
        scan.ruri = format!("sip:{realm}");
        scan.to = format!("<sip:x@{realm}>");
        scan.to_host = realm;
        *statuses.entry(fx.send(&scan).status).or_default() += 1;
    }
    let looked_up = statuses.get(&403).copied().unwrap_or(0);
    // At most the limit in each second the flood lasted (a slow machine makes it last longer),
    // counting the partial seconds at both ends.
    let seconds = started.elapsed().as_secs() + 2;
    let most = NEW_REALM_LOOKUPS_PER_SEC * u32::try_from(seconds).unwrap_or(u32::MAX);
    assert!(
        (NEW_REALM_LOOKUPS_PER_SEC..=most).contains(&looked_up),
        "unknown realms looked up in {seconds} s: {statuses:?}"
    );
    assert!(looked_up < 20_000 / 4, "most of the flood was refused without a lookup: {statuses:?}");
    assert_eq!(looked_up + statuses.get(&503).copied().unwrap_or(0), 20_000, "{statuses:?}");
    fx.db.conn().exec_drop("DELETE FROM accounts WHERE account_sid = ?", (&sid,)).unwrap();
    assert_challenge(&fx.send(&fx.reg("kim")), &fx.realm, false);
}

/// A source banned while its REGISTER waited for an auth worker (its other attempts failed
/// meanwhile) is refused when the worker takes it: no webhook call for it.
#[test]
fn the_ban_is_checked_again_when_a_worker_takes_the_request() {
    use sbc_sidecar::registrar::{BanSettings, Bans};
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("una", PASSWORD);
    fx.hook.set_password("vik", PASSWORD);
    let bans = Arc::new(Bans::new(BanSettings { max_failures: 3, ..BanSettings::default() }));
    let registrar = Arc::new(Registrar::new(base_settings(), &Shared { bans: bans.clone(), ..fx.shared() }));
    let mut holder = fx.reg("una");
    holder.address = "127.0.0.84".into();
    let mut waiting = fx.reg("vik");
    waiting.address = "127.0.0.85".into();
    let holder_answer = holder.clone().authorized(PASSWORD, &nonce_of(&fx.send_to(&registrar, &holder)));
    let waiting_answer = waiting.clone().authorized(PASSWORD, &nonce_of(&fx.send_to(&registrar, &waiting)));
    fx.aors.lock().unwrap().extend([fx.aor("una"), fx.aor("vik")]);

    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(8);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx, &Supervisor::unwatched())
        .unwrap();
    fx.hook.delay(Duration::from_millis(800));
    let (req, holder_rx) = incoming(&holder_answer);
    queue_tx.send(req).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.hook.request_count() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The only worker is in the webhook call; the second request waits for it.
    let (req, waiting_rx) = incoming(&waiting_answer);
    queue_tx.send(req).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        bans.record_failure("127.0.0.85".parse().unwrap(), Instant::now());
    }
    assert_eq!(response_from(&holder_rx).status, 200);
    let r = response_from(&waiting_rx);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")), "{}", r.raw);
    assert_eq!(fx.hook.request_count(), 1, "the banned source's request never reached the webhook");
    drop(shutdown_tx);
    pool.join();
}
