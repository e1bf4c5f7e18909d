//! MS-MDE2 discovery (MS-MDE2 §3.1 discovery): the `Discover` request body and the `DiscoverResponse`
//! reader. The bare GET probe before it is the runner's.

use std::fmt;

use super::soap::{self, envelope};
use super::xml::esc;
use super::{DeviceIdentity, Malformed, ResponseError};

/// SOAP action of the Discover request.
pub const DISCOVER_ACTION: &str =
    "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/Discover";
const NS_ENROLLMENT: &str = "http://schemas.microsoft.com/windows/management/2012/01/enrollment";

/// An authentication policy (`AuthPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AuthPolicy {
    OnPremise,
    Federated,
    Certificate,
    /// A value MS-MDE2 does not list, kept as sent.
    Other(String),
}

impl AuthPolicy {
    /// Parses a wire value (case-insensitive).
    pub fn parse(s: &str) -> AuthPolicy {
        match s.trim().to_ascii_lowercase().as_str() {
            "onpremise" => AuthPolicy::OnPremise,
            "federated" => AuthPolicy::Federated,
            "certificate" => AuthPolicy::Certificate,
            _ => AuthPolicy::Other(s.trim().to_string()),
        }
    }

    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            AuthPolicy::OnPremise => "OnPremise",
            AuthPolicy::Federated => "Federated",
            AuthPolicy::Certificate => "Certificate",
            AuthPolicy::Other(s) => s,
        }
    }
}

impl fmt::Display for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The content of a Discover request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverRequest {
    pub email: String,
    /// `1.0`..`9.0`; Windows 10 sends `4.0`, Fleet's test client `5.0`.
    pub request_version: String,
    pub device_type: String,
    pub application_version: String,
    pub os_edition: String,
    /// Up to three policies the client supports.
    pub auth_policies: Vec<AuthPolicy>,
}

impl DiscoverRequest {
    /// A request for a device, supporting OnPremise and Federated (as Windows 10 does).
    pub fn new(email: &str, request_version: &str, device: &DeviceIdentity) -> DiscoverRequest {
        DiscoverRequest {
            email: email.to_string(),
            request_version: request_version.to_string(),
            device_type: device.device_type.clone(),
            application_version: device.application_version.clone(),
            os_edition: device.os_edition.clone(),
            auth_policies: vec![AuthPolicy::OnPremise, AuthPolicy::Federated],
        }
    }

    /// The whole SOAP envelope, addressed to `url`, with `message_id` (a UUID).
    pub fn to_xml(&self, message_id: &str, url: &str) -> String {
        let policies: String = self
            .auth_policies
            .iter()
            .take(3)
            .map(|p| format!("<AuthPolicy>{}</AuthPolicy>", esc(p.as_str())))
            .collect();
        let body = format!(
            concat!(
                r#"<Discover xmlns="{ns}"><request xmlns:i="http://www.w3.org/2001/XMLSchema-instance">"#,
                "<EmailAddress>{email}</EmailAddress><RequestVersion>{rv}</RequestVersion>",
                "<DeviceType>{dt}</DeviceType><ApplicationVersion>{av}</ApplicationVersion>",
                "<OSEdition>{ose}</OSEdition><AuthPolicies>{policies}</AuthPolicies></request></Discover>"
            ),
            ns = NS_ENROLLMENT,
            email = esc(&self.email),
            rv = esc(&self.request_version),
            dt = esc(&self.device_type),
            av = esc(&self.application_version),
            ose = esc(&self.os_edition),
            policies = policies,
        );
        envelope(DISCOVER_ACTION, message_id, url, None, &body)
    }
}

/// The discovery URL Windows derives from an email address (MS-MDE2 §3.1):
/// `https://EnterpriseEnrollment.<domain>/EnrollmentServer/Discovery.svc`. `None` without a
/// domain.
pub fn discovery_url_for_email(email: &str) -> Option<String> {
    let (_, domain) = email.rsplit_once('@')?;
    let domain = domain.trim();
    (!domain.is_empty()).then(|| format!("https://EnterpriseEnrollment.{domain}/EnrollmentServer/Discovery.svc"))
}

