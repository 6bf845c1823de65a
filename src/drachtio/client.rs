//! The drachtio client: a reader thread that owns the connection (mio event loop, reconnects,
//! authentication, routes, pings, dispatch) and a writer thread that writes whole frames
//! (see [`super::writer`]).
//!
//! Replies are correlated by message id and UAC responses by transaction id. The writer tells
//! the reader which message ids await a reply *before* it writes them, through a channel and a
//! `mio::Waker`; the reader drains that channel before it looks at any frame, so a reply can
//! never arrive before its registration is known.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{debug, error, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};
use rand::Rng;

use super::connect_error::ConnectError;
use super::frame::FrameDecoder;
use super::message::{self, Reply, ReplyStatus, ServerMessage, SipDelivery};
use super::writer::{Outgoing, Owed, PendingReply, Writer, WriterStats};
use super::{ConnectionEvent, ConnectionInfo, IncomingRequest, Responder};
use crate::net::Cidr;
use crate::secret::Secret;
use crate::sip::{ResponseBuilder, SipError, SipMessage};
use crate::supervise::Supervisor;
use crate::telemetry::Metrics;
use crate::throttle::Refusals;

const CONNECTION: Token = Token(0);
const WAKER: Token = Token(1);

/// How long a TCP connect to drachtio may take before we back off and retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// At shutdown, how long the reader waits for drachtio to confirm that our routes are
/// withdrawn (answering what it still delivers) before it closes anyway.
const WITHDRAW_WAIT: Duration = Duration::from_secs(2);
/// `Retry-After` of the `503` a draining client answers new requests with (seconds).
const DRAINING_RETRY_AFTER: &str = "5";

/// Requests that are not SIP are logged once per interval: a sender of garbage must not flood
/// the log.
static UNPARSABLE: Refusals = Refusals::new();

/// The drachtio connection's settings (`DRACHTIO_*`, `SBC_DRACHTIO_*`), filled by `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub secret: Secret,
    /// Interval between application-level pings once authenticated.
    pub ping_interval: Duration,
    /// A ping (or the authentication) unanswered for this long means the connection is dead.
    pub pong_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// `JAMBONES_NETWORK_CIDR`: picks drachtio's private SIP address from its local hostports.
    pub private_networks: Vec<Cidr>,
}

/// Where incoming requests of one method go.
#[derive(Debug, Clone)]
pub struct Route {
    /// Upper-case SIP method, e.g. `REGISTER`.
    pub method: String,
    /// Bounded: when it is full the request is answered `503` at once.
    pub queue: Sender<IncomingRequest>,
}

/// Why a request the app sent did not get SIP responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UacError {
    /// drachtio answered `NOK|<reason>` (or `NO|…`).
    Rejected(String),
    /// There was no authenticated connection when the request was to be written.
    NotConnected,
    /// The connection was lost before the final response.
    Disconnected,
    /// The frame would exceed what drachtio can buffer.
    TooLarge(usize),
}

impl std::fmt::Display for UacError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UacError::Rejected(r) => write!(f, "drachtio rejected the request: {r}"),
            UacError::NotConnected => write!(f, "not connected to drachtio"),
            UacError::Disconnected => write!(f, "connection to drachtio lost before the final response"),
            UacError::TooLarge(n) => write!(f, "request of {n} bytes is too large for drachtio"),
        }
    }
}

impl std::error::Error for UacError {}

/// What a request sender receives, in order: `Sent` (drachtio's echo), then responses until a
/// final one; or `Failed` at any point.
// `Response` is the common case and travels through a channel once per response; boxing it
// would add an allocation for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum UacEvent {
    Sent { transaction_id: String, echo: Vec<u8> },
    Response { meta: SipDelivery, message: SipMessage },
    Failed(UacError),
}

/// Cheap, cloneable handle for roles that send requests of their own.
#[derive(Debug, Clone)]
pub struct DrachtioHandle {
    pub(crate) writer: Sender<Outgoing>,
}

