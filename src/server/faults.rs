//! Fault injection: with the probabilities a user gives (`mdmsim server --faults
//! 500=5%,reset=2%`, or the `[faults]` table of the config), a management request gets an HTTP
//! 500, a connection closed without an answer, a late answer, a truncated body, malformed
//! SyncML, an answer without `<Final/>`, or a throttling answer (HTTP 429 or 503 with a
//! `Retry-After`), so that a device side can be watched surviving a faulty or busy server.
//!
//! Owns the fault names, the spec grammar, the `[faults]` table, the seeded draw, and what each
//! fault puts on the wire. It does not touch the per-device state: `mod.rs` draws a fault for
//! each management request before handing the message to `mgmt.rs`. The faults that replace the
//! answer (`500`, `reset`, `truncate`, `malformed`, `429`, `503`) are injected *instead of* handling the
//! message, so the server never acts on a message whose answer the device did not get: the
//! device rolls its session back, and the server's commands of that session, which got no
//! Status, go again in the device's next session, as a real server's queue resends what was
//! never acknowledged. `slow` waits before handling (a device that gives up first closes the
//! connection and the message is never handled); `no-final` handles the message and only
//! drops `<Final/>` from the answer. The rules are in `docs/server-faults.md`.
//!
//! The draw is a counter-based random stream: request `n` of device `D` gets the number
//! SHA-256(seed, n, D), so the same seed and the same devices give the same faults on the same
//! requests, whatever the order in which concurrent devices reach the server.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{StatusCode as HttpStatus, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::syncml::{self, Command, Status, SyncBody, SyncHdr, SyncMl};

/// The delay of a `slow` answer when none is configured.
pub const DEFAULT_SLOW_DELAY: Duration = Duration::from_secs(2);
/// The longest `slow` delay accepted: a fault must not hold a connection for long.
pub const MAX_SLOW_DELAY: Duration = Duration::from_secs(30);
/// The `Retry-After` of a `429` or `503` answer when none is configured.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest `Retry-After` accepted (whole seconds, as the header carries them).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Probabilities are kept in parts per million, so that sums are exact.
const MILLION: u32 = 1_000_000;

/// One kind of fault, in the order the spec lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// HTTP 500 with a short text body.
    Http500,
    /// The connection is closed without an answer.
    Reset,
    /// The answer comes after the slow delay.
    Slow,
    /// A `Content-Length` longer than the body sent, then the connection is closed.
    Truncate,
    /// HTTP 200 with SyncML that is not well-formed XML.
    Malformed,
    /// The answer without its `<Final/>`.
    NoFinal,
    /// HTTP 429 (too many requests) with `Retry-After`.
    Http429,
    /// HTTP 503 (service unavailable) with `Retry-After`.
    Http503,
}

impl FaultKind {
    /// Every kind, in the order the spec and the summary list them.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Http500,
        FaultKind::Reset,
        FaultKind::Slow,
        FaultKind::Truncate,
        FaultKind::Malformed,
        FaultKind::NoFinal,
        FaultKind::Http429,
        FaultKind::Http503,
    ];

    /// The name in specs, in the `[faults]` table and in the summary's `faults` map.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Http500 => "500",
            FaultKind::Reset => "reset",
            FaultKind::Slow => "slow",
            FaultKind::Truncate => "truncate",
            FaultKind::Malformed => "malformed",
            FaultKind::NoFinal => "no-final",
            FaultKind::Http429 => "429",
            FaultKind::Http503 => "503",
        }
    }

    /// True for the faults that take the place of the answer: the device never gets one, so
    /// the server does not act on the message (and a device fails that session).
    pub fn replaces_answer(self) -> bool {
        matches!(
            self,
            FaultKind::Http500
                | FaultKind::Reset
                | FaultKind::Truncate
                | FaultKind::Malformed
                | FaultKind::Http429
                | FaultKind::Http503
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s).ok_or(())
    }
}

/// The fault names, comma-separated, for messages.
fn names() -> String {
    FaultKind::ALL.map(FaultKind::name).join(", ")
}

