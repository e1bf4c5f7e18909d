//! Triggers → operation modes, the Machine-mode command gate and the clock, every row of the seed
//! (the Windows 8.1 MDM operation modes post) stepped on the virtual clock the way `mdmsim run --clock
//! virtual` drives a device.

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Tz;
use mdmsim::schedule::clock::{Clock, VirtualClock};
use mdmsim::schedule::{
    Action, ENROLLED, Event, Jitter, LoginPolling, LoginStatus, Mode, Nightly, PollSource, Scheduler, SchedulerConfig,
    SessionRequest, Trigger, UserState, parse_timeline,
};
use mdmsim::session::mode_gate::{GateCmd, GateContext, Rule, Verdict, judge};
use mdmsim::tree::Profile;

const SEED: u64 = 0x5eed_0006;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Monday 2 March 2026, 00:00 UTC.
fn start() -> DateTime<Utc> {
    t("2026-03-02T00:00:00Z")
}

fn config(profile: Profile) -> SchedulerConfig {
    SchedulerConfig {
        profile,
        enrolled_at: start(),
        nightly: Nightly::new("0 0 2 * * *", "UTC").unwrap(),
        login_polling: LoginPolling::default(),
        lost_contact_days: None,
        jitter: Jitter::default(),
        seed: SEED,
    }
}

/// The seed's recommended poll schedule (DMClient CSP, "sigmoid polling schedule with infinite
/// schedule"): every 15 minutes ×5, then every 60 minutes ×10, then every 1440 minutes forever,
/// counted from enrollment.
fn recommended_timetable(enrolled: DateTime<Utc>) -> PollSource {
    Box::new(move |after: DateTime<Utc>| {
        let sets = [(15i64, 5i64), (60, 10)];
        let mut base = enrolled;
        for (interval, number) in sets {
            for k in 1..=number {
                let at = base + Duration::minutes(interval * k);
                if at > after {
                    return Some(at);
                }
            }
            base += Duration::minutes(interval * number);
        }
        // The remaining set: infinite, every 1440 minutes.
        let day = Duration::minutes(1440);
        let n = if after < base { 1 } else { (after - base).num_minutes() / 1440 + 1 };
        Some(base + day * n as i32)
    })
}

/// The runner's loop on a virtual clock: jump to the next deadline, handle it, until `until`.
/// Every session succeeds.
fn drive(s: &mut Scheduler, clock: &mut VirtualClock, until: DateTime<Utc>) -> Vec<Action> {
    let mut out = Vec::new();
    for _ in 0..1_000_000 {
        let Some(deadline) = s.next_deadline().filter(|d| *d <= until) else { break };
        assert_eq!(clock.sleep_until(deadline), std::time::Duration::ZERO);
        let now = clock.now();
        for action in s.on_deadline(now) {
            if let Action::Session(_) = &action {
                s.session_finished(now, true);
            }
            out.push(action);
        }
    }
    clock.advance_to(until);
    out
}

fn sessions(actions: &[Action]) -> Vec<SessionRequest> {
    actions.iter().filter_map(|a| a.session().cloned()).collect()
}

/// A device with no poll timetable, the given events, run for `days`.
fn run_events(profile: Profile, events: Vec<(Duration, Event)>, days: i64) -> Vec<SessionRequest> {
    run_with(config(profile), events, days)
}

fn run_with(cfg: SchedulerConfig, events: Vec<(Duration, Event)>, days: i64) -> Vec<SessionRequest> {
    let mut s = Scheduler::new(cfg, None, UserState::new(), start());
    s.script(events.into_iter().map(|(d, e)| (start() + d, e)));
    let mut clock = VirtualClock::new(start());
    sessions(&drive(&mut s, &mut clock, start() + Duration::days(days)))
}

fn logon(user: &str) -> Event {
    Event::Logon { user: user.into() }
}

fn only(reqs: &[SessionRequest], trigger: Trigger) -> Vec<&SessionRequest> {
    reqs.iter().filter(|r| r.trigger == trigger).collect()
}

#[test]
fn reboot_runs_a_machine_mode_session() {
    for profile in [Profile::Win10, Profile::Win81] {
        let reqs = run_events(profile, vec![(Duration::hours(8), Event::Reboot)], 1);
        let reboot = only(&reqs, Trigger::Reboot);
        assert_eq!(reboot.len(), 1, "{profile:?}: {reqs:?}");
        assert_eq!(reboot[0].mode, Mode::Machine);
        assert_eq!(reboot[0].login_status, LoginStatus::None);
        assert!(!reboot[0].server_initiated);
        // Jitter: a real device needs a few seconds to a minute after boot.
        let delay = reboot[0].at - reboot[0].nominal;
        assert!(delay >= Duration::seconds(10) && delay <= Duration::seconds(60), "{delay}");
    }
}

