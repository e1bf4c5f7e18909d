//! The report of a fleet run: what `mdmsim fleet` writes as JSON, what `mdmsim report merge`
//! adds up across the shards of one run, and what the HTML page ([`super::html`]) and the
//! summary are drawn from.
//!
//! Owns the data model and its arithmetic: counts, exact latency histograms (HdrHistogram,
//! written in its V2 compressed form so that a merge of shard reports is the report of the
//! whole run, percentiles included), and a time series over the run's simulated time in buckets
//! whose width the duration decides. Memory is bounded by the number of buckets and
//! histograms: nothing is kept per session or per device. Also owns [`Progress`], the line or
//! bar a run shows while it goes. Does not own running devices (the runner calls
//! [`Report::record`] and friends), nor the live metrics ([`super::metrics`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{IsTerminal as _, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::device::engine::Record;
use crate::session::{Fault, Outcome, Summary as SessionSummary};

/// The `format` of the reports this version writes and reads.
pub const FORMAT: &str = "mdmsim-fleet-report/1";

/// The largest latency a histogram holds, in microseconds (one hour); longer ones count as one
/// hour.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Significant digits of the whole-run histograms of each phase (0.1 % resolution).
const PHASE_DIGITS: u8 = 3;
/// Significant digits of the histograms per trigger and mode and per time bucket (1 %).
const FINE_DIGITS: u8 = 2;

/// What the runner knows of its run when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMeta {
    /// The run's seed (devices, schedules and jitter follow from it).
    pub seed: u64,
    /// Devices this process simulates: its shard's share of the fleet, or the whole fleet.
    pub devices: u64,
    /// `(i, n)`: this process runs shard `i` of `n` (`None`: the whole fleet).
    pub shard: Option<(u32, u32)>,
    /// The simulated instant the run starts at.
    pub start: DateTime<Utc>,
    /// The simulated length of the run, in seconds.
    pub duration_s: u64,
    /// `real`, `scaled` or `virtual`.
    pub clock: String,
    /// The server's URL, or `in-process`.
    pub target: String,
    pub mdmsim_version: String,
}

/// What is the same in every shard of one run (a merge refuses reports that differ here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub seed: u64,
    pub start: DateTime<Utc>,
    pub duration_s: u64,
    pub clock: String,
    pub target: String,
    pub mdmsim_version: String,
    /// How many shards the run has (1: it was not sharded).
    pub shard_count: u32,
    /// A run of a fleet kept in a state directory that went on from an earlier run: the
    /// simulated instant it took the fleet up at (the run's `start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<DateTime<Utc>>,
}

/// One shard in a report: which one, how many devices it ran, what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// From 0 to `shard_count - 1` (0 for a run that was not sharded).
    pub index: u32,
    pub devices: u64,
    /// Real seconds the process ran.
    pub wall_s: f64,
    /// CPU seconds it used (user and system).
    pub cpu_s: f64,
    /// Its peak resident memory.
    pub peak_rss_bytes: u64,
}

/// Counts over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Sessions that ran (completed or failed).
    pub sessions: u64,
    pub completed: u64,
    pub failed: u64,
    /// Failed sessions whose server could not be reached (connection, TLS, timeout).
    pub failed_unreachable: u64,
    /// Failed sessions whose server broke the protocol (an HTTP error status included).
    pub failed_protocol: u64,
    /// Sessions that came due while a device's network was off.
    pub missed: u64,
    /// Devices that left management.
    pub unenrolled: u64,
    /// Tree changes the devices' own timers made between sessions.
    pub changed: u64,
    /// HTTP exchanges the runner timed ([`Report::message`]).
    pub messages: u64,
    /// Client messages the sessions sent, and server messages they received.
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Messages sent again after an HTTP 429 or 503 and its Retry-After.
    pub throttled: u64,
    pub enrollments: u64,
    pub enrollments_failed: u64,
    /// Sessions by `trigger/mode` (`poll/Machine`).
    pub sessions_by: BTreeMap<String, u64>,
    /// Missed sessions by trigger.
    pub missed_by: BTreeMap<String, u64>,
    /// Errors the runner reported ([`Report::error`]), by class.
    pub errors: BTreeMap<String, u64>,
    /// Failed enrollments by class.
    pub enroll_errors: BTreeMap<String, u64>,
    /// Status codes the devices returned for the server's commands.
    pub statuses_sent: BTreeMap<u16, u64>,
    /// Status codes the server returned for the devices' header and commands.
    pub statuses_received: BTreeMap<u16, u64>,
    /// Conformance findings by rule (`machine-mode-write`).
    pub findings: BTreeMap<String, u64>,
}

/// The latency histograms of the whole run, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// Sessions, from the instant each was due to its end.
    pub session: Hist,
    /// HTTP exchanges.
    pub message: Hist,
    /// Enrollments.
    pub enroll: Hist,
    /// Sessions by `trigger/mode`.
    pub session_by: BTreeMap<String, Hist>,
}

