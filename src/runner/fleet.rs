//! Devices living on their own schedules: one timer heap, one clock, real sessions over HTTP.
//!
//! Owns the run loop of `mdmsim run` and `mdmsim demo` (the design notes "Data flows one way"): pop the
//! earliest deadline, move the clock there (a virtual clock jumps, a real or scaled one sleeps),
//! give every device that is due its CSP timers and its scheduler's actions, run the sessions
//! they ask for (devices of the same instant concurrently), carry out the effects, and push each
//! device's next deadline. Does not own when a session is due or in which mode (the scheduler,
//! `schedule/`), nor what a session does (`session/`), nor persistence: the caller sees every
//! [`Record`] as it happens and stores what it wants.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::csp::dmclient::{self, MaintenanceWindow, PollConfig, PollTimetable};
use crate::device::{Device, SessionPlan, UnenrolledBy};
use crate::schedule::{
    Action, Clock, Event, LoginPolling, ModeGate, NightlyError, PollSource, Scheduler, SchedulerConfig, SessionRequest,
    Trigger,
};
use crate::session::{Outcome, Summary};
use crate::tree::{Effect, Registry};

use super::http::Transport;
use super::{SessionOptions, carry_out, run_session, run_timers};

/// How many rounds of "an event asked for a session" one device may go through in one step.
const MAX_ROUNDS: usize = 8;

/// One device of a run: its record and its scheduler.
pub struct Member {
    pub device: Device,
    pub scheduler: Scheduler,
    /// The device's own HTTP client (an enrolled device presents its client certificate);
    /// `None` uses the fleet's shared transport.
    pub transport: Option<Arc<Transport>>,
    /// The DMClient poll values the scheduler's timetable was built from.
    poll: Option<PollConfig>,
    /// When a device that never synced runs its first session (the post-enrollment session);
    /// set it to `None` to leave the first session to the device's triggers.
    pub first_session: Option<DateTime<Utc>>,
}

impl Member {
    /// A device whose schedule starts at `now`; `seed` drives its jitter (see
    /// [`crate::schedule::device_seed`]). A device that never synced is taken as enrolled at
    /// `now` and starts with its post-enrollment session, as Windows does.
    pub fn new(mut device: Device, seed: u64, now: DateTime<Utc>) -> Result<Member, NightlyError> {
        let unenrolled = device.unenrolled.is_some();
        let first_session = (device.sessions == 0).then_some(now);
        if first_session.is_some() {
            device.enrolled_at = now;
        }
        let cfg = SchedulerConfig::from_settings(device.profile, &device.settings, device.enrolled_at, seed)?;
        let scheduler = Scheduler::new(cfg, None, device.users.clone(), now);
        let last_success = device.last_success;
        let mut m = Member { device, scheduler, transport: None, poll: None, first_session };
        // The lost-contact countdown goes on from the last session that completed.
        if let Some(t) = last_success {
            m.scheduler.session_finished(t, true);
        }
        if unenrolled {
            m.scheduler.unenroll();
        }
        m.refresh_schedule(now);
        Ok(m)
    }

    /// Re-reads the DMClient values that drive the schedule (poll timetable, login polling,
    /// lost contact): a server may change them in any session.
    fn refresh_schedule(&mut self, now: DateTime<Utc>) {
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
            self.scheduler.set_poll_source(source, now);
            if let Some(c) = cfg {
                self.scheduler.set_login_polling(LoginPolling {
                    poll_on_login: c.poll_on_login,
                    all_users_poll_on_first_login: c.all_users_poll_on_first_login,
                });
            }
        }
        self.scheduler.set_lost_contact_days(dmclient::lost_contact_days(tree, provider));
    }

    /// The earliest instant this device has something to do: a scheduler timer or a CSP timer.
    fn next_deadline(&mut self, registry: &Registry) -> Option<DateTime<Utc>> {
        if self.scheduler.unenrolled() {
            return None;
        }
        let env = self.device.env(self.device.enrolled_at);
        let csp = registry.next_deadline(&mut self.device.tree, &env);
        [self.first_session, self.scheduler.next_deadline(), csp].into_iter().flatten().min()
    }
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Refuse commands outside the Machine-mode set with 405 (`--strict`).
    pub strict: bool,
    /// Write each session's transcript to `DIR/<device>/<session>/`.
    pub transcript: Option<PathBuf>,
    /// Stop after this many sessions in all (a bound for every run).
    pub max_sessions: u64,
    /// Devices stepped at the same time.
    pub concurrency: usize,
    /// The state directory, where enrolled devices keep their key and certificates (wiped on
    /// unenrollment); `None` for devices held in memory only.
    pub state_dir: Option<PathBuf>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions { strict: false, transcript: None, max_sessions: 1_000_000, concurrency: 32, state_dir: None }
    }
}

