//! When a device starts a session and in which operation mode (seed
//! the Windows 8.1 MDM operation modes post; the Windows 8.1 MDM operation modes post), and the clock that drives it all.
//!
//! Owns, all sans-I/O (`now` always comes in):
//! - [`mode`]: the [`Mode`]s (Machine, Maintenance, Apps), the [`Trigger`]s, who is logged on
//!   ([`UserState`]) and the trigger → mode rules ([`decide`]);
//! - [`gate`]: which server commands a Machine-mode or interactive session accepts, and the
//!   conformance [`Finding`]s ([`judge`]), for the session's command loop;
//! - [`nightly`]: the maintenance window (cron in the device's time zone, DST-aware);
//! - [`scheduler`]: one device's timers and events as data ([`Scheduler`]:
//!   `next_deadline` / `on_deadline` / `on_event`);
//! - [`events`]: the `--events` TOML timeline and the `--start`/`--until` time syntax;
//! - [`driver`]: the loop of `mdmsim run` for one device as a step function ([`Driver`]);
//! - [`clock`]: real, scaled and virtual time behind one [`Clock`] trait (the only wall-clock
//!   read of the core, [`clock::SystemWall`], lives there).
//!
//! Does not own running sessions (session module), the DMClient poll values (the DMClient CSP
//! builds the [`PollSource`]), nor the runner's loop and timer heap.

pub mod clock;
pub mod driver;
pub mod events;
pub mod gate;
pub mod mode;
pub mod nightly;
pub mod scheduler;

pub use clock::{Clock, ClockError, ClockKind, VirtualClock};
pub use driver::{Driver, Step};
pub use events::{At, Event, Timeline, TimelineError, parse_duration, parse_time, parse_timeline};
pub use gate::{Finding, GateCmd, GateContext, ModeGate, Verdict, judge};
pub use mode::{ENROLLED, LoginPolling, LoginStatus, Mode, Presence, Trigger, UserEvent, UserState, decide};
pub use nightly::{Nightly, NightlyError, Zone};
pub use scheduler::{
    Action, Jitter, PollSource, Scheduler, SchedulerConfig, SchedulerState, SessionRequest, device_seed,
};
