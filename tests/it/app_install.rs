//! EnterpriseAppManagement as a server developer drives it: `mdmsim device new --template`, then
//! one `mdmsim sync` per management session against the scripted SyncML server on 127.0.0.1,
//! with the packages served by a content server on 127.0.0.1. The server's commands are the
//! EnterpriseAppManagement CSP page's with the product IDs escaped (`%7B...%7D`); what is
//! asserted is what the server receives back (Status codes, Results), what `mdmsim tree` shows,
//! and the transcripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use mdmsim::syncml::{Command, SyncMl, decode};

use crate::support::content::Content;
use crate::support::server::{Reply, Server, msg};
use crate::support::{mdmsim, tree_value};

const PACKAGE: &[u8] = b"PK\x03\x04 a pretend appx package, served by the test content server";
const PACKAGE_V3: &[u8] = b"PK\x03\x04 version 3 of the pretend appx package";
/// The product ID of the EnterpriseAppManagement CSP page's example, escaped as its note says it must be.
const PID: &str = "%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D";
const ENT: &str = "./Vendor/MSFT/EnterpriseAppManagement/4000000001";
const DL: &str = "./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download";
const INV: &str = "./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Inventory";
/// The apps `fixtures/templates/win10-desktop.toml` pre-installs.
const HUB: &str = "%7BB0322158-C3C2-44EB-8A31-D14A9FEC450E%7D";
const EXPENSES: &str = "%7B6E1A4C2F-8D3B-4B7E-9F0A-2C5D7E8F1A3B%7D";

// ---- one device, its servers and its sessions ----

/// Step durations of 1 s: a server polling every second sees the intermediate states.
const ONE_SECOND_STEPS: &str =
    "entapp_queue_secs = 1\nentapp_download_secs = 1\nentapp_downloaded_secs = 1\nentapp_install_secs = 1\n";
/// Step durations of 0: the whole install runs in the `sync` that delivers the Exec.
const NO_WAIT: &str =
    "entapp_queue_secs = 0\nentapp_download_secs = 0\nentapp_downloaded_secs = 0\nentapp_install_secs = 0\n";

/// What one `mdmsim sync` gave.
struct Session {
    /// The device's answer to the server's commands (Statuses and Results).
    answer: SyncMl,
    /// What `sync` printed.
    stdout: String,
    /// The session's transcript directory.
    transcript: PathBuf,
}

struct Lab {
    dir: tempfile::TempDir,
    server: Server,
    content: Content,
    sessions: usize,
}

impl Lab {
    /// A device created by `mdmsim device new` from `template` (a file), or from a template with
    /// these `[behaviour]` lines.
    fn new(behaviour: &str, template: Option<&Path>) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Server::start(vec![]);
        let content = Content::start(vec![
            ("/apps/ContosoApp1.appx", PACKAGE.to_vec()),
            ("/apps/ContosoApp1-v3.appx", PACKAGE_V3.to_vec()),
        ]);
        let file = match template {
            Some(t) => t.to_path_buf(),
            None => {
                let f = dir.path().join("device.toml");
                let text = format!("profile = \"win10\"\n[behaviour]\nentapp_publisher = \"Contoso\"\n{behaviour}");
                std::fs::write(&f, text).expect("write template");
                f
            }
        };
        let state = dir.path().join("state");
        let (code, _, err) = mdmsim(&[
            "device",
            "new",
            "--state",
            &state.to_string_lossy(),
            "--server",
            &server.url,
            "--seed",
            "5",
            "--template",
            &file.to_string_lossy(),
        ]);
        assert_eq!(code, 0, "device new: {err}");
        Lab { dir, server, content, sessions: 0 }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// One management session in which the server sends `commands` (SyncML fragments) and then
    /// ends the session, run as `mdmsim sync --transcript`.
    fn sync(&mut self, commands: &str) -> Session {
        self.sessions += 1;
        self.server.then(vec![Reply::Syncml(msg(cmds(commands))), Reply::Empty]);
        let transcript = self.dir.path().join(format!("transcript-{}", self.sessions));
        let (code, stdout, err) = mdmsim(&[
            "sync",
            "--state",
            &self.state().to_string_lossy(),
            "--transcript",
            &transcript.to_string_lossy(),
            "--timeout",
            "10",
        ]);
        assert_eq!(code, 0, "sync {} failed: {err}\n{stdout}", self.sessions);
        let answer = self.server.requests().last().expect("the device sent its answer").syncml();
        Session { answer, stdout, transcript }
    }

