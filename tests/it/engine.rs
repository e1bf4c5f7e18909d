//! The device engine driven through the three exchanges: devices living a day against the
//! reference server in the same process (no sockets), a seeded bad network in front of it, and
//! `mdmsim bench sessions`.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use mdmsim::device::{Device, DeviceId, Template};
use mdmsim::runner::exchange::{Exchange, InProcess, NetworkModel, Simulated};
use mdmsim::runner::fleet::{Fleet, FleetOptions, Member, Record, RunStats};
use mdmsim::schedule::{Event, VirtualClock, device_seed};
use mdmsim::server::{AuthMode, Config, InProcessServer};
use mdmsim::tree::Profile;

use crate::support::mdmsim;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).unwrap()
}

fn server(dir: &std::path::Path, seed: u64) -> Arc<InProcessServer> {
    let mut config = Config::demo();
    config.management.auth = AuthMode::None;
    config.management.seed = Some(seed);
    let at = start();
    Arc::new(mdmsim::server::start_in_process(dir, config, Some(Arc::new(move || at))).unwrap())
}

/// `n` pre-provisioned devices with a reboot, a logon and a push in their day.
fn members(n: u64, url: &str) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let d = Device::new(
                DeviceId::from_seed(100 + i),
                Profile::Win10,
                url,
                "mdmsim",
                &Template::builtin(Profile::Win10),
                start(),
            );
            let mut m = Member::new(d, device_seed(9, i), start()).unwrap();
            let h = |x: i64| start() + chrono::Duration::hours(x);
            m.engine.scheduler.script([
                (h(1), Event::Reboot),
                (h(2), Event::Logon { user: mdmsim::schedule::ENROLLED.into() }),
                (h(5), Event::Push),
            ]);
            m
        })
        .collect()
}

/// Runs `n` devices for 12 simulated hours through `exchange`; returns the stats and every
/// session line.
fn run(exchange: Arc<dyn Exchange>, url: &str, n: u64, concurrency: usize) -> (RunStats, Vec<String>, Vec<Member>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let registry = Arc::new(mdmsim::csp::registry());
    let opts = FleetOptions { concurrency, ..FleetOptions::default() };
    let mut fleet = Fleet::with_exchange(registry, exchange, members(n, url), opts);
    let mut clock = VirtualClock::new(start());
    let mut lines = Vec::new();
    let busy = fleet.in_flight();
    let mut most = 0;
    let stats = rt.block_on(fleet.run(&mut clock, start() + chrono::Duration::hours(12), |r, _| {
        // Read while the fleet runs: the devices still at work, never more than the bound.
        let now = busy.load(std::sync::atomic::Ordering::Relaxed);
        assert!(now < concurrency as u64, "{now} devices at work besides the one that just ended");
        most = most.max(now);
        if let Record::Session { device, summary, .. } = r {
            lines.push(format!(
                "{device} {} {} {:?} {:?}",
                summary.session_id, summary.trigger, summary.outcome, summary.statuses_sent
            ));
        }
    }));
    assert_eq!(busy.load(std::sync::atomic::Ordering::Relaxed), 0, "nobody at work once the run is over");
    if concurrency > 1 {
        assert!(most > 0, "devices due at the same instant work side by side");
    }
    (stats, lines, fleet.into_members())
}

#[test]
fn devices_live_a_day_against_the_in_process_server_and_the_same_seed_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), 5);
    let url = srv.management_url();
    let (stats, lines, members) = run(Arc::new(InProcess::new(Arc::clone(&srv))), &url, 6, 4);
    assert_eq!(stats.failed, 0, "{lines:#?}");
    // Post-enrollment, reboot (Machine), logon, push, and the polls the server set up.
    for t in ["enrollment/Maintenance", "reboot/Machine", "logon/Maintenance", "push/Maintenance"] {
        assert_eq!(stats.by_trigger_mode.get(t), Some(&6), "{t}: {:?}", stats.by_trigger_mode);
    }
    assert!(stats.by_trigger_mode.get("poll/Maintenance").is_some_and(|n| *n >= 6), "{:?}", stats.by_trigger_mode);
    // The server saw every device and delivered its profile; the devices hold it.
    assert_eq!(srv.devices().len(), 6);
    for m in &members {
        let rec = srv.device(m.engine.device.id.as_str()).expect("the server knows the device");
        assert!(rec.checkins.len() >= 5, "{}: {} check-ins", rec.device_id, rec.checkins.len());
        assert!(
            m.engine.device.tree.value("Vendor/MSFT/DMClient/Provider/mdmsim/Poll/IntervalForFirstSetOfRetries")
                == Some("15"),
            "the server's poll schedule is on the device"
        );
    }
    // Same seeds, a new server: the same sessions with the same statuses, whatever the
    // concurrency.
    let dir2 = tempfile::tempdir().unwrap();
    let srv2 = server(dir2.path(), 5);
    let (stats2, lines2, _) = run(Arc::new(InProcess::new(srv2)), &url, 6, 1);
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(lines2), sorted(lines.clone()));
    assert_eq!((stats2.sessions, stats2.messages), (stats.sessions, stats.messages));
}

