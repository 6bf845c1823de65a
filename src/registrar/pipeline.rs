//! The REGISTER pipeline of spec 4.1, step by step. Each step returns `Result<_, Reply>`;
//! the first final response stops the chain.

use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use log::{debug, error, info, warn};
use mysql::PooledConn;

use super::accounts::{self, Account};
use super::alerts::Alert;
use super::bindings::{self, NewBinding, StoredBinding};
use super::clients;
use super::grant::{AuthVerdict, Denial, Grant};
use super::health::StoreHealth;
use super::hook_breaker::{Admission, Transition};
use super::nonce::NonceCheck;
use super::reply::Reply;
use super::request::{self, Aor, Kind, Registration};
use super::webhook::{self, HookError, RegistrationHook};
use super::{unix_millis, unix_secs, Registrar};
use crate::drachtio::IncomingRequest;
use crate::sip::digest::DigestCredentials;
use crate::sip::{parse_authorization, replace_first_expires, www_authenticate};
use crate::store::redis::{self as redis_store, RedisConn};
use crate::store::StoreError;

/// The cache window and the interval UDP clients are told (the Node `NAT_EXPIRES`).
const NAT_EXPIRES: u32 = 30;
const NAT_EXPIRES_MS: u64 = NAT_EXPIRES as u64 * 1000;

pub const DEACTIVATED_REASON: &str = "Account has been deactivated";
pub const UNKNOWN_REALM_REASON: &str = "Unknown or invalid realm";
pub const INVALID_CREDENTIALS_REASON: &str = "Invalid credentials";
pub const MAX_DEVICES_PHRASE: &str = "Max Devices Registered";

/// What [`Registrar::triage`] did with a request.
// Returned once per request and moved on at once; boxing the request would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Triage {
    /// Answered (or refused) without an authentication call.
    Answered,
    /// Its credentials must be checked by the webhook or against the `clients` table: for an
    /// auth worker, with the stored binding already read.
    NeedsAuthentication(IncomingRequest, Option<Option<StoredBinding>>),
}

/// How far the pipeline runs: the triage thread stops before the authentication call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Triage,
    Full,
}

/// Why the pipeline stopped before the end.
enum Stop {
    /// A final response.
    Reply(Reply),
    /// The triage stage reached the authentication call (with the stored binding it read).
    Authenticate(Option<StoredBinding>),
}

impl From<Reply> for Stop {
    fn from(reply: Reply) -> Stop {
        Stop::Reply(reply)
    }
}

/// The request facts every step needs, computed once.
struct Ctx<'a> {
    req: &'a IncomingRequest,
    reg: Registration,
    aor: Aor,
    aor_key: String,
    /// `sip:<source ip>:<source port>`.
    proxy: String,
}

impl Registrar {
    /// Runs the pipeline and sends the one final response. A panic in the pipeline (a bug)
    /// still answers `500`, so the device is not left retransmitting into the void.
    pub fn handle(&self, req: IncomingRequest) {
        self.handle_prefetched(req, None);
    }

    /// [`Registrar::handle`] with the stored binding already read (by [`Registrar::prefetch`])
    /// when `prefetched` is `Some`.
    pub fn handle_prefetched(&self, req: IncomingRequest, prefetched: Option<Option<StoredBinding>>) {
        let started = Instant::now();
        let reply = match panic::catch_unwind(AssertUnwindSafe(|| self.decide(&req, prefetched))) {
            Ok(reply) => reply,
            Err(_) => self.internal_error(&req),
        };
        self.answer(req, reply, started);
    }

