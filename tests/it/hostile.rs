//! Hostile and buggy servers against `mdmsim sync`: each reproducer is a server answer that
//! used to cost gigabytes, minutes or a wrong session, and now meets a limit with a clear
//! message, a status or a finding. The heavy ones run the binary as a child process and measure
//! its peak RSS (from `wait4`) and wall time; they print what they measured:
//!
//! ```sh
//! cargo test --test it hostile -- --nocapture --test-threads 1          # this build
//! MDMSIM_BIN=path/to/other/mdmsim cargo test --test it hostile -- --nocapture --test-threads 1
//! ```
//!
//! Only generous bounds are asserted (300 MiB, 20 s): the numbers are for people to compare.

use std::io::Read;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdmsim::runner::store::Store;
use mdmsim::syncml::{self, Command, Container, Item, ItemCmd, Meta, Status, SyncBody, SyncHdr, SyncMl};

use crate::support::server::{Reply, Server, msg};
use crate::support::tls::TlsServer;
use crate::support::{mdmsim, tree_value};

const DEVICE_NAME: &str = "./DevDetail/Ext/Microsoft/DeviceName";
const PEAK_RSS_BOUND_MIB: f64 = 300.0;
const WALL_BOUND: Duration = Duration::from_secs(20);

/// What one run of the binary came to.
struct Run {
    code: i32,
    out: String,
    err: String,
    peak_rss_mib: f64,
    wall: Duration,
}

/// Runs `mdmsim` (or `$MDMSIM_BIN`, to measure another build) and measures the child's peak
/// resident set size and wall time.
fn measured(what: &str, args: &[&str]) -> Run {
    let bin = std::env::var("MDMSIM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mdmsim").to_string());
    let started = Instant::now();
    // Reaped below with wait4, which gives the child's resource usage (std's wait does not).
    #[allow(clippy::zombie_processes)]
    let mut child = Process::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mdmsim binary runs");
    let pid = child.id() as libc::pid_t;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    // The child's own high-water mark (VmHWM of its address space after exec), read until it
    // exits. `ru_maxrss` alone is not enough: a child spawned with vfork semantics reports the
    // peak of the test process it was spawned from, which is large in a full test run.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hwm = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak_kib = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let kib = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
                    peak_kib = peak_kib.max(kib.unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            peak_kib
        })
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not waited for by anyone else; both pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let wall = started.elapsed();
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -libc::WTERMSIG(status) };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen_kib = hwm.join().unwrap_or(0);
    // Linux reports ru_maxrss in KiB; it is the fallback when the child ended before a reading.
    let peak_rss_mib = if seen_kib > 0 { seen_kib } else { usage.ru_maxrss as u64 } as f64 / 1024.0;
    let run =
        Run { code, out: out.join().unwrap_or_default(), err: err.join().unwrap_or_default(), peak_rss_mib, wall };
    eprintln!(
        "measured {what}: exit {}, peak RSS {:.0} MiB, wall {:.2} s",
        run.code,
        run.peak_rss_mib,
        wall.as_secs_f64()
    );
    run
}

/// `device new` with a `[behaviour]` table.
fn new_device(state: &Path, server: &str, behaviour: &str) {
    let _ = crate::support::new_device_behaving(state, server, 77, behaviour);
}

fn sync(state: &Path, extra: &[&str]) -> (i32, String, String) {
    let state = state.to_string_lossy();
    let mut args = vec!["sync", "--state", &state, "--timeout", "10"];
    args.extend_from_slice(extra);
    mdmsim(&args)
}

fn item_cmd(id: &str, uri: &str, data: Option<String>) -> ItemCmd {
    ItemCmd {
        cmd_id: id.into(),
        items: vec![Item { target: Some(uri.into()), data, ..Item::default() }],
        ..ItemCmd::default()
    }
}

fn replace(id: &str, uri: &str, data: String) -> Command {
    Command::Replace(item_cmd(id, uri, Some(data)))
}

fn get(id: &str, uri: &str) -> Command {
    Command::Get(item_cmd(id, uri, None))
}

/// "CmdRef Cmd code" of the Statuses of a device message.
fn statuses(m: &SyncMl) -> Vec<String> {
    m.body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Status(s) => Some(format!("{} {} {}", s.cmd_ref, s.cmd, s.data)),
            _ => None,
        })
        .collect()
}

