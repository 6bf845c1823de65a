//! Outbound registration of reg trunks with real parts: the digest challenge and the contract
//! headers, refreshes, backoff, deactivation, the stack's 408, removed gateways, database changes
//! and absurd Expires. The rig is tests/support/regbot_rig.rs.

use std::thread;
use std::time::Duration;

use mysql::prelude::Queryable;
use sbc_sidecar::regbot::{RegbotRole, RegbotState};
use sbc_test_tools::carrier::Peer;
use sbc_test_tools::db::TestDb;
use sbc_test_tools::wait_until;

#[path = "support/regbot_rig.rs"]
mod regbot_rig;
use regbot_rig::*;

#[test]
fn registers_through_a_digest_challenge_with_the_contract_headers_and_refreshes_at_half_the_expires() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar = Peer::start(
        "regbot_challenge.xml",
        "127.0.0.151",
        &[("user", "alice"), ("pass", "s3cret"), ("realm", "sip.carrier.test"), ("expires", "4")],
    );
    let carrier = add_carrier(
        &db,
        CarrierRow { realm: Some("sip.carrier.test"), public_ip_in_contact: true, ..CarrierRow::default() },
    );
    let gateway = add_gateway(&db, &carrier, "127.0.0.151", Some(registrar.port), "udp", false);
    let cluster = cluster();
    let mut sidecar = Instance::start(&double, &db, settings(&cluster));

    let status = wait_for_status(&db, &carrier, "registered", |s| s["status"] == "ok");
    let regs = registrar.wait_for_requests("REGISTER", 2, WAIT);
    let (first, second) = (&regs[0], &regs[1]);
    assert_eq!(first.first_line(), "REGISTER sip:sip.carrier.test SIP/2.0");
    assert_eq!(first.header("Call-ID").as_deref(), Some(gateway.as_str()), "Call-ID is the gateway sid");
    let from = first.header("From").unwrap();
    assert!(from.starts_with("<sip:alice@sip.carrier.test>;tag="), "{from}");
    assert_eq!(first.header("To").as_deref(), Some("<sip:alice@sip.carrier.test>"));
    assert_eq!(
        first.header("Contact"),
        Some(format!("<sip:alice@{};transport=udp>;expires=3600", double.sip_addr())),
        "public address from the drachtio hostports"
    );
    assert_eq!(first.header("Expires").as_deref(), Some("3600"));
    assert_eq!(first.header("User-Agent").as_deref(), Some("Jambonz 0.9.6"));
    assert!(first.header("Authorization").is_none());
    // the digest answer: same Call-ID and From tag, CSeq + 1
    assert_eq!(second.header("Call-ID"), first.header("Call-ID"));
    assert_eq!(second.header("From"), first.header("From"));
    assert_eq!(second.cseq(), first.cseq() + 1);
    let auth = second.header("Authorization").expect("digest answer");
    for part in [
        "username=\"alice\"",
        "realm=\"sip.carrier.test\"",
        "uri=\"sip:sip.carrier.test\"",
        "qop=auth",
        "nc=00000001",
        "opaque=\"opq-",
        "cnonce=\"",
        "algorithm=MD5",
    ] {
        assert!(auth.contains(part), "{part} in {auth}");
    }
    // sipp checked the response itself (verifyauth) and answered 200
    assert_eq!(status["reason"], "200 OK");
    assert_eq!(status["cseq"], format!("{} REGISTER", first.cseq()), "the unchallenged CSeq");
    assert_eq!(status["callId"], gateway.as_str());
    assert_eq!(status["expires"], 4);
    let keys: Vec<&String> = status.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["status", "reason", "cseq", "callId", "timestamp", "expires"]);
    let ts = status["timestamp"].as_str().unwrap();
    assert!(ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T", "{ts}");

    // refresh at expires/2 (4 s granted → 1.8–2 s) after the 200, challenged again
    let regs = registrar.wait_for_requests("REGISTER", 3, Duration::from_secs(6));
    let ok_sent = registrar
        .messages()
        .into_iter()
        .find(|m| !m.received && m.first_line().starts_with("SIP/2.0 200"))
        .expect("sipp sent a 200");
    let gap = regs[2].at - ok_sent.at;
    assert!((1.6..=2.8).contains(&gap), "refresh {gap:.3}s after the 200");
    assert!(regs[2].cseq() > second.cseq(), "CSeq keeps increasing");
    assert!(regs[2].header("Authorization").is_none(), "a refresh starts unchallenged");

    let snap = sidecar.wait_for("registered", |s| s.registered == 1);
    assert_eq!(snap.role, RegbotRole::Leader);
    assert_eq!((snap.total, snap.failing), (1, 0));
    assert_eq!(snap.regbots[0].sip_gateway_sid, gateway);
    assert_eq!(snap.regbots[0].aor, "alice@sip.carrier.test");
    let token_ttl: i64 = redis_query(redis::cmd("TTL").arg(format!("{cluster}:regbot-token")));
    assert!((0..=1).contains(&token_ttl), "leader key with the configured TTL: {token_ttl}");

    // stopping the daemon leaves the registration in place: no Expires: 0
    sidecar.stop();
    thread::sleep(Duration::from_millis(300));
    assert!(
        registrar.requests("REGISTER").iter().all(|r| r.header("Expires").as_deref() != Some("0")),
        "no de-registration at shutdown"
    );
    let key_left: bool = redis_query(redis::cmd("EXISTS").arg(format!("{cluster}:regbot-token")));
    assert!(!key_left, "a clean stop releases the leader key");
}

