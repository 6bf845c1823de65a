//! The daemon: starts every role on its own thread, waits for a signal, stops them in order.
//!
//! Shutdown order matters: first drachtio stops delivering new requests, then the roles finish
//! (and answer) what they hold, then the writer flushes those answers and closes the
//! connection. Roles learn about the stop when the shutdown channel's sender is dropped.

pub mod preflight;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use log::{debug, error, info, warn};

use crate::bans::Bans;
use crate::config::{Config, RunMode, PROGRAM};
use crate::ctl::{CtlError, CtlServer};
use crate::drachtio::{ConnectionEvent, DrachtioClient, Route};
use crate::heartbeat::HeartbeatRole;
use crate::regbot::{self, RegbotError};
use crate::registrar::auth_pool::{self, AUTH_GAUGE_INTERVAL};
use crate::registrar::fair_pool::LoadProbe;
use crate::registrar::{AuthPool, Registrar};
use crate::shared::Shared;
use crate::store::mysql::MysqlPool;
use crate::store::redis::{self as redis_store, RedisPool, RedisTarget};
use crate::store::tls::{self, TlsFileError};
use crate::store::StoreError;
use crate::supervise::{RoleEnded, Supervisor};
use crate::telemetry::{AlertError, AlertWriter, Metrics};
use crate::{logging, signals};

/// Exit status after a clean stop.
pub const EXIT_OK: i32 = 0;
/// The daemon could not start (a thread, a socket, the pools, logging).
pub const EXIT_START_FAILED: i32 = 70;
/// A role thread ended or panicked while the daemon was running; the log names it. Not in
/// the unit's `RestartPreventExitStatus`, so systemd restarts the daemon.
pub const EXIT_ROLE_FAILED: i32 = 71;

/// How often expired registrations are pruned from `active-user`.
const ACTIVE_USER_PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// How often the `sbc.users.count` gauge is sent (when metrics are enabled).
const USERS_GAUGE_INTERVAL: Duration = Duration::from_secs(30);

/// OPTIONS heartbeats waiting for the heartbeat role; beyond this they get `503`.
const OPTIONS_QUEUE: usize = 1024;
/// Longest a stop waits for the regbot's de-registrations (the scheduler gives up on
/// unanswered ones after 5 s).
const REGBOT_UNREGISTER_WAIT: Duration = Duration::from_secs(7);

