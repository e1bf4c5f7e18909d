//! The provisioning document of an enrollment (`wap-provisioningdoc`, MS-MDE2 §2.2.9.1 provisioning document): parsed
//! into a typed [`Provisioning`], and turned into the DM-tree writes the device applies.
//!
//! Certificates are kept as DER (the runner writes them to the store as PEM and uses them for
//! TLS); the w7 APPLICATION goes to `./SyncML/DMAcc/<AccountUID>` (the mapping of the DMAcc
//! DDF: AccountUID is the SHA-256 of PROVIDER-ID, AppAddr and Port named `1`, AppAuth named
//! `CLCRED`/`SRVCRED`); `DMClient` characteristics go to `./Vendor/MSFT/DMClient/...`. The
//! writes are SyncML `Add` commands executed by the tree engine, so every CSP's own rules
//! apply to provisioned values exactly as to server commands.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::pkey::{PKeyRef, Private};
use openssl::x509::X509;
use sha2::{Digest, Sha256};

use super::appauth::{AuthType, Credentials};
use super::xml::{self, Element};
use super::{EnrollFinding, Malformed};
use crate::syncml::{Command, Item, ItemCmd, Meta, StatusCode};
use crate::tree::{Tree, encode_segment};

/// w7 `AAUTHLEVEL` of the client's own credentials (DMAcc `CLCRED`).
pub const APPSRV: &str = "APPSRV";
/// w7 `AAUTHLEVEL` of the server's credentials (DMAcc `SRVCRED`).
pub const CLIENT: &str = "CLIENT";

/// One certificate of the `CertificateStore` characteristic.
#[derive(Clone, PartialEq, Eq)]
pub struct CertEntry {
    /// Store path: `Root/System`, `CA/System`, `My/User` or `My/System`.
    pub store: String,
    /// The characteristic name (the SHA-1 thumbprint the server computed).
    pub thumbprint: String,
    pub der: Vec<u8>,
}

impl std::fmt::Debug for CertEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertEntry({}/{}, {} bytes)", self.store, self.thumbprint, self.der.len())
    }
}

impl CertEntry {
    /// The certificate (checked at parse time, so this only fails on memory errors).
    pub fn x509(&self) -> Result<X509, openssl::error::ErrorStack> {
        X509::from_der(&self.der)
    }

    /// PEM text of the certificate.
    pub fn pem(&self) -> Result<String, openssl::error::ErrorStack> {
        Ok(String::from_utf8_lossy(&self.x509()?.to_pem()?).into_owned())
    }

    /// True when the certificate's public key is the public half of `key`.
    pub fn matches_key(&self, key: &PKeyRef<Private>) -> bool {
        self.x509().and_then(|c| c.public_key()).is_ok_and(|pk| pk.public_eq(key))
    }

    /// The subject CN, if any.
    pub fn subject_cn(&self) -> Option<String> {
        let cert = self.x509().ok()?;
        let entry = cert.subject_name().entries_by_nid(openssl::nid::Nid::COMMONNAME).next()?;
        entry.data().to_string().ok()
    }
}

/// The w7 APPLICATION characteristic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct W7App {
    pub provider_id: String,
    pub name: Option<String>,
    /// The management URL.
    pub addr: String,
    pub conn_retry_freq: Option<u32>,
    pub initial_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub backcompat_retry_disabled: bool,
    pub default_encoding: Option<String>,
    pub ssl_client_cert_search_criteria: Option<String>,
    pub role: Option<String>,
    pub protover: Option<String>,
    pub use_hw_dev_id: bool,
    /// `AAUTHLEVEL=APPSRV`: what the client sends (DMAcc CLCRED).
    pub client_cred: Option<Credentials>,
    /// `AAUTHLEVEL=CLIENT`: what the server must show (DMAcc SRVCRED).
    pub server_cred: Option<Credentials>,
    /// What the APPLICATION characteristic got wrong in a way Windows tolerates.
    pub notes: Vec<EnrollFinding>,
}

/// `My/WSTEP/Renew`: the certificate renewal settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Renew {
    pub robo_support: Option<bool>,
    pub renew_period_days: Option<u32>,
    pub retry_interval_days: Option<u32>,
}

