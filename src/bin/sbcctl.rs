//! `sbcctl`: the operator's client for the sidecar's CLI socket (spec 9.2).
//!
//! One command per run: connect, write one JSON line, read one reply line, print it for a
//! human (or raw with `--json`), exit 0 on success, 1 when the command or the connection
//! failed, 2 on bad usage.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use getopts::Options;
use serde_json::{Map, Value};

use sbc_sidecar::ctl::protocol::{
    action, parse_ban_ip, request_line, validate_server, DEFAULT_SOCKET_PATH, PACKAGE_SOCKET_PATH, SOCKET_PATH_ENV,
};

const HELP: &str = "\
SBC Runtime CLI

Usage:
  sbcctl <command> [options]

Feature Server Commands:
  sbcctl fs drain <ip>      Drain server (remove from pool)
  sbcctl fs undrain <ip>    Undrain server (add back to pool)
  sbcctl fs drained         Show drained servers
  sbcctl fs active          Show available servers
  sbcctl fs list            Show all servers with status

Configuration Commands:
  sbcctl set <key> <value>  Set runtime config
  sbcctl get <key>          Get runtime config
  sbcctl list               Show all runtime config

Status Commands:
  sbcctl status             Show drachtio connection, counts and regbot role

Regbot Commands:
  sbcctl regbot list        Show outbound registrations and their state

Brute-force Defence Commands:
  sbcctl bans               Show sources banned after failed authentications
  sbcctl bans clear <ip>    Lift the ban on a source

Options:
  --socket PATH             CLI socket (default: $SBC_SOCKET_PATH, else
                            /run/sbc-sidecar/sbc-sidecar.sock if it exists,
                            else /tmp/sbc-sip-sidecar.sock)
  --json                    Print the server's JSON reply as it is
  --timeout SECONDS         Wait this long for the reply (default 5)

Examples:
  sbcctl fs drain 192.168.1.10
  sbcctl fs active
";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply longer than this is not from our server.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// Why a run failed, and so its exit code.
enum Failure {
    /// Bad usage: exit 2.
    Usage(String),
    /// The command or the connection failed: exit 1.
    Command(String),
    /// The failed reply was already printed (`--json`): exit 1 without a message.
    Reported,
}

impl Failure {
    fn exit(self) -> ExitCode {
        match self {
            Failure::Usage(m) => {
                eprintln!("Error: {m}");
                ExitCode::from(2)
            }
            Failure::Command(m) => {
                eprintln!("Error: {m}");
                ExitCode::from(1)
            }
            Failure::Reported => ExitCode::from(1),
        }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn failed(message: impl Into<String>) -> Failure {
    Failure::Command(message.into())
}

struct Client {
    socket: PathBuf,
    timeout: Duration,
    json: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = Options::new();
    opts.optopt("", "socket", "CLI socket path", "PATH");
    opts.optflag("", "json", "print the raw JSON reply");
    opts.optopt("", "timeout", "reply timeout in seconds", "SECONDS");
    opts.optflag("h", "help", "show this help");
    let matches = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => return usage(e.to_string()).exit(),
    };
    if matches.opt_present("help") || matches.free.is_empty() {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let timeout = match matches.opt_str("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(t) => match parse_timeout(&t) {
            Some(d) => d,
            None => return usage(format!("--timeout needs a positive number of seconds, not {t}")).exit(),
        },
    };
    let socket = match matches.opt_str("socket") {
        Some(p) => PathBuf::from(p),
        None => match default_socket_path(
            std::env::var_os(SOCKET_PATH_ENV).map(PathBuf::from),
            Path::new(PACKAGE_SOCKET_PATH),
        ) {
            Ok(path) => path,
            Err(f) => return f.exit(),
        },
    };
    let client = Client { socket, timeout, json: matches.opt_present("json") };
    match run(&client, &matches.free) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}

fn parse_timeout(s: &str) -> Option<Duration> {
    let secs: f64 = s.parse().ok()?;
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

/// `SBC_SOCKET_PATH`, else the Debian package's path when the package's run directory is
/// there, else the Node sidecar's default.
///
/// Never the `/tmp` default when the package's path cannot be examined (its directory is
/// mode 0750): that would talk to whoever created `/tmp/sbc-sip-sidecar.sock`, which any local
/// user can. The operator is told why instead.
fn default_socket_path(env: Option<PathBuf>, package: &Path) -> Result<PathBuf, Failure> {
    if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p);
    }
    let run_dir = package.parent().unwrap_or(package);
    match (package.try_exists(), run_dir.try_exists()) {
        (Ok(true), _) | (Ok(false), Ok(true)) => Ok(package.to_path_buf()),
        (Ok(false), Ok(false)) => Ok(PathBuf::from(DEFAULT_SOCKET_PATH)),
        (Err(e), _) | (_, Err(e)) => Err(failed(format!(
            "Cannot use the socket {}: {} (run sbcctl as root or as a member of SBC_CTL_GROUP, or give --socket)",
            package.display(),
            os_message(&e)
        ))),
    }
}

