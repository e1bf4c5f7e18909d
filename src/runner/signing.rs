//! The CMS detached signature a device puts on every client message when DMClient
//! `Provider/<ID>/RequireMessageSigning` is true (the DMClient CSP page, RequireMessageSigning;
//! MS-MDM §2.1 HTTP transport "Message signing").
//!
//! Owns the signature bytes: a base64 CMS (PKCS#7 `SignedData`) *detached* signature over the
//! complete SyncML message, SHA-256 digest, made with the private key of the management session
//! certificate, with the signer certificate and a PKCS#9 signing time among the authenticated
//! attributes, and the [`Signer`] a transport carries (the enrollment certificate and key). It
//! does not own the decision to sign nor the header's name: the device's session run
//! ([`crate::device::run`]) reads [`crate::csp::dmclient::message_signing_required`] at the
//! session start and names the header ([`crate::device::run::signature_header`]: `MDM-Signature`
//! by default, configurable because MS-MDM §2.1 says `MS-Signature`); the HTTP exchange signs
//! and hands the signature to [`crate::runner::http::Transport::post_signed`].

use base64::Engine as _;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::PKey;
use openssl::x509::X509;

use crate::enroll::Secret;

/// Why a message could not be signed: the certificate or key given is unusable (our
/// configuration), or OpenSSL refused the operation.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The management certificate is not PEM that OpenSSL can read.
    #[error("management certificate is not a readable PEM certificate: {0}")]
    Certificate(openssl::error::ErrorStack),
    /// The private key is not PEM that OpenSSL can read.
    #[error("management private key is not a readable PEM key: {0}")]
    Key(openssl::error::ErrorStack),
    /// The key does not belong to the certificate.
    #[error("management private key does not match the certificate's public key")]
    KeyMismatch,
    /// OpenSSL failed to build or encode the CMS structure.
    #[error("CMS signing failed: {0}")]
    Cms(openssl::error::ErrorStack),
}

/// The certificate and key a device signs its messages with: those of its enrollment (the
/// management session certificate, `runner::enrollment::EnrollmentMaterial::signer`). `Debug`
/// never shows the key.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The client certificate first, then any intermediates (PEM); the first one signs.
    cert_pem: String,
    key_pem: Secret,
}

impl Signer {
    /// A signer from PEM texts (checked when signing).
    pub fn new(cert_pem: impl Into<String>, key_pem: Secret) -> Signer {
        Signer { cert_pem: cert_pem.into(), key_pem }
    }

    /// [`sign_detached`] with this certificate and key.
    pub fn sign(&self, message: &[u8]) -> Result<String, SigningError> {
        sign_detached(message, self.cert_pem.as_bytes(), self.key_pem.expose().as_bytes())
    }
}

/// Signs `message` (the complete SyncML text as sent, SyncHdr and SyncBody included) and returns
/// the base64 DER of a CMS detached signature: SHA-256, signer certificate included, signing
/// time among the signed attributes (OpenSSL adds contentType, messageDigest and signingTime by
/// default; S/MIME capabilities are left out as the MDM header has no use for them).
pub fn sign_detached(message: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<String, SigningError> {
    let cert = X509::from_pem(cert_pem).map_err(SigningError::Certificate)?;
    let key = PKey::private_key_from_pem(key_pem).map_err(SigningError::Key)?;
    sign_with(message, &cert, &key)
}

/// [`sign_detached`] with a parsed certificate and key.
pub fn sign_with(message: &[u8], cert: &X509, key: &PKey<openssl::pkey::Private>) -> Result<String, SigningError> {
    let public = cert.public_key().map_err(SigningError::Certificate)?;
    if !public.public_eq(key) {
        return Err(SigningError::KeyMismatch);
    }
    // BINARY: sign the bytes as they are (no MIME canonicalisation of line ends); DETACHED:
    // the message travels as the HTTP body, only the signature goes in the header. The
    // default digest of OpenSSL 3 for RSA and EC keys is SHA-256, which the DMClient CSP page asks for
    // ("SHA-2"); the test below checks the digest OID is in the output.
    let flags = CMSOptions::DETACHED | CMSOptions::BINARY | CMSOptions::NOSMIMECAP;
    let cms = CmsContentInfo::sign(Some(cert), Some(key), None, Some(message), flags).map_err(SigningError::Cms)?;
    let der = cms.to_der().map_err(SigningError::Cms)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(der))
}

#[cfg(test)]
mod tests {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::rsa::Rsa;
    use openssl::stack::Stack;
    use openssl::x509::X509NameBuilder;
    use openssl::x509::store::X509StoreBuilder;

    use super::*;

    /// A self-signed RSA certificate like the one enrollment issues (CN = DeviceID).
    fn identity() -> (Vec<u8>, Vec<u8>) {
        let rsa = Rsa::generate(2048).unwrap();
        let key = PKey::from_rsa(rsa).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "0123456789ABCDEF0123456789ABCDEF").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(365).unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (b.build().to_pem().unwrap(), key.private_key_to_pem_pkcs8().unwrap())
    }

    fn verify(sig_b64: &str, message: &[u8], cert_pem: &[u8]) -> bool {
        let der = base64::engine::general_purpose::STANDARD.decode(sig_b64).unwrap();
        let mut cms = CmsContentInfo::from_der(&der).unwrap();
        let cert = X509::from_pem(cert_pem).unwrap();
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(cert.clone()).unwrap();
        let store = store.build();
        let mut certs = Stack::new().unwrap();
        certs.push(cert).unwrap();
        cms.verify(Some(&certs), Some(&store), Some(message), None, CMSOptions::BINARY).is_ok()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    const MSG: &[u8] = b"<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD></SyncHdr>\r\n<SyncBody><Final/></SyncBody></SyncML>";

    #[test]
    fn signature_verifies_against_the_message_and_not_against_a_changed_one() {
        let (cert, key) = identity();
        let sig = sign_detached(MSG, &cert, &key).unwrap();
        assert!(verify(&sig, MSG, &cert), "signature must verify with the signer certificate");
        let mut tampered = MSG.to_vec();
        tampered[10] ^= 1;
        assert!(!verify(&sig, &tampered, &cert), "a changed message must not verify");
        let der = base64::engine::general_purpose::STANDARD.decode(&sig).unwrap();
        // SHA-256 digest algorithm OID 2.16.840.1.101.3.4.2.1 and the PKCS#9 signingTime
        // attribute OID 1.2.840.113549.1.9.5, as the DMClient CSP page requires.
        assert!(contains(&der, &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]));
        assert!(contains(&der, &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x05]));
        // Detached: the message itself is not inside the signature.
        assert!(!contains(&der, b"<SyncBody>"));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = identity();
        let (_, other_key) = identity();
        assert!(matches!(sign_detached(MSG, &cert, &other_key), Err(SigningError::KeyMismatch)));
        assert!(matches!(sign_detached(MSG, b"not pem", &other_key), Err(SigningError::Certificate(_))));
    }
}
