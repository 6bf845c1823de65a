//! The command line: options, `--help` and `--version` texts.

use std::path::PathBuf;

use getopts::Options;
use log::LevelFilter;

use super::{ConfigError, RunMode, EX_CONFIG, EX_USAGE, PROGRAM};
use crate::logging::{self, LogTarget};

pub(super) fn options() -> Options {
    let mut opts = Options::new();
    opts.optflag("h", "help", "print this help and exit");
    opts.optflag("V", "version", "print the version and exit");
    opts.optflag(
        "",
        "check",
        "check the configuration and try every dependency once (MySQL, Redis, drachtio, hosts, socket \
         directory), print one line per check and exit: 0 all ok, 78 configuration, 69 unavailable",
    );
    opts.optflag("", "foreground", "stay in the foreground (the default; what systemd runs)");
    opts.optflag("", "daemon", "detach from the terminal and run in the background");
    opts.optopt("", "pidfile", "with --daemon: write the process id to PATH", "PATH");
    opts.optopt("", "log", "where log lines go: stderr (default) or syslog", "stderr|syslog");
    opts.optopt(
        "",
        "log-level",
        "trace, debug, info, warn, error, fatal or silent; overrides JAMBONES_LOGLEVEL (default info)",
        "LEVEL",
    );
    opts.optopt(
        "",
        "socket",
        "path of the sbcctl control socket; overrides SBC_SOCKET_PATH (default /tmp/sbc-sip-sidecar.sock)",
        "PATH",
    );
    opts
}

/// The `--help` text.
pub fn usage() -> String {
    let brief = format!(
        "Usage: {PROGRAM} [OPTIONS]\n\n\
         SIP sidecar of a jambonz SBC node: registrar, feature-server tracking, carrier\n\
         registration. Settings come from environment variables (see {PROGRAM}(8));\n\
         the options below override them."
    );
    format!(
        "{}\nExit status: 0 on a clean shutdown, {EX_USAGE} for a command-line mistake, \
         {EX_CONFIG} for a missing or malformed environment variable; with --check 0, {EX_CONFIG} or \
         69 (a dependency unavailable).\n",
        options().usage(&brief)
    )
}

/// The `--version` line.
pub fn version() -> String {
    format!("{PROGRAM} {}", env!("CARGO_PKG_VERSION"))
}

/// The command-line choices, before the environment is looked at.
pub(super) struct CommandLine {
    pub(super) run_mode: RunMode,
    pub(super) log_target: LogTarget,
    pub(super) log_level: Option<LevelFilter>,
    pub(super) socket_path: Option<PathBuf>,
    /// `--check`: run the preflight checks instead of the daemon.
    pub(super) check: bool,
}

