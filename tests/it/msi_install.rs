//! EnterpriseDesktopAppManagement MSI installs as Fleet sends them (Microsoft's
//! "EnterpriseDesktopAppManagement CSP" page): `mdmsim device new`, then `mdmsim sync` or
//! `mdmsim run --clock virtual` against the scripted SyncML server on 127.0.0.1, the package
//! served by a content server on 127.0.0.1 and downloaded and hashed for real. What is asserted
//! is what the server receives: the statuses of its commands, the Status values its Gets read in
//! later sessions, and the completion Alert 1224 in package 1 of the session after the install.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use mdmsim::syncml::{Alert, Command, SyncMl, decode};

use crate::support::content::Content;
use crate::support::server::{Reply, Server, msg};
use crate::support::{mdmsim, tree_value};

/// The bytes the content server serves as the agent's MSI.
const MSI: &[u8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 a pretend fleetd-base.msi, served on loopback";
/// Fleet's agent product code (the golden fixture's).
const PID: &str = "{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}";
const PID_ESC: &str = "%7BA427C0AA-E2D5-40DF-ACE8-0D726A6BE096%7D";
const NODE: &str = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7BA427C0AA-E2D5-40DF-ACE8-0D726A6BE096%7D";
const ALERT_TYPE: &str = "Reversed-Domain-Name:com.microsoft.mdm.win32csp_install";
/// The alert's Source: the product code with literal braces, as in the page's alert example.
const ALERT_SOURCE: &str =
    "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}/DownloadInstall";

/// Every step of the install at once: the whole install runs in the `sync` that delivers the Exec.
const NO_WAIT: &str = "msi_queue_ms = 0\nmsi_download_ms = 0\nmsi_downloaded_ms = 0\nmsi_install_ms = 0\n";
/// Steps of a minute or two, for a virtual clock: 10 for 1 min, 20 for 2, 40 for 1, 50 for 2.
const MINUTES: &str =
    "msi_queue_ms = 60000\nmsi_download_ms = 120000\nmsi_downloaded_ms = 60000\nmsi_install_ms = 120000\n";

fn sha_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

// ---- Fleet's commands ----

/// Fleet's MsiInstallJob for its agent (TimeOut 10, RetryCount and RetryInterval as given).
fn job(url: &str, hash: &str, retry_count: u8, retry_interval: u8) -> String {
    format!(
        r#"<MsiInstallJob id="{PID}"><Product Version="1.0.0.0"><Download><ContentURLList><ContentURL>{url}</ContentURL></ContentURLList></Download><Validation><FileHash>{hash}</FileHash></Validation><Enforcement><CommandLine>/quiet FLEET_URL="https://fleet.example.com" FLEET_SECRET="s3cr3t"</CommandLine><TimeOut>10</TimeOut><RetryCount>{retry_count}</RetryCount><RetryInterval>{retry_interval}</RetryInterval></Enforcement></Product></MsiInstallJob>"#
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Fleet's Add and Exec of a job: UUID CmdIDs, Meta after Data, the job escaped.
fn add_exec(node: &str, job: &str) -> String {
    format!(
        r#"<Add><CmdID>8f1d6e0c-3b7a-4d2e-9c61-5a0f2b7e4d11</CmdID><Item><Target><LocURI>{node}/DownloadInstall</LocURI></Target></Item></Add><Exec><CmdID>c3a9b5f2-71d4-4e0b-8a26-9e4f0d13b7c8</CmdID><Item><Target><LocURI>{node}/DownloadInstall</LocURI></Target><Data>{}</Data><Meta><Type xmlns="syncml:metinf">text/plain</Type><Format xmlns="syncml:metinf">xml</Format></Meta></Item></Exec>"#,
        esc(job)
    )
}

const ADD: &str = "8f1d6e0c-3b7a-4d2e-9c61-5a0f2b7e4d11";
const EXEC: &str = "c3a9b5f2-71d4-4e0b-8a26-9e4f0d13b7c8";

fn get(id: &str, uri: &str) -> String {
    format!("<Get><CmdID>{id}</CmdID><Item><Target><LocURI>{uri}</LocURI></Target></Item></Get>")
}

/// The Gets a server sends to follow the install (CmdIDs g1-g8).
fn poll() -> String {
    ["Status", "LastError", "LastErrorDesc", "Version", "Name", "Publisher", "InstallPath", "InstallDate"]
        .iter()
        .enumerate()
        .map(|(i, leaf)| get(&format!("g{}", i + 1), &format!("{NODE}/{leaf}")))
        .collect()
}

/// SyncML command fragments as the server's message body.
fn cmds(fragments: &str) -> Vec<Command> {
    let xml = format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>dev</LocURI></Target><Source><LocURI>https://srv</LocURI></Source></SyncHdr><SyncBody>{fragments}<Final/></SyncBody></SyncML>"#
    );
    decode(&xml).expect("the test's commands decode").body.commands
}

/// The golden fixture of Fleet's fleetd install, verbatim but for what names this run: the
/// answer to message 1 of session `session`, for `device`, with the package's URL and hash, and
/// `extra` commands before `<Final/>`. It goes on the wire as Fleet writes it (UUID CmdIDs,
/// Meta after Data, the job escaped with its own `&` escaped twice).
fn fleet_fixture(session: u32, device: &str, url: &str, hash: &str, extra: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/syncml/fleet-msi-install.xml");
    let text = std::fs::read_to_string(&path).expect("the Fleet fixture");
    text.replace("<SessionID>2</SessionID>", &format!("<SessionID>{session}</SessionID>"))
        .replace("<MsgID>2</MsgID>", "<MsgID>1</MsgID>")
        .replace("<MsgRef>2</MsgRef>", "<MsgRef>1</MsgRef>")
        .replace("1E08C6E95D8BB843B1278FF45BC60CC6", device)
        .replace("https://download.fleetdm.com/fleetd-base.msi", url)
        .replace("9F2C1A0B7E4D3C2B1A09F8E7D6C5B4A39281706F5E4D3C2B1A09F8E7D6C5B4A3", hash)
        .replace("<Final/>", &format!("{extra}<Final/>"))
}

// ---- reading what the device sent ----

/// The Status codes the device sent for command `cmd_ref`.
fn codes(m: &SyncMl, cmd_ref: &str) -> Vec<String> {
    m.body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Status(s) if s.cmd_ref == cmd_ref => Some(s.data.clone()),
            _ => None,
        })
        .collect()
}

