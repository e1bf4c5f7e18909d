//! Device state on disk: a sled database in the `--state DIR` directory, and the writer that
//! keeps it off the run loop.
//!
//! Owns persistence only: what a device record is made of, how and when it reaches the disk, and
//! what a crash may cost. It does not decide when sessions happen or what they change.
//!
//! # Layout
//!
//! The database (`DIR/db`) holds these sled trees:
//! - `device`: DeviceID → the parts of a device that rarely change (JSON: id, profile, server
//!   URL, provider ID, template settings, creation time, enrollment, unenrollment);
//! - `state`: DeviceID → the small fields every session changes (JSON: session counter, who is
//!   logged on, cached server, last success, pending alerts);
//! - `values`: `<DeviceID>/<tree key>` → one tree entry: a byte `0` for an existing dynamic
//!   interior node, a byte `1` and the UTF-8 value for a leaf. A session that changed three nodes
//!   writes three values;
//! - `leases`: DeviceID → the highest SessionID reserved for the device (8 bytes, big-endian);
//! - `sessions`: `<DeviceID>/<counter, 10 digits>` → the [`Summary`] of that session (JSON);
//! - `meta`: `default` (the device used when `--device` is omitted: the first one created) and
//!   `clean-shutdown` (present only between a clean close and the next open);
//! - `devices`: the earlier layout, a whole device as JSON per DeviceID. It is still read, and
//!   the first write of such a device converts it in the same transaction as that write.
//!
//! # Writing
//!
//! [`Store::writer`] starts a [`StoreWriter`]: a thread that takes finished sessions from a
//! bounded queue and commits them in groups (everything queued, waiting up to 50 ms for more, at
//! most 1,024 items) in one sled transaction, then flushes once per group. The caller's thread
//! only takes the device's committed changes ([`TreeState::take_changes`]) and clones the small
//! fields; the writer thread encodes them. The one-device commands use [`Store::save_session`]
//! and [`Store::save`], which write what differs from the disk and flush before returning.
//!
//! # Crash guarantees (kill -9)
//!
//! - Every device is whole: a session's values, its counter and its summary are written in one
//!   transaction, so a crash leaves a device as of some session end, never half of one.
//! - At most the sessions in flight and those of the last unflushed group are lost.
//! - SessionIDs never go backwards. The counter on disk may lag behind the SessionIDs a server
//!   has seen (the session in flight, a group not flushed yet), so a durable lease covers them:
//!   `save` and `save_session` keep the lease [`SAVE_LEASE_AHEAD`] past the counter they write,
//!   and an engine that writes through the writer reserves ids ahead, for many devices in one
//!   transaction ([`Store::reserve_session_ids`], whenever [`Device::needs_lease`]). Opening a
//!   store that was not closed cleanly moves every counter up to its lease first, in one
//!   transaction. A clean close ([`Store::close`], or dropping the store, with no writer left
//!   unfinished and no write failed) sets `clean-shutdown`, so that the next run continues with
//!   consecutive SessionIDs; opening removes the mark again. Leases are not rewritten at a
//!   clean close: the next open ignores them, and they stay valid reservations should that
//!   process crash in turn.
//!
//! The contract behind the last point: every session's counter reaches the store (through a
//! writer or `save*`) before the store is closed. A device abandoned with a session in flight
//! must still be handed in, with its counter (which counts that session).
//!
//! # Permissions and locking
//!
//! The records hold secrets (the DMAcc MD5 credentials of both directions; enrolled devices keep
//! their private key next to the store), so the directory is private: [`Store::init`] creates
//! it 0700 with every file in it 0600, and [`Store::open`] reports entries that group or others
//! may use ([`Store::loose_permissions`]) for the binary to warn about. Only [`Store::init`]
//! creates anything: opening a missing directory is [`StoreError::Missing`]. While a store is
//! open its sled lock is held and `lock.pid` names the process, so that a second process is
//! told which one holds it ([`StoreError::Locked`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::device::{Device, DeviceId, Enrollment, PendingAlert, ServerCache, Unenrolled};
use crate::schedule::UserState;
use crate::session::Summary;
use crate::tree::{Entry, Profile, Settings, TreeState};

/// The sled database inside the state directory.
const DB_DIR: &str = "db";
/// The file naming the process that holds the store open (its pid, one line).
const LOCK_PID_FILE: &str = "lock.pid";
/// Bounds of the permission walk (a state directory holds a few files per device).
const MAX_WALK_ENTRIES: usize = 100_000;
const MAX_WALK_DEPTH: usize = 8;

/// A state directory that cannot be used, or a device it does not hold.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The directory does not exist (only `mdmsim device new` and `mdmsim enroll` create one).
    #[error(
        "state directory {} does not exist (create a device with `mdmsim device new` or `mdmsim enroll`)",
        dir.display()
    )]
    Missing { dir: PathBuf },
    /// The path names a file or something else that is not a directory.
    #[error("{} is a file, not a state directory", dir.display())]
    NotADirectory { dir: PathBuf },
    /// The directory exists but holds no store (an empty or foreign directory).
    #[error(
        "{} holds no mdmsim state (no {}/{DB_DIR}; create a device with `mdmsim device new` or `mdmsim enroll`)",
        dir.display(),
        dir.display()
    )]
    NoStore { dir: PathBuf },
    /// Another process has the store open (sled allows one process at a time).
    #[error(
        "state directory {} is in use by {} (one process at a time; wait for it to end or stop it)",
        dir.display(),
        Holder::describe(holder.as_ref())
    )]
    Locked { dir: PathBuf, holder: Option<Holder> },
    /// The directory cannot be opened or created (missing permissions, a broken store...).
    #[error("state directory {}: {reason}", dir.display())]
    Open { dir: PathBuf, reason: String },
    /// No device with this id.
    #[error("state directory {}: no device {id} (see `mdmsim device list`)", dir.display())]
    UnknownDevice { dir: PathBuf, id: String },
    /// `--device` was omitted and no device exists yet.
    #[error("state directory {} holds no device yet (create one with `mdmsim device new`)", dir.display())]
    Empty { dir: PathBuf },
    /// A device with this id exists already.
    #[error("state directory {}: device {id} exists already", dir.display())]
    Exists { dir: PathBuf, id: String },
    /// A stored value does not decode.
    #[error("state directory {}: stored {key} is unreadable: {reason}", dir.display())]
    Corrupt { dir: PathBuf, key: String, reason: String },
    /// Reading or writing failed.
    #[error("state directory {}: {reason}", dir.display())]
    Io { dir: PathBuf, reason: String },
    /// The writer could not save a device (the store stays as of the device's last good write).
    #[error("state directory {}: saving device {device}: {reason}", dir.display())]
    Save { dir: PathBuf, device: String, reason: String },
}

/// The process that holds a store open, as far as it could be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command line (Linux `/proc/PID/cmdline`), when readable.
    pub command: Option<String>,
}

impl Holder {
    /// `process PID (NAME)`, or `another process` when it could not be found.
    pub fn describe(holder: Option<&Holder>) -> String {
        holder.map_or_else(|| "another process".to_string(), ToString::to_string)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Some(c) => write!(f, "process {} ({c})", self.pid),
            None => write!(f, "process {}", self.pid),
        }
    }
}

