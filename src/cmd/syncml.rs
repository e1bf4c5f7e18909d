//! `mdmsim syncml fmt|check`: the codec on the command line. `mdmsim syncml replay`: the client
//! side of a captured session played against a server, and what the server answers differently
//! now (`capture::replay`); exit 0 when it answered as in the capture, 1 when not, 2 for a
//! capture that cannot be read, 3 when the server cannot be reached, 4 when it answers with
//! something that is not SyncML or an HTTP error.

use std::io::Read as _;
use std::process::ExitCode;

use clap::Subcommand;

use mdmsim::syncml::{self, DecodeError};

use super::exit::{USAGE, fail};

#[derive(Subcommand)]
pub enum Syncml {
    /// Pretty-print a SyncML message (one element per line, embedded XML indented).
    Fmt {
        /// The file to read, or `-` for standard input.
        file: String,
    },
    /// Validate SyncML messages; prints one line per file.
    Check {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Replay the client side of a captured session against a server and show what the
    /// server answers differently from the capture (exit 1 when anything differs).
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The capture: a SyncMLViewer export or any text with the session's SyncML messages, or a
    /// folder of messages (one per file, in name order).
    #[arg(required = true, value_name = "CAPTURE")]
    capture: Vec<std::path::PathBuf>,
    /// The server's management URL (`mode=Maintenance&Platform=WoA` is added when it has no
    /// query).
    #[arg(long, value_name = "URL")]
    server: String,
    /// The DeviceID to send (default: the captured one; a captured one that is not 32 hex
    /// digits is replaced by one derived from it).
    #[arg(long, value_name = "DEVID")]
    id: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    http: super::HttpArgs,
}

pub fn run(cmd: Syncml) -> anyhow::Result<ExitCode> {
    match cmd {
        Syncml::Replay(a) => replay(a),
        Syncml::Fmt { file } => {
            let text = read(&file)?;
            let msg = syncml::decode(&text).map_err(|e| fail(USAGE, located(&file, &text, &e)))?;
            super::out::text(syncml::pretty(&msg));
            Ok(ExitCode::SUCCESS)
        }
        Syncml::Check { files } => {
            let mut bad = 0;
            for file in &files {
                let text = read(file)?;
                match syncml::decode(&text) {
                    Ok(msg) => super::out::line(format_args!("{file}: ok ({} commands)", msg.body.commands.len())),
                    Err(e) => {
                        super::out::warn(located(file, &text, &e));
                        bad += 1;
                    }
                }
            }
            if bad > 0 {
                Err(fail(USAGE, format!("{bad} of {} files are not valid SyncML", files.len())))
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// `FILE:LINE:COLUMN: message`, the convention compilers use.
pub fn located(file: &str, text: &str, e: &DecodeError) -> String {
    let (line, col) = syncml::line_col(text, e.offset());
    format!("{file}:{line}:{col}: {e}")
}

fn read(file: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut text).map_err(|e| fail(USAGE, format!("reading standard input: {e}")))?;
    } else {
        text = std::fs::read_to_string(file).map_err(|e| fail(USAGE, format!("{file}: {e}")))?;
    }
    Ok(text)
}

fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    use mdmsim::capture::{
        self,
        replay::{Next, Replay},
    };
    use mdmsim::device::DeviceId;
    use mdmsim::runner::http::Transport;

    let url = url::Url::parse(&a.server)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| fail(USAGE, format!("--server {:?}: not an http or https URL", a.server)))?;
    let url = if url.query().is_none() { format!("{url}?mode=Maintenance&Platform=WoA") } else { url.to_string() };
    let cap = capture::read(&a.capture).map_err(|e| fail(USAGE, e.to_string()))?;
    let captured_id = cap
        .messages
        .iter()
        .find(|m| m.side == capture::Side::Client)
        .map(|m| m.msg.hdr.source.clone())
        .unwrap_or_default();
    let id = match &a.id {
        Some(id) => DeviceId::parse(id).map_err(|e| fail(USAGE, e.to_string()))?.to_string(),
        None => match DeviceId::parse(&captured_id) {
            Ok(id) => id.to_string(),
            Err(_) => {
                use sha2::Digest as _;
                let derived = hex::encode_upper(&sha2::Sha256::digest(captured_id.as_bytes())[..16]);
                super::out::warn(format_args!(
                    "mdmsim: the captured DeviceID {captured_id:?} is not 32 hex digits: replaying as {derived} (--id sets another)"
                ));
                derived
            }
        },
    };
    let mut replay = Replay::new(&cap, &id, &url)
        .ok_or_else(|| fail(USAGE, format!("{}: no client message to replay", cap.files.join(", "))))?;
    let transport = Transport::new(a.http.options()?).map_err(|e| fail(USAGE, e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut next = replay.start();
    let mut sent = 0usize;
    // Where the session's messages go: the server's RespURI once it gave one (MS-MDM), until
    // the next session starts.
    let mut post_to = url.clone();
    while let Next::Send(mut msg) = next {
        sent += 1;
        if msg.hdr.msg_id == "1" {
            post_to = url.clone();
        }
        msg.hdr.target = post_to.clone();
        let body = syncml::encode(&msg);
        let answer = rt
            .block_on(transport.post(&post_to, &body, &sent.to_string()))
            .map_err(|e| fail(super::exit::of_fault(e.fault()), e.to_string()))?;
        let reply = match answer.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(syncml::decode(text).map_err(|e| {
                fail(super::exit::PROTOCOL, format!("the server's answer to client message {sent} is not SyncML: {e}"))
            })?),
        };
        if let Some(resp) = reply.as_ref().and_then(|r| r.hdr.resp_uri.as_deref()).filter(|r| !r.trim().is_empty()) {
            post_to = resp.trim().to_string();
        }
        next = replay.receive(reply.as_ref());
    }
    let o = replay.outcome();
    if a.json {
        let mut v = serde_json::to_value(o)?;
        v["same"] = serde_json::Value::Bool(o.same());
        v["server"] = serde_json::Value::String(a.server.clone());
        v["device_id"] = serde_json::Value::String(id.clone());
        super::out::line(serde_json::to_string_pretty(&v)?);
    } else {
        super::out::line(format_args!(
            "replayed {} session(s) as {id} against {}: {} client message(s) sent, {} server message(s) compared",
            o.sessions, a.server, o.client_messages, o.server_messages
        ));
        for u in &o.unanswered {
            let target = if u.target.is_empty() { String::new() } else { format!(" {}", u.target) };
            super::out::line(format_args!(
                "  session {} message {}: no captured answer to {}{target}: answered {}",
                u.session, u.message, u.command, u.status
            ));
        }
        for d in &o.differences {
            let mark = match d.change.as_str() {
                "added" => "+",
                "removed" => "-",
                _ => "~",
            };
            let target = if d.target.is_empty() { String::new() } else { format!(" {}", d.target) };
            super::out::line(format_args!(
                "{mark} session {} message {}: {}{target}: {}",
                d.session, d.message, d.command, d.detail
            ));
        }
        if o.same() {
            super::out::line("same: the server answered as in the capture");
        } else {
            super::out::line(format_args!("{} difference(s)", o.differences.len()));
        }
    }
    Ok(if o.same() { ExitCode::SUCCESS } else { ExitCode::from(super::exit::DIFFERENT) })
}
