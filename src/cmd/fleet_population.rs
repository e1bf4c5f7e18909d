//! The devices of a fleet: each one's identity, template and days from the seed and its index,
//! through the template mix (`mdmsim::fleet::mix`), so that a device is made again at will and
//! nothing about it is stored beyond its engine (with `--state DIR` the store keeps each device
//! and gives it back, [`Population::resumed`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

use mdmsim::device::{Device, DeviceId, Template, template_settings};
use mdmsim::enroll::AuthToken;
use mdmsim::fleet::behaviour::{self, Model};
use mdmsim::fleet::identity::Identity;
use mdmsim::fleet::mix::Mix;
use mdmsim::runner::enrollment::EnrollOptions;
use mdmsim::runner::fleet::Member;
use mdmsim::schedule::{Event, NightlyError, device_seed};
use mdmsim::tree::Settings;

/// Who the devices of a fleet are.
pub struct Population {
    seed: u64,
    server_url: String,
    provider: String,
    mix: Mix,
    model: Model,
    /// Settings shared by the devices of one mix template in one time zone (the only setting an
    /// identity changes).
    settings: Mutex<HashMap<(usize, String), Arc<Settings>>>,
}

impl Population {
    /// The fleet of `mix` and `seed` whose run starts at `start` (devices that never come back
    /// leave counting from it).
    pub fn new(mix: Mix, seed: u64, server_url: &str, provider: &str, start: DateTime<Utc>) -> Population {
        let model = mix.model.clone().starting(start);
        Population {
            seed,
            server_url: server_url.to_string(),
            provider: provider.to_string(),
            mix,
            model,
            settings: Mutex::new(HashMap::new()),
        }
    }

    /// The settings shared by the devices of `index`'s template and time zone.
    fn settings(&self, index: u64, id: &Identity, template: &Template) -> Arc<Settings> {
        let (_, which) = self.mix.pick(self.seed, index);
        self.shared_settings(which, id.timezone.name(), template)
    }

    /// Device `index` of the fleet, made at `now` (its first session then, unless the caller
    /// moves it).
    pub fn member(&self, index: u64, now: DateTime<Utc>) -> Result<Member, NightlyError> {
        let (id, template, profile) = self.mix.device(self.seed, index);
        let settings = self.settings(index, &id, &template);
        let device = Device::with_settings(
            id.device_id.clone(),
            profile,
            &self.server_url,
            &self.provider,
            &template,
            settings,
            now,
        );
        Member::new(device, device_seed(self.seed, index), now)
    }

    /// What device `index` enrolls as (MS-MDE2): its DeviceID, template and profile, the
    /// settings it shares with its kind, and as user `email` or else its own UPN, with the
    /// credential `auth` gives for that user.
    pub fn enroll_options(&self, index: u64, email: Option<&str>, auth: impl Fn(&str) -> AuthToken) -> EnrollOptions {
        let (id, template, profile) = self.mix.device(self.seed, index);
        let settings = self.settings(index, &id, &template);
        let email = email.unwrap_or(&id.upn);
        let mut opts = EnrollOptions::new(email, auth(email), id.device_id.clone(), profile);
        opts.template = template;
        opts.settings = Some(settings);
        opts
    }

    /// The settings shared by the devices of mix template `which` in time zone `tz`.
    fn shared_settings(&self, which: usize, tz: &str, template: &Template) -> Arc<Settings> {
        let mut cache = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(cache.entry((which, tz.to_string())).or_insert_with(|| template_settings(template)))
    }

    /// The kind of device `index`: which template of the mix it is made from.
    pub fn kind(&self, index: u64) -> usize {
        self.mix.pick(self.seed, index).1
    }

    /// The DeviceID of device `index`.
    pub fn device_id(&self, index: u64) -> DeviceId {
        self.mix.identity(self.seed, index).device_id
    }

    /// Device `index` as a store gave it back, going on at `now`: its counter, tree and users
    /// as stored, its schedule and days from the seed and its index again. Its settings are
    /// shared with the other devices of its template and time zone when they are the same (a
    /// loaded device has its own copy otherwise).
    pub fn resumed(&self, mut device: Device, index: u64, now: DateTime<Utc>) -> Result<Member, NightlyError> {
        let (id, template, _) = self.mix.device(self.seed, index);
        let shared = self.settings(index, &id, &template);
        if *shared == *device.settings {
            device.settings = shared;
        }
        Member::new(device, device_seed(self.seed, index), now)
    }

    /// True when device `index` left for good (its network off from then on: a device the
    /// behaviour model says never comes back) at or before `at`.
    pub fn gone_by(&self, index: u64, at: DateTime<Utc>) -> bool {
        let id = self.mix.identity(self.seed, index);
        behaviour::gone_at(&self.model, &id, self.seed).is_some_and(|g| g <= at)
    }

    /// Device `index`'s events of the UTC day starting at `day`, within the run's `[start, end)`.
    pub fn day(
        &self,
        index: u64,
        day: DateTime<Utc>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, Event)> {
        let id = self.mix.identity(self.seed, index);
        let mut events = behaviour::day(&self.model, &id, self.seed, day);
        events.retain(|(t, _)| *t > start && *t < end);
        events
    }
}
