//! The embedded reference MDM server: the demo's default peer and the peer of our own tests.
//! It serves MS-MDE2 enrollment (discovery, XCEP policy, WSTEP with real certificates from its
//! own CA), the OMA-DM management endpoint, the app packages it installs, and a JSON view of
//! what it recorded, over HTTPS (client certificates requested and checked against its CA) or,
//! on loopback only, plain HTTP.
//!
//! Routes: `GET`/`POST /EnrollmentServer/Discovery.svc`, `POST /EnrollmentServer/Policy.svc`
//! (MS-XCEP), `POST /EnrollmentServer/Enrollment.svc` (MS-WSTEP), `GET`/`POST
//! /EnrollmentServer/Auth` (the Federated sign-in page, `sts.rs`), `POST /ManagementServer/MDM.svc`
//! (OMA-DM; `?mode=` is read), `GET /packages/<name>` (app and MSI packages), and the admin endpoints: the JSON views
//! `GET /admin/devices`, `/admin/devices/<DeviceID>`, `/admin/summary`, `POST
//! /admin/devices/<DeviceID>/push` (a WNS push, `docs/push.md`) and `POST
//! /admin/devices/<DeviceID>/apps/<name>` (assign an app, and push), which answer 401 without
//! the admin token (`admin.rs`; `Authorization: Bearer <token>`, the token in
//! `<state>/admin-token`).
//!
//! Exposure: plain HTTP only on loopback; HTTPS on another address only with
//! [`ServerOptions::allow_remote`] (`mdmsim server --allow-remote`), as the server enrolls any
//! device that knows a configured user's password.
//!
//! Fault injection (`faults.rs`, the `[faults]` table, `mdmsim server --faults`): management
//! requests get HTTP 500s, closed connections, late, truncated or malformed answers, or answers
//! without `<Final/>`, with the given probabilities and a seed. Each one is recorded in the
//! device's record and counted in the summary. `docs/server-faults.md` has the rules.
//!
//! Compatibility mode (`compat.rs`, the `[compat]` table, `mdmsim server --compat`): by default
//! the server answers as MS-MDE2 and MS-MDM describe (`standard`). The `fleet` and `minimal`
//! presets, and single switches, make it answer as real-world servers do (no `<Final/>`,
//! Status-only replies, `AAUTHDATA` "nonce", numbered or UUID CmdIDs, a nil MS-XCEP response,
//! Federated discovery with a sign-in page...), so that a device is tested against what it will
//! meet. `docs/server-compat.md` lists each switch.
//!
//! Configuration profiles (`profiles.rs`, `[[profiles]]`) go once per device as an `<Atomic>`
//! of `<Replace>` commands and are verified by `<Get>` in a later session; MSI installs
//! (`msi.rs`, `[[msi]]`) go as Add + Exec of EnterpriseDesktopAppManagement `DownloadInstall`
//! with an `MsiInstallJob`, and their outcome comes from the device's install alert and
//! `Status` polls. Both only in Maintenance sessions; `docs/server-profiles.md` has the rules.
//!
//! Independence: this module uses `crate::syncml` (the codec) and nothing else of the device
//! side (no tree, CSP, session, scheduler or enrollment client code), so a test of the device
//! against it checks the device against a second implementation. It owns the HTTP and TLS I/O
//! (axum, tokio-openssl); the protocol decisions live in `mgmt.rs` and `enroll.rs`.

mod admin;
pub mod compat;
pub mod config;
mod enroll;
pub mod faults;
mod mgmt;
pub mod msi;
mod pki;
pub mod profiles;
pub mod records;
mod sts;
mod xml;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode as HttpStatus, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Form, Router};
use chrono::{DateTime, Utc};
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::X509VerifyResult;
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_openssl::SslStream;

pub use admin::{AdminTokenError, TOKEN_FILE};
pub use compat::{AuthPage, CmdIds, Compat, CompatConfig, PolicyResponse, Preset, SessionEnd};
pub use config::{AuthMode, Config, ConfigError};
pub use enroll::Fault;
pub use faults::{FaultConfig, FaultKind, FaultPlan, FaultSpec, FaultSpecError};
pub use mgmt::md5_digest;
pub use records::*;
pub use sts::AUTH_PATH;

use crate::syncml;
use admin::{AdminToken, Presented};
use faults::Injector;
use mgmt::{AppPlan, Incoming, Mgmt, Plans, Reply};
use msi::MsiPlan;
use pki::{Pki, PkiError};
use profiles::ProfileError;
use sts::{IssuedTokens, PageReply};

/// The path of the discovery endpoint.
pub const DISCOVERY_PATH: &str = "/EnrollmentServer/Discovery.svc";
/// The path of the management endpoint.
pub const MANAGEMENT_PATH: &str = "/ManagementServer/MDM.svc";

/// Where the server's records take their time from: the wall clock by default, or the demo's
/// virtual clock.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How to run the server.
pub struct ServerOptions {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Plain HTTP instead of HTTPS (loopback only).
    pub http: bool,
    /// Folder for the CA and the server certificate (created if missing; reused on restart).
    pub state_dir: PathBuf,
    pub config: Config,
    /// Base URL to announce instead of the listen address (e.g. `https://mdm.lan:8443`).
    pub public_url: Option<String>,
    /// Time source for records; `None` = wall clock.
    pub clock: Option<Clock>,
    /// Serve HTTPS on an address other machines can reach (without it, only loopback).
    pub allow_remote: bool,
}

