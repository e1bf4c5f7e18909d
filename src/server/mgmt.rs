//! The management endpoint's logic: one reference OMA-DM server session per device message
//! (MS-MDM; OMA DM 1.2). It authenticates the message (client certificate or
//! `syncml:auth-md5`), statuses the client's commands, records check-ins and inventory, sends
//! the commands the policies call for in package 1's reply, reads back Statuses and Results,
//! and ends the session when nothing is left: with an empty body, or (compat `session_end`) a
//! message that holds only Statuses. The compat switches also decide `<Final/>`, the CmdID
//! style, whether Alerts get Statuses, and an empty answer to package 1.
//!
//! Owns the per-device command queue and its rules: Add then Replace after a 418; app installs
//! as an Atomic of Add (or Replace) Name/URL/Version + Exec DownloadInstall (Microsoft's
//! EnterpriseAppManagement CSP page), then `Download/<ProductID>/Status` polls in later sessions
//! until 5 or a failure; configuration profiles (`profiles.rs`) and MSI installs (`msi.rs`) in
//! Maintenance sessions only; nothing but reads and unenroll in a Machine-mode session
//! (Microsoft's Windows 8.1 blog post on MDM operation modes). It does not do HTTP (see `mod.rs`) and shares nothing with the
//! device side but the SyncML codec.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use md5::{Digest as _, Md5};

use super::compat::{CmdIds, Compat, SessionEnd};
use super::config::{AuthMode, Config};
use super::msi::{self, MsiCmd, MsiPlan, MsiTrack};
use super::profiles::{self, ProfileCmd, ProfilePlan, ProfileTrack};
use super::records::*;
use crate::syncml::{
    Alert, AlertCode, Chal, Command, Container, Item, ItemCmd, Meta, Results, Status, StatusCode, SyncBody, SyncHdr,
    SyncMl,
};

/// The LoginStatus client event type (Alert 1224 in package 1, MS-MDM).
const LOGIN_STATUS: &str = "com.microsoft/MDM/LoginStatus";
/// The user-initiated unenrollment generic alert type.
const UNENROLL_ALERT: &str = "com.microsoft:mdm.unenrollment.userrequest";

/// An app as the server plans it: the config entry plus where and what it serves.
#[derive(Debug, Clone)]
pub struct AppPlan {
    pub name: String,
    pub product_id: String,
    pub version: String,
    pub url: String,
    pub size: usize,
    pub sha256: String,
    /// Installed only once assigned to a device ([`Mgmt::assign_app`]).
    pub on_request: bool,
}

/// Why an app could not be assigned to a device.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("no device {0:?}")]
    UnknownDevice(String),
    #[error("no app {0:?} in the server's configuration")]
    UnknownApp(String),
    #[error("the device already has this app")]
    AlreadyAssigned,
}

/// Gives the device an app install to carry out.
fn assign(d: &mut Device, app: &AppPlan, config: &Config) {
    d.apps.insert(
        app.name.clone(),
        AppTrack {
            op: Op::Add,
            atomic_status: None,
            children: Vec::new(),
            add_download_install: config.management.add_download_install_node,
            lost: 0,
        },
    );
    d.record.apps.insert(
        app.name.clone(),
        AppRecord {
            product_id: app.product_id.clone(),
            version: app.version.clone(),
            url: app.url.clone(),
            size: app.size,
            sha256: app.sha256.clone(),
            state: AppState::Pending,
            attempts: 0,
            polls: 0,
            last_status: None,
        },
    );
}

/// Everything the server delivers, planned once at start and shared by every device.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    pub apps: Vec<AppPlan>,
    pub profiles: Vec<ProfilePlan>,
    pub msis: Vec<MsiPlan>,
}

/// The application-layer credentials of one device (Microsoft's w7 APPLICATION CSP page, APPAUTH).
#[derive(Debug, Clone)]
pub struct Creds {
    /// APPSRV AAUTHNAME / AAUTHSECRET: what the client digests in its Cred.
    pub name: String,
    pub secret: String,
    /// The nonce the next Cred must use (AAUTHDATA at enrollment, then each Chal's NextNonce).
    pub nonce: Vec<u8>,
}

/// One device message as the HTTP layer hands it over.
pub struct Incoming<'a> {
    pub msg: SyncMl,
    /// The `mode` query parameter.
    pub mode: Option<&'a str>,
    /// The CN of a TLS client certificate that verified against our CA.
    pub cert_cn: Option<&'a str>,
    /// The `UserAgentOrigin` header Windows sends, if sent.
    pub user_agent_origin: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// What to answer.
#[derive(Debug)]
pub enum Reply {
    Message(Box<SyncMl>),
    /// HTTP 200 with an empty body: the session is over.
    End,
    /// HTTP 401 with no SyncML at all (compat `auth_http_401`): the credentials failed.
    HttpUnauthorized,
}

/// Op to use for a setting or an app's Name/URL/Version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SetState {
    Pending,
    InFlight,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
struct Setting {
    value: String,
    format: &'static str,
    op: Op,
    state: SetState,
    attempts: u32,
}

#[derive(Debug, Clone)]
struct AppTrack {
    op: Op,
    atomic_status: Option<u16>,
    /// Statuses of the Atomic's children: Cmd, code, TargetRef.
    children: Vec<(String, u16, Option<String>)>,
    /// Whether the Add also creates the DownloadInstall node (the CSP page: "create the Name, URL,
    /// Version, and DownloadInstall nodes first"); dropped if the device refuses that item.
    add_download_install: bool,
    /// Install Atomics whose statuses never came (the session failed, or our answer was
    /// lost): sent again, and not held against `max_attempts`.
    lost: u32,
}

/// What a CmdID we sent was for.
#[derive(Debug, Clone)]
enum Sent {
    Inventory {
        uri: String,
    },
    Setting {
        uri: String,
    },
    AppAtomic {
        app: String,
    },
    AppChild {
        app: String,
        uri: String,
    },
    AppPoll {
        app: String,
        uri: String,
    },
    Unenroll {
        uri: String,
    },
    /// The Windows 8.1 WNS configuration (`MDM_WNSConfiguration` UpdateConfiguration).
    WnsUpdate {
        uri: String,
    },
    Rekey {
        uri: String,
        name: bool,
    },
    Profile {
        profile: String,
        cmd: ProfileCmd,
    },
    Msi {
        msi: String,
        cmd: MsiCmd,
    },
}

impl Sent {
    fn uri(&self) -> Option<&str> {
        match self {
            Sent::Inventory { uri }
            | Sent::Setting { uri }
            | Sent::AppChild { uri, .. }
            | Sent::AppPoll { uri, .. }
            | Sent::Unenroll { uri }
            | Sent::WnsUpdate { uri }
            | Sent::Rekey { uri, .. } => Some(uri),
            Sent::AppAtomic { .. } => None,
            Sent::Profile { cmd, .. } => cmd.uri(),
            Sent::Msi { cmd, .. } => Some(cmd.uri()),
        }
    }
}

/// The server's state for one device.
#[derive(Debug, Default)]
pub struct Device {
    pub record: DeviceRecord,
    creds: Option<Creds>,
    /// New credentials sent in a DMAcc Replace, accepted alongside the old until confirmed.
    rekey: Option<(String, String, u8)>,
    rekey_wanted: bool,
    settings: BTreeMap<String, Setting>,
    apps: BTreeMap<String, AppTrack>,
    profiles: BTreeMap<String, ProfileTrack>,
    msis: BTreeMap<String, MsiTrack>,
    inventory_done: bool,
    unenroll_sent: bool,
    sent: HashMap<String, Sent>,
    /// Session ID and index of its check-in.
    session: Option<(String, usize)>,
    /// Package 1 arrived; its commands go once the client's package is complete (Final).
    plan_pending: bool,
    /// CmdIDs of this session's commands that got their Status.
    answered: HashSet<String>,
    /// The client's last MsgID in this session.
    last_msg_id: Option<u64>,
    /// The MsgID of our last reply, when the client owes a Status for its SyncHdr.
    owed_hdr_status: Option<String>,
    /// The MsgID of our message that carried this session's commands.
    commands_msg_id: String,
    /// A Results item sent in chunks (MoreData): CmdRef, LocURI and the data so far.
    chunk: Option<(String, Option<String>, String)>,
    /// A session we ended with a Status-only message: the device must not answer it.
    ended_session: Option<String>,
    /// The AppId to send a Windows 8.1 `UpdateConfiguration` for in the next Maintenance
    /// session (its channel answered 404/410).
    wns_update: Option<String>,
}

/// All devices' management state.
pub struct Mgmt {
    config: Arc<Config>,
    compat: Compat,
    plans: Arc<Plans>,
    devices: BTreeMap<String, Device>,
    rng: ServerRng,
}

/// Where the management server's nonces and UUID CmdIDs come from: the operating system, or a
/// generator seeded by `[management] seed`, so that a whole run can be replayed.
pub enum ServerRng {
    Os,
    Seeded(Box<rand_chacha::ChaCha8Rng>),
}

