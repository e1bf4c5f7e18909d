//! The session state machine: [`start`] builds package 1 and gives an
//! [`AwaitingServer`]; each server message consumes it and gives the next state ([`Next`]):
//! another client message to send, [`Finished`], or [`Failed`].
//!
//! No I/O: the caller moves the bytes (see `runner/`), passes the device's tree in a
//! [`DeviceCx`] at each step and persists what changed. Tree changes of a failed session are
//! rolled back to the session start by the transition into [`Failed`]; the changes of a
//! finished session are left in the journal for the caller to persist and `commit()`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::syncml::{
    self, Alert, AlertCode, Chal, Command, Cred, DecodeError, Item, ItemCmd, Meta, Results, Status, StatusCode,
    SyncBody, SyncHdr, SyncMl,
};
use crate::tree::{CmdOutcome, Effect, Env, Mark, Registry, Settings, Tree, TreeState};

use super::gate::{AllowAll, Finding, Gate, GateCx};
use super::summary::{CommandRecord, EffectRecord, Mode, Outcome, Summary, Trigger};

/// The LocURI type of the LoginStatus client event (Microsoft's OMA DM protocol support page).
pub const LOGIN_STATUS_TYPE: &str = "com.microsoft/MDM/LoginStatus";

/// The DevInfo nodes package 1 reports, in the order Windows sends them (MS-MDM package 1).
const DEVINFO_NODES: [&str; 5] = ["DevId", "Man", "Mod", "DmV", "Lang"];

/// The session alert of package 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAlert {
    /// 1200: the session answers a server trigger (a push on the win10 profile).
    ServerInitiated,
    /// 1201: scheduled, user or enrollment-triggered sessions.
    ClientInitiated,
}

impl SessionAlert {
    /// The alert code on the wire.
    pub fn code(self) -> u16 {
        match self {
            SessionAlert::ServerInitiated => 1200,
            SessionAlert::ClientInitiated => 1201,
        }
    }
}

pub use crate::schedule::LoginStatus;

/// Everything needed to start one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The 32-hex DeviceID: SyncHdr Source.
    pub device_id: String,
    /// The server address: SyncHdr Target (ADDR; a RespURI does not change it).
    pub server_url: String,
    /// Opaque, constant within the session.
    pub session_id: String,
    pub alert: SessionAlert,
    /// `Some` on the win10 profile: the 1224 LoginStatus alert of package 1.
    pub login_status: Option<LoginStatus>,
    /// Client alerts other parts queued for package 1 (a 1226 unenroll alert, an install
    /// report); their CmdIDs are renumbered.
    pub extra_alerts: Vec<Alert>,
    pub mode: Mode,
    pub trigger: Trigger,
    /// Credentials put on every client message header (application-layer auth, OMA DM auth-md5).
    pub cred: Option<Cred>,
    /// Answers a 401/407 challenge on the SyncHdr: package 1 is sent again with the
    /// credentials it computes (once per session). `None`: a challenge ends the session.
    pub auth: Option<Arc<dyn Authenticator>>,
}

impl SessionConfig {
    /// A client-initiated session with no LoginStatus, no extra alerts and no credentials. Its
    /// [`Limits`] come from the device's settings when it starts.
    pub fn new(device_id: &str, server_url: &str, session_id: &str, mode: Mode, trigger: Trigger) -> Self {
        SessionConfig {
            device_id: device_id.to_string(),
            server_url: server_url.to_string(),
            session_id: session_id.to_string(),
            alert: SessionAlert::ClientInitiated,
            login_status: None,
            extra_alerts: Vec::new(),
            mode,
            trigger,
            cred: None,
            auth: None,
        }
    }
}

/// What a session accepts from a server, from the device template's `[behaviour]` settings.
/// The defaults are far above what real servers send (a Windows client advertises a MaxMsgSize
/// of 512 KiB) and low enough that no server can make the device hold gigabytes: each limit
/// bounds one thing a server controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max_message_bytes`: the largest server message body the device reads (the transport
    /// stops reading past it; the session fails, HTTP-level). The device's own reply is held to
    /// it too: Results that would pass it are answered 413 instead.
    pub max_message_bytes: u64,
    /// `max_value_bytes`: the largest Data an Add or Replace may store in one node (413
    /// otherwise; see [`Settings::max_value_bytes`]).
    pub max_value_bytes: u64,
    /// `max_object_bytes`: the largest large object (MoreData chunks, OMA DM large object
    /// handling) the device assembles; an object that announces or reaches more is answered 413
    /// and its chunks are dropped.
    pub max_object_bytes: u64,
    /// `max_messages`: client messages in one session; a server that keeps a session going past
    /// it fails the session.
    pub max_messages: u32,
}

impl Limits {
    /// 8 MiB per message, 1 MiB per node value, 4 MiB per large object, 200 messages.
    pub const DEFAULT: Limits = Limits {
        max_message_bytes: 8 << 20,
        max_value_bytes: crate::tree::DEFAULT_MAX_VALUE_BYTES,
        max_object_bytes: 4 << 20,
        max_messages: 200,
    };

    /// The limits a device's settings give (each key falls back to [`Limits::DEFAULT`]; a
    /// zero is taken as 1, the smallest bound that still lets a session start).
    pub fn from_settings(settings: &Settings) -> Limits {
        let d = Limits::DEFAULT;
        Limits {
            max_message_bytes: settings.u64_or("max_message_bytes", d.max_message_bytes).max(1),
            max_value_bytes: settings.max_value_bytes(),
            max_object_bytes: settings.u64_or("max_object_bytes", d.max_object_bytes).max(1),
            max_messages: settings.u64_or("max_messages", u64::from(d.max_messages)).clamp(1, u64::from(u32::MAX))
                as u32,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Computes the credentials that answer a server's challenge (`Chal` with `NextNonce`, OMA DM
/// auth-md5). The digest itself (MD5 over name, secret and nonce) belongs to the
/// enrollment/auth code; the session only decides when to ask and resends package 1 with the
/// answer.
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// Credentials for a challenge; `None` gives up (the session fails as unauthenticated).
    fn answer(&self, chal: &Chal) -> Option<Cred>;
}

/// The device's tree as a session step sees it.
pub struct DeviceCx<'a> {
    pub registry: &'a Registry,
    pub state: &'a mut TreeState,
    /// `env.now` is the moment of the step (used for the summary's duration too).
    pub env: &'a Env,
}

/// Whose fault a session error is (the binary maps it to an exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The server could not be reached (connection, TLS, timeout).
    Unreachable,
    /// The server broke the protocol.
    Protocol,
}

/// Why a session ended in failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The server's reply is not SyncML or not well-formed.
    #[error(
        "server message in reply to client message {reply_to} is not valid SyncML (line {line}, column {column}): {source}"
    )]
    Malformed { reply_to: u32, line: usize, column: usize, source: DecodeError },
    /// The server's header names another session.
    #[error("server message {msg_id} has SessionID {got:?}, this session is {expected:?}")]
    WrongSession { msg_id: String, expected: String, got: String },
    /// A Status or Results refers to a message the device never sent.
    #[error(
        "server message {msg_id}, {cmd} CmdID {cmd_id}: MsgRef {msg_ref:?} refers to no message the device sent (sent: {sent})"
    )]
    UnknownMsgRef { msg_id: String, cmd_id: String, cmd: String, msg_ref: String, sent: String },
    /// The server refused the device's header credentials (401/407).
    #[error("server message {msg_id} refused the device's credentials with status {code} (SyncHdr)")]
    Unauthenticated { msg_id: String, code: u16, chal: Option<Box<Chal>> },
    /// The server aborted the session with Alert 1223.
    #[error("server aborted the session (Alert 1223, message {msg_id} CmdID {cmd_id})")]
    Aborted { msg_id: String, cmd_id: String },
    /// The session went on longer than the configured bound.
    #[error("the server kept the session going past max_messages = {limit} client messages")]
    TooManyMessages { limit: u32 },
    /// The server's RespURI cannot be followed (not a URL, not HTTP, or a move from https to
    /// plain http).
    #[error("server message {msg_id} has RespURI {uri:?}: {reason}")]
    RespUri { msg_id: String, uri: String, reason: String },
    /// The transport failed (reported by the runner).
    #[error("{message}")]
    Transport { fault: Fault, message: String },
}

impl SessionError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            SessionError::Transport { fault, .. } => *fault,
            _ => Fault::Protocol,
        }
    }
}

/// Bookkeeping shared by every state.
struct Core {
    cfg: SessionConfig,
    gate: Box<dyn Gate>,
    mark: Mark,
    started: DateTime<Utc>,
    /// MsgIDs the device sent, in order.
    sent: Vec<u32>,
    /// Where to send the next message when the server gave a RespURI (absolute).
    resp_uri: Option<String>,
    /// The URL the session's messages go to before any RespURI (the runner's, after a
    /// fail-over); a relative RespURI is resolved against it.
    session_url: Option<String>,
    /// What the session accepts from the server (read from the settings at the start).
    limits: Limits,
    /// The MsgIDs of the server messages received so far.
    server_msg_ids: Vec<String>,
    /// A large object refused for its size whose remaining chunks are still arriving: they are
    /// answered 413 too, not taken for a new object.
    refused_object: Option<RefusedObject>,
    summary: Summary,
    /// Effects for the caller to carry out (client alerts are sent in-session instead).
    effects: Vec<Effect>,
    /// Client alerts CSPs asked for, sent in the next client message.
    pending_alerts: Vec<Alert>,
    /// A large object whose chunks are still arriving.
    pending_object: Option<PendingObject>,
    /// Package 1's commands, kept to send them again after an authentication challenge.
    package1: Vec<Command>,
    /// Challenges answered so far (at most one per session).
    auth_tries: u32,
    /// The last challenge the server put on a SyncHdr status (its NextNonce serves the next
    /// session, OMA DM auth-md5).
    last_chal: Option<Chal>,
    /// Simulated milliseconds the commands of the server message being handled took
    /// (template settings `slow_command_ms`, `slow_exec_ms`; see [`KeepAlive`]).
    exec_ms: u64,
    /// The reply held back while keep-alive messages go first, and how many are still due.
    held: Option<(SyncBody, u32)>,
    /// Every command the device sent that asks for a Status: (MsgID, CmdID, element name).
    sent_cmds: Vec<(u32, String, String)>,
    /// Those of `sent_cmds` no Status has answered yet.
    unstatused: Vec<(u32, String, String)>,
    /// A `missing-final` finding was recorded (once per session is enough).
    missing_final: bool,
}

/// When a session sends keep-alive messages (DMClient `EnableOmaDmKeepAliveMessage`,
/// Microsoft's DMClient CSP page): the device answers a server message only after executing all
/// of its commands; when that takes longer than `keepalive_after_ms` and any DMClient provider
/// has EnableOmaDmKeepAliveMessage true, the device first sends one message holding the SyncHdr
/// status and Alert 1224 `com.microsoft.mdm.requestpending` (no Final, as in the CSP page's
/// example) per `keepalive_after_ms` that passed before the last command finished (at most
/// [`KeepAlive::MAX`]), each answered by the server, then its real reply.
///
/// Execution time is simulated, never measured: the template settings `slow_command_ms` (every
/// executed command) and `slow_exec_ms` (each Exec, also inside Atomic/Sequence) say how long a
/// command takes, so the core stays free of clocks and a test is deterministic.
pub struct KeepAlive;

impl KeepAlive {
    /// mdmsim's default threshold (the CSP page gives none): well inside the usual 30-60 s HTTP
    /// timeouts of MDM servers.
    pub const DEFAULT_AFTER_MS: u64 = 20_000;
    /// Upper bound on keep-alive messages for one server message.
    pub const MAX: u32 = 10;

