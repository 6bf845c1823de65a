//! Feature-server and RTP-server heartbeats end to end: sipp on several 127.0.0.x addresses →
//! drachtio double → sbc-sidecar → real Redis; drain and status through the real sbcctl.

use std::time::{Duration, Instant};

use redis::Commands;
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::sipp;

const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    _db: TestDb,
    double: Double,
    daemon: Daemon,
    cluster: String,
    redis: redis::Connection,
}

impl Rig {
    fn start(extra: &[(&str, &str)]) -> Rig {
        let db = TestDb::create();
        let double = Double::start(DoubleConfig::default()).expect("double");
        let cluster = format!("hb-{:08x}", rand::random::<u32>());
        let mut env = base_env(double.admin_addr().port(), &db.name);
        env.insert("JAMBONES_CLUSTER_ID".into(), cluster.clone());
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let daemon = Daemon::start(env, &[]);
        assert!(double.wait_for_route("options", WAIT), "log:\n{}", daemon.log());
        let redis = sbc_test_tools::services::redis();
        Rig { _db: db, double, daemon, cluster, redis }
    }

    /// One heartbeat from `ip:port`; returns the sipp run, checked for `X-Members: <members>`.
    fn ping(&self, ip: &str, port: u16, kind: &str, status: &str, members: u32) -> sipp::SippRun {
        let url = format!("http://{ip}:3000");
        let keys = [("kind", kind), ("status", status), ("service_url", url.as_str())];
        let mut sipp = sipp::Sipp::new("options_heartbeat.xml", &self.double.sip_addr().to_string(), ip, port);
        sipp.keys = &keys;
        let run = sipp.run();
        if run.status == Some(0) {
            let seen = run.messages.lines().find_map(|l| l.strip_prefix("X-Members: ")).map(str::trim);
            assert_eq!(seen, Some(members.to_string().as_str()), "X-Members of the 200:\n{}", run.messages);
        }
        run
    }

    /// One heartbeat from `ip:port` that must be answered 403.
    fn refused_ping(&self, ip: &str, port: u16, kind: &str, status: &str) -> sipp::SippRun {
        let keys = [("kind", kind), ("status", status), ("service_url", "http://203.0.113.66:3000")];
        let mut sipp =
            sipp::Sipp::new("options_heartbeat_forbidden.xml", &self.double.sip_addr().to_string(), ip, port);
        sipp.keys = &keys;
        sipp.run()
    }

    fn set(&mut self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self.redis.smembers(format!("{}:{name}", self.cluster)).unwrap();
        v.sort();
        v
    }

    fn sbcctl(&self, args: &[&str]) -> (i32, String, String) {
        self.daemon.sbcctl(args)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for set in ["active-fs", "active-rtp", "fs-service-url", "drained-fs"] {
            let _: Result<(), _> = self.redis.del(format!("{}:{set}", self.cluster));
        }
    }
}

fn assert_ok(run: &sipp::SippRun, rig: &Rig, what: &str) {
    assert_eq!(
        run.status,
        Some(0),
        "{what}: sipp {}\n{}\nmessages:\n{}\nlog:\n{}",
        run.stdout,
        run.stderr,
        run.messages,
        rig.daemon.log()
    );
}

#[test]
fn feature_and_rtp_servers_are_counted_in_their_sets() {
    let mut rig = Rig::start(&[]);
    let (p1, p2, p3) = (sipp::free_port("127.0.0.41"), sipp::free_port("127.0.0.42"), sipp::free_port("127.0.0.43"));
    assert_ok(&rig.ping("127.0.0.41", p1, "FS", "open", 1), &rig, "first FS");
    assert_ok(&rig.ping("127.0.0.42", p2, "FS", "open", 2), &rig, "second FS");
    assert_ok(&rig.ping("127.0.0.43", p3, "RTP", "open", 1), &rig, "RTP");
    assert_eq!(rig.set("active-fs"), vec![format!("127.0.0.41:{p1}"), format!("127.0.0.42:{p2}")]);
    assert_eq!(rig.set("active-rtp"), vec!["127.0.0.43".to_string()]);
    assert!(rig.set("fs-service-url").contains(&"http://127.0.0.41:3000".to_string()));
    // a closed check-in takes the server out
    assert_ok(&rig.ping("127.0.0.42", p2, "FS", "closed", 1), &rig, "closed FS");
    assert_eq!(rig.set("active-fs"), vec![format!("127.0.0.41:{p1}")]);
    let (code, out, _) = rig.sbcctl(&["fs", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("127.0.0.41:{p1} (active)")), "{out}");
}

