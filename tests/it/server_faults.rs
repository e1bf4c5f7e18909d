//! The reference server's admin token, its refusal to listen beyond loopback, and its fault
//! injection: what each fault looks like on the wire, and a fleet of `mdmsim run` devices that
//! lives through a faulty server and agrees with what the server injected.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use mdmsim::server::{self, AuthMode, Config, FaultConfig, ServerError, ServerHandle, ServerOptions};
use mdmsim::syncml;

use crate::support::{mdmsim, new_device};

const DEV: &str = "0123456789ABCDEF0123456789ABCDEF";

fn hdr(session: &str, msg: u32) -> String {
    format!(
        "<SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>{session}</SessionID><MsgID>{msg}</MsgID>\
         <Target><LocURI>https://mdm.test/ManagementServer/MDM.svc</LocURI></Target><Source><LocURI>{DEV}</LocURI></Source></SyncHdr>"
    )
}

/// Package 1 of a session of `DEV`, the enrolled user logged on.
fn pkg1(session: &str) -> String {
    format!(
        "<SyncML xmlns=\"SYNCML:SYNCML1.2\">{}<SyncBody><Alert><CmdID>1</CmdID><Data>1201</Data></Alert>\
         <Alert><CmdID>2</CmdID><Data>1224</Data><Item><Meta><Type xmlns=\"syncml:metinf\">com.microsoft/MDM/LoginStatus</Type></Meta><Data>user</Data></Item></Alert>\
         <Final/></SyncBody></SyncML>",
        hdr(session, 1)
    )
}

/// Message 2 of a session: only the Status for the server's SyncHdr.
fn msg2(session: &str) -> String {
    format!(
        "<SyncML xmlns=\"SYNCML:SYNCML1.2\">{}<SyncBody><Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef>\
         <Cmd>SyncHdr</Cmd><Data>200</Data></Status><Final/></SyncBody></SyncML>",
        hdr(session, 2)
    )
}

/// The default policies, devices trusted by their DeviceID (no enrollment needed), `faults`.
fn config(faults: &str, seed: u64, slow_delay: Option<Duration>) -> Config {
    let mut config = Config::default();
    config.management.auth = AuthMode::None;
    config.faults = FaultConfig { spec: faults.parse().unwrap(), seed: Some(seed), slow_delay, retry_after: None };
    config
}

async fn start(dir: &Path, config: Config) -> ServerHandle {
    let mut opts = ServerOptions::local(dir);
    opts.http = true;
    opts.config = config;
    server::start(opts).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

async fn post(c: &reqwest::Client, h: &ServerHandle, body: &str) -> reqwest::Response {
    c.post(format!("{}?mode=Maintenance&Platform=WoA", h.management_url()))
        .header("Content-Type", syncml::CONTENT_TYPE)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// A raw HTTP/1.1 POST of `body` to the management endpoint; everything the server sent until
/// it closed the connection (bounded by a read timeout). Off the async runtime, which serves.
async fn raw_post(h: &ServerHandle, body: &str) -> Vec<u8> {
    let (addr, body) = (h.local_addr, body.to_string());
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST /ManagementServer/MDM.svc?mode=Maintenance HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            syncml::CONTENT_TYPE,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut out = Vec::new();
        // Ends at the server's close; a timeout here would mean the server kept the connection.
        s.read_to_end(&mut out).expect("the server closes the connection");
        out
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn admin_endpoints_answer_401_without_the_token_and_200_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), config("none", 1, None)).await;
    let c = client();
    // Devices need no token.
    assert_eq!(post(&c, &h, &pkg1("1")).await.status(), 200);
    for path in ["/admin/devices", &format!("/admin/devices/{DEV}"), "/admin/summary", "/admin/devices/nobody"] {
        let url = format!("{}{path}", h.base_url);
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"mdmsim admin\"");
        let text = resp.text().await.unwrap();
        assert!(text.contains("Authorization: Bearer") && text.contains("admin-token"), "{text}");
        assert!(!text.contains(DEV) && !text.contains(h.admin_token()), "{text}");
        let resp = c.get(&url).bearer_auth("0".repeat(64)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));
    }
    let with = |path: &str| c.get(format!("{}{path}", h.base_url)).bearer_auth(h.admin_token()).send();
    let devices: Value = with("/admin/devices").await.unwrap().json().await.unwrap();
    assert_eq!(devices[0]["device_id"], DEV);
    let one = with(&format!("/admin/devices/{DEV}")).await.unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(with("/admin/devices/nobody").await.unwrap().status(), 404);
    let summary: Value = with("/admin/summary").await.unwrap().json().await.unwrap();
    assert_eq!((summary["sessions"].as_u64(), summary["faults"].as_object().map(|f| f.len())), (Some(1), Some(0)));
    // In process, the records need no token.
    assert_eq!(h.summary().totals.sessions, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn the_admin_token_file_is_private_and_the_same_after_a_restart() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Config::default()).await;
    let file = dir.path().join("admin-token");
    assert_eq!(h.admin_token_file(), file);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = h.admin_token().to_string();
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert!(token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    h.shutdown().await;
    let again = start(dir.path(), Config::default()).await;
    assert_eq!(again.admin_token(), token);
    again.shutdown().await;
    // Another state directory, another token.
    let other = tempfile::tempdir().unwrap();
    let h = start(other.path(), Config::default()).await;
    assert_ne!(h.admin_token(), token);
    h.shutdown().await;

    // Loosened by hand, it is refused (exit 5) rather than trusted.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = crate::support::mdmsim_async(&[
        "server",
        "--http",
        "--listen",
        "127.0.0.1:0",
        "--state",
        &dir.path().to_string_lossy(),
    ])
    .await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("admin-token: other users can read it (mode 644)"), "{err}");
}

