//! Compatibility mode of the reference server: switches that make it answer the way real-world
//! Windows MDM servers do instead of the way our device expects, so that a device test against
//! it proves something. A preset (`standard`, `fleet`, `minimal`) picks a set of behaviours;
//! each switch of the `[compat]` table overrides its preset.
//!
//! Owns the names, the presets and resolving them into one [`Compat`] value. It does not apply
//! anything: `enroll.rs`, `sts.rs` and `mgmt.rs` read the resolved switches. The behaviours and
//! where they come from are listed in `docs/server-compat.md`.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A named set of behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The reference server as it always was: what MS-MDE2 and MS-MDM describe.
    #[default]
    Standard,
    /// As fleetdm/fleet answers (its Windows MDM service code).
    Fleet,
    /// A minimal home-made server: numbered CmdIDs, a nil MS-XCEP policy response.
    Minimal,
}

impl Preset {
    /// Every preset, in the order `--help` lists them.
    pub const ALL: [Preset; 3] = [Preset::Standard, Preset::Fleet, Preset::Minimal];

    /// The preset's name as the CLI and the config file spell it.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Standard => "standard",
            Preset::Fleet => "fleet",
            Preset::Minimal => "minimal",
        }
    }

    /// The behaviours of the preset, before any switch overrides them.
    pub fn behaviour(self) -> Compat {
        let standard = Compat {
            aauthdata_nonce: false,
            final_: true,
            session_end: SessionEnd::Empty,
            cmd_ids: CmdIds::Uuid,
            alert_statuses: true,
            policy_response: PolicyResponse::Full,
            soap_fault_http_200: false,
            federated: false,
            auth_page: AuthPage::LoginForm,
            empty_reply_to_package1: false,
            separate_tls_ca: false,
            client_final: true,
            throttle_without_retry_after: false,
            auth_http_401: false,
        };
        match self {
            Preset::Standard => standard,
            Preset::Fleet => Compat {
                aauthdata_nonce: true,
                final_: false,
                session_end: SessionEnd::StatusOnly,
                alert_statuses: false,
                soap_fault_http_200: true,
                separate_tls_ca: true,
                client_final: false,
                ..standard
            },
            Preset::Minimal => {
                Compat { cmd_ids: CmdIds::Numeric, policy_response: PolicyResponse::NilUndeclared, ..standard }
            }
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
            format!("unknown compatibility preset {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// How the server answers the device's message once it has nothing more to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionEnd {
    /// HTTP 200 with an empty body.
    Empty,
    /// A SyncML message holding only our SyncHdr Status (and the Statuses the device's commands
    /// are owed).
    StatusOnly,
}

/// How the server numbers the CmdIDs of its commands and Statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CmdIds {
    /// A random UUID each.
    Uuid,
    /// 1, 2, 3... from the start of each message.
    Numeric,
}

/// The MS-XCEP GetPoliciesResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyResponse {
    /// A full policy: 2048-bit keys, SHA-256.
    Full,
    /// `<response xsi:nil="true"/>`, the `xsi` prefix declared.
    Nil,
    /// `<response xsi:nil="true"/>` with the `xsi` prefix never declared.
    NilUndeclared,
}

/// What the Federated authentication page does with the web view's GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthPage {
    /// A login form; POSTing a configured user's credentials gives the page that posts
    /// `wresult` to `appru`.
    LoginForm,
    /// No login: the page that posts `wresult` to `appru` straight away, built by a script (the
    /// shape of Fleet's page), for the `login_hint` user.
    AutoPost,
    /// No page: a 302 to `appru?wresult=<token>` for the `login_hint` user.
    Redirect,
}

