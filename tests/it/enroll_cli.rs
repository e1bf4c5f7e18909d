//! `mdmsim enroll` / `sync` / `unenroll` end to end against the embedded reference server
//! (HTTPS on 127.0.0.1 with its own CA, passed with `--ca-cert`): the client certificate the
//! server issued is what it trusts the sessions by, the provisioned policies are in the tree,
//! MD5 app-layer auth carries its nonce from session to session and follows a rekey, both
//! unenrollment paths wipe the device, a refused enrollment leaves nothing behind, and the
//! private key (0600) never shows in output, transcripts or the store.

use std::path::{Path, PathBuf};

use mdmsim::runner::store::Store;
use mdmsim::server::{self, AuthMethod, Config, ServerHandle, ServerOptions};

use super::support::{mdmsim_async, tree_value};

/// The reference server on 127.0.0.1 with `config` (TOML; `None` = the shipped default).
async fn start(config: Option<&str>) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOptions::local(dir.path().join("server"));
    if let Some(text) = config {
        let file = dir.path().join("server.toml");
        std::fs::write(&file, text).unwrap();
        opts.config = Config::parse(&std::fs::read_to_string(&file).unwrap(), &file.display().to_string()).unwrap();
    }
    (server::start(opts).await.unwrap(), dir)
}

struct Cli {
    state: PathBuf,
    ca: String,
    discovery: String,
}

impl Cli {
    fn new(h: &ServerHandle, dir: &Path) -> Cli {
        Cli { state: dir.join("state"), ca: h.ca_file.display().to_string(), discovery: h.discovery_url() }
    }

    fn state(&self) -> String {
        self.state.display().to_string()
    }

    async fn enroll(&self, password: &str, seed: u64, extra: &[&str]) -> (i32, String, String) {
        let (state, seed) = (self.state(), seed.to_string());
        let mut args = vec![
            "enroll",
            "--state",
            &state,
            "--discovery",
            &self.discovery,
            "--email",
            "demo@mdmsim.test",
            "--password",
            password,
            "--ca-cert",
            &self.ca,
            "--seed",
            &seed,
        ];
        args.extend_from_slice(extra);
        mdmsim_async(&args).await
    }

    async fn sync(&self, extra: &[&str]) -> (i32, String, String) {
        let state = self.state();
        let mut args = vec!["sync", "--state", &state, "--ca-cert", &self.ca];
        args.extend_from_slice(extra);
        mdmsim_async(&args).await
    }

    fn key_file(&self, id: &str) -> PathBuf {
        self.state.join("enrollments").join(id).join("device.key")
    }
}

