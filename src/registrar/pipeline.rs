//! The REGISTER pipeline of spec 4.1, in one pass.
//!
//! The triage thread runs [`Registrar::triage`]: every check that needs no authentication
//! call — source ban, Request-URI, Contact and expires, address of record, cache window,
//! account and device limit, challenge, the form of the Authorization, nonce, digest `uri`,
//! identity — and answers whatever ends there. A request that passes them all becomes a
//! [`Checked`] request: owned, parsed once, with its account. An auth worker then runs
//! [`Registrar::complete`] (`complete.rs`): one-time use of the nonce, the webhook or
//! `clients` table, and the binding. This file also holds the batch read
//! ([`Registrar::prefetch`]) and the store helpers both steps use. Each step returns `Result<_, Reply>`; the first final response stops the
//! chain.

use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use log::{debug, error, info, warn};
use mysql::PooledConn;

use super::accounts::{self, Account};
use super::bindings::{self, StoredBinding};
use super::credentials::{self, FormProblem, NonceUse};
use super::health::StoreHealth;
use super::nonce::NonceCheck;
use super::replay;
use super::reply::Reply;
use super::request::{self, Aor, Kind, Registration};
use super::{unix_millis, Registrar};
use crate::drachtio::IncomingRequest;
use crate::sip::digest::DigestCredentials;
use crate::sip::{parse_authorization, replace_first_expires, www_authenticate, SipError};
use crate::store::redis::{self as redis_store, RedisConn};
use crate::store::StoreError;
use crate::telemetry::Alert;

/// The cache window and the interval UDP clients are told (the Node `NAT_EXPIRES`).
pub(super) const NAT_EXPIRES: u32 = 30;
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
    pub(super) req: IncomingRequest,
    pub(super) ctx: Ctx,
    pub(super) account: Account,
    pub(super) credentials: DigestCredentials,
    pub(super) nonce_use: NonceUse,
    /// The batch read already recorded this answer's nonce use as its first.
    pub(super) claimed: bool,
    /// When the triage thread took the request (response-time metrics cover the whole path).
    pub(super) started: Instant,
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
pub(super) struct Ctx {
    pub(super) reg: Registration,
    pub(super) aor: Aor,
    pub(super) aor_key: String,
    /// `sip:<source ip>:<source port>`.
    pub(super) proxy: String,
    /// The source address, when drachtio gave a parseable one (for bans).
    pub(super) source_ip: Option<IpAddr>,
    /// Arrived over UDP: the device is assumed to be behind NAT and told 30 s.
    pub(super) over_udp: bool,
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

    /// A panic in the pipeline (a bug) still answers `500`, so the device is not left
    /// retransmitting into the void.
    pub(super) fn internal_error(&self, req: &IncomingRequest) -> Reply {
        error!(
            "registrar: internal error handling REGISTER source={}:{}; answering 500",
            req.meta.address, req.meta.port
        );
        Reply::internal_error()
    }

    pub(super) fn answer(&self, req: IncomingRequest, reply: Reply, started: Instant) {
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
                let reg = request::parse_registration(&req.message, self.settings.expires_bounds).ok()?;
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
    pub(super) fn one_time_ttl(&self) -> u64 {
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
        let reg = request::parse_registration(&req.message, self.settings.expires_bounds)?;
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

    pub(super) fn replayed(&self, ctx: &Ctx) -> Reply {
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
    pub(super) fn authentication_failed(&self, ctx: &Ctx, what: &str) {
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

    /// Runs a Redis operation on a pooled connection.
    pub(super) fn redis<T>(
        &self,
        what: &str,
        op: impl FnMut(&mut RedisConn) -> Result<T, StoreError>,
    ) -> Result<T, Reply> {
        if !self.redis_health.admit() {
            return Err(Reply::unavailable(self.settings.retry_after_secs));
        }
        let result = redis_store::run(&self.redis, op);
        self.store_outcome(&self.redis_health, what, result)
    }

    /// Runs MySQL statements on a pooled connection.
    pub(super) fn mysql<T>(
        &self,
        what: &str,
        op: impl FnOnce(&mut PooledConn) -> Result<T, StoreError>,
    ) -> Result<T, Reply> {
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