/// One provisioned value of a CSP other than w7 (DMClient): its LocURI below the CSP root,
/// its value and the `datatype` the document gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvValue {
    /// Decoded segments below `./Vendor/MSFT/DMClient` (`Provider`, `Fleet`, `Poll`, ...).
    pub path: Vec<String>,
    pub value: String,
    pub datatype: Option<String>,
}

/// A parsed provisioning document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioning {
    pub roots: Vec<CertEntry>,
    pub intermediates: Vec<CertEntry>,
    /// The issued client certificate (`My/User` or `My/System`).
    pub client_cert: CertEntry,
    pub renew: Option<Renew>,
    pub app: W7App,
    /// DMClient values (Provider/<ID>/Poll/..., EntDMID, ...).
    pub dmclient: Vec<ProvValue>,
    /// Top-level characteristics mdmsim does not apply, by type (reported, not dropped silently).
    pub ignored: Vec<String>,
}

/// The DMAcc AccountUID of a w7 account: the SHA-256 of PROVIDER-ID (DMAcc DDF), upper hex.
pub fn account_uid(provider_id: &str) -> String {
    hex::encode_upper(Sha256::digest(provider_id.as_bytes()))
}

fn parm_err(parm: &Element, name: &str, problem: impl Into<String>) -> Malformed {
    Malformed { element: format!("parm name=\"{name}\""), offset: parm.offset, problem: problem.into() }
}

fn parms(ch: &Element) -> impl Iterator<Item = (&Element, &str, Option<&str>)> {
    ch.children_named("parm").map(|p| (p, p.attr("name").unwrap_or(""), p.attr("value")))
}

fn characteristics<'a>(ch: &'a Element) -> impl Iterator<Item = (&'a Element, &'a str)> + 'a {
    ch.children_named("characteristic").map(|c| (c, c.attr("type").unwrap_or("")))
}

fn num<T: std::str::FromStr>(parm: &Element, name: &str, value: Option<&str>) -> Result<T, Malformed> {
    let v = value.unwrap_or("").trim();
    v.parse().map_err(|_| parm_err(parm, name, format!("{v:?} is not a number")))
}

/// Parses a provisioning document.
pub fn parse_provisioning(text: &str) -> Result<Provisioning, Malformed> {
    let root = xml::parse(text)?;
    if !root.name.eq_ignore_ascii_case("wap-provisioningdoc") {
        return Err(Malformed::at(&root, "expected <wap-provisioningdoc>"));
    }
    let mut roots = Vec::new();
    let mut intermediates = Vec::new();
    let mut client: Option<CertEntry> = None;
    let mut renew = None;
    let mut app: Option<W7App> = None;
    let mut dmclient = Vec::new();
    let mut ignored = Vec::new();
    for (ch, ty) in characteristics(&root) {
        match ty.to_ascii_uppercase().as_str() {
            "CERTIFICATESTORE" => {
                for (store, store_ty) in characteristics(ch) {
                    if !["Root", "CA", "My"].iter().any(|s| s.eq_ignore_ascii_case(store_ty)) {
                        ignored.push(format!("CertificateStore/{store_ty}"));
                        continue;
                    }
                    for (sub, sub_ty) in characteristics(store) {
                        if store_ty.eq_ignore_ascii_case("My") && sub_ty.eq_ignore_ascii_case("WSTEP") {
                            renew = Some(parse_renew(sub)?);
                            continue;
                        }
                        let path = format!("{store_ty}/{sub_ty}");
                        for (cert_ch, thumb) in characteristics(sub) {
                            if thumb.eq_ignore_ascii_case("PrivateKeyContainer") {
                                continue;
                            }
                            let entry = parse_cert(cert_ch, &path, thumb)?;
                            match store_ty.to_ascii_uppercase().as_str() {
                                "ROOT" => roots.push(entry),
                                "CA" => intermediates.push(entry),
                                "MY" if client.is_none() => client = Some(entry),
                                _ => return Err(Malformed::at(cert_ch, "a second client certificate in My")),
                            }
                        }
                    }
                }
            }
            "APPLICATION" => {
                let a = parse_app(ch)?;
                if app.is_some() {
                    // DMAcc DDF: the first w7 account is used, others are ignored.
                    ignored.push(format!("APPLICATION {}", a.provider_id));
                } else {
                    app = Some(a);
                }
            }
            "DMCLIENT" => walk_values(ch, &mut Vec::new(), &mut dmclient),
            _ => ignored.push(ty.to_string()),
        }
    }
    let client_cert =
        client.ok_or_else(|| Malformed::at(&root, "no client certificate in CertificateStore/My/User or My/System"))?;
    let app = app.ok_or_else(|| Malformed::at(&root, "no w7 APPLICATION characteristic"))?;
    Ok(Provisioning { roots, intermediates, client_cert, renew, app, dmclient, ignored })
}

