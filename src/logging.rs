//! Logging: one [`log::Log`] implementation with two backends, chosen once at start.
//!
//! * **stderr**: one line per record,
//!   `<RFC 3339 UTC time> <LEVEL> [<thread name>] <target>: <message>`. Used in the foreground
//!   on a terminal and under systemd when the journal should get the lines from stderr.
//! * **syslog**: RFC 3164 datagrams to the local syslog socket (`/dev/log`), ident
//!   `sbc-sidecar`, pid included, facility configurable (`SBC_LOG_FACILITY`).
//!
//! Levels use pino's names because that is what operators already put in `JAMBONES_LOGLEVEL`.
//! The level is a process-wide filter in the `log` crate (`log::set_max_level`), so it can be
//! changed at runtime ([`set_level`], used on SIGHUP) without touching the logger itself.
//!
//! The logger never panics and never blocks for long: a line that cannot be written is dropped.
//! Logging must not be the reason a SIP request goes unanswered.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Formatter3164, LoggerBackend};

mod escape;
pub use escape::escape;

/// The syslog ident (the `sbc-sidecar` in `sbc-sidecar[1234]: …`).
pub const IDENT: &str = "sbc-sidecar";

/// The pino level names accepted by `JAMBONES_LOGLEVEL` / `--log-level`, for error messages.
pub const LEVEL_NAMES: &str = "trace, debug, info, warn, error, fatal, silent";

/// How long one syslog write may wait for a busy syslog daemon before the line is dropped.
/// Without a limit a stalled journald would stall every thread that logs.
const SYSLOG_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// At most one reconnect attempt per this interval, so a vanished syslog socket costs one
/// failed `connect` per second rather than one per log line.
const SYSLOG_RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// Longer messages are cut: syslog daemons truncate or reject big datagrams anyway, and an
/// oversized datagram would otherwise be lost entirely (EMSGSIZE).
const SYSLOG_MAX_MESSAGE: usize = 16 * 1024;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Syslog,
}

impl LogTarget {
    pub fn name(self) -> &'static str {
        match self {
            LogTarget::Stderr => "stderr",
            LogTarget::Syslog => "syslog",
        }
    }
}

impl FromStr for LogTarget {
    type Err = LoggingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stderr" => Ok(LogTarget::Stderr),
            "syslog" => Ok(LogTarget::Syslog),
            _ => Err(LoggingError::UnknownTarget(s.to_string())),
        }
    }
}

/// The syslog facilities an operator may choose. Limited to the ones meant for local
/// programs; `kern`, `mail`, … belong to someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFacility {
    Daemon,
    User,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl LogFacility {
    /// The accepted names, for error messages.
    pub const NAMES: &'static str = "daemon, user, local0, local1, … local7";

    pub fn name(self) -> &'static str {
        match self {
            LogFacility::Daemon => "daemon",
            LogFacility::User => "user",
            LogFacility::Local0 => "local0",
            LogFacility::Local1 => "local1",
            LogFacility::Local2 => "local2",
            LogFacility::Local3 => "local3",
            LogFacility::Local4 => "local4",
            LogFacility::Local5 => "local5",
            LogFacility::Local6 => "local6",
            LogFacility::Local7 => "local7",
        }
    }

    fn to_syslog(self) -> syslog::Facility {
        use syslog::Facility as F;
        match self {
            LogFacility::Daemon => F::LOG_DAEMON,
            LogFacility::User => F::LOG_USER,
            LogFacility::Local0 => F::LOG_LOCAL0,
            LogFacility::Local1 => F::LOG_LOCAL1,
            LogFacility::Local2 => F::LOG_LOCAL2,
            LogFacility::Local3 => F::LOG_LOCAL3,
            LogFacility::Local4 => F::LOG_LOCAL4,
            LogFacility::Local5 => F::LOG_LOCAL5,
            LogFacility::Local6 => F::LOG_LOCAL6,
            LogFacility::Local7 => F::LOG_LOCAL7,
        }
    }
}

