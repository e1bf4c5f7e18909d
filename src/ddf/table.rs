//! The compact node table: one line per node, tab-separated, facts only, small enough to ship
//! in the repository and to read at start-up.
//!
//! Columns: path, format, access (`G` Get, `A` Add, `R` Replace, `D` Delete, `E` Exec),
//! occurrence (`1`, `0-1`, `0-*`, `1-*`, `0-N`, `1-N`), marks (`P` permanent scope, `N` dynamic
//! name), dynamic naming, MIME type, first OS build, editions, default (`=value`, empty for
//! none), allowed values (`enum:a|b`, `flag:1|2`, `range:[0-9]`, `regex:...`,
//! `admx:area|name|file`, `xsd`, `json`, `sddl`, empty for any), CSP version (`MSFT:CspVersion`;
//! a table without this last column reads as one without versions). Text is escaped with `\\`,
//! `\t`, `\n`, `\r` and `\p` (a `|` inside a value). Lines starting with `#` are comments.
//! Edition lists repeat across thousands of policies: each distinct list is written once, on an
//! `@editions<TAB>E<n><TAB><list>` line before the nodes, and a node names it `E<n>`.

use super::{Allowed, NodeFact, Occurrence};
use crate::tree::{Format, Ops};

/// The first line of a table written by [`encode`].
pub const HEADER: &str = "# mdmsim DDF node table v1: path format access occurrence marks naming mime os_build editions default allowed csp_version";

/// Why a table line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node table line {line}: {problem}")]
pub struct TableError {
    pub line: usize,
    pub problem: String,
}

/// Writes the table for `facts`, in their order.
pub fn encode(facts: &[NodeFact]) -> String {
    let mut out = String::with_capacity(facts.len() * 96);
    out.push_str(HEADER);
    out.push('\n');
    let mut editions: Vec<&str> = Vec::new();
    for e in facts.iter().filter_map(|f| f.editions.as_deref()) {
        if !editions.contains(&e) {
            out.push_str(&format!("@editions\tE{}\t{}\n", editions.len() + 1, esc(e)));
            editions.push(e);
        }
    }
    for f in facts {
        let access: String =
            [(Ops::GET, 'G'), (Ops::ADD, 'A'), (Ops::REPLACE, 'R'), (Ops::DELETE, 'D'), (Ops::EXEC, 'E')]
                .iter()
                .filter(|(op, _)| f.access.contains(*op))
                .map(|(_, c)| *c)
                .collect();
        let marks = format!("{}{}", if f.permanent { "P" } else { "" }, if f.dynamic { "N" } else { "" });
        let default = f.default.as_deref().map(|d| format!("={}", esc(d))).unwrap_or_default();
        let cols = [
            esc(&f.path),
            f.format.as_str().to_string(),
            access,
            f.occurrence.as_table(),
            marks,
            opt(&f.naming),
            opt(&f.mime),
            opt(&f.os_build),
            f.editions
                .as_deref()
                .and_then(|e| editions.iter().position(|x| *x == e))
                .map(|i| format!("E{}", i + 1))
                .unwrap_or_default(),
            default,
            allowed(&f.allowed),
            opt(&f.csp_version),
        ];
        out.push_str(&cols.join("\t"));
        out.push('\n');
    }
    out
}

/// Reads a table written by [`encode`].
pub fn decode(text: &str) -> Result<Vec<NodeFact>, TableError> {
    let mut out = Vec::new();
    let mut editions: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |problem: String| TableError { line: i + 1, problem };
        if let Some(def) = line.strip_prefix("@editions\t") {
            let (name, list) = def.split_once('\t').ok_or_else(|| err("@editions needs a name and a list".into()))?;
            editions.insert(name, unesc(list));
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let (cols, csp_version) = match cols.len() {
            12 => (&cols[..11], unopt(cols[11])),
            _ => (&cols[..], None),
        };
        let [path, format, access, occurrence, marks, naming, mime, os_build, editions_col, default, allowed_col] =
            cols[..]
        else {
            return Err(err(format!("{} columns, expected 11 or 12", cols.len())));
        };
        let format = Format::parse(format).ok_or_else(|| err(format!("unknown format {format:?}")))?;
        let mut ops = Ops::NONE;
        for c in access.chars() {
            ops = ops.with(match c {
                'G' => Ops::GET,
                'A' => Ops::ADD,
                'R' => Ops::REPLACE,
                'D' => Ops::DELETE,
                'E' => Ops::EXEC,
                other => return Err(err(format!("unknown access letter {other:?}"))),
            });
        }
        let occurrence =
            Occurrence::from_table(occurrence).ok_or_else(|| err(format!("unknown occurrence {occurrence:?}")))?;
        let default = match default {
            "" => None,
            d => Some(unesc(d.strip_prefix('=').ok_or_else(|| err(format!("default {d:?} does not start with =")))?)),
        };
        out.push(NodeFact {
            path: unesc(path),
            format,
            access: ops,
            occurrence,
            permanent: marks.contains('P'),
            dynamic: marks.contains('N'),
            naming: unopt(naming),
            mime: unopt(mime),
            os_build: unopt(os_build),
            editions: match editions_col {
                "" => None,
                name => Some(editions.get(name).cloned().ok_or_else(|| err(format!("unknown edition list {name:?}")))?),
            },
            default,
            allowed: read_allowed(allowed_col).map_err(err)?,
            csp_version,
        });
    }
    Ok(out)
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map(esc).unwrap_or_default()
}

