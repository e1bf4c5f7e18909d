//! The reference server's certificate authority: created on first start and kept in the state
//! folder, it signs the server's TLS certificate and the client certificates issued at
//! enrollment (MS-WSTEP), and verifies the client certificates presented on
//! the management endpoint.
//!
//! Owns key and certificate files and X.509 issuance (openssl). It does not parse SOAP: the
//! enrollment endpoint hands it a DER CSR and the DeviceID.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder, X509Req};

/// A PKI failure, naming the file or the request at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a usable PEM key or certificate: {source}")]
    BadFile { path: String, source: openssl::error::ErrorStack },
    #[error("the certificate request is not DER PKCS#10: {0}")]
    BadCsr(openssl::error::ErrorStack),
    #[error("the certificate request's signature does not verify with its own public key")]
    CsrSignature,
    #[error("the certificate request's key is RSA-{0}; at least 2048 bits are required")]
    WeakKey(u32),
    #[error("openssl: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

/// The CA and the server's TLS certificate, as loaded from (or created in) the state folder.
pub struct Pki {
    pub ca_cert: X509,
    ca_key: PKey<Private>,
    /// The server's TLS certificate and key.
    pub server_cert: X509,
    pub server_key: PKey<Private>,
    /// The CA that issued the TLS certificate: `ca_cert`, or a CA of its own.
    pub tls_ca_cert: X509,
    /// The CA certificate file that clients should trust for TLS.
    pub ca_file: PathBuf,
}

/// An issued client certificate.
pub struct Issued {
    pub cert: X509,
    /// Upper-case hex SHA-1 of the DER (the CertificateStore thumbprint).
    pub thumbprint: String,
    pub serial: String,
}

impl Pki {
    /// Loads the CA from `dir` or creates it, then loads the server certificate if it covers
    /// `hosts` (IPs and DNS names) or issues a new one. With `separate_tls_ca` the TLS
    /// certificate comes from a second CA (`tls-ca.pem`), as a real server's comes from a web
    /// CA that has nothing to do with its enrollment CA.
    pub fn open(dir: &Path, hosts: &[String], separate_tls_ca: bool) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.display().to_string(), source })?;
        let (ca_key, ca_cert, ca_path) = load_or_create_ca(dir, "ca", "mdmsim reference CA")?;
        let (tls_ca_key, tls_ca_cert, tls_ca_path) = if separate_tls_ca {
            load_or_create_ca(dir, "tls-ca", "mdmsim reference web CA")?
        } else {
            (ca_key.clone(), ca_cert.clone(), ca_path.clone())
        };
        let srv = if separate_tls_ca { "server-web" } else { "server" };
        let (srv_key_path, srv_path) = (dir.join(format!("{srv}.key")), dir.join(format!("{srv}.pem")));
        let existing = if srv_path.exists() && srv_key_path.exists() {
            let cert = read_cert(&srv_path)?;
            let signed_by_ca = cert.verify(tls_ca_cert.public_key()?.as_ref()).unwrap_or(false);
            (signed_by_ca && covers(&cert, hosts)).then(|| read_key(&srv_key_path).map(|k| (k, cert)))
        } else {
            None
        };
        let (server_key, server_cert) = match existing {
            Some(pair) => pair?,
            None => {
                let key = new_key()?;
                let cert = server_cert(&tls_ca_key, &tls_ca_cert, &key, hosts)?;
                write(&srv_key_path, &key.private_key_to_pem_pkcs8()?, true)?;
                write(&srv_path, &cert.to_pem()?, false)?;
                (key, cert)
            }
        };
        Ok(Pki { ca_cert, ca_key, server_cert, server_key, tls_ca_cert, ca_file: tls_ca_path })
    }

    /// Verifies a DER PKCS#10 request and issues a client certificate `CN=<device_id>` with
    /// EKU clientAuth, signed by the CA with SHA-256.
    pub fn issue_client(&self, csr_der: &[u8], device_id: &str, validity_days: u32) -> Result<Issued, PkiError> {
        let req = X509Req::from_der(csr_der).map_err(PkiError::BadCsr)?;
        let public = req.public_key().map_err(PkiError::BadCsr)?;
        if !req.verify(&public).unwrap_or(false) {
            return Err(PkiError::CsrSignature);
        }
        if let Ok(rsa) = public.rsa()
            && rsa.size() * 8 < 2048
        {
            return Err(PkiError::WeakKey(rsa.size() * 8));
        }
        let mut b = builder(name(device_id)?.as_ref(), self.ca_cert.subject_name(), validity_days)?;
        b.set_pubkey(&public)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        let ctx = b.x509v3_context(Some(&self.ca_cert), None);
        let aki = AuthorityKeyIdentifier::new().keyid(false).build(&ctx)?;
        b.append_extension(aki)?;
        b.sign(&self.ca_key, MessageDigest::sha256())?;
        let cert = b.build();
        let thumbprint = hex::encode_upper(cert.digest(MessageDigest::sha1())?);
        let serial = cert.serial_number().to_bn()?.to_hex_str()?.to_string();
        Ok(Issued { cert, thumbprint, serial })
    }

    /// Upper-case hex SHA-1 of the CA certificate (its CertificateStore thumbprint).
    pub fn ca_thumbprint(&self) -> String {
        self.ca_cert.digest(MessageDigest::sha1()).map(hex::encode_upper).unwrap_or_default()
    }
}