impl FromStr for LogFacility {
    type Err = LoggingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let facility = match s.trim().to_ascii_lowercase().as_str() {
            "daemon" => LogFacility::Daemon,
            "user" => LogFacility::User,
            "local0" => LogFacility::Local0,
            "local1" => LogFacility::Local1,
            "local2" => LogFacility::Local2,
            "local3" => LogFacility::Local3,
            "local4" => LogFacility::Local4,
            "local5" => LogFacility::Local5,
            "local6" => LogFacility::Local6,
            "local7" => LogFacility::Local7,
            _ => return Err(LoggingError::UnknownFacility(s.to_string())),
        };
        Ok(facility)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggingError {
    /// Not one of [`LEVEL_NAMES`].
    UnknownLevel(String),
    /// Not one of [`LogFacility::NAMES`].
    UnknownFacility(String),
    /// Neither `syslog` nor `stderr`.
    UnknownTarget(String),
    /// The syslog socket could not be connected.
    SyslogUnavailable { path: String, reason: String },
    /// A logger was already installed in this process.
    AlreadyInitialised,
}

impl fmt::Display for LoggingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoggingError::UnknownLevel(name) => {
                write!(f, "unknown log level {name:?}: expected one of {LEVEL_NAMES}")
            }
            LoggingError::UnknownFacility(name) => {
                write!(f, "unknown syslog facility {name:?}: expected one of {}", LogFacility::NAMES)
            }
            LoggingError::UnknownTarget(name) => {
                write!(f, "unknown log target {name:?}: expected syslog or stderr")
            }
            LoggingError::SyslogUnavailable { path, reason } => {
                write!(f, "cannot reach syslog at {path}: {reason}")
            }
            LoggingError::AlreadyInitialised => write!(f, "a logger is already installed"),
        }
    }
}

impl std::error::Error for LoggingError {}

/// Maps a pino level name to a `log` filter. pino's `fatal` has no `log` equivalent and is
/// treated as `error`; `silent` turns logging off.
pub fn parse_level(name: &str) -> Result<LevelFilter, LoggingError> {
    match name.trim().to_ascii_lowercase().as_str() {
        "trace" => Ok(LevelFilter::Trace),
        "debug" => Ok(LevelFilter::Debug),
        "info" => Ok(LevelFilter::Info),
        "warn" => Ok(LevelFilter::Warn),
        "error" | "fatal" => Ok(LevelFilter::Error),
        "silent" => Ok(LevelFilter::Off),
        _ => Err(LoggingError::UnknownLevel(name.to_string())),
    }
}

/// Changes the level of the installed logger; takes effect for every thread at once.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// The process logger. Build one with [`Logger::stderr`] / [`Logger::syslog`] /
/// [`Logger::syslog_at`] and install it with [`install`], or let [`init`] do both.
///
/// Level filtering is done by the `log` crate's global max level before a record reaches
/// [`Log::log`]; the logger itself writes whatever it is given.
pub struct Logger {
    backend: Backend,
}

enum Backend {
    Stderr,
    Syslog(Mutex<SyslogSink>),
}

impl Logger {
    pub fn stderr() -> Logger {
        Logger { backend: Backend::Stderr }
    }

    /// Connects to the system's syslog socket (`/dev/log`, or the BSD/macOS alternatives).
    pub fn syslog(facility: LogFacility) -> Result<Logger, LoggingError> {
        SyslogSink::connect(None, facility).map(Logger::from_sink)
    }

    /// Connects to the Unix datagram (or stream) socket at `path`, e.g. a socket a test bound.
    pub fn syslog_at(path: &Path, facility: LogFacility) -> Result<Logger, LoggingError> {
        SyslogSink::connect(Some(path.to_path_buf()), facility).map(Logger::from_sink)
    }

