//! The regbot state machine driven with synthetic drachtio events: no thread, no I/O.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::drachtio::UacError;
use crate::regbot::dns::DnsSettings;
use crate::regbot::spec::tests::spec;
use crate::regbot::RegbotMode;
use crate::sip::{compute_response, parse_authorization, DigestInput};

fn settings() -> RegbotSettings {
    RegbotSettings {
        cluster_id: "test".into(),
        failure_threshold: 3,
        failure_retry_interval: Duration::from_secs(300),
        default_expires: Duration::from_secs(3600),
        min_expires: Duration::from_secs(30),
        contact_use_ip: false,
        user_agent: "Jambonz 0.9.6".into(),
        batch_size: 10,
        batch_sleep: Duration::from_millis(250),
        status_interval: Duration::from_secs(60),
        token_ttl: Duration::from_secs(70),
        claim_jitter: Duration::ZERO,
        mode: RegbotMode::Leader,
        register_response_remove: vec![403],
        options_ping_interval: Duration::from_secs(60),
        options_ping_ttl: Duration::from_secs(300),
        options_response_remove: vec![],
        sbc_public_address_keep_alive: Duration::from_secs(900),
        dead_sbc_age: Duration::from_secs(3600),
        dns: DnsSettings { servers: vec![], timeout: Duration::from_secs(1), attempts: 1 },
    }
}

struct Harness {
    settings: RegbotSettings,
    public: PublicAddresses,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            settings: settings(),
            public: PublicAddresses::from_hostports("tcp/203.0.113.10:5060,udp/203.0.113.10:5060"),
            now: Instant::now(),
        }
    }

    fn ctx(&self) -> World<'_> {
        World {
            settings: &self.settings,
            public: Some(&self.public),
            sip_domain: None,
            now: self.now,
            wall: SystemTime::now(),
        }
    }

    /// Fires the regbot's timer (whatever generation it has) and returns the request sent.
    fn fire(&self, rb: &mut Registration) -> SipMessage {
        let gen = rb.timer_gen;
        let actions = rb.on_due(gen, &self.ctx());
        sent(rb, actions)
    }
}

/// The single request among the actions, attached as in flight.
fn sent(rb: &mut Registration, actions: Vec<Action>) -> SipMessage {
    let mut request = None;
    for a in actions {
        if let Action::Send { sip, .. } = a {
            let (_tx, rx) = crossbeam_channel::unbounded();
            rb.attach(rx);
            request = Some(SipMessage::parse(&sip).unwrap());
        }
    }
    request.expect("a request was sent")
}

fn proxy_of(actions: &[Action]) -> Option<String> {
    actions.iter().find_map(|a| match a {
        Action::Send { proxy, .. } => Some(proxy.clone()),
        _ => None,
    })
}

fn response(request: &SipMessage, status: u16, extra: &[(&str, &str)]) -> UacEvent {
    let mut text = format!("SIP/2.0 {status} {}\r\n", crate::sip::reason_phrase(status));
    for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = request.header(h) {
            text.push_str(&format!("{h}: {v}\r\n"));
        }
    }
    for (n, v) in extra {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    UacEvent::Response { meta: meta("192.0.2.7", 5080), message: SipMessage::parse(text.as_bytes()).unwrap() }
}

fn meta(address: &str, port: u16) -> SipDelivery {
    SipDelivery {
        msg_id: "m".into(),
        source: "network".into(),
        bytes: 0,
        protocol: "udp".into(),
        address: address.into(),
        port,
        time: String::new(),
        transaction_id: "t".into(),
        dialog_id: String::new(),
        local_address: None,
        local_port: None,
        sip: Vec::new(),
    }
}

fn statuses(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Store(StoreJob::Status { status, .. }) => Some(status.to_json()),
            _ => None,
        })
        .collect()
}

fn wake(actions: &[Action]) -> Option<Instant> {
    actions.iter().find_map(|a| match a {
        Action::WakeAt(at, _) => Some(*at),
        _ => None,
    })
}