/// Why the daemon could not start: what failed, and the error that caused it.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The signal handlers could not be installed.
    Signals(io::Error),
    /// A connection pool could not be created (`pool`: `redis`, `mysql`, `mysql write`).
    Pool { pool: &'static str, source: StoreError },
    /// The alerts writer thread could not be started.
    Alerts(AlertError),
    /// A role thread could not be started.
    Thread { name: &'static str, source: io::Error },
    /// The auth worker pool could not be started.
    AuthWorkers(io::Error),
    /// The CLI socket could not be bound.
    CliSocket { path: PathBuf, source: CtlError },
    /// The drachtio client could not be started.
    Drachtio(io::Error),
    /// The regbot roles could not be started.
    Regbot(RegbotError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Signals(e) => write!(f, "signal handlers: {e}"),
            StartError::Pool { pool, source } => write!(f, "{pool} pool: {source}"),
            StartError::Alerts(e) => write!(f, "alerts: {e}"),
            StartError::Thread { name, source } => write!(f, "thread {name}: {source}"),
            StartError::AuthWorkers(e) => write!(f, "auth workers: {e}"),
            StartError::CliSocket { path, source } => write!(f, "CLI socket {}: {source}", path.display()),
            StartError::Drachtio(e) => write!(f, "drachtio client: {e}"),
            StartError::Regbot(e) => write!(f, "regbot: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Signals(e)
            | StartError::Thread { source: e, .. }
            | StartError::AuthWorkers(e)
            | StartError::Drachtio(e) => Some(e),
            StartError::Pool { source, .. } => Some(source),
            StartError::Alerts(e) => Some(e),
            StartError::CliSocket { source, .. } => Some(source),
            StartError::Regbot(e) => Some(e),
        }
    }
}

/// Everything the roles share, built once from the configuration.
pub struct Pools {
    pub redis: RedisPool,
    pub mysql: MysqlPool,
    /// The pool for UPDATE/INSERT/DELETE: the write pool when configured, else the read pool.
    pub mysql_write: MysqlPool,
}

/// Checks the stores' TLS files and names them by absolute path, before `--daemon` changes
/// the working directory: a missing or broken file is a configuration error at startup (one
/// line, exit status 78), not an unavailable store at the first connect. The pools read the
/// files when they are built.
pub fn check_store_tls(mut config: Config) -> Result<Config, TlsFileError> {
    if let Some(redis_tls) = &config.redis.tls {
        config.redis.tls = Some(tls::checked_redis(redis_tls)?);
    }
    for mysql in std::iter::once(&mut config.mysql).chain(config.mysql_write.as_mut()) {
        if let Some(mysql_tls) = &mysql.tls {
            mysql.tls = Some(tls::checked_mysql(mysql_tls)?);
        }
    }
    Ok(config)
}

fn build_pools(config: &Config) -> Result<Pools, StartError> {
    let redis = redis_store::pool(&config.redis).map_err(|source| StartError::Pool { pool: "redis", source })?;
    let mysql = MysqlPool::new(&config.mysql).map_err(|source| StartError::Pool { pool: "mysql", source })?;
    let mysql_write = match &config.mysql_write {
        Some(w) => MysqlPool::new(w).map_err(|source| StartError::Pool { pool: "mysql write", source })?,
        None => mysql.clone(),
    };
    Ok(Pools { redis, mysql, mysql_write })
}

/// Says once at startup that the stores are reached over TLS, and how (paths, never keys).
fn log_store_tls(config: &Config) {
    if let Some(redis_tls) = &config.redis.tls {
        let scope = match config.redis.target {
            RedisTarget::Direct { .. } => "",
            RedisTarget::Sentinel { .. } => {
                " to the master (SBC_REDIS_SENTINEL_MASTER_TLS; the sentinels over plain TCP)"
            }
        };
        info!("Redis connections use TLS{scope}, {}", tls::describe_redis(redis_tls));
    }
    if let Some(mysql_tls) = &config.mysql.tls {
        info!("MySQL connections use TLS, {}", tls::describe_mysql(mysql_tls));
    }
}

/// A started role thread, joined at shutdown.
struct RoleThread {
    name: &'static str,
    handle: JoinHandle<()>,
}

fn spawn_role(
    supervisor: &Supervisor,
    name: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<RoleThread, StartError> {
    let handle = supervisor.spawn(name, f).map_err(|source| StartError::Thread { name, source })?;
    Ok(RoleThread { name, handle })
}

/// Runs the daemon until SIGTERM or SIGINT. Returns the process exit status.
pub fn run(config: Config) -> i32 {
    // Before daemonizing: a bad TLS file is reported on the terminal that started us, as one
    // line and with the exit status of any other configuration error.
    let config = match check_store_tls(config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            return e.exit_code();
        }
    };
    if let RunMode::Daemon { pidfile } = &config.run_mode {
        // Forking must happen before any thread or pool exists.
        let mut d = daemonize::Daemonize::new().working_directory("/");
        if let Some(p) = pidfile {
            d = d.pid_file(p);
        }
        if let Err(e) = d.start() {
            eprintln!("sbc-sidecar: cannot daemonize: {e}");
            return EXIT_START_FAILED;
        }
    }
    let logger = match config.log_target {
        logging::LogTarget::Syslog => {
            logging::init_syslog_at(&config.syslog_socket, config.log_facility, config.log_level)
        }
        logging::LogTarget::Stderr => logging::init(config.log_target, config.log_facility, config.log_level),
    };
    if let Err(e) = logger {
        eprintln!("sbc-sidecar: cannot start logging: {e}");
        return EXIT_START_FAILED;
    }
    for w in &config.warnings {
        warn!("{w}");
    }
    match start_and_wait(&config) {
        Ok(Stop::Requested) => EXIT_OK,
        Ok(Stop::RoleFailed) => EXIT_ROLE_FAILED,
        Err(e) => {
            error!("sbc-sidecar could not start: {e}");
            EXIT_START_FAILED
        }
    }
}

/// Why the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or SIGINT.
    Requested,
    /// A role thread ended while the daemon was running.
    RoleFailed,
}

