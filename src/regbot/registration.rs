//! One regbot: the outbound registration of one gateway (spec 6.3, 6.4), as a state machine.
//!
//! It owns no thread, socket, pool or timer. The scheduler calls it when its deadline comes or
//! when drachtio reports on its REGISTER, and carries out the [`Action`]s it returns: send a
//! request, wake it at an instant, hand a job to the store writer, or forget it. That keeps
//! the rules (only final responses count, one digest answer per challenge, backoff, the
//! failure threshold, de-registration before a change) testable without any I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use log::{debug, info, warn};
use rand::Rng;

use super::addresses::PublicAddresses;
use super::ephemeral::EphGateway;
use super::mode::SentBy;
use super::register_status::RegisterStatus;
use super::spec::{build_register, AuthHeader, RegisterParams, RegistrationSpec};
use super::status::{RegbotInfo, RegbotState};
use super::store_writer::StoreJob;
use super::timing::{after, failure_delay, initial_cseq, refresh_delay};
use super::RegbotSettings;
use crate::drachtio::{SipDelivery, UacError, UacEvent};
use crate::sip::{authorization_header, parse_challenge, parse_contacts, Challenge, Contacts, SipMessage};

/// What a registration needs to know about the world when it acts: settings, this SBC's
/// public addresses, and the time.
pub struct World<'a> {
    pub settings: &'a RegbotSettings,
    pub public: Option<&'a PublicAddresses>,
    pub sip_domain: Option<&'a str>,
    pub now: Instant,
    pub wall: SystemTime,
}

/// What the scheduler must do for a regbot.
#[derive(Debug)]
pub enum Action {
    /// Send this request through drachtio to `proxy` and [`Registration::attach`] the receiver.
    Send {
        sip: Vec<u8>,
        proxy: String,
    },
    /// Call [`Registration::on_due`] at this instant with this timer generation.
    WakeAt(Instant, u64),
    Store(StoreJob),
    /// The regbot is done (removed and, if it was registered, de-registered): drop it.
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Register,
    /// `Expires: 0` for the binding of the current spec.
    Unregister,
    /// Leader mode: `Expires: 0` for the Contact a previous leader registered under the same
    /// Call-ID (its public address), once ours is registered.
    DropStale,
}

/// The REGISTER waiting for its final response.
#[derive(Debug)]
struct InFlight {
    purpose: Purpose,
    /// Set by the scheduler right after sending.
    rx: Option<Receiver<UacEvent>>,
    /// CSeq of the request before any digest answer (the one `register_status` reports).
    original_cseq: u32,
    /// True once a challenge was answered: a second 401/407 is final.
    challenged: bool,
    expires: u64,
    contact_user_host: String,
}

/// What to do once the request in flight is done.
#[derive(Debug)]
enum Pending {
    /// The gateway's configuration changed: de-register the old binding, then register this.
    Replace(Box<RegistrationSpec>),
    /// The gateway is gone or disabled: de-register, then finish.
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    New,
    Registered,
    Failing,
    /// Too many consecutive failures; the carrier was disabled. Waits for the database change
    /// (or a new configuration) to remove or replace it.
    Disabled,
}

/// Timer generations are unique in the process, so a heap entry left behind by a removed
/// regbot can never match a new regbot of the same gateway.
static NEXT_TIMER: AtomicU64 = AtomicU64::new(1);

/// One outbound registration to one carrier gateway ("a regbot" in the Node program): its
/// REGISTER in flight, its health and its timer. A state machine: the scheduler feeds it
/// timer expiries and drachtio events and carries out the [`Action`]s it returns.
pub struct Registration {
    spec: RegistrationSpec,
    from_tag: String,
    /// The last CSeq used.
    cseq: u32,
    health: Health,
    last_status: Option<String>,
    /// Until when the registrar holds our binding, as far as we know.
    registered_until: Option<Instant>,
    consecutive_failures: u32,
    backoff_attempt: u32,
    in_flight: Option<InFlight>,
    pending: Option<Pending>,
    due: Option<Instant>,
    timer_gen: u64,
    /// Leader mode: the Contact (`user@host`) the previous leader registered for this gateway,
    /// to remove after our first 200 when it is not ours.
    stale_contact: Option<String>,
    /// Leader mode: the Contact we wrote to `<cluster>:regbot-leader-contacts`.
    recorded_contact: Option<String>,
}

