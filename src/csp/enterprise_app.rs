//! EnterpriseAppManagement (`./Vendor/MSFT/EnterpriseAppManagement/<EnterpriseID>`): the
//! enterprise app enrollment of a Windows 10 Mobile device, its app inventory and the
//! download/install state machine (seed enterpriseappmanagement-csp.txt).
//!
//! Owns the node table, the Status state machine of `EnterpriseApps/Download/<ProductID>`, the
//! mapping of download outcomes to `LastError` HRESULTs and the inventory of installed apps. Does
//! not own the HTTP GET of a package (the runner performs [`Effect::Fetch`] in `runner/fetch.rs`
//! and hands the [`FetchOutcome`] back through `Registry::on_fetch`), nor the clock (steps run
//! on timers: `Registry::next_deadline` / `Registry::on_deadline` with `env.now`).
//!
//! # The state machine
//!
//! Exec on `Download/<ProductID>/DownloadInstall` answers 200 at once (the seed: "the server
//! must query the device later to determine the status") and starts:
//! `0 CONFIRM` (only with `entapp_require_confirmation`) → `1 QUEUED` → `2 DOWNLOADING` (emits
//! `Effect::Fetch`) → `3 DOWNLOADED` → `4 INSTALLING` → `5 INSTALLED`, or `7 DOWNLOAD_FAILED`
//! (the fetch failed) / `6 FAILED` (the package was rejected at install). On `5` the app appears
//! in `Inventory/<ProductID>` with `Version` (from Download/Version), `Title` (from Name),
//! `Publisher` and `InstallDate` (`YYYY-MM-DDTHH:MM:SSZ`, the shape of the seed's example
//! values). An Exec while an install is in progress (Status 0-4) is answered 200 and does not
//! restart it.
//!
//! After the install ends the Download node is kept for 7 days (seed: "the node can persist for
//! up to 1 week"): an Add of its nodes gets 418 and the server uses Replace + Exec; then a timer
//! deletes it.
//!
//! # LastError values (HRESULT, written as the signed 32-bit decimal of an `int` node)
//!
//! | Failure | Status | HRESULT | Windows name |
//! |---|---|---|---|
//! | HTTP 404 | 7 | 0x80190194 | HTTP_E_STATUS_NOT_FOUND |
//! | other HTTP status `n` | 7 | 0x80190000 + n | HTTP_E_STATUS_* (e.g. 0x801901F4 for 500) |
//! | connection refused | 7 | 0x80072EFD | WININET_E_CANNOT_CONNECT |
//! | timeout | 7 | 0x80072EE2 | WININET_E_TIMEOUT |
//! | host not resolved | 7 | 0x80072EE7 | WININET_E_NAME_NOT_RESOLVED |
//! | other transport failure | 7 | 0x80072EFE | WININET_E_CONNECTION_ABORTED |
//! | size differs from `entapp_size:<ProductID>` | 7 | 0x8007000D | ERROR_INVALID_DATA |
//! | SHA-256 differs from `entapp_sha256:<ProductID>` | 7 | 0x80096010 | TRUST_E_BAD_DIGEST |
//! | URL missing or not http(s) | 7 | 0x80070057 | E_INVALIDARG |
//! | package marked `entapp_rejected:<ProductID>` | 6 | 0x80073CF2 | ERROR_INSTALL_INVALID_PACKAGE |
//! | enterprise Status not 0 (ENABLED) | 6 | 0x80073CFF | ERROR_INSTALL_POLICY_FAILURE |
//!
//! # Device template settings (`[behaviour]`, all strings)
//!
//! | Key | Default | Meaning |
//! |---|---|---|
//! | `entapp_queue_secs` | 5 | time in 1 QUEUED before the download starts |
//! | `entapp_download_secs` | 20 | least time in 2 DOWNLOADING (a faster real fetch waits) |
//! | `entapp_downloaded_secs` | 5 | time in 3 DOWNLOADED |
//! | `entapp_install_secs` | 30 | time in 4 INSTALLING |
//! | `entapp_fetch_watchdog_secs` | 600 | no fetch outcome by then (runner restarted): fetch again |
//! | `entapp_retention_secs` | 604800 | how long a finished Download node is kept (7 days) |
//! | `entapp_require_confirmation` | false | start in 0 CONFIRM, waiting for the user |
//! | `entapp_confirm_secs` | 60 | when the simulated user confirms |
//! | `entapp_retry` | false | the IME retry model (below) |
//! | `entapp_enterprise_status` | (stored, 0) | overrides EnterpriseID/Status (1, 2, 3 make installs fail) |
//! | `entapp_publisher` | URL host | Publisher of installed apps |
//! | `entapp_publisher:<ProductID>` | | Publisher of one app |
//! | `entapp_size:<ProductID>` | | expected package size in bytes (checked when set) |
//! | `entapp_sha256:<ProductID>` | | expected SHA-256, hex (checked when set) |
//! | `entapp_rejected:<ProductID>` | false | the package downloads but is rejected at install (6) |
//!
//! `<ProductID>` in a key is compared without braces and case-insensitively, so
//! `entapp_sha256:{B316008A-...}` and `entapp_sha256:b316008a-...` both match.
//!
//! # Retry model (seed intune-management-extension-deep-dive.txt, "How the IME handles failures")
//!
//! With `entapp_retry = true`, a failure whose code is a "retry" code (connection refused,
//! timeout, other transport failure, HTTP 408/429/5xx) is retried 3 times at 5-minute
//! intervals, then every 24 hours; any other failure is retried every 24 hours. A retry starts
//! again at 2 DOWNLOADING. Exec resets the count. Off by default: the seed's Windows 10 Mobile
//! client does not retry on its own.
//!
//! # Bookkeeping
//!
//! Timers and counters live in the device's [`TreeState`] under keys beginning with
//! `@EnterpriseAppManagement/` (outside every CSP root, so no LocURI reaches them); they are
//! journalled like the node values, so a rolled-back Atomic undoes an Exec completely.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::syncml::StatusCode;
use crate::tree::{
    Csp, CspCx, Effect, Entry, FetchOutcome, Format, NodeRef, NodeSpec, Ops, Settings, TreeState, WriteOp,
};

