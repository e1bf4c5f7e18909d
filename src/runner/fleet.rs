//! Devices living on their own schedules: one timer heap, one clock, one bounded pool of
//! devices at work, every request moved through an [`Exchange`].
//!
//! Owns the run loop of `mdmsim run`, `scenario run` and `demo` (docs/architecture.md, "the
//! data flow"): pop the earliest deadline, move the clock there (a virtual clock jumps as soon
//! as nothing is under way at the current instant; a real or scaled one sleeps), hand each
//! device that is due the time ([`Engine::handle_timeout`]), move the requests it asks for
//! ([`Engine::poll_transmit`]) until it is idle, and push its next deadline. At most
//! `concurrency` devices are at work at once; as soon as one is done the next due one starts
//! (no round barrier). Events for a device (a push) go through the [`Inbox`] and wake it at
//! once. Does not own when a session is due or in which mode (the engine's scheduler), what a
//! session does, nor persistence: the caller sees every [`Record`] as it happens and stores
//! what it wants.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::device::Device;
pub use crate::device::engine::Record;
use crate::device::engine::{ChannelCall, ChannelReport, Engine, Output, Transmit};
use crate::schedule::{Clock, ClockKind, Event, NightlyError};
use crate::session::Outcome;
use crate::tree::Registry;

use super::exchange::{Exchange, HttpExchange};
use super::http::Transport;

/// The most events a device at work holds for later (more are dropped).
const HELD_EVENTS: usize = 64;

/// The most devices whose notification arrival is timed at once (push-to-session latency).
const PUSHES_TIMED: usize = 100_000;

/// One device of a run: its engine and, for an enrolled device, its own HTTP client.
pub struct Member {
    pub engine: Engine,
    /// The device's own HTTP client (an enrolled device presents its client certificate);
    /// `None` uses the fleet's shared exchange.
    pub transport: Option<Arc<Transport>>,
    /// The device's own exchange (an enrolled device's connection with its certificate,
    /// `super::mtls::DeviceExchange`, or an in-process device with its certificate CN); wins
    /// over `transport`.
    pub exchange: Option<Arc<dyn Exchange>>,
}

impl Member {
    /// A device whose schedule starts at `now`; `seed` drives its jitter (see
    /// [`crate::schedule::device_seed`]). A device that never synced is taken as enrolled at
    /// `now` and starts with its post-enrollment session, as Windows does.
    pub fn new(device: Device, seed: u64, now: DateTime<Utc>) -> Result<Member, NightlyError> {
        Ok(Member { engine: Engine::new(device, seed, now)?, transport: None, exchange: None })
    }
}

impl std::ops::Deref for Member {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl std::ops::DerefMut for Member {
    fn deref_mut(&mut self) -> &mut Engine {
        &mut self.engine
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
    /// Devices at work at the same time.
    pub concurrency: usize,
    /// The state directory, where enrolled devices keep their key and certificates (wiped on
    /// unenrollment); `None` for devices held in memory only.
    pub state_dir: Option<PathBuf>,
    /// Reserves SessionIDs in the store before a device uses them (devices held in memory
    /// only need none).
    pub leases: Option<LeaseKeeper>,
    /// The push notification service the devices' WNS clients talk to (channel requests);
    /// `None`: no channel is ever given.
    pub channels: Option<ChannelService>,
}

/// Answers the devices' channel calls (the embedded WNS emulation, [`crate::wns::Wns::call`],
/// or a standalone one over HTTP).
#[derive(Clone)]
pub struct ChannelService(pub Arc<AnswerChannelCall>);

/// The answer to one channel call, to wait for.
pub type ChannelAnswer = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<ChannelReport>> + Send>>;

/// Answers one channel call of a device.
pub type AnswerChannelCall = dyn Fn(ChannelCall) -> ChannelAnswer + Send + Sync;

impl ChannelService {
    /// The calls of the devices go to `wns`, in this process.
    pub fn of(wns: crate::wns::Wns) -> ChannelService {
        ChannelService(Arc::new(move |call| {
            let reports = wns.call(&call);
            Box::pin(async move { reports })
        }))
    }

