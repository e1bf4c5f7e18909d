//! EnterpriseDesktopAppManagement (`./Device/Vendor/MSFT/EnterpriseDesktopAppManagement` and
//! `./User/...`): MSI installs as Microsoft's "EnterpriseDesktopAppManagement CSP" page
//! describes them, the way Fleet installs its agent and Intune its management extension.
//!
//! Owns the node table of both scopes, the parser of the `MsiInstallJob` a server sends in the
//! Exec of `MSI/<ProductID>/DownloadInstall`, the Status state machine of each product, the
//! mapping of failures to `LastError` HRESULTs, the installed product's values and the
//! completion alert. Does not own the HTTP GET of the package (the runner performs
//! [`Effect::Fetch`] in `runner/fetch.rs`, hashes the body and hands the [`FetchOutcome`] back
//! through `Registry::on_fetch`), the clock (steps run on timers: `Registry::next_deadline` /
//! `Registry::on_deadline` with `env.now`), nor the delivery of the alert (the runner keeps it
//! with the device and sends it in package 1 of the next session, see `Device::keep_alert`).
//!
//! # The flow
//!
//! `Add MSI/<ProductID>/DownloadInstall` (no data) creates the product node (418 when it is
//! there). `Exec` on the same LocURI, Data an `MsiInstallJob` (escaped, CDATA or raw XML; Meta
//! Format `xml` or `chr`), is answered 200 at once: the install runs on the device's timers,
//! across sessions. An Exec without a prior Add creates the node first, as Windows does (Fleet
//! relies on it). `<ProductID>` must be an MSI product code, a GUID in braces (`%7B...%7D` on
//! the wire); any other name is refused with 400.
//!
//! Status (Get) moves `10` Initialized → `20` Download In Progress (the device GETs the first
//! ContentURL, then the next one if it fails) → `40` Download Completed (the body's SHA-256
//! equals FileHash, compared case-insensitively) → `50` Enforcement In Progress (msiexec runs)
//! → `70` Enforcement Completed: `Version` (the job's Product Version), `Name`, `Publisher`,
//! `InstallPath` and `InstallDate` are then readable and `LastError` is 0. A failed download
//! waits in `25` Pending Download Retry, a failed install in `55` Pending Enforcement Retry,
//! `RetryCount` times `RetryInterval` minutes apart (one count for both, as the page's
//! "the number of times the download and installation operation will be retried" says); then
//! the product ends in `30` Download Failed or `60` Enforcement Failed, with `LastError` (the
//! HRESULT, a signed 32-bit decimal) and `LastErrorDesc` (`0xHHHHHHHH: what happened`).
//! `48` Pending User Session is never entered: mdmsim does not tie a `./User` install to a
//! logged-on user.
//!
//! A job that cannot be used (not XML, no ContentURL, no FileHash, a TimeOut, RetryCount or
//! RetryInterval that is not a whole number from 0 to 255, ...) is answered 400 (413 when it is
//! longer than `max_value_bytes`), and the product reads Status 60 with the HRESULT and the
//! problem in LastError / LastErrorDesc. An Exec for a product that is installed (Status 70)
//! is answered 200 and installs nothing again; one for a product whose install is under way is
//! answered 200 and does not restart it; one for a product that failed starts over with the
//! new job. `Delete MSI/<ProductID>` uninstalls: the node, its values and its timers go.
//! `MSI/UpgradeCode` lists no upgrade codes (mdmsim does not read MSI files).
//!
//! When an install ends (70, 30 or 60) the device raises the page's alert, a 1224 with one
//! item: Source `./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{GUID}/DownloadInstall`
//! (`./User/...` in user scope), Meta Type `Reversed-Domain-Name:com.microsoft.mdm.win32csp_install`,
//! Format `int`, Mark `informational`, Data `0` or the HRESULT; and it asks for a session
//! ([`Effect::RequestSession`]), as Windows starts one to report the result.
//!
//! # LastError values (HRESULT)
//!
//! | Failure | Status | HRESULT | Windows name |
//! |---|---|---|---|
//! | the job is empty, not XML, or its root is not `MsiInstallJob` | 60 | 0x8007000D | ERROR_INVALID_DATA |
//! | a part of the job is missing or has a bad value | 60 | 0x80070057 | E_INVALIDARG |
//! | HTTP status, refused, timeout, name not resolved, aborted | 25, 30 | EnterpriseAppManagement's table (`InstallFailure`) | HTTP_E_STATUS_*, WININET_E_* |
//! | the package's SHA-256 differs from FileHash | 25, 30 | 0x80091007 | CRYPT_E_HASH_VALUE |
//! | msiexec exits with code `n` (not 0, 1641, 3010) | 55, 60 | 0x80070000 + n | HRESULT_FROM_WIN32 (1603 → 0x80070643) |
//! | msiexec runs longer than the job's TimeOut | 55, 60 | 0x800705B4 | ERROR_TIMEOUT |
//!
//! # Device template settings (`[behaviour]`)
//!
//! | Key | Default | Meaning |
//! |---|---|---|
//! | `msi_queue_ms` | 10000 | time in 10 before the download starts |
//! | `msi_download_ms` | 120000 | least time in 20 (a slower real download takes longer) |
//! | `msi_downloaded_ms` | 10000 | time in 40 before msiexec starts |
//! | `msi_install_ms` | 180000 | how long msiexec runs (past the job's TimeOut: a timeout) |
//! | `msi_fetch_watchdog_ms` | 600000 | no download outcome by then (the runner restarted): download again |
//! | `"msi_exit_code:<ProductID>"` | 0 | msiexec's exit code (1603: a fatal error, 3010: success, reboot required) |
//! | `"msi_name:<ProductID>"` | the package's file name | `Name` once installed |
//! | `msi_publisher`, `"msi_publisher:<ProductID>"` | the ContentURL's host | `Publisher` once installed |
//!
//! `<ProductID>` in a key is compared without braces and case-insensitively. Absent Enforcement
//! values take those of the page's example: TimeOut 5, RetryCount 3, RetryInterval 5 (TimeOut 0:
//! the installer is not timed). InstallDate is `YYYYMMDD`, the form of Windows Installer's
//! InstallDate product property; InstallPath is `C:\Program Files\<Name>\`.
//!
//! # Bookkeeping
//!
//! The job (without its CommandLine, which may carry secrets such as Fleet's enroll secret) and
//! the timers of a product live under `@EnterpriseDesktopAppManagement/<Device|User>/<ProductID>/`
//! in the device's [`TreeState`], outside every CSP root, so no LocURI reaches them; they are
//! journalled like node values, so a rolled-back Atomic undoes an Exec completely, and they are
//! removed when the install ends.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::enterprise_app::InstallFailure;
use crate::enroll::xml;
use crate::syncml::{Item, Meta, StatusCode};
use crate::tree::{
    Csp, CspCx, Effect, Env, FetchOutcome, Format, NodeRef, NodeSpec, Ops, Profile, Scope, Settings, TreeState, WriteOp,
};

/// The registered name of this CSP (used in `Effect::Fetch` and `Registry::on_fetch`).
pub const CSP_NAME: &str = "EnterpriseDesktopAppManagement";
/// The alert code of the install report (the page's alert example).
pub const ALERT_CODE: u16 = 1224;
/// The Meta Type of the install report.
pub const ALERT_TYPE: &str = "Reversed-Domain-Name:com.microsoft.mdm.win32csp_install";
/// Most ContentURLs one job may list (the page's examples have two).
pub const MAX_CONTENT_URLS: usize = 16;

/// The CSP root below either scope.
const ROOT: &str = "Vendor/MSFT/EnterpriseDesktopAppManagement";
/// Prefix of the bookkeeping keys (see the module docs).
const META: &str = "@EnterpriseDesktopAppManagement";

const G: Ops = Ops::GET;

static PRODUCT: &[NodeSpec] = &[
    NodeSpec::leaf("Version", Format::Chr, G),
    NodeSpec::leaf("Name", Format::Chr, G),
    NodeSpec::leaf("Publisher", Format::Chr, G),
    NodeSpec::leaf("InstallPath", Format::Chr, G),
    NodeSpec::leaf("InstallDate", Format::Chr, G),
    // Add, Delete, Exec, Get: the page's access types (the DDF adds Replace; the page wins).
    NodeSpec::leaf("DownloadInstall", Format::Xml, Ops::GET.with(Ops::ADD).with(Ops::DELETE).with(Ops::EXEC)),
    NodeSpec::leaf("Status", Format::Int, G),
    NodeSpec::leaf("LastError", Format::Int, G).default("0"),
    NodeSpec::leaf("LastErrorDesc", Format::Chr, G).default(""),
];