const G: Ops = Ops::GET;
const GA: Ops = Ops::GET.with(Ops::ADD);
const GAR: Ops = Ops::GET.with(Ops::ADD).with(Ops::REPLACE);

/// The CSP root below the device scope.
const ROOT: &str = "Vendor/MSFT/EnterpriseAppManagement";
/// Prefix of the bookkeeping keys (see the module docs).
const META: &str = "@EnterpriseAppManagement";

static INVENTORY_APP: &[NodeSpec] = &[
    NodeSpec::leaf("Version", Format::Chr, G),
    NodeSpec::leaf("Title", Format::Chr, G),
    NodeSpec::leaf("Publisher", Format::Chr, G),
    NodeSpec::leaf("InstallDate", Format::Chr, G),
];

static DOWNLOAD_APP: &[NodeSpec] = &[
    NodeSpec::leaf("Version", Format::Chr, GAR),
    // The seed lists Get only for Name, but its own example Adds it and its note Replaces it.
    NodeSpec::leaf("Name", Format::Chr, GAR),
    NodeSpec::leaf("URL", Format::Chr, GAR),
    NodeSpec::leaf("Status", Format::Int, GAR),
    NodeSpec::leaf("LastError", Format::Int, G).default("0"),
    NodeSpec::leaf("LastErrorDesc", Format::Chr, G).default(""),
    // Exec per the seed; Add because the seed's Atomic example creates it before the Exec.
    NodeSpec::leaf("DownloadInstall", Format::Null, Ops::ADD.with(Ops::REPLACE).with(Ops::EXEC)),
];

