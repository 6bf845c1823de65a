//! The real `sbcctl` binary (spec 9.2) against an in-process CLI server and the real Redis at
//! 127.0.0.1:6379. Every test has its own socket path and cluster id and removes its keys.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sbc_sidecar::drachtio::{ConnectionEvent, ConnectionInfo};
use sbc_sidecar::regbot::{RegbotInfo, RegbotRole, RegbotSnapshot, RegbotState};

const HELP: &str = "\
SBC Runtime CLI

Usage:
  sbcctl <command> [options]

Feature Server Commands:
  sbcctl fs drain <ip>      Drain server (remove from pool)
  sbcctl fs undrain <ip>    Undrain server (add back to pool)
  sbcctl fs drained         Show drained servers
  sbcctl fs active          Show available servers
  sbcctl fs list            Show all servers with status

Configuration Commands:
  sbcctl set <key> <value>  Set runtime config
  sbcctl get <key>          Get runtime config
  sbcctl list               Show all runtime config

Status Commands:
  sbcctl status             Show drachtio connection, counts and regbot role

Regbot Commands:
  sbcctl regbot list        Show outbound registrations and their state

Brute-force Defence Commands:
  sbcctl bans               Show sources banned after failed authentications
  sbcctl bans clear <ip>    Lift the ban on a source

Options:
  --socket PATH             CLI socket (default: $SBC_SOCKET_PATH, else
                            /run/sbc-sidecar/sbc-sidecar.sock if it exists,
                            else /tmp/sbc-sip-sidecar.sock)
  --json                    Print the server's JSON reply as it is
  --timeout SECONDS         Wait this long for the reply (default 5)

Examples:
  sbcctl fs drain 192.168.1.10
  sbcctl fs active
";

use sbc_test_tools::ctl_server::{fake_regbot, redis_at, temp_socket_path, Server};

/// What these tests add to the shared test server.
trait ServerExt {
    fn start() -> Server;
    fn start_with_regbot(snapshot: RegbotSnapshot) -> Server;
    fn sbcctl(&self, args: &[&str]) -> Run;
    fn sadd(&self, set: &str, members: &[&str]);
}

impl ServerExt for Server {
    fn start() -> Server {
        Server::launch(redis_at(6379, Duration::from_secs(2)), None)
    }

    /// With `status` and `regbot-list` answered by a fake regbot role that always reports
    /// `snapshot`.
    fn start_with_regbot(snapshot: RegbotSnapshot) -> Server {
        Server::launch(redis_at(6379, Duration::from_secs(2)), Some(fake_regbot(snapshot).0))
    }

    /// Runs `sbcctl --socket <this server> <args>`.
    fn sbcctl(&self, args: &[&str]) -> Run {
        let mut all = vec!["--socket", self.path.to_str().unwrap()];
        all.extend_from_slice(args);
        sbcctl(&all)
    }

