//! The device engine: everything one device does, as a sans-I/O object that a loop drives, in
//! the shape of quinn-proto's `Connection`.
//!
//! Inputs: [`Engine::handle_timeout`] (the clock reached [`Engine::poll_timeout`]),
//! [`Engine::handle_event`] (a reboot, a logon, a push, the network going down...),
//! [`Engine::handle_response`] (the answer to the last [`Transmit`]). Outputs:
//! [`Engine::poll_transmit`] (an HTTP request to move: a SyncML message or a package
//! download), [`Engine::poll_timeout`] (when to call again), [`Engine::poll_event`] (a session
//! ended, a session was missed, the device left management, its timers changed its tree).
//!
//! Owns the scheduler (triggers → sessions and modes), the session run (addresses and
//! fail-over, RespURI, signing decision, credentials and nonces: [`super::run`]), the CSP
//! timers and the effects of sessions and timers (downloads, alerts for the next package 1,
//! session requests, reboots, unenrollment). It never sees a socket, a file or the wall clock:
//! one exchange at a time is out per device, and the caller says when it is.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::run::{Reply, Request, RunOptions, SessionReport, SessionRun, TranscriptFile};
use super::{Device, SessionPlan, UnenrolledBy};
use crate::csp::dmclient::{self, MaintenanceWindow, PollConfig, PollTimetable};
use crate::schedule::{
    Action, Event, LoginPolling, NightlyError, PollSource, Scheduler, SchedulerConfig, SessionRequest, Trigger,
};
use crate::session::{ModeGate, Outcome, Summary};
use crate::tree::{ChannelOutcome, Effect, FetchOutcome, Registry};

/// How many sessions one device may start at one instant (events that ask for a session, one
/// after the other); more are dropped with a warning, so that a CSP or a server that keeps
/// asking cannot spin a device forever.
pub const MAX_SESSIONS_PER_INSTANT: usize = 16;

/// How many package downloads one device may start at one instant.
pub const MAX_FETCHES_PER_INSTANT: usize = 64;

/// Something that happened to a device.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// A session ran (completed or failed).
    Session { device: String, at: DateTime<Utc>, summary: Box<Summary> },
    /// A session came due while the network was off.
    Missed { device: String, at: DateTime<Utc>, trigger: Trigger, reason: String },
    /// The device left management (server-initiated unenroll, lost contact).
    Unenrolled { device: String, at: DateTime<Utc>, reason: String },
    /// The device's own timers changed its tree without a session (an app download or
    /// install step, an expiry): what a server would read in its next session.
    Changed { device: String, at: DateTime<Utc> },
}

impl Record {
    /// The column names over [`Record::line`]s.
    pub fn header() -> String {
        format!(
            "{:<20}  {:<32}  {:<10} {:<11} result  findings msgs=sent/received time-waiting-for-the-server",
            "time (UTC)", "device", "trigger", "mode"
        )
    }

    /// The device it is about.
    pub fn device(&self) -> &str {
        match self {
            Record::Session { device, .. }
            | Record::Missed { device, .. }
            | Record::Unenrolled { device, .. }
            | Record::Changed { device, .. } => device,
        }
    }

    /// One line for people: time, device, trigger, mode, result, findings.
    pub fn line(&self) -> String {
        match self {
            Record::Session { device, at, summary } => {
                let result = match (&summary.outcome, &summary.error) {
                    (Outcome::Completed, _) => "completed".to_string(),
                    (_, Some(e)) => format!("FAILED: {e}"),
                    _ => "FAILED".to_string(),
                };
                // A push shows the session alert it started with (1200 server-initiated on
                // Windows 10/11, 1201 with mode=Apps on Windows 8.1).
                let alert =
                    if summary.trigger == Trigger::Push { format!(" alert={}", summary.alert) } else { String::new() };
                format!(
                    "{}  {device}  {:<10} {:<11} {result}{alert}  findings={} msgs={}/{} {:.1}ms",
                    at.format("%Y-%m-%dT%H:%M:%SZ"),
                    summary.trigger.as_str(),
                    summary.mode.as_str(),
                    summary.findings.len(),
                    summary.messages_sent,
                    summary.messages_received,
                    summary.wall_us as f64 / 1000.0,
                )
            }
            Record::Missed { device, at, trigger, reason } => {
                format!("{}  {device}  {:<10} missed: {reason}", at.format("%Y-%m-%dT%H:%M:%SZ"), trigger.as_str())
            }
            Record::Unenrolled { device, at, reason } => {
                format!("{}  {device}  unenrolled: {reason}", at.format("%Y-%m-%dT%H:%M:%SZ"))
            }
            Record::Changed { device, at } => {
                format!("{}  {device}  timers changed the tree", at.format("%Y-%m-%dT%H:%M:%SZ"))
            }
        }
    }
}

