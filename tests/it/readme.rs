//! The README's examples run as written: every `sh` block marked
//! `<!-- README test: ... -->` is run, line by line, through `sh -c` in a fresh folder (with the
//! repository's `fixtures/` and `scenarios/` linked in and the built `mdmsim` first on PATH).
//! A `mdmsim server ... &` line starts the reference server in the background on a free port
//! (the README's port is replaced by it everywhere in the block); every other command must exit
//! 0. Blocks that need your own server (`mdm.example.test`) or a toolchain are not marked.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// The marked blocks: (line of the fence, commands with their continuation lines joined).
fn marked_blocks(readme: &str) -> Vec<(usize, Vec<String>)> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].starts_with("<!-- README test:") && lines.get(i + 1) == Some(&"```sh") {
            let fence = i + 2;
            let mut cmds = Vec::new();
            let mut current = String::new();
            let mut j = i + 2;
            while j < lines.len() && lines[j] != "```" {
                let line = lines[j];
                // A comment after the command (the README's `# ...` notes), then continuations.
                let code = match line.find("  #") {
                    Some(k) => &line[..k],
                    None => line,
                };
                let code = code.trim_end();
                if code.trim_start().starts_with('#') || code.trim().is_empty() {
                    j += 1;
                    continue;
                }
                match code.strip_suffix('\\') {
                    Some(part) => current.push_str(part),
                    None => {
                        current.push_str(code);
                        cmds.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
                        current.clear();
                    }
                }
                j += 1;
            }
            blocks.push((fence, cmds));
            i = j;
        }
        i += 1;
    }
    blocks
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mdmsim server ...` and waits for its banner.
fn start_server(dir: &Path, path: &str, line: &str) -> Background {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {line}"))
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(l) if l.starts_with("Press Ctrl-C") => break,
            Ok(_) => {}
            Err(e) => panic!("{line}: no start banner ({e})"),
        }
    }
    Background(child)
}

#[test]
fn the_readme_command_blocks_run_as_written_against_the_reference_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = marked_blocks(&readme);
    assert!(blocks.len() >= 3, "marked blocks: {blocks:?}");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mdmsim")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut ran = Vec::new();
    for (fence, cmds) in blocks {
        let dir = tempfile::tempdir().unwrap();
        for shared in ["fixtures", "scenarios"] {
            std::os::unix::fs::symlink(root.join(shared), dir.path().join(shared)).unwrap();
        }
        let port = free_port().to_string();
        let mut servers = Vec::new();
        for cmd in &cmds {
            assert!(cmd.starts_with("mdmsim "), "README.md:{fence}: {cmd}");
            let cmd = cmd.replace("8443", &port).replace("8080", &port);
            if let Some(server) = cmd.strip_suffix('&') {
                let mut server = server.trim().to_string();
                if !server.contains("--listen") {
                    server.push_str(&format!(" --listen 127.0.0.1:{port}"));
                }
                servers.push(start_server(dir.path(), &path, &server));
                continue;
            }
            let out = Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .current_dir(dir.path())
                .env("PATH", &path)
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "README.md block at line {fence}: `{cmd}` exited {:?}\n{}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran.push(cmd);
        }
    }
    // The device, enrollment, scenario and transcript examples all ran.
    for needle in ["mdmsim device new", "mdmsim enroll", "mdmsim scenario run", "mdmsim transcript", "mdmsim unenroll"]
    {
        assert!(ran.iter().any(|c| c.starts_with(needle)), "{needle} not run: {ran:#?}");
    }
}