#[test]
fn the_server_command_prints_the_token_file_and_the_faults_but_not_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_string_lossy();
    let text = super::support::server_banner(&[
        "--http",
        "--listen",
        "127.0.0.1:0",
        "--faults",
        "500=5%,no-final=0.5%",
        "--fault-seed",
        "7",
        "--state",
        &state,
    ]);
    let file = dir.path().join("admin-token");
    assert!(text.contains(&format!("admin token:   {} (send it as Authorization: Bearer)", file.display())), "{text}");
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(token.trim()), "the token itself is never printed");
    assert!(text.contains("faults:        500=5%,no-final=0.5% (seed 7)"), "{text}");
}

#[test]
fn listening_beyond_loopback_needs_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("srv");
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let (code, out, err) = mdmsim(&["server", "--listen", listen, "--state", &state.to_string_lossy()]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains(&format!("refusing to listen on {listen}: other machines could reach it")), "{err}");
        assert!(err.contains("pass --allow-remote"), "{err}");
    }
    // Plain HTTP stays loopback-only, flag or not.
    let (code, _, err) =
        mdmsim(&["server", "--http", "--allow-remote", "--listen", "0.0.0.0:0", "--state", &state.to_string_lossy()]);
    assert_eq!(code, 2);
    assert!(err.contains("refusing plain HTTP on 0.0.0.0:0"), "{err}");
    assert!(!state.exists(), "nothing was created before the refusal");
    // In process, the same rule.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut opts = ServerOptions::local(&state);
    opts.listen = "0.0.0.0:0".parse().unwrap();
    let refused = rt.block_on(server::start(opts));
    assert!(matches!(refused, Err(ServerError::RemoteNotAllowed(_))));
}

