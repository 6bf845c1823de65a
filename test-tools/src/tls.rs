//! TLS test fixtures: a throw-away PKI made with the `openssl` command at test time (no key is
//! ever committed), a private TLS-only `redis-server`, and a private `mariadbd` with TLS.
//!
//! Every fixture owns a temporary directory and its child process; both go away on drop, also
//! when the test fails.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::wait_until;
use mysql::prelude::Queryable;

/// How long a private server may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(30);

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sbc-{what}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A TCP port that is free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Runs a setup command to completion; panics with its output when it fails. `needs` says
/// what the tests need installed when the command cannot even start.
fn run_checked(command: &mut Command, what: &str, needs: &str) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}): the TLS tests need {needs}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run_checked(
        Command::new("openssl").args(args).current_dir(dir),
        &format!("openssl {args:?}"),
        "the openssl command",
    );
}

/// A certificate and its key, PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which server certificate a private server presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCert {
    /// Signed by [`Pki::ca`], valid for `127.0.0.1` and `localhost`.
    Trusted,
    /// Valid for `127.0.0.1` and `localhost`, but signed by [`Pki::other_ca`].
    OtherCa,
    /// Signed by [`Pki::ca`], but only valid for `elsewhere.example`.
    WrongName,
}

/// Two throw-away CAs and the certificates the tests need, in a temporary directory.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA the clients are told to trust.
    pub ca: PathBuf,
    /// A CA nobody trusts.
    pub other_ca: PathBuf,
    pub server: CertFiles,
    pub other_server: CertFiles,
    pub wrong_name_server: CertFiles,
    /// A client certificate (extended key usage clientAuth) signed by `ca`.
    pub client: CertFiles,
}

impl Pki {
    /// P-256 keys: quick to make, and both rustls and the servers' OpenSSL take them.
    pub fn generate() -> Pki {
        let dir = temp_dir("pki");
        let ca = make_ca(&dir, "ca");
        let other_ca = make_ca(&dir, "other-ca");
        let server_san = "subjectAltName=IP:127.0.0.1,DNS:localhost";
        Pki {
            server: make_leaf(&dir, "server", "ca", server_san, "serverAuth"),
            other_server: make_leaf(&dir, "other-server", "other-ca", server_san, "serverAuth"),
            wrong_name_server: make_leaf(
                &dir,
                "wrong-name-server",
                "ca",
                "subjectAltName=DNS:elsewhere.example",
                "serverAuth",
            ),
            client: make_leaf(&dir, "client", "ca", "subjectAltName=DNS:sbc-sidecar.test", "clientAuth"),
            dir,
            ca,
            other_ca,
        }
    }

    pub fn server_cert(&self, which: ServerCert) -> &CertFiles {
        match which {
            ServerCert::Trusted => &self.server,
            ServerCert::OtherCa => &self.other_server,
            ServerCert::WrongName => &self.wrong_name_server,
        }
    }

    /// The CA that signed `which`.
    pub fn issuer_of(&self, which: ServerCert) -> &Path {
        match which {
            ServerCert::OtherCa => &self.other_ca,
            ServerCert::Trusted | ServerCert::WrongName => &self.ca,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_key(dir: &Path, name: &str) -> String {
    let key = format!("{name}.key");
    openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &key]);
    key
}

/// A self-signed CA certificate `<name>.pem` with key `<name>.key`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let key = make_key(dir, name);
    let csr = format!("{name}.csr");
    let ext = format!("{name}.ext");
    let pem = format!("{name}.pem");
    std::fs::write(
        dir.join(&ext),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
    )
    .expect("write extensions");
    openssl(dir, &["req", "-new", "-key", &key, "-subj", &format!("/CN=sbc-sidecar test {name}"), "-out", &csr]);
    openssl(dir, &["x509", "-req", "-in", &csr, "-signkey", &key, "-extfile", &ext, "-days", "2", "-out", &pem]);
    dir.join(pem)
}

/// An end-entity certificate `<name>.pem` signed by the CA `<ca>.pem`/`<ca>.key`.
fn make_leaf(dir: &Path, name: &str, ca: &str, san: &str, usage: &str) -> CertFiles {
    let key = make_key(dir, name);
    let csr = format!("{name}.csr");
    let ext = format!("{name}.ext");
    let pem = format!("{name}.pem");
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage={usage}\nauthorityKeyIdentifier=keyid\n{san}\n"
        ),
    )
    .expect("write extensions");
    openssl(dir, &["req", "-new", "-key", &key, "-subj", &format!("/CN={name}"), "-out", &csr]);
    let serial = format!("{}", rand::random::<u32>() | 1);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial,
            "-extfile",
            &ext,
            "-days",
            "2",
            "-out",
            &pem,
        ],
    );
    CertFiles { cert: dir.join(pem), key: dir.join(key) }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Whether a private server asks the client for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `--tls-auth-clients optional`: a client certificate is checked when sent.
    Optional,
    /// `--tls-auth-clients yes`: no connection without a client certificate from the CA.
    Required,
}

/// A `redis-server` that only listens with TLS (`--port 0 --tls-port <port>`).
pub struct TlsRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The CA of the server certificate and a client certificate, for [`TlsRedis::admin`].
    admin_certificates: redis::TlsCertificates,
}