/// A spec that cannot be used, naming the term at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    #[error(
        "empty fault spec: write NAME=PROBABILITY terms such as 500=5%,reset=2% (or none); the faults are {}",
        names()
    )]
    Empty,
    #[error("fault term {term:?}: expected NAME=PROBABILITY, such as 500=5%; the faults are {}", names())]
    NoProbability { term: String },
    #[error("fault term {term:?}: unknown fault {name:?}; the faults are {}", names())]
    UnknownFault { term: String, name: String },
    #[error(
        "fault term {term:?}: {value:?} is not a probability: write a percentage (5%, 0.5%) or a fraction from 0 to 1 (0.05)"
    )]
    BadProbability { term: String, value: String },
    #[error("fault term {term:?}: {name} is given twice")]
    Duplicate { term: String, name: &'static str },
    #[error("the fault probabilities add up to {total}, more than 100%")]
    TooLikely { total: String },
    #[error("slow delay {0:?}: expected a duration such as 2s or 500ms")]
    BadDelay(String),
    #[error("slow delay {0:?}: at most 30s")]
    DelayTooLong(String),
    #[error("Retry-After {0:?}: expected whole seconds such as 1s or 5 (at most 30s)")]
    BadRetryAfter(String),
}

/// How likely each fault is on one management request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultSpec {
    ppm: [u32; 8],
}

impl FaultSpec {
    /// No faults at all.
    pub fn none() -> FaultSpec {
        FaultSpec::default()
    }

    /// True when no fault can happen.
    pub fn is_empty(&self) -> bool {
        self.ppm.iter().all(|&p| p == 0)
    }

    /// The probability of `kind`, from 0 to 1.
    pub fn probability(&self, kind: FaultKind) -> f64 {
        f64::from(self.ppm[kind.index()]) / f64::from(MILLION)
    }

    /// Sets the probability of one kind (parsed from `term` for messages) and checks the total.
    fn set(&mut self, kind: FaultKind, ppm: u32, term: &str) -> Result<(), FaultSpecError> {
        if self.ppm[kind.index()] != 0 {
            return Err(FaultSpecError::Duplicate { term: term.to_string(), name: kind.name() });
        }
        self.ppm[kind.index()] = ppm;
        let total: u32 = self.ppm.iter().sum();
        if total > MILLION {
            return Err(FaultSpecError::TooLikely { total: percent(total) });
        }
        Ok(())
    }

    /// The fault for a uniform draw in `0..1_000_000`: the kinds take consecutive slices of
    /// the range in their spec order; the rest means no fault.
    fn pick(&self, draw: u32) -> Option<FaultKind> {
        let mut upto = 0;
        for kind in FaultKind::ALL {
            upto += self.ppm[kind.index()];
            if draw < upto {
                return Some(kind);
            }
        }
        None
    }
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    /// `NAME=PROBABILITY[,NAME=PROBABILITY...]`, or `none`.
    fn from_str(text: &str) -> Result<Self, FaultSpecError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(FaultSpecError::Empty);
        }
        let mut spec = FaultSpec::none();
        if text.eq_ignore_ascii_case("none") {
            return Ok(spec);
        }
        for term in text.split(',').map(str::trim) {
            let Some((name, value)) = term.split_once('=') else {
                return Err(FaultSpecError::NoProbability { term: term.to_string() });
            };
            let name = name.trim();
            let kind: FaultKind = name
                .parse()
                .map_err(|()| FaultSpecError::UnknownFault { term: term.to_string(), name: name.to_string() })?;
            let ppm = parse_probability(value.trim())
                .ok_or_else(|| FaultSpecError::BadProbability { term: term.to_string(), value: value.trim().into() })?;
            spec.set(kind, ppm, term)?;
        }
        Ok(spec)
    }
}

impl fmt::Display for FaultSpec {
    /// The spec as `--faults` takes it (`none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let terms: Vec<String> = FaultKind::ALL
            .into_iter()
            .filter(|k| self.ppm[k.index()] > 0)
            .map(|k| format!("{}={}", k.name(), percent(self.ppm[k.index()])))
            .collect();
        f.write_str(&terms.join(","))
    }
}

/// `5%`, `0.5%` or a fraction `0.05`, in parts per million.
fn parse_probability(text: &str) -> Option<u32> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (text, 1.0),
    };
    // Plain decimals only: f64 parsing would also take "inf", "NaN" and "1e-2".
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    if !(0.0..=scale).contains(&value) {
        return None;
    }
    Some((value / scale * f64::from(MILLION)).round() as u32)
}

/// Parts per million as a percentage without trailing zeros: `5%`, `0.5%`, `120%`.
fn percent(ppm: u32) -> String {
    let (whole, frac) = (ppm / 10_000, ppm % 10_000);
    if frac == 0 {
        return format!("{whole}%");
    }
    let frac = format!("{frac:04}");
    format!("{whole}.{}%", frac.trim_end_matches('0'))
}