#[test]
fn bad_fault_specs_exit_2_naming_the_term_and_the_fault_names() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("srv").to_string_lossy().into_owned();
    let names = "the faults are 500, reset, slow, truncate, malformed, no-final, 429, 503";
    let cases = [
        ("500=5%,rst=2%", "fault term \"rst=2%\": unknown fault \"rst\""),
        ("reset=150%", "fault term \"reset=150%\": \"150%\" is not a probability"),
        ("reset", "fault term \"reset\": expected NAME=PROBABILITY"),
        ("500=60%,reset=50%", "the fault probabilities add up to 110%, more than 100%"),
        ("reset=1%,reset=2%", "reset is given twice"),
    ];
    for (spec, message) in cases {
        let (code, _, err) =
            mdmsim(&["server", "--http", "--listen", "127.0.0.1:0", "--state", &state, "--faults", spec]);
        assert_eq!(code, 2, "{spec}: {err}");
        assert!(err.contains(message), "{spec}: {err}");
        if message.starts_with("fault term") && !message.contains("is not a probability") {
            assert!(err.contains(names), "{spec}: {err}");
        }
    }
    let (code, _, err) =
        mdmsim(&["server", "--http", "--listen", "127.0.0.1:0", "--state", &state, "--fault-slow-delay", "45s"]);
    assert_eq!(code, 2);
    assert!(err.contains("slow delay \"45s\": at most 30s"), "{err}");
    // The [faults] table of a config file, with the file named.
    let file = dir.path().join("faulty.toml");
    std::fs::write(&file, "[faults]\nresets = \"1%\"\n").unwrap();
    let (code, _, err) = mdmsim(&[
        "server",
        "--http",
        "--listen",
        "127.0.0.1:0",
        "--state",
        &state,
        "--config",
        &file.to_string_lossy(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("faulty.toml") && err.contains("faults.resets: unknown key \"resets\""), "{err}");
    // The shipped example parses into what it says.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/server/faulty.toml");
    let c = Config::load(&example).unwrap();
    assert_eq!(c.faults.spec.to_string(), "500=10%,reset=5%,slow=1%,truncate=5%,malformed=5%,no-final=5%");
    assert_eq!((c.faults.seed, c.faults.slow_delay), (Some(42), Some(Duration::from_secs(2))));
}

#[tokio::test]
async fn each_fault_looks_as_documented_on_the_wire_and_is_counted() {
    let c = client();
    // One state directory for the servers one after the other: the CA is made once.
    let dir = tempfile::tempdir().unwrap();

    // 500: the status, a body naming the fault, and the message was not acted on.
    let h = start(dir.path(), config("500=100%", 1, None)).await;
    let resp = post(&c, &h, &pkg1("1")).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.text().await.unwrap(), "mdmsim fault injection: HTTP 500 Internal Server Error\n");
    let record = h.device(DEV).unwrap();
    assert!(record.checkins.is_empty(), "no check-in for a message the server did not act on");
    assert_eq!((record.faults[0].kind.as_str(), record.faults[0].session_id.as_str()), ("500", "1"));
    assert_eq!(h.summary().faults["500"], 1);
    h.shutdown().await;

    // reset: the connection closes with nothing sent.
    let h = start(dir.path(), config("reset=100%", 1, None)).await;
    assert_eq!(raw_post(&h, &pkg1("1")).await, b"", "not even a status line");
    assert!(post_err(&c, &h).await.is_request(), "reqwest sees a failed request");
    assert_eq!(h.summary().faults["reset"], 2);
    h.shutdown().await;

    // truncate: a Content-Length longer than the body, then the close.
    let h = start(dir.path(), config("truncate=100%", 1, None)).await;
    let raw = raw_post(&h, &pkg1("1")).await;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("headers were sent");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
        .expect("a Content-Length");
    assert!(!body.is_empty() && body.len() < length, "{} of {length} bytes", body.len());
    assert!(body.starts_with("<SyncML"), "{body}");
    assert_eq!(h.summary().faults["truncate"], 1);
    h.shutdown().await;

    // malformed: HTTP 200 with SyncML that does not parse.
    let h = start(dir.path(), config("malformed=100%", 1, None)).await;
    let resp = post(&c, &h, &pkg1("1")).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("<SessionID>1</SessionID>"), "{text}");
    assert!(syncml::decode(&text).is_err(), "{text}");
    h.shutdown().await;

    // no-final: the real answer without Final; an empty answer has none to drop.
    let h = start(dir.path(), config("no-final=100%", 1, None)).await;
    let resp = post(&c, &h, &pkg1("1")).await;
    let m = syncml::decode(&resp.text().await.unwrap()).unwrap();
    assert!(!m.body.final_);
    assert!(m.body.commands.iter().any(|c| !matches!(c, syncml::Command::Status(_))), "the policies are there");
    assert_eq!(h.device(DEV).unwrap().checkins.len(), 1, "the message was handled");
    let end = post(&c, &h, &msg2("1")).await;
    assert_eq!(end.text().await.unwrap(), "", "the session's end");
    assert_eq!(h.summary().faults["no-final"], 1, "the empty answer is not counted");
    h.shutdown().await;

    // 429 and 503: the status with Retry-After (the configured seconds), not acted on.
    for (kind, status) in [("429", 429), ("503", 503)] {
        let mut cfg = config(&format!("{kind}=100%"), 1, None);
        cfg.faults.retry_after = Some(Duration::from_secs(2));
        let h = start(dir.path(), cfg).await;
        let resp = post(&c, &h, &pkg1("1")).await;
        assert_eq!(resp.status(), status);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert!(resp.text().await.unwrap().starts_with(&format!("mdmsim fault injection: HTTP {status}")));
        assert!(h.device(DEV).unwrap().checkins.is_empty(), "{kind}: not acted on");
        assert_eq!(h.summary().faults[kind], 1);
        h.shutdown().await;
    }
    // Compat `throttle_without_retry_after`: the same answer without the header.
    let mut cfg = config("503=100%", 1, None);
    cfg.compat.throttle_without_retry_after = Some(true);
    let h = start(dir.path(), cfg).await;
    let resp = post(&c, &h, &pkg1("1")).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_none());
    h.shutdown().await;

    // slow: the real answer, after the delay.
    let h = start(dir.path(), config("slow=100%", 1, Some(Duration::from_millis(300)))).await;
    let t = Instant::now();
    let resp = post(&c, &h, &pkg1("1")).await;
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    assert!(syncml::decode(&resp.text().await.unwrap()).unwrap().body.final_);
    assert_eq!(h.summary().faults["slow"], 1);
    h.shutdown().await;
}