#[test]
fn a_seeded_bad_network_fails_sessions_the_same_way_every_time_and_devices_recover() {
    let model = NetworkModel { loss: 0.15, reset: 0.05, server_error: 0.05, truncate: 0.05, ..NetworkModel::default() };
    let once = || {
        let dir = tempfile::tempdir().unwrap();
        let srv = server(dir.path(), 3);
        let url = srv.management_url();
        let net = Arc::new(Simulated::new(InProcess::new(srv), model, 42));
        let (stats, lines, members) = run(net.clone(), &url, 5, 3);
        (stats, lines, members, net.faults())
    };
    let (stats, lines, members, faults) = once();
    assert!(stats.failed > 0, "seed 42 makes faults: {lines:#?}");
    assert!(stats.completed > stats.failed, "{stats:?}");
    assert!(faults.iter().any(|f| f.kind == "loss") && faults.iter().any(|f| f.kind != "loss"), "{faults:?}");
    // Every device is whole and went on after its failures: its SessionIDs count every session.
    for m in &members {
        let d = &m.engine.device;
        let ran = lines.iter().filter(|l| l.starts_with(d.id.as_str())).count() as u64;
        assert_eq!(d.sessions, ran, "{}", d.id);
        assert!(d.last_success.is_some());
    }
    let (stats2, lines2, _, faults2) = once();
    assert_eq!(faults2, faults, "seed 42 again: the same faults on the same requests");
    assert_eq!((stats2.failed, stats2.completed), (stats.failed, stats.completed));
    let mut a = lines.clone();
    let mut b = lines2;
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn bench_sessions_reports_what_it_measured_as_json() {
    let (code, out, err) = mdmsim(&["bench", "sessions", "--devices", "20", "--duration", "12h", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["devices"], 20);
    assert_eq!(v["exchange"], "in-process");
    let sessions = v["sessions"].as_u64().unwrap();
    assert!(sessions >= 20 * 3, "{v}");
    assert_eq!(v["completed"].as_u64(), Some(sessions));
    assert!(v["messages"].as_u64().unwrap() >= sessions);
    for k in ["wall_s", "cpu_s", "sessions_per_cpu_s"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(v["sessions_by"]["reboot/Machine"].as_u64().unwrap() >= 20);
    let (code, _, err) = mdmsim(&["bench", "sessions", "--exchange", "http"]);
    assert_eq!(code, 2, "--exchange http needs --server: {err}");
}

/// The in-process exchange sends a throttled message (HTTP 429/503) again as the HTTP
/// transport does, noting the wait its Retry-After asks for: the sessions' `throttled` add up
/// to what the server injected.
#[test]
fn throttled_messages_are_sent_again_in_process_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::demo();
    config.management.auth = AuthMode::None;
    config.management.seed = Some(5);
    config.faults = mdmsim::server::FaultConfig {
        spec: "429=10%,503=10%".parse().unwrap(),
        seed: Some(4),
        slow_delay: None,
        retry_after: Some(std::time::Duration::from_secs(3)),
    };
    let at = start();
    let srv = Arc::new(mdmsim::server::start_in_process(dir.path(), config, Some(Arc::new(move || at))).unwrap());
    let url = srv.management_url();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let registry = Arc::new(mdmsim::csp::registry());
    let exchange: Arc<dyn Exchange> = Arc::new(InProcess::new(Arc::clone(&srv)));
    let mut fleet = Fleet::with_exchange(registry, exchange, members(4, &url), FleetOptions::default());
    let mut clock = VirtualClock::new(start());
    let (mut throttled, mut completed_after_throttle, mut errors) = (0u64, 0, Vec::new());
    rt.block_on(fleet.run(&mut clock, start() + chrono::Duration::hours(12), |r, _| {
        if let Record::Session { summary, .. } = r {
            throttled += u64::from(summary.throttled);
            if summary.throttled > 0 && summary.outcome == mdmsim::session::Outcome::Completed {
                completed_after_throttle += 1;
            }
            if let Some(e) = &summary.error {
                errors.push(e.clone());
            }
        }
    }));
    let faults = srv.summary().faults;
    let injected: u64 = ["429", "503"].iter().map(|k| faults.get(*k).copied().unwrap_or(0) as u64).sum();
    assert!(injected > 0, "{faults:?}");
    assert_eq!(throttled, injected);
    assert!(completed_after_throttle > 0);
    assert!(errors.iter().all(|e| e.contains("4 times; giving up")), "{errors:?}");
}
