//! The I/O shell around the sans-I/O core: it moves SyncML between a session and the server
//! over HTTP ([`http`]), keeps device state on disk ([`store`]), reads the wall clock, and
//! writes transcripts.
//!
//! [`run_session`] runs one session of one device to its end. It does not decide when sessions
//! happen or in which mode (the device's plan, later the scheduler) and does not persist: the
//! caller stores the device and the summary ([`store::Store::save_session`]) so that one
//! transaction holds the whole session.

pub mod enroll;
pub mod enrollment;
pub mod fetch;
pub mod fleet;
pub mod http;
pub mod scenario;
pub mod signing;
pub mod store;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::device::{Device, SessionPlan};
use crate::session::{self, AllowAll, DeviceCx, Gate, Next, SessionError, Summary, Trigger};
use crate::syncml::{self, Alert, Chal, SyncMl};
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

/// How one session went.
#[derive(Debug)]
pub struct SessionReport {
    pub summary: Summary,
    /// `Some` when the session failed (the tree was rolled back).
    pub error: Option<SessionError>,
    /// Effects for the caller to carry out (empty after a failure).
    pub effects: Vec<Effect>,
    /// The server's last SyncHdr challenge (its NextNonce serves the next session's
    /// credentials, PROTOCOL.md §1.9).
    pub challenge: Option<Chal>,
}

/// Runs one session of `device` now. On return the device's tree holds the session's changes
/// (committed) or, after a failure, the values of before the session; its session counter has
/// moved on either way. The caller persists `device` and `report.summary`.
///
/// A device with a DMAcc account (an enrolled one) sends its application-layer credentials
/// and answers a 401/407 challenge with them; the NextNonce of the last challenge is written
/// to its tree for the next session ([`enrollment::session_auth`], PROTOCOL.md §1.9). The mTLS
/// identity is the transport's ([`enrollment::http_options`]).
pub async fn run_session(
    registry: &Registry,
    device: &mut Device,
    transport: &Transport,
    opts: SessionOptions,
) -> SessionReport {
    let now = || opts.at.unwrap_or_else(Utc::now);
    let wall = std::time::Instant::now();
    let mut cfg = match opts.plan {
        Some(plan) => device.start_session(opts.trigger, plan),
        None => device.next_session(opts.trigger),
    };
    cfg.extra_alerts = opts.extra_alerts;
    // Application-layer credentials of an enrolled device (PROTOCOL.md §1.9).
    (cfg.cred, cfg.auth) = enrollment::session_auth(&device.tree);
    // Client-Request-Id carries the EntDMID once the server set one, else 0 (PROTOCOL.md §2).
    let ent_dmid = format!("Vendor/MSFT/DMClient/Provider/{}/EntDMID", device.provider_id);
    let request_id = device.tree.value(&ent_dmid).unwrap_or("0").to_string();
    let profile = device.profile;
    let url = http::Transport::session_url(&device.server_url, cfg.mode, profile);
    let env = device.env(now());
    let mut cx = DeviceCx { registry, state: &mut device.tree, env: &env };
    let (mut awaiting, mut msg) = session::start(cfg, opts.gate, &mut cx);
    let url = match url {
        Ok(u) => u.to_string(),
        Err(e) => {
            let f = awaiting.fail(SessionError::Transport { fault: e.fault(), message: e.to_string() }, &mut cx);
            return failed(device, f, opts.transcript.as_deref());
        }
    };
    tracing::info!(device = %device.id, session = %awaiting.config().session_id, mode = %awaiting.config().mode, url, "session starts");
    loop {
        let n = awaiting.awaiting_reply_to();
        let body = syncml::encode(&msg);
        let shown = pretty(&msg);
        tracing::debug!(msg_id = n, commands = msg.body.commands.len(), final_ = msg.body.final_, "client message");
        tracing::trace!("client message {n}:\n{shown}");
        write_transcript(opts.transcript.as_deref(), n, "client", &shown);
        let target = match awaiting.resp_uri() {
            // A relative RespURI is resolved against the session URL.
            Some(r) => {
                reqwest::Url::parse(&url).and_then(|base| base.join(r)).map_or_else(|_| r.to_string(), String::from)
            }
            None => url.clone(),
        };
        let answer = transport.post(&target, &body, &request_id).await;
        let env = device.env(now());
        let mut cx = DeviceCx { registry, state: &mut device.tree, env: &env };
        let next = match answer {
            Ok(None) => Next::Finished(awaiting.receive_empty(&mut cx)),
            Ok(Some(text)) => {
                let shown = syncml::decode(&text).map(|m| pretty(&m)).unwrap_or_else(|_| text.clone());
                tracing::trace!("server answer to {n}:\n{shown}");
                write_transcript(opts.transcript.as_deref(), n, "server", &shown);
                awaiting.receive(&text, &mut cx)
            }
            Err(e) => {
                let error = SessionError::Transport { fault: e.fault(), message: e.to_string() };
                Next::Failed(awaiting.fail(error, &mut cx))
            }
        };
        match next {
            Next::Send(a, m) => {
                awaiting = a;
                msg = m;
            }
            Next::Finished(f) => {
                device.tree.commit();
                // The last Chal's NextNonce is the next session's nonce (§1.9).
                enrollment::keep_next_nonce(&mut device.tree, f.challenge());
                tracing::info!(device = %device.id, "session completed");
                let effects = f.effects().to_vec();
                let challenge = f.challenge().cloned();
                let mut summary = f.summary;
                summary.wall_us = wall.elapsed().as_micros() as u64;
                write_summary(opts.transcript.as_deref(), &summary);
                return SessionReport { summary, error: None, effects, challenge };
            }
            Next::Failed(mut f) => {
                f.summary.wall_us = wall.elapsed().as_micros() as u64;
                return failed(device, f, opts.transcript.as_deref());
            }
        }
    }
}