/// One bucket of the time series: what happened in `bucket_s` seconds of simulated time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Sessions that started in the bucket (completed or failed).
    pub sessions: u64,
    pub completed: u64,
    pub failed: u64,
    pub missed: u64,
    pub unenrolled: u64,
    pub messages: u64,
    pub enrollments: u64,
    /// Errors by class ([`Report::error`]).
    pub errors: BTreeMap<String, u64>,
    /// Latency of the sessions that started in the bucket, in microseconds.
    pub latency: Hist,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            sessions: 0,
            completed: 0,
            failed: 0,
            missed: 0,
            unenrolled: 0,
            messages: 0,
            enrollments: 0,
            errors: BTreeMap::new(),
            latency: Hist::fine(),
        }
    }
}

/// The report of a fleet run (or of some of its shards): the JSON file `mdmsim fleet` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: String,
    pub run: Run,
    /// The shards this report covers, by index.
    pub shards: Vec<Shard>,
    /// Width of a time-series bucket, in seconds of simulated time ([`bucket_width`]).
    pub bucket_s: u64,
    pub totals: Totals,
    pub latency: Latencies,
    /// Bucket `k` covers `[start + k * bucket_s, start + (k + 1) * bucket_s)`; events before the
    /// start count in the first bucket, after the end in the last.
    pub series: Vec<Bucket>,
}

/// Why two reports cannot be merged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MergeError {
    /// They are not of the same run (or not of the same report format).
    #[error("not the same run: {field} differs ({ours} and {theirs})")]
    Different { field: &'static str, ours: String, theirs: String },
    /// Both cover the same shard: adding them would count its sessions twice.
    #[error("{} is in both reports", shard_name(*index, *count))]
    DuplicateShard { index: u32, count: u32 },
    /// A histogram could not be added (its bounds are not mdmsim's).
    #[error("histogram {what}: {message}")]
    Histogram { what: String, message: String },
}

/// Why a JSON text is not a report this version can read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// Not JSON, or not the shape of a report: the position is 1-based.
    #[error("{line}:{column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    /// JSON, but not a fleet report (no `format`) or of another format version.
    #[error("{0}")]
    NotAReport(String),
    /// The shape is right but the content contradicts itself.
    #[error("inconsistent report: {0}")]
    Inconsistent(String),
}

fn shard_name(index: u32, count: u32) -> String {
    if count <= 1 { "the whole fleet (no shards)".to_string() } else { format!("shard {index}/{count}") }
}

/// The width of the time-series buckets for a run of `duration_s` simulated seconds: one
/// minute up to 2 hours, 5 minutes up to a day, an hour up to 6 weeks, then whole days (at most
/// about a thousand buckets).
pub fn bucket_width(duration_s: u64) -> u64 {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    match duration_s {
        d if d <= 2 * HOUR => 60,
        d if d <= DAY => 300,
        d if d <= 42 * DAY => HOUR,
        d => DAY * d.div_ceil(1000 * DAY),
    }
}

fn bucket_count(duration_s: u64, bucket_s: u64) -> usize {
    duration_s.div_ceil(bucket_s.max(1)).max(1) as usize
}

/// The name of a session's outcome, as the JSON summaries spell it.
pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Running => "running",
        Outcome::Completed => "completed",
        Outcome::Failed => "failed",
    }
}

/// The `trigger/mode` key of a session (`poll/Machine`).
pub fn trigger_mode(s: &SessionSummary) -> String {
    format!("{}/{}", s.trigger.as_str(), s.mode.as_str())
}

impl Report {
    /// An empty report of the run `meta` describes.
    pub fn new(meta: RunMeta) -> Report {
        let (index, shard_count) = match meta.shard {
            Some((i, n)) if n > 1 => (i, n),
            _ => (0, 1),
        };
        let bucket_s = bucket_width(meta.duration_s);
        Report {
            format: FORMAT.to_string(),
            run: Run {
                seed: meta.seed,
                start: meta.start,
                duration_s: meta.duration_s,
                clock: meta.clock,
                target: meta.target,
                mdmsim_version: meta.mdmsim_version,
                shard_count,
                resumed_from: None,
            },
            shards: vec![Shard { index, devices: meta.devices, wall_s: 0.0, cpu_s: 0.0, peak_rss_bytes: 0 }],
            bucket_s,
            totals: Totals::default(),
            latency: Latencies {
                session: Hist::phase(),
                message: Hist::phase(),
                enroll: Hist::phase(),
                session_by: BTreeMap::new(),
            },
            series: (0..bucket_count(meta.duration_s, bucket_s)).map(|_| Bucket::new()).collect(),
        }
    }

    /// Says that the run went on with a fleet kept from an earlier run, from `at` (its start).
    pub fn resumed_from(&mut self, at: DateTime<Utc>) {
        self.run.resumed_from = Some(at);
    }

    /// Devices in all the shards the report covers.
    pub fn devices(&self) -> u64 {
        self.shards.iter().map(|s| s.devices).sum()
    }

    /// The instant bucket `k` starts at.
    pub fn bucket_start(&self, k: usize) -> DateTime<Utc> {
        self.run.start + chrono::Duration::seconds((k as u64 * self.bucket_s) as i64)
    }

    fn bucket(&mut self, at: DateTime<Utc>) -> &mut Bucket {
        let secs = (at - self.run.start).num_seconds().max(0) as u64;
        let k = ((secs / self.bucket_s.max(1)) as usize).min(self.series.len() - 1);
        &mut self.series[k]
    }

