//! Stage two of a scenario file: [`Spec`] → [`Built`], every value given its meaning (devices
//! with their templates and DeviceIDs, the clock, the timeline, the expectations), every bad
//! value refused with its place.
//!
//! The `[[event]]` entries go through `schedule::parse_timeline` itself, so a scenario's events
//! are exactly the `--events` form of `mdmsim run` (the only addition, `device`, is taken out
//! first). Does not run anything (see [`super::run`]) nor judge a run ([`super::expect`]).

use std::collections::BTreeSet;
use std::ops::Range;

use chrono::{DateTime, Duration, Utc};
use toml::Spanned;

use crate::device::{DEFAULT_PROVIDER_ID, Device, DeviceId, Template};
use crate::schedule::{At, ClockKind, Event, Mode, Trigger, parse_duration, parse_timeline};
use crate::syncml::{Command, Item, ItemCmd, StatusCode};
use crate::tree::{Env, Registry, Tree, TreeState};
use crate::tree::{Profile, Settings};

use super::ScenarioError;
use super::glob::Glob;
use super::spec::{ExpectSpec, Source, Spec};

/// The built-in template names and the fixture texts they stand for.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    ("win11-laptop", include_str!("../../fixtures/templates/win11-laptop.toml")),
    ("win10-desktop", include_str!("../../fixtures/templates/win10-desktop.toml")),
    ("win81-tablet", include_str!("../../fixtures/templates/win81-tablet.toml")),
];

/// The default start of a scenario's clock when `[clock] start` is not given: a fixed instant,
/// so a scenario is reproducible (a Monday, 08:00 UTC).
pub const DEFAULT_START: &str = "2026-03-02T08:00:00Z";

/// The default length of a run when `[clock] until` is not given.
pub const DEFAULT_LENGTH_HOURS: i64 = 24;

/// The default tolerance of a `session` expectation with `at`.
pub const DEFAULT_TOLERANCE_SECS: i64 = 120;

/// A checked scenario, ready to run.
#[derive(Debug, Clone)]
pub struct Built {
    /// The file name as given (for messages and JUnit).
    pub file: String,
    pub name: String,
    pub description: String,
    pub devices: Vec<DeviceGroup>,
    pub clock: ClockPlan,
    /// The events with their instants, in time order (file order among equal instants).
    pub timeline: Vec<ScheduledEvent>,
    pub expectations: Vec<Expectation>,
}

impl Built {
    /// The same scenario with fresh DeviceIDs drawn from `seed`: each keeps its group's
    /// `id_prefix` and the rest of its 32 hex digits comes from the seed, the file name, the
    /// group and the device number, so that a second run against the same server meets devices
    /// it has never seen, and the same seed gives the same devices again. Events and
    /// expectations that name a DeviceID of the file follow it to its new one.
    pub fn with_run_seed(&self, seed: u64) -> Built {
        let file_hash =
            self.file.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let mut map = std::collections::HashMap::new();
        let mut out = self.clone();
        for (g, group) in out.devices.iter_mut().enumerate() {
            let prefix = group.id_prefix.clone();
            for (n, id) in group.ids.iter_mut().enumerate() {
                let a = crate::schedule::device_seed(seed ^ file_hash, ((g as u64) << 32) | n as u64);
                let b = crate::schedule::device_seed(a, 0x1d);
                let digits = format!("{a:016X}{b:016X}");
                let fresh = format!("{prefix}{}", &digits[prefix.len()..]);
                if let Ok(new) = DeviceId::parse(&fresh) {
                    map.insert(id.clone(), new.clone());
                    *id = new;
                }
            }
        }
        let remap = |ids: &mut Vec<DeviceId>| {
            for id in ids.iter_mut() {
                if let Some(new) = map.get(id) {
                    *id = new.clone();
                }
            }
        };
        for e in &mut out.timeline {
            if let Some(ids) = &mut e.devices {
                remap(ids);
            }
        }
        for x in &mut out.expectations {
            remap(&mut x.devices);
        }
        out
    }
}

/// One `[[device]]` group.
#[derive(Debug, Clone)]
pub struct DeviceGroup {
    pub name: String,
    /// The template (built-in or file) with the group's `behaviour` laid on top.
    pub template: Template,
    /// `win11-laptop` or the path as written.
    pub template_name: String,
    pub profile: Profile,
    pub provider_id: String,
    /// The DeviceIDs, one per device: the prefix, then the device number (1-based) in hex,
    /// zero-padded to 32 digits.
    pub ids: Vec<DeviceId>,
    /// The hex digits every DeviceID of the group starts with.
    pub id_prefix: String,
    /// `[device.nodes]`: (LocURI, value) written before the run, in key order.
    pub nodes: Vec<(String, String)>,
    /// Line of the `[[device]]` entry.
    pub line: usize,
}

impl DeviceGroup {
    /// Device `index` of the group as the run starts: created from the template (enrolled at
    /// `now`, managed by `server_url`) with the `[device.nodes]` values written through the
    /// CSPs. The values were checked in stage two, so an error here is a CSP that changed its
    /// mind: it names the node and the status.
    pub fn device(&self, index: usize, server_url: &str, now: DateTime<Utc>) -> Result<Device, String> {
        let id = self.ids.get(index).ok_or_else(|| format!("group {} has no device {index}", self.name))?;
        let mut dev = Device::new(id.clone(), self.profile, server_url, &self.provider_id, &self.template, now);
        self.apply_nodes(&mut dev, now)?;
        Ok(dev)
    }

    /// Writes the `[device.nodes]` values into a device's tree through the CSPs (also used for
    /// devices that were enrolled rather than created). Values written for the group's DMClient
    /// provider go to the device's own provider when an enrollment gave it another one.
    pub fn apply_nodes(&self, dev: &mut Device, now: DateTime<Utc>) -> Result<(), String> {
        let env = dev.env(now);
        let registry = crate::csp::registry();
        let ours = [
            format!("/Provider/{}/", crate::tree::encode_segment(&self.provider_id)),
            format!("/Provider/{}/", self.provider_id),
        ];
        let theirs = format!("/Provider/{}/", crate::tree::encode_segment(&dev.provider_id));
        for (uri, value) in &self.nodes {
            let uri = match ours.iter().find(|o| uri.contains(o.as_str())) {
                Some(o) if dev.provider_id != self.provider_id => uri.replacen(o.as_str(), &theirs, 1),
                _ => uri.clone(),
            };
            write_node(&registry, &mut dev.tree, &env, &uri, value)?;
        }
        dev.tree.commit();
        Ok(())
    }

    /// The template's settings (behaviour overrides included).
    pub fn settings(&self) -> &Settings {
        &self.template.behaviour
    }
}

