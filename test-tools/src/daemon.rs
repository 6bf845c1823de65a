//! Runs the real `sbc-sidecar` binary as a child process, the way an operator would.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Option<Child>,
    pub log_path: PathBuf,
    pub socket_path: PathBuf,
    pub dir: PathBuf,
}

/// A program of the daemon's package (`sbc-sidecar`, `sbcctl`) as cargo built it for the
/// running integration test: `CARGO_BIN_EXE_<name>` when cargo sets it at run time (1.94 and
/// later), else the file next to the `deps/` directory the test executable runs from, where
/// cargo puts the package's binaries before it runs its integration tests.
pub fn program(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(path);
    }
    let test = std::env::current_exe().expect("the test executable's path");
    let profile_dir =
        test.parent().and_then(|deps| deps.parent()).expect("a test executable in <target>/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(path.is_file(), "{} is missing: run the test through cargo test", path.display());
    path
}

/// The variables every run needs; tests add or override.
pub fn base_env(drachtio_port: u16, database: &str) -> HashMap<String, String> {
    let mut env = HashMap::new();
    for (k, v) in [
        ("DRACHTIO_HOST", "127.0.0.1".to_string()),
        ("DRACHTIO_PORT", drachtio_port.to_string()),
        ("DRACHTIO_SECRET", "cymru".to_string()),
        ("JAMBONES_MYSQL_HOST", "127.0.0.1".to_string()),
        ("JAMBONES_MYSQL_USER", super::db::mysql_user()),
        ("JAMBONES_MYSQL_PASSWORD", super::db::mysql_password()),
        ("JAMBONES_MYSQL_DATABASE", database.to_string()),
        ("JAMBONES_REDIS_HOST", "127.0.0.1".to_string()),
        ("JAMBONES_TIME_SERIES_HOST", "127.0.0.1".to_string()),
        ("ENCRYPTION_SECRET", "foobarbazzle".to_string()),
        ("JAMBONES_LOGLEVEL", "debug".to_string()),
        ("SBC_DRACHTIO_BACKOFF_MIN_MS", "50".to_string()),
        ("SBC_DRACHTIO_BACKOFF_MAX_MS", "500".to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    env
}

impl Daemon {
    pub fn start(mut env: HashMap<String, String>, args: &[&str]) -> Daemon {
        let dir = super::sipp::tempdir();
        let log_path = dir.join("daemon.log");
        let socket_path = dir.join("sbc.sock");
        env.entry("SBC_SOCKET_PATH".into()).or_insert_with(|| socket_path.display().to_string());
        let log = std::fs::File::create(&log_path).expect("daemon log file");
        let child = Command::new(program("sbc-sidecar"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env)
            .args(if args.contains(&"--log") { &[][..] } else { &["--log", "stderr"][..] })
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sbc-sidecar starts");
        Daemon { child: Some(child), log_path, socket_path: PathBuf::from(&env["SBC_SOCKET_PATH"]), dir }
    }

    /// `sbcctl --socket <this daemon's socket> <args>`: (exit code, stdout, stderr).
    pub fn sbcctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(program("sbcctl"))
            .arg("--socket")
            .arg(&self.socket_path)
            .args(args)
            .output()
            .expect("sbcctl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            send_signal(child.id(), sig);
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit; kills it if it does not exit.
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        send_signal(child.id(), "TERM");
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Waits for the process to exit by itself (e.g. a configuration error).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var("SBC_KEEP_TEST_LOGS").is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `kill -<sig> <pid>`; never with pid 0, which would signal the whole process group.
fn send_signal(pid: u32, sig: &str) {
    assert!(pid > 0, "a real child pid");
    let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
}
