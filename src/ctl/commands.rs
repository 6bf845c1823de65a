//! What each CLI action does (spec 9.1 plus `status`, `regbot-list`, `bans` and `bans-clear`). The state here belongs to the server
//! thread alone, so the runtime config map needs no lock: the Node sidecar's FIFO queue of
//! config operations is simply the order in which this one thread handles lines.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{info, warn};
use serde_json::{json, Map, Value};

use super::protocol::{action, error, failure, parse_ban_ip, success, validate_server};
use super::regbot_link::{self, QUERY_TIMEOUT};
use super::RegbotStatus;
use crate::bans::Bans;
use crate::drachtio::{ConnectionEvent, ConnectionInfo};
use crate::heartbeat::DrainedServers;
use crate::regbot::{cluster, RegbotRole, StatusRequest};
use crate::registrar::bindings;
use crate::registrar::fair_pool::{LoadProbe, PoolLoad};
use crate::registrar::Registrar;
use crate::store::keys::ClusterSets;
use crate::store::redis::{checkout, RedisConn, RedisPool};

pub(crate) struct Commands {
    sets: ClusterSets,
    /// `JAMBONES_CLUSTER_ID`: prefix of the regbot's cluster keys.
    cluster_id: String,
    redis: RedisPool,
    /// The runtime config map (`set`/`get`/`add`/`remove`/`list`): in memory only, insertion
    /// ordered like the JavaScript `Map` it replaces, and read by nothing else.
    config: Map<String, Value>,
    started: Instant,
    /// The current drachtio connection, `None` while disconnected.
    drachtio: Option<ConnectionInfo>,
    /// Where the regbot role takes snapshot requests; `None` when this daemon has no such role.
    regbot_queries: Option<Sender<StatusRequest>>,
    conn_events: Receiver<ConnectionEvent>,
    /// The registrar's brute-force ban table; `None` when this daemon has none.
    bans: Arc<Bans>,
    /// How busy the registrar's auth workers are; `None` when this daemon has none.
    auth_load: Option<LoadProbe>,
    /// The registrar, for the `status` sections that explain failing registrations.
    registrar: Option<Arc<Registrar>>,
}

impl Commands {
    pub(crate) fn new(
        cluster_id: &str,
        redis: RedisPool,
        bans: Arc<Bans>,
        conn_events: Receiver<ConnectionEvent>,
    ) -> Commands {
        Commands {
            conn_events,
            sets: ClusterSets::new(cluster_id),
            cluster_id: cluster_id.to_string(),
            redis,
            config: Map::new(),
            started: Instant::now(),
            drachtio: None,
            regbot_queries: None,
            bans,
            auth_load: None,
            registrar: None,
        }
    }

    pub(crate) fn set_auth_load(&mut self, load: LoadProbe) {
        self.auth_load = Some(load);
    }

    pub(crate) fn set_registrar(&mut self, registrar: Arc<Registrar>) {
        self.registrar = Some(registrar);
    }

    pub(crate) fn set_regbot_queries(&mut self, queries: Sender<StatusRequest>) {
        self.regbot_queries = Some(queries);
    }

    pub(crate) fn connection_event(&mut self, event: ConnectionEvent) {
        self.drachtio = match event {
            ConnectionEvent::Connected(info) => Some(info),
            ConnectionEvent::Disconnected { .. } => None,
        };
    }

    /// Applies every connection event sent so far.
    pub(crate) fn take_updates(&mut self) {
        while let Ok(event) = self.conn_events.try_recv() {
            self.connection_event(event);
        }
    }

