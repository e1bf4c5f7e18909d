//! The embedded reference server, started in-process for a test.

use mdmsim::server::{AuthMode, Config, ServerHandle, ServerOptions};

/// The reference server in-process on a free loopback port: plain HTTP trusting the DeviceID as
/// sent (for pre-provisioned devices), or HTTPS as `mdmsim server` runs by default.
pub struct RefServer {
    pub handle: ServerHandle,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl RefServer {
    pub fn start() -> RefServer {
        Self::start_with(true, AuthMode::None)
    }

    /// As `mdmsim server` starts by default: HTTPS with its own CA, devices trusted by their
    /// client certificate (or an MD5 credential).
    pub fn start_https() -> RefServer {
        Self::start_with(false, AuthMode::CertOrMd5)
    }

    /// HTTPS with devices trusted by their certificate, as `config` says otherwise.
    pub fn start_https_with(mut config: Config) -> RefServer {
        config.management.auth = AuthMode::CertOrMd5;
        Self::start_config(false, config)
    }

    fn start_with(http: bool, auth: AuthMode) -> RefServer {
        let mut config = Config::default();
        config.management.auth = auth;
        Self::start_config(http, config)
    }

    fn start_config(http: bool, config: Config) -> RefServer {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut opts = ServerOptions::local(dir.path().join("server"));
        opts.http = http;
        opts.config = config;
        let handle = rt.block_on(mdmsim::server::start(opts)).unwrap();
        RefServer { handle, _rt: rt, _dir: dir }
    }

    /// The server's CA certificate written to a file (for `--ca-cert`).
    pub fn ca_file(&self) -> std::path::PathBuf {
        let path = self._dir.path().join("ca.pem");
        std::fs::write(&path, self.handle.ca_pem()).unwrap();
        path
    }

    /// The base URL (`http://127.0.0.1:PORT`), what `scenario run --server` takes.
    pub fn base_url(&self) -> String {
        self.handle.base_url.clone()
    }

    pub fn management_url(&self) -> String {
        self.handle.management_url()
    }
}