    /// The calls of the devices go to a standalone `mdmsim wns` at `base_url`
    /// ([`crate::wns::remote_call`]).
    pub fn remote(client: reqwest::Client, base_url: String) -> ChannelService {
        ChannelService(Arc::new(move |call| {
            let (client, base) = (client.clone(), base_url.clone());
            Box::pin(async move { crate::wns::remote_call(&client, &base, &call).await })
        }))
    }
}

impl std::fmt::Debug for ChannelService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelService")
    }
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            strict: false,
            transcript: None,
            max_sessions: 1_000_000,
            concurrency: 32,
            state_dir: None,
            leases: None,
            channels: None,
        }
    }
}

/// Makes a device's next SessionIDs durable before it sends them
/// ([`crate::runner::store::Store::reserve_session_ids`]).
#[derive(Clone)]
pub struct LeaseKeeper(pub Arc<ReserveIds>);

/// Reserves a device's next SessionIDs durably, or says why it could not.
pub type ReserveIds = dyn Fn(&mut Device) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseKeeper")
    }
}

/// Latency percentiles of a run's sessions, in milliseconds (the time the device waited for
/// the server's answers).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Counts over a whole run, from its records (aggregated as they come: nothing per session
/// is kept).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunStats {
    pub sessions: u64,
    pub completed: u64,
    pub failed: u64,
    pub missed: u64,
    pub unenrolled: u64,
    pub findings: u64,
    /// Client messages sent in all sessions.
    pub messages: u64,
    /// Sessions by `trigger/mode`.
    pub by_trigger_mode: BTreeMap<String, u64>,
    /// Push-started sessions (a notification woke the device).
    pub push_sessions: u64,
    /// Notifications lost because the device's network was off (no session followed).
    pub pushes_lost: u64,
    /// Notifications the push notification service delivered to the fleet's devices.
    pub pushes_delivered: u64,
    /// Real time from a notification's arrival to the end of the session it started, in
    /// milliseconds (`None` without push-started sessions).
    pub push_to_session_ms: Option<Latency>,
    /// Session latency percentiles.
    pub latency_ms: Latency,
    /// True when the run stopped at the session limit rather than at `until`.
    pub hit_session_limit: bool,
    /// The simulated instant the run ended at.
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    histogram: Option<hdrhistogram::Histogram<u64>>,
    #[serde(skip)]
    push_histogram: Option<hdrhistogram::Histogram<u64>>,
    /// Where a session's `trigger/mode` key is written, so that counting allocates only for a
    /// new key.
    #[serde(skip)]
    key: String,
}

impl RunStats {
    /// Adds the counts of a later run of the same fleet.
    pub fn merge(&mut self, later: RunStats) {
        self.sessions += later.sessions;
        self.completed += later.completed;
        self.failed += later.failed;
        self.missed += later.missed;
        self.unenrolled += later.unenrolled;
        self.findings += later.findings;
        self.messages += later.messages;
        self.push_sessions += later.push_sessions;
        self.pushes_lost += later.pushes_lost;
        self.pushes_delivered += later.pushes_delivered;
        match (&mut self.push_histogram, later.push_histogram) {
            (Some(h), Some(l)) => {
                let _ = h.add(&l);
            }
            (mine @ None, l) => *mine = l,
            (Some(_), None) => {}
        }
        for (k, n) in later.by_trigger_mode {
            *self.by_trigger_mode.entry(k).or_default() += n;
        }
        match (&mut self.histogram, later.histogram) {
            (Some(h), Some(l)) => {
                let _ = h.add(&l);
            }
            (mine @ None, l) => *mine = l,
            (Some(_), None) => {}
        }
        self.settle();
        self.hit_session_limit |= later.hit_session_limit;
        self.ended_at = self.ended_at.max(later.ended_at);
    }

    /// Counts the real time from a notification's arrival to the end of its session.
    pub fn push_latency(&mut self, elapsed: std::time::Duration) {
        let h = self.push_histogram.get_or_insert_with(|| {
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
        });
        h.saturating_record((elapsed.as_micros() as u64).max(1));
    }

    /// Works the percentiles out from the histograms (after the records are counted: doing it
    /// per record cost more than counting).
    pub fn settle(&mut self) {
        self.push_to_session_ms = self.push_histogram.as_ref().map(latency_of);
        if let Some(h) = &self.histogram {
            self.latency_ms = latency_of(h);
        }
    }

