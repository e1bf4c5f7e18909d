//! The CSPs a device has: one file per configuration service provider, and every other CSP of
//! Microsoft's DDF files through one generic module (`ddf_csp`).
//!
//! Each file holds the node table and behaviour hooks of one CSP, with its tests at the bottom;
//! a CSP known by its DDF facts gets its behaviour from a file too (`reboot`, `remote_wipe`).
//! Adding a CSP touches its file and one line of [`registry`].

pub mod ddf_csp;
pub mod desktop_app;
pub mod device_manageability;
pub mod devinfo;
pub mod dmacc;
pub mod dmclient;
pub mod enterprise_app;
pub mod modern_app;
pub mod nodecache;
pub mod policy_admx;
pub mod reboot;
pub mod remote_wipe;
#[cfg(test)]
mod test_rig;
pub mod update;
pub mod wmi_bridge;

use crate::tree::Registry;

/// True for a GUID written `8-4-4-4-12` hex digits, without braces (MSI product codes and
/// update IDs put braces around it; callers strip them as their CSP page says).
pub fn is_hyphenated_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub use crate::tree::UNSUPPORTED_KEY;

/// The registry with every CSP mdmsim emulates, shared by all devices.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(devinfo::DevInfo);
    r.register(devinfo::DevDetail);
    r.register(enterprise_app::EnterpriseAppManagement);
    r.register(dmclient::DmClient);
    r.register(dmclient::DmClientUser);
    r.register(dmacc::DmAcc);
    r.register(wmi_bridge::WmiBridge);
    r.register(desktop_app::EnterpriseDesktopAppManagement);
    // Every other CSP of Microsoft's DDF files, after the hand-written ones (they win).
    ddf_csp::register_all(&mut r);
    r
}
