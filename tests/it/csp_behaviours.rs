//! CSP behaviour files over real `mdmsim sync` and `mdmsim run --clock virtual` sessions against
//! the scripted server: ADMX ingestion for the Policy CSP (Microsoft's "Win32 and Desktop Bridge
//! app ADMX policy Ingestion" page), NodeCache's changed nodes, DeviceManageability's
//! CSPVersions and Provider nodes, the Update CSP's approvals ending installed after a reboot,
//! and an EnterpriseModernAppManagement hosted install ending in the inventory.

use mdmsim::syncml::Command;

use crate::support::mdmsim;
use crate::support::server::{Reply, Server, item_cmd, msg, results_of as data, status_of as status};

const ADMX: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<policyDefinitions revision="1.0" schemaVersion="1.0">
  <policyNamespaces><target prefix="contoso" namespace="Contoso.Policies.App" /></policyNamespaces>
  <resources minRequiredRevision="1.0" />
  <categories>
    <category name="ParentCategoryArea" displayName="$(string.Parent)" />
    <category name="Category1" displayName="$(string.Category1)"><parentCategory ref="ParentCategoryArea" /></category>
  </categories>
  <policies>
    <policy name="L_PolicyConfigurationMode" class="Machine" displayName="$(string.Mode)" key="Software\Policies\Contoso" presentation="$(presentation.Mode)">
      <parentCategory ref="Category1" />
      <elements><enum id="L_ConfigurationModeDrop" valueName="Mode"><item displayName="$(string.One)"><value><decimal value="1" /></value></item></enum></elements>
    </policy>
  </policies>
</policyDefinitions>"#;

const ADMX_NODE: &str =
    "./Device/Vendor/MSFT/Policy/ConfigOperations/ADMXInstall/ContosoCompanyApp/Policy/AppAdmxFile01";
const ADMX_POLICY: &str = "./Device/Vendor/MSFT/Policy/Config/ContosoCompanyApp~Policy~ParentCategoryArea~Category1/L_PolicyConfigurationMode";
const ADMX_RESULT: &str = "./Device/Vendor/MSFT/Policy/Result/ContosoCompanyApp~Policy~ParentCategoryArea~Category1/L_PolicyConfigurationMode";
const PAYLOAD: &str = r#"<enabled/><data id="L_ConfigurationModeDrop" value="1"/>"#;

fn add(id: &str, uri: &str, data: Option<&str>) -> Command {
    Command::Add(item_cmd(id, uri, data, Some(if data.is_some() { "chr" } else { "node" })))
}

fn replace(id: &str, uri: &str, data: &str) -> Command {
    Command::Replace(item_cmd(id, uri, Some(data), Some("chr")))
}

fn get(id: &str, uri: &str) -> Command {
    Command::Get(item_cmd(id, uri, None, None))
}

fn exec(id: &str, uri: &str, data: Option<&str>) -> Command {
    Command::Exec(item_cmd(id, uri, data, data.map(|_| "xml")))
}

fn delete(id: &str, uri: &str) -> Command {
    Command::Delete(item_cmd(id, uri, None, None))
}

fn session(commands: Vec<Command>) -> [Reply; 2] {
    [Reply::Syncml(msg(commands)), Reply::Empty]
}

/// A device made from `template` (a shipped fixture name, or none) talking to `server`.
fn device(dir: &std::path::Path, server: &Server, template: Option<&str>) -> String {
    let state = dir.to_string_lossy().into_owned();
    let mut args = vec!["device", "new", "--state", &state, "--server", &server.url, "--seed", "21"];
    let path = template.map(|t| format!("{}/fixtures/templates/{t}", env!("CARGO_MANIFEST_DIR")));
    if let Some(p) = &path {
        args.extend(["--template", p.as_str()]);
    }
    let (code, _, err) = mdmsim(&args);
    assert_eq!(code, 0, "{err}");
    state
}

fn sync(state: &str) {
    let (code, out, err) = mdmsim(&["sync", "--state", state, "--timeout", "10"]);
    assert_eq!(code, 0, "{err}\n{out}");
}

