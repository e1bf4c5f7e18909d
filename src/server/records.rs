//! What the reference server remembers about each device, as plain data: enrollment, check-ins
//! (time, mode, trigger, login status), inventory, per-command results, app install outcomes,
//! configuration profiles (delivered, verified, failed, with the codes and values that decided
//! it), MSI installs, and the faults injected into its answers (`faults.rs`).
//!
//! Owns the record types (serde, served as JSON at `GET /admin/devices`). It does not decide
//! anything: `mgmt.rs` and `enroll.rs` fill them in. Tests and the demo read them through
//! [`super::ServerHandle::devices`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Everything recorded about one device, keyed by its DeviceID.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceRecord {
    pub device_id: String,
    pub enrollment: Option<EnrollmentRecord>,
    pub checkins: Vec<CheckIn>,
    /// LocURI -> last value read (DevInfo from package 1, Get results).
    pub inventory: BTreeMap<String, String>,
    pub results: Vec<CommandResult>,
    /// App name -> install outcome.
    pub apps: BTreeMap<String, AppRecord>,
    /// Profile name -> delivery and verification.
    pub profiles: BTreeMap<String, ProfileRecord>,
    /// MSI name -> install outcome (EnterpriseDesktopAppManagement).
    pub msi: BTreeMap<String, MsiRecord>,
    /// Settings (LocURI) the device has confirmed, with the value.
    pub settings: BTreeMap<String, String>,
    /// Set when the device reported a user unenrollment (Alert 1226) or accepted our Unenroll.
    pub unenrolled: bool,
    /// Protocol problems seen from this device (the reference server is strict but answers).
    pub findings: Vec<String>,
    /// WNS pushes sent to the device's channel.
    pub pushes: Vec<PushRecord>,
    /// Faults injected into the answers to this device (`mdmsim server --faults`), in order.
    pub faults: Vec<FaultRecord>,
    /// Counts over the device's whole history; `checkins`, `results` and `findings` keep only
    /// the latest ones ([`DeviceRecord::MAX_CHECKINS`] and so on), so that a server that runs
    /// for weeks under load keeps a bounded record per device.
    pub totals: Totals,
}

/// Counts over a device's whole history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Check-ins (sessions started), and those the server saw to their end.
    pub sessions: usize,
    pub completed_sessions: usize,
    pub sessions_by_mode: BTreeMap<String, usize>,
    pub sessions_by_alert: BTreeMap<String, usize>,
    pub sessions_by_login: BTreeMap<String, usize>,
    /// Statuses received for our commands, and how many were failures (>= 300).
    pub command_statuses: usize,
    pub command_failures: usize,
    pub findings: usize,
}

impl Totals {
    /// Adds another device's counts.
    pub fn add(&mut self, other: &Totals) {
        self.sessions += other.sessions;
        self.completed_sessions += other.completed_sessions;
        for (map, from) in [
            (&mut self.sessions_by_mode, &other.sessions_by_mode),
            (&mut self.sessions_by_alert, &other.sessions_by_alert),
            (&mut self.sessions_by_login, &other.sessions_by_login),
        ] {
            for (k, n) in from {
                *map.entry(k.clone()).or_default() += n;
            }
        }
        self.command_statuses += other.command_statuses;
        self.command_failures += other.command_failures;
        self.findings += other.findings;
    }
}

impl DeviceRecord {
    /// The most recent check-ins kept.
    pub const MAX_CHECKINS: usize = 256;
    /// The most recent command results kept.
    pub const MAX_RESULTS: usize = 2048;
    /// The most recent findings kept.
    pub const MAX_FINDINGS: usize = 1024;
    /// The most pushes kept per device (the oldest go first).
    pub const MAX_PUSHES: usize = 256;

    /// Records a new session and returns its index in `checkins`.
    pub fn check_in(&mut self, c: CheckIn) -> usize {
        let t = &mut self.totals;
        t.sessions += 1;
        *t.sessions_by_mode.entry(format!("{:?}", c.effective_mode)).or_default() += 1;
        let alert = c.alert.map_or_else(|| "none".to_string(), |a| a.to_string());
        *t.sessions_by_alert.entry(alert).or_default() += 1;
        let login = c.login_status.clone().unwrap_or_else(|| "-".to_string());
        *t.sessions_by_login.entry(login).or_default() += 1;
        if self.checkins.len() >= Self::MAX_CHECKINS {
            self.checkins.drain(..=self.checkins.len() - Self::MAX_CHECKINS);
        }
        self.checkins.push(c);
        self.checkins.len() - 1
    }

