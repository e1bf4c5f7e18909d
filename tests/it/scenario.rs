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
    // The DMClient CSP page: all six values 0 is a configuration failure (the device answers 500).
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

/// The node expectations of the shipped files about the devices' own behaviour (FirstSyncStatus
/// values, a poll schedule without an infinite set, the third set a device disables when the
/// second is infinite) hold on the preset devices as the run starts: the values read back
/// through the CSPs, as the DMClient CSP page describes them.
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
    // FirstSyncStatus x4, the poll schedule without an infinite set, the corrected third set.
    assert!(checked >= 6, "{checked}");
}

/// Every shipped scenario says something about the server: at least one expectation of a kind
/// only a server can satisfy (it sends, sets, delivers or installs something).
#[test]
fn every_shipped_scenario_expects_something_of_the_server() {
    for f in shipped() {
        let b = load(&f).unwrap();
        let about_server = b.expectations.iter().any(|x| match &x.check {
            Check::Command { sent, .. } => *sent,
            Check::Set { .. } | Check::Profile { .. } | Check::Install { .. } => true,
            _ => false,
        });
        assert!(about_server, "{} checks nothing the server must do", f.display());
    }
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

/// The reference server in-process with the demo's configuration (the default plus one
/// configuration profile and one MSI install: `mdmsim server --config fixtures/server/demo.toml`),
/// on HTTPS as `mdmsim server` runs, or on plain HTTP trusting the DeviceID as sent.
struct Reference {
    handle: mdmsim::server::ServerHandle,
    dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Reference {
    fn start(https: bool, compat: Option<mdmsim::server::Preset>) -> Reference {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut opts = mdmsim::server::ServerOptions::local(dir.path().join("server"));
        opts.http = !https;
        let mut config = mdmsim::server::Config::demo();
        if !https {
            config.management.auth = mdmsim::server::AuthMode::None;
        }
        if let Some(p) = compat {
            config.compat.preset = p;
        }
        opts.config = config;
        let handle = rt.block_on(mdmsim::server::start(opts)).unwrap();
        Reference { handle, dir, _rt: rt }
    }

    fn ca_file(&self) -> String {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, self.handle.ca_pem()).unwrap();
        path.to_string_lossy().into_owned()
    }
}

/// A server that does nothing: every request, whatever it is, gets an empty HTTP 200.
struct DoNothing {
    url: String,
    _rt: tokio::runtime::Runtime,
}

impl DoNothing {
    fn start() -> DoNothing {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
        rt.spawn(async move { axum::serve(listener, app).await });
        DoNothing { url, _rt: rt }
    }
}

fn shipped_args() -> Vec<String> {
    shipped().iter().map(|p| p.to_string_lossy().into_owned()).collect()
}

#[test]
fn every_shipped_scenario_passes_against_the_reference_server_with_enrolled_devices() {
    let server = Reference::start(true, None);
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml").to_string_lossy().into_owned();
    let files = shipped_args();
    let mut args = vec!["scenario", "run"];
    args.extend(files.iter().map(String::as_str));
    let (base, ca) = (server.handle.base_url.clone(), server.ca_file());
    args.extend(["--server", &base, "--ca-cert", &ca, "--email", "demo@mdmsim.test", "--password", "demo"]);
    args.extend(["--junit", &junit]);
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("PASS ")).count(), files.len(), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), files.len(), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    // Every device enrolled over HTTPS and was trusted by its client certificate.
    let records = server.handle.devices();
    assert!(records.len() >= files.len(), "{} devices", records.len());
    assert!(records.iter().all(|d| d.enrollment.is_some()), "every device enrolled");
}

/// A server that answers everything with an empty 200 does nothing a scenario asks of a server:
/// every shipped file fails (exit 1, one FAIL line per file), each with what the server did not do.
#[test]
fn every_shipped_scenario_fails_against_a_do_nothing_server() {
    let server = DoNothing::start();
    let files = shipped_args();
    let mut args = vec!["scenario", "run"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--server", &server.url]);
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 1, "{out}\n{err}");
    for f in &files {
        assert!(out.lines().any(|l| l.starts_with(&format!("FAIL {f} "))), "{f} did not fail:\n{out}");
    }
    assert!(!out.contains("\nPASS "), "{out}");
    assert!(out.contains("the server did not write ./Vendor/MSFT/DMClient/Provider/*/Push/PFN"), "{out}");
    assert!(out.contains("the server never ran an install through EnterpriseDesktopAppManagement"), "{out}");
}