    /// Keep-alive messages due after commands that took `exec_ms`, with the threshold `after_ms`.
    pub fn due(exec_ms: u64, after_ms: u64) -> u32 {
        let after = after_ms.max(1);
        if exec_ms <= after { 0 } else { ((exec_ms - 1) / after).min(u64::from(KeepAlive::MAX)) as u32 }
    }

    /// The simulated time one executed command takes under `settings`.
    fn cost(cmd: &Command, settings: &crate::tree::Settings) -> u64 {
        let per_cmd = settings.u64_or("slow_command_ms", 0);
        let per_exec = settings.u64_or("slow_exec_ms", 0);
        let mut total = 0u64;
        let mut pending = vec![cmd];
        while let Some(c) = pending.pop() {
            match c {
                Command::Atomic(k) | Command::Sequence(k) => pending.extend(k.commands.iter()),
                Command::Exec(_) => total = total.saturating_add(per_cmd).saturating_add(per_exec),
                Command::Status(_) | Command::Results(_) => {}
                _ => total = total.saturating_add(per_cmd),
            }
        }
        total
    }
}

impl Core {
    fn header(&self, msg_id: u32) -> SyncHdr {
        SyncHdr {
            session_id: self.cfg.session_id.clone(),
            msg_id: msg_id.to_string(),
            target: self.cfg.server_url.clone(),
            source: self.cfg.device_id.clone(),
            cred: self.cfg.cred.clone().map(Box::new),
            ..SyncHdr::default()
        }
    }

    fn finish(mut self, now: DateTime<Utc>, outcome: Outcome) -> (Summary, Vec<Effect>) {
        self.summary.outcome = outcome;
        self.summary.duration_ms = (now - self.started).num_milliseconds().max(0) as u64;
        (self.summary, self.effects)
    }

    fn fail(self, error: SessionError, cx: &mut DeviceCx<'_>) -> Failed {
        cx.state.rollback(self.mark);
        let mut core = self;
        core.summary.error = Some(error.to_string());
        core.summary.fault = Some(error.fault());
        let (summary, _) = core.finish(cx.env.now, Outcome::Failed);
        Failed { summary, error }
    }

    /// Notes the commands of client message `msg_id` that the server must answer with a Status
    /// (everything but Status and Results).
    fn expect_statuses(&mut self, msg_id: u32, commands: &[Command]) {
        for c in commands {
            if matches!(c, Command::Status(_) | Command::Results(_)) {
                continue;
            }
            let entry = (msg_id, c.cmd_id().to_string(), c.name().to_string());
            self.sent_cmds.push(entry.clone());
            self.unstatused.push(entry);
        }
    }

    /// A finding about the server message `msg_id` as a whole.
    fn header_finding(&mut self, what: &str, msg_id: &str, why: String) {
        self.summary.findings.push(Finding {
            what: what.into(),
            msg_id: msg_id.to_string(),
            cmd_id: String::new(),
            cmd: "SyncHdr".into(),
            uri: None,
            why,
        });
    }

    /// The server has answered client message `reply_to`: its commands that got no Status are
    /// findings (`command-not-statused`); Windows carries on without them.
    fn check_statused(&mut self, reply_to: u32, server_msg: &str) {
        let (missed, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.unstatused).into_iter().partition(|(m, _, _)| *m <= reply_to);
        self.unstatused = rest;
        if missed.is_empty() {
            return;
        }
        let names: Vec<String> = missed.iter().map(|(_, id, cmd)| format!("{cmd} {id}")).collect();
        let m = missed.iter().map(|(m, _, _)| *m).max().unwrap_or(reply_to);
        self.header_finding(
            "command-not-statused",
            server_msg,
            format!(
                "the server answered client message {m} without a Status for {} (OMA DM asks for one per command); Windows carries on without it",
                names.join(", ")
            ),
        );
    }

    /// Records the MsgID of a server message; one already used in this session is a finding
    /// (`repeated-msgid`): OMA DM numbers a sender's messages uniquely within a session, and a
    /// server that repeats one is answering a message twice or lost count.
    fn note_msg_id(&mut self, msg_id: &str) {
        let id = msg_id.trim();
        if !self.server_msg_ids.iter().any(|m| m == id) {
            self.server_msg_ids.push(id.to_string());
            return;
        }
        self.header_finding(
            "repeated-msgid",
            id,
            format!(
                "the server already sent a message with MsgID {id} in this session (OMA DM: each message of a session has its own MsgID); the device answers it anyway, its Statuses refer to MsgID {id} again"
            ),
        );
    }

    /// Takes a RespURI from server message `msg_id`: resolved against the session URL, checked
    /// ([`judge_resp_uri`]), and used for the rest of the session. A move to another scheme or
    /// host is a finding (`respuri-host-change`); a move from https to http ends the session.
    fn follow_resp_uri(&mut self, msg_id: &str, uri: &str) -> Result<(), SessionError> {
        let base = self.session_url.clone().unwrap_or_else(|| self.cfg.server_url.clone());
        let current = self.resp_uri.clone().unwrap_or_else(|| base.clone());
        let err = |reason: String| SessionError::RespUri { msg_id: msg_id.to_string(), uri: uri.to_string(), reason };
        let next = judge_resp_uri(&base, &current, uri).map_err(err)?;
        if let Some(why) = next.moved {
            self.summary.findings.push(Finding {
                what: "respuri-host-change".into(),
                msg_id: msg_id.to_string(),
                cmd_id: String::new(),
                cmd: "SyncHdr".into(),
                uri: Some(next.url.clone()),
                why,
            });
        }
        self.resp_uri = Some(next.url);
        Ok(())
    }

    /// Holds the reply to `max_message_bytes` of Results data: a Get whose Results would pass it
    /// is answered 413 without them (a server could otherwise Get a large node thousands of times
    /// in one message and have the device build a reply of gigabytes).
    fn bound_results(&mut self, o: &mut CmdOutcome, reply_bytes: &mut u64, server_msg: &str) {
        let size: u64 = o.results.iter().map(|i| i.data.as_ref().map_or(0, |d| d.len() as u64)).sum();
        if size == 0 {
            return;
        }
        if reply_bytes.saturating_add(size) <= self.limits.max_message_bytes {
            *reply_bytes += size;
            return;
        }
        o.code = StatusCode::RequestEntityTooLarge;
        o.results.clear();
        self.summary.findings.push(Finding {
            what: "reply-too-large".into(),
            msg_id: server_msg.to_string(),
            cmd_id: o.cmd_id.clone(),
            cmd: o.cmd.to_string(),
            uri: None,
            why: format!(
                "its Results ({size} bytes) would take the device's reply past max_message_bytes = {} ({} bytes of Results already in it); answered 413 (request entity too large) without them",
                self.limits.max_message_bytes, reply_bytes
            ),
        });
    }

    /// A large object refused for its size: a finding, and its later chunks are refused too.
    fn refuse_object(&mut self, cmd: &Command, target: Option<String>, what: String, more: bool, server_msg: &str) {
        self.summary.findings.push(Finding {
            what: "object-too-large".into(),
            msg_id: server_msg.to_string(),
            cmd_id: cmd.cmd_id().to_string(),
            cmd: cmd.name().to_string(),
            uri: target.clone(),
            why: format!(
                "the large object (MoreData chunks) {what}, over max_object_bytes = {}; answered 413 (request entity too large) and its chunks dropped",
                self.limits.max_object_bytes
            ),
        });
        self.refused_object = more.then(|| RefusedObject { cmd: cmd.name().to_string(), target });
    }

    fn record_effects(&mut self, effects: Vec<Effect>) {
        for e in effects {
            self.summary.effects.push(EffectRecord::from(&e));
            match e {
                Effect::Alert { code, item } => {
                    self.pending_alerts.push(Alert { data: code.to_string(), items: vec![item], ..Alert::default() })
                }
                other => self.effects.push(other),
            }
        }
    }
}

/// Builds package 1 (MS-MDM) and waits for the server's answer.
///
/// The session starts from the tree as it is now: a later failure rolls back to this point.
pub fn start(cfg: SessionConfig, gate: Box<dyn Gate>, cx: &mut DeviceCx<'_>) -> (AwaitingServer, SyncMl) {
    let now = cx.env.now;
    let summary = Summary::new(&cfg.device_id, &cfg.session_id, cfg.mode, cfg.trigger, cfg.alert.code(), now);
    let mut core = Core {
        mark: cx.state.mark(),
        started: now,
        sent: Vec::new(),
        resp_uri: None,
        session_url: None,
        limits: Limits::from_settings(&cx.env.settings),
        server_msg_ids: Vec::new(),
        refused_object: None,
        summary,
        effects: Vec::new(),
        pending_alerts: Vec::new(),
        package1: Vec::new(),
        pending_object: None,
        auth_tries: 0,
        last_chal: None,
        exec_ms: 0,
        held: None,
        sent_cmds: Vec::new(),
        unstatused: Vec::new(),
        missing_final: false,
        gate,
        cfg,
    };
    let mut body = Body::default();
    body.push(Command::Alert(Alert { data: core.cfg.alert.code().to_string(), ..Alert::default() }));
    if let Some(login) = core.cfg.login_status {
        body.push(Command::Alert(Alert {
            data: AlertCode::ClientEvent.code().to_string(),
            items: vec![Item {
                meta: Some(Box::new(Meta::typed(LOGIN_STATUS_TYPE, None))),
                data: Some(login.as_str().to_string()),
                ..Item::default()
            }],
            ..Alert::default()
        }));
    }
    for a in std::mem::take(&mut core.cfg.extra_alerts) {
        body.push(Command::Alert(a));
    }
    let devinfo = devinfo_items(&core.cfg.device_id, cx);
    body.push(Command::Replace(ItemCmd { items: devinfo, ..ItemCmd::default() }));
    core.package1 = body.commands.clone();
    core.expect_statuses(1, &body.commands);
    let msg = SyncMl { hdr: core.header(1), body: SyncBody { commands: body.commands, final_: true } };
    core.sent.push(1);
    core.summary.messages_sent = 1;
    (AwaitingServer { core }, msg)
}

/// Starts a session with the default gate ([`AllowAll`]).
pub fn start_default(cfg: SessionConfig, cx: &mut DeviceCx<'_>) -> (AwaitingServer, SyncMl) {
    start(cfg, Box::new(AllowAll), cx)
}

/// `./DevInfo/*` read through the tree engine, as Replace items with Source LocURIs.
fn devinfo_items(device_id: &str, cx: &mut DeviceCx<'_>) -> Vec<Item> {
    let mut tree = Tree::new(cx.registry, cx.state, cx.env);
    let mut items = Vec::new();
    for name in DEVINFO_NODES {
        let uri = format!("./DevInfo/{name}");
        let out = tree.execute(&Command::Get(ItemCmd {
            cmd_id: "1".into(),
            items: vec![Item::target(&uri)],
            ..ItemCmd::default()
        }));
        let value = out.first().filter(|o| o.code == StatusCode::Ok).and_then(|o| o.results.first()?.data.clone());
        match (name, value) {
            (_, Some(v)) => items.push(Item::source_data(&uri, &v)),
            // The DevId is the one value a server cannot do without (Fleet matches on it).
            ("DevId", None) => items.push(Item::source_data(&uri, device_id)),
            _ => {}
        }
    }
    items
}

/// A client message under construction: numbers its commands 1, 2, 3...
#[derive(Default)]
struct Body {
    commands: Vec<Command>,
}

impl Body {
    fn next_id(&self) -> String {
        // Formatted without `fmt`: one per command of every reply.
        itoa::Buffer::new().format(self.commands.len() + 1).to_string()
    }

    fn push(&mut self, mut cmd: Command) {
        let id = self.next_id();
        match &mut cmd {
            Command::Alert(a) => a.cmd_id = id,
            Command::Add(c) | Command::Replace(c) | Command::Delete(c) | Command::Get(c) | Command::Exec(c) => {
                c.cmd_id = id
            }
            Command::Atomic(c) | Command::Sequence(c) => c.cmd_id = id,
            Command::Status(s) => s.cmd_id = id,
            Command::Results(r) => r.cmd_id = id,
            Command::Unsupported { cmd_id, .. } => *cmd_id = id,
        }
        self.commands.push(cmd);
    }