static SCHEMA: NodeSpec = NodeSpec::interior(
    "EnterpriseDesktopAppManagement",
    G,
    &[NodeSpec::interior(
        "MSI",
        G,
        &[
            NodeSpec::interior("UpgradeCode", G, &[NodeSpec::leaf("<Guid>", Format::Chr, G).dynamic()]),
            NodeSpec::interior("<ProductID>", Ops::GET.with(Ops::ADD).with(Ops::DELETE), PRODUCT).dynamic(),
        ],
    )],
);

/// The values of `MSI/<ProductID>/Status`, in the page's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiStatus {
    /// 10: the job was accepted.
    Initialized,
    /// 20: the package is being downloaded.
    DownloadInProgress,
    /// 25: a download failed; it is tried again after RetryInterval.
    PendingDownloadRetry,
    /// 30: the download failed for good.
    DownloadFailed,
    /// 40: the package is downloaded and its hash checked.
    DownloadCompleted,
    /// 48: waiting for the user's session (never entered by mdmsim).
    PendingUserSession,
    /// 50: msiexec runs.
    EnforcementInProgress,
    /// 55: the install failed; it is tried again after RetryInterval.
    PendingEnforcementRetry,
    /// 60: the install failed for good, or the job was refused.
    EnforcementFailed,
    /// 70: installed.
    EnforcementCompleted,
}

impl MsiStatus {
    /// The integer the node holds.
    pub fn code(self) -> u8 {
        match self {
            Self::Initialized => 10,
            Self::DownloadInProgress => 20,
            Self::PendingDownloadRetry => 25,
            Self::DownloadFailed => 30,
            Self::DownloadCompleted => 40,
            Self::PendingUserSession => 48,
            Self::EnforcementInProgress => 50,
            Self::PendingEnforcementRetry => 55,
            Self::EnforcementFailed => 60,
            Self::EnforcementCompleted => 70,
        }
    }

    /// Parses the node value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "10" => Self::Initialized,
            "20" => Self::DownloadInProgress,
            "25" => Self::PendingDownloadRetry,
            "30" => Self::DownloadFailed,
            "40" => Self::DownloadCompleted,
            "48" => Self::PendingUserSession,
            "50" => Self::EnforcementInProgress,
            "55" => Self::PendingEnforcementRetry,
            "60" => Self::EnforcementFailed,
            "70" => Self::EnforcementCompleted,
            _ => return None,
        })
    }

    /// The page's name of the value (`Enforcement Completed`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Initialized => "Initialized",
            Self::DownloadInProgress => "Download In Progress",
            Self::PendingDownloadRetry => "Pending Download Retry",
            Self::DownloadFailed => "Download Failed",
            Self::DownloadCompleted => "Download Completed",
            Self::PendingUserSession => "Pending User Session",
            Self::EnforcementInProgress => "Enforcement In Progress",
            Self::PendingEnforcementRetry => "Pending Enforcement Retry",
            Self::EnforcementFailed => "Enforcement Failed",
            Self::EnforcementCompleted => "Enforcement Completed",
        }
    }

    /// True while an install is under way (an Exec does not restart it).
    pub fn in_progress(self) -> bool {
        !matches!(self, Self::DownloadFailed | Self::EnforcementFailed | Self::EnforcementCompleted)
    }
}

/// The `MsiInstallJob` of a DownloadInstall Exec, as the device keeps it (the page's
/// "DownloadInstall XSD Schema"; the CommandLine is checked but not kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsiInstallJob {
    /// The `id` attribute (the page: "the application identifier"); may be empty.
    pub id: String,
    /// `Product/@Version`.
    pub version: String,
    /// `Download/ContentURLList/ContentURL`, trimmed, in order; at least one, each http(s).
    pub urls: Vec<String>,
    /// `Validation/FileHash`, lower-case hex SHA-256.
    pub file_hash: String,
    /// `Enforcement/TimeOut`, minutes (0: not timed).
    pub timeout_minutes: u8,
    /// `Enforcement/RetryCount`.
    pub retry_count: u8,
    /// `Enforcement/RetryInterval`, minutes.
    pub retry_interval_minutes: u8,
    /// `Enforcement/DownloadFromAad` (the AAD user token is not simulated: the GET is plain).
    pub download_from_aad: bool,
}

/// Why the Data of a DownloadInstall Exec is not a usable `MsiInstallJob`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// No Data at all.
    #[error("the DownloadInstall Exec carries no MsiInstallJob (its Data is empty)")]
    Empty,
    /// Longer than the device stores in one node.
    #[error("the MsiInstallJob has {len} bytes, more than max_value_bytes = {max}")]
    TooLarge { len: usize, max: u64 },
    /// Not well-formed XML.
    #[error("the MsiInstallJob is not well-formed XML: {0}")]
    NotXml(String),
    /// Another document.
    #[error("the job's root element is <{0}>, not <MsiInstallJob>")]
    WrongRoot(String),
    /// A required part is absent or empty (its path below `MsiInstallJob`).
    #[error("the MsiInstallJob has no {0}")]
    Missing(&'static str),
    /// More ContentURLs than [`MAX_CONTENT_URLS`].
    #[error("the MsiInstallJob lists {0} ContentURL elements; at most {MAX_CONTENT_URLS} are accepted")]
    TooManyUrls(usize),
    /// A ContentURL the device cannot download from.
    #[error("ContentURL {0:?} is not an http or https URL")]
    BadUrl(String),
    /// A FileHash that is not a SHA-256.
    #[error("FileHash {0:?} is not a SHA-256 (64 hex digits)")]
    BadHash(String),
    /// A number of the Enforcement element outside the schema's unsignedByte.
    #[error("Enforcement/{field} {value:?} is not a whole number from 0 to 255")]
    BadNumber { field: &'static str, value: String },
}

impl JobError {
    /// The HRESULT written to LastError.
    pub fn hresult(&self) -> u32 {
        match self {
            Self::Empty | Self::NotXml(_) | Self::WrongRoot(_) => 0x8007_000D,
            _ => 0x8007_0057,
        }
    }

    /// The status the Exec is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } => StatusCode::RequestEntityTooLarge,
            _ => StatusCode::BadRequest,
        }
    }
}

/// Parses the Data of a DownloadInstall Exec. `max_bytes` bounds the text (the device's
/// `max_value_bytes`), so a server cannot make it parse megabytes.
pub fn parse_job(text: &str, max_bytes: u64) -> Result<MsiInstallJob, JobError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(JobError::Empty);
    }
    if text.len() as u64 > max_bytes {
        return Err(JobError::TooLarge { len: text.len(), max: max_bytes });
    }
    let root = xml::parse(text).map_err(|e| JobError::NotXml(e.to_string()))?;
    if !root.name.eq_ignore_ascii_case("MsiInstallJob") {
        return Err(JobError::WrongRoot(root.name));
    }
    let product = root.child("Product").ok_or(JobError::Missing("Product"))?;
    let list = product.path(&["Download", "ContentURLList"]);
    let urls: Vec<String> = list
        .into_iter()
        .flat_map(|l| l.children_named("ContentURL"))
        .map(|u| u.value().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(JobError::Missing("ContentURL (Product/Download/ContentURLList/ContentURL)"));
    }
    if urls.len() > MAX_CONTENT_URLS {
        return Err(JobError::TooManyUrls(urls.len()));
    }
    if let Some(bad) = urls.iter().find(|u| {
        let l = u.to_ascii_lowercase();
        !(l.starts_with("http://") || l.starts_with("https://"))
    }) {
        return Err(JobError::BadUrl(bad.clone()));
    }
    let hash = product
        .path(&["Validation", "FileHash"])
        .map(|h| h.value())
        .filter(|h| !h.is_empty())
        .ok_or(JobError::Missing("FileHash (Product/Validation/FileHash)"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(JobError::BadHash(hash.to_string()));
    }
    let enforcement = product.child("Enforcement");
    let number = |field: &'static str, default: u8| -> Result<u8, JobError> {
        match enforcement.and_then(|e| e.child_value(field)) {
            None => Ok(default),
            Some(v) => v.parse::<u8>().map_err(|_| JobError::BadNumber { field, value: v.to_string() }),
        }
    };
    Ok(MsiInstallJob {
        id: root.attr("id").unwrap_or_default().trim().to_string(),
        version: product.attr("Version").unwrap_or_default().trim().to_string(),
        urls,
        file_hash: hash.to_ascii_lowercase(),
        timeout_minutes: number("TimeOut", 5)?,
        retry_count: number("RetryCount", 3)?,
        retry_interval_minutes: number("RetryInterval", 5)?,
        download_from_aad: number("DownloadFromAad", 0)? != 0,
    })
}

