//! The auth worker pool behind the triage thread: batches, replays and bans caught in triage,
//! kept-alive webhook connections, the webhook breaker, a hung Redis, a full queue. The rig is
//! tests/support/registrar_rig.rs.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use mysql::prelude::Queryable;
use rand::Rng;
use serde_json::Value;

use sbc_sidecar::drachtio::IncomingRequest;
use sbc_sidecar::registrar::{AuthPool, HookRequest, HookTransport, Registrar};
use sbc_sidecar::shared::Shared;
use sbc_sidecar::store::mysql::MysqlPool;
use sbc_sidecar::store::redis::pool as redis_pool;
use sbc_sidecar::supervise::Supervisor;

use sbc_test_tools::webhook::WebhookServer;

#[path = "support/registrar_rig.rs"]
mod registrar_rig;
use registrar_rig::*;

// ---------------------------------------------------------------------------------------------
// The worker pool.

#[test]
fn auth_pool_answers_every_request_once_and_stops_on_shutdown() {
    let fx = Fx::new();
    let registrar = Arc::new(Registrar::new(base_settings(), &fx.shared()));
    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(16);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(
        fixed_workers(2, &queue_rx),
        registrar.clone(),
        queue_rx.clone(),
        shutdown_rx.clone(),
        &Supervisor::unwatched(),
    )
    .unwrap();

    // IPv4 Request-URIs are answered without touching any store
    let mut reg = fx.reg("pool");
    reg.ruri = "sip:127.0.0.1".into();
    let mut responses = Vec::new();
    for _ in 0..4 {
        let (req, rx) = incoming(&reg);
        queue_tx.send(req).unwrap();
        responses.push(rx);
    }
    for rx in &responses {
        assert_eq!(response_from(rx).status, 403);
    }
    drop(shutdown_tx);
    pool.join();

    // A request still queued when shutdown is signalled gets exactly one answer: handled if
    // a worker took it first, else refused with 503 + Retry-After.
    let (late, late_rx) = incoming(&reg);
    queue_tx.send(late).unwrap();
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx, &Supervisor::unwatched())
        .unwrap();
    pool.join();
    let r = response_from(&late_rx);
    assert!(r.status == 503 || r.status == 403, "{}", r.raw);
    if r.status == 503 {
        assert_eq!(r.header("Retry-After"), Some("5"));
    }
    assert!(late_rx.try_recv().is_err());
}

#[test]
fn a_worker_takes_queued_registers_as_a_batch_and_answers_each_once() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let cached: Vec<String> = (0..5).map(|i| format!("batch-cached-{i}")).collect();
    let fresh: Vec<String> = (0..5).map(|i| format!("batch-fresh-{i}")).collect();
    let authed: Vec<String> = (0..5).map(|i| format!("batch-auth-{i}")).collect();
    for u in cached.iter().chain(&fresh).chain(&authed) {
        fx.hook.set_password(u, PASSWORD);
    }
    // Registered beforehand: their refreshes from the same source are cache hits.
    for u in &cached {
        assert_eq!(fx.register_with_password(&fx.reg(u), PASSWORD).status, 200);
    }
    let registrar = Arc::new(Registrar::new(base_settings(), &fx.shared()));
    // Challenged beforehand (by the pool's registrar: nonces are signed per instance here):
    // their authorized REGISTERs need the webhook.
    let nonces: Vec<String> = authed.iter().map(|u| nonce_of(&fx.send_to(&registrar, &fx.reg(u)))).collect();

    // Everything is queued before the single worker starts, so it takes one batch.
    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(64);
    let mut expected = Vec::new();
    for u in &cached {
        let (req, rx) = incoming(&fx.reg(u));
        queue_tx.send(req).unwrap();
        expected.push((rx, 200, Some("30"), u.clone()));
    }
    for (u, nonce) in authed.iter().zip(&nonces) {
        fx.aors.lock().unwrap().push(fx.aor(u));
        let (req, rx) = incoming(&fx.reg(u).authorized(PASSWORD, nonce));
        queue_tx.send(req).unwrap();
        expected.push((rx, 200, Some("30"), u.clone()));
    }
    for u in &fresh {
        let (req, rx) = incoming(&fx.reg(u));
        queue_tx.send(req).unwrap();
        expected.push((rx, 401, None, u.clone()));
    }
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let hook_calls_before = fx.hook.request_count();
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx, &Supervisor::unwatched())
        .unwrap();
    for (rx, status, expires, user) in &expected {
        let r = response_from(rx);
        assert_eq!(r.status, *status, "{user}: {}", r.raw);
        if let Some(e) = expires {
            assert_eq!(r.header("Expires"), Some(*e), "{user}");
        }
        assert!(rx.try_recv().is_err(), "{user} got a second response");
    }
    for u in &authed {
        assert!(fx.binding(u).is_some(), "{u} stored");
    }
    // only the authorized REGISTERs reached the webhook; the refreshes were cache hits
    assert_eq!(fx.hook.request_count() - hook_calls_before, authed.len());
    drop(shutdown_tx);
    pool.join();
}

