//! SOAP 1.2 envelopes with WS-Addressing (the frame of every MS-MDE2 message, MS-MDE2)
//! and enrollment faults (MS-MDE2 §2.2.10, MS-WSTEP, MS-MDE2 §3.3).
//!
//! Owns the envelope writer, the envelope reader that either yields the body's payload element
//! or a typed [`SoapFault`], and the table of fault subcodes and `DeviceEnrollmentServiceError`
//! types with their HRESULTs. Message contents are the business of `discovery`, `policy` and
//! `wstep`.

use std::fmt;

use super::xml::{self, Element, esc};
use super::{Malformed, ResponseError};

/// SOAP 1.2 envelope namespace.
pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing namespace.
pub const NS_ADDRESSING: &str = "http://www.w3.org/2005/08/addressing";
/// WS-Security secext namespace (`wsse:`).
pub const NS_WSSE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security utility namespace (`u:`).
pub const NS_WSU: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// The HTTP Content-Type of every enrollment request.
pub const CONTENT_TYPE: &str = "application/soap+xml; charset=utf-8";

/// Writes an envelope: WS-Addressing header (Action, MessageID, anonymous ReplyTo, To), an
/// optional security header (already XML), and the body payload (already XML).
pub fn envelope(action: &str, message_id: &str, to: &str, security: Option<&str>, body: &str) -> String {
    let security = security.unwrap_or("");
    format!(
        concat!(
            r#"<s:Envelope xmlns:s="{soap}" xmlns:a="{wsa}" xmlns:u="{wsu}">"#,
            r#"<s:Header><a:Action s:mustUnderstand="1">{action}</a:Action>"#,
            r#"<a:MessageID>urn:uuid:{mid}</a:MessageID>"#,
            r#"<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>"#,
            r#"<a:To s:mustUnderstand="1">{to}</a:To>{security}</s:Header>"#,
            r#"<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">{body}</s:Body></s:Envelope>"#
        ),
        soap = NS_SOAP,
        wsa = NS_ADDRESSING,
        wsu = NS_WSU,
        action = esc(action),
        mid = esc(message_id),
        to = esc(to),
        security = security,
        body = body,
    )
}

/// Reads an envelope and returns the first element of its Body, or the fault it carries.
/// `expected` is the payload element the caller wants (checked here so that errors name it).
pub fn open(text: &str, expected: &str) -> Result<Element, ResponseError> {
    let root = xml::parse(text)?;
    if !root.name.eq_ignore_ascii_case("Envelope") {
        return Err(Malformed::at(&root, format!("root element is <{}>, expected a SOAP <Envelope>", root.name)).into());
    }
    let body = root.child("Body").ok_or_else(|| Malformed::missing(&root, "Body"))?;
    if let Some(fault) = body.child("Fault") {
        return Err(ResponseError::Fault(Box::new(SoapFault::from_element(fault))));
    }
    let payload = body.children.first().ok_or_else(|| Malformed::missing(body, expected))?;
    if !payload.name.eq_ignore_ascii_case(expected) {
        return Err(Malformed::at(payload, format!("expected <{expected}> in the SOAP Body")).into());
    }
    Ok(payload.clone())
}

/// The fault a response carries, if it is a SOAP envelope with one (for HTTP error statuses,
/// where the body may be anything). `Ok(())` when there is no fault to report.
pub fn soap_fault_of(text: &str) -> Result<(), ResponseError> {
    match open(text, "") {
        Err(ResponseError::Fault(f)) => Err(ResponseError::Fault(f)),
        _ => Ok(()),
    }
}

/// A SOAP fault from an enrollment server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapFault {
    /// `Code/Value` without prefix (normally `Receiver`).
    pub code: String,
    /// The subcode as sent (`s:Authorization`), if any.
    pub subcode: Option<String>,
    /// The subcode, typed.
    pub kind: FaultKind,
    /// `Reason/Text`.
    pub reason: String,
    /// The `DeviceEnrollmentServiceError` detail, if any.
    pub detail: Option<ServiceError>,
}

impl SoapFault {
    fn from_element(fault: &Element) -> SoapFault {
        // SOAP 1.2: Code/Value, Code/Subcode/Value, Reason/Text. SOAP 1.1 (some servers):
        // faultcode, faultstring.
        let code = fault
            .path(&["Code", "Value"])
            .or_else(|| fault.child("faultcode"))
            .map(|e| strip_prefix(e.value()).to_string())
            .unwrap_or_default();
        let subcode = fault.path(&["Code", "Subcode", "Value"]).map(|e| e.value().to_string());
        let kind = subcode.as_deref().map_or(FaultKind::Unspecified, |s| FaultKind::parse(strip_prefix(s)));
        let reason = fault
            .path(&["Reason", "Text"])
            .or_else(|| fault.child("faultstring"))
            .map(|e| e.value().to_string())
            .unwrap_or_default();
        let detail = fault.child("Detail").and_then(|d| {
            let err = d.children.iter().find(|c| c.name.to_ascii_lowercase().ends_with("enrollmentserviceerror"))?;
            let error_type = err.child_value("ErrorType").unwrap_or_default().to_string();
            Some(ServiceError {
                kind: ServiceErrorKind::parse(&error_type),
                error_type,
                message: err.child_value("Message").map(str::to_string),
                trace_id: err.child_value("TraceId").map(str::to_string),
            })
        });
        SoapFault { code, subcode, kind, reason, detail }
    }

