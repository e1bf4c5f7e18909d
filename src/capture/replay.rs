//! `syncml replay`: the client side of a captured session played again against a server, and
//! what the server now answers compared with what it answered then.
//!
//! Sans-I/O: [`Replay`] gives the next client message and takes the server's answer; the
//! command moves the bytes. Each captured session is replayed in turn. The first client message
//! goes as captured (with the DeviceID, the server's address and MsgID set); each later one
//! answers what the server sent now: a SyncHdr Status, then for every command the Status (and
//! Results) the device gave to the same command (same name and LocURIs) in the capture, with
//! CmdRef and MsgRef renumbered; a command the capture has no answer for gets 404 for a Get and
//! 200 otherwise, and is listed in [`Outcome::unanswered`]. The captured client's own commands
//! (Alerts, Replaces) follow with fresh CmdIDs.
//!
//! Each server answer is compared with the captured one of the same place in the session:
//! commands added, removed or changed (by command and LocURIs; Data and Format of their items),
//! the status codes the server gave to the client's commands, and where the session ended.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Capture, Message, Side};
use crate::syncml::{Command, Item, ItemCmd, Status, SyncBody, SyncHdr, SyncMl};

/// The most messages the client sends in one replayed session beyond the captured ones (a
/// server that never ends the session is cut there).
pub const MAX_EXTRA_MESSAGES: usize = 20;

/// One difference between the server's answers now and in the capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The session (1-based, in capture order) and the server message in it (1-based).
    pub session: usize,
    pub message: usize,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// The command (`Get`, `Replace`, `Status`, `SyncHdr`, `session end`).
    pub command: String,
    /// The LocURIs of the command, or what the Status is for (`Replace CmdID 4`).
    pub target: String,
    /// What differs, in words (`status 200 -> 401`, `data "a" -> "b"`).
    pub detail: String,
}

/// A server command the capture had no answer for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unanswered {
    pub session: usize,
    pub message: usize,
    pub command: String,
    pub target: String,
    /// The status the replay answered with.
    pub status: u16,
}

/// The result of a replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub sessions: usize,
    pub client_messages: usize,
    pub server_messages: usize,
    pub differences: Vec<Difference>,
    pub unanswered: Vec<Unanswered>,
}

impl Outcome {
    /// True when the server answered as in the capture.
    pub fn same(&self) -> bool {
        self.differences.is_empty()
    }
}

/// A replay in progress.
pub struct Replay {
    sessions: Vec<Vec<Message>>,
    device_id: String,
    server_url: String,
    /// Index of the session being replayed, and of its next client message.
    session: usize,
    next_client: usize,
    /// MsgID of the next client message in this session.
    msg_id: u32,
    /// Server messages answered in this session.
    answered: usize,
    /// Captured server commands already used as a match, by (message index, command index).
    used: Vec<(usize, usize)>,
    /// The client CmdIDs sent (new) → captured, for comparing the server's Statuses.
    cmd_map: BTreeMap<String, String>,
    outcome: Outcome,
}

/// What to do next.
#[derive(Debug)]
pub enum Next {
    /// POST this message.
    Send(Box<SyncMl>),
    /// The replay is over.
    Done,
}

impl Replay {
    /// A replay of `cap` as device `device_id` against `server_url`; `None` when the capture
    /// has no client message.
    pub fn new(cap: &Capture, device_id: &str, server_url: &str) -> Option<Replay> {
        let sessions: Vec<Vec<Message>> = cap
            .sessions()
            .into_iter()
            .filter(|s| s.iter().any(|m| m.side == Side::Client))
            .map(|s| s.to_vec())
            .collect();
        if sessions.is_empty() {
            return None;
        }
        Some(Replay {
            sessions,
            device_id: device_id.to_string(),
            server_url: server_url.to_string(),
            session: 0,
            next_client: 0,
            msg_id: 1,
            answered: 0,
            used: Vec::new(),
            cmd_map: BTreeMap::new(),
            outcome: Outcome::default(),
        })
    }

    /// The first message of the replay.
    pub fn start(&mut self) -> Next {
        self.outcome.sessions = 1;
        self.first_of_session()
    }

    fn clients(&self) -> Vec<&Message> {
        self.sessions[self.session].iter().filter(|m| m.side == Side::Client).collect()
    }

