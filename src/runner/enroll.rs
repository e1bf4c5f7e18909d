//! The HTTP side of enrollment (MS-MDE2): GET probe, Discover, GetPolicies, RST, with
//! reqwest; the RSA key (openssl, the one place enrollment uses OS randomness); writing the
//! private key with 0600 permissions; the mTLS identity for the management sessions.
//!
//! Owns moving bytes and classifying failures into [`EnrollError`]: unreachable, HTTP status,
//! SOAP fault, malformed response, configuration. Message building and parsing are
//! `crate::enroll`'s; storing the result in the device store and running the post-enrollment
//! session are the caller's (`mdmsim enroll`).
//!
//! The wiring of `mdmsim enroll`, in order:
//!
//! ```no_run
//! # async fn demo(state_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use mdmsim::enroll::{AuthToken, DeviceIdentity, EnrollmentType, Secret};
//! use mdmsim::runner::enroll::{EnrollRequest, enroll, http_client};
//! use mdmsim::tree::{Env, Profile, Tree, TreeState};
//!
//! let client = http_client(None, false)?; // --ca-cert PEM bytes, --insecure
//! let device = DeviceIdentity::new("1E08C6E95D8BB843B1278FF45BC60CC6", &"0".repeat(64));
//! let auth = AuthToken::OnPremise { username: "user@example.com".into(), password: Secret::new("pw") };
//! // or AuthToken::from_user_token(token) for --token
//! let url = "https://EnterpriseEnrollment.example.com/EnrollmentServer/Discovery.svc";
//! let enrolled = enroll(&client, url, EnrollRequest::new("user@example.com", auth, device)).await?;
//! for finding in &enrolled.findings {
//!     eprintln!("conformance: {finding}");
//! }
//! // Apply to the device's tree (all or nothing), then persist; on any error store nothing.
//! let registry = mdmsim::csp::registry();
//! let mut state = TreeState::new();
//! let env = Env::new(chrono::Utc::now(), Profile::Win10);
//! enrolled.provisioning.apply(&mut Tree::new(&registry, &mut state, &env))?;
//! let _files = enrolled.write_to_dir(state_dir)?; // device.key is 0600
//! let record = enrolled.record(EnrollmentType::Full); // no secrets: fine for JSON output
//! println!("{} {}", record.device_id, record.management_url);
//! // Management sessions: mTLS with the issued certificate, trusting the provisioned roots.
//! let _mgmt = reqwest::Client::builder()
//!     .identity(enrolled.identity()?)
//!     .tls_certs_merge(enrolled.root_certificates())
//!     .build()?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;

use crate::enroll::{
    self, AppAuth, AuthPolicy, AuthToken, ContextItem, DeviceIdentity, DiscoverRequest, Discovery, EnrollFinding,
    EnrollmentType, Malformed, Policy, Provisioning, ResponseError, RstRequest, Secret, SoapFault, webview,
};

/// The User-Agent of the Windows enrollment client (observed).
const USER_AGENT: &str = "ENROLLClient";
/// Per-request time limit.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read; enrollment responses are a few kilobytes.
const MAX_BODY: usize = 4 << 20;
/// Pages the Federated sign-in web view loads before giving up (sign-in, consent, token).
const MAX_WEBVIEW_PAGES: usize = 8;
/// Characters of a refused answer's body quoted in an error.
const BODY_QUOTE: usize = 300;

/// What `mdmsim enroll` asks for.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub email: String,
    pub auth: AuthToken,
    pub enrollment_type: EnrollmentType,
    pub device: DeviceIdentity,
    /// Discovery RequestVersion (Windows 10 sends 4.0; `RequestVersion` goes in the RST from 5.0).
    pub request_version: String,
    pub targeted_user_logged_in: bool,
    pub not_in_oobe: bool,
    /// Further AdditionalContext items.
    pub extra_context: Vec<ContextItem>,
    /// Where the key comes from: a pool and the device's place in it; `None` generates one.
    pub key_pool: Option<(Arc<super::keys::KeyPool>, u64)>,
}