    /// Handles one request line (already trimmed, not blank) and returns the reply.
    pub(crate) fn handle_line(&mut self, line: &str) -> Value {
        self.take_updates();
        let Ok(Value::Object(cmd)) = serde_json::from_str::<Value>(line) else {
            return failure(error::INVALID_COMMAND);
        };
        match cmd.get("action").and_then(Value::as_str) {
            Some(action::SET) => self.set(&cmd),
            Some(action::GET) => self.get(&cmd),
            Some(action::ADD) => self.add(&cmd),
            Some(action::REMOVE) => self.remove(&cmd),
            Some(action::LIST) => self.list(),
            Some(action::FS_DRAIN) => self.drain(&cmd, true),
            Some(action::FS_UNDRAIN) => self.drain(&cmd, false),
            Some(action::FS_DRAINED) => self.drained(),
            Some(action::FS_LIST) => self.fs_list(),
            Some(action::FS_AVAILABLE) => self.fs_available(),
            Some(action::STATUS) => self.status(),
            Some(action::REGBOT_LIST) => self.regbot_list(),
            Some(action::BANS) => self.bans(),
            Some(action::BANS_CLEAR) => self.bans_clear(&cmd),
            _ => failure(error::UNKNOWN_ACTION),
        }
    }

    /// `set`: a missing `value` leaves the key unset, which is what the Node sidecar's
    /// `undefined` value looked like to every other action.
    fn set(&mut self, cmd: &Map<String, Value>) -> Value {
        let Some(key) = config_key(cmd) else {
            return failure(error::INVALID_COMMAND);
        };
        let mut reply = Map::new();
        reply.insert("key".into(), Value::String(key.clone()));
        match cmd.get("value") {
            Some(value) => {
                info!("runtime config updated key={key} value={value}");
                self.config.insert(key, value.clone());
                reply.insert("value".into(), value.clone());
            }
            None => {
                self.config.shift_remove(&key);
            }
        }
        success(reply)
    }

    /// `get`: `value` is omitted when the key is unset.
    fn get(&self, cmd: &Map<String, Value>) -> Value {
        let Some(key) = config_key(cmd) else {
            return failure(error::INVALID_COMMAND);
        };
        let value = self.config.get(&key).cloned();
        let mut reply = Map::new();
        reply.insert("key".into(), Value::String(key));
        if let Some(value) = value {
            reply.insert("value".into(), value);
        }
        success(reply)
    }

    /// `add`: the value is read as a list (a string is a comma list); the item is appended
    /// unless already present. The map is written only when the item was added, as in Node.
    fn add(&mut self, cmd: &Map<String, Value>) -> Value {
        let Some(key) = config_key(cmd) else {
            return failure(error::INVALID_COMMAND);
        };
        let item = cmd.get("item").cloned().unwrap_or(Value::Null);
        let mut array = as_list(self.config.get(&key));
        let added = !array.contains(&item);
        if added {
            array.push(item.clone());
            self.config.insert(key.clone(), Value::Array(array.clone()));
        }
        let mut reply = Map::new();
        reply.insert("key".into(), Value::String(key));
        reply.insert("item".into(), item);
        reply.insert("array".into(), Value::Array(array));
        reply.insert("added".into(), Value::Bool(added));
        success(reply)
    }

    /// `remove`: every occurrence of the item goes; the map is written only on a change.
    fn remove(&mut self, cmd: &Map<String, Value>) -> Value {
        let Some(key) = config_key(cmd) else {
            return failure(error::INVALID_COMMAND);
        };
        let item = cmd.get("item").cloned().unwrap_or(Value::Null);
        let mut array = as_list(self.config.get(&key));
        let before = array.len();
        array.retain(|v| *v != item);
        let removed = array.len() != before;
        if removed {
            self.config.insert(key.clone(), Value::Array(array.clone()));
        }
        let mut reply = Map::new();
        reply.insert("key".into(), Value::String(key));
        reply.insert("item".into(), item);
        reply.insert("array".into(), Value::Array(array));
        reply.insert("removed".into(), Value::Bool(removed));
        success(reply)
    }

    fn list(&self) -> Value {
        let mut reply = Map::new();
        reply.insert("config".into(), Value::Object(self.config.clone()));
        success(reply)
    }

