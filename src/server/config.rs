//! The reference server's configuration (TOML): users, enrollment options, the management
//! policies it applies (DMClient poll schedule and push PFN, app installs, configuration
//! profiles, MSI installs, inventory reads, unenroll), how it trusts management requests, its
//! compatibility mode (`[compat]`) and the faults it injects (`[faults]`).
//!
//! Owns parsing and checking the file (a profile `file` is read and checked by `profiles.rs`
//! when the config is loaded). It does not apply anything: `mgmt.rs`, `profiles.rs` and
//! `msi.rs` turn the policies into commands, `enroll.rs` uses the users and the poll values.
//! The shipped defaults are `fixtures/server/default.toml`, compiled in so that `mdmsim server`
//! works without a file; `fixtures/server/demo.toml` is the demo's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::compat::{Compat, CompatConfig};
use super::faults::FaultConfig;

/// The compiled-in default configuration (`fixtures/server/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../fixtures/server/default.toml");

/// The compiled-in configuration of `mdmsim demo` (`fixtures/server/demo.toml`): the default
/// plus one configuration profile and one MSI install.
pub const DEMO_TOML: &str = include_str!("../../fixtures/server/demo.toml");

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// w7 PROVIDER-ID and the `<ID>` of `DMClient/Provider/<ID>`.
    #[serde(default = "default_provider")]
    pub provider_id: String,
    /// w7 NAME.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    #[serde(default)]
    pub enrollment: Enrollment,
    /// OnPremise users.
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub management: Management,
    #[serde(default)]
    pub dmclient: DmClient,
    /// EnterpriseAppManagement installs.
    #[serde(default)]
    pub apps: Vec<App>,
    /// Configuration profiles (`[[profiles]]`): settings delivered as one Atomic each.
    #[serde(default)]
    pub profiles: Vec<Profile>,
    /// MSI installs through EnterpriseDesktopAppManagement (`[[msi]]`).
    #[serde(default)]
    pub msi: Vec<Msi>,
    /// How closely to imitate a real-world server (`[compat]`, see `compat.rs`).
    #[serde(default)]
    pub compat: CompatConfig,
    /// Faults to inject into management answers (`[faults]`, see `faults.rs`); none by default.
    #[serde(default)]
    pub faults: FaultConfig,
    /// Where the config file was read from (relative app files resolve against its folder).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// Enrollment options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    #[serde(default = "default_validity")]
    pub cert_validity_days: u32,
    /// Accept a DeviceEnrollmentUserToken / JWT BinarySecurityToken.
    #[serde(default)]
    pub token_auth: bool,
    /// Accepted token texts; empty means any non-empty token.
    #[serde(default)]
    pub tokens: Vec<String>,
}

impl Default for Enrollment {
    fn default() -> Self {
        Self { cert_validity_days: default_validity(), token_auth: false, tokens: Vec::new() }
    }
}

/// An OnPremise user (UsernameToken).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
}

/// How a management request is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Client certificate from our CA whose CN contains the DeviceID, else MD5 Cred.
    #[default]
    CertOrMd5,
    /// Always an MD5 Cred.
    Md5,
    /// Trust the SyncHdr Source.
    None,
}

/// Management policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Management {
    #[serde(default)]
    pub auth: AuthMode,
    #[serde(default = "default_enterprise")]
    pub enterprise_id: String,
    #[serde(default = "default_polls")]
    pub max_status_polls: u32,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub unenroll: bool,
    /// Create `Download/<ProductID>/DownloadInstall` in the install Atomic's Add, as the
    /// EnterpriseAppManagement CSP page's prose and example do (dropped automatically if the device answers 405 for that item).
    #[serde(default = "yes")]
    pub add_download_install_node: bool,
    #[serde(default)]
    pub inventory: Vec<String>,
    #[serde(default)]
    pub inventory_every_session: bool,
    /// How many times a profile whose verification found other values is sent again before
    /// it is marked failed (Fleet's `MaxProfileRetries` is 1).
    #[serde(default = "default_profile_retries")]
    pub profile_retries: u32,
    /// Seed of the management server's nonces and UUID CmdIDs (none: from the operating
    /// system), so that a whole run can be replayed.
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Default for Management {
    fn default() -> Self {
        Self {
            auth: AuthMode::default(),
            enterprise_id: default_enterprise(),
            max_status_polls: default_polls(),
            max_attempts: default_attempts(),
            unenroll: false,
            add_download_install_node: true,
            inventory: Vec::new(),
            inventory_every_session: false,
            profile_retries: default_profile_retries(),
            seed: None,
        }
    }
}