#[test]
fn a_refusing_registrar_is_retried_with_growing_backoff_then_registration_is_disabled() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.152", &[("status", "403"), ("reason", "Forbidden"), ("expires", "0")]);
    let carrier = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &carrier, "127.0.0.152", Some(registrar.port), "udp", false);
    let mut s = settings(&cluster());
    s.register_response_remove = vec![403];
    s.failure_threshold = 4;
    // backoff base 3.2 s / 16 = 200 ms: retries after 100–200, 200–400, 400–800 ms
    s.failure_retry_interval = Duration::from_millis(3200);
    let sidecar = Instance::start(&double, &db, s);

    assert!(wait_until(WAIT, || !carrier_flags(&db, &carrier).0), "requires_register set to 0");
    assert_eq!(carrier_flags(&db, &carrier), (false, true), "static_ip carrier: registration disabled, carrier kept");
    let status = register_status(&db, &carrier).unwrap();
    assert_eq!(status["status"], "fail");
    assert_eq!(status["reason"], "403 Forbidden");
    assert_eq!(status["expires"], 0);

    let regs = registrar.requests("REGISTER");
    assert_eq!(regs.len(), 4, "exactly the threshold: {regs:#?}");
    let gaps: Vec<f64> = regs.windows(2).map(|w| w[1].at - w[0].at).collect();
    let bounds = [(0.1, 0.2), (0.2, 0.4), (0.4, 0.8)];
    for (gap, (lo, hi)) in gaps.iter().zip(bounds) {
        assert!(*gap >= lo - 0.02 && *gap <= hi + 0.25, "gap {gap:.3}s outside {lo}–{hi}: {gaps:?}");
    }
    assert!(gaps[2] > gaps[0], "backoff grows: {gaps:?}");

    // the database change removes the regbot; nothing more is sent, nothing to de-register
    sidecar.wait_for("regbot removed after the carrier was disabled", |s| s.total == 0);
    thread::sleep(Duration::from_millis(800));
    assert_eq!(registrar.requests("REGISTER").len(), 4, "no REGISTER after giving up");
}

#[test]
fn a_reg_trunk_that_keeps_failing_is_deactivated() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar = Peer::start(
        "regbot_reply.xml",
        "127.0.0.153",
        &[("status", "503"), ("reason", "Service Unavailable"), ("expires", "0")],
    );
    let carrier = add_carrier(&db, CarrierRow { trunk_type: "reg", ..CarrierRow::default() });
    add_gateway(&db, &carrier, "127.0.0.153", Some(registrar.port), "udp", false);
    let mut s = settings(&cluster());
    s.register_response_remove = vec![503];
    s.failure_threshold = 2;
    s.failure_retry_interval = Duration::from_millis(800);
    let _sidecar = Instance::start(&double, &db, s);

    assert!(wait_until(WAIT, || !carrier_flags(&db, &carrier).1), "is_active set to 0");
    assert_eq!(carrier_flags(&db, &carrier), (true, false), "reg trunk: carrier deactivated");
    assert_eq!(register_status(&db, &carrier).unwrap()["reason"], "503 Service Unavailable");
    assert!(wait_until(WAIT, || eph_field("127.0.0.153", &carrier).is_none()), "ephemeral gateway deleted");
}

