//! `mdmsim device new`: creates a pre-provisioned device (as bulk provisioning would) in a state
//! directory and prints its DeviceID. `mdmsim device import`: learns a device template from a
//! capture of a real device (`capture::import`) and says what it kept, varied, masked and
//! dropped.

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
    /// Learn a device template from a capture of a real device: a SyncMLViewer export or any
    /// text holding its SyncML messages, a folder of SyncML messages (one per file, in name
    /// order), or an MDMDiagReport.xml. Prints what it kept, varied, masked and dropped.
    Import(ImportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    /// The capture: files and folders, read in the order given.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Where to write the template (TOML).
    #[arg(short = 'o', long = "output", value_name = "TEMPLATE.toml")]
    output: PathBuf,
    /// Keep every captured value as it is: no serial, host name, MAC, disk size or install
    /// date marked to vary across a fleet (secrets are still dropped or masked).
    #[arg(long)]
    no_vary: bool,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
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
        Device::Import(a) => import(a),
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

fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    use mdmsim::capture::{self, import::ImportOptions};
    if a.output.is_dir() {
        return Err(fail(USAGE, format!("-o {}: is a directory, not a file", a.output.display())));
    }
    let parent = a.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !parent.is_dir() {
        return Err(fail(USAGE, format!("-o {}: the folder {} does not exist", a.output.display(), parent.display())));
    }
    let cap = capture::read(&a.files).map_err(|e| fail(USAGE, e.to_string()))?;
    let imported = capture::import::import(&cap, ImportOptions { vary: !a.no_vary });
    std::fs::write(&a.output, &imported.text)
        .map_err(|e| fail(super::exit::STATE, format!("-o {}: cannot write it: {e}", a.output.display())))?;
    let r = &imported.report;
    if a.json {
        let mut v = serde_json::to_value(r)?;
        v["template"] = serde_json::Value::String(a.output.display().to_string());
        out::line(serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    out::line(format_args!(
        "read {} file(s): {} client and {} server SyncML messages, {} report node(s), {} enrollment item(s)",
        cap.files.len(),
        r.messages.0,
        r.messages.1,
        cap.nodes.len(),
        cap.context.len()
    ));
    for (f, why) in &cap.skipped {
        out::line(format_args!("  passed over {f}: {why}"));
    }
    let build = r.os_build.as_deref().map(|b| format!(", OS build {b}")).unwrap_or_default();
    out::line(format_args!("profile {} ({}){build}", r.profile, r.profile_from));
    if let Some(id) = &r.device_id {
        out::line(format_args!("DeviceID {id} (device new --id {id} gives it back)"));
    }
    let section = |title: &str, entries: &[capture::import::Entry], show_why: bool| {
        out::line(format_args!("{title} ({}):", entries.len()));
        for e in entries {
            let value = if e.value.is_empty() { String::new() } else { format!(" = {:?}", e.value) };
            let why = if show_why && !e.why.is_empty() { format!("  ({})", e.why) } else { String::new() };
            out::line(format_args!("  {}{value}{why}", e.uri));
        }
    };
    section("kept", &r.kept, false);
    section("varied across a fleet", &r.varied, true);
    section("masked", &r.masked, true);
    section("unsupported (answered 404)", &r.unsupported, true);
    section("dropped", &r.dropped, true);
    out::line(format_args!(
        "checked: a device made from the template answers {} of {} captured Gets as captured (varied, masked and dropped values aside)",
        r.checked - r.mismatches.len(),
        r.checked
    ));
    for m in &r.mismatches {
        out::line(format_args!("  {}: captured {:?}, the device answers {:?}", m.uri, m.captured, m.device));
    }
    out::line(format_args!("wrote {}", a.output.display()));
    Ok(ExitCode::SUCCESS)
}
