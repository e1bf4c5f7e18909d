//! Enrollment (MS-MDE2: discovery, MS-XCEP policy, MS-WSTEP certificate request, provisioning
//! document), application-layer authentication (OMA DM Security, MD5 digest authentication) and the user-initiated
//! unenrollment alert, all sans-I/O.
//!
//! Owns the message builders and parsers, the key-to-CSR step (openssl), the typed
//! [`Provisioning`] and the tree writes it implies, the MD5 digest and the [`AppAuth`] state the
//! session uses to answer a challenge. Does not own HTTP (that is `runner::enroll`), where keys
//! and certificates are stored (the device store), or the session loop (it calls [`AppAuth`]).
//! Nothing here reads the clock or a global RNG: message IDs come in as arguments, and the one
//! source of randomness, the RSA key, is made by the caller and passed in.

mod appauth;
mod csr;
mod discovery;
mod policy;
mod provisioning;
mod soap;
pub mod webview;
mod wstep;
pub mod xml;

use std::fmt;

pub use appauth::{AppAuth, AuthReaction, AuthType, Credentials, digest_md5, redact_secrets, unenroll_alert};
pub use csr::{CsrError, DEVICE_ID_EXTENSION_OID, build_csr, subject_cn};
pub use discovery::{
    AuthPolicy, DISCOVER_ACTION, DiscoverRequest, Discovery, discovery_url_for_email, parse_discover_response,
};
pub use policy::{GET_POLICIES_ACTION, HashAlg, Policy, get_policies_body, parse_get_policies_response};
pub use provisioning::{
    APPSRV, ApplyError, CLIENT, CertEntry, ProvValue, Provisioning, Renew, W7App, account_uid, parse_provisioning,
    remove_enrollment,
};
pub use soap::{CONTENT_TYPE, FaultKind, ServiceError, ServiceErrorKind, SoapFault, envelope, soap_fault_of};
pub use wstep::{AuthToken, ContextItem, RST_ACTION, RstRequest, additional_context, parse_rstr};

/// A response that is not what the protocol says: the element at fault, its byte offset in the
/// response, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem} (byte {offset})", if element.is_empty() { String::new() } else { format!("<{element}>: ") })]
pub struct Malformed {
    pub element: String,
    pub offset: usize,
    pub problem: String,
}

impl Malformed {
    /// A problem with an element.
    pub fn at(el: &xml::Element, problem: impl Into<String>) -> Malformed {
        Malformed { element: el.name.clone(), offset: el.offset, problem: problem.into() }
    }

    /// A required child is missing.
    pub fn missing(parent: &xml::Element, child: &str) -> Malformed {
        Malformed::at(parent, format!("missing <{child}>"))
    }
}

/// Why an enrollment response could not be used: the server refused with a SOAP fault, or the
/// response was malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("{0}")]
    Fault(Box<SoapFault>),
    #[error("malformed response: {0}")]
    Malformed(#[from] Malformed),
}

/// A place where an enrollment server departs from MS-MDE2 in a way Windows tolerates: the
/// device carries on as Windows does and reports what it saw, so that a server developer can
/// fix it before a stricter client refuses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrollFinding {
    /// Short name of the rule (`nonce-not-base64`, `policy-nil`).
    pub what: String,
    /// What the server sent, quoted or described.
    pub sent: String,
    /// What Windows does with it (and so what mdmsim did).
    pub windows: String,
}

impl EnrollFinding {
    /// A finding named `what`.
    pub fn new(what: &str, sent: impl Into<String>, windows: impl Into<String>) -> EnrollFinding {
        EnrollFinding { what: what.to_string(), sent: sent.into(), windows: windows.into() }
    }
}

impl fmt::Display for EnrollFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: the server sent {}; Windows {}", self.what, self.sent, self.windows)
    }
}

/// A secret string (password, token, AAuthSecret, private key PEM): its `Debug` and `Display`
/// never show the value, so it cannot leak into logs or transcripts by accident.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(\"\")" } else { "Secret(<redacted>)" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the enrollment certificate goes and what the device enrolls as (ContextItem
/// `EnrollmentType`, MS-WSTEP, MS-MDE2 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum EnrollmentType {
    /// A user enrollment; certificate in `My/User`.
    #[default]
    Full,
    /// A device enrollment (Entra join); certificate in `My/System`.
    Device,
}

