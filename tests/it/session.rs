//! One management session against the scripted server on 127.0.0.1: every command kind with
//! the exact statuses and results the device sends back and the tree afterwards, multi-message
//! packages, the end of a session, HTTP details, and the faults that end a session (each with
//! its exit code and the tree left as it was before the session).

use std::path::Path;
use std::time::Duration;

use chrono::Utc;

use mdmsim::device::{Device, DeviceId, Template};
use mdmsim::runner::http::{HttpOptions, Transport};
use mdmsim::runner::{SessionOptions, run_session};
use mdmsim::session::{Outcome, Trigger};
use mdmsim::syncml::{Alert, Command, Container, Item, ItemCmd, SyncMl};
use mdmsim::tree::Profile;

use crate::support::server::{Reply, Server, msg};
use crate::support::{lab, mdmsim, new_device, tree_value};

// ---- message builders ----

fn item_cmd(id: &str, uri: &str, data: Option<&str>) -> ItemCmd {
    ItemCmd {
        cmd_id: id.into(),
        items: vec![Item { target: Some(uri.into()), data: data.map(str::to_string), ..Item::default() }],
        ..ItemCmd::default()
    }
}
fn get(id: &str, uri: &str) -> Command {
    Command::Get(item_cmd(id, uri, None))
}
fn add(id: &str, uri: &str, data: &str) -> Command {
    Command::Add(item_cmd(id, uri, Some(data)))
}
fn replace(id: &str, uri: &str, data: &str) -> Command {
    Command::Replace(item_cmd(id, uri, Some(data)))
}
fn delete(id: &str, uri: &str) -> Command {
    Command::Delete(item_cmd(id, uri, None))
}
fn exec(id: &str, uri: &str) -> Command {
    Command::Exec(item_cmd(id, uri, None))
}
fn atomic(id: &str, commands: Vec<Command>) -> Command {
    Command::Atomic(Container { cmd_id: id.into(), commands, ..Container::default() })
}
fn sequence(id: &str, commands: Vec<Command>) -> Command {
    Command::Sequence(Container { cmd_id: id.into(), commands, ..Container::default() })
}

/// "CmdRef Cmd code" of every Status in a device message, in order (the MsgRef is checked too).
fn statuses(m: &SyncMl, msg_ref: &str) -> Vec<String> {
    m.body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Status(s) => {
                assert_eq!(s.msg_ref, msg_ref, "Status {} refers to the wrong message", s.cmd_ref);
                Some(format!("{} {} {}", s.cmd_ref, s.cmd, s.data))
            }
            _ => None,
        })
        .collect()
}

/// "CmdRef: Source (format) = data" of every Results item in a device message.
fn results(m: &SyncMl) -> Vec<String> {
    let mut out = Vec::new();
    for c in &m.body.commands {
        if let Command::Results(r) = c {
            for i in &r.items {
                let format = i.meta.as_ref().and_then(|m| m.format.as_deref()).unwrap_or("?");
                out.push(format!(
                    "{}: {} ({format}) = {}",
                    r.cmd_ref,
                    i.source.as_deref().unwrap_or(""),
                    i.data.as_deref().unwrap_or("")
                ));
            }
        }
    }
    out
}

