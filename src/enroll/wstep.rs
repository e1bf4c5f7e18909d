//! MS-WSTEP certificate enrollment (MS-MDE2 §2.2.9 security tokens): the authentication token header of
//! GetPolicies and RST, the RequestSecurityToken with its AdditionalContext, and the RSTR reader
//! that yields the provisioning document.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::discovery::AuthPolicy;
use super::soap::{self, NS_WSSE, envelope};
use super::xml::esc;
use super::{DeviceIdentity, EnrollmentType, Malformed, ResponseError, Secret};

/// SOAP action of the RST.
pub const RST_ACTION: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep";
const TOKEN_TYPE: &str = "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken";
const REQUEST_TYPE_ISSUE: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue";
const PKCS10: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10";
const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary";
const USER_TOKEN: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const PROVISION_DOC: &str = "DeviceEnrollmentProvisionDoc";
const PASSWORD_TEXT: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";
const NS_WST: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512";
const NS_AC: &str = "http://schemas.xmlsoap.org/ws/2006/12/authorization";

/// How the client proves who enrolls (MS-MDE2 §2.2.9 security tokens). `Debug` never shows the secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthToken {
    /// `wsse:UsernameToken` with a clear-text password.
    OnPremise { username: String, password: Secret },
    /// A federated STS token (`wresult`), sent base64 as a DeviceEnrollmentUserToken.
    Federated { token: Secret },
    /// An Entra access token, sent base64 with ValueType `urn:ietf:params:oauth:token-type:jwt`.
    Jwt { token: Secret },
    /// Fleet's programmatic enrollment: base64 of `{"type":1,"payload":{"orbit_node_key":…}}`
    /// as a DeviceEnrollmentUserToken.
    FleetOrbit { orbit_node_key: Secret },
}

impl AuthToken {
    /// The token a user passed with `--token`: a JWT (three dot-separated base64url parts)
    /// goes as an Entra token, anything else as a federated user token.
    pub fn from_user_token(token: &str) -> AuthToken {
        let token = token.trim();
        let parts: Vec<&str> = token.split('.').collect();
        let jwt = parts.len() == 3
            && parts[..2].iter().all(|p| !p.is_empty())
            && parts
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'='));
        if jwt {
            AuthToken::Jwt { token: Secret::new(token) }
        } else {
            AuthToken::Federated { token: Secret::new(token) }
        }
    }

    /// The discovery policy this token belongs to.
    pub fn policy(&self) -> AuthPolicy {
        match self {
            // Fleet's discovery says OnPremise for its programmatic token (MS-MDE2 §2.2.9 security tokens).
            AuthToken::OnPremise { .. } | AuthToken::FleetOrbit { .. } => AuthPolicy::OnPremise,
            AuthToken::Federated { .. } | AuthToken::Jwt { .. } => AuthPolicy::Federated,
        }
    }

    /// The `wsse:Security` header element.
    pub fn security_header(&self) -> String {
        let inner = match self {
            AuthToken::OnPremise { username, password } => format!(
                concat!(
                    r#"<wsse:UsernameToken u:Id="uuid-cc1ccc1f-2fba-4bcf-b063-ffc0cac77917-4">"#,
                    r#"<wsse:Username>{}</wsse:Username><wsse:Password wsse:Type="{}">{}</wsse:Password>"#,
                    "</wsse:UsernameToken>"
                ),
                esc(username),
                PASSWORD_TEXT,
                esc(password.expose())
            ),
            AuthToken::Federated { token } => binary_token(USER_TOKEN, &B64.encode(token.expose())),
            AuthToken::Jwt { token } => binary_token(JWT, &B64.encode(token.expose())),
            AuthToken::FleetOrbit { orbit_node_key } => {
                let json = serde_json::json!({"type": 1, "payload": {"orbit_node_key": orbit_node_key.expose()}});
                binary_token(USER_TOKEN, &B64.encode(json.to_string()))
            }
        };
        format!(r#"<wsse:Security xmlns:wsse="{NS_WSSE}" s:mustUnderstand="1">{inner}</wsse:Security>"#)
    }
}

fn binary_token(value_type: &str, content: &str) -> String {
    format!(
        r#"<wsse:BinarySecurityToken ValueType="{value_type}" EncodingType="{BASE64_BINARY}">{content}</wsse:BinarySecurityToken>"#
    )
}

