//! Stage one of a scenario file: TOML text → [`Spec`], the file as written, every value with
//! its place (`toml::Spanned`), unknown keys refused (`deny_unknown_fields`).
//!
//! Owns the file's shape and the [`ScenarioError`] every later message uses
//! (`FILE:LINE:COLUMN: expected X, found Y`). Does not give meaning to values (durations, modes,
//! globs, event kinds): that is stage two, [`super::build`].

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// A scenario file that cannot be used: where, and what was expected and found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl From<crate::schedule::TimelineError> for ScenarioError {
    fn from(e: crate::schedule::TimelineError) -> Self {
        ScenarioError { file: e.file, line: e.line, column: e.column, message: e.message }
    }
}

/// A parsed scenario file (stage one): the values as written, with their places.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `[scenario]`: name and description.
    pub scenario: Spanned<ScenarioSpec>,
    /// `[[device]]` groups.
    #[serde(default)]
    pub device: Vec<Spanned<DeviceSpec>>,
    /// `[clock]`.
    pub clock: Option<Spanned<ClockSpec>>,
    /// `[[event]]`: the `--events` form of `mdmsim run`, plus an optional `device`.
    #[serde(default)]
    pub event: Vec<Spanned<EventSpec>>,
    /// `[[expect]]`.
    #[serde(default)]
    pub expect: Vec<Spanned<ExpectSpec>>,
}

/// `[scenario]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// One `[[device]]` group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// The name events and expectations use (`device = "laptops"`); default `device<N>`.
    pub name: Option<Spanned<String>>,
    /// A built-in template name (`win11-laptop`, `win10-desktop`, `win81-tablet`) or a path
    /// relative to the scenario file.
    pub template: Spanned<String>,
    /// `win10` or `win81`; default: the template's.
    pub profile: Option<Spanned<String>>,
    /// How many devices (default 1).
    pub count: Option<Spanned<i64>>,
    /// Hex digits the DeviceIDs start with; the rest is the device number.
    pub id_prefix: Option<Spanned<String>>,
    /// The DMClient provider ID (default `MS DM Server`).
    pub provider_id: Option<Spanned<String>>,
    /// `[device.nodes]`: LocURI = value, written into the tree before the run through the
    /// CSPs (Replace, or Add when the node does not exist yet), as a provisioning package
    /// would; checked in stage two.
    #[serde(default)]
    pub nodes: Option<Spanned<toml::Table>>,
    /// `[device.behaviour]`: overrides of the template's `[behaviour]` settings.
    #[serde(default)]
    pub behaviour: Option<Spanned<toml::Table>>,
}

/// `[clock]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSpec {
    /// RFC 3339 start instant (TOML datetime or string).
    pub start: Option<Spanned<toml::Value>>,
    /// `virtual` (default), `scaled` or `real`.
    pub kind: Option<Spanned<String>>,
    /// The end: a duration from start (`36h`) or an RFC 3339 time.
    pub until: Option<Spanned<toml::Value>>,
    /// Speed of a `scaled` clock.
    pub speed: Option<Spanned<f64>>,
}

/// One `[[event]]` (checked by `schedule::parse_timeline`, so the form is exactly `--events`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub at: Spanned<toml::Value>,
    pub kind: Spanned<String>,
    pub user: Option<Spanned<String>>,
    pub interactive: Option<Spanned<bool>>,
    /// The device group name or DeviceID the event happens to (default: all devices).
    pub device: Option<Spanned<String>>,
}

/// One `[[expect]]`: a flat table whose `kind` says which other keys apply (stage two refuses
/// the ones that do not).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// `session`, `command`, `set`, `profile`, `install`, `statuses`, `latency`, `node`,
    /// `findings` or `outcome`.
    pub kind: Spanned<String>,
    /// Short human title (default: made from the fields).
    pub name: Option<Spanned<String>>,
    /// Device group name or DeviceID (default: every device).
    pub device: Option<Spanned<String>>,
    // session
    pub at: Option<Spanned<toml::Value>>,
    pub tolerance: Option<Spanned<String>>,
    pub trigger: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub count: Option<Spanned<i64>>,
    /// The session alert: 1201 client-initiated, 1200 server-initiated (win10 push).
    pub alert: Option<Spanned<i64>>,
    // session, command: a window
    pub from: Option<Spanned<toml::Value>>,
    pub to: Option<Spanned<toml::Value>>,
    // command
    pub command: Option<Spanned<String>>,
    pub target: Option<Spanned<String>>,
    pub sent: Option<Spanned<bool>>,
    pub status: Option<Spanned<i64>>,
    // node
    pub node: Option<Spanned<String>>,
    pub equals: Option<Spanned<String>>,
    pub reached: Option<Spanned<String>>,
    pub exists: Option<Spanned<bool>>,
    // findings
    pub rules: Option<Spanned<Vec<String>>>,
    // outcome
    pub clean: Option<Spanned<bool>>,
    pub error: Option<Spanned<String>>,
    // command
    /// The modes the command may come in (`sent` means: at least once, and never in another).
    pub only_in: Option<Spanned<Vec<String>>>,
    // set, install
    /// `set`: a number of sessions; `install`: a duration.
    pub within: Option<Spanned<toml::Value>>,
    /// `set`: the lowest integer value allowed.
    pub min: Option<Spanned<i64>>,
    /// `set`: the highest integer value allowed.
    pub max: Option<Spanned<i64>>,
    // install
    /// `EnterpriseAppManagement` (Store/LOB apps) or `EnterpriseDesktopAppManagement` (MSI).
    pub csp: Option<Spanned<String>>,
    // statuses
    /// Status classes the device must not have answered (`4xx`, `5xx`).
    pub class: Option<Spanned<Vec<String>>>,
    /// Codes of those classes that are fine (`418` for an Add of a node that exists).
    pub except: Option<Spanned<Vec<i64>>>,
    // latency
    /// Which percentile of the server's reply times (50, 95, 99...).
    pub percentile: Option<Spanned<toml::Value>>,
    /// The bound it must stay under (`500ms`, `2s`).
    pub under: Option<Spanned<String>>,
}

/// Where things are in one file's text: byte offsets → 1-based line and column.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    /// An error at the start of `span`.
    pub fn err(&self, span: Range<usize>, message: impl fmt::Display) -> ScenarioError {
        let (line, column) = self.line_col(span.start);
        ScenarioError { file: self.file.to_string(), line, column, message: message.to_string() }
    }
}

/// Stage one: parses the text of the scenario file named `file` (the name is used in messages).
pub fn parse(text: &str, file: &str) -> Result<Spec, ScenarioError> {
    let src = Source { file, text };
    toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        src.err(span, e.message().trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_wrong_types_have_places() {
        let e = parse("[scenario]\nname = \"x\"\ncolour = 1\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.message.contains("colour"), "{e}");
        let e = parse("[scenario]\nname = 5\n", "s.toml").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("string"), "{e}");
        let e = parse("[scenario\nname = 5\n", "s.toml").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
    }
}
