//! The I/O shell around the sans-I/O core: it moves SyncML between a session and the server
//! over HTTP ([`http`]), keeps device state on disk ([`store`]), reads the wall clock, and
//! writes transcripts.
//!
//! [`run_session`] runs one session of one device to its end. It does not decide when sessions
//! happen or in which mode (the device's plan, later the scheduler) and does not persist: the
//! caller stores the device and the summary ([`store::Store::save_session`]) so that one
//! transaction holds the whole session.
//!
//! What DMClient says about the wire is applied here (Microsoft's DMClient CSP page): the
//! first message goes to the server address list in order (ManagementServerAddressList, else
//! ManagementServiceAddress, else the device's ADDR), each address tried `conn_retry_freq` /
//! DMAcc ConnRetryFreq times, and the address that answered is cached in
//! [`Device::server_cache`] to start from next session (a new list starts from its first
//! entry); with RequireMessageSigning every message carries the CMS detached signature header
//! ([`signing`]) made with the enrollment key the transport holds. A device that must sign but
//! has no enrollment key (pre-provisioned with `device new`) sends its messages unsigned and the
//! summary records an `unsigned-message` finding, so a server's handling of a missing
//! signature can be tested.

pub mod enroll;
pub mod enrollment;
pub mod fetch;
pub mod fleet;
pub mod http;
pub mod scenario;
pub mod signing;
pub mod store;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::csp::dmclient::{self, AddressList, LastGood};
use crate::device::{Device, ServerCache, SessionPlan};
use crate::session::{self, AllowAll, DeviceCx, Finding, Gate, Next, SessionError, Summary, Trigger};
use crate::syncml::{self, Alert, Chal, SyncMl};
use crate::tree::{Effect, Registry};

use self::http::Transport;

/// What to run besides the device and the transport.
pub struct SessionOptions {
    pub trigger: Trigger,
    /// Write every message here as `NNN-client.xml` / `NNN-server.xml` (pretty, secrets
    /// masked; NNN is the client MsgID, the server file is the answer to that message), and
    /// the session summary (findings included) as `summary.json` at the end.
    pub transcript: Option<PathBuf>,
    /// Client alerts for package 1 (1226 unenroll, install reports).
    pub extra_alerts: Vec<Alert>,
    /// The policy consulted before each server command.
    pub gate: Box<dyn Gate>,
    /// The mode, alert and LoginStatus to use (a scheduler's request); `None` plans from the
    /// trigger and who is logged on now.
    pub plan: Option<SessionPlan>,
    /// The simulated instant of the whole session (virtual and scaled clocks); `None` reads
    /// the wall clock.
    pub at: Option<DateTime<Utc>>,
}

