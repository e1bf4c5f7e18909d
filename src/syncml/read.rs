//! The SyncML reader: XML text -> [`SyncMl`].
//!
//! Two steps: quick-xml events build a small element tree (namespace prefixes dropped, byte
//! offsets kept), then each element is converted to its typed form. Tolerant where real servers
//! are sloppy (MS-MDM): any namespace prefix, `SYNCML1.1` or `1.2` in any case, any child
//! order, string CmdIDs, whitespace around LocURIs, escaped text, CDATA or raw embedded XML in
//! `Data`. Strict where it matters: input that is not well-formed XML or not SyncML, and unknown
//! elements inside known ones, are refused with a [`DecodeError`] naming the element and its byte
//! offset. An unknown element in a command position is kept as [`Command::Unsupported`] so the
//! device can answer it with a status (OMA DM RepPro Atomic and Sequence).
//!
//! Speed matters (a fleet decodes every server message of every device): the element tree is one
//! vector, names and plain text are slices of the input, the text after a start tag is checked
//! and stepped over rather than read as events, and text is unescaped once per leaf.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::model::*;

/// Deepest element nesting accepted; deeper input is refused rather than risking the stack.
const MAX_DEPTH: usize = 48;

/// Why a message could not be decoded. Offsets are byte offsets into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not well-formed XML at byte {offset}: {message}")]
    Xml { offset: usize, message: String },
    #[error("not a SyncML message: {problem} (byte {offset})")]
    NotSyncMl { offset: usize, problem: String },
    #[error("<{element}> at byte {offset}: {problem}")]
    Invalid { element: String, offset: usize, problem: String },
}

impl DecodeError {
    /// Byte offset of the problem in the input.
    pub fn offset(&self) -> usize {
        match self {
            DecodeError::Xml { offset, .. }
            | DecodeError::NotSyncMl { offset, .. }
            | DecodeError::Invalid { offset, .. } => *offset,
        }
    }

    /// The element at fault, when one is known.
    pub fn element(&self) -> Option<&str> {
        match self {
            DecodeError::Invalid { element, .. } => Some(element),
            _ => None,
        }
    }
}

/// 1-based line and column of a byte offset in `text` (columns count characters).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut cut = offset;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let before = &text[..cut];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Decodes one SyncML message.
pub fn decode(text: &str) -> Result<SyncMl, DecodeError> {
    // A byte-order mark (.NET servers write one) is not content. It is cut off here so that every
    // offset below is a position in `rest`; errors are moved back to positions in `text`.
    match text.strip_prefix('\u{feff}') {
        Some(rest) => decode_from(rest).map_err(|e| e.shifted('\u{feff}'.len_utf8())),
        None => decode_from(text),
    }
}

impl DecodeError {
    fn shifted(mut self, by: usize) -> Self {
        match &mut self {
            DecodeError::Xml { offset, .. }
            | DecodeError::NotSyncMl { offset, .. }
            | DecodeError::Invalid { offset, .. } => *offset += by,
        }
        self
    }
}

fn decode_from(text: &str) -> Result<SyncMl, DecodeError> {
    let doc = parse_tree(text)?;
    let root = doc.root();
    if root.name != "SyncML" {
        return Err(DecodeError::NotSyncMl {
            offset: root.offset,
            problem: format!("root element is <{}>, expected <SyncML>", root.name),
        });
    }
    if let Some(ns) = &doc.xmlns {
        let ns = ns.trim().to_ascii_uppercase();
        if ns != "SYNCML:SYNCML1.2" && ns != "SYNCML:SYNCML1.1" {
            return Err(DecodeError::NotSyncMl {
                offset: root.offset,
                problem: format!("the namespace of <SyncML> is {ns:?}, not SYNCML:SYNCML1.1 or 1.2"),
            });
        }
    }
    let mut hdr = None;
    let mut body = None;
    for child in root.children() {
        match child.name {
            "SyncHdr" if hdr.is_none() => hdr = Some(sync_hdr(child)?),
            "SyncBody" if body.is_none() => body = Some(sync_body(child, text)?),
            _ => return Err(unexpected(child, root)),
        }
    }
    let hdr = hdr.ok_or_else(|| missing(root, "SyncHdr"))?;
    let body = body.ok_or_else(|| missing(root, "SyncBody"))?;
    Ok(SyncMl { hdr, body })
}