/// The triage thread claims the nonce uses of a batch in the round trip that reads its
/// bindings: a replay queued in the same batch as the original, or in a later one, is
/// challenged there and never reaches an auth worker or the webhook.
#[test]
fn a_replay_in_a_batch_is_challenged_by_the_triage_thread() {
    use sbc_sidecar::registrar::credentials::NonceUse;
    use sbc_sidecar::registrar::replay;
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("kai", PASSWORD);
    let registrar = Arc::new(Registrar::new(base_settings(), &fx.shared()));
    let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg("kai")));
    let original = fx.reg("kai").authorized(PASSWORD, &nonce);
    let mut replay = original.clone();
    replay.port = 6001;
    replay.contact = Some("<sip:kai@127.0.0.1:6001;transport=udp>;expires=3600".into());
    fx.aors.lock().unwrap().push(fx.aor("kai"));

    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(8);
    let (req, first_rx) = incoming(&original);
    queue_tx.send(req).unwrap();
    let (req, replay_rx) = incoming(&replay);
    queue_tx.send(req).unwrap();
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx, &Supervisor::unwatched())
        .unwrap();
    assert_eq!(response_from(&first_rx).status, 200);
    assert_challenge(&response_from(&replay_rx), &fx.realm, false);
    // and again in a batch of its own
    let (req, later_rx) = incoming(&replay);
    queue_tx.send(req).unwrap();
    assert_challenge(&response_from(&later_rx), &fx.realm, false);
    assert_eq!(fx.hook.request_count(), 1);
    let json: Value = serde_json::from_str(&fx.binding("kai").unwrap()).unwrap();
    assert_eq!(json["contact"], "sip:kai@127.0.0.1:5070;transport=udp");
    // the record of the use, kept as long as the nonce is valid
    let used = NonceUse { nc: 1, cnonce: "0a4f113b".into() };
    let ttl: i64 = redis::cmd("TTL").arg(replay::key(&nonce, &used)).query(&mut redis_conn()).unwrap();
    assert!((300..=360).contains(&ttl), "TTL {ttl}");
    drop(shutdown_tx);
    pool.join();
}

/// A banned source is refused in the batch before anything is read or claimed for it: its
/// well-formed answers create no one-time key in Redis.
#[test]
fn a_banned_source_creates_no_one_time_keys() {
    use sbc_sidecar::registrar::credentials::NonceUse;
    use sbc_sidecar::registrar::{replay, BanSettings, Bans};
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("lou", PASSWORD);
    let bans = Arc::new(Bans::new(BanSettings { max_failures: 1, ..BanSettings::default() }));
    let registrar = Arc::new(Registrar::new(base_settings(), &Shared { bans: bans.clone(), ..fx.shared() }));
    let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg("lou")));
    assert!(bans.record_failure("127.0.0.1".parse().unwrap(), Instant::now()).is_some());
    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(8);
    let (req, rx) = incoming(&fx.reg("lou").authorized(PASSWORD, &nonce));
    queue_tx.send(req).unwrap();
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx, &Supervisor::unwatched())
        .unwrap();
    let r = response_from(&rx);
    assert_eq!((r.status, r.header("X-Reason")), (403, Some("Too many failed authentications")));
    let key = replay::key(&nonce, &NonceUse { nc: 1, cnonce: "0a4f113b".into() });
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut redis_conn()).unwrap();
    assert!(!exists, "{key} was created for a banned source");
    assert_eq!(fx.hook.request_count(), 0);
    drop(shutdown_tx);
    pool.join();
}