/// Why a download or an install did not complete (table in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsiFailure {
    /// The GET failed: EnterpriseAppManagement's HRESULTs for HTTP and transport failures.
    Download(InstallFailure),
    /// The body's SHA-256 differs from the job's FileHash.
    HashMismatch { expected: String, got: String },
    /// msiexec exited with a failure code.
    Installer(u32),
    /// msiexec ran longer than the job's TimeOut (minutes).
    Timeout(u8),
}

impl MsiFailure {
    /// The HRESULT written to LastError and sent in the alert.
    pub fn hresult(&self) -> u32 {
        match self {
            Self::Download(f) => f.hresult(),
            Self::HashMismatch { .. } => 0x8009_1007,
            Self::Installer(code) => 0x8007_0000 | (code & 0xFFFF),
            Self::Timeout(_) => 0x8007_05B4,
        }
    }

    /// The LastErrorDesc: the HRESULT in hex, then what happened.
    pub fn describe(&self) -> String {
        let text = match self {
            Self::Download(f) => return f.describe(),
            Self::HashMismatch { expected, got } => {
                format!("the package's SHA-256 is {got}, the job's FileHash is {expected}")
            }
            Self::Installer(code) => format!("msiexec exited with {code}: {}", installer_error(*code)),
            Self::Timeout(minutes) => format!("msiexec was still running after the job's TimeOut of {minutes} minutes"),
        };
        format!("0x{:08X}: {text}", self.hresult())
    }

    /// True for failures of the download step (retried in 25, final in 30).
    pub fn in_download(&self) -> bool {
        matches!(self, Self::Download(_) | Self::HashMismatch { .. })
    }
}

/// Windows Installer's meaning of the exit codes servers meet most (msiexec's documented codes).
fn installer_error(code: u32) -> &'static str {
    match code {
        1602 => "the user cancelled the installation",
        1603 => "a fatal error occurred during installation",
        1618 => "another installation is already in progress",
        1619 => "the installation package could not be opened",
        1620 => "the installation package is not valid",
        1625 => "the installation is forbidden by system policy",
        1638 => "another version of this product is already installed",
        _ => "the installation failed",
    }
}

/// msiexec exit codes that mean installed: 0, 1641 (reboot initiated), 3010 (reboot required).
fn installer_succeeded(code: u32) -> bool {
    matches!(code, 0 | 1641 | 3010)
}

/// True for an MSI product code: a GUID in braces, hex digits in any case.
pub fn is_product_code(s: &str) -> bool {
    s.strip_prefix('{').and_then(|r| r.strip_suffix('}')).is_some_and(super::is_hyphenated_guid)
}

/// The settings that shape the state machine (documented in the module docs).
struct Timing {
    queue: Duration,
    download: Duration,
    downloaded: Duration,
    install: Duration,
    watchdog: Duration,
}

impl Timing {
    fn of(s: &Settings) -> Self {
        // Capped at 100 years so that `now + duration` cannot overflow whatever a template says.
        const MAX_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
        let ms = |k: &str, d: u64| Duration::milliseconds(s.u64_or(k, d).min(MAX_MS) as i64);
        Timing {
            queue: ms("msi_queue_ms", 10_000),
            download: ms("msi_download_ms", 120_000),
            downloaded: ms("msi_downloaded_ms", 10_000),
            install: ms("msi_install_ms", 180_000),
            watchdog: ms("msi_fetch_watchdog_ms", 600_000).max(Duration::seconds(1)),
        }
    }
}

/// A per-product setting `<prefix>:<ProductID>`, the product code compared without braces and
/// case-insensitively.
fn product_setting<'s>(s: &'s Settings, prefix: &str, product: &str) -> Option<&'s str> {
    let bare = |id: &str| id.trim().trim_start_matches('{').trim_end_matches('}').to_ascii_lowercase();
    let want = bare(product);
    s.0.iter().find_map(|(k, v)| {
        let (p, id) = k.split_once(':')?;
        (p == prefix && bare(id) == want).then_some(v.as_str())
    })
}

/// The scope a CSP view works in, from its base key.
fn scope_of(cx: &CspCx<'_>) -> Scope {
    if cx.base.starts_with("User/") { Scope::User } else { Scope::Device }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Device => "Device",
        Scope::User => "User",
    }
}

/// One product of one scope.
#[derive(Debug, Clone)]
struct Product {
    scope: Scope,
    id: String,
}

impl Product {
    fn of(cx: &CspCx<'_>, id: &str) -> Self {
        Product { scope: scope_of(cx), id: id.to_string() }
    }

    // The paths are joined piece by piece rather than formatted: an Exec builds a dozen of them.

    /// Path of the product node relative to the CSP root.
    fn node(&self) -> String {
        ["MSI/", self.id.as_str()].concat()
    }

    fn leaf(&self, name: &str) -> String {
        ["MSI/", self.id.as_str(), "/", name].concat()
    }

    /// The bookkeeping folder of this product.
    fn meta_dir(&self) -> String {
        [META, "/", scope_name(self.scope), "/", self.id.as_str()].concat()
    }

    fn meta(&self, what: &str) -> String {
        [META, "/", scope_name(self.scope), "/", self.id.as_str(), "/", what].concat()
    }

    fn status(&self, cx: &CspCx<'_>) -> Option<MsiStatus> {
        cx.value(&self.leaf("Status")).and_then(MsiStatus::parse)
    }

    fn set_status(&self, cx: &mut CspCx<'_>, s: MsiStatus) {
        cx.set(&self.leaf("Status"), s.code().to_string());
    }

    fn time(&self, cx: &CspCx<'_>, what: &str) -> Option<DateTime<Utc>> {
        let v = cx.state.value(&self.meta(what))?;
        DateTime::parse_from_rfc3339(v).ok().map(|t| t.with_timezone(&Utc))
    }

    fn set_time(&self, cx: &mut CspCx<'_>, what: &str, t: DateTime<Utc>) {
        cx.state.set_value(&self.meta(what), t.to_rfc3339_opts(SecondsFormat::Millis, true));
    }

