//! When a device starts a session and in which operation mode (the Windows 8.1 MDM operation
//! modes post), and the clock that drives it all.
//!
//! Owns, all sans-I/O (`now` always comes in):
//! - [`mode`]: the [`Mode`]s (Machine, Maintenance, Apps), the [`Trigger`]s, who is logged on
//!   ([`UserState`]) and the trigger → mode rules ([`decide`]);
//! - [`nightly`]: the maintenance window (cron in the device's time zone, DST-aware);
//! - [`scheduler`]: one device's timers and events as data ([`Scheduler`]:
//!   `next_deadline` / `on_deadline` / `on_event`);
//! - [`events`]: the `--events` TOML timeline and the `--start`/`--until` time syntax;
//! - [`clock`]: real, scaled and virtual time behind one [`Clock`] trait (the only wall-clock
//!   read of the core, [`clock::SystemWall`], lives there).
//!
//! Depends on nothing of the session: the session uses its modes and triggers, and the
//! commands a mode allows are the session's ([`crate::session::mode_gate`]). Does not own the
//! DMClient poll values (the DMClient CSP builds the [`PollSource`]), nor the device engine
//! that drives a scheduler ([`crate::device::engine`]).

pub mod clock;
pub mod events;
pub mod mode;
pub mod nightly;
pub mod scheduler;

pub use clock::{Clock, ClockError, ClockKind, VirtualClock};
pub use events::{At, Event, Timeline, TimelineError, parse_duration, parse_time, parse_timeline};
pub use mode::{ENROLLED, LoginPolling, LoginStatus, Mode, Presence, Trigger, UserEvent, UserState, decide};
pub use nightly::{Nightly, NightlyError, Zone};
pub use scheduler::{
    Action, Jitter, PollSource, Scheduler, SchedulerConfig, SchedulerState, SessionRequest, device_seed,
};
