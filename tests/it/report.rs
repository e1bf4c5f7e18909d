//! Fleet run reports: a simulated working day of 2,000 devices (a night of Machine-mode polls,
//! a morning logon peak under which the server slows down and times out) recorded into two
//! shard reports and into the report of the whole run. `mdmsim report merge` of the shards is
//! that report exactly (histograms included); `report html` writes one self-contained page
//! (rendered in headless Chromium when it is installed); reports of other runs and files that
//! are not reports are refused with exit 2; the live metrics are scraped over HTTP.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use mdmsim::fleet::metrics::{self, Metrics};
use mdmsim::fleet::report::{Report, RunMeta};
use mdmsim::runner::fleet::Record;
use mdmsim::session::{Fault, Finding, Mode, Outcome, Summary, Trigger};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::support::mdmsim;

const DEVICES: u64 = 2000;
const SEED: u64 = 42;

fn start() -> DateTime<Utc> {
    "2025-03-03T00:00:00Z".parse().unwrap()
}

fn meta(shard: Option<(u32, u32)>, devices: u64) -> RunMeta {
    RunMeta {
        seed: SEED,
        devices,
        shard,
        start: start(),
        duration_s: 86_400,
        clock: "virtual".to_string(),
        target: "https://mdm.example.test/ManagementServer/MDM.svc".to_string(),
        mdmsim_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// What the runner tells a report.
enum Event {
    Record(Record, Option<u64>),
    Message(DateTime<Utc>, u64),
    Error(DateTime<Utc>, &'static str),
    Enrollment(DateTime<Utc>, u64, Option<&'static str>),
}

/// A working day of `DEVICES` devices, event by event with the device's number: the first 100
/// enroll in the first hour; every device polls every 8 hours and runs its nightly task near
/// 02:00 (Machine mode); users log on between 07:30 and 09:30 (Maintenance), some reboot, get a
/// push or sync by hand. The server slows down with the morning load: latency grows, timeouts
/// and 503s appear.
fn working_day(mut f: impl FnMut(u64, Event)) -> u64 {
    let mut sessions = 0;
    for d in 0..DEVICES {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ (d * 7919));
        let id = format!("DEV{d:05}");
        let min = |m: f64| start() + Duration::milliseconds((m * 60_000.0) as i64);
        let mut plan: Vec<(f64, Trigger)> = Vec::new();
        if d < 100 {
            let at = rng.random_range(0.0..60.0);
            let lat = (900.0 + rng.random_range(0.0..600.0)) as u64 * 1000;
            let failed = (d % 37 == 0).then_some("http-5xx");
            f(d, Event::Enrollment(min(at), lat, failed));
            if failed.is_none() {
                plan.push((at + 0.2, Trigger::Enrollment));
            }
        }
        let first_poll = rng.random_range(0.0..480.0);
        for k in 0..3 {
            plan.push((first_poll + 480.0 * k as f64, Trigger::Poll));
        }
        plan.push((120.0 + rng.random_range(0.0..180.0), Trigger::Nightly));
        // The morning: most users log on around 08:30.
        if rng.random_range(0..100) < 85 {
            let m: f64 = (0..3).map(|_| rng.random_range(-25.0..25.0)).sum();
            plan.push((510.0 + m, Trigger::Logon));
        }
        if rng.random_range(0..100) < 10 {
            plan.push((rng.random_range(420.0..1140.0), Trigger::Reboot));
        }
        if rng.random_range(0..100) < 8 {
            plan.push((rng.random_range(540.0..1080.0), Trigger::Push));
        }
        if rng.random_range(0..100) < 2 {
            plan.push((rng.random_range(540.0..1020.0), Trigger::Manual));
        }
        for (at_min, trigger) in plan {
            let at = min(at_min);
            let hour = at_min / 60.0;
            let work = (7.5..18.0).contains(&hour);
            let mode = match trigger {
                Trigger::Logon | Trigger::Manual | Trigger::Push | Trigger::Enrollment => Mode::Maintenance,
                Trigger::Poll if work => Mode::Maintenance,
                _ => Mode::Machine,
            };
            if trigger == Trigger::Poll && rng.random_range(0..100) == 0 {
                f(
                    d,
                    Event::Record(
                        Record::Missed { device: id.clone(), at, trigger, reason: "network off".into() },
                        None,
                    ),
                );
                continue;
            }
            // Load: the morning peak (08:00 to 09:00) slows the server down.
            let peak = (-((hour - 8.5) / 0.5).powi(2)).exp();
            let base_ms = 25.0 * (1.0 + 5.0 * peak) * (1.0 + rng.random::<f64>().powi(6) * 20.0);
            let messages = rng.random_range(2..5u32);
            let mut s = Summary::new(&id, &format!("{}", sessions + 1), mode, trigger, 1201, at);
            let timeout = rng.random::<f64>() < 0.04 * peak;
            let busy = rng.random::<f64>() < 0.002 + 0.01 * peak;
            let mut latency = 0;
            let mut t = at;
            for m in 0..messages {
                let ms = base_ms * rng.random_range(0.5..1.5);
                let us = (ms * 1000.0) as u64;
                latency += us;
                t += Duration::microseconds(us as i64);
                if timeout && m == messages - 1 {
                    f(d, Event::Error(t, "timeout"));
                    latency += 30_000_000;
                    break;
                }
                f(d, Event::Message(t, us));
                if busy && m == 0 {
                    f(d, Event::Error(t, "http-503"));
                    s.throttled += 1;
                }
                s.messages_sent += 1;
                s.messages_received += 1;
            }
            s.outcome = if timeout { Outcome::Failed } else { Outcome::Completed };
            if timeout {
                s.fault = Some(Fault::Unreachable);
                s.error = Some("timed out".into());
            }
            s.statuses_sent.insert(200, 2 + rng.random_range(0..6));
            if rng.random_range(0..10) == 0 {
                s.statuses_sent.insert(404, 1);
            }
            if mode == Mode::Machine && rng.random_range(0..50) == 0 {
                s.statuses_sent.insert(405, 1);
                s.findings.push(Finding {
                    what: "machine-mode-write".into(),
                    msg_id: "2".into(),
                    cmd_id: "4".into(),
                    cmd: "Replace".into(),
                    uri: Some("./User/Vendor/MSFT/Policy/Config/Browser/HomePages".into()),
                    why: "a user setting written in Machine mode".into(),
                });
            }
            s.statuses_received.insert(200, 1 + u32::from(s.messages_sent > 1));
            s.wall_us = latency;
            sessions += 1;
            f(d, Event::Record(Record::Session { device: id.clone(), at: t, summary: Box::new(s) }, Some(latency)));
        }
        if d % 400 == 7 {
            f(
                d,
                Event::Record(Record::Unenrolled { device: id.clone(), at: min(1000.0), reason: "wipe".into() }, None),
            );
        }
    }
    sessions
}

fn feed(r: &mut Report, e: &Event) {
    match e {
        Event::Record(rec, lat) => r.record(rec, *lat),
        Event::Message(at, us) => r.message(*at, *us),
        Event::Error(at, class) => r.error(*at, class),
        Event::Enrollment(at, us, class) => r.enrollment(*at, *us, *class),
    }
}

/// The day as two shard reports (even and odd devices) and as one report of the whole run.
fn reports() -> ([Report; 2], Report, u64) {
    let mut shards = [Report::new(meta(Some((0, 2)), DEVICES / 2)), Report::new(meta(Some((1, 2)), DEVICES / 2))];
    let mut whole = Report::new(meta(None, DEVICES));
    let sessions = working_day(|d, e| {
        feed(&mut shards[(d % 2) as usize], &e);
        feed(&mut whole, &e);
    });
    shards[0].set_resources(12.5, 9.0, 80 << 20);
    shards[1].set_resources(13.0, 9.5, 82 << 20);
    whole.set_resources(13.0, 18.5, 82 << 20);
    (shards, whole, sessions)
}

fn write_json(dir: &Path, name: &str, r: &Report) -> String {
    let p = dir.join(name);
    std::fs::write(&p, r.to_json()).unwrap();
    p.to_string_lossy().into_owned()
}

/// The summary as JSON without what differs between one process and shards by design (which
/// shards it covers).
fn figures(r: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(r.summary()).unwrap();
    v.as_object_mut().unwrap().remove("shards");
    v
}

#[test]
fn merged_shard_reports_are_the_report_of_one_run_histograms_included() {
    let ([a, b], whole, sessions) = reports();
    assert_eq!(whole.totals.sessions, sessions);
    assert!(a.totals.sessions > 0 && b.totals.sessions > 0);
    assert_eq!(a.totals.sessions + b.totals.sessions, sessions);

    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (write_json(dir.path(), "a.json", &a), write_json(dir.path(), "b.json", &b));
    let out = dir.path().join("merged.json");
    let (code, stdout, err) = mdmsim(&["report", "merge", &pb, &pa, "-o", &out.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.starts_with(&format!("wrote {}: 2 report(s), {sessions} sessions of 2000 devices", out.display())),
        "{stdout}"
    );
    let merged = Report::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();

    // Everything that one process running both shards would have counted, exactly.
    assert_eq!(merged.totals, whole.totals);
    assert_eq!(merged.latency, whole.latency, "the histograms add exactly");
    assert_eq!(merged.series, whole.series, "every bucket, its latency histogram included");
    assert_eq!(merged.bucket_s, 300);
    assert_eq!(merged.devices(), DEVICES);
    assert_eq!(merged.shards.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(figures(&merged), figures(&whole), "the same summary, percentiles included");

    // In the library too, in either order.
    let mut ab = a.clone();
    ab.merge(&b).unwrap();
    let mut ba = b.clone();
    ba.merge(&a).unwrap();
    assert_eq!(ab, ba);
    assert_eq!(ab, merged);

    // The figures a person checks.
    let s = merged.summary();
    assert_eq!(s.devices, 2000);
    assert_eq!(s.shards, "shards 0, 1 of 2");
    assert_eq!(s.totals.sessions, sessions);
    assert_eq!(s.totals.completed + s.totals.failed, sessions);
    assert!(s.totals.failed > 0 && s.totals.failed == s.totals.failed_unreachable, "{s:?}");
    assert_eq!(s.totals.errors["timeout"], s.totals.failed, "each timed-out session reported one timeout");
    assert_eq!(s.totals.sessions_by.values().sum::<u64>(), sessions);
    assert!(s.totals.sessions_by["logon/Maintenance"] > 1500, "{:?}", s.totals.sessions_by);
    assert!(s.totals.sessions_by["nightly/Machine"] > 1900, "{:?}", s.totals.sessions_by);
    assert_eq!(s.totals.enrollments, 100);
    assert_eq!(s.totals.enrollments_failed, 3, "devices 0, 37 and 74");
    assert_eq!(s.totals.unenrolled, 5);
    assert!(s.totals.findings["machine-mode-write"] > 0);
    let lat = &s.latency_ms["session"];
    assert!(lat.p50 < lat.p90 && lat.p90 < lat.p99 && lat.p99 <= lat.max, "{lat:?}");
    assert!(lat.max >= 30_000.0, "the timeouts are in the tail: {lat:?}");
    assert_eq!((s.wall_s, s.cpu_s, s.peak_rss_bytes), (13.0, 18.5, 82 << 20));
    // The morning peak is where the sessions are: the busiest bucket is between 08:00 and 09:00.
    let busiest = merged.series.iter().enumerate().max_by_key(|(_, b)| b.sessions).unwrap().0;
    let at = merged.bucket_start(busiest);
    assert!(at >= start() + Duration::hours(8) && at < start() + Duration::hours(9), "{at}");
}

#[test]
fn report_merge_refuses_other_runs_twice_merged_shards_and_other_files_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let a = Report::new(meta(Some((0, 2)), 10));
    let pa = write_json(dir.path(), "a.json", &a);
    let mut other = meta(Some((1, 2)), 10);
    other.seed = SEED + 1;
    let pother = write_json(dir.path(), "other.json", &Report::new(other));
    let out = dir.path().join("m.json");
    let out = out.to_string_lossy();

    let (code, _, err) = mdmsim(&["report", "merge", &pa, &pother, "-o", &out]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "{pa} and {pother} are not reports of the same run: seed is 42 in {pa} and 43 in {pother}"
        )),
        "{err}"
    );
    let mut hourly = meta(Some((1, 2)), 10);
    hourly.duration_s = 3600;
    let phourly = write_json(dir.path(), "hourly.json", &Report::new(hourly));
    let (code, _, err) = mdmsim(&["report", "merge", &pa, &phourly, "-o", &out]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("duration_s is 86400 in"), "{err}");

    let pa2 = dir.path().join("a-again.json");
    std::fs::copy(&pa, &pa2).unwrap();
    let (code, _, err) = mdmsim(&["report", "merge", &pa, &pa2.to_string_lossy(), "-o", &out]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{pa} and {}: shard 0/2 is in both reports; each shard is merged once", pa2.display())),
        "{err}"
    );
    assert!(!Path::new(&*out).exists(), "nothing is written when a merge is refused");

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\n  \"format\": \"mdmsim-fleet-report/1\",\n  \"run\": {\"seed\": \"x\"}\n}").unwrap();
    let (code, _, err) = mdmsim(&["report", "html", &broken.to_string_lossy(), "-o", &out]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:3:", broken.display())), "line and column: {err}");
    assert!(err.contains("invalid type: string \"x\", expected u64"), "{err}");

    let summary = dir.path().join("summary.json");
    std::fs::write(&summary, "{\"device_id\": \"DEV1\", \"outcome\": \"completed\"}").unwrap();
    let (code, _, err) = mdmsim(&["report", "summary", &summary.to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}: not an mdmsim fleet report", summary.display())), "{err}");

    let (code, _, err) = mdmsim(&["report", "merge", &pa, "-o", &dir.path().to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a directory, not a file"), "{err}");
    let missing = dir.path().join("nope.json");
    let (code, _, err) = mdmsim(&["report", "summary", &missing.to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}: cannot read it", missing.display())), "{err}");
}

#[test]
fn report_summary_prints_the_figures_as_text_and_json() {
    let ([a, b], whole, sessions) = reports();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (write_json(dir.path(), "a.json", &a), write_json(dir.path(), "b.json", &b));
    let (code, out, err) = mdmsim(&["report", "summary", &pa, &pb]);
    assert_eq!(code, 0, "{err}");
    let s = whole.summary();
    assert!(
        out.contains(
            "run:        seed 42, 2,000 devices (shards 0, 1 of 2), 1 d from 2025-03-03 00:00:00 UTC, virtual clock"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "sessions:   {} ({} completed, {} failed: {} unreachable, 0 protocol)",
            mdmsim::fleet::report::thousands(sessions),
            mdmsim::fleet::report::thousands(s.totals.completed),
            s.totals.failed,
            s.totals.failed
        )),
        "{out}"
    );
    assert!(out.contains("errors:     http-503 x"), "{out}");
    let (code, out, err) = mdmsim(&["report", "summary", "--json", &pa, &pb]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["sessions"], sessions);
    assert_eq!(json["latency_ms"]["session"]["p99"], s.latency_ms["session"].p99);
    assert_eq!(json["statuses_sent"]["405"], s.totals.statuses_sent[&405]);
}

#[test]
fn html_report_is_one_self_contained_page_with_charts() {
    let ([a, b], _, sessions) = reports();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (write_json(dir.path(), "a.json", &a), write_json(dir.path(), "b.json", &b));
    let page = dir.path().join("day.html");
    let (code, out, err) = mdmsim(&["report", "html", &pa, &pb, "-o", &page.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("wrote {}: {sessions} sessions of 2000 devices", page.display())), "{out}");
    let html = std::fs::read_to_string(&page).unwrap();
    let keep = std::env::var_os("MDMSIM_REPORT_SAMPLE").map(std::path::PathBuf::from);
    if let Some(keep) = &keep {
        std::fs::create_dir_all(keep).unwrap();
        std::fs::copy(&page, keep.join("fleet-report.html")).unwrap();
        std::fs::copy(&pa, keep.join("shard-0.json")).unwrap();
        std::fs::copy(&pb, keep.join("shard-1.json")).unwrap();
    }

    // Nothing is fetched when it is viewed: no script, no style sheet, no image, no font.
    for fetch in ["src=", "href=", "<link", "<script", "@import", "url(", "<img", "<iframe"] {
        assert!(!html.contains(fetch), "the page fetches nothing when viewed: {fetch}");
    }
    assert_eq!(html.matches("<svg").count(), 4, "four charts");
    // The header says which run it is.
    for fact in [
        "<dt>Seed</dt><dd>42</dd>",
        "<dt>Devices</dt><dd>2,000</dd>",
        "<dt>Shards</dt><dd>all 2 shards</dd>",
        "<dt>Target</dt><dd>https://mdm.example.test/ManagementServer/MDM.svc</dd>",
        "<dt>Duration</dt><dd>1 d</dd>",
        "<dt>Clock</dt><dd>virtual</dd>",
        "<dt>Simulated time</dt><dd>2025-03-03 00:00 UTC to 2025-03-04 00:00 UTC</dd>",
    ] {
        assert!(html.contains(fact), "{fact} not in the header");
    }
    // The charts' text is SVG text: axis titles, time labels, legends, bar labels.
    let texts = svg_texts(&html);
    for text in [
        "simulated time (UTC)",
        "sessions per second",
        "latency (ms)",
        "08:00",
        "sessions started",
        "p99",
        "logon",
        "Maintenance",
        "timeout",
        "errors per minute",
    ] {
        assert!(texts.iter().any(|t| t == text), "{text} not in the charts: {texts:?}");
    }
    assert!(html.contains("<caption>Latency (ms)</caption>"));
    assert!(html.contains("<td>machine-mode-write</td>"));
    chromium_renders(&page, keep.as_deref());
}

/// The text of every SVG `<text>` element of a page.
fn svg_texts(html: &str) -> Vec<String> {
    html.split("<text")
        .skip(1)
        .filter_map(|t| Some(t[t.find('>')? + 1..t.find("</text>")?].trim().to_string()))
        .collect()
}

/// Renders the page with `scripts/check-html-report.sh` (headless Chromium) and checks the
/// screenshot is a real picture of the page (kept in `keep` to look at). Skipped, with a note,
/// without Chromium.
fn chromium_renders(page: &Path, keep: Option<&Path>) {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .any(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    if !chromium {
        eprintln!("note: chromium is not installed; the report page was not rendered (apt install chromium)");
        return;
    }
    let shot = page.with_extension("png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-html-report.sh");
    let out = std::process::Command::new("sh").arg(&script).arg(page).arg(&shot).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(width, 1280, "the window's width");
    assert!(height >= 2400, "{height}");
    // Charts in color and text compress far worse than an empty page (a few KB).
    assert!(png.len() > 100_000, "{} bytes: the page looks empty", png.len());
    if let Some(keep) = keep {
        std::fs::copy(&shot, keep.join("fleet-report.png")).unwrap();
    }
}

#[tokio::test]
async fn metrics_are_served_for_prometheus_on_loopback() {
    let m = Arc::new(Metrics::new());
    let server = metrics::serve("127.0.0.1:0".parse().unwrap(), m.clone()).await.unwrap();
    m.set_devices(2000);
    m.set_in_flight(17);
    let mut n = 0;
    working_day(|d, e| {
        if d >= 20 {
            return;
        }
        match e {
            Event::Record(rec, lat) => {
                if matches!(rec, Record::Session { .. }) {
                    n += 1;
                }
                m.observe(&rec, lat)
            }
            Event::Message(_, us) => m.message(us),
            Event::Error(_, class) => m.error(class),
            Event::Enrollment(_, us, class) => m.enrollment(us, class),
        }
    });
    let resp = reqwest::get(server.url()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], metrics::CONTENT_TYPE);
    let text = resp.text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with([' ', '{']))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(value("mdmsim_sessions_total"), n as f64, "{text}");
    assert_eq!(value("mdmsim_session_latency_seconds_count"), n as f64, "{text}");
    assert_eq!(value("mdmsim_enrollments_total"), 20.0, "{text}");
    assert_eq!(value("mdmsim_devices"), 2000.0);
    assert_eq!(value("mdmsim_in_flight"), 17.0);
    assert!(value("mdmsim_messages_total") >= 2.0 * n as f64, "{text}");
    assert!(value("mdmsim_statuses_sent_total") > 0.0);
    assert!(
        text.contains("mdmsim_sessions_total{trigger=\"nightly\",mode=\"Machine\",outcome=\"completed\"} "),
        "{text}"
    );
    assert!(text.contains("# TYPE mdmsim_session_latency_seconds histogram"), "{text}");
    assert!(text.ends_with("# EOF\n"));
    // The same registry, scraped twice, says the same.
    let again = reqwest::get(server.url()).await.unwrap().text().await.unwrap();
    assert_eq!(again, text);
    let url = server.url();
    server.stop().await;
    assert!(reqwest::get(&url).await.is_err(), "stopped: nothing listens any more");

    let e = metrics::serve("192.0.2.1:9100".parse().unwrap(), m).await.err().unwrap();
    assert!(e.to_string().starts_with("refusing to serve metrics on 192.0.2.1:9100: not a loopback address"), "{e}");
}
