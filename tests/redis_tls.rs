//! Redis over TLS, against private TLS-only `redis-server`s: the pool the daemon builds from
//! `ENABLE_JAMBONES_REDIS_TLS` and the `JAMBONES_REDIS_TLS_*` files.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sbc_sidecar::config::RedisTls;
use sbc_sidecar::store::redis::{pool, run, RedisPool, RedisSettings, RedisTarget};
use sbc_sidecar::store::tls::{checked_redis, redis_certificates, TlsFileError};
use sbc_sidecar::store::StoreError;
use sbc_test_tools::tls::{free_port, CertFiles, ClientAuth, Pki, ServerCert, TlsRedis};

/// Connect, read and write timeout of the pools under test.
const TIMEOUT: Duration = Duration::from_millis(500);
/// A failure must come within this: the checkout timeout plus slack, never a hang.
const BOUND: Duration = Duration::from_secs(3);

fn tls_files(ca: Option<&Path>, client: Option<&CertFiles>) -> RedisTls {
    RedisTls {
        ca_file: ca.map(Path::to_path_buf),
        cert_file: client.map(|c| c.cert.clone()),
        key_file: client.map(|c| c.key.clone()),
    }
}

fn settings(target: RedisTarget, tls: Option<&RedisTls>) -> RedisSettings {
    RedisSettings {
        target,
        username: None,
        password: None,
        db: 0,
        timeout: TIMEOUT,
        max_connections: 2,
        tls: tls.cloned(),
    }
}

fn direct(port: u16) -> RedisTarget {
    RedisTarget::Direct { host: "127.0.0.1".into(), port }
}

fn tls_pool(port: u16, tls: Option<&RedisTls>) -> RedisPool {
    pool(&settings(direct(port), tls)).expect("pool")
}

fn set_and_get(pool: &RedisPool, key: &str) -> Result<String, StoreError> {
    run(pool, |c| {
        redis::cmd("SET").arg(key).arg("over tls").query::<()>(&mut **c)?;
        Ok(redis::cmd("GET").arg(key).query::<String>(&mut **c)?)
    })
}

/// The pool's first command fails as "unavailable", within [`BOUND`]; returns the error text.
fn assert_unavailable_in_time(pool: &RedisPool, what: &str) -> String {
    let start = Instant::now();
    let err = run(pool, |c| Ok(redis::cmd("PING").query::<String>(&mut **c)?)).expect_err(what);
    let elapsed = start.elapsed();
    assert!(err.is_unavailable(), "{what}: expected an unavailable error, got {err}");
    assert!(elapsed < BOUND, "{what}: took {elapsed:?}");
    err.to_string()
}

#[test]
fn with_the_ca_file_a_tls_pool_sets_and_gets() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki, ServerCert::Trusted, ClientAuth::Optional);
    let pool = tls_pool(server.port, Some(&tls_files(Some(&pki.ca), None)));
    assert_eq!(set_and_get(&pool, "tls-test:ca").expect("SET/GET over TLS"), "over tls");
    let seen: String = redis::cmd("GET").arg("tls-test:ca").query(&mut server.admin()).unwrap();
    assert_eq!(seen, "over tls", "the same server saw the write");
}

/// The daemon checks the files before `--daemon` moves it to `/`, and keeps them by absolute
/// path: a pool built afterwards from the checked settings reads the same files.
#[test]
fn checked_settings_name_the_files_by_absolute_path() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki, ServerCert::Trusted, ClientAuth::Required);
    let cwd = std::env::current_dir().unwrap();
    let up: PathBuf = cwd.components().skip(1).map(|_| "..").collect();
    let relative = |p: &Path| up.join(p.strip_prefix("/").unwrap());
    let given = tls_files(
        Some(&relative(&pki.ca)),
        Some(&CertFiles { cert: relative(&pki.client.cert), key: relative(&pki.client.key) }),
    );
    assert!(given.ca_file.as_ref().unwrap().is_relative());
    let checked = checked_redis(&given).expect("the files are good");
    for path in [&checked.ca_file, &checked.cert_file, &checked.key_file] {
        assert!(path.as_ref().unwrap().is_absolute(), "{path:?}");
    }
    let pool = tls_pool(server.port, Some(&checked));
    assert_eq!(set_and_get(&pool, "tls-test:checked").expect("SET/GET over TLS"), "over tls");
}

#[test]
fn a_server_requiring_client_certificates_serves_a_pool_with_one_and_refuses_one_without() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki, ServerCert::Trusted, ClientAuth::Required);
    let with_cert = tls_pool(server.port, Some(&tls_files(Some(&pki.ca), Some(&pki.client))));
    assert_eq!(set_and_get(&with_cert, "tls-test:mtls").expect("mutual TLS"), "over tls");
    let without = tls_pool(server.port, Some(&tls_files(Some(&pki.ca), None)));
    assert_unavailable_in_time(&without, "no client certificate");
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_as_unavailable() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki, ServerCert::OtherCa, ClientAuth::Optional);
    let pool = tls_pool(server.port, Some(&tls_files(Some(&pki.ca), None)));
    let text = assert_unavailable_in_time(&pool, "unknown CA");
    assert!(text.contains("UnknownIssuer"), "says why: {text}");
}