impl ServerOptions {
    /// Loopback on a free port, HTTPS, default config, state in `state_dir`.
    pub fn local(state_dir: impl Into<PathBuf>) -> Self {
        ServerOptions {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            http: false,
            state_dir: state_dir.into(),
            config: Config::default(),
            public_url: None,
            clock: None,
            allow_remote: false,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("refusing plain HTTP on {0}: --http is for loopback addresses (127.0.0.1, ::1) only; use HTTPS")]
    HttpNotLoopback(SocketAddr),
    #[error(
        "refusing to listen on {0}: other machines could reach it, and the server enrolls any device that knows a configured user's password; listen on 127.0.0.1 or ::1, or pass --allow-remote to serve other machines"
    )]
    RemoteNotAllowed(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("certificate authority: {0}")]
    Pki(#[from] PkiError),
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
    #[error("TLS setup: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    #[error("app {app}: package file {file}: {source}")]
    Package { app: String, file: String, source: io::Error },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("public URL {0:?}: expected http(s)://host[:port]")]
    PublicUrl(String),
}

/// Why a push could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("device {0}: no Push/ChannelURI reported yet (the PFN must be set and read back first)")]
    NoChannel(String),
    #[error("the device's Push/ChannelURI {0:?} is not an http(s) URL")]
    BadChannel(String),
    #[error("push to {channel}: {source}")]
    Http { channel: String, source: reqwest::Error },
    #[error("WNS access token from {url}: {why}")]
    Token { url: String, why: String },
}

/// An access token of the push notification service, and when to stop using it.
#[derive(Clone)]
struct WnsToken {
    value: String,
    url: String,
    until: std::time::Instant,
}

/// The WNS token endpoint for a channel: the configured one, else `/accesstoken.srf` at the
/// channel's origin (where mdmsim's WNS emulation serves it).
fn token_url(config: &Config, channel: &str) -> String {
    if let Some(u) = config.dmclient.wns_token_url.as_ref().filter(|u| !u.trim().is_empty()) {
        return u.trim().to_string();
    }
    let origin = channel.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    format!("{origin}/accesstoken.srf")
}

/// A token for pushing to `channel`: the configured fixed one, the one kept from before, or a
/// new one from the token endpoint (OAuth 2.0 client credentials, "Push notification service
/// request and response headers").
async fn wns_token(s: &Shared, client: &reqwest::Client, channel: &str, fresh: bool) -> Result<String, PushError> {
    if let Some(t) = &s.config.dmclient.wns_token {
        return Ok(t.clone());
    }
    let url = token_url(&s.config, channel);
    if !fresh
        && let Some(t) = s.wns_token.lock().unwrap_or_else(|e| e.into_inner()).clone()
        && t.url == url
        && t.until > std::time::Instant::now()
    {
        return Ok(t.value);
    }
    let d = &s.config.dmclient;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", d.wns_client_id.as_deref().unwrap_or("ms-app://s-1-15-2-mdmsim-reference-server")),
        ("client_secret", d.wns_client_secret.as_deref().unwrap_or("mdmsim-reference-server")),
        ("scope", "notify.windows.com"),
    ];
    let err = |why: String| PushError::Token { url: url.clone(), why };
    let resp =
        client.post(&url).form(&form).timeout(Duration::from_secs(10)).send().await.map_err(|e| err(e.to_string()))?;
    let status = resp.status();
    // A token answer is a few hundred bytes; read at most 64 KiB of whatever comes.
    let body = read_limited(resp, 64 * 1024).await.map_err(err)?;
    if !status.is_success() {
        return Err(err(format!("HTTP {}: {}", status.as_u16(), String::from_utf8_lossy(&body).trim())));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| err(format!("not JSON: {e}")))?;
    let value = v["access_token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| err("no access_token".into()))?;
    // Renewed a minute before it expires.
    let secs = v["expires_in"].as_u64().unwrap_or(86_400).saturating_sub(60).max(1);
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    *s.wns_token.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(WnsToken { value: value.to_string(), url: url.clone(), until });
    Ok(value.to_string())
}