impl ServerRng {
    /// The generator a config asks for.
    pub fn of(config: &Config) -> ServerRng {
        match config.management.seed {
            Some(seed) => ServerRng::Seeded(Box::new(rand::SeedableRng::seed_from_u64(seed))),
            None => ServerRng::Os,
        }
    }

    /// 16 random bytes (a nonce, a secret).
    pub fn bytes16(&mut self) -> Vec<u8> {
        match self {
            ServerRng::Os => fresh_nonce(),
            ServerRng::Seeded(r) => {
                let mut b = vec![0u8; 16];
                rand::RngExt::fill(&mut **r, &mut b[..]);
                b
            }
        }
    }

    /// A random (version 4) UUID.
    pub fn uuid(&mut self) -> String {
        match self {
            ServerRng::Os => uuid::Uuid::new_v4().to_string(),
            ServerRng::Seeded(_) => {
                let b: [u8; 16] = self.bytes16().try_into().unwrap_or([0; 16]);
                uuid::Builder::from_random_bytes(b).into_uuid().to_string()
            }
        }
    }

    /// An independent generator for one reply (seeded from this one when this one is).
    fn fork(&mut self) -> ServerRng {
        match self {
            ServerRng::Os => ServerRng::Os,
            ServerRng::Seeded(r) => {
                ServerRng::Seeded(Box::new(rand::SeedableRng::seed_from_u64(rand::RngExt::random(&mut **r))))
            }
        }
    }
}

impl Mgmt {
    /// A fresh state for a config and the apps it serves (no profiles, no MSI).
    #[cfg(test)]
    pub fn new(config: Arc<Config>, apps: Vec<AppPlan>) -> Self {
        Self::with_plans(config, Plans { apps, ..Plans::default() })
    }

    /// A fresh state for a config and everything it delivers.
    pub fn with_plans(config: Arc<Config>, plans: Plans) -> Self {
        Mgmt {
            compat: config.compat(),
            rng: ServerRng::of(&config),
            config,
            plans: Arc::new(plans),
            devices: BTreeMap::new(),
        }
    }

    /// The records of every device.
    pub fn records(&self) -> Vec<DeviceRecord> {
        self.devices.values().map(|d| d.record.clone()).collect()
    }

    /// Assigns the configured app `name` to a known device: it goes in the device's next
    /// session that may install apps (Maintenance, or Apps on Windows 8.1).
    pub fn assign_app(&mut self, device_id: &str, name: &str) -> Result<(), AssignError> {
        let app =
            self.plans.apps.iter().find(|a| a.name == name).ok_or_else(|| AssignError::UnknownApp(name.into()))?;
        let d = self.devices.get_mut(device_id).ok_or_else(|| AssignError::UnknownDevice(device_id.into()))?;
        if d.apps.contains_key(name) {
            return Err(AssignError::AlreadyAssigned);
        }
        assign(d, app, &self.config);
        Ok(())
    }

    /// The record of one device.
    pub fn record(&self, device_id: &str) -> Option<DeviceRecord> {
        self.devices.get(device_id).map(|d| d.record.clone())
    }

    /// Records an enrollment and the device's app-layer credentials.
    /// A device that enrolls again (after an unenroll wiped its tree) gets every policy anew;
    /// its history (check-ins, results, findings) stays.
    pub fn enrolled(&mut self, device_id: &str, record: EnrollmentRecord, creds: Creds) {
        let fresh = new_device(device_id, &self.config, &self.plans);
        let dev = self.device(device_id);
        if dev.record.enrollment.is_some() || !dev.record.checkins.is_empty() {
            dev.settings = fresh.settings;
            dev.apps = fresh.apps;
            dev.record.apps = fresh.record.apps;
            dev.profiles = fresh.profiles;
            dev.record.profiles = fresh.record.profiles;
            dev.msis = fresh.msis;
            dev.record.msi = fresh.record.msi;
            dev.record.settings.clear();
            dev.inventory_done = false;
            dev.unenroll_sent = false;
            dev.rekey = None;
            dev.rekey_wanted = false;
            dev.sent.clear();
            dev.session = None;
        }
        dev.record.enrollment = Some(record);
        dev.record.unenrolled = false;
        dev.creds = Some(creds);
    }

    /// Asks for a DMAcc rekey in the device's next Maintenance session. False if the device has
    /// no app-layer credentials here.
    pub fn request_rekey(&mut self, device_id: &str) -> bool {
        match self.devices.get_mut(device_id) {
            Some(d) if d.creds.is_some() => {
                d.rekey_wanted = true;
                true
            }
            _ => false,
        }
    }

    /// The device's last reported `Push/ChannelURI`, if any.
    pub fn channel_uri(&self, device_id: &str) -> Option<String> {
        let d = self.devices.get(device_id)?;
        d.record
            .inventory
            .iter()
            .find(|(u, v)| u.ends_with("/Push/ChannelURI") && !v.is_empty())
            .map(|(_, v)| v.clone())
    }

    /// Records a push sent to the device. A dead channel (404/410) means the WNS configuration
    /// must be sent again in the next Maintenance session (Microsoft's Windows 8.1 blog post on MDM operation modes): the PFN goes back in the queue and the stale ChannelURI is forgotten.
    pub fn pushed(&mut self, device_id: &str, record: PushRecord) {
        let dead = matches!(record.http_status, 404 | 410);
        let dev = self.device(device_id);
        dev.record.pushes.push(record);
        if dev.record.pushes.len() > DeviceRecord::MAX_PUSHES {
            let extra = dev.record.pushes.len() - DeviceRecord::MAX_PUSHES;
            dev.record.pushes.drain(..extra);
        }
        if dead {
            dev.record.inventory.retain(|uri, _| !uri.ends_with("/Push/ChannelURI"));
            // A Windows 8.1 agent is configured with MDM_WNSConfiguration's UpdateConfiguration
            // (the operation modes post); Windows 10/11 with the PFN.
            let win81 = os_version(dev).is_some_and(|v| v.starts_with("6."));
            for (uri, s) in dev.settings.iter_mut().filter(|(u, _)| u.ends_with("/Push/PFN")) {
                s.state = SetState::Pending;
                s.op = Op::Replace;
                s.attempts = 0;
                dev.record.settings.remove(uri);
                if win81 {
                    dev.wns_update = Some(s.value.clone());
                }
            }
        }
    }

    /// Records a fault injected into an answer to the device. Nothing else changes: a fault
    /// that replaced the answer was drawn before the message was handled, so the commands of
    /// the session stay in flight and go again in the device's next session.
    pub fn fault_injected(&mut self, device_id: &str, record: FaultRecord) {
        self.device(device_id).record.faults.push(record);
    }

    fn device(&mut self, id: &str) -> &mut Device {
        let config = &self.config;
        let plans = &self.plans;
        self.devices.entry(id.to_string()).or_insert_with(|| new_device(id, config, plans))
    }

