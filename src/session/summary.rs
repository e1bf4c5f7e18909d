//! What a session came to, as data: the [`Summary`] that `mdmsim sync` prints (human or
//! `--json`) and the store keeps, plus the small vocabularies it is written in ([`Mode`],
//! [`Trigger`], [`Outcome`]).
//!
//! Owns only data types; the session state machine fills them in. Every figure here is counted
//! from what was actually sent and received in that session.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tree::Effect;

use super::gate::Finding;

// Mode and Trigger belong to the scheduling rules (schedule/mode.rs); the session only reports
// them.
pub use crate::schedule::{Mode, Trigger};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Still running (only seen in a summary taken mid-session).
    Running,
    /// The session ended normally; its tree changes are kept.
    Completed,
    /// The session ended with an error; its tree changes were rolled back.
    Failed,
}

/// A CSP effect of the session, in a printable form (the runner carries out the real
/// [`Effect`] values, see `Finished::effects`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRecord {
    /// `fetch`, `unenroll`, `reboot`, `request_session`, `request_channel` or `alert`.
    pub kind: String,
    /// What it is about (URL, reason, alert type).
    pub detail: String,
}

impl From<&Effect> for EffectRecord {
    fn from(e: &Effect) -> Self {
        let (kind, detail) = match e {
            Effect::Fetch { csp, node, url } => ("fetch", format!("{csp} {node} <- {url}")),
            Effect::Unenroll { reason } => ("unenroll", reason.clone()),
            Effect::Reboot { reason } => ("reboot", reason.clone()),
            Effect::RequestSession { reason } => ("request_session", reason.clone()),
            Effect::RequestChannel { csp, node, app } => ("request_channel", format!("{csp} {node} <- {app}")),
            Effect::Alert { code, item } => {
                let ty = item.meta.as_ref().and_then(|m| m.type_.clone()).unwrap_or_default();
                ("alert", format!("{code} {ty}").trim_end().to_string())
            }
        };
        EffectRecord { kind: kind.to_string(), detail }
    }
}

/// Everything a session did, counted from the messages themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub device_id: String,
    pub session_id: String,
    pub mode: Mode,
    pub trigger: Trigger,
    /// The session alert of package 1 (1201 client-initiated, 1200 server-initiated).
    pub alert: u16,
    pub outcome: Outcome,
    /// Client messages sent (package 1 included).
    pub messages_sent: u32,
    /// Server messages received (an empty HTTP body is not a message).
    pub messages_received: u32,
    /// Commands the server sent, by element name, children of Atomic/Sequence included.
    pub commands_received: BTreeMap<String, u32>,
    /// Status codes the device returned for the server's commands (the SyncHdr statuses are
    /// not counted).
    pub statuses_sent: BTreeMap<u16, u32>,
    /// Status codes the server returned for the device's header and commands.
    pub statuses_received: BTreeMap<u16, u32>,
    /// Every server command the device answered, in order (children of Atomic and Sequence
    /// included): what scenario expectations and reports look at.
    #[serde(default)]
    pub commands: Vec<CommandRecord>,
    /// Conformance findings (see [`super::Gate`]).
    pub findings: Vec<Finding>,
    /// Effects CSPs produced during the session (alerts among them were sent in-session).
    pub effects: Vec<EffectRecord>,
    /// What ended the session, when it failed.
    pub error: Option<String>,
    /// Whose fault that was (unreachable server or broken protocol): what exit code a run
    /// with this failure ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<super::Fault>,
    pub started_at: DateTime<Utc>,
    /// Session length in the device's (possibly simulated) time.
    pub duration_ms: u64,
    /// Real time the session took, HTTP round trips included (set by the runner; with a
    /// virtual clock this is the only measure of latency).
    #[serde(default)]
    pub wall_us: u64,
    /// Keep-alive messages sent (Alert 1224 `com.microsoft.mdm.requestpending`, DMClient
    /// EnableOmaDmKeepAliveMessage) while slow commands ran.
    #[serde(default)]
    pub keep_alives: u32,
    /// Messages sent again because the server answered HTTP 429 or 503 (it was busy), each
    /// after the wait its `Retry-After` asked for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled: u32,
    /// How late the session started after the instant its trigger was due, in microseconds of
    /// simulated time (set by the fleet loop; always 0 on a virtual clock, where every session
    /// starts on time). With [`Summary::wall_us`] it is the latency a user of the device would
    /// see, measured from the scheduled instant (an open model: a slow server makes sessions
    /// start late, and that lateness is counted).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub late_us: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One server command as the device answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The server message it came in.
    pub msg_id: String,
    pub cmd_id: String,
    /// The element name (`Get`, `Replace`, `Atomic`...).
    pub cmd: String,
    /// Target LocURIs of its items, as the server sent them.
    pub targets: Vec<String>,
    /// The status code the device returned.
    pub status: u16,
}

impl Summary {
    /// An empty summary for a session that starts now.
    pub fn new(
        device_id: &str,
        session_id: &str,
        mode: Mode,
        trigger: Trigger,
        alert: u16,
        now: DateTime<Utc>,
    ) -> Self {
        Summary {
            device_id: device_id.to_string(),
            session_id: session_id.to_string(),
            mode,
            trigger,
            alert,
            outcome: Outcome::Running,
            messages_sent: 0,
            messages_received: 0,
            commands_received: BTreeMap::new(),
            statuses_sent: BTreeMap::new(),
            commands: Vec::new(),
            wall_us: 0,
            late_us: 0,
            statuses_received: BTreeMap::new(),
            findings: Vec::new(),
            effects: Vec::new(),
            error: None,
            fault: None,
            started_at: now,
            duration_ms: 0,
            keep_alives: 0,
            throttled: 0,
        }
    }

    /// The human form printed by `mdmsim sync` (one fact per line).
    pub fn human(&self) -> String {
        fn counts<K: fmt::Display>(m: &BTreeMap<K, u32>) -> String {
            if m.is_empty() {
                return "none".to_string();
            }
            m.iter().map(|(k, n)| format!("{k} x{n}")).collect::<Vec<_>>().join(", ")
        }
        let mut out = String::new();
        let outcome = match self.outcome {
            Outcome::Running => "running",
            Outcome::Completed => "completed",
            Outcome::Failed => "FAILED",
        };
        out.push_str(&format!("session {} of device {}: {outcome}\n", self.session_id, self.device_id));
        out.push_str(&format!("  mode:      {} (trigger {}, alert {})\n", self.mode, self.trigger, self.alert));
        out.push_str(&format!(
            "  messages:  {} sent, {} received in {} ms\n",
            self.messages_sent, self.messages_received, self.duration_ms
        ));
        if self.keep_alives > 0 {
            out.push_str(&format!("  keep-alive: {} request-pending alert(s) sent\n", self.keep_alives));
        }
        if self.throttled > 0 {
            out.push_str(&format!(
                "  throttled: {} message(s) sent again after HTTP 429/503 and its Retry-After\n",
                self.throttled
            ));
        }
        out.push_str(&format!("  commands:  {}\n", counts(&self.commands_received)));
        out.push_str(&format!("  statuses:  {}\n", counts(&self.statuses_sent)));
        if !self.statuses_received.is_empty() {
            out.push_str(&format!("  server statuses: {}\n", counts(&self.statuses_received)));
        }
        for f in &self.findings {
            out.push_str(&format!("  finding:   {f}\n"));
        }
        for e in &self.effects {
            out.push_str(&format!("  effect:    {} {}\n", e.kind, e.detail));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("  error:     {e}\n"));
        }
        out
    }
}
