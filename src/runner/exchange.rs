//! How the requests of a device engine travel: one [`Exchange`] trait, three ways.
//!
//! - [`HttpExchange`]: reqwest over TLS, one connection pool per trust configuration (a
//!   [`Transport`]), the message signature made here with the enrollment key the transport
//!   holds.
//! - [`InProcess`]: the reference server's request handler called directly, no sockets (tests
//!   and benchmarks); see [`crate::server::InProcessServer`].
//! - [`Simulated`]: another exchange behind a seeded model of a bad network (latency, lost
//!   requests, connection resets, 5xx answers, truncated bodies), in the run's time, so that
//!   fault tests are deterministic (the seed is printed with every fault).
//!
//! The exchange moves bytes only: what to send, when, and what an answer means are the
//! engine's ([`crate::device::engine`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use super::fetch;
use super::http::{Carrier, HttpError, HttpOptions, Outgoing, Transport, post_message, retry_after_text};
use super::signing::SigningError;
use crate::device::engine::{Response, Transmit};
use crate::device::run::{ExchangeError, Reply, Request};
use crate::session::Fault;
use crate::tree::FetchOutcome;

/// How many times the in-process exchange sends a throttled message again (the HTTP
/// transport's default, [`super::http::HttpOptions::max_429_retries`]).
const MAX_THROTTLE_RETRIES: u32 = 3;

/// Why a channel request got no channel when the run hosts no push notification service.
pub const NO_WNS: &str = "no push notification service in this run";

/// How long a package download may take before it counts as timed out.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// A future of an exchange.
pub type Exchanging<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// Moves one request of a device and brings back its answer.
pub trait Exchange: Send + Sync {
    /// Sends `transmit` and waits for its answer (never longer than the exchange's timeout).
    fn exchange<'a>(&'a self, transmit: &'a Transmit) -> Exchanging<'a>;

    /// The device has nothing more to send for now (its session ended): close what is held
    /// open for it, such as the connection of its session.
    fn release(&self) {}
}

/// Over HTTP with a [`Transport`].
#[derive(Clone)]
pub struct HttpExchange {
    pub transport: Arc<Transport>,
}

impl HttpExchange {
    pub fn new(transport: Arc<Transport>) -> HttpExchange {
        HttpExchange { transport }
    }
}

impl Exchange for HttpExchange {
    fn exchange<'a>(&'a self, transmit: &'a Transmit) -> Exchanging<'a> {
        Box::pin(async move {
            match transmit {
                Transmit::Session(req) => Response::Session(post(&self.transport, req).await),
                Transmit::Fetch { url } => {
                    Response::Fetch(fetch::fetch(self.transport.client(), url, FETCH_TIMEOUT).await)
                }
                Transmit::Channel(_) => Response::Fetch(FetchOutcome::Failed(NO_WNS.into())),
            }
        })
    }
}

/// POSTs one session message with `transport`, signing it when the request asks and the
/// transport holds a key.
pub async fn post(transport: &Transport, req: &Request) -> Reply {
    let sign = transport.signer().map(|s| move |body: &[u8]| s.sign(body));
    post_request(transport, transport.options(), req, sign).await
}

/// POSTs one session message through `carrier` with the rules of `opts`, signed with `sign`
/// (the device's enrollment certificate and key) when the request asks for a signature.
pub(crate) async fn post_request<C: Carrier>(
    carrier: &C,
    opts: &HttpOptions,
    req: &Request,
    sign: Option<impl Fn(&[u8]) -> Result<String, SigningError>>,
) -> Reply {
    let started = Instant::now();
    let mut unsigned = None;
    let signature = match (&req.sign_with, sign) {
        (Some(header), Some(sign)) => match sign(req.body.as_bytes()) {
            Ok(sig) => Some((header.as_str(), sig)),
            Err(e) => {
                unsigned = Some(e.to_string());
                None
            }
        },
        (Some(_), None) => {
            unsigned = Some("the device holds no enrollment certificate and key to sign with".into());
            None
        }
        (None, _) => None,
    };
    let msg = Outgoing {
        url: &req.url,
        body: &req.body,
        client_request_id: &req.client_request_id,
        signature: signature.as_ref().map(|(h, v)| (*h, v.as_str())),
    };
    let mut throttled = Vec::new();
    let answer = post_message(carrier, opts, &msg, req.max_body, &mut throttled).await;
    Reply { result: answer.map_err(|e| exchange_error(&e)), elapsed: started.elapsed(), unsigned, throttled }
}

