//! `mdmsim device new`: creates a pre-provisioned device (as bulk provisioning would) in a state
//! directory and prints its DeviceID.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, Subcommand};

use mdmsim::device::{DEFAULT_PROVIDER_ID, Device as DeviceRecord, DeviceId};
use mdmsim::runner::http::Transport;
use mdmsim::session::Mode;
use mdmsim::tree::Profile;

use super::exit::{USAGE, fail};
use super::out;

#[derive(Subcommand)]
pub enum Device {
    /// Create a pre-provisioned device and print its device id.
    New(NewArgs),
    /// List the devices of a state directory (the default one marked with `*`, a device that
    /// left management with `UNENROLLED`, when and by whom).
    List(ListArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Print a JSON array of {id, profile, server, sessions, default, enrollment, unenrolled}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct NewArgs {
    /// The state directory (created if missing: mode 0700, its files 0600).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// The management server URL the device syncs with (http or https).
    #[arg(long, value_name = "URL")]
    server: String,
    /// The DeviceID (32 hex digits); random when omitted.
    #[arg(long, value_name = "DEVID")]
    id: Option<String>,
    /// Seed for the random DeviceID (the same seed gives the same id).
    #[arg(long, conflicts_with = "id")]
    seed: Option<u64>,
    /// The client to emulate (default: the template's, else win10).
    #[arg(long, value_parser = super::named::<Profile>())]
    profile: Option<Profile>,
    /// A TOML template of DevInfo/DevDetail values (see fixtures/templates/).
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
    /// The DMClient provider ID.
    #[arg(long, value_name = "ID", default_value = DEFAULT_PROVIDER_ID)]
    provider_id: String,
}

pub fn run(cmd: Device) -> anyhow::Result<ExitCode> {
    match cmd {
        Device::New(a) => new(a),
        Device::List(a) => list(a),
    }
}

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&a.state)?;
    let default = store.default_id().map_err(super::store_error)?;
    let mut rows = Vec::new();
    for id in store.ids().map_err(super::store_error)? {
        let d = store.load(Some(&id)).map_err(super::store_error)?;
        let is_default = default.as_deref() == Some(id.as_str());
        if !a.json {
            let mark = if is_default { "*" } else { " " };
            let found = d.enrollment.as_ref().map_or(0, |e| e.findings.len());
            let mut note = if found > 0 { format!("  enrollment findings={found}") } else { String::new() };
            // A device that left management cannot sync: say so on its line, with when and why.
            if let Some(u) = &d.unenrolled {
                note.push_str(&format!(
                    "  UNENROLLED {} by {}",
                    u.at.format("%Y-%m-%dT%H:%M:%SZ"),
                    match u.by {
                        mdmsim::device::UnenrolledBy::Server => "the server",
                        mdmsim::device::UnenrolledBy::User => "the user",
                        mdmsim::device::UnenrolledBy::LostContact => "lost contact",
                    }
                ));
            }
            out::line(format_args!(
                "{mark} {}  {}  {}  sessions={}{note}",
                d.id,
                d.profile.as_str(),
                d.server_url,
                d.sessions
            ));
        }
        rows.push(serde_json::json!({
            "id": d.id.as_str(),
            "profile": d.profile.as_str(),
            "server": d.server_url,
            "sessions": d.sessions,
            "default": is_default,
            "unenrolled": d.unenrolled.as_ref().map(|u| serde_json::json!({ "at": u.at, "by": format!("{:?}", u.by) })),
            "enrollment": d.enrollment.as_ref().map(|e| serde_json::json!({
                "user": e.user,
                "discovery_url": e.discovery_url,
                "enrollment_type": e.enrollment_type,
                "findings": e.findings,
            })),
        }));
    }
    if a.json {
        out::line(serde_json::to_string_pretty(&rows)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn new(a: NewArgs) -> anyhow::Result<ExitCode> {
    let (profile, template) = super::load_template(a.template.as_deref(), a.profile)?;
    Transport::session_url(&a.server, Mode::Maintenance, profile).map_err(|e| fail(USAGE, e.to_string()))?;
    let id = match (&a.id, a.seed) {
        (Some(id), _) => DeviceId::parse(id).map_err(|e| fail(USAGE, e.to_string()))?,
        (None, Some(seed)) => DeviceId::from_seed(seed),
        // The binary may use OS randomness; the library only takes seeds.
        (None, None) => DeviceId::from_seed(rand::random()),
    };
    let device = DeviceRecord::new(id, profile, &a.server, &a.provider_id, &template, Utc::now());
    let store = super::init_store(&a.state)?;
    store.create(&device).map_err(super::store_error)?;
    out::line(&device.id);
    Ok(ExitCode::SUCCESS)
}
