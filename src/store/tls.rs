//! The TLS files of the Redis and MySQL connections, read and checked once at startup.
//!
//! Both client crates would only find a missing or malformed file at their first connect,
//! deep inside a REGISTER, and report it as "unavailable" on every request after that. Checked
//! here, it is one line at startup naming the variable and the file, and exit status 78 like
//! any other configuration error.
//!
//! * Redis: the redis crate takes the PEM bytes, so they are read here once and kept.
//! * MySQL: the mysql crate takes paths and reads the files on every new connection, so they
//!   are only checked here, and handed over as absolute paths (`--daemon` changes the working
//!   directory to `/` after this check).
//!
//! [`checked_redis`] and [`checked_mysql`] are the startup check: the daemon keeps the
//! settings they return (absolute paths), and the pools read the files from those.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::sysexits::EX_CONFIG;

/// TLS to MySQL: on when `JAMBONES_MYSQL_REJECT_UNAUTHORIZED` is set or all three
/// `JAMBONES_MYSQL_SSL_*_FILE` variables are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTls {
    /// Verify the server certificate: false only for `JAMBONES_MYSQL_REJECT_UNAUTHORIZED=0`.
    pub verify: bool,
    pub files: Option<MysqlTlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// PEM files for Redis TLS; any of them may be absent (system trust store, no client cert).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A TLS file that cannot be used. Every variant names the variable and the file.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsFileError {
    /// The file could not be read (missing, a directory, no permission).
    Unreadable { var: &'static str, path: PathBuf, error: std::io::Error },
    /// No PEM certificate in the file, or one that is not a usable X.509 certificate.
    BadCertificate { var: &'static str, path: PathBuf, reason: String },
    /// No PEM private key in the file (PKCS#1, PKCS#8 or SEC1).
    BadKey { var: &'static str, path: PathBuf, reason: String },
    /// A client certificate without its key, or a key without its certificate.
    Unpaired { given: &'static str, missing: &'static str },
    /// The key does not belong to the certificate, or rustls cannot sign with it.
    KeyDoesNotFit { cert_var: &'static str, key_var: &'static str, reason: String },
}

impl TlsFileError {
    /// A configuration error: restarting cannot fix it (sysexits.h `EX_CONFIG`).
    pub fn exit_code(&self) -> i32 {
        EX_CONFIG
    }
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFileError::Unreadable { var, path, error } => {
                write!(f, "{var}={}: cannot read the file: {error}", path.display())
            }
            TlsFileError::BadCertificate { var, path, reason } => {
                write!(f, "{var}={}: not a PEM certificate file: {reason}", path.display())
            }
            TlsFileError::BadKey { var, path, reason } => {
                write!(f, "{var}={}: not a PEM private key file: {reason}", path.display())
            }
            TlsFileError::Unpaired { given, missing } => {
                write!(f, "{given} is set but {missing} is not: a client certificate needs both")
            }
            TlsFileError::KeyDoesNotFit { cert_var, key_var, reason } => {
                write!(f, "{key_var} cannot be used with {cert_var}: {reason}")
            }
        }
    }
}

impl std::error::Error for TlsFileError {}

const REDIS_CA: &str = "JAMBONES_REDIS_TLS_CA_FILE";
const REDIS_CERT: &str = "JAMBONES_REDIS_TLS_CERT_FILE";
const REDIS_KEY: &str = "JAMBONES_REDIS_TLS_KEY_FILE";
const MYSQL_CA: &str = "JAMBONES_MYSQL_SSL_CA_FILE";
const MYSQL_CERT: &str = "JAMBONES_MYSQL_SSL_CERT_FILE";
const MYSQL_KEY: &str = "JAMBONES_MYSQL_SSL_KEY_FILE";

/// Reads the Redis TLS files into what the redis crate connects with.
///
/// A CA file *replaces* the system trust store rather than adding to it: that is what the
/// redis crate does with a root certificate, and what Node's `tls.connect({ca})` did for the
/// Node program. Without a CA file the system store is used.
pub fn redis_certificates(tls: &RedisTls) -> Result<redis::TlsCertificates, TlsFileError> {
    let root_cert = match &tls.ca_file {
        Some(path) => {
            let pem = read(REDIS_CA, path)?;
            check_ca(REDIS_CA, path, &pem)?;
            Some(pem)
        }
        None => None,
    };
    let client_tls = match client_pair(tls.cert_file.as_deref(), tls.key_file.as_deref(), REDIS_CERT, REDIS_KEY)? {
        Some((cert_path, key_path)) => {
            let client_cert = read(REDIS_CERT, cert_path)?;
            let client_key = read(REDIS_KEY, key_path)?;
            check_identity(REDIS_CERT, cert_path, &client_cert, REDIS_KEY, key_path, &client_key)?;
            Some(redis::ClientTlsConfig { client_cert, client_key })
        }
        None => None,
    };
    Ok(redis::TlsCertificates { client_tls, root_cert })
}