/// At most `limit` bytes of a response body.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > limit {
            return Err(format!("the answer is over {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Sends a WNS raw push to the device's last reported ChannelURI and records the answer; a
/// 401 (expired token) gets one retry with a new token.
async fn push_device(s: &Shared, client: &reqwest::Client, device_id: &str) -> Result<PushRecord, PushError> {
    let channel = s.mgmt().channel_uri(device_id).ok_or_else(|| PushError::NoChannel(device_id.to_string()))?;
    if !(channel.starts_with("https://") || channel.starts_with("http://")) {
        return Err(PushError::BadChannel(channel));
    }
    let mut fresh = false;
    loop {
        let token = wns_token(s, client, &channel, fresh).await?;
        let resp = client
            .post(&channel)
            .bearer_auth(token)
            .header("X-WNS-Type", "wns/raw")
            .header("X-WNS-Cache-Policy", "cache")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .timeout(Duration::from_secs(10))
            // The device ignores the payload, but WNS refuses an empty body.
            .body(format!("mdmsim push for {device_id}"))
            .send()
            .await
            .map_err(|source| PushError::Http { channel: channel.clone(), source })?;
        if resp.status().as_u16() == 401 && !fresh && s.config.dmclient.wns_token.is_none() {
            fresh = true;
            continue;
        }
        let h = resp.headers();
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let record = PushRecord {
            at: (s.clock)(),
            channel_uri: channel,
            http_status: resp.status().as_u16(),
            wns_status: text("X-WNS-Status"),
            msg_id: text("X-WNS-Msg-ID"),
            retry_after: text("Retry-After").and_then(|v| v.trim().parse().ok()),
        };
        tracing::info!(device = %device_id, status = record.http_status, wns = ?record.wns_status, "WNS push");
        s.mgmt().pushed(device_id, record.clone());
        return Ok(record);
    }
}

/// A package served at `/packages/<name>`.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub url: String,
    pub size: usize,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    bytes: Bytes,
}

struct Shared {
    config: Arc<Config>,
    /// The compat switches in force, resolved once at start.
    compat: Compat,
    /// Tokens issued by the Federated authentication page.
    tokens: IssuedTokens,
    pki: Pki,
    base_url: String,
    mgmt: Mutex<Mgmt>,
    packages: Vec<Package>,
    clock: Clock,
    /// The bearer token of the admin endpoints.
    admin: AdminToken,
    /// The fault injector, when faults are configured.
    faults: Option<Mutex<Injector>>,
    /// The WNS access token in use.
    wns_token: Mutex<Option<WnsToken>>,
    /// The HTTP client of pushes from the admin endpoint and the policies.
    push_client: reqwest::Client,
}

impl Shared {
    fn mgmt(&self) -> MutexGuard<'_, Mgmt> {
        // A panic while holding the lock cannot leave the records half-written in a way that
        // matters more than losing the server, so keep serving.
        self.mgmt.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fault for this management request of `device_id`, if faults are configured.
    fn draw_fault(&self, device_id: &str) -> Option<faults::FaultKind> {
        // The injector holds only counters: a poisoned lock loses nothing that matters.
        self.faults.as_ref()?.lock().unwrap_or_else(|e| e.into_inner()).draw(device_id)
    }

    fn fault_plan(&self) -> Option<FaultPlan> {
        Some(self.faults.as_ref()?.lock().unwrap_or_else(|e| e.into_inner()).plan().clone())
    }
}

/// A running server. Dropping it stops it.
pub struct ServerHandle {
    /// `https://127.0.0.1:PORT` (or `http://`), no trailing slash.
    pub base_url: String,
    pub local_addr: SocketAddr,
    /// The CA certificate file (PEM) clients should trust.
    pub ca_file: PathBuf,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// `BASE/EnrollmentServer/Discovery.svc`.
    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.base_url)
    }

    /// `BASE/ManagementServer/MDM.svc`.
    pub fn management_url(&self) -> String {
        format!("{}{MANAGEMENT_PATH}", self.base_url)
    }

    /// The bearer token of the admin endpoints (`Authorization: Bearer <token>`).
    pub fn admin_token(&self) -> &str {
        self.shared.admin.value()
    }

    /// The file that keeps the admin token (`<state>/admin-token`, mode 0600).
    pub fn admin_token_file(&self) -> &FsPath {
        self.shared.admin.file()
    }

    /// The faults the server injects, with the seed in use; `None` without faults.
    pub fn fault_plan(&self) -> Option<FaultPlan> {
        self.shared.fault_plan()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.shared.pki.ca_cert.to_pem().unwrap_or_default()
    }

    /// The records of every device that enrolled or checked in.
    pub fn devices(&self) -> Vec<DeviceRecord> {
        self.shared.mgmt().records()
    }

    /// The record of one device.
    pub fn device(&self, device_id: &str) -> Option<DeviceRecord> {
        self.shared.mgmt().record(device_id)
    }

    /// Totals over every device's records.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.devices())
    }

    /// The packages served, with size and SHA-256.
    pub fn packages(&self) -> &[Package] {
        &self.shared.packages
    }

    /// Rotates the device's AAuthName/AAuthSecret through a DMAcc Replace in its next
    /// Maintenance session. False when the device has no app-layer credentials here.
    pub fn request_rekey(&self, device_id: &str) -> bool {
        self.shared.mgmt().request_rekey(device_id)
    }

    /// Sends a WNS raw push (Microsoft's push notification support page) to the device's last
    /// reported `Push/ChannelURI` with `client` (the caller decides which certificates it
    /// trusts), and records the answer. A device that gets it starts a session (Alert 1200 on
    /// `win10`, `mode=Apps` on `win81`).
    pub async fn push(&self, client: &reqwest::Client, device_id: &str) -> Result<PushRecord, PushError> {
        push_device(&self.shared, client, device_id).await
    }

    /// Waits until the server stops by itself (an I/O error).
    pub async fn wait(mut self) -> io::Result<()> {
        match self.task.take() {
            Some(t) => t.await.unwrap_or_else(|e| Err(io::Error::other(e))),
            None => Ok(()),
        }
    }

    /// Stops accepting, finishes the requests in flight, and returns.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the server on the current tokio runtime.
