//! The REGISTER pipeline of spec 4.1, in one pass per batch.
//!
//! The triage thread runs [`Registrar::triage_batch`] on the REGISTERs waiting in the queue:
//!
//! 1. **Local checks** of each request ([`Registrar::prepare`]), no Redis: source ban,
//!    Request-URI, Contact and expires, address of record, the account of the realm (cache or
//!    MySQL), and what the Authorization must say (`authorization.rs`). Each runs once; what
//!    they find is kept ([`Pending`]), not yet answered, and both the batch read and the
//!    decision use it.
//! 2. **One Redis round trip** for the whole batch ([`Registrar::read`]): the stored bindings of
//!    those that will consult the cache window (one `MGET`), and — pipelined with it — the claim
//!    of the one-time use of each answer that passed every local check (`SET … NX`, see
//!    `replay.rs`). A request refused by a local check creates no key.
//! 3. **The decision** ([`Registrar::decide`]), in spec order: the cache window, the ban, the
//!    account and its device limit, the Authorization, the replay. What needs its credentials
//!    proven becomes a [`Checked`] request for an auth worker (`complete.rs`): the webhook or
//!    the `clients` table, then the binding.
//!
//! Each step returns a [`Step`]: the first final response (`Break`) stops the chain.

use std::net::IpAddr;
use std::ops::ControlFlow::{Break, Continue};
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use log::{debug, error, warn, Level};
use mysql::PooledConn;

use super::account_cache::{Cached, NEW_REALM_LOOKUPS_PER_SEC};
use super::accounts::{self, Account};
use super::authorization::{source_ip, Answer, AnswerProblem};
use super::bindings::{self, StoredBinding};
use super::health::StoreHealth;
use super::replay;
use super::reply::{Reply, Step};
use super::request::{self, Aor, BindingRequest, Kind, REFUSALS};
use super::{unix_millis, Registrar};
use crate::drachtio::IncomingRequest;
use crate::sip::digest::DigestCredentials;
use crate::sip::replace_first_expires;
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

/// A REGISTER that passed every check of the triage thread, with what it found out: all an
/// auth worker needs to authenticate, store and answer it.
pub struct Checked {
    pub(super) req: IncomingRequest,
    pub(super) ctx: Ctx,
    pub(super) account: Account,
    pub(super) credentials: DigestCredentials,
    /// The key that records the one-time use of this answer (`replay.rs`).
    pub(super) one_time_key: String,
    /// The batch read claimed `one_time_key` (released again when the request ends in a 5xx,
    /// so that the phone's retry is not taken for a replay).
    pub(super) claimed: bool,
    /// When the triage thread took the request (response-time metrics cover the whole path).
    pub(super) started: Instant,
}

impl Checked {
    pub fn request(&self) -> &IncomingRequest {
        &self.req
    }

    /// The account whose share of the auth workers this request uses.
    pub fn account_sid(&self) -> &str {
        &self.account.account_sid
    }
}

/// The request facts every step needs, computed once.
pub(super) struct Ctx {
    pub(super) reg: BindingRequest,
    pub(super) aor: Aor,
    pub(super) aor_key: String,
    /// `sip:<source ip>:<source port>`.
    pub(super) proxy: String,
    /// The source address, when drachtio gave a parseable one (bans, nonces).
    pub(super) source_ip: Option<IpAddr>,
    /// Arrived over UDP: the device is assumed to be behind NAT and told 30 s.
    pub(super) over_udp: bool,
}

/// What the local checks found out about a request, waiting for the batch's Redis read.
pub(super) struct Pending {
    ctx: Ctx,
    found: Found,
}

/// What the local checks found beyond the request itself, in the form the decision takes it:
/// every check ran once, on the triage thread, and nothing is checked again later.
// `Usable` is the common case and `Found` lives in a boxed `Pending`: boxing it again would
// buy nothing.
#[allow(clippy::large_enum_variant)]
enum Found {
    /// The source is banned: only a refresh of its own binding from the cache window is
    /// answered (a real phone behind a banned address keeps its registration). The account is
    /// not looked up.
    Banned,
    /// The lookup of the realm's account gave the answer itself (`503`: too many new realms,
    /// or MySQL down).
    LookupAnswered(Reply),
    /// No account has the realm, or it is deactivated: refused once the cache window had its
    /// say.
    Unusable(Option<Account>),
    /// An active account, and what the local checks of the Authorization found.
    Usable { account: Account, answer: Result<Answer, AnswerProblem> },
}

