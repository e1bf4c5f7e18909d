//! The expectation engine: a [`Built`] scenario and what a run [`Observed`] → one
//! [`ExpectationResult`] per `[[expect]]`, each failure saying which expectation (file:line),
//! what was seen instead, and where in the transcript (device, session, MsgID/CmdID).
//!
//! Owns [`Observed`] (the contract with the runner) and [`evaluate`]; pure. Node values are read
//! with Gets through [`Tree::execute`] and the full CSP registry, so a value reads exactly as a
//! server would see it (computed nodes, defaults, encoding included).
//!
//! How `reached` is observed: a session's Results only show what the server asked for, and the
//! tree at the end only its last value, so the runner records [`Snapshot`]s of the device's tree
//! at each point where it can change (after every session, and after every timer or download the
//! CSPs handled between sessions); `reached = "5"` holds when any snapshot, or the final tree,
//! reads `5`. A value held only in the middle of a session is not observed.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::csp;
use crate::session::{CommandRecord, Outcome, Summary};
use crate::syncml::{Command, Item, ItemCmd, StatusCode};
use crate::tree::{Env, Profile, Registry, Settings, Tree, TreeState};

use super::build::{Built, Check, Expectation, NodeCheck};
use super::glob::{Glob, segment_matches};

/// What a run produced, for every device.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub devices: Vec<DeviceRun>,
}

/// One device's run.
#[derive(Debug, Clone)]
pub struct DeviceRun {
    /// The DeviceID (32 hex digits).
    pub id: String,
    pub profile: Profile,
    /// The template settings the device ran with (computed node values may read them).
    pub settings: Settings,
    /// Its sessions, in order (`session_id` numbers them in the transcript).
    pub sessions: Vec<Summary>,
    /// Tree snapshots taken during the run, in time order (see the module doc).
    pub snapshots: Vec<Snapshot>,
    /// The tree after the run.
    pub tree: TreeState,
    /// The instant the run ended (the `now` node reads use).
    pub ended_at: DateTime<Utc>,
}

impl DeviceRun {
    /// A device's record before its first session: id, profile, settings and tree from the
    /// device, no sessions or snapshots yet. The runner pushes each session's [`Summary`] and
    /// calls [`DeviceRun::snapshot`] as the run goes, then sets `tree` and `ended_at`.
    pub fn new(device: &crate::device::Device, now: DateTime<Utc>) -> Self {
        DeviceRun {
            id: device.id.as_str().to_string(),
            profile: device.profile,
            settings: (*device.settings).clone(),
            sessions: Vec::new(),
            snapshots: Vec::new(),
            tree: device.tree.clone(),
            ended_at: now,
        }
    }

    /// Records the tree at `at` (after session `after_session`, or after a change the device
    /// made on its own between sessions): what `reached` expectations look at.
    pub fn snapshot(&mut self, at: DateTime<Utc>, after_session: Option<&str>, tree: &TreeState) {
        self.snapshots.push(Snapshot { at, after_session: after_session.map(str::to_string), tree: tree.clone() });
    }
}

/// The tree of a device at one instant of the run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: DateTime<Utc>,
    /// The session it was taken after (`session_id`), if any.
    pub after_session: Option<String>,
    pub tree: TreeState,
}

/// The verdict on one expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectationResult {
    /// `FILE:LINE` of the `[[expect]]` entry.
    pub place: String,
    pub kind: &'static str,
    pub title: String,
    /// `None` when it holds; otherwise what was seen instead and where.
    pub failure: Option<String>,
}