impl TlsRedis {
    pub fn start(pki: &Pki, which: ServerCert, auth: ClientAuth) -> TlsRedis {
        let dir = temp_dir("tls-redis");
        let port = free_port();
        let server = pki.server_cert(which);
        let log = dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(&server.cert)
            .arg("--tls-key-file")
            .arg(&server.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", if auth == ClientAuth::Required { "yes" } else { "optional" }])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}); the TLS tests need redis-server"));
        let admin_certificates = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: std::fs::read(&pki.client.cert).expect("client cert"),
                client_key: std::fs::read(&pki.client.key).expect("client key"),
            }),
            root_cert: Some(std::fs::read(pki.issuer_of(which)).expect("CA")),
        };
        let mut redis = TlsRedis { port, dir, child: Some(child), admin_certificates };
        let up = wait_until(START_WAIT, || {
            if let Some(Ok(Some(status))) = redis.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server exited at once ({status}); its log:\n{}", read(&log));
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "redis-server did not listen on TLS port {port} within {START_WAIT:?}; log:\n{}", read(&log));
        redis
    }

    /// A connection for the test's own checks: TLS with the CA and the client certificate, so
    /// it works whatever `ClientAuth` says (not for a [`ServerCert::WrongName`] server).
    pub fn admin(&self) -> redis::Connection {
        let url = format!("rediss://127.0.0.1:{}/", self.port);
        let client = redis::Client::build_with_tls(url, self.admin_certificates.clone()).expect("TLS client");
        let conn = client.get_connection_with_timeout(Duration::from_secs(2)).expect("admin TLS connection");
        conn.set_read_timeout(Some(Duration::from_secs(2))).expect("read timeout");
        conn
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The user name to run the private servers as (mariadbd refuses root unless told `--user=root`).
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// mariadbd is in /usr/sbin, which is not on every user's PATH.
fn sbin_path() -> String {
    format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default())
}

/// Accounts of the private MariaDB, all with access to [`PrivateMariadb::DATABASE`].
pub struct MariadbUser {
    pub name: &'static str,
    pub password: &'static str,
}

/// `REQUIRE SSL`: any TLS connection.
pub const SSL_USER: MariadbUser = MariadbUser { name: "sbc_ssl", password: "ssl-secret" };
/// `REQUIRE X509`: TLS with a client certificate from the server's CA.
pub const X509_USER: MariadbUser = MariadbUser { name: "sbc_x509", password: "x509-secret" };

/// A private `mariadbd` on a free port with TLS (`--ssl-ca/--ssl-cert/--ssl-key`), its own
/// data directory made by `mariadb-install-db`, and the accounts above.
pub struct PrivateMariadb {
    pub port: u16,
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    /// `mariadb-install-db`, then `mariadbd` until it accepted a connection.
    pub install_time: Duration,
    pub start_time: Duration,
}

impl PrivateMariadb {
    pub const DATABASE: &'static str = "sbc_tls";

    pub fn start(pki: &Pki, which: ServerCert) -> PrivateMariadb {
        let dir = temp_dir("mariadb");
        let data = dir.join("data");
        let socket = dir.join("mariadb.sock");
        let log = dir.join("mariadb.log");
        let user = current_user();

        let started = Instant::now();
        run_checked(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--user={user}"))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                // Its own tmpdir: the bootstrap's temporary tables in the shared /tmp vanished
                // under it once in CI (two installs at once), failing the install.
                .arg(format!("--tmpdir={}", dir.display()))
                .env("PATH", sbin_path()),
            "mariadb-install-db",
            "mariadb-server",
        );
        let install_time = started.elapsed();

        let port = free_port();
        let server = pki.server_cert(which);
        let started = Instant::now();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--ssl-ca={}", pki.ca.display()))
            .arg(format!("--ssl-cert={}", server.cert.display()))
            .arg(format!("--ssl-key={}", server.key.display()))
            .arg(format!("--tmpdir={}", dir.display()))
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=16M"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("PATH", sbin_path())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mariadbd ({e}); the TLS tests need mariadb-server"));
        let mut db = PrivateMariadb { port, dir, socket, child: Some(child), install_time, start_time: Duration::ZERO };
        let mut root = None;
        let up = wait_until(START_WAIT, || {
            if let Some(Ok(Some(status))) = db.child.as_mut().map(|c| c.try_wait()) {
                panic!("mariadbd exited at once ({status}); its log:\n{}", read(&log));
            }
            root = db.try_root();
            root.is_some()
        });
        assert!(up, "mariadbd did not accept connections within {START_WAIT:?}; log:\n{}", read(&log));
        db.start_time = started.elapsed();
        let mut root = root.expect("root connection");
        let database = Self::DATABASE;
        root.query_drop(format!("CREATE DATABASE {database}")).expect("create database");
        for (user, require) in [(&SSL_USER, "SSL"), (&X509_USER, "X509")] {
            root.query_drop(format!(
                "CREATE USER '{}'@'%' IDENTIFIED BY '{}' REQUIRE {require}",
                user.name, user.password
            ))
            .expect("create user");
            root.query_drop(format!("GRANT ALL ON {database}.* TO '{}'@'%'", user.name)).expect("grant");
        }
        db
    }

    fn try_root(&self) -> Option<mysql::Conn> {
        let opts = mysql::OptsBuilder::new().socket(Some(self.socket.display().to_string())).user(Some("root"));
        mysql::Conn::new(opts).ok()
    }

    /// `root` over the Unix socket, in [`PrivateMariadb::DATABASE`]: for the test's own setup
    /// and checks.
    pub fn root(&self) -> mysql::Conn {
        let mut conn = self.try_root().expect("root connection over the socket");
        conn.query_drop(format!("USE {}", Self::DATABASE)).expect("use the database");
        conn
    }

    /// Creates the project's tables in [`PrivateMariadb::DATABASE`].
    pub fn load_schema(&self) {
        let mut root = self.root();
        let schema = include_str!("../../src/store/schema.sql");
        for stmt in
            schema.split(';').map(str::trim).filter(|s| !s.is_empty() && !s.lines().all(|l| l.starts_with("--")))
        {
            root.query_drop(stmt).expect("schema statement");
        }
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
