//! The `voip_carriers.register_status` JSON (spec 6.4), read by the api-server and the webapp:
//! field names and order are part of the contract.

use std::time::SystemTime;

use serde::Serialize;

/// What is written for one carrier after a REGISTER outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterStatus {
    /// A final response: `{"status","reason","cseq","callId","timestamp","expires"}`.
    Response {
        ok: bool,
        /// `"<code> <reason phrase>"`.
        reason: String,
        /// The CSeq of the original (unchallenged) request, e.g. `"1 REGISTER"`.
        cseq: String,
        call_id: String,
        timestamp: SystemTime,
        /// Granted seconds; 0 on failure.
        expires: u64,
    },
    /// No response at all (drachtio refused or was not connected), or a configuration the
    /// regbot cannot use: `{"status":"fail","reason":"<text>"}`. Node stored `"reason":{}`
    /// for exceptions; the text is more useful and the shape is the same.
    Failure { reason: String },
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    status: &'a str,
    reason: &'a str,
    cseq: &'a str,
    #[serde(rename = "callId")]
    call_id: &'a str,
    timestamp: String,
    expires: u64,
}

#[derive(Serialize)]
struct FailureJson<'a> {
    status: &'a str,
    reason: &'a str,
}

impl RegisterStatus {
    pub fn to_json(&self) -> String {
        let json = match self {
            RegisterStatus::Response { ok, reason, cseq, call_id, timestamp, expires } => {
                serde_json::to_string(&ResponseJson {
                    status: if *ok { "ok" } else { "fail" },
                    reason,
                    cseq,
                    call_id,
                    timestamp: iso8601_millis(*timestamp),
                    expires: *expires,
                })
            }
            RegisterStatus::Failure { reason } => serde_json::to_string(&FailureJson { status: "fail", reason }),
        };
        // Serialising plain strings and numbers cannot fail.
        json.unwrap_or_default()
    }
}

pub use crate::clock::iso8601_millis;

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn response_json_has_the_exact_fields_in_order() {
        let s = RegisterStatus::Response {
            ok: true,
            reason: "200 OK".into(),
            cseq: "1 REGISTER".into(),
            call_id: "gw-sid".into(),
            timestamp: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            expires: 1800,
        };
        assert_eq!(
            s.to_json(),
            r#"{"status":"ok","reason":"200 OK","cseq":"1 REGISTER","callId":"gw-sid","timestamp":"2023-11-14T22:13:20.123Z","expires":1800}"#
        );
        let f = RegisterStatus::Response {
            ok: false,
            reason: "403 Forbidden".into(),
            cseq: "2 REGISTER".into(),
            call_id: "gw".into(),
            timestamp: UNIX_EPOCH,
            expires: 0,
        };
        assert!(f.to_json().starts_with(r#"{"status":"fail","reason":"403 Forbidden","#));
        assert!(f.to_json().ends_with(r#""expires":0}"#));
        assert_eq!(
            RegisterStatus::Failure { reason: "Invalid from_domain a b".into() }.to_json(),
            r#"{"status":"fail","reason":"Invalid from_domain a b"}"#
        );
    }
}
