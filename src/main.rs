//! The `mdmsim` binary: parses the command line and hands over to one command module.
//!
//! Exit codes (also in `--help` and the README):
//! 0 success; 1 a scenario expectation failed, or `syncml replay` found differences; 2 usage or input error (bad arguments, a file
//! that does not parse); 3 the server could not be reached (connection, TLS, timeout);
//! 4 the server broke the protocol (HTTP error status, malformed or out-of-order SyncML);
//! 5 local state error (the state directory cannot be used, unknown device).
//!
//! Output never panics: commands print through `cmd::out`, which stops writing once the
//! reader of standard output has gone (`mdmsim tree | head -1` exits normally). Commands that
//! keep device state run with umask 077, so that everything they create (the store, enrollment
//! material, transcripts) is private to the user.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  a scenario expectation failed; a conformance check failed; `syncml replay` found differences
  2  usage or input error (bad arguments, a file that does not parse, an output path that is a file)
  3  the server could not be reached (connection refused, TLS, timeout)
  4  the server broke the protocol (an HTTP error such as 500, malformed or out-of-order SyncML)
  5  local state error (state directory missing, a file, in use by another process; unknown device)
`run` and `scenario run` exit 3 or 4 when sessions failed, unless --allow-failures.

Environment:
  MDMSIM_PASSWORD, MDMSIM_TOKEN  the enrolling user's credential for `enroll` and
                                 `scenario run --email` when no option gives one
  RUST_LOG                       log filter (overrides -v)";

/// Emulates the device side of Windows MDM (the OMA-DM client) against your MDM server.
#[derive(Parser)]
#[command(name = "mdmsim", version, after_help = EXIT_CODES)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Use the CSP definition files (DDF) of this folder instead of the built-in node table
    /// (e.g. Microsoft's download for a newer Windows release).
    #[arg(long, value_name = "DIR", global = true)]
    ddf: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the reference server, enroll a fleet, live a simulated day, print a report.
    Demo(cmd::demo::DemoArgs),
    /// Microsoft's CSP definition files (DDF): compile a folder into the node table, show nodes.
    Ddf(cmd::ddf::Ddf),
    /// Read, pretty-print and validate SyncML messages.
    #[command(subcommand)]
    Syncml(cmd::syncml::Syncml),
    /// Create and manage emulated devices.
    #[command(subcommand)]
    Device(cmd::device::Device),
    /// Run one management session of a device now.
    Sync(cmd::sync::SyncArgs),
    /// Let devices live on their schedule (reboots, logons, nightly, polls, pushes, events).
    Run(cmd::run::RunArgs),
    /// Print a device's DM tree (or a subtree) with formats and values.
    Tree(cmd::tree::TreeArgs),
    /// Run the embedded reference MDM server (enrollment + management) until Ctrl-C.
    Server(cmd::server::ServerArgs),
    /// Run the push notification service emulation (WNS) on its own until Ctrl-C, for a server
    /// under test to push to the devices of `mdmsim run --wns-url`.
    Wns(cmd::wns::WnsArgs),
    /// Many devices in one process against a server, each on its own days: load, latency,
    /// reports (one shard of the fleet per process with --shard).
    Fleet(Box<cmd::fleet::FleetArgs>),
    /// Benchmarks of the device engine (sessions per CPU second, memory, latency).
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
    /// Enroll a new device with an MDM server (MS-MDE2), then run its first session.
    Enroll(cmd::enroll::EnrollArgs),
    /// Unenroll a device (Alert 1226 to the server, best effort) and wipe its enrollment.
    Unenroll(cmd::enroll::UnenrollArgs),
    /// Scripted runs with expectations: check scenario files, run them against a server.
    #[command(subcommand)]
    Scenario(cmd::scenario::Scenario),
    /// Grade an MDM server against what Windows devices do: every check, its verdict and evidence.
    Conformance(cmd::conformance::ConformanceArgs),
    /// Show a transcript folder: each server command with the device's status (text, or --html).
    Transcript(cmd::transcript::TranscriptArgs),
    /// Fleet run reports: merge the shards of a run, write the HTML page, print the summary.
    #[command(subcommand)]
    Report(cmd::report::ReportCmd),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(cmd::exit::USAGE) } else { ExitCode::SUCCESS };
        }
    };
    cmd::init_logging(cli.verbose);
    // The state holds device secrets (MD5 credentials, private keys): what these commands
    // create is for the user alone. The reference server's files (its CA certificate is meant
    // to be handed to devices) keep the usual mask.
    if matches!(
        cli.command,
        Command::Device(_)
            | Command::Sync(_)
            | Command::Run(_)
            | Command::Tree(_)
            | Command::Enroll(_)
            | Command::Unenroll(_)
    ) {
        cmd::private_files();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            cmd::out::warn(format_args!("mdmsim: {e:#}"));
            ExitCode::from(cmd::exit::code_of(&e))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &cli.ddf {
        let facts = cmd::ddf::read_dir(dir)?;
        mdmsim::csp::ddf_csp::use_facts(facts);
    }
    match cli.command {
        Command::Demo(c) => cmd::demo::run(c),
        Command::Ddf(c) => cmd::ddf::run(c),
        Command::Syncml(c) => cmd::syncml::run(c),
        Command::Device(c) => cmd::device::run(c),
        Command::Sync(c) => cmd::sync::run(c),
        Command::Run(c) => cmd::run::run(c),
        Command::Tree(c) => cmd::tree::run(c),
        Command::Server(c) => cmd::server::run(c),
        Command::Wns(c) => cmd::wns::run(c),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Fleet(c) => cmd::fleet::run(*c),
        Command::Enroll(c) => cmd::enroll::enroll(c),
        Command::Unenroll(c) => cmd::enroll::unenroll(c),
        Command::Scenario(c) => cmd::scenario::run(c),
        Command::Transcript(c) => cmd::transcript::run(c),
        Command::Conformance(c) => cmd::conformance::run(c),
        Command::Report(c) => cmd::report::run(c),
    }
}
