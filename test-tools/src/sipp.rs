//! Runs sipp as a real SIP peer, bounded in time.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn scenario(name: &str) -> PathBuf {
    crate::repo_root().join("tests/scenarios").join(name)
}

/// A port for sipp's media sockets (`-mp`): sipp binds its RTP sockets there and two above
/// even when a scenario has no media. Chosen below the kernel's ephemeral range (where
/// `free_port` and every outgoing socket live) and checked free for all four ports, so that
/// parallel tests do not collide on it.
pub fn media_port(ip: &str) -> u16 {
    for _ in 0..200 {
        let base = 10_000 + 4 * (rand::random::<u16>() % 5_000);
        let free = (base..base + 4).all(|p| std::net::UdpSocket::bind((ip, p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free media port range on {ip}");
}

/// A bound UDP/TCP port that is free on `ip` right now.
pub fn free_port(ip: &str) -> u16 {
    let l = std::net::UdpSocket::bind((ip, 0)).expect("bind for a free port");
    l.local_addr().expect("local addr").port()
}

pub struct SippRun {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub messages: String,
}

/// One sipp invocation: a scenario played against `remote` from `local_ip:local_port`.
pub struct Sipp<'a> {
    pub scenario: PathBuf,
    pub remote: String,
    pub local_ip: &'a str,
    pub local_port: u16,
    /// sipp's `-t` value: `u1` (UDP) or `t1` (TCP).
    pub transport: &'a str,
    pub calls: u32,
    pub keys: &'a [(&'a str, &'a str)],
    pub timeout: Duration,
    /// More sipp arguments (`-inf users.csv`, `-r 100`, …).
    pub extra: Vec<String>,
}

impl<'a> Sipp<'a> {
    pub fn new(scenario_name: &str, remote: &str, local_ip: &'a str, local_port: u16) -> Sipp<'a> {
        Sipp {
            scenario: scenario(scenario_name),
            remote: remote.to_string(),
            local_ip,
            local_port,
            transport: "u1",
            calls: 1,
            keys: &[],
            timeout: Duration::from_secs(10),
            extra: Vec::new(),
        }
    }

    /// Runs sipp to completion (at most `timeout` plus a few seconds).
    pub fn run(&self) -> SippRun {
        let dir = tempdir();
        let msg_file = dir.join("messages.log");
        let mut cmd = Command::new("sipp");
        cmd.arg(&self.remote)
            .arg("-sf")
            .arg(&self.scenario)
            .args(["-i", self.local_ip, "-p", &self.local_port.to_string()])
            .args(["-mp", &media_port(self.local_ip).to_string()])
            .args(["-t", self.transport])
            .args(["-m", &self.calls.to_string()])
            .args(["-timeout", &format!("{}s", self.timeout.as_secs().max(1))])
            .args(["-timeout_error", "-nostdin", "-trace_msg"])
            .arg("-message_file")
            .arg(&msg_file)
            .args(["-trace_err", "-error_file"])
            .arg(dir.join("errors.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in self.keys {
            cmd.args(["-key", k, v]);
        }
        cmd.args(&self.extra);
        let out = crate::services::run_sipp(&mut cmd);
        let messages = std::fs::read_to_string(&msg_file).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        SippRun {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            messages,
        }
    }
}

pub fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sbc-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes a sipp injection file (`SEQUENTIAL`, then `field0;field1;…` lines) and returns its path.
pub fn injection_file(rows: &[Vec<String>]) -> PathBuf {
    let path = tempdir().join("inject.csv");
    let mut text = String::from("SEQUENTIAL\n");
    for r in rows {
        text.push_str(&r.join(";"));
        text.push('\n');
    }
    std::fs::write(&path, text).expect("injection file");
    path
}
