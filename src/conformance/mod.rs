//! `mdmsim conformance`: grades an MDM server against what Windows devices do. A battery of
//! checks, each a small scripted device behaviour (an enrollment, a real management session in
//! a given mode, or a probe session whose messages the check shapes on purpose) with a
//! [`Verdict`] and the evidence behind it: the messages (MsgID, CmdID), what was expected, what
//! the server did, what Windows does with it, and the public source of the rule (an MS-MDM or
//! MS-MDE2 section, a Microsoft CSP page, the Windows 8.1 MDM operation modes blog post).
//!
//! Owns the vocabulary of a run ([`Group`], [`Verdict`], [`CheckResult`], [`Report`]), the
//! driver that runs the battery for one device profile ([`run_profile`], [`Target`]), the probe
//! sessions ([`probe`]), the checks and their judges ([`checks`]) and the report formats
//! ([`report`]: the summary table, JSON, JUnit, self-contained HTML).
//!
//! Like `runner/`, this is an I/O shell: it moves messages through an
//! [`crate::runner::exchange::Exchange`] (HTTP for the command, in-process in tests) and reads
//! no clock of its own (the instant is passed in). The device behaviour it drives is the
//! device's: sessions run through [`crate::device::run::SessionRun`], probe messages start from
//! the package 1 the session machine builds. It does not own enrollment (`runner::enroll`), the
//! session rules (`session/`) or the server (`server/`).

pub mod checks;
pub mod probe;
pub mod report;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::device::engine::{Response, Transmit};
use crate::device::run::Throttle;
use crate::enroll::AuthToken;
use crate::runner::enroll::{EnrollError, Enrolled, Exchange as EnrollExchange};
use crate::runner::exchange::{Exchange, Exchanging};
use crate::tree::Profile;

/// The groups of checks, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// MS-MDE2: discovery, MS-XCEP policy, MS-WSTEP certificate, provisioning document.
    Enrollment,
    /// MS-MDM / OMA DM session bookkeeping: SyncHdr status, MsgRef/CmdRef, Final, session end.
    Session,
    /// What the server must cope with from a device: multi-message packages, alerts, signing.
    Copes,
    /// What a server may do in Machine and Maintenance mode (Windows 8.1 operation modes post).
    Modes,
    /// The DMClient poll schedule the server configures.
    Poll,
    /// Configuration the server sends: read back, Atomic, Add before Replace, 418.
    Profiles,
    /// The server's answer to device replies it did not expect.
    Robustness,
}

impl crate::names::Named for Group {
    const ALL: &'static [Group] = &[
        Group::Enrollment,
        Group::Session,
        Group::Copes,
        Group::Modes,
        Group::Poll,
        Group::Profiles,
        Group::Robustness,
    ];

    fn name(self) -> &'static str {
        match self {
            Group::Enrollment => "enrollment",
            Group::Session => "session",
            Group::Copes => "copes",
            Group::Modes => "modes",
            Group::Poll => "poll",
            Group::Profiles => "profiles",
            Group::Robustness => "robustness",
        }
    }
}

/// The verdict on one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The server did what the rule asks.
    Pass,
    /// The server broke the rule; the evidence says where.
    Fail,
    /// The run gave the check nothing to judge (the server never sent what the rule is about,
    /// or the target cannot show it: no enrollment with `--server`, a Windows 10 rule on win81).
    NotApplicable,
}

impl Verdict {
    /// `pass`, `fail`, `n/a`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// One message a verdict rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `device` or `server` (or an enrollment step: `discover`, `policy`, `enroll`).
    pub from: String,
    /// The session it belongs to (empty for enrollment).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_id: String,
    /// The SyncML MsgID (empty for enrollment and for an answer that is not SyncML).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub msg_id: String,
    /// The CmdID concerned, when one is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmd_id: String,
    /// What the message held, in a line (or the start of a body that is not SyncML).
    pub what: String,
}

/// The outcome of one check for one profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Stable name (`synchdr-status-first`).
    pub id: String,
    pub group: Group,
    /// The device profile the check ran as.
    pub profile: Profile,
    /// What the check is about, in a line.
    pub title: String,
    pub verdict: Verdict,
    /// What the rule asks of the server.
    pub expected: String,
    /// What the server did (or why the check is not applicable).
    pub observed: String,
    /// What a Windows device does with it.
    pub windows: String,
    /// The public source of the rule.
    pub source: String,
    pub evidence: Vec<Evidence>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The discovery or management URL graded.
    pub target: String,
    pub checks: Vec<CheckResult>,
}