    /// Marks the session at `index` of `checkins` as seen to its end.
    pub fn complete(&mut self, index: usize) {
        if let Some(c) = self.checkins.get_mut(index)
            && !c.completed
        {
            c.completed = true;
            self.totals.completed_sessions += 1;
        }
    }

    /// Records the device's status for one of our commands.
    pub fn result(&mut self, r: CommandResult) {
        self.totals.command_statuses += 1;
        self.totals.command_failures += usize::from(r.status >= 300);
        if self.results.len() >= Self::MAX_RESULTS {
            self.results.drain(..=self.results.len() - Self::MAX_RESULTS);
        }
        self.results.push(r);
    }

    /// Records a protocol problem seen from the device.
    pub fn finding(&mut self, f: String) {
        self.totals.findings += 1;
        if self.findings.len() >= Self::MAX_FINDINGS {
            self.findings.drain(..=self.findings.len() - Self::MAX_FINDINGS);
        }
        self.findings.push(f);
    }
}

/// One injected fault: which message of which session got it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub at: DateTime<Utc>,
    pub session_id: String,
    pub msg_id: String,
    /// The fault name: `500`, `reset`, `slow`, `truncate`, `malformed` or `no-final`.
    pub kind: String,
}

/// One WNS raw push (Microsoft's push notification support page) and what the channel answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushRecord {
    pub at: DateTime<Utc>,
    pub channel_uri: String,
    /// HTTP status of the channel's answer (200 received; 404/410 dead channel; 406 throttled).
    pub http_status: u16,
    /// `X-WNS-Status` (`received`, `dropped`, `channelthrottled`).
    pub wns_status: Option<String>,
    /// `X-WNS-Msg-ID`, the service's id of the notification.
    #[serde(default)]
    pub msg_id: Option<String>,
    /// `Retry-After` of a 406 (throttled), in seconds.
    #[serde(default)]
    pub retry_after: Option<u64>,
}

/// An enrollment (MS-WSTEP RequestSecurityToken answered).
#[derive(Debug, Clone, Serialize)]
pub struct EnrollmentRecord {
    pub at: DateTime<Utc>,
    /// The user (UsernameToken) or `token` for token auth.
    pub user: String,
    /// `Full` or `Device`.
    pub enrollment_type: String,
    pub cert_serial: String,
    pub cert_thumbprint: String,
    /// The RST AdditionalContext items (DeviceName, OSEdition, OSVersion, MAC...), in order.
    pub context: Vec<(String, String)>,
}

/// One management session, as its package 1 announced it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckIn {
    pub at: DateTime<Utc>,
    pub session_id: String,
    /// The `mode` query parameter as sent (`Machine`, `Maintenance`, `Apps`), if any.
    pub mode: Option<String>,
    /// The `UserAgentOrigin` header (1 user, 2 schedule, 3 WNS, 4 login, 5 post-enrollment...).
    pub user_agent_origin: Option<String>,
    /// The mode the server acted on (from `mode`, else the LoginStatus).
    pub effective_mode: Mode,
    /// The session alert: 1201 client-initiated, 1200 server-initiated.
    pub alert: Option<u16>,
    /// `com.microsoft/MDM/LoginStatus`: user, others or none.
    pub login_status: Option<String>,
    /// Other alerts of the session (1224 client events, 1226 generic alerts).
    pub alerts: Vec<AlertRecord>,
    /// How the request was trusted.
    pub auth: AuthMethod,
    /// Messages the device sent in this session.
    pub messages: u32,
    /// Commands the server sent in this session.
    pub commands_sent: u32,
    /// True once the server ended the session with an empty body.
    pub completed: bool,
}

/// The operation mode of a session (Microsoft's Windows 8.1 blog post on MDM operation modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// SYSTEM context without the enrolled user: inventory reads, password reset, unenroll only.
    Machine,
    /// The enrolled user is logged on: everything.
    Maintenance,
    /// Push-started app installation session (Windows 8.1).
    Apps,
}

