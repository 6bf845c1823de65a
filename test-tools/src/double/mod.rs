//! A drachtio-server double for tests: the server side of the drachtio control protocol,
//! byte-compatible with the captures in `docs/spec/drachtio-capture*.txt`, bridged to real SIP over
//! UDP and TCP so that sipp can play the phones, carriers and feature servers.
//!
//! Use it from a test with
//!
//! ```
//! use sbc_test_tools::double::{Double, DoubleConfig};
//!
//! let double = Double::start(DoubleConfig::default())?;
//! // The app under test connects to `double.admin_addr()` with the secret `cymru`; phones and
//! // carriers (sipp) send SIP to `double.sip_addr()`, over UDP or TCP.
//! assert_eq!(double.hostports(), format!("tcp/{0},udp/{0}", double.sip_addr()));
//! double.stop();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Threads: one accepts app connections, one reads each app connection, one reads the SIP UDP
//! socket, one accepts SIP TCP connections, one reads each of them, one runs the timers. They
//! share one [`state::Core`] behind one mutex.
//!
//! Set `DRACHTIO_DOUBLE_TRACE=1` to see every frame and SIP message on stderr.
#![allow(dead_code)]

mod apps;
mod build_request;
mod build_response;
mod client_txn;
mod control;
mod headers;
mod ids;
mod server_txn;
mod sip_text;
mod sip_transport;
mod state;
mod udp_socket;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use state::{Settings, Shared};

/// How a double is set up. `Default` gives an admin port and a SIP port picked by the system on
/// 127.0.0.1, secret `cymru`, drachtio's 32 s transaction timeout and the captured version.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// Control port address; port 0 picks a free one.
    pub admin: SocketAddr,
    pub sip_ip: IpAddr,
    /// 0 picks a port that is free for both UDP and TCP.
    pub sip_port: u16,
    pub secret: String,
    /// Timer F: when a request sent by the app gets its synthetic 408 (tests shorten it).
    pub uac_timeout: Duration,
    /// The `git describe` string sent in the authenticate reply.
    pub version: String,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        DoubleConfig {
            admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            sip_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sip_port: 0,
            secret: "cymru".to_string(),
            uac_timeout: Duration::from_secs(32),
            version: "v0.9.10-1-g9c2dd4cb6a".to_string(),
        }
    }
}

/// Which way a control frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by an app to the double.
    FromApp,
    /// Sent by the double to an app.
    ToApp,
}

/// A running double. Dropping it stops it, like [`Double::stop`].
pub struct Double {
    shared: Arc<Shared>,
}

impl Double {
    pub fn start(cfg: DoubleConfig) -> io::Result<Double> {
        let admin = TcpListener::bind(cfg.admin)?;
        let (sip_tcp, sip_udp) = bind_sip(cfg.sip_ip, cfg.sip_port)?;
        let sip_addr = sip_udp.local_addr()?;
        let settings = Settings {
            secret: cfg.secret,
            version: cfg.version,
            admin_addr: admin.local_addr()?,
            sip_addr,
            hostports: format!("tcp/{sip_addr},udp/{sip_addr}"),
            uac_timeout: cfg.uac_timeout,
        };
        let shared = Arc::new(Shared::new(settings, sip_udp));
        shared.spawn("admin", move |shared| control::run_listener(shared, admin));
        shared.spawn("sip-udp", sip_transport::run_udp);
        shared.spawn("sip-tcp-accept", move |shared| sip_transport::run_tcp_listener(shared, sip_tcp));
        shared.spawn("timers", run_timers);
        Ok(Double { shared })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.shared.settings.admin_addr
    }

    /// The SIP address; the same port serves UDP and TCP.
    pub fn sip_addr(&self) -> SocketAddr {
        self.shared.settings.sip_addr
    }

    /// `tcp/<ip>:<port>,udp/<ip>:<port>`, as sent in the authenticate reply.
    pub fn hostports(&self) -> String {
        self.shared.settings.hostports.clone()
    }

    /// Closes the listeners and every app and SIP connection, and waits for all threads. The
    /// admin address can then be bound again by a new double (to test reconnects).
    pub fn stop(self) {
        // Drop does the work.
    }

    /// Apps currently connected that sent the right secret.
    pub fn app_connections(&self) -> usize {
        self.shared.lock().apps.authenticated_count()
    }

    /// Verbs routed by connected apps (as they sent them), each once.
    pub fn routes(&self) -> Vec<String> {
        self.shared.lock().apps.routed_verbs()
    }

    /// Waits until a connected app has routed `verb`; false on timeout.
    pub fn wait_for_route(&self, verb: &str, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if self.routes().iter().any(|v| v == verb) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every control frame payload received from and sent to apps, in order.
    pub fn frames_log(&self) -> Vec<(Direction, Vec<u8>)> {
        self.shared.lock().apps.frames()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// Binds the SIP UDP socket and TCP listener on one port (with port 0: one free for both).
fn bind_sip(ip: IpAddr, port: u16) -> io::Result<(TcpListener, UdpSocket)> {
    if port != 0 {
        let udp = UdpSocket::bind((ip, port))?;
        udp_socket::enlarge_receive_buffer(&udp);
        udp_socket::report_icmp_errors(&udp);
        return Ok((TcpListener::bind((ip, port))?, udp));
    }
    for _ in 0..100 {
        let tcp = TcpListener::bind((ip, 0))?;
        let picked = tcp.local_addr()?.port();
        if let Ok(udp) = UdpSocket::bind((ip, picked)) {
            udp_socket::enlarge_receive_buffer(&udp);
            udp_socket::report_icmp_errors(&udp);
            return Ok((tcp, udp));
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, "no port free for both UDP and TCP"))
}

/// Timer resolution: retransmissions land within this of their due time.
const TIMER_TICK: Duration = Duration::from_millis(10);

fn run_timers(shared: Arc<Shared>) {
    while !shared.is_stopping() {
        std::thread::sleep(TIMER_TICK);
        let now = Instant::now();
        let mut core = shared.lock();
        client_txn::tick(&shared, &mut core, now);
        server_txn::expire(&mut core, now);
    }
}

static TRACE: OnceLock<AtomicBool> = OnceLock::new();

fn trace_flag() -> &'static AtomicBool {
    TRACE.get_or_init(|| AtomicBool::new(std::env::var_os("DRACHTIO_DOUBLE_TRACE").is_some_and(|v| v != "0")))
}

/// Turns the stderr trace on or off (the `drachtio-double` program turns it on).
pub fn set_trace(on: bool) {
    trace_flag().store(on, Ordering::Relaxed);
}

/// One trace line on stderr, when tracing is on.
fn trace(args: std::fmt::Arguments<'_>) {
    if trace_flag().load(Ordering::Relaxed) {
        eprintln!("drachtio-double: {args}");
    }
}
