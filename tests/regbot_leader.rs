//! Who registers: the leader lock in Redis (claim, extend, release), batches of new regbots, the
//! standby taking over, losing and regaining the role, a leader whose scheduler is gone. The rig is
//! tests/support/regbot_rig.rs.

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use sbc_sidecar::regbot::leader::{Extension, LeaderElection};
use sbc_sidecar::regbot::RegbotRole;
use sbc_test_tools::carrier::Peer;
use sbc_test_tools::db::TestDb;
use sbc_test_tools::wait_until;

#[path = "support/regbot_rig.rs"]
mod regbot_rig;
use regbot_rig::*;

#[test]
fn new_regbots_start_in_batches() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.166", &[("status", "200"), ("reason", "OK"), ("expires", "60")]);
    for user in ["u1", "u2", "u3"] {
        let carrier = add_carrier(&db, CarrierRow { username: user, ..CarrierRow::default() });
        add_gateway(&db, &carrier, "127.0.0.166", Some(registrar.port), "udp", false);
    }
    let mut s = settings(&cluster());
    s.batch_size = 1;
    s.batch_sleep = Duration::from_millis(400);
    let sidecar = Instance::start(&double, &db, s);
    sidecar.wait_for("three registered", |s| s.registered == 3);
    let regs = registrar.requests("REGISTER");
    assert_eq!(regs.len(), 3, "one REGISTER per gateway (distinct credentials on one host)");
    let gaps: Vec<f64> = regs.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps.iter().all(|g| (0.3..=1.0).contains(g)), "one regbot per 400 ms batch: {gaps:?}");
}

#[test]
fn claim_extend_and_release_are_compare_and_set() {
    let cluster = format!("test-{}", uuid::Uuid::new_v4().simple());
    let a = LeaderElection::new(redis(), &cluster, "token-a".into(), Duration::from_secs(30));
    let b = LeaderElection::new(redis(), &cluster, "token-b".into(), Duration::from_secs(30));
    assert_eq!(a.key(), format!("{cluster}:regbot-token"));
    assert!(a.claim().unwrap());
    assert!(!b.claim().unwrap(), "NX: only one holder");
    let mut conn = redis().get().unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(a.key()).query(&mut *conn).unwrap();
    assert!((1..=30).contains(&ttl), "claimed with a TTL in one step: {ttl}");
    assert_eq!(a.extend().unwrap(), Extension::Extended);
    assert_eq!(b.extend().unwrap(), Extension::TakenByOther, "b cannot extend a's claim");
    assert!(!b.release().unwrap(), "nor release it");
    let value: String = redis::cmd("GET").arg(a.key()).query(&mut *conn).unwrap();
    assert_eq!(value, "token-a");
    assert!(a.release().unwrap());
    assert_eq!(a.extend().unwrap(), Extension::Lapsed);
    assert!(b.claim().unwrap());
    assert!(b.release().unwrap());
}

#[test]
fn the_standby_registers_everything_when_the_leader_stops() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let reply = [("status", "200"), ("reason", "OK"), ("expires", "60")];
    let r1 = Peer::start("regbot_reply.xml", "127.0.0.159", &reply);
    let r2 = Peer::start("regbot_reply.xml", "127.0.0.160", &reply);
    let c1 = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &c1, "127.0.0.159", Some(r1.port), "udp", false);
    let c2 = add_carrier(&db, CarrierRow { username: "bob", ..CarrierRow::default() });
    add_gateway(&db, &c2, "127.0.0.160", Some(r2.port), "udp", false);
    let cluster = cluster();

    let mut leader = Instance::start(&double, &db, settings(&cluster));
    leader.wait_for("first instance leads and registers both", |s| s.role == RegbotRole::Leader && s.registered == 2);
    let standby = Instance::start(&double, &db, settings(&cluster));
    thread::sleep(Duration::from_millis(900));
    let snap = standby.snapshot();
    assert_eq!((snap.role, snap.total), (RegbotRole::Standby, 0), "one leader per cluster");
    assert_eq!(r1.requests("REGISTER").len() + r2.requests("REGISTER").len(), 2);

    leader.stop();
    standby.wait_for("standby takes over and registers both", |s| s.role == RegbotRole::Leader && s.registered == 2);
    for r in [&r1, &r2] {
        let regs = r.wait_for_requests("REGISTER", 2, WAIT);
        assert!(regs.iter().all(|m| m.header("Expires").as_deref() == Some("3600")), "no de-registration on failover");
        assert_eq!(regs[0].header("Call-ID"), regs[1].header("Call-ID"), "same Call-ID from both SBCs");
    }
}