fn start_and_wait(config: &Config) -> Result<Stop, StartError> {
    info!("sbc-sidecar {} starting", env!("CARGO_PKG_VERSION"));
    let signals = signals::listen().map_err(StartError::Signals)?;
    // Before the first role starts: every role thread reports its end here.
    let (supervisor, role_ended) = Supervisor::new();
    log_store_tls(config);
    log_ban_settings(config);
    let alert_writer = AlertWriter::start(config.alert_settings()).map_err(StartError::Alerts)?;
    // Roles stop when this sender is dropped.
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let shared = build_shared(config, &alert_writer, shutdown_rx, supervisor)?;
    let mut roles: Vec<RoleThread> = Vec::new();

    let (options_tx, options_rx) = bounded(OPTIONS_QUEUE);
    let heartbeat = HeartbeatRole::new(config.heartbeat_settings(), &shared, options_rx);
    roles.push(spawn_role(&shared.supervisor, "heartbeat", move || heartbeat.run())?);

    let registrar = Arc::new(Registrar::new(config.registrar_settings(), &shared));
    let (register_tx, register_rx) = bounded(config.auth.queue);
    let auth_pool =
        AuthPool::start(config.auth, registrar.clone(), register_rx, shared.shutdown.clone(), &shared.supervisor)
            .map_err(StartError::AuthWorkers)?;

    let (events_tx, events_rx) = unbounded::<ConnectionEvent>();
    let (ctl_events_tx, ctl_events_rx) = unbounded::<ConnectionEvent>();
    let (regbot_subscribers, regbot_events) = regbot::subscribe();
    let mut subscribers: Vec<Sender<ConnectionEvent>> = vec![events_tx, ctl_events_tx];
    subscribers.extend(regbot_subscribers);

    // Bound before drachtio connects, so a second daemon on the same socket fails early.
    let ctl = CtlServer::bind(&config.socket_path, config.ctl_settings(), &shared, ctl_events_rx)
        .map_err(|source| StartError::CliSocket { path: config.socket_path.clone(), source })?
        .with_auth_load(auth_pool.load_probe())
        .with_registrar(Arc::clone(&registrar));
    let routes = vec![
        Route { method: "REGISTER".into(), queue: register_tx },
        Route { method: "OPTIONS".into(), queue: options_tx },
    ];
    let client =
        DrachtioClient::start(config.drachtio.clone(), routes, subscribers, shared.metrics.clone(), &shared.supervisor)
            .map_err(StartError::Drachtio)?;
    let regbot = regbot::start(&config.regbot, &shared, client.handle(), regbot_events).map_err(StartError::Regbot)?;
    // Served from here on, with the regbot to ask for its status.
    roles.push(serve_ctl(ctl.with_regbot(regbot.status.clone()), &config.socket_path, &shared)?);

    let auth_load = auth_pool.load_probe();
    let (stop, stop_reason) =
        wait_for_stop(config, &signals, &events_rx, &role_ended, &registrar, &shared.metrics, &auth_load);
    match stop {
        Stop::Requested => info!("{stop_reason}: stopping"),
        Stop::RoleFailed => error!("{stop_reason}: stopping (exit status {EXIT_ROLE_FAILED}, to be restarted)"),
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);

    let deadline = Instant::now() + config.shutdown_grace + config.webhook_timeout;
    // New requests are answered 503 by the client from here on; responses to our own
    // requests are still delivered, so the regbot can de-register what must go (mode every,
    // or the last leader-mode leader), within REGBOT_UNREGISTER_WAIT.
    client.drain();
    regbot.prepare_stop(REGBOT_UNREGISTER_WAIT);
    drain(client, shutdown_tx, deadline, move || {
        auth_pool.join();
        regbot.join();
        for role in roles {
            if role.handle.join().is_err() {
                error!("role {} ended with a panic", role.name);
            }
        }
    });
    let stats = alert_writer.shutdown();
    if stats.dropped() > 0 {
        warn!("{} alerts could not be written to InfluxDB", stats.dropped());
    }
    info!("sbc-sidecar stopped");
    Ok(stop)
}

