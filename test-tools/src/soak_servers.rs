//! Private Redis and MariaDB servers for `make soak`, on free ports of 127.0.0.1 with their
//! own data directories, so that the soak can stop and restart them without touching the
//! shared servers other tests (and other people) use.
//!
//! * Redis runs with `appendonly yes` and `appendfsync always`: a write Redis acknowledged is on
//!   disk, so after a `SIGKILL` and a restart every binding the daemon stored is back. A binding
//!   missing afterwards is then the daemon's fault (a `200` without a store), not Redis's.
//! * MariaDB is stopped with `SIGTERM` (a clean shutdown) so that it restarts in about a second.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

const START_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum ServerError {
    Spawn { what: &'static str, error: String },
    Setup { what: &'static str, output: String },
    NotReady { what: &'static str, log: String },
    Sql(String),
    NoPort(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Spawn { what, error } => write!(f, "cannot start {what}: {error}"),
            ServerError::Setup { what, output } => write!(f, "{what} failed: {output}"),
            ServerError::NotReady { what, log } => write!(f, "{what} did not accept connections in time; log:\n{log}"),
            ServerError::Sql(e) => write!(f, "MariaDB setup: {e}"),
            ServerError::NoPort(e) => write!(f, "no free port: {e}"),
        }
    }
}

pub fn free_port() -> Result<u16, ServerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ServerError::NoPort(e.to_string()))
}

/// A free TCP port below the kernel's ephemeral range (32768–60999 on Linux), for a server the
/// test stops and starts again on the same port. A port from `free_port` is ephemeral: while
/// the server is down (or before it first binds) any outgoing connection or port-0 bind of
/// another test may be given it, and the server then cannot listen there again.
pub fn restartable_port() -> Result<u16, ServerError> {
    // Spread the starting point by pid and clock so parallel test binaries do not probe the
    // same ports in the same order.
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    const LOW: u64 = 20_000;
    const SPAN: u64 = 12_000;
    for i in 0..SPAN {
        let port = (LOW + (seed + i * 7_919) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(ServerError::NoPort(format!("every port in {LOW}..{} is in use", LOW + SPAN)))
}

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Signals our own child by its pid, then reaps it.
fn stop_child(child: &mut Option<Child>, signal: &str) {
    if let Some(mut c) = child.take() {
        let _ = Command::new("kill").args([&format!("-{signal}"), &c.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start(dir: &Path) -> Result<PrivateRedis, ServerError> {
        let dir = dir.join("redis");
        let _ = std::fs::create_dir_all(&dir);
        let mut r = PrivateRedis { port: restartable_port()?, dir, child: None };
        r.restart()?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| ServerError::Spawn { what: "redis-server", error: e.to_string() })?;
        self.child = Some(child);
        let url = self.url();
        let up = wait_until(START_WAIT, || {
            // A redis-server that could not listen exits at once: say so instead of waiting.
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return true;
            }
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        let exited = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))));
        if up && !exited {
            Ok(())
        } else {
            Err(ServerError::NotReady { what: "redis-server", log: read(&log) })
        }
    }

    /// `SIGKILL`: the harshest stop; `appendfsync always` keeps every acknowledged write.
    pub fn kill(&mut self) {
        stop_child(&mut self.child, "KILL");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        stop_child(&mut self.child, "KILL");
    }
}

/// The user name to run mariadbd as (it refuses root unless told `--user=root`).
fn current_user() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "root".into())
}

fn sbin_path() -> String {
    format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default())
}

pub struct PrivateMariadb {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateMariadb {
    pub const DATABASE: &'static str = "sbc_soak";
    pub const USER: &'static str = "sbc_soak";
    pub const PASSWORD: &'static str = "soak-secret";

    /// Installs a data directory, starts the server, creates the database (with the
    /// project's schema) and an account for the daemon.
    pub fn start(dir: &Path) -> Result<PrivateMariadb, ServerError> {
        let dir = dir.join("mariadb");
        let _ = std::fs::create_dir_all(&dir);
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--user={}", current_user()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--tmpdir={}", dir.display()))
            .env("PATH", sbin_path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ServerError::Spawn { what: "mariadb-install-db", error: e.to_string() })?;
        if !out.status.success() {
            return Err(ServerError::Setup {
                what: "mariadb-install-db",
                output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            });
        }
        let mut db = PrivateMariadb { port: restartable_port()?, dir, child: None };
        db.restart()?;
        let mut root = db.root().ok_or_else(|| ServerError::Sql("no root connection".into()))?;
        let sql = |c: &mut mysql::Conn, q: &str| c.query_drop(q).map_err(|e| ServerError::Sql(format!("{q}: {e}")));
        sql(&mut root, &format!("CREATE DATABASE {}", Self::DATABASE))?;
        sql(&mut root, &format!("CREATE USER '{}'@'%' IDENTIFIED BY '{}'", Self::USER, Self::PASSWORD))?;
        sql(&mut root, &format!("GRANT ALL ON {}.* TO '{}'@'%'", Self::DATABASE, Self::USER))?;
        sql(&mut root, &format!("USE {}", Self::DATABASE))?;
        let schema = include_str!("../../src/store/schema.sql");
        for stmt in
            schema.split(';').map(str::trim).filter(|s| !s.is_empty() && !s.lines().all(|l| l.starts_with("--")))
        {
            sql(&mut root, stmt)?;
        }
        Ok(db)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mariadb.sock")
    }

    fn root(&self) -> Option<mysql::Conn> {
        let opts = mysql::OptsBuilder::new().socket(Some(self.socket().display().to_string())).user(Some("root"));
        mysql::Conn::new(opts).ok()
    }

    /// A connection in the soak database, as the daemon's account, over TCP.
    pub fn conn(&self) -> Option<mysql::Conn> {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(self.port)
            .user(Some(Self::USER))
            .pass(Some(Self::PASSWORD))
            .db_name(Some(Self::DATABASE))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_millis(500)));
        mysql::Conn::new(opts).ok()
    }

    pub fn restart(&mut self) -> Result<(), ServerError> {
        let log = self.dir.join("mariadb.log");
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--user={}", current_user()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--tmpdir={}", self.dir.display()))
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=16M"])
            .env("PATH", sbin_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| ServerError::Spawn { what: "mariadbd", error: e.to_string() })?;
        self.child = Some(child);
        if wait_until(START_WAIT, || self.root().is_some()) {
            Ok(())
        } else {
            Err(ServerError::NotReady { what: "mariadbd", log: read(&log) })
        }
    }

    /// `SIGTERM`: a clean shutdown, waited for.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, "TERM");
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        stop_child(&mut self.child, "TERM");
    }
}
