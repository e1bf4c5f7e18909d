//! Entry points for fuzzing: one function per parser that takes arbitrary bytes, runs the parser
//! the way the product does, and checks what must hold whatever the input. The cargo-fuzz
//! targets in `fuzz/` and the corpus replay test (`tests/it/fuzz_corpus.rs`) call the same
//! functions, so a stable toolchain replays every input a nightly fuzzer kept.
//!
//! Owns no product behaviour. A broken property is a panic, which is what a fuzzer reports: a
//! decoded message that does not survive its own encoding, a failed session or a refused
//! provisioning document that leaves changes in the tree, a template the checker accepted that
//! the scheduler then refuses, a checked scenario whose devices cannot be built. Bytes become
//! text as an HTTP body does (`String::from_utf8_lossy`). Not a supported API.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use crate::device::{DEFAULT_PROVIDER_ID, Device, DeviceId, Template};
use crate::enroll::Provisioning;
use crate::session::{DeviceCx, LoginStatus, Mode, Next, SessionConfig, Trigger};
use crate::syncml::SyncMl;
use crate::tree::{Profile, Tree};

/// A fuzz entry point: any bytes in, a panic when a property breaks.
pub type Entry = fn(&[u8]);

/// Every target: its name (the file `fuzz/fuzz_targets/<name>.rs` and the corpus folder
/// `fuzz/corpus/<name>/`) and its entry point.
pub const TARGETS: &[(&str, Entry)] = &[
    ("syncml_decode", syncml_decode),
    ("session", session),
    ("scenario", scenario),
    ("template", template),
    ("provisioning", provisioning),
    ("discovery", discovery),
    ("policies", policies),
    ("rstr", rstr),
    ("webview", webview),
];

/// The entry point of the target `name`.
pub fn target(name: &str) -> Option<Entry> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Most server messages one session input feeds (the messages are separated by NUL bytes,
/// which XML text never holds).
pub const MAX_SESSION_MESSAGES: usize = 6;

/// The management server of the fuzzed devices.
const SERVER: &str = "https://mdm.example/ManagementServer/MDM.svc";

/// A fixed instant (2026-03-02 08:00 UTC): the same input always runs the same way.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_772_438_400, 0).unwrap_or_default()
}

fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// A device from the built-in template of `profile`, its tree committed.
fn device(profile: Profile, server: &str, provider_id: &str, template: &Template) -> Device {
    let mut d = Device::new(DeviceId::from_seed(1), profile, server, provider_id, template, now());
    d.tree.commit();
    d
}

/// The SyncML decoder: what it accepts it must write and read back unchanged; what it refuses
/// it must place inside the text.
pub fn syncml_decode(data: &[u8]) {
    let text = text(data);
    match crate::syncml::decode(&text) {
        Ok(msg) => round_trip(&msg),
        Err(e) => {
            assert!(e.offset() <= text.len(), "error offset {} past the end ({})", e.offset(), text.len());
            let _ = crate::syncml::line_col(&text, e.offset());
            let _ = e.to_string();
        }
    }
}

/// `decode(encode(m)) == m`.
fn round_trip(msg: &SyncMl) {
    let wire = crate::syncml::encode(msg);
    match crate::syncml::decode(&wire) {
        Ok(again) => assert_eq!(&again, msg, "decode(encode(m)) != m\n{wire}"),
        Err(e) => panic!("our own encoding does not decode: {e}\n{wire}"),
    }
}

/// A management session of a fresh win10 device fed the input as the server's messages (up to
/// [`MAX_SESSION_MESSAGES`], separated by NUL bytes; an empty one is an empty HTTP 200). The
/// session takes the first message's SessionID as its own, so that inputs get past the header
/// check into the commands. Every client message must round-trip; a failed session must leave
/// the tree exactly as it was.
pub fn session(data: &[u8]) {
    let text = text(data);
    let parts: Vec<&str> = text.split('\0').take(MAX_SESSION_MESSAGES).collect();
    let session_id = parts
        .first()
        .and_then(|p| crate::syncml::decode(p).ok())
        .map(|m| m.hdr.session_id.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "1".into());
    let mut dev = device(Profile::Win10, SERVER, DEFAULT_PROVIDER_ID, &Template::builtin(Profile::Win10));
    let before = dev.tree.clone();
    let registry = crate::csp::registry();
    let env = dev.env(now());
    let mut cx = DeviceCx { registry: &registry, state: &mut dev.tree, env: &env };
    let mut cfg = SessionConfig::new(dev.id.as_str(), SERVER, &session_id, Mode::Maintenance, Trigger::Manual);
    cfg.login_status = Some(LoginStatus::User);
    let (mut waiting, first) = crate::session::start_default(cfg, &mut cx);
    round_trip(&first);
    for part in parts {
        let next = if part.trim().is_empty() {
            Next::Finished(waiting.receive_empty(&mut cx))
        } else {
            waiting.receive(part, &mut cx)
        };
        match next {
            Next::Send(w, reply) => {
                round_trip(&reply);
                waiting = w;
            }
            Next::Finished(done) => {
                let _ = done.summary;
                return;
            }
            Next::Failed(failed) => {
                let _ = failed.error.to_string();
                assert!(*cx.state == before, "a failed session left changes in the tree: {}", failed.error);
                return;
            }
        }
    }
}

