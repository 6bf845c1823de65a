//! The write side of the drachtio connection: the writer thread.
//!
//! Every frame goes out through this one thread — answers, requests roles send, the reader's
//! frames, the `503`s for requests nobody answered — so frames never interleave and the
//! socket's write side has one owner, with no lock around it. Frames that arrive together go
//! out in one write. (Answers were once also written by the threads that held them, to save
//! the writer's wake-up; the gain measured within noise, see the README.)
//!
//! The socket is non-blocking (it shares its file description with the reader's mio stream):
//! the writer waits for room with its own `mio::Poll`, at most `WRITE_TIMEOUT` without
//! progress.

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{error, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use super::client::UacEvent;
use super::frame;
use super::message;
use super::{UacError, UNANSWERED_RESPONSE};
use crate::telemetry::Metrics;

/// statsd counter of requests answered `503` because no role answered them, tagged
/// `reason:dropped` (a responder dropped) or `reason:shutdown` (still held at close).
pub const UNANSWERED_METRIC: &str = "sbc.sip.unanswered";

/// A write that makes no progress for this long means drachtio stopped reading: reconnect.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Queued frames are written together up to about this many bytes.
const BATCH_BYTES: usize = 16 * 1024;
/// Frames above this size are written alone (see `Writer::queue_frame`).
const LARGE_FRAME: usize = 4000;

const WRITABLE: Token = Token(0);

/// Input of the writer thread.
#[derive(Debug)]
pub enum Outgoing {
    /// A frame payload to write. When `reply` is set the sender wants the server's reply
    /// (and, for a request, the SIP responses that follow).
    /// `answers` names the incoming transaction when the frame is its response.
    Frame { msg_id: String, payload: Vec<u8>, reply: Option<Sender<UacEvent>>, answers: Option<String> },
    /// The [`Responder`](super::Responder) of this transaction was dropped without answering:
    /// answer `503`.
    Unanswered { transaction_id: String },
    /// A new connection (from the reader, non-blocking), with its generation number.
    Attach(std::net::TcpStream, u64),
    /// The connection is gone.
    Detach,
    /// Write what is queued, then exit.
    Shutdown,
}

/// What the writer counted, returned by [`DrachtioClient::shutdown`](super::DrachtioClient::shutdown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Requests whose [`Responder`](super::Responder) was dropped without an answer, answered
    /// `503` by the writer.
    pub unanswered_dropped: u64,
    /// Requests a role still held when the writer closed, answered `503` just before.
    pub unanswered_at_close: u64,
}

/// A message id whose reply somebody waits for (the writer tells the reader before it writes).
#[derive(Debug)]
pub(super) struct PendingReply {
    pub msg_id: String,
    pub generation: u64,
    pub reply: Sender<UacEvent>,
}

/// Incoming transactions of the current connection handed to roles and not answered yet: the
/// writer's to answer `503` at close. The reader notes each one before it hands the request
/// over (and forgets them all when the connection changes); the writer takes each one out as
/// it writes its answer. A set behind a lock rather than a message to the writer: a message
/// per request would wake the writer a second time for every request.
#[derive(Debug, Default)]
pub(super) struct Owed(Mutex<HashSet<String>>);

impl Owed {
    fn locked(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(&self, transaction_id: String) {
        self.locked().insert(transaction_id);
    }

    /// Forgets what the last connection was owed: its transactions cannot be answered on
    /// another connection.
    pub(super) fn clear(&self) {
        self.locked().clear();
    }

    fn remove(&self, transaction_id: &str) {
        self.locked().remove(transaction_id);
    }

    fn take_all(&self) -> Vec<String> {
        self.locked().drain().collect()
    }
}

/// The writer thread: writes whole frames, batching what arrives together.
pub(super) struct Writer {
    input: Receiver<Outgoing>,
    pending: Sender<PendingReply>,
    waker: Arc<Waker>,
    owed: Arc<Owed>,
    /// Waits for room in the socket when a write would block.
    poll: Poll,
    events: Events,
    /// The attached connection and its generation.
    stream: Option<(TcpStream, u64)>,
    /// Encoded frames waiting for the next write.
    out: Vec<u8>,
    /// A reply registration was sent since the last flush (the reader must be woken).
    registered: bool,
    metrics: Metrics,
    stats: WriterStats,
}

impl Writer {
    pub(super) fn new(
        input: Receiver<Outgoing>,
        pending: Sender<PendingReply>,
        waker: Arc<Waker>,
        owed: Arc<Owed>,
        metrics: Metrics,
    ) -> io::Result<Writer> {
        Ok(Writer {
            input,
            pending,
            waker,
            owed,
            poll: Poll::new()?,
            events: Events::with_capacity(4),
            stream: None,
            out: Vec::new(),
            registered: false,
            metrics,
            stats: WriterStats::default(),
        })
    }

