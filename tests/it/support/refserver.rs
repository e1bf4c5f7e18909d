//! The embedded reference server, started in-process for a test.

use mdmsim::server::{AuthMode, Config, ServerHandle, ServerOptions};

/// The reference server in-process on a free loopback port, trusting the DeviceID as sent (the
/// devices here are pre-provisioned, not enrolled).
pub struct RefServer {
    pub handle: ServerHandle,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl RefServer {
    pub fn start() -> RefServer {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut opts = ServerOptions::local(dir.path().join("server"));
        opts.http = true;
        let mut config = Config::default();
        config.management.auth = AuthMode::None;
        opts.config = config;
        let handle = rt.block_on(mdmsim::server::start(opts)).unwrap();
        RefServer { handle, _rt: rt, _dir: dir }
    }

    /// The base URL (`http://127.0.0.1:PORT`), what `scenario run --server` takes.
    pub fn base_url(&self) -> String {
        self.handle.base_url.clone()
    }

    pub fn management_url(&self) -> String {
        self.handle.management_url()
    }
}