    /// The captured server message that answered captured client message `k` (0-based).
    fn captured_answer(&self, k: usize) -> Option<&Message> {
        let s = &self.sessions[self.session];
        let clients: Vec<usize> =
            s.iter().enumerate().filter(|(_, m)| m.side == Side::Client).map(|(i, _)| i).collect();
        let at = *clients.get(k)?;
        let end = clients.get(k + 1).copied().unwrap_or(s.len());
        s[at + 1..end].iter().find(|m| m.side == Side::Server)
    }

    fn first_of_session(&mut self) -> Next {
        self.next_client = 0;
        self.msg_id = 1;
        self.answered = 0;
        self.used.clear();
        self.cmd_map.clear();
        let Some(first) = self.clients().first().map(|m| m.msg.clone()) else { return Next::Done };
        let mut msg = self.header_of(&first);
        for c in &first.body.commands {
            let c = self.own_command(c);
            self.cmd_map.insert(c.cmd_id().to_string(), c.cmd_id().to_string());
            msg.body.commands.push(c);
        }
        msg.body.final_ = true;
        self.next_client = 1;
        self.outcome.client_messages += 1;
        Next::Send(Box::new(msg))
    }

    /// A captured client command as sent now: the DeviceID replaced in DevInfo/DevId.
    fn own_command(&self, c: &Command) -> Command {
        let mut c = c.clone();
        if let Command::Replace(r) | Command::Add(r) = &mut c {
            for it in &mut r.items {
                if it.source.as_deref().is_some_and(|s| s.trim() == "./DevInfo/DevId") {
                    it.data = Some(self.device_id.clone());
                }
            }
        }
        c
    }

    fn header_of(&self, captured: &SyncMl) -> SyncMl {
        let hdr = SyncHdr {
            ver_dtd: captured.hdr.ver_dtd.clone(),
            ver_proto: captured.hdr.ver_proto.clone(),
            session_id: captured.hdr.session_id.clone(),
            msg_id: self.msg_id.to_string(),
            target: self.server_url.clone(),
            source: self.device_id.clone(),
            meta: captured.hdr.meta.clone(),
            ..SyncHdr::default()
        };
        SyncMl { hdr, body: SyncBody::default() }
    }

    /// Takes the server's answer (`None` for an empty body) and gives the next message.
    pub fn receive(&mut self, reply: Option<&SyncMl>) -> Next {
        let k = self.next_client - 1;
        let captured = self.captured_answer(k).map(|m| m.msg.clone());
        let n = self.answered + 1;
        self.compare(n, reply, captured.as_ref());
        self.answered += 1;
        if reply.is_some() {
            self.outcome.server_messages += 1;
        }
        let live_goes_on = reply
            .is_some_and(|r| r.body.commands.iter().any(|c| !matches!(c, Command::Status(_) | Command::Results(_))));
        let clients = self.clients().len();
        if live_goes_on && self.next_client < clients + MAX_EXTRA_MESSAGES {
            let reply = reply.cloned().unwrap_or_default();
            return Next::Send(Box::new(self.answer(&reply)));
        }
        if !live_goes_on && self.next_client < clients {
            self.diff(
                n,
                "removed",
                "session end",
                "",
                &format!(
                    "the server ended the session; the capture goes on with {} more client message(s)",
                    clients - self.next_client
                ),
            );
        }
        self.session += 1;
        if self.session >= self.sessions.len() {
            return Next::Done;
        }
        self.outcome.sessions += 1;
        self.first_of_session()
    }

