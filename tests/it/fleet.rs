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
