//! `mdmsim demo` with a small fleet: every device enrolls against the embedded reference server
//! (HTTPS, client certificates), syncs through its day, installs the configured app, gets the
//! configuration profile (verified) and the MSI install, and the report's numbers agree with the
//! server's records; the server's midday pushes through the WNS emulation start sessions.

use serde_json::Value;

use crate::support::mdmsim;

#[test]
fn a_small_demo_fleet_enrolls_syncs_installs_and_agrees_with_the_server() {
    let (code, out, err) = mdmsim(&["demo", "--devices", "4", "--duration", "12h", "--seed", "5", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["enrolled"], 4);
    assert_eq!(r["failed"], 0, "{r}");
    let sessions = r["sessions"].as_u64().unwrap();
    assert!(sessions >= 4 * 3, "enrollment, reboot, logon and polls for every device: {r}");
    assert_eq!(r["by_trigger_mode"]["enrollment/Maintenance"], 4);
    assert_eq!(r["by_trigger_mode"]["reboot/Machine"], 4, "every device reboots in the morning");
    // Every device installed the server's app, and the server read Status 5 from each.
    assert_eq!(r["app_installs"]["5 INSTALLED"], 4, "{r}");
    let server = &r["server"];
    assert_eq!(server["agrees"], true, "{server}");
    assert_eq!(server["enrolled"], 4);
    assert_eq!(server["check_ins"].as_u64(), Some(sessions));
    assert_eq!(server["apps_installed"], 4);
    assert_eq!(r["findings"], 0, "the reference server sends nothing forbidden");
    // The midday pushes go through the WNS emulation to every device, and each opens a
    // push-started session.
    let pushes = &r["pushes"];
    assert_eq!((pushes["sent"].as_u64(), pushes["received"].as_u64()), (Some(4), Some(4)), "{pushes}");
    assert!(pushes["sessions"].as_u64().unwrap() >= 4, "{pushes}");
    // The configuration profile: verified (read back in a later session) on every Windows
    // 10/11 device, not applicable on the Windows 8.1 tablets; the verified devices hold it.
    let p = &r["profiles"][0];
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    assert_eq!(p["name"], "Baseline");
    assert!(n(p, "settings") >= 6);
    assert_eq!(n(p, "verified") + n(p, "not_applicable"), 4, "{p}");
    assert!(n(p, "verified") >= 1, "{p}");
    assert_eq!(n(p, "verified"), n(p, "devices_holding_every_value"), "{p}");
    // The MSI: sent to the same devices; counted installed only on the device's word.
    let m = &r["msi"][0];
    assert_eq!(m["product_id"], "{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}");
    assert_eq!(n(m, "installed") + n(m, "failed") + n(m, "in_progress"), n(p, "verified"), "{m}");
    assert_eq!(n(m, "not_applicable"), n(p, "not_applicable"), "{m}");
    let completed = m["device_status"]["70 Enforcement Completed"].as_u64().unwrap_or(0);
    assert!(n(m, "installed") <= completed, "{m}");
    assert!(n(m, "no_outcome_reported") <= n(m, "in_progress"), "{m}");
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // The same seed gives the same fleet and the same day.
    let (_, again, _) = mdmsim(&["demo", "--devices", "4", "--duration", "12h", "--seed", "5", "--json"]);
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["by_trigger_mode"], r["by_trigger_mode"]);
}

/// The human report reads as sentences (`4 devices INSTALLED (Status 5)`, not `4 5 INSTALLED`),
/// and a demo whose output is not a terminal says on stderr what it is doing meanwhile.
#[test]
fn the_demo_report_reads_as_words_and_shows_progress_when_piped() {
    let (code, out, err) = mdmsim(&["demo", "--devices", "2", "--duration", "8h", "--seed", "3"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let apps = out.lines().find(|l| l.starts_with("  app installs: ")).unwrap_or_default();
    assert!(apps.contains(" INSTALLED (Status 5)") || apps.contains(" (Status "), "{apps}");
    assert!(!apps.contains(" 5 INSTALLED"), "{apps}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("mdmsim demo: reference server at https://127.0.0.1:"), "{err}");
    assert!(err.contains(" of 2 enrolled; living "), "{err}");
}