/// `[clock]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockPlan {
    pub start: DateTime<Utc>,
    pub kind: ClockKind,
    pub until: DateTime<Utc>,
    /// For `scaled` clocks.
    pub speed: f64,
}

/// One event of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEvent {
    pub at: DateTime<Utc>,
    pub event: Event,
    /// The devices it happens to: `None` for all.
    pub devices: Option<Vec<DeviceId>>,
    pub line: usize,
}

/// A time window (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// Whether `t` is in the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t <= self.to
    }
}

/// What a node expectation checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCheck {
    /// The value after the run (`equals = "15"`).
    Equals(String),
    /// The value was seen at some observation point of the run (`reached = "5"`).
    Reached(String),
    /// The node exists (or not) after the run.
    Exists(bool),
}

/// What value a `set` expectation wants the server to have written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueCheck {
    /// Any value the device accepted.
    Any,
    /// Exactly this text.
    Equals(String),
    /// An integer in this range (both ends included).
    Range { min: Option<i64>, max: Option<i64> },
}

impl ValueCheck {
    /// Whether a value read back satisfies it.
    pub fn holds(&self, value: &str) -> bool {
        match self {
            ValueCheck::Any => true,
            ValueCheck::Equals(want) => value == want,
            ValueCheck::Range { min, max } => {
                value.trim().parse::<i64>().is_ok_and(|n| min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m))
            }
        }
    }
}

impl std::fmt::Display for ValueCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueCheck::Any => f.write_str("any value"),
            ValueCheck::Equals(v) => write!(f, "{v:?}"),
            ValueCheck::Range { min: Some(a), max: Some(b) } => write!(f, "an integer from {a} to {b}"),
            ValueCheck::Range { min: Some(a), max: None } => write!(f, "an integer of at least {a}"),
            ValueCheck::Range { min: None, max: Some(b) } => write!(f, "an integer of at most {b}"),
            ValueCheck::Range { min: None, max: None } => f.write_str("an integer"),
        }
    }
}

/// The app-install CSPs an `install` expectation follows, with the Status value that means done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallCsp {
    /// EnterpriseAppManagement (Microsoft's EnterpriseAppManagement CSP page): `Download/<ProductID>/Status` 5 (INSTALLED).
    EnterpriseApp,
    /// EnterpriseDesktopAppManagement (Microsoft's EnterpriseDesktopAppManagement CSP page): `MSI/<ProductID>/Status` 70 (Enforcement Completed).
    DesktopMsi,
}

impl InstallCsp {
    /// The CSP's node name, as it appears in LocURIs.
    pub fn name(self) -> &'static str {
        match self {
            InstallCsp::EnterpriseApp => "EnterpriseAppManagement",
            InstallCsp::DesktopMsi => "EnterpriseDesktopAppManagement",
        }
    }

    /// The Status value of a finished install, and its meaning.
    pub fn done(self) -> (&'static str, &'static str) {
        match self {
            InstallCsp::EnterpriseApp => ("5", "INSTALLED"),
            InstallCsp::DesktopMsi => ("70", "Enforcement Completed"),
        }
    }
}

/// The kinds of expectation.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Sessions matching trigger/mode in a window: exactly `count`, or at least one.
    Session { window: Window, trigger: Option<Trigger>, mode: Option<Mode>, alert: Option<u16>, count: Option<u32> },
    /// The server sent (or, `sent = false`, did not send) a command on a target in a window.
    Command {
        command: Option<String>,
        target: Glob,
        mode: Option<Mode>,
        window: Window,
        sent: bool,
        status: Option<u16>,
        /// With `sent`: the modes it may come in (empty: any).
        only_in: Vec<Mode>,
    },
    /// The server wrote a matching node (Add or Replace answered 2xx) within the device's first
    /// `within` sessions (of `mode`), and the device reads back a value that `value` accepts.
    Set { node: Glob, value: ValueCheck, mode: Option<Mode>, within: Option<u32> },
    /// The server delivered matching nodes (Add or Replace answered 2xx) and read each one back
    /// with a Get answered 200 in a later session.
    Profile { node: Glob },
    /// The server ran an install (Exec of `DownloadInstall` answered 2xx) and the product's
    /// Status read done within `within` of that session.
    Install { csp: InstallCsp, within: Duration },
    /// No Status of these classes (4 for 4xx, 5 for 5xx) to the server's commands, `except`
    /// codes aside.
    Statuses { classes: Vec<u16>, except: Vec<u16>, mode: Option<Mode> },
    /// The server's reply time at `percentile` stays under `under`.
    Latency { percentile: f64, under: std::time::Duration },
    /// A node's value.
    Node { node: Glob, check: NodeCheck },
    /// The conformance findings of the whole run: exactly these rules (empty: none).
    Findings { rules: Vec<String> },
    /// Every session ended cleanly, or some session failed with an error containing the text.
    Outcome { error: Option<String> },
}

/// One `[[expect]]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub line: usize,
    pub column: usize,
    /// A one-line title (the `name` key, or made from the fields).
    pub title: String,
    /// The devices it applies to (every device when the file gives none).
    pub devices: Vec<DeviceId>,
    pub check: Check,
}

impl Expectation {
    /// The kind's name as the file writes it.
    pub fn kind(&self) -> &'static str {
        match self.check {
            Check::Session { .. } => "session",
            Check::Command { .. } => "command",
            Check::Set { .. } => "set",
            Check::Profile { .. } => "profile",
            Check::Install { .. } => "install",
            Check::Statuses { .. } => "statuses",
            Check::Latency { .. } => "latency",
            Check::Node { .. } => "node",
            Check::Findings { .. } => "findings",
            Check::Outcome { .. } => "outcome",
        }
    }
}

/// The expectation kinds.
pub const EXPECT_KINDS: &[&str] =
    &["session", "command", "set", "profile", "install", "statuses", "latency", "node", "findings", "outcome"];

/// The most devices one group may have (a scenario is a test, not a load run).
pub const MAX_COUNT: i64 = 10_000;