/// Checks the MySQL TLS files and turns the db-helpers settings into the mysql crate's.
///
/// `verify: false` (`JAMBONES_MYSQL_REJECT_UNAUTHORIZED=0`) accepts any server certificate
/// for any name, like Node's `rejectUnauthorized: false`. With verification the server is
/// checked against the mysql crate's built-in Mozilla roots plus the CA file when given (the
/// crate cannot drop its built-in roots).
pub fn mysql_ssl_opts(tls: &MysqlTls) -> Result<mysql::SslOpts, TlsFileError> {
    let mut opts = mysql::SslOpts::default()
        .with_danger_accept_invalid_certs(!tls.verify)
        .with_danger_skip_domain_validation(!tls.verify);
    if let Some(files) = &tls.files {
        let ca = read(MYSQL_CA, &files.ca)?;
        check_ca(MYSQL_CA, &files.ca, &ca)?;
        let cert = read(MYSQL_CERT, &files.cert)?;
        let key = read(MYSQL_KEY, &files.key)?;
        check_identity(MYSQL_CERT, &files.cert, &cert, MYSQL_KEY, &files.key, &key)?;
        opts = opts.with_root_cert_path(Some(absolute(MYSQL_CA, &files.ca)?)).with_client_identity(Some(
            mysql::ClientIdentity::new(absolute(MYSQL_CERT, &files.cert)?, absolute(MYSQL_KEY, &files.key)?),
        ));
    }
    Ok(opts)
}

/// Checks the Redis TLS files ([`redis_certificates`]) and returns the settings with every
/// file as an absolute path, so that the pool reads the same files after `--daemon` changed
/// the working directory to `/`.
pub fn checked_redis(tls: &RedisTls) -> Result<RedisTls, TlsFileError> {
    redis_certificates(tls)?;
    let resolve = |var, path: &Option<PathBuf>| path.as_deref().map(|p| absolute(var, p)).transpose();
    Ok(RedisTls {
        ca_file: resolve(REDIS_CA, &tls.ca_file)?,
        cert_file: resolve(REDIS_CERT, &tls.cert_file)?,
        key_file: resolve(REDIS_KEY, &tls.key_file)?,
    })
}

/// Checks the MySQL TLS files ([`mysql_ssl_opts`]) and returns the settings with every file
/// as an absolute path (see [`checked_redis`]).
pub fn checked_mysql(tls: &MysqlTls) -> Result<MysqlTls, TlsFileError> {
    mysql_ssl_opts(tls)?;
    let files = match &tls.files {
        Some(f) => Some(MysqlTlsFiles {
            ca: absolute(MYSQL_CA, &f.ca)?,
            cert: absolute(MYSQL_CERT, &f.cert)?,
            key: absolute(MYSQL_KEY, &f.key)?,
        }),
        None => None,
    };
    Ok(MysqlTls { verify: tls.verify, files })
}

/// One line for the startup log: which files are used (paths only, never their content).
pub fn describe_redis(tls: &RedisTls) -> String {
    let trust = match &tls.ca_file {
        Some(ca) => format!("CA file {}", ca.display()),
        None => "the system trust store".to_string(),
    };
    match &tls.cert_file {
        Some(cert) => format!("trusting {trust}, client certificate {}", cert.display()),
        None => format!("trusting {trust}, no client certificate"),
    }
}

/// See [`describe_redis`].
pub fn describe_mysql(tls: &MysqlTls) -> String {
    let trust = match (&tls.files, tls.verify) {
        (_, false) => "without verifying the server certificate (JAMBONES_MYSQL_REJECT_UNAUTHORIZED=0)".to_string(),
        (Some(files), true) => format!("trusting CA file {} and the built-in roots", files.ca.display()),
        (None, true) => "trusting the built-in roots".to_string(),
    };
    match &tls.files {
        Some(files) => format!("{trust}, client certificate {}", files.cert.display()),
        None => format!("{trust}, no client certificate"),
    }
}

fn read(var: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|error| TlsFileError::Unreadable { var, path: path.to_path_buf(), error })
}

fn absolute(var: &'static str, path: &Path) -> Result<PathBuf, TlsFileError> {
    std::fs::canonicalize(path).map_err(|error| TlsFileError::Unreadable { var, path: path.to_path_buf(), error })
}

/// Both of a client certificate and its key, or neither.
fn client_pair<'a>(
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
    cert_var: &'static str,
    key_var: &'static str,
) -> Result<Option<(&'a Path, &'a Path)>, TlsFileError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsFileError::Unpaired { given: cert_var, missing: key_var }),
        (None, Some(_)) => Err(TlsFileError::Unpaired { given: key_var, missing: cert_var }),
    }
}

