//! The SIP side of the double: one UDP socket and one TCP listener on the same port, the TCP
//! connections (accepted ones and the ones the double opened to send a request), framing of TCP
//! streams, and handing each received message to the server or client transaction layer.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::sip_text::{cut_stream_message, SipText, StreamCut};
use super::state::{Core, Shared};
use super::{client_txn, server_txn, trace, udp_socket};

/// How often blocking loops look at the stop flag.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// As written in control frames: `udp` / `tcp`.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    /// As written in a Via: `UDP` / `TCP`.
    pub(crate) fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

pub(crate) type ConnectionId = u64;

/// The other end of a SIP message: where a request came from, or where one goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// For TCP: the connection the message came on or goes down.
    pub connection: Option<ConnectionId>,
}

struct Connection {
    writer: TcpStream,
    remote: SocketAddr,
}

#[derive(Default)]
pub(crate) struct SipConnections {
    connections: HashMap<ConnectionId, Connection>,
    next_id: ConnectionId,
}

impl SipConnections {
    fn add(&mut self, writer: TcpStream, remote: SocketAddr) -> ConnectionId {
        self.next_id += 1;
        self.connections.insert(self.next_id, Connection { writer, remote });
        self.next_id
    }

    fn remove(&mut self, id: ConnectionId) {
        if let Some(conn) = self.connections.remove(&id) {
            let _ = conn.writer.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn close_all(&mut self) {
        let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        for id in ids {
            self.remove(id);
        }
    }

    /// A live connection to this address, to be reused as sofia reuses its TCP transports.
    pub(crate) fn find_to(&self, remote: SocketAddr) -> Option<ConnectionId> {
        self.connections.iter().find(|(_, c)| c.remote == remote).map(|(id, _)| *id)
    }

    fn write(&mut self, id: ConnectionId, bytes: &[u8]) -> io::Result<()> {
        let conn = self.connections.get_mut(&id).ok_or_else(|| io::Error::from(ErrorKind::NotConnected))?;
        let written = conn.writer.write_all(bytes);
        if written.is_err() {
            self.remove(id);
        }
        written
    }
}

/// Puts one SIP message on the wire towards a peer.
pub(crate) fn send(shared: &Shared, core: &mut Core, peer: &Peer, bytes: &[u8]) -> io::Result<()> {
    trace(format_args!("double -> {} {}: {}", peer.transport.token(), peer.addr, String::from_utf8_lossy(bytes)));
    match peer.transport {
        Transport::Udp => shared.udp.send_to(bytes, peer.addr).map(|_| ()),
        Transport::Tcp => {
            let id = peer.connection.ok_or_else(|| io::Error::from(ErrorKind::NotConnected))?;
            core.sip_connections.write(id, bytes)
        }
    }
}

/// Receives datagrams until the double stops.
pub(crate) fn run_udp(shared: Arc<Shared>) {
    let _ = shared.udp.set_read_timeout(Some(POLL_INTERVAL));
    let mut buf = vec![0u8; 65_536];
    while !shared.is_stopping() {
        match shared.udp.recv_from(&mut buf) {
            Ok((n, from)) => {
                let peer = Peer { transport: Transport::Udp, addr: from, connection: None };
                let mut core = shared.lock();
                on_message(&shared, &mut core, peer, &buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            // An ICMP error for something we sent (IP_RECVERR): fail what went there.
            Err(_) => {
                let unreachable = udp_socket::take_unreachable_destinations(&shared.udp);
                let mut core = shared.lock();
                for addr in unreachable {
                    client_txn::on_unreachable(&mut core, addr);
                }
            }
        }
    }
}

/// Accepts SIP TCP connections until the double stops; the listener closes when this returns.
pub(crate) fn run_tcp_listener(shared: Arc<Shared>, listener: TcpListener) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !shared.is_stopping() {
        match listener.accept() {
            Ok((stream, remote)) => {
                let mut core = shared.lock();
                adopt_stream(&shared, &mut core, stream, remote);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// Registers a connected TCP stream (accepted or opened by the double) and starts its reader.
pub(crate) fn adopt_stream(
    shared: &Arc<Shared>,
    core: &mut Core,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<ConnectionId> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let reader = stream.try_clone().ok()?;
    let id = core.sip_connections.add(stream, remote);
    shared.spawn("sip-tcp", move |shared| read_stream(shared, id, reader, remote));
    Some(id)
}

fn read_stream(shared: Arc<Shared>, id: ConnectionId, mut stream: TcpStream, remote: SocketAddr) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    'reading: loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            match cut_stream_message(&mut pending) {
                StreamCut::Incomplete => break,
                StreamCut::Garbage => break 'reading,
                StreamCut::Message(message) => {
                    let peer = Peer { transport: Transport::Tcp, addr: remote, connection: Some(id) };
                    let mut core = shared.lock();
                    on_message(&shared, &mut core, peer, &message);
                }
            }
        }
    }
    shared.lock().sip_connections.remove(id);
}

/// Requests go to the server transaction layer, responses to the client transaction layer;
/// anything that does not parse as SIP is dropped without a word.
fn on_message(shared: &Arc<Shared>, core: &mut Core, peer: Peer, raw: &[u8]) {
    trace(format_args!("{} {} -> double: {}", peer.transport.token(), peer.addr, String::from_utf8_lossy(raw)));
    let Some(message) = SipText::parse(raw) else { return };
    if message.is_response() {
        client_txn::on_response(shared, core, peer, raw, &message);
    } else {
        server_txn::on_request(shared, core, peer, raw, &message);
    }
}
