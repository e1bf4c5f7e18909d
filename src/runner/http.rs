//! The SyncML transport: one HTTP POST per client message, with reqwest over native-tls
//! (OpenSSL) (MS-MDM, the HTTP exchange of a management session).
//!
//! Owns the request shape a Windows client sends (`application/vnd.syncml.dm+xml`, the
//! `mode=`/`Platform=WoA` query, User-Agent, Accept, Accept-Charset, Client-Request-Id, the
//! message signature header when the caller gives one ([`Transport::post_signed`])), TLS
//! settings (verification on by default, an extra trusted CA, an optional client identity for
//! mTLS), timeouts and the `Retry-After` of HTTP 429 and 503 answers, and the bounds a server cannot push it past: an
//! answer body is read as it streams in and refused once it passes the caller's byte limit
//! (`max_message_bytes`; a longer `Content-Length` is refused before any of it is read), and
//! one answer, every 429/503 wait included, takes at most the timeout (a `Retry-After` that does
//! not fit gives up at once). Errors say whose fault they are: the server could not be reached
//! ([`Fault::Unreachable`]) or it answered against the protocol ([`Fault::Protocol`]). Does not
//! know SyncML beyond the content type.

use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, ACCEPT_CHARSET, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Identity, StatusCode, Url};

use crate::device::run::Throttle;
use crate::session::{Fault, Limits, Mode};
use crate::syncml;
use crate::tree::Profile;

/// What Windows 10 sends as User-Agent.
pub const DEFAULT_USER_AGENT: &str = "MSFT OMA DM Client/1.2.0.1";
/// The Accept header of the Windows client.
const ACCEPT_VALUE: &str = "application/vnd.syncml.dm+xml, application/vnd.syncml.dm+wbxml, application/octet-stream";

/// Transport settings.
#[derive(Clone)]
pub struct HttpOptions {
    /// How long one answer may take in all: connect, send, answer, body, and the waits that
    /// HTTP 429 `Retry-After` asks for before the answer comes.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// PEM certificates (one or a bundle) to trust besides the system roots.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Accept any server certificate (only when the user asks for it).
    pub insecure: bool,
    /// A client certificate and key for mTLS (the enrollment certificate).
    pub identity: Option<Identity>,
    /// How many times an HTTP 429 or 503 is retried before giving up.
    pub max_429_retries: u32,
    /// The longest `Retry-After` waited for; a longer one (or one past what is left of
    /// `timeout`) gives up at once.
    pub max_retry_after: Duration,
    pub user_agent: String,
    /// The enrollment certificate and key that sign each message when DMClient
    /// RequireMessageSigning is true ([`super::signing`]); `None` for a device that never
    /// enrolled.
    pub signer: Option<super::signing::Signer>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ca_cert_pem: None,
            insecure: false,
            identity: None,
            max_429_retries: 3,
            max_retry_after: Duration::from_secs(60),
            user_agent: DEFAULT_USER_AGENT.to_string(),
            signer: None,
        }
    }
}

/// A transport failure, named with the URL it happened on.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The settings cannot be used (bad CA file, bad URL).
    #[error("{0}")]
    Config(String),
    /// Nobody answered at the address (refused, DNS, reset before an answer).
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The TLS handshake failed (untrusted certificate, protocol mismatch).
    #[error("TLS with {url} failed: {reason}")]
    Tls { url: String, reason: String },
    /// No complete answer in time.
    #[error("no answer from {url} within {} s", after.as_secs_f32())]
    Timeout { url: String, after: Duration },
    /// The server kept answering 429 or 503.
    #[error("{url} answered HTTP {} {tries} times; giving up", throttle_name(*status))]
    Throttled { url: String, status: u16, tries: u32 },
    /// The server answered 429 or 503 with a `Retry-After` longer than the device waits for an
    /// answer.
    #[error(
        "{url} answered HTTP {} with Retry-After {} s, more than the {} s the device still waits for this answer (--timeout {} s); giving up",
        throttle_name(*status), retry_after.as_secs_f32(), left.as_secs_f32(), timeout.as_secs_f32()
    )]
    RetryTooLate { url: String, status: u16, retry_after: Duration, left: Duration, timeout: Duration },
    /// The answer's body is larger than the device reads (`max_message_bytes`).
    #[error("the answer of {url} is larger than max_message_bytes = {limit} bytes ({seen}); refused")]
    TooLarge { url: String, limit: u64, seen: String },
    /// The server answered with an HTTP error status.
    #[error("{url} answered HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { url: String, status: u16, body: String },
    /// The answer's body could not be read (connection closed mid-body, not UTF-8).
    #[error("reading the answer of {url} failed: {reason}")]
    Body { url: String, reason: String },
}