impl Registration {
    /// A regbot that has sent nothing yet; `inherited_failures` comes from an old regbot of the
    /// same carrier, host and port (spec 6.2).
    pub fn new(spec: RegistrationSpec, inherited_failures: u32) -> Registration {
        Registration {
            spec,
            from_tag: random_token(12),
            cseq: 0,
            health: Health::New,
            last_status: None,
            registered_until: None,
            consecutive_failures: inherited_failures,
            backoff_attempt: 0,
            in_flight: None,
            pending: None,
            due: None,
            timer_gen: 0,
            stale_contact: None,
            recorded_contact: None,
        }
    }

    /// The Contact a previous leader left registered for this gateway (see
    /// [`StoreJob::LeaderContact`]).
    pub fn with_stale_contact(mut self, contact: Option<String>) -> Registration {
        self.stale_contact = contact;
        self
    }

    pub fn spec(&self) -> &RegistrationSpec {
        &self.spec
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn is_registered(&self) -> bool {
        self.health == Health::Registered
    }

    pub fn is_failing(&self) -> bool {
        matches!(self.health, Health::Failing | Health::Disabled)
    }

    /// Waiting for its timer only: nothing in flight, no change pending, not disabled.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.pending.is_none() && self.health != Health::Disabled
    }

    /// The receiver of the request in flight, for the scheduler's `Select`.
    pub fn receiver(&self) -> Option<&Receiver<UacEvent>> {
        self.in_flight.as_ref().and_then(|f| f.rx.as_ref())
    }

    /// The scheduler sent the request of the last `Action::Send`.
    pub fn attach(&mut self, rx: Receiver<UacEvent>) {
        if let Some(f) = self.in_flight.as_mut() {
            f.rx = Some(rx);
        }
    }

    /// Arms the timer (cancelling any earlier one).
    pub fn wake_at(&mut self, at: Instant) -> Action {
        self.timer_gen = NEXT_TIMER.fetch_add(1, Ordering::Relaxed);
        self.due = Some(at);
        Action::WakeAt(at, self.timer_gen)
    }

    fn cancel_timer(&mut self) {
        self.timer_gen = NEXT_TIMER.fetch_add(1, Ordering::Relaxed);
        self.due = None;
    }

    /// The timer of generation `gen` fired. Stale generations are ignored.
    pub fn on_due(&mut self, gen: u64, ctx: &World<'_>) -> Vec<Action> {
        if self.in_flight.as_ref().is_some_and(|f| f.purpose == Purpose::DropStale) {
            // A carrier that does not answer the removal of an old Contact must not hold up
            // our own refresh.
            self.in_flight = None;
        }
        if gen != self.timer_gen || self.due.is_none() || self.in_flight.is_some() || self.health == Health::Disabled {
            return Vec::new();
        }
        self.due = None;
        vec![self.start_request(Purpose::Register, ctx)]
    }

    /// The gateway is no longer wanted (removed, disabled, carrier or account deactivated):
    /// de-register if the registrar holds a binding, then finish.
    pub fn retire(&mut self, ctx: &World<'_>) -> Vec<Action> {
        self.cancel_timer();
        if self.in_flight.is_some() {
            self.pending = Some(Pending::Remove);
            return Vec::new();
        }
        self.resolve(Pending::Remove, ctx)
    }

    /// The gateway's configuration changed. A live binding is de-registered first (with the
    /// old credentials and contact); the new configuration registers at `start_at`, or as soon
    /// as the de-registration is done.
    pub fn replace(&mut self, spec: RegistrationSpec, start_at: Instant, ctx: &World<'_>) -> Vec<Action> {
        self.cancel_timer();
        if self.in_flight.is_some() {
            self.pending = Some(Pending::Replace(Box::new(spec)));
            return Vec::new();
        }
        if self.is_bound(ctx.now) {
            self.pending = Some(Pending::Replace(Box::new(spec)));
            return vec![self.start_request(Purpose::Unregister, ctx)];
        }
        self.switch_to(spec);
        vec![self.wake_at(start_at)]
    }

