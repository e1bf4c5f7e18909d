//! The template mix of `mdmsim fleet --templates mix.toml`: which device templates a fleet is
//! made of and in what shares, who its people are (`[identity]`) and how they behave
//! (`[behaviour]`).
//!
//! ```toml
//! [[template]]
//! path = "../templates/win11-laptop.toml"   # relative to the mix file, or a built-in name
//! weight = 70                               # a percentage: the weights sum to 100
//! laptop = true                             # optional: laptop or desktop (default: guessed)
//!
//! [[template]]
//! path = "win10-desktop"                    # built-in: win11-laptop, win10-desktop, win81-tablet
//! weight = 30
//!
//! [identity]
//! domain = "contoso.com"
//! timezones = { "America/New_York" = 40, "Europe/Berlin" = 35, "Asia/Tokyo" = 25 }
//!
//! [behaviour]
//! logon_mean = "08:30"
//! logon_spread_minutes = 40
//! weekend_activity = 0.05
//! never_back = 0.02
//! patch_tuesday = true
//! ```
//!
//! `[[template]]` keys: `path` and `weight` (required), `laptop` (bool), `name` (text, default
//! the file's stem) and `hardware` (`"fleet"`: each device draws a model, the default;
//! `"template"`: keep the template's). `[identity]` keys: `domain`, `timezones` (IANA names
//! with percentages summing to 100) and `apps` (bool). `[behaviour]` keys: [`KNOBS`], the
//! knobs of [`Model`] with their defaults. Every section is optional except one
//! `[[template]]`.
//!
//! Checked as strictly as device templates: an unknown key (with "did you mean"), a value of
//! the wrong type or out of range, a weight that is not a positive number, weights that do not
//! sum to 100, an unknown time zone, a template file that cannot be read or does not check —
//! each refused as `FILE:LINE:COLUMN: what is wrong` (a template's own fault comes after the
//! place of its `path`), the first fault in the file first. Loading is the only I/O: the
//! devices are then a plain function of `(seed, index)` ([`Mix::pick`], [`Mix::identity`],
//! [`Mix::device`]).

use std::path::Path;
use std::str::FromStr as _;

use chrono::NaiveTime;
use chrono_tz::Tz;

use super::behaviour::Model;
use super::identity::{Form, Identity, Population, device_key, device_template, hash};
use crate::device::template::{found, suggest};
use crate::device::{BEHAVIOUR_KEYS, Template};
use crate::scenario::build::BUILTIN_TEMPLATES;
use crate::toml_pos::{Part, Seg, parse_table};
use crate::tree::Profile;

/// A mix that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    /// The mix file itself cannot be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file as named.
        path: String,
        /// The system's reason.
        reason: String,
    },
    /// A fault in the file: where, and what is wrong with what is accepted.
    #[error("{origin}:{line}:{column}: {message}")]
    At {
        /// The file as named.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong, without the place.
        message: String,
    },
}

/// One `[[template]]` of a mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MixTemplate {
    /// Its name in reports (`name`, else the file's stem or the built-in name).
    pub name: String,
    /// `path` as written.
    pub path: String,
    /// The template (over the built-in one of its profile, with the profile set).
    pub template: Template,
    /// Its profile (the file's, else win10).
    pub profile: Profile,
    /// Its share of the fleet, in percent.
    pub weight: f64,
    /// Laptop or desktop, and whose hardware.
    pub form: Form,
    /// The weight in thousandths of a percent (what [`Mix::pick`] draws with).
    milli: u64,
}

/// A checked mix: templates with their shares, the population and the behaviour model.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// The mix file as named (`built-in` for [`Mix::builtin`]).
    pub origin: String,
    /// The templates, in file order.
    pub templates: Vec<MixTemplate>,
    /// The `[identity]` table.
    pub population: Population,
    /// The `[behaviour]` table.
    pub model: Model,
}

/// The fleet of `mdmsim fleet` without `--templates`: 60% Windows 11 laptops, 40% Windows 10
/// desktops, the default population and behaviour.
const BUILTIN_MIX: &str = "[[template]]\npath = \"win11-laptop\"\nweight = 60\nlaptop = true\n\n\
                           [[template]]\npath = \"win10-desktop\"\nweight = 40\nlaptop = false\n";