async fn post_err(c: &reqwest::Client, h: &ServerHandle) -> reqwest::Error {
    c.post(h.management_url()).body(pkg1("2")).send().await.expect_err("no answer")
}

/// The in-process server for `mdmsim run` (which runs as a child process).
struct Running {
    handle: ServerHandle,
    _rt: tokio::runtime::Runtime,
}

fn start_blocking(dir: &Path, config: Config) -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let handle = rt.block_on(start(dir, config));
    Running { handle, _rt: rt }
}

/// `mdmsim run --all` for a day on the virtual clock: (exit code, JSON output, stderr).
fn run_day(state: &Path) -> (i32, Value, String) {
    let (code, out, err) = mdmsim(&[
        "run",
        "--state",
        &state.to_string_lossy(),
        "--all",
        "--clock",
        "virtual",
        "--start",
        "2026-03-02T08:00:00Z",
        "--until",
        "1d",
        "--json",
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v, err)
}

/// Per device, its sessions in order: (time, trigger, completed, error).
fn sessions(run: &Value, device: &str) -> Vec<(String, String, bool, String)> {
    run["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "session" && r["device"] == device)
        .map(|r| {
            let s = &r["summary"];
            (
                r["at"].as_str().unwrap().to_string(),
                s["trigger"].as_str().unwrap().to_string(),
                s["outcome"] == "completed",
                s["error"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_fleet_lives_through_a_faulty_server_and_agrees_with_what_it_injected() {
    const SPEC: &str = "500=10%,reset=5%,truncate=5%,malformed=5%,no-final=5%";
    const SEED: u64 = 11;
    let dir = tempfile::tempdir().unwrap();
    let faulty = start_blocking(&dir.path().join("faulty-srv"), config(SPEC, SEED, None));
    let clean = start_blocking(&dir.path().join("clean-srv"), config("none", SEED, None));
    let (faulty_state, clean_state) = (dir.path().join("faulty"), dir.path().join("clean"));
    let ids: Vec<String> =
        (1..=4).map(|seed| new_device(&faulty_state, &faulty.handle.management_url(), seed)).collect();
    for seed in 1..=4 {
        new_device(&clean_state, &clean.handle.management_url(), seed);
    }

    let (code, run, err) = run_day(&faulty_state);
    let ctx = format!("seed {SEED}, faults {SPEC}");
    assert!(!err.contains("panicked"), "{ctx}: {err}");
    // Sessions failed and some of them on an HTTP 500: `run` exits with the protocol class
    // (4 wins over 3), never a usage, state or crash code.
    assert_eq!(code, 4, "{ctx}: {err}");

    let server = faulty.handle.summary();
    let injected = |kind: &str| server.faults.get(kind).copied().unwrap_or(0) as u64;
    let failed = run["summary"]["failed"].as_u64().unwrap();
    assert!(failed > 0, "{ctx}: {run}");
    // A session fails at its first 500, truncated or malformed answer, so each of those ends
    // exactly one session; a reset fails one too, unless it hit package 1 and the device's
    // connection retry got through. no-final never fails a session.
    let always = injected("500") + injected("truncate") + injected("malformed");
    assert!(
        (always..=always + injected("reset")).contains(&failed),
        "{ctx}: {failed} failed sessions, server injected {:?}",
        server.faults
    );
    let http_500 = ids
        .iter()
        .flat_map(|id| sessions(&run, id))
        .filter(|s| s.3.contains("answered HTTP 500: mdmsim fault injection"))
        .count() as u64;
    assert_eq!(http_500, injected("500"), "{ctx}: every 500 failed one session");
    assert_eq!(
        run["summary"]["completed"].as_u64().unwrap(),
        server.totals.completed_sessions as u64,
        "{ctx}: the device side and the server agree on the sessions that completed"
    );

    // The schedule is the one the same devices keep against a server without faults, and every
    // device completes sessions again after its first failure.
    let (code, clean_run, err) = run_day(&clean_state);
    assert_eq!(code, 0, "{err}");
    for id in &ids {
        let with_faults = sessions(&run, id);
        let without = sessions(&clean_run, id);
        let timeline =
            |s: &[(String, String, bool, String)]| s.iter().map(|x| (x.0.clone(), x.1.clone())).collect::<Vec<_>>();
        assert_eq!(timeline(&with_faults), timeline(&without), "{ctx}: device {id} kept its schedule");
        assert!(without.iter().all(|s| s.2), "device {id}: {without:?}");
        let first_failure = with_faults.iter().position(|s| !s.2);
        if let Some(i) = first_failure {
            assert!(with_faults[i..].iter().any(|s| s.2), "{ctx}: device {id} never recovered: {with_faults:?}");
        }
        let record = faulty.handle.device(id).unwrap();
        let completed = with_faults.iter().filter(|s| s.2).count();
        assert_eq!(record.checkins.iter().filter(|c| c.completed).count(), completed, "{ctx}: device {id}");
    }
    assert!(
        ids.iter().filter(|id| sessions(&run, id).iter().any(|s| !s.2)).count() >= 3,
        "{ctx}: most devices met a fault"
    );
}

/// Throttling answers are waited out and the same message sent again: the device counts
/// exactly the throttling answers the server injected, the sessions that met one complete, and
/// only a message throttled more times than the device retries fails its session (bounded).
#[test]
fn a_device_waits_out_429_and_503_and_counts_them() {
    const SPEC: &str = "429=10%,503=10%";
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(SPEC, 3, None);
    cfg.faults.retry_after = Some(Duration::ZERO);
    let busy = start_blocking(&dir.path().join("srv"), cfg);
    let state = dir.path().join("state");
    let ids: Vec<String> = (1..=2).map(|seed| new_device(&state, &busy.handle.management_url(), seed)).collect();
    let (code, run, err) = run_day(&state);
    assert!(code == 0 || code == 3, "{err}");
    let server = busy.handle.summary();
    let injected: u64 = ["429", "503"].iter().map(|k| server.faults.get(*k).copied().unwrap_or(0) as u64).sum();
    assert!(injected > 0, "{:?}", server.faults);
    let summaries: Vec<&Value> =
        run["records"].as_array().unwrap().iter().filter(|r| r["kind"] == "session").map(|r| &r["summary"]).collect();
    let counted: u64 = summaries.iter().map(|s| s["throttled"].as_u64().unwrap_or(0)).sum();
    assert_eq!(counted, injected, "every throttling answer was waited out and counted");
    assert!(
        summaries.iter().any(|s| s["throttled"].as_u64().unwrap_or(0) > 0 && s["outcome"] == "completed"),
        "a throttled session completed"
    );
    for id in &ids {
        for s in sessions(&run, id).iter().filter(|s| !s.2) {
            assert!(s.3.contains("4 times; giving up"), "device {id}: {s:?}");
        }
    }
}
