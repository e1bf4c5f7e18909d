//! The RemoteWipe CSP's behaviour (Microsoft's RemoteWipe CSP page); its nodes come from its
//! DDF facts (`ddf_csp`). An Exec of `doWipe`, `doWipeProtected`, `doWipePersistProvisionedData`
//! or `doWipePersistUserData` is accepted and the device is wiped: it leaves management
//! ([`Effect::Unenroll`]), as a wiped Windows device does.

use super::ddf_csp::DdfBehaviour;
use crate::syncml::StatusCode;
use crate::tree::{CspCx, Effect};

/// The RemoteWipe CSP's Execs.
pub struct RemoteWipe;

impl DdfBehaviour for RemoteWipe {
    fn exec(&self, cx: &mut CspCx<'_>, rel: &str, _data: Option<&str>) -> StatusCode {
        if rel.starts_with("doWipe") {
            cx.emit(Effect::Unenroll { reason: format!("RemoteWipe/{rel}") });
        }
        StatusCode::Ok
    }
}
