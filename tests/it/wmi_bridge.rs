//! The WMI bridge over real sessions: the inventory a server such as Fleet reads with Gets on
//! `./cimv2/Win32_*` (both profiles, values from the device template, names in any case), and
//! the Windows 8.1 methods: the server-initiated unenrollment through
//! `./cimv2/MDM_Client/...Exec=SendUnenrollRequest` in a Machine-mode session (allowed there by
//! the operation modes post), the WNS configuration refused in Machine mode, and neither on Windows 10.

use mdmsim::syncml::{Command, Item, ItemCmd, SyncMl};
use serde_json::Value;

use crate::support::mdmsim;
use crate::support::server::{Reply, Server, msg};

fn exec(id: &str, uri: &str) -> Command {
    Command::Exec(ItemCmd { cmd_id: id.into(), items: vec![Item::target(uri)], ..ItemCmd::default() })
}

fn get(id: &str, uri: &str) -> Command {
    Command::Get(ItemCmd { cmd_id: id.into(), items: vec![Item::target(uri)], ..ItemCmd::default() })
}

fn replace(id: &str, uri: &str, data: &str) -> Command {
    let mut item = Item::target(uri);
    item.data = Some(data.into());
    Command::Replace(ItemCmd { cmd_id: id.into(), items: vec![item], ..ItemCmd::default() })
}

