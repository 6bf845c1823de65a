//! Requests the app sends, from the OK echo to the last response (drachtio-protocol.md §2.5,
//! §7.1, §7.3, §7.4):
//!
//! * the echo (`OK|application|…|<txn>|Msg sent:|` + the request as sent) is written before the
//!   request goes out, so it always precedes every response frame for that transaction;
//! * responses are matched by top Via branch (and CSeq method); 100 Trying is swallowed, other
//!   responses are delivered, and after a final the transaction is forgotten;
//! * UDP retransmits after 1, 2, 4, 4, … s (sofia's fork raises the first interval from T1 =
//!   500 ms to 1 s; T2 = 4 s); without a final response by `uac_timeout` (timer F, 32 s) the app
//!   gets a synthetic `408 Request Timeout`; a refused TCP connect gives a synthetic `503`, and
//!   so does a closed UDP port (the ICMP port-unreachable, read from the socket's error queue).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::apps::AppId;
use super::build_request::{build_ack, build_cancel, build_request, validate_start_line, HopUri, OutgoingRequest};
use super::sip_text::{header_param, SipText};
use super::sip_transport::{adopt_stream, send, Peer, Transport};
use super::state::{Core, Shared};
use super::{ids, trace};

/// First UDP retransmission interval (the fork's minimum; RFC T1 would be 500 ms).
const FIRST_INTERVAL: Duration = Duration::from_secs(1);
/// T2: the cap on the retransmission interval of non-INVITE requests.
const T2: Duration = Duration::from_secs(4);
/// Timer C: an INVITE that got a provisional waits this long for its final response.
const INVITE_PROCEEDING_TIMEOUT: Duration = Duration::from_secs(180);
/// Upper bound on a TCP connect, whatever the configured transaction timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct ClientTransaction {
    txn: String,
    app: AppId,
    request: OutgoingRequest,
    /// Next hop; for TCP the connection is filled in once connected.
    hop: Peer,
    next_retransmit: Option<Instant>,
    interval: Duration,
    deadline: Instant,
    /// A CANCEL's responses are consumed by the stack; only the INVITE's 487 reaches the app.
    report_responses: bool,
}

impl ClientTransaction {
    fn is_invite(&self) -> bool {
        self.request.method == "INVITE"
    }
}

/// Live transactions by `<branch>|<METHOD>` (a CANCEL shares its INVITE's branch). Branches are
/// never reused, so a retransmitted final response of a finished transaction finds nothing and
/// is dropped, as the stack's timer K would.
#[derive(Default)]
pub(crate) struct ClientTransactions {
    live: HashMap<String, ClientTransaction>,
}

fn key_of(branch: &str, method: &str) -> String {
    format!("{branch}|{}", method.to_ascii_uppercase())
}

/// A new request from the app: `<id>|sip||<dialog>[|<proxy>]\r\n<request>`.
pub(crate) fn on_app_request(
    shared: &Arc<Shared>,
    core: &mut Core,
    app: AppId,
    msg_id: &str,
    dialog: &str,
    proxy: &str,
    sip: &[u8],
) {
    let (message, method, request_uri) = match parse_new_request(sip) {
        Ok(parsed) => parsed,
        Err(reason) => {
            core.apps.reply(app, msg_id, &format!("NOK|{reason}"));
            return;
        }
    };
    if !dialog.is_empty() {
        // The double keeps no dialogs.
        core.apps.reply(app, msg_id, "NOK|Server error: unable to find dialog for dialog id provided");
        return;
    }
    let own = shared.settings.sip_addr;
    let is_myself = |hop: &HopUri| hop.socket_addr() == Some(own);
    let target_uri = HopUri::parse(&request_uri);
    if target_uri.as_ref().is_some_and(is_myself) {
        core.apps.reply(app, msg_id, "NOK|can not send request to myself");
        return;
    }
    let hop_uri = if proxy.is_empty() { target_uri } else { HopUri::parse(proxy) };
    let Some(hop_uri) = hop_uri else {
        core.apps.reply(app, msg_id, &format!("NOK|invalid request-uri: {}", message.start_line));
        return;
    };
    if is_myself(&hop_uri) {
        core.apps.reply(app, msg_id, "NOK|can not send request to myself");
        return;
    }
    let transport = match (hop_uri.secure, hop_uri.transport.as_deref()) {
        (false, None | Some("udp")) => Transport::Udp,
        (false, Some("tcp")) => Transport::Tcp,
        _ => {
            core.apps.reply(app, msg_id, "NOK|requested protocol/transport not available");
            return;
        }
    };
    let request = match build_request(&message, &method, &request_uri, own, transport, &shared.call_ids) {
        Ok(request) => request,
        Err(reason) => {
            core.apps.reply(app, msg_id, &format!("NOK|{reason}"));
            return;
        }
    };
    let target = hop_uri.socket_addr();
    let hop = Peer {
        transport,
        // An unresolvable host never gets a packet; the address only fills the echo.
        addr: target.unwrap_or(own),
        connection: None,
    };
    start_transaction(shared, core, app, msg_id, request, hop, target.is_some(), true);
}