    fn status(&mut self, msg_ref: &str, cmd_ref: &str, cmd: &str, code: StatusCode, target_refs: Vec<String>) {
        self.push(Command::Status(Status {
            msg_ref: msg_ref.to_string(),
            cmd_ref: cmd_ref.to_string(),
            cmd: cmd.to_string(),
            target_refs,
            data: code.text(),
            ..Status::default()
        }));
    }
}

/// Waiting for the server's answer to the last client message.
pub struct AwaitingServer {
    core: Core,
}

/// What a server message led to.
// One value per session step, matched at once; boxing the state would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Next {
    /// Send this message and wait again.
    Send(AwaitingServer, SyncMl),
    /// The session is over.
    Finished(Finished),
    /// The session failed; the tree was rolled back.
    Failed(Failed),
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Next::Send(_, m) => write!(f, "Send(MsgID {})", m.hdr.msg_id),
            Next::Finished(_) => f.write_str("Finished"),
            Next::Failed(x) => write!(f, "Failed({})", x.error),
        }
    }
}

impl AwaitingServer {
    /// The MsgID of the client message whose answer is awaited.
    pub fn awaiting_reply_to(&self) -> u32 {
        self.core.sent.last().copied().unwrap_or(1)
    }

    /// The RespURI the server asked for, if any, as an absolute URL (honoured for the rest of
    /// the session).
    pub fn resp_uri(&self) -> Option<&str> {
        self.core.resp_uri.as_deref()
    }

    /// Tells the session the URL its messages are posted to (before any RespURI): a relative
    /// RespURI is resolved against it, and a RespURI that leaves its scheme or host is judged
    /// against it. Without it the session uses its SyncHdr Target (the server address).
    pub fn set_session_url(&mut self, url: &str) {
        self.core.session_url = Some(url.to_string());
    }

    /// The limits this session holds the server to.
    pub fn limits(&self) -> Limits {
        self.core.limits
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.core.cfg
    }

    /// The summary so far.
    pub fn summary(&self) -> &Summary {
        &self.core.summary
    }

    /// The server answered with an HTTP 200 and an empty body: the session is over
    /// (as Fleet and other MDM servers end a session).
    ///
    /// An empty answer to a keep-alive message ends the session too; the reply it held back is
    /// never sent, which is recorded as a finding (`ended-while-pending`).
    pub fn receive_empty(mut self, cx: &mut DeviceCx<'_>) -> Finished {
        let reply_to = self.awaiting_reply_to();
        if reply_to == 1 && self.core.held.is_none() {
            // Fleet ends sessions with an empty answer to the device's last message; as the
            // answer to package 1 it means the server did nothing at all.
            self.core.unstatused.clear();
            self.core.header_finding(
                "empty-reply-to-package-1",
                "",
                "the server answered package 1 with an empty HTTP 200: no SyncHdr status, no Status for the session alert or DevInfo, no command; Windows ends the session as completed".into(),
            );
        } else if self.core.held.is_none() {
            self.core.check_statused(reply_to, "");
        }
        if self.core.held.take().is_some() {
            let msg_id = self.awaiting_reply_to().to_string();
            self.core.summary.findings.push(Finding {
                what: "ended-while-pending".into(),
                msg_id,
                cmd_id: String::new(),
                cmd: "SyncHdr".into(),
                uri: None,
                why: "the server ended the session (empty answer) while the device was still executing its commands (keep-alive sent); their statuses were never delivered".into(),
            });
        }
        let chal = self.core.last_chal.clone();
        let (summary, effects) = self.core.finish(cx.env.now, Outcome::Completed);
        Finished { summary, effects, chal }
    }

    /// The transport failed: ends the session and rolls the tree back.
    pub fn fail(self, error: SessionError, cx: &mut DeviceCx<'_>) -> Failed {
        self.core.fail(error, cx)
    }

    /// Decodes a server message body and handles it (see [`AwaitingServer::receive_message`]).
    pub fn receive(self, text: &str, cx: &mut DeviceCx<'_>) -> Next {
        match syncml::decode(text) {
            Ok(msg) => self.receive_message(&msg, cx),
            Err(source) => Next::Failed(self.malformed(text, source, cx)),
        }
    }

    /// The server message `text` did not decode: the session fails, its error placed at the
    /// line and column of `text` where decoding stopped. For a caller that decoded the body
    /// itself (to show it) and must not decode it twice.
    pub fn malformed(self, text: &str, source: DecodeError, cx: &mut DeviceCx<'_>) -> Failed {
        let reply_to = self.awaiting_reply_to();
        let (line, column) = syncml::line_col(text, source.offset());
        let mut core = self.core;
        core.summary.messages_received += 1;
        core.fail(SessionError::Malformed { reply_to, line, column, source }, cx)
    }

    /// Checks the header, executes the commands in order and builds the reply (OMA DM 1.2).
    pub fn receive_message(self, msg: &SyncMl, cx: &mut DeviceCx<'_>) -> Next {
        let mut core = self.core;
        core.summary.messages_received += 1;
        core.note_msg_id(&msg.hdr.msg_id);
        match check(&mut core, msg) {
            Err(e) => return Next::Failed(core.fail(e, cx)),
            Ok(Some(cred)) => {
                // Challenged and answered: package 1 again, with credentials (OMA DM auth-md5).
                core.cfg.cred = Some(cred);
                core.unstatused.clear();
                let commands = core.package1.clone();
                return core.send(SyncBody { commands, final_: true }, cx);
            }
            Ok(None) => {}
        }
        let resp_uri = msg.hdr.resp_uri.as_deref().map(str::trim).filter(|u| !u.is_empty());
        if let Some(Err(e)) = resp_uri.map(|uri| core.follow_resp_uri(&msg.hdr.msg_id, uri)) {
            return Next::Failed(core.fail(e, cx));
        }
        let server_msg = msg.hdr.msg_id.as_str();
        let reply_to = core.sent.last().copied().unwrap_or(1);
        core.check_statused(reply_to, server_msg);
        // A server message that carries no command (only Status/Results) ends the session,
        // Final or not: a Status-only message cannot be part of an unfinished package, and
        // answering it with Alert 1222 would loop with servers that never send Final.
        // Alert 1222 is flow control, not work: a server that answers the device's 1222 with
        // its own (each side waiting for the other's next message) has nothing more to send.
        let has_commands = msg.body.commands.iter().any(|c| match c {
            Command::Status(_) | Command::Results(_) => false,
            Command::Alert(a) => AlertCode::parse(&a.data) != Some(AlertCode::NextMessage),
            _ => true,
        });
        if !has_commands && !msg.body.final_ && core.held.is_none() {
            if !core.missing_final {
                core.missing_final = true;
                core.header_finding(
                    "missing-final",
                    server_msg,
                    "the server message has no <Final/> and no command (only Status/Results, or Alert 1222): its package is over, so the device ends the session instead of asking for the next message with Alert 1222 again".into(),
                );
            }
            let chal = core.last_chal.clone();
            let (summary, effects) = core.finish(cx.env.now, Outcome::Completed);
            return Next::Finished(Finished { summary, effects, chal });
        }
        if let Some((held, due)) = core.held.take() {
            return core.after_keep_alive(msg, held, due, cx);
        }
        core.exec_ms = 0;
        let mut body = Body::default();
        // The SyncHdr status always comes first.
        body.status(server_msg, "0", "SyncHdr", StatusCode::Ok, Vec::new());
        let header_only = body.commands.len();
        // Bytes of Results data in the reply so far (bounded by max_message_bytes).
        let mut reply_bytes = 0u64;
        for cmd in &msg.body.commands {
            count(&mut core.summary.commands_received, cmd);
            match cmd {
                // Never status a Status or Results.
                Command::Status(_) | Command::Results(_) => continue,
                Command::Alert(a) if AlertCode::parse(&a.data) == Some(AlertCode::SessionAbort) => {
                    let e = SessionError::Aborted { msg_id: server_msg.to_string(), cmd_id: a.cmd_id.clone() };
                    return Next::Failed(core.fail(e, cx));
                }
                _ => {}
            }
            let assembled;
            let outcomes = match core.chunk(cmd, &mut body, server_msg) {
                Chunk::Whole => core.run(cmd, server_msg, cx),
                Chunk::Status(code) => vec![CmdOutcome::new(cmd.cmd_id(), cmd.name(), code)],
                Chunk::Complete(full) => {
                    assembled = *full;
                    core.run(&assembled, server_msg, cx)
                }
            };
            if no_resp(cmd) {
                continue;
            }
            let targets = targets_by_cmd_id(cmd);
            for mut o in outcomes {
                core.bound_results(&mut o, &mut reply_bytes, server_msg);
                *core.summary.statuses_sent.entry(o.code.code()).or_default() += 1;
                core.summary.commands.push(CommandRecord {
                    msg_id: server_msg.to_string(),
                    cmd_id: o.cmd_id.clone(),
                    cmd: o.cmd.to_string(),
                    targets: if o.target_refs.is_empty() {
                        targets.iter().filter(|(id, _)| *id == o.cmd_id).flat_map(|(_, t)| t.clone()).collect()
                    } else {
                        o.target_refs.clone()
                    },
                    status: o.code.code(),
                });
                body.status(server_msg, &o.cmd_id, &o.cmd, o.code, o.target_refs.clone());
                if !o.results.is_empty() {
                    body.push(Command::Results(Results {
                        msg_ref: server_msg.to_string(),
                        cmd_ref: o.cmd_id.clone(),
                        items: o.results,
                        ..Results::default()
                    }));
                }
            }
        }
        for a in std::mem::take(&mut core.pending_alerts) {
            body.push(Command::Alert(a));
        }
        let final_ = msg.body.final_;
        if !final_ {
            // The server's package goes on: ask for its next message (OMA DM: a package in
            // several messages).
            body.push(Command::Alert(Alert { data: AlertCode::NextMessage.code().to_string(), ..Alert::default() }));
        } else if body.commands.len() == header_only {
            // Nothing to send but the SyncHdr status: the session is over (MS-MDM: a client must
            // not send such a message).
            let chal = core.last_chal.clone();
            let (summary, effects) = core.finish(cx.env.now, Outcome::Completed);
            return Next::Finished(Finished { summary, effects, chal });
        }
        let mut reply = SyncBody { commands: body.commands, final_ };
        let after = cx.env.settings.u64_or("keepalive_after_ms", KeepAlive::DEFAULT_AFTER_MS);
        let due = KeepAlive::due(core.exec_ms, after);
        let enabled = crate::csp::dmclient::provider_ids(cx.state)
            .iter()
            .any(|p| crate::csp::dmclient::keep_alive_enabled(cx.state, p));
        if enabled && due > 0 {
            // The keep-alive message acknowledges this message's SyncHdr; the held reply gets
            // the status of the server's last answer instead.
            reply.commands.remove(0);
            return core.keep_alive(server_msg, reply, due, cx);
        }
        core.send(reply, cx)
    }
}

impl Core {
    /// Sends one keep-alive message (the SyncHdr status of `server_msg` and the request-pending
    /// alert, no Final) and holds `reply` back; `due` counts this one.
    fn keep_alive(mut self, server_msg: &str, reply: SyncBody, due: u32, cx: &mut DeviceCx<'_>) -> Next {
        let mut body = Body::default();
        body.status(server_msg, "0", "SyncHdr", StatusCode::Ok, Vec::new());
        body.push(Command::Alert(crate::csp::dmclient::request_pending_alert("")));
        self.held = Some((reply, due - 1));
        self.summary.keep_alives += 1;
        self.send(SyncBody { commands: body.commands, final_: false }, cx)
    }