impl Pending {
    /// The one-time key to claim with the read: only when every local check passed.
    fn claim_key(&self) -> Option<&str> {
        match &self.found {
            Found::Usable { answer: Ok(answer), .. } => Some(&answer.one_time_key),
            _ => None,
        }
    }
}

/// What the local checks decided.
pub(super) enum Prepared {
    /// Answered by them alone.
    Done(Reply),
    Pending(Box<Pending>),
}

/// What the batch read found for one request.
pub(super) struct ReadResult {
    binding: Prefetch,
    /// `Some(true)`: the claim created the key (first use); `Some(false)`: a replay; `None`: no
    /// claim was made (none to make, or Redis did not answer: the auth worker claims then).
    claimed: Option<bool>,
}

/// The stored binding, as far as the batch read got.
pub(super) enum Prefetch {
    /// Not read (nothing to read, or Redis did not answer): read on its own if needed.
    NotRead,
    Absent,
    Found(StoredBinding),
}

impl Registrar {
    /// The whole pipeline in the calling thread for one request: its triage, then its
    /// authentication if it needs one. For tests, and for requests no auth worker can take.
    pub fn handle(&self, req: IncomingRequest) {
        for checked in self.triage_batch(vec![req]) {
            self.complete(checked);
        }
    }

    /// Answers every request of `batch` that needs no authentication call (cache window,
    /// challenges, refusals) and returns the others, checked, for the auth workers. A panic
    /// (a bug) in any step still answers `500`, so no device is left retransmitting into the
    /// void.
    pub fn triage_batch(&self, batch: Vec<IncomingRequest>) -> Vec<Checked> {
        let started = Instant::now();
        let prepared: Vec<Prepared> = batch
            .iter()
            .map(|req| {
                panic::catch_unwind(AssertUnwindSafe(|| self.prepare(req)))
                    .unwrap_or_else(|_| Prepared::Done(self.internal_error(req)))
            })
            .collect();
        let read = panic::catch_unwind(AssertUnwindSafe(|| self.read(&prepared))).unwrap_or_else(|_| {
            error!("registrar: internal error reading a batch of bindings; each REGISTER reads its own");
            prepared.iter().map(|_| ReadResult { binding: Prefetch::NotRead, claimed: None }).collect()
        });
        let mut checked = Vec::new();
        for ((req, prepared), read) in batch.into_iter().zip(prepared).zip(read) {
            let pending = match prepared {
                Prepared::Done(reply) => {
                    self.answer(req, reply, started);
                    continue;
                }
                Prepared::Pending(pending) => pending,
            };
            match panic::catch_unwind(AssertUnwindSafe(|| self.decide(*pending, read))) {
                Ok(Continue(Decided { ctx, account, answer, claimed })) => {
                    let Answer { credentials, one_time_key } = answer;
                    checked.push(Checked { req, ctx, account, credentials, one_time_key, claimed, started });
                }
                Ok(Break(reply)) => self.answer(req, reply, started),
                Err(_) => {
                    let reply = self.internal_error(&req);
                    self.answer(req, reply, started);
                }
            }
        }
        checked
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
        self.outcomes.record(reply.status);
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
    /// queued when the daemon shuts down, and those the auth workers' queues have no room for.
    pub fn answer_unavailable(&self, req: IncomingRequest) {
        self.outcomes.record(503);
        let response = Reply::unavailable(self.settings.retry_after_secs).to_builder(&req);
        req.respond(response);
    }

    /// A checked request no auth worker will take: `503` with `Retry-After`, and the claim of
    /// its answer released, so that the phone's retry of the same answer is accepted.
    pub fn refuse_checked(&self, checked: Checked) {
        if checked.claimed {
            self.release_claim(&checked.one_time_key);
        }
        self.answer_unavailable(checked.req);
    }

    /// Forgets the one-time use of an answer that was refused for our reasons (5xx).
    pub(super) fn release_claim(&self, key: &str) {
        if let Err(e) = redis_store::run(&self.redis, |conn| replay::release(conn, key)) {
            debug!("registrar: could not release a one-time claim: {e}");
        }
    }

    /// Step 1: everything that needs neither Redis nor an answer from it.
    pub(super) fn prepare(&self, req: &IncomingRequest) -> Prepared {
        let source_ip = source_ip(req);
        let banned = source_ip.and_then(|ip| self.bans.banned(ip, Instant::now()));
        let ctx = match self.parse_request(req, source_ip) {
            Ok(ctx) => ctx,
            // A banned source is told it is banned, whatever else is wrong.
            Err(_) if banned.is_some() => return Prepared::Done(Reply::with_reason(403, BANNED_REASON)),
            Err(reply) => return Prepared::Done(reply),
        };
        if let Some(ban) = banned {
            debug!("registrar: REGISTER from banned source={} ({} s left)", ban.ip, ban.remaining.as_secs());
            return Prepared::Pending(Box::new(Pending { ctx, found: Found::Banned }));
        }
        let found = match self.account_of(ctx.aor.realm()) {
            Break(reply) => Found::LookupAnswered(reply),
            Continue(Some(account)) if account.is_active => {
                let answer = self.check_authorization(req, &ctx, &account);
                Found::Usable { account, answer }
            }
            Continue(unusable) => Found::Unusable(unusable),
        };
        Prepared::Pending(Box::new(Pending { ctx, found }))
    }

    /// rejectIpv4, regParser and the address of record: the facts every later step uses. A
    /// request that fails them is malformed or not ours: `Err` with its refusal.
    fn parse_request(&self, req: &IncomingRequest, source_ip: Option<IpAddr>) -> Result<Ctx, Reply> {
        request::check_request_uri(&req.message)?;
        let reg = request::parse_registration(&req.message, self.settings.expires_bounds)?;
        let aor = request::parse_aor(&req.message)?;
        Ok(Ctx {
            aor_key: aor.key(),
            proxy: bindings::proxy_uri(&req.meta.address, req.meta.port),
            reg,
            aor,
            source_ip,
            over_udp: req.meta.protocol.eq_ignore_ascii_case("udp"),
        })
    }

    /// Step 2: one Redis round trip for the batch — the bindings of the REGISTERs that consult
    /// the cache window, and the claims of the answers that passed every local check. When
    /// Redis does not answer nothing is read (each request then reads on its own, and gets its
    /// `503` at once: see `StoreHealth`).
    pub(super) fn read(&self, prepared: &[Prepared]) -> Vec<ReadResult> {
        fn pending(p: &Prepared) -> Option<&Pending> {
            match p {
                Prepared::Pending(p) => Some(p.as_ref()),
                Prepared::Done(_) => None,
            }
        }
        let reads_binding = |p: &Pending| p.ctx.reg.kind == Kind::Register;
        let user_keys: Vec<String> = prepared
            .iter()
            .filter_map(pending)
            .filter(|p| reads_binding(p))
            .map(|p| bindings::user_key(&p.ctx.aor_key))
            .collect();
        let claim_keys: Vec<&str> = prepared.iter().filter_map(pending).filter_map(Pending::claim_key).collect();
        let nothing = || prepared.iter().map(|_| ReadResult { binding: Prefetch::NotRead, claimed: None }).collect();
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
        let aors: Vec<&str> =
            prepared.iter().filter_map(pending).filter(|p| reads_binding(p)).map(|p| p.ctx.aor_key.as_str()).collect();
        let mut found = bindings::parse_many(&aors, texts).into_iter();
        let mut claimed = claimed.into_iter();
        prepared
            .iter()
            .map(|p| match pending(p) {
                None => ReadResult { binding: Prefetch::NotRead, claimed: None },
                Some(p) => ReadResult {
                    binding: if reads_binding(p) {
                        found.next().flatten().map_or(Prefetch::Absent, Prefetch::Found)
                    } else {
                        Prefetch::NotRead
                    },
                    claimed: p.claim_key().map(|_| claimed.next().unwrap_or(false)),
                },
            })
            .collect()
    }

    /// How long a one-time record is kept: as long as its nonce can be valid.
    pub(super) fn one_time_ttl(&self) -> u64 {
        self.settings.nonce_ttl.as_secs().saturating_add(super::nonce::FUTURE_SKEW_SECS)
    }

    /// Step 3, in spec order: the cache window, then the ban, the account and its device
    /// limit, the Authorization, and the replay — from what the local checks and the batch
    /// read found.
    fn decide(&self, pending: Pending, read: ReadResult) -> Step<Decided> {
        let Pending { ctx, found } = pending;
        let existing = match ctx.reg.kind {
            Kind::Register => self.check_cache(&ctx, read.binding)?,
            Kind::Unregister => None,
        };
        let (account, answer) = match found {
            Found::Banned => return Break(Reply::with_reason(403, BANNED_REASON)),
            Found::LookupAnswered(reply) => return Break(reply),
            Found::Unusable(account) => return Break(self.refuse_account(&ctx, account)),
            Found::Usable { account, answer } => (account, answer),
        };
        let claimed = read.claimed == Some(true);
        if let Break(reply) = self.check_device_limit(&ctx, &account, existing.is_some()) {
            // Refused for a limit of ours: the answer may be sent again later.
            if let (true, Ok(answer)) = (claimed, &answer) {
                self.release_claim(&answer.one_time_key);
            }
            return Break(reply);
        }
        let answer = match answer {
            Ok(answer) => answer,
            Err(problem) => return Break(self.refuse_answer(&ctx, problem)),
        };
        if read.claimed == Some(false) {
            return Break(self.replayed(&ctx));
        }
        Continue(Decided { ctx, account, answer, claimed })
    }
}

/// What [`Registrar::decide`] lets through to an auth worker.
struct Decided {
    ctx: Ctx,
    account: Account,
    answer: Answer,
    /// The batch read claimed the answer's one-time key.
    claimed: bool,
}

impl Registrar {
    /// checkCache: a device re-registering from the same ip:port while its binding has more
    /// than 30 s left is answered at once, without webhook or Redis write. A UDP device is
    /// told `Expires: 30` (it is assumed to be behind NAT); a TCP, TLS or WebSocket one is told
    /// the seconds its binding really has left (spec 14, item 13: the Node sidecar said 30 to
    /// everyone, so connection-oriented clients refreshed every 30 s for nothing). Returns the
    /// stored binding otherwise (the device-limit check uses it).
    fn check_cache(&self, ctx: &Ctx, prefetched: Prefetch) -> Step<Option<StoredBinding>> {
        let stored = match prefetched {
            Prefetch::Found(binding) => Some(binding),
            Prefetch::Absent => None,
            Prefetch::NotRead => self.redis("reading the registration", |conn| bindings::query(conn, &ctx.aor_key))?,
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
                return Break(reply);
            }
        }
        Continue(stored)
    }

