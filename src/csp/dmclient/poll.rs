//! DMClient poll schedules as pure data: the six `Provider/<ID>/Poll` values, the DMClient CSP page's rules
//! about them, and the timetable of poll instants they give (the DMClient CSP page, "Poll").
//!
//! Owns the meaning of the values: which set is disabled, which is infinite, what the device
//! corrects, when a configuration is refused, and the instants. Does not own the tree (the CSP
//! in `dmclient.rs` reads and writes the values and calls these rules) nor the clock: the
//! scheduler asks [`PollTimetable::next_after`] with its own `now` and arms its own timer.
//!
//! The rules, each from the DMClient CSP page:
//! - An interval of 0 disables its set ("If the value is set to 0, this schedule is disabled").
//! - A number of 0 with a non-zero interval makes the set infinite; a set after an infinite set
//!   is disabled ("second set and this set of schedule will not set in this case"), and the
//!   device corrects the configuration: the "two infinite schedules" table reads the third
//!   interval back as 0 ([`PollConfig::corrected`], applied by the CSP on every read).
//! - All six values 0 is a configuration failure ([`PollConfig::is_all_zero`]); the stricter
//!   reading "or set all 3 number of retry nodes to 0" is [`PollConfig::all_numbers_zero`],
//!   applied only when the device template asks for it, because Fleet provisions
//!   IntervalForFirstSetOfRetries 1 with every Number 0 (poll each minute, forever), which the
//!   same page defines as an infinite first set.
//! - No infinite set: "a 24-hour schedule is created and scheduled to launch in the maintenance
//!   window". mdmsim models it as part of the timetable, not as stored values (the DMClient CSP page's
//!   "initial enrollment only" table reads the zeros back): once the finite sets are over, the
//!   device polls once a day at the start of its maintenance window ([`MaintenanceWindow`]).

use chrono::{DateTime, Days, NaiveTime, TimeDelta, Utc};

/// The six poll nodes in the DMClient CSP page's order, with their defaults (the DMClient CSP page: IntervalForFirstSetOfRetries
/// 15, NumberOfFirstRetries 10, the others 0).
pub const POLL_VALUES: [(&str, u32); 6] = [
    ("IntervalForFirstSetOfRetries", 15),
    ("NumberOfFirstRetries", 10),
    ("IntervalForSecondSetOfRetries", 0),
    ("NumberOfSecondRetries", 0),
    ("IntervalForRemainingScheduledRetries", 0),
    ("NumberOfRemainingScheduledRetries", 0),
];

/// One of the three retry sets: poll every `interval_minutes`, `count` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetrySet {
    /// Minutes between two polls of the set; 0 disables the set.
    pub interval_minutes: u32,
    /// Number of polls; 0 (with a non-zero interval) repeats forever.
    pub count: u32,
}

impl RetrySet {
    /// A set that polls `count` times every `interval_minutes`.
    pub const fn new(interval_minutes: u32, count: u32) -> Self {
        RetrySet { interval_minutes, count }
    }

    /// True when the interval is 0: the set never polls.
    pub fn is_disabled(&self) -> bool {
        self.interval_minutes == 0
    }

    /// True when the set repeats forever (number 0, interval not 0).
    pub fn is_infinite(&self) -> bool {
        self.interval_minutes != 0 && self.count == 0
    }
}

/// A provider's poll configuration as stored in the tree (defaults applied), plus the two login
/// flags the scheduler honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollConfig {
    /// IntervalForFirstSetOfRetries / NumberOfFirstRetries.
    pub first: RetrySet,
    /// IntervalForSecondSetOfRetries / NumberOfSecondRetries.
    pub second: RetrySet,
    /// IntervalForRemainingScheduledRetries / NumberOfRemainingScheduledRetries.
    pub remaining: RetrySet,
    /// `Poll/PollOnLogin`: a session at every user login.
    pub poll_on_login: bool,
    /// `Poll/AllUsersPollOnFirstLogin`: a session at the first login of each user.
    pub all_users_poll_on_first_login: bool,
}