/// An element of the intermediate tree. All elements of a message live in one vector in
/// document order (one allocation, not one per element): an element's children are the elements
/// after it up to `end`, each followed by its own subtree.
struct El<'a> {
    name: &'a str,
    offset: usize,
    /// Index one past the element's last descendant.
    end: usize,
    /// For a leaf whose text is not its raw content (references, CDATA or carriage returns),
    /// 1 + the index of its text in [`Doc::owned`]; 0 when the text is the raw content.
    owned: u32,
    /// Byte range of everything between the start and end tags.
    inner: (usize, usize),
    /// Entity or character references seen while the element had no child.
    refs: bool,
    /// CDATA, comments or processing instructions seen while the element had no child.
    mixed: bool,
}

/// The parsed element tree of one message.
struct Doc<'a> {
    src: &'a str,
    els: Vec<El<'a>>,
    /// The leaf texts that are not slices of the input (see [`El::owned`]).
    owned: Vec<String>,
    /// The root's `xmlns` (the only namespace that decides anything; `syncml:metinf` on Meta
    /// children is not checked).
    xmlns: Option<String>,
}

impl<'a> Doc<'a> {
    fn root(&self) -> Node<'_, 'a> {
        Node { doc: self, i: 0 }
    }
}

/// A handle on one element of a [`Doc`].
#[derive(Clone, Copy)]
struct Node<'d, 'a> {
    doc: &'d Doc<'a>,
    i: usize,
}

impl<'d, 'a> std::ops::Deref for Node<'d, 'a> {
    type Target = El<'a>;

    fn deref(&self) -> &El<'a> {
        &self.doc.els[self.i]
    }
}

impl<'d, 'a> Node<'d, 'a> {
    /// The element children, in order.
    fn children(self) -> impl Iterator<Item = Node<'d, 'a>> {
        let doc = self.doc;
        let end = doc.els[self.i].end;
        let mut next = self.i + 1;
        std::iter::from_fn(move || {
            (next < end).then(|| {
                let node = Node { doc, i: next };
                next = doc.els[next].end;
                node
            })
        })
    }

    fn has_children(self) -> bool {
        self.doc.els[self.i].end > self.i + 1
    }

    /// The text of a leaf (empty for an element with children: `Data` with embedded XML takes
    /// the raw `inner` range instead).
    fn text(self) -> &'d str {
        let el = &self.doc.els[self.i];
        if self.has_children() {
            ""
        } else if el.owned > 0 {
            &self.doc.owned[el.owned as usize - 1]
        } else {
            self.doc.src.get(el.inner.0..el.inner.1).unwrap_or_default()
        }
    }
}

/// The name without a namespace prefix (`msft:Data` -> `Data`).
fn local(name: &str) -> &str {
    match name.bytes().rposition(|b| b == b':') {
        Some(colon) => &name[colon + 1..],
        None => name,
    }
}

/// What each byte may be in an element name: [`NAME_START`] (a letter, `_`, `:` or any byte
/// of a non-ASCII character) and [`NAME_CHAR`] (those, digits, `-` and `.`).
const NAME_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() || c == b'_' || c == b':' || c >= 0x80 {
            NAME_START | NAME_CHAR
        } else if c.is_ascii_digit() || c == b'-' || c == b'.' {
            NAME_CHAR
        } else {
            0
        };
        b += 1;
    }
    t
};
const NAME_START: u8 = 1;
const NAME_CHAR: u8 = 2;

/// The local part of an element name (after its namespace prefix) when the name and that part
/// are both XML `Name`s (XML 1.0 §2.3, with every non-ASCII character allowed); `None`
/// otherwise. One table lookup per byte: it runs for every element.
fn checked_name(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    let start = |b: u8| NAME_BYTES[b as usize] & NAME_START != 0;
    if !bytes.first().is_some_and(|&b| start(b)) {
        return None;
    }
    let mut all = NAME_CHAR;
    let mut colon = false;
    for &b in bytes {
        all &= NAME_BYTES[b as usize];
        colon |= b == b':';
    }
    if all == 0 {
        return None;
    }
    let local = if colon { bytes.iter().rposition(|&b| b == b':').map_or(0, |c| c + 1) } else { 0 };
    // The local part (after the last colon, so colon-free) must itself start a Name: `a:1b` and
    // `a:` are not element names.
    bytes.get(local).is_some_and(|&b| start(b)).then(|| &name[local..])
}

