//! Device templates: the TOML file `device new --template` (and `enroll`, `demo`, `scenario`)
//! reads. `[devinfo]` and `[devdetail]` give the values written into the tree when the device is
//! created, `[behaviour]` the per-device settings the CSPs, the session, the scheduler and the
//! transport read ([`Settings`]; every key is in [`BEHAVIOUR_KEYS`]), `[[apps]]` the apps
//! installed before management, `[wmi]` the WMI bridge inventory, `[nodes]` values of any CSP
//! leaf, an optional top-level `profile` the default profile and an optional top-level
//! `unsupported` list of LocURIs the device answers 404 for. Values of `[devinfo]`,
//! `[devdetail]` and `[nodes]` may vary across a fleet with patterns (`"DESKTOP-{alnum:7}"`,
//! [`crate::device::vary`]), expanded per DeviceID by [`Template::for_device`].
//!
//! ```toml
//! profile = "win10"
//! [devinfo]
//! Man = "Dell Inc."
//! Mod = "Latitude 7440"
//! [devdetail]
//! SwV = "10.0.22631.4460"
//! [devdetail.Ext.Microsoft]          # or "Ext/Microsoft/DeviceName" = "..."
//! DeviceName = "LAPTOP-{alnum:8}"    # one per device, from its DeviceID
//! [behaviour]
//! timezone = "Europe/Paris"
//! nightly_cron = "0 3 * * *"
//! entapp_install_secs = 30                                  # EnterpriseAppManagement settings
//! "entapp_sha256:{B316008A-141D-4A79-810F-8B764C4CFDFB}" = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!
//! [[apps]]                         # an app already installed (EnterpriseAppManagement Inventory)
//! enterprise_id = "4000000001"
//! product_id = "{B0322158-C3C2-44EB-8A31-D14A9FEC450E}"   # or %7B...%7D
//! version = "1.0.0.0"
//! title = "Contoso Expenses"
//! publisher = "Contoso Ltd."
//! install_date = 2025-10-30T21:09:52Z                       # optional: the device's creation
//!
//! [wmi]                            # optional WMI bridge inventory (csp::wmi_bridge::template_settings)
//! domain = "CONTOSO"
//! ```
//!
//! Owns parsing and checking, as strictly as scenario files are checked: every key of every
//! table must be known (`[devinfo]`/`[devdetail]` keys are leaves of the DevInfo/DevDetail node
//! tables, `[behaviour]` keys are in [`BEHAVIOUR_KEYS`], `[[apps]]` and `[wmi]` have fixed keys)
//! and every value must have its type and fit (a node's format, an IANA time zone, a cron line
//! the nightly scheduler itself parses, a number in range, one of a few words). A refusal is a
//! [`TemplateError`]: `FILE:LINE:COLUMN:`, what is wrong and what is accepted; when a file has
//! several faults, the first one in the file is reported. `[wmi]` is checked by the WMI bridge
//! and kept with the settings under `wmi.*` keys. A file only needs what differs from the
//! built-in defaults ([`Template::builtin`]); reading the file is the caller's job.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveTime, Offset, Utc};
use percent_encoding::percent_decode_str;

use crate::csp::devinfo::{DevDetail, DevInfo};
use crate::schedule::{Nightly, Zone};
use crate::toml_pos::{Part, Seg, parse_table};
use crate::tree::{Csp, Format, NodeSpec, Profile, Settings};

/// A parsed, checked device template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    /// The profile the template is for, when it says.
    pub profile: Option<Profile>,
    /// `./DevInfo/<name>` values.
    pub devinfo: BTreeMap<String, String>,
    /// `./DevDetail/<path>` values (paths relative to DevDetail).
    pub devdetail: BTreeMap<String, String>,
    /// The `[behaviour]` table (and the `[wmi]` table as `wmi.*` keys).
    pub behaviour: Settings,
    /// The `[[apps]]` entries: apps installed before the device is managed.
    pub apps: Vec<TemplateApp>,
    /// The `[nodes]` table: values of any CSP node the device reports (DeviceStatus,
    /// BitLocker status, licensing...), by LocURI; several values are choices, one per device
    /// picked by its DeviceID, so a fleet varies.
    pub nodes: BTreeMap<String, Vec<String>>,
    /// The top-level `unsupported` list: LocURIs the device answers 404 for, whatever the
    /// command (nodes a real device reported as not found, kept by `device import`).
    pub unsupported: Vec<String>,
}

/// One `[[apps]]` entry: an app in the EnterpriseAppManagement inventory of `enterprise_id`
/// from the start (`csp::enterprise_app::preinstall` puts it there when the device is created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateApp {
    /// The EnterpriseID it belongs to (`4000000001` in Microsoft's examples).
    pub enterprise_id: String,
    /// The product ID, decoded and in braces (`{B0322158-C3C2-44EB-8A31-D14A9FEC450E}`).
    pub product_id: String,
    /// The installed version (Inventory `Version`).
    pub version: String,
    /// The app's name (Inventory `Title`).
    pub title: String,
    /// Who published it (Inventory `Publisher`).
    pub publisher: String,
    /// When it was installed; `None` means when the device is created.
    pub install_date: Option<DateTime<Utc>>,
}

/// A template that cannot be used: the file, the line and column of the key or value at fault,
/// and what is wrong with what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct TemplateError {
    /// The file name (or `built-in`).
    pub origin: String,
    /// 1-based line of the key or value at fault.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong and what is accepted, without the place.
    pub message: String,
}

/// The kind of value a `[behaviour]` setting takes. Values are kept as text (the readers parse
/// them with `Settings::u64_or`, `bool_or`, `str`), so a TOML string `"30"` is as good as `30`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    /// `true` or `false` (also `1` and `0`, in any case, as `Settings::bool_or` reads them).
    Bool,
    /// A whole number from `min` to `max`; `unit` names what it counts (`seconds`, `bytes`).
    Number {
        /// The smallest value accepted.
        min: i128,
        /// The largest value accepted.
        max: i128,
        /// What one counts, for messages (empty for a code).
        unit: &'static str,
    },
    /// Any text.
    Text,
    /// One of these words, exactly.
    OneOf(&'static [&'static str]),
    /// An IANA time zone name from the tz database (`Europe/Paris`).
    TimeZone,
    /// A cron line, as the nightly scheduler parses it (`schedule::Nightly`).
    Cron,
    /// A local time of day, `HH:MM`.
    TimeOfDay,
    /// An absolute `http` or `https` URL.
    Url,
    /// An HTTP header name (RFC 9110 §5.1: a token).
    HeaderName,
    /// A SHA-256 digest: 64 hex digits.
    Sha256,
}

/// How a `[behaviour]` key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    /// `name`: one value for the device.
    Plain,
    /// `"name:<ProductID>"`: one value per EnterpriseAppManagement package.
    PerPackage,
    /// Either form.
    Both,
}

/// One `[behaviour]` setting: its key, the kind of its value, its default and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BehaviourKey {
    /// The key (for a per-package key, the part before `:`).
    pub name: &'static str,
    /// What its value must be.
    pub kind: SettingKind,
    /// Plain, per package, or both.
    pub form: KeyForm,
    /// What applies when the key is absent.
    pub default: &'static str,
    /// What it changes.
    pub doc: &'static str,
}

const fn plain(name: &'static str, kind: SettingKind, default: &'static str, doc: &'static str) -> BehaviourKey {
    BehaviourKey { name, kind, form: KeyForm::Plain, default, doc }
}

const fn number(min: i128, max: i128, unit: &'static str) -> SettingKind {
    SettingKind::Number { min, max, unit }
}

const ANY_U64: i128 = u64::MAX as i128;
const MILLIS: SettingKind = number(0, ANY_U64, "milliseconds");
const SECONDS: SettingKind = number(0, ANY_U64, "seconds");
const BYTES: SettingKind = number(1, ANY_U64, "bytes");

