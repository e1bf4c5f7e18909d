//! Push end to end: `mdmsim run --clock real` hosts the WNS emulation, the reference server
//! configures the PFN, reads the ChannelURI back, gets a WNS token and pushes from `POST
//! /admin/devices/<id>/push`; the device opens a push-started session (`mode=Apps` on win81,
//! Alert 1200 on win10). A revoked channel answers 410 and the server configures push again in
//! the next Maintenance session. The WNS emulation's status codes, over HTTP. Loopback only;
//! every wait is bounded.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mdmsim::device::engine::{ChannelCall, ChannelOp};
use mdmsim::server::{Config, ServerHandle, ServerOptions};
use mdmsim::tree::ChannelOutcome;
use mdmsim::wns::{Wns, WnsOptions};
use serde_json::Value;

use crate::support::new_device_with;

const PFN: &str = "mdmsim.Reference_8wekyb3d8bbwe";

/// The reference server on a free loopback port (plain HTTP, DeviceID trusted as sent) that
/// configures the PFN.
async fn server(dir: &Path) -> ServerHandle {
    let config =
        Config::parse(&format!("[management]\nauth = \"none\"\n[dmclient]\npush_pfn = \"{PFN}\"\n"), "push.toml")
            .unwrap();
    let mut opts = ServerOptions::local(dir.join("server"));
    opts.http = true;
    opts.config = config;
    mdmsim::server::start(opts).await.unwrap()
}

/// `mdmsim run --clock real` of the device in `state` for `secs` seconds with these events,
/// started in the background (its JSON comes at the end).
fn run_real(state: &Path, secs: u64, events: &str) -> Child {
    run_real_with(state, secs, events, &["--wns-listen", "127.0.0.1:0"])
}

fn run_real_with(state: &Path, secs: u64, events: &str, wns: &[&str]) -> Child {
    let file = state.with_extension("events.toml");
    std::fs::write(&file, events).unwrap();
    Command::new(env!("CARGO_BIN_EXE_mdmsim"))
        .args(["run", "--state", &state.to_string_lossy(), "--clock", "real", "--json", "--until"])
        .arg(format!("{secs}s"))
        .args(["--events", &file.to_string_lossy()])
        .args(wns)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mdmsim binary runs")
}