#[test]
fn logon_of_the_enrolled_user_runs_a_maintenance_session() {
    let reqs = run_events(Profile::Win81, vec![(Duration::hours(8), logon(ENROLLED))], 1);
    let l = only(&reqs, Trigger::Logon);
    assert_eq!(l.len(), 1, "{reqs:?}");
    assert_eq!((l[0].mode, l[0].login_status), (Mode::Maintenance, LoginStatus::User));
}

/// The nightly session of Tuesday 3 March, 02:00 (the first nightly after Monday evening).
fn tuesday_nightly(events: Vec<(Duration, Event)>, profile: Profile) -> SessionRequest {
    let reqs = run_events(profile, events, 2);
    let n: Vec<_> =
        only(&reqs, Trigger::Nightly).into_iter().filter(|r| r.nominal == t("2026-03-03T02:00:00Z")).collect();
    assert_eq!(n.len(), 1, "{reqs:?}");
    n[0].clone()
}

#[test]
fn nightly_mode_follows_the_enrolled_users_session() {
    // Active at 02:00 → Maintenance.
    let active = tuesday_nightly(vec![(Duration::hours(20), logon(ENROLLED))], Profile::Win81);
    assert_eq!((active.mode, active.login_status), (Mode::Maintenance, LoginStatus::User));

    // Locked (not logged off) → Maintenance.
    let locked = tuesday_nightly(
        vec![(Duration::hours(20), logon(ENROLLED)), (Duration::hours(23), Event::Lock)],
        Profile::Win81,
    );
    assert_eq!(locked.mode, Mode::Maintenance);

    // Logged off before the maintenance hour → Machine.
    let off = tuesday_nightly(
        vec![(Duration::hours(20), logon(ENROLLED)), (Duration::hours(23), Event::Logoff { user: None })],
        Profile::Win81,
    );
    assert_eq!((off.mode, off.login_status), (Mode::Machine, LoginStatus::None));

    // Nobody since boot → Machine.
    assert_eq!(tuesday_nightly(vec![], Profile::Win10).mode, Mode::Machine);
}

#[test]
fn push_is_apps_mode_on_win81_and_server_initiated_on_win10() {
    let events = vec![(Duration::hours(8), logon(ENROLLED)), (Duration::hours(9), Event::Push)];
    let w81 = run_events(Profile::Win81, events.clone(), 1);
    let p = only(&w81, Trigger::Push);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].mode, Mode::Apps);
    assert!(!p[0].server_initiated);

    let w10 = run_events(Profile::Win10, events, 1);
    let p = only(&w10, Trigger::Push);
    assert_eq!(p.len(), 1);
    assert!(p[0].server_initiated, "win10 push is a server-initiated session (Alert 1200)");
    assert_eq!((p[0].mode, p[0].login_status), (Mode::Maintenance, LoginStatus::User));

    // Nobody logged on: the win10 push session is in Machine mode; win81 stays Apps.
    let w10 = run_events(Profile::Win10, vec![(Duration::hours(9), Event::Push)], 1);
    assert_eq!(only(&w10, Trigger::Push)[0].mode, Mode::Machine);
    let w81 = run_events(Profile::Win81, vec![(Duration::hours(9), Event::Push)], 1);
    assert_eq!(only(&w81, Trigger::Push)[0].mode, Mode::Apps);
}

fn other_users_events() -> Vec<(Duration, Event)> {
    let text = std::fs::read_to_string(fixture("other-users.toml")).unwrap();
    parse_timeline(&text, "other-users.toml")
        .unwrap()
        .resolve(start())
        .into_iter()
        .map(|(at, e)| (at - start(), e))
        .collect()
}