pub async fn start(opts: ServerOptions) -> Result<ServerHandle, ServerError> {
    check_exposure(opts.listen, opts.http, opts.allow_remote)?;
    let tcp = TcpListener::bind(opts.listen).await.map_err(|source| ServerError::Bind { addr: opts.listen, source })?;
    let local_addr = tcp.local_addr().map_err(|source| ServerError::Bind { addr: opts.listen, source })?;
    let scheme = if opts.http { "http" } else { "https" };
    let base_url = match &opts.public_url {
        Some(u) => {
            let u = u.trim_end_matches('/').to_string();
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.split('/').nth(2).is_none_or(str::is_empty)
            {
                return Err(ServerError::PublicUrl(u));
            }
            u
        }
        None => {
            // An unspecified address (0.0.0.0) is announced as loopback; use --public-url for
            // devices on other machines.
            let ip = if local_addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { local_addr.ip() };
            match ip {
                IpAddr::V4(v4) => format!("{scheme}://{v4}:{}", local_addr.port()),
                IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{}", local_addr.port()),
            }
        }
    };
    let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string(), "::1".to_string()];
    if !local_addr.ip().is_unspecified() && !hosts.contains(&local_addr.ip().to_string()) {
        hosts.push(local_addr.ip().to_string());
    }
    if let Some(host) = opts.public_url.as_deref().and_then(url_host)
        && !hosts.contains(&host)
    {
        hosts.push(host);
    }
    let shared = shared(opts.state_dir, opts.config, opts.clock, base_url.clone(), &hosts)?;
    let app = router(shared.clone()).into_make_service_with_connect_info::<Peer>();
    let (tx, rx) = oneshot::channel::<()>();
    let stop = async move {
        let _ = rx.await;
    };
    let task = if opts.http {
        tokio::spawn(async move { axum::serve(tcp, app).with_graceful_shutdown(stop).await })
    } else {
        let acceptor = Arc::new(acceptor(&shared.pki)?);
        let listener = TlsListener::new(tcp, acceptor);
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop).await })
    };
    let ca_file = shared.pki.ca_file.clone();
    Ok(ServerHandle { base_url, local_addr, ca_file, shared, shutdown: Some(tx), task: Some(task) })
}

/// The base URL of an in-process server: the `.invalid` top-level domain never resolves
/// (RFC 2606), so nothing reaches it over a network by mistake.
pub const IN_PROCESS_BASE_URL: &str = "https://in-process.mdmsim.invalid";

/// The reference server without sockets: the management and package handlers called directly
/// by the runner's in-process exchange (tests and benchmarks). It keeps the same records as a
/// listening server and answers the same way, faults included.
pub struct InProcessServer {
    shared: Arc<Shared>,
}

/// The answer of the in-process management endpoint.
#[derive(Debug, Clone)]
pub struct InProcessReply {
    pub status: u16,
    /// The `Retry-After` header, when the answer has one.
    pub retry_after: Option<String>,
    /// The body, `None` when it is longer than the caller reads.
    pub body: Option<Bytes>,
}

/// Builds an in-process server (CA and admin token in `state_dir`, as [`start`] does).
pub fn start_in_process(
    state_dir: impl Into<PathBuf>,
    config: Config,
    clock: Option<Clock>,
) -> Result<InProcessServer, ServerError> {
    let hosts = ["in-process.mdmsim.invalid".to_string()];
    let shared = shared(state_dir.into(), config, clock, IN_PROCESS_BASE_URL.to_string(), &hosts)?;
    Ok(InProcessServer { shared })
}

impl InProcessServer {
    /// The management URL devices are given.
    pub fn management_url(&self) -> String {
        format!("{}{MANAGEMENT_PATH}", self.shared.base_url)
    }

    /// One management POST to `url` (its query gives the mode): the HTTP status, the
    /// `Retry-After` header (of a throttling fault) and at most `max_body` bytes of the body
    /// (`None` when the body is longer).
    pub async fn post(&self, url: &str, body: &str, cert_cn: Option<&str>, max_body: u64) -> InProcessReply {
        let query = url.split_once('?').map(|(_, q)| q);
        let resp = manage(&self.shared, cert_cn, query, None, body.as_bytes()).await;
        let status = resp.status().as_u16();
        let retry_after =
            resp.headers().get(header::RETRY_AFTER).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
        InProcessReply { status, retry_after, body: axum::body::to_bytes(resp.into_body(), limit).await.ok() }
    }

    /// A package download: its size and hex SHA-256, or `None` when no package has that URL.
    pub fn fetch(&self, url: &str) -> Option<(u64, String)> {
        let name = url.strip_prefix(&format!("{}/packages/", self.shared.base_url))?;
        let p = self.shared.packages.iter().find(|p| p.name == name)?;
        Some((p.bytes.len() as u64, p.sha256.clone()))
    }

    /// The server's record of every device.
    pub fn devices(&self) -> Vec<DeviceRecord> {
        self.shared.mgmt().records()
    }

    /// The record of one device.
    pub fn device(&self, device_id: &str) -> Option<DeviceRecord> {
        self.shared.mgmt().record(device_id)
    }