/// The stores, telemetry, ban table and stop signal every role is given.
fn build_shared(
    config: &Config,
    alert_writer: &AlertWriter,
    shutdown: Receiver<()>,
    supervisor: Supervisor,
) -> Result<Shared, StartError> {
    let pools = build_pools(config)?;
    let metrics = Metrics::new(&config.metrics).unwrap_or_else(|e| {
        warn!("statsd metrics disabled: {e}");
        Metrics::disabled()
    });
    Ok(Shared {
        redis: pools.redis,
        mysql: pools.mysql,
        mysql_write: pools.mysql_write,
        metrics,
        alerts: alert_writer.sender(),
        bans: Arc::new(Bans::new(config.ban.clone())),
        shutdown,
        supervisor,
    })
}

/// Says once how the brute-force defence is set.
fn log_ban_settings(config: &Config) {
    if config.ban.max_failures == 0 {
        info!("brute-force defence off (SBC_AUTH_BAN_FAILURES=0)");
    } else {
        info!(
            "brute-force defence: {} failed authentications within {} s ban a source for {} s (table of {})",
            config.ban.max_failures,
            config.ban.window.as_secs(),
            config.ban.ban.as_secs(),
            config.ban.capacity
        );
    }
}

/// The CLI server's thread.
fn serve_ctl(ctl: CtlServer, socket_path: &std::path::Path, shared: &Shared) -> Result<RoleThread, StartError> {
    info!("CLI server started on {}", socket_path.display());
    let shutdown = shared.shutdown.clone();
    spawn_role(&shared.supervisor, "ctl", move || {
        if let Err(e) = ctl.run(shutdown) {
            error!("CLI server stopped: {e}");
        }
    })
}

/// The graceful drain after SIGTERM/SIGINT, bounded by `deadline`:
///
/// 1. (done by the caller with `client.drain()`) the drachtio client stops handing requests
///    to roles and answers new ones `503` with `Retry-After` itself, while it keeps reading
///    (nothing drachtio delivers is left to time out) and keeps serving the responses to the
///    regbot's requests;
/// 2. the roles are told to stop (the shutdown sender is dropped) and finish what they hold:
///    a webhook call in hand within its timeout, queued REGISTERs answered `503`;
/// 3. `join_roles` runs on its own thread so that the wait is bounded: at the deadline,
///    whatever a role still holds is answered `503` by the writer;
/// 4. the client withdraws our routes (answering `503` until drachtio confirms), the writer
///    flushes every answer and closes the connection.
fn drain(
    client: DrachtioClient,
    shutdown_tx: Sender<()>,
    deadline: Instant,
    join_roles: impl FnOnce() + Send + 'static,
) {
    drop(shutdown_tx);
    let (done_tx, done_rx) = bounded::<()>(1);
    let joiner = thread::Builder::new().name("shutdown".into()).spawn(move || {
        join_roles();
        let _ = done_tx.send(());
    });
    match joiner {
        Ok(_) => {
            if done_rx.recv_deadline(deadline).is_err() {
                warn!("roles still busy at the shutdown deadline (SBC_SHUTDOWN_GRACE_MS + SBC_WEBHOOK_TIMEOUT_MS): answering what they hold with 503");
            }
        }
        Err(e) => error!("cannot wait for the roles to finish ({e}): answering what they hold with 503"),
    }
    let stats = client.shutdown();
    if stats.unanswered_dropped > 0 || stats.unanswered_at_close > 0 {
        warn!(
            "requests answered 503 because no role answered them: {} dropped, {} still held at close",
            stats.unanswered_dropped, stats.unanswered_at_close
        );
    }
}

