//! Node facts of every Windows CSP, from Microsoft's Device Description Framework files (DDF,
//! OMA-DM DDF 1.2 `MgmtTree` documents, as Microsoft publishes them for each CSP).
//!
//! [`read_ddf`] turns one DDF document into [`NodeFact`]s: path, format, access types,
//! occurrence, scope, dynamic-node marks, default value, allowed values and the OS build that
//! introduced the node. Facts only: descriptions, value descriptions and GP mappings are not
//! kept. [`table`] writes and reads the compact text table that the repository ships (generated
//! by `mdmsim ddf compile DIR`, see `docs/ddf.md`), so that a fresh clone knows every CSP without
//! Microsoft's files; [`builtin`] is that table.
//!
//! Sans-I/O: reading folders is the caller's. Behaviour (what a node does when set) is not here:
//! hand-written CSPs in `crate::csp` own it, and where they describe a node they win over its DDF.

pub mod table;

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::tree::{Format, Ops};

/// How many instances of a node may exist (DDF `Occurrence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    One,
    ZeroOrOne,
    ZeroOrMore,
    OneOrMore,
    ZeroOrN(u32),
    OneOrN(u32),
}

impl Occurrence {
    /// The table spelling (`1`, `0-1`, `0-*`, `1-*`, `0-N`, `1-N`).
    pub fn as_table(self) -> String {
        match self {
            Occurrence::One => "1".into(),
            Occurrence::ZeroOrOne => "0-1".into(),
            Occurrence::ZeroOrMore => "0-*".into(),
            Occurrence::OneOrMore => "1-*".into(),
            Occurrence::ZeroOrN(n) => format!("0-{n}"),
            Occurrence::OneOrN(n) => format!("1-{n}"),
        }
    }

    /// Reads [`Occurrence::as_table`].
    pub fn from_table(s: &str) -> Option<Occurrence> {
        Some(match s {
            "1" => Occurrence::One,
            "0-1" => Occurrence::ZeroOrOne,
            "0-*" => Occurrence::ZeroOrMore,
            "1-*" => Occurrence::OneOrMore,
            _ => {
                let (lo, hi) = s.split_once('-')?;
                let n = hi.parse().ok()?;
                match lo {
                    "0" => Occurrence::ZeroOrN(n),
                    "1" => Occurrence::OneOrN(n),
                    _ => return None,
                }
            }
        })
    }
}

/// The values a node accepts (DDF `MSFT:AllowedValues`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// No constraint given (absent, or `ValueType="None"`).
    Any,
    /// One of these values.
    Enum(Vec<String>),
    /// A bit mask made of these flag values.
    Flag(Vec<String>),
    /// A range such as `[0-100]` or `[(-1)-4294967295]`, as the DDF writes it.
    Range(String),
    /// A regular expression the whole value must match.
    Regex(String),
    /// An ADMX-backed policy: its ADMX area, policy name and file.
    Admx { area: String, name: String, file: String },
    /// XML described by an XSD (the schema is not kept).
    Xsd,
    /// JSON.
    Json,
    /// A security descriptor in SDDL.
    Sddl,
}

/// One node of a CSP as its DDF describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFact {
    /// The full path, `./Device/Vendor/MSFT/Reboot/Schedule/Single` or
    /// `./User/Vendor/MSFT/...`; a dynamic segment is written `<Title>` (its DFTitle, or
    /// `<>` when it has none), as the tree's node tables write dynamic names.
    pub path: String,
    pub format: Format,
    pub access: Ops,
    pub occurrence: Occurrence,
    /// `Scope` is Permanent (created by the device) rather than Dynamic.
    pub permanent: bool,
    /// The node's name is chosen by the server or the device (`NodeName` empty).
    pub dynamic: bool,
    /// How a dynamic name is made (`MSFT:DynamicNodeNaming`: `ServerGeneratedUniqueIdentifier`,
    /// `ClientInventory`, `UniqueName`), when the DDF says.
    pub naming: Option<String>,
    /// `DFType/MIME`, when given.
    pub mime: Option<String>,
    pub default: Option<String>,
    pub allowed: Allowed,
    /// `MSFT:Applicability/OsBuildVersion`: the first Windows build with the node.
    pub os_build: Option<String>,
    /// `MSFT:Applicability/EditionAllowList` (hex PRODUCT_* values, `;`-separated), when not empty.
    pub editions: Option<String>,
    /// `MSFT:Applicability/CspVersion`: the CSP version that introduced the node (the highest
    /// one of a CSP's nodes is the CSP's version, as DeviceManageability reports it).
    pub csp_version: Option<String>,
}