/// Every `[behaviour]` key a device reads, with its kind, default and meaning: the one list the
/// template checker, the README and the readers agree on. A key not listed here is refused, so a
/// new setting is added here (and read where it acts).
pub const BEHAVIOUR_KEYS: &[BehaviourKey] = &[
    // The device's clock and schedule (schedule::nightly, schedule::scheduler, DevInfo/DevDetail
    // LocalTime, the WMI clock, the DMClient daily poll).
    plain(
        "timezone",
        SettingKind::TimeZone,
        "UTC offset below",
        "IANA time zone of the nightly maintenance window, with its daylight-saving rules",
    ),
    plain(
        "utc_offset_minutes",
        number(-1439, 1439, "minutes east of UTC"),
        "0",
        "fixed offset of the device's clock: LocalTime, the WMI clock, the daily fallback poll, and the nightly window when timezone is not set",
    ),
    plain(
        "nightly_cron",
        SettingKind::Cron,
        "0 0 2 * * *",
        "when nightly maintenance starts, in local time: 5 fields (minute first) or 6-7 fields (seconds first)",
    ),
    plain(
        "maintenance_time",
        SettingKind::TimeOfDay,
        "02:00",
        "local time of the maintenance window: the nightly trigger when nightly_cron is not set, and the DMClient daily fallback poll",
    ),
    plain(
        "jitter",
        SettingKind::Bool,
        "true",
        "a random delay before scheduled sessions; false: every session exactly at its trigger",
    ),
    // The session (session::machine).
    plain("slow_command_ms", MILLIS, "0", "simulated time each command takes (for keep-alive messages)"),
    plain("slow_exec_ms", MILLIS, "0", "simulated time each Exec takes on top of slow_command_ms"),
    plain(
        "keepalive_after_ms",
        MILLIS,
        "20000",
        "with DMClient EnableOmaDmKeepAliveMessage, Alert 1224 once the commands of a message took this long",
    ),
    plain("max_messages", number(1, u32::MAX as i128, "messages"), "200", "most client messages in one session"),
    plain("max_message_bytes", BYTES, "built-in limit", "size limit of one SyncML message"),
    plain("max_value_bytes", BYTES, "built-in limit", "size limit of one node value"),
    plain("max_object_bytes", BYTES, "built-in limit", "size limit of one large object (all its chunks)"),
    // The transport (runner).
    plain(
        "signature_header",
        SettingKind::HeaderName,
        "MDM-Signature",
        "HTTP header that carries the CMS signature of signed messages (MS-Signature on some servers)",
    ),
    plain(
        "conn_retry_freq",
        number(1, 10, "attempts"),
        "DMAcc ConnRetryFreq, else 3",
        "connection attempts per server address",
    ),
    // DMClient (csp::dmclient).
    plain(
        "poll_requires_add",
        SettingKind::Bool,
        "false",
        "Provider/<ID>/Poll does not exist until the server Adds it",
    ),
    plain(
        "strict_poll_schedule",
        SettingKind::Bool,
        "false",
        "also refuse a poll schedule whose three Number values are 0",
    ),
    plain(
        "poll_all_zero",
        SettingKind::OneOf(&["refuse", "accept"]),
        "refuse",
        "what the Replace completing an all-zero poll schedule gets: 500, or stored as sent",
    ),
    plain(
        "push_endpoint",
        SettingKind::Url,
        "none (Push/Status 4)",
        "base of the fake WNS channel: ChannelURI is <push_endpoint>/<DevId>/<ProviderID>",
    ),
    plain("push_channel_uri", SettingKind::Url, "none", "a fixed Push/ChannelURI instead of push_endpoint's"),
    plain("push_status", number(0, 8, ""), "computed", "forces Push/Status (1 to 8 are failures)"),
    plain(
        "enrollment_type",
        SettingKind::OneOf(&["Device", "Full"]),
        "the enrollment's",
        "Provider/<ID>/EnrollmentType when the enrollment stored none",
    ),
    plain("aad_joined", SettingKind::Bool, "false", "Unenroll Exec is refused with 405, as on Entra-joined devices"),
    // EnterpriseAppManagement (csp::enterprise_app).
    plain("entapp_queue_secs", SECONDS, "5", "time in 1 QUEUED before the download starts"),
    plain("entapp_download_secs", SECONDS, "20", "least time in 2 DOWNLOADING"),
    plain("entapp_downloaded_secs", SECONDS, "5", "time in 3 DOWNLOADED"),
    plain("entapp_install_secs", SECONDS, "30", "time in 4 INSTALLING"),
    plain("entapp_fetch_watchdog_secs", SECONDS, "600", "no fetch outcome by then: fetch again"),
    plain("entapp_retention_secs", SECONDS, "604800", "how long a finished Download node (and its 418) lasts"),
    plain("entapp_require_confirmation", SettingKind::Bool, "false", "installs start in 0 CONFIRM"),
    plain("entapp_confirm_secs", SECONDS, "60", "when the simulated user confirms"),
    plain(
        "entapp_retry",
        SettingKind::Bool,
        "false",
        "the IME retry model: 3 retries at 5 minutes, then every 24 hours",
    ),
    plain(
        "entapp_enterprise_status",
        number(0, 3, ""),
        "stored, 0",
        "overrides EnterpriseID/Status (1, 2, 3 make installs fail)",
    ),
    BehaviourKey {
        name: "entapp_publisher",
        kind: SettingKind::Text,
        form: KeyForm::Both,
        default: "the URL's host",
        doc: "Publisher of installed apps (of one app with :<ProductID>)",
    },
    BehaviourKey {
        name: "entapp_size",
        kind: BYTES,
        form: KeyForm::PerPackage,
        default: "unchecked",
        doc: "expected package size; a mismatch ends in 7 DOWNLOAD_FAILED",
    },
    BehaviourKey {
        name: "entapp_sha256",
        kind: SettingKind::Sha256,
        form: KeyForm::PerPackage,
        default: "unchecked",
        doc: "expected package SHA-256; a mismatch ends in 7 DOWNLOAD_FAILED",
    },
    BehaviourKey {
        name: "entapp_rejected",
        kind: SettingKind::Bool,
        form: KeyForm::PerPackage,
        default: "false",
        doc: "the package downloads, then ends in 6 FAILED",
    },
    // EnterpriseDesktopAppManagement MSI installs (csp::desktop_app).
    plain("msi_queue_ms", MILLIS, "10000", "time in 10 before the download starts"),
    plain("msi_download_ms", MILLIS, "120000", "least time in 20 (a slower real download takes longer)"),
    plain("msi_downloaded_ms", MILLIS, "10000", "time in 40 before msiexec starts"),
    plain("msi_install_ms", MILLIS, "180000", "how long msiexec runs (past the job's TimeOut: a timeout)"),
    plain("msi_fetch_watchdog_ms", MILLIS, "600000", "no download outcome by then: download again"),
    BehaviourKey {
        name: "msi_exit_code",
        kind: number(0, 4_294_967_295, ""),
        form: KeyForm::PerPackage,
        default: "0",
        doc: "msiexec's exit code for one MSI (1603 fatal error, 3010 success with reboot required)",
    },
    BehaviourKey {
        name: "msi_name",
        kind: SettingKind::Text,
        form: KeyForm::PerPackage,
        default: "the package's file name",
        doc: "Name of one MSI once installed",
    },
    BehaviourKey {
        name: "msi_publisher",
        kind: SettingKind::Text,
        form: KeyForm::Both,
        default: "the ContentURL's host",
        doc: "Publisher of installed MSIs (of one MSI with :<ProductID>)",
    },
];

