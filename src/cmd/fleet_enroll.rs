//! `mdmsim fleet --discovery URL`: every device of the shard enrolls through MS-MDE2
//! (discovery, policy, certificate request) before the run, a bounded number at a time, and
//! then runs its sessions with the certificate it was issued (mTLS).
//!
//! Built for numbers: the keys come from a pool (`--key-pool`, `runner::keys`) so that an
//! enrollment costs a signature rather than a key generation; the enrollments share one HTTP
//! client; an enrolled device keeps only its certificate (DER) and a handle on its key, and
//! its sessions open their connection with that identity over the fleet's one TLS
//! configuration (`runner::mtls`), so no device holds an HTTP client.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use clap::Args;

use mdmsim::device::Device;
use mdmsim::enroll::{AuthToken, Secret};
use mdmsim::fleet::metrics::Metrics;
use mdmsim::fleet::report::Report;
use mdmsim::runner::enrollment::{DeviceEnrollError, EnrollOptions, enroll_held};
use mdmsim::runner::keys::KeyPool;
use mdmsim::runner::mtls::TlsIdentity;
use mdmsim::tree::Sharing;

use super::Credential;
use super::exit::{USAGE, fail};
use super::fleet_population::Population;

/// The `--discovery` options of `mdmsim fleet`.
#[derive(Args)]
pub struct EnrollArgs {
    /// Enroll every device through MS-MDE2 at this discovery URL (such as
    /// https://HOST/EnrollmentServer/Discovery.svc) before the run; its sessions then go to
    /// the management URL the enrollment provisioned, with the device's own certificate.
    #[arg(long, value_name = "URL", conflicts_with_all = ["server", "in_process"])]
    pub discovery: Option<String>,
    /// The enrolling user's address for every device; default: each device's own UPN (from its
    /// identity, see docs/fleet-model.md).
    #[arg(long, value_name = "ADDR")]
    pub email: Option<String>,
    #[command(flatten)]
    pub secret: super::SecretArgs,
    /// RSA keys shared by the enrolling devices: device i uses key i mod K, generated the first
    /// time it is needed (about 0.2 CPU seconds each). Certificates stay one per device.
    /// Default: 128.
    #[arg(long, value_name = "K")]
    pub key_pool: Option<usize>,
    /// Generate a fresh key for every device, as real devices do (slow: about 0.2 CPU seconds
    /// per device).
    #[arg(long, conflicts_with = "key_pool")]
    pub unique_keys: bool,
}

/// The credential every device enrolls with.
pub enum Auth {
    /// OnPremise: each device's user name with this password.
    Password(Secret),
    /// A token, the same for every device.
    Token(AuthToken),
}

impl Auth {
    fn for_user(&self, email: &str) -> AuthToken {
        match self {
            Auth::Password(p) => AuthToken::OnPremise { username: email.to_string(), password: p.clone() },
            Auth::Token(t) => t.clone(),
        }
    }
}

/// The devices of a shard after enrollment.
pub struct Enrolled {
    /// Fleet index, device and identity of each device that enrolled, in index order.
    pub devices: Vec<(u64, Device, Arc<TlsIdentity>)>,
    /// The roots the enrollments provisioned (PEM), each once: trusted for the sessions.
    pub roots: Vec<String>,
    /// The first failures, as messages (all are counted in the report).
    pub failures: Vec<String>,
    pub failed: u64,
    pub wall_s: f64,
    pub keys_generated: u64,
}

/// The most failure messages kept.
const FAILURES_KEPT: usize = 20;

impl EnrollArgs {
    /// Refuses the enrollment options for a fleet whose devices do not enroll (`enrolls`:
    /// `--discovery`, given or kept).
    pub fn check(&self, enrolls: bool) -> anyhow::Result<()> {
        if enrolls {
            return Ok(());
        }
        let given = [
            ("--email", self.email.is_some()),
            ("--key-pool", self.key_pool.is_some()),
            ("--unique-keys", self.unique_keys),
            ("--password, --password-file, --token or --token-file", self.secret.given()),
        ];
        match given.iter().find(|(_, on)| *on) {
            Some((flag, _)) => Err(fail(USAGE, format!("{flag} goes with --discovery (devices that enroll)"))),
            None => Ok(()),
        }
    }

    /// The enrolling users' credential (read once: it may come from standard input).
    pub fn credential(&self) -> anyhow::Result<Auth> {
        match self.secret.credential()? {
            Some(Credential::Password(p)) => Ok(Auth::Password(Secret::new(p))),
            Some(Credential::Token(t)) => Ok(Auth::Token(AuthToken::from_user_token(&t))),
            None => Err(fail(USAGE, format!("--discovery: {}", super::enroll::MISSING_CREDENTIAL))),
        }
    }
}

/// What an enrollment run needs besides the devices.
pub struct Plan<'a> {
    pub discovery: &'a str,
    pub client: reqwest::Client,
    pub pool: Arc<KeyPool>,
    /// Enrollments under way at once.
    pub concurrency: usize,
    /// The simulated instant the devices enroll at.
    pub at: DateTime<Utc>,
}