/// Auth workers calling one kept-alive webhook at the same time reuse their connections:
/// over many rounds the server sees at most one connection per worker. (ureq's default pool
/// keeps 3 idle connections per host; with more workers the rest were closed after every
/// call and opened again on the next — a TCP handshake and a thread per REGISTER.)
#[test]
fn concurrent_webhook_calls_reuse_one_connection_per_worker() {
    const WORKERS: usize = 8;
    const ROUNDS: usize = 10;
    let hook = WebhookServer::start();
    hook.keep_alive(true);
    hook.fixed(200, r#"{"status":"ok"}"#);
    // Long enough that all workers are inside a call together in every round.
    hook.delay(Duration::from_millis(20));
    let transport =
        Arc::new(sbc_sidecar::registrar::hook_transport::UreqTransport::new(Duration::from_secs(3), None, WORKERS));
    let url = hook.url("/auth");
    for _ in 0..ROUNDS {
        let barrier = Arc::new(std::sync::Barrier::new(WORKERS));
        let calls: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (transport, url, barrier) = (transport.clone(), url.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let request = HookRequest {
                        method: sbc_sidecar::registrar::webhook::HookMethod::Post,
                        url,
                        headers: vec![("content-type".into(), "application/json".into())],
                        body: Some("{}".into()),
                    };
                    transport.send(&request).map(|r| r.status)
                })
            })
            .collect();
        for c in calls {
            assert_eq!(c.join().unwrap().unwrap(), 200);
        }
    }
    assert_eq!(hook.request_count(), WORKERS * ROUNDS);
    let opened = hook.connection_count();
    assert!(opened <= WORKERS, "{opened} connections for {} calls from {WORKERS} workers", WORKERS * ROUNDS);
}

/// A keep-alive webhook server that closes an idle connection just as the next request
/// arrives (Node's http server does so after 5 s idle): the request goes again, once, on a new
/// connection, instead of failing the REGISTER with 500.
#[test]
fn a_kept_alive_connection_closed_by_the_server_is_retried_once_on_a_new_one() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/auth", listener.local_addr().unwrap());
    // Reads one request (head and body) off the connection; false at end of stream.
    fn read_request(reader: &mut BufReader<std::net::TcpStream>) -> bool {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return false;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).is_ok()
    }
    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        // First connection: answers one request, then drops the connection on the second.
        let (first, _) = listener.accept().unwrap();
        let mut writer = first.try_clone().unwrap();
        let mut reader = BufReader::new(first);
        requests.push(("first", read_request(&mut reader)));
        writer.write_all(OK).unwrap();
        requests.push(("first", read_request(&mut reader)));
        drop(writer);
        drop(reader);
        // Second connection: the retry.
        let (second, _) = listener.accept().unwrap();
        let mut writer = second.try_clone().unwrap();
        let mut reader = BufReader::new(second);
        requests.push(("second", read_request(&mut reader)));
        writer.write_all(OK).unwrap();
        requests
    });
    let transport = sbc_sidecar::registrar::hook_transport::UreqTransport::new(Duration::from_secs(3), None, 4);
    let request = HookRequest {
        method: sbc_sidecar::registrar::webhook::HookMethod::Post,
        url,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some("{}".into()),
    };
    assert_eq!(transport.send(&request).map(|r| r.status), Ok(200));
    assert_eq!(transport.send(&request).map(|r| r.status), Ok(200), "the second call survives the close");
    assert_eq!(server.join().unwrap(), vec![("first", true), ("first", true), ("second", true)]);
}

