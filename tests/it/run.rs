//! `mdmsim run`: a device living on its schedule against the embedded reference server (plain
//! HTTP on 127.0.0.1), on the virtual clock — the modes the operation modes post predicts for each trigger, the
//! DMClient poll timetable, scripted events, and the same seed giving the same timeline.

use std::path::Path;

use serde_json::Value;

use crate::support::mdmsim;
use crate::support::refserver::RefServer;

fn new_device(state: &Path, server: &str, profile: &str) -> String {
    new_device_seeded(state, server, profile, "7")
}

/// A device whose id comes from `seed` (the server keeps per-device state: a second device
/// with the same id would find its settings already applied).
fn new_device_seeded(state: &Path, server: &str, profile: &str, seed: &str) -> String {
    let (code, out, err) = mdmsim(&[
        "device",
        "new",
        "--state",
        &state.to_string_lossy(),
        "--server",
        server,
        "--profile",
        profile,
        "--provider-id",
        "mdmsim",
        "--seed",
        seed,
    ]);
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

/// One session of a run: (time, trigger, mode, session alert).
type Line = (String, String, String, u64);

/// Runs `mdmsim run --json` and returns the exit code, the sessions and the whole output.
fn run_json(state: &Path, extra: &[&str]) -> (i32, Vec<Line>, Value) {
    let state = state.to_string_lossy();
    let mut args = vec!["run", "--state", &state, "--clock", "virtual", "--start", "2026-03-02T08:00:00Z", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = mdmsim(&args);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let sessions = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "session")
        .map(|r| {
            let s = &r["summary"];
            (
                r["at"].as_str().unwrap().to_string(),
                s["trigger"].as_str().unwrap().to_string(),
                s["mode"].as_str().unwrap().to_string(),
                s["alert"].as_u64().unwrap(),
            )
        })
        .collect();
    (code, sessions, v)
}

#[test]
fn a_week_of_a_device_polls_on_the_servers_schedule_and_syncs_every_night() {
    let server = RefServer::start();
    let dir = tempfile::tempdir().unwrap();
    let id = new_device(dir.path(), &server.management_url(), "win10");
    let (code, sessions, v) = run_json(dir.path(), &["--until", "7d"]);
    assert_eq!(code, 0, "{v}");
    // The post-enrollment session first, at the start.
    assert_eq!(sessions[0], ("2026-03-02T08:00:00Z".into(), "enrollment".into(), "Maintenance".into(), 1201));
    // The reference server's schedule (15 min x8, 60 min x5, then every 1440 min): 13 polls on
    // day one, then one a day; the first polls 15 minutes apart, give or take the jitter.
    let polls: Vec<&String> = sessions.iter().filter(|s| s.1 == "poll").map(|s| &s.0).collect();
    assert_eq!(polls.len(), 13 + 6, "{sessions:?}");
    assert!(polls[0].starts_with("2026-03-02T08:15"), "{polls:?}");
    assert!(polls[1].starts_with("2026-03-02T08:30"), "{polls:?}");
    // Nightly maintenance at 02:00 (UTC template) with the user logged on: Maintenance.
    let nights: Vec<_> = sessions.iter().filter(|s| s.1 == "nightly").collect();
    assert_eq!(nights.len(), 7);
    assert!(nights.iter().all(|s| s.0.contains("T02:0") && s.2 == "Maintenance"), "{nights:?}");
    // The server saw every session, and the device installed the configured app.
    let record = server.handle.device(&id).expect("the server knows the device");
    assert_eq!(record.checkins.len(), sessions.len());
    assert_eq!(v["summary"]["failed"], 0);
    let (_, status, _) = mdmsim(&[
        "tree",
        "--state",
        &dir.path().to_string_lossy(),
        "./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/Status",
    ]);
    assert!(status.trim_end().ends_with(" 5"), "{status}");
}

#[test]
fn events_pick_the_modes_the_operation_modes_post_gives_each_trigger() {
    let server = RefServer::start();
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.management_url(), "win10");
    let events = dir.path().join("events.toml");
    std::fs::write(
        &events,
        r#"
[[event]]
at = "+1h"
kind = "reboot"

[[event]]
at = "+2h"
kind = "logon"
user = "enrolled"

[[event]]
at = "+3h"
kind = "push"

[[event]]
at = "+4h"
kind = "logoff"

[[event]]
at = "+5h"
kind = "sync"
"#,
    )
    .unwrap();
    let (code, sessions, v) = run_json(dir.path(), &["--until", "20h", "--events", &events.to_string_lossy()]);
    assert_eq!(code, 0, "{v}");
    let by_trigger =
        |t: &str| sessions.iter().find(|s| s.1 == t).cloned().unwrap_or_else(|| panic!("{t}: {sessions:?}"));
    assert_eq!(by_trigger("reboot").2, "Machine");
    assert!(by_trigger("reboot").0.starts_with("2026-03-02T09:0"));
    assert_eq!(by_trigger("logon").2, "Maintenance");
    // win10: a push starts a server-initiated session.
    assert_eq!((by_trigger("push").2.as_str(), by_trigger("push").3), ("Maintenance", 1200));
    // The enrolled user logged off before the manual sync and the night: Machine mode.
    assert_eq!(by_trigger("manual").2, "Machine");
    assert_eq!(by_trigger("nightly").2, "Machine");
    // Polls between the reboot and the logon ran with nobody logged on.
    assert!(sessions.iter().any(|s| s.1 == "poll" && s.2 == "Machine" && s.0.as_str() < "2026-03-02T10:00"));
    assert_eq!(v["summary"]["findings"], 0, "the reference server sends nothing forbidden in Machine mode");
}

