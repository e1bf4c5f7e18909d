//! CSPs known by their DDF facts, over real `mdmsim sync` sessions against a scripted server:
//! a Fleet-style profile (an Atomic of Policy Replaces) applied and read back by Get in a later
//! session with `Policy/Result` agreeing, refused values, a CSP only its DDF describes
//! (BitLocker), and RebootNow leading to a Machine-mode session.

use mdmsim::syncml::{Command, Container};
use serde_json::Value;

use crate::support::mdmsim;
use crate::support::server::{Reply, Server, item_cmd, msg, results_of as data, status_of as status};

fn replace(id: &str, uri: &str, data: &str) -> Command {
    Command::Replace(item_cmd(id, uri, Some(data), Some("int")))
}

fn get(id: &str, uri: &str) -> Command {
    Command::Get(item_cmd(id, uri, None, None))
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
    assert!(err.contains("rebooted (Reboot/RebootNow)") && err.contains("Machine mode"), "{err}");
    let v = sync(&state);
    assert_eq!(v["mode"], "Machine", "the reboot logged everyone off: {v}");
    // The RebootNow was in the first sync's session.
    let msgs = server.device_messages();
    assert_eq!(status(&msgs[1], "rb").as_deref(), Some("200"));
}

/// An inventory session as open-source servers run it: 33 Gets across DevInfo, DevDetail,
/// DeviceStatus, BitLocker, licensing, the Policy CSP's Result and the WMI bridge. A Windows 11
/// device made from the shipped template answers every one with 200 and its values.
#[test]
fn a_33_get_inventory_gets_the_answers_of_a_windows_11_device() {
    let uris = [
        "./DevInfo/DevId",
        "./DevInfo/Man",
        "./DevInfo/Mod",
        "./DevInfo/Lang",
        "./DevDetail/SwV",
        "./DevDetail/OEM",
        "./DevDetail/FwV",
        "./DevDetail/Ext/Microsoft/DeviceName",
        "./DevDetail/Ext/Microsoft/OSPlatform",
        "./DevDetail/Ext/Microsoft/TotalRAM",
        "./DevDetail/Ext/Microsoft/SMBIOSSerialNumber",
        "./DevDetail/Ext/Microsoft/ProcessorArchitecture",
        "./Vendor/MSFT/DeviceStatus/SecureBootState",
        "./Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance",
        "./Vendor/MSFT/DeviceStatus/TPM/SpecificationVersion",
        "./Vendor/MSFT/DeviceStatus/OS/Edition",
        "./Vendor/MSFT/DeviceStatus/OS/Mode",
        "./Vendor/MSFT/DeviceStatus/Antivirus/Status",
        "./Vendor/MSFT/DeviceStatus/Antivirus/SignatureStatus",
        "./Vendor/MSFT/DeviceStatus/Firewall/Status",
        "./Vendor/MSFT/DeviceStatus/UAC/Status",
        "./Vendor/MSFT/DeviceStatus/Battery/EstimatedChargeRemaining",
        "./Vendor/MSFT/DeviceStatus/DeviceGuard/VirtualizationBasedSecurityStatus",
        "./Device/Vendor/MSFT/BitLocker/Status/DeviceEncryptionStatus",
        "./Vendor/MSFT/WindowsLicensing/Edition",
        "./Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera",
        "./Device/Vendor/MSFT/Policy/Result/Update/ActiveHoursStart",
        "./Device/Vendor/MSFT/Policy/Result/Bluetooth/AllowDiscoverableMode",
        "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@/Caption",
        "./cimV2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='C:'/FreeSpace",
        "./cimv2/Win32_ComputerSystem/Win32_ComputerSystem.Name=%22LAPTOP-K2V9QW4M%22/Manufacturer",
        "./cimV2/Win32_PhysicalMemory/Win32_PhysicalMemory.Tag='Physical%20Memory%200'/Capacity",
        "./Vendor/MSFT/DMClient/HWDevID",
    ];
    assert_eq!(uris.len(), 33);
    let gets: Vec<Command> = uris.iter().enumerate().map(|(i, u)| get(&format!("g{i}"), u)).collect();
    let server = Server::start(vec![Reply::Syncml(msg(gets)), Reply::Empty]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy().into_owned();
    let template = format!("{}/fixtures/templates/win11-laptop.toml", env!("CARGO_MANIFEST_DIR"));
    let (code, _, err) =
        mdmsim(&["device", "new", "--state", &state, "--server", &server.url, "--template", &template, "--seed", "4"]);
    assert_eq!(code, 0, "{err}");
    sync(&state);
    let answer = &server.device_messages()[1];
    let mut missing = Vec::new();
    for (i, u) in uris.iter().enumerate() {
        if status(answer, &format!("g{i}")).as_deref() != Some("200") {
            missing.push(format!("{u}: {:?}", status(answer, &format!("g{i}"))));
        }
    }
    assert!(missing.is_empty(), "not answered 200: {missing:#?}");
    let value = |u: &str| data(answer, &format!("g{}", uris.iter().position(|x| *x == u).unwrap()));
    assert_eq!(value("./Vendor/MSFT/DeviceStatus/SecureBootState").as_deref(), Some("1"));
    assert_eq!(value("./Vendor/MSFT/DeviceStatus/TPM/SpecificationVersion").as_deref(), Some("2.0"));
    assert_eq!(value("./Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera").as_deref(), Some("1"));
    assert!(value("./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@/Caption").unwrap().contains("Windows 11"));
}
