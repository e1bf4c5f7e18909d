//! `mdmsim enroll` and `mdmsim sync` against servers that behave as real ones do: the reference
//! server in its `fleet` and `minimal` compatibility presets and with single switches (the
//! Federated sign-in page, an empty answer to package 1), over HTTPS on 127.0.0.1. Each time:
//! enrollment with `--password` exits 0, two later syncs without `--ca-cert` exit 0, every
//! session completes, and the findings name what the server did differently from the protocol.

use serde_json::Value;

use mdmsim::server::{self, Config, ServerHandle, ServerOptions};

use super::support::mdmsim_async;

const USER: &str = "demo@mdmsim.test";

/// A user, a poll schedule and one inventory read: sessions with commands in them.
const BASE: &str = r#"
[dmclient.poll]
NumberOfFirstRetries = 0
[[users]]
name = "demo@mdmsim.test"
password = "demo"
"#;

/// The reference server over HTTPS with `BASE` plus a `[compat]` table.
async fn start(compat: &str) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOptions::local(dir.path().join("server"));
    let text = format!("{BASE}\n[compat]\n{compat}\n");
    opts.config = Config::parse(&text, "real-servers.toml").unwrap_or_else(|e| panic!("{e}"));
    (server::start(opts).await.unwrap(), dir)
}

/// Enrolls one device with `--password` and `--ca-cert`; returns (exit code, stdout, stderr).
async fn enroll(h: &ServerHandle, state: &str, password: &str) -> (i32, String, String) {
    let (disc, ca) = (h.discovery_url(), h.ca_file.display().to_string());
    mdmsim_async(&[
        "enroll",
        "--state",
        state,
        "--discovery",
        &disc,
        "--email",
        USER,
        "--password",
        password,
        "--ca-cert",
        &ca,
        "--seed",
        "7",
    ])
    .await
}