    /// One thing that happened to a device, as the engine reports it. A session counts in the
    /// bucket of its start (`summary.started_at`); its latency is `latency_us` (the runner's
    /// measure from the instant the session was due), or the session's own wall time when the
    /// runner has none. Missed sessions, unenrollments and tree changes are counted.
    pub fn record(&mut self, record: &Record, latency_us: Option<u64>) {
        match record {
            Record::Session { summary, .. } => self.session(summary, latency_us.unwrap_or(summary.wall_us)),
            Record::Missed { at, trigger, .. } => {
                self.totals.missed += 1;
                *self.totals.missed_by.entry(trigger.as_str().to_string()).or_default() += 1;
                self.bucket(*at).missed += 1;
            }
            Record::Unenrolled { at, .. } => {
                self.totals.unenrolled += 1;
                self.bucket(*at).unenrolled += 1;
            }
            Record::Changed { .. } => self.totals.changed += 1,
        }
    }

    fn session(&mut self, s: &SessionSummary, latency_us: u64) {
        let t = &mut self.totals;
        t.sessions += 1;
        let failed = s.outcome == Outcome::Failed;
        match s.outcome {
            Outcome::Completed => t.completed += 1,
            Outcome::Failed => {
                t.failed += 1;
                // As the exit codes count them: a failure without a recorded fault is the
                // server's protocol.
                match s.fault.unwrap_or(Fault::Protocol) {
                    Fault::Unreachable => t.failed_unreachable += 1,
                    Fault::Protocol => t.failed_protocol += 1,
                }
            }
            Outcome::Running => {}
        }
        let key = trigger_mode(s);
        t.messages_sent += u64::from(s.messages_sent);
        t.messages_received += u64::from(s.messages_received);
        t.throttled += u64::from(s.throttled);
        for (code, n) in &s.statuses_sent {
            *t.statuses_sent.entry(*code).or_default() += u64::from(*n);
        }
        for (code, n) in &s.statuses_received {
            *t.statuses_received.entry(*code).or_default() += u64::from(*n);
        }
        for f in &s.findings {
            match t.findings.get_mut(&f.what) {
                Some(n) => *n += 1,
                None => {
                    t.findings.insert(f.what.clone(), 1);
                }
            }
        }
        self.latency.session.record(latency_us);
        match self.latency.session_by.get_mut(&key) {
            Some(h) => h.record(latency_us),
            None => {
                let mut h = Hist::fine();
                h.record(latency_us);
                self.latency.session_by.insert(key.clone(), h);
            }
        }
        *self.totals.sessions_by.entry(key).or_default() += 1;
        let b = self.bucket(s.started_at);
        b.sessions += 1;
        match s.outcome {
            Outcome::Completed => b.completed += 1,
            _ if failed => b.failed += 1,
            _ => {}
        }
        b.latency.record(latency_us);
    }

    /// One HTTP exchange (a SyncML message and its answer, or a download) that took
    /// `latency_us`.
    pub fn message(&mut self, at: DateTime<Utc>, latency_us: u64) {
        self.totals.messages += 1;
        self.latency.message.record(latency_us);
        self.bucket(at).messages += 1;
    }

    /// One enrollment that took `latency_us`; `error_class` names why it failed (it counts in
    /// `enroll_errors`, not in the errors of [`Report::error`]).
    pub fn enrollment(&mut self, at: DateTime<Utc>, latency_us: u64, error_class: Option<&str>) {
        self.totals.enrollments += 1;
        self.latency.enroll.record(latency_us);
        if let Some(class) = error_class {
            self.totals.enrollments_failed += 1;
            add_one(&mut self.totals.enroll_errors, class);
        }
        self.bucket(at).enrollments += 1;
    }

    /// One error of `class` (`connect`, `timeout`, `http-5xx`, `http-4xx`, `protocol`, `tls`...),
    /// counted over the run and in the bucket of `at`.
    pub fn error(&mut self, at: DateTime<Utc>, class: &str) {
        add_one(&mut self.totals.errors, class);
        add_one(&mut self.bucket(at).errors, class);
    }

    /// What the process cost: real and CPU seconds, peak resident memory (for the report of one
    /// process: it is written on its shard).
    pub fn set_resources(&mut self, wall_s: f64, cpu_s: f64, peak_rss_bytes: u64) {
        if let Some(s) = self.shards.first_mut() {
            s.wall_s = wall_s;
            s.cpu_s = cpu_s;
            s.peak_rss_bytes = peak_rss_bytes;
        }
    }

    /// Adds `other`, a report of other shards of the same run: counts and histograms add, so
    /// the result is what one process running all those shards would have written. Refuses
    /// (and leaves `self` as it was) reports of another run (seed, start, duration, clock,
    /// target, version, shard count or bucket width differ) and a shard in both.
    pub fn merge(&mut self, other: &Report) -> Result<(), MergeError> {
        self.same_run(other)?;
        if let Some(s) = other.shards.iter().find(|s| self.shards.iter().any(|o| o.index == s.index)) {
            return Err(MergeError::DuplicateShard { index: s.index, count: self.run.shard_count });
        }
        let mut merged = self.clone();
        merged.add(other)?;
        *self = merged;
        Ok(())
    }

