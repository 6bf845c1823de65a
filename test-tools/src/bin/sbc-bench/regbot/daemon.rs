//! The regbot phase's daemon: the release `sbc-sidecar` as a child process, stopped on drop,
//! and the pid of MariaDB for its CPU time.

use super::*;

pub struct DaemonGuard {
    pub child: Option<Child>,
    pub log_path: PathBuf,
    pub socket_path: PathBuf,
}

impl DaemonGuard {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGTERM and wait (at most `timeout`, then SIGKILL); (exit code, how long it took).
    pub fn stop(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else { return (None, Duration::ZERO) };
        let pid = child.id();
        if pid > 0 {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return (status.code(), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        (None, started.elapsed())
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket_path);
        if std::env::var_os("SBC_KEEP_TEST_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

pub fn start_daemon(binary: &str, drachtio_port: u16, database: &str, cluster: &str) -> DaemonGuard {
    let tag = format!("{}-{}", std::process::id(), &cluster[cluster.len().saturating_sub(8)..]);
    let socket_path = std::env::temp_dir().join(format!("sbc-bench-regbot-{tag}.sock"));
    let log_path = std::env::temp_dir().join(format!("sbc-bench-regbot-{tag}.log"));
    let log = std::fs::File::create(&log_path).expect("daemon log file");
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("DRACHTIO_HOST", "127.0.0.1")
        .env("DRACHTIO_PORT", drachtio_port.to_string())
        .env("DRACHTIO_SECRET", "cymru")
        .env("JAMBONES_MYSQL_HOST", "127.0.0.1")
        .env("JAMBONES_MYSQL_USER", db::mysql_user())
        .env("JAMBONES_MYSQL_PASSWORD", db::mysql_password())
        .env("JAMBONES_MYSQL_DATABASE", database)
        .env("JAMBONES_REDIS_HOST", "127.0.0.1")
        .env("JAMBONES_TIME_SERIES_HOST", "127.0.0.1")
        .env("ENCRYPTION_SECRET", "bench")
        .env("JAMBONES_LOGLEVEL", "warn")
        .env("JAMBONES_CLUSTER_ID", cluster)
        .env("SBC_REGBOT_CLAIM_JITTER_MS", "0")
        .env("SBC_SOCKET_PATH", &socket_path)
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_") || k.starts_with("SBC_AUTH")));
    if let Some(n) = env_opt("SBC_BENCH_REGBOT_BATCH_SIZE") {
        cmd.env("JAMBONES_REGBOT_BATCH_SIZE", n.to_string());
    }
    if let Some(ms) = env_opt("SBC_BENCH_REGBOT_BATCH_SLEEP_MS") {
        cmd.env("JAMBONES_REGBOT_BATCH_SLEEP_MS", ms.to_string());
    }
    let child = cmd
        .args(["--log", "stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e} (run `cargo build --release --bins`)"));
    DaemonGuard { child: Some(child), log_path, socket_path }
}

/// The MariaDB (or MySQL) server process, to read its CPU time as well.
pub fn mysqld_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        matches!(comm.trim(), "mariadbd" | "mysqld").then_some(pid)
    })
}