fn alerts(m: &SyncMl) -> Vec<String> {
    m.body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Alert(Alert { data, .. }) => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn lab_device(server: &Server) -> Device {
    let t = Template::builtin(Profile::Win10);
    Device::new(DeviceId::from_seed(11), Profile::Win10, &server.url, "MS DM Server", &t, Utc::now())
}

fn transport() -> Transport {
    Transport::new(HttpOptions { timeout: Duration::from_secs(10), ..HttpOptions::default() }).unwrap()
}

const LAB: &str = "./Vendor/MSFT/Lab";

// ---- a full session through the library ----

#[tokio::test]
async fn full_session_answers_every_command_kind_with_exact_statuses_and_results() {
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![
            get("g1", "./DevInfo/Man"),
            get("g2", "./DevInfo"),
            get("g3", &format!("{LAB}/Items/zz/Name")),
            get("g4", "./DevDetail/URI?list=StructData"),
            add("a1", &format!("{LAB}/Items/a/Name"), "alpha"),
            add("a2", &format!("{LAB}/Items/a/Name"), "again"),
            replace("r1", &format!("{LAB}/Mode"), "fast"),
            replace("r2", "./DevInfo/Man", "Evil Corp"),
            sequence(
                "s1",
                vec![add("s1a", &format!("{LAB}/Items/b/Name"), "beta"), delete("s1b", &format!("{LAB}/Items/b"))],
            ),
            delete("d1", &format!("{LAB}/Items/nope")),
            exec("e1", &format!("{LAB}/Reboot")),
            exec("e2", &format!("{LAB}/Explode")),
            exec("e3", "./DevInfo/Man"),
        ])),
        Reply::Syncml(msg(vec![
            atomic(
                "at1",
                vec![
                    add("at1a", &format!("{LAB}/Items/c/Count"), "3"),
                    replace("at1b", &format!("{LAB}/Items/a/Name"), "alpha2"),
                ],
            ),
            atomic(
                "at2",
                vec![
                    add("at2a", &format!("{LAB}/Items/d/Name"), "delta"),
                    replace("at2b", &format!("{LAB}/Reboots"), "5"),
                    add("at2c", &format!("{LAB}/Items/e/Name"), "echo"),
                ],
            ),
            get("g5", &format!("{LAB}/Items")),
            exec("e4", &format!("{LAB}/Report")),
        ])),
        Reply::Empty,
    ]);
    let registry = lab::registry();
    let mut device = lab_device(&server);
    let report = run_session(&registry, &mut device, &transport(), SessionOptions::new(Trigger::Manual)).await;
    assert!(report.error.is_none(), "{:?}", report.error);

    let sent = server.device_messages();
    assert_eq!(sent.len(), 3, "package 1 and two replies");
    assert_eq!(
        statuses(&sent[1], "1"),
        [
            "0 SyncHdr 200",
            "g1 Get 200",
            "g2 Get 200",
            "g3 Get 404",
            "g4 Get 200",
            "a1 Add 200",
            "a2 Add 418",
            "r1 Replace 200",
            "r2 Replace 405",
            "s1 Sequence 200",
            "s1a Add 200",
            "s1b Delete 200",
            "d1 Delete 404",
            "e1 Exec 200",
            "e2 Exec 500",
            "e3 Exec 405",
        ]
    );
    assert_eq!(
        results(&sent[1]),
        [
            "g1: ./DevInfo/Man (chr) = Dell Inc.",
            "g2: ./DevInfo (node) = DevId/Man/Mod/DmV/Lang",
            // ?list=StructData in the shape of the EnterpriseAppManagement seed's example:
            // interior nodes carry Format node and no data, leaves carry no Meta.
            "g4: ./DevDetail/URI (node) = ",
            "g4: ./DevDetail/URI/MaxDepth (?) = 0",
            "g4: ./DevDetail/URI/MaxTotLen (?) = 0",
            "g4: ./DevDetail/URI/MaxSegLen (?) = 0",
        ]
    );
    assert!(sent[1].body.final_);
    assert_eq!(
        statuses(&sent[2], "2"),
        [
            "0 SyncHdr 200",
            "at1 Atomic 200",
            "at1a Add 200",
            "at1b Replace 200",
            "at2 Atomic 507",
            "at2a Add 216",
            "at2b Replace 405",
            "at2c Add 216",
            "g5 Get 200",
            "e4 Exec 200",
        ]
    );
    // The CSP's client alert goes out in the very next message, after the statuses.
    let Some(Command::Alert(alert)) = sent[2].body.commands.last() else { panic!("{:?}", sent[2].body.commands) };
    assert_eq!(alert.data, "1226");
    assert_eq!(alert.items[0].data.as_deref(), Some("0"));
    assert_eq!(alert.items[0].meta.as_ref().and_then(|m| m.type_.as_deref()), Some("com.example.lab.report"));
    assert_eq!(results(&sent[2]), ["g5: ./Vendor/MSFT/Lab/Items (node) = a/c"]);
    // MsgIDs count per sender; CmdIDs restart at 1 in every message.
    let ids: Vec<&str> = sent.iter().map(|m| m.hdr.msg_id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    assert!(sent.iter().all(|m| m.body.commands.first().map(Command::cmd_id) == Some("1")));

    // The tree afterwards.
    let t = &device.tree;
    assert_eq!(t.value("Vendor/MSFT/Lab/Items/a/Name"), Some("alpha2"));
    assert_eq!(t.value("Vendor/MSFT/Lab/Items/c/Count"), Some("3"));
    assert_eq!(t.value("Vendor/MSFT/Lab/Mode"), Some("fast"));
    assert_eq!(t.value("Vendor/MSFT/Lab/Reboots"), Some("1"));
    assert!(t.entry("Vendor/MSFT/Lab/Items/b").is_none(), "deleted in the Sequence");
    assert!(t.entry("Vendor/MSFT/Lab/Items/d").is_none(), "rolled back with Atomic at2");
    assert!(!t.is_dirty(), "a completed session is committed");

    let s = &report.summary;
    assert_eq!(s.outcome, Outcome::Completed);
    assert_eq!((s.messages_sent, s.messages_received), (3, 2));
    assert_eq!(s.commands_received.get("Get"), Some(&5));
    assert_eq!(s.commands_received.get("Add"), Some(&6));
    assert_eq!(s.commands_received.get("Atomic"), Some(&2));
    assert_eq!(s.statuses_sent.get(&216), Some(&2));
    assert_eq!(s.statuses_sent.get(&507), Some(&1));
    assert_eq!(device.sessions, 1);
    let kinds: Vec<&str> = s.effects.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["alert", "request_session"]);
    assert_eq!(report.effects, [mdmsim::tree::Effect::RequestSession { reason: "lab report".into() }]);
}