/// An ADMX file ingested by Add makes its policy settable with an ADMX payload, read back by Get
/// in a later session with Policy/Result agreeing; unknown policies are 404, a data id the policy
/// does not have is 400, a malformed file is refused and changes nothing, and Delete of the file
/// removes its policies.
#[test]
fn an_ingested_admx_file_makes_its_policies_settable_until_it_is_deleted() {
    let broken = ADMX.replace("</categories>", "");
    let not_admx = "<policies><policy name=\"x\"/></policies>";
    let bad_payload = r#"<enabled/><data id="NoSuchElement" value="1"/>"#;
    let mut script = Vec::new();
    script.extend(session(vec![
        add("early", ADMX_POLICY, Some(PAYLOAD)),
        add("admx", ADMX_NODE, Some(ADMX)),
        add("broken", &ADMX_NODE.replace("AppAdmxFile01", "Broken"), Some(&broken)),
        add("notadmx", &ADMX_NODE.replace("AppAdmxFile01", "NotAdmx"), Some(not_admx)),
        add("set", ADMX_POLICY, Some(PAYLOAD)),
        replace("badid", ADMX_POLICY, bad_payload),
        add("unknown", &ADMX_POLICY.replace("L_PolicyConfigurationMode", "L_NoSuchPolicy"), Some(PAYLOAD)),
        add("otherapp", &ADMX_POLICY.replace("ContosoCompanyApp", "OtherApp"), Some(PAYLOAD)),
    ]));
    script.extend(session(vec![
        get("g1", ADMX_POLICY),
        get("g2", ADMX_RESULT),
        get("g3", &ADMX_NODE.replace("AppAdmxFile01", "Broken")),
        get("g4", "./Device/Vendor/MSFT/Policy/Result"),
    ]));
    script.extend(session(vec![
        delete("del", ADMX_NODE),
        get("g5", ADMX_POLICY),
        replace("again", ADMX_POLICY, PAYLOAD),
    ]));
    let server = Server::start(script.into_iter().collect());
    let dir = tempfile::tempdir().unwrap();
    let state = device(dir.path(), &server, None);
    sync(&state);
    sync(&state);
    sync(&state);
    let m = server.device_messages();
    let first = &m[1];
    assert_eq!(status(first, "early").as_deref(), Some("404"), "before the ADMX is ingested");
    assert_eq!(status(first, "admx").as_deref(), Some("200"));
    assert_eq!(status(first, "broken").as_deref(), Some("400"), "not well-formed");
    assert_eq!(status(first, "notadmx").as_deref(), Some("415"), "well-formed, not an ADMX");
    assert_eq!(status(first, "set").as_deref(), Some("200"));
    assert_eq!(status(first, "badid").as_deref(), Some("400"));
    assert_eq!(status(first, "unknown").as_deref(), Some("404"));
    assert_eq!(status(first, "otherapp").as_deref(), Some("404"));
    let second = &m[3];
    assert_eq!(data(second, "g1").as_deref(), Some(PAYLOAD), "the payload is kept as sent");
    assert_eq!(data(second, "g2").as_deref(), Some(PAYLOAD), "Result agrees");
    assert_eq!(status(second, "g3").as_deref(), Some("404"), "the refused file left nothing");
    assert!(data(second, "g4").unwrap_or_default().contains("ContosoCompanyApp~Policy~ParentCategoryArea~Category1"));
    let third = &m[5];
    assert_eq!(status(third, "del").as_deref(), Some("200"));
    assert_eq!(status(third, "g5").as_deref(), Some("404"), "Delete of the file removed the policy");
    assert_eq!(status(third, "again").as_deref(), Some("404"));
}