/// Enrolls the devices `indices` of `population` as `--email` (else each as its UPN) with
/// `auth`; each enrollment is counted in `report` and `metrics` with its latency or its failure
/// class. The enrolled devices of one template share what their trees hold alike through
/// `sharing`.
pub async fn enroll_population(
    plan: Plan<'_>,
    population: &Population,
    indices: &[u64],
    (email, auth): (Option<&str>, &Auth),
    (report, metrics): (&std::sync::Mutex<Report>, &Metrics),
    sharing: &mut Sharing<usize>,
) -> anyhow::Result<Enrolled> {
    let options = |index| population.enroll_options(index, email, |user| auth.for_user(user));
    let counted = |at, us, failed| {
        super::fleet::lock(report).enrollment(at, us, failed);
        metrics.enrollment(us, failed);
    };
    let made = |index, device: &mut Device| sharing.share(population.kind(index), &mut device.tree);
    enroll_all(plan, indices, options, counted, made).await
}

/// Enrolls the devices `indices`, each as `options` says, at most `plan.concurrency` at a time,
/// the pool's keys handed out by index; `counted` sees each enrollment's simulated instant,
/// latency (µs) and failure class, and `made` each enrolled device (with its index) as it is
/// unpacked, before the next one is.
pub async fn enroll_all(
    plan: Plan<'_>,
    indices: &[u64],
    options: impl Fn(u64) -> EnrollOptions,
    mut counted: impl FnMut(DateTime<Utc>, u64, Option<&'static str>),
    mut made: impl FnMut(u64, &mut Device),
) -> anyhow::Result<Enrolled> {
    let wall = Instant::now();
    let mut out = Enrolled {
        devices: Vec::new(),
        roots: Vec::new(),
        failures: Vec::new(),
        failed: 0,
        wall_s: 0.0,
        keys_generated: 0,
    };
    let mut roots = BTreeSet::new();
    // Each enrolled device waits packed in one buffer until every enrollment is done, and is
    // unpacked then: made among the short-lived allocations of enrollments (XML texts, parsed
    // documents), its small allocations would leave the heap's pages partly used once those are
    // freed, and the fleet would hold several times its devices' size.
    let mut packed = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = indices.iter();
    loop {
        while tasks.len() < plan.concurrency.max(1) {
            let Some(&index) = next.next() else { break };
            let mut opts = options(index);
            opts.key_pool = Some((Arc::clone(&plan.pool), index));
            let client = plan.client.clone();
            let url = plan.discovery.to_string();
            let at = plan.at;
            tasks.spawn(async move {
                let started = Instant::now();
                let done = enroll_held(&client, &url, &opts, at).await;
                (index, done, started.elapsed(), opts.settings)
            });
        }
        let Some(joined) = tasks.join_next().await else { break };
        let (index, done, took, settings) =
            joined.map_err(|e| fail(super::exit::STATE, format!("an enrollment task: {e}")))?;
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let result = done.map_err(|e| (class(&e), e.to_string())).and_then(|(device, enrolled)| {
            let mut chain = enrolled.client_cert_pem.clone();
            chain.extend(enrolled.intermediate_certs_pem.iter().map(String::as_str));
            let identity = TlsIdentity::from_pem(&chain, enrolled.key.clone())
                .map_err(|e| ("certificate", format!("device {}: {e}", device.id)))?;
            roots.extend(enrolled.root_certs_pem.iter().cloned());
            let json = serde_json::to_vec(&device).map_err(|e| ("local", format!("device {}: {e}", device.id)))?;
            Ok((json, identity))
        });
        let failed = result.as_ref().err().map(|(c, _)| *c);
        counted(plan.at, us, failed);
        match result {
            Ok((json, identity)) => packed.push((index, json, settings, identity)),
            Err((_, message)) => {
                out.failed += 1;
                if out.failures.len() < FAILURES_KEPT {
                    out.failures.push(message);
                }
            }
        }
    }
    packed.sort_by_key(|(i, ..)| *i);
    for (index, json, settings, identity) in packed {
        let mut device: Device = serde_json::from_slice(&json)
            .map_err(|e| fail(super::exit::STATE, format!("device {index} after its enrollment: {e}")))?;
        if let Some(shared) = settings.filter(|s| **s == *device.settings) {
            device.settings = shared;
        }
        made(index, &mut device);
        out.devices.push((index, device, Arc::new(identity)));
    }
    out.roots = roots.into_iter().collect();
    out.wall_s = wall.elapsed().as_secs_f64();
    out.keys_generated = plan.pool.generated();
    Ok(out)
}

/// The failure class of an enrollment, for counting.
fn class(e: &DeviceEnrollError) -> &'static str {
    match e {
        DeviceEnrollError::Enroll(e) => e.class(),
        DeviceEnrollError::Apply(_) => "provisioning",
    }
}
