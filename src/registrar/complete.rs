//! The auth worker's step of the REGISTER pipeline ([`Registrar::complete`]): a request the
//! triage thread checked ([`Checked`], see `pipeline.rs`) has its nonce recorded as used
//! (unless the batch read did), its credentials proven by the account's webhook or the
//! `clients` table, and its binding stored or removed; then the one final response.

use std::ops::ControlFlow::{Break, Continue};
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use log::{debug, error, info, warn, Level};

use super::account_state::{HookHealth, HookOutcome};
use super::accounts::{self, Account};
use super::alerts;
use super::bindings::{self, NewBinding};
use super::clients;
use super::grant::{AuthVerdict, Denial, Grant};
use super::hook_breaker::{Admission, Transition};
use super::pipeline::{Checked, Ctx, BANNED_REASON, INVALID_CREDENTIALS_REASON, NAT_EXPIRES};
use super::replay;
use super::reply::{Reply, Step};
use super::request::{Kind, REFUSALS};
use super::webhook::{self, HookError, RegistrationHook};
use super::{unix_millis, unix_secs, Registrar};
use crate::drachtio::IncomingRequest;
use crate::sip::digest::DigestCredentials;
use crate::sip::replace_first_expires;

impl Registrar {
    /// Authenticates a checked request (webhook or `clients` table), stores or removes its
    /// binding and sends the one final response.
    pub fn complete(&self, checked: Checked) {
        let mut claimed = checked.claimed;
        let reply = panic::catch_unwind(AssertUnwindSafe(|| self.authenticate_and_store(&checked, &mut claimed)))
            .unwrap_or_else(|_| self.internal_error(&checked.req));
        // Ours to blame (a webhook that timed out, a store that failed): the phone will send
        // the same answer again, and it must not be taken for a replay then.
        if reply.status >= 500 && claimed {
            self.release_claim(&checked.one_time_key);
        }
        self.answer(checked.req, reply, checked.started);
    }

    /// An auth worker's part: the credentials proven once, then the binding. Returns the one
    /// final response, whichever step gave it.
    fn authenticate_and_store(&self, c: &Checked, claimed: &mut bool) -> Reply {
        // Banned while it waited for a worker (other requests of the same source failed
        // meanwhile): no webhook or MySQL work for it either.
        if let Some(ban) = c.ctx.source_ip.and_then(|ip| self.bans.banned(ip, Instant::now())) {
            debug!("registrar: REGISTER from source={} banned while it waited for a worker: 403", ban.ip);
            return Reply::with_reason(403, BANNED_REASON);
        }
        let grant = match self.authenticate(c, claimed) {
            Continue(grant) => grant,
            Break(reply) => return reply,
        };
        match c.ctx.reg.kind {
            Kind::Register => self.register(&c.req, &c.ctx, &grant),
            Kind::Unregister => self.unregister(&c.ctx),
        }
    }

    /// Records the answer to a challenge as used, cluster-wide, unless the batch read did
    /// already (`claimed`); a second use of the same nonce, `nc` and `cnonce` is a replay and
    /// gets a fresh `401`.
    fn claim_nonce(&self, c: &Checked, claimed: &mut bool) -> Step<()> {
        if *claimed {
            return Continue(());
        }
        let (key, ttl) = (&c.one_time_key, self.one_time_ttl());
        if self.redis("recording the use of the nonce", |conn| replay::claim(conn, key, ttl))? {
            *claimed = true;
            return Continue(());
        }
        Break(self.replayed(&c.ctx))
    }