    /// What `mdmsim tree --json` prints for a subtree.
    fn tree(&self, uri: &str) -> String {
        let (code, out, err) = mdmsim(&["tree", "--state", &self.state().to_string_lossy(), uri, "--json"]);
        assert_eq!(code, 0, "tree {uri}: {err}");
        out
    }

    fn tree_value(&self, uri: &str) -> String {
        tree_value(&self.state(), uri)
    }
}

impl Session {
    /// The codes of every Status the device returned for the server command `cmd_ref`.
    fn codes(&self, cmd_ref: &str) -> Vec<String> {
        self.answer
            .body
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Status(s) if s.cmd_ref == cmd_ref => Some(s.data.clone()),
                _ => None,
            })
            .collect()
    }

    /// (target, code) of every Status for `cmd_ref` (one per item).
    fn item_codes(&self, cmd_ref: &str) -> Vec<(String, String)> {
        self.answer
            .body
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Status(s) if s.cmd_ref == cmd_ref => {
                    Some(s.target_refs.iter().map(|t| (t.trim().to_string(), s.data.clone())).collect::<Vec<_>>())
                }
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The value of the Results item whose Source is exactly `uri`.
    fn value(&self, uri: &str) -> Option<String> {
        self.results().into_iter().find(|(s, _)| s == uri).map(|(_, d)| d)
    }

    /// (source, data) of every Results item.
    fn results(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for c in &self.answer.body.commands {
            if let Command::Results(r) = c {
                for i in &r.items {
                    out.push((
                        i.source.as_deref().unwrap_or("").trim().to_string(),
                        i.data.clone().unwrap_or_default(),
                    ));
                }
            }
        }
        out
    }

    /// A transcript file (`001-client.xml`...).
    fn transcript_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.transcript.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

// ---- the server's commands ----

/// SyncML command fragments as the server's message body.
fn cmds(fragments: &str) -> Vec<Command> {
    let xml = format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>dev</LocURI></Target><Source><LocURI>https://srv</LocURI></Source></SyncHdr><SyncBody>{fragments}<Final/></SyncBody></SyncML>"#
    );
    decode(&xml).expect("the test's commands decode").body.commands
}

fn get(id: &str, uri: &str) -> String {
    format!("<Get><CmdID>{id}</CmdID><Item><Target><LocURI>{uri}</LocURI></Target></Item></Get>")
}

/// The CSP page's enrollment of enterprise 4000000001.
const ENROLL: &str = r#"<Add><CmdID>2</CmdID>
  <Item><Target><LocURI>./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnrollmentToken</LocURI></Target>
    <Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>InsertTokenHere</Data></Item>
  <Item><Target><LocURI>./Vendor/MSFT/EnterpriseAppManagement/4000000001/CertificateSearchCriteria</LocURI></Target>
    <Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>SearchCriteriaInsertedHere</Data></Item>
</Add>"#;