/// DMClient settings to apply.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DmClient {
    /// `Push/PFN`.
    pub push_pfn: Option<String>,
    /// A fixed bearer token for WNS pushes (no token request is made); without it the server
    /// asks the token endpoint for one with the client credentials below.
    pub wns_token: Option<String>,
    /// The WNS OAuth token endpoint (`https://login.live.com/accesstoken.srf` for Microsoft's
    /// WNS); default: `/accesstoken.srf` on the host of the device's ChannelURI, where mdmsim's
    /// WNS emulation serves it.
    pub wns_token_url: Option<String>,
    /// The client credentials of the token request (the package SID `ms-app://...` and its
    /// secret); mdmsim's WNS emulation takes any non-empty pair unless it was given one.
    pub wns_client_id: Option<String>,
    pub wns_client_secret: Option<String>,
    /// `Poll/<Name>` = value, node names as in the DMClient CSP.
    #[serde(default)]
    pub poll: BTreeMap<String, PollValue>,
}

/// A DMClient Poll value: an integer or a boolean node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PollValue {
    Int(i64),
    Bool(bool),
}

impl PollValue {
    /// The SyncML Meta Format of the node (`int` or `bool`).
    pub fn format(&self) -> &'static str {
        match self {
            PollValue::Int(_) => "int",
            PollValue::Bool(_) => "bool",
        }
    }

    /// The provisioning-document `datatype`.
    pub fn datatype(&self) -> &'static str {
        match self {
            PollValue::Int(_) => "integer",
            PollValue::Bool(_) => "boolean",
        }
    }

    /// The value as node text.
    pub fn text(&self) -> String {
        match self {
            PollValue::Int(n) => n.to_string(),
            PollValue::Bool(b) => b.to_string(),
        }
    }
}

/// An app to install through EnterpriseAppManagement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Name (also the package path `/packages/<name>`).
    pub name: String,
    /// The ProductID GUID, with braces.
    pub product_id: String,
    pub version: String,
    /// A package file; relative to the config file's folder.
    pub file: Option<PathBuf>,
    /// Size of the generated package when there is no file.
    #[serde(default = "default_size")]
    pub size: usize,
    /// Installed only when assigned to a device (`POST /admin/devices/<DeviceID>/apps/<name>`,
    /// which also pushes to the device), not on every device's first Maintenance session.
    #[serde(default)]
    pub on_request: bool,
}

/// A configuration profile: settings the server delivers together, as one `<Atomic>` of
/// `<Replace>` commands, and verifies later by reading each one back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The profile's name (unique; the key of its records).
    pub name: String,
    /// A profile file in Fleet's format: a SyncML fragment of `<Replace>` and `<Add>` commands
    /// (relative to the config file's folder). Either this or `settings`.
    pub file: Option<PathBuf>,
    /// The settings, in order.
    #[serde(default)]
    pub settings: Vec<ProfileSetting>,
    /// Devices that report an older OS (enrollment `OSVersion` or `./DevDetail/SwV`) do not
    /// get the profile: "10.0" by default, as the Policy CSP came with Windows 10.
    pub min_os_version: Option<String>,
}

/// One setting of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSetting {
    /// The node, e.g. `./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera`.
    pub loc_uri: String,
    /// The SyncML Meta Format (`int`, `chr`, `bool`, `b64`, `xml`...); by default from `data`:
    /// `int` for a TOML integer, `bool` for a boolean, `chr` for a string.
    pub format: Option<String>,
    /// The value.
    pub data: SettingValue,
}