fn unopt(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| unesc(v))
}

fn list(items: &[String]) -> String {
    items.iter().map(|s| esc(s)).collect::<Vec<_>>().join("|")
}

fn unlist(s: &str) -> Vec<String> {
    if s.is_empty() { Vec::new() } else { s.split('|').map(unesc).collect() }
}

fn allowed(a: &Allowed) -> String {
    match a {
        Allowed::Any => String::new(),
        Allowed::Enum(v) => format!("enum:{}", list(v)),
        Allowed::Flag(v) => format!("flag:{}", list(v)),
        Allowed::Range(r) => format!("range:{}", esc(r)),
        Allowed::Regex(r) => format!("regex:{}", esc(r)),
        Allowed::Admx { area, name, file } => format!("admx:{}|{}|{}", esc(area), esc(name), esc(file)),
        Allowed::Xsd => "xsd".into(),
        Allowed::Json => "json".into(),
        Allowed::Sddl => "sddl".into(),
    }
}

fn read_allowed(s: &str) -> Result<Allowed, String> {
    if s.is_empty() {
        return Ok(Allowed::Any);
    }
    let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
    Ok(match kind {
        "enum" => Allowed::Enum(unlist(rest)),
        "flag" => Allowed::Flag(unlist(rest)),
        "range" => Allowed::Range(unesc(rest)),
        "regex" => Allowed::Regex(unesc(rest)),
        "admx" => {
            let parts = unlist(rest);
            let [area, name, file] = parts.as_slice() else {
                return Err(format!("admx needs area|name|file, got {rest:?}"));
            };
            Allowed::Admx { area: area.clone(), name: name.clone(), file: file.clone() }
        }
        "xsd" => Allowed::Xsd,
        "json" => Allowed::Json,
        "sddl" => Allowed::Sddl,
        other => return Err(format!("unknown allowed-values kind {other:?}")),
    })
}

/// Escapes the characters that separate columns, lines and list items.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '|' => out.push_str("\\p"),
            c => out.push(c),
        }
    }
    out
}

fn unesc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('p') => out.push('|'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(path: &str, allowed: Allowed) -> NodeFact {
        NodeFact {
            path: path.into(),
            format: Format::Chr,
            access: Ops::GET.with(Ops::REPLACE),
            occurrence: Occurrence::ZeroOrN(5),
            permanent: false,
            dynamic: true,
            naming: Some("UniqueName".into()),
            mime: Some("text/plain".into()),
            default: Some("a\tb|c\\d\n".into()),
            allowed,
            os_build: Some("10.0.22000".into()),
            editions: Some("0x4;0x30".into()),
            csp_version: Some("1.2".into()),
        }
    }

    #[test]
    fn every_kind_of_fact_round_trips_with_awkward_text() {
        let facts = vec![
            fact("./Device/Vendor/MSFT/X/<ID>", Allowed::Enum(vec!["a|b".into(), "".into(), "c".into()])),
            fact("./User/Vendor/MSFT/Y", Allowed::Regex(r"^\{[0-9]+\}$".into())),
            fact(
                "./Device/Vendor/MSFT/Policy/Config/A/B",
                Allowed::Admx { area: "a~b".into(), name: "N".into(), file: "f.admx".into() },
            ),
            fact("./Z", Allowed::Range("[(-1)-100]".into())),
            fact("./Z/F", Allowed::Flag(vec!["1".into(), "2".into()])),
            NodeFact {
                default: None,
                mime: None,
                naming: None,
                editions: None,
                csp_version: None,
                ..fact("./Z/Q", Allowed::Any)
            },
            NodeFact { editions: Some("0x1".into()), ..fact("./Z/R", Allowed::Json) },
            NodeFact { default: Some(String::new()), ..fact("./Z/E", Allowed::Xsd) },
        ];
        let text = encode(&facts);
        assert!(text.starts_with(HEADER));
        assert_eq!(text.lines().count(), facts.len() + 3, "one line per node and per edition list:\n{text}");
        assert_eq!(decode(&text).unwrap(), facts);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = decode("./A\tchr\tG\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.problem.contains("3 columns"), "{e}");
        let e = decode("# c\n./A\tnope\tG\t1\t\t\t\t\t\t\t\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.problem.contains("nope"), "{e}");
    }
}
