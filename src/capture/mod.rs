//! Captures of a real device's management sessions, read back so that mdmsim can learn a device
//! from them (`device import`, [`import`]) and play a session's client side again against a
//! server (`syncml replay`, [`replay`]).
//!
//! Three shapes are read ([`read`]), each a file or a folder given on the command line:
//!
//! - a session capture as text: every `<SyncML ...>...</SyncML>` document in the file, in order,
//!   whatever stands between them (the XML export of SyncMLViewer, an HTTP log such as the one
//!   in the fleetdm "Windows MDM Server Demo" README, separators, timestamps), or escaped as
//!   text inside the elements of an XML export (`&lt;SyncML ...`). MS-MDE2
//!   enrollment context items in the same text (`<ac:ContextItem Name="OSVersion">`) are read too;
//! - a folder of SyncML messages, one per file (`*.xml`, `*.txt`, `*.log`), in file-name order
//!   (an mdmsim `--transcript` session folder is one);
//! - an MDM diagnostics report (`MDMDiagReport.xml` of `mdmdiagnosticstool.exe`): the policies
//!   of `PolicyManager/ConfigSource` (`PolicyScope`, `Area`, `PolicyAreaName`, one element per
//!   policy) as `./Device|User/Vendor/MSFT/Policy/Config/<Area>/<Policy>` values, and any
//!   `<Node>` element with a `LocURI` (or `URI`) and a `Value` child (and an optional `Format`),
//!   the plain tree shape `docs/capture.md` describes.
//!
//! A message is the server's when its SyncHdr Source is an `http(s)` URL, the client's
//! otherwise. Owns reading and bounding the input (each file at most [`MAX_FILE_BYTES`], a
//! folder at most [`MAX_FILES`] files); a message that does not decode is refused with its file,
//! line and column.

pub mod import;
pub mod replay;

use std::path::{Path, PathBuf};

use crate::syncml::{self, SyncMl};

/// The largest capture file read (a day of SyncMLViewer traces is a few MiB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// The most files read from one folder.
pub const MAX_FILES: usize = 10_000;
/// The most SyncML messages in one capture.
pub const MAX_MESSAGES: usize = 100_000;

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The device (the OMA-DM client).
    Client,
    /// The management server.
    Server,
}

/// One SyncML message of a capture, with where it was found.
#[derive(Debug, Clone)]
pub struct Message {
    pub side: Side,
    pub msg: SyncMl,
    /// The file it came from and the line its `<SyncML` starts on.
    pub file: String,
    pub line: usize,
}

impl Message {
    /// `FILE:LINE`, for reports.
    pub fn place(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A value a report or a capture's enrollment text gave for a node, outside any SyncML message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub uri: String,
    pub value: String,
    pub format: Option<String>,
    /// `FILE:LINE` of the value.
    pub place: String,
}

/// Everything read from the files of one capture.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// The files read, as given (folders expanded).
    pub files: Vec<String>,
    /// The SyncML messages, in order.
    pub messages: Vec<Message>,
    /// MS-MDE2 enrollment context items (`OSVersion`, `DeviceName`...) found in the text, in
    /// order, with their place.
    pub context: Vec<(String, String, String)>,
    /// Node values of a diagnostics report.
    pub nodes: Vec<Observed>,
    /// Files of a folder that were passed over, and why.
    pub skipped: Vec<(String, String)>,
}

impl Capture {
    /// The messages split into sessions: a new session starts at a client message whose
    /// SessionID differs from the one before it.
    pub fn sessions(&self) -> Vec<&[Message]> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut current: Option<&str> = None;
        for (i, m) in self.messages.iter().enumerate() {
            if m.side == Side::Client {
                let id = m.msg.hdr.session_id.as_str();
                if current.is_some_and(|c| c != id) {
                    out.push(&self.messages[start..i]);
                    start = i;
                }
                current = Some(id);
            }
        }
        if start < self.messages.len() {
            out.push(&self.messages[start..]);
        }
        out
    }
}

/// A capture that cannot be read: the file, the place when there is one, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.located())]
pub struct CaptureError {
    pub file: String,
    /// 1-based line and column, when the fault has a place in the file.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl CaptureError {
    fn new(file: &str, message: impl Into<String>) -> Self {
        CaptureError { file: file.to_string(), at: None, message: message.into() }
    }

    fn located(&self) -> String {
        match self.at {
            Some((line, column)) => format!("{}:{line}:{column}: {}", self.file, self.message),
            None => format!("{}: {}", self.file, self.message),
        }
    }
}

