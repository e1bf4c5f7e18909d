//! The reference server's configuration (TOML): users, enrollment options, the management
//! policies it applies (DMClient poll schedule and push PFN, app installs, inventory reads,
//! unenroll), how it trusts management requests, its compatibility mode (`[compat]`) and the
//! faults it injects (`[faults]`).
//!
//! Owns parsing and checking the file. It does not apply anything: `mgmt.rs` turns the policies
//! into commands, `enroll.rs` uses the users and the poll values. The shipped defaults are
//! `fixtures/server/default.toml`, compiled in so that `mdmsim server` works without a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::compat::{Compat, CompatConfig};
use super::faults::FaultConfig;

/// The compiled-in default configuration (`fixtures/server/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../fixtures/server/default.toml");

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
        }
    }
}

/// DMClient settings to apply.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DmClient {
    /// `Push/PFN`.
    pub push_pfn: Option<String>,
    /// Bearer token for WNS pushes; the fake WNS of a test accepts any.
    pub wns_token: Option<String>,
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
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let mut config = Config::parse(&text, &file)?;
        config.base_dir = path.parent().map(Path::to_path_buf);
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
            let guid = app.product_id.trim_start_matches('{').trim_end_matches('}');
            if !(app.product_id.starts_with('{') && app.product_id.ends_with('}'))
                || guid.len() != 36
                || !guid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            {
                return Err(format!("apps[{i}].product_id {:?}: expected a {{GUID}} in braces", app.product_id));
            }
            if self.apps[..i].iter().any(|a| a.name == app.name) {
                return Err(format!("apps[{i}].name {:?} appears twice", app.name));
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
    fn bad_config_names_file_and_field() {
        let e = Config::parse("[[apps]]\nname='a'\nproduct_id='x'\nversion='1'\n", "s.toml").unwrap_err();
        assert_eq!(e.to_string(), "s.toml: apps[0].product_id \"x\": expected a {GUID} in braces");
        let e = Config::parse("bogus = 1\n", "s.toml").unwrap_err();
        assert!(e.to_string().starts_with("s.toml: ") && e.to_string().contains("bogus"), "{e}");
    }
}
