//! One device's schedule: the timers that start its sessions and the events that change who is
//! logged on, as data .
//!
//! Owns the poll timer (fed by the DMClient poll timetable through a [`PollSource`]), the
//! nightly maintenance timer (cron + time zone), the jittered sessions that events start, the
//! scripted `--events` timeline, the network on/off state, and the lost-contact unenrollment
//! timer (DMClient `NumberOfDaysAfterLostContactToUnenroll`). The runner asks
//! [`Scheduler::next_deadline`], moves its clock there and calls [`Scheduler::on_deadline`];
//! it gets [`Action`]s back — sessions to run, with their trigger and mode, and what could not
//! happen. Does not own running sessions, the clock or the timer heap of a fleet.
//!
//! # Jitter
//!
//! Real devices never start a session at the exact instant of its trigger: services start after
//! a reboot, the logon task waits for the desktop, Task Scheduler adds a random delay to
//! time-based tasks, WNS delivery takes a moment. Each session is delayed by a random number of
//! seconds drawn from the device's seeded RNG (`rand_chacha`), so the same seed gives the same
//! timeline. Default ranges ([`Jitter::default`]): reboot 10–60 s, logon 5–30 s, push 1–10 s,
//! manual sync 0–3 s, poll and nightly 0–60 s. The timetables themselves do not drift: the next
//! poll is computed from the previous *nominal* instant, not from the jittered one.
//!
//! # Network off
//!
//! While the network is off a session that comes due is reported as [`Action::Missed`]. When it
//! comes back, one catch-up session runs for missed poll/nightly sessions (the MDM scheduled
//! tasks start "as soon as possible after a scheduled start is missed", decided here: one
//! catch-up, not one per missed start), and a push sent meanwhile is delivered (WNS caches one
//! notification for an offline device, `X-WNS-Cache-Policy: cache`, Microsoft's WNS pages). Missed
//! reboot, logon and manual-sync sessions are not retried: the real client tried and failed.

use std::collections::VecDeque;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::events::Event;
use super::mode::{
    Decision, ENROLLED, LoginPolling, LoginStatus, Mode, Trigger, UserChange, UserEvent, UserState, decide,
};
use super::nightly::{Nightly, NightlyError, nightly_from_settings};
use crate::tree::{Profile, Settings};

/// The DMClient poll timetable as the scheduler sees it: the first poll instant strictly after
/// `t`, or `None` when no poll remains. The DMClient CSP builds it from the enrollment time and
/// the `Poll/*` values (`PollTimetable::next_after`); the integrator connects the two.
pub type PollSource = Box<dyn Fn(DateTime<Utc>) -> Option<DateTime<Utc>> + Send + Sync>;

/// A session the device starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    /// When the session starts (the trigger's instant plus jitter).
    pub at: DateTime<Utc>,
    /// The trigger's own instant (timetable, cron or event), before jitter.
    pub nominal: DateTime<Utc>,
    pub trigger: Trigger,
    /// `?mode=` of the session.
    pub mode: Mode,
    /// Package 1 carries Alert 1200 (server-initiated) instead of 1201.
    pub server_initiated: bool,
    /// The 1224 LoginStatus alert (`win10`).
    pub login_status: LoginStatus,
    /// MDMAgent runs interactively (the operation modes post, "Manual operation"): impersonation fails.
    pub interactive: bool,
}

impl SessionRequest {
    /// The session `mdmsim sync --trigger T` runs at `now`, outside any schedule: the mode the
    /// seed gives `trigger` on a device whose users are `users` (a reboot logs everyone off; a
    /// logon is the enrolled user's).
    pub fn one_shot(
        trigger: Trigger,
        profile: Profile,
        users: &UserState,
        now: DateTime<Utc>,
        interactive: bool,
    ) -> SessionRequest {
        let mut users = users.clone();
        let change = match trigger {
            Trigger::Reboot => users.apply(UserEvent::Reboot),
            Trigger::Logon => users.apply(UserEvent::Logon(ENROLLED.into())),
            _ => UserChange::None,
        };
        // A logon of the enrolled user that was already logged on is a switch, not a logon;
        // a one-shot logon sync still means the enrolled user's logon task.
        let change = match change {
            UserChange::Other if trigger == Trigger::Logon => {
                UserChange::Logon { user: ENROLLED.into(), enrolled: true, first: false }
            }
            c => c,
        };
        let d = decide(trigger, profile, &users, Some(&change), LoginPolling::default()).unwrap_or(Decision {
            mode: users.mode(),
            server_initiated: false,
            login_status: users.login_status(),
        });
        SessionRequest {
            at: now,
            nominal: now,
            trigger,
            mode: d.mode,
            server_initiated: d.server_initiated,
            login_status: d.login_status,
            interactive,
        }
    }
}

