//! `mdmsim conformance` against the reference server over HTTPS on 127.0.0.1: every check
//! passes in the standard mode (exit 0), and each compatibility preset fails exactly the checks
//! of the deviations it reproduces (exit 1), with evidence in the JSON report.

use std::collections::BTreeSet;

use serde_json::Value;

use mdmsim::server::{self, Config, ServerHandle, ServerOptions};

use super::support::mdmsim_async;

/// A user, a poll schedule, inventory read every session, a push channel and a two-setting
/// Policy profile: sessions with commands in them for every check to judge.
const BASE: &str = r#"
[dmclient]
push_pfn = "Contoso.MDM_8wekyb3d8bbwe"
[dmclient.poll]
NumberOfFirstRetries = 0
[management]
inventory = ["./DevDetail/SwV"]
inventory_every_session = true
[[users]]
name = "demo@mdmsim.test"
password = "demo"
[[profiles]]
name = "Baseline"
[[profiles.settings]]
loc_uri = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera"
format = "int"
data = "0"
[[profiles.settings]]
loc_uri = "./Device/Vendor/MSFT/Policy/Config/Experience/AllowCortana"
format = "int"
data = "0"
"#;

async fn start(compat: &str) -> (ServerHandle, tempfile::TempDir) {
    start_with(compat, "", "").await
}

/// The strict server's extras: MD5 application-layer authentication of every message, and one
/// management request in ten throttled with HTTP 503 and `Retry-After: 1`.
const MD5: &str = "auth = \"md5\"\n";
const THROTTLED: &str = "[faults]\n\"503\" = \"10%\"\nseed = 7\nretry_after = 1\n";

/// [`start`] with lines added to `[management]` and tables after the config.
async fn start_with(compat: &str, management: &str, tables: &str) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOptions::local(dir.path().join("server"));
    let base = BASE.replace("[management]\n", &format!("[management]\n{management}"));
    let text = format!("{base}\n[compat]\n{compat}\n{tables}");
    opts.config = Config::parse(&text, "conformance.toml").unwrap_or_else(|e| panic!("{e}"));
    (server::start(opts).await.unwrap(), dir)
}

/// The CA that signs the server's TLS certificate (its own with `separate_tls_ca`).
fn tls_ca(h: &ServerHandle) -> String {
    let own = h.ca_file.with_file_name("tls-ca.pem");
    if own.exists() { own } else { h.ca_file.clone() }.display().to_string()
}

/// Runs `mdmsim conformance --json` (plus `extra`) against `h`: (exit code, report, stderr).
async fn conformance(h: &ServerHandle, extra: &[&str]) -> (i32, Value, String) {
    let (disc, ca) = (h.discovery_url(), tls_ca(h));
    let mut args = vec![
        "conformance",
        "--discovery",
        &disc,
        "--email",
        "demo@mdmsim.test",
        "--password",
        "demo",
        "--ca-cert",
        &ca,
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = mdmsim_async(&args).await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v, err)
}

fn with_verdict(v: &Value, verdict: &str) -> BTreeSet<String> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == verdict)
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn check<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no check {id}: {v}"))
}

/// The standard server passes every check, and none is left not applicable: the run gave
/// every check something to judge. JUnit and HTML files are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_passes_every_check() {
    let (h, dir) = start_with(r#"preset = "standard""#, MD5, THROTTLED).await;
    let junit = dir.path().join("report.xml").display().to_string();
    let html = dir.path().join("report.html").display().to_string();
    let (code, v, err) = conformance(&h, &["--junit", &junit, "--html", &html]).await;
    assert_eq!(with_verdict(&v, "fail"), BTreeSet::new(), "{v:#}\n{err}");
    assert_eq!(with_verdict(&v, "not-applicable"), BTreeSet::new(), "{v:#}");
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["passed"], true);
    assert_eq!(v["checks"].as_array().unwrap().len(), mdmsim::conformance::checks::ALL.len());
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(x.contains("<testsuites") && x.contains("failures=\"0\""), "{x}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Every check passed.") && !page.contains("<script"), "{page}");
    // The server saw the device's probes: its records hold the user unenrollment.
    assert!(!h.devices().is_empty());
    // The large value sent in chunks was put together whole: the server recorded it as the
    // Results of its Get.
    let filler = "0123456789abcdefghijklmnopqrstuvwxyz";
    let whole = h
        .devices()
        .iter()
        .flat_map(|d| d.results.clone())
        .filter_map(|r| r.data)
        .any(|v| v.len() == 6000 && v.contains(&filler.repeat(100)) && !v.contains('\n'));
    assert!(
        whole,
        "no 6000-byte Results value recorded: {:?}\n{:#}",
        h.devices()
            .iter()
            .flat_map(|d| d.results.clone())
            .map(|r| (r.cmd, r.loc_uri, r.data.map(|d| d.len())))
            .collect::<Vec<_>>(),
        check(&v, "large-object-from-device")
    );
    let large = check(&v, "large-object-from-device");
    assert!(large["observed"].as_str().unwrap().contains("each chunk before the last got Status 213"), "{large:#}");
    let md5 = check(&v, "md5-challenge");
    assert!(md5["observed"].as_str().unwrap().contains("fresh NextNonce"), "{md5:#}");
    let throttling = check(&v, "throttling-retry-after");
    let ev = throttling["evidence"].as_array().unwrap();
    assert!(ev.iter().any(|e| e["what"].as_str().unwrap().contains("HTTP 503 with Retry-After 1")), "{throttling:#}");
}