fn parse_cert(ch: &Element, store: &str, thumb: &str) -> Result<CertEntry, Malformed> {
    let (parm, _, value) = parms(ch)
        .find(|(_, n, _)| n.eq_ignore_ascii_case("EncodedCertificate"))
        .ok_or_else(|| Malformed::at(ch, format!("certificate {store}/{thumb} has no EncodedCertificate")))?;
    let compact: String = value.unwrap_or("").chars().filter(|c| !c.is_whitespace()).collect();
    let der = B64
        .decode(compact.as_bytes())
        .map_err(|e| parm_err(parm, "EncodedCertificate", format!("certificate {store}/{thumb} is not base64: {e}")))?;
    X509::from_der(&der).map_err(|_| {
        parm_err(parm, "EncodedCertificate", format!("certificate {store}/{thumb} is not a DER X.509 certificate"))
    })?;
    Ok(CertEntry { store: store.to_string(), thumbprint: thumb.to_string(), der })
}

fn parse_renew(wstep: &Element) -> Result<Renew, Malformed> {
    let mut r = Renew::default();
    if let Some((renew, _)) = characteristics(wstep).find(|(_, t)| t.eq_ignore_ascii_case("Renew")) {
        for (p, name, value) in parms(renew) {
            match name {
                "ROBOSupport" => r.robo_support = Some(value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))),
                "RenewPeriod" => r.renew_period_days = Some(num(p, name, value)?),
                "RetryInterval" => r.retry_interval_days = Some(num(p, name, value)?),
                _ => {}
            }
        }
    }
    Ok(r)
}

/// The `AAUTHLEVEL` of an APPAUTH characteristic, wherever the parm stands in it.
fn level_of(auth: &Element) -> String {
    parms(auth)
        .find(|(_, name, _)| name.eq_ignore_ascii_case("AAUTHLEVEL"))
        .and_then(|(_, _, v)| v)
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase()
}

fn parse_app(ch: &Element) -> Result<W7App, Malformed> {
    let mut a = W7App::default();
    let mut appid = None;
    for (p, name, value) in parms(ch) {
        let text = || value.unwrap_or("").trim().to_string();
        match name.to_ascii_uppercase().as_str() {
            "APPID" => appid = Some(text()),
            "PROVIDER-ID" => a.provider_id = text(),
            "NAME" => a.name = Some(text()),
            "ADDR" => a.addr = text(),
            "CONNRETRYFREQ" => a.conn_retry_freq = Some(num(p, name, value)?),
            "INITIALBACKOFFTIME" => a.initial_backoff_ms = Some(num(p, name, value)?),
            "MAXBACKOFFTIME" => a.max_backoff_ms = Some(num(p, name, value)?),
            "BACKCOMPATRETRYDISABLED" => a.backcompat_retry_disabled = true,
            "DEFAULTENCODING" => a.default_encoding = Some(text()),
            "SSLCLIENTCERTSEARCHCRITERIA" => a.ssl_client_cert_search_criteria = Some(text()),
            "ROLE" => a.role = Some(text()),
            "PROTOVER" => a.protover = Some(text()),
            "USEHWDEVID" => a.use_hw_dev_id = true,
            _ => {}
        }
    }
    match appid.as_deref() {
        Some(id) if id.eq_ignore_ascii_case("w7") => {}
        other => return Err(Malformed::at(ch, format!("APPLICATION APPID is {other:?}, expected \"w7\""))),
    }
    if a.provider_id.is_empty() {
        return Err(Malformed::at(ch, "APPLICATION has no PROVIDER-ID"));
    }
    if a.addr.is_empty() {
        return Err(Malformed::at(ch, "APPLICATION has no ADDR (the management URL)"));
    }
    for (auth, _) in characteristics(ch).filter(|(_, t)| t.eq_ignore_ascii_case("APPAUTH")) {
        let mut level = String::new();
        let mut ty = None;
        let mut cred = Credentials::default();
        for (p, name, value) in parms(auth) {
            let v = value.unwrap_or("").trim();
            match name.to_ascii_uppercase().as_str() {
                "AAUTHLEVEL" => level = v.to_ascii_uppercase(),
                "AAUTHTYPE" => {
                    ty = Some(
                        AuthType::parse(v).ok_or_else(|| parm_err(p, name, format!("{v:?} is not BASIC or DIGEST")))?,
                    )
                }
                "AAUTHNAME" => cred.name = v.to_string(),
                "AAUTHSECRET" => cred.secret = super::Secret::new(v),
                // Windows takes AAUTHDATA as an opaque nonce: base64 when it decodes, else its
                // bytes. Many public examples (and servers copying them) send the literal word
                // `nonce`, expecting to challenge with a fresh nonce in the first session.
                "AAUTHDATA" => match B64.decode(v.as_bytes()) {
                    Ok(bytes) => cred.nonce = bytes,
                    Err(_) => {
                        cred.nonce = v.as_bytes().to_vec();
                        let shown: String = v.chars().take(40).collect();
                        a.notes.push(EnrollFinding::new(
                            "nonce-not-base64",
                            format!("APPAUTH {} AAUTHDATA {shown:?}, which is not base64", level_of(auth)),
                            "takes the value as an opaque nonce and uses its bytes; the first digest \
                             only matches a server that hashes the same bytes (or that challenges with \
                             a fresh NextNonce)",
                        ));
                    }
                },
                _ => {}
            }
        }
        cred.auth_type = ty.unwrap_or(AuthType::Digest);
        match level.as_str() {
            APPSRV => a.client_cred = Some(cred),
            CLIENT => a.server_cred = Some(cred),
            other => return Err(Malformed::at(auth, format!("APPAUTH AAUTHLEVEL {other:?} is not APPSRV or CLIENT"))),
        }
    }
    Ok(a)
}

