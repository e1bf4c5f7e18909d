//! Enrollment end to end: `runner::enroll::enroll` against a small MS-MDE2 server written here
//! (axum on 127.0.0.1, a test CA made at test time that signs the device's CSR), then the
//! failures a server can produce: each SOAP fault, a malformed provisioning document, a
//! certificate for the wrong key, an unreachable server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509, X509NameBuilder, X509Req};

use mdmsim::enroll::{AuthToken, DeviceIdentity, FaultKind, HashAlg, Secret, ServiceErrorKind, account_uid, xml};
use mdmsim::runner::enroll::{EnrollError, EnrollRequest, Step, enroll, write_private_key};

const DEVICE_ID: &str = "1E08C6E95D8BB843B1278FF45BC60CC6";

/// A certificate authority made for one test.
struct TestCa {
    key: PKey<Private>,
    cert: X509,
}

impl TestCa {
    fn new() -> TestCa {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "mdmsim test CA").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        TestCa { key, cert: b.build() }
    }

    /// Issues a client certificate `CN=<DeviceID>` (as Fleet does) for a public key.
    fn issue(&self, cn: &str, public: &PKey<openssl::pkey::Public>) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.set_pubkey(public).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
        b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap()).unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        b.build()
    }
}

fn serial() -> openssl::asn1::Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

fn thumb(cert: &X509) -> String {
    hex::encode_upper(cert.digest(MessageDigest::sha1()).unwrap())
}

/// What the test server does at the RST.
#[derive(Clone, Debug)]
enum Behaviour {
    Issue,
    /// Answer the RST with this fault body (HTTP 500, as WCF does).
    FaultAtEnroll(String),
    /// Answer Discover with this fault body (HTTP 200).
    FaultAtDiscover(String),
    /// A provisioning document without ADDR.
    NoAddr,
    /// A certificate for another key.
    WrongKey,
    /// Discovery says Federated.
    Federated,
    /// No policy service in discovery.
    NoPolicy,
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    probes: usize,
    discover_email: Option<String>,
    policy_password: Option<String>,
    csr: Option<X509Req>,
    context: Vec<(String, String)>,
    rst_token_type: Option<String>,
}

struct Srv {
    addr: SocketAddr,
    ca: TestCa,
    behaviour: Behaviour,
    key_bits: u32,
    seen: Mutex<Seen>,
}

type Reply = (StatusCode, [(&'static str, &'static str); 1], String);

fn soap(status: StatusCode, body: String) -> Reply {
    (status, [("content-type", "application/soap+xml; charset=utf-8")], body)
}

