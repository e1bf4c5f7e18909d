//! The nightly maintenance window: a cron expression in the device's local time zone (the Windows 8.1 MDM operation modes post:
//! "during the normal scheduled Maintenance hour (typically 2am local time)").
//!
//! Owns the next firing instant after a given instant, across daylight-saving changes. Does not
//! own what the nightly task does (the mode rule lives in [`super::mode::decide`]).
//!
//! The cron expression is evaluated on the device's *local wall time* and then placed in the
//! time zone, the way Windows Task Scheduler treats a daily trigger:
//! - a local time that does not exist (spring forward: 02:00 in America/New_York on the second
//!   Sunday of March) fires at the same instant the wall clock would have shown with the offset
//!   before the change (03:00 local, the first instant after the gap), instead of skipping the
//!   night as the `cron` crate alone does;
//! - a local time that happens twice (fall back) fires once, at the first occurrence.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::tree::Settings;

/// The default maintenance window: 02:00:00 every day.
pub const DEFAULT_CRON: &str = "0 0 2 * * *";

/// Why a nightly schedule cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NightlyError {
    #[error("nightly cron expression {expr:?}: {reason}")]
    BadCron { expr: String, reason: String },
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/Paris)")]
    BadTimeZone(String),
    #[error("setting {key} = {value:?}: expected {expected}")]
    BadSetting { key: &'static str, value: String, expected: &'static str },
}

/// A device's time zone: an IANA zone (with its daylight-saving rules) or a fixed offset (the
/// `utc_offset_minutes` device setting other modules read too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Named(Tz),
    Fixed(FixedOffset),
}

impl Zone {
    /// An IANA zone by name.
    pub fn named(name: &str) -> Result<Zone, NightlyError> {
        Tz::from_str(name.trim()).map(Zone::Named).map_err(|_| NightlyError::BadTimeZone(name.to_string()))
    }

    /// The device's zone from its template settings: `timezone` (IANA name) if set, else
    /// `utc_offset_minutes` (a fixed offset), else UTC.
    pub fn from_settings(settings: &Settings) -> Result<Zone, NightlyError> {
        if let Some(name) = settings.str("timezone") {
            return Zone::named(name);
        }
        match settings.str("utc_offset_minutes") {
            None => Ok(Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset"))),
            Some(v) => v
                .trim()
                .parse::<i32>()
                .ok()
                .and_then(|m| m.checked_mul(60))
                .and_then(FixedOffset::east_opt)
                .map(Zone::Fixed)
                .ok_or_else(|| NightlyError::BadSetting {
                    key: "utc_offset_minutes",
                    value: v.to_string(),
                    expected: "minutes east of UTC between -1439 and 1439",
                }),
        }
    }
}

/// The device-template settings the nightly window reads: `nightly_cron` (a cron expression)
/// or else `maintenance_time` (`HH:MM` local, shared with the DMClient's daily fallback poll),
/// else [`DEFAULT_CRON`]; in the [`Zone::from_settings`] zone.
pub fn nightly_from_settings(settings: &Settings) -> Result<Nightly, NightlyError> {
    let zone = Zone::from_settings(settings)?;
    if let Some(expr) = settings.str("nightly_cron") {
        return Nightly::with_zone(expr, zone);
    }
    if let Some(hm) = settings.str("maintenance_time") {
        let t = chrono::NaiveTime::parse_from_str(hm.trim(), "%H:%M").map_err(|_| NightlyError::BadSetting {
            key: "maintenance_time",
            value: hm.to_string(),
            expected: "a local time as HH:MM",
        })?;
        use chrono::Timelike;
        return Nightly::with_zone(&format!("0 {} {} * * *", t.minute(), t.hour()), zone);
    }
    Nightly::with_zone(DEFAULT_CRON, zone)
}

/// A cron schedule in a time zone. Cloning is cheap: the parsed schedule (a few kilobytes of
/// ordinal sets) is shared, so the devices of a fleet built from one template share one.
#[derive(Debug, Clone)]
pub struct Nightly {
    schedule: Arc<cron::Schedule>,
    zone: Zone,
}

/// The most distinct cron expressions kept parsed for sharing.
const SHARED_SCHEDULES: usize = 256;

/// A parsed cron expression, shared by every device with the same expression: a parsed
/// schedule holds a set per field (a few KiB), and a fleet of a million devices has a handful
/// of distinct expressions.
fn parsed(expr: &str) -> Result<Arc<cron::Schedule>, cron::error::Error> {
    static SHARED: std::sync::Mutex<Vec<Arc<cron::Schedule>>> = std::sync::Mutex::new(Vec::new());
    let mut shared = SHARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s) = shared.iter().find(|s| s.source() == expr) {
        return Ok(Arc::clone(s));
    }
    let s = Arc::new(cron::Schedule::from_str(expr)?);
    if shared.len() < SHARED_SCHEDULES {
        shared.push(Arc::clone(&s));
    }
    Ok(s)
}

impl Nightly {
    /// Parses a cron expression (6 or 7 fields, seconds first, as the `cron` crate reads them;
    /// a classic 5-field expression gets second 0) and an IANA time zone name.
    pub fn new(expr: &str, tz: &str) -> Result<Self, NightlyError> {
        Self::with_zone(expr, Zone::named(tz)?)
    }

    /// Parses a cron expression for a [`Zone`].
    pub fn with_zone(expr: &str, zone: Zone) -> Result<Self, NightlyError> {
        let fields = expr.split_whitespace().count();
        let full = if fields == 5 { format!("0 {}", expr.trim()) } else { expr.trim().to_string() };
        let schedule =
            parsed(&full).map_err(|e| NightlyError::BadCron { expr: expr.to_string(), reason: e.to_string() })?;
        Ok(Nightly { schedule, zone })
    }