    /// Runs the pipeline up to the authentication call and answers the request if it ends
    /// before (cache window, challenge, rejections). A request whose credentials must be
    /// checked — webhook or `clients` table — comes back, with its stored binding, for an
    /// auth worker to [`handle_prefetched`](Self::handle_prefetched).
    pub fn triage(&self, req: IncomingRequest, prefetched: Option<Option<StoredBinding>>) -> Triage {
        let started = Instant::now();
        let reply = match panic::catch_unwind(AssertUnwindSafe(|| self.pipeline(&req, prefetched, Stage::Triage))) {
            Ok(Err(Stop::Authenticate(existing))) => return Triage::NeedsAuthentication(req, Some(existing)),
            Ok(Ok(reply)) | Ok(Err(Stop::Reply(reply))) => reply,
            Err(_) => self.internal_error(&req),
        };
        self.answer(req, reply, started);
        Triage::Answered
    }

    /// A panic in the pipeline (a bug) still answers `500`, so the device is not left
    /// retransmitting into the void.
    fn internal_error(&self, req: &IncomingRequest) -> Reply {
        error!(
            "registrar: internal error handling REGISTER source={}:{}; answering 500",
            req.meta.address, req.meta.port
        );
        Reply::internal_error()
    }

    fn answer(&self, req: IncomingRequest, reply: Reply, started: Instant) {
        self.metrics.registration_response_time(reply.cached, reply.status, started.elapsed());
        debug!(
            "registrar: answered REGISTER status={} cached={} source={}:{} elapsed_ms={}",
            reply.status,
            reply.cached,
            req.meta.address,
            req.meta.port,
            started.elapsed().as_millis()
        );
        let response = reply.to_builder(&req);
        req.respond(response);
    }

    /// Answers `503` with `Retry-After` without looking at the request: for requests still
    /// queued when the daemon shuts down.
    pub fn answer_unavailable(&self, req: IncomingRequest) {
        let response = Reply::unavailable(self.settings.retry_after_secs).to_builder(&req);
        req.respond(response);
    }

    /// The Redis keys of a batch of queued requests, read with one `MGET`: `Some(binding)`
    /// for each request that will consult the cache window, `None` for the others (not a
    /// valid REGISTER, an unregister) and for all of them when Redis did not answer (Redis is
    /// then marked down, and each of them gets its 503 at once: see `StoreHealth`).
    pub fn prefetch(&self, reqs: &[IncomingRequest]) -> Vec<Option<Option<StoredBinding>>> {
        let aors: Vec<Option<String>> = reqs
            .iter()
            .map(|req| {
                request::check_request_uri(&req.message).ok()?;
                let reg = request::parse_registration(&req.message).ok()?;
                (reg.kind == Kind::Register).then_some(())?;
                Some(request::parse_aor(&req.message).ok()?.key())
            })
            .collect();
        let keys: Vec<&str> = aors.iter().flatten().map(String::as_str).collect();
        if keys.is_empty() || !self.redis_health.admit() {
            return vec![None; reqs.len()];
        }
        let found = match redis_store::run(&self.redis, |conn| bindings::query_many(conn, &keys)) {
            Ok(found) => {
                self.redis_health.succeeded();
                found
            }
            Err(e) => {
                // One wait for the whole batch: the requests then get their 503 at once.
                if e.is_unavailable() {
                    self.redis_health.failed("reading registrations", &e);
                }
                return vec![None; reqs.len()];
            }
        };
        let mut found = found.into_iter();
        aors.iter().map(|a| a.as_ref().map(|_| found.next().flatten())).collect()
    }

    fn decide(&self, req: &IncomingRequest, prefetched: Option<Option<StoredBinding>>) -> Reply {
        match self.pipeline(req, prefetched, Stage::Full) {
            Ok(reply) | Err(Stop::Reply(reply)) => reply,
            // Only the triage stage stops there.
            Err(Stop::Authenticate(_)) => Reply::internal_error(),
        }
    }

