//! EnterpriseAppManagement end to end below the session: the CSP page's commands go through the
//! tree engine, the device's timers run on a virtual clock as the runner will run them, and the
//! package downloads are real HTTP GETs (`runner::fetch`) to a content server on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::http::StatusCode as HttpStatus;
use axum::routing::get;
use chrono::{Duration, TimeZone, Utc};
use sha2::{Digest, Sha256};

use mdmsim::csp;
use mdmsim::runner::fetch::fetch;
use mdmsim::syncml::{Command, Item, ItemCmd, StatusCode, decode};
use mdmsim::tree::{Effect, Env, Profile, Registry, Settings, Tree, TreeState};

const PACKAGE: &[u8] = b"PK\x03\x04 a pretend appx package, served by the test content server";
const PID: &str = "%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D";
const DL: &str = "./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download";
const INV: &str = "./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Inventory";

async fn content_server() -> String {
    let app = Router::new()
        .route("/apps/ContosoApp1.appx", get(|| async { PACKAGE }))
        .route("/apps/gone.appx", get(|| async { (HttpStatus::NOT_FOUND, "not here") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A device and the loop a runner runs around it.
struct Device {
    reg: Registry,
    state: TreeState,
    env: Env,
    client: reqwest::Client,
    pending: Vec<Effect>,
}

impl Device {
    fn new(settings: &[(String, String)]) -> Self {
        let mut env = Env::new(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(), Profile::Win10);
        env.settings = Arc::new(Settings(settings.iter().cloned().collect()));
        Device { reg: csp::registry(), state: TreeState::new(), env, client: reqwest::Client::new(), pending: vec![] }
    }

    /// A server message's body, executed command by command.
    fn session(&mut self, body: &str) -> Vec<(String, u16)> {
        let xml = format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>dev</LocURI></Target><Source><LocURI>https://srv</LocURI></Source></SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"#
        );
        let msg = decode(&xml).expect("decodes");
        let mut codes = Vec::new();
        for cmd in &msg.body.commands {
            let mut tree = Tree::new(&self.reg, &mut self.state, &self.env);
            codes.extend(tree.execute(cmd).into_iter().map(|o| (o.cmd.into_owned(), o.code.code())));
            self.pending.append(&mut tree.effects);
        }
        self.state.commit();
        codes
    }

    fn get(&mut self, uri: &str) -> Option<String> {
        let mut tree = Tree::new(&self.reg, &mut self.state, &self.env);
        let out = tree.execute(&Command::Get(ItemCmd {
            cmd_id: "1".into(),
            items: vec![Item::target(uri)],
            ..ItemCmd::default()
        }));
        (out[0].code == StatusCode::Ok).then(|| out[0].results.first().and_then(|i| i.data.clone())).flatten()
    }

    /// Runs the device until nothing is due before `horizon`: performs Fetch effects for real,
    /// jumps the virtual clock to each deadline. Returns the Status values seen after each step.
    async fn run_until(&mut self, horizon: Duration, product: &str) -> Vec<String> {
        let end = self.env.now + horizon;
        let mut seen: Vec<String> = Vec::new();
        let mut note = |d: &mut Device| {
            if let Some(s) = d.get(&format!("{DL}/{product}/Status"))
                && seen.last() != Some(&s)
            {
                seen.push(s);
            }
        };
        note(self);
        for _ in 0..100 {
            if let Some(i) = self.pending.iter().position(|e| matches!(e, Effect::Fetch { .. })) {
                let Effect::Fetch { csp, node, url } = self.pending.remove(i) else { unreachable!() };
                let outcome = fetch(&self.client, &url, StdDuration::from_secs(5)).await;
                let more = self.reg.on_fetch(&mut self.state, &self.env, csp, &node, &outcome);
                self.pending.extend(more);
            } else {
                match self.reg.next_deadline(&mut self.state, &self.env) {
                    Some(t) if t <= end => {
                        self.env.now = t.max(self.env.now);
                        let more = self.reg.on_deadline(&mut self.state, &self.env);
                        self.pending.extend(more);
                    }
                    _ => break,
                }
            }
            note(self);
        }
        seen
    }
}

fn install(product: &str, url: &str) -> String {
    format!(
        r#"<Atomic><CmdID>2</CmdID><Add><CmdID>3</CmdID>
        <Item><Target><LocURI>{DL}/{product}/Name</LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>ContosoApp1</Data></Item>
        <Item><Target><LocURI>{DL}/{product}/URL</LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>{url}</Data></Item>
        <Item><Target><LocURI>{DL}/{product}/Version</LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>2.0.0.0</Data></Item>
        <Item><Target><LocURI>{DL}/{product}/DownloadInstall</LocURI></Target><Data>1</Data></Item>
        </Add><Exec><CmdID>4</CmdID><Item><Target><LocURI>{DL}/{product}/DownloadInstall</LocURI></Target>
        <Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>0</Data></Item></Exec></Atomic>"#
    )
}

fn expectations(sha256: &str) -> Vec<(String, String)> {
    vec![
        ("entapp_size:{B316008A-141D-4A79-810F-8B764C4CFDFB}".into(), PACKAGE.len().to_string()),
        ("entapp_sha256:{B316008A-141D-4A79-810F-8B764C4CFDFB}".into(), sha256.into()),
        ("entapp_publisher".into(), "Contoso".into()),
    ]
}

#[tokio::test]
async fn a_real_download_installs_the_app_and_status_moves_1_to_5() {
    let base = content_server().await;
    let mut dev = Device::new(&expectations(&hex::encode(Sha256::digest(PACKAGE))));
    let codes = dev.session(&install(PID, &format!("{base}/apps/ContosoApp1.appx")));
    assert!(codes.iter().all(|(_, c)| *c == 200), "{codes:?}");
    let seen = dev.run_until(Duration::hours(1), PID).await;
    assert_eq!(seen, ["1", "2", "3", "4", "5"]);
    assert_eq!(dev.get(&format!("{INV}/{PID}/Title")).as_deref(), Some("ContosoApp1"));
    assert_eq!(dev.get(&format!("{INV}/{PID}/Version")).as_deref(), Some("2.0.0.0"));
    assert_eq!(dev.get(&format!("{INV}/{PID}/Publisher")).as_deref(), Some("Contoso"));
}

#[tokio::test]
async fn a_404_from_the_content_server_ends_in_download_failed() {
    let base = content_server().await;
    let mut dev = Device::new(&[]);
    dev.session(&install(PID, &format!("{base}/apps/gone.appx")));
    let seen = dev.run_until(Duration::hours(1), PID).await;
    assert_eq!(seen, ["1", "2", "7"]);
    assert_eq!(dev.get(&format!("{DL}/{PID}/LastError")).as_deref(), Some("-2145844844")); // 0x80190194
    assert_eq!(dev.get(&format!("{INV}/{PID}")), None);
}

#[tokio::test]
async fn a_package_whose_hash_differs_ends_in_download_failed() {
    let base = content_server().await;
    let mut dev = Device::new(&expectations(&"ab".repeat(32)));
    dev.session(&install(PID, &format!("{base}/apps/ContosoApp1.appx")));
    let seen = dev.run_until(Duration::hours(1), PID).await;
    assert_eq!(seen, ["1", "2", "7"]);
    assert_eq!(dev.get(&format!("{DL}/{PID}/LastError")), Some((0x8009_6010u32 as i32).to_string()));
}

#[tokio::test]
async fn a_content_server_that_is_down_is_connection_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        l.local_addr().expect("addr").port()
    };
    let mut dev = Device::new(&[]);
    dev.session(&install(PID, &format!("http://127.0.0.1:{port}/apps/ContosoApp1.appx")));
    let seen = dev.run_until(Duration::hours(1), PID).await;
    assert_eq!(seen, ["1", "2", "7"]);
    assert_eq!(dev.get(&format!("{DL}/{PID}/LastError")), Some((0x8007_2EFDu32 as i32).to_string()));
}
