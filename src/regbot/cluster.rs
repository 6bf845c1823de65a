//! What the SBCs of a cluster share about outbound registration in Redis.
//!
//! * `<cluster>:regbot-members` (hash): every running sidecar, field = its leader-election
//!   token, value = `<mode>:<unix ms last seen>`, written at each status check. A leader that
//!   stops reads it to decide whether the bindings it holds have a successor (see
//!   [`leader_successor`]).
//! * `<cluster>:regbot-sbcs:<voip_carrier_sid>` (hash, `SBC_REGBOT_MODE=every` only): field =
//!   the SBC id (its public SIP address), value = [`SbcEntry`] as JSON — that SBC's last
//!   outcome for the carrier and until when its binding holds. `register_status` is written
//!   from the aggregate of this hash, so MySQL says `ok` while any SBC holds a registration.
//! * `<cluster>:regbot-leader-contacts` (hash, leader mode): gateway sid → the Contact
//!   (`user@host`) the leader registered it with. A new leader whose Contact differs (the
//!   public address is in it) removes the old one after its own first 200, so that a hand-over
//!   leaves no second binding under the same Call-ID.
//! * `<cluster>:regbot-failures:<voip_carrier_sid>` (string, every mode only): failures in
//!   `REGISTER_RESPONSE_REMOVE` counted across SBCs since the last 200 from any of them; the
//!   SBC whose count reaches `JAMBONES_REGBOT_REGISTER_FAILURE_THRESHOLD` disables the carrier
//!   (once, as `INCR` returns each value to one caller only).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RegbotMode;

/// A member's entry counts while it was seen within this many status intervals.
pub const MEMBER_INTERVALS: u32 = 3;

pub use crate::store::keys::{
    regbot_failures as failures_key, regbot_leader_contacts as leader_contacts_key, regbot_members as members_key,
    regbot_sbcs as sbcs_key,
};

/// `<mode>:<unix ms>`
pub fn member_value(mode: RegbotMode, now_ms: u64) -> String {
    format!("{}:{now_ms}", mode.as_str())
}

/// The mode of the members other than `me` seen at or after `since_ms`.
pub fn live_members(entries: &HashMap<String, String>, me: &str, since_ms: u64) -> Vec<RegbotMode> {
    entries
        .iter()
        .filter(|(token, _)| token.as_str() != me)
        .filter_map(|(_, value)| {
            let (mode, seen) = value.split_once(':')?;
            let seen: u64 = seen.parse().ok()?;
            (seen >= since_ms).then_some(mode.parse().ok()?)
        })
        .collect()
}

/// Whether a stopping leader must de-register the bindings it holds: only when no other
/// leader-mode sidecar is left to take them over and the rest of the cluster registers from
/// every SBC (a cluster being switched to `every`, where nobody would ever refresh or remove
/// the leader's bindings again). A leader alone keeps Node's behaviour: its bindings survive a
/// restart.
pub fn leader_successor(others: &[RegbotMode]) -> bool {
    others.contains(&RegbotMode::Leader) || !others.contains(&RegbotMode::Every)
}

/// One SBC's state for one carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SbcEntry {
    /// The last REGISTER was answered 2xx.
    pub ok: bool,
    /// Unix seconds until which the binding holds (the write time on failure).
    pub until: u64,
    /// Unix seconds of the write.
    pub at: u64,
    /// The `register_status` JSON of that outcome.
    pub status: String,
}

impl SbcEntry {
    pub fn holds(&self, now: u64) -> bool {
        self.ok && self.until > now
    }
}

/// The entries of a carrier's hash that parse.
pub fn parse_entries(raw: &HashMap<String, String>) -> HashMap<String, SbcEntry> {
    raw.iter().filter_map(|(sbc, v)| Some((sbc.clone(), serde_json::from_str(v).ok()?))).collect()
}

/// The SBCs that hold a registration for the carrier now, sorted.
pub fn holders(entries: &HashMap<String, SbcEntry>, now: u64) -> Vec<String> {
    let mut out: Vec<String> = entries.iter().filter(|(_, e)| e.holds(now)).map(|(sbc, _)| sbc.clone()).collect();
    out.sort();
    out
}