    fn from_sink(sink: SyslogSink) -> Logger {
        Logger { backend: Backend::Syslog(Mutex::new(sink)) }
    }

    /// Which backend this logger writes to.
    pub fn target(&self) -> LogTarget {
        match self.backend {
            Backend::Stderr => LogTarget::Stderr,
            Backend::Syslog(_) => LogTarget::Syslog,
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        let thread = std::thread::current();
        let thread_name = thread.name().unwrap_or("<unnamed>");
        // Escaped here, once, for both backends: messages carry values devices chose.
        let message = record.args().to_string();
        let message = escape(&message);
        match &self.backend {
            Backend::Stderr => {
                let line =
                    format_stderr_line(SystemTime::now(), record.level(), thread_name, record.target(), &message);
                write_stderr(&line);
            }
            Backend::Syslog(sink) => {
                // The timestamp, host and pid are the syslog header's job; the level is the
                // severity. What remains is who logged and what.
                let text = format!("[{thread_name}] {}: {message}", record.target());
                // A panic in another thread while it held the lock leaves a usable sink.
                let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
                sink.send(record.level(), truncate(text, SYSLOG_MAX_MESSAGE));
            }
        }
    }

    fn flush(&self) {
        match &self.backend {
            Backend::Stderr => {
                let _ = io::stderr().flush();
            }
            Backend::Syslog(sink) => {
                let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(writer) = sink.writer.as_mut() {
                    let _ = writer.backend.flush();
                }
            }
        }
    }
}

type SyslogWriter = syslog::Logger<LoggerBackend, Formatter3164>;

/// A syslog connection that reconnects by itself when the daemon goes away (rsyslog restart).
struct SyslogSink {
    /// `None`: the platform default (`/dev/log`).
    path: Option<PathBuf>,
    formatter: Formatter3164,
    /// `None` while disconnected; lines logged then are dropped.
    writer: Option<SyslogWriter>,
    last_connect_attempt: Instant,
}

impl SyslogSink {
    fn connect(path: Option<PathBuf>, facility: LogFacility) -> Result<SyslogSink, LoggingError> {
        let formatter = Formatter3164 {
            facility: facility.to_syslog(),
            // Local syslog adds the host name itself; sending it would duplicate it.
            hostname: None,
            process: IDENT.to_string(),
            pid: std::process::id(),
        };
        let writer = open_syslog(path.as_deref(), formatter.clone())?;
        Ok(SyslogSink { path, formatter, writer: Some(writer), last_connect_attempt: Instant::now() })
    }

    fn send(&mut self, level: Level, message: String) {
        if self.writer.is_none() {
            self.reconnect();
        }
        let Some(writer) = self.writer.as_mut() else {
            return; // still disconnected: the line is dropped
        };
        let result = write_syslog(writer, level, &message);
        if let Err(e) = result {
            if is_timeout(&e) {
                return; // the daemon is busy, not gone: drop this line, keep the connection
            }
            // The daemon went away (ECONNREFUSED after a restart): one reconnect, one retry.
            self.writer = None;
            self.reconnect();
            if let Some(writer) = self.writer.as_mut() {
                let _ = write_syslog(writer, level, &message);
            }
        }
    }

