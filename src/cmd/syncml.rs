//! `mdmsim syncml fmt|check`: the codec on the command line.

use std::io::Read as _;
use std::process::ExitCode;

use clap::Subcommand;

use mdmsim::syncml::{self, DecodeError};

use super::exit::{USAGE, fail};

#[derive(Subcommand)]
pub enum Syncml {
    /// Pretty-print a SyncML message (one element per line, embedded XML indented).
    Fmt {
        /// The file to read, or `-` for standard input.
        file: String,
    },
    /// Validate SyncML messages; prints one line per file.
    Check {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

pub fn run(cmd: Syncml) -> anyhow::Result<ExitCode> {
    match cmd {
        Syncml::Fmt { file } => {
            let text = read(&file)?;
            let msg = syncml::decode(&text).map_err(|e| fail(USAGE, located(&file, &text, &e)))?;
            super::out::text(syncml::pretty(&msg));
            Ok(ExitCode::SUCCESS)
        }
        Syncml::Check { files } => {
            let mut bad = 0;
            for file in &files {
                let text = read(file)?;
                match syncml::decode(&text) {
                    Ok(msg) => super::out::line(format_args!("{file}: ok ({} commands)", msg.body.commands.len())),
                    Err(e) => {
                        super::out::warn(located(file, &text, &e));
                        bad += 1;
                    }
                }
            }
            if bad > 0 {
                Err(fail(USAGE, format!("{bad} of {} files are not valid SyncML", files.len())))
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// `FILE:LINE:COLUMN: message`, the convention compilers use.
pub fn located(file: &str, text: &str, e: &DecodeError) -> String {
    let (line, col) = syncml::line_col(text, e.offset());
    format!("{file}:{line}:{col}: {e}")
}

fn read(file: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut text).map_err(|e| fail(USAGE, format!("reading standard input: {e}")))?;
    } else {
        text = std::fs::read_to_string(file).map_err(|e| fail(USAGE, format!("{file}: {e}")))?;
    }
    Ok(text)
}