    /// The client message answering `live`: statuses and results from the capture, then the
    /// captured client's own commands of this place.
    fn answer(&mut self, live: &SyncMl) -> SyncMl {
        let k = self.next_client;
        let clients: Vec<Message> = self.clients().into_iter().cloned().collect();
        let captured_client = clients.get(k).map(|m| m.msg.clone());
        self.msg_id += 1;
        let mut msg = self.header_of(captured_client.as_ref().unwrap_or(&clients[0].msg));
        let mut next_id = 1u32;
        let mut id = || {
            let s = next_id.to_string();
            next_id += 1;
            s
        };
        msg.body.commands.push(Command::Status(Status {
            cmd_id: id(),
            msg_ref: live.hdr.msg_id.clone(),
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            target_refs: vec![live.hdr.target.clone()],
            source_refs: vec![live.hdr.source.clone()],
            data: "200".into(),
            ..Status::default()
        }));
        let mut flat = Vec::new();
        flatten_answerable(&live.body.commands, &mut flat);
        for c in flat {
            let (status, results) = self.captured_reply(c);
            let code = status.as_ref().map(|s| s.data.clone()).unwrap_or_else(|| {
                let code = if c.name() == "Get" { 404 } else { 200 };
                self.outcome.unanswered.push(Unanswered {
                    session: self.session + 1,
                    message: self.answered,
                    command: c.name().to_string(),
                    target: targets(c).join(" "),
                    status: code,
                });
                code.to_string()
            });
            msg.body.commands.push(Command::Status(Status {
                cmd_id: id(),
                msg_ref: live.hdr.msg_id.clone(),
                cmd_ref: c.cmd_id().to_string(),
                cmd: c.name().to_string(),
                target_refs: status.as_ref().map(|s| s.target_refs.clone()).unwrap_or_default(),
                data: code,
                items: status.map(|s| s.items).unwrap_or_default(),
                ..Status::default()
            }));
            if let Some(mut r) = results {
                r.cmd_id = id();
                r.msg_ref = live.hdr.msg_id.clone();
                r.cmd_ref = c.cmd_id().to_string();
                msg.body.commands.push(Command::Results(r));
            }
        }
        self.cmd_map.clear();
        if let Some(cc) = &captured_client {
            for c in &cc.body.commands {
                if matches!(c, Command::Status(_) | Command::Results(_)) {
                    continue;
                }
                let mut own = self.own_command(c);
                let new = id();
                self.cmd_map.insert(new.clone(), c.cmd_id().to_string());
                set_cmd_id(&mut own, &new);
                msg.body.commands.push(own);
            }
        }
        msg.body.final_ = true;
        self.next_client += 1;
        self.outcome.client_messages += 1;
        msg
    }

    /// The Status and Results the captured device gave to the captured server command matching
    /// `c` (same name and LocURIs), each match used once.
    fn captured_reply(&mut self, c: &Command) -> (Option<Status>, Option<crate::syncml::Results>) {
        let key = key_of(c);
        let session = &self.sessions[self.session];
        for (mi, m) in session.iter().enumerate() {
            if m.side != Side::Server {
                continue;
            }
            let mut flat = Vec::new();
            flatten_answerable(&m.msg.body.commands, &mut flat);
            for (ci, cc) in flat.iter().enumerate() {
                if key_of(cc) != key || self.used.contains(&(mi, ci)) {
                    continue;
                }
                let msg_ref = &m.msg.hdr.msg_id;
                let later = session[mi + 1..].iter().filter(|x| x.side == Side::Client);
                let mut status = None;
                let mut results = None;
                for x in later {
                    for cmd in &x.msg.body.commands {
                        match cmd {
                            Command::Status(s)
                                if s.cmd_ref == cc.cmd_id() && (s.msg_ref.is_empty() || &s.msg_ref == msg_ref) =>
                            {
                                status.get_or_insert_with(|| s.clone());
                            }
                            Command::Results(r)
                                if r.cmd_ref == cc.cmd_id() && (r.msg_ref.is_empty() || &r.msg_ref == msg_ref) =>
                            {
                                results.get_or_insert_with(|| r.clone());
                            }
                            _ => {}
                        }
                    }
                    if status.is_some() {
                        break;
                    }
                }
                if status.is_some() {
                    self.used.push((mi, ci));
                    return (status, results);
                }
            }
        }
        (None, None)
    }

    fn diff(&mut self, message: usize, change: &str, command: &str, target: &str, detail: &str) {
        self.outcome.differences.push(Difference {
            session: self.session + 1,
            message,
            change: change.into(),
            command: command.into(),
            target: target.into(),
            detail: detail.into(),
        });
    }

