//! Output a person can read: `sync` names the LocURI of every status that is not 200,
//! `mdmsim transcript` pairs each server command with the device's answer (text and one
//! self-contained HTML page, checked in headless Chromium when it is installed), the MS-MDE2
//! exchange is in the transcript with its secrets masked, and bad transcript folders are
//! refused by name with exit 2.

use std::path::Path;

use mdmsim::syncml::{Command, Item, ItemCmd};

use super::support::server::{Reply, Server, msg};
use super::support::{mdmsim, new_device};

fn replace(id: &str, uri: &str, data: &str) -> Command {
    Command::Replace(ItemCmd {
        cmd_id: id.into(),
        items: vec![Item { data: Some(data.into()), ..Item::target(uri) }],
        ..ItemCmd::default()
    })
}

fn get(id: &str, uri: &str) -> Command {
    Command::Get(ItemCmd { cmd_id: id.into(), items: vec![Item::target(uri)], ..ItemCmd::default() })
}

/// One session with a 200 (Get), a 404 (Replace of a node that does not exist) and a 405
/// (Replace of a read-only node), written as a transcript.
fn session_with_refusals(dir: &Path) -> (String, String) {
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![
            get("7", "./DevDetail/SwV"),
            replace("8", "./Vendor/MSFT/Nope/Missing", "1"),
            replace("9", "./DevDetail/SwV", "1.0"),
        ])),
        Reply::Empty,
    ]);
    let state = dir.join("state");
    new_device(&state, &server.url, 17);
    let transcript = dir.join("t");
    let (code, out, err) =
        mdmsim(&["sync", "--state", &state.to_string_lossy(), "--transcript", &transcript.to_string_lossy()]);
    assert_eq!(code, 0, "{out}\n{err}");
    (out, transcript.to_string_lossy().into_owned())
}

#[test]
fn sync_names_the_locuri_of_every_status_that_is_not_200() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = session_with_refusals(dir.path());
    assert!(out.contains("  status 404:  Replace ./Vendor/MSFT/Nope/Missing (MsgID 1 CmdID 8) - not found"), "{out}");
    assert!(out.contains("  status 405:  Replace ./DevDetail/SwV (MsgID 1 CmdID 9) - command not allowed"), "{out}");
    assert!(!out.contains("status 200:"), "{out}");
}

#[test]
fn transcript_pairs_each_command_with_the_devices_status_as_text_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let (_, t) = session_with_refusals(dir.path());
    let (code, out, err) = mdmsim(&["transcript", &t]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("trigger manual  mode Maintenance  alert 1201 (client-initiated session)  completed"),
        "{out}"
    );
    assert!(out.contains("  MsgID 1 CmdID 7        Get      ./DevDetail/SwV  -> 200  \""), "{out}");
    assert!(out.contains("! MsgID 1 CmdID 8        Replace  ./Vendor/MSFT/Nope/Missing = \"1\"  -> 404"), "{out}");
    assert!(out.contains("! MsgID 1 CmdID 9        Replace  ./DevDetail/SwV = \"1.0\"  -> 405"), "{out}");

    let page = dir.path().join("t.html");
    let (code, out, err) = mdmsim(&["transcript", &t, "--html", &page.to_string_lossy()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with(&format!("wrote {}: 1 session(s), 3 server command(s)", page.display())), "{out}");
    let html = std::fs::read_to_string(&page).unwrap();
    for uri in ["./DevDetail/SwV", "./Vendor/MSFT/Nope/Missing"] {
        assert!(html.contains(&format!("<td class=\"uri\">{uri}</td>")), "{uri} not in the page");
    }
    assert!(html.contains("<tr class=\"bad\"><td>1</td><td>8</td><td class=\"cmd\">Replace</td>"), "{html}");
    assert!(html.contains("<td class=\"code\">404</td>") && html.contains("<td class=\"code\">405</td>"));
    for fetch in ["src=", "href=", "<link", "<script", "@import", "url("] {
        assert!(!html.contains(fetch), "the page fetches nothing when viewed: {fetch}");
    }
    chromium_renders(&page, &["./Vendor/MSFT/Nope/Missing", "404", "405"]);
}