/// Entries of a state directory that group or others may read, write or enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoosePermissions {
    /// The first one found (the directory itself when it is loose) and its mode bits (`0o755`).
    pub path: PathBuf,
    pub mode: u32,
    /// How many entries are loose in all (the directory itself included).
    pub count: usize,
}

/// The page cache of [`Store::open`] and [`Store::init`] (sled's default).
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// How far past the counter it writes [`Store::save`] and [`Store::save_session`] keep a
/// device's lease: the sessions that follow (one run step may chain a few) are covered before
/// they start, without a write of their own.
pub const SAVE_LEASE_AHEAD: u64 = 4;
/// The most finished sessions (or saves) one group commit takes.
const BATCH_MAX: usize = 1024;
/// How long the writer waits for more items once a group has begun.
const BATCH_LINGER: Duration = Duration::from_millis(50);
/// Items queued before a caller of the writer waits (back pressure).
const QUEUE_LEN: usize = 4096;

const DEFAULT_KEY: &[u8] = b"default";
const CLEAN_KEY: &[u8] = b"clean-shutdown";

/// The open state directory.
pub struct Store {
    dir: PathBuf,
    trees: Trees,
    loose: Option<LoosePermissions>,
    /// The `lock.pid` this process wrote (removed again when the store is dropped).
    pid_file: Option<PathBuf>,
    shared: Arc<Shared>,
    /// Set by [`Store::close`] (and by tests that simulate a crash): Drop leaves the mark alone.
    closed: bool,
}

/// The sled trees of the layout (cheap handles; the writer thread has its own copies).
#[derive(Clone)]
struct Trees {
    db: sled::Db,
    device: sled::Tree,
    state: sled::Tree,
    values: sled::Tree,
    leases: sled::Tree,
    sessions: sled::Tree,
    meta: sled::Tree,
    /// The earlier layout (whole devices as JSON), read and converted, never written.
    legacy: sled::Tree,
}

/// What the store and its writers share to decide whether a close is clean.
#[derive(Default)]
struct Shared {
    /// Writers started and not finished.
    live_writers: AtomicUsize,
    /// A write failed, or a writer was dropped without [`StoreWriter::finish`]: some counter may
    /// be missing, so the leases must be honoured at the next open.
    unclean: AtomicBool,
}

impl Store {
    /// Opens an existing state directory; never creates anything but the store's own lock
    /// bookkeeping. A missing directory is [`StoreError::Missing`], a file
    /// [`StoreError::NotADirectory`], a directory without a store [`StoreError::NoStore`].
    /// A store that was not closed cleanly is recovered first (module docs).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_cached(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of about `cache_bytes` (sled keeps up to this much of
    /// the database in memory; the default is [`DEFAULT_CACHE_BYTES`]): a process that holds
    /// its devices in memory anyway, such as a fleet, needs little.
    pub fn open_cached(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        if !is_directory(dir)? {
            return Err(StoreError::Missing { dir: dir.to_path_buf() });
        }
        if !dir.join(DB_DIR).is_dir() {
            return Err(StoreError::NoStore { dir: dir.to_path_buf() });
        }
        let loose = loose_permissions(dir);
        Store::open_db(dir, loose, cache_bytes)
    }

