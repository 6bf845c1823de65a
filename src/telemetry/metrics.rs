//! statsd metrics (spec 10.1), in the Datadog dialect the Node program's `hot-shots` client
//! wrote: `<prefix><name>:<value>|<type>[|@<rate>][|#tag1:v,tag2]`, one metric per datagram.
//!
//! * On only when `ENABLE_METRICS=1`. Otherwise [`Metrics`] is an empty handle: every method
//!   is one branch on `None` and formats nothing.
//! * Global tags (`STATS_TAGS`) come first, then the metric's own; a metric tag replaces a
//!   global tag with the same key, as in hot-shots.
//! * `STATS_SAMPLE_RATE` below 1: like hot-shots, each metric — gauges included, hot-shots
//!   makes no difference — is sent with that probability and carries `|@<rate>` so the
//!   server can scale counts back up. A rate of 0 sends nothing.
//! * Sending never blocks and never fails the caller. UDP goes through one non-blocking
//!   socket shared by all threads: `UdpSocket::send_to` takes `&self` and each call is one
//!   datagram handed to the kernel, so concurrent senders need no lock. A failed send is
//!   counted; the log says so when sends start failing and when they work again.
//! * `STATS_PROTOCOL=tcp` is supported: newline-terminated lines over one TCP connection,
//!   owned by a small thread (`statsd-tcp`) fed through a bounded channel, reconnecting at
//!   most once a second. The thread ends when the last `Metrics` clone is dropped.
//! * Not reproduced: `STATS_MAX_BUFFER_SIZE` / `STATS_BUFFER_FLUSH_INTERVAL` (hot-shots'
//!   batching of several metrics per datagram). Our rates are a few datagrams per REGISTER, so
//!   each metric is sent at once; the values are accepted and ignored.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use log::{info, warn};

/// How statsd datagrams travel (`STATS_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsProtocol {
    Udp,
    Tcp,
}

pub const DEFAULT_HOST: &str = "127.0.0.1";
/// hot-shots' default port.
pub const DEFAULT_PORT: u16 = 8125;

/// Lines waiting for the TCP sender thread; beyond that they are dropped (and counted).
const TCP_QUEUE: usize = 4096;
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A statsd server that stops reading must not stall the sender thread for long.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed connect or write, lines are dropped for this long before trying again.
const TCP_RETRY: Duration = Duration::from_secs(1);

/// The metric names of spec 10.1.
pub const REGISTRATION_CACHED_RESPONSE_TIME: &str = "sbc.registration.cached.response_time";
pub const REGISTRATION_TOTAL_RESPONSE_TIME: &str = "sbc.registration.total.response_time";
pub const HOOK_RESPONSE_TIME: &str = "app.hook.response_time";
pub const FEATURE_SERVERS: &str = "featureservers";
pub const RTP_SERVERS: &str = "rtpservers";
pub const USERS_COUNT: &str = "sbc.users.count";

/// statsd settings, filled by `config`; `enabled` is false unless `ENABLE_METRICS=1`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    pub enabled: bool,
    /// `STATS_HOST`, default `127.0.0.1`; resolved once, at start.
    pub host: String,
    /// `STATS_PORT`, default 8125.
    pub port: u16,
    /// `STATS_PROTOCOL`, default udp.
    pub protocol: StatsProtocol,
    /// `STATS_PREFIX`, prepended as it is to every name.
    pub prefix: String,
    /// `STATS_TAGS`, added to every metric.
    pub tags: Vec<String>,
    /// `STATS_SAMPLE_RATE`, 0 to 1, default 1.
    pub sample_rate: f64,
}

impl MetricsSettings {
    /// Metrics off.
    pub fn disabled() -> MetricsSettings {
        MetricsSettings {
            enabled: false,
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            protocol: StatsProtocol::Udp,
            prefix: String::new(),
            tags: Vec::new(),
            sample_rate: 1.0,
        }
    }
}