fn run(client: &Client, args: &[String]) -> Result<(), Failure> {
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0).unwrap_or_default() {
        "fs" => match arg(1) {
            None => Err(usage("fs command requires an action")),
            Some("drain") => drain(client, arg(2), true),
            Some("undrain") => drain(client, arg(2), false),
            Some("drained") => fs_drained(client),
            Some("active") => fs_active(client),
            Some("list") => fs_list(client),
            Some(other) => {
                Err(usage(format!("Unknown fs command: {other}. Use: drain, undrain, drained, active, list")))
            }
        },
        "set" => match (arg(1), arg(2)) {
            (Some(key), Some(value)) => set(client, key, value),
            _ => Err(usage("set requires key and value")),
        },
        "get" => match arg(1) {
            Some(key) => get(client, key),
            None => Err(usage("get requires key")),
        },
        "list" => list(client),
        "status" => status(client),
        "regbot" => match arg(1) {
            None => Err(usage("regbot command requires an action. Use: list")),
            Some("list") => regbot_list(client),
            Some(other) => Err(usage(format!("Unknown regbot command: {other}. Use: list"))),
        },
        "bans" => match arg(1) {
            None | Some("list") => bans_list(client),
            Some("clear") => match arg(2) {
                Some(ip) => bans_clear(client, ip),
                None => Err(usage("clear requires an IP address")),
            },
            Some(other) => Err(usage(format!("Unknown bans command: {other}. Use: list, clear"))),
        },
        other => Err(usage(format!("Unknown command: {other}. Run without arguments for help."))),
    }
}

fn drain(client: &Client, server: Option<&str>, drain: bool) -> Result<(), Failure> {
    let (act, verb, fallback) = if drain {
        (action::FS_DRAIN, "Drained", "Failed to drain server")
    } else {
        (action::FS_UNDRAIN, "Undrained", "Failed to undrain server")
    };
    let Some(server) = server else {
        let name = if drain { "drain" } else { "undrain" };
        return Err(usage(format!("{name} requires server IP address")));
    };
    // Checked here too, so that a typo is reported even when the daemon is down.
    validate_server(server).map_err(failed)?;
    let Some(reply) = client.call(act, fields([("server", Value::from(server))]), fallback)? else {
        return Ok(());
    };
    let server = reply.get("server").and_then(Value::as_str).unwrap_or(server);
    let drained = string_list(&reply, "drained")?;
    println!("✓ {verb} {server}");
    println!("Drained servers: [{}]", drained.join(", "));
    Ok(())
}

