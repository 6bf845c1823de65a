//! Redis Sentinel end to end, with a real master failover: a test-owned master, replica and
//! sentinel (`redis-server <conf> --sentinel`, which is all the Debian `redis-sentinel` package
//! adds), the drachtio double, and the real daemon configured with `JAMBONES_REDIS_SENTINELS`
//! only. Feature-server heartbeats (sipp) land on the master; the master is killed; once the
//! sentinel has promoted the replica, heartbeats land on the new master and the daemon is
//! still up.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::sipp::{self, Sipp};

const WAIT: Duration = Duration::from_secs(10);
/// How long the sentinel may take to promote the replica after the master died.
const FAILOVER_WAIT: Duration = Duration::from_secs(15);
/// How long heartbeats may keep getting 503 once the sentinel reports the new master.
const RECOVERY_WAIT: Duration = Duration::from_secs(10);
const MASTER_NAME: &str = "sbcmaster";

/// Feature servers of this test (addresses no other test uses).
const FS_A: &str = "127.0.0.71";
const FS_B: &str = "127.0.0.72";

/// `redis-server --version`, or a failure that says what is missing: this test must not be
/// skipped quietly, the design requires Sentinel to be tested against a real one.
fn require_redis_server() -> String {
    match Command::new("redis-server").arg("--version").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => panic!(
            "`redis-server --version` failed ({}): {}; the Sentinel test needs a working redis-server",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "redis-server not found ({e}): the Sentinel test runs `redis-server <conf> --sentinel` \
             and needs the redis-server package (`make services` installs it)"
        ),
    }
}

/// Three distinct TCP ports that are free on 127.0.0.1 right now.
fn free_tcp_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> =
        (0..3).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind for a free port")).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    [ports[0], ports[1], ports[2]]
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One redis-server (or sentinel) child process with its own config and log file.
struct RedisProc {
    name: &'static str,
    port: u16,
    log_path: PathBuf,
    child: Option<Child>,
}

impl RedisProc {
    fn spawn(name: &'static str, dir: &Path, port: u16, extra_conf: &str, sentinel: bool) -> RedisProc {
        let log_path = dir.join(format!("{name}.log"));
        let conf_path = dir.join(format!("{name}.conf"));
        let conf = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\nlogfile {log}\n\
             save \"\"\nappendonly no\n{extra_conf}",
            dir = dir.display(),
            log = log_path.display(),
        );
        std::fs::write(&conf_path, conf).expect("write redis config");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf_path);
        if sentinel {
            cmd.arg("--sentinel");
        }
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server for the {name}: {e}"));
        let mut proc = RedisProc { name, port, log_path, child: Some(child) };
        let up = wait_for(WAIT, || {
            if let Some(Ok(Some(status))) = proc.child.as_mut().map(|c| c.try_wait()) {
                panic!("the {name} exited at once ({status}); its log:\n{}", proc.log());
            }
            proc.conn().ok().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
        });
        assert!(up.is_some(), "the {name} on port {port} did not answer PING within {WAIT:?}; log:\n{}", proc.log());
        proc
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        let conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        conn.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(conn)
    }

    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        cmd.query(&mut self.conn()?)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Master, replica and sentinel in one temp dir, all killed when dropped.
struct Servers {
    dir: PathBuf,
    master: RedisProc,
    replica: RedisProc,
    sentinel: RedisProc,
}

