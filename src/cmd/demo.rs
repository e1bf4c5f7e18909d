//! `mdmsim demo`: the main job in one command. Starts the embedded reference server on a free
//! loopback port (HTTPS with its own CA), enrolls a fleet of devices with varied templates
//! through MS-MDE2, lets them live one simulated day on the virtual clock (reboots, logons,
//! locks, nightly maintenance, DMClient polls, pushes, app installs), and prints a report whose
//! every figure was measured in this run — and checked against the server's own records.
//!
//! The server runs `fixtures/server/demo.toml`: besides the app it delivers a configuration
//! profile (verified by reading it back) and an MSI install (EnterpriseDesktopAppManagement).
//! The report shows both as the server recorded them next to what the devices' trees hold, and
//! says so when an install has no outcome yet rather than counting it as done.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use clap::Args;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use mdmsim::device::{Device, DeviceId, Template};
use mdmsim::enroll::{AuthToken, Secret};
use mdmsim::runner::enrollment::EnrollOptions;
use mdmsim::runner::fleet::{ChannelService, Fleet, FleetOptions, Member, Record};
use mdmsim::runner::http::{HttpOptions, Transport};
use mdmsim::runner::keys::KeyPool;
use mdmsim::runner::mtls::{DeviceExchange, SessionTls};
use mdmsim::schedule::{At, Clock, ClockKind, ENROLLED, Event, Trigger, VirtualClock, device_seed, parse_time};
use mdmsim::server::profiles::ProfilePlan;
use mdmsim::server::{Config, DeviceRecord, MsiState, ProfileState, ServerHandle, ServerOptions};
use mdmsim::session::Outcome;
use mdmsim::syncml::{Command, Item, ItemCmd, StatusCode};
use mdmsim::tree::{Profile, Registry, Tree};

use super::exit::{PROTOCOL, STATE, USAGE, fail};
use super::fleet_enroll::{Plan, enroll_all};

/// Enrollments under way at once.
const ENROLLING: usize = 64;

/// The templates of the demo fleet, compiled in so the demo runs from any folder.
const TEMPLATES: [(&str, &str, Profile); 3] = [
    ("win11-laptop", include_str!("../../fixtures/templates/win11-laptop.toml"), Profile::Win10),
    ("win10-desktop", include_str!("../../fixtures/templates/win10-desktop.toml"), Profile::Win10),
    ("win81-tablet", include_str!("../../fixtures/templates/win81-tablet.toml"), Profile::Win81),
];

/// The OnPremise user of the reference server's default configuration.
const USER: (&str, &str) = ("demo@mdmsim.test", "demo");

#[derive(Args)]
pub struct DemoArgs {
    /// How many devices to enroll.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// How long the fleet lives, in simulated time (30m, 12h, 1d, 7d).
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    duration: String,
    /// Seed of the fleet (templates, device ids, everyone's day, jitter).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The simulated start (RFC 3339).
    #[arg(long, value_name = "TIME", default_value = "2026-03-02T06:00:00Z")]
    start: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Keep the server's state (CA, certificates) here instead of a temporary folder.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// RSA keys shared by the enrolling devices (device i uses key i mod K; each certificate
    /// is still the device's own): a key takes about 0.2 CPU seconds to generate.
    #[arg(long, value_name = "K", default_value_t = 16)]
    key_pool: usize,
    /// Generate a fresh key for every device, as real devices do (slower).
    #[arg(long, conflicts_with = "key_pool")]
    unique_keys: bool,
    /// Where the push notification service (WNS emulation) the devices get their channels
    /// from listens. Default: a free loopback port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    wns_listen: std::net::SocketAddr,
}

