//! `mdmsim bench sessions`: the device engine's benchmark. Pre-provisioned devices live a
//! simulated working day (reboots, logons, locks, pushes, syncs, the DMClient polls the server
//! sets) on a virtual clock against the reference server, in the same process with no sockets
//! (`--exchange in-process`, the default) or over HTTP (`--exchange http --server URL`, a
//! server that trusts the SyncHdr Source: `mdmsim server --auth none`).
//!
//! Prints one JSON object (`--json`) or a few lines: devices, sessions, messages, wall and CPU
//! seconds (the whole process: devices and in-process server together), sessions per CPU
//! second, peak and final RSS, latency percentiles, sessions by trigger and mode. Exit 0 when
//! every session completed, else the class of the failures (3 or 4), as `run` does.

use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use mdmsim::device::{Device, DeviceId, Template};
use mdmsim::runner::exchange::{Exchange, HttpExchange};
use mdmsim::runner::fleet::{Fleet, FleetOptions, Member, RunStats};
use mdmsim::runner::http::Transport;
use mdmsim::schedule::{VirtualClock, device_seed, parse_duration, parse_time};
use mdmsim::tree::Profile;

use super::exit::{Failures, STATE, USAGE, fail};

#[derive(Subcommand)]
pub enum Bench {
    /// Devices living simulated days against the reference server: sessions per CPU second,
    /// memory, latency.
    Sessions(SessionsArgs),
}

/// How the devices' requests travel.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExchangeKind {
    /// The reference server's handlers called directly, no sockets.
    InProcess,
    /// HTTP to --server.
    Http,
}

#[derive(Args)]
pub struct SessionsArgs {
    /// How many devices.
    #[arg(long, default_value_t = 1000)]
    devices: u32,
    /// Simulated time to run (30m, 36h, 1d, 7d).
    #[arg(long, default_value = "1d")]
    duration: String,
    /// The simulated start (RFC 3339); the default is a Monday at midnight.
    #[arg(long, default_value = "2026-03-02T00:00:00Z")]
    start: String,
    /// Seed of device identities and their days.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "in-process")]
    exchange: ExchangeKind,
    /// The management URL for --exchange http (a server that trusts the SyncHdr Source, such as
    /// `mdmsim server --auth none`).
    #[arg(long, value_name = "URL", required_if_eq("exchange", "http"))]
    server: Option<String>,
    /// The DMClient provider ID of the devices for --exchange http (the server's PROVIDER-ID).
    #[arg(long, value_name = "ID", default_value = "mdmsim")]
    provider_id: String,
    /// Devices at work at the same time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Stop after this many sessions in all.
    #[arg(long, default_value_t = 10_000_000)]
    max_sessions: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    http: super::HttpArgs,
}

/// What a benchmark run measured.
#[derive(Serialize)]
struct Measured {
    exchange: ExchangeKind,
    seed: u64,
    devices: u32,
    simulated_s: i64,
    sessions: u64,
    completed: u64,
    failed: u64,
    messages: u64,
    wall_s: f64,
    /// Process CPU (user + system) during the run, the in-process server included.
    cpu_s: f64,
    sessions_per_cpu_s: f64,
    peak_rss_bytes: u64,
    /// RSS when the run ended (devices still held).
    rss_after_bytes: u64,
    latency_ms: mdmsim::runner::fleet::Latency,
    sessions_by: std::collections::BTreeMap<String, u64>,
}

pub fn run(b: Bench) -> anyhow::Result<ExitCode> {
    match b {
        Bench::Sessions(a) => sessions(a),
    }
}