/// Reads and checks the mix file at `path`; template paths are relative to its directory.
pub fn load(path: &Path) -> Result<Mix, MixError> {
    let origin = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| MixError::Read { path: origin.clone(), reason: e.to_string() })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Mix::parse(&text, &origin, &|p: &str| {
        let file = dir.join(p);
        let name = file.display().to_string();
        std::fs::read_to_string(&file).map(|t| (t, name.clone())).map_err(|e| format!("cannot read {name}: {e}"))
    })
}

/// Reads a template file named in a mix: its text and the name its errors carry, or why not.
pub type ReadTemplate<'a> = &'a dyn Fn(&str) -> Result<(String, String), String>;

impl Mix {
    /// The default fleet ([`BUILTIN_MIX`]: built-in templates only, no file is read).
    pub fn builtin() -> Mix {
        // The text is checked by a test; a failure here is a programming error.
        Mix::parse(BUILTIN_MIX, "built-in", &|p: &str| Err(format!("no file {p} in the built-in mix")))
            .expect("the built-in mix checks")
    }

    /// Parses and checks a mix text named `origin`; `read` gives the text of a template file
    /// named by a `path` (built-in names are not asked for).
    pub fn parse(text: &str, origin: &str, read: ReadTemplate<'_>) -> Result<Mix, MixError> {
        let at = |(line, column): (usize, usize), message: String| MixError::At {
            origin: origin.to_string(),
            line,
            column,
            message,
        };
        let (doc, places) = parse_table(text).map_err(|e| at((e.line, e.column), e.message))?;
        let mut problems = Vec::new();
        let mix = read_mix(&doc, origin, read, &mut problems);
        let first =
            problems.into_iter().map(|p| (places.find(&p.path, p.part), p.message)).min_by_key(|(place, _)| *place);
        match first {
            Some((place, message)) => Err(at(place, message)),
            None => Ok(mix),
        }
    }

    /// The template of device `index` of the fleet of `seed`, drawn by weight, and its index
    /// in [`Mix::templates`].
    pub fn pick(&self, seed: u64, index: u64) -> (&Template, usize) {
        let total: u64 = self.templates.iter().map(|t| t.milli).sum();
        let mut at = hash(device_key(seed, index), 0, 0x9c) % total.max(1);
        for (i, t) in self.templates.iter().enumerate() {
            if at < t.milli {
                return (&t.template, i);
            }
            at -= t.milli;
        }
        (&self.templates[0].template, 0)
    }

    /// The identity of device `index` of the fleet of `seed`.
    pub fn identity(&self, seed: u64, index: u64) -> Identity {
        let (template, i) = self.pick(seed, index);
        Identity::derive(seed, index, template, self.templates[i].form, &self.population)
    }

    /// Device `index` of the fleet of `seed`: its identity, its own template
    /// ([`device_template`]) and its profile, what `Device::new` takes.
    pub fn device(&self, seed: u64, index: u64) -> (Identity, Template, Profile) {
        let (_, i) = self.pick(seed, index);
        let entry = &self.templates[i];
        let id = Identity::derive(seed, index, &entry.template, entry.form, &self.population);
        let template = device_template(&id, &entry.template);
        (id, template, entry.profile)
    }
}

/// A `[behaviour]` knob: its key, the kind of its value, its default and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knob {
    /// The key.
    pub name: &'static str,
    /// What its value must be.
    pub kind: KnobKind,
    /// Its value in [`Model::default`].
    pub default: &'static str,
    /// What it changes.
    pub doc: &'static str,
}

/// The kind of value a knob takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnobKind {
    /// A share or probability from 0 to 1.
    Share,
    /// A whole number from `min` to `max` of `unit`.
    Whole {
        /// The smallest value accepted.
        min: u32,
        /// The largest value accepted.
        max: u32,
        /// What one counts, for messages.
        unit: &'static str,
    },
    /// A number from 0 to 8.
    Breaks,
    /// A local time, `HH:MM`.
    Time,
    /// `true` or `false`.
    Bool,
    /// A list of weekday names (`mon` ... `sun`).
    Weekdays,
}

const fn knob(name: &'static str, kind: KnobKind, default: &'static str, doc: &'static str) -> Knob {
    Knob { name, kind, default, doc }
}

const MINUTES: KnobKind = KnobKind::Whole { min: 0, max: 240, unit: "minutes" };