static SCHEMA: NodeSpec = NodeSpec::interior(
    "EnterpriseAppManagement",
    G,
    &[NodeSpec::interior(
        "<EnterpriseID>",
        Ops::GET.with(Ops::ADD).with(Ops::DELETE),
        // Permanent children of a dynamic node exist exactly when the enterprise does: this is
        // the seed's "automatically created when EnterpriseID is added".
        &[
            NodeSpec::leaf("EnrollmentToken", Format::Chr, GAR),
            NodeSpec::interior("StoreProductID", G, &[NodeSpec::leaf("ProductId", Format::Chr, GA)]),
            NodeSpec::leaf("StoreUri", Format::Chr, GA),
            NodeSpec::leaf("CertificateSearchCriteria", Format::Chr, GA),
            NodeSpec::leaf("Status", Format::Int, G).default("0"),
            NodeSpec::leaf("CRLCheck", Format::Chr, GAR),
            NodeSpec::interior(
                "EnterpriseApps",
                G,
                &[
                    NodeSpec::interior(
                        "Inventory",
                        G,
                        &[NodeSpec::interior("<ProductID>", Ops::GET.with(Ops::DELETE), INVENTORY_APP).dynamic()],
                    ),
                    NodeSpec::interior(
                        "Download",
                        G,
                        &[NodeSpec::interior("<ProductID>", GAR, DOWNLOAD_APP).dynamic()],
                    ),
                ],
            ),
        ],
    )
    .dynamic()],
);

/// The Status values of `Download/<ProductID>/Status`, in the seed's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadStatus {
    /// 0: waiting for confirmation from the user.
    Confirm,
    /// 1: waiting for the download to start.
    Queued,
    /// 2: downloading.
    Downloading,
    /// 3: waiting for installation to start.
    Downloaded,
    /// 4: handed off for installation.
    Installing,
    /// 5: installed.
    Installed,
    /// 6: the application was rejected.
    Failed,
    /// 7: the download failed.
    DownloadFailed,
}

impl DownloadStatus {
    /// The integer the node holds.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Parses the node value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "0" => Self::Confirm,
            "1" => Self::Queued,
            "2" => Self::Downloading,
            "3" => Self::Downloaded,
            "4" => Self::Installing,
            "5" => Self::Installed,
            "6" => Self::Failed,
            "7" => Self::DownloadFailed,
            _ => return None,
        })
    }

    fn in_progress(self) -> bool {
        matches!(self, Self::Confirm | Self::Queued | Self::Downloading | Self::Downloaded | Self::Installing)
    }
}

/// Why an install did not complete; each maps to a distinct HRESULT (table in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallFailure {
    /// The content server answered with a non-success HTTP status.
    Http(u16),
    /// Nobody listened at the URL's address.
    ConnectionRefused,
    /// No answer in time.
    Timeout,
    /// The host name did not resolve.
    NameNotResolved(String),
    /// Another transport failure.
    Transport(String),
    /// The body's size differs from the template's expectation.
    SizeMismatch { expected: u64, got: u64 },
    /// The body's SHA-256 differs from the template's expectation.
    HashMismatch { expected: String, got: String },
    /// The URL node is missing or is not an http(s) URL.
    BadUrl(String),
    /// The template marks the package as rejected (bad signature, bad format).
    Rejected,
    /// The enterprise's app enrollment is not ENABLED.
    EnterpriseNotEnabled(u8),
}

impl InstallFailure {
    /// The failure a fetch outcome means, `None` for a body that arrived (checked separately).
    pub fn from_fetch(outcome: &FetchOutcome) -> Option<Self> {
        Some(match outcome {
            FetchOutcome::Done { .. } => return None,
            FetchOutcome::HttpStatus(s) => Self::Http(*s),
            FetchOutcome::ConnectionRefused => Self::ConnectionRefused,
            FetchOutcome::Timeout => Self::Timeout,
            FetchOutcome::Failed(m) => {
                let l = m.to_ascii_lowercase();
                if l.contains("dns") || l.contains("resolve") || l.contains("lookup") {
                    Self::NameNotResolved(m.clone())
                } else {
                    Self::Transport(m.clone())
                }
            }
        })
    }