impl SettingKind {
    /// What a value of this kind looks like, for messages and docs.
    pub fn expected(self) -> String {
        match self {
            SettingKind::Bool => "true or false".into(),
            SettingKind::Number { min, max, unit } => {
                let of = if unit.is_empty() { String::new() } else { format!(" of {unit}") };
                if max == ANY_U64 {
                    format!("a whole number{of}, {min} or more")
                } else {
                    format!("a whole number{of} from {min} to {max}")
                }
            }
            SettingKind::Text => "text".into(),
            SettingKind::OneOf(words) => {
                let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
                match quoted.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                    _ => quoted.join(""),
                }
            }
            SettingKind::TimeZone => {
                "an IANA time zone name such as \"Europe/Paris\", \"America/New_York\" or \"UTC\"".into()
            }
            SettingKind::Cron => {
                "a cron line: 5 fields, minute first (\"0 2 * * *\"), or 6-7 fields, seconds first (\"0 0 2 * * *\")"
                    .into()
            }
            SettingKind::TimeOfDay => "a local time as \"HH:MM\" (\"02:00\")".into(),
            SettingKind::Url => "an http or https URL (\"http://127.0.0.1:8181/wns\")".into(),
            SettingKind::HeaderName => "an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)".into(),
            SettingKind::Sha256 => "64 hex digits (a SHA-256)".into(),
        }
    }

    /// Checks a value as its readers will see it (trimmed text). `Err` carries the reason the
    /// parser gave, when there is more to say than [`SettingKind::expected`].
    pub fn check(self, value: &str) -> Result<(), Option<String>> {
        let v = value.trim();
        let ok = match self {
            SettingKind::Bool => matches!(v.to_ascii_lowercase().as_str(), "true" | "false" | "1" | "0"),
            SettingKind::Number { min, max, .. } => v.parse::<i128>().is_ok_and(|n| (min..=max).contains(&n)),
            SettingKind::Text => true,
            SettingKind::OneOf(words) => words.contains(&v),
            SettingKind::TimeZone => Zone::named(v).is_ok(),
            SettingKind::Cron => {
                // The very parser the scheduler uses, so that what passes here also runs.
                return Nightly::with_zone(v, Zone::Fixed(Utc.fix())).map(|_| ()).map_err(|e| match e {
                    // The cron crate repeats the line with a caret under the fault; its last line
                    // says what is wrong.
                    crate::schedule::NightlyError::BadCron { reason, .. } => {
                        reason.lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_string)
                    }
                    other => Some(other.to_string()),
                });
            }
            SettingKind::TimeOfDay => NaiveTime::parse_from_str(v, "%H:%M").is_ok(),
            SettingKind::Url => {
                return match url::Url::parse(v) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
                    Ok(u) => Err(Some(format!("scheme {:?}", u.scheme()))),
                    Err(e) => Err(Some(e.to_string())),
                };
            }
            SettingKind::HeaderName => !v.is_empty() && v.bytes().all(is_tchar),
            SettingKind::Sha256 => v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()),
        };
        if ok { Ok(()) } else { Err(None) }
    }
}

/// RFC 9110 §5.6.2 `tchar`: what a header name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `[behaviour]` keys as a user writes them, for "known keys" lists.
fn behaviour_key_forms() -> Vec<String> {
    let mut out = Vec::new();
    for k in BEHAVIOUR_KEYS {
        if k.form != KeyForm::PerPackage {
            out.push(k.name.to_string());
        }
        if k.form != KeyForm::Plain {
            out.push(format!("{}:<ProductID>", k.name));
        }
    }
    out
}

impl Template {
    /// The defaults every device starts from: a Windows 11 laptop for `win10`, a Surface-class
    /// tablet for `win81` (values shaped like Microsoft's DevDetail CSP page and real devices).
    pub fn builtin(profile: Profile) -> Template {
        let text = match profile {
            Profile::Win10 => BUILTIN_WIN10,
            Profile::Win81 => BUILTIN_WIN81,
        };
        // The built-in texts are checked by a test; an error here is a programming error.
        Template::parse(text, "built-in").unwrap_or_default()
    }

    /// Parses and checks a template. `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Template, TemplateError> {
        let error = |(line, column): (usize, usize), message: String| TemplateError {
            origin: origin.to_string(),
            line,
            column,
            message,
        };
        let (doc, places) = parse_table(text).map_err(|e| error((e.line, e.column), e.message))?;
        let mut problems = Vec::new();
        let template = read(&doc, &mut problems);
        // The first fault in the file, as a reader going down the file meets them (the table
        // itself iterates in key order).
        let first = problems
            .into_iter()
            .map(|p| {
                let (line, column) = places.find(&p.path, p.part);
                ((line, column + p.shift), p.message)
            })
            .min_by_key(|(at, _)| *at);
        match first {
            Some((at, message)) => Err(error(at, message)),
            None => Ok(template),
        }
    }

    /// The values device `id` has: every pattern of `[devinfo]`, `[devdetail]` and `[nodes]`
    /// expanded ([`crate::device::vary`]) and every list of `[nodes]` choices reduced to the one
    /// the device picks. A plain function of the template and the DeviceID: the same id always
    /// gives the same values.
    pub fn for_device(&self, id: &crate::device::DeviceId) -> Template {
        use crate::device::vary::expand;
        let mut t = self.clone();
        for v in t.devinfo.values_mut().chain(t.devdetail.values_mut()) {
            *v = expand(v, id.as_str()).into_owned();
        }
        for (uri, values) in t.nodes.iter_mut() {
            let picked = pick(id, uri, values).to_string();
            *values = vec![expand(&picked, id.as_str()).into_owned()];
        }
        t
    }

    /// `self` with the values of `over` laid on top.
    pub fn overlay(mut self, over: &Template) -> Template {
        if over.profile.is_some() {
            self.profile = over.profile;
        }
        self.devinfo.extend(over.devinfo.clone());
        self.devdetail.extend(over.devdetail.clone());
        self.behaviour.0.extend(over.behaviour.0.clone());
        self.nodes.extend(over.nodes.clone());
        for uri in &over.unsupported {
            if !self.unsupported.contains(uri) {
                self.unsupported.push(uri.clone());
            }
        }
        for app in &over.apps {
            self.apps.retain(|a| {
                !(a.enterprise_id == app.enterprise_id && a.product_id.eq_ignore_ascii_case(&app.product_id))
            });
            self.apps.push(app.clone());
        }
        self
    }
}

/// The `[nodes]` choice device `id` takes for `uri`: by a digest of the two, so the same device
/// always picks the same one.
pub fn pick<'a>(id: &crate::device::DeviceId, uri: &str, values: &'a [String]) -> &'a str {
    use sha2::Digest as _;
    if values.len() < 2 {
        return values.first().map_or("", String::as_str);
    }
    let digest = sha2::Sha256::digest(format!("{id}|{uri}").as_bytes());
    let at = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8])) as usize % values.len();
    &values[at]
}

/// One fault: the path of the key or value at fault and what is wrong.
struct Problem {
    path: Vec<Seg>,
    part: Part,
    message: String,
    /// Characters from the value's start to the fault inside it (a pattern in a string).
    shift: usize,
}

impl Problem {
    fn key(path: Vec<Seg>, message: String) -> Problem {
        Problem { path, part: Part::Key, message, shift: 0 }
    }

    fn value(path: Vec<Seg>, message: String) -> Problem {
        Problem { path, part: Part::Value, message, shift: 0 }
    }

    /// A pattern fault of a string value: the place of the pattern's `{` (after the quote).
    fn pattern(path: Vec<Seg>, what: &str, e: crate::device::vary::PatternError) -> Problem {
        Problem { path, part: Part::Value, message: format!("{what}: {}", e.message), shift: e.offset + 1 }
    }
}