/// Every `[behaviour]` key of a mix, in the order the docs give them.
pub const KNOBS: &[Knob] = &[
    knob("workdays", KnobKind::Weekdays, "[\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]", "the working days"),
    knob("logon_mean", KnobKind::Time, "\"08:30\"", "mean local time of the morning logon"),
    knob("logon_spread_minutes", MINUTES, "40", "standard deviation of the logon time"),
    knob("logoff_mean", KnobKind::Time, "\"17:30\"", "mean local time the working day ends"),
    knob("logoff_spread_minutes", MINUTES, "60", "standard deviation of the end of the day"),
    knob("logoff_share", KnobKind::Share, "0.6", "share of evenings ending with a logoff (else a lock)"),
    knob("lunch_start", KnobKind::Time, "\"12:00\"", "earliest start of the lunch lock"),
    knob("lunch_end", KnobKind::Time, "\"13:30\"", "latest end of the lunch lock"),
    knob("lunch_share", KnobKind::Share, "0.8", "share of workdays with a lunch lock"),
    knob("breaks_per_day", KnobKind::Breaks, "2", "mean number of short lock breaks (5 to 15 minutes) a day"),
    knob("weekend_activity", KnobKind::Share, "0.05", "probability that a device is used on a day off"),
    knob("absence", KnobKind::Share, "0.04", "probability that nobody comes on a workday"),
    knob("laptop_sleep", KnobKind::Share, "0.85", "share of evenings a laptop sleeps, offline until next used"),
    knob("patch_tuesday", KnobKind::Bool, "true", "restart for the monthly update of the second Tuesday"),
    knob(
        "patch_deadline_days",
        KnobKind::Whole { min: 1, max: 28, unit: "days" },
        "7",
        "every device restarts within this many nights of the update's release",
    ),
    knob("weekly_restart", KnobKind::Share, "0.25", "share of devices restarted every week"),
    knob("manual_sync", KnobKind::Share, "0.1", "probability of a manual sync on a workday"),
    knob("push", KnobKind::Share, "0.2", "probability of a push on a workday"),
    knob("never_back", KnobKind::Share, "0.02", "share of devices that go offline for good"),
    knob(
        "never_back_days",
        KnobKind::Whole { min: 1, max: 3650, unit: "days" },
        "7",
        "they go within this many days of the start of the run",
    ),
];

impl KnobKind {
    /// What a value of this kind looks like, for messages.
    pub fn expected(self) -> String {
        match self {
            KnobKind::Share => "a number from 0 to 1".into(),
            KnobKind::Whole { min, max, unit } => format!("a whole number of {unit} from {min} to {max}"),
            KnobKind::Breaks => "a number from 0 to 8".into(),
            KnobKind::Time => "a local time as \"HH:MM\" (\"08:30\")".into(),
            KnobKind::Bool => "true or false".into(),
            KnobKind::Weekdays => "a list of weekdays such as [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]".into(),
        }
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const WEEKDAY_NAMES: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

/// One fault: the path of the key or value at fault and what is wrong.
struct Problem {
    path: Vec<Seg>,
    part: Part,
    message: String,
}

fn key_at(path: Vec<Seg>, message: String) -> Problem {
    Problem { path, part: Part::Key, message }
}

fn value_at(path: Vec<Seg>, message: String) -> Problem {
    Problem { path, part: Part::Value, message }
}

fn segs(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|k| Seg::from(*k)).collect()
}

/// A number as a person writes it (`90`, `99.5`).
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { format!("{x}") }
}

/// A positive weight, or why not.
fn weight_of(value: &toml::Value) -> Result<f64, String> {
    let w = match value {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        other => return Err(found(other)),
    };
    if w.is_finite() && w > 0.0 { Ok(w) } else { Err(found(value)) }
}

/// True when weights meant as percentages sum to 100.
fn sums_to_100(sum: f64) -> bool {
    (sum - 100.0).abs() < 1e-6
}

const TOP_KEYS: [&str; 3] = ["template", "identity", "behaviour"];

