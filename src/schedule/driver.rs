//! The loop of `mdmsim run` for one device, as a sans-I/O step function: the runner asks what to
//! do, sleeps or runs sessions, and asks again.
//!
//! Owns the order of things between a [`Scheduler`], a [`Clock`] and `--until`: wait for the
//! next deadline (really, or by a jump of the virtual clock), hand over the actions due, stop at
//! `until`. A virtual clock only jumps when the runner asks for the next step, i.e. after it
//! finished every session of the current instant (the design notes, "Time"). Does not own sleeping,
//! sessions or HTTP: the runner does them. Wiring, in the runner:
//!
//! ```ignore
//! loop {
//!     match driver.step(clock.as_mut()) {
//!         Step::Wait(d) => tokio::select! {
//!             _ = tokio::time::sleep(d) => {}
//!             Some(ev) = pushes.recv() => handle(driver.scheduler.on_event(clock.now(), ev)),
//!         },
//!         Step::Due { actions, .. } => handle(actions), // run sessions, then
//!                                                       // driver.scheduler.session_finished(clock.now(), ok)
//!         Step::Done => break,
//!     }
//! }
//! ```

use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};

use super::clock::Clock;
use super::scheduler::{Action, Scheduler};

/// What the runner does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Sleep this long in real time (or until an outside event arrives), then step again.
    Wait(StdDuration),
    /// These actions are due at `now`: carry them out in order, report each session's end with
    /// [`Scheduler::session_finished`], then step again. May be empty (an event that starts no
    /// session, such as a logoff).
    Due { now: DateTime<Utc>, actions: Vec<Action> },
    /// `until` is reached, or nothing will ever be due again.
    Done,
}

/// One device's run: its scheduler and when the run ends.
#[derive(Debug)]
pub struct Driver {
    pub scheduler: Scheduler,
    /// `--until`, resolved; `None` runs until nothing is left to do.
    pub until: Option<DateTime<Utc>>,
}

impl Driver {
    /// A run of `scheduler` until `until`.
    pub fn new(scheduler: Scheduler, until: Option<DateTime<Utc>>) -> Self {
        Driver { scheduler, until }
    }

    /// The next thing to do (see [`Step`]).
    pub fn step(&mut self, clock: &mut dyn Clock) -> Step {
        let next = self.scheduler.next_deadline();
        let target = match (next, self.until) {
            (Some(n), Some(u)) => n.min(u),
            (Some(n), None) => n,
            (None, Some(u)) => u,
            (None, None) => return Step::Done,
        };
        let wait = clock.sleep_until(target);
        if !wait.is_zero() {
            return Step::Wait(wait);
        }
        let now = clock.now();
        let horizon = self.until.map_or(now, |u| now.min(u));
        match next {
            Some(n) if n <= horizon => Step::Due { now, actions: self.scheduler.on_deadline(horizon) },
            _ => Step::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::schedule::clock::{ManualWall, VirtualClock, WallClock};
    use crate::schedule::events::Event;
    use crate::schedule::mode::{Mode, Trigger, UserState};
    use crate::schedule::scheduler::{Jitter, SchedulerConfig};
    use crate::tree::{Profile, Settings};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn scheduler(start: DateTime<Utc>) -> Scheduler {
        let mut cfg = SchedulerConfig::from_settings(Profile::Win10, &Settings::default(), start, 1).unwrap();
        cfg.jitter = Jitter::none();
        let mut s = Scheduler::new(cfg, None, UserState::new(), start);
        s.script([(start + Duration::hours(8), Event::Reboot)]);
        s
    }

    #[test]
    fn virtual_run_jumps_from_deadline_to_deadline_and_stops_at_until() {
        let start = t("2026-03-02T00:00:00Z");
        let mut clock = VirtualClock::new(start);
        let mut d = Driver::new(scheduler(start), Some(start + Duration::days(2)));
        let mut seen = Vec::new();
        for _ in 0..100 {
            match d.step(&mut clock) {
                Step::Wait(w) => panic!("a virtual clock never waits, got {w:?}"),
                Step::Due { now, actions } => {
                    for a in actions {
                        let r = a.session().expect("only sessions").clone();
                        seen.push((now, r.trigger, r.mode));
                    }
                }
                Step::Done => break,
            }
        }
        assert_eq!(
            seen,
            [
                (t("2026-03-02T02:00:00Z"), Trigger::Nightly, Mode::Machine),
                (t("2026-03-02T08:00:00Z"), Trigger::Reboot, Mode::Machine),
                (t("2026-03-03T02:00:00Z"), Trigger::Nightly, Mode::Machine),
            ]
        );
        assert_eq!(clock.now(), start + Duration::days(2));
    }

    #[test]
    fn scaled_run_asks_the_runner_to_wait_real_time() {
        let start = t("2026-03-02T00:00:00Z");
        let wall = ManualWall::new(t("2026-01-01T00:00:00Z"));
        let mut clock = WallClock::new(wall.clone(), Some(start), 60.0).unwrap();
        let mut d = Driver::new(scheduler(start), Some(start + Duration::hours(3)));
        // The nightly at 02:00 is two simulated hours away: two real minutes at --speed 60.
        assert_eq!(d.step(&mut clock), Step::Wait(StdDuration::from_secs(120)));
        wall.advance(Duration::seconds(120));
        match d.step(&mut clock) {
            Step::Due { now, actions } => {
                assert_eq!(now, t("2026-03-02T02:00:00Z"));
                assert_eq!(actions.len(), 1);
            }
            other => panic!("expected the nightly, got {other:?}"),
        }
        // Nothing before until (03:00): wait for it, then stop.
        assert_eq!(d.step(&mut clock), Step::Wait(StdDuration::from_secs(60)));
        wall.advance(Duration::seconds(60));
        assert_eq!(d.step(&mut clock), Step::Done);
    }
}