/// The `[compat]` table: a preset and the switches that override it (absent = the preset's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatConfig {
    #[serde(default)]
    pub preset: Preset,
    /// Provisioning document `APPAUTH` blocks with `AAUTHDATA` = the literal word `nonce`.
    pub aauthdata_nonce: Option<bool>,
    /// `<Final/>` at the end of the server's messages.
    #[serde(rename = "final")]
    pub final_: Option<bool>,
    /// The answer once nothing is left to send.
    pub session_end: Option<SessionEnd>,
    pub cmd_ids: Option<CmdIds>,
    /// Statuses for the device's Alerts (1201, 1224, 1226...).
    pub alert_statuses: Option<bool>,
    pub policy_response: Option<PolicyResponse>,
    /// Enrollment SOAP faults sent with HTTP 200 instead of 500.
    pub soap_fault_http_200: Option<bool>,
    /// Discovery answers `AuthPolicy` Federated for any e-mail-shaped address.
    pub federated: Option<bool>,
    pub auth_page: Option<AuthPage>,
    /// Package 1 answered with an empty HTTP 200 (a server that did nothing).
    pub empty_reply_to_package1: Option<bool>,
    /// The TLS certificate comes from a CA of its own (as a public web CA signs a real
    /// server's), not from the enrollment CA the provisioning document installs as a root.
    pub separate_tls_ca: Option<bool>,
    /// A device message without `<Final/>` is taken as an unfinished client package and
    /// answered with Alert 1222 (OMA DM); off, the server ignores the device's Final, as
    /// Fleet's service does.
    pub client_final: Option<bool>,
    /// The throttling faults (`429`, `503`) answer without a `Retry-After` header, as a
    /// server behind an overloaded proxy or load balancer may.
    pub throttle_without_retry_after: Option<bool>,
    /// A message whose credentials fail is answered with a bare HTTP 401: no SyncML, so no
    /// SyncHdr Status and no Chal with a NextNonce (the nonce stays as it was).
    pub auth_http_401: Option<bool>,
}

impl CompatConfig {
    /// The preset with this table's switches applied.
    pub fn resolve(&self) -> Compat {
        let p = self.preset.behaviour();
        Compat {
            aauthdata_nonce: self.aauthdata_nonce.unwrap_or(p.aauthdata_nonce),
            final_: self.final_.unwrap_or(p.final_),
            session_end: self.session_end.unwrap_or(p.session_end),
            cmd_ids: self.cmd_ids.unwrap_or(p.cmd_ids),
            alert_statuses: self.alert_statuses.unwrap_or(p.alert_statuses),
            policy_response: self.policy_response.unwrap_or(p.policy_response),
            soap_fault_http_200: self.soap_fault_http_200.unwrap_or(p.soap_fault_http_200),
            federated: self.federated.unwrap_or(p.federated),
            auth_page: self.auth_page.unwrap_or(p.auth_page),
            empty_reply_to_package1: self.empty_reply_to_package1.unwrap_or(p.empty_reply_to_package1),
            separate_tls_ca: self.separate_tls_ca.unwrap_or(p.separate_tls_ca),
            client_final: self.client_final.unwrap_or(p.client_final),
            throttle_without_retry_after: self.throttle_without_retry_after.unwrap_or(p.throttle_without_retry_after),
            auth_http_401: self.auth_http_401.unwrap_or(p.auth_http_401),
        }
    }
}

/// The behaviours in force, every switch decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compat {
    pub aauthdata_nonce: bool,
    pub final_: bool,
    pub session_end: SessionEnd,
    pub cmd_ids: CmdIds,
    pub alert_statuses: bool,
    pub policy_response: PolicyResponse,
    pub soap_fault_http_200: bool,
    pub federated: bool,
    pub auth_page: AuthPage,
    pub empty_reply_to_package1: bool,
    pub separate_tls_ca: bool,
    pub client_final: bool,
    pub throttle_without_retry_after: bool,
    pub auth_http_401: bool,
}

impl Default for Compat {
    fn default() -> Self {
        Preset::Standard.behaviour()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_override_their_preset() {
        let table: CompatConfig = toml::from_str("preset = 'fleet'\nfinal = true\ncmd_ids = 'numeric'\n").unwrap();
        let c = table.resolve();
        assert!(c.final_ && c.aauthdata_nonce && !c.alert_statuses);
        assert_eq!((c.cmd_ids, c.session_end), (CmdIds::Numeric, SessionEnd::StatusOnly));
        assert_eq!(CompatConfig::default().resolve(), Compat::default());
        assert!(toml::from_str::<CompatConfig>("finale = true\n").is_err(), "unknown switches are refused");
    }

    #[test]
    fn presets_parse_by_name_and_differ() {
        assert_eq!("Fleet".parse::<Preset>(), Ok(Preset::Fleet));
        let e = "intune".parse::<Preset>().unwrap_err();
        assert!(e.contains("standard, fleet, minimal"), "{e}");
        let minimal = Preset::Minimal.behaviour();
        assert_eq!((minimal.cmd_ids, minimal.policy_response), (CmdIds::Numeric, PolicyResponse::NilUndeclared));
        assert!(minimal.final_ && !minimal.federated && !Preset::Fleet.behaviour().empty_reply_to_package1);
    }
}