    /// `fs-drain` / `fs-undrain`: `SADD`/`SREM` on `<cluster>:drained-fs` and the resulting
    /// members, in one round trip.
    fn drain(&mut self, cmd: &Map<String, Value>, drain: bool) -> Value {
        let server = match validate_server_field(cmd.get("server")) {
            Ok(server) => server,
            Err(message) => return failure(&message),
        };
        let Some(mut conn) = self.connection() else {
            return failure(error::REDIS_NOT_AVAILABLE);
        };
        let (command, failed, verb) = if drain {
            ("SADD", error::FAILED_TO_DRAIN, "drain")
        } else {
            ("SREM", error::FAILED_TO_UNDRAIN, "undrain")
        };
        let result: redis::RedisResult<(i64, Vec<String>)> = redis::pipe()
            .cmd(command)
            .arg(&self.sets.drained_fs)
            .arg(&server)
            .cmd("SMEMBERS")
            .arg(&self.sets.drained_fs)
            .query(&mut *conn);
        let (changed, mut drained) = match result {
            Ok(r) => r,
            Err(e) => {
                warn!("cli {verb} failed server={server}: {e}");
                return failure(failed);
            }
        };
        drained.sort();
        info!("cli {verb} server={server} changed={} drained={drained:?}", changed == 1);
        let mut reply = Map::new();
        reply.insert("action".into(), Value::String(verb.to_string()));
        reply.insert("server".into(), Value::String(server));
        reply.insert("drained".into(), strings(drained));
        success(reply)
    }

    fn drained(&mut self) -> Value {
        let Some(mut conn) = self.connection() else {
            return failure(error::REDIS_NOT_AVAILABLE);
        };
        match redis::cmd("SMEMBERS").arg(&self.sets.drained_fs).query::<Vec<String>>(&mut *conn) {
            Ok(mut drained) => {
                drained.sort();
                let mut reply = Map::new();
                reply.insert("drained".into(), strings(drained));
                success(reply)
            }
            Err(e) => {
                warn!("cli fs-drained failed: {e}");
                failure(error::FAILED_TO_RETRIEVE_DRAINED)
            }
        }
    }

    /// `fs-list`: every member of active-fs with `drained` when drained-fs holds its IP or its
    /// `ip:port` (the Node sidecar compared strings, so real servers never showed as drained).
    fn fs_list(&mut self) -> Value {
        let (active, drained) = match self.active_and_drained() {
            Ok(sets) => sets,
            Err(None) => return failure(error::REDIS_NOT_AVAILABLE),
            Err(Some(e)) => {
                warn!("cli fs-list failed: {e}");
                return failure(error::FAILED_TO_LIST);
            }
        };
        let matcher = DrainedServers::new(drained.iter().cloned());
        let servers: Vec<Value> = active
            .into_iter()
            .map(|server| {
                let status = if matcher.contains_member(&server) { "drained" } else { "active" };
                let mut entry = Map::new();
                entry.insert("server".into(), Value::String(server));
                entry.insert("status".into(), Value::String(status.to_string()));
                Value::Object(entry)
            })
            .collect();
        let mut reply = Map::new();
        reply.insert("servers".into(), Value::Array(servers));
        reply.insert("drained".into(), strings(drained));
        success(reply)
    }

    /// `fs-available`: active-fs minus the drained servers (same matching as `fs-list`).
    fn fs_available(&mut self) -> Value {
        let (active, drained) = match self.active_and_drained() {
            Ok(sets) => sets,
            Err(None) => return failure(error::REDIS_NOT_AVAILABLE),
            Err(Some(e)) => {
                warn!("cli fs-available failed: {e}");
                return failure(error::FAILED_TO_RETRIEVE_AVAILABLE);
            }
        };
        let matcher = DrainedServers::new(drained);
        let available: Vec<String> = active.into_iter().filter(|s| !matcher.contains_member(s)).collect();
        let mut reply = Map::new();
        reply.insert("available".into(), strings(available));
        success(reply)
    }

