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
//!
//! The triage thread claims the answers of a whole batch in the same round trip as it reads
//! the batch's bindings ([`read_and_claim`]): a registration costs no Redis round trip more
//! than it did before answers were made one-time, and a replay is refused before it leaves
//! the triage thread. [`claim`] alone is for requests that did not go through a batch read.

use sha2::{Digest, Sha256};

use super::credentials::NonceUse;
use crate::store::redis::RedisConn;
use crate::store::StoreError;

pub use crate::store::keys::NONCE_USE_PREFIX as KEY_PREFIX;

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

/// `MGET` of `values` and `SET … NX EX ttl_secs` of each of `claims`, in one pipelined round
/// trip: the values in order, and for each claim whether it was the first use.
/// Forgets a claim (`DEL`): the answer was refused for our reasons (a 5xx) and may be sent
/// again.
pub fn release(conn: &mut RedisConn, key: &str) -> Result<(), StoreError> {
    redis::cmd("DEL").arg(key).query::<()>(&mut **conn)?;
    Ok(())
}

pub fn read_and_claim(
    conn: &mut RedisConn,
    values: &[String],
    claims: &[&str],
    ttl_secs: u64,
) -> Result<(Vec<Option<String>>, Vec<bool>), StoreError> {
    let mut pipe = redis::pipe();
    if !values.is_empty() {
        pipe.cmd("MGET").arg(values);
    }
    for key in claims {
        pipe.cmd("SET").arg(key).arg(1).arg("NX").arg("EX").arg(ttl_secs.max(1));
    }
    let mut replies: Vec<redis::Value> = pipe.query(&mut **conn)?;
    let texts: Vec<Option<String>> = if values.is_empty() {
        Vec::new()
    } else if replies.is_empty() {
        return Err(StoreError::BadData("pipeline: no MGET reply".into()));
    } else {
        redis::from_redis_value(replies.remove(0)).map_err(|e| StoreError::BadData(format!("MGET reply: {e}")))?
    };
    let claimed: Vec<bool> = replies.into_iter().map(|v| !matches!(v, redis::Value::Nil)).collect();
    if texts.len() != values.len() || claimed.len() != claims.len() {
        return Err(StoreError::BadData("pipeline: reply count differs from the commands".into()));
    }
    Ok((texts, claimed))
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
