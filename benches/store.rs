//! Writing session ends to the state directory: `cargo bench --bench store [-- SESSIONS [RUNS]]`.
//!
//! A fleet of 100 devices (the built-in Windows 10 template plus 50 policy values each, about
//! 8 KB of JSON per device, the size of a device after a few real sessions) lives `SESSIONS`
//! (default 10,000) session ends in all; each session changes three tree values, the counter and
//! the last-success time, and has a summary. Three ways of writing them, each run `RUNS` times
//! (default 5) in a fresh directory, medians printed:
//! - `whole-json`: the earlier store, the whole device as JSON and a flush per session;
//! - `save_session`: [`Store::save_session`], the one-device path (what differs, a flush each);
//! - `writer`: [`Store::writer`], group commits, with SessionIDs reserved 32 ahead as an engine
//!   would.
//!
//! Sessions per second count the wall time from the first write to the last flush; bytes per
//! session are the growth of sled's files (`size_on_disk`) over the sessions.

use std::time::Instant;

use chrono::{TimeZone, Utc};

use mdmsim::device::{Device, DeviceId, Template};
use mdmsim::runner::store::Store;
use mdmsim::session::{Mode, Summary, Trigger};
use mdmsim::tree::Profile;

const DEVICES: u64 = 100;

#[derive(Clone, Copy, PartialEq)]
enum Way {
    WholeJson,
    SaveSession,
    Writer,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::WholeJson => "whole-json",
            Way::SaveSession => "save_session",
            Way::Writer => "writer",
        }
    }
}

fn fleet() -> Vec<Device> {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap();
    let t = Template::builtin(Profile::Win10);
    (0..DEVICES)
        .map(|seed| {
            let mut d = Device::new(DeviceId::from_seed(seed), Profile::Win10, "https://mdm.example/x", "P", &t, at);
            for n in 0..50 {
                d.tree.set_value(
                    &format!("Vendor/MSFT/Policy/Config/Area{}/Setting{n}", n / 10),
                    format!("<enabled/><data id=\"Value{n}\" value=\"configured by the server, 0x{n:04x}\"/>"),
                );
            }
            d.tree.commit();
            d
        })
        .collect()
}

/// One session: the counter, three values, the last success; its summary.
fn live(d: &mut Device) -> Summary {
    let cfg = d.next_session(Trigger::Manual);
    let n = d.sessions;
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap() + chrono::Duration::minutes(n as i64);
    d.tree.set_value("Vendor/MSFT/DMClient/Provider/P/Poll/NumberOfFirstRetries", n.to_string());
    d.tree.set_value(&format!("Vendor/MSFT/Policy/Config/Area{}/Setting{}", n % 5, n % 50), format!("v{n}"));
    d.tree.set_value("DevDetail/Ext/Microsoft/DeviceName", format!("PC-{n}"));
    d.tree.commit();
    d.last_success = Some(at);
    let mut s = Summary::new(d.id.as_str(), &cfg.session_id, Mode::Machine, Trigger::Manual, 1201, at);
    s.messages_sent = 2;
    s.messages_received = 2;
    s
}

/// One run: (sessions per second, bytes on disk per session).
fn run(way: Way, sessions: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut devices = fleet();
    let store = Store::init(dir.path()).expect("a store");
    for d in &devices {
        store.create(d).expect("create");
    }
    let mut devices: Vec<Device> = devices.iter_mut().map(|d| store.load(Some(d.id.as_str())).expect("load")).collect();
    // The earlier store's layout, written as it did (one tree, whole JSON, flush per session).
    let db = sled::open(dir.path().join("whole")).expect("sled");
    let whole = db.open_tree("devices").expect("tree");
    let summaries = db.open_tree("sessions").expect("tree");
    let size = || match way {
        Way::WholeJson => db.size_on_disk().expect("size"),
        _ => store.size_on_disk().expect("size"),
    };
    let before = size();
    let started = Instant::now();
    match way {
        Way::WholeJson => {
            for i in 0..sessions {
                let d = &mut devices[(i % DEVICES) as usize];
                let summary = live(d);
                let key = d.id.as_str().as_bytes();
                let json = serde_json::to_vec(&*d).expect("json");
                let skey = format!("{}/{:010}", d.id, d.sessions);
                let sjson = serde_json::to_vec(&summary).expect("json");
                use sled::Transactional as _;
                (&whole, &summaries)
                    .transaction(|(w, s)| {
                        w.insert(key, json.as_slice())?;
                        s.insert(skey.as_bytes(), sjson.as_slice())?;
                        Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .expect("transaction");
                db.flush().expect("flush");
            }
        }
        Way::SaveSession => {
            for i in 0..sessions {
                let d = &mut devices[(i % DEVICES) as usize];
                let summary = live(d);
                store.save_session(d, &summary).expect("save_session");
            }
        }
        Way::Writer => {
            let writer = store.writer();
            for i in 0..sessions {
                if i % DEVICES == 0 && devices[0].needs_lease() {
                    let mut all: Vec<&mut Device> = devices.iter_mut().collect();
                    store.reserve_session_ids(&mut all, 32).expect("reserve");
                }
                let d = &mut devices[(i % DEVICES) as usize];
                let summary = live(d);
                writer.session_ended(d, &summary);
            }
            writer.finish().expect("the writer");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let grown = size().saturating_sub(before);
    (sessions as f64 / secs, grown as f64 / sessions as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut numbers = std::env::args().skip(1).filter_map(|a| a.parse::<u64>().ok());
    let sessions = numbers.next().unwrap_or(10_000).max(DEVICES);
    let runs = numbers.next().unwrap_or(5).max(1);
    let whole_json = serde_json::to_vec(&fleet()[0]).map(|j| j.len()).unwrap_or(0);
    println!("{DEVICES} devices ({whole_json} bytes of JSON each), {sessions} session ends, median of {runs} runs");
    for way in [Way::WholeJson, Way::SaveSession, Way::Writer] {
        let results: Vec<(f64, f64)> = (0..runs).map(|_| run(way, sessions)).collect();
        let rate = median(results.iter().map(|r| r.0).collect());
        let bytes = median(results.iter().map(|r| r.1).collect());
        println!("{:<13} {rate:>9.0} sessions/s  {bytes:>7.0} bytes on disk per session", way.name());
    }
}