/// The CSP page's install Atomic (CmdIDs 10-12), verbatim but for the URL — typo included: the
/// DownloadInstall item's LocURI lacks the slash after `Download`.
const SEED_ATOMIC: &str = r#"<Atomic>
   <CmdID>10</CmdID>
   <Add>
      <CmdID>11</CmdID>
      <Item><Target><LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/Name
            </LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>ContosoApp1</Data></Item>
      <Item><Target><LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/URL
            </LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>PACKAGE_URL</Data></Item>
      <Item><Target><LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/Version</LocURI></Target>
         <Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>2.0.0.0</Data></Item>
      <Item><Target><LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/DownloadInstall
            </LocURI></Target><Data>1</Data></Item>
   </Add>
   <Exec>
      <CmdID>12</CmdID>
      <Item><Target><LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/DownloadInstall
            </LocURI></Target><Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>0</Data></Item>
   </Exec>
</Atomic>"#;

/// The CSP page's Atomic with the slash put back (what a server that fixed the typo sends).
fn install(url: &str) -> String {
    SEED_ATOMIC.replace("Download%7B", "Download/%7B").replace("PACKAGE_URL", url)
}

/// The CSP page's note on 418: Replace Name, URL and Version, then Exec, in an Atomic (CmdIDs 20-22).
fn replace_and_exec(url: &str, version: &str) -> String {
    format!(
        r#"<Atomic><CmdID>20</CmdID><Replace><CmdID>21</CmdID>
        <Item><Target><LocURI>{DL}/{PID}/Name</LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>ContosoApp1</Data></Item>
        <Item><Target><LocURI>{DL}/{PID}/URL</LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>{url}</Data></Item>
        <Item><Target><LocURI>{DL}/{PID}/Version</LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>{version}</Data></Item>
        </Replace><Exec><CmdID>22</CmdID><Item><Target><LocURI>{DL}/{PID}/DownloadInstall</LocURI></Target>
        <Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>0</Data></Item></Exec></Atomic>"#
    )
}

/// The Gets a server sends to follow an install (CmdIDs 30-33).
fn poll() -> String {
    [
        get("30", &format!("{DL}/{PID}/Status")),
        get("31", &format!("{DL}/{PID}/LastError")),
        get("32", &format!("{DL}/{PID}/LastErrorDesc")),
        get("33", &format!("{INV}?list=StructData")),
    ]
    .concat()
}

/// Package expectations for that example's product ID (checked by the device after the download).
fn expect_package(body: &[u8]) -> String {
    format!(
        "\"entapp_size:{{B316008A-141D-4A79-810F-8B764C4CFDFB}}\" = {}\n\"entapp_sha256:b316008a-141d-4a79-810f-8b764c4cfdfb\" = \"{}\"\n",
        body.len(),
        hex::encode(Sha256::digest(body))
    )
}

fn desktop_template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/templates/win10-desktop.toml")
}

// ---- the tests ----