fn walk_values(ch: &Element, path: &mut Vec<String>, out: &mut Vec<ProvValue>) {
    for (parm, name, value) in parms(ch) {
        let mut p = path.clone();
        p.push(name.to_string());
        let datatype = parm.attr("datatype").map(str::to_string);
        out.push(ProvValue { path: p, value: value.unwrap_or("").to_string(), datatype });
    }
    for (sub, ty) in characteristics(ch) {
        path.push(ty.to_string());
        walk_values(sub, path, out);
        path.pop();
    }
}

/// A provisioned value that the tree refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provisioning {loc_uri}: {status}")]
pub struct ApplyError {
    pub loc_uri: String,
    pub status: StatusCode,
}

fn add(loc_uri: String, format: &str, value: &str) -> Command {
    Command::Add(ItemCmd {
        cmd_id: String::new(),
        items: vec![Item {
            target: Some(loc_uri),
            meta: Some(Box::new(Meta::format(format))),
            data: Some(value.to_string()),
            ..Item::default()
        }],
        ..ItemCmd::default()
    })
}

impl Provisioning {
    /// The DMAcc AccountUID the w7 APPLICATION maps to.
    pub fn account_uid(&self) -> String {
        account_uid(&self.app.provider_id)
    }

    /// Where the document departs from what MS-MDE2 and Learn ask of servers, in words a server
    /// developer can act on (MS-MDE2 §2.2.9.1 provisioning document). Empty for a conforming document. Windows may
    /// still enroll with some of these; mdmsim reports them rather than refusing.
    pub fn findings(&self) -> Vec<EnrollFinding> {
        let mut out = self.app.notes.clone();
        let a = &self.app;
        for (level, cred) in [(APPSRV, &a.client_cred), (CLIENT, &a.server_cred)] {
            match cred {
                None => out.push(EnrollFinding::new(
                    "appauth-missing",
                    format!("an APPLICATION with no APPAUTH block of AAUTHLEVEL={level}"),
                    "enrolls without application-layer credentials for that direction (MS-MDE2 asks for both blocks)",
                )),
                Some(c) if c.nonce.is_empty() => out.push(EnrollFinding::new(
                    "nonce-missing",
                    format!("APPAUTH {level} with no AAUTHDATA nonce"),
                    "11 fails account setup with 0x80070057 without it",
                )),
                Some(_) => {}
            }
        }
        let providers: std::collections::BTreeSet<&str> = self
            .dmclient
            .iter()
            .filter(|v| v.path.first().map(String::as_str) == Some("Provider"))
            .filter_map(|v| v.path.get(1).map(String::as_str))
            .filter(|p| *p != a.provider_id)
            .collect();
        for p in providers {
            out.push(EnrollFinding::new(
                "provider-mismatch",
                format!("DMClient Provider {p:?}, which is not the w7 PROVIDER-ID {:?}", a.provider_id),
                "keeps the DMClient values under a provider no session uses",
            ));
        }
        for c in self.roots.iter().chain(&self.intermediates).chain(std::iter::once(&self.client_cert)) {
            let actual = hex::encode_upper(sha1(&c.der));
            if !c.thumbprint.eq_ignore_ascii_case(&actual) {
                out.push(EnrollFinding::new(
                    "thumbprint-mismatch",
                    format!(
                        "certificate {}/{} named with a thumbprint that is not its SHA-1 ({actual})",
                        c.store, c.thumbprint
                    ),
                    "stores the certificate under its real thumbprint",
                ));
            }
        }
        out
    }