    fn number(&self, cx: &CspCx<'_>, what: &str) -> usize {
        cx.state.value(&self.meta(what)).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    fn clear(&self, cx: &mut CspCx<'_>, what: &str) {
        let k = self.meta(what);
        if cx.state.entry(&k).is_some() {
            cx.state.remove_subtree(&k);
        }
    }

    fn forget(&self, cx: &mut CspCx<'_>) {
        let k = self.meta_dir();
        cx.state.remove_subtree(&k);
    }

    fn job(&self, cx: &CspCx<'_>) -> Option<MsiInstallJob> {
        serde_json::from_str(cx.state.value(&self.meta("job"))?).ok()
    }

    /// True while a job runs on a timer (an Exec then leaves it alone).
    fn running(&self, cx: &CspCx<'_>) -> bool {
        self.status(cx).is_some_and(MsiStatus::in_progress) && self.time(cx, "due").is_some()
    }

    /// Makes sure the node and its DownloadInstall exist (an Exec without a prior Add), so that
    /// a later Add of DownloadInstall is 418 as after an Add.
    fn ensure_node(&self, cx: &mut CspCx<'_>) {
        cx.create(&self.node());
        let di = self.leaf("DownloadInstall");
        if !cx.exists(&di) {
            cx.set(&di, "");
        }
    }

    /// Starts a job: Status 10, LastError cleared, retry count reset.
    fn start(&self, cx: &mut CspCx<'_>, job: &MsiInstallJob, t: &Timing) {
        self.forget(cx);
        let text = serde_json::to_string(job).unwrap_or_default();
        cx.state.set_value(&self.meta("job"), text);
        cx.set(&self.leaf("LastError"), "0");
        cx.set(&self.leaf("LastErrorDesc"), "");
        self.set_status(cx, MsiStatus::Initialized);
        let due = cx.env.now + t.queue;
        self.set_time(cx, "due", due);
    }

    /// Records a refused job: Status 60 with the problem, no timer.
    fn refuse(&self, cx: &mut CspCx<'_>, e: &JobError) {
        self.forget(cx);
        self.set_status(cx, MsiStatus::EnforcementFailed);
        cx.set(&self.leaf("LastError"), (e.hresult() as i32).to_string());
        cx.set(&self.leaf("LastErrorDesc"), format!("0x{:08X}: {e}", e.hresult()));
    }

    /// Enters 20 and asks the runner for ContentURL number `index`.
    fn start_download(&self, cx: &mut CspCx<'_>, t: &Timing, index: usize) {
        let Some(url) = self.job(cx).and_then(|j| j.urls.get(index).cloned()) else {
            // Bookkeeping that does not parse (a record from another version): stop the timer.
            self.clear(cx, "due");
            return;
        };
        let now = cx.env.now;
        self.set_status(cx, MsiStatus::DownloadInProgress);
        cx.state.set_value(&self.meta("url"), index.to_string());
        self.clear(cx, "fetched");
        self.set_time(cx, "started", now);
        self.set_time(cx, "due", now + t.watchdog);
        let node = cx.key(&self.node());
        cx.emit(Effect::Fetch { csp: CSP_NAME, node, url });
    }

    /// The runner's answer to our download.
    fn on_fetch(&self, cx: &mut CspCx<'_>, t: &Timing, outcome: &FetchOutcome) {
        // A late answer to an attempt that is over (or a duplicate after the watchdog): ignored.
        if self.status(cx) != Some(MsiStatus::DownloadInProgress) || cx.state.value(&self.meta("fetched")).is_some() {
            return;
        }
        let Some(job) = self.job(cx) else { return };
        let now = cx.env.now;
        let failure = match outcome {
            FetchOutcome::Done { sha256, .. } if sha256.eq_ignore_ascii_case(&job.file_hash) => None,
            FetchOutcome::Done { sha256, .. } => {
                Some(MsiFailure::HashMismatch { expected: job.file_hash.clone(), got: sha256.to_ascii_lowercase() })
            }
            other => InstallFailure::from_fetch(other).map(MsiFailure::Download),
        };
        match failure {
            None => {
                cx.state.set_value(&self.meta("fetched"), "ok");
                let started = self.time(cx, "started").unwrap_or(now);
                self.set_time(cx, "due", (started + t.download).max(now));
            }
            // The page's ContentURLList: the next location is tried before the attempt counts
            // as failed.
            Some(_) if self.number(cx, "url") + 1 < job.urls.len() => {
                let next = self.number(cx, "url") + 1;
                self.start_download(cx, t, next);
            }
            Some(f) => self.attempt_failed(cx, now, f),
        }
    }

    /// One download or install attempt failed: a retry after RetryInterval while RetryCount
    /// allows, else the final failure and its alert.
    fn attempt_failed(&self, cx: &mut CspCx<'_>, at: DateTime<Utc>, f: MsiFailure) {
        let hr = f.hresult() as i32;
        cx.set(&self.leaf("LastError"), hr.to_string());
        cx.set(&self.leaf("LastErrorDesc"), f.describe());
        self.clear(cx, "fetched");
        let Some(job) = self.job(cx) else { return };
        let done = self.number(cx, "retries");
        if done < usize::from(job.retry_count) {
            cx.state.set_value(&self.meta("retries"), (done + 1).to_string());
            let wait =
                if f.in_download() { MsiStatus::PendingDownloadRetry } else { MsiStatus::PendingEnforcementRetry };
            self.set_status(cx, wait);
            self.set_time(cx, "due", at + Duration::minutes(i64::from(job.retry_interval_minutes)));
        } else {
            let end = if f.in_download() { MsiStatus::DownloadFailed } else { MsiStatus::EnforcementFailed };
            self.set_status(cx, end);
            self.forget(cx);
            self.report(cx, hr, end);
        }
    }

    /// Enters 50: msiexec starts at `at`; what it comes to is decided now (the template's exit
    /// code, the job's TimeOut) and takes effect when it ends.
    fn begin_enforcement(&self, cx: &mut CspCx<'_>, t: &Timing, at: DateTime<Utc>) {
        let Some(job) = self.job(cx) else {
            self.clear(cx, "due");
            return;
        };
        self.set_status(cx, MsiStatus::EnforcementInProgress);
        self.clear(cx, "fetched");
        let limit = Duration::minutes(i64::from(job.timeout_minutes));
        if job.timeout_minutes > 0 && t.install > limit {
            cx.state.set_value(&self.meta("outcome"), "timeout");
            self.set_time(cx, "due", at + limit);
        } else {
            let code = product_setting(&cx.env.settings, "msi_exit_code", &self.id)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(0);
            cx.state.set_value(&self.meta("outcome"), code.to_string());
            self.set_time(cx, "due", at + t.install);
        }
    }

    /// msiexec ended at `at`.
    fn end_enforcement(&self, cx: &mut CspCx<'_>, at: DateTime<Utc>) {
        let Some(job) = self.job(cx) else {
            self.clear(cx, "due");
            return;
        };
        match cx.state.value(&self.meta("outcome")).map(str::to_string).as_deref() {
            Some("timeout") => self.attempt_failed(cx, at, MsiFailure::Timeout(job.timeout_minutes)),
            Some(code) => match code.parse::<u32>() {
                Ok(c) if !installer_succeeded(c) => self.attempt_failed(cx, at, MsiFailure::Installer(c)),
                _ => self.install(cx, &job, at),
            },
            None => self.install(cx, &job, at),
        }
    }

    /// The product is installed (70): its values become readable.
    fn install(&self, cx: &mut CspCx<'_>, job: &MsiInstallJob, at: DateTime<Utc>) {
        let settings = cx.env.settings.clone();
        let url = job.urls.get(self.number(cx, "url")).or(job.urls.first()).cloned().unwrap_or_default();
        let name = product_setting(&settings, "msi_name", &self.id)
            .map(str::to_string)
            .unwrap_or_else(|| package_name(&url).unwrap_or_else(|| self.id.clone()));
        let publisher = product_setting(&settings, "msi_publisher", &self.id)
            .or(settings.str("msi_publisher"))
            .map(str::to_string)
            .unwrap_or_else(|| url_host(&url));
        cx.set(&self.leaf("Version"), job.version.clone());
        cx.set(&self.leaf("InstallPath"), format!("C:\\Program Files\\{name}\\"));
        cx.set(&self.leaf("Name"), name);
        cx.set(&self.leaf("Publisher"), publisher);
        cx.set(&self.leaf("InstallDate"), at.format("%Y%m%d").to_string());
        cx.set(&self.leaf("LastError"), "0");
        cx.set(&self.leaf("LastErrorDesc"), "");
        self.set_status(cx, MsiStatus::EnforcementCompleted);
        self.forget(cx);
        self.report(cx, 0, MsiStatus::EnforcementCompleted);
    }

    /// The page's completion alert, and a session to deliver it.
    fn report(&self, cx: &mut CspCx<'_>, code: i32, status: MsiStatus) {
        let source = format!("./{}/{ROOT}/MSI/{}/DownloadInstall", scope_name(self.scope), self.id);
        let item = Item {
            source: Some(source),
            meta: Some(Box::new(Meta {
                type_: Some(ALERT_TYPE.to_string()),
                format: Some("int".to_string()),
                mark: Some("informational".to_string()),
                ..Meta::default()
            })),
            data: Some(code.to_string()),
            ..Item::default()
        };
        cx.emit(Effect::Alert { code: ALERT_CODE, item });
        cx.emit(Effect::RequestSession {
            reason: format!(
                "EnterpriseDesktopAppManagement MSI {} ended in Status {} ({})",
                self.id,
                status.code(),
                status.name()
            ),
        });
    }

    /// Runs the timers of this product that are due at `env.now`; steps that follow each other
    /// without the network are taken in one call, each at its own instant (a device that was
    /// off catches up).
    fn on_deadline(&self, cx: &mut CspCx<'_>, t: &Timing) {
        let now = cx.env.now;
        // Bounded: each pass moves the status forward or stops.
        for _ in 0..8 {
            let Some(due) = self.time(cx, "due").filter(|d| *d <= now) else { return };
            match self.status(cx) {
                Some(MsiStatus::Initialized | MsiStatus::PendingDownloadRetry) => {
                    self.start_download(cx, t, 0);
                    return;
                }
                Some(MsiStatus::DownloadInProgress) => {
                    if cx.state.value(&self.meta("fetched")).is_some() {
                        self.clear(cx, "fetched");
                        self.set_status(cx, MsiStatus::DownloadCompleted);
                        self.set_time(cx, "due", due + t.downloaded);
                    } else {
                        // The runner never reported (it restarted): ask again.
                        let index = self.number(cx, "url");
                        self.start_download(cx, t, index);
                        return;
                    }
                }
                Some(MsiStatus::DownloadCompleted | MsiStatus::PendingEnforcementRetry) => {
                    self.begin_enforcement(cx, t, due)
                }
                Some(MsiStatus::EnforcementInProgress) => self.end_enforcement(cx, due),
                _ => {
                    // Nothing to do: stop the timer.
                    self.forget(cx);
                    return;
                }
            }
        }
    }
}

/// The package's file name without `.msi` (`fleetd-base` for `.../fleetd-base.msi?sig=...`).
fn package_name(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or(rest);
    let file = path.split_once('/').map(|(_, p)| p)?.rsplit('/').next()?;
    let stem = match file.len().checked_sub(4) {
        Some(n) if file.is_char_boundary(n) && file[n..].eq_ignore_ascii_case(".msi") => &file[..n],
        _ => file,
    };
    (!stem.is_empty()).then(|| stem.to_string())
}

fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.split(':').next().unwrap_or("").to_string()
}

