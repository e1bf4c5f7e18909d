//! The MS-MDE2 enrollment exchange in a transcript: the `enrollment/` folder that `mdmsim
//! enroll --transcript DIR` (and `scenario run --email ... --transcript DIR`, per device) writes,
//! and the masking of its secrets.
//!
//! The folder holds `exchange.json` (one [`EnrollStep`] per HTTP exchange, in order) and, per
//! step, `NN-<step>-request.xml` and `NN-<step>-response.xml`. Before anything is written,
//! [`mask_soap`] replaces the secrets a SOAP message can carry: the password of a
//! UsernameToken, a user token (BinarySecurityToken other than the PKCS#10 request), and, in the
//! provisioning document of the RequestSecurityTokenResponse (base64 in the
//! BinarySecurityToken, decoded here so that it can be read), the APPAUTH secrets and nonces
//! (Microsoft's w7 APPLICATION CSP page: AAUTHSECRET, AAUTHDATA). Certificates and the CSR are
//! public but long: they are shortened to their first characters and their length (the device's
//! enrollment folder keeps them whole), which also keeps every run of the public key's base64 out
//! of the transcript.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::{TranscriptError, io, relative};

/// The folder name of an enrollment exchange inside a transcript folder.
pub const DIR_NAME: &str = "enrollment";

/// The index file of the folder.
pub const INDEX: &str = "exchange.json";

/// What replaces a secret.
pub const MASK: &str = "***";

/// One HTTP exchange of an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollStep {
    /// 1, 2, 3... in the order they happened.
    pub n: u32,
    /// `probe`, `discover`, `policy`, `enroll`, `sign-in`.
    pub step: String,
    pub method: String,
    pub url: String,
    /// The HTTP status of the answer (`None`: no answer, the connection failed).
    pub status: Option<u16>,
    /// The request body file, when there was a body.
    pub request_file: Option<String>,
    /// The response body file, when there was a body.
    pub response_file: Option<String>,
    /// Why the exchange failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The bodies as they were written (filled in when the folder is read, not serialized).
    #[serde(skip)]
    pub request: Option<String>,
    #[serde(skip)]
    pub response: Option<String>,
}

/// One enrollment folder, read back.
#[derive(Debug, Clone, Default)]
pub struct EnrollmentView {
    /// The folder, relative to the transcript root.
    pub path: String,
    pub steps: Vec<EnrollStep>,
    pub problems: Vec<String>,
}

/// Reads an `enrollment/` folder.
pub fn read(root: &Path, dir: &Path) -> Result<EnrollmentView, TranscriptError> {
    let mut v = EnrollmentView { path: relative(root, dir), ..EnrollmentView::default() };
    let index = dir.join(INDEX);
    let text = match std::fs::read_to_string(&index) {
        Ok(t) => t,
        Err(e) => {
            v.problems.push(format!("{}/{INDEX}: cannot read it: {e}", v.path));
            return Ok(v);
        }
    };
    match serde_json::from_str::<Vec<EnrollStep>>(&text) {
        Ok(steps) => v.steps = steps,
        Err(e) => {
            v.problems.push(format!(
                "{}/{INDEX}:{}:{}: does not read as an enrollment exchange: {e}",
                v.path,
                e.line(),
                e.column()
            ));
            return Ok(v);
        }
    }
    for s in &mut v.steps {
        for (file, body) in [(&s.request_file, &mut s.request), (&s.response_file, &mut s.response)] {
            let Some(f) = file else { continue };
            // Only plain names inside the folder: an index cannot make us read elsewhere.
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                v.problems.push(format!("{}/{INDEX}: file name {f:?} is not a file of this folder", v.path));
                continue;
            }
            let p = dir.join(f);
            *body = Some(std::fs::read_to_string(&p).map_err(io(&p))?);
        }
    }
    Ok(v)
}

