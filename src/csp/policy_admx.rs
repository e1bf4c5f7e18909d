//! ADMX ingestion for the Policy CSP (Microsoft's "Win32 and Desktop Bridge app ADMX policy
//! Ingestion" and "Understanding ADMX-backed policies" pages, Policy CSP `ConfigOperations`).
//!
//! An Add (or Replace) of `./Device/Vendor/MSFT/Policy/ConfigOperations/ADMXInstall/<AppName>/<SettingType>/<FileUid>`
//! whose Data is an ADMX file makes the device parse it: its categories (with their
//! `parentCategory` chain), its policies (name, class, parent category) and the ids of each
//! policy's `<elements>`. From then on the Policy CSP accepts
//! `Policy/Config/<AppName>~<SettingType>~<Category path>/<PolicyName>` (categories from the top
//! one down, joined by `~`) in `./Device` for Machine and Both policies and in `./User` for User
//! and Both policies, with an ADMX payload (`<enabled/>` and its `<data id=... value=.../>`, or
//! `<disabled/>`); the payload is kept as sent and read back by Get, and
//! `Policy/Result/<same path>` reads the same value. A policy or area of no ingested file is 404;
//! a payload that is not one of those two forms, or names a `data id` the policy's elements do
//! not have, is 400. A Delete of the file (or of `<AppName>` or `<SettingType>` above it)
//! forgets its policies and removes the values set for them.
//!
//! A file that is not well-formed XML is refused with 400, a well-formed one that is not an
//! ADMX (no `policyDefinitions` root, a policy without a name or a category, a category cycle)
//! with 415; the device is unchanged either way ([`parse`] names the problem with its line, for
//! tests and tools: a SyncML Status carries only the code).
//!
//! Owns the ADMX reader and the catalogue of ingested policies, kept per file under
//! `@ADMX/<AppName>/<SettingType>/<FileUid>` in the device's state (outside every CSP root, so no
//! LocURI reaches it, journalled like node values so a failed Atomic undoes an ingestion). Does
//! not own the DDF policies of the Policy CSP (`ddf_csp`), nor `ADMXInstall/<AppName>/Properties`
//! (plain values).

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::ddf_csp::DdfBehaviour;
use crate::syncml::StatusCode;
use crate::tree::{CspCx, NodeRef, Scope, WriteOp};

/// Where the catalogue of ingested files lives (see the module docs).
const META: &str = "@ADMX";
/// `ConfigOperations/ADMXInstall` below the Policy root.
const INSTALL: &str = "ConfigOperations/ADMXInstall";

/// A policy class: which scopes the policy is configured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Machine,
    User,
    Both,
}

impl Class {
    fn as_str(self) -> &'static str {
        match self {
            Class::Machine => "Machine",
            Class::User => "User",
            Class::Both => "Both",
        }
    }

    fn parse(s: &str) -> Option<Class> {
        match s {
            "Machine" => Some(Class::Machine),
            "User" => Some(Class::User),
            "Both" => Some(Class::Both),
            _ => None,
        }
    }

    fn in_scope(self, scope: Scope) -> bool {
        matches!((self, scope), (Class::Both, _) | (Class::Machine, Scope::Device) | (Class::User, Scope::User))
    }
}

/// One policy of an ADMX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmxPolicy {
    pub name: String,
    pub class: Class,
    /// Category names from the top category down to the policy's parent.
    pub categories: Vec<String>,
    /// The `id`s of the policy's `<elements>` children.
    pub elements: Vec<String>,
}

/// Why an ADMX file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmxError {
    #[error("line {line}: not well-formed XML: {problem}")]
    NotXml { line: usize, problem: String },
    #[error("line {line}: not an ADMX file: {problem}")]
    NotAdmx { line: usize, problem: String },
}

impl AdmxError {
    /// The status a server gets for the file.
    pub fn status(&self) -> StatusCode {
        match self {
            AdmxError::NotXml { .. } => StatusCode::BadRequest,
            AdmxError::NotAdmx { .. } => StatusCode::UnsupportedMediaType,
        }
    }
}

fn line_of(text: &str, pos: u64) -> usize {
    let end = (pos as usize).min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_string()
}

fn attr(s: &BytesStart<'_>, name: &str) -> Option<String> {
    s.attributes().flatten().find(|a| local(a.key.as_ref()) == name).map(|a| {
        let raw = a.value.to_string();
        quick_xml::escape::unescape(&raw).map(|c| c.into_owned()).unwrap_or(raw)
    })
}

