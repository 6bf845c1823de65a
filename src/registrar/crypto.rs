//! Decryption of `clients.password`, as the jambonz api-server encrypts it (spec 4.4).
//!
//! The stored value is JSON `{"iv":"<32 hex>","content":"<hex ciphertext>"}`. The key is the
//! first 32 *characters* of the padded standard Base64 of SHA-256(secret), used as 32 ASCII
//! bytes (only 192 bits of entropy, but it is what the platform writes). AES-256-CBC with
//! PKCS#7, or AES-256-CTR (128-bit big-endian counter) when `LEGACY_CRYPTO` is set.

use std::fmt;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, KeyIvInit, StreamCipher};
use base64::Engine;
use sha2::{Digest, Sha256};

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Why a stored password could not be decrypted. Never carries the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    NotJson(String),
    BadIv,
    BadHex,
    BadPadding,
    NotUtf8,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::NotJson(e) => write!(f, "clients.password: not the {{iv, content}} JSON: {e}"),
            CryptoError::BadIv => write!(f, "clients.password: iv is not 16 hex-encoded bytes"),
            CryptoError::BadHex => write!(f, "clients.password: content is not hex"),
            CryptoError::BadPadding => {
                write!(f, "clients.password: bad padding (wrong ENCRYPTION_SECRET or LEGACY_CRYPTO?)")
            }
            CryptoError::NotUtf8 => write!(f, "clients.password: plaintext is not UTF-8"),
        }
    }
}

impl std::error::Error for CryptoError {}

#[derive(serde::Deserialize)]
struct Stored {
    iv: String,
    content: String,
}

/// The key, derived once at startup.
#[derive(Clone)]
pub struct PasswordKey {
    key: [u8; 32],
    legacy_ctr: bool,
}

impl fmt::Debug for PasswordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordKey(<redacted>, legacy_ctr: {})", self.legacy_ctr)
    }
}

impl PasswordKey {
    pub fn derive(secret: &str, legacy_ctr: bool) -> PasswordKey {
        let encoded = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(secret.as_bytes()));
        // 32 bytes of digest encode to 44 ASCII characters, so the first 32 always exist.
        let mut key = [0u8; 32];
        key.copy_from_slice(&encoded.as_bytes()[..32]);
        PasswordKey { key, legacy_ctr }
    }

    pub fn decrypt(&self, stored: &str) -> Result<String, CryptoError> {
        let s: Stored = serde_json::from_str(stored).map_err(|e| CryptoError::NotJson(e.to_string()))?;
        let iv: [u8; 16] = hex::decode(&s.iv).ok().and_then(|v| v.try_into().ok()).ok_or(CryptoError::BadIv)?;
        let mut data = hex::decode(&s.content).map_err(|_| CryptoError::BadHex)?;
        let plain = if self.legacy_ctr {
            Aes256Ctr::new(&self.key.into(), &iv.into()).apply_keystream(&mut data);
            data
        } else {
            Aes256CbcDec::new(&self.key.into(), &iv.into())
                .decrypt_padded_vec_mut::<Pkcs7>(&data)
                .map_err(|_| CryptoError::BadPadding)?
        };
        String::from_utf8(plain).map_err(|_| CryptoError::NotUtf8)
    }

    /// The key as the platform sees it (a string), for the test vectors.
    #[cfg(test)]
    fn key_text(&self) -> &str {
        std::str::from_utf8(&self.key).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // docs/spec/test-vectors.md, "Encrypted clients.password"
    const SECRET: &str = "foobarbazzle";

    fn cbc() -> PasswordKey {
        PasswordKey::derive(SECRET, false)
    }

    fn ctr() -> PasswordKey {
        PasswordKey::derive(SECRET, true)
    }

    #[test]
    fn key_is_first_32_base64_characters_of_sha256() {
        assert_eq!(cbc().key_text(), "UpoiJr5H9tGpIe1SsJpFb2GPYemle+11");
    }

    #[test]
    fn cbc_vectors() {
        assert_eq!(
            cbc().decrypt(r#"{"iv":"000102030405060708090a0b0c0d0e0f","content":"fd2ec498c68153ab997b4646f48e21e0"}"#),
            Ok("s3cr3t-p@ss".to_string())
        );
        assert_eq!(
            cbc().decrypt(r#"{"iv":"00112233445566778899aabbccddeeff","content":"821935d816a26c5a9a4a17094c28c9e4"}"#),
            Ok("1234".to_string())
        );
    }

    #[test]
    fn ctr_vectors() {
        assert_eq!(
            ctr().decrypt(r#"{"iv":"000102030405060708090a0b0c0d0e0f","content":"2281948c0a1d5feefd1b05"}"#),
            Ok("s3cr3t-p@ss".to_string())
        );
        assert_eq!(
            ctr().decrypt(r#"{"iv":"00112233445566778899aabbccddeeff","content":"1e2f1f71"}"#),
            Ok("1234".to_string())
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let k = cbc();
        assert!(matches!(k.decrypt("plaintext"), Err(CryptoError::NotJson(_))));
        assert_eq!(k.decrypt(r#"{"iv":"0011","content":"00"}"#), Err(CryptoError::BadIv));
        assert_eq!(k.decrypt(r#"{"iv":"00112233445566778899aabbccddeeff","content":"zz"}"#), Err(CryptoError::BadHex));
        // not a whole block
        assert_eq!(
            k.decrypt(r#"{"iv":"00112233445566778899aabbccddeeff","content":"1e2f1f71"}"#),
            Err(CryptoError::BadPadding)
        );
        // wrong secret: the padding check fails
        assert_eq!(
            PasswordKey::derive("other", false)
                .decrypt(r#"{"iv":"00112233445566778899aabbccddeeff","content":"821935d816a26c5a9a4a17094c28c9e4"}"#),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn debug_does_not_show_the_key() {
        assert!(!format!("{:?}", cbc()).contains("Upoi"));
    }
}