/// The CA `<stem>.pem` / `<stem>.key` in `dir`, created when missing.
fn load_or_create_ca(dir: &Path, stem: &str, cn: &str) -> Result<(PKey<Private>, X509, PathBuf), PkiError> {
    let (key_path, cert_path) = (dir.join(format!("{stem}.key")), dir.join(format!("{stem}.pem")));
    if cert_path.exists() && key_path.exists() {
        return Ok((read_key(&key_path)?, read_cert(&cert_path)?, cert_path));
    }
    let key = new_key()?;
    let cert = self_signed_ca(&key, cn)?;
    write(&key_path, &key.private_key_to_pem_pkcs8()?, true)?;
    write(&cert_path, &cert.to_pem()?, false)?;
    Ok((key, cert, cert_path))
}

/// The subject CN of a certificate, if any.
pub fn common_name(cert: &openssl::x509::X509Ref) -> Option<String> {
    let entry = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next()?;
    entry.data().to_string().ok()
}

fn new_key() -> Result<PKey<Private>, PkiError> {
    Ok(PKey::from_rsa(Rsa::generate(2048)?)?)
}

fn name(cn: &str) -> Result<openssl::x509::X509Name, PkiError> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(n.build())
}

fn builder(
    subject: &openssl::x509::X509NameRef,
    issuer: &openssl::x509::X509NameRef,
    days: u32,
) -> Result<X509Builder, PkiError> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    b.set_serial_number(serial.to_asn1_integer()?.as_ref())?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    // Backdate by a day so that a device whose clock is slightly behind still accepts it.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    b.set_not_before(Asn1Time::from_unix(now - 86_400)?.as_ref())?;
    b.set_not_after(Asn1Time::days_from_now(days)?.as_ref())?;
    Ok(b)
}

