//! `mdmsim transcript DIR [--html FILE]`: a transcript folder (what `sync`, `run`, `scenario
//! run` and `enroll` wrote with `--transcript`) for people. Without `--html` the text form on
//! standard output; with it, one self-contained HTML page written to FILE.
//!
//! Exit 0 when it was shown or written; 2 when DIR is not a transcript folder (missing, a file,
//! no session and no enrollment exchange in it) or FILE cannot be a file (a folder, a missing
//! parent folder); 5 when FILE cannot be written.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use mdmsim::transcript::{self, render};

use super::exit::{STATE, USAGE, fail};
use super::out;

#[derive(Args)]
pub struct TranscriptArgs {
    /// The transcript folder (the DIR given to --transcript).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Write one self-contained HTML page (inline style, nothing fetched when viewed) to FILE
    /// instead of printing the text form.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub fn run(a: TranscriptArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &a.html {
        if path.is_dir() {
            return Err(fail(USAGE, format!("--html {}: is a directory, not a file", path.display())));
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return Err(fail(
                USAGE,
                format!("--html {}: the folder {} does not exist", path.display(), parent.display()),
            ));
        }
    }
    let t = transcript::read(&a.dir).map_err(|e| fail(USAGE, e.to_string()))?;
    match &a.html {
        None => out::text(render::text(&t)),
        Some(path) => {
            std::fs::write(path, render::html(&t))
                .map_err(|e| fail(STATE, format!("--html {}: cannot write it: {e}", path.display())))?;
            let commands: usize = t.sessions.iter().map(|s| s.commands.len()).sum();
            out::line(format_args!(
                "wrote {}: {} session(s), {commands} server command(s), {} enrollment exchange(s)",
                path.display(),
                t.sessions.len(),
                t.enrollments.len()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