    fn pipeline(
        &self,
        req: &IncomingRequest,
        prefetched: Option<Option<StoredBinding>>,
        stage: Stage,
    ) -> Result<Reply, Stop> {
        // rejectIpv4, regParser, then the AOR half of checkCache.
        request::check_request_uri(&req.message)?;
        let reg = request::parse_registration(&req.message)?;
        let aor = request::parse_aor(&req.message)?;
        let ctx =
            Ctx { aor_key: aor.key(), proxy: bindings::proxy_uri(&req.meta.address, req.meta.port), req, reg, aor };

        let existing = match ctx.reg.kind {
            Kind::Register => self.check_cache(&ctx, prefetched)?,
            Kind::Unregister => None,
        };

        let account = self.check_account(&ctx, existing.is_some())?;
        let credentials = self.check_challenge(&ctx)?;
        if stage == Stage::Triage {
            return Err(Stop::Authenticate(existing));
        }
        let grant = self.authenticate(&ctx, &account, &credentials)?;

        Ok(match ctx.reg.kind {
            Kind::Register => self.register(&ctx, &grant)?,
            Kind::Unregister => self.unregister(&ctx)?,
        })
    }

    /// checkCache: a device re-registering from the same ip:port while its binding has more
    /// than 30 s left is answered at once (`Expires: 30`), without webhook or Redis write.
    /// Returns the stored binding otherwise (the device-limit check uses it).
    fn check_cache(
        &self,
        ctx: &Ctx<'_>,
        prefetched: Option<Option<StoredBinding>>,
    ) -> Result<Option<StoredBinding>, Reply> {
        let stored = match prefetched {
            Some(stored) => stored,
            None => self.redis("reading the registration", |conn| bindings::query(conn, &ctx.aor_key))?,
        };
        if let Some(b) = &stored {
            let window_end = (unix_millis() + NAT_EXPIRES_MS) as f64;
            if b.proxy.as_deref() == Some(ctx.proxy.as_str()) && b.expiry_time_ms.is_some_and(|t| window_end < t) {
                debug!("registrar: cached answer aor={} source={}", ctx.aor_key, ctx.proxy);
                let mut reply = Reply::new(200)
                    .header("Contact", replace_first_expires(&ctx.reg.raw_contact, NAT_EXPIRES))
                    .header("Expires", NAT_EXPIRES.to_string());
                reply.cached = true;
                return Err(reply);
            }
        }
        Ok(stored)
    }

    /// checkAccountLimits and the realm half of digestChallenge: the account of the realm
    /// must exist and be active; in hosting mode a new device must fit the account's limit.
    fn check_account(&self, ctx: &Ctx<'_>, already_registered: bool) -> Result<Account, Reply> {
        let realm = ctx.aor.realm();
        let account = match self.accounts.get(realm) {
            Some(cached) => cached,
            None => {
                let found =
                    self.mysql("looking up the account of the realm", |conn| accounts::account_by_realm(conn, realm))?;
                self.accounts.put(realm, found.clone());
                found
            }
        };
        match account {
            Some(a) if !a.is_active => {
                info!(
                    "registrar: rejecting REGISTER for deactivated account aor={} account_sid={}",
                    ctx.aor_key, a.account_sid
                );
                Err(Reply::with_reason(403, DEACTIVATED_REASON))
            }
            None if self.settings.hosting => {
                debug!("registrar: rejecting REGISTER for unknown realm aor={} source={}", ctx.aor_key, ctx.proxy);
                Err(Reply::new(403))
            }
            None => {
                debug!("registrar: rejecting REGISTER for unknown realm aor={} source={}", ctx.aor_key, ctx.proxy);
                Err(Reply::with_reason(403, UNKNOWN_REALM_REASON))
            }
            Some(a) => {
                if self.settings.hosting && ctx.reg.kind == Kind::Register {
                    self.check_device_limit(ctx, &a, already_registered)?;
                }
                Ok(a)
            }
        }
    }

