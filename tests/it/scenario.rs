//! Scenario files: `mdmsim scenario check` on broken files, every shipped scenario checks, the
//! device-side expectations of the shipped files hold on the devices they describe, and every
//! shipped scenario runs green against the embedded reference server (with JUnit output); a
//! scenario whose expectation does not hold exits 1 and says what was seen instead.

use std::path::{Path, PathBuf};

use mdmsim::scenario::{self, Built, Check, DeviceRun, Observed, ScenarioError, evaluate};

use super::support::mdmsim;

const GOOD: &str = r#"[scenario]
name = "good"

[[device]]
template = "win11-laptop"

[clock]
start = 2026-03-02T08:00:00Z
until = "12h"

[[event]]
at = "+1h"
kind = "reboot"

[[expect]]
kind = "session"
at = "+1h"
trigger = "reboot"
mode = "Machine"
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn check_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "good.toml", GOOD);
    let (code, out, err) = mdmsim(&["scenario", "check", &f]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (\"good\": 1 device(s), 1 event(s), 1 expectation(s))"), "{out}");
}

#[test]
fn check_names_file_line_and_column_of_every_mistake() {
    let dir = tempfile::tempdir().unwrap();
    // (file name, text, expected line:column, words the message must hold)
    let cases: &[(&str, String, &str, &[&str])] = &[
        ("syntax.toml", GOOD.replace("[[event]]", "[[event]"), "11:9", &["expected `]`"]),
        (
            "unknown-key.toml",
            GOOD.replace("kind = \"reboot\"", "kind = \"reboot\"\ncolor = 1"),
            "14:1",
            &["unknown field `color`"],
        ),
        ("wrong-type.toml", GOOD.replace("name = \"good\"", "name = 42"), "2:8", &["string"]),
        (
            "bad-duration.toml",
            GOOD.replace("until = \"12h\"", "until = \"12 hours\""),
            "9:9",
            &["expected a duration", "\"12 hours\""],
        ),
        (
            "bad-kind.toml",
            GOOD.replace("kind = \"reboot\"", "kind = \"restart\""),
            "13:8",
            &["expected one of reboot", "\"restart\""],
        ),
        (
            "bad-trigger.toml",
            GOOD.replace("trigger = \"reboot\"", "trigger = \"boot\""),
            "18:11",
            &["expected enrollment | reboot", "\"boot\""],
        ),
        (
            "bad-mode.toml",
            GOOD.replace("mode = \"Machine\"", "mode = \"Night\""),
            "19:8",
            &["Machine, Maintenance or Apps"],
        ),
        (
            "bad-glob.toml",
            format!("{GOOD}\n[[expect]]\nkind = \"command\"\ntarget = \"./a//b\"\n"),
            "23:10",
            &["empty segment"],
        ),
    ];
    let mut files = Vec::new();
    for (name, text, place, words) in cases {
        let f = write(dir.path(), name, text);
        let (code, out, err) = mdmsim(&["scenario", "check", &f]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        let line = err.lines().next().unwrap_or_default();
        assert!(line.starts_with(&format!("{f}:{place}: ")), "{name}: {err}");
        for w in *words {
            assert!(line.contains(w), "{name}: {w:?} not in {line}");
        }
        files.push(f);
    }
    // Several files: every broken one is reported, the good one too, and the exit is 2.
    let good = write(dir.path(), "good.toml", GOOD);
    let mut args = vec!["scenario", "check", good.as_str()];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 2);
    assert!(out.contains("good.toml: ok"), "{out}");
    assert_eq!(err.lines().count(), cases.len(), "{err}");
}

#[test]
fn a_preset_value_the_device_refuses_is_a_check_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = "./Vendor/MSFT/DMClient/Provider/MS%20DM%20Server/Poll";
    let text = GOOD.replace(
        "[clock]",
        &format!(
            "[device.nodes]\n\"{p}/IntervalForFirstSetOfRetries\" = \"0\"\n\"{p}/NumberOfFirstRetries\" = \"0\"\n\n[clock]"
        ),
    );
    let f = write(dir.path(), "all-zero.toml", &text);
    let (code, _, err) = mdmsim(&["scenario", "check", &f]);
    assert_eq!(code, 2, "{err}");
    // The seed: all six values 0 is a configuration failure (the device answers 500).
    assert!(
        err.starts_with(&format!("{f}:9:1: `nodes`: {p}/NumberOfFirstRetries = \"0\": the device answers 500")),
        "{err}"
    );
}

/// Reads a scenario file as the binary does (templates relative to it).
fn load(path: &Path) -> Result<Built, ScenarioError> {
    let text = std::fs::read_to_string(path).unwrap();
    let dir = path.parent().unwrap().to_path_buf();
    scenario::check_text(&text, &path.display().to_string(), &move |rel| {
        std::fs::read_to_string(dir.join(rel)).map_err(|e| e.to_string())
    })
}

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_scenario_checks() {
    let files = shipped();
    assert!(files.len() >= 10, "{files:?}");
    for f in &files {
        let b = load(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!b.expectations.is_empty(), "{}", f.display());
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut args = vec!["scenario", "check"];
    args.extend(names.iter().map(String::as_str));
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), files.len(), "{out}");
}