/// One row of the summary table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: Group,
    pub passed: usize,
    pub failed: usize,
    pub not_applicable: usize,
}

impl Report {
    /// The summary table: one row per group that has checks, in [`Group`] order.
    pub fn summary(&self) -> Vec<GroupSummary> {
        let mut rows: BTreeMap<Group, GroupSummary> = BTreeMap::new();
        for c in &self.checks {
            let row =
                rows.entry(c.group).or_insert(GroupSummary { group: c.group, passed: 0, failed: 0, not_applicable: 0 });
            match c.verdict {
                Verdict::Pass => row.passed += 1,
                Verdict::Fail => row.failed += 1,
                Verdict::NotApplicable => row.not_applicable += 1,
            }
        }
        rows.into_values().collect()
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.verdict == Verdict::Fail)
    }

    /// True when no check failed (what exit 0 means).
    pub fn all_passed(&self) -> bool {
        self.failures().next().is_none()
    }
}

/// What the enrollment of the run's device brought: the finished enrollment (or why it
/// failed) and every HTTP exchange of it, plus the exchanges of an enrollment attempt with a
/// wrong password (how the server refuses).
#[derive(Debug)]
pub struct EnrollmentRun {
    pub enrolled: Result<Box<Enrolled>, EnrollError>,
    pub exchanges: Vec<EnrollExchange>,
    /// The exchanges of the refused attempt, when one was made.
    pub refused: Vec<EnrollExchange>,
    /// The credential used (to say which policy discovery was asked for).
    pub auth: Option<AuthToken>,
}

/// The device a run grades the server with, and how its messages travel.
pub struct Target {
    /// An enrolled device (`--discovery`) or a pre-provisioned one (`--server`).
    pub device: Device,
    pub exchange: Arc<dyn Exchange>,
    /// `Some` when the run enrolled the device.
    pub enrollment: Option<EnrollmentRun>,
}

/// One message of the run that the server answered with HTTP 429 or 503 before it took it,
/// and what came of the device's retries.
#[derive(Debug, Clone)]
pub struct Throttled {
    pub session_id: String,
    pub msg_id: String,
    /// Each 429/503 answer, in order, with the wait the device made before sending again.
    pub throttles: Vec<Throttle>,
    /// The answer that came in the end (or why none did).
    pub answer: probe::Answer,
}

/// An exchange that passes every message on and notes those the server throttled, for the
/// throttling check: the retries happen in the transport, below the probes and sessions.
pub struct Watch {
    inner: Arc<dyn Exchange>,
    seen: Mutex<Vec<Throttled>>,
}

impl Watch {
    pub fn new(inner: Arc<dyn Exchange>) -> Watch {
        Watch { inner, seen: Mutex::new(Vec::new()) }
    }

