//! `mdmsim enroll`: enrolls a new device with an MDM server (MS-MDE2 discovery, policy and
//! certificate request), stores it with its client certificate and key (0600) and runs the
//! post-enrollment session at once, as Windows does; prints the device id and the management
//! URL. `mdmsim unenroll`: the user-initiated unenrollment (a session whose package 1 carries
//! Alert 1226 `com.microsoft:mdm.unenrollment.userrequest`, best effort), then wipes the
//! enrollment.
//!
//! Thin over `mdmsim::runner::enrollment`. The credential comes from `--password`,
//! `--password-file`, `--token`, `--token-file` or the environment (`MDMSIM_PASSWORD`,
//! `MDMSIM_TOKEN`; see [`super::SecretArgs`]), so that it need not show in the process list.
//! Exit codes: 2 usage, 3 server unreachable, 4 the server refused (SOAP fault) or broke the
//! protocol, 5 local state. A failed enrollment leaves no device in the state directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, ValueEnum};

use mdmsim::device::{Device, DeviceId, UnenrolledBy};
use mdmsim::enroll::{AuthToken, EnrollmentType, Secret, unenroll_alert};
use mdmsim::runner::enroll::http_client;
use mdmsim::runner::enrollment::{
    self, EnrollOptions, EnrollmentMaterial, check_id_free, enroll_device, store_enrolled,
};
use mdmsim::runner::http::{HttpOptions, Transport};
use mdmsim::runner::{SessionOptions, SessionReport, carry_out, run_session};
use mdmsim::session::Trigger;
use mdmsim::tree::Profile;

use super::exit::{STATE, USAGE, fail};
use super::{Credential, out};

/// The error when no option or environment variable gives a credential.
pub(super) const MISSING_CREDENTIAL: &str = "give a password (--password, --password-file or MDMSIM_PASSWORD; OnPremise) or a \
     token (--token, --token-file or MDMSIM_TOKEN; Federated/JWT)";

/// `--enrollment-type`.
#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// A user enrollment (certificate in My/User).
    Full,
    /// A device enrollment (certificate in My/System).
    Device,
}

#[derive(Args)]
pub struct EnrollArgs {
    /// The state directory (created if missing: mode 0700, its files 0600).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// The discovery URL (e.g. https://HOST/EnrollmentServer/Discovery.svc).
    #[arg(long, value_name = "URL")]
    discovery: String,
    /// The enrolling user's email address (UPN).
    #[arg(long, value_name = "ADDR")]
    email: String,
    #[command(flatten)]
    secret: super::SecretArgs,
    /// Full (user) or Device enrollment.
    #[arg(long, value_enum, default_value = "full")]
    enrollment_type: KindArg,
    /// The client to emulate (default: the template's, else win10).
    #[arg(long, value_parser = super::named::<Profile>())]
    profile: Option<Profile>,
    /// A TOML template of DevInfo/DevDetail values (see fixtures/templates/).
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
    /// Trust this CA certificate (PEM) besides the system roots, for enrollment and sessions.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Accept any server certificate (testing only): the server's TLS certificate is not
    /// checked, so the password or token goes to a server whose identity is not verified; a
    /// warning says so on stderr.
    #[arg(long)]
    insecure: bool,
    /// The DeviceID (32 hex digits); random when omitted.
    #[arg(long, value_name = "DEVID")]
    id: Option<String>,
    /// Seed for the random DeviceID (the same seed gives the same id).
    #[arg(long, conflicts_with = "id")]
    seed: Option<u64>,
    /// Write the enrollment exchange (MS-MDE2 SOAP, under DIR/enrollment/) and the
    /// post-enrollment session's messages to DIR, secrets masked; `mdmsim transcript DIR` shows them.
    #[arg(long, value_name = "DIR")]
    transcript: Option<PathBuf>,
}

#[derive(Args)]
pub struct UnenrollArgs {
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// The device (default: the first one created).
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Trust this CA certificate (PEM) besides the system and provisioned roots.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Accept any server certificate (testing only): the server's TLS certificate is not
    /// checked; a warning says so on stderr.
    #[arg(long)]
    insecure: bool,
    /// Write the unenrollment session's messages to DIR (secrets masked).
    #[arg(long, value_name = "DIR")]
    transcript: Option<PathBuf>,
}

fn read_ca(path: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|p| std::fs::read(p).map_err(|e| fail(USAGE, format!("--ca-cert {}: {e}", p.display())))).transpose()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("starting the async runtime: {e}")))
}

/// The transport of an enrolled device's sessions: its client certificate, its provisioned
/// roots, and `--ca-cert` / `--insecure`.
fn transport(
    device: &Device,
    material: &EnrollmentMaterial,
    ca: Option<Vec<u8>>,
    insecure: bool,
) -> anyhow::Result<Transport> {
    let base = HttpOptions { ca_cert_pem: ca, insecure, ..HttpOptions::default() };
    let opts = enrollment::http_options(device, material, base).map_err(|e| fail(STATE, e.to_string()))?;
    Transport::new(opts).map_err(|e| fail(USAGE, e.to_string()))
}

fn session_error(report: &SessionReport, what: &str) -> Option<anyhow::Error> {
    report.error.as_ref().map(|e| {
        fail(super::exit::of_fault(e.fault()), format!("{what} (session {}) failed: {e}", report.summary.session_id))
    })
}