    /// Handles one device message and returns the answer.
    pub fn handle(&mut self, inc: Incoming<'_>) -> Reply {
        let Incoming { msg, mode, cert_cn, user_agent_origin, now } = inc;
        let config = self.config.clone();
        let compat = self.compat;
        let plans = self.plans.clone();
        let device_id = msg.hdr.source.trim().to_string();
        let mut rng = self.rng.fork();
        let mut out = Out::new(&msg.hdr, &compat, self.rng.fork());
        let dev = self.device(&device_id);

        // Authentication first (OMA DM 1.2 security): nothing else is processed without it.
        let auth = match authenticate(&config, dev, &msg.hdr, cert_cn, &mut rng, !compat.auth_http_401) {
            Ok(method) => method,
            // Compat: a bare HTTP 401, no Status and no Chal (so no new nonce either).
            Err(_) if compat.auth_http_401 => return Reply::HttpUnauthorized,
            Err((code, nonce)) => {
                let mut st = out.hdr_status(code);
                st.chal = Some(Box::new(Chal {
                    meta: Meta {
                        type_: Some("syncml:auth-md5".into()),
                        format: Some("b64".into()),
                        next_nonce: Some(B64.encode(nonce)),
                        ..Meta::default()
                    },
                }));
                out.commands.push(Command::Status(st));
                return Reply::Message(Box::new(out.finish()));
            }
        };
        let st = out.hdr_status(StatusCode::Ok.code());
        out.commands.push(Command::Status(st));

        let session_alert = msg.body.commands.iter().find_map(|c| match c {
            Command::Alert(a) => {
                let code = AlertCode::parse(&a.data)?;
                matches!(code, AlertCode::ClientInitiatedMgmt | AlertCode::ServerInitiatedMgmt).then_some(code.code())
            }
            _ => None,
        });
        let same_session = dev.session.as_ref().is_some_and(|(id, _)| *id == msg.hdr.session_id);
        if session_alert.is_none() && dev.ended_session.as_deref() == Some(msg.hdr.session_id.as_str()) {
            // MS-MDM: a message without commands ends the session; nothing answers it.
            dev.record.finding(format!(
                "session {} message {}: the device answered our message that had no commands (the session was over)",
                msg.hdr.session_id, msg.hdr.msg_id
            ));
            return Reply::End;
        }
        dev.ended_session = None;
        if session_alert.is_some() || !same_session {
            if session_alert.is_none() {
                dev.record.finding(format!(
                    "session {} message {}: no Alert 1201/1200 in the first message of the session",
                    msg.hdr.session_id, msg.hdr.msg_id
                ));
            }
            start_session(dev, &msg, (mode, user_agent_origin), session_alert, auth, now);
            tracing::info!(device = %device_id, session = %msg.hdr.session_id, mode = ?mode, alert = ?session_alert, "check-in");
        }
        let Some((session_id, ci)) = dev.session.clone() else { return Reply::End };
        dev.record.checkins[ci].messages += 1;
        conformance(dev, &msg, &session_id);

        let mut abort = false;
        for cmd in &msg.body.commands {
            match cmd {
                Command::Status(st) => on_status(dev, &config, st, &session_id, now),
                Command::Results(r) => {
                    on_results(dev, r, &session_id);
                    // A chunk of a large object (OMA DM 1.2 large object handling): buffered,
                    // and said so with 213; the rest comes in the device's next message.
                    if r.items.iter().any(|i| i.more_data) {
                        out.status_for(&msg.hdr.msg_id, cmd, StatusCode::ChunkedItemAccepted.code());
                    }
                }
                Command::Alert(a) => {
                    match AlertCode::parse(&a.data) {
                        Some(AlertCode::SessionAbort) => abort = true,
                        Some(
                            AlertCode::ClientInitiatedMgmt | AlertCode::ServerInitiatedMgmt | AlertCode::NextMessage,
                        ) => {}
                        Some(code) => record_alert(dev, ci, code, a, &plans.msis),
                        None => dev.record.finding(format!(
                            "session {session_id} message {}: Alert {} has a non-numeric code {:?}",
                            msg.hdr.msg_id, a.cmd_id, a.data
                        )),
                    }
                    // Compat `alert_statuses` off: Fleet gives no Status to Alerts.
                    if compat.alert_statuses {
                        out.status_for(&msg.hdr.msg_id, cmd, StatusCode::Ok.code());
                    }
                }
                Command::Replace(c) | Command::Add(c) => {
                    // Package 1 DevInfo (Source LocURIs), as Microsoft's OMA DM protocol support page shows it.
                    for item in &c.items {
                        if let (Some(uri), Some(data)) = (item.source.as_ref().or(item.target.as_ref()), &item.data) {
                            dev.record.inventory.insert(uri.clone(), data.clone());
                        }
                    }
                    out.status_for(&msg.hdr.msg_id, cmd, StatusCode::Ok.code());
                }
                other => {
                    dev.record.finding(format!(
                        "session {session_id} message {}: the client sent a {} (CmdID {}), which a server does not execute",
                        msg.hdr.msg_id,
                        other.name(),
                        other.cmd_id()
                    ));
                    out.status_for(&msg.hdr.msg_id, cmd, StatusCode::OptionalFeatureNotSupported.code());
                }
            }
        }
        settle_apps(dev, &config);
        settle_profiles(dev, &config, &plans, now);
        settle_msis(dev, &config);
        if abort {
            end_session(dev);
            return Reply::End;
        }
        if session_alert.is_some() {
            dev.plan_pending = true;
            if compat.empty_reply_to_package1 && msg.body.final_ {
                // Compat: a server that does nothing with package 1 but answer an empty 200.
                dev.plan_pending = false;
                end_session(dev);
                return Reply::End;
            }
        }
        // A client message with Alert 1222 asks for the next message of *our* package (we sent
        // one without Final): it is not the client's package going on, and answering it with
        // our own 1222 would leave both sides waiting. Our package is always whole, so the
        // answer is the session's end.
        let asks_next = msg
            .body
            .commands
            .iter()
            .any(|c| matches!(c, Command::Alert(a) if AlertCode::parse(&a.data) == Some(AlertCode::NextMessage)));
        if !msg.body.final_ && compat.client_final && !asks_next {
            // The client's package goes on in its next message (OMA-DM §8):
            // answer what we have and ask for the rest with Alert 1222, without Final.
            let cmd_id = out.ids.next();
            out.commands.push(Command::Alert(Alert {
                cmd_id,
                data: AlertCode::NextMessage.code().to_string(),
                ..Default::default()
            }));
            dev.owed_hdr_status = Some(msg.hdr.msg_id.clone());
            let mut m = out.finish();
            m.body.final_ = false;
            return Reply::Message(Box::new(m));
        }
        if std::mem::take(&mut dev.plan_pending) {
            let mode = dev.record.checkins[ci].effective_mode;
            dev.commands_msg_id = msg.hdr.msg_id.clone();
            let planned = plan(dev, &config, &plans, mode, &mut out.ids);
            dev.record.checkins[ci].commands_sent += planned.len() as u32;
            out.commands.extend(planned);
        }
        let ours = out.commands.iter().any(|c| !matches!(c, Command::Status(_)));
        let end = match compat.session_end {
            // Only our SyncHdr status would go: end the session with an empty body.
            SessionEnd::Empty => out.commands.len() == 1,
            // Nothing of ours: the Statuses go alone (as Fleet does) and the session is over.
            SessionEnd::StatusOnly => !ours,
        };
        if end {
            tracing::debug!(device = %device_id, session = %session_id, style = ?compat.session_end, "session ends");
            unanswered(dev, &session_id);
            end_session(dev);
            if compat.session_end == SessionEnd::Empty {
                return Reply::End;
            }
            dev.ended_session = Some(session_id);
            return Reply::Message(Box::new(out.finish()));
        }
        dev.owed_hdr_status = Some(msg.hdr.msg_id.clone());
        tracing::debug!(
            device = %device_id,
            session = %session_id,
            msg = %msg.hdr.msg_id,
            commands = out.commands.len(),
            "management reply"
        );
        if !ours {
            dev.record.complete(ci);
        }
        Reply::Message(Box::new(out.finish()))
    }
}

fn new_device(id: &str, config: &Config, plans: &Plans) -> Device {
    let mut d =
        Device { record: DeviceRecord { device_id: id.to_string(), ..Default::default() }, ..Default::default() };
    let provider = format!("./Vendor/MSFT/DMClient/Provider/{}", enc(&config.provider_id));
    for (name, value) in &config.dmclient.poll {
        d.settings.insert(
            format!("{provider}/Poll/{name}"),
            Setting { value: value.text(), format: value.format(), op: Op::Add, state: SetState::Pending, attempts: 0 },
        );
    }
    if let Some(pfn) = &config.dmclient.push_pfn {
        d.settings.insert(
            format!("{provider}/Push/PFN"),
            Setting { value: pfn.clone(), format: "chr", op: Op::Add, state: SetState::Pending, attempts: 0 },
        );
    }
    for p in &plans.profiles {
        d.profiles.insert(p.name.clone(), ProfileTrack::default());
        d.record.profiles.insert(p.name.clone(), profiles::new_record(p));
    }
    for m in &plans.msis {
        d.msis.insert(m.name.clone(), MsiTrack::default());
        d.record.msi.insert(m.name.clone(), msi::new_record(m));
    }
    for app in plans.apps.iter().filter(|a| !a.on_request) {
        assign(&mut d, app, config);
    }
    d
}

/// `Err((status, nonce))` answers the SyncHdr with 401/407 and a Chal. A Cred that does not
/// match gets a fresh nonce when `rotate` (a server that sends no Chal keeps the old one).
fn authenticate(
    config: &Config,
    dev: &mut Device,
    hdr: &SyncHdr,
    cert_cn: Option<&str>,
    rng: &mut ServerRng,
    rotate: bool,
) -> Result<AuthMethod, (u16, Vec<u8>)> {
    match config.management.auth {
        AuthMode::None => return Ok(AuthMethod::Unauthenticated),
        AuthMode::CertOrMd5 => {
            // Fleet's rule: trusted if the certificate CN contains the SyncHdr Source.
            if let Some(cn) = cert_cn
                && !hdr.source.is_empty()
                && cn.contains(hdr.source.as_str())
            {
                return Ok(AuthMethod::Certificate);
            }
        }
        AuthMode::Md5 => {}
    }
    let Some(creds) = dev.creds.as_mut() else {
        dev.record.finding(format!(
            "session {}: no trusted client certificate and no app-layer credentials for this DeviceID (not enrolled here)",
            hdr.session_id
        ));
        return Err((StatusCode::InvalidCredentials.code(), rng.bytes16()));
    };
    let Some(cred) = &hdr.cred else {
        return Err((StatusCode::MissingCredentials.code(), creds.nonce.clone()));
    };
    let md5_type = cred.meta.type_.as_deref().is_none_or(|t| t.trim() == "syncml:auth-md5");
    let digest = cred.data.trim();
    if md5_type && md5_digest(&creds.name, &creds.secret, &creds.nonce) == digest {
        return Ok(AuthMethod::Md5);
    }
    // The credentials of a rekey in flight: using them proves the device took them.
    if md5_type
        && let Some((n, s, _)) = &dev.rekey
        && md5_digest(n, s, &creds.nonce) == digest
    {
        creds.name = n.clone();
        creds.secret = s.clone();
        dev.rekey = None;
        dev.rekey_wanted = false;
        return Ok(AuthMethod::Md5);
    }
    if rotate {
        creds.nonce = rng.bytes16();
    }
    let nonce = creds.nonce.clone();
    dev.record.finding(format!("session {}: the Cred does not match the device's credentials", hdr.session_id));
    Err((StatusCode::InvalidCredentials.code(), nonce))
}