    fn same_run(&self, other: &Report) -> Result<(), MergeError> {
        fn differ<T: PartialEq + fmt::Display>(field: &'static str, a: &T, b: &T) -> Result<(), MergeError> {
            if a == b {
                Ok(())
            } else {
                Err(MergeError::Different { field, ours: a.to_string(), theirs: b.to_string() })
            }
        }
        let (a, b) = (&self.run, &other.run);
        differ("format", &self.format, &other.format)?;
        differ("seed", &a.seed, &b.seed)?;
        differ("start", &a.start.to_rfc3339(), &b.start.to_rfc3339())?;
        differ("duration_s", &a.duration_s, &b.duration_s)?;
        differ("bucket_s", &self.bucket_s, &other.bucket_s)?;
        differ("series length", &self.series.len(), &other.series.len())?;
        differ("clock", &a.clock, &b.clock)?;
        differ("target", &a.target, &b.target)?;
        differ("mdmsim_version", &a.mdmsim_version, &b.mdmsim_version)?;
        differ("shard_count", &a.shard_count, &b.shard_count)
    }

    fn add(&mut self, other: &Report) -> Result<(), MergeError> {
        self.shards.extend(other.shards.iter().cloned());
        self.shards.sort_by_key(|s| s.index);
        let (t, o) = (&mut self.totals, &other.totals);
        t.sessions += o.sessions;
        t.completed += o.completed;
        t.failed += o.failed;
        t.failed_unreachable += o.failed_unreachable;
        t.failed_protocol += o.failed_protocol;
        t.missed += o.missed;
        t.unenrolled += o.unenrolled;
        t.changed += o.changed;
        t.messages += o.messages;
        t.messages_sent += o.messages_sent;
        t.messages_received += o.messages_received;
        t.throttled += o.throttled;
        t.enrollments += o.enrollments;
        t.enrollments_failed += o.enrollments_failed;
        add_map(&mut t.sessions_by, &o.sessions_by);
        add_map(&mut t.missed_by, &o.missed_by);
        add_map(&mut t.errors, &o.errors);
        add_map(&mut t.enroll_errors, &o.enroll_errors);
        add_map(&mut t.statuses_sent, &o.statuses_sent);
        add_map(&mut t.statuses_received, &o.statuses_received);
        add_map(&mut t.findings, &o.findings);
        let (l, ol) = (&mut self.latency, &other.latency);
        l.session.add(&ol.session, "session")?;
        l.message.add(&ol.message, "message")?;
        l.enroll.add(&ol.enroll, "enroll")?;
        for (key, h) in &ol.session_by {
            match l.session_by.get_mut(key) {
                Some(mine) => mine.add(h, key)?,
                None => {
                    l.session_by.insert(key.clone(), h.clone());
                }
            }
        }
        for (k, (b, ob)) in self.series.iter_mut().zip(&other.series).enumerate() {
            b.sessions += ob.sessions;
            b.completed += ob.completed;
            b.failed += ob.failed;
            b.missed += ob.missed;
            b.unenrolled += ob.unenrolled;
            b.messages += ob.messages;
            b.enrollments += ob.enrollments;
            add_map(&mut b.errors, &ob.errors);
            b.latency.add(&ob.latency, &format!("of bucket {k}"))?;
        }
        Ok(())
    }

    /// The report as pretty JSON (what `mdmsim fleet --report` and `report merge` write).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// Reads a report written by [`Report::to_json`], checking that its parts agree.
    pub fn from_json(text: &str) -> Result<Report, ReadError> {
        #[derive(Deserialize)]
        struct Head {
            format: Option<serde_json::Value>,
        }
        let syntax = |e: serde_json::Error| {
            let message = e.to_string();
            let message = match message.rfind(" at line ") {
                Some(k) => message[..k].to_string(),
                None => message,
            };
            ReadError::Syntax { line: e.line(), column: e.column(), message }
        };
        let head: Head = serde_json::from_str(text).map_err(syntax)?;
        match head.format {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            Some(f) => {
                return Err(ReadError::NotAReport(format!(
                    "a report of format {f}; this mdmsim reads {FORMAT} (written by the same version)"
                )));
            }
            None => return Err(ReadError::NotAReport("not an mdmsim fleet report (it has no \"format\")".to_string())),
        }
        let report: Report = serde_json::from_str(text).map_err(syntax)?;
        report.check().map_err(ReadError::Inconsistent)?;
        Ok(report)
    }