/// The PEM certificates of a file; at least one.
fn certificates(var: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bad = |reason: String| TlsFileError::BadCertificate { var, path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no BEGIN CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Every certificate of a CA file must be usable as a trust anchor, as the redis crate
/// requires (it refuses the whole file otherwise).
fn check_ca(var: &'static str, path: &Path, pem: &[u8]) -> Result<(), TlsFileError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(var, path, pem)? {
        roots.add(cert).map_err(|e| TlsFileError::BadCertificate {
            var,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// The certificate chain and key parse, and the key is the certificate's: rustls builds a
/// client configuration from them the way both crates will.
fn check_identity(
    cert_var: &'static str,
    cert_path: &Path,
    cert_pem: &[u8],
    key_var: &'static str,
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(), TlsFileError> {
    let chain = certificates(cert_var, cert_path, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsFileError::BadKey {
        var: key_var,
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::KeyDoesNotFit { cert_var, key_var, reason: e.to_string() })?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsFileError::KeyDoesNotFit { cert_var, key_var, reason: e.to_string() })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in its own temporary directory, removed on drop.
    struct TempFile {
        path: PathBuf,
    }

    impl TempFile {
        fn new(content: &str) -> TempFile {
            let dir = std::env::temp_dir().join(format!("sbc-tls-unit-{:016x}", rand::random::<u64>()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("file.pem");
            std::fs::write(&path, content).unwrap();
            TempFile { path }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn redis_tls(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> RedisTls {
        RedisTls {
            ca_file: ca.map(Path::to_path_buf),
            cert_file: cert.map(Path::to_path_buf),
            key_file: key.map(Path::to_path_buf),
        }
    }

    #[test]
    fn a_missing_ca_file_names_the_variable_and_the_path() {
        let err = redis_certificates(&redis_tls(Some(Path::new("/nonexistent/ca.pem")), None, None)).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("JAMBONES_REDIS_TLS_CA_FILE=/nonexistent/ca.pem: cannot read the file"), "{text}");
        assert_eq!(text.lines().count(), 1);
        assert_eq!(err.exit_code(), 78);
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let file = TempFile::new("this is not PEM\n");
        let text = redis_certificates(&redis_tls(Some(&file.path), None, None)).unwrap_err().to_string();
        assert_eq!(
            text,
            format!(
                "JAMBONES_REDIS_TLS_CA_FILE={}: not a PEM certificate file: no BEGIN CERTIFICATE block",
                file.path.display()
            )
        );
    }

    #[test]
    fn a_certificate_block_that_is_not_a_certificate_is_refused() {
        let file = TempFile::new("-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n");
        let err = redis_certificates(&redis_tls(Some(&file.path), None, None)).unwrap_err();
        assert!(matches!(err, TlsFileError::BadCertificate { var: REDIS_CA, .. }), "{err}");
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused() {
        let cert = Path::new("/etc/client.pem");
        let err = redis_certificates(&redis_tls(None, Some(cert), None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "JAMBONES_REDIS_TLS_CERT_FILE is set but JAMBONES_REDIS_TLS_KEY_FILE is not: a client certificate needs both"
        );
    }

    #[test]
    fn no_files_means_the_system_trust_store_and_no_client_certificate() {
        let certs = redis_certificates(&redis_tls(None, None, None)).unwrap();
        assert!(certs.root_cert.is_none() && certs.client_tls.is_none());
    }

    #[test]
    fn mysql_without_verification_needs_no_files() {
        let opts = mysql_ssl_opts(&MysqlTls { verify: false, files: None }).unwrap();
        assert!(opts.accept_invalid_certs() && opts.skip_domain_validation());
        assert!(opts.root_cert_path().is_none() && opts.client_identity().is_none());
        let opts = mysql_ssl_opts(&MysqlTls { verify: true, files: None }).unwrap();
        assert!(!opts.accept_invalid_certs() && !opts.skip_domain_validation());
    }

    #[test]
    fn a_missing_mysql_ca_file_names_its_variable() {
        let files = MysqlTlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = mysql_ssl_opts(&MysqlTls { verify: true, files: Some(files) }).unwrap_err();
        assert!(err.to_string().starts_with("JAMBONES_MYSQL_SSL_CA_FILE=/nonexistent/ca.pem: cannot read"), "{err}");
    }

    #[test]
    fn the_startup_description_names_files_not_contents() {
        let tls = redis_tls(Some(Path::new("/etc/ca.pem")), Some(Path::new("/etc/c.pem")), Some(Path::new("/k")));
        assert_eq!(describe_redis(&tls), "trusting CA file /etc/ca.pem, client certificate /etc/c.pem");
        assert_eq!(
            describe_mysql(&MysqlTls { verify: false, files: None }),
            "without verifying the server certificate (JAMBONES_MYSQL_REJECT_UNAUTHORIZED=0), no client certificate"
        );
    }
}
