//! Test support: a scripted SyncML server on 127.0.0.1 ([`server`]), a small CSP with writable,
//! dynamic and executable nodes for exercising every command ([`lab`]), and helpers to run the
//! `mdmsim` binary.

#![allow(dead_code)] // each test module uses a different part

pub mod content;
pub mod lab;
pub mod refserver;
pub mod server;
pub mod tls;

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `mdmsim` binary with `args`; gives (exit code, stdout, stderr).
pub fn mdmsim(args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_mdmsim"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the mdmsim binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`mdmsim`] off the async runtime, for tests whose server lives on it.
pub async fn mdmsim_async(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || mdmsim(&args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
}

/// POSTs a SyncML message to the reference server's management endpoint in `mode`; returns the
/// decoded reply, or `None` for an empty body (asserting HTTP 200).
pub async fn post_syncml(
    c: &reqwest::Client,
    h: &mdmsim::server::ServerHandle,
    mode: &str,
    xml: &str,
) -> Option<mdmsim::syncml::SyncMl> {
    let resp = c
        .post(format!("{}?mode={mode}&Platform=WoA", h.management_url()))
        .header("Content-Type", mdmsim::syncml::CONTENT_TYPE)
        .header("UserAgentOrigin", "2")
        .body(xml.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    if body.is_empty() { None } else { Some(mdmsim::syncml::decode(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))) }
}

/// Runs `mdmsim server ARGS` until it has printed its start banner (up to "Press Ctrl-C"),
/// stops it, and gives the banner.
pub fn server_banner(args: &[&str]) -> String {
    use std::io::BufRead as _;
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_mdmsim"))
        .arg("server")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the mdmsim binary runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(30)) {
        let done = line.starts_with("Press Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines.join("\n")
}

/// `mdmsim device new` in `state` pointing at `server`, with a fixed seed and a template made
/// of these `[behaviour]` lines (written next to `state`); returns the id.
pub fn new_device_behaving(state: &Path, server: &str, seed: u64, behaviour: &str) -> String {
    let template = state.with_extension("toml");
    std::fs::write(&template, format!("[behaviour]\n{behaviour}\n")).expect("write template");
    new_device_with(state, server, seed, &["--template", &template.to_string_lossy()])
}

/// `mdmsim device new` in `state` pointing at `server`, with a fixed seed and more arguments
/// (`--profile`, `--template`...); returns the id.
pub fn new_device_with(state: &Path, server: &str, seed: u64, extra: &[&str]) -> String {
    let (state, seed_text) = (state.to_string_lossy(), seed.to_string());
    let mut args = vec!["device", "new", "--state", &state, "--server", server, "--seed", &seed_text];
    args.extend_from_slice(extra);
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 0, "device new failed (seed {seed}): {err}");
    out.trim().to_string()
}

/// `mdmsim device new` in `state` pointing at `server`, with a fixed seed; returns the id.
pub fn new_device(state: &Path, server: &str, seed: u64) -> String {
    new_device_with(state, server, seed, &[])
}

/// The value `mdmsim tree` prints for one leaf.
pub fn tree_value(state: &Path, uri: &str) -> String {
    let (code, out, err) = mdmsim(&["tree", "--state", &state.to_string_lossy(), uri, "--json"]);
    assert_eq!(code, 0, "tree {uri} failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("tree --json prints JSON");
    v[0]["value"].as_str().unwrap_or_default().to_string()
}