    fn check(&self) -> Result<(), String> {
        let n = self.run.shard_count;
        if n == 0 {
            return Err("shard_count is 0".to_string());
        }
        if self.shards.is_empty() {
            return Err("it covers no shard".to_string());
        }
        for (k, s) in self.shards.iter().enumerate() {
            if s.index >= n {
                return Err(format!("shard index {} is not below shard_count {n}", s.index));
            }
            if self.shards[..k].iter().any(|o| o.index == s.index) {
                return Err(format!("shard {} is listed twice", s.index));
            }
        }
        if self.bucket_s == 0 {
            return Err("bucket_s is 0".to_string());
        }
        let want = bucket_count(self.run.duration_s, self.bucket_s);
        if self.series.len() != want {
            return Err(format!(
                "{} buckets of {} s for a duration of {} s (expected {want})",
                self.series.len(),
                self.bucket_s,
                self.run.duration_s
            ));
        }
        let t = &self.totals;
        if t.completed + t.failed > t.sessions || t.failed_unreachable + t.failed_protocol != t.failed {
            return Err("the session counts do not add up".to_string());
        }
        if self.latency.session.0.len() != t.sessions {
            return Err(format!("{} session latencies for {} sessions", self.latency.session.0.len(), t.sessions));
        }
        Ok(())
    }

    /// The figures people look at first (what `mdmsim report summary` prints).
    pub fn summary(&self) -> Summary {
        let t = &self.totals;
        let shards = if self.run.shard_count <= 1 {
            "whole fleet".to_string()
        } else {
            format!(
                "shard{} {} of {}",
                if self.shards.len() == 1 { "" } else { "s" },
                self.shards.iter().map(|s| s.index.to_string()).collect::<Vec<_>>().join(", "),
                self.run.shard_count
            )
        };
        let mut latency_ms = BTreeMap::new();
        latency_ms.insert("session".to_string(), Percentiles::of(&self.latency.session.0));
        latency_ms.insert("message".to_string(), Percentiles::of(&self.latency.message.0));
        latency_ms.insert("enroll".to_string(), Percentiles::of(&self.latency.enroll.0));
        let peak = self.series.iter().map(|b| b.sessions).max().unwrap_or(0);
        Summary {
            seed: self.run.seed,
            devices: self.devices(),
            shards,
            start: self.run.start,
            resumed_from: self.run.resumed_from,
            duration_s: self.run.duration_s,
            clock: self.run.clock.clone(),
            target: self.run.target.clone(),
            totals: t.clone(),
            sessions_per_s: t.sessions as f64 / self.run.duration_s.max(1) as f64,
            peak_sessions_per_s: peak as f64 / self.bucket_s as f64,
            wall_s: self.shards.iter().map(|s| s.wall_s).fold(0.0, f64::max),
            cpu_s: self.shards.iter().map(|s| s.cpu_s).sum(),
            peak_rss_bytes: self.shards.iter().map(|s| s.peak_rss_bytes).max().unwrap_or(0),
            latency_ms,
            latency_by_ms: self.latency.session_by.iter().map(|(k, h)| (k.clone(), Percentiles::of(&h.0))).collect(),
        }
    }

    /// The report as one self-contained HTML page ([`super::html::render`]).
    pub fn html(&self) -> String {
        super::html::render(self)
    }
}

fn add_one(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

fn add_map<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, n) in from {
        *into.entry(k.clone()).or_default() += n;
    }
}

/// Latency percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many latencies were measured (the percentiles are 0 when none was).
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// The summary of a report: the run, its counts and its latency percentiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub devices: u64,
    /// `whole fleet`, or the shard indexes and their count (`shards 0, 1 of 4`).
    pub shards: String,
    pub start: DateTime<Utc>,
    /// The run went on with a fleet kept from an earlier run (`--state`), from this instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<DateTime<Utc>>,
    pub duration_s: u64,
    pub clock: String,
    pub target: String,
    /// The run's counts (as the report's `totals`).
    #[serde(flatten)]
    pub totals: Totals,
    /// Sessions per second of simulated time, over the whole run.
    pub sessions_per_s: f64,
    /// The same in the busiest bucket.
    pub peak_sessions_per_s: f64,
    /// Real seconds of the longest shard (shards run side by side).
    pub wall_s: f64,
    /// CPU seconds of all shards.
    pub cpu_s: f64,
    /// The peak resident memory of the largest shard process.
    pub peak_rss_bytes: u64,
    /// Percentiles of `session`, `message` and `enroll` latency.
    pub latency_ms: BTreeMap<String, Percentiles>,
    /// Session latency percentiles by `trigger/mode`.
    pub latency_by_ms: BTreeMap<String, Percentiles>,
}