    /// drachtio reported on the request in flight.
    pub fn on_event(&mut self, event: UacEvent, ctx: &World<'_>) -> Vec<Action> {
        let Some(flight) = self.in_flight.as_ref() else {
            return Vec::new();
        };
        match event {
            UacEvent::Sent { .. } => Vec::new(),
            UacEvent::Response { meta, message } => {
                let Some(status) = message.status() else {
                    return Vec::new();
                };
                // Only final responses count (spec 14, item 5 fixed).
                if status < 200 {
                    return Vec::new();
                }
                // An old configuration's REGISTER that is going away needs no digest answer.
                let wants_answer = flight.purpose != Purpose::Register || self.pending.is_none();
                if (status == 401 || status == 407) && !flight.challenged && wants_answer {
                    if let Some(send) = self.answer_challenge(status, &meta, &message, ctx) {
                        return vec![send];
                    }
                }
                let reason = format!("{status} {}", message.reason().unwrap_or(""));
                self.finish(Outcome::Final { status, reason, message }, ctx)
            }
            UacEvent::Failed(e) => self.finish(Outcome::Error(e), ctx),
        }
    }

    /// A snapshot line for the status list.
    pub fn info(&self, now: Instant) -> RegbotInfo {
        let state = match (&self.in_flight, self.health) {
            (_, Health::Disabled) => RegbotState::Disabled,
            (Some(f), _) if f.purpose == Purpose::Unregister => RegbotState::Unregistering,
            (Some(f), Health::Registered) if f.purpose == Purpose::DropStale => RegbotState::Registered,
            (Some(_), Health::New) => RegbotState::Registering,
            (None, Health::New) => RegbotState::Starting,
            (_, Health::Registered) => RegbotState::Registered,
            (_, Health::Failing) => RegbotState::Failing,
        };
        let target = match self.spec.port {
            Some(port) => format!("{}:{port};transport={}", self.spec.host, self.spec.transport()),
            None => format!("{};transport={}", self.spec.host, self.spec.transport()),
        };
        RegbotInfo {
            voip_carrier_sid: self.spec.voip_carrier_sid.clone(),
            sip_gateway_sid: self.spec.sip_gateway_sid.clone(),
            aor: self.spec.aor(),
            target,
            state,
            last_status: self.last_status.clone(),
            consecutive_failures: self.consecutive_failures,
            next_request_in: self.due.map(|d| d.saturating_duration_since(now)),
        }
    }

    // ------------------------------------------------------------------------------------

    fn is_bound(&self, now: Instant) -> bool {
        self.registered_until.is_some_and(|until| until > now)
    }

    fn switch_to(&mut self, spec: RegistrationSpec) {
        self.spec = spec;
        self.health = Health::New;
        self.backoff_attempt = 0;
        self.registered_until = None;
    }

    /// Sends a new (unchallenged) REGISTER for the current spec.
    fn start_request(&mut self, purpose: Purpose, ctx: &World<'_>) -> Action {
        // Increasing, and never behind the clock (see `initial_cseq`).
        self.cseq = self.cseq.wrapping_add(1).max(initial_cseq(ctx.wall));
        let expires = match purpose {
            Purpose::Register => ctx.settings.default_expires.as_secs(),
            Purpose::Unregister | Purpose::DropStale => 0,
        };
        let contact_user_host = match (purpose, self.stale_contact.take()) {
            (Purpose::DropStale, Some(stale)) => stale,
            (_, stale) => {
                self.stale_contact = stale;
                self.spec.contact_user_host(ctx.public, ctx.sip_domain)
            }
        };
        let sip = build_register(
            &self.spec,
            &RegisterParams {
                cseq: self.cseq,
                from_tag: &self.from_tag,
                expires,
                contact_user_host: &contact_user_host,
                user_agent: &ctx.settings.user_agent,
                authorization: None,
            },
        );
        debug!(
            "regbot sending REGISTER aor={} gateway={} cseq={} expires={expires}",
            self.spec.aor(),
            self.spec.sip_gateway_sid,
            self.cseq
        );
        self.in_flight = Some(InFlight {
            purpose,
            rx: None,
            original_cseq: self.cseq,
            challenged: false,
            expires,
            contact_user_host,
        });
        Action::Send { sip, proxy: self.spec.next_hop() }
    }

