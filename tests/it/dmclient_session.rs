//! DMClient settings that change how sessions go, end to end through `mdmsim sync` / `run`
//! against the scripted server: message signing, keep-alive alerts, the server address list
//! and self-unenrollment after lost contact (the DMClient CSP page).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mdmsim::device::Enrollment;
use mdmsim::enroll::EnrollmentType;
use mdmsim::runner::store::Store;
use mdmsim::syncml::{Command, Item, ItemCmd};

use crate::support::mdmsim;
use crate::support::server::{Reply, Server, msg};

const PROVIDER: &str = "./Vendor/MSFT/DMClient/Provider/MS%20DM%20Server";

fn replace(cmd_id: &str, uri: &str, data: &str) -> Command {
    Command::Replace(ItemCmd {
        cmd_id: cmd_id.into(),
        items: vec![Item { target: Some(uri.into()), data: Some(data.into()), ..Item::default() }],
        ..ItemCmd::default()
    })
}

fn get(cmd_id: &str, uri: &str) -> Command {
    Command::Get(ItemCmd {
        cmd_id: cmd_id.into(),
        items: vec![Item { target: Some(uri.into()), ..Item::default() }],
        ..ItemCmd::default()
    })
}

fn exec(cmd_id: &str, uri: &str) -> Command {
    Command::Exec(ItemCmd {
        cmd_id: cmd_id.into(),
        items: vec![Item { target: Some(uri.into()), ..Item::default() }],
        ..ItemCmd::default()
    })
}

/// `device new` with a `[behaviour]` table; returns the id.
fn new_device(state: &Path, server: &str, behaviour: &str) -> String {
    crate::support::new_device_behaving(state, server, 41, behaviour)
}

fn sync(state: &Path, extra: &[&str]) -> (i32, String, String) {
    let state = state.to_string_lossy();
    let mut args = vec!["sync", "--state", &state, "--timeout", "10"];
    args.extend_from_slice(extra);
    mdmsim(&args)
}

fn has_alert_1224_request_pending(body: &str) -> bool {
    body.contains("<Data>1224</Data>") && body.contains("com.microsoft.mdm.requestpending")
}

// ---------------------------------------------------------------------------------------------
// RequireMessageSigning
// ---------------------------------------------------------------------------------------------

/// A self-signed RSA certificate and its key (PEM), like the one enrollment issues.
fn identity(cn: &str) -> (String, String) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(9).unwrap().to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
    let key = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert, key)
}

/// Gives a stored device enrollment material as `mdmsim enroll` leaves it (key, certificate,
/// roots in a folder of the state directory); returns the certificate PEM.
fn give_enrollment(state: &Path, id: &str) -> String {
    let (cert, key) = identity(id);
    let rel = Path::new("enrollments").join(id);
    let dir = state.join(&rel);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("device.key"), &key).unwrap();
    std::fs::write(dir.join("device.crt"), &cert).unwrap();
    std::fs::write(dir.join("roots.pem"), "").unwrap();
    let store = Store::open(state).unwrap();
    let mut device = store.load(Some(id)).unwrap();
    device.enrollment = Some(Enrollment {
        enrollment_type: EnrollmentType::Full,
        discovery_url: "https://enterpriseenrollment.example/EnrollmentServer/Discovery.svc".into(),
        user: "user@example.com".into(),
        account_uid: "0".into(),
        client_cert_thumbprint: "00".into(),
        files: Some(rel),
        findings: Vec::new(),
    });
    store.save(&device).unwrap();
    cert
}

