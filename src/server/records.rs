//! What the reference server remembers about each device, as plain data: enrollment, check-ins
//! (time, mode, trigger, login status), inventory, per-command results, app install outcomes.
//!
//! Owns the record types (serde, served as JSON at `GET /admin/devices`). It does not decide
//! anything: `mgmt.rs` and `enroll.rs` fill them in. Tests and the demo read them through
//! [`super::ServerHandle::devices`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

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
    /// Settings (LocURI) the device has confirmed, with the value.
    pub settings: BTreeMap<String, String>,
    /// Set when the device reported a user unenrollment (Alert 1226) or accepted our Unenroll.
    pub unenrolled: bool,
    /// Protocol problems seen from this device (the reference server is strict but answers).
    pub findings: Vec<String>,
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
}

/// One management session, as its package 1 announced it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckIn {
    pub at: DateTime<Utc>,
    pub session_id: String,
    /// The `mode` query parameter as sent (`Machine`, `Maintenance`, `Apps`), if any.
    pub mode: Option<String>,
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

/// The operation mode of a session (seed mdmagent-operation-modes.txt).
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

/// How a management message was trusted (PROTOCOL.md §1.9).
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