    /// The account of a realm, from the cache or MySQL.
    fn account_of(&self, realm: &str) -> Step<Option<Account>> {
        match self.accounts.get(realm) {
            Cached::Fresh(found) => return Continue(found),
            Cached::LookUp => {}
            Cached::Throttled => {
                REFUSALS.note("new realms throttled", || {
                    format!(
                        "registrar: more than {NEW_REALM_LOOKUPS_PER_SEC} realms never seen before in a second \
                         (a scanner?); realm={realm} answered 503 without a MySQL lookup"
                    )
                });
                return Break(Reply::unavailable(self.settings.retry_after_secs));
            }
        }
        let found =
            self.mysql("looking up the account of the realm", |conn| accounts::account_by_realm(conn, realm))?;
        self.accounts.put(realm, found.clone());
        Continue(found)
    }

    /// The realm half of digestChallenge: the refusal of a realm without an account, or of a
    /// deactivated account.
    fn refuse_account(&self, ctx: &Ctx, found: Option<Account>) -> Reply {
        match found {
            Some(a) => {
                REFUSALS.note("deactivated account", || {
                    format!(
                        "registrar: rejecting REGISTER for deactivated account aor={} account_sid={}",
                        ctx.aor_key, a.account_sid
                    )
                });
                Reply::with_reason(403, DEACTIVATED_REASON)
            }
            None if self.settings.hosting => {
                REFUSALS.note_at(Level::Debug, "unknown realm", || {
                    format!("registrar: rejecting REGISTER for unknown realm aor={} source={}", ctx.aor_key, ctx.proxy)
                });
                Reply::new(403)
            }
            None => {
                REFUSALS.note_at(Level::Debug, "unknown realm", || {
                    format!("registrar: rejecting REGISTER for unknown realm aor={} source={}", ctx.aor_key, ctx.proxy)
                });
                Reply::with_reason(403, UNKNOWN_REALM_REASON)
            }
        }
    }