#[test]
fn other_users_logon_starts_a_session_only_when_the_server_asked() {
    // alice, alice again, bob.
    let none = run_with(config(Profile::Win10), other_users_events(), 1);
    assert!(only(&none, Trigger::Logon).is_empty(), "{none:?}");

    let mut cfg = config(Profile::Win10);
    cfg.login_polling = LoginPolling { poll_on_login: true, all_users_poll_on_first_login: false };
    let any = run_with(cfg, other_users_events(), 1);
    let l = only(&any, Trigger::Logon);
    assert_eq!(l.len(), 3, "PollOnLogin: every logon");
    assert!(l.iter().all(|r| r.mode == Mode::Machine && r.login_status == LoginStatus::Others));

    let mut cfg = config(Profile::Win10);
    cfg.login_polling = LoginPolling { poll_on_login: false, all_users_poll_on_first_login: true };
    let first = run_with(cfg, other_users_events(), 1);
    let l = only(&first, Trigger::Logon);
    assert_eq!(l.len(), 2, "AllUsersPollOnFirstLogin: alice's first logon and bob's");
    assert_eq!(l[0].nominal, start() + Duration::hours(1));
    assert_eq!(l[1].nominal, start() + Duration::hours(5));
}

#[test]
fn manual_sync_is_maintenance_when_the_user_is_logged_on() {
    let reqs = run_events(
        Profile::Win10,
        vec![(Duration::hours(1), logon(ENROLLED)), (Duration::hours(2), Event::Sync { interactive: false })],
        1,
    );
    let m = only(&reqs, Trigger::Manual);
    assert_eq!((m[0].mode, m[0].interactive), (Mode::Maintenance, false));
}

const WNS_81: &str = "./cimv2/MDM_WNSConfiguration/MDM_WNSConfiguration.AppId=%22{AppId}%22/Exec=UpdateConfiguration";
const PFN_10: &str = "./Vendor/MSFT/DMClient/Provider/MDMSIM/Push/PFN";

fn gate_for(req: &SessionRequest, profile: Profile, strict: bool) -> GateContext {
    GateContext { profile, mode: req.mode, interactive: req.interactive, strict }
}

#[test]
fn wns_configuration_in_a_machine_mode_session_is_a_finding_and_405_with_strict() {
    for (profile, name, target) in [(Profile::Win81, "Exec", WNS_81), (Profile::Win10, "Replace", PFN_10)] {
        let reqs = run_events(profile, vec![(Duration::hours(8), Event::Reboot)], 1);
        let reboot = only(&reqs, Trigger::Reboot)[0];
        assert_eq!(reboot.mode, Mode::Machine);
        let cmd = GateCmd { name, cmd_id: "5", target, data: Some("AppId=x") };

        match judge(&gate_for(reboot, profile, false), &cmd) {
            Verdict::Refuse { status, finding: Some(f), .. } => {
                assert_eq!(status.code(), 500, "fails with an error status");
                assert_eq!(f.what, Rule::MachineModeWnsConfiguration);
                assert_eq!((f.mode, f.loc_uri.as_str(), f.cmd_id.as_str()), (Mode::Machine, target, "5"));
                let json = serde_json::to_value(&f).unwrap();
                assert_eq!(json["what"], "machine-mode-wns-configuration");
                assert_eq!(json["mode"], "Machine");
                assert_eq!(json["loc_uri"], target);
            }
            other => panic!("{profile:?}: expected an error status and a finding, got {other:?}"),
        }
        match judge(&gate_for(reboot, profile, true), &cmd) {
            Verdict::Refuse { status, finding: Some(_), .. } => assert_eq!(status.code(), 405),
            other => panic!("{profile:?}: expected 405 with --strict, got {other:?}"),
        }

        // The same command in the Maintenance session after logon is fine.
        let reqs = run_events(profile, vec![(Duration::hours(8), logon(ENROLLED))], 1);
        assert_eq!(judge(&gate_for(only(&reqs, Trigger::Logon)[0], profile, true), &cmd), Verdict::Allow);
    }
}

#[test]
fn other_commands_in_machine_mode_execute_with_a_finding_or_405_with_strict() {
    let cx = GateContext { profile: Profile::Win10, mode: Mode::Machine, interactive: false, strict: false };
    let cmd = GateCmd {
        name: "Replace",
        cmd_id: "9",
        target: "./Vendor/MSFT/Policy/Config/Camera/AllowCamera",
        data: Some("0"),
    };
    let v = judge(&cx, &cmd);
    assert!(matches!(v, Verdict::Finding(ref f) if f.what == Rule::MachineModeCommand), "{v:?}");
    let v = judge(&GateContext { strict: true, ..cx }, &cmd);
    assert!(matches!(v, Verdict::Refuse { status, .. } if status.code() == 405), "{v:?}");
    // Inventory reads stay allowed even with --strict.
    let get = GateCmd { name: "Get", cmd_id: "10", target: "./DevDetail/SwV", data: None };
    assert_eq!(judge(&GateContext { strict: true, ..cx }, &get), Verdict::Allow);
}

