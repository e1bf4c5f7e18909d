//! The reference server's configuration profiles and MSI installs, driven by hand-written
//! SyncML (never the device side code) over HTTP on loopback: the profile's Atomic of
//! Replaces, its verification by Get in a later session (verified, sent again, failed
//! verification), a failed Atomic with its codes, a profile file in Fleet's format, the MSI's
//! Add + Exec with its `MsiInstallJob`, the install alert and the Status polls; then real
//! devices (`mdmsim run` on the virtual clock) that verify the demo's profile.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use mdmsim::server::{self, Config, MsiState, ProfileState, ServerHandle, ServerOptions};
use mdmsim::syncml::{self, Command, SyncMl};

use crate::support::{mdmsim, post_syncml};

const DEV: &str = "0123456789ABCDEF0123456789ABCDEF";
const POLICY: &str = "./Device/Vendor/MSFT/Policy/Config";
const FLEETD: &str = "{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}";
const MSI_NODE: &str =
    "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7BA427C0AA-E2D5-40DF-ACE8-0D726A6BE096%7D";

/// One profile of three Policy settings (a string, a TOML integer, an explicit format), auth
/// none so that no enrollment is needed.
const PROFILE: &str = r#"
[management]
auth = "none"

[[profiles]]
name = "Baseline"

[[profiles.settings]]
loc_uri = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera"
format = "int"
data = "0"

[[profiles.settings]]
loc_uri = "./Device/Vendor/MSFT/Policy/Config/Update/ActiveHoursStart"
data = 9

[[profiles.settings]]
loc_uri = "./Device/Vendor/MSFT/Policy/Config/Update/ActiveHoursEnd"
format = "int"
data = "17"
"#;

async fn start(config: Config) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOptions::local(dir.path());
    opts.http = true;
    opts.config = config;
    (server::start(opts).await.unwrap(), dir)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

fn hdr(session: &str, msg: u32) -> String {
    format!(
        "<SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>{session}</SessionID><MsgID>{msg}</MsgID>\
         <Target><LocURI>https://mdm.test/ManagementServer/MDM.svc</LocURI></Target><Source><LocURI>{DEV}</LocURI></Source></SyncHdr>"
    )
}

/// Package 1 (MS-MDM): the session alert, the LoginStatus, DevInfo, and `extra` commands.
fn pkg1(session: &str, login: &str, extra: &str) -> String {
    format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2">{}<SyncBody>
 <Alert><CmdID>1</CmdID><Data>1201</Data></Alert>
 <Alert><CmdID>2</CmdID><Data>1224</Data><Item><Meta><Type xmlns="syncml:metinf">com.microsoft/MDM/LoginStatus</Type></Meta><Data>{login}</Data></Item></Alert>
 <Replace><CmdID>3</CmdID><Item><Source><LocURI>./DevInfo/DevId</LocURI></Source><Data>{DEV}</Data></Item></Replace>
 {extra}<Final/></SyncBody></SyncML>"#,
        hdr(session, 1)
    )
}

/// The server's commands (not its Statuses).
fn ours(m: &SyncMl) -> Vec<&Command> {
    m.body.commands.iter().filter(|c| !matches!(c, Command::Status(_))).collect()
}

fn target(c: &Command) -> String {
    match c {
        Command::Get(i) | Command::Add(i) | Command::Replace(i) | Command::Exec(i) => {
            i.items[0].target.clone().unwrap_or_default()
        }
        _ => String::new(),
    }
}

fn status(n: &mut usize, cmd_ref: &str, cmd: &str, code: u16) -> String {
    *n += 1;
    format!(
        "<Status><CmdID>{n}</CmdID><MsgRef>1</MsgRef><CmdRef>{cmd_ref}</CmdRef><Cmd>{cmd}</Cmd><Data>{code}</Data></Status>"
    )
}

