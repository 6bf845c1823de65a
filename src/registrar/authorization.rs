//! What the Authorization of a REGISTER must say before anyone checks its digest response
//! (digestChallenge, and where we are stricter than the Node sidecar).
//!
//! [`Registrar::check_authorization`] only looks: it runs on the triage thread before the
//! batch's Redis round trip, so that an answer's one-time use is claimed only when every local
//! check passed (a refused request writes nothing). What it finds wrong is an
//! [`AnswerProblem`], turned into the response — with its log line and, for a failure the source
//! provably made, a count towards a ban — by [`Registrar::refuse_answer`] once the cache window
//! has had its say (a refresh from the cache is answered 200 whatever its Authorization says).
//!
//! Which failures count (`bans.rs`): an answer can only verify when its nonce was issued to this
//! very source address (`nonce.rs`), so a wrong password, another user's address of record and
//! a replay come from whoever received our challenge there. A nonce we did not issue to this
//! address — forged, mangled, or a blind spoofer's — proves nothing about the address and only
//! gets a fresh challenge.

use std::net::IpAddr;

use log::Level;

use super::accounts::Account;
use super::credentials::{self, FormProblem};
use super::nonce::NonceCheck;
use super::pipeline::Ctx;
use super::replay;
use super::reply::Reply;
use super::request::REFUSALS;
use super::Registrar;
use crate::drachtio::IncomingRequest;
use crate::sip::digest::DigestCredentials;
use crate::sip::{parse_authorization, www_authenticate, SipError};

/// An Authorization that answers our challenge as it must.
pub(super) struct Answer {
    pub(super) credentials: DigestCredentials,
    /// The key that records the one-time use of its nonce, `nc` and `cnonce` (`replay.rs`).
    pub(super) one_time_key: String,
}

/// Why an Authorization cannot go on to be verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AnswerProblem {
    /// No Authorization: the challenge.
    Missing,
    /// Not a complete digest answer (`what` never holds the header's value: a `Basic` one is a
    /// password): `400`.
    Malformed {
        what: String,
    },
    UnsupportedAlgorithm,
    /// No `qop=auth` with `nc` and `cnonce`: challenged again.
    NoQopAuth,
    /// Ours, but expired: challenged with `stale=true`.
    Stale,
    /// Not a nonce we issued to this address: challenged again, never counted.
    NotOurs,
    /// The digest `uri` names neither the Request-URI nor this SBC: `400`.
    UriMismatch,
    /// The credentials of another identity than the To URI: `403`, counted.
    OtherIdentity {
        username: String,
        realm: String,
    },
}

