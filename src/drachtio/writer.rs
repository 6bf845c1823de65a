//! The write side of the drachtio connection: the `Wire` every frame goes out through, and
//! the writer thread.
//!
//! Frames never interleave: every write happens under the wire's lock. The thread that holds
//! an answer writes it itself when it can (`Wire::try_answer`: the lock is free, nothing is
//! waiting to go out first and the socket takes the frame at once); everything else — the
//! reader's frames, requests roles send, answers that could not go out directly — goes
//! through the writer thread, which batches what arrives together into one write. At
//! operating rates most requests arrive alone, and handing each answer to the writer cost one
//! thread wake-up per request (more CPU than building the answer); under load the direct
//! path finds the lock busy and the writer batches as before.
//!
//! The socket is non-blocking (it shares its file description with the reader's mio stream).
//! The writer waits for room with its own `mio::Poll`, at most `WRITE_TIMEOUT` without
//! progress; a direct writer never waits.

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
    /// A direct write went out in part: write the rest (see `Wire::try_answer`).
    Unfinished,
    /// Where to count unanswered requests (`sbc.sip.unanswered`).
    Metrics(Metrics),
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

/// How a direct answer went (see [`Wire::try_answer`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DirectWrite {
    /// The whole frame is written.
    Written,
    /// Part of it is written; the rest waits in the wire for the writer thread (tell it with
    /// [`Outgoing::Unfinished`]).
    Started,
    /// Nothing written: send the answer through the writer thread.
    Declined,
}

/// The connection's write side, shared by the writer thread, the reader and every
/// [`Responder`](super::Responder).
#[derive(Debug, Default)]
pub(crate) struct Wire {
    state: Mutex<WireState>,
    /// Incoming transactions of the current connection handed to roles and not answered yet.
    /// The reader adds each one before handing it over (and forgets them all when the
    /// connection changes); whoever writes the answer removes it; the writer answers the rest
    /// `503` at close. A shared set rather than a message to the writer: a message per request
    /// woke the writer once more per request.
    owed: Mutex<HashSet<String>>,
}

#[derive(Debug, Default)]
struct WireState {
    stream: Option<TcpStream>,
    /// Generation of the attached connection (the reader counts its connections).
    generation: u64,
    /// The rest of a frame a direct write could not finish: it goes out before anything else.
    unfinished: Vec<u8>,
    /// The writer is answering what is still owed and closing: no more direct writes.
    closing: bool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Wire {
    pub(crate) fn owe(&self, transaction_id: String) {
        locked(&self.owed).insert(transaction_id);
    }

    /// Forgets what the last connection was owed: its transactions cannot be answered on
    /// another connection.
    pub(crate) fn forget_owed(&self) {
        locked(&self.owed).clear();
    }

    /// Writes the answer to `transaction_id` (delivered on connection `generation`) from the
    /// calling thread, without waiting for anything: not when the writer holds the lock, has
    /// the rest of a frame to finish, is closing, or the connection changed since.
    pub(crate) fn try_answer(&self, transaction_id: &str, payload: &[u8], generation: u64) -> DirectWrite {
        let Ok(bytes) = frame::encode(payload) else { return DirectWrite::Declined };
        if bytes.len() > LARGE_FRAME {
            return DirectWrite::Declined;
        }
        let Ok(mut guard) = self.state.try_lock() else { return DirectWrite::Declined };
        let state = &mut *guard;
        if state.closing || state.generation != generation || !state.unfinished.is_empty() {
            return DirectWrite::Declined;
        }
        let Some(stream) = state.stream.as_mut() else { return DirectWrite::Declined };
        let outcome = match stream.write(&bytes) {
            Ok(n) if n == bytes.len() => DirectWrite::Written,
            Ok(n) if n > 0 => {
                state.unfinished.extend_from_slice(&bytes[n..]);
                DirectWrite::Started
            }
            // Full socket, or an error the writer will meet (and close the connection on).
            _ => return DirectWrite::Declined,
        };
        // Under the state lock, so that the writer's close cannot answer it a second time.
        locked(&self.owed).remove(transaction_id);
        outcome
    }
}

/// The writer thread: writes whole frames, batching what arrives together.
pub(super) struct Writer {
    input: Receiver<Outgoing>,
    pending: Sender<PendingReply>,
    waker: Arc<Waker>,
    wire: Arc<Wire>,
    /// Waits for room in the socket when a write would block.
    poll: Poll,
    events: Events,
    /// Generation of the attached connection, `None` while there is none.
    attached: Option<u64>,
    /// Encoded frames waiting for the next write.
    out: Vec<u8>,
    /// A direct write left the rest of a frame in the wire.
    unfinished: bool,
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
        wire: Arc<Wire>,
    ) -> io::Result<Writer> {
        Ok(Writer {
            input,
            pending,
            waker,
            wire,
            poll: Poll::new()?,
            events: Events::with_capacity(4),
            attached: None,
            out: Vec::new(),
            unfinished: false,
            registered: false,
            metrics: Metrics::disabled(),
            stats: WriterStats::default(),
        })
    }