    /// The tree writes the device applies, as `Add` commands (CmdIDs `1`, `2`, ...): the DMAcc
    /// account, then the DMClient values. `ROLE` is not written: DMAcc `Ext/Microsoft/Role`
    /// allows only Get and Replace (DDF), Windows sets it itself.
    pub fn tree_commands(&self) -> Vec<Command> {
        let a = &self.app;
        let base = format!("./SyncML/DMAcc/{}", self.account_uid());
        let mut cmds =
            vec![add(format!("{base}/AppID"), "chr", "w7"), add(format!("{base}/ServerID"), "chr", &a.provider_id)];
        if let Some(name) = &a.name {
            cmds.push(add(format!("{base}/Name"), "chr", name));
        }
        cmds.push(add(format!("{base}/AppAddr/1/Addr"), "chr", &a.addr));
        cmds.push(add(format!("{base}/AppAddr/1/AddrType"), "chr", "URI"));
        if let Some(port) = explicit_port(&a.addr) {
            cmds.push(add(format!("{base}/AppAddr/1/Port/1/PortNbr"), "chr", &port));
        }
        if let Some(c) = &a.client_cred {
            cmds.push(add(format!("{base}/AAuthPref"), "chr", c.auth_type.as_str()));
        }
        for (obj, cred) in [("CLCRED", &a.client_cred), ("SRVCRED", &a.server_cred)] {
            let Some(c) = cred else { continue };
            let at = format!("{base}/AppAuth/{obj}");
            cmds.push(add(format!("{at}/AAuthLevel"), "chr", obj));
            cmds.push(add(format!("{at}/AAuthType"), "chr", c.auth_type.as_str()));
            if !c.name.is_empty() {
                cmds.push(add(format!("{at}/AAuthName"), "chr", &c.name));
            }
            if !c.secret.is_empty() {
                cmds.push(add(format!("{at}/AAuthSecret"), "chr", c.secret.expose()));
            }
            if !c.nonce.is_empty() {
                cmds.push(add(format!("{at}/AAuthData"), "bin", &B64.encode(&c.nonce)));
            }
        }
        let ext = format!("{base}/Ext/Microsoft");
        let opt = |v: &Option<String>| v.clone();
        for (node, format, value) in [
            ("ProtoVer", "chr", opt(&a.protover)),
            ("DefaultEncoding", "chr", opt(&a.default_encoding)),
            ("UseHwDevID", "bool", a.use_hw_dev_id.then(|| "true".to_string())),
            ("ConnRetryFreq", "int", a.conn_retry_freq.map(|v| v.to_string())),
            ("InitialBackOffTime", "int", a.initial_backoff_ms.map(|v| v.to_string())),
            ("MaxBackOffTime", "int", a.max_backoff_ms.map(|v| v.to_string())),
            ("BackCompatRetryDisabled", "bool", a.backcompat_retry_disabled.then(|| "true".to_string())),
            ("SSLCLIENTCERTSEARCHCRITERIA", "chr", opt(&a.ssl_client_cert_search_criteria)),
        ] {
            if let Some(v) = value {
                cmds.push(add(format!("{ext}/{node}"), format, &v));
            }
        }
        for v in &self.dmclient {
            let path: Vec<String> = v.path.iter().map(|s| encode_segment(s)).collect();
            let format = match v.datatype.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("integer") | Some("int") => "int",
                Some("boolean") | Some("bool") => "bool",
                _ => "chr",
            };
            cmds.push(add(format!("./Vendor/MSFT/DMClient/{}", path.join("/")), format, &v.value));
        }
        for (i, c) in cmds.iter_mut().enumerate() {
            if let Command::Add(a) = c {
                a.cmd_id = (i + 1).to_string();
            }
        }
        cmds
    }

    /// Applies [`Provisioning::tree_commands`] to a device's tree, all or nothing: on the first
    /// refused write everything is rolled back and the error names the LocURI and status.
    ///
    /// A `parm` of a provisioning document sets a value whether or not the node exists: an
    /// `Add` refused with 405 (a node that allows only Replace, like DMClient `UPN`, on
    /// the DMClient CSP page) or 418 (already there) is retried as a `Replace`.
    pub fn apply(&self, tree: &mut Tree<'_>) -> Result<(), ApplyError> {
        let mark = tree.state.mark();
        let effects = tree.effects.len();
        for cmd in self.tree_commands() {
            let mut outcomes = tree.execute(&cmd);
            if let Command::Add(a) = &cmd
                && outcomes.iter().any(|o| matches!(o.code, StatusCode::CommandNotAllowed | StatusCode::AlreadyExists))
            {
                outcomes = tree.execute(&Command::Replace(a.clone()));
            }
            if let Some(bad) = outcomes.iter().find(|o| !o.code.is_success()) {
                tree.state.rollback(mark);
                tree.effects.truncate(effects);
                let loc_uri = match &cmd {
                    Command::Add(a) => a.items.first().and_then(|i| i.target.clone()).unwrap_or_default(),
                    _ => String::new(),
                };
                return Err(ApplyError { loc_uri, status: bad.code });
            }
        }
        Ok(())
    }
}

