//! EnterpriseAppManagement (`./Vendor/MSFT/EnterpriseAppManagement/<EnterpriseID>`): the
//! enterprise app enrollment of a Windows 10 Mobile device, its app inventory and the
//! download/install state machine (the EnterpriseAppManagement CSP page).
//!
//! Owns the node table, the Status state machine of `EnterpriseApps/Download/<ProductID>`, the
//! mapping of download outcomes to `LastError` HRESULTs and the inventory of installed apps. Does
//! not own the HTTP GET of a package (the runner performs [`Effect::Fetch`] in `runner/fetch.rs`
//! and hands the [`FetchOutcome`] back through `Registry::on_fetch`), nor the clock (steps run
//! on timers: `Registry::next_deadline` / `Registry::on_deadline` with `env.now`).
//!
//! # The state machine
//!
//! Exec on `Download/<ProductID>/DownloadInstall` answers 200 at once (the EnterpriseAppManagement CSP page: "the server
//! must query the device later to determine the status") and starts:
//! `0 CONFIRM` (only with `entapp_require_confirmation`) → `1 QUEUED` → `2 DOWNLOADING` (emits
//! `Effect::Fetch`) → `3 DOWNLOADED` → `4 INSTALLING` → `5 INSTALLED`, or `7 DOWNLOAD_FAILED`
//! (the fetch failed) / `6 FAILED` (the package was rejected at install). On `5` the app appears
//! in `Inventory/<ProductID>` with `Version` (from Download/Version), `Title` (from Name),
//! `Publisher` and `InstallDate` (`YYYY-MM-DDTHH:MM:SSZ`, the shape of the EnterpriseAppManagement CSP page's example
//! values). An Exec while an install is in progress (Status 0-4) is answered 200 and does not
//! restart it. Status has no value (Get → 404) until the first Exec; LastError reads 0 and
//! LastErrorDesc empty until a failure.
//!
//! Adding both `StoreProductID/ProductId` and `StoreUri` to an enterprise starts the same machine
//! for that product by itself (the EnterpriseAppManagement CSP page's "first enterprise application ... automatically
//! installed"), with the product ID as its Name.
//!
//! After the install ends the Download node is kept for 7 days (the EnterpriseAppManagement CSP page: "the node can persist for
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
//! # Retry model (Intune Management Extension deep dive, "How the IME handles failures")
//!
//! With `entapp_retry = true`, a failure whose code is a "retry" code (connection refused,
//! timeout, other transport failure, HTTP 408/429/5xx) is retried 3 times at 5-minute
//! intervals, then every 24 hours; any other failure is retried every 24 hours. A retry starts
//! again at 2 DOWNLOADING. Exec resets the count. Off by default: the EnterpriseAppManagement CSP page's Windows 10 Mobile
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
    // The EnterpriseAppManagement CSP page lists Get only for Name, but its own example Adds it and its note Replaces it.
    NodeSpec::leaf("Name", Format::Chr, GAR),
    NodeSpec::leaf("URL", Format::Chr, GAR),
    NodeSpec::leaf("Status", Format::Int, GAR),
    NodeSpec::leaf("LastError", Format::Int, G).default("0"),
    NodeSpec::leaf("LastErrorDesc", Format::Chr, G).default(""),
    // Exec per the EnterpriseAppManagement CSP page; Add because the EnterpriseAppManagement CSP page's Atomic example creates it before the Exec.
    NodeSpec::leaf("DownloadInstall", Format::Null, Ops::ADD.with(Ops::REPLACE).with(Ops::EXEC)),
];

static SCHEMA: NodeSpec = NodeSpec::interior(
    "EnterpriseAppManagement",
    G,
    &[NodeSpec::interior(
        "<EnterpriseID>",
        Ops::GET.with(Ops::ADD).with(Ops::DELETE),
        // Permanent children of a dynamic node exist exactly when the enterprise does: this is
        // the EnterpriseAppManagement CSP page's "automatically created when EnterpriseID is added".
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

/// The Status values of `Download/<ProductID>/Status`, in the EnterpriseAppManagement CSP page's order.
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

    /// The EnterpriseAppManagement CSP page's name of the value (`INSTALLED`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Confirm => "CONFIRM",
            Self::Queued => "QUEUED",
            Self::Downloading => "DOWNLOADING",
            Self::Downloaded => "DOWNLOADED",
            Self::Installing => "INSTALLING",
            Self::Installed => "INSTALLED",
            Self::Failed => "FAILED",
            Self::DownloadFailed => "DOWNLOAD_FAILED",
        }
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

/// One `Download/<ProductID>` node of a device, as a person reads it (`mdmsim sync` prints one
/// line per node after the session, so the Status a server will see next is visible at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadView {
    pub enterprise_id: String,
    /// Decoded (`{B316008A-141D-4A79-810F-8B764C4CFDFB}`).
    pub product_id: String,
    /// `None` before the first Exec (Status has no value yet).
    pub status: Option<DownloadStatus>,
    pub version: String,
    /// LastErrorDesc (empty when there is no error; it starts with the HRESULT in hex).
    pub last_error_desc: String,
}

impl std::fmt::Display for DownloadView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.enterprise_id, self.product_id)?;
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