/// How long a package download may take before it counts as timed out.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Upper bound on timer/fetch rounds in one catch-up, so a CSP that keeps asking can never
/// spin the runner forever.
const MAX_ROUNDS: usize = 64;

/// Brings the device's CSP timers up to `now`: runs every timer that is due (one late call
/// catches up on all steps that were due), performs the downloads they ask for with the
/// session's HTTP client, and feeds the outcomes back, until nothing more is due. Returns the
/// effects that are not downloads (unenroll, session requests, alerts) for the caller.
pub async fn run_timers(
    registry: &Registry,
    device: &mut Device,
    transport: &Transport,
    now: chrono::DateTime<Utc>,
) -> Vec<Effect> {
    let mut rest = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let env = device.env(now);
        let due = registry.next_deadline(&mut device.tree, &env).is_some_and(|d| d <= now);
        if !due {
            break;
        }
        let effects = registry.on_deadline(&mut device.tree, &env);
        rest.extend(carry_out(registry, device, transport, effects, now).await);
    }
    rest
}

/// Performs the `Fetch` effects (and the fetches their outcomes ask for in turn) and returns
/// every other effect, in order.
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
                let outcome = fetch::fetch(transport.client(), &url, FETCH_TIMEOUT).await;
                tracing::info!(device = %device.id, ?outcome, "download finished");
                let env = device.env(now);
                queue.extend(registry.on_fetch(&mut device.tree, &env, csp, &node, &outcome));
            }
            Effect::Fetch { url, .. } => tracing::warn!(url, "too many downloads in one round; left for later"),
            other => rest.push(other),
        }
    }
    rest
}

fn failed(device: &mut Device, f: session::Failed, transcript: Option<&Path>) -> SessionReport {
    device.tree.commit();
    if let SessionError::Unauthenticated { chal, .. } = &f.error {
        enrollment::keep_next_nonce(&mut device.tree, chal.as_deref());
    }
    write_summary(transcript, &f.summary);
    // The caller reports the error; this is the log of it.
    tracing::info!(device = %device.id, error = %f.error, "session failed; tree rolled back");
    SessionReport { summary: f.summary, error: Some(f.error), effects: Vec::new(), challenge: None }
}

/// Pretty SyncML with secrets masked.
fn pretty(msg: &SyncMl) -> String {
    syncml::pretty(&session::redact(msg))
}

/// Writes the summary next to the transcript's messages.
fn write_summary(dir: Option<&Path>, summary: &Summary) {
    if let Ok(text) = serde_json::to_string_pretty(summary) {
        write_file(dir, "summary.json", &text);
    }
}

/// Writes one transcript file; a failure is logged, not fatal (the session matters more).
fn write_transcript(dir: Option<&Path>, n: u32, who: &str, text: &str) {
    write_file(dir, &format!("{n:03}-{who}.xml"), text);
}

fn write_file(dir: Option<&Path>, name: &str, text: &str) {
    let Some(dir) = dir else { return };
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, text) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write transcript");
    }
}