impl Default for PollConfig {
    /// The DMClient CSP page's defaults: 10 polls every 15 minutes, nothing else, no login polls.
    fn default() -> Self {
        PollConfig::from_values([15, 10, 0, 0, 0, 0])
    }
}

impl PollConfig {
    /// A configuration from the six values in [`POLL_VALUES`] order; login flags false.
    pub const fn from_values(v: [u32; 6]) -> Self {
        PollConfig {
            first: RetrySet::new(v[0], v[1]),
            second: RetrySet::new(v[2], v[3]),
            remaining: RetrySet::new(v[4], v[5]),
            poll_on_login: false,
            all_users_poll_on_first_login: false,
        }
    }

    /// The six values in [`POLL_VALUES`] order.
    pub fn values(&self) -> [u32; 6] {
        [
            self.first.interval_minutes,
            self.first.count,
            self.second.interval_minutes,
            self.second.count,
            self.remaining.interval_minutes,
            self.remaining.count,
        ]
    }

    /// The three sets in order.
    pub fn sets(&self) -> [RetrySet; 3] {
        [self.first, self.second, self.remaining]
    }

    /// The configuration the device uses and reports: every set after an infinite set is disabled by
    /// setting its interval to 0 (the DMClient CSP page, "Invalid poll schedule: two infinite schedules"). Numbers
    /// are kept as the server set them.
    pub fn corrected(&self) -> PollConfig {
        let mut out = *self;
        let mut infinite_seen = false;
        for set in [&mut out.first, &mut out.second, &mut out.remaining] {
            if infinite_seen {
                set.interval_minutes = 0;
            } else if set.is_infinite() {
                infinite_seen = true;
            }
        }
        out
    }

    /// Index (0, 1, 2) of the infinite set once corrected, if any.
    pub fn infinite_set(&self) -> Option<usize> {
        self.corrected().sets().iter().position(RetrySet::is_infinite)
    }

    /// True when all six values are 0: the configuration the DMClient CSP page calls a configuration failure.
    pub fn is_all_zero(&self) -> bool {
        self.values().iter().all(|v| *v == 0)
    }

    /// True when the three numbers are 0: refused only under `strict_poll_schedule` (the DMClient CSP page's
    /// "or set all 3 number of retry nodes to 0").
    pub fn all_numbers_zero(&self) -> bool {
        self.first.count == 0 && self.second.count == 0 && self.remaining.count == 0
    }
}

/// When the daily fallback poll runs: the start of the device's maintenance window, as a UTC time
/// of day (the device template gives local `maintenance_time`, default 02:00, and
/// `utc_offset_minutes`; see [`MaintenanceWindow::from_settings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaintenanceWindow {
    /// Start of the window in UTC.
    pub start_utc: NaiveTime,
}

impl Default for MaintenanceWindow {
    /// 02:00 UTC (nightly maintenance at 02:00 local on a device at UTC).
    fn default() -> Self {
        MaintenanceWindow { start_utc: NaiveTime::from_hms_opt(2, 0, 0).unwrap_or(NaiveTime::MIN) }
    }
}

impl MaintenanceWindow {
    /// Reads `maintenance_time` (`HH:MM`, local, default `02:00`) and `utc_offset_minutes`
    /// (default 0) from the device template's behaviour settings. A malformed time falls back
    /// to the default.
    pub fn from_settings(settings: &crate::tree::Settings) -> Self {
        let local = settings
            .str("maintenance_time")
            .and_then(|t| NaiveTime::parse_from_str(t.trim(), "%H:%M").ok())
            .unwrap_or(MaintenanceWindow::default().start_utc);
        let offset = settings.str("utc_offset_minutes").and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(0);
        // local = utc + offset, so utc = local - offset (wrapping around midnight).
        let (start_utc, _) = local.overflowing_sub_signed(TimeDelta::try_minutes(offset).unwrap_or_default());
        MaintenanceWindow { start_utc }
    }

