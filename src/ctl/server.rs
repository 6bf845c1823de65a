//! The CLI socket server role: one thread, one `mio::Poll`.
//!
//! Why an event loop rather than a thread per connection: the runtime config map and the
//! drachtio/regbot status belong to this one thread (no locks, and the Node sidecar's FIFO of
//! config operations is just the order lines are handled in), a client that connects and
//! sends nothing costs a map entry instead of a blocked thread, and the number of clients is
//! bounded by [`MAX_CONNECTIONS`] without a thread budget. Commands that touch Redis run inline;
//! they are bounded by the pool's timeout, and this is an operator socket, not a data path.
//! So do regbot snapshot queries (`status`, `regbot-list`), each bounded by 500 ms. `bans` and
//! `bans-clear` take the ban table's mutex for a moment, as every authentication does.
//!
//! The loop wakes at least every [`POLL_INTERVAL`] to pick up drachtio connection events,
//! regbot status and the shutdown signal from their crossbeam channels, so a shutdown
//! completes within that interval (plus at most one Redis timeout).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use log::{debug, info, warn, Level};
use mio::event::Event;
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

use super::commands::Commands;
use super::peer::{self, PeerPolicy};
use super::protocol::{error, failure, MAX_LINE_BYTES};
use super::CtlError;
use crate::drachtio::ConnectionEvent;
use crate::regbot::StatusRequest;
use crate::registrar::fair_pool::LoadProbe;
use crate::registrar::Registrar;
use crate::shared::Shared;
use crate::throttle::Refusals;

const LISTENER: Token = Token(0);
/// Longest the loop sleeps before looking at its channels again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Clients served at once; more are told `Too many connections` and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// A client that lets this much of its replies pile up unread is disconnected.
const MAX_PENDING_OUTPUT: usize = 1024 * 1024;
const READ_CHUNK: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct CtlSettings {
    /// `JAMBONES_CLUSTER_ID` (`default` when unset): the prefix of the Redis set names.
    pub cluster_id: String,
    /// `SBC_CTL_GROUP`: members of this group may use the socket too (it is then made
    /// group-accessible, mode 0660, owned by this group). `None`: root and the daemon's user.
    pub group: Option<String>,
}

/// The CLI socket server role. [`CtlServer::bind`] creates the socket (so startup fails
/// early and clearly), [`CtlServer::run`] serves it until shutdown and removes it.
pub struct CtlServer {
    poll: Poll,
    listener: UnixListener,
    commands: Commands,
    /// Who may talk to us (checked with SO_PEERCRED on every accepted client).
    peers: PeerPolicy,
    /// Refused clients are logged once per interval.
    refused: Refusals,
    /// Last field: dropped (and the socket file removed) after the listener is closed.
    socket: SocketFile,
}

