//! Reading a transcript folder back: the messages `sync`, `run`, `scenario run` and `enroll`
//! wrote with `--transcript`, turned into what a server developer reads, each server command
//! paired with the device's Status, Results and data ([`read`]), rendered as text for a
//! terminal or as one self-contained HTML page ([`render`]).
//!
//! The on-disk form is the runner's (one folder per session: `NNN-client.xml`, `NNN-server.xml`,
//! the answer to client message NNN, and `summary.json`; `mdmsim run` and `scenario run` put
//! them under `<DeviceID>/<session>/`), plus the MS-MDE2 enrollment exchange in an `enrollment/`
//! folder ([`enrollment`]). Messages are decoded with the one SyncML codec; a message that does
//! not decode is shown as it is, with the decoder's error. Owns no I/O besides reading the
//! folder; does not write transcripts (the runner and `runner::enroll` do).

pub mod enrollment;
pub mod render;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::session::Summary;
use crate::syncml::{self, Command, Item, SyncMl};

pub use enrollment::{EnrollStep, EnrollmentView, mask_soap};

/// How deep below the given folder sessions are looked for (`DIR/<device>/<session>`, and one
/// more level for a scenario run's folder of folders).
const MAX_DEPTH: usize = 4;

/// A folder that cannot be read as a transcript.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// The path does not exist or is not a folder.
    #[error("{path}: {problem}")]
    NotAFolder { path: String, problem: String },
    /// The folder holds no session and no enrollment exchange.
    #[error(
        "{path}: not a transcript folder: no session folder (NNN-client.xml, NNN-server.xml, summary.json) and no enrollment/ exchange found in it or below it"
    )]
    Empty { path: String },
    /// A file of the transcript cannot be read.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// A whole transcript folder.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// The folder as given.
    pub root: String,
    /// Every session found, in device then session order.
    pub sessions: Vec<SessionView>,
    /// Every enrollment exchange found.
    pub enrollments: Vec<EnrollmentView>,
}

/// One session folder.
#[derive(Debug, Clone, Default)]
pub struct SessionView {
    /// The folder, relative to the transcript root (`.` when the root is the session).
    pub path: String,
    /// The DeviceID (from the summary, else the SyncHdr Source of the first client message).
    pub device: String,
    /// `summary.json`, when it was written and reads.
    pub summary: Option<Summary>,
    /// The device's alerts in its first message (session alert, LoginStatus, reports...).
    pub alerts: Vec<AlertView>,
    /// Every server command in order (containers and their children), with the device's answer.
    pub commands: Vec<CommandView>,
    /// The server's Statuses to the device's header and commands that are not 200.
    pub server_statuses: Vec<ServerStatus>,
    /// The messages as files, in order.
    pub messages: Vec<MessageFile>,
    /// What could not be read or paired (a summary that does not parse, a message that does
    /// not decode, a command without a Status).
    pub problems: Vec<String>,
}

/// An Alert the device sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertView {
    pub code: String,
    /// What the code means (`client-initiated session`...), when known.
    pub meaning: &'static str,
    /// Meta Type and Data of its items (`com.microsoft/MDM/LoginStatus = user`).
    pub items: Vec<String>,
}

/// One server command and the device's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandView {
    /// The server message it came in (its SyncHdr MsgID).
    pub msg_id: String,
    pub cmd_id: String,
    /// `Get`, `Replace`, `Atomic`...
    pub cmd: String,
    /// The CmdID of the Atomic or Sequence it is in.
    pub parent: Option<String>,
    /// Each item's target and the data the server sent with it.
    pub items: Vec<(String, Option<String>)>,
    /// The status code the device answered (`None`: no Status in the transcript).
    pub status: Option<u16>,
    /// The Results: source LocURI and data.
    pub results: Vec<(String, String)>,
}

impl CommandView {
    /// Whether the device's answer is a success (2xx).
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// A Status the server gave to the device's header or commands, other than 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    /// The server message it came in.
    pub msg_id: String,
    /// `SyncHdr`, `Alert`, `Replace`...
    pub cmd: String,
    pub cmd_ref: String,
    pub code: String,
}

