//! The real HTTP client of the registration hook: ureq 3, one agent shared by all auth
//! workers (its connection pool and configuration are thread-safe and cheap to share).

use std::io;
use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig};
use ureq::unversioned::transport::DefaultConnector;
use ureq::Agent;

use super::hook_resolver::HookResolver;
use super::webhook::{HookError, HookMethod, HookRequest, HookResponse, HookTransport};

/// A webhook answer larger than this is not a registration verdict.
const MAX_BODY: u64 = 64 * 1024;

pub struct UreqTransport {
    agent: Agent,
}

impl UreqTransport {
    /// `timeout` bounds the whole exchange (connect, request, response body), so a hanging
    /// webhook cannot hold an auth worker. Redirects are not followed: the contract is "HTTP
    /// 200 or failure", and a 3xx becomes a SIP 500. Non-2xx statuses are responses, not
    /// errors, because their code is what the device gets. Certificates are verified against
    /// the system trust store. Up to `idle_per_host` connections stay open to each webhook
    /// host between calls.
    pub fn new(timeout: Duration, user_agent: Option<&str>, idle_per_host: usize) -> UreqTransport {
        let idle_per_host = idle_per_host.max(1);
        let mut config = Agent::config_builder()
            .max_idle_connections_per_host(idle_per_host)
            // Under Node's default keep-alive timeout (5 s), so that a connection is rarely
            // reused just as a Node webhook server closes it.
            .max_idle_age(Duration::from_secs(4))
            // A few webhook hosts per platform (one per account at most), all of them busy at
            // once seldom: twice the per-host bound.
            .max_idle_connections(idle_per_host.saturating_mul(2).max(16))
            // A webhook exchange is a few KB each way; ureq's 128 KB buffers per connection
            // added up to tens of MB with a few hundred kept-alive connections (one per
            // authentication in flight). The input buffer still holds any response head our
            // 64 KB body limit would let through in practice.
            .input_buffer_size(32 * 1024)
            .output_buffer_size(16 * 1024)
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(TlsConfig::builder().root_certs(RootCerts::PlatformVerifier).build());
        if let Some(ua) = user_agent.filter(|ua| !ua.is_empty()) {
            config = config.user_agent(ua);
        }
        // Our resolver: ureq's own spawns a thread per request when a timeout is set.
        let agent = Agent::with_parts(config.build(), DefaultConnector::new(), HookResolver::new());
        UreqTransport { agent }
    }
}

impl UreqTransport {
    /// Sends the request and waits for the response head.
    fn call(&self, request: &HookRequest) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        match request.method {
            HookMethod::Get => {
                let mut b = self.agent.get(&request.url);
                for (name, value) in &request.headers {
                    b = b.header(name, value);
                }
                b.call()
            }
            HookMethod::Post => {
                let mut b = self.agent.post(&request.url);
                for (name, value) in &request.headers {
                    b = b.header(name, value);
                }
                b.send(request.body.as_deref().unwrap_or(""))
            }
        }
    }
}

impl HookTransport for UreqTransport {
    fn send(&self, request: &HookRequest) -> Result<HookResponse, HookError> {
        // A kept-alive connection the server closed while it sat idle (Node's http server does
        // after 5 s) fails as the request goes out. The request is sent again, once, on a new
        // connection: asking the webhook twice is harmless, answering the device 500 is not.
        let result = match self.call(request) {
            Err(e) if connection_was_lost(&e) => self.call(request),
            other => other,
        };
        let mut response = result.map_err(map_error)?;
        let status = response.status().as_u16();
        match response.body_mut().with_config().limit(MAX_BODY).read_to_vec() {
            Ok(body) => Ok(HookResponse { status, body }),
            // Only a 200's body matters; a failure status stands on its own.
            Err(_) if status != 200 => Ok(HookResponse { status, body: Vec::new() }),
            Err(e) => Err(map_error(e)),
        }
    }
}

/// The connection closed or was reset under the request (not a timeout, not a refused connect).
fn connection_was_lost(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(io) if matches!(
            io.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        )
    )
}

fn map_error(e: ureq::Error) -> HookError {
    match e {
        ureq::Error::Timeout(_) => HookError::Timeout,
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HookError::Timeout,
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable => HookError::Connect(io.to_string()),
            _ => HookError::Transport(io.to_string()),
        },
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::Tls(_) => {
            HookError::Connect(e.to_string())
        }
        other => HookError::Transport(other.to_string()),
    }
}
