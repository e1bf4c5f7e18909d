//! The enrollment endpoints of the reference server (MS-MDE2): discovery,
//! MS-XCEP GetPolicies and MS-WSTEP RequestSecurityToken, answering with the provisioning
//! document (§3.5) or a SOAP fault with the MS-MDE2 subcode.
//!
//! Owns reading the SOAP requests, checking OnPremise credentials (or an enrollment token: one
//! the Federated authentication page issued, or one the config accepts) and writing the
//! responses, shaped by the compat switches (Federated discovery, the nil MS-XCEP response, the
//! literal `nonce` AAUTHDATA). Certificate issuance is `pki.rs`; the pages that issue tokens
//! are `sts.rs`; the device's app-layer credentials are handed to `mgmt.rs`. No HTTP here:
//! `mod.rs` routes the bodies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};

use super::compat::{Compat, PolicyResponse};
use super::config::Config;
use super::mgmt::{Creds, fresh_nonce};
use super::pki::{Pki, PkiError, common_name};
use super::records::EnrollmentRecord;
use super::sts::{AUTH_PATH, IssuedTokens, email_shaped};
use super::xml::{self, Element, esc};

/// SOAP 1.2 content type of every enrollment answer.
pub const SOAP_CONTENT_TYPE: &str = "application/soap+xml; charset=utf-8";

const NS_ENROLL: &str = "http://schemas.microsoft.com/windows/management/2012/01/enrollment";
const ACTION_DISCOVER_RESP: &str =
    "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/DiscoverResponse";
const ACTION_POLICY_RESP: &str =
    "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPoliciesResponse";
const ACTION_RSTRC: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep";
const ACTION_FAULT: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstepfault";
const TOKEN_TYPE: &str = "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken";
const PROVISION_DOC: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentProvisionDoc";
const B64_ENCODING: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary";
/// The BinarySecurityToken ValueType of a token from the Federated authentication page
/// (MS-MDE2, the Federated security token; Learn "Federated authentication device enrollment").
const USER_TOKEN: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken";
/// What AAUTHDATA says when the compat switch `aauthdata_nonce` is on: the word itself.
const LITERAL_NONCE: &str = "nonce";

/// A SOAP fault of MS-MDE2 §2.2.10, with what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("0x80180001 MessageFormat: {0}")]
    MessageFormat(String),
    #[error("0x80180002 Authentication: {0}")]
    Authentication(String),
    #[error("0x80180004 CertificateRequest: {0}")]
    CertificateRequest(String),
    #[error("0x80180005 EnrollmentServer: {0}")]
    EnrollmentServer(String),
}

impl Fault {
    /// The `s:Subcode` value.
    pub fn subcode(&self) -> &'static str {
        match self {
            Fault::MessageFormat(_) => "s:MessageFormat",
            Fault::Authentication(_) => "s:Authentication",
            Fault::CertificateRequest(_) => "s:CertificateRequest",
            Fault::EnrollmentServer(_) => "s:EnrollmentServer",
        }
    }

    /// The HRESULT the Windows client maps the subcode to.
    pub fn hresult(&self) -> u32 {
        match self {
            Fault::MessageFormat(_) => 0x8018_0001,
            Fault::Authentication(_) => 0x8018_0002,
            Fault::CertificateRequest(_) => 0x8018_0004,
            Fault::EnrollmentServer(_) => 0x8018_0005,
        }
    }

    fn error_type(&self) -> &'static str {
        &self.subcode()[2..]
    }
}

/// An answer: HTTP status and SOAP body.
#[derive(Debug)]
pub struct SoapReply {
    pub status: u16,
    pub body: String,
}

/// What the server knows when it answers an enrollment request.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub pki: &'a Pki,
    /// `https://host:port` (no trailing slash).
    pub base: &'a str,
    pub now: DateTime<Utc>,
    /// The compat switches in force.
    pub compat: Compat,
    /// The tokens the Federated authentication page issued.
    pub tokens: &'a IssuedTokens,
}

/// A successful enrollment, for the server's records and app-layer auth.
pub struct Enrolled {
    pub device_id: String,
    pub record: EnrollmentRecord,
    pub creds: Creds,
}