    /// Opens the state directory, creating it when missing: the directory 0700, the store's
    /// files 0600 (sled creates its files with the process umask; they are tightened here). An
    /// existing directory is used as it is and its permissions are reported as by
    /// [`Store::open`].
    pub fn init(dir: &Path) -> Result<Store, StoreError> {
        Store::init_cached(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::init`] with a page cache of about `cache_bytes` (see [`Store::open_cached`]).
    pub fn init_cached(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open { dir: dir.to_path_buf(), reason: e.to_string() };
        let existed = is_directory(dir)?;
        if !existed {
            create_private_dir(dir).map_err(|e| open_err(&format!("cannot create it: {e}")))?;
        }
        let fresh_db = !dir.join(DB_DIR).exists();
        let loose = if existed { loose_permissions(dir) } else { None };
        let store = Store::open_db(dir, loose, cache_bytes)?;
        if fresh_db {
            tighten(&dir.join(DB_DIR), 0).map_err(|e| open_err(&format!("making the store private: {e}")))?;
        }
        Ok(store)
    }

    fn open_db(dir: &Path, loose: Option<LoosePermissions>, cache_bytes: u64) -> Result<Store, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open { dir: dir.to_path_buf(), reason: e.to_string() };
        // sled lets go of its file lock a moment after the last handle is dropped (its I/O
        // threads finish their writes first): a store just closed in this process, or by a
        // process that just ended, is given a second before it counts as in use.
        let mut tries = 0;
        let db = loop {
            match sled::Config::new().path(dir.join(DB_DIR)).cache_capacity(cache_bytes).open() {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    if tries > 20 {
                        return Err(StoreError::Locked { dir: dir.to_path_buf(), holder: holder(dir) });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(open_err(&e)),
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_err(&e));
        let trees = Trees {
            device: tree("device")?,
            state: tree("state")?,
            values: tree("values")?,
            leases: tree("leases")?,
            sessions: tree("sessions")?,
            meta: tree("meta")?,
            legacy: tree("devices")?,
            db: db.clone(),
        };
        // Best effort: without it a second process is told "another process" instead of a pid.
        let pid_file = write_pid_file(dir);
        let store = Store {
            dir: dir.to_path_buf(),
            trees,
            loose,
            pid_file,
            shared: Arc::new(Shared::default()),
            closed: false,
        };
        if store.trees.meta.get(CLEAN_KEY).map_err(|e| store.io(e))?.is_some() {
            // From now on a crash must be detected: the mark comes back at a clean close.
            store.trees.meta.remove(CLEAN_KEY).map_err(|e| store.io(e))?;
            store.flush()?;
        } else {
            store.recover()?;
        }
        Ok(store)
    }

    /// After a crash (no `clean-shutdown` mark): every counter below its lease moves up to it,
    /// and the lease moves [`SAVE_LEASE_AHEAD`] past it, in one transaction. A device whose
    /// records do not decode is left as it is (loading it reports what is wrong).
    fn recover(&self) -> Result<(), StoreError> {
        let mut ops = Vec::new();
        for kv in self.trees.leases.iter() {
            let (key, lease) = kv.map_err(|e| self.io(e))?;
            let (Ok(id), Some(lease)) = (std::str::from_utf8(&key), decode_lease(&lease)) else { continue };
            let Ok(Some(mut device)) = self.read_device(id) else { continue };
            if lease <= device.sessions {
                continue;
            }
            device.sessions = lease;
            if self.trees.device.contains_key(id).map_err(|e| self.io(e))? {
                let state = StateRecord::of(&device).encode(&self.dir)?;
                ops.push(Op::put(T::State, id.as_bytes().to_vec(), state));
                ops.push(Op { t: T::Leases, key: id.as_bytes().to_vec(), put: Put::AtLeast(lease + SAVE_LEASE_AHEAD) });
            } else {
                ops.extend(self.full_ops(&device)?);
            }
        }
        if !ops.is_empty() {
            self.apply(&ops).map_err(|reason| self.io(format!("recovering session counters: {reason}")))?;
            self.flush()?;
        }
        Ok(())
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries of the directory that group or others could use when it was opened (`None`
    /// when it is private, and for a directory [`Store::init`] just created).
    pub fn loose_permissions(&self) -> Option<&LoosePermissions> {
        self.loose.as_ref()
    }

    /// The size of the database files, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.trees.db.size_on_disk().map_err(|e| self.io(e))
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io { dir: self.dir.clone(), reason: e.to_string() }
    }

    fn corrupt(&self, key: String, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt { dir: self.dir.clone(), key, reason: reason.to_string() }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.trees.db.flush().map(drop).map_err(|e| self.io(e))
    }

    /// Runs `ops` in one transaction; a failure marks the store unclean.
    fn apply(&self, ops: &[Op]) -> Result<(), String> {
        let r = apply(&self.trees, ops);
        if r.is_err() {
            self.shared.unclean.store(true, Ordering::SeqCst);
        }
        r
    }

    /// Stores a new device; the first device becomes the default one.
    pub fn create(&self, device: &Device) -> Result<(), StoreError> {
        let id = device.id.as_str();
        if self.exists(id)? {
            return Err(StoreError::Exists { dir: self.dir.clone(), id: device.id.to_string() });
        }
        let mut ops = self.full_ops(device)?;
        ops.push(Op { t: T::Meta, key: DEFAULT_KEY.to_vec(), put: Put::IfAbsent(id.as_bytes().to_vec()) });
        self.apply(&ops).map_err(|e| self.io(e))?;
        self.flush()
    }

    /// Stores many new devices in one transaction, flushed once (what [`Store::create`] does
    /// for each, for a fleet's devices made together); the first becomes the default one when
    /// there is none. Writes nothing when one of them exists already.
    pub fn create_all(&self, devices: &[&Device]) -> Result<(), StoreError> {
        let mut ops = Vec::new();
        for device in devices {
            if self.exists(device.id.as_str())? {
                return Err(StoreError::Exists { dir: self.dir.clone(), id: device.id.to_string() });
            }
            ops.extend(self.full_ops(device)?);
        }
        let Some(first) = devices.first() else { return Ok(()) };
        ops.push(Op {
            t: T::Meta,
            key: DEFAULT_KEY.to_vec(),
            put: Put::IfAbsent(first.id.as_str().as_bytes().to_vec()),
        });
        self.apply(&ops).map_err(|e| self.io(e))?;
        self.flush()
    }

    fn exists(&self, id: &str) -> Result<bool, StoreError> {
        let t = &self.trees;
        Ok(t.device.contains_key(id).map_err(|e| self.io(e))? || t.legacy.contains_key(id).map_err(|e| self.io(e))?)
    }

    /// The default device's id, if any.
    pub fn default_id(&self) -> Result<Option<String>, StoreError> {
        let v = self.trees.meta.get(DEFAULT_KEY).map_err(|e| self.io(e))?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Makes `id` the default device.
    pub fn set_default(&self, id: &DeviceId) -> Result<(), StoreError> {
        self.load(Some(id.as_str()))?;
        self.trees.meta.insert(DEFAULT_KEY, id.as_str().as_bytes()).map_err(|e| self.io(e))?;
        self.flush()
    }

    /// Ids of every stored device (either layout), in order.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for tree in [&self.trees.device, &self.trees.legacy] {
            for k in tree.iter().keys() {
                ids.push(String::from_utf8_lossy(&k.map_err(|e| self.io(e))?).into_owned());
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Loads a device: `id`, or the default one when `None`. Ids are matched case-insensitively.
    pub fn load(&self, id: Option<&str>) -> Result<Device, StoreError> {
        let id = match id {
            Some(id) => id.trim().to_ascii_uppercase(),
            None => self.default_id()?.ok_or_else(|| StoreError::Empty { dir: self.dir.clone() })?,
        };
        self.read_device(&id)?.ok_or_else(|| StoreError::UnknownDevice { dir: self.dir.clone(), id: id.clone() })
    }

    /// The device `id` as stored, from either layout; `None` when there is none.
    fn read_device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let t = &self.trees;
        let Some(base) = t.device.get(id).map_err(|e| self.io(e))? else {
            let Some(json) = t.legacy.get(id).map_err(|e| self.io(e))? else { return Ok(None) };
            let device = serde_json::from_slice(&json).map_err(|e| self.corrupt(format!("device {id}"), e))?;
            return Ok(Some(device));
        };
        let base: BaseRecord = serde_json::from_slice(&base).map_err(|e| self.corrupt(format!("device {id}"), e))?;
        let state =
            t.state.get(id).map_err(|e| self.io(e))?.ok_or_else(|| self.corrupt(format!("state {id}"), "missing"))?;
        let state: StateRecord = serde_json::from_slice(&state).map_err(|e| self.corrupt(format!("state {id}"), e))?;
        let prefix = format!("{id}/");
        let mut entries = Vec::new();
        for kv in t.values.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let name = || format!("value {}", String::from_utf8_lossy(&k));
            let key = std::str::from_utf8(&k[prefix.len()..]).map_err(|e| self.corrupt(name(), e))?;
            let entry = decode_entry(&v).map_err(|e| self.corrupt(name(), e))?;
            entries.push((key.to_string(), entry));
        }
        Ok(Some(assemble(base, state, TreeState::from_entries(entries))))
    }

    /// Writes the end of a session: the device's records (what differs from the disk), the
    /// session summary and a lease [`SAVE_LEASE_AHEAD`] past the counter, in one transaction,
    /// then flushes. For one-device commands; a run goes through [`Store::writer`].
    pub fn save_session(&self, device: &Device, summary: &Summary) -> Result<(), StoreError> {
        let mut ops = self.full_ops(device)?;
        let sjson = serde_json::to_vec(summary).map_err(|e| self.io(e))?;
        ops.push(Op::put(T::Sessions, session_key(&device.id, device.sessions), sjson));
        self.apply(&ops).map_err(|e| self.io(e))?;
        self.flush()
    }

    /// Saves a device outside a session (as [`Store::save_session`] without a summary).
    pub fn save(&self, device: &Device) -> Result<(), StoreError> {
        let ops = self.full_ops(device)?;
        self.apply(&ops).map_err(|e| self.io(e))?;
        self.flush()
    }

    /// The writes that make the stored device equal to `device`: both records, the tree values
    /// that differ from the disk (and removals of those it no longer has), the conversion of a
    /// record of the earlier layout, and the lease kept past the counter.
    fn full_ops(&self, device: &Device) -> Result<Vec<Op>, StoreError> {
        let id = device.id.as_str();
        let mut ops = vec![
            Op::put(T::Device, id.as_bytes().to_vec(), BaseRecord::of(device).encode(&self.dir)?),
            Op::put(T::State, id.as_bytes().to_vec(), StateRecord::of(device).encode(&self.dir)?),
        ];
        let prefix = format!("{id}/");
        let mut on_disk: BTreeMap<Vec<u8>, sled::IVec> = BTreeMap::new();
        for kv in self.trees.values.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            on_disk.insert(k.to_vec(), v);
        }
        for (key, entry) in device.tree.iter() {
            let key = value_key(id, key);
            let bytes = encode_entry(entry);
            if on_disk.remove(&key).is_none_or(|old| *old != *bytes) {
                ops.push(Op::put(T::Values, key, bytes));
            }
        }
        ops.extend(on_disk.into_keys().map(|key| Op { t: T::Values, key, put: Put::Remove }));
        if self.trees.legacy.contains_key(id).map_err(|e| self.io(e))? {
            ops.push(Op { t: T::Legacy, key: id.as_bytes().to_vec(), put: Put::Remove });
        }
        let lease = device.sessions.saturating_add(SAVE_LEASE_AHEAD);
        ops.push(Op { t: T::Leases, key: id.as_bytes().to_vec(), put: Put::AtLeast(lease) });
        Ok(ops)
    }

    /// Reserves SessionIDs: each device's lease becomes its counter plus `ahead` (never lower
    /// than it was), for all of them in one transaction, flushed before returning; then
    /// [`Device::session_lease`] says so. After a crash the store starts each counter past its
    /// lease, so an engine that calls this whenever [`Device::needs_lease`] never sends a
    /// SessionID twice, whatever the writer had not written yet.
    pub fn reserve_session_ids(&self, devices: &mut [&mut Device], ahead: u64) -> Result<(), StoreError> {
        let ahead = ahead.max(1);
        let ops: Vec<Op> = devices
            .iter()
            .map(|d| Op {
                t: T::Leases,
                key: d.id.as_str().as_bytes().to_vec(),
                put: Put::AtLeast(d.sessions.saturating_add(ahead)),
            })
            .collect();
        self.apply(&ops).map_err(|e| self.io(format!("reserving session ids: {e}")))?;
        self.flush()?;
        for d in devices.iter_mut() {
            d.session_lease = d.session_lease.max(d.sessions.saturating_add(ahead));
        }
        Ok(())
    }

    /// Starts the group-commit writer (module docs). Finish it with [`StoreWriter::finish`]
    /// before the store is closed; several may run, each with its own thread.
    pub fn writer(&self) -> StoreWriter {
        let (queue, rx) = std::sync::mpsc::sync_channel(QUEUE_LEN);
        let error = Arc::new(Mutex::new(None));
        let failed = Arc::new(AtomicBool::new(false));
        self.shared.live_writers.fetch_add(1, Ordering::SeqCst);
        let worker = Worker {
            dir: self.dir.clone(),
            trees: self.trees.clone(),
            error: Arc::clone(&error),
            failed: Arc::clone(&failed),
            shared: Arc::clone(&self.shared),
            seen: HashMap::new(),
            broken: HashSet::new(),
            stats: WriterStats::default(),
        };
        let thread = std::thread::Builder::new().name("mdmsim-store".into()).spawn(move || worker.run(rx));
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                let e = StoreError::Io { dir: self.dir.clone(), reason: format!("starting the writer thread: {e}") };
                *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                failed.store(true, Ordering::SeqCst);
                self.shared.unclean.store(true, Ordering::SeqCst);
                None
            }
        };
        StoreWriter {
            queue: Some(queue),
            thread,
            error,
            failed,
            shared: Arc::clone(&self.shared),
            dir: self.dir.clone(),
        }
    }

    /// The summaries of a device's sessions, oldest first.
    pub fn sessions(&self, id: &DeviceId) -> Result<Vec<Summary>, StoreError> {
        let prefix = format!("{id}/");
        self.trees
            .sessions
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.io(e))?;
                serde_json::from_slice(&v)
                    .map_err(|e| self.corrupt(format!("session {}", String::from_utf8_lossy(&k)), e))
            })
            .collect()
    }

    /// Closes the store, cleanly when every writer finished and no write failed: the mark that
    /// lets the next open continue with consecutive SessionIDs (module docs). Dropping the store
    /// does the same, ignoring errors.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.closed = true;
        self.mark_clean()
    }

    fn mark_clean(&self) -> Result<(), StoreError> {
        if std::thread::panicking()
            || self.shared.live_writers.load(Ordering::SeqCst) > 0
            || self.shared.unclean.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        self.trees.meta.insert(CLEAN_KEY, &b"1"[..]).map_err(|e| self.io(e))?;
        self.flush()
    }

    /// Drops the store as a crash would leave it (no clean mark; sled's files as flushed).
    #[cfg(test)]
    fn crash(mut self) {
        self.closed = true;
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.mark_clean();
        }
        if let Some(path) = &self.pid_file
            && std::fs::read_to_string(path).is_ok_and(|s| s.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a writer did, as [`StoreWriter::finish`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Finished sessions written ([`StoreWriter::session_ended`]).
    pub sessions: u64,
    /// Devices saved outside a session ([`StoreWriter::save`]).
    pub saves: u64,
    /// Group commits: one transaction and one flush each.
    pub batches: u64,
    /// Tree values written and removed.
    pub values_written: u64,
    pub values_removed: u64,
    /// Bytes of keys and values handed to sled.
    pub bytes: u64,
}

/// The group-commit writer of a [`Store`] (module docs): a thread fed by a bounded queue.
pub struct StoreWriter {
    queue: Option<SyncSender<Item>>,
    thread: Option<std::thread::JoinHandle<WriterStats>>,
    error: Arc<Mutex<Option<StoreError>>>,
    failed: Arc<AtomicBool>,
    shared: Arc<Shared>,
    dir: PathBuf,
}

impl StoreWriter {
    /// Queues the end of a session: the tree values the device committed since its last write,
    /// its small per-session fields, its record parts when they changed, and the summary (keyed
    /// by the device's counter). Waits only when the queue is full.
    pub fn session_ended(&self, device: &mut Device, summary: &Summary) {
        self.send(device, Some(summary));
    }

    /// Queues a device's changes outside a session.
    pub fn save(&self, device: &mut Device) {
        self.send(device, None);
    }

    fn send(&self, device: &mut Device, summary: Option<&Summary>) {
        let changes = device.tree.take_changes();
        if self.failed.load(Ordering::SeqCst) {
            return;
        }
        let item = Item {
            id: device.id.to_string(),
            base: BaseRecord::of(device),
            state: StateRecord::of(device),
            changes,
            summary: summary.map(|s| (session_key(&device.id, device.sessions), s.clone())),
        };
        let sent = self.queue.as_ref().is_some_and(|q| q.send(item).is_ok());
        if !sent {
            self.fail(StoreError::Save {
                dir: self.dir.clone(),
                device: device.id.to_string(),
                reason: "the writer thread stopped".into(),
            });
        }
    }

    fn fail(&self, e: StoreError) {
        keep_error(&self.error, Some(&self.failed), &self.shared, e);
    }

    /// The first error so far, if any (the writer stops writing the device it names, or
    /// everything when a group commit failed).
    pub fn error(&self) -> Option<StoreError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes everything queued (the last group flushed), stops the thread and reports.
    pub fn finish(mut self) -> Result<WriterStats, StoreError> {
        let stats = self.stop();
        self.shared.live_writers.fetch_sub(1, Ordering::SeqCst);
        match self.error() {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    fn stop(&mut self) -> WriterStats {
        self.queue = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(stats)) => stats,
            Some(Err(_)) => {
                self.fail(StoreError::Io { dir: self.dir.clone(), reason: "the writer thread panicked".into() });
                WriterStats::default()
            }
            None => WriterStats::default(),
        }
    }
}

impl Drop for StoreWriter {
    /// A writer dropped without [`StoreWriter::finish`] still writes what was queued, but the
    /// store will not close cleanly: whoever dropped it may have left a device unsaved.
    fn drop(&mut self) {
        if self.queue.is_some() {
            self.stop();
            self.shared.unclean.store(true, Ordering::SeqCst);
            self.shared.live_writers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Keeps the first error, and stops every later write when `failed` is given.
fn keep_error(error: &Mutex<Option<StoreError>>, failed: Option<&AtomicBool>, shared: &Shared, e: StoreError) {
    error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    if let Some(failed) = failed {
        failed.store(true, Ordering::SeqCst);
    }
    shared.unclean.store(true, Ordering::SeqCst);
}

/// One device handed to the writer.
struct Item {
    id: String,
    base: BaseRecord,
    state: StateRecord,
    changes: Vec<(String, Option<Entry>)>,
    summary: Option<(Vec<u8>, Summary)>,
}

/// The writer thread.
struct Worker {
    dir: PathBuf,
    trees: Trees,
    error: Arc<Mutex<Option<StoreError>>>,
    failed: Arc<AtomicBool>,
    shared: Arc<Shared>,
    /// A hash of each device's `device` record as last written (or found on disk).
    seen: HashMap<String, u64>,
    /// Devices that could not be written: their later items are dropped, so that what is on
    /// disk stays a whole device.
    broken: HashSet<String>,
    stats: WriterStats,
}

impl Worker {
    fn run(mut self, rx: Receiver<Item>) -> WriterStats {
        while let Ok(first) = rx.recv() {
            let began = Instant::now();
            let mut batch = vec![first];
            while batch.len() < BATCH_MAX {
                match rx.recv_timeout(BATCH_LINGER.saturating_sub(began.elapsed())) {
                    Ok(item) => batch.push(item),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            // After a failed group nothing more is written: the store stays as of the last one.
            if !self.failed.load(Ordering::SeqCst) {
                self.commit(batch);
            }
        }
        self.stats
    }

    fn fail(&self, e: StoreError) {
        keep_error(&self.error, Some(&self.failed), &self.shared, e);
    }

    /// One group: every item's writes in one transaction, then one flush.
    fn commit(&mut self, batch: Vec<Item>) {
        let mut ops = Vec::new();
        let mut stats = WriterStats { batches: 1, ..WriterStats::default() };
        let mut names: Vec<&str> = Vec::new();
        for item in &batch {
            if self.broken.contains(&item.id) {
                continue;
            }
            let mut own = Vec::new();
            match self.item_ops(item, &mut own) {
                Ok(()) => {
                    ops.append(&mut own);
                    if names.last() != Some(&item.id.as_str()) {
                        names.push(&item.id);
                    }
                    if item.summary.is_some() {
                        stats.sessions += 1;
                    } else {
                        stats.saves += 1;
                    }
                }
                Err(e) => {
                    self.seen.remove(&item.id);
                    self.broken.insert(item.id.clone());
                    keep_error(&self.error, None, &self.shared, e);
                }
            }
        }
        for op in &ops {
            match (&op.t, &op.put) {
                (T::Values, Put::Remove) => stats.values_removed += 1,
                (T::Values, _) => stats.values_written += 1,
                _ => {}
            }
            stats.bytes += op.len() as u64;
        }
        let who = || match names.as_slice() {
            [one] => one.to_string(),
            [first, rest @ ..] => format!("{first} (and {} more in the same group)", rest.len()),
            [] => "(none)".to_string(),
        };
        if let Err(reason) = apply(&self.trees, &ops) {
            self.fail(StoreError::Save { dir: self.dir.clone(), device: who(), reason });
            return;
        }
        if let Err(e) = self.trees.db.flush() {
            self.fail(StoreError::Save { dir: self.dir.clone(), device: who(), reason: format!("flush: {e}") });
            return;
        }
        let s = &mut self.stats;
        s.sessions += stats.sessions;
        s.saves += stats.saves;
        s.batches += 1;
        s.values_written += stats.values_written;
        s.values_removed += stats.values_removed;
        s.bytes += stats.bytes;
    }

    /// The writes of one item: the `device` record when it changed, the `state` record, the
    /// changed values, the summary; and on the first sight of a device of the earlier layout,
    /// its conversion.
    fn item_ops(&mut self, item: &Item, ops: &mut Vec<Op>) -> Result<(), StoreError> {
        let id = item.id.as_str();
        let io = |e: &dyn std::fmt::Display| StoreError::Save {
            dir: self.dir.clone(),
            device: id.to_string(),
            reason: e.to_string(),
        };
        if !self.seen.contains_key(id) {
            let on_disk = self.trees.device.get(id).map_err(|e| io(&e))?;
            if let Some(bytes) = on_disk {
                self.seen.insert(id.to_string(), hash(&bytes));
            } else {
                let Some(json) = self.trees.legacy.get(id).map_err(|e| io(&e))? else {
                    return Err(StoreError::UnknownDevice { dir: self.dir.clone(), id: id.to_string() });
                };
                let old: Device = serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                    dir: self.dir.clone(),
                    key: format!("device {id}"),
                    reason: e.to_string(),
                })?;
                // The earlier layout: its values first, this item's changes on top.
                ops.extend(old.tree.iter().map(|(k, e)| Op::put(T::Values, value_key(id, k), encode_entry(e))));
                ops.push(Op { t: T::Legacy, key: id.as_bytes().to_vec(), put: Put::Remove });
                self.seen.insert(id.to_string(), 0);
            }
        }
        let base = item.base.encode(&self.dir)?;
        let h = hash(&base);
        if self.seen.get(id) != Some(&h) {
            ops.push(Op::put(T::Device, id.as_bytes().to_vec(), base));
            self.seen.insert(id.to_string(), h);
        }
        ops.push(Op::put(T::State, id.as_bytes().to_vec(), item.state.encode(&self.dir)?));
        for (key, entry) in &item.changes {
            let key = value_key(id, key);
            ops.push(match entry {
                Some(e) => Op::put(T::Values, key, encode_entry(e)),
                None => Op { t: T::Values, key, put: Put::Remove },
            });
        }
        if let Some((key, summary)) = &item.summary {
            ops.push(Op::put(T::Sessions, key.clone(), serde_json::to_vec(summary).map_err(|e| io(&e))?));
        }
        Ok(())
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Which tree of the layout an [`Op`] writes.
#[derive(Debug, Clone, Copy)]
enum T {
    Device,
    State,
    Values,
    Leases,
    Sessions,
    Meta,
    Legacy,
}

/// One write of a transaction.
#[derive(Debug)]
struct Op {
    t: T,
    key: Vec<u8>,
    put: Put,
}

#[derive(Debug)]
enum Put {
    Bytes(Vec<u8>),
    Remove,
    /// Only when the key holds nothing.
    IfAbsent(Vec<u8>),
    /// A lease that never goes down: the larger of this and what is stored.
    AtLeast(u64),
}

impl Op {
    fn put(t: T, key: Vec<u8>, value: Vec<u8>) -> Op {
        Op { t, key, put: Put::Bytes(value) }
    }

    fn len(&self) -> usize {
        self.key.len()
            + match &self.put {
                Put::Bytes(b) | Put::IfAbsent(b) => b.len(),
                Put::Remove => 0,
                Put::AtLeast(_) => 8,
            }
    }
}

/// Runs `ops` in order in one sled transaction over every tree of the layout.
fn apply(t: &Trees, ops: &[Op]) -> Result<(), String> {
    if ops.is_empty() {
        return Ok(());
    }
    let trees = (&t.device, &t.state, &t.values, &t.leases, &t.sessions, &t.meta, &t.legacy);
    let result: Result<(), TransactionError<()>> = trees.transaction(|(d, s, v, l, ss, m, lg)| {
        for op in ops {
            let tree = match op.t {
                T::Device => d,
                T::State => s,
                T::Values => v,
                T::Leases => l,
                T::Sessions => ss,
                T::Meta => m,
                T::Legacy => lg,
            };
            let key = op.key.as_slice();
            match &op.put {
                Put::Bytes(b) => {
                    tree.insert(key, b.as_slice())?;
                }
                Put::Remove => {
                    tree.remove(key)?;
                }
                Put::IfAbsent(b) => {
                    if tree.get(key)?.is_none() {
                        tree.insert(key, b.as_slice())?;
                    }
                }
                Put::AtLeast(n) => {
                    // A lease that does not decode is replaced (the counter is on disk too).
                    let old = tree.get(key)?.and_then(|v| decode_lease(&v)).unwrap_or(0);
                    if *n > old {
                        tree.insert(key, &n.to_be_bytes()[..])?;
                    }
                }
            }
        }
        Ok::<(), ConflictableTransactionError<()>>(())
    });
    result.map_err(|e| format!("{e:?}"))
}

fn decode_lease(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

fn session_key(id: &DeviceId, counter: u64) -> Vec<u8> {
    format!("{id}/{counter:010}").into_bytes()
}

fn value_key(id: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1 + key.len());
    k.extend_from_slice(id.as_bytes());
    k.push(b'/');
    k.extend_from_slice(key.as_bytes());
    k
}

/// A tree entry on disk: `0` for an interior node, `1` and the UTF-8 value for a leaf.
fn encode_entry(entry: &Entry) -> Vec<u8> {
    match entry {
        Entry::Interior => vec![0],
        Entry::Leaf(v) => {
            let mut b = Vec::with_capacity(1 + v.len());
            b.push(1);
            b.extend_from_slice(v.as_bytes());
            b
        }
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    match bytes.split_first() {
        Some((0, [])) => Ok(Entry::Interior),
        Some((1, rest)) => {
            std::str::from_utf8(rest).map(|v| Entry::Leaf(v.into())).map_err(|e| format!("a leaf value: {e}"))
        }
        Some((tag, _)) => Err(format!("unknown entry tag {tag}")),
        None => Err("an empty entry".into()),
    }
}

/// The parts of a device that rarely change (the `device` tree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BaseRecord {
    id: DeviceId,
    profile: Profile,
    server_url: String,
    provider_id: String,
    settings: Arc<Settings>,
    enrolled_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enrollment: Option<Enrollment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unenrolled: Option<Unenrolled>,
}

/// The small fields every session may change (the `state` tree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StateRecord {
    sessions: u64,
    users: UserState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_cache: Option<ServerCache>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_success: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending_alerts: Vec<PendingAlert>,
}

impl BaseRecord {
    fn of(d: &Device) -> BaseRecord {
        BaseRecord {
            id: d.id.clone(),
            profile: d.profile,
            server_url: d.server_url.clone(),
            provider_id: d.provider_id.clone(),
            settings: Arc::clone(&d.settings),
            enrolled_at: d.enrolled_at,
            enrollment: d.enrollment.clone(),
            unenrolled: d.unenrolled.clone(),
        }
    }

    fn encode(&self, dir: &Path) -> Result<Vec<u8>, StoreError> {
        encode_json(self, dir)
    }
}

impl StateRecord {
    fn of(d: &Device) -> StateRecord {
        StateRecord {
            sessions: d.sessions,
            users: d.users.clone(),
            server_cache: d.server_cache.clone(),
            last_success: d.last_success,
            pending_alerts: d.pending_alerts.clone(),
        }
    }

    fn encode(&self, dir: &Path) -> Result<Vec<u8>, StoreError> {
        encode_json(self, dir)
    }
}

fn encode_json(value: &impl Serialize, dir: &Path) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io { dir: dir.to_path_buf(), reason: e.to_string() })
}

/// The device made of its two records and its values. Every field is named (no `..`): a field
/// added to [`Device`] does not compile here until the layout says where it is kept.
fn assemble(base: BaseRecord, state: StateRecord, tree: TreeState) -> Device {
    let BaseRecord { id, profile, server_url, provider_id, settings, enrolled_at, enrollment, unenrolled } = base;
    let StateRecord { sessions, users, server_cache, last_success, pending_alerts } = state;
    Device {
        id,
        profile,
        server_url,
        provider_id,
        settings,
        tree,
        sessions,
        enrolled_at,
        users,
        enrollment,
        unenrolled,
        server_cache,
        last_success,
        pending_alerts,
        session_lease: 0,
    }
}

/// True when `dir` is a directory, false when nothing is there; an error when it is a file.
fn is_directory(dir: &Path) -> Result<bool, StoreError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(StoreError::NotADirectory { dir: dir.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::Open { dir: dir.to_path_buf(), reason: e.to_string() }),
    }
}

/// Creates `dir` (and missing parents) readable by its owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Takes group and other permissions off `path` and everything below it (symbolic links are
/// left alone).
fn tighten(path: &Path, depth: usize) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::symlink_metadata(path)?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o077))?;
        }
        if meta.is_dir() && depth < MAX_WALK_DEPTH {
            for entry in std::fs::read_dir(path)?.take(MAX_WALK_ENTRIES) {
                tighten(&entry?.path(), depth + 1)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, depth);
    Ok(())
}

/// The entries of `dir` (itself included) with any group or other permission bit, walked to a
/// bounded depth and count; `None` when there is none (or on platforms without modes).
pub fn loose_permissions(dir: &Path) -> Option<LoosePermissions> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mut found: Option<LoosePermissions> = None;
        let mut stack = vec![(dir.to_path_buf(), 0usize)];
        let mut seen = 0usize;
        while let Some((path, depth)) = stack.pop() {
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.file_type().is_symlink() {
                continue;
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                match &mut found {
                    Some(f) => f.count += 1,
                    None => found = Some(LoosePermissions { path: path.clone(), mode, count: 1 }),
                }
            }
            if meta.is_dir() && depth < MAX_WALK_DEPTH {
                let Ok(entries) = std::fs::read_dir(&path) else { continue };
                let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                // Reverse order on the stack: the walk reports the first entry by name first.
                children.sort_unstable_by(|a, b| b.cmp(a));
                stack.extend(children.into_iter().map(|c| (c, depth + 1)));
            }
        }
        found
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Writes this process's id to `DIR/lock.pid` (0600); the path when it was written.
fn write_pid_file(dir: &Path) -> Option<PathBuf> {
    use std::io::Write as _;
    let path = dir.join(LOCK_PID_FILE);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path).ok()?;
    writeln!(f, "{}", std::process::id()).ok()?;
    Some(path)
}

/// The process that holds the store of `dir` open: on Linux the one whose open files include
/// the sled data file (the pid in `lock.pid` is checked first, then every process is looked
/// at); elsewhere the pid in `lock.pid` when that process is alive.
fn holder(dir: &Path) -> Option<Holder> {
    let recorded: Option<u32> =
        std::fs::read_to_string(dir.join(LOCK_PID_FILE)).ok().and_then(|s| s.trim().parse().ok());
    let proc_dir = Path::new("/proc/self/fd");
    if proc_dir.is_dir() {
        let data = std::fs::canonicalize(dir.join(DB_DIR).join("db")).ok()?;
        let me = std::process::id();
        let holds = |pid: u32| pid != me && holds_open(pid, &data);
        let pid = recorded.filter(|&p| holds(p)).or_else(|| {
            std::fs::read_dir("/proc")
                .ok()?
                .flatten()
                .take(MAX_WALK_ENTRIES)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .find(|&p| holds(p))
        })?;
        let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_string());
        return Some(Holder { pid, command });
    }
    let pid = recorded?;
    alive(pid).then_some(Holder { pid, command: None })
}

/// True when process `pid` has `file` open (Linux `/proc/PID/fd`).
fn holds_open(pid: u32, file: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().take(MAX_WALK_ENTRIES).any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
}

/// True when a process with this id exists.
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::device::Template;
    use crate::session::{Mode, Trigger};

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap()
    }

    fn device(seed: u64) -> Device {
        let t = Template::builtin(Profile::Win10);
        Device::new(DeviceId::from_seed(seed), Profile::Win10, "http://127.0.0.1:1/x", "P", &t, at())
    }

    /// One session of `d`: the counter, two values set and the previous session's one removed.
    fn live_a_session(d: &mut Device) -> Summary {
        let cfg = d.next_session(Trigger::Manual);
        let n = d.sessions;
        d.tree.set_value("DevDetail/Ext/Microsoft/DeviceName", format!("name {n}"));
        d.tree.set_value(&format!("Vendor/MSFT/Lab/S{n}"), "x");
        d.tree.remove_subtree(&format!("Vendor/MSFT/Lab/S{}", n - 1));
        d.tree.commit();
        d.last_success = Some(at() + chrono::Duration::minutes(n as i64));
        Summary::new(d.id.as_str(), &cfg.session_id, Mode::Machine, Trigger::Manual, 1201, at())
    }

    /// Writes `device` as the store before this layout did: the whole device as JSON in `devices`.
    fn write_old_record(dir: &Path, device: &Device) {
        let db = sled::open(dir.join(DB_DIR)).unwrap();
        let old = db.open_tree("devices").unwrap();
        old.insert(device.id.as_str().as_bytes(), serde_json::to_vec(device).unwrap()).unwrap();
        let meta = db.open_tree("meta").unwrap();
        if meta.get(DEFAULT_KEY).unwrap().is_none() {
            meta.insert(DEFAULT_KEY, device.id.as_str().as_bytes()).unwrap();
        }
        db.flush().unwrap();
    }

    #[test]
    fn devices_made_together_are_stored_whole_in_one_write_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(dir.path()).unwrap();
        let made: Vec<Device> = (1..=3).map(device).collect();
        store.create_all(&made.iter().collect::<Vec<_>>()).unwrap();
        for d in &made {
            assert_eq!(&store.load(Some(d.id.as_str())).unwrap(), d);
        }
        assert_eq!(store.default_id().unwrap().as_deref(), Some(made[0].id.as_str()));
        let again = [device(4), device(2)];
        let e = store.create_all(&again.iter().collect::<Vec<_>>()).unwrap_err();
        assert!(matches!(e, StoreError::Exists { ref id, .. } if id == made[1].id.as_str()), "{e}");
        assert!(matches!(store.load(Some(again[0].id.as_str())), Err(StoreError::UnknownDevice { .. })));
        store.create_all(&[]).unwrap();
    }

    #[test]
    fn the_writer_writes_what_sessions_changed_and_reopening_gives_the_same_devices() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(dir.path()).unwrap();
        let mut devices: Vec<Device> = (1..=3)
            .map(|seed| {
                store.create(&device(seed)).unwrap();
                store.load(Some(DeviceId::from_seed(seed).as_str())).unwrap()
            })
            .collect();
        let writer = store.writer();
        for _ in 0..10 {
            for d in &mut devices {
                let summary = live_a_session(d);
                writer.session_ended(d, &summary);
            }
        }
        devices[2].users.apply(crate::schedule::UserEvent::Reboot);
        writer.save(&mut devices[2]);
        let stats = writer.finish().unwrap();
        assert_eq!((stats.sessions, stats.saves), (30, 1));
        assert!(stats.batches < 31, "{stats:?}");
        // Two values a session, and one removed from the second session on.
        assert_eq!((stats.values_written, stats.values_removed), (60, 27));
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        for d in &devices {
            assert_eq!(&store.load(Some(d.id.as_str())).unwrap(), d);
            let sessions = store.sessions(&d.id).unwrap();
            assert_eq!(sessions.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>().len(), 10);
            assert_eq!(sessions.last().unwrap().session_id, "10");
        }
        assert_eq!(store.ids().unwrap().len(), 3);
    }

    #[test]
    fn a_record_of_the_earlier_layout_loads_and_its_first_write_converts_it() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::init(dir.path()).unwrap());
        let (mut old1, mut old2) = (device(1), device(2));
        old1.sessions = 7;
        write_old_record(dir.path(), &old1);
        write_old_record(dir.path(), &old2);

        let store = Store::open(dir.path()).unwrap();
        let mut ids = vec![old1.id.to_string(), old2.id.to_string()];
        ids.sort();
        assert_eq!(store.ids().unwrap(), ids);
        assert_eq!(store.load(None).unwrap(), old1);
        assert!(matches!(store.create(&old2), Err(StoreError::Exists { .. })));
        // Through the writer, with only this session's changes: the rest comes from the old record.
        let mut d1 = store.load(Some(old1.id.as_str())).unwrap();
        let summary = live_a_session(&mut d1);
        let writer = store.writer();
        writer.session_ended(&mut d1, &summary);
        writer.finish().unwrap();
        // Through save_session.
        let summary = live_a_session(&mut old2);
        store.save_session(&old2, &summary).unwrap();
        for id in [&old1.id, &old2.id] {
            assert!(!store.trees.legacy.contains_key(id.as_str()).unwrap(), "{id} still in the old layout");
            assert!(store.trees.device.contains_key(id.as_str()).unwrap());
        }
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load(Some(old1.id.as_str())).unwrap(), d1);
        assert_eq!(store.load(Some(old2.id.as_str())).unwrap(), old2);
        assert_eq!(store.load(None).unwrap().sessions, 8, "the default device is kept");
        assert_eq!(store.ids().unwrap().len(), 2);
    }

    #[test]
    fn a_bad_record_is_corrupt_and_named_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(dir.path()).unwrap();
        let d = device(1);
        store.create(&d).unwrap();
        let id = d.id.as_str();
        let load_err = |store: &Store| match store.load(Some(id)) {
            Err(StoreError::Corrupt { key, .. }) => key,
            other => panic!("expected Corrupt, got {other:?}"),
        };
        let t = &store.trees;
        let v = format!("{id}/DevInfo/Man");
        for bad in [&[7u8, b'x'][..], &[], &[1, 0xff, 0xfe], &[0, 1]] {
            t.values.insert(v.as_bytes(), bad).unwrap();
            assert_eq!(load_err(&store), format!("value {v}"));
        }
        t.values.insert(v.as_bytes(), &[1, b'D'][..]).unwrap();
        t.state.insert(id, &b"{\"sessions\": \"many\"}"[..]).unwrap();
        assert_eq!(load_err(&store), format!("state {id}"));
        t.state.remove(id).unwrap();
        assert_eq!(load_err(&store), format!("state {id}"));
        t.device.insert(id, &b"\xff"[..]).unwrap();
        assert_eq!(load_err(&store), format!("device {id}"));
        // The earlier layout, unreadable: loading and the writer's conversion both name it.
        let other = device(2);
        t.legacy.insert(other.id.as_str(), &b"{not json"[..]).unwrap();
        assert!(
            matches!(store.load(Some(other.id.as_str())), Err(StoreError::Corrupt { key, .. }) if key == format!("device {}", other.id))
        );
        let writer = store.writer();
        writer.save(&mut other.clone());
        let e = writer.finish().unwrap_err();
        assert!(e.to_string().contains(&format!("stored device {} is unreadable", other.id)), "{e}");
        // A lease that does not decode does not stop the store from opening after a crash.
        t.leases.insert(id, &[1u8, 2, 3][..]).unwrap();
        store.crash();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(store.load(Some(id)), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn the_writer_names_the_device_it_could_not_save_and_saves_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(dir.path()).unwrap();
        store.create(&device(1)).unwrap();
        let mut known = store.load(None).unwrap();
        let mut stranger = device(2);
        let writer = store.writer();
        let summary = live_a_session(&mut stranger);
        writer.session_ended(&mut stranger, &summary);
        let summary = live_a_session(&mut known);
        writer.session_ended(&mut known, &summary);
        let deadline = Instant::now() + Duration::from_secs(10);
        while writer.error().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let peeked = writer.error().expect("the error is kept");
        let e = writer.finish().unwrap_err();
        assert_eq!(e.to_string(), peeked.to_string());
        assert!(e.to_string().contains(&format!("no device {}", stranger.id)), "{e}");
        assert_eq!(store.load(None).unwrap(), known, "the other device was saved");
    }

    #[test]
    fn after_a_crash_counters_move_past_their_leases_and_a_clean_close_keeps_them_consecutive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(dir.path()).unwrap();
        store.create(&device(1)).unwrap();
        let id = DeviceId::from_seed(1);
        let counter = |store: &Store| store.load(Some(id.as_str())).unwrap().sessions;

        // One-device commands: a clean close keeps the counter as it is.
        let mut d = store.load(None).unwrap();
        let summary = live_a_session(&mut d);
        store.save_session(&d, &summary).unwrap();
        store.close().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(counter(&store), 1, "consecutive after a clean close");
        // A session in flight when the process dies: its SessionID (2) is never sent again.
        let mut d = store.load(None).unwrap();
        d.next_session(Trigger::Manual);
        store.crash();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(counter(&store), 1 + SAVE_LEASE_AHEAD);

        // Through the writer: ids reserved ahead, sessions queued, nothing flushed, a crash.
        let mut d = store.load(None).unwrap();
        assert!(d.needs_lease());
        let start = d.sessions;
        store.reserve_session_ids(&mut [&mut d], 16).unwrap();
        assert_eq!(d.session_lease, start + 16);
        assert!(!d.needs_lease());
        let writer = store.writer();
        for _ in 0..3 {
            let summary = live_a_session(&mut d);
            writer.session_ended(&mut d, &summary);
        }
        d.next_session(Trigger::Manual); // in flight
        drop(writer); // never finished
        store.crash();
        let store = Store::open(dir.path()).unwrap();
        let after = counter(&store);
        assert!(after >= d.sessions && after == start + 16, "{after} after sending {}", d.sessions);
        // A second reopening changes nothing more.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(counter(&store), after);

        // A writer finished and a clean close: consecutive again.
        let mut d = store.load(None).unwrap();
        store.reserve_session_ids(&mut [&mut d], 16).unwrap();
        let writer = store.writer();
        for _ in 0..3 {
            let summary = live_a_session(&mut d);
            writer.session_ended(&mut d, &summary);
        }
        writer.finish().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(counter(&store), after + 3);
        // A writer dropped unfinished: its devices' leases are honoured at the next open.
        let mut d = store.load(None).unwrap();
        store.reserve_session_ids(&mut [&mut d], 16).unwrap();
        drop(store.writer());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(counter(&store), after + 3 + 16);
    }

    #[test]
    fn devices_and_sessions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let now = at();
        let t = Template::builtin(Profile::Win10);
        let a = Device::new(DeviceId::from_seed(1), Profile::Win10, "http://127.0.0.1:1/x", "P", &t, now);
        let b = Device::new(DeviceId::from_seed(2), Profile::Win81, "http://127.0.0.1:1/x", "P", &t, now);
        {
            let s = Store::init(dir.path()).unwrap();
            s.create(&a).unwrap();
            s.create(&b).unwrap();
            assert!(matches!(s.create(&a), Err(StoreError::Exists { .. })));
            let mut a2 = s.load(None).unwrap();
            assert_eq!(a2, a);
            a2.tree.set_value("DevDetail/Ext/Microsoft/DeviceName", "X");
            a2.sessions = 1;
            a2.tree.commit();
            let sum = Summary::new(a.id.as_str(), "1", Mode::Machine, Trigger::Reboot, 1201, now);
            s.save_session(&a2, &sum).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let a3 = s.load(Some(&a.id.as_str().to_ascii_lowercase())).unwrap();
        assert_eq!(a3.tree.value("DevDetail/Ext/Microsoft/DeviceName"), Some("X"));
        assert_eq!(s.sessions(&a.id).unwrap().len(), 1);
        assert_eq!(s.ids().unwrap().len(), 2);
        assert!(matches!(s.load(Some("00000000000000000000000000000000")), Err(StoreError::UnknownDevice { .. })));
        s.set_default(&b.id).unwrap();
        assert_eq!(s.load(None).unwrap().id, b.id);
    }

    #[test]
    fn open_never_creates_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("state");
        let e = Store::open(&missing).err().unwrap();
        assert!(matches!(e, StoreError::Missing { .. }));
        assert!(e.to_string().contains("does not exist (create a device with `mdmsim device new`"), "{e}");
        assert!(!missing.exists(), "open created the directory");

        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = Store::open(&file).err().unwrap();
        assert_eq!(e.to_string(), format!("{} is a file, not a state directory", file.display()));
        assert!(matches!(Store::init(&file), Err(StoreError::NotADirectory { .. })));

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(Store::open(&empty), Err(StoreError::NoStore { .. })));
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "open wrote into a foreign directory");
    }

    #[cfg(unix)]
    #[test]
    fn init_makes_the_directory_and_every_file_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a").join("state");
        let store = Store::init(&state).unwrap();
        assert!(store.loose_permissions().is_none());
        let now = at();
        let t = Template::builtin(Profile::Win10);
        store
            .create(&Device::new(DeviceId::from_seed(1), Profile::Win10, "http://127.0.0.1:1/x", "P", &t, now))
            .unwrap();
        let mut entries = 0;
        let mut stack = vec![state.clone()];
        while let Some(p) = stack.pop() {
            let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", p.display());
            entries += 1;
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        assert!(entries >= 4, "the walk saw the sled files ({entries} entries)");
        assert_eq!(std::fs::read_to_string(state.join(LOCK_PID_FILE)).unwrap().trim(), std::process::id().to_string());
        drop(store);
        assert!(!state.join(LOCK_PID_FILE).exists(), "lock.pid outlived the store");

        // Loosened by hand: reported at the next open, the directory first.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(state.join(DB_DIR).join("conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&state).unwrap();
        let loose = store.loose_permissions().unwrap();
        assert_eq!((loose.path.as_path(), loose.mode, loose.count), (state.as_path(), 0o755, 2));
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::init(dir.path()).unwrap();
        let e = Store::open(dir.path()).err().unwrap();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("is in use by"), "{e}");
    }
}
