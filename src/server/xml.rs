//! A small namespace-agnostic XML tree for the enrollment SOAP requests (MS-MDE2 discovery,
//! MS-XCEP, MS-WSTEP), plus escaping for the responses the server writes.
//!
//! Owns reading SOAP envelopes into elements named by local name. It does not know SOAP
//! semantics; `enroll.rs` queries the tree. SyncML has its own codec in `crate::syncml`.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::Event;

/// The deepest nesting accepted (a SOAP envelope is a few levels deep).
const MAX_DEPTH: usize = 32;

/// One element: local name, attributes (local names), children and direct text.
#[derive(Debug, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The first descendant (depth first, self excluded) with this local name.
    pub fn find(&self, name: &str) -> Option<&Element> {
        self.children.iter().find_map(|c| if c.name == name { Some(c) } else { c.find(name) })
    }

    /// Every descendant with this local name, in document order.
    pub fn find_all<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.find_all(name, out);
        }
    }

    /// The value of an attribute, by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The trimmed text.
    pub fn trimmed(&self) -> &str {
        self.text.trim()
    }
}

/// Parses a document; the error names the byte offset.
pub fn parse(text: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event().map_err(|e| format!("XML error at byte {}: {e}", reader.error_position()))?;
        let piece: Cow<'_, str> = match event {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(event, Event::Empty(_));
                let mut el = Element { name: local(s.name().as_ref()).to_string(), ..Element::default() };
                for a in s.attributes().flatten() {
                    let key: String = a.key.as_ref().to_string();
                    if key == "xmlns" || key.starts_with("xmlns:") {
                        continue;
                    }
                    let value = quick_xml::escape::unescape(&a.value)
                        .map(|v| v.into_owned())
                        .unwrap_or_else(|_| a.value.to_string());
                    el.attrs.push((local(&key).to_string(), value));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("XML error at byte {at}: elements nested deeper than {MAX_DEPTH}"));
                }
                if !empty {
                    stack.push(el);
                    continue;
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
                continue;
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| format!("XML error at byte {at}: unmatched end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
                continue;
            }
            Event::Text(t) => t.xml10_content(),
            Event::CData(c) => c.xml10_content(),
            Event::GeneralRef(r) => match r.resolve_char_ref().map_err(|e| format!("XML error at byte {at}: {e}"))? {
                Some(c) => Cow::Owned(c.to_string()),
                None => {
                    let name = r.xml10_content();
                    Cow::Borrowed(
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("XML error at byte {at}: unknown entity &{name};"))?,
                    )
                }
            },
            Event::DocType(_) => return Err(format!("XML error at byte {at}: DOCTYPE is not accepted")),
            Event::Eof => return Err("the document ends before its root element is closed".to_string()),
            _ => continue,
        };
        if let Some(el) = stack.last_mut() {
            el.text.push_str(&piece);
        }
    }
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Escapes text for an XML element or attribute value.
pub fn esc(text: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_soap_by_local_name_and_refuses_broken_xml() {
        let doc = parse(
            r#"<s:Envelope xmlns:s="x"><s:Header><wsse:Security><wsse:UsernameToken><wsse:Username>a&amp;b</wsse:Username></wsse:UsernameToken></wsse:Security></s:Header>
            <s:Body><ac:ContextItem Name="DeviceID"><ac:Value>AB</ac:Value></ac:ContextItem><e/></s:Body></s:Envelope>"#,
        )
        .unwrap();
        assert_eq!(doc.name, "Envelope");
        assert_eq!(doc.find("Username").unwrap().trimmed(), "a&b");
        let item = doc.find("ContextItem").unwrap();
        assert_eq!(item.attr("Name"), Some("DeviceID"));
        assert_eq!(item.child("Value").unwrap().trimmed(), "AB");
        assert!(doc.find("e").is_some());
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
    }
}
