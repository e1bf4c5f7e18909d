//! `mdmsim fleet`: shards of one fleet add up to the whole run, the same seed gives the same run,
//! and bad flags are refused with the flag named.

use serde_json::Value;

use crate::support::mdmsim;

fn fleet(extra: &[&str]) -> Value {
    let mut args = vec!["fleet", "--devices", "60", "--in-process", "--duration", "1d", "--seed", "7", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 0, "fleet {extra:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("fleet --json prints one object: {e}: {out}"))
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn two_shards_add_up_to_the_whole_fleet_and_the_same_seed_gives_the_same_run() {
    let whole = fleet(&[]);
    let a = fleet(&["--shard", "0/2"]);
    let b = fleet(&["--shard", "1/2"]);
    assert_eq!(count(&a, "devices") + count(&b, "devices"), 60);
    assert_eq!(count(&whole, "fleet_devices"), 60);
    for key in ["sessions", "completed", "failed", "missed", "messages"] {
        assert_eq!(count(&a, key) + count(&b, key), count(&whole, key), "{key}");
    }
    assert!(count(&whole, "sessions") > 60 * 5, "a day of check-ins per device: {whole}");
    assert_eq!(count(&whole, "failed"), 0, "{whole}");
    let by = |v: &Value| v["sessions_by"].as_object().cloned().unwrap_or_default();
    let mut summed: std::collections::BTreeMap<String, u64> = Default::default();
    for v in [&a, &b] {
        for (k, n) in by(v) {
            *summed.entry(k).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    let whole_by: std::collections::BTreeMap<String, u64> =
        by(&whole).into_iter().map(|(k, n)| (k, n.as_u64().unwrap_or(0))).collect();
    assert_eq!(summed, whole_by, "sessions by trigger and mode");
    let latency = &whole["latency_ms"]["session"];
    assert_eq!(latency["count"].as_u64(), Some(count(&whole, "sessions")), "every session timed: {whole}");
    let again = fleet(&[]);
    assert_eq!(again["sessions_by"], whole["sessions_by"], "the same seed gives the same run");
    assert_eq!(count(&again, "messages"), count(&whole, "messages"));
}

#[test]
fn shard_reports_merge_into_the_report_of_the_whole_run_and_render_as_html() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (whole, a, b, merged, page) =
        (path("whole.json"), path("a.json"), path("b.json"), path("ab.json"), path("ab.html"));
    fleet(&["--report", &whole]);
    fleet(&["--shard", "0/2", "--report", &a]);
    fleet(&["--shard", "1/2", "--report", &b, "--html", &page]);
    let (code, _, err) = mdmsim(&["report", "merge", &a, &b, "-o", &merged]);
    assert_eq!(code, 0, "{err}");
    let read = |p: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).expect("report written")).expect("JSON")
    };
    let (w, m) = (read(&whole), read(&merged));
    // The counts, over the run and per time bucket, are the whole run's (latencies are real
    // time, different in every run; their exact merge has its own test in `report`).
    assert_eq!(w["totals"], m["totals"], "totals");
    assert_eq!(w["bucket_s"], m["bucket_s"]);
    let per_bucket = |v: &Value, field: &str| -> Vec<u64> {
        v["series"].as_array().expect("series").iter().map(|b| b[field].as_u64().unwrap_or(0)).collect()
    };
    for field in ["sessions", "completed", "failed", "missed"] {
        assert_eq!(per_bucket(&w, field), per_bucket(&m, field), "{field} per bucket");
    }
    assert!(per_bucket(&w, "sessions").iter().filter(|n| **n > 0).count() > 10, "sessions spread over the day");
    let timed = |p: &str| -> u64 {
        let (code, out, err) = mdmsim(&["report", "summary", p, "--json"]);
        assert_eq!(code, 0, "{err}");
        let s: Value = serde_json::from_str(out.trim()).expect("summary JSON");
        s["latency_ms"]["session"]["count"].as_u64().expect("a session latency count")
    };
    assert_eq!(timed(&merged), timed(&whole), "every session's latency is in the merged histogram");
    assert_eq!(timed(&whole), w["totals"]["sessions"].as_u64().expect("sessions"));
    let html = std::fs::read_to_string(&page).expect("--html written");
    assert!(html.contains("<svg") && !html.contains("src=\"http"), "a self-contained page with charts");
}