/// A setting's value as TOML gives it: `data = "0"`, `data = 0` or `data = false`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl SettingValue {
    /// The value as node text.
    pub fn text(&self) -> String {
        match self {
            SettingValue::Text(s) => s.clone(),
            SettingValue::Int(n) => n.to_string(),
            SettingValue::Bool(b) => b.to_string(),
        }
    }

    /// The Meta Format the value's TOML type implies.
    pub fn format(&self) -> &'static str {
        match self {
            SettingValue::Text(_) => "chr",
            SettingValue::Int(_) => "int",
            SettingValue::Bool(_) => "bool",
        }
    }
}

/// An MSI to install through `./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI`, the
/// way Fleet installs its agent: Add and Exec of `DownloadInstall` with an `MsiInstallJob`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Msi {
    /// Name (also the package path `/packages/<name>`, shared with `[[apps]]`).
    pub name: String,
    /// The MSI ProductCode, a `{GUID}` in braces.
    pub product_id: String,
    /// `Product Version` in the job.
    pub version: String,
    /// The MSI file; relative to the config file's folder.
    pub file: Option<PathBuf>,
    /// Size of the generated package when there is no file.
    #[serde(default = "default_size")]
    pub size: usize,
    /// `Enforcement/CommandLine`.
    #[serde(default = "default_command_line")]
    pub command_line: String,
    /// `Enforcement/TimeOut`, minutes.
    #[serde(default = "default_msi_timeout")]
    pub timeout_minutes: u32,
    /// `Enforcement/RetryCount`.
    #[serde(default = "default_msi_retries")]
    pub retry_count: u32,
    /// `Enforcement/RetryInterval`, minutes.
    #[serde(default = "default_msi_retry_interval")]
    pub retry_interval_minutes: u32,
    /// Devices that report an older OS do not get the install: "10.0.10586" by default
    /// (Windows 10 1511, where the EnterpriseDesktopAppManagement CSP page starts).
    pub min_os_version: Option<String>,
}

/// A configuration that cannot be used, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

impl Default for Config {
    fn default() -> Self {
        Config::parse(DEFAULT_TOML, "<built-in default.toml>").expect("the shipped default.toml is valid")
    }
}

impl Config {
    /// The demo's configuration (`fixtures/server/demo.toml`).
    pub fn demo() -> Config {
        Config::parse(DEMO_TOML, "<built-in demo.toml>").expect("the shipped demo.toml is valid")
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let mut config = Config::parse(&text, &file)?;
        config.base_dir = path.parent().map(Path::to_path_buf);
        // Profile files are read now, so that a bad one stops the server before it starts.
        super::profiles::build(&config).map_err(|e| ConfigError::Invalid { file, message: e.to_string() })?;
        Ok(config)
    }

    /// The compatibility switches in force (the `[compat]` preset and its overrides).
    pub fn compat(&self) -> Compat {
        self.compat.resolve()
    }