/// What the engine tells its driver.
#[derive(Debug)]
pub enum Output {
    /// Something happened (for the run's records and the store).
    Record(Record),
    /// The transcript of a session that just ended (only when transcripts are on).
    Transcript { session_id: String, files: Vec<TranscriptFile> },
    /// The device's enrollment was wiped: delete this folder of key and certificate files
    /// (relative to the state directory).
    WipeFiles(std::path::PathBuf),
}

/// An HTTP request the device wants moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A SyncML message of a management session.
    Session(Request),
    /// A package download (an app or MSI install), checked by size and SHA-256.
    Fetch { url: String },
    /// A call to the push notification service (WNS): a channel request, or the service
    /// revoking or expiring the device's channels (scenario events).
    Channel(ChannelCall),
}

/// One call of a device to the push notification service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChannelCall {
    /// The DeviceID (the service wakes this device when a notification comes).
    pub device: String,
    pub op: ChannelOp,
}

/// What a [`ChannelCall`] asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum ChannelOp {
    /// A channel for `app` (PFN or AppId); the answer goes to `csp` at `node`.
    Request { csp: String, node: String, app: String },
    /// The service revokes every channel of the device.
    Revoke,
    /// Every channel of the device expires.
    Expire,
}

/// What the service did with one channel, for the CSP that asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChannelReport {
    pub csp: String,
    pub node: String,
    pub outcome: ChannelOutcome,
}

impl ChannelCall {
    /// The answer when no push notification service is there: a request gets no channel;
    /// revoking or expiring changes nothing.
    pub fn unanswered(&self, why: &str) -> Vec<ChannelReport> {
        match &self.op {
            ChannelOp::Request { csp, node, .. } => vec![ChannelReport {
                csp: csp.clone(),
                node: node.clone(),
                outcome: ChannelOutcome::Unavailable(why.to_string()),
            }],
            ChannelOp::Revoke | ChannelOp::Expire => Vec::new(),
        }
    }
}

/// The answer to a [`Transmit`], in the same kind. A [`Transmit::Channel`] is answered with
/// [`Engine::handle_channel`] by the driver that reaches the push notification service; an
/// exchange that cannot carry it answers with a failed [`Response::Fetch`], and the request gets
/// no channel.
#[derive(Debug, Clone)]
pub enum Response {
    Session(Reply),
    Fetch(FetchOutcome),
}

/// Settings of a device's engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineOptions {
    /// Refuse commands outside the Machine-mode set with 405 (`--strict`).
    pub strict: bool,
    /// Keep a transcript of every session ([`Output::Transcript`]).
    pub transcript: bool,
    /// The driver holds the enrollment key, so it can sign messages.
    pub can_sign: bool,
    /// A store keeps the device: a session starts only once its SessionID is covered by a
    /// durable lease ([`Device::needs_lease`]); until then the engine waits
    /// ([`Engine::lease_wanted`]), so that a crash never makes it send a SessionID twice.
    pub leases: bool,
}

