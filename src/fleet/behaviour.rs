//! How the people behind a fleet use their devices: a workday model in each device's own time
//! zone, as the timeline events the device scheduler takes ([`Event`]: logon, lock, unlock,
//! logoff, reboot, network off and on, manual sync, push).
//!
//! Every event is a plain function of the fleet seed, the device's identity and the local day,
//! so the runner asks for one UTC day at a time ([`day`]) at each simulated day boundary and
//! holds nothing else: the same seed gives the same events in every process and shard, and
//! every event belongs to exactly one UTC day (by its instant), so feeding consecutive days
//! gives no duplicate and no gap.
//!
//! # The model ([`Model`], every knob with its default)
//!
//! - **Workdays** (`workdays`, Monday to Friday): the user logs on in the morning around
//!   `logon_mean` (08:30 local) with a normal spread of `logon_spread_minutes` (40): each device
//!   keeps its own habit (80% of the spread) and varies day to day around it (60%). The day
//!   ends around `logoff_mean` (17:30, spread `logoff_spread_minutes` 60, at least 4 hours
//!   after logon): a logoff on `logoff_share` (60%) of evenings, else the session is left
//!   locked (the next morning's logon switches back to it, as Windows treats a logon of a user
//!   who has a session).
//! - **Locks**: a lunch lock of 30 to 60 minutes between `lunch_start` and `lunch_end`
//!   (12:00–13:30) on `lunch_share` (80%) of days, and short breaks (5 to 15 minutes),
//!   `breaks_per_day` (2) on average.
//! - **Days off**: `absence` (4%) of workdays nobody comes (leave, sickness); on other days a
//!   device is used with probability `weekend_activity` (5%), for 20 minutes to 3 hours
//!   between 09:00 and 20:00.
//! - **Laptops sleep**: on `laptop_sleep` (85%) of evenings a laptop goes offline (NetworkOff)
//!   a few minutes after the day ends, and comes back (NetworkOn) when it wakes the next time
//!   it is used; desktops stay on and online.
//! - **Restarts**: with `patch_tuesday` (on), every device restarts for the monthly security
//!   update. Microsoft releases it on the second Tuesday of the month ("Update Tuesday", 10:00
//!   Pacific time); a desktop restarts at about 03:00 local on the first night after the release
//!   or a few nights later (half the devices the first night, a quarter the second..., all within
//!   `patch_deadline_days`, 7), a laptop at the first wake on or after that day. A share of
//!   devices, `weekly_restart` (25%), is also restarted every week on its own workday morning.
//! - **Syncs and pushes**: the user presses Sync (Settings > Accounts > Access work or school)
//!   on `manual_sync` (10%) of workdays; a push arrives on `push` (20%) of workdays between
//!   07:00 and 19:00 local (pushes of the MDM server itself come through the push notification
//!   service emulation, not from this model).
//! - **Never back**: `never_back` (2%) of the devices go offline for good (stolen, broken,
//!   returned) at a moment drawn within `never_back_days` (7) of [`Model::start`]; nothing
//!   happens to them afterwards. Without a start (the runner sets it to the start of the run)
//!   no device leaves.
//!
//! Local times that do not exist (the spring-forward gap) move to the end of the gap, those
//! that happen twice (fall back) take the first occurrence.
//!
//! # Cost
//!
//! [`day`] builds the device's local days that meet the UTC day (two, sometimes three; a day
//! without a daylight-saving change places its times by addition) and keeps what falls inside:
//! about 9 events, 2.2 to 2.6 µs per device and day optimised, 8.5 µs in a debug build (the
//! `day_is_cheap` test prints it).

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use super::identity::{Draws, Identity, device_key, hash};
use crate::schedule::{ENROLLED, Event};

