//! `mdmsim fleet --state DIR`: a fleet kept between runs, so that a second run with the same
//! directory continues the same fleet.
//!
//! The directory holds:
//! - `fleet.json`, the manifest: what defines the fleet (`--devices`, `--seed`, `--shard`, the
//!   template mix and a SHA-256 of it, the target) and the simulated instant it has reached;
//! - `db/`, the device store ([`mdmsim::runner::store`]): every device of the shard, whole, with
//!   its SessionID counter, tree and logged-on users;
//! - `server/`, with `--in-process`, the reference server's own folder (its CA and admin token);
//! - with `--discovery`, what the enrolled devices need to go on with their enrollment:
//!   `identities.jsonl` (a line per enrolled device: its certificate chain, DER in base64, and
//!   which key it holds), `keys/` (the pool's keys, PKCS#8 PEM, each written once; with
//!   `--unique-keys` a device's key is in its line) and `roots.pem` (the roots the enrollments
//!   provisioned). Everything in the directory is private to the user (0700/0600).
//!
//! A first run writes the manifest, makes the devices and stores them (in groups, one write
//! each); a later run checks the command line against the manifest (a flag that says otherwise
//! is refused with exit 2, one left out is taken from it), loads the devices and goes on from
//! the instant reached. Finished sessions go to the store through its group-commit writer, off
//! the run loop; at each simulated day boundary the writer is drained and the manifest's instant
//! moves on, so that a kill loses at most the day under way for the clock, while the store
//! keeps every device whole and its SessionIDs never go backwards (leases are reserved for all
//! devices at once at each day boundary). The store keeps devices, not their session history:
//! the report has the counts.
//!
//! An enrolled fleet (`--discovery`) enrolls on its first run and goes on with the same
//! enrollments on the next: a kept device is loaded with its identity and not enrolled again
//! (no credential is needed then); a device whose enrollment failed, or that a stopped run had
//! not enrolled yet, enrolls on the next run. A device's identity is written (and synced)
//! before the device is stored, so a stored device always has it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use openssl::pkey::{PKey, Private};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use mdmsim::device::Device;
use mdmsim::enroll::Secret;
use mdmsim::fleet::mix::Mix;
use mdmsim::runner::enroll::write_private_key;
use mdmsim::runner::fleet::{Fleet, LeaseKeeper, Member, Record};
use mdmsim::runner::keys::KeyPool;
use mdmsim::runner::mtls::TlsIdentity;
use mdmsim::runner::store::{Store, StoreError, StoreWriter};
use mdmsim::schedule::Event;

use super::exit::{STATE, USAGE, fail};
use super::fleet::Shard;
use super::fleet_population::Population;

/// The manifest's file name in the state directory.
pub const MANIFEST: &str = "fleet.json";
/// The manifest's `format`.
const FORMAT: &str = "mdmsim-fleet-state/1";
/// The in-process reference server's folder in the state directory.
const SERVER_DIR: &str = "server";
/// The store's folder in the state directory (as [`Store`] names it).
const DB_DIR: &str = "db";
/// SessionIDs reserved ahead of a device's counter (more than a device uses in a day).
const LEASE_AHEAD: u64 = 256;
/// At a day boundary, devices with fewer SessionIDs reserved than this get `LEASE_AHEAD` more.
const LEASE_LOW: u64 = 128;
/// The store's page cache: the devices are in memory during a run, the store is written (and
/// read once, when the run starts), so a small cache does (sled's default is 1 GiB).
const CACHE_BYTES: u64 = 64 << 20;
/// New devices stored per write.
const CREATE_BATCH: usize = 64;

/// What defines a kept fleet, and how far it has gone (`fleet.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// `--devices`: devices of the whole fleet (all shards).
    pub devices: u64,
    pub seed: u64,
    /// `--shard`, as `I/N`.
    pub shard: String,
    /// The `--templates` file (an absolute path), or `None` for the built-in mix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<PathBuf>,
    /// SHA-256 of the mix as checked (its templates, identity and behaviour tables), so that a
    /// changed mix, or a changed template file it names, is noticed.
    pub mix_sha256: String,
    pub target: Target,
    /// The fleet's first simulated instant (the behaviour model counts from it).
    pub start: DateTime<Utc>,
    /// The simulated instant the fleet has reached: the next run starts there.
    pub reached: DateTime<Utc>,
    /// Runs that used the directory (the first one included).
    pub runs: u64,
}

/// Where the fleet's sessions go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// `--in-process`.
    InProcess,
    /// `--server URL` with `--provider-id ID`.
    Server { url: String, provider_id: String },
    /// `--discovery URL`: devices that enroll, as `--email` (else each as its own UPN), with
    /// keys from a pool of `key_pool` (`None`: `--unique-keys`).
    Discovery {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[serde(default)]
        key_pool: Option<usize>,
    },
}

/// The command line's say on what defines the fleet (`None`: not given).
pub struct Given<'a> {
    pub state: Option<&'a Path>,
    pub devices: Option<u64>,
    pub seed: Option<u64>,
    pub shard: Option<Shard>,
    pub templates: Option<&'a Path>,
    pub in_process: bool,
    pub server: Option<&'a str>,
    pub provider_id: Option<&'a str>,
    pub discovery: Option<&'a str>,
    pub email: Option<&'a str>,
    pub key_pool: Option<usize>,
    pub unique_keys: bool,
    pub start: Option<DateTime<Utc>>,
}