    /// Counts one record.
    pub fn add(&mut self, r: &Record) {
        match r {
            Record::Session { summary, .. } => {
                self.sessions += 1;
                if summary.outcome == Outcome::Completed {
                    self.completed += 1;
                } else {
                    self.failed += 1;
                }
                self.findings += summary.findings.len() as u64;
                self.messages += u64::from(summary.messages_sent);
                use std::fmt::Write as _;
                self.key.clear();
                let _ = write!(self.key, "{}/{}", summary.trigger, summary.mode);
                match self.by_trigger_mode.get_mut(self.key.as_str()) {
                    Some(n) => *n += 1,
                    None => {
                        self.by_trigger_mode.insert(self.key.clone(), 1);
                    }
                }
                if summary.trigger == crate::schedule::Trigger::Push {
                    self.push_sessions += 1;
                }
                // Microseconds, 3 significant digits, up to an hour.
                let h = self.histogram.get_or_insert_with(|| {
                    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
                });
                h.saturating_record(summary.wall_us.max(1));
            }
            Record::Missed { trigger, .. } => {
                self.missed += 1;
                if *trigger == crate::schedule::Trigger::Push {
                    self.pushes_lost += 1;
                }
            }
            Record::Unenrolled { .. } => self.unenrolled += 1,
            Record::Changed { .. } => {}
        }
    }
}

/// Percentiles of a histogram of microseconds, in milliseconds.
fn latency_of(h: &hdrhistogram::Histogram<u64>) -> Latency {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Latency { p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), max: h.max() as f64 / 1000.0 }
}

/// Sends events to the devices of a running fleet (a push, a logon): the device is woken at
/// once, or as soon as what it is doing ends.
#[derive(Clone)]
pub struct Inbox {
    tx: tokio::sync::mpsc::UnboundedSender<(String, Event)>,
}

impl Inbox {
    /// Delivers `event` to the device `device_id` (ignored if the fleet has no such device or
    /// has ended).
    pub fn send(&self, device_id: &str, event: Event) {
        let _ = self.tx.send((device_id.to_string(), event));
    }

    /// True once the fleet has ended (nothing sent is received any more).
    pub fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A fleet of devices sharing one registry, one exchange and one timer heap.
pub struct Fleet {
    registry: Arc<Registry>,
    exchange: Arc<dyn Exchange>,
    members: Vec<Option<Member>>,
    /// The deadline each member was last pushed with (stale heap entries are skipped).
    planned: Vec<Option<DateTime<Utc>>>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
    /// Events for members that were at work when they came.
    held: Vec<Vec<Event>>,
    inbox_tx: tokio::sync::mpsc::UnboundedSender<(String, Event)>,
    inbox_rx: tokio::sync::mpsc::UnboundedReceiver<(String, Event)>,
    opts: FleetOptions,
    /// Devices at work now ([`Fleet::in_flight`]).
    in_flight: Arc<std::sync::atomic::AtomicU64>,
}

impl Fleet {
    /// A fleet of `members` whose requests go over HTTP with `transport` (or each member's own).
    pub fn new(registry: Arc<Registry>, transport: Arc<Transport>, members: Vec<Member>, opts: FleetOptions) -> Self {
        Fleet::with_exchange(registry, Arc::new(HttpExchange::new(transport)), members, opts)
    }

    /// A fleet of `members` whose requests go through `exchange` (or each member's own).
    pub fn with_exchange(
        registry: Arc<Registry>,
        exchange: Arc<dyn Exchange>,
        members: Vec<Member>,
        opts: FleetOptions,
    ) -> Self {
        let (inbox_tx, inbox_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut fleet = Fleet {
            registry,
            exchange,
            planned: vec![None; members.len()],
            held: vec![Vec::new(); members.len()],
            members: members
                .into_iter()
                .map(|mut m| {
                    m.engine.options.strict = opts.strict;
                    m.engine.options.transcript = opts.transcript.is_some();
                    m.engine.options.can_sign |= m.transport.as_ref().is_some_and(|t| t.signer().is_some());
                    m.engine.options.leases = opts.leases.is_some();
                    Some(m)
                })
                .collect(),
            heap: BinaryHeap::new(),
            inbox_tx,
            inbox_rx,
            opts,
            in_flight: Arc::default(),
        };
        for i in 0..fleet.members.len() {
            fleet.plan(i);
        }
        fleet
    }

    /// The number of devices at work (in a session, a download or a channel call), kept up to
    /// date while the fleet runs: what a progress line or a gauge shows.
    pub fn in_flight(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.in_flight)
    }