impl fmt::Display for Summary {
    /// The text form: one fact per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn counts<K: fmt::Display>(m: &BTreeMap<K, u64>) -> String {
            if m.is_empty() {
                return "none".to_string();
            }
            m.iter().map(|(k, n)| format!("{k} x{}", thousands(*n))).collect::<Vec<_>>().join(", ")
        }
        writeln!(
            f,
            "run:        seed {}, {} devices ({}), {} from {}, {} clock, target {}",
            self.seed,
            thousands(self.devices),
            self.shards,
            duration(self.duration_s),
            self.start.format("%Y-%m-%d %H:%M:%S UTC"),
            self.clock,
            self.target
        )?;
        if let Some(t) = self.resumed_from {
            writeln!(
                f,
                "resumed:    the fleet kept in its state directory, taken up at {}",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            )?;
        }
        writeln!(
            f,
            "sessions:   {} ({} completed, {} failed: {} unreachable, {} protocol), {} missed",
            thousands(self.totals.sessions),
            thousands(self.totals.completed),
            thousands(self.totals.failed),
            thousands(self.totals.failed_unreachable),
            thousands(self.totals.failed_protocol),
            thousands(self.totals.missed)
        )?;
        writeln!(
            f,
            "rate:       {:.2} sessions/s on average, {:.2}/s at the peak (simulated time)",
            self.sessions_per_s, self.peak_sessions_per_s
        )?;
        writeln!(f, "by:         {}", counts(&self.totals.sessions_by))?;
        writeln!(
            f,
            "messages:   {} exchanges; {} sent, {} received, {} throttled",
            thousands(self.totals.messages),
            thousands(self.totals.messages_sent),
            thousands(self.totals.messages_received),
            thousands(self.totals.throttled)
        )?;
        if self.totals.enrollments > 0 {
            writeln!(
                f,
                "enrollment: {} ({} failed: {})",
                thousands(self.totals.enrollments),
                thousands(self.totals.enrollments_failed),
                counts(&self.totals.enroll_errors)
            )?;
        }
        for (phase, p) in &self.latency_ms {
            if p.count > 0 {
                writeln!(
                    f,
                    "latency:    {phase:<8} p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
                    p.p50, p.p90, p.p99, p.p999, p.max
                )?;
            }
        }
        writeln!(f, "errors:     {}", counts(&self.totals.errors))?;
        writeln!(f, "statuses:   sent {}", counts(&self.totals.statuses_sent))?;
        writeln!(f, "            received {}", counts(&self.totals.statuses_received))?;
        writeln!(f, "findings:   {}", counts(&self.totals.findings))?;
        write!(
            f,
            "resources:  {:.1} s wall, {:.1} s CPU, peak RSS {:.1} MiB",
            self.wall_s,
            self.cpu_s,
            self.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        )
    }
}

/// `n` with thousands separators (`12,345`).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in seconds for people (`1 d 2 h`, `90 min`, `45 s`).
pub fn duration(s: u64) -> String {
    match s {
        s if s >= 86_400 && s.is_multiple_of(3600) => match (s / 86_400, s % 86_400 / 3600) {
            (d, 0) => format!("{d} d"),
            (d, h) => format!("{d} d {h} h"),
        },
        s if s >= 7200 && s.is_multiple_of(60) => match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        s if s >= 60 && s.is_multiple_of(60) => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// An HdrHistogram of microseconds, written in JSON as the base64 of its V2 compressed
/// serialization (the HdrHistogram interchange format), so that it reads back exactly.
#[derive(Debug, Clone)]
pub struct Hist(pub Histogram<u64>);

impl Hist {
    fn with_digits(digits: u8) -> Hist {
        Hist(Histogram::new_with_bounds(1, MAX_LATENCY_US, digits).expect("valid histogram bounds"))
    }

    /// A whole-run histogram of a phase (3 significant digits).
    pub fn phase() -> Hist {
        Hist::with_digits(PHASE_DIGITS)
    }

    /// A histogram of one trigger and mode, or of one bucket (2 significant digits).
    pub fn fine() -> Hist {
        Hist::with_digits(FINE_DIGITS)
    }

    /// Counts one latency (longer than [`MAX_LATENCY_US`] counts as that).
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us);
    }

    fn add(&mut self, other: &Hist, what: &str) -> Result<(), MergeError> {
        self.0.add(&other.0).map_err(|e| MergeError::Histogram { what: what.to_string(), message: format!("{e:?}") })
    }
}

impl PartialEq for Hist {
    fn eq(&self, other: &Hist) -> bool {
        self.0 == other.0 && self.0.high() == other.0.high()
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut bytes)
            .map_err(|e| serde::ser::Error::custom(format!("{e:?}")))?;
        s.serialize_str(&B64.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hist, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(d)?;
        let bytes = B64.decode(text.as_bytes()).map_err(|e| D::Error::custom(format!("histogram: not base64: {e}")))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| D::Error::custom(format!("histogram: not an HdrHistogram V2 serialization: {e:?}")))?;
        if h.low() != 1 || h.high() != MAX_LATENCY_US || !(1..=PHASE_DIGITS).contains(&h.sigfig()) {
            return Err(D::Error::custom(format!(
                "histogram: bounds 1..{MAX_LATENCY_US} us with at most {PHASE_DIGITS} digits expected, found {}..{} with {}",
                h.low(),
                h.high(),
                h.sigfig()
            )));
        }
        Ok(Hist(h))
    }
}

/// What a run shows while it goes: on a terminal, a progress bar over the simulated duration
/// with the figures beside it; elsewhere (a log, CI), one line every `every` seconds on
/// standard error: `12,345 sessions, 210/s, p99 35 ms, 3 errors, 1,024 in flight`.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    out: Option<Box<dyn Write + Send>>,
    every: Duration,
    last: Instant,
    last_sessions: u64,
    started: Instant,
}

