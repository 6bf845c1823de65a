//! The CLI socket protocol (spec 9.1), shared by the server and `sbcctl`.
//!
//! Newline-delimited JSON both ways: a request is `{"action":…, …}`, a reply is
//! `{"success":true, …fields}` or `{"success":false,"error":"<message>"}`. Field order follows
//! the spec (serde_json is built with `preserve_order`).

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::heartbeat::FsEndpoint;

/// `SBC_SOCKET_PATH`: where the server listens and the client connects.
pub const SOCKET_PATH_ENV: &str = "SBC_SOCKET_PATH";
/// The Node sidecar's default, still the default when nothing else is configured.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/sbc-sip-sidecar.sock";
/// Where the Debian package's systemd unit puts the socket (`RuntimeDirectory=sbc-sidecar`).
pub const PACKAGE_SOCKET_PATH: &str = "/run/sbc-sidecar/sbc-sidecar.sock";

/// Longest request line the server accepts. Real commands are well under 1 KiB; the limit keeps
/// a client that never sends a newline from growing the server's buffer without end.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

pub mod action {
    pub const SET: &str = "set";
    pub const GET: &str = "get";
    pub const ADD: &str = "add";
    pub const REMOVE: &str = "remove";
    pub const LIST: &str = "list";
    pub const FS_DRAIN: &str = "fs-drain";
    pub const FS_UNDRAIN: &str = "fs-undrain";
    pub const FS_DRAINED: &str = "fs-drained";
    pub const FS_LIST: &str = "fs-list";
    pub const FS_AVAILABLE: &str = "fs-available";
    /// Not in the Node sidecar: drachtio connection, counts and regbot role. When the regbot
    /// role is linked but gives no snapshot, the regbot part holds the last pushed values and
    /// `"regbot_error":"<reason>"` follows it.
    pub const STATUS: &str = "status";
    /// Not in the Node sidecar: this instance's outbound registrations, answered from a
    /// snapshot of the regbot role. Reply:
    /// `{"success":true,"role":"leader"|"standby","regbots":[{"carrier":<voip_carrier_sid>,
    /// "gateway":<sip_gateway_sid>,"aor":…,"target":…,"state":"registered"|…,
    /// "last_status":<text>|null,"failures":<n>,"next_refresh_s":<seconds, rounded up>|null},…]}`,
    /// sorted by carrier then gateway. `state` is one of `starting`, `registering`, `registered`,
    /// `failing`, `disabled`, `unregistering`; `next_refresh_s` is `null` while a REGISTER is in
    /// flight or the regbot is disabled. With `SBC_REGBOT_MODE=every` the role is `"every"`,
    /// the reply also has `"mode":"every"` and each entry `"cluster_sbcs":[<sbc id>,…]` (the
    /// SBCs that hold a registration for its carrier now, `null` when Redis does not answer).
    /// Fails with [`super::error::REGBOT_NOT_RUNNING`] when
    /// the daemon has no regbot role, or [`super::error::regbot_query_failed`] when the role
    /// does not answer within half a second.
    pub const REGBOT_LIST: &str = "regbot-list";
    /// Not in the Node sidecar: the sources banned after failed authentications
    /// (`SBC_AUTH_BAN_*`). Reply: `{"success":true,"bans":[{"ip":"<address>","failures":<n>,
    /// "remaining_s":<seconds, rounded up>},…]}`, longest remaining first; empty when nobody is
    /// banned or the defence is off.
    pub const BANS: &str = "bans";
    /// Not in the Node sidecar: `{"action":"bans-clear","ip":"<address>"}` lifts the ban on one
    /// source and forgets its failures (an IPv4-mapped IPv6 address is the IPv4 one). Reply
    /// `{"success":true}`; fails with [`super::error::no_ban`] when no ban was in force on it,
    /// [`super::error::invalid_ip`] when `ip` is not an IP address (`undefined` when missing).
    pub const BANS_CLEAR: &str = "bans-clear";
}

/// Error texts of spec 9.1, word for word.
pub mod error {
    pub const INVALID_COMMAND: &str = "Invalid command";
    pub const UNKNOWN_ACTION: &str = "Unknown action";
    pub const REDIS_NOT_AVAILABLE: &str = "Redis connection not available";
    pub const FAILED_TO_DRAIN: &str = "Failed to drain server";
    pub const FAILED_TO_UNDRAIN: &str = "Failed to undrain server";
    pub const FAILED_TO_RETRIEVE_DRAINED: &str = "Failed to retrieve drained servers";
    pub const FAILED_TO_LIST: &str = "Failed to list servers";
    pub const FAILED_TO_RETRIEVE_AVAILABLE: &str = "Failed to retrieve available servers";
    /// Sent (then the connection is closed) when the server already serves its maximum.
    pub const TOO_MANY_CONNECTIONS: &str = "Too many connections";

    /// Not in spec 9.1: `regbot-list` on a daemon whose CLI server has no regbot role linked.
    pub const REGBOT_NOT_RUNNING: &str = "Regbot not running";

    /// Not in spec 9.1: `No ban on <ip>`, `bans-clear` of a source that is not banned.
    pub fn no_ban(ip: &str) -> String {
        format!("No ban on {ip}")
    }

    /// `Invalid IP address: <server>`.
    pub fn invalid_ip(server: &str) -> String {
        format!("Invalid IP address: {server}")
    }