/// The fleet a run runs: from the command line, and from the manifest of a kept fleet.
pub struct Plan {
    pub devices: u64,
    pub seed: u64,
    pub shard: Shard,
    pub mix: Mix,
    pub target: Target,
    /// This run's first simulated instant.
    pub start: DateTime<Utc>,
    /// The fleet's first simulated instant (`start`, unless the fleet is resumed).
    pub fleet_start: DateTime<Utc>,
    /// The run went on with a kept fleet, from this instant.
    pub resumed_from: Option<DateTime<Utc>>,
    /// The kept fleet (`--state`), not opened yet ([`FleetState::open`]).
    pub state: Option<FleetState>,
}

/// Defaults without a kept fleet.
const DEFAULT_SEED: u64 = 1;
const DEFAULT_POOL: usize = mdmsim::runner::keys::DEFAULT_POOL;
const DEFAULT_PROVIDER: &str = "mdmsim";

/// Works out the run's fleet: the command line's, or that of the state directory (checked
/// against the command line). Nothing is written.
pub fn plan(given: Given<'_>, default_start: DateTime<Utc>) -> anyhow::Result<Plan> {
    let kept = match given.state {
        Some(dir) => inspect(dir)?,
        None => None,
    };
    let Some(m) = kept else {
        let devices = given.devices.ok_or_else(|| match given.state {
            Some(dir) => fail(USAGE, format!("--devices is needed to start a fleet in {}", dir.display())),
            None => fail(USAGE, "--devices is needed"),
        })?;
        let mix = load_mix(given.templates)?;
        let target = match (given.in_process, given.server, given.discovery) {
            (true, ..) => Target::InProcess,
            (false, Some(url), _) => Target::Server {
                url: url.to_string(),
                provider_id: given.provider_id.unwrap_or(DEFAULT_PROVIDER).to_string(),
            },
            (false, None, Some(url)) => Target::Discovery {
                url: url.to_string(),
                email: given.email.map(str::to_string),
                key_pool: match (given.unique_keys, given.key_pool) {
                    (true, _) => None,
                    (false, Some(0)) => {
                        return Err(fail(USAGE, "--key-pool must be at least 1 (or give --unique-keys)"));
                    }
                    (false, k) => Some(k.unwrap_or(DEFAULT_POOL)),
                },
            },
            (false, None, None) => return Err(fail(USAGE, "--server URL, --discovery URL or --in-process is needed")),
        };
        let start = given.start.unwrap_or(default_start);
        let shard = given.shard.unwrap_or(Shard { index: 0, count: 1 });
        let seed = given.seed.unwrap_or(DEFAULT_SEED);
        let state = match given.state {
            Some(dir) => {
                let templates = match given.templates {
                    Some(p) => Some(
                        std::path::absolute(p).map_err(|e| fail(USAGE, format!("--templates {}: {e}", p.display())))?,
                    ),
                    None => None,
                };
                let manifest = Manifest {
                    format: FORMAT.to_string(),
                    devices,
                    seed,
                    shard: shard_text(shard),
                    templates,
                    mix_sha256: mix_hash(&mix),
                    target: target.clone(),
                    start,
                    reached: start,
                    runs: 0,
                };
                Some(FleetState::new(dir, manifest, false))
            }
            None => None,
        };
        return Ok(Plan { devices, seed, shard, mix, target, start, fleet_start: start, resumed_from: None, state });
    };
    // A kept fleet: every flag given must say what the manifest says.
    let dir = given.state.unwrap_or(Path::new("."));
    let differs = |flag: &str, kept: &str, given: &str| {
        fail(
            USAGE,
            format!(
                "{flag} {given} contradicts the fleet kept in {}: its {flag} is {kept} (leave {flag} out to go on \
                 with that fleet, or give another --state directory for a new one)",
                dir.display()
            ),
        )
    };
    if let Some(n) = given.devices.filter(|n| *n != m.devices) {
        return Err(differs("--devices", &m.devices.to_string(), &n.to_string()));
    }
    if let Some(s) = given.seed.filter(|s| *s != m.seed) {
        return Err(differs("--seed", &m.seed.to_string(), &s.to_string()));
    }
    let shard: Shard = m.shard.parse().map_err(|e| corrupt(dir, &format!("shard: {e}")))?;
    if let Some(s) = given.shard.filter(|s| *s != shard) {
        return Err(differs("--shard", &m.shard, &shard_text(s)));
    }
    let mix = match (given.templates, &m.templates) {
        (Some(p), _) => load_mix(Some(p))?,
        (None, Some(kept)) => mdmsim::fleet::mix::load(kept).map_err(|e| {
            fail(USAGE, format!("the template mix of the fleet kept in {} ({}): {e}", dir.display(), kept.display()))
        })?,
        (None, None) => Mix::builtin(),
    };
    let hash = mix_hash(&mix);
    if hash != m.mix_sha256 {
        let kept = m.templates.as_ref().map_or_else(|| "the built-in mix".to_string(), |p| p.display().to_string());
        let now = match given.templates {
            Some(p) => format!("--templates {}", p.display()),
            None => format!("{kept} as it is now"),
        };
        return Err(fail(
            USAGE,
            format!(
                "--templates: {now} is not the template mix of the fleet kept in {} ({kept}, SHA-256 {}; now {hash}): a \
                 kept fleet goes on with its mix unchanged",
                dir.display(),
                short(&m.mix_sha256),
            ),
        ));
    }
    match (&m.target, given.discovery) {
        (Target::Discovery { url, email, key_pool }, _) => {
            if let Some(given) = given.discovery.filter(|g| g != url) {
                return Err(differs("--discovery", url, given));
            }
            if let Some(given) = given.email.filter(|g| Some(*g) != email.as_deref()) {
                return Err(differs("--email", email.as_deref().unwrap_or("(each device's own UPN)"), given));
            }
            let given_keys = match (given.unique_keys, given.key_pool) {
                (true, _) => Some(None),
                (false, Some(k)) => Some(Some(k)),
                (false, None) => None,
            };
            if let Some(g) = given_keys.filter(|g| g != key_pool) {
                let text =
                    |k: &Option<usize>| k.map_or_else(|| "--unique-keys".to_string(), |k| format!("--key-pool {k}"));
                return Err(fail(
                    USAGE,
                    format!(
                        "{} contradicts the fleet kept in {}: its devices enroll with {} (leave it out to go on with \
                         that fleet)",
                        text(&g),
                        dir.display(),
                        text(key_pool)
                    ),
                ));
            }
            if given.in_process || given.server.is_some() {
                return Err(fail(
                    USAGE,
                    format!(
                        "{} contradicts the fleet kept in {}: its devices enroll through --discovery {url} (leave it \
                         out to go on with that fleet)",
                        if given.in_process {
                            "--in-process".to_string()
                        } else {
                            format!("--server {}", given.server.unwrap_or_default())
                        },
                        dir.display()
                    ),
                ));
            }
        }
        (_, Some(url)) => {
            return Err(fail(
                USAGE,
                format!(
                    "--discovery {url} contradicts the fleet kept in {}: its devices are pre-provisioned (leave \
                     --discovery out to go on with that fleet)",
                    dir.display()
                ),
            ));
        }
        _ => {}
    }
    if !matches!(m.target, Target::Discovery { .. })
        && (given.email.is_some() || given.key_pool.is_some() || given.unique_keys)
    {
        return Err(fail(
            USAGE,
            format!(
                "--email, --key-pool and --unique-keys go with devices that enroll; the fleet kept in {} is \
                 pre-provisioned",
                dir.display()
            ),
        ));
    }
    match (&m.target, given.in_process, given.server) {
        (Target::InProcess, _, Some(url)) => {
            return Err(fail(
                USAGE,
                format!(
                    "--server {url} contradicts the fleet kept in {}: its target is --in-process (leave --server out \
                     to go on with that fleet, or give another --state directory for a new one)",
                    dir.display()
                ),
            ));
        }
        (Target::Server { url, .. }, true, _) => {
            return Err(fail(
                USAGE,
                format!(
                    "--in-process contradicts the fleet kept in {}: its target is --server {url} (leave --in-process \
                     out to go on with that fleet, or give another --state directory for a new one)",
                    dir.display()
                ),
            ));
        }
        (Target::Server { url, .. }, _, Some(given)) if given != url => return Err(differs("--server", url, given)),
        _ => {}
    }
    if let (Target::Server { provider_id, .. }, Some(given)) = (&m.target, given.provider_id)
        && given != provider_id
    {
        return Err(differs("--provider-id", provider_id, given));
    }
    if let Some(s) = given.start.filter(|s| *s != m.reached) {
        return Err(fail(
            USAGE,
            format!(
                "--start {}: the fleet kept in {} has reached {} and goes on from there (leave --start out)",
                s.to_rfc3339(),
                dir.display(),
                m.reached.to_rfc3339()
            ),
        ));
    }
    let (devices, seed, target, start, fleet_start) = (m.devices, m.seed, m.target.clone(), m.reached, m.start);
    Ok(Plan {
        devices,
        seed,
        shard,
        mix,
        target,
        start,
        fleet_start,
        resumed_from: Some(start),
        state: Some(FleetState::new(dir, m, true)),
    })
}