    /// Counts over all devices.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.shared.mgmt().records())
    }

    /// The packages the server serves.
    pub fn packages(&self) -> &[Package] {
        &self.shared.packages
    }
}

/// Everything the handlers share: CA and certificates, admin token, packages, plans, records.
fn shared(
    state_dir: PathBuf,
    config: Config,
    clock: Option<Clock>,
    base_url: String,
    hosts: &[String],
) -> Result<Arc<Shared>, ServerError> {
    let pki = Pki::open(&state_dir, hosts, config.compat().separate_tls_ca)?;
    let admin = AdminToken::open(&state_dir)?;
    let fault_config = &config.faults;
    let faults = (!fault_config.spec.is_empty()).then(|| {
        Mutex::new(Injector::new(FaultPlan {
            spec: fault_config.spec,
            // No seed given: one from the OS, shown by `fault_plan` so that the run can be
            // repeated with it.
            seed: fault_config.seed.unwrap_or_else(|| u64::from_be_bytes(random_bytes())),
            slow_delay: fault_config.slow_delay.unwrap_or(faults::DEFAULT_SLOW_DELAY),
            retry_after: fault_config.retry_after.unwrap_or(faults::DEFAULT_RETRY_AFTER),
        }))
    });
    let packages = build_packages(&config, &base_url)?;
    let package = |name: &str| packages.iter().find(|p| p.name == name);
    let apps = config
        .apps
        .iter()
        .filter_map(|a| {
            let p = package(&a.name)?;
            Some(AppPlan {
                name: a.name.clone(),
                product_id: a.product_id.clone(),
                version: a.version.clone(),
                url: p.url.clone(),
                size: p.size,
                sha256: p.sha256.clone(),
                on_request: a.on_request,
            })
        })
        .collect();
    let msis = config
        .msi
        .iter()
        .filter_map(|m| {
            let p = package(&m.name)?;
            Some(MsiPlan {
                name: m.name.clone(),
                product_id: m.product_id.clone(),
                version: m.version.clone(),
                url: p.url.clone(),
                size: p.size,
                sha256: p.sha256.clone(),
                command_line: m.command_line.clone(),
                timeout_minutes: m.timeout_minutes,
                retry_count: m.retry_count,
                retry_interval_minutes: m.retry_interval_minutes,
                min_os_version: m.min_os_version.clone().unwrap_or_else(|| msi::DEFAULT_MIN_OS.to_string()),
            })
        })
        .collect();
    let plans = Plans { apps, profiles: profiles::build(&config)?, msis };
    let config = Arc::new(config);
    let shared = Arc::new(Shared {
        mgmt: Mutex::new(Mgmt::with_plans(config.clone(), plans)),
        compat: config.compat(),
        tokens: IssuedTokens::default(),
        config,
        pki,
        base_url,
        packages,
        clock: clock.unwrap_or_else(|| Arc::new(Utc::now)),
        admin,
        faults,
        wns_token: Mutex::new(None),
        push_client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default(),
    });
    Ok(shared)
}

/// Whether an address is loopback (IPv4-mapped loopback included).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Plain HTTP only on loopback; HTTPS elsewhere only when allowed.
pub fn check_exposure(listen: SocketAddr, http: bool, allow_remote: bool) -> Result<(), ServerError> {
    if is_loopback(listen.ip()) {
        return Ok(());
    }
    if http {
        return Err(ServerError::HttpNotLoopback(listen));
    }
    if !allow_remote {
        return Err(ServerError::RemoteNotAllowed(listen));
    }
    Ok(())
}

/// 8 random bytes from the OS (the server does I/O; the core never calls this).
fn random_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        b.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    }
    b
}

fn url_host(url: &str) -> Option<String> {
    let authority = url.split('/').nth(2)?;
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// The packages of the config's apps and MSI installs, read or generated.
fn build_packages(config: &Config, base_url: &str) -> Result<Vec<Package>, ServerError> {
    let mut out = Vec::new();
    let apps = config.apps.iter().map(|a| (&a.name, &a.version, &a.file, a.size));
    let msis = config.msi.iter().map(|m| (&m.name, &m.version, &m.file, m.size));
    for (name, version, file, size) in apps.chain(msis) {
        let bytes = match file {
            Some(file) => {
                let path = match &config.base_dir {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.clone(),
                };
                std::fs::read(&path).map_err(|source| ServerError::Package {
                    app: name.clone(),
                    file: path.display().to_string(),
                    source,
                })?
            }
            None => generated_package(name, version, size),
        };
        out.push(Package {
            name: name.clone(),
            url: format!("{base_url}/packages/{name}"),
            size: bytes.len(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes: Bytes::from(bytes),
        });
    }
    Ok(out)
}

/// Deterministic filler bytes for an app without a file: the same name and version always give
/// the same package (and hash).
fn generated_package(name: &str, version: &str, size: usize) -> Vec<u8> {
    let mut out = format!("mdmsim generated package {name} {version}\n").into_bytes();
    let mut block = Sha256::digest(name.as_bytes());
    while out.len() < size {
        block = Sha256::digest(block);
        out.extend_from_slice(&block);
    }
    out.truncate(size);
    out
}

fn router(shared: Arc<Shared>) -> Router {
    let admin = Router::new()
        .route("/admin/devices", get(admin_devices))
        .route("/admin/devices/{id}", get(admin_device))
        .route("/admin/devices/{id}/push", post(admin_push))
        .route("/admin/devices/{id}/apps/{name}", post(admin_assign_app))
        .route("/admin/summary", get(admin_summary))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_admin_token));
    Router::new()
        .route(DISCOVERY_PATH, get(discovery_get).post(discovery_post))
        .route("/EnrollmentServer/Policy.svc", post(policy_post))
        .route("/EnrollmentServer/Enrollment.svc", post(enrollment_post))
        .route(AUTH_PATH, get(auth_get).post(auth_post))
        .route(MANAGEMENT_PATH, post(management_post))
        .route("/packages/{name}", get(package_get))
        .merge(admin)
        .with_state(shared)
}