#[test]
fn drained_feature_server_is_removed_on_its_next_check_in_and_back_after_undrain() {
    let mut rig = Rig::start(&[]);
    let port = sipp::free_port("127.0.0.44");
    let member = format!("127.0.0.44:{port}");
    assert_ok(&rig.ping("127.0.0.44", port, "FS", "open", 1), &rig, "check-in");
    for drain_arg in ["127.0.0.44".to_string(), member.clone()] {
        let (code, out, err) = rig.sbcctl(&["fs", "drain", &drain_arg]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&format!("✓ Drained {drain_arg}")), "{out}");
        let (_, list, _) = rig.sbcctl(&["fs", "list"]);
        assert!(list.contains(&format!("🔴 {member} (drained)")), "fs list shows it drained: {list}");
        // an open check-in from a drained server counts as closed
        assert_ok(&rig.ping("127.0.0.44", port, "FS", "open", 0), &rig, "drained check-in");
        assert!(rig.set("active-fs").is_empty(), "removed from active-fs");
        assert!(rig.daemon.log().contains("drained feature server attempted to check in - rejecting"));
        let (code, out, _) = rig.sbcctl(&["fs", "undrain", &drain_arg]);
        assert_eq!(code, 0, "{out}");
        assert_ok(&rig.ping("127.0.0.44", port, "FS", "open", 1), &rig, "after undrain");
        assert_eq!(rig.set("active-fs"), vec![member.clone()]);
    }
}

#[test]
fn silent_servers_expire() {
    let mut rig = Rig::start(&[("CHECK_EXPIRES_INTERVAL", "200"), ("EXPIRES_INTERVAL", "1000")]);
    let port = sipp::free_port("127.0.0.45");
    assert_ok(&rig.ping("127.0.0.45", port, "FS", "open", 1), &rig, "check-in");
    assert_ok(&rig.ping("127.0.0.46", sipp::free_port("127.0.0.46"), "RTP", "open", 1), &rig, "rtp");
    let start = Instant::now();
    while start.elapsed() < WAIT && !(rig.set("active-fs").is_empty() && rig.set("active-rtp").is_empty()) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rig.set("active-fs").is_empty() && rig.set("active-rtp").is_empty(), "expired; log:\n{}", rig.daemon.log());
    assert!(start.elapsed() >= Duration::from_millis(500), "not before the expiry interval");
    assert!(rig.daemon.log().contains("expired member"), "{}", rig.daemon.log());
}