/// A not-well-formed error at `offset`, naming the element it happened in.
fn xml_err(els: &[El<'_>], stack: &[usize], offset: u64, e: impl std::fmt::Display) -> DecodeError {
    let message = match stack.last() {
        Some(&open) => format!("inside <{}>: {e}", els[open].name),
        None => e.to_string(),
    };
    DecodeError::Xml { offset: offset as usize, message }
}

fn parse_tree(text: &str) -> Result<Doc<'_>, DecodeError> {
    let mut reader = Reader::from_str(text);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;
    // Whitespace before markup (the indentation between elements, a third of the events of an
    // indented message) is skipped inside the reader instead of coming back as a text event:
    // nothing here reads it, a leaf's text being its raw content between its tags. A start tag's
    // offset is then where its name says; other markup's is past that whitespace
    // ([`past_space`]), exactly where it was when the whitespace came as an event of its own.
    cfg.trim_text_start = true;
    // About one element per 30 to 40 bytes in typical messages (indented); a guess, not a limit.
    let mut els: Vec<El<'_>> = Vec::with_capacity((text.len() / 32 + 8).min(1 << 14));
    let mut owned: Vec<String> = Vec::new();
    let mut stack: Vec<usize> = Vec::with_capacity(16);
    let mut xmlns = None;
    let mut closed_root = false;
    // Most messages have no carriage return at all: then a leaf needs its own text only for
    // references or CDATA, and the others are not searched for one.
    let any_cr = memchr::memchr(b'\r', text.as_bytes()).is_some();
    loop {
        let before = reader.buffer_position() as usize;
        // Matched where it is returned, not moved into a variable first: the event is read
        // field by field, not copied whole (a copy right after the call stalls on the stores
        // that wrote it, about a third of this loop's own time).
        let (start, is_empty) = match reader.read_event() {
            Err(e) => {
                // quick-xml reports a mismatched end tag where the tag starts; the other errors
                // at the position it reached.
                let at = match &e {
                    quick_xml::Error::IllFormed(quick_xml::errors::IllFormedError::MismatchedEndTag { .. }) => {
                        past_space(text, before) as u64
                    }
                    _ => reader.error_position(),
                };
                return Err(xml_err(&els, &stack, at, e));
            }
            Ok(Event::Start(start)) => (start, false),
            Ok(Event::Empty(start)) => (start, true),
            Ok(Event::End(_)) => {
                let end_tag = past_space(text, before);
                let at = end_tag as u64;
                let i = stack.pop().ok_or_else(|| xml_err(&els, &stack, at, "unmatched end tag"))?;
                let end = els.len();
                els[i].end = end;
                els[i].inner.1 = end_tag;
                if end == i + 1
                    && (any_cr || els[i].refs || els[i].mixed)
                    && let Some(leaf) = leaf_text_of(&els[i], text).map_err(|e| xml_err(&els, &[i], at, e))?
                {
                    owned.push(leaf);
                    els[i].owned = u32::try_from(owned.len())
                        .map_err(|_| xml_err(&els, &[i], at, "too many escaped texts in one message"))?;
                }
                closed_root |= stack.is_empty();
                continue;
            }
            Ok(Event::Eof) => break,
            Ok(Event::Text(t)) => {
                // Text starts where the reading did (with the whitespace it may begin with).
                if stack.is_empty() && !t.trim().is_empty() {
                    return Err(xml_err(&els, &stack, before as u64, "text outside the root element"));
                }
                continue;
            }
            Ok(Event::GeneralRef(r)) => {
                let at = past_space(text, before) as u64;
                // Checked here, resolved when the leaf closes.
                let known = r.resolve_char_ref().map_err(|e| xml_err(&els, &stack, at, e))?.is_some()
                    || quick_xml::escape::resolve_predefined_entity(&r).is_some();
                if !known {
                    return Err(xml_err(&els, &stack, at, format!("unknown entity &{};", &*r)));
                }
                match stack.last() {
                    Some(&i) => els[i].refs = true,
                    None => return Err(xml_err(&els, &stack, at, "text outside the root element")),
                }
                continue;
            }
            Ok(Event::CData(_)) => match stack.last() {
                Some(&i) => {
                    els[i].mixed = true;
                    continue;
                }
                None => {
                    let at = past_space(text, before) as u64;
                    return Err(xml_err(&els, &stack, at, "text outside the root element"));
                }
            },
            Ok(Event::Comment(_) | Event::PI(_)) => {
                if let Some(&i) = stack.last() {
                    els[i].mixed = true;
                }
                continue;
            }
            Ok(Event::DocType(_)) => {
                let at = past_space(text, before) as u64;
                return Err(xml_err(&els, &stack, at, "DOCTYPE is not accepted in SyncML"));
            }
            // `<?xml ...?>` is only allowed as the very first thing (XML 1.0 §2.8).
            Ok(Event::Decl(_)) => match past_space(text, before) {
                0 => continue,
                at => return Err(xml_err(&els, &stack, at as u64, "XML declaration not at the start")),
            },
        };
        // Borrow the name from the input so the tree holds no copies of names: the reader's name
        // is a slice of `text` (a slice reader), so its place in `text` is where it points. The
        // tag starts with the `<` right before it.
        let raw_name = start.name().into_inner();
        let name_start = (raw_name.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
        let Some(name) = text
            .get(name_start..name_start.wrapping_add(raw_name.len()))
            .filter(|n| std::ptr::eq(n.as_ptr(), raw_name.as_ptr()) && name_start > 0)
        else {
            let at = past_space(text, before) as u64;
            return Err(xml_err(&els, &stack, at, "start tag not where the XML reader says it is"));
        };
        let tag = name_start - 1;
        let at = tag as u64;
        if closed_root {
            return Err(xml_err(&els, &stack, at, "content after the root element"));
        }
        if stack.len() >= MAX_DEPTH {
            return Err(xml_err(&els, &stack, at, format!("elements nested deeper than {MAX_DEPTH}")));
        }
        // quick-xml does not check names; `<Final//>` would otherwise be an element `Final/`.
        let Some(local_name) = checked_name(name) else {
            return Err(xml_err(&els, &stack, at, format!("<{name}> is not a valid element name")));
        };
        // Every element's attributes are checked (well-formedness), but only the root's
        // namespace is kept.
        if !start.attributes_raw().is_empty() && !attributes_ok(&start, els.is_empty(), &mut xmlns) {
            // Something is wrong (or unusual): the checked reading says what, as quick-xml words it.
            for attr in start.attributes() {
                let attr = attr.map_err(|e| DecodeError::Xml {
                    offset: tag,
                    message: format!("in the attributes of <{}>: {e}", local(name)),
                })?;
                if els.is_empty() && attr.key.as_ref() == "xmlns" {
                    let value = quick_xml::escape::unescape(&attr.value).map_err(|e| xml_err(&els, &stack, at, e))?;
                    xmlns = Some(value.into_owned());
                }
            }
        }
        let i = els.len();
        let inner = reader.buffer_position() as usize;
        els.push(El {
            name: local_name,
            offset: tag,
            end: i + 1,
            owned: 0,
            inner: (inner, inner),
            refs: false,
            mixed: false,
        });
        if is_empty {
            closed_root |= stack.is_empty();
        } else {
            stack.push(i);
            // The text up to the next tag (a leaf's text, or the indentation before a first
            // child) is checked here and stepped over instead of read as text and reference
            // events, one per piece (a Data full of escaped XML is a hundred of them): nothing
            // reads their content, the leaf's text being its raw content between its tags. Text
            // with a reference the reader would refuse is left to it, and its error stands.
            if let Some(len) = memchr::memchr(b'<', &text.as_bytes()[inner..]).filter(|&len| len > 0)
                && let Some(refs) = text_refs(&text[inner..inner + len])
            {
                std::io::BufRead::consume(&mut reader.stream(), len);
                els[i].refs = refs;
            }
        }
    }
    if let Some(&open) = stack.last() {
        let open = &els[open];
        return Err(DecodeError::Xml {
            offset: text.len(),
            message: format!("input ends inside <{}> opened at byte {}", open.name, open.offset),
        });
    }
    if els.is_empty() {
        return Err(DecodeError::Xml { offset: text.len(), message: "no root element".into() });
    }
    Ok(Doc { src: text, els, owned, xmlns })
}

/// Whether `text` (character data, no markup in it) has references, when each is one the event
/// loop accepts (a well-formed character reference or a predefined entity, ended by `;` before
/// any other `&`); `None` when one is not, to be read and refused as events are.
fn text_refs(text: &str) -> Option<bool> {
    let bytes = text.as_bytes();
    let mut refs = false;
    let mut from = 0;
    while let Some(amp) = memchr::memchr(b'&', &bytes[from..]).map(|a| from + a) {
        let end = amp + 1 + memchr::memchr2(b';', b'&', &bytes[amp + 1..]).filter(|&e| bytes[amp + 1 + e] == b';')?;
        let r = quick_xml::events::BytesRef::new(&text[amp + 1..end]);
        if !(r.resolve_char_ref().ok()?.is_some() || quick_xml::escape::resolve_predefined_entity(&r).is_some()) {
            return None;
        }
        refs = true;
        from = end + 1;
    }
    Some(refs)
}

/// Where the markup (or reference) read from `from` starts: past the whitespace the reader skips
/// before it (XML's space, tab, carriage return and line feed).
fn past_space(text: &str, from: usize) -> usize {
    let rest = text.as_bytes().get(from..).unwrap_or_default();
    from + rest.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')).unwrap_or(rest.len())
}

/// Reads the attributes of a start tag on the fast path: true when they are well-formed, no name
/// repeats and there are few (the root's `xmlns` is kept in `xmlns`); false sends the caller to
/// quick-xml's checked reading, which reports the problem. quick-xml's own duplicate check
/// allocates for every element with an attribute (every `Meta` child carries `xmlns`).
fn attributes_ok(start: &quick_xml::events::BytesStart<'_>, root: bool, xmlns: &mut Option<String>) -> bool {
    const FEW: usize = 8;
    let mut seen: [&str; FEW] = [""; FEW];
    let mut attrs = start.attributes();
    attrs.with_checks(false);
    for (n, attr) in attrs.enumerate() {
        let Ok(attr) = attr else { return false };
        let key = attr.key.into_inner();
        if n == FEW || seen[..n].contains(&key) {
            return false;
        }
        seen[n] = key;
        if root && key == "xmlns" {
            match quick_xml::escape::unescape(&attr.value) {
                Ok(value) => *xmlns = Some(value.into_owned()),
                Err(_) => return false,
            }
        }
    }
    true
}

/// The text of a leaf that just closed, from its raw content: `None` when it is plain text (the
/// raw content is the text, a slice of the input: most leaves); references resolved, CDATA
/// unwrapped, comments dropped and line ends normalised (XML 1.0 §2.11) otherwise.
fn leaf_text_of(el: &El<'_>, src: &str) -> Result<Option<String>, String> {
    let raw = src.get(el.inner.0..el.inner.1).ok_or("element content out of range")?;
    let text = if el.mixed {
        let mut out = String::with_capacity(raw.len());
        let mut r = Reader::from_str(raw);
        loop {
            match r.read_event().map_err(|e| e.to_string())? {
                Event::Text(t) => out.push_str(&t.xml10_content()),
                Event::CData(c) => out.push_str(&c.xml10_content()),
                Event::GeneralRef(g) => match g.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => out.push(c),
                    None => out.push_str(quick_xml::escape::resolve_predefined_entity(&g).unwrap_or_default()),
                },
                Event::Eof => break,
                _ => {}
            }
        }
        Some(out)
    } else if raw.contains('\r') {
        // Literal line ends are normalised before references are resolved: `&#13;` is a real
        // carriage return and stays one.
        let normalised = raw.replace("\r\n", "\n").replace('\r', "\n");
        match quick_xml::escape::unescape(&normalised).map_err(|e| e.to_string())? {
            Cow::Borrowed(_) => Some(normalised),
            Cow::Owned(t) => Some(t),
        }
    } else if el.refs {
        match quick_xml::escape::unescape(raw).map_err(|e| e.to_string())? {
            Cow::Borrowed(_) => None,
            Cow::Owned(t) => Some(t),
        }
    } else {
        None
    };
    Ok(text)
}

