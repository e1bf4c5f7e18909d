//! Exit codes, the error tag that carries one, and the one classification of failed sessions
//! that every command uses (see the table in `main.rs` and the README).

use mdmsim::session::{Fault, Outcome, Summary};

/// A scenario expectation failed.
pub const EXPECTATION: u8 = 1;
/// `syncml replay`: the server answered differently from the capture (as `diff` exits 1).
pub const DIFFERENT: u8 = 1;
/// Usage or input error.
pub const USAGE: u8 = 2;
/// The server could not be reached.
pub const UNREACHABLE: u8 = 3;
/// The server broke the protocol.
pub const PROTOCOL: u8 = 4;
/// Local state error.
pub const STATE: u8 = 5;

/// An error tagged with the exit code it should end the process with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fail {
    pub code: u8,
    pub message: String,
}

/// Builds a tagged error.
pub fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    Fail { code, message: message.into() }.into()
}

/// The exit code for an error: its tag, or 2 for untagged errors.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.chain().find_map(|c| c.downcast_ref::<Fail>()).map_or(USAGE, |f| f.code)
}

/// The exit code of a session that failed for this reason: 3 when the server could not be
/// reached (connection, TLS, timeout), 4 when it broke the protocol (an HTTP error status such
/// as 500 included).
pub fn of_fault(fault: Fault) -> u8 {
    match fault {
        Fault::Unreachable => UNREACHABLE,
        Fault::Protocol => PROTOCOL,
    }
}

/// The failed sessions of a run (`mdmsim run`, `mdmsim scenario run`), classified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Failures {
    /// Sessions in all, and those that failed for each reason.
    pub sessions: usize,
    pub unreachable: usize,
    pub protocol: usize,
    /// The error of the last failed session.
    pub last: String,
}

impl Failures {
    /// The failures among `sessions`; `None` when every session completed.
    pub fn of<'a>(sessions: impl IntoIterator<Item = &'a Summary>) -> Option<Failures> {
        let mut f = Failures::default();
        for s in sessions {
            f.add(s);
        }
        f.worst()
    }

    /// Counts one more session (a run counts them as they end, keeping none).
    pub fn add(&mut self, s: &Summary) {
        self.sessions += 1;
        if s.outcome == Outcome::Completed {
            return;
        }
        // A summary stored before faults were recorded counts as the server's doing.
        match s.fault.unwrap_or(Fault::Protocol) {
            Fault::Unreachable => self.unreachable += 1,
            Fault::Protocol => self.protocol += 1,
        }
        self.last = s.error.clone().unwrap_or_else(|| "failed".to_string());
    }

    /// The failures so far; `None` when every session completed.
    pub fn worst(self) -> Option<Failures> {
        (self.unreachable + self.protocol > 0).then_some(self)
    }

    /// The exit code: 4 when any session failed by the server's protocol (it answered, and
    /// wrongly: that is what to fix), else 3 (nothing answered).
    pub fn code(&self) -> u8 {
        if self.protocol > 0 { PROTOCOL } else { UNREACHABLE }
    }

    /// One line for people: how many failed, of which kind, and the last error.
    pub fn message(&self) -> String {
        let failed = self.unreachable + self.protocol;
        let mut kinds = Vec::new();
        if self.protocol > 0 {
            kinds.push(format!("{} protocol or HTTP error{}", self.protocol, plural(self.protocol)));
        }
        if self.unreachable > 0 {
            kinds.push(format!("{} server unreachable", self.unreachable));
        }
        format!(
            "{failed} of {} session{} failed ({}); the last: {}",
            self.sessions,
            plural(self.sessions),
            kinds.join(", "),
            self.last
        )
    }

    /// The error a run ends with.
    pub fn error(&self) -> anyhow::Error {
        fail(self.code(), format!("{} (--allow-failures exits 0)", self.message()))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use mdmsim::session::{Mode, Trigger};

    use super::*;

    fn session(fault: Option<Fault>) -> Summary {
        let mut s = Summary::new("D", "1", Mode::Machine, Trigger::Poll, 1201, Utc::now());
        s.outcome = if fault.is_some() { Outcome::Failed } else { Outcome::Completed };
        s.fault = fault;
        s.error = fault.map(|f| format!("{f:?} error"));
        s
    }

    #[test]
    fn a_run_exits_with_the_class_of_its_failures() {
        assert_eq!(Failures::of(&[session(None), session(None)]), None);
        let unreachable = Failures::of(&[session(Some(Fault::Unreachable)), session(None)]).unwrap();
        assert_eq!(unreachable.code(), UNREACHABLE);
        assert_eq!(unreachable.message(), "1 of 2 sessions failed (1 server unreachable); the last: Unreachable error");
        let both = Failures::of(&[session(Some(Fault::Protocol)), session(Some(Fault::Unreachable))]).unwrap();
        assert_eq!(both.code(), PROTOCOL, "a server that answered wrongly outranks one that did not answer");
        assert_eq!(code_of(&both.error()), PROTOCOL);
        assert_eq!(of_fault(Fault::Protocol), 4);
        assert_eq!(of_fault(Fault::Unreachable), 3);
    }
}
