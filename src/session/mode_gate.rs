//! The command gate of an operation mode: which server commands a device accepts in Machine
//! mode and in an interactive run, and the conformance findings a server earns by sending
//! others (the Windows 8.1 MDM operation modes post).
//!
//! Owns the rules as a pure function, [`judge`], that the session calls for every item of every
//! Add/Replace/Delete/Get/Exec (children of Atomic/Sequence are judged one by one; the
//! containers themselves are not). Does not own executing the command (the tree does that when
//! the verdict allows it) nor recording findings in the summary, JSON and transcript (the
//! session and runner do that with the [`Finding`] returned).
//!
//! # The Machine-mode allowed set
//!
//! The operation modes post: in Machine mode "the MDM Server MUST NOT send any other than" device inventory
//! commands, password reset and un-enrollment. Precisely, the allowed commands are:
//!
//! - **Inventory reads**: a `Get` (with or without a `?list=`/`?prop=` query) whose target is
//!   at or below one of [`INVENTORY_ROOTS`] in device scope (`./DevInfo`, `./DevDetail`,
//!   `./Vendor/MSFT/DeviceStatus`, `./Vendor/MSFT/DeviceManageability`,
//!   `./Vendor/MSFT/DMClient`, `./Vendor/MSFT/WindowsLicensing`, with or without `./Device/`),
//!   or below a WMI inventory class `./cimv2/Win32_*` (the Windows 8.1 inventory section reads
//!   Win32_OperatingSystem, Win32_Processor, Win32_Service, Win32_QuickFixEngineering, ...).
//!   DMClient reads are inventory because servers re-read the enrollment's identity and
//!   `Push/ChannelURI` every session (Microsoft's WNS pages); writes to it are not.
//! - **Password reset**: `Exec ./cimv2/MDM_Client/MDM_Client.DeviceClientID=<id>/Exec=ResetUserPassword`.
//! - **Unenrollment**: `Exec ./cimv2/MDM_Client/MDM_Client.DeviceClientID=<id>/Exec=SendUnenrollRequest`
//!   (`win81`), `Exec ./Vendor/MSFT/DMClient/Provider/<ID>/Unenroll` and the legacy
//!   `Exec ./Vendor/MSFT/DMClient/Unenroll` (`win10`).
//!
//! Anything else in a Machine-mode session is a finding. Two kinds cannot work at all without
//! the enrolled user's session to impersonate, so they fail with [`IMPERSONATION_FAILED`]
//! (500, "the client could not map the HRESULT", OMA DM RepPro §10 status codes) even without `--strict`:
//! user-scoped commands (`./User/...`) and the WNS configuration (`Add`/`Replace`/`Exec` of
//! `DMClient/Provider/<ID>/Push/PFN` on `win10`; anything but `Get` on
//! `./cimv2/MDM_WNSConfiguration/...`, e.g. `Exec=UpdateConfiguration`, on `win81`). With
//! `strict`, every command outside the allowed set is refused with 405 instead.
//!
//! # Interactive runs
//!
//! The operation modes post's "Manual operation": MDMAgent started from a command prompt cannot impersonate the
//! enrolled user, so tasks that need it fail: the WNS configuration and, by the same reason,
//! user-scoped commands fail with [`IMPERSONATION_FAILED`]. The server is not at fault (it
//! cannot know how the agent was started), so these failures carry no finding.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::schedule::Mode;
use crate::syncml::{Command, StatusCode};
use crate::tree::{NodeUri, Profile, Scope};

/// Device-scope roots (decoded segments) whose `Get`s count as device inventory in Machine mode.
pub const INVENTORY_ROOTS: &[&[&str]] = &[
    &["DevInfo"],
    &["DevDetail"],
    &["Vendor", "MSFT", "DeviceStatus"],
    &["Vendor", "MSFT", "DeviceManageability"],
    &["Vendor", "MSFT", "DMClient"],
    &["Vendor", "MSFT", "WindowsLicensing"],
];

/// The status of a command that needs the enrolled user's impersonation when none is possible.
pub const IMPERSONATION_FAILED: StatusCode = StatusCode::CommandFailed;

