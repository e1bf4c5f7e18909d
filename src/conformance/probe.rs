//! Probe sessions: a management session of the run's device whose messages a check shapes on
//! purpose (a package 1 split over two messages, UUID CmdIDs, a keep-alive, a Status 500 in
//! place of the device's real answer, a repeated package 1, a Cred over a stale nonce, a
//! Results value in chunks), and ordinary sessions whose every message is kept for the judges.
//!
//! Owns only the moving of messages and the record of what was sent and answered
//! ([`Exchanged`]). The messages themselves start from the device's own: package 1 and the
//! replies to the server's commands come from the session machine ([`crate::session`]), and a
//! probe changes what its check is about and nothing else. A probe session leaves the device's
//! tree as it found it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::device::Device;
use crate::device::engine::{Response, Transmit};
use crate::device::run::{Request, RunOptions, SessionReport, SessionRun};
use crate::runner::exchange::Exchange;
use crate::session::{self, AwaitingServer, DeviceCx, Next, Trigger};
use crate::syncml::{self, Command, StatusCode, SyncMl};
use crate::tree::Registry;

/// Upper bound on the messages of one probe session that a check drives to its end.
pub const MAX_PROBE_MESSAGES: usize = 20;

/// The header a client message is signed in when a probe signs (MS-MDE2 names it
/// `MDM-Signature`; DMClient RequireMessageSigning).
pub const SIGNATURE_HEADER: &str = "MDM-Signature";

/// What the server did with one message.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A SyncML message.
    Message(Box<SyncMl>),
    /// An empty HTTP 200: the end of the session.
    Empty,
    /// A body that is not SyncML: the decode error and the start of the body.
    Malformed { error: String, body: String },
    /// No answer: an HTTP error status, a reset, a timeout (the transport's words).
    Failed(String),
}

impl Answer {
    /// The answer of an exchange's result.
    pub fn of(result: Result<Option<String>, crate::device::run::ExchangeError>) -> Answer {
        match result {
            Ok(None) => Answer::Empty,
            Ok(Some(text)) => match syncml::decode(&text) {
                Ok(m) => Answer::Message(Box::new(m)),
                Err(e) => Answer::Malformed { error: e.to_string(), body: text.chars().take(200).collect() },
            },
            Err(e) => Answer::Failed(e.message),
        }
    }

    /// The message, when the answer is one.
    pub fn message(&self) -> Option<&SyncMl> {
        match self {
            Answer::Message(m) => Some(m),
            _ => None,
        }
    }

    /// The answer in a line, for evidence.
    pub fn describe(&self) -> String {
        match self {
            Answer::Message(m) => describe(m),
            Answer::Empty => "an empty HTTP 200 (the end of the session)".into(),
            Answer::Malformed { error, body } => format!("a body that is not SyncML ({error}): {body}"),
            Answer::Failed(e) => format!("no SyncML answer: {e}"),
        }
    }
}

/// One client message and what came back.
#[derive(Debug, Clone)]
pub struct Exchanged {
    pub sent: SyncMl,
    pub answer: Answer,
}

/// A SyncML message in a line: its MsgID, each command with its CmdID (Status with
/// MsgRef/CmdRef and code, other commands with their first target), and Final.
pub fn describe(m: &SyncMl) -> String {
    let mut parts = Vec::new();
    for c in &m.body.commands {
        parts.push(match c {
            Command::Status(s) => {
                format!("Status {} (MsgRef {} CmdRef {} {}: {})", s.cmd_id, s.msg_ref, s.cmd_ref, s.cmd, s.data)
            }
            Command::Alert(a) => {
                let ty = a.items.first().and_then(|i| i.meta.as_ref()).and_then(|m| m.type_.clone());
                format!("Alert {} {}{}", a.cmd_id, a.data, ty.map(|t| format!(" {t}")).unwrap_or_default())
            }
            other => {
                let target = first_target(other).map(|t| format!(" {t}")).unwrap_or_default();
                format!("{} {}{target}", other.name(), other.cmd_id())
            }
        });
    }
    format!(
        "MsgID {}: {}{}",
        m.hdr.msg_id,
        if parts.is_empty() { "no commands".to_string() } else { parts.join(", ") },
        if m.body.final_ { ", Final" } else { ", no Final" }
    )
}

/// The first target LocURI of a command (of its first child for Atomic and Sequence).
pub fn first_target(c: &Command) -> Option<String> {
    match c {
        Command::Add(i) | Command::Replace(i) | Command::Delete(i) | Command::Get(i) | Command::Exec(i) => {
            i.items.first().and_then(|it| it.target.clone())
        }
        Command::Atomic(k) | Command::Sequence(k) => k.commands.first().and_then(first_target),
        _ => None,
    }
}