#[test]
fn losing_and_regaining_the_role_stops_then_restarts_every_regbot() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(5));
    let registrar =
        Peer::start("regbot_reply.xml", "127.0.0.161", &[("status", "200"), ("reason", "OK"), ("expires", "60")]);
    let carrier = add_carrier(&db, CarrierRow::default());
    add_gateway(&db, &carrier, "127.0.0.161", Some(registrar.port), "udp", false);
    let cluster = cluster();
    let key = format!("{cluster}:regbot-token");
    let sidecar = Instance::start(&double, &db, settings(&cluster));
    sidecar.wait_for("registered", |s| s.registered == 1);

    // another SBC's token appears: stand down, no de-registration
    let _: () = redis_query(redis::cmd("SET").arg(&key).arg("someone-else").arg("EX").arg(30));
    sidecar.wait_for("stood down", |s| s.role == RegbotRole::Standby && s.total == 0);
    let token: String = redis_query(redis::cmd("GET").arg(&key));
    assert_eq!(token, "someone-else", "the other SBC's claim is not touched");
    assert_eq!(registrar.requests("REGISTER").len(), 1);

    // the other SBC goes away: the role comes back and every regbot starts again
    let _: () = redis_query(redis::cmd("DEL").arg(&key));
    sidecar.wait_for("leader again with the regbot registered", |s| s.role == RegbotRole::Leader && s.registered == 1);
    let regs = registrar.wait_for_requests("REGISTER", 2, WAIT);
    assert!(regs.iter().all(|r| r.header("Expires").as_deref() == Some("3600")));
}

#[test]
fn a_leader_whose_scheduler_is_gone_gives_up_the_role_at_once() {
    use sbc_sidecar::drachtio::{ConnectionEvent, ConnectionInfo};
    use sbc_sidecar::regbot::leader::{new_token, Coordinator, CoordinatorLinks, LeaderElection};

    let db = TestDb::create();
    let cluster = cluster();
    let mut s = settings(&cluster);
    // a long TTL: the key can only disappear because the leader deleted it
    s.token_ttl = Duration::from_secs(60);
    let election = LeaderElection::new(redis(), &cluster, new_token(), s.token_ttl);
    let key = election.key().to_string();
    let (events_tx, events_rx) = unbounded();
    let (commands_tx, _commands_rx) = unbounded();
    let (_shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let (scheduler_alive, liveness) = bounded::<()>(0);
    let (_prepare_tx, prepare_stop) = bounded(1);
    let links = CoordinatorLinks {
        events: events_rx,
        scheduler: commands_tx,
        scheduler_alive: liveness,
        prepare_stop,
        shutdown: shutdown_rx,
    };
    let role = Coordinator::new(s, election, mysql_pool(&db.name), links);
    let leader = thread::spawn(move || role.run());
    let info = ConnectionInfo {
        hostports: "udp/127.0.0.1:5060".into(),
        version: "v0.9.10".into(),
        local_hostports: "udp/127.0.0.1:5060".into(),
    };
    events_tx.send(ConnectionEvent::Connected(info)).unwrap();
    let holder = || -> Option<String> { redis_query(redis::cmd("GET").arg(&key)) };
    assert!(wait_until(WAIT, || holder().is_some()), "the leader claimed the role");

    let gone = Instant::now();
    drop(scheduler_alive);
    assert!(wait_until(WAIT, || holder().is_none()), "the role key was deleted");
    assert!(gone.elapsed() < Duration::from_secs(2), "at once, not after the TTL: {:?}", gone.elapsed());
    assert!(wait_until(WAIT, || leader.is_finished()), "the leader thread ended");
    drop(events_tx);
}