enum Work {
    Fetch { csp: &'static str, node: String, url: String },
    Channel(ChannelOp),
    Session(SessionRequest),
}

enum Active {
    Session(Box<SessionRun>),
    Fetch { csp: &'static str, node: String, sent: bool, url: String },
    Channel { sent: bool, op: ChannelOp },
}

/// One device and everything it does.
pub struct Engine {
    pub device: Device,
    pub scheduler: Scheduler,
    /// When a device that never synced runs its first session (the post-enrollment session);
    /// set it to `None` to leave the first session to the device's triggers.
    pub first_session: Option<DateTime<Utc>>,
    pub options: EngineOptions,
    /// The DMClient poll values the scheduler's timetable was built from.
    poll: Option<PollConfig>,
    now: DateTime<Utc>,
    queue: VecDeque<Work>,
    active: Option<Active>,
    out: VecDeque<Output>,
    sessions_now: usize,
    fetches_now: usize,
    lease_wanted: bool,
    /// Channel changes the scheduler reported, for the CSPs (applied with the registry).
    pending_channel_reports: Vec<ChannelReport>,
}

impl Engine {
    /// A device whose schedule starts at `now`; `seed` drives its jitter (see
    /// [`crate::schedule::device_seed`]). A device that never synced is taken as enrolled at
    /// `now` and starts with its post-enrollment session, as Windows does.
    pub fn new(mut device: Device, seed: u64, now: DateTime<Utc>) -> Result<Engine, NightlyError> {
        let unenrolled = device.unenrolled.is_some();
        let first_session = (device.sessions == 0).then_some(now);
        if first_session.is_some() {
            device.enrolled_at = now;
        }
        let cfg = SchedulerConfig::from_settings(device.profile, &device.settings, device.enrolled_at, seed)?;
        let scheduler = Scheduler::new(cfg, None, device.users.clone(), now);
        let last_success = device.last_success;
        let mut e = Engine {
            device,
            scheduler,
            first_session,
            options: EngineOptions::default(),
            poll: None,
            now,
            queue: VecDeque::new(),
            active: None,
            out: VecDeque::new(),
            sessions_now: 0,
            fetches_now: 0,
            lease_wanted: false,
            pending_channel_reports: Vec::new(),
        };
        // The lost-contact countdown goes on from the last session that completed.
        if let Some(t) = last_success {
            e.scheduler.session_finished(t, true);
        }
        if unenrolled {
            e.scheduler.unenroll();
        }
        e.refresh_schedule();
        Ok(e)
    }

    /// The earliest instant this device has something to do (a scheduler timer, a CSP timer,
    /// its first session); `None` for a device that left management. While work is under way
    /// the driver goes on with [`Engine::poll_transmit`] first.
    pub fn poll_timeout(&mut self, registry: &Registry) -> Option<DateTime<Utc>> {
        if self.scheduler.unenrolled() {
            return None;
        }
        let env = self.device.env(self.device.enrolled_at);
        let csp = registry.next_deadline(&mut self.device.tree, &env);
        [self.first_session, self.scheduler.next_deadline(), csp].into_iter().flatten().min()
    }

    /// True while a session or a download is under way or waiting to start.
    pub fn is_busy(&self) -> bool {
        self.active.is_some() || !self.queue.is_empty()
    }

    /// The clock reached `now`: CSP timers that are due run, the first session and the
    /// scheduler's due actions are queued.
    pub fn handle_timeout(&mut self, registry: &Registry, now: DateTime<Utc>) {
        self.set_now(now);
        self.flush_channel_reports(registry);
        let later = self.run_timers(registry);
        if self.device.tree.is_dirty() {
            self.device.tree.commit();
            self.record(Record::Changed { device: self.device.id.to_string(), at: now });
        }
        let mut actions = Vec::new();
        match self.first_session.take() {
            Some(at) if at <= now => actions.push(Action::Session(SessionRequest::one_shot(
                Trigger::Enrollment,
                self.device.profile,
                self.scheduler.users(),
                now,
                false,
            ))),
            not_yet => self.first_session = not_yet,
        }
        if self.scheduler.next_deadline().is_some_and(|d| d <= now) {
            actions.extend(self.scheduler.on_deadline(now));
        }
        self.actions(actions);
        self.effects(later);
        self.settle();
    }

    /// Something happened to the device at `now` (a reboot, a logon, a push, the network...).
    pub fn handle_event(&mut self, now: DateTime<Utc>, event: Event) {
        self.set_now(now);
        let actions = self.scheduler.on_event(now, event);
        self.actions(actions);
        self.settle();
    }