/// The knobs of the workday model (see the module docs); [`Model::default`] is the realistic
/// office fleet the docs describe.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The working days, Monday first.
    pub workdays: [bool; 7],
    /// The mean local time of the morning logon.
    pub logon_mean: NaiveTime,
    /// The standard deviation of the logon time, in minutes.
    pub logon_spread_minutes: u32,
    /// The mean local time the working day ends.
    pub logoff_mean: NaiveTime,
    /// The standard deviation of the end of the day, in minutes.
    pub logoff_spread_minutes: u32,
    /// The share of evenings that end with a logoff (the others with a lock).
    pub logoff_share: f64,
    /// The earliest start of the lunch lock.
    pub lunch_start: NaiveTime,
    /// The latest end of the lunch lock.
    pub lunch_end: NaiveTime,
    /// The share of workdays with a lunch lock.
    pub lunch_share: f64,
    /// The mean number of short lock breaks in a working day (0 to 8).
    pub breaks_per_day: f64,
    /// The probability that a device is used on a day off.
    pub weekend_activity: f64,
    /// The probability that nobody comes on a workday.
    pub absence: f64,
    /// The share of evenings a laptop goes to sleep (offline until it is used again).
    pub laptop_sleep: f64,
    /// Restart for the monthly security update released on the second Tuesday of the month.
    pub patch_tuesday: bool,
    /// Every device restarts within this many nights of the update's release (1 to 28).
    pub patch_deadline_days: u32,
    /// The share of devices restarted every week (on a workday morning of their own).
    pub weekly_restart: f64,
    /// The probability of a manual sync on a workday.
    pub manual_sync: f64,
    /// The probability of a push on a workday.
    pub push: f64,
    /// The share of devices that go offline for good.
    pub never_back: f64,
    /// They go within this many days of [`Model::start`].
    pub never_back_days: u32,
    /// The start of the simulated period (the run's start): what never-back devices count
    /// from. `None`: no device leaves.
    pub start: Option<DateTime<Utc>>,
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
}

impl Default for Model {
    fn default() -> Model {
        Model {
            workdays: [true, true, true, true, true, false, false],
            logon_mean: hm(8, 30),
            logon_spread_minutes: 40,
            logoff_mean: hm(17, 30),
            logoff_spread_minutes: 60,
            logoff_share: 0.6,
            lunch_start: hm(12, 0),
            lunch_end: hm(13, 30),
            lunch_share: 0.8,
            breaks_per_day: 2.0,
            weekend_activity: 0.05,
            absence: 0.04,
            laptop_sleep: 0.85,
            patch_tuesday: true,
            patch_deadline_days: 7,
            weekly_restart: 0.25,
            manual_sync: 0.1,
            push: 0.2,
            never_back: 0.02,
            never_back_days: 7,
            start: None,
        }
    }
}

impl Model {
    /// The model with never-back devices counted from `start` (the start of the run).
    pub fn starting(mut self, start: DateTime<Utc>) -> Model {
        self.start = Some(start);
        self
    }

    /// True when `day` is a working day.
    pub fn is_workday(&self, day: NaiveDate) -> bool {
        self.workdays[day.weekday().num_days_from_monday() as usize]
    }
}

// Tags of the independent draws of a device.
const DAY: u64 = 1;
const ABSENT: u64 = 2;
const DAY_OFF: u64 = 3;
const HABIT_ON: u64 = 4;
const HABIT_OFF: u64 = 5;
const PATCH: u64 = 6;
const WEEKLY: u64 = 7;
const GONE: u64 = 8;

/// The events of device `id` in the UTC day `[day_start_utc, day_start_utc + 24 h)`, in time
/// order: what the runner gives the device's scheduler at each simulated day boundary.
pub fn day(model: &Model, id: &Identity, seed: u64, day_start_utc: DateTime<Utc>) -> Vec<(DateTime<Utc>, Event)> {
    events(model, id, seed, day_start_utc, day_start_utc + Duration::days(1))
}