impl DrachtioHandle {
    /// Sends a new request (optionally to a next-hop proxy URI). The receiver gets the echo,
    /// then the SIP responses (100 Trying never comes), or a failure.
    pub fn send_request(&self, sip: Vec<u8>, proxy: Option<&str>) -> Receiver<UacEvent> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let msg_id = message::new_message_id();
        let payload = message::sip_request(&msg_id, proxy, &sip);
        if let Err(e) = self.writer.send(Outgoing::Frame { msg_id, payload, reply: Some(tx), answers: None }) {
            if let Outgoing::Frame { reply: Some(tx), .. } = e.into_inner() {
                let _ = tx.send(UacEvent::Failed(UacError::NotConnected));
            }
        }
        rx
    }
}

/// The running client: two threads.
pub struct DrachtioClient {
    reader: JoinHandle<()>,
    writer: JoinHandle<WriterStats>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    handle: DrachtioHandle,
}

impl DrachtioClient {
    /// Starts connecting at once and keeps trying forever.
    pub fn start(
        config: ClientConfig,
        routes: Vec<Route>,
        subscribers: Vec<Sender<ConnectionEvent>>,
        metrics: Metrics,
        supervisor: &Supervisor,
    ) -> io::Result<DrachtioClient> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let draining = Arc::new(AtomicBool::new(false));
        let owed = Arc::new(Owed::default());
        let (writer_tx, writer_rx) = crossbeam_channel::unbounded::<Outgoing>();
        let (pending_tx, pending_rx) = crossbeam_channel::unbounded::<PendingReply>();

        let writer = Writer::new(writer_rx, pending_tx, waker.clone(), owed.clone(), metrics)?;
        let writer = supervisor.spawn("drachtio-writer", move || writer.run())?;
        let reader_state = Reader {
            config,
            routes: routes.into_iter().map(|r| (r.method.to_ascii_uppercase(), r.queue)).collect(),
            subscribers,
            poll,
            writer: writer_tx.clone(),
            pending_rx,
            stop: stop.clone(),
            draining: draining.clone(),
            owed,
            withdraw: None,
            generation: 0,
            attempt: 0,
            conn: None,
            awaiting: HashMap::new(),
            transactions: HashMap::new(),
            last_failure: None,
        };
        let reader = supervisor.spawn("drachtio-reader", move || reader_state.run())?;
        Ok(DrachtioClient { reader, writer, waker, stop, draining, handle: DrachtioHandle { writer: writer_tx } })
    }

    pub fn handle(&self) -> DrachtioHandle {
        self.handle.clone()
    }

    /// Stops handing requests to roles: from now on the reader answers every new request
    /// `503` with `Retry-After` itself, while it keeps reading (so nothing drachtio delivers
    /// waits for a timeout) and keeps serving the responses to requests roles sent. The roles
    /// answer what they already hold. Call [`DrachtioClient::shutdown`] afterwards.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Whether [`DrachtioClient::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Withdraws our routes (answering `503` to whatever drachtio delivers until it confirms,
    /// at most `WITHDRAW_WAIT`), stops reading, lets the writer flush what roles queued —
    /// answering `503` for every request still owed — closes the connection and joins both
    /// threads.
    pub fn shutdown(self) -> WriterStats {
        self.drain();
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        let _ = self.reader.join();
        let _ = self.handle.writer.send(Outgoing::Shutdown);
        self.writer.join().unwrap_or_default()
    }
}

/// The authenticated (or authenticating) connection owned by the reader.
struct Connection {
    stream: mio::net::TcpStream,
    decoder: FrameDecoder,
    auth_msg_id: String,
    auth_sent: Instant,
    info: Option<ConnectionInfo>,
    hostport: Arc<str>,
    private_sip_address: Option<Arc<str>>,
    next_ping: Instant,
    ping_outstanding: Option<(String, Instant)>,
}

struct Reader {
    config: ClientConfig,
    routes: HashMap<String, Sender<IncomingRequest>>,
    subscribers: Vec<Sender<ConnectionEvent>>,
    poll: Poll,
    writer: Sender<Outgoing>,
    pending_rx: Receiver<PendingReply>,
    stop: Arc<AtomicBool>,
    /// New requests are answered `503` instead of being handed to roles.
    draining: Arc<AtomicBool>,
    /// Requests handed to roles and not answered yet, for the writer (see [`Owed`]).
    owed: Arc<Owed>,
    /// At shutdown: the last `remove_route` sent, and how long we wait for its reply.
    withdraw: Option<Withdraw>,
    generation: u64,
    /// Consecutive failed connection attempts, for the backoff.
    attempt: u32,
    conn: Option<Connection>,
    /// Message ids whose reply a role waits for.
    awaiting: HashMap<String, Sender<UacEvent>>,
    /// Transactions of requests we sent, until their final response.
    transactions: HashMap<String, Sender<UacEvent>>,
    /// The last connect failure, so that a repeated one is not logged at warn every time.
    last_failure: Option<String>,
}

