//! The WMI bridge of Windows 8.1 (`./cimv2/...`): the methods the seed
//! mdmagent-operation-modes.txt names, on the `win81` profile only (PROTOCOL.md §5, §8).
//!
//! LocURIs have the form `./cimv2/<Class>/<Class>.<Key>=<value>/Exec=<Method>` and the method
//! runs with an Exec on that LocURI (Data such as `NamedValuesList=Name,Value;`):
//! - `MDM_Client/.../Exec=SendUnenrollRequest`: the server unenrolls the device; it answers 200
//!   and emits [`Effect::Unenroll`], which the runner carries out (allowed in Machine mode).
//! - `MDM_Client/.../Exec=ResetUserPassword`: answers 200; there is no user password to model.
//! - `MDM_WNSConfiguration/MDM_WNSConfiguration.AppId=%22{AppId}%22/Exec=UpdateConfiguration`:
//!   answers 200 (the WNS channel itself is the DMClient Push emulation's). It needs the enrolled
//!   user's impersonation: the Machine-mode and interactive rules are the session gate's
//!   (`schedule::gate`), not this CSP's.
//!
//! Other WMI classes (`Win32_OperatingSystem`, ...) are not modelled and answer 404, as does the
//! whole `./cimv2` root on the `win10` profile. Owns nothing else: no inventory values.

use crate::syncml::StatusCode;
use crate::tree::{Csp, CspCx, Effect, Env, Format, NodeRef, NodeSpec, Ops, Profile};

const G: Ops = Ops::GET;

/// A method node: `Exec=<Method>` below an instance.
const METHOD: NodeSpec = NodeSpec::leaf("<Method>", Format::Null, Ops::EXEC);

static CIMV2: NodeSpec = NodeSpec::interior(
    "cimv2",
    G,
    &[
        NodeSpec::interior("MDM_Client", G, &[NodeSpec::interior("<Instance>", G, &[METHOD])]),
        NodeSpec::interior("MDM_WNSConfiguration", G, &[NodeSpec::interior("<Instance>", G, &[METHOD])]),
    ],
);

/// `./cimv2`: the Windows 8.1 WMI bridge.
pub struct WmiBridge;

impl Csp for WmiBridge {
    fn name(&self) -> &'static str {
        "WmiBridge"
    }

    fn root(&self) -> &'static str {
        "cimv2"
    }

    fn schema(&self) -> &'static NodeSpec {
        &CIMV2
    }

    fn present(&self, env: &Env) -> bool {
        env.profile == Profile::Win81
    }

    fn exec(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, _data: Option<&str>) -> StatusCode {
        let segments: Vec<&str> = node.segments().collect();
        let [class, instance, method] = segments[..] else { return StatusCode::CommandNotAllowed };
        // The instance segment names its class: `MDM_Client.DeviceClientID=...`.
        if !instance.starts_with(&format!("{class}.")) {
            return StatusCode::NotFound;
        }
        let method = method.strip_prefix("Exec=").unwrap_or(method);
        match (class, method) {
            ("MDM_Client", "SendUnenrollRequest") => {
                cx.emit(Effect::Unenroll { reason: format!("{instance}: SendUnenrollRequest (WMI bridge)") });
                StatusCode::Ok
            }
            ("MDM_Client", "ResetUserPassword") | ("MDM_WNSConfiguration", "UpdateConfiguration") => StatusCode::Ok,
            _ => StatusCode::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::syncml::{Command, Item, ItemCmd};
    use crate::tree::{Registry, Tree, TreeState};

    fn run(profile: Profile, cmd: &str, uri: &str) -> (StatusCode, Vec<Effect>) {
        let mut reg = Registry::new();
        reg.register(WmiBridge);
        let mut state = TreeState::new();
        let env = Env::new(Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap(), profile);
        let mut tree = Tree::new(&reg, &mut state, &env);
        let ic = ItemCmd { cmd_id: "1".into(), items: vec![Item::target(uri)], ..ItemCmd::default() };
        let c = if cmd == "Exec" { Command::Exec(ic) } else { Command::Get(ic) };
        let code = tree.execute(&c)[0].code;
        (code, tree.effects)
    }

    const UNENROLL: &str = "./cimv2/MDM_Client/MDM_Client.DeviceClientID=%22ABC%22/Exec=SendUnenrollRequest";

    #[test]
    fn send_unenroll_request_unenrolls_a_win81_device() {
        let (code, effects) = run(Profile::Win81, "Exec", UNENROLL);
        assert_eq!(code, StatusCode::Ok);
        assert!(matches!(&effects[..], [Effect::Unenroll { reason }] if reason.contains("SendUnenrollRequest")));
    }

    #[test]
    fn the_other_methods_answer_and_change_nothing() {
        let reset = "./cimv2/MDM_Client/MDM_Client.DeviceClientID=%22ABC%22/Exec=ResetUserPassword";
        assert_eq!(run(Profile::Win81, "Exec", reset), (StatusCode::Ok, vec![]));
        let wns = "./cimv2/MDM_WNSConfiguration/MDM_WNSConfiguration.AppId=%22%7B1%7D%22/Exec=UpdateConfiguration";
        assert_eq!(run(Profile::Win81, "Exec", wns), (StatusCode::Ok, vec![]));
        let unknown = "./cimv2/MDM_Client/MDM_Client.DeviceClientID=%22ABC%22/Exec=Reboot";
        assert_eq!(run(Profile::Win81, "Exec", unknown).0, StatusCode::NotFound);
        let wrong_class = "./cimv2/MDM_Client/Other.Key=1/Exec=SendUnenrollRequest";
        assert_eq!(run(Profile::Win81, "Exec", wrong_class).0, StatusCode::NotFound);
    }

    #[test]
    fn win10_has_no_wmi_bridge_and_unmodelled_classes_are_404() {
        assert_eq!(run(Profile::Win10, "Exec", UNENROLL).0, StatusCode::NotFound);
        assert_eq!(run(Profile::Win10, "Get", "./cimv2").0, StatusCode::NotFound);
        assert_eq!(run(Profile::Win81, "Get", "./cimv2/Win32_OperatingSystem").0, StatusCode::NotFound);
        assert_eq!(run(Profile::Win81, "Get", "./cimv2").0, StatusCode::Ok);
    }
}