/// The report of a demo run.
#[derive(Debug, Serialize)]
struct Report {
    devices: usize,
    seed: u64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    enrolled: usize,
    enrollment_failures: Vec<String>,
    sessions: u64,
    completed: u64,
    failed: u64,
    /// `trigger/mode` -> sessions.
    by_trigger_mode: BTreeMap<String, u64>,
    /// `Download/<ProductID>/Status` names at the end -> devices.
    app_installs: BTreeMap<String, usize>,
    /// Each configuration profile: the server's records and the devices' trees.
    profiles: Vec<ProfileLine>,
    /// Each MSI install: the server's records and the devices' `Status` nodes.
    msi: Vec<MsiLine>,
    errors: Vec<String>,
    findings: u64,
    /// The server's pushes through the WNS emulation at midday.
    pushes: PushLine,
    latency_ms: Latency,
    server: ServerCheck,
    wall_s: f64,
}

/// The midday push round: the server pushes to every device whose ChannelURI it read.
#[derive(Debug, Default, Serialize)]
struct PushLine {
    /// Pushes the server sent (`POST <ChannelURI>`).
    sent: usize,
    /// Answered 200 `X-WNS-Status: received` (the device was woken).
    received: usize,
    /// Answered otherwise (410, 404, 406...) or not at all.
    refused: usize,
    /// Push-started sessions of the day, the round's and the timeline's (`mode=Apps` on win81,
    /// Alert 1200 on win10).
    sessions: u64,
    /// Notifications lost because the device's network was off.
    lost: u64,
}

/// One configuration profile at the end of the run.
#[derive(Debug, Serialize)]
struct ProfileLine {
    name: String,
    settings: usize,
    /// Devices by the state the server recorded.
    pending: usize,
    delivered: usize,
    verified: usize,
    failed: usize,
    failed_verification: usize,
    not_applicable: usize,
    /// Devices whose tree answers a Get of every setting with the value the profile sets.
    devices_holding_every_value: usize,
}

/// One MSI install at the end of the run.
#[derive(Debug, Serialize)]
struct MsiLine {
    name: String,
    product_id: String,
    version: String,
    /// Devices by the outcome the server recorded.
    installed: usize,
    failed: usize,
    in_progress: usize,
    not_applicable: usize,
    /// Of those in progress: devices that sent no install alert and whose `Status` the server
    /// never read (the device has no such node): nothing is known of the install.
    no_outcome_reported: usize,
    /// `MSI/<ProductID>/Status` on the devices (a Get through their trees) -> devices.
    device_status: BTreeMap<String, usize>,
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

/// What the server recorded, next to what the devices saw.
#[derive(Debug, Serialize)]
struct ServerCheck {
    devices: usize,
    enrolled: usize,
    check_ins: usize,
    apps_installed: usize,
    apps_failed: usize,
    apps_in_progress: usize,
    findings: usize,
    agrees: bool,
    disagreements: Vec<String>,
}

/// A virtual clock whose time the server reads too, so its records carry simulated times.
struct SharedClock {
    inner: VirtualClock,
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl SharedClock {
    fn publish(&self) {
        if let Ok(mut t) = self.now.lock() {
            *t = self.inner.now();
        }
    }
}

impl Clock for SharedClock {
    fn kind(&self) -> ClockKind {
        ClockKind::Virtual
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.now()
    }

    fn sleep_until(&mut self, deadline: DateTime<Utc>) -> StdDuration {
        let wait = self.inner.sleep_until(deadline);
        self.publish();
        wait
    }

