//! One management session of a device as data in, data out: which URL each message goes to,
//! with which headers, and what the device does with each answer. Sans-I/O: the caller (the
//! device [`super::engine::Engine`], or the runner's one-session commands) moves the bytes.
//!
//! Owns what DMClient says about the wire (Microsoft's DMClient CSP page): the first message
//! goes to the server address list in order (ManagementServerAddressList, else
//! ManagementServiceAddress, else the device's ADDR), each address tried `conn_retry_freq` /
//! DMAcc ConnRetryFreq times, and the address that answered is cached in
//! [`Device::server_cache`] to start from next session (a new list starts from its first
//! entry); the signing decision (RequireMessageSigning, read once at the session start: a change
//! during a session applies from the next one); the RespURI the session follows;
//! Client-Request-Id (the EntDMID once the server set one, else 0: MS-MDM, the HTTP request
//! headers); the application-layer credentials and the next nonce ([`super::auth`]); the alerts
//! kept for package 1; and, when asked, the pretty (secrets masked) transcript of every message.
//! The session's protocol itself is the session module's.
//!
//! Use: [`SessionRun::begin`] → [`SessionRun::poll_request`] → send it →
//! [`SessionRun::handle_reply`], until [`SessionRun::is_done`]; then [`SessionRun::finish`].

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Device, ServerCache, SessionPlan};
use crate::csp::dmclient::{self, AddressList, LastGood};
use crate::session::{self, AwaitingServer, DeviceCx, Fault, Finding, Gate, Next, SessionError, Summary, Trigger};
use crate::syncml::{self, Alert, Chal, SyncMl};
use crate::tree::{Effect, Profile, Registry};

/// The default name of the signature header: MS-MDE2 §2.2.9.3 and Microsoft's DMClient CSP page
/// (RequireMessageSigning) say `MDM-Signature`; MS-MDM §2.1 says `MS-Signature`.
pub const DEFAULT_SIGNATURE_HEADER: &str = "MDM-Signature";

/// Connection attempts per server address when neither the template (`conn_retry_freq`) nor
/// the DMAcc account (`Ext/Microsoft/ConnRetryFreq`) says: the DMAcc default (w7 CONNRETRYFREQ).
pub const DEFAULT_CONN_RETRIES: u32 = 3;

/// Upper bound on connection attempts per address, whatever the settings say.
pub const MAX_CONN_RETRIES: u32 = 10;

/// One HTTP request a device wants sent: a SyncML message POSTed to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    pub body: String,
    /// The `Client-Request-Id` header.
    pub client_request_id: String,
    /// Sign `body` with the enrollment key and send the signature in this header (DMClient
    /// RequireMessageSigning); `None` sends it unsigned.
    pub sign_with: Option<String>,
    /// The most bytes of answer the device reads (`max_message_bytes`).
    pub max_body: u64,
}

/// Why an exchange brought no answer, and whose fault that is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeError {
    pub fault: Fault,
    /// What kind of failure, for counting: `connect`, `tls`, `timeout`, `throttled`,
    /// `http-4xx`, `http-5xx`, `too-large`, `body`, `config`, `simulated` (see
    /// `runner::http::HttpError::class`).
    pub class: &'static str,
    /// No connection could be made at all (refused, DNS, TLS handshake): the server never saw
    /// the request, so the next address of the list may be tried.
    pub no_connection: bool,
    pub message: String,
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What came back for a [`Request`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// The answer's body (`None` for an empty body: the end of the session), or why none came.
    pub result: Result<Option<String>, ExchangeError>,
    /// How long the exchange took.
    pub elapsed: Duration,
    /// Set when the request asked for a signature that could not be made: why (the message
    /// went out unsigned).
    pub unsigned: Option<String>,
    /// The answers that asked the device to wait and send the message again (HTTP 429 or 503)
    /// before this one came, in order.
    pub throttled: Vec<Throttle>,
}

/// An HTTP 429 (too many requests) or 503 (service unavailable) answer to a message: the
/// device waited and sent the same message again (RFC 9110 `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// 429 or 503.
    pub status: u16,
    /// The `Retry-After` header as the server sent it; `None` when it sent none.
    pub retry_after: Option<String>,
    /// How long the device waited before sending the message again.
    pub waited: Duration,
}