impl fmt::Display for SessionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} mode={} login={}", self.at.to_rfc3339(), self.trigger, self.mode, self.login_status)?;
        if self.server_initiated {
            f.write_str(" alert=1200")?;
        }
        if self.interactive {
            f.write_str(" interactive")?;
        }
        Ok(())
    }
}

/// What the scheduler asks of the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Run this session now; report its end with [`Scheduler::session_finished`].
    Session(SessionRequest),
    /// A session came due while the network was off.
    Missed { at: DateTime<Utc>, trigger: Trigger, reason: String },
    /// The device unenrolls itself (wipe the enrollment, stop syncing); the scheduler stops.
    Unenroll { at: DateTime<Utc>, reason: String },
    /// Something happened to the device's push channels at the notification service
    /// ([`Event::RevokeChannel`], [`Event::ExpireChannel`]), or a notification was lost because
    /// the network is off ([`Event::Notification`]): the engine carries it out.
    Channel { at: DateTime<Utc>, event: Event },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Session(r) => r.fmt(f),
            Action::Missed { at, trigger, reason } => write!(f, "{} {trigger} missed: {reason}", at.to_rfc3339()),
            Action::Unenroll { at, reason } => write!(f, "{} unenroll: {reason}", at.to_rfc3339()),
            Action::Channel { at, event } => write!(f, "{} {}", at.to_rfc3339(), event.kind()),
        }
    }
}

impl Action {
    /// The session request, if this is one.
    pub fn session(&self) -> Option<&SessionRequest> {
        match self {
            Action::Session(s) => Some(s),
            _ => None,
        }
    }
}

/// Jitter ranges in seconds, inclusive (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jitter {
    pub reboot: (u32, u32),
    pub logon: (u32, u32),
    pub push: (u32, u32),
    pub manual: (u32, u32),
    pub poll: (u32, u32),
    pub nightly: (u32, u32),
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter { reboot: (10, 60), logon: (5, 30), push: (1, 10), manual: (0, 3), poll: (0, 60), nightly: (0, 60) }
    }
}

impl Jitter {
    /// No jitter at all: sessions start at their trigger's instant.
    pub fn none() -> Self {
        Jitter { reboot: (0, 0), logon: (0, 0), push: (0, 0), manual: (0, 0), poll: (0, 0), nightly: (0, 0) }
    }

    fn range(&self, trigger: Trigger) -> (u32, u32) {
        match trigger {
            Trigger::Reboot => self.reboot,
            Trigger::Logon => self.logon,
            Trigger::Push => self.push,
            Trigger::Manual | Trigger::Enrollment => self.manual,
            Trigger::Poll => self.poll,
            Trigger::Nightly => self.nightly,
        }
    }
}

/// What a device's schedule is built from (the device template and the DMClient values).
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub profile: Profile,
    pub enrolled_at: DateTime<Utc>,
    /// The nightly maintenance window (default 02:00 in the device's time zone).
    pub nightly: Nightly,
    pub login_polling: LoginPolling,
    /// `NumberOfDaysAfterLostContactToUnenroll`; `None` or 0 disables it.
    pub lost_contact_days: Option<u32>,
    pub jitter: Jitter,
    /// The seed of the device's RNG (derive it from the fleet seed and the device index).
    pub seed: u64,
}