    /// The next request to move, if the device has one now. Call until `None`; then wait for
    /// the answer of what is out ([`Engine::handle_response`]) or for [`Engine::poll_timeout`].
    pub fn poll_transmit(&mut self, registry: &Registry) -> Option<Transmit> {
        self.flush_channel_reports(registry);
        for _ in 0..MAX_SESSIONS_PER_INSTANT + MAX_FETCHES_PER_INSTANT + 2 {
            match &mut self.active {
                Some(Active::Session(run)) => {
                    if let Some(req) = run.poll_request(registry, &mut self.device) {
                        return Some(Transmit::Session(req));
                    }
                    if !run.is_done() {
                        return None;
                    }
                    self.session_done();
                }
                Some(Active::Fetch { sent, url, .. }) => {
                    if *sent {
                        return None;
                    }
                    *sent = true;
                    return Some(Transmit::Fetch { url: url.clone() });
                }
                Some(Active::Channel { sent, op }) => {
                    if *sent {
                        return None;
                    }
                    *sent = true;
                    return Some(Transmit::Channel(ChannelCall { device: self.device.id.to_string(), op: op.clone() }));
                }
                None => {
                    if self.lease_wanted {
                        return None;
                    }
                    if !self.start_next(registry) {
                        self.settle();
                        return None;
                    }
                }
            }
        }
        None
    }

    /// The answer to the last [`Transmit`].
    pub fn handle_response(&mut self, registry: &Registry, response: Response) {
        let now = self.now;
        match (&mut self.active, response) {
            (Some(Active::Session(run)), Response::Session(reply)) => {
                run.handle_reply(registry, &mut self.device, reply, now);
                if run.is_done() {
                    self.session_done();
                }
            }
            (Some(Active::Fetch { .. }), Response::Fetch(outcome)) => {
                let Some(Active::Fetch { csp, node, .. }) = self.active.take() else { return };
                let env = self.device.env(now);
                let effects = registry.on_fetch(&mut self.device.tree, &env, csp, &node, &outcome);
                self.effects(effects);
            }
            (Some(Active::Channel { .. }), Response::Fetch(outcome)) => {
                let Some(Active::Channel { op, .. }) = self.active.take() else { return };
                let call = ChannelCall { device: self.device.id.to_string(), op };
                self.channel_reports(registry, call.unanswered(&format!("{outcome:?}")));
            }
            _ => tracing::warn!(device = %self.device.id, "an answer came for nothing the device asked; ignored"),
        }
    }

    /// The push notification service is a new one (a run hosting its own): every channel the
    /// device holds is renewed at its next timeout ([`dmclient::renew_channels`]).
    pub fn renew_push_channels(&mut self) {
        dmclient::renew_channels(&mut self.device.tree, self.now);
    }

    /// The push notification service's answer to the last [`Transmit::Channel`].
    pub fn handle_channel(&mut self, registry: &Registry, reports: Vec<ChannelReport>) {
        if !matches!(self.active, Some(Active::Channel { .. })) {
            tracing::warn!(device = %self.device.id, "a channel answer came for nothing the device asked; ignored");
            return;
        }
        self.active = None;
        self.channel_reports(registry, reports);
    }

    /// True when the next session waits for its SessionID to be reserved in the store (see
    /// [`EngineOptions::leases`]): reserve, then [`Engine::lease_granted`].
    pub fn lease_wanted(&self) -> bool {
        self.lease_wanted
    }

    /// The store reserved SessionIDs for this device ([`Device::session_lease`] moved on), or
    /// `refused` says why it could not: the waiting sessions are then dropped as missed.
    pub fn lease_granted(&mut self, refused: Option<String>) {
        self.lease_wanted = false;
        if let Some(reason) = refused {
            let now = self.now;
            for w in std::mem::take(&mut self.queue) {
                match w {
                    Work::Session(req) => self.record(Record::Missed {
                        device: self.device.id.to_string(),
                        at: now,
                        trigger: req.trigger,
                        reason: format!("no SessionID could be reserved: {reason}"),
                    }),
                    fetch => self.queue.push_back(fetch),
                }
            }
        }
    }

    /// What happened since the last call, oldest first.
    pub fn poll_event(&mut self) -> Option<Output> {
        let next = self.out.pop_front();
        if next.is_none() && self.out.capacity() > 0 {
            // An idle device holds no room for outputs (a fleet holds a million idle devices).
            self.out = VecDeque::new();
        }
        next
    }