    /// The same REGISTER again with a digest answer: same Call-ID and From tag, CSeq + 1
    /// (spec 2). `None` when the challenge cannot be answered (no usable header, not MD5).
    fn answer_challenge(
        &mut self,
        status: u16,
        meta: &SipDelivery,
        message: &SipMessage,
        ctx: &World<'_>,
    ) -> Option<Action> {
        let (challenge_header, auth) = if status == 401 {
            ("WWW-Authenticate", AuthHeader::Authorization)
        } else {
            ("Proxy-Authenticate", AuthHeader::ProxyAuthorization)
        };
        let challenge = usable_challenge(message, challenge_header)?;
        let request_uri = self.spec.request_uri();
        let cnonce = random_hex(16);
        let value = match authorization_header(
            &challenge,
            &self.spec.username,
            &self.spec.password,
            "REGISTER",
            &request_uri,
            1,
            &cnonce,
        ) {
            Ok(v) => v,
            Err(e) => {
                warn!("regbot cannot answer the challenge of {} aor={}: {e}", self.spec.host, self.spec.aor());
                return None;
            }
        };
        let flight = self.in_flight.as_mut()?;
        self.cseq = self.cseq.wrapping_add(1);
        flight.challenged = true;
        flight.rx = None;
        let sip = build_register(
            &self.spec,
            &RegisterParams {
                cseq: self.cseq,
                from_tag: &self.from_tag,
                expires: flight.expires,
                contact_user_host: &flight.contact_user_host,
                user_agent: &ctx.settings.user_agent,
                authorization: Some((auth, value)),
            },
        );
        // A DNS next hop may resolve to another server for the retry; the nonce belongs to
        // the one that challenged, so pin the retry to it (as drachtio-srf does).
        let mut proxy = self.spec.next_hop();
        if !self.spec.next_hop_is_ip_literal() && meta.port != 0 {
            if let Ok(ip) = meta.address.parse::<std::net::IpAddr>() {
                proxy = format!("sip:{ip}:{};transport={}", meta.port, self.spec.transport());
            }
        }
        debug!("regbot answering {status} aor={} cseq={}", self.spec.aor(), self.cseq);
        Some(Action::Send { sip, proxy })
    }

    /// The request in flight got its final answer (or could not be sent): what follows
    /// depends on what it was for.
    fn finish(&mut self, outcome: Outcome, ctx: &World<'_>) -> Vec<Action> {
        let Some(flight) = self.in_flight.take() else {
            return Vec::new();
        };
        match flight.purpose {
            Purpose::DropStale => self.finish_drop_stale(&outcome, &flight, ctx),
            Purpose::Unregister => self.finish_unregister(&outcome, ctx),
            Purpose::Register => match self.pending.take() {
                Some(pending) => self.finish_superseded(&outcome, &flight, pending, ctx),
                None => self.finish_register(outcome, &flight, ctx),
            },
        }
    }

    /// Leader mode: the previous leader's Contact was (or could not be) removed.
    fn finish_drop_stale(&mut self, outcome: &Outcome, flight: &InFlight, ctx: &World<'_>) -> Vec<Action> {
        match outcome {
            Outcome::Final { status, .. } if (200..300).contains(status) => info!(
                "regbot removed the previous leader's contact {} of gateway {}",
                flight.contact_user_host, self.spec.sip_gateway_sid
            ),
            Outcome::Final { reason, .. } => warn!(
                "regbot could not remove the previous leader's contact {} of gateway {}: {reason}",
                flight.contact_user_host, self.spec.sip_gateway_sid
            ),
            Outcome::Error(e) => warn!(
                "regbot could not remove the previous leader's contact {} of gateway {}: {e}",
                flight.contact_user_host, self.spec.sip_gateway_sid
            ),
        }
        let mut actions = Vec::new();
        if self.recorded_contact.is_none() {
            // We never registered ours: the record names the Contact just removed.
            actions.push(Action::Store(StoreJob::LeaderContact {
                sip_gateway_sid: self.spec.sip_gateway_sid.clone(),
                contact: None,
            }));
        }
        if let Some(pending) = self.pending.take() {
            actions.extend(self.resolve(pending, ctx));
        }
        actions
    }

