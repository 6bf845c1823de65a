//! The heartbeat tracker and role against the real Redis at 127.0.0.1:6379; each test has its
//! own cluster id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};

use sbc_sidecar::drachtio::{IncomingRequest, Outgoing, Responder, SipDelivery};
use sbc_sidecar::heartbeat::{classify, ClusterSets, HeartbeatRole, HeartbeatSettings, Ping, ServerKind, Tracker};
use sbc_sidecar::shared::Shared;
use sbc_sidecar::sip::SipMessage;
use sbc_sidecar::store::redis::{pool, RedisPool, RedisSettings};
use sbc_test_tools::ctl_server::cli_shared;

const EXPIRES: Duration = Duration::from_secs(60);

fn redis_at(port: u16, timeout: Duration) -> RedisPool {
    if port == sbc_test_tools::services::REDIS_PORT {
        sbc_test_tools::services::require_redis();
    }
    pool(&RedisSettings::direct("127.0.0.1", port, timeout, 4)).unwrap()
}

/// A cluster id of its own, with its sets deleted when the test ends.
struct Cluster {
    id: String,
    sets: ClusterSets,
    redis: RedisPool,
}

impl Cluster {
    fn new() -> Cluster {
        let id = format!("test-{}", uuid::Uuid::new_v4().simple());
        Cluster { sets: ClusterSets::new(&id), id, redis: redis_at(6379, Duration::from_secs(2)) }
    }

    fn tracker(&self) -> Tracker {
        Tracker::new(&self.id, EXPIRES, self.redis.clone())
    }

    fn members(&self, set: &str) -> Vec<String> {
        let mut conn = self.redis.get().unwrap();
        let mut m: Vec<String> = redis::cmd("SMEMBERS").arg(set).query(&mut *conn).unwrap();
        m.sort();
        m
    }

    fn add(&self, set: &str, member: &str) {
        let mut conn = self.redis.get().unwrap();
        let _: i64 = redis::cmd("SADD").arg(set).arg(member).query(&mut *conn).unwrap();
    }

    fn remove(&self, set: &str, member: &str) {
        let mut conn = self.redis.get().unwrap();
        let _: i64 = redis::cmd("SREM").arg(set).arg(member).query(&mut *conn).unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        sbc_test_tools::ctl_server::delete_cluster_sets(&self.redis, &self.sets);
    }
}