/// The engine's form of a transport failure.
pub fn exchange_error(e: &HttpError) -> ExchangeError {
    ExchangeError { fault: e.fault(), class: e.class(), no_connection: e.is_no_connection(), message: e.to_string() }
}

/// The reference server in the same process: its handlers called without sockets.
pub struct InProcess {
    server: Arc<crate::server::InProcessServer>,
    /// The CN a TLS client certificate of the device would show (mTLS identity), if any.
    cert_cn: Option<String>,
}

impl InProcess {
    /// Devices talking to `server` without a client certificate.
    pub fn new(server: Arc<crate::server::InProcessServer>) -> InProcess {
        InProcess { server, cert_cn: None }
    }

    /// The same server, the requests presenting a client certificate with this CN.
    pub fn with_cert_cn(&self, cn: impl Into<String>) -> InProcess {
        InProcess { server: Arc::clone(&self.server), cert_cn: Some(cn.into()) }
    }
}

impl Exchange for InProcess {
    fn exchange<'a>(&'a self, transmit: &'a Transmit) -> Exchanging<'a> {
        Box::pin(async move {
            let started = Instant::now();
            match transmit {
                Transmit::Session(req) => {
                    // A throttling answer (429/503) is sent again as the HTTP transport does,
                    // as many times; the in-process exchange takes no time of its own, so the
                    // wait its Retry-After asks for is noted and not slept.
                    let mut throttled = Vec::new();
                    let result = loop {
                        let reply = self.server.post(&req.url, &req.body, self.cert_cn.as_deref(), req.max_body).await;
                        if !matches!(reply.status, 429 | 503) {
                            break in_process_answer(&req.url, req.max_body, reply.status, reply.body);
                        }
                        let tries = throttled.len() as u32 + 1;
                        let retry = tries <= MAX_THROTTLE_RETRIES;
                        throttled.push(crate::device::run::Throttle {
                            status: reply.status,
                            waited: if retry { retry_after_text(reply.retry_after.as_deref()) } else { Duration::ZERO },
                            retry_after: reply.retry_after,
                        });
                        if !retry {
                            let e = HttpError::Throttled { url: req.url.clone(), status: reply.status, tries };
                            break Err(exchange_error(&e));
                        }
                    };
                    Response::Session(Reply { result, elapsed: started.elapsed(), unsigned: None, throttled })
                }
                Transmit::Fetch { url } => Response::Fetch(match self.server.fetch(url) {
                    Some((size, sha256)) => FetchOutcome::Done { size, sha256 },
                    None => FetchOutcome::HttpStatus(404),
                }),
                Transmit::Channel(_) => Response::Fetch(FetchOutcome::Failed(NO_WNS.into())),
            }
        })
    }
}

/// What the HTTP transport would make of an in-process answer: an error status with the start
/// of its body, a body over the device's limit refused, an empty body the end of the session.
fn in_process_answer(
    url: &str,
    max_body: u64,
    status: u16,
    body: Option<axum::body::Bytes>,
) -> Result<Option<String>, ExchangeError> {
    let Some(body) = body else {
        let e = HttpError::TooLarge { url: url.to_string(), limit: max_body, seen: "a longer body".into() };
        return Err(exchange_error(&e));
    };
    let text = String::from_utf8_lossy(&body);
    if !(200..300).contains(&status) {
        let snippet: String = text.trim().chars().take(200).collect();
        return Err(exchange_error(&HttpError::Status { url: url.to_string(), status, body: snippet }));
    }
    Ok((!text.trim().is_empty()).then(|| text.into_owned()))
}

/// What a simulated network does to requests, each as a chance from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkModel {
    /// One-way latency added to every exchange, from `latency_min` to `latency_max`.
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// The request never arrives (the device sees a connection failure; the server nothing).
    pub loss: f64,
    /// The connection is reset after the server acted on the request (the device gets no answer).
    pub reset: f64,
    /// The server's answer is replaced by an HTTP 503.
    pub server_error: f64,
    /// The answer's body is cut in half.
    pub truncate: f64,
}

impl Default for NetworkModel {
    fn default() -> Self {
        NetworkModel {
            latency_min: Duration::ZERO,
            latency_max: Duration::ZERO,
            loss: 0.0,
            reset: 0.0,
            server_error: 0.0,
            truncate: 0.0,
        }
    }
}