fn unexpected(child: Node<'_, '_>, parent: Node<'_, '_>) -> DecodeError {
    DecodeError::Invalid {
        element: child.name.to_string(),
        offset: child.offset,
        problem: format!("unexpected or repeated element inside <{}>", parent.name),
    }
}

fn missing(parent: Node<'_, '_>, what: &str) -> DecodeError {
    DecodeError::Invalid {
        element: parent.name.to_string(),
        offset: parent.offset,
        problem: format!("missing <{what}>"),
    }
}

fn invalid(el: Node<'_, '_>, problem: impl Into<String>) -> DecodeError {
    DecodeError::Invalid { element: el.name.to_string(), offset: el.offset, problem: problem.into() }
}

/// Text of a leaf element: it must not have element children.
fn leaf_text<'d>(el: Node<'d, '_>) -> Result<&'d str, DecodeError> {
    if let Some(child) = el.children().next() {
        return Err(unexpected(child, el));
    }
    Ok(el.text())
}

fn trimmed(el: Node<'_, '_>) -> Result<String, DecodeError> {
    Ok(super::trim(leaf_text(el)?).to_string())
}

/// `<Target><LocURI>..</LocURI></Target>` (or Source): the trimmed LocURI.
fn loc_uri(el: Node<'_, '_>) -> Result<String, DecodeError> {
    let mut uri = None;
    for child in el.children() {
        match child.name {
            "LocURI" if uri.is_none() => uri = Some(trimmed(child)?),
            _ => return Err(unexpected(child, el)),
        }
    }
    uri.ok_or_else(|| missing(el, "LocURI"))
}