    /// Parses and checks config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { file: file.to_string(), message: e.to_string() })?;
        config.check().map_err(|message| ConfigError::Invalid { file: file.to_string(), message })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let safe = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._- ".contains(c));
        if !safe(&self.provider_id) {
            return Err(format!("provider_id {:?}: use letters, digits, '.', '_', '-' or spaces", self.provider_id));
        }
        for (i, app) in self.apps.iter().enumerate() {
            if !safe(&app.name) || app.name.contains(' ') {
                return Err(format!("apps[{i}].name {:?}: use letters, digits, '.', '_' or '-'", app.name));
            }
            if !is_guid(&app.product_id) {
                return Err(format!("apps[{i}].product_id {:?}: expected a {{GUID}} in braces", app.product_id));
            }
            if self.apps[..i].iter().any(|a| a.name == app.name) {
                return Err(format!("apps[{i}].name {:?} appears twice", app.name));
            }
        }
        for (i, msi) in self.msi.iter().enumerate() {
            if !safe(&msi.name) || msi.name.contains(' ') {
                return Err(format!("msi[{i}].name {:?}: use letters, digits, '.', '_' or '-'", msi.name));
            }
            if !is_guid(&msi.product_id) {
                return Err(format!("msi[{i}].product_id {:?}: expected a {{GUID}} in braces", msi.product_id));
            }
            if self.apps.iter().any(|a| a.name == msi.name) || self.msi[..i].iter().any(|m| m.name == msi.name) {
                return Err(format!(
                    "msi[{i}].name {:?} appears twice (apps and msi share /packages/<name>)",
                    msi.name
                ));
            }
            if let Some(v) = &msi.min_os_version
                && !is_version(v)
            {
                return Err(format!("msi[{i}].min_os_version {v:?}: expected numbers and dots, e.g. \"10.0.10586\""));
            }
        }
        for (i, p) in self.profiles.iter().enumerate() {
            let at = format!("profiles[{i}]");
            if p.name.trim().is_empty() {
                return Err(format!("{at}.name: empty"));
            }
            if self.profiles[..i].iter().any(|q| q.name == p.name) {
                return Err(format!("{at}.name {:?} appears twice", p.name));
            }
            match (&p.file, p.settings.is_empty()) {
                (Some(_), false) => return Err(format!("{at} {:?}: give either file or settings, not both", p.name)),
                (None, true) => return Err(format!("{at} {:?}: no settings (and no file)", p.name)),
                _ => {}
            }
            if let Some(v) = &p.min_os_version
                && !is_version(v)
            {
                return Err(format!("{at}.min_os_version {v:?}: expected numbers and dots, e.g. \"10.0\""));
            }
            for (j, s) in p.settings.iter().enumerate() {
                if !s.loc_uri.starts_with("./") {
                    return Err(format!("{at}.settings[{j}].loc_uri {:?}: a LocURI starts with \"./\"", s.loc_uri));
                }
                if let Some(f) = &s.format
                    && !FORMATS.contains(&f.as_str())
                {
                    return Err(format!(
                        "{at}.settings[{j}].format {f:?}: not a SyncML format; use one of {}",
                        FORMATS.join(", ")
                    ));
                }
                if p.settings[..j].iter().any(|o| o.loc_uri == s.loc_uri) {
                    return Err(format!("{at}.settings[{j}].loc_uri {:?} appears twice", s.loc_uri));
                }
            }
        }
        for name in self.dmclient.poll.keys() {
            if !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("dmclient.poll.{name}: not a DMClient Poll node name"));
            }
        }
        for uri in &self.management.inventory {
            if !uri.starts_with("./") {
                return Err(format!("management.inventory {uri:?}: a LocURI starts with \"./\""));
            }
        }
        Ok(())
    }
}

/// The Meta Formats of OMA DM 1.2 (Meta Information, Format) a setting may have.
pub const FORMATS: [&str; 11] = ["b64", "bin", "bool", "chr", "int", "node", "null", "xml", "date", "time", "float"];

/// A `{GUID}` in braces (the form the device's CSPs accept as a product ID).
fn is_guid(text: &str) -> bool {
    crate::csp::desktop_app::is_product_code(text)
}

