//! `mdmsim sync`: runs one management session of a stored device now and prints its summary.
//!
//! Exit 0 when the session completed; 3 when the server could not be reached; 4 when it broke
//! the protocol; 5 when the state directory or the device cannot be used. The device's state
//! after a failed session is the state of before it (the summary is stored either way).
//!
//! Around the session the device's CSP timers run and the package downloads they ask for are
//! performed (before: what came due since the last run; after: what the session started), so an
//! app install moves on with each `sync`. Alerts those timers raise (an MSI install's report)
//! are kept with the device and go in package 1 of the next session: the alerts raised before
//! this session in this one, those raised after it in the next `sync`. The human output ends
//! with one `app:` line per EnterpriseAppManagement Download node (its Status by name,
//! LastError when it failed), one `msi:` line per EnterpriseDesktopAppManagement product, and
//! one `alert:` line per alert waiting for the next session. Every status the device returned
//! that is not 200 is named with its command, LocURI, MsgID and CmdID (`status 418:` lines).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use mdmsim::runner::enrollment;
use mdmsim::runner::http::Transport;
use mdmsim::runner::{SessionOptions, carry_out, run_session, run_timers};
use mdmsim::session::ModeGate;
use mdmsim::session::Trigger;
use mdmsim::tree::Effect;

use super::exit::{self, STATE, USAGE, fail};
use super::out;

