//! The Windows 8.1 WMI bridge over real sessions: the server-initiated unenrollment through
//! `./cimv2/MDM_Client/...Exec=SendUnenrollRequest` in a Machine-mode session (allowed there by
//! the seed), and the WNS configuration refused in Machine mode.

use mdmsim::syncml::{Command, Item, ItemCmd};
use serde_json::Value;

use crate::support::mdmsim;
use crate::support::server::{Reply, Server, msg};

fn exec(id: &str, uri: &str) -> Command {
    Command::Exec(ItemCmd { cmd_id: id.into(), items: vec![Item::target(uri)], ..ItemCmd::default() })
}

fn new_win81(state: &str, server: &str) {
    let (code, _, err) =
        mdmsim(&["device", "new", "--state", state, "--server", server, "--profile", "win81", "--seed", "81"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn send_unenroll_request_in_machine_mode_unenrolls_a_win81_device() {
    let unenroll = "./cimv2/MDM_Client/MDM_Client.DeviceClientID=%22mdmsim%22/Exec=SendUnenrollRequest";
    let server = Server::start(vec![Reply::Syncml(msg(vec![exec("u1", unenroll)])), Reply::Empty]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy().into_owned();
    new_win81(&state, &server.url);
    let (code, out, err) = mdmsim(&["sync", "--state", &state, "--trigger", "reboot", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["mode"], "Machine");
    assert_eq!(v["commands"][0]["status"], 200, "{v}");
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(0), "allowed in Machine mode: {v}");
    assert!(err.contains("unenrolled"), "{err}");
    // The enrollment is wiped: later sessions are refused.
    let (code, _, err) = mdmsim(&["sync", "--state", &state]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("unenrolled by the server"), "{err}");
}

#[test]
fn wns_configuration_fails_in_machine_mode_and_works_in_maintenance() {
    let wns = "./cimv2/MDM_WNSConfiguration/MDM_WNSConfiguration.AppId=%22%7BAB%7D%22/Exec=UpdateConfiguration";
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![exec("w1", wns)])),
        Reply::Empty,
        Reply::Syncml(msg(vec![exec("w2", wns)])),
        Reply::Empty,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy().into_owned();
    new_win81(&state, &server.url);
    let status = |trigger: &str| {
        let (code, out, err) = mdmsim(&["sync", "--state", &state, "--trigger", trigger, "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        (v["mode"].as_str().unwrap().to_string(), v["commands"][0]["status"].as_u64(), v["findings"].clone())
    };
    let (mode, code, findings) = status("reboot");
    assert_eq!((mode.as_str(), code), ("Machine", Some(500)));
    assert_eq!(findings[0]["what"], "machine-mode-wns-configuration", "{findings}");
    let (mode, code, findings) = status("logon");
    assert_eq!((mode.as_str(), code), ("Maintenance", Some(200)));
    assert_eq!(findings.as_array().map(Vec::len), Some(0));
}
