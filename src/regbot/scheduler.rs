//! The regbot scheduler: ONE thread that owns every regbot, their timers (a heap of
//! deadlines) and their REGISTERs in flight. It waits on all of them at once with a
//! `crossbeam_channel::Select` over the control channels and every in-flight receiver, with
//! the earliest deadline as timeout, so no REGISTER ever blocks another.
//!
//! Commands come from the leader thread (leadership, wanted regbots); database, Redis and DNS
//! work goes to the store writer. The scheduler itself never blocks on I/O.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{never, Receiver, Select, Sender, TrySendError};
use log::{debug, info, warn};

use super::addresses::PublicAddresses;
use super::reconcile::{plan, Wanted};
use super::register_status::RegisterStatus;
use super::registration::{Action, Registration, World};
use super::status::{RegbotRole, RegbotSnapshot, StatusRequest};
use super::store_writer::StoreJob;
use super::timing::after;
use super::RegbotMode;
use super::RegbotSettings;
use crate::drachtio::{ConnectionEvent, DrachtioHandle, UacError, UacEvent};

/// Longest sleep when no timer is armed (any channel wakes us earlier).
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// Longest the scheduler waits for de-registrations at shutdown before giving up on them.
const UNREGISTER_WAIT: Duration = Duration::from_secs(5);

/// From the leader thread.
#[derive(Debug)]
pub enum SchedulerCmd {
    /// We hold (true) or lost (false) the cluster's regbot role (in `every` mode: true once,
    /// as every SBC registers).
    Leadership(bool),
    /// The regbots that should run now.
    Apply(Wanted),
    /// Leader mode: the role is ours until this instant, short of the key's TTL. Sent after
    /// every claim and extension. Past it, the scheduler stops its regbots by itself, however
    /// long the leader thread is stuck on Redis, so two SBCs never register at once; the next
    /// lease resumes them.
    Lease(Instant),
    /// The daemon stops: de-register every binding we hold, withdraw from the cluster status,
    /// then answer on `done` once the store writer has written it all. Nothing is registered
    /// after this.
    UnregisterAll { done: Sender<()> },
}

/// De-registering everything before the daemon stops.
struct Closing {
    done: Sender<()>,
    /// Carrier and, in every mode, the SBC id it was registered under.
    carriers: HashSet<(String, Option<String>)>,
    deadline: Instant,
}

/// What woke the scheduler.
// Built and matched once per wake-up: boxing the UAC event would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Shutdown,
    Command(Option<SchedulerCmd>),
    Connection(Option<ConnectionEvent>),
    Status(Option<StatusRequest>),
    Uac(String, UacEvent),
    Timeout,
}

pub struct Scheduler {
    settings: RegbotSettings,
    drachtio: DrachtioHandle,
    commands: Receiver<SchedulerCmd>,
    events: Receiver<ConnectionEvent>,
    status: Receiver<StatusRequest>,
    shutdown: Receiver<()>,
    store: Sender<StoreJob>,
    leader: bool,
    public: Option<PublicAddresses>,
    sip_domain: Option<String>,
    /// By gateway sid (which is also the Call-ID).
    regbots: HashMap<String, Registration>,
    /// Gateway sids of the regbots with a REGISTER in flight: `wait` selects on their
    /// receivers without walking every regbot (10,000 of them on a large SBC) at each wake-up.
    in_flight: HashSet<String>,
    /// (deadline, timer generation, gateway sid); stale generations are skipped.
    timers: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// The last wanted set: applied again when a lapsed lease is renewed, and in `every` mode
    /// when our public address changes (the Call-IDs and Contacts are made from it), or once
    /// the first address is known.
    last_wanted: Option<Wanted>,
    closing: Option<Closing>,
    /// Everything was de-registered for the shutdown.
    closed: bool,
    /// Leader mode: until when the role is ours ([`SchedulerCmd::Lease`]).
    lease_until: Option<Instant>,
    /// The lease ran out: the regbots were stopped until the next lease.
    lapsed: bool,
}