fn path(segs: &[&str]) -> Vec<Seg> {
    segs.iter().map(|s| Seg::from(*s)).collect()
}

/// The top-level keys, for "known keys" lists.
const TOP_KEYS: &str = "profile, [devinfo], [devdetail], [behaviour], [[apps]], [wmi], [nodes], unsupported";

/// Reads every table of the document; faults go to `problems`, good values into the template.
fn read(doc: &toml::Table, problems: &mut Vec<Problem>) -> Template {
    let mut t = Template::default();
    for (key, value) in doc {
        let here = path(&[key]);
        match (key.as_str(), value) {
            ("profile", _) => match value.as_str().map(str::trim) {
                Some("win10") => t.profile = Some(Profile::Win10),
                Some("win81") => t.profile = Some(Profile::Win81),
                _ => problems.push(Problem::value(
                    here,
                    format!("`profile`: expected \"win10\" or \"win81\", found {}", found(value)),
                )),
            },
            ("devinfo", toml::Value::Table(tab)) => {
                for (segs, v) in leaves(tab, here) {
                    if let Some(text) = node_value("devinfo", DevInfo.schema(), &segs, v, problems) {
                        t.devinfo.insert(segs[1..].iter().map(seg_text).collect::<Vec<_>>().join("/"), text);
                    }
                }
            }
            ("devdetail", toml::Value::Table(tab)) => {
                for (segs, v) in leaves(tab, here) {
                    if let Some(text) = node_value("devdetail", DevDetail.schema(), &segs, v, problems) {
                        t.devdetail.insert(segs[1..].iter().map(seg_text).collect::<Vec<_>>().join("/"), text);
                    }
                }
            }
            ("behaviour", toml::Value::Table(tab)) => {
                for (k, v) in tab {
                    if let Some(text) = behaviour_value(k, v, problems) {
                        t.behaviour.0.insert(k.clone(), text);
                    }
                }
            }
            ("apps", toml::Value::Array(entries)) => read_apps(entries, &mut t.apps, problems),
            ("wmi", toml::Value::Table(tab)) => read_wmi(tab, &mut t.behaviour, problems),
            ("nodes", toml::Value::Table(tab)) => read_nodes(tab, &mut t.nodes, problems),
            ("unsupported", toml::Value::Array(items)) => read_unsupported(items, &mut t.unsupported, problems),
            ("unsupported", _) => problems.push(Problem::value(
                here,
                format!("`unsupported`: expected a list of LocURIs, found {}", found(value)),
            )),
            ("devinfo" | "devdetail" | "behaviour" | "wmi" | "nodes", _) => problems
                .push(Problem::value(here, format!("`{key}`: expected a table ([{key}]), found {}", found(value)))),
            ("apps", _) => problems.push(Problem::value(
                here,
                format!("`apps`: expected an array of tables ([[apps]]), found {}", found(value)),
            )),
            (other, _) => problems.push(Problem::key(
                here,
                format!(
                    "unknown key `{other}` at the top level{}; known keys: {TOP_KEYS}",
                    suggest(other, TOP_KEY_NAMES)
                ),
            )),
        }
    }
    t
}

const TOP_KEY_NAMES: &[&str] = &["profile", "devinfo", "devdetail", "behaviour", "apps", "wmi", "nodes", "unsupported"];

/// ` (did you mean `x`?)` when a known key is one or two edits away.
pub(crate) fn suggest<S: AsRef<str>>(key: &str, known: impl IntoIterator<Item = S>) -> String {
    // The distance costs the product of the lengths; no known key is anywhere near this long.
    if key.len() > 64 {
        return String::new();
    }
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(key, k.as_ref()), k))
        .filter(|(d, k)| *d <= 2 && *d < k.as_ref().len().max(key.len()) / 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!(" (did you mean `{}`?)", k.as_ref()))
        .unwrap_or_default()
}

/// How a value reads in a message: text quoted, numbers as written, else its type.
pub(crate) fn found(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// The text of a scalar, as the settings and the tree keep it; `None` for arrays and tables.
/// The node paths of the built-in CSP table, as (scope, segments) with `<...>` for dynamic
/// names: what a `[nodes]` LocURI must match.
fn known_node_paths() -> &'static [(crate::tree::Scope, Vec<String>)] {
    static PATHS: std::sync::OnceLock<Vec<(crate::tree::Scope, Vec<String>)>> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| {
        // The DDF facts and the page facts of the CSP behaviour files (the Update CSP has no DDF).
        crate::csp::ddf_csp::facts()
            .iter()
            .filter(|f| f.format != crate::tree::Format::Node)
            .filter_map(|f| crate::tree::NodeUri::parse(&f.path).ok())
            .map(|u| (u.scope, u.segments))
            .collect()
    })
}

/// `[nodes]`: `"./Vendor/MSFT/DeviceStatus/SecureBootState" = 1`, or a list of choices. The
/// LocURI must name a leaf of a CSP of the built-in table (Microsoft's DDF files), a dynamic
/// segment taking any name (`NetworkIdentifiers/001122334455/IPAddressV4`).
fn read_nodes(tab: &toml::Table, out: &mut BTreeMap<String, Vec<String>>, problems: &mut Vec<Problem>) {
    for (uri, v) in tab {
        let here = path(&["nodes", uri]);
        let parsed = crate::tree::NodeUri::parse(uri).ok().filter(|_| uri.starts_with("./"));
        let Some(parsed) = parsed else {
            problems.push(Problem::key(
                here,
                format!("`{uri}` in [nodes]: expected an absolute LocURI such as \"./Vendor/MSFT/DeviceStatus/SecureBootState\""),
            ));
            continue;
        };
        if !is_known_leaf(&parsed) {
            problems.push(Problem::key(
                here,
                format!(
                    "`{uri}` in [nodes]: no CSP leaf has this path (`mdmsim ddf show PATH` lists the nodes of a CSP)"
                ),
            ));
            continue;
        }
        let values: Option<Vec<String>> = match v {
            toml::Value::Array(items) if !items.is_empty() => items.iter().map(scalar_text).collect(),
            toml::Value::Array(_) => None,
            other => scalar_text(other).map(|t| vec![t]),
        };
        match values {
            Some(values) => {
                let mut bad = false;
                for (i, text) in values.iter().enumerate() {
                    if let Err(e) = crate::device::vary::check(text) {
                        let mut at = here.clone();
                        if matches!(v, toml::Value::Array(_)) {
                            at.push(Seg::Index(i));
                        }
                        problems.push(Problem::pattern(at, &format!("`{uri}` in [nodes]"), e));
                        bad = true;
                        break;
                    }
                }
                if !bad {
                    out.insert(uri.clone(), values);
                }
            }
            None => problems.push(Problem::value(
                here,
                format!(
                    "`{uri}` in [nodes]: expected a value or a non-empty list of values to pick from, found {}",
                    found(v)
                ),
            )),
        }
    }
}

/// True when a LocURI names a leaf of a CSP of the built-in table (Microsoft's DDF files, and
/// the page facts of the CSPs without one), a dynamic segment taking any name: what a `[nodes]`
/// key must be.
pub fn is_known_leaf(uri: &crate::tree::NodeUri) -> bool {
    known_node_paths().iter().any(|(scope, segs)| {
        *scope == uri.scope
            && segs.len() == uri.segments.len()
            && segs.iter().zip(&uri.segments).all(|(k, s)| k.starts_with('<') || k == s)
    })
}

