//! The CLI socket protocol: newline-delimited JSON requests and replies.
//!
//! The server splits its input on `\n`, reads each trimmed line as JSON (what
//! `Commands::handle_line` does before it touches Redis) and validates the `server` and `ip`
//! fields. Properties: canonical feature-server spellings are fixed points of the validation
//! and name the same endpoint; a ban IP prints and parses back to itself; every request and
//! reply the protocol builds is exactly one line that parses back to the same object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc_sidecar::ctl::protocol::{failure, parse_ban_ip, request_line, success, validate_server, MAX_LINE_BYTES};
use sbc_sidecar::heartbeat::FsEndpoint;
use sbc_sidecar_fuzz::assert_linear;
use serde_json::{Map, Value};

fn one_line(line: &str) -> Value {
    assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'), "not one line: {line:?}");
    serde_json::from_str(line.trim_end()).expect("a built line is JSON")
}

fn check_field(text: &str) {
    if let Ok(canonical) = validate_server(text) {
        assert_eq!(validate_server(&canonical).as_ref(), Ok(&canonical), "`{text}` → `{canonical}`");
        assert_eq!(FsEndpoint::parse(&canonical), FsEndpoint::parse(text));
        assert_linear("canonical server", canonical.len(), text.len(), 3, 8);
    } else {
        assert!(FsEndpoint::parse(text).is_none());
    }
    if let Ok(ip) = parse_ban_ip(text) {
        assert_eq!(parse_ban_ip(&ip.to_string()), Ok(ip));
    }
}

fuzz_target!(|data: &[u8]| {
    for raw in data.split(|&b| b == b'\n') {
        if raw.len() > MAX_LINE_BYTES {
            continue;
        }
        let text = String::from_utf8_lossy(raw);
        let line = text.trim();
        check_field(line);
        let Ok(Value::Object(cmd)) = serde_json::from_str::<Value>(line) else { continue };
        for key in ["server", "ip", "key"] {
            if let Some(Value::String(v)) = cmd.get(key) {
                check_field(v);
            }
        }
        let action = cmd.get("action").and_then(Value::as_str).unwrap_or("status").to_string();
        // The daemon's own fields never use the protocol's keys (`action`, `success`, `error`),
        // which the builders would let a field overwrite.
        let fields: Map<String, Value> = cmd
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "action" | "success" | "error"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        let request = request_line(&action, fields.clone());
        assert_linear("request line", request.len(), line.len(), 6, 32);
        let mut expected = Map::new();
        expected.insert("action".to_string(), Value::String(action.clone()));
        expected.extend(fields.clone());
        assert_eq!(one_line(&request), Value::Object(expected));

        let mut reply = success(fields).to_string();
        reply.push('\n');
        assert_eq!(one_line(&reply)["success"], Value::Bool(true));
        let mut reply = failure(&action).to_string();
        reply.push('\n');
        assert_eq!(one_line(&reply)["error"], Value::String(action));
    }
});
