//! `mdmsim server`: runs the embedded reference MDM server until Ctrl-C and prints where to
//! point devices (base URL, discovery URL) and which CA file to trust. `--compat` makes it
//! answer like a real-world server (see docs/server-compat.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use mdmsim::server::{self, Config, Preset, ServerError, ServerOptions};

use super::exit::{STATE, USAGE, fail};

/// Arguments of `mdmsim server`.
#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Server configuration (TOML; see fixtures/server/default.toml). Default: the built-in one.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder for the CA and server certificate, reused across restarts.
    /// Default: $XDG_STATE_HOME/mdmsim/server (~/.local/state/mdmsim/server).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (loopback addresses only).
    #[arg(long)]
    http: bool,
    /// Base URL to announce to devices instead of the listen address (e.g. https://mdm.lan:8443).
    #[arg(long)]
    public_url: Option<String>,
    /// How management requests are trusted, overriding the config's [management] auth:
    /// cert-or-md5 (enrolled devices), md5, or none (pre-provisioned devices such as those of
    /// `mdmsim device new` and `mdmsim scenario run`).
    #[arg(long, value_enum)]
    auth: Option<mdmsim::server::AuthMode>,
    /// Answer like a real-world server, overriding the config's [compat] preset (its single
    /// switches still apply): standard (MS-MDE2/MS-MDM as written; the default), fleet (as
    /// fleetdm/fleet does: AAUTHDATA "nonce", no <Final/>, Status-only replies, UUID CmdIDs,
    /// no Status for Alerts, SOAP faults in HTTP 200), or minimal (numbered CmdIDs, a nil
    /// MS-XCEP policy response). The switches are listed in docs/server-compat.md.
    #[arg(long, value_name = "PRESET", value_parser = parse_preset)]
    compat: Option<Preset>,
}

fn parse_preset(text: &str) -> Result<Preset, String> {
    text.parse()
}

pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    if args.http && !args.listen.ip().is_loopback() {
        return Err(fail(USAGE, ServerError::HttpNotLoopback(args.listen).to_string()));
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| fail(USAGE, e.to_string()))?,
        None => Config::default(),
    };
    if let Some(auth) = args.auth {
        config.management.auth = auth;
    }
    if let Some(preset) = args.compat {
        config.compat.preset = preset;
    }
    let compat = config.compat.preset;
    let federated = config.compat().federated;
    let users: Vec<String> = config.users.iter().map(|u| u.name.clone()).collect();
    let opts = ServerOptions {
        listen: args.listen,
        http: args.http,
        state_dir: args.state.unwrap_or_else(default_state_dir),
        config,
        public_url: args.public_url,
        clock: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let handle = server::start(opts).await.map_err(|e| {
            let code = match e {
                ServerError::Pki(_) => STATE,
                _ => USAGE,
            };
            fail(code, e.to_string())
        })?;
        println!("mdmsim reference server listening on {}", handle.local_addr);
        println!("  base URL:      {}", handle.base_url);
        println!("  discovery URL: {}", handle.discovery_url());
        println!("  management:    {}", handle.management_url());
        println!("  records:       {}/admin/devices", handle.base_url);
        if handle.base_url.starts_with("https") {
            println!("  CA to trust:   {}", handle.ca_file.display());
        }
        println!("  users:         {}", users.join(", "));
        println!("  compatibility: {compat}");
        if federated {
            println!("  sign-in page:  {}{}", handle.base_url, server::AUTH_PATH);
        }
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await.map_err(|e| fail(STATE, format!("cannot wait for Ctrl-C: {e}")))?;
        handle.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("mdmsim/server");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/mdmsim/server"),
        None => PathBuf::from(".mdmsim/server"),
    }
}