/// 401 for an admin request without the admin token (RFC 6750 `WWW-Authenticate`).
async fn require_admin_token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let (challenge, why) = match s.admin.check(&headers) {
        Presented::Valid => return next.run(req).await,
        Presented::Missing => ("Bearer realm=\"mdmsim admin\"", "the admin endpoints need the server's admin token"),
        Presented::Wrong => {
            ("Bearer realm=\"mdmsim admin\", error=\"invalid_token\"", "this is not the server's admin token")
        }
    };
    let body = format!(
        "{why}: send Authorization: Bearer <token>, with the token from the {TOKEN_FILE} file in the server's state directory\n"
    );
    (HttpStatus::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], body).into_response()
}

/// Who is on the other end of a connection: address and, over HTTPS, the CN of a client
/// certificate that verified against our CA.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert_cn: Option<String>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer { addr: *stream.remote_addr(), cert_cn: None }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

fn acceptor(pki: &Pki) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_private_key(&pki.server_key)?;
    b.set_certificate(&pki.server_cert)?;
    b.add_extra_chain_cert(pki.tls_ca_cert.clone())?;
    b.check_private_key()?;
    b.cert_store_mut().add_cert(pki.ca_cert.clone())?;
    b.add_client_ca(&pki.ca_cert)?;
    // Ask for a client certificate but let the handshake finish without one (or with one from
    // another CA): the management endpoint then falls back to app-layer auth (`syncml:auth-md5`).
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    b.set_session_id_context(b"mdmsim-server")?;
    Ok(b.build())
}

/// Accepts TCP connections and runs TLS handshakes in their own tasks, so a slow client does
/// not hold up the others.
pub struct TlsListener {
    rx: mpsc::Receiver<(SslStream<TcpStream>, Peer)>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: Arc<SslAcceptor>) -> Self {
        let local = tcp.local_addr().unwrap_or_else(|_| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (sock, addr) = match tcp.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Answers go out at once, not after the client's delayed ACK of the session
                // tickets sent right after the handshake (Nagle's algorithm).
                let _ = sock.set_nodelay(true);
                let (tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), handshake(sock, addr, &acceptor)).await {
                        Ok(Ok(pair)) => {
                            let _ = tx.send(pair).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {addr} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {addr} timed out"),
                    }
                });
            }
        });
        TlsListener { rx, local, task }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handshake(
    sock: TcpStream,
    addr: SocketAddr,
    acceptor: &SslAcceptor,
) -> io::Result<(SslStream<TcpStream>, Peer)> {
    let ssl = Ssl::new(acceptor.context()).map_err(io::Error::other)?;
    let mut stream = SslStream::new(ssl, sock).map_err(io::Error::other)?;
    Pin::new(&mut stream).accept().await.map_err(io::Error::other)?;
    let verified = stream.ssl().verify_result() == X509VerifyResult::OK;
    let cert_cn = stream.ssl().peer_certificate().filter(|_| verified).and_then(|c| enroll::cert_cn(&c));
    Ok((stream, Peer { addr, cert_cn }))
}

impl axum::serve::Listener for TlsListener {
    type Io = SslStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(pair) => pair,
            // The acceptor task is gone (it never ends on its own): wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer { addr: self.local, cert_cn: None })
    }
}

fn soap(s: &Shared, reply: enroll::SoapReply) -> Response {
    let mut status = HttpStatus::from_u16(reply.status).unwrap_or(HttpStatus::INTERNAL_SERVER_ERROR);
    if s.compat.soap_fault_http_200 && status == HttpStatus::INTERNAL_SERVER_ERROR {
        // Compat: the fault goes in an HTTP 200, as Fleet's SOAP endpoints send it.
        status = HttpStatus::OK;
    }
    (status, [(header::CONTENT_TYPE, enroll::SOAP_CONTENT_TYPE)], reply.body).into_response()
}

fn ctx(s: &Shared) -> enroll::Ctx<'_> {
    enroll::Ctx {
        config: &s.config,
        pki: &s.pki,
        base: &s.base_url,
        now: (s.clock)(),
        compat: s.compat,
        tokens: &s.tokens,
    }
}

async fn discovery_get() -> Response {
    // MS-MDE2: the client first sends a bare GET and needs a 200.
    (HttpStatus::OK, "").into_response()
}