/// One fault the simulated network made, for the test that asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFault {
    /// The n-th request through the network (from 1).
    pub request: u64,
    pub url: String,
    pub kind: &'static str,
}

/// Another exchange behind a seeded bad network. The same seed and the same sequence of
/// requests give the same faults. Latency is not slept (the run's clock decides what time
/// is): it is added to the reply's elapsed time, which is what sessions report.
pub struct Simulated<E> {
    inner: E,
    model: NetworkModel,
    seed: u64,
    state: Mutex<(ChaCha8Rng, u64, Vec<NetworkFault>)>,
}

impl<E: Exchange> Simulated<E> {
    pub fn new(inner: E, model: NetworkModel, seed: u64) -> Simulated<E> {
        Simulated { inner, model, seed, state: Mutex::new((ChaCha8Rng::seed_from_u64(seed), 0, Vec::new())) }
    }

    /// The seed the faults are drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The faults made so far, in order.
    pub fn faults(&self) -> Vec<NetworkFault> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).2.clone()
    }

    /// Draws what happens to the next request: (latency, fault).
    fn draw(&self, url: &str) -> (Duration, Option<&'static str>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (rng, n, faults) = &mut *st;
        *n += 1;
        let m = &self.model;
        let span = m.latency_max.saturating_sub(m.latency_min).as_micros() as u64;
        let latency = m.latency_min + Duration::from_micros(if span == 0 { 0 } else { rng.random_range(0..=span) });
        let x: f64 = rng.random();
        let kind = if x < m.loss {
            Some("loss")
        } else if x < m.loss + m.reset {
            Some("reset")
        } else if x < m.loss + m.reset + m.server_error {
            Some("503")
        } else if x < m.loss + m.reset + m.server_error + m.truncate {
            Some("truncate")
        } else {
            None
        };
        if let Some(kind) = kind {
            tracing::debug!(seed = self.seed, request = *n, url, fault = kind, "simulated network fault");
            faults.push(NetworkFault { request: *n, url: url.to_string(), kind });
        }
        (latency, kind)
    }
}

impl<E: Exchange> Exchange for Simulated<E> {
    fn release(&self) {
        self.inner.release();
    }

    fn exchange<'a>(&'a self, transmit: &'a Transmit) -> Exchanging<'a> {
        Box::pin(async move {
            let url = match transmit {
                Transmit::Session(r) => r.url.as_str(),
                Transmit::Fetch { url } => url.as_str(),
                // The push notification service is not behind the simulated network.
                Transmit::Channel(_) => return self.inner.exchange(transmit).await,
            };
            let (latency, fault) = self.draw(url);
            let failed = |kind: &str, no_connection: bool| ExchangeError {
                fault: Fault::Unreachable,
                class: "simulated",
                no_connection,
                message: format!("{url}: simulated network {kind} (seed {})", self.seed),
            };
            if fault == Some("loss") {
                return match transmit {
                    Transmit::Session(_) => Response::Session(Reply::error(failed("loss", true), latency)),
                    Transmit::Fetch { .. } => {
                        Response::Fetch(FetchOutcome::Failed(format!("{url}: simulated network loss")))
                    }
                    Transmit::Channel(_) => Response::Fetch(FetchOutcome::Failed("simulated network loss".into())),
                };
            }
            let answer = self.inner.exchange(transmit).await;
            match (answer, fault) {
                (Response::Session(mut reply), Some(kind)) => {
                    reply.elapsed += 2 * latency;
                    reply.result = match (kind, reply.result) {
                        ("reset", _) => Err(failed("connection reset", false)),
                        ("503", _) => Err(ExchangeError {
                            fault: Fault::Protocol,
                            class: "http-5xx",
                            no_connection: false,
                            message: format!("{url} answered HTTP 503 (simulated, seed {})", self.seed),
                        }),
                        ("truncate", Ok(Some(body))) => {
                            let mut cut = body.len() / 2;
                            while !body.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            Ok(Some(body[..cut].to_string()))
                        }
                        (_, other) => other,
                    };
                    Response::Session(reply)
                }
                (Response::Session(mut reply), None) => {
                    reply.elapsed += 2 * latency;
                    Response::Session(reply)
                }
                (Response::Fetch(_), Some(kind)) => {
                    Response::Fetch(FetchOutcome::Failed(format!("{url}: simulated network {kind}")))
                }
                (other, None) => other,
            }
        })
    }
}