fn cseq_number(m: &SipMessage) -> u32 {
    m.header("CSeq").unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

const CHALLENGE: &str =
    r#"Digest realm="sip.carrier.example", nonce="abc123", qop="auth", opaque="op-1", algorithm=MD5"#;

#[test]
fn first_register_has_the_contract_headers() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0);
    let at = h.now;
    let _ = rb.wake_at(at);
    let actions = rb.on_due(rb.timer_gen, &h.ctx());
    assert_eq!(proxy_of(&actions).as_deref(), Some("sip:192.0.2.7:5080;transport=udp"));
    let req = sent(&mut rb, actions);
    assert_eq!(req.request_uri(), Some("sip:sip.carrier.example"));
    assert_eq!(req.header("Call-ID"), Some("g1"));
    let from = req.header("From").unwrap();
    assert!(from.starts_with("<sip:alice@sip.carrier.example>;tag="), "{from}");
    assert_eq!(req.header("To"), Some("<sip:alice@sip.carrier.example>"));
    assert_eq!(req.header("Contact"), Some("<sip:alice@sip.carrier.example;transport=udp>;expires=3600"));
    assert_eq!(req.header("Expires"), Some("3600"));
    assert_eq!(req.header("User-Agent"), Some("Jambonz 0.9.6"));
    assert!(cseq_number(&req) >= super::super::timing::initial_cseq(SystemTime::now()) - 5, "CSeq starts at the clock");
    assert!(rb.on_due(rb.timer_gen, &h.ctx()).is_empty(), "no second REGISTER while one is in flight");
}