async fn discovery_post(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    soap(&s, enroll::discover(&String::from_utf8_lossy(&body), &ctx(&s)))
}

async fn policy_post(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    soap(&s, enroll::policies(&String::from_utf8_lossy(&body), &ctx(&s)))
}

async fn enrollment_post(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    // Key generation and signing take a moment; keep them off the async workers.
    let s2 = s.clone();
    let result = tokio::task::spawn_blocking(move || enroll::enroll(&text, &ctx(&s2))).await;
    let (reply, enrolled) = match result {
        Ok(r) => r,
        Err(e) => (enroll::fault(&Fault::EnrollmentServer(e.to_string()), None, (s.clock)()), None),
    };
    if let Some(e) = enrolled {
        tracing::info!(device = %e.device_id, user = %e.record.user, "enrolled");
        s.mgmt().enrolled(&e.device_id, e.record, e.creds);
    }
    soap(&s, reply)
}

/// The Federated authentication page (`sts.rs`): the web view's GET.
async fn auth_get(State(s): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let (appru, hint) = (query_param(&query, "appru"), query_param(&query, "login_hint"));
    let action = format!("{}{AUTH_PATH}", s.base_url);
    page(sts::on_get(s.compat.auth_page, &s.tokens, &action, appru.as_deref(), hint.as_deref()))
}

/// The login form's POST.
async fn auth_post(State(s): State<Arc<Shared>>, Form(fields): Form<HashMap<String, String>>) -> Response {
    let action = format!("{}{AUTH_PATH}", s.base_url);
    page(sts::on_post(&s.config, &s.tokens, &action, &fields))
}

fn page(reply: PageReply) -> Response {
    match reply {
        PageReply::Html { status, body } => {
            let status = HttpStatus::from_u16(status).unwrap_or(HttpStatus::OK);
            (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
        }
        PageReply::Redirect(location) => (HttpStatus::FOUND, [(header::LOCATION, location)]).into_response(),
        PageReply::BadRequest(why) => (HttpStatus::BAD_REQUEST, format!("{why}\n")).into_response(),
    }
}

async fn management_post(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let user_agent_origin = headers.get("UserAgentOrigin").and_then(|v| v.to_str().ok());
    manage(&s, peer.cert_cn.as_deref(), query.as_deref(), user_agent_origin, &body).await
}

/// One management request: the SyncML body, the `mode` query, the CN of a verified client
/// certificate and the `UserAgentOrigin` header. Shared by the HTTP endpoint and the
/// in-process server.
async fn manage(
    s: &Shared,
    cert_cn: Option<&str>,
    query: Option<&str>,
    user_agent_origin: Option<&str>,
    body: &[u8],
) -> Response {
    let Ok(text) = std::str::from_utf8(body) else {
        return (HttpStatus::BAD_REQUEST, "the SyncML body is not UTF-8\n").into_response();
    };
    let msg = match syncml::decode(text) {
        Ok(m) => m,
        Err(e) => {
            let (line, col) = syncml::line_col(text, e.offset());
            return (HttpStatus::BAD_REQUEST, format!("malformed SyncML at line {line}, column {col}: {e}\n"))
                .into_response();
        }
    };
    if msg.hdr.source.trim().is_empty() {
        return (HttpStatus::BAD_REQUEST, "SyncHdr/Source/LocURI (the DeviceID) is empty\n").into_response();
    }
    let device_id = msg.hdr.source.trim().to_string();
    let fault = s.draw_fault(&device_id);
    let record_fault = |kind: FaultKind| {
        tracing::info!(device = %device_id, session = %msg.hdr.session_id, msg = %msg.hdr.msg_id, fault = %kind, "fault injected");
        let record = FaultRecord {
            at: (s.clock)(),
            session_id: msg.hdr.session_id.clone(),
            msg_id: msg.hdr.msg_id.clone(),
            kind: kind.name().to_string(),
        };
        s.mgmt().fault_injected(&device_id, record);
    };
    // The faults that replace the answer come before the message is handled: the server does
    // not act on a message whose answer the device never gets (see `faults.rs`).
    match fault {
        Some(kind @ FaultKind::Http500) => {
            record_fault(kind);
            return faults::http_500();
        }
        Some(kind @ FaultKind::Reset) => {
            record_fault(kind);
            return faults::reset();
        }
        Some(kind @ FaultKind::Truncate) => {
            record_fault(kind);
            return faults::truncated(&msg.hdr);
        }
        Some(kind @ FaultKind::Malformed) => {
            record_fault(kind);
            return faults::malformed(&msg.hdr);
        }
        Some(kind @ (FaultKind::Http429 | FaultKind::Http503)) => {
            record_fault(kind);
            // Compat `throttle_without_retry_after`: the answer says to come back, not when.
            let after = s.fault_plan().map_or(faults::DEFAULT_RETRY_AFTER, |p| p.retry_after);
            return faults::throttled(kind, (!s.compat.throttle_without_retry_after).then_some(after));
        }
        Some(kind @ FaultKind::Slow) => {
            record_fault(kind);
            // Before handling: a device that gives up first closes the connection, this
            // future is dropped, and the message is never acted on.
            let delay = s.fault_plan().map_or(faults::DEFAULT_SLOW_DELAY, |p| p.slow_delay);
            tokio::time::sleep(delay.min(faults::MAX_SLOW_DELAY)).await;
        }
        Some(FaultKind::NoFinal) | None => {}
    }
    let mode = query.and_then(|q| query_param(q, "mode"));
    let now = (s.clock)();
    let hdr = msg.hdr.clone();
    let reply = s.mgmt().handle(Incoming { msg, mode: mode.as_deref(), cert_cn, user_agent_origin, now });
    match reply {
        Reply::End => (HttpStatus::OK, Bytes::new()).into_response(),
        Reply::HttpUnauthorized => {
            (HttpStatus::UNAUTHORIZED, "the credentials of this message were not accepted\n").into_response()
        }
        Reply::Message(mut m) => {
            // An empty answer has no Final to drop, nor has an answer that already goes
            // without one (compat `final`): then nothing is injected or counted.
            if fault == Some(FaultKind::NoFinal) && m.body.final_ {
                m.body.final_ = false;
                let record = FaultRecord {
                    at: (s.clock)(),
                    session_id: hdr.session_id.clone(),
                    msg_id: hdr.msg_id.clone(),
                    kind: FaultKind::NoFinal.name().to_string(),
                };
                tracing::info!(device = %device_id, session = %hdr.session_id, msg = %hdr.msg_id, fault = "no-final", "fault injected");
                s.mgmt().fault_injected(&device_id, record);
            }
            (HttpStatus::OK, [(header::CONTENT_TYPE, syncml::CONTENT_TYPE)], syncml::encode(&m)).into_response()
        }
    }
}

/// A query parameter, percent-decoded; names compare case-insensitively.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

async fn admin_devices(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.mgmt().records()).into_response()
}

