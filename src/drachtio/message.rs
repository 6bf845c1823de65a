//! The messages of the drachtio control protocol, in both directions.
//!
//! A payload is a meta line of `|`-separated tokens, optionally followed by `\r\n` and a SIP
//! message. Token 0 is the sender's message id, token 1 the message type. Empty tokens are kept.
//! The app side (our daemon) parses [`ServerMessage`] and builds app messages with the
//! functions at the bottom; the drachtio double does the reverse with [`AppMessage`].

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    NotUtf8,
    TooFewTokens { kind: &'static str, found: usize },
    UnknownType(String),
    BadPort(String),
    BadStatus(String),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::NotUtf8 => write!(f, "drachtio message: meta line is not UTF-8"),
            MessageError::TooFewTokens { kind, found } => {
                write!(f, "drachtio message: `{kind}` with only {found} tokens")
            }
            MessageError::UnknownType(t) => write!(f, "drachtio message: unknown type `{t}`"),
            MessageError::BadPort(p) => write!(f, "drachtio message: bad port `{p}`"),
            MessageError::BadStatus(s) => write!(f, "drachtio message: bad reply status `{s}`"),
        }
    }
}

impl std::error::Error for MessageError {}

/// Splits a payload into its meta tokens and the optional SIP text after the first CRLF.
pub fn split_payload(payload: &[u8]) -> Result<(Vec<&str>, Option<&[u8]>), MessageError> {
    let (meta, sip) = match payload.windows(2).position(|w| w == b"\r\n") {
        Some(i) => (&payload[..i], Some(&payload[i + 2..])),
        None => (payload, None),
    };
    let meta = std::str::from_utf8(meta).map_err(|_| MessageError::NotUtf8)?;
    Ok((meta.split('|').collect(), sip))
}

/// Status word of a server `response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    Ok,
    /// `NO`: authentication or format failure; the server closes the connection.
    No,
    /// `NOK`: a SIP-level failure; the connection stays up.
    Nok,
}

impl ReplyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Ok => "OK",
            ReplyStatus::No => "NO",
            ReplyStatus::Nok => "NOK",
        }
    }
}

/// `<srvId>|response|<appMsgId>|<STATUS>[|tokens…][\r\n<SIP>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub msg_id: String,
    pub reply_to: String,
    pub status: ReplyStatus,
    /// Tokens after the status word.
    pub tokens: Vec<String>,
    pub sip: Option<Vec<u8>>,
}

impl Reply {
    /// The reason text of a `NO`/`NOK` reply, or the first token of an `OK`.
    pub fn first_token(&self) -> &str {
        self.tokens.first().map(String::as_str).unwrap_or("")
    }

    /// The transaction id of an `OK` echo of a request the app sent (token 10 of the frame).
    pub fn echo_transaction_id(&self) -> Option<&str> {
        // tokens[0] = "application", [1] bytes, [2] proto, [3] addr, [4] port, [5] time, [6] txn
        if self.status == ReplyStatus::Ok && self.first_token() == "application" {
            self.tokens.get(6).map(String::as_str).filter(|t| !t.is_empty())
        } else {
            None
        }
    }
}

/// `<srvId>|sip|<source>|<bytes>|<proto>|<addr>|<port>|<time>|<txnId>|<dialogId>|[<localAddr>|<localPort>|]\r\n<SIP>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipDelivery {
    pub msg_id: String,
    /// `network` or `application`.
    pub source: String,
    pub bytes: usize,
    /// `udp`, `tcp` or `tls`.
    pub protocol: String,
    pub address: String,
    pub port: u16,
    pub time: String,
    pub transaction_id: String,
    pub dialog_id: String,
    pub local_address: Option<String>,
    pub local_port: Option<u16>,
    pub sip: Vec<u8>,
}

/// A message from drachtio-server to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    Response(Reply),
    Sip(SipDelivery),
    /// CDR events and anything else we never subscribe to.
    Other {
        msg_id: String,
        kind: String,
    },
}

fn parse_port(s: &str) -> Result<u16, MessageError> {
    s.parse::<u16>().map_err(|_| MessageError::BadPort(s.to_string()))
}