#[tokio::test]
async fn a_failed_session_leaves_the_tree_as_it_was_and_counts_the_session() {
    let server =
        Server::start(vec![Reply::Syncml(msg(vec![add("a1", &format!("{LAB}/Items/x/Name"), "x")])), Reply::Http(502)]);
    let registry = lab::registry();
    let mut device = lab_device(&server);
    let before = device.tree.clone();
    let report = run_session(&registry, &mut device, &transport(), SessionOptions::new(Trigger::Manual)).await;
    let err = report.error.expect("the session fails");
    assert!(err.to_string().contains("HTTP 502"), "{err}");
    assert_eq!(report.summary.outcome, Outcome::Failed);
    assert_eq!(device.tree, before);
    assert_eq!(device.sessions, 1);
}

#[tokio::test]
async fn a_large_object_split_over_two_messages_arrives_whole() {
    let mode = format!("{LAB}/Mode");
    let mut first = item_cmd("c1", &mode, Some("turbo-"));
    first.items[0].more_data = true;
    first.items[0].meta = Some(Box::new(mdmsim::syncml::Meta { size: Some("11".into()), ..Default::default() }));
    let last = item_cmd("c2", &mode, Some("boost"));
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![Command::Replace(first)]).not_final()),
        Reply::Syncml(msg(vec![Command::Replace(last)])),
        Reply::Empty,
    ]);
    let registry = lab::registry();
    let mut device = lab_device(&server);
    let report = run_session(&registry, &mut device, &transport(), SessionOptions::new(Trigger::Manual)).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    let sent = server.device_messages();
    assert_eq!(statuses(&sent[1], "1"), ["0 SyncHdr 200", "c1 Replace 213"]);
    assert_eq!(alerts(&sent[1]), ["1222"]);
    assert_eq!(statuses(&sent[2], "2"), ["0 SyncHdr 200", "c2 Replace 200"]);
    assert_eq!(device.tree.value("Vendor/MSFT/Lab/Mode"), Some("turbo-boost"));
}

// ---- the binary, as a user runs it ----

