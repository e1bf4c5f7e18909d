//! The `--events` timeline file and the time arguments of `mdmsim run` (`--start`, `--until`).
//!
//! Owns the exact TOML form scenarios and users' scripts rely on:
//!
//! ```toml
//! [[event]]
//! at = "+10m"          # offset from --start (s, m, h, d, w units; "1h30m" too), or an RFC 3339 time
//! kind = "logon"       # reboot | logon | logoff | lock | unlock | push | nightly | sync | network-off | network-on
//! user = "enrolled"    # logon: "enrolled" (the enrolled user) or any other user name
//! ```
//!
//! Added fields (optional): `user` on `logoff` and `unlock` (default: the user at the console);
//! `interactive = true` on `sync` (MDMAgent started from a command prompt, the operation modes post's "Manual
//! operation"). Unknown fields are refused, so a typo does not silently change a scenario.
//!
//! Parsing is pure: the caller reads the file and passes its text and name; errors carry
//! `FILE:LINE:COLUMN:` and what was expected and found. Does not own what events do (see
//! [`super::Scheduler::on_event`]).

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::mode::ENROLLED;

/// When something happens: an offset from the start of the run, or an absolute instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum At {
    Offset(Duration),
    Time(DateTime<Utc>),
}

impl At {
    /// Parses `+10m`, `10m`, `1h30m`, `7d` (offsets) or an RFC 3339 time
    /// (`2026-03-01T02:00:00Z`, `2026-03-01T02:00:00-05:00`).
    pub fn parse(text: &str) -> Result<At, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("expected an offset such as \"+10m\" or an RFC 3339 time, found an empty string".into());
        }
        if s.len() >= 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
            return DateTime::parse_from_rfc3339(s).map(|d| At::Time(d.with_timezone(&Utc))).map_err(|e| {
                format!("expected an RFC 3339 time with an offset (2026-03-01T02:00:00Z), found {s:?}: {e}")
            });
        }
        parse_duration(s).map(At::Offset)
    }

    /// The instant, counting offsets from `start` (saturating at the end of the calendar).
    pub fn resolve(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            At::Offset(d) => start.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC),
            At::Time(t) => t,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Offset(d) => write!(f, "+{}s", d.num_seconds()),
            At::Time(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

/// Parses `--start TIME`: an RFC 3339 time with an offset.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time with an offset (2026-03-01T02:00:00Z), found {text:?}: {e}"))
}

/// The longest duration accepted (a century): beyond it instants leave the calendar.
pub const MAX_DURATION_DAYS: i64 = 36_525;

/// Parses a duration: one or more `<number><unit>` groups, units `s`, `m`, `h`, `d`, `w`, with
/// an optional leading `+` (`90m`, `36h`, `7d`, `+1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let body = s.strip_prefix('+').unwrap_or(s);
    let expected = || format!("expected a duration such as \"90m\", \"36h\", \"7d\" or \"+1h30m\", found {s:?}");
    if body.is_empty() {
        return Err(expected());
    }
    let mut total = Duration::zero();
    let mut digits = String::new();
    for c in body.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1i64,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(expected()),
        };
        let n: i64 = digits.parse().map_err(|_| expected())?;
        digits.clear();
        let too_long = || format!("duration {s:?} is longer than {MAX_DURATION_DAYS} days");
        let part = n.checked_mul(unit).and_then(Duration::try_seconds).ok_or_else(too_long)?;
        total = total.checked_add(&part).filter(|d| *d <= Duration::days(MAX_DURATION_DAYS)).ok_or_else(too_long)?;
    }
    if !digits.is_empty() {
        return Err(format!("{}: the number {digits} has no unit", expected()));
    }
    Ok(total)
}

/// Something that happens to a device (from the timeline, the command line or the fake WNS
/// service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// The machine reboots: everyone is logged off, MDMAgent runs in Machine mode.
    Reboot,
    /// `user` logs on ([`ENROLLED`] for the enrolled user).
    Logon { user: String },
    /// `user` (default: the user at the console) logs off.
    Logoff { user: Option<String> },
    /// The console session is locked.
    Lock,
    /// The console session (or `user`'s) is unlocked.
    Unlock { user: Option<String> },
    /// A WNS push notification arrives.
    Push,
    /// The maintenance task fires now (in addition to its cron schedule).
    Nightly,
    /// A manual sync; `interactive` when MDMAgent is started from a command prompt.
    Sync { interactive: bool },
    /// The network goes away: sessions due meanwhile are missed.
    NetworkOff,
    /// The network is back.
    NetworkOn,
    /// The push notification service revokes the device's channels: notifications to them are
    /// answered 410 until the server configures push again (Microsoft's Windows 8.1 blog post
    /// on MDM operation modes).
    RevokeChannel,
    /// The device's channels expire (as after 30 days without renewal): notifications to them
    /// are answered 410 and the device asks for a new channel.
    ExpireChannel,
    /// A notification the push notification service emulation delivered to the device (not a
    /// timeline kind: it comes from a server's `POST <ChannelURI>`). Unlike the timeline's
    /// `push`, it is lost when the network is off (Push/Status then reads 7).
    Notification,
}