impl ServerMessage {
    pub fn parse(payload: &[u8]) -> Result<ServerMessage, MessageError> {
        let (t, sip) = split_payload(payload)?;
        if t.len() < 2 {
            return Err(MessageError::TooFewTokens { kind: "message", found: t.len() });
        }
        match t[1] {
            "response" => {
                if t.len() < 4 {
                    return Err(MessageError::TooFewTokens { kind: "response", found: t.len() });
                }
                let status = match t[3] {
                    "OK" => ReplyStatus::Ok,
                    "NO" => ReplyStatus::No,
                    "NOK" => ReplyStatus::Nok,
                    other => return Err(MessageError::BadStatus(other.to_string())),
                };
                Ok(ServerMessage::Response(Reply {
                    msg_id: t[0].to_string(),
                    reply_to: t[2].to_string(),
                    status,
                    tokens: t[4..].iter().map(|s| s.to_string()).collect(),
                    sip: sip.map(<[u8]>::to_vec),
                }))
            }
            "sip" => {
                if t.len() < 10 {
                    return Err(MessageError::TooFewTokens { kind: "sip", found: t.len() });
                }
                let (local_address, local_port) = match (t.get(10), t.get(11)) {
                    (Some(a), Some(p)) if !a.is_empty() && !p.is_empty() => (Some(a.to_string()), Some(parse_port(p)?)),
                    _ => (None, None),
                };
                Ok(ServerMessage::Sip(SipDelivery {
                    msg_id: t[0].to_string(),
                    source: t[2].to_string(),
                    bytes: t[3].parse().unwrap_or(0),
                    protocol: t[4].to_string(),
                    address: t[5].to_string(),
                    port: parse_port(t[6])?,
                    time: t[7].to_string(),
                    transaction_id: t[8].to_string(),
                    dialog_id: t[9].to_string(),
                    local_address,
                    local_port,
                    sip: sip.map(<[u8]>::to_vec).unwrap_or_default(),
                }))
            }
            other => Ok(ServerMessage::Other { msg_id: t[0].to_string(), kind: other.to_string() }),
        }
    }
}

/// A message from the app to drachtio-server (what the double parses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppMessage {
    Authenticate {
        msg_id: String,
        secret: String,
        tags: String,
    },
    Route {
        msg_id: String,
        verb: String,
    },
    RemoveRoute {
        msg_id: String,
        verb: String,
    },
    Ping {
        msg_id: String,
    },
    /// `sip|<txnId>|<dialogId>[|<proxy>]\r\n<SIP>`: a response when `sip` starts with `SIP/`.
    Sip {
        msg_id: String,
        transaction_id: String,
        dialog_id: String,
        proxy: String,
        sip: Vec<u8>,
    },
    Other {
        msg_id: String,
        kind: String,
        token_count: usize,
    },
}

impl AppMessage {
    pub fn parse(payload: &[u8]) -> Result<AppMessage, MessageError> {
        let (t, sip) = split_payload(payload)?;
        if t.len() < 2 {
            return Err(MessageError::TooFewTokens { kind: "message", found: t.len() });
        }
        let id = t[0].to_string();
        let tok = |i: usize| t.get(i).map(|s| s.to_string()).unwrap_or_default();
        Ok(match t[1] {
            "authenticate" => AppMessage::Authenticate { msg_id: id, secret: tok(2), tags: tok(3) },
            "route" => AppMessage::Route { msg_id: id, verb: tok(2) },
            "remove_route" => AppMessage::RemoveRoute { msg_id: id, verb: tok(2) },
            "ping" => AppMessage::Ping { msg_id: id },
            "sip" => AppMessage::Sip {
                msg_id: id,
                transaction_id: tok(2),
                dialog_id: tok(3),
                proxy: tok(4),
                sip: sip.map(<[u8]>::to_vec).unwrap_or_default(),
            },
            other => AppMessage::Other { msg_id: id, kind: other.to_string(), token_count: t.len() },
        })
    }
}

/// `<msgId>|authenticate|<secret>|` (no tags, like drachtio-srf).
pub fn authenticate(msg_id: &str, secret: &str) -> Vec<u8> {
    format!("{msg_id}|authenticate|{secret}|").into_bytes()
}