/// `b64(MD5(b64(MD5(name ":" secret)) ":" nonce))` (OMA DM 1.2 security, `syncml:auth-md5`).
pub fn md5_digest(name: &str, secret: &str, nonce: &[u8]) -> String {
    let inner = B64.encode(Md5::digest(format!("{name}:{secret}").as_bytes()));
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(b":");
    h.update(nonce);
    B64.encode(h.finalize())
}

/// 16 random bytes from the OS (the server does I/O; the core never calls this).
pub fn fresh_nonce() -> Vec<u8> {
    let mut b = vec![0u8; 16];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        b = uuid::Uuid::new_v4().as_bytes().to_vec();
    }
    b
}

fn start_session(
    dev: &mut Device,
    msg: &SyncMl,
    (mode, user_agent_origin): (Option<&str>, Option<&str>),
    alert: Option<u16>,
    auth: AuthMethod,
    now: DateTime<Utc>,
) {
    // Whatever was in flight in an earlier session and never got a status is sent again.
    for s in dev.settings.values_mut() {
        if s.state == SetState::InFlight {
            s.state = SetState::Pending;
        }
    }
    for (name, rec) in dev.record.apps.iter_mut() {
        if rec.state == AppState::Sent {
            rec.state = AppState::Pending;
            if let Some(t) = dev.apps.get_mut(name) {
                t.lost += 1;
            }
        }
    }
    for (name, t) in dev.profiles.iter_mut() {
        if let Some(rec) = dev.record.profiles.get_mut(name) {
            profiles::start_session(t, rec);
        }
    }
    for (name, t) in dev.msis.iter_mut() {
        if let Some(rec) = dev.record.msi.get_mut(name) {
            msi::start_session(t, rec);
        }
    }
    // A rekey whose statuses never came: send the same values again (both stay accepted).
    if dev.rekey.is_some() {
        dev.rekey_wanted = true;
    }
    // Reads and the unenroll Exec of an earlier session that never got their Status (the
    // session failed, or our answer was lost) were not carried out: queue them again, as a
    // real server's queue keeps what the device never acknowledged.
    for (id, sent) in &dev.sent {
        if dev.answered.contains(id) {
            continue;
        }
        match sent {
            Sent::Inventory { .. } => dev.inventory_done = false,
            Sent::Unenroll { .. } => dev.unenroll_sent = false,
            _ => {}
        }
    }
    dev.sent.clear();
    dev.chunk = None;
    dev.plan_pending = false;
    dev.answered.clear();
    dev.last_msg_id = None;
    dev.owed_hdr_status = None;
    let login_status = msg.body.commands.iter().find_map(|c| match c {
        Command::Alert(a) => a.items.iter().find_map(|item| {
            let t = item.meta.as_ref()?.type_.as_deref()?;
            (t.trim() == LOGIN_STATUS).then(|| item.data.clone().unwrap_or_default())
        }),
        _ => None,
    });
    let effective_mode = effective_mode(mode, login_status.as_deref());
    let ci = dev.record.check_in(CheckIn {
        at: now,
        session_id: msg.hdr.session_id.clone(),
        mode: mode.map(str::to_string),
        user_agent_origin: user_agent_origin.map(str::to_string),
        effective_mode,
        alert,
        login_status,
        alerts: Vec::new(),
        auth,
        messages: 0,
        commands_sent: 0,
        completed: false,
    });
    dev.session = Some((msg.hdr.session_id.clone(), ci));
}

/// Checks the client's message against the protocol rules a server can see (OMA DM 1.2
/// representation and protocol, MS-MDM) and records what breaks them as findings; the session goes on.
fn conformance(dev: &mut Device, msg: &SyncMl, session_id: &str) {
    let msg_id = msg.hdr.msg_id.trim();
    let at = format!("session {session_id} message {msg_id}");
    match msg_id.parse::<u64>() {
        Ok(n) => {
            if let Some(prev) = dev.last_msg_id
                && n != prev + 1
            {
                dev.record.finding(format!("{at}: MsgID {n} does not follow {prev}"));
            }
            dev.last_msg_id = Some(n);
        }
        Err(_) => dev.record.finding(format!("{at}: MsgID {msg_id:?} is not a number")),
    }
    if let Some(ours) = dev.owed_hdr_status.take() {
        let hdr_status = msg.body.commands.iter().find_map(|c| match c {
            Command::Status(s) if s.cmd == "SyncHdr" => Some(s),
            _ => None,
        });
        match hdr_status {
            None => dev.record.finding(format!("{at}: no Status for our SyncHdr (message {ours})")),
            Some(s) if s.msg_ref != ours => dev
                .record
                .finding(format!("{at}: the SyncHdr Status has MsgRef {:?}, our message was {ours}", s.msg_ref)),
            Some(_) => {}
        }
        if !matches!(msg.body.commands.first(), Some(Command::Status(s)) if s.cmd == "SyncHdr") {
            dev.record.finding(format!("{at}: the SyncHdr Status is not the first element of the body"));
        }
    }
    for cmd in &msg.body.commands {
        if let Command::Replace(c) = cmd {
            for item in &c.items {
                let uri = item.source.as_deref().or(item.target.as_deref()).unwrap_or_default();
                if uri.trim_start_matches("./").eq_ignore_ascii_case("DevInfo/DevId")
                    && item.data.as_deref().map(str::trim) != Some(msg.hdr.source.trim())
                {
                    dev.record.finding(format!(
                        "{at}: ./DevInfo/DevId {:?} differs from the SyncHdr Source {:?}",
                        item.data.as_deref().unwrap_or_default(),
                        msg.hdr.source
                    ));
                }
            }
        }
    }
}

/// At the end of a session: every command we sent should have had its Status (§1.3: one per
/// command, and one per child of an Atomic).
fn unanswered(dev: &mut Device, session_id: &str) {
    let mut missing: Vec<String> = dev
        .sent
        .iter()
        .filter(|(id, _)| !dev.answered.contains(*id))
        .map(|(id, sent)| format!("{id} ({})", sent.uri().unwrap_or("Atomic")))
        .collect();
    missing.sort();
    if !missing.is_empty() {
        dev.record.finding(format!("session {session_id}: no Status for {}", missing.join(", ")));
    }
}

/// Records a client alert (1224 client event, 1226 generic alert...) in the session's check-in;
/// the user-initiated unenrollment alert marks the device unenrolled.
fn record_alert(dev: &mut Device, ci: usize, code: AlertCode, a: &Alert, msis: &[MsiPlan]) {
    if a.items.is_empty() {
        dev.record.checkins[ci].alerts.push(AlertRecord { code: code.code(), type_: None, source: None, data: None });
    }
    for item in &a.items {
        let type_ = item.meta.as_ref().and_then(|m| m.type_.as_deref()).map(|t| t.trim().to_string());
        if type_.as_deref() == Some(LOGIN_STATUS) {
            continue;
        }
        if type_.as_deref() == Some(UNENROLL_ALERT) {
            dev.record.unenrolled = true;
        }
        if type_.as_deref() == Some(msi::INSTALL_ALERT) {
            let source = item.source.as_deref().unwrap_or_default();
            match msis.iter().find(|m| m.is_download_install(source)) {
                Some(m) => {
                    if let Some(rec) = dev.record.msi.get_mut(&m.name) {
                        msi::on_alert(rec, item.data.as_deref());
                    }
                }
                None => dev.record.finding(format!(
                    "an MSI install alert for {source:?}, which is no MSI this server installs (data {:?})",
                    item.data.as_deref().unwrap_or_default()
                )),
            }
        }
        dev.record.checkins[ci].alerts.push(AlertRecord {
            code: code.code(),
            type_,
            source: item.source.clone(),
            data: item.data.clone(),
        });
    }
}

fn end_session(dev: &mut Device) {
    if let Some((_, ci)) = dev.session.take() {
        dev.record.complete(ci);
    }
}

/// The mode to act on: the `mode` query parameter (Microsoft's Windows 8.1 blog post on MDM operation modes), else the
/// LoginStatus of a Windows 10 client (`user` = the enrolled user is there), else Maintenance
/// (a plain OMA-DM client that says neither).
pub fn effective_mode(mode: Option<&str>, login_status: Option<&str>) -> Mode {
    match mode.map(|m| m.trim().to_ascii_lowercase()).as_deref() {
        Some("machine") => return Mode::Machine,
        Some("maintenance") => return Mode::Maintenance,
        Some("apps") => return Mode::Apps,
        _ => {}
    }
    match login_status.map(str::trim) {
        Some("user") | None => Mode::Maintenance,
        Some(_) => Mode::Machine,
    }
}