fn set_once(
    slot: &mut Option<String>,
    child: Node<'_, '_>,
    parent: Node<'_, '_>,
    value: String,
) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(unexpected(child, parent));
    }
    *slot = Some(value);
    Ok(())
}

fn meta(el: Node<'_, '_>) -> Result<Meta, DecodeError> {
    let mut m = Meta::default();
    for child in el.children() {
        let slot = match child.name {
            "Format" => &mut m.format,
            "Type" => &mut m.type_,
            "Mark" => &mut m.mark,
            "Size" => &mut m.size,
            "NextNonce" => &mut m.next_nonce,
            "Version" => &mut m.version,
            "MaxMsgSize" => &mut m.max_msg_size,
            "MaxObjSize" => &mut m.max_obj_size,
            _ => {
                m.extra.push((child.name.to_string(), trimmed(child)?));
                continue;
            }
        };
        let value = trimmed(child)?;
        set_once(slot, child, el, value)?;
    }
    Ok(m)
}

fn cred(el: Node<'_, '_>) -> Result<Cred, DecodeError> {
    let mut c = Cred::default();
    let mut data = None;
    for child in el.children() {
        match child.name {
            "Meta" => c.meta = meta(child)?,
            "Data" => set_once(&mut data, child, el, trimmed(child)?)?,
            _ => return Err(unexpected(child, el)),
        }
    }
    c.data = data.unwrap_or_default();
    Ok(c)
}