/// Loads the page in headless Chromium (the Debian package `chromium`), takes a screenshot and
/// reads the DOM it rendered. Skipped, with a note, where Chromium is not installed.
fn chromium_renders(page: &Path, words: &[&str]) {
    let Some(bin) = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
    else {
        eprintln!("note: chromium is not installed; the page was not rendered (apt install chromium)");
        return;
    };
    let shot = page.with_extension("png");
    let url = format!("file://{}", page.display());
    let common = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600"];
    let out = std::process::Command::new(bin)
        .args(common)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "no screenshot");
    let dom = std::process::Command::new(bin).args(common).arg("--dump-dom").arg(&url).output().unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    for w in words {
        assert!(dom.contains(w), "{w} not in the rendered page");
    }
}

#[test]
fn transcript_refuses_what_is_not_a_transcript_folder_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = mdmsim(&["transcript", &empty.to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}: not a transcript folder", empty.display())), "{err}");
    let file = dir.path().join("001-client.xml");
    std::fs::write(&file, "<SyncML/>").unwrap();
    let (code, _, err) = mdmsim(&["transcript", &file.to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a file, not a transcript folder"), "{err}");
    // A message that is not SyncML and a summary that does not parse: shown, with the problem
    // named by file (and line for JSON), not a crash.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("001-server.xml"), "<html>502 Bad Gateway</html>").unwrap();
    std::fs::write(broken.join("summary.json"), "{\n \"device_id\": 5\n}").unwrap();
    let (code, out, err) = mdmsim(&["transcript", &broken.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("problem: ./001-server.xml: not SyncML"), "{out}");
    assert!(out.contains("problem: ./summary.json:2:"), "{out}");
    let page = dir.path().join("no-such-folder").join("t.html");
    let (code, _, err) = mdmsim(&["transcript", &broken.to_string_lossy(), "--html", &page.to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn enroll_writes_the_mde2_exchange_with_its_secrets_masked() {
    let server = super::support::refserver::RefServer::start_https();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t");
    let state = dir.path().join("state");
    let discovery = format!("{}/EnrollmentServer/Discovery.svc", server.base_url());
    let (code, out, err) = mdmsim(&[
        "enroll",
        "--state",
        &state.to_string_lossy(),
        "--discovery",
        &discovery,
        "--email",
        "demo@mdmsim.test",
        "--password",
        "demo",
        "--ca-cert",
        &server.ca_file().to_string_lossy(),
        "--transcript",
        &t.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let folder = t.join("enrollment");
    let mut all = String::new();
    for e in std::fs::read_dir(&folder).unwrap() {
        all.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    assert!(all.contains("RequestSecurityToken") && all.contains("wap-provisioningdoc"), "the exchange is there");
    assert!(!all.contains(">demo</"), "the password is masked");
    assert!(all.contains("PasswordText\">***</"), "the password is masked in place");
    assert!(all.contains("name=\"AAUTHSECRET\" value=\"***\""), "APPAUTH secrets are masked");
    let (code, out, err) = mdmsim(&["transcript", &t.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 session(s), 1 enrollment exchange(s)"), "{out}");
    assert!(out.contains("   2 discover  POST ") && out.contains("   4 enroll    POST "), "{out}");
    assert!(out.contains("trigger enrollment  mode Maintenance"), "{out}");
}

#[test]
fn device_list_marks_unenrolled_devices() {
    let server = Server::start(vec![Reply::Empty]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let id = new_device(&state, &server.url, 3);
    let s = state.to_string_lossy().into_owned();
    let (code, out, _) = mdmsim(&["device", "list", "--state", &s]);
    assert_eq!(code, 0);
    assert!(!out.contains("UNENROLLED"), "{out}");
    let (code, _, err) = mdmsim(&["unenroll", "--state", &s]);
    assert!(code == 0 || code == 4, "{err}");
    let (code, out, _) = mdmsim(&["device", "list", "--state", &s]);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.contains(&id)).unwrap_or_default();
    assert!(line.contains("  UNENROLLED ") && line.contains(" by the user"), "{out}");
}
