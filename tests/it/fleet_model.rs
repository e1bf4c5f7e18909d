//! The fleet model: identities, the workday behaviour and the template mix, as `mdmsim fleet`
//! uses them. The same seed gives the same fleet in every shard; identities land in the
//! device's tree where a server reads them; a week of 2,000 devices has the shape of an office
//! (morning peaks per time zone, quiet nights and weekends, Patch Tuesday restarts, devices that
//! never come back); the events drive a device's scheduler one day at a time; every bad mix is
//! refused with its `FILE:LINE:COLUMN`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use chrono_tz::Tz;

use mdmsim::device::Device;
use mdmsim::fleet::behaviour::{Model, day, events, gone_at, shape};
use mdmsim::fleet::identity::Identity;
use mdmsim::fleet::mix::{self, KNOBS, Mix, MixError};
use mdmsim::schedule::{Action, Event, Scheduler, SchedulerConfig, Trigger, UserState, Zone};
use mdmsim::syncml;
use mdmsim::tree::Tree;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn office() -> Mix {
    mix::load(&root().join("fixtures/fleet/office-mix.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 time")
}

/// A device's events, as the model gives them.
type Timeline = Vec<(DateTime<Utc>, Event)>;

/// A bad mix, the other files of its directory, and the start of its refusal.
type BadMix<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// Monday 2026-03-09, the week of the March 2026 Patch Tuesday (the 10th).
const WEEK: &str = "2026-03-09T00:00:00Z";

#[test]
fn the_same_seed_gives_the_same_fleet_and_another_seed_another() {
    let mix = office();
    let model = mix.model.clone().starting(t(WEEK));
    let week = |seed: u64, i: u64| {
        let id = mix.identity(seed, i);
        let ev = events(&model, &id, seed, t(WEEK), t(WEEK) + Duration::days(7));
        (id, ev)
    };
    let mut differ = 0;
    for i in 0..200 {
        let (a, ea) = week(42, i);
        let (b, eb) = week(42, i);
        assert_eq!((&a, &ea), (&b, &eb), "device {i}");
        assert_eq!(mix.device(42, i), mix.device(42, i));
        let (c, ec) = week(43, i);
        assert_ne!(a.device_id, c.device_id);
        assert_ne!(a.serial, c.serial);
        if ea != ec {
            differ += 1;
        }
    }
    assert!(differ > 190, "another seed, other events: {differ} of 200 differ");
    // DeviceIDs, serials and host names do not repeat within a fleet.
    let ids: Vec<Identity> = (0..2000).map(|i| mix.identity(7, i)).collect();
    for field in [
        ids.iter().map(|i| i.device_id.to_string()).collect::<Vec<_>>(),
        ids.iter().map(|i| i.hostname.clone()).collect(),
        ids.iter().map(|i| i.upn.clone()).collect(),
    ] {
        let mut unique = field.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), field.len(), "{:?}...", &field[..3]);
    }
}

#[test]
fn shards_partition_the_fleet_and_agree_on_every_device() {
    let mix = office();
    let model = mix.model.clone().starting(t(WEEK));
    let devices = 300u64;
    let whole: Vec<(Identity, Timeline)> = (0..devices)
        .map(|i| {
            let id = mix.identity(9, i);
            let ev = day(&model, &id, 9, t(WEEK) + Duration::days(1));
            (id, ev)
        })
        .collect();
    let shards = 4u64;
    let mut seen = vec![0u32; devices as usize];
    for shard in 0..shards {
        // A shard computes only its own devices, in its own order (last first).
        for i in (0..devices).filter(|i| i % shards == shard).rev() {
            seen[i as usize] += 1;
            let id = mix.identity(9, i);
            let ev = day(&model, &id, 9, t(WEEK) + Duration::days(1));
            assert_eq!((&id, &ev), (&whole[i as usize].0, &whole[i as usize].1), "device {i} in shard {shard}");
        }
    }
    assert!(seen.iter().all(|n| *n == 1), "every device in exactly one shard");
}