pub(super) fn command_line(matches: &getopts::Matches) -> Result<CommandLine, ConfigError> {
    let daemon = matches.opt_present("daemon");
    let check = matches.opt_present("check");
    if check && daemon {
        return Err(ConfigError::Usage("--check runs in the foreground; leave out --daemon".into()));
    }
    if daemon && matches.opt_present("foreground") {
        return Err(ConfigError::Usage("--daemon and --foreground exclude each other".into()));
    }
    let pidfile = matches.opt_str("pidfile").map(PathBuf::from);
    if pidfile.is_some() && !daemon {
        return Err(ConfigError::Usage("--pidfile only makes sense with --daemon".into()));
    }
    let run_mode = if daemon { RunMode::Daemon { pidfile } } else { RunMode::Foreground };
    let log_target = match matches.opt_str("log") {
        None => LogTarget::Stderr,
        Some(name) => name
            .parse()
            .map_err(|_| ConfigError::Usage(format!("invalid --log {name:?}: expected stderr or syslog")))?,
    };
    let log_level = match matches.opt_str("log-level") {
        None => None,
        Some(name) => Some(logging::parse_level(&name).map_err(|_| {
            ConfigError::Usage(format!("invalid --log-level {name:?}: expected one of {}", logging::LEVEL_NAMES))
        })?),
    };
    let socket_path = match matches.opt_str("socket") {
        Some(path) if path.is_empty() => return Err(ConfigError::Usage("--socket needs a non-empty path".into())),
        other => other.map(PathBuf::from),
    };
    Ok(CommandLine { run_mode, log_target, log_level, socket_path, check })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    use log::LevelFilter;

    use crate::config::{parse, Command, ConfigError, RunMode};
    use crate::logging::LogTarget;

    #[test]
    fn command_line_overrides_environment() {
        let env = with(minimal_env(), &[("JAMBONES_LOGLEVEL", "debug"), ("SBC_SOCKET_PATH", "/env.sock")]);
        let c = run(&env, &["--log-level", "warn", "--socket", "/cli.sock", "--log", "syslog"]);
        assert_eq!(c.log_level, LevelFilter::Warn);
        assert_eq!(c.socket_path, PathBuf::from("/cli.sock"));
        assert_eq!(c.log_target, LogTarget::Syslog);

        // An environment value the command line replaces is not even looked at.
        let env = with(minimal_env(), &[("JAMBONES_LOGLEVEL", "verbose")]);
        let c = run(&env, &["--log-level=fatal"]);
        assert_eq!(c.log_level, LevelFilter::Error);
    }

    #[test]
    fn run_modes() {
        assert_eq!(run(&minimal_env(), &["--foreground"]).run_mode, RunMode::Foreground);
        assert_eq!(run(&minimal_env(), &["--daemon"]).run_mode, RunMode::Daemon { pidfile: None });
        assert_eq!(
            run(&minimal_env(), &["--daemon", "--pidfile", "/run/sbc.pid"]).run_mode,
            RunMode::Daemon { pidfile: Some("/run/sbc.pid".into()) }
        );
    }

    #[test]
    fn pidfile_without_daemon_is_a_usage_error() {
        let err = error(&minimal_env(), &["--pidfile", "/run/sbc.pid"]);
        assert!(matches!(err, ConfigError::Usage(_)));
        assert_eq!(err.exit_code(), 64);
        assert_eq!(err.to_string(), "--pidfile only makes sense with --daemon; try 'sbc-sidecar --help'");
    }

    #[test]
    fn usage_errors() {
        let env = minimal_env();
        let err = error(&env, &["--bogus"]);
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().starts_with("Unrecognized option: 'bogus'"), "{err}");
        let err = error(&env, &["--socket"]);
        assert!(err.to_string().starts_with("Argument to option 'socket' missing"), "{err}");
        let err = error(&env, &["--daemon", "--foreground"]);
        assert_eq!(err.exit_code(), 64);
        let err = error(&env, &["--log", "file"]);
        assert_eq!(err.to_string(), "invalid --log \"file\": expected stderr or syslog; try 'sbc-sidecar --help'");
        let err = error(&env, &["--log-level", "loud"]);
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().starts_with("invalid --log-level \"loud\""));
        // A program path passed by mistake is an unexpected argument, not silently skipped.
        let err = error(&env, &["/usr/bin/sbc-sidecar"]);
        assert_eq!(err.to_string(), "unexpected argument \"/usr/bin/sbc-sidecar\"; try 'sbc-sidecar --help'");
        // Command-line mistakes are found before environment ones.
        assert_eq!(error(&HashMap::new(), &["--bogus"]).exit_code(), 64);
    }

    #[test]
    fn help_and_version_need_no_environment() {
        let empty = HashMap::new();
        match parse(&empty, &args(&["--help"])).unwrap() {
            Command::Help(text) => {
                assert_eq!(text, usage());
                assert!(text.starts_with("Usage: sbc-sidecar [OPTIONS]"));
                for option in [
                    "--help",
                    "--version",
                    "--foreground",
                    "--daemon",
                    "--pidfile",
                    "--log ",
                    "--log-level",
                    "--socket",
                ] {
                    assert!(text.contains(option), "{option} missing from usage");
                }
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&empty, &args(&["-V"])).unwrap(),
            Command::Version(format!("sbc-sidecar {}", env!("CARGO_PKG_VERSION")))
        );
        assert!(matches!(parse(&empty, &args(&["-h"])).unwrap(), Command::Help(_)));
    }
}