/// A client alert other than the session alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub code: u16,
    pub type_: Option<String>,
    pub source: Option<String>,
    pub data: Option<String>,
}

/// How a management message was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AuthMethod {
    /// TLS client certificate from our CA whose CN contains the DeviceID.
    Certificate,
    /// `syncml:auth-md5` Cred.
    Md5,
    /// Auth mode `none`.
    Unauthenticated,
}

/// The device's answer to one server command.
#[derive(Debug, Clone, Serialize)]
pub struct CommandResult {
    pub at: DateTime<Utc>,
    pub session_id: String,
    pub cmd_id: String,
    /// `Get`, `Add`, `Replace`, `Exec`, `Atomic`...
    pub cmd: String,
    pub loc_uri: Option<String>,
    pub status: u16,
    /// Results data (for a Get).
    pub data: Option<String>,
}

/// The state of one app install.
#[derive(Debug, Clone, Serialize)]
pub struct AppRecord {
    pub product_id: String,
    pub version: String,
    pub url: String,
    /// Package size in bytes and SHA-256 (hex) of what `/packages/<name>` serves.
    pub size: usize,
    pub sha256: String,
    pub state: AppState,
    /// Install Atomics sent.
    pub attempts: u32,
    /// `Download/<ProductID>/Status` reads sent.
    pub polls: u32,
    /// Last `Download/<ProductID>/Status` value read.
    pub last_status: Option<String>,
}

/// Where an app install stands, as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AppState {
    /// Not sent yet (or to resend).
    Pending,
    /// The install Atomic is on its way.
    Sent,
    /// The Atomic succeeded; polling `Status`.
    Installing,
    /// `Status` = 5.
    Installed,
    /// A failure: the reason.
    Failed(String),
}

/// Where a configuration profile stands on one device, as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProfileState {
    /// Not sent yet (or to send again).
    Pending,
    /// The Atomic is on its way.
    Sent,
    /// The Atomic and every command in it succeeded; the values are not read back yet.
    Delivered,
    /// A later session read every LocURI back with the value sent.
    Verified,
    /// The Atomic failed: `detail` has its code and each command's.
    Failed,
    /// Reading back found other values (or none) after every retry: `detail` names them.
    FailedVerification,
    /// The device reports an OS older than the profile's `min_os_version`.
    NotApplicable,
}

/// One configuration profile on one device.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileRecord {
    pub state: ProfileState,
    /// Why it failed, as `LocURI: status N` (delivery) or `LocURI: expected "a", found "b"`
    /// (verification), joined with `, `; also the last verification that was retried.
    pub detail: Option<String>,
    /// Install Atomics sent (a lost one is sent again and counted again).
    pub attempts: u32,
    /// Times the profile was sent again because verification found other values.
    pub retries: u32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    /// Each setting, with what the device answered last.
    pub settings: Vec<ProfileSettingRecord>,
}

/// One setting of a profile on one device.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileSettingRecord {
    pub loc_uri: String,
    /// The value sent.
    pub expected: String,
    /// The Status of its `<Replace>` (or `<Add>`) in the last Atomic.
    pub delivery_status: Option<u16>,
    /// The Status of the last verification `<Get>`.
    pub get_status: Option<u16>,
    /// The value that Get returned.
    pub found: Option<String>,
}

/// Where an MSI install stands on one device, as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MsiState {
    /// Not sent yet (or to send again).
    Pending,
    /// Add and Exec of `DownloadInstall` are on their way.
    Sent,
    /// The Exec was accepted; no final outcome yet (no install alert, `Status` not 70, 30 or 60).
    InProgress,
    /// The install alert said 0, or `Status` read 70 (Enforcement Completed).
    Installed,
    /// The reason: the install alert's code, `Status` 30 or 60 with `LastError`, a refused Exec,
    /// or no outcome after `max_status_polls` polls.
    Failed(String),
    /// The device reports an OS older than the MSI's `min_os_version`.
    NotApplicable,
}