/// One `sync --json` without `--ca-cert`: the session's JSON summary.
async fn sync(state: &str) -> Value {
    let (code, out, err) = mdmsim_async(&["sync", "--state", state, "--json"]).await;
    assert_eq!(code, 0, "sync without --ca-cert: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["outcome"], "completed", "{v}");
    v
}

fn rules(v: &Value) -> Vec<String> {
    v["findings"].as_array().unwrap().iter().map(|f| f["what"].as_str().unwrap().to_string()).collect()
}

/// Fleet's way: AAUTHDATA "nonce", no Final anywhere, Status-only last replies, no Status for
/// Alerts, UUID CmdIDs, and a TLS certificate from a CA the provisioning document never
/// installs. The device enrolls, remembers the CA it was given, and names each deviation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_preset_enrolls_and_syncs_with_findings() {
    let (h, dir) = start(r#"preset = "fleet""#).await;
    let state = dir.path().join("state").display().to_string();
    let (code, out, err) = enroll(&h, &state, "demo").await;
    assert_eq!(code, 0, "{err}");
    let id = out.lines().next().unwrap().to_string();
    assert_eq!(err.matches("enrollment finding: nonce-not-base64").count(), 2, "{err}");
    assert!(err.contains(r#"AAUTHDATA "nonce""#), "{err}");
    assert!(err.contains("post-enrollment session") && err.contains(": completed"), "{err}");
    assert!(err.contains("missing-final"), "{err}");
    // The CA given at enrollment is kept with the device.
    assert!(dir.path().join("state/enrollments").join(&id).join("server-ca.pem").exists());
    for _ in 0..2 {
        let v = sync(&state).await;
        let r = rules(&v);
        assert!(r.contains(&"missing-final".to_string()), "{v}");
        assert!(r.contains(&"command-not-statused".to_string()), "Fleet gives Alerts no Status: {v}");
        assert!(!r.contains(&"status-unknown-cmdref".to_string()), "{v}");
        // At most package 1 and the statuses of the server's commands: no 1222 ping-pong, no
        // 200-message loop.
        assert!(v["messages_sent"].as_u64().unwrap() <= 2, "{v}");
    }
    let rec = h.device(&id).expect("the server knows the device");
    assert!(rec.checkins.len() >= 3, "{:?}", rec.checkins.len());
    assert_eq!(rec.enrollment.unwrap().user, USER);
}

/// A minimal server: a nil MS-XCEP policy response with an undeclared prefix and numbered
/// CmdIDs. Windows warns and enrolls with RSA 2048 / SHA-256; so does mdmsim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_preset_nil_policy_falls_back_to_windows_defaults() {
    let (h, dir) = start(r#"preset = "minimal""#).await;
    let state = dir.path().join("state").display().to_string();
    let (code, out, err) = enroll(&h, &state, "demo").await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("enrollment finding: policy-nil"), "{err}");
    assert!(err.contains("2048-bit RSA key and a SHA-256 signature"), "{err}");
    let id = out.lines().next().unwrap().to_string();
    let (code, list, _) = mdmsim_async(&["device", "list", "--state", &state, "--json"]).await;
    assert_eq!(code, 0);
    assert!(list.contains("policy-nil") && list.contains(&id), "the finding is kept with the device: {list}");
    for _ in 0..2 {
        let v = sync(&state).await;
        assert!(rules(&v).is_empty(), "a minimal server that follows the session protocol: {v}");
    }
}

/// Discovery says Federated for any e-mail address; with `--password` the device signs in on
/// the server's page as the Windows web view does, in each of the page's shapes, and enrolls
/// with the token the page hands back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_discovery_signs_in_on_the_page_in_every_shape() {
    for (compat, what) in [
        ("federated = true\nauth_page = \"login-form\"", "login form"),
        ("preset = \"fleet\"\nfederated = true\nauth_page = \"auto-post\"", "Fleet's script page"),
        ("federated = true\nauth_page = \"redirect\"", "redirect to appru"),
    ] {
        let (h, dir) = start(compat).await;
        let state = dir.path().join("state").display().to_string();
        let (code, out, err) = enroll(&h, &state, "demo").await;
        assert_eq!(code, 0, "{what}: {err}");
        let id = out.lines().next().unwrap().to_string();
        assert_eq!(h.device(&id).and_then(|r| r.enrollment).map(|e| e.user).as_deref(), Some(USER), "{what}");
        for _ in 0..2 {
            sync(&state).await;
        }
    }
}

/// A refused sign-in: the page shows its form again; the error says so and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_federated_sign_in_is_named_and_stores_nothing() {
    let (h, dir) = start("federated = true").await;
    let state = dir.path().join("state").display().to_string();
    let (code, _, err) = enroll(&h, &state, "wrong").await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("Federated sign-in") && err.contains("the sign-in was refused"), "{err}");
    assert!(err.contains("/EnrollmentServer/Auth"), "{err}");
    let (_, list, _) = mdmsim_async(&["device", "list", "--state", &state, "--json"]).await;
    assert!(!list.contains("enrollment"), "nothing stored: {list}");
    assert!(h.devices().is_empty());
}

/// A server that answers package 1 with an empty HTTP 200 did nothing: the session still
/// completes, and the finding says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_to_package_one_is_a_finding() {
    let (h, dir) = start("empty_reply_to_package1 = true").await;
    let state = dir.path().join("state").display().to_string();
    let (code, _, err) = enroll(&h, &state, "demo").await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("empty-reply-to-package-1"), "{err}");
    let v = sync(&state).await;
    assert_eq!(rules(&v), ["empty-reply-to-package-1"], "{v}");
    assert_eq!(v["messages_sent"], 1);
}

/// An enrollment server that refuses with a bare HTTP error: the error quotes the start of
/// what it answered, as `sync` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enrollment_shows_the_http_status_and_the_body() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let body = "<html><body>Service Unavailable: enrollment is closed for maintenance</body></html>";
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let url = format!("http://{addr}/EnrollmentServer/Discovery.svc");
    let (code, _, err) =
        mdmsim_async(&["enroll", "--state", &state, "--discovery", &url, "--email", USER, "--password", "p"]).await;
    serve.abort();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("HTTP 503"), "{err}");
    assert!(err.contains("enrollment is closed for maintenance"), "{err}");
}