impl Reply {
    /// An answer that took `elapsed`.
    pub fn answer(body: Option<String>, elapsed: Duration) -> Reply {
        Reply { result: Ok(body), elapsed, unsigned: None, throttled: Vec::new() }
    }

    /// No answer.
    pub fn error(e: ExchangeError, elapsed: Duration) -> Reply {
        Reply { result: Err(e), elapsed, unsigned: None, throttled: Vec::new() }
    }
}

/// How a session is to run besides the device.
pub struct RunOptions {
    pub trigger: Trigger,
    /// The mode, alert and LoginStatus to use (a scheduler's request); `None` plans from the
    /// trigger and who is logged on now.
    pub plan: Option<SessionPlan>,
    /// Client alerts for package 1 (1226 unenroll, install reports).
    pub extra_alerts: Vec<Alert>,
    /// The policy consulted before each server command.
    pub gate: Box<dyn Gate>,
    /// Keep a pretty, secrets-masked copy of every message ([`SessionRun::take_transcript`]).
    pub transcript: bool,
    /// Whether the shell holds an enrollment key to sign with.
    pub can_sign: bool,
}

impl RunOptions {
    /// A session for `trigger`: planned from who is logged on, no extra alerts, every command
    /// allowed, no transcript, no key.
    pub fn new(trigger: Trigger) -> RunOptions {
        RunOptions {
            trigger,
            plan: None,
            extra_alerts: Vec::new(),
            gate: Box::new(session::AllowAll),
            transcript: false,
            can_sign: false,
        }
    }
}

/// How one session went.
#[derive(Debug)]
pub struct SessionReport {
    pub summary: Summary,
    /// `Some` when the session failed (the tree was rolled back).
    pub error: Option<SessionError>,
    /// Effects for the caller to carry out (empty after a failure).
    pub effects: Vec<Effect>,
    /// The server's last SyncHdr challenge (its NextNonce serves the next session's
    /// credentials: MS-MDM application-layer authentication, OMA DM auth-md5).
    pub challenge: Option<Chal>,
}

/// One file of a session transcript: `NNN-client.xml`, `NNN-server.xml` (NNN is the client
/// MsgID; the server file is the answer to that message) or `summary.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptFile {
    pub name: String,
    pub text: String,
}

enum State {
    Awaiting(Box<AwaitingServer>),
    Done(Box<SessionReport>),
    /// Only while a transition moves the state out.
    Moving,
}

/// One session under way.
pub struct SessionRun {
    state: State,
    /// The encoded message waiting to go (kept for a retry at the next address).
    body: String,
    /// The server addresses still to try for the first message, with their session URLs.
    candidates: std::vec::IntoIter<(String, Result<String, String>)>,
    base: String,
    url: Result<String, String>,
    list: Option<AddressList>,
    connected: bool,
    sent: bool,
    signing: bool,
    can_sign: bool,
    sig_header: String,
    request_id: String,
    /// Findings of the shell's part (unsigned messages), added to the summary at the end.
    notes: Vec<Finding>,
    /// How many of the device's waiting alerts went in package 1.
    delivered: usize,
    elapsed: Duration,
    /// Messages sent again after an HTTP 429 or 503 ([`Reply::throttled`]).
    throttled: u32,
    transcript: Option<Vec<TranscriptFile>>,
    started: DateTime<Utc>,
}

