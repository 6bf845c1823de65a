//! Registrations in Redis (spec 4.5, 4.6, 12.1): `user:<aor>` holds a JSON string with the
//! binding, `active-user` is a sorted set of `user:<aor>` scored by expiry time (ms). Neither
//! key is cluster-prefixed: sbc-inbound, sbc-outbound and the feature server read them.

use log::warn;
use serde_json::{Map, Value};

use super::grant::Grant;
use crate::sip::{top_via, SipMessage};
use crate::store::redis::RedisConn;
use crate::store::StoreError;

pub use crate::store::keys::{user_key, ACTIVE_USER};

/// `sip:<source address>:<source port>`: where the registration came from, and the key of
/// the cache window. An IPv6 address is bracketed so the value stays a valid SIP URI.
pub fn proxy_uri(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("sip:[{address}]:{port}")
    } else {
        format!("sip:{address}:{port}")
    }
}

/// `protocol` of the binding: the top Via's transport tested by prefix, lower-cased, in the
/// order `wss`, `ws`, `tcp`, `udp`, and — a fix over the Node code, which left TLS clients
/// without a protocol — `tls`. Anything else (or no Via) leaves the field out.
pub fn via_protocol(request: &SipMessage) -> Option<&'static str> {
    let transport = top_via(request).ok()?.transport_lower();
    ["wss", "ws", "tcp", "udp", "tls"].into_iter().find(|p| transport.starts_with(p))
}

/// Everything stored for one registration, before serialisation.
#[derive(Debug, Clone)]
pub struct NewBinding<'a> {
    pub contact: Option<&'a str>,
    pub sbc_address: &'a str,
    pub private_sbc_address: Option<&'a str>,
    pub protocol: Option<&'a str>,
    pub proxy: &'a str,
    pub grant: &'a Grant,
}

/// The JSON value of `user:<aor>`, fields in the contract's order; absent values are left
/// out (like `JSON.stringify` with `undefined`), the `allow_direct_*` flags default to false.
pub fn binding_json(b: &NewBinding<'_>, expiry_time_ms: u64) -> String {
    let mut m = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(v) = value {
            m.insert(name.to_string(), v);
        }
    };
    put("contact", b.contact.map(Value::from));
    put("sbcAddress", Some(Value::from(b.sbc_address)));
    put("privateSbcAddress", b.private_sbc_address.map(Value::from));
    put("protocol", b.protocol.map(Value::from));
    put("proxy", Some(Value::from(b.proxy)));
    put("callHook", b.grant.call_hook.clone());
    put("callStatusHook", b.grant.call_status_hook.clone());
    let flag = |v: &Option<Value>| Some(v.clone().filter(|v| !v.is_null()).unwrap_or(Value::Bool(false)));
    put("allow_direct_app_calling", flag(&b.grant.allow_direct_app_calling));
    put("allow_direct_queue_calling", flag(&b.grant.allow_direct_queue_calling));
    put("allow_direct_user_calling", flag(&b.grant.allow_direct_user_calling));
    put("expiryTime", Some(Value::from(expiry_time_ms)));
    Value::Object(m).to_string()
}

/// The parts of a stored registration the registrar itself looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBinding {
    pub proxy: Option<String>,
    pub expiry_time_ms: Option<f64>,
}

/// `GET user:<aor>`. A value that is not a JSON object is logged and treated as absent (the
/// next successful REGISTER overwrites it).
pub fn query(conn: &mut RedisConn, aor: &str) -> Result<Option<StoredBinding>, StoreError> {
    let key = user_key(aor);
    let text: Option<String> = redis::cmd("GET").arg(&key).query(&mut **conn)?;
    Ok(text.and_then(|t| parse_stored(&key, &t)))
}

/// The bindings of `aors` from the texts an `MGET` of their keys returned.
pub fn parse_many(aors: &[&str], texts: Vec<Option<String>>) -> Vec<Option<StoredBinding>> {
    aors.iter().zip(texts).map(|(aor, t)| t.and_then(|t| parse_stored(&user_key(aor), &t))).collect()
}

fn parse_stored(key: &str, text: &str) -> Option<StoredBinding> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Some(StoredBinding {
            proxy: m.get("proxy").and_then(Value::as_str).map(str::to_string),
            expiry_time_ms: m.get("expiryTime").and_then(Value::as_f64),
        }),
        _ => {
            warn!("registrar: ignoring unreadable registration key={key}");
            None
        }
    }
}

/// `SETEX user:<aor> <granted> <json>` and `ZADD active-user <expiryTime> user:<aor>` in one
/// MULTI/EXEC round trip: both or neither, and one network wait instead of two.
pub fn add(conn: &mut RedisConn, aor: &str, granted: u32, json: &str, expiry_time_ms: u64) -> Result<(), StoreError> {
    let key = user_key(aor);
    let _: (String, i64) = redis::pipe()
        .atomic()
        .cmd("SETEX")
        .arg(&key)
        .arg(granted)
        .arg(json)
        .cmd("ZADD")
        .arg(ACTIVE_USER)
        .arg(expiry_time_ms)
        .arg(&key)
        .query(&mut **conn)?;
    Ok(())
}