    /// Sorted members of active-fs and drained-fs. `Err(None)`: no connection.
    fn active_and_drained(&mut self) -> Result<(Vec<String>, Vec<String>), Option<redis::RedisError>> {
        let mut conn = self.connection().ok_or(None)?;
        let (mut active, mut drained): (Vec<String>, Vec<String>) = redis::pipe()
            .cmd("SMEMBERS")
            .arg(&self.sets.active_fs)
            .cmd("SMEMBERS")
            .arg(&self.sets.drained_fs)
            .query(&mut *conn)
            .map_err(Some)?;
        active.sort();
        drained.sort();
        Ok((active, drained))
    }

    /// `status`: what an operator checks first. Works while Redis is down (the counts are
    /// `null` then), because that is exactly when it is needed.
    fn status(&mut self) -> Value {
        let counts = self.counts();
        let mut drachtio = Map::new();
        drachtio.insert("connected".into(), Value::Bool(self.drachtio.is_some()));
        let info = self.drachtio.as_ref();
        drachtio.insert("version".into(), opt_string(info.map(|i| i.version.as_str())));
        drachtio.insert("hostports".into(), opt_string(info.map(|i| i.hostports.as_str())));
        drachtio.insert("local_hostports".into(), opt_string(info.map(|i| i.local_hostports.as_str())));
        let (regbot_status, every, regbot_error) = self.current_regbot_status();
        let mut regbot = Map::new();
        let role = if every { "every" } else { regbot_status.role() };
        regbot.insert("role".into(), Value::String(role.to_string()));
        regbot.insert("total".into(), Value::from(regbot_status.total));
        regbot.insert("registered".into(), Value::from(regbot_status.registered));
        regbot.insert("failing".into(), Value::from(regbot_status.failing));

        let mut reply = Map::new();
        reply.insert("drachtio".into(), Value::Object(drachtio));
        reply.insert("uptime_s".into(), Value::from(self.started.elapsed().as_secs()));
        let (users, fs, rtp) = match counts {
            Some((u, f, r)) => (Value::from(u), Value::from(f), Value::from(r)),
            None => (Value::Null, Value::Null, Value::Null),
        };
        reply.insert("registered_users".into(), users);
        reply.insert("feature_servers".into(), fs);
        reply.insert("rtp_servers".into(), rtp);
        reply.insert("regbot".into(), Value::Object(regbot));
        if let Some(e) = regbot_error {
            reply.insert("regbot_error".into(), Value::String(e));
        }
        if let Some(registrar) = &self.registrar {
            super::status::add_sections(&mut reply, &registrar.status_report());
        }
        if let Some(probe) = &self.auth_load {
            reply.insert("auth".into(), auth_json(&probe.load()));
        }
        success(reply)
    }

    /// The regbot counts for `status`: a fresh snapshot when the role is linked, else
    /// `standby` and zeros. A failed query still leaves `status` useful (it is what an
    /// operator runs when something is wrong), so it falls back to those and says why.
    /// The middle value is true when this SBC registers as one of every SBC
    /// (`SBC_REGBOT_MODE=every`).
    fn current_regbot_status(&self) -> (RegbotStatus, bool, Option<String>) {
        let Some(queries) = &self.regbot_queries else {
            return (RegbotStatus::default(), false, None);
        };
        match regbot_link::query(queries, QUERY_TIMEOUT) {
            Ok(snapshot) => {
                let status = RegbotStatus {
                    leader: snapshot.role != RegbotRole::Standby,
                    total: snapshot.total as u64,
                    registered: snapshot.registered as u64,
                    failing: snapshot.failing as u64,
                };
                (status, snapshot.role == RegbotRole::Every, None)
            }
            Err(e) => {
                warn!("cli status: regbot query failed: {e}");
                (RegbotStatus::default(), false, Some(e.to_string()))
            }
        }
    }