#[test]
fn sbcctl_status_reports_the_drachtio_connection() {
    let rig = Rig::start(&[]);
    let (code, out, err) = rig.sbcctl(&["--json", "status"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("status JSON");
    assert_eq!(v["success"], true);
    assert_eq!(v["drachtio"]["connected"], true, "{v}");
    assert_eq!(v["drachtio"]["hostports"], rig.double.hostports(), "{v}");
}

#[test]
fn sbcctl_bans_reaches_the_daemons_ban_table() {
    let rig = Rig::start(&[("SBC_AUTH_BAN_FAILURES", "4"), ("SBC_AUTH_BAN_TIME_S", "90")]);
    assert!(
        rig.daemon.log().contains("brute-force defence: 4 failed authentications within 60 s ban a source for 90 s"),
        "{}",
        rig.daemon.log()
    );
    assert_eq!(rig.sbcctl(&["bans"]), (0, "No sources are banned\n".to_string(), String::new()));
    assert_eq!(
        rig.sbcctl(&["bans", "clear", "127.0.0.9"]),
        (1, String::new(), "Error: No ban on 127.0.0.9\n".to_string())
    );
}

#[test]
fn heartbeats_from_outside_sbc_heartbeat_cidrs_get_403_and_change_nothing() {
    // 127.0.0.48 is inside the list, 127.0.0.47 (like any other loopback address) is not.
    let mut rig = Rig::start(&[("SBC_HEARTBEAT_CIDRS", "100.64.0.0/10,127.0.0.48/32")]);
    let _: () = rig.redis.sadd(format!("{}:active-fs", rig.cluster), "127.0.10.9:5060").unwrap();
    let _: () = rig.redis.sadd(format!("{}:active-rtp", rig.cluster), "127.0.10.10").unwrap();
    let outside = sipp::free_port("127.0.0.47");
    assert_ok(&rig.refused_ping("127.0.0.47", outside, "FS", "open"), &rig, "FS open from outside");
    assert_ok(&rig.refused_ping("127.0.0.47", outside, "RTP", "closed"), &rig, "RTP closed from outside");
    assert_eq!(rig.set("active-fs"), vec!["127.0.10.9:5060".to_string()]);
    assert_eq!(rig.set("active-rtp"), vec!["127.0.10.10".to_string()]);
    assert!(rig.set("fs-service-url").is_empty());
    let log = rig.daemon.log();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("heartbeat refused with 403")).collect();
    assert_eq!(refusals.len(), 1, "one warning per 10 s, not one per request:\n{log}");
    assert!(refusals[0].contains("source=127.0.0.47"), "{}", refusals[0]);

    // a plain OPTIONS from the same address is answered as before
    let plain = sipp::Sipp::new("options_plain.xml", &rig.double.sip_addr().to_string(), "127.0.0.47", outside).run();
    assert_ok(&plain, &rig, "plain OPTIONS from outside");

    // and a heartbeat from inside the list still works
    let inside = sipp::free_port("127.0.0.48");
    assert_ok(&rig.ping("127.0.0.48", inside, "FS", "open", 2), &rig, "FS open from inside");
    let mut expected = vec!["127.0.10.9:5060".to_string(), format!("127.0.0.48:{inside}")];
    expected.sort();
    assert_eq!(rig.set("active-fs"), expected);
    assert_eq!(rig.set("fs-service-url"), vec!["http://127.0.0.48:3000".to_string()]);
}

/// One heartbeat from `ip:port` announcing `url`, which must be answered with `expect`
/// (200 or 503).
fn ping_with_url(rig: &Rig, ip: &str, port: u16, kind: &str, status: &str, url: &str, expect: u16) -> sipp::SippRun {
    let keys = [("kind", kind), ("status", status), ("service_url", url)];
    let scenario = if expect == 503 { "options_heartbeat_unavailable.xml" } else { "options_heartbeat.xml" };
    let mut sipp = sipp::Sipp::new(scenario, &rig.double.sip_addr().to_string(), ip, port);
    sipp.keys = &keys;
    sipp.run()
}

#[test]
fn a_service_url_naming_another_host_is_not_stored() {
    let mut rig = Rig::start(&[]);
    let port = sipp::free_port("127.0.0.45");
    // steering REST traffic to someone else's address, or to a name
    for url in ["http://127.0.0.99:3000", "http://fs.example.internal:3000"] {
        assert_ok(&ping_with_url(&rig, "127.0.0.45", port, "FS", "open", url, 200), &rig, url);
        assert_eq!(rig.set("active-fs"), vec![format!("127.0.0.45:{port}")], "the heartbeat itself counts");
        assert!(!rig.set("fs-service-url").contains(&url.to_string()), "{url} stored");
    }
    assert!(rig.daemon.wait_for_log("its host is not the heartbeat's source address", WAIT), "{}", rig.daemon.log());
    // its own URL is stored
    assert_ok(&ping_with_url(&rig, "127.0.0.45", port, "FS", "open", "http://127.0.0.45:3000", 200), &rig, "own");
    assert_eq!(rig.set("fs-service-url"), vec!["http://127.0.0.45:3000".to_string()]);
}

#[test]
fn closed_removes_only_the_url_its_own_server_registered() {
    let mut rig = Rig::start(&[]);
    let url = "http://127.0.0.46:3000";
    let (owner, neighbour) = (sipp::free_port("127.0.0.46"), sipp::free_port("127.0.0.46"));
    assert_ok(&ping_with_url(&rig, "127.0.0.46", owner, "FS", "open", url, 200), &rig, "owner opens");
    assert_eq!(rig.set("fs-service-url"), vec![url.to_string()]);
    // another server (same host, another port; and another host) says `closed` with that URL
    assert_ok(&ping_with_url(&rig, "127.0.0.46", neighbour, "FS", "closed", url, 200), &rig, "neighbour");
    let other = sipp::free_port("127.0.0.47");
    assert_ok(&ping_with_url(&rig, "127.0.0.47", other, "FS", "closed", url, 200), &rig, "other host");
    assert_eq!(rig.set("fs-service-url"), vec![url.to_string()], "someone else's closed took the URL out");
    // the server that registered it takes it out
    assert_ok(&ping_with_url(&rig, "127.0.0.46", owner, "FS", "closed", url, 200), &rig, "owner closes");
    assert!(rig.set("fs-service-url").is_empty());
    assert!(rig.set("active-fs").is_empty());
}

#[test]
fn heartbeats_beyond_the_bound_get_503_and_one_warning() {
    let mut rig = Rig::start(&[("SBC_HEARTBEAT_MAX_SERVERS", "2")]);
    let ips = ["127.0.0.48", "127.0.0.49", "127.0.0.50", "127.0.0.51"];
    for (i, ip) in ips[..2].iter().enumerate() {
        let port = sipp::free_port(ip);
        assert_ok(&rig.ping(ip, port, "RTP", "open", i as u32 + 1), &rig, ip);
    }
    for ip in &ips[2..] {
        let port = sipp::free_port(ip);
        assert_ok(&ping_with_url(&rig, ip, port, "RTP", "open", &format!("http://{ip}:3000"), 503), &rig, ip);
    }
    assert_eq!(rig.set("active-rtp"), vec![ips[0].to_string(), ips[1].to_string()]);
    // a known member still checks in
    let port = sipp::free_port(ips[0]);
    assert_ok(&rig.ping(ips[0], port, "RTP", "open", 2), &rig, "known member");
    let log = rig.daemon.log();
    assert_eq!(log.matches("heartbeat refused with 503").count(), 1, "{log}");
}
