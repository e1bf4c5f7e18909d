//! Live metrics of a fleet run in the Prometheus / OpenMetrics text format, for a Prometheus
//! (or anything that scrapes it) to watch a load test as it goes, beside the server's own
//! metrics.
//!
//! [`Metrics`] is a registry the runner updates as sessions end, with the same calls as the
//! report ([`super::report::Report`]): counters, latency histograms and gauges, all atomic, so
//! one `Arc<Metrics>` is shared by every task. [`serve`] exposes `GET /metrics` on a loopback
//! address (another address only when [`Exposure::AnyAddress`] says so). Names, prefixed
//! `mdmsim_`:
//!
//! - `mdmsim_sessions_total{trigger,mode,outcome}`, `mdmsim_missed_sessions_total{trigger}`,
//!   `mdmsim_unenrolled_total`, `mdmsim_messages_total`, `mdmsim_errors_total{class}`,
//!   `mdmsim_enrollments_total{result}` (`ok` or the error class),
//!   `mdmsim_statuses_sent_total{code}`, `mdmsim_statuses_received_total{code}`,
//!   `mdmsim_findings_total{kind}`;
//! - histograms `mdmsim_session_latency_seconds`, `mdmsim_message_latency_seconds`,
//!   `mdmsim_enroll_latency_seconds`;
//! - gauges `mdmsim_devices`, `mdmsim_in_flight`.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::device::engine::Record;
use crate::session::Summary;

use super::report::outcome_name;

/// The bucket bounds of the latency histograms, in seconds (1 ms to 2 min).
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    trigger: String,
    mode: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabel {
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// The live metrics of a run (see the module documentation for the names).
pub struct Metrics {
    registry: Registry,
    sessions: Family<SessionLabels, Counter>,
    missed: Family<TriggerLabel, Counter>,
    unenrolled: Counter,
    messages: Counter,
    errors: Family<ClassLabel, Counter>,
    enrollments: Family<ResultLabel, Counter>,
    statuses_sent: Family<CodeLabel, Counter>,
    statuses_received: Family<CodeLabel, Counter>,
    findings: Family<KindLabel, Counter>,
    session_latency: Histogram,
    message_latency: Histogram,
    enroll_latency: Histogram,
    devices: Gauge,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let latency = || Histogram::new(LATENCY_BUCKETS);
        let m = Metrics {
            registry: Registry::with_prefix("mdmsim"),
            sessions: Family::default(),
            missed: Family::default(),
            unenrolled: Counter::default(),
            messages: Counter::default(),
            errors: Family::default(),
            enrollments: Family::default(),
            statuses_sent: Family::default(),
            statuses_received: Family::default(),
            findings: Family::default(),
            session_latency: latency(),
            message_latency: latency(),
            enroll_latency: latency(),
            devices: Gauge::default(),
            in_flight: Gauge::default(),
        };
        let mut r = m.registry;
        r.register("sessions", "Management sessions that ran, by trigger, mode and outcome", m.sessions.clone());
        r.register("missed_sessions", "Sessions that came due while the device's network was off", m.missed.clone());
        r.register("unenrolled", "Devices that left management", m.unenrolled.clone());
        r.register("messages", "HTTP exchanges with the server", m.messages.clone());
        r.register(
            "errors",
            "Failed exchanges by class (connect, tls, timeout, throttled, http-4xx, http-5xx...)",
            m.errors.clone(),
        );
        r.register("enrollments", "Enrollments, by result (ok or the error class)", m.enrollments.clone());
        r.register(
            "statuses_sent",
            "Status codes the devices returned for the server's commands",
            m.statuses_sent.clone(),
        );
        r.register(
            "statuses_received",
            "Status codes the server returned for the devices' header and commands",
            m.statuses_received.clone(),
        );
        r.register("findings", "Conformance findings, by rule", m.findings.clone());
        r.register_with_unit(
            "session_latency",
            "Session latency, from the instant the session was due to its end",
            Unit::Seconds,
            m.session_latency.clone(),
        );
        r.register_with_unit("message_latency", "HTTP exchange latency", Unit::Seconds, m.message_latency.clone());
        r.register_with_unit("enroll_latency", "Enrollment latency", Unit::Seconds, m.enroll_latency.clone());
        r.register("devices", "Devices in the run", m.devices.clone());
        r.register("in_flight", "Sessions under way", m.in_flight.clone());
        Metrics { registry: r, ..m }
    }

    /// One thing that happened to a device (as [`super::report::Report::record`]): a session
    /// counts by trigger, mode and outcome with its statuses and findings, and its latency
    /// (`latency_us`, or the session's own wall time when the runner has none).
    pub fn observe(&self, record: &Record, latency_us: Option<u64>) {
        match record {
            Record::Session { summary, .. } => self.session(summary, latency_us.unwrap_or(summary.wall_us)),
            Record::Missed { trigger, .. } => {
                self.missed.get_or_create(&TriggerLabel { trigger: trigger.as_str().to_string() }).inc();
            }
            Record::Unenrolled { .. } => {
                self.unenrolled.inc();
            }
            Record::Changed { .. } => {}
        }
    }

    fn session(&self, s: &Summary, latency_us: u64) {
        let labels = SessionLabels {
            trigger: s.trigger.as_str().to_string(),
            mode: s.mode.as_str().to_string(),
            outcome: outcome_name(s.outcome).to_string(),
        };
        self.sessions.get_or_create(&labels).inc();
        for (code, n) in &s.statuses_sent {
            self.statuses_sent.get_or_create(&CodeLabel { code: code.to_string() }).inc_by(u64::from(*n));
        }
        for (code, n) in &s.statuses_received {
            self.statuses_received.get_or_create(&CodeLabel { code: code.to_string() }).inc_by(u64::from(*n));
        }
        for f in &s.findings {
            self.findings.get_or_create(&KindLabel { kind: f.what.clone() }).inc();
        }
        self.session_latency.observe(seconds(latency_us));
    }

    /// One HTTP exchange that took `latency_us`.
    pub fn message(&self, latency_us: u64) {
        self.messages.inc();
        self.message_latency.observe(seconds(latency_us));
    }

    /// One enrollment that took `latency_us`, failed with `error_class` or not.
    pub fn enrollment(&self, latency_us: u64, error_class: Option<&str>) {
        self.enrollments.get_or_create(&ResultLabel { result: error_class.unwrap_or("ok").to_string() }).inc();
        self.enroll_latency.observe(seconds(latency_us));
    }

    /// One error of `class`.
    pub fn error(&self, class: &str) {
        self.errors.get_or_create(&ClassLabel { class: class.to_string() }).inc();
    }

    /// The number of devices in the run.
    pub fn set_devices(&self, n: u64) {
        self.devices.set(n as i64);
    }

    /// The number of sessions under way.
    pub fn set_in_flight(&self, n: u64) {
        self.in_flight.set(n as i64);
    }

    /// The exposition: every metric in the OpenMetrics text format, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

fn seconds(us: u64) -> f64 {
    us as f64 / 1_000_000.0
}

/// Which addresses [`serve_on`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback addresses only (127.0.0.0/8, ::1): the default.
    LoopbackOnly,
    /// Any address, other machines' Prometheus included (the user asked for it).
    AnyAddress,
}

