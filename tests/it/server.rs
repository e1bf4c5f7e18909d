//! The embedded reference server, driven by hand-written SyncML and SOAP (never the device side
//! code), over real HTTP and HTTPS on loopback.

use std::process::Command as Process;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder, X509ReqBuilder};
use sha2::{Digest as _, Sha256};

use mdmsim::server::{self, AppState, AuthMethod, Config, Mode, ServerHandle, ServerOptions};
use mdmsim::syncml::{self, Command, SyncMl};

const DEV: &str = "0123456789ABCDEF0123456789ABCDEF";
const PID: &str = "%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D";

/// A config with every kind of policy, trusting the SyncHdr Source (auth none) so that the
/// session tests need no enrollment.
const POLICIES: &str = r#"
[management]
auth = "none"
inventory = ["./DevDetail/SwV", "./DevDetail/Ext/Microsoft/SMBIOSSerialNumber"]
[dmclient]
push_pfn = "Contoso.PFN_8wekyb3d8bbwe"
wns_token = "tok"
[dmclient.poll]
NumberOfFirstRetries = 8
[[apps]]
name = "ContosoApp1"
product_id = "{B316008A-141D-4A79-810F-8B764C4CFDFB}"
version = "2.0.0.0"
size = 4096
[[users]]
name = "demo@mdmsim.test"
password = "demo"
"#;

async fn start(config: &str, http: bool) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOptions::local(dir.path());
    opts.http = http;
    opts.config = Config::parse(config, "test.toml").unwrap();
    (server::start(opts).await.unwrap(), dir)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// POSTs a SyncML message; returns the decoded reply, or None for an empty body.
async fn post(c: &reqwest::Client, h: &ServerHandle, mode: &str, xml: &str) -> Option<SyncMl> {
    super::support::post_syncml(c, h, mode, xml).await
}

fn hdr(session: &str, msg: u32, cred: &str) -> String {
    format!(
        "<SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>{session}</SessionID><MsgID>{msg}</MsgID>\
         <Target><LocURI>https://mdm.test/ManagementServer/MDM.svc</LocURI></Target><Source><LocURI>{DEV}</LocURI></Source>{cred}</SyncHdr>"
    )
}

/// Package 1 as MS-MDM §3.1.5.1 shows it.
fn pkg1(session: &str, msg: u32, login: &str, cred: &str) -> String {
    format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2">{}<SyncBody>
 <Alert><CmdID>1</CmdID><Data>1201</Data></Alert>
 <Alert><CmdID>2</CmdID><Data>1224</Data><Item><Meta><Type xmlns="syncml:metinf">com.microsoft/MDM/LoginStatus</Type></Meta><Data>{login}</Data></Item></Alert>
 <Replace><CmdID>3</CmdID>
  <Item><Source><LocURI>./DevInfo/DevId</LocURI></Source><Data>{DEV}</Data></Item>
  <Item><Source><LocURI>./DevInfo/Man</LocURI></Source><Data>Contoso Ltd.</Data></Item>
  <Item><Source><LocURI>./DevInfo/DmV</LocURI></Source><Data>1.3</Data></Item>
 </Replace><Final/></SyncBody></SyncML>"#,
        hdr(session, msg, cred)
    )
}

/// A client message carrying the given Status/Results elements.
fn reply(session: &str, msg: u32, server_msg: &str, body: &str) -> String {
    format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2">{}<SyncBody><Status><CmdID>1</CmdID><MsgRef>{server_msg}</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>{body}<Final/></SyncBody></SyncML>"#,
        hdr(session, msg, "")
    )
}

fn status(n: usize, msg_ref: &str, cmd_ref: &str, cmd: &str, code: u16) -> String {
    format!(
        "<Status><CmdID>{n}</CmdID><MsgRef>{msg_ref}</MsgRef><CmdRef>{cmd_ref}</CmdRef><Cmd>{cmd}</Cmd><Data>{code}</Data></Status>"
    )
}

fn results(n: usize, msg_ref: &str, cmd_ref: &str, uri: &str, data: &str) -> String {
    format!(
        "<Results><CmdID>{n}</CmdID><MsgRef>{msg_ref}</MsgRef><CmdRef>{cmd_ref}</CmdRef><Item><Source><LocURI>{uri}</LocURI></Source><Meta><Format xmlns=\"syncml:metinf\">chr</Format></Meta><Data>{data}</Data></Item></Results>"
    )
}