/// Something that happened to a device during a run.
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
                format!(
                    "{}  {device}  {:<10} {:<11} {result}  findings={} msgs={}/{} {:.1}ms",
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

/// Counts over a whole run, from its records.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunStats {
    pub sessions: u64,
    pub completed: u64,
    pub failed: u64,
    pub missed: u64,
    pub unenrolled: u64,
    pub findings: u64,
    /// Sessions by `trigger/mode`.
    pub by_trigger_mode: BTreeMap<String, u64>,
    /// True when the run stopped at the session limit rather than at `until`.
    pub hit_session_limit: bool,
    /// The simulated instant the run ended at.
    pub ended_at: Option<DateTime<Utc>>,
}

impl RunStats {
    fn add(&mut self, r: &Record) {
        match r {
            Record::Session { summary, .. } => {
                self.sessions += 1;
                if summary.outcome == Outcome::Completed {
                    self.completed += 1;
                } else {
                    self.failed += 1;
                }
                self.findings += summary.findings.len() as u64;
                *self.by_trigger_mode.entry(format!("{}/{}", summary.trigger, summary.mode)).or_default() += 1;
            }
            Record::Missed { .. } => self.missed += 1,
            Record::Unenrolled { .. } => self.unenrolled += 1,
            Record::Changed { .. } => {}
        }
    }
}

/// A fleet of devices sharing one registry, one HTTP transport and one timer heap.
pub struct Fleet {
    registry: Arc<Registry>,
    transport: Arc<Transport>,
    members: Vec<Option<Member>>,
    /// The deadline each member was last pushed with (stale heap entries are skipped).
    planned: Vec<Option<DateTime<Utc>>>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
    opts: FleetOptions,
}

impl Fleet {
    /// A fleet of `members`.
    pub fn new(registry: Arc<Registry>, transport: Arc<Transport>, members: Vec<Member>, opts: FleetOptions) -> Self {
        let mut fleet = Fleet {
            registry,
            transport,
            planned: vec![None; members.len()],
            members: members.into_iter().map(Some).collect(),
            heap: BinaryHeap::new(),
            opts,
        };
        for i in 0..fleet.members.len() {
            fleet.plan(i);
        }
        fleet
    }

    fn plan(&mut self, i: usize) {
        let next = self.members[i].as_mut().and_then(|m| m.next_deadline(&self.registry));
        self.planned[i] = next;
        if let Some(t) = next {
            self.heap.push(Reverse((t, i)));
        }
    }

    /// The devices, in the order they were given.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().flatten()
    }

    /// Gives the devices back (to store them).
    pub fn into_members(self) -> Vec<Member> {
        self.members.into_iter().flatten().collect()
    }

    /// Runs every device until `until` (simulated time) or the session limit, calling
    /// `on_record` for everything that happens, in time order per device.
    pub async fn run(
        &mut self,
        clock: &mut dyn Clock,
        until: DateTime<Utc>,
        mut on_record: impl FnMut(&Record, &Device),
    ) -> RunStats {
        let mut stats = RunStats::default();
        while let Some(Reverse((t, i))) = self.heap.peek().copied() {
            if self.planned[i] != Some(t) {
                self.heap.pop();
                continue;
            }
            if t > until {
                break;
            }
            if stats.sessions >= self.opts.max_sessions {
                stats.hit_session_limit = true;
                break;
            }
            let wait = clock.sleep_until(t);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                continue;
            }
            let now = clock.now();
            // Every device due by now runs in this round, `concurrency` at a time.
            let mut due = Vec::new();
            while let Some(Reverse((t, i))) = self.heap.peek().copied() {
                if t > now {
                    break;
                }
                self.heap.pop();
                if self.planned[i] == Some(t) && !due.contains(&i) {
                    due.push(i);
                }
            }
            for chunk in due.chunks(self.opts.concurrency.max(1)) {
                let mut tasks = tokio::task::JoinSet::new();
                for &i in chunk {
                    let Some(member) = self.members[i].take() else { continue };
                    let registry = Arc::clone(&self.registry);
                    let transport = Arc::clone(member.transport.as_ref().unwrap_or(&self.transport));
                    let opts = self.opts.clone();
                    tasks.spawn(async move {
                        let (member, records) = step(member, now, &registry, &transport, &opts).await;
                        (i, member, records)
                    });
                }
                while let Some(joined) = tasks.join_next().await {
                    let Ok((i, member, records)) = joined else {
                        tracing::error!("a device task panicked; the device leaves the run");
                        continue;
                    };
                    for r in &records {
                        stats.add(r);
                        on_record(r, &member.device);
                    }
                    self.members[i] = Some(member);
                    self.plan(i);
                }
            }
        }
        // A virtual clock jumps to the end; real and scaled clocks stop where they are.
        clock.advance_to(until);
        stats.ended_at = Some(clock.now().min(until));
        stats
    }
}