/// Fleet's behaviour: each deviation of the preset fails its checks, with evidence, and
/// nothing else fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_preset_fails_the_checks_of_its_deviations() {
    let (h, _dir) = start(r#"preset = "fleet""#).await;
    let (code, v, err) = conformance(&h, &[]).await;
    assert_eq!(code, 1, "{err}");
    let want: BTreeSet<String> = [
        // aauthdata_nonce
        "appauth-nonce",
        // soap_fault_http_200
        "soap-fault-http-500",
        // final = false
        "final",
        // client_final = false: a message without Final ends the exchange, chunks included
        "multi-message-package",
        "large-object-from-device",
        // alert_statuses = false
        "status-per-command",
        "keep-alive-1224",
        "session-alerts",
        "login-status",
        "generic-alert-msi",
        "user-unenroll-1226",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(with_verdict(&v, "fail"), want, "{v:#}");
    let soap = check(&v, "soap-fault-http-500");
    assert!(soap["observed"].as_str().unwrap().contains("HTTP 200"), "{soap:#}");
    let multi = check(&v, "multi-message-package");
    let ev = multi["evidence"].as_array().unwrap();
    assert_eq!(ev[0]["from"], "device");
    assert_eq!(ev[0]["msg_id"], "1");
    assert!(ev[0]["what"].as_str().unwrap().contains("no Final"), "{multi:#}");
    assert!(multi["source"].as_str().unwrap().contains("Alert 1222"), "{multi:#}");
    let large = check(&v, "large-object-from-device");
    assert!(large["observed"].as_str().unwrap().contains("chunk 2 got an empty HTTP 200"), "{large:#}");
    let fin = check(&v, "final");
    assert!(fin["evidence"][0]["what"].as_str().unwrap().contains("missing-final"), "{fin:#}");
}

/// A minimal server's nil MS-XCEP policy fails the policy check only; `--only` keeps the
/// run to one group, and the text report shows the table and the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_preset_fails_the_policy_check_only() {
    let (h, _dir) = start(r#"preset = "minimal""#).await;
    let (code, v, err) = conformance(&h, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(with_verdict(&v, "fail"), BTreeSet::from(["xcep-policy".to_string()]), "{v:#}");
    let (disc, ca) = (h.discovery_url(), tls_ca(&h));
    let (code, out, _) = mdmsim_async(&[
        "conformance",
        "--discovery",
        &disc,
        "--email",
        "demo@mdmsim.test",
        "--password",
        "demo",
        "--ca-cert",
        &ca,
        "--only",
        "enrollment",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("enrollment        6      1      0"), "{out}");
    assert!(!out.contains("robustness"), "{out}");
    assert!(out.contains("FAIL xcep-policy [enrollment, win10]") && out.contains("evidence: [policy]"), "{out}");
}

/// A server that throttles without saying when to come back fails the throttling check only;
/// the device still gets through on its own schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_without_retry_after_fails_that_check_only() {
    let (h, _dir) = start_with("preset = \"standard\"\nthrottle_without_retry_after = true", MD5, THROTTLED).await;
    let (code, v, err) = conformance(&h, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(with_verdict(&v, "fail"), BTreeSet::from(["throttling-retry-after".to_string()]), "{v:#}");
    let t = check(&v, "throttling-retry-after");
    assert!(t["observed"].as_str().unwrap().contains("throttled message(s) broke the rule"), "{t:#}");
    let ev = t["evidence"].as_array().unwrap();
    assert!(ev.iter().any(|e| e["what"].as_str().unwrap().contains("HTTP 503 without Retry-After")), "{t:#}");
    assert!(t["windows"].as_str().unwrap().contains("its own retry schedule"), "{t:#}");
}

/// Without throttling the check has nothing to judge, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_throttles_leaves_the_throttling_check_not_applicable() {
    let (h, _dir) = start(r#"preset = "standard""#).await;
    let (code, v, err) = conformance(&h, &["--only", "copes"]).await;
    assert_eq!(code, 0, "{err}");
    let t = check(&v, "throttling-retry-after");
    assert_eq!(t["verdict"], "not-applicable", "{t:#}");
    assert_eq!(t["observed"], "the server never answered HTTP 429 or 503 during the run");
    // The default server trusts the TLS client certificate and does not check the MD5 Cred.
    let md5 = check(&v, "md5-challenge");
    assert_eq!(md5["verdict"], "not-applicable", "{md5:#}");
    assert!(md5["observed"].as_str().unwrap().contains("does not authenticate by the MD5 Cred"), "{md5:#}");
}

/// `--server`: a device that never enrolled talks to the management URL directly. The
/// enrollment checks and those that need the enrollment's credentials are not applicable,
/// each with its reason; the rest pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mode_grades_a_pre_provisioned_device() {
    let (h, _dir) = start_with(r#"preset = "standard""#, "auth = \"none\"\n", THROTTLED).await;
    let (url, ca) = (h.management_url(), tls_ca(&h));
    let (code, out, err) = mdmsim_async(&["conformance", "--server", &url, "--ca-cert", &ca, "--json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(with_verdict(&v, "fail"), BTreeSet::new(), "{v:#}\n{err}");
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["target"], url.as_str());
    let enrollment: Vec<&Value> =
        v["checks"].as_array().unwrap().iter().filter(|c| c["group"] == "enrollment").collect();
    assert_eq!(enrollment.len(), 7, "{v:#}");
    for c in enrollment {
        assert_eq!(c["verdict"], "not-applicable", "{c:#}");
        assert_eq!(c["observed"], "no enrollment in this run (--server): give --discovery", "{c:#}");
    }
    let mut na = with_verdict(&v, "not-applicable");
    na.retain(|id| !check(&v, id)["group"].eq("enrollment"));
    let want = ["md5-challenge", "md5-rekey", "signed-message"];
    assert_eq!(na, want.into_iter().map(String::from).collect(), "{v:#}");
    let signed = check(&v, "signed-message");
    assert!(signed["observed"].as_str().unwrap().contains("no key to sign with"), "{signed:#}");
    for id in ["md5-challenge", "md5-rekey"] {
        let c = check(&v, id);
        assert!(c["observed"].as_str().unwrap().contains("the device holds no MD5 credentials"), "{c:#}");
    }
    assert_eq!(check(&v, "throttling-retry-after")["verdict"], "pass", "{v:#}");
    assert_eq!(check(&v, "large-object-from-device")["verdict"], "pass", "{v:#}");
}

/// A server that refuses a bad Cred with a bare HTTP 401 (no SyncML Chal, so no NextNonce)
/// fails the challenge check only; with no challenge to carry over, the rekey check is not
/// applicable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_http_401_fails_the_md5_challenge_check_only() {
    let (h, _dir) = start_with("preset = \"standard\"\nauth_http_401 = true", MD5, "").await;
    let (code, v, err) = conformance(&h, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(with_verdict(&v, "fail"), BTreeSet::from(["md5-challenge".to_string()]), "{v:#}");
    let c = check(&v, "md5-challenge");
    let observed = c["observed"].as_str().unwrap();
    assert!(observed.starts_with("the stale Cred got a bare HTTP error, no SyncML Chal to answer"), "{c:#}");
    assert!(observed.contains("HTTP 401"), "{c:#}");
    let ev = c["evidence"].as_array().unwrap();
    assert_eq!((ev[0]["from"].as_str(), ev[0]["msg_id"].as_str()), (Some("device"), Some("1")));
    assert!(ev[0]["what"].as_str().unwrap().contains("a nonce the server never gave"), "{c:#}");
    let rekey = check(&v, "md5-rekey");
    assert_eq!(rekey["verdict"], "not-applicable");
    assert_eq!(rekey["observed"], "no usable challenge came, so no NextNonce to carry over");
}