/// One message file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFile {
    /// The client MsgID it belongs to (the server file answers client message `n`).
    pub n: u32,
    /// True for `NNN-client.xml`.
    pub client: bool,
    pub name: String,
    pub text: String,
}

/// Reads the transcript folder `dir`: every session folder and enrollment exchange in it or
/// below it.
pub fn read(dir: &Path) -> Result<Transcript, TranscriptError> {
    let shown = dir.display().to_string();
    let meta = std::fs::metadata(dir)
        .map_err(|e| TranscriptError::NotAFolder { path: shown.clone(), problem: format!("cannot open it: {e}") })?;
    if !meta.is_dir() {
        return Err(TranscriptError::NotAFolder {
            path: shown,
            problem: "is a file, not a transcript folder (give the folder passed to --transcript)".into(),
        });
    }
    let mut t = Transcript { root: shown.clone(), ..Transcript::default() };
    walk(dir, dir, 0, &mut t)?;
    if t.sessions.is_empty() && t.enrollments.is_empty() {
        return Err(TranscriptError::Empty { path: shown });
    }
    Ok(t)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TranscriptError + '_ {
    move |source| TranscriptError::Io { path: path.display().to_string(), source }
}

fn walk(root: &Path, dir: &Path, depth: usize, t: &mut Transcript) -> Result<(), TranscriptError> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(io(dir))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    let is_message = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| message_name(n).is_some());
    if entries.iter().any(|p| is_message(p) || p.file_name().is_some_and(|n| n == "summary.json")) {
        t.sessions.push(read_session(root, dir, &entries)?);
    }
    for p in entries.iter().filter(|p| p.is_dir()) {
        if p.file_name().is_some_and(|n| n == enrollment::DIR_NAME) {
            t.enrollments.push(enrollment::read(root, p)?);
        } else if depth < MAX_DEPTH {
            walk(root, p, depth + 1, t)?;
        }
    }
    Ok(())
}

/// `NNN-client.xml` / `NNN-server.xml` → (NNN, client?).
fn message_name(name: &str) -> Option<(u32, bool)> {
    let (n, rest) = name.split_once('-')?;
    if n.len() < 3 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let client = match rest {
        "client.xml" => true,
        "server.xml" => false,
        _ => return None,
    };
    Some((n.parse().ok()?, client))
}

fn relative(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
        Ok(p) => p.display().to_string(),
        Err(_) => dir.display().to_string(),
    }
}

fn read_session(root: &Path, dir: &Path, entries: &[PathBuf]) -> Result<SessionView, TranscriptError> {
    let mut s = SessionView { path: relative(root, dir), ..SessionView::default() };
    for p in entries {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
        if name == "summary.json" {
            let text = std::fs::read_to_string(p).map_err(io(p))?;
            match serde_json::from_str::<Summary>(&text) {
                Ok(sum) => s.summary = Some(sum),
                Err(e) => s.problems.push(format!(
                    "{}/summary.json:{}:{}: does not read as a session summary: {e}",
                    s.path,
                    e.line(),
                    e.column()
                )),
            }
        } else if let Some((n, client)) = message_name(name) {
            let text = std::fs::read_to_string(p).map_err(io(p))?;
            s.messages.push(MessageFile { n, client, name: name.to_string(), text });
        }
    }
    // Client message n, then the server's answer to it.
    s.messages.sort_by_key(|m| (m.n, !m.client));
    let mut decoded: Vec<(bool, SyncMl)> = Vec::new();
    for m in &s.messages {
        match syncml::decode(&m.text) {
            Ok(msg) => decoded.push((m.client, msg)),
            Err(e) => s.problems.push(format!("{}/{}: not SyncML ({e}); shown as it is", s.path, m.name)),
        }
    }
    pair(&mut s, &decoded);
    s.device = s
        .summary
        .as_ref()
        .map(|x| x.device_id.clone())
        .or_else(|| decoded.iter().find(|(c, _)| *c).map(|(_, m)| m.hdr.source.clone()))
        .unwrap_or_default();
    Ok(s)
}