pub fn enroll(a: EnrollArgs) -> anyhow::Result<ExitCode> {
    let (profile, template) = super::load_template(a.template.as_deref(), a.profile)?;
    let id = match (&a.id, a.seed) {
        (Some(id), _) => DeviceId::parse(id).map_err(|e| fail(USAGE, e.to_string()))?,
        (None, Some(seed)) => DeviceId::from_seed(seed),
        // The binary may use OS randomness; the library only takes seeds.
        (None, None) => DeviceId::from_seed(rand::random()),
    };
    let auth = match a.secret.credential()? {
        Some(Credential::Password(p)) => AuthToken::OnPremise { username: a.email.clone(), password: Secret::new(p) },
        Some(Credential::Token(t)) => AuthToken::from_user_token(&t),
        None => return Err(fail(USAGE, MISSING_CREDENTIAL)),
    };
    super::transcript_dir(a.transcript.as_deref())?;
    let ca = read_ca(a.ca_cert.as_deref())?;
    if a.insecure {
        super::warn_insecure(super::Insecure::Enrollment);
    }
    let client = http_client(ca.as_deref(), a.insecure).map_err(|e| fail(e.exit_code(), e.to_string()))?;
    let store = super::init_store(&a.state)?;
    check_id_free(&store, &id).map_err(|e| fail(STATE, e.to_string()))?;
    let mut opts = EnrollOptions::new(&a.email, auth, id, profile);
    opts.template = template;
    opts.enrollment_type = match a.enrollment_type {
        KindArg::Full => EnrollmentType::Full,
        KindArg::Device => EnrollmentType::Device,
    };

    let rt = runtime()?;
    let (enrolled, exchanges) =
        rt.block_on(mdmsim::runner::enroll::recording(enroll_device(&client, &a.discovery, &opts, Utc::now())));
    // The MS-MDE2 exchange goes in the transcript whether the enrollment worked or not: a failed
    // one is when it is read most.
    if let Some(dir) = &a.transcript {
        match mdmsim::runner::enroll::write_exchanges(dir, &exchanges) {
            Ok(folder) => out::warn(format_args!("enrollment exchange (secrets masked): {}", folder.display())),
            Err(e) => out::warn(format_args!("cannot write the enrollment exchange under {}: {e}", dir.display())),
        }
    }
    let (mut device, material) = enrolled.map_err(|e| fail(e.exit_code(), e.to_string()))?;
    // The CA trusted for the enrollment stays trusted, as an installed CA on a real machine.
    let material = material.trusting(ca.as_deref());
    store_enrolled(&store, &a.state, &mut device, &material).map_err(|e| fail(STATE, e.to_string()))?;
    out::line(&device.id);
    out::line(&device.server_url);
    for f in device.enrollment.iter().flat_map(|e| &e.findings) {
        out::warn(format_args!("enrollment finding: {f}"));
    }

    // The post-enrollment session, at once: Windows starts its first management session right
    // after enrolling.
    let transport = transport(&device, &material, ca, a.insecure)?;
    let registry = mdmsim::csp::registry();
    let mut sopts = SessionOptions::new(Trigger::Enrollment);
    sopts.transcript = a.transcript.clone();
    let report = rt.block_on(async {
        let report = run_session(&registry, &mut device, &transport, sopts).await;
        let rest = carry_out(&registry, &mut device, &transport, report.effects.clone(), Utc::now()).await;
        let wiped = enrollment::handle_effects(&mut device, Some(&a.state), &rest, Utc::now());
        (report, wiped)
    });
    let (report, wiped) = report;
    store.save_session(&device, &report.summary).map_err(|e| fail(STATE, e.to_string()))?;
    out::warn(format_args!("post-enrollment session: {}", report.summary.human().trim_end()));
    match wiped {
        Ok(true) => out::warn("the server unenrolled the device in its first session: enrollment wiped"),
        Ok(false) => {}
        Err(e) => return Err(fail(STATE, format!("wiping the enrollment of {}: {e}", device.id))),
    }
    match session_error(&report, "the post-enrollment session") {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.context(format!("device {} is enrolled", device.id))),
    }
}

pub fn unenroll(a: UnenrollArgs) -> anyhow::Result<ExitCode> {
    super::transcript_dir(a.transcript.as_deref())?;
    let ca = read_ca(a.ca_cert.as_deref())?;
    let store = super::open_store(&a.state)?;
    let mut device = store.load(a.device.as_deref()).map_err(super::store_error)?;
    enrollment::check_usable(&device).map_err(|e| fail(STATE, e.to_string()))?;
    let material = enrollment::stored_material(&device, &a.state).map_err(|e| fail(STATE, e.to_string()))?;
    if a.insecure {
        super::warn_insecure(super::Insecure::Sessions);
    }
    let transport = match &material {
        Some(m) => transport(&device, m, ca, a.insecure)?,
        None => Transport::new(HttpOptions { ca_cert_pem: ca, insecure: a.insecure, ..HttpOptions::default() })
            .map_err(|e| fail(USAGE, e.to_string()))?,
    };
    let registry = mdmsim::csp::registry();
    let mut sopts = SessionOptions::new(Trigger::Manual);
    sopts.transcript = a.transcript.clone();
    // CmdIDs of extra alerts are renumbered by the session.
    sopts.extra_alerts = vec![unenroll_alert("0")];
    let report = runtime()?.block_on(run_session(&registry, &mut device, &transport, sopts));
    // Best effort: the device forgets its enrollment whether the server heard it or not.
    let wiped = enrollment::wipe_enrollment(&mut device, Some(&a.state), UnenrolledBy::User, Utc::now());
    store.save_session(&device, &report.summary).map_err(|e| fail(STATE, e.to_string()))?;
    wiped.map_err(|e| fail(STATE, format!("deleting the enrollment files of {}: {e}", device.id)))?;
    match &report.error {
        None => out::line(format_args!("{}: unenrolled (the server was told)", device.id)),
        Some(e) => {
            out::line(format_args!("{}: unenrolled (the server could not be told)", device.id));
            out::warn(format_args!("mdmsim: warning: the unenrollment session failed: {e}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
