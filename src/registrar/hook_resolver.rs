//! Name resolution for the registration webhook, without a thread per call.
//!
//! ureq resolves the webhook's host before it looks in its connection pool, and with a timeout
//! set (we always set one) its default resolver spawns a thread for every lookup, so a kept-alive
//! connection still cost a thread creation per REGISTER — a large share of the CPU of a full
//! authentication. This resolver answers IP literals directly and keeps what a name resolved to
//! for [`FRESH_FOR`]; only a miss goes to ureq's resolver (thread and timeout included).
//!
//! A webhook host whose lookup fails while an older answer is known keeps that answer (up to
//! [`STALE_FOR`]): a DNS hiccup at 3 a.m. should not fail every registration of the platform
//! when the webhook itself is still where it was.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::warn;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is used without asking again (getaddrinfo does not tell us the TTL).
pub const FRESH_FOR: Duration = Duration::from_secs(30);
/// How long an answer may stand in for a failed lookup.
pub const STALE_FOR: Duration = Duration::from_secs(600);

/// Resolved addresses by `host:port`, with when they were resolved.
#[derive(Debug, Default)]
pub struct HookResolver {
    lookup: DefaultResolver,
    cache: Mutex<HashMap<String, (Instant, Vec<SocketAddr>)>>,
}

impl HookResolver {
    pub fn new() -> HookResolver {
        HookResolver::default()
    }

    fn to_resolved(&self, addrs: &[SocketAddr]) -> ResolvedSocketAddrs {
        let mut out = self.empty();
        for a in addrs.iter().take(16) {
            out.push(*a);
        }
        out
    }

    fn cached(&self, key: &str, max_age: Duration) -> Option<Vec<SocketAddr>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|(at, _)| at.elapsed() < max_age).map(|(_, addrs)| addrs.clone())
    }
}

/// The literal address of `uri`, when its host is one (`10.0.0.1`, `[::1]`).
fn literal_address(uri: &Uri) -> Option<SocketAddr> {
    let host = uri.host()?;
    let ip = crate::net::parse_ip(host)?;
    let port = uri.port_u16().or_else(|| match uri.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    })?;
    Some(SocketAddr::new(ip, port))
}

impl Resolver for HookResolver {
    fn resolve(&self, uri: &Uri, config: &Config, timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let Some(addr) = literal_address(uri) {
            return Ok(self.to_resolved(&[addr]));
        }
        // Host and port only: the authority may carry `user:password@`, which must not end up
        // in the log line below.
        let key = format!(
            "{}|{}:{}",
            uri.scheme_str().unwrap_or(""),
            uri.host().unwrap_or(""),
            uri.port_u16().map(|p| p.to_string()).unwrap_or_default()
        );
        if let Some(addrs) = self.cached(&key, FRESH_FOR) {
            return Ok(self.to_resolved(&addrs));
        }
        match self.lookup.resolve(uri, config, timeout) {
            Ok(resolved) => {
                let addrs: Vec<SocketAddr> = resolved.iter().copied().collect();
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                // Webhook hosts are a handful; a bound keeps a misconfigured fleet of
                // distinct hosts from growing this without limit.
                if cache.len() >= 1024 {
                    cache.retain(|_, (at, _)| at.elapsed() < STALE_FOR);
                }
                if cache.len() < 1024 {
                    cache.insert(key, (Instant::now(), addrs));
                }
                Ok(resolved)
            }
            Err(e) => match self.cached(&key, STALE_FOR) {
                Some(addrs) => {
                    warn!("registration webhook: resolving {key} failed ({e}); using the addresses resolved before");
                    Ok(self.to_resolved(&addrs))
                }
                None => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn two_seconds() -> NextTimeout {
        NextTimeout {
            after: Duration::from_secs(2).into(),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        }
    }

    #[test]
    fn literal_addresses_need_no_lookup() {
        assert_eq!(literal_address(&uri("http://127.0.0.1:8080/auth")), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(literal_address(&uri("http://10.1.2.3/auth")), Some("10.1.2.3:80".parse().unwrap()));
        assert_eq!(literal_address(&uri("https://10.1.2.3/auth")), Some("10.1.2.3:443".parse().unwrap()));
        assert_eq!(literal_address(&uri("http://[::1]:9000/x")), Some("[::1]:9000".parse().unwrap()));
        assert_eq!(literal_address(&uri("http://hooks.example.com/x")), None);
    }

    #[test]
    fn a_name_is_looked_up_once_then_served_from_the_cache() {
        let r = HookResolver::new();
        let config = Config::default();
        let u = uri("http://user:secret@localhost:8080/auth");
        let first = r.resolve(&u, &config, two_seconds()).expect("localhost resolves");
        assert!(first.iter().all(|a| a.port() == 8080 && a.ip().is_loopback()), "{first:?}");
        // Keyed by host and port: credentials in the URL stay out of the key (it is logged).
        assert_eq!(r.cache.lock().unwrap().keys().collect::<Vec<_>>(), vec!["http|localhost:8080"]);
        // Poison the entry's addresses: a second call must come from the cache, not getaddrinfo.
        r.cache.lock().unwrap().values_mut().for_each(|(_, a)| *a = vec!["127.0.0.9:8080".parse().unwrap()]);
        let second = r.resolve(&u, &config, two_seconds()).expect("cached");
        assert_eq!(&second[..], &["127.0.0.9:8080".parse::<SocketAddr>().unwrap()][..]);
    }

    #[test]
    fn a_failed_lookup_falls_back_to_a_stale_answer_but_not_forever() {
        let r = HookResolver::new();
        let config = Config::default();
        // .invalid never resolves (RFC 6761).
        let u = uri("http://hook.invalid:8080/auth");
        assert!(r.resolve(&u, &config, two_seconds()).is_err(), "nothing known yet");
        let key = "http|hook.invalid:8080".to_string();
        let old = Instant::now() - FRESH_FOR - Duration::from_secs(1);
        r.cache.lock().unwrap().insert(key.clone(), (old, vec!["127.0.0.7:8080".parse().unwrap()]));
        let stale = r.resolve(&u, &config, two_seconds()).expect("stale answer stands in");
        assert_eq!(&stale[..], &["127.0.0.7:8080".parse::<SocketAddr>().unwrap()][..]);
        let too_old = Instant::now() - STALE_FOR - Duration::from_secs(1);
        r.cache.lock().unwrap().insert(key, (too_old, vec!["127.0.0.7:8080".parse().unwrap()]));
        assert!(r.resolve(&u, &config, two_seconds()).is_err());
    }
}