    /// The first window start strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = t.date_naive().and_time(self.start_utc).and_utc();
        if today > t { Some(today) } else { today.checked_add_days(Days::new(1)) }
    }
}

/// The poll instants of one provider after enrollment: the first set, then the second, then the
/// remaining set (each set starts where the previous one ended; disabled sets are skipped), and,
/// when no set is infinite, one poll a day at the start of the maintenance window after the last
/// finite poll. Pure: the caller supplies every instant it asks about.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use mdmsim::csp::dmclient::{PollConfig, PollTimetable};
///
/// let enrolled = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
/// let tt = PollTimetable::new(enrolled, PollConfig::from_values([15, 5, 60, 10, 1440, 0]));
/// let first: Vec<_> = tt.instants().take(6).collect();
/// assert_eq!(first[0], Utc.with_ymd_and_hms(2026, 1, 1, 9, 15, 0).unwrap());
/// assert_eq!(first[5], Utc.with_ymd_and_hms(2026, 1, 1, 11, 15, 0).unwrap()); // second set
/// assert_eq!(tt.next_after(first[0]), Some(first[1]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollTimetable {
    /// When the schedule started: the enrollment (or the moment the schedule was last set, if the
    /// caller restarts it on a change).
    pub enrolled_at: DateTime<Utc>,
    /// The configuration; [`PollConfig::corrected`] is applied by the timetable itself.
    pub config: PollConfig,
    /// Where the daily fallback poll goes when no set is infinite.
    pub maintenance: MaintenanceWindow,
}

impl PollTimetable {
    /// A timetable with the default maintenance window (02:00 UTC).
    pub fn new(enrolled_at: DateTime<Utc>, config: PollConfig) -> Self {
        PollTimetable { enrolled_at, config, maintenance: MaintenanceWindow::default() }
    }

    /// The same timetable with another maintenance window.
    pub fn with_maintenance(mut self, maintenance: MaintenanceWindow) -> Self {
        self.maintenance = maintenance;
        self
    }