/// The Results data whose Source is `uri`.
fn value(m: &SyncMl, uri: &str) -> Option<String> {
    m.body.commands.iter().find_map(|c| match c {
        Command::Results(r) => {
            r.items.iter().find(|i| i.source.as_deref().map(str::trim) == Some(uri)).and_then(|i| i.data.clone())
        }
        _ => None,
    })
}

/// The install reports (Alert 1224 with the page's Meta Type) of a package 1.
fn install_alerts(package1: &SyncMl) -> Vec<Alert> {
    package1
        .body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Alert(a)
                if a.data == "1224"
                    && a.items.iter().any(|i| i.meta.as_ref().and_then(|m| m.type_.as_deref()) == Some(ALERT_TYPE)) =>
            {
                Some(a.clone())
            }
            _ => None,
        })
        .collect()
}

/// Asserts that `a` is the page's alert example for Fleet's product with Data `data`.
fn assert_report(a: &Alert, data: &str) {
    assert_eq!(a.data, "1224");
    assert_eq!(a.items.len(), 1, "{a:?}");
    let item = &a.items[0];
    assert_eq!(item.source.as_deref(), Some(ALERT_SOURCE));
    let meta = item.meta.as_ref().expect("the alert item has a Meta");
    assert_eq!(meta.type_.as_deref(), Some(ALERT_TYPE));
    assert_eq!(meta.format.as_deref(), Some("int"));
    assert_eq!(meta.mark.as_deref(), Some("informational"));
    assert_eq!(item.data.as_deref(), Some(data));
}

fn hr(v: u32) -> String {
    (v as i32).to_string()
}

// ---- one device, its servers and its sessions ----

