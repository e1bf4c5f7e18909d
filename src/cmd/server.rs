//! `mdmsim server`: runs the embedded reference MDM server until Ctrl-C and prints where to
//! point devices (base URL, discovery URL), which CA file to trust and where the admin token
//! is kept. `--compat` makes it answer like a real-world server (see docs/server-compat.md);
//! `--faults` makes it a faulty one (see docs/server-faults.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use mdmsim::server::{self, Config, FaultSpec, Preset, ServerError, ServerOptions};

use super::exit::{STATE, USAGE, fail};
use super::out;

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
    /// Serve HTTPS on an address other machines can reach (0.0.0.0, a LAN address). Without it
    /// the server listens on loopback only: it enrolls any device that knows a configured
    /// user's password.
    #[arg(long)]
    allow_remote: bool,
    /// Inject faults into management answers, replacing the config's [faults] probabilities:
    /// NAME=PROBABILITY terms, comma-separated, probabilities as 5% or 0.05, names 500 (HTTP
    /// 500), reset (close without an answer), slow (answer late), truncate (a body shorter than
    /// its Content-Length), malformed (SyncML that does not parse), no-final (no <Final/>),
    /// 429 and 503 (throttling, with Retry-After); `none` turns them off. Example: 500=5%,reset=2%,slow=1%. See docs/server-faults.md.
    #[arg(long, value_name = "SPEC", value_parser = parse_faults)]
    faults: Option<FaultSpec>,
    /// Seed of the fault draw (default: the config's [faults] seed, else a random one, printed
    /// at start). The same seed and the same devices give the same faults.
    #[arg(long, value_name = "N")]
    fault_seed: Option<u64>,
    /// How long a `slow` fault delays the answer (2s, 500ms; at most 30s). Default 2s.
    #[arg(long, value_name = "DURATION", value_parser = parse_slow_delay)]
    fault_slow_delay: Option<Duration>,
    /// The Retry-After of a `429` or `503` fault, whole seconds (1s, 5; at most 30s). Default 1s.
    #[arg(long, value_name = "SECONDS", value_parser = parse_retry_after)]
    fault_retry_after: Option<Duration>,
}

fn parse_preset(text: &str) -> Result<Preset, String> {
    text.parse()
}

fn parse_faults(text: &str) -> Result<FaultSpec, String> {
    text.parse().map_err(|e: server::FaultSpecError| e.to_string())
}

fn parse_retry_after(text: &str) -> Result<Duration, String> {
    server::faults::parse_retry_after(text).map_err(|e| e.to_string())
}

fn parse_slow_delay(text: &str) -> Result<Duration, String> {
    server::faults::parse_delay(text).map_err(|e| e.to_string())
}

pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    // Checked before anything is created or bound.
    server::check_exposure(args.listen, args.http, args.allow_remote).map_err(|e| fail(USAGE, e.to_string()))?;
    if !server::is_loopback(args.listen.ip()) {
        eprintln!(
            "mdmsim: warning: listening on {}, which other machines can reach (--allow-remote): any device that knows a configured user's password can enroll; keep the admin token file private",
            args.listen
        );
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
    if let Some(spec) = args.faults {
        config.faults.spec = spec;
    }
    if let Some(seed) = args.fault_seed {
        config.faults.seed = Some(seed);
    }
    if let Some(delay) = args.fault_slow_delay {
        config.faults.slow_delay = Some(delay);
    }
    if let Some(after) = args.fault_retry_after {
        config.faults.retry_after = Some(after);
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
        allow_remote: args.allow_remote,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let handle = server::start(opts).await.map_err(|e| {
            let code = match e {
                ServerError::Pki(_) | ServerError::AdminToken(_) => STATE,
                _ => USAGE,
            };
            fail(code, e.to_string())
        })?;
        out::line(format_args!("mdmsim reference server listening on {}", handle.local_addr));
        out::line(format_args!("  base URL:      {}", handle.base_url));
        out::line(format_args!("  discovery URL: {}", handle.discovery_url()));
        out::line(format_args!("  management:    {}", handle.management_url()));
        out::line(format_args!("  records:       {}/admin/devices and /admin/summary", handle.base_url));
        out::line(format_args!("  push:          POST {}/admin/devices/<DeviceID>/push", handle.base_url));
        out::line(format_args!(
            "  admin token:   {} (send it as Authorization: Bearer)",
            handle.admin_token_file().display()
        ));
        if handle.base_url.starts_with("https") {
            out::line(format_args!("  CA to trust:   {}", handle.ca_file.display()));
        }
        out::line(format_args!("  users:         {}", users.join(", ")));
        out::line(format_args!("  compatibility: {compat}"));
        if let Some(plan) = handle.fault_plan() {
            out::line(format_args!("  faults:        {plan}"));
        }
        if federated {
            out::line(format_args!("  sign-in page:  {}{}", handle.base_url, server::AUTH_PATH));
        }
        out::line("Press Ctrl-C to stop.");
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