    /// `regbot-list`: every outbound registration of this instance, from a fresh snapshot.
    fn regbot_list(&self) -> Value {
        let Some(queries) = &self.regbot_queries else {
            return failure(error::REGBOT_NOT_RUNNING);
        };
        match regbot_link::query(queries, QUERY_TIMEOUT) {
            Ok(snapshot) => {
                let every = snapshot.role == RegbotRole::Every;
                let mut fields = regbot_link::list_fields(snapshot);
                if every {
                    self.add_cluster_view(&mut fields);
                }
                success(fields)
            }
            Err(e) => {
                warn!("cli regbot-list: regbot query failed: {e}");
                failure(&error::regbot_query_failed(&e.to_string()))
            }
        }
    }

    /// `SBC_REGBOT_MODE=every`: each entry gains `"cluster_sbcs"`, the SBCs that hold a
    /// registration for its carrier now (this one included), from
    /// `<cluster>:regbot-sbcs:<carrier>`; `null` when Redis does not answer.
    fn add_cluster_view(&self, fields: &mut Map<String, Value>) {
        let Some(Value::Array(entries)) = fields.get_mut("regbots") else { return };
        let now = crate::clock::unix_secs();
        let mut conn = checkout(&self.redis).ok();
        let mut by_carrier: HashMap<String, Value> = HashMap::new();
        for entry in entries.iter_mut() {
            let Value::Object(entry) = entry else { continue };
            let Some(carrier) = entry.get("carrier").and_then(Value::as_str).map(str::to_string) else { continue };
            let value = by_carrier
                .entry(carrier.clone())
                .or_insert_with(|| {
                    let Some(conn) = conn.as_mut() else { return Value::Null };
                    let key = cluster::sbcs_key(&self.cluster_id, &carrier);
                    match redis::cmd("HGETALL").arg(&key).query::<HashMap<String, String>>(&mut **conn) {
                        Ok(raw) => Value::from(cluster::holders(&cluster::parse_entries(&raw), now)),
                        Err(e) => {
                            warn!("cli regbot-list: redis failed: {e}");
                            Value::Null
                        }
                    }
                })
                .clone();
            entry.insert("cluster_sbcs".into(), value);
        }
        fields.insert("mode".into(), Value::String("every".into()));
    }

    /// `bans`: the bans in force, longest remaining first.
    fn bans(&self) -> Value {
        let list: Vec<Value> = self
            .bans
            .list(Instant::now())
            .into_iter()
            .map(|ban| {
                let mut entry = Map::new();
                let source = if ban.prefix_len == 64 { format!("{}/64", ban.ip) } else { ban.ip.to_string() };
                entry.insert("ip".into(), Value::String(source));
                entry.insert("failures".into(), Value::from(ban.failures));
                entry.insert("remaining_s".into(), Value::from(secs_rounded_up(ban.remaining)));
                Value::Object(entry)
            })
            .collect();
        let mut reply = Map::new();
        reply.insert("bans".into(), Value::Array(list));
        success(reply)
    }

    /// `bans-clear`: lifts the ban on `ip`.
    fn bans_clear(&self, cmd: &Map<String, Value>) -> Value {
        let ip = match cmd.get("ip") {
            Some(Value::String(s)) => parse_ban_ip(s),
            None => Err(error::invalid_ip("undefined")),
            Some(other) => Err(error::invalid_ip(&other.to_string())),
        };
        let ip = match ip {
            Ok(ip) => ip,
            Err(message) => return failure(&message),
        };
        if self.bans.clear(ip) {
            info!("cli bans-clear: ban lifted ip={ip}");
            success(Map::new())
        } else {
            failure(&error::no_ban(&ip.to_string()))
        }
    }

