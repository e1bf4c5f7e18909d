//! The DeviceID: 32 uppercase hex digits, sent as SyncHdr Source and `./DevInfo/DevId`
//! (MS-MDM §2.2, OMA DM RepPro, real capture `1E08C6E95D8BB843B1278FF45BC60CC6`).
//!
//! Generation takes an RNG (or a seed) from the caller: the same seed gives the same fleet.

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// A checked DeviceID (always 32 uppercase hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

/// Why a text is not a DeviceID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device id {0:?} is not 32 hexadecimal digits")]
pub struct BadDeviceId(pub String);

impl DeviceId {
    /// Checks a DeviceID given by a user; lowercase digits are accepted and uppercased.
    pub fn parse(text: &str) -> Result<DeviceId, BadDeviceId> {
        let t = text.trim();
        if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(DeviceId(t.to_ascii_uppercase()))
        } else {
            Err(BadDeviceId(text.to_string()))
        }
    }

    /// A new DeviceID drawn from `rng`.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> DeviceId {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        DeviceId(hex::encode_upper(bytes))
    }

    /// The DeviceID a seed gives (ChaCha20): the same seed always gives the same id.
    pub fn from_seed(seed: u64) -> DeviceId {
        DeviceId::generate(&mut ChaCha20Rng::seed_from_u64(seed))
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DeviceId {
    type Error = BadDeviceId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DeviceId::parse(&s)
    }
}

impl From<DeviceId> for String {
    fn from(d: DeviceId) -> String {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_uppercase_hex_and_seeded_generation_is_deterministic() {
        let a = DeviceId::from_seed(42);
        assert_eq!(a, DeviceId::from_seed(42));
        assert_ne!(a, DeviceId::from_seed(43));
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        assert_eq!(
            DeviceId::parse("1e08c6e95d8bb843b1278ff45bc60cc6").unwrap().as_str(),
            "1E08C6E95D8BB843B1278FF45BC60CC6"
        );
        assert!(DeviceId::parse("1E08").is_err());
        assert!(DeviceId::parse("ZZ08C6E95D8BB843B1278FF45BC60CC6").is_err());
    }
}