/// Until when the last binding of the cluster holds (0 when none does).
pub fn cluster_until(entries: &HashMap<String, SbcEntry>, now: u64) -> u64 {
    entries.values().filter(|e| e.holds(now)).map(|e| e.until).max().unwrap_or(0)
}

/// The `register_status` for the whole cluster: while some SBC holds a registration, the
/// status of `me` if it is one of them, else of the holder whose binding lasts longest; when
/// none does, `fallback` (this SBC's own last outcome, as JSON). `"sbcs"` (how many SBCs hold one) is
/// appended; every other field stays as the webapp knows it.
pub fn aggregate_status(entries: &HashMap<String, SbcEntry>, me: &str, fallback: &str, now: u64) -> String {
    let holding = holders(entries, now);
    let chosen = if holding.iter().any(|s| s == me) {
        entries.get(me).map(|e| e.status.clone())
    } else {
        entries.values().filter(|e| e.holds(now)).max_by_key(|e| (e.until, e.at)).map(|e| e.status.clone())
    };
    let json = chosen.unwrap_or_else(|| fallback.to_string());
    with_count(&json, holding.len())
}

/// `json` (an object) with `"sbcs": count` appended.
pub fn with_count(json: &str, count: usize) -> String {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(mut map)) => {
            map.insert("sbcs".into(), Value::from(count));
            Value::Object(map).to_string()
        }
        _ => json.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::register_status::RegisterStatus;
    use super::*;

    fn entry(ok: bool, until: u64, status: &str) -> SbcEntry {
        SbcEntry { ok, until, at: 100, status: status.to_string() }
    }

    #[test]
    fn the_status_is_ok_while_any_sbc_holds_a_registration_and_counts_them() {
        let ok_a =
            r#"{"status":"ok","reason":"200 OK","cseq":"1 REGISTER","callId":"g@a","timestamp":"t","expires":60}"#;
        let ok_b =
            r#"{"status":"ok","reason":"200 OK","cseq":"7 REGISTER","callId":"g@b","timestamp":"t","expires":90}"#;
        let fail = RegisterStatus::Failure { reason: "403 Forbidden".into() }.to_json();
        let mut entries: HashMap<String, SbcEntry> =
            [("a".to_string(), entry(true, 160, ok_a)), ("b".to_string(), entry(true, 190, ok_b))].into();
        let s: Value = serde_json::from_str(&aggregate_status(&entries, "a", &fail, 120)).unwrap();
        assert_eq!(
            (s["status"].as_str(), s["callId"].as_str(), s["sbcs"].as_u64()),
            (Some("ok"), Some("g@a"), Some(2))
        );

        entries.insert("a".into(), entry(false, 120, &fail));
        let json = aggregate_status(&entries, "a", &fail, 120);
        assert!(json.starts_with(r#"{"status":"ok","reason":"200 OK","cseq":"7 REGISTER","callId":"g@b""#), "{json}");
        assert!(json.ends_with(r#""expires":90,"sbcs":1}"#), "field order kept, count appended: {json}");

        // b's binding ran out: nobody holds one.
        let json = aggregate_status(&entries, "a", &fail, 200);
        assert_eq!(json, r#"{"status":"fail","reason":"403 Forbidden","sbcs":0}"#);
        assert_eq!(cluster_until(&entries, 120), 190);
        assert_eq!(cluster_until(&entries, 200), 0);
        assert_eq!(holders(&entries, 120), vec!["b".to_string()]);
    }

    #[test]
    fn a_stopping_leader_deregisters_only_when_the_rest_of_the_cluster_registers_from_every_sbc() {
        let raw: HashMap<String, String> = [
            ("me".to_string(), member_value(RegbotMode::Leader, 5_000)),
            ("old".to_string(), member_value(RegbotMode::Leader, 1_000)),
            ("e".to_string(), member_value(RegbotMode::Every, 4_000)),
            ("junk".to_string(), "nonsense".to_string()),
        ]
        .into();
        let others = live_members(&raw, "me", 2_000);
        assert_eq!(others, vec![RegbotMode::Every], "stale and unreadable members do not count");
        assert!(!leader_successor(&others));
        assert!(leader_successor(&live_members(&raw, "me", 0)), "a live leader-mode standby takes over");
        assert!(leader_successor(&[]), "alone: bindings survive a restart (Node)");
    }
}