/// One `ac:ContextItem` of the AdditionalContext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextItem {
    pub name: String,
    pub value: String,
}

impl ContextItem {
    fn new(name: &str, value: impl Into<String>) -> Self {
        ContextItem { name: name.to_string(), value: value.into() }
    }
}

/// Everything the RST says besides the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RstRequest {
    /// DER of the PKCS#10 request.
    pub csr_der: Vec<u8>,
    pub enrollment_type: EnrollmentType,
    pub device: DeviceIdentity,
    /// The discovery RequestVersion; `RequestVersion` goes in the context from 5.0 on.
    pub request_version: String,
    pub targeted_user_logged_in: bool,
    pub not_in_oobe: bool,
    pub ux_initiated: bool,
    /// Further items (EnrollmentData, DomainName, ...), appended as given.
    pub extra: Vec<ContextItem>,
}

impl RstRequest {
    /// The RST envelope for `url`, authenticated with `token`.
    pub fn to_xml(&self, message_id: &str, url: &str, token: &AuthToken) -> String {
        let items: String = additional_context(self)
            .iter()
            .map(|i| {
                format!(
                    r#"<ac:ContextItem Name="{}"><ac:Value>{}</ac:Value></ac:ContextItem>"#,
                    esc(&i.name),
                    esc(&i.value)
                )
            })
            .collect();
        let body = format!(
            concat!(
                r#"<wst:RequestSecurityToken xmlns:wst="{wst}" xmlns:wsse="{wsse}" xmlns:ac="{ac}">"#,
                "<wst:TokenType>{tt}</wst:TokenType><wst:RequestType>{rt}</wst:RequestType>",
                r#"<wsse:BinarySecurityToken ValueType="{p10}" EncodingType="{b64}">{csr}</wsse:BinarySecurityToken>"#,
                "<ac:AdditionalContext>{items}</ac:AdditionalContext></wst:RequestSecurityToken>"
            ),
            wst = NS_WST,
            wsse = NS_WSSE,
            ac = NS_AC,
            tt = TOKEN_TYPE,
            rt = REQUEST_TYPE_ISSUE,
            p10 = PKCS10,
            b64 = BASE64_BINARY,
            csr = B64.encode(&self.csr_der),
            items = items,
        );
        envelope(RST_ACTION, message_id, url, Some(&token.security_header()), &body)
    }
}

/// The AdditionalContext items of an RST, in the order Windows 10 sends them (MS-WSTEP, MS-MDE2 §3.3).
pub fn additional_context(req: &RstRequest) -> Vec<ContextItem> {
    let d = &req.device;
    let tf = |b: bool| if b { "true" } else { "false" };
    let mut items = vec![
        ContextItem::new("UXInitiated", tf(req.ux_initiated)),
        ContextItem::new("HWDevID", &d.hw_dev_id),
        ContextItem::new("Locale", &d.locale),
        ContextItem::new("TargetedUserLoggedIn", tf(req.targeted_user_logged_in)),
        ContextItem::new("OSEdition", &d.os_edition),
        ContextItem::new("DeviceName", &d.device_name),
    ];
    items.extend(d.macs.iter().map(|m| ContextItem::new("MAC", m)));
    items.extend(d.imeis.iter().map(|m| ContextItem::new("IMEI", m)));
    items.extend([
        ContextItem::new("DeviceID", &d.device_id),
        ContextItem::new("EnrollmentType", req.enrollment_type.as_str()),
        ContextItem::new("DeviceType", &d.device_type),
        ContextItem::new("OSVersion", &d.os_version),
        ContextItem::new("ApplicationVersion", &d.application_version),
        ContextItem::new("NotInOobe", tf(req.not_in_oobe)),
    ]);
    let major = req.request_version.split('.').next().and_then(|m| m.trim().parse::<u32>().ok()).unwrap_or(0);
    if major >= 5 {
        items.push(ContextItem::new("RequestVersion", &req.request_version));
    }
    items.extend(req.extra.iter().cloned());
    items
}