fn template_error(e: mdmsim::schedule::NightlyError) -> anyhow::Error {
    fail(USAGE, format!("template: {e}"))
}

fn load_mix(templates: Option<&Path>) -> anyhow::Result<Mix> {
    match templates {
        Some(path) => mdmsim::fleet::mix::load(path).map_err(|e| fail(USAGE, format!("--templates: {e}"))),
        None => Ok(Mix::builtin()),
    }
}

/// SHA-256 of the checked mix, whatever file it was read from.
fn mix_hash(mix: &Mix) -> String {
    let text = format!("{:?}", Mix { origin: String::new(), ..mix.clone() });
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn shard_text(s: Shard) -> String {
    format!("{}/{}", s.index, s.count)
}

fn corrupt(dir: &Path, what: &str) -> anyhow::Error {
    fail(
        STATE,
        format!(
            "{}: not a usable fleet manifest: {what} (the file is left as it is; give another --state directory for a \
             new fleet)",
            dir.join(MANIFEST).display()
        ),
    )
}

/// The manifest of the fleet kept in `dir`; `None` for a directory where a new fleet can start
/// (missing or empty). Refuses a file, a directory holding something else, a broken manifest.
fn inspect(dir: &Path) -> anyhow::Result<Option<Manifest>> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(STATE, format!("--state {}: {e}", dir.display()))),
    };
    if !meta.is_dir() {
        return Err(fail(STATE, format!("--state {}: is a file, not a fleet's state directory", dir.display())));
    }
    let manifest = dir.join(MANIFEST);
    let text = match std::fs::read(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| fail(STATE, format!("--state {}: {e}", dir.display())))?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>();
            if entries.is_empty() {
                return Ok(None);
            }
            entries.sort();
            if dir.join(DB_DIR).is_dir() {
                return Err(fail(
                    STATE,
                    format!(
                        "--state {}: holds a device store that is not a fleet's (no {MANIFEST}; made by `mdmsim device \
                         new` or `mdmsim enroll`, for `mdmsim run`): give a new or empty directory for a fleet",
                        dir.display()
                    ),
                ));
            }
            return Err(fail(
                STATE,
                format!(
                    "--state {}: is not empty and holds no fleet (no {MANIFEST}; found {}): give a new or empty directory",
                    dir.display(),
                    entries.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Err(e) => return Err(fail(STATE, format!("{}: {e}", manifest.display()))),
    };
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| corrupt(dir, &e.to_string()))?;
    if m.format != FORMAT {
        return Err(corrupt(dir, &format!("format {:?}, this version reads {FORMAT:?}", m.format)));
    }
    if m.devices == 0 || m.reached < m.start {
        return Err(corrupt(dir, "devices 0, or reached before start"));
    }
    Ok(Some(m))
}