    pub(super) fn run(mut self) -> WriterStats {
        while let Ok(msg) = self.input.recv() {
            match msg {
                Outgoing::Attach(stream, generation) => self.attach(stream, generation),
                // What is not written yet was for the connection that is gone (the reader
                // forgot the transactions drachtio delivered on it).
                Outgoing::Detach => self.detach(),
                Outgoing::Shutdown => break,
                Outgoing::Frame { msg_id, payload, reply, answers } => {
                    if let Some(txn) = answers {
                        locked(&self.wire.owed).remove(&txn);
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
                Outgoing::Unfinished => self.unfinished = true,
                Outgoing::Metrics(metrics) => self.metrics = metrics,
            }
            // Frames that arrive while one is being handled go out in the same write: under
            // load that is one syscall for many responses instead of one each.
            if self.input.is_empty() || self.out.len() >= BATCH_BYTES {
                self.flush();
            }
        }
        // No direct write from now on; whatever a role still holds will never be answered by
        // it: answer for it.
        locked(&self.wire.state).closing = true;
        let owed: Vec<String> = locked(&self.wire.owed).drain().collect();
        if !owed.is_empty() {
            warn!("closing the drachtio connection with {} requests unanswered: answering them 503", owed.len());
            self.stats.unanswered_at_close += owed.len() as u64;
            self.metrics.count(UNANSWERED_METRIC, owed.len() as u64, &["reason:shutdown"]);
            for txn in owed {
                self.answer_unavailable(&txn);
            }
        }
        self.flush();
        if let Some(stream) = locked(&self.wire.state).stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.stats
    }

    fn attach(&mut self, stream: std::net::TcpStream, generation: u64) {
        self.detach();
        let mut stream = TcpStream::from_std(stream);
        if let Err(e) = self.poll.registry().register(&mut stream, WRITABLE, Interest::WRITABLE) {
            // Without it a full socket could not be waited for: let the reader reconnect.
            error!("cannot watch the drachtio connection for writing: {e}; closing it");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let mut state = locked(&self.wire.state);
        state.stream = Some(stream);
        state.generation = generation;
        self.attached = Some(generation);
    }

    fn detach(&mut self) {
        self.out.clear();
        self.unfinished = false;
        self.attached = None;
        let mut state = locked(&self.wire.state);
        state.unfinished.clear();
        if let Some(mut stream) = state.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
    }

    /// Queues `503` + `Retry-After` for an incoming transaction (see [`UNANSWERED_RESPONSE`]).
    fn answer_unavailable(&mut self, transaction_id: &str) {
        locked(&self.wire.owed).remove(transaction_id);
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
        let Some(generation) = self.attached else {
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
        if self.out.is_empty() && !self.unfinished {
            return;
        }
        self.unfinished = false;
        let mut guard = locked(&self.wire.state);
        let state = &mut *guard;
        let Some(stream) = state.stream.as_mut() else {
            self.out.clear();
            return;
        };
        // The rest of a direct write first: it is the tail of a frame already begun.
        let result = write_waiting(&mut self.poll, &mut self.events, stream, &state.unfinished)
            .and_then(|()| write_waiting(&mut self.poll, &mut self.events, stream, &self.out));
        state.unfinished.clear();
        self.out.clear();
        if let Err(e) = result {
            warn!("writing to drachtio failed: {e}; closing the connection");
            // Shutting the socket down makes the reader see the loss and reconnect; until it
            // says so (`Detach`) frames are dropped as when there is no connection.
            let _ = stream.shutdown(Shutdown::Both);
            if let Some(mut stream) = state.stream.take() {
                let _ = self.poll.registry().deregister(&mut stream);
            }
            self.attached = None;
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use super::*;

    /// A wire attached (generation 1) to one end of a loopback connection; the other end.
    fn attached_wire() -> (Wire, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let wire = Wire::default();
        {
            let mut state = locked(&wire.state);
            state.stream = Some(TcpStream::from_std(ours));
            state.generation = 1;
        }
        theirs.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (wire, theirs)
    }

    fn read_exactly(peer: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        peer.read_exact(&mut buf).unwrap();
        buf
    }

    #[test]
    fn an_answer_on_a_free_wire_is_written_whole_and_no_longer_owed() {
        let (wire, mut peer) = attached_wire();
        wire.owe("txn-1".into());
        let payload = b"m1|sip|txn-1|\r\nSIP/2.0 200 OK\r\n\r\n";
        assert_eq!(wire.try_answer("txn-1", payload, 1), DirectWrite::Written);
        let expected = frame::encode(payload).unwrap();
        assert_eq!(read_exactly(&mut peer, expected.len()), expected);
        assert!(locked(&wire.owed).is_empty());
    }

    #[test]
    fn answers_go_to_the_writer_when_the_wire_is_not_theirs_to_use() {
        let payload = b"m1|sip|txn-1|\r\nSIP/2.0 200 OK\r\n\r\n";
        // delivered on an earlier connection
        let (wire, _peer) = attached_wire();
        wire.owe("txn-1".into());
        assert_eq!(wire.try_answer("txn-1", payload, 0), DirectWrite::Declined);
        // the writer is writing (holds the lock)
        {
            let _held = locked(&wire.state);
            assert_eq!(wire.try_answer("txn-1", payload, 1), DirectWrite::Declined);
        }
        // the rest of an earlier frame must go first
        locked(&wire.state).unfinished.extend_from_slice(b"tail");
        assert_eq!(wire.try_answer("txn-1", payload, 1), DirectWrite::Declined);
        locked(&wire.state).unfinished.clear();
        // too large to share drachtio's read buffer
        let large = vec![b'x'; LARGE_FRAME + 1];
        assert_eq!(wire.try_answer("txn-1", &large, 1), DirectWrite::Declined);
        // closing: what is owed is the writer's to answer
        locked(&wire.state).closing = true;
        assert_eq!(wire.try_answer("txn-1", payload, 1), DirectWrite::Declined);
        // nothing declined was taken off the owed set
        assert!(locked(&wire.owed).contains("txn-1"));
        // no connection at all
        let idle = Wire::default();
        assert_eq!(idle.try_answer("txn-1", payload, 0), DirectWrite::Declined);
    }
}