impl Event {
    /// The `kind` name of the event.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Reboot => "reboot",
            Event::Logon { .. } => "logon",
            Event::Logoff { .. } => "logoff",
            Event::Lock => "lock",
            Event::Unlock { .. } => "unlock",
            Event::Push => "push",
            Event::Nightly => "nightly",
            Event::Sync { .. } => "sync",
            Event::NetworkOff => "network-off",
            Event::NetworkOn => "network-on",
            Event::RevokeChannel => "revoke-channel",
            Event::ExpireChannel => "expire-channel",
            Event::Notification => "notification",
        }
    }
}

/// The event kinds, as the file names them.
pub const KINDS: &[&str] = &[
    "reboot",
    "logon",
    "logoff",
    "lock",
    "unlock",
    "push",
    "nightly",
    "sync",
    "network-off",
    "network-on",
    "revoke-channel",
    "expire-channel",
];

/// One line of a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: At,
    pub event: Event,
    /// The line of the `[[event]]` entry's `kind`, for messages.
    pub line: usize,
}

/// A parsed `--events` file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    pub entries: Vec<TimelineEntry>,
}

impl Timeline {
    /// The events with their instants, in time order (file order among equal instants).
    pub fn resolve(&self, start: DateTime<Utc>) -> Vec<(DateTime<Utc>, Event)> {
        let mut out: Vec<(DateTime<Utc>, Event)> =
            self.entries.iter().map(|e| (e.at.resolve(start), e.event.clone())).collect();
        out.sort_by_key(|(t, _)| *t);
        out
    }
}

/// A timeline file that cannot be used: where, and what was expected and found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct TimelineError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    event: Vec<Spanned<RawEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: Spanned<toml::Value>,
    kind: Spanned<String>,
    user: Option<Spanned<String>>,
    interactive: Option<Spanned<bool>>,
}