fn options(headers: &[(&str, &str)]) -> SipMessage {
    let mut text = String::from(
        "OPTIONS sip:127.0.0.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.20:5070;branch=z9hG4bK-1\r\n\
         From: <sip:fs@127.0.0.20:5070>;tag=1\r\nTo: <sip:127.0.0.10:5060>\r\nCall-ID: hb-1@127.0.0.20\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n",
    );
    for (n, v) in headers {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    SipMessage::parse(text.as_bytes()).unwrap()
}

/// An OPTIONS as drachtio delivers it from `address:port`, and where its response goes.
fn request(address: &str, port: u16, headers: &[(&str, &str)]) -> (IncomingRequest, Receiver<Outgoing>) {
    let message = options(headers);
    let (tx, rx) = unbounded();
    let meta = SipDelivery {
        msg_id: "m1".to_string(),
        source: "network".to_string(),
        bytes: 0,
        protocol: "udp".to_string(),
        address: address.to_string(),
        port,
        time: "10:00:00.000000".to_string(),
        transaction_id: "txn-1".to_string(),
        dialog_id: String::new(),
        local_address: None,
        local_port: None,
        sip: message.to_bytes(),
    };
    let request = IncomingRequest {
        meta,
        message,
        server_hostport: Arc::from("udp/127.0.0.10:5060"),
        private_sip_address: None,
        responder: Responder::new("txn-1".to_string(), tx),
    };
    (request, rx)
}

/// The SIP response the role sent through the drachtio writer.
fn sent_response(rx: &Receiver<Outgoing>) -> SipMessage {
    let Outgoing::Frame { payload, .. } = rx.recv_timeout(Duration::from_secs(5)).expect("a response frame") else {
        panic!("expected a frame");
    };
    let start = payload.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    SipMessage::parse(&payload[start..]).unwrap()
}

/// Runs one request through the tracker like the role does; returns status and X-Members.
fn ping(
    tracker: &mut Tracker,
    address: &str,
    port: u16,
    headers: &[(&str, &str)],
    now: Instant,
) -> (u16, Option<String>) {
    let (req, rx) = request(address, port, headers);
    let response = tracker.answer(&req, now);
    req.respond(response);
    let resp = sent_response(&rx);
    (resp.status().unwrap(), resp.header("X-Members").map(str::to_string))
}

#[test]
fn rtp_status_wins_over_fs_status() {
    let both = options(&[("X-FS-Status", "open"), ("X-RTP-Status", "closed")]);
    assert_eq!(classify(&both), Ping::Internal { kind: ServerKind::Rtp, status: "closed", service_url: None });
    let fs = options(&[("x-fs-status", "open"), ("X-FS-ServiceUrl", "http://127.0.0.5:3000")]);
    assert_eq!(
        classify(&fs),
        Ping::Internal { kind: ServerKind::Feature, status: "open", service_url: Some("http://127.0.0.5:3000") }
    );
    let rtp = options(&[("X-RTP-Status", "open"), ("X-RTP-Calls", "3")]);
    assert_eq!(classify(&rtp), Ping::Internal { kind: ServerKind::Rtp, status: "open", service_url: None });
    assert_eq!(classify(&options(&[("User-Agent", "monitor")])), Ping::External);
}

#[test]
fn feature_server_open_is_added_as_ip_port_and_x_members_counts_the_set() {
    let c = Cluster::new();
    let mut t = c.tracker();
    let now = Instant::now();
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open")], now), (200, Some("1".into())));
    assert_eq!(ping(&mut t, "127.0.0.21", 5070, &[("X-FS-Status", "open")], now), (200, Some("2".into())));
    // checking in again changes nothing
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open")], now), (200, Some("2".into())));
    assert_eq!(c.members(&c.sets.active_fs), vec!["127.0.0.20:5070", "127.0.0.21:5070"]);
    assert_eq!(t.tracked(ServerKind::Feature), 2);
    assert!(c.members(&c.sets.active_rtp).is_empty());
}

#[test]
fn ipv6_feature_server_member_is_bracketed() {
    let c = Cluster::new();
    let mut t = c.tracker();
    assert_eq!(ping(&mut t, "fd00::20", 5070, &[("X-FS-Status", "open")], Instant::now()), (200, Some("1".into())));
    assert_eq!(c.members(&c.sets.active_fs), vec!["[fd00::20]:5070"]);
}

#[test]
fn rtp_server_member_is_the_bare_ip() {
    let c = Cluster::new();
    let mut t = c.tracker();
    let now = Instant::now();
    assert_eq!(ping(&mut t, "127.0.0.30", 40000, &[("X-RTP-Status", "open")], now), (200, Some("1".into())));
    // X-RTP-Status wins: the server goes to the RTP set even with X-FS-Status present
    assert_eq!(
        ping(&mut t, "127.0.0.31", 40000, &[("X-FS-Status", "open"), ("X-RTP-Status", "open")], now),
        (200, Some("2".into()))
    );
    assert_eq!(c.members(&c.sets.active_rtp), vec!["127.0.0.30", "127.0.0.31"]);
    assert!(c.members(&c.sets.active_fs).is_empty());
    assert_eq!(t.tracked(ServerKind::Rtp), 2);
}

#[test]
fn anything_but_exactly_open_removes_the_server_and_its_service_url() {
    let c = Cluster::new();
    let mut t = c.tracker();
    let now = Instant::now();
    let url = ("X-FS-ServiceUrl", "http://127.0.0.20:3000");
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open"), url], now), (200, Some("1".into())));
    assert_eq!(c.members(&c.sets.fs_service_url), vec!["http://127.0.0.20:3000"]);
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "Open"), url], now), (200, Some("0".into())));
    assert!(c.members(&c.sets.active_fs).is_empty());
    assert!(c.members(&c.sets.fs_service_url).is_empty());
    assert_eq!(t.tracked(ServerKind::Feature), 0);

    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open")], now), (200, Some("1".into())));
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "closed")], now), (200, Some("0".into())));
    assert_eq!(ping(&mut t, "127.0.0.30", 1, &[("X-RTP-Status", "open")], now), (200, Some("1".into())));
    assert_eq!(ping(&mut t, "127.0.0.30", 1, &[("X-RTP-Status", "")], now), (200, Some("0".into())));
}