impl Servers {
    fn start() -> Servers {
        let dir = sipp::tempdir();
        let [master_port, replica_port, sentinel_port] = free_tcp_ports();
        // Diskless full sync without the default 5 s wait for more replicas.
        let sync = "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n";
        let master = RedisProc::spawn("master", &dir, master_port, sync, false);
        let replica = RedisProc::spawn(
            "replica",
            &dir,
            replica_port,
            &format!("{sync}replicaof 127.0.0.1 {master_port}\nreplica-priority 100\n"),
            false,
        );
        let in_sync = wait_for(WAIT, || {
            let info: String = replica.query(redis::cmd("INFO").arg("replication")).ok()?;
            info.contains("master_link_status:up").then_some(())
        });
        assert!(
            in_sync.is_some(),
            "the replica did not sync within {WAIT:?}\nreplica log:\n{}\nmaster log:\n{}",
            replica.log(),
            master.log()
        );
        // Started last, so its first INFO to the master already lists the replica.
        let sentinel = RedisProc::spawn(
            "sentinel",
            &dir,
            sentinel_port,
            &format!(
                "sentinel resolve-hostnames no\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 500\n\
                 sentinel failover-timeout {MASTER_NAME} 2000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n"
            ),
            true,
        );
        let servers = Servers { dir, master, replica, sentinel };
        let knows_replica = wait_for(WAIT, || {
            let replicas: Vec<HashMap<String, String>> =
                servers.sentinel.query(redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME)).ok()?;
            replicas
                .iter()
                .any(|r| {
                    r.get("port").map(String::as_str) == Some(&*replica_port.to_string())
                        && r.get("flags").is_some_and(|f| f == "slave")
                        && r.get("master-link-status").map(String::as_str) == Some("ok")
                })
                .then_some(())
        });
        assert!(knows_replica.is_some(), "the sentinel does not list the replica:\n{}", servers.logs());
        assert_eq!(servers.sentinel_master_port(), Some(master_port), "{}", servers.logs());
        servers
    }

    /// The master's port as the sentinel reports it (`SENTINEL get-master-addr-by-name`).
    fn sentinel_master_port(&self) -> Option<u16> {
        let addr: Option<(String, u16)> =
            self.sentinel.query(redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(MASTER_NAME)).ok()?;
        addr.filter(|(ip, _)| ip == "127.0.0.1").map(|(_, port)| port)
    }

    fn logs(&self) -> String {
        format!(
            "--- sentinel log:\n{}\n--- master log:\n{}\n--- replica log:\n{}",
            self.sentinel.log(),
            self.master.log(),
            self.replica.log()
        )
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.sentinel.kill();
        self.replica.kill();
        self.master.kill();
        if std::env::var("SBC_KEEP_TEST_LOGS").is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("redis logs kept in {}", self.dir.display());
        }
    }
}

/// What a heartbeat got: the status code (None: no answer at all) and `X-Members` of a 200.
#[derive(Debug)]
struct Answer {
    code: Option<u16>,
    members: Option<u32>,
    trace: String,
}

/// One feature-server heartbeat (`X-FS-Status: open`) from `ip:port` through the double.
fn heartbeat(double: &Double, ip: &str, port: u16) -> Answer {
    let url = format!("http://{ip}:3000");
    let keys = [("status", "open"), ("service_url", url.as_str())];
    let mut s = Sipp::new("sentinel_heartbeat.xml", &double.sip_addr().to_string(), ip, port);
    s.keys = &keys;
    s.timeout = Duration::from_secs(8);
    let run = s.run();
    let status_line = run.messages.lines().map(str::trim).find(|l| l.starts_with("SIP/2.0 "));
    let code = status_line.and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok());
    let members =
        run.messages.lines().find_map(|l| l.trim().strip_prefix("X-Members:")).and_then(|m| m.trim().parse().ok());
    let answered = run.status == Some(0) && code.is_some();
    Answer {
        code: if answered { code } else { None },
        members,
        trace: format!("sipp exit {:?}\n{}\n{}\nmessages:\n{}", run.status, run.stdout, run.stderr, run.messages),
    }
}

fn active_fs(server: &RedisProc, cluster: &str) -> Vec<String> {
    let mut members: Vec<String> = server
        .query(redis::cmd("SMEMBERS").arg(format!("{cluster}:active-fs")))
        .unwrap_or_else(|e| panic!("SMEMBERS on the {}: {e}", server.name));
    members.sort();
    members
}

/// Log lines at error level, and panic messages (the default hook writes them to stderr).
fn bad_log_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.split_whitespace().nth(1) == Some("ERROR") || l.contains("panicked")).collect()
}

