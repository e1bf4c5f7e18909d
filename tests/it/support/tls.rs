//! A minimal HTTPS SyncML endpoint for TLS tests: a test CA and a server certificate for
//! 127.0.0.1 made with openssl at run time, and a server thread that answers every POST with an
//! empty 200 (the session ends after package 1), or with what a given function makes of the
//! request body. It records how many requests got through the handshake. The thread stops when
//! the handle is dropped (and after 60 s at most).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};

/// A running HTTPS server.
pub struct TlsServer {
    pub url: String,
    /// The test CA that signed the server certificate (PEM).
    pub ca_pem: Vec<u8>,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TlsServer {
    /// Requests answered so far (i.e. that passed the TLS handshake).
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Starts the server on 127.0.0.1:0.
    pub fn start() -> TlsServer {
        TlsServer::start_with(Arc::new(|_| String::new()))
    }

    /// Starts a server that answers each request body with `answer(body)` (HTTP 200).
    pub fn start_with(answer: Arc<dyn Fn(&str) -> String + Send + Sync>) -> TlsServer {
        let (ca, ca_key) = cert("mdmsim test CA", None, true);
        let (leaf, leaf_key) = cert("127.0.0.1", Some((&ca, &ca_key)), false);
        let mut acc = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        acc.set_private_key(&leaf_key).expect("key");
        acc.set_certificate(&leaf).expect("cert");
        acc.add_extra_chain_cert(ca.clone()).expect("chain");
        let acceptor = acc.build();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("https://127.0.0.1:{}/MDM.svc", listener.local_addr().expect("addr").port());
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (served2, stop2) = (served.clone(), stop.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < end {
                let Ok((sock, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = sock.set_nonblocking(false);
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(mut tls) = acceptor.accept(sock) else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head and the body the Content-Length announces.
                while let Ok(n) = tls.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(p) = text.find("\r\n\r\n") {
                        let len = text[..p]
                            .lines()
                            .find_map(|l| {
                                let (n, v) = l.split_once(':')?;
                                n.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= p + 4 + len {
                            break;
                        }
                    }
                }
                served2.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&buf).into_owned();
                let body = answer(text.split_once("\r\n\r\n").map_or("", |(_, b)| b));
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = tls.write_all(head.as_bytes());
                let _ = tls.write_all(body.as_bytes());
                let _ = tls.shutdown();
            }
        });
        TlsServer { url, ca_pem: ca.to_pem().expect("pem"), served, stop }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A certificate for `cn`: a CA (self-signed) or a server certificate for 127.0.0.1 signed by
/// `issuer`.
fn cert(cn: &str, issuer: Option<(&X509, &PKey<Private>)>, ca: bool) -> (X509, PKey<Private>) {
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("version");
    let serial = BigNum::from_u32(if ca { 1 } else { 2 }).and_then(|n| n.to_asn1_integer()).expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("time")).expect("nb");
    b.set_not_after(&Asn1Time::days_from_now(2).expect("time")).expect("na");
    if ca {
        b.set_issuer_name(&name).expect("issuer");
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc")).expect("ext");
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().expect("ku")).expect("ext");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
    } else {
        let (icert, ikey) = issuer.expect("an issuer for a server certificate");
        b.set_issuer_name(icert.subject_name()).expect("issuer");
        let san =
            SubjectAlternativeName::new().ip("127.0.0.1").build(&b.x509v3_context(Some(icert), None)).expect("san");
        b.append_extension(san).expect("ext");
        b.append_extension(KeyUsage::new().digital_signature().key_encipherment().build().expect("ku")).expect("ext");
        b.sign(ikey, MessageDigest::sha256()).expect("sign");
    }
    (b.build(), key)
}