#[test]
fn a_401_is_answered_once_with_a_correct_digest_then_200_schedules_the_refresh() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0);
    let _ = rb.wake_at(h.now);
    let first = h.fire(&mut rb);
    assert!(rb.on_event(response(&first, 180, &[]), &h.ctx()).is_empty(), "provisional responses do not count");

    let actions = rb.on_event(response(&first, 401, &[("WWW-Authenticate", CHALLENGE)]), &h.ctx());
    assert!(statuses(&actions).is_empty(), "a challenge is not an outcome");
    let second = sent(&mut rb, actions);
    assert_eq!(second.header("Call-ID"), first.header("Call-ID"));
    assert_eq!(second.header("From"), first.header("From"), "same From tag");
    assert_eq!(cseq_number(&second), cseq_number(&first) + 1);
    let auth = parse_authorization(second.header("Authorization").unwrap()).unwrap();
    assert_eq!(auth.username.as_deref(), Some("alice"));
    assert_eq!(auth.uri.as_deref(), Some("sip:sip.carrier.example"));
    assert_eq!(auth.qop.as_deref(), Some("auth"));
    assert_eq!(auth.nc.as_deref(), Some("00000001"));
    assert_eq!(auth.opaque.as_deref(), Some("op-1"));
    let expected = compute_response(&DigestInput {
        username: "alice",
        realm: "sip.carrier.example",
        password: "s3cret",
        method: "REGISTER",
        uri: "sip:sip.carrier.example",
        nonce: "abc123",
        nc: auth.nc.as_deref(),
        cnonce: auth.cnonce.as_deref(),
        qop: Some("auth"),
    });
    assert_eq!(auth.response.as_deref(), Some(expected.as_str()));

    let actions = rb.on_event(response(&second, 200, &[("Expires", "600")]), &h.ctx());
    let json = statuses(&actions);
    assert_eq!(json.len(), 1);
    assert!(json[0].starts_with(r#"{"status":"ok","reason":"200 OK","cseq":""#), "{}", json[0]);
    assert!(json[0].contains(&format!(r#""cseq":"{} REGISTER","callId":"g1""#, cseq_number(&first))), "original CSeq");
    assert!(json[0].ends_with(r#""expires":600}"#));
    let at = wake(&actions).unwrap();
    let delay = at - h.now;
    assert!(delay <= Duration::from_secs(300) && delay >= Duration::from_secs(270), "{delay:?}");
    assert!(rb.is_registered());
}

#[test]
fn a_second_challenge_is_final_and_a_407_gets_proxy_authorization() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0);
    let _ = rb.wake_at(h.now);
    let first = h.fire(&mut rb);
    let actions = rb.on_event(response(&first, 407, &[("Proxy-Authenticate", CHALLENGE)]), &h.ctx());
    let second = sent(&mut rb, actions);
    assert!(second.header("Proxy-Authorization").is_some());
    assert!(second.header("Authorization").is_none());
    let actions = rb.on_event(response(&second, 407, &[("Proxy-Authenticate", CHALLENGE)]), &h.ctx());
    assert_eq!(statuses(&actions).len(), 1);
    assert!(statuses(&actions)[0].contains(r#""reason":"407 Proxy Authentication Required""#));
    assert!(wake(&actions).is_some(), "retried later");
    assert!(rb.receiver().is_none());
}

#[test]
fn a_challenged_retry_through_a_dns_next_hop_is_pinned_to_the_challenger() {
    let h = Harness::new();
    let mut s = spec();
    s.host = "sip.carrier.example".into();
    let mut rb = Registration::new(s, 0);
    let _ = rb.wake_at(h.now);
    let first = h.fire(&mut rb);
    let UacEvent::Response { message, .. } = response(&first, 401, &[("WWW-Authenticate", CHALLENGE)]) else {
        unreachable!()
    };
    let actions = rb.on_event(UacEvent::Response { meta: meta("198.51.100.9", 5062), message }, &h.ctx());
    assert_eq!(proxy_of(&actions).as_deref(), Some("sip:198.51.100.9:5062;transport=udp"));
}

#[test]
fn counted_failures_back_off_and_disable_at_the_threshold() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0);
    let _ = rb.wake_at(h.now);
    let mut delays = Vec::new();
    for round in 1..=3 {
        let req = h.fire(&mut rb);
        let actions = rb.on_event(response(&req, 403, &[]), &h.ctx());
        assert!(statuses(&actions)[0].contains(r#""status":"fail","reason":"403 Forbidden""#));
        assert!(statuses(&actions)[0].ends_with(r#""expires":0}"#));
        assert_eq!(rb.consecutive_failures(), round);
        if round < 3 {
            delays.push(wake(&actions).unwrap() - h.now);
        } else {
            assert!(wake(&actions).is_none(), "no more retries");
            assert!(actions.iter().any(
                |a| matches!(a, Action::Store(StoreJob::Disable { voip_carrier_sid }) if voip_carrier_sid == "c1")
            ));
            assert_eq!(rb.info(h.now).state, RegbotState::Disabled);
        }
    }
    // jittered between half and all of 18.75 s, then of 37.5 s
    assert!(delays[0] >= Duration::from_millis(9_375) && delays[0] <= Duration::from_millis(18_750), "{delays:?}");
    assert!(delays[1] >= Duration::from_millis(18_750) && delays[1] <= Duration::from_millis(37_500), "{delays:?}");
    assert!(rb.on_due(rb.timer_gen, &h.ctx()).is_empty(), "a disabled regbot sends nothing");
}

#[test]
fn uncounted_failures_and_send_errors_neither_count_nor_reset() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 2);
    let _ = rb.wake_at(h.now);
    let req = h.fire(&mut rb);
    let actions = rb.on_event(response(&req, 503, &[]), &h.ctx());
    assert_eq!(rb.consecutive_failures(), 2, "503 is not in REGISTER_RESPONSE_REMOVE");
    assert!(wake(&actions).is_some());
    let _ = h.fire(&mut rb);
    let actions = rb.on_event(UacEvent::Failed(UacError::Rejected("invalid request-uri: x".into())), &h.ctx());
    assert_eq!(
        statuses(&actions),
        vec![r#"{"status":"fail","reason":"drachtio rejected the request: invalid request-uri: x"}"#.to_string()]
    );
    assert_eq!(rb.consecutive_failures(), 2);
    let _ = h.fire(&mut rb);
    let actions = rb.on_event(UacEvent::Failed(UacError::NotConnected), &h.ctx());
    assert!(statuses(&actions).is_empty(), "our drachtio outage is not the carrier's failure");
    assert!(wake(&actions).is_some(), "retried");
    assert_eq!(rb.info(h.now).last_status.as_deref(), Some("not connected to drachtio"));
    assert_eq!(rb.info(h.now).state, RegbotState::Failing);
    let req = h.fire(&mut rb);
    let _ = rb.on_event(response(&req, 200, &[]), &h.ctx());
    assert_eq!(rb.consecutive_failures(), 0, "a 200 resets the count");
}

#[test]
fn a_reg_trunk_refreshes_its_ephemeral_gateways_with_the_outcome() {
    let h = Harness::new();
    let mut s = spec();
    s.trunk_type = crate::store::carriers::TrunkType::Reg;
    let mut rb = Registration::new(s, 0);
    let _ = rb.wake_at(h.now);
    let req = h.fire(&mut rb);
    let actions = rb.on_event(response(&req, 200, &[("Expires", "120")]), &h.ctx());
    assert!(actions.iter().any(|a| matches!(a, Action::Store(StoreJob::EphRefresh { expires: 120, .. }))));
    let req = h.fire(&mut rb);
    let actions = rb.on_event(response(&req, 480, &[]), &h.ctx());
    assert!(actions.iter().any(|a| matches!(a, Action::Store(StoreJob::EphRefresh { expires: 0, .. }))));
}

#[test]
fn retiring_a_registered_regbot_deregisters_it_first() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0);
    let _ = rb.wake_at(h.now);
    let req = h.fire(&mut rb);
    let _ = rb.on_event(response(&req, 200, &[]), &h.ctx());
    let actions = rb.retire(&h.ctx());
    let unreg = sent(&mut rb, actions);
    assert_eq!(unreg.header("Expires"), Some("0"));
    assert_eq!(unreg.header("Contact"), Some("<sip:alice@sip.carrier.example;transport=udp>;expires=0"));
    assert_eq!(unreg.header("Call-ID"), Some("g1"));
    assert!(cseq_number(&unreg) > cseq_number(&req));
    assert_eq!(rb.info(h.now).state, RegbotState::Unregistering);
    // the registrar challenges the de-registration too: answered once
    let actions = rb.on_event(response(&unreg, 401, &[("WWW-Authenticate", CHALLENGE)]), &h.ctx());
    let again = sent(&mut rb, actions);
    assert_eq!(again.header("Expires"), Some("0"));
    let actions = rb.on_event(response(&again, 200, &[]), &h.ctx());
    assert!(
        matches!(actions.as_slice(), [Action::Store(StoreJob::LeaderContact { contact: None, .. }), Action::Finished]),
        "the next leader has no contact to remove: {actions:?}"
    );
}

#[test]
fn retiring_a_regbot_that_never_registered_just_finishes() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0);
    let _ = rb.wake_at(h.now);
    assert!(matches!(rb.retire(&h.ctx()).as_slice(), [Action::Finished]));
}

#[test]
fn retiring_during_a_register_waits_for_it_and_deregisters_what_it_created() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0);
    let _ = rb.wake_at(h.now);
    let req = h.fire(&mut rb);
    assert!(rb.retire(&h.ctx()).is_empty());
    // the old configuration's challenge is not worth answering: it is final
    let actions = rb.on_event(response(&req, 200, &[]), &h.ctx());
    assert!(statuses(&actions).is_empty(), "a retired regbot writes no status");
    let unreg = sent(&mut rb, actions);
    assert_eq!(unreg.header("Expires"), Some("0"));
    assert!(matches!(rb.on_event(response(&unreg, 200, &[]), &h.ctx()).as_slice(), [Action::Finished]));
}

#[test]
fn a_changed_configuration_deregisters_the_old_binding_then_registers_the_new() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0);
    let _ = rb.wake_at(h.now);
    let req = h.fire(&mut rb);
    let _ = rb.on_event(response(&req, 200, &[]), &h.ctx());
    let mut new_spec = spec();
    new_spec.username = "bob".into();
    new_spec.from_user = "bob".into();
    let actions = rb.replace(new_spec.clone(), h.now, &h.ctx());
    let unreg = sent(&mut rb, actions);
    assert_eq!(unreg.header("Expires"), Some("0"));
    assert_eq!(unreg.header("From").unwrap().split(';').next(), Some("<sip:alice@sip.carrier.example>"));
    let actions = rb.on_event(response(&unreg, 200, &[]), &h.ctx());
    let register = sent(&mut rb, actions);
    assert_eq!(register.header("Expires"), Some("3600"));
    assert_eq!(register.header("To"), Some("<sip:bob@sip.carrier.example>"));
    assert_eq!(
        register.header("From").unwrap().split(';').nth(1),
        unreg.header("From").unwrap().split(';').nth(1),
        "the From tag stays"
    );
    assert_eq!(rb.spec().identity(), new_spec.identity());

    // not registered: the change takes effect at the given time, nothing sent now
    let mut idle = Registration::new(spec(), 0);
    let later = h.now + Duration::from_secs(1);
    let actions = idle.replace(new_spec, later, &h.ctx());
    assert!(matches!(actions.as_slice(), [Action::WakeAt(at, _)] if *at == later));
}

