//! `mdmsim wns`: the push notification service emulation (WNS) on its own, until Ctrl-C, for a
//! management server under test: the server gets an access token at `/accesstoken.srf` and
//! pushes to the ChannelURIs the devices report; the devices live in `mdmsim run --wns-url
//! URL` (or `scenario run --wns-url URL`), which ask it for their channels and learn from it
//! which devices were pushed. Prints the addresses; `docs/push.md` has the endpoints.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

use super::exit::{STATE, USAGE, fail};
use super::out;

/// Arguments of `mdmsim wns`.
#[derive(Args)]
pub struct WnsArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8181")]
    listen: SocketAddr,
    /// Listen on an address other machines can reach (the service speaks plain HTTP and hands
    /// out channels to whoever asks: without it, loopback only).
    #[arg(long)]
    allow_remote: bool,
    /// The client_id the token endpoint takes (a package SID such as ms-app://s-1-15-2-...);
    /// default: any.
    #[arg(long, value_name = "ID", requires = "client_secret")]
    client_id: Option<String>,
    /// The client_secret the token endpoint takes; default: any.
    #[arg(long, value_name = "SECRET", env = "MDMSIM_WNS_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Notifications one channel takes per minute before it is answered 406 (0: no limit).
    #[arg(long, value_name = "N", default_value_t = mdmsim::wns::DEFAULT_PER_MINUTE)]
    per_minute: u32,
}

pub fn run(a: WnsArgs) -> anyhow::Result<ExitCode> {
    let opts = mdmsim::wns::WnsOptions {
        listen: a.listen,
        allow_remote: a.allow_remote,
        client_id: a.client_id,
        client_secret: a.client_secret,
        per_minute: a.per_minute,
        device_api: true,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(STATE, format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let handle = mdmsim::wns::start(opts).await.map_err(|e| fail(USAGE, e.to_string()))?;
        let base = handle.base_url().to_string();
        out::line(format_args!("mdmsim push notification service (WNS emulation) listening on {}", handle.local_addr));
        out::line(format_args!("  token endpoint: {base}{}", mdmsim::wns::TOKEN_PATH));
        out::line(format_args!("  channels:       {base}/?token=<channel> (POST, X-WNS-Type: wns/raw)"));
        out::line(format_args!("  devices:        mdmsim run --state DIR --wns-url {base}"));
        out::line("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await.map_err(|e| fail(STATE, format!("cannot wait for Ctrl-C: {e}")))?;
        Ok(ExitCode::SUCCESS)
    })
}
