//! Management sessions of enrolled devices without an HTTP client per device.
//!
//! A fleet shares one [`SessionTls`]: the CAs it trusts, the timeouts, the User-Agent, and a
//! pooled client for package downloads. A device holds only its [`TlsIdentity`]: its
//! certificate chain as DER and its key (a key from a pool is shared, not copied). When the
//! device has something to send, its [`DeviceExchange`] opens one connection that presents the
//! device's certificate (mTLS), sends every message of the session on it (HTTP/1.1
//! keep-alive), and closes it once the device has nothing more to send
//! ([`Exchange::release`]), as a Windows device does from one session to the next.
//!
//! The rules of a SyncML POST (headers, throttling, body limits, the timeout of a whole
//! answer) are the transport's ([`super::http::post_message`]); only the connection differs.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, RETRY_AFTER, USER_AGENT};
use hyper_util::rt::TokioIo;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::io::{AsyncRead, AsyncWrite};

use super::exchange::{Exchange, Exchanging, FETCH_TIMEOUT, NO_WNS, post_request};
use super::fetch;
use super::http::{Answer, Carrier, HttpError, HttpOptions, Outgoing, Transport, syncml_headers};
use super::signing::SigningError;
use crate::device::engine::{Response, Transmit};
use crate::device::run::{Reply, Request};
use crate::tree::FetchOutcome;

/// A device's TLS client identity: its certificate chain (DER) and its private key.
pub struct TlsIdentity {
    /// The client certificate first, then any intermediates.
    chain: Box<[Box<[u8]>]>,
    key: PKey<Private>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").field("certificates", &self.chain.len()).finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// The identity of a PEM certificate chain (client certificate first) and `key`; refused
    /// when the chain is empty or the certificate is not for the key.
    pub fn from_pem(chain_pem: &str, key: PKey<Private>) -> Result<TlsIdentity, String> {
        let certs = X509::stack_from_pem(chain_pem.as_bytes()).map_err(|e| format!("certificate chain: {e}"))?;
        let leaf = certs.first().ok_or("the certificate chain holds no certificate")?;
        let public = leaf.public_key().map_err(|e| format!("client certificate: {e}"))?;
        if !public.public_eq(&key) {
            return Err("the client certificate is not for the device's key".into());
        }
        let chain = certs
            .iter()
            .map(|c| c.to_der().map(Vec::into_boxed_slice))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate chain: {e}"))?;
        Ok(TlsIdentity { chain: chain.into_boxed_slice(), key })
    }

    /// The identity of a DER certificate chain (client certificate first) and `key`, as
    /// [`TlsIdentity::chain_der`] gave it; refused as [`TlsIdentity::from_pem`] refuses.
    pub fn from_der(chain: Vec<Vec<u8>>, key: PKey<Private>) -> Result<TlsIdentity, String> {
        let leaf = chain.first().ok_or("the certificate chain holds no certificate")?;
        let leaf = X509::from_der(leaf).map_err(|e| format!("client certificate: {e}"))?;
        let public = leaf.public_key().map_err(|e| format!("client certificate: {e}"))?;
        if !public.public_eq(&key) {
            return Err("the client certificate is not for the device's key".into());
        }
        for (i, der) in chain.iter().enumerate().skip(1) {
            X509::from_der(der).map_err(|e| format!("certificate {} of the chain: {e}", i + 1))?;
        }
        Ok(TlsIdentity { chain: chain.into_iter().map(Vec::into_boxed_slice).collect(), key })
    }

    /// The certificate chain (DER), client certificate first.
    pub fn chain_der(&self) -> impl Iterator<Item = &[u8]> {
        self.chain.iter().map(|c| &c[..])
    }

    /// The client certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.chain[0]
    }

    /// The private key.
    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }

    fn certificates(&self) -> Result<Vec<X509>, openssl::error::ErrorStack> {
        self.chain.iter().map(|der| X509::from_der(der)).collect()
    }

    /// The CMS detached signature of `message` with this certificate and key (DMClient
    /// RequireMessageSigning), base64.
    pub fn sign(&self, message: &[u8]) -> Result<String, SigningError> {
        let leaf = X509::from_der(&self.chain[0]).map_err(SigningError::Certificate)?;
        super::signing::sign_with(message, &leaf, &self.key)
    }
}

