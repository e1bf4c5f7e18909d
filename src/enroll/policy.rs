//! MS-XCEP GetPolicies (MS-XCEP): the request and the two fields the Windows client
//! honours, the minimal key length and the hash algorithm (resolved through `oIDs/oID`).

use std::fmt;

use super::soap::{self, envelope};
use super::wstep::AuthToken;
use super::{EnrollFinding, Malformed, ResponseError};

/// SOAP action of GetPolicies.
pub const GET_POLICIES_ACTION: &str =
    "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies";
const NS_POLICY: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy";

/// The smallest RSA key the emulator makes, whatever a policy allows: what Windows uses when
/// there is no policy (MS-MDE2 §3.1 discovery), and the floor of today's CAs.
const MIN_KEY_BITS: u32 = 2048;
/// The largest key length accepted from a policy; more is refused rather than spending minutes
/// generating a key.
const MAX_KEY_BITS: u32 = 8192;

/// The hash a CSR is signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum HashAlg {
    /// What the real client uses when no policy names a hash (MS-XCEP).
    #[default]
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// The hash for an OID: the plain hash OIDs and the RSA-signature OIDs that imply one.
    pub fn from_oid(oid: &str) -> Option<HashAlg> {
        Some(match oid.trim() {
            "1.3.14.3.2.26" | "1.3.14.3.2.29" | "1.2.840.113549.1.1.5" => HashAlg::Sha1,
            "2.16.840.1.101.3.4.2.1" | "1.2.840.113549.1.1.11" => HashAlg::Sha256,
            "2.16.840.1.101.3.4.2.2" | "1.2.840.113549.1.1.12" => HashAlg::Sha384,
            "2.16.840.1.101.3.4.2.3" | "1.2.840.113549.1.1.13" => HashAlg::Sha512,
            _ => return None,
        })
    }

    /// The openssl digest.
    pub fn digest(self) -> openssl::hash::MessageDigest {
        use openssl::hash::MessageDigest;
        match self {
            HashAlg::Sha1 => MessageDigest::sha1(),
            HashAlg::Sha256 => MessageDigest::sha256(),
            HashAlg::Sha384 => MessageDigest::sha384(),
            HashAlg::Sha512 => MessageDigest::sha512(),
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashAlg::Sha1 => "SHA-1",
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha384 => "SHA-384",
            HashAlg::Sha512 => "SHA-512",
        })
    }
}

/// The certificate policy the CSR follows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// RSA modulus length to generate (the policy's minimum, at least 2048).
    pub key_bits: u32,
    pub hash: HashAlg,
    /// The OID the policy named, if any.
    pub hash_oid: Option<String>,
    /// What the response got wrong in a way Windows tolerates (a nil response).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<EnrollFinding>,
}

impl Default for Policy {
    /// No policy service: 2048-bit RSA, SHA-1 (MS-MDE2 §3.1 discovery).
    fn default() -> Self {
        Policy { key_bits: MIN_KEY_BITS, hash: HashAlg::Sha1, hash_oid: None, findings: Vec::new() }
    }
}

impl Policy {
    /// What Windows enrolls with when the policy service answers without a policy: it shows a
    /// warning and goes on with a 2048-bit RSA key and SHA-256.
    pub fn windows_fallback(finding: EnrollFinding) -> Policy {
        Policy { key_bits: MIN_KEY_BITS, hash: HashAlg::Sha256, hash_oid: None, findings: vec![finding] }
    }
}

/// The GetPolicies envelope for `url`, authenticated with `token`.
pub fn get_policies_body(message_id: &str, url: &str, token: &AuthToken) -> String {
    let body = format!(
        concat!(
            r#"<GetPolicies xmlns="{ns}"><client><lastUpdate xsi:nil="true"/>"#,
            r#"<preferredLanguage xsi:nil="true"/></client><requestFilter xsi:nil="true"/></GetPolicies>"#
        ),
        ns = NS_POLICY
    );
    envelope(GET_POLICIES_ACTION, message_id, url, Some(&token.security_header()), &body)
}

