//! Runs a checked scenario against a server: the I/O half of `mdmsim scenario run`.
//!
//! Creates every device of the scenario's groups (pre-provisioned, or enrolled through MS-MDE2
//! when asked), scripts the timeline's events onto their
//! schedulers, and drives the fleet ([`super::fleet`]) from the scenario's start to its end on
//! the scenario's clock. What the devices did comes back as an [`Observed`] (sessions in order,
//! a tree snapshot after every step a device took, the final trees) for the expectation engine
//! (`scenario::evaluate`). Does not judge anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::device::Device;
use crate::scenario::{Built, DeviceGroup, DeviceRun, EnrollAs, Observed, RunError, RunOptions};
use crate::schedule::{ClockKind, device_seed};
use crate::session::{Fault, Outcome};

use super::enrollment::{EnrollOptions, enroll_device, http_options};
use super::fleet::{ChannelService, Fleet, FleetOptions, Member, Record};
use crate::wns::PushEndpoint;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
use super::http::{HttpOptions, Transport};

/// The management endpoint when `--server` is a bare base URL: the path of the reference
/// server and of the MS-MDE2 samples.
const DEFAULT_MANAGEMENT_PATH: &str = "/ManagementServer/MDM.svc";

/// The management URL for `--server`: used as given when it has a path, else the base URL
/// plus [`DEFAULT_MANAGEMENT_PATH`].
pub fn management_url(server: &str) -> Result<String, RunError> {
    let url = reqwest::Url::parse(server.trim())
        .map_err(|e| RunError::State(format!("--server {server:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RunError::State(format!("--server {server:?}: expected an http(s) URL")));
    }
    Ok(if url.path() == "/" || url.path().is_empty() {
        format!("{}{DEFAULT_MANAGEMENT_PATH}", server.trim().trim_end_matches('/'))
    } else {
        server.trim().to_string()
    })
}

/// Runs `built` against `opts.server` (see the module docs).
pub async fn execute(built: &Built, opts: &RunOptions) -> Result<Observed, RunError> {
    let server = management_url(&opts.server)?;
    let mut http = HttpOptions { insecure: opts.insecure, timeout: Duration::from_secs(30), ..HttpOptions::default() };
    if let Some(path) = &opts.ca_cert {
        http.ca_cert_pem =
            Some(std::fs::read(path).map_err(|e| RunError::State(format!("--ca-cert {}: {e}", path.display())))?);
    }
    let transport = Arc::new(Transport::new(http.clone()).map_err(|e| RunError::State(e.to_string()))?);
    let start = built.clock.start;
    let mut members = Vec::new();
    let mut runs = Vec::new();
    for group in &built.devices {
        for index in 0..group.ids.len() {
            let (mut device, own) = match &opts.enroll {
                None => (group.device(index, &server, start).map_err(RunError::State)?, None),
                Some(how) => {
                    let (enrolled, exchanges) = super::enroll::recording(enroll(group, index, how, &http, start)).await;
                    if let (Some(dir), Some(id)) = (&opts.transcript, group.ids.get(index)) {
                        super::enroll::write_exchanges(&dir.join(id.as_str()), &exchanges)
                            .map_err(|e| RunError::State(format!("--transcript {}: {e}", dir.display())))?;
                    }
                    let (device, transport) = enrolled?;
                    (device, Some(transport))
                }
            };
            // The machine is on and nobody is logged on when a scenario starts: the timeline's
            // reboots and logons decide who is (scenarios/README.md).
            device.users = crate::schedule::UserState::new();
            let seed = device_seed(0x5ce7_a210, members.len() as u64);
            let mut m = Member::new(device, seed, start).map_err(|e| RunError::State(format!("template: {e}")))?;
            m.transport = own;
            // A scenario's devices are pre-provisioned: their first session is the one the
            // timeline or the schedule starts, not an implicit post-enrollment session.
            m.first_session = None;
            let events = built
                .timeline
                .iter()
                .filter(|e| e.devices.as_ref().is_none_or(|ids| ids.contains(&m.engine.device.id)))
                .map(|e| (e.at, e.event.clone()));
            m.engine.scheduler.script(events);
            runs.push(DeviceRun::new(&m.device, start));
            members.push(m);
        }
    }
    if let Some(dir) = &opts.transcript {
        std::fs::create_dir_all(dir).map_err(|e| RunError::State(format!("--transcript {}: {e}", dir.display())))?;
    }
    let index: HashMap<String, usize> = runs.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
    let channels = opts.wns.as_ref().map(|w| match w {
        PushEndpoint::Embedded(wns) => ChannelService::of(wns.clone()),
        PushEndpoint::Remote { client, base_url } => ChannelService::remote(client.clone(), base_url.clone()),
    });
    let fleet_opts = FleetOptions { transcript: opts.transcript.clone(), channels, ..FleetOptions::default() };
    let mut fleet = Fleet::new(Arc::new(crate::csp::registry()), transport, members, fleet_opts);
    // Aborted when the run ends (dropped with this guard).
    let _waker = match &opts.wns {
        Some(PushEndpoint::Embedded(wns)) => {
            wns.set_deliver(fleet.push_receiver());
            None
        }
        Some(PushEndpoint::Remote { client, base_url }) => Some(AbortOnDrop(tokio::spawn(
            crate::wns::remote_wake_loop(client.clone(), base_url.clone(), fleet.push_receiver()),
        ))),
        None => None,
    };
    let mut clock = crate::schedule::clock::build(
        built.clock.kind,
        (built.clock.kind == ClockKind::Scaled).then_some(built.clock.speed),
        Some(start),
        start,
    )
    .map_err(|e| RunError::State(e.to_string()))?;
    let mut unreachable = 0usize;
    let mut sessions = 0usize;
    fleet
        .run(clock.as_mut(), built.clock.until, |record, device| {
            let Some(&i) = index.get(record.device()) else { return };
            let run = &mut runs[i];
            match record {
                Record::Session { at, summary, .. } => {
                    sessions += 1;
                    if summary.outcome != Outcome::Completed && summary.fault == Some(Fault::Unreachable) {
                        unreachable += 1;
                    }
                    run.sessions.push((**summary).clone());
                    run.snapshot(*at, Some(&summary.session_id), &device.tree);
                }
                Record::Missed { at, .. } | Record::Unenrolled { at, .. } | Record::Changed { at, .. } => {
                    run.snapshot(*at, None, &device.tree)
                }
            }
        })
        .await;
    // A server nobody could reach is an error of the run, not a list of failed expectations.
    if sessions > 0 && unreachable == sessions {
        let first = runs.iter().flat_map(|r| &r.sessions).find_map(|s| s.error.clone()).unwrap_or_default();
        return Err(RunError::Unreachable(first));
    }
    for m in fleet.members() {
        if let Some(&i) = index.get(m.device.id.as_str()) {
            runs[i].tree = m.device.tree.clone();
            runs[i].ended_at = built.clock.until;
        }
    }
    Ok(Observed { devices: runs })
}

/// Enrolls device `index` of `group` through MS-MDE2, applies the group's `[device.nodes]`, and
/// gives the device and its own transport (its client certificate, the provisioned roots).
async fn enroll(
    group: &DeviceGroup,
    index: usize,
    how: &EnrollAs,
    http: &HttpOptions,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Device, Arc<Transport>), RunError> {
    let id = group.ids.get(index).cloned().ok_or_else(|| RunError::State(format!("no device {index}")))?;
    let mut eo = EnrollOptions::new(&how.email, how.auth.clone(), id, group.profile);
    eo.template = group.template.clone();
    let client = super::enroll::http_client(http.ca_cert_pem.as_deref(), http.insecure)
        .map_err(|e| RunError::State(e.to_string()))?;
    let (mut device, material) = enroll_device(&client, &how.discovery_url, &eo, now).await.map_err(|e| {
        let text = format!("enrolling {}: {e}", eo.id);
        // Exit code 3 is "unreachable" for enrollment errors too.
        if e.exit_code() == 3 { RunError::Unreachable(text) } else { RunError::Protocol(text) }
    })?;
    group.apply_nodes(&mut device, now).map_err(RunError::State)?;
    let opts = http_options(&device, &material, http.clone()).map_err(|e| RunError::State(e.to_string()))?;
    Ok((device, Arc::new(Transport::new(opts).map_err(|e| RunError::State(e.to_string()))?)))
}