/// What the enrolled devices of a fleet share for their sessions: the trust (system roots, the
/// CAs given, the roots their enrollments provisioned), the timeouts and throttling rules, and
/// a pooled client for package downloads.
pub struct SessionTls {
    connector: SslConnector,
    insecure: bool,
    opts: HttpOptions,
    downloads: Transport,
}

impl SessionTls {
    /// The shared configuration of `opts` (its `identity` and `signer` are not used: each
    /// device brings its own), trusting also the PEM certificates of `extra_roots`.
    pub fn new(mut opts: HttpOptions, extra_roots: &[&str]) -> Result<SessionTls, HttpError> {
        let config = |what: &str, e: openssl::error::ErrorStack| HttpError::Config(format!("TLS {what}: {e}"));
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| config("configuration", e))?;
        let mut trusted = opts.ca_cert_pem.clone().unwrap_or_default();
        for pem in extra_roots {
            if !trusted.is_empty() && !trusted.ends_with(b"\n") {
                trusted.push(b'\n');
            }
            trusted.extend_from_slice(pem.as_bytes());
        }
        if !trusted.iter().all(u8::is_ascii_whitespace) {
            let certs = X509::stack_from_pem(&trusted).map_err(|e| config("trusted certificates", e))?;
            for cert in certs {
                // The same root given twice (by --ca-cert and by the enrollment) is fine.
                let _ = b.cert_store_mut().add_cert(cert);
            }
        }
        if opts.insecure {
            b.set_verify(SslVerifyMode::NONE);
        }
        opts.identity = None;
        opts.signer = None;
        let downloads =
            Transport::new(HttpOptions { ca_cert_pem: (!trusted.is_empty()).then_some(trusted), ..opts.clone() })?;
        Ok(SessionTls { connector: b.build(), insecure: opts.insecure, opts, downloads })
    }
}

/// The exchange of one enrolled device: its identity, and the connection of the session under
/// way (none between sessions).
pub struct DeviceExchange {
    tls: Arc<SessionTls>,
    identity: Arc<TlsIdentity>,
    open: tokio::sync::Mutex<Option<Open>>,
}

/// The connection of a session.
struct Open {
    /// `scheme://host:port` it goes to.
    origin: String,
    sender: SendRequest<Full<Bytes>>,
}

impl DeviceExchange {
    pub fn new(tls: Arc<SessionTls>, identity: Arc<TlsIdentity>) -> DeviceExchange {
        DeviceExchange { tls, identity, open: tokio::sync::Mutex::new(None) }
    }

    /// A connection to `url` presenting the device's certificate.
    async fn connect(&self, url: &url::Url) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let text = url.as_str();
        let connect = |reason: String| HttpError::Connect { url: text.to_string(), reason };
        let tls = |reason: String| HttpError::Tls { url: text.to_string(), reason };
        let host = url.host_str().ok_or_else(|| HttpError::Config(format!("{text}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(443);
        let after = self.tls.opts.connect_timeout;
        let tcp = match tokio::time::timeout(after, tokio::net::TcpStream::connect((host, port))).await {
            Err(_) => return Err(connect(format!("no connection within {} s", after.as_secs_f32()))),
            Ok(Err(e)) => return Err(connect(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        match url.scheme() {
            "http" => http1(tcp).await.map_err(|e| connect(e.to_string())),
            "https" => {
                let mut cfg = self.tls.connector.configure().map_err(|e| tls(e.to_string()))?;
                let certs = self.identity.certificates().map_err(|e| tls(format!("client certificate: {e}")))?;
                let mut certs = certs.into_iter();
                if let Some(leaf) = certs.next() {
                    cfg.set_certificate(&leaf).map_err(|e| tls(format!("client certificate: {e}")))?;
                }
                for cert in certs {
                    cfg.add_chain_cert(cert).map_err(|e| tls(format!("certificate chain: {e}")))?;
                }
                cfg.set_private_key(&self.identity.key).map_err(|e| tls(format!("client key: {e}")))?;
                if self.tls.insecure {
                    cfg.set_verify_hostname(false);
                }
                let ssl = cfg.into_ssl(host).map_err(|e| tls(e.to_string()))?;
                let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| tls(e.to_string()))?;
                Pin::new(&mut stream).connect().await.map_err(|e| tls(handshake_error(&e)))?;
                http1(stream).await.map_err(|e| connect(e.to_string()))
            }
            other => Err(HttpError::Config(format!("{text}: the scheme {other:?} is neither https nor http"))),
        }
    }
}

/// Why a TLS handshake failed, with OpenSSL's reasons.
fn handshake_error(e: &openssl::ssl::Error) -> String {
    match e.ssl_error() {
        Some(stack) => format!("{e}: {stack}"),
        None => e.to_string(),
    }
}

/// An HTTP/1.1 connection over `io`, its driver running on the runtime until the sender is
/// dropped.
async fn http1<S>(io: S) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("session connection ended: {e}");
        }
    });
    Ok(sender)
}

