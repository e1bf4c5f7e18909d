//! `mdmsim run`: stored devices live on their own schedule (reboots, logons, nightly
//! maintenance, DMClient polls, pushes, scripted events), running sessions when their triggers
//! fire, on a real, scaled or virtual clock.
//!
//! Prints one line per session (time, device, trigger, mode, result, findings) and a summary;
//! `--json` prints every record and the summary as one JSON object instead. Every session is
//! stored as it ends (device record and summary in one transaction). Exit 0 when every session
//! completed; when sessions failed, on any clock, the class of the failures
//! ([`super::exit::Failures`]: 4 when the server broke the protocol or answered an HTTP
//! error, else 3 unreachable) unless `--allow-failures`; 2 for bad arguments or event files; 5
//! for state errors. When standard output goes away (`| head`) the run stops as on Ctrl-C: the
//! devices' state is saved and the exit code is that of the sessions so far.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::Args;

use mdmsim::runner::enrollment;
use mdmsim::runner::fleet::{Fleet, FleetOptions, LeaseKeeper, Member, Record};
use mdmsim::runner::http::Transport;
use mdmsim::schedule::{At, ClockKind, device_seed, parse_time, parse_timeline};

use super::exit::{Failures, STATE, USAGE, fail};
use super::out;

/// How many SessionIDs a device reserves at a time (one durable write per this many sessions).
const LEASE_AHEAD: u64 = 64;