/// A category or policy reference without its namespace prefix (`windows:System` -> `System`).
fn unprefixed(r: &str) -> String {
    r.rsplit(':').next().unwrap_or(r).to_string()
}

/// A policy being read: name, class, parent category, element ids, position.
type Partial = (String, Class, Option<String>, Vec<String>, u64);

/// Reads an ADMX file: its policies with their category paths and element ids.
pub fn parse(text: &str) -> Result<Vec<AdmxPolicy>, AdmxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let not_admx = |pos: u64, problem: &str| AdmxError::NotAdmx { line: line_of(text, pos), problem: problem.into() };
    // Category name -> parent name.
    let mut parents: Vec<(String, Option<String>)> = Vec::new();
    let mut policies: Vec<Partial> = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut root_seen = false;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| AdmxError::NotXml { line: line_of(text, reader.error_position()), problem: e.to_string() })?;
        let (start, empty) = match &event {
            Event::Start(s) => (Some(s.clone()), false),
            Event::Empty(s) => (Some(s.clone()), true),
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let Some(s) = start else { continue };
        let name = local(s.name().as_ref());
        if stack.is_empty() {
            if root_seen || name != "policyDefinitions" {
                return Err(not_admx(pos, &format!("the root element is <{name}>, expected <policyDefinitions>")));
            }
            root_seen = true;
        }
        let parent = stack.last().map(String::as_str);
        match (parent, name.as_str()) {
            (Some("categories"), "category") => {
                let n = attr(&s, "name")
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| not_admx(pos, "a <category> has no name"))?;
                parents.push((n, None));
            }
            (Some("category"), "parentCategory") => {
                if let (Some(last), Some(r)) = (parents.last_mut(), attr(&s, "ref")) {
                    last.1 = Some(unprefixed(&r));
                }
            }
            (Some("policies"), "policy") => {
                let n = attr(&s, "name")
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| not_admx(pos, "a <policy> has no name"))?;
                let class = attr(&s, "class").unwrap_or_default();
                let class = Class::parse(&class).ok_or_else(|| {
                    not_admx(pos, &format!("policy {n}: class {class:?}, expected Machine, User or Both"))
                })?;
                policies.push((n, class, None, Vec::new(), pos));
            }
            (Some("policy"), "parentCategory") => {
                if let (Some(last), Some(r)) = (policies.last_mut(), attr(&s, "ref")) {
                    last.2 = Some(unprefixed(&r));
                }
            }
            (Some("elements"), _) if stack.iter().rev().nth(1).map(String::as_str) == Some("policy") => {
                let id = attr(&s, "id")
                    .filter(|i| !i.is_empty())
                    .ok_or_else(|| not_admx(pos, &format!("an <{name}> element has no id")))?;
                if let Some(last) = policies.last_mut() {
                    last.3.push(id);
                }
            }
            _ => {}
        }
        if !empty {
            stack.push(name);
        }
    }
    if !root_seen {
        return Err(not_admx(0, "the file is empty"));
    }
    let parent_of = |c: &str| parents.iter().find(|(n, _)| n == c).and_then(|(_, p)| p.clone());
    let mut out = Vec::with_capacity(policies.len());
    for (name, class, parent, elements, pos) in policies {
        let first = parent.ok_or_else(|| not_admx(pos, &format!("policy {name} has no <parentCategory>")))?;
        let mut categories = vec![first];
        while let Some(p) = categories.last().and_then(|c| parent_of(c)) {
            if categories.contains(&p) {
                return Err(not_admx(pos, &format!("category {p} is its own ancestor")));
            }
            categories.push(p);
        }
        categories.reverse();
        out.push(AdmxPolicy { name, class, categories, elements });
    }
    Ok(out)
}

/// The Policy CSP area of an ingested policy: `<AppName>~<SettingType>~<Category path>`.
fn area(app: &str, setting_type: &str, p: &AdmxPolicy) -> String {
    format!("{app}~{setting_type}~{}", p.categories.join("~"))
}

/// One catalogue line: area, policy, class, element ids.
fn line(area: &str, p: &AdmxPolicy) -> String {
    format!("{area}\t{}\t{}\t{}", p.name, p.class.as_str(), p.elements.join(","))
}

/// A catalogue entry as read back.
struct Entry<'a> {
    area: &'a str,
    policy: &'a str,
    class: Class,
    elements: Vec<&'a str>,
}

