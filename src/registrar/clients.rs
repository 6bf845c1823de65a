//! Authentication against the `clients` table, for accounts without a registration webhook
//! (spec 4.4): decrypt the stored password and check the digest locally.

use serde_json::Value;

use super::accounts::ClientRow;
use super::crypto::{CryptoError, PasswordKey};
use super::grant::{AuthVerdict, Denial, Grant};
use crate::sip::digest::DigestCredentials;

/// The verdict for a client row (`None`: no such user). Granted iff the row is active and the
/// digest computed from its password equals the `response` of the Authorization header.
/// A stored password that cannot be decrypted is an error (the device gets 500: the
/// operator's data or secret is wrong, not the device's password).
pub fn authenticate(
    row: Option<&ClientRow>,
    credentials: &DigestCredentials,
    key: &PasswordKey,
) -> Result<AuthVerdict, CryptoError> {
    let Some(row) = row.filter(|r| r.is_active) else {
        return Ok(AuthVerdict::Denied(Denial::default()));
    };
    let password = match &row.password {
        Some(stored) => key.decrypt(stored)?,
        None => return Ok(AuthVerdict::Denied(Denial::default())),
    };
    let expected = credentials.expected_response("REGISTER", &password);
    let given = credentials.response.as_deref().unwrap_or("");
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Ok(AuthVerdict::Denied(Denial::default()));
    }
    // `{status: 'ok'}` plus the row's remaining columns: the allow_direct_* flags as 0/1.
    Ok(AuthVerdict::Granted(Grant {
        allow_direct_app_calling: Some(Value::from(row.allow_direct_app_calling)),
        allow_direct_queue_calling: Some(Value::from(row.allow_direct_queue_calling)),
        allow_direct_user_calling: Some(Value::from(row.allow_direct_user_calling)),
        ..Grant::default()
    }))
}

/// Compares without an early exit, so response time says nothing about how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse_authorization;

    // The digest test vector of spec 4.3 (password `1234`) and the CBC vector of 4.4 (`1234`).
    const AUTH: &str = r#"Digest username="john", realm="jambonz.org", nonce="157590482938000", uri="sip:jambonz.org", response="941658f7cac3f357d4258ae52074c5e7", algorithm=MD5, cnonce="6b8b4567", qop=auth, nc=00000001"#;
    const STORED_1234: &str =
        r#"{"iv":"00112233445566778899aabbccddeeff","content":"821935d816a26c5a9a4a17094c28c9e4"}"#;

    fn row(active: bool, password: &str) -> ClientRow {
        ClientRow {
            is_active: active,
            password: Some(password.to_string()),
            allow_direct_app_calling: 1,
            allow_direct_queue_calling: 0,
            allow_direct_user_calling: 1,
        }
    }

    fn key() -> PasswordKey {
        PasswordKey::derive("foobarbazzle", false)
    }

    #[test]
    fn right_password_grants_with_the_flags_as_numbers() {
        let creds = parse_authorization(AUTH).unwrap();
        let v = authenticate(Some(&row(true, STORED_1234)), &creds, &key()).unwrap();
        let AuthVerdict::Granted(g) = v else { panic!("{v:?}") };
        assert_eq!(g.allow_direct_app_calling, Some(Value::from(1)));
        assert_eq!(g.allow_direct_queue_calling, Some(Value::from(0)));
        assert_eq!(g.expires, None);
        assert_eq!(g.call_hook, None);
    }

    #[test]
    fn wrong_response_inactive_or_unknown_client_is_denied() {
        let creds = parse_authorization(&AUTH.replace("941658f7", "041658f7")).unwrap();
        let denied = Ok(AuthVerdict::Denied(Denial::default()));
        assert_eq!(authenticate(Some(&row(true, STORED_1234)), &creds, &key()), denied);
        let creds = parse_authorization(AUTH).unwrap();
        assert_eq!(authenticate(Some(&row(false, STORED_1234)), &creds, &key()), denied);
        assert_eq!(authenticate(None, &creds, &key()), denied);
    }

    #[test]
    fn undecryptable_password_is_an_error() {
        let creds = parse_authorization(AUTH).unwrap();
        assert!(authenticate(Some(&row(true, "1234")), &creds, &key()).is_err());
    }
}