impl Registrar {
    /// The local checks of the Authorization, in order: present, complete, MD5 with
    /// `qop=auth`, a fresh nonce issued to this source, a digest `uri` we accept, the identity
    /// of the address of record (always for `clients`-table accounts, for webhook accounts
    /// unless `SBC_WEBHOOK_AOR_CHECK=0`). No side effects.
    pub(super) fn check_authorization(
        &self,
        req: &IncomingRequest,
        ctx: &Ctx,
        account: &Account,
    ) -> Result<Answer, AnswerProblem> {
        let header = req.message.header("Authorization").ok_or(AnswerProblem::Missing)?;
        let credentials = parse_authorization(header).and_then(|c| c.require_complete().map(|_| c)).map_err(|e| {
            let what = match e {
                SipError::MissingCredential(field) => format!("no {field}"),
                _ => "not a digest answer".to_string(),
            };
            AnswerProblem::Malformed { what }
        })?;
        let nonce_use = credentials::check_form(&credentials).map_err(|problem| match problem {
            FormProblem::UnsupportedAlgorithm => AnswerProblem::UnsupportedAlgorithm,
            FormProblem::NoQopAuth => AnswerProblem::NoQopAuth,
        })?;
        match self.nonces.check(ctx.aor.realm(), credentials.nonce.as_deref().unwrap_or(""), ctx.source_ip) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => return Err(AnswerProblem::Stale),
            NonceCheck::Forged => return Err(AnswerProblem::NotOurs),
        }
        let request_uri = req.message.request_uri().unwrap_or("");
        let digest_uri = credentials.uri.as_deref().unwrap_or("");
        if !credentials::uri_acceptable(
            digest_uri,
            request_uri,
            &req.server_hostport,
            req.private_sip_address.as_deref(),
        ) {
            return Err(AnswerProblem::UriMismatch);
        }
        let check_identity = account.hook.is_none() || self.settings.webhook_aor_check;
        if check_identity && !credentials::identity_matches(&credentials, &ctx.aor) {
            return Err(AnswerProblem::OtherIdentity {
                username: credentials.username.clone().unwrap_or_default(),
                realm: credentials.realm.clone().unwrap_or_default(),
            });
        }
        let one_time_key = replay::key(credentials.nonce.as_deref().unwrap_or(""), &nonce_use);
        Ok(Answer { credentials, one_time_key })
    }

    /// The response to an Authorization with `problem`, logged, and counted against the
    /// source when the source provably made the failure.
    pub(super) fn refuse_answer(&self, ctx: &Ctx, problem: AnswerProblem) -> Reply {
        match problem {
            AnswerProblem::Missing => self.challenge(ctx, false),
            AnswerProblem::Malformed { what } => {
                REFUSALS.note("malformed authorization", || {
                    format!("registrar: malformed Authorization aor={} source={}: {what}", ctx.aor_key, ctx.proxy)
                });
                Reply::new(400)
            }
            AnswerProblem::UnsupportedAlgorithm => {
                REFUSALS.note("digest algorithm not offered", || {
                    format!("registrar: digest algorithm not offered aor={} source={}: 400", ctx.aor_key, ctx.proxy)
                });
                Reply::with_reason(400, credentials::UNSUPPORTED_ALGORITHM_REASON)
            }
            AnswerProblem::NoQopAuth => {
                REFUSALS.note("no qop=auth", || {
                    format!(
                        "registrar: Authorization without qop=auth, nc and cnonce aor={} source={}: challenged again",
                        ctx.aor_key, ctx.proxy
                    )
                });
                self.challenge(ctx, false)
            }
            AnswerProblem::Stale => {
                REFUSALS.note_at(Level::Debug, "stale nonce", || {
                    format!("registrar: stale nonce aor={} source={}", ctx.aor_key, ctx.proxy)
                });
                self.challenge(ctx, true)
            }
            AnswerProblem::NotOurs => {
                // A phone that moved to another address, a restarted SBC with another secret, a
                // Node SBC's nonce — or a forger: challenged again, and the address is not
                // blamed for it.
                REFUSALS.note("nonce not issued to the source", || {
                    format!(
                        "registrar: nonce not issued to this source aor={} source={}: challenged again",
                        ctx.aor_key, ctx.proxy
                    )
                });
                self.challenge(ctx, false)
            }
            AnswerProblem::UriMismatch => {
                REFUSALS.note("digest uri mismatch", || {
                    format!(
                        "registrar: digest uri names neither the Request-URI nor this SBC aor={} source={}: 400",
                        ctx.aor_key, ctx.proxy
                    )
                });
                Reply::with_reason(400, credentials::URI_MISMATCH_REASON)
            }
            AnswerProblem::OtherIdentity { username, realm } => {
                REFUSALS.note("another address of record", || {
                    format!(
                        "registrar: Authorization of username={username} realm={realm} for another address of record \
                     aor={} source={}: 403",
                        ctx.aor_key, ctx.proxy
                    )
                });
                self.authentication_failed(ctx, "credentials of another address of record");
                Reply::with_reason(403, credentials::AOR_MISMATCH_REASON)
            }
        }
    }

    /// `401` with a fresh nonce for the realm, bound to the request's source address.
    pub(super) fn challenge(&self, ctx: &Ctx, stale: bool) -> Reply {
        let realm = ctx.aor.realm();
        let nonce = self.nonces.issue(realm, ctx.source_ip);
        Reply::new(401).header("WWW-Authenticate", www_authenticate(realm, &nonce, stale))
    }

    /// An answer whose nonce, `nc` and `cnonce` were used before: a fresh `401`, counted (its
    /// nonce was issued to this source).
    pub(super) fn replayed(&self, ctx: &Ctx) -> Reply {
        REFUSALS.note("replayed authorization", || {
            format!(
            "registrar: replayed Authorization (nonce, nc and cnonce already used) aor={} source={}: challenged again",
            ctx.aor_key, ctx.proxy
        )
        });
        self.authentication_failed(ctx, "replayed Authorization");
        self.challenge(ctx, false)
    }
}

/// The source address drachtio reported, when it parses (`[…]` around IPv6 allowed).
pub(super) fn source_ip(req: &IncomingRequest) -> Option<IpAddr> {
    crate::net::parse_ip(&req.meta.address)
}