    pub(super) fn run(mut self) -> WriterStats {
        while let Ok(msg) = self.input.recv() {
            match msg {
                Outgoing::Attach(stream, generation) => self.attach(stream, generation),
                // What is not written yet was for the connection that is gone (the reader
                // forgot the transactions drachtio delivered on it).
                Outgoing::Detach => {
                    self.out.clear();
                    self.detach();
                }
                Outgoing::Shutdown => break,
                Outgoing::Frame { msg_id, payload, reply, answers } => {
                    if let Some(txn) = answers {
                        self.owed.remove(&txn);
                    }
                    self.queue_frame(msg_id, payload, reply);
                }
                Outgoing::Unanswered { transaction_id } => {
                    self.stats.unanswered_dropped += 1;
                    self.metrics.count(UNANSWERED_METRIC, 1, &["reason:dropped"]);
                    warn!(
                        "a request was dropped without an answer (transaction {transaction_id}); answering 503 \
                         ({} so far)",
                        self.stats.unanswered_dropped
                    );
                    self.answer_unavailable(&transaction_id);
                }
            }
            // Frames that arrive while one is being handled go out in the same write: under
            // load that is one syscall for many responses instead of one each.
            if self.input.is_empty() || self.out.len() >= BATCH_BYTES {
                self.flush();
            }
        }
        // Whatever a role still holds now will never be answered by it: answer for it.
        let owed = self.owed.take_all();
        if !owed.is_empty() {
            warn!("closing the drachtio connection with {} requests unanswered: answering them 503", owed.len());
            self.stats.unanswered_at_close += owed.len() as u64;
            self.metrics.count(UNANSWERED_METRIC, owed.len() as u64, &["reason:shutdown"]);
            for txn in owed {
                self.answer_unavailable(&txn);
            }
        }
        self.flush();
        if let Some((stream, _)) = self.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.stats
    }

    fn attach(&mut self, stream: std::net::TcpStream, generation: u64) {
        self.out.clear();
        self.detach();
        let mut stream = TcpStream::from_std(stream);
        if let Err(e) = self.poll.registry().register(&mut stream, WRITABLE, Interest::WRITABLE) {
            // Without it a full socket could not be waited for: let the reader reconnect.
            error!("cannot watch the drachtio connection for writing: {e}; closing it");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        self.stream = Some((stream, generation));
    }

    /// Lets go of the connection; frames are dropped until the next `Attach`.
    fn detach(&mut self) {
        if let Some((mut stream, _)) = self.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
    }

    /// Queues `503` + `Retry-After` for an incoming transaction (see [`UNANSWERED_RESPONSE`]).
    fn answer_unavailable(&mut self, transaction_id: &str) {
        self.owed.remove(transaction_id);
        let msg_id = message::new_message_id();
        let payload = message::sip_response(&msg_id, transaction_id, UNANSWERED_RESPONSE);
        self.queue_frame(msg_id, payload, None);
    }

    fn queue_frame(&mut self, msg_id: String, payload: Vec<u8>, reply: Option<Sender<UacEvent>>) {
        let bytes = match frame::encode(&payload) {
            Ok(b) => b,
            Err(e) => {
                error!("not sending a {} byte message to drachtio: {e}", payload.len());
                if let Some(r) = reply {
                    let _ = r.send(UacEvent::Failed(UacError::TooLarge(payload.len())));
                }
                return;
            }
        };
        let Some((_, generation)) = self.stream else {
            match reply {
                Some(r) => {
                    let _ = r.send(UacEvent::Failed(UacError::NotConnected));
                }
                None => warn!("drachtio not connected: dropping a response (msg {msg_id})"),
            }
            return;
        };
        if let Some(reply) = reply {
            // Registered before the write, so the reader knows it before the reply can arrive.
            let _ = self.pending.send(PendingReply { msg_id, generation, reply });
            self.registered = true;
        }
        // drachtio reads 8 KB at a time into a 12 KB buffer: a frame larger than 4 KB must not
        // share a write with the frames around it, or a read could overrun the buffer
        // (drachtio-protocol.md §1.5).
        if bytes.len() > LARGE_FRAME {
            self.flush();
            self.out.extend_from_slice(&bytes);
            self.flush();
        } else {
            self.out.extend_from_slice(&bytes);
        }
    }

    fn flush(&mut self) {
        if self.registered {
            let _ = self.waker.wake();
            self.registered = false;
        }
        if self.out.is_empty() {
            return;
        }
        let Some((stream, _)) = self.stream.as_mut() else {
            self.out.clear();
            return;
        };
        let result = write_waiting(&mut self.poll, &mut self.events, stream, &self.out);
        self.out.clear();
        if let Err(e) = result {
            warn!("writing to drachtio failed: {e}; closing the connection");
            // Shutting the socket down makes the reader see the loss and reconnect; until it
            // says so (`Detach`) frames are dropped as when there is no connection.
            let _ = stream.shutdown(Shutdown::Both);
            self.detach();
        }
    }
}

/// Writes all of `buf` to the non-blocking `stream`, waiting for room as long as the socket
/// keeps taking bytes within [`WRITE_TIMEOUT`].
fn write_waiting(poll: &mut Poll, events: &mut Events, stream: &mut TcpStream, buf: &[u8]) -> io::Result<()> {
    let mut written = 0;
    let mut deadline = None;
    while written < buf.len() {
        match stream.write(&buf[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                deadline = None;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let until = *deadline.get_or_insert_with(|| Instant::now() + WRITE_TIMEOUT);
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("drachtio read nothing for {} s", WRITE_TIMEOUT.as_secs()),
                    ));
                }
                match poll.poll(events, Some(left)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
