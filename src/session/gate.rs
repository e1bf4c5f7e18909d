//! The policy seam of a session: a [`Gate`] is consulted before each server command is executed
//! and may refuse it with a status and/or record a conformance finding.
//!
//! Owns the hook and the finding type. It does not own any policy: the default [`AllowAll`]
//! allows everything and records nothing; the operation-mode rules (what a Machine-mode session
//! may do, the Windows 8.1 MDM operation modes post) plug in here as another `Gate`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::syncml::{Command, StatusCode};
use crate::tree::Profile;

use super::summary::{Mode, Trigger};

/// What the gate knows about the moment a command is checked.
#[derive(Debug, Clone, Copy)]
pub struct GateCx<'a> {
    pub mode: Mode,
    pub trigger: Trigger,
    pub profile: Profile,
    /// The MsgID of the server message holding the command.
    pub msg_id: &'a str,
}

/// The gate's decision on one command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// `Some(code)`: do not execute; answer the command with `code` (its children, if it is an
    /// Atomic or Sequence, get 215 "not executed").
    pub refuse: Option<StatusCode>,
    /// Conformance findings to record in the session summary (whether or not refused).
    pub findings: Vec<Finding>,
}

impl Verdict {
    /// Execute the command, record nothing.
    pub fn allow() -> Self {
        Verdict::default()
    }

    /// Do not execute; answer with `code`.
    pub fn refuse(code: StatusCode) -> Self {
        Verdict { refuse: Some(code), findings: Vec::new() }
    }

    /// The same verdict, also recording `finding`.
    pub fn with_finding(mut self, finding: Finding) -> Self {
        self.findings.push(finding);
        self
    }
}

/// A place where the server broke a rule (protocol, or the operation mode's contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Short name of the rule (`machine-mode-write`, `header-target`).
    pub what: String,
    /// MsgID of the server message.
    pub msg_id: String,
    /// CmdID of the command (empty for header findings).
    pub cmd_id: String,
    /// Command element name (`Replace`), or `SyncHdr`.
    pub cmd: String,
    /// The LocURI concerned, when there is one.
    pub uri: Option<String>,
    /// Why it is a finding, in words.
    pub why: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = Vec::new();
        if !self.msg_id.is_empty() {
            place.push(format!("MsgID {}", self.msg_id));
        }
        if !self.cmd_id.is_empty() {
            place.push(format!("{} CmdID {}", self.cmd, self.cmd_id));
        }
        if let Some(u) = &self.uri {
            place.push(u.clone());
        }
        write!(f, "{}: {}", self.what, self.why)?;
        if !place.is_empty() {
            write!(f, " ({})", place.join(", "))?;
        }
        Ok(())
    }
}

/// Consulted before each top-level server command (Alerts included; Status and Results are
/// never executed and never checked). An Atomic or Sequence is checked as a whole: the gate can
/// look at its children.
pub trait Gate: Send {
    /// Decides on one command.
    fn check(&mut self, cx: &GateCx<'_>, cmd: &Command) -> Verdict;
}

/// The default gate: allows everything, records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Gate for AllowAll {
    fn check(&mut self, _cx: &GateCx<'_>, _cmd: &Command) -> Verdict {
        Verdict::allow()
    }
}