/// An account whose webhook keeps timing out stops holding auth workers: after 3 timeouts in
/// a row its REGISTERs get 503 with Retry-After at once, without a call, until the cool-down is
/// over; then one goes through, and an answer closes the breaker. Other accounts keep calling
/// their webhooks meanwhile.
#[test]
fn a_webhook_that_keeps_timing_out_is_rested_without_touching_other_accounts() {
    use sbc_sidecar::registrar::hook_breaker::BreakerSettings;
    let cooldown = Duration::from_millis(1500);
    let fx = Fx::with(|s| {
        s.webhook_timeout = Duration::from_millis(200);
        s.webhook_breaker = BreakerSettings { threshold: 3, cooldown };
    });
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("ann", PASSWORD);
    fx.hook.delay(Duration::from_secs(2));

    // A second account on another realm, with a webhook that answers at once.
    let other_hook = WebhookServer::start();
    other_hook.set_password("bob", PASSWORD);
    let other_realm = format!("o{:08x}.sbc-test.example", rand::thread_rng().gen::<u32>());
    {
        let mut c = fx.db.conn();
        let hook_sid = uuid();
        c.exec_drop(
            "INSERT INTO webhooks (webhook_sid, url, method) VALUES (?, ?, 'POST')",
            (&hook_sid, other_hook.url("/auth")),
        )
        .unwrap();
        c.exec_drop(
            "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, \
             is_active, webhook_secret) VALUES (?, 'other', ?, ?, ?, 1, ?)",
            (uuid(), &other_realm, uuid(), &hook_sid, WEBHOOK_SECRET),
        )
        .unwrap();
    }
    let mut bob = fx.reg("bob");
    bob.ruri = format!("sip:{other_realm}");
    bob.to = format!("<sip:bob@{other_realm}>");
    bob.to_host = other_realm.clone();

    for attempt in 1..=3 {
        let r = fx.register_with_password(&fx.reg("ann"), PASSWORD);
        assert_eq!(r.status, 500, "timeout {attempt}");
    }
    assert_eq!(fx.hook.request_count(), 3);

    let r = fx.register_with_password(&fx.reg("ann"), PASSWORD);
    assert_eq!(r.status, 503, "{}", r.raw);
    let retry_after: u64 = r.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after} for a 1.5 s cool-down");
    assert_eq!(fx.hook.request_count(), 3, "not called while the breaker is open");

    assert_eq!(fx.register_with_password(&bob, PASSWORD).status, 200, "another account's webhook is still called");
    assert_eq!(other_hook.request_count(), 1);

    // The webhook recovers; after the cool-down the next REGISTER is tried and succeeds.
    fx.hook.delay(Duration::ZERO);
    std::thread::sleep(cooldown + Duration::from_millis(100));
    assert_eq!(fx.register_with_password(&fx.reg("ann"), PASSWORD).status, 200);
    assert_eq!(fx.hook.request_count(), 4);
    // (ann is now answered from the cache window; another phone of the account calls again.)
    fx.hook.set_password("cat", PASSWORD);
    assert_eq!(fx.register_with_password(&fx.reg("cat"), PASSWORD).status, 200, "closed again");
    assert_eq!(fx.hook.request_count(), 5);
}

/// The triage thread answers refreshes from the cache window while every auth worker is held
/// by a slow webhook: one tenant's slow webhook does not delay the other devices' refreshes.
#[test]
fn cache_window_refreshes_are_answered_while_every_auth_worker_waits_on_a_webhook() {
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    for u in ["steady", "slowpoke"] {
        fx.hook.set_password(u, PASSWORD);
    }
    assert_eq!(fx.register_with_password(&fx.reg("steady"), PASSWORD).status, 200);
    let registrar = Arc::new(Registrar::new(base_settings(), &fx.shared()));
    let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg("slowpoke")));
    fx.aors.lock().unwrap().push(fx.aor("slowpoke"));

    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(16);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx, &Supervisor::unwatched())
        .unwrap();
    fx.hook.delay(Duration::from_secs(2));
    let (slow, slow_rx) = incoming(&fx.reg("slowpoke").authorized(PASSWORD, &nonce));
    queue_tx.send(slow).unwrap();
    // Wait until the only worker is inside the webhook call.
    let deadline = Instant::now() + Duration::from_secs(2);
    while fx.hook.request_count() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(fx.hook.request_count(), 2, "the worker is calling the webhook");

    let (refresh, refresh_rx) = incoming(&fx.reg("steady"));
    queue_tx.send(refresh).unwrap();
    let r = response_from(&refresh_rx);
    assert!(slow_rx.try_recv().is_err(), "the refresh was answered while the webhook call was still running");
    assert_eq!((r.status, r.header("Expires")), (200, Some("30")), "{}", r.raw);
    assert_eq!(response_from(&slow_rx).status, 200, "and the slow registration completes");
    drop(shutdown_tx);
    pool.join();
}

