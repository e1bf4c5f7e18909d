//! `mdmsim fleet`: many devices in one process against a server (or the reference server in the
//! same process), each on its own days, for load: identities and days from the seed and the
//! device's index, one shard of the fleet per process when asked (`--shard i/n`), a summary,
//! a JSON report that merges exactly with other shards', an HTML report and live metrics.
//!
//! The run goes day by day in simulated time: at each UTC midnight every device of the shard
//! is given that day's events (logons, locks, reboots, network changes...), so that a device
//! holds one day of events at most whatever the duration; between those the fleet loop
//! (`runner::fleet`) starts each device when its schedule says, at most `--max-in-flight` at
//! once. A device holds its engine and its tree and nothing else: no HTTP client of its own,
//! no record of past sessions (they are counted and forgotten), no change log (no store keeps
//! the fleet's devices) unless `--state DIR` keeps the fleet between runs
//! ([`super::fleet_state`]).

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use clap::{Args, ValueEnum};
use serde::Serialize;

use mdmsim::device::engine::{Response, Transmit};
use mdmsim::fleet::metrics::Metrics;
use mdmsim::fleet::report::{Progress, Report, RunMeta, Summary};
use mdmsim::runner::exchange::{Exchange, Exchanging, HttpExchange, InProcess};
use mdmsim::runner::fleet::{Fleet, FleetOptions, Member, Record};
use mdmsim::runner::http::Transport;
use mdmsim::runner::keys::KeyPool;
use mdmsim::runner::mtls::{DeviceExchange, SessionTls, TlsIdentity};
use mdmsim::schedule::device_seed;
use mdmsim::schedule::{ClockKind, parse_duration, parse_time};
use mdmsim::server::config::{AuthMode, Config};

use super::exit::{Failures, PROTOCOL, STATE, UNREACHABLE, USAGE, fail};
use super::fleet_state::Target;

#[derive(Args)]
pub struct FleetArgs {
    /// How many devices the whole fleet has (all shards together).
    #[arg(long, value_name = "N", required_unless_present = "state")]
    devices: Option<u64>,
    /// Seed of the fleet: identities, templates, days. The same seed gives the same fleet.
    /// [default: 1]
    #[arg(long)]
    seed: Option<u64>,
    /// Run the reference server in this process and call it directly, without sockets (the
    /// benchmark mode).
    #[arg(long, conflicts_with = "server")]
    in_process: bool,
    /// The management URL of pre-provisioned devices (a server that knows them by their
    /// DeviceID, such as `mdmsim server --auth none`).
    #[arg(long, value_name = "URL", required_unless_present_any = ["in_process", "discovery", "state"])]
    server: Option<String>,
    #[command(flatten)]
    enroll: super::fleet_enroll::EnrollArgs,
    /// The template mix: templates with weights, identity and behaviour knobs (TOML; see
    /// docs/fleet-model.md and fixtures/fleet/). Default: 60% Windows 11 laptops, 40% Windows 10
    /// desktops, office hours in 19 time zones.
    #[arg(long, value_name = "MIX.toml")]
    templates: Option<std::path::PathBuf>,
    /// The DMClient provider ID of the devices with --server (the server's PROVIDER-ID).
    /// [default: mdmsim]
    #[arg(long, value_name = "ID")]
    provider_id: Option<String>,
    /// How simulated time runs: `virtual` jumps from one deadline to the next (as fast as the
    /// server answers), `real` is wall time, `scaled` is wall time times --speed.
    #[arg(long, value_enum, default_value = "virtual")]
    clock: FleetClock,
    /// Simulated seconds per real second with --clock scaled.
    #[arg(long, value_name = "X")]
    speed: Option<f64>,
    /// The simulated start (RFC 3339); the default is now with a real or scaled clock, and the
    /// next Monday 00:00 UTC with a virtual one.
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// Simulated time to run (30m, 36h, 1d, 7d).
    #[arg(long, default_value = "1d")]
    duration: String,
    /// Spread the devices' first sessions over this much simulated time (device i of N starts
    /// at i/N of it), instead of all at the start.
    #[arg(long, value_name = "D", default_value = "0s")]
    ramp_up: String,
    /// Devices at work (in a session) at the same time; the others wait for their turn and
    /// their lateness counts in the latency.
    #[arg(long, value_name = "C", default_value_t = 256)]
    max_in_flight: usize,
    /// Stop after this many sessions in all (a bound for every run).
    #[arg(long, default_value_t = 100_000_000)]
    max_sessions: u64,
    /// Run shard i of n (0 ≤ i < n): the devices whose index modulo n is i. Shards of one
    /// fleet (same --devices and --seed) are disjoint and together are the whole fleet.
    /// [default: 0/1]
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Keep the fleet in DIR, so that the next run with the same DIR continues it: the same
    /// devices (SessionID counters, trees, apps) from the simulated instant this one reached,
    /// for --duration more. A new or empty DIR starts a fleet; later runs take --devices,
    /// --seed, --shard, --templates and the target from it and refuse flags that say otherwise.
    /// An enrolled fleet (--discovery) keeps its enrollments and enrolls again only the devices
    /// whose enrollment failed. One DIR per shard. See docs/fleet-model.md, "Resumable fleets".
    #[arg(long, value_name = "DIR")]
    state: Option<std::path::PathBuf>,
    /// Write the run's report here: JSON whose counts and latency histograms merge exactly
    /// with other shards' (`mdmsim report merge`).
    #[arg(long, value_name = "FILE.json")]
    report: Option<std::path::PathBuf>,
    /// Write the report as one self-contained HTML page with charts.
    #[arg(long, value_name = "FILE.html")]
    html: Option<std::path::PathBuf>,
    /// Serve live metrics for Prometheus at http://ADDR/metrics while the run goes (a
    /// loopback address, such as 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Print one JSON object with the run's figures instead of lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    http: super::HttpArgs,
}

