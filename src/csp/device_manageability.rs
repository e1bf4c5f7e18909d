//! The DeviceManageability CSP's behaviour (Microsoft's DeviceManageability CSP page); its
//! nodes come from its DDF facts (`ddf_csp`), so `Provider/<ProviderID>/ConfigInfo`,
//! `EnrollmentInfo` and `PayloadTransfer` are plain values a configuration source adds, replaces
//! and reads back.
//!
//! `Capabilities/CSPVersions` is computed: the page's XML listing every CSP the device's
//! registry knows, one `<CSP Node="./Device/Vendor/MSFT/X" Version="..."/>` per CSP and scope
//! (`./DevDetail` and `./DevInfo` for the roots outside `Vendor/MSFT`; the WMI bridge is not a
//! CSP and is left out), in registry order. The version is the highest `MSFT:CspVersion` of the
//! CSP's nodes in the DDF facts, `1.0` when the facts give none.

use super::ddf_csp::DdfBehaviour;
use crate::tree::{CspCx, NodeRef, Scope};

/// DeviceManageability's computed node.
pub struct DeviceManageability;

impl DdfBehaviour for DeviceManageability {
    fn read(&self, _cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        (node.rel == "Capabilities/CSPVersions").then(csp_versions)
    }
}

/// The CSPVersions document of this process's registry.
pub fn csp_versions() -> String {
    let registry = crate::csp::registry();
    let facts = super::ddf_csp::facts();
    let mut out = String::from(
        r#"<?xml version="1.0" encoding="utf-8"?><DeviceManageability Version="com.microsoft/1.1/MDM/DeviceManageability"><Capabilities><CSPVersions>"#,
    );
    let mut seen: Vec<String> = Vec::new();
    for csp in registry.csps() {
        if csp.root().eq_ignore_ascii_case("cimv2") {
            continue;
        }
        for scope in csp.scopes() {
            let node = match (scope, csp.root().starts_with("Vendor/")) {
                (Scope::Device, true) => format!("./Device/{}", csp.root()),
                (Scope::User, true) => format!("./User/{}", csp.root()),
                (_, false) => format!("./{}", csp.root()),
            };
            if seen.contains(&node) {
                continue;
            }
            let version = version_of(facts, *scope, csp.root()).unwrap_or_else(|| "1.0".into());
            out.push_str(&format!(r#"<CSP Node="{node}" Version="{version}"></CSP>"#));
            seen.push(node);
        }
    }
    out.push_str("</CSPVersions></Capabilities></DeviceManageability>");
    out
}

/// The highest CSP version of the facts of `root` in `scope` (`./Vendor/...` paths are the
/// device's).
fn version_of(facts: &[crate::ddf::NodeFact], scope: Scope, root: &str) -> Option<String> {
    let prefixes: Vec<String> = match scope {
        Scope::Device => vec![format!("./Device/{root}"), format!("./{root}")],
        Scope::User => vec![format!("./User/{root}")],
    };
    let mut best: Option<(Vec<u64>, String)> = None;
    for f in facts {
        let under = prefixes.iter().any(|p| f.path == *p || f.path.starts_with(&format!("{p}/")));
        let Some(v) = f.csp_version.as_deref().filter(|_| under) else { continue };
        let key: Vec<u64> = v.split('.').map(|p| p.trim().parse().unwrap_or(0)).collect();
        if best.as_ref().is_none_or(|(b, _)| key > *b) {
            best = Some((key, v.trim().to_string()));
        }
    }
    best.map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_versions_list_every_csp_of_the_registry_with_its_ddf_version() {
        let xml = csp_versions();
        assert!(xml.starts_with(r#"<?xml version="1.0" encoding="utf-8"?><DeviceManageability Version="#), "{xml}");
        for node in [
            "./DevDetail",
            "./DevInfo",
            "./Device/Vendor/MSFT/Policy",
            "./User/Vendor/MSFT/Policy",
            "./Device/Vendor/MSFT/BitLocker",
            "./Device/Vendor/MSFT/DMClient",
            "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement",
            "./Device/Vendor/MSFT/NodeCache",
            "./Device/Vendor/MSFT/Update",
        ] {
            assert!(xml.contains(&format!(r#"<CSP Node="{node}" Version=""#)), "{node} missing: {xml}");
        }
        assert!(!xml.to_ascii_lowercase().contains("cimv2"));
        // A version from the DDF facts: NodeCache's nodes go up to 1.2 (ChangedNodesData).
        let facts = crate::ddf::builtin();
        let v = version_of(&facts, Scope::Device, "Vendor/MSFT/NodeCache").expect("NodeCache has versions");
        assert!(xml.contains(&format!(r#"<CSP Node="./Device/Vendor/MSFT/NodeCache" Version="{v}">"#)), "{xml}");
        assert_ne!(v, "1.0");
    }
}
