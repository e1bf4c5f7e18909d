//! `mdmsim report`: the JSON reports of fleet runs. `merge` adds up the reports of a run's
//! shards into the report of the whole run (counts and latency histograms exactly), `html`
//! writes one self-contained HTML page with charts, `summary` prints the key figures.
//!
//! Exit 0 when done; 2 when a file cannot be read, is not a fleet report (named with its line
//! and column), or the reports are not of the same run (the field that differs is named), or
//! the output path cannot be a file; 5 when the output cannot be written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use mdmsim::fleet::report::{MergeError, Report};

use super::exit::{STATE, USAGE, fail};
use super::out;

#[derive(Subcommand)]
pub enum ReportCmd {
    /// Merge the reports of a run's shards into the report of the whole run (counts and
    /// latency histograms add exactly).
    Merge {
        /// The reports (JSON) to merge: shards of one run, each once.
        #[arg(value_name = "REPORT", required = true)]
        reports: Vec<PathBuf>,
        /// Where to write the merged report.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Write a report as one self-contained HTML page (charts and tables; nothing is fetched
    /// when it is viewed). Several reports of one run's shards are merged first.
    Html {
        #[arg(value_name = "REPORT", required = true)]
        reports: Vec<PathBuf>,
        /// Where to write the page.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Print the summary of a report (or of several shards' reports merged).
    Summary {
        #[arg(value_name = "REPORT", required = true)]
        reports: Vec<PathBuf>,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(c: ReportCmd) -> anyhow::Result<ExitCode> {
    match c {
        ReportCmd::Merge { reports, output } => {
            check_output(&output)?;
            let merged = read_all(&reports)?;
            write(&output, &merged.to_json())?;
            out::line(format_args!(
                "wrote {}: {} report(s), {} sessions of {} devices",
                output.display(),
                reports.len(),
                merged.totals.sessions,
                merged.devices()
            ));
        }
        ReportCmd::Html { reports, output } => {
            check_output(&output)?;
            let merged = read_all(&reports)?;
            write(&output, &merged.html())?;
            out::line(format_args!(
                "wrote {}: {} sessions of {} devices",
                output.display(),
                merged.totals.sessions,
                merged.devices()
            ));
        }
        ReportCmd::Summary { reports, json } => {
            let s = read_all(&reports)?.summary();
            if json {
                out::line(serde_json::to_string_pretty(&s).expect("a summary always serializes"));
            } else {
                out::line(s);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads one report, naming the file (and line:column) in every error.
fn read(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(USAGE, format!("{}: cannot read it: {e}", path.display())))?;
    Report::from_json(&text).map_err(|e| match e {
        mdmsim::fleet::report::ReadError::Syntax { .. } => {
            fail(USAGE, format!("{}:{e} (not an mdmsim fleet report)", path.display()))
        }
        e => fail(USAGE, format!("{}: {e}", path.display())),
    })
}

/// Reads every report and merges them in order.
fn read_all(paths: &[PathBuf]) -> anyhow::Result<Report> {
    let first = &paths[0];
    let mut merged = read(first)?;
    // Which file brought each shard, to name both when one comes twice.
    let mut from: Vec<(u32, &Path)> = merged.shards.iter().map(|s| (s.index, first.as_path())).collect();
    for path in &paths[1..] {
        let next = read(path)?;
        merged.merge(&next).map_err(|e| {
            let message = match &e {
                MergeError::Different { field, ours, theirs } => format!(
                    "{a} and {b} are not reports of the same run: {field} is {ours} in {a} and {theirs} in {b}",
                    a = first.display(),
                    b = path.display(),
                ),
                MergeError::DuplicateShard { index, .. } => {
                    let earlier = from.iter().find(|(i, _)| i == index).map_or(first.as_path(), |(_, p)| p);
                    format!("{} and {}: {e}; each shard is merged once", earlier.display(), path.display())
                }
                MergeError::Histogram { .. } => format!("{}: {e}", path.display()),
            };
            fail(USAGE, message)
        })?;
        from.extend(next.shards.iter().map(|s| (s.index, path.as_path())));
    }
    Ok(merged)
}

/// Refuses an output path that cannot be a file, before any work.
fn check_output(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Err(fail(USAGE, format!("--output {}: is a directory, not a file", path.display())));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(fail(
            USAGE,
            format!("--output {}: the folder {} does not exist", path.display(), parent.display()),
        ));
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| fail(STATE, format!("--output {}: cannot write it: {e}", path.display())))
}