fn fs_drained(client: &Client) -> Result<(), Failure> {
    let Some(reply) = client.call(action::FS_DRAINED, Map::new(), "Failed to retrieve drained servers")? else {
        return Ok(());
    };
    let drained = string_list(&reply, "drained")?;
    if drained.is_empty() {
        println!("No servers are currently drained");
    } else {
        println!("Drained servers:");
        for s in drained {
            println!("  🔴 {s}");
        }
    }
    Ok(())
}

fn fs_active(client: &Client) -> Result<(), Failure> {
    let Some(reply) = client.call(action::FS_AVAILABLE, Map::new(), "Failed to get active servers")? else {
        return Ok(());
    };
    let available = string_list(&reply, "available")?;
    if available.is_empty() {
        println!("No active feature servers found");
    } else {
        println!("Available feature servers:");
        for s in available {
            println!("  🟢 {s}");
        }
    }
    Ok(())
}

fn fs_list(client: &Client) -> Result<(), Failure> {
    let Some(reply) = client.call(action::FS_LIST, Map::new(), "Failed to list servers")? else {
        return Ok(());
    };
    let servers = reply.get("servers").and_then(Value::as_array).ok_or_else(invalid_response)?;
    let drained = string_list(&reply, "drained")?;
    if servers.is_empty() {
        println!("No servers configured");
        if !drained.is_empty() {
            println!("Orphaned drained servers:");
            for s in drained {
                println!("  🔴 {s} (orphaned)");
            }
        }
        return Ok(());
    }
    println!("Feature servers:");
    for entry in servers {
        let server = entry.get("server").and_then(Value::as_str).ok_or_else(invalid_response)?;
        let status = entry.get("status").and_then(Value::as_str).ok_or_else(invalid_response)?;
        let icon = if status == "drained" { "🔴" } else { "🟢" };
        println!("  {icon} {server} ({status})");
    }
    Ok(())
}

fn set(client: &Client, key: &str, value: &str) -> Result<(), Failure> {
    let request = fields([("key", Value::from(key)), ("value", Value::from(value))]);
    let Some(reply) = client.call(action::SET, request, "Failed to set runtime config")? else {
        return Ok(());
    };
    println!("✓ {} = {}", reply_key(&reply, key), js_json(reply.get("value")));
    Ok(())
}

fn get(client: &Client, key: &str) -> Result<(), Failure> {
    let Some(reply) = client.call(action::GET, fields([("key", Value::from(key))]), "Failed to get runtime config")?
    else {
        return Ok(());
    };
    println!("{} = {}", reply_key(&reply, key), js_json(reply.get("value")));
    Ok(())
}

fn list(client: &Client) -> Result<(), Failure> {
    let Some(reply) = client.call(action::LIST, Map::new(), "Failed to list runtime config")? else {
        return Ok(());
    };
    let config = reply.get("config").and_then(Value::as_object).ok_or_else(invalid_response)?;
    println!("Runtime Configuration:");
    if config.is_empty() {
        println!("  (no configuration set)");
    }
    for (key, value) in config {
        println!("  {key} = {value}");
    }
    Ok(())
}

fn status(client: &Client) -> Result<(), Failure> {
    let Some(reply) = client.call(action::STATUS, Map::new(), "Failed to get status")? else {
        return Ok(());
    };
    let drachtio = reply.get("drachtio").and_then(Value::as_object).ok_or_else(invalid_response)?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("unknown").to_string();
    if drachtio.get("connected").and_then(Value::as_bool).unwrap_or(false) {
        println!("drachtio: connected, version {}", text(drachtio.get("version")));
        println!("  hostports: {}", text(drachtio.get("hostports")));
        println!("  local hostports: {}", text(drachtio.get("local_hostports")));
    } else {
        println!("drachtio: not connected");
    }
    let uptime = reply.get("uptime_s").and_then(Value::as_u64).unwrap_or(0);
    println!("uptime: {}", format_uptime(uptime));
    let count = |name: &str| match reply.get(name).and_then(Value::as_u64) {
        Some(n) => n.to_string(),
        None => "unknown (redis unavailable)".to_string(),
    };
    println!("registered users: {}", count("registered_users"));
    println!("feature servers: {}", count("feature_servers"));
    println!("rtp servers: {}", count("rtp_servers"));
    let regbot = reply.get("regbot").and_then(Value::as_object).ok_or_else(invalid_response)?;
    let n = |name: &str| regbot.get(name).and_then(Value::as_u64).unwrap_or(0);
    println!(
        "regbot: {} ({} gateways, {} registered, {} failing)",
        text(regbot.get("role")),
        n("total"),
        n("registered"),
        n("failing")
    );
    // The counts above are then the last known ones, not the regbot's answer.
    if let Some(e) = reply.get("regbot_error").and_then(Value::as_str) {
        println!("  regbot query failed: {e}");
    }
    print_registrar_sections(&reply);
    if let Some(auth) = reply.get("auth").and_then(Value::as_object) {
        print_auth(auth);
    }
    Ok(())
}