#[test]
fn sync_prints_a_json_summary_writes_a_transcript_and_tree_shows_the_change() {
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![
            get("g1", "./DevDetail/Ext/Microsoft/SMBIOSSerialNumber"),
            replace("r1", "./DevDetail/Ext/Microsoft/DeviceName", "KIOSK-01"),
            add("a1", "./DevDetail/Ext/Microsoft/DeviceName", "KIOSK-02"),
            delete("d1", "./DevInfo/Man"),
        ])),
        Reply::Empty,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let transcript = dir.path().join("transcript");
    let id = new_device(&state, &server.url, 1);
    assert_eq!(id.len(), 32);
    let (code, out, err) =
        mdmsim(&["sync", "--state", &state.to_string_lossy(), "--json", "--transcript", &transcript.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(j["outcome"], "completed");
    assert_eq!(j["device_id"], id.as_str());
    assert_eq!(j["mode"], "Maintenance");
    assert_eq!(j["trigger"], "manual");
    assert_eq!(j["messages_sent"], 2);
    assert_eq!(j["messages_received"], 1);
    // Statuses: the SyncHdr's and one for each of package 1's three commands.
    assert_eq!(j["commands_received"], serde_json::json!({"Add": 1, "Delete": 1, "Get": 1, "Replace": 1, "Status": 4}));
    assert_eq!(j["statuses_sent"], serde_json::json!({"200": 2, "405": 1, "418": 1}));

    let sent = server.device_messages();
    assert_eq!(
        statuses(&sent[1], "1"),
        ["0 SyncHdr 200", "g1 Get 200", "r1 Replace 200", "a1 Add 418", "d1 Delete 405"]
    );
    assert_eq!(results(&sent[1]), ["g1: ./DevDetail/Ext/Microsoft/SMBIOSSerialNumber (chr) = 7HX2Q93"]);

    let files: Vec<String> = {
        let mut f: Vec<String> = std::fs::read_dir(&transcript)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        f.sort();
        f
    };
    assert_eq!(files, ["001-client.xml", "001-server.xml", "002-client.xml", "summary.json"]);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(transcript.join("summary.json")).unwrap()).unwrap();
    assert_eq!(saved, j, "the transcript's summary is the one printed");
    let t2 = std::fs::read_to_string(transcript.join("002-client.xml")).unwrap();
    assert!(t2.contains("7HX2Q93") && t2.lines().count() > 10, "pretty-printed:\n{t2}");
    assert!(mdmsim::syncml::decode(&t2).is_ok(), "a transcript file is valid SyncML");

    assert_eq!(tree_value(&state, "./DevDetail/Ext/Microsoft/DeviceName"), "KIOSK-01");
    // The human tree lists formats and values.
    let (code, out, _) = mdmsim(&["tree", "--state", &state.to_string_lossy(), "./DevInfo"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("./DevInfo/DevId  (chr)  {id}")), "{out}");
}

#[test]
fn sync_sends_the_windows_http_request_and_the_trigger_decides_the_mode() {
    let server = Server::start(vec![Reply::Empty, Reply::Empty]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy().into_owned();
    new_device(dir.path(), &server.url, 2);
    let (code, out, err) = mdmsim(&["sync", "--state", &state, "--trigger", "reboot"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("completed"), "{out}");
    assert!(out.contains("mode:      Machine (trigger reboot, alert 1201)"), "{out}");
    let (code, _, err) = mdmsim(&["sync", "--state", &state, "--trigger", "push"]);
    assert_eq!(code, 0, "{err}");

    let reqs = server.requests();
    assert_eq!(reqs[0].path, "/MDM.svc?mode=Machine&Platform=WoA");
    // The reboot logged everyone off and nobody logged on since: the push session runs in
    // Machine mode too.
    assert_eq!(reqs[1].path, "/MDM.svc?mode=Machine&Platform=WoA");
    let r = &reqs[0];
    assert_eq!(r.header("content-type"), Some("application/vnd.syncml.dm+xml"));
    assert_eq!(r.header("user-agent"), Some("MSFT OMA DM Client/1.2.0.1"));
    assert_eq!(r.header("accept-charset"), Some("UTF-8"));
    assert_eq!(r.header("client-request-id"), Some("0"));
    assert!(r.header("accept").is_some_and(|a| a.contains("application/vnd.syncml.dm+xml")));
    // Package 1: Machine mode has nobody logged on; a push on win10 is server-initiated.
    let p1 = reqs[0].syncml();
    assert_eq!(alerts(&p1), ["1201", "1224"]);
    let Command::Alert(login) = &p1.body.commands[1] else { panic!() };
    assert_eq!(login.items[0].data.as_deref(), Some("none"));
    assert_eq!(p1.hdr.session_id, "1");
    let p2 = reqs[1].syncml();
    assert_eq!(alerts(&p2), ["1200", "1224"]);
    assert_eq!(p2.hdr.session_id, "2");
}

#[test]
fn multi_message_package_gets_alert_1222_until_final_then_the_session_ends_by_itself() {
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![get("g1", "./DevInfo/DmV")]).not_final().resp_uri("next/part?k=2")),
        Reply::Syncml(msg(vec![replace("r1", "./DevDetail/Ext/Microsoft/DeviceName", "PART-2")])),
        Reply::Syncml(msg(vec![])),
    ]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.url, 3);
    let (code, _, err) = mdmsim(&["sync", "--state", &dir.path().to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let sent = server.device_messages();
    assert_eq!(sent.len(), 3, "no status-only message is sent after the last server message");
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths[1..], ["/next/part?k=2", "/next/part?k=2"], "a relative RespURI is resolved");
    assert_eq!(statuses(&sent[1], "1"), ["0 SyncHdr 200", "g1 Get 200"]);
    assert_eq!(alerts(&sent[1]), ["1222"]);
    assert!(!sent[1].body.final_);
    assert_eq!(statuses(&sent[2], "2"), ["0 SyncHdr 200", "r1 Replace 200"]);
    assert!(alerts(&sent[2]).is_empty());
    assert!(sent[2].body.final_);
    assert_eq!(tree_value(dir.path(), "./DevDetail/Ext/Microsoft/DeviceName"), "PART-2");
}

