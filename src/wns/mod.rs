//! An emulation of the Windows Push Notification Services (WNS), so that a management server can
//! push to emulated devices as it pushes to Windows: the OAuth client-credentials token endpoint
//! (as `login.live.com/accesstoken.srf` does for WNS), a channel URI per device and app, and
//! `POST <ChannelURI>` answered with the status codes and headers of Microsoft's "Push notification
//! service request and response headers" page. A raw notification that is accepted wakes the
//! device through a [`Deliver`] callback (the fleet's inbox), and the device opens a
//! push-started session. `docs/push.md` has the flow, the endpoints and every status code.
//!
//! Owns the channel and token tables (bounded: [`WnsOptions::max_channels`], [`MAX_TOKENS`], a
//! body limit), the HTTP endpoints (axum, plain HTTP on loopback unless allowed otherwise) and
//! the device side's channel calls ([`Wns::call`], in-process: the device's WNS client talks to
//! it directly). Does not own when a device asks for a channel (the DMClient CSP and the WMI
//! bridge emit [`crate::tree::Effect::RequestChannel`], the engine moves it as a
//! [`crate::device::engine::Transmit::Channel`]), nor what a woken device does (its scheduler).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::device::engine::{ChannelCall, ChannelOp, ChannelReport};
use crate::tree::ChannelOutcome;

/// The path of the token endpoint (`https://login.live.com/accesstoken.srf` for the real WNS).
pub const TOKEN_PATH: &str = "/accesstoken.srf";

/// The largest notification payload WNS takes: 5 KB ("Push notification service request and
/// response headers": a larger one is answered 413).
pub const MAX_PAYLOAD: usize = 5 * 1024;

/// The most bytes the service reads of any request body; a longer one is answered 413 unread.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a channel lives ("Windows Push Notification Services (WNS) overview": 30 days).
pub const CHANNEL_LIFETIME: TimeDelta = crate::csp::dmclient::CHANNEL_LIFETIME;

/// How long an access token is good for (`expires_in` of the token answer).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// The longest DeviceID, node or app name a channel is made for (a channel's memory is bounded).
pub const MAX_NAME: usize = 256;

/// The most access tokens kept; the oldest go first.
pub const MAX_TOKENS: usize = 10_000;

/// The default bound on channels held (alive, revoked and expired together).
pub const DEFAULT_MAX_CHANNELS: usize = 100_000;

/// The default throttle: notifications one channel takes per minute before 406.
pub const DEFAULT_PER_MINUTE: u32 = 120;

/// Where the service takes the time from (expiry of tokens and channels).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Wakes a device: called with the DeviceID for every raw notification accepted; false when no
/// device of that id listens (the run ended), and the notification is answered `dropped`.
pub type Deliver = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How to run the service.
#[derive(Clone)]
pub struct WnsOptions {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Listen on an address other machines can reach (plain HTTP: without it, loopback only).
    pub allow_remote: bool,
    /// The client credentials the token endpoint takes; `None` takes any non-empty pair.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub token_lifetime: Duration,
    pub max_channels: usize,
    /// Notifications per channel per minute before 406 (0: no throttling).
    pub per_minute: u32,
    pub clock: Clock,
    /// Serve the device side over HTTP too (`mdmsim wns` standalone): `POST
    /// /mdmsim/channels` for the devices' channel calls and `GET /mdmsim/wake` for the runs that
    /// host them to learn which devices were pushed ([`remote_call`], [`remote_wake`]).
    pub device_api: bool,
}