    /// Not in spec 9.1: `Failed to query regbot: <reason>`, the regbot role is linked but gave
    /// no snapshot.
    pub fn regbot_query_failed(reason: &str) -> String {
        format!("Failed to query regbot: {reason}")
    }
}

/// Validates the `server` of `fs-drain` / `fs-undrain`: an IPv4 dotted quad, an IPv6 address,
/// or either with a port (`10.0.0.5:5070`, `[fd00::5]:5070`). Returns the canonical spelling
/// that is stored in `<cluster>:drained-fs`, so that `fs undrain FD00::5` removes what
/// `fs drain fd00::5` added; otherwise the error text `Invalid IP address: <server>`.
pub fn validate_server(server: &str) -> Result<String, String> {
    match FsEndpoint::parse(server) {
        Some(endpoint) => Ok(endpoint.to_string()),
        None => Err(error::invalid_ip(server)),
    }
}

/// Parses the `ip` of `bans-clear`: one IPv4 or IPv6 address, no port. An IPv4-mapped IPv6
/// address is returned as the IPv4 address, as the ban table counts it. Otherwise the error
/// text `Invalid IP address: <ip>`.
pub fn parse_ban_ip(ip: &str) -> Result<IpAddr, String> {
    // `bans` lists an IPv6 source as its /64 (`2001:db8:1:2::/64`): that text clears it too.
    let addr = ip.strip_suffix("/64").filter(|a| a.contains(':')).unwrap_or(ip);
    addr.parse::<IpAddr>().map(|addr| addr.to_canonical()).map_err(|_| error::invalid_ip(ip))
}

/// `{"success":true, …fields}`.
pub fn success(fields: Map<String, Value>) -> Value {
    let mut reply = Map::with_capacity(fields.len() + 1);
    reply.insert("success".to_string(), Value::Bool(true));
    reply.extend(fields);
    Value::Object(reply)
}

/// `{"success":false,"error":"<message>"}`.
pub fn failure(message: &str) -> Value {
    let mut reply = Map::with_capacity(2);
    reply.insert("success".to_string(), Value::Bool(false));
    reply.insert("error".to_string(), Value::String(message.to_string()));
    Value::Object(reply)
}

/// A request line: `{"action":<action>, …fields}` and a newline.
pub fn request_line(action: &str, fields: Map<String, Value>) -> String {
    let mut request = Map::with_capacity(fields.len() + 1);
    request.insert("action".to_string(), Value::String(action.to_string()));
    request.extend(fields);
    let mut line = Value::Object(request).to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_put_success_first() {
        let mut fields = Map::new();
        fields.insert("key".into(), json!("k"));
        fields.insert("value".into(), json!(1));
        assert_eq!(success(fields).to_string(), r#"{"success":true,"key":"k","value":1}"#);
        assert_eq!(failure("Unknown action").to_string(), r#"{"success":false,"error":"Unknown action"}"#);
    }

    #[test]
    fn request_lines_start_with_the_action() {
        let mut fields = Map::new();
        fields.insert("server".into(), json!("10.0.0.1"));
        assert_eq!(request_line("fs-drain", fields), "{\"action\":\"fs-drain\",\"server\":\"10.0.0.1\"}\n");
    }

    #[test]
    fn numbers_survive_a_request_line_exactly() {
        // found by the ctl_line fuzz target: read, printed and read again, this number changed
        // in its last bit (serde_json without `float_roundtrip`)
        let line = format!("{{\"action\":\"set\",\"value\":5{}}}", "3".repeat(87));
        let Ok(Value::Object(mut cmd)) = serde_json::from_str::<Value>(&line) else { panic!("{line}") };
        cmd.remove("action");
        let again: Value = serde_json::from_str(&request_line("set", cmd.clone())).unwrap();
        assert_eq!(again["value"], cmd["value"]);
    }

    #[test]
    fn servers_are_validated_and_canonicalised() {
        assert_eq!(validate_server("192.168.1.10"), Ok("192.168.1.10".to_string()));
        assert_eq!(validate_server("192.168.1.10:5070"), Ok("192.168.1.10:5070".to_string()));
        assert_eq!(validate_server("FD00::5"), Ok("fd00::5".to_string()));
        assert_eq!(validate_server("[fd00::5]:5070"), Ok("[fd00::5]:5070".to_string()));
        assert_eq!(validate_server("not-an-ip"), Err("Invalid IP address: not-an-ip".to_string()));
        assert_eq!(validate_server("300.1.1.1"), Err("Invalid IP address: 300.1.1.1".to_string()));
    }

    #[test]
    fn ban_addresses_are_plain_ips_with_mapped_ipv4_unwrapped() {
        assert_eq!(parse_ban_ip("192.0.2.7"), Ok(IpAddr::from([192, 0, 2, 7])));
        assert_eq!(parse_ban_ip("::ffff:192.0.2.7"), Ok(IpAddr::from([192, 0, 2, 7])));
        assert_eq!(parse_ban_ip("2001:DB8::1").map(|ip| ip.to_string()), Ok("2001:db8::1".to_string()));
        for bad in ["192.0.2.7:5060", "[2001:db8::1]", "host.example", "300.1.1.1", " 192.0.2.7", ""] {
            assert_eq!(parse_ban_ip(bad), Err(format!("Invalid IP address: {bad}")), "{bad:?}");
        }
        assert_eq!(error::no_ban("192.0.2.7"), "No ban on 192.0.2.7");
    }
}