#[test]
fn push_on_win81_runs_in_apps_mode() {
    let server = RefServer::start();
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.management_url(), "win81");
    let events = dir.path().join("events.toml");
    std::fs::write(&events, "[[event]]\nat = \"+30m\"\nkind = \"push\"\n").unwrap();
    let (code, sessions, v) = run_json(dir.path(), &["--until", "1h", "--events", &events.to_string_lossy()]);
    assert_eq!(code, 0, "{v}");
    let push = sessions.iter().find(|s| s.1 == "push").expect("a push session");
    assert_eq!((push.2.as_str(), push.3), ("Apps", 1201));
}

#[test]
fn the_same_seed_gives_the_same_timeline() {
    let server = RefServer::start();
    let mut devices = 0;
    let mut timeline = |seed: &str| {
        let dir = tempfile::tempdir().unwrap();
        devices += 1;
        new_device_seeded(dir.path(), &server.management_url(), "win10", &devices.to_string());
        let (code, sessions, _) = run_json(dir.path(), &["--until", "3d", "--seed", seed]);
        assert_eq!(code, 0);
        sessions
    };
    let a = timeline("42");
    assert_eq!(a, timeline("42"));
    assert_ne!(a, timeline("43"), "another seed draws other jitter");
}

#[test]
fn a_bad_events_file_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), "http://127.0.0.1:9/MDM.svc", "win10");
    let events = dir.path().join("bad.toml");
    std::fs::write(&events, "[[event]]\nat = \"+1h\"\nkind = \"explode\"\n").unwrap();
    let (code, _, err) = mdmsim(&[
        "run",
        "--state",
        &dir.path().to_string_lossy(),
        "--clock",
        "virtual",
        "--events",
        &events.to_string_lossy(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.toml:3:"), "{err}");
    assert!(err.contains("explode"), "{err}");
}

/// A server that breaks the Machine-mode rule: after a reboot it sends the WNS configuration
/// (Push/PFN) and a poll setting. Without `--strict` the device records both as findings, fails
/// the WNS configuration (it needs the enrolled user) and applies the poll value; with
/// `--strict` it refuses both with 405.
#[test]
fn machine_mode_commands_outside_the_allowed_set_are_findings_and_strict_refuses_them() {
    use mdmsim::syncml::{Command, Item, ItemCmd};

    use crate::support::server::{Reply, Server, msg};

    let replace = |id: &str, uri: &str, data: &str| {
        Command::Replace(ItemCmd {
            cmd_id: id.into(),
            items: vec![Item { target: Some(uri.into()), data: Some(data.into()), ..Item::default() }],
            ..ItemCmd::default()
        })
    };
    let provider = "./Vendor/MSFT/DMClient/Provider/MS%20DM%20Server";
    for (strict, pfn_status, poll_status) in [(false, "500", "200"), (true, "405", "405")] {
        let server = Server::start(vec![
            Reply::Syncml(msg(vec![
                replace("w1", &format!("{provider}/Push/PFN"), "Contoso.App_8wekyb3d8bbwe"),
                replace("p1", &format!("{provider}/Poll/IntervalForFirstSetOfRetries"), "5"),
            ])),
            Reply::Empty,
        ]);
        let dir = tempfile::tempdir().unwrap();
        crate::support::new_device(dir.path(), &server.url, 3);
        let state = dir.path().to_string_lossy();
        let mut args = vec!["sync", "--state", &state, "--trigger", "reboot", "--json"];
        if strict {
            args.push("--strict");
        }
        let (code, out, err) = mdmsim(&args);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["mode"], "Machine");
        let status_of = |id: &str| {
            v["commands"].as_array().unwrap().iter().find(|c| c["cmd_id"] == id).map(|c| c["status"].to_string())
        };
        assert_eq!(status_of("w1").as_deref(), Some(pfn_status), "strict={strict}: {v}");
        assert_eq!(status_of("p1").as_deref(), Some(poll_status), "strict={strict}: {v}");
        let findings = v["findings"].as_array().unwrap();
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert!(findings.iter().any(|f| f["what"] == "machine-mode-wns-configuration"), "{findings:?}");
        assert!(findings.iter().all(|f| f["why"].as_str().unwrap().contains("Machine mode")), "{findings:?}");
    }
}