/// The commands of a server message that ask the device to do something (not Status,
/// Results, or the flow-control Alert 1222).
pub fn work(m: &SyncMl) -> Vec<&Command> {
    m.body
        .commands
        .iter()
        .filter(|c| match c {
            Command::Status(_) | Command::Results(_) => false,
            Command::Alert(a) => a.data.trim() != "1222",
            _ => true,
        })
        .collect()
}

/// The Status in `m` for client command `cmd_ref` of client message `msg_ref`.
pub fn status_for<'a>(m: &'a SyncMl, msg_ref: &str, cmd_ref: &str) -> Option<&'a syncml::Status> {
    m.body.commands.iter().find_map(|c| match c {
        Command::Status(s) if s.msg_ref.trim() == msg_ref && s.cmd_ref.trim() == cmd_ref => Some(s),
        _ => None,
    })
}

/// One probe session of the run's device.
pub struct Probe<'a> {
    exchange: &'a dyn Exchange,
    url: String,
    client_request_id: String,
    max_body: u64,
    /// Package 1 as the session machine built it.
    pub package1: SyncMl,
    /// The session machine, while the probe lets it answer the server.
    machine: Option<AwaitingServer>,
    mark: crate::tree::Mark,
    /// Every message sent and its answer, in order.
    pub log: Vec<Exchanged>,
    /// Set when a message asked to be signed went out unsigned: why.
    pub unsigned: Option<String>,
}

impl<'a> Probe<'a> {
    /// Starts a session of `device` for `trigger` (its mode, alert and LoginStatus planned as
    /// the device plans them); `extra` alerts go in package 1. Nothing is sent yet.
    pub fn begin(
        exchange: &'a dyn Exchange,
        registry: &Registry,
        device: &mut Device,
        trigger: Trigger,
        extra: Vec<crate::syncml::Alert>,
        now: DateTime<Utc>,
    ) -> Probe<'a> {
        device.apply_trigger(trigger);
        let mut cfg = device.next_session(trigger);
        cfg.extra_alerts = extra;
        (cfg.cred, cfg.auth) = crate::runner::enrollment::session_auth(&device.tree);
        let url = crate::device::run::session_url(&device.server_url, cfg.mode, device.profile)
            .unwrap_or_else(|_| device.server_url.clone());
        let ent_dmid = format!("Vendor/MSFT/DMClient/Provider/{}/EntDMID", device.provider_id);
        let client_request_id = device.tree.value(&ent_dmid).unwrap_or("0").to_string();
        let mark = device.tree.mark();
        let env = device.env(now);
        let mut cx = DeviceCx { registry, state: &mut device.tree, env: &env };
        let (machine, package1) = session::start_default(cfg, &mut cx);
        let max_body = machine.limits().max_message_bytes;
        Probe {
            exchange,
            url,
            client_request_id,
            max_body,
            package1,
            machine: Some(machine),
            mark,
            log: Vec::new(),
            unsigned: None,
        }
    }

    /// The SessionID.
    pub fn session_id(&self) -> &str {
        &self.package1.hdr.session_id
    }

    /// A client message of this session with `msg_id` and these commands.
    pub fn message(&self, msg_id: u32, commands: Vec<Command>, final_: bool) -> SyncMl {
        let mut m = self.package1.clone();
        m.hdr.msg_id = msg_id.to_string();
        m.body.commands = commands;
        m.body.final_ = final_;
        m
    }

    /// Sends `msg` (signed when `sign`) and returns the server's answer.
    pub async fn send(&mut self, msg: SyncMl, sign: bool) -> Answer {
        let req = Request {
            url: self.url.clone(),
            body: syncml::encode(&msg),
            client_request_id: self.client_request_id.clone(),
            sign_with: sign.then(|| SIGNATURE_HEADER.to_string()),
            max_body: self.max_body,
        };
        let answer = match self.exchange.exchange(&Transmit::Session(req)).await {
            Response::Session(reply) => {
                if sign && reply.unsigned.is_some() {
                    self.unsigned = reply.unsigned.clone();
                }
                Answer::of(reply.result)
            }
            Response::Fetch(_) => Answer::Failed("the exchange answered a session message with a download".into()),
        };
        self.log.push(Exchanged { sent: msg, answer: answer.clone() });
        answer
    }

    /// The device's own reply to server message `m` (the session machine executes its commands
    /// on the tree), or `None` when the device has nothing more to send (the session is over,
    /// or failed: the probe's log says how).
    pub fn device_reply(
        &mut self,
        registry: &Registry,
        device: &mut Device,
        m: &SyncMl,
        now: DateTime<Utc>,
    ) -> Option<SyncMl> {
        let machine = self.machine.take()?;
        let env = device.env(now);
        let mut cx = DeviceCx { registry, state: &mut device.tree, env: &env };
        match machine.receive_message(m, &mut cx) {
            Next::Send(next, reply) => {
                self.machine = Some(next);
                Some(reply)
            }
            Next::Finished(_) | Next::Failed(_) => None,
        }
    }

    /// Sends device replies (each passed through `shape` first) until the session ends or
    /// [`MAX_PROBE_MESSAGES`]; returns false when the bound was reached with the server still
    /// going.
    pub async fn drive(
        &mut self,
        registry: &Registry,
        device: &mut Device,
        mut answer: Answer,
        now: DateTime<Utc>,
        shape: &mut dyn FnMut(&SyncMl, SyncMl) -> SyncMl,
    ) -> bool {
        while self.log.len() < MAX_PROBE_MESSAGES {
            let Answer::Message(m) = answer else { return true };
            let Some(reply) = self.device_reply(registry, device, &m, now) else { return true };
            let reply = shape(&m, reply);
            answer = self.send(reply, false).await;
        }
        false
    }

    /// Ends the probe: the device's tree goes back to where it was before the probe.
    pub fn end(self, device: &mut Device) -> Vec<Exchanged> {
        device.tree.rollback(self.mark);
        self.log
    }
}