#[test]
fn stale_timers_are_ignored() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0);
    let Action::WakeAt(_, old) = rb.wake_at(h.now) else { unreachable!() };
    let _ = rb.wake_at(h.now + Duration::from_secs(10));
    assert!(rb.on_due(old, &h.ctx()).is_empty());
}

fn ok_with(headers: &[(&str, &str)]) -> SipMessage {
    let mut text = String::from("SIP/2.0 200 OK\r\nCall-ID: g1\r\n");
    for (n, v) in headers {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("\r\n");
    SipMessage::parse(text.as_bytes()).unwrap()
}

#[test]
fn granted_expires_rules() {
    let ours = "alice@203.0.113.10:5060";
    assert_eq!(granted_expires(&ok_with(&[]), ours, 3600, 30), 3600, "what we asked for");
    assert_eq!(granted_expires(&ok_with(&[("Expires", "900")]), ours, 3600, 30), 900);
    assert_eq!(
        granted_expires(&ok_with(&[("Expires", "900"), ("Contact", "<sip:x@y>;expires=600")]), ours, 3600, 30),
        600,
        "the Contact parameter wins"
    );
    assert_eq!(
        granted_expires(
            &ok_with(&[(
                "Contact",
                "<sip:other@9.9.9.9>;expires=100, <sip:alice@203.0.113.10:5060;transport=udp>;expires=700"
            )]),
            ours,
            3600,
            30
        ),
        700,
        "our binding rather than another device's"
    );
    assert_eq!(granted_expires(&ok_with(&[("Expires", "abc")]), ours, 3600, 30), 30, "NaN → minimum");
    assert_eq!(granted_expires(&ok_with(&[("Expires", "10")]), ours, 3600, 30), 30, "below minimum");
    assert_eq!(granted_expires(&ok_with(&[("Expires", "120s")]), ours, 3600, 30), 120, "parseInt semantics");
}

#[test]
fn granted_expires_is_never_above_what_we_asked_for() {
    let ours = "alice@203.0.113.10:5060";
    let huge = "99999999999999999999";
    assert_eq!(granted_expires(&ok_with(&[("Expires", huge)]), ours, 3600, 30), 3600);
    assert_eq!(granted_expires(&ok_with(&[("Expires", "18446744073709551615")]), ours, 3600, 30), 3600);
    assert_eq!(granted_expires(&ok_with(&[("Expires", "7200")]), ours, 3600, 30), 3600);
    let contact = format!("<sip:alice@203.0.113.10:5060>;expires={huge}");
    assert_eq!(granted_expires(&ok_with(&[("Contact", contact.as_str())]), ours, 3600, 30), 3600);
    // a minimum above the request wins: the documented lower bound holds
    assert_eq!(granted_expires(&ok_with(&[("Expires", huge)]), ours, 20, 30), 30);
    assert_eq!(granted_expires(&ok_with(&[("Expires", "0")]), ours, 3600, 30), 30);
}

#[test]
fn a_200_with_an_absurd_expires_schedules_the_refresh_at_the_capped_interval() {
    let ok = ok_with(&[("Expires", "99999999999999999999")]);
    let granted = granted_expires(&ok, "alice@203.0.113.10:5060", 3600, 30);
    let now = std::time::Instant::now();
    let delay = crate::regbot::timing::refresh_delay(std::time::Duration::from_secs(granted), 0.0);
    assert_eq!(delay, std::time::Duration::from_secs(1800));
    assert_eq!(crate::regbot::timing::after(now, delay), now + delay);
    // and the arithmetic itself cannot overflow, whatever it is given
    let forever = std::time::Duration::MAX;
    assert!(crate::regbot::timing::after(now, forever) > now);
    assert!(crate::regbot::timing::refresh_delay(forever, 0.5) <= forever);
}

#[test]
fn a_new_leader_removes_the_previous_leaders_contact_after_its_own_200() {
    let h = Harness::new();
    let mut public_spec = spec();
    public_spec.use_public_ip_in_contact = true;
    let mut rb = Registration::new(public_spec, 0).with_stale_contact(Some("alice@198.51.100.4:5060".into()));
    let _ = rb.wake_at(h.now);
    let req = h.fire(&mut rb);
    assert_eq!(req.header("Contact"), Some("<sip:alice@203.0.113.10:5060;transport=udp>;expires=3600"));
    let actions = rb.on_event(response(&req, 200, &[]), &h.ctx());
    assert!(actions.iter().any(|a| matches!(a, Action::Store(StoreJob::LeaderContact { contact: Some(c), .. })
        if c == "alice@203.0.113.10:5060")));
    let refresh = wake(&actions).expect("the refresh is armed first");
    let drop = sent(&mut rb, actions);
    assert_eq!(drop.header("Call-ID"), Some("g1"), "same Call-ID");
    assert_eq!(drop.header("Contact"), Some("<sip:alice@198.51.100.4:5060;transport=udp>;expires=0"));
    assert_eq!(drop.header("Expires"), Some("0"));
    assert_eq!(rb.info(h.now).state, RegbotState::Registered, "still registered meanwhile");
    // Challenged like any REGISTER, answered once; the 200 ends it without touching our state.
    let challenge = response(&drop, 401, &[("WWW-Authenticate", r#"Digest realm="r", nonce="n""#)]);
    let actions = rb.on_event(challenge, &h.ctx());
    let answer = sent(&mut rb, actions);
    assert!(answer.header("Authorization").is_some());
    assert!(rb.on_event(response(&answer, 200, &[]), &h.ctx()).is_empty());
    assert_eq!(rb.info(h.now).state, RegbotState::Registered);
    // The refresh goes out with our contact, and no second removal.
    let again = h.fire(&mut rb);
    assert_eq!(again.header("Contact"), Some("<sip:alice@203.0.113.10:5060;transport=udp>;expires=3600"));
    let actions = rb.on_event(response(&again, 200, &[]), &h.ctx());
    assert!(!actions.iter().any(|a| matches!(a, Action::Send { .. })));
    assert!(refresh > h.now);
}

#[test]
fn the_same_contact_as_the_previous_leader_is_left_alone_and_a_silent_removal_does_not_stop_refreshes() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0).with_stale_contact(Some("alice@sip.carrier.example".into()));
    let _ = rb.wake_at(h.now);
    let req = h.fire(&mut rb);
    let actions = rb.on_event(response(&req, 200, &[]), &h.ctx());
    assert!(!actions.iter().any(|a| matches!(a, Action::Send { .. })), "our own contact: nothing to remove");

    let mut public_spec = spec();
    public_spec.use_public_ip_in_contact = true;
    let mut rb = Registration::new(public_spec, 0).with_stale_contact(Some("alice@198.51.100.4:5060".into()));
    let _ = rb.wake_at(h.now);
    let req = h.fire(&mut rb);
    let actions = rb.on_event(response(&req, 200, &[]), &h.ctx());
    let _drop = sent(&mut rb, actions);
    // The carrier never answers the removal: the refresh still goes out when due.
    let refresh = h.fire(&mut rb);
    assert_eq!(refresh.header("Expires"), Some("3600"));
}

#[test]
fn in_every_mode_failures_are_counted_by_the_cluster_not_by_one_regbot() {
    let h = Harness::new();
    let mut rb = Registration::new(spec().for_sbc("203.0.113.10:5060"), 0);
    let _ = rb.wake_at(h.now);
    for _ in 0..4 {
        let req = h.fire(&mut rb);
        assert_eq!(req.header("Call-ID"), Some("g1@203.0.113.10:5060"));
        let actions = rb.on_event(response(&req, 403, &[]), &h.ctx());
        assert!(actions.iter().any(|a| matches!(a, Action::Store(StoreJob::CountFailure { sbc, threshold: 3, .. })
            if sbc == "203.0.113.10:5060")));
        assert!(actions.iter().any(|a| matches!(a, Action::Store(StoreJob::SbcStatus { .. }))));
        assert!(!actions
            .iter()
            .any(|a| matches!(a, Action::Store(StoreJob::Disable { .. } | StoreJob::Status { .. }))));
        assert!(wake(&actions).is_some(), "keeps retrying until the cluster disables the carrier");
    }
    let req = h.fire(&mut rb);
    let actions = rb.on_event(response(&req, 200, &[("Expires", "120")]), &h.ctx());
    let until = actions.iter().find_map(|a| match a {
        Action::Store(StoreJob::SbcStatus { until, status, .. }) if status.to_json().contains(r#""status":"ok""#) => {
            Some(*until)
        }
        _ => None,
    });
    let now = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(until.is_some_and(|u| u >= now + 100 && u <= now + 130), "{until:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Store(StoreJob::LeaderContact { .. }))), "leader mode only");
}

#[test]
fn a_leader_retired_before_its_first_200_removes_the_binding_the_previous_leader_left() {
    let h = Harness::new();
    let mut rb = Registration::new(spec(), 0).with_stale_contact(Some("alice@sip.carrier.example".into()));
    let _ = rb.wake_at(h.now + Duration::from_secs(1));
    let actions = rb.retire(&h.ctx());
    let drop = sent(&mut rb, actions);
    assert_eq!(drop.header("Call-ID"), Some("g1"));
    assert_eq!(drop.header("Contact"), Some("<sip:alice@sip.carrier.example;transport=udp>;expires=0"));
    let actions = rb.on_event(response(&drop, 200, &[]), &h.ctx());
    assert!(
        matches!(actions.as_slice(), [Action::Store(StoreJob::LeaderContact { contact: None, .. }), Action::Finished]),
        "{actions:?}"
    );
    // Without a previous leader's binding there is nothing to send.
    let mut rb = Registration::new(spec(), 0);
    assert!(matches!(rb.retire(&h.ctx()).as_slice(), [Action::Finished]));
}
