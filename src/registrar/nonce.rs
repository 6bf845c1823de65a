//! Stateless, signed, time-limited challenge nonces, unique per challenge.
//!
//! The Node sidecar issued a counter-based nonce and never checked it, so a captured
//! Authorization could be replayed for as long as the webhook accepted it. Here a nonce is
//! `<unix seconds>.<16 hex random>.<32 hex MAC>` where the MAC is HMAC-SHA256(key, realm +
//! "\n" + seconds + "\n" + random + "\n" + source), truncated to 128 bits. The source is the
//! client's IP address — an IPv6 one as its /64, not the port: a NAT that rebinds the port keeps
//! the address — so a nonce only verifies when it comes back from the address it was sent to.
//! That is what lets a failed answer count against its source (`bans.rs`): a blind spoofer
//! never receives a nonce for the address it forges, so whatever it sends with that address
//! fails the MAC and is merely challenged again. The random part makes every
//! challenge's nonce different (two devices challenged in the same second no longer share
//! one), and nothing is stored: any worker thread (or, with a shared `nonce_secret`, any SBC
//! of the cluster) can verify a nonce another one issued, and it expires by itself. That a
//! nonce is answered only once per `nc`/`cnonce` is checked separately (`replay.rs`).

use std::net::IpAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC kept in the nonce (hex-encoded, so twice as many characters).
const MAC_BYTES: usize = 16;
/// Random bytes per nonce (hex-encoded).
pub const RANDOM_BYTES: usize = 8;
/// A nonce stamped this far in the future still counts: clocks of SBCs sharing a secret drift.
pub(crate) const FUTURE_SKEW_SECS: u64 = 60;
/// Longest text that can be one of our nonces (20 digits of seconds); anything longer is
/// refused before any parsing or MAC work.
pub const MAX_NONCE_LEN: usize = 20 + 1 + 2 * RANDOM_BYTES + 1 + 2 * MAC_BYTES;

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

    /// A nonce for a challenge of `realm` sent to `source` (`None`: a source drachtio did not
    /// give as an address; such a nonce verifies only for such a source).
    pub fn issue(&self, realm: &str, source: Option<IpAddr>) -> String {
        self.issue_at(realm, source, super::unix_secs())
    }

    /// A nonce stamped `unix_secs` (tests make old ones).
    pub fn issue_at(&self, realm: &str, source: Option<IpAddr>, unix_secs: u64) -> String {
        let mut random = [0u8; RANDOM_BYTES];
        rand::thread_rng().fill_bytes(&mut random);
        self.issue_with(realm, source, unix_secs, &random)
    }

    /// The nonce for `realm` and `source` stamped `unix_secs` with the given random part
    /// (tests pin both).
    pub fn issue_with(
        &self,
        realm: &str,
        source: Option<IpAddr>,
        unix_secs: u64,
        random: &[u8; RANDOM_BYTES],
    ) -> String {
        let random_hex = hex::encode(random);
        let mac = self.hmac(realm, source, unix_secs, &random_hex).finalize().into_bytes();
        format!("{unix_secs}.{random_hex}.{}", hex::encode(&mac[..MAC_BYTES]))
    }

    /// Whether `nonce` is one we issued for `realm` to `source`, and still fresh. A nonce
    /// issued to another address is [`NonceCheck::Forged`]: for this source it is.
    pub fn check(&self, realm: &str, nonce: &str, source: Option<IpAddr>) -> NonceCheck {
        self.check_at(realm, nonce, source, super::unix_secs())
    }

    pub fn check_at(&self, realm: &str, nonce: &str, source: Option<IpAddr>, now_secs: u64) -> NonceCheck {
        if nonce.len() > MAX_NONCE_LEN {
            return NonceCheck::Forged;
        }
        let mut parts = nonce.split('.');
        let (Some(ts_text), Some(random_hex), Some(mac_hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return NonceCheck::Forged;
        };
        if ts_text.is_empty() || !ts_text.bytes().all(|b| b.is_ascii_digit()) {
            return NonceCheck::Forged;
        }
        // Lower-case hex only, so that one nonce has one spelling (the replay record is keyed
        // by the text).
        let lower_hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !lower_hex(random_hex, 2 * RANDOM_BYTES) || !lower_hex(mac_hex, 2 * MAC_BYTES) {
            return NonceCheck::Forged;
        }
        let (Ok(ts), Ok(mac)) = (ts_text.parse::<u64>(), hex::decode(mac_hex)) else {
            return NonceCheck::Forged;
        };
        // `verify_truncated_left` compares in constant time.
        if self.hmac(realm, source, ts, random_hex).verify_truncated_left(&mac).is_err() {
            return NonceCheck::Forged;
        }
        // Re-serialising must give the same text, so `0012.…` cannot stand in for `12.…`.
        if ts.to_string() != ts_text {
            return NonceCheck::Forged;
        }
        if ts > now_secs.saturating_add(FUTURE_SKEW_SECS) || now_secs.saturating_sub(ts) > self.ttl.as_secs() {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }

    fn hmac(&self, realm: &str, source: Option<IpAddr>, unix_secs: u64, random_hex: &str) -> HmacSha256 {
        // A key of any length is accepted by HMAC, so this cannot fail.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        // The realm is case-insensitive (a host name); the separators keep `a1`+`23` apart
        // from `a`+`123`.
        m.update(realm.to_ascii_lowercase().as_bytes());
        m.update(b"\n");
        m.update(unix_secs.to_string().as_bytes());
        m.update(b"\n");
        m.update(random_hex.as_bytes());
        m.update(b"\n");
        // A tag byte, then the bytes that identify the source: IPv4 and IPv6 never collide.
        match source.map(crate::bans::source_key) {
            Some(IpAddr::V4(v4)) => {
                m.update(b"4");
                m.update(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                m.update(b"6");
                m.update(&v6.octets()[..8]);
            }
            None => m.update(b"-"),
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);
    const R1: [u8; RANDOM_BYTES] = [1, 2, 3, 4, 5, 6, 7, 8];
    const SRC: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10)));

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn a_nonce_verifies_only_from_the_address_it_was_sent_to() {
        let s = NonceSigner::random(TTL);
        let n = s.issue_with("r.org", ip("192.0.2.10"), 5_000, &R1);
        assert_eq!(s.check_at("r.org", &n, ip("192.0.2.10"), 5_001), NonceCheck::Valid);
        assert_eq!(s.check_at("r.org", &n, ip("::ffff:192.0.2.10"), 5_001), NonceCheck::Valid);
        assert_eq!(s.check_at("r.org", &n, ip("192.0.2.11"), 5_001), NonceCheck::Forged);
        assert_eq!(s.check_at("r.org", &n, None, 5_001), NonceCheck::Forged);
        // IPv6: the /64 (privacy addresses change within it)
        let v6 = s.issue_with("r.org", ip("2001:db8:1:2::10"), 5_000, &R1);
        assert_eq!(s.check_at("r.org", &v6, ip("2001:db8:1:2:abcd::1"), 5_001), NonceCheck::Valid);
        assert_eq!(s.check_at("r.org", &v6, ip("2001:db8:1:3::10"), 5_001), NonceCheck::Forged);
        // unknown sources only match each other
        let none = s.issue_with("r.org", None, 5_000, &R1);
        assert_eq!(s.check_at("r.org", &none, None, 5_001), NonceCheck::Valid);
        assert_eq!(s.check_at("r.org", &none, SRC, 5_001), NonceCheck::Forged);
    }

    #[test]
    fn a_fresh_nonce_verifies_for_its_realm_only() {
        let s = NonceSigner::random(TTL);
        let n = s.issue_with("jambonz.org", SRC, 1_700_000_000, &R1);
        assert!(n.starts_with("1700000000.0102030405060708."), "{n}");
        assert_eq!(n.len(), "1700000000.".len() + 2 * RANDOM_BYTES + 1 + 2 * MAC_BYTES);
        assert!(n.len() <= MAX_NONCE_LEN);
        assert_eq!(s.check_at("jambonz.org", &n, SRC, 1_700_000_010), NonceCheck::Valid);
        assert_eq!(s.check_at("JAMBONZ.org", &n, SRC, 1_700_000_010), NonceCheck::Valid);
        assert_eq!(s.check_at("other.org", &n, SRC, 1_700_000_010), NonceCheck::Forged);
    }

    #[test]
    fn two_challenges_in_the_same_second_get_different_nonces() {
        let s = NonceSigner::random(TTL);
        let a = s.issue("r.org", SRC);
        let b = s.issue("r.org", SRC);
        assert_ne!(a, b);
        assert_eq!(a.split('.').next(), b.split('.').next(), "same second expected: {a} {b}");
        assert_eq!(s.check("r.org", &a, SRC), NonceCheck::Valid);
        assert_eq!(s.check("r.org", &b, SRC), NonceCheck::Valid);
    }

    #[test]
    fn an_old_nonce_is_stale() {
        let s = NonceSigner::random(TTL);
        let n = s.issue_with("r.org", SRC, 1_000, &R1);
        assert_eq!(s.check_at("r.org", &n, SRC, 1_300), NonceCheck::Valid);
        assert_eq!(s.check_at("r.org", &n, SRC, 1_301), NonceCheck::Stale);
        // far in the future: our clock went backwards, or another SBC's is way off
        assert_eq!(s.check_at("r.org", &n, SRC, 1_000 - FUTURE_SKEW_SECS - 1), NonceCheck::Stale);
        assert_eq!(s.check_at("r.org", &n, SRC, 1_000 - FUTURE_SKEW_SECS), NonceCheck::Valid);
    }

    #[test]
    fn tampered_or_foreign_nonces_are_forged() {
        let s = NonceSigner::random(TTL);
        let n = s.issue_with("r.org", SRC, 5_000, &R1);
        let mut parts = n.split('.');
        let (ts, random, mac) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let other_ts = format!("5001.{random}.{mac}");
        let other_random = format!("{ts}.0102030405060709.{mac}");
        let short = format!("{ts}.{random}.{}", &mac[..8]);
        let padded = format!("0{ts}.{random}.{mac}");
        let upper = format!("{ts}.{random}.{}", mac.to_uppercase());
        let old_format = format!("{ts}.{mac}");
        let extra = format!("{n}.00");
        let long = format!("{n}{}", "0".repeat(MAX_NONCE_LEN));
        for bad in [
            "",
            "157590482938000",
            "abc.def.012",
            "..",
            other_ts.as_str(),
            other_random.as_str(),
            short.as_str(),
            padded.as_str(),
            upper.as_str(),
            old_format.as_str(),
            extra.as_str(),
            long.as_str(),
        ] {
            assert_eq!(s.check_at("r.org", bad, SRC, 5_000), NonceCheck::Forged, "{bad:?}");
        }
        let stranger = NonceSigner::random(TTL);
        assert_eq!(stranger.check_at("r.org", &n, SRC, 5_000), NonceCheck::Forged);
    }

    #[test]
    fn a_shared_secret_lets_another_signer_verify() {
        let a = NonceSigner::from_secret("cluster secret", TTL);
        let b = NonceSigner::from_secret("cluster secret", TTL);
        let c = NonceSigner::from_secret("another secret", TTL);
        let n = a.issue_with("r.org", SRC, 42, &R1);
        assert_eq!(b.check_at("r.org", &n, SRC, 50), NonceCheck::Valid);
        assert_eq!(c.check_at("r.org", &n, SRC, 50), NonceCheck::Forged);
    }
}