/// `POST Discovery.svc`: the DiscoverResponse: AuthPolicy OnPremise, or (compat `federated`)
/// Federated with this server's authentication page for an e-mail-shaped address, whatever
/// policies the client listed.
pub fn discover(body: &str, ctx: &Ctx<'_>) -> SoapReply {
    let env = match envelope(body) {
        Ok(e) => e,
        Err(f) => return fault(&f, None, ctx.now),
    };
    let relates = message_id(&env);
    let Some(req) = env.find("Discover") else {
        return fault(&Fault::MessageFormat("no Discover element in the body".into()), relates.as_deref(), ctx.now);
    };
    // Answer the client's RequestVersion, up to the 5.0 this server implements.
    let requested = req.find("RequestVersion").and_then(|v| v.trimmed().parse::<f32>().ok()).unwrap_or(4.0);
    let version = if requested >= 5.0 { "5.0" } else { "4.0" };
    let base = ctx.base;
    let email = req.find("EmailAddress").map(|e| e.trimmed()).unwrap_or_default();
    let federated = ctx.compat.federated && email_shaped(email);
    // MS-MDE2 DiscoverResult: AuthenticationServiceUrl comes last, and only for Federated.
    let (policy, auth_url) = if federated {
        (
            "Federated",
            format!("<AuthenticationServiceUrl>{}</AuthenticationServiceUrl>", esc(&format!("{base}{AUTH_PATH}"))),
        )
    } else {
        ("OnPremise", String::new())
    };
    let body = format!(
        r#"<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><DiscoverResponse xmlns="{NS_ENROLL}"><DiscoverResult><AuthPolicy>{policy}</AuthPolicy><EnrollmentVersion>{version}</EnrollmentVersion><EnrollmentPolicyServiceUrl>{}</EnrollmentPolicyServiceUrl><EnrollmentServiceUrl>{}</EnrollmentServiceUrl>{auth_url}</DiscoverResult></DiscoverResponse></s:Body>"#,
        esc(&format!("{base}/EnrollmentServer/Policy.svc")),
        esc(&format!("{base}/EnrollmentServer/Enrollment.svc")),
    );
    SoapReply { status: 200, body: envelope_out(ACTION_DISCOVER_RESP, relates.as_deref(), "", &body) }
}

/// `POST Policy.svc`: MS-XCEP GetPoliciesResponse, 2048-bit keys, SHA-256; or (compat
/// `policy_response`) a nil `response` (the element is nillable in MS-XCEP), after which the
/// Windows client uses its defaults.
pub fn policies(body: &str, ctx: &Ctx<'_>) -> SoapReply {
    let env = match envelope(body) {
        Ok(e) => e,
        Err(f) => return fault(&f, None, ctx.now),
    };
    let relates = message_id(&env);
    if env.find("GetPolicies").is_none() {
        return fault(&Fault::MessageFormat("no GetPolicies element in the body".into()), relates.as_deref(), ctx.now);
    }
    if let Err(f) = authenticate(&env, ctx) {
        return fault(&f, relates.as_deref(), ctx.now);
    }
    let body = match ctx.compat.policy_response {
        PolicyResponse::Full => FULL_POLICY,
        PolicyResponse::Nil => NIL_POLICY,
        // Some servers write the prefix without ever declaring it.
        PolicyResponse::NilUndeclared => NIL_POLICY_UNDECLARED,
    };
    SoapReply { status: 200, body: envelope_out(ACTION_POLICY_RESP, relates.as_deref(), "", body) }
}