/// Gets `uri` from the device's tree as a server's Get would: the code and the value.
fn get(device: &mut Device, now: DateTime<Utc>, uri: &str) -> (u16, String) {
    let text = format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>2</MsgID><Target><LocURI>{}</LocURI></Target><Source><LocURI>https://mdm.example/MDM.svc</LocURI></Source></SyncHdr><SyncBody><Get><CmdID>2</CmdID><Item><Target><LocURI>{uri}</LocURI></Target></Item></Get><Final/></SyncBody></SyncML>"#,
        device.id
    );
    let msg = syncml::decode(&text).expect("the Get decodes");
    let registry = mdmsim::csp::registry();
    let env = device.env(now);
    let out = Tree::new(&registry, &mut device.tree, &env).execute(&msg.body.commands[0]);
    let value = out[0].results.first().and_then(|i| i.data.clone()).unwrap_or_default();
    (out[0].code.code(), value)
}

#[test]
fn identity_values_land_in_the_devices_tree_where_a_server_reads_them() {
    let mix = office();
    let now = t("2026-03-10T12:00:00Z");
    let mut checked = 0;
    for i in 0..40 {
        let (id, template, profile) = mix.device(5, i);
        let name = &mix.templates[mix.pick(5, i).1].name;
        let mut device = Device::new(id.device_id.clone(), profile, "https://mdm.example/MDM.svc", "P", &template, now);
        let mut value = |uri: &str| {
            let (code, v) = get(&mut device, now, uri);
            assert_eq!(code, 200, "{name}: Get {uri}");
            v
        };
        let hw = id.hardware.expect("the office mix draws hardware");
        assert_eq!(value("./DevInfo/DevId"), id.device_id.as_str());
        assert_eq!(value("./DevInfo/Man"), hw.manufacturer);
        assert_eq!(value("./DevInfo/Mod"), hw.model);
        assert_eq!(value("./DevDetail/OEM"), hw.manufacturer);
        assert_eq!(value("./DevDetail/DevTyp"), hw.family);
        assert_eq!(value("./DevDetail/FwV"), hw.firmware);
        assert_eq!(value("./DevDetail/SwV"), id.os_build.clone().expect("a known build"));
        assert_eq!(value("./DevDetail/Ext/Microsoft/DeviceName"), id.hostname);
        assert_eq!(value("./DevDetail/Ext/Microsoft/DNSComputerName"), id.hostname);
        assert_eq!(value("./DevDetail/Ext/Microsoft/SMBIOSSerialNumber"), id.serial);
        assert_eq!(value("./DevDetail/Ext/WLANMACAddress"), id.mac_hex());
        // LocalTime is given with the zone's standard offset (March 10: before daylight-saving
        // time in Europe, after it in New York).
        let local = value("./DevDetail/Ext/Microsoft/LocalTime");
        let offset = DateTime::parse_from_rfc3339(&local).expect("RFC 3339").offset().local_minus_utc() / 60;
        assert_eq!(i64::from(offset), id.standard_offset_minutes(), "{local} in {}", id.timezone);
        // The template's other values and the identity's apps are there too.
        assert!(value("./DevDetail/Ext/Microsoft/TotalRAM").parse::<u64>().is_ok());
        let inventory = "./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Inventory";
        for app in id.fleet_apps() {
            let encoded = app.product_id.replace('{', "%7B").replace('}', "%7D");
            assert_eq!(value(&format!("{inventory}/{encoded}/Title")), app.title, "{name}");
        }
        // The device's schedule runs in its own time zone.
        let cfg = SchedulerConfig::from_settings(profile, &device.settings, now, 1).expect("a schedule");
        assert_eq!(cfg.nightly.zone(), Zone::Named(id.timezone));
        checked += 1;
    }
    assert_eq!(checked, 40);
}

/// The local weekday (0 Monday) and hour of an instant in `tz`.
fn local(t: DateTime<Utc>, tz: Tz) -> (u32, u32) {
    let l = t.with_timezone(&tz);
    (l.weekday().num_days_from_monday(), l.hour())
}

