//! Node tables: the shape of a CSP, shared by every device (a device stores only values).
//!
//! A [`NodeSpec`] is `'static` data: name, format, allowed operations, lifetime, default value,
//! MIME type and children. A dynamic name (one chosen by the server, like `<ProviderID>` or
//! `<ProductID>`) is written in angle brackets and matches any segment that no fixed sibling
//! matches.

use std::fmt;
use std::ops::BitOr;

/// The DDF format of a node (OMA DM TND Meta Format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Chr,
    Int,
    Bool,
    B64,
    Xml,
    Node,
    Null,
    Bin,
    Time,
    Float,
    Date,
}

impl Format {
    /// The name used in `Meta/Format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Chr => "chr",
            Format::Int => "int",
            Format::Bool => "bool",
            Format::B64 => "b64",
            Format::Xml => "xml",
            Format::Node => "node",
            Format::Null => "null",
            Format::Bin => "bin",
            Format::Time => "time",
            Format::Float => "float",
            Format::Date => "date",
        }
    }

    /// Parses a `Meta/Format` value (case-insensitive).
    pub fn parse(s: &str) -> Option<Format> {
        // Case-insensitive without lowercasing a copy: it runs for every item a server sends.
        let s = s.trim();
        [
            Format::Chr,
            Format::Int,
            Format::Bool,
            Format::B64,
            Format::Xml,
            Format::Node,
            Format::Null,
            Format::Bin,
            Format::Time,
            Format::Float,
            Format::Date,
        ]
        .into_iter()
        .find(|f| f.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether data sent with format `sent` may be stored in a node of this format. Text forms
    /// are interchangeable where servers mix them: `chr` for `xml` (Microsoft's EnterpriseDesktopAppManagement CSP page) and for
    /// `int`/`bool` values whose text is then checked.
    pub fn accepts(self, sent: Format) -> bool {
        self == sent
            || matches!(
                (self, sent),
                (Format::Xml, Format::Chr)
                    | (Format::Chr, Format::Xml)
                    | (Format::Int, Format::Chr)
                    | (Format::Bool, Format::Chr)
                    | (Format::Null, _)
            )
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of allowed operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ops(u8);

impl Ops {
    pub const NONE: Ops = Ops(0);
    pub const GET: Ops = Ops(1);
    pub const ADD: Ops = Ops(2);
    pub const REPLACE: Ops = Ops(4);
    pub const DELETE: Ops = Ops(8);
    pub const EXEC: Ops = Ops(16);
    /// Get, Add, Replace, Delete: the usual set of a writable dynamic node.
    pub const ALL_WRITE: Ops = Ops(1 | 2 | 4 | 8);

    /// True when every operation of `other` is in `self`.
    pub const fn contains(self, other: Ops) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets, usable in `const` node tables.
    pub const fn with(self, other: Ops) -> Ops {
        Ops(self.0 | other.0)
    }

    /// Names of the operations, for display (`Get,Add,Replace`).
    pub fn names(self) -> String {
        let all = [
            (Ops::GET, "Get"),
            (Ops::ADD, "Add"),
            (Ops::REPLACE, "Replace"),
            (Ops::DELETE, "Delete"),
            (Ops::EXEC, "Exec"),
        ];
        all.iter().filter(|(o, _)| self.contains(*o)).map(|(_, n)| *n).collect::<Vec<_>>().join(",")
    }
}

impl BitOr for Ops {
    type Output = Ops;
    fn bitor(self, rhs: Ops) -> Ops {
        self.with(rhs)
    }
}

/// Whether a node always exists (permanent) or is created and deleted by the server (dynamic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifetime {
    Permanent,
    Dynamic,
}

/// One node of a CSP's node table.
#[derive(Debug)]
pub struct NodeSpec {
    /// Segment name, or `<Placeholder>` for a dynamic name.
    pub name: &'static str,
    pub format: Format,
    pub ops: Ops,
    pub lifetime: Lifetime,
    /// Value read when nothing was stored.
    pub default: Option<&'static str>,
    /// The DDF `DFType` MIME type (`?prop=Type`); `text/plain` when unset on a leaf.
    pub mime: Option<&'static str>,
    pub children: &'static [NodeSpec],
}

impl NodeSpec {
    /// A permanent leaf with no default.
    pub const fn leaf(name: &'static str, format: Format, ops: Ops) -> NodeSpec {
        NodeSpec { name, format, ops, lifetime: Lifetime::Permanent, default: None, mime: None, children: &[] }
    }

    /// A permanent interior node.
    pub const fn interior(name: &'static str, ops: Ops, children: &'static [NodeSpec]) -> NodeSpec {
        NodeSpec { name, format: Format::Node, ops, lifetime: Lifetime::Permanent, default: None, mime: None, children }
    }

    /// The same node with a default value.
    pub const fn default(mut self, value: &'static str) -> NodeSpec {
        self.default = Some(value);
        self
    }

    /// The same node, created and deleted by the server.
    pub const fn dynamic(mut self) -> NodeSpec {
        self.lifetime = Lifetime::Dynamic;
        self
    }

    /// The same node with a DDF MIME type.
    pub const fn mime(mut self, mime: &'static str) -> NodeSpec {
        self.mime = Some(mime);
        self
    }

    /// True for interior nodes.
    pub fn is_interior(&self) -> bool {
        self.format == Format::Node
    }

    /// True when the name is a placeholder for server-chosen names.
    pub fn is_placeholder(&self) -> bool {
        self.name.starts_with('<')
    }

    /// The child spec matching a segment: a fixed name first, else the placeholder.
    pub fn child(&self, segment: &str) -> Option<&'static NodeSpec> {
        // The name comparison first: it compares lengths before it reads a name's bytes, and a
        // node can have a hundred children (`Policy/Config`) whose names live elsewhere in memory.
        self.children
            .iter()
            .find(|c| c.name == segment && !c.is_placeholder())
            .or_else(|| self.children.iter().find(|c| c.is_placeholder()))
    }

    /// [`NodeSpec::child`] with fixed names compared in any ASCII case.
    pub fn child_ignore_case(&self, segment: &str) -> Option<&'static NodeSpec> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(segment) && !c.is_placeholder())
            .or_else(|| self.children.iter().find(|c| c.is_placeholder()))
    }

    /// The `?prop=Type` value.
    pub fn mime_type(&self) -> &'static str {
        self.mime.unwrap_or(if self.is_interior() { "" } else { "text/plain" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TABLE: NodeSpec = NodeSpec::interior(
        "X",
        Ops::GET,
        &[
            NodeSpec::leaf("Fixed", Format::Int, Ops::GET).default("1"),
            NodeSpec::interior("<Id>", Ops::ALL_WRITE, &[]).dynamic(),
        ],
    );

    #[test]
    fn fixed_names_win_over_placeholders() {
        assert_eq!(TABLE.child("Fixed").map(|c| c.name), Some("Fixed"));
        assert_eq!(TABLE.child("anything").map(|c| c.name), Some("<Id>"));
        assert_eq!(TABLE.child("fixed").map(|c| c.name), Some("<Id>"));
        assert_eq!(TABLE.child_ignore_case("fIXED").map(|c| c.name), Some("Fixed"));
        assert_eq!(Ops::GET.with(Ops::ADD).names(), "Get,Add");
        assert!(Format::Xml.accepts(Format::Chr));
        assert!(!Format::Int.accepts(Format::B64));
    }
}
