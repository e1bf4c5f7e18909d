//! The simulated clock: real, scaled or virtual time behind one [`Clock`] trait (docs/architecture.md,
//! "Time").
//!
//! Owns the arithmetic between simulated time (what devices see as `now`) and the real time the
//! runner waits. Does not own waiting: [`Clock::sleep_until`] returns how long the runner must
//! really sleep, and the runner sleeps (tokio) and asks again. HTTP always runs in real time.
//!
//! The one place of the sans-I/O core that reads the wall clock is [`SystemWall`], the
//! [`Wall`] used by real and scaled clocks outside tests; everything else takes `now` in.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The kind of clock, as `--clock` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockKind {
    /// Simulated time runs at real speed.
    #[default]
    Real,
    /// Simulated time runs `--speed` times faster (`--speed 60`: an hour a minute).
    Scaled,
    /// Discrete events: time jumps to the next deadline once the current instant's sessions end.
    Virtual,
}

impl crate::names::Named for ClockKind {
    const ALL: &'static [ClockKind] = &[ClockKind::Real, ClockKind::Scaled, ClockKind::Virtual];

    fn name(self) -> &'static str {
        match self {
            ClockKind::Real => "real",
            ClockKind::Scaled => "scaled",
            ClockKind::Virtual => "virtual",
        }
    }
}

/// Why a clock cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClockError {
    #[error("--speed must be a finite number greater than 0, found {0}")]
    BadSpeed(f64),
}

/// Simulated time, driven by the runner.
pub trait Clock: Send {
    /// The kind of this clock.
    fn kind(&self) -> ClockKind;

    /// The simulated instant now.
    fn now(&self) -> DateTime<Utc>;

    /// Moves toward `deadline` and returns how long the runner must really wait before it is
    /// reached: zero when it is reached (a virtual clock jumps there at once). The runner sleeps
    /// that long and calls again until it gets zero.
    fn sleep_until(&mut self, deadline: DateTime<Utc>) -> StdDuration;

    /// Jumps to `t` when the clock can (virtual); real and scaled clocks cannot be moved and
    /// ignore it. Never moves backwards.
    fn advance_to(&mut self, t: DateTime<Utc>);
}

/// A source of real time for real and scaled clocks.
pub trait Wall: Send {
    /// The real instant now.
    fn now(&self) -> DateTime<Utc>;
}

/// Real time from the operating system: the wall time when built plus a monotonic
/// [`Instant`]'s elapsed time (so scaled time never goes backwards when the system clock is
/// adjusted). The documented exception to "no wall clock in the core".
#[derive(Debug, Clone)]
pub struct SystemWall {
    origin_utc: DateTime<Utc>,
    origin: Instant,
}

impl SystemWall {
    /// Reads the system clock once.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        SystemWall { origin_utc: Utc::now(), origin: Instant::now() }
    }
}

impl Wall for SystemWall {
    fn now(&self) -> DateTime<Utc> {
        self.origin_utc + Duration::from_std(self.origin.elapsed()).unwrap_or(Duration::zero())
    }
}

/// A wall that moves only when told: for tests of real and scaled clocks (clones share the
/// same time).
#[derive(Debug, Clone)]
pub struct ManualWall(Arc<Mutex<DateTime<Utc>>>);

impl ManualWall {
    /// A wall showing `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualWall(Arc::new(Mutex::new(now)))
    }

    /// Moves the wall forward by `d`.
    pub fn advance(&self, d: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += d;
        }
    }
}

impl Wall for ManualWall {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map(|t| *t).unwrap_or_else(|e| *e.into_inner())
    }
}

/// The arithmetic of scaled time: simulated = `sim_origin` + (real − `real_origin`) × `speed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub sim_origin: DateTime<Utc>,
    pub real_origin: DateTime<Utc>,
    pub speed: f64,
}