impl HttpError {
    /// The kind of failure, for counting (the error classes of fleet reports and metrics).
    pub fn class(&self) -> &'static str {
        match self {
            HttpError::Config(_) => "config",
            HttpError::Connect { .. } => "connect",
            HttpError::Tls { .. } => "tls",
            HttpError::Timeout { .. } => "timeout",
            HttpError::Throttled { .. } | HttpError::RetryTooLate { .. } => "throttled",
            HttpError::TooLarge { .. } => "too-large",
            HttpError::Status { status, .. } if *status >= 500 => "http-5xx",
            HttpError::Status { .. } => "http-4xx",
            HttpError::Body { .. } => "body",
        }
    }

    /// True when no connection could be made at all (refused, DNS, TLS handshake): the server
    /// never saw the request, so another address of the DMClient list may be tried
    /// ([`crate::csp::dmclient::AddressList::attempts`]). A timeout is not one: the server may
    /// have received and acted on the message.
    pub fn is_no_connection(&self) -> bool {
        matches!(self, HttpError::Connect { .. } | HttpError::Tls { .. })
    }

    /// Whose fault the failure is.
    pub fn fault(&self) -> Fault {
        match self {
            HttpError::Connect { .. }
            | HttpError::Tls { .. }
            | HttpError::Timeout { .. }
            | HttpError::Throttled { .. }
            | HttpError::RetryTooLate { .. } => Fault::Unreachable,
            HttpError::Config(_) | HttpError::Status { .. } | HttpError::Body { .. } | HttpError::TooLarge { .. } => {
                Fault::Protocol
            }
        }
    }
}

/// A connection pool with the device's TLS settings, shared by the sessions that use it.
pub struct Transport {
    client: Client,
    opts: HttpOptions,
}

impl Transport {
    /// The underlying HTTP client (shared with package downloads, so they present the same
    /// client certificate and trust the same CAs as the management sessions).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The settings it was built with.
    pub(crate) fn options(&self) -> &HttpOptions {
        &self.opts
    }

    /// The certificate and key that sign messages, if the device has them.
    pub fn signer(&self) -> Option<&super::signing::Signer> {
        self.opts.signer.as_ref()
    }

