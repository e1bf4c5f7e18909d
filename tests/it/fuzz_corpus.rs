//! The fuzz corpus on a stable toolchain: every file of `fuzz/corpus/<target>/` (the seeds from
//! `fixtures/`, `scenarios/` and the inputs the fuzzer found, regressions included) goes
//! through the same entry point as the cargo-fuzz target (`mdmsim::fuzz_entry`), then a short
//! seeded mutation run of the same files. A panic is a failure that names the target, the file
//! or the seed and round, and keeps the input in the temp folder.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use mdmsim::fuzz_entry::{Entry, TARGETS, target};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// One target and its corpus files (name and bytes), sorted by name.
struct Corpus {
    name: &'static str,
    entry: Entry,
    files: Vec<(String, Vec<u8>)>,
}

/// Every target's corpus.
fn corpus() -> Vec<Corpus> {
    TARGETS
        .iter()
        .map(|(name, f)| {
            let dir = corpus_root().join(name);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("directory entry").path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            let files = files
                .into_iter()
                .map(|p| {
                    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), bytes)
                })
                .collect();
            Corpus { name, entry: *f, files }
        })
        .collect()
}

/// Runs one input; a panic comes back as the message, with the input kept on disk.
fn run(name: &str, f: Entry, input: &[u8], label: &str) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| f(input))).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let kept = std::env::temp_dir().join(format!("mdmsim-fuzz-{name}-{}.bin", label.replace(['/', ' '], "-")));
        let _ = std::fs::write(&kept, input);
        format!("target {name}, {label}: panicked: {why}\n(input kept in {})", kept.display())
    })
}

#[test]
fn every_corpus_folder_belongs_to_a_target_and_every_target_has_seeds() {
    for entry in std::fs::read_dir(corpus_root()).expect("fuzz/corpus") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(target(&name).is_some(), "fuzz/corpus/{name} has no target in mdmsim::fuzz_entry::TARGETS");
    }
    let mut total = 0;
    for Corpus { name, files, .. } in corpus() {
        assert!(!files.is_empty(), "fuzz/corpus/{name} is empty");
        total += files.iter().map(|(_, b)| b.len()).sum::<usize>();
        let target_file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&target_file).unwrap_or_else(|e| panic!("{}: {e}", target_file.display()));
        assert!(
            text.contains(&format!("mdmsim::fuzz_entry::{name}(data)")),
            "{} calls another entry",
            target_file.display()
        );
    }
    // The corpus lives in the repository: keep it small.
    assert!(total < 1_000_000, "the committed corpus is {total} bytes");
}

#[test]
fn every_corpus_file_replays_through_its_target() {
    let mut failures = Vec::new();
    for Corpus { name, entry, files } in corpus() {
        for (file, bytes) in &files {
            if let Err(e) = run(name, entry, bytes, file) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Pieces that push the parsers to their edges: XML and TOML syntax, entities, numbers that do
/// not fit, a NUL (the session target's message separator).
const TRICKY: &[&str] = &[
    "<",
    ">",
    "</",
    "/>",
    "&amp;",
    "&#0;",
    "&#x110000;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "\u{feff}",
    "\0",
    "=",
    "\"",
    "'",
    "[",
    "]]",
    "[[",
    "\n",
    "18446744073709551616",
    "-9223372036854775809",
    "999999999",
    "-1",
    "1e309",
    "%7B",
    "xmlns:a=\"b\"",
    "<Final/>",
    "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>",
    "<Get><CmdID>9</CmdID><Item><Target><LocURI>./DevDetail/Ext/Microsoft/LocalTime</LocURI></Target></Item></Get>",
    "timezone = \"Europe/Paris\"\n",
    "nightly_cron = \"0 0 2 30 2 *\"\n",
    "é",
];

/// One random edit: flip a bit, cut a range, repeat a range, put a tricky piece in, or splice
/// in a piece of another file.
fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>, other: &[u8]) {
    let at = rng.random_range(0..=bytes.len());
    match rng.random_range(0..6u8) {
        0 if at < bytes.len() => bytes[at] ^= 1 << rng.random_range(0..8u32),
        1 => bytes.truncate(at),
        2 => {
            let end = (at + rng.random_range(1..64usize)).min(bytes.len());
            bytes.drain(at..end);
        }
        3 => {
            let end = (at + rng.random_range(1..128usize)).min(bytes.len());
            let copy = bytes[at..end].to_vec();
            let to = rng.random_range(0..=bytes.len());
            bytes.splice(to..to, copy);
        }
        4 if !other.is_empty() => {
            let from = rng.random_range(0..other.len());
            let end = (from + rng.random_range(1..256usize)).min(other.len());
            bytes.splice(at..at, other[from..end].iter().copied());
        }
        _ => {
            let piece = TRICKY[rng.random_range(0..TRICKY.len())].as_bytes();
            bytes.splice(at..at, piece.iter().copied());
        }
    }
}

#[test]
fn seeded_mutations_of_the_corpus_never_panic_a_target() {
    const SEED: u64 = 0x5EED_F022_2026;
    /// Mutated inputs in all, shared by the targets (about 2,200 each).
    const ROUNDS: usize = 20_000;
    let all = corpus();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let Corpus { name, entry, files } = &all[round % all.len()];
        let (file, seed_bytes) = &files[rng.random_range(0..files.len())];
        let (_, other) = &files[rng.random_range(0..files.len())];
        let mut bytes = seed_bytes.clone();
        for _ in 0..rng.random_range(1..5u8) {
            mutate(&mut rng, &mut bytes, other);
        }
        let label = format!("seed {SEED:#x} round {round} (a mutation of {file})");
        if let Err(e) = run(name, *entry, &bytes, &label) {
            failures.push(e);
            if failures.len() >= 5 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
