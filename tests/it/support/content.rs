//! A package server for install tests: serves fixed bodies at fixed paths on 127.0.0.1, 404 for
//! anything else, and records every path asked for. Stops when dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode as HttpStatus, Uri};

/// A running package server.
pub struct Content {
    base: String,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Content {
    /// Serves each `(path, body)`.
    pub fn start(files: Vec<(&'static str, Vec<u8>)>) -> Content {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let log = hits.clone();
        let files = Arc::new(files);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let app = Router::new().fallback(move |uri: Uri| {
                    let log = log.clone();
                    let files = files.clone();
                    async move {
                        log.lock().expect("lock").push(uri.path().to_string());
                        match files.iter().find(|(p, _)| *p == uri.path()) {
                            Some((_, body)) => (HttpStatus::OK, body.clone()),
                            None => (HttpStatus::NOT_FOUND, b"no such package".to_vec()),
                        }
                    }
                });
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
                addr_tx.send(listener.local_addr().expect("local addr")).expect("send addr");
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stop_rx => {}
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("content server started");
        Content { base: format!("http://{addr}"), hits, stop: Some(stop_tx) }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every path asked for so far.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().expect("lock").clone()
    }
}

impl Drop for Content {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