    /// Compares server message `n` now (`live`) with the captured one.
    fn compare(&mut self, n: usize, live: Option<&SyncMl>, captured: Option<&SyncMl>) {
        let empty = SyncMl::default();
        let (l, c) = (live.unwrap_or(&empty), captured.unwrap_or(&empty));
        let ends = |m: &SyncMl| m.body.commands.iter().all(|c| matches!(c, Command::Status(_) | Command::Results(_)));
        // Statuses for the client's commands, by (Cmd, captured CmdID).
        let statuses = |m: &SyncMl, map: Option<&BTreeMap<String, String>>| -> BTreeMap<(String, String), String> {
            m.body
                .commands
                .iter()
                .filter_map(|c| match c {
                    Command::Status(s) => {
                        let r = map.and_then(|m| m.get(&s.cmd_ref)).cloned().unwrap_or_else(|| s.cmd_ref.clone());
                        Some(((s.cmd.clone(), r), s.data.trim().to_string()))
                    }
                    _ => None,
                })
                .collect()
        };
        let (ls, cs) = (statuses(l, Some(&self.cmd_map)), statuses(c, None));
        // A capture that ends the session with an empty body and a server that ends it with a
        // message of Statuses end it alike: only commands count then.
        let compare_statuses = !(live.is_none() || captured.is_none()) || !(ends(l) && ends(c));
        if compare_statuses {
            for (k, code) in &cs {
                let what = if k.0 == "SyncHdr" { "SyncHdr".to_string() } else { format!("{} CmdID {}", k.0, k.1) };
                match ls.get(k) {
                    Some(now) if now != code => {
                        self.diff(n, "changed", "Status", &what, &format!("status {code} -> {now}"))
                    }
                    None => self.diff(n, "removed", "Status", &what, &format!("status {code} no longer sent")),
                    _ => {}
                }
            }
            for (k, now) in &ls {
                if !cs.contains_key(k) {
                    let what = if k.0 == "SyncHdr" { "SyncHdr".to_string() } else { format!("{} CmdID {}", k.0, k.1) };
                    self.diff(n, "added", "Status", &what, &format!("status {now}, not in the capture"));
                }
            }
        }
        let mut lc = Vec::new();
        flatten_answerable(&l.body.commands, &mut lc);
        let mut cc = Vec::new();
        flatten_answerable(&c.body.commands, &mut cc);
        let mut taken = vec![false; lc.len()];
        for cap in &cc {
            let key = key_of(cap);
            let found = lc.iter().enumerate().find(|(i, x)| !taken[*i] && key_of(x) == key).map(|(i, _)| i);
            match found {
                Some(i) => {
                    taken[i] = true;
                    if let Some(d) = item_change(cap, lc[i]) {
                        self.diff(n, "changed", cap.name(), &targets(cap).join(" "), &d);
                    }
                }
                None => self.diff(n, "removed", cap.name(), &targets(cap).join(" "), "in the capture, not sent now"),
            }
        }
        for (i, x) in lc.iter().enumerate() {
            if !taken[i] {
                self.diff(n, "added", x.name(), &targets(x).join(" "), "sent now, not in the capture");
            }
        }
    }

    /// The outcome so far (the whole of it once [`Next::Done`]).
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }
}

/// The commands a client answers with a Status: top-level ones and the children of Atomic and
/// Sequence (after their container).
fn flatten_answerable<'a>(cmds: &'a [Command], out: &mut Vec<&'a Command>) {
    for c in cmds {
        match c {
            Command::Status(_) | Command::Results(_) => {}
            Command::Atomic(a) | Command::Sequence(a) => {
                out.push(c);
                flatten_answerable(&a.commands, out);
            }
            other => out.push(other),
        }
    }
}

/// The LocURIs a command addresses.
fn targets(c: &Command) -> Vec<String> {
    match c {
        Command::Add(i) | Command::Replace(i) | Command::Delete(i) | Command::Get(i) | Command::Exec(i) => {
            i.items.iter().map(|it| it.target.clone().unwrap_or_default()).collect()
        }
        Command::Alert(a) => vec![format!("Alert {}", a.data)],
        _ => Vec::new(),
    }
}

/// What identifies a command across the two sessions: its name and LocURIs (an Atomic or
/// Sequence by its children's).
fn key_of(c: &Command) -> String {
    match c {
        Command::Atomic(a) | Command::Sequence(a) => {
            let inner: Vec<String> = a.commands.iter().map(key_of).collect();
            format!("{}[{}]", c.name(), inner.join(","))
        }
        other => format!("{} {}", other.name(), targets(other).join(" ")),
    }
}

/// How the items of two matching commands differ (Data, Format), if they do.
fn item_change(captured: &Command, now: &Command) -> Option<String> {
    let items = |c: &Command| -> Vec<Item> {
        match c {
            Command::Add(i) | Command::Replace(i) | Command::Delete(i) | Command::Get(i) | Command::Exec(i) => {
                let ItemCmd { items, .. } = i;
                items.clone()
            }
            _ => Vec::new(),
        }
    };
    for (a, b) in items(captured).iter().zip(items(now).iter()) {
        if a.data != b.data {
            return Some(format!("data {:?} -> {:?}", short(a.data.as_deref()), short(b.data.as_deref())));
        }
        let f = |i: &Item| i.meta.as_ref().and_then(|m| m.format.clone());
        if f(a) != f(b) {
            return Some(format!("format {:?} -> {:?}", f(a).unwrap_or_default(), f(b).unwrap_or_default()));
        }
    }
    None
}