    fn advance_to(&mut self, t: DateTime<Utc>) {
        self.inner.advance_to(t);
        self.publish();
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let start = parse_time(&a.start).map_err(|e| fail(USAGE, format!("--start: {e}")))?;
    let end = At::parse(&a.duration).map_err(|e| fail(USAGE, format!("--duration: {e}")))?.resolve(start);
    if end <= start {
        return Err(fail(USAGE, format!("--duration {}: must be after the start", a.duration)));
    }
    if a.devices == 0 || a.devices > 1_000_000 {
        return Err(fail(USAGE, format!("--devices {}: between 1 and 1000000", a.devices)));
    }
    if a.key_pool == 0 {
        return Err(fail(USAGE, "--key-pool must be at least 1 (or give --unique-keys)"));
    }
    let temp = tempfile::tempdir().map_err(|e| fail(STATE, format!("temporary folder: {e}")))?;
    let server_dir = a.keep.clone().unwrap_or_else(|| temp.path().join("server"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("starting the async runtime: {e}")))?;
    let wall = Instant::now();
    let report = rt.block_on(demo(&a, start, end, server_dir))?;
    let wall_s = wall.elapsed().as_secs_f64();
    let report = Report { wall_s, ..report };
    if a.json {
        super::out::line(serde_json::to_string_pretty(&report)?);
    } else {
        super::out::text(human(&report));
    }
    if !report.server.agrees || report.failed > 0 || !report.enrollment_failures.is_empty() {
        return Err(fail(PROTOCOL, "the demo fleet did not run cleanly (see the report)"));
    }
    Ok(ExitCode::SUCCESS)
}

async fn demo(a: &DemoArgs, start: DateTime<Utc>, end: DateTime<Utc>, server_dir: PathBuf) -> anyhow::Result<Report> {
    let shared = Arc::new(Mutex::new(start));
    let mut opts = ServerOptions::local(server_dir);
    opts.config = Config::demo();
    let profile_plans =
        mdmsim::server::profiles::build(&opts.config).map_err(|e| fail(USAGE, format!("built-in demo.toml: {e}")))?;
    let msi_plans: Vec<(String, String, String)> =
        opts.config.msi.iter().map(|m| (m.name.clone(), m.product_id.clone(), m.version.clone())).collect();
    let read = Arc::clone(&shared);
    opts.clock = Some(Arc::new(move || read.lock().map(|t| *t).unwrap_or(start)));
    let server = mdmsim::server::start(opts).await.map_err(|e| fail(STATE, format!("starting the server: {e}")))?;
    let ca = server.ca_pem();
    milestone(format_args!("reference server at {}; enrolling {} devices (MS-MDE2)", server.base_url, a.devices));
    let progress = progress_bar(a.devices as u64, "enrolling");

    // Enrollment: every device through discovery, policy and enrollment, as `mdmsim fleet
    // --discovery` enrolls (keys from a pool, one HTTP client for all, a bounded number at a
    // time); each device then holds only its certificate and key.
    let client =
        mdmsim::runner::enroll::http_client(Some(&ca), false).map_err(|e| fail(STATE, format!("HTTP client: {e}")))?;
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let plans: Vec<(usize, DeviceId)> =
        (0..a.devices).map(|_| (pick_template(&mut rng), DeviceId::generate(&mut rng))).collect();
    let mut templates = Vec::new();
    for (name, text, profile) in TEMPLATES {
        let parsed = Template::parse(text, name).map_err(|e| fail(USAGE, format!("built-in template {name}: {e}")))?;
        let template = Template::builtin(profile).overlay(&parsed);
        let settings = mdmsim::device::template_settings(&template);
        templates.push((template, profile, settings));
    }
    let options = |index: u64| {
        let (t, id) = &plans[index as usize];
        let (template, profile, settings) = &templates[*t];
        let auth = AuthToken::OnPremise { username: USER.0.into(), password: Secret::new(USER.1) };
        let mut eo = EnrollOptions::new(USER.0, auth, id.clone(), *profile);
        eo.template = template.clone();
        eo.settings = Some(Arc::clone(settings));
        eo
    };
    let pool = if a.unique_keys { KeyPool::unique() } else { KeyPool::new(a.key_pool) };
    let plan =
        Plan { discovery: &server.discovery_url(), client, pool: Arc::new(pool), concurrency: ENROLLING, at: start };
    let indices: Vec<u64> = (0..a.devices as u64).collect();
    // The devices of one template share what their trees hold alike.
    let mut sharing = mdmsim::tree::Sharing::default();
    let made = |index: u64, d: &mut Device| sharing.share(plans[index as usize].0, &mut d.tree);
    let done = enroll_all(plan, &indices, options, |_, _, _| progress.inc(1), made).await?;
    progress.finish_and_clear();
    let enrollment_failures = done.failures;
    let roots: Vec<&str> = done.roots.iter().map(String::as_str).collect();
    let http = HttpOptions { ca_cert_pem: Some(ca.clone()), ..HttpOptions::default() };
    let tls = Arc::new(SessionTls::new(http, &roots).map_err(|e| fail(STATE, e.to_string()))?);
    let mut members: Vec<_> = done.devices.into_iter().map(|(_, device, identity)| (device, identity)).collect();
    // Devices in id order, so the same seed gives the same fleet whatever order enrollments
    // finished in.
    members.sort_by(|x, y| x.0.id.as_str().cmp(y.0.id.as_str()));

    let enrolled = members.len();
    milestone(format_args!(
        "{enrolled} of {} enrolled; living {} -> {} on the virtual clock",
        a.devices,
        start.format("%Y-%m-%d %H:%M"),
        end.format("%Y-%m-%d %H:%M UTC")
    ));
    let mut fleet_members = Vec::new();
    for (index, (device, identity)) in members.into_iter().enumerate() {
        let seed = device_seed(a.seed, index as u64);
        let mut m = Member::new(device, seed, start).map_err(|e| fail(USAGE, format!("template: {e}")))?;
        m.exchange = Some(Arc::new(DeviceExchange::new(Arc::clone(&tls), identity)));
        m.engine.options.can_sign = true;
        m.scheduler.script(day_of(seed, start, end));
        fleet_members.push(m);
    }
    let fallback = Arc::new(Transport::new(HttpOptions::default()).map_err(|e| fail(STATE, e.to_string()))?);
    let registry = Arc::new(mdmsim::csp::registry());
    // The devices' push channels come from a WNS emulation on loopback; the server pushes to
    // them at midday.
    let wns = mdmsim::wns::start(mdmsim::wns::WnsOptions { listen: a.wns_listen, ..Default::default() })
        .await
        .map_err(|e| fail(USAGE, format!("--wns-listen: {e}")))?;
    milestone(format_args!("push notification service (WNS emulation) at {}", wns.base_url()));
    let fleet_opts = FleetOptions { channels: Some(ChannelService::of(wns.wns.clone())), ..FleetOptions::default() };
    let mut fleet = Fleet::new(Arc::clone(&registry), fallback, fleet_members, fleet_opts);
    wns.wns.set_deliver(fleet.push_receiver());
    let mut clock = SharedClock { inner: VirtualClock::new(start), now: Arc::clone(&shared) };
    let span = (end - start).num_seconds().max(1) as u64;
    let progress = progress_bar(span, "simulating");
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| fail(STATE, e.to_string()))?;
    let mut errors = Vec::new();
    // A line every quarter of the run when nobody sees the bar.
    let quarter = (end - start) / 4;
    let mut next_note = start + quarter;
    let mut sessions_so_far = 0u64;
    let bar_hidden = progress.is_hidden();
    let mut pushes = PushLine::default();
    let mut on_record = |record: &Record, _: &mut mdmsim::device::Device| {
        if let Record::Missed { trigger: Trigger::Push, .. } = record {
            pushes.lost += 1;
        }
        if let Record::Session { summary, .. } = record
            && summary.trigger == Trigger::Push
        {
            pushes.sessions += 1;
        }
        {
            if let Record::Session { at, summary, device } = record {
                sessions_so_far += 1;
                if bar_hidden && *at >= next_note && next_note < end {
                    milestone(format_args!(
                        "simulated up to {}: {sessions_so_far} sessions",
                        at.format("%Y-%m-%d %H:%M UTC")
                    ));
                    next_note += quarter;
                }
                let _ = latencies.record(summary.wall_us.max(1));
                if summary.outcome != Outcome::Completed {
                    errors.push(format!("{device} {}: {}", summary.trigger, summary.error.clone().unwrap_or_default()));
                }
                progress.set_position((*at - start).num_seconds().max(0) as u64);
            }
        }
    };
    // Morning, the midday push round, afternoon and night.
    let midday = start + (end - start) / 2;
    let mut stats = fleet.run(&mut clock, midday, &mut on_record).await;
    let client = reqwest::Client::builder()
        .timeout(StdDuration::from_secs(10))
        .build()
        .map_err(|e| fail(STATE, format!("HTTP client: {e}")))?;
    let mut round = PushLine::default();
    let mut push_errors = Vec::new();
    for m in fleet.members() {
        let id = m.device.id.to_string();
        match server.push(&client, &id).await {
            Ok(r) if r.http_status == 200 && r.wns_status.as_deref() == Some("received") => {
                round.sent += 1;
                round.received += 1;
            }
            Ok(_) => {
                round.sent += 1;
                round.refused += 1;
            }
            // No ChannelURI read yet: nothing to push to.
            Err(mdmsim::server::PushError::NoChannel(_)) => {}
            Err(e) => {
                round.sent += 1;
                round.refused += 1;
                push_errors.push(format!("push to {id}: {e}"));
            }
        }
    }
    let rest = fleet.run(&mut clock, end, &mut on_record).await;
    errors.extend(push_errors);
    stats.merge(rest);
    pushes.sent = round.sent;
    pushes.received = round.received;
    pushes.refused = round.refused;
    progress.finish_and_clear();