/// The enrolled devices' identities, a JSON line each (the last line of a device wins).
const IDENTITIES: &str = "identities.jsonl";
/// The pool's keys, `<bits>-<slot>.pem` each.
const KEYS_DIR: &str = "keys";
/// The roots the enrollments provisioned.
const ROOTS: &str = "roots.pem";

/// One line of `identities.jsonl`: what an enrolled device presents in its sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdentityLine {
    device: String,
    /// The certificate chain, client certificate first, DER in base64.
    chain: Vec<String>,
    key: KeyLine,
}

/// Which key an enrolled device holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeyLine {
    /// Key `slot` of the pool's keys of `bits` bits (`keys/<bits>-<slot>.pem`).
    Pool { bits: u32, slot: usize },
    /// The device's own key (`--unique-keys`), PKCS#8 PEM.
    Own { pem: String },
}

/// The state directory of a kept fleet: its manifest, its store and the store's writer.
pub struct FleetState {
    dir: PathBuf,
    manifest: Manifest,
    resumed: bool,
    store: Option<Arc<Store>>,
    writer: Option<StoreWriter>,
    /// The DeviceIDs of the members made (or enrolled) by this run, to store.
    fresh: HashSet<String>,
    /// When the devices started to be made or loaded.
    began: Option<std::time::Instant>,
    /// Enrolled devices: the identities kept by earlier runs, by DeviceID.
    identities: HashMap<String, IdentityLine>,
    /// The pool's keys kept by earlier runs, by bits and slot.
    pool_keys: HashMap<(u32, usize), PKey<Private>>,
    /// The roots kept, and those of this run's enrollments.
    roots: BTreeSet<String>,
    /// What this run's enrollments add: identity lines, pool keys, whether roots came.
    new_lines: Vec<IdentityLine>,
    new_keys: BTreeMap<(u32, usize), PKey<Private>>,
    new_roots: bool,
}

impl FleetState {
    fn new(dir: &Path, manifest: Manifest, resumed: bool) -> FleetState {
        FleetState {
            dir: dir.to_path_buf(),
            manifest,
            resumed,
            store: None,
            writer: None,
            fresh: HashSet::new(),
            began: None,
            identities: HashMap::new(),
            pool_keys: HashMap::new(),
            roots: BTreeSet::new(),
            new_lines: Vec::new(),
            new_keys: BTreeMap::new(),
            new_roots: false,
        }
    }