    /// The account's device limit, from the cache or MySQL.
    fn device_limit(&self, account: &Account) -> Step<u64> {
        if let Some(limit) = self.account_states.device_limit(&account.account_sid, Instant::now()) {
            return Continue(limit);
        }
        let limit = self.mysql("reading the account's capacities", |conn| accounts::device_limit(conn, account))?;
        self.account_states.remember_device_limit(&account.account_sid, limit, Instant::now());
        Continue(limit)
    }

    /// checkAccountLimits, in hosting mode and for a registration: at most `limit` distinct
    /// devices per account — its realm and the sub-domains that fall back to it together. A
    /// device already registered may always refresh (the Node check let `limit + 2` through and
    /// then counted the refreshing device against itself).
    fn check_device_limit(&self, ctx: &Ctx, account: &Account, already_registered: bool) -> Step<()> {
        if !self.settings.hosting || ctx.reg.kind != Kind::Register {
            return Continue(());
        }
        let limit = self.device_limit(account)?;
        let max_devices = || {
            let mut r = Reply::new(503);
            r.reason = Some(MAX_DEVICES_PHRASE);
            r
        };
        if limit == 0 {
            self.raise_device_limit_alert(account, 0);
            return Break(max_devices());
        }
        if already_registered {
            return Continue(());
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
            REFUSALS.note("device limit", || {
                format!(
                    "registrar: device limit reached aor={} account_sid={} devices={devices} limit={limit}",
                    ctx.aor_key, account.account_sid
                )
            });
            self.raise_device_limit_alert(account, limit);
            return Break(max_devices());
        }
        Continue(())
    }

