//! Device templates through the commands that load them (`device new`, `enroll`, `scenario`): a
//! bad template is exit 2 with `FILE:LINE:COLUMN:`, the key and the accepted values, and nothing
//! is created; the shipped templates, and one that sets every `[behaviour]` key, still load.

use std::path::{Path, PathBuf};

use mdmsim::device::BEHAVIOUR_KEYS;

use super::support::mdmsim;

/// Nobody listens there: a command that got past the template would fail differently.
const NOWHERE: &str = "http://127.0.0.1:9/ManagementServer/MDM.svc";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `device new` with `template`; gives (exit code, stdout, stderr).
fn device_new(state: &Path, template: &Path) -> (i32, String, String) {
    mdmsim(&[
        "device",
        "new",
        "--state",
        &state.to_string_lossy(),
        "--server",
        NOWHERE,
        "--seed",
        "7",
        "--template",
        &template.to_string_lossy(),
    ])
}

/// The templates of the bug reports, each with the place and the words its refusal must have.
const BAD: &[(&str, &str, &[&str])] = &[
    (
        "[behaviour]\ntimezone = \"Mars/Olympus\"\n",
        "2:12",
        &["`timezone` in [behaviour]", "found \"Mars/Olympus\"", "IANA time zone", "\"Europe/Paris\""],
    ),
    (
        "# a laptop\n[behaviour]\nnightly_cron = \"99 99 * * *\"\n",
        "3:16",
        &["`nightly_cron` in [behaviour]", "found \"99 99 * * *\"", "5 fields, minute first (\"0 2 * * *\")"],
    ),
    (
        "[behaviour]\nutc_offset_minutes = \"sixty\"\n",
        "2:22",
        &["`utc_offset_minutes` in [behaviour]", "found \"sixty\"", "from -1439 to 1439"],
    ),
    (
        "[behaviour]\njitter = \"maybe\"\n",
        "2:10",
        &["`jitter` in [behaviour]", "expected true or false, found \"maybe\""],
    ),
    (
        "profile = \"win10\"\n\n[behaviour]\n  jittr = false\n",
        "4:3",
        &["unknown key `jittr` in [behaviour]", "(did you mean `jitter`?)", "known keys: timezone, ", "max_messages"],
    ),
    (
        "[devinfo]\nMan = \"HP\"\nColour = \"red\"\n",
        "3:1",
        &["unknown key `Colour` in [devinfo]", "known keys (DevInfo nodes): Man, Mod"],
    ),
    ("[wmi]\nmemory_speed = \"fast\"\n", "2:16", &["[wmi] memory_speed must be a whole number"]),
];

#[test]
fn device_new_refuses_each_bad_template_with_its_place_the_key_and_the_accepted_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, (text, place, words)) in BAD.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).expect("write template");
        let state = dir.path().join(format!("state{i}"));
        let (code, out, err) = device_new(&state, &file);
        assert_eq!(code, 2, "{text}: {out}{err}");
        let prefix = format!("mdmsim: {}:{place}: ", file.display());
        assert!(err.starts_with(&prefix), "{text}: {err:?} should start with {prefix:?}");
        for w in *words {
            assert!(err.contains(w), "{text}: {err:?} should say {w:?}");
        }
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(out.is_empty(), "no DeviceID printed: {out:?}");
        assert!(!state.exists(), "nothing is created for a refused template");
    }
}

#[test]
fn the_first_fault_in_the_file_is_the_one_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("two.toml");
    // `[behaviour]` sorts before `[devinfo]`, but the devinfo fault comes first in the file.
    std::fs::write(&file, "[devinfo]\nMan = [1]\n[behaviour]\njitter = \"maybe\"\n").expect("write");
    let (code, _, err) = device_new(&dir.path().join("state"), &file);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("two.toml:2:7: `Man` in [devinfo]: expected a chr value, found an array"), "{err}");
}

#[test]
fn enroll_and_scenarios_refuse_the_same_template_the_same_way() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[behaviour]\njitter = \"maybe\"\n").expect("write");
    let want = format!("{}:2:10: `jitter` in [behaviour]: expected true or false", bad.display());

    // enroll reads the template before it contacts anyone: 2, not 3 (unreachable).
    let (code, _, err) = mdmsim(&[
        "enroll",
        "--state",
        &dir.path().join("state").to_string_lossy(),
        "--discovery",
        "http://127.0.0.1:9/EnrollmentServer/Discovery.svc",
        "--email",
        "user@example.com",
        "--password",
        "x",
        "--template",
        &bad.to_string_lossy(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&want), "{err:?} should contain {want:?}");

    // A scenario names the template by path: the template's place comes after the scenario's.
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, "[scenario]\nname = \"bad template\"\n\n[[device]]\ntemplate = \"bad.toml\"\n")
        .expect("write");
    let (code, _, err) = mdmsim(&["scenario", "check", &scenario.to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:5:12: `template`: bad.toml:2:10: `jitter`", scenario.display())), "{err}");

    // `[device.behaviour]` overrides are checked with the same table.
    std::fs::write(
        &scenario,
        "[scenario]\nname = \"bad override\"\n\n[[device]]\ntemplate = \"win11-laptop\"\n[device.behaviour]\njittr = false\n",
    )
    .expect("write");
    let (code, _, err) = mdmsim(&["scenario", "check", &scenario.to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`behaviour`: unknown key `jittr` in [behaviour] (did you mean `jitter`?)"), "{err}");
}

#[test]
fn the_shipped_templates_and_one_with_every_behaviour_key_still_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/templates"))
        .expect("fixtures/templates")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    files.push(root().join("fuzz/corpus/template/every-behaviour-key.toml"));
    for (i, file) in files.iter().enumerate() {
        let (code, out, err) = device_new(&state.join(i.to_string()), file);
        assert_eq!(code, 0, "{}: {err}", file.display());
        assert_eq!(out.trim().len(), 32, "a DeviceID: {out:?}");
    }
    // The template that sets every key made a win81 tablet with its own DeviceName.
    let (code, out, err) = mdmsim(&["device", "list", "--state", &state.join("6").to_string_lossy(), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"win81\""), "{out}");
    assert_eq!(super::support::tree_value(&state.join("6"), "./DevDetail/Ext/Microsoft/DeviceName"), "TABLET-7");
    let text = std::fs::read_to_string(&files[6]).expect("read");
    for k in BEHAVIOUR_KEYS {
        assert!(text.contains(&format!("\n{} = ", k.name)) || text.contains(&format!("\n\"{}:", k.name)), "{}", k.name);
    }
}

#[test]
fn every_behaviour_key_is_documented_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    for k in BEHAVIOUR_KEYS {
        assert!(readme.contains(&format!("`{}", k.name)), "README.md does not document [behaviour] {}", k.name);
    }
}