    /// The HRESULT written to LastError.
    pub fn hresult(&self) -> u32 {
        match self {
            Self::Http(s) => 0x8019_0000 + u32::from(*s),
            Self::ConnectionRefused => 0x8007_2EFD,
            Self::Timeout => 0x8007_2EE2,
            Self::NameNotResolved(_) => 0x8007_2EE7,
            Self::Transport(_) => 0x8007_2EFE,
            Self::SizeMismatch { .. } => 0x8007_000D,
            Self::HashMismatch { .. } => 0x8009_6010,
            Self::BadUrl(_) => 0x8007_0057,
            Self::Rejected => 0x8007_3CF2,
            Self::EnterpriseNotEnabled(_) => 0x8007_3CFF,
        }
    }

    /// The human-readable LastErrorDesc.
    pub fn describe(&self) -> String {
        let text = match self {
            Self::Http(404) => "the content server answered HTTP 404 Not Found".to_string(),
            Self::Http(s) => format!("the content server answered HTTP {s}"),
            Self::ConnectionRefused => "cannot connect to the content server (connection refused)".to_string(),
            Self::Timeout => "the content server did not answer in time".to_string(),
            Self::NameNotResolved(m) => format!("the content server's name did not resolve: {m}"),
            Self::Transport(m) => format!("the download was aborted: {m}"),
            Self::SizeMismatch { expected, got } => {
                format!("the package has {got} bytes, {expected} were expected")
            }
            Self::HashMismatch { expected, got } => {
                format!("the package's SHA-256 is {got}, {expected} was expected")
            }
            Self::BadUrl(u) if u.is_empty() => "the URL node is not set".to_string(),
            Self::BadUrl(u) => format!("the URL {u:?} is not an http or https URL"),
            Self::Rejected => "the application was rejected: the package is not valid".to_string(),
            Self::EnterpriseNotEnabled(s) => {
                format!("the enterprise app enrollment is {} (Status {s})", enterprise_status_name(*s))
            }
        };
        format!("0x{:08X}: {text}", self.hresult())
    }

    /// The Status this failure ends in: 6 FAILED at install, 7 DOWNLOAD_FAILED before.
    pub fn status(&self) -> DownloadStatus {
        match self {
            Self::Rejected | Self::EnterpriseNotEnabled(_) => DownloadStatus::Failed,
            _ => DownloadStatus::DownloadFailed,
        }
    }

    /// True for the failures the IME retries 3 times at 5 minutes ("retry" codes).
    pub fn is_retry_code(&self) -> bool {
        match self {
            Self::ConnectionRefused | Self::Timeout | Self::Transport(_) => true,
            Self::Http(s) => *s == 408 || *s == 429 || *s >= 500,
            _ => false,
        }
    }
}

fn enterprise_status_name(s: u8) -> &'static str {
    match s {
        0 => "ENABLED",
        1 => "INSTALL_DISABLED",
        2 => "REVOKED",
        3 => "INVALID",
        _ => "unknown",
    }
}

/// An app in the inventory, as a device template pre-installs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledApp {
    /// The product ID, decoded (`{B316008A-141D-4A79-810F-8B764C4CFDFB}`).
    pub product_id: String,
    pub version: String,
    pub title: String,
    pub publisher: String,
    pub install_date: DateTime<Utc>,
}

/// Puts an app in the inventory of `enterprise_id`, creating the enterprise (Status ENABLED) when
/// it does not exist yet. The device creation code calls it for each app its template lists;
/// a server then sees the app in `Inventory` and in `?list=StructData`, and can Delete it.
pub fn preinstall(state: &mut TreeState, enterprise_id: &str, app: &InstalledApp) {
    let ent = format!("{ROOT}/{enterprise_id}");
    if state.entry(&ent).is_none() {
        state.set(&ent, Entry::Interior);
    }
    let node = format!("{ent}/EnterpriseApps/Inventory/{}", app.product_id);
    state.set(&node, Entry::Interior);
    state.set_value(&format!("{node}/Version"), app.version.clone());
    state.set_value(&format!("{node}/Title"), app.title.clone());
    state.set_value(&format!("{node}/Publisher"), app.publisher.clone());
    state.set_value(&format!("{node}/InstallDate"), install_date(app.install_date));
}