    /// Hosting mode: at most `limit` distinct devices per realm. A device already registered
    /// may always refresh (the Node check let `limit + 2` through and then counted the
    /// refreshing device against itself).
    fn check_device_limit(&self, ctx: &Ctx<'_>, account: &Account, already_registered: bool) -> Result<(), Reply> {
        let limit = self.mysql("reading the account's capacities", |conn| accounts::device_limit(conn, account))?;
        let max_devices = || {
            let mut r = Reply::new(503);
            r.reason = Some(MAX_DEVICES_PHRASE);
            r
        };
        if limit == 0 {
            self.raise_alert(&Alert::AccountDeviceLimit { account_sid: account.account_sid.clone(), count: 0 });
            return Err(max_devices());
        }
        if already_registered {
            return Ok(());
        }
        let realm = ctx.aor.realm();
        let counted = self.devices.count(&self.redis, realm, ctx.aor.user_part(), unix_millis());
        let count = self.store_outcome(&self.redis_health, "counting the realm's devices", counted)?;
        if !count.includes_user && count.devices as u64 >= limit {
            info!(
                "registrar: device limit reached aor={} account_sid={} devices={} limit={limit}",
                ctx.aor_key, account.account_sid, count.devices
            );
            self.raise_alert(&Alert::AccountDeviceLimit { account_sid: account.account_sid.clone(), count: limit });
            return Err(max_devices());
        }
        Ok(())
    }

    /// digestChallenge: no Authorization → `401` with a fresh nonce; incomplete credentials →
    /// `400`; a nonce we did not issue → fresh `401`; an expired one → `401` `stale=true`.
    /// All of this before any webhook call.
    fn check_challenge(&self, ctx: &Ctx<'_>) -> Result<DigestCredentials, Reply> {
        let realm = ctx.aor.realm();
        let challenge = |stale: bool| {
            Reply::new(401).header("WWW-Authenticate", www_authenticate(realm, &self.nonces.issue(realm), stale))
        };
        let Some(header) = ctx.req.message.header("Authorization") else {
            return Err(challenge(false));
        };
        let credentials = parse_authorization(header).and_then(|c| c.require_complete().map(|_| c)).map_err(|e| {
            info!("registrar: malformed Authorization aor={} source={}: {e}", ctx.aor_key, ctx.proxy);
            Reply::new(400)
        })?;
        match self.nonces.check(realm, credentials.nonce.as_deref().unwrap_or("")) {
            NonceCheck::Valid => Ok(credentials),
            NonceCheck::Stale => {
                debug!("registrar: stale nonce aor={} source={}", ctx.aor_key, ctx.proxy);
                Err(challenge(true))
            }
            NonceCheck::Forged => {
                info!("registrar: nonce not issued by us aor={} source={}", ctx.aor_key, ctx.proxy);
                Err(challenge(false))
            }
        }
    }

    /// The account's webhook if it has one, else the `clients` table; a denial is `403`.
    fn authenticate(&self, ctx: &Ctx<'_>, account: &Account, credentials: &DigestCredentials) -> Result<Grant, Reply> {
        let verdict = match &account.hook {
            Some(hook) => self.webhook_auth(ctx, account, hook, credentials)?,
            None => {
                let started = Instant::now();
                let verdict = self.clients_auth(account, credentials)?;
                self.metrics.hook_response_time(verdict.status(), started.elapsed());
                verdict
            }
        };
        match verdict {
            AuthVerdict::Granted(grant) => Ok(grant),
            AuthVerdict::Denied(denial) => {
                info!(
                    "registrar: authentication failed aor={} username={} source={} blacklist={}",
                    ctx.aor_key,
                    credentials.username.as_deref().unwrap_or(""),
                    ctx.proxy,
                    denial.blacklist
                );
                Err(self.denied(ctx, denial))
            }
        }
    }

    fn denied(&self, ctx: &Ctx<'_>, denial: Denial) -> Reply {
        let x_reason = if denial.blacklist {
            format!("detected potential spammer from {}:{}", ctx.req.meta.address, ctx.req.meta.port)
        } else {
            INVALID_CREDENTIALS_REASON.to_string()
        };
        let mut reply = Reply::with_reason(403, &x_reason);
        reply.headers.extend(denial.headers);
        reply
    }

