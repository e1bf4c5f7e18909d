//! `mdmsim scenario check FILE...` and `mdmsim scenario run FILE... --server URL`.
//!
//! `check` runs both stages of every file (parse, build) and prints `FILE:LINE:COLUMN: ...` for
//! each one that fails: exit 0 when all are fine, 2 otherwise. `run` checks the files and its
//! arguments the same way (the CA file, the output paths: exit 2 before anything runs), runs
//! each file against the server (`mdmsim::runner::scenario::execute`), judges the expectations
//! and prints a readable pass/fail (or `--json`), optionally JUnit XML. Exit 0 when every
//! expectation holds; 3/4/5 when a run could not finish; when sessions failed, the class of the
//! failures as `mdmsim run` gives it ([`super::exit::Failures`]: 4 protocol or HTTP error, 3
//! unreachable), unless `--allow-failures` or the file's `outcome` expectation names the error
//! it expects (then its sessions are meant to fail and the expectation judges them); else 1
//! when an expectation fails. Every run draws fresh DeviceIDs from a seed (printed on stderr;
//! `--seed N` repeats it); a file without expectations is a warning in `check` and `run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use mdmsim::enroll::{AuthToken, Secret};
use mdmsim::scenario::report::{self, FileOutcome};
use mdmsim::scenario::{self, Built, Check, EnrollAs, ExpectationResult, RunError, RunOptions, ScenarioError, junit};

use super::exit::{EXPECTATION, Failures, PROTOCOL, STATE, UNREACHABLE, USAGE, fail};
use super::{Credential, out};

#[derive(Subcommand)]
pub enum Scenario {
    /// Check scenario files without running them (exit 2 with FILE:LINE:COLUMN messages).
    Check(CheckArgs),
    /// Run scenario files against a server and judge their expectations (exit 1 on a failure).
    Run(Box<RunArgs>),
}

#[derive(Args)]
pub struct CheckArgs {
    /// Scenario files (TOML).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Scenario files (TOML).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// The MDM server's management URL.
    #[arg(long, value_name = "URL")]
    server: String,
    /// Where the embedded push notification service (WNS emulation) listens: the devices'
    /// ChannelURIs point there. Default: a free loopback port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    wns_listen: std::net::SocketAddr,
    /// Use a standalone `mdmsim wns` at URL instead of the embedded one.
    #[arg(long, value_name = "URL")]
    wns_url: Option<String>,
    /// Write JUnit XML (one testsuite per file, one testcase per expectation) to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write every message of every session under DIR.
    #[arg(long, value_name = "DIR")]
    transcript: Option<PathBuf>,
    /// Trust this CA certificate (PEM) besides the system roots.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Accept any server certificate (testing only): the server's TLS certificate is not
    /// checked (with --email the password or token goes to a server whose identity is not
    /// verified); a warning says so on stderr.
    #[arg(long)]
    insecure: bool,
    /// Enroll every device (MS-MDE2) as this user before the run, instead of creating it
    /// pre-provisioned; sessions then use the issued client certificates. The credential comes
    /// from --password, --password-file, --token, --token-file, or the environment variables
    /// MDMSIM_PASSWORD / MDMSIM_TOKEN.
    #[arg(long, value_name = "ADDR")]
    email: Option<String>,
    #[command(flatten)]
    secret: super::SecretArgs,
    /// The discovery URL; default: the --server base URL + /EnrollmentServer/Discovery.svc.
    #[arg(long, value_name = "URL", requires = "email")]
    discovery: Option<String>,
    /// Exit as the expectations say even when sessions failed (by default failed sessions make
    /// the run exit 3 when the server was unreachable, 4 when it broke the protocol or answered
    /// an HTTP error).
    #[arg(long)]
    allow_failures: bool,
    /// Draw the DeviceIDs from this seed (each keeps its group's id_prefix). By default every
    /// run draws a new seed, so a second run against the same server meets new devices; the
    /// seed is printed, and giving it again runs the same devices.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

pub fn run(c: Scenario) -> anyhow::Result<ExitCode> {
    match c {
        Scenario::Check(a) => check(a),
        Scenario::Run(a) => run_files(*a),
    }
}

/// Reads and checks the scenario file at `path` (template paths relative to its directory).
pub fn load(path: &Path) -> Result<Built, ScenarioError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: file.clone(),
        line: 1,
        column: 1,
        message: format!("cannot read the file: {e}"),
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let read = move |rel: &str| std::fs::read_to_string(dir.join(rel)).map_err(|e| e.to_string());
    scenario::check_text(&text, &file, &read)
}