impl SchedulerConfig {
    /// The configuration a device template gives: the nightly window and zone from its settings
    /// (see [`nightly_from_settings`]; `timezone` or `utc_offset_minutes`, `nightly_cron` or
    /// `maintenance_time`), `jitter = false` for sessions exactly at their trigger's instant,
    /// no login polling and no lost-contact timer until the DMClient values say otherwise
    /// ([`Scheduler::set_login_polling`], [`Scheduler::set_lost_contact_days`]).
    pub fn from_settings(
        profile: Profile,
        settings: &Settings,
        enrolled_at: DateTime<Utc>,
        seed: u64,
    ) -> Result<Self, NightlyError> {
        Ok(SchedulerConfig {
            profile,
            enrolled_at,
            nightly: nightly_from_settings(settings)?,
            login_polling: LoginPolling::default(),
            lost_contact_days: None,
            jitter: if settings.bool_or("jitter", true) { Jitter::default() } else { Jitter::none() },
            seed,
        })
    }
}

/// The seed of one device's RNG from the run's seed and the device's index (SplitMix64), so
/// devices of one fleet draw independent jitter and the same run seed gives the same fleet.
pub fn device_seed(run_seed: u64, device_index: u64) -> u64 {
    let mut z = run_seed ^ device_index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A timer: the instant its schedule says, and the jittered instant it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub nominal: DateTime<Utc>,
    pub due: DateTime<Utc>,
}

/// Everything a scheduler must persist to survive a restart (with its [`SchedulerConfig`] and
/// poll source, which come from the device template and tree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerState {
    pub users: UserState,
    pub online: bool,
    pub unenrolled: bool,
    pub poll: Option<Timer>,
    pub nightly: Option<Timer>,
    /// Sessions started by events, waiting for their jittered instant.
    pub pending: Vec<SessionRequest>,
    /// Scripted events not yet delivered, in time order.
    pub script: VecDeque<(DateTime<Utc>, Event)>,
    pub last_success: DateTime<Utc>,
    /// The first poll/nightly trigger missed while offline (one catch-up on network-on).
    pub missed_scheduled: Option<(DateTime<Utc>, Trigger)>,
    /// A push WNS holds for the offline device.
    pub cached_push: Option<DateTime<Utc>>,
    /// Jitter draws made so far, so a restored device draws the same jitter it would have drawn.
    pub rng_word_pos: u64,
}

/// One device's schedule (see the module docs).
pub struct Scheduler {
    cfg: SchedulerConfig,
    poll_source: Option<PollSource>,
    st: SchedulerState,
    rng: Draws,
}

/// The scheduler's random draws: the draw count through a mixing function (SplitMix64) of the
/// device's seed. The whole state is one number, so a device keeps 16 bytes for its jitter
/// rather than a stream cipher's buffer (a fleet of a million devices holds a million).
#[derive(Debug, Clone, Copy)]
struct Draws {
    seed: u64,
    count: u64,
}