    /// The HRESULT Windows would report: the detail's when it names one, else the subcode's.
    pub fn hresult(&self) -> Option<u32> {
        self.detail.as_ref().and_then(|d| d.kind.hresult()).or_else(|| self.kind.hresult())
    }
}

impl fmt::Display for SoapFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SOAP fault {}", if self.code.is_empty() { "(no code)" } else { &self.code })?;
        if let Some(sub) = &self.subcode {
            write!(f, "/{sub}")?;
        }
        match self.kind.hresult() {
            Some(h) => write!(f, " = 0x{h:08X} {} ({})", self.kind.symbol(), self.kind.meaning())?,
            None => write!(f, " ({})", self.kind.meaning())?,
        }
        if !self.reason.is_empty() {
            write!(f, ": {:?}", self.reason)?;
        }
        if let Some(d) = &self.detail {
            write!(f, "; detail {}", d.error_type)?;
            if let Some(h) = d.kind.hresult() {
                write!(f, " = 0x{h:08X} ({})", d.kind.meaning())?;
            }
            if let Some(m) = &d.message {
                write!(f, ": {m:?}")?;
            }
        }
        Ok(())
    }
}

fn strip_prefix(s: &str) -> &str {
    s.trim().rsplit(':').next().unwrap_or(s)
}

/// The fault subcodes of MS-MDE2 §2.2.10, in the spec's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    MessageFormat,
    Authentication,
    Authorization,
    CertificateRequest,
    EnrollmentServer,
    InternalServiceFault,
    InvalidSecurity,
    /// A fault without a subcode.
    Unspecified,
    /// A subcode the spec does not list (kept as sent, prefix removed).
    Other(String),
}

impl FaultKind {
    /// Parses a subcode (prefix already removed), case-insensitively.
    pub fn parse(s: &str) -> FaultKind {
        match s.to_ascii_lowercase().as_str() {
            "messageformat" => FaultKind::MessageFormat,
            "authentication" => FaultKind::Authentication,
            "authorization" => FaultKind::Authorization,
            "certificaterequest" => FaultKind::CertificateRequest,
            "enrollmentserver" => FaultKind::EnrollmentServer,
            "internalservicefault" => FaultKind::InternalServiceFault,
            "invalidsecurity" => FaultKind::InvalidSecurity,
            _ => FaultKind::Other(s.to_string()),
        }
    }

    /// The MENROLL HRESULT.
    pub fn hresult(&self) -> Option<u32> {
        Some(match self {
            FaultKind::MessageFormat => 0x8018_0001,
            FaultKind::Authentication => 0x8018_0002,
            FaultKind::Authorization => 0x8018_0003,
            FaultKind::CertificateRequest => 0x8018_0004,
            FaultKind::EnrollmentServer => 0x8018_0005,
            FaultKind::InternalServiceFault => 0x8018_0006,
            FaultKind::InvalidSecurity => 0x8018_0007,
            FaultKind::Unspecified | FaultKind::Other(_) => return None,
        })
    }

    /// The Windows error name.
    pub fn symbol(&self) -> &'static str {
        match self {
            FaultKind::MessageFormat => "MENROLL_E_DEVICE_MESSAGE_FORMAT_ERROR",
            FaultKind::Authentication => "MENROLL_E_DEVICE_AUTHENTICATION_ERROR",
            FaultKind::Authorization => "MENROLL_E_DEVICE_AUTHORIZATION_ERROR",
            FaultKind::CertificateRequest => "MENROLL_E_DEVICE_CERTIFCATEREQUEST_ERROR",
            FaultKind::EnrollmentServer => "MENROLL_E_DEVICE_CONFIGMGRSERVER_ERROR",
            FaultKind::InternalServiceFault => "MENROLL_E_DEVICE_INTERNALSERVICE_ERROR",
            FaultKind::InvalidSecurity => "MENROLL_E_DEVICE_INVALIDSECURITY_ERROR",
            FaultKind::Unspecified | FaultKind::Other(_) => "",
        }
    }

    /// What the fault means (MS-MDE2 §2.2.10).
    pub fn meaning(&self) -> &'static str {
        match self {
            FaultKind::MessageFormat => "message format is bad",
            FaultKind::Authentication => "user not recognized",
            FaultKind::Authorization => "user not allowed to enroll",
            FaultKind::CertificateRequest => "failed to get certificate",
            FaultKind::EnrollmentServer => "generic failure from management server, such as a database access error",
            FaultKind::InternalServiceFault => "the server hit an unexpected issue",
            FaultKind::InvalidSecurity => "cannot parse the security header",
            FaultKind::Unspecified => "no subcode given",
            FaultKind::Other(_) => "subcode not listed in MS-MDE2",
        }
    }
}

