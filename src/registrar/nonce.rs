//! Stateless, signed, time-limited challenge nonces.
//!
//! The Node sidecar issued a counter-based nonce and never checked it, so a captured
//! Authorization could be replayed for as long as the webhook accepted it. Here a nonce is
//! `<unix seconds>.<hex MAC>` where the MAC is HMAC-SHA256(key, realm + "\n" + seconds),
//! truncated to 128 bits. Nothing is stored: any worker thread (or, with a shared
//! `nonce_secret`, any SBC of the cluster) can verify a nonce another one issued, and it
//! expires by itself.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC kept in the nonce (hex-encoded, so twice as many characters).
const MAC_BYTES: usize = 16;
/// A nonce stamped this far in the future still counts: clocks of SBCs sharing a secret drift.
const FUTURE_SKEW_SECS: u64 = 60;

/// What a nonce from an Authorization header turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but older than the TTL: challenge again with `stale=true`, the client retries with
    /// the same credentials without asking its user.
    Stale,
    /// Not issued by us for this realm (or mangled): a fresh challenge.
    Forged,
}

pub struct NonceSigner {
    key: [u8; 32],
    ttl: Duration,
}

impl NonceSigner {
    /// A signer with a random key: nonces are valid in this process only.
    pub fn random(ttl: Duration) -> NonceSigner {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        NonceSigner { key, ttl }
    }

    /// A signer whose key is derived from a configured secret (domain-separated, so the same
    /// secret used for something else does not give the same key).
    pub fn from_secret(secret: &str, ttl: Duration) -> NonceSigner {
        let mut h = Sha256::new();
        h.update(b"sbc-sidecar registrar nonce key\0");
        h.update(secret.as_bytes());
        NonceSigner { key: h.finalize().into(), ttl }
    }

    pub fn issue(&self, realm: &str) -> String {
        self.issue_at(realm, super::unix_secs())
    }

    pub fn issue_at(&self, realm: &str, unix_secs: u64) -> String {
        let mac = self.mac(realm, unix_secs);
        format!("{unix_secs}.{}", hex::encode(&mac[..MAC_BYTES]))
    }

    pub fn check(&self, realm: &str, nonce: &str) -> NonceCheck {
        self.check_at(realm, nonce, super::unix_secs())
    }

    pub fn check_at(&self, realm: &str, nonce: &str, now_secs: u64) -> NonceCheck {
        let Some((ts_text, mac_hex)) = nonce.split_once('.') else {
            return NonceCheck::Forged;
        };
        if ts_text.is_empty() || !ts_text.bytes().all(|b| b.is_ascii_digit()) {
            return NonceCheck::Forged;
        }
        let (Ok(ts), Ok(mac)) = (ts_text.parse::<u64>(), hex::decode(mac_hex)) else {
            return NonceCheck::Forged;
        };
        // `verify_truncated_left` compares in constant time; the length check keeps a
        // one-byte "MAC" from passing as a truncation.
        if mac.len() != MAC_BYTES || self.hmac(realm, ts).verify_truncated_left(&mac).is_err() {
            return NonceCheck::Forged;
        }
        // Re-serialising must give the same text, so `0012.…` cannot stand in for `12.…`.
        if ts.to_string() != ts_text {
            return NonceCheck::Forged;
        }
        if ts > now_secs + FUTURE_SKEW_SECS || now_secs.saturating_sub(ts) > self.ttl.as_secs() {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }

    fn hmac(&self, realm: &str, unix_secs: u64) -> HmacSha256 {
        // A key of any length is accepted by HMAC, so this cannot fail.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        // The realm is case-insensitive (a host name); the separator keeps `a1`+`23` apart
        // from `a`+`123`.
        m.update(realm.to_ascii_lowercase().as_bytes());
        m.update(b"\n");
        m.update(unix_secs.to_string().as_bytes());
        m
    }

    fn mac(&self, realm: &str, unix_secs: u64) -> [u8; 32] {
        self.hmac(realm, unix_secs).finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    #[test]
    fn a_fresh_nonce_verifies_for_its_realm_only() {
        let s = NonceSigner::random(TTL);
        let n = s.issue_at("jambonz.org", 1_700_000_000);
        assert!(n.starts_with("1700000000."), "{n}");
        assert_eq!(n.len(), "1700000000.".len() + 2 * MAC_BYTES);
        assert_eq!(s.check_at("jambonz.org", &n, 1_700_000_010), NonceCheck::Valid);
        assert_eq!(s.check_at("JAMBONZ.org", &n, 1_700_000_010), NonceCheck::Valid);
        assert_eq!(s.check_at("other.org", &n, 1_700_000_010), NonceCheck::Forged);
    }

    #[test]
    fn an_old_nonce_is_stale() {
        let s = NonceSigner::random(TTL);
        let n = s.issue_at("r.org", 1_000);
        assert_eq!(s.check_at("r.org", &n, 1_300), NonceCheck::Valid);
        assert_eq!(s.check_at("r.org", &n, 1_301), NonceCheck::Stale);
        // far in the future: our clock went backwards, or another SBC's is way off
        assert_eq!(s.check_at("r.org", &n, 1_000 - FUTURE_SKEW_SECS - 1), NonceCheck::Stale);
        assert_eq!(s.check_at("r.org", &n, 1_000 - FUTURE_SKEW_SECS), NonceCheck::Valid);
    }

    #[test]
    fn tampered_or_foreign_nonces_are_forged() {
        let s = NonceSigner::random(TTL);
        let n = s.issue_at("r.org", 5_000);
        let (ts, mac) = n.split_once('.').unwrap();
        let other_ts = format!("5001.{mac}");
        let short = format!("{ts}.{}", &mac[..8]);
        let padded = format!("0{ts}.{mac}");
        let upper = format!("{ts}.{}", mac.to_uppercase());
        for bad in ["", "157590482938000", "abc.def", ".00", other_ts.as_str(), short.as_str(), padded.as_str()] {
            assert_eq!(s.check_at("r.org", bad, 5_000), NonceCheck::Forged, "{bad:?}");
        }
        // hex is case-insensitive: still ours
        assert_eq!(s.check_at("r.org", &upper, 5_000), NonceCheck::Valid);
        let stranger = NonceSigner::random(TTL);
        assert_eq!(stranger.check_at("r.org", &n, 5_000), NonceCheck::Forged);
    }

    #[test]
    fn a_shared_secret_lets_another_signer_verify() {
        let a = NonceSigner::from_secret("cluster secret", TTL);
        let b = NonceSigner::from_secret("cluster secret", TTL);
        let c = NonceSigner::from_secret("another secret", TTL);
        let n = a.issue_at("r.org", 42);
        assert_eq!(b.check_at("r.org", &n, 50), NonceCheck::Valid);
        assert_eq!(c.check_at("r.org", &n, 50), NonceCheck::Forged);
    }
}
