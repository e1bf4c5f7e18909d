//! Keys for enrollments at scale: a pool of RSA keys shared by the devices of a fleet, so that
//! an enrollment costs a signature (its certificate request) rather than a key generation.
//!
//! A 2048-bit key takes about a fifth of a CPU second to generate; a certificate request's
//! signature a quarter of a millisecond. With a pool of K keys, device `i` uses key `i mod K`
//! of the size the enrollment policy asks for; each key is generated the first time a device
//! needs it, off the async workers. Devices that share a key still get their own certificates
//! (the server signs each request), so servers see one certificate per device; only a server
//! that checks keys for uniqueness can tell. `KeyPool::unique` gives every enrollment a fresh
//! key, as real devices have.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use openssl::pkey::{PKey, Private};
use tokio::sync::OnceCell;

use super::enroll::{EnrollError, generate_key};

/// The default number of keys of a pool.
pub const DEFAULT_POOL: usize = 128;

/// The keys of one size, each made when first needed.
type Slots = Arc<[OnceCell<PKey<Private>>]>;

/// RSA keys handed to enrollments.
pub struct KeyPool {
    /// Keys per size; 0 for a fresh key every time.
    size: usize,
    slots: Mutex<HashMap<u32, Slots>>,
    generated: AtomicU64,
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool").field("size", &self.size).field("generated", &self.generated()).finish()
    }
}

impl KeyPool {
    /// A pool of `size` keys per key size (at least 1).
    pub fn new(size: usize) -> KeyPool {
        KeyPool { size: size.max(1), slots: Mutex::default(), generated: AtomicU64::new(0) }
    }

    /// No sharing: a fresh key for every enrollment.
    pub fn unique() -> KeyPool {
        KeyPool { size: 0, slots: Mutex::default(), generated: AtomicU64::new(0) }
    }

    /// Keys per key size; `None` when every enrollment gets a fresh key.
    pub fn size(&self) -> Option<usize> {
        (self.size > 0).then_some(self.size)
    }

    /// How many keys were generated so far.
    pub fn generated(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }

    /// The slot of device `index` in the pool; `None` when every enrollment gets a fresh key.
    pub fn slot(&self, index: u64) -> Option<usize> {
        (self.size > 0).then(|| (index % self.size as u64) as usize)
    }

    /// Puts a key kept from an earlier run in its slot (`bits` long keys), so that the devices
    /// of that slot enroll with it again; false when the slot is out of the pool or already has
    /// a key.
    pub fn preset(&self, bits: u32, slot: usize, key: PKey<Private>) -> bool {
        if slot >= self.size {
            return false;
        }
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let cells = slots.entry(bits).or_insert_with(|| (0..self.size).map(|_| OnceCell::new()).collect());
        cells[slot].set(key).is_ok()
    }

    /// The key of the enrollment of device `index`, `bits` long.
    pub async fn key(&self, index: u64, bits: u32) -> Result<PKey<Private>, EnrollError> {
        if self.size == 0 {
            return self.generate(bits).await;
        }
        let cells = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(slots.entry(bits).or_insert_with(|| (0..self.size).map(|_| OnceCell::new()).collect()))
        };
        let cell = &cells[(index % self.size as u64) as usize];
        cell.get_or_try_init(|| self.generate(bits)).await.cloned()
    }

    async fn generate(&self, bits: u32) -> Result<PKey<Private>, EnrollError> {
        let key = tokio::task::spawn_blocking(move || generate_key(bits))
            .await
            .map_err(|e| EnrollError::Local(format!("generating a {bits}-bit RSA key: {e}")))??;
        self.generated.fetch_add(1, Ordering::Relaxed);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn devices_share_the_keys_of_the_pool_and_unique_keys_are_fresh() {
        let pool = KeyPool::new(2);
        let a = pool.key(0, 1024).await.unwrap();
        let b = pool.key(1, 1024).await.unwrap();
        let c = pool.key(2, 1024).await.unwrap();
        assert!(a.public_eq(&c), "device 2 uses key 0 of a pool of 2");
        assert!(!a.public_eq(&b));
        assert_eq!(a.bits(), 1024);
        assert_eq!(pool.generated(), 2);
        // Another size is another set of keys.
        assert_eq!(pool.key(0, 2048).await.unwrap().bits(), 2048);
        assert_eq!(pool.generated(), 3);

        // A key kept from an earlier run goes back in its slot.
        let kept = KeyPool::new(2);
        assert!(kept.preset(1024, 1, b.clone()));
        assert!(!kept.preset(1024, 1, a.clone()), "the slot has its key");
        assert!(!kept.preset(1024, 2, a.clone()), "out of the pool");
        assert_eq!(kept.slot(5), Some(1));
        assert!(kept.key(5, 1024).await.unwrap().public_eq(&b));
        assert_eq!(kept.generated(), 0);

        let unique = KeyPool::unique();
        let x = unique.key(0, 1024).await.unwrap();
        let y = unique.key(0, 1024).await.unwrap();
        assert!(!x.public_eq(&y));
        assert_eq!(unique.size(), None);
    }
}