/// Reads an RSTR collection and returns the decoded provisioning document (XML text).
pub fn parse_rstr(text: &str) -> Result<String, ResponseError> {
    let coll = soap::open(text, "RequestSecurityTokenResponseCollection")?;
    let resp = coll
        .child("RequestSecurityTokenResponse")
        .ok_or_else(|| Malformed::missing(&coll, "RequestSecurityTokenResponse"))?;
    let rst = resp.child("RequestedSecurityToken").ok_or_else(|| Malformed::missing(resp, "RequestedSecurityToken"))?;
    let bst = rst.child("BinarySecurityToken").ok_or_else(|| Malformed::missing(rst, "BinarySecurityToken"))?;
    if let Some(vt) = bst.attr("ValueType")
        && !vt.ends_with(PROVISION_DOC)
    {
        return Err(Malformed::at(bst, format!("ValueType {vt:?} is not a {PROVISION_DOC}")).into());
    }
    let compact: String = bst.text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(Malformed::at(bst, "empty provisioning document").into());
    }
    let bytes = B64.decode(compact.as_bytes()).map_err(|e| Malformed::at(bst, format!("not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| Malformed::at(bst, "provisioning document is not UTF-8").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enroll::xml;

    fn req(version: &str) -> RstRequest {
        let mut device = DeviceIdentity::new("0123456789ABCDEF0123456789ABCDEF", &"B".repeat(64));
        device.macs = vec!["00-0C-29-51-60-9D".into(), "00-0C-29-51-60-9E".into()];
        RstRequest {
            csr_der: vec![1, 2, 3],
            enrollment_type: EnrollmentType::Device,
            device,
            request_version: version.into(),
            targeted_user_logged_in: true,
            not_in_oobe: true,
            ux_initiated: false,
            extra: vec![ContextItem::new("DomainName", "corp.example")],
        }
    }

    #[test]
    fn rst_carries_csr_context_and_token() {
        let tok = AuthToken::FleetOrbit { orbit_node_key: Secret::new("nodekey") };
        let root = xml::parse(&req("5.0").to_xml("m", "https://x/e", &tok)).unwrap();
        let rst = root.path(&["Body", "RequestSecurityToken"]).unwrap();
        assert_eq!(rst.child_value("RequestType"), Some(REQUEST_TYPE_ISSUE));
        assert_eq!(rst.child_value("BinarySecurityToken"), Some("AQID"));
        let ctx: Vec<(String, String)> = rst
            .child("AdditionalContext")
            .unwrap()
            .children
            .iter()
            .map(|c| (c.attr("Name").unwrap().to_string(), c.child_value("Value").unwrap_or("").to_string()))
            .collect();
        let get = |n: &str| ctx.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("EnrollmentType"), ["Device"]);
        assert_eq!(get("DeviceID"), ["0123456789ABCDEF0123456789ABCDEF"]);
        assert_eq!(get("MAC"), ["00-0C-29-51-60-9D", "00-0C-29-51-60-9E"]);
        assert_eq!(get("RequestVersion"), ["5.0"]);
        assert_eq!(get("DomainName"), ["corp.example"]);
        assert_eq!(get("NotInOobe"), ["true"]);
        let bst = root.path(&["Header", "Security", "BinarySecurityToken"]).unwrap();
        assert_eq!(bst.attr("ValueType"), Some(USER_TOKEN));
        let json = String::from_utf8(B64.decode(bst.value()).unwrap()).unwrap();
        assert_eq!(json, r#"{"payload":{"orbit_node_key":"nodekey"},"type":1}"#);
        // Below 5.0 there is no RequestVersion item.
        assert!(additional_context(&req("4.0")).iter().all(|i| i.name != "RequestVersion"));
    }

    #[test]
    fn user_tokens_are_classified_and_never_debug_printed() {
        let jwt = AuthToken::from_user_token("eyJhbGciOi.eyJzdWIiOi.c2ln");
        assert!(matches!(jwt, AuthToken::Jwt { .. }));
        assert!(jwt.security_header().contains(JWT));
        assert!(matches!(AuthToken::from_user_token("opaque-wresult"), AuthToken::Federated { .. }));
        let shown = format!("{:?}", AuthToken::OnPremise { username: "u".into(), password: Secret::new("hunter2") });
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn rstr_fixture_yields_the_provisioning_doc_and_bad_tokens_are_named() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/enroll/rstr.xml")).unwrap();
        let doc = parse_rstr(&text).unwrap();
        assert!(doc.starts_with("<wap-provisioningdoc"), "{}", &doc[..40]);
        let broken = text.replace("PHdhcC1w", "!!!!");
        let Err(ResponseError::Malformed(m)) = parse_rstr(&broken) else { panic!() };
        assert_eq!(m.element, "BinarySecurityToken");
        assert!(m.problem.contains("base64"), "{m}");
    }
}
