//! A registration webhook over HTTPS (rustls, a certificate of the tests' own PKI) that grants
//! every request and counts TLS handshakes: what the tests need to see that the daemon keeps
//! its connections to a customer's HTTPS webhook alive instead of paying a handshake per
//! REGISTER.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::tls::CertFiles;

pub struct HttpsWebhook {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HttpsWebhook {
    /// Listens on 127.0.0.1 (port 0) with `cert`; every request gets `{"status":"ok"}`.
    pub fn start(cert: &CertFiles) -> HttpsWebhook {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
            .expect("certificate file")
            .collect::<Result<_, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(&cert.key).expect("private key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, r, s) = (handshakes.clone(), requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (config, h, r) = (config.clone(), h.clone(), r.clone());
                thread::spawn(move || serve(stream, config, &h, &r));
            }
        });
        HttpsWebhook { addr, handshakes, requests, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// TLS connections accepted (each one a handshake).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsWebhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// One connection: requests answered one after another until the client closes it.
fn serve(stream: TcpStream, config: Arc<ServerConfig>, handshakes: &AtomicUsize, requests: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = ServerConnection::new(config) else { return };
    let mut tls = StreamOwned::new(conn, stream);
    // The handshake completes with the first read; count the connection once it did.
    let mut counted = false;
    loop {
        let mut reader = BufReader::new(&mut tls);
        let mut content_length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if !counted {
                handshakes.fetch_add(1, Ordering::SeqCst);
                counted = true;
            }
            if first {
                first = false;
                continue;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        drop(reader);
        requests.fetch_add(1, Ordering::SeqCst);
        let answer = r#"{"status":"ok"}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{answer}",
            answer.len()
        );
        if tls.write_all(response.as_bytes()).and_then(|()| tls.flush()).is_err() {
            return;
        }
    }
}