impl Scheduler {
    pub fn new(
        settings: RegbotSettings,
        drachtio: DrachtioHandle,
        commands: Receiver<SchedulerCmd>,
        events: Receiver<ConnectionEvent>,
        status: Receiver<StatusRequest>,
        store: Sender<StoreJob>,
        shutdown: Receiver<()>,
    ) -> Scheduler {
        Scheduler {
            settings,
            drachtio,
            commands,
            events,
            status,
            shutdown,
            store,
            leader: false,
            public: None,
            sip_domain: None,
            regbots: HashMap::new(),
            in_flight: HashSet::new(),
            timers: BinaryHeap::new(),
            last_wanted: None,
            closing: None,
            closed: false,
            lease_until: None,
            lapsed: false,
        }
    }

    fn every(&self) -> bool {
        self.settings.mode == RegbotMode::Every
    }

    /// This SBC's id in `every` mode: its public UDP address as drachtio announced it (what
    /// `sbc_addresses` publishes), else the first public address of any transport.
    fn sbc_id(&self) -> Option<String> {
        let p = self.public.as_ref()?;
        p.udp.clone().or_else(|| p.tls.clone()).or_else(|| p.wss.clone())
    }

    /// Runs until shutdown. What is de-registered before that comes as
    /// [`SchedulerCmd::UnregisterAll`] (every mode; a leader without a leader-mode successor);
    /// anything else is left in place for the next leader.
    pub fn run(mut self) {
        loop {
            self.check_lease();
            self.fire_due_timers();
            match self.wait() {
                Wake::Shutdown => break,
                Wake::Timeout => {}
                Wake::Command(Some(cmd)) => self.on_command(cmd),
                Wake::Command(None) => self.commands = never(),
                Wake::Connection(Some(ev)) => self.on_connection(ev),
                Wake::Connection(None) => self.events = never(),
                Wake::Status(Some(req)) => {
                    let _ = req.reply.send(self.snapshot());
                }
                Wake::Status(None) => self.status = never(),
                Wake::Uac(sid, ev) => self.with_regbot(&sid, |rb, ctx| rb.on_event(ev, ctx)),
            }
            self.check_closing();
        }
        if self.regbots.is_empty() {
            info!("regbot scheduler stopped");
        } else {
            info!("regbot scheduler stopped with {} regbots (registrations left in place)", self.regbots.len());
        }
    }

