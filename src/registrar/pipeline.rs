//! The REGISTER pipeline of spec 4.1, in one pass.
//!
//! The triage thread runs [`Registrar::triage`]: every check that needs no authentication
//! call — source ban, Request-URI, Contact and expires, address of record, cache window,
//! account and device limit, challenge, the form of the Authorization, nonce, digest `uri`,
//! identity — and answers whatever ends there. A request that passes them all becomes a
//! [`Checked`] request: owned, parsed once, with its account. An auth worker then runs
//! [`Registrar::complete`]: one-time use of the nonce, the webhook or `clients` table, and
//! the binding. Each step returns `Result<_, Reply>`; the first final response stops the
//! chain.

use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use log::{debug, error, info, warn};
use mysql::PooledConn;

use super::accounts::{self, Account};
use super::alerts;
use super::bindings::{self, NewBinding, StoredBinding};
use super::clients;
use super::credentials::{self, FormProblem, NonceUse};
use super::grant::{AuthVerdict, Denial, Grant};
use super::health::StoreHealth;
use super::hook_breaker::{Admission, Transition};
use super::nonce::NonceCheck;
use super::replay;
use super::reply::Reply;
use super::request::{self, Aor, Kind, Registration};
use super::webhook::{self, HookError, RegistrationHook};
use super::{unix_millis, unix_secs, Registrar};
use crate::drachtio::IncomingRequest;
use crate::sip::digest::DigestCredentials;
use crate::sip::{parse_authorization, replace_first_expires, www_authenticate, SipError};
use crate::store::redis::{self as redis_store, RedisConn};
use crate::store::StoreError;
use crate::telemetry::Alert;

/// The cache window and the interval UDP clients are told (the Node `NAT_EXPIRES`).
const NAT_EXPIRES: u32 = 30;
const NAT_EXPIRES_MS: u64 = NAT_EXPIRES as u64 * 1000;

pub const DEACTIVATED_REASON: &str = "Account has been deactivated";
pub const UNKNOWN_REALM_REASON: &str = "Unknown or invalid realm";
pub const INVALID_CREDENTIALS_REASON: &str = "Invalid credentials";
pub const MAX_DEVICES_PHRASE: &str = "Max Devices Registered";
/// `X-Reason` of the `403` sent to a source banned after repeated failed authentications.
pub const BANNED_REASON: &str = "Too many failed authentications";

/// Whole seconds from `now_ms` to the stored `expiryTime` (a float in the JSON), at least the
/// cache window (a binding is only answered from the cache when it has more left).
fn remaining_secs(expiry_time_ms: f64, now_ms: u64) -> u32 {
    let secs = ((expiry_time_ms - now_ms as f64) / 1000.0).floor();
    if secs.is_finite() {
        (secs.clamp(f64::from(NAT_EXPIRES), f64::from(u32::MAX))) as u32
    } else {
        NAT_EXPIRES
    }
}

/// The source address drachtio reported, when it parses (`[…]` around IPv6 allowed).
fn source_ip(req: &IncomingRequest) -> Option<IpAddr> {
    req.meta.address.trim_matches(['[', ']']).parse().ok()
}

/// What [`Registrar::triage`] did with a request.
// Returned once per request and moved on at once; boxing the request would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Triage {
    /// Answered (or refused) without an authentication call.
    Answered,
    /// Its credentials must be checked by the webhook or against the `clients` table: for an
    /// auth worker's [`Registrar::complete`].
    NeedsAuthentication(Checked),
}

/// A REGISTER that passed every check of the triage thread, with what it found out: all an
/// auth worker needs to authenticate, store and answer it.
pub struct Checked {
    req: IncomingRequest,
    ctx: Ctx,
    account: Account,
    credentials: DigestCredentials,
    nonce_use: NonceUse,
    /// The batch read already recorded this answer's nonce use as its first.
    claimed: bool,
    /// When the triage thread took the request (response-time metrics cover the whole path).
    started: Instant,
}

