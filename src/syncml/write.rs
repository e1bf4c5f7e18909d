//! The SyncML writer: [`SyncMl`] -> compact canonical XML, and a readable pretty form.
//!
//! Canonical means: the `SYNCML:SYNCML1.2` namespace, elements in DTD order, Meta children with
//! `xmlns="syncml:metinf"`, text escaped (embedded XML in `Data` is escaped, never CDATA), no
//! whitespace between elements. Decoding what this writes gives the same model back.

use std::fmt::Write as _;

use quick_xml::escape::escape;

use super::model::*;

/// Encodes a message as compact canonical SyncML.
pub fn encode(msg: &SyncMl) -> String {
    let mut w = W { out: String::with_capacity(4096) };
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

    fn text(&mut self, name: &str, value: &str) {
        self.open(name);
        self.escaped(value);
        self.close(name);
    }

    /// Escaped text. A carriage return is written as `&#13;`: written raw, the reader would turn
    /// it into a line feed (XML 1.0 §2.11) and the value would not survive the round trip.
    fn escaped(&mut self, value: &str) {
        let escaped = escape(value);
        if escaped.contains('\r') {
            self.out.push_str(&escaped.replace('\r', "&#13;"));
        } else {
            self.out.push_str(&escaped);
        }
    }

    fn opt(&mut self, name: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.text(name, v);
        }
    }

    fn flag(&mut self, name: &str, on: bool) {
        if on {
            self.out.push('<');
            self.out.push_str(name);
            self.out.push_str("/>");
        }
    }

    fn loc(&mut self, name: &str, uri: &str) {
        self.open(name);
        self.text("LocURI", uri);
        self.close(name);
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
        self.text("Data", &c.data);
        self.out.push_str("</Cred>");
    }

    fn hdr(&mut self, h: &SyncHdr) {
        self.out.push_str("<SyncHdr>");
        self.text("VerDTD", &h.ver_dtd);
        self.text("VerProto", &h.ver_proto);
        self.text("SessionID", &h.session_id);
        self.text("MsgID", &h.msg_id);
        self.loc("Target", &h.target);
        self.loc("Source", &h.source);
        self.opt("RespURI", &h.resp_uri);
        self.flag("NoResp", h.no_resp);
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
            self.loc("Target", t);
        }
        if let Some(s) = &it.source {
            self.loc("Source", s);
        }
        if let Some(m) = &it.meta {
            self.meta(m);
        }
        self.opt("Data", &it.data);
        self.flag("MoreData", it.more_data);
        self.out.push_str("</Item>");
    }

    fn command(&mut self, cmd: &Command) {
        match cmd {
            Command::Alert(a) => {
                self.out.push_str("<Alert>");
                self.text("CmdID", &a.cmd_id);
                self.flag("NoResp", a.no_resp);
                self.text("Data", &a.data);
                self.opt("Correlator", &a.correlator);
                a.items.iter().for_each(|i| self.item(i));
                self.out.push_str("</Alert>");
            }
            Command::Add(c) | Command::Replace(c) | Command::Delete(c) | Command::Get(c) | Command::Exec(c) => {
                let name = cmd.name();
                self.open(name);
                self.text("CmdID", &c.cmd_id);
                self.flag("NoResp", c.no_resp);
                if let Some(m) = &c.meta {
                    self.meta(m);
                }
                self.opt("Correlator", &c.correlator);
                c.items.iter().for_each(|i| self.item(i));
                self.close(name);
            }
            Command::Atomic(c) | Command::Sequence(c) => {
                let name = cmd.name();
                self.open(name);
                self.text("CmdID", &c.cmd_id);
                self.flag("NoResp", c.no_resp);
                if let Some(m) = &c.meta {
                    self.meta(m);
                }
                c.commands.iter().for_each(|c| self.command(c));
                self.close(name);
            }
            Command::Status(s) => {
                self.out.push_str("<Status>");
                self.text("CmdID", &s.cmd_id);
                self.text("MsgRef", &s.msg_ref);
                self.text("CmdRef", &s.cmd_ref);
                self.text("Cmd", &s.cmd);
                s.target_refs.iter().for_each(|r| self.text("TargetRef", r));
                s.source_refs.iter().for_each(|r| self.text("SourceRef", r));
                if let Some(c) = &s.cred {
                    self.cred(c);
                }
                if let Some(ch) = &s.chal {
                    self.out.push_str("<Chal>");
                    self.meta(&ch.meta);
                    self.out.push_str("</Chal>");
                }
                self.text("Data", &s.data);
                s.items.iter().for_each(|i| self.item(i));
                self.out.push_str("</Status>");
            }
            Command::Results(r) => {
                self.out.push_str("<Results>");
                self.text("CmdID", &r.cmd_id);
                self.text("MsgRef", &r.msg_ref);
                self.text("CmdRef", &r.cmd_ref);
                if let Some(m) = &r.meta {
                    self.meta(m);
                }
                r.target_refs.iter().for_each(|t| self.text("TargetRef", t));
                r.source_refs.iter().for_each(|t| self.text("SourceRef", t));
                r.items.iter().for_each(|i| self.item(i));
                self.out.push_str("</Results>");
            }
            Command::Unsupported { name, cmd_id } => {
                self.open(name);
                self.text("CmdID", cmd_id);
                self.close(name);
            }
        }
    }
}

/// Pretty-prints a message for people: one element per line, two-space indent, and the
/// embedded XML of a `Data` element (an MsiInstallJob, a policy blob) indented as XML too.
pub fn pretty(msg: &SyncMl) -> String {
    pretty_xml(&encode(msg))
}

/// Re-indents well-formed XML text. Text content is kept on the line of its element; a text
/// that is itself XML (escaped inside `Data`) is unescaped and indented one level deeper.
pub fn pretty_xml(xml: &str) -> String {
    use quick_xml::Reader;
    use quick_xml::events::Event;

    let mut reader = Reader::from_str(xml);
    let mut out = String::with_capacity(xml.len() * 2);
    let mut depth = 0usize;
    // Text of the element opened last, written when the element closes.
    let mut pending: Option<String> = None;
    let indent = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    loop {
        match reader.read_event() {
            Ok(Event::Start(s)) => {
                if let Some(t) = pending.take() {
                    out.push_str(&escape(t.trim()));
                }
                if !out.is_empty() {
                    indent(&mut out, depth);
                }
                let _ = write!(out, "<{}>", &*s);
                depth += 1;
                pending = Some(String::new());
            }
            Ok(Event::Empty(s)) => {
                if let Some(t) = pending.take() {
                    out.push_str(&escape(t.trim()));
                }
                indent(&mut out, depth);
                let _ = write!(out, "<{}/>", &*s);
            }
            Ok(Event::End(e)) => {
                depth = depth.saturating_sub(1);
                let name = e.name().as_ref().to_string();
                match pending.take() {
                    Some(t) if looks_like_xml(&t) => {
                        let inner = pretty_xml(t.trim());
                        for line in inner.lines() {
                            indent(&mut out, depth + 1);
                            out.push_str(line);
                        }
                        indent(&mut out, depth);
                    }
                    Some(t) => out.push_str(&escape(t.trim())),
                    None => indent(&mut out, depth),
                }
                let _ = write!(out, "</{name}>");
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
    out.push('\n');
    out
}

/// True when `t` is a well-formed XML fragment made of elements (balanced tags, valid
/// attributes, no stray text at the top): only then is it safe to show unescaped. Text that merely
/// starts with `<` and ends with `>`, like the seed's `<https://server1><https://server2>` list of
/// URLs, stays escaped.
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