/// The top-level `unsupported` list: absolute LocURIs, each once.
fn read_unsupported(items: &[toml::Value], out: &mut Vec<String>, problems: &mut Vec<Problem>) {
    for (i, item) in items.iter().enumerate() {
        let at = vec![Seg::from("unsupported"), Seg::Index(i)];
        let uri = item.as_str().map(str::trim).unwrap_or_default();
        if crate::tree::NodeUri::parse(uri).is_err() || !uri.starts_with("./") {
            problems.push(Problem::value(
                at,
                format!(
                    "`unsupported` #{}: expected an absolute LocURI such as \"./Vendor/MSFT/DeviceStatus/TPM\", found {}",
                    i + 1,
                    found(item)
                ),
            ));
        } else if !out.iter().any(|u| u == uri) {
            out.push(uri.to_string());
        }
    }
}

fn scalar_text(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => return None,
    })
}

fn seg_text(seg: &Seg) -> String {
    match seg {
        Seg::Key(k) => k.clone(),
        Seg::Index(i) => i.to_string(),
    }
}

/// Checks one `[behaviour]` entry; gives the text to keep.
fn behaviour_value(key: &str, value: &toml::Value, problems: &mut Vec<Problem>) -> Option<String> {
    let here = path(&["behaviour", key]);
    let (name, product) = match key.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (key, None),
    };
    let Some(spec) = BEHAVIOUR_KEYS.iter().find(|k| k.name == name) else {
        let forms = behaviour_key_forms();
        problems.push(Problem::key(
            here,
            format!("unknown key `{key}` in [behaviour]{}; known keys: {}", suggest(name, &forms), forms.join(", ")),
        ));
        return None;
    };
    let form_fault = match (spec.form, product) {
        (KeyForm::Plain, Some(_)) => {
            Some(format!("`{key}` in [behaviour]: `{name}` is one value for the device; write `{name}` without `:`"))
        }
        (KeyForm::PerPackage, None) => {
            Some(format!("`{key}` in [behaviour]: name the package, as \"{name}:{{<ProductID>}}\""))
        }
        (_, Some(p)) if p.trim().is_empty() => {
            Some(format!("`{key}` in [behaviour]: the ProductID after ':' is empty"))
        }
        _ => None,
    };
    if let Some(message) = form_fault {
        problems.push(Problem::key(here, message));
        return None;
    }
    let checked = match scalar_text(value) {
        Some(text) => spec.kind.check(&text).map(|()| text),
        None => Err(None),
    };
    match checked {
        Ok(text) => Some(text),
        Err(reason) => {
            let why = reason.map(|r| format!(" ({})", r.trim())).unwrap_or_default();
            problems.push(Problem::value(
                here,
                format!("`{key}` in [behaviour]: expected {}, found {}{why}", spec.kind.expected(), found(value)),
            ));
            None
        }
    }
}

/// The scalar entries of a `[devinfo]`/`[devdetail]` table with their paths (nested tables and
/// `/` in keys both make node paths).
fn leaves(tab: &toml::Table, prefix: Vec<Seg>) -> Vec<(Vec<Seg>, &toml::Value)> {
    let mut out = Vec::new();
    for (k, v) in tab {
        let mut p = prefix.clone();
        p.push(Seg::from(k.as_str()));
        match v {
            toml::Value::Table(t) => out.extend(leaves(t, p)),
            _ => out.push((p, v)),
        }
    }
    out
}

/// Checks one `[devinfo]`/`[devdetail]` value against the node table: the key must name a leaf
/// and the value must fit its format. Gives the text to keep.
fn node_value(
    table: &str,
    root: &'static NodeSpec,
    segs: &[Seg],
    value: &toml::Value,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match checked_node_value(table, root, segs, value) {
        Ok(text) => Some(text),
        Err(p) => {
            problems.push(p);
            None
        }
    }
}

/// [`node_value`]'s checks; `Err` is the fault.
fn checked_node_value(
    table: &str,
    root: &'static NodeSpec,
    segs: &[Seg],
    value: &toml::Value,
) -> Result<String, Problem> {
    let node: String = segs[1..].iter().map(seg_text).collect::<Vec<_>>().join("/");
    let problem = |part, message| Problem { path: segs.to_vec(), part, message, shift: 0 };
    if table == "devinfo" && node == "DevId" {
        return Err(problem(Part::Key, "`DevId` in [devinfo] is the DeviceID: use --id or --seed instead".to_string()));
    }
    let mut spec = root;
    for seg in node.split('/') {
        spec = match spec.child(seg) {
            Some(c) if !c.is_placeholder() => c,
            _ => {
                let known = node_leaves(root, table);
                return Err(problem(
                    Part::Key,
                    format!(
                        "unknown key `{node}` in [{table}]{}; known keys ({} nodes): {}",
                        suggest(&node, &known),
                        root.name,
                        known.join(", ")
                    ),
                ));
            }
        };
    }
    if spec.is_interior() {
        return Err(problem(Part::Key, format!("`{node}` in [{table}] is an interior node, not a value")));
    }
    let Some(text) = scalar_text(value) else {
        return Err(problem(
            Part::Value,
            format!("`{node}` in [{table}]: expected a {} value, found {}", spec.format, found(value)),
        ));
    };
    let shape = crate::device::vary::check(&text)
        .map_err(|e| Problem::pattern(segs.to_vec(), &format!("`{node}` in [{table}]"), e))?;
    let expected = match spec.format {
        Format::Int if shape.varied && !shape.integer => {
            Some("a whole number (format int): only {int:A..B} and {digits:N} patterns vary it")
        }
        Format::Int if !shape.varied && text.trim().parse::<i64>().is_err() => Some("a whole number (format int)"),
        Format::Bool if !matches!(text.as_str(), "true" | "false") => Some("true or false (format bool)"),
        _ => None,
    };
    match expected {
        Some(want) => {
            Err(problem(Part::Value, format!("`{node}` in [{table}]: expected {want}, found {}", found(value))))
        }
        None => Ok(text),
    }
}

