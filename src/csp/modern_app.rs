//! EnterpriseModernAppManagement's behaviour (Microsoft's EnterpriseModernAppManagement CSP and
//! "Enterprise app management" pages); its nodes come from its DDF facts (`ddf_csp`), plus the
//! page's `AppManagement/AppInventoryQuery` and `AppInventoryResults` that the DDF file lacks
//! ([`FACTS`]).
//!
//! # Inventory
//!
//! `AppManagement/<AppStore|nonStore|System>/<PackageFamilyName>/<PackageFullName>/...` hold the
//! packages of the device: the template's `[nodes]` preset them, a hosted install adds one.
//! `Replace AppInventoryQuery` with the page's query, `<Inventory Output="PackageNames|PackageDetails"
//! Source="AppStore|nonStore|System" PackageTypeFilter="Main|Bundle|Framework|Resource"
//! PackageFamilyName="..." Publisher="..."/>` (every attribute optional, `|` lists), and
//! `AppInventoryResults` reads `<Inventory>` with one `<Package .../>` per package that
//! matches: `PackageFamilyName`, `PackageFullName` and, for `PackageDetails` (the default), the
//! package's values as attributes plus `Source`. A query that is not that XML is 400 and leaves
//! the previous one. Microsoft does not document the result schema beyond its names; servers in
//! the wild read the attributes of every element carrying a `PackageFullName`.
//!
//! # Hosted install
//!
//! `Exec AppInstallation/<PackageFamilyName>/HostedInstall` (creating the node when the server
//! did not Add it) with the page's payload, `<Application PackageUri="https://..." DeploymentOptions="0">`
//! (optionally with `<Dependencies><Dependency PackageUri=.../></Dependencies>`), is answered 200
//! and runs on the device's timers: `Status` 1 (INSTALLING) with `ProgressStatus` 0, the
//! download's `ProgressStatus` 100 after [`DOWNLOAD_TIME`], then `Status` 3 (INSTALLED),
//! `LastError` 0, and the package in `AppManagement/nonStore/<PFN>/<PFN's name>_1.0.0.0_x64__<publisher id>`
//! after [`INSTALL_TIME`] more. A payload that is not such XML, or a package family name that is
//! not `Name_PublisherId`, is answered 400 and reads `Status` 2 (FAILED) with `LastError`
//! -2147024809 (0x80070057, E_INVALIDARG) and its reason in `LastErrorDesc`. Bookkeeping lives
//! under `@ModernApp/<Device|User>/<PFN>`.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::ddf_csp::DdfBehaviour;
use crate::syncml::StatusCode;
use crate::tree::{CspCx, NodeRef, WriteOp};

/// The page's inventory nodes the DDF file lacks, in the table's format.
pub const FACTS: &str = "./Device/Vendor/MSFT/EnterpriseModernAppManagement/AppManagement/AppInventoryQuery\tchr\tGARD\t0-1\t\t\t\t10.0.10586\t\t\t\t1.0
./Device/Vendor/MSFT/EnterpriseModernAppManagement/AppManagement/AppInventoryResults\tchr\tG\t1\tP\t\t\t10.0.10586\t\t\t\t1.0
./User/Vendor/MSFT/EnterpriseModernAppManagement/AppManagement/AppInventoryQuery\tchr\tGARD\t0-1\t\t\t\t10.0.10586\t\t\t\t1.0
./User/Vendor/MSFT/EnterpriseModernAppManagement/AppManagement/AppInventoryResults\tchr\tG\t1\tP\t\t\t10.0.10586\t\t\t\t1.0
";