/// Pairs every server command with the device's Status and Results (matched by MsgRef and
/// CmdRef, OMA DM RepPro: a Status names the message and command it answers), and collects the
/// device's alerts and the server's non-200 statuses.
fn pair(s: &mut SessionView, decoded: &[(bool, SyncMl)]) {
    let mut statuses: HashMap<(String, String), u16> = HashMap::new();
    let mut results: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
    for (client, m) in decoded {
        for c in &m.body.commands {
            match c {
                Command::Status(st) if *client => {
                    if let Ok(code) = st.data.trim().parse::<u16>() {
                        statuses.insert((st.msg_ref.clone(), st.cmd_ref.clone()), code);
                    }
                }
                Command::Results(r) if *client => {
                    let entry = results.entry((r.msg_ref.clone(), r.cmd_ref.clone())).or_default();
                    for i in &r.items {
                        entry.push((i.source.clone().unwrap_or_default(), i.data.clone().unwrap_or_default()));
                    }
                }
                Command::Alert(a) if *client && s.alerts.len() < 32 => s.alerts.push(AlertView {
                    code: a.data.clone(),
                    meaning: alert_meaning(&a.data),
                    items: a.items.iter().map(item_text).filter(|t| !t.is_empty()).collect(),
                }),
                Command::Status(st) if !*client && st.data.trim() != "200" => s.server_statuses.push(ServerStatus {
                    msg_id: m.hdr.msg_id.clone(),
                    cmd: st.cmd.clone(),
                    cmd_ref: st.cmd_ref.clone(),
                    code: st.data.trim().to_string(),
                }),
                _ => {}
            }
        }
    }
    for (client, m) in decoded.iter().filter(|(c, _)| !*c) {
        let _ = client;
        for c in &m.body.commands {
            push_command(s, &m.hdr.msg_id, c, None, &statuses, &results);
        }
    }
    let unanswered = s.commands.iter().filter(|c| c.status.is_none()).count();
    if unanswered > 0 {
        s.problems.push(format!(
            "{unanswered} server command(s) without a Status from the device in this transcript (the session ended first, or the message was lost)"
        ));
    }
}

fn push_command(
    s: &mut SessionView,
    msg_id: &str,
    c: &Command,
    parent: Option<&str>,
    statuses: &HashMap<(String, String), u16>,
    results: &HashMap<(String, String), Vec<(String, String)>>,
) {
    let (cmd_id, items, children) = match c {
        Command::Add(i) | Command::Replace(i) | Command::Delete(i) | Command::Get(i) | Command::Exec(i) => (
            i.cmd_id.clone(),
            i.items.iter().map(|it| (it.target.clone().unwrap_or_default(), it.data.clone())).collect(),
            None,
        ),
        Command::Atomic(k) | Command::Sequence(k) => (k.cmd_id.clone(), Vec::new(), Some(&k.commands)),
        Command::Alert(a) => (a.cmd_id.clone(), a.items.iter().map(|it| (item_text(it), None)).collect(), None),
        Command::Unsupported { name: _, cmd_id } => (cmd_id.clone(), Vec::new(), None),
        // Statuses and Results of the server answer the device; they are not commands to it.
        Command::Status(_) | Command::Results(_) => return,
    };
    let key = (msg_id.to_string(), cmd_id.clone());
    s.commands.push(CommandView {
        msg_id: msg_id.to_string(),
        cmd_id: cmd_id.clone(),
        cmd: c.name().to_string(),
        parent: parent.map(str::to_string),
        items,
        status: statuses.get(&key).copied(),
        results: results.get(&key).cloned().unwrap_or_default(),
    });
    for child in children.into_iter().flatten() {
        push_command(s, msg_id, child, Some(&cmd_id), statuses, results);
    }
}