/// Verifies a base64 CMS detached signature over `body` with the openssl command, trusting
/// the device's (self-signed) certificate.
fn openssl_verifies(sig_b64: &str, body: &str, cert_pem: &str, dir: &Path) -> bool {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD.decode(sig_b64).expect("the signature header is base64");
    let (sig, content, cert) = (dir.join("sig.der"), dir.join("body.xml"), dir.join("cert.pem"));
    std::fs::write(&sig, der).unwrap();
    std::fs::write(&content, body).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any", "-out", "/dev/null"])
        .arg("-in")
        .arg(&sig)
        .arg("-content")
        .arg(&content)
        .arg("-CAfile")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    if !out.status.success() {
        eprintln!("openssl cms -verify: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

#[test]
fn require_message_signing_signs_every_message_of_the_next_session() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let uri = format!("{PROVIDER}/RequireMessageSigning");
    let server = Server::start(vec![
        // Session 1: the server requires signing from now on.
        Reply::Syncml(msg(vec![replace("2", &uri, "true")])),
        Reply::Empty,
        // Session 2: two device messages, both must be signed.
        Reply::Syncml(msg(vec![get("2", "./DevInfo/Man")])),
        Reply::Empty,
    ]);
    let id = new_device(&state, &server.url, "");
    let cert = give_enrollment(&state, &id);

    let (code, _, err) = sync(&state, &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = sync(&state, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("unsigned-message"), "{out}");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    // Session 1 started before the setting: unsigned.
    assert!(reqs[0].header("MDM-Signature").is_none());
    for (i, r) in reqs[2..].iter().enumerate() {
        let sig = r.header("MDM-Signature").unwrap_or_else(|| panic!("message {} of session 2 is unsigned", i + 1));
        assert!(openssl_verifies(sig, &r.body, &cert, dir.path()), "signature of message {} does not verify", i + 1);
        // The signature belongs to this very body: it does not verify another message.
        let other = &reqs[2 + (1 - i)].body;
        assert!(
            !openssl_verifies(sig, other, &cert, dir.path()),
            "signature of message {} verifies another body",
            i + 1
        );
    }
}

#[test]
fn require_message_signing_without_enrollment_key_sends_unsigned_with_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let uri = format!("{PROVIDER}/RequireMessageSigning");
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![replace("2", &uri, "true")])),
        Reply::Empty,
        Reply::Syncml(msg(vec![])),
    ]);
    new_device(&state, &server.url, "signature_header = \"MS-Signature\"");
    assert_eq!(sync(&state, &[]).0, 0);
    let (code, out, err) = sync(&state, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("finding:   unsigned-message"), "{out}");
    assert!(out.contains("MS-Signature"), "{out}");
    assert!(server.requests().iter().all(|r| r.header("MS-Signature").is_none()));
}

// ---------------------------------------------------------------------------------------------
// EnableOmaDmKeepAliveMessage
// ---------------------------------------------------------------------------------------------

#[test]
fn slow_exec_sends_request_pending_alerts_before_the_reply_when_keep_alive_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let keep = format!("{PROVIDER}/EnableOmaDmKeepAliveMessage");
    let slow = "./Vendor/MSFT/EnterpriseModernAppManagement/AppManagement/UpdateScan";
    let server = Server::start(vec![
        // Session 1: keep-alive still off; the slow Exec is answered directly.
        Reply::Syncml(msg(vec![exec("2", slow)])),
        Reply::Empty,
        // Session 2: the server turns keep-alive on, then sends the slow Exec.
        Reply::Syncml(msg(vec![replace("2", &keep, "true")])),
        Reply::Syncml(msg(vec![exec("3", slow)])),
        // Two keep-alive messages (2500 ms of Exec, one per 1000 ms), each answered.
        Reply::Syncml(msg(vec![])),
        Reply::Syncml(msg(vec![])),
        Reply::Empty,
    ]);
    new_device(&state, &server.url, "slow_exec_ms = 2500\nkeepalive_after_ms = 1000");

    let (code, out, err) = sync(&state, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("keep-alive"), "{out}");
    let first = server.device_messages();
    assert_eq!(first.len(), 2);
    assert!(!has_alert_1224_request_pending(&server.requests()[1].body));

    let (code, out, err) = sync(&state, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("keep-alive: 2 request-pending alert(s) sent"), "{out}");
    let reqs = server.requests();
    let msgs = server.device_messages();
    assert_eq!(msgs.len(), 7, "package 1, reply, two keep-alives, reply of the Exec");
    // Messages 3 and 4 of session 2 are keep-alives: SyncHdr status and the 1224 alert, no Final.
    for k in [4, 5] {
        assert!(has_alert_1224_request_pending(&reqs[k].body), "{}", reqs[k].body);
        assert!(!msgs[k].body.final_);
        let alert = msgs[k].body.commands.iter().find_map(|c| match c {
            Command::Alert(a) => Some(a),
            _ => None,
        });
        assert_eq!(alert.unwrap().items[0].data.as_deref(), Some("1"));
        assert!(!msgs[k].body.commands.iter().any(|c| matches!(c, Command::Status(s) if s.cmd == "Exec")));
    }
    // The real reply comes after them, with the Exec's status referring to server message 2.
    let last = &msgs[6];
    assert!(last.body.final_);
    let exec_status = last
        .body
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Status(s) if s.cmd == "Exec" => Some(s),
            _ => None,
        })
        .expect("the reply holds the Exec's status");
    assert_eq!((exec_status.msg_ref.as_str(), exec_status.cmd_ref.as_str()), ("2", "3"));
    assert!(!has_alert_1224_request_pending(&reqs[6].body));
}

// ---------------------------------------------------------------------------------------------
// Server address list
// ---------------------------------------------------------------------------------------------

