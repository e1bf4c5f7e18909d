//! Scenarios: scripted runs with expectations, for a server team's CI (the file format is in `scenarios/README.md`).
//!
//! A scenario file (TOML; format in `scenarios/README.md`) names devices, a clock, a timeline
//! of events and expectations. It goes through two stages : [`parse`] gives
//! the [`Spec`] as written (unknown keys refused), [`build()`] checks it into a [`Built`]
//! scenario; every error is `FILE:LINE:COLUMN: expected X, found Y`. A run ([`run::execute`],
//! implemented by the runner) gives an [`Observed`]; [`evaluate`] judges each expectation and
//! [`junit::write`] renders the results for CI. Most expectation kinds are about the server
//! (`command`, `set`, `profile`, `install`, `statuses`, `latency`): each failure says what the
//! server did instead and where (device, session, MsgID/CmdID). [`Built::with_run_seed`] gives a
//! run its own DeviceIDs, so that runs against one server do not meet each other's devices.
//!
//! Owns the file format, the expectation engine and the JUnit output; no I/O (the caller reads
//! the scenario file and passes a closure that reads template files, see [`check_text`]). Does
//! not own running devices (runner) nor the event grammar (`schedule::parse_timeline`, reused
//! as is).

pub mod build;
pub mod expect;
pub mod glob;
pub mod junit;
pub mod report;
pub mod run;
pub mod spec;

pub use build::{
    Built, Check, DeviceGroup, Expectation, InstallCsp, NodeCheck, ScheduledEvent, ValueCheck, Window, build,
};
pub use expect::{DeviceRun, ExpectationResult, Observed, Snapshot, evaluate};
pub use glob::Glob;
pub use run::{EnrollAs, RunError, RunOptions};
pub use spec::{ScenarioError, Spec, parse};

/// Both stages on a text: `file` names it in messages, `read_template` reads template paths
/// relative to it.
pub fn check_text(
    text: &str,
    file: &str,
    read_template: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Built, ScenarioError> {
    let spec = parse(text, file)?;
    build(&spec, text, file, read_template)
}