const NIL_POLICY: &str = r#"<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><GetPoliciesResponse xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy"><response xsi:nil="true"/><cAs xsi:nil="true"/><oIDs xsi:nil="true"/></GetPoliciesResponse></s:Body>"#;
const NIL_POLICY_UNDECLARED: &str = r#"<s:Body><GetPoliciesResponse xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy"><response xsi:nil="true"/><cAs xsi:nil="true"/><oIDs xsi:nil="true"/></GetPoliciesResponse></s:Body>"#;
const FULL_POLICY: &str = r#"<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><GetPoliciesResponse xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy"><response><policyID/><policyFriendlyName xsi:nil="true"/><nextUpdateHours xsi:nil="true"/><policiesNotChanged xsi:nil="true"/><policies><policy><policyOIDReference>0</policyOIDReference><cAs xsi:nil="true"/><attributes><commonName>mdmsim</commonName><policySchema>3</policySchema><certificateValidity><validityPeriodSeconds>31536000</validityPeriodSeconds><renewalPeriodSeconds>3456000</renewalPeriodSeconds></certificateValidity><permission><enroll>true</enroll><autoEnroll>false</autoEnroll></permission><privateKeyAttributes><minimalKeyLength>2048</minimalKeyLength><keySpec xsi:nil="true"/><keyUsageProperty xsi:nil="true"/><permissions xsi:nil="true"/><algorithmOIDReference xsi:nil="true"/><cryptoProviders xsi:nil="true"/></privateKeyAttributes><revision><majorRevision>101</majorRevision><minorRevision>0</minorRevision></revision><supersededPolicies xsi:nil="true"/><privateKeyFlags xsi:nil="true"/><subjectNameFlags xsi:nil="true"/><enrollmentFlags xsi:nil="true"/><generalFlags xsi:nil="true"/><hashAlgorithmOIDReference>0</hashAlgorithmOIDReference><rARequirements xsi:nil="true"/><keyArchivalAttributes xsi:nil="true"/><extensions xsi:nil="true"/></attributes></policy></policies></response><cAs xsi:nil="true"/><oIDs><oID><value>2.16.840.1.101.3.4.2.1</value><group>4</group><oIDReferenceID>0</oIDReferenceID><defaultName>szOID_NIST_sha256</defaultName></oID></oIDs></GetPoliciesResponse></s:Body>"#;

/// `POST Enrollment.svc`: MS-WSTEP RequestSecurityToken -> certificate + provisioning doc.
pub fn enroll(body: &str, ctx: &Ctx<'_>) -> (SoapReply, Option<Enrolled>) {
    let env = match envelope(body) {
        Ok(e) => e,
        Err(f) => return (fault(&f, None, ctx.now), None),
    };
    let relates = message_id(&env);
    match issue(&env, ctx) {
        Ok((doc, enrolled)) => {
            let created = ctx.now.to_rfc3339_opts(SecondsFormat::Millis, true);
            let expires = (ctx.now + chrono::Duration::minutes(5)).to_rfc3339_opts(SecondsFormat::Millis, true);
            let security = format!(
                r#"<o:Security s:mustUnderstand="1" xmlns:o="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"><u:Timestamp u:Id="_0"><u:Created>{created}</u:Created><u:Expires>{expires}</u:Expires></u:Timestamp></o:Security>"#
            );
            let body = format!(
                r#"<s:Body><RequestSecurityTokenResponseCollection xmlns="http://docs.oasis-open.org/ws-sx/ws-trust/200512"><RequestSecurityTokenResponse><TokenType>{TOKEN_TYPE}</TokenType><DispositionMessage xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollment"/><RequestedSecurityToken><BinarySecurityToken ValueType="{PROVISION_DOC}" EncodingType="{B64_ENCODING}" xmlns="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">{}</BinarySecurityToken></RequestedSecurityToken><RequestID xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollment">0</RequestID></RequestSecurityTokenResponse></RequestSecurityTokenResponseCollection></s:Body>"#,
                B64.encode(doc.as_bytes())
            );
            (
                SoapReply { status: 200, body: envelope_out(ACTION_RSTRC, relates.as_deref(), &security, &body) },
                Some(enrolled),
            )
        }
        Err(f) => (fault(&f, relates.as_deref(), ctx.now), None),
    }
}