/// The `what` of every finding in a `--json` summary.
fn findings(json: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    v["findings"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|f| (f["what"].as_str().unwrap_or("").to_string(), f["why"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

// ---- memory: pretty printing and message size ----

#[test]
fn reply_with_data_escaped_800_levels_deep_under_a_transcript_stays_under_300_mib() {
    // `<a>x</a>` escaped into itself: 799 levels in the Data, the 800th is the wire's own. About
    // 5 MB; the old pretty-printer recursed once per level with a copy each (1.35-1.5 GiB).
    let mut data = "<a>x</a>".to_string();
    for _ in 0..799 {
        data = format!("<a>{}</a>", xml_escape(&data));
    }
    assert!(data.len() > 5_000_000, "{}", data.len());
    let server = Server::start(vec![Reply::Syncml(msg(vec![replace("r1", DEVICE_NAME, data)])), Reply::Empty]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let transcript = dir.path().join("t");
    new_device(&state, &server.url, "");
    let run = measured(
        "5 MB reply escaped 800 levels, sync --transcript",
        &["sync", "--state", &state.to_string_lossy(), "--transcript", &transcript.to_string_lossy(), "--json"],
    );
    assert_eq!(run.code, 0, "{}", run.err);
    assert!(run.peak_rss_mib < PEAK_RSS_BOUND_MIB, "peak RSS {:.0} MiB", run.peak_rss_mib);
    assert!(run.wall < WALL_BOUND, "{:?}", run.wall);
    // 5 MB is over the default max_value_bytes: 413, and the name stays.
    let sent = server.device_messages();
    assert_eq!(statuses(&sent[1]), ["0 SyncHdr 200", "r1 Replace 413"]);
    assert!(
        findings(&run.out).iter().any(|(w, why)| w == "value-too-large" && why.contains("max_value_bytes = 1048576"))
    );
    let shown = std::fs::read_to_string(transcript.join("001-server.xml")).unwrap();
    assert!(shown.len() <= syncml::PRETTY_MAX_BYTES + 200, "the transcript is bounded: {}", shown.len());
    assert!(shown.trim_end().ends_with("-->") && shown.contains("mdmsim: cut here"), "and says where it was cut");
    assert!(shown.contains("<Data>\n") && shown.contains("&lt;a&gt;&amp;lt;a&amp;gt;"), "one level unescaped");
}

#[test]
fn a_60_mb_reply_is_refused_quickly_naming_max_message_bytes() {
    for (chunked, says) in [
        (false, "(it announced Content-Length 62914560); refused"),
        (true, "(more than 8388608 bytes arrived; the rest was not read); refused"),
    ] {
        // A whole message: a Replace of the DeviceName with 60 MB of Data.
        let server = Server::start(vec![Reply::Huge { bytes: 60 << 20, chunked }, Reply::Empty]);
        let dir = tempfile::tempdir().unwrap();
        new_device(dir.path(), &server.url, "");
        let before = tree_value(dir.path(), DEVICE_NAME);
        let what = format!("60 MB reply, chunked={chunked}");
        let run = measured(&what, &["sync", "--state", &dir.path().to_string_lossy()]);
        assert_eq!(run.code, 4, "{}", run.err);
        let expected = format!(
            "the answer of {}?mode=Maintenance&Platform=WoA is larger than max_message_bytes = 8388608 bytes {says}",
            server.url
        );
        assert!(run.err.contains(&expected), "{}", run.err);
        assert!(run.out.contains("FAILED"), "{}", run.out);
        assert!(run.wall < WALL_BOUND, "{what}: {:?}", run.wall);
        assert!(run.peak_rss_mib < PEAK_RSS_BOUND_MIB, "{what}: peak RSS {:.0} MiB", run.peak_rss_mib);
        assert_eq!(server.requests().len(), 1, "the session ends at the refused answer");
        assert_eq!(tree_value(dir.path(), DEVICE_NAME), before, "nothing of it reaches the tree or the store");
    }
}

#[test]
fn max_message_bytes_is_a_setting() {
    let server = Server::start(vec![Reply::Syncml(msg(vec![replace("r1", DEVICE_NAME, "z".repeat(3000))]))]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.url, "max_message_bytes = 2000");
    let before = tree_value(dir.path(), DEVICE_NAME);
    let (code, _, err) = sync(dir.path(), &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("is larger than max_message_bytes = 2000 bytes (it announced Content-Length"), "{err}");
    assert_eq!(tree_value(dir.path(), DEVICE_NAME), before);
}

// ---- node values and large objects ----

#[test]
fn a_device_name_over_max_value_bytes_gets_413_and_tree_and_store_keep_the_old_value() {
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![replace("r1", DEVICE_NAME, "N".repeat(2000)), get("g1", DEVICE_NAME)])),
        Reply::Empty,
    ]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.url, "max_value_bytes = 1000");
    let before = tree_value(dir.path(), DEVICE_NAME);
    let (code, out, err) = sync(dir.path(), &["--json"]);
    assert_eq!(code, 0, "{err}");
    let sent = server.device_messages();
    assert_eq!(statuses(&sent[1]), ["0 SyncHdr 200", "r1 Replace 413", "g1 Get 200"]);
    let found = findings(&out);
    let (_, why) = found.iter().find(|(w, _)| w == "value-too-large").expect("a value-too-large finding");
    assert!(why.contains("its Data has 2000 bytes, over max_value_bytes = 1000; answered 413"), "{why}");
    assert_eq!(tree_value(dir.path(), DEVICE_NAME), before, "the tree (read from the store) keeps the old name");
    let stored = Store::open(dir.path()).unwrap().load(None).unwrap();
    assert_eq!(stored.tree.value("DevDetail/Ext/Microsoft/DeviceName"), Some(before.as_str()));
    // The Get in the same message still reads the old name.
    let Some(Command::Results(r)) = sent[1].body.commands.iter().find(|c| matches!(c, Command::Results(_))) else {
        panic!("no Results")
    };
    assert_eq!(r.items[0].data.as_deref(), Some(before.as_str()));
}

#[test]
fn a_large_object_growing_past_max_object_bytes_is_refused_and_dropped() {
    let chunk = |id: &str, data: String, more: bool, size: Option<&str>| {
        let mut c = item_cmd(id, DEVICE_NAME, Some(data));
        c.items[0].more_data = more;
        c.items[0].meta = size.map(|s| Box::new(Meta { size: Some(s.into()), ..Meta::default() }));
        Command::Replace(c)
    };
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![chunk("c1", "A".repeat(600), true, Some("1800"))]).not_final()),
        Reply::Syncml(msg(vec![chunk("c2", "B".repeat(600), true, None)]).not_final()),
        Reply::Syncml(msg(vec![chunk("c3", "C".repeat(600), false, None)])),
        Reply::Empty,
    ]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.url, "max_object_bytes = 1000");
    let before = tree_value(dir.path(), DEVICE_NAME);
    let (code, out, err) = sync(dir.path(), &["--json"]);
    assert_eq!(code, 0, "{err}");
    let sent = server.device_messages();
    assert_eq!(statuses(&sent[1]), ["0 SyncHdr 200", "c1 Replace 413"]);
    assert_eq!(statuses(&sent[2]), ["0 SyncHdr 200", "c2 Replace 413"]);
    assert_eq!(statuses(&sent[3]), ["0 SyncHdr 200", "c3 Replace 413"]);
    let found = findings(&out);
    let objects: Vec<&(String, String)> = found.iter().filter(|(w, _)| w == "object-too-large").collect();
    assert_eq!(objects.len(), 1, "{found:?}");
    assert!(objects[0].1.contains("announces Meta/Size 1800 bytes, over max_object_bytes = 1000"), "{}", objects[0].1);
    assert_eq!(tree_value(dir.path(), DEVICE_NAME), before);
}

