//! `mdmsim scenario check FILE...` and `mdmsim scenario run FILE... --server URL`.
//!
//! `check` runs both stages of every file (parse, build) and prints `FILE:LINE:COLUMN: ...` for
//! each one that fails: exit 0 when all are fine, 2 otherwise. `run` checks the files the same
//! way, runs each against the server (`mdmsim::runner::scenario::execute`), judges the
//! expectations and prints a readable pass/fail (or `--json`), optionally JUnit XML: exit 0
//! when every expectation holds, 1 when one fails, 3/4/5 when a run could not finish.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use mdmsim::enroll::{AuthToken, Secret};
use mdmsim::scenario::report::{self, FileOutcome};
use mdmsim::scenario::{self, Built, EnrollAs, ExpectationResult, RunError, RunOptions, ScenarioError, junit};

use super::exit::{EXPECTATION, PROTOCOL, STATE, UNREACHABLE, USAGE, fail};

#[derive(Subcommand)]
pub enum Scenario {
    /// Check scenario files without running them (exit 2 with FILE:LINE:COLUMN messages).
    Check(CheckArgs),
    /// Run scenario files against a server and judge their expectations (exit 1 on a failure).
    Run(RunArgs),
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
    /// Accept any server certificate (testing only).
    #[arg(long)]
    insecure: bool,
    /// Enroll every device (MS-MDE2) as this user before the run, instead of creating it
    /// pre-provisioned; sessions then use the issued client certificates.
    #[arg(long, value_name = "ADDR")]
    email: Option<String>,
    /// The enrolling user's password (OnPremise).
    #[arg(long, requires = "email", conflicts_with = "token")]
    password: Option<String>,
    /// A token instead of a password (Federated / JWT / Fleet's DeviceEnrollmentUserToken).
    #[arg(long, requires = "email")]
    token: Option<String>,
    /// The discovery URL; default: the --server base URL + /EnrollmentServer/Discovery.svc.
    #[arg(long, value_name = "URL", requires = "email")]
    discovery: Option<String>,
}

pub fn run(c: Scenario) -> anyhow::Result<ExitCode> {
    match c {
        Scenario::Check(a) => check(a),
        Scenario::Run(a) => run_files(a),
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
    for b in &built {
        let devices: usize = b.devices.iter().map(|g| g.ids.len()).sum();
        println!(
            "{}: ok ({:?}: {devices} device(s), {} event(s), {} expectation(s))",
            b.file,
            b.name,
            b.timeline.len(),
            b.expectations.len()
        );
    }
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(USAGE) })
}

/// The MS-MDE2 discovery URL on the host of `--server`.
fn discovery_of(server: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(server).map_err(|e| fail(USAGE, format!("--server {server:?}: {e}")))?;
    let found = url.join("/EnrollmentServer/Discovery.svc").map_err(|e| fail(USAGE, e.to_string()))?;
    Ok(found.to_string())
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
            eprintln!("{e}");
        }
        return Err(fail(USAGE, format!("{} scenario file(s) do not check; nothing was run", errors.len())));
    }
    let enroll = match &a.email {
        None => None,
        Some(email) => {
            let auth = match (&a.password, &a.token) {
                (Some(p), _) => AuthToken::OnPremise { username: email.clone(), password: Secret::new(p.clone()) },
                (None, Some(t)) => AuthToken::from_user_token(t),
                (None, None) => return Err(fail(USAGE, "--email needs --password or --token")),
            };
            let discovery_url = match &a.discovery {
                Some(d) => d.clone(),
                None => discovery_of(&a.server)?,
            };
            Some(EnrollAs { discovery_url, email: email.clone(), auth })
        }
    };
    let opts =
        RunOptions { server: a.server, ca_cert: a.ca_cert, insecure: a.insecure, transcript: a.transcript, enroll };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("starting the async runtime: {e}")))?;
    let mut outcomes: Vec<FileOutcome<'_>> = Vec::new();
    for b in &built {
        let r = rt.block_on(mdmsim::runner::scenario::execute(b, &opts)).map(|obs| scenario::evaluate(b, &obs));
        outcomes.push((b, r));
    }

    if a.json {
        println!("{}", serde_json::to_string_pretty(&report::json(&outcomes))?);
    } else {
        print!("{}", report::human(&outcomes));
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
    let any_failed = outcomes.iter().any(|(_, r)| r.as_ref().is_ok_and(|x| !x.iter().all(ExpectationResult::passed)));
    Ok(if any_failed { ExitCode::from(EXPECTATION) } else { ExitCode::SUCCESS })
}