#[test]
fn an_interactive_run_cannot_configure_wns() {
    let text = std::fs::read_to_string(fixture("manual-operation.toml")).unwrap();
    let tl = parse_timeline(&text, "manual-operation.toml").unwrap();
    let mut s = Scheduler::new(config(Profile::Win81), None, UserState::new(), start());
    s.script(tl.resolve(start()));
    let mut clock = VirtualClock::new(start());
    let reqs = sessions(&drive(&mut s, &mut clock, start() + Duration::hours(1)));
    let m = only(&reqs, Trigger::Manual);
    assert_eq!(m.len(), 1);
    assert!(m[0].interactive);
    assert_eq!(m[0].mode, Mode::Maintenance);
    let cmd = GateCmd { name: "Exec", cmd_id: "3", target: WNS_81, data: None };
    match judge(&gate_for(m[0], Profile::Win81, false), &cmd) {
        Verdict::Refuse { status, finding: None, .. } => assert_eq!(status.code(), 500),
        other => panic!("expected an error status without a finding, got {other:?}"),
    }
}

#[test]
fn the_recommended_poll_timetable_over_30_days() {
    let mut cfg = config(Profile::Win10);
    // No nightly noise: a cron that never matches within the run (29 February).
    cfg.nightly = Nightly::new("0 0 2 29 2 *", "UTC").unwrap();
    let wall = Instant::now();
    let mut s = Scheduler::new(cfg, Some(recommended_timetable(start())), UserState::enrolled_active(), start());
    let mut clock = VirtualClock::new(start());
    let reqs = sessions(&drive(&mut s, &mut clock, start() + Duration::days(30)));
    let elapsed = wall.elapsed();
    eprintln!("30 simulated days of polling: {} sessions in {elapsed:?} of wall time", reqs.len());

    let polls = only(&reqs, Trigger::Poll);
    let mut expected = Vec::new();
    for k in 1..=5 {
        expected.push(start() + Duration::minutes(15 * k));
    }
    for k in 1..=10 {
        expected.push(start() + Duration::minutes(75 + 60 * k));
    }
    let mut next = start() + Duration::minutes(675 + 1440);
    while next <= start() + Duration::days(30) - Duration::seconds(60) {
        expected.push(next);
        next += Duration::days(1);
    }
    let nominal: Vec<_> = polls.iter().map(|r| r.nominal).collect();
    assert_eq!(nominal, expected);
    for p in &polls {
        let jitter = p.at - p.nominal;
        assert!(jitter >= Duration::zero() && jitter <= Duration::seconds(60), "{p}");
        assert_eq!(p.mode, Mode::Maintenance);
    }
    assert_eq!(clock.now(), start() + Duration::days(30));
}

#[test]
fn same_seed_same_timeline() {
    let run = |seed: u64| {
        let mut cfg = config(Profile::Win10);
        cfg.seed = seed;
        let text = std::fs::read_to_string(fixture("week.toml")).unwrap();
        let mut s = Scheduler::new(cfg, Some(recommended_timetable(start())), UserState::new(), start());
        s.script(parse_timeline(&text, "week.toml").unwrap().resolve(start()));
        let mut clock = VirtualClock::new(start());
        drive(&mut s, &mut clock, start() + Duration::days(7))
    };
    let a = run(SEED);
    let b = run(SEED);
    assert!(a.len() > 20, "{a:?}");
    assert_eq!(a, b, "seed {SEED:#x} gave two timelines");
    assert_ne!(a, run(SEED + 1), "another seed should draw other jitter");
}

#[test]
fn a_restored_scheduler_continues_the_same_timeline() {
    let text = std::fs::read_to_string(fixture("week.toml")).unwrap();
    let timeline = parse_timeline(&text, "week.toml").unwrap().resolve(start());
    let fresh = || {
        let mut s =
            Scheduler::new(config(Profile::Win81), Some(recommended_timetable(start())), UserState::new(), start());
        s.script(timeline.clone());
        s
    };
    let end = start() + Duration::days(7);
    let mut whole = fresh();
    let expected = drive(&mut whole, &mut VirtualClock::new(start()), end);

    let mut first = fresh();
    let half = start() + Duration::hours(84);
    let mut got = drive(&mut first, &mut VirtualClock::new(start()), half);
    // Persist (as JSON, like the store would) and restore.
    let saved = serde_json::to_string(&first.state()).unwrap();
    let mut second = Scheduler::restore(
        config(Profile::Win81),
        Some(recommended_timetable(start())),
        serde_json::from_str(&saved).unwrap(),
    );
    got.extend(drive(&mut second, &mut VirtualClock::new(half), end));
    assert_eq!(got, expected);
}