impl EnrollRequest {
    /// A Full (user) enrollment of `device` with request version 5.0, user logged in.
    pub fn new(email: &str, auth: AuthToken, device: DeviceIdentity) -> EnrollRequest {
        EnrollRequest {
            email: email.to_string(),
            auth,
            enrollment_type: EnrollmentType::Full,
            device,
            request_version: "5.0".into(),
            targeted_user_logged_in: true,
            not_in_oobe: true,
            extra_context: Vec::new(),
            key_pool: None,
        }
    }
}

/// A step of the enrollment, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The bare GET on the discovery URL.
    Probe,
    Discover,
    /// The Federated sign-in page (AuthenticationServiceUrl) in the emulated web view.
    SignIn,
    Policy,
    Enroll,
    /// Reading and checking the provisioning document and the issued certificate.
    Provisioning,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Probe => "discovery probe (GET)",
            Step::Discover => "discovery (Discover)",
            Step::SignIn => "Federated sign-in (AuthenticationServiceUrl web view)",
            Step::Policy => "policy (MS-XCEP GetPolicies)",
            Step::Enroll => "enrollment (MS-WSTEP RequestSecurityToken)",
            Step::Provisioning => "provisioning document",
        })
    }
}

/// Why an enrollment failed, grouped by who is at fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnrollError {
    /// Nobody answered (connection refused, DNS, TLS handshake, timeout).
    #[error("{step}: {url} is unreachable: {reason}")]
    Unreachable { step: Step, url: String, reason: String },
    /// The server answered with an HTTP error status and no SOAP fault; `body` is the start of
    /// what it sent.
    #[error("{step}: {url} answered HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    HttpStatus { step: Step, url: String, status: u16, body: String },
    /// The server refused with a SOAP fault (MS-MDE2 §2.2.10).
    #[error("{step}: {url} refused: {fault}")]
    Fault { step: Step, url: String, fault: Box<SoapFault> },
    /// The response broke the protocol.
    #[error("{step}: malformed response from {url}: {error}")]
    Malformed { step: Step, url: String, error: Malformed },
    /// The Federated sign-in page could not be got through: what was found there.
    #[error("{step}: {problem}")]
    SignIn { step: Step, problem: String },
    /// The issued certificate does not fit the request (wrong key, unreadable).
    #[error("{step}: {problem}")]
    Certificate { step: Step, problem: String },
    /// What the user asked for cannot work with this server.
    #[error("{0}")]
    Config(String),
    /// A local failure (key generation).
    #[error("{0}")]
    Local(String),
}

impl EnrollError {
    /// The exit code of the CLI table: 3 unreachable, 4 the server broke the protocol or
    /// refused, 2 usage, 5 local.
    pub fn exit_code(&self) -> u8 {
        match self {
            EnrollError::Unreachable { .. } => 3,
            EnrollError::HttpStatus { .. }
            | EnrollError::Fault { .. }
            | EnrollError::Malformed { .. }
            | EnrollError::SignIn { .. }
            | EnrollError::Certificate { .. } => 4,
            EnrollError::Config(_) => 2,
            EnrollError::Local(_) => 5,
        }
    }

    /// The kind of failure, for counting (the enrollment error classes of fleet reports).
    pub fn class(&self) -> &'static str {
        match self {
            EnrollError::Unreachable { .. } => "unreachable",
            EnrollError::HttpStatus { status, .. } if *status >= 500 => "http-5xx",
            EnrollError::HttpStatus { .. } => "http-4xx",
            EnrollError::Fault { .. } => "soap-fault",
            EnrollError::Malformed { .. } => "malformed",
            EnrollError::SignIn { .. } => "sign-in",
            EnrollError::Certificate { .. } => "certificate",
            EnrollError::Config(_) => "config",
            EnrollError::Local(_) => "local",
        }
    }

    /// The SOAP fault, when the server refused with one.
    pub fn fault(&self) -> Option<&SoapFault> {
        match self {
            EnrollError::Fault { fault, .. } => Some(fault),
            _ => None,
        }
    }
}