    /// Our binding was (or could not be) removed; whatever the answer, we do not try again.
    fn finish_unregister(&mut self, outcome: &Outcome, ctx: &World<'_>) -> Vec<Action> {
        match outcome {
            Outcome::Final { status, .. } if (200..300).contains(status) => {
                info!("regbot de-registered aor={} gateway={}", self.spec.aor(), self.spec.sip_gateway_sid)
            }
            Outcome::Final { reason, .. } => warn!(
                "regbot de-registration of aor={} gateway={} failed: {reason}",
                self.spec.aor(),
                self.spec.sip_gateway_sid
            ),
            Outcome::Error(e) => warn!(
                "regbot de-registration of aor={} gateway={} not sent: {e}",
                self.spec.aor(),
                self.spec.sip_gateway_sid
            ),
        }
        // Whatever the answer, we will not try again: the binding expires by itself.
        self.registered_until = None;
        let pending = self.pending.take().unwrap_or(Pending::Remove);
        let mut actions = Vec::new();
        if self.spec.sent_by == SentBy::Leader && self.recorded_contact.take().is_some() {
            actions.push(Action::Store(StoreJob::LeaderContact {
                sip_gateway_sid: self.spec.sip_gateway_sid.clone(),
                contact: None,
            }));
        }
        actions.extend(self.resolve(pending, ctx));
        actions
    }

    /// The answer belongs to a configuration that is going away: no status, no eph gateways,
    /// but remember a binding it may have created, to de-register it.
    fn finish_superseded(
        &mut self,
        outcome: &Outcome,
        flight: &InFlight,
        pending: Pending,
        ctx: &World<'_>,
    ) -> Vec<Action> {
        if let Outcome::Final { status, message, .. } = outcome {
            if (200..300).contains(status) {
                let granted = self.granted_expires(message, flight, ctx);
                self.registered_until = Some(after(ctx.now, granted));
            }
        }
        self.resolve(pending, ctx)
    }