struct Withdraw {
    msg_id: String,
    until: Instant,
    confirmed: bool,
}

enum Disconnect {
    Lost(String),
    WrongSecret,
}

impl Reader {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut retry_at = Instant::now();
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if stopping && self.ready_to_stop() {
                break;
            }
            if !stopping && self.conn.is_none() && Instant::now() >= retry_at {
                if let Err(reason) = self.connect() {
                    let delay = self.backoff();
                    self.report_connect_failure(&reason.to_string(), delay);
                    retry_at = Instant::now() + delay;
                }
            }
            let timeout = self.poll_timeout(retry_at);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("drachtio poll failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            self.drain_pending();
            let readable = events.iter().any(|e| e.token() == CONNECTION);
            let outcome = if readable { self.read_available() } else { Ok(()) };
            let outcome = outcome.and_then(|_| self.check_timers());
            if let Err(d) = outcome {
                let delay = self.close(d);
                retry_at = Instant::now() + delay;
            }
        }
        if let Some(mut conn) = self.conn.take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        // The writer still holds its own handle on the socket: it writes what roles queue
        // until `shutdown`, then closes.
        self.fail_all(UacError::Disconnected);
    }

    /// On the way out: withdraws our routes once, then reads on (answering `503`) until
    /// drachtio confirms — after its reply nothing more is delivered to us — or until
    /// [`WITHDRAW_WAIT`] has passed or the connection is gone.
    fn ready_to_stop(&mut self) -> bool {
        if let Some(w) = &self.withdraw {
            return w.confirmed || self.conn.is_none() || Instant::now() >= w.until;
        }
        if self.conn.as_ref().is_none_or(|c| c.info.is_none()) {
            return true;
        }
        self.draining.store(true, Ordering::SeqCst);
        let mut verbs: Vec<String> = self.routes.keys().map(|m| m.to_ascii_lowercase()).collect();
        verbs.sort();
        let mut last = None;
        for verb in verbs {
            let id = message::new_message_id();
            let payload = message::remove_route(&id, &verb);
            let _ = self.writer.send(Outgoing::Frame { msg_id: id.clone(), payload, reply: None, answers: None });
            last = Some(id);
        }
        let Some(msg_id) = last else { return true };
        debug!("withdrawing our routes from drachtio");
        self.withdraw = Some(Withdraw { msg_id, until: Instant::now() + WITHDRAW_WAIT, confirmed: false });
        false
    }

    fn poll_timeout(&self, retry_at: Instant) -> Duration {
        let now = Instant::now();
        if let Some(w) = &self.withdraw {
            return w.until.saturating_duration_since(now).clamp(Duration::from_millis(1), Duration::from_secs(1));
        }
        let until = match &self.conn {
            None => retry_at,
            Some(c) if c.info.is_none() => c.auth_sent + self.config.pong_timeout,
            Some(c) => match &c.ping_outstanding {
                Some((_, sent)) => (*sent + self.config.pong_timeout).min(c.next_ping),
                None => c.next_ping,
            },
        };
        until.saturating_duration_since(now).clamp(Duration::from_millis(1), Duration::from_secs(1))
    }

    fn backoff(&mut self) -> Duration {
        let base = self.config.backoff_min.as_secs_f64() * 1.7f64.powi(self.attempt.min(30) as i32);
        self.attempt = self.attempt.saturating_add(1);
        let capped = base.min(self.config.backoff_max.as_secs_f64());
        // ±20 % jitter so that several sidecars do not hammer a restarted drachtio in step.
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        Duration::from_secs_f64((capped * jitter).max(0.01))
    }

    fn report_connect_failure(&mut self, reason: &str, delay: Duration) {
        let target = format!("{}:{}", self.config.host, self.config.port);
        if self.last_failure.as_deref() != Some(reason) {
            warn!("cannot connect to drachtio at {target}: {reason}; retrying in {} ms", delay.as_millis());
            self.last_failure = Some(reason.to_string());
        } else {
            debug!("still cannot connect to drachtio at {target}: {reason}; retrying in {} ms", delay.as_millis());
        }
    }

    fn connect(&mut self) -> Result<(), ConnectError> {
        let addrs: Vec<SocketAddr> = (self.config.host.as_str(), self.config.port)
            .to_socket_addrs()
            .map_err(|source| ConnectError::Resolve { host: self.config.host.clone(), source })?
            .collect();
        let mut last_err = ConnectError::NoAddress;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = ConnectError::Connect(e),
            }
        }
        let stream = stream.ok_or(last_err)?;
        let setup = |s: &TcpStream| -> io::Result<TcpStream> {
            s.set_nodelay(true)?;
            let w = s.try_clone()?;
            // Both handles share one file description: the writer's is non-blocking too.
            s.set_nonblocking(true)?;
            Ok(w)
        };
        let writer_stream = setup(&stream).map_err(ConnectError::SocketSetup)?;
        let mut mio_stream = mio::net::TcpStream::from_std(stream);
        self.poll
            .registry()
            .register(&mut mio_stream, CONNECTION, Interest::READABLE)
            .map_err(ConnectError::PollRegister)?;
        self.generation += 1;
        self.owed.clear();
        let _ = self.writer.send(Outgoing::Attach(writer_stream, self.generation));
        let auth_msg_id = message::new_message_id();
        let payload = message::authenticate(&auth_msg_id, self.config.secret.expose());
        let _ = self.writer.send(Outgoing::Frame { msg_id: auth_msg_id.clone(), payload, reply: None, answers: None });
        let now = Instant::now();
        self.conn = Some(Connection {
            stream: mio_stream,
            decoder: FrameDecoder::default(),
            auth_msg_id,
            auth_sent: now,
            info: None,
            hostport: Arc::from(""),
            private_sip_address: None,
            next_ping: now + self.config.ping_interval,
            ping_outstanding: None,
        });
        Ok(())
    }

    /// Closes the connection, fails everything in flight, tells subscribers, and returns how
    /// long to wait before the next attempt.
    fn close(&mut self, why: Disconnect) -> Duration {
        let was_ready = self.conn.as_ref().is_some_and(|c| c.info.is_some());
        if let Some(mut conn) = self.conn.take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        self.owed.clear();
        let _ = self.writer.send(Outgoing::Detach);
        self.fail_all(UacError::Disconnected);
        let delay = self.backoff();
        let reason = match why {
            Disconnect::WrongSecret => {
                error!(
                    "drachtio at {}:{} rejected our secret (NO|incorrect secret): check DRACHTIO_SECRET; retrying in {} ms",
                    self.config.host,
                    self.config.port,
                    delay.as_millis()
                );
                "incorrect secret".to_string()
            }
            Disconnect::Lost(reason) => {
                if was_ready {
                    warn!("lost connection to drachtio: {reason}; reconnecting in {} ms", delay.as_millis());
                } else {
                    self.report_connect_failure(&reason, delay);
                }
                reason
            }
        };
        if was_ready {
            self.broadcast(ConnectionEvent::Disconnected { reason });
        }
        delay
    }

    fn fail_all(&mut self, why: UacError) {
        for (_, tx) in self.awaiting.drain().chain(self.transactions.drain()) {
            let _ = tx.send(UacEvent::Failed(why.clone()));
        }
        // Registrations still in the channel belong to the connection that just went away.
        while let Ok(p) = self.pending_rx.try_recv() {
            let _ = p.reply.send(UacEvent::Failed(why.clone()));
        }
    }

    fn broadcast(&mut self, event: ConnectionEvent) {
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }

    fn drain_pending(&mut self) {
        while let Ok(p) = self.pending_rx.try_recv() {
            if p.generation == self.generation && self.conn.is_some() {
                self.awaiting.insert(p.msg_id, p.reply);
            } else {
                let _ = p.reply.send(UacEvent::Failed(UacError::Disconnected));
            }
        }
    }

    /// Reads and handles what the socket holds, until `WouldBlock`: mio's readiness is
    /// edge-triggered and promises a new event only after a read said `WouldBlock`.
    fn read_available(&mut self) -> Result<(), Disconnect> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(conn) = self.conn.as_mut() else { return Ok(()) };
            match conn.stream.read(&mut buf) {
                Ok(0) => return Err(Disconnect::Lost("drachtio closed the connection".into())),
                Ok(n) => {
                    conn.decoder.push(&buf[..n]);
                    loop {
                        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
                        match conn.decoder.next_frame() {
                            Ok(Some(payload)) => self.handle_frame(&payload)?,
                            Ok(None) => break,
                            Err(e) => return Err(Disconnect::Lost(e.to_string())),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Disconnect::Lost(format!("read error: {e}"))),
            }
        }
    }

    fn check_timers(&mut self) -> Result<(), Disconnect> {
        let now = Instant::now();
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        if conn.info.is_none() {
            if now.duration_since(conn.auth_sent) > self.config.pong_timeout {
                return Err(Disconnect::Lost("no answer to authenticate".into()));
            }
            return Ok(());
        }
        if let Some((_, sent)) = &conn.ping_outstanding {
            if now.duration_since(*sent) > self.config.pong_timeout {
                return Err(Disconnect::Lost(format!("no pong within {} ms", self.config.pong_timeout.as_millis())));
            }
        } else if now >= conn.next_ping {
            let id = message::new_message_id();
            let payload = message::ping(&id);
            conn.ping_outstanding = Some((id.clone(), now));
            conn.next_ping = now + self.config.ping_interval;
            let _ = self.writer.send(Outgoing::Frame { msg_id: id, payload, reply: None, answers: None });
        }
        Ok(())
    }

    fn handle_frame(&mut self, payload: &[u8]) -> Result<(), Disconnect> {
        match ServerMessage::parse(payload) {
            Ok(ServerMessage::Response(reply)) => self.handle_reply(reply),
            Ok(ServerMessage::Sip(delivery)) => {
                self.handle_sip(delivery);
                Ok(())
            }
            Ok(ServerMessage::Other { kind, .. }) => {
                debug!("ignoring drachtio message of type {kind}");
                Ok(())
            }
            Err(e) => {
                warn!("ignoring unparsable frame from drachtio: {e}");
                Ok(())
            }
        }
    }

    fn handle_reply(&mut self, reply: Reply) -> Result<(), Disconnect> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        if reply.reply_to == conn.auth_msg_id {
            return self.handle_auth_reply(reply);
        }
        if conn.ping_outstanding.as_ref().is_some_and(|(id, _)| *id == reply.reply_to) {
            conn.ping_outstanding = None;
            return Ok(());
        }
        if let Some(w) = self.withdraw.as_mut().filter(|w| w.msg_id == reply.reply_to) {
            debug!("drachtio confirmed that our routes are withdrawn");
            w.confirmed = true;
            return Ok(());
        }
        // The writer registers a message id before writing it, so a reply whose id is unknown
        // may simply have been read before we drained the registration channel: drain again.
        if !self.awaiting.contains_key(&reply.reply_to) {
            self.drain_pending();
        }
        if let Some(tx) = self.awaiting.remove(&reply.reply_to) {
            match (reply.status, reply.echo_transaction_id()) {
                (ReplyStatus::Ok, Some(txn)) => {
                    let txn = txn.to_string();
                    let echo = reply.sip.clone().unwrap_or_default();
                    if tx.send(UacEvent::Sent { transaction_id: txn.clone(), echo }).is_ok() {
                        self.transactions.insert(txn, tx);
                    }
                }
                (ReplyStatus::Ok, None) => {}
                (_, _) => {
                    let _ = tx.send(UacEvent::Failed(UacError::Rejected(reply.first_token().to_string())));
                }
            }
            return Ok(());
        }
        match reply.status {
            ReplyStatus::Ok => {}
            ReplyStatus::Nok => warn!("drachtio did not send a response of ours: {}", reply.first_token()),
            ReplyStatus::No => {
                return Err(Disconnect::Lost(format!("drachtio refused a message: {}", reply.first_token())));
            }
        }
        Ok(())
    }

    fn handle_auth_reply(&mut self, reply: Reply) -> Result<(), Disconnect> {
        if reply.status != ReplyStatus::Ok {
            if reply.first_token() == "incorrect secret" {
                return Err(Disconnect::WrongSecret);
            }
            return Err(Disconnect::Lost(format!("authentication failed: {}", reply.first_token())));
        }
        let token = |i: usize| reply.tokens.get(i).cloned().unwrap_or_default();
        let info = ConnectionInfo { hostports: token(0), version: token(1), local_hostports: token(2) };
        info!(
            "connected to drachtio listening on {}, local hostports: {} (server {})",
            info.hostports, info.local_hostports, info.version
        );
        self.attempt = 0;
        self.last_failure = None;
        let mut verbs: Vec<String> = self.routes.keys().map(|m| m.to_ascii_lowercase()).collect();
        verbs.sort();
        for verb in verbs {
            let id = message::new_message_id();
            let payload = message::route(&id, &verb);
            let _ = self.writer.send(Outgoing::Frame { msg_id: id, payload, reply: None, answers: None });
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.hostport = Arc::from(info.hostports.as_str());
            conn.private_sip_address =
                info.private_sip_address(&self.config.private_networks).map(|a| Arc::from(a.as_str()));
            conn.info = Some(info.clone());
            conn.next_ping = Instant::now() + self.config.ping_interval;
        }
        self.broadcast(ConnectionEvent::Connected(info));
        Ok(())
    }

    fn handle_sip(&mut self, delivery: SipDelivery) {
        if let Some(tx) = self.transactions.get(&delivery.transaction_id) {
            match SipMessage::parse(&delivery.sip) {
                Ok(message) if !message.is_request() => {
                    let is_final = message.status().is_some_and(|s| s >= 200);
                    let delivered = tx.send(UacEvent::Response { meta: delivery.clone(), message }).is_ok();
                    if is_final || !delivered {
                        self.transactions.remove(&delivery.transaction_id);
                    }
                }
                Ok(_) => debug!("request on transaction {} of ours ignored", delivery.transaction_id),
                Err(e) => warn!("unparsable response from drachtio on transaction {}: {e}", delivery.transaction_id),
            }
            return;
        }
        if delivery.transaction_id == "unsolicited" || delivery.sip.starts_with(b"SIP/") {
            debug!("ignoring SIP message for unknown transaction {}", delivery.transaction_id);
            return;
        }
        let hostport = self.conn.as_ref().map(|c| c.hostport.clone()).unwrap_or_else(|| Arc::from(""));
        let private_sip_address = self.conn.as_ref().and_then(|c| c.private_sip_address.clone());
        let responder = Responder::new(delivery.transaction_id.clone(), self.writer.clone());
        let message = match SipMessage::parse(&delivery.sip) {
            Ok(m) => m,
            Err(e) => {
                UNPARSABLE.note_at(log::Level::Warn, "unparsable request", || {
                    format!("rejecting unparsable request from {}:{}: {e}", delivery.address, delivery.port)
                });
                // drachtio's stack copies Via/From/To/Call-ID/CSeq from the request itself.
                let status: &[u8] = match e {
                    SipError::TooLarge(_) | SipError::TooManyHeaders => b"513 Message Too Large",
                    _ => b"400 Bad Request",
                };
                responder.send([b"SIP/2.0 ", status, b"\r\nContent-Length: 0\r\n\r\n"].concat());
                return;
            }
        };
        let method = message.method().unwrap_or("").to_ascii_uppercase();
        let Some(queue) = self.routes.get(&method) else {
            responder.send(ResponseBuilder::new(&message, 405).build());
            return;
        };
        if self.draining.load(Ordering::SeqCst) {
            debug!("shutting down: answering 503 to {method} from {}:{}", delivery.address, delivery.port);
            responder.send(ResponseBuilder::new(&message, 503).header("Retry-After", DRAINING_RETRY_AFTER).build());
            return;
        }
        // Noted before the role can answer, so the writer knows what is owed at close.
        self.owed.insert(delivery.transaction_id.clone());
        let request =
            IncomingRequest { meta: delivery, message, server_hostport: hostport, private_sip_address, responder };
        match queue.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(req)) => {
                debug!("{method} queue full: answering 503 to {}:{}", req.meta.address, req.meta.port);
                let resp = req.response(503).header("Retry-After", "5");
                req.respond(resp);
            }
            Err(TrySendError::Disconnected(req)) => {
                let resp = req.response(500);
                req.respond(resp);
            }
        }
    }
}