    /// Re-reads the DMClient values that drive the schedule (poll timetable, login polling,
    /// lost contact): a server may change them in any session.
    fn refresh_schedule(&mut self) {
        let tree = &self.device.tree;
        let provider = &self.device.provider_id;
        let cfg = dmclient::poll_config(tree, provider);
        if cfg != self.poll {
            self.poll = cfg;
            let source = cfg.map(|c| {
                let table = PollTimetable::new(self.device.enrolled_at, c)
                    .with_maintenance(MaintenanceWindow::from_settings(&self.device.settings));
                Box::new(move |t| table.next_after(t)) as PollSource
            });
            self.scheduler.set_poll_source(source, self.now);
            if let Some(c) = cfg {
                self.scheduler.set_login_polling(LoginPolling {
                    poll_on_login: c.poll_on_login,
                    all_users_poll_on_first_login: c.all_users_poll_on_first_login,
                });
            }
        }
        self.scheduler.set_lost_contact_days(dmclient::lost_contact_days(tree, provider));
    }

    fn set_now(&mut self, now: DateTime<Utc>) {
        if now != self.now || !self.is_busy() {
            self.sessions_now = 0;
            self.fetches_now = 0;
        }
        self.now = self.now.max(now);
    }

    /// Runs the CSP timers that are due by now; downloads they ask for go first in the queue,
    /// alerts are kept for the next package 1, and the other effects are returned.
    fn run_timers(&mut self, registry: &Registry) -> Vec<Effect> {
        let mut rest = Vec::new();
        for _ in 0..MAX_FETCHES_PER_INSTANT {
            let Some(effects) = self.device.due_timers(registry, self.now) else { break };
            rest.extend(self.local_effects(effects));
        }
        rest
    }

    /// Starts the next queued work; false when there is none. Before a session, CSP timers
    /// that came due (a download just finished) are brought up to date, so that what they
    /// change is in the session.
    fn start_next(&mut self, registry: &Registry) -> bool {
        if matches!(self.queue.front(), Some(Work::Session(_))) {
            let later = self.run_timers(registry);
            self.effects(later);
        }
        let Some(work) = self.queue.pop_front() else { return false };
        if self.queue.is_empty() {
            // Nor room for work while none waits.
            self.queue = VecDeque::new();
        }
        match work {
            Work::Fetch { csp, node, url } => {
                tracing::info!(device = %self.device.id, url, "downloading package");
                self.active = Some(Active::Fetch { csp, node, sent: false, url });
            }
            Work::Channel(op) => {
                if let (ChannelOp::Request { csp, node, .. }, false) = (&op, self.scheduler.online()) {
                    // The WNS client cannot reach the service either.
                    let outcome = ChannelOutcome::Unavailable("the network is off".into());
                    let report = ChannelReport { csp: csp.clone(), node: node.clone(), outcome };
                    self.channel_reports(registry, vec![report]);
                    return true;
                }
                self.active = Some(Active::Channel { sent: false, op });
            }
            Work::Session(req) => {
                if self.scheduler.unenrolled() {
                    return true;
                }
                if self.options.leases && self.device.needs_lease() {
                    self.queue.push_front(Work::Session(req));
                    self.lease_wanted = true;
                    return false;
                }
                let opts = RunOptions {
                    trigger: req.trigger,
                    plan: Some(SessionPlan::from_request(&req, self.device.profile)),
                    extra_alerts: Vec::new(),
                    gate: Box::new(ModeGate { interactive: req.interactive, strict: self.options.strict }),
                    transcript: self.options.transcript,
                    can_sign: self.options.can_sign,
                };
                let run = SessionRun::begin(registry, &mut self.device, opts, self.now);
                self.active = Some(Active::Session(Box::new(run)));
            }
        }
        true
    }

    fn session_done(&mut self) {
        let Some(Active::Session(mut run)) = self.active.take() else { return };
        let files = run.take_transcript();
        let session_id = run.session_id().to_string();
        let Some(report) = run.finish() else { return };
        let SessionReport { summary, error, effects, .. } = report;
        let now = self.now;
        self.scheduler.session_finished(now, error.is_none());
        if self.options.transcript {
            self.out.push_back(Output::Transcript { session_id, files });
        }
        let rest = self.local_effects(effects);
        self.refresh_schedule();
        self.record(Record::Session { device: self.device.id.to_string(), at: now, summary: Box::new(summary) });
        self.effects(rest);
    }