/// A `slow` delay: `2s`, `1.5s`, `500ms`, or a number of seconds; at most 30 s.
pub fn parse_delay(text: &str) -> Result<Duration, FaultSpecError> {
    let t = text.trim();
    let (number, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n.trim(), 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n.trim(), 1000.0)
    } else {
        (t, 1000.0)
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(FaultSpecError::BadDelay(text.to_string()));
    }
    let value: f64 = number.parse().map_err(|_| FaultSpecError::BadDelay(text.to_string()))?;
    let ms = value * unit_ms;
    if ms > MAX_SLOW_DELAY.as_millis() as f64 {
        return Err(FaultSpecError::DelayTooLong(text.to_string()));
    }
    Ok(Duration::from_millis(ms.round() as u64))
}

/// The `Retry-After` of a throttling fault: whole seconds (`1s`, `5`), from 0 to 30 s.
pub fn parse_retry_after(text: &str) -> Result<Duration, FaultSpecError> {
    let t = text.trim();
    let number = t.strip_suffix('s').unwrap_or(t).trim();
    let secs: u64 = number
        .parse()
        .ok()
        .filter(|_| number.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| FaultSpecError::BadRetryAfter(text.to_string()))?;
    let d = Duration::from_secs(secs);
    if d > MAX_RETRY_AFTER {
        return Err(FaultSpecError::BadRetryAfter(text.to_string()));
    }
    Ok(d)
}

/// A delay as `2s` or `500ms`.
pub fn format_delay(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// The `[faults]` table: one key per fault name with its probability (`"5%"` or a fraction
/// such as `0.05`), plus `seed`, `slow_delay` and `retry_after`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, toml::Value>")]
pub struct FaultConfig {
    /// The probabilities.
    pub spec: FaultSpec,
    /// The seed of the draw; `None` picks one at start (and prints it).
    pub seed: Option<u64>,
    /// The delay of a `slow` answer; `None` is [`DEFAULT_SLOW_DELAY`].
    pub slow_delay: Option<Duration>,
    /// The `Retry-After` of a `429` or `503` answer; `None` is [`DEFAULT_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
}

impl TryFrom<BTreeMap<String, toml::Value>> for FaultConfig {
    type Error = String;

    fn try_from(table: BTreeMap<String, toml::Value>) -> Result<Self, String> {
        let mut out = FaultConfig::default();
        for (key, value) in &table {
            let at = format!("faults.{key}");
            match (key.as_str(), value) {
                ("seed", toml::Value::Integer(n)) => {
                    out.seed = Some(u64::try_from(*n).map_err(|_| format!("{at}: the seed is a number from 0 up"))?);
                }
                ("seed", _) => return Err(format!("{at}: the seed is a number from 0 up")),
                ("slow_delay", toml::Value::String(s)) => {
                    out.slow_delay = Some(parse_delay(s).map_err(|e| format!("{at}: {e}"))?);
                }
                ("slow_delay", toml::Value::Integer(n)) => {
                    out.slow_delay = Some(parse_delay(&n.to_string()).map_err(|e| format!("{at}: {e}"))?);
                }
                ("slow_delay", _) => return Err(format!("{at}: expected a duration such as \"2s\" or \"500ms\"")),
                ("retry_after", toml::Value::String(s)) => {
                    out.retry_after = Some(parse_retry_after(s).map_err(|e| format!("{at}: {e}"))?);
                }
                ("retry_after", toml::Value::Integer(n)) => {
                    out.retry_after = Some(parse_retry_after(&n.to_string()).map_err(|e| format!("{at}: {e}"))?);
                }
                ("retry_after", _) => return Err(format!("{at}: expected whole seconds such as \"1s\"")),
                (name, value) => {
                    let kind: FaultKind = name.parse().map_err(|()| {
                        format!(
                            "{at}: unknown key {name:?}; the keys are {}, seed, slow_delay and retry_after",
                            names()
                        )
                    })?;
                    let ppm = match value {
                        toml::Value::String(s) => parse_probability(s.trim()),
                        toml::Value::Float(f) if (0.0..=1.0).contains(f) => Some((f * f64::from(MILLION)).round() as u32),
                        toml::Value::Integer(0) => Some(0),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        format!("{at}: {value} is not a probability: write a percentage (\"5%\") or a fraction from 0 to 1 (0.05)")
                    })?;
                    out.spec.set(kind, ppm, &format!("{name}={value}")).map_err(|e| format!("{at}: {e}"))?;
                }
            }
        }
        Ok(out)
    }
}

