//! CSPs known by their DDF facts, over real `mdmsim sync` sessions against a scripted server:
//! a Fleet-style profile (an Atomic of Policy Replaces) applied and read back by Get in a later
//! session with `Policy/Result` agreeing, refused values, a CSP only its DDF describes
//! (BitLocker), and RebootNow leading to a Machine-mode session.

use mdmsim::syncml::{Command, Container, Item, ItemCmd, Meta, SyncMl};
use serde_json::Value;

use crate::support::mdmsim;
use crate::support::server::{Reply, Server, msg};

fn item_cmd(id: &str, uri: &str, data: Option<&str>, format: Option<&str>) -> ItemCmd {
    let mut item = Item::target(uri);
    item.data = data.map(str::to_string);
    item.meta = format.map(Meta::format);
    ItemCmd { cmd_id: id.into(), items: vec![item], ..ItemCmd::default() }
}

fn replace(id: &str, uri: &str, data: &str) -> Command {
    Command::Replace(item_cmd(id, uri, Some(data), Some("int")))
}

fn get(id: &str, uri: &str) -> Command {
    Command::Get(item_cmd(id, uri, None, None))
}

/// The Status code the device sent for command `id` in `m`.
fn status(m: &SyncMl, id: &str) -> Option<String> {
    m.body.commands.iter().find_map(|c| match c {
        Command::Status(s) if s.cmd_ref == id => Some(s.data.clone()),
        _ => None,
    })
}

/// The Results data for command `id` in `m`.
fn data(m: &SyncMl, id: &str) -> Option<String> {
    m.body.commands.iter().find_map(|c| match c {
        Command::Results(r) if r.cmd_ref == id => r.items.first().and_then(|i| i.data.clone()),
        _ => None,
    })
}

fn new_device(state: &str, server: &Server) {
    let (code, _, err) = mdmsim(&["device", "new", "--state", state, "--server", &server.url, "--seed", "11"]);
    assert_eq!(code, 0, "{err}");
}

fn sync(state: &str) -> Value {
    let (code, out, err) = mdmsim(&["sync", "--state", state, "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

const POLICIES: [(&str, &str); 6] = [
    ("Camera/AllowCamera", "0"),
    ("Bluetooth/AllowDiscoverableMode", "0"),
    ("Experience/AllowCortana", "0"),
    ("DeviceLock/DevicePasswordEnabled", "0"),
    ("Update/ActiveHoursStart", "9"),
    ("Update/ActiveHoursEnd", "17"),
];

/// Fleet delivers a configuration profile as an Atomic of Replaces and verifies it later by
/// Getting each LocURI: every setting applies, reads back, and `Policy/Result` agrees.
#[test]
fn a_fleet_style_profile_applies_and_reads_back_in_a_later_session() {
    let atomic = Command::Atomic(Container {
        cmd_id: "profile".into(),
        commands: POLICIES
            .iter()
            .enumerate()
            .map(|(i, (p, v))| replace(&format!("r{i}"), &format!("./Device/Vendor/MSFT/Policy/Config/{p}"), v))
            .collect(),
        ..Container::default()
    });
    let mut checks = Vec::new();
    for (i, (p, _)) in POLICIES.iter().enumerate() {
        checks.push(get(&format!("c{i}"), &format!("./Device/Vendor/MSFT/Policy/Config/{p}")));
        checks.push(get(&format!("e{i}"), &format!("./Device/Vendor/MSFT/Policy/Result/{p}")));
    }
    let server =
        Server::start(vec![Reply::Syncml(msg(vec![atomic])), Reply::Empty, Reply::Syncml(msg(checks)), Reply::Empty]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy().into_owned();
    new_device(&state, &server);
    let first = sync(&state);
    assert_eq!(first["statuses_sent"]["200"], 7, "the Atomic and its six Replaces: {first}");
    sync(&state);
    let msgs = server.device_messages();
    let verify = &msgs[3];
    for (i, (p, v)) in POLICIES.iter().enumerate() {
        assert_eq!(status(verify, &format!("c{i}")).as_deref(), Some("200"), "{p}");
        assert_eq!(data(verify, &format!("c{i}")).as_deref(), Some(*v), "Config {p}");
        assert_eq!(data(verify, &format!("e{i}")).as_deref(), Some(*v), "Result {p}");
    }
}

/// A value outside the policy's AllowedValues fails the whole Atomic and changes nothing; an
/// unknown area is 404; a CSP only its DDF describes takes a Replace and returns it.
#[test]
fn refused_values_unknown_areas_and_a_ddf_only_csp() {
    let bad = Command::Atomic(Container {
        cmd_id: "at".into(),
        commands: vec![
            replace("ok", "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera", "0"),
            replace("bad", "./Device/Vendor/MSFT/Policy/Config/Update/ActiveHoursStart", "99"),
        ],
        ..Container::default()
    });
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![
            bad,
            replace("na", "./Device/Vendor/MSFT/Policy/Config/NoSuchArea/Thing", "1"),
            replace("bl", "./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption", "1"),
        ])),
        Reply::Empty,
        Reply::Syncml(msg(vec![
            get("g1", "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera"),
            get("g2", "./Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera"),
            get("g3", "./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption"),
        ])),
        Reply::Empty,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy().into_owned();
    new_device(&state, &server);
    sync(&state);
    sync(&state);
    let msgs = server.device_messages();
    let first = &msgs[1];
    assert_eq!(status(first, "at").as_deref(), Some("507"), "the Atomic failed as a whole");
    assert_eq!(status(first, "bad").as_deref(), Some("400"), "outside [0-23]");
    assert_eq!(status(first, "na").as_deref(), Some("404"));
    assert_eq!(status(first, "bl").as_deref(), Some("200"));
    let later = &msgs[3];
    assert_eq!(status(later, "g1").as_deref(), Some("404"), "the Atomic's good Replace was rolled back");
    assert_eq!(data(later, "g2").as_deref(), Some("1"), "Result is the default again");
    assert_eq!(data(later, "g3").as_deref(), Some("1"));
}

/// `Reboot/RebootNow`: the device restarts after the session, so its next session runs in
/// Machine mode (everyone was logged off), as after any reboot.
#[test]
fn reboot_now_leads_to_a_machine_mode_session() {
    let exec = Command::Exec(item_cmd("rb", "./Device/Vendor/MSFT/Reboot/RebootNow", None, None));
    let server = Server::start(vec![Reply::Syncml(msg(vec![exec])), Reply::Empty, Reply::Empty]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy().into_owned();
    new_device(&state, &server);
    let (code, _, err) = mdmsim(&["sync", "--state", &state, "--trigger", "logon"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("rebooted device") && err.contains("Machine mode"), "{err}");
    let v = sync(&state);
    assert_eq!(v["mode"], "Machine", "the reboot logged everyone off: {v}");
    // The RebootNow was in the first sync's session.
    let msgs = server.device_messages();
    assert_eq!(status(&msgs[1], "rb").as_deref(), Some("200"));
}
