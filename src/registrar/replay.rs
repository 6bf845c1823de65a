//! One-time use of an answered challenge, cluster-wide.
//!
//! A nonce proves that we issued it, not that nobody answered it before: whoever captured a
//! REGISTER could send its Authorization again — from another address, with another Contact —
//! and take the binding over. So each `(nonce, nc, cnonce)` is recorded in Redis with
//! `SET … NX EX` the first time it is used; a second use finds the key and is refused before
//! any webhook call. RFC 7616 reuse stays possible: a client may answer the same nonce again
//! with a new `nc`/`cnonce` pair (phones send a pre-emptive Authorization on refresh).
//!
//! The key is a hash of the three values, so its size does not depend on what the client
//! sent; it lives as long as the nonce can be valid (its TTL plus the clock skew tolerated).

use sha2::{Digest, Sha256};

use super::credentials::NonceUse;
use crate::store::redis::RedisConn;
use crate::store::StoreError;

/// Prefix of the one-time keys (not cluster-prefixed: nonces are valid on every SBC sharing
/// the secret, which share one Redis).
pub const KEY_PREFIX: &str = "sbc-nonce-use:";

/// `sbc-nonce-use:<32 hex>`: the first 128 bits of SHA-256 over nonce, nc and cnonce.
pub fn key(nonce: &str, used: &NonceUse) -> String {
    let mut h = Sha256::new();
    h.update(nonce.as_bytes());
    h.update([0]);
    h.update(used.nc.to_be_bytes());
    h.update([0]);
    h.update(used.cnonce.as_bytes());
    let digest = h.finalize();
    format!("{KEY_PREFIX}{}", hex::encode(&digest[..16]))
}

/// Records the use; `true` the first time, `false` when it was already recorded (a replay).
pub fn claim(conn: &mut RedisConn, key: &str, ttl_secs: u64) -> Result<bool, StoreError> {
    let set: Option<String> =
        redis::cmd("SET").arg(key).arg(1).arg("NX").arg("EX").arg(ttl_secs.max(1)).query(&mut **conn)?;
    Ok(set.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(nc: u32, cnonce: &str) -> NonceUse {
        NonceUse { nc, cnonce: cnonce.into() }
    }

    #[test]
    fn every_part_of_the_triple_changes_the_key_and_its_size_is_fixed() {
        let k = key("1.a.b", &used(1, "c1"));
        assert!(k.starts_with(KEY_PREFIX));
        assert_eq!(k.len(), KEY_PREFIX.len() + 32);
        assert_eq!(k, key("1.a.b", &used(1, "c1")));
        assert_ne!(k, key("1.a.c", &used(1, "c1")));
        assert_ne!(k, key("1.a.b", &used(2, "c1")));
        assert_ne!(k, key("1.a.b", &used(1, "c2")));
        assert_eq!(key("n", &used(1, &"x".repeat(128))).len(), k.len());
    }
}
