//! Runs sipp as a real SIP peer, bounded in time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(name)
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

/// Runs a sipp UAC scenario `calls` times against `remote`, from `local_ip:local_port`, with
/// `-key` values. Returns when sipp exits (at most `timeout` + a few seconds).
pub fn run(
    scenario_file: &Path,
    remote: &str,
    local_ip: &str,
    local_port: u16,
    transport: &str,
    calls: u32,
    keys: &[(&str, &str)],
    timeout: Duration,
) -> SippRun {
    let dir = tempdir();
    let msg_file = dir.join("messages.log");
    let mut cmd = Command::new("sipp");
    cmd.arg(remote)
        .arg("-sf")
        .arg(scenario_file)
        .args(["-i", local_ip, "-p", &local_port.to_string()])
        .args(["-t", transport])
        .args(["-m", &calls.to_string()])
        .args(["-timeout", &format!("{}s", timeout.as_secs().max(1))])
        .args(["-timeout_error", "-nostdin", "-trace_msg"])
        .arg("-message_file")
        .arg(&msg_file)
        .args(["-trace_err", "-error_file"])
        .arg(dir.join("errors.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in keys {
        cmd.args(["-key", k, v]);
    }
    let out = cmd.output().expect("sipp runs (install sip-tester: make services)");
    let messages = std::fs::read_to_string(&msg_file).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    SippRun {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        messages,
    }
}

pub fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sbc-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