/// Which rule a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A command outside the Machine-mode allowed set.
    MachineModeCommand,
    /// A user-scoped command in Machine mode.
    MachineModeUserScope,
    /// The WNS configuration outside Maintenance mode.
    MachineModeWnsConfiguration,
}

impl Rule {
    /// The rule's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::MachineModeCommand => "machine-mode-command",
            Rule::MachineModeUserScope => "machine-mode-user-scope",
            Rule::MachineModeWnsConfiguration => "machine-mode-wns-configuration",
        }
    }
}

/// A conformance finding: the server sent something the operation modes post says it must not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule broken.
    pub what: Rule,
    /// The SyncML command (`Replace`, `Exec`, ...).
    pub command: String,
    /// The command's CmdID as the server sent it.
    pub cmd_id: String,
    /// The target LocURI as the server sent it.
    #[serde(rename = "loc_uri")]
    pub loc_uri: String,
    /// The mode of the session.
    pub mode: Mode,
    /// Why it is wrong, citing the operation modes post.
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (CmdID {}) {} in {} mode: {} [{}]",
            self.command,
            self.cmd_id,
            self.loc_uri,
            self.mode,
            self.reason,
            self.what.as_str()
        )
    }
}

/// What the device does with one command item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Execute it.
    Allow,
    /// Execute it, and record the finding.
    Finding(Finding),
    /// Do not execute it: answer `status`. `finding` is recorded when the server is at fault.
    Refuse { status: StatusCode, reason: String, finding: Option<Finding> },
}

impl Verdict {
    /// The finding to record, if any.
    pub fn finding(&self) -> Option<&Finding> {
        match self {
            Verdict::Allow => None,
            Verdict::Finding(f) => Some(f),
            Verdict::Refuse { finding, .. } => finding.as_ref(),
        }
    }
}

/// The session's side of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateContext {
    pub profile: Profile,
    pub mode: Mode,
    /// MDMAgent runs interactively (the operation modes post's "Manual operation").
    pub interactive: bool,
    /// `--strict`: refuse commands outside the Machine-mode set with 405 instead of executing.
    pub strict: bool,
}

/// One command item as the server sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateCmd<'a> {
    /// The element name: `Get`, `Add`, `Replace`, `Delete`, `Exec`.
    pub name: &'a str,
    pub cmd_id: &'a str,
    /// The item's target LocURI.
    pub target: &'a str,
    /// The item's data (unused by today's rules; kept so rules on Exec payloads can be added).
    pub data: Option<&'a str>,
}

impl<'a> GateCmd<'a> {
    /// The items of a server command, one [`GateCmd`] per Item of an Add, Replace, Delete, Get
    /// or Exec (an Item without Target gets an empty LocURI, which is outside every allowed
    /// set); none for other commands (judge the children of Atomic and Sequence one by one).
    pub fn items(cmd: &'a Command) -> Vec<GateCmd<'a>> {
        let (name, ic) = match cmd {
            Command::Add(c) => ("Add", c),
            Command::Replace(c) => ("Replace", c),
            Command::Delete(c) => ("Delete", c),
            Command::Get(c) => ("Get", c),
            Command::Exec(c) => ("Exec", c),
            _ => return Vec::new(),
        };
        ic.items
            .iter()
            .map(|it| GateCmd {
                name,
                cmd_id: &ic.cmd_id,
                target: it.target.as_deref().unwrap_or(""),
                data: it.data.as_deref(),
            })
            .collect()
    }
}

/// What a command is, as far as the mode rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Inventory,
    PasswordReset,
    Unenroll,
    UserScope,
    WnsConfiguration,
    Other,
}