    let mut app_installs = BTreeMap::new();
    for m in fleet.members() {
        let downloads = mdmsim::csp::enterprise_app::downloads(&m.device.tree);
        if downloads.is_empty() {
            *app_installs.entry("not started".to_string()).or_default() += 1;
        }
        for d in downloads {
            let name = d.status.map_or("no Status yet".to_string(), |s| format!("{} {}", s.code(), s.name()));
            *app_installs.entry(name).or_default() += 1;
        }
    }
    let records = server.devices();
    let profiles: Vec<ProfileLine> = profile_plans
        .iter()
        .map(|p| profile_line(p, &records, fleet.members().map(|m| &m.device), &registry, end))
        .collect();
    let msi: Vec<MsiLine> = msi_plans
        .iter()
        .map(|(name, product_id, version)| {
            let devices = fleet.members().map(|m| &m.device);
            msi_line(name, product_id, version, &records, devices, &registry, end)
        })
        .collect();
    let server_check = check_server(&server, enrolled, stats.sessions as usize, &app_installs, &profiles, &msi);
    server.shutdown().await;
    let q = |p: f64| latencies.value_at_quantile(p) as f64 / 1000.0;
    Ok(Report {
        devices: a.devices,
        seed: a.seed,
        start,
        end,
        enrolled,
        enrollment_failures,
        sessions: stats.sessions,
        completed: stats.completed,
        failed: stats.failed,
        by_trigger_mode: stats.by_trigger_mode,
        app_installs,
        profiles,
        msi,
        errors,
        findings: stats.findings,
        pushes,
        latency_ms: Latency { p50: q(0.50), p95: q(0.95), p99: q(0.99), max: latencies.max() as f64 / 1000.0 },
        server: server_check,
        wall_s: 0.0,
    })
}

/// Compares the devices' view with the server's records.
fn check_server(
    server: &ServerHandle,
    enrolled: usize,
    sessions: usize,
    apps: &BTreeMap<String, usize>,
    profiles: &[ProfileLine],
    msi: &[MsiLine],
) -> ServerCheck {
    let s = server.summary();
    let mut disagreements = Vec::new();
    if s.enrolled != enrolled {
        disagreements.push(format!("the server enrolled {} devices, the fleet has {enrolled}", s.enrolled));
    }
    // Every session the devices ran checked in, plus nothing else.
    if s.totals.sessions != sessions {
        disagreements
            .push(format!("the server counted {} check-ins, the devices ran {sessions} sessions", s.totals.sessions));
    }
    let installed_on_devices = apps.get("5 INSTALLED").copied().unwrap_or(0);
    // The server counts an app installed once it has read Status 5; a device that installed
    // after its last session is still "in progress" for the server.
    if s.apps_installed > installed_on_devices {
        disagreements.push(format!(
            "the server counts {} apps installed, only {installed_on_devices} devices have one",
            s.apps_installed
        ));
    }
    // The server counts a profile verified once it read every value back; the devices must
    // still hold them (nothing in the demo changes a setting afterwards).
    for p in profiles {
        if p.verified > p.devices_holding_every_value {
            disagreements.push(format!(
                "the server verified profile {} on {} devices, only {} devices hold every value",
                p.name, p.verified, p.devices_holding_every_value
            ));
        }
    }
    // Installed needs the device's word (an alert 0 or Status 70), which its Status node keeps.
    for m in msi {
        let completed = m.device_status.get(&msi_status_name("70")).copied().unwrap_or(0);
        if m.installed > completed {
            disagreements.push(format!(
                "the server counts MSI {} installed on {} devices, only {completed} devices have Status 70",
                m.name, m.installed
            ));
        }
    }
    ServerCheck {
        devices: s.devices,
        enrolled: s.enrolled,
        check_ins: s.totals.sessions,
        apps_installed: s.apps_installed,
        apps_failed: s.apps_failed,
        apps_in_progress: s.apps_in_progress,
        findings: s.totals.findings,
        agrees: disagreements.is_empty(),
        disagreements,
    }
}

/// A Get through a device's tree, as a server's Get would be answered: the value, or the
/// status code.
fn device_get(
    registry: &Registry,
    device: &mdmsim::device::Device,
    now: DateTime<Utc>,
    uri: &str,
) -> Result<String, u16> {
    // Reading must not change the device: run the Get on a copy of its tree.
    let mut state = device.tree.clone();
    let env = device.env(now);
    let mut tree = Tree::new(registry, &mut state, &env);
    let out = tree.execute(&Command::Get(ItemCmd {
        cmd_id: "1".into(),
        items: vec![Item::target(uri)],
        ..ItemCmd::default()
    }));
    match out.into_iter().next() {
        Some(o) if o.code == StatusCode::Ok => {
            Ok(o.results.into_iter().next().and_then(|i| i.data).unwrap_or_default().trim().to_string())
        }
        Some(o) => Err(o.code.code()),
        None => Err(StatusCode::CommandFailed.code()),
    }
}

/// A profile's line: the server's states, and how many devices hold every value.
fn profile_line<'a>(
    plan: &ProfilePlan,
    records: &[DeviceRecord],
    devices: impl Iterator<Item = &'a mdmsim::device::Device>,
    registry: &Registry,
    now: DateTime<Utc>,
) -> ProfileLine {
    let mut line = ProfileLine {
        name: plan.name.clone(),
        settings: plan.settings.len(),
        pending: 0,
        delivered: 0,
        verified: 0,
        failed: 0,
        failed_verification: 0,
        not_applicable: 0,
        devices_holding_every_value: 0,
    };
    for p in records.iter().filter_map(|r| r.profiles.get(&plan.name)) {
        *match p.state {
            ProfileState::Pending | ProfileState::Sent => &mut line.pending,
            ProfileState::Delivered => &mut line.delivered,
            ProfileState::Verified => &mut line.verified,
            ProfileState::Failed => &mut line.failed,
            ProfileState::FailedVerification => &mut line.failed_verification,
            ProfileState::NotApplicable => &mut line.not_applicable,
        } += 1;
    }
    for d in devices {
        if plan.settings.iter().all(|s| device_get(registry, d, now, &s.loc_uri).is_ok_and(|v| v == s.data.trim())) {
            line.devices_holding_every_value += 1;
        }
    }
    line
}

/// An MSI's line: the server's outcomes, and each device's `Status` node.
fn msi_line<'a>(
    name: &str,
    product_id: &str,
    version: &str,
    records: &[DeviceRecord],
    devices: impl Iterator<Item = &'a mdmsim::device::Device>,
    registry: &Registry,
    now: DateTime<Utc>,
) -> MsiLine {
    let mut line = MsiLine {
        name: name.to_string(),
        product_id: product_id.to_string(),
        version: version.to_string(),
        installed: 0,
        failed: 0,
        in_progress: 0,
        not_applicable: 0,
        no_outcome_reported: 0,
        device_status: BTreeMap::new(),
    };
    for m in records.iter().filter_map(|r| r.msi.get(name)) {
        match m.state {
            MsiState::Installed => line.installed += 1,
            MsiState::Failed(_) => line.failed += 1,
            MsiState::NotApplicable => line.not_applicable += 1,
            MsiState::Pending | MsiState::Sent | MsiState::InProgress => {
                line.in_progress += 1;
                let status_read = m.last_status.as_deref().is_some_and(|s| !s.starts_with("Get "));
                if m.alert.is_none() && !status_read {
                    line.no_outcome_reported += 1;
                }
            }
        }
    }
    let node = format!("{}/Status", mdmsim::server::msi::node(product_id));
    for d in devices {
        let key = match device_get(registry, d, now, &node) {
            Ok(v) => msi_status_name(&v),
            Err(404) => "no Status node".to_string(),
            Err(code) => format!("Get {code}"),
        };
        *line.device_status.entry(key).or_default() += 1;
    }
    line
}