/// Waits for the run to end (bounded by its --until and a margin) and gives its JSON.
async fn finish(child: Child) -> Value {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// Waits (at most `limit`) until the server has read a ChannelURI from the device other than
/// `not`; gives it.
async fn channel_known(h: &ServerHandle, id: &str, not: Option<&str>, limit: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let uri = h.device(id).and_then(|r| {
            r.inventory.iter().find(|(k, v)| k.ends_with("/Push/ChannelURI") && !v.is_empty()).map(|(_, v)| v.clone())
        });
        if let Some(uri) = uri.filter(|u| Some(u.as_str()) != not) {
            return uri;
        }
        assert!(t0.elapsed() < limit, "the server never read a new ChannelURI of {id}: {:?}", h.device(id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /admin/devices/<id>/push` with the admin token: (HTTP status, JSON body).
async fn admin_push(h: &ServerHandle, id: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/admin/devices/{id}/push", h.base_url))
        .bearer_auth(h.admin_token())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The push-started sessions of a run: (at, mode, alert).
fn push_sessions(v: &Value) -> Vec<(DateTime<Utc>, String, u64)> {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "session" && r["summary"]["trigger"] == "push")
        .map(|r| {
            (
                r["at"].as_str().unwrap().parse().unwrap(),
                r["summary"]["mode"].as_str().unwrap().to_string(),
                r["summary"]["alert"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// One device of `profile` pushed once through the admin endpoint; gives the run's push
/// sessions and the instant of the push.
async fn pushed_once(profile: &'static str, seed: u64) -> (Vec<(DateTime<Utc>, String, u64)>, DateTime<Utc>) {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let state = dir.path().join("dev");
    let id = device(&h, &state, profile, seed).await;
    // The post-enrollment session sets the PFN; the sync at +2s reads the ChannelURI back.
    let child = run_real(&state, 14, "[[event]]\nat = \"+2s\"\nkind = \"sync\"\n");
    let channel = channel_known(&h, &id, None, Duration::from_secs(10)).await;
    assert!(channel.starts_with("http://127.0.0.1:") && channel.contains("/?token="), "{channel}");
    // Without the admin token: 401, and nothing is pushed.
    let anon = reqwest::Client::new().post(format!("{}/admin/devices/{id}/push", h.base_url)).send().await.unwrap();
    assert_eq!(anon.status().as_u16(), 401);
    assert!(anon.headers().get("www-authenticate").is_some());
    let at = Utc::now();
    let (status, record) = admin_push(&h, &id).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["http_status"], 200, "{record}");
    assert_eq!(record["wns_status"], "received", "{record}");
    assert!(record["msg_id"].as_str().is_some_and(|m| !m.is_empty()), "{record}");
    let v = finish(child).await;
    assert_eq!(h.device(&id).unwrap().pushes.len(), 1);
    // The run's summary counts the push and times it to the end of its session.
    let summary = &v["summary"];
    assert_eq!(
        (summary["pushes_delivered"].as_u64(), summary["push_sessions"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
    let p50 = summary["push_to_session_ms"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 5000.0, "{summary}");
    (push_sessions(&v), at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_the_server_opens_an_apps_session_on_win81_within_5_seconds() {
    let (sessions, at) = pushed_once("win81", 151).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let (started, mode, alert) = &sessions[0];
    assert_eq!((mode.as_str(), *alert), ("Apps", 1201));
    let delay = *started - at;
    assert!(delay >= chrono::TimeDelta::zero() && delay < chrono::TimeDelta::seconds(5), "{delay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_the_server_opens_a_server_initiated_session_on_win10() {
    let (sessions, at) = pushed_once("win10", 152).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let (started, mode, alert) = &sessions[0];
    assert_eq!((mode.as_str(), *alert), ("Maintenance", 1200));
    assert!(*started - at < chrono::TimeDelta::seconds(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_channel_answers_410_and_the_server_configures_push_again_in_the_next_maintenance_session() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let state = dir.path().join("dev");
    let id = device(&h, &state, "win10", 153).await;
    let t0 = Instant::now();
    let events = "[[event]]\nat = \"+2s\"\nkind = \"sync\"\n\n[[event]]\nat = \"+6s\"\nkind = \"revoke-channel\"\n\n\
                  [[event]]\nat = \"+10s\"\nkind = \"sync\"\n\n[[event]]\nat = \"+13s\"\nkind = \"sync\"\n";
    let child = run_real(&state, 19, events);
    let old = channel_known(&h, &id, None, Duration::from_secs(6)).await;
    // After the revocation (+6s), before the next session (+10s).
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(t0.elapsed())).await;
    let (status, record) = admin_push(&h, &id).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["http_status"], 410, "the revoked channel is gone: {record}");
    let revoked_at = Utc::now();
    // The next Maintenance session (+10s) replaces the PFN; the device gets a new channel, read
    // back in the session after (+13s); a push to it is received.
    let new = channel_known(&h, &id, Some(&old), Duration::from_secs(10)).await;
    assert_ne!(new, old);
    let rec = h.device(&id).unwrap();
    let again = rec
        .results
        .iter()
        .find(|r| {
            r.at > revoked_at && r.cmd == "Replace" && r.loc_uri.as_deref().is_some_and(|u| u.ends_with("/Push/PFN"))
        })
        .unwrap_or_else(|| panic!("no PFN Replace after the 410: {:?}", rec.results));
    assert_eq!(again.status, 200);
    let (_, record) = admin_push(&h, &id).await;
    assert_eq!((record["http_status"].as_u64(), record["wns_status"].as_str()), (Some(200), Some("received")));
    let v = finish(child).await;
    let modes: Vec<String> = push_sessions(&v).into_iter().map(|s| s.1).collect();
    assert_eq!(modes, ["Maintenance"], "one push session, after the channel was configured again");
    let pushes: Vec<u16> = h.device(&id).unwrap().pushes.iter().map(|p| p.http_status).collect();
    assert_eq!(pushes, [410, 200]);
}

/// A device in `state` of the reference server `h`, made with `mdmsim device new`.
async fn device(h: &ServerHandle, state: &Path, profile: &'static str, seed: u64) -> String {
    let (state, url) = (state.to_path_buf(), h.management_url());
    tokio::task::spawn_blocking(move || {
        new_device_with(&state, &url, seed, &["--profile", profile, "--provider-id", "mdmsim"])
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_while_the_network_is_off_is_lost_and_push_status_reads_7() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let state = dir.path().join("dev");
    let id = device(&h, &state, "win10", 155).await;
    let t0 = Instant::now();
    let events = "[[event]]\nat = \"+2s\"\nkind = \"sync\"\n\n[[event]]\nat = \"+6s\"\nkind = \"network-off\"\n";
    let child = run_real(&state, 13, events);
    channel_known(&h, &id, None, Duration::from_secs(8)).await;
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(t0.elapsed())).await;
    // WNS takes it (the device's WNS connection is not the MDM client's network)...
    let (_, record) = admin_push(&h, &id).await;
    assert_eq!(record["http_status"], 200, "{record}");
    let v = finish(child).await;
    // ...but no session follows, and the push channel says why.
    assert!(push_sessions(&v).is_empty(), "{v}");
    let missed = v["records"].as_array().unwrap().iter().any(|r| r["kind"] == "missed" && r["trigger"] == "push");
    assert!(missed, "the lost push is reported: {v}");
    let status = crate::support::tree_value(&state, "./Vendor/MSFT/DMClient/Provider/mdmsim/Push/Status");
    assert_eq!(status, "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_channel_answers_410_and_the_renewed_one_is_read_in_the_next_session() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let state = dir.path().join("dev");
    let id = device(&h, &state, "win81", 156).await;
    let t0 = Instant::now();
    let events = "[[event]]\nat = \"+2s\"\nkind = \"sync\"\n\n[[event]]\nat = \"+6s\"\nkind = \"expire-channel\"\n\n\
                  [[event]]\nat = \"+9s\"\nkind = \"sync\"\n";
    let child = run_real(&state, 15, events);
    let old = channel_known(&h, &id, None, Duration::from_secs(6)).await;
    // The device renewed its channel at once; the server reads the new one in the next session.
    let new = channel_known(&h, &id, Some(&old), Duration::from_secs(14)).await;
    assert!(t0.elapsed() >= Duration::from_secs(6));
    assert_ne!(old, new);
    let client = reqwest::Client::new();
    let token: Value = client
        .post(format!("{}/accesstoken.srf", old.split("/?").next().unwrap()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ms-app://s-1-15-2-1"),
            ("client_secret", "s"),
            ("scope", "notify.windows.com"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let gone = notify(&client, &old, Some(token), b"x".to_vec()).await;
    assert_eq!(gone.status().as_u16(), 410, "the expired channel is gone");
    let v = finish(child).await;
    assert!(v["summary"]["failed"] == 0, "{v}");
    let status = crate::support::tree_value(&state, "./Vendor/MSFT/DMClient/Provider/mdmsim/Push/Status");
    assert_eq!(status, "0", "renewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_is_renewed_before_30_days_and_the_server_reads_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let state = dir.path().join("dev");
    let id = device(&h, &state, "win10", 157).await;
    let st = state.to_string_lossy().to_string();
    let start = "2026-03-02T08:00:00Z";
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        crate::support::mdmsim(&[
            "run", "--state", &st, "--clock", "virtual", "--start", start, "--until", "20d", "--json",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    // The distinct ChannelURIs the server read, with the SessionID it first read each in.
    let mut seen: Vec<(String, String)> = Vec::new();
    for r in h.device(&id).unwrap().results {
        if r.loc_uri.as_deref().is_some_and(|u| u.ends_with("/Push/ChannelURI"))
            && let Some(uri) = r.data.filter(|v| !v.is_empty())
            && !seen.iter().any(|(u, _)| *u == uri)
        {
            seen.push((uri, r.session_id));
        }
    }
    assert_eq!(seen.len(), 2, "one channel, then the renewed one: {seen:?}");
    // The session that read the renewed channel ran on day 15 (renewal 15 days before the
    // 30-day expiry) or just after.
    let at: DateTime<Utc> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "session" && r["summary"]["session_id"] == seen[1].1.as_str())
        .and_then(|r| r["at"].as_str())
        .unwrap_or_else(|| panic!("session {} in {v}", seen[1].1))
        .parse()
        .unwrap();
    let day = (at - start.parse::<DateTime<Utc>>().unwrap()).num_hours() as f64 / 24.0;
    assert!((15.0..16.5).contains(&day), "renewed channel first read on day {day}");
    let now = crate::support::tree_value(&state, "./Vendor/MSFT/DMClient/Provider/mdmsim/Push/ChannelURI");
    assert_eq!(now, seen[1].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigning_an_app_pushes_and_the_win81_device_comes_for_it_in_an_apps_session() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(
        &format!(
            "[management]\nauth = \"none\"\n[dmclient]\npush_pfn = \"{PFN}\"\n\n[[apps]]\nname = \"Portal\"\n\
             product_id = \"{{B316008A-141D-4A79-810F-8B764C4CFDFB}}\"\nversion = \"1.0.0.0\"\nsize = 2048\non_request = true\n"
        ),
        "apps.toml",
    )
    .unwrap();
    let mut opts = ServerOptions::local(dir.path().join("server"));
    opts.http = true;
    opts.config = config;
    let h = mdmsim::server::start(opts).await.unwrap();
    let state = dir.path().join("dev");
    let id = device(&h, &state, "win81", 158).await;
    let child = run_real(&state, 14, "[[event]]\nat = \"+2s\"\nkind = \"sync\"\n");
    channel_known(&h, &id, None, Duration::from_secs(10)).await;
    assert!(h.device(&id).unwrap().apps.is_empty(), "an on-request app waits for its assignment");
    let c = reqwest::Client::new();
    let assign =
        |app: &str| c.post(format!("{}/admin/devices/{id}/apps/{app}", h.base_url)).bearer_auth(h.admin_token()).send();
    assert_eq!(assign("Nope").await.unwrap().status().as_u16(), 404);
    let at = Utc::now();
    let resp = assign("Portal").await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["push"]["wns_status"], "received", "{body}");
    assert_eq!(assign("Portal").await.unwrap().status().as_u16(), 409);
    let v = finish(child).await;
    let sessions = push_sessions(&v);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].1, "Apps");
    assert!(sessions[0].0 - at < chrono::TimeDelta::seconds(5));
    // The install went in that Apps session.
    let rec = h.device(&id).unwrap();
    assert_ne!(rec.apps["Portal"].state, mdmsim::server::AppState::Pending, "{:?}", rec.apps);
    let apps_checkin = rec.checkins.iter().find(|c| c.mode.as_deref() == Some("Apps")).expect("an Apps check-in");
    assert!(apps_checkin.commands_sent > 0, "{apps_checkin:?}");
}

/// `mdmsim wns` on its own, killed when dropped.
struct Standalone(Child);

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_wns_lets_a_server_push_to_the_devices_of_a_run() {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdmsim"))
        .args(["wns", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let wns = Standalone(child);
    let first = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout).lines().next().and_then(Result::ok).unwrap_or_default()
    });
    let first = tokio::time::timeout(Duration::from_secs(20), first).await.unwrap().unwrap();
    let addr = first.rsplit(' ').next().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{first}");
    let url = format!("http://{addr}");

    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let state = dir.path().join("dev");
    let id = device(&h, &state, "win81", 154).await;
    let run = run_real_with(&state, 14, "[[event]]\nat = \"+2s\"\nkind = \"sync\"\n", &["--wns-url", &url]);
    let channel = channel_known(&h, &id, None, Duration::from_secs(10)).await;
    assert!(channel.starts_with(&format!("{url}/?token=")), "the channel is the standalone service's: {channel}");
    // Give the run a moment to start listening for its devices' notifications.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at = Utc::now();
    let (_, record) = admin_push(&h, &id).await;
    assert_eq!((record["http_status"].as_u64(), record["wns_status"].as_str()), (Some(200), Some("received")));
    let v = finish(run).await;
    let sessions = push_sessions(&v);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].1, "Apps");
    assert!(sessions[0].0 - at < chrono::TimeDelta::seconds(5));
    drop(wns);
}

/// The WNS emulation on a free loopback port, with a clock the test moves and the devices it
/// woke.
struct Service {
    handle: mdmsim::wns::WnsHandle,
    now: Arc<Mutex<DateTime<Utc>>>,
    woken: Arc<Mutex<Vec<String>>>,
}

async fn service(per_minute: u32) -> Service {
    let now = Arc::new(Mutex::new(Utc::now()));
    let clock_now = Arc::clone(&now);
    let opts = WnsOptions {
        per_minute,
        client_id: Some("ms-app://s-1-15-2-test".into()),
        client_secret: Some("secret".into()),
        clock: Arc::new(move || *clock_now.lock().unwrap()),
        ..WnsOptions::default()
    };
    let handle = mdmsim::wns::start(opts).await.unwrap();
    let woken = Arc::new(Mutex::new(Vec::new()));
    let w = Arc::clone(&woken);
    handle.wns.set_deliver(Arc::new(move |id: &str| {
        w.lock().unwrap().push(id.to_string());
        true
    }));
    Service { handle, now, woken }
}

fn channel(wns: &Wns, device: &str) -> String {
    let call = ChannelCall {
        device: device.into(),
        op: ChannelOp::Request { csp: "DMClient".into(), node: "Provider/P/Push".into(), app: PFN.into() },
    };
    match &wns.call(&call)[0].outcome {
        ChannelOutcome::Granted { uri, .. } => uri.clone(),
        other => panic!("{other:?}"),
    }
}

async fn token(c: &reqwest::Client, wns: &Wns, secret: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "ms-app://s-1-15-2-test"),
        ("client_secret", secret),
        ("scope", "notify.windows.com"),
    ];
    let resp = c.post(wns.token_url()).form(&form).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn notify(c: &reqwest::Client, uri: &str, token: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut req =
        c.post(uri).header("X-WNS-Type", "wns/raw").header("Content-Type", "application/octet-stream").body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn the_wns_emulation_answers_with_the_status_codes_of_microsofts_page() {
    let s = service(3).await;
    let wns = &s.handle.wns;
    let c = reqwest::Client::new();
    // The token endpoint: OAuth errors, then a bearer token for a day.
    assert_eq!(token(&c, wns, "wrong").await.1["error"], "invalid_client");
    let bad_grant = c.post(wns.token_url()).form(&[("grant_type", "password")]).send().await.unwrap();
    assert_eq!(bad_grant.status().as_u16(), 400);
    let (status, tok) = token(&c, wns, "secret").await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!((tok["token_type"].as_str(), tok["expires_in"].as_u64()), (Some("bearer"), Some(86_400)));
    let tok = tok["access_token"].as_str().unwrap().to_string();
    let uri = channel(wns, "DEV1");

    // 200: received, with a message id; the device is woken.
    let ok = notify(&c, &uri, Some(&tok), b"sync".to_vec()).await;
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.headers()["x-wns-status"], "received");
    assert!(!ok.headers()["x-wns-msg-id"].is_empty());
    assert_eq!(*s.woken.lock().unwrap(), ["DEV1"]);
    // 401: no token, a token the service never issued.
    assert_eq!(notify(&c, &uri, None, b"x".to_vec()).await.status().as_u16(), 401);
    assert_eq!(notify(&c, &uri, Some("forged"), b"x".to_vec()).await.status().as_u16(), 401);
    // 404: a channel the service does not know.
    let unknown = format!("{}/?token=0000", wns.base_url());
    assert_eq!(notify(&c, &unknown, Some(&tok), b"x".to_vec()).await.status().as_u16(), 404);
    // 413: a payload over 5 KB (and far over: read no further than the body limit).
    assert_eq!(notify(&c, &uri, Some(&tok), vec![b'a'; 5 * 1024 + 1]).await.status().as_u16(), 413);
    assert_eq!(notify(&c, &uri, Some(&tok), vec![b'a'; 1 << 20]).await.status().as_u16(), 413);
    // 406 with Retry-After: the third notification of the minute (throttle 3 per minute).
    assert_eq!(notify(&c, &uri, Some(&tok), b"2".to_vec()).await.status().as_u16(), 200);
    assert_eq!(notify(&c, &uri, Some(&tok), b"3".to_vec()).await.status().as_u16(), 200);
    let throttled = notify(&c, &uri, Some(&tok), b"4".to_vec()).await;
    assert_eq!(throttled.status().as_u16(), 406);
    let retry: u64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // A minute later the channel takes notifications again.
    *s.now.lock().unwrap() += chrono::TimeDelta::seconds(61);
    assert_eq!(notify(&c, &uri, Some(&tok), b"5".to_vec()).await.status().as_u16(), 200);
    // 410: revoked.
    wns.call(&ChannelCall { device: "DEV1".into(), op: ChannelOp::Revoke });
    assert_eq!(notify(&c, &uri, Some(&tok), b"x".to_vec()).await.status().as_u16(), 410);
    // 410: expired after 30 days; 401 with "Token has expired" for the day-old token.
    let uri2 = channel(wns, "DEV2");
    *s.now.lock().unwrap() += chrono::TimeDelta::days(31);
    let expired = notify(&c, &uri2, Some(&tok), b"x".to_vec()).await;
    assert_eq!(expired.status().as_u16(), 401);
    assert!(expired.headers()["www-authenticate"].to_str().unwrap().contains("Token has expired"));
    let (_, fresh) = token(&c, wns, "secret").await;
    let fresh = fresh["access_token"].as_str().unwrap().to_string();
    assert_eq!(notify(&c, &uri2, Some(&fresh), b"x".to_vec()).await.status().as_u16(), 410);
    assert_eq!(s.woken.lock().unwrap().len(), 4, "only accepted raw notifications wake the device");
    let stats = wns.stats();
    assert_eq!((stats.delivered, stats.channels_issued), (4, 2));
}