/// The verdict of the mode rules on one command item (see the module docs for the rules).
pub fn judge(cx: &GateContext, cmd: &GateCmd<'_>) -> Verdict {
    let class = classify(cx.profile, cmd);
    if cx.interactive && matches!(class, Class::UserScope | Class::WnsConfiguration) {
        return Verdict::Refuse {
            status: IMPERSONATION_FAILED,
            reason: "needs the enrolled user's impersonation, which an interactive MDMAgent run cannot do \
                     (the Windows 8.1 operation modes post: manual operation)"
                .into(),
            finding: None,
        };
    }
    if cx.mode != Mode::Machine {
        return Verdict::Allow;
    }
    let (rule, reason) = match class {
        Class::Inventory | Class::PasswordReset | Class::Unenroll => return Verdict::Allow,
        Class::UserScope => (
            Rule::MachineModeUserScope,
            "user-scoped command in Machine mode: the enrolled user has no session to impersonate, so \
             Windows fails it; the Windows 8.1 operation modes post allows only device inventory, \
             password reset and unenrollment",
        ),
        Class::WnsConfiguration => (
            Rule::MachineModeWnsConfiguration,
            "WNS configuration in Machine mode: Windows fails it (it needs the enrolled user's session); \
             the Windows 8.1 operation modes post says it must only happen in Maintenance mode",
        ),
        Class::Other => (
            Rule::MachineModeCommand,
            "outside the Machine-mode set: Windows executes it, but the Windows 8.1 operation modes post \
             allows only device inventory, password reset and unenrollment when mode=Machine",
        ),
    };
    let finding = Finding {
        what: rule,
        command: cmd.name.to_string(),
        cmd_id: cmd.cmd_id.to_string(),
        loc_uri: cmd.target.to_string(),
        mode: cx.mode,
        reason: reason.to_string(),
    };
    if cx.strict {
        Verdict::Refuse {
            status: StatusCode::CommandNotAllowed,
            reason: "refused in Machine mode (--strict)".into(),
            finding: Some(finding),
        }
    } else if matches!(class, Class::UserScope | Class::WnsConfiguration) {
        Verdict::Refuse {
            status: IMPERSONATION_FAILED,
            reason: "needs the enrolled user's session, absent in Machine mode".into(),
            finding: Some(finding),
        }
    } else {
        Verdict::Finding(finding)
    }
}

fn classify(profile: Profile, cmd: &GateCmd<'_>) -> Class {
    // An unparsable LocURI is the tree's business (it answers 400); for the mode rules it is
    // simply not in the allowed set.
    let Ok(uri) = NodeUri::parse(cmd.target) else { return Class::Other };
    if uri.scope == Scope::User {
        return Class::UserScope;
    }
    let segs: Vec<&str> = uri.segments.iter().map(String::as_str).collect();
    let is_get = cmd.name.eq_ignore_ascii_case("Get");
    let is_exec = cmd.name.eq_ignore_ascii_case("Exec");
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);

    // Windows 8.1 WMI bridge: ./cimv2/<Class>/<Class>.<Key>=<value>/<Property or Exec=Method>.
    if segs.first().is_some_and(|s| eq(s, "cimv2")) {
        let class = segs.get(1).copied().unwrap_or("");
        let last = segs.last().copied().unwrap_or("");
        let instance_of_client =
            segs.get(2).and_then(|i| i.get(..11)).is_some_and(|p| p.eq_ignore_ascii_case("MDM_Client."));
        if eq(class, "MDM_Client") && is_exec && segs.len() == 4 && instance_of_client {
            if eq(last, "Exec=ResetUserPassword") {
                return Class::PasswordReset;
            }
            if eq(last, "Exec=SendUnenrollRequest") {
                return Class::Unenroll;
            }
        }
        if profile == Profile::Win81 && eq(class, "MDM_WNSConfiguration") && !is_get {
            return Class::WnsConfiguration;
        }
        if is_get && class.len() > 6 && class.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("Win32_")) {
            return Class::Inventory;
        }
        return Class::Other;
    }

    let dmclient = ["Vendor", "MSFT", "DMClient"];
    let under_dmclient = segs.len() >= 3 && segs[..3] == dmclient;
    if under_dmclient && is_exec {
        // Provider/<ID>/Unenroll, or the legacy DMClient/Unenroll.
        let rest = &segs[3..];
        if rest == ["Unenroll"] || (rest.len() == 3 && rest[0] == "Provider" && rest[2] == "Unenroll") {
            return Class::Unenroll;
        }
    }
    if profile == Profile::Win10
        && under_dmclient
        && !is_get
        && segs.len() >= 7
        && segs[3] == "Provider"
        && segs[5] == "Push"
        && segs[6] == "PFN"
    {
        return Class::WnsConfiguration;
    }
    if is_get && INVENTORY_ROOTS.iter().any(|root| segs.len() >= root.len() && segs[..root.len()] == **root) {
        return Class::Inventory;
    }
    Class::Other
}

