//! The commands of the binary. Each module parses its own arguments (clap) and runs them;
//! errors are `anyhow` here only, tagged with an exit code through [`exit::Fail`].

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