/// A SOAP message (or sign-in page) with its secrets masked, the provisioning document decoded
/// (see the module doc). Idempotent.
pub fn mask_soap(text: &str) -> String {
    let mut out = text.to_string();
    // UsernameToken password (MS-MDE2 OnPremise).
    out = replace_element_text(&out, "Password", |_| MASK.to_string());
    // BinarySecurityToken: a user token is a secret; the PKCS#10 request is public; the
    // provisioning document is decoded so that it can be read, its secrets masked.
    out = replace_element_text(&out, "BinarySecurityToken", |inner| {
        let t = inner.trim();
        if t == MASK || t.starts_with('<') {
            return inner.to_string();
        }
        match B64.decode(t.as_bytes()).ok().and_then(|b| String::from_utf8(b).ok()) {
            Some(doc) if doc.contains("wap-provisioningdoc") => {
                format!("\n<!-- mdmsim: the base64 provisioning document, decoded -->\n{}\n", mask_provisioning(&doc))
            }
            _ if looks_like_csr(t) => shorten(t),
            _ => MASK.to_string(),
        }
    });
    // The sign-in page hands the token back in a `wresult` field.
    out = mask_attribute_after(&out, "name=\"wresult\"", "value=\"");
    out = mask_after(&out, "field.value = \"", '"');
    mask_provisioning(&out)
}

/// Characters of a certificate or CSR kept in a transcript.
const KEPT: usize = 16;

/// `MIIDKTCCAhGgAwIB… (1188 base64 characters)`; already short text stays.
fn shorten(b64: &str) -> String {
    let b64 = b64.trim();
    if b64.len() <= KEPT * 2 || !b64.is_ascii() {
        return b64.to_string();
    }
    format!("{}… ({} base64 characters)", &b64[..KEPT], b64.len())
}

/// The APPAUTH secrets of a provisioning document (`<parm name="AAUTHSECRET" value="..."/>`),
/// and its certificates shortened.
fn mask_provisioning(doc: &str) -> String {
    let mut out = shorten_attribute_after(doc, "name=\"EncodedCertificate\"", "value=\"");
    for name in ["AAUTHSECRET", "AAUTHDATA"] {
        out = mask_attribute_after(&out, &format!("name=\"{name}\""), "value=\"");
    }
    out
}

/// A PKCS#10 request in base64 starts with a DER SEQUENCE (`MII`).
fn looks_like_csr(b64: &str) -> bool {
    b64.starts_with("MII") || b64.starts_with("MIC")
}

/// Replaces the text of every element whose local name is `local` (any prefix), by `f(text)`.
fn replace_element_text(text: &str, local: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let Some(open) = find_open_tag(rest, local) else {
            out.push_str(rest);
            return out;
        };
        let Some(gt) = rest[open..].find('>').map(|i| open + i + 1) else {
            out.push_str(rest);
            return out;
        };
        if rest[..gt].ends_with("/>") {
            out.push_str(&rest[..gt]);
            rest = &rest[gt..];
            continue;
        }
        let Some(close) = find_close_tag(&rest[gt..], local).map(|i| gt + i) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..gt]);
        out.push_str(&f(&rest[gt..close]));
        rest = &rest[close..];
        // Step past the closing tag so it is not found again.
        let end = rest.find('>').map_or(rest.len(), |i| i + 1);
        out.push_str(&rest[..end]);
        rest = &rest[end..];
    }
}