/// The products of one scope that have a timer.
fn products(cx: &CspCx<'_>) -> Vec<Product> {
    let scope = scope_of(cx);
    let dir = format!("{META}/{}", scope_name(scope));
    let prefix = format!("{dir}/");
    let mut out: Vec<Product> = Vec::new();
    for k in cx.state.subtree_keys(&dir) {
        let Some((id, what)) = k.strip_prefix(&prefix).and_then(|r| r.split_once('/')) else { continue };
        if what == "due" && !out.iter().any(|p| p.id == id) {
            out.push(Product { scope, id: id.to_string() });
        }
    }
    out
}

/// One MSI product of a device, as a person reads it (`mdmsim sync` prints one line per
/// product after the session: the Status the server will read next).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsiView {
    pub scope: Scope,
    /// Decoded (`{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}`).
    pub product_id: String,
    /// `None` before the first Exec.
    pub status: Option<MsiStatus>,
    /// The installed Version (empty before the install).
    pub version: String,
    /// LastErrorDesc (empty when there is no error; it starts with the HRESULT in hex).
    pub last_error_desc: String,
}

impl std::fmt::Display for MsiView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", scope_name(self.scope), self.product_id)?;
        if !self.version.is_empty() {
            write!(f, " {}", self.version)?;
        }
        match self.status {
            Some(s) => write!(f, ": Status {} {}", s.code(), s.name())?,
            None => write!(f, ": no Status yet (waiting for Exec on DownloadInstall)")?,
        }
        if !self.last_error_desc.is_empty() {
            write!(f, ", LastError {}", self.last_error_desc)?;
        }
        Ok(())
    }
}

/// Every MSI product node of both scopes, device first, in key order.
pub fn installs(state: &TreeState) -> Vec<MsiView> {
    let mut out = Vec::new();
    for (scope, base) in [(Scope::Device, ROOT.to_string()), (Scope::User, format!("User/{ROOT}"))] {
        let msi = format!("{base}/MSI");
        for product in state.child_names(&msi) {
            let node = format!("{msi}/{product}");
            let value = |leaf: &str| state.value(&format!("{node}/{leaf}")).unwrap_or_default().trim().to_string();
            out.push(MsiView {
                scope,
                status: MsiStatus::parse(&value("Status")),
                version: value("Version"),
                last_error_desc: value("LastErrorDesc"),
                product_id: product,
            });
        }
    }
    out
}

/// `./Device/Vendor/MSFT/EnterpriseDesktopAppManagement` and its `./User` twin.
pub struct EnterpriseDesktopAppManagement;