/// An alert item in one line: its LocURI or Meta Type, and its data.
fn item_text(i: &Item) -> String {
    let what = i
        .meta
        .as_ref()
        .and_then(|m| m.type_.clone())
        .or_else(|| i.source.clone())
        .or_else(|| i.target.clone())
        .unwrap_or_default();
    match &i.data {
        Some(d) if !d.trim().is_empty() => format!("{what} = {}", d.trim()),
        _ => what,
    }
}

/// The alert codes a Windows device sends (MS-MDM, "Alert"; OMA DM RepPro alert codes).
pub fn alert_meaning(code: &str) -> &'static str {
    match code.trim() {
        "1200" => "server-initiated session",
        "1201" => "client-initiated session",
        "1222" => "more messages wanted",
        "1223" => "session abort",
        "1224" => "generic alert",
        "1226" => "generic alert (unenroll, install report)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names() {
        assert_eq!(message_name("001-client.xml"), Some((1, true)));
        assert_eq!(message_name("012-server.xml"), Some((12, false)));
        assert_eq!(message_name("1-client.xml"), None);
        assert_eq!(message_name("001-client.txt"), None);
        assert_eq!(message_name("summary.json"), None);
    }

    #[test]
    fn a_file_and_an_empty_folder_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a transcript folder"), "{e}");
        let f = dir.path().join("x.xml");
        std::fs::write(&f, "x").unwrap();
        let e = read(&f).unwrap_err().to_string();
        assert!(e.starts_with(&f.display().to_string()) && e.contains("is a file"), "{e}");
        let e = read(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("cannot open it"), "{e}");
    }

    #[test]
    fn commands_are_paired_with_statuses_and_results_by_msgref_and_cmdref() {
        let dir = tempfile::tempdir().unwrap();
        let server = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>DEV1</LocURI></Target><Source><LocURI>https://s/</LocURI></Source></SyncHdr><SyncBody>
<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>
<Get><CmdID>a</CmdID><Item><Target><LocURI>./DevDetail/SwV</LocURI></Target></Item></Get>
<Atomic><CmdID>b</CmdID><Replace><CmdID>c</CmdID><Item><Target><LocURI>./X</LocURI></Target><Data>1</Data></Item></Replace></Atomic>
<Final/></SyncBody></SyncML>"#;
        let client = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>2</MsgID><Target><LocURI>https://s/</LocURI></Target><Source><LocURI>DEV1</LocURI></Source></SyncHdr><SyncBody>
<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>
<Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>a</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>3</CmdID><MsgRef>1</MsgRef><CmdRef>a</CmdRef><Item><Source><LocURI>./DevDetail/SwV</LocURI></Source><Data>10.0</Data></Item></Results>
<Status><CmdID>4</CmdID><MsgRef>1</MsgRef><CmdRef>b</CmdRef><Cmd>Atomic</Cmd><Data>507</Data></Status>
<Status><CmdID>5</CmdID><MsgRef>1</MsgRef><CmdRef>c</CmdRef><Cmd>Replace</Cmd><Data>405</Data></Status>
<Final/></SyncBody></SyncML>"#;
        std::fs::write(dir.path().join("001-server.xml"), server).unwrap();
        std::fs::write(dir.path().join("002-client.xml"), client).unwrap();
        let t = read(dir.path()).unwrap();
        let s = &t.sessions[0];
        assert_eq!(s.device, "DEV1");
        let got: Vec<(&str, &str, Option<u16>)> =
            s.commands.iter().map(|c| (c.cmd.as_str(), c.cmd_id.as_str(), c.status)).collect();
        assert_eq!(got, [("Get", "a", Some(200)), ("Atomic", "b", Some(507)), ("Replace", "c", Some(405))]);
        assert_eq!(s.commands[0].results, [("./DevDetail/SwV".to_string(), "10.0".to_string())]);
        assert_eq!(s.commands[2].parent.as_deref(), Some("b"));
        assert_eq!(s.commands[2].items, [("./X".to_string(), Some("1".to_string()))]);
    }
}