/// A DDF document that cannot be read: the file, the line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct DdfError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// The table that ships with mdmsim: every node of the DDF files of the Windows release it was
/// generated from.
pub fn builtin() -> Vec<NodeFact> {
    table::decode(include_str!("nodes.tsv")).expect("the shipped node table is well-formed (checked by a test)")
}

/// Reads every DDF document of a folder (`(file name, text)` pairs, in any order) into one table:
/// files in name order, nodes in document order, a path that two files both describe kept once
/// (the first file's).
pub fn compile(mut files: Vec<(String, String)>) -> Result<Vec<NodeFact>, DdfError> {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (name, text) in &files {
        for fact in read_ddf(text, name)? {
            if seen.insert(fact.path.clone()) {
                out.push(fact);
            }
        }
    }
    Ok(out)
}

/// A node being read: its facts so far.
#[derive(Default)]
struct Partial {
    name: Option<String>,
    title: Option<String>,
    path: Option<String>,
    format: Option<Format>,
    access: Option<Ops>,
    occurrence: Option<Occurrence>,
    permanent: bool,
    naming: Option<String>,
    mime: Option<String>,
    default: Option<String>,
    allowed: Option<Allowed>,
    values: Vec<String>,
    os_build: Option<String>,
    editions: Option<String>,
    csp_version: Option<String>,
    /// The full path, once known (at the first child or at the end).
    full: Option<String>,
    /// Index of this node's fact in the output, once pushed.
    emitted: bool,
}