#[test]
fn heartbeats_follow_a_sentinel_failover_to_the_new_master() {
    let version = require_redis_server();
    let mut servers = Servers::start();
    let master_port = servers.master.port;
    let replica_port = servers.replica.port;

    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).expect("double");
    let cluster = format!("sentinel-{:08x}", rand::random::<u32>());
    let mut env = base_env(double.admin_addr().port(), &db.name);
    // Only the sentinel says where Redis is.
    env.remove("JAMBONES_REDIS_HOST");
    env.insert("JAMBONES_REDIS_SENTINELS".into(), format!("127.0.0.1:{}", servers.sentinel.port));
    env.insert("JAMBONES_REDIS_SENTINEL_MASTER_NAME".into(), MASTER_NAME.into());
    env.insert("JAMBONES_CLUSTER_ID".into(), cluster.clone());
    let mut daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("options", WAIT), "daemon log:\n{}", daemon.log());

    let (port_a, port_b) = (sipp::free_port(FS_A), sipp::free_port(FS_B));
    let (member_a, member_b) = (format!("{FS_A}:{port_a}"), format!("{FS_B}:{port_b}"));

    // Before the failover: the heartbeat lands on the master the sentinel names.
    let first = heartbeat(&double, FS_A, port_a);
    assert_eq!(
        (first.code, first.members),
        (Some(200), Some(1)),
        "first heartbeat: {}\ndaemon log:\n{}\n{}",
        first.trace,
        daemon.log(),
        servers.logs()
    );
    assert_eq!(active_fs(&servers.master, &cluster), vec![member_a.clone()]);
    // The shared Redis on 6379 (the default of JAMBONES_REDIS_PORT) was not used.
    if let Ok(mut shared) = redis::Client::open("redis://127.0.0.1:6379/").and_then(|c| c.get_connection()) {
        let exists: i64 = redis::cmd("EXISTS").arg(format!("{cluster}:active-fs")).query(&mut shared).unwrap_or(0);
        assert_eq!(exists, 0, "the daemon wrote to 127.0.0.1:6379 instead of the sentinel's master");
    }
    let replicated = wait_for(WAIT, || {
        let m: Vec<String> = servers.replica.query(redis::cmd("SMEMBERS").arg(format!("{cluster}:active-fs"))).ok()?;
        (m == vec![member_a.clone()]).then_some(())
    });
    assert!(replicated.is_some(), "the member never reached the replica\n{}", servers.logs());

    // The failover: SIGKILL the master. While the sentinel works, heartbeats keep coming: the
    // first finds its pooled connection dead and looks for the master again; until the
    // sentinel names the new one there is none. Each must be answered: 503, or 200 as soon as
    // the daemon reaches the new master; and the daemon must stay up.
    servers.master.kill();
    let killed = Instant::now();
    let promoted_flag = AtomicBool::new(false);
    let (promoted, (during, unanswered)) = std::thread::scope(|s| {
        let probe = s.spawn(|| {
            let mut seen: Vec<(Duration, Option<u16>, Duration)> = Vec::new();
            while !promoted_flag.load(Ordering::SeqCst) && killed.elapsed() < FAILOVER_WAIT {
                let started = Instant::now();
                let a = heartbeat(&double, FS_A, port_a);
                seen.push((killed.elapsed(), a.code, started.elapsed()));
                if a.code.is_none() {
                    return (seen, Some(a.trace));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (seen, None)
        });
        let promoted = wait_for(FAILOVER_WAIT, || (servers.sentinel_master_port() == Some(replica_port)).then_some(()))
            .map(|()| killed.elapsed());
        promoted_flag.store(true, Ordering::SeqCst);
        (promoted, probe.join().expect("probe thread"))
    });
    let failover = promoted.unwrap_or_else(|| {
        panic!(
            "the sentinel did not promote the replica (port {replica_port}) within {FAILOVER_WAIT:?}; \
             it reports {:?}\n{}",
            servers.sentinel_master_port(),
            servers.logs()
        )
    });
    if let Some(trace) = unanswered {
        panic!("a heartbeat during the failover got no answer ({during:?}): {trace}\ndaemon log:\n{}", daemon.log());
    }
    assert!(!during.is_empty(), "at least one heartbeat was sent during the failover");
    assert!(
        during.iter().all(|(_, code, took)| matches!(code, Some(503 | 200)) && *took < Duration::from_secs(5)),
        "heartbeats during the failover (since the kill, status, answer time): {during:?}\ndaemon log:\n{}",
        daemon.log()
    );
    assert!(daemon.is_running(), "the daemon died during the failover; log:\n{}", daemon.log());

    // After the failover: 503 until the daemon has found the new master, then 200.
    let mut answers: Vec<(Duration, Option<u16>)> = Vec::new();
    let recovery_start = Instant::now();
    let recovered = loop {
        let a = heartbeat(&double, FS_A, port_a);
        answers.push((killed.elapsed(), a.code));
        match a.code {
            Some(200) => break a,
            Some(503) if recovery_start.elapsed() < RECOVERY_WAIT => {
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => panic!(
                "heartbeat after the failover (answers so far {answers:?}): {}\ndaemon log:\n{}\n{}",
                a.trace,
                daemon.log(),
                servers.logs()
            ),
        }
    };
    // The member came across with the replication, so the set still has one.
    assert_eq!(recovered.members, Some(1), "{}", recovered.trace);
    // A new feature server proves the writes go to the new master.
    let second = heartbeat(&double, FS_B, port_b);
    assert_eq!(
        (second.code, second.members),
        (Some(200), Some(2)),
        "second feature server: {}\ndaemon log:\n{}",
        second.trace,
        daemon.log()
    );
    let role: String = servers.replica.query(redis::cmd("INFO").arg("replication")).expect("INFO on the new master");
    assert!(role.contains("role:master"), "the replica was promoted:\n{role}");
    assert_eq!(active_fs(&servers.replica, &cluster), vec![member_a, member_b]);

    assert!(daemon.is_running(), "the daemon is still running; log:\n{}", daemon.log());
    let log = daemon.log();
    let bad = bad_log_lines(&log);
    assert!(bad.is_empty(), "error-level log lines or panics:\n{}\n\nwhole log:\n{log}", bad.join("\n"));
    eprintln!(
        "{version}: master {master_port} killed; sentinel reported the replica {replica_port} as master after \
         {failover:?}\nheartbeats during the failover (since the kill, status, answer time): {during:?}\n\
         heartbeats after the promotion (since the kill, status): {answers:?}"
    );

    // It still stops cleanly.
    assert_eq!(daemon.stop(WAIT).and_then(|s| s.code()), Some(0), "clean stop; log:\n{}", daemon.log());
}

#[test]
fn a_hung_sentinel_first_in_the_list_does_not_keep_the_daemon_from_the_master() {
    require_redis_server();
    let servers = Servers::start();
    // Accepts connections (the kernel completes the handshake) and never answers a byte.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).expect("double");
    let cluster = format!("sentinel-hung-{:08x}", rand::random::<u32>());
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.remove("JAMBONES_REDIS_HOST");
    env.insert(
        "JAMBONES_REDIS_SENTINELS".into(),
        format!("127.0.0.1:{},127.0.0.1:{}", hung.local_addr().unwrap().port(), servers.sentinel.port),
    );
    env.insert("JAMBONES_REDIS_SENTINEL_MASTER_NAME".into(), MASTER_NAME.into());
    env.insert("JAMBONES_CLUSTER_ID".into(), cluster.clone());
    env.insert("SBC_REDIS_TIMEOUT_MS".into(), "300".into());
    let daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("options", WAIT), "daemon log:\n{}", daemon.log());
    let port = sipp::free_port(FS_A);
    // The first connect may spend the timeout on the hung sentinel before asking the next one.
    let answered = wait_for(WAIT, || {
        let a = heartbeat(&double, FS_A, port);
        (a.code == Some(200)).then_some(a)
    });
    let answer = answered.unwrap_or_else(|| panic!("no 200 through the second sentinel\n{}", daemon.log()));
    assert_eq!(answer.members, Some(1));
    assert_eq!(active_fs(&servers.master, &cluster), vec![format!("{FS_A}:{port}")]);
    drop(hung);
}