impl SessionRun {
    /// Starts a session of `device` at `now`: counts it, builds package 1 (the waiting alerts of
    /// its CSPs included) and picks the first server address.
    pub fn begin(registry: &Registry, device: &mut Device, opts: RunOptions, now: DateTime<Utc>) -> SessionRun {
        let mut cfg = match opts.plan {
            Some(plan) => device.start_session(opts.trigger, plan),
            None => device.next_session(opts.trigger),
        };
        cfg.extra_alerts = opts.extra_alerts;
        // Alerts the device's CSPs raised since its last completed session (an install report)
        // go in this package 1; they are forgotten only once the session completed.
        let queued = device.queued_alerts();
        let delivered = queued.len();
        cfg.extra_alerts.extend(queued);
        (cfg.cred, cfg.auth) = super::auth::session_auth(&device.tree);
        let ent_dmid = format!("Vendor/MSFT/DMClient/Provider/{}/EntDMID", device.provider_id);
        let request_id = device.tree.value(&ent_dmid).unwrap_or("0").to_string();
        let mut candidates = addresses(device, cfg.mode).into_iter();
        let (base, url) = candidates
            .next()
            .unwrap_or_else(|| (device.server_url.clone(), session_url(&device.server_url, cfg.mode, device.profile)));
        // SyncHdr Target names the server the session starts with (the cached one, or the
        // list's first). After a fail-over during the first message the POST URL moves on but
        // the headers keep this Target (the session machine owns them).
        cfg.server_url = base.clone();
        let list = dmclient::server_addresses(&device.tree, &device.provider_id);
        let signing = dmclient::message_signing_required(&device.tree, &device.provider_id);
        let sig_header = signature_header(&device.settings);
        let mut notes = Vec::new();
        if signing && !opts.can_sign {
            notes.push(unsigned_finding(&device.provider_id, 1, format!(
                "RequireMessageSigning is true but device {} has no enrollment certificate and key to sign with (pre-provisioned, not enrolled): its messages are sent without the {sig_header} header",
                device.id
            )));
        }
        let env = device.env(now);
        let mut cx = DeviceCx { registry, state: &mut device.tree, env: &env };
        let (awaiting, msg) = session::start(cfg, opts.gate, &mut cx);
        tracing::info!(device = %device.id, session = %awaiting.config().session_id, mode = %awaiting.config().mode, url = %url.as_deref().unwrap_or("-"), "session starts");
        let mut run = SessionRun {
            state: State::Awaiting(Box::new(awaiting)),
            body: String::new(),
            candidates,
            base,
            url,
            list,
            connected: false,
            sent: false,
            signing,
            can_sign: opts.can_sign,
            sig_header,
            request_id,
            notes,
            delivered,
            elapsed: Duration::ZERO,
            throttled: 0,
            transcript: (opts.transcript || tracing::enabled!(tracing::Level::TRACE)).then(Vec::new),
            started: now,
        };
        run.queue_message(&msg, 1);
        run
    }

    /// The session's configuration.
    pub fn session_id(&self) -> &str {
        match &self.state {
            State::Awaiting(a) => &a.config().session_id,
            State::Done(r) => &r.summary.session_id,
            State::Moving => "",
        }
    }

    /// True once the session ended (completed or failed): [`SessionRun::finish`] has its report.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// The next request to send, once per message (`None` while a request is out, or when the
    /// session is over).
    pub fn poll_request(&mut self, registry: &Registry, device: &mut Device) -> Option<Request> {
        if self.sent {
            return None;
        }
        let State::Awaiting(awaiting) = &mut self.state else { return None };
        let session_url = match &self.url {
            Ok(u) => u.clone(),
            Err(e) => {
                let error = SessionError::Transport { fault: Fault::Protocol, message: e.clone() };
                self.fail(registry, device, error, self.started);
                return None;
            }
        };
        // The session resolves and judges RespURIs against the URL it talks to.
        awaiting.set_session_url(&session_url);
        let url = awaiting.resp_uri().map_or(session_url, str::to_string);
        self.sent = true;
        Some(Request {
            url,
            body: self.body.clone(),
            client_request_id: self.request_id.clone(),
            sign_with: (self.signing && self.can_sign).then(|| self.sig_header.clone()),
            max_body: awaiting.limits().max_message_bytes,
        })
    }

