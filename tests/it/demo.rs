//! `mdmsim demo` with a small fleet: every device enrolls against the embedded reference server
//! (HTTPS, client certificates), syncs through its day, installs the configured app, and the
//! report's numbers agree with the server's records.

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
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // The same seed gives the same fleet and the same day.
    let (_, again, _) = mdmsim(&["demo", "--devices", "4", "--duration", "12h", "--seed", "5", "--json"]);
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["by_trigger_mode"], r["by_trigger_mode"]);
}
