//! Requests from the network, the way drachtio handles them before and after the app answers.
//!
//! * A new request goes to one app (round-robin per verb) with a fresh transaction id, or gets
//!   `503 Service Unavailable` when nobody routed its method.
//! * While it waits for the app ("pending"), retransmissions are dropped silently; after 64 s
//!   without an answer it is forgotten, still without any SIP response.
//! * The app's final response goes out once; retransmissions of the request in the next 32 s
//!   (timer J, UDP) get the same bytes again and the app hears nothing of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::apps::AppId;
use super::build_response::{app_response, stack_response};
use super::sip_text::{header_param, stamp_top_via, SipText};
use super::sip_transport::{send, Peer, Transport};
use super::state::{Core, Shared};
use super::{ids, trace};

/// drachtio's pending-request timer.
const PENDING_LIFETIME: Duration = Duration::from_secs(64);
/// Timer J on UDP: how long a final response is kept for retransmitted requests.
const COMPLETED_LIFETIME: Duration = Duration::from_secs(32);

/// Methods that only make sense inside a dialog; the double keeps no dialogs, so (like drachtio
/// for an unknown dialog) it answers them 481 when they carry a To tag.
const DIALOG_ONLY_WITH_TAG: &[&str] = &["INVITE", "BYE", "UPDATE", "PRACK"];

struct Pending {
    key: String,
    /// The request as delivered to the app (top Via stamped), for building responses.
    request: SipText,
    method: String,
    peer: Peer,
    app: AppId,
    /// One To tag per server transaction, so a provisional and the final agree.
    to_tag: String,
    received_at: Instant,
    /// INVITE only: the latest provisional, resent when the INVITE is retransmitted.
    last_provisional: Option<Vec<u8>>,
}

struct Completed {
    response: Vec<u8>,
    until: Instant,
}

#[derive(Default)]
pub(crate) struct ServerTransactions {
    pending: HashMap<String, Pending>,
    /// Retransmission key → transaction id of the pending request.
    pending_by_key: HashMap<String, String>,
    /// Retransmission key → the final response sent.
    completed: HashMap<String, Completed>,
}

/// drachtio's retransmission key: `Call-ID|CSeq method|CSeq number|top Via branch`.
fn retransmission_key(request: &SipText, method: &str) -> Option<String> {
    let call_id = request.get("Call-ID")?;
    let (number, _) = request.cseq()?;
    let branch = request.top_via_branch().unwrap_or("");
    Some(format!("{call_id}|{method}|{number}|{branch}"))
}

/// `<Call-ID>;from-tag=<tag>` for dialog-creating methods, empty otherwise.
fn dialog_id(request: &SipText, method: &str) -> String {
    if method != "INVITE" && method != "SUBSCRIBE" {
        return String::new();
    }
    let call_id = request.get("Call-ID").unwrap_or("");
    let from_tag = request.get("From").and_then(|f| header_param(f, "tag")).unwrap_or("");
    format!("{call_id};from-tag={from_tag}")
}

fn send_or_log(shared: &Shared, core: &mut Core, peer: &Peer, bytes: &[u8]) {
    if let Err(e) = send(shared, core, peer, bytes) {
        trace(format_args!("could not send to {}: {e}", peer.addr));
    }
}

pub(crate) fn on_request(shared: &Arc<Shared>, core: &mut Core, peer: Peer, raw: &[u8], request: &SipText) {
    let Some(method) = request.method().map(str::to_string) else { return };
    // Without these the stack answers 400; the double just drops it.
    let Some(key) = retransmission_key(request, &method) else { return };
    if request.get("Via").is_none() || request.get("From").is_none() || request.get("To").is_none() {
        return;
    }
    // ACKs end INVITE transactions inside the stack; there is nothing to deliver.
    if method == "ACK" {
        return;
    }
    if let Some(done) = core.server.completed.get(&key) {
        let response = done.response.clone();
        send_or_log(shared, core, &peer, &response);
        return;
    }
    if let Some(txn) = core.server.pending_by_key.get(&key) {
        let provisional = core.server.pending.get(txn).and_then(|p| p.last_provisional.clone());
        if let Some(provisional) = provisional {
            send_or_log(shared, core, &peer, &provisional);
        }
        return;
    }
    // What the stack holds from here on, and what every response copies its Via from.
    let delivered_raw = stamp_top_via(raw, peer.addr);
    let Some(delivered) = SipText::parse(&delivered_raw) else { return };
    if method == "CANCEL" {
        on_cancel(shared, core, peer, raw, &delivered_raw, &delivered);
        return;
    }
    let to_tag = ids::new_tag();
    let has_to_tag = delivered.get("To").and_then(|to| header_param(to, "tag")).is_some();
    if has_to_tag && DIALOG_ONLY_WITH_TAG.contains(&method.as_str()) {
        send_or_log(shared, core, &peer, &stack_response(&delivered, 481, &to_tag));
        return;
    }
    let Some(app) = core.apps.pick_for(&method) else {
        send_or_log(shared, core, &peer, &stack_response(&delivered, 503, &to_tag));
        return;
    };
    if method == "INVITE" {
        send_or_log(shared, core, &peer, &stack_response(&delivered, 100, &to_tag));
    }
    let txn = ids::new_uuid();
    let local = shared.settings.sip_addr;
    // The bytes token is the size as received, not the size of the (stamped) text delivered.
    let mut frame = format!(
        "{}|sip|network|{}|{}|{}|{}|{}|{txn}||{}|{}|\r\n",
        ids::new_uuid(),
        raw.len(),
        peer.transport.token(),
        peer.addr.ip(),
        peer.addr.port(),
        ids::time_token(),
        local.ip(),
        local.port()
    )
    .into_bytes();
    frame.extend_from_slice(&delivered_raw);
    core.apps.send(app, frame);
    core.server.pending_by_key.insert(key.clone(), txn.clone());
    core.server.pending.insert(
        txn,
        Pending {
            key,
            request: delivered,
            method,
            peer,
            app,
            to_tag,
            received_at: Instant::now(),
            last_provisional: None,
        },
    );
}