/// Every Download node of every enterprise in a device's tree, in key order.
pub fn downloads(state: &TreeState) -> Vec<DownloadView> {
    let mut out = Vec::new();
    for enterprise in state.child_names(ROOT) {
        let dl = format!("{ROOT}/{enterprise}/EnterpriseApps/Download");
        for product in state.child_names(&dl) {
            let node = format!("{dl}/{product}");
            let value = |leaf: &str| state.value(&format!("{node}/{leaf}")).unwrap_or_default().trim().to_string();
            out.push(DownloadView {
                enterprise_id: enterprise.clone(),
                product_id: product.clone(),
                status: DownloadStatus::parse(&value("Status")),
                version: value("Version"),
                last_error_desc: value("LastErrorDesc"),
            });
        }
    }
    out
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
        // Capped at 100 years so that `now + duration` cannot overflow whatever a template says.
        const MAX_SECS: u64 = 100 * 365 * 24 * 3600;
        let secs = |k: &str, d: u64| Duration::seconds(s.u64_or(k, d).min(MAX_SECS) as i64);
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

    /// Starts (or restarts) the job: 0 CONFIRM or 1 QUEUED, LastError cleared, retry count reset.
    fn start(&self, cx: &mut CspCx<'_>) {
        let t = Timing::of(&cx.env.settings);
        let now = cx.env.now;
        let k = format!("{META}/{}/{}", self.enterprise, self.product);
        cx.state.remove_subtree(&k);
        let d = self.node();
        cx.set(&format!("{d}/LastError"), "0");
        cx.set(&format!("{d}/LastErrorDesc"), "");
        match t.confirm {
            Some(after) => {
                self.set_status(cx, DownloadStatus::Confirm);
                self.set_time(cx, "due", now + after);
            }
            None => {
                self.set_status(cx, DownloadStatus::Queued);
                self.set_time(cx, "due", now + t.queue);
            }
        }
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
                let want_size =
                    package_setting(&settings, "entapp_size", &self.product).and_then(|v| v.trim().parse::<u64>().ok());
                let want_hash =
                    package_setting(&settings, "entapp_sha256", &self.product).map(|v| v.trim().to_ascii_lowercase());
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

/// The EnterpriseAppManagement CSP page's "first auto-downloadable app link": once an enterprise has both
/// `StoreProductID/ProductId` and `StoreUri`, the client downloads and installs that app (usually
/// the Company Hub) by itself, through the same Download node and state machine an Exec starts.
/// Its Name (the inventory Title) is the product ID, the only name the server gave.
fn first_app(cx: &mut CspCx<'_>, enterprise: &str) {
    let product = cx.value(&format!("{enterprise}/StoreProductID/ProductId")).unwrap_or_default().trim().to_string();
    let uri = cx.value(&format!("{enterprise}/StoreUri")).unwrap_or_default().trim().to_string();
    if product.is_empty() || uri.is_empty() || product.contains('/') {
        return;
    }
    let job = Job { enterprise: enterprise.to_string(), product: product.clone() };
    let d = job.node();
    if cx.exists(&d) {
        return;
    }
    cx.create(&d);
    cx.set(&format!("{d}/Name"), product);
    cx.set(&format!("{d}/URL"), uri);
    job.start(cx);
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
        let segs = node.segment_list();
        match segs.as_slice() {
            [_, "Status"] => cx.env.settings.str("entapp_enterprise_status").map(|s| s.trim().to_string()),
            _ => None,
        }
    }

    fn validate(&self, _cx: &CspCx<'_>, op: WriteOp, node: NodeRef<'_>, value: Option<&str>) -> Result<(), StatusCode> {
        let segs = node.segment_list();
        let v = value.map(str::trim);
        match (op, segs.as_slice(), v) {
            // The EnterpriseAppManagement CSP page: "1" (CRL check required) or "0".
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
        let segs = node.segment_list();
        match (op, segs.as_slice()) {
            (WriteOp::Delete, [enterprise]) => {
                // Unenrollment of the enterprise removes its apps (done by the engine) and timers.
                let k = format!("{META}/{enterprise}");
                cx.state.remove_subtree(&k);
            }
            (WriteOp::Add, [enterprise, "StoreUri"] | [enterprise, "StoreProductID", "ProductId"]) => {
                first_app(cx, enterprise);
            }
            _ => {}
        }
        Ok(())
    }

    fn exec(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, _data: Option<&str>) -> StatusCode {
        let segs = node.segment_list();
        let [enterprise, "EnterpriseApps", "Download", product, "DownloadInstall"] = segs.as_slice() else {
            return StatusCode::OptionalFeatureNotSupported;
        };
        let job = Job { enterprise: enterprise.to_string(), product: product.to_string() };
        if job.status(cx).is_some_and(DownloadStatus::in_progress) && job.time(cx, "due").is_some() {
            return StatusCode::Ok;
        }
        job.start(cx);
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

#[cfg(test)]
mod tests {

    use chrono::TimeZone;

    use super::*;
    use crate::syncml::Command;

    const ENT: &str = "./Vendor/MSFT/EnterpriseAppManagement/4000000001";
    const PID: &str = "%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D";
    const DL: &str = "./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D";
    const INV: &str = "./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Inventory";

    /// The EnterpriseAppManagement CSP page's enrollment example.
    const ENROLL: &str = r#"<Add><CmdID>2</CmdID>
      <Item><Target><LocURI>./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnrollmentToken</LocURI></Target>
        <Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>InsertTokenHere</Data></Item>
      <Item><Target><LocURI>./Vendor/MSFT/EnterpriseAppManagement/4000000001/CertificateSearchCriteria
         </LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>SearchCriteriaInsertedHere</Data></Item>
    </Add>"#;

    /// The EnterpriseAppManagement CSP page's install Atomic, verbatim, typo included (`Download%7B...` without a slash).
    const SEED_ATOMIC: &str = r#"<Atomic>
   <CmdID>2</CmdID>
   <!-- The Add command can be used if the download node does not have a matching product ID
        node in it or if the application was installer 7 or more days old. Otherwise, use the Replace command. -->
   <Add>
      <CmdID>3</CmdID>
      <Item>
         <Target>
            <LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/Name
            </LocURI>
         </Target>
         <Meta>
            <Format xmlns="syncml:metinf">chr</Format>
         </Meta>
         <Data>ContosoApp1</Data>
      </Item>
      <Item>
         <Target>
            <LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/URL
            </LocURI>
         </Target>
         <Meta>
            <Format xmlns="syncml:metinf">chr</Format>
         </Meta>
         <Data>http://contoso.com/enterpriseapps/ContosoApp1.xap</Data>
      </Item>
      <Item>
         <Target>
            <LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/Version</LocURI>
         </Target>
         <Meta>
            <Format xmlns="syncml:metinf">chr</Format>
         </Meta>
         <Data>2.0.0.0</Data>
      </Item>
      <Item>
         <Target>
            <LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/DownloadInstall
            </LocURI>
         </Target>
         <Data>1</Data>
      </Item>
   </Add>
   <Exec>
      <CmdID>4</CmdID>
      <Item>
         <Target>
            <LocURI>
./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/DownloadInstall
            </LocURI>
         </Target>
         <Meta>
            <Format xmlns="syncml:metinf">int</Format>
         </Meta>
         <Data>0</Data>
      </Item>
   </Exec>
</Atomic>"#;

    /// The EnterpriseAppManagement CSP page's Atomic with the slash put back, and a URL on a given base.
    fn install_atomic(url: &str, version: &str) -> String {
        SEED_ATOMIC
            .replace("Download%7B", "Download/%7B")
            .replace("http://contoso.com/enterpriseapps/ContosoApp1.xap", url)
            .replace("2.0.0.0", version)
    }

    /// The EnterpriseAppManagement CSP page's note: Replace Name, URL and Version, then Exec, in an Atomic.
    fn replace_atomic(url: &str, version: &str) -> String {
        format!(
            r#"<Atomic><CmdID>20</CmdID><Replace><CmdID>21</CmdID>
            <Item><Target><LocURI>{DL}/Name</LocURI></Target><Data>ContosoApp1</Data></Item>
            <Item><Target><LocURI>{DL}/URL</LocURI></Target><Data>{url}</Data></Item>
            <Item><Target><LocURI>{DL}/Version</LocURI></Target><Data>{version}</Data></Item>
            </Replace><Exec><CmdID>22</CmdID><Item><Target><LocURI>{DL}/DownloadInstall</LocURI></Target></Item></Exec></Atomic>"#
        )
    }

    const URL: &str = "http://127.0.0.1:8080/apps/ContosoApp1.appx";

    /// One device driven as the runner drives it (`crate::csp::test_rig`).
    type Dev = crate::csp::test_rig::Rig;

    fn dev(settings: &[(&str, &str)]) -> Dev {
        crate::csp::test_rig::Rig::new(EnterpriseAppManagement, settings)
    }

    /// The Status node of the test's product.
    trait StatusNode {
        fn status(&mut self) -> Option<String>;
    }

    impl StatusNode for Dev {
        fn status(&mut self) -> Option<String> {
            self.get(&format!("{DL}/Status"))
        }
    }

    use crate::csp::test_rig::codes;

    fn ok_body() -> FetchOutcome {
        FetchOutcome::Done { size: 5, sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"hello")) }
    }

    fn hr(v: u32) -> String {
        (v as i32).to_string()
    }

    /// Enrolls, sends the install Atomic and returns the device after the Exec.
    fn started(settings: &[(&str, &str)]) -> Dev {
        let mut d = dev(settings);
        assert_eq!(codes(&d.run(ENROLL)), [("Add".to_string(), 200)]);
        let out = d.run(&install_atomic(URL, "2.0.0.0"));
        assert!(out.iter().all(|o| o.code == StatusCode::Ok), "{out:?}");
        d
    }

    #[test]
    fn downloads_lists_each_download_node_with_its_status_for_people() {
        let mut d = started(&[]);
        let v = downloads(&d.state);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].product_id, "{B316008A-141D-4A79-810F-8B764C4CFDFB}");
        assert_eq!(v[0].status, Some(DownloadStatus::Queued));
        assert_eq!(v[0].to_string(), "4000000001 {B316008A-141D-4A79-810F-8B764C4CFDFB} 2.0.0.0: Status 1 QUEUED");
        d.advance(Duration::seconds(5));
        d.answer(FetchOutcome::HttpStatus(404));
        assert_eq!(
            downloads(&d.state)[0].to_string(),
            "4000000001 {B316008A-141D-4A79-810F-8B764C4CFDFB} 2.0.0.0: Status 7 DOWNLOAD_FAILED, \
             LastError 0x80190194: the content server answered HTTP 404 Not Found"
        );
        assert!(downloads(&TreeState::new()).is_empty());
    }

    #[test]
    fn enrolling_creates_the_enterprise_with_its_fixed_nodes() {
        let mut d = dev(&[]);
        assert_eq!(d.get(ENT), None);
        d.run(ENROLL);
        assert_eq!(
            d.get(ENT).as_deref(),
            Some("EnrollmentToken/StoreProductID/StoreUri/CertificateSearchCriteria/Status/CRLCheck/EnterpriseApps")
        );
        assert_eq!(d.get(&format!("{ENT}/EnrollmentToken")).as_deref(), Some("InsertTokenHere"));
        assert_eq!(d.get(&format!("{ENT}/Status")).as_deref(), Some("0"));
        assert_eq!(d.get(&format!("{ENT}/EnterpriseApps")).as_deref(), Some("Inventory/Download"));
        assert_eq!(d.get(INV).as_deref(), Some(""));
        // The EnterpriseAppManagement CSP page's token update.
        let out = d.run(&format!(
            r#"<Replace><CmdID>2</CmdID><Item><Target><LocURI>{ENT}/EnrollmentToken</LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>InsertUpdaedTokenHere</Data></Item></Replace>"#
        ));
        assert_eq!(out[0].code, StatusCode::Ok);
        assert_eq!(d.get(&format!("{ENT}/EnrollmentToken")).as_deref(), Some("InsertUpdaedTokenHere"));
        // Status is Get only; CRLCheck takes "0" or "1"; a second Add of the enterprise is 418.
        let w = |op: &str, node: &str, data: &str| {
            format!(
                r#"<{op}><CmdID>5</CmdID><Item><Target><LocURI>{ENT}{node}</LocURI></Target><Data>{data}</Data></Item></{op}>"#
            )
        };
        assert_eq!(d.run(&w("Replace", "/Status", "2"))[0].code, StatusCode::CommandNotAllowed);
        assert_eq!(d.run(&w("Add", "/CRLCheck", "2"))[0].code, StatusCode::BadRequest);
        assert_eq!(d.run(&w("Add", "/CRLCheck", "1"))[0].code, StatusCode::Ok);
        assert_eq!(d.run(&w("Add", "", ""))[0].code, StatusCode::AlreadyExists);
        assert_eq!(d.run(&w("Delete", "/EnterpriseApps", ""))[0].code, StatusCode::CommandNotAllowed);
    }

    #[test]
    fn install_moves_status_1_to_5_and_the_app_shows_in_inventory() {
        let mut d = started(&[]);
        let t0 = d.env.now;
        assert_eq!(d.status().as_deref(), Some("1"));
        assert!(d.fetches.is_empty());
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), Some(t0 + Duration::seconds(5)));
        d.advance(Duration::seconds(5));
        assert_eq!(d.status().as_deref(), Some("2"));
        let node = format!("{ROOT}/4000000001/EnterpriseApps/Download/{{B316008A-141D-4A79-810F-8B764C4CFDFB}}");
        assert_eq!(d.fetches, [(node, URL.to_string())]);
        // The body arrives after 3 s; DOWNLOADING lasts at least 20 s.
        d.advance(Duration::seconds(3));
        d.answer(ok_body());
        assert_eq!(d.status().as_deref(), Some("2"));
        d.advance(Duration::seconds(16));
        assert_eq!(d.status().as_deref(), Some("2"));
        d.advance(Duration::seconds(1));
        assert_eq!(d.status().as_deref(), Some("3"));
        d.advance(Duration::seconds(5));
        assert_eq!(d.status().as_deref(), Some("4"));
        assert_eq!(d.get(&format!("{INV}/{PID}")), None);
        d.advance(Duration::seconds(30));
        assert_eq!(d.status().as_deref(), Some("5"));
        assert_eq!(d.get(&format!("{DL}/LastError")).as_deref(), Some("0"));
        let app = format!("{INV}/{PID}");
        assert_eq!(d.get(&app).as_deref(), Some("Version/Title/Publisher/InstallDate"));
        assert_eq!(d.get(&format!("{app}/Version")).as_deref(), Some("2.0.0.0"));
        assert_eq!(d.get(&format!("{app}/Title")).as_deref(), Some("ContosoApp1"));
        assert_eq!(d.get(&format!("{app}/Publisher")).as_deref(), Some("127.0.0.1"));
        assert_eq!(d.get(&format!("{app}/InstallDate")).as_deref(), Some("2026-03-01T10:01:00Z"));
        // Only the 7-day expiry is left.
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), Some(t0 + Duration::seconds(60) + Duration::days(7)));
    }

    #[test]
    fn inventory_list_structdata_has_the_csp_pages_shape() {
        let mut d = dev(&[("entapp_publisher", "Contoso")]);
        d.run(ENROLL);
        preinstall(
            &mut d.state,
            "4000000001",
            &InstalledApp {
                product_id: "{B0322158-C3C2-44EB-8A31-D14A9FEC450E}".into(),
                version: "1.0.0.0".into(),
                title: "Sample1".into(),
                publisher: "ExamplePublisher".into(),
                install_date: Utc.with_ymd_and_hms(2012, 10, 30, 21, 9, 52).unwrap(),
            },
        );
        // The second app arrives through the state machine.
        d.run(&install_atomic(URL, "1.0.0.0").replace("ContosoApp1<", "Sample2<"));
        d.advance(Duration::seconds(5));
        d.answer(ok_body());
        d.advance(Duration::minutes(5));
        assert_eq!(d.status().as_deref(), Some("5"));
        let (code, items) = d.get_all(&format!("\n    {INV}?list=StructData\n          "));
        assert_eq!(code, StatusCode::Ok);
        let p1 = format!("{INV}/%7BB0322158-C3C2-44EB-8A31-D14A9FEC450E%7D");
        let p2 = format!("{INV}/{PID}");
        let shape: Vec<(String, Option<String>, Option<String>)> = items
            .iter()
            .map(|i| {
                (i.source.clone().unwrap_or_default(), i.meta.as_ref().and_then(|m| m.format.clone()), i.data.clone())
            })
            .collect();
        let node = |u: &str| (u.to_string(), Some("node".to_string()), None);
        let leaf = |u: String, v: &str| (u, None, Some(v.to_string()));
        assert_eq!(
            shape,
            vec![
                node(INV),
                node(&p1),
                node(&p2),
                leaf(format!("{p1}/Version"), "1.0.0.0"),
                leaf(format!("{p1}/Title"), "Sample1"),
                leaf(format!("{p1}/Publisher"), "ExamplePublisher"),
                leaf(format!("{p1}/InstallDate"), "2012-10-30T21:09:52Z"),
                leaf(format!("{p2}/Version"), "1.0.0.0"),
                leaf(format!("{p2}/Title"), "Sample2"),
                leaf(format!("{p2}/Publisher"), "Contoso"),
                leaf(format!("{p2}/InstallDate"), "2026-03-01T10:01:00Z"),
            ]
        );
        // Interior items carry an empty Type, as in the EnterpriseAppManagement CSP page.
        assert_eq!(items[0].meta.as_ref().and_then(|m| m.type_.as_deref()), Some(""));
        // On the wire: the interior item as in the EnterpriseAppManagement CSP page, a leaf with Source and Data only.
        let xml = crate::syncml::encode(&crate::syncml::SyncMl {
            body: crate::syncml::SyncBody {
                commands: vec![Command::Results(crate::syncml::Results {
                    cmd_id: "3".into(),
                    msg_ref: "1".into(),
                    cmd_ref: "2".into(),
                    meta: None,
                    target_refs: vec![],
                    source_refs: vec![],
                    items: items[..4].to_vec(),
                })],
                final_: true,
            },
            ..Default::default()
        });
        assert!(
            xml.contains(&format!(
                r#"<Item><Source><LocURI>{INV}</LocURI></Source><Meta><Format xmlns="syncml:metinf">node</Format><Type xmlns="syncml:metinf"></Type></Meta></Item>"#
            )),
            "{xml}"
        );
        assert!(
            xml.contains(&format!(
                r#"<Item><Source><LocURI>{p1}/Version</LocURI></Source><Data>1.0.0.0</Data></Item>"#
            )),
            "{xml}"
        );
    }

    #[test]
    fn product_ids_match_decoded_and_are_echoed_as_received() {
        let mut d = started(&[]);
        // Escaped, as the EnterpriseAppManagement CSP page sends it: echoed escaped.
        let (code, items) = d.get_all(&format!("{DL}/Name"));
        assert_eq!(code, StatusCode::Ok);
        assert_eq!(items[0].source.as_deref(), Some(format!("{DL}/Name").as_str()));
        // The same node written with literal braces is the same node, echoed with braces.
        let literal = format!("{ENT}/EnterpriseApps/Download/{{B316008A-141D-4A79-810F-8B764C4CFDFB}}/Name");
        let (code, items) = d.get_all(&literal);
        assert_eq!((code, items[0].data.as_deref()), (StatusCode::Ok, Some("ContosoApp1")));
        assert_eq!(items[0].source.as_deref(), Some(literal.as_str()));
        // Child lists give the name escaped.
        assert_eq!(d.get(&format!("{ENT}/EnterpriseApps/Download")).as_deref(), Some(PID));
    }

    #[test]
    fn a_404_ends_in_download_failed_with_its_hresult() {
        let mut d = started(&[]);
        d.advance(Duration::seconds(5));
        d.answer(FetchOutcome::HttpStatus(404));
        assert_eq!(d.status().as_deref(), Some("7"));
        assert_eq!(d.get(&format!("{DL}/LastError")), Some(hr(0x8019_0194)));
        assert_eq!(d.get(&format!("{DL}/LastError")).as_deref(), Some("-2145844844"));
        let desc = d.get(&format!("{DL}/LastErrorDesc")).unwrap_or_default();
        assert!(desc.starts_with("0x80190194") && desc.contains("404"), "{desc}");
        assert_eq!(d.get(&format!("{INV}/{PID}")), None);
        // No retry by default: only the 7-day expiry remains.
        d.advance(Duration::days(1));
        assert!(d.fetches.is_empty());
        assert_eq!(d.status().as_deref(), Some("7"));
    }

    #[test]
    fn each_download_failure_has_its_own_lasterror() {
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"hello"));
        let zeros = "0".repeat(64);
        /// Template settings, what the runner reports, the Status and LastError expected.
        type Case<'a> = (Vec<(&'a str, &'a str)>, FetchOutcome, &'a str, u32);
        let cases: Vec<Case> = vec![
            (vec![], FetchOutcome::HttpStatus(500), "7", 0x8019_01F4),
            (vec![], FetchOutcome::ConnectionRefused, "7", 0x8007_2EFD),
            (vec![], FetchOutcome::Timeout, "7", 0x8007_2EE2),
            (vec![], FetchOutcome::Failed("dns error: failed to lookup address".into()), "7", 0x8007_2EE7),
            (vec![], FetchOutcome::Failed("connection reset".into()), "7", 0x8007_2EFE),
            (vec![("entapp_size:{B316008A-141D-4A79-810F-8B764C4CFDFB}", "6")], ok_body(), "7", 0x8007_000D),
            (vec![("entapp_sha256:b316008a-141d-4a79-810f-8b764c4cfdfb", &zeros)], ok_body(), "7", 0x8009_6010),
            (vec![("entapp_rejected:{B316008A-141D-4A79-810F-8B764C4CFDFB}", "true")], ok_body(), "6", 0x8007_3CF2),
            (vec![("entapp_enterprise_status", "2")], ok_body(), "6", 0x8007_3CFF),
            // Expectations that hold let the install through.
            (
                vec![
                    ("entapp_size:{B316008A-141D-4A79-810F-8B764C4CFDFB}", "5"),
                    ("entapp_sha256:{B316008A-141D-4A79-810F-8B764C4CFDFB}", &sha),
                ],
                ok_body(),
                "5",
                0,
            ),
        ];
        let mut seen = Vec::new();
        for (settings, outcome, status, hresult) in cases {
            let mut d = started(&settings);
            d.advance(Duration::seconds(5));
            d.answer(outcome.clone());
            d.advance(Duration::minutes(2));
            assert_eq!(d.status().as_deref(), Some(status), "{outcome:?} {settings:?}");
            assert_eq!(d.get(&format!("{DL}/LastError")), Some(hr(hresult)), "{outcome:?} {settings:?}");
            let desc = d.get(&format!("{DL}/LastErrorDesc")).unwrap_or_default();
            if hresult != 0 {
                assert!(desc.starts_with(&format!("0x{hresult:08X}: ")), "{desc}");
                assert!(!seen.contains(&hresult), "LastError {hresult:#x} used twice");
                seen.push(hresult);
                assert_eq!(d.get(&format!("{INV}/{PID}")), None);
            } else {
                assert_eq!(desc, "");
                assert!(d.get(&format!("{INV}/{PID}")).is_some());
            }
        }
    }

    #[test]
    fn a_url_that_is_not_http_fails_without_a_fetch() {
        let mut d = dev(&[]);
        d.run(ENROLL);
        d.run(&install_atomic("ftp://contoso.com/app.xap", "1.0"));
        d.advance(Duration::seconds(5));
        assert!(d.fetches.is_empty());
        assert_eq!(d.status().as_deref(), Some("7"));
        assert_eq!(d.get(&format!("{DL}/LastError")), Some(hr(0x8007_0057)));
    }

    #[test]
    fn an_add_within_7_days_is_418_then_replace_and_exec_reinstall() {
        let mut d = started(&[]);
        d.advance(Duration::seconds(5));
        d.answer(ok_body());
        d.advance(Duration::minutes(2));
        assert_eq!(d.status().as_deref(), Some("5"));
        d.advance(Duration::days(6));
        let out = d.run(&install_atomic(URL, "3.0.0.0"));
        assert_eq!(out[0].code, StatusCode::AtomicFailed);
        assert!(out.iter().any(|o| o.cmd == "Add" && o.code == StatusCode::AlreadyExists), "{out:?}");
        assert_eq!(d.get(&format!("{DL}/Version")).as_deref(), Some("2.0.0.0"));
        // The EnterpriseAppManagement CSP page's way around: Replace Name/URL/Version and Exec, in an Atomic.
        let out = d.run(&replace_atomic(URL, "3.0.0.0"));
        assert_eq!(codes(&out), [("Atomic".into(), 200), ("Replace".into(), 200), ("Exec".into(), 200)]);
        assert_eq!(d.status().as_deref(), Some("1"));
        assert_eq!(d.get(&format!("{DL}/LastError")).as_deref(), Some("0"));
        d.advance(Duration::seconds(5));
        d.answer(ok_body());
        d.advance(Duration::minutes(2));
        assert_eq!(d.status().as_deref(), Some("5"));
        assert_eq!(d.get(&format!("{INV}/{PID}/Version")).as_deref(), Some("3.0.0.0"));
        // The retention counts from the new completion: still there 6 days later.
        d.advance(Duration::days(6));
        assert_eq!(d.status().as_deref(), Some("5"));
    }

    #[test]
    fn the_download_node_is_gone_after_7_days_and_add_works_again() {
        let mut d = started(&[]);
        d.advance(Duration::seconds(5));
        d.answer(ok_body());
        // Installed 60 s after the Exec (5 queued + 20 downloading + 5 + 30).
        d.advance(Duration::seconds(55));
        assert_eq!(d.status().as_deref(), Some("5"));
        d.advance(Duration::days(7) - Duration::seconds(1));
        assert_eq!(d.status().as_deref(), Some("5"));
        d.advance(Duration::seconds(1));
        assert_eq!(d.get(DL), None);
        assert_eq!(d.get_all(DL).0, StatusCode::NotFound);
        assert_eq!(d.get(&format!("{ENT}/EnterpriseApps/Download")).as_deref(), Some(""));
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), None);
        // The app stays installed; a new Add goes through.
        assert!(d.get(&format!("{INV}/{PID}")).is_some());
        let out = d.run(&install_atomic(URL, "4.0.0.0"));
        assert_eq!(out[0].code, StatusCode::Ok, "{out:?}");
        assert_eq!(d.status().as_deref(), Some("1"));
    }

    #[test]
    fn delete_of_an_inventory_app_uninstalls_it() {
        let mut d = dev(&[]);
        preinstall(
            &mut d.state,
            "4000000001",
            &InstalledApp {
                product_id: "{B316008A-141D-4A79-810F-8B764C4CFDFB}".into(),
                version: "1.0.0.0".into(),
                title: "ContosoApp1".into(),
                publisher: "Contoso".into(),
                install_date: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            },
        );
        assert_eq!(d.get(INV).as_deref(), Some(PID));
        assert_eq!(d.get(&format!("{INV}/{PID}/Title")).as_deref(), Some("ContosoApp1"));
        // Inventory leaves are Get only.
        let out = d.run(&format!(
            r#"<Replace><CmdID>2</CmdID><Item><Target><LocURI>{INV}/{PID}/Version</LocURI></Target><Data>9</Data></Item></Replace>"#
        ));
        assert_eq!(out[0].code, StatusCode::CommandNotAllowed);
        // The EnterpriseAppManagement CSP page's uninstall example.
        let out = d.run(&format!(
            r#"<Delete><CmdID>2</CmdID><Item><Target><LocURI>{INV}/{PID}</LocURI></Target></Item></Delete>"#
        ));
        assert_eq!(out[0].code, StatusCode::Ok);
        assert_eq!(d.get_all(&format!("{INV}/{PID}")).0, StatusCode::NotFound);
        assert_eq!(d.get(INV).as_deref(), Some(""));
        let out = d.run(&format!(
            r#"<Delete><CmdID>3</CmdID><Item><Target><LocURI>{INV}/{PID}</LocURI></Target></Item></Delete>"#
        ));
        assert_eq!(out[0].code, StatusCode::NotFound);
    }

    #[test]
    fn the_csp_pages_atomic_with_its_locuri_typo_rolls_back_everything() {
        let mut d = dev(&[]);
        d.run(ENROLL);
        let before = d.state.clone();
        let out = d.run(SEED_ATOMIC);
        assert_eq!(out[0].cmd, "Atomic");
        assert_eq!(out[0].code, StatusCode::AtomicFailed);
        // The Add's items differ: three rolled back, the typo'd one not found.
        let add: Vec<(Vec<String>, u16)> =
            out.iter().filter(|o| o.cmd == "Add").map(|o| (o.target_refs.clone(), o.code.code())).collect();
        assert_eq!(add.len(), 4, "{out:?}");
        assert_eq!(add.iter().filter(|(_, c)| *c == 216).count(), 3);
        let typo = add.iter().find(|(_, c)| *c == 404).expect("a 404 item");
        assert!(typo.0[0].contains("Download%7BB316008A"), "{typo:?}");
        let exec = out.iter().find(|o| o.cmd == "Exec").expect("Exec status");
        assert_eq!(exec.code, StatusCode::AtomicRollbackOk);
        // Nothing was created and nothing will run.
        assert_eq!(d.state, before);
        assert_eq!(d.get_all(DL).0, StatusCode::NotFound);
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), None);
    }

    #[test]
    fn a_device_that_was_off_catches_up_in_one_timer_call() {
        let mut d = started(&[]);
        d.advance(Duration::seconds(5));
        d.answer(ok_body());
        // The runner comes back an hour later and calls the timers once.
        d.env.now += Duration::hours(1);
        let e = d.reg.on_deadline(&mut d.state, &d.env);
        assert!(e.is_empty());
        assert_eq!(d.status().as_deref(), Some("5"));
        // The steps happened when they were due, not when the runner woke up.
        assert_eq!(d.get(&format!("{INV}/{PID}/InstallDate")).as_deref(), Some("2026-03-01T10:01:00Z"));
    }

    #[test]
    fn absurd_durations_in_a_template_do_not_overflow_the_clock() {
        let mut d = started(&[("entapp_queue_secs", "18446744073709551615")]);
        assert_eq!(d.status().as_deref(), Some("1"));
        d.advance(Duration::days(365));
        assert_eq!(d.status().as_deref(), Some("1"));
    }

    #[test]
    fn store_product_id_and_store_uri_install_the_first_app_by_themselves() {
        let mut d = dev(&[]);
        let out = d.run(&format!(
            r#"<Add><CmdID>2</CmdID>
            <Item><Target><LocURI>{ENT}/EnrollmentToken</LocURI></Target><Data>token</Data></Item>
            <Item><Target><LocURI>{ENT}/StoreProductID/ProductId</LocURI></Target><Data>{{B316008A-141D-4A79-810F-8B764C4CFDFB}}</Data></Item>
            <Item><Target><LocURI>{ENT}/StoreUri</LocURI></Target><Data>{URL}</Data></Item></Add>"#
        ));
        assert_eq!(out[0].code, StatusCode::Ok);
        assert_eq!(d.status().as_deref(), Some("1"));
        d.advance(Duration::seconds(5));
        assert_eq!(d.fetches.len(), 1);
        assert_eq!(d.fetches[0].1, URL);
        d.answer(ok_body());
        d.advance(Duration::minutes(2));
        assert_eq!(d.status().as_deref(), Some("5"));
        assert_eq!(d.get(&format!("{INV}/{PID}/Title")).as_deref(), Some("{B316008A-141D-4A79-810F-8B764C4CFDFB}"));
    }

    #[test]
    fn confirm_waits_for_the_simulated_user() {
        let mut d = started(&[("entapp_require_confirmation", "true"), ("entapp_confirm_secs", "120")]);
        assert_eq!(d.status().as_deref(), Some("0"));
        d.advance(Duration::seconds(119));
        assert_eq!(d.status().as_deref(), Some("0"));
        d.advance(Duration::seconds(1));
        assert_eq!(d.status().as_deref(), Some("1"));
        d.advance(Duration::seconds(5));
        assert_eq!(d.status().as_deref(), Some("2"));
        assert_eq!(d.fetches.len(), 1);
    }

    #[test]
    fn step_durations_come_from_the_template_and_exec_does_not_restart_a_running_install() {
        let mut d = started(&[
            ("entapp_queue_secs", "3600"),
            ("entapp_download_secs", "0"),
            ("entapp_downloaded_secs", "0"),
            ("entapp_install_secs", "7200"),
        ]);
        d.advance(Duration::minutes(59));
        // A server polling in a later session still sees QUEUED.
        assert_eq!(d.status().as_deref(), Some("1"));
        let exec = format!(
            r#"<Exec><CmdID>7</CmdID><Item><Target><LocURI>{DL}/DownloadInstall</LocURI></Target></Item></Exec>"#
        );
        assert_eq!(d.run(&exec)[0].code, StatusCode::Ok);
        d.advance(Duration::minutes(1));
        assert_eq!(d.status().as_deref(), Some("2"));
        d.answer(ok_body());
        d.advance(Duration::seconds(0));
        assert_eq!(d.status().as_deref(), Some("4"));
        d.advance(Duration::minutes(119));
        assert_eq!(d.status().as_deref(), Some("4"));
        d.advance(Duration::minutes(1));
        assert_eq!(d.status().as_deref(), Some("5"));
    }

    #[test]
    fn a_fetch_that_never_reports_is_asked_again_and_late_answers_are_ignored() {
        let mut d = started(&[("entapp_fetch_watchdog_secs", "60")]);
        d.advance(Duration::seconds(5));
        assert_eq!(d.fetches.len(), 1);
        d.advance(Duration::seconds(60));
        assert_eq!(d.fetches.len(), 2);
        assert_eq!(d.status().as_deref(), Some("2"));
        d.answer(ok_body());
        // The duplicate arrives after the first answer: ignored.
        d.answer(FetchOutcome::HttpStatus(404));
        d.advance(Duration::minutes(2));
        assert_eq!(d.status().as_deref(), Some("5"));
        // A stale answer after completion changes nothing either.
        let node = format!("{ROOT}/4000000001/EnterpriseApps/Download/{{B316008A-141D-4A79-810F-8B764C4CFDFB}}");
        let e = d.reg.on_fetch(&mut d.state, &d.env, CSP_NAME, &node, &FetchOutcome::Timeout);
        assert!(e.is_empty());
        assert_eq!(d.status().as_deref(), Some("5"));
    }

    #[test]
    fn deleting_the_enterprise_removes_apps_downloads_and_timers() {
        let mut d = started(&[]);
        d.advance(Duration::seconds(5));
        let out =
            d.run(&format!(r#"<Delete><CmdID>2</CmdID><Item><Target><LocURI>{ENT}</LocURI></Target></Item></Delete>"#));
        assert_eq!(out[0].code, StatusCode::Ok);
        assert_eq!(d.get_all(ENT).0, StatusCode::NotFound);
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), None);
        assert!(d.state.is_empty(), "{:?}", d.state.iter().collect::<Vec<_>>());
        // The download's answer arrives after the unenrollment: nothing comes back.
        d.answer(ok_body());
        assert!(d.state.is_empty());
    }

    #[test]
    fn retry_model_retries_retry_codes_3_times_at_5_minutes_then_every_24_hours() {
        let mut d = started(&[("entapp_retry", "true")]);
        d.advance(Duration::seconds(5));
        let t_fail = d.env.now;
        d.answer(FetchOutcome::ConnectionRefused);
        assert_eq!(d.status().as_deref(), Some("7"));
        let mut retries_at = Vec::new();
        for _ in 0..5 {
            let next = d.reg.next_deadline(&mut d.state, &d.env).expect("a retry is scheduled");
            retries_at.push(next - t_fail);
            d.advance(next - d.env.now);
            assert_eq!(d.status().as_deref(), Some("2"));
            assert_eq!(d.fetches.len(), 1);
            d.answer(FetchOutcome::ConnectionRefused);
            assert_eq!(d.status().as_deref(), Some("7"));
        }
        let m = Duration::minutes;
        let h = Duration::hours;
        assert_eq!(retries_at, [m(5), m(10), m(15), m(15) + h(24), m(15) + h(48)]);
        // The next attempt succeeds: installed.
        d.advance(h(24));
        d.answer(ok_body());
        d.advance(m(2));
        assert_eq!(d.status().as_deref(), Some("5"));
        assert_eq!(d.get(&format!("{DL}/LastError")).as_deref(), Some("0"));
    }

    #[test]
    fn retry_model_retries_other_failures_every_24_hours() {
        let mut d = started(&[("entapp_retry", "true")]);
        d.advance(Duration::seconds(5));
        let t_fail = d.env.now;
        d.answer(FetchOutcome::HttpStatus(404));
        assert_eq!(d.reg.next_deadline(&mut d.state, &d.env), Some(t_fail + Duration::hours(24)));
        d.advance(Duration::hours(24));
        assert_eq!(d.fetches.len(), 1);
        assert_eq!(d.status().as_deref(), Some("2"));
    }
}