/// The sections that explain failing registrations (absent from daemons without them).
fn print_registrar_sections(reply: &Map<String, Value>) {
    if let Some(stores) = reply.get("stores").and_then(Value::as_object) {
        for (name, s) in stores {
            let for_s = s.get("for_s").and_then(Value::as_u64).unwrap_or(0);
            let state = if s.get("reachable").and_then(Value::as_bool).unwrap_or(false) {
                format!("reachable (for {})", format_uptime(for_s))
            } else {
                format!("DOWN (for {})", format_uptime(for_s))
            };
            println!("{name}: {state}");
            if let Some(e) = s.get("last_error").and_then(Value::as_str) {
                let ago = s
                    .get("last_error_ms")
                    .and_then(Value::as_u64)
                    .map(|at| {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(at);
                        format!(" ({} ago)", format_uptime(now.saturating_sub(at) / 1000))
                    })
                    .unwrap_or_default();
                println!("  last error{ago}: {e}");
            }
        }
    }
    if let Some(breakers) = reply.get("webhooks").and_then(|w| w.get("open_breakers")).and_then(Value::as_array) {
        if breakers.is_empty() {
            println!("webhook breakers open: none");
        } else {
            println!("webhook breakers open: {}", breakers.len());
            for b in breakers {
                println!(
                    "  account {}: {} timeouts in a row, next try in {} s",
                    b.get("account_sid").and_then(Value::as_str).unwrap_or("?"),
                    b.get("timeouts").and_then(Value::as_u64).unwrap_or(0),
                    b.get("retry_in_s").and_then(Value::as_u64).unwrap_or(0)
                );
            }
        }
    }
    if let Some(n) = reply.get("bans").and_then(|b| b.get("active")).and_then(Value::as_u64) {
        println!("banned sources: {n}");
    }
    if let Some(register) = reply.get("register").and_then(Value::as_object) {
        let window = register.get("window_s").and_then(Value::as_u64).unwrap_or(60);
        let classes: Vec<String> = register
            .iter()
            .filter(|(k, _)| k.as_str() != "window_s")
            .map(|(k, v)| format!("{k}={}", v.as_u64().unwrap_or(0)))
            .collect();
        println!("REGISTER answers, last {window} s: {}", classes.join(" "));
    }
}

/// The auth workers' part of `status`: how many authentications run and wait, and who holds
/// them.
fn print_auth(auth: &Map<String, Value>) {
    let n = |name: &str| auth.get(name).and_then(Value::as_u64).unwrap_or(0);
    println!(
        "auth: {} running (at most {}, {} per account while others wait), {} waiting, {} threads (peak {}), {} refused",
        n("in_flight"),
        n("max_in_flight"),
        n("account_share"),
        n("waiting"),
        n("threads"),
        n("peak_threads"),
        n("refused")
    );
    for account in auth.get("accounts").and_then(Value::as_array).into_iter().flatten() {
        let n = |name: &str| account.get(name).and_then(Value::as_u64).unwrap_or(0);
        let sid = account.get("account_sid").and_then(Value::as_str).unwrap_or("?");
        println!("  account {sid}: {} running, {} waiting", n("in_flight"), n("waiting"));
    }
}