    /// The server answered a keep-alive message: another keep-alive while some are due, then
    /// the held reply, opened by the SyncHdr status of this answer. Commands in an answer to a
    /// keep-alive are not executed (the device is still busy with the previous package); each is
    /// recorded as a finding.
    fn after_keep_alive(mut self, msg: &SyncMl, held: SyncBody, due: u32, cx: &mut DeviceCx<'_>) -> Next {
        let server_msg = msg.hdr.msg_id.as_str();
        for cmd in &msg.body.commands {
            count(&mut self.summary.commands_received, cmd);
            if matches!(cmd, Command::Status(_) | Command::Results(_)) {
                continue;
            }
            self.summary.findings.push(Finding {
                what: "command-while-pending".into(),
                msg_id: server_msg.to_string(),
                cmd_id: cmd.cmd_id().to_string(),
                cmd: cmd.name().to_string(),
                uri: None,
                why: "the server sent a command in its answer to a keep-alive (request pending) message; the device does not execute it".into(),
            });
        }
        if due > 0 {
            return self.keep_alive(server_msg, held, due, cx);
        }
        let mut body = Body::default();
        body.status(server_msg, "0", "SyncHdr", StatusCode::Ok, Vec::new());
        for c in held.commands {
            body.push(c);
        }
        self.send(SyncBody { commands: body.commands, final_: held.final_ }, cx)
    }
}

/// The item targets of a command and of its Atomic/Sequence children, by CmdID.
fn targets_by_cmd_id(cmd: &Command) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut pending = vec![cmd];
    while let Some(c) = pending.pop() {
        match c {
            Command::Atomic(k) | Command::Sequence(k) => pending.extend(k.commands.iter()),
            Command::Add(i) | Command::Replace(i) | Command::Delete(i) | Command::Get(i) | Command::Exec(i) => {
                out.push((i.cmd_id.clone(), i.items.iter().filter_map(|it| it.target.clone()).collect()));
            }
            _ => {}
        }
    }
    out
}

/// Where a command stands with respect to large objects (OMA DM 1.2 large object handling).
enum Chunk {
    /// An ordinary command: execute it.
    Whole,
    /// A chunk buffered (213) or refused (400, 424): answer with this status only.
    Status(StatusCode),
    /// The last chunk arrived: execute the reassembled command.
    Complete(Box<Command>),
}

/// A large object being received.
struct PendingObject {
    /// The first chunk's command (its Meta, target and kind are the object's).
    first: Command,
    target: Option<String>,
    data: String,
    /// The announced total size (Meta/Size on the first chunk).
    size: Option<u64>,
}

/// A large object refused for its size whose later chunks are refused with it.
struct RefusedObject {
    /// The command name of its chunks.
    cmd: String,
    target: Option<String>,
}

/// Where a RespURI takes the session.
#[derive(Debug, PartialEq, Eq)]
struct RespUriMove {
    /// The absolute URL to send the next messages to.
    url: String,
    /// Why it is a `respuri-host-change` finding (another scheme, host or port).
    moved: Option<String>,
}

/// Judges the RespURI `uri` of a server message: resolved against the session URL `base` (the
/// way the runner resolves a relative one) and compared with `current`, the URL the session
/// talks to now. Only http and https carry SyncML; a move from https to http is refused, since
/// the device's credentials, tree values and the server's commands would then travel in clear
/// (OMA DM leaves RespURI to the server's discretion; a device must not give up TLS for it). A
/// move to another host or port, or from http to https, is followed and noted.
fn judge_resp_uri(base: &str, current: &str, uri: &str) -> Result<RespUriMove, String> {
    let next = match url::Url::parse(base) {
        Ok(b) => b.join(uri),
        Err(_) => url::Url::parse(uri),
    }
    .map_err(|e| format!("not a URL ({e}); the session cannot go on"))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} cannot carry the session (only http and https)", next.scheme()));
    }
    let Ok(now) = url::Url::parse(current) else { return Ok(RespUriMove { url: next.into(), moved: None }) };
    if now.scheme() == "https" && next.scheme() == "http" {
        return Err(format!(
            "it would move the session from {} to plain http at {}; refused (the device's messages would leave TLS)",
            now.origin().ascii_serialization(),
            next.origin().ascii_serialization()
        ));
    }
    let moved = (now.origin() != next.origin()).then(|| {
        format!(
            "RespURI moves the session from {} to {}; mdmsim follows it for the rest of the session, as OMA DM's RespURI asks",
            now.origin().ascii_serialization(),
            next.origin().ascii_serialization()
        )
    });
    Ok(RespUriMove { url: next.into(), moved })
}

impl Core {
    /// Applies the gate, then executes one server command on the tree.
    fn run(&mut self, cmd: &Command, server_msg: &str, cx: &mut DeviceCx<'_>) -> Vec<CmdOutcome> {
        let gcx =
            GateCx { mode: self.cfg.mode, trigger: self.cfg.trigger, profile: cx.env.profile, msg_id: server_msg };
        let verdict = self.gate.check(&gcx, cmd);
        self.summary.findings.extend(verdict.findings);
        match (verdict.refuse, cmd) {
            (Some(code), _) => refused(cmd, code),
            (None, Command::Alert(a)) => {
                let code = if a.cmd_id.is_empty() { StatusCode::BadRequest } else { StatusCode::Ok };
                vec![CmdOutcome::new(&a.cmd_id, "Alert", code)]
            }
            (None, _) => {
                self.note_oversized_values(cmd, server_msg);
                self.exec_ms = self.exec_ms.saturating_add(KeepAlive::cost(cmd, &cx.env.settings));
                let mut tree = Tree::new(cx.registry, cx.state, cx.env);
                let out = tree.execute(cmd);
                let effects = std::mem::take(&mut tree.effects);
                self.record_effects(effects);
                out
            }
        }
    }

    /// The Add and Replace items of `cmd` (Atomic and Sequence children included) whose Data is
    /// over `max_value_bytes`: the tree answers them 413; each is a `value-too-large` finding
    /// that says which limit refused it.
    fn note_oversized_values(&mut self, cmd: &Command, server_msg: &str) {
        let limit = self.limits.max_value_bytes;
        let mut pending = vec![cmd];
        while let Some(c) = pending.pop() {
            let items = match c {
                Command::Atomic(k) | Command::Sequence(k) => {
                    pending.extend(k.commands.iter().rev());
                    continue;
                }
                Command::Add(i) | Command::Replace(i) => i,
                _ => continue,
            };
            for item in &items.items {
                let len = item.data.as_ref().map_or(0, String::len) as u64;
                if len <= limit {
                    continue;
                }
                self.summary.findings.push(Finding {
                    what: "value-too-large".into(),
                    msg_id: server_msg.to_string(),
                    cmd_id: items.cmd_id.clone(),
                    cmd: c.name().to_string(),
                    uri: item.target.clone(),
                    why: format!(
                        "its Data has {len} bytes, over max_value_bytes = {limit}; answered 413 (request entity too large) and nothing was stored"
                    ),
                });
            }
        }
    }

    /// Large-object reception (OMA DM 1.2 large object handling; Microsoft's OMA DM protocol
    /// support page): each chunk (an item with MoreData) is answered 213 and buffered; the last
    /// one completes the object, whose size is checked against the first chunk's Meta/Size (424
    /// on mismatch) before it is executed as one command. A different command before the last
    /// chunk drops the object with Alert 1225. An object that announces a Meta/Size over
    /// `max_object_bytes`, or grows past it, is answered 413 (request entity too large), its
    /// buffered chunks are dropped, and so are its remaining chunks (413 each).
    fn chunk(&mut self, cmd: &Command, body: &mut Body, server_msg: &str) -> Chunk {
        let c = match cmd {
            Command::Add(c) | Command::Replace(c) | Command::Exec(c) => Some(c),
            _ => None,
        };
        let more = c.is_some_and(|c| c.items.last().is_some_and(|i| i.more_data));
        let cap = self.limits.max_object_bytes;
        if let Some(mut p) = self.pending_object.take() {
            let same =
                c.filter(|c| c.items.len() == 1 && c.items[0].target == p.target && cmd.name() == p.first.name());
            if let Some(c) = same {
                let piece = c.items[0].data.as_deref().unwrap_or_default();
                let total = (p.data.len() as u64).saturating_add(piece.len() as u64);
                if total > cap {
                    let what = format!("reached {total} bytes with this chunk");
                    self.refuse_object(cmd, p.target, what, more, server_msg);
                    return Chunk::Status(StatusCode::RequestEntityTooLarge);
                }
                p.data.push_str(piece);
                if more {
                    self.pending_object = Some(p);
                    return Chunk::Status(StatusCode::ChunkedItemAccepted);
                }
                if p.size.is_some_and(|n| n != p.data.len() as u64) {
                    return Chunk::Status(StatusCode::SizeMismatch);
                }
                let mut full = p.first;
                if let Command::Add(f) | Command::Replace(f) | Command::Exec(f) = &mut full {
                    f.cmd_id = c.cmd_id.clone();
                    if let Some(item) = f.items.first_mut() {
                        item.data = Some(p.data);
                        item.more_data = false;
                    }
                }
                return Chunk::Complete(Box::new(full));
            }
            body.push(Command::Alert(Alert {
                data: AlertCode::NoEndOfData.code().to_string(),
                items: vec![Item { source: p.target, ..Item::default() }],
                ..Alert::default()
            }));
        }
        if let Some(r) = self.refused_object.take() {
            // The rest of an object refused for its size: refused as well, up to its last chunk.
            if c.is_some_and(|c| c.items.len() == 1 && c.items[0].target == r.target && cmd.name() == r.cmd) {
                if more {
                    self.refused_object = Some(r);
                }
                return Chunk::Status(StatusCode::RequestEntityTooLarge);
            }
        }
        let Some(c) = c.filter(|_| more) else { return Chunk::Whole };
        if c.items.len() != 1 {
            // Only single-item commands are chunked by the servers we know; refuse the rest.
            return Chunk::Status(StatusCode::BadRequest);
        }
        let item = &c.items[0];
        let size: Option<u64> = [item.meta.as_ref(), c.meta.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|m| m.size.as_deref().and_then(|s| s.trim().parse().ok()));
        let first = item.data.as_ref().map_or(0, String::len) as u64;
        if size.is_some_and(|n| n > cap) || first > cap {
            let what = match size {
                Some(n) if n > cap => format!("announces Meta/Size {n} bytes"),
                _ => format!("has {first} bytes in its first chunk"),
            };
            self.refuse_object(cmd, item.target.clone(), what, true, server_msg);
            return Chunk::Status(StatusCode::RequestEntityTooLarge);
        }
        self.pending_object = Some(PendingObject {
            first: cmd.clone(),
            target: item.target.clone(),
            data: item.data.clone().unwrap_or_default(),
            size,
        });
        Chunk::Status(StatusCode::ChunkedItemAccepted)
    }

    /// Sends the next client message (bounded by `max_messages`).
    fn send(mut self, body: SyncBody, cx: &mut DeviceCx<'_>) -> Next {
        if self.summary.messages_sent >= self.limits.max_messages {
            let e = SessionError::TooManyMessages { limit: self.limits.max_messages };
            return Next::Failed(self.fail(e, cx));
        }
        let msg_id = self.sent.last().copied().unwrap_or(0) + 1;
        self.sent.push(msg_id);
        self.expect_statuses(msg_id, &body.commands);
        self.summary.messages_sent += 1;
        let reply = SyncMl { hdr: self.header(msg_id), body };
        Next::Send(AwaitingServer { core: self }, reply)
    }
}