/// The faults a running server injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    pub spec: FaultSpec,
    /// The seed in use (given, or picked at start).
    pub seed: u64,
    pub slow_delay: Duration,
    /// The `Retry-After` of a `429` or `503` answer.
    pub retry_after: Duration,
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (seed {}", self.spec, self.seed)?;
        if self.spec.probability(FaultKind::Slow) > 0.0 {
            write!(f, ", slow delay {}", format_delay(self.slow_delay))?;
        }
        if self.spec.probability(FaultKind::Http429) > 0.0 || self.spec.probability(FaultKind::Http503) > 0.0 {
            write!(f, ", Retry-After {}", format_delay(self.retry_after))?;
        }
        f.write_str(")")
    }
}

/// Draws the fault of each management request.
#[derive(Debug)]
pub struct Injector {
    plan: FaultPlan,
    /// Management requests seen per DeviceID: the position in that device's stream.
    requests: HashMap<String, u64>,
}

impl Injector {
    /// An injector for `plan`.
    pub fn new(plan: FaultPlan) -> Injector {
        Injector { plan, requests: HashMap::new() }
    }

    /// The plan in force.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// The fault for the next management request of `device_id`, if any.
    pub fn draw(&mut self, device_id: &str) -> Option<FaultKind> {
        if self.plan.spec.is_empty() {
            return None;
        }
        let n = self.requests.entry(device_id.to_string()).or_default();
        let draw = uniform(self.plan.seed, *n, device_id);
        *n += 1;
        self.plan.spec.pick(draw)
    }
}

/// A number in `0..1_000_000` from SHA-256(seed, n, device): the modulo bias is below 1e-13.
fn uniform(seed: u64, n: u64, device_id: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(b"mdmsim fault draw\0");
    h.update(seed.to_be_bytes());
    h.update(n.to_be_bytes());
    h.update(device_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(MILLION)) as u32
}

/// `500`: the status and a body that says where it comes from.
pub fn http_500() -> Response {
    (HttpStatus::INTERNAL_SERVER_ERROR, "mdmsim fault injection: HTTP 500 Internal Server Error\n").into_response()
}

/// `429` or `503`: the status with `Retry-After` (whole seconds), or without the header when
/// `retry_after` is `None` (compat `throttle_without_retry_after`), and a body that says where it
/// comes from.
pub fn throttled(kind: FaultKind, retry_after: Option<Duration>) -> Response {
    let status = match kind {
        FaultKind::Http429 => HttpStatus::TOO_MANY_REQUESTS,
        _ => HttpStatus::SERVICE_UNAVAILABLE,
    };
    let body = format!("mdmsim fault injection: HTTP {status}\n");
    let mut resp = (status, body).into_response();
    if let Some(d) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(d.as_secs()));
    }
    resp
}

/// `reset`: a response whose body fails before anything is sent. The HTTP layer buffers the
/// status line and headers until the body yields; a body that fails at once makes it drop the
/// connection with nothing written, which is what a client sees when a server dies mid-request.
pub fn reset() -> Response {
    Response::new(Body::new(FailingBody { first: None, pause: None, sleep: None }))
}

/// `truncate`: an answer that announces its full length and sends half, then closes. The body is
/// a SyncML answer to the device's header (its SyncHdr Status): what a real answer starts with.
pub fn truncated(client: &SyncHdr) -> Response {
    let full = syncml::encode(&status_only(client));
    let half = Bytes::copy_from_slice(&full.as_bytes()[..full.len() / 2]);
    // The pause lets the HTTP layer flush the headers and the first half before the body fails.
    let body = FailingBody { first: Some(half), pause: Some(Duration::from_millis(20)), sleep: None };
    let mut resp = Response::new(Body::new(body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(syncml::CONTENT_TYPE));
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(full.len()));
    resp
}

/// `malformed`: HTTP 200 with an answer to the device's header whose `</SyncBody>` end tag is
/// missing, so the XML is not well-formed.
pub fn malformed(client: &SyncHdr) -> Response {
    (HttpStatus::OK, [(header::CONTENT_TYPE, syncml::CONTENT_TYPE)], malformed_text(client)).into_response()
}