    fn reconnect(&mut self) {
        if self.last_connect_attempt.elapsed() < SYSLOG_RECONNECT_INTERVAL {
            return;
        }
        self.last_connect_attempt = Instant::now();
        self.writer = open_syslog(self.path.as_deref(), self.formatter.clone()).ok();
    }
}

fn open_syslog(path: Option<&Path>, formatter: Formatter3164) -> Result<SyslogWriter, LoggingError> {
    let result = match path {
        Some(path) => syslog::unix_custom(formatter, path),
        None => syslog::unix(formatter),
    };
    let writer = result.map_err(|e| LoggingError::SyslogUnavailable {
        path: path.map_or_else(|| "/dev/log".to_string(), |p| p.display().to_string()),
        reason: e.to_string(),
    })?;
    match &writer.backend {
        LoggerBackend::Unix(socket) => {
            let _ = socket.set_write_timeout(Some(SYSLOG_WRITE_TIMEOUT));
        }
        LoggerBackend::UnixStream(stream) => {
            let _ = stream.get_ref().set_write_timeout(Some(SYSLOG_WRITE_TIMEOUT));
        }
        _ => {}
    }
    Ok(writer)
}

fn write_syslog(writer: &mut SyslogWriter, level: Level, message: &str) -> syslog::Result<()> {
    match level {
        Level::Error => writer.err(message),
        Level::Warn => writer.warning(message),
        Level::Info => writer.info(message),
        // syslog has no severity below debug.
        Level::Debug | Level::Trace => writer.debug(message),
    }
}

fn is_timeout(error: &syslog::Error) -> bool {
    match error {
        syslog::Error::Write(e) | syslog::Error::Io(e) => {
            matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        }
        syslog::Error::Initialization(_) => false,
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …[truncated]");
    }
    text
}

/// One stderr line, newline included. Line breaks and other controls inside the message are
/// escaped ([`escape`]) so that one record stays one line (log collectors split on newlines).
fn format_stderr_line(time: SystemTime, level: Level, thread: &str, target: &str, message: &str) -> String {
    let message = escape(message);
    format!("{} {:<5} [{thread}] {target}: {message}\n", crate::clock::iso8601_millis(time), level)
}

/// Writes one whole line with a single `write_all` under the stderr lock, so lines from
/// different threads never interleave. Errors (closed stderr) are ignored: nowhere to report.
fn write_stderr(line: &str) {
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// Chooses the logger for `target`. When syslog is wanted but unreachable the result is a
/// stderr logger plus the warning to print, so the daemon still starts and still logs.
fn choose(target: LogTarget, syslog_path: Option<&Path>, facility: LogFacility) -> (Logger, Option<String>) {
    match target {
        LogTarget::Stderr => (Logger::stderr(), None),
        LogTarget::Syslog => {
            let result = match syslog_path {
                Some(path) => Logger::syslog_at(path, facility),
                None => Logger::syslog(facility),
            };
            match result {
                Ok(logger) => (logger, None),
                Err(e) => (Logger::stderr(), Some(format!("{e}; logging to stderr instead"))),
            }
        }
    }
}

/// Installs `logger` as the process logger at `level`. Fails only if a logger is installed
/// already.
pub fn install(logger: Logger, level: LevelFilter) -> Result<LogTarget, LoggingError> {
    let target = logger.target();
    log::set_boxed_logger(Box::new(logger)).map_err(|_| LoggingError::AlreadyInitialised)?;
    set_level(level);
    Ok(target)
}

/// Installs the process logger: stderr, or syslog at `/dev/log` with `facility`. Returns the
/// backend actually in use — stderr when syslog was asked for but could not be reached (one
/// warning line is written to stderr then, whatever the level).
pub fn init(target: LogTarget, facility: LogFacility, level: LevelFilter) -> Result<LogTarget, LoggingError> {
    init_with(target, None, facility, level)
}

/// Like [`init`] with the syslog backend, connected to the socket at `path` instead of
/// `/dev/log`.
pub fn init_syslog_at(path: &Path, facility: LogFacility, level: LevelFilter) -> Result<LogTarget, LoggingError> {
    init_with(LogTarget::Syslog, Some(path), facility, level)
}

fn init_with(
    target: LogTarget,
    syslog_path: Option<&Path>,
    facility: LogFacility,
    level: LevelFilter,
) -> Result<LogTarget, LoggingError> {
    let (logger, warning) = choose(target, syslog_path, facility);
    let installed = install(logger, level)?;
    if let Some(warning) = warning {
        // Written directly: the operator must see it even at level `error` or `silent`.
        let thread = std::thread::current();
        write_stderr(&format_stderr_line(
            SystemTime::now(),
            Level::Warn,
            thread.name().unwrap_or("<unnamed>"),
            module_path!(),
            &warning,
        ));
    }
    Ok(installed)
}

/// Reads `JAMBONES_LOGLEVEL` from an environment file (`KEY=value` lines, as systemd's
/// `EnvironmentFile=` takes them; `export`, quotes and comments allowed). `Ok(None)` when the
/// file has no such line. Used on SIGHUP, so an operator can change the level of a running
/// daemon by editing /etc/default/sbc-sidecar and reloading the unit.
pub fn level_from_env_file(path: &Path) -> Result<Option<LevelFilter>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some(value) = line.strip_prefix("JAMBONES_LOGLEVEL=") else { continue };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if value.is_empty() {
            continue;
        }
        // The last assignment wins, as in the shell and in systemd.
        found = Some(parse_level(value).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "sbc-sidecar-logging-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn log_info(logger: &Logger, message: &str) {
        logger.log(
            &Record::builder().args(format_args!("{message}")).level(Level::Info).target("sbc_sidecar::test").build(),
        );
    }

    #[test]
    fn pino_level_names_map_to_log_filters() {
        assert_eq!(parse_level("trace"), Ok(LevelFilter::Trace));
        assert_eq!(parse_level("debug"), Ok(LevelFilter::Debug));
        assert_eq!(parse_level("info"), Ok(LevelFilter::Info));
        assert_eq!(parse_level("warn"), Ok(LevelFilter::Warn));
        assert_eq!(parse_level("error"), Ok(LevelFilter::Error));
        assert_eq!(parse_level("fatal"), Ok(LevelFilter::Error));
        assert_eq!(parse_level("silent"), Ok(LevelFilter::Off));
        assert_eq!(parse_level(" INFO "), Ok(LevelFilter::Info));
    }

    #[test]
    fn unknown_level_is_an_error_naming_the_choices() {
        let err = parse_level("verbose").unwrap_err();
        assert_eq!(err, LoggingError::UnknownLevel("verbose".into()));
        assert_eq!(
            err.to_string(),
            "unknown log level \"verbose\": expected one of trace, debug, info, warn, error, fatal, silent"
        );
    }

    #[test]
    fn facilities_by_name() {
        assert_eq!("daemon".parse(), Ok(LogFacility::Daemon));
        assert_eq!("user".parse(), Ok(LogFacility::User));
        assert_eq!("local0".parse(), Ok(LogFacility::Local0));
        assert_eq!("LOCAL7".parse(), Ok(LogFacility::Local7));
        assert!("kern".parse::<LogFacility>().is_err());
        assert!("local8".parse::<LogFacility>().is_err());
        for name in ["daemon", "user", "local3"] {
            assert_eq!(name.parse::<LogFacility>().unwrap().name(), name);
        }
    }

    #[test]
    fn targets_by_name() {
        assert_eq!("syslog".parse(), Ok(LogTarget::Syslog));
        assert_eq!("stderr".parse(), Ok(LogTarget::Stderr));
        assert!("file".parse::<LogTarget>().is_err());
    }

    #[test]
    fn stderr_line_has_time_level_thread_target_and_message() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let line = format_stderr_line(t, Level::Warn, "auth-1", "sbc_sidecar::registrar", "hi");
        assert_eq!(line, "2023-11-14T22:13:20.123Z WARN  [auth-1] sbc_sidecar::registrar: hi\n");
    }