/// A finished enrollment: everything the device store must keep. `Debug` redacts the key and
/// the secrets of the provisioning document.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub device_id: String,
    pub discovery: Discovery,
    pub policy: Policy,
    /// The private key, PKCS#8 PEM. Write it with [`write_private_key`].
    pub key_pem: Secret,
    /// The same key (shared with other devices when it comes from a pool).
    pub key: PKey<Private>,
    pub client_cert_pem: String,
    pub root_certs_pem: Vec<String>,
    pub intermediate_certs_pem: Vec<String>,
    pub provisioning: Provisioning,
    /// Where the server departed from MS-MDE2 in ways Windows tolerates (policy, provisioning
    /// document), in the order met.
    pub findings: Vec<EnrollFinding>,
    /// True when the token came from the Federated sign-in web view.
    pub signed_in: bool,
}

impl Enrolled {
    /// The management URL (w7 ADDR).
    pub fn management_url(&self) -> &str {
        &self.provisioning.app.addr
    }

    /// The client certificate and key for mTLS in management sessions (certificate chain:
    /// client, then intermediates).
    pub fn identity(&self) -> Result<reqwest::Identity, reqwest::Error> {
        let mut chain = self.client_cert_pem.clone();
        for pem in &self.intermediate_certs_pem {
            chain.push_str(pem);
        }
        reqwest::Identity::from_pkcs8_pem(chain.as_bytes(), self.key_pem.expose().as_bytes())
    }

    /// The provisioned roots, to trust for this device's TLS.
    pub fn root_certificates(&self) -> Vec<reqwest::Certificate> {
        self.root_certs_pem.iter().filter_map(|p| reqwest::Certificate::from_pem(p.as_bytes()).ok()).collect()
    }

    /// The application-layer credentials of the provisioning.
    pub fn app_auth(&self) -> AppAuth {
        AppAuth::from_provisioning(&self.provisioning)
    }
}

/// What the device store keeps of an enrollment besides the tree values and the key file: no
/// secrets, so it can be printed as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrollmentRecord {
    pub device_id: String,
    /// w7 PROVIDER-ID (also the DMClient Provider node name).
    pub provider_id: String,
    /// DMAcc AccountUID of the account.
    pub account_uid: String,
    pub management_url: String,
    pub enrollment_type: EnrollmentType,
    pub discovery: Discovery,
    pub client_cert_pem: String,
    /// SHA-1 thumbprint of the client certificate (upper hex), as Windows names it.
    pub client_cert_thumbprint: String,
    pub root_certs_pem: Vec<String>,
    pub intermediate_certs_pem: Vec<String>,
    /// Connection retries and backoff of the w7 APPLICATION, with the DDF defaults.
    pub conn_retry_freq: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

/// The files [`Enrolled::write_to_dir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentFiles {
    /// The private key (0600).
    pub key: std::path::PathBuf,
    /// The client certificate, then the intermediates.
    pub cert: std::path::PathBuf,
    /// The provisioned roots.
    pub roots: std::path::PathBuf,
}

impl Enrolled {
    /// The record to store, for an enrollment of `enrollment_type`.
    pub fn record(&self, enrollment_type: EnrollmentType) -> EnrollmentRecord {
        let app = &self.provisioning.app;
        EnrollmentRecord {
            device_id: self.device_id.clone(),
            provider_id: app.provider_id.clone(),
            account_uid: self.provisioning.account_uid(),
            management_url: app.addr.clone(),
            enrollment_type,
            discovery: self.discovery.clone(),
            client_cert_pem: self.client_cert_pem.clone(),
            client_cert_thumbprint: openssl::x509::X509::from_pem(self.client_cert_pem.as_bytes())
                .and_then(|c| c.digest(openssl::hash::MessageDigest::sha1()))
                .map(hex::encode_upper)
                .unwrap_or_default(),
            root_certs_pem: self.root_certs_pem.clone(),
            intermediate_certs_pem: self.intermediate_certs_pem.clone(),
            conn_retry_freq: app.conn_retry_freq.unwrap_or(3),
            initial_backoff_ms: app.initial_backoff_ms.unwrap_or(16_000),
            max_backoff_ms: app.max_backoff_ms.unwrap_or(86_400_000),
        }
    }