/// The header and reference checks that end a session before anything is executed. `Ok(Some)`:
/// the server challenged the device's header and these credentials answer it.
fn check(core: &mut Core, msg: &SyncMl) -> Result<Option<Cred>, SessionError> {
    let hdr = &msg.hdr;
    if hdr.session_id.trim() != core.cfg.session_id {
        return Err(SessionError::WrongSession {
            msg_id: hdr.msg_id.clone(),
            expected: core.cfg.session_id.clone(),
            got: hdr.session_id.clone(),
        });
    }
    if !hdr.target.trim().is_empty() && hdr.target.trim() != core.cfg.device_id {
        core.summary.findings.push(Finding {
            what: "header-target".into(),
            msg_id: hdr.msg_id.clone(),
            cmd_id: String::new(),
            cmd: "SyncHdr".into(),
            uri: Some(hdr.target.clone()),
            why: format!(
                "the SyncHdr Target should be the DeviceID {}; Windows takes the message anyway",
                core.cfg.device_id
            ),
        });
    }
    let sent = &core.sent;
    let known = |r: &str| r.trim().is_empty() || r.trim().parse::<u32>().is_ok_and(|n| sent.contains(&n));
    for cmd in &msg.body.commands {
        let (cmd_id, msg_ref, name) = match cmd {
            Command::Status(s) => (&s.cmd_id, &s.msg_ref, "Status"),
            Command::Results(r) => (&r.cmd_id, &r.msg_ref, "Results"),
            _ => continue,
        };
        if !known(msg_ref) {
            return Err(SessionError::UnknownMsgRef {
                msg_id: hdr.msg_id.clone(),
                cmd_id: cmd_id.clone(),
                cmd: name.into(),
                msg_ref: msg_ref.clone(),
                sent: sent.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            });
        }
    }
    let reply_to = core.sent.last().copied().unwrap_or(1);
    for cmd in &msg.body.commands {
        let Command::Status(s) = cmd else { continue };
        let code = StatusCode::parse(&s.data).map_or(0, StatusCode::code);
        *core.summary.statuses_received.entry(code).or_default() += 1;
        if s.cmd_ref.trim() != "0" {
            let m = s.msg_ref.trim().parse::<u32>().unwrap_or(reply_to);
            let cmd_ref = s.cmd_ref.trim();
            if let Some(i) = core.unstatused.iter().position(|(um, id, _)| *um == m && id == cmd_ref) {
                core.unstatused.remove(i);
            } else if !core.sent_cmds.iter().any(|(sm, id, _)| *sm == m && id == cmd_ref) {
                let sent: Vec<String> =
                    core.sent_cmds.iter().filter(|(sm, _, _)| *sm == m).map(|(_, id, c)| format!("{c} {id}")).collect();
                core.summary.findings.push(Finding {
                    what: "status-unknown-cmdref".into(),
                    msg_id: hdr.msg_id.clone(),
                    cmd_id: s.cmd_id.clone(),
                    cmd: "Status".into(),
                    uri: None,
                    why: format!(
                        "the Status names CmdRef {cmd_ref} of client message {m}, a command the device never sent (it sent {}); Windows ignores it",
                        if sent.is_empty() { "no command that asks for a Status".to_string() } else { sent.join(", ") }
                    ),
                });
            }
            continue;
        }
        if let Some(c) = &s.chal {
            core.last_chal = Some((**c).clone());
        }
        if matches!(code, 401 | 407) {
            let answer = match (&core.cfg.auth, &s.chal) {
                (Some(auth), Some(chal)) if core.auth_tries == 0 => auth.answer(chal),
                _ => None,
            };
            core.auth_tries += 1;
            return match answer {
                Some(cred) => Ok(Some(cred)),
                None => Err(SessionError::Unauthenticated { msg_id: hdr.msg_id.clone(), code, chal: s.chal.clone() }),
            };
        }
    }
    Ok(None)
}

/// The statuses of a command the gate refused: the code for it, 215 for each child.
fn refused(cmd: &Command, code: StatusCode) -> Vec<CmdOutcome> {
    fn children(cmd: &Command, out: &mut Vec<CmdOutcome>) {
        if let Command::Atomic(c) | Command::Sequence(c) = cmd {
            for child in &c.commands {
                out.push(CmdOutcome::new(child.cmd_id(), child.name(), StatusCode::NotExecuted));
                children(child, out);
            }
        }
    }
    let mut out = vec![CmdOutcome::new(cmd.cmd_id(), cmd.name(), code)];
    children(cmd, &mut out);
    out
}

/// True when the server asked for no status (NoResp on a top-level command).
fn no_resp(cmd: &Command) -> bool {
    match cmd {
        Command::Alert(a) => a.no_resp,
        Command::Add(c) | Command::Replace(c) | Command::Delete(c) | Command::Get(c) | Command::Exec(c) => c.no_resp,
        Command::Atomic(c) | Command::Sequence(c) => c.no_resp,
        _ => false,
    }
}

fn count(into: &mut BTreeMap<String, u32>, cmd: &Command) {
    *into.entry(cmd.name().to_string()).or_default() += 1;
    if let Command::Atomic(c) | Command::Sequence(c) = cmd {
        for child in &c.commands {
            count(into, child);
        }
    }
}

/// A session that ended normally. Its tree changes are still in the journal: persist them,
/// then `commit()` the state.
#[derive(Debug)]
pub struct Finished {
    pub summary: Summary,
    effects: Vec<Effect>,
    chal: Option<Chal>,
}

impl Finished {
    /// Effects for the caller to carry out (fetches, unenrollment, session requests), in the
    /// order CSPs produced them. Client alerts were already sent in the session.
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }

    /// The last challenge the server sent on a SyncHdr status: its NextNonce is the nonce of
    /// the next session's credentials (OMA DM auth-md5).
    pub fn challenge(&self) -> Option<&Chal> {
        self.chal.as_ref()
    }
}

/// A session that ended with an error; the tree is back where it was at the session start.
#[derive(Debug)]
pub struct Failed {
    pub summary: Summary,
    pub error: SessionError,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::session::Verdict;
    use crate::syncml::Container;
    use crate::tree::Profile;

    const DEV: &str = "0123456789ABCDEF0123456789ABCDEF";
    const SRV: &str = "https://mdm.example/MDM.svc";

    struct Rig {
        registry: Registry,
        state: TreeState,
        env: Env,
    }

    impl Rig {
        fn new() -> Rig {
            let mut state = TreeState::new();
            state.set_value("DevInfo/DevId", DEV);
            state.set_value("DevInfo/Man", "Contoso");
            state.set_value("DevInfo/Mod", "Laptop 7");
            state.set_value("DevDetail/Ext/Microsoft/DeviceName", "PC-1");
            state.commit();
            let env = Env::new(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(), Profile::Win10);
            Rig { registry: crate::csp::registry(), state, env }
        }

        /// The rig with these `[behaviour]` settings.
        fn with(mut self, settings: &[(&str, &str)]) -> Rig {
            let map = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            self.env.settings = Arc::new(Settings(map));
            self
        }

        fn cx(&mut self) -> DeviceCx<'_> {
            DeviceCx { registry: &self.registry, state: &mut self.state, env: &self.env }
        }

