//! `mdmsim run` killed with SIGKILL at a seeded moment: every device still loads, no SessionID
//! the server saw is ever sent again, and the next run works.
//!
//! The moment is a number of session lines on the run's standard output, drawn from the seed
//! (`MDMSIM_CRASH_SEED` picks another one); the seed is in every failure message.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::refserver::RefServer;
use crate::support::{mdmsim, new_device_with};

/// Devices in the fleet; each lives about sixty sessions in the thirty days of the run.
const DEVICES: u64 = 4;

/// A number in `lo..hi` drawn from `seed` (splitmix64).
fn draw(seed: u64, lo: u64, hi: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    lo + (z ^ (z >> 31)) % (hi - lo)
}

/// `mdmsim device list --json`: DeviceID -> session counter.
fn counters(state: &Path, seed: u64) -> BTreeMap<String, u64> {
    let (code, out, err) = mdmsim(&["device", "list", "--state", &state.to_string_lossy(), "--json"]);
    assert_eq!(code, 0, "seed {seed}: device list after the kill: {err}");
    let list: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("seed {seed}: {e}: {out}"));
    list.as_array()
        .unwrap_or_else(|| panic!("seed {seed}: not a list: {out}"))
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d["sessions"].as_u64().unwrap()))
        .collect()
}

/// The SessionIDs the server saw from `id`, in order.
fn seen(server: &RefServer, id: &str) -> Vec<u64> {
    server
        .handle
        .device(id)
        .map(|r| r.checkins.iter().map(|c| c.session_id.parse().expect("a decimal SessionID")).collect())
        .unwrap_or_default()
}

/// Runs the fleet until `lines` session lines were printed and `delay` more has passed (a line
/// comes when a round of sessions is over: the delay lands the kill inside the next sessions),
/// then kills it; gives how many lines it printed (fewer when the run ended first).
fn run_and_kill(state: &Path, lines: u64, delay: Duration, seed: u64) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdmsim"))
        .args(["run", "--state", &state.to_string_lossy(), "--all", "--clock", "virtual"])
        .args(["--start", "2026-03-02T08:00:00Z", "--until", "30d", "--allow-failures"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the mdmsim binary runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(" findings=") && tx.send(()).is_err() {
                break;
            }
        }
    });
    let mut printed = 0;
    while printed < lines && rx.recv_timeout(Duration::from_secs(60)).is_ok() {
        printed += 1;
    }
    std::thread::sleep(delay);
    // Child::kill is SIGKILL on Unix: no destructor, no flush, no clean-shutdown mark.
    let _ = child.kill();
    let status = child.wait().expect("the run ends");
    if printed == lines {
        assert!(status.code().is_none(), "seed {seed}: the run was not killed: {status}");
    }
    printed
}

#[cfg(unix)]
#[test]
fn a_run_killed_at_a_seeded_moment_leaves_whole_devices_that_never_reuse_a_session_id() {
    let seed: u64 = std::env::var("MDMSIM_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let server = RefServer::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ids: Vec<String> = (0..DEVICES)
        .map(|n| new_device_with(&state, &server.management_url(), 1000 * seed + n, &["--provider-id", "mdmsim"]))
        .collect();

    let lines = draw(seed, 3, 40 * DEVICES);
    let delay = Duration::from_micros(draw(seed ^ 0xD1CE, 0, 20_000));
    let printed = run_and_kill(&state, lines, delay, seed);
    assert_eq!(printed, lines, "seed {seed}: the run ended after {printed} sessions, before the kill");

    // Every device loads, and its counter is past every SessionID the server saw from it.
    let after_kill = counters(&state, seed);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(after_kill.keys().cloned().collect::<Vec<_>>(), sorted, "seed {seed}");
    for id in &ids {
        let (code, out, err) =
            mdmsim(&["tree", "--state", &state.to_string_lossy(), "--device", id, "./DevInfo/DevId"]);
        assert_eq!(code, 0, "seed {seed}: device {id} does not load after the kill: {err}");
        assert!(out.contains(id.as_str()), "seed {seed}: {out}");
        let highest = seen(&server, id).into_iter().max().unwrap_or(0);
        assert!(
            after_kill[id] >= highest,
            "seed {seed} (killed {delay:?} after {lines} sessions): device {id} stored counter {} but the server saw SessionID {highest}",
            after_kill[id]
        );
    }

    // A second run works, and no device sends a SessionID the server has seen before.
    let (code, out, err) = mdmsim(&[
        "run",
        "--state",
        &state.to_string_lossy(),
        "--all",
        "--clock",
        "virtual",
        "--start",
        "2026-04-10T08:00:00Z",
        "--until",
        "2d",
    ]);
    assert_eq!(code, 0, "seed {seed}: the run after the kill: {err}\n{out}");
    assert!(out.contains(" 0 failed"), "seed {seed}: {out}");
    let after_run = counters(&state, seed);
    for id in &ids {
        let ids_seen = seen(&server, id);
        assert!(
            ids_seen.windows(2).all(|w| w[0] < w[1]),
            "seed {seed} (killed {delay:?} after {lines} sessions): device {id} sent SessionIDs {ids_seen:?}"
        );
        assert!(after_run[id] > after_kill[id], "seed {seed}: device {id} had no session in the second run");
        assert_eq!(after_run[id], *ids_seen.last().unwrap(), "seed {seed}: device {id}");
    }
}