    /// Writes `device.key` (0600), `device.crt` (client certificate and intermediates) and
    /// `roots.pem` into `dir`, which must exist.
    pub fn write_to_dir(&self, dir: &Path) -> std::io::Result<EnrollmentFiles> {
        let files =
            EnrollmentFiles { key: dir.join("device.key"), cert: dir.join("device.crt"), roots: dir.join("roots.pem") };
        write_private_key(&files.key, &self.key_pem)?;
        let mut chain = self.client_cert_pem.clone();
        chain.extend(self.intermediate_certs_pem.iter().map(String::as_str));
        std::fs::write(&files.cert, chain)?;
        std::fs::write(&files.roots, self.root_certs_pem.concat())?;
        Ok(files)
    }
}

/// The HTTP client for enrollment: extra trusted roots from `ca_cert_pem` (a PEM bundle,
/// `--ca-cert`), or no certificate checks at all with `insecure` (`--insecure`).
///
/// Like the web view of the Windows enrollment, the client keeps cookies (a sign-in page sets
/// them) and follows redirects within http and https; a redirect to another scheme (the
/// `ms-app://` appru of a Federated sign-in) is not followed but handed back to the caller.
pub fn http_client(ca_cert_pem: Option<&[u8]>, insecure: bool) -> Result<reqwest::Client, EnrollError> {
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        if !matches!(attempt.url().scheme(), "http" | "https") {
            attempt.stop()
        } else if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    });
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(TIMEOUT)
        .cookie_store(true)
        .redirect(redirects);
    if let Some(pem) = ca_cert_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| EnrollError::Config(format!("--ca-cert is not a PEM certificate bundle: {e}")))?;
        if certs.is_empty() {
            return Err(EnrollError::Config("--ca-cert holds no certificate".into()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if insecure {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| EnrollError::Local(format!("building the HTTP client: {e}")))
}

/// A fresh RSA key of `bits` bits.
pub fn generate_key(bits: u32) -> Result<PKey<Private>, EnrollError> {
    Rsa::generate(bits)
        .and_then(PKey::from_rsa)
        .map_err(|e| EnrollError::Local(format!("generating a {bits}-bit RSA key: {e}")))
}

/// Writes a private key PEM readable by the owner only (0600), replacing any older file.
pub fn write_private_key(path: &Path, pem: &Secret) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        opts.mode(0o600);
        // An existing file keeps its mode on open: tighten it before writing the key.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let mut f = opts.open(path)?;
    f.write_all(pem.expose().as_bytes())?;
    f.sync_all()
}

/// Runs the whole enrollment against `discovery_url`: GET probe, Discover, GetPolicies (when
/// discovery names a policy service), RST; returns the key, the certificates and the parsed
/// provisioning document. Nothing is stored: on any error there is nothing to undo.
pub async fn enroll(
    client: &reqwest::Client,
    discovery_url: &str,
    request: EnrollRequest,
) -> Result<Enrolled, EnrollError> {
    probe(client, discovery_url).await?;

    let body = DiscoverRequest::new(&request.email, &request.request_version, &request.device)
        .to_xml(&message_id(), discovery_url);
    let text = post(client, Step::Discover, discovery_url, body).await?;
    let discovery = parse(Step::Discover, discovery_url, enroll::parse_discover_response(&text))?;
    // Federated with a password: sign in on the AuthenticationServiceUrl page as the web view
    // of Windows does, and enroll with the token it hands back. `--token` skips the page.
    let mut auth = request.auth.clone();
    let mut signed_in = false;
    if let (AuthPolicy::Federated, AuthToken::OnPremise { password, .. }) = (&discovery.auth_policy, &request.auth) {
        let Some(auth_url) = discovery.auth_url.as_deref() else {
            return Err(EnrollError::SignIn {
                step: Step::Discover,
                problem: format!(
                    "{discovery_url} asks for Federated authentication but names no AuthenticationServiceUrl; pass --token"
                ),
            });
        };
        let token = sign_in(client, auth_url, &request.email, Some(password)).await?;
        auth = AuthToken::Federated { token };
        signed_in = true;
    }

    let policy = match &discovery.policy_url {
        Some(url) => {
            let body = enroll::get_policies_body(&message_id(), url, &auth);
            let text = post(client, Step::Policy, url, body).await?;
            parse(Step::Policy, url, enroll::parse_get_policies_response(&text))?
        }
        None => Policy::default(),
    };

    let key = match &request.key_pool {
        Some((pool, index)) => pool.key(*index, policy.key_bits).await?,
        None => generate_key(policy.key_bits)?,
    };
    let csr_der = enroll::build_csr(&key, &request.device.device_id, policy.hash)
        .map_err(|e| EnrollError::Local(e.to_string()))?;
    let rst = RstRequest {
        csr_der,
        enrollment_type: request.enrollment_type,
        device: request.device.clone(),
        request_version: request.request_version.clone(),
        targeted_user_logged_in: request.targeted_user_logged_in,
        not_in_oobe: request.not_in_oobe,
        ux_initiated: false,
        extra: request.extra_context.clone(),
    };
    let url = discovery.enrollment_url.clone();
    let text = post(client, Step::Enroll, &url, rst.to_xml(&message_id(), &url, &auth)).await?;
    let doc = parse(Step::Enroll, &url, enroll::parse_rstr(&text))?;
    let provisioning = enroll::parse_provisioning(&doc).map_err(|error| EnrollError::Malformed {
        step: Step::Provisioning,
        url: url.clone(),
        error,
    })?;

    if !provisioning.client_cert.matches_key(&key) {
        return Err(EnrollError::Certificate {
            step: Step::Provisioning,
            problem: format!(
                "the client certificate {} in {} is not for the key of the certificate request",
                provisioning.client_cert.thumbprint, provisioning.client_cert.store
            ),
        });
    }
    let cert_err = |e: openssl::error::ErrorStack| EnrollError::Certificate {
        step: Step::Provisioning,
        problem: format!("converting a certificate to PEM: {e}"),
    };
    let key_pem =
        key.private_key_to_pem_pkcs8().map_err(|e| EnrollError::Local(format!("encoding the private key: {e}")))?;
    let mut findings = policy.findings.clone();
    findings.extend(provisioning.findings());
    Ok(Enrolled {
        findings,
        signed_in,
        device_id: request.device.device_id.clone(),
        discovery,
        policy,
        key_pem: Secret::new(String::from_utf8_lossy(&key_pem).into_owned()),
        key,
        client_cert_pem: provisioning.client_cert.pem().map_err(cert_err)?,
        root_certs_pem: provisioning.roots.iter().map(|c| c.pem()).collect::<Result<_, _>>().map_err(cert_err)?,
        intermediate_certs_pem: provisioning
            .intermediates
            .iter()
            .map(|c| c.pem())
            .collect::<Result<_, _>>()
            .map_err(cert_err)?,
        provisioning,
    })
}

tokio::task_local! {
    /// The exchanges of the enrollment running in this task, when someone is recording them.
    static EXCHANGES: Arc<Mutex<Vec<Exchange>>>;
}

/// One HTTP exchange of an enrollment as it went, bodies as sent and received: mask them
/// ([`crate::transcript::mask_soap`]) before they go anywhere ([`write_exchanges`] does).
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// `probe`, `discover`, `sign-in`, `policy`, `enroll`.
    pub step: String,
    pub method: String,
    pub url: String,
    /// The HTTP status, `None` when no answer came.
    pub status: Option<u16>,
    pub request: Option<String>,
    pub response: Option<String>,
    pub error: Option<String>,
}