/// The app's request text with its method and Request-URI, or the NOK reason. The reason
/// quotes the whole start line, as drachtio does.
fn parse_new_request(sip: &[u8]) -> Result<(SipText, String, String), String> {
    let Some(message) = SipText::parse(sip) else {
        let first_line = sip.split(|b| *b == b'\n').next().unwrap_or(b"");
        return Err(format!("invalid request-uri: {}", String::from_utf8_lossy(first_line).trim_end()));
    };
    let (method, request_uri) = validate_start_line(&message.start_line)?;
    Ok((message, method, request_uri))
}

/// `<id>|sip|<INVITE txn>|\r\nCANCEL …`: cancels one of the app's pending INVITEs.
pub(crate) fn on_app_cancel(shared: &Arc<Shared>, core: &mut Core, app: AppId, msg_id: &str, txn: &str, sip: &[u8]) {
    let is_cancel = SipText::parse(sip).is_some_and(|m| m.method() == Some("CANCEL"));
    if !is_cancel {
        // drachtio asserts on a non-CANCEL request with a transaction id; release builds never
        // answer. The double stays silent too, but says why on its trace.
        trace(format_args!("request with transaction id {txn} is not a CANCEL: no reply (as drachtio)"));
        return;
    }
    let invite = core.client.live.values().find(|t| t.txn == txn && t.is_invite()).map(|t| (t.request.clone(), t.hop));
    let Some((invite, hop)) = invite else {
        core.apps.reply(app, msg_id, &format!("NOK|unable to cancel unknown transaction id: {txn}"));
        return;
    };
    start_transaction(shared, core, app, msg_id, build_cancel(&invite), hop, true, false);
}

/// Echoes the request to the app, records the transaction and puts the request on its way.
#[allow(clippy::too_many_arguments)]
fn start_transaction(
    shared: &Arc<Shared>,
    core: &mut Core,
    app: AppId,
    msg_id: &str,
    request: OutgoingRequest,
    mut hop: Peer,
    reachable: bool,
    report_responses: bool,
) {
    let txn = ids::new_uuid();
    // For UDP the echo names drachtio's own socket; for TCP the peer (as captured).
    let echo_addr = match hop.transport {
        Transport::Udp => shared.settings.sip_addr,
        Transport::Tcp => hop.addr,
    };
    let echo_meta = format!(
        "OK|application|{}|{}|{}|{}|{}|{txn}|Msg sent:|",
        request.wire.len(),
        hop.transport.token(),
        echo_addr.ip(),
        echo_addr.port(),
        ids::time_token()
    );
    core.apps.reply_with_sip(app, msg_id, &echo_meta, &request.wire);

    let key = key_of(&request.branch, &request.method);
    let now = Instant::now();
    let wire = request.wire.clone();
    let transaction = ClientTransaction {
        txn,
        app,
        request,
        hop,
        next_retransmit: None,
        interval: FIRST_INTERVAL,
        deadline: now + shared.settings.uac_timeout,
        report_responses,
    };
    core.client.live.insert(key.clone(), transaction);

    if !reachable {
        fail(core, &key, 503);
        return;
    }
    match hop.transport {
        Transport::Udp => {
            if send(shared, core, &hop, &wire).is_err() {
                fail(core, &key, 503);
            } else if let Some(t) = core.client.live.get_mut(&key) {
                t.next_retransmit = Some(now + FIRST_INTERVAL);
            }
        }
        Transport::Tcp => {
            if let Some(existing) = core.sip_connections.find_to(hop.addr) {
                hop.connection = Some(existing);
                if let Some(t) = core.client.live.get_mut(&key) {
                    t.hop = hop;
                }
                if send(shared, core, &hop, &wire).is_err() {
                    fail(core, &key, 503);
                }
            } else {
                let target = hop.addr;
                shared.spawn("sip-connect", move |shared| connect_and_send(shared, key, target));
            }
        }
    }
}

/// Opens the TCP connection for one request (outside the lock: a connect may take a while),
/// then sends the request down it, or fails the transaction with 503.
fn connect_and_send(shared: Arc<Shared>, key: String, target: SocketAddr) {
    let connected = TcpStream::connect_timeout(&target, shared.settings.uac_timeout.min(CONNECT_TIMEOUT));
    let mut core = shared.lock();
    let core = &mut *core;
    let Ok(stream) = connected else {
        fail(core, &key, 503);
        return;
    };
    let connection = adopt_stream(&shared, core, stream, target);
    let Some(t) = core.client.live.get_mut(&key) else { return };
    t.hop.connection = connection;
    let (hop, wire) = (t.hop, t.request.wire.clone());
    if send(&shared, core, &hop, &wire).is_err() {
        fail(core, &key, 503);
    }
}