impl EnrollmentType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentType::Full => "Full",
            EnrollmentType::Device => "Device",
        }
    }
}

/// What the device says about itself during enrollment (Discover request and the WSTEP
/// AdditionalContext). The device template supplies these; [`DeviceIdentity::new`] gives the
/// values of a plain Windows 10 Enterprise desktop.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceIdentity {
    /// 32 uppercase hex digits: the DevId, SyncHdr Source and certificate CN suffix.
    pub device_id: String,
    /// 64 hex digits.
    pub hw_dev_id: String,
    /// `CIMClient_Windows` for desktops.
    pub device_type: String,
    /// Decimal PRODUCT_* value (4 Enterprise, 48 Pro).
    pub os_edition: String,
    pub os_version: String,
    pub application_version: String,
    pub device_name: String,
    /// MAC addresses in `00-0C-29-51-60-9D` form (one ContextItem each).
    pub macs: Vec<String>,
    pub locale: String,
    /// IMEIs (phones only; none on desktops).
    pub imeis: Vec<String>,
}

impl DeviceIdentity {
    /// A Windows 10 22H2 Enterprise desktop with this DeviceID and HWDevID.
    pub fn new(device_id: &str, hw_dev_id: &str) -> DeviceIdentity {
        DeviceIdentity {
            device_id: device_id.to_string(),
            hw_dev_id: hw_dev_id.to_string(),
            device_type: "CIMClient_Windows".into(),
            os_edition: "4".into(),
            os_version: "10.0.19045.2006".into(),
            application_version: "10.0.19045.2006".into(),
            device_name: format!("DESKTOP-{}", device_id.get(..7).unwrap_or(device_id)),
            macs: Vec::new(),
            locale: "en-US".into(),
            imeis: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/fixtures/enroll/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// Every file of the enrollment corpus reads with its parser, and every truncated prefix of
    /// it is refused with an error, never a panic or a silent success.
    #[test]
    fn corpus_reads_and_every_truncation_is_refused() {
        let dir = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/enroll")).unwrap();
        let mut names: Vec<String> = dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert!(names.len() >= 6, "{names:?}");
        for name in names {
            let text = fixture(&name);
            let parse = |t: &str| -> Result<(), String> {
                match name.as_str() {
                    "discover-response.xml" => parse_discover_response(t).map(|_| ()).map_err(|e| e.to_string()),
                    "get-policies-response.xml" => {
                        parse_get_policies_response(t).map(|_| ()).map_err(|e| e.to_string())
                    }
                    "rstr.xml" => parse_rstr(t)
                        .and_then(|d| parse_provisioning(&d).map_err(Into::into))
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    "provisioning.xml" => parse_provisioning(t).map(|_| ()).map_err(|e| e.to_string()),
                    n if n.starts_with("fault-") => match soap_fault_of(t) {
                        Err(ResponseError::Fault(_)) => Ok(()),
                        other => Err(format!("expected a fault, got {other:?}")),
                    },
                    other => panic!("fixture {other} has no parser in this test"),
                }
            };
            parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let end = text.trim_end().len();
            for cut in (0..end).step_by(13).filter(|c| text.is_char_boundary(*c)) {
                assert!(parse(&text[..cut]).is_err(), "{name}: prefix of {cut} bytes was accepted");
            }
        }
    }

    #[test]
    fn fault_fixtures_are_typed() {
        let Err(ResponseError::Fault(f)) = soap_fault_of(&fixture("fault-authorization.xml")) else { panic!() };
        assert_eq!((f.kind.clone(), f.hresult()), (FaultKind::Authorization, Some(0x8018_0003)));
        assert_eq!(f.reason, "This User is not authorized to enroll");
        let Err(ResponseError::Fault(f)) = soap_fault_of(&fixture("fault-device-cap-reached.xml")) else { panic!() };
        let d = f.detail.clone().unwrap();
        assert_eq!((d.kind, f.hresult()), (ServiceErrorKind::DeviceCapReached, Some(0x8018_0013)));
        assert_eq!(d.trace_id.as_deref(), Some("2493ee37-beeb-4cb9-833c-cadde9067645"));
        assert!(f.to_string().contains("0x80180013"), "{f}");
        let bom = format!("\u{feff}{}", fixture("discover-response.xml"));
        assert!(parse_discover_response(&bom).is_ok());
    }
}
