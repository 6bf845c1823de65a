//! The application connections on the control port: who is connected and authenticated, which
//! verbs each one routed, round-robin selection, writing frames, and the log of every control
//! frame that went in or out (for the tests' assertions).

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};

use sbc_sidecar::drachtio::frame::encode_unchecked;

use super::{ids, trace, Direction};

pub(crate) type AppId = u64;

/// The frame log is for tests; a long `make run` session keeps only the most recent frames.
const MAX_LOGGED_FRAMES: usize = 100_000;

struct AppConnection {
    /// A clone of the connection's socket used for writing; its reader thread owns the other half.
    writer: TcpStream,
    authenticated: bool,
}

#[derive(Default)]
pub(crate) struct Apps {
    connections: HashMap<AppId, AppConnection>,
    /// `(verb as sent, app)` in registration order; one entry per `route` message, duplicates
    /// included (drachtio keeps them too).
    routes: Vec<(String, AppId)>,
    /// Round-robin position per verb.
    next_pick: HashMap<String, usize>,
    frames: Vec<(Direction, Vec<u8>)>,
    next_id: AppId,
}

impl Apps {
    pub(crate) fn add(&mut self, writer: TcpStream) -> AppId {
        self.next_id += 1;
        self.connections.insert(self.next_id, AppConnection { writer, authenticated: false });
        self.next_id
    }

    /// Forgets a connection and its routes and shuts its socket (which also ends its reader).
    pub(crate) fn remove(&mut self, app: AppId) {
        if let Some(conn) = self.connections.remove(&app) {
            let _ = conn.writer.shutdown(Shutdown::Both);
            trace(format_args!("app {app} disconnected"));
        }
        self.routes.retain(|(_, owner)| *owner != app);
    }

    pub(crate) fn close_all(&mut self) {
        let ids: Vec<AppId> = self.connections.keys().copied().collect();
        for app in ids {
            self.remove(app);
        }
    }

    pub(crate) fn is_live(&self, app: AppId) -> bool {
        self.connections.contains_key(&app)
    }

    pub(crate) fn set_authenticated(&mut self, app: AppId) {
        if let Some(conn) = self.connections.get_mut(&app) {
            conn.authenticated = true;
        }
    }

    pub(crate) fn add_route(&mut self, app: AppId, verb: &str) {
        self.routes.push((verb.to_string(), app));
    }

    /// drachtio's `remove_route` drops every route of the connection, whatever the verb.
    pub(crate) fn remove_routes(&mut self, app: AppId) {
        self.routes.retain(|(_, owner)| *owner != app);
    }

    /// The app that gets the next request of this method: round-robin over the live routes whose
    /// verb equals the lower-cased method (verbs are stored as sent, so `REGISTER` never matches).
    pub(crate) fn pick_for(&mut self, method: &str) -> Option<AppId> {
        let verb = method.to_ascii_lowercase();
        let candidates: Vec<AppId> = self
            .routes
            .iter()
            .filter(|(v, app)| *v == verb && self.connections.contains_key(app))
            .map(|(_, app)| *app)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let position = self.next_pick.entry(verb).or_insert(0);
        let chosen = candidates[*position % candidates.len()];
        *position = position.wrapping_add(1);
        Some(chosen)
    }

    pub(crate) fn log_incoming(&mut self, payload: &[u8]) {
        trace(format_args!("app -> double: {}", String::from_utf8_lossy(payload)));
        self.record(Direction::FromApp, payload.to_vec());
    }

    fn record(&mut self, direction: Direction, payload: Vec<u8>) {
        if self.frames.len() >= MAX_LOGGED_FRAMES {
            self.frames.drain(..MAX_LOGGED_FRAMES / 2);
        }
        self.frames.push((direction, payload));
    }

    /// Writes one frame to an app. A connection that cannot take it is dropped (drachtio drops
    /// clients whose socket fails). Returns whether the frame was written.
    pub(crate) fn send(&mut self, app: AppId, payload: Vec<u8>) -> bool {
        if !self.connections.contains_key(&app) {
            return false;
        }
        trace(format_args!("double -> app: {}", String::from_utf8_lossy(&payload)));
        let frame = encode_unchecked(&payload);
        self.record(Direction::ToApp, payload);
        let written = self.connections.get_mut(&app).map(|conn| conn.writer.write_all(&frame));
        if !matches!(written, Some(Ok(()))) {
            self.remove(app);
            return false;
        }
        true
    }

    /// `<srvId>|response|<msgId>|<rest>`: the server's reply to one app message.
    pub(crate) fn reply(&mut self, app: AppId, msg_id: &str, rest: &str) -> bool {
        self.send(app, format!("{}|response|{msg_id}|{rest}", ids::new_uuid()).into_bytes())
    }

    /// A reply that carries a SIP message after its meta line.
    pub(crate) fn reply_with_sip(&mut self, app: AppId, msg_id: &str, meta_rest: &str, sip: &[u8]) -> bool {
        let mut payload = format!("{}|response|{msg_id}|{meta_rest}\r\n", ids::new_uuid()).into_bytes();
        payload.extend_from_slice(sip);
        self.send(app, payload)
    }

    pub(crate) fn authenticated_count(&self) -> usize {
        self.connections.values().filter(|c| c.authenticated).count()
    }

    /// Distinct verbs routed by connected apps, in the order they were first routed.
    pub(crate) fn routed_verbs(&self) -> Vec<String> {
        let mut verbs: Vec<String> = Vec::new();
        for (verb, app) in &self.routes {
            if self.connections.contains_key(app) && !verbs.contains(verb) {
                verbs.push(verb.clone());
            }
        }
        verbs
    }

    pub(crate) fn frames(&self) -> Vec<(Direction, Vec<u8>)> {
        self.frames.clone()
    }
}