/// Why metrics could not be started. The caller logs it and goes on with
/// [`Metrics::disabled`]: statsd is never a reason not to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsError {
    /// `STATS_HOST` could not be resolved.
    Resolve { host: String, port: u16, error: String },
    /// `STATS_HOST` resolved to no address.
    NoAddress { host: String, port: u16 },
    /// The local UDP socket could not be created.
    Socket(String),
    /// The TCP sender thread could not be started.
    Spawn(String),
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::Resolve { host, port, error } => {
                write!(f, "cannot resolve statsd host {host}:{port}: {error}")
            }
            MetricsError::NoAddress { host, port } => write!(f, "statsd host {host}:{port} has no address"),
            MetricsError::Socket(e) => write!(f, "cannot create the statsd socket: {e}"),
            MetricsError::Spawn(e) => write!(f, "cannot start the statsd-tcp thread: {e}"),
        }
    }
}

impl std::error::Error for MetricsError {}

/// The handle every role uses to send metrics. Cheap to clone and usable from any thread.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    client: Option<Arc<Client>>,
}

#[derive(Debug)]
struct Client {
    prefix: String,
    global_tags: Vec<String>,
    sample_rate: f64,
    transport: Transport,
    health: Arc<Health>,
}

#[derive(Debug)]
enum Transport {
    Udp { socket: UdpSocket, target: SocketAddr },
    Tcp { lines: Sender<String> },
}

impl Metrics {
    /// Metrics off: every call returns at once.
    pub fn disabled() -> Metrics {
        Metrics { client: None }
    }