    /// A REGISTER of the current configuration was answered: registered, refused, or not sent.
    fn finish_register(&mut self, outcome: Outcome, flight: &InFlight, ctx: &World<'_>) -> Vec<Action> {
        let cseq = format!("{} REGISTER", flight.original_cseq);
        match outcome {
            Outcome::Final { status, reason, message } if (200..300).contains(&status) => {
                let granted = self.granted_expires(&message, flight, ctx);
                if self.health != Health::Registered {
                    info!(
                        "regbot registered aor={} to={} granted={}s",
                        self.spec.aor(),
                        self.spec.next_hop(),
                        granted.as_secs()
                    );
                } else {
                    debug!("regbot refreshed aor={} granted={}s", self.spec.aor(), granted.as_secs());
                }
                self.health = Health::Registered;
                self.registered_until = Some(after(ctx.now, granted));
                self.consecutive_failures = 0;
                self.backoff_attempt = 0;
                self.last_status = Some(reason.clone());
                let mut actions = vec![self.status_job(true, reason, cseq, granted.as_secs(), ctx)];
                if self.spec.is_reg_trunk() {
                    actions.push(self.eph_refresh(granted.as_secs()));
                }
                let delay = refresh_delay(granted, rand::thread_rng().gen());
                actions.push(self.wake_at(after(ctx.now, delay)));
                if self.spec.sent_by == SentBy::Leader {
                    actions.extend(self.leader_contact_registered(&flight.contact_user_host, ctx));
                }
                actions
            }
            Outcome::Final { status, reason, .. } => {
                warn!("regbot got {reason} registering aor={} to={}", self.spec.aor(), self.spec.next_hop());
                self.health = Health::Failing;
                self.last_status = Some(reason.clone());
                let counts = ctx.settings.register_response_remove.contains(&status);
                if counts {
                    self.consecutive_failures += 1;
                }
                let mut actions = vec![self.status_job(false, reason.clone(), cseq, 0, ctx)];
                if let SentBy::Every { sbc } = self.spec.sent_by.clone() {
                    // Every SBC registers: the threshold counts the failures of all of them,
                    // in Redis; the store writer disables the carrier when it is reached.
                    if counts {
                        actions.push(Action::Store(StoreJob::CountFailure {
                            voip_carrier_sid: self.spec.voip_carrier_sid.clone(),
                            sbc,
                            threshold: ctx.settings.failure_threshold,
                        }));
                    }
                } else if counts && self.consecutive_failures >= ctx.settings.failure_threshold {
                    warn!(
                        "regbot giving up aor={} carrier={} after {} consecutive failures (last {reason})",
                        self.spec.aor(),
                        self.spec.voip_carrier_sid,
                        self.consecutive_failures
                    );
                    self.health = Health::Disabled;
                    self.cancel_timer();
                    actions.push(Action::Store(StoreJob::Disable {
                        voip_carrier_sid: self.spec.voip_carrier_sid.clone(),
                    }));
                    if self.spec.is_reg_trunk() {
                        actions.push(Action::Store(StoreJob::EphDelete {
                            voip_carrier_sid: self.spec.voip_carrier_sid.clone(),
                        }));
                    }
                    return actions;
                }
                if self.spec.is_reg_trunk() {
                    actions.push(self.eph_refresh(0));
                }
                actions.push(self.retry_later(ctx));
                actions
            }
            Outcome::Error(e) => {
                warn!("regbot could not send REGISTER aor={}: {e}", self.spec.aor());
                self.health = Health::Failing;
                self.last_status = Some(e.to_string());
                let mut actions = Vec::new();
                // Our own drachtio connection being down says nothing about the carrier: keep
                // its last status (the scheduler retries as soon as drachtio is back). A
                // request drachtio refused is this carrier's problem and is reported.
                if !matches!(e, UacError::NotConnected | UacError::Disconnected) {
                    actions.push(self.store_status(RegisterStatus::Failure { reason: e.to_string() }, 0, ctx));
                }
                actions.push(self.retry_later(ctx));
                actions
            }
        }
    }

    /// Leader mode, after a 200: note our Contact for the next leader, and
    /// remove the one a previous leader left under this Call-ID if it is not ours.
    fn leader_contact_registered(&mut self, ours: &str, ctx: &World<'_>) -> Vec<Action> {
        // Written at every 200, which keeps the hash from expiring while we lead.
        self.recorded_contact = Some(ours.to_string());
        let mut actions = vec![Action::Store(StoreJob::LeaderContact {
            sip_gateway_sid: self.spec.sip_gateway_sid.clone(),
            contact: Some(ours.to_string()),
        })];
        match self.stale_contact.as_deref() {
            Some(stale) if !stale.eq_ignore_ascii_case(ours) => {
                info!("regbot removing the previous leader's contact {stale} of gateway {}", self.spec.sip_gateway_sid);
                actions.push(self.start_request(Purpose::DropStale, ctx));
            }
            _ => self.stale_contact = None,
        }
        actions
    }

    /// After a pending change: de-register first when a binding is live, else carry it out.
    fn resolve(&mut self, pending: Pending, ctx: &World<'_>) -> Vec<Action> {
        if self.is_bound(ctx.now) {
            self.pending = Some(pending);
            return vec![self.start_request(Purpose::Unregister, ctx)];
        }
        // Leader mode: going away before our first 200, the binding the previous leader left
        // for this gateway (same Call-ID) is ours to remove.
        if matches!(pending, Pending::Remove) && self.stale_contact.is_some() {
            self.pending = Some(pending);
            return vec![self.start_request(Purpose::DropStale, ctx)];
        }
        match pending {
            Pending::Remove => vec![Action::Finished],
            Pending::Replace(spec) => {
                self.switch_to(*spec);
                vec![self.start_request(Purpose::Register, ctx)]
            }
        }
    }

    fn retry_later(&mut self, ctx: &World<'_>) -> Action {
        let delay = failure_delay(self.backoff_attempt, ctx.settings.failure_retry_interval, rand::thread_rng().gen());
        self.backoff_attempt = self.backoff_attempt.saturating_add(1);
        self.wake_at(after(ctx.now, delay))
    }