#[test]
fn a_silent_registrar_is_reported_with_the_stacks_408_and_retried() {
    let db = TestDb::create();
    let double = start_double(Duration::from_millis(1500));
    let registrar = Peer::start("regbot_silent.xml", "127.0.0.154", &[]);
    let carrier = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &carrier, "127.0.0.154", Some(registrar.port), "udp", false);
    let mut s = settings(&cluster());
    s.failure_retry_interval = Duration::from_millis(800);
    let sidecar = Instance::start(&double, &db, s);

    let status = wait_for_status(&db, &carrier, "408 recorded", |s| s["reason"] == "408 Request Timeout");
    assert_eq!(status["status"], "fail");
    assert_eq!(status["expires"], 0);
    let snap = sidecar.wait_for("failing", |s| s.failing == 1);
    assert_eq!(snap.regbots[0].state, RegbotState::Failing);
    assert_eq!(snap.regbots[0].last_status.as_deref(), Some("408 Request Timeout"));
    // retried after the backoff with a new CSeq (the double's retransmissions repeat the old one)
    let first_cseq = registrar.requests("REGISTER")[0].cseq();
    assert!(
        wait_until(WAIT, || registrar.requests("REGISTER").iter().any(|r| r.cseq() > first_cseq)),
        "a retry after the 408"
    );
}

#[test]
fn a_removed_gateway_is_deregistered_and_its_ephemeral_gateway_deleted() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.155", &[("status", "200"), ("reason", "OK"), ("expires", "60")]);
    let carrier = add_carrier(&db, CarrierRow { trunk_type: "reg", ..CarrierRow::default() });
    let gateway = add_gateway(&db, &carrier, "127.0.0.155", Some(registrar.port), "udp", false);
    let sidecar = Instance::start(&double, &db, settings(&cluster()));

    wait_for_status(&db, &carrier, "registered", |s| s["status"] == "ok");
    assert!(wait_until(WAIT, || eph_field("127.0.0.155", &carrier).is_some()), "ephemeral gateway written");
    let until = eph_field("127.0.0.155", &carrier).unwrap();
    let now = unix_now();
    assert!(until >= now + 55 && until <= now + 61, "now + granted expires: {until} vs {now}");
    let key_ttl: i64 = redis_query(redis::cmd("TTL").arg("eph-gw-ip:127.0.0.155"));
    assert!((7000..=7200).contains(&key_ttl), "{key_ttl}");

    db.conn().exec_drop("DELETE FROM sip_gateways WHERE sip_gateway_sid = ?", (&gateway,)).unwrap();
    let regs = registrar.wait_for_requests("REGISTER", 2, WAIT);
    let unreg = &regs[1];
    assert_eq!(unreg.header("Expires").as_deref(), Some("0"));
    assert!(unreg.header("Contact").unwrap().ends_with(";expires=0"), "{:?}", unreg.header("Contact"));
    assert_eq!(unreg.header("Call-ID").as_deref(), Some(gateway.as_str()));
    assert_eq!(unreg.header("From"), regs[0].header("From"), "same From tag");
    assert!(unreg.cseq() > regs[0].cseq());
    sidecar.wait_for("regbot gone", |s| s.total == 0);
    assert!(wait_until(WAIT, || eph_field("127.0.0.155", &carrier).is_none()), "ephemeral gateway deleted");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(registrar.requests("REGISTER").len(), 2, "nothing after the de-registration");
}