fn issue(env: &Element, ctx: &Ctx<'_>) -> Result<(String, Enrolled), Fault> {
    let rst = env
        .child("Body")
        .and_then(|b| b.find("RequestSecurityToken"))
        .ok_or_else(|| Fault::MessageFormat("no RequestSecurityToken in the body".into()))?;
    let user = authenticate(env, ctx)?;
    if let Some(t) = rst.find("RequestType")
        && !t.trimmed().ends_with("/Issue")
    {
        return Err(Fault::MessageFormat(format!("RequestType {:?} is not supported (only Issue)", t.trimmed())));
    }
    let csr_b64 = rst
        .find("BinarySecurityToken")
        .map(|e| e.text.chars().filter(|c| !c.is_whitespace()).collect::<String>())
        .ok_or_else(|| Fault::MessageFormat("no BinarySecurityToken (PKCS#10) in RequestSecurityToken".into()))?;
    let csr = B64
        .decode(csr_b64.as_bytes())
        .map_err(|e| Fault::MessageFormat(format!("the BinarySecurityToken is not base64: {e}")))?;
    let mut context = Vec::new();
    let mut items = Vec::new();
    rst.find_all("ContextItem", &mut items);
    for item in items {
        let name = item.attr("Name").unwrap_or_default().to_string();
        let value = item.child("Value").map(|v| v.trimmed().to_string()).unwrap_or_default();
        context.push((name, value));
    }
    let ctx_value = |name: &str| context.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let device_id = match ctx_value("DeviceID").filter(|v| !v.is_empty()) {
        Some(id) => id.to_string(),
        None => csr_device_id(&csr).ok_or_else(|| {
            Fault::MessageFormat(
                "no DeviceID in AdditionalContext and none in the CSR subject (CN=...!<DeviceID>)".into(),
            )
        })?,
    };
    if device_id.len() > 64 || !device_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Fault::MessageFormat(format!("DeviceID {device_id:?} is not 1-64 letters, digits or '-'")));
    }
    let issued =
        ctx.pki.issue_client(&csr, &device_id, ctx.config.enrollment.cert_validity_days).map_err(|e| match e {
            PkiError::BadCsr(_) | PkiError::CsrSignature | PkiError::WeakKey(_) => {
                Fault::CertificateRequest(e.to_string())
            }
            other => Fault::EnrollmentServer(other.to_string()),
        })?;
    let device_scope = ctx_value("EnrollmentType").is_some_and(|t| t.eq_ignore_ascii_case("Device"));
    let store = if device_scope { "System" } else { "User" };
    // Compat `aauthdata_nonce`: AAUTHDATA is the word "nonce" (Fleet's provisioning document),
    // so the first Cred a device can make digests those five bytes.
    let literal = ctx.compat.aauthdata_nonce;
    let client_nonce = if literal { LITERAL_NONCE.as_bytes().to_vec() } else { fresh_nonce() };
    let creds = Creds { name: device_id.clone(), secret: hex::encode(fresh_nonce()), nonce: client_nonce };
    let server_secret = hex::encode(fresh_nonce());
    let server_nonce = fresh_nonce();
    let cert_der = issued.cert.to_der().map_err(|e| Fault::EnrollmentServer(e.to_string()))?;
    let ca_der = ctx.pki.ca_cert.to_der().map_err(|e| Fault::EnrollmentServer(e.to_string()))?;
    let c = ctx.config;
    let mut poll = String::new();
    for (name, value) in &c.dmclient.poll {
        poll.push_str(&format!(
            r#"<parm name="{}" value="{}" datatype="{}"/>"#,
            esc(name),
            esc(&value.text()),
            value.datatype()
        ));
    }
    let doc = format!(
        r#"<wap-provisioningdoc version="1.1"><characteristic type="CertificateStore"><characteristic type="Root"><characteristic type="System"><characteristic type="{ca_thumb}"><parm name="EncodedCertificate" value="{ca_b64}"/></characteristic></characteristic></characteristic><characteristic type="My"><characteristic type="{store}"><characteristic type="{thumb}"><parm name="EncodedCertificate" value="{cert_b64}"/></characteristic><characteristic type="PrivateKeyContainer"/></characteristic><characteristic type="WSTEP"><characteristic type="Renew"><parm name="ROBOSupport" value="true" datatype="boolean"/><parm name="RenewPeriod" value="60" datatype="integer"/><parm name="RetryInterval" value="4" datatype="integer"/></characteristic></characteristic></characteristic></characteristic><characteristic type="APPLICATION"><parm name="APPID" value="w7"/><parm name="PROVIDER-ID" value="{provider}"/><parm name="NAME" value="{name}"/><parm name="ADDR" value="{addr}"/><parm name="CONNRETRYFREQ" value="6"/><parm name="INITIALBACKOFFTIME" value="30000"/><parm name="MAXBACKOFFTIME" value="120000"/><parm name="BACKCOMPATRETRYDISABLED"/><parm name="DEFAULTENCODING" value="application/vnd.syncml.dm+xml"/><parm name="SSLCLIENTCERTSEARCHCRITERIA" value="{search}"/><characteristic type="APPAUTH"><parm name="AAUTHLEVEL" value="CLIENT"/><parm name="AAUTHTYPE" value="DIGEST"/><parm name="AAUTHNAME" value="{provider}"/><parm name="AAUTHSECRET" value="{server_secret}"/><parm name="AAUTHDATA" value="{server_nonce}"/></characteristic><characteristic type="APPAUTH"><parm name="AAUTHLEVEL" value="APPSRV"/><parm name="AAUTHTYPE" value="DIGEST"/><parm name="AAUTHNAME" value="{client_name}"/><parm name="AAUTHSECRET" value="{client_secret}"/><parm name="AAUTHDATA" value="{client_nonce}"/></characteristic></characteristic><characteristic type="DMClient"><characteristic type="Provider"><characteristic type="{provider}"><parm name="EntDeviceName" value="{device_name}" datatype="string"/><parm name="UPN" value="{upn}" datatype="string"/><characteristic type="Poll">{poll}</characteristic></characteristic></characteristic></characteristic></wap-provisioningdoc>"#,
        ca_thumb = ctx.pki.ca_thumbprint(),
        ca_b64 = B64.encode(ca_der),
        thumb = issued.thumbprint,
        cert_b64 = B64.encode(cert_der),
        provider = esc(&c.provider_id),
        name = esc(&c.server_name),
        addr = esc(&format!("{}/ManagementServer/MDM.svc", ctx.base)),
        search = esc(&format!("Subject=CN%3D{device_id}&Stores=My%5C{store}")),
        client_name = esc(&creds.name),
        client_secret = esc(&creds.secret),
        client_nonce = if literal { LITERAL_NONCE.to_string() } else { B64.encode(&creds.nonce) },
        server_nonce = if literal { LITERAL_NONCE.to_string() } else { B64.encode(server_nonce) },
        device_name = esc(ctx_value("DeviceName").unwrap_or(&device_id)),
        upn = esc(&user),
    );
    let record = EnrollmentRecord {
        at: ctx.now,
        user,
        enrollment_type: if device_scope { "Device".into() } else { "Full".into() },
        cert_serial: issued.serial,
        cert_thumbprint: issued.thumbprint,
        context,
    };
    Ok((doc, Enrolled { device_id, record, creds }))
}

