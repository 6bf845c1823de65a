//! The control port: accepting app connections, reading their frames, and answering each
//! message the way drachtio-server does (drachtio-protocol.md §2.13 and §7.6):
//!
//! | app sent                     | reply                              | connection |
//! |------------------------------|------------------------------------|------------|
//! | bad length prefix            | nothing                            | closed     |
//! | fewer than 2 tokens          | `NO\|Invalid message format`       | closed     |
//! | unknown type                 | `NO\|Unknown message type`         | closed     |
//! | wrong secret                 | `NO\|incorrect secret`             | closed     |
//! | response with empty txn id   | `NO\|transaction id missing`       | closed     |
//! | SIP-level failures           | `NOK\|<reason>`                    | kept       |
//!
//! Like drachtio, nothing requires `authenticate` to come first.

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sbc_sidecar::drachtio::frame::FrameDecoder;

use super::apps::AppId;
use super::sip_transport::POLL_INTERVAL;
use super::state::Shared;
use super::{client_txn, server_txn, trace};

/// drachtio accepts at most five length digits, so no app frame can exceed this.
const MAX_APP_PAYLOAD: usize = 99_999;
/// How long a connection being closed is drained, so the peer reads our last reply before the
/// close instead of a reset.
const CLOSE_DRAIN: Duration = Duration::from_millis(500);

/// What happens to the connection after a message was handled.
#[derive(PartialEq, Eq)]
enum Then {
    KeepOpen,
    Close,
}

/// Accepts app connections until the double stops; the listener closes when this returns.
pub(crate) fn run_listener(shared: Arc<Shared>, listener: TcpListener) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !shared.is_stopping() {
        match listener.accept() {
            Ok((stream, remote)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                // A stuck app must not block the double (writes happen under the shared lock).
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let Ok(writer) = stream.try_clone() else { continue };
                let app = shared.lock().apps.add(writer);
                trace(format_args!("app {app} connected from {remote}"));
                shared.spawn("app", move |shared| serve_app(shared, app, stream));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

fn serve_app(shared: Arc<Shared>, app: AppId, mut stream: TcpStream) {
    let mut decoder = FrameDecoder::new(MAX_APP_PAYLOAD);
    let mut buf = vec![0u8; 8192];
    'reading: loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    if handle_message(&shared, app, &payload) == Then::Close {
                        close_after_reply(&mut stream);
                        break 'reading;
                    }
                }
                Ok(None) => break,
                // A corrupt length prefix: drachtio drops the client without a word.
                Err(_) => break 'reading,
            }
        }
    }
    shared.lock().apps.remove(app);
}

/// Sends FIN after the reply already written, then reads (and discards) what the app still
/// sends for a moment: closing with unread input would reset the connection and could destroy
/// the reply before the app reads it.
fn close_after_reply(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(POLL_INTERVAL));
    let until = Instant::now() + CLOSE_DRAIN;
    let mut sink = [0u8; 4096];
    while Instant::now() < until {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => continue,
            Err(_) => break,
        }
    }
}

/// The meta line split on every `|` (empty tokens kept) and the SIP text after the first CRLF.
fn split_payload(payload: &[u8]) -> (Vec<String>, &[u8]) {
    let (meta, sip) = match payload.windows(2).position(|w| w == b"\r\n") {
        Some(i) => (&payload[..i], &payload[i + 2..]),
        None => (payload, &payload[payload.len()..]),
    };
    let tokens = String::from_utf8_lossy(meta).split('|').map(str::to_string).collect();
    (tokens, sip)
}

fn handle_message(shared: &Arc<Shared>, app: AppId, payload: &[u8]) -> Then {
    let mut core = shared.lock();
    let core = &mut *core;
    core.apps.log_incoming(payload);
    let (tokens, sip) = split_payload(payload);
    let msg_id = tokens[0].as_str();
    let token = |i: usize| tokens.get(i).map_or("", String::as_str);
    if tokens.len() < 2 {
        core.apps.reply(app, msg_id, "NO|Invalid message format");
        return Then::Close;
    }
    match tokens[1].as_str() {
        "authenticate" => {
            if token(2) != shared.settings.secret {
                core.apps.reply(app, msg_id, "NO|incorrect secret");
                return Then::Close;
            }
            core.apps.set_authenticated(app);
            let s = &shared.settings;
            core.apps.reply(app, msg_id, &format!("OK|{}|{}|{}", s.hostports, s.version, s.hostports));
        }
        "route" => {
            core.apps.add_route(app, token(2));
            core.apps.reply(app, msg_id, "OK");
        }
        "remove_route" => {
            core.apps.remove_routes(app);
            core.apps.reply(app, msg_id, "OK");
        }
        "ping" => {
            core.apps.reply(app, msg_id, "OK|pong");
        }
        "sip" => {
            // drachtio needs `sip|<txn>|<dialog>` at least; fewer tokens trip an assertion there.
            if tokens.len() < 4 {
                core.apps.reply(app, msg_id, "NO|Invalid message format");
                return Then::Close;
            }
            let (txn, dialog, proxy) = (token(2), token(3), token(4));
            if sip.starts_with(b"SIP/") {
                if txn.is_empty() {
                    core.apps.reply(app, msg_id, "NO|transaction id missing");
                    return Then::Close;
                }
                server_txn::on_app_response(shared, core, app, msg_id, txn, sip);
            } else if txn.is_empty() {
                client_txn::on_app_request(shared, core, app, msg_id, dialog, proxy, sip);
            } else {
                client_txn::on_app_cancel(shared, core, app, msg_id, txn, sip);
            }
        }
        "proxy" => {
            if tokens.len() < 4 {
                core.apps.reply(app, msg_id, "NO|Invalid proxy request: not enough information provided");
                return Then::Close;
            }
            // Not needed by the sidecar; said plainly rather than half-imitated.
            core.apps.reply(app, msg_id, "NOK|proxy is not supported by the drachtio double");
        }
        _ => {
            core.apps.reply(app, msg_id, "NO|Unknown message type");
            return Then::Close;
        }
    }
    Then::KeepOpen
}