    fn sadd(&self, set: &str, members: &[&str]) {
        let mut conn = self.redis.get().unwrap();
        let _: i64 = redis::cmd("SADD").arg(set).arg(members).query(&mut *conn).unwrap();
    }
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn finish(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sbcctl"));
    cmd.env_remove("SBC_SOCKET_PATH");
    cmd
}

fn sbcctl(args: &[&str]) -> Run {
    finish(command().args(args).output().unwrap())
}

fn assert_run(run: &Run, code: i32, stdout: &str, stderr: &str) {
    assert_eq!((run.code, run.stdout.as_str(), run.stderr.as_str()), (code, stdout, stderr), "{run:?}");
}

#[test]
fn without_arguments_it_prints_the_help() {
    assert_run(&sbcctl(&[]), 0, HELP, "");
    assert_run(&sbcctl(&["--help"]), 0, HELP, "");
}

#[test]
fn bad_usage_exits_2_with_the_spec_texts() {
    // none of these reach the socket, so no server is needed
    let nowhere = temp_socket_path();
    let socket = nowhere.to_str().unwrap();
    for (args, message) in [
        (vec!["fs"], "fs command requires an action"),
        (vec!["fs", "drain"], "drain requires server IP address"),
        (vec!["fs", "undrain"], "undrain requires server IP address"),
        (vec!["fs", "rm"], "Unknown fs command: rm. Use: drain, undrain, drained, active, list"),
        (vec!["set"], "set requires key and value"),
        (vec!["set", "k"], "set requires key and value"),
        (vec!["get"], "get requires key"),
        (vec!["frobnicate"], "Unknown command: frobnicate. Run without arguments for help."),
        (vec!["regbot"], "regbot command requires an action. Use: list"),
        (vec!["regbot", "show"], "Unknown regbot command: show. Use: list"),
        (vec!["--timeout", "soon", "list"], "--timeout needs a positive number of seconds, not soon"),
        (vec!["--timeout", "0", "list"], "--timeout needs a positive number of seconds, not 0"),
        (vec!["--bogus", "list"], "Unrecognized option: 'bogus'"),
    ] {
        let mut all = vec!["--socket", socket];
        all.extend(args);
        assert_run(&sbcctl(&all), 2, "", &format!("Error: {message}\n"));
    }
}

#[test]
fn an_invalid_ip_is_rejected_before_connecting() {
    let nowhere = temp_socket_path();
    let socket = nowhere.to_str().unwrap();
    assert_run(
        &sbcctl(&["--socket", socket, "fs", "drain", "127.0.10.300"]),
        1,
        "",
        "Error: Invalid IP address: 127.0.10.300\n",
    );
    assert_run(&sbcctl(&["--socket", socket, "fs", "undrain", "fs1"]), 1, "", "Error: Invalid IP address: fs1\n");
}

#[test]
fn connection_failure_names_the_os_error() {
    let nowhere = temp_socket_path();
    let socket = nowhere.to_str().unwrap();
    assert_run(
        &sbcctl(&["--socket", socket, "list"]),
        1,
        "",
        &format!("Error: Connection failed: No such file or directory ({socket})\n"),
    );
}

#[test]
fn a_server_that_never_answers_times_out() {
    let path = temp_socket_path();
    let listener = UnixListener::bind(&path).unwrap();
    // accepts and reads, never replies
    let _silent = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let run = sbcctl(&["--socket", path.to_str().unwrap(), "--timeout", "0.5", "list"]);
    let took = started.elapsed();
    assert_run(&run, 1, "", "Error: Command timed out\n");
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "{took:?}");
    let _ = std::fs::remove_file(&path);
}

/// A fake server that answers every connection with `reply`.
fn fake_server(reply: &'static [u8]) -> PathBuf {
    let path = temp_socket_path();
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = reader.get_mut().write_all(reply);
        }
    });
    path
}

#[test]
fn an_unparsable_reply_is_reported() {
    let path = fake_server(b"this is not json\n");
    assert_run(&sbcctl(&["--socket", path.to_str().unwrap(), "list"]), 1, "", "Error: Invalid response from server\n");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_reply_is_one_line_even_when_it_arrives_in_pieces() {
    // the Node client parsed the first chunk; a reply split across writes must still work
    let path = temp_socket_path();
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        if let Some(Ok(stream)) = listener.incoming().next() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let s = reader.get_mut();
            let _ = s.write_all(br#"{"success":true,"con"#);
            let _ = s.flush();
            std::thread::sleep(Duration::from_millis(100));
            let _ = s.write_all(b"fig\":{\"a\":1}}\n{\"ignored\":true}\n");
        }
    });
    assert_run(&sbcctl(&["--socket", path.to_str().unwrap(), "list"]), 0, "Runtime Configuration:\n  a = 1\n", "");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn config_commands_print_like_the_node_cli() {
    let server = Server::start();
    assert_run(&server.sbcctl(&["list"]), 0, "Runtime Configuration:\n  (no configuration set)\n", "");
    assert_run(&server.sbcctl(&["set", "testKey", "testValue"]), 0, "✓ testKey = \"testValue\"\n", "");
    assert_run(&server.sbcctl(&["get", "testKey"]), 0, "testKey = \"testValue\"\n", "");
    assert_run(&server.sbcctl(&["get", "other"]), 0, "other = undefined\n", "");
    assert_run(&server.sbcctl(&["set", "list", "a,b"]), 0, "✓ list = \"a,b\"\n", "");
    assert_run(
        &server.sbcctl(&["list"]),
        0,
        "Runtime Configuration:\n  testKey = \"testValue\"\n  list = \"a,b\"\n",
        "",
    );
}

