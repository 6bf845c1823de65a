//! The CLI socket server (spec 9.1) in-process, against the real Redis at 127.0.0.1:6379.
//! Every test has its own socket path and cluster id and removes its keys.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use sbc_sidecar::ctl::{CtlError, CtlServer, CtlSettings};
use sbc_sidecar::drachtio::{ConnectionEvent, ConnectionInfo};
use sbc_sidecar::regbot::{RegbotInfo, RegbotRole, RegbotSnapshot, RegbotState, StatusRequest};
use sbc_sidecar::store::redis::RedisPool;

use sbc_test_tools::ctl_server::{cli_shared, fake_regbot, redis_at, temp_socket_path, Server};

/// What these tests add to the shared test server.
trait ServerExt {
    fn start() -> Server;
    fn start_with(redis: RedisPool) -> Server;
    fn start_with_regbot(queries: Sender<StatusRequest>) -> Server;
    fn client(&self) -> Client;
    fn ask(&self, line: &str) -> String;
    fn redis_cmd(&self, args: &[&str]);
}

impl ServerExt for Server {
    fn start() -> Server {
        Server::start_with(redis_at(6379, Duration::from_secs(2)))
    }

    fn start_with(redis: RedisPool) -> Server {
        Server::launch(redis, None)
    }

    /// With `status` and `regbot-list` linked to a regbot role that takes requests on `queries`.
    fn start_with_regbot(queries: Sender<StatusRequest>) -> Server {
        Server::launch(redis_at(6379, Duration::from_secs(2)), Some(queries))
    }

    fn client(&self) -> Client {
        Client::connect(&self.path)
    }

    /// One command on a fresh connection.
    fn ask(&self, line: &str) -> String {
        self.client().ask(line)
    }

    fn redis_cmd(&self, args: &[&str]) {
        let mut conn = self.redis.get().unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _: redis::Value = cmd.query(&mut *conn).unwrap();
    }
}

struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    fn connect(path: &PathBuf) -> Client {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Client { reader: BufReader::new(stream) }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn reply(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "reply line {line:?}");
        line.trim_end().to_string()
    }

    fn ask(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\n").as_bytes());
        self.reply()
    }
}