/// Ends a transaction with a response made up by the stack (408 on timeout, 503 on transport
/// failure): meta `sip|network|0|<proto>||0|<time>|<txn>|<dialog>|`.
fn fail(core: &mut Core, key: &str, status: u16) {
    let Some(t) = core.client.live.remove(key) else { return };
    if !t.report_responses {
        return;
    }
    let reason = if status == 408 { "Request Timeout" } else { "Service Unavailable" };
    let r = &t.request;
    let to = if header_param(&r.to_in_synthetic, "tag").is_some() {
        r.to_in_synthetic.clone()
    } else {
        format!("{};tag={}", r.to_in_synthetic, ids::new_tag())
    };
    let text = format!(
        "SIP/2.0 {status} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        r.via, r.from, r.call_id, r.cseq
    );
    let mut frame = format!(
        "{}|sip|network|0|{}||0|{}|{}|{}|\r\n",
        ids::new_uuid(),
        t.hop.transport.token(),
        ids::time_token(),
        t.txn,
        r.dialog_id()
    )
    .into_bytes();
    frame.extend_from_slice(text.as_bytes());
    // Requests from a connection that has gone are answered to nobody.
    if core.apps.is_live(t.app) {
        core.apps.send(t.app, frame);
    }
}

/// A response from the network.
pub(crate) fn on_response(shared: &Arc<Shared>, core: &mut Core, peer: Peer, raw: &[u8], response: &SipText) {
    let (Some(branch), Some((_, method)), Some(status)) =
        (response.top_via_branch(), response.cseq(), response.status())
    else {
        return;
    };
    let key = key_of(branch, method);
    let now = Instant::now();
    let Some(t) = core.client.live.get_mut(&key) else { return };
    if status < 200 {
        if t.is_invite() {
            // Timer A stops and timer B gives way to timer C once an INVITE is proceeding.
            t.next_retransmit = None;
            t.deadline = t.deadline.max(now + INVITE_PROCEEDING_TIMEOUT);
        } else {
            // Timer E continues at T2 while a non-INVITE is proceeding.
            t.interval = T2;
            t.next_retransmit = Some(now + T2);
        }
        if status == 100 || !t.report_responses {
            return;
        }
        let (app, frame) = (t.app, response_frame(t, &peer, raw));
        core.apps.send(app, frame);
        return;
    }
    let Some(t) = core.client.live.remove(&key) else { return };
    if t.is_invite() && status >= 300 {
        let ack = build_ack(&t.request, response);
        if let Err(e) = send(shared, core, &t.hop, &ack) {
            trace(format_args!("ACK to {} not sent: {e}", t.hop.addr));
        }
    }
    if t.report_responses && core.apps.is_live(t.app) {
        let frame = response_frame(&t, &peer, raw);
        core.apps.send(t.app, frame);
    }
}

/// `<id>|sip|network|<bytes>|<proto>|<srcIp>|<srcPort>|<time>|<txn>|<dialog>|\r\n<response>`
fn response_frame(t: &ClientTransaction, peer: &Peer, raw: &[u8]) -> Vec<u8> {
    let mut frame = format!(
        "{}|sip|network|{}|{}|{}|{}|{}|{}|{}|\r\n",
        ids::new_uuid(),
        raw.len(),
        peer.transport.token(),
        peer.addr.ip(),
        peer.addr.port(),
        ids::time_token(),
        t.txn,
        t.request.dialog_id()
    )
    .into_bytes();
    frame.extend_from_slice(raw);
    frame
}

/// An ICMP destination-unreachable came back for a datagram sent to `addr`: every UDP
/// request still waiting for an answer from there ends with a synthetic `503`, as sofia's
/// transport error does.
pub(crate) fn on_unreachable(core: &mut Core, addr: SocketAddr) {
    let keys: Vec<String> = core
        .client
        .live
        .iter()
        .filter(|(_, t)| t.hop.transport == Transport::Udp && t.hop.addr == addr)
        .map(|(key, _)| key.clone())
        .collect();
    for key in keys {
        trace(format_args!("{addr} unreachable: 503"));
        fail(core, &key, 503);
    }
}

/// Runs the timers: UDP retransmissions and transaction timeouts.
pub(crate) fn tick(shared: &Shared, core: &mut Core, now: Instant) {
    let mut timed_out: Vec<String> = Vec::new();
    for (key, t) in core.client.live.iter_mut() {
        if now >= t.deadline {
            timed_out.push(key.clone());
            continue;
        }
        let Some(due) = t.next_retransmit.filter(|due| now >= *due) else { continue };
        if t.hop.transport == Transport::Udp {
            trace(format_args!("retransmitting to {}", t.hop.addr));
            let _ = shared.udp.send_to(&t.request.wire, t.hop.addr);
        }
        t.interval = if t.is_invite() { t.interval * 2 } else { (t.interval * 2).min(T2) };
        t.next_retransmit = Some(due + t.interval);
    }
    for key in timed_out {
        fail(core, &key, 408);
    }
}