    /// The default window (02:00 local) in `zone`.
    pub fn default_in(zone: Zone) -> Self {
        Nightly { schedule: parsed(DEFAULT_CRON).expect("the default cron parses"), zone }
    }

    /// The device's time zone.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The cron expression.
    pub fn expr(&self) -> &str {
        self.schedule.source()
    }

    /// The first firing instant strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = match self.zone {
            Zone::Named(tz) => t.with_timezone(&tz).naive_local(),
            Zone::Fixed(off) => t.with_timezone(&off).naive_local(),
        };
        // Evaluate the expression on naive local time (as if it were UTC), then place each
        // candidate in the zone; skip candidates that map to `t` or earlier (the second pass of
        // a repeated hour). Bounded: a handful of candidates at most in practice.
        for naive in self.schedule.after(&Utc.from_utc_datetime(&local)).take(64) {
            let naive = naive.naive_utc();
            if let Some(at) = self.place(naive)
                && at > t
            {
                return Some(at);
            }
        }
        None
    }

    fn place(&self, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.zone {
            Zone::Named(tz) => place_in(&tz, naive),
            Zone::Fixed(off) => place_in(&off, naive),
        }
    }
}

/// A local wall time as an instant in zone `z` (gap and repeated-hour rules in the module docs).
fn place_in<Z: TimeZone>(z: &Z, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    match z.from_local_datetime(&naive) {
        chrono::LocalResult::Single(d) => Some(d.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        chrono::LocalResult::None => {
            // In a gap: use the offset in force a day before (before the change).
            let before = z.from_local_datetime(&(naive - Duration::days(1))).earliest()?;
            let offset = before.offset().fix();
            Some(Utc.from_utc_datetime(&(naive - Duration::seconds(i64::from(offset.local_minus_utc())))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn default_is_two_am_local() {
        let n = Nightly::new(DEFAULT_CRON, "Europe/Paris").unwrap();
        // 01:00Z on 10 Jan is 02:00 in Paris (UTC+1).
        assert_eq!(n.next_after(t("2026-01-10T00:00:00Z")), Some(t("2026-01-10T01:00:00Z")));
        assert_eq!(n.next_after(t("2026-01-10T01:00:00Z")), Some(t("2026-01-11T01:00:00Z")));
        // Summer: UTC+2.
        assert_eq!(n.next_after(t("2026-07-10T12:00:00Z")), Some(t("2026-07-11T00:00:00Z")));
    }

    #[test]
    fn settings_pick_zone_and_window() {
        let s = |pairs: &[(&str, &str)]| Settings(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        // Fixed offset +05:30, maintenance at 03:15 local = 21:45Z the day before.
        let n = nightly_from_settings(&s(&[("utc_offset_minutes", "330"), ("maintenance_time", "03:15")])).unwrap();
        assert_eq!(n.next_after(t("2026-01-10T00:00:00Z")), Some(t("2026-01-10T21:45:00Z")));
        // A named zone wins over the offset; nightly_cron wins over maintenance_time.
        let n = nightly_from_settings(&s(&[
            ("timezone", "Asia/Tokyo"),
            ("utc_offset_minutes", "60"),
            ("maintenance_time", "03:15"),
            ("nightly_cron", "0 0 4 * * *"),
        ]))
        .unwrap();
        assert_eq!(n.next_after(t("2026-01-10T00:00:00Z")), Some(t("2026-01-10T19:00:00Z")));
        assert_eq!(nightly_from_settings(&s(&[])).unwrap().expr(), DEFAULT_CRON);
        let e = nightly_from_settings(&s(&[("maintenance_time", "2am")])).unwrap_err();
        assert_eq!(e.to_string(), "setting maintenance_time = \"2am\": expected a local time as HH:MM");
        assert!(nightly_from_settings(&s(&[("utc_offset_minutes", "99999")])).is_err());
    }

    #[test]
    fn five_field_expressions_are_accepted() {
        let n = Nightly::new("30 3 * * *", "UTC").unwrap();
        assert_eq!(n.next_after(t("2026-01-10T00:00:00Z")), Some(t("2026-01-10T03:30:00Z")));
    }

    #[test]
    fn errors_name_the_bad_input() {
        assert!(matches!(Nightly::new("0 0 2 * *", "Mars/Olympus"), Err(NightlyError::BadTimeZone(_))));
        let e = Nightly::new("every night", "UTC").unwrap_err();
        assert!(e.to_string().contains("every night"), "{e}");
    }

    #[test]
    fn spring_forward_gap_fires_after_the_gap() {
        // America/New_York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let n = Nightly::new(DEFAULT_CRON, "America/New_York").unwrap();
        let d = n.next_after(t("2026-03-07T12:00:00Z")).unwrap();
        assert_eq!(d, t("2026-03-08T07:00:00Z")); // 03:00 EDT
    }

    #[test]
    fn fall_back_repeated_hour_fires_once() {
        // America/New_York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let n = Nightly::new("0 30 1 * * *", "America/New_York").unwrap();
        let first = n.next_after(t("2026-10-31T12:00:00Z")).unwrap();
        assert_eq!(first, t("2026-11-01T05:30:00Z")); // 01:30 EDT
        let next = n.next_after(first).unwrap();
        assert_eq!(next, t("2026-11-02T06:30:00Z")); // 01:30 EST the next day
    }
}