/// The events of device `id` in `[from, to)`, in time order (events at the same instant in the
/// order they happen). `day` is this over one day; any split of a range into consecutive
/// pieces gives the same events.
pub fn events(
    model: &Model,
    id: &Identity,
    seed: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, Event)> {
    if to <= from {
        return Vec::new();
    }
    let key = device_key(seed, id.index);
    let gone = gone(model, key);
    let tz = id.timezone;
    let last = to.with_timezone(&tz).date_naive();
    let mut out = Vec::with_capacity(16);
    // A local day's events fall between its midnight and the next (a time in a spring-forward
    // gap at the end of a day at most on the next midnight): the days whose span meets the
    // range, starting with the one before the range's first local day.
    let Some(mut d) = from.with_timezone(&tz).date_naive().pred_opt() else { return out };
    let mut start = at(tz, d, 0);
    while d <= last {
        let Some(next) = d.succ_opt() else { break };
        let end = at(tz, next, 0);
        if end >= from && start < to && gone.is_none_or(|g| start < g) {
            let clock = Clock { tz, day: d, start, fixed: end - start == Duration::days(1) };
            local_day(model, id, key, &clock, &mut out);
        }
        (d, start) = (next, end);
    }
    out.retain(|(t, _)| *t >= from && *t < to && gone.is_none_or(|g| *t < g));
    if let Some(g) = gone.filter(|g| *g >= from && *g < to) {
        out.push((g, Event::NetworkOff));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

/// When device `id` goes offline for good, if it is one of the never-back share.
pub fn gone_at(model: &Model, id: &Identity, seed: u64) -> Option<DateTime<Utc>> {
    gone(model, device_key(seed, id.index))
}

fn gone(model: &Model, key: u64) -> Option<DateTime<Utc>> {
    let start = model.start?;
    let h = hash(key, 0, GONE);
    if unit(h) >= model.never_back {
        return None;
    }
    let span = i64::from(model.never_back_days.max(1)) * 86_400;
    Some(start + Duration::seconds(Draws::new(h).range(0, span - 1)))
}

/// A number in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn day_number(d: NaiveDate) -> u64 {
    d.num_days_from_ce() as u64
}

/// True when the device is used on local day `d`.
fn active(model: &Model, key: u64, d: NaiveDate) -> bool {
    if model.is_workday(d) {
        unit(hash(key, day_number(d), ABSENT)) >= model.absence
    } else {
        unit(hash(key, day_number(d), DAY_OFF)) < model.weekend_activity
    }
}

/// The instant of `secs` seconds after local midnight of `d` in `tz` (past 24 h: the next day).
/// A local time in a spring-forward gap is the end of the gap; one that happens twice is the
/// first.
fn at(tz: Tz, d: NaiveDate, secs: i64) -> DateTime<Utc> {
    let naive = d.and_time(NaiveTime::MIN) + Duration::seconds(secs);
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            // The first minute after the gap: every time inside the gap lands on the same
            // instant, so the order of the day's events is kept.
            let minute = naive.with_second(0).unwrap_or(naive);
            (1..=180)
                .find_map(|m| tz.from_local_datetime(&(minute + Duration::minutes(m))).earliest())
                .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc))
        }
    }
}

/// Local times of one day of a device: seconds after its local midnight as instants.
struct Clock {
    tz: Tz,
    day: NaiveDate,
    /// The instant of the day's local midnight.
    start: DateTime<Utc>,
    /// The day has 24 hours and one offset: no daylight-saving change, times are an addition.
    fixed: bool,
}

impl Clock {
    /// The instant of `secs` seconds after local midnight (0 to 86,399).
    fn at(&self, secs: i64) -> DateTime<Utc> {
        if self.fixed { self.start + Duration::seconds(secs) } else { at(self.tz, self.day, secs) }
    }
}

/// The second Tuesday of a month (Microsoft's monthly security update release).
pub fn patch_tuesday(year: i32, month: u32) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Tue, 2)
}