#[test]
fn http_429_is_retried_after_retry_after_and_resp_uri_is_honoured() {
    let server = Server::start(vec![
        Reply::TooMany(0),
        Reply::Syncml(msg(vec![get("g1", "./DevInfo/Lang")]).resp_uri("{origin}/next?s=abc")),
        Reply::Syncml(msg(vec![get("g2", "./DevInfo/DmV")])),
        Reply::Empty,
    ]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.url, 4);
    let (code, _, err) = mdmsim(&["sync", "--state", &dir.path().to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let reqs = server.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/MDM.svc?mode=Maintenance&Platform=WoA",
            "/MDM.svc?mode=Maintenance&Platform=WoA",
            "/next?s=abc",
            "/next?s=abc",
        ],
        "package 1 again after the 429, then the RespURI for the rest of the session"
    );
    assert_eq!(reqs[0].body, reqs[1].body);
    assert_eq!(statuses(&reqs[3].syncml(), "2"), ["0 SyncHdr 200", "g2 Get 200"]);
}

#[test]
fn http_429_without_end_gives_up_after_bounded_retries() {
    let server = Server::start(vec![Reply::TooMany(0); 10]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.url, 8);
    let (code, _, err) = mdmsim(&["sync", "--state", &dir.path().to_string_lossy()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("answered HTTP 429 (too many requests) 4 times"), "{err}");
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn secrets_never_reach_transcripts_or_logs() {
    let secret_uri = "./SyncML/DMAcc/Fleet/AppAuth/CLCRED/AAuthSecret";
    let server =
        Server::start(vec![Reply::Syncml(msg(vec![replace("r1", secret_uri, "hunter2-secret")])), Reply::Empty]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let transcript = dir.path().join("t");
    new_device(&state, &server.url, 10);
    let (code, out, err) =
        mdmsim(&["sync", "--state", &state.to_string_lossy(), "--transcript", &transcript.to_string_lossy(), "-vvv"]);
    assert_eq!(code, 0, "{err}");
    let server_file = std::fs::read_to_string(transcript.join("001-server.xml")).unwrap();
    assert!(server_file.contains(secret_uri) && server_file.contains("***"), "{server_file}");
    assert!(err.contains("client message 1:"), "-vvv logs the messages");
    for text in [&server_file, &out, &err] {
        assert!(!text.contains("hunter2-secret"), "secret leaked:\n{text}");
    }
}

// ---- faults: each ends the session with a clear error and exit code, tree unchanged ----

/// Runs a session whose first server message renames the device and whose second answer is
/// `fault`; returns (exit code, stderr) after checking the rename was rolled back.
fn fault_session(fault: Reply, extra: &[&str]) -> (i32, String) {
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![replace("r1", "./DevDetail/Ext/Microsoft/DeviceName", "CHANGED")])),
        fault,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    new_device(state, &server.url, 5);
    let before = tree_value(state, "./DevDetail/Ext/Microsoft/DeviceName");
    let mut args = vec!["sync", "--state", state.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, out, err) = mdmsim(&args);
    assert!(out.contains("FAILED"), "the summary says it failed:\n{out}");
    assert_eq!(server.requests().len(), 2, "the device stops at the fault");
    assert_eq!(tree_value(state, "./DevDetail/Ext/Microsoft/DeviceName"), before, "tree rolled back");
    assert_session_count(state, 1);
    (code, err)
}

fn assert_session_count(state: &Path, n: u64) {
    let store = mdmsim::runner::store::Store::open(state).unwrap();
    let d = store.load(None).unwrap();
    assert_eq!(d.sessions, n);
    assert_eq!(store.sessions(&d.id).unwrap().len() as u64, n, "the failed session's summary is stored");
}

#[test]
fn fault_http_500_is_a_protocol_error() {
    let (code, err) = fault_session(Reply::Http(500), &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("answered HTTP 500: scripted failure"), "{err}");
}

#[test]
fn fault_connection_closed_mid_body_is_a_protocol_error() {
    let (code, err) = fault_session(Reply::CutBody, &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("reading the answer of"), "{err}");
}

#[test]
fn fault_malformed_xml_is_a_protocol_error() {
    let (code, err) = fault_session(Reply::Raw("<SyncML><SyncHdr><VerDTD>1.2</SyncHdr>".into()), &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("in reply to client message 2 is not valid SyncML (line 1, column"), "{err}");
}

#[test]
fn fault_wrong_msg_ref_is_a_protocol_error() {
    let (code, err) = fault_session(Reply::Syncml(msg(vec![]).msg_ref("7")), &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("MsgRef \"7\" refers to no message the device sent"), "{err}");
}

#[test]
fn fault_server_that_never_answers_is_unreachable() {
    let (code, err) = fault_session(Reply::Hang, &["--timeout", "1"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no answer from") && err.contains("within 1 s"), "{err}");
}

#[test]
fn fault_nobody_listening_is_unreachable_and_unknown_device_is_a_state_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy().into_owned();
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    new_device(dir.path(), "http://127.0.0.1:9/MDM.svc", 6);
    let (code, _, err) = mdmsim(&["sync", "--state", &state]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot connect to http://127.0.0.1:9/MDM.svc"), "{err}");
    let (code, _, err) = mdmsim(&["sync", "--state", &state, "--device", "00000000000000000000000000000000"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("no device 00000000000000000000000000000000"), "{err}");
    let (code, _, err) =
        mdmsim(&["device", "new", "--state", &state, "--server", "http://127.0.0.1:9/x", "--id", "xyz"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = mdmsim(&[
        "device",
        "new",
        "--state",
        &state,
        "--server",
        "http://127.0.0.1:9/x",
        "--id",
        "1e08c6e95d8bb843b1278ff45bc60cc6",
        "--profile",
        "win81",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = mdmsim(&["device", "list", "--state", &state]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(out.contains("  1E08C6E95D8BB843B1278FF45BC60CC6  win81  http://127.0.0.1:9/x  sessions=0"), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("* ")), "the first device is the default:\n{out}");
}

// ---- TLS ----

#[test]
fn tls_is_verified_by_default_and_ca_cert_or_insecure_let_the_session_through() {
    let server = crate::support::tls::TlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    new_device(&state, &server.url, 9);
    let state = state.to_string_lossy().into_owned();

    let (code, _, err) = mdmsim(&["sync", "--state", &state, "--timeout", "10"]);
    assert_eq!(code, 3, "an unknown CA is refused: {err}");
    assert!(err.contains("TLS with https://127.0.0.1:"), "{err}");
    assert_eq!(server.served(), 0);

    let (code, out, err) = mdmsim(&["sync", "--state", &state, "--ca-cert", &ca.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("completed"), "{out}");
    assert_eq!(server.served(), 1);

    let (code, _, err) = mdmsim(&["sync", "--state", &state, "--insecure"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.served(), 2);

    let (code, _, err) = mdmsim(&["sync", "--state", &state, "--ca-cert", "/nonexistent/ca.pem"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ca-cert /nonexistent/ca.pem"), "{err}");
}