/// Reads a GetPoliciesResponse: the first policy's minimal key length and hash.
pub fn parse_get_policies_response(text: &str) -> Result<Policy, ResponseError> {
    let resp = soap::open(text, "GetPoliciesResponse")?;
    let Some(policy) = resp.path(&["response", "policies", "policy"]) else {
        // Seen from real servers: `<response xsi:nil="true"/>` (sometimes with an undeclared
        // prefix), or a response with no policy. Windows warns and enrolls with its defaults.
        let sent = match resp.child("response") {
            Some(r) if r.is_nil() => "a nil <response> (xsi:nil=\"true\") in GetPoliciesResponse".to_string(),
            Some(_) => "a GetPoliciesResponse with no <policies>/<policy>".to_string(),
            None => "a GetPoliciesResponse with no <response>".to_string(),
        };
        return Ok(Policy::windows_fallback(EnrollFinding::new(
            "policy-nil",
            sent,
            "shows a warning and enrolls with its default policy: a 2048-bit RSA key and a SHA-256 signature",
        )));
    };
    let attrs = policy.child("attributes").ok_or_else(|| Malformed::missing(policy, "attributes"))?;
    let mut out = Policy::default();
    if let Some(el) = attrs.path(&["privateKeyAttributes", "minimalKeyLength"]).filter(|e| !e.is_nil()) {
        let bits: u32 =
            el.value().parse().map_err(|_| Malformed::at(el, format!("{:?} is not a key length", el.value())))?;
        if bits > MAX_KEY_BITS {
            return Err(Malformed::at(el, format!("{bits} bits is more than the {MAX_KEY_BITS} mdmsim accepts")).into());
        }
        out.key_bits = bits.max(MIN_KEY_BITS);
    }
    if let Some(reference) = attrs.child_value("hashAlgorithmOIDReference") {
        let el = attrs.child("hashAlgorithmOIDReference").unwrap_or(attrs);
        let oids = resp.child("oIDs").ok_or_else(|| Malformed::missing(&resp, "oIDs"))?;
        let oid = oids
            .children_named("oID")
            .find(|o| o.child_value("oIDReferenceID") == Some(reference))
            .and_then(|o| o.child_value("value"))
            .ok_or_else(|| Malformed::at(el, format!("reference {reference} matches no <oIDs>/<oID>")))?;
        out.hash = HashAlg::from_oid(oid)
            .ok_or_else(|| Malformed::at(el, format!("hash algorithm OID {oid} is not one mdmsim can sign with")))?;
        out.hash_oid = Some(oid.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enroll::{Secret, xml};

    fn fixture() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/enroll/get-policies-response.xml"))
            .unwrap()
    }

    #[test]
    fn key_length_and_hash_come_from_the_referenced_oid() {
        let p = parse_get_policies_response(&fixture()).unwrap();
        assert_eq!(
            p,
            Policy {
                key_bits: 3072,
                hash: HashAlg::Sha256,
                hash_oid: Some("2.16.840.1.101.3.4.2.1".into()),
                findings: Vec::new()
            }
        );
        // The Learn sample's reference 0 is sha1RSASign.
        let p = parse_get_policies_response(
            &fixture().replace(">1</hashAlgorithmOIDReference>", ">0</hashAlgorithmOIDReference>"),
        )
        .unwrap();
        assert_eq!(p.hash, HashAlg::Sha1);
    }

    #[test]
    fn dangling_reference_and_silly_key_length_are_named() {
        let text = fixture().replace(">1</hashAlgorithmOIDReference>", ">7</hashAlgorithmOIDReference>");
        let Err(ResponseError::Malformed(m)) = parse_get_policies_response(&text) else { panic!() };
        assert_eq!(m.element, "hashAlgorithmOIDReference");
        let text = fixture().replace(">3072<", ">65536<");
        let Err(ResponseError::Malformed(m)) = parse_get_policies_response(&text) else { panic!() };
        assert_eq!(m.element, "minimalKeyLength");
        // Absent key length and hash: the defaults.
        let text = fixture().replace("<minimalKeyLength>3072</minimalKeyLength>", "").replace(
            "<hashAlgorithmOIDReference>1</hashAlgorithmOIDReference>",
            r#"<hashAlgorithmOIDReference xsi:nil="true"/>"#,
        );
        assert_eq!(parse_get_policies_response(&text).unwrap(), Policy::default());
    }

    /// A minimal server's answer: a nil response, its `xsi:` prefix never declared. Windows
    /// warns and enrolls with RSA 2048 and SHA-256; so does mdmsim, with a finding.
    #[test]
    fn nil_response_falls_back_to_the_windows_defaults() {
        let text = concat!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>"#,
            r#"<GetPoliciesResponse xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy">"#,
            r#"<response xsi:nil="true"/><cAs xsi:nil="true"/><oIDs xsi:nil="true"/></GetPoliciesResponse>"#,
            r#"</s:Body></s:Envelope>"#
        );
        let p = parse_get_policies_response(text).unwrap();
        assert_eq!((p.key_bits, p.hash), (2048, HashAlg::Sha256));
        assert_eq!(p.findings.len(), 1);
        assert_eq!(p.findings[0].what, "policy-nil");
        assert!(p.findings[0].sent.contains("nil"), "{}", p.findings[0]);
        let empty = text.replace(r#"<response xsi:nil="true"/>"#, "<response/>");
        assert!(parse_get_policies_response(&empty).unwrap().findings[0].sent.contains("no <policies>"));
    }

    #[test]
    fn request_has_the_nil_filters_and_the_token() {
        let tok = AuthToken::OnPremise { username: "u@example.com".into(), password: Secret::new("p<w") };
        let root = xml::parse(&get_policies_body("m", "https://x/p", &tok)).unwrap();
        let gp = root.path(&["Body", "GetPolicies"]).unwrap();
        assert!(gp.path(&["client", "lastUpdate"]).unwrap().is_nil());
        assert!(gp.child("requestFilter").unwrap().is_nil());
        let pw = root.path(&["Header", "Security", "UsernameToken", "Password"]).unwrap();
        assert_eq!(pw.value(), "p<w");
    }
}