#[test]
fn fs_commands_print_like_the_node_cli() {
    let server = Server::start();
    assert_run(&server.sbcctl(&["fs", "drained"]), 0, "No servers are currently drained\n", "");
    assert_run(&server.sbcctl(&["fs", "active"]), 0, "No active feature servers found\n", "");
    assert_run(&server.sbcctl(&["fs", "list"]), 0, "No servers configured\n", "");

    assert_run(
        &server.sbcctl(&["fs", "drain", "127.0.10.5"]),
        0,
        "✓ Drained 127.0.10.5\nDrained servers: [127.0.10.5]\n",
        "",
    );
    assert_run(
        &server.sbcctl(&["fs", "drain", "127.0.10.7:5080"]),
        0,
        "✓ Drained 127.0.10.7:5080\nDrained servers: [127.0.10.5, 127.0.10.7:5080]\n",
        "",
    );
    assert_run(&server.sbcctl(&["fs", "drained"]), 0, "Drained servers:\n  🔴 127.0.10.5\n  🔴 127.0.10.7:5080\n", "");
    assert_run(
        &server.sbcctl(&["fs", "list"]),
        0,
        "No servers configured\nOrphaned drained servers:\n  🔴 127.0.10.5 (orphaned)\n  🔴 127.0.10.7:5080 (orphaned)\n",
        "",
    );

    server.sadd(&server.sets.active_fs, &["127.0.10.5:5070", "127.0.10.6:5070", "127.0.10.7:5080", "127.0.10.7:5090"]);
    assert_run(
        &server.sbcctl(&["fs", "list"]),
        0,
        "Feature servers:\n  🔴 127.0.10.5:5070 (drained)\n  🟢 127.0.10.6:5070 (active)\n  🔴 127.0.10.7:5080 (drained)\n  🟢 127.0.10.7:5090 (active)\n",
        "",
    );
    assert_run(
        &server.sbcctl(&["fs", "active"]),
        0,
        "Available feature servers:\n  🟢 127.0.10.6:5070\n  🟢 127.0.10.7:5090\n",
        "",
    );
    assert_run(
        &server.sbcctl(&["fs", "undrain", "127.0.10.5"]),
        0,
        "✓ Undrained 127.0.10.5\nDrained servers: [127.0.10.7:5080]\n",
        "",
    );
    assert_run(
        &server.sbcctl(&["fs", "undrain", "127.0.10.7:5080"]),
        0,
        "✓ Undrained 127.0.10.7:5080\nDrained servers: []\n",
        "",
    );
    assert_run(
        &server.sbcctl(&["fs", "active"]),
        0,
        "Available feature servers:\n  🟢 127.0.10.5:5070\n  🟢 127.0.10.6:5070\n  🟢 127.0.10.7:5080\n  🟢 127.0.10.7:5090\n",
        "",
    );
}

#[test]
fn json_prints_the_raw_reply_line() {
    let server = Server::start();
    assert_run(
        &server.sbcctl(&["--json", "fs", "drain", "127.0.10.5"]),
        0,
        "{\"success\":true,\"action\":\"drain\",\"server\":\"127.0.10.5\",\"drained\":[\"127.0.10.5\"]}\n",
        "",
    );
    assert_run(&server.sbcctl(&["get", "k", "--json"]), 0, "{\"success\":true,\"key\":\"k\"}\n", "");
}