/// What discovery told the client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Discovery {
    pub auth_policy: AuthPolicy,
    pub enrollment_version: Option<String>,
    /// Absent means no policy request: 2048-bit RSA and SHA-1 (MS-MDE2 §3.1 discovery).
    pub policy_url: Option<String>,
    pub enrollment_url: String,
    /// Federated only: where the user authenticates.
    pub auth_url: Option<String>,
}

/// Reads a `DiscoverResponse` envelope.
pub fn parse_discover_response(text: &str) -> Result<Discovery, ResponseError> {
    let resp = soap::open(text, "DiscoverResponse")?;
    let result = resp.child("DiscoverResult").ok_or_else(|| Malformed::missing(&resp, "DiscoverResult"))?;
    let auth_policy = result.child_value("AuthPolicy").ok_or_else(|| Malformed::missing(result, "AuthPolicy"))?;
    let enrollment_url =
        result.child_value("EnrollmentServiceUrl").ok_or_else(|| Malformed::missing(result, "EnrollmentServiceUrl"))?;
    Ok(Discovery {
        auth_policy: AuthPolicy::parse(auth_policy),
        enrollment_version: result.child_value("EnrollmentVersion").map(str::to_string),
        policy_url: result.child_value("EnrollmentPolicyServiceUrl").map(str::to_string),
        enrollment_url: enrollment_url.to_string(),
        auth_url: result.child_value("AuthenticationServiceUrl").map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enroll::xml;

    #[test]
    fn request_carries_every_field_and_parses_back() {
        let dev = DeviceIdentity::new("0123456789ABCDEF0123456789ABCDEF", &"A".repeat(64));
        let text = DiscoverRequest::new("a&b@example.com", "5.0", &dev).to_xml("1-2", "https://e.example/D.svc");
        let root = xml::parse(&text).unwrap();
        assert_eq!(root.path(&["Header", "Action"]).unwrap().value(), DISCOVER_ACTION);
        assert_eq!(root.path(&["Header", "MessageID"]).unwrap().value(), "urn:uuid:1-2");
        let req = root.path(&["Body", "Discover", "request"]).unwrap();
        assert_eq!(req.child_value("EmailAddress"), Some("a&b@example.com"));
        assert_eq!(req.child_value("RequestVersion"), Some("5.0"));
        assert_eq!(req.child_value("DeviceType"), Some("CIMClient_Windows"));
        assert_eq!(req.child_value("OSEdition"), Some("4"));
        let pols: Vec<_> = req.child("AuthPolicies").unwrap().children.iter().map(|c| c.value().to_string()).collect();
        assert_eq!(pols, ["OnPremise", "Federated"]);
    }

    #[test]
    fn discovery_url_comes_from_the_email_domain() {
        assert_eq!(
            discovery_url_for_email("user@contoso.com").as_deref(),
            Some("https://EnterpriseEnrollment.contoso.com/EnrollmentServer/Discovery.svc")
        );
        assert_eq!(discovery_url_for_email("contoso\\user"), None);
    }

    #[test]
    fn fixture_response_is_read_and_missing_url_is_named() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/enroll/discover-response.xml"))
                .unwrap();
        let d = parse_discover_response(&text).unwrap();
        assert_eq!(d.auth_policy, AuthPolicy::OnPremise);
        assert_eq!(d.enrollment_version.as_deref(), Some("5.0"));
        assert_eq!(d.policy_url.as_deref(), Some("https://mdm.example.com/EnrollmentServer/Policy.svc"));
        assert_eq!(d.enrollment_url, "https://mdm.example.com/EnrollmentServer/Enrollment.svc");
        assert_eq!(d.auth_url, None);
        let cut = text.replace("EnrollmentServiceUrl", "Nope");
        let Err(ResponseError::Malformed(m)) = parse_discover_response(&cut) else { panic!() };
        assert_eq!(m.element, "DiscoverResult");
        assert!(m.problem.contains("EnrollmentServiceUrl"), "{m}");
    }
}