#[test]
fn a_week_of_two_thousand_devices_has_the_shape_of_an_office() {
    let mix = Mix::builtin();
    let model = mix.model.clone().starting(t(WEEK));
    let ids: Vec<Identity> = (0..2000).map(|i| mix.identity(21, i)).collect();
    let (from, to) = (t(WEEK), t(WEEK) + Duration::days(7));
    let s = shape(&model, 21, &ids, from, to);
    let logons =
        |day: usize, hours: std::ops::Range<usize>| -> u32 { hours.map(|h| s.local_week[day * 24 + h].logons).sum() };
    let all = |day: usize| -> u32 { (0..24).map(|h| s.local_week[day * 24 + h].total()).sum() };
    // Weekday mornings against weekday nights, in each device's own time.
    for d in 0..5 {
        let (morning, night) = (logons(d, 8..10), logons(d, 2..4));
        assert!(morning > 400 && morning > 50 * night.max(1), "day {d}: {morning} logons 08-10, {night} at 02-04");
    }
    // Saturday is quiet.
    assert!(all(5) * 10 < all(1), "Saturday {} events, Tuesday {}", all(5), all(1));
    assert!(logons(5, 0..24) > 0, "some weekend activity");
    // Patch Tuesday (March 10): desktops restart in the following nights, laptops as they wake.
    let reboots = |d: usize| -> u32 { (0..24).map(|h| s.local_week[d * 24 + h].reboots).sum() };
    let (monday, after) = (reboots(0), reboots(2) + reboots(3));
    assert!(after > 600 && after > 4 * monday, "{after} restarts on Wednesday and Thursday, {monday} on Monday");
    let night: u32 = (2..5).map(|h| s.local_week[2 * 24 + h].reboots).sum();
    assert!(night > 150, "{night} desktops restart in the night after the update");
    // Never back: the knob's share (2%, σ 0.3%) leaves during the week, for good.
    let share = f64::from(s.gone) / 2000.0;
    assert!((0.01..0.03).contains(&share), "{} of 2000 never came back", s.gone);
    let mut gone = 0;
    for id in &ids {
        if let Some(g) = gone_at(&model, id, 21) {
            gone += 1;
            let ev = events(&model, id, 21, from, to + Duration::days(30));
            let last = ev.last().expect("events before it left");
            assert_eq!(last, &(g, Event::NetworkOff), "device {} leaves offline", id.index);
            assert!(ev.iter().all(|(t, _)| *t <= g));
        }
    }
    assert_eq!(gone, s.gone);
    // A larger knob gives a larger share.
    let many = Model { never_back: 0.2, ..model.clone() };
    let left = ids.iter().filter(|id| gone_at(&many, id, 21).is_some()).count();
    assert!((340..460).contains(&left), "{left} of 2000 at 20%");
    // The UTC shape has one morning peak per time zone: the busiest UTC hour for the logons of
    // each zone is its local morning.
    let mut per_zone: BTreeMap<&str, BTreeMap<u32, u32>> = BTreeMap::new();
    for id in &ids {
        for (at, e) in events(&model, id, 21, from, from + Duration::days(5)) {
            if matches!(e, Event::Logon { .. }) {
                *per_zone.entry(id.timezone.name()).or_default().entry(at.hour()).or_default() += 1;
            }
        }
    }
    let mut peaks = Vec::new();
    for zone in ["America/New_York", "Europe/London", "Asia/Kolkata", "Asia/Tokyo"] {
        let hours = &per_zone[zone];
        let (peak, _) = hours.iter().max_by_key(|(_, n)| **n).expect("logons");
        let tz: Tz = zone.parse().expect("a zone");
        let local_hour = local(from.with_hour(*peak).expect("an hour") + Duration::days(2), tz).1;
        assert!((7..=9).contains(&local_hour), "{zone}: UTC peak {peak}:00 is {local_hour}:00 local");
        peaks.push(*peak);
    }
    peaks.dedup();
    assert_eq!(peaks.len(), 4, "distinct UTC peaks {peaks:?}");
    // Not flat in UTC either.
    let busiest = s.hours.iter().map(|(_, c)| c.total()).max().unwrap_or(0);
    let quietest = s.hours.iter().map(|(_, c)| c.total()).min().unwrap_or(0);
    assert!(busiest > 5 * quietest.max(1), "UTC hours from {quietest} to {busiest} events");
}