    /// The in-process reference server's folder.
    pub fn server_dir(&self) -> PathBuf {
        self.dir.join(SERVER_DIR)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the directory: a new fleet's is created private (0700) with its manifest, then the
    /// store; a kept fleet's store is opened (recovering from a crash when needed). Files the
    /// process creates from then on are private to the user (umask 077).
    pub fn open(&mut self) -> anyhow::Result<()> {
        // The store holds the devices' MD5 credentials: everything made from now on (the
        // manifest, sled's files, the server's folder, reports) is private to the user.
        super::private_files();
        let db = self.dir.join(DB_DIR);
        self.manifest.runs += 1;
        let store = if self.resumed && db.is_dir() {
            let store = Store::open_cached(&self.dir, CACHE_BYTES).map_err(super::store_error)?;
            super::warn_loose(&store);
            self.write_manifest()?;
            store
        } else {
            if self.resumed && self.manifest.reached > self.manifest.start {
                return Err(fail(
                    STATE,
                    format!(
                        "{}: the store of the fleet kept there is missing ({} has reached {}); give another --state \
                         directory for a new fleet",
                        self.dir.display(),
                        MANIFEST,
                        self.manifest.reached.to_rfc3339()
                    ),
                ));
            }
            if !self.dir.exists() {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(&self.dir).map_err(|e| fail(STATE, format!("--state {}: {e}", self.dir.display())))?;
            }
            // The manifest first: a run stopped while it makes the devices leaves a fleet whose
            // missing devices the next run makes.
            self.write_manifest()?;
            let store = Store::init_cached(&self.dir, CACHE_BYTES).map_err(super::store_error)?;
            super::warn_loose(&store);
            store
        };
        self.store = Some(Arc::new(store));
        self.began = Some(std::time::Instant::now());
        if self.resumed && matches!(self.manifest.target, Target::Discovery { .. }) {
            self.load_enrollments()?;
        }
        Ok(())
    }

    /// Reads what the enrolled devices of earlier runs need: their identities, the pool's keys
    /// and the provisioned roots. A line cut short by a stop is skipped (its device was not
    /// stored, and enrolls again).
    fn load_enrollments(&mut self) -> anyhow::Result<()> {
        let path = self.dir.join(IDENTITIES);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(fail(STATE, format!("{}: {e}", path.display()))),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(l) = serde_json::from_str::<IdentityLine>(line) {
                self.identities.insert(l.device.clone(), l);
            }
        }
        let keys = self.dir.join(KEYS_DIR);
        if keys.is_dir() {
            let entries = std::fs::read_dir(&keys).map_err(|e| fail(STATE, format!("{}: {e}", keys.display())))?;
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((bits, slot)) = name.strip_suffix(".pem").and_then(|n| n.split_once('-')) else { continue };
                let (Ok(bits), Ok(slot)) = (bits.parse::<u32>(), slot.parse::<usize>()) else { continue };
                let bad = |e: String| fail(STATE, format!("{}: {e}", entry.path().display()));
                let pem = std::fs::read(entry.path()).map_err(|e| bad(e.to_string()))?;
                let key = PKey::private_key_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
                self.pool_keys.insert((bits, slot), key);
            }
        }
        let roots = self.dir.join(ROOTS);
        match std::fs::read(&roots) {
            Ok(pem) => {
                let certs = certificates(&pem).map_err(|e| fail(STATE, format!("{}: {e}", roots.display())))?;
                self.roots.extend(certs);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(STATE, format!("{}: {e}", roots.display()))),
        }
        Ok(())
    }

    /// Puts the pool's keys kept by earlier runs back in `pool`, so that devices enrolling now
    /// hold the keys the kept lines name.
    pub fn preset_keys(&self, pool: &KeyPool) {
        for (&(bits, slot), key) in &self.pool_keys {
            pool.preset(bits, slot, key.clone());
        }
    }

    /// The roots the kept enrollments provisioned (PEM).
    pub fn roots(&self) -> Vec<String> {
        self.roots.iter().cloned().collect()
    }

    /// Enrolled device `index` of the fleet at `now`, loaded from the store with its identity;
    /// `None` when it is not kept (it enrolls).
    pub fn kept_enrolled(
        &mut self,
        population: &Population,
        index: u64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<(Member, Arc<TlsIdentity>)>> {
        let Some(m) = self.load(population, index, now)? else { return Ok(None) };
        let id = m.engine.device.id.to_string();
        let lines = self.dir.join(IDENTITIES);
        let Some(line) = self.identities.remove(id.as_str()) else {
            return Err(fail(
                STATE,
                format!(
                    "{}: device {id} is kept but its identity is not in {} (give another --state directory for a new \
                     fleet)",
                    self.dir.display(),
                    lines.display()
                ),
            ));
        };
        let identity =
            self.identity(&line).map_err(|e| fail(STATE, format!("{}: device {id}: {e}", lines.display())))?;
        Ok(Some((m, Arc::new(identity))))
    }

    fn identity(&self, line: &IdentityLine) -> Result<TlsIdentity, String> {
        use base64::Engine as _;
        let key = match &line.key {
            KeyLine::Pool { bits, slot } => self
                .pool_keys
                .get(&(*bits, *slot))
                .cloned()
                .ok_or_else(|| format!("{KEYS_DIR}/{bits}-{slot}.pem is missing"))?,
            KeyLine::Own { pem } => PKey::private_key_from_pem(pem.as_bytes()).map_err(|e| format!("its key: {e}"))?,
        };
        let chain = line
            .chain
            .iter()
            .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("its certificate chain: {e}"))?;
        TlsIdentity::from_der(chain, key)
    }

    /// Device `m` (`index` of the fleet) just enrolled with `identity` and a key of `pool`: it
    /// is stored with its identity by [`FleetState::keep`].
    pub fn enrolled(&mut self, m: &Member, pool: &KeyPool, index: u64, identity: &TlsIdentity) -> anyhow::Result<()> {
        use base64::Engine as _;
        let key = match pool.slot(index) {
            Some(slot) => {
                let bits = identity.key().bits();
                if !self.pool_keys.contains_key(&(bits, slot)) {
                    self.new_keys.entry((bits, slot)).or_insert_with(|| identity.key().clone());
                }
                KeyLine::Pool { bits, slot }
            }
            None => {
                let pem = identity
                    .key()
                    .private_key_to_pem_pkcs8()
                    .map_err(|e| fail(STATE, format!("device {}: its key: {e}", m.engine.device.id)))?;
                KeyLine::Own { pem: String::from_utf8_lossy(&pem).into_owned() }
            }
        };
        let chain = identity.chain_der().map(|d| base64::engine::general_purpose::STANDARD.encode(d)).collect();
        let id = m.engine.device.id.to_string();
        self.new_lines.push(IdentityLine { device: id.clone(), chain, key });
        self.fresh.insert(id);
        Ok(())
    }

    /// Roots provisioned by this run's enrollments, kept for the next runs.
    pub fn add_roots(&mut self, roots: &[String]) -> anyhow::Result<()> {
        for r in roots {
            let certs = certificates(r.as_bytes()).map_err(|e| fail(STATE, format!("a provisioned root: {e}")))?;
            for c in certs {
                self.new_roots |= self.roots.insert(c);
            }
        }
        Ok(())
    }

    /// Writes what this run's enrollments added (keys, roots, then identity lines, each synced)
    /// before their devices are stored.
    fn save_enrollments(&mut self) -> anyhow::Result<()> {
        let bad = |path: &Path, e: std::io::Error| fail(STATE, format!("writing {}: {e}", path.display()));
        if !self.new_keys.is_empty() {
            let dir = self.dir.join(KEYS_DIR);
            std::fs::create_dir_all(&dir).map_err(|e| bad(&dir, e))?;
            for ((bits, slot), key) in std::mem::take(&mut self.new_keys) {
                let path = dir.join(format!("{bits}-{slot}.pem"));
                let pem =
                    key.private_key_to_pem_pkcs8().map_err(|e| fail(STATE, format!("{}: {e}", path.display())))?;
                let pem = Secret::new(String::from_utf8_lossy(&pem).into_owned());
                write_private_key(&path, &pem).map_err(|e| bad(&path, e))?;
                self.pool_keys.insert((bits, slot), key);
            }
        }
        if std::mem::take(&mut self.new_roots) {
            let path = self.dir.join(ROOTS);
            write_synced(&path, self.roots.iter().cloned().collect::<String>().as_bytes())
                .map_err(|e| bad(&path, e))?;
        }
        if !self.new_lines.is_empty() {
            let path = self.dir.join(IDENTITIES);
            let mut text = Vec::new();
            for line in std::mem::take(&mut self.new_lines) {
                serde_json::to_writer(&mut text, &line).map_err(|e| bad(&path, e.into()))?;
                text.push(b'\n');
            }
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| bad(&path, e))?;
            f.write_all(&text).map_err(|e| bad(&path, e))?;
            f.sync_all().map_err(|e| bad(&path, e))?;
        }
        Ok(())
    }

    fn store(&self) -> anyhow::Result<&Arc<Store>> {
        self.store.as_ref().ok_or_else(|| fail(STATE, "the fleet's state directory is not open"))
    }

    /// Device `index` of the fleet at `now`: loaded from the store when it is there, else made
    /// (and stored by [`FleetState::keep`]).
    pub fn member(&mut self, population: &Population, index: u64, now: DateTime<Utc>) -> anyhow::Result<Member> {
        match self.load(population, index, now)? {
            Some(m) if m.engine.device.enrollment.is_some() => Err(fail(
                STATE,
                format!(
                    "{}: device {} is enrolled (a certificate of its own) in a fleet of pre-provisioned devices",
                    self.dir.display(),
                    m.engine.device.id
                ),
            )),
            Some(m) => Ok(m),
            None => {
                let m = population.member(index, now).map_err(template_error)?;
                self.fresh.insert(m.engine.device.id.to_string());
                Ok(m)
            }
        }
    }

    /// Device `index` as the store keeps it, going on at `now`; `None` when it is not kept.
    fn load(&self, population: &Population, index: u64, now: DateTime<Utc>) -> anyhow::Result<Option<Member>> {
        let id = population.device_id(index);
        let device = match self.store()?.load(Some(id.as_str())) {
            Ok(device) => device,
            Err(StoreError::UnknownDevice { .. }) => return Ok(None),
            Err(e) => return Err(super::store_error(e)),
        };
        let mut m = population.resumed(device, index, now).map_err(template_error)?;
        // A device gone for good stays off the network.
        if population.gone_by(index, now) {
            m.engine.scheduler.script([(now, Event::NetworkOff)]);
        }
        Ok(Some(m))
    }

    /// Stores the devices made by [`FleetState::member`] or enrolled ([`FleetState::enrolled`],
    /// their identities first) in groups, one write each, reserves SessionIDs for every device
    /// in one write, and starts the store's writer; says on standard error what it did and how
    /// long it took.
    pub fn keep(&mut self, members: &mut [Member]) -> anyhow::Result<()> {
        let store = Arc::clone(self.store()?);
        self.save_enrollments()?;
        let fresh: Vec<usize> =
            (0..members.len()).filter(|&i| self.fresh.contains(members[i].engine.device.id.as_str())).collect();
        for chunk in fresh.chunks(CREATE_BATCH) {
            let devices: Vec<&Device> = chunk.iter().map(|&i| &members[i].engine.device).collect();
            store.create_all(&devices).map_err(super::store_error)?;
            for &i in chunk {
                // Stored whole: the tree's changes so far are on disk.
                members[i].engine.device.tree.take_changes();
            }
        }
        let mut devices: Vec<&mut Device> = members.iter_mut().map(|m| &mut m.engine.device).collect();
        store.reserve_session_ids(&mut devices, LEASE_AHEAD).map_err(super::store_error)?;
        self.writer = Some(store.writer());
        let took = self.began.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let loaded = members.len() - fresh.len();
        super::out::warn(format_args!(
            "mdmsim: fleet kept in {}: {} devices loaded, {} made, in {took:.2} s; from {}",
            self.dir.display(),
            loaded,
            fresh.len(),
            self.manifest.reached.to_rfc3339()
        ));
        self.fresh = HashSet::new();
        Ok(())
    }

    /// Reserves a device's next SessionIDs when it used up what was reserved at the last day
    /// boundary (a device with more than a day's sessions).
    pub fn lease_keeper(&self) -> Option<LeaseKeeper> {
        let store = Arc::clone(self.store.as_ref()?);
        Some(LeaseKeeper(Arc::new(move |d: &mut Device| {
            store.reserve_session_ids(&mut [d], LEASE_AHEAD).map_err(|e| e.to_string())
        })))
    }

    /// A record of the run: a finished session goes to the store's writer.
    pub fn record(&self, record: &Record, device: &mut Device) {
        if let (Record::Session { .. }, Some(w)) = (record, &self.writer) {
            // The device's state, not the session's summary: the report keeps the counts.
            w.save(device);
        }
    }

    /// The fleet reached the day boundary `reached`: everything the writer was given is
    /// committed, the manifest says so, and devices short of SessionIDs get more, in one write.
    pub fn day_done(&mut self, fleet: &mut Fleet, reached: DateTime<Utc>) -> anyhow::Result<()> {
        let store = Arc::clone(self.store()?);
        if let Some(w) = self.writer.take() {
            w.finish().map_err(|e| fail(STATE, format!("saving the fleet's devices: {e}")))?;
        }
        self.manifest.reached = reached.max(self.manifest.reached);
        self.write_manifest()?;
        let mut low: Vec<&mut Device> = fleet
            .members_mut()
            .map(|m| &mut m.engine.device)
            .filter(|d| d.session_lease < d.sessions.saturating_add(LEASE_LOW))
            .collect();
        if !low.is_empty() {
            store.reserve_session_ids(&mut low, LEASE_AHEAD).map_err(super::store_error)?;
        }
        self.writer = Some(store.writer());
        Ok(())
    }

    /// The run is over at `reached`: every device is saved, the manifest moves on, the store
    /// closes cleanly.
    fn finish(mut self, members: Vec<Member>, reached: DateTime<Utc>) -> anyhow::Result<()> {
        let began = std::time::Instant::now();
        let store = self.store.take().ok_or_else(|| fail(STATE, "the fleet's state directory is not open"))?;
        let writer = self.writer.take().unwrap_or_else(|| store.writer());
        let count = members.len();
        for mut m in members {
            writer.save(&mut m.engine.device);
        }
        writer.finish().map_err(|e| fail(STATE, format!("saving the fleet's devices: {e}")))?;
        // Never back: a run of no time ends where it began.
        self.manifest.reached = reached.max(self.manifest.reached);
        self.write_manifest()?;
        match Arc::try_unwrap(store) {
            Ok(store) => store.close().map_err(|e| fail(STATE, format!("closing {}: {e}", self.dir.display())))?,
            Err(_) => return Err(fail(STATE, "the fleet's store is still in use at the end of the run")),
        }
        super::out::warn(format_args!(
            "mdmsim: fleet kept in {}: {count} devices saved in {:.2} s; reached {}",
            self.dir.display(),
            began.elapsed().as_secs_f64(),
            self.manifest.reached.to_rfc3339()
        ));
        Ok(())
    }

    /// Writes the manifest whole or not at all.
    fn write_manifest(&self) -> anyhow::Result<()> {
        let path = self.dir.join(MANIFEST);
        let bad = |e: std::io::Error| fail(STATE, format!("writing {}: {e}", path.display()));
        let mut text = serde_json::to_vec_pretty(&self.manifest).map_err(|e| bad(e.into()))?;
        text.push(b'\n');
        write_synced(&path, &text).map_err(bad)
    }
}

