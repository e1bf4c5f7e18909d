//! Device state on disk: a sled database in the `--state DIR` directory.
//!
//! Layout: tree `devices` maps a DeviceID to its record ([`Device`], JSON: identity, profile,
//! server, template settings, tree values, session counter); tree `sessions` maps
//! `<DeviceID>/<counter, 10 digits>` to the [`Summary`] of that session; tree `meta` holds the
//! `default` device (the one used when `--device` is omitted: the first one created).
//!
//! The end of a session is written in ONE sled transaction (record + summary), then flushed:
//! a crash leaves the state of before or after the session, never half of it. Owns nothing
//! but persistence.

use std::path::{Path, PathBuf};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::device::{Device, DeviceId};
use crate::session::Summary;

/// A state directory that cannot be used, or a device it does not hold.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory cannot be opened (missing permissions, another mdmsim holds its lock...).
    #[error("state directory {dir}: {reason}")]
    Open { dir: PathBuf, reason: String },
    /// No device with this id.
    #[error("state directory {dir}: no device {id} (see `mdmsim device new`)")]
    UnknownDevice { dir: PathBuf, id: String },
    /// `--device` was omitted and no device exists yet.
    #[error("state directory {dir} holds no device yet (create one with `mdmsim device new`)")]
    Empty { dir: PathBuf },
    /// A device with this id exists already.
    #[error("state directory {dir}: device {id} exists already")]
    Exists { dir: PathBuf, id: String },
    /// A stored value does not decode.
    #[error("state directory {dir}: stored {key} is unreadable: {reason}")]
    Corrupt { dir: PathBuf, key: String, reason: String },
    /// Reading or writing failed.
    #[error("state directory {dir}: {reason}")]
    Io { dir: PathBuf, reason: String },
}

/// The open state directory.
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    devices: sled::Tree,
    sessions: sled::Tree,
    meta: sled::Tree,
}

const DEFAULT_KEY: &[u8] = b"default";

impl Store {
    /// Opens (or creates) the state directory.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open { dir: dir.to_path_buf(), reason: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        let db = sled::open(dir.join("db")).map_err(|e| {
            if e.to_string().contains("could not acquire lock") {
                open_err(&"in use by another mdmsim process (sled lock held)")
            } else {
                open_err(&e)
            }
        })?;
        let devices = db.open_tree("devices").map_err(|e| open_err(&e))?;
        let sessions = db.open_tree("sessions").map_err(|e| open_err(&e))?;
        let meta = db.open_tree("meta").map_err(|e| open_err(&e))?;
        Ok(Store { dir: dir.to_path_buf(), db, devices, sessions, meta })
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
            let s = Store::open(dir.path()).unwrap();
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
}