impl CtlServer {
    /// Binds the socket at `path`, replacing a stale socket left by a previous run, and
    /// restricts it to mode 0600.
    ///
    /// Refuses to delete anything that is not a socket, and a socket another process still
    /// accepts connections on. `conn_events` keeps the drachtio part of `status` current; the
    /// regbot part shows `standby` and zeros unless [`CtlServer::with_regbot`] links the regbot
    /// role's snapshot queries.
    pub fn bind(
        path: impl AsRef<Path>,
        settings: CtlSettings,
        shared: &Shared,
        conn_events: Receiver<ConnectionEvent>,
    ) -> Result<CtlServer, CtlError> {
        let path = path.as_ref().to_path_buf();
        remove_stale_socket(&path)?;
        let mut listener = UnixListener::bind(&path).map_err(|source| CtlError::Bind { path: path.clone(), source })?;
        // Until this chmod the socket has the umask's mode; connecting needs write permission,
        // which the usual umask (022) already withholds from everybody but the owner.
        if let Err(source) = fs::set_permissions(&path, fs::Permissions::from_mode(0o600)) {
            let _ = fs::remove_file(&path);
            return Err(CtlError::Permissions { path, source });
        }
        let group = match &settings.group {
            None => None,
            Some(name) => {
                let Some(gid) = peer::group_gid(name) else {
                    let _ = fs::remove_file(&path);
                    return Err(CtlError::UnknownGroup(name.clone()));
                };
                let shared = std::os::unix::fs::chown(&path, None, Some(gid))
                    .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o660)));
                if let Err(source) = shared {
                    let _ = fs::remove_file(&path);
                    return Err(CtlError::Permissions { path, source });
                }
                Some((name.clone(), gid))
            }
        };
        let socket =
            SocketFile::new(path.clone()).map_err(|source| CtlError::Inspect { path: path.clone(), source })?;
        // The socket file is ours: its owner is the uid we run as.
        let peers = PeerPolicy { own_uid: socket.uid, group };
        let poll = Poll::new().map_err(CtlError::Poll)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map_err(CtlError::Poll)?;
        info!("CLI server started socket={}", path.display());
        Ok(CtlServer {
            poll,
            listener,
            commands: Commands::new(&settings.cluster_id, shared.redis.clone(), Arc::clone(&shared.bans), conn_events),
            peers,
            refused: Refusals::new(),
            socket,
        })
    }

    /// Links `status` and `regbot-list` to the regbot role, which answers snapshot requests
    /// sent on `queries` (`RegbotHandles::status`). Without it, `regbot-list` fails with
    /// `Regbot not running` and `status` shows `standby` and zeros.
    pub fn with_regbot(mut self, queries: Sender<StatusRequest>) -> CtlServer {
        self.commands.set_regbot_queries(queries);
        self
    }

    /// Shows how busy the registrar's auth workers are in `status`.
    pub fn with_auth_load(mut self, load: LoadProbe) -> CtlServer {
        self.commands.set_auth_load(load);
        self
    }

    /// Links `status` to the registrar: store health, open webhook breakers, active bans and
    /// the REGISTER outcomes of the last minute. Without it `status` has none of these.
    pub fn with_registrar(mut self, registrar: Arc<Registrar>) -> CtlServer {
        self.commands.set_registrar(registrar);
        self
    }

    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// Serves clients until `shutdown` receives a message or is disconnected, then closes
    /// every connection and removes the socket file.
    pub fn run(mut self, shutdown: Receiver<()>) -> Result<(), CtlError> {
        let mut connections: HashMap<Token, Connection> = HashMap::new();
        let mut events = Events::with_capacity(64);
        let mut next_token = 1usize;
        // Set when accept failed with something other than WouldBlock (EMFILE, …): the queued
        // clients will not raise another edge, so accepting is retried on every wake-up.
        let mut retry_accept = false;
        loop {
            match shutdown.try_recv() {
                Ok(()) | Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            if let Err(e) = self.poll.poll(&mut events, Some(POLL_INTERVAL)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(CtlError::Poll(e));
            }
            // After the poll, so that a status request sees every event sent before it.
            self.take_channel_updates();
            if retry_accept {
                retry_accept = self.accept(&mut connections, &mut next_token);
            }
            for event in events.iter() {
                if event.token() == LISTENER {
                    retry_accept = self.accept(&mut connections, &mut next_token);
                    continue;
                }
                let token = event.token();
                let keep = match connections.get_mut(&token) {
                    Some(conn) => conn.serve(event, &mut self.commands),
                    None => continue,
                };
                if !keep {
                    if let Some(mut conn) = connections.remove(&token) {
                        let _ = self.poll.registry().deregister(&mut conn.stream);
                    }
                }
            }
        }
        info!("CLI server stopped clients={} socket={}", connections.len(), self.socket.path.display());
        Ok(())
    }

    /// Keeps the channels from piling up between requests; `Commands` also drains them right
    /// before it answers a line, so a reply reflects every event sent before the request.
    fn take_channel_updates(&mut self) {
        self.commands.take_updates();
    }

    /// Accepts every queued client. Returns true when accepting must be retried later.
    fn accept(&mut self, connections: &mut HashMap<Token, Connection>, next_token: &mut usize) -> bool {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("CLI socket accept failed: {e}");
                    return true;
                }
            };
            if connections.len() >= MAX_CONNECTIONS {
                warn!("CLI socket: {MAX_CONNECTIONS} clients connected; refusing another");
                let _ = stream.write(reply_line(&failure(error::TOO_MANY_CONNECTIONS)).as_bytes());
                continue;
            }
            if let Err(refusal) = self.check_peer(&stream) {
                let _ = stream.write(reply_line(&failure(&refusal)).as_bytes());
                continue;
            }
            let token = Token(*next_token);
            *next_token = next_token.checked_add(1).unwrap_or(1).max(1);
            if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
                warn!("CLI socket: cannot register client: {e}");
                continue;
            }
            debug!("CLI client connected token={}", token.0);
            connections.insert(token, Connection::new(stream));
        }
    }
}

