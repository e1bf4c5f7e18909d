//! The real HTTP GET behind an [`crate::tree::Effect::Fetch`]: a CSP (EnterpriseAppManagement)
//! asks for a package, the runner downloads it with reqwest and hands the CSP a
//! [`FetchOutcome`] through `Registry::on_fetch`.
//!
//! Owns the transfer and the mapping of transport errors to outcomes (refused, timeout, HTTP
//! status, other). Does not own what a failure means for the device (LastError HRESULTs are the
//! CSP's), nor TLS client identity (the `client` passed in carries it).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::tree::FetchOutcome;

/// GETs `url` and returns the body's size and SHA-256, or why there is none. The timeout covers
/// the whole transfer (connect, headers and body). The body is hashed as it streams in; it is
/// not kept.
pub async fn fetch(client: &reqwest::Client, url: &str, timeout: Duration) -> FetchOutcome {
    let resp = match client.get(url).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) => return classify(&e),
    };
    let status = resp.status();
    if !status.is_success() {
        return FetchOutcome::HttpStatus(status.as_u16());
    }
    let mut resp = resp;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => {
                size += bytes.len() as u64;
                hasher.update(&bytes);
            }
            Ok(None) => break,
            Err(e) => return classify(&e),
        }
    }
    FetchOutcome::Done { size, sha256: hex::encode(hasher.finalize()) }
}

/// Maps a reqwest error to an outcome: a refused connection is recognised from the OS error in
/// the source chain, so that "nobody listens" and "host unknown" stay distinct.
fn classify(e: &reqwest::Error) -> FetchOutcome {
    if e.is_timeout() {
        return FetchOutcome::Timeout;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut chain = Vec::new();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return FetchOutcome::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return FetchOutcome::Timeout,
                _ => {}
            }
        }
        chain.push(s.to_string());
        src = s.source();
    }
    FetchOutcome::Failed(chain.join(": "))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;

    async fn server() -> SocketAddr {
        let app = Router::new()
            .route("/pkg.appx", get(|| async { "hello package" }))
            .route("/missing.appx", get(|| async { (StatusCode::NOT_FOUND, "no") }))
            .route(
                "/hang.appx",
                get(|| async {
                    std::future::pending::<()>().await;
                    "never"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_body_gives_its_size_and_sha256() {
        let addr = server().await;
        let client = reqwest::Client::new();
        let out = fetch(&client, &format!("http://{addr}/pkg.appx"), Duration::from_secs(5)).await;
        let expected = hex::encode(Sha256::digest(b"hello package"));
        assert_eq!(out, FetchOutcome::Done { size: 13, sha256: expected });
    }

    #[tokio::test]
    async fn a_404_is_an_http_status() {
        let addr = server().await;
        let client = reqwest::Client::new();
        let out = fetch(&client, &format!("http://{addr}/missing.appx"), Duration::from_secs(5)).await;
        assert_eq!(out, FetchOutcome::HttpStatus(404));
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_refused() {
        // Bind then drop: the port is free and nobody listens.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
            l.local_addr().expect("local addr").port()
        };
        let client = reqwest::Client::new();
        let out = fetch(&client, &format!("http://127.0.0.1:{port}/pkg.appx"), Duration::from_secs(5)).await;
        assert_eq!(out, FetchOutcome::ConnectionRefused);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let addr = server().await;
        let client = reqwest::Client::new();
        let out = fetch(&client, &format!("http://{addr}/hang.appx"), Duration::from_millis(300)).await;
        assert_eq!(out, FetchOutcome::Timeout);
    }

    #[tokio::test]
    async fn a_malformed_url_is_another_failure() {
        let client = reqwest::Client::new();
        let out = fetch(&client, "http://", Duration::from_secs(1)).await;
        assert!(matches!(out, FetchOutcome::Failed(_)), "{out:?}");
    }
}