    #[test]
    fn a_record_with_line_breaks_stays_one_line() {
        let line = format_stderr_line(UNIX_EPOCH, Level::Info, "main", "t", "a\nb\r\nc");
        assert_eq!(line, "1970-01-01T00:00:00.000Z INFO  [main] t: a\\nb\\r\\nc\n");
    }

    #[test]
    fn long_syslog_messages_are_cut_on_a_character_boundary() {
        let text = "é".repeat(10);
        let cut = truncate(text, 5);
        assert_eq!(cut, "éé …[truncated]");
        assert_eq!(truncate("short".into(), 100), "short");
    }

    #[test]
    fn syslog_backend_sends_ident_pid_and_message_to_the_socket() {
        let dir = TempDir::new();
        let path = dir.0.join("log.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        let logger = Logger::syslog_at(&path, LogFacility::Local3).unwrap();
        assert_eq!(logger.target(), LogTarget::Syslog);
        log_info(&logger, "registrar started workers=8");

        let mut buf = [0u8; 4096];
        let n = receiver.recv(&mut buf).unwrap();
        let datagram = String::from_utf8_lossy(&buf[..n]);
        // local3 = 19, info = 6: priority 19 * 8 + 6.
        assert!(datagram.starts_with("<158>"), "{datagram}");
        assert!(datagram.contains(&format!("sbc-sidecar[{}]", std::process::id())), "{datagram}");
        assert!(datagram.contains("sbc_sidecar::test: registrar started workers=8"), "{datagram}");
    }

    #[test]
    fn syslog_lines_carry_no_raw_control_or_bidi_characters() {
        let dir = TempDir::new();
        let path = dir.0.join("log.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let logger = Logger::syslog_at(&path, LogFacility::Daemon).unwrap();
        log_info(&logger, "username=a\u{1b}[2Jb\u{202e}c\nforged=1");
        let mut buf = [0u8; 4096];
        let n = receiver.recv(&mut buf).unwrap();
        let datagram = String::from_utf8_lossy(&buf[..n]);
        assert!(datagram.contains("username=a\\x1b[2Jb\\u{202e}c\\nforged=1"), "{datagram}");
        assert!(!datagram.contains(['\u{1b}', '\u{202e}', '\n']), "{datagram:?}");
    }

    #[test]
    fn a_vanished_syslog_socket_drops_lines_without_panicking() {
        let dir = TempDir::new();
        let path = dir.0.join("log.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let logger = Logger::syslog_at(&path, LogFacility::Daemon).unwrap();
        drop(receiver);
        std::fs::remove_file(&path).unwrap();
        for _ in 0..3 {
            log_info(&logger, "nobody is listening");
        }
        logger.flush();
    }

    #[test]
    fn syslog_that_cannot_be_reached_falls_back_to_stderr_with_a_warning() {
        let dir = TempDir::new();
        let missing = dir.0.join("no-such.sock");
        let (logger, warning) = choose(LogTarget::Syslog, Some(&missing), LogFacility::Daemon);
        assert_eq!(logger.target(), LogTarget::Stderr);
        let warning = warning.unwrap();
        assert!(warning.contains("cannot reach syslog at"), "{warning}");
        assert!(warning.ends_with("logging to stderr instead"), "{warning}");

        let (logger, warning) = choose(LogTarget::Stderr, None, LogFacility::Daemon);
        assert_eq!(logger.target(), LogTarget::Stderr);
        assert!(warning.is_none());
    }

    #[test]
    fn sighup_level_comes_from_the_last_jambones_loglevel_line() {
        let dir = TempDir::new();
        let file = dir.0.join("default");
        std::fs::write(&file, "# comment\nJAMBONES_LOGLEVEL=info\nexport JAMBONES_LOGLEVEL=\"debug\"\nOTHER=x\n")
            .unwrap();
        assert_eq!(level_from_env_file(&file), Ok(Some(LevelFilter::Debug)));
        std::fs::write(&file, "#JAMBONES_LOGLEVEL=debug\n").unwrap();
        assert_eq!(level_from_env_file(&file), Ok(None));
        std::fs::write(&file, "JAMBONES_LOGLEVEL=loud\n").unwrap();
        assert!(level_from_env_file(&file).is_err());
        assert!(level_from_env_file(&dir.0.join("missing")).is_err());
    }
}