/// Parses the text of an `--events` file named `file` (the name is only used in messages).
pub fn parse_timeline(text: &str, file: &str) -> Result<Timeline, TimelineError> {
    let err = |offset: usize, message: String| {
        let (line, column) = line_col(text, offset);
        TimelineError { file: file.to_string(), line, column, message }
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        err(offset, e.message().trim().to_string())
    })?;
    let mut entries = Vec::with_capacity(raw.event.len());
    for ev in raw.event {
        let entry_start = ev.span().start;
        let ev = ev.into_inner();
        let at_span = ev.at.span();
        let at = match ev.at.get_ref() {
            toml::Value::String(s) => At::parse(s).map_err(|m| err(at_span.start, format!("`at`: {m}")))?,
            toml::Value::Datetime(d) => {
                At::parse(&d.to_string()).map_err(|m| err(at_span.start, format!("`at`: {m}")))?
            }
            other => {
                return Err(err(
                    at_span.start,
                    format!("`at`: expected a string such as \"+10m\" or an RFC 3339 time, found {}", other.type_str()),
                ));
            }
        };
        let kind_span = ev.kind.span();
        let kind = ev.kind.get_ref().as_str();
        let user = ev.user.as_ref().map(|u| u.get_ref().trim().to_string());
        if let Some(u) = &ev.user
            && u.get_ref().trim().is_empty()
        {
            return Err(err(
                u.span().start,
                "`user`: expected a user name or \"enrolled\", found an empty string".into(),
            ));
        }
        let refuse_field = |name: &str, span: std::ops::Range<usize>| {
            err(span.start, format!("`{name}` is not allowed on a `{kind}` event"))
        };
        if !matches!(kind, "logon" | "logoff" | "unlock")
            && let Some(u) = &ev.user
        {
            return Err(refuse_field("user", u.span()));
        }
        if kind != "sync"
            && let Some(i) = &ev.interactive
        {
            return Err(refuse_field("interactive", i.span()));
        }
        let event = match kind {
            "reboot" => Event::Reboot,
            "logon" => Event::Logon {
                user: user.ok_or_else(|| {
                    err(entry_start, format!("a `logon` event needs `user` (\"{ENROLLED}\" or a user name)"))
                })?,
            },
            "logoff" => Event::Logoff { user },
            "lock" => Event::Lock,
            "unlock" => Event::Unlock { user },
            "push" => Event::Push,
            "nightly" => Event::Nightly,
            "sync" => Event::Sync { interactive: ev.interactive.is_some_and(|i| *i.get_ref()) },
            "network-off" => Event::NetworkOff,
            "network-on" => Event::NetworkOn,
            "revoke-channel" => Event::RevokeChannel,
            "expire-channel" => Event::ExpireChannel,
            other => {
                return Err(err(
                    kind_span.start,
                    format!("`kind`: expected one of {}, found {other:?}", KINDS.join(" | ")),
                ));
            }
        };
        entries.push(TimelineEntry { at, event, line: line_col(text, kind_span.start).0 });
    }
    Ok(Timeline { entries })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::days(7)));
        assert_eq!(parse_duration("36h"), Ok(Duration::hours(36)));
        assert_eq!(parse_duration("90m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_duration("+1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_duration("2w"), Ok(Duration::days(14)));
        for bad in ["", "+", "10", "10x", "m", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("99999999999999999w").unwrap_err().contains("longer than"));
        assert!(parse_duration("9999999999999999s").unwrap_err().contains("longer than"));
        assert!(parse_duration("36526d").is_err());
        assert_eq!(parse_duration("100w").map(|d| d.num_days()), Ok(700));
    }

    #[test]
    fn at_offsets_and_times() {
        let start = t("2026-03-01T00:00:00Z");
        assert_eq!(At::parse("+10m").unwrap().resolve(start), t("2026-03-01T00:10:00Z"));
        assert_eq!(At::parse("2026-03-02T02:00:00-05:00").unwrap().resolve(start), t("2026-03-02T07:00:00Z"));
        assert!(At::parse("2026-03-02 two o'clock").unwrap_err().contains("RFC 3339"));
        assert_eq!(parse_time("2026-03-02T02:00:00+01:00"), Ok(t("2026-03-02T01:00:00Z")));
        assert!(parse_time("+10m").is_err());
        // Multi-byte text never panics the parser.
        assert!(At::parse("2026é-03").is_err());
        assert!(At::parse("ééééééééééé").is_err());
    }

    #[test]
    fn a_timeline_parses_in_time_order() {
        let text = r#"
[[event]]
at = "+1h"
kind = "logon"
user = "enrolled"

[[event]]
at = "+10m"
kind = "reboot"

[[event]]
at = 2026-03-01T05:00:00Z
kind = "sync"
interactive = true
"#;
        let tl = parse_timeline(text, "week.toml").unwrap();
        assert_eq!(tl.entries.len(), 3);
        assert_eq!(tl.entries[0].line, 4);
        let r = tl.resolve(t("2026-03-01T00:00:00Z"));
        assert_eq!(r[0], (t("2026-03-01T00:10:00Z"), Event::Reboot));
        assert_eq!(r[1], (t("2026-03-01T01:00:00Z"), Event::Logon { user: ENROLLED.into() }));
        assert_eq!(r[2], (t("2026-03-01T05:00:00Z"), Event::Sync { interactive: true }));
    }

    #[test]
    fn errors_name_file_line_column_and_what_was_found() {
        let e = parse_timeline("[[event]]\nat = \"+10m\"\nkind = \"dance\"\n", "ev.toml").unwrap_err();
        assert_eq!((e.line, e.column), (3, 8));
        let s = e.to_string();
        assert!(s.starts_with("ev.toml:3:8: `kind`: expected one of reboot"), "{s}");
        assert!(s.contains("\"dance\""), "{s}");

        let e = parse_timeline("[[event]]\nat = \"soon\"\nkind = \"push\"\n", "ev.toml").unwrap_err();
        assert_eq!((e.line, e.column), (2, 6), "{e}");

        let e = parse_timeline("[[event]]\nat = \"+1m\"\nkind = \"logon\"\n", "ev.toml").unwrap_err();
        assert!(e.to_string().contains("needs `user`"), "{e}");

        let e = parse_timeline("[[event]]\nat = \"+1m\"\nkind = \"push\"\nuser = \"bob\"\n", "ev.toml").unwrap_err();
        assert_eq!(e.line, 4, "{e}");

        // A typo in a field name is refused, with its place.
        let e = parse_timeline("[[event]]\nat = \"+1m\"\nkind = \"push\"\nusr = \"bob\"\n", "ev.toml").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.to_string().contains("usr"), "{e}");

        // Broken TOML.
        let e = parse_timeline("[[event]\n", "ev.toml").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
    }
}