impl Default for WnsOptions {
    fn default() -> Self {
        WnsOptions {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            allow_remote: false,
            client_id: None,
            client_secret: None,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            max_channels: DEFAULT_MAX_CHANNELS,
            per_minute: DEFAULT_PER_MINUTE,
            clock: Arc::new(Utc::now),
            device_api: false,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum WnsError {
    #[error(
        "refusing to listen on {0}: the push notification service speaks plain HTTP; listen on 127.0.0.1 or ::1, or pass --allow-remote"
    )]
    RemoteNotAllowed(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Counts over the service's life (served as JSON at `GET /stats`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WnsStats {
    pub tokens_issued: u64,
    pub channels_issued: u64,
    /// Notifications answered 200 `received` (the device was woken).
    pub delivered: u64,
    /// Notifications answered 200 `dropped` (no device listens any more).
    pub dropped: u64,
    /// Notifications refused: 400, 401, 404, 406, 410, 413.
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    Alive,
    Revoked,
    Expired,
}

struct Channel {
    device: String,
    csp: String,
    node: String,
    expires: DateTime<Utc>,
    state: ChannelState,
    window_start: DateTime<Utc>,
    in_window: u32,
}

#[derive(Default)]
struct Tables {
    /// Channel token → channel.
    channels: HashMap<String, Channel>,
    /// (DeviceID, node) → the token of its current channel.
    current: HashMap<(String, String), String>,
    /// Access token → expiry; `token_order` gives the issue order.
    tokens: HashMap<String, DateTime<Utc>>,
    token_order: VecDeque<String>,
    stats: WnsStats,
}

struct Inner {
    opts: WnsOptions,
    base_url: String,
    tables: Mutex<Tables>,
    deliver: Mutex<Option<Deliver>>,
    /// Devices pushed, for the runs that poll `GET /mdmsim/wake` (device API only).
    wake: Mutex<WakeQueue>,
    woken: tokio::sync::Notify,
}

/// The devices pushed and not yet fetched by a run (bounded: the oldest go first), and when a
/// run last asked.
#[derive(Default)]
struct WakeQueue {
    ids: VecDeque<String>,
    last_poll: Option<std::time::Instant>,
}

/// The most pushed devices kept for the runs to fetch.
pub const MAX_WAKE_QUEUE: usize = 10_000;

/// How long a run may go without polling before the service counts its devices disconnected.
const RUN_GONE_AFTER: Duration = Duration::from_secs(60);

/// The longest `GET /mdmsim/wake` waits.
pub const MAX_WAKE_WAIT: Duration = Duration::from_secs(30);

/// The service's state; clones share it.
#[derive(Clone)]
pub struct Wns {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Wns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wns").field("base_url", &self.inner.base_url).finish_non_exhaustive()
    }
}

/// The random part of tokens, channels and message ids: `n` bytes from the OS, hex.
fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        let u = uuid::Uuid::new_v4();
        for (i, x) in b.iter_mut().enumerate() {
            *x = u.as_bytes()[i % 16];
        }
    }
    hex::encode(b)
}