/// The systemd watchdog interval, as sd_watchdog_enabled(3) defines it: `WATCHDOG_USEC` set
/// and `WATCHDOG_PID` either unset or our pid. (The sd-notify crate also insists on
/// `WATCHDOG_PID` being present.)
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|u| *u > 0)?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

/// SIGHUP: the level from the `JAMBONES_LOGLEVEL` line of the environment file, or the level
/// the daemon started with when the file has none.
fn reload_log_level(config: &Config) {
    match logging::level_from_env_file(&config.log_level_file) {
        Ok(level) => {
            let level = level.unwrap_or(config.log_level);
            logging::set_level(level);
            // Logged at warn so that it shows whatever the new level is.
            warn!("SIGHUP: log level now {level} (from {})", config.log_level_file.display());
        }
        Err(e) => warn!("SIGHUP: log level unchanged: {e}"),
    }
}

/// What a role's end is called in the log.
fn describe(ended: &RoleEnded) -> String {
    let how = if ended.panicked { "panicked" } else { "ended unexpectedly" };
    format!("role {} {how}", ended.role)
}

/// Blocks until SIGTERM/SIGINT or until a role thread ends; meanwhile tells systemd when we
/// are ready, pets its watchdog, and re-applies the log level on SIGHUP.
fn wait_for_stop(
    config: &Config,
    signals: &Receiver<signals::Signal>,
    events: &Receiver<ConnectionEvent>,
    role_ended: &Receiver<RoleEnded>,
    registrar: &Registrar,
    metrics: &Metrics,
    auth_load: &LoadProbe,
) -> (Stop, String) {
    let every =
        |interval| if metrics.is_enabled() { crossbeam_channel::tick(interval) } else { crossbeam_channel::never() };
    let users_gauge = every(USERS_GAUGE_INTERVAL);
    let auth_gauge = every(AUTH_GAUGE_INTERVAL);
    // Expired members of `active-user` are pruned every 10 minutes, as the Node registrar did.
    let prune = crossbeam_channel::tick(ACTIVE_USER_PRUNE_INTERVAL);
    let mut ready = false;
    let watchdog = match watchdog_interval() {
        Some(interval) => crossbeam_channel::tick(interval / 2),
        None => crossbeam_channel::never(),
    };
    loop {
        select! {
            recv(signals) -> sig => match sig {
                Ok(signals::Signal::Terminate) => return (Stop::Requested, "SIGTERM received".into()),
                Ok(signals::Signal::Interrupt) => return (Stop::Requested, "SIGINT received".into()),
                Ok(signals::Signal::Hangup) => reload_log_level(config),
                // Nothing would stop us any more: a failure, so that systemd restarts us.
                Err(_) => return (Stop::RoleFailed, "signal listener ended".into()),
            },
            recv(role_ended) -> ended => if let Ok(ended) = ended {
                return (Stop::RoleFailed, describe(&ended));
            },
            recv(events) -> ev => match ev {
                Ok(ConnectionEvent::Connected(_)) if !ready => {
                    ready = true;
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                }
                Ok(_) => {}
                // The reader dropped its subscribers: it is gone. Its own notification names it
                // (and says whether it panicked) when it arrives in time.
                Err(_) => {
                    let reason = match role_ended.recv_timeout(Duration::from_millis(500)) {
                        Ok(ended) => describe(&ended),
                        Err(_) => "role drachtio-reader ended unexpectedly".into(),
                    };
                    return (Stop::RoleFailed, reason);
                }
            },
            recv(prune) -> _ => match registrar.prune_expired() {
                Ok(n) => debug!("pruned {n} expired members of active-user"),
                Err(e) => warn!("pruning active-user failed: {e}"),
            },
            recv(users_gauge) -> _ => match registrar.registered_users() {
                Ok(n) => metrics.users_count(n),
                Err(e) => debug!("sbc.users.count not sent: {e}"),
            },
            recv(auth_gauge) -> _ => auth_pool::report_load(&auth_load.load(), metrics),
            recv(watchdog) -> _ => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        }
    }
}