/// The node expectations of the shipped files that do not depend on the server (the preset
/// poll schedules and FirstSyncStatus) hold on the devices as the run starts: the values read
/// back through the CSPs are the seed tables' right-hand column.
#[test]
fn shipped_node_expectations_hold_on_the_preset_devices() {
    let mut checked = 0;
    for f in shipped() {
        let b = load(&f).unwrap();
        if b.devices.iter().all(|g| g.nodes.is_empty()) {
            continue;
        }
        let start = b.clock.start;
        let devices: Vec<DeviceRun> = b
            .devices
            .iter()
            .flat_map(|g| (0..g.ids.len()).map(move |i| (g, i)))
            .map(|(g, i)| {
                let dev = g.device(i, "https://mdm.test/", start).unwrap();
                DeviceRun::new(&dev, start)
            })
            .collect();
        let results = evaluate(&b, &Observed { devices });
        for (x, r) in b.expectations.iter().zip(&results) {
            if matches!(x.check, Check::Node { .. }) {
                assert!(r.passed(), "{} {}: {:?}", r.place, r.title, r.failure);
                checked += 1;
            }
        }
    }
    // Four poll tables x 6 values, plus the FirstSyncStatus values.
    assert!(checked >= 28, "{checked}");
}

#[test]
fn the_two_infinite_table_reads_back_corrected() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/poll-two-infinite.toml");
    let b = load(&f).unwrap();
    let g = &b.devices[0];
    // Written as the server would (1440 for the third set) ...
    assert!(g.nodes.iter().any(|(u, v)| u.ends_with("IntervalForRemainingScheduledRetries") && v == "1440"));
    // ... and the file expects the device to read it back as 0 (the seed's correction).
    assert!(b.expectations.iter().any(|x| matches!(&x.check,
        Check::Node { node, check: scenario::NodeCheck::Equals(v) }
            if node.as_str().ends_with("IntervalForRemainingScheduledRetries") && v == "0")));
}

#[test]
fn run_refuses_files_that_do_not_check_before_contacting_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", GOOD);
    let bad = write(dir.path(), "bad.toml", &GOOD.replace("kind = \"reboot\"", "kind = \"restart\""));
    // Port 9 on loopback: nothing may be sent there, the files are refused first.
    let (code, out, err) = mdmsim(&["scenario", "run", &good, &bad, "--server", "http://127.0.0.1:9/"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.starts_with(&format!("{bad}:13:8: ")), "{err}");
    assert!(err.contains("nothing was run"), "{err}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn a_run_that_cannot_finish_still_writes_junit_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", GOOD);
    let junit = dir.path().join("junit.xml");
    // Nothing listens on 127.0.0.1:9: the server is unreachable (exit 3), which is neither a
    // pass nor an expectation failure.
    let (code, out, err) =
        mdmsim(&["scenario", "run", &good, "--server", "http://127.0.0.1:9/", "--junit", junit.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.starts_with(&format!("ERROR {good} (good): ")), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut errors = 0;
    loop {
        match reader.read_event().expect("well-formed JUnit XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) if e.name().as_ref() == "error" => errors += 1,
            _ => {}
        }
    }
    assert_eq!(errors, 1, "{xml}");
    assert!(xml.contains("<testsuite name=\"good\""), "{xml}");
}

#[test]
fn every_shipped_scenario_runs_green_against_the_reference_server() {
    let server = super::support::refserver::RefServer::start();
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let files: Vec<String> = shipped().iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let mut args = vec!["scenario", "run"];
    args.extend(files.iter().map(String::as_str));
    let base = server.base_url();
    let junit_arg = junit.to_string_lossy().into_owned();
    args.extend(["--server", &base, "--junit", &junit_arg]);
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("FAIL"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), files.len(), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn shipped_scenarios_run_with_enrolled_devices_against_the_default_https_server() {
    let server = super::support::refserver::RefServer::start_https();
    let ca = server.ca_file();
    let files: Vec<String> = shipped().iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let mut args = vec!["scenario", "run"];
    args.extend(files.iter().map(String::as_str));
    let base = server.base_url();
    let ca = ca.to_string_lossy().into_owned();
    args.extend(["--server", &base, "--ca-cert", &ca, "--email", "demo@mdmsim.test", "--password", "demo", "--json"]);
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    // Every device enrolled and was trusted by its client certificate.
    let records = server.handle.devices();
    assert!(records.len() >= files.len(), "{} devices", records.len());
    assert!(records.iter().all(|d| d.enrollment.is_some()), "every device enrolled");
}

#[test]
fn a_failing_expectation_exits_1_and_says_what_was_seen_and_where() {
    let server = super::support::refserver::RefServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.toml");
    std::fs::write(
        &file,
        r#"[scenario]
name = "a reboot expected in Maintenance mode (wrong on purpose)"

[[device]]
template = "win10-desktop"
id_prefix = "F0"
[device.behaviour]
jitter = false

[clock]
start = 2026-03-02T08:00:00Z
until = "2h"

[[event]]
at = "+10m"
kind = "reboot"

[[expect]]
kind = "session"
name = "reboot in Maintenance"
at = "+10m"
trigger = "reboot"
mode = "Maintenance"
count = 1
"#,
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let (code, out, err) = mdmsim(&[
        "scenario",
        "run",
        &file.to_string_lossy(),
        "--server",
        &server.base_url(),
        "--junit",
        &junit.to_string_lossy(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("wrong.toml:18"), "the failing [[expect]] is named by file and line: {out}");
    assert!(out.contains("Machine"), "what was seen instead: {out}");
    assert!(std::fs::read_to_string(&junit).unwrap().contains("<failure"));
}