/// `<msgId>|route|<verb>`; the verb must be lower case.
pub fn route(msg_id: &str, verb: &str) -> Vec<u8> {
    format!("{msg_id}|route|{}", verb.to_ascii_lowercase()).into_bytes()
}

/// `<msgId>|remove_route|<verb>`. drachtio v0.9.10 removes every route of the connection,
/// whatever the verb (drachtio-protocol.md §2.2).
pub fn remove_route(msg_id: &str, verb: &str) -> Vec<u8> {
    format!("{msg_id}|remove_route|{}", verb.to_ascii_lowercase()).into_bytes()
}

pub fn ping(msg_id: &str) -> Vec<u8> {
    format!("{msg_id}|ping").into_bytes()
}

/// `<msgId>|sip|<txnId>|\r\n<SIP response>`
pub fn sip_response(msg_id: &str, transaction_id: &str, sip: &[u8]) -> Vec<u8> {
    let mut out = format!("{msg_id}|sip|{transaction_id}|\r\n").into_bytes();
    out.extend_from_slice(sip);
    out
}

/// `<msgId>|sip||\r\n<SIP request>` or `<msgId>|sip|||<proxy>\r\n<SIP request>`
pub fn sip_request(msg_id: &str, proxy: Option<&str>, sip: &[u8]) -> Vec<u8> {
    let mut out = match proxy {
        Some(p) if !p.is_empty() => format!("{msg_id}|sip|||{p}\r\n").into_bytes(),
        _ => format!("{msg_id}|sip||\r\n").into_bytes(),
    };
    out.extend_from_slice(sip);
    out
}

/// A fresh message id (lower-case UUID v4, as drachtio-srf uses). The random bytes come from
/// the thread-local generator rather than the OS: one `getrandom` syscall per frame adds up,
/// and message ids only need to be unique, not secret.
pub fn new_message_id() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auth_ok_from_capture() {
        let p = b"548f0668-c092-4300-a2b7-e06c4afd9449|response|af7dc324-2c52-496b-a00d-6cc3a859045a|OK|tcp/127.0.0.1:5060,udp/127.0.0.1:5060|v0.9.10-1-g9c2dd4cb6a|tcp/127.0.0.1:5060,udp/127.0.0.1:5060";
        let ServerMessage::Response(r) = ServerMessage::parse(p).unwrap() else { panic!() };
        assert_eq!(r.reply_to, "af7dc324-2c52-496b-a00d-6cc3a859045a");
        assert_eq!(r.status, ReplyStatus::Ok);
        assert_eq!(
            r.tokens,
            vec![
                "tcp/127.0.0.1:5060,udp/127.0.0.1:5060",
                "v0.9.10-1-g9c2dd4cb6a",
                "tcp/127.0.0.1:5060,udp/127.0.0.1:5060"
            ]
        );
    }

    #[test]
    fn parses_incoming_request_meta() {
        let p = b"16b7|sip|network|355|udp|127.0.0.1|5070|10:02:44.185253|95a0||127.0.0.1|5060|\r\nREGISTER sip:x SIP/2.0\r\n\r\n";
        let ServerMessage::Sip(d) = ServerMessage::parse(p).unwrap() else { panic!() };
        assert_eq!(d.protocol, "udp");
        assert_eq!(d.port, 5070);
        assert_eq!(d.transaction_id, "95a0");
        assert_eq!(d.local_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(d.local_port, Some(5060));
        assert!(d.sip.starts_with(b"REGISTER"));
    }

    #[test]
    fn message_ids_are_distinct_v4_uuids() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(a, a.to_ascii_lowercase());
    }

    #[test]
    fn builds_app_messages_like_srf() {
        assert_eq!(authenticate("id", "cymru"), b"id|authenticate|cymru|".to_vec());
        assert_eq!(route("id", "REGISTER"), b"id|route|register".to_vec());
        assert_eq!(sip_request("id", Some("sip:1.2.3.4"), b"X"), b"id|sip|||sip:1.2.3.4\r\nX".to_vec());
        assert_eq!(sip_request("id", None, b"X"), b"id|sip||\r\nX".to_vec());
        assert_eq!(sip_response("id", "t", b"X"), b"id|sip|t|\r\nX".to_vec());
    }
}