    /// Builds the client.
    pub fn new(mut opts: HttpOptions) -> Result<Transport, HttpError> {
        let mut b = Client::builder()
            .tls_backend_native()
            .timeout(opts.timeout)
            .connect_timeout(opts.connect_timeout)
            .user_agent(opts.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &opts.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| HttpError::Config(format!("CA certificate: {}", chain(&e))))?;
            if certs.is_empty() {
                return Err(HttpError::Config("CA certificate: no PEM certificate found".into()));
            }
            b = b.tls_certs_merge(certs);
        }
        if opts.insecure {
            b = b.tls_danger_accept_invalid_certs(true).tls_danger_accept_invalid_hostnames(true);
        }
        if let Some(id) = opts.identity.take() {
            b = b.identity(id);
        }
        let client = b.build().map_err(|e| HttpError::Config(format!("HTTP client: {}", chain(&e))))?;
        Ok(Transport { client, opts })
    }

    /// The session URL: the server address with `mode=<Mode>&Platform=WoA` appended
    /// (MS-MDM). `mode=Apps` exists only on the win81 profile; on win10 it is sent as
    /// Maintenance.
    pub fn session_url(server: &str, mode: Mode, profile: Profile) -> Result<Url, HttpError> {
        let url = crate::device::run::session_url(server, mode, profile).map_err(HttpError::Config)?;
        Url::parse(&url).map_err(|e| HttpError::Config(format!("server URL {server:?}: {e}")))
    }

    /// POSTs one SyncML message. `Ok(None)` is an answer with an empty body (the end of the
    /// session, as MDM servers end it). A 429 or 503 is retried after its `Retry-After` while that fits
    /// in the timeout. The body may have up to the default `max_message_bytes`
    /// ([`Limits::DEFAULT`]).
    pub async fn post(&self, url: &str, body: &str, client_request_id: &str) -> Result<Option<String>, HttpError> {
        self.post_signed(url, body, client_request_id, None, Limits::DEFAULT.max_message_bytes).await
    }

    /// [`Transport::post`] with an extra `(name, value)` header (the CMS signature of `body`
    /// when DMClient RequireMessageSigning is true, Microsoft's DMClient CSP page) and a bound
    /// on the answer's body: more than `max_body` bytes is [`HttpError::TooLarge`], found out
    /// from `Content-Length` or while the body streams in, never after buffering it.
    ///
    /// The whole call, every 429/503 wait included, ends within the transport's timeout: a
    /// `Retry-After` longer than what is left of it (or than `max_retry_after`) gives up at once
    /// ([`HttpError::RetryTooLate`]) instead of waiting for nothing.
    pub async fn post_signed(
        &self,
        url: &str,
        body: &str,
        client_request_id: &str,
        signature: Option<(&str, &str)>,
        max_body: u64,
    ) -> Result<Option<String>, HttpError> {
        self.post_observed(url, body, client_request_id, signature, max_body, &mut Vec::new()).await
    }

    /// [`Transport::post_signed`], noting in `throttled` each HTTP 429 or 503 answer (RFC 9110
    /// `Retry-After`) after which the same message was sent again, or that ended the call.
    pub async fn post_observed(
        &self,
        url: &str,
        body: &str,
        client_request_id: &str,
        signature: Option<(&str, &str)>,
        max_body: u64,
        throttled: &mut Vec<Throttle>,
    ) -> Result<Option<String>, HttpError> {
        let msg = Outgoing { url, body, client_request_id, signature };
        post_message(self, &self.opts, &msg, max_body, throttled).await
    }

    fn send_error(&self, url: &str, e: &reqwest::Error) -> HttpError {
        let url = url.to_string();
        let reason = chain(e);
        if e.is_timeout() {
            return HttpError::Timeout { url, after: self.opts.timeout };
        }
        let lower = reason.to_ascii_lowercase();
        if lower.contains("certificate")
            || lower.contains("ssl")
            || lower.contains("tls")
            || lower.contains("handshake")
        {
            return HttpError::Tls { url, reason };
        }
        if e.is_connect() || e.is_request() {
            return HttpError::Connect { url, reason };
        }
        HttpError::Body { url, reason }
    }
}

/// One SyncML message to POST.
pub(crate) struct Outgoing<'a> {
    pub url: &'a str,
    pub body: &'a str,
    pub client_request_id: &'a str,
    /// An extra `(name, value)` header: the message's signature.
    pub signature: Option<(&'a str, &'a str)>,
}

/// Carries one POST to the server and brings back the head of its answer: a pooled client
/// ([`Transport`]) or a connection of the device's own (`super::mtls`).
pub(crate) trait Carrier: Sync {
    type Answer: Answer;
    /// Sends `msg`, taking at most `left` until the answer's head is in.
    fn send(&self, msg: &Outgoing<'_>, left: Duration) -> impl Future<Output = Result<Self::Answer, HttpError>> + Send;
}

/// An answer whose head is in and whose body streams.
pub(crate) trait Answer: Send {
    fn status(&self) -> u16;
    /// The `Retry-After` header's text.
    fn retry_after(&self) -> Option<String>;
    fn content_length(&self) -> Option<u64>;
    /// The next piece of the body; `None` at its end.
    fn chunk(&mut self) -> impl Future<Output = Result<Option<hyper::body::Bytes>, HttpError>> + Send;
}

/// The header lines of a SyncML POST as a Windows client sends them.
pub(crate) fn syncml_headers(msg: &Outgoing<'_>) -> [(reqwest::header::HeaderName, HeaderValue); 4] {
    [
        (CONTENT_TYPE, HeaderValue::from_static(syncml::CONTENT_TYPE)),
        (ACCEPT, HeaderValue::from_static(ACCEPT_VALUE)),
        (ACCEPT_CHARSET, HeaderValue::from_static("UTF-8")),
        (reqwest::header::HeaderName::from_static("client-request-id"), header(msg.client_request_id)),
    ]
}

impl Carrier for Transport {
    type Answer = PooledAnswer;