/// A Redis that accepts connections and never answers (a hung server, a black-holed route)
/// costs one timeout, not one per REGISTER: the batch's MGET times out, Redis is marked down,
/// and every queued REGISTER gets its 503 at once. While it stays down only one request per
/// probe interval tries it.
#[test]
fn a_redis_that_never_answers_costs_one_timeout_not_one_per_register() {
    use std::io::Read;
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            for stream in silent.incoming() {
                let Ok(mut stream) = stream else { return };
                let received = received.clone();
                std::thread::spawn(move || {
                    let slot = {
                        let mut r = received.lock().unwrap();
                        r.push(Vec::new());
                        r.len() - 1
                    };
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        received.lock().unwrap()[slot].extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
    }
    // Every attempt is a new connection: the client's handshake (CLIENT SETINFO) is never
    // answered, so no connection ever makes it into the pool.
    let attempts = || received.lock().unwrap().len();

    let fx = Fx::new();
    let registrar = Arc::new(Registrar::new(
        base_settings(),
        &Shared::for_tests(
            MysqlPool::new(&mysql_settings(&fx.db.name, 3306)).unwrap(),
            redis_pool(&redis_settings(port, Duration::from_millis(300))).unwrap(),
        ),
    ));
    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(64);
    let mut answers = Vec::new();
    for i in 0..20 {
        let (req, rx) = incoming(&fx.reg(&format!("hung{i}")));
        queue_tx.send(req).unwrap();
        answers.push(rx);
    }
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(2, &queue_rx), registrar, queue_rx, shutdown_rx, &Supervisor::unwatched())
        .unwrap();
    for rx in &answers {
        let r = response_from(rx);
        assert_eq!((r.status, r.header("Retry-After")), (503, Some("5")), "{}", r.raw);
    }
    assert_eq!(attempts(), 1, "one attempt for the batch, not one per REGISTER");

    // Still down and within the probe interval: answered without another attempt.
    let (req, rx) = incoming(&fx.reg("hung-again"));
    queue_tx.send(req).unwrap();
    assert_eq!(response_from(&rx).status, 503);
    assert_eq!(attempts(), 1, "no attempt within the probe interval");
    drop(shutdown_tx);
    pool.join();
}

/// When every auth worker is busy and as many REGISTERs wait for one as the queue holds, the
/// next one needing authentication gets 503 with Retry-After at once; every request gets
/// exactly one answer, and the waiting ones are served when the worker is free again.
#[test]
fn a_full_auth_queue_answers_503_at_once_and_every_request_once() {
    const QUEUE: usize = 4;
    let fx = Fx::new();
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let registrar = Arc::new(Registrar::new(base_settings(), &fx.shared()));
    let users: Vec<String> = (0..QUEUE + 3).map(|i| format!("crowd{i}")).collect();
    let authorized: Vec<Reg> = users
        .iter()
        .map(|u| {
            fx.hook.set_password(u, PASSWORD);
            fx.aors.lock().unwrap().push(fx.aor(u));
            let nonce = nonce_of(&fx.send_to(&registrar, &fx.reg(u)));
            fx.reg(u).authorized(PASSWORD, &nonce)
        })
        .collect();

    let (queue_tx, queue_rx) = bounded::<IncomingRequest>(QUEUE);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
    let pool = AuthPool::start(fixed_workers(1, &queue_rx), registrar, queue_rx, shutdown_rx, &Supervisor::unwatched())
        .unwrap();
    fx.hook.delay(Duration::from_millis(1500));
    let mut answers = Vec::new();
    // The first holds the only worker inside the webhook call.
    let (req, rx) = incoming(&authorized[0]);
    queue_tx.send(req).unwrap();
    answers.push(rx);
    let deadline = Instant::now() + Duration::from_secs(2);
    while fx.hook.request_count() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The next ones wait for it; the auth queue holds QUEUE of them.
    for reg in &authorized[1..] {
        let (req, rx) = incoming(reg);
        queue_tx.send(req).unwrap();
        answers.push(rx);
    }
    let overflow = QUEUE + 1..answers.len();
    for i in overflow.clone() {
        let r = response_from(&answers[i]);
        assert_eq!((r.status, r.header("Retry-After")), (503, Some("5")), "request {i}: {}", r.raw);
    }
    assert_eq!(fx.hook.request_count(), 1, "the refused ones were answered while the worker was still busy");
    fx.hook.delay(Duration::ZERO);
    for (i, rx) in answers.iter().enumerate() {
        if !overflow.contains(&i) {
            assert_eq!(response_from(rx).status, 200, "request {i}");
        }
        assert!(rx.try_recv().is_err(), "request {i} answered twice");
    }
    drop(shutdown_tx);
    pool.join();
}