/// Checks every file: the built scenarios, and the messages of those that do not check.
fn load_all(files: &[PathBuf]) -> (Vec<Built>, Vec<String>) {
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match load(f) {
            Ok(b) => built.push(b),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (built, errors)
}

fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let (built, errors) = load_all(&a.files);
    warn_empty(&built);
    for b in &built {
        let devices: usize = b.devices.iter().map(|g| g.ids.len()).sum();
        out::line(format_args!(
            "{}: ok ({:?}: {devices} device(s), {} event(s), {} expectation(s))",
            b.file,
            b.name,
            b.timeline.len(),
            b.expectations.len()
        ));
    }
    for e in &errors {
        out::warn(e);
    }
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(USAGE) })
}

/// A scenario without `[[expect]]` checks nothing and passes whatever the server does: said on
/// stderr (not an error: a file being written may not have its expectations yet).
fn warn_empty(built: &[Built]) {
    for b in built.iter().filter(|b| b.expectations.is_empty()) {
        out::warn(format_args!(
            "warning: {}: no [[expect]] entry: this scenario checks nothing about the server and always passes",
            b.file
        ));
    }
}

/// The MS-MDE2 discovery URL on the host of `--server`.
fn discovery_of(server: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(server).map_err(|e| fail(USAGE, format!("--server {server:?}: {e}")))?;
    let found = url.join("/EnrollmentServer/Discovery.svc").map_err(|e| fail(USAGE, e.to_string()))?;
    Ok(found.to_string())
}

/// True when the file expects failing sessions: an `outcome` expectation names the error.
fn expects_failures(b: &Built) -> bool {
    b.expectations.iter().any(|e| matches!(&e.check, Check::Outcome { error: Some(_) }))
}

/// An output file argument that cannot be written (a directory, a missing folder) is a usage
/// error before anything runs, not a failure after the run.
fn check_output_file(path: &Path, option: &str) -> anyhow::Result<()> {
    if path.is_dir() {
        return Err(fail(USAGE, format!("{option} {}: is a directory, not a file", path.display())));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(fail(
            USAGE,
            format!("{option} {}: the folder {} does not exist", path.display(), parent.display()),
        ));
    }
    Ok(())
}

fn exit_of(e: &RunError) -> u8 {
    match e {
        RunError::Unreachable(_) => UNREACHABLE,
        RunError::Protocol(_) => PROTOCOL,
        RunError::State(_) => STATE,
    }
}