    /// The one place where the registrar's alerts are emitted: a warn line, and a point for
    /// InfluxDB.
    pub fn raise_alert(&self, alert: Alert) {
        warn!("alert: {alert}");
        self.alerts.send(alert);
    }

    /// `account-device-limit`, at most once per account per
    /// [`super::alerts::DEVICE_LIMIT_ALERT_INTERVAL`].
    fn raise_device_limit_alert(&self, account: &Account, limit: u64) {
        if self.account_states.admit_device_limit_alert(&account.account_sid, Instant::now()) {
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
    pub(super) fn redis<T>(&self, what: &str, op: impl FnMut(&mut RedisConn) -> Result<T, StoreError>) -> Step<T> {
        if !self.redis_health.admit() {
            return Break(Reply::unavailable(self.settings.retry_after_secs));
        }
        let result = redis_store::run(&self.redis, op);
        self.store_outcome(&self.redis_health, what, result)
    }

    /// Runs MySQL statements on a pooled connection.
    pub(super) fn mysql<T>(&self, what: &str, op: impl FnOnce(&mut PooledConn) -> Result<T, StoreError>) -> Step<T> {
        if !self.mysql_health.admit() {
            return Break(Reply::unavailable(self.settings.retry_after_secs));
        }
        let result = self.mysql.conn().and_then(|mut conn| op(&mut conn));
        self.store_outcome(&self.mysql_health, what, result)
    }

    /// Where a store's failure becomes the answer: unreachable → `503` with `Retry-After`
    /// (come back soon, or use another SBC); a failed command or unreadable data → `500`.
    fn store_outcome<T>(&self, health: &StoreHealth, what: &str, result: Result<T, StoreError>) -> Step<T> {
        match result {
            Ok(v) => {
                health.succeeded();
                Continue(v)
            }
            Err(e) if e.is_unavailable() => {
                health.failed(what, &e);
                Break(Reply::unavailable(self.settings.retry_after_secs))
            }
            Err(e) => {
                error!("registrar: {what}: {e}");
                Break(Reply::internal_error())
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