/// The session gate that applies these rules: plugs [`judge`] into the session engine's
/// [`super::Gate`] hook. Every item of a command (and of the children of an Atomic or
/// Sequence) is judged; each finding is recorded, and the first refusal refuses the command.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModeGate {
    /// MDMAgent started from a command prompt (the operation modes post: Manual operation).
    pub interactive: bool,
    /// Refuse commands outside the Machine-mode set with 405 instead of executing them.
    pub strict: bool,
}

impl super::Gate for ModeGate {
    fn check(&mut self, cx: &super::GateCx<'_>, cmd: &Command) -> super::Verdict {
        let gcx =
            GateContext { profile: cx.profile, mode: cx.mode, interactive: self.interactive, strict: self.strict };
        let mut verdict = super::Verdict::allow();
        let mut pending = vec![cmd];
        while let Some(c) = pending.pop() {
            if let Command::Atomic(k) | Command::Sequence(k) = c {
                pending.extend(k.commands.iter().rev());
                continue;
            }
            for item in GateCmd::items(c) {
                let v = judge(&gcx, &item);
                if let Some(f) = v.finding() {
                    verdict.findings.push(super::Finding {
                        what: f.what.as_str().to_string(),
                        msg_id: cx.msg_id.to_string(),
                        cmd_id: f.cmd_id.clone(),
                        cmd: f.command.clone(),
                        uri: Some(f.loc_uri.clone()),
                        why: format!("{} in {} mode: {}", f.command, f.mode, f.reason),
                    });
                }
                if let Verdict::Refuse { status, .. } = v {
                    verdict.refuse.get_or_insert(status);
                }
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(profile: Profile, mode: Mode) -> GateContext {
        GateContext { profile, mode, interactive: false, strict: false }
    }

    fn cmd<'a>(name: &'a str, target: &'a str) -> GateCmd<'a> {
        GateCmd { name, cmd_id: "7", target, data: None }
    }

    #[test]
    fn inventory_reads_are_allowed_in_machine_mode() {
        let c = cx(Profile::Win10, Mode::Machine);
        for t in [
            "./DevInfo/DevId",
            "./DevDetail/Ext/Microsoft/DeviceName",
            "./Device/Vendor/MSFT/DeviceStatus/SecureBootState",
            "./Vendor/MSFT/DMClient/HWDevID",
            "./DevDetail?list=StructData",
        ] {
            assert_eq!(judge(&c, &cmd("Get", t)), Verdict::Allow, "{t}");
        }
        let c81 = cx(Profile::Win81, Mode::Machine);
        assert_eq!(
            judge(&c81, &cmd("Get", "./cimv2/Win32_OperatingSystem/Win32_OperatingSystem.Name=%22x%22/Version")),
            Verdict::Allow
        );
    }

    #[test]
    fn a_write_to_an_inventory_node_is_a_finding() {
        let v = judge(&cx(Profile::Win10, Mode::Machine), &cmd("Replace", "./DevDetail/Ext/Microsoft/DeviceName"));
        let f = v.finding().expect("finding");
        assert_eq!(f.what, Rule::MachineModeCommand);
        assert!(matches!(v, Verdict::Finding(_)));
    }

    #[test]
    fn password_reset_and_unenroll_are_allowed_in_machine_mode() {
        let c = cx(Profile::Win81, Mode::Machine);
        let base = "./cimv2/MDM_Client/MDM_Client.DeviceClientID=%22abc%22";
        assert_eq!(judge(&c, &cmd("Exec", &format!("{base}/Exec=ResetUserPassword"))), Verdict::Allow);
        assert_eq!(judge(&c, &cmd("Exec", &format!("{base}/Exec=SendUnenrollRequest"))), Verdict::Allow);
        // The method on another class's instance is not the operation modes post's password reset.
        let other = "./cimv2/MDM_Client/MDM_Other.X=1/Exec=ResetUserPassword";
        assert!(matches!(judge(&c, &cmd("Exec", other)), Verdict::Finding(_)));
        let c10 = cx(Profile::Win10, Mode::Machine);
        assert_eq!(judge(&c10, &cmd("Exec", "./Vendor/MSFT/DMClient/Provider/Fleet/Unenroll")), Verdict::Allow);
        assert_eq!(judge(&c10, &cmd("Exec", "./Vendor/MSFT/DMClient/Unenroll")), Verdict::Allow);
    }

    #[test]
    fn user_scope_fails_in_machine_mode_with_a_finding() {
        let v = judge(&cx(Profile::Win10, Mode::Machine), &cmd("Replace", "./User/Vendor/MSFT/Policy/Config/X/Y"));
        match v {
            Verdict::Refuse { status, finding: Some(f), .. } => {
                assert_eq!(status.code(), 500);
                assert_eq!(f.what, Rule::MachineModeUserScope);
            }
            other => panic!("expected a refusal with a finding, got {other:?}"),
        }
    }

    #[test]
    fn everything_is_allowed_in_maintenance_and_apps() {
        for mode in [Mode::Maintenance, Mode::Apps] {
            let c = cx(Profile::Win10, mode);
            assert_eq!(judge(&c, &cmd("Replace", "./User/Vendor/MSFT/Policy/Config/X/Y")), Verdict::Allow);
            assert_eq!(judge(&c, &cmd("Replace", "./Vendor/MSFT/DMClient/Provider/P/Push/PFN")), Verdict::Allow);
        }
    }

    #[test]
    fn interactive_runs_fail_impersonation_without_a_finding() {
        let c = GateContext { interactive: true, ..cx(Profile::Win81, Mode::Maintenance) };
        let t = "./cimv2/MDM_WNSConfiguration/MDM_WNSConfiguration.AppId=%22{AppId}%22/Exec=UpdateConfiguration";
        match judge(&c, &cmd("Exec", t)) {
            Verdict::Refuse { status, finding: None, .. } => assert_eq!(status, IMPERSONATION_FAILED),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(judge(&c, &cmd("Get", "./DevDetail/SwV")), Verdict::Allow);
    }

    #[test]
    fn items_of_a_decoded_command_are_judged_one_by_one() {
        let xml = r#"<SyncML><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID>
<MsgID>2</MsgID><Target><LocURI>dev</LocURI></Target><Source><LocURI>srv</LocURI></Source></SyncHdr><SyncBody>
<Get><CmdID>a-1</CmdID><Item><Target><LocURI>./DevDetail/SwV</LocURI></Target></Item>
<Item><Target><LocURI>./User/Vendor/MSFT/Policy/Config</LocURI></Target></Item></Get><Final/></SyncBody></SyncML>"#;
        let msg = crate::syncml::decode(xml).expect("decodes");
        let items = GateCmd::items(&msg.body.commands[0]);
        assert_eq!(items.len(), 2);
        assert_eq!((items[0].name, items[0].cmd_id), ("Get", "a-1"));
        let c = cx(Profile::Win10, Mode::Machine);
        assert_eq!(judge(&c, &items[0]), Verdict::Allow);
        assert!(matches!(judge(&c, &items[1]), Verdict::Refuse { status: IMPERSONATION_FAILED, .. }));
    }

    #[test]
    fn unparsable_target_is_outside_the_set_and_does_not_panic() {
        let v = judge(&cx(Profile::Win10, Mode::Machine), &cmd("Get", ""));
        assert!(matches!(v, Verdict::Finding(_)));
        for t in ["./cimv2/Win3é_x/y", "./cimv2/ééééééé/y", "./cimv2", "./User", "//x", "./a//b"] {
            let _ = judge(&cx(Profile::Win81, Mode::Machine), &cmd("Exec", t));
            let _ = judge(&cx(Profile::Win81, Mode::Machine), &cmd("Get", t));
        }
    }
}