fn run_files(a: RunArgs) -> anyhow::Result<ExitCode> {
    let (built, errors) = load_all(&a.files);
    if !errors.is_empty() {
        for e in &errors {
            out::warn(e);
        }
        return Err(fail(USAGE, format!("{} scenario file(s) do not check; nothing was run", errors.len())));
    }
    warn_empty(&built);
    // Fresh devices for every run (see --seed), the same ones for the same seed.
    let seed = a.seed.unwrap_or_else(rand::random::<u64>);
    let built: Vec<Built> = built.iter().map(|b| b.with_run_seed(seed)).collect();
    out::warn(format_args!("DeviceIDs drawn from seed {seed} (--seed {seed} runs the same devices again)"));
    let enroll = match &a.email {
        None if a.secret.given() => {
            return Err(fail(USAGE, "--password, --password-file, --token and --token-file need --email"));
        }
        None => None,
        Some(email) => {
            let auth = match a.secret.credential()? {
                Some(Credential::Password(p)) => {
                    AuthToken::OnPremise { username: email.clone(), password: Secret::new(p) }
                }
                Some(Credential::Token(t)) => AuthToken::from_user_token(&t),
                None => {
                    return Err(fail(
                        USAGE,
                        "--email needs a password (--password, --password-file or MDMSIM_PASSWORD) or a token \
                         (--token, --token-file or MDMSIM_TOKEN)",
                    ));
                }
            };
            let discovery_url = match &a.discovery {
                Some(d) => d.clone(),
                None => discovery_of(&a.server)?,
            };
            Some(EnrollAs { discovery_url, email: email.clone(), auth })
        }
    };
    // Arguments are checked before anything runs, with the exit codes every command gives
    // them: a CA file that cannot be read and an output path that cannot be used are usage
    // errors (2).
    if let Some(path) = &a.ca_cert {
        std::fs::read(path).map_err(|e| fail(USAGE, format!("--ca-cert {}: {e}", path.display())))?;
    }
    super::transcript_dir(a.transcript.as_deref())?;
    if let Some(path) = &a.junit {
        check_output_file(path, "--junit")?;
    }
    if a.insecure {
        super::warn_insecure(if enroll.is_some() { super::Insecure::Enrollment } else { super::Insecure::Sessions });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("starting the async runtime: {e}")))?;
    let push = super::PushService::open(&rt, a.wns_listen, a.wns_url.as_deref())?;
    let opts = RunOptions {
        server: a.server,
        ca_cert: a.ca_cert,
        insecure: a.insecure,
        transcript: a.transcript,
        enroll,
        wns: Some(push.endpoint()),
    };
    let mut outcomes: Vec<FileOutcome<'_>> = Vec::new();
    let mut failures: Vec<(&str, Failures)> = Vec::new();
    for b in &built {
        let observed = rt.block_on(mdmsim::runner::scenario::execute(b, &opts));
        if let Ok(obs) = &observed
            && !expects_failures(b)
            && let Some(f) = Failures::of(obs.devices.iter().flat_map(|d| &d.sessions))
        {
            failures.push((&b.file, f));
        }
        outcomes.push((b, observed.map(|obs| scenario::evaluate(b, &obs))));
    }

    if a.json {
        let mut j = report::json(&outcomes);
        j["seed"] = serde_json::json!(seed);
        out::line(serde_json::to_string_pretty(&j)?);
    } else {
        out::text(report::human(&outcomes));
    }

    if let Some(path) = &a.junit {
        let errors: Vec<Option<String>> =
            outcomes.iter().map(|(_, r)| r.as_ref().err().map(ToString::to_string)).collect();
        let suites: Vec<junit::SuiteReport<'_>> = outcomes
            .iter()
            .zip(&errors)
            .map(|((b, r), error)| junit::SuiteReport {
                name: &b.name,
                file: &b.file,
                results: r.as_ref().map_or(&[][..], Vec::as_slice),
                error: error.as_deref(),
            })
            .collect();
        std::fs::write(path, junit::write(&suites))
            .map_err(|e| fail(STATE, format!("cannot write the JUnit file {}: {e}", path.display())))?;
    }

    if let Some(code) = outcomes.iter().find_map(|(_, r)| r.as_ref().err().map(exit_of)) {
        return Ok(ExitCode::from(code));
    }
    if !a.allow_failures && !failures.is_empty() {
        for (file, f) in &failures {
            out::warn(format_args!("{file}: {}", f.message()));
        }
        let code = if failures.iter().any(|(_, f)| f.code() == PROTOCOL) { PROTOCOL } else { UNREACHABLE };
        let files = failures.len();
        return Err(fail(
            code,
            format!(
                "sessions failed in {files} file{} (--allow-failures judges only the expectations)",
                if files == 1 { "" } else { "s" }
            ),
        ));
    }
    let any_failed = outcomes.iter().any(|(_, r)| r.as_ref().is_ok_and(|x| !x.iter().all(ExpectationResult::passed)));
    Ok(if any_failed { ExitCode::from(EXPECTATION) } else { ExitCode::SUCCESS })
}