    /// Queues the scheduler's actions: sessions to run, missed sessions and unenrollments to
    /// report.
    fn actions(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Session(req) => {
                    if self.scheduler.unenrolled() {
                        continue;
                    }
                    if self.sessions_now >= MAX_SESSIONS_PER_INSTANT {
                        tracing::warn!(device = %self.device.id, trigger = %req.trigger, "too many sessions asked for at one instant; this one is dropped");
                        continue;
                    }
                    self.sessions_now += 1;
                    self.queue.push_back(Work::Session(req));
                }
                Action::Missed { at, trigger, reason } => {
                    self.record(Record::Missed { device: self.device.id.to_string(), at, trigger, reason })
                }
                Action::Unenroll { at, reason } => {
                    self.unenroll(UnenrolledBy::LostContact, at);
                    self.record(Record::Unenrolled { device: self.device.id.to_string(), at, reason });
                }
                Action::Channel { event, .. } => match event {
                    Event::RevokeChannel => self.queue.push_back(Work::Channel(ChannelOp::Revoke)),
                    Event::ExpireChannel => self.queue.push_back(Work::Channel(ChannelOp::Expire)),
                    // A notification came while the network was off: the push channel reports it
                    // (Push/Status 7, the DMClient CSP page).
                    _ => self.pending_channel_reports.extend(
                        dmclient::provider_ids(&self.device.tree).into_iter().map(|id| ChannelReport {
                            csp: "DMClient".into(),
                            node: format!("Provider/{id}/Push"),
                            outcome: ChannelOutcome::SessionBlocked,
                        }),
                    ),
                },
            }
        }
    }

    /// Downloads go to the front of the queue (in order), alerts are kept with the device for
    /// the next package 1; the rest is returned.
    fn local_effects(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let mut rest = Vec::new();
        let mut fetches = Vec::new();
        for effect in effects {
            match effect {
                Effect::Fetch { csp, node, url } => {
                    if self.fetches_now >= MAX_FETCHES_PER_INSTANT {
                        tracing::warn!(device = %self.device.id, url, "too many downloads in one round; left for later");
                        continue;
                    }
                    self.fetches_now += 1;
                    fetches.push(Work::Fetch { csp, node, url });
                }
                Effect::Alert { code, item } => {
                    self.device.keep_alert(code, &item, self.now);
                }
                Effect::RequestChannel { csp, node, app } => {
                    if self.fetches_now >= MAX_FETCHES_PER_INSTANT {
                        tracing::warn!(device = %self.device.id, app, "too many channel requests in one round; dropped");
                        continue;
                    }
                    self.fetches_now += 1;
                    self.queue.push_back(Work::Channel(ChannelOp::Request { csp: csp.to_string(), node, app }));
                }
                other => rest.push(other),
            }
        }
        for f in fetches.into_iter().rev() {
            self.queue.push_front(f);
        }
        rest
    }

    /// Effects that ask for more: a session request (DMAcc InitiateSession) is a sync now; a
    /// reboot is followed by the reboot's Machine-mode session; an unenroll ends the device's
    /// management.
    fn effects(&mut self, effects: Vec<Effect>) {
        let rest = self.local_effects(effects);
        let now = self.now;
        for e in rest {
            match e {
                Effect::RequestSession { .. } => {
                    let actions = self.scheduler.on_event(now, Event::Sync { interactive: false });
                    self.actions(actions);
                }
                Effect::Reboot { .. } => {
                    let actions = self.scheduler.on_event(now, Event::Reboot);
                    self.actions(actions);
                }
                Effect::Unenroll { reason } => {
                    if self.device.unenrolled.is_some() {
                        continue;
                    }
                    tracing::info!(device = %self.device.id, reason, "server-initiated unenrollment");
                    self.unenroll(UnenrolledBy::Server, now);
                    self.record(Record::Unenrolled { device: self.device.id.to_string(), at: now, reason });
                }
                Effect::Fetch { .. } | Effect::Alert { .. } | Effect::RequestChannel { .. } => {}
            }
        }
    }

    /// The device leaves management: its enrollment is wiped and its schedule stops.
    fn unenroll(&mut self, by: UnenrolledBy, at: DateTime<Utc>) {
        self.scheduler.unenroll();
        self.queue.retain(|w| matches!(w, Work::Fetch { .. }));
        if let Some(files) = self.device.wipe_enrollment(by, at) {
            self.out.push_back(Output::WipeFiles(files));
        }
    }