/// The leaf paths of a node table a template may set.
fn node_leaves(root: &'static NodeSpec, table: &str) -> Vec<String> {
    fn walk(spec: &'static NodeSpec, prefix: &str, out: &mut Vec<String>) {
        for c in spec.children.iter().filter(|c| !c.is_placeholder()) {
            let p = if prefix.is_empty() { c.name.to_string() } else { format!("{prefix}/{}", c.name) };
            if c.is_interior() {
                walk(c, &p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.retain(|p| !(table == "devinfo" && p == "DevId"));
    out
}

/// Reads the `[[apps]]` entries.
fn read_apps(entries: &[toml::Value], apps: &mut Vec<TemplateApp>, problems: &mut Vec<Problem>) {
    for (i, entry) in entries.iter().enumerate() {
        let app = match parse_app(entry, i) {
            Ok(app) => app,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        if apps
            .iter()
            .any(|a| a.enterprise_id == app.enterprise_id && a.product_id.eq_ignore_ascii_case(&app.product_id))
        {
            problems.push(Problem::value(
                vec![Seg::from("apps"), Seg::Index(i), Seg::from("product_id")],
                format!(
                    "[[apps]] #{}: product_id {} is listed twice for enterprise {}",
                    i + 1,
                    app.product_id,
                    app.enterprise_id
                ),
            ));
            continue;
        }
        apps.push(app);
    }
}

/// Parses one `[[apps]]` entry (`i` counts from 0; messages count from 1).
fn parse_app(entry: &toml::Value, i: usize) -> Result<TemplateApp, Problem> {
    let at = format!("[[apps]] #{}", i + 1);
    let entry_path = vec![Seg::from("apps"), Seg::Index(i)];
    let key_path = |k: &str| {
        let mut p = entry_path.clone();
        p.push(Seg::from(k));
        p
    };
    let toml::Value::Table(tab) = entry else {
        return Err(Problem::value(entry_path, format!("{at}: expected a table, found {}", found(entry))));
    };
    const KEYS: [&str; 6] = ["enterprise_id", "product_id", "version", "title", "publisher", "install_date"];
    if let Some(k) = tab.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(Problem::key(
            key_path(k),
            format!("unknown key `{k}` in {at}{}; known keys: {}", suggest(k, KEYS), KEYS.join(", ")),
        ));
    }
    let text = |key: &str| -> Result<String, Problem> {
        let v = match tab.get(key) {
            None => return Err(Problem::value(entry_path.clone(), format!("{at}: {key} is missing"))),
            Some(toml::Value::String(s)) => s.trim().to_string(),
            // An EnterpriseID like 4000000001 is naturally written as a number.
            Some(toml::Value::Integer(i)) if key == "enterprise_id" => i.to_string(),
            Some(other) => {
                return Err(Problem::value(
                    key_path(key),
                    format!("{at}: {key} must be a string, found {}", found(other)),
                ));
            }
        };
        if v.is_empty() { Err(Problem::value(key_path(key), format!("{at}: {key} is empty"))) } else { Ok(v) }
    };
    let enterprise_id = text("enterprise_id")?;
    if enterprise_id.contains('/') {
        return Err(Problem::value(
            key_path("enterprise_id"),
            format!("{at}: enterprise_id {enterprise_id:?} is not a node name (it has a '/')"),
        ));
    }
    let raw = text("product_id")?;
    let product_id = percent_decode_str(&raw).decode_utf8_lossy().trim().to_string();
    if !is_braced_guid(&product_id) {
        return Err(Problem::value(
            key_path("product_id"),
            format!(
                "{at}: product_id {raw:?} is not a GUID in braces ({{B0322158-C3C2-44EB-8A31-D14A9FEC450E}} or %7B...%7D)"
            ),
        ));
    }
    let install_date = match tab.get("install_date") {
        None => None,
        Some(v) => {
            let s = match v {
                toml::Value::Datetime(d) => d.to_string(),
                toml::Value::String(s) => s.clone(),
                _ => {
                    return Err(Problem::value(
                        key_path("install_date"),
                        format!("{at}: install_date must be a date-time, found {}", found(v)),
                    ));
                }
            };
            let t = DateTime::parse_from_rfc3339(s.trim()).map_err(|e| {
                Problem::value(
                    key_path("install_date"),
                    format!(
                        "{at}: install_date {s:?} is not an RFC 3339 date-time with offset (2025-10-30T21:09:52Z): {e}"
                    ),
                )
            })?;
            Some(t.with_timezone(&Utc))
        }
    };
    Ok(TemplateApp {
        enterprise_id,
        product_id,
        version: text("version")?,
        title: text("title")?,
        publisher: text("publisher")?,
        install_date,
    })
}

/// `{8-4-4-4-12 hex digits}` (EnterpriseAppManagement: "a single enterprise application product
/// ID in GUID format", sent with the braces escaped).
fn is_braced_guid(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else { return false };
    let groups: Vec<&str> = inner.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Reads `[wmi]` through the WMI bridge's own checker, one key at a time so that a refusal has
/// the place of its key, then as a whole (for checks across keys).
fn read_wmi(tab: &toml::Table, settings: &mut Settings, problems: &mut Vec<Problem>) {
    use crate::csp::wmi_bridge::template_settings;
    let before = problems.len();
    for (key, value) in tab {
        let one = toml::Table::from_iter([(key.clone(), value.clone())]);
        if let Err(message) = template_settings(&one) {
            problems.push(wmi_problem(key, message));
        }
    }
    match template_settings(tab) {
        Ok(pairs) => settings.0.extend(pairs),
        Err(message) if problems.len() == before => problems.push(Problem::key(path(&["wmi"]), message)),
        Err(_) => {}
    }
}

/// Where a `[wmi]` refusal points: the key of an unknown key, the `[[wmi.disks]]` entry it
/// numbers, else the value.
fn wmi_problem(key: &str, message: String) -> Problem {
    if message.starts_with("[wmi] unexpected key") {
        return Problem::key(path(&["wmi", key]), message);
    }
    let entry = message
        .strip_prefix("[[wmi.disks]] #")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1);
    match entry {
        Some(n) => Problem::value(vec![Seg::from("wmi"), Seg::from("disks"), Seg::Index(n - 1)], message),
        None => Problem::value(path(&["wmi", key]), message),
    }
}

/// Defaults of the `win10` profile: a Windows 11 Enterprise laptop.
const BUILTIN_WIN10: &str = r#"
[devinfo]
Man = "Dell Inc."
Mod = "Latitude 7440"
Lang = "en-US"

[devdetail]
DevTyp = "Latitude 7440"
OEM = "Dell Inc."
FwV = "1.14.1"
HwV = "1.14.1"
SwV = "10.0.22631.4460"

[devdetail.Ext.Microsoft]
DeviceName = "LAPTOP-4F7H2K9Q"
DNSComputerName = "LAPTOP-4F7H2K9Q"
# Windows 11 still reports the registry ProductName here (a known issue on Microsoft Learn).
OSPlatform = "Windows 10 Enterprise"
OSEdition = 4
ProcessorArchitecture = 9
ProcessorType = 8664
TotalRAM = 16384
TotalStorage = 486188
SMBIOSSerialNumber = "7HX2Q93"
Resolution = "1920x1200"
"#;

/// Defaults of the `win81` profile: a Windows 8.1 Pro tablet.
const BUILTIN_WIN81: &str = r#"
profile = "win81"

[devinfo]
Man = "Microsoft Corporation"
Mod = "Surface Pro 3"
Lang = "en-US"

[devdetail]
DevTyp = "Surface Pro 3"
OEM = "Microsoft Corporation"
FwV = "3.11.1150.0"
HwV = "1.0"
SwV = "6.3.9600.17031"

[devdetail.Ext.Microsoft]
DeviceName = "SURFACE-8H3K1"
DNSComputerName = "SURFACE-8H3K1"
OSPlatform = "Windows 8.1 Pro"
OSEdition = 48
ProcessorArchitecture = 9
ProcessorType = 8664
TotalRAM = 8192
TotalStorage = 238475
SMBIOSSerialNumber = "034713443553"
Resolution = "2160x1440"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_parse() {
        for p in [Profile::Win10, Profile::Win81] {
            let text = if p == Profile::Win10 { BUILTIN_WIN10 } else { BUILTIN_WIN81 };
            let t = Template::parse(text, "built-in").unwrap();
            assert!(t.devinfo.contains_key("Man"));
            assert!(t.devdetail.contains_key("Ext/Microsoft/SMBIOSSerialNumber"));
        }
        assert_eq!(Template::builtin(Profile::Win81).profile, Some(Profile::Win81));
    }

    #[test]
    fn shipped_templates_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/templates");
        for (file, profile) in [
            ("win11-laptop.toml", Profile::Win10),
            ("win11-23h2.toml", Profile::Win10),
            ("win10-desktop.toml", Profile::Win10),
            ("win81-tablet.toml", Profile::Win81),
            ("fleetdm-win10-19043.toml", Profile::Win10),
            ("ms-mdm-example.toml", Profile::Win10),
        ] {
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            let t = Template::parse(&text, file).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.profile, Some(profile), "{file}");
            assert!(t.devdetail.contains_key("SwV"), "{file}");
        }
        let desktop = std::fs::read_to_string(format!("{dir}/win10-desktop.toml")).unwrap();
        let t = Template::parse(&desktop, "win10-desktop.toml").unwrap();
        assert_eq!(
            t.apps.iter().map(|a| a.title.as_str()).collect::<Vec<_>>(),
            ["Contoso Company Hub", "Contoso Expenses"]
        );
        assert_eq!(t.behaviour.str("entapp_install_secs"), Some("30"));
    }

    #[test]
    fn nested_and_slash_keys_are_the_same_path_and_overlay_wins() {
        let a =
            Template::parse("[devdetail.Ext.Microsoft]\nDeviceName = \"A\"\n[behaviour]\nslow_exec_ms = 5", "a.toml")
                .unwrap();
        let b = Template::parse("[devdetail]\n\"Ext/Microsoft/DeviceName\" = \"B\"", "b.toml").unwrap();
        assert_eq!(a.devdetail.get("Ext/Microsoft/DeviceName").map(String::as_str), Some("A"));
        assert_eq!(a.behaviour.str("slow_exec_ms"), Some("5"));
        let c = a.overlay(&b);
        assert_eq!(c.devdetail.get("Ext/Microsoft/DeviceName").map(String::as_str), Some("B"));
    }

    /// The message of the refusal of `text`, with its place.
    fn refusal(text: &str) -> String {
        Template::parse(text, "t.toml").map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_the_place_the_table_and_the_key() {
        assert_eq!(
            refusal("[devdetail]\nNope = \"x\""),
            format!(
                "t.toml:2:1: unknown key `Nope` in [devdetail]; known keys (DevDetail nodes): {}",
                node_leaves(DevDetail.schema(), "devdetail").join(", ")
            )
        );
        assert_eq!(
            refusal("[devdetail.Ext.Microsoft]\nTotalRAM = \"lots\""),
            "t.toml:2:12: `Ext/Microsoft/TotalRAM` in [devdetail]: expected a whole number (format int), found \"lots\""
        );
        assert_eq!(refusal("[devdetail]\nLrgObj = \"yes\"").split(": ").nth(1), Some("`LrgObj` in [devdetail]"));
        assert!(refusal("[devdetail]\n\"Ext/Microsoft\" = \"x\"").contains("interior node"));
        assert!(refusal("[devdetail]\nDevTyp = [1]").ends_with("expected a chr value, found an array"));
        assert!(
            refusal("[devinfo]\nDevId = \"x\"")
                .starts_with("t.toml:2:1: `DevId` in [devinfo] is the DeviceID: use --id")
        );
        assert!(refusal("\n[devinfo\n").starts_with("t.toml:2:"), "{}", refusal("\n[devinfo\n"));
        assert!(refusal("a = 1\na = 2").starts_with("t.toml:2:1: "), "{}", refusal("a = 1\na = 2"));
        assert_eq!(
            refusal("colour = 1"),
            "t.toml:1:1: unknown key `colour` at the top level; known keys: profile, [devinfo], [devdetail], [behaviour], [[apps]], [wmi], [nodes], unsupported"
        );
        assert!(refusal("behavior = 1").contains("(did you mean `behaviour`?)"));
        assert_eq!(
            refusal("profile = \"win12\""),
            "t.toml:1:11: `profile`: expected \"win10\" or \"win81\", found \"win12\""
        );
        assert_eq!(refusal("profile = 10"), "t.toml:1:11: `profile`: expected \"win10\" or \"win81\", found 10");
        assert_eq!(refusal("behaviour = 3"), "t.toml:1:13: `behaviour`: expected a table ([behaviour]), found 3");
    }

    #[test]
    fn the_first_fault_in_the_file_is_reported() {
        // Tables iterate in key order (apps before behaviour before devinfo); the file order wins.
        let text = "[devinfo]\nMan = 1.5\nNope = 1\n[behaviour]\njittr = true\n[[apps]]\ncolour = 1\n";
        assert!(refusal(text).starts_with("t.toml:3:1: unknown key `Nope` in [devinfo]"), "{}", refusal(text));
    }

    #[test]
    fn every_behaviour_key_of_the_bug_reports_is_checked_with_its_place_and_accepted_values() {
        for (line, want) in [
            (
                "timezone = \"Mars/Olympus\"",
                "t.toml:3:12: `timezone` in [behaviour]: expected an IANA time zone name such as \"Europe/Paris\"",
            ),
            (
                "nightly_cron = \"99 99 * * *\"",
                "t.toml:3:16: `nightly_cron` in [behaviour]: expected a cron line: 5 fields, minute first (\"0 2 * * *\")",
            ),
            (
                "utc_offset_minutes = \"sixty\"",
                "t.toml:3:22: `utc_offset_minutes` in [behaviour]: expected a whole number of minutes east of UTC from -1439 to 1439, found \"sixty\"",
            ),
            ("utc_offset_minutes = 1440", "from -1439 to 1439, found 1440"),
            ("jitter = \"maybe\"", "t.toml:3:10: `jitter` in [behaviour]: expected true or false, found \"maybe\""),
            (
                "jittr = false",
                "t.toml:3:1: unknown key `jittr` in [behaviour] (did you mean `jitter`?); known keys: timezone, ",
            ),
            ("maintenance_time = \"2am\"", "expected a local time as \"HH:MM\" (\"02:00\"), found \"2am\""),
            (
                "slow_command_ms = -1",
                "`slow_command_ms` in [behaviour]: expected a whole number of milliseconds, 0 or more, found -1",
            ),
            ("keepalive_after_ms = 1.5", "found 1.5"),
            (
                "max_messages = 0",
                "`max_messages` in [behaviour]: expected a whole number of messages from 1 to 4294967295",
            ),
            ("max_message_bytes = \"big\"", "expected a whole number of bytes, 1 or more, found \"big\""),
            ("max_value_bytes = 0", "expected a whole number of bytes, 1 or more, found 0"),
            ("max_object_bytes = true", "expected a whole number of bytes, 1 or more, found true"),
            ("signature_header = \"Bad Header\"", "expected an HTTP header name"),
            ("conn_retry_freq = 0", "expected a whole number of attempts from 1 to 10, found 0"),
            ("poll_all_zero = \"sometimes\"", "expected \"refuse\" or \"accept\", found \"sometimes\""),
            (
                "push_endpoint = \"ftp://x/wns\"",
                "expected an http or https URL (\"http://127.0.0.1:8181/wns\"), found \"ftp://x/wns\" (scheme \"ftp\")",
            ),
            ("push_channel_uri = \"not a url\"", "`push_channel_uri` in [behaviour]: expected an http or https URL"),
            ("push_status = 9", "expected a whole number from 0 to 8, found 9"),
            ("enrollment_type = \"device\"", "expected \"Device\" or \"Full\", found \"device\""),
            ("aad_joined = [true]", "`aad_joined` in [behaviour]: expected true or false, found an array"),
            ("jitter.x = 1", "`jitter` in [behaviour]: expected true or false, found a table"),
            ("\"jitter:{B316008A-141D-4A79-810F-8B764C4CFDFB}\" = true", "write `jitter` without `:`"),
        ] {
            let text = format!("profile = \"win10\"\n[behaviour]\n{line}\n");
            let e = refusal(&text);
            assert!(e.contains(want), "{line}: {e:?} does not contain {want:?}");
        }
        // The cron parser's own reason comes along.
        let e = refusal("[behaviour]\nnightly_cron = \"99 99 * * *\"");
        assert!(e.contains(", found \"99 99 * * *\" (Minutes must be less than 59"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn every_behaviour_key_takes_a_good_value() {
        let good = |k: &BehaviourKey| -> &str {
            match k.kind {
                SettingKind::Bool => "true",
                SettingKind::Number { min, .. } if min > 0 => "1",
                SettingKind::Number { .. } => "0",
                SettingKind::Text => "Contoso",
                SettingKind::OneOf(words) => words[0],
                SettingKind::TimeZone => "America/New_York",
                SettingKind::Cron => "30 1 * * 1-5",
                SettingKind::TimeOfDay => "03:15",
                SettingKind::Url => "https://wns.example/push",
                SettingKind::HeaderName => "MS-Signature",
                SettingKind::Sha256 => "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            }
        };
        let mut text = String::from("[behaviour]\n");
        for k in BEHAVIOUR_KEYS {
            let key = match k.form {
                KeyForm::PerPackage => format!("\"{}:{{B316008A-141D-4A79-810F-8B764C4CFDFB}}\"", k.name),
                _ => k.name.to_string(),
            };
            text.push_str(&format!("{key} = {:?}\n", good(k)));
        }
        let t = Template::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(t.behaviour.0.len(), BEHAVIOUR_KEYS.len());
        // What the template accepts, the scheduler takes.
        crate::schedule::nightly::nightly_from_settings(&t.behaviour).expect("the nightly window");
        // Keys are unique and documented.
        for (i, k) in BEHAVIOUR_KEYS.iter().enumerate() {
            assert!(!k.doc.is_empty() && !k.default.is_empty(), "{}", k.name);
            assert!(BEHAVIOUR_KEYS[..i].iter().all(|o| o.name != k.name), "{} twice", k.name);
        }
    }

    #[test]
    fn wmi_refusals_point_at_their_key_or_disk() {
        let e = refusal("[wmi]\ndomain = \"X\"\nmemory_speed = \"fast\"\n");
        assert!(e.starts_with("t.toml:3:16: [wmi] memory_speed must be a whole number"), "{e}");
        let e = refusal("[wmi]\ncolour = 1\n");
        assert!(e.starts_with("t.toml:2:1: [wmi] unexpected key \"colour\""), "{e}");
        let e = refusal("[[wmi.disks]]\ndevice_id = \"C:\"\n[[wmi.disks]]\ndevice_id = \"CC\"\n");
        assert!(e.starts_with("t.toml:3:") && e.contains("#2"), "{e}");
        let e = refusal("[wmi]\ndisks = 3\n");
        assert!(e.starts_with("t.toml:2:9: "), "{e}");
    }

    const APP: &str = r#"
[[apps]]
enterprise_id = 4000000001
product_id = "%7Bb0322158-c3c2-44eb-8a31-d14a9fec450e%7D"
version = "1.0.0.0"
title = "Sample1"
publisher = "Contoso"
install_date = 2012-10-30T21:09:52Z
"#;

    #[test]
    fn apps_are_parsed_with_decoded_product_ids() {
        let t = Template::parse(APP, "a.toml").unwrap();
        assert_eq!(t.apps.len(), 1);
        let a = &t.apps[0];
        assert_eq!(a.enterprise_id, "4000000001");
        assert_eq!(a.product_id, "{b0322158-c3c2-44eb-8a31-d14a9fec450e}");
        assert_eq!((a.version.as_str(), a.title.as_str(), a.publisher.as_str()), ("1.0.0.0", "Sample1", "Contoso"));
        assert_eq!(a.install_date.map(|d| d.to_rfc3339()), Some("2012-10-30T21:09:52+00:00".to_string()));
        let no_date = APP.replace("install_date = 2012-10-30T21:09:52Z", "");
        assert_eq!(Template::parse(&no_date, "a.toml").unwrap().apps[0].install_date, None);
        // An overlay replaces the app of the same enterprise and product, keeps the others.
        let newer = Template::parse(&APP.replace("1.0.0.0", "2.0.0.0"), "b.toml").unwrap();
        let both = t.clone().overlay(&newer);
        assert_eq!(both.apps.len(), 1);
        assert_eq!(both.apps[0].version, "2.0.0.0");
    }

    #[test]
    fn app_errors_name_the_file_the_entry_and_the_key() {
        let cases = [
            (APP.replace("version = \"1.0.0.0\"", ""), "t.toml:2:1: [[apps]] #1: version is missing"),
            (
                APP.replace("title = \"Sample1\"", "title = 3"),
                "t.toml:6:9: [[apps]] #1: title must be a string, found 3",
            ),
            (APP.replace("%7Bb0322158", "%7Bnope"), "t.toml:4:14: [[apps]] #1: product_id \"%7Bnope"),
            (
                APP.replace("publisher = ", "vendor = \"x\"\npublisher = "),
                "t.toml:7:1: unknown key `vendor` in [[apps]] #1",
            ),
            (APP.replace("2012-10-30T21:09:52Z", "\"last tuesday\""), "install_date \"last tuesday\""),
            (format!("{APP}{APP}"), "t.toml:12:14: [[apps]] #2: product_id {b0322158"),
            ("apps = 3".to_string(), "t.toml:1:8: `apps`: expected an array of tables ([[apps]]), found 3"),
        ];
        for (text, want) in cases {
            let e = Template::parse(&text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} does not contain {want:?}");
        }
    }

    #[test]
    fn entapp_behaviour_keys_are_checked() {
        let ok = "[behaviour]\nentapp_queue_secs = 0\nentapp_retry = true\nentapp_publisher = \"C\"\n\
                  \"entapp_sha256:{B316008A-141D-4A79-810F-8B764C4CFDFB}\" = \"%s\"\n\
                  \"entapp_size:b316008a-141d-4a79-810f-8b764c4cfdfb\" = 12\n\
                  \"entapp_rejected:{B316008A-141D-4A79-810F-8B764C4CFDFB}\" = false";
        let ok = ok.replace("%s", &"ab".repeat(32));
        let t = Template::parse(&ok, "t.toml").unwrap();
        assert_eq!(t.behaviour.str("entapp_size:b316008a-141d-4a79-810f-8b764c4cfdfb"), Some("12"));
        for (text, want) in [
            (
                "[behaviour]\nentapp_queue_sec = 1",
                "t.toml:2:1: unknown key `entapp_queue_sec` in [behaviour] (did you mean `entapp_queue_secs`?)",
            ),
            (
                "[behaviour]\nentapp_install_secs = \"soon\"",
                "`entapp_install_secs` in [behaviour]: expected a whole number of seconds, 0 or more, found \"soon\"",
            ),
            ("[behaviour]\nentapp_retry = \"maybe\"", "`entapp_retry` in [behaviour]: expected true or false"),
            ("[behaviour]\nentapp_sha256 = \"ab\"", "t.toml:2:1: `entapp_sha256` in [behaviour]: name the package"),
            ("[behaviour]\n\"entapp_sha256:{X}\" = \"ab\"", "expected 64 hex digits (a SHA-256), found \"ab\""),
            ("[behaviour]\n\"entapp_size: \" = 1", "the ProductID after ':' is empty"),
            ("[behaviour]\nentapp_enterprise_status = 7", "expected a whole number from 0 to 3, found 7"),
        ] {
            let e = Template::parse(text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} does not contain {want:?}");
        }
    }

    #[test]
    fn nodes_take_values_or_choices_for_leaves_the_csp_table_knows() {
        let t = Template::parse(
            "[nodes]\n\"./Vendor/MSFT/DeviceStatus/SecureBootState\" = 1\n\
             \"./Vendor/MSFT/DeviceStatus/NetworkIdentifiers/001122334455/IPAddressV4\" = [\"10.0.0.2\", \"10.0.0.3\"]\n",
            "n.toml",
        )
        .unwrap();
        assert_eq!(t.nodes["./Vendor/MSFT/DeviceStatus/SecureBootState"], ["1"]);
        assert_eq!(t.nodes.len(), 2);
        let e = Template::parse("[nodes]\n\"./Vendor/MSFT/DeviceStatus/NoSuchNode\" = 1\n", "n.toml").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("no CSP leaf"), "{e}");
        let e = Template::parse("[nodes]\n\"DeviceStatus\" = 1\n", "n.toml").unwrap_err();
        assert!(e.message.contains("absolute LocURI"), "{e}");
        let e = Template::parse("[nodes]\n\"./Vendor/MSFT/DeviceStatus/OS/Mode\" = []\n", "n.toml").unwrap_err();
        assert!(e.message.contains("non-empty list"), "{e}");
    }
}
