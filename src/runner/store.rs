//! Device state on disk: a sled database in the `--state DIR` directory.
//!
//! Layout: tree `devices` maps a DeviceID to its record ([`Device`], JSON: identity, profile,
//! server, template settings, tree values, session counter); tree `sessions` maps
//! `<DeviceID>/<counter, 10 digits>` to the [`Summary`] of that session; tree `meta` holds the
//! `default` device (the one used when `--device` is omitted: the first one created).
//!
//! The end of a session is written in ONE sled transaction (record + summary), then flushed:
//! a crash leaves the state of before or after the session, never half of it.
//!
//! The records hold secrets (the DMAcc MD5 credentials of both directions; enrolled devices keep
//! their private key next to the store), so the directory is private: [`Store::init`] creates
//! it 0700 with every file in it 0600, and [`Store::open`] reports entries that group or others
//! may use ([`Store::loose_permissions`]) for the binary to warn about. Only [`Store::init`]
//! creates anything: opening a missing directory is [`StoreError::Missing`]. While a store is
//! open its sled lock is held and `lock.pid` names the process, so that a second process is
//! told which one holds it ([`StoreError::Locked`]).
//!
//! Owns nothing but persistence.

use std::path::{Path, PathBuf};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::device::{Device, DeviceId};
use crate::session::Summary;

/// The sled database inside the state directory.
const DB_DIR: &str = "db";
/// The file naming the process that holds the store open (its pid, one line).
const LOCK_PID_FILE: &str = "lock.pid";
/// Bounds of the permission walk (a state directory holds a few files per device).
const MAX_WALK_ENTRIES: usize = 100_000;
const MAX_WALK_DEPTH: usize = 8;

/// A state directory that cannot be used, or a device it does not hold.
#[derive(Debug, thiserror::Error)]
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

/// The open state directory.
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    devices: sled::Tree,
    sessions: sled::Tree,
    meta: sled::Tree,
    loose: Option<LoosePermissions>,
    /// The `lock.pid` this process wrote (removed again when the store is dropped).
    pid_file: Option<PathBuf>,
}

const DEFAULT_KEY: &[u8] = b"default";