    /// The account's webhook if it has one, else the `clients` table; a denial is `403`.
    /// The nonce use is claimed before the webhook call (a replay never reaches the
    /// customer) — by the batch read as a rule — and at the latest after a `clients` check that
    /// succeeded.
    fn authenticate(&self, c: &Checked, claimed: &mut bool) -> Step<Grant> {
        let (ctx, account, credentials) = (&c.ctx, &c.account, &c.credentials);
        let verdict = match &account.hook {
            Some(hook) => {
                self.claim_nonce(c, claimed)?;
                self.webhook_auth(&c.req, ctx, account, hook, credentials)?
            }
            None => {
                let started = Instant::now();
                let verdict = self.clients_auth(account, credentials)?;
                self.metrics.hook_response_time(verdict.status(), started.elapsed());
                if matches!(verdict, AuthVerdict::Granted(_)) {
                    self.claim_nonce(c, claimed)?;
                }
                verdict
            }
        };
        match verdict {
            AuthVerdict::Granted(grant) => Continue(grant),
            AuthVerdict::Denied(denial) => {
                REFUSALS.note("authentication failed", || {
                    format!(
                        "registrar: authentication failed aor={} username={} source={} blacklist={}",
                        ctx.aor_key,
                        credentials.username.as_deref().unwrap_or(""),
                        ctx.proxy,
                        denial.blacklist
                    )
                });
                self.authentication_failed(ctx, "invalid credentials");
                Break(self.denied(&c.req, denial))
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
    ) -> Step<AuthVerdict> {
        let started = Instant::now();
        if let Admission::Refuse { retry_after } = self.account_states.admit_webhook(&account.account_sid, started) {
            REFUSALS.note_at(Level::Debug, "webhook breaker open", || {
                format!(
                    "registrar: webhook of account_sid={} not called after repeated timeouts aor={}: 503",
                    account.account_sid, ctx.aor_key
                )
            });
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            return Break(Reply::unavailable(u32::try_from(secs.max(1)).unwrap_or(u32::MAX)));
        }
        let meta = &req.meta;
        let data = webhook::payload(&meta.address, meta.port, &req.message, hook.method, ctx.reg.expires, credentials);
        let request = webhook::build_request(hook, account.webhook_secret.as_deref(), &data, unix_secs());
        let result = self.hook.send(&request).and_then(|response| webhook::interpret(&response));
        let outcome = match &result {
            Ok(_) => HookOutcome::Answered,
            Err(HookError::Timeout) => HookOutcome::TimedOut,
            Err(_) => HookOutcome::Failed,
        };
        let news = self.account_states.webhook_outcome(&account.account_sid, outcome, started, Instant::now());
        match news.breaker {
            Transition::Opened => warn!(
                "registrar: registration webhook of account_sid={} url={} timed out {} times in a row; \
                 its REGISTERs get 503 without calling it for {} s, then one is tried",
                account.account_sid,
                webhook::url_for_logs(&hook.url),
                self.settings.webhook_breaker.threshold,
                self.settings.webhook_breaker.cooldown.as_secs_f32()
            ),
            // A recovery is told once, by the health's line below.
            Transition::Closed if news.closed_without_recovery() => info!(
                "registrar: registration webhook of account_sid={} answers again; calling it for every REGISTER",
                account.account_sid
            ),
            Transition::Closed | Transition::StillOpen | Transition::None => {}
        }
        // `app.hook.response_time` is only measured for answers the webhook gave with HTTP 200.
        if let Ok(verdict) = &result {
            self.metrics.hook_response_time(verdict.status(), started.elapsed());
            if news.health == HookHealth::Recovered {
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
        let e = match result {
            Ok(verdict) => return Continue(verdict),
            Err(e) => e,
        };
        // Once per change: a dead webhook fails every REGISTER of the account.
        if news.health == HookHealth::Failing {
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
        Break(Reply::new(e.sip_status()))
    }

    fn clients_auth(&self, account: &Account, credentials: &DigestCredentials) -> Step<AuthVerdict> {
        let username = credentials.username.as_deref().unwrap_or("");
        let row = self.mysql("looking up the client", |conn| accounts::client(conn, &account.account_sid, username))?;
        match clients::authenticate(row.as_ref(), credentials, &self.password_key) {
            Ok(verdict) => Continue(verdict),
            Err(e) => {
                error!("registrar: account_sid={} username={username}: {e}", account.account_sid);
                Break(Reply::internal_error())
            }
        }
    }

    /// Stores the binding for the granted interval and answers 200. UDP devices are told 30 s
    /// when the grant is longer (every UDP client is assumed to be behind NAT); Redis keeps
    /// the full grant. If the binding cannot be stored the device is told so (500/503).
    fn register(&self, req: &IncomingRequest, ctx: &Ctx, grant: &Grant) -> Reply {
        let granted = grant.granted_expires(ctx.reg.expires, self.settings.expires_bounds);
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
        let stored = self.redis("storing the registration", |conn| {
            bindings::add(conn, &ctx.aor_key, granted, &json, expiry_time_ms)
        });
        if let Break(failed) = stored {
            return failed;
        }
        if self.settings.hosting {
            self.devices.note_registered(ctx.aor.realm(), ctx.aor.user_part());
        }
        debug!("registrar: registered aor={} source={} granted={granted}", ctx.aor_key, ctx.proxy);
        Reply::new(200)
            .header("Contact", replace_first_expires(&ctx.reg.raw_contact, response_expires))
            .header("Expires", response_expires.to_string())
    }

    /// Removes the binding and answers 200, or tells the device it could not be removed.
    fn unregister(&self, ctx: &Ctx) -> Reply {
        if let Break(failed) = self.redis("removing the registration", |conn| bindings::remove(conn, &ctx.aor_key)) {
            return failed;
        }
        debug!("registrar: unregistered aor={} source={}", ctx.aor_key, ctx.proxy);
        Reply::new(200).header("Contact", ctx.reg.raw_contact.clone()).header("Expires", "0")
    }
}
