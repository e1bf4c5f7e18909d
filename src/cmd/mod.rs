//! The commands of the binary. Each module parses its own arguments (clap) and runs them;
//! errors are `anyhow` here only, tagged with an exit code through [`exit::Fail`].

pub mod ddf;
pub mod demo;
pub mod device;
pub mod enroll;
pub mod exit;
pub mod run;
pub mod scenario;
pub mod server;
pub mod sync;
pub mod syncml;
pub mod tree;

/// `--ca-cert`, `--insecure` and `--timeout`: how a device's HTTP client talks to the server.
#[derive(clap::Args, Clone)]
pub struct HttpArgs {
    /// Trust this CA certificate (PEM) besides the system roots.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Accept any server certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Seconds to wait for each answer of the server.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
}

impl HttpArgs {
    /// The transport settings these arguments give (the CA file is read here).
    pub fn options(&self) -> anyhow::Result<mdmsim::runner::http::HttpOptions> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(exit::fail(
                exit::USAGE,
                format!("--timeout {}: must be a positive number of seconds", self.timeout),
            ));
        }
        let mut opts = mdmsim::runner::http::HttpOptions {
            timeout: std::time::Duration::from_secs_f64(self.timeout),
            insecure: self.insecure,
            ..Default::default()
        };
        opts.connect_timeout = opts.connect_timeout.min(opts.timeout);
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| exit::fail(exit::USAGE, format!("--ca-cert {}: {e}", path.display())))?;
            opts.ca_cert_pem = Some(pem);
        }
        Ok(opts)
    }
}

/// The device template of `--template FILE` (over the built-in one of its profile) and the
/// profile: `--profile`, else the file's, else win10.
pub fn load_template(
    path: Option<&std::path::Path>,
    profile: Option<mdmsim::tree::Profile>,
) -> anyhow::Result<(mdmsim::tree::Profile, mdmsim::device::Template)> {
    use mdmsim::device::Template;
    let file = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| exit::fail(exit::USAGE, format!("{}: {e}", path.display())))?;
            Some(
                Template::parse(&text, &path.display().to_string())
                    .map_err(|e| exit::fail(exit::USAGE, e.to_string()))?,
            )
        }
        None => None,
    };
    let profile = profile.or(file.as_ref().and_then(|t| t.profile)).unwrap_or_default();
    let mut template = Template::builtin(profile);
    if let Some(f) = &file {
        template = template.overlay(f);
    }
    Ok((profile, template))
}

/// Sets up `tracing` output on stderr: `-v` levels, overridden by `RUST_LOG`.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,mdmsim={level}")));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