#[test]
fn a_device_lives_its_days_through_its_scheduler() {
    let mix = office();
    let model = mix.model.clone().starting(t(WEEK));
    let mut nightly_missed = 0;
    let mut logon_sessions = 0;
    for i in 0..30 {
        let (id, template, profile) = mix.device(3, i);
        let cfg = SchedulerConfig::from_settings(profile, &template.behaviour, t(WEEK), i).expect("config");
        let mut sched = Scheduler::new(cfg, None, UserState::enrolled_active(), t(WEEK));
        let mut actions = Vec::new();
        let mut fed = Vec::new();
        for d in 0..7 {
            // The runner: at each day boundary, that day's events and nothing else.
            let start = t(WEEK) + Duration::days(d);
            let today = day(&model, &id, 3, start);
            fed.extend(today.iter().cloned());
            sched.script(today);
            actions.extend(sched.on_deadline(start + Duration::days(1) - Duration::seconds(1)));
        }
        // Offline intervals of the device, from its own events.
        let mut offline = Vec::new();
        let mut since = None;
        for (at, e) in &fed {
            match e {
                Event::NetworkOff => since = since.or(Some(*at)),
                Event::NetworkOn => offline.extend(since.take().map(|s| (s, *at))),
                _ => {}
            }
        }
        offline.extend(since.map(|s| (s, t(WEEK) + Duration::days(8))));
        for a in &actions {
            match a {
                Action::Missed { at, trigger, .. } => {
                    assert!(id.laptop || gone_at(&model, &id, 3).is_some(), "desktops stay online: {a}");
                    assert!(offline.iter().any(|(s, e)| s <= at && at < e), "missed while online: {a}");
                    if *trigger == Trigger::Nightly {
                        nightly_missed += 1;
                    }
                }
                Action::Session(r) if r.trigger == Trigger::Logon => {
                    logon_sessions += 1;
                    let (_, hour) = local(r.at, id.timezone);
                    assert!(
                        (4..=12).contains(&hour) || !model.is_workday(r.at.with_timezone(&id.timezone).date_naive()),
                        "{a}"
                    );
                }
                _ => {}
            }
        }
    }
    assert!(nightly_missed > 20, "sleeping laptops miss their nightly maintenance: {nightly_missed}");
    assert!(logon_sessions > 30, "{logon_sessions} logon sessions");
}

