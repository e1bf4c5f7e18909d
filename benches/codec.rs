//! Criterion benchmarks for the hot path of one management round trip: decode a typical server
//! message (`fixtures/syncml/server-typical-30-commands.xml`, about 10 KB, 33 commands), execute
//! its commands on a fresh device tree, and encode the reply.
//!
//! Run: `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3` (all five), or one
//! benchmark by name: `cargo bench --bench codec -- 'decode \+ execute'`. Criterion keeps each
//! result in `target/criterion/<name>/new/estimates.json` (`median.point_estimate`, in ns).
//!
//! Targets, each a ratio of medians measured in the same run (the machine's load shifts every
//! figure, not their ratio; quote `uptime` with them):
//! - "decode + execute + encode" at most 3 times "baseline: quick-xml events only" (a bare
//!   quick-xml scan of the same bytes, the floor of any decoder built on it);
//! - "decode typical 30-command server message" well under 100 µs.
//!
//! The memory target of a large message (a 5 MB server message under 300 MiB peak RSS) has its
//! own harness: `cargo bench --bench big_message`.

use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};

use mdmsim::syncml::{self, Command, Results, Status, SyncBody, SyncHdr, SyncMl};
use mdmsim::tree::{CmdOutcome, Csp, Env, Format, NodeSpec, Ops, Profile, Registry, Settings, Tree, TreeState};

const MESSAGE: &str = include_str!("../fixtures/syncml/server-typical-30-commands.xml");

/// A Policy-shaped CSP so that the message's Replaces and Adds land on real nodes when no other
/// CSP serves `./Vendor/MSFT/Policy` (registered after `csp::registry()`, so a real Policy CSP
/// wins when there is one).
struct BenchPolicy;

static POLICY: NodeSpec = NodeSpec::interior(
    "Policy",
    Ops::GET,
    &[
        NodeSpec::interior(
            "Config",
            Ops::GET,
            &[NodeSpec::interior(
                "<Area>",
                Ops::ALL_WRITE,
                &[NodeSpec::leaf("<Setting>", Format::Chr, Ops::ALL_WRITE).dynamic()],
            )
            .dynamic()],
        ),
        NodeSpec::interior(
            "Result",
            Ops::GET,
            &[NodeSpec::interior("<Area>", Ops::GET, &[NodeSpec::leaf("<Setting>", Format::Chr, Ops::GET).dynamic()])
                .dynamic()],
        ),
    ],
);

impl Csp for BenchPolicy {
    fn name(&self) -> &'static str {
        "BenchPolicy"
    }

    fn root(&self) -> &'static str {
        "Vendor/MSFT/Policy"
    }

    fn schema(&self) -> &'static NodeSpec {
        &POLICY
    }
}

fn registry() -> Registry {
    let mut r = mdmsim::csp::registry();
    r.register(BenchPolicy);
    r
}

/// A device as the template would create it: DevInfo and DevDetail values stored.
fn fresh_state() -> TreeState {
    let mut s = TreeState::new();
    for (k, v) in [
        ("DevInfo/DevId", "0123456789ABCDEF0123456789ABCDEF"),
        ("DevInfo/Man", "Contoso Ltd."),
        ("DevInfo/Mod", "Model X"),
        ("DevDetail/SwV", "10.0.19045.2006"),
        ("DevDetail/FwV", "1.2.3"),
        ("DevDetail/HwV", "1.0"),
        ("DevDetail/OEM", "Contoso"),
        ("DevDetail/DevTyp", "Model X"),
        ("DevDetail/Ext/Microsoft/SMBIOSSerialNumber", "SN-0001"),
        ("DevDetail/Ext/Microsoft/DeviceName", "PC-0001"),
        ("DevDetail/Ext/Microsoft/OSPlatform", "Windows 10 Enterprise"),
        ("DevDetail/Ext/Microsoft/TotalRAM", "16384"),
    ] {
        s.set_value(k, v);
    }
    s.commit();
    s
}