#[test]
fn socket_is_private_and_removed_after_shutdown() {
    let mut server = Server::start();
    let meta = std::fs::symlink_metadata(&server.path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // an idle client does not hold the shutdown up
    let _idle = server.client();
    let took = server.shutdown();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    assert!(!server.path.exists());
}

#[test]
fn stale_socket_file_is_replaced() {
    let path = temp_socket_path();
    drop(UnixListener::bind(&path).unwrap()); // leaves the file behind, nobody listening
    assert!(path.exists());
    let (_conn_tx, conn_rx) = unbounded();
    let server = CtlServer::bind(
        &path,
        CtlSettings { cluster_id: "test-stale".into(), group: None },
        &cli_shared(redis_at(6379, Duration::from_secs(2))),
        conn_rx,
    )
    .unwrap();
    assert_eq!(server.path(), path.as_path());
    let (stop_tx, stop_rx) = unbounded();
    let thread = std::thread::spawn(move || server.run(stop_rx));
    assert_eq!(Client::connect(&path).ask(r#"{"action":"list"}"#), r#"{"success":true,"config":{}}"#);
    drop(stop_tx);
    thread.join().unwrap().unwrap();
    assert!(!path.exists());
}

#[test]
fn a_path_that_is_not_a_socket_is_never_deleted() {
    let path = temp_socket_path();
    std::fs::write(&path, b"precious").unwrap();
    let (_conn_tx, conn_rx) = unbounded();
    let result = CtlServer::bind(
        &path,
        CtlSettings { cluster_id: "test-notsock".into(), group: None },
        &cli_shared(redis_at(6379, Duration::from_secs(2))),
        conn_rx,
    );
    let err = result.err().expect("bind must fail");
    assert!(matches!(err, CtlError::NotASocket(_)));
    assert_eq!(
        err.to_string(),
        format!("CLI socket {}: the path exists and is not a socket; refusing to delete it", path.display())
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_socket_in_use_by_another_process_is_not_taken_over() {
    let path = temp_socket_path();
    let live = UnixListener::bind(&path).unwrap();
    let (_conn_tx, conn_rx) = unbounded();
    let result = CtlServer::bind(
        &path,
        CtlSettings { cluster_id: "test-inuse".into(), group: None },
        &cli_shared(redis_at(6379, Duration::from_secs(2))),
        conn_rx,
    );
    assert!(matches!(result.err(), Some(CtlError::InUse(_))));
    assert!(path.exists());
    drop(live);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn runtime_config_actions_reply_as_the_spec_says() {
    let server = Server::start();
    let mut c = server.client();
    assert_eq!(c.ask(r#"{"action":"list"}"#), r#"{"success":true,"config":{}}"#);
    assert_eq!(
        c.ask(r#"{"action":"set","key":"testKey","value":"testValue"}"#),
        r#"{"success":true,"key":"testKey","value":"testValue"}"#
    );
    assert_eq!(c.ask(r#"{"action":"get","key":"testKey"}"#), r#"{"success":true,"key":"testKey","value":"testValue"}"#);
    assert_eq!(c.ask(r#"{"action":"get","key":"unset"}"#), r#"{"success":true,"key":"unset"}"#);
    assert_eq!(
        c.ask(r#"{"action":"set","key":"n","value":{"a":[1,2]}}"#),
        r#"{"success":true,"key":"n","value":{"a":[1,2]}}"#
    );

    // add/remove read a string value as a comma list
    c.ask(r#"{"action":"set","key":"csv","value":"a, b,,"}"#);
    assert_eq!(
        c.ask(r#"{"action":"add","key":"csv","item":"a"}"#),
        r#"{"success":true,"key":"csv","item":"a","array":["a","b"],"added":false}"#
    );
    // not added: the stored value is still the string
    assert_eq!(c.ask(r#"{"action":"get","key":"csv"}"#), r#"{"success":true,"key":"csv","value":"a, b,,"}"#);
    assert_eq!(
        c.ask(r#"{"action":"add","key":"csv","item":"c"}"#),
        r#"{"success":true,"key":"csv","item":"c","array":["a","b","c"],"added":true}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"remove","key":"csv","item":"b"}"#),
        r#"{"success":true,"key":"csv","item":"b","array":["a","c"],"removed":true}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"remove","key":"csv","item":"zz"}"#),
        r#"{"success":true,"key":"csv","item":"zz","array":["a","c"],"removed":false}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"add","key":"fresh","item":"x"}"#),
        r#"{"success":true,"key":"fresh","item":"x","array":["x"],"added":true}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"list"}"#),
        r#"{"success":true,"config":{"testKey":"testValue","n":{"a":[1,2]},"csv":["a","c"],"fresh":["x"]}}"#
    );
    // the map lives in the server, not in the connection
    assert_eq!(server.ask(r#"{"action":"get","key":"fresh"}"#), r#"{"success":true,"key":"fresh","value":["x"]}"#);
}

#[test]
fn bad_lines_get_errors_and_the_connection_stays_usable() {
    let server = Server::start();
    let mut c = server.client();
    assert_eq!(c.ask(r#"{"action":"nope"}"#), r#"{"success":false,"error":"Unknown action"}"#);
    assert_eq!(c.ask(r#"{"key":"x"}"#), r#"{"success":false,"error":"Unknown action"}"#);
    assert_eq!(c.ask("this is not json"), r#"{"success":false,"error":"Invalid command"}"#);
    assert_eq!(c.ask(r#"{"action":"get""#), r#"{"success":false,"error":"Invalid command"}"#);
    assert_eq!(c.ask("[1,2]"), r#"{"success":false,"error":"Invalid command"}"#);
    assert_eq!(c.ask(r#"{"action":"get"}"#), r#"{"success":false,"error":"Invalid command"}"#);
    // blank lines are skipped, surrounding whitespace trimmed
    c.send_raw(b"\n  \r\n\t{\"action\":\"list\"}  \r\n");
    assert_eq!(c.reply(), r#"{"success":true,"config":{}}"#);
    assert_eq!(c.ask(r#"{"action":"list"}"#), r#"{"success":true,"config":{}}"#);
}

#[test]
fn an_over_long_line_is_rejected_and_discarded_up_to_its_newline() {
    let server = Server::start();
    let mut c = server.client();
    // 100 KiB in pieces, without a newline: rejected once it passes 64 KiB
    let piece = vec![b'x'; 10 * 1024];
    for _ in 0..10 {
        c.send_raw(&piece);
    }
    assert_eq!(c.reply(), r#"{"success":false,"error":"Invalid command"}"#);
    // the rest of that line is dropped; the line after it is served
    c.send_raw(b"{\"action\":\"set\",\"key\":\"k\",\"value\":\"tail\"}\n");
    assert_eq!(c.ask(r#"{"action":"get","key":"k"}"#), r#"{"success":true,"key":"k"}"#);
    assert_eq!(c.ask(r#"{"action":"set","key":"k","value":"v"}"#), r#"{"success":true,"key":"k","value":"v"}"#);
    // a long line sent in one write with its newline
    let mut long = vec![b' '; 70 * 1024];
    long.extend_from_slice(b"{\"action\":\"list\"}\n{\"action\":\"get\",\"key\":\"k\"}\n");
    c.send_raw(&long);
    assert_eq!(c.reply(), r#"{"success":false,"error":"Invalid command"}"#);
    assert_eq!(c.reply(), r#"{"success":true,"key":"k","value":"v"}"#);
}

#[test]
fn pipelined_and_split_commands_are_answered_in_order() {
    let server = Server::start();
    let mut c = server.client();
    c.send_raw(b"{\"action\":\"set\",\"key\":\"a\",\"value\":1}\n{\"action\":\"get\",\"key\":\"a\"}\n{\"act");
    assert_eq!(c.reply(), r#"{"success":true,"key":"a","value":1}"#);
    assert_eq!(c.reply(), r#"{"success":true,"key":"a","value":1}"#);
    std::thread::sleep(Duration::from_millis(50));
    c.send_raw(b"ion\":\"list\"}\n");
    assert_eq!(c.reply(), r#"{"success":true,"config":{"a":1}}"#);
}

#[test]
fn a_client_that_closes_its_side_still_gets_its_replies() {
    let server = Server::start();
    let mut stream = UnixStream::connect(&server.path).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"{\"action\":\"list\"}\n{\"action\":\"nope\"}\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).unwrap();
    assert_eq!(all, "{\"success\":true,\"config\":{}}\n{\"success\":false,\"error\":\"Unknown action\"}\n");
}

#[test]
fn silent_clients_do_not_block_others() {
    let server = Server::start();
    let _silent = server.client();
    let mut partial = server.client();
    partial.send_raw(b"{\"action\":\"li");
    let started = Instant::now();
    assert_eq!(server.ask(r#"{"action":"list"}"#), r#"{"success":true,"config":{}}"#);
    assert!(started.elapsed() < Duration::from_secs(1));
    // the partial line is still completed later
    partial.send_raw(b"st\"}\n");
    assert_eq!(partial.reply(), r#"{"success":true,"config":{}}"#);
}

#[test]
fn concurrent_clients_are_all_served() {
    let server = Server::start();
    let path = server.path.clone();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&path);
                for i in 0..25 {
                    let set = format!(r#"{{"action":"set","key":"w{w}","value":{i}}}"#);
                    assert_eq!(c.ask(&set), format!(r#"{{"success":true,"key":"w{w}","value":{i}}}"#));
                    let get = format!(r#"{{"action":"get","key":"w{w}"}}"#);
                    assert_eq!(c.ask(&get), format!(r#"{{"success":true,"key":"w{w}","value":{i}}}"#));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let list = server.ask(r#"{"action":"list"}"#);
    for w in 0..8 {
        assert!(list.contains(&format!(r#""w{w}":24"#)), "{list}");
    }
}

#[test]
fn connections_beyond_the_limit_are_refused_politely() {
    let server = Server::start();
    let mut held: Vec<Client> = (0..32).map(|_| server.client()).collect();
    // make sure the server has accepted all of them
    assert_eq!(held[31].ask(r#"{"action":"list"}"#), r#"{"success":true,"config":{}}"#);
    let mut extra = server.client();
    assert_eq!(extra.reply(), r#"{"success":false,"error":"Too many connections"}"#);
    // closing one makes room again
    held.pop();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.ask(r#"{"action":"list"}"#), r#"{"success":true,"config":{}}"#);
}

#[test]
fn drain_by_ip_and_by_ip_port_is_reflected_in_fs_list_and_fs_available() {
    let server = Server::start();
    let mut c = server.client();
    assert_eq!(c.ask(r#"{"action":"fs-drained"}"#), r#"{"success":true,"drained":[]}"#);
    assert_eq!(c.ask(r#"{"action":"fs-list"}"#), r#"{"success":true,"servers":[],"drained":[]}"#);
    assert_eq!(c.ask(r#"{"action":"fs-available"}"#), r#"{"success":true,"available":[]}"#);

    for m in ["127.0.10.5:5070", "127.0.10.6:5070", "127.0.10.7:5080", "127.0.10.7:5090", "[fd00::8]:5070"] {
        server.redis_cmd(&["SADD", &server.sets.active_fs, m]);
    }
    assert_eq!(
        c.ask(r#"{"action":"fs-drain","server":"127.0.10.5"}"#),
        r#"{"success":true,"action":"drain","server":"127.0.10.5","drained":["127.0.10.5"]}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"fs-drain","server":"127.0.10.7:5080"}"#),
        r#"{"success":true,"action":"drain","server":"127.0.10.7:5080","drained":["127.0.10.5","127.0.10.7:5080"]}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"fs-drain","server":"FD00::8"}"#),
        r#"{"success":true,"action":"drain","server":"fd00::8","drained":["127.0.10.5","127.0.10.7:5080","fd00::8"]}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"fs-drained"}"#),
        r#"{"success":true,"drained":["127.0.10.5","127.0.10.7:5080","fd00::8"]}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"fs-list"}"#),
        concat!(
            r#"{"success":true,"servers":["#,
            r#"{"server":"127.0.10.5:5070","status":"drained"},"#,
            r#"{"server":"127.0.10.6:5070","status":"active"},"#,
            r#"{"server":"127.0.10.7:5080","status":"drained"},"#,
            r#"{"server":"127.0.10.7:5090","status":"active"},"#,
            r#"{"server":"[fd00::8]:5070","status":"drained"}"#,
            r#"],"drained":["127.0.10.5","127.0.10.7:5080","fd00::8"]}"#
        )
    );
    assert_eq!(
        c.ask(r#"{"action":"fs-available"}"#),
        r#"{"success":true,"available":["127.0.10.6:5070","127.0.10.7:5090"]}"#
    );

    assert_eq!(
        c.ask(r#"{"action":"fs-undrain","server":"127.0.10.5"}"#),
        r#"{"success":true,"action":"undrain","server":"127.0.10.5","drained":["127.0.10.7:5080","fd00::8"]}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"fs-undrain","server":"[fd00::8]:5070"}"#),
        r#"{"success":true,"action":"undrain","server":"[fd00::8]:5070","drained":["127.0.10.7:5080","fd00::8"]}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"fs-available"}"#),
        r#"{"success":true,"available":["127.0.10.5:5070","127.0.10.6:5070","127.0.10.7:5090"]}"#
    );
}

#[test]
fn drain_validates_the_server() {
    let server = Server::start();
    let mut c = server.client();
    for (request, error) in [
        (r#"{"action":"fs-drain","server":"127.0.10.256"}"#, "Invalid IP address: 127.0.10.256"),
        (r#"{"action":"fs-drain","server":"fs1.example.com"}"#, "Invalid IP address: fs1.example.com"),
        (r#"{"action":"fs-drain","server":"127.0.10.1:99999"}"#, "Invalid IP address: 127.0.10.1:99999"),
        (r#"{"action":"fs-undrain","server":"::1::2"}"#, "Invalid IP address: ::1::2"),
        (r#"{"action":"fs-drain"}"#, "Invalid IP address: undefined"),
        (r#"{"action":"fs-drain","server":5}"#, "Invalid IP address: 5"),
    ] {
        assert_eq!(c.ask(request), format!(r#"{{"success":false,"error":"{error}"}}"#));
    }
    assert_eq!(c.ask(r#"{"action":"fs-drained"}"#), r#"{"success":true,"drained":[]}"#);
}

#[test]
fn redis_down_gives_the_spec_errors_and_config_and_status_still_work() {
    let server = Server::start_with(redis_at(1, Duration::from_millis(200)));
    let mut c = server.client();
    for request in [
        r#"{"action":"fs-drain","server":"127.0.10.5"}"#,
        r#"{"action":"fs-undrain","server":"127.0.10.5"}"#,
        r#"{"action":"fs-drained"}"#,
        r#"{"action":"fs-list"}"#,
        r#"{"action":"fs-available"}"#,
    ] {
        assert_eq!(c.ask(request), r#"{"success":false,"error":"Redis connection not available"}"#);
    }
    assert_eq!(c.ask(r#"{"action":"set","key":"k","value":"v"}"#), r#"{"success":true,"key":"k","value":"v"}"#);
    let status: serde_json::Value = serde_json::from_str(&c.ask(r#"{"action":"status"}"#)).unwrap();
    assert_eq!(status["success"], true);
    assert!(status["registered_users"].is_null());
    assert!(status["feature_servers"].is_null());
    assert!(status["rtp_servers"].is_null());
}

#[test]
fn status_reports_drachtio_counts_and_regbot() {
    let (regbot, snapshot) = fake_regbot(standby_snapshot());
    let server = Server::start_with_regbot(regbot);
    let mut c = server.client();
    let first = c.ask(r#"{"action":"status"}"#);
    assert!(
        first.starts_with(
            r#"{"success":true,"drachtio":{"connected":false,"version":null,"hostports":null,"local_hostports":null},"uptime_s":"#
        ),
        "{first}"
    );
    assert!(first.ends_with(r#","regbot":{"role":"standby","total":0,"registered":0,"failing":0}}"#), "{first}");

    server.redis_cmd(&["SADD", &server.sets.active_fs, "127.0.10.5:5070", "127.0.10.6:5070"]);
    server.redis_cmd(&["SADD", &server.sets.active_rtp, "127.0.10.9"]);
    let user = format!("user:test-{}@ctl.example.com", uuid::Uuid::new_v4().simple());
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    server.redis_cmd(&["ZADD", "active-user", &(now_ms + 3_600_000).to_string(), &user]);
    server
        .conn_events
        .send(ConnectionEvent::Connected(ConnectionInfo {
            hostports: "tcp/127.0.0.1:5060,udp/127.0.0.1:5060".into(),
            version: "v0.9.10".into(),
            local_hostports: "tcp/127.0.0.1:5060,udp/127.0.0.1:5060".into(),
        }))
        .unwrap();
    *snapshot.lock().unwrap() =
        RegbotSnapshot { role: RegbotRole::Leader, total: 3, registered: 2, failing: 1, regbots: Vec::new() };

    let status: serde_json::Value = serde_json::from_str(&c.ask(r#"{"action":"status"}"#)).unwrap();
    server.redis_cmd(&["ZREM", "active-user", &user]);
    let keys: Vec<&str> = status.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["success", "drachtio", "uptime_s", "registered_users", "feature_servers", "rtp_servers", "regbot"]
    );
    assert_eq!(
        status["drachtio"].to_string(),
        r#"{"connected":true,"version":"v0.9.10","hostports":"tcp/127.0.0.1:5060,udp/127.0.0.1:5060","local_hostports":"tcp/127.0.0.1:5060,udp/127.0.0.1:5060"}"#
    );
    assert!(status["uptime_s"].as_u64().is_some());
    // active-user is shared by every test and the registrar: ours is in there at least
    assert!(status["registered_users"].as_u64().unwrap() >= 1);
    assert_eq!(status["feature_servers"], 2);
    assert_eq!(status["rtp_servers"], 1);
    assert_eq!(status["regbot"].to_string(), r#"{"role":"leader","total":3,"registered":2,"failing":1}"#);

    server.conn_events.send(ConnectionEvent::Disconnected { reason: "gone".into() }).unwrap();
    let status: serde_json::Value = serde_json::from_str(&c.ask(r#"{"action":"status"}"#)).unwrap();
    assert_eq!(status["drachtio"]["connected"], false);
    assert!(status["drachtio"]["version"].is_null());
}

/// A stuck regbot role: its queue takes one request (the receiver is returned, to be held)
/// and nobody ever answers. Once that request waits in the queue, the queue is full, as a
/// real one is after enough unanswered requests.
fn silent_regbot() -> (Sender<StatusRequest>, Receiver<StatusRequest>) {
    bounded(1)
}

fn regbot_info(carrier: &str, gateway: &str, state: RegbotState) -> RegbotInfo {
    RegbotInfo {
        voip_carrier_sid: carrier.into(),
        sip_gateway_sid: gateway.into(),
        aor: format!("{gateway}@sip.{carrier}.example.com"),
        target: format!("sip.{carrier}.example.com:5060;transport=udp"),
        state,
        last_status: None,
        consecutive_failures: 0,
        next_request_in: None,
    }
}

fn standby_snapshot() -> RegbotSnapshot {
    RegbotSnapshot { role: RegbotRole::Standby, total: 0, registered: 0, failing: 0, regbots: Vec::new() }
}

/// Three regbots of two carriers, out of order.
fn leader_snapshot() -> RegbotSnapshot {
    RegbotSnapshot {
        role: RegbotRole::Leader,
        total: 3,
        registered: 1,
        failing: 1,
        regbots: vec![
            RegbotInfo {
                last_status: Some("403 Forbidden".into()),
                consecutive_failures: 2,
                next_request_in: Some(Duration::from_millis(29_400)),
                ..regbot_info("carrier-b", "gw-1", RegbotState::Failing)
            },
            RegbotInfo {
                last_status: Some("200 OK".into()),
                next_request_in: Some(Duration::from_secs(3540)),
                ..regbot_info("carrier-a", "gw-2", RegbotState::Registered)
            },
            regbot_info("carrier-a", "gw-1", RegbotState::Registering),
        ],
    }
}

#[test]
fn status_and_regbot_list_come_from_the_regbot_snapshot() {
    let server = Server::start_with_regbot(fake_regbot(leader_snapshot()).0);
    let mut c = server.client();
    assert_eq!(
        c.ask(r#"{"action":"regbot-list"}"#),
        concat!(
            r#"{"success":true,"role":"leader","regbots":["#,
            r#"{"carrier":"carrier-a","gateway":"gw-1","aor":"gw-1@sip.carrier-a.example.com","#,
            r#""target":"sip.carrier-a.example.com:5060;transport=udp","state":"registering","#,
            r#""last_status":null,"failures":0,"next_refresh_s":null},"#,
            r#"{"carrier":"carrier-a","gateway":"gw-2","aor":"gw-2@sip.carrier-a.example.com","#,
            r#""target":"sip.carrier-a.example.com:5060;transport=udp","state":"registered","#,
            r#""last_status":"200 OK","failures":0,"next_refresh_s":3540},"#,
            r#"{"carrier":"carrier-b","gateway":"gw-1","aor":"gw-1@sip.carrier-b.example.com","#,
            r#""target":"sip.carrier-b.example.com:5060;transport=udp","state":"failing","#,
            r#""last_status":"403 Forbidden","failures":2,"next_refresh_s":30}"#,
            r#"]}"#
        )
    );
    let status: serde_json::Value = serde_json::from_str(&c.ask(r#"{"action":"status"}"#)).unwrap();
    let keys: Vec<&str> = status.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["success", "drachtio", "uptime_s", "registered_users", "feature_servers", "rtp_servers", "regbot"]
    );
    assert_eq!(status["regbot"].to_string(), r#"{"role":"leader","total":3,"registered":1,"failing":1}"#);

    let standby = Server::start_with_regbot(fake_regbot(standby_snapshot()).0);
    assert_eq!(standby.ask(r#"{"action":"regbot-list"}"#), r#"{"success":true,"role":"standby","regbots":[]}"#);
}

#[test]
fn a_regbot_that_does_not_answer_in_time_is_reported_within_half_a_second() {
    let (queries, _held) = silent_regbot();
    let server = Server::start_with_regbot(queries);
    let mut c = server.client();

    let in_time = |took: Duration| took >= Duration::from_millis(450) && took < Duration::from_millis(1500);
    let started = Instant::now();
    assert_eq!(
        c.ask(r#"{"action":"regbot-list"}"#),
        r#"{"success":false,"error":"Failed to query regbot: no answer within 500 ms"}"#
    );
    assert!(in_time(started.elapsed()), "{:?}", started.elapsed());

    // status still answers, with standby and zeros and the reason; the unanswered
    // request fills the queue now, so this query gives up sending rather than blocking
    let started = Instant::now();
    let status: serde_json::Value = serde_json::from_str(&c.ask(r#"{"action":"status"}"#)).unwrap();
    assert!(in_time(started.elapsed()), "{:?}", started.elapsed());
    assert_eq!(status["success"], true);
    assert_eq!(status["regbot"].to_string(), r#"{"role":"standby","total":0,"registered":0,"failing":0}"#);
    assert_eq!(status["regbot_error"], "no answer within 500 ms");
    // and the socket serves other commands afterwards
    assert_eq!(server.ask(r#"{"action":"list"}"#), r#"{"success":true,"config":{}}"#);
}

#[test]
fn a_stopped_regbot_is_reported_at_once() {
    let (queries, requests) = silent_regbot();
    drop(requests);
    let server = Server::start_with_regbot(queries);
    let started = Instant::now();
    assert_eq!(
        server.ask(r#"{"action":"regbot-list"}"#),
        r#"{"success":false,"error":"Failed to query regbot: the regbot scheduler is not running"}"#
    );
    let status: serde_json::Value = serde_json::from_str(&server.ask(r#"{"action":"status"}"#)).unwrap();
    assert_eq!(status["regbot"].to_string(), r#"{"role":"standby","total":0,"registered":0,"failing":0}"#);
    assert_eq!(status["regbot_error"], "the regbot scheduler is not running");
    assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
}

#[test]
fn regbot_list_without_a_regbot_role() {
    let server = Server::start();
    assert_eq!(server.ask(r#"{"action":"regbot-list"}"#), r#"{"success":false,"error":"Regbot not running"}"#);
    // and status carries no regbot_error: there is nothing to ask
    let status: serde_json::Value = serde_json::from_str(&server.ask(r#"{"action":"status"}"#)).unwrap();
    assert!(status.get("regbot_error").is_none(), "{status}");
}

/// Three failures from `ip` through the shared table, as the registrar would record them.
fn ban(server: &Server, ip: &str) {
    let bans = &server.bans;
    let now = Instant::now();
    let started: Vec<_> = (0..3).filter_map(|_| bans.record_failure(ip.parse().unwrap(), now)).collect();
    assert_eq!(started.len(), 1, "the third failure starts the ban");
}

#[test]
fn bans_lists_the_bans_recorded_by_the_registrar_and_bans_clear_lifts_them() {
    let server = Server::start();
    let mut c = server.client();
    assert_eq!(c.ask(r#"{"action":"bans"}"#), r#"{"success":true,"bans":[]}"#);

    ban(&server, "127.0.20.1");
    // one more failure during the ban: counted, not extended
    let bans = &server.bans;
    assert_eq!(bans.record_failure("::ffff:127.0.20.1".parse().unwrap(), Instant::now()), None);
    std::thread::sleep(Duration::from_millis(20));
    ban(&server, "2001:db8::20");
    // a source still counting is not listed
    assert_eq!(bans.record_failure("127.0.20.3".parse().unwrap(), Instant::now()), None);

    let reply: serde_json::Value = serde_json::from_str(&c.ask(r#"{"action":"bans"}"#)).unwrap();
    assert_eq!(reply["success"], true);
    let list = reply["bans"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{reply}");
    // longest remaining first; remaining rounded up, so a fresh 300 s ban shows 300; an IPv6
    // source is its /64
    assert_eq!(list[0]["ip"], "2001:db8::/64");
    assert_eq!(list[0]["failures"], 3);
    assert_eq!(list[0]["remaining_s"], 300);
    assert_eq!(list[1]["ip"], "127.0.20.1");
    assert_eq!(list[1]["failures"], 4);
    let remaining = list[1]["remaining_s"].as_u64().unwrap();
    assert!((299..=300).contains(&remaining), "{remaining}");
    assert_eq!(
        list[1].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["ip", "failures", "remaining_s"],
        "field order"
    );

    // an IPv4-mapped address names the IPv4 source
    assert_eq!(c.ask(r#"{"action":"bans-clear","ip":"::ffff:127.0.20.1"}"#), r#"{"success":true}"#);
    assert_eq!(bans.banned("127.0.20.1".parse().unwrap(), Instant::now()), None);
    assert_eq!(
        c.ask(r#"{"action":"bans-clear","ip":"127.0.20.1"}"#),
        r#"{"success":false,"error":"No ban on 127.0.20.1"}"#
    );
    assert_eq!(
        c.ask(r#"{"action":"bans-clear","ip":"127.0.20.3"}"#),
        r#"{"success":false,"error":"No ban on 127.0.20.3"}"#,
        "counting is not a ban"
    );
    // any address of the /64, or the /64 as listed, lifts it
    assert_eq!(c.ask(r#"{"action":"bans-clear","ip":"2001:DB8::77"}"#), r#"{"success":true}"#);
    assert_eq!(c.ask(r#"{"action":"bans"}"#), r#"{"success":true,"bans":[]}"#);
    ban(&server, "2001:db8::21");
    assert_eq!(c.ask(r#"{"action":"bans-clear","ip":"2001:db8::/64"}"#), r#"{"success":true}"#);
}

#[test]
fn bans_clear_validates_the_address() {
    let server = Server::start();
    let mut c = server.client();
    for (request, error) in [
        (r#"{"action":"bans-clear","ip":"127.0.20.256"}"#, "Invalid IP address: 127.0.20.256"),
        (r#"{"action":"bans-clear","ip":"127.0.20.1:5060"}"#, "Invalid IP address: 127.0.20.1:5060"),
        (r#"{"action":"bans-clear","ip":"phone.example.com"}"#, "Invalid IP address: phone.example.com"),
        (r#"{"action":"bans-clear"}"#, "Invalid IP address: undefined"),
        (r#"{"action":"bans-clear","ip":7}"#, "Invalid IP address: 7"),
    ] {
        assert_eq!(c.ask(request), format!(r#"{{"success":false,"error":"{error}"}}"#));
    }
}