fn envelope(action: &str, body: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">{action}</a:Action></s:Header><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

fn fault(subcode: &str, reason: &str, detail: Option<&str>) -> String {
    let detail = detail.map(|d| format!(
        r#"<s:Detail><DeviceEnrollmentServiceError xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollment"><ErrorType>{d}</ErrorType><Message>test says {d}</Message><TraceId>t-1</TraceId></DeviceEnrollmentServiceError></s:Detail>"#
    )).unwrap_or_default();
    envelope(
        "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep",
        &format!(
            r#"<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{reason}</s:Text></s:Reason>{detail}</s:Fault>"#
        ),
    )
}

async fn probe(State(s): State<Arc<Srv>>) -> StatusCode {
    s.seen.lock().unwrap().probes += 1;
    StatusCode::OK
}

async fn discover(State(s): State<Arc<Srv>>, body: String) -> Reply {
    let root = xml::parse(&body).expect("the Discover request is well-formed XML");
    let req = root.path(&["Body", "Discover", "request"]).expect("Discover/request");
    s.seen.lock().unwrap().discover_email = req.child_value("EmailAddress").map(str::to_string);
    if let Behaviour::FaultAtDiscover(f) = &s.behaviour {
        return soap(StatusCode::OK, f.clone());
    }
    let base = format!("http://{}/EnrollmentServer", s.addr);
    let policy = match s.behaviour {
        Behaviour::NoPolicy => String::new(),
        _ => format!("<EnrollmentPolicyServiceUrl>{base}/Policy.svc</EnrollmentPolicyServiceUrl>"),
    };
    let (auth, auth_url) = match s.behaviour {
        Behaviour::Federated => {
            ("Federated", format!("<AuthenticationServiceUrl>{base}/Auth</AuthenticationServiceUrl>"))
        }
        _ => ("OnPremise", String::new()),
    };
    soap(
        StatusCode::OK,
        envelope(
            "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/DiscoverResponse",
            &format!(
                r#"<DiscoverResponse xmlns="http://schemas.microsoft.com/windows/management/2012/01/enrollment"><DiscoverResult><AuthPolicy>{auth}</AuthPolicy><EnrollmentVersion>5.0</EnrollmentVersion>{policy}<EnrollmentServiceUrl>{base}/Enrollment.svc</EnrollmentServiceUrl>{auth_url}</DiscoverResult></DiscoverResponse>"#
            ),
        ),
    )
}

async fn policy(State(s): State<Arc<Srv>>, body: String) -> Reply {
    let root = xml::parse(&body).expect("GetPolicies is well-formed XML");
    let pw = root.path(&["Header", "Security", "UsernameToken", "Password"]).map(|e| e.value().to_string());
    s.seen.lock().unwrap().policy_password = pw;
    let bits = s.key_bits;
    soap(
        StatusCode::OK,
        envelope(
            "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPoliciesResponse",
            &format!(
                r#"<GetPoliciesResponse xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy"><response><policies><policy><policyOIDReference>0</policyOIDReference><attributes><policySchema>3</policySchema><privateKeyAttributes><minimalKeyLength>{bits}</minimalKeyLength></privateKeyAttributes><hashAlgorithmOIDReference>0</hashAlgorithmOIDReference></attributes></policy></policies></response><oIDs><oID><value>2.16.840.1.101.3.4.2.1</value><group>1</group><oIDReferenceID>0</oIDReferenceID><defaultName>szOID_NIST_sha256</defaultName></oID></oIDs></GetPoliciesResponse>"#
            ),
        ),
    )
}

async fn enrollment(State(s): State<Arc<Srv>>, body: String) -> Reply {
    let root = xml::parse(&body).expect("the RST is well-formed XML");
    let rst = root.path(&["Body", "RequestSecurityToken"]).expect("RequestSecurityToken");
    let csr_b64 = rst.child_value("BinarySecurityToken").expect("PKCS#10 token");
    let csr_der = B64.decode(csr_b64).expect("base64 CSR");
    let csr = X509Req::from_der(&csr_der).expect("DER PKCS#10");
    let context: Vec<(String, String)> = rst
        .child("AdditionalContext")
        .map(|ac| {
            ac.children
                .iter()
                .map(|c| (c.attr("Name").unwrap_or("").to_string(), c.child_value("Value").unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let token_type =
        root.path(&["Header", "Security", "BinarySecurityToken"]).and_then(|t| t.attr("ValueType")).map(str::to_string);
    {
        let mut seen = s.seen.lock().unwrap();
        seen.csr = X509Req::from_der(&csr_der).ok();
        seen.context = context;
        seen.rst_token_type = token_type;
    }
    if let Behaviour::FaultAtEnroll(f) = &s.behaviour {
        return soap(StatusCode::INTERNAL_SERVER_ERROR, f.clone());
    }
    let public = match s.behaviour {
        Behaviour::WrongKey => {
            let other = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
            PKey::public_key_from_der(&other.public_key_to_der().unwrap()).unwrap()
        }
        _ => csr.public_key().unwrap(),
    };
    let cert = s.ca.issue(DEVICE_ID, &public);
    let addr = match s.behaviour {
        Behaviour::NoAddr => String::new(),
        _ => format!(r#"<parm name="ADDR" value="https://{}/ManagementServer/MDM.svc"/>"#, s.addr),
    };
    let doc = format!(
        r#"<wap-provisioningdoc version="1.1">
<characteristic type="CertificateStore"><characteristic type="Root"><characteristic type="System"><characteristic type="{rt}"><parm name="EncodedCertificate" value="{root}"/></characteristic></characteristic></characteristic></characteristic>
<characteristic type="CertificateStore"><characteristic type="My"><characteristic type="User"><characteristic type="{ct}"><parm name="EncodedCertificate" value="{client}"/></characteristic><characteristic type="PrivateKeyContainer"/></characteristic></characteristic></characteristic>
<characteristic type="APPLICATION"><parm name="APPID" value="w7"/><parm name="PROVIDER-ID" value="TestMDM"/><parm name="NAME" value="Test MDM"/>{addr}<parm name="CONNRETRYFREQ" value="2"/><parm name="INITIALBACKOFFTIME" value="1000"/><parm name="MAXBACKOFFTIME" value="5000"/><parm name="BACKCOMPATRETRYDISABLED"/><parm name="DEFAULTENCODING" value="application/vnd.syncml.dm+xml"/><parm name="SSLCLIENTCERTSEARCHCRITERIA" value="Subject=CN%3D{DEVICE_ID}&amp;Stores=My%5CUser"/>
<characteristic type="APPAUTH"><parm name="AAUTHLEVEL" value="CLIENT"/><parm name="AAUTHTYPE" value="DIGEST"/><parm name="AAUTHSECRET" value="srv-secret"/><parm name="AAUTHDATA" value="{n1}"/></characteristic>
<characteristic type="APPAUTH"><parm name="AAUTHLEVEL" value="APPSRV"/><parm name="AAUTHTYPE" value="DIGEST"/><parm name="AAUTHNAME" value="{DEVICE_ID}"/><parm name="AAUTHSECRET" value="dev-secret"/><parm name="AAUTHDATA" value="{n2}"/></characteristic></characteristic>
<characteristic type="DMClient"><characteristic type="Provider"><characteristic type="TestMDM"><parm name="EntDMID" value="{DEVICE_ID}" datatype="string"/><characteristic type="Poll"><parm name="NumberOfFirstRetries" value="0" datatype="integer"/><parm name="IntervalForFirstSetOfRetries" value="1" datatype="integer"/></characteristic></characteristic></characteristic></characteristic>
</wap-provisioningdoc>"#,
        rt = thumb(&s.ca.cert),
        root = B64.encode(s.ca.cert.to_der().unwrap()),
        ct = thumb(&cert),
        client = B64.encode(cert.to_der().unwrap()),
        n1 = B64.encode(b"srv-nonce"),
        n2 = B64.encode(b"dev-nonce"),
    );
    soap(
        StatusCode::OK,
        envelope(
            "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep",
            &format!(
                r#"<RequestSecurityTokenResponseCollection xmlns="http://docs.oasis-open.org/ws-sx/ws-trust/200512"><RequestSecurityTokenResponse><TokenType>http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken</TokenType><RequestedSecurityToken><BinarySecurityToken ValueType="http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentProvisionDoc" EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary" xmlns="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">{}</BinarySecurityToken></RequestedSecurityToken><RequestID xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollment">0</RequestID></RequestSecurityTokenResponse></RequestSecurityTokenResponseCollection>"#,
                B64.encode(doc)
            ),
        ),
    )
}

/// Starts the test server; returns its state and the discovery URL.
async fn start(behaviour: Behaviour, key_bits: u32) -> (Arc<Srv>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = Arc::new(Srv { addr, ca: TestCa::new(), behaviour, key_bits, seen: Mutex::new(Seen::default()) });
    let app = Router::new()
        .route("/EnrollmentServer/Discovery.svc", get(probe).post(discover))
        .route("/EnrollmentServer/Policy.svc", post(policy))
        .route("/EnrollmentServer/Enrollment.svc", post(enrollment))
        .with_state(srv.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (srv, format!("http://{addr}/EnrollmentServer/Discovery.svc"))
}

fn request(auth: AuthToken) -> EnrollRequest {
    let mut device = DeviceIdentity::new(DEVICE_ID, &"7".repeat(64));
    device.macs = vec!["00-0C-29-51-60-9D".into()];
    EnrollRequest::new("user@example.com", auth, device)
}

fn password() -> AuthToken {
    AuthToken::OnPremise { username: "user@example.com".into(), password: Secret::new("pa55word") }
}

#[tokio::test]
async fn enrollment_gets_a_certificate_for_its_own_key_and_a_typed_provisioning() {
    let (srv, url) = start(Behaviour::Issue, 3072).await;
    let client = reqwest::Client::new();
    let enrolled = enroll(&client, &url, request(password())).await.expect("enrollment succeeds");

    // What the server saw: one probe, the email, the password, a CSR that verifies.
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen.probes, 1);
    assert_eq!(seen.discover_email.as_deref(), Some("user@example.com"));
    assert_eq!(seen.policy_password.as_deref(), Some("pa55word"));
    let csr = seen.csr.as_ref().unwrap();
    let csr_key = csr.public_key().unwrap();
    assert!(csr.verify(&csr_key).unwrap(), "the CSR's signature verifies");
    assert_eq!(csr_key.bits(), 3072, "the policy's minimal key length is honoured");
    let text = String::from_utf8(csr.to_text().unwrap()).unwrap();
    assert!(text.contains("sha256WithRSAEncryption"), "the policy's hash is honoured:\n{text}");
    let ctx = |name: &str| seen.context.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    assert_eq!(ctx("DeviceID"), [DEVICE_ID]);
    assert_eq!(ctx("EnrollmentType"), ["Full"]);
    assert_eq!(ctx("MAC"), ["00-0C-29-51-60-9D"]);
    assert_eq!(ctx("RequestVersion"), ["5.0"]);

    // What the device got.
    assert_eq!(enrolled.policy.hash, HashAlg::Sha256);
    assert_eq!(enrolled.management_url(), format!("https://{}/ManagementServer/MDM.svc", srv.addr));
    assert_eq!(enrolled.provisioning.client_cert.subject_cn().as_deref(), Some(DEVICE_ID));
    let key = PKey::private_key_from_pem(enrolled.key_pem.expose().as_bytes()).unwrap();
    assert!(key.public_eq(&csr_key), "the key returned is the CSR's");
    let client_cert = X509::from_pem(enrolled.client_cert_pem.as_bytes()).unwrap();
    assert!(client_cert.verify(&srv.ca.cert.public_key().unwrap()).unwrap(), "the client certificate is the CA's");
    assert_eq!(enrolled.root_certs_pem.len(), 1);
    assert_eq!(enrolled.findings, Vec::new(), "the test server's document conforms");
    enrolled.identity().expect("certificate and key make an mTLS identity");
    assert_eq!(enrolled.root_certificates().len(), 1);
    let auth = enrolled.app_auth();
    assert_eq!(auth.account, account_uid("TestMDM"));
    assert_eq!(auth.client.as_ref().unwrap().nonce, b"dev-nonce");
    assert!(auth.cred().is_some(), "a digest is ready for the first session");
    assert!(!format!("{enrolled:?}").contains("PRIVATE KEY"), "Debug never shows the key");
    assert!(!format!("{enrolled:?}").contains("dev-secret"), "Debug never shows AAUTHSECRET");

    // The key on disk is the owner's only.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.key");
    write_private_key(&path, &enrolled.key_pem).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[tokio::test]
async fn without_policy_service_the_csr_is_2048_bit_sha1_and_tokens_are_sent() {
    let (srv, url) = start(Behaviour::NoPolicy, 0).await;
    let tok = AuthToken::FleetOrbit { orbit_node_key: Secret::new("orbit-key") };
    let enrolled = enroll(&reqwest::Client::new(), &url, request(tok)).await.unwrap();
    assert_eq!(enrolled.policy.hash, HashAlg::Sha1);
    let seen = srv.seen.lock().unwrap();
    let csr = seen.csr.as_ref().unwrap();
    assert_eq!(csr.public_key().unwrap().bits(), 2048);
    assert!(String::from_utf8(csr.to_text().unwrap()).unwrap().contains("sha1WithRSAEncryption"));
    assert_eq!(
        seen.rst_token_type.as_deref(),
        Some("http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken")
    );
    assert_eq!(seen.policy_password, None, "no policy request was made");
}

#[tokio::test]
async fn every_soap_fault_becomes_a_typed_error_with_its_code() {
    let cases = [
        ("s:MessageFormat", FaultKind::MessageFormat, 0x8018_0001u32),
        ("s:Authentication", FaultKind::Authentication, 0x8018_0002),
        ("s:Authorization", FaultKind::Authorization, 0x8018_0003),
        ("s:CertificateRequest", FaultKind::CertificateRequest, 0x8018_0004),
        ("s:EnrollmentServer", FaultKind::EnrollmentServer, 0x8018_0005),
        ("a:InternalServiceFault", FaultKind::InternalServiceFault, 0x8018_0006),
        ("a:InvalidSecurity", FaultKind::InvalidSecurity, 0x8018_0007),
    ];
    for (subcode, kind, hresult) in cases {
        let (_srv, url) = start(Behaviour::FaultAtEnroll(fault(subcode, "refused by test", None)), 2048).await;
        let err = enroll(&reqwest::Client::new(), &url, request(password())).await.unwrap_err();
        let EnrollError::Fault { step, fault, .. } = &err else { panic!("{subcode}: expected a fault, got {err}") };
        assert_eq!(*step, Step::Enroll);
        assert_eq!(fault.kind, kind, "{subcode}");
        assert_eq!(fault.hresult(), Some(hresult), "{subcode}");
        let shown = err.to_string();
        assert!(shown.contains(&format!("0x{hresult:08X}")) && shown.contains("refused by test"), "{shown}");
        assert_eq!(err.exit_code(), 4);
    }
    // The detail names the precise error.
    let (_srv, url) =
        start(Behaviour::FaultAtEnroll(fault("s:Authorization", "cap", Some("DeviceCapReached"))), 2048).await;
    let err = enroll(&reqwest::Client::new(), &url, request(password())).await.unwrap_err();
    let f = err.fault().expect("a fault");
    assert_eq!(f.detail.as_ref().map(|d| d.kind.clone()), Some(ServiceErrorKind::DeviceCapReached));
    assert_eq!(f.hresult(), Some(0x8018_0013));
    assert!(err.to_string().contains("DeviceCapReached"), "{err}");
    // A fault at discovery, with HTTP 200.
    let (_srv, url) = start(Behaviour::FaultAtDiscover(fault("s:MessageFormat", "bad", None)), 2048).await;
    let err = enroll(&reqwest::Client::new(), &url, request(password())).await.unwrap_err();
    assert!(matches!(err, EnrollError::Fault { step: Step::Discover, .. }), "{err}");
}

#[tokio::test]
async fn bad_provisioning_wrong_certificate_and_unreachable_servers_are_named() {
    let (_srv, url) = start(Behaviour::NoAddr, 2048).await;
    let err = enroll(&reqwest::Client::new(), &url, request(password())).await.unwrap_err();
    let EnrollError::Malformed { step: Step::Provisioning, error, .. } = &err else { panic!("{err}") };
    assert_eq!(error.element, "characteristic");
    assert!(err.to_string().contains("ADDR"), "{err}");

    let (_srv, url) = start(Behaviour::WrongKey, 2048).await;
    let err = enroll(&reqwest::Client::new(), &url, request(password())).await.unwrap_err();
    assert!(matches!(err, EnrollError::Certificate { .. }), "{err}");
    assert!(err.to_string().contains("not for the key"), "{err}");

    // Federated with a password: the web view opens the AuthenticationServiceUrl, which this
    // server does not serve; the error names the page and what it answered.
    let (_srv, url) = start(Behaviour::Federated, 2048).await;
    let err = enroll(&reqwest::Client::new(), &url, request(password())).await.unwrap_err();
    assert!(matches!(err, EnrollError::HttpStatus { step: Step::SignIn, .. }), "{err}");
    assert!(err.to_string().contains("/Auth?appru=ms%2Dapp"), "{err}");
    assert_eq!(err.exit_code(), 4);

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("http://127.0.0.1:{port}/EnrollmentServer/Discovery.svc");
    let err = enroll(&reqwest::Client::new(), &url, request(password())).await.unwrap_err();
    assert!(matches!(err, EnrollError::Unreachable { step: Step::Probe, .. }), "{err}");
    assert_eq!(err.exit_code(), 3);
}

/// A TLS server on 127.0.0.1 that requires a client certificate from `ca` (the management
/// server of the post-enrollment session, as far as TLS goes). Serves `connections` connections
/// and reports the client certificate CN of each (None when the handshake failed).
fn mtls_server(ca: &TestCa, connections: usize) -> (u16, std::sync::mpsc::Receiver<Option<String>>) {
    use std::io::{Read as _, Write as _};

    use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
    use openssl::x509::extension::SubjectAlternativeName;

    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "127.0.0.1").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    let san = SubjectAlternativeName::new().ip("127.0.0.1").build(&b.x509v3_context(Some(&ca.cert), None)).unwrap();
    b.append_extension(san).unwrap();
    b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap()).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    let server_cert = b.build();

    let mut acc = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acc.set_private_key(&key).unwrap();
    acc.set_certificate(&server_cert).unwrap();
    acc.add_client_ca(&ca.cert).unwrap();
    acc.cert_store_mut().add_cert(ca.cert.clone()).unwrap();
    acc.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    let acc = acc.build();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((tcp, _)) = listener.accept() else { return };
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok();
            let cn = match acc.accept(tcp) {
                Ok(mut tls) => {
                    let cn = tls.ssl().peer_certificate().and_then(|c| {
                        c.subject_name()
                            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                            .next()
                            .and_then(|e| e.data().to_string().ok().map(|s| s.to_string()))
                    });
                    let mut buf = [0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    let _ = tls.shutdown();
                    cn
                }
                Err(_) => None,
            };
            let _ = tx.send(cn);
        }
    });
    (port, rx)
}

#[tokio::test]
async fn the_issued_certificate_opens_an_mtls_session_trusting_the_provisioned_root() {
    let (srv, url) = start(Behaviour::Issue, 2048).await;
    let enrolled = enroll(&reqwest::Client::new(), &url, request(password())).await.unwrap();
    let (port, seen) = mtls_server(&srv.ca, 2);
    let mgmt = format!("https://127.0.0.1:{port}/ManagementServer/MDM.svc");

    // With the enrollment identity, and trusting only the provisioned root.
    let builder =
        reqwest::Client::builder().identity(enrolled.identity().unwrap()).tls_certs_only(enrolled.root_certificates());
    let resp = builder.build().unwrap().post(&mgmt).body("<SyncML/>").send().await.expect("mTLS session");
    assert_eq!(resp.status().as_u16(), 200);
    let cn = seen.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(cn.as_deref(), Some(DEVICE_ID), "the server saw the enrollment certificate");

    // Without it, the server refuses the handshake.
    let builder = reqwest::Client::builder().tls_certs_only(enrolled.root_certificates());
    let refused = builder.build().unwrap().post(&mgmt).body("<SyncML/>").send().await;
    assert!(refused.is_err(), "a session without the client certificate must fail");
    assert_eq!(seen.recv_timeout(std::time::Duration::from_secs(10)).unwrap(), None);
}

#[tokio::test]
async fn provisioned_credentials_answer_a_challenge_and_follow_a_rekey() {
    use mdmsim::enroll::{AppAuth, AuthReaction, digest_md5};
    use mdmsim::syncml::{Chal, Command, Item, ItemCmd, Meta, Status};
    use mdmsim::tree::{Env, Profile, Tree, TreeState};

    let (_srv, url) = start(Behaviour::Issue, 2048).await;
    let enrolled = enroll(&reqwest::Client::new(), &url, request(password())).await.unwrap();
    let registry = mdmsim::csp::registry();
    let env = Env::new(chrono::Utc::now(), Profile::Win10);
    let mut state = TreeState::new();
    // The DMAcc writes of the provisioning (the DMClient ones belong to the DMClient CSP).
    let dmacc: Vec<Command> = enrolled
        .provisioning
        .tree_commands()
        .into_iter()
        .filter(|c| matches!(c, Command::Add(a) if a.items[0].target.as_deref().is_some_and(|t| t.starts_with("./SyncML/DMAcc/"))))
        .collect();
    {
        let mut tree = Tree::new(&registry, &mut state, &env);
        for c in &dmacc {
            let out = tree.execute(c);
            assert!(out[0].code.is_success(), "{c:?}: {:?}", out[0].code);
        }
    }

    // Session 1: the provisioned nonce, then a challenge with a new one.
    let mut auth = AppAuth::load(&state).expect("a DMAcc account");
    auth.begin_session();
    assert_eq!(auth.cred().unwrap().data, digest_md5(DEVICE_ID, "dev-secret", b"dev-nonce"));
    let chal = Status {
        cmd_ref: "0".into(),
        cmd: "SyncHdr".into(),
        data: "407".into(),
        chal: Some(Box::new(Chal {
            meta: Meta { next_nonce: Some(B64.encode(b"fresh")), ..Meta::typed("syncml:auth-md5", Some("b64")) },
        })),
        ..Status::default()
    };
    assert_eq!(auth.on_header_status(&chal), AuthReaction::Resend);
    assert_eq!(auth.cred().unwrap().data, digest_md5(DEVICE_ID, "dev-secret", b"fresh"));

    // The server rekeys through its own AccountUID; the nonce is kept for the next session.
    let fleet_uid = format!("0x0000800c{}", "f".repeat(64));
    let rekey = Command::Replace(ItemCmd {
        cmd_id: "5".into(),
        items: ["AAuthName", "AAuthSecret"]
            .iter()
            .zip(["new-name", "new-secret"])
            .map(|(leaf, v)| Item {
                target: Some(format!("./SyncML/DMAcc/{fleet_uid}/AppAuth/CLCRED/{leaf}")),
                data: Some(v.into()),
                ..Item::default()
            })
            .collect(),
        ..ItemCmd::default()
    });
    let out = Tree::new(&registry, &mut state, &env).execute(&rekey);
    assert!(out.iter().all(|o| o.code.is_success()), "{out:?}");
    auth.store(&mut state);

    // Session 2 uses the new credentials with the nonce of session 1's challenge.
    let mut next = AppAuth::load(&state).unwrap();
    next.begin_session();
    assert_eq!(next.cred().unwrap().data, digest_md5("new-name", "new-secret", b"fresh"));
}

#[tokio::test]
async fn the_record_and_files_hold_what_the_store_needs_and_no_secret() {
    use mdmsim::enroll::EnrollmentType;
    use mdmsim::runner::enroll::http_client;

    let (srv, url) = start(Behaviour::Issue, 2048).await;
    let ca_pem = srv.ca.cert.to_pem().unwrap();
    let client = http_client(Some(&ca_pem), false).unwrap();
    let enrolled = enroll(&client, &url, request(password())).await.unwrap();
    let record = enrolled.record(EnrollmentType::Full);
    assert_eq!(record.provider_id, "TestMDM");
    assert_eq!(record.account_uid, account_uid("TestMDM"));
    assert_eq!((record.conn_retry_freq, record.initial_backoff_ms, record.max_backoff_ms), (2, 1000, 5000));
    assert_eq!(record.client_cert_thumbprint, enrolled.provisioning.client_cert.thumbprint);
    let json = serde_json::to_string(&record).unwrap();
    assert!(!json.contains("PRIVATE KEY") && !json.contains("dev-secret"), "{json}");
    let back: mdmsim::runner::enroll::EnrollmentRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, record);

    let dir = tempfile::tempdir().unwrap();
    let files = enrolled.write_to_dir(dir.path()).unwrap();
    let key = PKey::private_key_from_pem(&std::fs::read(&files.key).unwrap()).unwrap();
    let cert = X509::from_pem(&std::fs::read(&files.cert).unwrap()).unwrap();
    assert!(cert.public_key().unwrap().public_eq(&key));
    assert_eq!(X509::stack_from_pem(&std::fs::read(&files.roots).unwrap()).unwrap().len(), 1);

    assert!(matches!(http_client(Some(b"not a pem"), false), Err(EnrollError::Config(_))));
}