/// `--clock`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Debug)]
#[serde(rename_all = "kebab-case")]
enum FleetClock {
    Virtual,
    Real,
    Scaled,
}

/// `--shard i/n`: device `index` belongs to the shard when `index % n == i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The indices of the shard's devices in a fleet of `devices`, in order.
    pub fn indices(&self, devices: u64) -> impl Iterator<Item = u64> + use<> {
        (u64::from(self.index)..devices).step_by(self.count as usize)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected I/N, such as 0/4"))?;
        let i: u32 = i.trim().parse().map_err(|_| format!("{s:?}: the shard index {i:?} is not a whole number"))?;
        let n: u32 = n.trim().parse().map_err(|_| format!("{s:?}: the shard count {n:?} is not a whole number"))?;
        if n == 0 {
            return Err(format!("{s:?}: the shard count must be at least 1"));
        }
        if i >= n {
            return Err(format!("{s:?}: the shard index must be below the count (0 to {})", n - 1));
        }
        Ok(Shard { index: i, count: n })
    }
}

/// Figures of this process beside the report's: the `--json` object adds them to the report's
/// summary.
#[derive(Serialize)]
struct Process {
    /// Devices of the whole fleet (all shards).
    fleet_devices: u64,
    shard: String,
    /// RSS once the devices were made, before the first session.
    rss_devices_bytes: u64,
    /// RSS when the run ended, the devices still held.
    rss_after_bytes: u64,
    /// The enrollments before the run (`--discovery`).
    #[serde(skip_serializing_if = "Option::is_none")]
    enrollment: Option<EnrollFigures>,
}

/// How the enrollments of `--discovery` went.
#[derive(Serialize, Default)]
struct EnrollFigures {
    enrolled: u64,
    /// Devices of a kept fleet (`--state`) that went on with their enrollment.
    kept: u64,
    failed: u64,
    wall_s: f64,
    per_s: f64,
    /// Keys generated (the pool's, or one per device with --unique-keys).
    keys_generated: u64,
    /// The first failures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failures: Vec<String>,
}