#[test]
fn bad_flags_are_refused_with_exit_2_naming_the_flag() {
    for (args, says) in [
        (vec!["--shard", "3/2"], "--shard"),
        (vec!["--shard", "1/0"], "--shard"),
        (vec!["--ramp-up", "soon"], "--ramp-up"),
        (vec!["--duration", "x"], "--duration"),
        (vec!["--max-in-flight", "0"], "--max-in-flight"),
    ] {
        let mut all = vec!["fleet", "--devices", "5", "--in-process"];
        all.extend_from_slice(&args);
        let (code, _, err) = mdmsim(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} names {says}: {err}");
    }
    let (code, _, err) = mdmsim(&["fleet", "--devices", "5"]);
    assert_eq!(code, 2, "no target: {err}");
    let dir = tempfile::tempdir().expect("temp dir");
    let mix = dir.path().join("mix.toml");
    std::fs::write(&mix, "[[template]]\npath = \"win10-desktop\"\nweight = 60\n").expect("mix written");
    let (code, _, err) = mdmsim(&["fleet", "--devices", "5", "--in-process", "--templates", &mix.to_string_lossy()]);
    assert_eq!(code, 2, "weights that do not sum to 100: {err}");
    assert!(err.contains("--templates") && err.contains("mix.toml:"), "the flag and the file's place: {err}");
}

#[test]
fn a_shipped_template_mix_gives_its_fleet() {
    let mix = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/fleet/office-mix.toml");
    let v = fleet(&["--templates", mix]);
    assert_eq!(count(&v, "failed"), 0, "{v}");
    assert!(count(&v, "sessions") > 60 * 5, "{v}");
}

/// `fleet --discovery` against the reference server over HTTPS: every device enrolls through
/// MS-MDE2 with a key of the pool, gets its own certificate, and runs its sessions over mTLS
/// with it; a wrong password fails every enrollment with the server's reason and exit 4.
#[test]
fn devices_enroll_through_discovery_with_pooled_keys_and_run_their_sessions_over_mtls() {
    let server = crate::support::refserver::RefServer::start_https();
    let ca = server.ca_file();
    let ca = ca.to_string_lossy();
    let discovery = server.handle.discovery_url();
    let run = |password: &str| {
        mdmsim(&[
            "fleet",
            "--devices",
            "12",
            "--seed",
            "3",
            "--discovery",
            &discovery,
            "--email",
            "demo@mdmsim.test",
            "--password",
            password,
            "--ca-cert",
            &ca,
            "--key-pool",
            "3",
            "--duration",
            "3h",
            "--json",
        ])
    };
    let (code, out, err) = run("demo");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let enrollment = &v["enrollment"];
    assert_eq!(enrollment["enrolled"].as_u64(), Some(12), "{v}");
    assert_eq!(enrollment["failed"].as_u64(), Some(0), "{v}");
    assert_eq!(enrollment["keys_generated"].as_u64(), Some(3), "twelve devices, a pool of three keys: {v}");
    assert_eq!(v["latency_ms"]["enroll"]["count"].as_u64(), Some(12), "{v}");
    assert_eq!(count(&v, "failed"), 0, "{v}");
    assert!(count(&v, "sessions") >= 12 * 2, "the post-enrollment session and polls: {v}");

    let records = server.handle.devices();
    assert_eq!(records.len(), 12);
    let mut thumbprints = std::collections::BTreeSet::new();
    for r in &records {
        let e = r.enrollment.as_ref().expect("enrolled through MS-MDE2");
        assert_eq!(e.user, "demo@mdmsim.test");
        thumbprints.insert(e.cert_thumbprint.clone());
        assert!(!r.checkins.is_empty(), "{} never checked in", r.device_id);
        for c in &r.checkins {
            assert_eq!(
                c.auth,
                mdmsim::server::AuthMethod::Certificate,
                "{} session {} authenticated by its certificate",
                r.device_id,
                c.session_id
            );
        }
    }
    assert_eq!(thumbprints.len(), 12, "one certificate per device, even with shared keys");
    let sessions: usize = records.iter().map(|r| r.checkins.len()).sum();
    assert_eq!(sessions as u64, count(&v, "sessions"), "the server saw every session the fleet ran");

    let (code, _, err) = run("wrong");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("12 of 12 enrollments failed"), "{err}");
}