/// The start of `<local` or `<prefix:local` followed by a space, `>` or `/`.
fn find_open_tag(text: &str, local: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find('<').map(|i| from + i) {
        let name_end = text[i + 1..].find(|c: char| c.is_whitespace() || c == '>' || c == '/').map(|j| i + 1 + j)?;
        let name = &text[i + 1..name_end];
        if !name.starts_with('/') && (name == local || name.rsplit(':').next() == Some(local)) {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

fn find_close_tag(text: &str, local: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("</").map(|i| from + i) {
        let end = text[i..].find('>').map(|j| i + j)?;
        let name = text[i + 2..end].trim();
        if name == local || name.rsplit(':').next() == Some(local) {
            return Some(i);
        }
        from = i + 2;
    }
    None
}

/// Masks the quoted value that follows `value_start` after each `marker` (same tag).
fn mask_attribute_after(text: &str, marker: &str, value_start: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(m) = rest.find(marker) {
        let tag_end = rest[m..].find('>').map_or(rest.len(), |i| m + i);
        // The value may come before the marker in the same tag too.
        let tag_start = rest[..m].rfind('<').unwrap_or(m);
        let tag = &rest[tag_start..tag_end];
        match tag.find(value_start) {
            Some(v) => {
                let v = tag_start + v + value_start.len();
                let close = rest[v..].find('"').map_or(rest.len(), |i| v + i);
                out.push_str(&rest[..v]);
                out.push_str(MASK);
                out.push_str(&rest[close..tag_end]);
            }
            None => out.push_str(&rest[..tag_end]),
        }
        rest = &rest[tag_end..];
    }
    out.push_str(rest);
    out
}

/// Shortens the quoted value that follows `value_start` after each `marker` (same tag).
fn shorten_attribute_after(text: &str, marker: &str, value_start: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(m) = rest.find(marker) {
        let tag_end = rest[m..].find('>').map_or(rest.len(), |i| m + i);
        let tag_start = rest[..m].rfind('<').unwrap_or(m);
        match rest[tag_start..tag_end].find(value_start) {
            Some(v) => {
                let v = tag_start + v + value_start.len();
                let close = rest[v..].find('"').map_or(rest.len(), |i| v + i);
                out.push_str(&rest[..v]);
                out.push_str(&shorten(&rest[v..close]));
                out.push_str(&rest[close..tag_end]);
            }
            None => out.push_str(&rest[..tag_end]),
        }
        rest = &rest[tag_end..];
    }
    out.push_str(rest);
    out
}

/// Masks the text after each `start` up to `end`.
fn mask_after(text: &str, start: &str, end: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(start) {
        let v = i + start.len();
        let close = rest[v..].find(end).map_or(rest.len(), |j| v + j);
        out.push_str(&rest[..v]);
        out.push_str(MASK);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_tokens_and_appauth_secrets_are_masked_csr_and_certificates_kept() {
        let rst = r#"<s:Envelope><s:Header><wsse:Security><wsse:UsernameToken><wsse:Username>demo@x</wsse:Username><wsse:Password wsse:Type="PasswordText">hunter2</wsse:Password></wsse:UsernameToken></wsse:Security></s:Header>
<s:Body><wst:RequestSecurityToken><wsse:BinarySecurityToken ValueType="pkcs10">MIICsDCCAZgCAQAw</wsse:BinarySecurityToken></wst:RequestSecurityToken></s:Body></s:Envelope>"#;
        let m = mask_soap(rst);
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.contains("<wsse:Password wsse:Type=\"PasswordText\">***</wsse:Password>"), "{m}");
        assert!(m.contains("MIICsDCCAZgCAQAw"), "a short CSR stays: {m}");
        let long =
            format!("<wsse:BinarySecurityToken ValueType=\"pkcs10\">MII{}</wsse:BinarySecurityToken>", "A".repeat(400));
        assert!(mask_soap(&long).contains("MIIAAAAAAAAAAAAA… (403 base64 characters)"), "{}", mask_soap(&long));
        assert!(m.contains("demo@x"));

        let token = r#"<wsse:BinarySecurityToken ValueType="...DeviceEnrollmentUserToken">bXlzZWNyZXR0b2tlbg==</wsse:BinarySecurityToken>"#;
        assert!(!mask_soap(token).contains("bXlzZWNyZXR0b2tlbg"), "{}", mask_soap(token));

        let doc = r#"<wap-provisioningdoc><characteristic type="APPLICATION"><parm name="AAUTHNAME" value="dev"/><parm name="AAUTHSECRET" value="s3cret"/><parm name="AAUTHDATA" value="bm9uY2U="/></characteristic><characteristic type="CertificateStore"><parm name="EncodedCertificate" value="MIIDpublicAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"/></characteristic></wap-provisioningdoc>"#;
        let rstr = format!("<wsse:BinarySecurityToken ValueType=\"x\">{}</wsse:BinarySecurityToken>", B64.encode(doc));
        let m = mask_soap(&rstr);
        assert!(m.contains("decoded") && m.contains("<parm name=\"AAUTHNAME\" value=\"dev\"/>"), "{m}");
        assert!(!m.contains("s3cret") && !m.contains("bm9uY2U="), "{m}");
        assert!(m.contains("<parm name=\"AAUTHSECRET\" value=\"***\"/>"), "{m}");
        assert!(m.contains("value=\"MIIDpublicAAAAAA… (48 base64 characters)\""), "{m}");
        assert_eq!(mask_soap(&m), m, "masking twice changes nothing");

        let page = r#"<input type="hidden" name="wresult" value="mdmsim-sts-abc"><script>field.value = "mdmsim-sts-abc";</script>"#;
        let m = mask_soap(page);
        assert!(!m.contains("mdmsim-sts-abc"), "{m}");
    }
}