    async fn send(&self, msg: &Outgoing<'_>, left: Duration) -> Result<PooledAnswer, HttpError> {
        let mut req = self.client.post(msg.url).timeout(left);
        for (name, value) in syncml_headers(msg) {
            req = req.header(name, value);
        }
        if let Some((name, value)) = msg.signature {
            req = req.header(name, header(value));
        }
        let resp = req.body(msg.body.to_string()).send().await.map_err(|e| self.send_error(msg.url, &e))?;
        Ok(PooledAnswer { resp, url: msg.url.to_string(), timeout: self.opts.timeout })
    }
}

/// An answer read through the pooled client.
pub(crate) struct PooledAnswer {
    resp: reqwest::Response,
    url: String,
    timeout: Duration,
}

impl Answer for PooledAnswer {
    fn status(&self) -> u16 {
        self.resp.status().as_u16()
    }

    fn retry_after(&self) -> Option<String> {
        self.resp.headers().get(RETRY_AFTER).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    fn content_length(&self) -> Option<u64> {
        self.resp.content_length()
    }

    async fn chunk(&mut self) -> Result<Option<hyper::body::Bytes>, HttpError> {
        self.resp.chunk().await.map_err(|e| {
            if e.is_timeout() {
                HttpError::Timeout { url: self.url.clone(), after: self.timeout }
            } else {
                HttpError::Body { url: self.url.clone(), reason: chain(&e) }
            }
        })
    }
}

/// POSTs one SyncML message through `carrier` with the timeout and throttling rules of `opts`:
/// a 429 or 503 is sent again after its `Retry-After` while that fits in the timeout (each
/// noted in `throttled`), an error status is quoted, and the body is read up to `max_body`
/// bytes. The whole call, every wait included, ends within `opts.timeout`.
pub(crate) async fn post_message<C: Carrier>(
    carrier: &C,
    opts: &HttpOptions,
    msg: &Outgoing<'_>,
    max_body: u64,
    throttled: &mut Vec<Throttle>,
) -> Result<Option<String>, HttpError> {
    let url = msg.url;
    let deadline = Instant::now() + opts.timeout;
    let mut tries = 0;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout { url: url.to_string(), after: opts.timeout });
        }
        tracing::debug!(url, bytes = msg.body.len(), "POST");
        let resp = carrier.send(msg, left).await?;
        let status = resp.status();
        tracing::debug!(url, status, "answer");
        if status == StatusCode::TOO_MANY_REQUESTS.as_u16() || status == StatusCode::SERVICE_UNAVAILABLE.as_u16() {
            let header = resp.retry_after();
            let mut note = Throttle {
                status,
                retry_after: header.as_ref().map(|v| v.chars().take(64).collect()),
                waited: Duration::ZERO,
            };
            if tries > opts.max_429_retries {
                throttled.push(note);
                return Err(HttpError::Throttled { url: url.to_string(), status, tries });
            }
            let asked = retry_after_text(header.as_deref());
            let left = deadline.saturating_duration_since(Instant::now());
            if asked > left.min(opts.max_retry_after) {
                throttled.push(note);
                return Err(HttpError::RetryTooLate {
                    url: url.to_string(),
                    status,
                    retry_after: asked,
                    left: left.min(opts.max_retry_after),
                    timeout: opts.timeout,
                });
            }
            tracing::info!(url, status, wait_s = asked.as_secs_f32(), "throttled: waiting as Retry-After asks");
            tokio::time::sleep(asked).await;
            note.waited = asked;
            throttled.push(note);
            continue;
        }
        if !(200..300).contains(&status) {
            let head = read_body(url, resp, SNIPPET_BYTES, true).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&head);
            let snippet: String = text.trim().chars().take(200).collect();
            return Err(HttpError::Status { url: url.to_string(), status, body: snippet });
        }
        let bytes = read_body(url, resp, max_body, false).await?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        return Ok(if text.trim().is_empty() { None } else { Some(text) });
    }
}