#[test]
fn the_week_fixture_gives_the_modes_the_seed_predicts() {
    let text = std::fs::read_to_string(fixture("week.toml")).unwrap();
    let mut s = Scheduler::new(config(Profile::Win81), None, UserState::new(), start());
    s.script(parse_timeline(&text, "week.toml").unwrap().resolve(start()));
    let mut clock = VirtualClock::new(start());
    let actions = drive(&mut s, &mut clock, start() + Duration::days(7));
    let line = |a: &Action| match a {
        Action::Session(r) => format!("{} {} {}", r.nominal.format("%a %H:%M"), r.trigger, r.mode),
        Action::Missed { at, trigger, .. } => format!("{} {trigger} missed", at.format("%a %H:%M")),
        Action::Unenroll { at, .. } => format!("{} unenroll", at.format("%a %H:%M")),
        Action::Channel { at, event } => format!("{} {}", at.format("%a %H:%M"), event.kind()),
    };
    let got: Vec<String> = actions.iter().map(line).collect();
    let expected = [
        "Mon 02:00 nightly Machine",
        "Mon 08:00 reboot Machine",
        "Mon 08:05 logon Maintenance",
        "Tue 02:00 nightly Machine", // logged off at 18:00
        "Tue 09:00 logon Maintenance",
        "Tue 10:00 push Apps",
        "Wed 02:00 nightly Maintenance", // locked, not logged off
        "Wed 12:00 manual Maintenance",  // the `sync` event
        "Thu 02:00 nightly Machine",
        // alice's logon starts nothing by default
        "Fri 02:00 nightly Machine",
        "Sat 02:00 nightly Machine",
        "Sat 08:00 reboot Machine",
        "Sun 02:00 nightly Machine",
        "Sun 03:00 nightly Machine",
    ];
    assert_eq!(got, expected);
}

#[test]
fn network_off_misses_sessions_and_catches_up_once() {
    let mut cfg = config(Profile::Win10);
    cfg.jitter = Jitter::none();
    let mut s = Scheduler::new(cfg, Some(recommended_timetable(start())), UserState::enrolled_active(), start());
    s.script([
        (start() + Duration::minutes(20), Event::NetworkOff),
        (start() + Duration::minutes(40), Event::Push),
        (start() + Duration::minutes(70), Event::NetworkOn),
    ]);
    let mut clock = VirtualClock::new(start());
    let actions = drive(&mut s, &mut clock, start() + Duration::minutes(80));
    let missed: Vec<_> = actions.iter().filter(|a| matches!(a, Action::Missed { .. })).collect();
    assert_eq!(missed.len(), 3, "the polls at +30m, +45m and +60m: {actions:?}");
    let reqs = sessions(&actions);
    let at_70: Vec<_> = reqs.iter().filter(|r| r.at == start() + Duration::minutes(70)).collect();
    assert_eq!(at_70.len(), 2, "one catch-up poll and the cached push: {reqs:?}");
    assert_eq!(at_70[0].trigger, Trigger::Poll);
    assert_eq!(at_70[0].nominal, start() + Duration::minutes(30));
    assert_eq!(at_70[1].trigger, Trigger::Push);
    assert!(at_70[1].server_initiated);
}

#[test]
fn lost_contact_unenrolls_after_the_configured_days_without_success() {
    let mut cfg = config(Profile::Win10);
    cfg.lost_contact_days = Some(3);
    let mut s = Scheduler::new(cfg.clone(), Some(recommended_timetable(start())), UserState::new(), start());
    // Every session fails: the runner never reports a success.
    let mut unenroll = None;
    let mut clock = VirtualClock::new(start());
    while let Some(d) = s.next_deadline() {
        clock.sleep_until(d);
        for a in s.on_deadline(clock.now()) {
            if let Action::Unenroll { at, reason } = a {
                unenroll = Some((at, reason));
            }
        }
        if clock.now() > start() + Duration::days(10) {
            break;
        }
    }
    let (at, reason) = unenroll.expect("an unenroll");
    assert_eq!(at, start() + Duration::days(3));
    assert!(reason.contains("NumberOfDaysAfterLostContactToUnenroll"), "{reason}");
    assert!(s.unenrolled());
    assert_eq!(s.next_deadline(), None, "an unenrolled device stops syncing");

    // With successful sessions the device stays enrolled.
    let mut s = Scheduler::new(cfg, Some(recommended_timetable(start())), UserState::new(), start());
    let actions = drive(&mut s, &mut VirtualClock::new(start()), start() + Duration::days(10));
    assert!(!actions.iter().any(|a| matches!(a, Action::Unenroll { .. })));
}

