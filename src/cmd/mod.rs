//! The commands of the binary. Each module parses its own arguments (clap) and runs them;
//! errors are `anyhow` here only, tagged with an exit code through [`exit::Fail`].
//!
//! Shared here: the HTTP options, opening a state directory (missing, a file, locked, open to
//! other users: each said the same way by every command), output directories, the
//! `--insecure` warning, and passwords and tokens read from the command line, a file or the
//! environment.

use std::io::Read as _;
use std::path::Path;

use mdmsim::runner::store::{Store, StoreError};

pub mod bench;
pub mod conformance;
pub mod ddf;
pub mod demo;
pub mod device;
pub mod enroll;
pub mod exit;
pub mod fleet;
pub mod fleet_enroll;
pub mod fleet_population;
pub mod fleet_state;
pub mod out;
pub mod report;
pub mod run;
pub mod scenario;
pub mod server;
pub mod sync;
pub mod syncml;
pub mod transcript;
pub mod tree;
pub mod wns;

/// `--ca-cert`, `--insecure` and `--timeout`: how a device's HTTP client talks to the server.
#[derive(clap::Args, Clone)]
pub struct HttpArgs {
    /// Trust this CA certificate (PEM) besides the system roots.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Accept any server certificate (testing only): the server's TLS certificate is not
    /// checked, and a warning says so on stderr.
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
        if self.insecure {
            warn_insecure(Insecure::Sessions);
        }
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| exit::fail(exit::USAGE, format!("--ca-cert {}: {e}", path.display())))?;
            opts.ca_cert_pem = Some(pem);
        }
        Ok(opts)
    }
}

/// The command-line parser of a closed set of core values ([`mdmsim::names::Named`]): its
/// names are the possible values `--help` lists and errors suggest.
pub fn named<T: mdmsim::names::Named + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(T::ALL.iter().map(|v| v.name()))
        .map(|s| T::from_name(&s).expect("clap only passes one of the possible values"))
}

/// What `--insecure` leaves open, for its warning.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Insecure {
    /// Management sessions only.
    Sessions,
    /// An enrollment: the password or token goes to the server.
    Enrollment,
}

/// Says on stderr what `--insecure` turns off (once per process).
pub fn warn_insecure(what: Insecure) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let credentials = match what {
            Insecure::Sessions => "",
            Insecure::Enrollment => "; the password or token is sent to a server whose identity is not verified",
        };
        out::warn(format_args!(
            "mdmsim: warning: --insecure: the server's TLS certificate is not checked, so anyone on the \
             network path can pose as the server{credentials}"
        ));
    });
}

/// Starts the embedded push notification service (WNS emulation) on `listen` in `rt`, and says
/// where on stderr (exit 2 when the address cannot be used).
pub fn start_wns(rt: &tokio::runtime::Runtime, listen: std::net::SocketAddr) -> anyhow::Result<mdmsim::wns::WnsHandle> {
    let opts = mdmsim::wns::WnsOptions { listen, ..Default::default() };
    let handle =
        rt.block_on(mdmsim::wns::start(opts)).map_err(|e| exit::fail(exit::USAGE, format!("--wns-listen: {e}")))?;
    out::warn(format_args!("mdmsim: push notification service (WNS emulation) at {}", handle.base_url()));
    Ok(handle)
}

/// Where a run's devices get their push channels: the embedded service on `--wns-listen`, or a
/// standalone `mdmsim wns` at `--wns-url`.
pub enum PushService {
    Embedded(mdmsim::wns::WnsHandle),
    Remote { client: reqwest::Client, base_url: String },
}