    /// Where to send events to the fleet's devices while it runs.
    pub fn inbox(&self) -> Inbox {
        Inbox { tx: self.inbox_tx.clone() }
    }

    /// What the push notification service calls to wake a device of this fleet
    /// ([`crate::wns::Wns::set_deliver`]): the notification goes to its inbox; false for a
    /// device not in the fleet, or once the fleet has ended.
    pub fn push_receiver(&self) -> crate::wns::Deliver {
        let inbox = self.inbox();
        let ids: std::collections::HashSet<String> = self.members().map(|m| m.device.id.to_string()).collect();
        Arc::new(move |id: &str| {
            if !ids.contains(id) || inbox.closed() {
                return false;
            }
            inbox.send(id, Event::Notification);
            true
        })
    }

    fn plan(&mut self, i: usize) {
        let registry = &self.registry;
        let next = self.members[i].as_mut().and_then(|m| m.engine.poll_timeout(registry));
        // A deadline already planned has its heap entry (planned and pushed together).
        if next == self.planned[i] {
            return;
        }
        self.planned[i] = next;
        if let Some(t) = next {
            self.heap.push(Reverse((t, i)));
        }
    }

    /// The devices, in the order they were given.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().flatten()
    }

    /// The devices, to change between two [`Fleet::run`] calls in ways that do not move their
    /// deadlines (a SessionID lease reserved for many devices at once, for example; use
    /// [`Fleet::update_each`] for anything that does).
    pub fn members_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.members.iter_mut().flatten()
    }

    /// Gives the devices back (to store them).
    pub fn into_members(self) -> Vec<Member> {
        self.members.into_iter().flatten().collect()
    }

    /// Changes every device while none is at work (between two [`Fleet::run`] calls): `f` gets
    /// each device's index (its place in the list given to [`Fleet::new`]) and the device,
    /// whose next deadline is planned again after it (a day's events scripted, for example).
    pub fn update_each(&mut self, mut f: impl FnMut(usize, &mut Member)) {
        for i in 0..self.members.len() {
            if let Some(m) = self.members[i].as_mut() {
                f(i, m);
                self.plan(i);
            }
        }
    }

    /// The earliest valid deadline, dropping stale heap entries.
    fn next_due(&mut self) -> Option<(DateTime<Utc>, usize)> {
        while let Some(Reverse((t, i))) = self.heap.peek().copied() {
            if self.planned[i] == Some(t) && self.members[i].is_some() {
                return Some((t, i));
            }
            self.heap.pop();
        }
        None
    }

    /// Runs every device until `until` (simulated time) or the session limit, calling
    /// `on_record` for everything that happens, in time order per device.
    pub async fn run(
        &mut self,
        clock: &mut dyn Clock,
        until: DateTime<Utc>,
        on_record: impl FnMut(&Record, &mut Device),
    ) -> RunStats {
        self.run_until(clock, until, std::future::pending(), on_record).await
    }

    /// [`Fleet::run`], stopping early when `stop` completes (Ctrl-C, a closed output): no
    /// device starts after that, and the devices at work finish what they are doing (their
    /// sessions end as the server answers or the answer timeout passes), so that every device
    /// is whole when this returns.
    pub async fn run_until(
        &mut self,
        clock: &mut dyn Clock,
        until: DateTime<Utc>,
        stop: impl std::future::Future<Output = ()>,
        mut on_record: impl FnMut(&Record, &mut Device),
    ) -> RunStats {
        let mut stop = std::pin::pin!(stop);
        let mut stopping = false;
        let mut stats = RunStats::default();
        let mut tasks: tokio::task::JoinSet<(usize, Member, Vec<Output>)> = tokio::task::JoinSet::new();
        // How late each device at work started (simulated time after its deadline).
        let mut late: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
        let concurrency = self.opts.concurrency.max(1);
        let index: std::collections::HashMap<String, usize> =
            self.members.iter().enumerate().filter_map(|(i, m)| Some((m.as_ref()?.device.id.to_string(), i))).collect();
        let real_time = clock.kind() != ClockKind::Virtual;
        // When a notification reached each device that has not had its session yet.
        let mut push_at: std::collections::HashMap<usize, std::time::Instant> = std::collections::HashMap::new();
        loop {
            // Events from the inbox: a device at rest is woken now; one at work gets it after.
            while let Ok((id, event)) = self.inbox_rx.try_recv() {
                if let Some(&i) = index.get(&id) {
                    if matches!(event, Event::Notification) {
                        stats.pushes_delivered += 1;
                        if push_at.len() < PUSHES_TIMED {
                            push_at.entry(i).or_insert_with(std::time::Instant::now);
                        }
                    }
                    // Notifications waiting for the same device make one session (WNS
                    // delivers them as one wake-up), and no device holds more than
                    // HELD_EVENTS events: a flood of pushes cannot grow the run's memory.
                    let duplicate = matches!(event, Event::Notification)
                        && self.held[i].iter().any(|e| matches!(e, Event::Notification));
                    if duplicate || self.held[i].len() >= HELD_EVENTS {
                        continue;
                    }
                    self.held[i].push(event);
                    if self.members[i].is_some() {
                        let now = clock.now();
                        self.planned[i] = Some(now);
                        self.heap.push(Reverse((now, i)));
                    }
                }
            }
            let now = clock.now();
            let limit_reached = stats.sessions >= self.opts.max_sessions || stopping;
            // Start every device that is due, up to the concurrency bound.
            while !limit_reached && tasks.len() < concurrency {
                match self.next_due() {
                    Some((t, i)) if t <= now && t <= until => {
                        self.heap.pop();
                        self.planned[i] = None;
                        let Some(member) = self.members[i].take() else { continue };
                        if real_time && now > t {
                            late.insert(i, (now - t).num_microseconds().map_or(u64::MAX, |us| us.max(0) as u64));
                        }
                        let events = std::mem::take(&mut self.held[i]);
                        let registry = Arc::clone(&self.registry);
                        let exchange = member.exchange.clone().unwrap_or_else(|| match &member.transport {
                            Some(t) => Arc::new(HttpExchange::new(Arc::clone(t))),
                            None => Arc::clone(&self.exchange),
                        });
                        let leases = self.opts.leases.clone();
                        let channels = self.opts.channels.clone();
                        tasks.spawn(async move {
                            let ways = Ways {
                                exchange: exchange.as_ref(),
                                leases: leases.as_ref(),
                                channels: channels.as_ref(),
                            };
                            let (member, outputs) = step(member, now, events, &registry, ways).await;
                            (i, member, outputs)
                        });
                    }
                    _ => break,
                }
            }
            self.in_flight.store(tasks.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if tasks.is_empty() {
                if stopping {
                    break;
                }
                if limit_reached {
                    stats.hit_session_limit = self.next_due().is_some_and(|(t, _)| t <= until);
                    break;
                }
                // Nothing under way: move the clock to the next deadline. A real or scaled
                // clock with nothing due waits for the end of the run instead, so that a push
                // (the inbox) can still wake a device.
                let next = self.next_due().map(|(t, _)| t).filter(|t| *t <= until);
                let wait = match next {
                    Some(t) => clock.sleep_until(t),
                    None if real_time && clock.now() < until => {
                        if until == DateTime::<Utc>::MAX_UTC {
                            std::time::Duration::from_secs(3600)
                        } else {
                            clock.sleep_until(until)
                        }
                    }
                    None => break,
                };
                if next.is_none() && wait.is_zero() {
                    break;
                }
                if !wait.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        Some((id, event)) = self.inbox_rx.recv() => {
                            let _ = self.inbox_tx.send((id, event));
                        }
                        _ = &mut stop, if !stopping => stopping = true,
                    }
                }
                continue;
            }
            // Wait for a device to finish; with a real or scaled clock, also for the next
            // deadline to come, so that a long session does not hold the others up.
            let wait = match self.next_due() {
                Some((t, _)) if real_time && t <= until && !limit_reached && tasks.len() < concurrency => {
                    clock.sleep_until(t)
                }
                _ => std::time::Duration::MAX,
            };
            let joined = if wait.is_zero() {
                continue;
            } else {
                let sleep = tokio::time::sleep(if wait == std::time::Duration::MAX {
                    std::time::Duration::from_secs(3600)
                } else {
                    wait
                });
                tokio::select! {
                    j = tasks.join_next() => j,
                    _ = sleep => continue,
                    _ = &mut stop, if !stopping => {
                        stopping = true;
                        continue;
                    }
                }
            };
            let Some(joined) = joined else { continue };
            self.in_flight.store(tasks.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let Ok((i, mut member, outputs)) = joined else {
                tracing::error!("a device task panicked; the device leaves the run");
                continue;
            };
            let late_us = late.remove(&i).unwrap_or(0);
            for mut out in outputs {
                if let Output::Record(Record::Session { summary, .. }) = &mut out {
                    summary.late_us = late_us;
                }
                match out {
                    Output::Record(r) => {
                        stats.add(&r);
                        match &r {
                            Record::Session { summary, .. } if summary.trigger == crate::schedule::Trigger::Push => {
                                if let Some(t) = push_at.remove(&i) {
                                    stats.push_latency(t.elapsed());
                                }
                            }
                            Record::Missed { trigger: crate::schedule::Trigger::Push, .. } => {
                                push_at.remove(&i);
                            }
                            _ => {}
                        }
                        on_record(&r, &mut member.engine.device);
                    }
                    Output::Transcript { session_id, files } => {
                        if let Some(dir) = &self.opts.transcript {
                            let n: u64 = session_id.parse().unwrap_or(0);
                            let d = dir.join(member.device.id.as_str()).join(format!("{n:05}"));
                            super::write_transcript_files(&d, &files);
                        }
                    }
                    Output::WipeFiles(files) => {
                        if let Err(e) =
                            super::enrollment::delete_enrollment_files(self.opts.state_dir.as_deref(), Some(&files))
                        {
                            tracing::warn!(device = %member.device.id, error = %e, "cannot delete the enrollment files");
                        }
                    }
                }
            }
            self.members[i] = Some(member);
            if !self.held[i].is_empty() {
                let now = clock.now();
                self.planned[i] = Some(now);
                self.heap.push(Reverse((now, i)));
            } else {
                self.plan(i);
            }
        }
        // A virtual clock jumps to the end; real and scaled clocks stop where they are.
        clock.advance_to(until);
        stats.ended_at = Some(clock.now().min(until));
        stats.settle();
        stats
    }
}

