//! A carrier played by sipp: a UAS scenario in the background that records every message it
//! receives and sends (`-trace_msg`), and the parser of that record.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use super::sipp;
use super::wait_until;

/// One SIP message from a sipp `-trace_msg` log.
#[derive(Debug, Clone)]
pub struct Traced {
    /// Seconds (wall clock, microseconds) when sipp logged it.
    pub at: f64,
    pub received: bool,
    pub text: String,
}

impl Traced {
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.text
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }

    pub fn cseq(&self) -> u64 {
        self.header("CSeq").and_then(|c| c.split_whitespace().next().map(str::to_string)).unwrap().parse().unwrap()
    }

    pub fn is_request(&self, method: &str) -> bool {
        self.first_line().starts_with(&format!("{method} "))
    }
}

/// A sipp UAS running in the background on `ip:port`; killed when dropped.
pub struct Peer {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    pub ip: String,
    pub port: u16,
}

impl Peer {
    pub fn start(scenario: &str, ip: &str, keys: &[(&str, &str)]) -> Peer {
        Peer::start_on(scenario, ip, sipp::free_port(ip), keys)
    }

    /// `status` and `reason` fill the `@STATUS@ @REASON@` of a template scenario (sipp checks
    /// status codes at load time, before `-key` values apply); other keys go to `-key`.
    pub fn start_on(scenario: &str, ip: &str, port: u16, keys: &[(&str, &str)]) -> Peer {
        Peer::start_with(scenario, ip, port, keys, &[])
    }

    /// [`Peer::start_on`] with more sipp arguments (e.g. `-deadcall_wait 0`).
    pub fn start_with(scenario: &str, ip: &str, port: u16, keys: &[(&str, &str)], args: &[&str]) -> Peer {
        let dir = sipp::tempdir();
        let log = dir.join("messages.log");
        let mut scenario_file = sipp::scenario(scenario);
        let fixed = |name: &str| keys.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        if let (Some(status), Some(reason)) = (fixed("status"), fixed("reason")) {
            let text = std::fs::read_to_string(&scenario_file).unwrap();
            scenario_file = dir.join(scenario);
            std::fs::write(&scenario_file, text.replace("@STATUS@", status).replace("@REASON@", reason)).unwrap();
        }
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf")
            .arg(&scenario_file)
            .args(["-i", ip, "-p", &port.to_string(), "-t", "u1"])
            .args(["-mp", &sipp::media_port(ip).to_string()])
            // sipp ends by itself even if a test forgets it.
            .args(["-timeout", "120s", "-nostdin", "-trace_msg"])
            .arg("-message_file")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.args(args);
        for (k, v) in keys.iter().filter(|(k, _)| *k != "status" && *k != "reason") {
            cmd.args(["-key", k, v]);
        }
        let child = crate::services::spawn_sipp(&mut cmd);
        let peer = Peer { child, dir, log, ip: ip.to_string(), port };
        assert!(
            wait_until(Duration::from_secs(5), || UdpSocket::bind((ip, port)).is_err()),
            "sipp listens on {ip}:{port}"
        );
        peer
    }

    pub fn messages(&self) -> Vec<Traced> {
        parse_trace(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn requests(&self, method: &str) -> Vec<Traced> {
        self.messages().into_iter().filter(|m| m.received && m.is_request(method)).collect()
    }

    pub fn wait_for_requests(&self, method: &str, n: usize, timeout: Duration) -> Vec<Traced> {
        let ok = wait_until(timeout, || self.requests(method).len() >= n);
        let got = self.requests(method);
        assert!(ok, "sipp on {}:{} got {} {method} of {n}:\n{:#?}", self.ip, self.port, got.len(), self.messages());
        got
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Splits a sipp message log into messages. Entries start with a line of dashes followed by
/// `YYYY-MM-DD HH:MM:SS.uuuuuu`, then `UDP message received [n] bytes :` or
/// `UDP message sent (n bytes):`, a blank line and the SIP text.
pub fn parse_trace(log: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    let mut current: Option<Traced> = None;
    for line in log.lines() {
        if line.starts_with("-----------------------------------------------") {
            if let Some(m) = current.take() {
                out.push(m);
            }
            let stamp = line.trim_start_matches('-').trim();
            if let Some(at) = parse_stamp(stamp) {
                current = Some(Traced { at, received: false, text: String::new() });
            }
            continue;
        }
        let Some(m) = current.as_mut() else { continue };
        if m.text.is_empty() && (line.contains("message received") || line.contains("message sent")) {
            m.received = line.contains("received");
            continue;
        }
        if m.text.is_empty() && line.trim().is_empty() {
            continue;
        }
        m.text.push_str(line.trim_end_matches('\r'));
        m.text.push('\n');
    }
    out.extend(current);
    out.retain(|m| !m.text.is_empty());
    out
}

fn parse_stamp(stamp: &str) -> Option<f64> {
    let (date, time) = stamp.split_once(' ')?;
    let d: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.')?;
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    // days since an arbitrary epoch, good enough to order timestamps across midnight
    let days = d[0] * 372 + d[1] * 31 + d[2];
    Some((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) as f64 + format!("0.{frac}").parse::<f64>().ok()?)
}