/// Stage two. `read_template` reads a template path relative to the scenario file (the caller
/// does the I/O); built-in names never reach it.
pub fn build(
    spec: &Spec,
    text: &str,
    file: &str,
    read_template: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Built, ScenarioError> {
    let src = Source { file, text };
    let meta = spec.scenario.get_ref();
    let name = meta.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(src.err(meta.name.span(), "`name`: expected a scenario name, found an empty string"));
    }

    // Clock.
    let start_default: DateTime<Utc> = DEFAULT_START.parse().unwrap_or(DateTime::<Utc>::MIN_UTC);
    let (mut start, mut kind, mut until_at, mut speed) =
        (start_default, ClockKind::Virtual, At::Offset(Duration::hours(DEFAULT_LENGTH_HOURS)), 1.0);
    if let Some(c) = &spec.clock {
        let c = c.get_ref();
        if let Some(s) = &c.start {
            start = match at_of(s, "start").map_err(|m| src.err(s.span(), m))?.0 {
                At::Time(t) => t,
                At::Offset(_) => {
                    return Err(
                        src.err(s.span(), "`start`: expected an RFC 3339 time (2026-03-02T08:00:00Z), found an offset")
                    );
                }
            };
        }
        if let Some(k) = &c.kind {
            kind = match k.get_ref().as_str() {
                "virtual" => ClockKind::Virtual,
                "scaled" => ClockKind::Scaled,
                "real" => ClockKind::Real,
                other => {
                    return Err(src.err(k.span(), format!("`kind`: expected virtual | scaled | real, found {other:?}")));
                }
            };
        }
        if let Some(u) = &c.until {
            until_at = at_of(u, "until").map_err(|m| src.err(u.span(), m))?.0;
        }
        if let Some(s) = &c.speed {
            if !(*s.get_ref() > 0.0 && s.get_ref().is_finite()) {
                return Err(src.err(s.span(), format!("`speed`: expected a positive number, found {}", s.get_ref())));
            }
            if kind != ClockKind::Scaled {
                return Err(src.err(s.span(), "`speed` is only allowed with kind = \"scaled\""));
            }
            speed = *s.get_ref();
        }
    }
    let until = until_at.resolve(start);
    if until <= start {
        let span = spec.clock.as_ref().and_then(|c| c.get_ref().until.as_ref().map(Spanned::span)).unwrap_or(0..0);
        return Err(src.err(
            span,
            format!("`until`: expected an end after the start {}, found {}", start.to_rfc3339(), until.to_rfc3339()),
        ));
    }
    let clock = ClockPlan { start, kind, until, speed };

    // Devices.
    if spec.device.is_empty() {
        return Err(src.err(0..0, "expected at least one [[device]] entry, found none"));
    }
    let mut devices: Vec<DeviceGroup> = Vec::new();
    let mut all_ids = BTreeSet::new();
    for (i, d) in spec.device.iter().enumerate() {
        let line = src.line_col(d.span().start).0;
        let d = d.get_ref();
        let gname = match &d.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                return Err(src.err(n.span(), "`name`: expected a group name, found an empty string"));
            }
            Some(n) => n.get_ref().trim().to_string(),
            None => format!("device{}", i + 1),
        };
        if devices.iter().any(|g| g.name == gname) {
            let span = d.name.as_ref().map_or(d.template.span(), Spanned::span);
            return Err(
                src.err(span, format!("`name`: expected a name not used by another [[device]], found {gname:?} again"))
            );
        }
        let tname = d.template.get_ref().trim().to_string();
        let (ttext, origin) = match BUILTIN_TEMPLATES.iter().find(|(n, _)| *n == tname) {
            Some((n, t)) => (t.to_string(), format!("built-in {n}")),
            None if tname.ends_with(".toml") || tname.contains('/') => (
                read_template(&tname)
                    .map_err(|m| src.err(d.template.span(), format!("`template`: cannot read {tname:?}: {m}")))?,
                tname.clone(),
            ),
            None => {
                let names: Vec<&str> = BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect();
                return Err(src.err(
                    d.template.span(),
                    format!("`template`: expected {} or a path to a .toml file, found {tname:?}", names.join(" | ")),
                ));
            }
        };
        let mut template =
            Template::parse(&ttext, &origin).map_err(|e| src.err(d.template.span(), format!("`template`: {e}")))?;
        if let Some(b) = &d.behaviour {
            let mut text = String::from("[behaviour]\n");
            text.push_str(&toml::to_string(b.get_ref()).unwrap_or_default());
            let over = Template::parse(&text, "behaviour")
                .map_err(|e| src.err(b.span(), format!("`behaviour`: {}", e.message)))?;
            template = template.overlay(&over);
        }
        let profile = match &d.profile {
            Some(p) => match p.get_ref().as_str() {
                "win10" => Profile::Win10,
                "win81" => Profile::Win81,
                other => return Err(src.err(p.span(), format!("`profile`: expected win10 | win81, found {other:?}"))),
            },
            None => template.profile.unwrap_or(Profile::Win10),
        };
        let count = match &d.count {
            Some(c) if !(1..=MAX_COUNT).contains(c.get_ref()) => {
                return Err(src.err(
                    c.span(),
                    format!("`count`: expected a number from 1 to {MAX_COUNT}, found {}", c.get_ref()),
                ));
            }
            Some(c) => *c.get_ref() as usize,
            None => 1,
        };
        let prefix = match &d.id_prefix {
            Some(p) => {
                let t = p.get_ref().trim().to_ascii_uppercase();
                if t.is_empty() || t.len() > 24 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(src.err(
                        p.span(),
                        format!("`id_prefix`: expected 1 to 24 hexadecimal digits, found {:?}", p.get_ref()),
                    ));
                }
                t
            }
            None => format!("{:02X}", i + 1),
        };
        let mut ids = Vec::with_capacity(count);
        for n in 1..=count {
            let width = 32 - prefix.len();
            let id = DeviceId::parse(&format!("{prefix}{n:0width$X}"))
                .map_err(|e| src.err(d.template.span(), e.to_string()))?;
            if !all_ids.insert(id.clone()) {
                let span = d.id_prefix.as_ref().map_or(d.template.span(), Spanned::span);
                return Err(src.err(span, format!("`id_prefix`: device id {} is also in another group", id.as_str())));
            }
            ids.push(id);
        }
        let provider_id = match &d.provider_id {
            Some(p) if p.get_ref().trim().is_empty() => {
                return Err(src.err(p.span(), "`provider_id`: expected a provider ID, found an empty string"));
            }
            Some(p) => p.get_ref().trim().to_string(),
            None => DEFAULT_PROVIDER_ID.to_string(),
        };
        let mut group = DeviceGroup {
            name: gname,
            template,
            template_name: tname,
            profile,
            provider_id,
            ids,
            id_prefix: prefix,
            nodes: Vec::new(),
            line,
        };
        if let Some(n) = &d.nodes {
            for (uri, v) in n.get_ref() {
                let value = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => {
                        return Err(src.err(
                            n.span(),
                            format!(
                                "`nodes`: {uri:?}: expected a string, integer or boolean value, found {}",
                                other.type_str()
                            ),
                        ));
                    }
                };
                if !uri.starts_with("./") {
                    return Err(
                        src.err(n.span(), format!("`nodes`: expected a LocURI starting with \"./\", found {uri:?}"))
                    );
                }
                group.nodes.push((uri.clone(), value));
            }
            // Written on a fresh device now, so a value the device refuses is a check error,
            // placed at its key (the table's span is its header; the key follows it).
            group.device(0, "https://mdm.invalid/", start).map_err(|m| {
                let key_at = group
                    .nodes
                    .iter()
                    .find(|(uri, _)| m.starts_with(&format!("{uri} = ")))
                    .and_then(|(uri, _)| src.text.get(n.span().start..)?.find(uri.as_str()))
                    .map_or(n.span().start, |off| n.span().start + off);
                // Point at the opening quote when the key is quoted.
                let key_at = if src.text.get(..key_at).is_some_and(|t| t.ends_with('"')) { key_at - 1 } else { key_at };
                src.err(key_at..key_at, format!("`nodes`: {m}"))
            })?;
        }
        devices.push(group);
    }
    let select = |target: &Option<Spanned<String>>| -> Result<Option<Vec<DeviceId>>, ScenarioError> {
        let Some(t) = target else { return Ok(None) };
        let want = t.get_ref().trim();
        if let Some(g) = devices.iter().find(|g| g.name == want) {
            return Ok(Some(g.ids.clone()));
        }
        if let Ok(id) = DeviceId::parse(want)
            && all_ids.contains(&id)
        {
            return Ok(Some(vec![id]));
        }
        let names: Vec<&str> = devices.iter().map(|g| g.name.as_str()).collect();
        Err(src.err(
            t.span(),
            format!(
                "`device`: expected a [[device]] name ({}) or one of its DeviceIDs, found {want:?}",
                names.join(" | ")
            ),
        ))
    };

    // Events: parsed by the `--events` parser on the file's own text, with everything that is
    // not an event blanked out (newlines kept), so its messages carry this file's lines and
    // columns.
    let masked = mask_events(&src, spec)?;
    let timeline = parse_timeline(&masked, file)?;
    if timeline.entries.len() != spec.event.len() {
        return Err(src.err(0..0, "[[event]] entries must be written as [[event]] tables, not inline"));
    }
    let mut events = Vec::with_capacity(spec.event.len());
    for (entry, ev) in timeline.entries.iter().zip(&spec.event) {
        let at = entry.at.resolve(start);
        if at > until {
            return Err(src.err(
                ev.get_ref().at.span(),
                format!(
                    "`at`: expected an instant before the end of the run {}, found {}",
                    until.to_rfc3339(),
                    at.to_rfc3339()
                ),
            ));
        }
        events.push(ScheduledEvent {
            at,
            event: entry.event.clone(),
            devices: select(&ev.get_ref().device)?,
            line: entry.line,
        });
    }
    events.sort_by_key(|e| e.at);

    // Expectations.
    let every: Vec<DeviceId> = devices.iter().flat_map(|g| g.ids.clone()).collect();
    let mut expectations = Vec::with_capacity(spec.expect.len());
    for e in &spec.expect {
        // The place of an expectation is its `[[expect]]` header (the span toml gives it).
        let (line, column) = src.line_col(e.span().start);
        let x = e.get_ref();
        let check = expectation(&src, x, start, until)?;
        let title = match &x.name {
            Some(n) => n.get_ref().clone(),
            None => describe(&check),
        };
        let devs = select(&x.device)?.unwrap_or_else(|| every.clone());
        expectations.push(Expectation { line, column, title, devices: devs, check });
    }

    Ok(Built {
        file: file.to_string(),
        name,
        description: meta.description.clone().unwrap_or_default(),
        devices,
        clock,
        timeline: events,
        expectations,
    })
}