/// Writes `files` into a new directory and loads `mix.toml` from it.
fn load_in(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Mix, MixError>) {
    let dir = tempfile::tempdir().expect("a temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let result = mix::load(&dir.path().join("mix.toml"));
    (dir, result)
}

const LAPTOP: &str = "profile = \"win10\"\n[devinfo]\nMan = \"LENOVO\"\n";

#[test]
fn each_bad_mix_is_refused_with_its_place() {
    let good_template = ("laptop.toml", LAPTOP);
    let cases: &[BadMix<'_>] = &[
        (
            "[[template]]\npath = \"laptop.toml\"\nwieght = 100\n",
            &[good_template],
            "mix.toml:3:1: unknown key `wieght` in [[template]] #1 (did you mean `weight`?); known keys: path, weight, laptop, name, hardware",
        ),
        (
            "[[template]]\npath = \"laptop.toml\"\nweight = 100\n[behaviour]\nweekend_activty = 0.1\n",
            &[good_template],
            "mix.toml:5:1: unknown key `weekend_activty` in [behaviour] (did you mean `weekend_activity`?); known keys: workdays, ",
        ),
        (
            "[[template]]\npath = \"laptop.toml\"\nweight = 100\n[[template]]\npath = \"laptop.toml\"\nweight = -5\n",
            &[good_template],
            "mix.toml:6:10: `weight` in [[template]] #2: expected a positive number (a percentage of the fleet), found -5",
        ),
        (
            "[[template]]\npath = \"laptop.toml\"\nweight = \"70\"\n",
            &[good_template],
            "mix.toml:3:10: `weight` in [[template]] #1: expected a positive number (a percentage of the fleet), found \"70\"",
        ),
        (
            "[[template]]\npath = \"laptop.toml\"\nweight = 70\n\n[[template]]\npath = \"win10-desktop\"\nweight = 20\n",
            &[good_template],
            "mix.toml:3:10: the [[template]] weights sum to 90, expected 100 (each weight is the template's percentage of the fleet)",
        ),
        (
            "[[template]]\npath = \"win10-desktop\"\nweight = 50\n[[template]]\npath = \"gone.toml\"\nweight = 50\n",
            &[],
            "mix.toml:5:8: `path` in [[template]] #2: cannot read DIR/gone.toml: No such file or directory (os error 2)",
        ),
        (
            "[[template]]\npath = \"laptop.toml\"\nweight = 100\n[identity]\ntimezones = { \"Europe/Berlin\" = 50, \"America/New_Yrok\" = 50 }\n",
            &[good_template],
            "mix.toml:5:37: unknown time zone `America/New_Yrok` in [identity] timezones (did you mean `America/New_York`?): expected an IANA time zone name such as \"Europe/Paris\"",
        ),
        (
            "[[template]]\npath = \"laptop.toml\"\nweight = 100\n[identity]\ntimezones = { \"Europe/Berlin\" = 50, \"Asia/Tokyo\" = 45 }\n",
            &[good_template],
            "mix.toml:5:13: the [identity] timezones weights sum to 95, expected 100 (each weight is a percentage of the fleet)",
        ),
        (
            "# a mix\n[[template]]\npath = \"bad.toml\"\nweight = 100\n",
            &[("bad.toml", "profile = \"win10\"\n[behaviour]\njittr = false\n")],
            "mix.toml:3:8: `path` in [[template]] #1: DIR/bad.toml:3:1: unknown key `jittr` in [behaviour] (did you mean `jitter`?); known keys: timezone, ",
        ),
        (
            "[[template]]\npath = \"broken.toml\"\nweight = 100\n",
            &[("broken.toml", "[devinfo\nMan = 1\n")],
            "mix.toml:2:8: `path` in [[template]] #1: DIR/broken.toml:1:",
        ),
        ("[[template]\n", &[], "mix.toml:1:"),
    ];
    for (text, others, want) in cases {
        let mut files = vec![("mix.toml", *text)];
        files.extend_from_slice(others);
        let (dir, result) = load_in(&files);
        let e = result.map(|_| ()).expect_err(text).to_string();
        let d = dir.path().display().to_string();
        let want = format!("{d}/{}", want.replace("DIR", &d));
        assert!(e.starts_with(&want), "{text}\n{e:?}\nshould start with\n{want:?}");
        assert_eq!(e.lines().count(), 1, "one line: {e:?}");
    }
    // A mix that cannot be read says so.
    let e = mix::load(Path::new("/nonexistent/mix.toml")).expect_err("no file").to_string();
    assert!(e.starts_with("/nonexistent/mix.toml: "), "{e}");
}

#[test]
fn the_shipped_mixes_load_and_the_docs_name_every_key() {
    let mix = office();
    assert_eq!(mix.templates.iter().map(|t| t.weight).sum::<f64>(), 100.0);
    assert_eq!(mix.population.timezones.len(), 3);
    assert_eq!(mix.templates[1].name, "win11-23h2-laptop");
    let front = mix::load(&root().join("fixtures/fleet/frontline-mix.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(front.model.workdays[5] && !front.model.workdays[6], "six days a week");
    assert_eq!(front.model.weekly_restart, 1.0);
    assert!(!front.population.apps);
    // The laptops keep their template's hardware; the desktops draw theirs.
    for i in 0..50 {
        let (id, template, _) = front.device(1, i);
        if id.laptop {
            assert!(id.hardware.is_none());
            assert_eq!(template.devinfo["Man"], "LENOVO");
        } else {
            assert!(id.hardware.is_some());
        }
        assert_eq!(id.apps, 0);
        assert!(id.upn.ends_with("@fabrikam.com"), "{}", id.upn);
    }
    let docs = std::fs::read_to_string(root().join("docs/fleet-model.md")).expect("docs/fleet-model.md");
    for k in KNOBS {
        assert!(docs.contains(&format!("`{}`", k.name)), "docs/fleet-model.md does not name `{}`", k.name);
        assert!(docs.contains(k.default), "docs/fleet-model.md does not give the default of `{}`", k.name);
    }
    for key in ["path", "weight", "laptop", "name", "hardware", "domain", "timezones", "apps"] {
        assert!(docs.contains(&format!("`{key}`")), "docs/fleet-model.md does not name `{key}`");
    }
}