pub fn run(a: FleetArgs) -> anyhow::Result<ExitCode> {
    let span = parse_duration(&a.duration).map_err(|e| fail(USAGE, format!("--duration: {e}")))?;
    let ramp = parse_duration(&a.ramp_up).map_err(|e| fail(USAGE, format!("--ramp-up: {e}")))?;
    if a.devices == Some(0) {
        return Err(fail(USAGE, "--devices must be at least 1"));
    }
    if a.max_in_flight == 0 {
        return Err(fail(USAGE, "--max-in-flight must be at least 1"));
    }
    if a.speed.is_some() && a.clock != FleetClock::Scaled {
        return Err(fail(USAGE, "--speed goes with --clock scaled"));
    }
    let wall_now = Utc::now();
    let given_start =
        a.start.as_deref().map(parse_time).transpose().map_err(|e| fail(USAGE, format!("--start: {e}")))?;
    let default_start = if a.clock == FleetClock::Virtual { next_monday(wall_now) } else { wall_now };
    let plan = super::fleet_state::plan(
        super::fleet_state::Given {
            state: a.state.as_deref(),
            devices: a.devices,
            seed: a.seed,
            shard: a.shard,
            templates: a.templates.as_deref(),
            in_process: a.in_process,
            server: a.server.as_deref(),
            provider_id: a.provider_id.as_deref(),
            discovery: a.enroll.discovery.as_deref(),
            email: a.enroll.email.as_deref(),
            key_pool: a.enroll.key_pool,
            unique_keys: a.enroll.unique_keys,
            start: given_start,
        },
        default_start,
    )?;
    let enrolls = matches!(plan.target, Target::Discovery { .. });
    a.enroll.check(enrolls)?;
    // The enrolling users' credential, read once (it may come from standard input); a kept
    // fleet whose devices are all enrolled needs none.
    let auth = match enrolls && (a.enroll.secret.given() || plan.resumed_from.is_none()) {
        true => Some(a.enroll.credential()?),
        false => None,
    };
    let (devices, seed, shard, mix, start) = (plan.devices, plan.seed, plan.shard, plan.mix, plan.start);
    let mut state = plan.state;
    let end = start + span;
    let kind = match a.clock {
        FleetClock::Virtual => ClockKind::Virtual,
        FleetClock::Real => ClockKind::Real,
        FleetClock::Scaled => ClockKind::Scaled,
    };
    let mut clock = mdmsim::schedule::clock::build(kind, a.speed, Some(start), wall_now)
        .map_err(|e| fail(USAGE, format!("--clock: {e}")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("starting the async runtime: {e}")))?;
    let scratch = tempfile::tempdir().map_err(|e| fail(STATE, format!("a scratch folder: {e}")))?;
    let _guard = rt.enter();
    if let Some(s) = &mut state {
        s.open()?;
    }
    // The in-process server's clock: the fleet's simulated day (its records' times).
    let mut server_day: Option<Arc<Mutex<DateTime<Utc>>>> = None;
    // Read once (the CA file, and the warning of --insecure).
    let http = match plan.target {
        Target::InProcess => None,
        _ => Some(a.http.options()?),
    };
    let http_opts = || http.clone().unwrap_or_default();
    let (exchange, server_url, provider, target): (Arc<dyn Exchange>, String, String, String) = match &plan.target {
        Target::InProcess => {
            let dir = state.as_ref().map_or_else(|| scratch.path().to_path_buf(), |s| s.server_dir());
            let s = InProcessServer::start(&dir, seed, start)?;
            server_day = Some(s.clock);
            (s.exchange, s.url, s.provider, "in-process".to_string())
        }
        Target::Server { url, provider_id } => {
            let transport = Transport::new(http_opts()).map_err(|e| fail(USAGE, e.to_string()))?;
            (Arc::new(HttpExchange::new(Arc::new(transport))), url.clone(), provider_id.clone(), url.clone())
        }
        Target::Discovery { url, .. } => {
            // Each enrolled device has its own exchange; the fleet's is for nobody.
            let transport = Transport::new(http_opts()).map_err(|e| fail(USAGE, e.to_string()))?;
            (Arc::new(HttpExchange::new(Arc::new(transport))), String::new(), String::new(), url.clone())
        }
    };
    let population = super::fleet_population::Population::new(mix, seed, &server_url, &provider, plan.fleet_start);
    let indices: Vec<u64> = shard.indices(devices).collect();
    let report = Arc::new(Mutex::new(Report::new(RunMeta {
        seed,
        devices: indices.len() as u64,
        shard: (shard.count > 1).then_some((shard.index, shard.count)),
        start,
        duration_s: span.num_seconds().max(0) as u64,
        clock: format!("{:?}", a.clock).to_lowercase(),
        target: target.clone(),
        mdmsim_version: env!("CARGO_PKG_VERSION").to_string(),
    })));
    if let Some(t) = plan.resumed_from {
        lock(&report).resumed_from(t);
    }
    let metrics = Arc::new(Metrics::new());
    metrics.set_devices(indices.len() as u64);
    let _metrics_server = match a.metrics {
        Some(addr) => {
            let served = rt
                .block_on(mdmsim::fleet::metrics::serve(addr, Arc::clone(&metrics)))
                .map_err(|e| fail(USAGE, format!("--metrics {addr}: {e}")))?;
            super::out::warn(format_args!("metrics at {}", served.url()));
            Some(served)
        }
        None => None,
    };
    let log = Arc::new(TimedLog { seen: Mutex::new(Vec::new()), metrics: Arc::clone(&metrics) });
    let timed = Arc::new(Timed { inner: exchange, log: Arc::clone(&log) });
    // The devices, with their place in the fleet: made from the seed, kept, or enrolled.
    let mut enrollment = None;
    let mut members: Vec<Member> = Vec::with_capacity(indices.len());
    let mut placed: Vec<u64> = Vec::with_capacity(indices.len());
    // Spread over the ramp by the device's place in the whole fleet, so that shards ramp
    // together (a kept device that has had sessions goes on with its own schedule).
    let mut add = |index: u64, mut m: Member| {
        if m.engine.first_session.is_some() {
            m.engine.first_session = Some(start + ramp_offset(ramp, index, devices));
        }
        members.push(m);
        placed.push(index);
    };
    // Devices of one template share the entries their trees hold alike, however they came.
    let mut sharing = mdmsim::tree::Sharing::default();
    if let Target::Discovery { url, email, key_pool } = &plan.target {
        let pool = Arc::new(key_pool.map_or_else(KeyPool::unique, KeyPool::new));
        // A kept fleet's enrolled devices go on with their identities; the others enroll.
        let mut ready: Vec<(u64, Member, Arc<TlsIdentity>)> = Vec::new();
        let mut to_enroll = Vec::new();
        let mut roots = Vec::new();
        match &mut state {
            Some(s) => {
                s.preset_keys(&pool);
                roots = s.roots();
                for &index in &indices {
                    match s.kept_enrolled(&population, index, start)? {
                        Some((mut m, identity)) => {
                            sharing.share(population.kind(index), &mut m.engine.device.tree);
                            ready.push((index, m, identity));
                        }
                        None => to_enroll.push(index),
                    }
                }
            }
            None => to_enroll.clone_from(&indices),
        }
        let http = http_opts();
        let kept = ready.len() as u64;
        let mut figures = EnrollFigures { kept, ..EnrollFigures::default() };
        if !to_enroll.is_empty() {
            let Some(auth) = &auth else {
                return Err(fail(
                    USAGE,
                    format!(
                        "--discovery: {} of the fleet's devices are not enrolled yet; {}",
                        to_enroll.len(),
                        super::enroll::MISSING_CREDENTIAL
                    ),
                ));
            };
            let client = mdmsim::runner::enroll::http_client(http.ca_cert_pem.as_deref(), http.insecure)
                .map_err(|e| fail(e.exit_code(), e.to_string()))?;
            let plan = super::fleet_enroll::Plan {
                discovery: url,
                client,
                pool: Arc::clone(&pool),
                concurrency: a.max_in_flight,
                at: start,
            };
            let user = (email.as_deref(), auth);
            let done = rt.block_on(super::fleet_enroll::enroll_population(
                plan,
                &population,
                &to_enroll,
                user,
                (&report, &metrics),
                &mut sharing,
            ))?;
            for (index, device, identity) in done.devices {
                let mut m = Member::new(device, device_seed(seed, index), start)
                    .map_err(|e| fail(USAGE, format!("template: {e}")))?;
                match &mut state {
                    Some(s) => s.enrolled(&m, &pool, index, &identity)?,
                    // Nothing keeps these devices: their trees do not log changes for a store.
                    None => m.engine.device.tree.untracked(),
                }
                ready.push((index, m, identity));
            }
            if let Some(s) = &mut state {
                s.add_roots(&done.roots)?;
            }
            roots.extend(done.roots);
            let enrolled = ready.len() as u64 - kept;
            figures = EnrollFigures {
                enrolled,
                kept,
                failed: done.failed,
                wall_s: done.wall_s,
                per_s: enrolled as f64 / done.wall_s.max(1e-9),
                keys_generated: done.keys_generated,
                failures: done.failures,
            };
        }
        let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
        let tls = Arc::new(SessionTls::new(http, &roots).map_err(|e| fail(USAGE, e.to_string()))?);
        ready.sort_by_key(|(index, ..)| *index);
        for (index, mut m, identity) in ready {
            let own = DeviceExchange::new(Arc::clone(&tls), identity);
            m.exchange = Some(Arc::new(Timed { inner: Arc::new(own), log: Arc::clone(&log) }));
            m.engine.options.can_sign = true;
            add(index, m);
        }
        enrollment = Some(figures);
    } else {
        for &index in &indices {
            let mut m = match &mut state {
                Some(s) => s.member(&population, index, start)?,
                None => {
                    let mut m = population.member(index, start).map_err(|e| fail(USAGE, format!("template: {e}")))?;
                    // Nothing keeps these devices: their trees do not log changes for a store.
                    // Said as each is made, so that the keys it was made with are not held (and
                    // then freed among the other devices' values) until all are made.
                    m.engine.device.tree.untracked();
                    m
                }
            };
            sharing.share(population.kind(index), &mut m.engine.device.tree);
            add(index, m);
        }
    }
    let indices = placed;
    if let Some(s) = &mut state {
        s.keep(&mut members)?;
    }
    super::bench::trim_c_heap();
    let rss_devices = super::bench::rss_bytes();
    let opts = FleetOptions {
        concurrency: a.max_in_flight,
        max_sessions: a.max_sessions,
        leases: state.as_ref().and_then(|s| s.lease_keeper()),
        state_dir: state.as_ref().map(|s| s.dir().to_path_buf()),
        ..FleetOptions::default()
    };
    let registry = Arc::new(mdmsim::csp::registry());
    let mut fleet = Fleet::with_exchange(registry, Arc::clone(&timed) as Arc<dyn Exchange>, members, opts);
    let in_flight = fleet.in_flight();
    let cpu0 = super::bench::cpu_seconds();
    let wall = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut sessions = 0u64;
    let mut progress = Progress::new(&lock(&report), std::time::Duration::from_secs(10));
    let mut day = day_start(start);
    while day < end && sessions < a.max_sessions {
        let next = (day + Duration::days(1)).min(end);
        if let Some(cell) = &server_day
            && let Ok(mut t) = cell.lock()
        {
            *t = day.max(start);
        }
        fleet.update_each(|i, m| {
            let events = population.day(indices[i], day, start, end);
            if !events.is_empty() {
                m.engine.scheduler.script(events);
            }
        });
        let part = rt.block_on(fleet.run(clock.as_mut(), next, |record, device| {
            if let Some(s) = &state {
                s.record(record, device);
            }
            let latency = match record {
                Record::Session { summary, .. } => Some(summary.late_us.saturating_add(summary.wall_us)),
                _ => None,
            };
            metrics.observe(record, latency);
            let mut r = lock(&report);
            r.record(record, latency);
            // The exchanges of the sessions under way, counted at this record's time.
            let at = record_time(record);
            for (us, class) in log.take() {
                r.message(at, us);
                if let Some(class) = class {
                    r.error(at, class);
                }
            }
            let busy = in_flight.load(std::sync::atomic::Ordering::Relaxed);
            metrics.set_in_flight(busy);
            progress.update(&r, at, busy);
            if let Record::Session { summary, .. } = record
                && summary.outcome != mdmsim::session::Outcome::Completed
                && failures.len() < 1000
            {
                failures.push((**summary).clone());
            }
        }));
        sessions += part.sessions;
        day = next;
        super::bench::trim_c_heap();
        if let Some(s) = &mut state {
            s.day_done(&mut fleet, day)?;
        }
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu_s = super::bench::cpu_seconds() - cpu0;
    let rss_after = super::bench::rss_bytes();
    super::fleet_state::finish(state, fleet, day)?;
    let mut report = lock(&report).clone();
    for (us, class) in log.take() {
        report.message(end, us);
        if let Some(class) = class {
            report.error(end, class);
        }
    }
    report.set_resources(wall_s, cpu_s, super::bench::peak_rss_bytes());
    progress.finish(&report);
    if let Some(path) = &a.report {
        write_file(path, "--report", report.to_json().as_bytes())?;
    }
    if let Some(path) = &a.html {
        write_file(path, "--html", report.html().as_bytes())?;
    }
    let process = Process {
        fleet_devices: devices,
        shard: format!("{}/{}", shard.index, shard.count),
        rss_devices_bytes: rss_devices,
        rss_after_bytes: rss_after,
        enrollment,
    };
    let summary = report.summary();
    if a.json {
        let mut v = serde_json::to_value(&summary)?;
        if let (Some(o), serde_json::Value::Object(p)) = (v.as_object_mut(), serde_json::to_value(&process)?) {
            o.extend(p);
        }
        super::out::line(serde_json::to_string(&v)?);
    } else {
        print_lines(&summary, &process);
    }
    if let Some(f) = Failures::of(failures.iter()) {
        return Err(f.error());
    }
    match &process.enrollment {
        Some(e) if e.failed > 0 => {
            let unreachable = summary.totals.enroll_errors.keys().all(|class| class == "unreachable");
            let first = e.failures.first().map(String::as_str).unwrap_or_default();
            Err(fail(
                if unreachable { UNREACHABLE } else { PROTOCOL },
                format!("{} of {} enrollments failed; the first: {first}", e.failed, e.failed + e.enrolled),
            ))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The simulated instant of a record.
fn record_time(r: &Record) -> DateTime<Utc> {
    match r {
        Record::Session { at, .. }
        | Record::Missed { at, .. }
        | Record::Unenrolled { at, .. }
        | Record::Changed { at, .. } => *at,
    }
}

fn write_file(path: &std::path::Path, flag: &str, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).map_err(|e| fail(STATE, format!("{flag} {}: {e}", path.display())))
}

/// The most exchanges held between two records (more are counted in the metrics only).
const HELD_EXCHANGES: usize = 1 << 16;

/// An exchange, timed: each exchange's latency goes to the live metrics at once and, with its
/// failure class, to the report at the next record (through the fleet's one [`TimedLog`]).
struct Timed {
    inner: Arc<dyn Exchange>,
    log: Arc<TimedLog>,
}

/// The exchanges seen since the last record.
struct TimedLog {
    seen: Mutex<Vec<(u64, Option<&'static str>)>>,
    metrics: Arc<Metrics>,
}

impl TimedLog {
    fn take(&self) -> Vec<(u64, Option<&'static str>)> {
        std::mem::take(&mut *lock(&self.seen))
    }
}

impl Exchange for Timed {
    fn release(&self) {
        self.inner.release();
    }

    fn exchange<'a>(&'a self, transmit: &'a Transmit) -> Exchanging<'a> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let response = self.inner.exchange(transmit).await;
            let us = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
            let class = match &response {
                Response::Session(reply) => reply.result.as_ref().err().map(|e| e.class),
                Response::Fetch(_) => None,
            };
            self.log.metrics.message(us);
            if let Some(c) = class {
                self.log.metrics.error(c);
            }
            let mut seen = lock(&self.log.seen);
            if seen.len() < HELD_EXCHANGES {
                seen.push((us, class));
            }
            response
        })
    }
}

fn print_lines(s: &Summary, p: &Process) {
    let session = s.latency_ms.get("session");
    let q = |f: fn(&mdmsim::fleet::report::Percentiles) -> f64| session.map_or(0.0, f);
    super::out::line(format_args!(
        "{} devices (shard {} of a fleet of {}), {} simulated s from {} on a {} clock against {}\n\
         {} sessions ({} failed, {} missed), {} messages\n\
         wall {:.2} s, CPU {:.2} s; RSS {:.1} MiB with the devices made, {:.1} MiB after, peak {:.1} MiB\n\
         session latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        s.devices,
        p.shard,
        p.fleet_devices,
        s.duration_s,
        s.start.to_rfc3339(),
        s.clock,
        s.target,
        s.totals.sessions,
        s.totals.failed,
        s.totals.missed,
        s.totals.messages,
        s.wall_s,
        s.cpu_s,
        p.rss_devices_bytes as f64 / 1048576.0,
        p.rss_after_bytes as f64 / 1048576.0,
        s.peak_rss_bytes as f64 / 1048576.0,
        q(|p| p.p50),
        q(|p| p.p90),
        q(|p| p.p99),
        q(|p| p.max),
    ));
    if let Some(e) = &p.enrollment {
        super::out::line(format_args!(
            "enrolled {} devices ({} failed) in {:.2} s, {:.0} per second; {} keys generated",
            e.enrolled, e.failed, e.wall_s, e.per_s, e.keys_generated
        ));
        for f in &e.failures {
            super::out::line(format_args!("  enrollment failed: {f}"));
        }
    }
    for (k, n) in &s.totals.sessions_by {
        super::out::line(format_args!("  {k:<24} {n}"));
    }
    for (k, n) in &s.totals.errors {
        super::out::line(format_args!("  error {k:<18} {n}"));
    }
}

/// Where device `index` of `devices` starts within a ramp-up of `ramp`.
fn ramp_offset(ramp: Duration, index: u64, devices: u64) -> Duration {
    let ms = ramp.num_milliseconds().max(0) as u128;
    Duration::milliseconds((ms * u128::from(index) / u128::from(devices.max(1))) as i64)
}

/// UTC midnight at or before `t`.
fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_hms_opt(0, 0, 0).map_or(t, |d| d.and_utc())
}