    /// When nothing is under way: who is logged on goes into the record, and changes of the
    /// tree made outside a session are committed and reported.
    fn settle(&mut self) {
        if self.is_busy() {
            return;
        }
        self.device.users = self.scheduler.users().clone();
        if self.device.tree.is_dirty() {
            // A download's outcome changed the tree outside a session.
            self.device.tree.commit();
            self.record(Record::Changed { device: self.device.id.to_string(), at: self.now });
        }
    }

    fn record(&mut self, r: Record) {
        self.out.push_back(Output::Record(r));
    }

    fn flush_channel_reports(&mut self, registry: &Registry) {
        if !self.pending_channel_reports.is_empty() {
            let reports = std::mem::take(&mut self.pending_channel_reports);
            self.channel_reports(registry, reports);
        }
    }

    /// Hands what the push notification service did to the CSPs that asked for the channels.
    fn channel_reports(&mut self, registry: &Registry, reports: Vec<ChannelReport>) {
        let env = self.device.env(self.now);
        let mut effects = Vec::new();
        for r in reports.into_iter().take(MAX_FETCHES_PER_INSTANT) {
            effects.extend(registry.on_channel(&mut self.device.tree, &env, &r.csp, &r.node, &r.outcome));
        }
        self.effects(effects);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::device::run::Reply;
    use crate::device::{DeviceId, Template};
    use crate::session::Mode;
    use crate::syncml::{self, Command, Item, ItemCmd, Status, SyncBody, SyncHdr, SyncMl};
    use crate::tree::Profile;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
    }

    fn engine() -> (Engine, Registry) {
        let d = Device::new(
            DeviceId::from_seed(7),
            Profile::Win10,
            "https://mdm.example/MDM.svc",
            "P",
            &Template::builtin(Profile::Win10),
            start(),
        );
        (Engine::new(d, 7, start()).unwrap(), crate::csp::registry())
    }

    /// The server's answer to a client message: SyncHdr status, then `commands`.
    fn answer(client: &str, commands: Vec<Command>) -> String {
        let c = syncml::decode(client).unwrap();
        let mut all = vec![Command::Status(Status {
            cmd_id: "1".into(),
            msg_ref: c.hdr.msg_id.clone(),
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            data: "200".into(),
            ..Status::default()
        })];
        all.extend(commands);
        syncml::encode(&SyncMl {
            hdr: SyncHdr {
                session_id: c.hdr.session_id.clone(),
                msg_id: c.hdr.msg_id.clone(),
                target: c.hdr.source.clone(),
                source: c.hdr.target.clone(),
                ..SyncHdr::default()
            },
            body: SyncBody { commands: all, final_: true },
        })
    }

    fn session_request(t: Option<Transmit>) -> Request {
        match t {
            Some(Transmit::Session(r)) => r,
            other => panic!("expected a session message, got {other:?}"),
        }
    }

    fn reply(body: Option<String>) -> Response {
        Response::Session(Reply::answer(body, Duration::from_millis(3)))
    }

    fn sessions(e: &mut Engine) -> Vec<Summary> {
        let mut out = Vec::new();
        while let Some(o) = e.poll_event() {
            if let Output::Record(Record::Session { summary, .. }) = o {
                out.push(*summary);
            }
        }
        out
    }