/// Writes one value as a server would: Replace, or Add when the node does not exist yet.
fn write_node(registry: &Registry, state: &mut TreeState, env: &Env, uri: &str, value: &str) -> Result<(), String> {
    let item = Item { data: Some(value.to_string()), ..Item::target(uri) };
    let cmd = |add: bool| {
        let c = ItemCmd { cmd_id: "1".into(), items: vec![item.clone()], ..ItemCmd::default() };
        if add { Command::Add(c) } else { Command::Replace(c) }
    };
    let code = |state: &mut TreeState, add: bool| {
        Tree::new(registry, state, env).execute(&cmd(add)).first().map_or(StatusCode::CommandFailed, |o| o.code)
    };
    let mut got = code(state, false);
    if got == StatusCode::NotFound {
        got = code(state, true);
    }
    if got.is_success() {
        Ok(())
    } else {
        Err(format!("{uri} = {value:?}: the device answers {} ({})", got.code(), got.meaning()))
    }
}

/// An `at`-like value: a string (`+10m`, RFC 3339) or a TOML datetime.
fn at_of(v: &Spanned<toml::Value>, key: &str) -> Result<(At, Range<usize>), String> {
    let at = match v.get_ref() {
        toml::Value::String(s) => At::parse(s),
        toml::Value::Datetime(d) => At::parse(&d.to_string()),
        other => Err(format!("expected a string such as \"+10m\" or an RFC 3339 time, found {}", other.type_str())),
    };
    at.map(|a| (a, v.span())).map_err(|m| format!("`{key}`: {m}"))
}

/// The text with only the `[[event]]` tables left (their `device` lines blanked too).
fn mask_events(src: &Source<'_>, spec: &Spec) -> Result<String, ScenarioError> {
    let text = src.text.as_bytes();
    let mut out: Vec<u8> = text.iter().map(|&b| if b == b'\n' || b == b'\r' { b } else { b' ' }).collect();
    for ev in &spec.event {
        // The entry's span is its `[[event]]` header; its keys run to the last value.
        let mut span = ev.span();
        if !src.text.get(span.start..).is_some_and(|t| t.starts_with("[[")) {
            return Err(
                src.err(span, "expected an [[event]] table, found an inline event: write each event as [[event]]")
            );
        }
        let e = ev.get_ref();
        let ends = [
            Some(e.at.span().end),
            Some(e.kind.span().end),
            e.user.as_ref().map(|v| v.span().end),
            e.interactive.as_ref().map(|v| v.span().end),
            e.device.as_ref().map(|v| v.span().end),
        ];
        span.end = ends.into_iter().flatten().fold(span.end, usize::max);
        let span = span.start.min(text.len())..span.end.min(text.len());
        out[span.clone()].copy_from_slice(&text[span]);
        if let Some(d) = &ev.get_ref().device {
            // Blank `device = "..."` from the start of its line to the end of its value.
            let v = d.span();
            let line_start = src.text.get(..v.start).and_then(|t| t.rfind('\n')).map_or(0, |p| p + 1);
            let key = src.text.get(line_start..v.start).unwrap_or("");
            let ok = key.trim_end().trim_end_matches('=').trim() == "device";
            if !ok {
                return Err(src.err(v, "`device`: write it on its own line as `device = \"name\"`"));
            }
            for b in &mut out[line_start..v.end.min(text.len())] {
                *b = b' ';
            }
        }
    }
    // Only ASCII bytes were written over whole characters or copied: still UTF-8 unless a
    // multi-byte character straddled a span edge, which TOML spans never do.
    String::from_utf8(out).map_err(|_| src.err(0..0, "the file is not valid UTF-8"))
}