/// The DeviceID after the last `!` of the CSR's CN (Windows sends `CN=<GUID>!<DeviceID>`).
fn csr_device_id(der: &[u8]) -> Option<String> {
    let req = openssl::x509::X509Req::from_der(der).ok()?;
    let cn = req.subject_name().entries_by_nid(openssl::nid::Nid::COMMONNAME).next()?;
    let cn = cn.data().to_string().ok()?;
    let id = cn.rsplit('!').next()?.trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// Checks the WS-Security header: a UsernameToken of a configured user, a BinarySecurityToken
/// carrying a token our authentication page issued (its user), or (when enabled) an enrollment
/// token the config accepts (`token`). Returns the user name.
fn authenticate(env: &Element, ctx: &Ctx<'_>) -> Result<String, Fault> {
    let config = ctx.config;
    let header = env.child("Header");
    let security = header.and_then(|h| h.find("Security"));
    if let Some(ut) = security.and_then(|s| s.find("UsernameToken")) {
        let user = ut.find("Username").map(|u| u.trimmed().to_string()).unwrap_or_default();
        let password = ut.find("Password").map(|p| p.text.clone()).unwrap_or_default();
        return if config.users.iter().any(|u| u.name.eq_ignore_ascii_case(&user) && u.password == password) {
            Ok(user)
        } else {
            Err(Fault::Authentication(format!("invalid user name or password for {user:?}")))
        };
    }
    if let Some(bst) = security.and_then(|s| s.find("BinarySecurityToken")) {
        let raw: String = bst.text.chars().filter(|c| !c.is_whitespace()).collect();
        let decoded = B64.decode(raw.as_bytes()).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or(raw);
        if let Some(user) = ctx.tokens.user(&decoded) {
            let value_type = bst.attr("ValueType").unwrap_or_default();
            return if value_type == USER_TOKEN {
                Ok(user)
            } else {
                Err(Fault::Authentication(format!(
                    "the token from the authentication page came with ValueType {value_type:?}, expected {USER_TOKEN}"
                )))
            };
        }
        if !config.enrollment.token_auth {
            let why = if ctx.compat.federated {
                "the token was not issued by this server's authentication page"
            } else {
                "token authentication is not enabled on this server"
            };
            return Err(Fault::Authentication(why.into()));
        }
        let ok = if config.enrollment.tokens.is_empty() {
            !decoded.is_empty()
        } else {
            config.enrollment.tokens.contains(&decoded)
        };
        return if ok {
            Ok("token".into())
        } else {
            Err(Fault::Authentication("the enrollment token is not accepted".into()))
        };
    }
    Err(Fault::Authentication("no UsernameToken or BinarySecurityToken in the WS-Security header".into()))
}

fn envelope(body: &str) -> Result<Element, Fault> {
    let env = xml::parse(body).map_err(Fault::MessageFormat)?;
    if env.name != "Envelope" {
        return Err(Fault::MessageFormat(format!("root element is <{}>, expected a SOAP Envelope", env.name)));
    }
    if env.child("Body").is_none() {
        return Err(Fault::MessageFormat("the SOAP Envelope has no Body".into()));
    }
    Ok(env)
}

fn message_id(env: &Element) -> Option<String> {
    env.child("Header").and_then(|h| h.child("MessageID")).map(|m| m.trimmed().to_string())
}

fn envelope_out(action: &str, relates: Option<&str>, extra_header: &str, body: &str) -> String {
    let relates = relates.map(|r| format!("<a:RelatesTo>{}</a:RelatesTo>", esc(r))).unwrap_or_default();
    format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing" xmlns:u="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"><s:Header><a:Action s:mustUnderstand="1">{action}</a:Action><ActivityId CorrelationId="{id}" xmlns="http://schemas.microsoft.com/2004/09/ServiceModel/Diagnostics">{id}</ActivityId>{relates}{extra_header}</s:Header>{body}</s:Envelope>"#,
        id = uuid::Uuid::new_v4()
    )
}