/// A dotted version such as `10.0.10586`.
fn is_version(text: &str) -> bool {
    !text.is_empty() && text.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn default_provider() -> String {
    "mdmsim".into()
}
fn default_server_name() -> String {
    "mdmsim reference server".into()
}
fn default_validity() -> u32 {
    365
}
fn default_enterprise() -> String {
    "4000000001".into()
}
fn yes() -> bool {
    true
}
fn default_polls() -> u32 {
    20
}
fn default_attempts() -> u32 {
    3
}
fn default_size() -> usize {
    65536
}
fn default_profile_retries() -> u32 {
    1
}
fn default_command_line() -> String {
    "/quiet".into()
}
fn default_msi_timeout() -> u32 {
    10
}
fn default_msi_retries() -> u32 {
    3
}
fn default_msi_retry_interval() -> u32 {
    5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_parses_with_its_policies() {
        let c = Config::default();
        assert_eq!(c.provider_id, "mdmsim");
        assert_eq!(c.users[0].name, "demo@mdmsim.test");
        assert_eq!(c.dmclient.poll.get("NumberOfFirstRetries"), Some(&PollValue::Int(8)));
        assert_eq!(c.dmclient.poll.get("PollOnLogin"), Some(&PollValue::Bool(true)));
        assert_eq!(c.apps[0].product_id, "{B316008A-141D-4A79-810F-8B764C4CFDFB}");
        assert_eq!(c.management.auth, AuthMode::CertOrMd5);
    }

    #[test]
    fn every_shipped_server_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/server");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 2, "expected the shipped configs in {}", dir.display());
        let fleet = Config::load(&dir.join("fleet-like.toml")).unwrap();
        assert_eq!((fleet.provider_id.as_str(), fleet.management.auth), ("Fleet", AuthMode::CertOrMd5));
        assert!(fleet.apps.is_empty() && fleet.management.inventory_every_session);
    }

    #[test]
    fn the_demo_config_is_the_default_plus_a_profile_and_an_msi() {
        let (demo, default) = (Config::demo(), Config::default());
        assert_eq!(format!("{:?}", demo.users), format!("{:?}", default.users));
        assert_eq!(format!("{:?}", demo.dmclient), format!("{:?}", default.dmclient));
        assert_eq!(format!("{:?}", demo.apps), format!("{:?}", default.apps));
        assert_eq!(demo.management.inventory, default.management.inventory);
        assert_eq!(
            (demo.provider_id.as_str(), demo.management.auth),
            (default.provider_id.as_str(), default.management.auth)
        );
        assert!(default.profiles.is_empty() && default.msi.is_empty());
        assert_eq!(demo.profiles.len(), 1);
        assert!(demo.profiles[0].settings.len() >= 6);
        assert_eq!(demo.msi[0].product_id, "{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}");
        assert_eq!((demo.msi[0].command_line.as_str(), demo.msi[0].timeout_minutes), ("/quiet", 10));
        assert_eq!((demo.msi[0].retry_count, demo.msi[0].retry_interval_minutes), (3, 5));
    }

    #[test]
    fn profile_and_msi_mistakes_name_the_entry() {
        let err = |text: &str| Config::parse(text, "s.toml").unwrap_err().to_string();
        let profile =
            "[[profiles]]\nname = 'P'\n[[profiles.settings]]\nloc_uri = './Device/Vendor/MSFT/Policy/Config/A/B'\n";
        assert_eq!(
            err(&format!("{profile}data = 1\nformat = 'integer'\n")),
            "s.toml: profiles[0].settings[0].format \"integer\": not a SyncML format; use one of b64, bin, bool, chr, int, node, null, xml, date, time, float"
        );
        assert_eq!(
            err(&format!(
                "{profile}data = 1\n[[profiles.settings]]\nloc_uri = './Device/Vendor/MSFT/Policy/Config/A/B'\ndata = 2\n"
            )),
            "s.toml: profiles[0].settings[1].loc_uri \"./Device/Vendor/MSFT/Policy/Config/A/B\" appears twice"
        );
        assert_eq!(err("[[profiles]]\nname = 'P'\n"), "s.toml: profiles[0] \"P\": no settings (and no file)");
        assert!(err(&format!("{profile}data = 1\nvalue = 2\n")).contains("value"), "unknown keys are refused");
        let msi =
            "[[msi]]\nname = 'ContosoApp1'\nproduct_id = '{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}'\nversion = '1'\n";
        assert_eq!(
            err(&format!(
                "[[apps]]\nname = 'ContosoApp1'\nproduct_id = '{{B316008A-141D-4A79-810F-8B764C4CFDFB}}'\nversion = '1'\n{msi}"
            )),
            "s.toml: msi[0].name \"ContosoApp1\" appears twice (apps and msi share /packages/<name>)"
        );
        assert_eq!(
            err(&msi.replace("{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}", "A427C0AA")),
            "s.toml: msi[0].product_id \"A427C0AA\": expected a {GUID} in braces"
        );
        let c = Config::parse(&format!("{profile}data = 1\n"), "s.toml").unwrap();
        assert_eq!(
            (c.profiles[0].settings[0].data.text(), c.profiles[0].settings[0].data.format()),
            ("1".into(), "int")
        );
    }

    #[test]
    fn bad_config_names_file_and_field() {
        let e = Config::parse("[[apps]]\nname='a'\nproduct_id='x'\nversion='1'\n", "s.toml").unwrap_err();
        assert_eq!(e.to_string(), "s.toml: apps[0].product_id \"x\": expected a {GUID} in braces");
        let e = Config::parse("bogus = 1\n", "s.toml").unwrap_err();
        assert!(e.to_string().starts_with("s.toml: ") && e.to_string().contains("bogus"), "{e}");
    }
}
