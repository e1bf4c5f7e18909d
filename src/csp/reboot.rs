//! The Reboot CSP's behaviour (Microsoft's Reboot CSP page); its nodes come from its DDF facts
//! (`ddf_csp`). `RebootNow` restarts the device once the session is over
//! ([`Effect::Reboot`]: everyone is logged off and MDMAgent's next run is the reboot's
//! Machine-mode session). `Schedule/Single` reboots the device once at its time and
//! `Schedule/DailyRecurrent` every day at its time of day: ISO 8601 date-times, in the
//! device's local time when they carry no offset (template `utc_offset_minutes`). A device
//! that was off past a daily time reboots once, not once per day missed.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

use super::ddf_csp::DdfBehaviour;
use crate::syncml::StatusCode;
use crate::tree::{CspCx, Effect};

/// Where the schedules remember the reboots they caused (outside every CSP root).
const META: &str = "@Reboot";
/// When the Reboot CSP last restarted the device (RFC 3339): CSPs whose work completes at a
/// restart (the Update CSP's pending updates) read it.
pub const LAST: &str = "@Reboot/last";

/// The Reboot CSP's Exec and timers.
pub struct Reboot;

impl DdfBehaviour for Reboot {
    fn exec(&self, cx: &mut CspCx<'_>, rel: &str, _data: Option<&str>) -> StatusCode {
        if rel == "RebootNow" {
            cx.state.set_value(LAST, cx.env.now.to_rfc3339());
            cx.emit(Effect::Reboot { reason: "Reboot/RebootNow".into() });
        }
        StatusCode::Ok
    }

    fn next_deadline(&self, cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
        let single = single(cx).filter(|t| !done(cx, "single", *t));
        let daily = daily_first(cx).map(|first| match last(cx, "daily") {
            // The next occurrence after the last reboot it caused.
            Some(l) if l >= first => l + Duration::days(1),
            _ => first,
        });
        match (single, daily) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_deadline(&self, cx: &mut CspCx<'_>) {
        let now = cx.env.now;
        if let Some(t) = single(cx).filter(|t| *t <= now && !done(cx, "single", *t)) {
            cx.state.set_value(&format!("{META}/single"), t.to_rfc3339());
            cx.state.set_value(LAST, now.to_rfc3339());
            cx.emit(Effect::Reboot { reason: "Reboot/Schedule/Single".into() });
        }
        let due_daily = self.next_deadline(cx).is_some_and(|t| t <= now);
        if let Some(first) = daily_first(cx).filter(|f| due_daily && *f <= now) {
            // The occurrence due now.
            let due = first + Duration::days((now - first).num_days());
            cx.state.set_value(&format!("{META}/daily"), due.to_rfc3339());
            cx.state.set_value(LAST, now.to_rfc3339());
            cx.emit(Effect::Reboot { reason: "Reboot/Schedule/DailyRecurrent".into() });
        }
    }
}

fn offset_minutes(cx: &CspCx<'_>) -> i64 {
    cx.env.settings.str("utc_offset_minutes").and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn single(cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
    cx.value("Schedule/Single").and_then(|v| local_time(v, offset_minutes(cx)))
}

fn daily_first(cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
    cx.value("Schedule/DailyRecurrent").and_then(|v| local_time(v, offset_minutes(cx)))
}

/// The last reboot the `kind` schedule caused.
fn last(cx: &CspCx<'_>, kind: &str) -> Option<DateTime<Utc>> {
    cx.state.value(&format!("{META}/{kind}")).and_then(|v| DateTime::parse_from_rfc3339(v).ok()).map(|t| t.to_utc())
}

fn done(cx: &CspCx<'_>, kind: &str, at: DateTime<Utc>) -> bool {
    last(cx, kind) == Some(at)
}

/// An ISO 8601 date-time: with an offset as given, without one in the device's local time.
fn local_time(v: &str, offset_minutes: i64) -> Option<DateTime<Utc>> {
    let v = v.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.to_utc());
    }
    let naive = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M"))
        .ok()?;
    Some(naive.and_utc() - Duration::minutes(offset_minutes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncml::{Command, Item, ItemCmd, Meta};
    use crate::tree::{Env, Profile, Tree, TreeState};

    fn write(uri: &str, data: &str) -> Command {
        let item =
            Item { meta: Some(Box::new(Meta::format("chr"))), data: Some(data.to_string()), ..Item::target(uri) };
        Command::Replace(ItemCmd { cmd_id: "1".into(), items: vec![item], ..ItemCmd::default() })
    }

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().to_utc()
    }

    #[test]
    fn local_times_take_the_device_offset_unless_they_carry_one() {
        assert_eq!(local_time("2026-12-06T02:00:00", 60), Some(at("2026-12-06T01:00:00Z")));
        assert_eq!(local_time("2026-12-06T02:00:00+02:00", 60), Some(at("2026-12-06T00:00:00Z")));
        assert_eq!(local_time("tomorrow", 0), None);
    }

    /// `Schedule/Single` reboots the device once at its time; `DailyRecurrent` every day.
    #[test]
    fn reboot_schedules_reboot_the_device_at_their_time() {
        let registry = crate::csp::registry();
        let mut env = Env::new(at("2026-12-06T00:00:00Z"), Profile::Win10);
        let mut s = TreeState::new();
        s.set_value("DevDetail/SwV", "10.0.22631.4460");
        s.commit();
        let schedule = |kind: &str, t: &str| write(&format!("./Device/Vendor/MSFT/Reboot/Schedule/{kind}"), t);
        let out = Tree::new(&registry, &mut s, &env).execute(&schedule("Single", "2026-12-06T02:00:00"));
        assert_eq!(out[0].code, StatusCode::Ok);
        s.commit();
        let first = registry.next_deadline(&mut s, &env).expect("a reboot is scheduled");
        assert_eq!(first.to_rfc3339(), "2026-12-06T02:00:00+00:00");
        env.now = first;
        let fx = registry.on_deadline(&mut s, &env);
        assert!(matches!(fx.as_slice(), [Effect::Reboot { reason }] if reason.contains("Single")), "{fx:?}");
        assert_eq!(registry.next_deadline(&mut s, &env), None, "a single reboot happens once");
        // Daily at 03:30 from the 7th; a device that was off two days reboots once.
        let out = Tree::new(&registry, &mut s, &env).execute(&schedule("DailyRecurrent", "2026-12-07T03:30:00"));
        assert_eq!(out[0].code, StatusCode::Ok);
        s.commit();
        env.now = at("2026-12-09T12:00:00Z");
        let fx = registry.on_deadline(&mut s, &env);
        assert_eq!(fx.len(), 1, "{fx:?}");
        let next = registry.next_deadline(&mut s, &env).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-12-10T03:30:00+00:00");
    }
}