fn malformed_text(client: &SyncHdr) -> String {
    let text = syncml::encode(&status_only(client));
    match text.rfind("</SyncBody>") {
        Some(at) => format!("{}{}", &text[..at], &text[at + "</SyncBody>".len()..]),
        // The codec always writes a SyncBody; cut the text instead if that ever changes.
        None => text[..text.len() / 2].to_string(),
    }
}

/// The answer a server gives to a message it has nothing for: the SyncHdr Status, Final.
fn status_only(client: &SyncHdr) -> SyncMl {
    let hdr = SyncHdr {
        session_id: client.session_id.clone(),
        msg_id: client.msg_id.clone(),
        target: client.source.clone(),
        source: client.target.clone(),
        ..SyncHdr::default()
    };
    let status = Status {
        cmd_id: "1".into(),
        msg_ref: client.msg_id.clone(),
        cmd_ref: "0".into(),
        cmd: "SyncHdr".into(),
        data: "200".into(),
        ..Default::default()
    };
    SyncMl { hdr, body: SyncBody { commands: vec![Command::Status(status)], final_: true } }
}

/// A body that yields `first` (if any), waits for `pause` (if any), then fails.
struct FailingBody {
    first: Option<Bytes>,
    pause: Option<Duration>,
    /// The pause's timer, made at the first poll (a timer needs the runtime, which a response
    /// built outside it would not have).
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpBody for FailingBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(bytes) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if let Some(pause) = self.pause.take() {
            self.sleep = Some(Box::pin(tokio::time::sleep(pause)));
        }
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "mdmsim fault injection"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        let spec: FaultSpec = "500=5%,reset=2%,slow=1%,truncate=1%,malformed=1%,no-final=1%".parse().unwrap();
        assert_eq!(spec.probability(FaultKind::Http500), 0.05);
        assert_eq!(spec.probability(FaultKind::NoFinal), 0.01);
        assert_eq!(spec.to_string(), "500=5%,reset=2%,slow=1%,truncate=1%,malformed=1%,no-final=1%");
        let spec: FaultSpec = " reset = 0.5% , 500=0.25 ".parse().unwrap();
        assert_eq!(spec.to_string(), "500=25%,reset=0.5%");
        assert_eq!("none".parse::<FaultSpec>().unwrap(), FaultSpec::none());
        assert_eq!("malformed=100%".parse::<FaultSpec>().unwrap().to_string(), "malformed=100%");
        assert_eq!("slow=0.0001%".parse::<FaultSpec>().unwrap().to_string(), "slow=0.0001%");
    }

    #[test]
    fn bad_specs_name_the_term_and_the_fault_names() {
        let err = |s: &str| s.parse::<FaultSpec>().unwrap_err().to_string();
        assert_eq!(
            err("500=5%,rst=2%"),
            "fault term \"rst=2%\": unknown fault \"rst\"; the faults are 500, reset, slow, truncate, malformed, no-final, 429, 503"
        );
        assert!(err("reset").starts_with("fault term \"reset\": expected NAME=PROBABILITY"), "{}", err("reset"));
        assert!(err("reset=5").contains("\"5\" is not a probability"), "{}", err("reset=5"));
        for bad in ["reset=-1%", "reset=101%", "reset=inf", "reset=NaN", "reset=", "reset=1e-2", "reset=5 %%"] {
            assert!(err(bad).contains("is not a probability"), "{bad}: {}", err(bad));
        }
        assert_eq!(err("reset=1%,reset=2%"), "fault term \"reset=2%\": reset is given twice");
        assert_eq!(err("500=60%,reset=50%"), "the fault probabilities add up to 110%, more than 100%");
        assert!(err("").starts_with("empty fault spec"));
        assert!(err("500=1%,").contains("fault term \"\""), "{}", err("500=1%,"));
    }

    #[test]
    fn delays_are_bounded() {
        assert_eq!(parse_delay("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_delay("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_delay("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_delay("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_delay("31s"), Err(FaultSpecError::DelayTooLong("31s".into())));
        assert_eq!(parse_delay("soon"), Err(FaultSpecError::BadDelay("soon".into())));
        assert_eq!(format_delay(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_delay(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn the_table_takes_names_probabilities_seed_and_delay() {
        let table: BTreeMap<String, toml::Value> =
            toml::from_str("\"500\" = \"5%\"\nreset = 0.02\nno-final = \"1%\"\nseed = 7\nslow_delay = \"500ms\"\n")
                .unwrap();
        let c = FaultConfig::try_from(table).unwrap();
        assert_eq!(c.spec.to_string(), "500=5%,reset=2%,no-final=1%");
        assert_eq!((c.seed, c.slow_delay), (Some(7), Some(Duration::from_millis(500))));
        let bad = |text: &str| FaultConfig::try_from(toml::from_str::<BTreeMap<String, toml::Value>>(text).unwrap());
        assert!(
            bad("resets = \"1%\"").unwrap_err().starts_with("faults.resets: unknown key \"resets\"; the keys are 500,")
        );
        assert!(bad("reset = 5").unwrap_err().contains("faults.reset: 5 is not a probability"));
        assert!(bad("slow_delay = \"1m\"").unwrap_err().starts_with("faults.slow_delay: slow delay \"1m\""));
        assert!(bad("seed = -1").unwrap_err().starts_with("faults.seed:"));
    }

    #[test]
    fn the_draw_follows_the_probabilities_and_the_seed() {
        let plan = |spec: &str, seed| FaultPlan {
            spec: spec.parse().unwrap(),
            seed,
            slow_delay: DEFAULT_SLOW_DELAY,
            retry_after: DEFAULT_RETRY_AFTER,
        };
        let mut inj = Injector::new(plan("500=10%,reset=5%,no-final=5%", 42));
        let draws: Vec<Option<FaultKind>> = (0..20_000).map(|i| inj.draw(&format!("DEV{}", i % 10))).collect();
        let count = |k| draws.iter().filter(|d| **d == Some(k)).count();
        // 10% of 20 000 is 2 000, with a standard deviation near 42: well inside +-300.
        assert!((1_700..2_300).contains(&count(FaultKind::Http500)), "{}", count(FaultKind::Http500));
        assert!((800..1_200).contains(&count(FaultKind::Reset)), "{}", count(FaultKind::Reset));
        assert_eq!(count(FaultKind::Truncate), 0);
        // The same seed gives the same stream per device, whatever the interleaving.
        let mut a = Injector::new(plan("500=50%", 9));
        let mut b = Injector::new(plan("500=50%", 9));
        let first: Vec<_> = (0..50).map(|_| a.draw("A")).collect();
        let _ = (0..17).map(|_| b.draw("B")).count();
        let again: Vec<_> = (0..50).map(|_| b.draw("A")).collect();
        assert_eq!(first, again);
        let mut c = Injector::new(plan("500=50%", 10));
        assert_ne!(first, (0..50).map(|_| c.draw("A")).collect::<Vec<_>>(), "another seed, another stream");
        assert_eq!(Injector::new(plan("none", 1)).draw("A"), None);
    }

    #[test]
    fn the_malformed_answer_does_not_decode_and_the_truncated_one_is_cut() {
        let client = SyncHdr {
            session_id: "5".into(),
            msg_id: "2".into(),
            source: "DEV<&>".into(),
            target: "https://s/".into(),
            ..SyncHdr::default()
        };
        assert!(syncml::decode(&syncml::encode(&status_only(&client))).is_ok());
        let text = malformed_text(&client);
        assert!(text.contains("<SessionID>5</SessionID>") && text.contains("DEV&lt;&amp;&gt;"), "{text}");
        assert!(syncml::decode(&text).is_err(), "{text}");
        let resp = truncated(&client);
        let full = syncml::encode(&status_only(&client)).len();
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], full.to_string().as_str());
        assert_eq!(http_500().status(), 500);
        let t = throttled(FaultKind::Http503, Some(Duration::from_secs(2)));
        assert_eq!((t.status().as_u16(), &t.headers()[header::RETRY_AFTER]), (503, &header::HeaderValue::from(2u64)));
        let t = throttled(FaultKind::Http429, None);
        assert_eq!(t.status(), 429);
        assert!(t.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn retry_after_is_whole_seconds_and_bounded() {
        assert_eq!(parse_retry_after("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("0"), Ok(Duration::ZERO));
        for bad in ["31s", "1.5s", "soon", "", "-1"] {
            assert_eq!(parse_retry_after(bad), Err(FaultSpecError::BadRetryAfter(bad.into())), "{bad}");
        }
        let table: BTreeMap<String, toml::Value> = toml::from_str("\"503\" = \"10%\"\nretry_after = 2\n").unwrap();
        let c = FaultConfig::try_from(table).unwrap();
        assert_eq!((c.spec.to_string(), c.retry_after), ("503=10%".into(), Some(Duration::from_secs(2))));
    }
}