/// What the triage thread read from Redis for one request of a batch (see
/// [`Registrar::prefetch`]). The default means "nothing read": the request reads on its own.
#[derive(Debug, Clone, Default)]
pub struct Prefetched {
    /// `Some(binding)` when the stored binding was read.
    binding: Option<Option<StoredBinding>>,
    /// The claim of the request's nonce use, when it had one to claim.
    claim: Option<Claim>,
}

#[derive(Debug, Clone)]
struct Claim {
    key: String,
    /// `SET NX` created the key: nobody used this answer before.
    first_use: bool,
}

/// An Authorization that answers our challenge as it must, by its credentials.
struct Answer {
    credentials: DigestCredentials,
    nonce_use: NonceUse,
    /// Its nonce use was claimed by the batch read.
    claimed: bool,
}

impl Checked {
    pub fn request(&self) -> &IncomingRequest {
        &self.req
    }

    /// The request alone, to be answered without authentication (`503` when no worker can
    /// take it).
    pub fn into_request(self) -> IncomingRequest {
        self.req
    }
}

/// The request facts every step needs, computed once.
struct Ctx {
    reg: Registration,
    aor: Aor,
    aor_key: String,
    /// `sip:<source ip>:<source port>`.
    proxy: String,
    /// The source address, when drachtio gave a parseable one (for bans).
    source_ip: Option<IpAddr>,
    /// Arrived over UDP: the device is assumed to be behind NAT and told 30 s.
    over_udp: bool,
}

impl Registrar {
    /// The whole pipeline in the calling thread: [`triage`](Self::triage), then
    /// [`complete`](Self::complete) if the request needs authentication. For requests that
    /// cannot go to an auth worker (none left at shutdown), and for tests.
    pub fn handle(&self, req: IncomingRequest) {
        if let Triage::NeedsAuthentication(checked) = self.triage(req, Prefetched::default()) {
            self.complete(checked);
        }
    }

    /// Runs every check that needs no authentication call and answers the request if it ends
    /// there (cache window, challenge, rejections). `prefetched` is the stored binding when
    /// [`prefetch`](Self::prefetch) already read it. A panic (a bug) still answers `500`, so
    /// the device is not left retransmitting into the void.
    pub fn triage(&self, req: IncomingRequest, prefetched: Prefetched) -> Triage {
        let started = Instant::now();
        let reply = match panic::catch_unwind(AssertUnwindSafe(|| self.check(&req, prefetched))) {
            Ok(Ok((ctx, account, answer))) => {
                let Answer { credentials, nonce_use, claimed } = answer;
                return Triage::NeedsAuthentication(Checked {
                    req,
                    ctx,
                    account,
                    credentials,
                    nonce_use,
                    claimed,
                    started,
                });
            }
            Ok(Err(reply)) => reply,
            Err(_) => self.internal_error(&req),
        };
        self.answer(req, reply, started);
        Triage::Answered
    }