/// Reads an answer's body as it streams in, at most `max` bytes: more is
/// [`HttpError::TooLarge`] (a `Content-Length` over `max` is refused before reading), or with
/// `truncate` the first `max` bytes (for the start of an error page).
async fn read_body<A: Answer>(url: &str, mut resp: A, max: u64, truncate: bool) -> Result<Vec<u8>, HttpError> {
    let too_large = |seen: String| HttpError::TooLarge { url: url.to_string(), limit: max, seen };
    let announced = resp.content_length();
    if let Some(n) = announced.filter(|n| *n > max && !truncate) {
        return Err(too_large(format!("it announced Content-Length {n}")));
    }
    let mut buf = Vec::with_capacity(announced.unwrap_or(0).min(max).min(1 << 20) as usize);
    while let Some(chunk) = resp.chunk().await? {
        let room = usize::try_from(max).unwrap_or(usize::MAX).saturating_sub(buf.len());
        if chunk.len() > room {
            if truncate {
                buf.extend_from_slice(&chunk[..room]);
                break;
            }
            return Err(too_large(format!("more than {max} bytes arrived; the rest was not read")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// How much of an HTTP error page is read to quote its start.
const SNIPPET_BYTES: u64 = 4096;

/// A header value from text a server or the tree gave; invalid characters become `0`.
fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("0"))
}

/// The status of a throttling answer in words.
fn throttle_name(status: u16) -> String {
    match status {
        429 => "429 (too many requests)".into(),
        503 => "503 (service unavailable)".into(),
        other => other.to_string(),
    }
}

/// `Retry-After` text as seconds or an HTTP date; 1 s when absent or unreadable.
pub fn retry_after_text(value: Option<&str>) -> Duration {
    let Some(text) = value.map(str::trim) else { return Duration::from_secs(1) };
    if let Ok(secs) = text.parse::<u64>() {
        return Duration::from_secs(secs);
    }
    match chrono::DateTime::parse_from_rfc2822(text) {
        // The runner may read the wall clock; the core never does.
        Ok(at) => (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO),
        Err(_) => Duration::from_secs(1),
    }
}

/// An error and its sources, joined: reqwest's top message alone rarely says what happened,
/// and its wrappers ("error sending request for url (...)", "client error (Connect)") repeat
/// what the caller's message already says.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = Some(e);
    while let Some(c) = src {
        let t = c.to_string();
        let wrapper = t.starts_with("error sending request") || t.starts_with("client error (");
        if !wrapper && !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = c.source();
    }
    if parts.is_empty() { e.to_string() } else { parts.join(": ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_url_carries_mode_and_platform() {
        let u = Transport::session_url("https://mdm.example/MDM.svc", Mode::Machine, Profile::Win10).unwrap();
        assert_eq!(u.as_str(), "https://mdm.example/MDM.svc?mode=Machine&Platform=WoA");
        let u = Transport::session_url("http://127.0.0.1:8080/x?tenant=a", Mode::Apps, Profile::Win81).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/x?tenant=a&mode=Apps&Platform=WoA");
        let u = Transport::session_url("http://h/x", Mode::Apps, Profile::Win10).unwrap();
        assert!(u.as_str().ends_with("mode=Maintenance&Platform=WoA"));
        assert!(Transport::session_url("ftp://h/x", Mode::Machine, Profile::Win10).is_err());
        assert!(Transport::session_url("not a url", Mode::Machine, Profile::Win10).is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_defaults() {
        assert_eq!(retry_after_text(Some("7")), Duration::from_secs(7));
        assert_eq!(retry_after_text(None), Duration::from_secs(1));
        assert_eq!(retry_after_text(Some("soon")), Duration::from_secs(1));
        assert_eq!(retry_after_text(Some("Sun, 06 Nov 1994 08:49:37 GMT")), Duration::ZERO);
    }

    /// A server on 127.0.0.1 that reads each request and answers `head` followed by `body_bytes`
    /// bytes of `x` (written in 64 KiB pieces, chunked when `head` says so), for every request.
    async fn answering(head: &'static str, body_bytes: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 16384];
                    // The test requests are small: one read holds head and body.
                    let _ = sock.read(&mut buf).await;
                    sock.write_all(head.as_bytes()).await?;
                    let piece = vec![b'x'; 64 << 10];
                    let chunked = head.contains("chunked");
                    let mut left = body_bytes;
                    while left > 0 {
                        let n = left.min(piece.len());
                        if chunked {
                            sock.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                        }
                        sock.write_all(&piece[..n]).await?;
                        if chunked {
                            sock.write_all(b"\r\n").await?;
                        }
                        left -= n;
                    }
                    if chunked {
                        sock.write_all(b"0\r\n\r\n").await?;
                    }
                    sock.flush().await
                });
            }
        });
        format!("http://{addr}/MDM.svc")
    }

    fn transport(timeout: Duration) -> Transport {
        Transport::new(HttpOptions { timeout, ..HttpOptions::default() }).expect("transport")
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_from_its_content_length_or_as_it_streams() {
        let t = transport(Duration::from_secs(10));
        let url = answering("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", 5000).await;
        let e = t.post_signed(&url, "<SyncML/>", "0", None, 4000).await.unwrap_err();
        assert_eq!(e.fault(), Fault::Protocol);
        assert_eq!(
            e.to_string(),
            format!(
                "the answer of {url} is larger than max_message_bytes = 4000 bytes (it announced Content-Length 5000); refused"
            )
        );
        assert_eq!(t.post_signed(&url, "<SyncML/>", "0", None, 5000).await.unwrap().map(|b| b.len()), Some(5000));
        // No length announced: reading stops at the limit, however much more the server has.
        let url = answering("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 64 << 20).await;
        let e = t.post_signed(&url, "<SyncML/>", "0", None, 100_000).await.unwrap_err();
        assert!(matches!(e, HttpError::TooLarge { limit: 100_000, .. }), "{e}");
        assert!(e.to_string().contains("more than 100000 bytes arrived; the rest was not read"), "{e}");
    }

    #[tokio::test]
    async fn an_error_page_is_quoted_from_its_start_only() {
        let t = transport(Duration::from_secs(10));
        let url = answering("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3000000\r\n\r\n", 3_000_000).await;
        let e = t.post_signed(&url, "<SyncML/>", "0", None, 100).await.unwrap_err();
        assert!(matches!(e, HttpError::Status { status: 502, ref body, .. } if body.len() == 200), "{e}");
    }

    #[tokio::test]
    async fn a_503_is_sent_again_after_its_retry_after_a_bounded_number_of_times() {
        let t = transport(Duration::from_secs(10));
        let url = answering("HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n", 0).await;
        let mut seen = Vec::new();
        let e = t.post_observed(&url, "<SyncML/>", "0", None, 100, &mut seen).await.unwrap_err();
        assert_eq!(e.to_string(), format!("{url} answered HTTP 503 (service unavailable) 4 times; giving up"));
        assert_eq!(e.fault(), Fault::Unreachable);
        // Three retries, each noted with the header as sent, and the answer that ended it.
        assert_eq!(seen.len(), 4);
        assert!(seen.iter().all(|s| s.status == 503 && s.retry_after.as_deref() == Some("0")), "{seen:?}");
        // Without the header the device waits its own second.
        let url = answering("HTTP/1.1 429 Busy\r\nContent-Length: 0\r\n\r\n", 0).await;
        let mut seen = Vec::new();
        let t = Transport::new(HttpOptions { max_429_retries: 1, ..HttpOptions::default() }).expect("transport");
        let started = Instant::now();
        t.post_observed(&url, "<SyncML/>", "0", None, 100, &mut seen).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!((seen[0].retry_after.as_deref(), seen[0].waited), (None, Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn a_retry_after_longer_than_the_timeout_gives_up_at_once() {
        let t = transport(Duration::from_secs(3));
        let url = answering("HTTP/1.1 429 Too Many\r\nRetry-After: 999999\r\nContent-Length: 0\r\n\r\n", 0).await;
        let started = Instant::now();
        let e = t.post(&url, "<SyncML/>", "0").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "gave up before the timeout: {:?}", started.elapsed());
        assert_eq!(e.fault(), Fault::Unreachable);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "{url} answered HTTP 429 (too many requests) with Retry-After 999999 s, more than the "
            )),
            "{text}"
        );
        assert!(text.ends_with(" s the device still waits for this answer (--timeout 3 s); giving up"), "{text}");
    }
}