    fn wait(&self) -> Wake {
        let now = Instant::now();
        let mut timeout = self.timers.peek().map_or(IDLE_WAIT, |Reverse((at, _, _))| at.saturating_duration_since(now));
        if let Some(closing) = &self.closing {
            timeout = timeout.min(closing.deadline.saturating_duration_since(now));
        }
        if let Some(until) = self.lease_until.filter(|_| self.leader) {
            timeout = timeout.min(until.saturating_duration_since(now));
        }
        let in_flight: Vec<(&String, &Receiver<UacEvent>)> = self
            .in_flight
            .iter()
            .filter_map(|sid| self.regbots.get(sid).and_then(Registration::receiver).map(|rx| (sid, rx)))
            .collect();
        let mut sel = Select::new();
        let i_shutdown = sel.recv(&self.shutdown);
        let i_commands = sel.recv(&self.commands);
        let i_events = sel.recv(&self.events);
        let i_status = sel.recv(&self.status);
        let first_uac = i_status + 1;
        for (_, rx) in &in_flight {
            sel.recv(rx);
        }
        let Ok(op) = sel.select_timeout(timeout) else {
            return Wake::Timeout;
        };
        let i = op.index();
        if i == i_shutdown {
            let _ = op.recv(&self.shutdown);
            Wake::Shutdown
        } else if i == i_commands {
            Wake::Command(op.recv(&self.commands).ok())
        } else if i == i_events {
            Wake::Connection(op.recv(&self.events).ok())
        } else if i == i_status {
            Wake::Status(op.recv(&self.status).ok())
        } else {
            let (sid, rx) = in_flight[i - first_uac];
            // A sender dropped without a final response: the connection went away.
            let ev = op.recv(rx).unwrap_or(UacEvent::Failed(UacError::Disconnected));
            Wake::Uac(sid.clone(), ev)
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, gen, sid))) = self.timers.pop() else { break };
            self.with_regbot(&sid, |rb, ctx| rb.on_due(gen, ctx));
        }
    }

    fn on_command(&mut self, cmd: SchedulerCmd) {
        // Connection events first: the first reconcile must see the public address that the
        // connect which started the election announced.
        while let Ok(ev) = self.events.try_recv() {
            self.on_connection(ev);
        }
        if self.closing.is_some() || self.closed {
            debug!("regbot: stopping, ignoring {cmd:?}");
            return;
        }
        match cmd {
            SchedulerCmd::UnregisterAll { done } => self.unregister_all(done),
            SchedulerCmd::Leadership(true) => {
                self.leader = true;
                info!("regbot role taken: registrations start with the next reconcile");
            }
            SchedulerCmd::Leadership(false) => {
                self.lease_until = None;
                self.lapsed = false;
                self.stand_down();
            }
            SchedulerCmd::Lease(until) => {
                self.lease_until = Some(until);
                if self.lapsed {
                    self.lapsed = false;
                    self.leader = true;
                    info!("regbot role confirmed again: restarting the regbots");
                    if let Some(wanted) = self.last_wanted.clone() {
                        self.apply(wanted);
                    }
                }
            }
            SchedulerCmd::Apply(wanted) if self.leader => self.apply(wanted),
            SchedulerCmd::Apply(_) => debug!("regbot: not the leader, ignoring a reconcile"),
        }
    }

    /// Another SBC has the role: stop every regbot without de-registering (the new leader
    /// refreshes the same bindings) and delete the ephemeral gateways (spec 6.5).
    fn stand_down(&mut self) {
        self.leader = false;
        let carriers: HashSet<String> = self.regbots.values().map(|rb| rb.spec().voip_carrier_sid.clone()).collect();
        info!("regbot role lost: stopping {} regbots", self.regbots.len());
        self.regbots.clear();
        self.in_flight.clear();
        self.timers.clear();
        for voip_carrier_sid in carriers {
            self.store_job(StoreJob::EphDelete { voip_carrier_sid });
        }
    }

    /// Leader mode: past the lease, stop registering (see [`SchedulerCmd::Lease`]).
    fn check_lease(&mut self) {
        let expired = self.lease_until.is_some_and(|until| Instant::now() >= until);
        if self.leader && !self.every() && expired {
            warn!("regbot: the role could not be confirmed in time (lease ran out): stopping the regbots");
            self.stand_down();
            self.lapsed = true;
        }
    }

    /// Retires every regbot (each de-registers if it holds a binding); [`Self::check_closing`]
    /// finishes once they are all gone or [`UNREGISTER_WAIT`] has passed.
    fn unregister_all(&mut self, done: Sender<()>) {
        let carriers: HashSet<(String, Option<String>)> = self
            .regbots
            .values()
            .map(|rb| (rb.spec().voip_carrier_sid.clone(), rb.spec().sent_by.sbc().map(str::to_string)))
            .collect();
        info!("regbot: de-registering {} regbots before stopping", self.regbots.len());
        self.leader = false;
        self.closing = Some(Closing { done, carriers, deadline: after(Instant::now(), UNREGISTER_WAIT) });
        let mut sids: Vec<String> = self.regbots.keys().cloned().collect();
        sids.sort();
        for sid in sids {
            self.with_regbot(&sid, |rb, ctx| rb.retire(ctx));
        }
        self.check_closing();
    }

    fn check_closing(&mut self) {
        let Some(closing) = &self.closing else { return };
        if !self.regbots.is_empty() && Instant::now() < closing.deadline {
            return;
        }
        if !self.regbots.is_empty() {
            warn!("regbot: {} de-registrations unanswered at shutdown", self.regbots.len());
            self.regbots.clear();
            self.in_flight.clear();
            self.timers.clear();
        }
        let Some(closing) = self.closing.take() else { return };
        let mut carriers: Vec<(String, Option<String>)> = closing.carriers.into_iter().collect();
        carriers.sort();
        for (voip_carrier_sid, sbc) in carriers {
            // Leader mode: only when this leader de-registers for good (see `cluster`).
            if let Some(sbc) = sbc {
                self.store_job(StoreJob::Withdraw { voip_carrier_sid: voip_carrier_sid.clone(), sbc });
            }
            self.store_job(StoreJob::EphDelete { voip_carrier_sid });
        }
        // The writer answers once everything above is written; if it is gone, nobody waits.
        if let Err(TrySendError::Full(StoreJob::Flush(done)) | TrySendError::Disconnected(StoreJob::Flush(done))) =
            self.store.try_send(StoreJob::Flush(closing.done))
        {
            let _ = done.send(());
        }
        // The loop keeps answering status requests until shutdown, and registers nothing.
        self.closed = true;
    }

    fn apply(&mut self, wanted: Wanted) {
        let wanted = if self.every() {
            let Some(sbc) = self.sbc_id() else {
                warn!("regbot: no public address from drachtio yet; registering once there is one");
                self.last_wanted = Some(wanted);
                return;
            };
            self.last_wanted = Some(wanted.clone());
            Wanted { specs: wanted.specs.into_iter().map(|spec| spec.for_sbc(&sbc)).collect(), ..wanted }
        } else {
            self.last_wanted = Some(wanted.clone());
            wanted
        };
        self.sip_domain = wanted.sip_domain;
        for (voip_carrier_sid, domain) in wanted.invalid_from_domain {
            warn!("regbot: carrier {voip_carrier_sid} has an invalid from domain {domain:?}");
            self.store_job(StoreJob::Status {
                voip_carrier_sid,
                status: RegisterStatus::Failure { reason: format!("Invalid from_domain {domain}") },
            });
        }
        let running: HashMap<String, String> =
            self.regbots.iter().map(|(sid, rb)| (sid.clone(), rb.spec().identity())).collect();
        let plan = plan(&running, &wanted.specs);
        debug!(
            "regbot reconcile: keep={} start={} replace={} retire={}",
            plan.keep.len(),
            plan.start.len(),
            plan.replace.len(),
            plan.retire.len()
        );

        // A new regbot inherits the failure count of a retired one of the same carrier, host
        // and port (spec 6.2).
        let inherited: HashMap<String, u32> = plan
            .retire
            .iter()
            .filter_map(|sid| self.regbots.get(sid))
            .map(|rb| (rb.spec().failure_key(), rb.consecutive_failures()))
            .collect();
        let wanted_carriers: HashSet<&str> = wanted.specs.iter().map(|s| s.voip_carrier_sid.as_str()).collect();
        // carrier → the SBC id its regbots registered under (every mode).
        let mut emptied_carriers: HashMap<String, Option<String>> = HashMap::new();
        for sid in &plan.retire {
            if let Some(rb) = self.regbots.get(sid) {
                let carrier = rb.spec().voip_carrier_sid.clone();
                info!("stopping regbot for {} (gateway {sid} no longer wanted)", rb.spec().aor());
                if !wanted_carriers.contains(carrier.as_str()) {
                    emptied_carriers.insert(carrier, rb.spec().sent_by.sbc().map(str::to_string));
                }
            }
            self.with_regbot(sid, |rb, ctx| rb.retire(ctx));
        }
        let mut emptied_carriers: Vec<(String, Option<String>)> = emptied_carriers.into_iter().collect();
        emptied_carriers.sort();
        for (voip_carrier_sid, sbc) in emptied_carriers {
            if let Some(sbc) = sbc {
                self.store_job(StoreJob::Withdraw { voip_carrier_sid: voip_carrier_sid.clone(), sbc });
            }
            self.store_job(StoreJob::EphDelete { voip_carrier_sid });
        }

        // New and changed regbots go out in batches (JAMBONES_REGBOT_BATCH_SIZE /
        // _BATCH_SLEEP_MS), spread over time instead of sleeping on this thread.
        let now = Instant::now();
        let batch = u32::try_from(self.settings.batch_size.max(1)).unwrap_or(u32::MAX);
        let batch_sleep = self.settings.batch_sleep;
        let count = u32::try_from(plan.replace.len() + plan.start.len()).unwrap_or(u32::MAX);
        let mut slots = (0..count).map(move |k| after(now, batch_sleep.saturating_mul(k / batch)));
        for spec in plan.replace {
            let at = slots.next().unwrap_or(now);
            info!("regbot for {} changed configuration", spec.aor());
            let sid = spec.sip_gateway_sid.clone();
            self.with_regbot(&sid, move |rb, ctx| rb.replace(spec, at, ctx));
        }
        let wanted_contacts = &wanted.leader_contacts;
        for spec in plan.start {
            let at = slots.next().unwrap_or(now);
            info!("starting regbot for {}", spec.aor());
            let failures = inherited.get(&spec.failure_key()).copied().unwrap_or(0);
            let sid = spec.sip_gateway_sid.clone();
            let stale = wanted_contacts.get(&sid).cloned();
            let mut rb = Registration::new(spec, failures).with_stale_contact(stale);
            let wake = rb.wake_at(at);
            if !self.run_actions(&mut rb, vec![wake]) {
                self.keep(sid, rb);
            }
        }
    }

    fn on_connection(&mut self, ev: ConnectionEvent) {
        let ConnectionEvent::Connected(info) = ev else {
            // REGISTERs in flight fail with `Disconnected` through their own receivers.
            return;
        };
        let public = PublicAddresses::from_hostports(&info.hostports);
        let changed = self.public.as_ref().is_some_and(|old| *old != public);
        let reconnect = self.public.is_some();
        self.public = Some(public);
        if self.every() && self.leader && !self.closed && self.closing.is_none() && (changed || !reconnect) {
            // Our Call-IDs and Contacts are made from our address: a new one replaces every
            // regbot (each de-registers its old binding first).
            if let Some(wanted) = self.last_wanted.clone() {
                info!("regbot: public address now {:?}: registering from it", self.sbc_id());
                self.apply(wanted);
            }
            if changed {
                return;
            }
        }
        if !reconnect || !self.leader {
            return;
        }
        // Back after an outage: retry what failed meanwhile without waiting out the backoff;
        // if our public address changed, every Contact is stale: refresh them all.
        let now = Instant::now();
        let batch = u32::try_from(self.settings.batch_size.max(1)).unwrap_or(u32::MAX);
        let mut due: Vec<String> = self
            .regbots
            .iter()
            .filter(|(_, rb)| rb.is_idle() && (changed || rb.is_failing()))
            .map(|(sid, _)| sid.clone())
            .collect();
        due.sort();
        if changed {
            info!("drachtio public addresses changed: refreshing {} registrations", due.len());
        }
        for (n, sid) in due.into_iter().enumerate() {
            let at = after(now, self.settings.batch_sleep.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX) / batch));
            self.with_regbot(&sid, |rb, _| vec![rb.wake_at(at)]);
        }
    }

    fn snapshot(&self) -> RegbotSnapshot {
        let now = Instant::now();
        let mut regbots: Vec<_> = self.regbots.values().map(|rb| rb.info(now)).collect();
        regbots
            .sort_by(|a, b| (&a.voip_carrier_sid, &a.sip_gateway_sid).cmp(&(&b.voip_carrier_sid, &b.sip_gateway_sid)));
        RegbotSnapshot {
            role: match (self.every(), self.leader) {
                (true, _) => RegbotRole::Every,
                (false, true) => RegbotRole::Leader,
                (false, false) => RegbotRole::Standby,
            },
            total: self.regbots.len(),
            registered: self.regbots.values().filter(|rb| rb.is_registered()).count(),
            failing: self.regbots.values().filter(|rb| rb.is_failing()).count(),
            regbots,
        }
    }

    /// Calls `f` on one regbot and carries out what it asks for.
    fn with_regbot<F>(&mut self, sid: &str, f: F)
    where
        F: FnOnce(&mut Registration, &World<'_>) -> Vec<Action>,
    {
        let Some(mut rb) = self.regbots.remove(sid) else {
            return;
        };
        let actions = {
            let ctx = World {
                settings: &self.settings,
                public: self.public.as_ref(),
                sip_domain: self.sip_domain.as_deref(),
                now: Instant::now(),
                wall: SystemTime::now(),
            };
            f(&mut rb, &ctx)
        };
        if self.run_actions(&mut rb, actions) {
            self.in_flight.remove(sid);
        } else {
            self.keep(sid.to_string(), rb);
        }
    }

    /// Puts a regbot (back) into the map, noting whether it now waits for a response.
    fn keep(&mut self, sid: String, rb: Registration) {
        if rb.receiver().is_some() {
            self.in_flight.insert(sid.clone());
        } else {
            self.in_flight.remove(&sid);
        }
        self.regbots.insert(sid, rb);
    }

    /// Returns true when the regbot finished and must be dropped.
    fn run_actions(&mut self, rb: &mut Registration, actions: Vec<Action>) -> bool {
        let mut finished = false;
        for action in actions {
            match action {
                Action::Send { sip, proxy } => rb.attach(self.drachtio.send_request(sip, Some(&proxy))),
                Action::WakeAt(at, gen) => self.timers.push(Reverse((at, gen, rb.spec().sip_gateway_sid.clone()))),
                Action::Store(job) => self.store_job(job),
                Action::Finished => finished = true,
            }
        }
        finished
    }

    fn store_job(&self, job: StoreJob) {
        match self.store.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => warn!("regbot store queue full; dropped {job:?}"),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}