impl Wns {
    /// A service whose channel URIs start with `base_url` (`http://127.0.0.1:PORT`).
    pub fn new(opts: WnsOptions, base_url: impl Into<String>) -> Wns {
        Wns {
            inner: Arc::new(Inner {
                opts,
                base_url: base_url.into().trim_end_matches('/').to_string(),
                tables: Mutex::new(Tables::default()),
                deliver: Mutex::new(None),
                wake: Mutex::new(WakeQueue::default()),
                woken: tokio::sync::Notify::new(),
            }),
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // The tables hold no invariant a panic elsewhere could break halfway.
        self.inner.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The token endpoint's URL.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.inner.base_url)
    }

    /// Who wakes the devices (the fleet's inbox); until set, notifications are `dropped`.
    pub fn set_deliver(&self, deliver: Deliver) {
        *self.inner.deliver.lock().unwrap_or_else(|e| e.into_inner()) = Some(deliver);
    }

    /// Counts so far.
    pub fn stats(&self) -> WnsStats {
        self.tables().stats.clone()
    }

    /// The current channel URI of a device's node, if it has a live one.
    pub fn channel_of(&self, device: &str, node: &str) -> Option<String> {
        let t = self.tables();
        let token = t.current.get(&(device.to_string(), node.to_string()))?;
        (t.channels.get(token)?.state == ChannelState::Alive).then(|| self.channel_uri(token))
    }

    fn channel_uri(&self, token: &str) -> String {
        format!("{}/?token={token}", self.inner.base_url)
    }

    /// A device's call: a channel request (a new channel, the one before it answered 410 from
    /// now on), or the service revoking or expiring the device's channels.
    pub fn call(&self, call: &ChannelCall) -> Vec<ChannelReport> {
        let now = (self.inner.opts.clock)();
        let mut t = self.tables();
        match &call.op {
            ChannelOp::Request { csp, node, app } => {
                let report = |outcome| vec![ChannelReport { csp: csp.clone(), node: node.clone(), outcome }];
                if app.trim().is_empty() || app.len() > MAX_NAME {
                    return report(ChannelOutcome::Refused(format!("not an app the service knows: {app:?}")));
                }
                if call.device.is_empty()
                    || call.device.len() > MAX_NAME
                    || node.len() > MAX_NAME
                    || csp.len() > MAX_NAME
                {
                    return report(ChannelOutcome::Refused("a DeviceID or node name over 256 bytes".into()));
                }
                let key = (call.device.clone(), node.clone());
                if let Some(old) = t.current.remove(&key)
                    && let Some(c) = t.channels.get_mut(&old)
                    && c.state == ChannelState::Alive
                {
                    c.state = ChannelState::Expired;
                }
                if t.channels.len() >= self.inner.opts.max_channels {
                    let Tables { channels, current, .. } = &mut *t;
                    channels.retain(|_, c| c.state == ChannelState::Alive && c.expires > now);
                    current.retain(|_, tok| channels.contains_key(tok));
                }
                if t.channels.len() >= self.inner.opts.max_channels {
                    return report(ChannelOutcome::Refused(format!(
                        "the service holds its maximum of {} channels",
                        self.inner.opts.max_channels
                    )));
                }
                let token = random_hex(24);
                let expires = now + CHANNEL_LIFETIME;
                t.channels.insert(
                    token.clone(),
                    Channel {
                        device: call.device.clone(),
                        csp: csp.clone(),
                        node: node.clone(),
                        expires,
                        state: ChannelState::Alive,
                        window_start: now,
                        in_window: 0,
                    },
                );
                t.current.insert(key, token.clone());
                t.stats.channels_issued += 1;
                tracing::debug!(device = %call.device, node, "WNS channel issued");
                report(ChannelOutcome::Granted { uri: self.channel_uri(&token), expires })
            }
            ChannelOp::Revoke | ChannelOp::Expire => {
                let (state, outcome) = match call.op {
                    ChannelOp::Revoke => (ChannelState::Revoked, ChannelOutcome::Revoked),
                    _ => (ChannelState::Expired, ChannelOutcome::Expired),
                };
                let Tables { channels, current, .. } = &mut *t;
                let mine: Vec<String> =
                    current.iter().filter(|((d, _), _)| *d == call.device).map(|(_, tok)| tok.clone()).collect();
                let mut out = Vec::new();
                for tok in mine {
                    if let Some(c) = channels.get_mut(&tok)
                        && c.state == ChannelState::Alive
                    {
                        c.state = state;
                        out.push(ChannelReport { csp: c.csp.clone(), node: c.node.clone(), outcome: outcome.clone() });
                    }
                }
                current.retain(|(d, _), _| *d != call.device);
                out
            }
        }
    }

    /// The HTTP endpoints: `POST /accesstoken.srf`, `POST /?token=<channel>`, `GET /stats`.
    pub fn router(&self) -> Router {
        let mut r = Router::new()
            .route(TOKEN_PATH, post(token_post))
            .route("/", post(notify_post))
            .route("/stats", axum::routing::get(stats_get));
        if self.inner.opts.device_api {
            r = r.route("/mdmsim/channels", post(channels_post)).route("/mdmsim/wake", axum::routing::get(wake_get));
        }
        r.layer(DefaultBodyLimit::max(MAX_BODY)).with_state(self.clone())
    }

    /// Queues a pushed device for the runs (device API); true when a run polled lately.
    fn enqueue(&self, device: &str) -> bool {
        let mut q = self.inner.wake.lock().unwrap_or_else(|e| e.into_inner());
        let connected = q.last_poll.is_some_and(|t| t.elapsed() < RUN_GONE_AFTER);
        if connected {
            if q.ids.len() >= MAX_WAKE_QUEUE {
                q.ids.pop_front();
            }
            q.ids.push_back(device.to_string());
            self.inner.woken.notify_waiters();
        }
        connected
    }

    /// The devices pushed since the last call, waiting up to `wait` for one.
    async fn take_woken(&self, wait: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAKE_WAIT);
        loop {
            let notified = self.inner.woken.notified();
            {
                let mut q = self.inner.wake.lock().unwrap_or_else(|e| e.into_inner());
                q.last_poll = Some(std::time::Instant::now());
                if !q.ids.is_empty() {
                    let n = q.ids.len().min(1000);
                    return q.ids.drain(..n).collect();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    fn issue_token(&self) -> (String, u64) {
        let now = (self.inner.opts.clock)();
        let lifetime = self.inner.opts.token_lifetime;
        let token = random_hex(32);
        let mut t = self.tables();
        if t.tokens.len() >= MAX_TOKENS {
            let Tables { tokens, token_order, .. } = &mut *t;
            tokens.retain(|_, exp| *exp > now);
            token_order.retain(|k| tokens.contains_key(k));
            while tokens.len() >= MAX_TOKENS {
                let Some(old) = token_order.pop_front() else { break };
                tokens.remove(&old);
            }
        }
        let expires = now + TimeDelta::from_std(lifetime).unwrap_or(TimeDelta::days(1));
        t.tokens.insert(token.clone(), expires);
        t.token_order.push_back(token.clone());
        t.stats.tokens_issued += 1;
        (token, lifetime.as_secs())
    }

    fn refused(&self, status: StatusCode, why: &str, extra: &[(&'static str, String)]) -> Response {
        self.tables().stats.refused += 1;
        let mut resp = (status, format!("{why}\n")).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(why) {
            h.insert("X-WNS-Error-Description", v);
        }
        for (name, value) in extra {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(*name, v);
            }
        }
        resp
    }
}

/// A running service. Dropping it stops it.
pub struct WnsHandle {
    pub wns: Wns,
    pub local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl WnsHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        self.wns.base_url()
    }

    /// Waits until the service stops by itself (an I/O error).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(t) => t.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for WnsHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the service on the current tokio runtime.
pub async fn start(opts: WnsOptions) -> Result<WnsHandle, WnsError> {
    if !opts.listen.ip().to_canonical().is_loopback() && !opts.allow_remote {
        return Err(WnsError::RemoteNotAllowed(opts.listen));
    }
    let listen = opts.listen;
    let tcp = TcpListener::bind(listen).await.map_err(|source| WnsError::Bind { addr: listen, source })?;
    let local_addr = tcp.local_addr().map_err(|source| WnsError::Bind { addr: listen, source })?;
    let ip = if local_addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { local_addr.ip() };
    let base_url = match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{}", local_addr.port()),
        IpAddr::V6(v6) => format!("http://[{v6}]:{}", local_addr.port()),
    };
    let wns = Wns::new(opts, base_url);
    let app = wns.router();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(tcp, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    Ok(WnsHandle { wns, local_addr, shutdown: Some(tx), task: Some(task) })
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

/// An OAuth 2.0 error answer (RFC 6749 §5.2).
fn oauth_error(error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn token_post(
    State(wns): State<Wns>,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return oauth_error("invalid_request", "expected an application/x-www-form-urlencoded body");
    };
    if f.grant_type.as_deref() != Some("client_credentials") {
        return oauth_error("unsupported_grant_type", "grant_type must be client_credentials");
    }
    if f.scope.as_deref() != Some("notify.windows.com") {
        return oauth_error("invalid_scope", "scope must be notify.windows.com");
    }
    let (id, secret) = (f.client_id.unwrap_or_default(), f.client_secret.unwrap_or_default());
    let opts = &wns.inner.opts;
    let id_ok = opts.client_id.as_ref().map_or(!id.trim().is_empty(), |want| *want == id);
    let secret_ok = opts.client_secret.as_ref().map_or(!secret.trim().is_empty(), |want| {
        want.len() == secret.len() && openssl::memcmp::eq(want.as_bytes(), secret.as_bytes())
    });
    if !(id_ok && secret_ok) {
        return oauth_error("invalid_client", "the client_id and client_secret are not the service's");
    }
    let (token, expires_in) = wns.issue_token();
    axum::Json(serde_json::json!({ "access_token": token, "token_type": "bearer", "expires_in": expires_in }))
        .into_response()
}

async fn stats_get(State(wns): State<Wns>) -> Response {
    axum::Json(wns.stats()).into_response()
}

/// `POST /mdmsim/channels`: a device's channel call, answered as [`Wns::call`] does.
async fn channels_post(
    State(wns): State<Wns>,
    call: Result<axum::Json<ChannelCall>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match call {
        Ok(axum::Json(call)) => axum::Json(wns.call(&call)).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[derive(Deserialize)]
struct WakeQuery {
    wait: Option<u64>,
}

/// `GET /mdmsim/wake?wait=SECS`: the DeviceIDs pushed since the last call (JSON list), waiting
/// up to `wait` seconds (at most 30) for one.
async fn wake_get(State(wns): State<Wns>, Query(q): Query<WakeQuery>) -> Response {
    let ids = wns.take_woken(Duration::from_secs(q.wait.unwrap_or(0))).await;
    axum::Json(ids).into_response()
}

/// A device's channel call to a standalone service at `base_url` (`POST /mdmsim/channels`);
/// any failure is a request that got no channel.
pub async fn remote_call(client: &reqwest::Client, base_url: &str, call: &ChannelCall) -> Vec<ChannelReport> {
    let url = format!("{}/mdmsim/channels", base_url.trim_end_matches('/'));
    let answer = async {
        let resp =
            client.post(&url).json(call).timeout(Duration::from_secs(10)).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_BODY {
            return Err(format!("the answer is over {MAX_BODY} bytes"));
        }
        serde_json::from_slice::<Vec<ChannelReport>>(&body).map_err(|e| e.to_string())
    };
    match answer.await {
        Ok(reports) => reports.into_iter().take(64).collect(),
        Err(e) => call.unanswered(&format!("{url}: {e}")),
    }
}

/// The devices a standalone service at `base_url` was asked to wake since the last call
/// (`GET /mdmsim/wake`, waiting up to 25 s); an error when it cannot be reached.
pub async fn remote_wake(client: &reqwest::Client, base_url: &str) -> Result<Vec<String>, String> {
    let url = format!("{}/mdmsim/wake?wait=25", base_url.trim_end_matches('/'));
    let resp = client.get(&url).timeout(Duration::from_secs(40)).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status().as_u16()));
    }
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    if body.len() > 16 * MAX_BODY {
        return Err(format!("{url}: the answer is too long"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

/// Wakes the devices a standalone service at `base_url` was pushed for, with `deliver`, until
/// the task is aborted; an unreachable service is said once on the log and asked again each
/// second.
pub async fn remote_wake_loop(client: reqwest::Client, base_url: String, deliver: Deliver) {
    let mut warned = false;
    loop {
        match remote_wake(&client, &base_url).await {
            Ok(ids) => {
                warned = false;
                for id in ids {
                    deliver(&id);
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("push notification service: {e}");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Where the devices of a run get their channels: this process's service, or a standalone
/// `mdmsim wns` at a URL.
#[derive(Debug, Clone)]
pub enum PushEndpoint {
    Embedded(Wns),
    Remote { client: reqwest::Client, base_url: String },
}

#[derive(Deserialize)]
struct ChannelQuery {
    token: Option<String>,
}

async fn notify_post(
    State(wns): State<Wns>,
    Query(q): Query<ChannelQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = (wns.inner.opts.clock)();
    // 1. The access token.
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let token_expiry = bearer.as_ref().and_then(|b| wns.tables().tokens.get(b).copied());
    match token_expiry {
        None => {
            return wns.refused(
                StatusCode::UNAUTHORIZED,
                "the access token is missing or not one the service issued",
                &[("WWW-Authenticate", "Bearer error=\"invalid_request\"".into())],
            );
        }
        Some(exp) if exp <= now => {
            return wns.refused(
                StatusCode::UNAUTHORIZED,
                "Token has expired",
                &[(
                    "WWW-Authenticate",
                    "Bearer error=\"invalid_token\",error_description=\"Token has expired\"".into(),
                )],
            );
        }
        Some(_) => {}
    }
    // 2. The notification type.
    let kind = headers.get("X-WNS-Type").and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
    if !matches!(kind, "wns/raw" | "wns/toast" | "wns/tile" | "wns/badge") {
        return wns.refused(
            StatusCode::BAD_REQUEST,
            "X-WNS-Type must be wns/raw, wns/toast, wns/tile or wns/badge",
            &[],
        );
    }
    // 3. The channel.
    let Some(channel_token) = q.token.filter(|t| !t.is_empty()) else {
        return wns.refused(StatusCode::NOT_FOUND, "the channel URI is not valid", &[]);
    };
    let device = {
        let mut t = wns.tables();
        let Some(c) = t.channels.get_mut(&channel_token) else {
            drop(t);
            return wns.refused(StatusCode::NOT_FOUND, "the channel URI is not valid", &[]);
        };
        if c.state != ChannelState::Alive || c.expires <= now {
            c.state = if c.state == ChannelState::Revoked { ChannelState::Revoked } else { ChannelState::Expired };
            drop(t);
            return wns.refused(StatusCode::GONE, "the channel expired or was revoked", &[]);
        }
        // 4. The payload.
        if body.is_empty() || body.len() > MAX_PAYLOAD {
            drop(t);
            return if body.is_empty() {
                wns.refused(StatusCode::BAD_REQUEST, "the notification has no payload", &[])
            } else {
                wns.refused(StatusCode::PAYLOAD_TOO_LARGE, "the payload is over 5 KB", &[])
            };
        }
        // 5. The throttle.
        let per_minute = wns.inner.opts.per_minute;
        if per_minute > 0 {
            if now - c.window_start >= TimeDelta::minutes(1) || now < c.window_start {
                c.window_start = now;
                c.in_window = 0;
            }
            if c.in_window >= per_minute {
                let wait = (c.window_start + TimeDelta::minutes(1) - now).num_seconds().max(1);
                drop(t);
                return wns.refused(
                    StatusCode::NOT_ACCEPTABLE,
                    "the channel is throttled: too many notifications",
                    &[("Retry-After", wait.to_string())],
                );
            }
            c.in_window += 1;
        }
        c.device.clone()
    };
    let deliver = wns.inner.deliver.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Only a raw notification reaches the MDM client; the others are shown by the shell.
    let woken = kind != "wns/raw"
        || match deliver {
            Some(d) => d(&device),
            None => wns.inner.opts.device_api && wns.enqueue(&device),
        };
    let msg_id = random_hex(8).to_ascii_uppercase();
    {
        let mut t = wns.tables();
        if woken {
            t.stats.delivered += 1;
        } else {
            t.stats.dropped += 1;
        }
    }
    let (status, connection) = if woken { ("received", "connected") } else { ("dropped", "disconnected") };
    tracing::debug!(device, status, "WNS notification");
    (
        StatusCode::OK,
        [
            ("X-WNS-Status", status.to_string()),
            ("X-WNS-Msg-ID", msg_id),
            ("X-WNS-DeviceConnectionStatus", connection.to_string()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(device: &str) -> ChannelCall {
        ChannelCall {
            device: device.into(),
            op: ChannelOp::Request {
                csp: "DMClient".into(),
                node: "Provider/P/Push".into(),
                app: "A.B_8wekyb3d8bbwe".into(),
            },
        }
    }

    fn granted(r: &[ChannelReport]) -> String {
        match &r[0].outcome {
            ChannelOutcome::Granted { uri, .. } => uri.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_request_replaces_the_channel_and_revoke_reports_each_live_one() {
        let w = Wns::new(WnsOptions::default(), "http://127.0.0.1:1");
        let a = granted(&w.call(&request("D1")));
        assert!(a.starts_with("http://127.0.0.1:1/?token="), "{a}");
        let b = granted(&w.call(&request("D1")));
        assert_ne!(a, b);
        assert_eq!(w.channel_of("D1", "Provider/P/Push"), Some(b));
        let gone = w.call(&ChannelCall { device: "D1".into(), op: ChannelOp::Revoke });
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].outcome, ChannelOutcome::Revoked);
        assert_eq!(w.channel_of("D1", "Provider/P/Push"), None);
        assert!(w.call(&ChannelCall { device: "D1".into(), op: ChannelOp::Expire }).is_empty());
    }

    #[test]
    fn the_channel_table_is_bounded() {
        let opts = WnsOptions { max_channels: 2, ..WnsOptions::default() };
        let w = Wns::new(opts, "http://127.0.0.1:1");
        granted(&w.call(&request("D1")));
        granted(&w.call(&request("D2")));
        let full = w.call(&request("D3"));
        assert!(matches!(&full[0].outcome, ChannelOutcome::Refused(why) if why.contains("maximum of 2")), "{full:?}");
        // A renewal frees the old channel's place once it is pruned.
        w.call(&ChannelCall { device: "D1".into(), op: ChannelOp::Revoke });
        granted(&w.call(&request("D3")));
    }
}
