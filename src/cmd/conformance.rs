//! `mdmsim conformance`: grades an MDM server against what Windows devices do, check by check
//! (see `mdmsim::conformance` and docs/conformance.md).
//!
//! With `--discovery` a fresh device of each profile enrolls (MS-MDE2), in memory only, then
//! runs its sessions and probes; with `--server` a pre-provisioned device talks to the
//! management URL directly and the enrollment checks are not applicable. Prints the summary
//! table and every failure with its evidence (or the JSON report with `--json`), and writes
//! `--junit` / `--html` files. Exit 0 when no check failed, 1 when one did; 2 usage, 3 the
//! server could not be reached at all.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use clap::{Args, ValueEnum};

use mdmsim::conformance::{self, Group, Report, Target};
use mdmsim::device::{Device, DeviceId, Template};
use mdmsim::enroll::{AuthToken, Secret};
use mdmsim::runner::enroll::http_client;
use mdmsim::runner::enrollment::{self, EnrollOptions};
use mdmsim::runner::exchange::HttpExchange;
use mdmsim::runner::http::Transport;
use mdmsim::tree::Profile;

use super::exit::{EXPECTATION, STATE, UNREACHABLE, USAGE, fail};
use super::{Credential, out};

/// `--profile`.
#[derive(Clone, Copy, ValueEnum)]
pub enum ProfileArg {
    Win10,
    Win81,
    /// Every check once as Windows 10, once as Windows 8.1 (a device each).
    Both,
}

#[derive(Args)]
pub struct ConformanceArgs {
    /// The discovery URL: a device enrolls first (MS-MDE2) and the enrollment is graded too.
    #[arg(long, value_name = "URL", conflicts_with = "server", required_unless_present = "server")]
    discovery: Option<String>,
    /// The enrolling user's email address (with --discovery).
    #[arg(long, value_name = "ADDR", requires = "discovery")]
    email: Option<String>,
    #[command(flatten)]
    secret: super::SecretArgs,
    /// The management URL of a server that takes devices without enrollment (the enrollment
    /// checks are then not applicable).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The client to emulate.
    #[arg(long, value_enum, default_value = "win10")]
    profile: ProfileArg,
    /// Only the checks of this group (repeatable).
    #[arg(long, value_name = "GROUP", value_parser = super::named::<Group>())]
    only: Vec<Group>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a self-contained HTML report to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Seed of the DeviceIDs (the same seed gives the same devices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    http: super::HttpArgs,
}

fn check_out_path(p: Option<&PathBuf>, flag: &str) -> anyhow::Result<()> {
    match p {
        Some(p) if p.is_dir() => Err(fail(USAGE, format!("{flag} {}: is a directory", p.display()))),
        _ => Ok(()),
    }
}

pub fn run(a: ConformanceArgs) -> anyhow::Result<ExitCode> {
    check_out_path(a.junit.as_ref(), "--junit")?;
    check_out_path(a.html.as_ref(), "--html")?;
    let profiles = match a.profile {
        ProfileArg::Win10 => vec![Profile::Win10],
        ProfileArg::Win81 => vec![Profile::Win81],
        ProfileArg::Both => vec![Profile::Win10, Profile::Win81],
    };
    let http = a.http.options()?;
    let auth = match (&a.discovery, a.secret.credential()?) {
        (None, _) => None,
        (Some(_), Some(Credential::Password(p))) => {
            let email = a.email.clone().ok_or_else(|| fail(USAGE, "--discovery needs --email"))?;
            Some(AuthToken::OnPremise { username: email, password: Secret::new(p) })
        }
        (Some(_), Some(Credential::Token(t))) => Some(AuthToken::from_user_token(&t)),
        (Some(_), None) => {
            return Err(fail(USAGE, "--discovery needs a password (--password...) or a token (--token...)"));
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("starting the async runtime: {e}")))?;
    let target_url = a.discovery.clone().or(a.server.clone()).unwrap_or_default();
    let mut report = Report { target: target_url, checks: Vec::new() };
    for (i, profile) in profiles.into_iter().enumerate() {
        let id = DeviceId::from_seed(a.seed.wrapping_add(i as u64));
        let template = Template::builtin(profile);
        let now = Utc::now();
        let mut target = match (&a.discovery, &a.server) {
            (Some(disc), _) => {
                let email = a.email.clone().unwrap_or_default();
                let auth = auth.clone().ok_or_else(|| fail(USAGE, "no credential"))?;
                let client = http_client(http.ca_cert_pem.as_deref(), http.insecure)
                    .map_err(|e| fail(e.exit_code(), e.to_string()))?;
                let mut opts = EnrollOptions::new(&email, auth, id.clone(), profile);
                opts.template = template.clone();
                let (run, enrolled) = rt.block_on(conformance::enroll(&client, disc, &opts, now));
                if let Err(e @ mdmsim::runner::enroll::EnrollError::Unreachable { .. }) = &run.enrolled {
                    return Err(fail(UNREACHABLE, e.to_string()));
                }
                match enrolled {
                    Some((device, material)) => {
                        let material = material.trusting(http.ca_cert_pem.as_deref());
                        let opts = enrollment::http_options(&device, &material, http.clone())
                            .map_err(|e| fail(STATE, e.to_string()))?;
                        let transport = Transport::new(opts).map_err(|e| fail(USAGE, e.to_string()))?;
                        Target {
                            device,
                            exchange: Arc::new(HttpExchange::new(Arc::new(transport))),
                            enrollment: Some(run),
                        }
                    }
                    None => {
                        // Nothing to hold a session with: only the enrollment is graded.
                        let device = Device::new(id, profile, disc, "mdmsim", &template, now);
                        if a.only.is_empty() || a.only.contains(&Group::Enrollment) {
                            report.checks.extend(conformance::checks::enrollment(Some(&run), &device, profile));
                        }
                        continue;
                    }
                }
            }
            (None, Some(server)) => {
                let device = Device::new(id, profile, server, "mdmsim", &template, now);
                let transport = Transport::new(http.clone()).map_err(|e| fail(USAGE, e.to_string()))?;
                Target { device, exchange: Arc::new(HttpExchange::new(Arc::new(transport))), enrollment: None }
            }
            (None, None) => {
                return Err(fail(USAGE, "give --discovery URL (with --email and a credential) or --server URL"));
            }
        };
        let checks = rt.block_on(conformance::run_profile(&mut target, &a.only, now));
        report.checks.extend(checks);
    }
    if let Some(p) = &a.junit {
        std::fs::write(p, conformance::report::junit(&report))
            .map_err(|e| fail(USAGE, format!("--junit {}: {e}", p.display())))?;
    }
    if let Some(p) = &a.html {
        std::fs::write(p, conformance::report::html(&report))
            .map_err(|e| fail(USAGE, format!("--html {}: {e}", p.display())))?;
    }
    if a.json {
        out::line(conformance::report::json(&report));
    } else {
        out::text(conformance::report::text(&report));
    }
    Ok(if report.all_passed() { ExitCode::SUCCESS } else { ExitCode::from(EXPECTATION) })
}