// ---- time ----

#[test]
fn http_429_with_retry_after_999999_under_timeout_5_gives_up_in_time() {
    let server = Server::start(vec![Reply::TooMany(999_999)]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.url, "");
    let run = measured(
        "429 Retry-After 999999, --timeout 5",
        &["sync", "--state", &dir.path().to_string_lossy(), "--timeout", "5"],
    );
    assert_eq!(run.code, 3, "{}", run.err);
    assert!(
        run.err.contains("answered HTTP 429 (too many requests) with Retry-After 999999 s, more than the"),
        "{}",
        run.err
    );
    assert!(run.err.contains("(--timeout 5 s); giving up"), "{}", run.err);
    assert!(run.wall < WALL_BOUND, "{:?}", run.wall);
    assert_eq!(server.requests().len(), 1, "no retry that could not succeed in time");
}

#[test]
fn max_messages_is_a_setting() {
    let endless = Reply::Syncml(msg(vec![get("g1", "./DevInfo/DmV")]).not_final());
    let server = Server::start(vec![endless; 10]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.url, "max_messages = 3");
    let (code, _, err) = sync(dir.path(), &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("the server kept the session going past max_messages = 3 client messages"), "{err}");
    assert_eq!(server.requests().len(), 3);
}

// ---- session findings ----