impl Store {
    /// Opens an existing state directory; never creates anything but the store's own lock
    /// bookkeeping. A missing directory is [`StoreError::Missing`], a file
    /// [`StoreError::NotADirectory`], a directory without a store [`StoreError::NoStore`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        if !is_directory(dir)? {
            return Err(StoreError::Missing { dir: dir.to_path_buf() });
        }
        if !dir.join(DB_DIR).is_dir() {
            return Err(StoreError::NoStore { dir: dir.to_path_buf() });
        }
        let loose = loose_permissions(dir);
        Store::open_db(dir, loose)
    }

    /// Opens the state directory, creating it when missing: the directory 0700, the store's
    /// files 0600 (sled creates its files with the process umask; they are tightened here). An
    /// existing directory is used as it is and its permissions are reported as by
    /// [`Store::open`].
    pub fn init(dir: &Path) -> Result<Store, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open { dir: dir.to_path_buf(), reason: e.to_string() };
        let existed = is_directory(dir)?;
        if !existed {
            create_private_dir(dir).map_err(|e| open_err(&format!("cannot create it: {e}")))?;
        }
        let fresh_db = !dir.join(DB_DIR).exists();
        let loose = if existed { loose_permissions(dir) } else { None };
        let store = Store::open_db(dir, loose)?;
        if fresh_db {
            tighten(&dir.join(DB_DIR), 0).map_err(|e| open_err(&format!("making the store private: {e}")))?;
        }
        Ok(store)
    }

    fn open_db(dir: &Path, loose: Option<LoosePermissions>) -> Result<Store, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open { dir: dir.to_path_buf(), reason: e.to_string() };
        let db = sled::open(dir.join(DB_DIR)).map_err(|e| {
            if e.to_string().contains("could not acquire lock") {
                StoreError::Locked { dir: dir.to_path_buf(), holder: holder(dir) }
            } else {
                open_err(&e)
            }
        })?;
        let devices = db.open_tree("devices").map_err(|e| open_err(&e))?;
        let sessions = db.open_tree("sessions").map_err(|e| open_err(&e))?;
        let meta = db.open_tree("meta").map_err(|e| open_err(&e))?;
        // Best effort: without it a second process is told "another process" instead of a pid.
        let pid_file = write_pid_file(dir);
        Ok(Store { dir: dir.to_path_buf(), db, devices, sessions, meta, loose, pid_file })
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

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io { dir: self.dir.clone(), reason: e.to_string() }
    }

    /// Stores a new device; the first device becomes the default one.
    pub fn create(&self, device: &Device) -> Result<(), StoreError> {
        let key = device.id.as_str().as_bytes();
        if self.devices.contains_key(key).map_err(|e| self.io(e))? {
            return Err(StoreError::Exists { dir: self.dir.clone(), id: device.id.to_string() });
        }
        let json = serde_json::to_vec(device).map_err(|e| self.io(e))?;
        let result: Result<(), TransactionError<()>> = (&self.devices, &self.meta).transaction(|(d, m)| {
            d.insert(key, json.as_slice())?;
            if m.get(DEFAULT_KEY)?.is_none() {
                m.insert(DEFAULT_KEY, key)?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        result.map_err(|e| self.io(format!("{e:?}")))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// The default device's id, if any.
    pub fn default_id(&self) -> Result<Option<String>, StoreError> {
        let v = self.meta.get(DEFAULT_KEY).map_err(|e| self.io(e))?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Makes `id` the default device.
    pub fn set_default(&self, id: &DeviceId) -> Result<(), StoreError> {
        self.load(Some(id.as_str()))?;
        self.meta.insert(DEFAULT_KEY, id.as_str().as_bytes()).map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Ids of every stored device, in order.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        self.devices
            .iter()
            .keys()
            .map(|k| k.map(|k| String::from_utf8_lossy(&k).into_owned()).map_err(|e| self.io(e)))
            .collect()
    }

    /// Loads a device: `id`, or the default one when `None`. Ids are matched case-insensitively.
    pub fn load(&self, id: Option<&str>) -> Result<Device, StoreError> {
        let id = match id {
            Some(id) => id.trim().to_ascii_uppercase(),
            None => self.default_id()?.ok_or_else(|| StoreError::Empty { dir: self.dir.clone() })?,
        };
        let bytes = self
            .devices
            .get(id.as_bytes())
            .map_err(|e| self.io(e))?
            .ok_or_else(|| StoreError::UnknownDevice { dir: self.dir.clone(), id: id.clone() })?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            dir: self.dir.clone(),
            key: format!("device {id}"),
            reason: e.to_string(),
        })
    }

    /// Writes the end of a session: the device record and the session summary, in one
    /// transaction, then flushes.
    pub fn save_session(&self, device: &Device, summary: &Summary) -> Result<(), StoreError> {
        let key = device.id.as_str().as_bytes();
        let json = serde_json::to_vec(device).map_err(|e| self.io(e))?;
        let skey = format!("{}/{:010}", device.id, device.sessions);
        let sjson = serde_json::to_vec(summary).map_err(|e| self.io(e))?;
        let result: Result<(), TransactionError<()>> = (&self.devices, &self.sessions).transaction(|(d, s)| {
            d.insert(key, json.as_slice())?;
            s.insert(skey.as_bytes(), sjson.as_slice())?;
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        result.map_err(|e| self.io(format!("{e:?}")))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Saves a device record alone (outside a session).
    pub fn save(&self, device: &Device) -> Result<(), StoreError> {
        let json = serde_json::to_vec(device).map_err(|e| self.io(e))?;
        self.devices.insert(device.id.as_str().as_bytes(), json).map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// The summaries of a device's sessions, oldest first.
    pub fn sessions(&self, id: &DeviceId) -> Result<Vec<Summary>, StoreError> {
        let prefix = format!("{id}/");
        self.sessions
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.io(e))?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    dir: self.dir.clone(),
                    key: format!("session {}", String::from_utf8_lossy(&k)),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(path) = &self.pid_file
            && std::fs::read_to_string(path).is_ok_and(|s| s.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(path);
        }
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
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::device::Template;
    use crate::session::{Mode, Trigger};
    use crate::tree::Profile;

    #[test]
    fn devices_and_sessions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap();
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
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap();
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