#[test]
fn feature_server_drained_by_bare_ip_is_rejected_on_check_in() {
    let c = Cluster::new();
    let mut t = c.tracker();
    let now = Instant::now();
    let url = ("X-FS-ServiceUrl", "http://127.0.0.20:3000");
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open"), url], now), (200, Some("1".into())));
    c.add(&c.sets.drained_fs, "127.0.0.20");
    // the next open check-in counts as closed: out of active-fs and fs-service-url
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open"), url], now), (200, Some("0".into())));
    assert!(c.members(&c.sets.active_fs).is_empty());
    assert!(c.members(&c.sets.fs_service_url).is_empty());
    // every port of that host is drained
    assert_eq!(ping(&mut t, "127.0.0.20", 5080, &[("X-FS-Status", "open")], now), (200, Some("0".into())));
    // undrain: the next open check-in adds it back
    c.remove(&c.sets.drained_fs, "127.0.0.20");
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open"), url], now), (200, Some("1".into())));
    assert_eq!(c.members(&c.sets.fs_service_url), vec!["http://127.0.0.20:3000"]);
}

#[test]
fn feature_server_drained_by_ip_and_port_leaves_other_ports_alone() {
    let c = Cluster::new();
    let mut t = c.tracker();
    let now = Instant::now();
    c.add(&c.sets.drained_fs, "127.0.0.20:5070");
    c.add(&c.sets.drained_fs, "[fd00::20]:5070");
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open")], now), (200, Some("0".into())));
    assert_eq!(ping(&mut t, "127.0.0.20", 5080, &[("X-FS-Status", "open")], now), (200, Some("1".into())));
    assert_eq!(ping(&mut t, "fd00::20", 5070, &[("X-FS-Status", "open")], now), (200, Some("1".into())));
    assert_eq!(ping(&mut t, "fd00::20", 5080, &[("X-FS-Status", "open")], now), (200, Some("2".into())));
    assert_eq!(c.members(&c.sets.active_fs), vec!["127.0.0.20:5080", "[fd00::20]:5080"]);
}

#[test]
fn drain_does_not_apply_to_rtp_servers() {
    let c = Cluster::new();
    let mut t = c.tracker();
    c.add(&c.sets.drained_fs, "127.0.0.30");
    assert_eq!(ping(&mut t, "127.0.0.30", 1, &[("X-RTP-Status", "open")], Instant::now()), (200, Some("1".into())));
}

#[test]
fn silent_members_expire_and_live_ones_stay() {
    let c = Cluster::new();
    let mut t = c.tracker();
    let t0 = Instant::now();
    let url = ("X-FS-ServiceUrl", "http://127.0.0.20:3000");
    ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open"), url], t0);
    ping(&mut t, "127.0.0.30", 1, &[("X-RTP-Status", "open")], t0);
    ping(&mut t, "127.0.0.21", 5070, &[("X-FS-Status", "open")], t0 + Duration::from_secs(30));

    // exactly EXPIRES old is not yet expired
    assert_eq!(t.sweep(t0 + EXPIRES).unwrap(), 0);
    assert_eq!(t.sweep(t0 + EXPIRES + Duration::from_millis(1)).unwrap(), 3);
    assert_eq!(c.members(&c.sets.active_fs), vec!["127.0.0.21:5070"]);
    assert!(c.members(&c.sets.active_rtp).is_empty());
    assert!(c.members(&c.sets.fs_service_url).is_empty());
    assert_eq!(t.tracked(ServerKind::Feature), 1);
    assert_eq!(t.tracked(ServerKind::Rtp), 0);

    assert_eq!(t.sweep(t0 + Duration::from_secs(91)).unwrap(), 1);
    assert!(c.members(&c.sets.active_fs).is_empty());
}