/// The content of a `Data` element: its text, or the raw markup when it holds XML elements
/// (an MsiInstallJob sent unescaped is kept intact, character for character).
fn data<'a>(el: Node<'_, 'a>, src: &'a str) -> String {
    if !el.has_children() {
        el.text().to_string()
    } else {
        // Line ends normalised as in any other text (XML 1.0 §2.11).
        let raw = super::trim(src.get(el.inner.0..el.inner.1).unwrap_or_default());
        if raw.contains('\r') { raw.replace("\r\n", "\n").replace('\r', "\n") } else { raw.to_string() }
    }
}

/// An empty vector with room for exactly the `Item` children of `el`. An Item is a few hundred
/// bytes: a vector grown by push starts at four of them, over a kilobyte for the usual one item,
/// and an allocation that size costs the allocator far more than a small one.
fn items_of(el: Node<'_, '_>) -> Vec<Item> {
    Vec::with_capacity(el.children().filter(|c| c.name == "Item").count())
}

fn item(el: Node<'_, '_>, src: &str) -> Result<Item, DecodeError> {
    let mut it = Item::default();
    for child in el.children() {
        match child.name {
            "Target" if it.target.is_none() => it.target = Some(loc_uri(child)?),
            "Source" if it.source.is_none() => it.source = Some(loc_uri(child)?),
            "Meta" if it.meta.is_none() => it.meta = Some(Box::new(meta(child)?)),
            "Data" if it.data.is_none() => it.data = Some(data(child, src)),
            "MoreData" => it.more_data = true,
            _ => return Err(unexpected(child, el)),
        }
    }
    Ok(it)
}

