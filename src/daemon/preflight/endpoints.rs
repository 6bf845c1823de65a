//! The drachtio, statsd/InfluxDB and socket-directory checks of `--check`.
//!
//! drachtio: one TCP connection to the admin port, one `authenticate` with `DRACHTIO_SECRET`
//! (drachtio-protocol.md §2.1), the answer read, the connection closed. No route is added, so
//! drachtio never hands this connection a request, and a running sidecar (Node or ours) keeps
//! all of its traffic.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::{Line, Outcome, CHECK_TIMEOUT};
use crate::config::Config;
use crate::drachtio::frame::{self, FrameDecoder};
use crate::drachtio::message::{self, ReplyStatus, ServerMessage};

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.next()
}

pub(super) fn drachtio(config: &Config) -> Line {
    Line { check: "drachtio", outcome: authenticate(config) }
}

fn authenticate(config: &Config) -> Outcome {
    let c = &config.drachtio;
    let target = format!("{}:{}", c.host, c.port);
    let Some(addr) = resolve(&c.host, c.port) else {
        return Outcome::config(format!("{target}: no address for {}", c.host), "check DRACHTIO_HOST");
    };
    let unavailable =
        |what: String| Outcome::unavailable(what, "start drachtio-server, or check DRACHTIO_HOST and DRACHTIO_PORT");
    let mut stream = match TcpStream::connect_timeout(&addr, CHECK_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return unavailable(format!("{target}: connect: {e}")),
    };
    if let Err(e) = stream.set_read_timeout(Some(CHECK_TIMEOUT)).and(stream.set_write_timeout(Some(CHECK_TIMEOUT))) {
        return unavailable(format!("{target}: {e}"));
    }
    let id = message::new_message_id();
    let framed = frame::encode_unchecked(&message::authenticate(&id, c.secret.expose()));
    if let Err(e) = stream.write_all(&framed) {
        return unavailable(format!("{target}: sending authenticate: {e}"));
    }
    let mut decoder = FrameDecoder::default();
    let mut buf = [0u8; 4096];
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    if let Ok(ServerMessage::Response(reply)) = ServerMessage::parse(&payload) {
                        if reply.reply_to != id {
                            continue;
                        }
                        return match reply.status {
                            ReplyStatus::Ok => {
                                let version = reply.tokens.get(1).map(String::as_str).unwrap_or("?");
                                Outcome::Ok(format!("{target}: authenticated (drachtio {version})"))
                            }
                            ReplyStatus::No | ReplyStatus::Nok => Outcome::config(
                                format!("{target}: authentication refused: {}", reply.tokens.join("|")),
                                "set DRACHTIO_SECRET to the <secret> of drachtio.conf.xml (or drachtio's --secret)",
                            ),
                        };
                    }
                }
                Ok(None) => break,
                Err(e) => return unavailable(format!("{target}: not a drachtio admin port: {e}")),
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return unavailable(format!("{target}: closed the connection without answering")),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return unavailable(format!("{target}: no answer to authenticate: {e}")),
        }
    }
}

/// statsd (when `ENABLE_METRICS=1`) and InfluxDB: their names resolve. (statsd is UDP and
/// InfluxDB is written in batches: neither refusing is noticed until later, so a name that
/// resolves is what can be checked before start.)
pub(super) fn hosts(config: &Config) -> Vec<Line> {
    let m = &config.metrics;
    let statsd = if !m.enabled {
        Outcome::Ok("metrics off (ENABLE_METRICS is not 1)".into())
    } else {
        match resolve(&m.host, m.port) {
            Some(addr) => Outcome::Ok(format!("{}:{} resolves to {addr}", m.host, m.port)),
            None => Outcome::config(format!("no address for {}", m.host), "check STATS_HOST"),
        }
    };
    let influx = match resolve(&config.time_series_host, config.time_series_port) {
        Some(addr) => {
            Outcome::Ok(format!("{}:{} resolves to {addr}", config.time_series_host, config.time_series_port))
        }
        None => {
            Outcome::config(format!("no address for {}", config.time_series_host), "check JAMBONES_TIME_SERIES_HOST")
        }
    };
    vec![Line { check: "statsd", outcome: statsd }, Line { check: "influxdb", outcome: influx }]
}

/// The socket's directory takes a new file; a socket someone listens on is worth a warning.
pub(super) fn socket_dir(path: &Path) -> Line {
    Line { check: "control socket", outcome: socket_outcome(path) }
}

fn socket_outcome(path: &Path) -> Outcome {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fix = "create the directory and make it writable for the daemon's user, or set SBC_SOCKET_PATH";
    if !dir.is_dir() {
        return Outcome::config(format!("{}: no such directory", dir.display()), fix);
    }
    let probe = dir.join(format!(".sbc-sidecar-check-{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => return Outcome::config(format!("{}: cannot create a file: {e}", dir.display()), fix),
    }
    let listening = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
        && std::os::unix::net::UnixStream::connect(path).is_ok();
    if listening {
        return Outcome::Warn(format!(
            "{}: another process listens on it (a running sidecar?); the daemon will not start until it stops, \
             or give SBC_SOCKET_PATH another path",
            path.display()
        ));
    }
    Outcome::Ok(format!("{} writable", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_directory_is_a_configuration_problem() {
        match socket_outcome(Path::new("/nonexistent-sbc-dir/x.sock")) {
            Outcome::Fail { failure, what, .. } => {
                assert_eq!(failure, super::super::Failure::Config);
                assert!(what.contains("no such directory"), "{what}");
            }
            other => panic!("{other:?}"),
        }
    }
}