#[test]
fn a_repeated_server_msgid_is_a_finding() {
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![get("g1", "./DevInfo/DmV")]).not_final()),
        Reply::Syncml(msg(vec![get("g2", "./DevInfo/Lang")]).msg_id("1")),
        Reply::Empty,
    ]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &server.url, "");
    let (code, out, err) = sync(dir.path(), &["--json"]);
    assert_eq!(code, 0, "{err}");
    let found = findings(&out);
    let (_, why) = found.iter().find(|(w, _)| w == "repeated-msgid").expect("a repeated-msgid finding");
    assert!(why.contains("already sent a message with MsgID 1 in this session"), "{why}");
    assert_eq!(statuses(&server.device_messages()[2]), ["0 SyncHdr 200", "g2 Get 200"], "answered anyway");
}

#[test]
fn resp_uri_to_another_host_is_followed_with_a_finding() {
    let other = Server::start(vec![Reply::Syncml(msg(vec![get("g2", "./DevInfo/Lang")])), Reply::Empty]);
    // Another port is another server to the URL rules (scheme, host and port).
    let moved_to = other.url.clone();
    let first = Server::start(vec![Reply::Syncml(msg(vec![get("g1", "./DevInfo/DmV")]).resp_uri(&moved_to))]);
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &first.url, "");
    let (code, out, err) = sync(dir.path(), &["--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(first.requests().len(), 1);
    assert_eq!(other.requests().len(), 2, "the rest of the session went to the RespURI");
    let found = findings(&out);
    let (_, why) = found.iter().find(|(w, _)| w == "respuri-host-change").expect("a respuri-host-change finding");
    let from = first.origin();
    let to = other.origin();
    assert!(why.contains(&format!("moves the session from {from} to {to}")), "{why}");
}

#[test]
fn resp_uri_from_https_to_http_is_refused_with_exit_4() {
    let plain = Server::start(vec![Reply::Empty]);
    let to = plain.url.clone();
    // Package 1 is answered over TLS with a SyncHdr status, a Replace, and a RespURI to http.
    let tls = TlsServer::start_with(Arc::new(move |body: &str| {
        let dev = syncml::decode(body).expect("package 1");
        let answer = SyncMl {
            hdr: SyncHdr {
                session_id: dev.hdr.session_id.clone(),
                msg_id: "1".into(),
                target: dev.hdr.source.clone(),
                source: dev.hdr.target.clone(),
                resp_uri: Some(to.clone()),
                ..SyncHdr::default()
            },
            body: SyncBody {
                commands: vec![
                    Command::Status(Status {
                        cmd_id: "1".into(),
                        msg_ref: "1".into(),
                        cmd_ref: "0".into(),
                        cmd: "SyncHdr".into(),
                        data: "200".into(),
                        ..Status::default()
                    }),
                    Command::Atomic(Container {
                        cmd_id: "2".into(),
                        commands: vec![replace("3", DEVICE_NAME, "OVER-HTTP".into())],
                        ..Container::default()
                    }),
                ],
                final_: true,
            },
        };
        syncml::encode(&answer)
    }));
    let dir = tempfile::tempdir().unwrap();
    new_device(dir.path(), &tls.url, "");
    let before = tree_value(dir.path(), DEVICE_NAME);
    let (code, out, err) = sync(dir.path(), &["--insecure"]);
    assert_eq!(code, 4, "{err}");
    let origin = tls.url.trim_end_matches("/MDM.svc");
    let expected = format!(
        "server message 1 has RespURI {:?}: it would move the session from {origin} to plain http at {}; refused (the device's messages would leave TLS)",
        plain.url,
        plain.origin()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(out.contains("FAILED"), "{out}");
    assert_eq!(plain.requests().len(), 0, "nothing was sent over plain http");
    assert_eq!(tree_value(dir.path(), DEVICE_NAME), before, "the session's changes were rolled back");
}