/// Runs `fut` (an [`enroll`], or anything that calls it in this task) and gives back, besides
/// its output, every HTTP exchange of the enrollment in order: what `--transcript` writes.
pub async fn recording<F: std::future::Future>(fut: F) -> (F::Output, Vec<Exchange>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let out = EXCHANGES.scope(Arc::clone(&log), fut).await;
    let exchanges = log.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    (out, exchanges)
}

fn record(
    step: Step,
    method: &str,
    url: &str,
    status: Option<u16>,
    request: Option<&str>,
    response: Option<&str>,
    error: Option<String>,
) {
    let name = match step {
        Step::Probe => "probe",
        Step::Discover => "discover",
        Step::SignIn => "sign-in",
        Step::Policy => "policy",
        Step::Enroll | Step::Provisioning => "enroll",
    };
    let _ = EXCHANGES.try_with(|log| {
        if let Ok(mut log) = log.lock() {
            log.push(Exchange {
                step: name.to_string(),
                method: method.to_string(),
                url: url.to_string(),
                status,
                request: request.map(str::to_string),
                response: response.map(str::to_string),
                error,
            });
        }
    });
}

/// Writes the exchanges as the `enrollment/` folder of the transcript folder `dir`
/// (`crate::transcript::enrollment` reads it): `exchange.json` and one file per body, every
/// body masked first. Gives the folder.
pub fn write_exchanges(dir: &Path, exchanges: &[Exchange]) -> std::io::Result<std::path::PathBuf> {
    use crate::transcript::enrollment::{DIR_NAME, EnrollStep, INDEX};
    let folder = dir.join(DIR_NAME);
    std::fs::create_dir_all(&folder)?;
    let mut index = Vec::new();
    for (i, x) in exchanges.iter().enumerate() {
        let n = i as u32 + 1;
        let write = |what: &str, body: &Option<String>| -> std::io::Result<Option<String>> {
            let Some(b) = body else { return Ok(None) };
            let ext = if b.trim_start().starts_with('<') && !b.contains("<html") && !b.contains("<HTML") {
                "xml"
            } else {
                "html"
            };
            let name = format!("{n:02}-{}-{what}.{ext}", x.step);
            std::fs::write(folder.join(&name), crate::transcript::mask_soap(b))?;
            Ok(Some(name))
        };
        let request_file = write("request", &x.request)?;
        let response_file = write("response", &x.response)?;
        index.push(EnrollStep {
            n,
            step: x.step.clone(),
            method: x.method.clone(),
            url: x.url.clone(),
            status: x.status,
            request_file,
            response_file,
            error: x.error.clone(),
            request: None,
            response: None,
        });
    }
    let json = serde_json::to_string_pretty(&index).map_err(std::io::Error::other)?;
    std::fs::write(folder.join(INDEX), json)?;
    Ok(folder)
}

