//! `sbc-sidecar --check`: checks an installation before it is started for real.
//!
//! The configuration has already been parsed (a mistake there ends the program with 78 before
//! this runs); then every dependency is tried once, each with a short timeout, and one line is
//! printed per check: `ok`, `warn` (worth knowing, does not stop a start) or `FAIL` with what
//! failed and how to fix it. The exit status is the worst outcome:
//!
//! * `0`: everything answered as the daemon needs it;
//! * `78` (`EX_CONFIG`): something only the configuration can fix — a login refused, a missing
//!   table, column or grant, a wrong drachtio secret, a host name that does not resolve, a
//!   socket directory that cannot be written, a TLS file;
//! * `69` (`EX_UNAVAILABLE`): a dependency did not answer (refused, timed out, or refused a
//!   write) — start it, or wait for it.
//!
//! Nothing is left behind: the Redis scratch key is deleted (and has a TTL of its own), the
//! MySQL trial statements match no row and are rolled back, the drachtio connection is closed
//! after authentication without adding a route, the probe file in the socket directory is
//! removed.

mod endpoints;
mod stores;

use std::fmt;
use std::time::Duration;

use crate::config::Config;
use crate::daemon::check_store_tls;
use crate::sysexits::{EX_CONFIG, EX_UNAVAILABLE};

/// Longest any one check waits for an answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a check failed, which decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Only a change of configuration (or of grants, schema, secret) fixes it.
    Config,
    /// The dependency did not answer.
    Unavailable,
}

impl Failure {
    pub fn exit_code(self) -> i32 {
        match self {
            Failure::Config => EX_CONFIG,
            Failure::Unavailable => EX_UNAVAILABLE,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    /// Does not stop a start, but the operator should know.
    Warn(String),
    Fail {
        failure: Failure,
        what: String,
        fix: String,
    },
}

impl Outcome {
    pub fn config(what: impl Into<String>, fix: impl Into<String>) -> Outcome {
        Outcome::Fail { failure: Failure::Config, what: what.into(), fix: fix.into() }
    }

    pub fn unavailable(what: impl Into<String>, fix: impl Into<String>) -> Outcome {
        Outcome::Fail { failure: Failure::Unavailable, what: what.into(), fix: fix.into() }
    }
}

/// One printed line: the name of the check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub check: &'static str,
    pub outcome: Outcome,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Ok(detail) => write!(f, "ok    {:<16} {detail}", self.check),
            Outcome::Warn(detail) => write!(f, "warn  {:<16} {detail}", self.check),
            Outcome::Fail { what, fix, .. } => write!(f, "FAIL  {:<16} {what}; fix: {fix}", self.check),
        }
    }
}

/// The exit status for a set of lines: the worst failure (configuration before
/// unavailability, since a wrong setting is the thing to fix first), else 0.
pub fn exit_code(lines: &[Line]) -> i32 {
    let failures: Vec<Failure> = lines
        .iter()
        .filter_map(|l| match l.outcome {
            Outcome::Fail { failure, .. } => Some(failure),
            _ => None,
        })
        .collect();
    if failures.contains(&Failure::Config) {
        EX_CONFIG
    } else if failures.contains(&Failure::Unavailable) {
        EX_UNAVAILABLE
    } else {
        0
    }
}

/// Runs every check in order and returns the lines.
pub fn checks(config: &Config) -> Vec<Line> {
    let mut lines = vec![Line { check: "configuration", outcome: Outcome::Ok("environment parsed".into()) }];
    let config = match check_store_tls(config.clone()) {
        Ok(c) => c,
        Err(e) => {
            lines.push(Line {
                check: "tls files",
                outcome: Outcome::config(e.to_string(), "fix the named file or variable"),
            });
            return lines;
        }
    };
    lines.extend(stores::mysql(&config));
    lines.push(stores::redis(&config));
    lines.push(endpoints::drachtio(&config));
    lines.extend(endpoints::hosts(&config));
    lines.push(endpoints::socket_dir(&config.socket_path));
    lines
}

/// `--check`: prints one line per check on stdout and returns the exit status.
pub fn run(config: &Config) -> i32 {
    let lines = checks(config);
    for line in &lines {
        println!("{line}");
    }
    let code = exit_code(&lines);
    match code {
        0 => println!("all checks passed"),
        EX_CONFIG => println!("configuration problems found (exit status {EX_CONFIG})"),
        _ => println!("dependencies unavailable (exit status {code})"),
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(outcome: Outcome) -> Line {
        Line { check: "x", outcome }
    }

    #[test]
    fn the_exit_status_is_the_worst_outcome() {
        assert_eq!(exit_code(&[line(Outcome::Ok("a".into())), line(Outcome::Warn("b".into()))]), 0);
        let down = line(Outcome::unavailable("refused", "start it"));
        let wrong = line(Outcome::config("denied", "grant it"));
        assert_eq!(exit_code(std::slice::from_ref(&down)), 69);
        assert_eq!(exit_code(&[down, wrong]), 78);
    }

    #[test]
    fn a_line_says_what_failed_and_the_fix() {
        let l = Line { check: "redis", outcome: Outcome::unavailable("127.0.0.1:1: refused", "start Redis") };
        assert_eq!(l.to_string(), "FAIL  redis            127.0.0.1:1: refused; fix: start Redis");
        let l = Line { check: "redis", outcome: Outcome::Ok("PING, SET/GET/DEL".into()) };
        assert_eq!(l.to_string(), "ok    redis            PING, SET/GET/DEL");
    }
}
