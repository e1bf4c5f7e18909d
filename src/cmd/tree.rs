//! `mdmsim tree`: prints a stored device's DM tree (or a subtree) with formats and values,
//! walked with Gets through the tree engine, so it shows what a server's Get would see.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::Args;
use serde::Serialize;

use mdmsim::session::{REDACTED, is_secret_uri};
use mdmsim::syncml::{Command, Item, ItemCmd, StatusCode};
use mdmsim::tree::{Env, Registry, Tree, TreeState};

use super::exit::{USAGE, fail};
use super::out;

/// Bounds of the walk (a tree is finite, but a CSP bug should not hang the command).
const MAX_DEPTH: usize = 32;
const MAX_NODES: usize = 100_000;

#[derive(Args)]
pub struct TreeArgs {
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// The device (default: the first one created).
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Print only this subtree (e.g. ./DevDetail or ./Vendor/MSFT/DMClient).
    #[arg(value_name = "LOCURI")]
    locuri: Option<String>,
    /// Print a JSON array of {uri, format, value}.
    #[arg(long)]
    json: bool,
}

/// One node as printed.
#[derive(Serialize)]
struct Node {
    uri: String,
    format: String,
    /// The value of a leaf; the child names of an interior node are not repeated here.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

pub fn run(a: TreeArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&a.state)?;
    let mut device = store.load(a.device.as_deref()).map_err(super::store_error)?;
    // Read only: the store is not needed while the tree is walked (and nothing is written back).
    drop(store);
    let registry = mdmsim::csp::registry();
    let env = device.env(Utc::now());
    let mut nodes = Vec::new();
    match &a.locuri {
        Some(uri) => {
            let uri = uri.trim().trim_end_matches('/');
            match get(&registry, &mut device.tree, &env, uri) {
                Ok(item) => walk(&registry, &mut device.tree, &env, uri, item, 0, &mut nodes),
                Err(code) => return Err(fail(USAGE, format!("{uri}: {code}"))),
            }
        }
        None => {
            for root in [".", "./User"] {
                if let Ok(item) = get(&registry, &mut device.tree, &env, root) {
                    walk(&registry, &mut device.tree, &env, root, item, 0, &mut nodes);
                }
            }
        }
    }
    if a.json {
        out::line(serde_json::to_string_pretty(&nodes)?);
    } else {
        for n in &nodes {
            if out::closed() {
                break;
            }
            match &n.value {
                Some(v) => out::line(format_args!("{}  ({})  {}", n.uri, n.format, v)),
                None => out::line(format_args!("{}  ({})", n.uri, n.format)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One Get through the engine: the Results item, or the status code.
fn get(registry: &Registry, state: &mut TreeState, env: &Env, uri: &str) -> Result<Item, StatusCode> {
    let mut tree = Tree::new(registry, state, env);
    let out = tree.execute(&Command::Get(ItemCmd {
        cmd_id: "1".into(),
        items: vec![Item::target(uri)],
        ..ItemCmd::default()
    }));
    let o = out.into_iter().next().ok_or(StatusCode::CommandFailed)?;
    if o.code != StatusCode::Ok {
        return Err(o.code);
    }
    o.results.into_iter().next().ok_or(StatusCode::NotFound)
}

fn walk(
    registry: &Registry,
    state: &mut TreeState,
    env: &Env,
    uri: &str,
    item: Item,
    depth: usize,
    out: &mut Vec<Node>,
) {
    if out.len() >= MAX_NODES {
        return;
    }
    let format = item.meta.as_ref().and_then(|m| m.format.clone()).unwrap_or_else(|| "chr".into());
    let data = item.data.unwrap_or_default();
    if format != "node" {
        let value = if is_secret_uri(uri) { REDACTED.to_string() } else { data };
        out.push(Node { uri: uri.to_string(), format, value: Some(value) });
        return;
    }
    if uri != "." {
        out.push(Node { uri: uri.to_string(), format, value: None });
    }
    if depth >= MAX_DEPTH {
        return;
    }
    for child in data.split('/').filter(|c| !c.is_empty()) {
        let child_uri = if uri == "." { format!("./{child}") } else { format!("{uri}/{child}") };
        // Nodes without a value (404) or not readable (405) are left out, as a server sees them.
        if let Ok(item) = get(registry, state, env, &child_uri) {
            walk(registry, state, env, &child_uri, item, depth + 1, out);
        }
    }
}
