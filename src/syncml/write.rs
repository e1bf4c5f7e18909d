//! The SyncML writer: [`SyncMl`] -> compact canonical XML, and a readable pretty form.
//!
//! Canonical means: the `SYNCML:SYNCML1.2` namespace, elements in DTD order, Meta children with
//! `xmlns="syncml:metinf"`, text escaped (embedded XML in `Data` is escaped, never CDATA), no
//! whitespace between elements. Decoding what this writes gives the same model back.

use std::fmt::Write as _;

use quick_xml::escape::escape;

use super::model::*;

/// `<name>escaped value</name>` with the tags as constants (one copy each, no length to read).
macro_rules! text {
    ($w:expr, $name:literal, $value:expr) => {{
        $w.out.push_str(concat!("<", $name, ">"));
        $w.escaped($value);
        $w.out.push_str(concat!("</", $name, ">"));
    }};
}

/// [`text!`] when there is a value.
macro_rules! opt {
    ($w:expr, $name:literal, $value:expr) => {
        if let Some(v) = $value {
            text!($w, $name, v);
        }
    };
}

/// `<name/>` when set.
macro_rules! flag {
    ($w:expr, $name:literal, $on:expr) => {
        if $on {
            $w.out.push_str(concat!("<", $name, "/>"));
        }
    };
}

/// `<name><LocURI>escaped uri</LocURI></name>`.
macro_rules! loc {
    ($w:expr, $name:literal, $uri:expr) => {{
        $w.out.push_str(concat!("<", $name, "><LocURI>"));
        $w.escaped($uri);
        $w.out.push_str(concat!("</LocURI></", $name, ">"));
    }};
}

