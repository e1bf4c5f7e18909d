//! The seam between a checked scenario and the multi-device runner: [`RunOptions`], the typed
//! [`RunError`], and [`execute`], which the runner (`mdmsim run`, virtual clock) implements.
//!
//! Owns the contract only. The runner owns the loop, the transport and the transcripts.

use std::path::PathBuf;

use super::build::Built;
use super::expect::Observed;

/// How to run a scenario (from `mdmsim scenario run`).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The MDM server's enrollment/management URL.
    pub server: String,
    /// A PEM file of extra trusted CA certificates.
    pub ca_cert: Option<PathBuf>,
    /// Accept any server certificate (test servers).
    pub insecure: bool,
    /// Write every message of every session under this directory (one subdirectory per
    /// device, the layout of `mdmsim sync --transcript` inside it).
    pub transcript: Option<PathBuf>,
}

/// Why a scenario could not run to the end (expectation failures are not errors: they are
/// results).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The multi-device runner is not wired to scenarios in this build.
    #[error("scenario runs are not available yet: the multi-device runner is not wired to `scenario run`")]
    NotWired,
    /// The server could not be reached (connection, TLS, timeout).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server broke the protocol so that the run could not go on.
    #[error("protocol error by the server: {0}")]
    Protocol(String),
    /// Local state (transcript directory, CA file) unusable.
    #[error("local state: {0}")]
    State(String),
}

/// Runs `built` against `opts.server`: creates the devices of every group (ids, templates,
/// profile, provider), drives the virtual (or scaled/real) clock from `built.clock.start` to
/// `built.clock.until`, delivers `built.timeline` events to their devices, and returns for
/// every device its sessions' `Summary`s in order, tree snapshots after each session and each
/// off-session change (timers, downloads), and the final tree (see [`Observed`]).
///
/// Not wired yet: returns [`RunError::NotWired`]; the integrator implements it with the runner.
pub fn execute(built: &Built, opts: &RunOptions) -> Result<Observed, RunError> {
    let _ = (built, opts);
    Err(RunError::NotWired)
}