fn target(c: &Command) -> String {
    match c {
        Command::Get(i) | Command::Add(i) | Command::Replace(i) | Command::Exec(i) => {
            i.items[0].target.clone().unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// A stand-in WNS channel endpoint: answers `X-WNS-Status: received` and hands over what it got.
async fn fake_wns() -> (String, tokio::sync::mpsc::Receiver<(axum::http::HeaderMap, axum::body::Bytes)>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let app = axum::Router::new().route(
        "/channel",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body)).await;
                ([("X-WNS-Status", "received")], "")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/channel", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// A WNS channel that was revoked: every push gets 410 Gone.
async fn fake_gone() -> String {
    let app = axum::Router::new().route("/gone", axum::routing::post(|| async { axum::http::StatusCode::GONE }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/gone", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The server's commands (not its Statuses).
fn ours(m: &SyncMl) -> Vec<&Command> {
    m.body.commands.iter().filter(|c| !matches!(c, Command::Status(_))).collect()
}

#[tokio::test]
async fn first_session_gets_policies_then_418_turns_into_replace_and_the_install_is_polled() {
    let (h, _dir) = start(POLICIES, true).await;
    let c = client();

    // Session 1, Maintenance: statuses for the client's commands, then the policies.
    let m = post(&c, &h, "Maintenance", &pkg1("5", 1, "user", "")).await.expect("a reply to package 1");
    assert_eq!((m.hdr.session_id.as_str(), m.hdr.msg_id.as_str(), m.hdr.target.as_str()), ("5", "1", DEV));
    assert_eq!(m.hdr.source, "https://mdm.test/ManagementServer/MDM.svc");
    let statuses: Vec<_> =
        m.body.commands.iter().filter_map(|c| if let Command::Status(s) = c { Some(s) } else { None }).collect();
    let refs: Vec<_> =
        statuses.iter().map(|s| (s.msg_ref.as_str(), s.cmd_ref.as_str(), s.cmd.as_str(), s.data.as_str())).collect();
    assert_eq!(
        refs,
        [
            ("1", "0", "SyncHdr", "200"),
            ("1", "1", "Alert", "200"),
            ("1", "2", "Alert", "200"),
            ("1", "3", "Replace", "200")
        ]
    );
    assert!(matches!(m.body.commands[0], Command::Status(_)), "the SyncHdr status comes first");
    assert!(m.body.final_);
    let cmds = ours(&m);
    let names: Vec<_> = cmds.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["Get", "Get", "Add", "Add", "Atomic"], "{}", syncml::pretty(&m));
    let mut ids: Vec<String> = m.body.commands.iter().map(|c| c.cmd_id().to_string()).collect();
    assert!(ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()), "UUID CmdIDs: {ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), m.body.commands.len(), "CmdIDs are unique");
    assert_eq!(target(cmds[0]), "./DevDetail/SwV");
    assert_eq!(target(cmds[2]), "./Vendor/MSFT/DMClient/Provider/mdmsim/Poll/NumberOfFirstRetries");
    assert_eq!(target(cmds[3]), "./Vendor/MSFT/DMClient/Provider/mdmsim/Push/PFN");
    let Command::Atomic(atomic) = cmds[4] else { unreachable!() };
    let Command::Add(add) = &atomic.commands[0] else { panic!("Atomic starts with Add") };
    let base = format!("./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/{PID}");
    let add_targets: Vec<_> = add.items.iter().map(|i| i.target.clone().unwrap()).collect();
    // Seed: create Name, URL, Version and DownloadInstall, then Exec DownloadInstall.
    assert_eq!(
        add_targets,
        [format!("{base}/Name"), format!("{base}/URL"), format!("{base}/Version"), format!("{base}/DownloadInstall")]
    );
    let url = add.items[1].data.clone().unwrap();
    assert_eq!(url, format!("{}/packages/ContosoApp1", h.base_url));
    let Command::Exec(exec) = &atomic.commands[1] else { panic!("then Exec") };
    assert_eq!(exec.items[0].target.as_deref(), Some(format!("{base}/DownloadInstall").as_str()));

    // The package is served, and the server's bookkeeping has its size and hash.
    let bytes = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.len(), 4096);
    assert_eq!(h.packages()[0].sha256, hex::encode(Sha256::digest(&bytes)));

    // The device answers: PFN Add gets 418, everything else succeeds; Gets carry Results.
    let id = |i: usize| cmds[i].cmd_id().to_string();
    let body = [
        status(2, "1", &id(0), "Get", 200),
        results(3, "1", &id(0), "./DevDetail/SwV", "10.0.19045.2006"),
        status(4, "1", &id(1), "Get", 404),
        status(5, "1", &id(2), "Add", 200),
        status(6, "1", &id(3), "Add", 418),
        status(7, "1", &id(4), "Atomic", 200),
        status(8, "1", &add.cmd_id, "Add", 200),
        status(9, "1", &exec.cmd_id, "Exec", 202),
    ]
    .concat();
    assert!(post(&c, &h, "Maintenance", &reply("5", 2, "1", &body)).await.is_none(), "nothing left: empty body");

    let rec = h.device(DEV).unwrap();
    assert_eq!(rec.checkins.len(), 1);
    let ci = &rec.checkins[0];
    assert_eq!(
        (ci.mode.as_deref(), ci.effective_mode, ci.alert, ci.login_status.as_deref()),
        (Some("Maintenance"), Mode::Maintenance, Some(1201), Some("user"))
    );
    assert!(ci.completed);
    assert_eq!(ci.user_agent_origin.as_deref(), Some("2"));
    assert_eq!(rec.inventory.get("./DevDetail/SwV").map(String::as_str), Some("10.0.19045.2006"));
    assert_eq!(rec.inventory.get("./DevInfo/Man").map(String::as_str), Some("Contoso Ltd."));
    let pfn = rec.results.iter().find(|r| r.loc_uri.as_deref().is_some_and(|u| u.ends_with("Push/PFN"))).unwrap();
    assert_eq!(pfn.status, 418);
    let swv = rec.results.iter().find(|r| r.cmd_id == id(0)).unwrap();
    assert_eq!((swv.status, swv.data.as_deref()), (200, Some("10.0.19045.2006")));
    assert_eq!(rec.apps["ContosoApp1"].state, AppState::Installing);

    // Session 2: the 418 becomes a Replace, and the install is polled; nothing else is resent.
    let m = post(&c, &h, "Maintenance", &pkg1("6", 1, "user", "")).await.unwrap();
    let cmds = ours(&m);
    let summary: Vec<_> = cmds.iter().map(|c| (c.name().to_string(), target(c))).collect();
    assert_eq!(
        summary,
        [
            ("Replace".to_string(), "./Vendor/MSFT/DMClient/Provider/mdmsim/Push/PFN".to_string()),
            ("Get".to_string(), format!("{base}/Status")),
        ]
    );
    let body = [
        status(2, "1", cmds[0].cmd_id(), "Replace", 200),
        status(3, "1", cmds[1].cmd_id(), "Get", 200),
        results(4, "1", cmds[1].cmd_id(), &format!("{base}/Status"), "5"),
    ]
    .concat();
    assert!(post(&c, &h, "Maintenance", &reply("6", 2, "1", &body)).await.is_none());
    let rec = h.device(DEV).unwrap();
    assert_eq!(rec.apps["ContosoApp1"].state, AppState::Installed);
    assert_eq!(rec.apps["ContosoApp1"].last_status.as_deref(), Some("5"));
    assert_eq!(
        rec.settings.get("./Vendor/MSFT/DMClient/Provider/mdmsim/Push/PFN").map(String::as_str),
        Some("Contoso.PFN_8wekyb3d8bbwe")
    );
    assert_eq!(rec.checkins.len(), 2);

    // Session 3: everything settled; with the PFN set, the push channel is read back.
    let m = post(&c, &h, "Maintenance", &pkg1("7", 1, "user", "")).await.unwrap();
    let cmds = ours(&m);
    let summary: Vec<_> = cmds.iter().map(|c| (c.name().to_string(), target(c))).collect();
    let push = "./Vendor/MSFT/DMClient/Provider/mdmsim/Push";
    assert_eq!(
        summary,
        [("Get".to_string(), format!("{push}/ChannelURI")), ("Get".to_string(), format!("{push}/Status"))],
    );

    // The device reports a channel on a fake WNS; a push goes there with the WNS headers.
    let (wns_url, mut pushes) = fake_wns().await;
    let body = [
        status(2, "1", cmds[0].cmd_id(), "Get", 200),
        results(3, "1", cmds[0].cmd_id(), &format!("{push}/ChannelURI"), &wns_url),
        status(4, "1", cmds[1].cmd_id(), "Get", 200),
        results(5, "1", cmds[1].cmd_id(), &format!("{push}/Status"), "0"),
    ]
    .concat();
    assert!(post(&c, &h, "Maintenance", &reply("7", 2, "1", &body)).await.is_none());
    let sent = h.push(&c, DEV).await.unwrap();
    assert_eq!((sent.http_status, sent.wns_status.as_deref()), (200, Some("received")));
    let (headers, payload) = tokio::time::timeout(Duration::from_secs(10), pushes.recv()).await.unwrap().unwrap();
    assert_eq!(headers.get("x-wns-type").unwrap(), "wns/raw");
    assert_eq!(headers.get("authorization").unwrap(), "Bearer tok");
    assert!(!payload.is_empty());
    assert_eq!(h.device(DEV).unwrap().pushes.len(), 1);

    // The same records as JSON, for the holder of the admin token.
    let admin = |path: &str| c.get(format!("{}{path}", h.base_url)).bearer_auth(h.admin_token()).send();
    let json: serde_json::Value = admin("/admin/devices").await.unwrap().json().await.unwrap();
    assert_eq!(json[0]["device_id"], DEV);
    assert_eq!(json[0]["checkins"].as_array().unwrap().len(), 3);
    assert_eq!(json[0]["apps"]["ContosoApp1"]["state"], "Installed");
    let one: serde_json::Value = admin(&format!("/admin/devices/{DEV}")).await.unwrap().json().await.unwrap();
    assert_eq!(one["inventory"]["./DevDetail/SwV"], "10.0.19045.2006");
    let summary = h.summary();
    assert_eq!((summary.totals.sessions, summary.totals.completed_sessions, summary.apps_installed), (3, 3, 1));
    assert_eq!(summary.totals.sessions_by_mode["Maintenance"], 3);
    let json: serde_json::Value = admin("/admin/summary").await.unwrap().json().await.unwrap();
    assert_eq!(json["sessions_by_alert"]["1201"], 3);

    // A revoked channel (410): the next Maintenance session sends the WNS configuration again.
    let gone = fake_gone().await;
    let m = post(&c, &h, "Maintenance", &pkg1("8", 1, "user", "")).await.unwrap();
    let cmds = ours(&m);
    let answer = [
        status(2, "1", cmds[0].cmd_id(), "Get", 200),
        results(3, "1", cmds[0].cmd_id(), &format!("{push}/ChannelURI"), &gone),
        status(4, "1", cmds[1].cmd_id(), "Get", 200),
    ]
    .concat();
    assert!(post(&c, &h, "Maintenance", &reply("8", 2, "1", &answer)).await.is_none());
    assert_eq!(h.push(&c, DEV).await.unwrap().http_status, 410);
    let m = post(&c, &h, "Maintenance", &pkg1("9", 1, "user", "")).await.unwrap();
    let summary: Vec<_> = ours(&m).iter().map(|c| (c.name().to_string(), target(c))).collect();
    assert_eq!(summary, [("Replace".to_string(), format!("{push}/PFN"))]);
    assert!(matches!(h.push(&c, DEV).await, Err(server::PushError::NoChannel(_))));
    h.shutdown().await;
}

#[tokio::test]
async fn machine_mode_sessions_get_only_inventory_reads_and_unenroll() {
    let config = format!("{POLICIES}\n")
        .replace("auth = \"none\"", "auth = \"none\"\nunenroll = true\ninventory_every_session = true");
    let (h, _dir) = start(&config, true).await;
    let c = client();
    let m = post(&c, &h, "Machine", &pkg1("1", 1, "none", "")).await.unwrap();
    let names: Vec<_> = ours(&m).iter().map(|c| c.name().to_string()).collect();
    assert_eq!(names, ["Get", "Get"], "Machine mode: reads only\n{}", syncml::pretty(&m));
    let ci = &h.device(DEV).unwrap().checkins[0];
    assert_eq!((ci.effective_mode, ci.login_status.as_deref()), (Mode::Machine, Some("none")));
    // The same device in a Maintenance session gets the configuration and the install.
    let m = post(&c, &h, "Maintenance", &pkg1("2", 1, "user", "")).await.unwrap();
    let names: Vec<_> = ours(&m).iter().map(|c| c.name().to_string()).collect();
    assert_eq!(names, ["Get", "Get", "Add", "Add", "Atomic"]);
    // Answer everything with success; the app then installs in an Apps-mode session.
    let cmds = ours(&m);
    let mut body = String::new();
    for (n, cmd) in cmds.iter().enumerate() {
        body.push_str(&status(n + 2, "1", cmd.cmd_id(), cmd.name(), 200));
    }
    assert!(post(&c, &h, "Maintenance", &reply("2", 2, "1", &body)).await.is_none());
    let m = post(&c, &h, "Apps", &pkg1("3", 1, "user", "")).await.unwrap();
    let cmds = ours(&m);
    let poll = cmds.iter().find(|c| target(c).ends_with(&format!("{PID}/Status"))).expect("a Status poll in Apps mode");
    let body = [status(2, "1", poll.cmd_id(), "Get", 200), results(3, "1", poll.cmd_id(), &target(poll), "5")].concat();
    assert!(post(&c, &h, "Apps", &reply("3", 2, "1", &body)).await.is_none());
    // Everything settled: the Unenroll Exec is allowed even in Machine mode (seed).
    let m = post(&c, &h, "Machine", &pkg1("4", 1, "none", "")).await.unwrap();
    let summary: Vec<_> = ours(&m).iter().map(|c| (c.name().to_string(), target(c))).collect();
    assert_eq!(
        summary.last().unwrap(),
        &("Exec".to_string(), "./Vendor/MSFT/DMClient/Provider/mdmsim/Unenroll".to_string())
    );
    assert!(summary.iter().all(|(n, _)| n == "Get" || n == "Exec"), "{summary:?}");
    let exec = ours(&m).last().unwrap().cmd_id().to_string();
    assert!(post(&c, &h, "Machine", &reply("4", 2, "1", &status(2, "1", &exec, "Exec", 200))).await.is_none());
    assert!(h.device(DEV).unwrap().unenrolled);
}

#[tokio::test]
async fn malformed_management_messages_get_http_400_naming_the_problem() {
    let (h, _dir) = start(POLICIES, true).await;
    let c = client();
    let send = |body: String| c.post(h.management_url()).body(body).send();
    let r = send("<SyncML><SyncHdr><Bogus/></SyncHdr></SyncML>".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("malformed SyncML at line 1") && text.contains("Bogus"), "{text}");
    let r = send(pkg1("1", 1, "user", "").replace(DEV, "")).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("DeviceID"));
    assert!(h.devices().is_empty());
}

#[tokio::test]
async fn a_failed_install_atomic_with_418_is_resent_with_replace() {
    let (h, _dir) = start(POLICIES, true).await;
    let c = client();
    let m = post(&c, &h, "Maintenance", &pkg1("1", 1, "user", "")).await.unwrap();
    let Some(Command::Atomic(a)) = ours(&m).into_iter().find(|c| matches!(c, Command::Atomic(_))) else { panic!() };
    let body = [
        status(2, "1", &a.cmd_id, "Atomic", 507),
        status(3, "1", a.commands[0].cmd_id(), "Add", 418),
        status(4, "1", a.commands[1].cmd_id(), "Exec", 216),
    ]
    .concat();
    post(&c, &h, "Maintenance", &reply("1", 2, "1", &body)).await;
    assert_eq!(h.device(DEV).unwrap().apps["ContosoApp1"].state, AppState::Pending);
    let m = post(&c, &h, "Maintenance", &pkg1("2", 1, "user", "")).await.unwrap();
    let Some(Command::Atomic(a)) = ours(&m).into_iter().find(|c| matches!(c, Command::Atomic(_))) else { panic!() };
    let Command::Replace(r) = &a.commands[0] else { panic!("Replace after 418: {}", syncml::pretty(&m)) };
    assert_eq!(r.items.len(), 3, "the CSP page's Replace covers Name, URL and Version");
    assert!(matches!(a.commands[1], Command::Exec(_)));
    assert_eq!(h.device(DEV).unwrap().apps["ContosoApp1"].attempts, 2);
}

#[tokio::test]
async fn a_device_that_refuses_to_create_download_install_gets_the_add_without_it() {
    let (h, _dir) = start(POLICIES, true).await;
    let c = client();
    let m = post(&c, &h, "Maintenance", &pkg1("1", 1, "user", "")).await.unwrap();
    let Some(Command::Atomic(a)) = ours(&m).into_iter().find(|c| matches!(c, Command::Atomic(_))) else { panic!() };
    let Command::Add(add) = &a.commands[0] else { panic!() };
    let (add_id, last) = (add.cmd_id.clone(), add.items[3].target.clone().unwrap());
    // One Status per item with TargetRef, as a multi-item command whose items differ gets.
    let per_item: String = add.items[..3]
        .iter()
        .map(|i| format!("<Status><CmdID>5</CmdID><MsgRef>1</MsgRef><CmdRef>{add_id}</CmdRef><Cmd>Add</Cmd><TargetRef>{}</TargetRef><Data>216</Data></Status>", i.target.as_deref().unwrap()))
        .collect();
    let body = [
        status(2, "1", &a.cmd_id, "Atomic", 507),
        per_item,
        format!("<Status><CmdID>3</CmdID><MsgRef>1</MsgRef><CmdRef>{add_id}</CmdRef><Cmd>Add</Cmd><TargetRef>{last}</TargetRef><Data>405</Data></Status>"),
        status(4, "1", a.commands[1].cmd_id(), "Exec", 216),
    ]
    .concat();
    post(&c, &h, "Maintenance", &reply("1", 2, "1", &body)).await;
    let m = post(&c, &h, "Maintenance", &pkg1("2", 1, "user", "")).await.unwrap();
    let Some(Command::Atomic(a)) = ours(&m).into_iter().find(|c| matches!(c, Command::Atomic(_))) else { panic!() };
    let Command::Add(add) = &a.commands[0] else { panic!("still an Add") };
    assert_eq!(add.items.len(), 3, "{}", syncml::pretty(&m));
    assert!(add.items.iter().all(|i| !i.target.as_deref().unwrap().ends_with("/DownloadInstall")));
}

// ---- enrollment ----

fn soap(action: &str, to: &str, security: &str, body: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">{action}</a:Action><a:MessageID>urn:uuid:748132ec-a575-4329-b01b-6171a9cf8478</a:MessageID><a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo><a:To s:mustUnderstand="1">{to}</a:To>{security}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

fn username_token(user: &str, password: &str) -> String {
    format!(
        r#"<wsse:Security s:mustUnderstand="1" xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"><wsse:UsernameToken u:Id="uuid-1" xmlns:u="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"><wsse:Username>{user}</wsse:Username><wsse:Password wsse:Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText">{password}</wsse:Password></wsse:UsernameToken></wsse:Security>"#
    )
}

fn csr(device_id: &str) -> (String, PKey<Private>) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, &format!("B1C43CD0!{device_id}")).unwrap();
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (B64.encode(b.build().to_der().unwrap()), key)
}

fn rst(url: &str, security: &str, csr_b64: &str, device_id: &str) -> String {
    soap(
        "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep",
        url,
        security,
        &format!(
            r#"<wst:RequestSecurityToken xmlns:wst="http://docs.oasis-open.org/ws-sx/ws-trust/200512" xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:ac="http://schemas.xmlsoap.org/ws/2006/12/authorization"><wst:TokenType>http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken</wst:TokenType><wst:RequestType>http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue</wst:RequestType><wsse:BinarySecurityToken ValueType="http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10" EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary">{csr_b64}</wsse:BinarySecurityToken><ac:AdditionalContext><ac:ContextItem Name="EnrollmentType"><ac:Value>Full</ac:Value></ac:ContextItem><ac:ContextItem Name="DeviceID"><ac:Value>{device_id}</ac:Value></ac:ContextItem><ac:ContextItem Name="DeviceName"><ac:Value>DESKTOP-TEST</ac:Value></ac:ContextItem></ac:AdditionalContext></wst:RequestSecurityToken>"#
        ),
    )
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// A parm value in a characteristic, found after `anchor`.
fn parm<'a>(doc: &'a str, anchor: &str, name: &str) -> &'a str {
    let from = doc.find(anchor).unwrap_or_else(|| panic!("no {anchor} in {doc}"));
    between(&doc[from..], &format!(r#"<parm name="{name}" value=""#), "\"")
        .unwrap_or_else(|| panic!("no {name} after {anchor}"))
}

async fn soap_post(c: &reqwest::Client, url: &str, body: String) -> (u16, String) {
    let r = c.post(url).header("Content-Type", "application/soap+xml; charset=utf-8").body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Enrolls DEV with the OnPremise user; returns the decoded provisioning document and the key.
async fn enroll(c: &reqwest::Client, h: &ServerHandle) -> (String, PKey<Private>) {
    let (csr_b64, key) = csr(DEV);
    let url = format!("{}/EnrollmentServer/Enrollment.svc", h.base_url);
    let (status, body) =
        soap_post(c, &url, rst(&url, &username_token("demo@mdmsim.test", "demo"), &csr_b64, DEV)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("RequestSecurityTokenResponseCollection"));
    let token = between(&body, "DeviceEnrollmentProvisionDoc", "</BinarySecurityToken>").unwrap();
    let token = &token[token.find('>').unwrap() + 1..];
    (String::from_utf8(B64.decode(token).unwrap()).unwrap(), key)
}

#[tokio::test]
async fn enrollment_discovery_policy_and_rst_issue_a_certificate_for_the_device() {
    let (h, _dir) = start(server::config::DEFAULT_TOML, true).await;
    let c = client();
    assert_eq!(c.get(h.discovery_url()).send().await.unwrap().status(), 200);
    let discover = soap(
        "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/Discover",
        &h.discovery_url(),
        "",
        r#"<Discover xmlns="http://schemas.microsoft.com/windows/management/2012/01/enrollment"><request xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><EmailAddress>demo@mdmsim.test</EmailAddress><RequestVersion>4.0</RequestVersion><DeviceType>CIMClient_Windows</DeviceType><ApplicationVersion>10.0.19045.2006</ApplicationVersion><OSEdition>48</OSEdition><AuthPolicies><AuthPolicy>OnPremise</AuthPolicy></AuthPolicies></request></Discover>"#,
    );
    let (status, body) = soap_post(&c, &h.discovery_url(), discover).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "<AuthPolicy>", "<"), Some("OnPremise"));
    assert_eq!(between(&body, "<EnrollmentVersion>", "<"), Some("4.0"));
    let policy_url = between(&body, "<EnrollmentPolicyServiceUrl>", "<").unwrap().to_string();
    let enroll_url = between(&body, "<EnrollmentServiceUrl>", "<").unwrap().to_string();
    assert_eq!(enroll_url, format!("{}/EnrollmentServer/Enrollment.svc", h.base_url));
    assert!(body.contains("<a:RelatesTo>urn:uuid:748132ec-a575-4329-b01b-6171a9cf8478</a:RelatesTo>"));

    let get_policies = soap(
        "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies",
        &policy_url,
        &username_token("demo@mdmsim.test", "demo"),
        r#"<GetPolicies xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy"><client><lastUpdate xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/><preferredLanguage xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></client><requestFilter xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></GetPolicies>"#,
    );
    let (status, body) = soap_post(&c, &policy_url, get_policies).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "<minimalKeyLength>", "<"), Some("2048"));
    assert_eq!(between(&body, "<value>", "<"), Some("2.16.840.1.101.3.4.2.1"));

    let (doc, key) = enroll(&c, &h).await;
    // The provisioning document is well-formed XML rooted at wap-provisioningdoc.
    let mut reader = quick_xml::Reader::from_str(&doc);
    let mut depth = 0i32;
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("provisioning doc: {e}\n{doc}")) {
            quick_xml::events::Event::Start(_) => depth += 1,
            quick_xml::events::Event::End(_) => depth -= 1,
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0);
    assert!(doc.starts_with(r#"<wap-provisioningdoc version="1.1">"#));
    let cert_b64 = parm(&doc, r#"<characteristic type="My"><characteristic type="User">"#, "EncodedCertificate");
    let cert = X509::from_der(&B64.decode(cert_b64).unwrap()).unwrap();
    let ca = X509::from_pem(&std::fs::read(&h.ca_file).unwrap()).unwrap();
    assert!(cert.verify(&ca.public_key().unwrap()).unwrap(), "the client certificate verifies against the CA");
    let cn = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next().unwrap().data().to_string().unwrap();
    assert_eq!(cn, DEV);
    assert!(cert.public_key().unwrap().public_eq(&key));
    let root = parm(&doc, r#"<characteristic type="Root"><characteristic type="System">"#, "EncodedCertificate");
    assert_eq!(B64.decode(root).unwrap(), ca.to_der().unwrap());
    assert_eq!(parm(&doc, r#"type="APPLICATION""#, "ADDR"), h.management_url());
    assert_eq!(parm(&doc, r#"type="APPLICATION""#, "PROVIDER-ID"), "mdmsim");
    assert!(!parm(&doc, r#"<parm name="AAUTHLEVEL" value="APPSRV"/>"#, "AAUTHDATA").is_empty());
    assert_eq!(parm(&doc, r#"<characteristic type="Poll">"#, "IntervalForFirstSetOfRetries"), "15");
    let rec = h.device(DEV).unwrap();
    let e = rec.enrollment.unwrap();
    assert_eq!((e.user.as_str(), e.enrollment_type.as_str()), ("demo@mdmsim.test", "Full"));
    assert!(e.context.contains(&("DeviceName".to_string(), "DESKTOP-TEST".to_string())));
}

#[tokio::test]
async fn enrollment_errors_are_soap_faults_with_their_subcode() {
    let (h, _dir) = start(server::config::DEFAULT_TOML, true).await;
    let c = client();
    let url = format!("{}/EnrollmentServer/Enrollment.svc", h.base_url);
    let (csr_b64, _) = csr(DEV);
    let (status, body) =
        soap_post(&c, &url, rst(&url, &username_token("demo@mdmsim.test", "wrong"), &csr_b64, DEV)).await;
    assert_eq!(status, 500);
    assert!(body.contains("<s:Value>s:Authentication</s:Value>") && body.contains("80180002"), "{body}");
    let (_, body) = soap_post(&c, &url, "<s:Envelope><s:Body>".into()).await;
    assert!(body.contains("<s:Value>s:MessageFormat</s:Value>") && body.contains("80180001"), "{body}");
    let (_, body) =
        soap_post(&c, &url, rst(&url, &username_token("demo@mdmsim.test", "demo"), "bm90IGEgQ1NS", DEV)).await;
    assert!(body.contains("<s:Value>s:CertificateRequest</s:Value>"), "{body}");
    assert!(h.device(DEV).is_none(), "no record for a refused enrollment");
}

#[tokio::test]
async fn without_a_client_certificate_the_device_must_send_an_md5_cred_and_can_be_rekeyed() {
    let (h, _dir) = start(&POLICIES.replace("auth = \"none\"", "auth = \"cert-or-md5\""), true).await;
    let c = client();
    let (doc, _) = enroll(&c, &h).await;
    let appsrv = r#"<parm name="AAUTHLEVEL" value="APPSRV"/>"#;
    let (name, secret) = (parm(&doc, appsrv, "AAUTHNAME").to_string(), parm(&doc, appsrv, "AAUTHSECRET").to_string());
    let cred = |name: &str, secret: &str, nonce: &[u8]| {
        format!(
            r#"<Cred><Meta><Type xmlns="syncml:metinf">syncml:auth-md5</Type><Format xmlns="syncml:metinf">b64</Format></Meta><Data>{}</Data></Cred>"#,
            server::md5_digest(name, secret, nonce)
        )
    };
    // No Cred: 407 with a Chal, and nothing else.
    let m = post(&c, &h, "Maintenance", &pkg1("1", 1, "user", "")).await.unwrap();
    let Command::Status(st) = &m.body.commands[0] else { panic!() };
    assert_eq!((st.cmd.as_str(), st.data.as_str()), ("SyncHdr", "407"));
    let chal = st.chal.as_ref().expect("a Chal");
    assert_eq!(chal.meta.type_.as_deref(), Some("syncml:auth-md5"));
    let nonce = B64.decode(chal.meta.next_nonce.as_deref().unwrap()).unwrap();
    assert_eq!(m.body.commands.len(), 1);
    // A wrong secret: 401 and a new nonce.
    let m = post(&c, &h, "Maintenance", &pkg1("1", 2, "user", &cred(&name, "bad", &nonce))).await.unwrap();
    let Command::Status(st) = &m.body.commands[0] else { panic!() };
    assert_eq!(st.data, "401");
    let nonce = B64.decode(st.chal.as_ref().unwrap().meta.next_nonce.as_deref().unwrap()).unwrap();
    // The right digest with that nonce: 200 and the policies.
    let m = post(&c, &h, "Maintenance", &pkg1("1", 3, "user", &cred(&name, &secret, &nonce))).await.unwrap();
    let Command::Status(st) = &m.body.commands[0] else { panic!() };
    assert_eq!(st.data, "200");
    assert!(!ours(&m).is_empty());
    assert_eq!(h.device(DEV).unwrap().checkins[0].auth, AuthMethod::Md5);

    // Rekey: the next Maintenance session Replaces DMAcc AAuthName/AAuthSecret.
    assert!(h.request_rekey(DEV));
    let m = post(&c, &h, "Maintenance", &pkg1("2", 1, "user", &cred(&name, &secret, &nonce))).await.unwrap();
    let rekey: Vec<_> = ours(&m).into_iter().filter(|c| target(c).contains("/AppAuth/CLCRED/")).collect();
    assert_eq!(rekey.len(), 2, "{}", syncml::pretty(&m));
    assert!(target(rekey[0]).starts_with("./SyncML/DMAcc/") && target(rekey[1]).ends_with("/AAuthSecret"));
    let Command::Replace(r) = rekey[1] else { panic!("Replace") };
    let new_secret = r.items[0].data.clone().unwrap();
    let body =
        [status(2, "2", rekey[0].cmd_id(), "Replace", 200), status(3, "2", rekey[1].cmd_id(), "Replace", 200)].concat();
    let msg2 = reply("2", 2, "1", &body).replace("</SyncHdr>", &format!("{}</SyncHdr>", cred(&name, &secret, &nonce)));
    post(&c, &h, "Maintenance", &msg2).await;
    let m = post(&c, &h, "Maintenance", &pkg1("3", 1, "user", &cred(&name, &new_secret, &nonce))).await.unwrap();
    let Command::Status(st) = &m.body.commands[0] else { panic!() };
    assert_eq!(st.data, "200", "the new secret is accepted after the rekey");
    let m = post(&c, &h, "Maintenance", &pkg1("4", 1, "user", &cred(&name, &secret, &nonce))).await.unwrap();
    let Command::Status(st) = &m.body.commands[0] else { panic!() };
    assert_eq!(st.data, "401", "the old secret is not");
    let nonce = B64.decode(st.chal.as_ref().unwrap().meta.next_nonce.as_deref().unwrap()).unwrap();

    // A rekey whose statuses are lost: the device's use of the new secret completes it.
    assert!(h.request_rekey(DEV));
    let m = post(&c, &h, "Maintenance", &pkg1("5", 1, "user", &cred(&name, &new_secret, &nonce))).await.unwrap();
    let Some(Command::Replace(r)) = ours(&m).into_iter().find(|c| target(c).ends_with("/AAuthSecret")) else {
        panic!("{}", syncml::pretty(&m))
    };
    let newest = r.items[0].data.clone().unwrap();
    let m = post(&c, &h, "Maintenance", &pkg1("6", 1, "user", &cred(&name, &newest, &nonce))).await.unwrap();
    let Command::Status(st) = &m.body.commands[0] else { panic!() };
    assert_eq!(st.data, "200");
    let m = post(&c, &h, "Maintenance", &pkg1("7", 1, "user", &cred(&name, &new_secret, &nonce))).await.unwrap();
    let Command::Status(st) = &m.body.commands[0] else { panic!() };
    assert_eq!(st.data, "401", "the secret before the rekey is retired");
}

#[tokio::test]
async fn https_with_the_generated_ca_and_a_client_certificate_trusted_by_cn() {
    let (h, dir) = start(server::config::DEFAULT_TOML, false).await;
    assert!(h.base_url.starts_with("https://127.0.0.1:"));
    let ca_pem = std::fs::read(&h.ca_file).unwrap();
    assert!(h.ca_file.starts_with(dir.path()));
    let ca = reqwest::Certificate::from_pem(&ca_pem).unwrap();
    let trusting =
        reqwest::Client::builder().add_root_certificate(ca.clone()).timeout(Duration::from_secs(20)).build().unwrap();
    assert_eq!(trusting.get(h.discovery_url()).send().await.unwrap().status(), 200);
    let untrusting = client();
    assert!(untrusting.get(h.discovery_url()).send().await.is_err(), "a client that does not trust the CA fails TLS");

    // Enroll over HTTPS, then present the issued certificate: no Cred needed.
    let (doc, key) = enroll(&trusting, &h).await;
    let cert_b64 = parm(&doc, r#"<characteristic type="My"><characteristic type="User">"#, "EncodedCertificate");
    let cert = X509::from_der(&B64.decode(cert_b64).unwrap()).unwrap();
    let identity =
        reqwest::Identity::from_pkcs8_pem(&cert.to_pem().unwrap(), &key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let mtls = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(identity)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let m = post(&mtls, &h, "Maintenance", &pkg1("1", 1, "user", "")).await.unwrap();
    let Command::Status(st) = &m.body.commands[0] else { panic!() };
    assert_eq!(st.data, "200", "{}", syncml::pretty(&m));
    assert_eq!(h.device(DEV).unwrap().checkins[0].auth, AuthMethod::Certificate);
    // Without the certificate the same device is challenged.
    let m = post(&trusting, &h, "Maintenance", &pkg1("2", 1, "user", "")).await.unwrap();
    let Command::Status(st) = &m.body.commands[0] else { panic!() };
    assert_eq!(st.data, "407");

    // A restart on the same state folder reuses the CA.
    h.shutdown().await;
    let mut opts = ServerOptions::local(dir.path());
    opts.config = Config::default();
    let again = server::start(opts).await.unwrap();
    assert_eq!(std::fs::read(&again.ca_file).unwrap(), ca_pem);
    again.shutdown().await;
}

#[test]
fn server_command_refuses_plain_http_off_loopback_and_prints_its_urls() {
    let bin = env!("CARGO_BIN_EXE_mdmsim");
    let dir = tempfile::tempdir().unwrap();
    let out = Process::new(bin)
        .args(["server", "--http", "--listen", "0.0.0.0:0", "--state"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing plain HTTP on 0.0.0.0:0") && err.contains("loopback"), "{err}");

    // On loopback it starts and prints where to point devices; we stop it ourselves.
    let state = dir.path().to_string_lossy();
    let text = super::support::server_banner(&["--listen", "127.0.0.1:0", "--state", &state]);
    assert!(text.contains("discovery URL: https://127.0.0.1:"), "{text}");
    assert!(text.contains("/EnrollmentServer/Discovery.svc"), "{text}");
    assert!(text.contains(&format!("CA to trust:   {}", dir.path().join("ca.pem").display())), "{text}");
}

#[tokio::test]
async fn a_package_split_over_messages_gets_alert_1222_and_chunked_results_are_joined() {
    let config = POLICIES.replace(
        "[dmclient]\npush_pfn = \"Contoso.PFN_8wekyb3d8bbwe\"\nwns_token = \"tok\"\n[dmclient.poll]\nNumberOfFirstRetries = 8\n",
        "",
    );
    assert!(!config.contains("push_pfn"));
    let (h, _dir) = start(&config, true).await;
    let c = client();
    // Package 1 also carries the user-initiated unenrollment alert (MS-MDM §3.1.5.1, package 1).
    let unenroll = r#"<Alert><CmdID>4</CmdID><Data>1226</Data><Item><Meta><Type xmlns="syncml:metinf">com.microsoft:mdm.unenrollment.userrequest</Type><Format xmlns="syncml:metinf">int</Format></Meta><Data>1</Data></Item></Alert>"#;
    let p1 = pkg1("9", 1, "user", "").replace("<Final/>", &format!("{unenroll}<Final/>"));
    let m = post(&c, &h, "Maintenance", &p1).await.unwrap();
    let get = ours(&m)[0].cmd_id().to_string();
    let ci = &h.device(DEV).unwrap().checkins[0];
    assert_eq!(ci.alerts.len(), 1);
    assert_eq!(ci.alerts[0].type_.as_deref(), Some("com.microsoft:mdm.unenrollment.userrequest"));
    assert!(h.device(DEV).unwrap().unenrolled);

    // The SwV value comes in two chunks over two messages; the first message has no Final.
    let chunk1 = format!(
        "<Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>{get}</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>\
         <Results><CmdID>3</CmdID><MsgRef>1</MsgRef><CmdRef>{get}</CmdRef><Item><Source><LocURI>./DevDetail/SwV</LocURI></Source><Meta><Size xmlns=\"syncml:metinf\">15</Size></Meta><Data>10.0.1904</Data><MoreData/></Item></Results>"
    );
    let msg2 = reply("9", 2, "1", &chunk1).replace("<Final/>", "");
    let m = post(&c, &h, "Maintenance", &msg2).await.expect("an answer asking for the next message");
    assert!(!m.body.final_);
    assert!(
        m.body.commands.iter().any(|c| matches!(c, Command::Alert(a) if a.data == "1222")),
        "{}",
        syncml::pretty(&m)
    );
    let chunk2 = results(2, "1", &get, "./DevDetail/SwV", "5.2006");
    assert!(post(&c, &h, "Maintenance", &reply("9", 3, "2", &chunk2)).await.is_none());
    let rec = h.device(DEV).unwrap();
    assert_eq!(rec.inventory.get("./DevDetail/SwV").map(String::as_str), Some("10.0.19045.2006"));
    // The chunks joined cleanly; the one finding is about the commands this client never
    // answered (the server checks that every command got its Status).
    assert_eq!(rec.findings.len(), 1, "{:?}", rec.findings);
    assert!(rec.findings[0].starts_with("session 9: no Status for ") && rec.findings[0].contains("SMBIOSSerialNumber"));
}

#[tokio::test]
async fn protocol_slips_of_the_client_are_recorded_as_findings() {
    let (h, _dir) = start(POLICIES, true).await;
    let c = client();
    let p1 = pkg1("4", 1, "user", "").replace(&format!("<Data>{DEV}</Data>"), "<Data>FFFF</Data>");
    let m = post(&c, &h, "Maintenance", &p1).await.unwrap();
    let get = ours(&m)[0].cmd_id().to_string();
    // MsgID jumps to 3, no SyncHdr status, a Status with the wrong MsgRef.
    let bad = format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2">{}<SyncBody>{}<Final/></SyncBody></SyncML>"#,
        hdr("4", 3, ""),
        status(1, "7", &get, "Get", 200)
    );
    post(&c, &h, "Maintenance", &bad).await;
    let f = h.device(DEV).unwrap().findings;
    let has = |text: &str| f.iter().any(|x| x.contains(text));
    assert!(has("./DevInfo/DevId \"FFFF\" differs from the SyncHdr Source"), "{f:#?}");
    assert!(has("MsgID 3 does not follow 1"), "{f:#?}");
    assert!(has("no Status for our SyncHdr (message 1)"), "{f:#?}");
    assert!(has("has MsgRef \"7\", but that command came in our message 1"), "{f:#?}");
    assert_eq!(h.summary().totals.findings, f.len());
}

#[tokio::test]
async fn token_enrollment_when_the_config_allows_it() {
    let config = "[enrollment]\ntoken_auth = true\ntokens = ['{\"type\":1}']\n";
    let (h, _dir) = start(config, true).await;
    let c = client();
    let url = format!("{}/EnrollmentServer/Enrollment.svc", h.base_url);
    let token = |t: &str| {
        format!(
            r#"<wsse:Security s:mustUnderstand="1" xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"><wsse:BinarySecurityToken ValueType="http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken" EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary">{}</wsse:BinarySecurityToken></wsse:Security>"#,
            B64.encode(t)
        )
    };
    let (csr_b64, _) = csr(DEV);
    let (status, body) = soap_post(&c, &url, rst(&url, &token("{\"type\":2}"), &csr_b64, DEV)).await;
    assert_eq!(status, 500);
    assert!(body.contains("s:Authentication"), "{body}");
    let (status, body) = soap_post(&c, &url, rst(&url, &token("{\"type\":1}"), &csr_b64, DEV)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.device(DEV).unwrap().enrollment.unwrap().user, "token");
    // UsernameTokens still need a configured user (this config has none).
    let (status, _) = soap_post(&c, &url, rst(&url, &username_token("demo@mdmsim.test", "demo"), &csr_b64, DEV)).await;
    assert_eq!(status, 500);
}