#[test]
fn nightly_in_new_york_across_the_spring_dst_change() {
    let mut cfg = config(Profile::Win10);
    cfg.nightly = Nightly::new("0 0 2 * * *", "America/New_York").unwrap();
    cfg.jitter = Jitter::none();
    let mut s = Scheduler::new(cfg, None, UserState::enrolled_active(), t("2026-03-05T12:00:00Z"));
    let mut clock = VirtualClock::new(t("2026-03-05T12:00:00Z"));
    let nights: Vec<_> = only(&sessions(&drive(&mut s, &mut clock, t("2026-03-11T12:00:00Z"))), Trigger::Nightly)
        .into_iter()
        .map(|r| r.at)
        .collect();
    let ny: Tz = "America/New_York".parse().unwrap();
    let local: Vec<String> = nights.iter().map(|d| d.with_timezone(&ny).format("%m-%d %H:%M %Z").to_string()).collect();
    assert_eq!(
        local,
        [
            "03-06 02:00 EST",
            "03-07 02:00 EST",
            "03-08 03:00 EDT", // 02:00 does not exist that night: the first instant after the gap
            "03-09 02:00 EDT",
            "03-10 02:00 EDT",
            "03-11 02:00 EDT",
        ]
    );
    assert_eq!(nights[0].hour(), 7);
    assert_eq!(nights[3].hour(), 6);
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/events").join(name)
}

#[test]
fn every_event_fixture_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/events");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let tl = parse_timeline(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
            assert!(!tl.entries.is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 3);
}

#[test]
fn a_thousand_devices_share_one_timer_heap_for_a_week() {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let wall = Instant::now();
    let end = start() + Duration::days(7);
    let template = config(Profile::Win10);
    let mut devices: Vec<Scheduler> = (0..1000u64)
        .map(|i| {
            let mut cfg = template.clone();
            cfg.seed = mdmsim::schedule::device_seed(SEED, i);
            Scheduler::new(cfg, Some(recommended_timetable(start())), UserState::new(), start())
        })
        .collect();
    let mut heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>> =
        devices.iter().enumerate().filter_map(|(i, s)| s.next_deadline().map(|d| Reverse((d, i)))).collect();
    let mut clock = VirtualClock::new(start());
    let mut sessions = 0usize;
    while let Some(Reverse((deadline, i))) = heap.pop() {
        if deadline > end {
            break;
        }
        clock.sleep_until(deadline);
        for a in devices[i].on_deadline(clock.now()) {
            if a.session().is_some() {
                sessions += 1;
                devices[i].session_finished(clock.now(), true);
            }
        }
        if let Some(d) = devices[i].next_deadline() {
            heap.push(Reverse((d, i)));
        }
    }
    eprintln!(
        "1000 devices × 7 simulated days: {sessions} sessions in {:?} of wall time; a Scheduler is {} bytes plus its heap parts",
        wall.elapsed(),
        std::mem::size_of::<Scheduler>()
    );
    // Each device: 15 polls of the first two sets, 6 daily polls (+675m, then daily), 7 nightlies.
    assert_eq!(sessions, 1000 * (15 + 6 + 7));
}

#[test]
fn every_prefix_of_a_timeline_parses_or_fails_with_a_place() {
    let text = std::fs::read_to_string(fixture("week.toml")).unwrap();
    let lines = text.lines().count() + 1;
    let mut failures = 0;
    for (i, _) in text.char_indices() {
        match parse_timeline(&text[..i], "week.toml") {
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                assert!(e.line >= 1 && e.line <= lines && e.column >= 1, "{e}");
                assert!(e.to_string().starts_with(&format!("week.toml:{}:{}: ", e.line, e.column)));
            }
        }
    }
    assert!(failures > 0);
}
