//! The nightly maintenance window: a cron expression in the device's local time zone (seed:
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

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The default maintenance window: 02:00:00 every day.
pub const DEFAULT_CRON: &str = "0 0 2 * * *";

/// Why a nightly schedule cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NightlyError {
    #[error("nightly cron expression {expr:?}: {reason}")]
    BadCron { expr: String, reason: String },
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/Paris)")]
    BadTimeZone(String),
}

/// A cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Nightly {
    schedule: cron::Schedule,
    tz: Tz,
}

impl Nightly {
    /// Parses a cron expression (6 or 7 fields, seconds first, as the `cron` crate reads them;
    /// a classic 5-field expression gets second 0) and an IANA time zone name.
    pub fn new(expr: &str, tz: &str) -> Result<Self, NightlyError> {
        let tz = Tz::from_str(tz.trim()).map_err(|_| NightlyError::BadTimeZone(tz.to_string()))?;
        let fields = expr.split_whitespace().count();
        let full = if fields == 5 { format!("0 {}", expr.trim()) } else { expr.trim().to_string() };
        let schedule = cron::Schedule::from_str(&full)
            .map_err(|e| NightlyError::BadCron { expr: expr.to_string(), reason: e.to_string() })?;
        Ok(Nightly { schedule, tz })
    }

    /// The default window (02:00 local) in `tz`.
    pub fn default_in(tz: Tz) -> Self {
        Nightly { schedule: cron::Schedule::from_str(DEFAULT_CRON).expect("the default cron parses"), tz }
    }

    /// The device's time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first firing instant strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz).naive_local();
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
        match self.tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(d) => Some(d.with_timezone(&Utc)),
            chrono::LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            chrono::LocalResult::None => {
                // In a gap: use the offset in force a day before (before the change).
                let before = self.tz.from_local_datetime(&(naive - Duration::days(1))).earliest()?;
                let offset = before.offset().fix();
                Some(Utc.from_utc_datetime(&(naive - Duration::seconds(offset.local_minus_utc() as i64))))
            }
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
