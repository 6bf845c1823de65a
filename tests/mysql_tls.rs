//! MySQL over TLS, against a private `mariadbd` with TLS: the pool the daemon builds from
//! `JAMBONES_MYSQL_REJECT_UNAUTHORIZED` and the `JAMBONES_MYSQL_SSL_*` files (db-helpers'
//! semantics), as the daemon's configuration fills `MysqlSettings` with them.

use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use sbc_sidecar::config::{MysqlTls, MysqlTlsFiles};
use sbc_sidecar::store::mysql::{MysqlPool, MysqlSettings};
use sbc_sidecar::store::StoreError;
use sbc_test_tools::tls::{MariadbUser, Pki, PrivateMariadb, ServerCert, SSL_USER, X509_USER};

const TIMEOUT: Duration = Duration::from_millis(1000);
/// A failure must come within this, never a hang.
const BOUND: Duration = Duration::from_secs(8);

fn config(db: &PrivateMariadb, user: &MariadbUser, tls: Option<MysqlTls>) -> MysqlSettings {
    MysqlSettings {
        host: "127.0.0.1".into(),
        port: db.port,
        user: user.name.into(),
        password: user.password.into(),
        database: PrivateMariadb::DATABASE.into(),
        connection_limit: 2,
        tls,
        timeout: TIMEOUT,
    }
}

/// `JAMBONES_MYSQL_SSL_CA_FILE/_CERT_FILE/_KEY_FILE`, with or without
/// `JAMBONES_MYSQL_REJECT_UNAUTHORIZED=0`.
fn with_files(pki: &Pki, verify: bool) -> MysqlTls {
    MysqlTls {
        verify,
        files: Some(MysqlTlsFiles { ca: pki.ca.clone(), cert: pki.client.cert.clone(), key: pki.client.key.clone() }),
    }
}

/// `JAMBONES_MYSQL_REJECT_UNAUTHORIZED=0` alone.
fn unverified() -> MysqlTls {
    MysqlTls { verify: false, files: None }
}

/// The session's TLS cipher (empty when the session is not encrypted).
fn cipher(config: &MysqlSettings) -> Result<String, StoreError> {
    let pool = MysqlPool::new(config).expect("pool");
    let mut conn = pool.conn()?;
    let row: Option<(String, String)> = conn.query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")?;
    Ok(row.map(|(_, cipher)| cipher).unwrap_or_default())
}

/// Fails as "unavailable" within [`BOUND`]; returns the error text.
fn refused(config: &MysqlSettings, what: &str) -> String {
    let start = Instant::now();
    let err = cipher(config).expect_err(what);
    assert!(start.elapsed() < BOUND, "{what}: took {:?}", start.elapsed());
    assert!(err.is_unavailable(), "{what}: expected an unavailable error, got {err}");
    err.to_string()
}

fn start(pki: &Pki, which: ServerCert) -> PrivateMariadb {
    let db = PrivateMariadb::start(pki, which);
    eprintln!("private mariadbd: install {:?}, start {:?}", db.install_time, db.start_time);
    db
}

#[test]
fn verifying_tls_with_the_ca_file_reaches_a_require_ssl_user() {
    let pki = Pki::generate();
    let db = start(&pki, ServerCert::Trusted);
    let session = cipher(&config(&db, &SSL_USER, Some(with_files(&pki, true)))).expect("TLS session");
    assert!(!session.is_empty(), "the session is encrypted");
}

#[test]
fn a_require_x509_user_is_served_with_the_client_certificate_and_refused_without() {
    let pki = Pki::generate();
    let db = start(&pki, ServerCert::Trusted);
    let session = cipher(&config(&db, &X509_USER, Some(with_files(&pki, true)))).expect("TLS with a client cert");
    assert!(!session.is_empty());
    let text = refused(&config(&db, &X509_USER, Some(unverified())), "TLS without a client certificate");
    assert!(text.contains("Access denied"), "{text}");
}

#[test]
fn reject_unauthorized_0_accepts_a_server_certificate_from_an_unknown_ca() {
    let pki = Pki::generate();
    let db = start(&pki, ServerCert::OtherCa);
    let unverified_session = cipher(&config(&db, &SSL_USER, Some(unverified()))).expect("unverified TLS");
    assert!(!unverified_session.is_empty());
    // The files do not turn verification back on.
    let files_session = cipher(&config(&db, &SSL_USER, Some(with_files(&pki, false)))).expect("unverified, files");
    assert!(!files_session.is_empty());
}

#[test]
fn verification_against_an_unknown_ca_fails_with_a_clear_error() {
    let pki = Pki::generate();
    let db = start(&pki, ServerCert::OtherCa);
    let text = refused(&config(&db, &SSL_USER, Some(with_files(&pki, true))), "unknown CA");
    assert!(text.contains("UnknownIssuer"), "says why: {text}");
    // JAMBONES_MYSQL_REJECT_UNAUTHORIZED=1 without files: the built-in roots do not know it either.
    let text = refused(&config(&db, &SSL_USER, Some(MysqlTls { verify: true, files: None })), "built-in roots");
    assert!(text.contains("UnknownIssuer"), "says why: {text}");
}

#[test]
fn verification_checks_the_server_name() {
    let pki = Pki::generate();
    let db = start(&pki, ServerCert::WrongName);
    let text = refused(&config(&db, &SSL_USER, Some(with_files(&pki, true))), "certificate for another name");
    assert!(text.contains("not valid for name"), "says why: {text}");
}

#[test]
fn a_plain_connection_to_a_require_ssl_user_is_refused() {
    let pki = Pki::generate();
    let db = start(&pki, ServerCert::Trusted);
    let text = refused(&config(&db, &SSL_USER, None), "plain TCP");
    assert!(text.contains("Access denied"), "{text}");
}