fn refuse_keys(src: &Source<'_>, x: &ExpectSpec, kind: &str, allowed: &[&str]) -> Result<(), ScenarioError> {
    let present: [(&str, Option<Range<usize>>); 29] = [
        ("at", x.at.as_ref().map(Spanned::span)),
        ("tolerance", x.tolerance.as_ref().map(Spanned::span)),
        ("trigger", x.trigger.as_ref().map(Spanned::span)),
        ("mode", x.mode.as_ref().map(Spanned::span)),
        ("count", x.count.as_ref().map(Spanned::span)),
        ("alert", x.alert.as_ref().map(Spanned::span)),
        ("from", x.from.as_ref().map(Spanned::span)),
        ("to", x.to.as_ref().map(Spanned::span)),
        ("command", x.command.as_ref().map(Spanned::span)),
        ("target", x.target.as_ref().map(Spanned::span)),
        ("sent", x.sent.as_ref().map(Spanned::span)),
        ("status", x.status.as_ref().map(Spanned::span)),
        ("node", x.node.as_ref().map(Spanned::span)),
        ("equals", x.equals.as_ref().map(Spanned::span)),
        ("reached", x.reached.as_ref().map(Spanned::span)),
        ("exists", x.exists.as_ref().map(Spanned::span)),
        ("rules", x.rules.as_ref().map(Spanned::span)),
        ("clean", x.clean.as_ref().map(Spanned::span)),
        ("error", x.error.as_ref().map(Spanned::span)),
        ("only_in", x.only_in.as_ref().map(Spanned::span)),
        ("within", x.within.as_ref().map(Spanned::span)),
        ("min", x.min.as_ref().map(Spanned::span)),
        ("max", x.max.as_ref().map(Spanned::span)),
        ("csp", x.csp.as_ref().map(Spanned::span)),
        ("class", x.class.as_ref().map(Spanned::span)),
        ("except", x.except.as_ref().map(Spanned::span)),
        ("percentile", x.percentile.as_ref().map(Spanned::span)),
        ("under", x.under.as_ref().map(Spanned::span)),
        ("name", None),
    ];
    for (key, span) in present {
        if let Some(span) = span
            && !allowed.contains(&key)
        {
            return Err(src.err(
                span,
                format!("`{key}` is not allowed on a `{kind}` expectation (allowed: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn expectation(
    src: &Source<'_>,
    x: &ExpectSpec,
    start: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Check, ScenarioError> {
    let kind = x.kind.get_ref().as_str();
    let instant = |v: &Spanned<toml::Value>, key: &str| -> Result<DateTime<Utc>, ScenarioError> {
        at_of(v, key).map(|(a, _)| a.resolve(start)).map_err(|m| src.err(v.span(), m))
    };
    let window =
        |from: &Option<Spanned<toml::Value>>, to: &Option<Spanned<toml::Value>>| -> Result<Window, ScenarioError> {
            let f = from.as_ref().map(|v| instant(v, "from")).transpose()?.unwrap_or(start);
            let t = to.as_ref().map(|v| instant(v, "to")).transpose()?.unwrap_or(until);
            if t < f {
                let span = to.as_ref().map_or(0..0, Spanned::span);
                return Err(src.err(
                    span,
                    format!("`to`: expected an instant after `from` ({}), found {}", f.to_rfc3339(), t.to_rfc3339()),
                ));
            }
            Ok(Window { from: f, to: t })
        };
    let mode = |m: &Option<Spanned<String>>| -> Result<Option<Mode>, ScenarioError> {
        m.as_ref()
            .map(|m| m.get_ref().parse::<Mode>().map_err(|e| src.err(m.span(), format!("`mode`: {e}"))))
            .transpose()
    };
    match kind {
        "session" => {
            refuse_keys(
                src,
                x,
                kind,
                &["at", "tolerance", "trigger", "mode", "alert", "count", "from", "to", "name", "device"],
            )?;
            let window = match &x.at {
                Some(at) => {
                    if x.from.is_some() || x.to.is_some() {
                        return Err(src.err(
                            at.span(),
                            "`at` and `from`/`to` cannot both be given: `at` means the window at ± tolerance",
                        ));
                    }
                    let t = instant(at, "at")?;
                    let tol = match &x.tolerance {
                        Some(s) => {
                            parse_duration(s.get_ref()).map_err(|m| src.err(s.span(), format!("`tolerance`: {m}")))?
                        }
                        None => Duration::seconds(DEFAULT_TOLERANCE_SECS),
                    };
                    Window { from: t - tol, to: t + tol }
                }
                None => {
                    if let Some(s) = &x.tolerance {
                        return Err(src.err(s.span(), "`tolerance` needs `at`"));
                    }
                    window(&x.from, &x.to)?
                }
            };
            let trigger = match &x.trigger {
                Some(t) => Some(<Trigger as crate::names::Named>::from_name(t.get_ref()).ok_or_else(|| {
                    src.err(t.span(), format!("`trigger`: expected enrollment | reboot | logon | nightly | push | poll | manual, found {:?}", t.get_ref()))
                })?),
                None => None,
            };
            let count = match &x.count {
                Some(c) if !(0..=i64::from(u32::MAX)).contains(c.get_ref()) => {
                    return Err(src.err(
                        c.span(),
                        format!("`count`: expected a number of sessions (0 or more), found {}", c.get_ref()),
                    ));
                }
                Some(c) => Some(*c.get_ref() as u32),
                None => None,
            };
            let alert = match &x.alert {
                Some(a) if !matches!(a.get_ref(), 1200 | 1201) => {
                    return Err(src.err(
                        a.span(),
                        format!(
                            "`alert`: expected 1201 (client-initiated) or 1200 (server-initiated), found {}",
                            a.get_ref()
                        ),
                    ));
                }
                Some(a) => Some(*a.get_ref() as u16),
                None => None,
            };
            Ok(Check::Session { window, trigger, mode: mode(&x.mode)?, alert, count })
        }
        "command" => {
            refuse_keys(
                src,
                x,
                kind,
                &["command", "target", "mode", "from", "to", "sent", "status", "only_in", "name", "device"],
            )?;
            let Some(t) = &x.target else {
                return Err(src.err(x.kind.span(), "a `command` expectation needs `target` (a LocURI glob)"));
            };
            let target = Glob::parse(t.get_ref()).map_err(|m| src.err(t.span(), format!("`target`: {m}")))?;
            let command = match &x.command {
                Some(c) => {
                    const NAMES: &[&str] = &["Add", "Replace", "Delete", "Get", "Exec", "Atomic", "Sequence", "Alert"];
                    match NAMES.iter().find(|n| n.eq_ignore_ascii_case(c.get_ref())) {
                        Some(n) => Some(n.to_string()),
                        None => {
                            return Err(src.err(
                                c.span(),
                                format!("`command`: expected {}, found {:?}", NAMES.join(" | "), c.get_ref()),
                            ));
                        }
                    }
                }
                None => None,
            };
            let status = match &x.status {
                Some(s) if !(100..=599).contains(s.get_ref()) => {
                    return Err(src
                        .err(s.span(), format!("`status`: expected a status code (100..599), found {}", s.get_ref())));
                }
                Some(s) => Some(*s.get_ref() as u16),
                None => None,
            };
            let sent = x.sent.as_ref().is_none_or(|s| *s.get_ref());
            if !sent && let Some(s) = &x.status {
                return Err(src.err(s.span(), "`status` means nothing with `sent = false`"));
            }
            let only_in = match &x.only_in {
                Some(o) if !sent => {
                    return Err(src.err(o.span(), "`only_in` means nothing with `sent = false`"));
                }
                Some(o) if o.get_ref().is_empty() => {
                    return Err(
                        src.err(o.span(), "`only_in`: expected a list of modes (Machine, Maintenance, Apps), found []")
                    );
                }
                Some(o) => o
                    .get_ref()
                    .iter()
                    .map(|m| m.parse::<Mode>().map_err(|e| src.err(o.span(), format!("`only_in`: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            Ok(Check::Command {
                command,
                target,
                mode: mode(&x.mode)?,
                window: window(&x.from, &x.to)?,
                sent,
                status,
                only_in,
            })
        }
        "set" => {
            refuse_keys(src, x, kind, &["node", "equals", "min", "max", "mode", "within", "name", "device"])?;
            let node = node_glob(src, x, kind)?;
            let value = match (&x.equals, &x.min, &x.max) {
                (Some(e), None, None) => ValueCheck::Equals(e.get_ref().clone()),
                (Some(e), _, _) => {
                    return Err(src.err(e.span(), "`equals` and `min`/`max` cannot both be given"));
                }
                (None, None, None) => ValueCheck::Any,
                (None, min, max) => {
                    let (lo, hi) = (min.as_ref().map(|m| *m.get_ref()), max.as_ref().map(|m| *m.get_ref()));
                    if let (Some(a), Some(b)) = (lo, hi)
                        && a > b
                    {
                        let span = max.as_ref().map_or(0..0, Spanned::span);
                        return Err(src.err(span, format!("`max`: expected at least `min` ({a}), found {b}")));
                    }
                    ValueCheck::Range { min: lo, max: hi }
                }
            };
            let within = match &x.within {
                None => None,
                Some(w) => match w.get_ref() {
                    toml::Value::Integer(n) if (1..=i64::from(u32::MAX)).contains(n) => Some(*n as u32),
                    other => {
                        return Err(src.err(
                            w.span(),
                            format!("`within`: expected a number of sessions (1 or more), found {other}"),
                        ));
                    }
                },
            };
            Ok(Check::Set { node, value, mode: mode(&x.mode)?, within })
        }
        "profile" => {
            refuse_keys(src, x, kind, &["node", "name", "device"])?;
            Ok(Check::Profile { node: node_glob(src, x, kind)? })
        }
        "install" => {
            refuse_keys(src, x, kind, &["csp", "within", "name", "device"])?;
            let Some(c) = &x.csp else {
                return Err(src.err(
                    x.kind.span(),
                    "an `install` expectation needs `csp` (EnterpriseAppManagement or EnterpriseDesktopAppManagement)",
                ));
            };
            let csp = match c.get_ref().as_str() {
                "EnterpriseAppManagement" => InstallCsp::EnterpriseApp,
                "EnterpriseDesktopAppManagement" => InstallCsp::DesktopMsi,
                other => {
                    return Err(src.err(
                        c.span(),
                        format!(
                            "`csp`: expected EnterpriseAppManagement | EnterpriseDesktopAppManagement, found {other:?}"
                        ),
                    ));
                }
            };
            let within = match &x.within {
                None => until - start,
                Some(w) => match w.get_ref() {
                    toml::Value::String(t) => {
                        parse_duration(t).map_err(|m| src.err(w.span(), format!("`within`: {m}")))?
                    }
                    other => {
                        return Err(src.err(
                            w.span(),
                            format!("`within`: expected a duration such as \"2h\", found {}", other.type_str()),
                        ));
                    }
                },
            };
            Ok(Check::Install { csp, within })
        }
        "statuses" => {
            refuse_keys(src, x, kind, &["class", "except", "mode", "name", "device"])?;
            let classes = match &x.class {
                None => vec![4, 5],
                Some(c) => c
                    .get_ref()
                    .iter()
                    .map(|t| match t.to_ascii_lowercase().as_str() {
                        "4xx" => Ok(4),
                        "5xx" => Ok(5),
                        other => {
                            Err(src.err(c.span(), format!("`class`: expected \"4xx\" or \"5xx\", found {other:?}")))
                        }
                    })
                    .collect::<Result<Vec<u16>, _>>()?,
            };
            let except = match &x.except {
                None => Vec::new(),
                Some(e) => e
                    .get_ref()
                    .iter()
                    .map(|n| {
                        u16::try_from(*n).ok().filter(|c| (100..=599).contains(c)).ok_or_else(|| {
                            src.err(e.span(), format!("`except`: expected status codes (100..599), found {n}"))
                        })
                    })
                    .collect::<Result<Vec<u16>, _>>()?,
            };
            Ok(Check::Statuses { classes, except, mode: mode(&x.mode)? })
        }
        "latency" => {
            refuse_keys(src, x, kind, &["percentile", "under", "name", "device"])?;
            let percentile = match &x.percentile {
                None => 95.0,
                Some(p) => {
                    let v = match p.get_ref() {
                        toml::Value::Integer(n) => *n as f64,
                        toml::Value::Float(f) => *f,
                        other => {
                            return Err(src.err(
                                p.span(),
                                format!("`percentile`: expected a number, found {}", other.type_str()),
                            ));
                        }
                    };
                    if !(v > 0.0 && v <= 100.0) {
                        return Err(src.err(
                            p.span(),
                            format!("`percentile`: expected a number above 0 and at most 100, found {v}"),
                        ));
                    }
                    v
                }
            };
            let Some(u) = &x.under else {
                return Err(
                    src.err(x.kind.span(), "a `latency` expectation needs `under` (a duration such as \"500ms\")")
                );
            };
            let under = parse_short_duration(u.get_ref()).map_err(|m| src.err(u.span(), format!("`under`: {m}")))?;
            Ok(Check::Latency { percentile, under })
        }
        "node" => {
            refuse_keys(src, x, kind, &["node", "equals", "reached", "exists", "name", "device"])?;
            let node = node_glob(src, x, kind)?;
            let checks = [x.equals.is_some(), x.reached.is_some(), x.exists.is_some()];
            if checks.iter().filter(|c| **c).count() != 1 {
                return Err(
                    src.err(x.kind.span(), "a `node` expectation needs exactly one of `equals`, `reached`, `exists`")
                );
            }
            let check = if let Some(v) = &x.equals {
                NodeCheck::Equals(v.get_ref().clone())
            } else if let Some(v) = &x.reached {
                NodeCheck::Reached(v.get_ref().clone())
            } else {
                NodeCheck::Exists(x.exists.as_ref().is_some_and(|e| *e.get_ref()))
            };
            Ok(Check::Node { node, check })
        }
        "findings" => {
            refuse_keys(src, x, kind, &["rules", "name", "device"])?;
            let rules = x.rules.as_ref().map(|r| r.get_ref().clone()).unwrap_or_default();
            Ok(Check::Findings { rules })
        }
        "outcome" => {
            refuse_keys(src, x, kind, &["clean", "error", "name", "device"])?;
            match (&x.clean, &x.error) {
                (Some(c), None) if *c.get_ref() => Ok(Check::Outcome { error: None }),
                (Some(c), None) => {
                    Err(src.err(c.span(), "`clean = false`: say which error with `error = \"...\"` instead"))
                }
                (None, Some(e)) => Ok(Check::Outcome { error: Some(e.get_ref().clone()) }),
                (None, None) => Ok(Check::Outcome { error: None }),
                (Some(c), Some(_)) => Err(src.err(c.span(), "`clean` and `error` cannot both be given")),
            }
        }
        other => {
            Err(src
                .err(x.kind.span(), format!("`kind`: expected one of {}, found {other:?}", EXPECT_KINDS.join(" | "))))
        }
    }
}

/// The `node` key of a `node`, `set` or `profile` expectation: a glob without `**` (values are
/// read level by level through the device's CSPs).
fn node_glob(src: &Source<'_>, x: &ExpectSpec, kind: &str) -> Result<Glob, ScenarioError> {
    let Some(n) = &x.node else {
        return Err(src.err(x.kind.span(), format!("a `{kind}` expectation needs `node` (a LocURI, `*` allowed)")));
    };
    let node = Glob::parse(n.get_ref()).map_err(|m| src.err(n.span(), format!("`node`: {m}")))?;
    if node.has_deep() {
        return Err(src.err(n.span(), "`node`: `**` is not allowed here; name each level (`*` matches one node name)"));
    }
    Ok(node)
}

/// A duration that may be under a second: `250ms`, or the `--events` units (`2s`, `1m`).
pub fn parse_short_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms
            .trim()
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("expected a duration such as \"500ms\" or \"2s\", found {text:?}"));
    }
    let d =
        parse_duration(t).map_err(|_| format!("expected a duration such as \"500ms\" or \"2s\", found {text:?}"))?;
    d.to_std().map_err(|_| format!("expected a positive duration, found {text:?}"))
}

/// A duration as the file writes them: `2h`, `1h30m`, `45s`.
pub fn human_duration(d: Duration) -> String {
    let mut secs = d.num_seconds().max(0);
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// A readable one-line title for an expectation without `name`.
fn describe(c: &Check) -> String {
    let opt = |m: Option<String>| m.map(|s| format!(" {s}")).unwrap_or_default();
    match c {
        Check::Session { window, trigger, mode, alert, count } => format!(
            "{}{}{}{} session between {} and {}",
            count.map_or("a".to_string(), |n| format!("exactly {n}")),
            opt(trigger.map(|t| t.to_string())),
            opt(mode.map(|m| format!("({m})"))),
            opt(alert.map(|a| format!("alert {a}"))),
            window.from.to_rfc3339(),
            window.to.to_rfc3339()
        ),
        Check::Command { command, target, mode, sent, status, only_in, .. } => format!(
            "server {} {} {}{}{}{}",
            if *sent { "sent" } else { "did not send" },
            command.as_deref().unwrap_or("a command"),
            target,
            opt(mode.map(|m| format!("in {m} mode"))),
            opt(status.map(|s| format!("answered {s}"))),
            if only_in.is_empty() {
                String::new()
            } else {
                format!(" only in {} mode", only_in.iter().map(ToString::to_string).collect::<Vec<_>>().join(" or "))
            }
        ),
        Check::Set { node, value, mode, within } => format!(
            "server sets {node} to {value}{}",
            match (within, mode) {
                (Some(n), Some(m)) => format!(" within {n} {m} session(s)"),
                (Some(n), None) => format!(" within {n} session(s)"),
                (None, Some(m)) => format!(" in a {m} session"),
                (None, None) => String::new(),
            }
        ),
        Check::Profile { node } => format!("server delivers {node} and reads it back in a later session"),
        Check::Install { csp, within } => {
            let (code, meaning) = csp.done();
            format!(
                "{} install reaches Status {code} ({meaning}) within {} of the server's Exec",
                csp.name(),
                human_duration(*within)
            )
        }
        Check::Statuses { classes, except, mode } => format!(
            "no {} status to the server's commands{}{}",
            classes.iter().map(|c| format!("{c}xx")).collect::<Vec<_>>().join("/"),
            opt(mode.map(|m| format!("in {m} mode"))),
            if except.is_empty() {
                String::new()
            } else {
                format!(" (except {})", except.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
            }
        ),
        Check::Latency { percentile, under } => {
            format!("p{percentile} of the server's reply time under {} ms", under.as_millis())
        }
        Check::Node { node, check } => match check {
            NodeCheck::Equals(v) => format!("{node} == {v:?} after the run"),
            NodeCheck::Reached(v) => format!("{node} reached {v:?}"),
            NodeCheck::Exists(true) => format!("{node} exists after the run"),
            NodeCheck::Exists(false) => format!("{node} does not exist after the run"),
        },
        Check::Findings { rules } if rules.is_empty() => "no conformance findings".to_string(),
        Check::Findings { rules } => format!("exactly the findings {}", rules.join(", ")),
        Check::Outcome { error: None } => "every session ended cleanly".to_string(),
        Check::Outcome { error: Some(e) } => format!("a session failed with {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::spec::parse;

    const GOOD: &str = r#"
[scenario]
name = "reboot then logon"
description = "operation modes after a reboot and at logon"

[[device]]
name = "laptops"
template = "win11-laptop"
count = 2
id_prefix = "AB"

[[device]]
template = "win81-tablet"

[clock]
start = 2026-03-02T08:00:00Z
until = "12h"

[[event]]
at = "+1h"
kind = "reboot"
device = "laptops"

[[event]]
at = "+90m"
kind = "logon"
user = "enrolled"

[[expect]]
kind = "session"
at = "+1h"
trigger = "reboot"
mode = "Machine"
count = 1
device = "laptops"

[[expect]]
kind = "command"
command = "Replace"
target = "./Vendor/MSFT/DMClient/Provider/*/Poll/*"
mode = "Machine"
sent = false

[[expect]]
kind = "node"
node = "./Vendor/MSFT/DMClient/Provider/*/Poll/IntervalForFirstSetOfRetries"
equals = "15"

[[expect]]
kind = "findings"

[[expect]]
kind = "outcome"
clean = true
"#;

    fn no_files(p: &str) -> Result<String, String> {
        Err(format!("no file {p}"))
    }

    fn check(text: &str) -> Result<Built, ScenarioError> {
        let spec = parse(text, "s.toml")?;
        build(&spec, text, "s.toml", &no_files)
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_good_file_builds() {
        let b = check(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.name, "reboot then logon");
        assert_eq!(b.devices.len(), 2);
        assert_eq!(b.devices[0].ids[0].as_str(), "AB000000000000000000000000000001");
        assert_eq!(b.devices[0].ids[1].as_str(), "AB000000000000000000000000000002");
        assert_eq!(b.devices[1].name, "device2");
        assert_eq!(b.devices[1].profile, Profile::Win81);
        assert_eq!(b.clock.kind, ClockKind::Virtual);
        assert_eq!(b.clock.until, t("2026-03-02T20:00:00Z"));
        assert_eq!(b.timeline.len(), 2);
        assert_eq!(b.timeline[0].at, t("2026-03-02T09:00:00Z"));
        assert_eq!(b.timeline[0].event, Event::Reboot);
        assert_eq!(b.timeline[0].devices.as_ref().map(Vec::len), Some(2));
        assert_eq!(b.timeline[0].line, 21);
        assert_eq!(b.timeline[1].devices, None);
        assert_eq!(b.expectations.len(), 5);
        let x = &b.expectations[0];
        assert_eq!((x.line, x.column), (29, 1));
        assert_eq!(x.devices.len(), 2);
        match &x.check {
            Check::Session { window, trigger, mode, count, .. } => {
                assert_eq!(window.from, t("2026-03-02T08:58:00Z"));
                assert_eq!(*trigger, Some(Trigger::Reboot));
                assert_eq!(*mode, Some(Mode::Machine));
                assert_eq!(*count, Some(1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.expectations[1].devices.len(), 3);
        assert!(matches!(b.expectations[4].check, Check::Outcome { error: None }));
    }

    /// Replaces the first `from` in GOOD and returns the error.
    fn broken(from: &str, to: &str) -> ScenarioError {
        assert!(GOOD.contains(from), "{from}");
        check(&GOOD.replacen(from, to, 1)).expect_err(to)
    }

    #[test]
    fn every_bad_value_is_named_with_its_place() {
        let e = broken("kind = \"reboot\"", "kind = \"dance\"");
        assert_eq!((e.line, e.column), (21, 8), "{e}");
        assert!(e.message.contains("expected one of reboot"), "{e}");
        let e = broken("at = \"+90m\"", "at = \"soon\"");
        assert_eq!((e.line, e.column), (25, 6), "{e}");
        assert!(e.message.contains("expected a duration"), "{e}");
        let e = broken("until = \"12h\"", "until = \"12 hours\"");
        assert_eq!(e.line, 17, "{e}");
        let e = broken("trigger = \"reboot\"", "trigger = \"boot\"");
        assert_eq!((e.line, e.column), (32, 11), "{e}");
        assert!(e.message.contains("expected enrollment | reboot"), "{e}");
        let e = broken("mode = \"Machine\"", "mode = \"Night\"");
        assert!(e.message.contains("Machine, Maintenance or Apps"), "{e}");
        let e = broken("target = \"./Vendor/MSFT/DMClient/Provider/*/Poll/*\"", "target = \"./a//b\"");
        assert_eq!(e.line, 40, "{e}");
        let e = broken("kind = \"findings\"", "kind = \"vibes\"");
        assert!(
            e.message.contains(
                "session | command | set | profile | install | statuses | latency | node | findings | outcome"
            ),
            "{e}"
        );
        let e = broken("equals = \"15\"", "equals = \"15\"\nsent = true");
        assert!(e.message.contains("`sent` is not allowed on a `node` expectation"), "{e}");
        let e = broken("template = \"win81-tablet\"", "template = \"win95\"");
        assert!(e.message.contains("win11-laptop | win10-desktop | win81-tablet"), "{e}");
        let e = broken("template = \"win81-tablet\"", "template = \"mine.toml\"");
        assert!(e.message.contains("cannot read \"mine.toml\""), "{e}");
        let e = broken("device = \"laptops\"", "device = \"desktops\"");
        assert_eq!((e.line, e.column), (22, 10), "{e}");
        assert!(e.message.contains("laptops | device2"), "{e}");
        let e = broken("count = 2", "count = 0");
        assert_eq!(e.line, 9, "{e}");
        let e = broken("at = \"+1h\"\ntrigger", "at = \"+1h\"\ntolerance = \"a while\"\ntrigger");
        assert_eq!((e.line, e.column), (32, 13), "{e}");
        assert!(e.message.contains("`tolerance`: expected a duration"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_where_they_are() {
        let e = broken("user = \"enrolled\"", "user = \"enrolled\"\ncolour = \"red\"");
        assert_eq!(e.line, 28, "{e}");
        assert!(e.message.contains("colour"), "{e}");
        // Inline events are refused with their place, not half-parsed.
        let e = check("event = [{ at = \"+1h\", kind = \"push\" }]\n[scenario]\nname = \"x\"\n[[device]]\ntemplate = \"win11-laptop\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.column), (1, 10), "{e}");
        assert!(e.message.contains("inline event"), "{e}");
        // A key the timeline parser refuses on this kind, reported by it at this file's place.
        let e = broken("kind = \"reboot\"", "kind = \"reboot\"\nuser = \"bob\"");
        assert_eq!(e.line, 22, "{e}");
        assert!(e.message.contains("`user` is not allowed on a `reboot` event"), "{e}");
    }
}