impl ExpectationResult {
    /// Whether the expectation holds.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Judges every expectation of `built` against `observed`, in file order.
pub fn evaluate(built: &Built, observed: &Observed) -> Vec<ExpectationResult> {
    let registry = csp::registry();
    built
        .expectations
        .iter()
        .map(|x| {
            let runs: Vec<&DeviceRun> = x
                .devices
                .iter()
                .filter_map(|id| observed.devices.iter().find(|d| d.id.eq_ignore_ascii_case(id.as_str())))
                .collect();
            let failure = if runs.len() < x.devices.len() {
                let missing: Vec<&str> = x
                    .devices
                    .iter()
                    .filter(|id| !observed.devices.iter().any(|d| d.id.eq_ignore_ascii_case(id.as_str())))
                    .map(|id| id.as_str())
                    .collect();
                Some(format!("the run has no record of device(s) {}", missing.join(", ")))
            } else {
                judge(x, &runs, &registry)
            };
            ExpectationResult {
                place: format!("{}:{}", built.file, x.line),
                kind: x.kind(),
                title: x.title.clone(),
                failure,
            }
        })
        .collect()
}

fn judge(x: &Expectation, runs: &[&DeviceRun], registry: &Registry) -> Option<String> {
    // Latency is a property of the server over every session of the devices, not of one device.
    if let Check::Latency { percentile, under } = &x.check {
        return judge_latency(*percentile, *under, runs);
    }
    let mut problems = Vec::new();
    for run in runs {
        if let Some(p) = judge_device(&x.check, run, registry) {
            problems.push(format!("device {}: {p}", run.id));
        }
    }
    if problems.is_empty() { None } else { Some(problems.join("\n")) }
}

/// Where a session is in the transcript.
fn session_place(s: &Summary) -> String {
    format!("session {} ({} {}, alert {}, {})", s.session_id, s.trigger, s.mode, s.alert, s.started_at.to_rfc3339())
}

/// Where a command is in the transcript, and how the device answered it.
fn command_place(s: &Summary, c: &CommandRecord, target: &str) -> String {
    format!("{} {target} answered {} in {} MsgID {} CmdID {}", c.cmd, c.status, session_place(s), c.msg_id, c.cmd_id)
}

/// At most `max` entries, then how many more there were.
fn capped(mut items: Vec<String>, max: usize) -> String {
    let more = items.len().saturating_sub(max);
    items.truncate(max);
    let mut out = items.join("; ");
    if more > 0 {
        out.push_str(&format!("; and {more} more"));
    }
    out
}

/// The commands of some sessions counted by name (`Get x5, Replace x2`), or `no command`.
fn command_counts<'a>(sessions: impl Iterator<Item = &'a Summary>) -> String {
    let mut counts: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
    for s in sessions {
        for c in &s.commands {
            *counts.entry(c.cmd.as_str()).or_default() += 1;
        }
    }
    if counts.is_empty() {
        "no command".to_string()
    } else {
        counts.iter().map(|(k, n)| format!("{k} x{n}")).collect::<Vec<_>>().join(", ")
    }
}

/// Whether the device accepted a command (2xx).
fn accepted(c: &CommandRecord) -> bool {
    (200..300).contains(&c.status)
}

/// Two LocURIs naming the same node: `./Device/` is the device scope (MS-MDM), `./` optional.
fn same_node(a: &str, b: &str) -> bool {
    fn norm(u: &str) -> &str {
        let u = u.trim();
        let u = u.strip_prefix("./").unwrap_or(u);
        u.strip_prefix("Device/").unwrap_or(u)
    }
    norm(a) == norm(b)
}

/// The tree after session `s` (its snapshot), or the final tree.
fn tree_after<'a>(run: &'a DeviceRun, s: &Summary) -> (&'a TreeState, DateTime<Utc>) {
    run.snapshots
        .iter()
        .find(|x| x.after_session.as_deref() == Some(s.session_id.as_str()))
        .map_or((&run.tree, run.ended_at), |x| (&x.tree, x.at))
}

fn env_at(run: &DeviceRun, at: DateTime<Utc>) -> Env {
    Env { now: at, profile: run.profile, settings: Arc::new(run.settings.clone()) }
}

/// The `latency` expectation: the server's reply time per exchange, at a percentile, over every
/// session of the devices. A session's reply time is its wall time divided by its exchanges
/// (client messages): the HTTP round trips dominate it, mdmsim's own work is small.
fn judge_latency(percentile: f64, under: std::time::Duration, runs: &[&DeviceRun]) -> Option<String> {
    let mut samples: Vec<(u64, &DeviceRun, &Summary)> = Vec::new();
    for run in runs {
        for s in run.sessions.iter().filter(|s| s.messages_received > 0 || s.outcome == Outcome::Completed) {
            samples.push((s.wall_us / u64::from(s.messages_sent.max(1)), run, s));
        }
    }
    if samples.is_empty() {
        return Some("no session ran: there is no reply time to judge".to_string());
    }
    samples.sort_by_key(|(us, _, _)| *us);
    let rank = ((percentile / 100.0) * samples.len() as f64).ceil().max(1.0) as usize;
    let (at, _, _) = samples[rank.min(samples.len()) - 1];
    if u128::from(at) < under.as_micros() {
        return None;
    }
    let slowest: Vec<String> = samples
        .iter()
        .rev()
        .take(3)
        .map(|(us, run, s)| {
            format!("device {} {}: {:.1} ms per exchange", run.id, session_place(s), *us as f64 / 1000.0)
        })
        .collect();
    Some(format!(
        "p{percentile} of {} sessions' reply times is {:.1} ms, expected under {} ms; slowest: {}",
        samples.len(),
        at as f64 / 1000.0,
        under.as_millis(),
        slowest.join("; ")
    ))
}