/// From the Exec to the end of the download.
pub const DOWNLOAD_TIME: Duration = Duration::seconds(60);
/// From the end of the download to the package's registration.
pub const INSTALL_TIME: Duration = Duration::seconds(60);
/// E_INVALIDARG as a signed 32-bit HRESULT.
const E_INVALIDARG: i32 = 0x8007_0057_u32 as i32;
const META: &str = "@ModernApp";
const SOURCES: [&str; 3] = ["AppStore", "nonStore", "System"];
/// The package values a `PackageDetails` result carries, in the DDF's order.
const DETAILS: [&str; 13] = [
    "Name",
    "Version",
    "Publisher",
    "Architecture",
    "InstallLocation",
    "IsFramework",
    "IsBundle",
    "InstallDate",
    "ResourceID",
    "PackageStatus",
    "RequiresReinstall",
    "Users",
    "IsProvisioned",
];

/// EnterpriseModernAppManagement's inventory and hosted installs.
pub struct ModernApps;

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_string()
}

fn attrs(s: &BytesStart<'_>) -> Vec<(String, String)> {
    s.attributes()
        .flatten()
        .map(|a| {
            let raw = a.value.to_string();
            (local(a.key.as_ref()), quick_xml::escape::unescape(&raw).map(|c| c.into_owned()).unwrap_or(raw))
        })
        .collect()
}

/// The first element of `xml` (its name and attributes) when `xml` is well-formed.
fn root_element(xml: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut reader = Reader::from_str(xml.trim());
    reader.config_mut().check_end_names = true;
    let mut root = None;
    loop {
        match reader.read_event().ok()? {
            Event::Start(s) | Event::Empty(s) if root.is_none() => root = Some((local(s.name().as_ref()), attrs(&s))),
            Event::Eof => return root,
            _ => {}
        }
    }
}

/// A checked inventory query.
struct Query {
    details: bool,
    sources: Vec<String>,
    types: Vec<String>,
    family: Option<String>,
    publisher: Option<String>,
}

