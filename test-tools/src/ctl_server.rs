//! An in-process CLI socket server for the tests of the socket protocol and of `sbcctl`: its
//! own thread, socket path and cluster id, against the real Redis; its keys removed on drop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use sbc_sidecar::bans::{BanSettings, Bans};
use sbc_sidecar::ctl::{CtlError, CtlServer, CtlSettings};
use sbc_sidecar::drachtio::ConnectionEvent;
use sbc_sidecar::heartbeat::ClusterSets;
use sbc_sidecar::regbot::{RegbotSnapshot, StatusRequest};
use sbc_sidecar::shared::Shared;
use sbc_sidecar::store::mysql::{MysqlPool, MysqlSettings};
use sbc_sidecar::store::redis::{pool, RedisPool, RedisSettings};

/// A pool to the Redis at 127.0.0.1:`port` (a closed port makes an unreachable Redis).
/// The shared one (6379) is checked first, so that a missing Redis is said as such.
pub fn redis_at(port: u16, timeout: Duration) -> RedisPool {
    if port == crate::services::REDIS_PORT {
        crate::services::require_redis();
    }
    pool(&RedisSettings::direct("127.0.0.1", port, timeout, 4)).expect("redis pool")
}

/// A fake regbot role, as the server sees one: it answers every snapshot request with the
/// snapshot in the returned `Mutex` (which the test may change) until the server drops its end
/// of the channel.
pub fn fake_regbot(snapshot: RegbotSnapshot) -> (Sender<StatusRequest>, Arc<Mutex<RegbotSnapshot>>) {
    let (tx, rx) = unbounded::<StatusRequest>();
    let current = Arc::new(Mutex::new(snapshot));
    let answer = Arc::clone(&current);
    std::thread::spawn(move || {
        for request in rx {
            let _ = request.reply.send(answer.lock().unwrap().clone());
        }
    });
    (tx, current)
}

pub fn temp_socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("ctl-test-{}.sock", uuid::Uuid::new_v4().simple()))
}

pub struct Server {
    pub path: PathBuf,
    /// `JAMBONES_CLUSTER_ID` of this server (unique per test).
    pub cluster_id: String,
    pub sets: ClusterSets,
    pub redis: RedisPool,
    /// What the drachtio client would send the server.
    pub conn_events: Sender<ConnectionEvent>,
    /// The ban table `bans` and `bans-clear` act on, when the server has one; failures
    /// recorded here are what the registrar would record.
    pub bans: Arc<Bans>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<Result<(), CtlError>>>,
}

/// What a CLI server is given: `redis`, and a MySQL pool it never uses (pools connect only
/// when checked out from).
pub fn cli_shared(redis: RedisPool) -> Shared {
    let mysql = MysqlPool::new(&MysqlSettings {
        host: "127.0.0.1".into(),
        port: 3306,
        user: "sbc_test".into(),
        password: String::new(),
        database: "unused".into(),
        connection_limit: 1,
        timeout: Duration::from_secs(1),
        tls: None,
    })
    .expect("a MySQL pool (it does not connect)");
    Shared::for_tests(mysql, redis)
}

impl Server {
    /// The ban settings of [`Server::launch`]: three failures ban for five minutes.
    pub fn bans() -> BanSettings {
        BanSettings { max_failures: 3, capacity: 100, ..BanSettings::default() }
    }

    /// Binds and starts a server with a ban table of [`Server::bans()`]; with `regbot_queries`,
    /// `status` and `regbot-list` ask that channel for regbot snapshots.
    pub fn launch(redis: RedisPool, regbot_queries: Option<Sender<StatusRequest>>) -> Server {
        Server::launch_with(redis, regbot_queries, Arc::new(Bans::new(Server::bans())))
    }

    /// [`Server::launch`] with the given ban table.
    pub fn launch_with(redis: RedisPool, regbot_queries: Option<Sender<StatusRequest>>, bans: Arc<Bans>) -> Server {
        let path = temp_socket_path();
        let cluster_id = format!("test-{}", uuid::Uuid::new_v4().simple());
        let (conn_tx, conn_rx) = unbounded();
        let shared = Shared { bans: Arc::clone(&bans), ..cli_shared(redis.clone()) };
        let server =
            CtlServer::bind(&path, CtlSettings { cluster_id: cluster_id.clone(), group: None }, &shared, conn_rx)
                .expect("CLI server binds");
        let server = match regbot_queries {
            Some(queries) => server.with_regbot(queries),
            None => server,
        };
        let (stop_tx, stop_rx) = unbounded();
        let thread = std::thread::spawn(move || server.run(stop_rx));
        Server {
            path,
            sets: ClusterSets::new(&cluster_id),
            cluster_id,
            redis,
            conn_events: conn_tx,
            bans,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops the server, checks that it stopped cleanly, and returns how long that took.
    pub fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        self.stop.take();
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread").expect("server stopped cleanly");
        }
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.shutdown();
        }
        delete_cluster_sets(&self.redis, &self.sets);
    }
}

/// Deletes a test cluster's feature-server and RTP-server sets (best effort: at the end of a
/// test, Redis may be the thing the test stopped).
pub fn delete_cluster_sets(redis: &RedisPool, sets: &ClusterSets) {
    if let Ok(mut conn) = redis.get() {
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(&sets.active_fs)
            .arg(&sets.active_rtp)
            .arg(&sets.fs_service_url)
            .arg(&sets.drained_fs)
            .query(&mut *conn);
    }
}