/// Message 2 of a session: the device's Statuses (and Results) for every command of the
/// server's answer `m`, as `decide(command, target)` gives them. An Atomic gets 200 when every
/// command in it succeeded, else 507 with 216 for the commands that succeeded (rolled back),
/// as a device answers it.
fn answer(session: &str, m: &SyncMl, mut decide: impl FnMut(&str, &str) -> (u16, Option<String>)) -> String {
    let mut n = 1;
    let mut body = String::new();
    for c in ours(m) {
        if let Command::Atomic(a) = c {
            let codes: Vec<u16> = a.commands.iter().map(|k| decide(k.name(), &target(k)).0).collect();
            let failed = codes.iter().any(|c| *c >= 300);
            body.push_str(&status(&mut n, &a.cmd_id, "Atomic", if failed { 507 } else { 200 }));
            for (k, code) in a.commands.iter().zip(codes) {
                let code = if failed && code < 300 { 216 } else { code };
                body.push_str(&status(&mut n, k.cmd_id(), k.name(), code));
            }
            continue;
        }
        let (code, data) = decide(c.name(), &target(c));
        body.push_str(&status(&mut n, c.cmd_id(), c.name(), code));
        if let Some(data) = data {
            n += 1;
            body.push_str(&format!(
                "<Results><CmdID>{n}</CmdID><MsgRef>1</MsgRef><CmdRef>{}</CmdRef><Item><Source><LocURI>{}</LocURI></Source><Data>{data}</Data></Item></Results>",
                c.cmd_id(),
                target(c)
            ));
        }
    }
    format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2">{}<SyncBody><Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>{body}<Final/></SyncBody></SyncML>"#,
        hdr(session, 2)
    )
}

/// A device that takes every write and reads back `values` (LocURI -> value; 404 for others).
fn device_with<'a>(values: &'a [(&'a str, &'a str)]) -> impl FnMut(&str, &str) -> (u16, Option<String>) + 'a {
    move |cmd, uri| match cmd {
        "Get" => match values.iter().find(|(u, _)| *u == uri) {
            Some((_, v)) => (200, Some(v.to_string())),
            None => (404, None),
        },
        _ => (200, None),
    }
}

/// One session: package 1 in `mode`, then the device's answer as `decide` gives it; returns
/// the server's commands of package 1's answer.
async fn session(
    c: &reqwest::Client,
    h: &ServerHandle,
    id: &str,
    mode: &str,
    decide: impl FnMut(&str, &str) -> (u16, Option<String>),
) -> SyncMl {
    let login = if mode == "Machine" { "none" } else { "user" };
    let m = post_syncml(c, h, mode, &pkg1(id, login, "")).await.expect("an answer to package 1");
    let end = post_syncml(c, h, mode, &answer(id, &m, decide)).await;
    assert!(end.is_none(), "the session ends after the device's answer: {}", syncml::pretty(&end.unwrap()));
    m
}

fn summary_of(m: &SyncMl) -> Vec<(String, String)> {
    ours(m).iter().map(|c| (c.name().to_string(), target(c))).collect()
}