/// The certificates of a PEM text, each written back as PEM: the same certificate reads the
/// same whatever its line endings or the text around it.
fn certificates(pem: &[u8]) -> Result<Vec<String>, openssl::error::ErrorStack> {
    openssl::x509::X509::stack_from_pem(pem)?
        .iter()
        .map(|c| c.to_pem().map(|p| String::from_utf8_lossy(&p).into_owned()))
        .collect()
}

/// Writes `path` whole or not at all: a new file, synced, renamed over the old one.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The end of a run: the kept fleet's devices are saved (see [`FleetState`]), or the fleet is
/// dropped when nothing keeps it.
pub fn finish(state: Option<FleetState>, fleet: Fleet, reached: DateTime<Utc>) -> anyhow::Result<()> {
    match state {
        Some(s) => s.finish(fleet.into_members(), reached),
        None => {
            drop(fleet);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(state: &Path) -> Given<'_> {
        Given {
            state: Some(state),
            devices: Some(10),
            seed: Some(7),
            shard: None,
            templates: None,
            in_process: true,
            server: None,
            provider_id: None,
            discovery: None,
            email: None,
            key_pool: None,
            unique_keys: false,
            start: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn kept(dir: &Path, reached: &str) {
        let plan = plan(given(dir), at("2026-03-02T00:00:00Z")).unwrap();
        let mut m = plan.state.unwrap().manifest;
        m.reached = at(reached);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
    }

    #[test]
    fn a_kept_fleet_goes_on_from_where_it_stopped_and_fills_in_what_is_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("f");
        kept(&dir, "2026-03-03T00:00:00Z");
        let g = Given { devices: None, seed: None, in_process: false, ..given(&dir) };
        let p = plan(g, at("2030-01-01T00:00:00Z")).unwrap();
        assert_eq!((p.devices, p.seed, p.target), (10, 7, Target::InProcess));
        assert_eq!(p.start, at("2026-03-03T00:00:00Z"));
        assert_eq!(p.fleet_start, at("2026-03-02T00:00:00Z"));
        assert_eq!(p.resumed_from, Some(p.start));
    }

    #[test]
    fn flags_that_contradict_a_kept_fleet_are_refused_naming_flag_and_both_values() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("f");
        kept(&dir, "2026-03-03T00:00:00Z");
        let start = at("2026-03-02T00:00:00Z");
        let refused = |g: Given<'_>| {
            let e = plan(g, start).err().expect("refused");
            assert_eq!(super::super::exit::code_of(&e), USAGE, "{e}");
            e.to_string()
        };
        let e = refused(Given { seed: Some(8), ..given(&dir) });
        assert!(e.starts_with("--seed 8 contradicts") && e.contains("its --seed is 7"), "{e}");
        let e = refused(Given { devices: Some(11), ..given(&dir) });
        assert!(e.contains("--devices 11") && e.contains("is 10"), "{e}");
        let e = refused(Given { shard: Some(Shard { index: 1, count: 2 }), ..given(&dir) });
        assert!(e.contains("--shard 1/2") && e.contains("is 0/1"), "{e}");
        let e = refused(Given { in_process: false, server: Some("http://x/"), ..given(&dir) });
        assert!(e.contains("--server http://x/"), "{e}");
        let e = refused(Given { start: Some(start), ..given(&dir) });
        assert!(e.contains("--start") && e.contains("2026-03-03T00:00:00+00:00"), "{e}");
        let mix = tmp.path().join("mix.toml");
        std::fs::write(&mix, "[[template]]\npath = \"win10-desktop\"\nweight = 100\n").unwrap();
        let e = refused(Given { templates: Some(&mix), ..given(&dir) });
        assert!(e.starts_with("--templates") && e.contains("the built-in mix"), "{e}");
    }

    #[test]
    fn an_enrolled_fleet_keeps_its_discovery_user_and_keys_and_refuses_other_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("f");
        let url = "https://mdm.test/EnrollmentServer/Discovery.svc";
        fn enrolled<'a>(g: Given<'a>, url: &'a str) -> Given<'a> {
            Given { in_process: false, discovery: Some(url), ..g }
        }
        let g = Given { email: Some("a@mdm.test"), key_pool: Some(0), ..enrolled(given(&dir), url) };
        let e = plan(g, at("2026-03-02T00:00:00Z")).err().expect("a pool of no key");
        assert!(e.to_string().contains("--key-pool must be at least 1"), "{e}");
        let p = plan(Given { email: Some("a@mdm.test"), ..enrolled(given(&dir), url) }, at("2026-03-02T00:00:00Z"))
            .unwrap();
        let target =
            Target::Discovery { url: url.into(), email: Some("a@mdm.test".into()), key_pool: Some(DEFAULT_POOL) };
        assert_eq!(p.target, target);
        let mut m = p.state.unwrap().manifest;
        m.reached = at("2026-03-03T00:00:00Z");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();

        let bare = Given { devices: None, seed: None, in_process: false, ..given(&dir) };
        assert_eq!(
            plan(Given { ..bare }, at("2030-01-01T00:00:00Z")).unwrap().target,
            target,
            "taken from the manifest"
        );
        let refused = |g: Given<'_>| plan(g, at("2030-01-01T00:00:00Z")).err().expect("refused").to_string();
        let g = Given { devices: None, seed: None, in_process: false, unique_keys: true, ..given(&dir) };
        assert!(refused(g).contains("--unique-keys contradicts"));
        let g = Given { devices: None, seed: None, in_process: false, email: Some("b@mdm.test"), ..given(&dir) };
        assert!(refused(g).contains("--email b@mdm.test contradicts"));
        let e = refused(Given { devices: None, seed: None, ..given(&dir) });
        assert!(e.contains("--in-process contradicts") && e.contains(url), "{e}");
    }

    #[test]
    fn what_is_not_a_fleet_directory_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let refused = |dir: &Path| {
            let e = plan(given(dir), at("2026-03-02T00:00:00Z")).err().expect("refused");
            assert_eq!(super::super::exit::code_of(&e), STATE, "{e}");
            e.to_string()
        };
        assert!(refused(&file).contains("is a file"));
        let other = tmp.path().join("other");
        std::fs::create_dir_all(other.join("db")).unwrap();
        assert!(refused(&other).contains("not a fleet's"));
        let broken = tmp.path().join("broken");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join(MANIFEST), "{ not json").unwrap();
        assert!(refused(&broken).contains("fleet.json: not a usable fleet manifest"));
        assert_eq!(std::fs::read_to_string(broken.join(MANIFEST)).unwrap(), "{ not json");
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(plan(given(&empty), at("2026-03-02T00:00:00Z")).unwrap().resumed_from.is_none());
    }
}