impl SessionOptions {
    /// A session for `trigger`, no transcript, no extra alerts, the default gate.
    pub fn new(trigger: Trigger) -> Self {
        SessionOptions {
            trigger,
            transcript: None,
            extra_alerts: Vec::new(),
            gate: Box::new(AllowAll),
            plan: None,
            at: None,
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

/// Runs one session of `device` now. On return the device's tree holds the session's changes
/// (committed) or, after a failure, the values of before the session; its session counter has
/// moved on either way. The caller persists `device` and `report.summary`.
///
/// A device with a DMAcc account (an enrolled one) sends its application-layer credentials
/// and answers a 401/407 challenge with them; the NextNonce of the last challenge is written
/// to its tree for the next session ([`enrollment::session_auth`]; MS-MDM application-layer
/// authentication). The mTLS identity is the transport's ([`enrollment::http_options`]).
///
/// What the server sends is bounded by the device's [`session::Limits`]: the transport reads at
/// most `max_message_bytes` of an answer, and each answer is decoded once. Messages are
/// pretty-printed (redacted) only for a transcript or the trace log.
pub async fn run_session(
    registry: &Registry,
    device: &mut Device,
    transport: &Transport,
    opts: SessionOptions,
) -> SessionReport {
    let now = || opts.at.unwrap_or_else(Utc::now);
    let wall = std::time::Instant::now();
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
    // Application-layer credentials of an enrolled device (MS-MDM, OMA DM auth-md5).
    (cfg.cred, cfg.auth) = enrollment::session_auth(&device.tree);
    // Client-Request-Id carries the EntDMID once the server set one, else 0 (MS-MDM, the HTTP
    // request headers).
    let ent_dmid = format!("Vendor/MSFT/DMClient/Provider/{}/EntDMID", device.provider_id);
    let request_id = device.tree.value(&ent_dmid).unwrap_or("0").to_string();
    let profile = device.profile;
    // The servers to try, in order, each as often as the device retries a connection (the
    // DMClient CSP page, ManagementServerAddressList; see `addresses`).
    let mut candidates = addresses(device, cfg.mode).into_iter();
    let (mut base, mut url) = match candidates.next() {
        Some(c) => c,
        None => (device.server_url.clone(), http::Transport::session_url(&device.server_url, cfg.mode, profile)),
    };
    // SyncHdr Target names the server the session starts with (the cached one, or the list's
    // first). After a fail-over during the first message the POST URL moves on but the headers
    // keep this Target (the session machine owns them).
    cfg.server_url = base.clone();
    let list = dmclient::server_addresses(&device.tree, &device.provider_id);
    // RequireMessageSigning is read once, at the session start: a change the server makes
    // during a session applies from the next session on.
    let signing = dmclient::message_signing_required(&device.tree, &device.provider_id);
    let sig_header = signature_header(&device.settings);
    let mut notes = Vec::new();
    if signing && transport.signer().is_none() {
        notes.push(unsigned_finding(&device.provider_id, 1, format!(
            "RequireMessageSigning is true but device {} has no enrollment certificate and key to sign with (pre-provisioned, not enrolled): its messages are sent without the {sig_header} header",
            device.id
        )));
    }
    let env = device.env(now());
    let mut cx = DeviceCx { registry, state: &mut device.tree, env: &env };
    let (mut awaiting, mut msg) = session::start(cfg, opts.gate, &mut cx);
    let max_body = awaiting.limits().max_message_bytes;
    // Pretty forms (a redacted copy of each message, re-indented) cost as much as the messages:
    // they are built only for a transcript or the trace log.
    let show = opts.transcript.is_some() || tracing::enabled!(tracing::Level::TRACE);
    let mut connected = false;
    tracing::info!(device = %device.id, session = %awaiting.config().session_id, mode = %awaiting.config().mode, url = ?url.as_ref().map(|u| u.as_str()), "session starts");
    loop {
        let n = awaiting.awaiting_reply_to();
        let body = syncml::encode(&msg);
        tracing::debug!(msg_id = n, commands = msg.body.commands.len(), final_ = msg.body.final_, "client message");
        if show {
            let shown = pretty(&msg);
            tracing::trace!("client message {n}:\n{shown}");
            write_transcript(opts.transcript.as_deref(), n, "client", &shown);
        }
        let signature = match (signing, transport.signer()) {
            (true, Some(signer)) => match signer.sign(body.as_bytes()) {
                Ok(sig) => Some(sig),
                Err(e) => {
                    notes.push(unsigned_finding(&device.provider_id, n, format!(
                        "message {n} could not be signed with the enrollment certificate of device {}: {e}; sent without the {sig_header} header",
                        device.id
                    )));
                    None
                }
            },
            _ => None,
        };
        let answer = loop {
            let session_url = match &url {
                Ok(u) => u.to_string(),
                Err(e) => break Err(http::HttpError::Config(e.to_string())),
            };
            // The session resolves and judges RespURIs against the URL it talks to.
            awaiting.set_session_url(&session_url);
            let target = awaiting.resp_uri().map_or(session_url, str::to_string);
            let sig = signature.as_deref().map(|v| (sig_header.as_str(), v));
            let answer = transport.post_signed(&target, &body, &request_id, sig, max_body).await;
            match answer {
                // Nobody at this address: the next attempt of the list (first message only;
                // once a server answered, the session stays with it).
                Err(e) if !connected && e.is_no_connection() => match candidates.next() {
                    Some((b, u)) => {
                        tracing::info!(device = %device.id, url = target, error = %e, "no connection; trying the next server address");
                        (base, url) = (b, u);
                    }
                    None => break Err(e),
                },
                other => break other,
            }
        };
        if answer.is_ok() && !connected {
            connected = true;
            // The URL that worked is cached with the list it belongs to (the DMClient CSP page:
            // "cache the successfully connected server URL for the next session").
            if let Some(l) = &list {
                device.server_cache = Some(ServerCache { list: l.to_node_value(), url: base.clone() });
            }
        }
        let env = device.env(now());
        let mut cx = DeviceCx { registry, state: &mut device.tree, env: &env };
        let next = match answer {
            Ok(None) => Next::Finished(awaiting.receive_empty(&mut cx)),
            // Each answer is decoded once, for the session and for showing it.
            Ok(Some(text)) => match syncml::decode(&text) {
                Ok(m) => {
                    if show {
                        let shown = pretty(&m);
                        tracing::trace!("server answer to {n}:\n{shown}");
                        write_transcript(opts.transcript.as_deref(), n, "server", &shown);
                    }
                    awaiting.receive_message(&m, &mut cx)
                }
                Err(e) => {
                    if show {
                        let shown = raw(&text);
                        tracing::trace!("server answer to {n} (not SyncML):\n{shown}");
                        write_transcript(opts.transcript.as_deref(), n, "server", &shown);
                    }
                    Next::Failed(awaiting.malformed(&text, e, &mut cx))
                }
            },
            Err(e) => {
                let error = SessionError::Transport { fault: e.fault(), message: e.to_string() };
                Next::Failed(awaiting.fail(error, &mut cx))
            }
        };
        match next {
            Next::Send(a, m) => {
                awaiting = a;
                msg = m;
            }
            Next::Finished(f) => {
                device.tree.commit();
                device.last_success = Some(now());
                device.alerts_delivered(delivered);
                // The last Chal's NextNonce is the next session's nonce (OMA DM auth-md5).
                enrollment::keep_next_nonce(&mut device.tree, f.challenge());
                tracing::info!(device = %device.id, "session completed");
                let effects = f.effects().to_vec();
                let challenge = f.challenge().cloned();
                let mut summary = f.summary;
                summary.findings.append(&mut notes);
                summary.wall_us = wall.elapsed().as_micros() as u64;
                write_summary(opts.transcript.as_deref(), &summary);
                return SessionReport { summary, error: None, effects, challenge };
            }
            Next::Failed(mut f) => {
                f.summary.findings.append(&mut notes);
                f.summary.wall_us = wall.elapsed().as_micros() as u64;
                return failed(device, f, opts.transcript.as_deref());
            }
        }
    }
}

/// Connection attempts per server address when neither the template (`conn_retry_freq`) nor
/// the DMAcc account (`Ext/Microsoft/ConnRetryFreq`) says: the DMAcc default (w7 CONNRETRYFREQ).
const DEFAULT_CONN_RETRIES: u32 = 3;

/// Upper bound on connection attempts per address, whatever the settings say.
const MAX_CONN_RETRIES: u32 = 10;

/// Every connection attempt of a session in order, as (server address, session URL): the
/// DMClient address list (ManagementServerAddressList, else ManagementServiceAddress) from the
/// cached URL when it was cached with this very list, else from its first entry
/// ([`AddressList::attempts`]); the device's ADDR when the tree holds no list. Each address is
/// tried `conn_retry_freq` times (template setting), else the DMAcc account's ConnRetryFreq,
/// else 3, at most 10; attempts follow each other at once (no back-off in simulated sessions).
fn addresses(device: &Device, mode: crate::session::Mode) -> Vec<(String, Result<reqwest::Url, http::HttpError>)> {
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
            let s = http::Transport::session_url(&u, mode, profile);
            (u, s)
        })
        .collect()
}

/// The signature header name of the template (`signature_header`), or `MDM-Signature` when it
/// is not a valid HTTP header name.
fn signature_header(settings: &crate::tree::Settings) -> String {
    let name = signing::header_name(settings);
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok() {
        name.to_string()
    } else {
        tracing::warn!(name, "signature_header is not a valid HTTP header name; using MDM-Signature");
        signing::DEFAULT_HEADER.to_string()
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

/// How long a package download may take before it counts as timed out.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Upper bound on timer/fetch rounds in one catch-up, so a CSP that keeps asking can never
/// spin the runner forever.
const MAX_ROUNDS: usize = 64;

/// Brings the device's CSP timers up to `now`: runs every timer that is due (one late call
/// catches up on all steps that were due), performs the downloads they ask for with the
/// session's HTTP client, and feeds the outcomes back, until nothing more is due. Alerts are
/// kept with the device ([`carry_out`]); returns the other effects that are not downloads
/// (unenroll, session requests) for the caller.
pub async fn run_timers(
    registry: &Registry,
    device: &mut Device,
    transport: &Transport,
    now: chrono::DateTime<Utc>,
) -> Vec<Effect> {
    let mut rest = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let env = device.env(now);
        let due = registry.next_deadline(&mut device.tree, &env).is_some_and(|d| d <= now);
        if !due {
            break;
        }
        let effects = registry.on_deadline(&mut device.tree, &env);
        rest.extend(carry_out(registry, device, transport, effects, now).await);
    }
    rest
}

/// Performs the `Fetch` effects (and the fetches their outcomes ask for in turn), keeps the
/// `Alert` effects with the device for package 1 of its next session (they arise outside a
/// session: a timer or a download finished an install), and returns every other effect, in
/// order.
pub async fn carry_out(
    registry: &Registry,
    device: &mut Device,
    transport: &Transport,
    effects: Vec<Effect>,
    now: chrono::DateTime<Utc>,
) -> Vec<Effect> {
    let mut rest = Vec::new();
    let mut queue: std::collections::VecDeque<Effect> = effects.into();
    let mut rounds = 0;
    while let Some(effect) = queue.pop_front() {
        match effect {
            Effect::Fetch { csp, node, url } if rounds < MAX_ROUNDS => {
                rounds += 1;
                tracing::info!(device = %device.id, url, "downloading package");
                let outcome = fetch::fetch(transport.client(), &url, FETCH_TIMEOUT).await;
                tracing::info!(device = %device.id, ?outcome, "download finished");
                let env = device.env(now);
                queue.extend(registry.on_fetch(&mut device.tree, &env, csp, &node, &outcome));
            }
            Effect::Fetch { url, .. } => tracing::warn!(url, "too many downloads in one round; left for later"),
            Effect::Alert { code, item } => {
                if let Some(dropped) = device.keep_alert(code, &item, now) {
                    tracing::warn!(
                        device = %device.id,
                        alert = %dropped,
                        "more than {} alerts wait for the next session; the oldest is dropped",
                        crate::device::MAX_PENDING_ALERTS
                    );
                }
            }
            other => rest.push(other),
        }
    }
    rest
}

fn failed(device: &mut Device, f: session::Failed, transcript: Option<&Path>) -> SessionReport {
    device.tree.commit();
    if let SessionError::Unauthenticated { chal, .. } = &f.error {
        enrollment::keep_next_nonce(&mut device.tree, chal.as_deref());
    }
    write_summary(transcript, &f.summary);
    // The caller reports the error; this is the log of it.
    tracing::info!(device = %device.id, error = %f.error, "session failed; tree rolled back");
    SessionReport { summary: f.summary, error: Some(f.error), effects: Vec::new(), challenge: None }
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

/// Writes the summary next to the transcript's messages.
fn write_summary(dir: Option<&Path>, summary: &Summary) {
    if let Ok(text) = serde_json::to_string_pretty(summary) {
        write_file(dir, "summary.json", &text);
    }
}

/// Writes one transcript file; a failure is logged, not fatal (the session matters more).
fn write_transcript(dir: Option<&Path>, n: u32, who: &str, text: &str) {
    write_file(dir, &format!("{n:03}-{who}.xml"), text);
}

fn write_file(dir: Option<&Path>, name: &str, text: &str) {
    let Some(dir) = dir else { return };
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, text) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write transcript");
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::device::{DeviceId, Template};
    use crate::session::Mode;
    use crate::tree::Profile;

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
        assert_eq!(url.as_ref().unwrap().as_str(), "https://a/?mode=Machine&Platform=WoA");
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