    /// Takes the answer to the last request at `now`.
    pub fn handle_reply(&mut self, registry: &Registry, device: &mut Device, reply: Reply, now: DateTime<Utc>) {
        if !self.sent {
            return;
        }
        self.sent = false;
        self.elapsed += reply.elapsed;
        self.throttled += reply.throttled.len() as u32;
        let n = match &self.state {
            State::Awaiting(a) => a.awaiting_reply_to(),
            _ => return,
        };
        if let Some(why) = reply.unsigned {
            self.notes.push(unsigned_finding(&device.provider_id, n, format!(
                "message {n} could not be signed with the enrollment certificate of device {}: {why}; sent without the {} header",
                device.id, self.sig_header
            )));
        }
        let answer = match reply.result {
            // Nobody at this address: the next attempt of the list (first message only; once a
            // server answered, the session stays with it).
            Err(e) if !self.connected && e.no_connection => match self.candidates.next() {
                Some((b, u)) => {
                    tracing::info!(device = %device.id, error = %e, "no connection; trying the next server address");
                    (self.base, self.url) = (b, u);
                    return;
                }
                None => Err(e),
            },
            other => other,
        };
        if answer.is_ok() && !self.connected {
            self.connected = true;
            // The URL that worked is cached with the list it belongs to (the DMClient CSP page:
            // "cache the successfully connected server URL for the next session").
            if let Some(l) = &self.list {
                device.server_cache = Some(ServerCache { list: l.to_node_value(), url: self.base.clone() });
            }
        }
        let State::Awaiting(awaiting) = std::mem::replace(&mut self.state, State::Moving) else {
            return;
        };
        let env = device.env(now);
        let mut cx = DeviceCx { registry, state: &mut device.tree, env: &env };
        let next = match answer {
            Ok(None) => Next::Finished(awaiting.receive_empty(&mut cx)),
            // Each answer is decoded once, for the session and for showing it.
            Ok(Some(text)) => match syncml::decode(&text) {
                Ok(m) => {
                    self.show(n, "server", || pretty(&m));
                    awaiting.receive_message(&m, &mut cx)
                }
                Err(e) => {
                    self.show(n, "server", || raw(&text));
                    Next::Failed(awaiting.malformed(&text, e, &mut cx))
                }
            },
            Err(e) => {
                let error = SessionError::Transport { fault: e.fault, message: e.message };
                Next::Failed(awaiting.fail(error, &mut cx))
            }
        };
        match next {
            Next::Send(a, m) => {
                let n = a.awaiting_reply_to();
                self.state = State::Awaiting(Box::new(a));
                self.queue_message(&m, n);
            }
            Next::Finished(f) => {
                device.tree.commit();
                device.last_success = Some(now);
                device.alerts_delivered(self.delivered);
                // The last Chal's NextNonce is the next session's nonce (OMA DM auth-md5).
                super::auth::keep_next_nonce(&mut device.tree, f.challenge());
                tracing::info!(device = %device.id, "session completed");
                let effects = f.effects().to_vec();
                let challenge = f.challenge().cloned();
                let mut summary = f.summary;
                self.close(&mut summary);
                self.state = State::Done(Box::new(SessionReport { summary, error: None, effects, challenge }));
            }
            Next::Failed(f) => self.failed(device, f),
        }
    }

    /// The session's report, once it is over (`None` before).
    pub fn finish(self) -> Option<SessionReport> {
        match self.state {
            State::Done(r) => Some(*r),
            State::Awaiting(_) | State::Moving => None,
        }
    }