#[derive(Args)]
pub struct RunArgs {
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// The device (default: the first one created).
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    device: Option<String>,
    /// Run every device of the state directory.
    #[arg(long)]
    all: bool,
    /// real: simulated time is real time; scaled: --speed times faster; virtual: jump from one
    /// deadline to the next as soon as the sessions of the current instant finished.
    #[arg(long, value_parser = super::named::<ClockKind>(), default_value = "real")]
    clock: ClockKind,
    /// Simulated seconds per real second for --clock scaled (60 = an hour a minute).
    #[arg(long, value_name = "N")]
    speed: Option<f64>,
    /// The simulated start (RFC 3339); default: now.
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// When to stop: an RFC 3339 time or a duration from --start (30m, 36h, 7d). Default: 1d
    /// for virtual and scaled clocks; a real clock runs until Ctrl-C.
    #[arg(long, value_name = "TIME|DURATION")]
    until: Option<String>,
    /// A TOML timeline of events ([[event]] at/kind/user), applied to every device run.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Print the records and the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write every record to FILE as it happens, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    records: Option<PathBuf>,
    /// Refuse commands outside the Machine-mode set with 405 instead of recording a finding.
    #[arg(long)]
    strict: bool,
    /// Write each session's messages to DIR/<device>/<session>/.
    #[arg(long, value_name = "DIR")]
    transcript: Option<PathBuf>,
    /// Seed of the jitter; the same seed gives the same timeline.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    http: super::HttpArgs,
    /// Stop after this many sessions in all.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_sessions: u64,
    /// Where the embedded push notification service (WNS emulation) listens; the devices'
    /// ChannelURIs point there, and a server's pushes to them wake the devices. Default: a free
    /// loopback port (printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    wns_listen: std::net::SocketAddr,
    /// Use a standalone `mdmsim wns` at URL (e.g. http://127.0.0.1:8181) instead of the embedded
    /// one: the devices ask it for their channels, and a server's pushes to it wake them.
    #[arg(long, value_name = "URL")]
    wns_url: Option<String>,
    /// Exit 0 even when sessions failed (by default a failed session makes the run exit 3 when
    /// the server was unreachable, 4 when it broke the protocol or answered an HTTP error).
    #[arg(long)]
    allow_failures: bool,
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let wall_now = Utc::now();
    let start = match &a.start {
        Some(s) => parse_time(s).map_err(|e| fail(USAGE, format!("--start: {e}")))?,
        None => wall_now,
    };
    let until: Option<DateTime<Utc>> = match (&a.until, a.clock) {
        (Some(u), _) => Some(At::parse(u).map_err(|e| fail(USAGE, format!("--until: {e}")))?.resolve(start)),
        (None, ClockKind::Real) => None,
        (None, _) => Some(start + chrono::Duration::days(1)),
    };
    let timeline = match &a.events {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| fail(USAGE, format!("{}: {e}", path.display())))?;
            parse_timeline(&text, &path.display().to_string()).map_err(|e| fail(USAGE, e.to_string()))?.resolve(start)
        }
        None => Vec::new(),
    };
    let mut clock = mdmsim::schedule::clock::build(a.clock, a.speed, Some(start), wall_now)
        .map_err(|e| fail(USAGE, e.to_string()))?;

    let http = a.http.options()?;
    let transport = Arc::new(Transport::new(http.clone()).map_err(|e| fail(USAGE, e.to_string()))?);
    let store = Arc::new(super::open_store(&a.state)?);
    let ids = if a.all { store.ids().map_err(super::store_error)? } else { vec![String::new()] };
    let mut members = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let device =
            store.load(if a.all { Some(id.as_str()) } else { a.device.as_deref() }).map_err(super::store_error)?;
        if let Err(e) = enrollment::check_usable(&device) {
            if a.all {
                out::warn(format_args!("mdmsim: skipping {}: {e}", device.id));
                continue;
            }
            return Err(fail(STATE, e.to_string()));
        }
        // An enrolled device presents its own client certificate and trusts its roots.
        let own = match enrollment::stored_material(&device, &a.state).map_err(|e| fail(STATE, e.to_string()))? {
            Some(material) => {
                let opts = enrollment::http_options(&device, &material, http.clone())
                    .map_err(|e| fail(STATE, e.to_string()))?;
                Some(Arc::new(Transport::new(opts).map_err(|e| fail(USAGE, e.to_string()))?))
            }
            None => None,
        };
        let mut m = Member::new(device, device_seed(a.seed, index as u64), start)
            .map_err(|e| fail(USAGE, format!("device template: {e}")))?;
        m.transport = own;
        m.scheduler.script(timeline.iter().cloned());
        members.push(m);
    }
    if members.is_empty() {
        return Err(fail(STATE, format!("no device in {}; create one with `mdmsim device new`", a.state.display())));
    }
    super::transcript_dir(a.transcript.as_deref())?;
    // SessionIDs are reserved durably ahead of use, for every device in one write, and again
    // by a device whenever it used its reservation up: after a crash no device sends an id twice.
    let mut devices: Vec<&mut mdmsim::device::Device> = members.iter_mut().map(|m| &mut m.engine.device).collect();
    store.reserve_session_ids(&mut devices, LEASE_AHEAD).map_err(super::store_error)?;
    let keeper_store = Arc::clone(&store);
    let leases = LeaseKeeper(Arc::new(move |d: &mut mdmsim::device::Device| {
        keeper_store.reserve_session_ids(&mut [d], LEASE_AHEAD).map_err(|e| e.to_string())
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("starting the async runtime: {e}")))?;
    let push = super::PushService::open(&rt, a.wns_listen, a.wns_url.as_deref())?;
    let opts = FleetOptions {
        strict: a.strict,
        transcript: a.transcript.clone(),
        max_sessions: a.max_sessions,
        state_dir: Some(a.state.clone()),
        leases: Some(leases),
        channels: Some(push.channels()),
        ..FleetOptions::default()
    };
    // Finished sessions are written in batches by the store's writer thread, off the run loop.
    let writer = store.writer();
    let registry = Arc::new(mdmsim::csp::registry());
    if let super::PushService::Embedded(_) = &push {
        // The embedded service is new: the channels of an earlier run point at one that is gone.
        for m in &mut members {
            m.engine.renew_push_channels();
        }
    }
    let mut fleet = Fleet::new(registry, transport, members, opts);
    let waker = push.wake(&rt, &fleet);
    // Only `--json` keeps every record (it prints them all at the end); otherwise each is
    // printed, streamed to --records, counted, and dropped.
    let mut records: Vec<Record> = Vec::new();
    let mut stream = match &a.records {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| fail(USAGE, format!("--records {}: {e}", path.display())))?,
        )),
        None => None,
    };
    let mut failures = Failures::default();
    let mut header = !a.json;
    let mut store_error = None;
    let wall = std::time::Instant::now();
    let json = a.json;
    // Nobody reads the output any more (`| head`): end the run as Ctrl-C would.
    let reader_gone = tokio::sync::Notify::new();
    let stats = rt.block_on(async {
        let end = until.unwrap_or(DateTime::<Utc>::MAX_UTC);
        // Ctrl-C, or nobody reads the output any more (`| head`): no device starts, the devices
        // at work finish their session, and every device is saved.
        let stop = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = reader_gone.notified() => {}
            }
        };
        fleet
            .run_until(clock.as_mut(), end, stop, |record, device| {
                if matches!(record, Record::Changed { .. }) {
                    return;
                }
                if let Record::Session { summary, .. } = record {
                    writer.session_ended(device, summary);
                    failures.add(summary);
                }
                if let Some(w) = &mut stream
                    && let Err(e) = serde_json::to_writer(&mut *w, record)
                        .map_err(std::io::Error::from)
                        .and_then(|()| w.write_all(b"\n"))
                {
                    store_error.get_or_insert(format!("--records: {e}"));
                }
                if !json {
                    if std::mem::take(&mut header) {
                        out::line(Record::header());
                    }
                    out::line(record.line());
                    if out::closed() {
                        reader_gone.notify_one();
                    }
                } else {
                    records.push(record.clone());
                }
            })
            .await
    });
    if let Some(w) = waker {
        w.abort();
    }
    // Whatever happened, the devices' last state is kept (schedules restart from it).
    for mut m in fleet.into_members() {
        writer.save(&mut m.engine.device);
    }
    if let Err(e) = writer.finish() {
        store_error.get_or_insert(e.to_string());
    }
    if let Some(e) = store_error {
        return Err(fail(STATE, format!("saving device state: {e}")));
    }
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().map_err(|e| fail(STATE, format!("closing the state directory: {e}")))?,
        Err(_) => return Err(fail(STATE, "the state directory is still in use at the end of the run")),
    }
    if json {
        let all =
            serde_json::json!({ "records": records, "summary": stats, "wall_ms": wall.elapsed().as_millis() as u64 });
        out::line(all);
    } else {
        out::line(format_args!(
            "\n{} sessions ({} completed, {} failed), {} missed, {} unenrolled, {} findings; until {} in {:.2?} wall time",
            stats.sessions,
            stats.completed,
            stats.failed,
            stats.missed,
            stats.unenrolled,
            stats.findings,
            stats.ended_at.map_or_else(|| "-".to_string(), |t| t.to_rfc3339()),
            wall.elapsed()
        ));
        for (k, n) in &stats.by_trigger_mode {
            out::line(format_args!("  {k:<24} {n}"));
        }
        if stats.push_sessions + stats.pushes_lost + stats.pushes_delivered > 0 {
            out::line(format_args!(
                "  pushes: {} delivered by WNS, {} push sessions, {} lost (network off)",
                stats.pushes_delivered, stats.push_sessions, stats.pushes_lost
            ));
        }
        if let Some(l) = &stats.push_to_session_ms {
            out::line(format_args!(
                "  push to end of session: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50, l.p90, l.p99, l.max
            ));
        }
        if stats.hit_session_limit {
            out::line(format_args!("  stopped at the session limit (--max-sessions {})", a.max_sessions));
        }
    }
    if let Some(w) = &mut stream
        && let Err(e) = w.flush()
    {
        return Err(fail(STATE, format!("--records: {e}")));
    }
    match failures.worst() {
        Some(f) if !a.allow_failures => Err(f.error()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