/// The local day device `key` in `tz` restarts for the update of `(year, month)`: the first
/// night after the release (Patch Tuesday 10:00 Pacific time) plus a drawn delay.
fn restart_day(model: &Model, key: u64, tz: Tz, year: i32, month: u32) -> Option<NaiveDate> {
    let pt = patch_tuesday(year, month)?;
    let release = chrono_tz::America::Los_Angeles.from_local_datetime(&pt.and_time(hm(10, 0))).earliest()?;
    let local = release.with_timezone(&tz);
    let first_night = if local.hour() < 3 { local.date_naive() } else { local.date_naive().succ_opt()? };
    // Half the devices the first night, a quarter the second..., none past the deadline.
    let delay = hash(key, u64::from(month) + 12 * year as u64, PATCH).trailing_ones();
    let delay = delay.min(model.patch_deadline_days.max(1) - 1);
    first_night.checked_add_signed(Duration::days(i64::from(delay)))
}

/// The restart days of the updates that can fall on `d` (this month's and last month's).
fn restart_days(model: &Model, key: u64, tz: Tz, d: NaiveDate) -> [Option<NaiveDate>; 2] {
    if !model.patch_tuesday {
        return [None, None];
    }
    let (py, pm) = if d.month() == 1 { (d.year() - 1, 12) } else { (d.year(), d.month() - 1) };
    [restart_day(model, key, tz, py, pm), restart_day(model, key, tz, d.year(), d.month())]
}

/// True when a laptop used on `d` restarts for an update as it wakes: its restart day has
/// come and it was not used since.
fn laptop_restarts(model: &Model, key: u64, tz: Tz, d: NaiveDate) -> bool {
    restart_days(model, key, tz, d).into_iter().flatten().any(|r| {
        r <= d && (d - r).num_days() <= 45 && {
            let mut x = r;
            let mut unused = true;
            while x < d {
                if active(model, key, x) {
                    unused = false;
                    break;
                }
                x = x.succ_opt().unwrap_or(d);
            }
            unused
        }
    })
}

/// The weekday device `key` is restarted every week, if it is one of the weekly share.
fn weekly_day(model: &Model, key: u64) -> Option<u32> {
    let h = hash(key, 0, WEEKLY);
    if unit(h) >= model.weekly_restart {
        return None;
    }
    let days: Vec<u32> = (0..7).filter(|&i| model.workdays[i as usize]).collect();
    days.get((Draws::new(h).below(days.len() as u64)) as usize).copied()
}

fn secs_of(t: NaiveTime) -> i64 {
    i64::from(t.num_seconds_from_midnight())
}