    #[test]
    fn a_new_device_runs_its_post_enrollment_session_when_its_first_deadline_comes() {
        let (mut e, reg) = engine();
        assert_eq!(e.poll_timeout(&reg), Some(start()), "the first session is due at once");
        assert!(e.poll_transmit(&reg).is_none(), "nothing moves before the driver hands the time");
        e.handle_timeout(&reg, start());
        let req = session_request(e.poll_transmit(&reg));
        assert_eq!(req.url, "https://mdm.example/MDM.svc?mode=Maintenance&Platform=WoA");
        assert_eq!(req.client_request_id, "0");
        assert!(req.body.contains("<SessionID>1</SessionID>"), "{}", req.body);
        assert!(e.poll_transmit(&reg).is_none(), "one request out at a time");
        // A Get, then the device's Results; an empty answer ends the session.
        let get = Command::Get(ItemCmd {
            cmd_id: "2".into(),
            items: vec![Item::target("./DevInfo/DevId")],
            ..ItemCmd::default()
        });
        e.handle_response(&reg, reply(Some(answer(&req.body, vec![get]))));
        let req2 = session_request(e.poll_transmit(&reg));
        assert!(req2.body.contains("<MsgID>2</MsgID>"));
        assert!(req2.body.contains(e.device.id.as_str()), "the Results carry the DeviceID");
        e.handle_response(&reg, reply(None));
        assert!(e.poll_transmit(&reg).is_none());
        let done = sessions(&mut e);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].trigger, done[0].mode, done[0].outcome),
            (Trigger::Enrollment, Mode::Maintenance, Outcome::Completed)
        );
        assert_eq!(done[0].wall_us, 6000, "the time the device waited for both answers");
        assert_eq!(e.device.sessions, 1);
        assert!(!e.is_busy());
        assert!(e.poll_timeout(&reg).is_none_or(|t| t > start()), "nothing more is due now");
    }

    #[test]
    fn reboot_now_leads_to_a_machine_mode_session_after_the_session_ends() {
        let (mut e, reg) = engine();
        e.handle_timeout(&reg, start());
        let req = session_request(e.poll_transmit(&reg));
        let exec = Command::Exec(ItemCmd {
            cmd_id: "2".into(),
            items: vec![Item::target("./Device/Vendor/MSFT/Reboot/RebootNow")],
            ..ItemCmd::default()
        });
        e.handle_response(&reg, reply(Some(answer(&req.body, vec![exec]))));
        let req = session_request(e.poll_transmit(&reg));
        assert!(req.body.contains("<Data>200</Data>"), "the Exec is accepted: {}", req.body);
        e.handle_response(&reg, reply(None));
        // The reboot's session follows once the machine is up, in Machine mode, nobody logged on.
        assert!(e.poll_transmit(&reg).is_none());
        let up = e.poll_timeout(&reg).expect("the reboot's session is planned");
        assert!(up >= start() && up < start() + chrono::Duration::minutes(30), "{up}");
        e.handle_timeout(&reg, up);
        let next = session_request(e.poll_transmit(&reg));
        assert!(next.url.contains("mode=Machine"), "{}", next.url);
        assert!(next.body.contains("<SessionID>2</SessionID>"));
        e.handle_response(&reg, reply(None));
        let done = sessions(&mut e);
        assert_eq!(
            done.iter().map(|s| (s.trigger, s.mode)).collect::<Vec<_>>(),
            [(Trigger::Enrollment, Mode::Maintenance), (Trigger::Reboot, Mode::Machine)]
        );
    }

    #[test]
    fn a_refused_connection_moves_to_the_next_attempt_and_a_failed_session_leaves_the_tree_as_it_was() {
        let (mut e, reg) = engine();
        let before = e.device.tree.clone();
        e.handle_timeout(&reg, start());
        let no_connection = || {
            Response::Session(Reply::error(
                crate::device::run::ExchangeError {
                    fault: crate::session::Fault::Unreachable,
                    class: "connect",
                    no_connection: true,
                    message: "refused".into(),
                },
                Duration::ZERO,
            ))
        };
        // Three attempts at the one address (the DMAcc default ConnRetryFreq), then failure.
        for _ in 0..3 {
            let req = session_request(e.poll_transmit(&reg));
            assert_eq!(req.url, "https://mdm.example/MDM.svc?mode=Maintenance&Platform=WoA");
            e.handle_response(&reg, no_connection());
        }
        assert!(e.poll_transmit(&reg).is_none());
        let done = sessions(&mut e);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].outcome, Outcome::Failed);
        assert_eq!(done[0].fault, Some(crate::session::Fault::Unreachable));
        let mut after = e.device.tree.clone();
        after.commit();
        assert_eq!(after.value("DevInfo/DevId"), before.value("DevInfo/DevId"));
        assert_eq!(e.device.sessions, 1, "the SessionID was used");
        assert_eq!(e.device.last_success, None);
    }

    #[test]
    fn an_answer_for_nothing_asked_is_ignored() {
        let (mut e, reg) = engine();
        e.handle_response(&reg, reply(None));
        e.handle_response(&reg, Response::Fetch(FetchOutcome::Timeout));
        assert!(!e.is_busy());
        assert!(e.poll_event().is_none());
    }
}