fn install_date(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The settings that shape the state machine (documented in the module docs).
struct Timing {
    queue: Duration,
    download: Duration,
    downloaded: Duration,
    install: Duration,
    watchdog: Duration,
    retention: Duration,
    confirm: Option<Duration>,
    retry: bool,
}

impl Timing {
    fn of(s: &Settings) -> Self {
        let secs = |k: &str, d: u64| Duration::seconds(i64::try_from(s.u64_or(k, d)).unwrap_or(i64::MAX / 1000));
        Timing {
            queue: secs("entapp_queue_secs", 5),
            download: secs("entapp_download_secs", 20),
            downloaded: secs("entapp_downloaded_secs", 5),
            install: secs("entapp_install_secs", 30),
            watchdog: secs("entapp_fetch_watchdog_secs", 600).max(Duration::seconds(1)),
            retention: secs("entapp_retention_secs", 7 * 24 * 3600),
            confirm: s.bool_or("entapp_require_confirmation", false).then(|| secs("entapp_confirm_secs", 60)),
            retry: s.bool_or("entapp_retry", false),
        }
    }
}

/// A per-package setting `<prefix>:<ProductID>`, the product ID compared without braces and
/// case-insensitively.
fn package_setting<'s>(s: &'s Settings, prefix: &str, product_id: &str) -> Option<&'s str> {
    let want = bare(product_id);
    s.0.iter().find_map(|(k, v)| {
        let (p, id) = k.split_once(':')?;
        (p == prefix && bare(id) == want).then_some(v.as_str())
    })
}

fn bare(id: &str) -> String {
    id.trim().trim_start_matches('{').trim_end_matches('}').to_ascii_lowercase()
}

/// One Download node: the enterprise and product it belongs to.
#[derive(Debug, Clone)]
struct Job {
    enterprise: String,
    product: String,
}

impl Job {
    /// Path of the Download node relative to the CSP root.
    fn node(&self) -> String {
        format!("{}/EnterpriseApps/Download/{}", self.enterprise, self.product)
    }

    /// Bookkeeping key of this job.
    fn meta(&self, what: &str) -> String {
        format!("{META}/{}/{}/{what}", self.enterprise, self.product)
    }

    fn status(&self, cx: &CspCx<'_>) -> Option<DownloadStatus> {
        cx.value(&format!("{}/Status", self.node())).and_then(DownloadStatus::parse)
    }

    fn set_status(&self, cx: &mut CspCx<'_>, s: DownloadStatus) {
        cx.set(&format!("{}/Status", self.node()), s.code().to_string());
    }

    fn time(&self, cx: &CspCx<'_>, what: &str) -> Option<DateTime<Utc>> {
        let v = cx.state.value(&self.meta(what))?;
        DateTime::parse_from_rfc3339(v).ok().map(|t| t.with_timezone(&Utc))
    }

    fn set_time(&self, cx: &mut CspCx<'_>, what: &str, t: DateTime<Utc>) {
        cx.state.set_value(&self.meta(what), t.to_rfc3339_opts(SecondsFormat::Millis, true));
    }

    fn clear(&self, cx: &mut CspCx<'_>, what: &str) {
        let k = self.meta(what);
        if cx.state.entry(&k).is_some() {
            cx.state.remove_subtree(&k);
        }
    }

    fn url(&self, cx: &CspCx<'_>) -> String {
        cx.value(&format!("{}/URL", self.node())).unwrap_or_default().trim().to_string()
    }

