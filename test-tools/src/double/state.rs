//! The state every thread of the double shares. One mutex guards all of it: this is a test
//! double, and one lock makes the ordering drachtio guarantees (the OK echo of a request is
//! written before any response for it) fall out naturally, because an echo is written in the
//! same critical section that creates the transaction a response would be matched against.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::apps::Apps;
use super::client_txn::ClientTransactions;
use super::ids::CallIdGenerator;
use super::server_txn::ServerTransactions;
use super::sip_transport::SipConnections;

/// Fixed facts about one running double.
pub(crate) struct Settings {
    pub secret: String,
    pub version: String,
    pub admin_addr: SocketAddr,
    /// The SIP address; the same port serves UDP and TCP.
    pub sip_addr: SocketAddr,
    /// `tcp/<sip>,udp/<sip>` (drachtio's order in the captures).
    pub hostports: String,
    /// Timer F: when a request the app sent gets a synthetic 408.
    pub uac_timeout: Duration,
}

pub(crate) struct Core {
    pub apps: Apps,
    pub server: ServerTransactions,
    pub client: ClientTransactions,
    pub sip_connections: SipConnections,
}

pub(crate) struct Shared {
    pub settings: Settings,
    /// The SIP UDP socket: received on by the UDP thread, sent on by whoever holds the lock.
    pub udp: UdpSocket,
    pub call_ids: CallIdGenerator,
    core: Mutex<Core>,
    stopping: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn new(settings: Settings, udp: UdpSocket) -> Shared {
        Shared {
            settings,
            udp,
            call_ids: CallIdGenerator::new(),
            core: Mutex::new(Core {
                apps: Apps::default(),
                server: ServerTransactions::default(),
                client: ClientTransactions::default(),
                sip_connections: SipConnections::default(),
            }),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// The core state. A panic in another thread must not take the whole double down with it,
    /// so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Starts a named thread that `stop` will join. Refused once stopping has begun.
    pub(crate) fn spawn(self: &Arc<Self>, name: &str, work: impl FnOnce(Arc<Shared>) + Send + 'static) {
        if self.is_stopping() {
            return;
        }
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new().name(format!("double-{name}")).spawn(move || work(shared));
        if let Ok(handle) = spawned {
            let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
            threads.retain(|t| !t.is_finished());
            threads.push(handle);
        }
    }

    /// Stops every thread: listeners notice the flag within their poll interval, connection
    /// readers are woken by shutting their sockets. Returns once all of them have ended, so the
    /// listening sockets are closed and their ports can be bound again.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        loop {
            {
                let mut core = self.lock();
                core.apps.close_all();
                core.sip_connections.close_all();
            }
            let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
            if handles.is_empty() {
                break;
            }
            for handle in handles {
                let _ = handle.join();
            }
        }
    }
}