/// An enrolled fleet kept with `--state`: a first run whose enrollments all fail keeps nothing
/// but its manifest; the next enrolls every device; the one after goes on with the same
/// enrollments (no credential given, nobody enrolls again) over mTLS, its SessionID counters
/// going on from the store's.
#[test]
fn an_enrolled_fleet_kept_with_state_goes_on_with_its_enrollments_and_enrolls_what_failed() {
    let server = crate::support::refserver::RefServer::start_https();
    let ca = server.ca_file();
    let ca = ca.to_string_lossy();
    let discovery = server.handle.discovery_url();
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("fleet");
    let state_arg = state.to_string_lossy();
    let run = |extra: &[&str]| {
        let mut args = vec!["fleet", "--state", &state_arg, "--ca-cert", &ca, "--duration", "6h", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = mdmsim(&args);
        let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        (code, v, err)
    };
    let first = ["--devices", "6", "--seed", "9", "--discovery", &discovery, "--key-pool", "2"];
    let (code, v, err) = run(&[&first[..], &["--email", "demo@mdmsim.test", "--password", "wrong"]].concat());
    assert_eq!(code, 4, "every enrollment refused: {err}");
    assert_eq!(v["enrollment"]["failed"].as_u64(), Some(6), "{v}");
    assert!(server.handle.devices().is_empty());

    // The devices that failed enroll on the next run; the flags come from the manifest.
    let (code, v, err) = run(&["--email", "demo@mdmsim.test", "--password", "demo"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((v["enrollment"]["enrolled"].as_u64(), v["enrollment"]["kept"].as_u64()), (Some(6), Some(0)), "{v}");
    assert_eq!(count(&v, "failed"), 0, "{v}");
    let thumbprints = |records: &[mdmsim::server::DeviceRecord]| -> std::collections::BTreeMap<String, String> {
        records
            .iter()
            .map(|r| (r.device_id.clone(), r.enrollment.as_ref().expect("enrolled").cert_thumbprint.clone()))
            .collect()
    };
    let enrolled = thumbprints(&server.handle.devices());
    assert_eq!(enrolled.len(), 6);
    let after_enrolling = counters(&state);
    assert_eq!(after_enrolling.keys().collect::<Vec<_>>(), enrolled.keys().collect::<Vec<_>>(), "every device kept");
    let m = manifest(&state);
    assert_eq!(m["target"]["kind"], "discovery", "{m}");
    assert_eq!((m["target"]["email"].as_str(), m["target"]["key_pool"].as_u64()), (Some("demo@mdmsim.test"), Some(2)));
    let lines = std::fs::read_to_string(state.join("identities.jsonl")).expect("identities kept");
    assert_eq!(lines.lines().count(), 6, "{lines}");
    assert_eq!(std::fs::read_dir(state.join("keys")).expect("the pool's keys kept").count(), 2);

    // Without a credential: the kept devices go on, over mTLS with the certificates they were
    // issued, and nobody enrolls again.
    let checkins_before: usize = server.handle.devices().iter().map(|r| r.checkins.len()).sum();
    let (code, v, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((v["enrollment"]["enrolled"].as_u64(), v["enrollment"]["kept"].as_u64()), (Some(0), Some(6)), "{v}");
    assert_eq!(count(&v, "failed"), 0, "{v}");
    assert!(count(&v, "sessions") >= 6, "{v}");
    let records = server.handle.devices();
    assert_eq!(thumbprints(&records), enrolled, "the same enrollments, no new one");
    let checkins: usize = records.iter().map(|r| r.checkins.len()).sum();
    assert_eq!((checkins - checkins_before) as u64, count(&v, "sessions"), "the server saw each session");
    for r in &records {
        for c in &r.checkins {
            assert_eq!(c.auth, mdmsim::server::AuthMethod::Certificate, "{}", r.device_id);
        }
    }
    let after = counters(&state);
    for (id, n) in &after {
        assert!(*n > after_enrolling[id], "device {id}: SessionID counter from {} to {n}", after_enrolling[id]);
    }

    // What the manifest says cannot be changed on the way.
    let (code, _, err) = run(&["--key-pool", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--key-pool 3 contradicts") && err.contains("--key-pool 2"), "{err}");
    let (code, _, err) = run(&["--email", "other@mdmsim.test"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--email other@mdmsim.test contradicts"), "{err}");
}

/// Enrolled devices against a server whose management answers fail now and then (503 with
/// Retry-After, connections reset, bodies cut short): the run goes on, every failure is counted
/// by class, and the exit code says sessions failed.
#[test]
fn an_enrolled_fleet_rides_out_server_faults_and_counts_them_by_class() {
    let faults = mdmsim::server::FaultConfig {
        spec: "503=10%,reset=10%,truncate=10%".parse().expect("fault spec"),
        seed: Some(5),
        slow_delay: None,
        retry_after: None,
    };
    let config = mdmsim::server::Config { faults, ..mdmsim::server::Config::default() };
    let server = crate::support::refserver::RefServer::start_https_with(config);
    let ca = server.ca_file();
    let (code, out, err) = mdmsim(&[
        "fleet",
        "--devices",
        "10",
        "--seed",
        "4",
        "--discovery",
        &server.handle.discovery_url(),
        "--email",
        "demo@mdmsim.test",
        "--password",
        "demo",
        "--ca-cert",
        &ca.to_string_lossy(),
        "--key-pool",
        "2",
        "--duration",
        "6h",
        "--json",
    ]);
    assert!(code == 3 || code == 4, "failed sessions give the failure's exit code, not {code}: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["enrollment"]["enrolled"].as_u64(), Some(10), "faults hit management answers only: {v}");
    assert!(count(&v, "failed") > 0 && count(&v, "completed") > count(&v, "failed"), "{v}");
    let errors = v["errors"].as_object().cloned().unwrap_or_default();
    let counted: u64 = errors.values().filter_map(Value::as_u64).sum();
    assert!(counted >= count(&v, "failed"), "every failed session has its exchange failure counted: {v}");
    for class in errors.keys() {
        assert!(["connect", "body", "throttled", "http-5xx", "timeout"].contains(&class.as_str()), "{class}: {v}");
    }
}

#[test]
fn discovery_without_a_credential_is_refused_naming_what_to_give() {
    let (code, _, err) = mdmsim(&[
        "fleet",
        "--devices",
        "2",
        "--discovery",
        "https://127.0.0.1:9/EnrollmentServer/Discovery.svc",
        "--duration",
        "1h",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--password"), "{err}");
    let (code, _, err) = mdmsim(&["fleet", "--devices", "2", "--in-process", "--key-pool", "4"]);
    assert_eq!(code, 2, "--key-pool goes with --discovery: {err}");
}

/// `mdmsim device list --json` of a state directory: DeviceID -> session counter.
fn counters(state: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let (code, out, err) = mdmsim(&["device", "list", "--state", &state.to_string_lossy(), "--json"]);
    assert_eq!(code, 0, "device list: {err}");
    let list: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {out}"))
        .iter()
        .map(|d| (d["id"].as_str().expect("id").to_string(), d["sessions"].as_u64().expect("sessions")))
        .collect()
}

/// The manifest of a kept fleet.
fn manifest(state: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(state.join("fleet.json")).expect("fleet.json written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn kept_fleet(state: &std::path::Path, extra: &[&str]) -> Value {
    let state = state.to_string_lossy();
    let mut args = vec!["fleet", "--state", &state, "--in-process", "--duration", "1d", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 0, "fleet {extra:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("fleet --json prints one object: {e}: {out}"))
}

#[test]
fn a_second_run_with_the_same_state_continues_the_same_fleet_and_refuses_other_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("fleet");
    let start = "2026-03-02T00:00:00Z";
    let first = kept_fleet(&state, &["--devices", "24", "--seed", "5", "--start", start]);
    assert!(first.get("resumed_from").is_none(), "a new fleet is not resumed: {first}");
    assert_eq!(first["start"], start);
    // Keeping the fleet does not change what it does.
    let (code, out, err) = mdmsim(&[
        "fleet",
        "--devices",
        "24",
        "--seed",
        "5",
        "--start",
        start,
        "--in-process",
        "--duration",
        "1d",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let unkept: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(unkept["sessions_by"], first["sessions_by"], "the same sessions with and without --state");
    let m = manifest(&state);
    assert_eq!(m["reached"], "2026-03-03T00:00:00Z", "{m}");
    assert_eq!((m["devices"].as_u64(), m["seed"].as_u64()), (Some(24), Some(5)), "{m}");
    let after_first = counters(&state);
    assert_eq!(after_first.len(), 24, "every device stored");
    assert_eq!(after_first.values().sum::<u64>(), count(&first, "sessions"), "every session counted in the store");

    // The second run takes the fleet up where the first left it: --devices, --seed and the
    // target come from the state directory.
    let second = kept_fleet(&state, &[]);
    assert_eq!(second["start"], "2026-03-03T00:00:00Z", "{second}");
    assert_eq!(second["resumed_from"], "2026-03-03T00:00:00Z", "{second}");
    assert_eq!((count(&second, "devices"), count(&second, "seed")), (24, 5));
    assert!(count(&second, "sessions") > 24, "a second day of check-ins: {second}");
    assert_eq!(second["sessions_by"].get("enrollment/Maintenance"), None, "no device is enrolled again: {second}");
    assert_eq!(manifest(&state)["reached"], "2026-03-04T00:00:00Z");
    let after_second = counters(&state);
    assert_eq!(after_second.keys().collect::<Vec<_>>(), after_first.keys().collect::<Vec<_>>(), "the same devices");
    for (id, n) in &after_second {
        assert!(*n >= after_first[id], "device {id}: SessionID counter went from {} to {n}", after_first[id]);
    }
    assert_eq!(
        after_second.values().sum::<u64>(),
        count(&first, "sessions") + count(&second, "sessions"),
        "the counters go on from the first run's"
    );
    let id = after_second.keys().next().expect("a device");
    let (code, out, err) = mdmsim(&["tree", "--state", &state.to_string_lossy(), "--device", id, "./DevInfo/DevId"]);
    assert_eq!(code, 0, "tree on a kept fleet: {err}");
    assert!(out.contains(id.as_str()), "{out}");

    // Flags that say otherwise are refused, naming the flag, the kept value and the given one.
    let s = state.to_string_lossy().into_owned();
    for (args, says) in [
        (vec!["--seed", "6"], ["--seed 6", "its --seed is 5"]),
        (vec!["--devices", "25"], ["--devices 25", "its --devices is 24"]),
        (vec!["--shard", "1/2"], ["--shard 1/2", "its --shard is 0/1"]),
        (vec!["--start", start], ["--start 2026-03-02T00:00:00+00:00", "has reached 2026-03-04T00:00:00+00:00"]),
        (vec!["--server", "http://127.0.0.1:9/x"], ["--server http://127.0.0.1:9/x", "--in-process"]),
    ] {
        let mut all = vec!["fleet", "--state", &s, "--duration", "1h"];
        all.extend_from_slice(&args);
        let (code, _, err) = mdmsim(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        for say in says {
            assert!(err.contains(say), "{args:?} says {say:?}: {err}");
        }
    }
    assert_eq!(manifest(&state)["reached"], "2026-03-04T00:00:00Z", "a refused run changes nothing");
    assert_eq!(counters(&state), after_second);
}

#[test]
fn what_is_not_a_fleet_state_directory_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |state: &std::path::Path| {
        let (code, _, err) = mdmsim(&[
            "fleet",
            "--state",
            &state.to_string_lossy(),
            "--devices",
            "3",
            "--in-process",
            "--duration",
            "1h",
        ]);
        (code, err)
    };
    let file = dir.path().join("file");
    std::fs::write(&file, "x").expect("file written");
    let (code, err) = run(&file);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("is a file") && err.contains("file"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("file"), "x");

    let devices = dir.path().join("devices");
    crate::support::new_device(&devices, "http://127.0.0.1:9/ManagementServer/MDM.svc", 1);
    let (code, err) = run(&devices);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not a fleet's") && err.contains("devices"), "{err}");
    assert!(!devices.join("fleet.json").exists(), "nothing written");

    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).expect("dir");
    std::fs::write(broken.join("fleet.json"), "{\"format\": 3").expect("written");
    let (code, err) = run(&broken);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("fleet.json: not a usable fleet manifest"), "{err}");
    assert_eq!(std::fs::read_to_string(broken.join("fleet.json")).expect("kept"), "{\"format\": 3");
    assert!(!broken.join("db").exists(), "no store made");
}

#[cfg(unix)]
#[test]
fn a_kept_fleet_killed_mid_run_goes_on_from_the_last_day_it_committed() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("fleet");
    let start = "2026-03-02T00:00:00Z";
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdmsim"))
        .args(["fleet", "--state", &state.to_string_lossy(), "--devices", "30", "--in-process"])
        .args(["--start", start, "--duration", "60d", "--json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the mdmsim binary runs");
    // Wait until a day is committed (the manifest moved on), then SIGKILL: no destructor, no
    // clean close.
    let waited = Instant::now();
    loop {
        let reached = std::fs::read_to_string(state.join("fleet.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|m| m["reached"].as_str().map(str::to_string));
        if reached.is_some_and(|r| r != start) {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(60), "no day committed within a minute");
        assert!(child.try_wait().expect("status").is_none(), "the run ended before it was killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let status = child.wait().expect("the run ends");
    assert!(status.code().is_none(), "killed, not ended: {status}");
    let reached = manifest(&state)["reached"].as_str().expect("reached").to_string();
    assert!(reached.as_str() > start && reached.as_str() < "2026-05-01", "a day boundary of the run: {reached}");
    assert!(reached.ends_with("T00:00:00Z"), "a day boundary: {reached}");

    // Every device is whole after the kill.
    let after_kill = counters(&state);
    assert_eq!(after_kill.len(), 30, "every device stored");
    assert!(after_kill.values().all(|n| *n > 0), "every device had its first session: {after_kill:?}");

    // The next run goes on from the last day committed, with the same devices.
    let resumed = kept_fleet(&state, &[]);
    assert_eq!(resumed["resumed_from"].as_str(), Some(reached.as_str()), "{resumed}");
    assert_eq!(resumed["start"].as_str(), Some(reached.as_str()));
    assert_eq!(count(&resumed, "failed"), 0, "{resumed}");
    assert!(count(&resumed, "sessions") > 30, "{resumed}");
    let after = counters(&state);
    assert_eq!(after.keys().collect::<Vec<_>>(), after_kill.keys().collect::<Vec<_>>(), "the same devices");
    for (id, n) in &after {
        assert!(*n >= after_kill[id], "device {id}: SessionID counter went back from {} to {n}", after_kill[id]);
    }
    let next = chrono::DateTime::parse_from_rfc3339(&reached).expect("RFC 3339") + chrono::Duration::days(1);
    let m = manifest(&state);
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(m["reached"].as_str().expect("reached")).expect("RFC 3339"),
        next,
        "{m}"
    );
    assert_eq!(m["runs"].as_u64(), Some(2), "{m}");
}