    /// Enters 2 DOWNLOADING and asks the runner for the package.
    fn start_download(&self, cx: &mut CspCx<'_>, t: &Timing) {
        let url = self.url(cx);
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            self.fail(cx, t, cx.env.now, InstallFailure::BadUrl(url));
            return;
        }
        self.set_status(cx, DownloadStatus::Downloading);
        self.clear(cx, "fetched");
        self.set_time(cx, "started", cx.env.now);
        self.set_time(cx, "due", cx.env.now + t.watchdog);
        let node = cx.key(&self.node());
        cx.emit(Effect::Fetch { csp: CSP_NAME, node, url });
    }

    /// Ends the job in failure; schedules a retry when the retry model is on.
    fn fail(&self, cx: &mut CspCx<'_>, t: &Timing, at: DateTime<Utc>, f: InstallFailure) {
        self.set_status(cx, f.status());
        let hr = f.hresult() as i32;
        cx.set(&format!("{}/LastError", self.node()), hr.to_string());
        cx.set(&format!("{}/LastErrorDesc", self.node()), f.describe());
        self.clear(cx, "fetched");
        if t.retry {
            let done: u64 = cx.state.value(&self.meta("retries")).and_then(|v| v.parse().ok()).unwrap_or(0);
            let next = if f.is_retry_code() && done < 3 {
                cx.state.set_value(&self.meta("retries"), (done + 1).to_string());
                Duration::minutes(5)
            } else {
                Duration::hours(24)
            };
            self.set_time(cx, "due", at + next);
            self.clear(cx, "expires");
        } else {
            self.finish(cx, t, at);
        }
    }

    /// The job is over: keep the node for the retention time.
    fn finish(&self, cx: &mut CspCx<'_>, t: &Timing, at: DateTime<Utc>) {
        self.clear(cx, "due");
        self.set_time(cx, "expires", at + t.retention);
    }

    /// Installs the app into the inventory (Status 5), or fails at install.
    fn install(&self, cx: &mut CspCx<'_>, t: &Timing, at: DateTime<Utc>) {
        let settings = cx.env.settings.clone();
        let ent_status = enterprise_status(cx, &self.enterprise);
        if ent_status != 0 {
            self.fail(cx, t, at, InstallFailure::EnterpriseNotEnabled(ent_status));
            return;
        }
        if package_setting(&settings, "entapp_rejected", &self.product)
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        {
            self.fail(cx, t, at, InstallFailure::Rejected);
            return;
        }
        let d = self.node();
        let version = cx.value(&format!("{d}/Version")).unwrap_or_default().to_string();
        let title = cx.value(&format!("{d}/Name")).unwrap_or_default().to_string();
        let url = self.url(cx);
        let publisher = package_setting(&settings, "entapp_publisher", &self.product)
            .or(settings.str("entapp_publisher"))
            .map(str::to_string)
            .unwrap_or_else(|| url_host(&url));
        let inv = format!("{}/EnterpriseApps/Inventory/{}", self.enterprise, self.product);
        cx.create(&inv);
        cx.set(&format!("{inv}/Version"), version);
        cx.set(&format!("{inv}/Title"), title);
        cx.set(&format!("{inv}/Publisher"), publisher);
        cx.set(&format!("{inv}/InstallDate"), install_date(at));
        self.set_status(cx, DownloadStatus::Installed);
        cx.set(&format!("{d}/LastError"), "0");
        cx.set(&format!("{d}/LastErrorDesc"), "");
        self.finish(cx, t, at);
    }

    /// Runs the timers of this job that are due at `env.now`; steps that follow each other
    /// without waiting for the network are taken in one call (a device that was off catches up).
    fn on_deadline(&self, cx: &mut CspCx<'_>, t: &Timing) {
        let now = cx.env.now;
        if self.time(cx, "expires").is_some_and(|e| e <= now) {
            cx.remove(&self.node());
            let k = format!("{META}/{}/{}", self.enterprise, self.product);
            cx.state.remove_subtree(&k);
            return;
        }
        // Bounded: each pass moves the status forward or stops.
        for _ in 0..8 {
            let Some(due) = self.time(cx, "due").filter(|d| *d <= now) else { return };
            match self.status(cx) {
                Some(DownloadStatus::Confirm) => {
                    self.set_status(cx, DownloadStatus::Queued);
                    self.set_time(cx, "due", due + t.queue);
                }
                Some(DownloadStatus::Queued) => {
                    self.start_download(cx, t);
                    return;
                }
                Some(DownloadStatus::Downloading) => {
                    if cx.state.value(&self.meta("fetched")).is_some() {
                        self.clear(cx, "fetched");
                        self.set_status(cx, DownloadStatus::Downloaded);
                        self.set_time(cx, "due", due + t.downloaded);
                    } else {
                        // The runner never reported (it restarted): ask again.
                        self.start_download(cx, t);
                        return;
                    }
                }
                Some(DownloadStatus::Downloaded) => {
                    self.set_status(cx, DownloadStatus::Installing);
                    self.set_time(cx, "due", due + t.install);
                }
                Some(DownloadStatus::Installing) => self.install(cx, t, due),
                Some(DownloadStatus::Failed | DownloadStatus::DownloadFailed) => {
                    // A retry of the retry model.
                    self.set_time(cx, "due", now);
                    self.start_download(cx, t);
                    return;
                }
                Some(DownloadStatus::Installed) | None => {
                    // Nothing to do (the server overwrote Status): stop the timer.
                    self.clear(cx, "due");
                    return;
                }
            }
        }
    }

    /// The runner's answer to our fetch.
    fn on_fetch(&self, cx: &mut CspCx<'_>, t: &Timing, outcome: &FetchOutcome) {
        // A late answer to an attempt that is over (or a duplicate after the watchdog) is
        // ignored.
        if self.status(cx) != Some(DownloadStatus::Downloading) || cx.state.value(&self.meta("fetched")).is_some() {
            return;
        }
        let now = cx.env.now;
        let settings = cx.env.settings.clone();
        let failure = match outcome {
            FetchOutcome::Done { size, sha256 } => {
                let want_size = package_setting(&settings, "entapp_size", &self.product)
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let want_hash = package_setting(&settings, "entapp_sha256", &self.product)
                    .map(|v| v.trim().to_ascii_lowercase());
                match (want_size, want_hash) {
                    (Some(expected), _) if expected != *size => {
                        Some(InstallFailure::SizeMismatch { expected, got: *size })
                    }
                    (_, Some(expected)) if expected != sha256.to_ascii_lowercase() => {
                        Some(InstallFailure::HashMismatch { expected, got: sha256.to_ascii_lowercase() })
                    }
                    _ => None,
                }
            }
            other => InstallFailure::from_fetch(other),
        };
        match failure {
            Some(f) => self.fail(cx, t, now, f),
            None => {
                cx.state.set_value(&self.meta("fetched"), "ok");
                let started = self.time(cx, "started").unwrap_or(now);
                self.set_time(cx, "due", (started + t.download).max(now));
            }
        }
    }
}