#[derive(Args)]
pub struct SyncArgs {
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// The device (default: the first one created).
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Why the session starts; decides the mode (reboot -> Machine, push -> Apps on win81 or a
    /// server-initiated session on win10, others -> Maintenance).
    #[arg(long, value_parser = super::named::<Trigger>(), default_value = "manual")]
    trigger: Trigger,
    /// Write every message to DIR as NNN-client.xml / NNN-server.xml (pretty, secrets masked).
    #[arg(long, value_name = "DIR")]
    transcript: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Refuse commands the server must not send in this mode (Machine-mode rules) with 405
    /// instead of executing them and recording a finding.
    #[arg(long)]
    strict: bool,
    /// Run as MDMAgent started from a command prompt: tasks that need the enrolled user's
    /// impersonation (WNS configuration, user-scoped commands) fail.
    #[arg(long)]
    interactive: bool,
    #[command(flatten)]
    http: super::HttpArgs,
}

pub fn run(a: SyncArgs) -> anyhow::Result<ExitCode> {
    let mut opts = a.http.options()?;
    // The state directory first: a sync of a device that does not exist creates nothing.
    let store = super::open_store(&a.state)?;
    let mut device = store.load(a.device.as_deref()).map_err(super::store_error)?;
    super::transcript_dir(a.transcript.as_deref())?;
    // An unenrolled device has no credentials left: refuse instead of failing at the server.
    enrollment::check_usable(&device).map_err(|e| fail(STATE, e.to_string()))?;
    // An enrolled device presents its client certificate (mTLS) and trusts its provisioned
    // roots besides --ca-cert.
    if let Some(material) = enrollment::stored_material(&device, &a.state).map_err(|e| fail(STATE, e.to_string()))? {
        opts = enrollment::http_options(&device, &material, opts).map_err(|e| fail(STATE, e.to_string()))?;
    }
    let transport = Transport::new(opts).map_err(|e| fail(USAGE, e.to_string()))?;
    let registry = mdmsim::csp::registry();
    // A reboot logs everyone off and a logon logs the enrolled user on, for this session and
    // the ones after it.
    device.apply_trigger(a.trigger);
    let mut sopts = SessionOptions::new(a.trigger);
    sopts.transcript = a.transcript.clone();
    sopts.gate = Box::new(ModeGate { interactive: a.interactive, strict: a.strict });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("starting the async runtime: {e}")))?;
    let report = rt.block_on(async {
        // The device's timers (app download and install steps, expiries) ran while mdmsim was
        // not: catch up first, so the server sees the states they reached by now.
        let mut rest = run_timers(&registry, &mut device, &transport, chrono::Utc::now()).await;
        let report = run_session(&registry, &mut device, &transport, sopts).await;
        rest.extend(carry_out(&registry, &mut device, &transport, report.effects.clone(), chrono::Utc::now()).await);
        rest.extend(run_timers(&registry, &mut device, &transport, chrono::Utc::now()).await);
        device.tree.commit();
        // A server-initiated unenrollment (DMClient Unenroll Exec) wipes the enrollment.
        let wiped = enrollment::handle_effects(&mut device, Some(&a.state), &rest, chrono::Utc::now());
        // A reboot the server asked for (RebootNow) or a Reboot schedule that came due.
        let reboot = rest.iter().find_map(|e| match e {
            Effect::Reboot { reason } => Some(reason.clone()),
            _ => None,
        });
        (report, wiped, reboot)
    });
    let (report, wiped, reboot) = report;
    if let Some(why) = reboot {
        // The device restarts once the session is over: everyone is logged off, so its next
        // session (the reboot's) runs in Machine mode.
        device.apply_trigger(Trigger::Reboot);
        out::warn(format_args!("mdmsim: device {} rebooted ({why}): its next session runs in Machine mode", device.id));
    }
    store.save_session(&device, &report.summary).map_err(super::store_error)?;
    match wiped {
        Ok(true) => {
            out::warn(format_args!("mdmsim: the server unenrolled device {}: its enrollment was wiped", device.id))
        }
        Ok(false) => {}
        Err(e) => return Err(fail(STATE, format!("wiping the enrollment files of {}: {e}", device.id))),
    }
    if a.json {
        out::line(serde_json::to_string(&report.summary)?);
    } else {
        out::text(report.summary.human());
        // Every status that is not 200, with the command and LocURI it answered: what a server
        // developer looks for first (the counts above say how many, these lines say which).
        for c in report.summary.commands.iter().filter(|c| c.status != 200) {
            let targets = if c.targets.is_empty() { "(no target)".to_string() } else { c.targets.join(", ") };
            out::line(format_args!(
                "  status {}:  {} {targets} (MsgID {} CmdID {}){}",
                c.status,
                c.cmd,
                c.msg_id,
                c.cmd_id,
                status_meaning(c.status)
            ));
        }
        // The DMClient address list moved the device off its ADDR: say where it talks now.
        if let Some(c) = device.server_cache.as_ref().filter(|c| c.url != device.server_url) {
            out::line(format_args!(
                "  server:    {} (from the DMClient address list; next session starts there)",
                c.url
            ));
        }
        // The app installs as they stand after the session and the downloads that followed it:
        // what the server's next Get of Download/<ProductID>/Status will see.
        for d in mdmsim::csp::enterprise_app::downloads(&device.tree) {
            out::line(format_args!("  app:       {d}"));
        }
        for m in mdmsim::csp::desktop_app::installs(&device.tree) {
            out::line(format_args!("  msi:       {m}"));
        }
        // Alerts raised after the session (an install that finished): the next sync's package 1.
        for a in &device.pending_alerts {
            out::line(format_args!("  alert:     {a} (queued for the next session)"));
        }
    }
    match report.error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(fail(exit::of_fault(e.fault()), format!("session {} failed: {e}", report.summary.session_id))),
    }
}

/// A few words on the status codes a server meets most (OMA DM RepPro status codes, as MS-MDM
/// lists them), for the `status NNN:` lines.
fn status_meaning(code: u16) -> &'static str {
    match code {
        202 => " - accepted for processing",
        212 => " - authentication accepted",
        213 => " - chunked item accepted",
        215 => " - not executed (the user did not allow it)",
        216 => " - Atomic roll back OK",
        400 => " - bad request",
        401 => " - invalid credentials",
        403 => " - forbidden",
        404 => " - not found",
        405 => " - command not allowed",
        406 => " - optional feature not supported",
        407 => " - missing credentials",
        415 => " - unsupported media type or format",
        418 => " - already exists",
        425 => " - permission denied",
        500 => " - command failed",
        507 => " - Atomic failed",
        516 => " - Atomic roll back failed",
        _ => "",
    }
}