impl Csp for EnterpriseDesktopAppManagement {
    fn name(&self) -> &'static str {
        CSP_NAME
    }

    fn root(&self) -> &'static str {
        ROOT
    }

    fn schema(&self) -> &'static NodeSpec {
        &SCHEMA
    }

    fn scopes(&self) -> &'static [Scope] {
        &[Scope::Device, Scope::User]
    }

    /// Windows 10 version 1511 and later: not on the Windows 8.1 profile.
    fn present(&self, env: &Env) -> bool {
        env.profile == Profile::Win10
    }

    fn validate(
        &self,
        _cx: &CspCx<'_>,
        op: WriteOp,
        node: NodeRef<'_>,
        _value: Option<&str>,
    ) -> Result<(), StatusCode> {
        let segs = node.segment_list();
        match (op, segs.as_slice()) {
            (WriteOp::Add, ["MSI", product] | ["MSI", product, _]) if !is_product_code(product) => {
                Err(StatusCode::BadRequest)
            }
            _ => Ok(()),
        }
    }

    fn after_write(&self, cx: &mut CspCx<'_>, op: WriteOp, node: NodeRef<'_>) -> Result<(), StatusCode> {
        let segs = node.segment_list();
        if let (WriteOp::Delete, ["MSI", product]) = (op, segs.as_slice()) {
            // The page's uninstall: the node and its values went with the Delete, the timers
            // (and a download's late answer) go now.
            Product::of(cx, product).forget(cx);
        }
        Ok(())
    }

    fn exec_creates(&self, node: NodeRef<'_>) -> bool {
        let segs = node.segment_list();
        matches!(segs.as_slice(), ["MSI", product, "DownloadInstall"] if is_product_code(product))
    }

    fn exec(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, data: Option<&str>) -> StatusCode {
        let segs = node.segment_list();
        let ["MSI", product, "DownloadInstall"] = segs.as_slice() else {
            return StatusCode::OptionalFeatureNotSupported;
        };
        if !is_product_code(product) {
            return StatusCode::BadRequest;
        }
        let p = Product::of(cx, product);
        let job = match parse_job(data.unwrap_or_default(), cx.env.settings.max_value_bytes()) {
            Ok(job) => job,
            Err(e) => return e.status(),
        };
        p.ensure_node(cx);
        // Installed: nothing is installed again (the product code is there). Under way: the
        // running install goes on.
        if p.status(cx) == Some(MsiStatus::EnforcementCompleted) || p.running(cx) {
            return StatusCode::Ok;
        }
        p.start(cx, &job, &Timing::of(&cx.env.settings));
        StatusCode::Ok
    }

    fn exec_refused(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, data: Option<&str>, _code: StatusCode) -> bool {
        let segs = node.segment_list();
        let ["MSI", product, "DownloadInstall"] = segs.as_slice() else { return false };
        if !is_product_code(product) {
            return false;
        }
        let p = Product::of(cx, product);
        // A bad job does not disturb an installed product or a running install.
        if p.status(cx) == Some(MsiStatus::EnforcementCompleted) || p.running(cx) {
            return false;
        }
        let Err(e) = parse_job(data.unwrap_or_default(), cx.env.settings.max_value_bytes()) else { return false };
        p.ensure_node(cx);
        p.refuse(cx, &e);
        true
    }

    fn next_deadline(&self, cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
        products(cx).iter().filter_map(|p| p.time(cx, "due")).min()
    }

    fn on_deadline(&self, cx: &mut CspCx<'_>) {
        let t = Timing::of(&cx.env.settings);
        for p in products(cx) {
            p.on_deadline(cx, &t);
        }
    }

    fn on_fetch(&self, cx: &mut CspCx<'_>, node: &str, outcome: &FetchOutcome) {
        let prefix = format!("{}/MSI/", cx.base);
        let Some(id) = node.strip_prefix(&prefix).filter(|id| is_product_code(id)) else { return };
        let p = Product::of(cx, id);
        p.on_fetch(cx, &Timing::of(&cx.env.settings), outcome);
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    const PID: &str = "{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}";
    const MSI: &str = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI";
    const NODE: &str =
        "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7BA427C0AA-E2D5-40DF-ACE8-0D726A6BE096%7D";
    const URL: &str = "https://cdn.example.com/fleetd-base.msi";

    fn sha(body: &[u8]) -> String {
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))
    }

    /// Fleet's job for its agent, with a hash and retry values of the test's choice.
    fn job(hash: &str, retries: u8) -> String {
        format!(
            r#"<MsiInstallJob id="{PID}"><Product Version="1.0.0.0"><Download><ContentURLList><ContentURL>{URL}</ContentURL></ContentURLList></Download><Validation><FileHash>{hash}</FileHash></Validation><Enforcement><CommandLine>/quiet FLEET_URL="https://fleet.example.com"</CommandLine><TimeOut>10</TimeOut><RetryCount>{retries}</RetryCount><RetryInterval>5</RetryInterval></Enforcement></Product></MsiInstallJob>"#
        )
    }

    fn esc(s: &str) -> String {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    }

    /// Fleet's Add and Exec, UUID CmdIDs and Meta after Data.
    fn add_exec(node: &str, job: &str) -> String {
        format!(
            r#"<Add><CmdID>8f1d6e0c-3b7a</CmdID><Item><Target><LocURI>{node}/DownloadInstall</LocURI></Target></Item></Add>
            <Exec><CmdID>c3a9b5f2-71d4</CmdID><Item><Target><LocURI>{node}/DownloadInstall</LocURI></Target><Data>{}</Data><Meta><Format xmlns="syncml:metinf">xml</Format><Type xmlns="syncml:metinf">text/plain</Type></Meta></Item></Exec>"#,
            esc(job)
        )
    }

    fn exec_only(node: &str, data: &str) -> String {
        format!(
            r#"<Exec><CmdID>e1</CmdID><Item><Target><LocURI>{node}/DownloadInstall</LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>{data}</Data></Item></Exec>"#
        )
    }

    /// One device driven as the runner drives it (`crate::csp::test_rig`).
    type Dev = crate::csp::test_rig::Rig;

    fn dev(settings: &[(&str, &str)]) -> Dev {
        crate::csp::test_rig::Rig::new(EnterpriseDesktopAppManagement, settings).effects_only_from_timers()
    }

    /// The Status node of the test's product.
    trait StatusNode {
        fn status(&mut self) -> Option<String>;
    }

    impl StatusNode for Dev {
        fn status(&mut self) -> Option<String> {
            self.get(&format!("{NODE}/Status"))
        }
    }

    use crate::csp::test_rig::codes;

    fn body(b: &[u8]) -> FetchOutcome {
        FetchOutcome::Done { size: b.len() as u64, sha256: sha(b) }
    }

    fn hr(v: u32) -> String {
        (v as i32).to_string()
    }

    const MSI_BYTES: &[u8] = b"\xd0\xcf\x11\xe0 a pretend msi";

    /// Fleet's Add + Exec of a job whose hash is that of [`MSI_BYTES`] (upper case, as Fleet
    /// sends it).
    fn started(settings: &[(&str, &str)], retries: u8) -> Dev {
        let mut d = dev(settings);
        let out = d.run(&add_exec(NODE, &job(&sha(MSI_BYTES).to_ascii_uppercase(), retries)));
        assert_eq!(codes(&out), [("Add".into(), 200), ("Exec".into(), 200)]);
        d
    }

    #[test]
    fn the_job_parser_reads_fleets_job_and_the_pages_example() {
        let j = parse_job(&job(&"AB".repeat(32), 1), 1 << 20).unwrap();
        assert_eq!(
            j,
            MsiInstallJob {
                id: PID.into(),
                version: "1.0.0.0".into(),
                urls: vec![URL.into()],
                file_hash: "ab".repeat(32),
                timeout_minutes: 10,
                retry_count: 1,
                retry_interval_minutes: 5,
                download_from_aad: false,
            }
        );
        // The page's example: two URLs, the first with white space around it, any element case,
        // no id check against the product code; and Enforcement defaults when it is absent.
        let page = r#"<MsiInstallJob id="{9BD4F7CD-880A-40B5-B74C-1BEECB51E596}"><Product Version="1.0.0"><Download><ContentURLList>
            <ContentURL>
                        http://bcl-w2k12r2-vm/testapps/msi/reboot/reboot.msi
            </ContentURL><contenturl>https://dp2.com/packages/myApp.msi</contenturl></ContentURLList></Download>
            <Validation><FileHash>134D8F1F7C3C036DC3DCDA9F97515C8C7951DB154B73365C9C22962BD23E3EB3</FileHash></Validation>
            <Enforcement><DownloadFromAad>1</DownloadFromAad></Enforcement></Product></MsiInstallJob>"#;
        let j = parse_job(page, 1 << 20).unwrap();
        assert_eq!(
            j.urls,
            ["http://bcl-w2k12r2-vm/testapps/msi/reboot/reboot.msi", "https://dp2.com/packages/myApp.msi"]
        );
        assert_eq!((j.timeout_minutes, j.retry_count, j.retry_interval_minutes), (5, 3, 5));
        assert!(j.download_from_aad);
        assert_eq!(j.file_hash, "134d8f1f7c3c036dc3dcda9f97515c8c7951db154b73365c9c22962bd23e3eb3");
    }

    #[test]
    fn the_job_parser_names_each_problem() {
        let good = job(&"ab".repeat(32), 1);
        let cases: Vec<(String, JobError)> = vec![
            ("  ".into(), JobError::Empty),
            ("MsiInstallJob".into(), JobError::NotXml(String::new())),
            (good.replace("</MsiInstallJob>", ""), JobError::NotXml(String::new())),
            ("<Job/>".into(), JobError::WrongRoot("Job".into())),
            ("<MsiInstallJob id=\"x\"/>".into(), JobError::Missing("Product")),
            (
                good.replace(&format!("<ContentURL>{URL}</ContentURL>"), "<ContentURL> </ContentURL>"),
                JobError::Missing("ContentURL (Product/Download/ContentURLList/ContentURL)"),
            ),
            (
                good.replace("https://cdn", "ftp://cdn"),
                JobError::BadUrl("ftp://cdn.example.com/fleetd-base.msi".into()),
            ),
            (
                good.replace(&format!("<FileHash>{}</FileHash>", "ab".repeat(32)), ""),
                JobError::Missing("FileHash (Product/Validation/FileHash)"),
            ),
            (good.replace(&"ab".repeat(32), "abc"), JobError::BadHash("abc".into())),
            (
                good.replace("<TimeOut>10</TimeOut>", "<TimeOut>ten</TimeOut>"),
                JobError::BadNumber { field: "TimeOut", value: "ten".into() },
            ),
            (
                good.replace("<RetryCount>1</RetryCount>", "<RetryCount>256</RetryCount>"),
                JobError::BadNumber { field: "RetryCount", value: "256".into() },
            ),
            (
                good.replace("<RetryInterval>5</RetryInterval>", "<RetryInterval>-1</RetryInterval>"),
                JobError::BadNumber { field: "RetryInterval", value: "-1".into() },
            ),
            (
                good.replace(
                    &format!("<ContentURL>{URL}</ContentURL>"),
                    &format!("<ContentURL>{URL}</ContentURL>").repeat(MAX_CONTENT_URLS + 1),
                ),
                JobError::TooManyUrls(MAX_CONTENT_URLS + 1),
            ),
        ];
        for (text, want) in cases {
            let got = parse_job(&text, 1 << 20).expect_err(&text);
            match (&got, &want) {
                (JobError::NotXml(m), JobError::NotXml(_)) => assert!(!m.is_empty()),
                _ => assert_eq!(got, want, "{text}"),
            }
            assert_eq!(got.status(), StatusCode::BadRequest);
        }
        let e = parse_job(&good, 100).unwrap_err();
        assert_eq!(e, JobError::TooLarge { len: good.len(), max: 100 });
        assert_eq!(e.status(), StatusCode::RequestEntityTooLarge);
        assert_eq!(JobError::Missing("Product").to_string(), "the MsiInstallJob has no Product");
        assert_eq!(JobError::WrongRoot("Job".into()).hresult(), 0x8007_000D);
        assert_eq!(JobError::Missing("Product").hresult(), 0x8007_0057);
    }

    #[test]
    fn product_codes_are_guids_in_braces() {
        assert!(is_product_code(PID));
        assert!(is_product_code("{a427c0aa-e2d5-40df-ace8-0d726a6be096}"));
        for bad in [
            "A427C0AA-E2D5-40DF-ACE8-0D726A6BE096",
            "{A427C0AA-E2D5-40DF-ACE8-0D726A6BE09}",
            "{x}",
            "UpgradeCode",
            "{A427C0AA/E2D5-40DF-ACE8-0D726A6BE096}",
        ] {
            assert!(!is_product_code(bad), "{bad}");
        }
        assert_eq!(package_name("https://h/a/fleetd-base.MSI?sig=1").as_deref(), Some("fleetd-base"));
        assert_eq!(package_name("https://h/").as_deref(), None);
        assert_eq!(url_host("https://user@cdn.example.com:8443/x.msi"), "cdn.example.com");
    }

    #[test]
    fn an_install_moves_10_20_40_50_70_and_reports_with_the_pages_alert() {
        let mut d = started(&[], 1);
        let t0 = d.env.now;
        assert_eq!(d.status().as_deref(), Some("10"));
        assert_eq!(d.get(&format!("{NODE}/LastError")).as_deref(), Some("0"));
        assert_eq!(d.get(&format!("{NODE}/Version")), None, "nothing installed yet");
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), Some(t0 + Duration::seconds(10)));
        d.advance(Duration::seconds(10));
        assert_eq!(d.status().as_deref(), Some("20"));
        assert_eq!(d.fetches, [(format!("Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{PID}"), URL.to_string())]);
        d.advance(Duration::seconds(3));
        d.answer(body(MSI_BYTES));
        // Download In Progress lasts at least msi_download_ms (2 minutes) from its start.
        d.advance(Duration::seconds(116));
        assert_eq!(d.status().as_deref(), Some("20"));
        d.advance(Duration::seconds(1));
        assert_eq!(d.status().as_deref(), Some("40"));
        d.advance(Duration::seconds(10));
        assert_eq!(d.status().as_deref(), Some("50"));
        assert!(d.alerts.is_empty());
        d.advance(Duration::minutes(3) - Duration::seconds(1));
        assert_eq!(d.status().as_deref(), Some("50"));
        d.advance(Duration::seconds(1));
        assert_eq!(d.status().as_deref(), Some("70"));
        // 10 s + 2 min + 10 s + 3 min after the Exec.
        assert_eq!(d.env.now, t0 + Duration::seconds(320));
        assert_eq!(d.get(&format!("{NODE}/Version")).as_deref(), Some("1.0.0.0"));
        assert_eq!(d.get(&format!("{NODE}/Name")).as_deref(), Some("fleetd-base"));
        assert_eq!(d.get(&format!("{NODE}/Publisher")).as_deref(), Some("cdn.example.com"));
        assert_eq!(d.get(&format!("{NODE}/InstallPath")).as_deref(), Some("C:\\Program Files\\fleetd-base\\"));
        assert_eq!(d.get(&format!("{NODE}/InstallDate")).as_deref(), Some("20260301"));
        assert_eq!(d.get(&format!("{NODE}/LastError")).as_deref(), Some("0"));
        assert_eq!(d.get(&format!("{NODE}/LastErrorDesc")).as_deref(), Some(""));
        assert_eq!(d.get(MSI).as_deref(), Some("UpgradeCode/%7BA427C0AA-E2D5-40DF-ACE8-0D726A6BE096%7D"));
        // The page's alert example, with this product.
        let want = Item {
            source: Some(format!("./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{PID}/DownloadInstall")),
            meta: Some(Box::new(Meta {
                type_: Some("Reversed-Domain-Name:com.microsoft.mdm.win32csp_install".into()),
                format: Some("int".into()),
                mark: Some("informational".into()),
                ..Meta::default()
            })),
            data: Some("0".into()),
            ..Item::default()
        };
        assert_eq!(d.alerts, [(1224, want)]);
        assert_eq!(d.requests, 1, "the device asks for a session to report");
        // Nothing is left to run, and the bookkeeping is gone.
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), None);
        assert!(d.state.iter().all(|(k, _)| !k.starts_with('@')), "{:?}", d.state.iter().collect::<Vec<_>>());
        assert_eq!(
            installs(&d.state).iter().map(ToString::to_string).collect::<Vec<_>>(),
            [format!("Device {PID} 1.0.0.0: Status 70 Enforcement Completed")]
        );
    }

    #[test]
    fn the_same_job_for_an_installed_product_installs_nothing_again() {
        let mut d = started(
            &[("msi_queue_ms", "0"), ("msi_download_ms", "0"), ("msi_downloaded_ms", "0"), ("msi_install_ms", "0")],
            1,
        );
        d.advance(Duration::zero());
        d.answer(body(MSI_BYTES));
        d.advance(Duration::zero());
        assert_eq!(d.status().as_deref(), Some("70"));
        assert_eq!(d.alerts.len(), 1);
        let out = d.run(&add_exec(NODE, &job(&sha(MSI_BYTES), 1)));
        assert_eq!(codes(&out), [("Add".into(), 418), ("Exec".into(), 200)]);
        d.advance(Duration::hours(1));
        assert_eq!(d.status().as_deref(), Some("70"));
        assert!(d.fetches.is_empty(), "no second download");
        assert_eq!(d.alerts.len(), 1, "no second report");
        // A bad job for it is refused and leaves the installed product alone.
        let out = d.run(&exec_only(NODE, "not a job"));
        assert_eq!(codes(&out), [("Exec".into(), 400)]);
        assert_eq!(d.status().as_deref(), Some("70"));
        assert_eq!(d.get(&format!("{NODE}/LastError")).as_deref(), Some("0"));
    }

    #[test]
    fn an_exec_without_add_creates_the_node_and_an_exec_under_way_does_not_restart() {
        let mut d = dev(&[]);
        let out = d.run(&exec_only(NODE, &esc(&job(&sha(MSI_BYTES), 0))));
        assert_eq!(codes(&out), [("Exec".into(), 200)]);
        assert_eq!(d.status().as_deref(), Some("10"));
        assert_eq!(d.get(&format!("{NODE}/DownloadInstall")).as_deref(), Some(""));
        // An Add now finds it there, as after an Add.
        let add = format!(
            r#"<Add><CmdID>2</CmdID><Item><Target><LocURI>{NODE}/DownloadInstall</LocURI></Target></Item></Add>"#
        );
        assert_eq!(codes(&d.run(&add)), [("Add".into(), 418)]);
        d.advance(Duration::seconds(10));
        assert_eq!(d.status().as_deref(), Some("20"));
        // The job again while it downloads: 200, the download goes on, no second fetch.
        let out = d.run(&exec_only(NODE, &esc(&job(&sha(MSI_BYTES), 0))));
        assert_eq!(codes(&out), [("Exec".into(), 200)]);
        assert_eq!(d.status().as_deref(), Some("20"));
        assert_eq!(d.fetches.len(), 1);
        // A name that is not a product code is refused and creates nothing.
        let bad = format!("{MSI}/notaguid");
        assert_eq!(codes(&d.run(&exec_only(&bad, &esc(&job(&sha(MSI_BYTES), 0))))), [("Exec".into(), 404)]);
        assert_eq!(codes(&d.run(&add.replace(NODE, &bad))), [("Add".into(), 400)]);
        assert_eq!(d.get_all(&bad).0, StatusCode::NotFound);
    }

    #[test]
    fn a_job_in_cdata_or_as_raw_xml_in_data_is_read_too() {
        let mut d = dev(&[]);
        let cdata = exec_only(NODE, &format!("<![CDATA[{}]]>", job(&sha(MSI_BYTES), 1)));
        assert_eq!(codes(&d.run(&cdata)), [("Exec".into(), 200)]);
        assert_eq!(d.status().as_deref(), Some("10"));
        let other = NODE.replace("A427C0AA", "D427C0AA");
        let raw = exec_only(&other, &job(&sha(MSI_BYTES), 1));
        assert_eq!(codes(&d.run(&raw)), [("Exec".into(), 200)]);
        assert_eq!(d.get(&format!("{other}/Status")).as_deref(), Some("10"));
        d.advance(Duration::seconds(10));
        assert_eq!(d.fetches.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>(), [URL, URL]);
    }

    #[test]
    fn a_malformed_job_is_400_and_reads_status_60_with_the_problem() {
        let mut d = dev(&[]);
        let no_url = job(&"ab".repeat(32), 1).replace(&format!("<ContentURL>{URL}</ContentURL>"), "");
        let out = d.run(&add_exec(NODE, &no_url));
        assert_eq!(codes(&out), [("Add".into(), 200), ("Exec".into(), 400)]);
        assert_eq!(d.status().as_deref(), Some("60"));
        assert_eq!(d.get(&format!("{NODE}/LastError")), Some(hr(0x8007_0057)));
        assert_eq!(
            d.get(&format!("{NODE}/LastErrorDesc")).as_deref(),
            Some("0x80070057: the MsiInstallJob has no ContentURL (Product/Download/ContentURLList/ContentURL)")
        );
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), None);
        assert!(d.alerts.is_empty(), "the Exec's status says it; no alert");
        // Without a prior Add too; not XML is ERROR_INVALID_DATA.
        let other = NODE.replace("A427C0AA", "B427C0AA");
        assert_eq!(codes(&d.run(&exec_only(&other, "&lt;MsiInstallJob"))), [("Exec".into(), 400)]);
        assert_eq!(d.get(&format!("{other}/Status")).as_deref(), Some("60"));
        assert_eq!(d.get(&format!("{other}/LastError")), Some(hr(0x8007_000D)));
        let desc = d.get(&format!("{other}/LastErrorDesc")).unwrap_or_default();
        assert!(desc.starts_with("0x8007000D: the MsiInstallJob is not well-formed XML"), "{desc}");
        // A good job after a refused one starts.
        assert_eq!(codes(&d.run(&exec_only(NODE, &esc(&job(&sha(MSI_BYTES), 1))))), [("Exec".into(), 200)]);
        assert_eq!(d.status().as_deref(), Some("10"));
        assert_eq!(d.get(&format!("{NODE}/LastError")).as_deref(), Some("0"));
        // Inside an Atomic a refused job rolls back like any failed command.
        let third = NODE.replace("A427C0AA", "C427C0AA");
        let atomic = format!("<Atomic><CmdID>a1</CmdID>{}</Atomic>", add_exec(&third, "<Nope/>"));
        let out = d.run(&atomic);
        assert_eq!(codes(&out), [("Atomic".into(), 507), ("Add".into(), 216), ("Exec".into(), 400)]);
        assert_eq!(d.get_all(&third).0, StatusCode::NotFound);
    }

    #[test]
    fn a_wrong_hash_retries_retrycount_times_then_ends_in_30() {
        let mut d = started(&[], 1);
        d.advance(Duration::seconds(10));
        let t_fail = d.env.now;
        d.answer(body(b"something else"));
        assert_eq!(d.status().as_deref(), Some("25"));
        assert_eq!(d.get(&format!("{NODE}/LastError")), Some(hr(0x8009_1007)));
        let desc = d.get(&format!("{NODE}/LastErrorDesc")).unwrap_or_default();
        assert!(desc.starts_with("0x80091007: the package's SHA-256 is "), "{desc}");
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), Some(t_fail + Duration::minutes(5)));
        d.advance(Duration::minutes(5));
        assert_eq!(d.status().as_deref(), Some("20"));
        assert_eq!(d.fetches.len(), 1, "the retry downloads again");
        d.answer(body(b"something else"));
        assert_eq!(d.status().as_deref(), Some("30"));
        assert_eq!(d.get(&format!("{NODE}/LastError")), Some(hr(0x8009_1007)));
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), None);
        assert_eq!(d.alerts.len(), 1);
        assert_eq!(d.alerts[0].1.data, Some(hr(0x8009_1007)));
        assert_eq!(d.get(&format!("{NODE}/Version")), None);
    }

    #[test]
    fn download_failures_use_enterprise_app_managements_hresults_and_try_every_url() {
        for (outcome, hresult) in [
            (FetchOutcome::HttpStatus(404), 0x8019_0194u32),
            (FetchOutcome::ConnectionRefused, 0x8007_2EFD),
            (FetchOutcome::Timeout, 0x8007_2EE2),
        ] {
            let mut d = started(&[], 0);
            d.advance(Duration::seconds(10));
            d.answer(outcome.clone());
            assert_eq!(d.status().as_deref(), Some("30"), "{outcome:?}");
            assert_eq!(d.get(&format!("{NODE}/LastError")), Some(hr(hresult)), "{outcome:?}");
            assert_eq!(d.alerts[0].1.data, Some(hr(hresult)));
        }
        // Two URLs: the second is tried when the first fails, in the same attempt.
        let mut d = dev(&[]);
        let two = job(&sha(MSI_BYTES), 0).replace(
            &format!("<ContentURL>{URL}</ContentURL>"),
            &format!("<ContentURL>{URL}</ContentURL><ContentURL>https://mirror.example.net/agent.msi</ContentURL>"),
        );
        d.run(&add_exec(NODE, &two));
        d.advance(Duration::seconds(10));
        d.answer(FetchOutcome::HttpStatus(503));
        assert_eq!(d.status().as_deref(), Some("20"));
        assert_eq!(d.fetches[0].1, "https://mirror.example.net/agent.msi");
        d.answer(body(MSI_BYTES));
        d.advance(Duration::hours(1));
        assert_eq!(d.status().as_deref(), Some("70"));
        assert_eq!(d.get(&format!("{NODE}/Publisher")).as_deref(), Some("mirror.example.net"));
        assert_eq!(d.get(&format!("{NODE}/Name")).as_deref(), Some("agent"));
    }

    #[test]
    fn installer_failures_and_timeouts_retry_in_55_then_end_in_60() {
        let mut d = started(&[(format!("msi_exit_code:{PID}").as_str(), "1603")], 1);
        d.advance(Duration::seconds(10));
        d.answer(body(MSI_BYTES));
        d.advance(Duration::minutes(2) + Duration::seconds(10));
        assert_eq!(d.status().as_deref(), Some("50"));
        d.advance(Duration::minutes(3));
        assert_eq!(d.status().as_deref(), Some("55"));
        assert_eq!(d.get(&format!("{NODE}/LastError")), Some(hr(0x8007_0643)));
        d.advance(Duration::minutes(5));
        assert_eq!(d.status().as_deref(), Some("50"), "the retry runs msiexec again, no new download");
        assert!(d.fetches.is_empty());
        d.advance(Duration::minutes(3));
        assert_eq!(d.status().as_deref(), Some("60"));
        let desc = d.get(&format!("{NODE}/LastErrorDesc")).unwrap_or_default();
        assert_eq!(desc, "0x80070643: msiexec exited with 1603: a fatal error occurred during installation");
        assert_eq!(d.alerts.len(), 1);
        assert_eq!(d.alerts[0].1.data, Some(hr(0x8007_0643)));
        // 3010 (reboot required) is a success; an install longer than TimeOut is a timeout.
        let mut d = started(&[(format!("msi_exit_code:{}", PID.to_ascii_lowercase()).as_str(), "3010")], 0);
        d.advance(Duration::seconds(10));
        d.answer(body(MSI_BYTES));
        d.advance(Duration::hours(1));
        assert_eq!(d.status().as_deref(), Some("70"));
        let mut d = started(&[("msi_install_ms", "900000")], 0);
        d.advance(Duration::seconds(10));
        d.answer(body(MSI_BYTES));
        d.advance(Duration::minutes(2) + Duration::seconds(10));
        d.advance(Duration::minutes(10));
        assert_eq!(d.status().as_deref(), Some("60"), "TimeOut 10 minutes < 15 minutes of msiexec");
        assert_eq!(d.get(&format!("{NODE}/LastError")), Some(hr(0x8007_05B4)));
    }

    #[test]
    fn delete_uninstalls_and_a_late_download_answer_changes_nothing() {
        let mut d = started(&[], 1);
        d.advance(Duration::seconds(10));
        let del = format!(r#"<Delete><CmdID>d1</CmdID><Item><Target><LocURI>{NODE}</LocURI></Target></Item></Delete>"#);
        assert_eq!(codes(&d.run(&del)), [("Delete".into(), 200)]);
        assert_eq!(d.get_all(NODE).0, StatusCode::NotFound);
        assert_eq!(d.get_all(&format!("{NODE}/Status")).0, StatusCode::NotFound);
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), None);
        d.answer(body(MSI_BYTES));
        assert!(d.state.is_empty(), "{:?}", d.state.iter().collect::<Vec<_>>());
        assert_eq!(codes(&d.run(&del)), [("Delete".into(), 404)]);
    }

    #[test]
    fn user_scope_installs_report_with_a_user_locuri() {
        let mut d = dev(&[("msi_install_ms", "0")]);
        let user = NODE.replace("./Device/", "./User/");
        d.run(&add_exec(&user, &job(&sha(MSI_BYTES), 0)));
        assert_eq!(d.get(&format!("{user}/Status")).as_deref(), Some("10"));
        assert_eq!(d.get_all(&format!("{NODE}/Status")).0, StatusCode::NotFound, "not the device's");
        d.advance(Duration::seconds(10));
        assert!(d.fetches[0].0.starts_with("User/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/"));
        d.answer(body(MSI_BYTES));
        d.advance(Duration::hours(1));
        assert_eq!(d.get(&format!("{user}/Status")).as_deref(), Some("70"));
        assert_eq!(
            d.alerts[0].1.source.as_deref(),
            Some(format!("./User/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{PID}/DownloadInstall").as_str())
        );
        assert_eq!(installs(&d.state)[0].scope, Scope::User);
    }

    #[test]
    fn a_device_that_was_off_catches_up_in_one_timer_call() {
        let mut d = started(&[], 0);
        d.advance(Duration::seconds(10));
        d.answer(body(MSI_BYTES));
        d.env.now += Duration::days(1);
        let e = d.reg.on_deadline(&mut d.state, &d.env);
        d.take(e);
        assert_eq!(d.status().as_deref(), Some("70"));
        // Installed when msiexec ended, not when the device woke up.
        assert_eq!(d.get(&format!("{NODE}/InstallDate")).as_deref(), Some("20260301"));
        // Absurd durations do not overflow the clock.
        let mut d = started(&[("msi_queue_ms", "18446744073709551615")], 0);
        d.advance(Duration::days(365));
        assert_eq!(d.status().as_deref(), Some("10"));
    }

    #[test]
    fn the_csp_is_not_on_windows_8_1_and_upgrade_codes_list_nothing() {
        let mut d = dev(&[]);
        assert_eq!(d.get(&format!("{MSI}/UpgradeCode")).as_deref(), Some(""));
        assert_eq!(d.get("./Vendor/MSFT/EnterpriseDesktopAppManagement/MSI").as_deref(), Some("UpgradeCode"));
        d.env.profile = Profile::Win81;
        assert_eq!(d.get_all(MSI).0, StatusCode::NotFound);
    }
}
