//! The alerts writer: the thread that takes [`Alert`]s from the roles and writes them to
//! InfluxDB 1.x (spec 10.2) through the `Influx` client (`influx.rs`).
//!
//! Callers hold an [`AlertSender`] and never wait: [`AlertSender::send`] is a `try_send` into a
//! bounded channel. One writer thread ([`AlertWriter`]) collects the alerts and writes them in
//! batches — when `batch_size` (50) are waiting or every `flush_interval` (20 s, 7 s with
//! `NODE_ENV=test`), as the Node program's InfluxDB client did.
//!
//! When InfluxDB cannot be written, the writer keeps up to `queue` alerts and retries on each
//! flush tick; older alerts beyond that are dropped. When the channel itself is full, the
//! newest alerts are dropped by `send`. Every drop is counted ([`AlertStats`]); the log says
//! so when the state changes (queue full / has room again, InfluxDB down / back) and in a
//! summary once a minute while drops go on — never once per alert.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, tick, Receiver, Sender, TrySendError};
use log::{debug, info, warn};

use super::alert::{Alert, AlertType};
use super::influx::{AlertError, Influx};

/// InfluxDB 1.x HTTP port (the Node program had it fixed).
pub const DEFAULT_PORT: u16 = 8086;
pub const DEFAULT_DATABASE: &str = "alerts";
/// Points waiting before a write is started at once.
pub const DEFAULT_BATCH_SIZE: usize = 50;
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(20);
/// The flush interval with `NODE_ENV=test`.
pub const TEST_FLUSH_INTERVAL: Duration = Duration::from_secs(7);
/// Alerts waiting in the channel (and, while InfluxDB is down, in the writer).
pub const DEFAULT_QUEUE: usize = 1000;
/// One HTTP request to InfluxDB, connect to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`AlertWriter::shutdown`] may spend writing what is still queued.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);

/// While alerts are being dropped, a summary line at most this often.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// InfluxDB's own advice for one write request; more than this goes in several requests.
const MAX_POINTS_PER_WRITE: usize = 5000;
/// Guards against settings that would turn the flush timer into a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Where and how alerts are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// `JAMBONES_TIME_SERIES_HOST`.
    pub host: String,
    /// 8086; configurable for tests.
    pub port: u16,
    /// `alerts`; created when missing.
    pub database: String,
    /// A write starts as soon as this many alerts wait (50).
    pub batch_size: usize,
    /// Waiting alerts are written at least this often (20 s; 7 s with `NODE_ENV=test`).
    pub flush_interval: Duration,
    /// Capacity of the channel from the callers, and the most alerts kept while InfluxDB is
    /// down.
    pub queue: usize,
    /// Timeout of one HTTP request to InfluxDB.
    pub timeout: Duration,
}

impl AlertSettings {
    /// The defaults for an InfluxDB on `host`.
    pub fn new(host: impl Into<String>) -> AlertSettings {
        AlertSettings {
            host: host.into(),
            port: DEFAULT_PORT,
            database: DEFAULT_DATABASE.to_string(),
            batch_size: DEFAULT_BATCH_SIZE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            queue: DEFAULT_QUEUE,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `http://host:port`, with an IPv6 literal in brackets.
    pub(super) fn base_url(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }

    /// Zero sizes and intervals would block every send or spin the timer.
    fn sanitized(mut self) -> AlertSettings {
        self.batch_size = self.batch_size.max(1);
        self.queue = self.queue.max(1);
        self.flush_interval = self.flush_interval.max(MIN_INTERVAL);
        self.timeout = self.timeout.max(MIN_INTERVAL);
        self
    }
}

/// What happened to the alerts so far. `queued == written + dropped_unavailable + rejected +
/// (still waiting)`; the other drops never entered the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertStats {
    /// Accepted by [`AlertSender::send`].
    pub queued: u64,
    /// Written to InfluxDB.
    pub written: u64,
    /// Dropped by `send` because the channel was full.
    pub dropped_queue_full: u64,
    /// Dropped because InfluxDB could not be written (kept too long, or still unwritten at
    /// shutdown).
    pub dropped_unavailable: u64,
    /// Dropped by `send` after the writer had stopped.
    pub dropped_writer_stopped: u64,
    /// Refused by InfluxDB as malformed (HTTP 4xx other than auth / not found / overload).
    pub rejected: u64,
}

impl AlertStats {
    /// Every alert that will never reach InfluxDB.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_unavailable + self.dropped_writer_stopped + self.rejected
    }
}