impl PushService {
    /// Starts the embedded service, or checks the standalone one's URL.
    pub fn open(
        rt: &tokio::runtime::Runtime,
        listen: std::net::SocketAddr,
        url: Option<&str>,
    ) -> anyhow::Result<PushService> {
        let Some(url) = url else { return Ok(PushService::Embedded(start_wns(rt, listen)?)) };
        let parsed =
            reqwest::Url::parse(url).map_err(|e| exit::fail(exit::USAGE, format!("--wns-url {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(exit::fail(exit::USAGE, format!("--wns-url {url:?}: expected an http(s) URL")));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| exit::fail(exit::STATE, format!("HTTP client: {e}")))?;
        Ok(PushService::Remote { client, base_url: url.trim_end_matches('/').to_string() })
    }

    /// The channel calls of the devices.
    pub fn channels(&self) -> mdmsim::runner::fleet::ChannelService {
        match self {
            PushService::Embedded(h) => mdmsim::runner::fleet::ChannelService::of(h.wns.clone()),
            PushService::Remote { client, base_url } => {
                mdmsim::runner::fleet::ChannelService::remote(client.clone(), base_url.clone())
            }
        }
    }

    /// Makes the service's notifications wake the fleet's devices; for a standalone service a
    /// task on `rt` fetches them (abort it when the run ends).
    pub fn wake(
        &self,
        rt: &tokio::runtime::Runtime,
        fleet: &mdmsim::runner::fleet::Fleet,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let deliver = fleet.push_receiver();
        match self {
            PushService::Embedded(h) => {
                h.wns.set_deliver(deliver);
                None
            }
            PushService::Remote { client, base_url } => {
                Some(rt.spawn(mdmsim::wns::remote_wake_loop(client.clone(), base_url.clone(), deliver)))
            }
        }
    }

    /// The same, for the scenario runner.
    pub fn endpoint(&self) -> mdmsim::wns::PushEndpoint {
        match self {
            PushService::Embedded(h) => mdmsim::wns::PushEndpoint::Embedded(h.wns.clone()),
            PushService::Remote { client, base_url } => {
                mdmsim::wns::PushEndpoint::Remote { client: client.clone(), base_url: base_url.clone() }
            }
        }
    }
}

/// Opens an existing state directory for a command (exit 5 when it is missing, a file, locked
/// by another process or unusable), warning once when other users can read it.
pub fn open_store(dir: &Path) -> anyhow::Result<Store> {
    let store = Store::open(dir).map_err(store_error)?;
    warn_loose(&store);
    Ok(store)
}

/// Opens the state directory, creating it private (0700, files 0600) when missing: for the
/// commands that make devices (`device new`, `enroll`).
pub fn init_store(dir: &Path) -> anyhow::Result<Store> {
    let store = Store::init(dir).map_err(store_error)?;
    warn_loose(&store);
    Ok(store)
}

/// A store error as the command's error (exit 5).
pub fn store_error(e: StoreError) -> anyhow::Error {
    exit::fail(exit::STATE, e.to_string())
}

fn warn_loose(store: &Store) {
    if let Some(l) = store.loose_permissions() {
        let more = if l.count > 1 { format!(" (and {} more)", l.count - 1) } else { String::new() };
        out::warn(format_args!(
            "mdmsim: warning: state directory {dir} is open to other users: {path} has mode {mode:04o}{more}; it holds \
             device secrets (MD5 credentials, private keys): run `chmod -R go-rwx {dir}`",
            dir = store.dir().display(),
            path = l.path.display(),
            mode = l.mode,
        ));
    }
}

/// Makes every file and folder this process creates from now on private to its user (umask
/// 077): the state directory's sled files (sled creates some long after the store was opened:
/// snapshots, blobs), enrollment material and transcripts. No effect off Unix.
pub fn private_files() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates the `--transcript` directory (an existing file there is a usage error, exit 2, in
/// every command).
pub fn transcript_dir(dir: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    if dir.exists() && !dir.is_dir() {
        return Err(exit::fail(exit::USAGE, format!("--transcript {}: is a file, not a directory", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| exit::fail(exit::USAGE, format!("--transcript {}: {e}", dir.display())))
}

/// Largest password or token file read (a token is a few KB; this refuses `/dev/zero`).
const MAX_SECRET_FILE: u64 = 1 << 20;

/// `--password`, `--password-file`, `--token`, `--token-file`, and the environment variables
/// `MDMSIM_PASSWORD` / `MDMSIM_TOKEN`: the enrolling user's credential.
#[derive(clap::Args, Clone, Default)]
pub struct SecretArgs {
    /// The user's password: sent in the UsernameToken (OnPremise), or typed into the server's
    /// sign-in page when discovery asks for Federated authentication (the enrollment web view).
    /// Visible to other local users in the process list: prefer --password-file or the
    /// environment variable MDMSIM_PASSWORD (used when no password or token option is given).
    #[arg(long, value_name = "P", conflicts_with_all = ["password_file", "token", "token_file"])]
    pub password: Option<String>,
    /// Read the password from FILE (`-`: standard input); a trailing newline is stripped.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["token", "token_file"])]
    pub password_file: Option<std::path::PathBuf>,
    /// A security token (Federated, Entra JWT, or Fleet's DeviceEnrollmentUserToken); skips the
    /// Federated sign-in page. Also from --token-file or the environment variable MDMSIM_TOKEN.
    #[arg(long, value_name = "T", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the token from FILE (`-`: standard input); a trailing newline is stripped.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

/// A credential as given.
pub enum Credential {
    Password(String),
    Token(String),
}

/// Environment variables that give a credential when no option does.
pub const PASSWORD_ENV: &str = "MDMSIM_PASSWORD";
pub const TOKEN_ENV: &str = "MDMSIM_TOKEN";

impl SecretArgs {
    /// True when an option (not the environment) gives a credential.
    pub fn given(&self) -> bool {
        self.password.is_some() || self.password_file.is_some() || self.token.is_some() || self.token_file.is_some()
    }

    /// The credential: an option first, else `MDMSIM_PASSWORD`, else `MDMSIM_TOKEN`; `None`
    /// when there is none. A file that cannot be read, or is empty, is a usage error (exit 2).
    pub fn credential(&self) -> anyhow::Result<Option<Credential>> {
        if let Some(p) = &self.password {
            return Ok(Some(Credential::Password(p.clone())));
        }
        if let Some(f) = &self.password_file {
            return Ok(Some(Credential::Password(read_secret(f, "--password-file")?)));
        }
        if let Some(t) = &self.token {
            return Ok(Some(Credential::Token(t.clone())));
        }
        if let Some(f) = &self.token_file {
            return Ok(Some(Credential::Token(read_secret(f, "--token-file")?)));
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (env(PASSWORD_ENV), env(TOKEN_ENV)) {
            (Some(_), Some(_)) => Err(exit::fail(
                exit::USAGE,
                format!(
                    "both {PASSWORD_ENV} and {TOKEN_ENV} are set: unset one, or give --password-file or --token-file"
                ),
            )),
            (Some(p), None) => Ok(Some(Credential::Password(p))),
            (None, Some(t)) => Ok(Some(Credential::Token(t))),
            (None, None) => Ok(None),
        }
    }
}

/// A password or token file's content without its trailing newline (`\n` or `\r\n`).
fn read_secret(path: &Path, option: &str) -> anyhow::Result<String> {
    let bad = |why: String| exit::fail(exit::USAGE, format!("{option} {}: {why}", path.display()));
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().lock().take(MAX_SECRET_FILE + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_SECRET_FILE + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(bad(format!("longer than {MAX_SECRET_FILE} bytes")));
    }
    let mut text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(bad("empty".into()));
    }
    Ok(text)
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
