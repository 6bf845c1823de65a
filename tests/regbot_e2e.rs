//! The daemon as an operator runs it registers a carrier: a sipp registrar (401 then 200), a
//! carrier and a gateway in MariaDB, the drachtio double, and `sbcctl regbot list` / `status`.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::{services, sipp};

const WAIT: Duration = Duration::from_secs(15);

struct Registrar {
    child: Child,
    port: u16,
}

impl Registrar {
    fn start(ip: &str) -> Registrar {
        let port = sipp::free_port(ip);
        let child = services::spawn_sipp(
            Command::new("sipp")
                .arg("-sf")
                .arg(sipp::scenario("regbot_challenge.xml"))
                .args(["-i", ip, "-p", &port.to_string(), "-t", "u1", "-timeout", "60s", "-nostdin"])
                .args(["-mp", &sipp::media_port(ip).to_string()])
                .args(["-key", "user", "alice", "-key", "pass", "s3cret", "-key", "realm", "sip.carrier.test"])
                .args(["-key", "expires", "600"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let start = Instant::now();
        while start.elapsed() < WAIT && UdpSocket::bind((ip, port)).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Registrar { child, port }
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sbcctl(daemon: &Daemon, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sbcctl"))
        .arg("--socket")
        .arg(&daemon.socket_path)
        .args(args)
        .output()
        .expect("sbcctl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_daemon_registers_a_carrier_and_sbcctl_shows_it() {
    let db = TestDb::create();
    let registrar = Registrar::start("127.0.0.171");
    let carrier = uuid::Uuid::new_v4().to_string();
    let gateway = uuid::Uuid::new_v4().to_string();
    let mut c = db.conn();
    c.exec_drop(
        "INSERT INTO voip_carriers (voip_carrier_sid, name, requires_register, register_username, \
         register_password, register_sip_realm, trunk_type, is_active) VALUES (?, 'e2e carrier', 1, 'alice', 's3cret', \
         'sip.carrier.test', 'static_ip', 1)",
        (&carrier,),
    )
    .unwrap();
    c.exec_drop(
        "INSERT INTO sip_gateways (sip_gateway_sid, ipv4, port, inbound, outbound, voip_carrier_sid, protocol) \
         VALUES (?, '127.0.0.171', ?, 1, 1, ?, 'udp')",
        (&gateway, registrar.port, &carrier),
    )
    .unwrap();
    let double = Double::start(DoubleConfig::default()).unwrap();
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("JAMBONES_CLUSTER_ID".into(), format!("e2e-{}", &carrier[..8]));
    env.insert("SBC_REGBOT_CLAIM_JITTER_MS".into(), "0".into());
    let mut daemon = Daemon::start(env, &[]);

    let start = Instant::now();
    let mut status: Option<String> = None;
    while start.elapsed() < WAIT {
        status = c
            .exec_first("SELECT register_status FROM voip_carriers WHERE voip_carrier_sid = ?", (&carrier,))
            .unwrap()
            .flatten();
        if status.as_deref().is_some_and(|s| s.contains("\"ok\"")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status: serde_json::Value =
        serde_json::from_str(status.as_deref().unwrap_or("null")).expect("register_status JSON");
    assert_eq!(status["status"], "ok", "{status}\nlog:\n{}", daemon.log());
    assert_eq!(status["reason"], "200 OK");
    assert_eq!(status["callId"], gateway.as_str());

    let (code, list) = sbcctl(&daemon, &["regbot", "list"]);
    assert_eq!(code, 0, "{list}");
    assert!(list.contains("Regbot role: leader"), "{list}");
    let row = list.lines().find(|l| l.contains(&gateway)).unwrap_or_else(|| panic!("{list}"));
    assert!(row.starts_with("registered"), "{row}");
    assert!(row.contains("200 OK"), "{row}");
    let (code, status) = sbcctl(&daemon, &["--json", "status"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(v["regbot"]["role"], "leader", "{v}");
    assert_eq!(v["regbot"]["registered"], 1, "{v}");
    assert_eq!(daemon.stop(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
}