    fn webhook_auth(
        &self,
        ctx: &Ctx<'_>,
        account: &Account,
        hook: &RegistrationHook,
        credentials: &DigestCredentials,
    ) -> Result<AuthVerdict, Reply> {
        let started = Instant::now();
        if let Admission::Refuse { retry_after } = self.hook_breaker.admit(&account.account_sid, started) {
            debug!(
                "registrar: webhook of account_sid={} not called after repeated timeouts aor={}: 503",
                account.account_sid, ctx.aor_key
            );
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            return Err(Reply::unavailable(u32::try_from(secs.max(1)).unwrap_or(u32::MAX)));
        }
        let meta = &ctx.req.meta;
        let data =
            webhook::payload(&meta.address, meta.port, &ctx.req.message, hook.method, ctx.reg.expires, credentials);
        let request = webhook::build_request(hook, account.webhook_secret.as_deref(), &data, unix_secs());
        let result = self.hook.send(&request).and_then(|response| webhook::interpret(&response));
        let timed_out = matches!(result, Err(HookError::Timeout));
        match self.hook_breaker.record(&account.account_sid, timed_out, Instant::now()) {
            Transition::Opened => warn!(
                "registrar: registration webhook of account_sid={} url={} timed out {} times in a row; \
                 its REGISTERs get 503 without calling it for {} s, then one is tried",
                account.account_sid,
                webhook::url_for_logs(&hook.url),
                self.settings.webhook_breaker.threshold,
                self.settings.webhook_breaker.cooldown.as_secs_f32()
            ),
            Transition::Closed => info!(
                "registrar: registration webhook of account_sid={} answers again; calling it for every REGISTER",
                account.account_sid
            ),
            Transition::StillOpen | Transition::None => {}
        }
        // `app.hook.response_time` is only measured for answers the webhook gave with HTTP 200.
        if let Ok(verdict) = &result {
            self.metrics.hook_response_time(verdict.status(), started.elapsed());
            if self.hook_health.succeeded(&account.account_sid) {
                info!(
                    "registrar: registration webhook of account_sid={} answers again url={}",
                    account.account_sid,
                    webhook::url_for_logs(&hook.url)
                );
            }
        }
        debug!(
            "registrar: webhook answered account_sid={} ok={} elapsed_ms={}",
            account.account_sid,
            result.is_ok(),
            started.elapsed().as_millis()
        );
        result.map_err(|e| {
            // Once per change: a dead webhook fails every REGISTER of the account.
            if self.hook_health.failed(&account.account_sid) {
                warn!(
                    "registrar: registration webhook failing account_sid={} url={} aor={}: {e}",
                    account.account_sid,
                    webhook::url_for_logs(&hook.url),
                    ctx.aor_key
                );
            } else {
                debug!(
                    "registrar: registration webhook still failing account_sid={} aor={}: {e}",
                    account.account_sid, ctx.aor_key
                );
            }
            match &e {
                HookError::Status(status) => self.raise_alert(&Alert::WebhookFailure {
                    account_sid: account.account_sid.clone(),
                    url: hook.url.clone(),
                    status: *status,
                }),
                e if e.is_connection_failure() => self.raise_alert(&Alert::WebhookConnectionFailure {
                    account_sid: account.account_sid.clone(),
                    url: hook.url.clone(),
                }),
                _ => {}
            }
            Reply::new(e.sip_status())
        })
    }

    fn clients_auth(&self, account: &Account, credentials: &DigestCredentials) -> Result<AuthVerdict, Reply> {
        let username = credentials.username.as_deref().unwrap_or("");
        let row = self.mysql("looking up the client", |conn| accounts::client(conn, &account.account_sid, username))?;
        clients::authenticate(row.as_ref(), credentials, &self.password_key).map_err(|e| {
            error!("registrar: account_sid={} username={username}: {e}", account.account_sid);
            Reply::internal_error()
        })
    }