    /// The throttled messages seen so far.
    pub fn seen(&self) -> Vec<Throttled> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Exchange for Watch {
    fn release(&self) {
        self.inner.release();
    }

    fn exchange<'a>(&'a self, transmit: &'a Transmit) -> Exchanging<'a> {
        Box::pin(async move {
            let response = self.inner.exchange(transmit).await;
            if let (Transmit::Session(req), Response::Session(reply)) = (transmit, &response)
                && !reply.throttled.is_empty()
            {
                let (session_id, msg_id) =
                    crate::syncml::decode(&req.body).map(|m| (m.hdr.session_id, m.hdr.msg_id)).unwrap_or_default();
                let seen = Throttled {
                    session_id,
                    msg_id,
                    throttles: reply.throttled.clone(),
                    answer: probe::Answer::of(reply.result.clone()),
                };
                self.seen.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
            }
            response
        })
    }
}

/// Runs every check of `only` (all groups when empty) for one target; `now` stamps the
/// sessions. Checks run in an order that keeps the server's view of the device usable: the
/// enrollment first, then ordinary sessions, then probes, and the user unenrollment last; the
/// throttling check judges every message of the run.
pub async fn run_profile(target: &mut Target, only: &[Group], now: DateTime<Utc>) -> Vec<CheckResult> {
    let watch = Arc::new(Watch::new(target.exchange.clone()));
    let original = std::mem::replace(&mut target.exchange, watch.clone());
    let out = run_checks(target, only, now, &watch).await;
    target.exchange = original;
    out
}

async fn run_checks(target: &mut Target, only: &[Group], now: DateTime<Utc>, watch: &Watch) -> Vec<CheckResult> {
    let wanted = |g: Group| only.is_empty() || only.contains(&g);
    let mut out = Vec::new();
    let profile = target.device.profile;
    if wanted(Group::Enrollment) {
        out.extend(checks::enrollment(target.enrollment.as_ref(), &target.device, profile));
    }
    let needs_sessions = [Group::Session, Group::Modes, Group::Poll, Group::Profiles].into_iter().any(wanted);
    // How each ordinary session ended, by SessionID (a throttled session must still complete).
    let mut ended: BTreeMap<String, Option<String>> = BTreeMap::new();
    if needs_sessions {
        let traces = checks::ordinary_sessions(target, now).await;
        for t in &traces {
            let s = &t.report.summary;
            let failed = (s.outcome != crate::session::Outcome::Completed)
                .then(|| s.error.clone().unwrap_or_else(|| "failed".into()));
            ended.insert(s.session_id.clone(), failed);
        }
        if wanted(Group::Session) {
            out.extend(checks::session_basics(&traces, profile));
        }
        if wanted(Group::Modes) {
            out.extend(checks::modes(&traces, profile));
        }
        if wanted(Group::Poll) {
            out.push(checks::poll_schedule(&target.device, profile));
        }
        if wanted(Group::Profiles) {
            out.extend(checks::profiles(&traces, profile));
        }
    }
    if wanted(Group::Session) {
        out.push(checks::large_cmd_ids(target, now).await);
    }
    if wanted(Group::Robustness) {
        out.extend(checks::robustness(target, now).await);
    }
    if wanted(Group::Copes) {
        out.extend(checks::copes(target, now).await);
        out.push(checks::throttling(&watch.seen(), &ended, profile));
    }
    out
}

/// Enrolls the run's device through `discovery_url` (MS-MDE2, every exchange recorded) and,
/// with a password, tries once more with a wrong one to see how the server refuses. Returns
/// what the enrollment checks judge and, when it worked, the device and its key material.
pub async fn enroll(
    client: &reqwest::Client,
    discovery_url: &str,
    opts: &crate::runner::enrollment::EnrollOptions,
    now: DateTime<Utc>,
) -> (EnrollmentRun, Option<(Device, crate::runner::enrollment::EnrollmentMaterial)>) {
    use crate::runner::enroll::{EnrollRequest, recording};
    use crate::runner::enrollment::{EnrollmentMaterial, device_identity, device_of};
    let identity = device_identity(&opts.id, &opts.template);
    let mut request = EnrollRequest::new(&opts.email, opts.auth.clone(), identity.clone());
    request.enrollment_type = opts.enrollment_type;
    let (enrolled, exchanges) = recording(crate::runner::enroll::enroll(client, discovery_url, request)).await;
    let mut refused = Vec::new();
    if let AuthToken::OnPremise { username, password } = &opts.auth {
        // A password nobody has: the server must refuse with a SOAP fault.
        let wrong = crate::enroll::Secret::new(format!("{}-not-the-password", password.expose()));
        let bad = AuthToken::OnPremise { username: username.clone(), password: wrong };
        let request = EnrollRequest::new(&opts.email, bad, identity);
        refused = recording(crate::runner::enroll::enroll(client, discovery_url, request)).await.1;
    }
    let device = match &enrolled {
        Ok(e) => match device_of(e, discovery_url, opts, now) {
            Ok(d) => Some((d, EnrollmentMaterial::from_enrolled(e))),
            Err(err) => {
                tracing::warn!("the provisioning document cannot be applied: {err}");
                None
            }
        },
        Err(_) => None,
    };
    let run = EnrollmentRun { enrolled: enrolled.map(Box::new), exchanges, refused, auth: Some(opts.auth.clone()) };
    (run, device)
}