fn self_signed_ca(key: &PKey<Private>, cn: &str) -> Result<X509, PkiError> {
    let n = name(cn)?;
    let mut b = builder(&n, &n, 3650)?;
    b.set_pubkey(key)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

fn server_cert(ca_key: &PKey<Private>, ca: &X509, key: &PKey<Private>, hosts: &[String]) -> Result<X509, PkiError> {
    let cn = hosts.first().map(String::as_str).unwrap_or("localhost");
    let mut b = builder(name(cn)?.as_ref(), ca.subject_name(), 825)?;
    b.set_pubkey(key)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let mut san = SubjectAlternativeName::new();
    for h in hosts {
        if h.parse::<IpAddr>().is_ok() {
            san.ip(h);
        } else {
            san.dns(h);
        }
    }
    let san = san.build(&b.x509v3_context(Some(ca), None))?;
    b.append_extension(san)?;
    b.sign(ca_key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// True when every host is among the certificate's SANs.
fn covers(cert: &X509, hosts: &[String]) -> bool {
    let Some(sans) = cert.subject_alt_names() else { return false };
    hosts.iter().all(|h| {
        let ip: Option<IpAddr> = h.parse().ok();
        sans.iter().any(|n| match ip {
            Some(IpAddr::V4(v4)) => n.ipaddress() == Some(&v4.octets()[..]),
            Some(IpAddr::V6(v6)) => n.ipaddress() == Some(&v6.octets()[..]),
            None => n.dnsname().is_some_and(|d| d.eq_ignore_ascii_case(h)),
        })
    })
}

fn read_key(path: &Path) -> Result<PKey<Private>, PkiError> {
    let pem = std::fs::read(path).map_err(|source| PkiError::Io { path: path.display().to_string(), source })?;
    PKey::private_key_from_pem(&pem).map_err(|source| PkiError::BadFile { path: path.display().to_string(), source })
}

fn read_cert(path: &Path) -> Result<X509, PkiError> {
    let pem = std::fs::read(path).map_err(|source| PkiError::Io { path: path.display().to_string(), source })?;
    X509::from_pem(&pem).map_err(|source| PkiError::BadFile { path: path.display().to_string(), source })
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io { path: path.display().to_string(), source };
    std::fs::write(path, bytes).map_err(io)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}

#[cfg(test)]
mod tests {
    use openssl::x509::X509ReqBuilder;

    use super::*;

    fn csr(bits: u32) -> (Vec<u8>, PKey<Private>) {
        let key = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
        let mut b = X509ReqBuilder::new().unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_subject_name(&name("B1C43CD0-1624-5FBB-8E54-34CF17DFD3A1!0123").unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (b.build().to_der().unwrap(), key)
    }

    #[test]
    fn ca_is_reused_and_issues_verifiable_client_certs() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let a = Pki::open(dir.path(), &hosts, false).unwrap();
        let b = Pki::open(dir.path(), &hosts, false).unwrap();
        assert_eq!(a.ca_cert.to_der().unwrap(), b.ca_cert.to_der().unwrap(), "restart must reuse the CA");
        assert_eq!(a.server_cert.to_der().unwrap(), b.server_cert.to_der().unwrap());
        assert!(a.server_cert.verify(&a.ca_cert.public_key().unwrap()).unwrap());
        let (der, key) = csr(2048);
        let issued = a.issue_client(&der, "0123456789ABCDEF0123456789ABCDEF", 30).unwrap();
        assert!(issued.cert.verify(&a.ca_cert.public_key().unwrap()).unwrap());
        assert_eq!(common_name(&issued.cert).as_deref(), Some("0123456789ABCDEF0123456789ABCDEF"));
        assert!(issued.cert.public_key().unwrap().public_eq(&key));
        assert_eq!(issued.thumbprint.len(), 40);
        // A new listen host makes a new server certificate under the same CA.
        let c = Pki::open(dir.path(), &["10.1.2.3".to_string()], false).unwrap();
        assert_ne!(c.server_cert.to_der().unwrap(), a.server_cert.to_der().unwrap());
        assert_eq!(c.ca_cert.to_der().unwrap(), a.ca_cert.to_der().unwrap());
    }

    /// A real server's TLS certificate comes from a web CA the provisioning document never
    /// installs: the TLS chain and the enrollment CA then differ.
    #[test]
    fn a_separate_tls_ca_signs_the_server_certificate_only() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["127.0.0.1".to_string()];
        let pki = Pki::open(dir.path(), &hosts, true).unwrap();
        assert!(pki.server_cert.verify(&pki.tls_ca_cert.public_key().unwrap()).unwrap());
        assert!(!pki.server_cert.verify(&pki.ca_cert.public_key().unwrap()).unwrap());
        assert_eq!(pki.ca_file, dir.path().join("tls-ca.pem"));
        let (der, _) = csr(2048);
        let issued = pki.issue_client(&der, "0123456789ABCDEF0123456789ABCDEF", 30).unwrap();
        assert!(issued.cert.verify(&pki.ca_cert.public_key().unwrap()).unwrap());
        // The same folder without the switch goes back to the enrollment CA for TLS.
        let shared = Pki::open(dir.path(), &hosts, false).unwrap();
        assert!(shared.server_cert.verify(&shared.ca_cert.public_key().unwrap()).unwrap());
        assert_eq!(shared.ca_cert.to_der().unwrap(), pki.ca_cert.to_der().unwrap());
    }

    #[test]
    fn bad_and_weak_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open(dir.path(), &["127.0.0.1".to_string()], false).unwrap();
        assert!(matches!(pki.issue_client(b"nope", "X", 1), Err(PkiError::BadCsr(_))));
        let (der, _) = csr(1024);
        assert!(matches!(pki.issue_client(&der, "X", 1), Err(PkiError::WeakKey(1024))));
        let (mut der, _) = csr(2048);
        let n = der.len();
        der[n - 10] ^= 0xff; // corrupt the signature
        assert!(matches!(pki.issue_client(&der, "X", 1), Err(PkiError::CsrSignature)));
    }
}