    /// The transcript files made since the last call (empty unless asked for).
    pub fn take_transcript(&mut self) -> Vec<TranscriptFile> {
        self.transcript.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn fail(&mut self, registry: &Registry, device: &mut Device, error: SessionError, now: DateTime<Utc>) {
        let State::Awaiting(awaiting) = std::mem::replace(&mut self.state, State::Moving) else {
            return;
        };
        let env = device.env(now);
        let mut cx = DeviceCx { registry, state: &mut device.tree, env: &env };
        let f = awaiting.fail(error, &mut cx);
        self.failed(device, f);
    }

    fn failed(&mut self, device: &mut Device, mut f: session::Failed) {
        device.tree.commit();
        if let SessionError::Unauthenticated { chal, .. } = &f.error {
            super::auth::keep_next_nonce(&mut device.tree, chal.as_deref());
        }
        self.close(&mut f.summary);
        // The caller reports the error; this is the log of it.
        tracing::info!(device = %device.id, error = %f.error, "session failed; tree rolled back");
        let report = SessionReport { summary: f.summary, error: Some(f.error), effects: Vec::new(), challenge: None };
        self.state = State::Done(Box::new(report));
    }

    fn close(&mut self, summary: &mut Summary) {
        summary.findings.append(&mut self.notes);
        summary.wall_us = self.elapsed.as_micros() as u64;
        summary.throttled = self.throttled;
        if self.transcript.is_some()
            && let Ok(text) = serde_json::to_string_pretty(summary)
        {
            self.push_file("summary.json".into(), text);
        }
    }

    fn queue_message(&mut self, msg: &SyncMl, n: u32) {
        self.body = syncml::encode(msg);
        tracing::debug!(msg_id = n, commands = msg.body.commands.len(), final_ = msg.body.final_, "client message");
        self.show(n, "client", || pretty(msg));
    }

    /// Pretty forms (a redacted copy of each message, re-indented) cost as much as the
    /// messages: they are built only for a transcript or the trace log.
    fn show(&mut self, n: u32, who: &str, text: impl FnOnce() -> String) {
        if self.transcript.is_none() {
            return;
        }
        let text = text();
        tracing::trace!("{who} message {n}:\n{text}");
        self.push_file(format!("{n:03}-{who}.xml"), text);
    }

    fn push_file(&mut self, name: String, text: String) {
        if let Some(files) = &mut self.transcript {
            files.push(TranscriptFile { name, text });
        }
    }
}

/// The session URL: the server address with `mode=<Mode>&Platform=WoA` appended (MS-MDM).
/// `mode=Apps` exists only on the win81 profile; on win10 it is sent as Maintenance.
pub fn session_url(server: &str, mode: session::Mode, profile: Profile) -> Result<String, String> {
    let mut url = url::Url::parse(server).map_err(|e| format!("server URL {server:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("server URL {server:?}: scheme must be http or https"));
    }
    let mode = if mode == session::Mode::Apps && profile != Profile::Win81 { session::Mode::Maintenance } else { mode };
    url.query_pairs_mut().append_pair("mode", mode.as_str()).append_pair("Platform", "WoA");
    Ok(url.into())
}

/// Every connection attempt of a session in order, as (server address, session URL): the
/// DMClient address list (ManagementServerAddressList, else ManagementServiceAddress) from the
/// cached URL when it was cached with this very list, else from its first entry
/// ([`AddressList::attempts`]); the device's ADDR when the tree holds no list. Each address is
/// tried `conn_retry_freq` times (template setting), else the DMAcc account's ConnRetryFreq,
/// else 3, at most 10; attempts follow each other at once (no back-off in simulated sessions).
pub fn addresses(device: &Device, mode: session::Mode) -> Vec<(String, Result<String, String>)> {
    let retries = device
        .settings
        .str("conn_retry_freq")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .or_else(|| {
            device.tree.child_names("SyncML/DMAcc").iter().find_map(|acc| {
                device.tree.value(&format!("SyncML/DMAcc/{acc}/Ext/Microsoft/ConnRetryFreq"))?.trim().parse().ok()
            })
        })
        .unwrap_or(DEFAULT_CONN_RETRIES)
        .clamp(1, MAX_CONN_RETRIES);
    let profile = device.profile;
    let urls: Vec<String> = match dmclient::server_addresses(&device.tree, &device.provider_id) {
        Some(list) => {
            let cached = device
                .server_cache
                .as_ref()
                .and_then(|c| Some(LastGood { list: AddressList::parse(&c.list).ok()?, url: c.url.clone() }));
            list.attempts(cached.as_ref(), retries).into_iter().map(String::from).collect()
        }
        None => vec![device.server_url.clone(); retries as usize],
    };
    urls.into_iter()
        .map(|u| {
            let s = session_url(&u, mode, profile);
            (u, s)
        })
        .collect()
}

/// The signature header name of the template (`signature_header`), or `MDM-Signature` when it
/// is not a valid HTTP header name (RFC 9110 token).
pub fn signature_header(settings: &crate::tree::Settings) -> String {
    let name =
        settings.str("signature_header").map(str::trim).filter(|s| !s.is_empty()).unwrap_or(DEFAULT_SIGNATURE_HEADER);
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.chars().all(token) {
        name.to_string()
    } else {
        tracing::warn!(name, "signature_header is not a valid HTTP header name; using {DEFAULT_SIGNATURE_HEADER}");
        DEFAULT_SIGNATURE_HEADER.to_string()
    }
}

/// The finding recorded when a message that must be signed goes out unsigned (`msg_id`: the
/// first such client message).
fn unsigned_finding(provider_id: &str, msg_id: u32, why: String) -> Finding {
    Finding {
        what: "unsigned-message".into(),
        msg_id: msg_id.to_string(),
        cmd_id: String::new(),
        cmd: "SyncHdr".into(),
        uri: Some(format!(
            "./Vendor/MSFT/DMClient/Provider/{}/RequireMessageSigning",
            crate::tree::encode_segment(provider_id)
        )),
        why,
    }
}

/// Pretty SyncML with secrets masked (bounded: [`syncml::PRETTY_MAX_BYTES`]).
fn pretty(msg: &SyncMl) -> String {
    syncml::pretty(&session::redact(msg))
}

/// A server answer that is not SyncML, as it came, cut at [`syncml::PRETTY_MAX_BYTES`].
fn raw(text: &str) -> String {
    let max = syncml::PRETTY_MAX_BYTES;
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n<!-- mdmsim: cut here, {} of {} bytes shown -->\n", &text[..end], end, text.len())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::device::{DeviceId, Template};
    use crate::session::Mode;

    fn device(settings: &[(&str, &str)]) -> Device {
        let id = DeviceId::parse("0123456789ABCDEF0123456789ABCDEF").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let mut d = Device::new(
            id,
            Profile::Win10,
            "https://addr.example/MDM.svc",
            "P",
            &Template::builtin(Profile::Win10),
            now,
        );
        for (k, v) in settings {
            std::sync::Arc::make_mut(&mut d.settings).0.insert(k.to_string(), v.to_string());
        }
        d
    }

    fn bases(d: &Device) -> Vec<String> {
        addresses(d, Mode::Maintenance).into_iter().map(|(b, _)| b).collect()
    }

    #[test]
    fn attempts_follow_the_list_from_the_cached_address_of_the_same_list() {
        let mut d = device(&[("conn_retry_freq", "2")]);
        assert_eq!(bases(&d), ["https://addr.example/MDM.svc"; 2], "no list: ADDR");
        dmclient::create_provider(&mut d.tree, "P", &d.settings);
        let list_key = format!("{}/ManagementServerAddressList", dmclient::provider_key("P"));
        d.tree.set_value(&list_key, "<https://a><https://b>");
        assert_eq!(bases(&d), ["https://a", "https://a", "https://b", "https://b"]);
        let (_, url) = &addresses(&d, Mode::Machine)[0];
        assert_eq!(url.as_ref().unwrap(), "https://a/?mode=Machine&Platform=WoA");
        d.server_cache = Some(ServerCache { list: "<https://a><https://b>".into(), url: "https://b".into() });
        assert_eq!(bases(&d), ["https://b", "https://b", "https://a", "https://a"]);
        // A new list starts from its first entry.
        d.tree.set_value(&list_key, "<https://b><https://c>");
        assert_eq!(bases(&d), ["https://b", "https://b", "https://c", "https://c"]);
        d.tree.set_value(&list_key, "<https://c><https://b>");
        assert_eq!(bases(&d), ["https://c", "https://c", "https://b", "https://b"]);
    }

    #[test]
    fn retries_come_from_the_template_then_the_dmacc_account_bounded() {
        let mut d = device(&[]);
        assert_eq!(bases(&d).len(), DEFAULT_CONN_RETRIES as usize);
        d.tree.set_value("SyncML/DMAcc/ABC/Ext/Microsoft/ConnRetryFreq", "6");
        assert_eq!(bases(&d).len(), 6);
        d.tree.set_value("SyncML/DMAcc/ABC/Ext/Microsoft/ConnRetryFreq", "1000");
        assert_eq!(bases(&d).len(), MAX_CONN_RETRIES as usize);
        let d = device(&[("conn_retry_freq", "0")]);
        assert_eq!(bases(&d).len(), 1, "at least one attempt");
    }

    #[test]
    fn an_invalid_signature_header_name_falls_back_to_the_default() {
        let d = device(&[("signature_header", "Bad Header")]);
        assert_eq!(signature_header(&d.settings), "MDM-Signature");
        let d = device(&[("signature_header", "MS-Signature")]);
        assert_eq!(signature_header(&d.settings), "MS-Signature");
    }
}