/// Removes an enrollment's values from a device's tree: the DMAcc account of `provider_id` and
/// `./Vendor/MSFT/DMClient/Provider/<provider_id>` (user-initiated or server-initiated
/// unenrollment, Microsoft's DMClient CSP page, unenrollment). Journalled like any write; returns how many entries went.
pub fn remove_enrollment(state: &mut crate::tree::TreeState, provider_id: &str) -> usize {
    let keys =
        [format!("SyncML/DMAcc/{}", account_uid(provider_id)), format!("Vendor/MSFT/DMClient/Provider/{provider_id}")];
    let before = state.len();
    for k in &keys {
        state.remove_subtree(k);
    }
    before - state.len()
}

fn sha1(der: &[u8]) -> Vec<u8> {
    openssl::hash::hash(openssl::hash::MessageDigest::sha1(), der).map(|d| d.to_vec()).unwrap_or_default()
}

/// The port written in a URL (`https://h:8443/x` -> `8443`), if any.
fn explicit_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let (_, port) = host_port.rsplit_once(':')?;
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host_port.ends_with(']'))
        .then(|| port.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::tree::{Env, Profile, Registry, TreeState};

    fn fixture() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/enroll/provisioning.xml")).unwrap()
    }

    #[test]
    fn fixture_is_read_into_typed_values() {
        let p = parse_provisioning(&fixture()).unwrap();
        assert_eq!(p.roots.len(), 1);
        assert_eq!(p.roots[0].store, "Root/System");
        assert_eq!(p.client_cert.store, "My/User");
        assert_eq!(p.client_cert.subject_cn().as_deref(), Some("0123456789ABCDEF0123456789ABCDEF"));
        assert_eq!(
            p.renew,
            Some(Renew { robo_support: Some(true), renew_period_days: Some(60), retry_interval_days: Some(4) })
        );
        assert_eq!(p.app.provider_id, "Fleet");
        assert_eq!(p.app.addr, "https://mdm.example.com:8443/api/mdm/microsoft/management");
        assert_eq!(
            (p.app.conn_retry_freq, p.app.initial_backoff_ms, p.app.max_backoff_ms),
            (Some(6), Some(30000), Some(120000))
        );
        assert!(p.app.backcompat_retry_disabled);
        assert_eq!(
            p.app.ssl_client_cert_search_criteria.as_deref(),
            Some("Subject=CN%3D0123456789ABCDEF0123456789ABCDEF&Stores=My%5CUser")
        );
        let c = p.app.client_cred.as_ref().unwrap();
        assert_eq!(
            (c.auth_type, c.name.as_str(), c.secret.expose()),
            (AuthType::Digest, "0123456789ABCDEF0123456789ABCDEF", "client-secret-1")
        );
        assert_eq!(c.nonce, b"client-nonce");
        assert_eq!(p.app.server_cred.as_ref().unwrap().secret.expose(), "server-secret-1");
        let poll = p
            .dmclient
            .iter()
            .find(|v| v.path.last().map(String::as_str) == Some("IntervalForRemainingScheduledRetries"))
            .unwrap();
        assert_eq!(poll.path, ["Provider", "Fleet", "Poll", "IntervalForRemainingScheduledRetries"]);
        assert_eq!((poll.value.as_str(), poll.datatype.as_deref()), ("1560", Some("integer")));
        assert!(!format!("{p:?}").contains("client-secret-1"), "Debug must not show secrets");
    }

    #[test]
    fn findings_name_what_the_server_should_fix() {
        let p = parse_provisioning(&fixture()).unwrap();
        assert_eq!(p.findings(), Vec::new());
        let text = fixture()
            .replace(r#"<parm name="AAUTHDATA" value="Y2xpZW50LW5vbmNl" />"#, "")
            .replace(r#"<characteristic type="Fleet">"#, r#"<characteristic type="Other">"#)
            .replace("DDF3545BCB", "0000000000");
        let f = parse_provisioning(&text).unwrap().findings();
        assert_eq!(f.len(), 3, "{f:#?}");
        let f: Vec<String> = f.iter().map(ToString::to_string).collect();
        assert!(f[0].starts_with("nonce-missing") && f[0].contains("APPSRV"), "{f:#?}");
        assert!(f[1].contains(r#""Other""#), "{f:#?}");
        assert!(f[2].contains("DDF3545BCB576CC9C6767E5B619395878B50A60B"), "{f:#?}");
    }

    /// Fleet's provisioning document carries `AAUTHDATA="nonce"` in both APPAUTH blocks: the
    /// enrollment goes on with the word's bytes as the nonce, and one finding per block says so.
    #[test]
    fn literal_nonce_is_taken_as_opaque_bytes_with_a_finding() {
        let text = fixture()
            .replace(
                r#"<parm name="AAUTHDATA" value="Y2xpZW50LW5vbmNl" />"#,
                r#"<parm name="AAUTHDATA" value="nonce" />"#,
            )
            .replace(
                r#"<parm name="AAUTHDATA" value="c2VydmVyLW5vbmNl" />"#,
                r#"<parm name="AAUTHDATA" value="nonce" />"#,
            );
        let p = parse_provisioning(&text).unwrap();
        assert_eq!(p.app.client_cred.as_ref().unwrap().nonce, b"nonce");
        assert_eq!(p.app.server_cred.as_ref().unwrap().nonce, b"nonce");
        let f = p.findings();
        assert_eq!(f.iter().filter(|f| f.what == "nonce-not-base64").count(), 2, "{f:#?}");
        assert!(f.iter().any(|f| f.sent.contains("APPSRV") && f.sent.contains(r#""nonce""#)), "{f:#?}");
        assert!(f.iter().any(|f| f.sent.contains("CLIENT")), "{f:#?}");
    }

    #[test]
    fn broken_documents_name_the_place() {
        let e = parse_provisioning(&fixture().replace(r#"value="w7""#, r#"value="w8""#)).unwrap_err();
        assert!(e.problem.contains("w7"), "{e}");
        let e = parse_provisioning(&fixture().replace("MIID", "@@@@")).unwrap_err();
        assert!(e.element.contains("EncodedCertificate") && e.problem.contains("base64"), "{e}");
        let e = parse_provisioning(&fixture().replace(r#""6""#, r#""six""#)).unwrap_err();
        assert_eq!(e.element, r#"parm name="CONNRETRYFREQ""#);
        let e =
            parse_provisioning(&fixture().replace(r#"<characteristic type="My">"#, r#"<characteristic type="Other">"#))
                .unwrap_err();
        assert!(e.problem.contains("no client certificate"), "{e}");
        assert!(parse_provisioning("<wap-provisioningdoc><characteristic").is_err());
    }

    #[test]
    fn tree_commands_map_w7_to_dmacc_and_dmclient() {
        let p = parse_provisioning(&fixture()).unwrap();
        let uid = account_uid("Fleet");
        let cmds = p.tree_commands();
        let find = |uri: &str| {
            cmds.iter().find_map(|c| match c {
                Command::Add(a) if a.items[0].target.as_deref() == Some(uri) => a.items[0].data.clone(),
                _ => None,
            })
        };
        assert_eq!(find(&format!("./SyncML/DMAcc/{uid}/AppAddr/1/Addr")).as_deref(), Some(p.app.addr.as_str()));
        assert_eq!(find(&format!("./SyncML/DMAcc/{uid}/AppAddr/1/Port/1/PortNbr")).as_deref(), Some("8443"));
        assert_eq!(
            find(&format!("./SyncML/DMAcc/{uid}/AppAuth/CLCRED/AAuthData")).as_deref(),
            Some("Y2xpZW50LW5vbmNl")
        );
        assert_eq!(find(&format!("./SyncML/DMAcc/{uid}/Ext/Microsoft/ConnRetryFreq")).as_deref(), Some("6"));
        assert_eq!(find("./Vendor/MSFT/DMClient/Provider/Fleet/Poll/PollOnLogin").as_deref(), Some("true"));
        let ids: Vec<&str> = cmds.iter().map(|c| c.cmd_id()).collect();
        assert_eq!(ids.first(), Some(&"1"));
        assert_eq!(explicit_port("https://h/x"), None);
        assert_eq!(explicit_port("https://[::1]:99/x"), Some("99".into()));
    }

    #[test]
    fn remove_enrollment_wipes_dmacc_and_the_provider_only() {
        let mut s = TreeState::new();
        let uid = account_uid("Fleet");
        s.set_value(&format!("SyncML/DMAcc/{uid}/ServerID"), "Fleet");
        s.set_value("Vendor/MSFT/DMClient/Provider/Fleet/EntDMID", "x");
        s.set_value("Vendor/MSFT/DMClient/Provider/Other/EntDMID", "y");
        s.set_value("DevInfo/Man", "Contoso");
        assert_eq!(remove_enrollment(&mut s, "Fleet"), 2);
        assert_eq!(
            s.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
            ["DevInfo/Man", "Vendor/MSFT/DMClient/Provider/Other/EntDMID"]
        );
    }

    #[test]
    fn apply_sets_replace_only_and_existing_nodes_with_the_full_registry() {
        let reg = crate::csp::registry();
        let env = Env::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(), Profile::Win10);
        let p = parse_provisioning(&fixture()).unwrap();
        let mut state = TreeState::new();
        // The provider and its Poll node exist already (a pre-provisioned device).
        crate::csp::dmclient::create_provider(&mut state, "Fleet", &Default::default());
        p.apply(&mut Tree::new(&reg, &mut state, &env)).unwrap();
        // UPN is Get/Replace only (the DMClient CSP page): set through the Replace retry.
        assert_eq!(state.value("Vendor/MSFT/DMClient/Provider/Fleet/UPN"), Some("user@example.com"));
        assert_eq!(state.value("Vendor/MSFT/DMClient/Provider/Fleet/EntDeviceName"), Some("user_Windows"));
    }

    #[test]
    fn apply_is_all_or_nothing() {
        let mut reg = Registry::new();
        reg.register(crate::csp::dmacc::DmAcc);
        let env = Env::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(), Profile::Win10);
        let mut p = parse_provisioning(&fixture()).unwrap();
        // No DMClient CSP in this registry: its first node is refused and nothing stays.
        let mut state = TreeState::new();
        let err = p.apply(&mut Tree::new(&reg, &mut state, &env)).unwrap_err();
        assert!(err.loc_uri.starts_with("./Vendor/MSFT/DMClient/"), "{err}");
        assert_eq!(err.status, StatusCode::NotFound);
        assert!(state.is_empty(), "rolled back: {state:?}");
        p.dmclient.clear();
        p.apply(&mut Tree::new(&reg, &mut state, &env)).unwrap();
        let uid = account_uid("Fleet");
        assert_eq!(state.value(&format!("SyncML/DMAcc/{uid}/ServerID")), Some("Fleet"));
        assert_eq!(state.value(&format!("SyncML/DMAcc/{uid}/AppAuth/CLCRED/AAuthSecret")), Some("client-secret-1"));
    }
}