#[test]
fn an_install_moves_status_1_to_5_over_later_sessions_and_the_app_shows_in_inventory() {
    let mut lab = Lab::new(&format!("{ONE_SECOND_STEPS}{}", expect_package(PACKAGE)), None);
    let url = lab.content.url("/apps/ContosoApp1.appx");
    let s = lab.sync(&format!("{ENROLL}{}{}", install(&url), get("13", &format!("{DL}/{PID}/Status"))));
    assert_eq!(s.codes("2"), ["200"]);
    assert_eq!(s.codes("10"), ["200"], "the Atomic");
    assert!(s.codes("11").iter().all(|c| c == "200") && !s.codes("11").is_empty(), "{:?}", s.codes("11"));
    assert_eq!(s.codes("12"), ["200"], "the Exec answers at once");
    // Echoed as the server sent it: escaped braces.
    assert_eq!(s.value(&format!("{DL}/{PID}/Status")).as_deref(), Some("1"), "QUEUED in the same session");
    assert!(s.stdout.contains("completed"), "{}", s.stdout);
    let app_line = "app:       4000000001 {B316008A-141D-4A79-810F-8B764C4CFDFB} 2.0.0.0: Status";
    assert!(s.stdout.contains(&format!("{app_line} 1 QUEUED")), "{}", s.stdout);

    // The server polls about once a second; each session sees where the device got to by then.
    let mut seen = vec!["1".to_string()];
    let mut last = None;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(1000));
        let s = lab.sync(&poll());
        let status = s.value(&format!("{DL}/{PID}/Status")).expect("Status has a value");
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        let done = status == "5" || status == "6" || status == "7";
        last = Some(s);
        if done {
            break;
        }
    }
    let last = last.expect("at least one poll");
    assert_eq!(seen.last().map(String::as_str), Some("5"), "states seen: {seen:?}; {:?}", last.results());
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "the states only move forward");
    assert!(seen.iter().any(|s| ["2", "3", "4"].contains(&s.as_str())), "an intermediate state was seen: {seen:?}");
    assert_eq!(last.value(&format!("{DL}/{PID}/LastError")).as_deref(), Some("0"));
    // Inventory?list=StructData: the app with the Title from Name and the Version from Download.
    let app = format!("{INV}/{PID}");
    assert_eq!(last.value(&format!("{app}/Title")).as_deref(), Some("ContosoApp1"), "{:?}", last.results());
    assert_eq!(last.value(&format!("{app}/Version")).as_deref(), Some("2.0.0.0"));
    assert_eq!(last.value(&format!("{app}/Publisher")).as_deref(), Some("Contoso"));
    let date = last.value(&format!("{app}/InstallDate")).unwrap_or_default();
    assert!(chrono::DateTime::parse_from_rfc3339(&date).is_ok(), "InstallDate {date:?}");
    // The device downloaded the package once, from the URL the server gave.
    assert_eq!(lab.content.hits(), ["/apps/ContosoApp1.appx"]);
    assert!(last.stdout.contains(&format!("{app_line} 5 INSTALLED")), "{}", last.stdout);

    // The CSP page's query of one app: its child names.
    let s = lab.sync(&format!("{}{}", get("2", &app), get("3", &format!("{app}/Version"))));
    assert_eq!(s.value(&app).as_deref(), Some("Version/Title/Publisher/InstallDate"));
    assert_eq!(s.value(&format!("{app}/Version")).as_deref(), Some("2.0.0.0"));

    // `mdmsim tree` shows the same.
    assert_eq!(lab.tree_value(&format!("{DL}/{PID}/Status")), "5");
    assert_eq!(lab.tree_value(&format!("{app}/Title")), "ContosoApp1");
    assert_eq!(lab.tree_value(&format!("{app}/Version")), "2.0.0.0");

    // The transcript shows the Status value the server read, next to its LocURI.
    let client = last.transcript_file("002-client.xml");
    let at = client.find(&format!("{DL}/{PID}/Status")).expect("the Status item is in the transcript");
    assert!(client[at..].contains("<Data>5</Data>"), "{client}");
    assert!(last.transcript.join("summary.json").exists());
}

#[test]
fn a_download_404_ends_in_status_7_with_last_error() {
    let mut lab = Lab::new(NO_WAIT, None);
    let url = lab.content.url("/apps/missing.appx");
    let s = lab.sync(&format!("{ENROLL}{}", install(&url)));
    assert_eq!(s.codes("10"), ["200"]);
    // Steps of 0 s: the download ran in the same `sync`, after the session, and says so.
    assert!(
        s.stdout.contains("Status 7 DOWNLOAD_FAILED, LastError 0x80190194: the content server answered HTTP 404"),
        "{}",
        s.stdout
    );
    let s = lab.sync(&poll());
    assert_eq!(s.value(&format!("{DL}/{PID}/Status")).as_deref(), Some("7"), "{:?}", s.results());
    // HTTP_E_STATUS_NOT_FOUND, 0x80190194, as the signed 32-bit int the node holds.
    assert_eq!(s.value(&format!("{DL}/{PID}/LastError")), Some((0x8019_0194u32 as i32).to_string()));
    let desc = s.value(&format!("{DL}/{PID}/LastErrorDesc")).unwrap_or_default();
    assert!(desc.contains("404"), "LastErrorDesc {desc:?}");
    assert!(
        !s.results().iter().any(|(src, _)| src.starts_with(&format!("{INV}/"))),
        "not in Inventory: {:?}",
        s.results()
    );
    assert_eq!(lab.content.hits(), ["/apps/missing.appx"]);
    assert_eq!(lab.tree_value(&format!("{DL}/{PID}/LastError")), "-2145844844");
}