fn judge_device(check: &Check, run: &DeviceRun, registry: &Registry) -> Option<String> {
    match check {
        Check::Session { window, trigger, mode, alert, count } => {
            let matching: Vec<&Summary> = run
                .sessions
                .iter()
                .filter(|s| window.contains(s.started_at))
                .filter(|s| trigger.is_none_or(|t| s.trigger == t))
                .filter(|s| mode.is_none_or(|m| s.mode == m))
                .filter(|s| alert.is_none_or(|a| s.alert == a))
                .collect();
            let ok = match count {
                Some(n) => matching.len() == *n as usize,
                None => !matching.is_empty(),
            };
            if ok {
                return None;
            }
            let in_window: Vec<String> =
                run.sessions.iter().filter(|s| window.contains(s.started_at)).map(session_place).collect();
            let seen = if in_window.is_empty() {
                format!("no session between {} and {}", window.from.to_rfc3339(), window.to.to_rfc3339())
            } else {
                format!("sessions in the window: {}", in_window.join("; "))
            };
            let nearest = if in_window.is_empty() {
                run.sessions
                    .iter()
                    .filter(|s| trigger.is_none_or(|t| s.trigger == t))
                    .min_by_key(|s| (s.started_at - window.from).num_seconds().abs())
                    .map(|s| format!("; nearest matching: {}", session_place(s)))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            Some(format!(
                "expected {} matching session(s), found {}: {seen}{nearest}",
                count.map_or("at least 1".to_string(), |n| n.to_string()),
                matching.len()
            ))
        }
        Check::Command { command, target, mode, window, sent, status, only_in } => {
            let mut hits = Vec::new();
            for s in run.sessions.iter().filter(|s| window.contains(s.started_at) && mode.is_none_or(|m| s.mode == m)) {
                for c in &s.commands {
                    if command.as_ref().is_some_and(|n| *n != c.cmd) {
                        continue;
                    }
                    if let Some(t) = c.targets.iter().find(|t| target.matches(t)) {
                        hits.push((s, c, t.clone()));
                    }
                }
            }
            let place = |(s, c, t): &(&Summary, &crate::session::CommandRecord, String)| {
                format!(
                    "{} {t} answered {} in {} MsgID {} CmdID {}",
                    c.cmd,
                    c.status,
                    session_place(s),
                    c.msg_id,
                    c.cmd_id
                )
            };
            if *sent {
                if hits.is_empty() {
                    let sessions = run.sessions.iter().filter(|s| window.contains(s.started_at)).count();
                    return Some(format!(
                        "no {} on {target}{} in the {sessions} session(s) of the window",
                        command.as_deref().unwrap_or("command"),
                        mode.map(|m| format!(" in {m} mode")).unwrap_or_default()
                    ));
                }
                if let Some(code) = status
                    && !hits.iter().any(|(_, c, _)| c.status == *code)
                {
                    let seen: Vec<String> = hits.iter().map(place).collect();
                    return Some(format!("expected status {code}, found: {}", capped(seen, 5)));
                }
                let outside: Vec<String> = hits
                    .iter()
                    .filter(|(s, _, _)| !only_in.is_empty() && !only_in.contains(&s.mode))
                    .map(place)
                    .collect();
                if !outside.is_empty() {
                    let modes: Vec<String> = only_in.iter().map(ToString::to_string).collect();
                    return Some(format!(
                        "expected it only in {} mode, the server sent it outside: {}",
                        modes.join(" or "),
                        capped(outside, 5)
                    ));
                }
                None
            } else if hits.is_empty() {
                None
            } else {
                let seen: Vec<String> = hits.iter().map(place).collect();
                Some(format!("the server sent it: {}", capped(seen, 5)))
            }
        }
        Check::Set { node, value, mode, within } => {
            let sessions: Vec<&Summary> = run.sessions.iter().filter(|s| mode.is_none_or(|m| s.mode == m)).collect();
            let n = within.map_or(sessions.len(), |w| (w as usize).min(sessions.len()));
            let considered = &sessions[..n];
            let mut refused = Vec::new();
            for s in considered {
                let writes: Vec<(&CommandRecord, &String)> = s
                    .commands
                    .iter()
                    .filter(|c| c.cmd == "Add" || c.cmd == "Replace")
                    .flat_map(|c| c.targets.iter().filter(|t| node.matches(t)).map(move |t| (c, t)))
                    .collect();
                refused.extend(writes.iter().filter(|(c, _)| !accepted(c)).map(|(c, t)| command_place(s, c, t)));
                let Some((c, t)) = writes.iter().find(|(c, _)| accepted(c)) else { continue };
                let (tree, at) = tree_after(run, s);
                let values = read_nodes(registry, tree, &env_at(run, at), node);
                let bad: Vec<String> =
                    values.iter().filter(|(_, v)| !value.holds(v)).map(|(u, v)| format!("{u} = {v:?}")).collect();
                return if values.is_empty() {
                    Some(format!(
                        "the server wrote it ({}), but no node matching {node} reads back after that session",
                        command_place(s, c, t)
                    ))
                } else if bad.is_empty() {
                    None
                } else {
                    Some(format!(
                        "the server wrote it ({}), but after that session the device reads {}; expected {value}",
                        command_place(s, c, t),
                        bad.join(", ")
                    ))
                };
            }
            let which = mode.map(|m| format!("{m} ")).unwrap_or_default();
            let mut msg = if considered.is_empty() {
                format!("the server did not write {node}: the device had no {which}session to get it in")
            } else {
                let ids: Vec<&str> = considered.iter().map(|s| s.session_id.as_str()).collect();
                format!(
                    "the server did not write {node} (no Add or Replace the device accepted) in the first {n} {which}session(s) ({}); it sent {}",
                    ids.join(", "),
                    command_counts(considered.iter().copied())
                )
            };
            if !refused.is_empty() {
                msg.push_str(&format!("; writes the device refused: {}", capped(refused, 5)));
            }
            Some(msg)
        }
        Check::Profile { node } => {
            let mut delivered: Vec<(usize, &Summary, &CommandRecord, &String)> = Vec::new();
            let mut refused = Vec::new();
            for (i, s) in run.sessions.iter().enumerate() {
                for c in s.commands.iter().filter(|c| c.cmd == "Add" || c.cmd == "Replace") {
                    for t in c.targets.iter().filter(|t| node.matches(t)) {
                        if accepted(c) {
                            // The latest delivery of a node is the one to verify.
                            delivered.retain(|(_, _, _, u)| !same_node(u, t));
                            delivered.push((i, s, c, t));
                        } else {
                            refused.push(command_place(s, c, t));
                        }
                    }
                }
            }
            if delivered.is_empty() {
                let mut msg = format!(
                    "the server never delivered a node matching {node} (no Add or Replace the device accepted) in {} session(s); it sent {}",
                    run.sessions.len(),
                    command_counts(run.sessions.iter())
                );
                if !refused.is_empty() {
                    msg.push_str(&format!("; writes the device refused: {}", capped(refused, 5)));
                }
                return Some(msg);
            }
            let unverified: Vec<String> = delivered
                .iter()
                .filter(|(i, _, _, t)| {
                    !run.sessions[i + 1..].iter().any(|s| {
                        s.commands
                            .iter()
                            .any(|c| c.cmd == "Get" && c.status == 200 && c.targets.iter().any(|u| same_node(u, t)))
                    })
                })
                .map(|(_, s, c, t)| format!("{}, never read back by a Get in a later session", command_place(s, c, t)))
                .collect();
            if unverified.is_empty() {
                None
            } else {
                Some(format!(
                    "{} of {} delivered node(s) not verified: {}",
                    unverified.len(),
                    delivered.len(),
                    capped(unverified, 5)
                ))
            }
        }
        Check::Install { csp, within } => {
            let (done, meaning) = csp.done();
            let is_install = |c: &CommandRecord, t: &str| {
                c.cmd == "Exec" && t.contains(&format!("/{}/", csp.name())) && t.ends_with("/DownloadInstall")
            };
            let mut execs: Vec<(&Summary, &CommandRecord, &String)> = Vec::new();
            let mut refused = Vec::new();
            for s in &run.sessions {
                for c in &s.commands {
                    for t in c.targets.iter().filter(|t| is_install(c, t)) {
                        if accepted(c) {
                            if !execs.iter().any(|(_, _, u)| same_node(u, t)) {
                                execs.push((s, c, t));
                            }
                        } else {
                            refused.push(command_place(s, c, t));
                        }
                    }
                }
            }
            if execs.is_empty() {
                let mut msg = format!(
                    "the server never ran an install through {} (no Exec of .../DownloadInstall the device accepted) in {} session(s); it sent {}",
                    csp.name(),
                    run.sessions.len(),
                    command_counts(run.sessions.iter())
                );
                if !refused.is_empty() {
                    msg.push_str(&format!("; installs the device refused: {}", capped(refused, 5)));
                }
                return Some(msg);
            }
            let mut problems = Vec::new();
            for (s, c, t) in execs {
                let status_uri = format!("{}/Status", t.rsplit_once('/').map_or(t.as_str(), |(p, _)| p));
                let Ok(glob) = super::Glob::parse(&status_uri) else { continue };
                let deadline = s.started_at + *within;
                let mut seen: Vec<String> = Vec::new();
                let trees = run.snapshots.iter().map(|x| (&x.tree, x.at));
                let mut ok = false;
                for (tree, at) in trees.chain(std::iter::once((&run.tree, run.ended_at))) {
                    if at < s.started_at || at > deadline {
                        continue;
                    }
                    for (_, v) in read_nodes(registry, tree, &env_at(run, at), &glob) {
                        if v == done {
                            ok = true;
                        }
                        let entry = format!("{v} ({})", at.to_rfc3339());
                        if seen.last() != Some(&entry) && seen.iter().all(|e| !e.starts_with(&format!("{v} "))) {
                            seen.push(entry);
                        }
                    }
                }
                if !ok {
                    problems.push(format!(
                        "{}: Status never read {done} ({meaning}) by {}; values seen: {}",
                        command_place(s, c, t),
                        deadline.to_rfc3339(),
                        if seen.is_empty() { "none (no Status node)".to_string() } else { seen.join(", ") }
                    ));
                }
            }
            if problems.is_empty() { None } else { Some(problems.join("; ")) }
        }
        Check::Statuses { classes, except, mode } => {
            let mut bad = Vec::new();
            for s in run.sessions.iter().filter(|s| mode.is_none_or(|m| s.mode == m)) {
                for c in &s.commands {
                    if classes.contains(&(c.status / 100)) && !except.contains(&c.status) {
                        let t = c.targets.first().map_or("(no target)", String::as_str);
                        bad.push(command_place(s, c, t));
                    }
                }
            }
            if bad.is_empty() {
                None
            } else {
                Some(format!("the device answered {} command(s) with such a status: {}", bad.len(), capped(bad, 8)))
            }
        }
        Check::Latency { .. } => None,
        Check::Node { node, check } => {
            let env = Env { now: run.ended_at, profile: run.profile, settings: Arc::new(run.settings.clone()) };
            let mut finals = read_nodes(registry, &run.tree, &env, node);
            match check {
                NodeCheck::Exists(want) => {
                    if finals.is_empty() == *want {
                        Some(if *want {
                            format!("no node matches {node} after the run")
                        } else {
                            format!(
                                "{} exist(s) after the run",
                                finals.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>().join(", ")
                            )
                        })
                    } else {
                        None
                    }
                }
                NodeCheck::Equals(want) => {
                    if finals.is_empty() {
                        return Some(format!("no node matches {node} after the run"));
                    }
                    finals.retain(|(_, v)| v != want);
                    if finals.is_empty() {
                        return None;
                    }
                    let seen: Vec<String> = finals.iter().map(|(u, v)| format!("{u} = {v:?}")).collect();
                    Some(format!("expected {want:?}, found {}", seen.join(", ")))
                }
                NodeCheck::Reached(want) => {
                    let mut seen_values: Vec<String> = Vec::new();
                    let trees = run.snapshots.iter().map(|s| (&s.tree, s.at, s.after_session.clone()));
                    let all = trees.chain(std::iter::once((&run.tree, run.ended_at, None)));
                    for (tree, at, after) in all {
                        let env = Env { now: at, profile: run.profile, settings: Arc::new(run.settings.clone()) };
                        for (u, v) in read_nodes(registry, tree, &env, node) {
                            if &v == want {
                                return None;
                            }
                            let when = after.as_ref().map_or(at.to_rfc3339(), |s| format!("after session {s}"));
                            let entry = format!("{u} = {v:?} ({when})");
                            if !seen_values.contains(&entry) {
                                seen_values.push(entry);
                            }
                        }
                    }
                    Some(if seen_values.is_empty() {
                        format!("no node matches {node} in any snapshot or after the run")
                    } else {
                        format!("never read {want:?}; values seen: {}", seen_values.join(", "))
                    })
                }
            }
        }
        Check::Findings { rules } => {
            let mut found: Vec<String> = Vec::new();
            let mut places: Vec<String> = Vec::new();
            for s in &run.sessions {
                for f in &s.findings {
                    found.push(f.what.clone());
                    places.push(format!("{f} in {}", session_place(s)));
                }
            }
            let mut a = found.clone();
            a.sort();
            a.dedup();
            let mut b = rules.clone();
            b.sort();
            b.dedup();
            if a == b {
                None
            } else if places.is_empty() {
                Some(format!("expected findings {}, found none", rules.join(", ")))
            } else {
                // One line per rule: how often, and where it was first seen.
                let mut by_rule: Vec<(String, usize, String)> = Vec::new();
                for (what, place) in found.iter().zip(&places) {
                    match by_rule.iter_mut().find(|(w, _, _)| w == what) {
                        Some(entry) => entry.1 += 1,
                        None => by_rule.push((what.clone(), 1, place.clone())),
                    }
                }
                let lines: Vec<String> =
                    by_rule.iter().map(|(w, n, first)| format!("{w} x{n}, first: {first}")).collect();
                Some(format!(
                    "expected {}, found {} finding(s):\n  {}",
                    if rules.is_empty() { "no findings".to_string() } else { rules.join(", ") },
                    places.len(),
                    lines.join("\n  ")
                ))
            }
        }
        Check::Outcome { error } => {
            let failed: Vec<&Summary> = run.sessions.iter().filter(|s| s.outcome != Outcome::Completed).collect();
            match error {
                None if failed.is_empty() => None,
                None => Some(
                    failed
                        .iter()
                        .map(|s| {
                            format!(
                                "{} ended {:?}: {}",
                                session_place(s),
                                s.outcome,
                                s.error.as_deref().unwrap_or("no error")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                Some(want) => {
                    if failed.iter().any(|s| s.error.as_deref().is_some_and(|e| e.contains(want.as_str()))) {
                        None
                    } else if failed.is_empty() {
                        Some(format!("expected a session to fail with {want:?}, every session ended cleanly"))
                    } else {
                        let seen: Vec<String> = failed
                            .iter()
                            .map(|s| format!("{}: {}", session_place(s), s.error.as_deref().unwrap_or("no error")))
                            .collect();
                        Some(format!("expected an error containing {want:?}, found {}", seen.join("; ")))
                    }
                }
            }
        }
    }
}

/// One Get as a server would send it.
fn get(registry: &Registry, state: &TreeState, env: &Env, uri: &str) -> Option<(StatusCode, Option<String>)> {
    let mut scratch = state.clone();
    let cmd = Command::Get(ItemCmd { cmd_id: "1".into(), items: vec![Item::target(uri)], ..ItemCmd::default() });
    let out = Tree::new(registry, &mut scratch, env).execute(&cmd);
    let first = out.first()?;
    Some((first.code, first.results.first().and_then(|i| i.data.clone())))
}

/// The leaf values of every node matching `glob` (`*` segments expanded through Gets of the
/// interior nodes' child lists), as `(uri, value)`.
pub fn read_nodes(registry: &Registry, state: &TreeState, env: &Env, glob: &Glob) -> Vec<(String, String)> {
    let segs = glob.segments();
    let (root, rest) = match segs.first().map(String::as_str) {
        Some(".") => (".".to_string(), &segs[1..]),
        _ => (".".to_string(), segs),
    };
    let mut frontier = vec![root];
    for seg in rest {
        let wild = seg.contains('*') || seg.contains('?');
        let mut next = Vec::new();
        for parent in &frontier {
            if wild {
                let Some((code, data)) = get(registry, state, env, parent) else { continue };
                if !code.is_success() {
                    continue;
                }
                for child in data.unwrap_or_default().split('/').filter(|c| !c.is_empty()) {
                    let name = percent_encoding::percent_decode_str(child).decode_utf8_lossy().to_string();
                    if segment_matches(seg, &name) {
                        next.push(format!("{parent}/{child}"));
                    }
                }
            } else {
                next.push(format!("{parent}/{seg}"));
            }
        }
        frontier = next;
    }
    frontier
        .into_iter()
        .filter_map(|uri| match get(registry, state, env, &uri) {
            Some((code, data)) if code.is_success() => Some((uri, data.unwrap_or_default())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Device, DeviceId, Template};
    use crate::scenario::check_text;
    use crate::session::{CommandRecord, Finding, Mode, Trigger};

    const FILE: &str = r#"
[scenario]
name = "engine"

[[device]]
template = "win11-laptop"
id_prefix = "AA"

[clock]
start = 2026-03-02T08:00:00Z
until = "1d"

[[expect]]
kind = "session"
at = "+1h"
tolerance = "5m"
trigger = "reboot"
mode = "Machine"
count = 1

[[expect]]
kind = "command"
command = "Replace"
target = "./Vendor/MSFT/DMClient/Provider/*/Poll/*"
mode = "Machine"
sent = false

[[expect]]
kind = "command"
command = "Replace"
target = "./Vendor/MSFT/DMClient/Provider/*/Poll/IntervalForFirstSetOfRetries"
mode = "Maintenance"
status = 200

[[expect]]
kind = "node"
node = "./Vendor/MSFT/DMClient/Provider/*/Poll/IntervalForFirstSetOfRetries"
equals = "15"

[[expect]]
kind = "node"
node = "./Vendor/MSFT/DMClient/Provider/*/Poll/NumberOfFirstRetries"
reached = "8"

[[expect]]
kind = "findings"

[[expect]]
kind = "outcome"
clean = true
"#;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn built() -> Built {
        check_text(FILE, "engine.toml", &|p| Err(p.to_string())).unwrap_or_else(|e| panic!("{e}"))
    }

    fn session(n: u32, trigger: Trigger, mode: Mode, at: &str) -> Summary {
        let mut s = Summary::new(ID, &n.to_string(), mode, trigger, 1201, t(at));
        s.outcome = Outcome::Completed;
        s
    }

    const ID: &str = "AA000000000000000000000000000001";

    /// A device that behaved as the expectations say: reboot session in Machine mode with
    /// inventory only, then a Maintenance session that set the poll schedule.
    fn good_run() -> DeviceRun {
        let template = Template::builtin(Profile::Win10);
        let dev = Device::new(
            DeviceId::parse(ID).unwrap(),
            Profile::Win10,
            "https://mdm.test/",
            "MS DM Server",
            &template,
            t("2026-03-02T08:00:00Z"),
        );
        let mut tree = dev.tree.clone();
        let before = tree.clone();
        let p = "Vendor/MSFT/DMClient/Provider/MS DM Server/Poll";
        tree.set_value(&format!("{p}/IntervalForFirstSetOfRetries"), "15");
        tree.set_value(&format!("{p}/NumberOfFirstRetries"), "8");
        let mid = tree.clone();
        tree.set_value(&format!("{p}/NumberOfFirstRetries"), "0");
        tree.commit();
        let mut s1 = session(1, Trigger::Reboot, Mode::Machine, "2026-03-02T09:01:00Z");
        s1.commands.push(CommandRecord {
            msg_id: "1".into(),
            cmd_id: "2".into(),
            cmd: "Get".into(),
            targets: vec!["./DevDetail/SwV".into()],
            status: 200,
        });
        let mut s2 = session(2, Trigger::Logon, Mode::Maintenance, "2026-03-02T09:30:00Z");
        s2.commands.push(CommandRecord {
            msg_id: "1".into(),
            cmd_id: "5".into(),
            cmd: "Replace".into(),
            targets: vec![format!("./Vendor/MSFT/DMClient/Provider/MS DM Server/Poll/IntervalForFirstSetOfRetries")],
            status: 200,
        });
        DeviceRun {
            id: ID.into(),
            profile: Profile::Win10,
            settings: template.behaviour.clone(),
            sessions: vec![s1, s2],
            snapshots: vec![
                Snapshot { at: t("2026-03-02T09:01:00Z"), after_session: Some("1".into()), tree: before },
                Snapshot { at: t("2026-03-02T09:30:00Z"), after_session: Some("2".into()), tree: mid },
            ],
            tree,
            ended_at: t("2026-03-03T08:00:00Z"),
        }
    }

    #[test]
    fn a_correct_run_meets_every_expectation() {
        let results = evaluate(&built(), &Observed { devices: vec![good_run()] });
        assert_eq!(results.len(), 7);
        for r in &results {
            assert!(r.passed(), "{} {}: {:?}", r.place, r.title, r.failure);
        }
        assert_eq!(results[0].place, "engine.toml:13");
        assert_eq!(results[0].kind, "session");
    }

    #[test]
    fn failures_say_what_was_seen_and_where() {
        let mut run = good_run();
        // The reboot session came late, the server wrote the poll schedule in Machine mode and
        // broke a rule, the last session failed, and the interval never became 15.
        run.sessions[0].started_at = t("2026-03-02T09:20:00Z");
        run.sessions[0].commands.push(CommandRecord {
            msg_id: "2".into(),
            cmd_id: "7".into(),
            cmd: "Replace".into(),
            targets: vec!["./Vendor/MSFT/DMClient/Provider/MS DM Server/Poll/NumberOfFirstRetries".into()],
            status: 405,
        });
        run.sessions[0].findings.push(Finding {
            what: "machine-mode-command".into(),
            msg_id: "2".into(),
            cmd_id: "7".into(),
            cmd: "Replace".into(),
            uri: Some("./Vendor/MSFT/DMClient/Provider/MS DM Server/Poll/NumberOfFirstRetries".into()),
            why: "Machine mode allows inventory only".into(),
        });
        run.sessions[1].outcome = Outcome::Failed;
        run.sessions[1].error = Some("server closed the connection".into());
        run.sessions[1].commands[0].status = 500;
        run.tree.set_value("Vendor/MSFT/DMClient/Provider/MS DM Server/Poll/IntervalForFirstSetOfRetries", "30");
        run.snapshots.clear();
        let results = evaluate(&built(), &Observed { devices: vec![run] });
        let f: Vec<String> = results.iter().map(|r| r.failure.clone().unwrap_or_default()).collect();
        assert!(f[0].contains("expected 1 matching session(s), found 0"), "{}", f[0]);
        assert!(
            f[0].contains("nearest matching: session 1 (reboot Machine, alert 1201, 2026-03-02T09:20:00+00:00)"),
            "{}",
            f[0]
        );
        assert!(f[1].contains("the server sent it: Replace"), "{}", f[1]);
        assert!(f[1].contains("session 1") && f[1].contains("MsgID 2 CmdID 7"), "{}", f[1]);
        assert!(f[2].contains("expected status 200"), "{}", f[2]);
        assert!(f[3].contains("expected \"15\", found") && f[3].contains("= \"30\""), "{}", f[3]);
        assert!(f[4].contains("never read \"8\""), "{}", f[4]);
        assert!(f[5].contains("machine-mode-command") && f[5].contains("CmdID 7"), "{}", f[5]);
        assert!(f[6].contains("session 2") && f[6].contains("server closed the connection"), "{}", f[6]);
        assert!(f.iter().all(|m| m.starts_with(&format!("device {ID}: "))), "{f:?}");
    }

    #[test]
    fn a_device_missing_from_the_run_fails_every_expectation() {
        let results = evaluate(&built(), &Observed::default());
        assert!(results.iter().all(|r| r.failure.as_deref().is_some_and(|f| f.contains(ID))));
    }

    #[test]
    fn node_globs_read_through_the_registry() {
        let run = good_run();
        let env = Env { now: run.ended_at, profile: run.profile, settings: Arc::new(run.settings.clone()) };
        let reg = csp::registry();
        let all = read_nodes(&reg, &run.tree, &env, &Glob::parse("./Vendor/MSFT/DMClient/Provider/*/Poll/*").unwrap());
        assert!(all.iter().any(|(u, v)| u.ends_with("/Poll/IntervalForFirstSetOfRetries") && v == "15"), "{all:?}");
        assert!(all.len() >= 8, "{all:?}");
        // The provider name is read encoded as a server sees it, and the value is the tree's.
        assert!(
            all.iter().all(|(u, _)| u.starts_with("./Vendor/MSFT/DMClient/Provider/MS%20DM%20Server/Poll/")),
            "{all:?}"
        );
        assert!(read_nodes(&reg, &run.tree, &env, &Glob::parse("./Vendor/MSFT/Nope/*").unwrap()).is_empty());
    }

    const SERVER_FILE: &str = r#"
[scenario]
name = "server"

[[device]]
template = "win11-laptop"
id_prefix = "AA"

[[expect]]
kind = "set"
node = "./Vendor/MSFT/DMClient/Provider/*/Poll/IntervalForFirstSetOfRetries"
min = 1
max = 60
mode = "Maintenance"
within = 1

[[expect]]
kind = "profile"
node = "./Device/Vendor/MSFT/Policy/Config/*/*"

[[expect]]
kind = "statuses"
except = [418]

[[expect]]
kind = "latency"
percentile = 95
under = "100ms"

[[expect]]
kind = "command"
command = "Replace"
target = "./**"
only_in = ["Maintenance"]
"#;

    fn cmd(msg: &str, id: &str, name: &str, target: &str, status: u16) -> CommandRecord {
        CommandRecord { msg_id: msg.into(), cmd_id: id.into(), cmd: name.into(), targets: vec![target.into()], status }
    }

    #[test]
    fn server_expectations_hold_on_a_server_that_did_its_part() {
        let b = check_text(SERVER_FILE, "server.toml", &|p| Err(p.to_string())).unwrap_or_else(|e| panic!("{e}"));
        let mut run = good_run();
        let policy = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
        run.sessions[1].commands.push(cmd("1", "6", "Replace", policy, 200));
        run.sessions[1].commands.push(cmd(
            "1",
            "7",
            "Add",
            "./Vendor/MSFT/DMClient/Provider/MS DM Server/Poll/PollOnLogin",
            418,
        ));
        let mut s3 = session(3, Trigger::Poll, Mode::Maintenance, "2026-03-02T10:30:00Z");
        s3.commands.push(cmd("1", "2", "Get", policy, 200));
        run.sessions.push(s3);
        for s in &mut run.sessions {
            s.messages_sent = 2;
            s.wall_us = 20_000;
        }
        let results = evaluate(&b, &Observed { devices: vec![run] });
        for r in &results {
            assert!(r.passed(), "{} {}: {:?}", r.place, r.title, r.failure);
        }
    }

    #[test]
    fn server_expectations_say_what_the_server_did_instead_and_where() {
        let b = check_text(SERVER_FILE, "server.toml", &|p| Err(p.to_string())).unwrap_or_else(|e| panic!("{e}"));
        let mut run = good_run();
        // The write came in Machine mode, refused; the profile was never read back; one session
        // took 2 s per exchange.
        run.sessions[1].commands.clear();
        run.sessions[0].commands.push(cmd(
            "2",
            "9",
            "Replace",
            "./Vendor/MSFT/DMClient/Provider/MS DM Server/Poll/IntervalForFirstSetOfRetries",
            405,
        ));
        run.sessions[0].commands.push(cmd("2", "10", "Replace", "./Device/Vendor/MSFT/Policy/Config/A/B", 200));
        run.sessions[0].messages_sent = 1;
        run.sessions[0].wall_us = 2_000_000;
        let results = evaluate(&b, &Observed { devices: vec![run] });
        let f: Vec<String> = results.iter().map(|r| r.failure.clone().unwrap_or_default()).collect();
        assert!(
            f[0].contains("did not write ./Vendor/MSFT/DMClient/Provider/*/Poll/IntervalForFirstSetOfRetries")
                && f[0].contains("in the first 1 Maintenance session(s) (2); it sent no command"),
            "{}",
            f[0]
        );
        assert!(
            f[1].contains("./Device/Vendor/MSFT/Policy/Config/A/B answered 200 in session 1")
                && f[1].contains("never read back"),
            "{}",
            f[1]
        );
        assert!(
            f[2].contains("answered 405 in session 1 (reboot Machine") && f[2].contains("MsgID 2 CmdID 9"),
            "{}",
            f[2]
        );
        assert!(f[3].contains("p95 of 2 sessions' reply times is 2000.0 ms, expected under 100 ms"), "{}", f[3]);
        assert!(f[4].contains("expected it only in Maintenance mode") && f[4].contains("CmdID 9"), "{}", f[4]);
    }
}
