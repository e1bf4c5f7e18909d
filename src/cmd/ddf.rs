//! `mdmsim ddf`: Microsoft's CSP definition files (DDF) as mdmsim's node table.
//!
//! `compile DIR` reads every `*.xml` DDF file of a folder (Microsoft's download of the CSP DDF
//! files) and writes the compact table that `src/ddf/nodes.tsv` ships; `show PATH` prints what
//! the built-in table (or `--ddf DIR`) knows about the nodes under a path.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use mdmsim::ddf::{self, NodeFact, table};

use super::exit::{USAGE, fail};

/// `mdmsim ddf ...`
#[derive(Args)]
pub struct Ddf {
    #[command(subcommand)]
    command: DdfCommand,
}

#[derive(Subcommand)]
enum DdfCommand {
    /// Read a folder of DDF files and write the node table (to stdout, or --out FILE).
    Compile {
        /// The folder of DDF files (`*.xml`).
        dir: PathBuf,
        /// Write the table here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the nodes whose path starts with PATH (the built-in table, or --ddf DIR).
    Show {
        /// A path prefix, e.g. ./Device/Vendor/MSFT/Reboot
        path: String,
        /// Read this folder of DDF files instead of the built-in table.
        #[arg(long, value_name = "DIR")]
        ddf: Option<PathBuf>,
    },
}

pub fn run(a: Ddf) -> anyhow::Result<ExitCode> {
    match a.command {
        DdfCommand::Compile { dir, out } => {
            let facts = read_dir(&dir)?;
            let text = table::encode(&facts);
            match out {
                Some(file) => {
                    std::fs::write(&file, text).map_err(|e| fail(USAGE, format!("writing {}: {e}", file.display())))?
                }
                None => super::out::text(&text),
            }
            eprintln!("{} nodes from {}", facts.len(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        DdfCommand::Show { path, ddf } => {
            let facts = match ddf {
                Some(dir) => read_dir(&dir)?,
                None => ddf::builtin(),
            };
            let rows: Vec<&NodeFact> = facts.iter().filter(|f| f.path.starts_with(&path)).collect();
            if rows.is_empty() {
                return Err(fail(USAGE, format!("no node under {path}")));
            }
            super::out::text(table::encode(&rows.into_iter().cloned().collect::<Vec<_>>()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Every `*.xml` file of `dir`, read and compiled; an unreadable or malformed file is exit 2
/// naming the file (and line).
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<NodeFact>> {
    let entries = std::fs::read_dir(dir).map_err(|e| fail(USAGE, format!("DDF folder {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| fail(USAGE, format!("DDF folder {}: {e}", dir.display())))?.path();
        if path.extension().and_then(|e| e.to_str()).is_none_or(|e| !e.eq_ignore_ascii_case("xml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| fail(USAGE, format!("{}: {e}", path.display())))?;
        files.push((path.display().to_string(), text));
    }
    if files.is_empty() {
        return Err(fail(USAGE, format!("DDF folder {} holds no .xml file", dir.display())));
    }
    ddf::compile(files).map_err(|e| fail(USAGE, e.to_string()))
}