/// A SOAP 1.2 Receiver fault with the MS-MDE2 subcode and DeviceEnrollmentServiceError detail;
/// HTTP 500 as the SOAP 1.2 HTTP binding prescribes for a fault.
pub fn fault(f: &Fault, relates: Option<&str>, now: DateTime<Utc>) -> SoapReply {
    let _ = now;
    let body = format!(
        r#"<s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>{sub}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{reason}</s:Text></s:Reason><s:Detail><DeviceEnrollmentServiceError xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollment"><ErrorType>{etype}</ErrorType><Message>{reason}</Message><TraceId>{trace}</TraceId></DeviceEnrollmentServiceError></s:Detail></s:Fault></s:Body>"#,
        sub = f.subcode(),
        reason = esc(&f.to_string()),
        etype = f.error_type(),
        trace = uuid::Uuid::new_v4(),
    );
    SoapReply { status: 500, body: envelope_out(ACTION_FAULT, relates, "", &body) }
}

/// The CN of a certificate (re-exported for the HTTP layer).
pub fn cert_cn(cert: &openssl::x509::X509Ref) -> Option<String> {
    common_name(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_carry_subcode_and_hresult() {
        let r = fault(&Fault::Authentication("bad".into()), Some("urn:uuid:1"), Utc::now());
        assert_eq!(r.status, 500);
        assert!(r.body.contains("<s:Value>s:Authentication</s:Value>"), "{}", r.body);
        assert!(r.body.contains("0x80180002"));
        assert!(r.body.contains("<a:RelatesTo>urn:uuid:1</a:RelatesTo>"));
        assert_eq!(Fault::MessageFormat(String::new()).hresult(), 0x8018_0001);
    }
}