#[test]
fn members_found_at_startup_expire_unless_they_check_in() {
    let c = Cluster::new();
    c.add(&c.sets.active_fs, "127.0.0.40:5070");
    c.add(&c.sets.active_fs, "127.0.0.41:5070");
    c.add(&c.sets.active_rtp, "127.0.0.42");
    c.add(&c.sets.fs_service_url, "http://127.0.0.40:3000");
    let mut t = c.tracker();
    let t0 = Instant::now();
    t.load(t0).unwrap();
    assert_eq!(t.tracked(ServerKind::Feature), 2);
    ping(&mut t, "127.0.0.41", 5070, &[("X-FS-Status", "open")], t0 + Duration::from_secs(50));
    assert_eq!(t.sweep(t0 + Duration::from_secs(61)).unwrap(), 3);
    assert_eq!(c.members(&c.sets.active_fs), vec!["127.0.0.41:5070"]);
    assert!(c.members(&c.sets.active_rtp).is_empty());
    assert!(c.members(&c.sets.fs_service_url).is_empty());
}

#[test]
fn redis_unreachable_gives_503_but_external_pings_still_get_200() {
    let mut t = Tracker::new("test-unreachable", EXPIRES, redis_at(1, Duration::from_millis(200)));
    let now = Instant::now();
    let (req, rx) = request("127.0.0.20", 5070, &[("X-FS-Status", "open")]);
    let response = t.answer(&req, now);
    req.respond(response);
    let resp = sent_response(&rx);
    assert_eq!(resp.status(), Some(503));
    assert_eq!(resp.header("X-Members"), None);
    assert_eq!(resp.header("Call-ID"), Some("hb-1@127.0.0.20"));

    let (req, rx) = request("127.0.0.99", 5060, &[("User-Agent", "carrier")]);
    let response = t.answer(&req, now);
    req.respond(response);
    let resp = sent_response(&rx);
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.header("X-Members"), None);
    assert!(t.load(now).is_err());
    // what Redis did not confirm is not tracked either
    assert_eq!(t.tracked(ServerKind::Feature), 0);
    assert_eq!(t.sweep(now + Duration::from_secs(3600)).unwrap(), 0);
}

#[test]
fn role_answers_options_expires_members_and_stops_on_shutdown() {
    let c = Cluster::new();
    let (req_tx, req_rx) = unbounded();
    let (stop_tx, stop_rx) = unbounded::<()>();
    let settings = HeartbeatSettings {
        cluster_id: c.id.clone(),
        check_interval: Duration::from_millis(100),
        expires_interval: Duration::from_millis(300),
        allowed_sources: vec!["127.0.0.0/8".parse().unwrap()],
        max_servers: sbc_sidecar::heartbeat::DEFAULT_MAX_SERVERS,
    };
    let shared = Shared { shutdown: stop_rx, ..cli_shared(c.redis.clone()) };
    let role = HeartbeatRole::new(settings, &shared, req_rx);
    let thread = std::thread::spawn(move || role.run());

    let (req, rx) = request("127.0.0.20", 5070, &[("X-FS-Status", "open")]);
    req_tx.send(req).unwrap();
    let resp = sent_response(&rx);
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.header("X-Members"), Some("1"));
    assert_eq!(c.members(&c.sets.active_fs), vec!["127.0.0.20:5070"]);

    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.members(&c.sets.active_fs).is_empty() {
        assert!(Instant::now() < deadline, "member never expired");
        std::thread::sleep(Duration::from_millis(50));
    }

    let stopped = Instant::now();
    drop(stop_tx);
    thread.join().unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_steady_check_in_refreshes_last_seen_and_restores_a_missing_url() {
    let c = Cluster::new();
    let mut t = c.tracker();
    let t0 = Instant::now();
    let url = ("X-FS-ServiceUrl", "http://127.0.0.20:3000");
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open"), url], t0), (200, Some("1".into())));
    // already a member: the one-round-trip path still refreshes lastSeen
    assert_eq!(
        ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open"), url], t0 + Duration::from_secs(50)),
        (200, Some("1".into()))
    );
    assert_eq!(t.sweep(t0 + Duration::from_secs(61)).unwrap(), 0);
    // a member whose URL went missing gets it back on the next check-in
    c.remove(&c.sets.fs_service_url, "http://127.0.0.20:3000");
    assert_eq!(
        ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open"), url], t0 + Duration::from_secs(60)),
        (200, Some("1".into()))
    );
    assert_eq!(c.members(&c.sets.fs_service_url), vec!["http://127.0.0.20:3000"]);
    // and a member removed behind our back is added again
    c.remove(&c.sets.active_fs, "127.0.0.20:5070");
    assert_eq!(
        ping(&mut t, "127.0.0.20", 5070, &[("X-FS-Status", "open")], t0 + Duration::from_secs(70)),
        (200, Some("1".into()))
    );
    assert_eq!(c.members(&c.sets.active_fs), vec!["127.0.0.20:5070"]);
}