/// Column headers of `regbot list`, in the order of [`regbot_row`].
const REGBOT_COLUMNS: [&str; 8] =
    ["STATE", "CARRIER", "GATEWAY", "AOR", "TARGET", "LAST STATUS", "FAILURES", "NEXT REFRESH"];

fn regbot_list(client: &Client) -> Result<(), Failure> {
    let Some(reply) = client.call(action::REGBOT_LIST, Map::new(), "Failed to list regbots")? else {
        return Ok(());
    };
    let role = reply.get("role").and_then(Value::as_str).ok_or_else(invalid_response)?;
    let regbots = reply.get("regbots").and_then(Value::as_array).ok_or_else(invalid_response)?;
    println!("Regbot role: {role}");
    if regbots.is_empty() {
        println!("No outbound registrations");
        return Ok(());
    }
    if reply.get("mode").and_then(Value::as_str) == Some("every") {
        // Every SBC registers: this SBC's own regbots, then how many SBCs of the cluster hold
        // a registration for each carrier.
        let mut rows = vec![cluster_columns()];
        for entry in regbots {
            let own = regbot_row(entry).ok_or_else(invalid_response)?;
            let sbcs = match entry.get("cluster_sbcs") {
                Some(Value::Array(list)) => list.len().to_string(),
                _ => "?".to_string(),
            };
            let [a, b, c, d, e, f, g, h] = own;
            rows.push([a, b, c, d, e, f, g, h, sbcs]);
        }
        print!("{}", aligned(&rows));
        return Ok(());
    }
    let mut rows = vec![REGBOT_COLUMNS.map(str::to_string)];
    for entry in regbots {
        rows.push(regbot_row(entry).ok_or_else(invalid_response)?);
    }
    print!("{}", aligned(&rows));
    Ok(())
}

/// [`REGBOT_COLUMNS`] and the cluster's count (`SBC_REGBOT_MODE=every`).
fn cluster_columns() -> [String; 9] {
    let [a, b, c, d, e, f, g, h] = REGBOT_COLUMNS.map(str::to_string);
    [a, b, c, d, e, f, g, h, "SBCS REGISTERED".to_string()]
}

/// One `regbot-list` entry as table cells; `-` for what is unknown or not scheduled.
fn regbot_row(entry: &Value) -> Option<[String; 8]> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_string);
    let last_status = match entry.get("last_status")? {
        Value::Null => "-".to_string(),
        v => v.as_str()?.to_string(),
    };
    let next_refresh = match entry.get("next_refresh_s")? {
        Value::Null => "-".to_string(),
        v => format!("in {}s", v.as_u64()?),
    };
    Some([
        text("state")?,
        text("carrier")?,
        text("gateway")?,
        text("aor")?,
        text("target")?,
        last_status,
        entry.get("failures")?.as_u64()?.to_string(),
        next_refresh,
    ])
}

/// Column headers of `bans`.
const BAN_COLUMNS: [&str; 3] = ["IP", "FAILURES", "REMAINING"];

fn bans_list(client: &Client) -> Result<(), Failure> {
    let Some(reply) = client.call(action::BANS, Map::new(), "Failed to list bans")? else {
        return Ok(());
    };
    let bans = reply.get("bans").and_then(Value::as_array).ok_or_else(invalid_response)?;
    if bans.is_empty() {
        println!("No sources are banned");
        return Ok(());
    }
    let mut rows = vec![BAN_COLUMNS.map(str::to_string)];
    for entry in bans {
        rows.push(ban_row(entry).ok_or_else(invalid_response)?);
    }
    print!("{}", aligned(&rows));
    Ok(())
}