/// Everything one device does at `now`: the events that came for it, its due timers and
/// sessions, every request moved until it is idle.
async fn step(
    mut m: Member,
    now: DateTime<Utc>,
    events: Vec<Event>,
    registry: &Registry,
    ways: Ways<'_>,
) -> (Member, Vec<Output>) {
    let engine = &mut m.engine;
    for event in events {
        engine.handle_event(now, event);
    }
    engine.handle_timeout(registry, now);
    drive_with(engine, registry, ways).await;
    let mut outputs = Vec::new();
    while let Some(o) = engine.poll_event() {
        outputs.push(o);
    }
    (m, outputs)
}

/// Moves a device's requests through `exchange` until it has nothing more to send, reserving
/// SessionIDs with `leases` when the engine waits for them.
pub async fn drive(engine: &mut Engine, registry: &Registry, exchange: &dyn Exchange, leases: Option<&LeaseKeeper>) {
    drive_with(engine, registry, Ways { exchange, leases, channels: None }).await
}

/// Where a device's requests go: the server (sessions, downloads), the store (SessionID
/// leases) and the push notification service (channel calls).
#[derive(Clone, Copy)]
pub struct Ways<'a> {
    pub exchange: &'a dyn Exchange,
    pub leases: Option<&'a LeaseKeeper>,
    pub channels: Option<&'a ChannelService>,
}

/// [`drive`], with channel calls answered by `ways.channels`.
pub async fn drive_with(engine: &mut Engine, registry: &Registry, ways: Ways<'_>) {
    let Ways { exchange, leases, channels } = ways;
    loop {
        while let Some(transmit) = engine.poll_transmit(registry) {
            match (&transmit, channels) {
                (Transmit::Channel(call), Some(service)) => {
                    let reports = (service.0)(call.clone()).await;
                    engine.handle_channel(registry, reports);
                }
                _ => {
                    let response = exchange.exchange(&transmit).await;
                    engine.handle_response(registry, response);
                }
            }
        }
        if !engine.lease_wanted() {
            exchange.release();
            return;
        }
        let refused = match leases {
            Some(keeper) => (keeper.0)(&mut engine.device).err(),
            None => Some("no store keeps this device".to_string()),
        };
        engine.lease_granted(refused);
    }
}