fn on_status(dev: &mut Device, config: &Config, st: &Status, session_id: &str, now: DateTime<Utc>) {
    let code = StatusCode::parse(&st.data).map(StatusCode::code);
    if st.cmd == "SyncHdr" {
        if !code.is_some_and(|c| StatusCode::from_code(c).is_success()) {
            dev.record.finding(format!("session {session_id}: the device answered our SyncHdr with {:?}", st.data));
        }
        return;
    }
    if dev.sent.contains_key(&st.cmd_ref) {
        dev.answered.insert(st.cmd_ref.clone());
        if st.msg_ref != dev.commands_msg_id {
            dev.record.finding(format!(
                "session {session_id}: Status {} for CmdRef {} has MsgRef {:?}, but that command came in our message {}",
                st.cmd_id, st.cmd_ref, st.msg_ref, dev.commands_msg_id
            ));
        }
    }
    let Some(sent) = dev.sent.get(&st.cmd_ref).cloned() else {
        dev.record.finding(format!(
            "session {session_id}: Status {} refers to CmdRef {:?}, which we did not send in this session",
            st.cmd_id, st.cmd_ref
        ));
        return;
    };
    let Some(code) = code else {
        dev.record.finding(format!("session {session_id}: Status {} has a non-numeric code {:?}", st.cmd_id, st.data));
        return;
    };
    dev.record.result(CommandResult {
        at: now,
        session_id: session_id.to_string(),
        cmd_id: st.cmd_ref.clone(),
        cmd: st.cmd.clone(),
        loc_uri: st.target_refs.first().cloned().or_else(|| sent.uri().map(str::to_string)),
        status: code,
        data: None,
    });
    let ok = StatusCode::from_code(code).is_success();
    let max = config.management.max_attempts.max(1);
    match sent {
        Sent::Inventory { .. } | Sent::WnsUpdate { .. } => {}
        Sent::Setting { uri } => {
            let Some(s) = dev.settings.get_mut(&uri) else { return };
            if ok {
                s.state = SetState::Done;
                dev.record.settings.insert(uri, s.value.clone());
            } else if code == StatusCode::AlreadyExists.code() && s.op == Op::Add {
                // 418 on Add: the node exists; Replace it next time (Fleet does the same).
                s.op = Op::Replace;
                s.state = SetState::Pending;
            } else {
                s.attempts += 1;
                s.state = if s.attempts >= max { SetState::Failed } else { SetState::Pending };
            }
        }
        Sent::AppAtomic { app } => {
            if let Some(t) = dev.apps.get_mut(&app) {
                t.atomic_status = Some(code);
            }
        }
        Sent::AppChild { app, .. } => {
            if let Some(t) = dev.apps.get_mut(&app) {
                t.children.push((st.cmd.clone(), code, st.target_refs.first().cloned()));
            }
        }
        Sent::AppPoll { app, .. } => {
            if !ok && let Some(rec) = dev.record.apps.get_mut(&app) {
                rec.last_status = Some(format!("Get failed: {code}"));
            }
        }
        Sent::Unenroll { .. } => {
            if ok {
                dev.record.unenrolled = true;
            }
        }
        Sent::Profile { profile, cmd } => {
            if let Some(t) = dev.profiles.get_mut(&profile) {
                profiles::on_status(t, &cmd, code);
            }
        }
        Sent::Msi { msi: name, cmd } => {
            if let (Some(t), Some(rec)) = (dev.msis.get_mut(&name), dev.record.msi.get_mut(&name)) {
                msi::on_status(t, rec, &cmd, code);
            }
        }
        Sent::Rekey { name, .. } => {
            if let Some((n, s, confirmed)) = dev.rekey.as_mut() {
                if !ok {
                    dev.rekey = None;
                    dev.rekey_wanted = true;
                    return;
                }
                *confirmed |= if name { 1 } else { 2 };
                if *confirmed == 3
                    && let Some(c) = dev.creds.as_mut()
                {
                    c.name = n.clone();
                    c.secret = s.clone();
                    dev.rekey = None;
                }
            }
        }
    }
}

fn on_results(dev: &mut Device, r: &Results, session_id: &str) {
    let sent = dev.sent.get(&r.cmd_ref).cloned();
    for item in &r.items {
        let mut uri = item.source.clone().or_else(|| sent.as_ref().and_then(|s| s.uri().map(str::to_string)));
        let mut data = item.data.clone().unwrap_or_default();
        // Large objects (OMA DM 1.2 large object handling): gather MoreData chunks, record the whole value.
        if let Some((cmd_ref, first_uri, mut sofar)) = dev.chunk.take() {
            if cmd_ref == r.cmd_ref {
                sofar.push_str(&data);
                data = sofar;
                uri = uri.or(first_uri);
            } else {
                dev.record.finding(format!(
                    "session {session_id}: Results for CmdRef {cmd_ref} ended without its last chunk"
                ));
            }
        }
        if item.more_data {
            dev.chunk = Some((r.cmd_ref.clone(), uri, data));
            continue;
        }
        if let Some(uri) = &uri {
            dev.record.inventory.insert(uri.clone(), data.clone());
        }
        if let Some(res) =
            dev.record.results.iter_mut().rev().find(|x| x.cmd_id == r.cmd_ref && x.session_id == session_id)
        {
            res.data = Some(data.clone());
        }
        match &sent {
            Some(Sent::Profile { profile, cmd }) => {
                if let Some(t) = dev.profiles.get_mut(profile) {
                    profiles::on_result(t, cmd, &data);
                }
            }
            Some(Sent::Msi { msi: name, cmd }) => {
                if let Some(t) = dev.msis.get_mut(name) {
                    msi::on_result(t, cmd, &data);
                }
            }
            _ => {}
        }
        if let Some(Sent::AppPoll { app, .. }) = &sent
            && let Some(rec) = dev.record.apps.get_mut(app)
        {
            rec.last_status = Some(data.trim().to_string());
            // EnterpriseAppManagement Download/<ProductID>/Status: 5 INSTALLED, 6 FAILED,
            // 7 DOWNLOAD_FAILED; the rest are steps on the way.
            rec.state = match data.trim() {
                "5" => AppState::Installed,
                "6" => AppState::Failed("Status 6 (FAILED)".into()),
                "7" => AppState::Failed("Status 7 (DOWNLOAD_FAILED)".into()),
                _ => rec.state.clone(),
            };
        }
    }
    if sent.is_none() {
        dev.record.finding(format!(
            "session {session_id}: Results {} refers to CmdRef {:?}, which we did not send",
            r.cmd_id, r.cmd_ref
        ));
    }
}

/// Turns the statuses of each install Atomic into the app's next state.
fn settle_apps(dev: &mut Device, config: &Config) {
    let max = config.management.max_attempts.max(1);
    for (name, t) in dev.apps.iter_mut() {
        let Some(code) = t.atomic_status.take() else { continue };
        let children = std::mem::take(&mut t.children);
        let Some(rec) = dev.record.apps.get_mut(name) else { continue };
        if StatusCode::from_code(code).is_success() {
            rec.state = AppState::Installing;
            continue;
        }
        // Microsoft's EnterpriseAppManagement CSP page: a previous Download/<ProductID> node makes the Add fail with 418; resend the
        // Atomic with Replace.
        if t.op == Op::Add && children.iter().any(|(cmd, c, _)| cmd == "Add" && *c == StatusCode::AlreadyExists.code())
        {
            t.op = Op::Replace;
            rec.state = AppState::Pending;
            continue;
        }
        // A device that does not let the server create DownloadInstall (its DDF access type is
        // Exec only) refuses that item: leave it out next time.
        let refused = [StatusCode::CommandNotAllowed.code(), StatusCode::OptionalFeatureNotSupported.code()];
        if t.add_download_install
            && children.iter().any(|(cmd, c, target)| {
                cmd == "Add"
                    && refused.contains(c)
                    // Without a TargetRef the 405 is for the whole Add, and DownloadInstall is
                    // the only item a conforming device can refuse.
                    && target.as_deref().is_none_or(|u| u.ends_with("/DownloadInstall"))
            })
        {
            t.add_download_install = false;
            rec.state = AppState::Pending;
            continue;
        }
        let detail: Vec<String> = children.iter().map(|(cmd, c, _)| format!("{cmd} {c}")).collect();
        rec.state = if rec.attempts.saturating_sub(t.lost) >= max {
            AppState::Failed(format!("install Atomic failed: {code} ({})", detail.join(", ")))
        } else {
            AppState::Pending
        };
    }
}

/// Turns the Statuses and Results of each profile's commands into its next state.
fn settle_profiles(dev: &mut Device, config: &Config, plans: &Plans, now: DateTime<Utc>) {
    for p in &plans.profiles {
        if let (Some(t), Some(rec)) = (dev.profiles.get_mut(&p.name), dev.record.profiles.get_mut(&p.name)) {
            profiles::settle(t, rec, p, config.management.profile_retries, now);
        }
    }
}

/// Turns the Statuses and Results of each MSI's commands into its next state.
fn settle_msis(dev: &mut Device, config: &Config) {
    for (name, t) in dev.msis.iter_mut() {
        if let Some(rec) = dev.record.msi.get_mut(name) {
            msi::settle(t, rec, config.management.max_attempts);
        }
    }
}