/// The next Monday 00:00 UTC after `t` (a virtual run starts on a working week).
fn next_monday(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Datelike;
    let days = 7 - i64::from(t.weekday().num_days_from_monday());
    day_start(t) + Duration::days(days)
}

/// The reference server in this process for pre-provisioned devices (it trusts the SyncHdr
/// Source), as `fleet --in-process` and `bench sessions` run it.
pub(super) struct InProcessServer {
    /// Calls the server's handlers directly.
    pub exchange: Arc<dyn Exchange>,
    /// Its management URL.
    pub url: String,
    /// Its PROVIDER-ID.
    pub provider: String,
    /// The instant its records are stamped with (the start until moved).
    pub clock: Arc<Mutex<DateTime<Utc>>>,
}

impl InProcessServer {
    /// Starts it in `dir`, seeded with `seed`.
    pub fn start(dir: &std::path::Path, seed: u64, start: DateTime<Utc>) -> anyhow::Result<InProcessServer> {
        let mut config = Config::demo();
        config.management.auth = AuthMode::None;
        config.management.seed = Some(seed);
        let provider = config.provider_id.clone();
        let cell = Arc::new(Mutex::new(start));
        let read = Arc::clone(&cell);
        let clock: mdmsim::server::Clock = Arc::new(move || read.lock().map(|t| *t).unwrap_or(start));
        let server = mdmsim::server::start_in_process(dir, config, Some(clock))
            .map_err(|e| fail(STATE, format!("the in-process server: {e}")))?;
        let url = server.management_url();
        Ok(InProcessServer { exchange: Arc::new(InProcess::new(Arc::new(server))), url, provider, clock: cell })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_fleet_and_bad_ones_are_refused() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let mut seen: Vec<u64> = shards.iter().flat_map(|s| s.indices(10)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(shards[1].indices(10).collect::<Vec<_>>(), [1, 4, 7]);
        assert!("3/2".parse::<Shard>().unwrap_err().contains("below the count"));
        assert!("1/0".parse::<Shard>().unwrap_err().contains("at least 1"));
        assert!("x".parse::<Shard>().unwrap_err().contains("expected I/N"));
    }

    #[test]
    fn the_ramp_spreads_first_sessions_by_fleet_index() {
        let ramp = Duration::minutes(10);
        assert_eq!(ramp_offset(ramp, 0, 100), Duration::zero());
        assert_eq!(ramp_offset(ramp, 50, 100), Duration::minutes(5));
        assert!(ramp_offset(ramp, 99, 100) < ramp);
    }
}