/// Reads one DDF document; `file` names it in errors.
pub fn read_ddf(text: &str, file: &str) -> Result<Vec<NodeFact>, DdfError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let err = |pos: u64, problem: String| DdfError { file: file.to_string(), line: line_of(text, pos), problem };
    let mut out: Vec<NodeFact> = Vec::new();
    let mut nodes: Vec<Partial> = Vec::new();
    // Element names from the MgmtTree down, local names only.
    let mut stack: Vec<String> = Vec::new();
    let mut text_buf = String::new();
    loop {
        let pos = reader.buffer_position();
        let event =
            reader.read_event().map_err(|e| err(reader.error_position(), format!("not well-formed XML: {e}")))?;
        match event {
            Event::Start(s) => {
                let name = local(s.name().as_ref());
                if name == "Node" {
                    if let Some((parent, ancestors)) = nodes.split_last_mut() {
                        emit(parent, &nodes_paths(ancestors), &mut out).map_err(|p| err(pos, p))?;
                    }
                    nodes.push(Partial::default());
                }
                if name == "AllowedValues" {
                    let ty = attr(&s, "ValueType").unwrap_or_default();
                    if let Some(n) = nodes.last_mut() {
                        n.values.clear();
                        n.allowed = Some(match ty.to_ascii_lowercase().as_str() {
                            "enum" => Allowed::Enum(Vec::new()),
                            "flag" => Allowed::Flag(Vec::new()),
                            "range" => Allowed::Range(String::new()),
                            "regex" => Allowed::Regex(String::new()),
                            "admx" => Allowed::Admx { area: String::new(), name: String::new(), file: String::new() },
                            "xsd" => Allowed::Xsd,
                            "json" => Allowed::Json,
                            "sddl" => Allowed::Sddl,
                            _ => Allowed::Any,
                        });
                    }
                }
                stack.push(name);
                text_buf.clear();
            }
            Event::Empty(s) => {
                let name = local(s.name().as_ref());
                if let Some(n) = nodes.last_mut() {
                    on_empty(n, &stack, &name, &s);
                }
            }
            Event::Text(t) => {
                text_buf.push_str(&t.xml10_content());
            }
            Event::CData(c) => text_buf.push_str(&c.xml10_content()),
            Event::GeneralRef(r) => {
                let name = r.xml10_content();
                match r.resolve_char_ref().ok().flatten() {
                    Some(c) => text_buf.push(c),
                    None => text_buf.push_str(quick_xml::escape::resolve_predefined_entity(&name).unwrap_or("")),
                }
            }
            Event::End(e) => {
                let name = local(e.name().as_ref());
                stack.pop();
                let value = std::mem::take(&mut text_buf).trim().to_string();
                if name == "Node" {
                    let mut n = nodes.pop().ok_or_else(|| err(pos, "unmatched </Node>".into()))?;
                    emit(&mut n, &nodes_paths(&nodes), &mut out).map_err(|p| err(pos, p))?;
                    continue;
                }
                if let Some(n) = nodes.last_mut() {
                    on_text(n, &stack, &name, value);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !nodes.is_empty() {
        return Err(err(text.len() as u64, "the document ends inside a <Node>".into()));
    }
    Ok(out)
}

/// The full paths of the open ancestors, outermost first (each known once it emitted).
fn nodes_paths(ancestors: &[Partial]) -> Vec<String> {
    ancestors.iter().filter_map(|n| n.full.clone()).collect()
}

/// Pushes the node's fact (once): its path is its own `Path` or its parent's full path, then its
/// name.
fn emit(n: &mut Partial, ancestors: &[String], out: &mut Vec<NodeFact>) -> Result<(), String> {
    if n.emitted {
        return Ok(());
    }
    n.emitted = true;
    let base = match (&n.path, ancestors.last()) {
        (Some(p), _) => p.trim_end_matches('/').to_string(),
        (None, Some(parent)) => parent.clone(),
        (None, None) => return Err("a top-level <Node> has no <Path>".into()),
    };
    let dynamic = n.name.as_deref().is_none_or(str::is_empty);
    let segment = if dynamic {
        format!("<{}>", n.title.as_deref().unwrap_or("").trim())
    } else {
        n.name.clone().unwrap_or_default()
    };
    let full = format!("{base}/{segment}");
    n.full = Some(full.clone());
    let format = n.format.ok_or_else(|| format!("node {full} has no <DFFormat>"))?;
    let allowed = match n.allowed.take() {
        Some(Allowed::Enum(_)) => Allowed::Enum(std::mem::take(&mut n.values)),
        Some(Allowed::Flag(_)) => Allowed::Flag(std::mem::take(&mut n.values)),
        Some(Allowed::Range(_)) => Allowed::Range(n.values.first().cloned().unwrap_or_default()),
        Some(Allowed::Regex(_)) => Allowed::Regex(n.values.first().cloned().unwrap_or_default()),
        Some(other) => other,
        None => Allowed::Any,
    };
    out.push(NodeFact {
        path: full,
        format,
        access: n.access.unwrap_or(Ops::NONE),
        occurrence: n.occurrence.unwrap_or(Occurrence::One),
        permanent: n.permanent,
        dynamic,
        naming: n.naming.take(),
        mime: n.mime.take().filter(|m| !m.is_empty()),
        default: n.default.take(),
        allowed,
        os_build: n.os_build.take().filter(|v| !v.is_empty()),
        editions: n.editions.take().filter(|v| !v.is_empty()),
        csp_version: n.csp_version.take().filter(|v| !v.is_empty()),
    });
    Ok(())
}

/// An empty element inside a node: access types, format, occurrence, scope, naming, ADMX.
fn on_empty(n: &mut Partial, stack: &[String], name: &str, s: &quick_xml::events::BytesStart<'_>) {
    let Some(parent) = stack.last().map(String::as_str) else { return };
    match parent {
        "AccessType" => {
            let op = match name {
                "Add" => Ops::ADD,
                "Delete" => Ops::DELETE,
                "Exec" => Ops::EXEC,
                "Get" => Ops::GET,
                "Replace" => Ops::REPLACE,
                _ => Ops::NONE,
            };
            n.access = Some(n.access.unwrap_or(Ops::NONE).with(op));
        }
        "DFFormat" => n.format = Format::parse(name),
        "Occurrence" => n.occurrence = occurrence(name, None),
        "Scope" => n.permanent = name == "Permanent",
        "DynamicNodeNaming" => n.naming = Some(name.to_string()),
        "AllowedValues" if name == "AdmxBacked" => {
            n.allowed = Some(Allowed::Admx {
                area: attr(s, "Area").unwrap_or_default(),
                name: attr(s, "Name").unwrap_or_default(),
                file: attr(s, "File").unwrap_or_default(),
            })
        }
        "DFType" if name == "DDFName" || name == "MIME" => {}
        _ => {}
    }
}

/// The text of an element inside a node.
fn on_text(n: &mut Partial, stack: &[String], name: &str, value: String) {
    let parent = stack.last().map(String::as_str).unwrap_or("");
    match (parent, name) {
        (_, "NodeName") if parent == "Node" => n.name = Some(value),
        (_, "Path") if parent == "Node" => n.path = Some(value),
        ("DFProperties", "DFTitle") => n.title = Some(value),
        ("DFProperties", "DefaultValue") => n.default = Some(value),
        ("DFType", "MIME") | ("DFType", "DDFName") if !value.is_empty() => n.mime = Some(value),
        ("Applicability", "OsBuildVersion") => n.os_build = Some(value),
        ("Applicability", "CspVersion") => n.csp_version = Some(value),
        ("Applicability", "EditionAllowList") => n.editions = Some(value.trim_end_matches(';').to_string()),
        ("Enum", "Value") | ("AllowedValues", "Value") => n.values.push(value),
        ("Occurrence", "ZeroOrN") | ("Occurrence", "OneOrN") => n.occurrence = occurrence(name, value.parse().ok()),
        _ => {}
    }
}

fn occurrence(name: &str, n: Option<u32>) -> Option<Occurrence> {
    Some(match name {
        "One" => Occurrence::One,
        "ZeroOrOne" => Occurrence::ZeroOrOne,
        "ZeroOrMore" => Occurrence::ZeroOrMore,
        "OneOrMore" => Occurrence::OneOrMore,
        "ZeroOrN" => Occurrence::ZeroOrN(n?),
        "OneOrN" => Occurrence::OneOrN(n?),
        _ => return None,
    })
}

fn attr(s: &quick_xml::events::BytesStart<'_>, name: &str) -> Option<String> {
    s.attributes().flatten().find(|a| local(a.key.as_ref()) == name).map(|a| {
        let raw = a.value.to_string();
        quick_xml::escape::unescape(&raw).map(|c| c.into_owned()).unwrap_or(raw)
    })
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_string()
}

fn line_of(text: &str, pos: u64) -> usize {
    let end = (pos as usize).min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE MgmtTree PUBLIC " -//OMA//DTD-DM-DDF 1.2//EN"
  "http://www.openmobilealliance.org/tech/DTD/DM_DDF-V1_2.dtd"
  [<?oma-dm-ddf-ver supported-versions="1.2"?>]>
<MgmtTree xmlns:MSFT="http://schemas.microsoft.com/MobileDevice/DM">
  <VerDTD>1.2</VerDTD>
  <Node>
    <NodeName>Demo</NodeName>
    <Path>./Device/Vendor/MSFT</Path>
    <DFProperties>
      <AccessType><Get /></AccessType>
      <DFFormat><node /></DFFormat>
      <Occurrence><One /></Occurrence>
      <Scope><Permanent /></Scope>
      <DFType><MIME>com.microsoft/1.0/MDM/Demo</MIME></DFType>
    </DFProperties>
    <Node>
      <NodeName>Level</NodeName>
      <DFProperties>
        <AccessType><Add /><Delete /><Get /><Replace /></AccessType>
        <Description>A level &amp; more.</Description>
        <DFFormat><int /></DFFormat>
        <Occurrence><ZeroOrOne /></Occurrence>
        <Scope><Dynamic /></Scope>
        <DFType><MIME>text/plain</MIME></DFType>
        <DefaultValue>1</DefaultValue>
        <MSFT:Applicability>
          <MSFT:OsBuildVersion>10.0.17763</MSFT:OsBuildVersion>
          <MSFT:CspVersion>1.0</MSFT:CspVersion>
          <MSFT:EditionAllowList>0x4;0x30;</MSFT:EditionAllowList>
        </MSFT:Applicability>
        <MSFT:AllowedValues ValueType="ENUM">
          <MSFT:Enum><MSFT:Value>0</MSFT:Value><MSFT:ValueDescription>Off</MSFT:ValueDescription></MSFT:Enum>
          <MSFT:Enum><MSFT:Value>1</MSFT:Value><MSFT:ValueDescription>On</MSFT:ValueDescription></MSFT:Enum>
        </MSFT:AllowedValues>
      </DFProperties>
    </Node>
    <Node>
      <NodeName></NodeName>
      <DFProperties>
        <AccessType><Add /><Delete /><Get /></AccessType>
        <DFFormat><node /></DFFormat>
        <Occurrence><ZeroOrMore /></Occurrence>
        <Scope><Dynamic /></Scope>
        <DFTitle>ItemID</DFTitle>
        <DFType><DDFName /></DFType>
        <MSFT:DynamicNodeNaming><MSFT:ServerGeneratedUniqueIdentifier /></MSFT:DynamicNodeNaming>
      </DFProperties>
      <Node>
        <NodeName>Limit</NodeName>
        <DFProperties>
          <AccessType><Get /><Replace /></AccessType>
          <DFFormat><int /></DFFormat>
          <Occurrence><One /></Occurrence>
          <Scope><Dynamic /></Scope>
          <DFType><MIME>text/plain</MIME></DFType>
          <MSFT:AllowedValues ValueType="Range"><MSFT:Value>[(-1)-100]</MSFT:Value></MSFT:AllowedValues>
        </DFProperties>
      </Node>
    </Node>
  </Node>
</MgmtTree>"#;

    #[test]
    fn a_ddf_gives_one_fact_per_node_with_paths_and_values() {
        let facts = read_ddf(DDF, "Demo.xml").unwrap();
        let paths: Vec<&str> = facts.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "./Device/Vendor/MSFT/Demo",
                "./Device/Vendor/MSFT/Demo/Level",
                "./Device/Vendor/MSFT/Demo/<ItemID>",
                "./Device/Vendor/MSFT/Demo/<ItemID>/Limit"
            ]
        );
        let root = &facts[0];
        assert!(root.permanent && !root.dynamic && root.format == Format::Node);
        assert_eq!(root.mime.as_deref(), Some("com.microsoft/1.0/MDM/Demo"));
        let level = &facts[1];
        assert_eq!(level.format, Format::Int);
        assert_eq!(level.access, Ops::ADD | Ops::DELETE | Ops::GET | Ops::REPLACE);
        assert_eq!(level.occurrence, Occurrence::ZeroOrOne);
        assert_eq!(level.default.as_deref(), Some("1"));
        assert_eq!(level.allowed, Allowed::Enum(vec!["0".into(), "1".into()]));
        assert_eq!(level.os_build.as_deref(), Some("10.0.17763"));
        assert_eq!(level.editions.as_deref(), Some("0x4;0x30"));
        let item = &facts[2];
        assert!(item.dynamic && !item.permanent);
        assert_eq!(item.naming.as_deref(), Some("ServerGeneratedUniqueIdentifier"));
        assert_eq!(item.occurrence, Occurrence::ZeroOrMore);
        assert_eq!(facts[3].allowed, Allowed::Range("[(-1)-100]".into()));
    }

    /// The shipped table against facts anyone can check on Microsoft's CSP pages.
    #[test]
    fn the_builtin_table_knows_every_csp_with_its_published_facts() {
        let facts = builtin();
        assert!(facts.len() > 3000, "{}", facts.len());
        let get = |p: &str| facts.iter().find(|f| f.path == p).unwrap_or_else(|| panic!("{p} missing"));
        // Reboot CSP: RebootNow is executed, Schedule/Single is a writable string.
        let now = get("./Device/Vendor/MSFT/Reboot/RebootNow");
        assert!(now.access.contains(Ops::EXEC) && now.access.contains(Ops::GET));
        assert_eq!(get("./Device/Vendor/MSFT/Reboot/Schedule/Single").format, Format::Chr);
        // BitLocker CSP: RequireDeviceEncryption is 0 or 1, default 0.
        let bl = get("./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption");
        assert_eq!((bl.format, bl.default.as_deref()), (Format::Int, Some("0")));
        assert_eq!(bl.allowed, Allowed::Enum(vec!["0".into(), "1".into()]));
        // DMClient: the provider is a dynamic node named by the server.
        let p = get("./Device/Vendor/MSFT/DMClient/Provider/<ProviderID>");
        assert!(p.dynamic);
        // Policy CSP areas, device and user scope, ADMX-backed policies with their ADMX file.
        assert!(facts.iter().filter(|f| f.path.starts_with("./Device/Vendor/MSFT/Policy/Config/")).count() > 1000);
        assert!(facts.iter().any(|f| f.path.starts_with("./User/Vendor/MSFT/Policy/Config/")));
        assert!(facts.iter().any(|f| matches!(&f.allowed, Allowed::Admx { file, .. } if file.ends_with(".admx"))));
        // Paths are unique.
        let mut paths: Vec<&str> = facts.iter().map(|f| f.path.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), facts.len());
    }

    #[test]
    fn broken_documents_name_the_file_and_line() {
        let e = read_ddf(&DDF.replace("</DFProperties>\n    </Node>\n    <Node>", "</Node>"), "Demo.xml").unwrap_err();
        assert_eq!(e.file, "Demo.xml");
        assert!(e.line > 20, "{e}");
        let e = read_ddf(&DDF.replace("<DFFormat><int /></DFFormat>", ""), "Demo.xml").unwrap_err();
        assert!(e.problem.contains("Level") && e.problem.contains("DFFormat"), "{e}");
        let e = read_ddf(&DDF.replace("<Path>./Device/Vendor/MSFT</Path>", ""), "Demo.xml").unwrap_err();
        assert!(e.problem.contains("no <Path>"), "{e}");
    }
}