/// Why the metrics cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without [`Exposure::AnyAddress`].
    #[error(
        "refusing to serve metrics on {0}: not a loopback address (127.0.0.1, ::1); other machines are served only when asked for explicitly"
    )]
    NotLoopback(SocketAddr),
    /// The address cannot be listened on (in use, not local).
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The metrics endpoint, running on the tokio runtime it was started on.
#[must_use = "the endpoint's address is where to scrape"]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to scrape.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    /// Stops listening and waits for the endpoint to end (scrapes under way finish first).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Serves `GET /metrics` on `addr`, a loopback address (port 0: any free port), until
/// [`MetricsServer::stop`] or the end of the runtime.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer, ServeError> {
    serve_on(addr, metrics, Exposure::LoopbackOnly).await
}

/// [`serve`], on an address of any kind when `exposure` allows it.
pub async fn serve_on(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    exposure: Exposure,
) -> Result<MetricsServer, ServeError> {
    if exposure == Exposure::LoopbackOnly && !crate::server::is_loopback(addr.ip()) {
        return Err(ServeError::NotLoopback(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode()) }
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!("metrics endpoint: {e}");
        }
    });
    Ok(MetricsServer { addr, stop: Some(stop), task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Mode, Outcome, Trigger};

    #[test]
    fn the_exposition_counts_what_was_observed() {
        let m = Metrics::new();
        let now = chrono::Utc::now();
        let mut s = Summary::new("D", "1", Mode::Maintenance, Trigger::Logon, 1201, now);
        s.outcome = Outcome::Completed;
        s.statuses_sent.insert(404, 2);
        let rec = Record::Session { device: "D".into(), at: now, summary: Box::new(s) };
        m.observe(&rec, Some(2_000_000));
        m.observe(&rec, Some(500));
        m.error("timeout");
        m.enrollment(1000, Some("http-5xx"));
        m.set_in_flight(3);
        let text = m.encode();
        for line in [
            "mdmsim_sessions_total{trigger=\"logon\",mode=\"Maintenance\",outcome=\"completed\"} 2",
            "mdmsim_statuses_sent_total{code=\"404\"} 4",
            "mdmsim_errors_total{class=\"timeout\"} 1",
            "mdmsim_enrollments_total{result=\"http-5xx\"} 1",
            "mdmsim_session_latency_seconds_count 2",
            "mdmsim_session_latency_seconds_bucket{le=\"0.001\"} 1",
            "mdmsim_session_latency_seconds_bucket{le=\"2.5\"} 2",
            "mdmsim_in_flight 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn other_addresses_than_loopback_are_refused_unless_asked_for() {
        let m = Arc::new(Metrics::new());
        let e = serve("0.0.0.0:0".parse().unwrap(), m.clone()).await.err().expect("refused");
        assert!(e.to_string().starts_with("refusing to serve metrics on 0.0.0.0:0: not a loopback address"), "{e}");
        let s = serve_on("0.0.0.0:0".parse().unwrap(), m, Exposure::AnyAddress).await.unwrap();
        assert_ne!(s.local_addr().port(), 0);
        s.stop().await;
    }
}