fn entries(text: &str) -> impl Iterator<Item = Entry<'_>> {
    text.lines().filter_map(|l| {
        let mut cols = l.split('\t');
        let (area, policy, class, elements) = (cols.next()?, cols.next()?, cols.next()?, cols.next().unwrap_or(""));
        Some(Entry {
            area,
            policy,
            class: Class::parse(class)?,
            elements: elements.split(',').filter(|e| !e.is_empty()).collect(),
        })
    })
}

/// Every catalogue text of the device (one per ingested file).
fn catalogues<'a>(cx: &'a CspCx<'_>) -> Vec<&'a str> {
    cx.state.subtree_keys(META).filter_map(|k| cx.state.value(&k)).collect()
}

/// The ingested policy `area/policy` in `scope`, with its element ids.
fn find(cx: &CspCx<'_>, scope: Scope, area: &str, policy: Option<&str>) -> Option<Vec<String>> {
    for text in catalogues(cx) {
        for e in entries(text) {
            if e.area == area && e.class.in_scope(scope) && policy.is_none_or(|p| p == e.policy) {
                return Some(e.elements.iter().map(|s| s.to_string()).collect());
            }
        }
    }
    None
}

/// The ingested areas of this scope with at least one value set (for `Policy/Result`'s list).
pub fn set_areas(cx: &CspCx<'_>) -> Vec<String> {
    let scope = if cx.base.starts_with("User/") { Scope::User } else { Scope::Device };
    let mut out: Vec<String> = Vec::new();
    for text in catalogues(cx) {
        for e in entries(text) {
            let set = cx.value(&format!("Config/{}/{}", e.area, e.policy)).is_some();
            if set && e.class.in_scope(scope) && !out.iter().any(|a| a == e.area) {
                out.push(e.area.to_string());
            }
        }
    }
    out
}

/// What an ADMX-backed policy value says, checked against the policy's element ids.
fn check_payload(value: &str, elements: &[String]) -> Result<(), StatusCode> {
    let wrapped = format!("<v>{}</v>", value.trim());
    let mut reader = Reader::from_str(&wrapped);
    reader.config_mut().check_end_names = true;
    let mut state: Option<bool> = None;
    let mut depth = 0usize;
    loop {
        let (s, opens) = match reader.read_event().map_err(|_| StatusCode::BadRequest)? {
            Event::Start(s) => (s, true),
            Event::Empty(s) => (s, false),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Event::Text(t) if !t.xml10_content().trim().is_empty() => return Err(StatusCode::BadRequest),
            Event::Eof => break,
            _ => continue,
        };
        let name = local(s.name().as_ref());
        match (depth, name.as_str()) {
            (0, "v") => {}
            (1, "enabled" | "disabled") if state.is_none() => state = Some(name == "enabled"),
            (1, "data") if state == Some(true) => {
                let id = attr(&s, "id").ok_or(StatusCode::BadRequest)?;
                attr(&s, "value").ok_or(StatusCode::BadRequest)?;
                if !elements.contains(&id) {
                    return Err(StatusCode::BadRequest);
                }
            }
            _ => return Err(StatusCode::BadRequest),
        }
        if opens {
            depth += 1;
        }
    }
    if state.is_some() { Ok(()) } else { Err(StatusCode::BadRequest) }
}

/// The segments of a node below the Policy root.
fn segs<'a>(node: &NodeRef<'a>) -> smallvec::SmallVec<[&'a str; 4]> {
    node.rel.split('/').filter(|s| !s.is_empty()).collect()
}

/// The ADMX side of the Policy CSP (see the module docs).
pub struct AdmxPolicies;

impl AdmxPolicies {
    /// `(area, policy)` when `node` is `Config|Result/<ingested area>[/<policy>]`.
    fn slot<'a>(node: &NodeRef<'a>) -> Option<(&'a str, Option<&'a str>)> {
        let s = segs(node);
        let placeholder = node.spec.name == "<AreaName>" || node.spec.name == "<PolicyName>";
        match s.as_slice() {
            ["Config" | "Result", area] if placeholder || node.spec.name.contains('<') => Some((area, None)),
            ["Config" | "Result", area, policy] if node.spec.name == "<PolicyName>" => Some((area, Some(policy))),
            _ => None,
        }
    }
}