/// The OS version the device reported: its enrollment's `OSVersion`, else `./DevDetail/SwV`
/// read back; `None` when it said neither.
fn os_version(dev: &Device) -> Option<String> {
    let enrolled = dev.record.enrollment.as_ref().and_then(|e| {
        e.context.iter().find(|(k, v)| k.eq_ignore_ascii_case("OSVersion") && !v.trim().is_empty()).map(|(_, v)| v)
    });
    enrolled.or_else(|| dev.record.inventory.get("./DevDetail/SwV")).map(|v| v.trim().to_string())
}

/// The commands for package 1's reply, by mode (Microsoft's Windows 8.1 blog post on MDM operation modes): Machine
/// gets device reads and unenroll only; Apps adds app installs; Maintenance gets everything.
fn plan(dev: &mut Device, config: &Config, plans: &Plans, mode: Mode, ids: &mut Ids) -> Vec<Command> {
    let apps = &plans.apps;
    let mut cmds = Vec::new();
    let config_ok = mode == Mode::Maintenance;
    let apps_ok = mode != Mode::Machine;

    if config.management.inventory_every_session || !dev.inventory_done {
        let mut all = true;
        for uri in &config.management.inventory {
            if is_user_scope(uri) && !config_ok {
                all = false;
                continue;
            }
            let id = ids.next();
            dev.sent.insert(id.clone(), Sent::Inventory { uri: uri.clone() });
            cmds.push(Command::Get(ItemCmd { cmd_id: id, items: vec![Item::target(uri)], ..Default::default() }));
        }
        dev.inventory_done = all;
    }

    // Microsoft's push notification support page: once the PFN is set, re-read the channel every session (a device read,
    // allowed in every mode).
    if let Some(pfn) = dev.settings.iter().find(|(u, s)| u.ends_with("/Push/PFN") && s.state == SetState::Done) {
        let push = pfn.0.trim_end_matches("/PFN").to_string();
        for leaf in ["ChannelURI", "Status"] {
            let uri = format!("{push}/{leaf}");
            let id = ids.next();
            dev.sent.insert(id.clone(), Sent::Inventory { uri: uri.clone() });
            cmds.push(Command::Get(ItemCmd { cmd_id: id, items: vec![Item::target(&uri)], ..Default::default() }));
        }
    }

    if config_ok && let Some(app) = dev.wns_update.take() {
        let uri = format!(
            "./cimv2/MDM_WNSConfiguration/MDM_WNSConfiguration.AppId=%22{}%22/Exec=UpdateConfiguration",
            enc(&app)
        );
        let id = ids.next();
        dev.sent.insert(id.clone(), Sent::WnsUpdate { uri: uri.clone() });
        cmds.push(Command::Exec(ItemCmd { cmd_id: id, items: vec![Item::target(&uri)], ..Default::default() }));
    }

    if config_ok {
        for (uri, s) in dev.settings.iter_mut().filter(|(_, s)| s.state == SetState::Pending) {
            let id = ids.next();
            dev.sent.insert(id.clone(), Sent::Setting { uri: uri.clone() });
            s.state = SetState::InFlight;
            let item = Item {
                target: Some(uri.clone()),
                meta: Some(Box::new(Meta::format(s.format))),
                data: Some(s.value.clone()),
                ..Default::default()
            };
            let c = ItemCmd { cmd_id: id, items: vec![item], ..Default::default() };
            cmds.push(if s.op == Op::Add { Command::Add(c) } else { Command::Replace(c) });
        }
    }

    if apps_ok {
        for app in apps {
            let (Some(t), Some(rec)) = (dev.apps.get(&app.name), dev.record.apps.get_mut(&app.name)) else { continue };
            let base = format!(
                "./Vendor/MSFT/EnterpriseAppManagement/{}/EnterpriseApps/Download/{}",
                enc(&config.management.enterprise_id),
                enc(&app.product_id)
            );
            match rec.state {
                AppState::Pending => {
                    rec.state = AppState::Sent;
                    rec.attempts += 1;
                    let atomic_id = ids.next();
                    let write_id = ids.next();
                    let exec_id = ids.next();
                    let chr = |uri: String, data: &str| Item {
                        target: Some(uri),
                        meta: Some(Box::new(Meta::format("chr"))),
                        data: Some(data.to_string()),
                        ..Default::default()
                    };
                    let mut items = vec![
                        chr(format!("{base}/Name"), &app.name),
                        chr(format!("{base}/URL"), &app.url),
                        chr(format!("{base}/Version"), &app.version),
                    ];
                    if t.op == Op::Add && t.add_download_install {
                        // As in the CSP page's example: the node with Data 1 and no Meta.
                        items.push(Item {
                            target: Some(format!("{base}/DownloadInstall")),
                            data: Some("1".into()),
                            ..Default::default()
                        });
                    }
                    let write = ItemCmd { cmd_id: write_id.clone(), items, ..Default::default() };
                    let exec_uri = format!("{base}/DownloadInstall");
                    let exec = ItemCmd {
                        cmd_id: exec_id.clone(),
                        items: vec![Item {
                            target: Some(exec_uri.clone()),
                            meta: Some(Box::new(Meta::format("int"))),
                            data: Some("0".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    dev.sent.insert(atomic_id.clone(), Sent::AppAtomic { app: app.name.clone() });
                    dev.sent.insert(write_id, Sent::AppChild { app: app.name.clone(), uri: format!("{base}/Name") });
                    dev.sent.insert(exec_id, Sent::AppChild { app: app.name.clone(), uri: exec_uri });
                    let write = if t.op == Op::Add { Command::Add(write) } else { Command::Replace(write) };
                    cmds.push(Command::Atomic(Container {
                        cmd_id: atomic_id,
                        commands: vec![write, Command::Exec(exec)],
                        ..Default::default()
                    }));
                }
                AppState::Installing if rec.polls >= config.management.max_status_polls => {
                    rec.state = AppState::Failed(format!("no INSTALLED status after {} polls", rec.polls));
                }
                AppState::Installing => {
                    rec.polls += 1;
                    let id = ids.next();
                    let uri = format!("{base}/Status");
                    dev.sent.insert(id.clone(), Sent::AppPoll { app: app.name.clone(), uri: uri.clone() });
                    cmds.push(Command::Get(ItemCmd {
                        cmd_id: id,
                        items: vec![Item::target(&uri)],
                        ..Default::default()
                    }));
                }
                _ => {}
            }
        }
    }

    // Profiles and MSI installs change the device: Maintenance sessions only, reads included
    // (a Policy Get or an MSI Status Get is no device inventory in Machine mode).
    if config_ok {
        let os = os_version(dev);
        for p in &plans.profiles {
            let (Some(t), Some(rec)) = (dev.profiles.get_mut(&p.name), dev.record.profiles.get_mut(&p.name)) else {
                continue;
            };
            let mut sent = Vec::new();
            cmds.extend(profiles::plan(t, rec, p, os.as_deref(), &mut || ids.next(), &mut sent));
            for (id, cmd) in sent {
                dev.sent.insert(id, Sent::Profile { profile: p.name.clone(), cmd });
            }
        }
        for m in &plans.msis {
            let Some(rec) = dev.record.msi.get_mut(&m.name) else { continue };
            let mut sent = Vec::new();
            let max_polls = config.management.max_status_polls;
            cmds.extend(msi::plan(rec, m, os.as_deref(), max_polls, &mut || ids.next(), &mut sent));
            for (id, cmd) in sent {
                dev.sent.insert(id, Sent::Msi { msi: m.name.clone(), cmd });
            }
        }
    }

    if config_ok && dev.rekey_wanted && dev.creds.is_some() {
        dev.rekey_wanted = false;
        // DMAcc account UID: the SHA-256 of the PROVIDER-ID (Learn DMAcc); the device maps any
        // UID to its one account.
        let account = hex::encode_upper(<sha2::Sha256 as sha2::Digest>::digest(config.provider_id.as_bytes()));
        let (name, secret) = match dev.rekey.take() {
            Some((n, s, _)) => (n, s),
            None => (dev.record.device_id.clone(), hex::encode(ids.rng().bytes16())),
        };
        for (leaf, value, is_name) in [("AAuthName", &name, true), ("AAuthSecret", &secret, false)] {
            let uri = format!("./SyncML/DMAcc/{account}/AppAuth/CLCRED/{leaf}");
            let id = ids.next();
            dev.sent.insert(id.clone(), Sent::Rekey { uri: uri.clone(), name: is_name });
            let item = Item {
                target: Some(uri),
                meta: Some(Box::new(Meta::format("chr"))),
                data: Some(value.clone()),
                ..Default::default()
            };
            cmds.push(Command::Replace(ItemCmd { cmd_id: id, items: vec![item], ..Default::default() }));
        }
        dev.rekey = Some((name, secret, 0));
    }

    let settled = dev.settings.values().all(|s| matches!(s.state, SetState::Done | SetState::Failed))
        && dev.record.apps.values().all(|a| matches!(a.state, AppState::Installed | AppState::Failed(_)))
        && dev.record.profiles.values().all(|p| {
            matches!(
                p.state,
                ProfileState::Verified
                    | ProfileState::Failed
                    | ProfileState::FailedVerification
                    | ProfileState::NotApplicable
            )
        })
        && dev
            .record
            .msi
            .values()
            .all(|m| matches!(m.state, MsiState::Installed | MsiState::Failed(_) | MsiState::NotApplicable));
    if config.management.unenroll && !dev.unenroll_sent && settled && !dev.record.unenrolled {
        dev.unenroll_sent = true;
        let uri = format!("./Vendor/MSFT/DMClient/Provider/{}/Unenroll", enc(&config.provider_id));
        let id = ids.next();
        dev.sent.insert(id.clone(), Sent::Unenroll { uri: uri.clone() });
        let item = Item {
            target: Some(uri),
            meta: Some(Box::new(Meta::format("chr"))),
            data: Some(config.provider_id.clone()),
            ..Default::default()
        };
        cmds.push(Command::Exec(ItemCmd { cmd_id: id, items: vec![item], ..Default::default() }));
    }
    cmds
}

fn is_user_scope(uri: &str) -> bool {
    uri.starts_with("./User/")
}

/// LocURI encoding of a segment: braces and spaces (URI escaping, as the CSP pages write them).
fn enc(segment: &str) -> String {
    segment.replace('{', "%7B").replace('}', "%7D").replace(' ', "%20")
}

/// The CmdIDs of one reply message, in the compat `cmd_ids` style.
enum Ids {
    /// A random UUID each (as Fleet numbers its commands and Statuses).
    Uuid(ServerRng),
    /// 1, 2, 3... within the message; holds the last one given (and the reply's generator).
    Numeric(u32, ServerRng),
}

impl Ids {
    fn next(&mut self) -> String {
        match self {
            Ids::Uuid(rng) => rng.uuid(),
            Ids::Numeric(n, _) => {
                *n += 1;
                n.to_string()
            }
        }
    }

    /// The reply's generator (for a secret it carries).
    fn rng(&mut self) -> &mut ServerRng {
        match self {
            Ids::Uuid(rng) | Ids::Numeric(_, rng) => rng,
        }
    }
}

/// The reply being built: header mirrored from the client's, commands in order.
struct Out {
    hdr: SyncHdr,
    peer_msg_id: String,
    commands: Vec<Command>,
    ids: Ids,
    /// Whether the message ends with `<Final/>` (compat `final`).
    final_: bool,
}

impl Out {
    fn new(client: &SyncHdr, compat: &Compat, rng: ServerRng) -> Self {
        let hdr = SyncHdr {
            session_id: client.session_id.clone(),
            // Mirror the client's MsgID, like Fleet and the MS-MDM example .
            msg_id: client.msg_id.clone(),
            target: client.source.clone(),
            source: client.target.clone(),
            ..SyncHdr::default()
        };
        let ids = match compat.cmd_ids {
            CmdIds::Uuid => Ids::Uuid(rng),
            CmdIds::Numeric => Ids::Numeric(0, rng),
        };
        Out { hdr, peer_msg_id: client.msg_id.clone(), commands: Vec::new(), ids, final_: compat.final_ }
    }

    fn hdr_status(&mut self, code: u16) -> Status {
        Status {
            cmd_id: self.ids.next(),
            msg_ref: self.peer_msg_id.clone(),
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            data: code.to_string(),
            ..Default::default()
        }
    }

    fn status_for(&mut self, msg_ref: &str, cmd: &Command, code: u16) {
        let cmd_id = self.ids.next();
        self.commands.push(Command::Status(Status {
            cmd_id,
            msg_ref: msg_ref.to_string(),
            cmd_ref: cmd.cmd_id().to_string(),
            cmd: cmd.name().to_string(),
            data: code.to_string(),
            ..Default::default()
        }));
    }

    fn finish(self) -> SyncMl {
        SyncMl { hdr: self.hdr, body: SyncBody { commands: self.commands, final_: self.final_ } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_digest_matches_the_fleet_formula() {
        // b64(MD5("name:secret")) = "..." then MD5 of that ":" nonce bytes.
        let inner = B64.encode(Md5::digest(b"dev:secret"));
        let mut h = Md5::new();
        h.update(format!("{inner}:").as_bytes());
        h.update([1u8, 2, 3]);
        assert_eq!(md5_digest("dev", "secret", &[1, 2, 3]), B64.encode(h.finalize()));
    }

    #[test]
    fn mode_comes_from_the_query_then_the_login_status() {
        assert_eq!(effective_mode(Some("Machine"), Some("user")), Mode::Machine);
        assert_eq!(effective_mode(Some("apps"), None), Mode::Apps);
        assert_eq!(effective_mode(None, Some("none")), Mode::Machine);
        assert_eq!(effective_mode(None, Some("others")), Mode::Machine);
        assert_eq!(effective_mode(None, Some("user")), Mode::Maintenance);
        assert_eq!(effective_mode(None, None), Mode::Maintenance);
    }

    fn msg(session: &str, msg_id: &str, body: &str) -> SyncMl {
        crate::syncml::decode(&format!(
            "<SyncML><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>{session}</SessionID>\
             <MsgID>{msg_id}</MsgID><Target><LocURI>https://s/</LocURI></Target><Source><LocURI>DEV1</LocURI></Source>\
             </SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"
        ))
        .unwrap()
    }

    fn send(m: &mut Mgmt, message: SyncMl) -> Vec<Command> {
        let inc = Incoming {
            msg: message,
            mode: Some("Maintenance"),
            cert_cn: None,
            user_agent_origin: None,
            now: Utc::now(),
        };
        match m.handle(inc) {
            Reply::Message(r) => r.body.commands.into_iter().filter(|c| !matches!(c, Command::Status(_))).collect(),
            Reply::End | Reply::HttpUnauthorized => Vec::new(),
        }
    }

    #[test]
    fn enrolling_again_reapplies_the_policies() {
        let config = Config::parse("[management]\nauth = 'none'\n[dmclient]\npush_pfn = 'P'\n", "t").unwrap();
        let mut m = Mgmt::new(Arc::new(config), Vec::new());
        let pkg1 = "<Alert><CmdID>1</CmdID><Data>1201</Data></Alert>";
        let cmds = send(&mut m, msg("1", "1", pkg1));
        assert_eq!(cmds.len(), 1);
        let ok = format!(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>{}</CmdRef><Cmd>Add</Cmd><Data>200</Data></Status>",
            cmds[0].cmd_id()
        );
        assert!(send(&mut m, msg("1", "2", &ok)).is_empty());
        // Settled: the next session only reads the push channel back.
        let names: Vec<_> = send(&mut m, msg("2", "1", pkg1)).iter().map(|c| c.name().to_string()).collect();
        assert_eq!(names, ["Get", "Get"]);
        let record = EnrollmentRecord {
            at: Utc::now(),
            user: "u".into(),
            enrollment_type: "Full".into(),
            cert_serial: "1".into(),
            cert_thumbprint: "T".into(),
            context: Vec::new(),
        };
        m.enrolled("DEV1", record, Creds { name: "n".into(), secret: "s".into(), nonce: vec![1] });
        let names: Vec<_> = send(&mut m, msg("3", "1", pkg1)).iter().map(|c| c.name().to_string()).collect();
        assert_eq!(names, ["Add"], "the PFN is set again after a new enrollment");
        assert_eq!(m.record("DEV1").unwrap().checkins.len(), 3, "history is kept");
    }

    #[test]
    fn compat_switches_shape_the_messages() {
        let text = "[management]\nauth = 'none'\n[dmclient]\npush_pfn = 'P'\n[compat]\npreset = 'fleet'\ncmd_ids = 'numeric'\n";
        let mut m = Mgmt::new(Arc::new(Config::parse(text, "t").unwrap()), Vec::new());
        let handle = |m: &mut Mgmt, message| {
            let inc = Incoming { msg: message, mode: None, cert_cn: None, user_agent_origin: None, now: Utc::now() };
            match m.handle(inc) {
                Reply::Message(r) => Some(*r),
                Reply::End | Reply::HttpUnauthorized => None,
            }
        };
        let pkg1 = "<Alert><CmdID>1</CmdID><Data>1201</Data></Alert>";
        let r = handle(&mut m, msg("1", "1", pkg1)).unwrap();
        assert!(!r.body.final_);
        let ids: Vec<_> = r.body.commands.iter().map(|c| c.cmd_id().to_string()).collect();
        assert_eq!(ids, ["1", "2"], "SyncHdr Status, no Status for the Alert, then the Add");
        let ok = format!(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>{}</CmdRef><Cmd>Add</Cmd><Data>200</Data></Status>",
            r.body.commands[1].cmd_id()
        );
        let end = handle(&mut m, msg("1", "2", &ok)).expect("a Status-only message ends the session");
        assert_eq!(end.body.commands.len(), 1);
        assert!(matches!(&end.body.commands[0], Command::Status(s) if s.cmd == "SyncHdr"));
        assert!(m.record("DEV1").unwrap().checkins[0].completed);
    }

    #[test]
    fn commands_whose_statuses_never_came_go_again_next_session() {
        let text = "[management]\nauth = 'none'\nunenroll = true\ninventory = ['./DevDetail/SwV']\n[dmclient]\npush_pfn = 'P'\n";
        let mut m = Mgmt::new(Arc::new(Config::parse(text, "t").unwrap()), Vec::new());
        let pkg1 = "<Alert><CmdID>1</CmdID><Data>1201</Data></Alert>";
        let names = |cmds: &[Command]| cmds.iter().map(|c| c.name().to_string()).collect::<Vec<_>>();
        assert_eq!(names(&send(&mut m, msg("1", "1", pkg1))), ["Get", "Add"]);
        // The device's answer to that message is lost (its session failed): nothing is done,
        // and the next session asks again.
        let again = send(&mut m, msg("2", "1", pkg1));
        assert_eq!(names(&again), ["Get", "Add"]);
        assert!(m.record("DEV1").unwrap().settings.is_empty());
        let ok = again
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "<Status><CmdID>{}</CmdID><MsgRef>1</MsgRef><CmdRef>{}</CmdRef><Cmd>{}</Cmd><Data>200</Data></Status>",
                    i + 1,
                    c.cmd_id(),
                    c.name()
                )
            })
            .collect::<String>();
        assert!(send(&mut m, msg("2", "2", &ok)).is_empty());
        // Settled: the unenroll Exec goes; lost too, it goes again.
        let exec = send(&mut m, msg("3", "1", pkg1));
        assert!(names(&exec).contains(&"Exec".to_string()), "{:?}", names(&exec));
        let exec = send(&mut m, msg("4", "1", pkg1));
        assert!(names(&exec).contains(&"Exec".to_string()), "{:?}", names(&exec));
        assert!(!m.record("DEV1").unwrap().unenrolled);
    }

    #[test]
    fn a_large_object_from_the_device_is_answered_213_per_chunk_and_recorded_whole() {
        let text = "[management]\nauth = 'none'\ninventory = ['./DevDetail/SwV']\n[dmclient]\npush_pfn = 'P'\n";
        let mut m = Mgmt::new(Arc::new(Config::parse(text, "t").unwrap()), Vec::new());
        let pkg1 = "<Alert><CmdID>1</CmdID><Data>1201</Data></Alert>";
        let cmds = send(&mut m, msg("1", "1", pkg1));
        let get = cmds.iter().find(|c| c.name() == "Get").unwrap().cmd_id().to_string();
        let chunk = |msg_id: &str, cmd_id: &str, data: &str, more: bool| {
            let more_data = if more { "<MoreData/>" } else { "" };
            let size = if cmd_id == "2" { "<Meta><Size xmlns=\"syncml:metinf\">9</Size></Meta>" } else { "" };
            let mut message = msg(
                "1",
                msg_id,
                &format!(
                    "<Results><CmdID>{cmd_id}</CmdID><MsgRef>1</MsgRef><CmdRef>{get}</CmdRef><Item>{size}\
                     <Source><LocURI>./DevDetail/SwV</LocURI></Source><Data>{data}</Data>{more_data}</Item></Results>"
                ),
            );
            message.body.final_ = !more;
            message
        };
        let answer = |m: &mut Mgmt, message: SyncMl| match m.handle(Incoming {
            msg: message,
            mode: Some("Maintenance"),
            cert_cn: None,
            user_agent_origin: None,
            now: Utc::now(),
        }) {
            Reply::Message(r) => r.body.commands,
            Reply::End | Reply::HttpUnauthorized => Vec::new(),
        };
        for (msg_id, cmd_id, data) in [("2", "2", "10.0"), ("3", "3", ".226")] {
            let cmds = answer(&mut m, chunk(msg_id, cmd_id, data, true));
            let st = cmds.iter().find_map(|c| match c {
                Command::Status(s) if s.cmd_ref == cmd_id => Some(s.clone()),
                _ => None,
            });
            let st = st.unwrap_or_else(|| panic!("no Status for chunk {cmd_id}: {cmds:?}"));
            assert_eq!((st.cmd.as_str(), st.data.as_str(), st.msg_ref.as_str()), ("Results", "213", msg_id));
            assert!(cmds.iter().any(|c| matches!(c, Command::Alert(a) if a.data == "1222")), "{cmds:?}");
        }
        answer(&mut m, chunk("4", "4", "31", false));
        let rec = m.record("DEV1").unwrap();
        assert_eq!(rec.inventory["./DevDetail/SwV"], "10.0.22631");
        assert!(!rec.findings.iter().any(|f| f.contains("chunk")), "{:?}", rec.findings);
    }

    #[test]
    fn lost_install_atomics_do_not_count_against_max_attempts() {
        let config = Config::parse("[management]\nauth = 'none'\nmax_attempts = 2\n", "t").unwrap();
        let app = AppPlan {
            name: "App".into(),
            product_id: "{B316008A-141D-4A79-810F-8B764C4CFDFB}".into(),
            version: "1.0".into(),
            url: "http://127.0.0.1/packages/App".into(),
            size: 1,
            sha256: String::new(),
            on_request: false,
        };
        let mut m = Mgmt::new(Arc::new(config), vec![app]);
        let pkg1 = "<Alert><CmdID>1</CmdID><Data>1201</Data></Alert>";
        // Two sessions whose answers were lost, then one where the Atomic fails for real.
        for session in ["1", "2"] {
            assert!(send(&mut m, msg(session, "1", pkg1)).iter().any(|c| c.name() == "Atomic"));
        }
        let cmds = send(&mut m, msg("3", "1", pkg1));
        let atomic = cmds.iter().find(|c| c.name() == "Atomic").unwrap().cmd_id().to_string();
        let failed = format!(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>{atomic}</CmdRef><Cmd>Atomic</Cmd><Data>500</Data></Status>"
        );
        send(&mut m, msg("3", "2", &failed));
        let rec = &m.record("DEV1").unwrap().apps["App"];
        assert_eq!((rec.attempts, &rec.state), (3, &AppState::Pending), "one real failure of two allowed");
    }

    #[test]
    fn alert_1222_asking_for_our_next_message_ends_the_session() {
        let config = Config::parse("[management]\nauth = 'none'\n[dmclient]\npush_pfn = 'P'\n", "t").unwrap();
        let mut m = Mgmt::new(Arc::new(config), Vec::new());
        let cmds = send(&mut m, msg("1", "1", "<Alert><CmdID>1</CmdID><Data>1201</Data></Alert>"));
        // Our answer went without Final (lost on the way): the device statuses it and asks for
        // the rest of our package, without Final itself.
        let body = format!(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>\
             <Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>{}</CmdRef><Cmd>Add</Cmd><Data>200</Data></Status>\
             <Alert><CmdID>3</CmdID><Data>1222</Data></Alert>",
            cmds[0].cmd_id()
        );
        let mut next = msg("1", "2", &body);
        next.body.final_ = false;
        let inc = Incoming { msg: next, mode: None, cert_cn: None, user_agent_origin: None, now: Utc::now() };
        let Reply::Message(r) = m.handle(inc) else { panic!("the Alert gets its Status") };
        assert!(r.body.final_);
        assert!(r.body.commands.iter().all(|c| matches!(c, Command::Status(_))), "no 1222 of ours");
        let record = m.record("DEV1").unwrap();
        assert!(record.checkins[0].completed);
        assert_eq!(record.settings.len(), 1);
    }

    #[test]
    fn a_profile_whose_statuses_never_came_goes_again_and_so_do_its_gets() {
        let text = "[management]\nauth = 'none'\n[[profiles]]\nname = 'P'\n[[profiles.settings]]\nloc_uri = './Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera'\ndata = 0\n";
        let config = Arc::new(Config::parse(text, "t").unwrap());
        let plans = Plans { profiles: profiles::build(&config).unwrap(), ..Plans::default() };
        let mut m = Mgmt::with_plans(config, plans);
        let pkg1 = "<Alert><CmdID>1</CmdID><Data>1201</Data></Alert>";
        let names = |cmds: &[Command]| cmds.iter().map(|c| c.name().to_string()).collect::<Vec<_>>();
        assert_eq!(names(&send(&mut m, msg("1", "1", pkg1))), ["Atomic"]);
        // Lost: the next session sends the Atomic again.
        let cmds = send(&mut m, msg("2", "1", pkg1));
        let Command::Atomic(a) = &cmds[0] else { panic!("{cmds:?}") };
        let ok = format!(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>{}</CmdRef><Cmd>Atomic</Cmd><Data>200</Data></Status>\
             <Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>{}</CmdRef><Cmd>Replace</Cmd><Data>200</Data></Status>",
            a.cmd_id,
            a.commands[0].cmd_id()
        );
        assert!(send(&mut m, msg("2", "2", &ok)).is_empty(), "delivered; verified in a later session, not now");
        let rec = m.record("DEV1").unwrap();
        assert_eq!((rec.profiles["P"].state, rec.profiles["P"].attempts), (ProfileState::Delivered, 2));
        assert_eq!(names(&send(&mut m, msg("3", "1", pkg1))), ["Get"]);
        // The Get's answer is lost too: read again next session, still delivered.
        assert_eq!(names(&send(&mut m, msg("4", "1", pkg1))), ["Get"]);
        assert_eq!(m.record("DEV1").unwrap().profiles["P"].state, ProfileState::Delivered);
    }

    #[test]
    fn locuri_segments_are_encoded() {
        assert_eq!(enc("{AB}"), "%7BAB%7D");
        assert_eq!(enc("MS DM Server"), "MS%20DM%20Server");
    }
}