/// Reads the files and folders of a capture, in the order given.
pub fn read(paths: &[PathBuf]) -> Result<Capture, CaptureError> {
    let mut cap = Capture::default();
    for path in paths {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| CaptureError::new(&shown, e.to_string()))?;
        if meta.is_dir() {
            read_folder(path, &mut cap)?;
        } else {
            read_file(path, true, &mut cap)?;
        }
    }
    if cap.messages.is_empty() && cap.nodes.is_empty() && cap.context.is_empty() {
        let files = if cap.files.is_empty() { "the capture".to_string() } else { cap.files.join(", ") };
        return Err(CaptureError::new(
            &files,
            "no SyncML message (<SyncML>...</SyncML>) and no diagnostics report node found",
        ));
    }
    Ok(cap)
}

fn read_folder(dir: &Path, cap: &mut Capture) -> Result<(), CaptureError> {
    let shown = dir.display().to_string();
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| CaptureError::new(&shown, e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| CaptureError::new(&shown, e.to_string()))?;
        let path = entry.path();
        if path.is_file() {
            files.push(path);
        }
        if files.len() > MAX_FILES {
            return Err(CaptureError::new(&shown, format!("more than {MAX_FILES} files: not a capture folder")));
        }
    }
    files.sort();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if name.starts_with('.') || !(name.ends_with(".xml") || name.ends_with(".txt") || name.ends_with(".log")) {
            cap.skipped.push((path.display().to_string(), "not a .xml, .txt or .log file".into()));
            continue;
        }
        read_file(&path, false, cap)?;
    }
    Ok(())
}

/// Reads one file; `named` says it was given on the command line (a file of a folder without
/// any message is passed over instead of refused).
fn read_file(path: &Path, named: bool, cap: &mut Capture) -> Result<(), CaptureError> {
    use std::io::Read as _;
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| CaptureError::new(&shown, e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| CaptureError::new(&shown, e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(CaptureError::new(
            &shown,
            format!("larger than {} MiB: split the capture into files", MAX_FILE_BYTES >> 20),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let (line, column) = syncml::line_col(&String::from_utf8_lossy(e.as_bytes()), e.utf8_error().valid_up_to());
        CaptureError { file: shown.clone(), at: Some((line, column)), message: "not UTF-8 text".into() }
    })?;
    cap.files.push(shown.clone());
    let before = (cap.messages.len(), cap.nodes.len(), cap.context.len());
    if text.contains("<MDMEnterpriseDiagnosticsReport") || text.contains("<DeviceTree") {
        read_report(&text, &shown, cap)?;
    } else if !text.contains("<SyncML") && text.contains("&lt;SyncML") {
        // An export that holds the messages as escaped text inside XML elements.
        let plain = quick_xml::escape::unescape(&text)
            .map_err(|e| CaptureError::new(&shown, format!("escaped SyncML messages that do not unescape: {e}")))?;
        read_messages(&plain, &shown, cap)?;
        read_context(&plain, &shown, cap);
    } else {
        read_messages(&text, &shown, cap)?;
        read_context(&text, &shown, cap);
    }
    if before == (cap.messages.len(), cap.nodes.len(), cap.context.len()) {
        if named {
            return Err(CaptureError::new(
                &shown,
                "no SyncML message (<SyncML>...</SyncML>) and no diagnostics report node found",
            ));
        }
        cap.skipped.push((shown, "no SyncML message in it".into()));
    }
    Ok(())
}

/// Every `<SyncML ...>...</SyncML>` document of a text, decoded.
fn read_messages(text: &str, file: &str, cap: &mut Capture) -> Result<(), CaptureError> {
    let mut from = 0;
    while let Some(p) = text[from..].find("<SyncML") {
        let start = from + p;
        let after = text[start + 7..].chars().next();
        if !matches!(after, Some(c) if c == '>' || c.is_whitespace()) {
            from = start + 7;
            continue;
        }
        let Some(end) = text[start..].find("</SyncML>").map(|e| start + e + "</SyncML>".len()) else {
            let (line, column) = syncml::line_col(text, start);
            return Err(CaptureError {
                file: file.to_string(),
                at: Some((line, column)),
                message: "a <SyncML> message that is never closed with </SyncML>".into(),
            });
        };
        let doc = &text[start..end];
        let msg = syncml::decode(doc).map_err(|e| {
            let (line, column) = syncml::line_col(text, start + e.offset());
            CaptureError { file: file.to_string(), at: Some((line, column)), message: e.to_string() }
        })?;
        if cap.messages.len() >= MAX_MESSAGES {
            return Err(CaptureError::new(file, format!("more than {MAX_MESSAGES} SyncML messages")));
        }
        let side = if is_url(&msg.hdr.source) { Side::Server } else { Side::Client };
        let line = syncml::line_col(text, start).0;
        cap.messages.push(Message { side, msg, file: file.to_string(), line });
        from = end;
    }
    Ok(())
}

/// True for an `http://` or `https://` address (a server's SyncHdr Source).
pub fn is_url(s: &str) -> bool {
    let s = s.trim().to_ascii_lowercase();
    s.starts_with("https://") || s.starts_with("http://")
}

/// MS-MDE2 `AdditionalContext` items (`<ac:ContextItem Name="X"><ac:Value>v</ac:Value>`).
fn read_context(text: &str, file: &str, cap: &mut Capture) {
    static ITEM: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = ITEM.get_or_init(|| {
        regex::Regex::new(r#"<(?:\w+:)?ContextItem\s+Name="([^"]{1,64})"\s*>\s*<(?:\w+:)?Value>([^<]{0,512})</"#)
            .expect("a valid pattern")
    });
    for c in re.captures_iter(text) {
        let at = c.get(0).map_or(0, |m| m.start());
        let place = format!("{file}:{}", syncml::line_col(text, at).0);
        cap.context.push((c[1].to_string(), c[2].trim().to_string(), place));
    }
}

/// The nodes of a diagnostics report.
fn read_report(text: &str, file: &str, cap: &mut Capture) -> Result<(), CaptureError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let bad = |offset: u64, message: String| {
        let (line, column) = syncml::line_col(text, offset as usize);
        CaptureError { file: file.to_string(), at: Some((line, column)), message }
    };
    // The open elements: local name, own text, and the (name, text, line) of closed children.
    let mut stack: Vec<Open> = Vec::new();
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event().map_err(|e| bad(reader.error_position(), format!("not XML: {e}")))?;
        let piece = match event {
            Event::Start(e) => {
                if stack.len() >= 64 {
                    return Err(bad(at, "elements nested more than 64 deep".into()));
                }
                let name = e.local_name().into_inner().to_string();
                stack.push(Open {
                    name,
                    text: String::new(),
                    line: syncml::line_col(text, at as usize).0,
                    children: Vec::new(),
                });
                continue;
            }
            Event::End(_) => {
                let Some(el) = stack.pop() else { break };
                report_element(&el, &stack, file, cap);
                if let Some(parent) = stack.last_mut() {
                    parent.children.push((el.name, el.text.trim().to_string(), el.line));
                }
                continue;
            }
            Event::Text(t) => t.xml10_content().into_owned(),
            Event::CData(t) => t.xml10_content().into_owned(),
            Event::GeneralRef(r) => match r.resolve_char_ref().map_err(|e| bad(at, format!("not XML: {e}")))? {
                Some(c) => c.to_string(),
                None => {
                    let name = r.xml10_content();
                    quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| bad(at, format!("unknown entity &{name};")))?
                        .to_string()
                }
            },
            Event::Eof => break,
            _ => continue,
        };
        if let Some(el) = stack.last_mut() {
            el.text.push_str(&piece);
        }
    }
    Ok(())
}

