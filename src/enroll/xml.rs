//! A small read-only XML element tree for the enrollment messages (SOAP envelopes, XCEP, WSTEP,
//! the provisioning document), and the text escaping used when writing them.
//!
//! Enrollment messages come from many server stacks (WCF, Go, Python) that disagree on prefixes,
//! element case (MS-MDE2 §2.2.10 shows `s:fault`, WCF sends `s:Fault`) and SOAP version, so
//! lookups here compare local names case-insensitively and ignore namespaces. Malformed XML is
//! refused with a [`Malformed`] naming the byte offset.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::Malformed;

/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 64;

/// One element: local name, attributes (local names), children and direct text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
    /// Byte offset of the start tag in the input.
    pub offset: usize,
}

impl Element {
    /// The first child with this local name (case-insensitive).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Every child with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name.eq_ignore_ascii_case(name))
    }

    /// The element at a path of child names.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |el, n| el.child(n))
    }

    /// The first element with this name in the subtree (self included), depth first.
    pub fn descendant(&self, name: &str) -> Option<&Element> {
        if self.name.eq_ignore_ascii_case(name) {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.descendant(name))
    }

    /// An attribute by local name (case-insensitive).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The trimmed direct text.
    pub fn value(&self) -> &str {
        self.text.trim()
    }

    /// True when the element carries `xsi:nil="true"`.
    pub fn is_nil(&self) -> bool {
        self.attr("nil").is_some_and(|v| v.trim() == "true")
    }

    /// The trimmed text of a child, `None` when the child is absent, nil or empty.
    pub fn child_value(&self, name: &str) -> Option<&str> {
        self.child(name).filter(|c| !c.is_nil()).map(Element::value).filter(|v| !v.is_empty())
    }
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_string()
}

fn bad(offset: u64, message: impl std::fmt::Display) -> Malformed {
    Malformed { element: String::new(), offset: offset as usize, problem: format!("not well-formed XML: {message}") }
}

/// Parses a whole document into its root element.
pub fn parse(text: &str) -> Result<Element, Malformed> {
    // Some Windows-stack servers start their bodies with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let before = reader.buffer_position();
        // Matched where it is returned (not moved into a variable first), as the SyncML reader
        // does: the event is read field by field rather than copied whole.
        let (start, empty) = match reader.read_event() {
            Err(e) => return Err(bad(reader.error_position(), e)),
            Ok(Event::Start(s)) => (s, false),
            Ok(Event::Empty(s)) => (s, true),
            Ok(Event::End(_)) => {
                let el = stack.pop().ok_or_else(|| bad(before, "unmatched end tag"))?;
                close(&mut stack, &mut root, el);
                continue;
            }
            Ok(Event::Text(t)) => {
                push_text(&mut stack, &t.xml10_content(), before)?;
                continue;
            }
            Ok(Event::CData(c)) => {
                push_text(&mut stack, &c.xml10_content(), before)?;
                continue;
            }
            Ok(Event::GeneralRef(r)) => {
                let piece: Cow<'_, str> = match r.resolve_char_ref().map_err(|e| bad(before, e))? {
                    Some(c) => Cow::Owned(c.to_string()),
                    None => {
                        let name = r.xml10_content();
                        Cow::Owned(
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| bad(before, format!("unknown entity &{name};")))?
                                .to_string(),
                        )
                    }
                };
                push_text(&mut stack, &piece, before)?;
                continue;
            }
            Ok(Event::DocType(_)) => return Err(bad(before, "DOCTYPE is not accepted")),
            Ok(Event::Eof) => break,
            Ok(_) => continue,
        };
        if root.is_some() {
            return Err(bad(before, "content after the root element"));
        }
        if stack.len() >= MAX_DEPTH {
            return Err(bad(before, format!("elements nested deeper than {MAX_DEPTH}")));
        }
        let mut attrs = Vec::new();
        for attr in start.attributes() {
            let attr = attr.map_err(|e| bad(before, e))?;
            let value = quick_xml::escape::unescape(&attr.value).map_err(|e| bad(before, e))?.into_owned();
            attrs.push((local(attr.key.as_ref()), value));
        }
        let el = Element {
            name: local(start.name().as_ref()),
            attrs,
            children: Vec::new(),
            text: String::new(),
            offset: before as usize,
        };
        if empty {
            close(&mut stack, &mut root, el);
        } else {
            stack.push(el);
        }
    }
    if let Some(open) = stack.last() {
        return Err(bad(text.len() as u64, format!("input ends inside <{}>", open.name)));
    }
    root.ok_or_else(|| bad(text.len() as u64, "no root element"))
}

fn push_text(stack: &mut [Element], piece: &str, at: u64) -> Result<(), Malformed> {
    match stack.last_mut() {
        Some(el) => el.text.push_str(piece),
        None if piece.trim().is_empty() => {}
        None => return Err(bad(at, "text outside the root element")),
    }
    Ok(())
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Escapes text for an element body or a double-quoted attribute.
pub fn esc(text: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_local_and_case_insensitive_and_text_is_unescaped() {
        let root = parse(
            r#"<s:Envelope xmlns:s="x"><s:body><A k:Name="v&amp;w">a &lt; b<![CDATA[<c>]]></A></s:body></s:Envelope>"#,
        )
        .unwrap();
        assert_eq!(root.name, "Envelope");
        let a = root.path(&["Body", "a"]).unwrap();
        assert_eq!(a.attr("name"), Some("v&w"));
        assert_eq!(a.value(), "a < b<c>");
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a/>trailing").is_err());
    }
}
