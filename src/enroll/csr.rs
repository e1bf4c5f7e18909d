//! The PKCS#10 certificate request, shaped like the real client's (MS-WSTEP, MS-MDE2 §3.3):
//! `CN=<GUID-like>!<DeviceID>`, the DeviceID extension `1.3.6.1.4.1.311.66.1.0`, EKU
//! clientAuth, signed with the policy's hash.
//!
//! The RSA key comes in from the caller (the runner generates it with openssl), so this module
//! stays free of randomness: the same key and inputs give the same request.

use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Type};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::ExtendedKeyUsage;
use openssl::x509::{X509Extension, X509NameBuilder, X509ReqBuilder};
use sha2::{Digest, Sha256};

use super::policy::HashAlg;

/// The Microsoft extension that carries the MDM DeviceID.
pub const DEVICE_ID_EXTENSION_OID: &str = "1.3.6.1.4.1.311.66.1.0";

/// Why a request could not be built (an openssl failure: our side, not the server's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("building the certificate request: {0}")]
pub struct CsrError(pub String);

impl From<openssl::error::ErrorStack> for CsrError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        CsrError(e.to_string())
    }
}

/// The subject CN: a GUID-like prefix, `!`, the DeviceID. The prefix is derived from the
/// DeviceID (SHA-256) so that a seeded fleet gets the same names on every run.
pub fn subject_cn(device_id: &str) -> String {
    let h = Sha256::digest(format!("mdmsim-enrollment:{device_id}").as_bytes());
    let x = hex::encode_upper(&h[..16]);
    format!("{}-{}-{}-{}-{}!{device_id}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// Builds and signs the request; returns its DER.
pub fn build_csr(key: &PKey<Private>, device_id: &str, hash: HashAlg) -> Result<Vec<u8>, CsrError> {
    let mut name = X509NameBuilder::new()?;
    // GUID, `!` and a 32-digit DeviceID make 69 characters, more than the 64 of X.520's bound
    // that openssl checks for text entries; the real client does not keep to it either, so the
    // entry is set as a UTF8String directly.
    name.append_entry_by_nid_with_type(Nid::COMMONNAME, &subject_cn(device_id), Asn1Type::UTF8STRING)?;
    let name = name.build();
    let mut req = X509ReqBuilder::new()?;
    req.set_version(0)?;
    req.set_subject_name(&name)?;
    req.set_pubkey(key)?;
    let mut exts = Stack::new()?;
    exts.push(ExtendedKeyUsage::new().client_auth().build()?)?;
    // The DeviceID as a DER UTF8String, the form MDM servers' test code reads back.
    let id = device_id.as_bytes();
    if id.len() > 127 {
        return Err(CsrError(format!("DeviceID of {} bytes is too long", id.len())));
    }
    let mut der = vec![0x0c, id.len() as u8];
    der.extend_from_slice(id);
    let oid = Asn1Object::from_str(DEVICE_ID_EXTENSION_OID)?;
    let value = Asn1OctetString::new_from_bytes(&der)?;
    exts.push(X509Extension::new_from_der(&oid, false, &value)?)?;
    req.add_extensions(&exts)?;
    req.sign(key, hash.digest())?;
    Ok(req.build().to_der()?)
}

#[cfg(test)]
mod tests {
    use openssl::rsa::Rsa;
    use openssl::x509::X509Req;

    use super::*;

    #[test]
    fn csr_verifies_and_has_the_windows_shape() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let id = "0123456789ABCDEF0123456789ABCDEF";
        let der = build_csr(&key, id, HashAlg::Sha256).unwrap();
        let req = X509Req::from_der(&der).unwrap();
        assert!(req.verify(&key).unwrap(), "signature must verify with the key");
        let cn = req.subject_name().entries().next().unwrap().data().to_string().unwrap().to_string();
        assert!(cn.ends_with(&format!("!{id}")), "{cn}");
        assert_eq!(cn.split('!').next().unwrap().split('-').map(str::len).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert_eq!(req.public_key().unwrap().bits(), 2048);
        let text = String::from_utf8(req.to_text().unwrap()).unwrap();
        assert!(text.contains("sha256WithRSAEncryption"), "{text}");
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
        assert!(text.contains(DEVICE_ID_EXTENSION_OID), "{text}");
        assert!(text.contains(id), "the extension carries the DeviceID:\n{text}");
        // SHA-1 when the policy says so (or there is no policy).
        let der = build_csr(&key, id, HashAlg::Sha1).unwrap();
        let text = String::from_utf8(X509Req::from_der(&der).unwrap().to_text().unwrap()).unwrap();
        assert!(text.contains("sha1WithRSAEncryption"), "{text}");
        assert_eq!(subject_cn(id), subject_cn(id));
    }
}