    /// Registered users (counted as the `sbc.users.count` gauge counts them), feature servers,
    /// RTP servers.
    fn counts(&mut self) -> Option<(i64, i64, i64)> {
        let mut conn = self.connection()?;
        let users = match bindings::registered_users(&mut conn, crate::clock::unix_millis()) {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Err(e) => {
                warn!("cli status: counting registered users failed: {e}");
                return None;
            }
        };
        let result = redis::pipe()
            .cmd("SCARD")
            .arg(&self.sets.active_fs)
            .cmd("SCARD")
            .arg(&self.sets.active_rtp)
            .query(&mut *conn);
        match result {
            Ok((fs, rtp)) => Some((users, fs, rtp)),
            Err(e) => {
                warn!("cli status: redis counts failed: {e}");
                None
            }
        }
    }

    fn connection(&self) -> Option<RedisConn> {
        match checkout(&self.redis) {
            Ok(conn) => Some(conn),
            Err(e) => {
                warn!("cli command without redis: {e}");
                None
            }
        }
    }
}

/// The config key of a request: a string, or a number/boolean in its JSON spelling (what a
/// JavaScript `Map` key turned into once listed). Anything else is not a usable key.
fn config_key(cmd: &Map<String, Value>) -> Option<String> {
    match cmd.get("key")? {
        Value::String(s) => Some(s.clone()),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

/// A config value read as a list: arrays as they are, a string split on commas (trimmed,
/// empties dropped), anything else empty.
fn as_list(value: Option<&Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::String(s)) => {
            s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_string())).collect()
        }
        _ => Vec::new(),
    }
}

/// The `server` field of `fs-drain`/`fs-undrain`, validated. A missing or non-string value
/// is reported the way the Node template string showed it.
fn validate_server_field(server: Option<&Value>) -> Result<String, String> {
    match server {
        Some(Value::String(s)) => validate_server(s),
        None => Err(error::invalid_ip("undefined")),
        Some(other) => Err(error::invalid_ip(&other.to_string())),
    }
}

/// Whole seconds, a started second counting as one (a ban with 0.2 s left shows 1).
fn secs_rounded_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn strings(list: Vec<String>) -> Value {
    Value::Array(list.into_iter().map(Value::String).collect())
}

fn opt_string(s: Option<&str>) -> Value {
    s.map(|s| Value::String(s.to_string())).unwrap_or(Value::Null)
}

/// The `auth` part of `status`: the auth workers' load and the busiest accounts.
fn auth_json(load: &PoolLoad) -> Value {
    let accounts: Vec<Value> = load
        .busiest
        .iter()
        .map(|a| json!({"account_sid": a.key, "in_flight": a.in_flight, "waiting": a.waiting}))
        .collect();
    json!({
        "in_flight": load.in_flight,
        "waiting": load.waiting,
        "threads": load.threads,
        "idle_threads": load.idle_threads,
        "max_in_flight": load.max_in_flight,
        "account_share": load.share,
        "peak_threads": load.peak_threads,
        "refused": load.refused,
        "accounts": accounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn comma_strings_are_lists() {
        assert_eq!(as_list(Some(&json!(" a, b,,c "))), vec![json!("a"), json!("b"), json!("c")]);
        assert_eq!(as_list(Some(&json!(["x", 1]))), vec![json!("x"), json!(1)]);
        assert_eq!(as_list(Some(&json!(5))), Vec::<Value>::new());
        assert_eq!(as_list(None), Vec::<Value>::new());
    }

    #[test]
    fn remaining_seconds_are_rounded_up() {
        assert_eq!(secs_rounded_up(Duration::from_secs(300)), 300);
        assert_eq!(secs_rounded_up(Duration::from_millis(299_001)), 300);
        assert_eq!(secs_rounded_up(Duration::from_nanos(1)), 1);
        assert_eq!(secs_rounded_up(Duration::ZERO), 0);
    }

    #[test]
    fn config_keys() {
        let cmd = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(config_key(&cmd(json!({"key": "k"}))), Some("k".to_string()));
        assert_eq!(config_key(&cmd(json!({"key": 5}))), Some("5".to_string()));
        assert_eq!(config_key(&cmd(json!({"key": null}))), None);
        assert_eq!(config_key(&cmd(json!({}))), None);
    }
}