async fn admin_device(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match s.mgmt().record(&id) {
        Some(r) => axum::Json(r).into_response(),
        None => (HttpStatus::NOT_FOUND, format!("no device {id:?}\n")).into_response(),
    }
}

/// `POST /admin/devices/<DeviceID>/push`: a WNS raw push to the device's channel; the answer is
/// the push's record (the channel's HTTP status, `X-WNS-Status`, `X-WNS-Msg-ID`). 404 for a
/// device the server does not know, 409 when it reported no ChannelURI yet, 502 when the push
/// notification service could not be reached or gave no token.
async fn admin_push(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if s.mgmt().record(&id).is_none() {
        return (HttpStatus::NOT_FOUND, format!("no device {id:?}\n")).into_response();
    }
    let client = s.push_client.clone();
    match push_device(&s, &client, &id).await {
        Ok(record) => axum::Json(record).into_response(),
        Err(e @ (PushError::NoChannel(_) | PushError::BadChannel(_))) => {
            (HttpStatus::CONFLICT, format!("{e}\n")).into_response()
        }
        Err(e) => (HttpStatus::BAD_GATEWAY, format!("{e}\n")).into_response(),
    }
}

/// `POST /admin/devices/<DeviceID>/apps/<name>`: assigns an app of the config (one marked
/// `on_request`, or any not yet on the device) and pushes to the device so that it comes for it
/// at once (a `mode=Apps` session on Windows 8.1, as the operation modes post describes the app
/// install flow). The answer: `{"assigned": name, "push": <push record> | null, "push_error":
/// why | null}`; 404 for an unknown device or app, 409 when the device already has the app.
async fn admin_assign_app(State(s): State<Arc<Shared>>, Path((id, name)): Path<(String, String)>) -> Response {
    if let Err(e) = s.mgmt().assign_app(&id, &name) {
        let status = match e {
            mgmt::AssignError::AlreadyAssigned => HttpStatus::CONFLICT,
            _ => HttpStatus::NOT_FOUND,
        };
        return (status, format!("{e}\n")).into_response();
    }
    tracing::info!(device = %id, app = %name, "app assigned");
    let client = s.push_client.clone();
    let (push, push_error) = match push_device(&s, &client, &id).await {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e.to_string())),
    };
    axum::Json(serde_json::json!({ "assigned": name, "push": push, "push_error": push_error })).into_response()
}

async fn admin_summary(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(Summary::of(&s.mgmt().records())).into_response()
}

async fn package_get(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match s.packages.iter().find(|p| p.name == name) {
        Some(p) => {
            (HttpStatus::OK, [(header::CONTENT_TYPE, "application/octet-stream")], p.bytes.clone()).into_response()
        }
        None => (HttpStatus::NOT_FOUND, format!("no package {name:?}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<ServerHandle>();
    }

    #[test]
    fn generated_packages_are_deterministic_and_sized() {
        let a = generated_package("App", "1.0", 1000);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, generated_package("App", "1.0", 1000));
        assert_ne!(a, generated_package("App", "2.0", 1000));
    }

    #[test]
    fn query_and_url_helpers() {
        assert_eq!(query_param("mode=Maintenance&Platform=WoA", "mode").as_deref(), Some("Maintenance"));
        assert_eq!(query_param("Platform=WoA", "mode"), None);
        assert_eq!(url_host("https://mdm.lan:8443/x").as_deref(), Some("mdm.lan"));
        assert_eq!(url_host("https://[::1]:8443").as_deref(), Some("::1"));
    }
}