/// The scenario parser and checker (templates by built-in name only: no files are read). A
/// checked scenario must build the first device of every group.
pub fn scenario(data: &[u8]) {
    let text = text(data);
    let read = |name: &str| -> Result<String, String> { Err(format!("{name}: no template files while fuzzing")) };
    match crate::scenario::check_text(&text, "fuzz.toml", &read) {
        Ok(built) => {
            for group in &built.devices {
                if let Err(e) = group.device(0, SERVER, built.clock.start) {
                    panic!("group {} of a checked scenario cannot be built: {e}", group.name);
                }
            }
        }
        Err(e) => assert!(e.line >= 1 && e.column >= 1, "{e}"),
    }
}

/// The template parser and checker. A template it accepts must make a device, a scheduler
/// configuration and a next nightly window; a refusal must have a place in the file.
pub fn template(data: &[u8]) {
    let text = text(data);
    match Template::parse(&text, "fuzz.toml") {
        Ok(t) => {
            let profile = t.profile.unwrap_or_default();
            let full = Template::builtin(profile).overlay(&t);
            let dev = device(profile, SERVER, DEFAULT_PROVIDER_ID, &full);
            let cfg = crate::schedule::SchedulerConfig::from_settings(profile, &dev.settings, now(), 1)
                .unwrap_or_else(|e| panic!("the scheduler refuses a template the checker accepted: {e}"));
            let _ = cfg.nightly.next_after(now());
            let _ = crate::csp::dmclient::MaintenanceWindow::from_settings(&dev.settings).next_after(now());
        }
        Err(e) => {
            let lines = text.split('\n').count();
            assert!(e.line >= 1 && e.line <= lines && e.column >= 1, "{e} (the text has {lines} lines)");
        }
    }
}

/// The provisioning document parser; a document it accepts is applied to a fresh device as an
/// enrollment does, all or nothing.
pub fn provisioning(data: &[u8]) {
    let text = text(data);
    match crate::enroll::parse_provisioning(&text) {
        Ok(p) => apply(&p),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn apply(p: &Provisioning) {
    let _ = p.findings();
    let template = Template::builtin(Profile::Win10);
    let mut dev = device(Profile::Win10, &p.app.addr, &p.app.provider_id, &template);
    let before = dev.tree.clone();
    let registry = crate::csp::registry();
    let env = dev.env(now());
    let refused = p.apply(&mut Tree::new(&registry, &mut dev.tree, &env)).err();
    if let Some(e) = refused {
        assert!(dev.tree == before, "a refused provisioning document left changes in the tree: {e}");
    }
}

/// The MS-MDE2 discovery response parser.
pub fn discovery(data: &[u8]) {
    if let Err(e) = crate::enroll::parse_discover_response(&text(data)) {
        let _ = e.to_string();
    }
}

/// The MS-XCEP GetPolicies response parser.
pub fn policies(data: &[u8]) {
    if let Err(e) = crate::enroll::parse_get_policies_response(&text(data)) {
        let _ = e.to_string();
    }
}

/// The MS-WSTEP RequestSecurityTokenResponse parser, then the provisioning document it carries.
pub fn rstr(data: &[u8]) {
    match crate::enroll::parse_rstr(&text(data)) {
        Ok(doc) => provisioning(doc.as_bytes()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The Federated sign-in page reader, with and without a password.
pub fn webview(data: &[u8]) {
    let html = text(data);
    let url = "https://sts.example/adfs/ls/?appru=ms-app%3A%2F%2Fwindows.immersivecontrolpanel";
    let _ = crate::enroll::webview::read_page(&html, url, "user@example.com", Some("secret"));
    let _ = crate::enroll::webview::read_page(&html, url, "user@example.com", None);
    let _ = crate::enroll::webview::wresult_in_url(&html);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_found_by_its_name_and_takes_any_bytes() {
        for (name, f) in TARGETS {
            assert!(target(name).is_some(), "{name}");
            for input in [&b""[..], b"\0", b"\xff\xfe<", b"[[a]]\n[a]\n", b"<SyncML><SyncHdr/>"] {
                f(input);
            }
        }
        assert!(target("nope").is_none());
    }
}