/// One `bans` entry as table cells.
fn ban_row(entry: &Value) -> Option<[String; 3]> {
    Some([
        entry.get("ip")?.as_str()?.to_string(),
        entry.get("failures")?.as_u64()?.to_string(),
        format!("{}s", entry.get("remaining_s")?.as_u64()?),
    ])
}

fn bans_clear(client: &Client, ip: &str) -> Result<(), Failure> {
    // Checked here too, so that a typo is reported even when the daemon is down.
    let addr = parse_ban_ip(ip).map_err(failed)?;
    let request = fields([("ip", Value::from(addr.to_string()))]);
    if client.call(action::BANS_CLEAR, request, "Failed to lift the ban")?.is_some() {
        println!("✓ Lifted the ban on {addr}");
    }
    Ok(())
}

/// Left-aligned columns two spaces apart, without trailing blanks. Widths count characters,
/// not bytes, so that a non-ASCII AOR does not shift the columns after it.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

impl Client {
    /// Sends one command and returns its successful reply, or `None` when `--json` already
    /// printed the raw line. A failed reply becomes its `error` text, or `fallback`.
    fn call(
        &self,
        action: &str,
        request: Map<String, Value>,
        fallback: &str,
    ) -> Result<Option<Map<String, Value>>, Failure> {
        let line = self.exchange(&request_line(action, request))?;
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(reply)) => reply,
            _ => return Err(invalid_response()),
        };
        let ok = reply.get("success").and_then(Value::as_bool) == Some(true) && !reply.contains_key("error");
        if self.json {
            println!("{}", line.trim_end());
            return if ok { Ok(None) } else { Err(Failure::Reported) };
        }
        if ok {
            return Ok(Some(reply));
        }
        match reply.get("error").and_then(Value::as_str) {
            Some(e) if !e.is_empty() => Err(failed(e)),
            _ => Err(failed(fallback)),
        }
    }

    /// Writes the request and reads one reply line, all within the timeout.
    fn exchange(&self, request: &str) -> Result<String, Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| failed(format!("Connection failed: {} ({})", os_message(&e), self.socket.display())))?;
        let io_failure = |e: io::Error| {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                failed("Command timed out")
            } else {
                failed(format!("Connection failed: {}", os_message(&e)))
            }
        };
        stream.set_write_timeout(Some(self.timeout)).map_err(io_failure)?;
        if let Err(e) = stream.write_all(request.as_bytes()) {
            // A daemon that refuses us writes its reason and closes before reading: read it.
            if !matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                return Err(io_failure(e));
            }
        }
        let mut reply: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(failed("Command timed out"));
            }
            stream.set_read_timeout(Some(left)).map_err(io_failure)?;
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_failure(e)),
            };
            if n == 0 {
                // Closed without a newline: whatever came is the whole reply.
                if reply.is_empty() {
                    return Err(failed("Connection closed by server"));
                }
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
            if let Some(end) = reply.iter().position(|b| *b == b'\n') {
                reply.truncate(end);
                break;
            }
            if reply.len() > MAX_REPLY_BYTES {
                return Err(invalid_response());
            }
        }
        String::from_utf8(reply).map_err(|_| invalid_response())
    }
}

fn invalid_response() -> Failure {
    failed("Invalid response from server")
}

/// The OS error text without Rust's ` (os error N)` suffix.
fn os_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn string_list(reply: &Map<String, Value>, name: &str) -> Result<Vec<String>, Failure> {
    let list = reply.get(name).and_then(Value::as_array).ok_or_else(invalid_response)?;
    Ok(list.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect())
}

fn reply_key(reply: &Map<String, Value>, asked: &str) -> String {
    reply.get("key").and_then(Value::as_str).unwrap_or(asked).to_string()
}

/// `JSON.stringify` of a value as the Node client printed it: `undefined` when absent.
fn js_json(value: Option<&Value>) -> String {
    match value {
        Some(v) => v.to_string(),
        None => "undefined".to_string(),
    }
}