/// Everything one device does at `now`: CSP timers, scheduler actions, sessions, effects.
async fn step(
    mut m: Member,
    now: DateTime<Utc>,
    registry: &Registry,
    transport: &Transport,
    opts: &FleetOptions,
) -> (Member, Vec<Record>) {
    let mut records = Vec::new();
    let mut effects = run_timers(registry, &mut m.device, transport, now).await;
    if m.device.tree.is_dirty() {
        m.device.tree.commit();
        records.push(Record::Changed { device: m.device.id.to_string(), at: now });
    }
    let mut actions = match m.first_session.take() {
        Some(at) if at <= now => vec![Action::Session(SessionRequest::one_shot(
            Trigger::Enrollment,
            m.device.profile,
            m.scheduler.users(),
            now,
            false,
        ))],
        not_yet => {
            m.first_session = not_yet;
            Vec::new()
        }
    };
    if m.scheduler.next_deadline().is_some_and(|d| d <= now) {
        actions.extend(m.scheduler.on_deadline(now));
    }
    for _ in 0..MAX_ROUNDS {
        for action in std::mem::take(&mut actions) {
            match action {
                Action::Session(req) if !m.scheduler.unenrolled() => {
                    let id = m.device.id.to_string();
                    let mut sopts = SessionOptions::new(req.trigger);
                    sopts.plan = Some(SessionPlan::from_request(&req, m.device.profile));
                    sopts.at = Some(now);
                    sopts.gate = Box::new(ModeGate { interactive: req.interactive, strict: opts.strict });
                    sopts.transcript = opts.transcript.as_ref().and_then(|dir| {
                        let d = dir.join(&id).join(format!("{:05}", m.device.sessions + 1));
                        std::fs::create_dir_all(&d).ok().map(|_| d)
                    });
                    let report = run_session(registry, &mut m.device, transport, sopts).await;
                    m.scheduler.session_finished(now, report.error.is_none());
                    effects.extend(carry_out(registry, &mut m.device, transport, report.effects, now).await);
                    m.refresh_schedule(now);
                    records.push(Record::Session { device: id, at: now, summary: Box::new(report.summary) });
                }
                Action::Session(_) => {}
                Action::Missed { at, trigger, reason } => {
                    records.push(Record::Missed { device: m.device.id.to_string(), at, trigger, reason })
                }
                Action::Unenroll { at, reason } => {
                    unenroll(&mut m, opts, UnenrolledBy::LostContact, at);
                    records.push(Record::Unenrolled { device: m.device.id.to_string(), at, reason });
                }
            }
        }
        // Effects that ask for more: a session request (DMAcc InitiateSession) is a sync now;
        // an unenroll ends the device's life in this run.
        for e in std::mem::take(&mut effects) {
            match e {
                Effect::RequestSession { .. } => {
                    actions.extend(m.scheduler.on_event(now, Event::Sync { interactive: false }))
                }
                // The device restarts after the session: the reboot's Machine-mode session follows.
                Effect::Reboot { .. } => actions.extend(m.scheduler.on_event(now, Event::Reboot)),
                Effect::Unenroll { reason } => {
                    unenroll(&mut m, opts, UnenrolledBy::Server, now);
                    records.push(Record::Unenrolled { device: m.device.id.to_string(), at: now, reason });
                }
                // Downloads were done and alerts kept for the next package 1 by `carry_out`; a
                // session request above delivers them.
                Effect::Fetch { .. } | Effect::Alert { .. } => {}
            }
        }
        if actions.is_empty() {
            break;
        }
    }
    m.device.users = m.scheduler.users().clone();
    m.device.tree.commit();
    (m, records)
}

/// The device leaves management: its enrollment is wiped and its schedule stops.
fn unenroll(m: &mut Member, opts: &FleetOptions, by: UnenrolledBy, at: DateTime<Utc>) {
    m.scheduler.unenroll();
    if let Err(e) = super::enrollment::wipe_enrollment(&mut m.device, opts.state_dir.as_deref(), by, at) {
        tracing::warn!(device = %m.device.id, error = %e, "cannot delete the enrollment files");
    }
}
