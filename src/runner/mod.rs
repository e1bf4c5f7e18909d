//! The I/O shell around the sans-I/O core: it moves the bytes of device engines through an
//! [`exchange::Exchange`] (HTTP, in-process, simulated), keeps device state on disk
//! ([`store`]), reads the wall clock, and writes transcripts.
//!
//! [`fleet`] drives many devices on one timer heap (`run`, `scenario run`, `demo`);
//! [`run_session`] runs one session of one device to its end for the one-shot commands (`sync`,
//! `enroll`, `unenroll`). Neither decides what a device does: the engine
//! ([`crate::device::engine`]) and its session run ([`crate::device::run`]) do. Neither
//! persists: the caller stores the device and the summary.

pub mod enroll;
pub mod enrollment;
pub mod exchange;
pub mod fetch;
pub mod fleet;
pub mod http;
pub mod keys;
pub mod mtls;
pub mod scenario;
pub mod signing;
pub mod store;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

pub use crate::device::run::SessionReport;
use crate::device::run::{RunOptions, SessionRun, TranscriptFile};
use crate::device::{Device, SessionPlan};
use crate::session::{AllowAll, Gate, Trigger};
use crate::syncml::Alert;
use crate::tree::{Effect, Registry};

use self::http::Transport;

/// What to run besides the device and the transport.
pub struct SessionOptions {
    pub trigger: Trigger,
    /// Write every message here as `NNN-client.xml` / `NNN-server.xml` (pretty, secrets
    /// masked; NNN is the client MsgID, the server file is the answer to that message), and
    /// the session summary (findings included) as `summary.json` at the end.
    pub transcript: Option<PathBuf>,
    /// Client alerts for package 1 (1226 unenroll, install reports).
    pub extra_alerts: Vec<Alert>,
    /// The policy consulted before each server command.
    pub gate: Box<dyn Gate>,
    /// The mode, alert and LoginStatus to use (a scheduler's request); `None` plans from the
    /// trigger and who is logged on now.
    pub plan: Option<SessionPlan>,
    /// The simulated instant of the whole session (virtual and scaled clocks); `None` reads
    /// the wall clock.
    pub at: Option<DateTime<Utc>>,
}

impl SessionOptions {
    /// A session for `trigger`, no transcript, no extra alerts, the default gate.
    pub fn new(trigger: Trigger) -> Self {
        SessionOptions {
            trigger,
            transcript: None,
            extra_alerts: Vec::new(),
            gate: Box::new(AllowAll),
            plan: None,
            at: None,
        }
    }
}

/// Runs one session of `device` now, over HTTP with `transport`. On return the device's tree
/// holds the session's changes (committed) or, after a failure, the values of before the
/// session; its session counter has moved on either way. The caller persists `device` and
/// `report.summary`.
///
/// The session's wire behaviour (address list and fail-over, RespURI, signing decision,
/// credentials and nonces) is the device's ([`crate::device::run`]); this moves the bytes, signs
/// with the enrollment key the transport holds, and writes the transcript as it goes.
pub async fn run_session(
    registry: &Registry,
    device: &mut Device,
    transport: &Transport,
    opts: SessionOptions,
) -> SessionReport {
    let now = || opts.at.unwrap_or_else(Utc::now);
    let run_opts = RunOptions {
        trigger: opts.trigger,
        plan: opts.plan,
        extra_alerts: opts.extra_alerts,
        gate: opts.gate,
        transcript: opts.transcript.is_some(),
        can_sign: transport.signer().is_some(),
    };
    let mut run = SessionRun::begin(registry, device, run_opts, now());
    loop {
        if let Some(dir) = &opts.transcript {
            write_transcript_files(dir, &run.take_transcript());
        }
        let Some(req) = run.poll_request(registry, device) else { break };
        let reply = exchange::post(transport, &req).await;
        run.handle_reply(registry, device, reply, now());
    }
    if let Some(dir) = &opts.transcript {
        write_transcript_files(dir, &run.take_transcript());
    }
    run.finish().expect("a session run that asks for nothing more is over")
}

/// Writes transcript files into `dir` (created if missing); a failure is logged, not fatal
/// (the session matters more).
pub fn write_transcript_files(dir: &Path, files: &[TranscriptFile]) {
    if files.is_empty() {
        return;
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(path = %dir.display(), error = %e, "cannot create the transcript folder");
        return;
    }
    for f in files {
        let path = dir.join(&f.name);
        if let Err(e) = std::fs::write(&path, &f.text) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write transcript");
        }
    }
}

/// Upper bound on timer/fetch rounds in one catch-up, so a CSP that keeps asking can never
/// spin the runner forever.
const MAX_ROUNDS: usize = 64;

/// Brings the device's CSP timers up to `now`: runs every timer that is due (one late call
/// catches up on all steps that were due), performs the downloads they ask for with the
/// session's HTTP client, and feeds the outcomes back, until nothing more is due. Alerts are
/// kept with the device ([`carry_out`]); returns the other effects that are not downloads
/// (unenroll, session requests) for the caller.
pub async fn run_timers(
    registry: &Registry,
    device: &mut Device,
    transport: &Transport,
    now: chrono::DateTime<Utc>,
) -> Vec<Effect> {
    let mut rest = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let Some(effects) = device.due_timers(registry, now) else { break };
        rest.extend(carry_out(registry, device, transport, effects, now).await);
    }
    rest
}

/// Performs the `Fetch` effects (and the fetches their outcomes ask for in turn), keeps the
/// `Alert` effects with the device for package 1 of its next session (they arise outside a
/// session: a timer or a download finished an install), and returns every other effect, in
/// order.
pub async fn carry_out(
    registry: &Registry,
    device: &mut Device,
    transport: &Transport,
    effects: Vec<Effect>,
    now: chrono::DateTime<Utc>,
) -> Vec<Effect> {
    let mut rest = Vec::new();
    let mut queue: std::collections::VecDeque<Effect> = effects.into();
    let mut rounds = 0;
    while let Some(effect) = queue.pop_front() {
        match effect {
            Effect::Fetch { csp, node, url } if rounds < MAX_ROUNDS => {
                rounds += 1;
                tracing::info!(device = %device.id, url, "downloading package");
                let outcome = fetch::fetch(transport.client(), &url, exchange::FETCH_TIMEOUT).await;
                tracing::info!(device = %device.id, ?outcome, "download finished");
                let env = device.env(now);
                queue.extend(registry.on_fetch(&mut device.tree, &env, csp, &node, &outcome));
            }
            Effect::Fetch { url, .. } => tracing::warn!(url, "too many downloads in one round; left for later"),
            Effect::Alert { code, item } => {
                device.keep_alert(code, &item, now);
            }
            other => rest.push(other),
        }
    }
    rest
}