/// NodeCache as Intune uses it: nodes with expected values, then ChangedNodes and
/// ChangedNodesData list the one that differs; DeviceManageability's Provider nodes take values
/// and CSPVersions lists the device's CSPs; the template's packages and installed update read.
#[test]
fn nodecache_reports_changed_nodes_and_device_manageability_lists_csps() {
    let p = "./Vendor/MSFT/NodeCache/MS%20DM%20Server";
    let mut script = Vec::new();
    script.extend(session(vec![
        add("n", p, None),
        replace("v", &format!("{p}/CacheVersion"), "1"),
        add("u1", &format!("{p}/Nodes/1/NodeURI"), Some("./Vendor/MSFT/DeviceStatus/TPM/SpecificationVersion")),
        add("e1", &format!("{p}/Nodes/1/ExpectedValue"), Some("2.0")),
        add("u2", &format!("{p}/Nodes/2/NodeURI"), Some("./DevDetail/Ext/Microsoft/DeviceName")),
        add("e2", &format!("{p}/Nodes/2/ExpectedValue"), Some("OLD-NAME")),
        add("pv", "./Device/Vendor/MSFT/DeviceManageability/Provider/Contoso", None),
        add("ci", "./Device/Vendor/MSFT/DeviceManageability/Provider/Contoso/ConfigInfo", Some("tenant=42")),
    ]));
    script.extend(session(vec![
        get("cv", &format!("{p}/CacheVersion")),
        get("cn", &format!("{p}/ChangedNodes")),
        get("cd", &format!("{p}/ChangedNodesData")),
        get("gi", "./Device/Vendor/MSFT/DeviceManageability/Provider/Contoso/ConfigInfo"),
        get("vs", "./Device/Vendor/MSFT/DeviceManageability/Capabilities/CSPVersions"),
        get("inv", "./Device/Vendor/MSFT/EnterpriseModernAppManagement/AppManagement/AppInventoryResults"),
        get("iu", "./Vendor/MSFT/Update/InstalledUpdates"),
    ]));
    let server = Server::start(script.into_iter().collect());
    let dir = tempfile::tempdir().unwrap();
    let state = device(dir.path(), &server, Some("win11-laptop.toml"));
    sync(&state);
    sync(&state);
    let m = server.device_messages();
    for id in ["n", "v", "u1", "e1", "u2", "e2", "pv", "ci"] {
        assert_eq!(status(&m[1], id).as_deref(), Some("200"), "{id}");
    }
    let later = &m[3];
    assert_eq!(data(later, "cv").as_deref(), Some("1"));
    assert_eq!(data(later, "cn").as_deref(), Some("2"), "the DeviceName differs, the TPM version does not");
    // base64("LAPTOP-K2V9QW4M"), the template's DeviceName.
    assert_eq!(
        data(later, "cd").as_deref(),
        Some(r#"<Nodes><Node Id="2" Uri="./DevDetail/Ext/Microsoft/DeviceName">TEFQVE9QLUsyVjlRVzRN</Node></Nodes>"#)
    );
    assert_eq!(data(later, "gi").as_deref(), Some("tenant=42"));
    let versions = data(later, "vs").unwrap_or_default();
    for node in
        ["./DevDetail", "./Device/Vendor/MSFT/Policy", "./Device/Vendor/MSFT/NodeCache", "./Device/Vendor/MSFT/Update"]
    {
        assert!(versions.contains(&format!(r#"<CSP Node="{node}" Version=""#)), "{node}: {versions}");
    }
    let inventory = data(later, "inv").unwrap_or_default();
    assert!(
        inventory.contains(r#"<Package PackageFamilyName="Microsoft.WindowsCalculator_8wekyb3d8bbwe" PackageFullName="Microsoft.WindowsCalculator_11.2410.0.0_x64__8wekyb3d8bbwe" Name="Microsoft.WindowsCalculator" Version="11.2410.0.0""#)
            && inventory.contains(r#"PackageFamilyName="Microsoft.CompanyPortal_8wekyb3d8bbwe""#)
            && inventory.contains(r#"Source="AppStore""#),
        "{inventory}"
    );
    assert_eq!(data(later, "iu").as_deref(), Some("4e5c1d5f-9a55-4a0b-9b6e-3c1f3b8e2d7a"));
}

/// `mdmsim run --clock virtual`: a hosted install goes INSTALLING → INSTALLED on the device's
/// timers and the package appears in the inventory query's results; an approved update installs,
/// waits for a restart, and RebootNow completes it.
#[test]
fn a_hosted_install_and_an_approved_update_finish_on_the_device_timers() {
    let pfn = "Contoso.Expenses_8wekyb3d8bbwe";
    let app = format!("./Device/Vendor/MSFT/EnterpriseModernAppManagement/AppInstallation/{pfn}");
    let query = "./Device/Vendor/MSFT/EnterpriseModernAppManagement/AppManagement/AppInventoryQuery";
    let results = "./Device/Vendor/MSFT/EnterpriseModernAppManagement/AppManagement/AppInventoryResults";
    let guid = "6b4a3f6c-1c3a-4f8e-9d3b-2a6f5e4c3b21";
    let upd = "./Vendor/MSFT/Update";
    let payload = r#"<Application PackageUri="https://cdn.contoso.com/expenses.msix" DeploymentOptions="0"/>"#;
    let mut script = Vec::new();
    // 08:00 enrollment session.
    script.extend(session(vec![
        exec("hi", &format!("{app}/HostedInstall"), Some(payload)),
        exec(
            "bad",
            "./Device/Vendor/MSFT/EnterpriseModernAppManagement/AppInstallation/NoPublisher/HostedInstall",
            Some(payload),
        ),
        get("s0", &format!("{app}/Status")),
        add("ap", &format!("{upd}/ApprovedUpdates/{guid}"), None),
        replace("q", query, r#"<Inventory Output="PackageNames" Source="nonStore"/>"#),
    ]));
    // 08:01:30: downloaded, not installed yet.
    script.extend(session(vec![get("s1", &format!("{app}/Status")), get("p1", &format!("{app}/ProgressStatus"))]));
    // 08:15: installed; the update waits for a restart; reboot now.
    script.extend(session(vec![
        get("s2", &format!("{app}/Status")),
        get("r2", results),
        get("pr", &format!("{upd}/PendingRebootUpdates")),
        get("ie", "./Device/Vendor/MSFT/EnterpriseModernAppManagement/AppInstallation/NoPublisher/LastError"),
        exec("rb", "./Device/Vendor/MSFT/Reboot/RebootNow", None),
    ]));
    // The reboot's own session, then 08:20.
    script.extend(session(vec![]));
    script.extend(session(vec![
        get("iu", &format!("{upd}/InstalledUpdates/{guid}/RevisionNumber")),
        get("pr2", &format!("{upd}/PendingRebootUpdates")),
    ]));
    let server = Server::start(script.into_iter().collect());
    let dir = tempfile::tempdir().unwrap();
    let state = device(dir.path(), &server, None);
    let events = dir.path().join("events.toml");
    std::fs::write(&events, "[[event]]\nat = \"+90s\"\nkind = \"sync\"\n[[event]]\nat = \"+15m\"\nkind = \"sync\"\n[[event]]\nat = \"+20m\"\nkind = \"sync\"\n").unwrap();
    let (code, out, err) = mdmsim(&[
        "run",
        "--state",
        &state,
        "--clock",
        "virtual",
        "--start",
        "2026-03-02T08:00:00Z",
        "--until",
        "25m",
        "--events",
        &events.to_string_lossy(),
        "--json",
        "--timeout",
        "10",
    ]);
    assert_eq!(code, 0, "{err}\n{out}");
    let m = server.device_messages();
    assert_eq!(m.len(), 10, "five sessions of two messages: {out}");
    let s = |i: usize| &m[2 * i + 1];
    assert_eq!(status(s(0), "hi").as_deref(), Some("200"));
    assert_eq!(status(s(0), "bad").as_deref(), Some("400"));
    assert_eq!(data(s(0), "s0").as_deref(), Some("1"), "INSTALLING");
    assert_eq!(status(s(0), "ap").as_deref(), Some("200"));
    assert_eq!(status(s(0), "q").as_deref(), Some("200"));
    assert_eq!(data(s(1), "s1").as_deref(), Some("1"));
    assert_eq!(data(s(1), "p1").as_deref(), Some("100"));
    assert_eq!(data(s(2), "s2").as_deref(), Some("3"), "INSTALLED");
    assert_eq!(
        data(s(2), "r2").as_deref(),
        Some(
            r#"<Inventory><Package PackageFamilyName="Contoso.Expenses_8wekyb3d8bbwe" PackageFullName="Contoso.Expenses_1.0.0.0_x64__8wekyb3d8bbwe"/></Inventory>"#
        )
    );
    assert_eq!(data(s(2), "pr").as_deref(), Some(guid), "installed, waiting for a restart");
    assert_eq!(data(s(2), "ie").as_deref(), Some("-2147024809"), "the refused install's E_INVALIDARG");
    assert_eq!(status(s(2), "rb").as_deref(), Some("200"));
    assert_eq!(data(s(4), "iu").as_deref(), Some("1"), "the restart installed it");
    assert_eq!(data(s(4), "pr2").as_deref(), Some(""));
}
