//! The command line and the state directory under conditions that used to go wrong: the state
//! directory and every file in it stay private to the user (0700 / 0600) through `device new`,
//! `enroll` and `sync`, and a looser one is named once with the fix; `--insecure` says what it
//! turns off; passwords and tokens come from files and the environment; every command gives
//! the same exit code for the same failure (HTTP 500 is 4, an unreachable server 3, a
//! transcript path that is a file 2) and `--allow-failures` opts out; a reader that closes
//! standard output early ends the command quietly; inspection commands never create state and
//! say what is wrong with the directory (missing, a file, held by another process).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mdmsim::runner::store::Store;

use crate::support::refserver::RefServer;
use crate::support::server::Server;

/// Runs the binary with `args` and exactly the credential variables in `env`; gives (exit
/// code, stdout, stderr).
fn mdmsim_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdmsim"));
    cmd.args(args).env_remove("RUST_LOG").env_remove("MDMSIM_PASSWORD").env_remove("MDMSIM_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the mdmsim binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mdmsim(args: &[&str]) -> (i32, String, String) {
    mdmsim_env(args, &[])
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `device new` in `state` pointing at `server`; the id.
fn new_device(state: &Path, server: &str, seed: u64) -> String {
    let (code, out, err) =
        mdmsim(&["device", "new", "--state", &s(state), "--server", server, "--seed", &seed.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "a new state directory is private: {err}");
    out.trim().to_string()
}

/// A loopback address nothing listens on (bound, then let go).
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/MDM.svc")
}

/// Every entry below `dir` (itself included) with its permission bits, symbolic links skipped.
#[cfg(unix)]
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        out.push((p.clone(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

/// The reference server over HTTPS with `config` (TOML), on its own runtime.
fn https_server(config: &str) -> (mdmsim::server::ServerHandle, tokio::runtime::Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut opts = mdmsim::server::ServerOptions::local(dir.path().join("server"));
    opts.config = mdmsim::server::Config::parse(config, "test.toml").unwrap();
    let handle = rt.block_on(mdmsim::server::start(opts)).unwrap();
    (handle, rt, dir)
}

// --- secrets at rest --------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn device_new_enroll_and_sync_leave_nothing_in_the_state_open_to_other_users() {
    let srv = RefServer::start_https();
    let ca = s(&srv.ca_file());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    new_device(&state, &srv.management_url(), 1);
    let discovery = srv.handle.discovery_url();
    let (code, out, err) = mdmsim(&[
        "enroll",
        "--state",
        &s(&state),
        "--discovery",
        &discovery,
        "--email",
        "demo@mdmsim.test",
        "--password",
        "demo",
        "--ca-cert",
        &ca,
        "--seed",
        "2",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let id = out.lines().next().unwrap().to_string();
    let transcript = state.join("transcript");
    let (code, out, err) =
        mdmsim(&["sync", "--state", &s(&state), "--device", &id, "--ca-cert", &ca, "--transcript", &s(&transcript)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("warning"), "{err}");

    let all = modes(&state);
    let loose: Vec<String> =
        all.iter().filter(|(_, m)| m & 0o077 != 0).map(|(p, m)| format!("{} {m:04o}", p.display())).collect();
    assert!(loose.is_empty(), "open to group or others: {loose:#?}");
    // The walk saw the sled files, the enrollment material (its key) and the transcript.
    let names: Vec<String> = all.iter().map(|(p, _)| s(p.strip_prefix(&state).unwrap())).collect();
    for wanted in ["db/conf", "db/db", &format!("enrollments/{id}/device.key"), "transcript/001-client.xml"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} not in {names:?}");
    }
    assert_eq!(all.iter().find(|(p, _)| p == &state).unwrap().1, 0o700);
}

#[cfg(unix)]
#[test]
fn a_state_directory_open_to_others_is_named_once_with_its_mode_and_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    new_device(&state, &dead_url(), 3);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(state.join("db").join("conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = mdmsim(&["device", "list", "--state", &s(&state)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    let w = warnings[0];
    assert!(w.contains(&format!("{} has mode 0750 (and 1 more)", state.display())), "{w}");
    assert!(w.contains(&format!("run `chmod -R go-rwx {}`", state.display())), "{w}");
    // The fix it names works: no warning afterwards.
    let fixed = Command::new("chmod").args(["-R", "go-rwx", &s(&state)]).status().unwrap();
    assert!(fixed.success());
    let (code, _, err) = mdmsim(&["device", "list", "--state", &s(&state)]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

// --- --insecure, passwords and tokens ----------------------------------------------------------

#[test]
fn insecure_says_that_the_certificate_is_not_checked_and_where_the_password_goes() {
    let srv = RefServer::start_https();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // No --ca-cert: only --insecure lets the enrollment through, and it says what that costs.
    let (code, out, err) = mdmsim(&[
        "enroll",
        "--state",
        &s(&state),
        "--discovery",
        &srv.handle.discovery_url(),
        "--email",
        "demo@mdmsim.test",
        "--password",
        "demo",
        "--insecure",
        "--seed",
        "4",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("--insecure")).collect();
    assert_eq!(
        warnings,
        ["mdmsim: warning: --insecure: the server's TLS certificate is not checked, so anyone on the network path \
         can pose as the server; the password or token is sent to a server whose identity is not verified"]
    );
    let (code, out, err) = mdmsim(&["sync", "--state", &s(&state), "--insecure"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("--insecure")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("the server's TLS certificate is not checked"), "{err}");
    assert!(!warnings[0].contains("password"), "no password in a session: {err}");
}

#[test]
fn passwords_and_tokens_come_from_files_and_the_environment() {
    let srv = RefServer::start_https();
    let ca = s(&srv.ca_file());
    let discovery = srv.handle.discovery_url();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        s(&p)
    };
    let enroll = |state: &str, extra: &[&str], env: &[(&str, &str)]| {
        let state = s(&dir.path().join(state));
        let mut args = vec![
            "enroll",
            "--state",
            &state,
            "--discovery",
            &discovery,
            "--email",
            "demo@mdmsim.test",
            "--ca-cert",
            &ca,
        ];
        args.extend_from_slice(extra);
        mdmsim_env(&args, env)
    };
    // The file's trailing newline is not part of the password ("demo\n" would be refused).
    let good = file("pw", "demo\n");
    let (code, out, err) = enroll("a", &["--password-file", &good, "--seed", "10"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = enroll("b", &["--seed", "11"], &[("MDMSIM_PASSWORD", "demo")]);
    assert_eq!(code, 0, "{out}\n{err}");
    // The option wins over the environment.
    let (code, out, err) = enroll("c", &["--password-file", &good, "--seed", "12"], &[("MDMSIM_PASSWORD", "wrong")]);
    assert_eq!(code, 0, "{out}\n{err}");
    // A wrong password from a file reaches the server, which refuses it (exit 4).
    let wrong = file("wrong", "nope\r\n");
    let (code, out, err) = enroll("d", &["--password-file", &wrong, "--seed", "13"], &[]);
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(err.contains("SOAP fault"), "{err}");

    // Input errors: exit 2, naming the option and the file.
    let missing = s(&dir.path().join("missing"));
    let (code, _, err) = enroll("e", &["--password-file", &missing], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("--password-file {missing}: ")), "{err}");
    let empty = file("empty", "\n");
    let (code, _, err) = enroll("e", &["--token-file", &empty], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("--token-file {empty}: empty")), "{err}");
    let (code, _, err) = enroll("e", &[], &[("MDMSIM_PASSWORD", "demo"), ("MDMSIM_TOKEN", "t")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("both MDMSIM_PASSWORD and MDMSIM_TOKEN are set"), "{err}");
    let (code, _, err) = enroll("e", &[], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--password-file") && err.contains("MDMSIM_TOKEN"), "{err}");
    let (code, _, err) = enroll("e", &["--password", "x", "--token-file", &good], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(!dir.path().join("e").exists(), "input errors create no state");

    let (code, help, _) = mdmsim(&["enroll", "--help"]);
    assert_eq!(code, 0);
    for wanted in
        ["--password-file <FILE>", "--token-file <FILE>", "MDMSIM_PASSWORD", "MDMSIM_TOKEN", "trailing newline"]
    {
        assert!(help.contains(wanted), "{wanted} not in enroll --help:\n{help}");
    }
    let (_, help, _) = mdmsim(&["scenario", "run", "--help"]);
    assert!(help.contains("--password-file <FILE>") && help.contains("--allow-failures"), "{help}");
}

#[test]
fn tokens_come_from_a_file_or_the_environment() {
    let token = r#"{"type":1,"payload":{"orbit_node_key":"k"}}"#;
    let config = format!("provider_id = \"mdmsim\"\n[enrollment]\ntoken_auth = true\ntokens = ['{token}']\n");
    let (h, _rt, _srv) = https_server(&config);
    let ca = s(&h.ca_file);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\r\n")).unwrap();
    let discovery = h.discovery_url();
    let enroll = |state: &str, extra: &[&str], env: &[(&str, &str)]| {
        let state = s(&dir.path().join(state));
        let mut args = vec![
            "enroll",
            "--state",
            &state,
            "--discovery",
            &discovery,
            "--email",
            "demo@mdmsim.test",
            "--ca-cert",
            &ca,
            "--enrollment-type",
            "device",
        ];
        args.extend_from_slice(extra);
        mdmsim_env(&args, env)
    };
    let (code, out, err) = enroll("a", &["--token-file", &s(&token_file), "--seed", "20"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = enroll("b", &["--seed", "21"], &[("MDMSIM_TOKEN", token)]);
    assert_eq!(code, 0, "{out}\n{err}");
    let enrolled: Vec<_> = h.devices().into_iter().filter_map(|d| d.enrollment).collect();
    assert_eq!(enrolled.len(), 2);
    assert!(enrolled.iter().all(|e| e.user == "token"), "both enrolled with the token");
}

// --- exit codes --------------------------------------------------------------------------------

/// A scenario with one device that reboots 10 minutes in; `outcome` is the TOML of its
/// outcome expectation.
fn scenario(dir: &Path, name: &str, outcome: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            r#"[scenario]
name = "{name}"

[[device]]
template = "win10-desktop"
id_prefix = "C1"

[clock]
start = 2026-03-02T08:00:00Z
until = "1h"

[[event]]
at = "+10m"
kind = "reboot"

[[expect]]
kind = "outcome"
{outcome}
"#
        ),
    )
    .unwrap();
    s(&path)
}

#[test]
fn http_500_is_exit_4_in_sync_run_and_scenario_run_unless_failures_are_allowed() {
    let server = Server::start(Vec::new()); // answers 500 to everything
    let dir = tempfile::tempdir().unwrap();
    let state = |n: &str| s(&dir.path().join(n));
    new_device(&dir.path().join("sync"), &server.url, 30);
    let (code, _, err) = mdmsim(&["sync", "--state", &state("sync")]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("answered HTTP 500"), "{err}");

    for (n, clock) in [("virtual", &["--clock", "virtual"][..]), ("scaled", &["--clock", "scaled", "--speed", "3600"])]
    {
        new_device(&dir.path().join(n), &server.url, 31);
        let st = state(n);
        let mut args = vec!["run", "--state", st.as_str(), "--until", "10m"];
        args.extend_from_slice(clock);
        let (code, out, err) = mdmsim(&args);
        assert_eq!(code, 4, "run --clock {n}: {out}\n{err}");
        assert!(err.contains(" failed (") && err.contains("protocol or HTTP error"), "{err}");
        assert!(err.contains("answered HTTP 500"), "{err}");
        // The same on a device that never ran (its first session fails the same way).
        let allowed = format!("{n}-allowed");
        new_device(&dir.path().join(&allowed), &server.url, 32);
        let st = state(&allowed);
        args[2] = st.as_str();
        args.push("--allow-failures");
        let (code, out, err) = mdmsim(&args);
        assert_eq!(code, 0, "run --clock {n} --allow-failures: {out}\n{err}");
        assert!(out.contains("FAILED"), "the failures are still reported: {out}");
    }

    let clean = scenario(dir.path(), "clean.toml", "clean = true");
    let (code, out, err) = mdmsim(&["scenario", "run", &clean, "--server", &server.url]);
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(err.contains("clean.toml: ") && err.contains("protocol or HTTP error"), "{err}");
    // Allowed: the expectations judge, and `clean = true` fails (exit 1).
    let (code, out, err) = mdmsim(&["scenario", "run", &clean, "--server", &server.url, "--allow-failures"]);
    assert_eq!(code, 1, "{out}\n{err}");
    // A file that expects the error is judged by its expectation alone.
    let expected = scenario(dir.path(), "expected.toml", "error = \"HTTP 500\"");
    let (code, out, err) = mdmsim(&["scenario", "run", &expected, "--server", &server.url]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn an_unreachable_server_is_exit_3_in_sync_run_and_scenario_run() {
    let url = dead_url();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    new_device(&state, &url, 40);
    let (code, _, err) = mdmsim(&["sync", "--state", &s(&state)]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = mdmsim(&["run", "--state", &s(&state), "--clock", "virtual", "--until", "1h"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("server unreachable"), "{err}");
    let file = scenario(dir.path(), "s.toml", "clean = true");
    let (code, out, err) = mdmsim(&["scenario", "run", &file, "--server", &url]);
    assert_eq!(code, 3, "{out}\n{err}");
}

#[test]
fn a_transcript_path_that_is_a_file_is_exit_2_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let url = dead_url();
    new_device(&state, &url, 50);
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let (st, f) = (s(&state), s(&file));
    let scenario = scenario(dir.path(), "s.toml", "clean = true");
    let discovery = url.replace("/MDM.svc", "/EnrollmentServer/Discovery.svc");
    let commands: [Vec<&str>; 5] = [
        vec!["sync", "--state", &st],
        vec!["run", "--state", &st, "--clock", "virtual", "--until", "1h"],
        vec!["enroll", "--state", &st, "--discovery", &discovery, "--email", "a@b.test", "--password", "p"],
        vec!["unenroll", "--state", &st],
        vec!["scenario", "run", &scenario, "--server", &url],
    ];
    for mut args in commands {
        args.extend(["--transcript", &f]);
        let (code, _, err) = mdmsim(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&format!("--transcript {f}: is a file, not a directory")), "{args:?}: {err}");
    }
}

// --- standard output closed early --------------------------------------------------------------

/// Runs the binary with standard output a pipe of one page: reads the first line (byte by
/// byte, so the rest stays in the pipe) then closes the pipe, or closes it before anything is
/// read when `first_line` is false. Gives (exit status, first line, stderr).
#[cfg(target_os = "linux")]
fn with_early_close(args: &[&str], first_line: bool) -> (std::process::ExitStatus, String, String) {
    use std::os::fd::AsRawFd as _;
    let (mut reader, writer) = std::io::pipe().unwrap();
    // SAFETY: F_SETPIPE_SZ on a pipe this function owns; a failure only leaves the default size.
    unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdmsim"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = Vec::new();
    if first_line {
        let mut byte = [0u8; 1];
        while reader.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
    }
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} still runs 60 s after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status, String::from_utf8_lossy(&line).into_owned(), err)
}

/// Exit 0, or death by SIGPIPE as a shell would report it (141), and no panic.
#[cfg(target_os = "linux")]
fn ended_quietly(args: &[&str], status: std::process::ExitStatus, err: &str) {
    use std::os::unix::process::ExitStatusExt as _;
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(status.code() == Some(0) || status.signal() == Some(libc::SIGPIPE), "{args:?}: {status:?} {err}");
}

#[cfg(target_os = "linux")]
#[test]
fn tree_device_list_and_run_end_quietly_when_the_reader_goes_away() {
    let server = RefServer::start();
    let dir = tempfile::tempdir().unwrap();
    let state = s(&dir.path().join("state"));
    // Four devices over a week print more than the pipe holds.
    for seed in 60..64 {
        new_device(Path::new(&state), &server.management_url(), seed);
    }
    let tree = ["tree", "--state", &state];
    let (status, line, err) = with_early_close(&tree, true);
    assert_eq!(line, "./DevInfo  (node)");
    ended_quietly(&tree, status, &err);

    let list = ["device", "list", "--state", &state];
    let (status, _, err) = with_early_close(&list, false);
    ended_quietly(&list, status, &err);

    let run =
        ["run", "--state", &state, "--all", "--clock", "virtual", "--start", "2026-03-02T08:00:00Z", "--until", "7d"];
    let (status, line, err) = with_early_close(&run, true);
    assert!(line.starts_with("time (UTC)  "), "the header line first: {line}");
    ended_quietly(&run, status, &err);
    // The run stopped as Ctrl-C stops it: no device started after that, the sessions under way
    // finished, and every device was saved. The store is free again.
    let (code, out, err) = mdmsim(&["device", "list", "--state", &state]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| !l.ends_with("sessions=0")), "{out}");
}

// --- the state directory -----------------------------------------------------------------------

#[test]
fn inspection_commands_never_create_state_and_say_what_is_wrong_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let m = s(&missing);
    let commands: [&[&str]; 5] = [
        &["tree", "--state", &m],
        &["device", "list", "--state", &m],
        &["sync", "--state", &m],
        &["run", "--state", &m, "--clock", "virtual", "--until", "1h"],
        &["unenroll", "--state", &m],
    ];
    for args in commands {
        let (code, out, err) = mdmsim(args);
        assert_eq!(code, 5, "{args:?}: {err}");
        assert_eq!(
            err.trim(),
            format!(
                "mdmsim: state directory {m} does not exist (create a device with `mdmsim device new` or `mdmsim enroll`)"
            ),
            "{args:?}"
        );
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(!missing.exists(), "{args:?} created the state directory");
    }

    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for args in [
        &["device", "list", "--state", &s(&file)][..],
        &["device", "new", "--state", &s(&file), "--server", "http://127.0.0.1:9/"],
    ] {
        let (code, _, err) = mdmsim(args);
        assert_eq!(code, 5, "{args:?}: {err}");
        assert_eq!(err.trim(), format!("mdmsim: {} is a file, not a state directory", file.display()), "{args:?}");
    }
}

#[test]
fn a_store_held_by_another_process_names_that_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    new_device(&state, "http://127.0.0.1:9/MDM.svc", 70);
    let held = Store::open(&state).unwrap();
    let (code, out, err) = mdmsim(&["device", "list", "--state", &s(&state)]);
    assert_eq!(code, 5, "{out}\n{err}");
    let pid = std::process::id();
    assert!(
        err.contains(&format!("state directory {} is in use by process {pid}", state.display())),
        "names this test process: {err}"
    );
    drop(held);
    let (code, _, err) = mdmsim(&["device", "list", "--state", &s(&state)]);
    assert_eq!(code, 0, "free again: {err}");
}