impl Scale {
    /// The simulated instant at a real instant.
    pub fn sim_at(&self, real: DateTime<Utc>) -> DateTime<Utc> {
        saturating_add(self.sim_origin, scale_duration(real - self.real_origin, self.speed))
    }

    /// The real instant at which simulated time reaches `sim`.
    pub fn real_at(&self, sim: DateTime<Utc>) -> DateTime<Utc> {
        saturating_add(self.real_origin, scale_duration(sim - self.sim_origin, 1.0 / self.speed))
    }
}

fn saturating_add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(if d < Duration::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

fn scale_duration(d: Duration, factor: f64) -> Duration {
    // Nanosecond precision is plenty; saturate rather than overflow on absurd spans.
    let nanos = d.num_nanoseconds().map(|n| n as f64).unwrap_or(d.num_milliseconds() as f64 * 1e6);
    let scaled = nanos * factor;
    if scaled >= i64::MAX as f64 {
        Duration::MAX
    } else if scaled <= i64::MIN as f64 {
        Duration::MIN
    } else {
        Duration::nanoseconds(scaled.round() as i64)
    }
}

/// Real or scaled time: simulated time follows a [`Wall`] at `speed` (1 for real time).
pub struct WallClock<W: Wall> {
    wall: W,
    scale: Scale,
    kind: ClockKind,
}

impl<W: Wall> WallClock<W> {
    /// Simulated time starts at `start` (default: the wall's now) and runs at `speed`.
    pub fn new(wall: W, start: Option<DateTime<Utc>>, speed: f64) -> Result<Self, ClockError> {
        if !(speed.is_finite() && speed > 0.0) {
            return Err(ClockError::BadSpeed(speed));
        }
        let real_origin = wall.now();
        let kind = if speed == 1.0 { ClockKind::Real } else { ClockKind::Scaled };
        Ok(WallClock { scale: Scale { sim_origin: start.unwrap_or(real_origin), real_origin, speed }, wall, kind })
    }

    /// The scale in use.
    pub fn scale(&self) -> Scale {
        self.scale
    }
}

impl<W: Wall> fmt::Debug for WallClock<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WallClock").field("kind", &self.kind).field("scale", &self.scale).finish()
    }
}

impl<W: Wall> Clock for WallClock<W> {
    fn kind(&self) -> ClockKind {
        self.kind
    }

    fn now(&self) -> DateTime<Utc> {
        self.scale.sim_at(self.wall.now())
    }

    fn sleep_until(&mut self, deadline: DateTime<Utc>) -> StdDuration {
        let wait = self.scale.real_at(deadline) - self.wall.now();
        wait.to_std().unwrap_or(StdDuration::ZERO)
    }

    fn advance_to(&mut self, _t: DateTime<Utc>) {}
}

/// Virtual time: stands still while sessions run and jumps to the next deadline when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualClock {
    now: DateTime<Utc>,
}

impl VirtualClock {
    /// A virtual clock at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        VirtualClock { now: start }
    }
}

impl Clock for VirtualClock {
    fn kind(&self) -> ClockKind {
        ClockKind::Virtual
    }

    fn now(&self) -> DateTime<Utc> {
        self.now
    }

    fn sleep_until(&mut self, deadline: DateTime<Utc>) -> StdDuration {
        self.advance_to(deadline);
        StdDuration::ZERO
    }

    fn advance_to(&mut self, t: DateTime<Utc>) {
        self.now = self.now.max(t);
    }
}