struct Lab {
    dir: tempfile::TempDir,
    server: Server,
    content: Content,
    device: String,
    sessions: usize,
}

/// What one `mdmsim sync` gave: package 1, the device's last message, the output.
struct Session {
    package1: SyncMl,
    answer: SyncMl,
    stdout: String,
}

impl Lab {
    /// A win10 device created by `mdmsim device new` from a template with these `[behaviour]`
    /// lines.
    fn new(behaviour: &str) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Server::start(vec![]);
        let content = Content::start(vec![("/fleet/fleetd-base.msi", MSI.to_vec())]);
        let state = dir.path().join("state");
        let behaviour = format!("jitter = \"false\"\n{behaviour}");
        let device = crate::support::new_device_behaving(&state, &server.url, 17, &behaviour);
        Lab { dir, server, content, device, sessions: 0 }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn package_url(&self) -> String {
        self.content.url("/fleet/fleetd-base.msi")
    }

    /// `mdmsim sync` with the server playing `script` (one reply per device message); asserts
    /// the exit code.
    fn sync_with(&mut self, script: Vec<Reply>, expect_code: i32) -> Session {
        self.sessions += 1;
        let before = self.server.requests().len();
        self.server.then(script);
        let (code, stdout, err) = mdmsim(&["sync", "--state", &self.state().to_string_lossy(), "--timeout", "10"]);
        assert_eq!(code, expect_code, "sync {}: {err}\n{stdout}", self.sessions);
        let requests = self.server.requests();
        let package1 = requests.get(before).expect("package 1 was sent").syncml();
        let answer = requests.last().expect("a device message").syncml();
        Session { package1, answer, stdout }
    }

    /// One session in which the server sends `commands` and then ends the session.
    fn sync(&mut self, commands: &str) -> Session {
        self.sync_with(vec![Reply::Syncml(msg(cmds(commands))), Reply::Empty], 0)
    }

    /// `mdmsim run --clock virtual` from 2026-03-02T08:00:00Z until `until` with the events
    /// of `events` (TOML), the server answering the first session with `first` and every later
    /// one with [`poll`]; returns the run's JSON and, per session, (package 1, last message).
    fn run(&mut self, first: Reply, events: &str, until: &str) -> (Value, Vec<(SyncMl, SyncMl)>) {
        let file = self.dir.path().join("events.toml");
        std::fs::write(&file, events).expect("write events");
        let mut script = vec![first, Reply::Empty];
        for _ in 0..12 {
            script.push(Reply::Syncml(msg(cmds(&poll()))));
            script.push(Reply::Empty);
        }
        self.server.then(script);
        let (code, out, err) = mdmsim(&[
            "run",
            "--state",
            &self.state().to_string_lossy(),
            "--clock",
            "virtual",
            "--start",
            "2026-03-02T08:00:00Z",
            "--until",
            until,
            "--events",
            &file.to_string_lossy(),
            "--json",
            "--timeout",
            "10",
        ]);
        assert_eq!(code, 0, "run: {err}\n{out}");
        let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        let requests = self.server.requests();
        assert_eq!(requests.len() % 2, 0, "every session is package 1 and one answer");
        let sessions = requests.chunks(2).map(|pair| (pair[0].syncml(), pair[1].syncml())).collect();
        (v, sessions)
    }

    fn tree_value(&self, uri: &str) -> String {
        tree_value(&self.state(), uri)
    }
}