impl Progress {
    /// Progress of the run of `report`, on standard error: a bar when it is a terminal, else a
    /// line every `every`.
    pub fn new(report: &Report, every: Duration) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(report.run.duration_s);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {percent:>3}% of simulated time  {msg}")
                    .expect("a valid progress template"),
            );
            Progress::with(Some(bar), None, every)
        } else {
            Progress::to_writer(Box::new(std::io::stderr()), every)
        }
    }

    /// Progress as lines written to `out` every `every` (never a bar).
    pub fn to_writer(out: Box<dyn Write + Send>, every: Duration) -> Progress {
        Progress::with(None, Some(out), every)
    }

    fn with(bar: Option<indicatif::ProgressBar>, out: Option<Box<dyn Write + Send>>, every: Duration) -> Progress {
        let now = Instant::now();
        Progress { bar, out, every, last: now, last_sessions: 0, started: now }
    }

    /// Called as the run goes (as often as convenient: it shows something only when due);
    /// `now` is the run's simulated time, `in_flight` the sessions under way.
    pub fn update(&mut self, report: &Report, now: DateTime<Utc>, in_flight: u64) {
        let elapsed = self.last.elapsed();
        if let Some(bar) = self.bar.clone() {
            bar.set_position((now - report.run.start).num_seconds().clamp(0, report.run.duration_s as i64) as u64);
            if elapsed >= Duration::from_millis(250) {
                let rate = self.rate(report, elapsed);
                bar.set_message(Progress::line(report, rate, in_flight));
                self.last = Instant::now();
            }
        } else if elapsed >= self.every {
            let rate = self.rate(report, elapsed);
            self.print(&Progress::line(report, rate, in_flight));
            self.last = Instant::now();
        }
    }

    /// The run ended: clears the bar, or writes a last line with the rate over the whole run.
    pub fn finish(&mut self, report: &Report) {
        let rate = report.totals.sessions as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.print(&Progress::line(report, rate, 0));
    }

    fn rate(&mut self, report: &Report, elapsed: Duration) -> f64 {
        let sessions = report.totals.sessions;
        let rate = (sessions - self.last_sessions.min(sessions)) as f64 / elapsed.as_secs_f64().max(1e-9);
        self.last_sessions = sessions;
        rate
    }

    fn print(&mut self, line: &str) {
        if let Some(out) = &mut self.out {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// One progress line: sessions so far (and how many failed, when some did), `rate` per real
    /// second, p99 session latency, errors (of [`Report::error`] and failed enrollments),
    /// sessions in flight.
    pub fn line(report: &Report, rate: f64, in_flight: u64) -> String {
        let t = &report.totals;
        let errors: u64 = t.errors.values().sum::<u64>() + t.enrollments_failed;
        let failed = if t.failed > 0 { format!(" ({} failed)", thousands(t.failed)) } else { String::new() };
        let p99 = if report.latency.session.0.is_empty() {
            "-".to_string()
        } else {
            format_ms(report.latency.session.0.value_at_quantile(0.99) as f64 / 1000.0)
        };
        format!(
            "{} sessions{failed}, {}/s, p99 {p99}, {} error{}, {} in flight",
            thousands(t.sessions),
            thousands(rate.round() as u64),
            thousands(errors),
            if errors == 1 { "" } else { "s" },
            thousands(in_flight)
        )
    }
}

/// Milliseconds for people: `0.42 ms`, `35 ms`, `1.2 s`.
pub fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Mode, Trigger};

    fn meta(shard: Option<(u32, u32)>) -> RunMeta {
        RunMeta {
            seed: 7,
            devices: 10,
            shard,
            start: "2025-03-03T00:00:00Z".parse().unwrap(),
            duration_s: 3600,
            clock: "virtual".to_string(),
            target: "in-process".to_string(),
            mdmsim_version: "0.1.0".to_string(),
        }
    }

    fn session(minute: i64, outcome: Outcome, fault: Option<Fault>) -> Record {
        let start: DateTime<Utc> = "2025-03-03T00:00:00Z".parse().unwrap();
        let at = start + chrono::Duration::minutes(minute);
        let mut s = SessionSummary::new("D1", "1", Mode::Machine, Trigger::Poll, 1201, at);
        s.outcome = outcome;
        s.fault = fault;
        s.messages_sent = 2;
        s.statuses_sent.insert(200, 3);
        Record::Session { device: "D1".into(), at, summary: Box::new(s) }
    }

    #[test]
    fn bucket_widths_follow_the_duration() {
        assert_eq!(bucket_width(3600), 60);
        assert_eq!(bucket_width(7200), 60);
        assert_eq!(bucket_width(7201), 300);
        assert_eq!(bucket_width(86_400), 300);
        assert_eq!(bucket_width(7 * 86_400), 3600);
        assert_eq!(bucket_width(365 * 86_400), 86_400);
        assert_eq!(bucket_width(5000 * 86_400), 5 * 86_400);
        assert_eq!(Report::new(meta(None)).series.len(), 60);
    }

    #[test]
    fn sessions_count_in_totals_buckets_and_histograms() {
        let mut r = Report::new(meta(None));
        r.record(&session(0, Outcome::Completed, None), Some(1500));
        r.record(&session(0, Outcome::Failed, Some(Fault::Unreachable)), Some(30_000));
        r.record(&session(59, Outcome::Failed, None), None);
        r.record(&session(600, Outcome::Completed, None), Some(10));
        r.error(r.run.start, "timeout");
        r.error(r.run.start + chrono::Duration::minutes(5), "timeout");
        assert_eq!((r.totals.sessions, r.totals.completed, r.totals.failed), (4, 2, 2));
        assert_eq!((r.totals.failed_unreachable, r.totals.failed_protocol), (1, 1));
        assert_eq!(r.totals.sessions_by["poll/Machine"], 4);
        assert_eq!(r.totals.statuses_sent[&200], 12);
        assert_eq!(r.totals.messages_sent, 8);
        assert_eq!(r.series[0].sessions, 2);
        assert_eq!(r.series[59].sessions, 2, "after the end: the last bucket");
        assert_eq!(r.series[0].errors["timeout"], 1);
        assert_eq!(r.totals.errors["timeout"], 2);
        assert_eq!(r.latency.session.0.len(), 4);
        assert_eq!(r.latency.session.0.max(), r.latency.session.0.highest_equivalent(30_000));
    }

    #[test]
    fn a_report_reads_back_exactly() {
        let mut r = Report::new(meta(Some((1, 3))));
        for k in 0..200 {
            r.record(&session(k % 60, Outcome::Completed, None), Some(1000 + k as u64 * 37));
            r.message(r.run.start, 400 + k as u64);
        }
        r.set_resources(1.5, 0.7, 1 << 20);
        let back = Report::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.summary(), r.summary());
        assert_eq!(back.shards[0].index, 1);
    }

    #[test]
    fn merge_refuses_other_runs_and_duplicate_shards() {
        let a = Report::new(meta(Some((0, 2))));
        let mut other = meta(Some((1, 2)));
        other.seed = 8;
        let mut m = a.clone();
        let e = m.merge(&Report::new(other)).unwrap_err();
        assert_eq!(e.to_string(), "not the same run: seed differs (7 and 8)");
        assert_eq!(m, a, "a refused merge changes nothing");
        let e = m.merge(&a).unwrap_err();
        assert_eq!(e.to_string(), "shard 0/2 is in both reports");
        let mut whole = Report::new(meta(None));
        let e = whole.merge(&Report::new(meta(None))).unwrap_err();
        assert_eq!(e.to_string(), "the whole fleet (no shards) is in both reports");
        let mut longer = meta(Some((1, 2)));
        longer.duration_s = 86_400;
        assert!(matches!(m.merge(&Report::new(longer)), Err(MergeError::Different { field: "duration_s", .. })));
    }

    #[test]
    fn reading_names_what_is_wrong() {
        let e = Report::from_json("{\n  \"format\": 3,").unwrap_err();
        assert!(matches!(e, ReadError::Syntax { line: 2, .. }), "{e}");
        let e = Report::from_json("{\"device_id\": \"x\"}").unwrap_err();
        assert_eq!(e.to_string(), "not an mdmsim fleet report (it has no \"format\")");
        let e = Report::from_json("{\"format\": \"mdmsim-fleet-report/9\"}").unwrap_err();
        assert!(e.to_string().starts_with("a report of format \"mdmsim-fleet-report/9\""), "{e}");
        let mut r = Report::new(meta(None));
        r.totals.sessions = 3;
        let e = Report::from_json(&r.to_json()).unwrap_err();
        assert_eq!(e.to_string(), "inconsistent report: 0 session latencies for 3 sessions");
        let text = Report::new(meta(None)).to_json().replacen("\"session\": \"", "\"session\": \"AAAA", 1);
        assert!(matches!(Report::from_json(&text), Err(ReadError::Syntax { .. })));
    }

    #[test]
    fn progress_lines_say_the_figures() {
        let mut r = Report::new(meta(None));
        for _ in 0..12_345 {
            r.record(&session(1, Outcome::Completed, None), Some(35_000));
        }
        r.error(r.run.start, "timeout");
        r.error(r.run.start, "connect");
        r.enrollment(r.run.start, 1000, Some("http-5xx"));
        assert_eq!(Progress::line(&r, 210.2, 1024), "12,345 sessions, 210/s, p99 35 ms, 3 errors, 1,024 in flight");
        r.record(&session(1, Outcome::Failed, None), Some(1000));
        r.enrollment(r.run.start, 1000, None);
        assert_eq!(Progress::line(&r, 0.4, 1), "12,346 sessions (1 failed), 0/s, p99 35 ms, 3 errors, 1 in flight");
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut p = Progress::to_writer(Box::new(Shared(buf.clone())), Duration::ZERO);
        p.update(&r, r.run.start, 5);
        p.finish(&r);
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("12,346 sessions (1 failed), ") && lines[0].ends_with(", 5 in flight"), "{text}");
        assert!(lines[1].ends_with(", 0 in flight"), "{text}");
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration(86_400), "1 d");
        assert_eq!(duration(93_600), "1 d 2 h");
        assert_eq!(duration(3600), "60 min");
        assert_eq!(duration(9000), "2 h 30 min");
        assert_eq!(duration(45), "45 s");
        assert_eq!(format_ms(0.423), "0.42 ms");
        assert_eq!(format_ms(35.2), "35 ms");
        assert_eq!(format_ms(1234.0), "1.2 s");
    }
}