/// `DEL user:<aor>` and `ZREM active-user user:<aor>` in one MULTI/EXEC round trip.
pub fn remove(conn: &mut RedisConn, aor: &str) -> Result<(), StoreError> {
    let key = user_key(aor);
    let _: (i64, i64) =
        redis::pipe().atomic().cmd("DEL").arg(&key).cmd("ZREM").arg(ACTIVE_USER).arg(&key).query(&mut **conn)?;
    Ok(())
}

/// Members of `active-user` that have not expired: `ZRANGEBYSCORE active-user <now> +inf`.
pub fn active_members(conn: &mut RedisConn, now_ms: u64) -> Result<Vec<String>, StoreError> {
    Ok(redis::cmd("ZRANGEBYSCORE").arg(ACTIVE_USER).arg(now_ms).arg("+inf").query(&mut **conn)?)
}

/// Registered users as the Node registrar counted them for `sbc.users.count` (spec 4.5,
/// `getCountOfUsers`): distinct user parts of the live members of `active-user`, so the same
/// user name in two realms counts once. The CLI's `status` reports the same number.
pub fn registered_users(conn: &mut RedisConn, now_ms: u64) -> Result<u64, StoreError> {
    let members = active_members(conn, now_ms)?;
    let users: std::collections::HashSet<&str> =
        members.iter().filter_map(|m| crate::store::keys::user_of_member(m)).collect();
    Ok(users.len() as u64)
}

/// `ZREMRANGEBYSCORE active-user 0 <now>`: drops expired members (the Node registrar did
/// this every 10 minutes). Returns how many went.
pub fn prune(conn: &mut RedisConn, now_ms: u64) -> Result<u64, StoreError> {
    Ok(redis::cmd("ZREMRANGEBYSCORE").arg(ACTIVE_USER).arg(0).arg(now_ms).query(&mut **conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_fields_follow_the_contract_order() {
        let grant = Grant {
            call_hook: Some(json!("https://a/b")),
            call_status_hook: Some(json!({"url":"https://a/s"})),
            allow_direct_app_calling: Some(json!(true)),
            allow_direct_user_calling: Some(json!(1)),
            ..Grant::default()
        };
        let b = NewBinding {
            contact: Some("sip:u@1.2.3.4:5070;transport=udp"),
            sbc_address: "udp/3.3.3.3:5060,tcp/3.3.3.3:5060",
            private_sbc_address: Some("10.0.0.5:5060"),
            protocol: Some("udp"),
            proxy: "sip:1.2.3.4:5070",
            grant: &grant,
        };
        assert_eq!(
            binding_json(&b, 1_700_000_000_123),
            r#"{"contact":"sip:u@1.2.3.4:5070;transport=udp","sbcAddress":"udp/3.3.3.3:5060,tcp/3.3.3.3:5060","privateSbcAddress":"10.0.0.5:5060","protocol":"udp","proxy":"sip:1.2.3.4:5070","callHook":"https://a/b","callStatusHook":{"url":"https://a/s"},"allow_direct_app_calling":true,"allow_direct_queue_calling":false,"allow_direct_user_calling":1,"expiryTime":1700000000123}"#
        );
    }

    #[test]
    fn absent_values_are_left_out() {
        let grant = Grant::default();
        let b = NewBinding {
            contact: None,
            sbc_address: "udp/3.3.3.3:5060",
            private_sbc_address: None,
            protocol: None,
            proxy: "sip:1.2.3.4:5070",
            grant: &grant,
        };
        assert_eq!(
            binding_json(&b, 5),
            r#"{"sbcAddress":"udp/3.3.3.3:5060","proxy":"sip:1.2.3.4:5070","allow_direct_app_calling":false,"allow_direct_queue_calling":false,"allow_direct_user_calling":false,"expiryTime":5}"#
        );
    }

    fn via(transport: &str) -> SipMessage {
        let text = format!("REGISTER sip:a.org SIP/2.0\r\nVia: SIP/2.0/{transport} 1.2.3.4;branch=z9hG4bK1\r\n\r\n");
        SipMessage::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn protocol_comes_from_the_top_via_including_tls() {
        for (t, p) in [
            ("WSS", Some("wss")),
            ("ws", Some("ws")),
            ("TCP", Some("tcp")),
            ("UDP", Some("udp")),
            ("TLS", Some("tls")),
            ("SCTP", None),
        ] {
            assert_eq!(via_protocol(&via(t)), p, "{t}");
        }
        assert_eq!(via_protocol(&SipMessage::parse(b"REGISTER sip:a.org SIP/2.0\r\n\r\n").unwrap()), None);
    }

    #[test]
    fn proxy_brackets_ipv6_only() {
        assert_eq!(proxy_uri("1.2.3.4", 5070), "sip:1.2.3.4:5070");
        assert_eq!(proxy_uri("2001:db8::1", 5070), "sip:[2001:db8::1]:5070");
        assert_eq!(proxy_uri("[::1]", 5060), "sip:[::1]:5060");
    }
}