/// A CANCEL for an INVITE the app has not answered finally: the stack answers 200 to the CANCEL
/// and 487 to the INVITE, then tells the app with the INVITE's transaction id.
fn on_cancel(shared: &Arc<Shared>, core: &mut Core, peer: Peer, raw: &[u8], delivered_raw: &[u8], cancel: &SipText) {
    let invite_txn = retransmission_key(cancel, "INVITE").and_then(|k| core.server.pending_by_key.get(&k).cloned());
    let Some(pending) = invite_txn.and_then(|txn| core.server.pending.remove(&txn).map(|p| (txn, p))) else {
        send_or_log(shared, core, &peer, &stack_response(cancel, 481, &ids::new_tag()));
        return;
    };
    let (txn, invite) = pending;
    core.server.pending_by_key.remove(&invite.key);
    send_or_log(shared, core, &peer, &stack_response(cancel, 200, &invite.to_tag));
    let terminated = stack_response(&invite.request, 487, &invite.to_tag);
    send_or_log(shared, core, &invite.peer, &terminated);
    core.server
        .completed
        .insert(invite.key.clone(), Completed { response: terminated, until: Instant::now() + COMPLETED_LIFETIME });
    let mut frame = format!(
        "{}|sip|network|{}|{}|{}|{}|{}|{txn}||\r\n",
        ids::new_uuid(),
        raw.len(),
        peer.transport.token(),
        peer.addr.ip(),
        peer.addr.port(),
        ids::time_token()
    )
    .into_bytes();
    frame.extend_from_slice(delivered_raw);
    core.apps.send(invite.app, frame);
}

/// The app answered a delivered request (`<id>|sip|<txn>|\r\n<response>`).
pub(crate) fn on_app_response(shared: &Arc<Shared>, core: &mut Core, app: AppId, msg_id: &str, txn: &str, sip: &[u8]) {
    let Some(pending) = core.server.pending.get(txn) else {
        core.apps.reply(app, msg_id, "NOK|Response not sent due to unknown transaction");
        return;
    };
    let Some((wire, status)) =
        SipText::parse(sip).and_then(|r| Some((app_response(&pending.request, &r, &pending.to_tag)?, r.status()?)))
    else {
        core.apps.reply(app, msg_id, "NOK|Unknown server error sending response");
        return;
    };
    let peer = pending.peer;
    let method = pending.method.clone();
    let dialog = dialog_id(&pending.request, &method);
    if let Err(e) = send(shared, core, &peer, &wire) {
        trace(format_args!("response to {} not sent: {e}", peer.addr));
        let reason = match peer.transport {
            Transport::Tcp => "transport for response has been shutdown or closed",
            Transport::Udp => "failed sending, possibly due to far end closing socket",
        };
        core.apps.reply(app, msg_id, &format!("NOK|{reason}"));
        return;
    }
    let echo_meta = format!(
        "OK|application|{}||{}|{}|{}|{txn}|{dialog}||Msg sent:|",
        wire.len(),
        peer.addr.ip(),
        peer.addr.port(),
        ids::time_token()
    );
    core.apps.reply_with_sip(app, msg_id, &echo_meta, &wire);

    if status < 200 && method == "INVITE" {
        if let Some(p) = core.server.pending.get_mut(txn) {
            p.last_provisional = Some(wire);
        }
        return;
    }
    let Some(done) = core.server.pending.remove(txn) else { return };
    core.server.pending_by_key.remove(&done.key);
    let final_response = if status < 200 {
        // A non-INVITE server transaction released after a provisional: the stack answers 500
        // itself, and a later final from the app meets an unknown transaction.
        let internal_error = stack_response(&done.request, 500, &done.to_tag);
        send_or_log(shared, core, &peer, &internal_error);
        internal_error
    } else {
        wire
    };
    if peer.transport == Transport::Udp {
        core.server
            .completed
            .insert(done.key, Completed { response: final_response, until: Instant::now() + COMPLETED_LIFETIME });
    }
}

/// Forgets requests nobody answered within 64 s and final responses past timer J.
pub(crate) fn expire(core: &mut Core, now: Instant) {
    let server = &mut core.server;
    let stale: Vec<String> = server
        .pending
        .iter()
        .filter(|(_, p)| now.duration_since(p.received_at) >= PENDING_LIFETIME)
        .map(|(txn, _)| txn.clone())
        .collect();
    for txn in stale {
        if let Some(p) = server.pending.remove(&txn) {
            server.pending_by_key.remove(&p.key);
        }
    }
    server.completed.retain(|_, c| c.until > now);
}