    /// The next poll instant strictly after `t` (for any `t`, also before enrollment). `None`
    /// only when the instant would overflow the calendar.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut start = self.enrolled_at;
        for set in self.config.corrected().sets() {
            if set.is_disabled() {
                continue;
            }
            let step = i64::from(set.interval_minutes);
            // Minutes from the set's start to `t`, rounded down (negative when t < start).
            let elapsed = (t - start).num_seconds().div_euclid(60);
            let k = if t < start { 1 } else { elapsed / step + 1 };
            // start + k*step is the first multiple strictly after t: k*step > elapsed and
            // t - start < (elapsed + 1) minutes.
            if set.is_infinite() || k <= i64::from(set.count) {
                return start.checked_add_signed(TimeDelta::try_minutes(k.checked_mul(step)?)?);
            }
            start = start.checked_add_signed(TimeDelta::try_minutes(step.checked_mul(i64::from(set.count))?)?)?;
        }
        // No infinite set: the daily poll in the maintenance window, after the finite sets.
        self.maintenance.next_after(t.max(start))
    }

    /// Every poll instant after enrollment, in order; infinite (lazily) whenever a set is infinite
    /// or the daily fallback applies, so bound it (`take`, `take_while`).
    pub fn instants(&self) -> impl Iterator<Item = DateTime<Utc>> + use<> {
        let tt = *self;
        std::iter::successors(tt.next_after(tt.enrolled_at), move |&t| tt.next_after(t))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap()
    }

    #[test]
    fn a_set_after_an_infinite_set_is_disabled_and_reads_back_zero() {
        // The DMClient CSP page's table "two infinite schedules": third interval 1440 -> 0.
        let c = PollConfig::from_values([15, 5, 1440, 0, 1440, 0]);
        assert_eq!(c.corrected().values(), [15, 5, 1440, 0, 0, 0]);
        assert_eq!(c.infinite_set(), Some(1));
        // An infinite first set disables both later sets.
        assert_eq!(PollConfig::from_values([1, 0, 60, 10, 1440, 0]).corrected().values(), [1, 0, 0, 10, 0, 0]);
        // The recommended table needs no correction.
        let rec = PollConfig::from_values([15, 5, 60, 10, 1440, 0]);
        assert_eq!(rec.corrected(), rec);
    }

    #[test]
    fn the_recommended_schedule_over_thirty_days() {
        let enrolled = at(1, 9, 0);
        let tt = PollTimetable::new(enrolled, PollConfig::from_values([15, 5, 60, 10, 1440, 0]));
        let end = enrolled + TimeDelta::days(30);
        let polls: Vec<_> = tt.instants().take_while(|t| *t < end).collect();
        // 5 polls 15 minutes apart, 10 an hour apart, then one a day: 11:15 after enrollment
        // plus k days for k = 1..=29 stays inside 30 days.
        assert_eq!(polls.len(), 5 + 10 + 29);
        assert_eq!(&polls[..5], &[at(1, 9, 15), at(1, 9, 30), at(1, 9, 45), at(1, 10, 0), at(1, 10, 15)]);
        assert_eq!(polls[5], at(1, 11, 15));
        assert_eq!(polls[14], at(1, 20, 15));
        assert_eq!(polls[15], at(2, 20, 15));
        assert_eq!(*polls.last().unwrap(), at(30, 20, 15));
        for w in polls[15..].windows(2) {
            assert_eq!(w[1] - w[0], TimeDelta::days(1));
        }
        // next_after agrees with the iterator from any instant, including between polls.
        assert_eq!(tt.next_after(at(1, 9, 20)), Some(at(1, 9, 30)));
        assert_eq!(tt.next_after(at(1, 9, 30)), Some(at(1, 9, 45)));
        assert_eq!(tt.next_after(at(1, 8, 0)), Some(at(1, 9, 15)));
        assert_eq!(tt.next_after(at(5, 0, 0)), Some(at(5, 20, 15)));
    }

    #[test]
    fn no_infinite_set_falls_back_to_a_daily_poll_in_the_maintenance_window() {
        // The DMClient CSP page's table "initial enrollment only": 5 x 15 min, 10 x 60 min, nothing after.
        let enrolled = at(1, 9, 0);
        let tt = PollTimetable::new(enrolled, PollConfig::from_values([15, 5, 60, 10, 0, 0]));
        let polls: Vec<_> = tt.instants().take(17).collect();
        assert_eq!(polls[14], at(1, 20, 15));
        assert_eq!(polls[15], at(2, 2, 0));
        assert_eq!(polls[16], at(3, 2, 0));
        // All zero (stored when `poll_all_zero = "accept"`): only the daily poll.
        let zero = PollTimetable::new(enrolled, PollConfig::from_values([0; 6]));
        assert_eq!(zero.instants().take(2).collect::<Vec<_>>(), [at(2, 2, 0), at(3, 2, 0)]);
    }

    #[test]
    fn fleet_schedule_polls_every_minute_forever() {
        let enrolled = at(1, 9, 0);
        let tt = PollTimetable::new(enrolled, PollConfig::from_values([1, 0, 0, 0, 0, 0]));
        assert_eq!(tt.next_after(at(20, 13, 7)), Some(at(20, 13, 8)));
        assert_eq!(tt.instants().nth(59), Some(at(1, 10, 0)));
    }

    #[test]
    fn maintenance_window_follows_the_local_time_setting() {
        let mut s = crate::tree::Settings::default();
        s.0.insert("maintenance_time".into(), "03:30".into());
        s.0.insert("utc_offset_minutes".into(), "120".into());
        let w = MaintenanceWindow::from_settings(&s);
        assert_eq!(w.start_utc, NaiveTime::from_hms_opt(1, 30, 0).unwrap());
        assert_eq!(w.next_after(at(1, 1, 30)), Some(at(2, 1, 30)));
        assert_eq!(w.next_after(at(1, 1, 29)), Some(at(1, 1, 30)));
    }
}