/// One MSI install on one device.
#[derive(Debug, Clone, Serialize)]
pub struct MsiRecord {
    /// The ProductCode `{GUID}`.
    pub product_id: String,
    pub version: String,
    /// The `ContentURL` of the job, and the size and SHA-256 (hex) of what it serves.
    pub url: String,
    pub size: usize,
    pub sha256: String,
    pub state: MsiState,
    /// Add + Exec pairs sent.
    pub attempts: u32,
    /// The Statuses of the last Add and Exec.
    pub add_status: Option<u16>,
    pub exec_status: Option<u16>,
    /// The Data of the device's `com.microsoft.mdm.win32csp_install` alert, if one came.
    pub alert: Option<String>,
    /// `MSI/<ProductID>/Status` reads sent, and the last value (or `Get <code>`).
    pub polls: u32,
    pub last_status: Option<String>,
    /// The last `LastError` read.
    pub last_error: Option<String>,
}

/// Totals over all devices, for a report that must agree with the server's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub devices: usize,
    pub enrolled: usize,
    pub unenrolled: usize,
    /// Sessions (by mode acted on, session alert and LoginStatus), statuses received for our
    /// commands and findings, over every device (in the JSON, these fields stand beside the others).
    #[serde(flatten)]
    pub totals: Totals,
    pub apps_installed: usize,
    pub apps_failed: usize,
    /// App installs not settled yet (pending, sent or installing).
    pub apps_in_progress: usize,
    /// Profiles by state, over every device and profile.
    pub profiles_pending: usize,
    pub profiles_delivered: usize,
    pub profiles_verified: usize,
    pub profiles_failed: usize,
    pub profiles_failed_verification: usize,
    pub profiles_not_applicable: usize,
    /// MSI installs by outcome; in progress counts pending, sent and in progress.
    pub msi_installed: usize,
    pub msi_failed: usize,
    pub msi_in_progress: usize,
    pub msi_not_applicable: usize,
    /// Injected faults by name (`500`, `reset`, `slow`, `truncate`, `malformed`, `no-final`);
    /// a fault that never happened is absent.
    pub faults: BTreeMap<String, usize>,
}