fn sync_hdr(el: Node<'_, '_>) -> Result<SyncHdr, DecodeError> {
    let (mut dtd, mut proto, mut sid, mut mid, mut target, mut source) = (None, None, None, None, None, None);
    let mut h = SyncHdr::default();
    for child in el.children() {
        match child.name {
            "VerDTD" => set_once(&mut dtd, child, el, trimmed(child)?)?,
            "VerProto" => set_once(&mut proto, child, el, trimmed(child)?)?,
            "SessionID" => set_once(&mut sid, child, el, trimmed(child)?)?,
            "MsgID" => set_once(&mut mid, child, el, trimmed(child)?)?,
            "Target" => set_once(&mut target, child, el, loc_uri(child)?)?,
            "Source" => set_once(&mut source, child, el, loc_uri(child)?)?,
            "RespURI" => set_once(&mut h.resp_uri, child, el, trimmed(child)?)?,
            "NoResp" => h.no_resp = true,
            "Cred" if h.cred.is_none() => h.cred = Some(Box::new(cred(child)?)),
            "Meta" if h.meta.is_none() => h.meta = Some(Box::new(meta(child)?)),
            _ => return Err(unexpected(child, el)),
        }
    }
    h.ver_dtd = dtd.ok_or_else(|| missing(el, "VerDTD"))?;
    h.ver_proto = proto.ok_or_else(|| missing(el, "VerProto"))?;
    h.session_id = sid.ok_or_else(|| missing(el, "SessionID"))?;
    h.msg_id = mid.ok_or_else(|| missing(el, "MsgID"))?;
    h.target = target.ok_or_else(|| missing(el, "Target"))?;
    h.source = source.ok_or_else(|| missing(el, "Source"))?;
    Ok(h)
}

fn sync_body(el: Node<'_, '_>, src: &str) -> Result<SyncBody, DecodeError> {
    // Commands are large values: size the vector once instead of growing it.
    let mut body = SyncBody { commands: Vec::with_capacity(el.children().count()), final_: false };
    for child in el.children() {
        if child.name == "Final" {
            body.final_ = true;
        } else if body.final_ {
            return Err(invalid(child, "command after <Final/>"));
        } else {
            body.commands.push(command(child, src)?);
        }
    }
    Ok(body)
}

fn command(el: Node<'_, '_>, src: &str) -> Result<Command, DecodeError> {
    Ok(match el.name {
        "Alert" => Command::Alert(alert(el, src)?),
        "Add" => Command::Add(item_cmd(el, src)?),
        "Replace" => Command::Replace(item_cmd(el, src)?),
        "Delete" => Command::Delete(item_cmd(el, src)?),
        "Get" => Command::Get(item_cmd(el, src)?),
        "Exec" => Command::Exec(item_cmd(el, src)?),
        "Atomic" => Command::Atomic(container(el, src)?),
        "Sequence" => Command::Sequence(container(el, src)?),
        "Status" => Command::Status(status(el, src)?),
        "Results" => Command::Results(results(el, src)?),
        // Commands Windows does not implement (Copy, Map, Sync, Put, Search) and elements that
        // are not commands at all are kept by name: the device answers them with a status
        // (406 or 400, OMA DM RepPro Atomic and Sequence) instead of refusing the whole message.
        _ => Command::Unsupported {
            name: el.name.to_string(),
            cmd_id: el
                .children()
                .find(|c| c.name == "CmdID")
                .map(|c| super::trim(c.text()).to_string())
                .unwrap_or_default(),
        },
    })
}

fn alert(el: Node<'_, '_>, src: &str) -> Result<Alert, DecodeError> {
    let mut a = Alert { items: items_of(el), ..Alert::default() };
    let (mut id, mut data) = (None, None);
    for child in el.children() {
        match child.name {
            "CmdID" => set_once(&mut id, child, el, trimmed(child)?)?,
            "NoResp" => a.no_resp = true,
            "Data" => set_once(&mut data, child, el, trimmed(child)?)?,
            "Correlator" => set_once(&mut a.correlator, child, el, trimmed(child)?)?,
            "Item" => a.items.push(item(child, src)?),
            _ => return Err(unexpected(child, el)),
        }
    }
    a.cmd_id = id.unwrap_or_default();
    a.data = data.unwrap_or_default();
    Ok(a)
}

fn item_cmd(el: Node<'_, '_>, src: &str) -> Result<ItemCmd, DecodeError> {
    let mut c = ItemCmd { items: items_of(el), ..ItemCmd::default() };
    let mut id = None;
    for child in el.children() {
        match child.name {
            "CmdID" => set_once(&mut id, child, el, trimmed(child)?)?,
            "NoResp" => c.no_resp = true,
            "Correlator" => set_once(&mut c.correlator, child, el, trimmed(child)?)?,
            "Meta" if c.meta.is_none() => c.meta = Some(Box::new(meta(child)?)),
            "Item" => c.items.push(item(child, src)?),
            _ => return Err(unexpected(child, el)),
        }
    }
    c.cmd_id = id.unwrap_or_default();
    Ok(c)
}