/// An element of a report being read.
struct Open {
    name: String,
    text: String,
    line: usize,
    children: Vec<(String, String, usize)>,
}

/// Reads one closed element of a report: a `<Node>` with a LocURI and a Value, or a policy
/// `Area` of `PolicyManager/ConfigSource`.
fn report_element(el: &Open, parents: &[Open], file: &str, cap: &mut Capture) {
    let (name, children) = (el.name.as_str(), &el.children);
    let child = |n: &str| children.iter().find(|(c, _, _)| c.eq_ignore_ascii_case(n));
    if name == "Node" {
        let uri = child("LocURI").or_else(|| child("URI"));
        if let (Some((_, uri, line)), Some((_, value, _))) = (uri, child("Value")) {
            cap.nodes.push(Observed {
                uri: uri.trim().to_string(),
                value: value.clone(),
                format: child("Format").map(|(_, f, _)| f.trim().to_string()),
                place: format!("{file}:{line}"),
            });
        }
        return;
    }
    let in_config = parents.iter().any(|p| p.name == "ConfigSource");
    if name != "Area" || !in_config {
        return;
    }
    let Some((_, area, _)) = child("PolicyAreaName") else { return };
    // The scope is a sibling `PolicyScope` text of the enclosing `PolicyScope` element.
    let scope = parents
        .last()
        .and_then(|p| p.children.iter().find(|(n, _, _)| n == "PolicyScope"))
        .map_or("Device", |(_, s, _)| s.as_str());
    let root = if scope.trim().eq_ignore_ascii_case("user") { "./User" } else { "./Device" };
    for (policy, value, line) in children {
        // `<Policy>_LastWrite` and the like are bookkeeping, not values.
        if policy == "PolicyAreaName" || policy.contains('_') {
            continue;
        }
        cap.nodes.push(Observed {
            uri: format!("{root}/Vendor/MSFT/Policy/Config/{}/{policy}", area.trim()),
            value: value.clone(),
            format: None,
            place: format!("{file}:{line}"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const CLIENT: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>https://mdm.example/MDM.svc</LocURI></Target><Source><LocURI>1E08C6E95D8BB843B1278FF45BC60CC6</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID><Data>1201</Data></Alert><Final/></SyncBody></SyncML>"#;
    const SERVER: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>1E08C6E95D8BB843B1278FF45BC60CC6</LocURI></Target><Source><LocURI>https://mdm.example/MDM.svc</LocURI></Source></SyncHdr><SyncBody><Final/></SyncBody></SyncML>"#;

    #[test]
    fn messages_are_found_between_separators_and_sides_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "=== 10:00:01 ===\n{CLIENT}\n--- response ---\n<?xml version=\"1.0\"?>\n{SERVER}\n<SyncMLish/>\n\
             <ac:ContextItem Name=\"OSVersion\">\n  <ac:Value>10.0.19043.2364</ac:Value>\n</ac:ContextItem>"
        );
        let f = write(dir.path(), "trace.txt", &text);
        let cap = read(&[f]).unwrap();
        assert_eq!(cap.messages.iter().map(|m| m.side).collect::<Vec<_>>(), [Side::Client, Side::Server]);
        assert_eq!(cap.messages[0].line, 2);
        assert_eq!(cap.context[0].0, "OSVersion");
        assert_eq!(cap.context[0].1, "10.0.19043.2364");
        assert_eq!(cap.sessions().len(), 1);
    }

    #[test]
    fn messages_escaped_inside_an_xml_export_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let escaped = |m: &str| m.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let text = format!(
            "<Export><Message at=\"1\">{}</Message><Message>{}</Message></Export>",
            escaped(CLIENT),
            escaped(SERVER)
        );
        let f = write(dir.path(), "export.xml", &text);
        let cap = read(&[f]).unwrap();
        assert_eq!(cap.messages.iter().map(|m| m.side).collect::<Vec<_>>(), [Side::Client, Side::Server]);
    }

    #[test]
    fn a_folder_is_read_in_file_name_order_and_other_files_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "002-server.xml", SERVER);
        write(dir.path(), "001-client.xml", CLIENT);
        write(dir.path(), "summary.json", "{}");
        let cap = read(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(cap.messages.iter().map(|m| m.side).collect::<Vec<_>>(), [Side::Client, Side::Server]);
        assert_eq!(cap.skipped.len(), 1);
    }

    #[test]
    fn bad_input_is_refused_with_its_file_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "bad.txt", &format!("line one\n{}", CLIENT.replace("<VerDTD>", "<Bogus/><VerDTD>")));
        let e = read(&[f]).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}:2:", dir.path().join("bad.txt").display())), "{e}");
        let f = write(dir.path(), "open.txt", "x\n<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr>");
        assert!(
            read(&[f])
                .unwrap_err()
                .to_string()
                .ends_with(":2:1: a <SyncML> message that is never closed with </SyncML>")
        );
        let f = write(dir.path(), "none.txt", "nothing here");
        assert!(read(&[f]).unwrap_err().to_string().contains("no SyncML message"));
        assert!(read(&[dir.path().join("missing.xml")]).is_err());
    }

    #[test]
    fn a_diagnostics_report_gives_policy_values_and_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "MDMDiagReport.xml",
            r#"<MDMEnterpriseDiagnosticsReport>
  <PolicyManager><ConfigSource><EnrollmentId>1</EnrollmentId>
    <PolicyScope><PolicyScope>Device</PolicyScope>
      <Area><PolicyAreaName>Defender</PolicyAreaName><AllowRealtimeMonitoring>1</AllowRealtimeMonitoring><AllowRealtimeMonitoring_LastWrite>1</AllowRealtimeMonitoring_LastWrite></Area>
    </PolicyScope></ConfigSource></PolicyManager>
  <DeviceTree><Node><LocURI>./DevDetail/SwV</LocURI><Value>10.0.19045.5131</Value><Format>chr</Format></Node></DeviceTree>
</MDMEnterpriseDiagnosticsReport>"#,
        );
        let cap = read(&[f]).unwrap();
        let got: Vec<(&str, &str)> = cap.nodes.iter().map(|n| (n.uri.as_str(), n.value.as_str())).collect();
        assert_eq!(
            got,
            [
                ("./Device/Vendor/MSFT/Policy/Config/Defender/AllowRealtimeMonitoring", "1"),
                ("./DevDetail/SwV", "10.0.19045.5131")
            ]
        );
        assert_eq!(cap.nodes[1].format.as_deref(), Some("chr"));
    }
}