#[test]
fn a_second_add_within_7_days_is_418_then_replace_and_exec_reinstalls() {
    let mut lab = Lab::new(NO_WAIT, None);
    let v2 = lab.content.url("/apps/ContosoApp1.appx");
    let s = lab.sync(&format!("{ENROLL}{}", install(&v2)));
    assert_eq!(s.codes("10"), ["200"]);

    // Installed by the end of that sync (steps of 0 s); the Download node stays.
    let s = lab.sync(&format!("{}{}", get("5", &format!("{DL}/{PID}/Status")), install(&v2)));
    assert_eq!(s.value(&format!("{DL}/{PID}/Status")).as_deref(), Some("5"));
    assert_eq!(s.codes("10"), ["507"], "the Atomic fails as a whole");
    // Every item of the Add exists already: one Status 418 for the command.
    assert_eq!(s.codes("11"), ["418"], "the Add is 418 (already exists)");
    assert_eq!(s.codes("12"), ["216"], "the Exec is rolled back");

    let v3 = lab.content.url("/apps/ContosoApp1-v3.appx");
    let s = lab.sync(&format!("{}{}", replace_and_exec(&v3, "3.0.0.0"), get("23", &format!("{DL}/{PID}/Status"))));
    assert_eq!(s.codes("20"), ["200"], "the Atomic");
    assert!(s.codes("21").iter().all(|c| c == "200") && !s.codes("21").is_empty(), "Replace {:?}", s.codes("21"));
    assert_eq!(s.codes("22"), ["200"], "Exec");
    assert_eq!(s.value(&format!("{DL}/{PID}/Status")).as_deref(), Some("1"), "the install starts again");

    let s = lab.sync(&poll());
    assert_eq!(s.value(&format!("{DL}/{PID}/Status")).as_deref(), Some("5"));
    assert_eq!(s.value(&format!("{INV}/{PID}/Version")).as_deref(), Some("3.0.0.0"), "{:?}", s.results());
    assert_eq!(lab.content.hits(), ["/apps/ContosoApp1.appx", "/apps/ContosoApp1-v3.appx"]);
}

#[test]
fn delete_of_an_inventory_app_uninstalls_it() {
    let mut lab = Lab::new("", Some(&desktop_template()));
    let s = lab.sync(&format!(
        "<Delete><CmdID>2</CmdID><Item><Target><LocURI>{INV}/{HUB}</LocURI></Target></Item></Delete>{}",
        get("3", &format!("{INV}?list=StructData"))
    ));
    assert_eq!(s.codes("2"), ["200"]);
    let listed: Vec<String> = s.results().into_iter().map(|(src, _)| src).collect();
    assert!(!listed.iter().any(|u| u.contains(HUB)), "{listed:?}");
    assert!(listed.contains(&format!("{INV}/{EXPENSES}/Title")), "the other app stays: {listed:?}");

    let s = lab.sync(&format!(
        "{}<Delete><CmdID>3</CmdID><Item><Target><LocURI>{INV}/{HUB}</LocURI></Target></Item></Delete>",
        get("2", &format!("{INV}/{HUB}/Title"))
    ));
    assert_eq!(s.codes("2"), ["404"], "gone in a later session");
    assert_eq!(s.codes("3"), ["404"], "a second Delete finds nothing");
    assert!(!lab.tree(INV).contains("B0322158"), "{}", lab.tree(INV));
}