/// Builds the clock `--clock KIND [--speed N] [--start TIME]` asks for. `wall_now` is the real
/// time now, read once by the caller; a virtual clock without `--start` starts there.
pub fn build(
    kind: ClockKind,
    speed: Option<f64>,
    start: Option<DateTime<Utc>>,
    wall_now: DateTime<Utc>,
) -> Result<Box<dyn Clock>, ClockError> {
    Ok(match kind {
        ClockKind::Real => Box::new(WallClock::new(SystemWall::new(), start, 1.0)?),
        ClockKind::Scaled => Box::new(WallClock::new(SystemWall::new(), start, speed.unwrap_or(60.0))?),
        ClockKind::Virtual => Box::new(VirtualClock::new(start.unwrap_or(wall_now))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn speed_60_is_one_simulated_hour_per_real_minute() {
        let wall = ManualWall::new(t("2026-01-01T00:00:00Z"));
        let mut c = WallClock::new(wall.clone(), Some(t("2030-06-01T08:00:00Z")), 60.0).unwrap();
        assert_eq!(c.kind(), ClockKind::Scaled);
        assert_eq!(c.now(), t("2030-06-01T08:00:00Z"));
        // A deadline one simulated hour away is one real minute away.
        assert_eq!(c.sleep_until(t("2030-06-01T09:00:00Z")), StdDuration::from_secs(60));
        wall.advance(Duration::seconds(30));
        assert_eq!(c.now(), t("2030-06-01T08:30:00Z"));
        assert_eq!(c.sleep_until(t("2030-06-01T09:00:00Z")), StdDuration::from_secs(30));
        wall.advance(Duration::seconds(31));
        assert_eq!(c.sleep_until(t("2030-06-01T09:00:00Z")), StdDuration::ZERO);
        // Scaled time cannot be pushed forward.
        c.advance_to(t("2031-01-01T00:00:00Z"));
        assert_eq!(c.now(), t("2030-06-01T09:01:00Z"));
    }

    #[test]
    fn real_clock_without_start_follows_the_wall() {
        let wall = ManualWall::new(t("2026-01-01T00:00:00Z"));
        let mut c = WallClock::new(wall.clone(), None, 1.0).unwrap();
        assert_eq!(c.kind(), ClockKind::Real);
        wall.advance(Duration::minutes(5));
        assert_eq!(c.now(), t("2026-01-01T00:05:00Z"));
        assert_eq!(c.sleep_until(t("2026-01-01T00:06:00Z")), StdDuration::from_secs(60));
    }

    #[test]
    fn far_deadlines_saturate_instead_of_overflowing() {
        let wall = ManualWall::new(t("2026-01-01T00:00:00Z"));
        let mut c = WallClock::new(wall, None, 0.001).unwrap();
        assert!(c.sleep_until(DateTime::<Utc>::MAX_UTC) > StdDuration::from_secs(86_400 * 365));
        let mut c = WallClock::new(ManualWall::new(t("2026-01-01T00:00:00Z")), None, 1e9).unwrap();
        assert_eq!(c.sleep_until(DateTime::<Utc>::MIN_UTC), StdDuration::ZERO);
    }

    #[test]
    fn bad_speed_is_refused() {
        let wall = ManualWall::new(t("2026-01-01T00:00:00Z"));
        assert_eq!(WallClock::new(wall.clone(), None, 0.0).unwrap_err(), ClockError::BadSpeed(0.0));
        assert!(WallClock::new(wall, None, f64::NAN).is_err());
    }

    #[test]
    fn virtual_clock_jumps_and_never_goes_back() {
        let mut c = VirtualClock::new(t("2026-01-01T00:00:00Z"));
        assert_eq!(c.sleep_until(t("2026-01-08T00:00:00Z")), StdDuration::ZERO);
        assert_eq!(c.now(), t("2026-01-08T00:00:00Z"));
        c.advance_to(t("2026-01-02T00:00:00Z"));
        assert_eq!(c.now(), t("2026-01-08T00:00:00Z"));
    }

    #[test]
    fn scale_round_trips() {
        let s = Scale { sim_origin: t("2030-01-01T00:00:00Z"), real_origin: t("2026-01-01T00:00:00Z"), speed: 3600.0 };
        // One real second is one simulated hour.
        assert_eq!(s.sim_at(t("2026-01-01T00:00:01Z")), t("2030-01-01T01:00:00Z"));
        assert_eq!(s.real_at(t("2030-01-02T00:00:00Z")), t("2026-01-01T00:00:24Z"));
    }
}