/// One ordinary session of the device, every message kept.
#[derive(Debug)]
pub struct Trace {
    /// What started it (its mode is in the summary).
    pub trigger: Trigger,
    pub report: SessionReport,
    /// Each client message and the server's answer to it.
    pub log: Vec<Exchanged>,
}

/// Runs one ordinary session of `device` for `trigger` through `exchange`, as the device runs
/// it (its gate records the operation-mode findings), keeping every message; the device's tree
/// keeps what the session changed.
pub async fn ordinary(
    exchange: &dyn Exchange,
    registry: &Registry,
    device: &mut Device,
    trigger: Trigger,
    can_sign: bool,
    now: DateTime<Utc>,
) -> Trace {
    device.apply_trigger(trigger);
    let mut opts = RunOptions::new(trigger);
    opts.gate = Box::new(crate::session::ModeGate { interactive: false, strict: false });
    opts.can_sign = can_sign;
    let mut run = SessionRun::begin(registry, device, opts, now);
    let mut log = Vec::new();
    // Bounded by the session's own max_messages; this bound only guards the loop.
    for _ in 0..1_000 {
        let Some(req) = run.poll_request(registry, device) else { break };
        let sent = syncml::decode(&req.body).ok();
        let reply = match exchange.exchange(&Transmit::Session(req)).await {
            Response::Session(r) => r,
            Response::Fetch(_) => crate::device::run::Reply::error(
                crate::device::run::ExchangeError {
                    fault: session::Fault::Protocol,
                    class: "protocol",
                    no_connection: false,
                    message: "the exchange answered a session message with a download".into(),
                },
                Duration::ZERO,
            ),
        };
        if let Some(sent) = sent {
            log.push(Exchanged { sent, answer: Answer::of(reply.result.clone()) });
        }
        run.handle_reply(registry, device, reply, now);
    }
    let report = run.finish().unwrap_or_else(|| SessionReport {
        summary: session::Summary::new(device.id.as_str(), "", session::Mode::Maintenance, trigger, 1201, now),
        error: None,
        effects: Vec::new(),
        challenge: None,
    });
    device.tree.commit();
    Trace { trigger, report, log }
}

/// Changes the code of the first Status in `reply` that answers a server command (not the
/// SyncHdr) to `code`, dropping that command's Results: a device whose CSP failed (500),
/// refused (405) or did not find the node (404). Returns the CmdRef changed.
pub fn override_first_status(reply: &mut SyncMl, code: StatusCode) -> Option<String> {
    let mut changed = None;
    for c in reply.body.commands.iter_mut() {
        if let Command::Status(s) = c
            && s.cmd_ref.trim() != "0"
            && changed.is_none()
        {
            s.data = code.code().to_string();
            changed = Some((s.msg_ref.clone(), s.cmd_ref.clone()));
        }
    }
    let (msg_ref, cmd_ref) = changed?;
    reply.body.commands.retain(|c| !matches!(c, Command::Results(r) if r.msg_ref == msg_ref && r.cmd_ref == cmd_ref));
    Some(cmd_ref)
}