#[test]
fn the_csp_pages_atomic_with_the_locuri_typo_rolls_back_everything() {
    let mut lab = Lab::new(NO_WAIT, None);
    let s = lab.sync(ENROLL);
    assert_eq!(s.codes("2"), ["200"]);
    let before = lab.tree(ENT);

    let atomic = SEED_ATOMIC.replace("PACKAGE_URL", &lab.content.url("/apps/ContosoApp1.appx"));
    let s = lab.sync(&format!("{atomic}{}", get("13", &format!("{DL}/{PID}"))));
    assert_eq!(s.codes("10"), ["507"], "the Atomic fails as a whole");
    let add = s.item_codes("11");
    assert_eq!(add.iter().filter(|(_, c)| c == "216").count(), 3, "{add:?}");
    let typo: Vec<&(String, String)> = add.iter().filter(|(_, c)| c == "404").collect();
    assert_eq!(typo.len(), 1, "{add:?}");
    assert!(typo[0].0.contains("Download%7BB316008A"), "{typo:?}");
    assert_eq!(s.codes("12"), ["216"], "the Exec is rolled back too");
    assert_eq!(s.codes("13"), ["404"], "no Download node");

    assert_eq!(lab.tree(ENT), before, "the tree is as before the Atomic");
    let s = lab.sync(&get("2", &format!("{DL}/{PID}/Status")));
    assert_eq!(s.codes("2"), ["404"]);
    assert!(lab.content.hits().is_empty(), "nothing was downloaded: {:?}", lab.content.hits());
}

#[test]
fn template_apps_are_in_inventory_on_the_first_session() {
    let mut lab = Lab::new("", Some(&desktop_template()));
    let s = lab.sync(&format!(
        "{}{}{}",
        get("2", &format!("{INV}?list=StructData")),
        get("3", &format!("{INV}/{HUB}/Title")),
        get("4", &format!("{ENT}/Status"))
    ));
    assert_eq!(s.codes("2"), ["200"]);
    assert_eq!(s.value(&format!("{INV}/{HUB}/Title")).as_deref(), Some("Contoso Company Hub"));
    assert_eq!(s.value(&format!("{INV}/{HUB}/Version")).as_deref(), Some("3.2.1.0"));
    assert_eq!(s.value(&format!("{INV}/{HUB}/InstallDate")).as_deref(), Some("2025-10-30T21:09:52Z"));
    assert_eq!(s.value(&format!("{INV}/{EXPENSES}/Title")).as_deref(), Some("Contoso Expenses"));
    assert_eq!(s.value(&format!("{INV}/{EXPENSES}/Publisher")).as_deref(), Some("Contoso Ltd."));
    assert_eq!(s.value(&format!("{ENT}/Status")).as_deref(), Some("0"), "the enterprise is ENABLED");
    assert_eq!(lab.tree_value(&format!("{INV}/{EXPENSES}/Version")), "1.8.0.0");
}

#[test]
fn device_new_refuses_a_template_whose_app_or_app_setting_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "[[apps]]\nenterprise_id = \"4000000001\"\nproduct_id = \"B316008A\"\nversion = \"1\"\ntitle = \"T\"\npublisher = \"P\"\n",
            "[[apps]] #1: product_id \"B316008A\" is not a GUID in braces",
        ),
        ("[[apps]]\nenterprise_id = \"4000000001\"\n", "[[apps]] #1: product_id is missing"),
        (
            "[behaviour]\nentapp_install_sec = 3\n",
            "unknown key `entapp_install_sec` in [behaviour] (did you mean `entapp_install_secs`?)",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).expect("write template");
        let (code, out, err) = mdmsim(&[
            "device",
            "new",
            "--state",
            &dir.path().join("state").to_string_lossy(),
            "--server",
            "http://127.0.0.1:9/MDM.svc",
            "--template",
            &file.to_string_lossy(),
        ]);
        assert_eq!(code, 2, "{text}: {out}{err}");
        assert!(err.contains(&format!("bad{i}.toml:")) && err.contains(want), "{err:?} should say {want:?}");
    }
}