fn short(v: Option<&str>) -> String {
    let v = v.unwrap_or("");
    if v.chars().count() <= 60 { v.to_string() } else { format!("{}…", v.chars().take(57).collect::<String>()) }
}

fn set_cmd_id(c: &mut Command, id: &str) {
    match c {
        Command::Alert(a) => a.cmd_id = id.into(),
        Command::Add(i) | Command::Replace(i) | Command::Delete(i) | Command::Get(i) | Command::Exec(i) => {
            i.cmd_id = id.into()
        }
        Command::Atomic(a) | Command::Sequence(a) => a.cmd_id = id.into(),
        Command::Status(s) => s.cmd_id = id.into(),
        Command::Results(r) => r.cmd_id = id.into(),
        Command::Unsupported { cmd_id, .. } => *cmd_id = id.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Capture {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures/fleetdm-win10-19043.txt");
        super::super::read(&[path]).unwrap()
    }

    fn sent(n: Next) -> SyncMl {
        match n {
            Next::Send(m) => *m,
            Next::Done => panic!("expected a message"),
        }
    }

    #[test]
    fn a_server_answering_as_captured_gets_the_captured_answers_and_no_difference() {
        let cap = fleet();
        let server = cap.messages.iter().find(|m| m.side == Side::Server).unwrap().msg.clone();
        let mut r = Replay::new(&cap, "0A1B2C3D4E5F60718293A4B5C6D7E8F9", "http://127.0.0.1:1/MDM.svc").unwrap();
        let first = sent(r.start());
        assert_eq!(first.hdr.source, "0A1B2C3D4E5F60718293A4B5C6D7E8F9");
        let Command::Replace(devinfo) = &first.body.commands[2] else { panic!("package 1's Replace") };
        assert_eq!(devinfo.items[0].data.as_deref(), Some("0A1B2C3D4E5F60718293A4B5C6D7E8F9"), "DevId follows");
        let mut live = server.clone();
        live.hdr.msg_id = "7".into();
        let second = sent(r.receive(Some(&live)));
        let statuses: Vec<(String, String, String)> = second
            .body
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Status(s) => Some((s.msg_ref.clone(), s.cmd_ref.clone(), s.data.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            statuses,
            [
                ("7".into(), "0".into(), "200".into()),
                ("7".into(), "5".into(), "202".into()),
                ("7".into(), "6".into(), "202".into())
            ]
        );
        assert!(matches!(r.receive(None), Next::Done));
        assert!(r.outcome().same(), "{:?}", r.outcome().differences);
    }

    #[test]
    fn changed_added_and_removed_commands_and_statuses_are_told() {
        let cap = fleet();
        let mut live = cap.messages.iter().find(|m| m.side == Side::Server).unwrap().msg.clone();
        // The first Replace's data changes, the second goes, a Get comes, a status changes.
        let Command::Replace(r) = &mut live.body.commands[4] else { panic!() };
        r.items[0].data = Some("https://example.test/other.jpg".into());
        live.body.commands.remove(5);
        live.body.commands.push(Command::Get(ItemCmd {
            cmd_id: "9".into(),
            items: vec![Item::target("./DevDetail/SwV")],
            ..ItemCmd::default()
        }));
        let Command::Status(s) = &mut live.body.commands[3] else { panic!() };
        s.data = "401".into();
        let mut r = Replay::new(&cap, "0A1B2C3D4E5F60718293A4B5C6D7E8F9", "http://127.0.0.1:1/MDM.svc").unwrap();
        let _ = r.start();
        let answer = sent(r.receive(Some(&live)));
        assert!(
            answer.body.commands.iter().any(|c| matches!(c, Command::Status(s) if s.cmd_ref == "9" && s.data == "404"))
        );
        let _ = r.receive(None);
        let o = r.outcome();
        let told: Vec<(&str, &str)> = o.differences.iter().map(|d| (d.change.as_str(), d.command.as_str())).collect();
        assert_eq!(told, [("changed", "Status"), ("changed", "Replace"), ("removed", "Replace"), ("added", "Get")]);
        assert_eq!(o.differences[0].detail, "status 200 -> 401");
        assert_eq!(o.unanswered.len(), 1);
    }
}