fn read_mix(doc: &toml::Table, origin: &str, read: ReadTemplate<'_>, problems: &mut Vec<Problem>) -> Mix {
    let mut mix = Mix {
        origin: origin.to_string(),
        templates: Vec::new(),
        population: Population::default(),
        model: Model::default(),
    };
    for (key, value) in doc {
        match (key.as_str(), value) {
            ("template", toml::Value::Array(entries)) => read_templates(entries, read, &mut mix.templates, problems),
            ("identity", toml::Value::Table(tab)) => read_identity(tab, &mut mix.population, problems),
            ("behaviour", toml::Value::Table(tab)) => read_behaviour(tab, &mut mix.model, problems),
            ("template", _) => problems.push(value_at(
                segs(&[key]),
                format!("`template`: expected an array of tables ([[template]]), found {}", found(value)),
            )),
            ("identity" | "behaviour", _) => problems
                .push(value_at(segs(&[key]), format!("`{key}`: expected a table ([{key}]), found {}", found(value)))),
            (other, _) => problems.push(key_at(
                segs(&[key]),
                format!(
                    "unknown key `{other}` at the top level{}; known keys: [[template]], [identity], [behaviour]",
                    suggest(other, TOP_KEYS)
                ),
            )),
        }
    }
    if !doc.contains_key("template") {
        problems.push(key_at(Vec::new(), "no [[template]]: a mix needs at least one template with its weight".into()));
    }
    mix
}

const TEMPLATE_KEYS: [&str; 5] = ["path", "weight", "laptop", "name", "hardware"];