fn execute(registry: &Registry, state: &mut TreeState, env: &Env, msg: &SyncMl) -> Vec<CmdOutcome> {
    let mut tree = Tree::new(registry, state, env);
    msg.body.commands.iter().flat_map(|c| tree.execute(c)).collect()
}

/// The device's reply: SyncHdr status, one Status per outcome, Results for Gets (the outcomes'
/// items move into the Results, as the session does).
fn reply(msg: &SyncMl, outcomes: Vec<CmdOutcome>) -> SyncMl {
    let gets = outcomes.iter().filter(|o| !o.results.is_empty()).count();
    let mut commands = Vec::with_capacity(1 + outcomes.len() + gets);
    let mut id = 0;
    let mut next = || {
        id += 1;
        itoa::Buffer::new().format(id).to_string()
    };
    commands.push(Command::Status(Status {
        cmd_id: next(),
        msg_ref: msg.hdr.msg_id.clone(),
        cmd_ref: "0".into(),
        cmd: "SyncHdr".into(),
        data: "200".into(),
        ..Status::default()
    }));
    for o in outcomes {
        commands.push(Command::Status(Status {
            cmd_id: next(),
            msg_ref: msg.hdr.msg_id.clone(),
            cmd_ref: o.cmd_id.clone(),
            cmd: o.cmd.into_owned(),
            target_refs: o.target_refs,
            data: o.code.text(),
            ..Status::default()
        }));
        if !o.results.is_empty() {
            commands.push(Command::Results(Results {
                cmd_id: next(),
                msg_ref: msg.hdr.msg_id.clone(),
                cmd_ref: o.cmd_id,
                items: o.results,
                ..Results::default()
            }));
        }
    }
    SyncMl {
        hdr: SyncHdr {
            session_id: msg.hdr.session_id.clone(),
            msg_id: msg.hdr.msg_id.clone(),
            target: msg.hdr.source.clone(),
            source: msg.hdr.target.clone(),
            ..SyncHdr::default()
        },
        body: SyncBody { commands, final_: true },
    }
}

fn benches(c: &mut Criterion) {
    let msg = syncml::decode(MESSAGE).expect("the benchmark message decodes");
    let registry = registry();
    let env = Env {
        now: Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("valid date"),
        profile: Profile::Win10,
        settings: Arc::new(Settings::default()),
    };
    let template = fresh_state();
    let outcomes = execute(&registry, &mut template.clone(), &env, &msg);
    let results: usize = outcomes.iter().map(|o| o.results.len()).sum::<usize>();
    let statuses = outcomes.len();
    let answer = reply(&msg, outcomes);
    let wire = syncml::encode(&answer);
    eprintln!(
        "message: {} bytes, {} commands -> {} statuses, {} result items, reply {} bytes",
        MESSAGE.len(),
        msg.body.commands.len(),
        statuses,
        results,
        wire.len()
    );

    c.bench_function("decode typical 30-command server message", |b| {
        b.iter(|| syncml::decode(black_box(MESSAGE)).expect("decodes"))
    });
    // The floor: quick-xml alone reading the same bytes, events only (what the codec adds on top
    // is the element tree, the checks and the owned model).
    c.bench_function("baseline: quick-xml events only", |b| {
        b.iter(|| {
            let mut r = quick_xml::Reader::from_str(black_box(MESSAGE));
            let mut n = 0usize;
            loop {
                match r.read_event() {
                    Ok(quick_xml::events::Event::Eof) | Err(_) => break n,
                    Ok(_) => n += 1,
                }
            }
        })
    });
    c.bench_function("execute its commands on a fresh device tree", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |state| execute(&registry, state, &env, black_box(&msg)),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("encode the reply", |b| b.iter(|| syncml::encode(black_box(&answer))));
    c.bench_function("decode + execute + encode", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |state| {
                let m = syncml::decode(black_box(MESSAGE)).expect("decodes");
                let o = execute(&registry, state, &env, &m);
                syncml::encode(&reply(&m, o))
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(codec, benches);
criterion_main!(codec);