fn enterprise_status(cx: &CspCx<'_>, enterprise: &str) -> u8 {
    cx.env
        .settings
        .str("entapp_enterprise_status")
        .or(cx.value(&format!("{enterprise}/Status")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.split(':').next().unwrap_or("").to_string()
}

/// All jobs that have bookkeeping (`@EnterpriseAppManagement/<eid>/<pid>/...`).
fn jobs(state: &TreeState) -> Vec<Job> {
    let mut out: Vec<Job> = Vec::new();
    let prefix = format!("{META}/");
    for k in state.subtree_keys(META) {
        let Some(rest) = k.strip_prefix(&prefix) else { continue };
        let mut parts = rest.splitn(3, '/');
        let (Some(e), Some(p), Some(_)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if !out.iter().any(|j| j.enterprise == e && j.product == p) {
            out.push(Job { enterprise: e.to_string(), product: p.to_string() });
        }
    }
    out
}

/// The registered name of this CSP (used in `Effect::Fetch` and `Registry::on_fetch`).
pub const CSP_NAME: &str = "EnterpriseAppManagement";

/// `./Vendor/MSFT/EnterpriseAppManagement`.
pub struct EnterpriseAppManagement;

impl Csp for EnterpriseAppManagement {
    fn name(&self) -> &'static str {
        CSP_NAME
    }

    fn root(&self) -> &'static str {
        ROOT
    }

    fn schema(&self) -> &'static NodeSpec {
        &SCHEMA
    }

    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        let segs: Vec<&str> = node.segments().collect();
        match segs.as_slice() {
            [_, "Status"] => cx.env.settings.str("entapp_enterprise_status").map(|s| s.trim().to_string()),
            _ => None,
        }
    }

    fn validate(&self, _cx: &CspCx<'_>, op: WriteOp, node: NodeRef<'_>, value: Option<&str>) -> Result<(), StatusCode> {
        let segs: Vec<&str> = node.segments().collect();
        let v = value.map(str::trim);
        match (op, segs.as_slice(), v) {
            // The seed: "1" (CRL check required) or "0".
            (WriteOp::Add | WriteOp::Replace, [_, "CRLCheck"], Some(v)) if v != "0" && v != "1" => {
                Err(StatusCode::BadRequest)
            }
            (WriteOp::Add | WriteOp::Replace, [_, "EnterpriseApps", "Download", _, "Status"], Some(v))
                if DownloadStatus::parse(v).is_none() =>
            {
                Err(StatusCode::BadRequest)
            }
            _ => Ok(()),
        }
    }

    fn after_write(&self, cx: &mut CspCx<'_>, op: WriteOp, node: NodeRef<'_>) -> Result<(), StatusCode> {
        let segs: Vec<&str> = node.segments().collect();
        if let (WriteOp::Delete, [enterprise]) = (op, segs.as_slice()) {
            // Unenrollment of the enterprise removes its apps (done by the engine) and timers.
            let k = format!("{META}/{enterprise}");
            cx.state.remove_subtree(&k);
        }
        Ok(())
    }

    fn exec(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, _data: Option<&str>) -> StatusCode {
        let segs: Vec<&str> = node.segments().collect();
        let [enterprise, "EnterpriseApps", "Download", product, "DownloadInstall"] = segs.as_slice() else {
            return StatusCode::OptionalFeatureNotSupported;
        };
        let job = Job { enterprise: enterprise.to_string(), product: product.to_string() };
        if job.status(cx).is_some_and(DownloadStatus::in_progress) && job.time(cx, "due").is_some() {
            return StatusCode::Ok;
        }
        let t = Timing::of(&cx.env.settings);
        let now = cx.env.now;
        let k = format!("{META}/{enterprise}/{product}");
        cx.state.remove_subtree(&k);
        let d = job.node();
        cx.set(&format!("{d}/LastError"), "0");
        cx.set(&format!("{d}/LastErrorDesc"), "");
        match t.confirm {
            Some(after) => {
                job.set_status(cx, DownloadStatus::Confirm);
                job.set_time(cx, "due", now + after);
            }
            None => {
                job.set_status(cx, DownloadStatus::Queued);
                job.set_time(cx, "due", now + t.queue);
            }
        }
        StatusCode::Ok
    }

    fn next_deadline(&self, cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
        jobs(cx.state).iter().flat_map(|j| [j.time(cx, "due"), j.time(cx, "expires")]).flatten().min()
    }

    fn on_deadline(&self, cx: &mut CspCx<'_>) {
        let t = Timing::of(&cx.env.settings);
        for job in jobs(cx.state) {
            job.on_deadline(cx, &t);
        }
    }

    fn on_fetch(&self, cx: &mut CspCx<'_>, node: &str, outcome: &FetchOutcome) {
        let prefix = format!("{}/", cx.base);
        let Some(rel) = node.strip_prefix(&prefix) else { return };
        let segs: Vec<&str> = rel.split('/').collect();
        let [enterprise, "EnterpriseApps", "Download", product] = segs.as_slice() else { return };
        let job = Job { enterprise: enterprise.to_string(), product: product.to_string() };
        let t = Timing::of(&cx.env.settings);
        job.on_fetch(cx, &t, outcome);
    }
}