impl CtlServer {
    /// Lets root, our own user and `SBC_CTL_GROUP` members in; anyone else gets the error
    /// line returned here, and the log one line per interval.
    fn check_peer(&self, stream: &UnixStream) -> Result<(), String> {
        match peer::peer_of(stream) {
            Ok(p) if self.peers.allows(&p) => Ok(()),
            Ok(p) => {
                self.refused.note_at(Level::Warn, "ctl peer", || {
                    format!(
                        "CLI socket: refused a client uid={} gid={} pid={} (not root, our user or SBC_CTL_GROUP)",
                        p.uid, p.gid, p.pid
                    )
                });
                Err(peer::refusal(p.uid))
            }
            Err(e) => {
                self.refused.note_at(Level::Warn, "ctl peer unknown", || {
                    format!("CLI socket: refused a client whose credentials cannot be read: {e}")
                });
                Err(format!("Permission denied: cannot read the caller's credentials: {e}"))
            }
        }
    }
}

/// One client: its partial input line and the replies not yet written.
struct Connection {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Inside a line that was already rejected as too long: bytes are dropped up to its end.
    discarding: bool,
    /// The client closed its sending side; the connection ends once the replies are out.
    read_closed: bool,
}

impl Connection {
    fn new(stream: UnixStream) -> Connection {
        Connection { stream, input: Vec::new(), output: Vec::new(), discarding: false, read_closed: false }
    }

    /// Handles one readiness event. Returns false when the connection is finished.
    fn serve(&mut self, event: &Event, commands: &mut Commands) -> bool {
        if event.is_error() {
            return false;
        }
        if (event.is_readable() || event.is_read_closed()) && self.read(commands).is_err() {
            return false;
        }
        if self.flush().is_err() {
            return false;
        }
        if self.output.len() > MAX_PENDING_OUTPUT {
            warn!("CLI client does not read its replies; disconnecting it");
            return false;
        }
        !(self.read_closed && self.output.is_empty())
    }

    /// Reads until the socket has nothing more (the poll is edge-triggered), answering every
    /// complete line as it arrives.
    fn read(&mut self, commands: &mut Commands) -> io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        while !self.read_closed {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.read_closed = true,
                Ok(n) => {
                    self.absorb(&chunk[..n], commands);
                    self.flush()?;
                    if self.output.len() > MAX_PENDING_OUTPUT {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Splits input into lines and queues one reply per non-blank line. A line longer than
    /// [`MAX_LINE_BYTES`] gets `Invalid command` as soon as it is known to be too long, and
    /// the rest of it, up to its newline, is dropped; the next line is served normally.
    fn absorb(&mut self, bytes: &[u8], commands: &mut Commands) {
        self.input.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(len) = self.input[start..].iter().position(|b| *b == b'\n') {
            let line = &self.input[start..start + len];
            if self.discarding {
                self.discarding = false;
            } else if line.len() > MAX_LINE_BYTES {
                push_reply(&mut self.output, &failure(error::INVALID_COMMAND));
            } else {
                let text = String::from_utf8_lossy(line);
                let text = text.trim();
                if !text.is_empty() {
                    push_reply(&mut self.output, &commands.handle_line(text));
                }
            }
            start += len + 1;
        }
        self.input.drain(..start);
        if self.discarding {
            self.input.clear();
        } else if self.input.len() > MAX_LINE_BYTES {
            push_reply(&mut self.output, &failure(error::INVALID_COMMAND));
            self.input.clear();
            self.discarding = true;
        }
    }

    /// Writes as much pending output as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == self.output.len() {
                break Ok(());
            }
            match self.stream.write(&self.output[written..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.output.drain(..written);
        result
    }
}

fn reply_line(reply: &Value) -> String {
    let mut line = reply.to_string();
    line.push('\n');
    line
}

fn push_reply(output: &mut Vec<u8>, reply: &Value) {
    output.extend_from_slice(reply_line(reply).as_bytes());
}

/// Clears the way for binding: nothing there is fine, a socket nobody listens on is removed,
/// anything else is an error.
fn remove_stale_socket(path: &Path) -> Result<(), CtlError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CtlError::Inspect { path: path.to_path_buf(), source }),
    };
    // symlink_metadata: a symlink is "not a socket", so we never delete through one.
    if !meta.file_type().is_socket() {
        return Err(CtlError::NotASocket(path.to_path_buf()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(CtlError::InUse(path.to_path_buf()));
    }
    match fs::remove_file(path) {
        Ok(()) => {
            info!("CLI server: removed stale socket {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CtlError::RemoveStale { path: path.to_path_buf(), source }),
    }
}

/// The socket file we created. Removed when dropped, but only if the path still names our
/// socket: a newer instance that replaced it keeps its own.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Its owner: the uid the daemon runs as.
    uid: u32,
}

impl SocketFile {
    fn new(path: PathBuf) -> io::Result<SocketFile> {
        let meta = fs::symlink_metadata(&path)?;
        Ok(SocketFile { path, dev: meta.dev(), ino: meta.ino(), uid: meta.uid() })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    warn!("CLI socket {}: cannot remove: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}