fn read_templates(
    entries: &[toml::Value],
    read: ReadTemplate<'_>,
    out: &mut Vec<MixTemplate>,
    problems: &mut Vec<Problem>,
) {
    let mut sum = 0.0;
    let mut all_weighted = true;
    for (i, entry) in entries.iter().enumerate() {
        let here = |k: &str| vec![Seg::from("template"), Seg::Index(i), Seg::from(k)];
        let which = format!("[[template]] #{}", i + 1);
        let Some(tab) = entry.as_table() else {
            problems.push(value_at(
                vec![Seg::from("template"), Seg::Index(i)],
                format!("{which}: expected a table, found {}", found(entry)),
            ));
            all_weighted = false;
            continue;
        };
        // A misspelt key is the fault to report, not the key it leaves missing.
        let mut misspelt = false;
        for k in tab.keys().filter(|k| !TEMPLATE_KEYS.contains(&k.as_str())) {
            misspelt = true;
            problems.push(key_at(
                here(k),
                format!(
                    "unknown key `{k}` in {which}{}; known keys: {}",
                    suggest(k, TEMPLATE_KEYS),
                    TEMPLATE_KEYS.join(", ")
                ),
            ));
        }
        let weight = match tab.get("weight") {
            None => {
                if !misspelt {
                    problems.push(value_at(
                        vec![Seg::from("template"), Seg::Index(i)],
                        format!("{which}: `weight` is missing (the template's percentage of the fleet)"),
                    ));
                }
                None
            }
            Some(v) => match weight_of(v) {
                Ok(w) => Some(w),
                Err(f) => {
                    problems.push(value_at(
                        here("weight"),
                        format!(
                            "`weight` in {which}: expected a positive number (a percentage of the fleet), found {f}"
                        ),
                    ));
                    None
                }
            },
        };
        match weight {
            Some(w) => sum += w,
            None => all_weighted = false,
        }
        let laptop = match tab.get("laptop") {
            None => None,
            Some(toml::Value::Boolean(b)) => Some(*b),
            Some(v) => {
                problems.push(value_at(
                    here("laptop"),
                    format!("`laptop` in {which}: expected true or false, found {}", found(v)),
                ));
                None
            }
        };
        let keep_hardware = match tab.get("hardware") {
            None => false,
            Some(toml::Value::String(s)) if s == "fleet" => false,
            Some(toml::Value::String(s)) if s == "template" => true,
            Some(v) => {
                problems.push(value_at(
                    here("hardware"),
                    format!("`hardware` in {which}: expected \"fleet\" or \"template\", found {}", found(v)),
                ));
                false
            }
        };
        let name = match tab.get("name") {
            None => None,
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(v) => {
                problems
                    .push(value_at(here("name"), format!("`name` in {which}: expected a name, found {}", found(v))));
                None
            }
        };
        let path = match tab.get("path") {
            None => {
                if !misspelt {
                    problems.push(value_at(
                        vec![Seg::from("template"), Seg::Index(i)],
                        format!("{which}: `path` is missing (a template file, or one of {})", builtin_names()),
                    ));
                }
                continue;
            }
            Some(toml::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(v) => {
                problems.push(value_at(
                    here("path"),
                    format!(
                        "`path` in {which}: expected a template file or one of {}, found {}",
                        builtin_names(),
                        found(v)
                    ),
                ));
                continue;
            }
        };
        let text = match BUILTIN_TEMPLATES.iter().find(|(n, _)| *n == path) {
            Some((n, text)) => Ok((text.to_string(), format!("built-in {n}"))),
            None => read(&path),
        };
        let parsed = text.and_then(|(text, name)| Template::parse(&text, &name).map_err(|e| e.to_string()));
        let file = match parsed {
            Ok(t) => t,
            Err(why) => {
                problems.push(value_at(here("path"), format!("`path` in {which}: {why}")));
                continue;
            }
        };
        let profile = file.profile.unwrap_or_default();
        let mut template = Template::builtin(profile).overlay(&file);
        template.profile = Some(profile);
        let mut form = Form::of(&template);
        if let Some(l) = laptop {
            form.laptop = l;
        }
        form.keep_hardware = keep_hardware;
        let stem = Path::new(&path).file_stem().map_or(path.clone(), |s| s.to_string_lossy().into_owned());
        let w = weight.unwrap_or(0.0);
        out.push(MixTemplate {
            name: name.unwrap_or(stem),
            path,
            template,
            profile,
            weight: w,
            form,
            milli: (w * 1000.0).round() as u64,
        });
    }
    if all_weighted && !entries.is_empty() && !sums_to_100(sum) {
        problems.push(value_at(
            vec![Seg::from("template"), Seg::Index(0), Seg::from("weight")],
            format!(
                "the [[template]] weights sum to {}, expected 100 (each weight is the template's percentage of the fleet)",
                number(sum)
            ),
        ));
    }
}

fn builtin_names() -> String {
    BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

const IDENTITY_KEYS: [&str; 3] = ["domain", "timezones", "apps"];

fn read_identity(tab: &toml::Table, out: &mut Population, problems: &mut Vec<Problem>) {
    for (key, value) in tab {
        let here = segs(&["identity", key]);
        match (key.as_str(), value) {
            ("domain", toml::Value::String(s)) if is_domain(s.trim()) => out.domain = s.trim().to_ascii_lowercase(),
            ("domain", v) => problems.push(value_at(
                here,
                format!("`domain` in [identity]: expected a DNS domain such as \"contoso.com\", found {}", found(v)),
            )),
            ("apps", toml::Value::Boolean(b)) => out.apps = *b,
            ("apps", v) => {
                problems.push(value_at(here, format!("`apps` in [identity]: expected true or false, found {}", found(v))))
            }
            ("timezones", toml::Value::Table(zones)) => {
                let mut list = Vec::new();
                let mut sum = 0.0;
                let mut good = true;
                for (name, w) in zones {
                    let at = segs(&["identity", "timezones", name]);
                    match Tz::from_str(name.trim()) {
                        Ok(tz) => match weight_of(w) {
                            Ok(w) => {
                                sum += w;
                                list.push((tz, (w * 1000.0).round() as u32));
                            }
                            Err(f) => {
                                good = false;
                                problems.push(value_at(
                                    at,
                                    format!(
                                        "`{name}` in [identity] timezones: expected a positive number (a percentage of the fleet), found {f}"
                                    ),
                                ));
                            }
                        },
                        Err(_) => {
                            good = false;
                            let near = suggest(name, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()));
                            problems.push(key_at(
                                at,
                                format!(
                                    "unknown time zone `{name}` in [identity] timezones{near}: expected an IANA time zone name such as \"Europe/Paris\""
                                ),
                            ));
                        }
                    }
                }
                if zones.is_empty() {
                    problems.push(value_at(here, "`timezones` in [identity]: expected at least one time zone".into()));
                } else if good && !sums_to_100(sum) {
                    problems.push(value_at(
                        here,
                        format!(
                            "the [identity] timezones weights sum to {}, expected 100 (each weight is a percentage of the fleet)",
                            number(sum)
                        ),
                    ));
                } else {
                    out.timezones = list;
                }
            }
            ("timezones", v) => problems.push(value_at(
                here,
                format!(
                    "`timezones` in [identity]: expected a table of time zones and percentages ({{ \"Europe/Paris\" = 100 }}), found {}",
                    found(v)
                ),
            )),
            (other, _) => problems.push(key_at(
                here,
                format!(
                    "unknown key `{other}` in [identity]{}; known keys: {}",
                    suggest(other, IDENTITY_KEYS),
                    IDENTITY_KEYS.join(", ")
                ),
            )),
        }
    }
}

/// A DNS domain: dot-separated labels of letters, digits and hyphens, at least two.
fn is_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() >= 2
        && s.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn read_behaviour(tab: &toml::Table, model: &mut Model, problems: &mut Vec<Problem>) {
    for (key, value) in tab {
        let here = segs(&["behaviour", key]);
        let Some(knob) = KNOBS.iter().find(|k| k.name == key) else {
            let setting = if BEHAVIOUR_KEYS.iter().any(|k| k.name == key) {
                " (a device setting: set it in the templates' [behaviour])".to_string()
            } else {
                suggest(key, KNOBS.iter().map(|k| k.name))
            };
            let known: Vec<&str> = KNOBS.iter().map(|k| k.name).collect();
            problems.push(key_at(
                here,
                format!("unknown key `{key}` in [behaviour]{setting}; known keys: {}", known.join(", ")),
            ));
            continue;
        };
        let refuse = |problems: &mut Vec<Problem>| {
            problems.push(value_at(
                here.clone(),
                format!("`{key}` in [behaviour]: expected {}, found {}", knob.kind.expected(), found(value)),
            ))
        };
        let float = match value {
            toml::Value::Integer(i) => Some(*i as f64),
            toml::Value::Float(f) if f.is_finite() => Some(*f),
            _ => None,
        };
        match knob.kind {
            KnobKind::Share | KnobKind::Breaks => {
                let max = if knob.kind == KnobKind::Share { 1.0 } else { 8.0 };
                match float.filter(|x| (0.0..=max).contains(x)) {
                    Some(x) => set_number(model, key, x),
                    None => refuse(problems),
                }
            }
            KnobKind::Whole { min, max, .. } => match value.as_integer() {
                Some(n) if (i64::from(min)..=i64::from(max)).contains(&n) => set_number(model, key, n as f64),
                _ => refuse(problems),
            },
            KnobKind::Time => match value.as_str().and_then(|s| NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()) {
                Some(t) => set_time(model, key, t),
                None => refuse(problems),
            },
            KnobKind::Bool => match (key.as_str(), value.as_bool()) {
                ("patch_tuesday", Some(b)) => model.patch_tuesday = b,
                _ => refuse(problems),
            },
            KnobKind::Weekdays => {
                let days: Option<Vec<usize>> = value.as_array().and_then(|a| {
                    a.iter()
                        .map(|d| {
                            let d = d.as_str()?.trim().to_ascii_lowercase();
                            (0..7).find(|&i| d == WEEKDAYS[i] || d == WEEKDAY_NAMES[i])
                        })
                        .collect()
                });
                match days {
                    Some(days) => {
                        model.workdays = [false; 7];
                        for d in days {
                            model.workdays[d] = true;
                        }
                    }
                    None => refuse(problems),
                }
            }
        }
    }
    let order = |a: &str, b: &str, ta: NaiveTime, tb: NaiveTime, problems: &mut Vec<Problem>| {
        if ta >= tb && (tab.contains_key(a) || tab.contains_key(b)) {
            let at = if tab.contains_key(b) { b } else { a };
            problems.push(value_at(
                segs(&["behaviour", at]),
                format!(
                    "`{b}` in [behaviour] must come after `{a}`: {} is not after {}",
                    tb.format("%H:%M"),
                    ta.format("%H:%M")
                ),
            ));
        }
    };
    order("lunch_start", "lunch_end", model.lunch_start, model.lunch_end, problems);
    order("logon_mean", "logoff_mean", model.logon_mean, model.logoff_mean, problems);
}

fn set_number(model: &mut Model, key: &str, x: f64) {
    match key {
        "logon_spread_minutes" => model.logon_spread_minutes = x as u32,
        "logoff_spread_minutes" => model.logoff_spread_minutes = x as u32,
        "logoff_share" => model.logoff_share = x,
        "lunch_share" => model.lunch_share = x,
        "breaks_per_day" => model.breaks_per_day = x,
        "weekend_activity" => model.weekend_activity = x,
        "absence" => model.absence = x,
        "laptop_sleep" => model.laptop_sleep = x,
        "patch_deadline_days" => model.patch_deadline_days = x as u32,
        "weekly_restart" => model.weekly_restart = x,
        "manual_sync" => model.manual_sync = x,
        "push" => model.push = x,
        "never_back" => model.never_back = x,
        "never_back_days" => model.never_back_days = x as u32,
        _ => {}
    }
}

fn set_time(model: &mut Model, key: &str, t: NaiveTime) {
    match key {
        "logon_mean" => model.logon_mean = t,
        "logoff_mean" => model.logoff_mean = t,
        "lunch_start" => model.lunch_start = t,
        "lunch_end" => model.lunch_end = t,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_files(p: &str) -> Result<(String, String), String> {
        Err(format!("cannot read {p}: No such file or directory (os error 2)"))
    }

    fn refusal(text: &str) -> String {
        Mix::parse(text, "m.toml", &no_files).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn the_builtin_mix_checks_and_every_knob_has_a_setter() {
        let mix = Mix::builtin();
        assert_eq!(mix.templates.len(), 2);
        assert_eq!(mix.model, Model::default());
        assert!(mix.templates[0].form.laptop && !mix.templates[1].form.laptop);
        // Every knob set to a value different from its default changes the model.
        for k in KNOBS {
            let value = match k.kind {
                KnobKind::Share => "0.33".to_string(),
                KnobKind::Whole { min, .. } => (min + 2).to_string(),
                KnobKind::Breaks => "5.5".into(),
                KnobKind::Time if k.name == "lunch_end" => "\"14:00\"".into(),
                KnobKind::Time if k.name == "logoff_mean" => "\"19:00\"".into(),
                KnobKind::Time => "\"06:15\"".into(),
                KnobKind::Bool => "false".into(),
                KnobKind::Weekdays => "[\"sun\", \"mon\", \"tue\", \"wed\", \"thu\"]".into(),
            };
            let text = format!("{BUILTIN_MIX}[behaviour]\n{} = {value}\n", k.name);
            let mix = Mix::parse(&text, "m.toml", &no_files).unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(mix.model, Model::default(), "{} = {value} changes nothing", k.name);
        }
    }

    #[test]
    fn picks_follow_the_weights() {
        let mix = Mix::builtin();
        let laptops = (0..10_000).filter(|i| mix.pick(4, *i).1 == 0).count();
        assert!((5800..6200).contains(&laptops), "{laptops} of 10000 at 60%");
        assert_eq!(mix.pick(4, 17).1, mix.pick(4, 17).1);
    }

    #[test]
    fn refusals_say_where_and_what() {
        let one = "[[template]]\npath = \"win11-laptop\"\nweight = 100\n";
        assert_eq!(
            refusal(&format!("{one}[behaviour]\nlogon_men = \"08:00\"\n")).split(';').next().unwrap(),
            "m.toml:5:1: unknown key `logon_men` in [behaviour] (did you mean `logon_mean`?)"
        );
        assert!(refusal(&format!("{one}[behaviour]\njitter = false\n")).contains("a device setting"));
        assert_eq!(
            refusal(&format!("{one}[behaviour]\nnever_back = 2\n")),
            "m.toml:5:14: `never_back` in [behaviour]: expected a number from 0 to 1, found 2"
        );
        assert_eq!(
            refusal(&format!("{one}[behaviour]\nlunch_start = \"14:00\"\n")),
            "m.toml:5:15: `lunch_end` in [behaviour] must come after `lunch_start`: 13:30 is not after 14:00"
        );
        assert_eq!(
            refusal(&format!("{one}[behaviour]\nworkdays = [\"mon\", \"funday\"]\n")),
            "m.toml:5:12: `workdays` in [behaviour]: expected a list of weekdays such as [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"], found an array"
        );
        assert_eq!(
            refusal(&format!("{one}[identity]\ndomain = \"contoso\"\n")),
            "m.toml:5:10: `domain` in [identity]: expected a DNS domain such as \"contoso.com\", found \"contoso\""
        );
        assert_eq!(refusal(""), "m.toml:1:1: no [[template]]: a mix needs at least one template with its weight");
        assert_eq!(
            refusal("[[template]]\nweight = 100\n"),
            "m.toml:1:1: [[template]] #1: `path` is missing (a template file, or one of win11-laptop, win10-desktop, win81-tablet)"
        );
        assert_eq!(
            refusal("[[template]]\npath = \"win11-laptop\"\n"),
            "m.toml:1:1: [[template]] #1: `weight` is missing (the template's percentage of the fleet)"
        );
    }
}