/// Appends the events of the local day of `clock` (all between its midnight and the next).
fn local_day(model: &Model, id: &Identity, key: u64, clock: &Clock, out: &mut Vec<(DateTime<Utc>, Event)>) {
    let (tz, d) = (id.timezone, clock.day);
    let mut r = Draws::new(hash(key, day_number(d), DAY));
    let mut push = |secs: i64, e: Event| out.push((clock.at(secs.clamp(0, 86_399)), e));
    let work = model.is_workday(d);
    let used = active(model, key, d);
    let mut restarted = false;
    if !id.laptop && restart_days(model, key, tz, d).contains(&Some(d)) {
        // A desktop restarts for the update outside active hours, around 03:00.
        push(3 * 3600 + r.range(-3600, 3600), Event::Reboot);
        restarted = true;
    }
    let patch_wake = id.laptop && used && laptop_restarts(model, key, tz, d);
    if work && r.chance(model.push) {
        push(r.range(7 * 3600, 19 * 3600), Event::Push);
    }
    if !used {
        return;
    }
    if !work {
        // A short session on a day off.
        let start = r.range(9 * 3600, 20 * 3600);
        let end = start + r.range(20 * 60, 3 * 3600);
        if id.laptop {
            push(start - r.range(480, 720), Event::NetworkOn);
        }
        if patch_wake {
            push(start - r.range(120, 360), Event::Reboot);
        }
        push(start, Event::Logon { user: ENROLLED.into() });
        push(end, Event::Logoff { user: None });
        if id.laptop {
            push(end + r.range(60, 600), Event::NetworkOff);
        }
        return;
    }
    let spread_on = f64::from(model.logon_spread_minutes) * 60.0;
    let spread_off = f64::from(model.logoff_spread_minutes) * 60.0;
    let habit_on = Draws::new(hash(key, 0, HABIT_ON)).normal() * 0.8 * spread_on;
    let habit_off = Draws::new(hash(key, 0, HABIT_OFF)).normal() * 0.8 * spread_off;
    let logon = (secs_of(model.logon_mean) as f64 + habit_on + r.normal() * 0.6 * spread_on) as i64;
    let logon = logon.clamp(4 * 3600, 12 * 3600);
    let logoff = (secs_of(model.logoff_mean) as f64 + habit_off + r.normal() * 0.6 * spread_off) as i64;
    let logoff = logoff.max(logon + 4 * 3600).min(23 * 3600 + 1800);
    let weekly = weekly_day(model, key) == Some(d.weekday().num_days_from_monday());
    let reboot = patch_wake || (weekly && !restarted);
    if id.laptop {
        push(logon - if reboot { r.range(480, 720) } else { r.range(60, 300) }, Event::NetworkOn);
    }
    if reboot {
        push(logon - r.range(120, 360), Event::Reboot);
    }
    push(logon, Event::Logon { user: ENROLLED.into() });
    // Locks: lunch, then short breaks that keep clear of it and of each other.
    let mut busy: Vec<(i64, i64)> = Vec::with_capacity(6);
    let (ls, le) = (secs_of(model.lunch_start), secs_of(model.lunch_end));
    if r.chance(model.lunch_share) && le > ls && logon < ls - 1800 && logoff > le + 1800 {
        let window = le - ls;
        let length = r.range(window.min(1800), window.min(3600));
        let start = ls + r.range(0, window - length);
        busy.push((start, start + length));
    }
    let tries = model.breaks_per_day.clamp(0.0, 8.0);
    for _ in 0..8 {
        if !r.chance(tries / 8.0) {
            continue;
        }
        let start = r.range(logon + 1200, logoff - 2100);
        let end = start + r.range(300, 900);
        if busy.iter().all(|&(a, b)| end + 300 < a || start > b + 300) {
            busy.push((start, end));
        }
    }
    busy.sort_unstable();
    for (a, b) in busy {
        push(a, Event::Lock);
        push(b, Event::Unlock { user: None });
    }
    if r.chance(model.manual_sync) {
        push(r.range(logon + 300, logoff - 300), Event::Sync { interactive: false });
    }
    if r.chance(model.logoff_share) {
        push(logoff, Event::Logoff { user: None });
    } else {
        push(logoff, Event::Lock);
    }
    if id.laptop && r.chance(model.laptop_sleep) {
        push(logoff + r.range(60, 900), Event::NetworkOff);
    }
}

/// Events of one kind counted together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `logon` events (a new logon session, or a switch back to a locked one).
    pub logons: u32,
    /// `logoff` events.
    pub logoffs: u32,
    /// `lock` events (breaks, lunch, evenings left locked).
    pub locks: u32,
    /// `unlock` events.
    pub unlocks: u32,
    /// `reboot` events (Patch Tuesday and weekly restarts).
    pub reboots: u32,
    /// Manual `sync` events.
    pub syncs: u32,
    /// `push` events.
    pub pushes: u32,
    /// `network-off` events (laptops going to sleep, devices leaving for good).
    pub network_off: u32,
    /// `network-on` events (laptops waking).
    pub network_on: u32,
}

impl Counts {
    /// Counts one event.
    pub fn add(&mut self, event: &Event) {
        let n = match event {
            Event::Logon { .. } => &mut self.logons,
            Event::Logoff { .. } => &mut self.logoffs,
            Event::Lock => &mut self.locks,
            Event::Unlock { .. } => &mut self.unlocks,
            Event::Reboot => &mut self.reboots,
            Event::Sync { .. } => &mut self.syncs,
            Event::Push => &mut self.pushes,
            Event::NetworkOff => &mut self.network_off,
            Event::NetworkOn => &mut self.network_on,
            _ => return,
        };
        *n += 1;
    }