impl DdfBehaviour for AdmxPolicies {
    fn exists(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<bool> {
        // A DDF area of the same name is not an ADMX area (its own facts decide).
        if node.spec.name != "<AreaName>" && node.spec.name != "<PolicyName>" {
            return None;
        }
        let (area, policy) = Self::slot(&node)?;
        let found = find(cx, node.scope, area, policy).is_some();
        // `Result/<Area>/<Policy>` of the DDF's own policies is the Policy CSP's to decide.
        match node.rel.starts_with("Config/") {
            true => Some(found),
            false => found.then_some(true),
        }
    }

    fn children(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<Vec<String>> {
        let s = segs(&node);
        let ["Result", area] = s.as_slice() else { return None };
        node.spec.name.starts_with('<').then_some(())?;
        find(cx, node.scope, area, None)?;
        Some(cx.children(&format!("Config/{area}")))
    }

    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        let s = segs(&node);
        let ["Result", area, policy] = s.as_slice() else { return None };
        (node.spec.name == "<PolicyName>").then_some(())?;
        cx.value(&format!("Config/{area}/{policy}")).map(str::to_string)
    }

    fn validate(&self, cx: &CspCx<'_>, op: WriteOp, node: NodeRef<'_>, value: Option<&str>) -> Result<(), StatusCode> {
        // The cheap checks first: most writes are to the DDF's own policies.
        if node.spec.name.starts_with('<')
            && node.rel.starts_with("Config/")
            && let Some((area, policy)) = Self::slot(&node)
        {
            let elements = find(cx, node.scope, area, policy).ok_or(StatusCode::NotFound)?;
            if let (Some(_), Some(v), WriteOp::Add | WriteOp::Replace) = (policy, value, op) {
                check_payload(v, &elements)?;
            }
            return Ok(());
        }
        if let (Some(rest), Some(v), WriteOp::Add | WriteOp::Replace) = (file_rel(node.rel), value, op)
            && rest.split('/').count() == 3
        {
            parse(v).map_err(|e| e.status())?;
        }
        Ok(())
    }

    fn after_write(&self, cx: &mut CspCx<'_>, op: WriteOp, node: NodeRef<'_>) -> Result<(), StatusCode> {
        let Some(rest) = file_rel(node.rel) else { return Ok(()) };
        let meta = format!("{META}/{rest}");
        match op {
            WriteOp::Delete => {
                forget(cx, &meta);
                Ok(())
            }
            WriteOp::Add | WriteOp::Replace => {
                let parts: Vec<&str> = rest.split('/').collect();
                let [app, setting_type, _file] = parts.as_slice() else { return Ok(()) };
                let text = cx.value(node.rel).unwrap_or_default().to_string();
                let policies = parse(&text).map_err(|e| e.status())?;
                let catalogue: Vec<String> = policies.iter().map(|p| line(&area(app, setting_type, p), p)).collect();
                cx.state.set_value(&meta, catalogue.join("\n"));
                Ok(())
            }
        }
    }
}

/// `<AppName>[/<SettingType>[/<FileUid>]]` when `rel` is at or below `ADMXInstall/<AppName>`
/// (and not in its `Properties`).
fn file_rel(rel: &str) -> Option<&str> {
    let rest = rel.strip_prefix(INSTALL)?.strip_prefix('/')?;
    (rest.split('/').nth(1) != Some("Properties")).then_some(rest)
}

/// Forgets the files catalogued under `meta` and removes the values set for their policies, in
/// both scopes.
fn forget(cx: &mut CspCx<'_>, meta: &str) {
    let keys: Vec<String> = cx.state.subtree_keys(meta).collect();
    let mut settings: Vec<(String, String)> = Vec::new();
    for k in &keys {
        if let Some(text) = cx.state.value(k) {
            settings.extend(entries(text).map(|e| (e.area.to_string(), e.policy.to_string())));
        }
    }
    cx.state.remove_subtree(meta);
    let device = cx.base.strip_prefix("User/").unwrap_or(cx.base).to_string();
    for base in [device.clone(), format!("User/{device}")] {
        for (area, policy) in &settings {
            cx.state.remove_subtree(&format!("{base}/Config/{area}/{policy}"));
            let area_key = format!("{base}/Config/{area}");
            if cx.state.child_names(&area_key).is_empty() {
                cx.state.remove_subtree(&area_key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ADMX in the shape of the ingestion page's example: two categories, two policies.
    pub const ADMX: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<policyDefinitions revision="1.0" schemaVersion="1.0">
  <policyNamespaces>
    <target prefix="contoso" namespace="Contoso.Policies.App" />
    <using prefix="windows" namespace="Microsoft.Policies.Windows" />
  </policyNamespaces>
  <resources minRequiredRevision="1.0" />
  <categories>
    <category name="ParentCategoryArea" displayName="$(string.ParentCategoryArea)" />
    <category name="Category1" displayName="$(string.Category1)">
      <parentCategory ref="ParentCategoryArea" />
    </category>
  </categories>
  <policies>
    <policy name="L_PolicyConfigurationMode" class="Machine" displayName="$(string.Mode)" key="Software\Policies\Contoso\App" presentation="$(presentation.Mode)">
      <parentCategory ref="Category1" />
      <supportedOn ref="windows:SUPPORTED_Windows7" />
      <elements>
        <enum id="L_ConfigurationModeDrop" valueName="Mode">
          <item displayName="$(string.One)"><value><decimal value="1" /></value></item>
        </enum>
        <text id="L_ServerUrl" valueName="Url" />
      </elements>
    </policy>
    <policy name="L_ShowBanner" class="User" displayName="$(string.Banner)" key="Software\Policies\Contoso\App" valueName="Banner">
      <parentCategory ref="ParentCategoryArea" />
      <supportedOn ref="windows:SUPPORTED_Windows7" />
    </policy>
  </policies>
</policyDefinitions>"#;

    #[test]
    fn an_admx_gives_its_policies_with_category_paths_and_element_ids() {
        let p = parse(ADMX).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "L_PolicyConfigurationMode");
        assert_eq!(p[0].class, Class::Machine);
        assert_eq!(p[0].categories, ["ParentCategoryArea", "Category1"]);
        assert_eq!(p[0].elements, ["L_ConfigurationModeDrop", "L_ServerUrl"]);
        assert_eq!(area("ContosoCompanyApp", "Policy", &p[0]), "ContosoCompanyApp~Policy~ParentCategoryArea~Category1");
        assert_eq!(p[1].class, Class::User);
        assert!(p[1].elements.is_empty());
    }

    #[test]
    fn broken_files_say_what_is_wrong_and_where() {
        let e = parse(&ADMX.replace("</categories>", "")).unwrap_err();
        assert!(matches!(e, AdmxError::NotXml { .. }) && e.status() == StatusCode::BadRequest, "{e}");
        let e = parse("<policies/>").unwrap_err();
        assert!(e.to_string().contains("expected <policyDefinitions>"), "{e}");
        assert_eq!(e.status(), StatusCode::UnsupportedMediaType);
        let e = parse(&ADMX.replace(r#"<parentCategory ref="Category1" />"#, "")).unwrap_err();
        assert!(e.to_string().contains("L_PolicyConfigurationMode has no <parentCategory>"), "{e}");
        assert!(e.to_string().starts_with("line 15:"), "{e}");
        let cycle = ADMX.replace(
            r#"<category name="ParentCategoryArea" displayName="$(string.ParentCategoryArea)" />"#,
            r#"<category name="ParentCategoryArea"><parentCategory ref="Category1" /></category>"#,
        );
        assert!(parse(&cycle).unwrap_err().to_string().contains("its own ancestor"));
        assert!(parse(&ADMX.replace(r#"class="User""#, r#"class="Nobody""#)).is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn payloads_are_checked_against_the_policy_elements() {
        let ids = vec!["L_ConfigurationModeDrop".to_string()];
        assert_eq!(check_payload(r#"<enabled/><data id="L_ConfigurationModeDrop" value="1"/>"#, &ids), Ok(()));
        assert_eq!(check_payload("<disabled/>", &ids), Ok(()));
        assert_eq!(check_payload("<enabled/>", &[]), Ok(()));
        assert_eq!(check_payload(r#"<enabled/><data id="Nope" value="1"/>"#, &ids), Err(StatusCode::BadRequest));
        assert_eq!(
            check_payload(r#"<enabled/><data id="L_ConfigurationModeDrop"/>"#, &ids),
            Err(StatusCode::BadRequest)
        );
        assert_eq!(check_payload("1", &ids), Err(StatusCode::BadRequest));
        assert_eq!(check_payload("<enabled>", &ids), Err(StatusCode::BadRequest));
        assert_eq!(check_payload("<enabled/><disabled/>", &ids), Err(StatusCode::BadRequest));
    }
}