fn query(xml: &str) -> Option<Query> {
    let (name, a) = root_element(xml)?;
    if name != "Inventory" {
        return None;
    }
    let get = |k: &str| a.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let list = |k: &str| {
        get(k).map(|v| v.split('|').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect::<Vec<_>>())
    };
    let outputs = list("Output").unwrap_or_else(|| vec!["PackageDetails".into()]);
    if !outputs.iter().all(|o| ["PackageNames", "PackageDetails", "RequiresReinstall"].contains(&o.as_str())) {
        return None;
    }
    let sources = list("Source").unwrap_or_default();
    if !sources.iter().all(|s| SOURCES.contains(&s.as_str())) {
        return None;
    }
    let types = list("PackageTypeFilter").unwrap_or_default();
    if !types.iter().all(|t| ["Main", "Bundle", "Framework", "Resource"].contains(&t.as_str())) {
        return None;
    }
    Some(Query {
        details: outputs.iter().any(|o| o == "PackageDetails"),
        sources,
        types,
        family: get("PackageFamilyName"),
        publisher: get("Publisher"),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn results(cx: &CspCx<'_>) -> String {
    let q = cx.value("AppManagement/AppInventoryQuery").and_then(query).unwrap_or(Query {
        details: true,
        sources: Vec::new(),
        types: Vec::new(),
        family: None,
        publisher: None,
    });
    let mut out = String::from("<Inventory>");
    for source in SOURCES.iter().filter(|s| q.sources.is_empty() || q.sources.iter().any(|x| x == *s)) {
        for family in cx.children(&format!("AppManagement/{source}")) {
            if family == "ReleaseManagement" || q.family.as_ref().is_some_and(|f| *f != family) {
                continue;
            }
            for full in cx.children(&format!("AppManagement/{source}/{family}")) {
                let base = format!("AppManagement/{source}/{family}/{full}");
                if !cx.exists(&format!("{base}/Name")) && !cx.exists(&format!("{base}/Version")) {
                    continue;
                }
                let value = |k: &str| cx.value(&format!("{base}/{k}")).unwrap_or("").to_string();
                if q.publisher.as_ref().is_some_and(|p| *p != value("Publisher")) {
                    continue;
                }
                let kind = if value("IsFramework") == "1" {
                    "Framework"
                } else if value("IsBundle") == "1" {
                    "Bundle"
                } else {
                    "Main"
                };
                if !q.types.is_empty() && !q.types.iter().any(|t| t == kind) {
                    continue;
                }
                out.push_str(&format!(
                    r#"<Package PackageFamilyName="{}" PackageFullName="{}""#,
                    esc(&family),
                    esc(&full)
                ));
                if q.details {
                    for k in DETAILS {
                        out.push_str(&format!(r#" {k}="{}""#, esc(&value(k))));
                    }
                    out.push_str(&format!(r#" Source="{source}""#));
                }
                out.push_str("/>");
            }
        }
    }
    out.push_str("</Inventory>");
    out
}

/// The scope word of a CSP context.
fn scope_word(cx: &CspCx<'_>) -> &'static str {
    if cx.base.starts_with("User/") { "User" } else { "Device" }
}

/// Why a hosted install cannot start, if it cannot.
fn refusal(pfn: &str, data: Option<&str>) -> Option<String> {
    let Some((name, publisher)) = pfn.rsplit_once('_') else {
        return Some(format!("{pfn} is not a package family name (Name_PublisherId)"));
    };
    if name.is_empty() || publisher.is_empty() {
        return Some(format!("{pfn} is not a package family name (Name_PublisherId)"));
    }
    let Some((root, a)) = data.and_then(root_element) else {
        return Some("the HostedInstall data is not XML".into());
    };
    if root != "Application" {
        return Some(format!("the HostedInstall data is <{root}>, expected <Application>"));
    }
    match a.iter().find(|(k, _)| k == "PackageUri").map(|(_, v)| v.trim()) {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") || u.starts_with("file:") => None,
        Some(u) => Some(format!("PackageUri {u:?} is not an http(s) or file URI")),
        None => Some("<Application> has no PackageUri".into()),
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The hosted installs under way: (PFN, started).
fn installs(cx: &CspCx<'_>) -> Vec<(String, DateTime<Utc>)> {
    let meta = format!("{META}/{}", scope_word(cx));
    cx.state
        .child_names(&meta)
        .into_iter()
        .filter_map(|p| {
            let t = cx.state.value(&format!("{meta}/{p}"))?;
            Some((p.clone(), DateTime::parse_from_rfc3339(t).ok()?.to_utc()))
        })
        .collect()
}

impl DdfBehaviour for ModernApps {
    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        (node.rel == "AppManagement/AppInventoryResults").then(|| results(cx))
    }

    fn validate(&self, _cx: &CspCx<'_>, op: WriteOp, node: NodeRef<'_>, value: Option<&str>) -> Result<(), StatusCode> {
        match (node.rel, op, value) {
            ("AppManagement/AppInventoryQuery", WriteOp::Add | WriteOp::Replace, Some(v)) if query(v).is_none() => {
                Err(StatusCode::BadRequest)
            }
            _ => Ok(()),
        }
    }

    fn exec_creates(&self, rel: &str) -> bool {
        rel.starts_with("AppInstallation/") && rel.ends_with("/HostedInstall")
    }

    fn exec(&self, cx: &mut CspCx<'_>, rel: &str, data: Option<&str>) -> StatusCode {
        let parts: Vec<&str> = rel.split('/').collect();
        let ["AppInstallation", pfn, "HostedInstall"] = parts.as_slice() else { return StatusCode::Ok };
        if refusal(pfn, data).is_some() {
            return StatusCode::BadRequest;
        }
        if cx.value(&format!("AppInstallation/{pfn}/Status")) == Some("1") {
            return StatusCode::Ok; // under way: not restarted
        }
        let base = format!("AppInstallation/{pfn}");
        cx.set(&format!("{base}/Status"), "1");
        cx.set(&format!("{base}/ProgressStatus"), "0");
        cx.set(&format!("{base}/LastError"), "0");
        cx.set(&format!("{base}/LastErrorDesc"), "");
        let key = format!("{META}/{}/{pfn}", scope_word(cx));
        cx.state.set_value(&key, stamp(cx.env.now));
        StatusCode::Ok
    }

    fn exec_refused(&self, cx: &mut CspCx<'_>, rel: &str, data: Option<&str>, _code: StatusCode) -> bool {
        let parts: Vec<&str> = rel.split('/').collect();
        let ["AppInstallation", pfn, "HostedInstall"] = parts.as_slice() else { return false };
        let Some(why) = refusal(pfn, data) else { return false };
        let base = format!("AppInstallation/{pfn}");
        cx.create(&base);
        cx.set(&format!("{base}/Status"), "2");
        cx.set(&format!("{base}/LastError"), E_INVALIDARG.to_string());
        cx.set(&format!("{base}/LastErrorDesc"), why);
        true
    }

    fn next_deadline(&self, cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
        installs(cx)
            .into_iter()
            .map(|(pfn, t)| {
                let downloaded = cx.value(&format!("AppInstallation/{pfn}/ProgressStatus")) == Some("100");
                if downloaded { t + DOWNLOAD_TIME + INSTALL_TIME } else { t + DOWNLOAD_TIME }
            })
            .min()
    }

    fn on_deadline(&self, cx: &mut CspCx<'_>) {
        let now = cx.env.now;
        for (pfn, started) in installs(cx) {
            let base = format!("AppInstallation/{pfn}");
            if !cx.exists(&base) {
                // Deleted meanwhile: the install is abandoned.
                cx.state.remove_subtree(&format!("{META}/{}/{pfn}", scope_word(cx)));
                continue;
            }
            if started + DOWNLOAD_TIME <= now {
                cx.set(&format!("{base}/ProgressStatus"), "100");
            }
            if started + DOWNLOAD_TIME + INSTALL_TIME <= now {
                let (name, publisher_id) = pfn.rsplit_once('_').unwrap_or((pfn.as_str(), ""));
                let full = format!("{name}_1.0.0.0_x64__{publisher_id}");
                let pkg = format!("AppManagement/nonStore/{pfn}/{full}");
                cx.create(&format!("AppManagement/nonStore/{pfn}"));
                cx.create(&pkg);
                for (k, v) in [
                    ("Name", name.to_string()),
                    ("Version", "1.0.0.0".to_string()),
                    ("Publisher", format!("CN={publisher_id}")),
                    ("Architecture", "9".to_string()),
                    ("InstallLocation", format!(r"C:\Program Files\WindowsApps\{full}")),
                    ("IsFramework", "0".into()),
                    ("IsBundle", "0".into()),
                    ("InstallDate", stamp(now)),
                    ("ResourceID", String::new()),
                    ("PackageStatus", "0".into()),
                    ("RequiresReinstall", "0".into()),
                    ("Users", String::new()),
                    ("IsProvisioned", "0".into()),
                ] {
                    cx.set(&format!("{pkg}/{k}"), v);
                }
                cx.set(&format!("{base}/Status"), "3");
                cx.set(&format!("{base}/LastError"), "0");
                cx.state.remove_subtree(&format!("{META}/{}/{pfn}", scope_word(cx)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_and_refused() {
        assert!(
            query(r#"<Inventory Output="PackageNames" Source="System|nonStore" PackageTypeFilter="Main"/>"#).is_some()
        );
        assert!(query("<Inventory/>").is_some_and(|q| q.details));
        assert!(query(r#"<Inventory Source="Elsewhere"/>"#).is_none());
        assert!(query("<Query/>").is_none());
        assert!(query("not xml <").is_none());
        assert!(
            refusal("Contoso.App_8wekyb3d8bbwe", Some(r#"<Application PackageUri="https://x/a.msix"/>"#)).is_none()
        );
        assert!(refusal("NoPublisher", Some(r#"<Application PackageUri="https://x/a.msix"/>"#)).is_some());
        assert!(refusal("A_b", Some("<Application/>")).unwrap().contains("PackageUri"));
    }
}