impl Carrier for DeviceExchange {
    type Answer = ConnectionAnswer;

    async fn send(&self, msg: &Outgoing<'_>, left: Duration) -> Result<ConnectionAnswer, HttpError> {
        let deadline = Instant::now() + left;
        let timeout = self.tls.opts.timeout;
        let timed_out = || HttpError::Timeout { url: msg.url.to_string(), after: timeout };
        let url = url::Url::parse(msg.url).map_err(|e| HttpError::Config(format!("server URL {:?}: {e}", msg.url)))?;
        let origin = url.origin().ascii_serialization();
        let mut open = self.open.lock().await;
        // The session's connection when it is still up; a new one otherwise (the first
        // message, another server, or the server closed it).
        let usable = match open.as_mut() {
            Some(o) if o.origin == origin => {
                matches!(tokio::time::timeout_at(deadline.into(), o.sender.ready()).await, Ok(Ok(())))
            }
            _ => false,
        };
        if !usable {
            *open = None;
            let sender =
                tokio::time::timeout_at(deadline.into(), self.connect(&url)).await.map_err(|_| timed_out())??;
            *open = Some(Open { origin, sender });
        }
        let Some(o) = open.as_mut() else { return Err(timed_out()) };
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut req =
            hyper::Request::post(target).header(HOST, host).header(USER_AGENT, self.tls.opts.user_agent.as_str());
        for (name, value) in syncml_headers(msg) {
            req = req.header(name, value);
        }
        if let Some((name, value)) = msg.signature {
            req = req.header(name, value);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(msg.body.as_bytes())))
            .map_err(|e| HttpError::Config(format!("request to {}: {e}", msg.url)))?;
        let sent = tokio::time::timeout_at(deadline.into(), o.sender.send_request(req)).await;
        let resp = match sent {
            Err(_) => {
                *open = None;
                return Err(timed_out());
            }
            Ok(Err(e)) => {
                *open = None;
                return Err(HttpError::Connect { url: msg.url.to_string(), reason: e.to_string() });
            }
            Ok(Ok(resp)) => resp,
        };
        let retry_after = resp.headers().get(RETRY_AFTER).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let content_length = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(ConnectionAnswer {
            status: resp.status().as_u16(),
            retry_after,
            content_length,
            body: resp.into_body(),
            deadline,
            url: msg.url.to_string(),
            timeout,
        })
    }
}

/// An answer on a session's connection.
pub(crate) struct ConnectionAnswer {
    status: u16,
    retry_after: Option<String>,
    content_length: Option<u64>,
    body: Incoming,
    deadline: Instant,
    url: String,
    timeout: Duration,
}

impl Answer for ConnectionAnswer {
    fn status(&self) -> u16 {
        self.status
    }

    fn retry_after(&self) -> Option<String> {
        self.retry_after.clone()
    }

    fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            let frame = tokio::time::timeout_at(self.deadline.into(), self.body.frame()).await;
            match frame {
                Err(_) => return Err(HttpError::Timeout { url: self.url.clone(), after: self.timeout }),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(HttpError::Body { url: self.url.clone(), reason: e.to_string() }),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

impl Exchange for DeviceExchange {
    fn exchange<'a>(&'a self, transmit: &'a Transmit) -> Exchanging<'a> {
        Box::pin(async move {
            match transmit {
                Transmit::Session(req) => Response::Session(self.post(req).await),
                Transmit::Fetch { url } => {
                    Response::Fetch(fetch::fetch(self.tls.downloads.client(), url, FETCH_TIMEOUT).await)
                }
                Transmit::Channel(_) => Response::Fetch(FetchOutcome::Failed(NO_WNS.into())),
            }
        })
    }

    fn release(&self) {
        if let Ok(mut open) = self.open.try_lock() {
            *open = None;
        }
    }
}

impl DeviceExchange {
    /// One session message, signed with the device's key when the request asks.
    async fn post(&self, req: &Request) -> Reply {
        post_request(self, &self.tls.opts, req, Some(|body: &[u8]| self.identity.sign(body))).await
    }
}