/// Every file below `dir`, as bytes.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_then_sync_is_trusted_by_the_client_certificate_and_applies_the_policies() {
    let (h, dir) = start(None).await;
    let cli = Cli::new(&h, dir.path());
    let transcript = dir.path().join("transcript");
    let t = transcript.display().to_string();
    let (code, out, err) = cli.enroll("demo", 11, &["--transcript", &t]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    let id = lines[0].to_string();
    assert_eq!(id.len(), 32, "{out}");
    assert_eq!(lines[1], h.management_url(), "{out}");
    assert!(err.contains("post-enrollment session") && err.contains("trigger enrollment"), "{err}");

    // The server issued the certificate and trusted the post-enrollment session by it.
    let rec = h.device(&id).expect("the server knows the device");
    let enrollment = rec.enrollment.as_ref().expect("enrolled at the server");
    assert_eq!(enrollment.user, "demo@mdmsim.test");
    assert_eq!(rec.checkins.len(), 1);
    assert_eq!(rec.checkins[0].auth, AuthMethod::Certificate);
    assert!(rec.checkins[0].completed);

    // The provisioned DMClient Poll values are in the tree (from the provisioning document).
    let poll = "./Vendor/MSFT/DMClient/Provider/mdmsim/Poll";
    assert_eq!(tree_value(&cli.state, &format!("{poll}/NumberOfFirstRetries")), "8");
    assert_eq!(tree_value(&cli.state, &format!("{poll}/IntervalForSecondSetOfRetries")), "60");
    assert_eq!(tree_value(&cli.state, "./Vendor/MSFT/DMClient/Provider/mdmsim/UPN"), "demo@mdmsim.test");
    assert_eq!(tree_value(&cli.state, "./Vendor/MSFT/DMClient/Provider/mdmsim/ManagementServiceAddress"), lines[1]);

    // A later sync presents the same certificate (mTLS) and the server applies its policies.
    let t2 = dir.path().join("transcript2").display().to_string();
    let (code, sout, serr) = cli.sync(&["--transcript", &t2]).await;
    assert_eq!(code, 0, "{sout}\n{serr}");
    let rec = h.device(&id).unwrap();
    assert_eq!(rec.checkins.len(), 2);
    assert!(rec.checkins.iter().all(|c| c.auth == AuthMethod::Certificate && c.completed), "{:?}", rec.checkins);
    assert_eq!(rec.settings.get(&format!("{poll}/NumberOfFirstRetries")).map(String::as_str), Some("8"));
    assert!(rec.findings.is_empty(), "{:?}", rec.findings);

    // The key: owner-only, and nowhere else (output, transcripts, the store's records).
    let key_path = cli.key_file(&id);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let key = std::fs::read_to_string(&key_path).unwrap();
    assert!(key.contains("PRIVATE KEY"));
    let body_lines: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(body_lines.len() > 10);
    for needle in [body_lines[3], body_lines[body_lines.len() / 2], "PRIVATE KEY"] {
        for text in [&out, &err, &sout, &serr] {
            assert!(!text.contains(needle), "the key shows in the output");
        }
        let mut files = all_files(&transcript);
        files.extend(all_files(Path::new(&t2)));
        files.extend(all_files(&cli.state.join("db")));
        assert!(files.len() > 3);
        for (path, bytes) in files {
            assert!(!contains(&bytes, needle), "the key shows in {}", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_names_the_soap_fault_and_leaves_no_device() {
    let (h, dir) = start(None).await;
    let cli = Cli::new(&h, dir.path());
    let (code, out, err) = cli.enroll("not-the-password", 12, &[]).await;
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(err.contains("enrollment failed") && err.contains("SOAP fault"), "{err}");
    assert!(err.contains("0x8018000"), "the fault's HRESULT is named: {err}");
    assert!(out.is_empty(), "{out}");
    let store = Store::open(&cli.state).unwrap();
    assert!(store.ids().unwrap().is_empty());
    drop(store);
    assert!(all_files(&cli.state.join("enrollments")).is_empty());
    let (code, _, err) = cli.sync(&[]).await;
    assert_eq!(code, 5, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_app_auth_carries_the_next_nonce_and_follows_a_rekey() {
    let config = r#"
provider_id = "mdmsim"
[[users]]
name = "demo@mdmsim.test"
password = "demo"
[management]
auth = "md5"
[dmclient.poll]
NumberOfFirstRetries = 4
"#;
    let (h, dir) = start(Some(config)).await;
    let cli = Cli::new(&h, dir.path());
    let (code, out, err) = cli.enroll("demo", 13, &[]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let id = out.lines().next().unwrap().to_string();
    let (code, out, err) = cli.sync(&[]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let rec = h.device(&id).unwrap();
    assert_eq!(rec.checkins.len(), 2);
    assert!(rec.checkins.iter().all(|c| c.auth == AuthMethod::Md5 && c.completed), "{:?}", rec.checkins);
    assert!(rec.findings.is_empty(), "{:?}", rec.findings);

    // Spoil the stored nonce: the server refuses the Cred with 401 and a Chal, the device
    // answers it in the same session, and the next session uses the Chal's nonce at once.
    {
        let store = Store::open(&cli.state).unwrap();
        let mut d = store.load(Some(&id)).unwrap();
        let uid = mdmsim::enroll::account_uid("mdmsim");
        d.tree.set_value(&format!("SyncML/DMAcc/{uid}/AppAuth/CLCRED/AAuthData"), "c3BvaWx0");
        d.tree.commit();
        store.save(&d).unwrap();
    }
    let t3 = dir.path().join("t3");
    let (code, out, err) = cli.sync(&["--transcript", &t3.display().to_string()]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let first_answer = std::fs::read_to_string(t3.join("001-server.xml")).unwrap();
    assert!(first_answer.contains("<Data>401</Data>") && first_answer.contains("NextNonce"), "{first_answer}");
    let t4 = dir.path().join("t4");
    let (code, out, err) = cli.sync(&["--transcript", &t4.display().to_string()]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let first_answer = std::fs::read_to_string(t4.join("001-server.xml")).unwrap();
    assert!(!first_answer.contains("<Data>401</Data>"), "the Chal's nonce was not kept: {first_answer}");
    let rec = h.device(&id).unwrap();
    assert_eq!(rec.checkins.len(), 4);
    assert!(rec.checkins.iter().all(|c| c.auth == AuthMethod::Md5 && c.completed), "{:?}", rec.checkins);
    assert_eq!(rec.findings.len(), 1, "only the spoiled nonce: {:?}", rec.findings);

    // A rekey through DMAcc Replace is stored and used from the next session on.
    assert!(h.request_rekey(&id));
    for _ in 0..2 {
        let (code, out, err) = cli.sync(&[]).await;
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let rec = h.device(&id).unwrap();
    assert_eq!(rec.checkins.len(), 6);
    assert!(rec.checkins.iter().all(|c| c.auth == AuthMethod::Md5 && c.completed), "{:?}", rec.checkins);
    assert_eq!(rec.findings.len(), 1, "{:?}", rec.findings);
    let rekeyed = rec.results.iter().any(|r| {
        r.cmd == "Replace" && r.status == 200 && r.loc_uri.as_deref().is_some_and(|u| u.ends_with("AAuthSecret"))
    });
    assert!(rekeyed, "{:?}", rec.results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_initiated_unenroll_wipes_the_device_and_later_syncs_are_refused() {
    let config = r#"
provider_id = "mdmsim"
[[users]]
name = "demo@mdmsim.test"
password = "demo"
[management]
unenroll = true
[dmclient.poll]
NumberOfFirstRetries = 4
"#;
    let (h, dir) = start(Some(config)).await;
    let cli = Cli::new(&h, dir.path());
    let (code, out, err) = cli.enroll("demo", 14, &[]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let id = out.lines().next().unwrap().to_string();
    let mut wiped = err.contains("unenrolled the device");
    for _ in 0..6 {
        if wiped {
            break;
        }
        let (code, out, err) = cli.sync(&[]).await;
        assert_eq!(code, 0, "{out}\n{err}");
        wiped = err.contains("the server unenrolled device");
    }
    assert!(wiped, "the server never unenrolled the device: {:?}", h.device(&id));
    let rec = h.device(&id).unwrap();
    assert!(rec.unenrolled);
    assert!(rec.results.iter().any(|r| r.cmd == "Exec" && r.status == 200), "{:?}", rec.results);
    assert!(!cli.key_file(&id).exists());
    assert!(!cli.state.join("enrollments").join(&id).exists());

    let (code, out, err) = cli.sync(&[]).await;
    assert_eq!(code, 5, "{out}\n{err}");
    assert!(err.contains(&format!("device {id} was unenrolled by the server")), "{err}");
    assert!(err.contains("mdmsim enroll"), "{err}");
    // The enrollment's tree values are gone too.
    let (code, out, _) = mdmsim_async(&["tree", "--state", &cli.state(), "./SyncML/DMAcc", "--json"]).await;
    assert!(code != 0 || !out.contains("AAuth"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_unenroll_sends_alert_1226_and_wipes_the_device() {
    let (h, dir) = start(None).await;
    let cli = Cli::new(&h, dir.path());
    let (code, out, err) = cli.enroll("demo", 15, &[]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let id = out.lines().next().unwrap().to_string();
    assert!(cli.key_file(&id).exists());

    let (code, out, err) = mdmsim_async(&["unenroll", "--state", &cli.state(), "--ca-cert", &cli.ca]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("{id}: unenrolled (the server was told)")), "{out}");
    let rec = h.device(&id).unwrap();
    assert!(rec.unenrolled, "the server saw the unenrollment alert");
    let last = rec.checkins.last().unwrap();
    assert_eq!(last.auth, AuthMethod::Certificate);
    assert!(
        last.alerts
            .iter()
            .any(|a| a.code == 1226 && a.type_.as_deref() == Some("com.microsoft:mdm.unenrollment.userrequest")),
        "{:?}",
        last.alerts
    );
    assert!(!cli.key_file(&id).exists());

    let (code, _, err) = cli.sync(&[]).await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("unenrolled by the user"), "{err}");
    let (code, _, err) = mdmsim_async(&["unenroll", "--state", &cli.state()]).await;
    assert_eq!(code, 5, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_enrollment_then_sync() {
    let config = "provider_id = \"mdmsim\"\n[enrollment]\ntoken_auth = true\ntokens = ['{\"type\":1,\"payload\":{\"orbit_node_key\":\"k\"}}']\n";
    let (h, dir) = start(Some(config)).await;
    let cli = Cli::new(&h, dir.path());
    let state = cli.state();
    let base = ["enroll", "--state", &state, "--discovery", &cli.discovery, "--email", "demo@mdmsim.test"];
    let with = |token: &'static str, seed: &'static str| {
        let mut a = base.to_vec();
        a.extend_from_slice(&["--token", token, "--ca-cert", &cli.ca, "--seed", seed, "--enrollment-type", "device"]);
        a
    };
    let (code, out, err) = mdmsim_async(&with("{\"type\":2}", "16")).await;
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(err.contains("SOAP fault") && err.contains("not accepted"), "{err}");
    let (code, out, err) = mdmsim_async(&with("{\"type\":1,\"payload\":{\"orbit_node_key\":\"k\"}}", "17")).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let id = out.lines().next().unwrap().to_string();
    let enrollment = h.device(&id).unwrap().enrollment.unwrap();
    assert_eq!((enrollment.user.as_str(), enrollment.enrollment_type.as_str()), ("token", "Device"));
    let (code, out, err) = cli.sync(&[]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(h.device(&id).unwrap().checkins.iter().all(|c| c.auth == AuthMethod::Certificate));
}