fn message_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn unreachable(step: Step, url: &str, e: reqwest::Error) -> EnrollError {
    // Show the whole cause chain: reqwest's top message alone says only "error sending request".
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    EnrollError::Unreachable { step, url: url.to_string(), reason }
}

async fn probe(client: &reqwest::Client, url: &str) -> Result<(), EnrollError> {
    let sent = client.get(url).header("User-Agent", USER_AGENT).timeout(TIMEOUT).send().await;
    let resp = sent.map_err(|e| {
        let e = unreachable(Step::Probe, url, e);
        record(Step::Probe, "GET", url, None, None, None, Some(e.to_string()));
        e
    })?;
    let status = resp.status().as_u16();
    let bytes = read_body(Step::Probe, url, resp).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    record(Step::Probe, "GET", url, Some(status), None, (!text.is_empty()).then_some(&*text), None);
    if status != 200 {
        return Err(EnrollError::HttpStatus { step: Step::Probe, url: url.to_string(), status, body: quote(&bytes) });
    }
    Ok(())
}

/// The start of a refused answer's body, on one line, for an error message.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(BODY_QUOTE).collect();
    if one_line.chars().count() > BODY_QUOTE {
        out.push_str("...");
    }
    out
}

/// Reads a response body up to [`MAX_BODY`].
async fn read_body(step: Step, url: &str, mut resp: reqwest::Response) -> Result<Vec<u8>, EnrollError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| unreachable(step, url, e))? {
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(EnrollError::Malformed {
                step,
                url: url.to_string(),
                error: Malformed {
                    element: String::new(),
                    offset: MAX_BODY,
                    problem: "response larger than 4 MiB".into(),
                },
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The Federated sign-in, as the enrollment web view of Windows runs it: opens
/// `auth_url?appru=...&login_hint=EMAIL`, fills in and submits sign-in forms (the user and
/// `password`), follows redirects and cookies, and returns the `wresult` token the last page
/// posts (or redirects) to `appru`. A page it cannot get through is an error naming the URL
/// and what the page holds.
pub async fn sign_in(
    client: &reqwest::Client,
    auth_url: &str,
    email: &str,
    password: Option<&Secret>,
) -> Result<Secret, EnrollError> {
    let step = Step::SignIn;
    let mut url = webview::sign_in_url(auth_url, email);
    let mut form: Option<webview::FormSubmit> = None;
    let mut submitted: Vec<(String, Vec<String>)> = Vec::new();
    for _ in 0..MAX_WEBVIEW_PAGES {
        let req = match &form {
            Some(f) if f.method == "POST" => client.post(&f.action).form(&f.fields),
            Some(f) => client.get(&f.action).query(&f.fields),
            None => client.get(&url),
        };
        let target = form.as_ref().map_or(url.clone(), |f| f.action.clone());
        let resp = req.header("User-Agent", USER_AGENT).send().await.map_err(|e| unreachable(step, &target, e))?;
        let status = resp.status();
        let page_url = resp.url().to_string();
        if status.is_redirection() {
            // Redirects within http(s) were followed: this one leaves the web (appru).
            let location = resp.headers().get("Location").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            return match webview::wresult_in_url(&location) {
                Some(token) => Ok(Secret::new(token)),
                None => Err(EnrollError::SignIn {
                    step,
                    problem: format!("{page_url} redirected to {location:?}, which carries no wresult token"),
                }),
            };
        }
        let bytes = read_body(step, &page_url, resp).await?;
        let method = if form.as_ref().is_some_and(|f| f.method == "POST") { "POST" } else { "GET" };
        // The form fields hold the password: only the page is kept.
        record(step, method, &page_url, Some(status.as_u16()), None, Some(&String::from_utf8_lossy(&bytes)), None);
        if !status.is_success() {
            return Err(EnrollError::HttpStatus { step, url: page_url, status: status.as_u16(), body: quote(&bytes) });
        }
        let html = String::from_utf8_lossy(&bytes);
        match webview::read_page(&html, &page_url, email, password.map(Secret::expose)) {
            webview::Page::Token(token) => return Ok(Secret::new(token)),
            webview::Page::Form(next) => {
                // The same form again after submitting it: the sign-in was refused.
                let shape = (next.action.clone(), next.fields.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
                if submitted.contains(&shape) {
                    return Err(EnrollError::SignIn {
                        step,
                        problem: format!(
                            "{page_url} showed its sign-in form again after the credentials of {email} were submitted: the sign-in was refused"
                        ),
                    });
                }
                submitted.push(shape);
                url = page_url;
                form = Some(next);
            }
            webview::Page::Unreadable(what) => return Err(EnrollError::SignIn { step, problem: what }),
        }
    }
    Err(EnrollError::SignIn {
        step,
        problem: format!("{url}: no wresult token after {MAX_WEBVIEW_PAGES} pages of the sign-in web view"),
    })
}

async fn post(client: &reqwest::Client, step: Step, url: &str, body: String) -> Result<String, EnrollError> {
    let resp = client
        .post(url)
        .header("Content-Type", enroll::CONTENT_TYPE)
        .header("User-Agent", USER_AGENT)
        .timeout(TIMEOUT)
        .body(body.clone())
        .send()
        .await
        .map_err(|e| {
            let e = unreachable(step, url, e);
            record(step, "POST", url, None, Some(&body), None, Some(e.to_string()));
            e
        })?;
    let status = resp.status().as_u16();
    let bytes = read_body(step, url, resp).await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    record(step, "POST", url, Some(status), Some(&body), Some(&text), None);
    if !(200..300).contains(&status) {
        // WCF sends faults with HTTP 500: prefer the fault, it says more than the status.
        if let Err(ResponseError::Fault(fault)) = enroll::soap_fault_of(&text) {
            return Err(EnrollError::Fault { step, url: url.to_string(), fault });
        }
        return Err(EnrollError::HttpStatus { step, url: url.to_string(), status, body: quote(&bytes) });
    }
    Ok(text)
}

fn parse<T>(step: Step, url: &str, r: Result<T, ResponseError>) -> Result<T, EnrollError> {
    r.map_err(|e| match e {
        ResponseError::Fault(fault) => EnrollError::Fault { step, url: url.to_string(), fault },
        ResponseError::Malformed(error) => EnrollError::Malformed { step, url: url.to_string(), error },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_file_is_owner_only_and_debug_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.key");
        std::fs::write(&path, "old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let pem = Secret::new("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n");
        write_private_key(&path, &pem).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), pem.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!format!("{pem:?} {pem}").contains("abc"));
    }
}