#[test]
fn a_failed_reply_exits_1_with_its_error() {
    let path = fake_server(b"{\"success\":false,\"error\":\"Redis connection not available\"}\n");
    let socket = path.to_str().unwrap();
    assert_run(&sbcctl(&["--socket", socket, "fs", "drained"]), 1, "", "Error: Redis connection not available\n");
    // --json: the reply is the output, the exit code still says it failed
    assert_run(
        &sbcctl(&["--socket", socket, "--json", "fs", "list"]),
        1,
        "{\"success\":false,\"error\":\"Redis connection not available\"}\n",
        "",
    );
    let _ = std::fs::remove_file(&path);

    // without an error text, the command's own fallback
    let path = fake_server(b"{\"success\":false}\n");
    let socket = path.to_str().unwrap();
    assert_run(&sbcctl(&["--socket", socket, "fs", "drain", "127.0.10.1"]), 1, "", "Error: Failed to drain server\n");
    assert_run(
        &sbcctl(&["--socket", socket, "fs", "undrain", "127.0.10.1"]),
        1,
        "",
        "Error: Failed to undrain server\n",
    );
    assert_run(&sbcctl(&["--socket", socket, "fs", "active"]), 1, "", "Error: Failed to get active servers\n");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_socket_path_comes_from_sbc_socket_path() {
    let server = Server::start();
    let run = finish(command().env("SBC_SOCKET_PATH", &server.path).args(["get", "x"]).output().unwrap());
    assert_run(&run, 0, "x = undefined\n", "");
}

#[test]
fn status_prints_one_line_per_fact() {
    let standby =
        RegbotSnapshot { role: RegbotRole::Standby, total: 0, registered: 0, failing: 0, regbots: Vec::new() };
    let (regbot, snapshot) = fake_regbot(standby);
    let server = Server::launch(redis_at(6379, Duration::from_secs(2)), Some(regbot));
    let run = server.sbcctl(&["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "drachtio: not connected");
    assert!(lines[1].starts_with("uptime: "), "{run:?}");
    assert!(lines[2].starts_with("registered users: "), "{run:?}");
    assert_eq!(
        lines[3..],
        ["feature servers: 0", "rtp servers: 0", "regbot: standby (0 gateways, 0 registered, 0 failing)"]
    );

    server.sadd(&server.sets.active_fs, &["127.0.10.5:5070"]);
    server
        .conn_events
        .send(ConnectionEvent::Connected(ConnectionInfo {
            hostports: "udp/127.0.0.1:5060".into(),
            version: "v0.9.10".into(),
            local_hostports: "udp/127.0.0.1:5060".into(),
        }))
        .unwrap();
    *snapshot.lock().unwrap() =
        RegbotSnapshot { role: RegbotRole::Leader, total: 2, registered: 1, failing: 1, regbots: Vec::new() };
    let run = server.sbcctl(&["status"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "drachtio: connected, version v0.9.10",
            "  hostports: udp/127.0.0.1:5060",
            "  local hostports: udp/127.0.0.1:5060"
        ]
    );
    assert_eq!(
        lines[5..],
        ["feature servers: 1", "rtp servers: 0", "regbot: leader (2 gateways, 1 registered, 1 failing)"]
    );

    let json = server.sbcctl(&["status", "--json"]);
    assert_eq!(json.code, 0);
    assert!(json.stdout.starts_with("{\"success\":true,\"drachtio\":{\"connected\":true,"), "{json:?}");
}

fn regbot_info(carrier: &str, gateway: &str, aor: &str, target: &str, state: RegbotState) -> RegbotInfo {
    RegbotInfo {
        voip_carrier_sid: carrier.into(),
        sip_gateway_sid: gateway.into(),
        aor: aor.into(),
        target: target.into(),
        state,
        last_status: None,
        consecutive_failures: 0,
        next_request_in: None,
    }
}

#[test]
fn regbot_list_in_every_mode_adds_how_many_sbcs_hold_each_carrier() {
    let every = Server::start_with_regbot(RegbotSnapshot {
        role: RegbotRole::Every,
        total: 2,
        registered: 1,
        failing: 1,
        regbots: vec![
            RegbotInfo {
                last_status: Some("200 OK".into()),
                next_request_in: Some(Duration::from_secs(1800)),
                ..regbot_info("carrier-a", "gw-1", "a@b.c", "gw4.test;transport=udp", RegbotState::Registered)
            },
            RegbotInfo {
                last_status: Some("403 Forbidden".into()),
                consecutive_failures: 1,
                ..regbot_info("carrier-b", "gw-2", "b@b.c", "gw5.test;transport=udp", RegbotState::Failing)
            },
        ],
    });
    // carrier-a: two SBCs hold a registration, a third's has run out; carrier-b: nobody.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let entry = |ok: bool, until: u64| format!(r#"{{"ok":{ok},"until":{until},"at":{now},"status":"{{}}"}}"#);
    let key = format!("{}:regbot-sbcs:carrier-a", every.cluster_id);
    let mut conn = every.redis.get().unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("192.0.2.1:5060")
        .arg(entry(true, now + 600))
        .arg("192.0.2.2:5060")
        .arg(entry(true, now + 300))
        .arg("192.0.2.3:5060")
        .arg(entry(true, now - 10))
        .query(&mut *conn)
        .unwrap();
    let _: () = redis::cmd("EXPIRE").arg(&key).arg(60).query(&mut *conn).unwrap();
    assert_run(
        &every.sbcctl(&["regbot", "list"]),
        0,
        concat!(
            "Regbot role: every\n",
            "STATE       CARRIER    GATEWAY  AOR    TARGET                  LAST STATUS    FAILURES  NEXT REFRESH  SBCS REGISTERED\n",
            "registered  carrier-a  gw-1     a@b.c  gw4.test;transport=udp  200 OK         0         in 1800s      2\n",
            "failing     carrier-b  gw-2     b@b.c  gw5.test;transport=udp  403 Forbidden  1         -             0\n",
        ),
        "",
    );
    let json = every.sbcctl(&["--json", "regbot", "list"]);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(v["mode"], "every");
    assert_eq!(v["regbots"][0]["cluster_sbcs"], serde_json::json!(["192.0.2.1:5060", "192.0.2.2:5060"]));
    assert_eq!(v["regbots"][1]["cluster_sbcs"], serde_json::json!([]));
    let status = every.sbcctl(&["status"]);
    assert_eq!(status.stdout.lines().last(), Some("regbot: every (2 gateways, 1 registered, 1 failing)"), "{status:?}");
}

#[test]
fn regbot_list_prints_the_role_and_an_aligned_table() {
    let standby = Server::start_with_regbot(RegbotSnapshot {
        role: RegbotRole::Standby,
        total: 0,
        registered: 0,
        failing: 0,
        regbots: Vec::new(),
    });
    assert_run(&standby.sbcctl(&["regbot", "list"]), 0, "Regbot role: standby\nNo outbound registrations\n", "");
    assert_run(
        &standby.sbcctl(&["--json", "regbot", "list"]),
        0,
        "{\"success\":true,\"role\":\"standby\",\"regbots\":[]}\n",
        "",
    );

    let leader = Server::start_with_regbot(RegbotSnapshot {
        role: RegbotRole::Leader,
        total: 3,
        registered: 1,
        failing: 1,
        regbots: vec![
            RegbotInfo {
                last_status: Some("403 Forbidden".into()),
                consecutive_failures: 12,
                next_request_in: Some(Duration::from_millis(29_400)),
                ..regbot_info(
                    "carrier-b",
                    "gw-1",
                    "bob@carrier-b.net",
                    "sip.carrier-b.net;transport=tcp",
                    RegbotState::Failing,
                )
            },
            RegbotInfo {
                last_status: Some("200 OK".into()),
                next_request_in: Some(Duration::from_secs(3540)),
                ..regbot_info(
                    "carrier-a",
                    "gw-22",
                    "alice@sip.example.com",
                    "gw5.test:5061;transport=tls",
                    RegbotState::Registered,
                )
            },
            regbot_info("carrier-a", "gw-1", "a@b.c", "gw4.test;transport=udp", RegbotState::Registering),
        ],
    });
    assert_run(
        &leader.sbcctl(&["regbot", "list"]),
        0,
        concat!(
            "Regbot role: leader\n",
            "STATE        CARRIER    GATEWAY  AOR                    TARGET                           LAST STATUS    FAILURES  NEXT REFRESH\n",
            "registering  carrier-a  gw-1     a@b.c                  gw4.test;transport=udp           -              0         -\n",
            "registered   carrier-a  gw-22    alice@sip.example.com  gw5.test:5061;transport=tls      200 OK         0         in 3540s\n",
            "failing      carrier-b  gw-1     bob@carrier-b.net      sip.carrier-b.net;transport=tcp  403 Forbidden  12        in 30s\n",
        ),
        "",
    );
    let json = leader.sbcctl(&["regbot", "list", "--json"]);
    assert_eq!(json.code, 0, "{json:?}");
    assert!(
        json.stdout.starts_with(concat!(
            r#"{"success":true,"role":"leader","regbots":[{"carrier":"carrier-a","gateway":"gw-1","aor":"a@b.c","#,
            r#""target":"gw4.test;transport=udp","state":"registering","last_status":null,"failures":0,"next_refresh_s":null},"#
        )),
        "{json:?}"
    );
    assert!(json.stdout.ends_with("\"next_refresh_s\":30}]}\n"), "{json:?}");
    assert_eq!(json.stdout.lines().count(), 1);

    // status shows the snapshot's counts
    let status = leader.sbcctl(&["status"]);
    assert_eq!(
        status.stdout.lines().last(),
        Some("regbot: leader (3 gateways, 1 registered, 1 failing)"),
        "{status:?}"
    );
}

#[test]
fn regbot_list_without_a_regbot_role_fails() {
    let server = Server::start();
    assert_run(&server.sbcctl(&["regbot", "list"]), 1, "", "Error: Regbot not running\n");
    assert_run(
        &server.sbcctl(&["--json", "regbot", "list"]),
        1,
        "{\"success\":false,\"error\":\"Regbot not running\"}\n",
        "",
    );
}

#[test]
fn status_says_when_the_regbot_did_not_answer() {
    let path = fake_server(concat!(
        r#"{"success":true,"drachtio":{"connected":false,"version":null,"hostports":null,"local_hostports":null},"#,
        r#""uptime_s":61,"registered_users":0,"feature_servers":0,"rtp_servers":0,"#,
        r#""regbot":{"role":"leader","total":2,"registered":2,"failing":0},"regbot_error":"no answer within 500 ms"}"#,
        "\n"
    )
    .as_bytes());
    assert_run(
        &sbcctl(&["--socket", path.to_str().unwrap(), "status"]),
        0,
        concat!(
            "drachtio: not connected\n",
            "uptime: 1m 01s\n",
            "registered users: 0\n",
            "feature servers: 0\n",
            "rtp servers: 0\n",
            "regbot: leader (2 gateways, 2 registered, 0 failing)\n",
            "  regbot query failed: no answer within 500 ms\n",
        ),
        "",
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bans_prints_a_table_and_bans_clear_lifts_one() {
    let server = Server::start();
    assert_run(&server.sbcctl(&["bans"]), 0, "No sources are banned\n", "");

    let bans = &server.bans;
    let now = Instant::now();
    for _ in 0..3 {
        bans.record_failure("2001:db8::21".parse().unwrap(), now);
    }
    for _ in 0..4 {
        bans.record_failure("127.0.21.1".parse().unwrap(), now - Duration::from_secs(10));
    }
    let run = server.sbcctl(&["bans"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    // an IPv6 source is its /64
    assert_eq!(lines[0], "IP             FAILURES  REMAINING");
    assert_eq!(lines[1], "2001:db8::/64  3         300s");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[..2], ["127.0.21.1", "4"]);
    assert!(["290s", "289s"].contains(&row[2]), "{run:?}");
    assert_eq!(server.sbcctl(&["bans", "list"]).stdout, run.stdout);

    assert_run(&server.sbcctl(&["bans", "clear", "127.0.21.1"]), 0, "✓ Lifted the ban on 127.0.21.1\n", "");
    assert_run(&server.sbcctl(&["bans", "clear", "127.0.21.1"]), 1, "", "Error: No ban on 127.0.21.1\n");
    assert_run(
        &server.sbcctl(&["--json", "bans", "clear", "::ffff:127.0.21.1"]),
        1,
        "{\"success\":false,\"error\":\"No ban on 127.0.21.1\"}\n",
        "",
    );
    assert_run(&server.sbcctl(&["--json", "bans", "clear", "2001:db8::21"]), 0, "{\"success\":true}\n", "");
    assert_run(&server.sbcctl(&["--json", "bans"]), 0, "{\"success\":true,\"bans\":[]}\n", "");
}

#[test]
fn bans_usage_and_address_errors() {
    // none of these reach the socket
    let nowhere = temp_socket_path();
    let socket = nowhere.to_str().unwrap();
    for (args, code, message) in [
        (vec!["bans", "clear"], 2, "clear requires an IP address"),
        (vec!["bans", "lift", "127.0.21.1"], 2, "Unknown bans command: lift. Use: list, clear"),
        (vec!["bans", "clear", "127.0.21.300"], 1, "Invalid IP address: 127.0.21.300"),
        (vec!["bans", "clear", "127.0.21.1:5060"], 1, "Invalid IP address: 127.0.21.1:5060"),
    ] {
        let mut all = vec!["--socket", socket];
        all.extend(args);
        assert_run(&sbcctl(&all), code, "", &format!("Error: {message}\n"));
    }
}