#[test]
fn the_certificate_must_be_valid_for_the_configured_host() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki, ServerCert::WrongName, ClientAuth::Optional);
    let pool = tls_pool(server.port, Some(&tls_files(Some(&pki.ca), None)));
    let text = assert_unavailable_in_time(&pool, "certificate for another name");
    assert!(text.contains("not valid for name \"127.0.0.1\""), "says why: {text}");
}

#[test]
fn without_a_ca_file_the_system_trust_store_decides() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki, ServerCert::Trusted, ClientAuth::Optional);
    // The throw-away CA is in no system store.
    let pool = tls_pool(server.port, Some(&tls_files(None, None)));
    let text = assert_unavailable_in_time(&pool, "system trust store");
    assert!(text.contains("UnknownIssuer"), "says why: {text}");
}

#[test]
fn a_plain_pool_against_the_tls_port_fails_within_the_timeout() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki, ServerCert::Trusted, ClientAuth::Optional);
    assert_unavailable_in_time(&tls_pool(server.port, None), "plain TCP to a TLS port");
}

#[test]
fn a_server_that_never_completes_the_handshake_fails_the_connect_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, then says nothing: the ClientHello is never answered.
    let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        while start.elapsed() < BOUND * 2 && stopped.try_recv().is_err() {
            if let Ok((conn, _)) = listener.accept() {
                held.push(conn);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        held.len()
    });
    let pki = Pki::generate();
    let pool = tls_pool(port, Some(&tls_files(Some(&pki.ca), None)));
    assert_unavailable_in_time(&pool, "silent server");
    let _ = stop.send(());
    assert!(holder.join().unwrap() >= 1, "the pool did connect");
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_at_startup() {
    let pki = Pki::generate();
    let mismatched = CertFiles { cert: pki.client.cert.clone(), key: pki.server.key.clone() };
    let err = redis_certificates(&tls_files(Some(&pki.ca), Some(&mismatched))).unwrap_err();
    assert!(matches!(err, TlsFileError::KeyDoesNotFit { .. }), "{err}");
    assert!(
        err.to_string().starts_with("JAMBONES_REDIS_TLS_KEY_FILE cannot be used with JAMBONES_REDIS_TLS_CERT_FILE"),
        "{err}"
    );
    // A certificate where the key belongs.
    let swapped = CertFiles { cert: pki.client.cert.clone(), key: pki.client.cert.clone() };
    let err = redis_certificates(&tls_files(None, Some(&swapped))).unwrap_err();
    assert!(err.to_string().starts_with("JAMBONES_REDIS_TLS_KEY_FILE="), "{err}");
}

/// A sentinel listening on plain TCP only, monitoring a TLS-only master.
struct PlainSentinel {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PlainSentinel {
    fn start(pki: &Pki, master_name: &str, master_port: u16) -> PlainSentinel {
        let dir = std::env::temp_dir().join(format!("sbc-sentinel-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let conf = dir.join("sentinel.conf");
        // The sentinel's own connections to the master use TLS (tls-replication); its port is
        // plain.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 tls-replication yes\ntls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
                 sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n",
                dir = dir.display(),
                cert = pki.client.cert.display(),
                key = pki.client.key.display(),
                ca = pki.ca.display(),
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let sentinel = PlainSentinel { port, dir, child: Some(child) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let answer = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection_with_timeout(TIMEOUT))
                .and_then(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(master_name)
                        .query::<Option<(String, u16)>>(&mut c)
                });
            if let Ok(Some(_)) = answer {
                return sentinel;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the sentinel did not answer; log:\n{}",
            std::fs::read_to_string(sentinel.dir.join("sentinel.log")).unwrap_or_default()
        );
    }
}

impl Drop for PlainSentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `SBC_REDIS_SENTINEL_MASTER_TLS=1` asks for (by default the daemon leaves a Sentinel master
/// plain, as the Node program does: see `config::redis`).
#[test]
fn through_a_sentinel_on_plain_tcp_the_master_is_reached_over_tls() {
    let pki = Pki::generate();
    let master = TlsRedis::start(&pki, ServerCert::Trusted, ClientAuth::Optional);
    let sentinel = PlainSentinel::start(&pki, "tlsmaster", master.port);
    let target = RedisTarget::Sentinel {
        sentinels: vec![("127.0.0.1".into(), sentinel.port)],
        master_name: "tlsmaster".into(),
        sentinel_username: None,
        sentinel_password: None,
    };
    let pool = pool(&settings(target, Some(&tls_files(Some(&pki.ca), None)))).expect("pool");
    assert_eq!(set_and_get(&pool, "tls-test:sentinel").expect("master over TLS"), "over tls");
    let seen: String = redis::cmd("GET").arg("tls-test:sentinel").query(&mut master.admin()).unwrap();
    assert_eq!(seen, "over tls");
}