fn sessions(a: SessionsArgs) -> anyhow::Result<ExitCode> {
    let start = parse_time(&a.start).map_err(|e| fail(USAGE, format!("--start: {e}")))?;
    let span = parse_duration(&a.duration).map_err(|e| fail(USAGE, format!("--duration: {e}")))?;
    let end = start + span;
    if a.devices == 0 {
        return Err(fail(USAGE, "--devices must be at least 1"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("starting the async runtime: {e}")))?;
    let scratch = tempfile::tempdir().map_err(|e| fail(STATE, format!("a scratch folder: {e}")))?;
    let (exchange, server_url, provider): (Arc<dyn Exchange>, String, String) = match a.exchange {
        ExchangeKind::InProcess => {
            let s = super::fleet::InProcessServer::start(scratch.path(), a.seed, start)?;
            (s.exchange, s.url, s.provider)
        }
        ExchangeKind::Http => {
            let url = a.server.clone().unwrap_or_default();
            let transport = Transport::new(a.http.options()?).map_err(|e| fail(USAGE, e.to_string()))?;
            (Arc::new(HttpExchange::new(Arc::new(transport))), url, a.provider_id.clone())
        }
    };
    let members = fleet_of(a.devices, a.seed, &server_url, &provider, start, end)?;
    let opts = FleetOptions { concurrency: a.concurrency, max_sessions: a.max_sessions, ..FleetOptions::default() };
    let registry = Arc::new(mdmsim::csp::registry());
    let mut fleet = Fleet::with_exchange(registry, exchange, members, opts);
    let mut clock = VirtualClock::new(start);
    let cpu0 = cpu_seconds();
    let wall = std::time::Instant::now();
    let mut failures = Vec::new();
    let stats: RunStats = rt.block_on(fleet.run(&mut clock, end, |record, _| {
        if let mdmsim::runner::fleet::Record::Session { summary, .. } = record
            && summary.outcome != mdmsim::session::Outcome::Completed
            && failures.len() < 1000
        {
            failures.push((**summary).clone());
        }
    }));
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu0;
    let m = Measured {
        exchange: a.exchange,
        seed: a.seed,
        devices: a.devices,
        simulated_s: span.num_seconds(),
        sessions: stats.sessions,
        completed: stats.completed,
        failed: stats.failed,
        messages: stats.messages,
        wall_s,
        cpu_s,
        sessions_per_cpu_s: if cpu_s > 0.0 { stats.sessions as f64 / cpu_s } else { 0.0 },
        peak_rss_bytes: peak_rss_bytes(),
        rss_after_bytes: rss_bytes(),
        latency_ms: stats.latency_ms.clone(),
        sessions_by: stats.by_trigger_mode.clone(),
    };
    drop(fleet);
    if a.json {
        super::out::line(serde_json::to_string(&m)?);
    } else {
        super::out::line(format_args!(
            "{} devices, {} simulated s over {:?}: {} sessions ({} failed), {} messages\n\
             wall {:.2} s, CPU {:.2} s, {:.0} sessions per CPU second\n\
             peak RSS {:.1} MiB, RSS after {:.1} MiB; latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
            m.devices,
            m.simulated_s,
            a.exchange,
            m.sessions,
            m.failed,
            m.messages,
            m.wall_s,
            m.cpu_s,
            m.sessions_per_cpu_s,
            m.peak_rss_bytes as f64 / 1048576.0,
            m.rss_after_bytes as f64 / 1048576.0,
            m.latency_ms.p50,
            m.latency_ms.p90,
            m.latency_ms.p99,
            m.latency_ms.max,
        ));
        for (k, n) in &m.sessions_by {
            super::out::line(format_args!("  {k:<24} {n}"));
        }
    }
    match Failures::of(failures.iter()) {
        Some(f) => Err(f.error()),
        None => Ok(ExitCode::SUCCESS),
    }
}

impl std::fmt::Debug for ExchangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExchangeKind::InProcess => "in-process",
            ExchangeKind::Http => "http",
        })
    }
}

/// Pre-provisioned devices with identities from `seed`, each with its own simulated days.
fn fleet_of(
    n: u32,
    seed: u64,
    server_url: &str,
    provider: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<Vec<Member>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let templates = [Template::builtin(Profile::Win10), Template::builtin(Profile::Win81)];
    let mut members = Vec::with_capacity(n as usize);
    for i in 0..n {
        // Nine in ten devices run Windows 10/11, one in ten Windows 8.1.
        let profile = if i % 10 == 9 { Profile::Win81 } else { Profile::Win10 };
        let template = &templates[usize::from(profile == Profile::Win81)];
        let device = Device::new(DeviceId::generate(&mut rng), profile, server_url, provider, template, start);
        let s = device_seed(seed, u64::from(i));
        let mut m = Member::new(device, s, start).map_err(|e| fail(USAGE, format!("template: {e}")))?;
        m.engine.scheduler.script(super::demo::day_of(s, start, end));
        members.push(m);
    }
    Ok(members)
}

/// User + system CPU seconds of this process so far.
pub(super) fn cpu_seconds() -> f64 {
    let u = rusage();
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The process's peak resident set (Linux reports `ru_maxrss` in KiB).
pub(super) fn peak_rss_bytes() -> u64 {
    (rusage().ru_maxrss.max(0) as u64) * 1024
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    }
}

/// The resident set now (`/proc/self/statm`, Linux), 0 where it cannot be read.
/// Gives the C allocator's free pages back to the system. OpenSSL allocates with it (not with
/// the process's allocator): the buffers of TLS handshakes and enrollments are freed after use
/// but stay mapped in its per-thread arenas until trimmed.
pub(super) fn trim_c_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the C allocator to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub(super) fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}