#[tokio::test]
async fn a_profile_goes_once_as_an_atomic_of_replaces_and_is_verified_by_gets_in_a_later_session() {
    let (h, _dir) = start(Config::parse(PROFILE, "profile.toml").unwrap()).await;
    let c = client();
    let uris = [
        format!("{POLICY}/Camera/AllowCamera"),
        format!("{POLICY}/Update/ActiveHoursStart"),
        format!("{POLICY}/Update/ActiveHoursEnd"),
    ];

    // Machine mode: nothing of the profile.
    let m = session(&c, &h, "1", "Machine", device_with(&[])).await;
    assert!(ours(&m).is_empty(), "{}", syncml::pretty(&m));
    assert_eq!(h.device(DEV).unwrap().profiles["Baseline"].state, ProfileState::Pending);

    // Maintenance: one Atomic, a Replace per setting, each with its own UUID CmdID, Format and Data.
    let m = session(&c, &h, "2", "Maintenance", device_with(&[])).await;
    let cmds = ours(&m);
    assert_eq!(cmds.len(), 1, "{}", syncml::pretty(&m));
    let Command::Atomic(atomic) = cmds[0] else { panic!("an Atomic: {}", syncml::pretty(&m)) };
    let mut ids = vec![atomic.cmd_id.clone()];
    let mut sent = Vec::new();
    for child in &atomic.commands {
        let Command::Replace(r) = child else { panic!("only Replaces in the Atomic: {child:?}") };
        ids.push(r.cmd_id.clone());
        let item = &r.items[0];
        sent.push((
            item.target.clone().unwrap(),
            item.meta.as_ref().and_then(|m| m.format.clone()).unwrap(),
            item.data.clone().unwrap(),
        ));
    }
    assert_eq!(
        sent,
        [
            (uris[0].clone(), "int".to_string(), "0".to_string()),
            (uris[1].clone(), "int".to_string(), "9".to_string()),
            (uris[2].clone(), "int".to_string(), "17".to_string()),
        ]
    );
    assert!(ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()), "UUID CmdIDs: {ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "CmdIDs are unique");
    let rec = h.device(DEV).unwrap().profiles["Baseline"].clone();
    assert_eq!((rec.state, rec.attempts), (ProfileState::Delivered, 1));
    assert!(rec.settings.iter().all(|s| s.delivery_status == Some(200)), "{rec:?}");

    // A later Maintenance session: a Get per LocURI, and the values read back match.
    let values = [(uris[0].as_str(), "0"), (uris[1].as_str(), "9"), (uris[2].as_str(), " 17 ")];
    let m = session(&c, &h, "3", "Maintenance", device_with(&values)).await;
    let gets: Vec<_> = summary_of(&m);
    assert_eq!(gets, uris.iter().map(|u| ("Get".to_string(), u.clone())).collect::<Vec<_>>());
    let rec = h.device(DEV).unwrap().profiles["Baseline"].clone();
    assert_eq!(rec.state, ProfileState::Verified, "{rec:?}");
    assert!(rec.verified_at.is_some() && rec.detail.is_none());
    assert_eq!(rec.settings[2].found.as_deref(), Some(" 17 "));

    // Settled: no more commands, and the records say so.
    let m = session(&c, &h, "4", "Maintenance", device_with(&[])).await;
    assert!(ours(&m).is_empty(), "{}", syncml::pretty(&m));
    let summary = h.summary();
    assert_eq!((summary.profiles_verified, summary.profiles_pending, summary.profiles_failed), (1, 0, 0));
    let admin = |path: &str| c.get(format!("{}{path}", h.base_url)).bearer_auth(h.admin_token()).send();
    let json: serde_json::Value = admin("/admin/devices").await.unwrap().json().await.unwrap();
    assert_eq!(json[0]["profiles"]["Baseline"]["state"], "Verified");
    assert_eq!(json[0]["profiles"]["Baseline"]["settings"][1]["expected"], "9");
    let json: serde_json::Value = admin("/admin/summary").await.unwrap().json().await.unwrap();
    assert_eq!(json["profiles_verified"], 1);
    h.shutdown().await;
}