    /// Stores the binding for the granted interval and answers 200. UDP devices are told 30 s
    /// when the grant is longer (every UDP client is assumed to be behind NAT); Redis keeps
    /// the full grant. If the binding cannot be stored the device is told so (500/503).
    fn register(&self, ctx: &Ctx<'_>, grant: &Grant) -> Result<Reply, Reply> {
        let granted = grant.granted_expires(ctx.reg.expires);
        let over_udp = ctx.req.meta.protocol.eq_ignore_ascii_case("udp");
        let response_expires = if over_udp && granted > NAT_EXPIRES { NAT_EXPIRES } else { granted };
        let expiry_time_ms = unix_millis() + u64::from(granted) * 1000;
        let binding = NewBinding {
            contact: ctx.reg.contact_uri.as_deref(),
            sbc_address: &ctx.req.server_hostport,
            private_sbc_address: ctx
                .req
                .private_sip_address
                .as_deref()
                .or(self.settings.private_sbc_address.as_deref()),
            protocol: bindings::via_protocol(&ctx.req.message),
            proxy: &ctx.proxy,
            grant,
        };
        let json = bindings::binding_json(&binding, expiry_time_ms);
        self.redis("storing the registration", |conn| {
            bindings::add(conn, &ctx.aor_key, granted, &json, expiry_time_ms)
        })?;
        if self.settings.hosting {
            self.devices.note_registered(ctx.aor.realm(), ctx.aor.user_part());
        }
        debug!("registrar: registered aor={} source={} granted={granted}", ctx.aor_key, ctx.proxy);
        Ok(Reply::new(200)
            .header("Contact", replace_first_expires(&ctx.reg.raw_contact, response_expires))
            .header("Expires", response_expires.to_string()))
    }

    fn unregister(&self, ctx: &Ctx<'_>) -> Result<Reply, Reply> {
        self.redis("removing the registration", |conn| bindings::remove(conn, &ctx.aor_key))?;
        debug!("registrar: unregistered aor={} source={}", ctx.aor_key, ctx.proxy);
        Ok(Reply::new(200).header("Contact", ctx.reg.raw_contact.clone()).header("Expires", "0"))
    }

    /// Runs a Redis operation on a pooled connection.
    fn redis<T>(&self, what: &str, op: impl FnMut(&mut RedisConn) -> Result<T, StoreError>) -> Result<T, Reply> {
        if !self.redis_health.admit() {
            return Err(Reply::unavailable(self.settings.retry_after_secs));
        }
        let result = redis_store::run(&self.redis, op);
        self.store_outcome(&self.redis_health, what, result)
    }

    /// Runs MySQL statements on a pooled connection.
    fn mysql<T>(&self, what: &str, op: impl FnOnce(&mut PooledConn) -> Result<T, StoreError>) -> Result<T, Reply> {
        if !self.mysql_health.admit() {
            return Err(Reply::unavailable(self.settings.retry_after_secs));
        }
        let result = self.mysql.conn().and_then(|mut conn| op(&mut conn));
        self.store_outcome(&self.mysql_health, what, result)
    }

    /// Unreachable store → `503` with `Retry-After` (come back soon, or use another SBC);
    /// a failed command or unreadable data → `500`.
    fn store_outcome<T>(&self, health: &StoreHealth, what: &str, result: Result<T, StoreError>) -> Result<T, Reply> {
        match result {
            Ok(v) => {
                health.succeeded();
                Ok(v)
            }
            Err(e) if e.is_unavailable() => {
                health.failed(what, &e);
                Err(Reply::unavailable(self.settings.retry_after_secs))
            }
            Err(e) => {
                error!("registrar: {what}: {e}");
                Err(Reply::internal_error())
            }
        }
    }
}