impl Draws {
    fn next(&mut self) -> u64 {
        self.count += 1;
        let mut z = self.seed ^ self.count.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number from `lo` to `hi`, both included (`lo <= hi`).
    fn between(&mut self, lo: u32, hi: u32) -> u32 {
        let span = u64::from(hi - lo) + 1;
        // Multiply-shift: uniform enough for a jitter of at most a few hours.
        lo + ((u128::from(self.next()) * u128::from(span)) >> 64) as u32
    }
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler").field("cfg", &self.cfg).field("state", &self.st).finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A schedule starting at `now` with the given user state.
    pub fn new(cfg: SchedulerConfig, poll_source: Option<PollSource>, users: UserState, now: DateTime<Utc>) -> Self {
        let st = SchedulerState {
            users,
            online: true,
            unenrolled: false,
            poll: None,
            nightly: None,
            pending: Vec::new(),
            script: VecDeque::new(),
            last_success: cfg.enrolled_at,
            missed_scheduled: None,
            cached_push: None,
            rng_word_pos: 0,
        };
        let rng = Draws { seed: cfg.seed, count: 0 };
        let mut s = Scheduler { cfg, poll_source, st, rng };
        s.st.poll = s.next_poll_timer(now);
        s.st.nightly = s.next_nightly_timer(now);
        s
    }

    /// A schedule restored from a saved [`SchedulerState`].
    pub fn restore(cfg: SchedulerConfig, poll_source: Option<PollSource>, st: SchedulerState) -> Self {
        let rng = Draws { seed: cfg.seed, count: st.rng_word_pos };
        Scheduler { cfg, poll_source, st, rng }
    }

    /// The state to persist.
    pub fn state(&self) -> SchedulerState {
        let mut st = self.st.clone();
        st.rng_word_pos = self.rng.count;
        st
    }

    /// Who is logged on.
    pub fn users(&self) -> &UserState {
        &self.st.users
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// True once the device unenrolled itself (no more deadlines).
    pub fn unenrolled(&self) -> bool {
        self.st.unenrolled
    }

    /// False while the device's network is off.
    pub fn online(&self) -> bool {
        self.st.online
    }

    /// Adds scripted events (e.g. a resolved `--events` timeline); they are delivered when
    /// their instant comes, before any timer due at the same instant.
    pub fn script(&mut self, events: impl IntoIterator<Item = (DateTime<Utc>, Event)>) {
        let mut all: Vec<_> = self.st.script.drain(..).chain(events).collect();
        all.sort_by_key(|(t, _)| *t);
        self.st.script = all.into();
    }

    /// Replaces the poll timetable (the server changed `Poll/*`). The next poll is recomputed
    /// from `now`; an unchanged timetable keeps its timer (and its jitter).
    pub fn set_poll_source(&mut self, poll_source: Option<PollSource>, now: DateTime<Utc>) {
        self.poll_source = poll_source;
        let next = self.poll_source.as_ref().and_then(|f| f(now)).filter(|t| *t > now);
        if self.st.poll.map(|p| p.nominal) != next {
            self.st.poll = self.next_poll_timer(now);
        }
    }

    /// The server changed `PollOnLogin` / `AllUsersPollOnFirstLogin`.
    pub fn set_login_polling(&mut self, polling: LoginPolling) {
        self.cfg.login_polling = polling;
    }

    /// The server changed `NumberOfDaysAfterLostContactToUnenroll`.
    pub fn set_lost_contact_days(&mut self, days: Option<u32>) {
        self.cfg.lost_contact_days = days;
    }

    /// The device left management (the server's Unenroll Exec, a user-initiated unenrollment):
    /// nothing is due any more.
    pub fn unenroll(&mut self) {
        self.st.unenrolled = true;
        self.st.pending.clear();
    }

    /// The runner reports the end of a session; a successful one resets the lost-contact timer.
    pub fn session_finished(&mut self, now: DateTime<Utc>, success: bool) {
        if success {
            self.st.last_success = self.st.last_success.max(now);
        }
    }

    /// The earliest instant something is due, or `None` when nothing will ever happen again.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        if self.st.unenrolled {
            return None;
        }
        [
            self.st.script.front().map(|(t, _)| *t),
            self.st.pending.iter().map(|r| r.at).min(),
            self.st.nightly.map(|t| t.due),
            self.st.poll.map(|t| t.due),
            self.lost_contact_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn lost_contact_deadline(&self) -> Option<DateTime<Utc>> {
        let days = self.cfg.lost_contact_days.filter(|d| *d > 0)?;
        // The value comes from the server: a number of days beyond the calendar means never.
        self.st.last_success.checked_add_signed(Duration::try_days(i64::from(days))?)
    }

    /// Handles everything due at or before `now`, in time order (scripted events first among
    /// equal instants), and returns what the runner must do.
    pub fn on_deadline(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        let mut out = Vec::new();
        // Bounded: every step removes an item or moves a timer strictly forward; the cap only
        // guards against a poll source that misbehaves.
        for _ in 0..100_000 {
            let Some(t) = self.next_deadline().filter(|t| *t <= now) else { break };
            self.step(t, &mut out);
        }
        out
    }

    /// An event happens at `now` (from the command line, the fake WNS service...); returns the
    /// actions due by `now` (sessions it starts usually come later, after their jitter).
    pub fn on_event(&mut self, now: DateTime<Utc>, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.st.unenrolled {
            self.apply(now, event, &mut out);
        }
        out.extend(self.on_deadline(now));
        out
    }

    /// Runs the single earliest item due at `t`.
    fn step(&mut self, t: DateTime<Utc>, out: &mut Vec<Action>) {
        if self.st.script.front().is_some_and(|(at, _)| *at == t) {
            if let Some((at, ev)) = self.st.script.pop_front() {
                self.apply(at, ev, out);
            }
            return;
        }
        if let Some(i) = self.st.pending.iter().position(|r| r.at == t) {
            let req = self.st.pending.remove(i);
            self.emit(req, out);
            return;
        }
        if let Some(timer) = self.st.nightly.filter(|n| n.due == t) {
            self.st.nightly = self.next_nightly_timer(timer.nominal);
            self.fire_scheduled(Trigger::Nightly, timer, out);
            return;
        }
        if let Some(timer) = self.st.poll.filter(|p| p.due == t) {
            self.st.poll = self.next_poll_timer(timer.nominal);
            self.fire_scheduled(Trigger::Poll, timer, out);
            return;
        }
        if self.lost_contact_deadline() == Some(t) {
            self.st.unenrolled = true;
            self.st.pending.clear();
            let days = self.cfg.lost_contact_days.unwrap_or(0);
            out.push(Action::Unenroll {
                at: t,
                reason: format!(
                    "no successful session for {days} days (NumberOfDaysAfterLostContactToUnenroll); last success {}",
                    self.st.last_success.to_rfc3339()
                ),
            });
        }
    }

    /// A poll or nightly timer fired: the mode is decided now, by who is logged on now.
    fn fire_scheduled(&mut self, trigger: Trigger, timer: Timer, out: &mut Vec<Action>) {
        if let Some(req) = self.request(trigger, timer.nominal, timer.due, None, false) {
            self.emit(req, out);
        }
    }

    fn emit(&mut self, req: SessionRequest, out: &mut Vec<Action>) {
        if self.st.online {
            out.push(Action::Session(req));
            return;
        }
        if matches!(req.trigger, Trigger::Poll | Trigger::Nightly) && self.st.missed_scheduled.is_none() {
            self.st.missed_scheduled = Some((req.nominal, req.trigger));
        }
        if req.trigger == Trigger::Push {
            self.st.cached_push.get_or_insert(req.nominal);
            return;
        }
        out.push(Action::Missed { at: req.at, trigger: req.trigger, reason: "network off".into() });
    }

    fn apply(&mut self, now: DateTime<Utc>, event: Event, out: &mut Vec<Action>) {
        let (trigger, change, interactive) = match event {
            Event::Reboot => {
                // Sessions waiting to start die with the machine.
                self.st.pending.clear();
                (Trigger::Reboot, self.st.users.apply(UserEvent::Reboot), false)
            }
            Event::Logon { user } => (Trigger::Logon, self.st.users.apply(UserEvent::Logon(user)), false),
            Event::Logoff { user } => {
                self.st.users.apply(UserEvent::Logoff(user));
                return;
            }
            Event::Lock => {
                self.st.users.apply(UserEvent::Lock);
                return;
            }
            Event::Unlock { user } => {
                self.st.users.apply(UserEvent::Unlock(user));
                return;
            }
            Event::Push => (Trigger::Push, UserChange::None, false),
            Event::Nightly => {
                let timer = Timer { nominal: now, due: now };
                self.fire_scheduled(Trigger::Nightly, timer, out);
                return;
            }
            Event::Sync { interactive } => (Trigger::Manual, UserChange::None, interactive),
            Event::NetworkOff => {
                self.st.online = false;
                return;
            }
            Event::NetworkOn => {
                self.network_back(now);
                return;
            }
            Event::RevokeChannel | Event::ExpireChannel => {
                out.push(Action::Channel { at: now, event });
                return;
            }
            Event::Notification => {
                if !self.st.online {
                    // Received by nobody: no session follows (module docs).
                    out.push(Action::Channel { at: now, event });
                    out.push(Action::Missed {
                        at: now,
                        trigger: Trigger::Push,
                        reason: "network off: the push notification is lost".into(),
                    });
                    return;
                }
                // The delivery took the real time of the service's HTTP path: no added jitter.
                if let Some(req) = self.request(Trigger::Push, now, now, None, false) {
                    self.st.pending.push(req);
                }
                return;
            }
        };
        if trigger == Trigger::Push && !self.st.online {
            // WNS cannot reach the device; it holds the notification (module docs).
            self.st.cached_push.get_or_insert(now);
            return;
        }
        let logon = (trigger == Trigger::Logon).then_some(&change);
        let due = self.jittered(now, trigger);
        if let Some(req) = self.request(trigger, now, due, logon, interactive) {
            self.st.pending.push(req);
        }
    }

    fn network_back(&mut self, now: DateTime<Utc>) {
        if self.st.online {
            return;
        }
        self.st.online = true;
        if let Some((nominal, trigger)) = self.st.missed_scheduled.take() {
            let due = self.jittered(now, trigger);
            if let Some(req) = self.request(trigger, nominal, due, None, false) {
                self.st.pending.push(req);
            }
        }
        if let Some(nominal) = self.st.cached_push.take() {
            let due = self.jittered(now, Trigger::Push);
            if let Some(req) = self.request(Trigger::Push, nominal, due, None, false) {
                self.st.pending.push(req);
            }
        }
    }

    fn request(
        &self,
        trigger: Trigger,
        nominal: DateTime<Utc>,
        at: DateTime<Utc>,
        logon: Option<&UserChange>,
        interactive: bool,
    ) -> Option<SessionRequest> {
        let d = decide(trigger, self.cfg.profile, &self.st.users, logon, self.cfg.login_polling)?;
        Some(SessionRequest {
            at,
            nominal,
            trigger,
            mode: d.mode,
            server_initiated: d.server_initiated,
            login_status: d.login_status,
            interactive,
        })
    }

    /// `at` plus the trigger's jitter (saturating at the end of the calendar).
    fn jittered(&mut self, at: DateTime<Utc>, trigger: Trigger) -> DateTime<Utc> {
        let d = self.jitter(trigger);
        at.checked_add_signed(d).unwrap_or(at)
    }

    fn jitter(&mut self, trigger: Trigger) -> Duration {
        let (lo, hi) = self.cfg.jitter.range(trigger);
        let secs = if hi > lo { self.rng.between(lo, hi) } else { lo };
        Duration::seconds(i64::from(secs))
    }

    fn next_poll_timer(&mut self, after: DateTime<Utc>) -> Option<Timer> {
        // A source that does not move forward would fire forever at one instant: treat it as
        // the end of the timetable.
        let nominal = self.poll_source.as_ref().and_then(|f| f(after)).filter(|t| *t > after)?;
        Some(Timer { nominal, due: self.jittered(nominal, Trigger::Poll) })
    }

    fn next_nightly_timer(&mut self, after: DateTime<Utc>) -> Option<Timer> {
        let nominal = self.cfg.nightly.next_after(after)?;
        Some(Timer { nominal, due: self.jittered(nominal, Trigger::Nightly) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn cfg() -> SchedulerConfig {
        let mut c = SchedulerConfig::from_settings(Profile::Win10, &Settings::default(), t("2026-03-02T00:00:00Z"), 7)
            .expect("default settings");
        c.jitter = Jitter::none();
        c
    }

    #[test]
    fn one_shot_sessions_follow_the_seed() {
        let now = t("2026-03-02T10:00:00Z");
        let users = UserState::enrolled_active();
        let r = SessionRequest::one_shot(Trigger::Reboot, Profile::Win10, &users, now, false);
        assert_eq!((r.mode, r.login_status), (Mode::Machine, LoginStatus::None));
        let r = SessionRequest::one_shot(Trigger::Logon, Profile::Win10, &UserState::new(), now, false);
        assert_eq!((r.mode, r.login_status), (Mode::Maintenance, LoginStatus::User));
        let r = SessionRequest::one_shot(Trigger::Logon, Profile::Win10, &users, now, false);
        assert_eq!(r.mode, Mode::Maintenance);
        let r = SessionRequest::one_shot(Trigger::Push, Profile::Win81, &users, now, false);
        assert_eq!(r.mode, Mode::Apps);
        let r = SessionRequest::one_shot(Trigger::Push, Profile::Win10, &users, now, false);
        assert!(r.server_initiated);
        let r = SessionRequest::one_shot(Trigger::Nightly, Profile::Win10, &UserState::new(), now, true);
        assert_eq!((r.mode, r.interactive), (Mode::Machine, true));
    }

    #[test]
    fn a_reboot_drops_sessions_waiting_to_start() {
        let mut c = cfg();
        c.jitter.logon = (30, 30);
        let start = t("2026-03-02T10:00:00Z");
        let mut s = Scheduler::new(c, None, UserState::new(), start);
        assert!(s.on_event(start, Event::Logon { user: ENROLLED.into() }).is_empty());
        let got = s.on_event(start + Duration::seconds(10), Event::Reboot);
        let triggers: Vec<_> = got.iter().filter_map(|a| a.session()).map(|r| r.trigger).collect();
        assert_eq!(triggers, [Trigger::Reboot]);
        assert_eq!(s.on_deadline(start + Duration::minutes(5)), []);
    }

    #[test]
    fn an_absurd_lost_contact_value_from_the_server_means_never() {
        let start = t("2026-03-02T10:00:00Z");
        let mut s = Scheduler::new(cfg(), None, UserState::new(), start);
        s.set_lost_contact_days(Some(u32::MAX));
        assert!(s.next_deadline().is_some_and(|d| d < start + Duration::days(2)), "only the nightly");
        s.set_lost_contact_days(Some(0));
        assert!(s.on_deadline(start + Duration::days(30)).iter().all(|a| !matches!(a, Action::Unenroll { .. })));
    }

    #[test]
    fn unenroll_stops_the_schedule() {
        let start = t("2026-03-02T10:00:00Z");
        let mut s = Scheduler::new(cfg(), Some(Box::new(|t| Some(t + Duration::minutes(15)))), UserState::new(), start);
        assert_eq!(s.next_deadline(), Some(start + Duration::minutes(15)));
        s.unenroll();
        assert_eq!(s.next_deadline(), None);
        assert!(s.on_event(start, Event::Push).is_empty());
    }

    #[test]
    fn a_poll_source_that_does_not_advance_ends_the_timetable() {
        let start = t("2026-03-02T10:00:00Z");
        let stuck = start + Duration::minutes(15);
        let mut s = Scheduler::new(cfg(), Some(Box::new(move |_| Some(stuck))), UserState::new(), start);
        let polls = s.on_deadline(start + Duration::hours(1));
        assert_eq!(polls.iter().filter(|a| a.session().is_some_and(|r| r.trigger == Trigger::Poll)).count(), 1);
        assert!(s.next_deadline().is_some_and(|d| d > start + Duration::hours(1)), "only the nightly remains");
    }

    #[test]
    fn changing_the_poll_timetable_keeps_an_unchanged_timer() {
        let start = t("2026-03-02T10:00:00Z");
        let every = |m: i64| -> PollSource {
            Box::new(move |t: DateTime<Utc>| {
                let base: DateTime<Utc> = "2026-03-02T10:00:00Z".parse().expect("time");
                let k = (t - base).num_minutes().div_euclid(m) + 1;
                Some(base + Duration::minutes(k * m))
            })
        };
        let mut c = cfg();
        c.jitter.poll = (0, 60);
        let mut s = Scheduler::new(c, Some(every(15)), UserState::new(), start);
        let before = s.state().poll;
        s.set_poll_source(Some(every(15)), start + Duration::minutes(1));
        assert_eq!(s.state().poll, before);
        s.set_poll_source(Some(every(60)), start + Duration::minutes(1));
        assert_eq!(s.state().poll.map(|p| p.nominal), Some(start + Duration::minutes(60)));
        s.set_poll_source(None, start + Duration::minutes(2));
        assert_eq!(s.state().poll, None);
    }
}