/// Encodes a message as compact canonical SyncML.
pub fn encode(msg: &SyncMl) -> String {
    // Sized for a typical reply (a Status of about 150 bytes per command) so that the buffer
    // grows once at most.
    let mut w = W { out: String::with_capacity(1024 + 192 * msg.body.commands.len()) };
    w.out.push_str(r#"<SyncML xmlns="SYNCML:SYNCML1.2">"#);
    w.hdr(&msg.hdr);
    w.out.push_str("<SyncBody>");
    for cmd in &msg.body.commands {
        w.command(cmd);
    }
    if msg.body.final_ {
        w.out.push_str("<Final/>");
    }
    w.out.push_str("</SyncBody></SyncML>");
    w.out
}

struct W {
    out: String,
}

impl W {
    // The element writers push pieces instead of going through `write!`: encoding runs for
    // every reply, and format machinery was most of its cost.
    fn open(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// Escaped text, written straight into the output (the five XML special characters). A
    /// carriage return is written as `&#13;`: written raw, the reader would turn it into a line
    /// feed (XML 1.0 §2.11) and the value would not survive the round trip.
    fn escaped(&mut self, value: &str) {
        // Most values have nothing to escape: find the first byte that needs it with a table
        // (one load per byte) before the per-byte match.
        const SPECIAL: [bool; 256] = {
            let mut t = [false; 256];
            let mut i = 0;
            while i < 6 {
                t[b"<>&'\"\r"[i] as usize] = true;
                i += 1;
            }
            t
        };
        let bytes = value.as_bytes();
        let Some(first) = bytes.iter().position(|&b| SPECIAL[b as usize]) else {
            self.out.push_str(value);
            return;
        };
        let mut run = 0;
        for (i, &b) in bytes.iter().enumerate().skip(first) {
            let entity = match b {
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'&' => "&amp;",
                b'\'' => "&apos;",
                b'"' => "&quot;",
                b'\r' => "&#13;",
                _ => continue,
            };
            self.out.push_str(&value[run..i]);
            self.out.push_str(entity);
            run = i + 1;
        }
        self.out.push_str(&value[run..]);
    }

    fn metinf(&mut self, name: &str, value: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str(r#" xmlns="syncml:metinf">"#);
        self.escaped(value);
        self.close(name);
    }

    fn meta(&mut self, m: &Meta) {
        self.out.push_str("<Meta>");
        self.meta_children(m);
        self.out.push_str("</Meta>");
    }

    fn meta_children(&mut self, m: &Meta) {
        let known = [
            ("Format", &m.format),
            ("Type", &m.type_),
            ("Mark", &m.mark),
            ("Size", &m.size),
            ("Version", &m.version),
            ("NextNonce", &m.next_nonce),
            ("MaxMsgSize", &m.max_msg_size),
            ("MaxObjSize", &m.max_obj_size),
        ];
        for (name, value) in known {
            if let Some(v) = value {
                self.metinf(name, v);
            }
        }
        for (name, v) in &m.extra {
            self.metinf(name, v);
        }
    }

    fn cred(&mut self, c: &Cred) {
        self.out.push_str("<Cred>");
        self.meta(&c.meta);
        text!(self, "Data", &c.data);
        self.out.push_str("</Cred>");
    }

    fn hdr(&mut self, h: &SyncHdr) {
        self.out.push_str("<SyncHdr>");
        text!(self, "VerDTD", &h.ver_dtd);
        text!(self, "VerProto", &h.ver_proto);
        text!(self, "SessionID", &h.session_id);
        text!(self, "MsgID", &h.msg_id);
        loc!(self, "Target", &h.target);
        loc!(self, "Source", &h.source);
        opt!(self, "RespURI", &h.resp_uri);
        flag!(self, "NoResp", h.no_resp);
        if let Some(c) = &h.cred {
            self.cred(c);
        }
        if let Some(m) = &h.meta {
            self.meta(m);
        }
        self.out.push_str("</SyncHdr>");
    }

    fn item(&mut self, it: &Item) {
        self.out.push_str("<Item>");
        if let Some(t) = &it.target {
            loc!(self, "Target", t);
        }
        if let Some(s) = &it.source {
            loc!(self, "Source", s);
        }
        if let Some(m) = &it.meta {
            self.meta(m);
        }
        opt!(self, "Data", &it.data);
        flag!(self, "MoreData", it.more_data);
        self.out.push_str("</Item>");
    }

    fn command(&mut self, cmd: &Command) {
        match cmd {
            Command::Alert(a) => {
                self.out.push_str("<Alert>");
                text!(self, "CmdID", &a.cmd_id);
                flag!(self, "NoResp", a.no_resp);
                text!(self, "Data", &a.data);
                opt!(self, "Correlator", &a.correlator);
                a.items.iter().for_each(|i| self.item(i));
                self.out.push_str("</Alert>");
            }
            Command::Add(c) | Command::Replace(c) | Command::Delete(c) | Command::Get(c) | Command::Exec(c) => {
                let name = cmd.name();
                self.open(name);
                text!(self, "CmdID", &c.cmd_id);
                flag!(self, "NoResp", c.no_resp);
                if let Some(m) = &c.meta {
                    self.meta(m);
                }
                opt!(self, "Correlator", &c.correlator);
                c.items.iter().for_each(|i| self.item(i));
                self.close(name);
            }
            Command::Atomic(c) | Command::Sequence(c) => {
                let name = cmd.name();
                self.open(name);
                text!(self, "CmdID", &c.cmd_id);
                flag!(self, "NoResp", c.no_resp);
                if let Some(m) = &c.meta {
                    self.meta(m);
                }
                c.commands.iter().for_each(|c| self.command(c));
                self.close(name);
            }
            Command::Status(s) => {
                self.out.push_str("<Status>");
                text!(self, "CmdID", &s.cmd_id);
                text!(self, "MsgRef", &s.msg_ref);
                text!(self, "CmdRef", &s.cmd_ref);
                text!(self, "Cmd", &s.cmd);
                s.target_refs.iter().for_each(|r| text!(self, "TargetRef", r));
                s.source_refs.iter().for_each(|r| text!(self, "SourceRef", r));
                if let Some(c) = &s.cred {
                    self.cred(c);
                }
                if let Some(ch) = &s.chal {
                    self.out.push_str("<Chal>");
                    self.meta(&ch.meta);
                    self.out.push_str("</Chal>");
                }
                text!(self, "Data", &s.data);
                s.items.iter().for_each(|i| self.item(i));
                self.out.push_str("</Status>");
            }
            Command::Results(r) => {
                self.out.push_str("<Results>");
                text!(self, "CmdID", &r.cmd_id);
                text!(self, "MsgRef", &r.msg_ref);
                text!(self, "CmdRef", &r.cmd_ref);
                if let Some(m) = &r.meta {
                    self.meta(m);
                }
                r.target_refs.iter().for_each(|t| text!(self, "TargetRef", t));
                r.source_refs.iter().for_each(|t| text!(self, "SourceRef", t));
                r.items.iter().for_each(|i| self.item(i));
                self.out.push_str("</Results>");
            }
            Command::Unsupported { name, cmd_id } => {
                self.open(name);
                text!(self, "CmdID", cmd_id);
                self.close(name);
            }
        }
    }
}

/// The most text a pretty form holds: longer output is cut there and ends with an XML comment
/// saying so. A message a device accepts is at most a few MiB; this keeps a transcript file (and
/// the memory to build it) bounded whatever a server sends.
pub const PRETTY_MAX_BYTES: usize = 4 << 20;

/// Pretty-prints a message for people: one element per line, two-space indent, and the
/// embedded XML of a `Data` element (an MsiInstallJob, a policy blob) indented as XML too.
/// At most [`PRETTY_MAX_BYTES`] are produced.
pub fn pretty(msg: &SyncMl) -> String {
    pretty_xml(&encode(msg))
}

/// Re-indents well-formed XML text ([`pretty_xml_limited`] with [`PRETTY_MAX_BYTES`]).
pub fn pretty_xml(xml: &str) -> String {
    pretty_xml_limited(xml, PRETTY_MAX_BYTES)
}

/// Re-indents well-formed XML text, producing at most about `max` bytes. Text content is kept on
/// the line of its element; a text that is itself XML (escaped inside `Data`) is unescaped and
/// indented one level deeper, once: XML escaped inside that XML is shown as the escaped text it
/// is. So the work and the output are linear in the input, however many times a server escaped
/// its XML over itself. Output past `max` is cut and an XML comment at the end says so.
pub fn pretty_xml_limited(xml: &str, max: usize) -> String {
    let mut p = Printer { out: String::with_capacity(xml.len().saturating_mul(2).min(max) + 128), max, cut: false };
    p.reindent(xml, 0, true);
    if p.cut {
        let _ = write!(
            p.out,
            "\n<!-- mdmsim: cut here, the pretty form is limited to {max} bytes (the XML has {} bytes) -->",
            xml.len()
        );
    }
    p.out.push('\n');
    p.out
}

/// The pretty form being built, with its size bound.
struct Printer {
    out: String,
    max: usize,
    /// The bound was reached: nothing more is written.
    cut: bool,
}

impl Printer {
    /// Appends `s`, or as much of it as fits (on a character boundary) and marks the output cut.
    fn push(&mut self, s: &str) {
        if self.cut {
            return;
        }
        let room = self.max.saturating_sub(self.out.len());
        if s.len() <= room {
            self.out.push_str(s);
            return;
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.out.push_str(&s[..end]);
        self.cut = true;
    }

    fn indent(&mut self, depth: usize) {
        self.push("\n");
        for _ in 0..depth {
            self.push("  ");
            if self.cut {
                return;
            }
        }
    }

    /// Writes the text pending in the enclosing element, then `<tag` and `end` on a new line
    /// (unless it is the first thing written).
    fn open_tag(&mut self, pending: &mut Option<String>, first: &mut bool, depth: usize, tag: &str, end: &str) {
        if let Some(t) = pending.take() {
            self.push(&escape(t.trim()));
        }
        if !*first {
            self.indent(depth);
        }
        *first = false;
        self.push("<");
        self.push(tag);
        self.push(end);
    }

    /// Writes `xml` re-indented from `base` levels deep. With `embedded`, a text that is XML is
    /// shown as XML one level deeper (not recursively: inside it, text is text).
    fn reindent(&mut self, xml: &str, base: usize, embedded: bool) {
        use quick_xml::Reader;
        use quick_xml::events::Event;

        let mut reader = Reader::from_str(xml);
        let mut depth = base;
        let mut first = self.out.is_empty();
        // Text of the element opened last, written when the element closes.
        let mut pending: Option<String> = None;
        while !self.cut {
            match reader.read_event() {
                Ok(Event::Start(s)) => {
                    self.open_tag(&mut pending, &mut first, depth, &s, ">");
                    depth += 1;
                    pending = Some(String::new());
                }
                Ok(Event::Empty(s)) => self.open_tag(&mut pending, &mut first, depth, &s, "/>"),
                Ok(Event::End(e)) => {
                    depth = depth.saturating_sub(1).max(base);
                    match pending.take() {
                        Some(t) if embedded && looks_like_xml(&t) => {
                            self.reindent(t.trim(), depth + 1, false);
                            self.indent(depth);
                        }
                        Some(t) => self.push(&escape(t.trim())),
                        None => self.indent(depth),
                    }
                    self.push("</");
                    self.push(&e);
                    self.push(">");
                }
                Ok(Event::Text(t)) => {
                    if let Some(p) = pending.as_mut() {
                        p.push_str(&t.xml10_content());
                    }
                }
                Ok(Event::CData(t)) => {
                    if let Some(p) = pending.as_mut() {
                        p.push_str(&t.xml10_content());
                    }
                }
                Ok(Event::GeneralRef(r)) => {
                    if let Some(p) = pending.as_mut() {
                        let name = r.xml10_content();
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => p.push(c),
                            _ => p.push_str(quick_xml::escape::resolve_predefined_entity(&name).unwrap_or("")),
                        }
                    }
                }
                Ok(Event::Eof) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// True when `t` is a well-formed XML fragment made of elements (balanced tags, valid
/// attributes, no stray text at the top): only then is it safe to show unescaped. Text that
/// merely starts with `<` and ends with `>`, like the DMClient CSP page's
/// `<https://server1><https://server2>` list of URLs, stays escaped.
fn looks_like_xml(t: &str) -> bool {
    use quick_xml::events::Event;

    let t = t.trim();
    if !(t.starts_with('<') && t.ends_with('>')) {
        return false;
    }
    let mut r = quick_xml::Reader::from_str(t);
    let mut depth = 0usize;
    let mut elements = 0usize;
    loop {
        let start = match r.read_event() {
            Ok(Event::Start(s)) => {
                depth += 1;
                s
            }
            Ok(Event::Empty(s)) => s,
            Ok(Event::End(_)) => match depth.checked_sub(1) {
                Some(d) => {
                    depth = d;
                    continue;
                }
                None => return false,
            },
            Ok(Event::Text(x)) if depth == 0 && !x.xml10_content().trim().is_empty() => return false,
            Ok(Event::GeneralRef(r)) => {
                let known = matches!(r.resolve_char_ref(), Ok(Some(_)))
                    || quick_xml::escape::resolve_predefined_entity(&r.xml10_content()).is_some();
                if depth == 0 || !known {
                    return false;
                }
                continue;
            }
            Ok(Event::Eof) => return depth == 0 && elements > 0,
            Ok(_) => continue,
            Err(_) => return false,
        };
        elements += 1;
        if start.attributes().any(|a| a.is_err()) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncml::decode;

    /// `<a>x</a>` wrapped in `<a>` and escaped into itself `levels` times: what a server that
    /// escapes its payload once per layer of its stack sends.
    fn escaped_levels(levels: usize) -> String {
        let mut xml = "<a>x</a>".to_string();
        for _ in 0..levels {
            xml = format!("<a>{}</a>", escape(xml.as_str()));
        }
        xml
    }

    fn message_with_data(data: &str) -> SyncMl {
        SyncMl {
            hdr: SyncHdr { session_id: "1".into(), msg_id: "1".into(), ..SyncHdr::default() },
            body: SyncBody {
                commands: vec![Command::Exec(ItemCmd {
                    cmd_id: "2".into(),
                    items: vec![Item { target: Some("./X".into()), data: Some(data.into()), ..Item::default() }],
                    ..ItemCmd::default()
                })],
                final_: true,
            },
        }
    }

    fn data_of(msg: &SyncMl) -> String {
        let Command::Exec(e) = &msg.body.commands[0] else { panic!("expected Exec") };
        e.items[0].data.clone().unwrap_or_default()
    }

    #[test]
    fn embedded_xml_is_indented_one_level_deeper_and_decodes_back() {
        let job = r#"<MsiInstallJob id="{1}"><Product Version="1"/></MsiInstallJob>"#;
        let shown = pretty(&message_with_data(job));
        assert!(shown.contains("<Data>\n          <MsiInstallJob id=\"{1}\">\n            <Product Version=\"1\"/>\n          </MsiInstallJob>\n        </Data>"), "{shown}");
        // It decodes back to the same job, re-indented.
        let back: String = data_of(&decode(&shown).unwrap()).lines().map(str::trim).collect();
        assert_eq!(back, job);
    }

    #[test]
    fn xml_escaped_many_times_is_unescaped_once_and_the_rest_shown_as_text() {
        let data = escaped_levels(300);
        let wire = encode(&message_with_data(&data));
        let shown = pretty_xml(&wire);
        // One level is shown as XML; the next level is its escaped text, as on the wire one
        // level further down.
        let level_299 = escape(escaped_levels(299).as_str()).into_owned();
        assert!(shown.contains(&format!("<a>{level_299}</a>")), "the inner text stays escaped");
        assert!(shown.len() < wire.len() + 1000, "linear: {} bytes shown for {} bytes", shown.len(), wire.len());
        assert_eq!(data_of(&decode(&shown).unwrap()), data, "the pretty form still decodes to the same Data");
    }

    #[test]
    fn output_past_the_limit_is_cut_with_a_marker() {
        let data = "y".repeat(10_000);
        let wire = encode(&message_with_data(&data));
        let shown = pretty_xml_limited(&wire, 2_000);
        let marker = format!(
            "\n<!-- mdmsim: cut here, the pretty form is limited to 2000 bytes (the XML has {} bytes) -->\n",
            wire.len()
        );
        assert!(shown.ends_with(&marker), "{shown}");
        assert_eq!(shown.len(), 2_000 + marker.len());
        // Deep nesting is cut the same way: indentation cannot make the output quadratic.
        let deep = format!("<r>{}{}</r>", "<a>".repeat(5_000), "</a>".repeat(5_000));
        assert!(pretty_xml_limited(&deep, 10_000).len() < 10_200);
        let small = pretty(&message_with_data("z"));
        assert!(!small.contains("mdmsim: cut here"), "{small}");
    }

    #[test]
    fn text_that_only_looks_like_tags_stays_escaped() {
        let list = "<https://a.example><https://b.example>";
        let shown = pretty(&message_with_data(list));
        assert!(shown.contains("<Data>&lt;https://a.example&gt;&lt;https://b.example&gt;</Data>"), "{shown}");
    }
}