    /// Every event counted.
    pub fn total(&self) -> u32 {
        self.logons
            + self.logoffs
            + self.locks
            + self.unlocks
            + self.reboots
            + self.syncs
            + self.pushes
            + self.network_off
            + self.network_on
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.logons += o.logons;
        self.logoffs += o.logoffs;
        self.locks += o.locks;
        self.unlocks += o.unlocks;
        self.reboots += o.reboots;
        self.syncs += o.syncs;
        self.pushes += o.pushes;
        self.network_off += o.network_off;
        self.network_on += o.network_on;
    }
}

/// The aggregate shape of a fleet's events over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// One entry per UTC hour from the start of the period: the hour's start and its events.
    pub hours: Vec<(DateTime<Utc>, Counts)>,
    /// The events by each device's own local hour of the week: index `weekday * 24 + hour`,
    /// Monday 00:00 local first (168 entries).
    pub local_week: Vec<Counts>,
    /// The devices that went offline for good during the period.
    pub gone: u32,
    /// The devices counted.
    pub devices: u32,
}

/// The shape of the events of devices `ids` of the fleet of `seed` in `[from, to)`, day by day
/// as the runner asks for them: how check-in triggers pile up per hour (morning peaks per time
/// zone, quiet nights and weekends, Patch Tuesday restarts).
pub fn shape(model: &Model, seed: u64, ids: &[Identity], from: DateTime<Utc>, to: DateTime<Utc>) -> Shape {
    let hours = ((to - from).num_hours().max(0)) as usize;
    let mut shape = Shape {
        hours: (0..hours).map(|h| (from + Duration::hours(h as i64), Counts::default())).collect(),
        local_week: vec![Counts::default(); 168],
        gone: 0,
        devices: ids.len() as u32,
    };
    for id in ids {
        if gone_at(model, id, seed).is_some_and(|g| g >= from && g < to) {
            shape.gone += 1;
        }
        let mut start = from;
        while start < to {
            let end = (start + Duration::days(1)).min(to);
            for (t, e) in events(model, id, seed, start, end) {
                if let Some(h) = shape.hours.get_mut(((t - from).num_hours()) as usize) {
                    h.1.add(&e);
                }
                let local = t.with_timezone(&id.timezone);
                let slot = local.weekday().num_days_from_monday() as usize * 24 + local.hour() as usize;
                shape.local_week[slot].add(&e);
            }
            start = end;
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Template;
    use crate::fleet::identity::{Form, Population};
    use crate::tree::Profile;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn fleet(n: u64, laptop: bool, zones: &[(Tz, u32)]) -> Vec<Identity> {
        let template = Template::builtin(Profile::Win10);
        let pop = Population { timezones: zones.to_vec(), ..Population::default() };
        let form = Form { laptop, keep_hardware: false };
        (0..n).map(|i| Identity::derive(11, i, &template, form, &pop)).collect()
    }

    #[test]
    fn patch_tuesday_is_the_second_tuesday() {
        assert_eq!(patch_tuesday(2026, 3), NaiveDate::from_ymd_opt(2026, 3, 10));
        assert_eq!(patch_tuesday(2026, 9), NaiveDate::from_ymd_opt(2026, 9, 8));
        assert_eq!(patch_tuesday(2025, 11), NaiveDate::from_ymd_opt(2025, 11, 11));
    }

    #[test]
    fn days_split_a_range_without_duplicates_or_gaps() {
        let model = Model::default().starting(t("2026-03-02T00:00:00Z"));
        let zones =
            [(chrono_tz::America::Los_Angeles, 1), (chrono_tz::Asia::Kolkata, 1), (chrono_tz::Pacific::Auckland, 1)];
        for id in fleet(60, true, &zones) {
            let whole = events(&model, &id, 3, t("2026-03-02T00:00:00Z"), t("2026-03-16T00:00:00Z"));
            let mut days = Vec::new();
            for n in 0..14 {
                let d = day(&model, &id, 3, t("2026-03-02T00:00:00Z") + Duration::days(n));
                assert!(d.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
                days.extend(d);
            }
            assert_eq!(whole, days, "device {}", id.index);
            // An odd split (across the US daylight-saving change on March 8) agrees too.
            let a = events(&model, &id, 3, t("2026-03-02T00:00:00Z"), t("2026-03-08T09:17:00Z"));
            let b = events(&model, &id, 3, t("2026-03-08T09:17:00Z"), t("2026-03-16T00:00:00Z"));
            assert_eq!(whole, [a, b].concat());
        }
    }

    #[test]
    fn a_workday_in_local_time() {
        let model = Model { weekly_restart: 0.0, absence: 0.0, patch_tuesday: false, ..Model::default() };
        let ids = fleet(200, true, &[(chrono_tz::Asia::Tokyo, 1)]);
        let mut logons = Vec::new();
        for id in &ids {
            // Wednesday 2026-03-04 in Tokyo is 2026-03-03T15:00Z to 2026-03-04T15:00Z.
            let ev = events(&model, id, 1, t("2026-03-03T15:00:00Z"), t("2026-03-04T15:00:00Z"));
            // Pushes and syncs come at any time of the day; the user's own events in order.
            let ev: Vec<_> = ev.into_iter().filter(|(_, e)| !matches!(e, Event::Push | Event::Sync { .. })).collect();
            let kinds: Vec<&str> = ev.iter().map(|(_, e)| e.kind()).collect();
            let on = kinds.iter().position(|k| *k == "network-on").expect("the laptop wakes");
            let logon = kinds.iter().position(|k| *k == "logon").expect("the user logs on");
            assert!(on < logon, "{kinds:?}");
            assert!(matches!(kinds.last(), Some(&"logoff" | &"lock" | &"network-off")), "{kinds:?}");
            let local = ev[logon].0.with_timezone(&chrono_tz::Asia::Tokyo);
            logons.push(local.hour() as f64 + local.minute() as f64 / 60.0);
            // Locks and unlocks alternate.
            let locks: Vec<&str> = kinds.iter().copied().filter(|k| *k == "lock" || *k == "unlock").collect();
            assert!(locks.chunks(2).all(|c| c[0] == "lock" && c.get(1).is_none_or(|u| *u == "unlock")), "{kinds:?}");
        }
        let mean = logons.iter().sum::<f64>() / logons.len() as f64;
        let sd = (logons.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / logons.len() as f64).sqrt();
        assert!((8.2..8.8).contains(&mean), "mean logon {mean}");
        assert!((0.45..0.9).contains(&sd), "spread {sd} h for 40 min");
    }

    #[test]
    fn spring_forward_keeps_the_order_of_a_day() {
        // Every local time of 02:xx on 2026-03-08 in New York does not exist.
        let d = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        let tz = chrono_tz::America::New_York;
        let a = at(tz, d, 2 * 3600 + 600);
        let b = at(tz, d, 2 * 3600 + 3000);
        assert_eq!((a, b), (t("2026-03-08T07:00:00Z"), t("2026-03-08T07:00:00Z")));
        assert!(at(tz, d, 3 * 3600 + 60) > a);
        // Fall back: 01:30 happens twice; the first one.
        let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        assert_eq!(at(tz, d, 3600 + 1800), t("2026-11-01T05:30:00Z"));
    }

    #[test]
    fn day_is_cheap() {
        let model = Model::default().starting(t("2026-03-02T00:00:00Z"));
        let ids = fleet(500, true, crate::fleet::identity::DEFAULT_TIMEZONES);
        let started = std::time::Instant::now();
        let mut n = 0;
        for day_n in 0..4 {
            for id in &ids {
                n += day(&model, id, 1, t("2026-03-09T00:00:00Z") + Duration::days(day_n)).len();
            }
        }
        let per = started.elapsed() / 2000;
        eprintln!("day(): {per:?} per device and day, {:.1} events", n as f64 / 2000.0);
        assert!(per < std::time::Duration::from_micros(200), "{per:?}");
    }
}