    /// Authenticates a checked request (webhook or `clients` table), stores or removes its
    /// binding and sends the one final response.
    pub fn complete(&self, checked: Checked) {
        let reply = match panic::catch_unwind(AssertUnwindSafe(|| self.authenticate_and_store(&checked))) {
            Ok(Ok(reply)) | Ok(Err(reply)) => reply,
            Err(_) => self.internal_error(&checked.req),
        };
        self.answer(checked.req, reply, checked.started);
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

    /// Reads what a batch of queued requests needs from Redis in one round trip: the bindings
    /// of those that will consult the cache window (one `MGET`), and a claim of the nonce use
    /// of each that answers a challenge of ours (`SET … NX`, see `replay.rs`). A request gets
    /// [`Prefetched::default`] (it then reads, and claims, on its own) when it has nothing to
    /// read, and all of them do when Redis did not answer (Redis is then marked down, and each
    /// of them gets its 503 at once: see `StoreHealth`).
    pub fn prefetch(&self, reqs: &[IncomingRequest]) -> Vec<Prefetched> {
        // A banned source is refused before anything is read for it (or claimed: a guesser
        // must not create keys in Redis while banned).
        let now = Instant::now();
        let banned: Vec<bool> =
            reqs.iter().map(|req| source_ip(req).is_some_and(|ip| self.bans.banned(ip, now).is_some())).collect();
        let aors: Vec<Option<String>> = reqs
            .iter()
            .zip(&banned)
            .map(|(req, banned)| {
                (!banned).then_some(())?;
                request::check_request_uri(&req.message).ok()?;
                let reg = request::parse_registration(&req.message).ok()?;
                (reg.kind == Kind::Register).then_some(())?;
                Some(request::parse_aor(&req.message).ok()?.key())
            })
            .collect();
        let claims: Vec<Option<String>> = reqs
            .iter()
            .zip(&banned)
            .map(|(req, banned)| if *banned { None } else { self.replay_key_of(req) })
            .collect();
        let keys: Vec<&str> = aors.iter().flatten().map(String::as_str).collect();
        let user_keys: Vec<String> = keys.iter().map(|aor| bindings::user_key(aor)).collect();
        let claim_keys: Vec<String> = claims.iter().flatten().cloned().collect();
        let nothing = || reqs.iter().map(|_| Prefetched::default()).collect();
        if (user_keys.is_empty() && claim_keys.is_empty()) || !self.redis_health.admit() {
            return nothing();
        }
        let ttl = self.one_time_ttl();
        let (texts, claimed) =
            match redis_store::run(&self.redis, |conn| replay::read_and_claim(conn, &user_keys, &claim_keys, ttl)) {
                Ok(found) => {
                    self.redis_health.succeeded();
                    found
                }
                Err(e) => {
                    // One wait for the whole batch: the requests then get their 503 at once.
                    if e.is_unavailable() {
                        self.redis_health.failed("reading registrations", &e);
                    }
                    return nothing();
                }
            };
        let mut found = bindings::parse_many(&keys, texts).into_iter();
        let mut claimed = claimed.into_iter();
        aors.iter()
            .zip(claims)
            .map(|(aor, claim)| Prefetched {
                binding: aor.as_ref().map(|_| found.next().flatten()),
                claim: claim.map(|key| Claim { first_use: claimed.next().unwrap_or(false), key }),
            })
            .collect()
    }

    /// The one-time key of the request's answer to our challenge, when it is one: a complete
    /// digest answer of the right form whose nonce we issued for the To realm (nothing else
    /// may create a key in Redis).
    fn replay_key_of(&self, req: &IncomingRequest) -> Option<String> {
        let credentials = parse_authorization(req.message.header("Authorization")?).ok()?;
        credentials.require_complete().ok()?;
        let nonce_use = credentials::check_form(&credentials).ok()?;
        let aor = request::parse_aor(&req.message).ok()?;
        let nonce = credentials.nonce.as_deref()?;
        (self.nonces.check(aor.realm(), nonce) == NonceCheck::Valid).then(|| replay::key(nonce, &nonce_use))
    }

    /// How long a one-time record is kept: as long as its nonce can be valid.
    fn one_time_ttl(&self) -> u64 {
        self.settings.nonce_ttl.as_secs().saturating_add(super::nonce::FUTURE_SKEW_SECS)
    }

    /// The triage thread's part, in spec order.
    fn check(&self, req: &IncomingRequest, prefetched: Prefetched) -> Result<(Ctx, Account, Answer), Reply> {
        let source_ip = source_ip(req);
        if let Some(ban) = source_ip.and_then(|ip| self.bans.banned(ip, Instant::now())) {
            debug!("registrar: REGISTER from banned source={} ({} s left): 403", ban.ip, ban.remaining.as_secs());
            return Err(Reply::with_reason(403, BANNED_REASON));
        }
        // rejectIpv4, regParser, then the AOR half of checkCache.
        request::check_request_uri(&req.message)?;
        let reg = request::parse_registration(&req.message)?;
        let aor = request::parse_aor(&req.message)?;
        let ctx = Ctx {
            aor_key: aor.key(),
            proxy: bindings::proxy_uri(&req.meta.address, req.meta.port),
            reg,
            aor,
            source_ip,
            over_udp: req.meta.protocol.eq_ignore_ascii_case("udp"),
        };

        let existing = match ctx.reg.kind {
            Kind::Register => self.check_cache(&ctx, prefetched.binding)?,
            Kind::Unregister => None,
        };
        let account = self.check_account(&ctx, existing.is_some())?;
        let answer = self.check_challenge(req, &ctx, &account, prefetched.claim)?;
        Ok((ctx, account, answer))
    }

    /// An auth worker's part: the credentials proven once, then the binding.
    fn authenticate_and_store(&self, c: &Checked) -> Result<Reply, Reply> {
        let grant = self.authenticate(c)?;
        match c.ctx.reg.kind {
            Kind::Register => self.register(&c.req, &c.ctx, &grant),
            Kind::Unregister => self.unregister(&c.ctx),
        }
    }

    /// checkCache: a device re-registering from the same ip:port while its binding has more
    /// than 30 s left is answered at once, without webhook or Redis write. A UDP device is
    /// told `Expires: 30` (it is assumed to be behind NAT); a TCP, TLS or WebSocket one is told
    /// the seconds its binding really has left (spec 14.13: the Node sidecar said 30 to
    /// everyone, so connection-oriented clients refreshed every 30 s for nothing). Returns the
    /// stored binding otherwise (the device-limit check uses it).
    fn check_cache(
        &self,
        ctx: &Ctx,
        prefetched: Option<Option<StoredBinding>>,
    ) -> Result<Option<StoredBinding>, Reply> {
        let stored = match prefetched {
            Some(stored) => stored,
            None => self.redis("reading the registration", |conn| bindings::query(conn, &ctx.aor_key))?,
        };
        if let Some(b) = &stored {
            let now = unix_millis();
            let window_end = (now + NAT_EXPIRES_MS) as f64;
            let expiry = b.expiry_time_ms.filter(|t| window_end < *t);
            if let (true, Some(expiry)) = (b.proxy.as_deref() == Some(ctx.proxy.as_str()), expiry) {
                let told = if ctx.over_udp { NAT_EXPIRES } else { remaining_secs(expiry, now) };
                debug!("registrar: cached answer aor={} source={} expires={told}", ctx.aor_key, ctx.proxy);
                let mut reply = Reply::new(200)
                    .header("Contact", replace_first_expires(&ctx.reg.raw_contact, told))
                    .header("Expires", told.to_string());
                reply.cached = true;
                return Err(reply);
            }
        }
        Ok(stored)
    }

    /// The account of a realm, from the cache or MySQL.
    fn account_of(&self, realm: &str) -> Result<Option<Account>, Reply> {
        if let Some(cached) = self.accounts.get(realm) {
            return Ok(cached);
        }
        let found =
            self.mysql("looking up the account of the realm", |conn| accounts::account_by_realm(conn, realm))?;
        self.accounts.put(realm, found.clone());
        Ok(found)
    }

    /// checkAccountLimits and the realm half of digestChallenge: the account of the realm
    /// must exist and be active; in hosting mode a new device must fit the account's limit.
    fn check_account(&self, ctx: &Ctx, already_registered: bool) -> Result<Account, Reply> {
        match self.account_of(ctx.aor.realm())? {
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

    /// The account's device limit, from the cache or MySQL.
    fn device_limit(&self, account: &Account) -> Result<u64, Reply> {
        if let Some(limit) = self.limits.get(&account.account_sid) {
            return Ok(limit);
        }
        let limit = self.mysql("reading the account's capacities", |conn| accounts::device_limit(conn, account))?;
        self.limits.put(&account.account_sid, limit);
        Ok(limit)
    }

    /// Hosting mode: at most `limit` distinct devices per account — its realm and the
    /// sub-domains that fall back to it together. A device already registered may always
    /// refresh (the Node check let `limit + 2` through and then counted the refreshing device
    /// against itself).
    fn check_device_limit(&self, ctx: &Ctx, account: &Account, already_registered: bool) -> Result<(), Reply> {
        let limit = self.device_limit(account)?;
        let max_devices = || {
            let mut r = Reply::new(503);
            r.reason = Some(MAX_DEVICES_PHRASE);
            r
        };
        if limit == 0 {
            self.raise_device_limit_alert(account, 0);
            return Err(max_devices());
        }
        if already_registered {
            return Ok(());
        }
        let asking = (ctx.aor.realm(), ctx.aor.user_part());
        let counted = self.devices.count_under(&self.redis, &account.sip_realm, asking, unix_millis());
        let realms = self.store_outcome(&self.redis_health, "counting the account's devices", counted)?;
        let mut devices = 0usize;
        let mut includes_user = false;
        for (i, realm) in realms.iter().enumerate() {
            // The first is the account's own realm; a sub-domain counts when it has no
            // account of its own.
            let belongs =
                i == 0 || self.account_of(&realm.realm)?.is_some_and(|owner| owner.account_sid == account.account_sid);
            if belongs {
                devices += realm.devices;
                includes_user |= realm.includes_user;
            }
        }
        if !includes_user && devices as u64 >= limit {
            info!(
                "registrar: device limit reached aor={} account_sid={} devices={devices} limit={limit}",
                ctx.aor_key, account.account_sid
            );
            self.raise_device_limit_alert(account, limit);
            return Err(max_devices());
        }
        Ok(())
    }

    fn challenge(&self, realm: &str, stale: bool) -> Reply {
        Reply::new(401).header("WWW-Authenticate", www_authenticate(realm, &self.nonces.issue(realm), stale))
    }

    /// digestChallenge, and what the Authorization must say before anyone checks its
    /// response: no Authorization → `401` with a fresh nonce; incomplete credentials → `400`;
    /// an algorithm other than MD5 → `400`; no `qop=auth` with `nc` and `cnonce` → `401`; a
    /// nonce we did not issue → fresh `401`; an expired one → `401` `stale=true`; a digest
    /// `uri` other than the Request-URI → `400`; the credentials of another identity than the
    /// To URI → `403`. All of this before any webhook call.
    fn check_challenge(
        &self,
        req: &IncomingRequest,
        ctx: &Ctx,
        account: &Account,
        claim: Option<Claim>,
    ) -> Result<Answer, Reply> {
        let realm = ctx.aor.realm();
        let Some(header) = req.message.header("Authorization") else {
            return Err(self.challenge(realm, false));
        };
        let credentials = parse_authorization(header).and_then(|c| c.require_complete().map(|_| c)).map_err(|e| {
            // Never the value: a `Basic` header is a password in base64.
            let what = match e {
                SipError::MissingCredential(field) => format!("no {field}"),
                _ => "not a digest answer".to_string(),
            };
            info!("registrar: malformed Authorization aor={} source={}: {what}", ctx.aor_key, ctx.proxy);
            Reply::new(400)
        })?;
        let nonce_use = credentials::check_form(&credentials).map_err(|problem| match problem {
            FormProblem::UnsupportedAlgorithm => {
                info!("registrar: digest algorithm not offered aor={} source={}: 400", ctx.aor_key, ctx.proxy);
                Reply::with_reason(400, credentials::UNSUPPORTED_ALGORITHM_REASON)
            }
            FormProblem::NoQopAuth => {
                info!(
                    "registrar: Authorization without qop=auth, nc and cnonce aor={} source={}: challenged again",
                    ctx.aor_key, ctx.proxy
                );
                self.challenge(realm, false)
            }
        })?;
        match self.nonces.check(realm, credentials.nonce.as_deref().unwrap_or("")) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => {
                debug!("registrar: stale nonce aor={} source={}", ctx.aor_key, ctx.proxy);
                return Err(self.challenge(realm, true));
            }
            NonceCheck::Forged => {
                info!("registrar: nonce not issued by us aor={} source={}", ctx.aor_key, ctx.proxy);
                self.authentication_failed(ctx, "forged nonce");
                return Err(self.challenge(realm, false));
            }
        }
        let request_uri = req.message.request_uri().unwrap_or("");
        if !credentials::uri_matches(credentials.uri.as_deref().unwrap_or(""), request_uri) {
            info!("registrar: digest uri is not the Request-URI aor={} source={}: 400", ctx.aor_key, ctx.proxy);
            return Err(Reply::with_reason(400, credentials::URI_MISMATCH_REASON));
        }
        let check_identity = account.hook.is_none() || self.settings.webhook_aor_check;
        if check_identity && !credentials::identity_matches(&credentials, &ctx.aor) {
            info!(
                "registrar: Authorization of username={} realm={} for another address of record aor={} source={}: 403",
                credentials.username.as_deref().unwrap_or(""),
                credentials.realm.as_deref().unwrap_or(""),
                ctx.aor_key,
                ctx.proxy
            );
            self.authentication_failed(ctx, "credentials of another address of record");
            return Err(Reply::with_reason(403, credentials::AOR_MISMATCH_REASON));
        }
        // The batch read claimed this answer's nonce use (see `prefetch`): a replay stops here.
        let claimed = claim.filter(|c| c.key == replay::key(credentials.nonce.as_deref().unwrap_or(""), &nonce_use));
        if claimed.as_ref().is_some_and(|c| !c.first_use) {
            return Err(self.replayed(ctx));
        }
        Ok(Answer { credentials, nonce_use, claimed: claimed.is_some() })
    }

    /// Records the answer to a challenge as used, cluster-wide, unless the batch read did
    /// already; a second use of the same nonce, `nc` and `cnonce` is a replay and gets a fresh
    /// `401`.
    fn claim_nonce(&self, c: &Checked) -> Result<(), Reply> {
        if c.claimed {
            return Ok(());
        }
        let nonce = c.credentials.nonce.as_deref().unwrap_or("");
        let key = replay::key(nonce, &c.nonce_use);
        let ttl = self.one_time_ttl();
        if self.redis("recording the use of the nonce", |conn| replay::claim(conn, &key, ttl))? {
            return Ok(());
        }
        Err(self.replayed(&c.ctx))
    }

    fn replayed(&self, ctx: &Ctx) -> Reply {
        info!(
            "registrar: replayed Authorization (nonce, nc and cnonce already used) aor={} source={}: challenged again",
            ctx.aor_key, ctx.proxy
        );
        self.authentication_failed(ctx, "replayed Authorization");
        self.challenge(ctx.aor.realm(), false)
    }

    /// The one place where the registrar's alerts are emitted: a warn line, and a point for
    /// InfluxDB.
    pub fn raise_alert(&self, alert: Alert) {
        warn!("alert: {alert}");
        if let Some(sender) = &self.alerts {
            sender.send(alert);
        }
    }

    /// `account-device-limit`, at most once per account per
    /// [`super::alerts::DEVICE_LIMIT_ALERT_INTERVAL`].
    fn raise_device_limit_alert(&self, account: &Account, limit: u64) {
        if self.device_limit_alerts.admit(&account.account_sid, Instant::now()) {
            self.raise_alert(Alert::account_device_limit(&account.account_sid, limit));
        }
    }

    /// Counts a failed authentication against the source; the failure that starts a ban is
    /// logged and alerted once.
    fn authentication_failed(&self, ctx: &Ctx, what: &str) {
        let Some(ip) = ctx.source_ip else { return };
        if let Some(ban) = self.bans.record_failure(ip, Instant::now()) {
            let settings = self.bans.settings();
            warn!(
                "registrar: source={ip} banned for {} s after {} failed authentications within {} s (last: {what}, aor={}); \
                 its REGISTERs get 403 without a webhook or MySQL call",
                ban.remaining.as_secs(),
                ban.failures,
                settings.window.as_secs(),
                ctx.aor_key
            );
            self.raise_alert(Alert::registration_source_banned(
                ip,
                ban.failures,
                settings.window.as_secs(),
                ban.remaining.as_secs(),
            ));
        }
    }

    /// The account's webhook if it has one, else the `clients` table; a denial is `403`.
    /// The nonce use is claimed before the webhook call (a replay never reaches the
    /// customer) — by the batch read as a rule — and at the latest after a `clients` check that
    /// succeeded.
    fn authenticate(&self, c: &Checked) -> Result<Grant, Reply> {
        let (ctx, account, credentials) = (&c.ctx, &c.account, &c.credentials);
        let verdict = match &account.hook {
            Some(hook) => {
                self.claim_nonce(c)?;
                self.webhook_auth(&c.req, ctx, account, hook, credentials)?
            }
            None => {
                let started = Instant::now();
                let verdict = self.clients_auth(account, credentials)?;
                self.metrics.hook_response_time(verdict.status(), started.elapsed());
                if matches!(verdict, AuthVerdict::Granted(_)) {
                    self.claim_nonce(c)?;
                }
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
                self.authentication_failed(ctx, "invalid credentials");
                Err(self.denied(&c.req, denial))
            }
        }
    }

    fn denied(&self, req: &IncomingRequest, denial: Denial) -> Reply {
        let x_reason = if denial.blacklist {
            format!("detected potential spammer from {}:{}", req.meta.address, req.meta.port)
        } else {
            INVALID_CREDENTIALS_REASON.to_string()
        };
        let mut reply = Reply::with_reason(403, &x_reason);
        reply.headers.extend(denial.headers);
        reply
    }

    fn webhook_auth(
        &self,
        req: &IncomingRequest,
        ctx: &Ctx,
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
        let meta = &req.meta;
        let data = webhook::payload(&meta.address, meta.port, &req.message, hook.method, ctx.reg.expires, credentials);
        let request = webhook::build_request(hook, account.webhook_secret.as_deref(), &data, unix_secs());
        let result = self.hook.send(&request).and_then(|response| webhook::interpret(&response));
        let timed_out = matches!(result, Err(HookError::Timeout));
        match self.hook_breaker.record(&account.account_sid, timed_out, started, Instant::now()) {
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
                HookError::Status(status) => {
                    self.raise_alert(alerts::webhook_failure(&account.account_sid, &hook.url, *status))
                }
                e if e.is_connection_failure() => {
                    self.raise_alert(alerts::webhook_connection_failure(&account.account_sid, &hook.url))
                }
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
    fn register(&self, req: &IncomingRequest, ctx: &Ctx, grant: &Grant) -> Result<Reply, Reply> {
        let granted = grant.granted_expires(ctx.reg.expires);
        let response_expires = if ctx.over_udp && granted > NAT_EXPIRES { NAT_EXPIRES } else { granted };
        let expiry_time_ms = unix_millis() + u64::from(granted) * 1000;
        let binding = NewBinding {
            contact: ctx.reg.contact_uri.as_deref(),
            sbc_address: &req.server_hostport,
            private_sbc_address: req.private_sip_address.as_deref().or(self.settings.private_sbc_address.as_deref()),
            protocol: bindings::via_protocol(&req.message),
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

    fn unregister(&self, ctx: &Ctx) -> Result<Reply, Reply> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remaining_grant_is_whole_seconds_and_never_below_the_cache_window() {
        assert_eq!(remaining_secs(1_000_000.0 + 3_599_400.0, 1_000_000), 3599);
        assert_eq!(remaining_secs(1_000_000.0 + 31_000.0, 1_000_000), 31);
        assert_eq!(remaining_secs(1_000_000.0 + 10_000.0, 1_000_000), NAT_EXPIRES);
        assert_eq!(remaining_secs(f64::INFINITY, 1), NAT_EXPIRES);
        assert_eq!(remaining_secs(f64::NAN, 1), NAT_EXPIRES);
        assert_eq!(remaining_secs(1e300, 1), u32::MAX);
    }
}