        fn start(&mut self) -> (AwaitingServer, SyncMl) {
            let mut cfg = SessionConfig::new(DEV, SRV, "7", Mode::Maintenance, Trigger::Manual);
            cfg.login_status = Some(LoginStatus::User);
            start_default(cfg, &mut self.cx())
        }
    }

    fn server(msg_id: &str, commands: Vec<Command>, final_: bool) -> SyncMl {
        let mut all = vec![Command::Status(Status {
            cmd_id: "1".into(),
            msg_ref: "1".into(),
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            data: "200".into(),
            ..Status::default()
        })];
        all.extend(commands);
        SyncMl {
            hdr: SyncHdr {
                session_id: "7".into(),
                msg_id: msg_id.into(),
                target: DEV.into(),
                source: SRV.into(),
                ..SyncHdr::default()
            },
            body: SyncBody { commands: all, final_ },
        }
    }

    /// The rules of `findings` other than the Status bookkeeping of [`server`] messages, which
    /// status only the SyncHdr (`command-not-statused`).
    fn gate_rules(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.what.as_str()).filter(|w| *w != "command-not-statused").collect()
    }

    fn item_cmd(id: &str, uri: &str, data: Option<&str>) -> ItemCmd {
        ItemCmd {
            cmd_id: id.into(),
            items: vec![Item { target: Some(uri.into()), data: data.map(str::to_string), ..Item::default() }],
            ..ItemCmd::default()
        }
    }

    /// (CmdRef, Cmd, code) of every Status in a client message.
    fn statuses(msg: &SyncMl) -> Vec<(String, String, String)> {
        msg.body
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Status(s) => Some((s.cmd_ref.clone(), s.cmd.clone(), s.data.clone())),
                _ => None,
            })
            .collect()
    }

    fn send(next: Next) -> (AwaitingServer, SyncMl) {
        match next {
            Next::Send(a, m) => (a, m),
            other => panic!("expected a message to send, got {other:?}"),
        }
    }

    #[test]
    fn package_one_has_session_alert_login_status_and_devinfo_sources() {
        let mut rig = Rig::new();
        let (_, p1) = rig.start();
        assert_eq!(p1.hdr.msg_id, "1");
        assert_eq!(p1.hdr.source, DEV);
        assert_eq!(p1.hdr.target, SRV);
        assert!(p1.body.final_);
        let c = &p1.body.commands;
        let Command::Alert(a) = &c[0] else { panic!("{c:?}") };
        assert_eq!((a.cmd_id.as_str(), a.data.as_str()), ("1", "1201"));
        let Command::Alert(l) = &c[1] else { panic!("{c:?}") };
        assert_eq!(l.data, "1224");
        assert_eq!(l.items[0].data.as_deref(), Some("user"));
        assert_eq!(l.items[0].meta.as_ref().and_then(|m| m.type_.as_deref()), Some(LOGIN_STATUS_TYPE));
        let Command::Replace(r) = &c[2] else { panic!("{c:?}") };
        assert_eq!(r.cmd_id, "3");
        let got: Vec<(&str, &str)> =
            r.items.iter().map(|i| (i.source.as_deref().unwrap_or(""), i.data.as_deref().unwrap_or(""))).collect();
        assert_eq!(
            got,
            [
                ("./DevInfo/DevId", DEV),
                ("./DevInfo/Man", "Contoso"),
                ("./DevInfo/Mod", "Laptop 7"),
                ("./DevInfo/DmV", "1.3"),
                ("./DevInfo/Lang", "en-US")
            ]
        );
        assert!(r.items.iter().all(|i| i.target.is_none()));
    }

    #[test]
    fn server_initiated_session_and_extra_alerts_are_numbered_in_order() {
        let mut rig = Rig::new();
        let mut cfg = SessionConfig::new(DEV, SRV, "9", Mode::Maintenance, Trigger::Push);
        cfg.alert = SessionAlert::ServerInitiated;
        cfg.extra_alerts.push(Alert { cmd_id: "x".into(), data: "1226".into(), ..Alert::default() });
        let (_, p1) = start_default(cfg, &mut rig.cx());
        let ids: Vec<(&str, &str)> = p1.body.commands.iter().map(|c| (c.name(), c.cmd_id())).collect();
        assert_eq!(ids, [("Alert", "1"), ("Alert", "2"), ("Replace", "3")]);
        let Command::Alert(a) = &p1.body.commands[0] else { unreachable!() };
        assert_eq!(a.data, "1200");
    }

    #[test]
    fn statuses_follow_the_header_status_in_command_order_with_results_for_gets() {
        let mut rig = Rig::new();
        let (s, _) = rig.start();
        let msg = server(
            "1",
            vec![
                Command::Alert(Alert { cmd_id: "a1".into(), data: "1201".into(), ..Alert::default() }),
                Command::Get(item_cmd("g-1", "./DevInfo/Man", None)),
                Command::Get(item_cmd("g-2", "./DevInfo/Nope", None)),
                Command::Replace(item_cmd("r", "./DevDetail/Ext/Microsoft/DeviceName", Some("PC-2"))),
            ],
            true,
        );
        let (s, reply) = send(s.receive_message(&msg, &mut rig.cx()));
        assert_eq!(reply.hdr.msg_id, "2");
        assert!(reply.body.final_);
        assert_eq!(
            statuses(&reply),
            [
                ("0".into(), "SyncHdr".into(), "200".into()),
                ("a1".into(), "Alert".into(), "200".into()),
                ("g-1".into(), "Get".into(), "200".into()),
                ("g-2".into(), "Get".into(), "404".into()),
                ("r".into(), "Replace".into(), "200".into()),
            ]
        );
        let Command::Results(r) = &reply.body.commands[3] else { panic!("{:?}", reply.body.commands) };
        assert_eq!((r.msg_ref.as_str(), r.cmd_ref.as_str()), ("1", "g-1"));
        assert_eq!(r.items[0].data.as_deref(), Some("Contoso"));
        let ids: Vec<&str> = reply.body.commands.iter().map(Command::cmd_id).collect();
        assert_eq!(ids, ["1", "2", "3", "4", "5", "6"]);
        // The server answers with statuses only: nothing left to send, the session is over.
        let mut done = server("2", vec![], true);
        if let Command::Status(h) = &mut done.body.commands[0] {
            h.msg_ref = "2".into();
        }
        let Next::Finished(f) = s.receive_message(&done, &mut rig.cx()) else { panic!("expected Finished") };
        assert_eq!(f.summary.outcome, Outcome::Completed);
        assert_eq!(f.summary.messages_sent, 2);
        assert_eq!(f.summary.messages_received, 2);
        assert_eq!(f.summary.statuses_sent.get(&200), Some(&3));
        assert_eq!(f.summary.statuses_sent.get(&404), Some(&1));
        assert_eq!(f.summary.commands_received.get("Get"), Some(&2));
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-2"));
    }

    #[test]
    fn a_message_without_final_gets_alert_1222_and_no_final() {
        let mut rig = Rig::new();
        let (s, _) = rig.start();
        let msg = server("1", vec![Command::Get(item_cmd("1", "./DevInfo/DmV", None))], false);
        let (_, reply) = send(s.receive_message(&msg, &mut rig.cx()));
        assert!(!reply.body.final_);
        let Some(Command::Alert(a)) = reply.body.commands.last() else { panic!("{:?}", reply.body.commands) };
        assert_eq!(a.data, "1222");
    }

    /// The Statuses a polite server sends for every command of client message `msg`.
    fn acks(msg: &SyncMl) -> Vec<Command> {
        msg.body
            .commands
            .iter()
            .filter(|c| !matches!(c, Command::Status(_) | Command::Results(_)))
            .enumerate()
            .map(|(i, c)| {
                Command::Status(Status {
                    cmd_id: format!("a{i}"),
                    msg_ref: msg.hdr.msg_id.clone(),
                    cmd_ref: c.cmd_id().to_string(),
                    cmd: c.name().to_string(),
                    data: "200".into(),
                    ..Status::default()
                })
            })
            .collect()
    }

    /// Servers that never send Final (Fleet's style): commands get their statuses and 1222, the
    /// Status-only answer then ends the session with one `missing-final` finding, never a loop.
    #[test]
    fn a_status_only_message_without_final_ends_the_session() {
        let mut rig = Rig::new();
        let (s, p1) = rig.start();
        let mut cmds = acks(&p1);
        cmds.push(Command::Get(item_cmd("g", "./DevInfo/DmV", None)));
        let (s, reply) = send(s.receive_message(&server("1", cmds, false), &mut rig.cx()));
        let Some(Command::Alert(a)) = reply.body.commands.last() else { panic!("{:?}", reply.body.commands) };
        assert_eq!(a.data, "1222");
        let mut answer = server("2", acks(&reply), false);
        if let Command::Status(st) = &mut answer.body.commands[0] {
            st.msg_ref = "2".into();
        }
        let Next::Finished(done) = s.receive_message(&answer, &mut rig.cx()) else { panic!("the session must end") };
        assert_eq!(done.summary.outcome, Outcome::Completed);
        let rules: Vec<&str> = done.summary.findings.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(rules, ["missing-final"]);
        assert_eq!(done.summary.findings[0].msg_id, "2");
        assert_eq!(done.summary.messages_sent, 2);

        // Status-only at once, no Final: over, same finding.
        let (s, p1) = rig.start();
        let Next::Finished(done) = s.receive_message(&server("1", acks(&p1), false), &mut rig.cx()) else { panic!() };
        assert_eq!(done.summary.findings.iter().map(|f| f.what.as_str()).collect::<Vec<_>>(), ["missing-final"]);
        // With Final: over, no finding.
        let (s, p1) = rig.start();
        let Next::Finished(done) = s.receive_message(&server("1", acks(&p1), true), &mut rig.cx()) else { panic!() };
        assert!(done.summary.findings.is_empty(), "{:?}", done.summary.findings);
    }

    #[test]
    fn an_empty_answer_to_package_one_is_a_finding() {
        let mut rig = Rig::new();
        let (s, _) = rig.start();
        let done = s.receive_empty(&mut rig.cx());
        assert_eq!(done.summary.outcome, Outcome::Completed);
        let rules: Vec<&str> = done.summary.findings.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(rules, ["empty-reply-to-package-1"]);
        // An empty answer to a later message is how sessions end: no finding.
        let (s, p1) = rig.start();
        let get = Command::Get(item_cmd("g", "./DevInfo/DmV", None));
        let mut cmds = acks(&p1);
        cmds.push(get);
        let (s, _) = send(s.receive_message(&server("1", cmds, true), &mut rig.cx()));
        assert!(s.receive_empty(&mut rig.cx()).summary.findings.is_empty());
    }

    #[test]
    fn statuses_for_unknown_commands_and_missing_statuses_are_findings() {
        let mut rig = Rig::new();
        let (s, p1) = rig.start();
        let mut cmds = acks(&p1);
        let Command::Status(first) = cmds.remove(0) else { panic!() };
        cmds.push(Command::Status(Status { cmd_ref: "99".into(), cmd_id: "x".into(), ..first.clone() }));
        cmds.push(Command::Get(item_cmd("g", "./DevInfo/DmV", None)));
        let (s, _) = send(s.receive_message(&server("1", cmds, true), &mut rig.cx()));
        let f = &s.summary().findings;
        let rules: Vec<&str> = f.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(rules, ["status-unknown-cmdref", "command-not-statused"], "{f:#?}");
        assert!(f[0].why.contains("CmdRef 99") && f[0].why.contains("Alert 1"), "{}", f[0]);
        assert!(f[1].why.contains(&format!("{} {}", first.cmd, first.cmd_ref)), "{}", f[1]);
    }

    #[test]
    fn atomic_children_get_their_own_statuses() {
        let mut rig = Rig::new();
        let (s, _) = rig.start();
        let atomic = Command::Atomic(Container {
            cmd_id: "at".into(),
            commands: vec![
                Command::Replace(item_cmd("c1", "./DevDetail/Ext/Microsoft/DeviceName", Some("X"))),
                Command::Replace(item_cmd("c2", "./DevInfo/Man", Some("Y"))),
            ],
            ..Container::default()
        });
        let (_, reply) = send(s.receive_message(&server("1", vec![atomic], true), &mut rig.cx()));
        let codes: Vec<String> = statuses(&reply).into_iter().map(|(r, _, c)| format!("{r}={c}")).collect();
        assert_eq!(codes, ["0=200", "at=507", "c1=216", "c2=405"]);
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-1"));
    }

    #[test]
    fn wrong_header_ends_the_session_and_rolls_the_tree_back() {
        let mut rig = Rig::new();
        let before = rig.state.clone();
        let (s, _) = rig.start();
        let change =
            server("1", vec![Command::Replace(item_cmd("r", "./DevDetail/Ext/Microsoft/DeviceName", Some("Z")))], true);
        let (s, _) = send(s.receive_message(&change, &mut rig.cx()));
        assert_ne!(rig.state, before);
        let mut bad = server("2", vec![], true);
        if let Command::Status(h) = &mut bad.body.commands[0] {
            h.msg_ref = "9".into();
        }
        let Next::Failed(f) = s.receive_message(&bad, &mut rig.cx()) else { panic!("expected Failed") };
        assert!(matches!(&f.error, SessionError::UnknownMsgRef { msg_ref, .. } if msg_ref == "9"), "{}", f.error);
        assert_eq!(f.summary.outcome, Outcome::Failed);
        assert_eq!(rig.state, before);

        let (s, _) = rig.start();
        let mut other = server("1", vec![], true);
        other.hdr.session_id = "8".into();
        let Next::Failed(f) = s.receive_message(&other, &mut rig.cx()) else { panic!("expected Failed") };
        assert!(matches!(f.error, SessionError::WrongSession { .. }), "{}", f.error);

        let (s, _) = rig.start();
        let Next::Failed(f) = s.receive("<html><body>oops</body></html>", &mut rig.cx()) else { panic!() };
        assert!(matches!(f.error, SessionError::Malformed { reply_to: 1, .. }), "{}", f.error);
        assert_eq!(f.error.fault(), Fault::Protocol);
    }

    #[test]
    fn alert_1223_aborts_and_401_on_the_header_is_unauthenticated() {
        let mut rig = Rig::new();
        let (s, _) = rig.start();
        let abort = server(
            "1",
            vec![Command::Alert(Alert { cmd_id: "9".into(), data: "1223".into(), ..Alert::default() })],
            true,
        );
        let Next::Failed(f) = s.receive_message(&abort, &mut rig.cx()) else { panic!() };
        assert!(matches!(f.error, SessionError::Aborted { .. }));

        let (s, _) = rig.start();
        let mut denied = server("1", vec![], true);
        if let Command::Status(h) = &mut denied.body.commands[0] {
            h.data = "407".into();
        }
        let Next::Failed(f) = s.receive_message(&denied, &mut rig.cx()) else { panic!() };
        assert_eq!(f.error, SessionError::Unauthenticated { msg_id: "1".into(), code: 407, chal: None });
    }

    fn chunk(id: &str, uri: &str, data: &str, more: bool, size: Option<&str>) -> Command {
        let mut c = item_cmd(id, uri, Some(data));
        c.items[0].more_data = more;
        if let Some(n) = size {
            c.items[0].meta = Some(Box::new(Meta { size: Some(n.into()), ..Meta::default() }));
        }
        Command::Replace(c)
    }

    fn server_to(msg_id: &str, commands: Vec<Command>, final_: bool) -> SyncMl {
        let mut m = server(msg_id, commands, final_);
        if let Command::Status(h) = &mut m.body.commands[0] {
            h.msg_ref = msg_id.into();
        }
        m
    }

    #[test]
    fn a_large_object_is_buffered_with_213_and_applied_whole() {
        const NAME: &str = "./DevDetail/Ext/Microsoft/DeviceName";
        let mut rig = Rig::new();
        let (s, _) = rig.start();
        let m1 = server_to("1", vec![chunk("c1", NAME, "LONG-", true, Some("16"))], false);
        let (s, r1) = send(s.receive_message(&m1, &mut rig.cx()));
        assert_eq!(
            statuses(&r1),
            [("0".into(), "SyncHdr".into(), "200".into()), ("c1".into(), "Replace".into(), "213".into())]
        );
        let Some(Command::Alert(a)) = r1.body.commands.last() else { panic!() };
        assert_eq!(a.data, "1222");
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-1"), "nothing applied yet");
        let m2 = server_to("2", vec![chunk("c2", NAME, "DEVICE", true, None)], false);
        let (s, _) = send(s.receive_message(&m2, &mut rig.cx()));
        let m3 = server_to("3", vec![chunk("c3", NAME, "-NAME", false, None)], true);
        let (_, r3) = send(s.receive_message(&m3, &mut rig.cx()));
        assert_eq!(statuses(&r3)[1], ("c3".into(), "Replace".into(), "200".into()));
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("LONG-DEVICE-NAME"));
    }

    #[test]
    fn a_large_object_of_the_wrong_size_gets_424_and_an_interrupted_one_alert_1225() {
        const NAME: &str = "./DevDetail/Ext/Microsoft/DeviceName";
        let mut rig = Rig::new();
        let (s, _) = rig.start();
        let m1 =
            server_to("1", vec![chunk("c1", NAME, "AB", true, Some("99")), chunk("c2", NAME, "CD", false, None)], true);
        let (s, r1) = send(s.receive_message(&m1, &mut rig.cx()));
        let codes: Vec<String> = statuses(&r1).into_iter().map(|(r, _, c)| format!("{r}={c}")).collect();
        assert_eq!(codes, ["0=200", "c1=213", "c2=424"]);
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-1"));
        let m2 = server_to(
            "2",
            vec![chunk("c3", NAME, "AB", true, None), Command::Get(item_cmd("g", "./DevInfo/DmV", None))],
            true,
        );
        let (_, r2) = send(s.receive_message(&m2, &mut rig.cx()));
        let names: Vec<String> = r2
            .body
            .commands
            .iter()
            .map(|c| match c {
                Command::Status(s) => format!("Status {} {}", s.cmd_ref, s.data),
                Command::Alert(a) => format!("Alert {}", a.data),
                other => other.name().to_string(),
            })
            .collect();
        assert_eq!(names, ["Status 0 200", "Status c3 213", "Alert 1225", "Status g 200", "Results"]);
    }

    #[test]
    fn every_truncated_server_message_fails_cleanly_and_leaves_the_tree_alone() {
        let full = syncml::encode(&server(
            "1",
            vec![
                Command::Replace(item_cmd("r", "./DevDetail/Ext/Microsoft/DeviceName", Some("CUT"))),
                Command::Get(item_cmd("g", "./DevInfo/Man", None)),
            ],
            true,
        ));
        let mut rig = Rig::new();
        let before = rig.state.clone();
        for end in (0..full.len()).filter(|&i| full.is_char_boundary(i)) {
            let (s, _) = rig.start();
            match s.receive(&full[..end], &mut rig.cx()) {
                Next::Failed(f) => {
                    assert!(matches!(f.error, SessionError::Malformed { .. }), "prefix {end}: {}", f.error)
                }
                other => panic!("prefix of {end} bytes accepted: {other:?}"),
            }
            assert_eq!(rig.state, before, "prefix {end}");
        }
        let (s, _) = rig.start();
        assert!(matches!(s.receive(&full, &mut rig.cx()), Next::Send(..)));
    }

    #[derive(Debug)]
    struct EchoNonce;
    impl Authenticator for EchoNonce {
        fn answer(&self, chal: &Chal) -> Option<Cred> {
            let nonce = chal.meta.next_nonce.clone()?;
            Some(Cred { meta: Meta::typed("syncml:auth-md5", Some("b64")), data: format!("digest-of-{nonce}") })
        }
    }

    fn challenge(msg_id: &str, msg_ref: &str, code: &str, nonce: &str) -> SyncMl {
        let mut m = server(msg_id, vec![], true);
        if let Command::Status(h) = &mut m.body.commands[0] {
            h.msg_ref = msg_ref.into();
            h.data = code.into();
            h.chal = Some(Box::new(Chal {
                meta: Meta { next_nonce: Some(nonce.into()), ..Meta::typed("syncml:auth-md5", Some("b64")) },
            }));
        }
        m
    }

    #[test]
    fn a_challenge_is_answered_once_by_resending_package_one_with_credentials() {
        let mut rig = Rig::new();
        let mut cfg = SessionConfig::new(DEV, SRV, "7", Mode::Maintenance, Trigger::Manual);
        cfg.auth = Some(Arc::new(EchoNonce));
        let (s, p1) = start_default(cfg, &mut rig.cx());
        assert!(p1.hdr.cred.is_none());
        let (s, again) = send(s.receive_message(&challenge("1", "1", "407", "bm9uY2U="), &mut rig.cx()));
        assert_eq!(again.hdr.msg_id, "2");
        assert_eq!(again.body, p1.body, "package 1 again");
        assert_eq!(again.hdr.cred.as_ref().map(|c| c.data.as_str()), Some("digest-of-bm9uY2U="));
        // Accepted (200, with the nonce for the next session): the session goes on, the
        // credentials stay on every message (Fleet answers 200, not 212).
        let ok = challenge("2", "2", "200", "bmV4dA==");
        let msg = SyncMl {
            body: SyncBody {
                commands: [ok.body.commands, vec![Command::Get(item_cmd("g", "./DevInfo/DmV", None))]].concat(),
                final_: true,
            },
            ..ok
        };
        let (s, reply) = send(s.receive_message(&msg, &mut rig.cx()));
        assert!(reply.hdr.cred.is_some());
        let f = s.receive_empty(&mut rig.cx());
        assert_eq!(f.challenge().and_then(|c| c.meta.next_nonce.as_deref()), Some("bmV4dA=="));

        // A second refusal in the same session is final.
        let mut cfg = SessionConfig::new(DEV, SRV, "7", Mode::Maintenance, Trigger::Manual);
        cfg.auth = Some(Arc::new(EchoNonce));
        let (s, _) = start_default(cfg, &mut rig.cx());
        let (s, _) = send(s.receive_message(&challenge("1", "1", "401", "YQ=="), &mut rig.cx()));
        let Next::Failed(f) = s.receive_message(&challenge("2", "2", "401", "Yg=="), &mut rig.cx()) else {
            panic!("expected Failed")
        };
        assert!(matches!(f.error, SessionError::Unauthenticated { code: 401, .. }), "{}", f.error);
    }

    #[test]
    fn empty_body_finishes_and_the_gate_can_refuse_with_a_finding() {
        struct NoWrites;
        impl Gate for NoWrites {
            fn check(&mut self, cx: &GateCx<'_>, cmd: &Command) -> Verdict {
                if matches!(cmd, Command::Replace(_) | Command::Atomic(_)) {
                    let f = Finding {
                        what: "machine-mode-write".into(),
                        msg_id: cx.msg_id.into(),
                        cmd_id: cmd.cmd_id().into(),
                        cmd: cmd.name().into(),
                        uri: None,
                        why: format!("{} in {} mode", cmd.name(), cx.mode),
                    };
                    Verdict::refuse(StatusCode::CommandNotAllowed).with_finding(f)
                } else {
                    Verdict::allow()
                }
            }
        }
        let mut rig = Rig::new();
        let cfg = SessionConfig::new(DEV, SRV, "7", Mode::Machine, Trigger::Reboot);
        let (s, _) = start(cfg, Box::new(NoWrites), &mut rig.cx());
        let atomic = Command::Atomic(Container {
            cmd_id: "at".into(),
            commands: vec![Command::Get(item_cmd("c1", "./DevInfo/Man", None))],
            ..Container::default()
        });
        let msg = server(
            "1",
            vec![Command::Replace(item_cmd("r", "./DevDetail/Ext/Microsoft/DeviceName", Some("Q"))), atomic],
            true,
        );
        let (s, reply) = send(s.receive_message(&msg, &mut rig.cx()));
        let codes: Vec<String> = statuses(&reply).into_iter().map(|(r, _, c)| format!("{r}={c}")).collect();
        assert_eq!(codes, ["0=200", "r=405", "at=405", "c1=215"]);
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-1"));
        let f = s.receive_empty(&mut rig.cx());
        let rules = gate_rules(&f.summary.findings);
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0], "machine-mode-write");
        assert_eq!(f.summary.mode, Mode::Machine);
        assert_eq!(f.summary.trigger, Trigger::Reboot);
    }

    #[test]
    fn keep_alives_due_one_per_interval_passed_bounded() {
        assert_eq!(KeepAlive::due(0, 1000), 0);
        assert_eq!(KeepAlive::due(1000, 1000), 0);
        assert_eq!(KeepAlive::due(1001, 1000), 1);
        assert_eq!(KeepAlive::due(2500, 1000), 2);
        assert_eq!(KeepAlive::due(3000, 1000), 2);
        assert_eq!(KeepAlive::due(u64::MAX, 0), KeepAlive::MAX);
    }

    #[test]
    fn slow_commands_send_keep_alives_first_only_when_enabled() {
        for enabled in [false, true] {
            let mut rig = Rig::new();
            let settings = [("slow_command_ms", "600"), ("keepalive_after_ms", "1000")];
            rig.env.settings =
                Arc::new(crate::tree::Settings(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
            crate::csp::dmclient::create_provider(&mut rig.state, "P", &rig.env.settings);
            let key = format!("{}/EnableOmaDmKeepAliveMessage", crate::csp::dmclient::provider_key("P"));
            rig.state.set_value(&key, enabled.to_string());
            rig.state.commit();
            let (s, _) = rig.start();
            let gets = ["g1", "g2", "g3"].map(|id| Command::Get(item_cmd(id, "./DevInfo/Man", None)));
            // Three commands of 600 ms: 1800 ms, one keep-alive after 1000 ms.
            let (s, reply) = send(s.receive_message(&server("1", gets.to_vec(), true), &mut rig.cx()));
            if !enabled {
                assert!(reply.body.final_);
                assert_eq!(statuses(&reply).len(), 4);
                assert_eq!(s.summary().keep_alives, 0);
                continue;
            }
            assert!(!reply.body.final_, "a keep-alive message has no Final (the DMClient CSP page's example)");
            assert_eq!(statuses(&reply), [("0".into(), "SyncHdr".into(), "200".into())]);
            let Command::Alert(a) = &reply.body.commands[1] else { panic!("{:?}", reply.body.commands) };
            assert_eq!((a.data.as_str(), a.items[0].data.as_deref()), ("1224", Some("1")));
            assert_eq!(s.summary().keep_alives, 1);
            // The server answers the keep-alive, wrongly with a command: not executed, a finding.
            let answer = server_to("2", vec![Command::Replace(item_cmd("r", "./DevInfo/Man", Some("X")))], true);
            let (s, reply) = send(s.receive_message(&answer, &mut rig.cx()));
            assert!(reply.body.final_);
            assert_eq!(statuses(&reply).len(), 4, "{:?}", reply.body.commands);
            let refs: Vec<(String, String)> = reply
                .body
                .commands
                .iter()
                .filter_map(|c| match c {
                    Command::Status(st) => Some((st.msg_ref.clone(), st.cmd_ref.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(refs, [("2", "0"), ("1", "g1"), ("1", "g2"), ("1", "g3")].map(|(m, c)| (m.into(), c.into())));
            assert_eq!(gate_rules(&s.summary().findings)[0], "command-while-pending");
            assert_eq!(rig.state.value("DevInfo/Man"), Some("Contoso"));
        }
    }

    #[test]
    fn an_empty_answer_to_a_keep_alive_ends_the_session_with_a_finding() {
        let mut rig = Rig::new();
        rig.env.settings = Arc::new(crate::tree::Settings(
            [("slow_exec_ms", "5000"), ("keepalive_after_ms", "1000")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        crate::csp::dmclient::create_provider(&mut rig.state, "P", &rig.env.settings);
        rig.state
            .set_value(&format!("{}/EnableOmaDmKeepAliveMessage", crate::csp::dmclient::provider_key("P")), "true");
        let (s, _) = rig.start();
        let exec = Command::Exec(item_cmd("e", "./DevInfo/Nope", None));
        let (s, reply) = send(s.receive_message(&server("1", vec![exec], true), &mut rig.cx()));
        assert!(!reply.body.final_);
        assert_eq!(s.summary().keep_alives, 1);
        let done = s.receive_empty(&mut rig.cx());
        assert_eq!(gate_rules(&done.summary.findings), ["ended-while-pending"]);
    }

    #[test]
    fn a_server_that_never_stops_is_bounded() {
        let mut rig = Rig::new().with(&[("max_messages", "3")]);
        let (mut s, _) = rig.start();
        for n in 1..=10 {
            let mut m = server(&n.to_string(), vec![Command::Get(item_cmd("1", "./DevInfo/DmV", None))], true);
            if let Command::Status(h) = &mut m.body.commands[0] {
                h.msg_ref = n.to_string();
            }
            match s.receive_message(&m, &mut rig.cx()) {
                Next::Send(next, _) => s = next,
                Next::Failed(f) => {
                    assert_eq!(f.error, SessionError::TooManyMessages { limit: 3 });
                    return;
                }
                Next::Finished(_) => panic!("finished"),
            }
        }
        panic!("never stopped");
    }

    // ---- limits and hostile servers ----

    const NAME: &str = "./DevDetail/Ext/Microsoft/DeviceName";

    /// "CmdRef=code" of every Status in a client message.
    fn codes(msg: &SyncMl) -> Vec<String> {
        statuses(msg).into_iter().map(|(r, _, c)| format!("{r}={c}")).collect()
    }

    fn rules(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.what.as_str()).collect()
    }

    #[test]
    fn limits_come_from_the_settings_with_defaults() {
        assert_eq!(Limits::from_settings(&Settings::default()), Limits::DEFAULT);
        assert_eq!(Limits::DEFAULT.max_message_bytes, 8 << 20);
        assert_eq!(Limits::DEFAULT.max_value_bytes, 1 << 20);
        assert_eq!(Limits::DEFAULT.max_object_bytes, 4 << 20);
        assert_eq!(Limits::DEFAULT.max_messages, 200);
        let s = Rig::new()
            .with(&[
                ("max_message_bytes", "2000"),
                ("max_value_bytes", "1000"),
                ("max_object_bytes", "0"),
                ("max_messages", "99999999999"),
            ])
            .env
            .settings;
        let l = Limits::from_settings(&s);
        assert_eq!((l.max_message_bytes, l.max_value_bytes, l.max_object_bytes), (2000, 1000, 1));
        assert_eq!(l.max_messages, u32::MAX);
    }

    #[test]
    fn a_value_over_max_value_bytes_gets_413_a_finding_and_is_not_stored() {
        let mut rig = Rig::new().with(&[("max_value_bytes", "1000")]);
        let (s, _) = rig.start();
        let big = "N".repeat(2000);
        let fits = "M".repeat(1000);
        let m = server_to(
            "1",
            vec![
                Command::Replace(item_cmd("r1", NAME, Some(&big))),
                Command::Atomic(Container {
                    cmd_id: "a1".into(),
                    commands: vec![Command::Replace(item_cmd("r2", NAME, Some(&big)))],
                    ..Container::default()
                }),
            ],
            true,
        );
        let (s, reply) = send(s.receive_message(&m, &mut rig.cx()));
        assert_eq!(codes(&reply), ["0=200", "r1=413", "a1=507", "r2=413"]);
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-1"));
        let f: Vec<&Finding> = s.summary().findings.iter().filter(|f| f.what == "value-too-large").collect();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].cmd_id.as_str(), f[0].uri.as_deref()), ("r1", Some(NAME)));
        assert!(f[0].why.contains("2000 bytes, over max_value_bytes = 1000"), "{}", f[0].why);
        // At the limit the value is taken.
        let m = server_to("2", vec![Command::Replace(item_cmd("r3", NAME, Some(&fits)))], true);
        let (_, reply) = send(s.receive_message(&m, &mut rig.cx()));
        assert_eq!(codes(&reply), ["0=200", "r3=200"]);
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some(fits.as_str()));
    }

    #[test]
    fn a_large_object_announcing_more_than_max_object_bytes_is_refused_chunk_by_chunk() {
        let mut rig = Rig::new().with(&[("max_object_bytes", "1000")]);
        let (s, _) = rig.start();
        let part = "P".repeat(600);
        let m1 = server_to("1", vec![chunk("c1", NAME, &part, true, Some("1800"))], false);
        let (s, r1) = send(s.receive_message(&m1, &mut rig.cx()));
        assert_eq!(codes(&r1), ["0=200", "c1=413"]);
        let m2 = server_to("2", vec![chunk("c2", NAME, &part, true, None)], false);
        let (s, r2) = send(s.receive_message(&m2, &mut rig.cx()));
        assert_eq!(codes(&r2), ["0=200", "c2=413"], "the rest of a refused object is refused too");
        let m3 = server_to("3", vec![chunk("c3", NAME, &part, false, None), get_cmd("g1", NAME)], true);
        let (s, r3) = send(s.receive_message(&m3, &mut rig.cx()));
        assert_eq!(codes(&r3), ["0=200", "c3=413", "g1=200"], "up to its last chunk; then commands run again");
        assert!(!r3.body.commands.iter().any(|c| matches!(c, Command::Alert(a) if a.data == "1225")));
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-1"));
        let f: Vec<&Finding> = s.summary().findings.iter().filter(|f| f.what == "object-too-large").collect();
        assert_eq!(f.len(), 1, "one finding per object");
        assert!(f[0].why.contains("announces Meta/Size 1800 bytes, over max_object_bytes = 1000"), "{}", f[0].why);
    }

    #[test]
    fn a_large_object_growing_past_max_object_bytes_is_dropped_with_413() {
        let mut rig = Rig::new().with(&[("max_object_bytes", "1000")]);
        let (s, _) = rig.start();
        let part = "Q".repeat(600);
        let m1 =
            server_to("1", vec![chunk("c1", NAME, &part, true, None), chunk("c2", NAME, &part, true, None)], false);
        let (s, r1) = send(s.receive_message(&m1, &mut rig.cx()));
        assert_eq!(codes(&r1), ["0=200", "c1=213", "c2=413"]);
        let m2 = server_to("2", vec![chunk("c3", NAME, "end", false, None)], true);
        let (s, r2) = send(s.receive_message(&m2, &mut rig.cx()));
        assert_eq!(codes(&r2), ["0=200", "c3=413"]);
        assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-1"));
        let f = s.summary().findings.iter().find(|f| f.what == "object-too-large").unwrap();
        assert!(f.why.contains("reached 1200 bytes with this chunk"), "{}", f.why);
        assert_eq!(f.cmd_id, "c2");
    }

    fn get_cmd(id: &str, uri: &str) -> Command {
        Command::Get(item_cmd(id, uri, None))
    }

    #[test]
    fn results_past_max_message_bytes_are_refused_with_413() {
        let mut rig = Rig::new().with(&[("max_message_bytes", "2500")]);
        rig.state.set_value("DevDetail/Ext/Microsoft/DeviceName", "D".repeat(1000));
        let (s, _) = rig.start();
        let gets = (1..=4).map(|n| get_cmd(&format!("g{n}"), NAME)).collect();
        let (s, reply) = send(s.receive_message(&server_to("1", gets, true), &mut rig.cx()));
        assert_eq!(codes(&reply), ["0=200", "g1=200", "g2=200", "g3=413", "g4=413"]);
        let results = reply.body.commands.iter().filter(|c| matches!(c, Command::Results(_))).count();
        assert_eq!(results, 2);
        assert_eq!(rules(&s.summary().findings).iter().filter(|w| **w == "reply-too-large").count(), 2);
    }

    #[test]
    fn a_repeated_server_msgid_is_a_finding() {
        let mut rig = Rig::new();
        let (s, _) = rig.start();
        let get = || vec![get_cmd("g1", "./DevInfo/DmV")];
        let (s, _) = send(s.receive_message(&server_to("1", get(), false), &mut rig.cx()));
        let mut again = server_to("1", get(), false);
        if let Command::Status(h) = &mut again.body.commands[0] {
            h.msg_ref = "2".into();
        }
        let (s, reply) = send(s.receive_message(&again, &mut rig.cx()));
        assert_eq!(codes(&reply), ["0=200", "g1=200"], "answered anyway");
        let f: Vec<&Finding> = s.summary().findings.iter().filter(|f| f.what == "repeated-msgid").collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].msg_id, "1");
    }

    fn with_resp_uri(mut m: SyncMl, uri: &str) -> SyncMl {
        m.hdr.resp_uri = Some(uri.into());
        m
    }

    #[test]
    fn resp_uri_is_resolved_and_a_host_change_is_a_finding() {
        let mut rig = Rig::new();
        let (mut s, _) = rig.start();
        s.set_session_url("https://mdm.example/MDM.svc?mode=Maintenance&Platform=WoA");
        let get = || vec![get_cmd("g1", "./DevInfo/DmV")];
        let m = with_resp_uri(server_to("1", get(), false), "next?s=1");
        let (s, _) = send(s.receive_message(&m, &mut rig.cx()));
        assert_eq!(s.resp_uri(), Some("https://mdm.example/next?s=1"));
        assert!(s.summary().findings.iter().all(|f| f.what != "respuri-host-change"), "same host: no finding");
        let m = with_resp_uri(server_to("2", get(), false), "https://other.example:8443/MDM.svc");
        let (s, _) = send(s.receive_message(&m, &mut rig.cx()));
        assert_eq!(s.resp_uri(), Some("https://other.example:8443/MDM.svc"), "followed");
        let moved: Vec<&Finding> = s.summary().findings.iter().filter(|f| f.what == "respuri-host-change").collect();
        assert_eq!(moved.len(), 1);
        assert!(moved[0].why.contains("from https://mdm.example to https://other.example:8443"), "{}", moved[0].why);
        // The same RespURI again is no new move.
        let m = with_resp_uri(server_to("3", get(), false), "https://other.example:8443/MDM.svc");
        let (s, _) = send(s.receive_message(&m, &mut rig.cx()));
        assert_eq!(rules(&s.summary().findings).iter().filter(|w| **w == "respuri-host-change").count(), 1);
    }

    #[test]
    fn resp_uri_to_plain_http_or_another_scheme_ends_the_session_and_rolls_back() {
        for (uri, says) in [
            ("http://mdm.example/MDM.svc", "from https://mdm.example to plain http at http://mdm.example"),
            ("ftp://mdm.example/x", "scheme \"ftp\" cannot carry the session"),
        ] {
            let mut rig = Rig::new();
            let (s, _) = rig.start();
            let m = with_resp_uri(server_to("1", vec![Command::Replace(item_cmd("r1", NAME, Some("X")))], true), uri);
            let Next::Failed(f) = s.receive_message(&m, &mut rig.cx()) else { panic!("{uri}: expected a failure") };
            assert!(matches!(f.error, SessionError::RespUri { .. }), "{:?}", f.error);
            let text = f.error.to_string();
            assert!(text.starts_with(&format!("server message 1 has RespURI {uri:?}: ")), "{text}");
            assert!(text.contains(says), "{text}");
            assert_eq!(f.error.fault(), Fault::Protocol);
            assert_eq!(rig.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-1"));
        }
    }

    #[test]
    fn judging_a_resp_uri() {
        let https = "https://a.example/MDM.svc?mode=Machine";
        let same = judge_resp_uri(https, https, "/x").unwrap();
        assert_eq!(same, RespUriMove { url: "https://a.example/x".into(), moved: None });
        assert!(judge_resp_uri(https, https, "https://a.example:443/y").unwrap().moved.is_none());
        assert!(judge_resp_uri(https, https, "https://a.example:444/y").unwrap().moved.is_some());
        let up = judge_resp_uri("http://a.example/", "http://a.example/", "https://a.example/").unwrap();
        assert!(up.moved.is_some(), "http to https is a move, followed");
        assert!(judge_resp_uri("http://a.example/", "http://a.example/", "http://b.example/").unwrap().moved.is_some());
        assert!(judge_resp_uri(https, https, "http://a.example/").is_err());
        assert!(judge_resp_uri(https, "https://b.example/", "http://b.example/").is_err());
        assert!(judge_resp_uri(https, https, "http://[::1").is_err());
    }
}