/// The conformance scenario passes against the reference server as it is, and fails against it
/// in Fleet's compatibility mode (no Final, no Status for the device's Alerts): each finding
/// named once with its count and the first place it was seen.
#[test]
fn the_conformance_scenario_finds_fleet_style_replies() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/conformance-final-and-statuses.toml");
    let file = file.to_string_lossy().into_owned();
    let standard = Reference::start(false, None);
    let (code, out, err) = mdmsim(&["scenario", "run", &file, "--server", &standard.handle.base_url]);
    assert_eq!(code, 0, "{out}\n{err}");
    let fleet = Reference::start(false, Some(mdmsim::server::Preset::Fleet));
    let (code, out, err) = mdmsim(&["scenario", "run", &file, "--server", &fleet.handle.base_url]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains(&format!("FAIL  {file}:26 [findings]")), "{out}");
    assert!(out.contains("missing-final x") && out.contains("command-not-statused x"), "{out}");
    assert!(out.contains(", first: missing-final: the server message has no <Final/>"), "{out}");
    assert!(out.contains("MsgID "), "{out}");
}

/// Each run draws fresh DeviceIDs, so a second run against the same server (which remembers what
/// it configured) passes too; `--seed` gives the same devices again, and the server, which
/// already configured them, then has nothing to send: the expectation on its writes fails.
#[test]
fn a_rerun_against_the_same_server_meets_new_devices_and_a_seed_repeats_them() {
    let server = Reference::start(false, None);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/modes-reboot-logon.toml");
    let file = file.to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for (n, seed) in [None, None, Some("42"), Some("42")].into_iter().enumerate() {
        let transcript = dir.path().join(format!("t{n}")).to_string_lossy().into_owned();
        let mut args = vec!["scenario", "run", &file, "--server", &server.handle.base_url, "--transcript", &transcript];
        if let Some(s) = seed {
            args.extend(["--seed", s]);
        }
        let (code, out, err) = mdmsim(&args);
        if n < 3 {
            assert_eq!(code, 0, "run {n}: {out}\n{err}");
        } else {
            // The same device again: the server remembers it configured it, and says nothing new.
            assert_eq!(code, 1, "run {n}: {out}\n{err}");
            assert!(out.contains("the server did not write ./Vendor/MSFT/DMClient/Provider/*/Push/PFN"), "{out}");
        }
        assert!(err.contains("DeviceIDs drawn from seed "), "{err}");
        let id: Vec<String> = std::fs::read_dir(&transcript)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(id.len(), 1, "{id:?}");
        assert!(id[0].starts_with("A1"), "the group's id_prefix stays: {id:?}");
        ids.push(id[0].clone());
    }
    assert_ne!(ids[0], ids[1], "two runs, two devices");
    assert_eq!(ids[2], ids[3], "the same seed, the same device");
    assert_eq!(server.handle.devices().len(), 3);
}

#[test]
fn a_scenario_without_expectations_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.split("[[expect]]").next().unwrap();
    let f = write(dir.path(), "empty.toml", text);
    let (code, out, err) = mdmsim(&["scenario", "check", &f]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(&format!("warning: {f}: no [[expect]] entry")), "{err}");
}

#[test]
fn server_expectations_refuse_bad_values_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    // (the [[expect]] appended to GOOD, line:column, words of the message)
    let cases: &[(&str, &str, &[&str])] = &[
        ("kind = \"set\"\nmin = 1\n", "22:8", &["needs `node`"]),
        ("kind = \"set\"\nnode = \"./A/*\"\nmin = 5\nmax = 1\n", "25:7", &["expected at least `min` (5), found 1"]),
        ("kind = \"set\"\nnode = \"./A\"\nwithin = \"2h\"\n", "24:10", &["number of sessions"]),
        ("kind = \"statuses\"\nclass = [\"3xx\"]\n", "23:9", &["expected \"4xx\" or \"5xx\", found \"3xx\""]),
        ("kind = \"latency\"\nunder = \"fast\"\n", "23:9", &["`under`: expected a duration such as \"500ms\""]),
        ("kind = \"install\"\ncsp = \"Msi\"\n", "23:7", &["EnterpriseAppManagement | EnterpriseDesktopAppManagement"]),
        ("kind = \"command\"\ntarget = \"./**\"\nonly_in = [\"Night\"]\n", "24:11", &["`only_in`"]),
        (
            "kind = \"profile\"\nnode = \"./A/*\"\nequals = \"1\"\n",
            "24:10",
            &["`equals` is not allowed on a `profile`"],
        ),
    ];
    for (n, (extra, place, words)) in cases.iter().enumerate() {
        let f = write(dir.path(), &format!("bad{n}.toml"), &format!("{GOOD}\n[[expect]]\n{extra}"));
        let (code, out, err) = mdmsim(&["scenario", "check", &f]);
        assert_eq!(code, 2, "{extra}: {out}{err}");
        assert!(err.starts_with(&format!("{f}:{place}: ")), "{extra}: {err}");
        for w in *words {
            assert!(err.contains(w), "{extra}: {w:?} not in {err}");
        }
    }
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