fn session_times(v: &Value) -> Vec<(String, String)> {
    v["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["kind"] == "session")
        .map(|r| {
            (
                r["at"].as_str().unwrap_or_default().to_string(),
                r["summary"]["trigger"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

// ---- the tests ----

#[test]
fn fleets_install_reads_10_20_40_50_70_over_sessions_and_the_alert_comes_in_the_next_package_1() {
    let mut lab = Lab::new(MINUTES);
    let hash = sha_hex(MSI).to_ascii_uppercase();
    let first =
        Reply::Raw(fleet_fixture(1, &lab.device, &lab.package_url(), &hash, &get("s1", &format!("{NODE}/Status"))));
    let events = r#"
[[event]]
at = "+90s"
kind = "sync"
[[event]]
at = "+210s"
kind = "sync"
[[event]]
at = "+270s"
kind = "sync"
[[event]]
at = "+8m"
kind = "sync"
"#;
    let (v, sessions) = lab.run(first, events, "10m");
    assert_eq!(
        session_times(&v),
        [
            ("2026-03-02T08:00:00Z".into(), "enrollment".into()),
            ("2026-03-02T08:01:30Z".into(), "manual".into()),
            ("2026-03-02T08:03:30Z".into(), "manual".into()),
            ("2026-03-02T08:04:30Z".into(), "manual".into()),
            // The device asks for a session when msiexec is done (1 + 2 + 1 + 2 minutes).
            ("2026-03-02T08:06:00Z".into(), "manual".into()),
            ("2026-03-02T08:08:00Z".into(), "manual".into()),
        ],
        "{v}"
    );
    assert_eq!(sessions.len(), 6);
    // Session 1: Fleet's Add and Exec, answered at once; the Get right after reads 10.
    let (_, answer) = &sessions[0];
    assert_eq!(codes(answer, ADD), ["200"]);
    assert_eq!(codes(answer, EXEC), ["200"], "the Exec answers 200 at once");
    assert_eq!(value(answer, &format!("{NODE}/Status")).as_deref(), Some("10"));
    // Later sessions read the Status the device's timers reached.
    let seen: Vec<String> =
        sessions[1..].iter().map(|(_, a)| value(a, &format!("{NODE}/Status")).unwrap_or_default()).collect();
    assert_eq!(seen, ["20", "40", "50", "70", "70"]);
    // The report is in package 1 of the session after the install, and only there.
    let reports: Vec<usize> = sessions.iter().map(|(p1, _)| install_alerts(p1).len()).collect();
    assert_eq!(reports, [0, 0, 0, 0, 1, 0]);
    assert_report(&install_alerts(&sessions[4].0)[0], "0");
    // Installed: the product's values, LastError 0.
    let (_, last) = &sessions[5];
    assert_eq!(value(last, &format!("{NODE}/LastError")).as_deref(), Some("0"));
    assert_eq!(value(last, &format!("{NODE}/Version")).as_deref(), Some("1.0.0.0"));
    assert_eq!(value(last, &format!("{NODE}/Name")).as_deref(), Some("fleetd-base"));
    assert_eq!(value(last, &format!("{NODE}/Publisher")).as_deref(), Some("127.0.0.1"));
    assert_eq!(value(last, &format!("{NODE}/InstallPath")).as_deref(), Some("C:\\Program Files\\fleetd-base\\"));
    assert_eq!(value(last, &format!("{NODE}/InstallDate")).as_deref(), Some("20260302"));
    // Before the install those values were not there.
    assert_eq!(codes(&sessions[2].1, "g4"), ["404"], "Version while downloading");
    // One real download, of the URL in the job.
    assert_eq!(lab.content.hits(), ["/fleet/fleetd-base.msi"]);
    assert_eq!(lab.tree_value(&format!("{NODE}/Status")), "70");
}

#[test]
fn an_alert_raised_after_a_sync_goes_in_the_next_one_and_stays_until_a_session_completes() {
    let mut lab = Lab::new(NO_WAIT);
    let url = lab.package_url();
    let s = lab.sync(&add_exec(NODE, &job(&url, &sha_hex(MSI), 1, 5)));
    assert_eq!(codes(&s.answer, ADD), ["200"]);
    assert_eq!(codes(&s.answer, EXEC), ["200"]);
    assert!(install_alerts(&s.package1).is_empty());
    // The install ran after the session, in the same `sync`; its report waits for the next one.
    assert!(
        s.stdout.contains(&format!("msi:       Device {PID} 1.0.0.0: Status 70 Enforcement Completed")),
        "{}",
        s.stdout
    );
    assert!(
        s.stdout.contains(&format!("alert:     1224 {ALERT_TYPE} {ALERT_SOURCE}: 0 (queued for the next session)")),
        "{}",
        s.stdout
    );
    // The next session fails at the server: the alert was sent and is kept.
    let s = lab.sync_with(vec![Reply::Http(500)], 4);
    assert_report(&install_alerts(&s.package1)[0], "0");
    assert!(s.stdout.contains(&format!("alert:     1224 {ALERT_TYPE} {ALERT_SOURCE}: 0 (queued")), "{}", s.stdout);
    // The one after completes: sent again, once, and then forgotten.
    let s = lab.sync(&get("s1", &format!("{NODE}/Status")));
    let reports = install_alerts(&s.package1);
    assert_eq!(reports.len(), 1, "{:?}", s.package1.body.commands);
    assert_report(&reports[0], "0");
    assert_eq!(value(&s.answer, &format!("{NODE}/Status")).as_deref(), Some("70"));
    assert!(!s.stdout.contains("alert:"), "{}", s.stdout);
    let s = lab.sync(&get("s1", &format!("{NODE}/Status")));
    assert!(install_alerts(&s.package1).is_empty(), "delivered once");
    assert_eq!(lab.content.hits().len(), 1);
}

#[test]
fn an_alert_raised_between_two_syncs_goes_in_the_second() {
    // msiexec runs 1.5 s: it is still running when the first `sync` ends.
    let mut lab = Lab::new("msi_queue_ms = 0\nmsi_download_ms = 0\nmsi_downloaded_ms = 0\nmsi_install_ms = 1500\n");
    let url = lab.package_url();
    let s = lab.sync(&add_exec(NODE, &job(&url, &sha_hex(MSI), 1, 5)));
    assert!(s.stdout.contains("Status 50 Enforcement In Progress"), "{}", s.stdout);
    assert!(!s.stdout.contains("alert:"), "{}", s.stdout);
    std::thread::sleep(Duration::from_millis(2000));
    // The second `sync` first catches up (msiexec ended), then its package 1 carries the report.
    let s = lab.sync(&get("s1", &format!("{NODE}/Status")));
    assert_report(&install_alerts(&s.package1)[0], "0");
    assert_eq!(value(&s.answer, &format!("{NODE}/Status")).as_deref(), Some("70"));
}

#[test]
fn a_wrong_hash_ends_in_30_after_the_retries_with_last_error() {
    let mut lab = Lab::new(MINUTES);
    let wrong = "AB".repeat(32);
    // RetryCount 1, RetryInterval 5: one more download five minutes after the first.
    let first = Reply::Syncml(msg(cmds(&format!(
        "{}{}",
        add_exec(NODE, &job(&lab.package_url(), &wrong, 1, 5)),
        get("s1", &format!("{NODE}/Status"))
    ))));
    let events = "[[event]]\nat = \"+3m\"\nkind = \"sync\"\n[[event]]\nat = \"+10m\"\nkind = \"sync\"\n";
    let (v, sessions) = lab.run(first, events, "12m");
    let times: Vec<String> = session_times(&v).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        times,
        ["2026-03-02T08:00:00Z", "2026-03-02T08:03:00Z", "2026-03-02T08:06:00Z", "2026-03-02T08:10:00Z"],
        "{v}"
    );
    let status = |i: usize| value(&sessions[i].1, &format!("{NODE}/Status")).unwrap_or_default();
    let last_error = |i: usize| value(&sessions[i].1, &format!("{NODE}/LastError")).unwrap_or_default();
    assert_eq!(status(0), "10");
    // After the first download: Pending Download Retry, and why.
    assert_eq!(status(1), "25");
    assert_eq!(last_error(1), hr(0x8009_1007), "CRYPT_E_HASH_VALUE");
    let desc = value(&sessions[1].1, &format!("{NODE}/LastErrorDesc")).unwrap_or_default();
    assert!(desc.starts_with("0x80091007: the package's SHA-256 is ") && desc.contains(&"ab".repeat(32)), "{desc}");
    // After the retry: Download Failed, reported with the HRESULT.
    assert_eq!((status(2), last_error(2)), ("30".to_string(), hr(0x8009_1007)));
    assert_eq!(status(3), "30");
    let reports: Vec<usize> = sessions.iter().map(|(p1, _)| install_alerts(p1).len()).collect();
    assert_eq!(reports, [0, 0, 1, 0]);
    assert_report(&install_alerts(&sessions[2].0)[0], &hr(0x8009_1007));
    assert_eq!(codes(&sessions[3].1, "g4"), ["404"], "no Version: nothing was installed");
    assert_eq!(lab.content.hits(), ["/fleet/fleetd-base.msi", "/fleet/fleetd-base.msi"]);
}

#[test]
fn a_404_package_ends_in_30_with_the_http_hresult() {
    let mut lab = Lab::new(NO_WAIT);
    let url = lab.content.url("/fleet/gone.msi");
    let s = lab.sync(&add_exec(NODE, &job(&url, &sha_hex(MSI), 0, 5)));
    assert_eq!(codes(&s.answer, EXEC), ["200"]);
    assert!(
        s.stdout.contains("Status 30 Download Failed, LastError 0x80190194: the content server answered HTTP 404"),
        "{}",
        s.stdout
    );
    let s = lab.sync(&poll());
    assert_eq!(value(&s.answer, &format!("{NODE}/Status")).as_deref(), Some("30"));
    // HTTP_E_STATUS_NOT_FOUND as the signed 32-bit int the node holds.
    assert_eq!(value(&s.answer, &format!("{NODE}/LastError")), Some(hr(0x8019_0194)));
    assert_report(&install_alerts(&s.package1)[0], &hr(0x8019_0194));
    assert_eq!(codes(&s.answer, "g4"), ["404"], "no Version");
    assert_eq!(lab.content.hits(), ["/fleet/gone.msi"]);
}

#[test]
fn a_malformed_msi_install_job_is_answered_400_and_reads_status_60() {
    let mut lab = Lab::new(NO_WAIT);
    let url = lab.package_url();
    let good = job(&url, &sha_hex(MSI), 1, 5);
    let cases = [
        (
            "{11111111-0000-0000-0000-000000000001}",
            "MsiInstallJob without markup".to_string(),
            0x8007_000Du32,
            "not well-formed XML",
        ),
        (
            "{11111111-0000-0000-0000-000000000002}",
            good.replace(&format!("<ContentURL>{url}</ContentURL>"), ""),
            0x8007_0057,
            "has no ContentURL",
        ),
        (
            "{11111111-0000-0000-0000-000000000003}",
            good.replace(&format!("<FileHash>{}</FileHash>", sha_hex(MSI)), ""),
            0x8007_0057,
            "has no FileHash",
        ),
        (
            "{11111111-0000-0000-0000-000000000004}",
            good.replace("<TimeOut>10</TimeOut>", "<TimeOut>soon</TimeOut>"),
            0x8007_0057,
            "Enforcement/TimeOut \"soon\" is not a whole number",
        ),
    ];
    let base = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI";
    let mut body = String::new();
    for (i, (pid, data, _, _)) in cases.iter().enumerate() {
        let node = format!("{base}/{}", pid.replace('{', "%7B").replace('}', "%7D"));
        body.push_str(&format!(
            r#"<Exec><CmdID>x{i}</CmdID><Item><Target><LocURI>{node}/DownloadInstall</LocURI></Target><Meta><Format xmlns="syncml:metinf">xml</Format></Meta><Data>{}</Data></Item></Exec>"#,
            esc(data)
        ));
        body.push_str(&get(&format!("s{i}"), &format!("{node}/Status")));
        body.push_str(&get(&format!("e{i}"), &format!("{node}/LastError")));
        body.push_str(&get(&format!("d{i}"), &format!("{node}/LastErrorDesc")));
    }
    let s = lab.sync(&body);
    for (i, (pid, _, hresult, problem)) in cases.iter().enumerate() {
        let node = format!("{base}/{}", pid.replace('{', "%7B").replace('}', "%7D"));
        assert_eq!(codes(&s.answer, &format!("x{i}")), ["400"], "{pid}");
        assert_eq!(value(&s.answer, &format!("{node}/Status")).as_deref(), Some("60"), "{pid}");
        assert_eq!(value(&s.answer, &format!("{node}/LastError")), Some(hr(*hresult)), "{pid}");
        let desc = value(&s.answer, &format!("{node}/LastErrorDesc")).unwrap_or_default();
        assert!(desc.starts_with(&format!("0x{hresult:08X}: ")) && desc.contains(problem), "{pid}: {desc}");
    }
    // Nothing was downloaded and nothing is reported by alert (the 400 said it).
    assert!(lab.content.hits().is_empty());
    assert!(!s.stdout.contains("alert:"), "{}", s.stdout);
    let s = lab.sync(&get("s1", &format!("{base}/{}/Status", "%7B11111111-0000-0000-0000-000000000002%7D")));
    assert!(install_alerts(&s.package1).is_empty());
    assert_eq!(
        value(&s.answer, &format!("{base}/%7B11111111-0000-0000-0000-000000000002%7D/Status")).as_deref(),
        Some("60")
    );
}

#[test]
fn a_second_job_for_the_installed_product_does_not_reinstall() {
    let mut lab = Lab::new(NO_WAIT);
    let url = lab.package_url();
    let install = add_exec(NODE, &job(&url, &sha_hex(MSI), 1, 5));
    let s = lab.sync(&install);
    assert_eq!(codes(&s.answer, EXEC), ["200"]);
    // Fleet sends the same commands again: the Add finds the node, the Exec changes nothing.
    let s = lab.sync(&format!("{install}{}", get("s1", &format!("{NODE}/Status"))));
    assert_eq!(codes(&s.answer, ADD), ["418"]);
    assert_eq!(codes(&s.answer, EXEC), ["200"]);
    assert_eq!(value(&s.answer, &format!("{NODE}/Status")).as_deref(), Some("70"));
    assert_eq!(install_alerts(&s.package1).len(), 1, "the first install's report");
    assert!(!s.stdout.contains("alert:"), "no new report: {}", s.stdout);
    let s = lab.sync(&get("s1", &format!("{NODE}/Status")));
    assert_eq!(value(&s.answer, &format!("{NODE}/Status")).as_deref(), Some("70"));
    assert!(install_alerts(&s.package1).is_empty());
    assert_eq!(lab.content.hits(), ["/fleet/fleetd-base.msi"], "downloaded once");
}

#[test]
fn delete_of_the_product_node_uninstalls_the_msi() {
    let mut lab = Lab::new(NO_WAIT);
    let url = lab.package_url();
    lab.sync(&add_exec(NODE, &job(&url, &sha_hex(MSI), 1, 5)));
    let msi = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI";
    let s = lab.sync(&format!(
        "{}<Delete><CmdID>del</CmdID><Item><Target><LocURI>{NODE}</LocURI></Target></Item></Delete>{}{}",
        get("before", msi),
        get("after", msi),
        get("gone", &format!("{NODE}/Version"))
    ));
    assert_eq!(value(&s.answer, msi).as_deref(), Some(format!("UpgradeCode/{PID_ESC}").as_str()));
    assert_eq!(codes(&s.answer, "del"), ["200"]);
    let listed: Vec<String> = s
        .answer
        .body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Results(r) if r.cmd_ref == "after" => r.items.first().and_then(|i| i.data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(listed, ["UpgradeCode"]);
    assert_eq!(codes(&s.answer, "gone"), ["404"]);
    let s = lab.sync(&format!(
        "{}<Delete><CmdID>del</CmdID><Item><Target><LocURI>{NODE}</LocURI></Target></Item></Delete>",
        get("s1", &format!("{NODE}/Status"))
    ));
    assert_eq!(codes(&s.answer, "s1"), ["404"], "gone in a later session");
    assert_eq!(codes(&s.answer, "del"), ["404"], "a second Delete finds nothing");
    let (code, out, _) =
        mdmsim(&["tree", "--state", &lab.state().to_string_lossy(), "./Vendor/MSFT/EnterpriseDesktopAppManagement"]);
    assert_eq!(code, 0);
    assert!(!out.contains("A427C0AA"), "{out}");
}