/// An EnterpriseDesktopAppManagement `Status` value with its name (the CSP page's list).
fn msi_status_name(value: &str) -> String {
    let name = match value {
        "10" => "Initialized",
        "20" => "Download In Progress",
        "25" => "Pending Download Retry",
        "30" => "Download Failed",
        "40" => "Download Completed",
        "48" => "Pending User Session",
        "50" => "Enforcement In Progress",
        "55" => "Pending Enforcement Retry",
        "60" => "Enforcement Failed",
        "70" => "Enforcement Completed",
        _ => "",
    };
    if name.is_empty() { format!("Status {value:?}") } else { format!("{value} {name}") }
}

/// Picks a template: half laptops, a third desktops, the rest Windows 8.1 tablets.
fn pick_template(rng: &mut ChaCha8Rng) -> usize {
    match rng.random_range(0..100u32) {
        0..50 => 0,
        50..85 => 1,
        _ => 2,
    }
}

/// One device's day, repeated for every day of the run: a morning reboot and logon, a locked
/// lunch break, for some an evening logoff (the night then runs in Machine mode), a push or a
/// manual sync now and then.
pub(super) fn day_of(seed: u64, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(DateTime<Utc>, Event)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_da7a);
    let mut events = Vec::new();
    let mut day = start.date_naive().and_hms_opt(0, 0, 0).map_or(start, |d| d.and_utc());
    let minutes = |rng: &mut ChaCha8Rng, lo: i64, hi: i64| Duration::minutes(rng.random_range(lo..hi));
    while day < end {
        let reboot = day + Duration::hours(7) + minutes(&mut rng, 0, 90);
        events.push((reboot, Event::Reboot));
        events.push((reboot + minutes(&mut rng, 2, 15), Event::Logon { user: ENROLLED.into() }));
        let lunch = day + Duration::hours(12) + minutes(&mut rng, 0, 45);
        events.push((lunch, Event::Lock));
        events.push((lunch + minutes(&mut rng, 20, 70), Event::Unlock { user: None }));
        if rng.random_range(0..100u32) < 30 {
            events.push((day + Duration::hours(9) + minutes(&mut rng, 0, 480), Event::Push));
        }
        if rng.random_range(0..100u32) < 20 {
            events.push((day + Duration::hours(10) + minutes(&mut rng, 0, 360), Event::Sync { interactive: false }));
        }
        if rng.random_range(0..100u32) < 60 {
            events.push((day + Duration::hours(17) + minutes(&mut rng, 0, 150), Event::Logoff { user: None }));
        }
        day += Duration::days(1);
    }
    events.retain(|(t, _)| *t > start && *t < end);
    events.sort_by_key(|(t, _)| *t);
    events
}

fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {percent:>3}%") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Install states for people: `4 devices INSTALLED (Status 5), 1 device not started`. The keys
/// are `<code> <name>` (an EnterpriseAppManagement or MSI Status) or a phrase.
fn app_line(installs: &BTreeMap<String, usize>) -> String {
    let devices = |n: usize| if n == 1 { "1 device".to_string() } else { format!("{n} devices") };
    let parts: Vec<String> = installs
        .iter()
        .map(|(k, n)| match k.split_once(' ') {
            Some((code, name)) if code.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{} {name} (Status {code})", devices(*n))
            }
            _ => format!("{} {k}", devices(*n)),
        })
        .collect();
    if parts.is_empty() { "none".to_string() } else { parts.join(", ") }
}

/// A milestone of the run on stderr (the report goes to stdout), so that a demo whose output is
/// piped or logged does not sit silent for half a minute; on a terminal the progress bars say
/// the rest.
fn milestone(text: impl std::fmt::Display) {
    super::out::warn(format_args!("mdmsim demo: {text}"));
}

fn human(r: &Report) -> String {
    let mut out = String::new();
    let line = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(
        &mut out,
        format!(
            "mdmsim demo: {} devices, simulated {} -> {} (seed {})",
            r.devices,
            r.start.format("%Y-%m-%d %H:%M"),
            r.end.format("%Y-%m-%d %H:%M UTC"),
            r.seed
        ),
    );
    line(
        &mut out,
        format!(
            "  enrolled:     {} of {} (MS-MDE2 against the reference server, HTTPS + client certificates)",
            r.enrolled, r.devices
        ),
    );
    for e in &r.enrollment_failures {
        line(&mut out, format!("    failed: {e}"));
    }
    line(&mut out, format!("  sessions:     {} ({} completed, {} failed)", r.sessions, r.completed, r.failed));
    for (k, n) in &r.by_trigger_mode {
        let (trigger, mode) = k.split_once('/').unwrap_or((k, ""));
        line(&mut out, format!("    {trigger:<11} {mode:<12} {n:>6}"));
    }
    line(
        &mut out,
        format!(
            "  pushes:       {} sent through the WNS emulation at midday, {} received, {} refused; {} push sessions, {} lost (network off)",
            r.pushes.sent, r.pushes.received, r.pushes.refused, r.pushes.sessions, r.pushes.lost
        ),
    );
    line(&mut out, format!("  app installs: {}", app_line(&r.app_installs)));
    for p in &r.profiles {
        line(
            &mut out,
            format!(
                "  profile:      {}, {} settings: server {} verified, {} delivered, {} failed, {} failed verification, {} pending, {} not applicable",
                p.name,
                p.settings,
                p.verified,
                p.delivered,
                p.failed,
                p.failed_verification,
                p.pending,
                p.not_applicable,
            ),
        );
        line(&mut out, format!("                devices: {} hold every value", p.devices_holding_every_value));
    }
    for m in &r.msi {
        line(
            &mut out,
            format!(
                "  MSI install:  {} {} {}: server {} installed, {} failed, {} in progress, {} not applicable",
                m.name, m.product_id, m.version, m.installed, m.failed, m.in_progress, m.not_applicable
            ),
        );
        if m.no_outcome_reported > 0 {
            line(
                &mut out,
                format!(
                    "                {} in progress with no outcome reported (no install alert, no Status): not counted as installed",
                    m.no_outcome_reported
                ),
            );
        }
        line(&mut out, format!("                devices: {}", app_line(&m.device_status)));
    }
    line(
        &mut out,
        format!(
            "  errors:       {}",
            if r.errors.is_empty() { "none".to_string() } else { r.errors.len().to_string() }
        ),
    );
    for e in r.errors.iter().take(10) {
        line(&mut out, format!("    {e}"));
    }
    line(&mut out, format!("  findings:     {} conformance findings", r.findings));
    line(
        &mut out,
        format!(
            "  latency:      p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms (real time per session, HTTPS on loopback)",
            r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.max
        ),
    );
    let s = &r.server;
    line(
        &mut out,
        format!(
            "  server:       {} devices, {} check-ins, apps {} installed / {} failed / {} in progress, {} findings: {}",
            s.devices,
            s.check_ins,
            s.apps_installed,
            s.apps_failed,
            s.apps_in_progress,
            s.findings,
            if s.agrees { "agrees with the devices" } else { "DISAGREES" }
        ),
    );
    for d in &s.disagreements {
        line(&mut out, format!("    {d}"));
    }
    line(&mut out, format!("  wall time:    {:.1} s", r.wall_s));
    out
}