#[test]
fn database_changes_are_picked_up_and_new_credentials_replace_the_old_binding() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let reply = [("status", "200"), ("reason", "OK"), ("expires", "60")];
    let first_registrar = Peer::start("regbot_reply.xml", "127.0.0.156", &reply);
    let second_registrar = Peer::start("regbot_reply.xml", "127.0.0.157", &reply);
    let first = add_carrier(&db, CarrierRow { realm: Some("one.test"), ..CarrierRow::default() });
    add_gateway(&db, &first, "127.0.0.156", Some(first_registrar.port), "udp", false);
    let sidecar = Instance::start(&double, &db, settings(&cluster()));
    wait_for_status(&db, &first, "first carrier registered", |s| s["status"] == "ok");

    // a carrier added while running
    let second = add_carrier(&db, CarrierRow { username: "bob", realm: Some("two.test"), ..CarrierRow::default() });
    add_gateway(&db, &second, "127.0.0.157", Some(second_registrar.port), "udp", false);
    wait_for_status(&db, &second, "new carrier registered", |s| s["status"] == "ok");
    sidecar.wait_for("two regbots", |s| s.registered == 2);

    // a carrier with an invalid From domain is reported and not registered
    let bad = add_carrier(&db, CarrierRow { from_domain: Some("bad domain"), ..CarrierRow::default() });
    add_gateway(&db, &bad, "127.0.0.158", Some(5060), "udp", false);
    let status = wait_for_status(&db, &bad, "invalid from domain reported", |s| s["status"] == "fail");
    assert_eq!(status, serde_json::json!({"status": "fail", "reason": "Invalid from_domain bad domain"}));

    // new credentials: the old binding is removed first, then the new one registered
    db.conn()
        .exec_drop("UPDATE voip_carriers SET register_username = 'carol' WHERE voip_carrier_sid = ?", (&first,))
        .unwrap();
    let regs = first_registrar.wait_for_requests("REGISTER", 3, WAIT);
    assert_eq!(regs[1].header("Expires").as_deref(), Some("0"));
    assert!(regs[1].header("To").unwrap().contains("sip:alice@one.test"), "old AOR de-registered");
    assert_eq!(regs[2].header("Expires").as_deref(), Some("3600"));
    assert!(regs[2].header("To").unwrap().contains("sip:carol@one.test"), "new AOR registered");
    assert!(regs[2].cseq() > regs[1].cseq());
    assert_eq!(regs[2].header("Call-ID"), regs[0].header("Call-ID"));
    sidecar.wait_for("carol registered", |s| {
        s.regbots.iter().any(|r| r.aor == "carol@one.test" && r.state == RegbotState::Registered)
    });

    // the unchanged carrier kept running untouched: one REGISTER only
    assert_eq!(second_registrar.requests("REGISTER").len(), 1);

    // registration switched off for a carrier: its binding is removed
    db.conn()
        .exec_drop("UPDATE voip_carriers SET requires_register = 0 WHERE voip_carrier_sid = ?", (&second,))
        .unwrap();
    let regs = second_registrar.wait_for_requests("REGISTER", 2, WAIT);
    assert_eq!(regs[1].header("Expires").as_deref(), Some("0"));
    sidecar.wait_for("one regbot left", |s| s.total == 1);
}

#[test]
fn a_200_with_an_absurd_expires_is_capped_and_the_regbot_keeps_registering() {
    // Before the cap this panicked the scheduler thread (`Instant + u64::MAX seconds`).
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let huge = "99999999999999999999";
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.167", &[("status", "200"), ("reason", "OK"), ("expires", huge)]);
    let carrier = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &carrier, "127.0.0.167", Some(registrar.port), "udp", false);
    let mut s = settings(&cluster());
    // we ask for 4 s: the refresh is due 1.8–2 s after each 200
    s.default_expires = Duration::from_secs(4);
    let sidecar = Instance::start(&double, &db, s);

    let status = wait_for_status(&db, &carrier, "registered", |s| s["status"] == "ok");
    assert_eq!(status["expires"], 4, "granted = what we asked for, not {huge}: {status}");
    let snap = sidecar.wait_for("registered", |s| s.registered == 1);
    let next = snap.regbots[0].next_request_in.expect("a refresh is scheduled");
    assert!(next <= Duration::from_secs(2), "refresh at the capped interval: {next:?}");

    // and it keeps registering: two refreshes, each answered with the same absurd value
    let regs = registrar.wait_for_requests("REGISTER", 3, WAIT);
    assert!(regs.len() >= 3, "{regs:#?}");
    let gap = regs[2].at - regs[1].at;
    assert!((1.6..=2.5).contains(&gap), "refresh gap {gap:.3}s");
    let snap = sidecar.snapshot();
    assert_eq!(snap.registered, 1, "{snap:#?}");
    assert_eq!(register_status(&db, &carrier).unwrap()["status"], "ok");
}