fn container(el: Node<'_, '_>, src: &str) -> Result<Container, DecodeError> {
    let commands = el.children().filter(|c| !matches!(c.name, "CmdID" | "NoResp" | "Meta")).count();
    let mut c = Container { commands: Vec::with_capacity(commands), ..Container::default() };
    let mut id = None;
    for child in el.children() {
        match child.name {
            "CmdID" => set_once(&mut id, child, el, trimmed(child)?)?,
            "NoResp" => c.no_resp = true,
            "Meta" if c.meta.is_none() => c.meta = Some(Box::new(meta(child)?)),
            _ => c.commands.push(command(child, src)?),
        }
    }
    c.cmd_id = id.unwrap_or_default();
    Ok(c)
}

fn status(el: Node<'_, '_>, src: &str) -> Result<Status, DecodeError> {
    let mut s = Status { items: items_of(el), ..Status::default() };
    let (mut id, mut msg_ref, mut cmd_ref, mut cmd, mut data) = (None, None, None, None, None);
    for child in el.children() {
        match child.name {
            "CmdID" => set_once(&mut id, child, el, trimmed(child)?)?,
            "MsgRef" => set_once(&mut msg_ref, child, el, trimmed(child)?)?,
            "CmdRef" => set_once(&mut cmd_ref, child, el, trimmed(child)?)?,
            "Cmd" => set_once(&mut cmd, child, el, trimmed(child)?)?,
            "TargetRef" => s.target_refs.push(trimmed(child)?),
            "SourceRef" => s.source_refs.push(trimmed(child)?),
            "Cred" if s.cred.is_none() => s.cred = Some(Box::new(cred(child)?)),
            "Chal" if s.chal.is_none() => {
                let mut chal = Chal::default();
                for c in child.children() {
                    match c.name {
                        "Meta" => chal.meta = meta(c)?,
                        _ => return Err(unexpected(c, child)),
                    }
                }
                s.chal = Some(Box::new(chal));
            }
            "Data" => set_once(&mut data, child, el, trimmed(child)?)?,
            "Item" => s.items.push(item(child, src)?),
            _ => return Err(unexpected(child, el)),
        }
    }
    s.cmd_id = id.unwrap_or_default();
    s.msg_ref = msg_ref.unwrap_or_default();
    s.cmd_ref = cmd_ref.unwrap_or_default();
    s.cmd = cmd.ok_or_else(|| missing(el, "Cmd"))?;
    s.data = data.ok_or_else(|| missing(el, "Data"))?;
    Ok(s)
}

fn results(el: Node<'_, '_>, src: &str) -> Result<Results, DecodeError> {
    let mut r = Results { items: items_of(el), ..Results::default() };
    let (mut id, mut msg_ref, mut cmd_ref) = (None, None, None);
    for child in el.children() {
        match child.name {
            "CmdID" => set_once(&mut id, child, el, trimmed(child)?)?,
            "MsgRef" => set_once(&mut msg_ref, child, el, trimmed(child)?)?,
            "CmdRef" => set_once(&mut cmd_ref, child, el, trimmed(child)?)?,
            "Meta" if r.meta.is_none() => r.meta = Some(Box::new(meta(child)?)),
            "TargetRef" => r.target_refs.push(trimmed(child)?),
            "SourceRef" => r.source_refs.push(trimmed(child)?),
            "Item" => r.items.push(item(child, src)?),
            _ => return Err(unexpected(child, el)),
        }
    }
    r.cmd_id = id.unwrap_or_default();
    r.msg_ref = msg_ref.unwrap_or_default();
    r.cmd_ref = cmd_ref.unwrap_or_default();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::checked_name;

    #[test]
    fn element_names_and_their_local_part() {
        assert_eq!(checked_name("Data"), Some("Data"));
        assert_eq!(checked_name("msft:Data"), Some("Data"));
        assert_eq!(checked_name("a::b"), Some("b"));
        assert_eq!(checked_name(":Final"), Some("Final"));
        assert_eq!(checked_name("Ünïcode"), Some("Ünïcode"));
        for bad in ["", "Final/", "1Data", "-x", "a:", "a:1b", "a:-b", "Da ta"] {
            assert_eq!(checked_name(bad), None, "{bad:?}");
        }
    }
}