impl Summary {
    /// Adds up the records.
    pub fn of(records: &[DeviceRecord]) -> Summary {
        let mut s = Summary { devices: records.len(), ..Summary::default() };
        for d in records {
            s.enrolled += usize::from(d.enrollment.is_some());
            s.unenrolled += usize::from(d.unenrolled);
            s.totals.add(&d.totals);
            for a in d.apps.values() {
                match a.state {
                    AppState::Installed => s.apps_installed += 1,
                    AppState::Failed(_) => s.apps_failed += 1,
                    _ => s.apps_in_progress += 1,
                }
            }
            for p in d.profiles.values() {
                *match p.state {
                    ProfileState::Pending | ProfileState::Sent => &mut s.profiles_pending,
                    ProfileState::Delivered => &mut s.profiles_delivered,
                    ProfileState::Verified => &mut s.profiles_verified,
                    ProfileState::Failed => &mut s.profiles_failed,
                    ProfileState::FailedVerification => &mut s.profiles_failed_verification,
                    ProfileState::NotApplicable => &mut s.profiles_not_applicable,
                } += 1;
            }
            for m in d.msi.values() {
                *match m.state {
                    MsiState::Installed => &mut s.msi_installed,
                    MsiState::Failed(_) => &mut s.msi_failed,
                    MsiState::NotApplicable => &mut s.msi_not_applicable,
                    MsiState::Pending | MsiState::Sent | MsiState::InProgress => &mut s.msi_in_progress,
                } += 1;
            }
            for f in &d.faults {
                *s.faults.entry(f.kind.clone()).or_default() += 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkin(mode: Mode, alert: Option<u16>, login: Option<&str>, completed: bool) -> CheckIn {
        CheckIn {
            at: DateTime::<Utc>::UNIX_EPOCH,
            session_id: "1".into(),
            mode: None,
            user_agent_origin: None,
            effective_mode: mode,
            alert,
            login_status: login.map(str::to_string),
            alerts: Vec::new(),
            auth: AuthMethod::Unauthenticated,
            messages: 1,
            commands_sent: 0,
            completed,
        }
    }

    #[test]
    fn summary_counts_sessions_apps_and_failures() {
        let app = |state| AppRecord {
            product_id: "{X}".into(),
            version: "1".into(),
            url: "u".into(),
            size: 1,
            sha256: String::new(),
            state,
            attempts: 1,
            polls: 0,
            last_status: None,
        };
        let result = |status| CommandResult {
            at: DateTime::<Utc>::UNIX_EPOCH,
            session_id: "1".into(),
            cmd_id: "c".into(),
            cmd: "Get".into(),
            loc_uri: None,
            status,
            data: None,
        };
        let mut a = DeviceRecord {
            device_id: "A".into(),
            apps: [("x".to_string(), app(AppState::Installed))].into(),
            ..Default::default()
        };
        for (mode, alert, login, completed) in
            [(Mode::Machine, Some(1201), Some("none"), true), (Mode::Maintenance, Some(1201), Some("user"), false)]
        {
            let i = a.check_in(checkin(mode, alert, login, false));
            if completed {
                a.complete(i);
            }
        }
        a.result(result(200));
        a.result(result(418));
        let mut b = DeviceRecord {
            device_id: "B".into(),
            apps: [("x".to_string(), app(AppState::Failed("6".into())))].into(),
            unenrolled: true,
            faults: ["500", "reset", "500"]
                .map(|kind| FaultRecord {
                    at: DateTime::<Utc>::UNIX_EPOCH,
                    session_id: "1".into(),
                    msg_id: "1".into(),
                    kind: kind.into(),
                })
                .to_vec(),
            ..Default::default()
        };
        let i = b.check_in(checkin(Mode::Maintenance, Some(1200), None, false));
        b.complete(i);
        b.complete(i);
        let profile = |state| ProfileRecord {
            state,
            detail: None,
            attempts: 1,
            retries: 0,
            delivered_at: None,
            verified_at: None,
            settings: Vec::new(),
        };
        let msi = |state| MsiRecord {
            product_id: "{X}".into(),
            version: "1".into(),
            url: "u".into(),
            size: 1,
            sha256: String::new(),
            state,
            attempts: 1,
            add_status: None,
            exec_status: None,
            alert: None,
            polls: 0,
            last_status: None,
            last_error: None,
        };
        a.profiles =
            [("p".to_string(), profile(ProfileState::Verified)), ("q".to_string(), profile(ProfileState::Sent))].into();
        a.msi = [("m".to_string(), msi(MsiState::InProgress))].into();
        b.profiles = [("p".to_string(), profile(ProfileState::FailedVerification))].into();
        b.msi = [("m".to_string(), msi(MsiState::Failed("Status 60".into())))].into();
        let s = Summary::of(&[a, b]);
        assert_eq!((s.profiles_verified, s.profiles_pending, s.profiles_failed_verification), (1, 1, 1));
        assert_eq!((s.msi_installed, s.msi_failed, s.msi_in_progress), (0, 1, 1));
        assert_eq!(s.faults, [("500".to_string(), 2), ("reset".to_string(), 1)].into());
        assert_eq!((s.devices, s.totals.sessions, s.totals.completed_sessions, s.unenrolled), (2, 3, 2, 1));
        assert_eq!(s.totals.sessions_by_mode["Maintenance"], 2);
        assert_eq!(s.totals.sessions_by_alert["1200"], 1);
        assert_eq!(s.totals.sessions_by_login["-"], 1);
        assert_eq!((s.apps_installed, s.apps_failed, s.apps_in_progress), (1, 1, 0));
        assert_eq!((s.totals.command_statuses, s.totals.command_failures), (2, 1));
    }

    #[test]
    fn a_long_history_keeps_the_latest_records_and_counts_them_all() {
        let mut d = DeviceRecord::default();
        for n in 0..DeviceRecord::MAX_CHECKINS + 44 {
            let i = d.check_in(checkin(Mode::Maintenance, Some(1201), None, false));
            d.complete(i);
            d.finding(format!("finding {n}"));
        }
        assert_eq!(d.checkins.len(), DeviceRecord::MAX_CHECKINS);
        assert_eq!((d.totals.sessions, d.totals.completed_sessions), (300, 300));
        assert_eq!(d.totals.findings, 300);
        assert_eq!(d.findings.last().map(String::as_str), Some("finding 299"));
        assert!(d.checkins.iter().all(|c| c.completed));
        let s = Summary::of(&[d]);
        assert_eq!((s.totals.sessions, s.totals.completed_sessions, s.totals.findings), (300, 300, 300));
    }
}