    /// Resolves the statsd host and opens the socket (or starts the TCP sender). With
    /// `enabled` false this is [`Metrics::disabled`].
    pub fn new(settings: &MetricsSettings) -> Result<Metrics, MetricsError> {
        if !settings.enabled {
            return Ok(Metrics::disabled());
        }
        let target = resolve(&settings.host, settings.port)?;
        let health = Arc::new(Health { target, failing: AtomicBool::new(false), failures: AtomicU64::new(0) });
        let transport = match settings.protocol {
            StatsProtocol::Udp => {
                let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let socket = UdpSocket::bind(local).map_err(|e| MetricsError::Socket(e.to_string()))?;
                // A full socket buffer drops the datagram instead of stalling a SIP thread.
                socket.set_nonblocking(true).map_err(|e| MetricsError::Socket(e.to_string()))?;
                Transport::Udp { socket, target }
            }
            StatsProtocol::Tcp => {
                let (lines, rx) = bounded(TCP_QUEUE);
                let thread_health = Arc::clone(&health);
                thread::Builder::new()
                    .name("statsd-tcp".into())
                    .spawn(move || run_tcp(target, rx, &thread_health))
                    .map_err(|e| MetricsError::Spawn(e.to_string()))?;
                Transport::Tcp { lines }
            }
        };
        info!(
            "metrics: sending statsd to {target} over {} prefix={:?} tags={:?} sample_rate={}",
            match settings.protocol {
                StatsProtocol::Udp => "udp",
                StatsProtocol::Tcp => "tcp",
            },
            settings.prefix,
            settings.tags.join(","),
            settings.sample_rate
        );
        Ok(Metrics {
            client: Some(Arc::new(Client {
                prefix: settings.prefix.clone(),
                global_tags: settings.tags.clone(),
                sample_rate: settings.sample_rate,
                transport,
                health,
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.client.is_some()
    }

    /// The final response to a REGISTER was sent `elapsed` after it arrived: histogram
    /// `sbc.registration.cached.response_time` when answered from the cache, else
    /// `sbc.registration.total.response_time`, tag `status:<code>`.
    pub fn registration_response_time(&self, cached: bool, status: u16, elapsed: Duration) {
        let Some(client) = &self.client else { return };
        let name = if cached { REGISTRATION_CACHED_RESPONSE_TIME } else { REGISTRATION_TOTAL_RESPONSE_TIME };
        client.send(name, millis(elapsed), 'h', &[&format!("status:{status}")]);
    }

    /// The registration webhook (or `clients` lookup) gave its verdict after `elapsed`:
    /// histogram `app.hook.response_time`, tags `hook_type:auth` and `status:200|403`.
    pub fn hook_response_time(&self, status: u16, elapsed: Duration) {
        let Some(client) = &self.client else { return };
        client.send(HOOK_RESPONSE_TIME, millis(elapsed), 'h', &["hook_type:auth", &format!("status:{status}")]);
    }

    /// Gauge `featureservers`: feature servers this node tracks.
    pub fn feature_servers(&self, count: usize) {
        self.gauge(FEATURE_SERVERS, count as u64, &[]);
    }

    /// Gauge `rtpservers`: RTP servers this node tracks.
    pub fn rtp_servers(&self, count: usize) {
        self.gauge(RTP_SERVERS, count as u64, &[]);
    }

    /// Gauge `sbc.users.count`: distinct registered users, every 30 s.
    pub fn users_count(&self, count: u64) {
        self.gauge(USERS_COUNT, count, &[]);
    }

    /// Any histogram (`|h`).
    pub fn histogram(&self, name: &str, value: u64, tags: &[&str]) {
        if let Some(client) = &self.client {
            client.send(name, value, 'h', tags);
        }
    }

    /// Any counter (`|c`).
    pub fn count(&self, name: &str, value: u64, tags: &[&str]) {
        if let Some(client) = &self.client {
            client.send(name, value, 'c', tags);
        }
    }

    /// Any gauge (`|g`).
    pub fn gauge(&self, name: &str, value: u64, tags: &[&str]) {
        if let Some(client) = &self.client {
            client.send(name, value, 'g', tags);
        }
    }

    /// Metrics that could not be sent so far (0 when disabled).
    pub fn send_failures(&self) -> u64 {
        self.client.as_ref().map_or(0, |c| c.health.failures.load(Ordering::Relaxed))
    }
}

/// Whole milliseconds, rounded, as the Node program's `time.toFixed(0)`.
fn millis(elapsed: Duration) -> u64 {
    (elapsed.as_secs_f64() * 1000.0).round() as u64
}

impl Client {
    fn send(&self, name: &str, value: u64, kind: char, tags: &[&str]) {
        let sampled = self.sample_rate < 1.0;
        // Decided before any formatting: a sampled-out metric costs one random number.
        if sampled && rand::random::<f64>() >= self.sample_rate {
            return;
        }
        let line = self.format(name, value, kind, tags);
        match &self.transport {
            Transport::Udp { socket, target } => match socket.send_to(line.as_bytes(), target) {
                Ok(_) => self.health.ok(),
                Err(e) => self.health.failed(&e),
            },
            Transport::Tcp { lines } => match lines.try_send(line) {
                // Success or failure of the write is recorded by the TCP thread.
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.health.failed(&"tcp send queue full"),
                Err(TrySendError::Disconnected(_)) => self.health.failed(&"tcp sender thread stopped"),
            },
        }
    }

    fn format(&self, name: &str, value: u64, kind: char, tags: &[&str]) -> String {
        let mut line = String::with_capacity(self.prefix.len() + name.len() + 64);
        line.push_str(&self.prefix);
        line.push_str(name);
        // Writing to a String cannot fail.
        let _ = write!(line, ":{value}|{kind}");
        if self.sample_rate < 1.0 {
            let _ = write!(line, "|@{}", self.sample_rate);
        }
        let mut separator = "|#";
        let globals = self.global_tags.iter().map(String::as_str).filter(|g| !tags.iter().any(|t| same_key(g, t)));
        for tag in globals.chain(tags.iter().copied()) {
            line.push_str(separator);
            line.push_str(tag);
            separator = ",";
        }
        line
    }
}

/// Two `key:value` tags with the same key (hot-shots' override rule; a tag without a key,
/// or with `:` first, never matches).
fn same_key(a: &str, b: &str) -> bool {
    match (a.find(':'), b.find(':')) {
        (Some(i), Some(j)) if i > 0 && j > 0 => a[..i] == b[..j],
        _ => false,
    }
}

/// IPv4 first, as hot-shots' default `udp4` socket.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, MetricsError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| MetricsError::Resolve { host: host.to_string(), port, error: e.to_string() })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| MetricsError::NoAddress { host: host.to_string(), port })
}

/// Send failures, logged once per change between "working" and "failing".
#[derive(Debug)]
struct Health {
    target: SocketAddr,
    failing: AtomicBool,
    failures: AtomicU64,
}

impl Health {
    fn ok(&self) {
        // A plain load first: the common case writes nothing shared.
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            info!(
                "metrics: sending to statsd works again target={} failed_total={}",
                self.target,
                self.failures.load(Ordering::Relaxed)
            );
        }
    }

    fn failed(&self, error: &dyn fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            warn!(
                "metrics: cannot send to statsd target={} error={error}; failures are counted without logging until a send works",
                self.target
            );
        }
    }
}

/// The `statsd-tcp` thread: one connection, re-opened after a failure (at most once per
/// [`TCP_RETRY`]); lines that arrive while it is down are dropped and counted.
fn run_tcp(target: SocketAddr, lines: Receiver<String>, health: &Health) {
    let mut stream: Option<TcpStream> = None;
    let mut retry_at = Instant::now();
    for mut line in lines.iter() {
        if stream.is_none() {
            if Instant::now() < retry_at {
                health.failed(&"not connected");
                continue;
            }
            match TcpStream::connect_timeout(&target, TCP_CONNECT_TIMEOUT) {
                Ok(s) => {
                    // Both only fail on a closed socket, which the write below reports.
                    let _ = s.set_write_timeout(Some(TCP_WRITE_TIMEOUT));
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(e) => {
                    retry_at = Instant::now() + TCP_RETRY;
                    health.failed(&e);
                    continue;
                }
            }
        }
        if let Some(s) = stream.as_mut() {
            line.push('\n');
            match s.write_all(line.as_bytes()) {
                Ok(()) => health.ok(),
                Err(e) => {
                    stream = None;
                    retry_at = Instant::now() + TCP_RETRY;
                    health.failed(&e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(prefix: &str, tags: &[&str], sample_rate: f64) -> Client {
        let target: SocketAddr = ([127, 0, 0, 1], 9).into();
        Client {
            prefix: prefix.into(),
            global_tags: tags.iter().map(|t| t.to_string()).collect(),
            sample_rate,
            transport: Transport::Udp { socket: UdpSocket::bind("127.0.0.1:0").unwrap(), target },
            health: Arc::new(Health { target, failing: AtomicBool::new(false), failures: AtomicU64::new(0) }),
        }
    }

    #[test]
    fn lines_follow_hot_shots() {
        let c = client("", &[], 1.0);
        assert_eq!(c.format("featureservers", 3, 'g', &[]), "featureservers:3|g");
        assert_eq!(
            c.format("app.hook.response_time", 12, 'h', &["hook_type:auth", "status:200"]),
            "app.hook.response_time:12|h|#hook_type:auth,status:200"
        );
        let c = client("sbc.", &["env:prod", "region:eu"], 0.5);
        assert_eq!(
            c.format("sbc.users.count", 7, 'g', &["region:us", "x"]),
            "sbc.sbc.users.count:7|g|@0.5|#env:prod,region:us,x"
        );
    }

    #[test]
    fn tag_keys_match_only_real_keys() {
        assert!(same_key("status:200", "status:403"));
        assert!(!same_key("status", "status:403"));
        assert!(!same_key(":a", ":b"));
        assert!(!same_key("a:1", "b:1"));
    }

    #[test]
    fn response_times_are_rounded_milliseconds() {
        assert_eq!(millis(Duration::from_micros(12_499)), 12);
        assert_eq!(millis(Duration::from_micros(12_500)), 13);
        assert_eq!(millis(Duration::ZERO), 0);
    }

    #[test]
    fn disabled_metrics_do_nothing() {
        let m = Metrics::new(&MetricsSettings::disabled()).unwrap();
        assert!(!m.is_enabled());
        m.registration_response_time(false, 200, Duration::from_millis(3));
        m.users_count(3);
        assert_eq!(m.send_failures(), 0);
    }

    #[test]
    fn an_unresolvable_host_is_an_error_not_a_panic() {
        let settings =
            MetricsSettings { enabled: true, host: "no-such-host.invalid".into(), ..MetricsSettings::disabled() };
        assert!(matches!(Metrics::new(&settings), Err(MetricsError::Resolve { .. } | MetricsError::NoAddress { .. })));
    }
}