#[tokio::test]
async fn a_device_answering_other_values_gets_the_profile_again_then_fails_verification() {
    let (h, _dir) = start(Config::parse(PROFILE, "profile.toml").unwrap()).await;
    let c = client();
    let (camera, start_, end) = (
        format!("{POLICY}/Camera/AllowCamera"),
        format!("{POLICY}/Update/ActiveHoursStart"),
        format!("{POLICY}/Update/ActiveHoursEnd"),
    );
    // The camera stays allowed (1) whatever the server sets, and ActiveHoursEnd is not there.
    let values = [(camera.as_str(), "1"), (start_.as_str(), "9")];
    session(&c, &h, "1", "Maintenance", device_with(&values)).await;
    let m = session(&c, &h, "2", "Maintenance", device_with(&values)).await;
    assert_eq!(ours(&m).len(), 3, "the verification Gets");
    let rec = h.device(DEV).unwrap().profiles["Baseline"].clone();
    // Fleet's MaxProfileRetries (1): sent again once.
    assert_eq!((rec.state, rec.retries), (ProfileState::Pending, 1));
    let detail = rec.detail.unwrap();
    assert!(detail.starts_with("sent again after verification found: "), "{detail}");
    assert!(detail.contains(&format!(r#"{camera}: expected "0", found "1""#)), "{detail}");
    assert!(detail.contains(&format!(r#"{end}: expected "17", found nothing (Get status 404)"#)), "{detail}");

    let m = session(&c, &h, "3", "Maintenance", device_with(&values)).await;
    assert!(matches!(ours(&m)[..], [Command::Atomic(_)]), "the profile again: {}", syncml::pretty(&m));
    session(&c, &h, "4", "Maintenance", device_with(&values)).await;
    let rec = h.device(DEV).unwrap().profiles["Baseline"].clone();
    assert_eq!((rec.state, rec.attempts, rec.retries), (ProfileState::FailedVerification, 2, 1));
    assert_eq!(
        rec.detail.as_deref(),
        Some(
            format!(r#"{camera}: expected "0", found "1", {end}: expected "17", found nothing (Get status 404)"#)
                .as_str()
        )
    );
    let camera_rec = &rec.settings[0];
    assert_eq!((camera_rec.get_status, camera_rec.found.as_deref()), (Some(200), Some("1")));
    // Failed for good: nothing more is sent.
    let m = session(&c, &h, "5", "Maintenance", device_with(&values)).await;
    assert!(ours(&m).is_empty());
    assert_eq!(h.summary().profiles_failed_verification, 1);
}

#[tokio::test]
async fn a_failed_atomic_is_recorded_with_its_code_and_each_commands_with_numbered_cmdids() {
    let text = format!("{PROFILE}\n[compat]\npreset = \"minimal\"\n");
    let (h, _dir) = start(Config::parse(&text, "profile.toml").unwrap()).await;
    let c = client();
    let m = session(&c, &h, "1", "Maintenance", |_, uri| {
        if uri.ends_with("ActiveHoursStart") {
            (400, None)
        } else if uri.ends_with("ActiveHoursEnd") {
            (404, None)
        } else {
            (200, None)
        }
    })
    .await;
    let Command::Atomic(a) = ours(&m)[0] else { panic!() };
    let ids: Vec<&str> = std::iter::once(a.cmd_id.as_str()).chain(a.commands.iter().map(Command::cmd_id)).collect();
    assert!(ids.iter().all(|id| id.parse::<u32>().is_ok()), "the minimal preset numbers CmdIDs: {ids:?}");
    let rec = h.device(DEV).unwrap().profiles["Baseline"].clone();
    assert_eq!(rec.state, ProfileState::Failed);
    assert_eq!(
        rec.detail.as_deref(),
        Some(
            format!(
                "Atomic status 507; {POLICY}/Camera/AllowCamera: status 216, {POLICY}/Update/ActiveHoursStart: status 400, {POLICY}/Update/ActiveHoursEnd: status 404"
            )
            .as_str()
        )
    );
    let codes: Vec<_> = rec.settings.iter().map(|s| s.delivery_status).collect();
    assert_eq!(codes, [Some(216), Some(400), Some(404)]);
    // As Fleet: a failed delivery is final, not sent again nor verified.
    let m = session(&c, &h, "2", "Maintenance", device_with(&[])).await;
    assert!(ours(&m).is_empty(), "{}", syncml::pretty(&m));
    let s = h.summary();
    assert_eq!((s.profiles_failed, s.profiles_delivered), (1, 0));
}

#[tokio::test]
async fn a_profile_file_in_fleets_format_is_delivered_as_written_and_an_existing_node_gets_a_replace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wifi.xml"),
        r#"<Replace>
  <CmdID>1</CmdID>
  <Item>
    <Meta><Format xmlns="syncml:metinf">int</Format></Meta>
    <Target><LocURI>./Device/Vendor/MSFT/Policy/Config/Wifi/AllowAutoConnectToWiFiSenseHotspots</LocURI></Target>
    <Data>0</Data>
  </Item>
</Replace>
<Add>
  <CmdID>2</CmdID>
  <Item>
    <Meta><Format xmlns="syncml:metinf">chr</Format><Type xmlns="syncml:metinf">text/plain</Type></Meta>
    <Target><LocURI>./Device/Vendor/MSFT/Policy/Config/Browser/HomePages</LocURI></Target>
    <Data>&lt;https://intranet.contoso.test&gt;</Data>
  </Item>
</Add>
"#,
    )
    .unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[management]\nauth = \"none\"\n[[profiles]]\nname = \"Wifi\"\nfile = \"wifi.xml\"\n")
        .unwrap();
    let (h, _state) = start(Config::load(&config).unwrap()).await;
    let c = client();
    let home = "./Device/Vendor/MSFT/Policy/Config/Browser/HomePages";
    // The device has the HomePages node already: the Add gets 418, the Atomic fails.
    let m = session(
        &c,
        &h,
        "1",
        "Maintenance",
        |cmd, uri| if cmd == "Add" && uri == home { (418, None) } else { (200, None) },
    )
    .await;
    let Command::Atomic(a) = ours(&m)[0] else { panic!() };
    let Command::Add(add) = &a.commands[1] else { panic!("the file's Add: {}", syncml::pretty(&m)) };
    let item = &add.items[0];
    assert_eq!(item.data.as_deref(), Some("<https://intranet.contoso.test>"));
    let meta = item.meta.as_ref().unwrap();
    assert_eq!((meta.format.as_deref(), meta.type_.as_deref()), (Some("chr"), Some("text/plain")));
    assert_ne!(add.cmd_id, "2", "the server gives its own CmdIDs");
    assert_eq!(h.device(DEV).unwrap().profiles["Wifi"].state, ProfileState::Pending);
    // Sent again with a Replace for that node (Fleet re-issues a 418'd Add as Replace).
    let m = session(&c, &h, "2", "Maintenance", device_with(&[])).await;
    let Command::Atomic(a) = ours(&m)[0] else { panic!() };
    assert!(matches!(&a.commands[1], Command::Replace(r) if r.items[0].target.as_deref() == Some(home)));
    assert_eq!(h.device(DEV).unwrap().profiles["Wifi"].state, ProfileState::Delivered);

    // A broken file stops the config, naming the profile, the file, the line and the column.
    std::fs::write(dir.path().join("wifi.xml"), "<Replace>\n  <Item><Target></Item>\n</Replace>\n").unwrap();
    let e = Config::load(&config).unwrap_err().to_string();
    assert!(e.contains("profiles[0] \"Wifi\": file ") && e.contains("wifi.xml, line 2, column"), "{e}");
}

#[tokio::test]
async fn devices_reporting_an_older_os_get_neither_profile_nor_msi() {
    let text = PROFILE.replace("auth = \"none\"\n", "auth = \"none\"\ninventory = [\"./DevDetail/SwV\"]\n")
        + &format!("\n[[msi]]\nname = \"agent\"\nproduct_id = \"{FLEETD}\"\nversion = \"1.0.0.0\"\nsize = 64\n");
    let (h, _dir) = start(Config::parse(&text, "os.toml").unwrap()).await;
    let c = client();
    // A Machine-mode session reads the OS version (a Windows 8.1 tablet)...
    let m = session(&c, &h, "1", "Machine", device_with(&[("./DevDetail/SwV", "6.3.9600.17031")])).await;
    assert_eq!(summary_of(&m), [("Get".to_string(), "./DevDetail/SwV".to_string())]);
    // ...and the next Maintenance session sends neither.
    let m = session(&c, &h, "2", "Maintenance", device_with(&[])).await;
    assert!(ours(&m).is_empty(), "{}", syncml::pretty(&m));
    let rec = h.device(DEV).unwrap();
    assert_eq!(rec.profiles["Baseline"].state, ProfileState::NotApplicable);
    assert_eq!(rec.msi["agent"].state, MsiState::NotApplicable);
    let s = h.summary();
    assert_eq!((s.profiles_not_applicable, s.msi_not_applicable, s.msi_in_progress), (1, 1, 0));
}

const MSI: &str = r#"
[management]
auth = "none"

[[msi]]
name = "agent"
product_id = "{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}"
version = "1.2.3.4"
size = 4096
"#;

/// The text between `<tag>` and `</tag>`.
fn element<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let from = xml.find(&open).unwrap_or_else(|| panic!("no <{tag}> in {xml}")) + open.len();
    &xml[from..from + xml[from..].find(&format!("</{tag}>")).unwrap()]
}

#[tokio::test]
async fn an_msi_goes_as_add_and_exec_with_a_job_naming_the_served_package_then_status_is_polled() {
    let (h, _dir) = start(Config::parse(MSI, "msi.toml").unwrap()).await;
    let c = client();
    let install = format!("{MSI_NODE}/DownloadInstall");

    // Machine mode: nothing.
    let m = session(&c, &h, "1", "Machine", device_with(&[])).await;
    assert!(ours(&m).is_empty(), "{}", syncml::pretty(&m));

    // Maintenance: Add then Exec of DownloadInstall in one message; the Add gets 418 (an
    // earlier job left the node), which is fine.
    let m = session(&c, &h, "2", "Maintenance", |cmd, _| if cmd == "Add" { (418, None) } else { (200, None) }).await;
    assert_eq!(summary_of(&m), [("Add".to_string(), install.clone()), ("Exec".to_string(), install.clone())]);
    let cmds = ours(&m);
    let Command::Add(add) = cmds[0] else { unreachable!() };
    assert!(add.items[0].data.is_none() && add.items[0].meta.is_none(), "the Add only creates the node");
    let Command::Exec(exec) = cmds[1] else { unreachable!() };
    let item = &exec.items[0];
    let meta = item.meta.as_ref().unwrap();
    assert_eq!((meta.format.as_deref(), meta.type_.as_deref()), (Some("xml"), Some("text/plain")));
    let job = item.data.as_deref().unwrap();
    assert!(job.starts_with(&format!(r#"<MsiInstallJob id="{FLEETD}"><Product Version="1.2.3.4">"#)), "{job}");
    assert_eq!(element(job, "CommandLine"), "/quiet");
    assert_eq!((element(job, "TimeOut"), element(job, "RetryCount"), element(job, "RetryInterval")), ("10", "3", "5"));
    // The ContentURL serves the package, and FileHash is its SHA-256 in upper-case hex.
    let url = element(job, "ContentURL");
    assert_eq!(url, format!("{}/packages/agent", h.base_url));
    let bytes = c.get(url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.len(), 4096);
    assert_eq!(element(job, "FileHash"), hex::encode_upper(Sha256::digest(&bytes)));
    let rec = h.device(DEV).unwrap().msi["agent"].clone();
    assert_eq!((&rec.state, rec.add_status, rec.exec_status), (&MsiState::InProgress, Some(418), Some(200)));

    // Later sessions read Status and LastError: no node yet, then 50, then 70.
    let polled =
        [("Get".to_string(), format!("{MSI_NODE}/Status")), ("Get".to_string(), format!("{MSI_NODE}/LastError"))];
    let m = session(&c, &h, "3", "Maintenance", device_with(&[])).await;
    assert_eq!(summary_of(&m), polled);
    let rec = h.device(DEV).unwrap().msi["agent"].clone();
    assert_eq!((&rec.state, rec.last_status.as_deref(), rec.polls), (&MsiState::InProgress, Some("Get 404"), 1));
    let status = format!("{MSI_NODE}/Status");
    session(&c, &h, "4", "Maintenance", device_with(&[(status.as_str(), "50")])).await;
    assert_eq!(h.device(DEV).unwrap().msi["agent"].last_status.as_deref(), Some("50"));
    assert_eq!(h.summary().msi_in_progress, 1);
    session(&c, &h, "5", "Maintenance", device_with(&[(status.as_str(), "70")])).await;
    assert_eq!(h.device(DEV).unwrap().msi["agent"].state, MsiState::Installed);
    let m = session(&c, &h, "6", "Maintenance", device_with(&[])).await;
    assert!(ours(&m).is_empty(), "installed: no more polls");
    assert_eq!((h.summary().msi_installed, h.summary().msi_in_progress), (1, 0));
}

#[tokio::test]
async fn the_install_alert_settles_an_msi_and_status_60_fails_another_with_its_last_error() {
    let other = "{6F7CB29F-1319-4816-B345-0856916EB801}";
    let text = format!("{MSI}\n[[msi]]\nname = \"tool\"\nproduct_id = \"{other}\"\nversion = \"2.0\"\nsize = 100\n");
    let (h, _dir) = start(Config::parse(&text, "msi.toml").unwrap()).await;
    let c = client();
    let m = session(&c, &h, "1", "Maintenance", device_with(&[])).await;
    assert_eq!(ours(&m).len(), 4, "Add and Exec for each MSI");

    // Package 1 of the next session carries the agent's install result (the CSP page's alert
    // example: 1224, Reversed-Domain-Name:com.microsoft.mdm.win32csp_install, Data 0) and one
    // for a product this server never installed.
    let alert = |id: u32, guid: &str, data: &str| {
        format!(
            r#"<Alert><CmdID>{id}</CmdID><Data>1224</Data><Item><Source><LocURI>./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{guid}/DownloadInstall</LocURI></Source><Meta><Type xmlns="syncml:metinf">Reversed-Domain-Name:com.microsoft.mdm.win32csp_install</Type><Format xmlns="syncml:metinf">int</Format><Mark xmlns="syncml:metinf">informational</Mark></Meta><Data>{data}</Data></Item></Alert>"#
        )
    };
    let extra = alert(4, FLEETD, "0") + &alert(5, "{AF9257BA-6BBD-4624-AA9B-0182D50292C3}", "0");
    let m = post_syncml(&c, &h, "Maintenance", &pkg1("2", "user", &extra)).await.unwrap();
    assert_eq!(h.device(DEV).unwrap().msi["agent"].state, MsiState::Installed, "the alert alone settles it");
    let tool = format!(
        "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{}",
        other.replace('{', "%7B").replace('}', "%7D")
    );
    assert_eq!(
        summary_of(&m),
        [("Get".to_string(), format!("{tool}/Status")), ("Get".to_string(), format!("{tool}/LastError"))],
        "only the other MSI is polled"
    );
    let (status, last_error) = (format!("{tool}/Status"), format!("{tool}/LastError"));
    let values = [(status.as_str(), "60"), (last_error.as_str(), "-2147023293")];
    assert!(post_syncml(&c, &h, "Maintenance", &answer("2", &m, device_with(&values))).await.is_none());
    let rec = h.device(DEV).unwrap();
    assert_eq!(rec.msi["agent"].alert.as_deref(), Some("0"));
    assert_eq!(
        rec.msi["tool"].state,
        MsiState::Failed("Status 60 (Enforcement Failed), LastError -2147023293 (0x80070643)".into())
    );
    assert!(
        rec.findings
            .iter()
            .any(|f| f.contains("{AF9257BA-6BBD-4624-AA9B-0182D50292C3}") && f.contains("no MSI this server installs")),
        "{:?}",
        rec.findings
    );
    let s = h.summary();
    assert_eq!((s.msi_installed, s.msi_failed, s.msi_in_progress), (1, 1, 0));
}

/// `mdmsim device new` for a win10 device pointing at `url`.
fn new_device(state: &Path, url: &str, seed: u64) -> String {
    crate::support::new_device_with(state, url, seed, &["--profile", "win10", "--provider-id", "mdmsim"])
}

/// Three pre-provisioned devices live a virtual day against the demo's server config: every
/// one verifies the profile (the server read back each value), its tree holds the values, and
/// the server sent nothing forbidden in Machine mode. The MSI is installed only where the
/// device itself said so.
#[test]
fn every_device_of_a_virtual_day_verifies_the_demo_profile() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server_dir = tempfile::tempdir().unwrap();
    let mut config = Config::demo();
    config.management.auth = server::AuthMode::None;
    let mut opts = ServerOptions::local(server_dir.path());
    opts.http = true;
    opts.config = config.clone();
    let h = rt.block_on(server::start(opts)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (1..=3).map(|seed| new_device(dir.path(), &h.management_url(), 40 + seed)).collect();
    let state = dir.path().to_string_lossy().into_owned();
    let (code, out, err) = mdmsim(&[
        "run",
        "--state",
        &state,
        "--all",
        "--clock",
        "virtual",
        "--start",
        "2026-03-02T08:00:00Z",
        "--until",
        "1d",
        "--seed",
        "3",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["summary"]["failed"], 0, "{}", v["summary"]);
    assert_eq!(v["summary"]["findings"], 0, "nothing of the profile or the MSI in Machine mode");
    let plan = &mdmsim::server::profiles::build(&config).unwrap()[0];
    assert!(plan.settings.len() >= 6);
    for id in &ids {
        let rec = h.device(id).unwrap_or_else(|| panic!("the server knows {id}"));
        let p = &rec.profiles["Baseline"];
        assert_eq!(p.state, ProfileState::Verified, "{id}: {p:?}");
        assert!(p.settings.iter().all(|s| s.found.as_deref() == Some(s.expected.as_str())), "{p:?}");
        for s in &plan.settings {
            let (code, out, err) = mdmsim(&["tree", "--state", &state, "--device", id, &s.loc_uri, "--json"]);
            assert_eq!(code, 0, "{err}");
            let node: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(node[0]["value"], s.data.as_str(), "{id} {}", s.loc_uri);
        }
        // The MSI: the Exec went in a Maintenance session; installed only on the device's word.
        let m = &rec.msi["agent"];
        assert!(m.attempts >= 1 && m.exec_status.is_some(), "{id}: {m:?}");
        if m.state == MsiState::Installed {
            assert!(m.alert.as_deref() == Some("0") || m.last_status.as_deref() == Some("70"), "{m:?}");
        }
    }
    assert_eq!(h.summary().profiles_verified, 3);
}