/// Shared by the senders and the writer. Relaxed atomics: these are statistics, nothing is
/// synchronised through them.
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unavailable: AtomicU64,
    dropped_writer_stopped: AtomicU64,
    rejected: AtomicU64,
    /// Set by the first send that finds the channel full (and logs it); cleared by the
    /// writer's summary once a whole summary interval went by without such a drop. Clearing
    /// it on the next successful send instead would log every flip of a queue hovering at
    /// its limit.
    queue_full: AtomicBool,
    /// Set once the first send after the writer stopped has been logged.
    stopped_logged: AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> AlertStats {
        AlertStats {
            queued: self.queued.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_unavailable: self.dropped_unavailable.load(Ordering::Relaxed),
            dropped_writer_stopped: self.dropped_writer_stopped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------------------------------
// The sender
// ------------------------------------------------------------------------------------------

/// The handle roles use to raise alerts. Cheap to clone; [`send`](AlertSender::send) never
/// blocks.
#[derive(Debug, Clone)]
pub struct AlertSender {
    tx: Sender<Alert>,
    counters: Arc<Counters>,
}

impl AlertSender {
    /// Queues `alert` for the writer, or drops (and counts) it when the queue is full or the
    /// writer has stopped. Returns whether it was queued; callers need not look.
    pub fn send(&self, alert: Alert) -> bool {
        let counters = &self.counters;
        match self.tx.try_send(alert) {
            Ok(()) => {
                counters.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(alert)) => {
                counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                if !counters.queue_full.swap(true, Ordering::Relaxed) {
                    // The message is not logged: it may hold a webhook URL with credentials.
                    warn!(
                        "alerts: queue full, dropping alerts until the writer catches up capacity={} first_dropped_type={}",
                        self.tx.capacity().unwrap_or(0),
                        alert.alert_type().map(AlertType::as_str).unwrap_or("-")
                    );
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                counters.dropped_writer_stopped.fetch_add(1, Ordering::Relaxed);
                if !counters.stopped_logged.swap(true, Ordering::Relaxed) {
                    warn!("alerts: writer stopped, further alerts are dropped");
                }
                false
            }
        }
    }

    /// The counters shared with the writer.
    pub fn stats(&self) -> AlertStats {
        self.counters.snapshot()
    }

    /// A sender whose alerts go to the returned receiver instead of a writer: for unit tests
    /// of the roles that raise alerts.
    pub fn in_memory(capacity: usize) -> (AlertSender, Receiver<Alert>) {
        let (tx, rx) = bounded(capacity.max(1));
        (AlertSender { tx, counters: Arc::default() }, rx)
    }
}

// ------------------------------------------------------------------------------------------
// The writer
// ------------------------------------------------------------------------------------------

/// The alerts writer thread. Start it once in `main`, hand out [`sender`](AlertWriter::sender)s,
/// and call [`shutdown`](AlertWriter::shutdown) after the roles have stopped.
#[derive(Debug)]
pub struct AlertWriter {
    sender: AlertSender,
    /// Dropping it tells the thread to flush and stop.
    stop: Sender<()>,
    handle: JoinHandle<()>,
}

impl AlertWriter {
    /// Starts the writer thread (named `alerts`). Nothing is sent to InfluxDB until the first
    /// alert, so this works whether or not InfluxDB is up.
    pub fn start(settings: AlertSettings) -> Result<AlertWriter, AlertError> {
        let settings = settings.sanitized();
        let (tx, rx) = bounded(settings.queue);
        let (stop, stop_rx) = bounded(1);
        let counters = Arc::new(Counters::default());
        info!(
            "alerts: writing to InfluxDB url={} database={} batch_size={} flush_interval_ms={} queue={}",
            settings.base_url(),
            settings.database,
            settings.batch_size,
            settings.flush_interval.as_millis(),
            settings.queue
        );
        let worker = Worker::new(settings, rx, stop_rx, Arc::clone(&counters));
        let handle = thread::Builder::new()
            .name("alerts".into())
            .spawn(move || worker.run())
            .map_err(|e| AlertError::Spawn(e.to_string()))?;
        Ok(AlertWriter { sender: AlertSender { tx, counters }, stop, handle })
    }

    pub fn sender(&self) -> AlertSender {
        self.sender.clone()
    }

    pub fn stats(&self) -> AlertStats {
        self.sender.stats()
    }

    /// Writes what is queued (spending at most `SHUTDOWN_BUDGET` on it, after a write that
    /// may be in progress — itself bounded by the request timeout), stops the thread and
    /// returns the final counters. Alerts sent afterwards are dropped and counted.
    pub fn shutdown(self) -> AlertStats {
        let AlertWriter { sender, stop, handle } = self;
        drop(stop);
        if handle.join().is_err() {
            warn!("alerts: writer thread panicked");
        }
        sender.stats()
    }
}

/// The writer thread's state.
struct Worker {
    settings: AlertSettings,
    influx: Influx,
    alerts: Receiver<Alert>,
    stop: Receiver<()>,
    counters: Arc<Counters>,
    /// Alerts not yet written, with the timestamp each will be written with.
    pending: VecDeque<(u128, Alert)>,
    /// The last timestamp handed out: each point gets a later one, because InfluxDB keeps
    /// only one point per series and timestamp and would silently merge two alerts raised in
    /// the same nanosecond.
    last_timestamp: u128,
    /// `CREATE DATABASE` succeeded and no write has failed since.
    database_ready: bool,
    /// Since when writes fail (retried on each flush tick only).
    down_since: Option<Instant>,
    /// Counters at the last summary line.
    summarized: AlertStats,
}

impl Worker {
    fn new(settings: AlertSettings, alerts: Receiver<Alert>, stop: Receiver<()>, counters: Arc<Counters>) -> Worker {
        Worker {
            influx: Influx::new(&settings),
            settings,
            alerts,
            stop,
            counters,
            pending: VecDeque::new(),
            last_timestamp: 0,
            database_ready: false,
            down_since: None,
            summarized: AlertStats::default(),
        }
    }

    fn run(mut self) {
        let flush_tick = tick(self.settings.flush_interval);
        let summary_tick = tick(SUMMARY_INTERVAL);
        // Local handles, so the arms may borrow `self` mutably.
        let (alerts, stop) = (self.alerts.clone(), self.stop.clone());
        loop {
            select! {
                recv(alerts) -> alert => match alert {
                    Ok(alert) => {
                        self.push(alert);
                        // While InfluxDB is down only the flush tick retries, so that a burst
                        // of alerts does not become a burst of failing requests.
                        if self.pending.len() >= self.settings.batch_size && self.down_since.is_none() {
                            self.flush(None);
                        }
                    }
                    Err(_) => break,
                },
                recv(flush_tick) -> _ => {
                    if !self.pending.is_empty() {
                        self.flush(None);
                    }
                }
                recv(summary_tick) -> _ => self.summarize(),
                // A message or the sender dropped: both mean stop.
                recv(stop) -> _ => break,
            }
        }
        self.finish();
    }

    fn push(&mut self, alert: Alert) {
        if self.pending.len() >= self.settings.queue {
            // Keep the newest: they describe the current state of things.
            self.pending.pop_front();
            self.counters.dropped_unavailable.fetch_add(1, Ordering::Relaxed);
        }
        let timestamp = alert.unix_nanos().max(self.last_timestamp + 1);
        self.last_timestamp = timestamp;
        self.pending.push_back((timestamp, alert));
    }

    /// Writes everything pending, in requests of at most [`MAX_POINTS_PER_WRITE`] points.
    /// Stops at the first failure (what is left stays pending) or at `deadline`.
    fn flush(&mut self, deadline: Option<Instant>) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(MAX_POINTS_PER_WRITE);
            let mut body = String::with_capacity(n * 200);
            for (timestamp, alert) in self.pending.iter().take(n) {
                alert.write_line(&mut body, *timestamp);
            }
            match self.write(&body, deadline) {
                Ok(()) => {
                    self.pending.drain(..n);
                    Counters::add(&self.counters.written, n);
                    debug!("alerts: wrote {n} points");
                    if let Some(since) = self.down_since.take() {
                        info!(
                            "alerts: InfluxDB writable again after {}s dropped_unavailable_total={}",
                            since.elapsed().as_secs(),
                            self.counters.dropped_unavailable.load(Ordering::Relaxed)
                        );
                    }
                }
                Err(e) if e.is_rejection() => {
                    // The server is fine but refuses these points; retrying cannot help.
                    self.pending.drain(..n);
                    Counters::add(&self.counters.rejected, n);
                    warn!("alerts: InfluxDB refused {n} points, dropped: {e}");
                }
                Err(e) => {
                    // It may have lost its data (a new container): create the database again.
                    self.database_ready = false;
                    if self.down_since.is_none() {
                        self.down_since = Some(Instant::now());
                        warn!(
                            "alerts: cannot write to InfluxDB, keeping up to {} alerts and retrying every {}s: {e}",
                            self.settings.queue,
                            self.settings.flush_interval.as_secs_f32()
                        );
                    } else {
                        debug!("alerts: InfluxDB still not writable: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// Creates the database when needed, then writes; a 404 (database gone) gets one more go.
    fn write(&mut self, body: &str, deadline: Option<Instant>) -> Result<(), AlertError> {
        if !self.database_ready {
            self.influx.create_database(self.request_timeout(deadline)?)?;
            self.database_ready = true;
        }
        match self.influx.write(body, self.request_timeout(deadline)?) {
            Err(AlertError::Status { status: 404, .. }) => {
                self.influx.create_database(self.request_timeout(deadline)?)?;
                self.influx.write(body, self.request_timeout(deadline)?)
            }
            result => result,
        }
    }

    /// The request timeout, shortened to what is left before `deadline`.
    fn request_timeout(&self, deadline: Option<Instant>) -> Result<Duration, AlertError> {
        let Some(deadline) = deadline else { return Ok(self.settings.timeout) };
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_INTERVAL {
            return Err(AlertError::Unreachable("shutdown time budget exhausted".into()));
        }
        Ok(left.min(self.settings.timeout))
    }

    /// One line about alerts dropped since the last summary, if any were.
    fn summarize(&mut self) {
        let now = self.counters.snapshot();
        let before = self.summarized;
        if now.dropped_queue_full == before.dropped_queue_full
            && self.counters.queue_full.swap(false, Ordering::Relaxed)
        {
            info!("alerts: queue has room again dropped_queue_full_total={}", now.dropped_queue_full);
        }
        if now.dropped() > before.dropped() {
            warn!(
                "alerts: dropped {} alerts since the last report: queue_full={} influxdb_unavailable={} rejected={} writer_stopped={} total_dropped={} pending={}",
                now.dropped() - before.dropped(),
                now.dropped_queue_full - before.dropped_queue_full,
                now.dropped_unavailable - before.dropped_unavailable,
                now.rejected - before.rejected,
                now.dropped_writer_stopped - before.dropped_writer_stopped,
                now.dropped(),
                self.pending.len()
            );
        }
        self.summarized = now;
    }

    /// Shutdown: take what is in the channel, write it all within the budget, count the rest.
    fn finish(mut self) {
        let deadline = Instant::now() + SHUTDOWN_BUDGET;
        // Bounded: senders may still be sending while we drain.
        for _ in 0..self.settings.queue {
            match self.alerts.try_recv() {
                Ok(alert) => self.push(alert),
                Err(_) => break,
            }
        }
        if !self.pending.is_empty() {
            self.flush(Some(deadline));
        }
        let left = self.pending.len();
        if left > 0 {
            self.pending.clear();
            Counters::add(&self.counters.dropped_unavailable, left);
            warn!("alerts: {left} alerts could not be written before shutdown");
        }
        self.summarize();
        let stats = self.counters.snapshot();
        info!("alerts: writer stopped written={} dropped={} queued={}", stats.written, stats.dropped(), stats.queued);
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn settings_follow_the_config() {
        let s = AlertSettings::new("influx");
        assert_eq!(s.base_url(), "http://influx:8086");
        assert_eq!((s.batch_size, s.flush_interval, s.database.as_str()), (50, Duration::from_secs(20), "alerts"));
        assert_eq!(AlertSettings { port: 1, ..AlertSettings::new("::1") }.base_url(), "http://[::1]:1");
        let z = AlertSettings { batch_size: 0, queue: 0, flush_interval: Duration::ZERO, ..s }.sanitized();
        assert_eq!((z.batch_size, z.queue, z.flush_interval), (1, 1, MIN_INTERVAL));
    }

    #[test]
    fn send_never_waits_and_counts_what_it_drops() {
        let (sender, rx) = AlertSender::in_memory(2);
        assert!(sender.send(Alert::account_device_limit("a", 1)));
        assert!(sender.send(Alert::account_device_limit("a", 2)));
        for _ in 0..100 {
            assert!(!sender.send(Alert::account_device_limit("a", 3)));
        }
        assert_eq!(sender.stats().dropped_queue_full, 100);
        assert_eq!(
            rx.try_recv().map(|a| a.message().to_string()).ok().as_deref(),
            Some("you have exceeded your account limit of 1 registered devices; please consider upgrading your plan")
        );
        assert!(sender.send(Alert::account_device_limit("a", 4)));
        drop(rx);
        assert!(!sender.send(Alert::account_device_limit("a", 5)));
        let stats = sender.stats();
        assert_eq!((stats.queued, stats.dropped_writer_stopped, stats.dropped()), (3, 1, 101));
    }

    #[test]
    fn points_get_strictly_increasing_timestamps() {
        let (_tx, rx) = bounded(1);
        let (_stop_tx, stop) = bounded(1);
        let mut worker = Worker::new(AlertSettings::new("127.0.0.1"), rx, stop, Arc::default());
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for _ in 0..3 {
            worker.push(Alert::account_device_limit("a", 1).with_time(t));
        }
        let stamps: Vec<u128> = worker.pending.iter().map(|(ts, _)| *ts).collect();
        let base = Duration::from_secs(1_700_000_000).as_nanos();
        assert_eq!(stamps, [base, base + 1, base + 2]);
    }
}