/// A template shipped in `fixtures/templates`.
fn template(name: &str) -> String {
    format!("{}/fixtures/templates/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One session of a device made from `template` against a server sending `commands`; gives
/// the device's answer (its second message).
fn answer(template: &str, commands: Vec<Command>) -> SyncMl {
    let server = Server::start(vec![Reply::Syncml(msg(commands)), Reply::Empty]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy().into_owned();
    let (code, _, err) =
        mdmsim(&["device", "new", "--state", &state, "--server", &server.url, "--template", template, "--seed", "7"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = mdmsim(&["sync", "--state", &state]);
    assert_eq!(code, 0, "{err}");
    let messages = server.device_messages();
    assert!(messages.len() >= 2, "the device answered the Gets");
    messages[1].clone()
}

/// The Status code the device sent for command `id`.
fn status(answer: &SyncMl, id: &str) -> Option<String> {
    answer.body.commands.iter().find_map(|c| match c {
        Command::Status(s) if s.cmd_ref == id => Some(s.data.clone()),
        _ => None,
    })
}

/// (Source LocURI, Format, Data) of the Results item for command `id`.
fn result(answer: &SyncMl, id: &str) -> Option<(String, String, String)> {
    answer.body.commands.iter().find_map(|c| match c {
        Command::Results(r) if r.cmd_ref == id => r.items.first().map(|i| {
            (
                i.source.clone().unwrap_or_default().trim().to_string(),
                i.meta.as_ref().and_then(|m| m.format.clone()).unwrap_or_default(),
                i.data.clone().unwrap_or_default(),
            )
        }),
        _ => None,
    })
}

const MIB: u64 = 1024 * 1024;

#[test]
fn a_win10_device_answers_fleets_inventory_gets_with_template_values() {
    // Fleet's Windows MDM inventory LocURIs, verbatim (./cimV2 and ./cimv2, single quotes).
    let fleet = [
        ("1", "./cimV2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='C:'/Size", "int", (976762 * MIB).to_string()),
        ("2", "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='C:'/FreeSpace", "int", "612345678848".into()),
        ("3", "./cimV2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='C:'/FileSystem", "chr", "NTFS".into()),
        (
            "4",
            "./cimV2/Win32_PhysicalMemory/Win32_PhysicalMemory.Tag='Physical%20Memory%200'/Capacity",
            "int",
            (32768 * MIB).to_string(),
        ),
        // The same instances percent-encoded, and the other inventory classes.
        (
            "5",
            "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID=%22C%3A%22/FreeSpace",
            "int",
            "612345678848".into(),
        ),
        (
            "6",
            "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@/Caption",
            "chr",
            "Microsoft Windows 11 Enterprise".into(),
        ),
        ("7", "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@/Version", "chr", "10.0.26100".into()),
        ("8", "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@/BuildNumber", "chr", "26100".into()),
        (
            "9",
            "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@/InstallDate",
            "chr",
            "20250211150327.000000+060".into(),
        ),
        (
            "10",
            "./cimv2/Win32_ComputerSystem/Win32_ComputerSystem.Name=%22LAPTOP-K2V9QW4M%22/Manufacturer",
            "chr",
            "LENOVO".into(),
        ),
        (
            "11",
            "./cimv2/Win32_ComputerSystem/Win32_ComputerSystem.Name=%22LAPTOP-K2V9QW4M%22/Model",
            "chr",
            "21HMCTO1WW".into(),
        ),
        (
            "12",
            "./cimv2/Win32_ComputerSystem/Win32_ComputerSystem.Name=%22LAPTOP-K2V9QW4M%22/TotalPhysicalMemory",
            "int",
            (32768 * MIB).to_string(),
        ),
        ("13", "./cimv2/Win32_LogicalDisk", "node", "Win32_LogicalDisk.DeviceID=\"C:\"".into()),
        (
            "14",
            "./cimv2/Win32_PhysicalMemory/Win32_PhysicalMemory.Tag='Physical%20Memory%200'/Speed",
            "int",
            "6400".into(),
        ),
    ];
    let a = answer(&template("win11-laptop.toml"), fleet.iter().map(|(id, uri, _, _)| get(id, uri)).collect());
    for (id, uri, format, want) in &fleet {
        assert_eq!(status(&a, id).as_deref(), Some("200"), "{uri}");
        assert_eq!(result(&a, id), Some((uri.to_string(), format.to_string(), want.clone())), "{uri}");
    }
    // The BIOS is listed with its five keys; its serial is DevDetail's.
    let a = answer(&template("win11-laptop.toml"), vec![get("1", "./cimv2/Win32_BIOS")]);
    let (_, _, bios) = result(&a, "1").unwrap();
    assert!(bios.starts_with("Win32_BIOS.Name=\"R2EET41W (1.22 )\",SoftwareElementID="), "{bios}");
    let seg = mdmsim::tree::encode_segment(&bios);
    let a = answer(&template("win11-laptop.toml"), vec![get("1", &format!("./cimv2/Win32_BIOS/{seg}/SerialNumber"))]);
    assert_eq!(result(&a, "1").map(|r| r.2).as_deref(), Some("PF4XK2QZ"));
}

#[test]
fn wmi_names_answer_in_any_case_and_the_results_echo_the_uri_sent() {
    let uri = "./cimV2/win32_operatingsystem/WIN32_OPERATINGSYSTEM=@/osarchitecture";
    let disk = "./CIMV2/WIN32_LOGICALDISK/win32_logicaldisk.deviceid='e:'/filesystem";
    let a = answer(&template("win10-desktop.toml"), vec![get("1", uri), get("2", disk)]);
    assert_eq!(result(&a, "1"), Some((uri.into(), "chr".into(), "64-bit".into())));
    assert_eq!(result(&a, "2"), Some((disk.into(), "chr".into(), "exFAT".into())));
}

#[test]
fn unknown_wmi_nodes_are_404_and_writes_405() {
    let c = "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='C:'";
    let a = answer(
        &template("win10-desktop.toml"),
        vec![
            get("1", &format!("{c}/VolumeSerialNumber")),
            get("2", "./cimv2/Win32_LogicalDisk/Win32_LogicalDisk.DeviceID='Z:'/Size"),
            get("3", "./cimv2/Win32_Processor/Win32_Processor.DeviceID='CPU0'/Name"),
            replace("4", &format!("{c}/VolumeName"), "Data"),
            // Two modules on this template: the first holds half of TotalRAM.
            get("5", "./cimv2/Win32_PhysicalMemory/Win32_PhysicalMemory.Tag='Physical%20Memory%200'/Capacity"),
            get("6", "./cimv2/Win32_ComputerSystem/Win32_ComputerSystem.Name='DESKTOP-8QJ3N5T'/Domain"),
        ],
    );
    let codes: Vec<Option<String>> = ["1", "2", "3", "4", "5", "6"].iter().map(|id| status(&a, id)).collect();
    let want = ["404", "404", "404", "405", "200", "200"].map(|c| Some(c.to_string()));
    assert_eq!(codes, want);
    assert_eq!(result(&a, "5").map(|r| r.2), Some((8192 * MIB).to_string()));
    assert_eq!(result(&a, "6").map(|r| r.2).as_deref(), Some("CONTOSO"));
}

#[test]
fn the_windows_8_1_methods_are_not_on_a_win10_device() {
    let unenroll = "./cimv2/MDM_Client/MDM_Client.DeviceClientID=%22mdmsim%22/Exec=SendUnenrollRequest";
    let a = answer(&template("win11-laptop.toml"), vec![exec("u1", unenroll), get("g1", "./cimv2")]);
    assert_eq!(status(&a, "u1").as_deref(), Some("404"));
    let (_, _, classes) = result(&a, "g1").unwrap();
    assert!(classes.contains("Win32_OperatingSystem") && !classes.contains("MDM_Client"), "{classes}");
    let a = answer(
        &template("win81-tablet.toml"),
        vec![get("g1", "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem=@/Caption")],
    );
    assert_eq!(result(&a, "g1").map(|r| r.2).as_deref(), Some("Microsoft Windows 8.1 Pro"));
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
