//! The devices of a fleet: each one's identity and template from the seed and its index, and
//! its days (the events of its user's working day).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

use mdmsim::device::{Device, DeviceId, Template, template_settings};
use mdmsim::runner::fleet::Member;
use mdmsim::schedule::{Event, NightlyError, device_seed};
use mdmsim::tree::{Profile, Settings};

/// Who the devices of a fleet are.
pub struct Population {
    seed: u64,
    server_url: String,
    provider: String,
    /// Each template with the settings its devices share.
    templates: Vec<(Profile, Template, Arc<Settings>)>,
}

impl Population {
    /// Nine in ten devices on Windows 10/11, one in ten on Windows 8.1, from the built-in
    /// templates.
    pub fn builtin(seed: u64, server_url: &str, provider: &str) -> Population {
        let templates = [Profile::Win10, Profile::Win81]
            .into_iter()
            .map(|p| {
                let t = Template::builtin(p);
                let s = template_settings(&t);
                (p, t, s)
            })
            .collect();
        Population { seed, server_url: server_url.to_string(), provider: provider.to_string(), templates }
    }

    /// Device `index` of the fleet, made at `now` (its first session then, unless the caller
    /// moves it).
    pub fn member(&self, index: u64, now: DateTime<Utc>) -> Result<Member, NightlyError> {
        let s = device_seed(self.seed, index);
        let (profile, template, settings) = &self.templates[usize::from(index % 10 == 9)];
        let id = DeviceId::generate(&mut ChaCha8Rng::seed_from_u64(s));
        let device =
            Device::with_settings(id, *profile, &self.server_url, &self.provider, template, Arc::clone(settings), now);
        Member::new(device, s, now)
    }

    /// Device `index`'s events of the UTC day starting at `day`, within the run's `[start, end)`.
    pub fn day(
        &self,
        index: u64,
        day: DateTime<Utc>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, Event)> {
        let n = (day - DateTime::<Utc>::UNIX_EPOCH).num_days() as u64;
        let mut events = super::demo::day_of(device_seed(self.seed, index) ^ n, day, day + Duration::days(1));
        events.retain(|(t, _)| *t > start && *t < end);
        events
    }
}