    fn status_job(&self, ok: bool, reason: String, cseq: String, expires: u64, ctx: &World<'_>) -> Action {
        let status = RegisterStatus::Response {
            ok,
            reason,
            cseq,
            call_id: self.spec.call_id.clone(),
            timestamp: ctx.wall,
            expires,
        };
        self.store_status(status, expires, ctx)
    }

    /// The carrier's `register_status` in leader mode; this SBC's part of it (the store writer
    /// writes the cluster's aggregate) when every SBC registers.
    fn store_status(&self, status: RegisterStatus, expires: u64, ctx: &World<'_>) -> Action {
        let voip_carrier_sid = self.spec.voip_carrier_sid.clone();
        match self.spec.sent_by.sbc() {
            None => Action::Store(StoreJob::Status { voip_carrier_sid, status }),
            Some(sbc) => {
                let wall = ctx.wall.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                Action::Store(StoreJob::SbcStatus {
                    voip_carrier_sid,
                    sbc: sbc.to_string(),
                    status,
                    until: wall.saturating_add(expires),
                })
            }
        }
    }

    fn eph_refresh(&self, expires: u64) -> Action {
        Action::Store(StoreJob::EphRefresh {
            gateway: EphGateway {
                voip_carrier_sid: self.spec.voip_carrier_sid.clone(),
                sip_gateway_sid: self.spec.sip_gateway_sid.clone(),
                host: self.spec.host.clone(),
                port: self.spec.port,
                transport: self.spec.transport(),
            },
            expires,
        })
    }

    fn granted_expires(&self, message: &SipMessage, flight: &InFlight, ctx: &World<'_>) -> Duration {
        Duration::from_secs(granted_expires(
            message,
            &flight.contact_user_host,
            ctx.settings.default_expires.as_secs(),
            ctx.settings.min_expires.as_secs(),
        ))
    }
}

enum Outcome {
    Final {
        status: u16,
        reason: String,
        message: SipMessage,
    },
    /// No response: drachtio refused the request or the connection was not there.
    Error(UacError),
}

/// The first challenge of that header we can answer (MD5 or no algorithm given).
fn usable_challenge(message: &SipMessage, header: &str) -> Option<Challenge> {
    message
        .header_all(header)
        .filter_map(|v| parse_challenge(v).ok())
        .find(|c| c.algorithm.as_deref().is_none_or(|a| a.eq_ignore_ascii_case("MD5")))
}

/// The expires a 200 grants (spec 6.4): what we asked for, overridden by an `Expires` header,
/// overridden by the `expires` parameter of the Contact (ours when the registrar lists several
/// bindings, else the first — Node always took the first); unparsable or below `min` → `min`.
///
/// Never above what we asked for (`default`): a registrar may shorten a registration, not
/// lengthen it (RFC 3261 §10.3), and a huge value (`Expires: 99999999999999999999`) must not
/// push the refresh out of reach or overflow the timer arithmetic. `min` wins over both.
pub fn granted_expires(message: &SipMessage, our_user_host: &str, default: u64, min: u64) -> u64 {
    let mut expires = Some(default);
    if let Some(h) = message.header("Expires") {
        expires = js_parse_int(h);
    }
    if let Ok(Contacts::List(contacts)) = parse_contacts(message) {
        let ours = contacts.iter().find(|c| {
            let uri = c.uri_str();
            let without_scheme = uri.split_once(':').map_or(uri, |(_, rest)| rest);
            let user_host = without_scheme.split([';', '?']).next().unwrap_or("");
            user_host.eq_ignore_ascii_case(our_user_host)
        });
        if let Some(param) = ours.or(contacts.first()).and_then(|c| c.expires_param()) {
            expires = js_parse_int(param);
        }
    }
    match expires {
        Some(e) => e.min(default).max(min),
        None => min,
    }
}

/// JavaScript `parseInt(x, 10)` for what matters here: leading blanks, then digits; a sign or
/// no digit at all gives `None` (NaN or negative, both end up as the minimum).
fn js_parse_int(text: &str) -> Option<u64> {
    let t = text.trim_start().trim_start_matches('+');
    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

fn random_hex(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0')).collect()
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;