#[test]
fn heartbeats_from_outside_the_allowed_networks_get_403_and_change_nothing() {
    let c = Cluster::new();
    c.add(&c.sets.active_fs, "127.0.0.5:5070");
    c.add(&c.sets.active_rtp, "127.0.0.6");
    let mut t = c.tracker();
    t.set_allowed_sources(vec!["127.0.0.0/8".parse().unwrap()]);
    let now = Instant::now();
    let url = ("X-FS-ServiceUrl", "http://203.0.113.9:3000");
    assert_eq!(ping(&mut t, "203.0.113.9", 5070, &[("X-FS-Status", "open"), url], now), (403, None));
    // nor can an outsider take a real server out
    assert_eq!(ping(&mut t, "203.0.113.9", 5070, &[("X-RTP-Status", "closed")], now), (403, None));
    assert_eq!(ping(&mut t, "not-an-address", 5070, &[("X-FS-Status", "closed")], now), (403, None));
    assert_eq!(c.members(&c.sets.active_fs), vec!["127.0.0.5:5070"]);
    assert_eq!(c.members(&c.sets.active_rtp), vec!["127.0.0.6"]);
    assert!(c.members(&c.sets.fs_service_url).is_empty());
    assert_eq!(t.tracked(ServerKind::Feature), 0);
    // a plain OPTIONS from the same source is still answered 200
    assert_eq!(ping(&mut t, "203.0.113.9", 5070, &[("User-Agent", "carrier")], now), (200, None));
    // and a heartbeat from inside still counts
    assert_eq!(ping(&mut t, "127.0.0.7", 5070, &[("X-FS-Status", "open")], now), (200, Some("2".into())));
}

#[test]
fn an_invalid_service_url_is_ignored_but_the_heartbeat_counts() {
    let c = Cluster::new();
    let mut t = c.tracker();
    let now = Instant::now();
    for bad in ["ftp://127.0.0.20/x", "127.0.0.20:3000", "http://", "http://a b"] {
        let headers = [("X-FS-Status", "open"), ("X-FS-ServiceUrl", bad)];
        assert_eq!(ping(&mut t, "127.0.0.20", 5070, &headers, now), (200, Some("1".into())), "{bad}");
    }
    let long = format!("http://{}", "a".repeat(600));
    let headers = [("X-FS-Status", "open"), ("X-FS-ServiceUrl", long.as_str())];
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &headers, now), (200, Some("1".into())));
    assert_eq!(c.members(&c.sets.active_fs), vec!["127.0.0.20:5070"]);
    assert!(c.members(&c.sets.fs_service_url).is_empty());
    let good = [("X-FS-Status", "open"), ("X-FS-ServiceUrl", "http://127.0.0.20:3000")];
    assert_eq!(ping(&mut t, "127.0.0.20", 5070, &good, now), (200, Some("1".into())));
    assert_eq!(c.members(&c.sets.fs_service_url), vec!["http://127.0.0.20:3000"]);
}