/// A 127.0.0.1 port nobody listens on (bound, then released).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Listens on `port` and counts the connections made to it (never answers), until dropped.
struct Counter {
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Counter {
    fn start(port: u16) -> Counter {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let (hits, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: stops when dropped, and after 60 s at most.
            for _ in 0..6000 {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                match l.accept() {
                    Ok(_) => {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Counter { hits, stop }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn address_list_moves_past_a_dead_server_caches_the_one_that_answered_and_starts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = dead_port();
    let dead = format!("http://127.0.0.1:{port}/MDM.svc");
    let list_uri = format!("{PROVIDER}/ManagementServerAddressList");
    let server = Server::start(vec![]);
    let list = format!("<{dead}><{}>", server.url);
    server.then(vec![
        // Session 1 (to ADDR): the server provisions a list whose first entry is down.
        Reply::Syncml(msg(vec![replace("2", &list_uri, &list)])),
        Reply::Empty,
        // Session 2: through the list, after the dead entry's retries.
        Reply::Syncml(msg(vec![get("2", "./DevInfo/Man")])),
        Reply::Empty,
        // Session 3: straight to the cached server.
        Reply::Syncml(msg(vec![])),
    ]);
    let id = new_device(&state, &server.url, "conn_retry_freq = 2");

    assert_eq!(sync(&state, &[]).0, 0);
    let (code, out, err) = sync(&state, &[]);
    assert_eq!(code, 0, "session through the list failed: {out}{err}");
    // ADDR is the scripted server too, so the cached URL equals it: no `server:` line.
    assert!(!out.contains("  server:"), "{out}");
    assert_eq!(server.requests().len(), 4);
    let cache = Store::open(&state).unwrap().load(Some(&id)).unwrap().server_cache.expect("a cached server");
    assert_eq!(cache.url, server.url);
    assert_eq!(cache.list, list);

    // The first entry comes alive (but never answers): the device must not even connect to it.
    let counter = Counter::start(port);
    let (code, out, err) = sync(&state, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counter.hits.load(Ordering::SeqCst), 0, "the device tried the first entry again");
    assert_eq!(server.requests().len(), 5);
}

#[test]
fn address_list_of_dead_servers_only_is_unreachable_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (a, b) = (dead_port(), dead_port());
    let list = format!("<http://127.0.0.1:{a}/MDM.svc><http://127.0.0.1:{b}/MDM.svc>");
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![replace("2", &format!("{PROVIDER}/ManagementServerAddressList"), &list)])),
        Reply::Empty,
    ]);
    let id = new_device(&state, &server.url, "conn_retry_freq = 1");
    assert_eq!(sync(&state, &[]).0, 0);
    let (code, _, err) = sync(&state, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{b}")), "the error names the last address tried: {err}");
    // Nothing answered: the cache still holds what worked before (ADDR, the
    // ManagementServiceAddress list of session 1), never a dead address.
    let cache = Store::open(&state).unwrap().load(Some(&id)).unwrap().server_cache.expect("session 1 was cached");
    assert_eq!(cache.url, server.url);
}

// ---------------------------------------------------------------------------------------------
// NumberOfDaysAfterLostContactToUnenroll
// ---------------------------------------------------------------------------------------------

#[test]
fn a_device_out_of_contact_for_longer_than_the_configured_days_unenrolls_itself() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![replace("2", &format!("{PROVIDER}/NumberOfDaysAfterLostContactToUnenroll"), "2")])),
        Reply::Empty,
    ]);
    let id = new_device(&state, &server.url, "conn_retry_freq = 1");
    assert_eq!(sync(&state, &[]).0, 0);
    // The server goes away for good.
    drop(server);

    // The virtual clock starts just after the device's creation (its last contact as far as
    // the run knows) and runs four days; the device gives up after two.
    let start = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let st = state.to_string_lossy();
    let start_s = start.to_rfc3339();
    let (code, out, err) = mdmsim(&["run", "--state", &st, "--clock", "virtual", "--start", &start_s, "--until", "4d"]);
    let line =
        out.lines().find(|l| l.contains("unenrolled:")).unwrap_or_else(|| panic!("no unenroll record:\n{out}{err}"));
    assert!(line.contains(&id), "{line}");
    let at: chrono::DateTime<chrono::Utc> = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!(at > start + chrono::TimeDelta::days(1) && at <= start + chrono::TimeDelta::days(2), "{line}");
    // No session after the unenrollment; the run itself ends normally or with the failed
    // sessions of the days without server (exit 3), never with a usage or state error.
    assert!(!out.lines().skip_while(|l| !l.contains("unenrolled:")).skip(1).any(|l| l.contains(&id)), "{out}");
    assert!(out.contains("1 unenrolled"), "{out}");
    assert!(code == 0 || code == 3, "{out}{err}");

    let (code, _, err) = sync(&state, &[]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("losing contact"), "{err}");
}