/// The `DeviceEnrollmentServiceError` detail of a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// `ErrorType` as sent.
    pub error_type: String,
    pub kind: ServiceErrorKind,
    pub message: Option<String>,
    pub trace_id: Option<String>,
}

/// The `errortype` values of MS-MDE2 §2.2.10, in the spec's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceErrorKind {
    DeviceCapReached,
    DeviceNotSupported,
    NotSupported,
    NotEligibleToRenew,
    InMaintenance,
    UserLicense,
    InvalidEnrollmentData,
    CustomServerError,
    Other(String),
}

impl ServiceErrorKind {
    /// Parses an `ErrorType`, case-insensitively.
    pub fn parse(s: &str) -> ServiceErrorKind {
        match s.trim().to_ascii_lowercase().as_str() {
            "devicecapreached" => ServiceErrorKind::DeviceCapReached,
            "devicenotsupported" => ServiceErrorKind::DeviceNotSupported,
            "notsupported" => ServiceErrorKind::NotSupported,
            "noteligibletorenew" => ServiceErrorKind::NotEligibleToRenew,
            "inmaintenance" => ServiceErrorKind::InMaintenance,
            "userlicense" => ServiceErrorKind::UserLicense,
            "invalidenrollmentdata" | "enrollmentdatainvalid" => ServiceErrorKind::InvalidEnrollmentData,
            "customservererror" => ServiceErrorKind::CustomServerError,
            _ => ServiceErrorKind::Other(s.trim().to_string()),
        }
    }

    /// The MENROLL HRESULT.
    pub fn hresult(&self) -> Option<u32> {
        Some(match self {
            ServiceErrorKind::DeviceCapReached => 0x8018_0013,
            ServiceErrorKind::DeviceNotSupported => 0x8018_0014,
            ServiceErrorKind::NotSupported => 0x8018_0015,
            ServiceErrorKind::NotEligibleToRenew => 0x8018_0016,
            ServiceErrorKind::InMaintenance => 0x8018_0017,
            ServiceErrorKind::UserLicense => 0x8018_0018,
            ServiceErrorKind::InvalidEnrollmentData => 0x8018_0019,
            ServiceErrorKind::CustomServerError => 0x8018_0032,
            ServiceErrorKind::Other(_) => return None,
        })
    }

    /// What the error means (MS-MDE2 §2.2.10).
    pub fn meaning(&self) -> &'static str {
        match self {
            ServiceErrorKind::DeviceCapReached => "user already enrolled too many devices",
            ServiceErrorKind::DeviceNotSupported => "this platform or version is not supported",
            ServiceErrorKind::NotSupported => "mobile device management is not supported",
            ServiceErrorKind::NotEligibleToRenew => "the server refuses to renew this device's certificate",
            ServiceErrorKind::InMaintenance => "the account is in maintenance; retry later",
            ServiceErrorKind::UserLicense => "the user's license is in a bad state",
            ServiceErrorKind::InvalidEnrollmentData => "the enrollment data is invalid",
            ServiceErrorKind::CustomServerError => "custom error from the server",
            ServiceErrorKind::Other(_) => "error type not listed in MS-MDE2",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_fault_of_the_spec_example_is_typed() {
        let text = r#"<s:envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:header/><s:body><s:fault>
          <s:code><s:value>s:receiver</s:value><s:subcode><s:value>s:authorization</s:value></s:subcode></s:code>
          <s:reason><s:text xml:lang="en-us">This User is not authorized to enroll</s:text></s:reason></s:fault></s:body></s:envelope>"#;
        let Err(ResponseError::Fault(f)) = open(text, "DiscoverResponse") else { panic!("expected a fault") };
        assert_eq!(f.kind, FaultKind::Authorization);
        assert_eq!(f.hresult(), Some(0x8018_0003));
        let shown = f.to_string();
        assert!(shown.contains("0x80180003") && shown.contains("not allowed to enroll"), "{shown}");
    }

    #[test]
    fn wrong_payload_names_the_element() {
        let text = format!(r#"<s:Envelope xmlns:s="{NS_SOAP}"><s:Body><Other/></s:Body></s:Envelope>"#);
        let Err(ResponseError::Malformed(m)) = open(&text, "DiscoverResponse") else { panic!() };
        assert_eq!(m.element, "Other");
        assert!(m.to_string().contains("DiscoverResponse"), "{m}");
    }
}
