//! Command execution: SyncML commands in, [`CmdOutcome`]s out (OMA DM Protocol §8, MS-MDM §3.1.5).

use std::borrow::Cow;

use crate::syncml::{Command, Container, Item, ItemCmd, Meta, StatusCode};

use super::schema::{Format, Lifetime, NodeSpec, Ops};
use super::uri::{Query, Scope, UriRef, encode_segment};
use super::{Csp, CspCx, Effect, Env, NodeRef, Registry, TreeState, WriteOp};

/// What one received command (or one item of it) came to: the Status to send and, for a Get,
/// the Results items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutcome {
    pub cmd_id: String,
    /// The command name for the Status `Cmd` element (a static string for every SyncML
    /// command: one outcome per command, and no allocation for its name).
    pub cmd: Cow<'static, str>,
    pub code: StatusCode,
    /// Set when a multi-item command's items got different codes: one outcome per item.
    pub target_refs: Vec<String>,
    /// Results items of a Get (empty otherwise).
    pub results: Vec<Item>,
}

impl CmdOutcome {
    /// An outcome with no Results and no TargetRefs.
    pub fn new(cmd_id: &str, cmd: &str, code: StatusCode) -> Self {
        Self::of(cmd_id, command_name(cmd), code)
    }

    /// [`CmdOutcome::new`] for a command name known here (no lookup of the name).
    fn of(cmd_id: &str, cmd: Cow<'static, str>, code: StatusCode) -> Self {
        CmdOutcome { cmd_id: cmd_id.to_string(), cmd, code, target_refs: Vec::new(), results: Vec::new() }
    }
}

/// `name` as a static string when it is a SyncML command's (`Add`, `Status`...), else a copy.
pub fn command_name(name: &str) -> Cow<'static, str> {
    const NAMES: [&str; 16] = [
        "Add", "Replace", "Get", "Delete", "Exec", "Atomic", "Sequence", "Alert", "Status", "Results", "SyncHdr",
        "Copy", "Map", "Sync", "Put", "Search",
    ];
    match NAMES.iter().find(|n| **n == name) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(name.to_string()),
    }
}

/// A device's tree during command execution: the shared registry, the device's values, the
/// environment and the effects produced so far.
pub struct Tree<'a> {
    pub registry: &'a Registry,
    pub state: &'a mut TreeState,
    pub env: &'a Env,
    pub effects: Vec<Effect>,
    /// The device's `unsupported` tree keys, one a line ([`UNSUPPORTED_KEY`]), read once.
    unsupported: Option<&'a str>,
}

/// The settings key of the nodes a device answers 404 for whatever the command and whatever
/// CSP serves them: the template's `unsupported` LocURIs as tree keys
/// (`Vendor/MSFT/DeviceStatus/TPM`), one a line (what a real device answered 404 for, learnt by
/// `device import`). The node and everything below it are not there; resolving a LocURI checks
/// it, once per item.
pub const UNSUPPORTED_KEY: &str = "unsupported";

/// True when `key` is one of the tree keys of `list` (one a line) or below one.
fn is_listed(list: &str, key: &str) -> bool {
    list.lines().any(|k| key == k || key.strip_prefix(k).is_some_and(|rest| rest.starts_with('/')))
}

/// The specs of a node and its ancestors with the ends of their keys; inline up to a depth that
/// covers nearly every LocURI (`Policy/Config/<Area>/<Policy>` is 4), so resolving allocates
/// only the key.
type Chain = smallvec::SmallVec<[(&'static NodeSpec, usize); 8]>;

/// A LocURI resolved against the registry. Built once per item: the keys and relative paths of
/// the node and of each of its ancestors are slices of one string.
struct Resolved<'r> {
    csp: &'r dyn Csp,
    /// For each depth from the CSP root (0) down to the node: its spec and where its state key
    /// ends in `key`.
    chain: Chain,
    /// The node's state key: the key of the CSP root in this scope (in the root's own spelling,
    /// so that a case-insensitive CSP has one set of keys), then each decoded segment below it.
    key: String,
    scope: Scope,
}

impl Resolved<'_> {
    /// Depth of the node below the CSP root (0 for the root itself).
    fn depth(&self) -> usize {
        self.chain.len() - 1
    }

    fn spec(&self) -> &'static NodeSpec {
        self.chain[self.chain.len() - 1].0
    }

    fn spec_at(&self, depth: usize) -> &'static NodeSpec {
        self.chain[depth].0
    }

    /// Key of the CSP root in this scope.
    fn base(&self) -> &str {
        &self.key[..self.chain[0].1]
    }

    fn key_at(&self, depth: usize) -> &str {
        &self.key[..self.chain[depth].1]
    }

    fn key(&self) -> &str {
        &self.key
    }

    /// The decoded path of the ancestor at `depth` relative to the CSP root.
    fn rel_at(&self, depth: usize) -> &str {
        if depth == 0 { "" } else { &self.key[self.chain[0].1 + 1..self.chain[depth].1] }
    }

    fn rel_path(&self) -> &str {
        self.rel_at(self.depth())
    }

    fn node(&self) -> NodeRef<'_> {
        NodeRef { rel: self.rel_path(), spec: self.spec(), scope: self.scope }
    }

    /// The decoded name of the node (`None` for the CSP root).
    fn name(&self) -> Option<&str> {
        let d = self.depth();
        (d > 0).then(|| &self.key[self.chain[d - 1].1 + 1..])
    }

    /// The child `name` of this node, of spec `spec`.
    fn child(&self, spec: &'static NodeSpec, name: &str) -> Self {
        let mut key = String::with_capacity(self.key.len() + 1 + name.len());
        key.push_str(&self.key);
        key.push('/');
        key.push_str(name);
        let mut chain = self.chain.clone();
        chain.push((spec, key.len()));
        Resolved { csp: self.csp, chain, key, scope: self.scope }
    }
}

/// Where a Get landed: a node of a CSP, or a path above the CSP roots.
enum Target<'r> {
    Node(Resolved<'r>),
    AboveRoots(Vec<&'static str>),
}

impl<'a> Tree<'a> {
    /// A tree over a device's state.
    pub fn new(registry: &'a Registry, state: &'a mut TreeState, env: &'a Env) -> Self {
        Tree { registry, state, env, effects: Vec::new(), unsupported: env.settings.str(UNSUPPORTED_KEY) }
    }

    /// Executes one command of a server message and returns the outcomes in status order (an
    /// Atomic or Sequence first, then one per child). Alerts, Status and Results are not tree
    /// commands: the session handles them and they give no outcome here.
    pub fn execute(&mut self, cmd: &Command) -> Vec<CmdOutcome> {
        let mut out = Vec::with_capacity(match cmd {
            Command::Atomic(c) | Command::Sequence(c) => 1 + c.commands.len(),
            _ => 1,
        });
        self.run(cmd, false, &mut out);
        out
    }

    fn run(&mut self, cmd: &Command, in_atomic: bool, out: &mut Vec<CmdOutcome>) {
        match cmd {
            Command::Get(c) if in_atomic => out.push(CmdOutcome::new(&c.cmd_id, "Get", StatusCode::CommandFailed)),
            Command::Get(c) => self.items(c, "Get", out, |t, item| Ok((StatusCode::Ok, t.get(item)?))),
            Command::Add(c) => self.items(c, "Add", out, |t, item| t.write(WriteOp::Add, item, c.meta.as_deref())),
            Command::Replace(c) => {
                self.items(c, "Replace", out, |t, item| t.write(WriteOp::Replace, item, c.meta.as_deref()))
            }
            Command::Delete(c) => self.items(c, "Delete", out, |t, item| t.write(WriteOp::Delete, item, None)),
            Command::Exec(c) => self.items(c, "Exec", out, |t, item| t.exec(item)),
            // A command without CmdID cannot be answered properly: 400 with an empty CmdRef,
            // and its children are not run (OMA DM RepPro Atomic and Sequence; items() does the same for the others).
            Command::Atomic(c) | Command::Sequence(c) if c.cmd_id.is_empty() => {
                out.push(CmdOutcome::new("", cmd.name(), StatusCode::BadRequest))
            }
            Command::Atomic(c) if in_atomic => {
                // A nested Atomic is not supported: it fails as a whole (OMA DM RepPro Atomic and Sequence).
                out.push(CmdOutcome::new(&c.cmd_id, "Atomic", StatusCode::CommandFailed));
            }
            Command::Atomic(c) => self.atomic(c, out),
            Command::Sequence(c) => self.sequence(c, in_atomic, out),
            Command::Unsupported { name, cmd_id } => {
                // SyncML commands Windows does not implement are 406; an element that is not a
                // command at all is 400 (OMA DM RepPro Atomic and Sequence).
                let code = match name.as_str() {
                    "Copy" | "Map" | "Sync" | "Put" | "Search" => StatusCode::OptionalFeatureNotSupported,
                    _ => StatusCode::BadRequest,
                };
                out.push(CmdOutcome::new(cmd_id, name, code))
            }
            Command::Alert(a) if in_atomic => out.push(CmdOutcome::new(&a.cmd_id, "Alert", StatusCode::BadRequest)),
            Command::Status(s) if in_atomic => out.push(CmdOutcome::new(&s.cmd_id, "Status", StatusCode::BadRequest)),
            Command::Results(r) if in_atomic => out.push(CmdOutcome::new(&r.cmd_id, "Results", StatusCode::BadRequest)),
            Command::Alert(_) | Command::Status(_) | Command::Results(_) => {}
        }
    }

    /// Runs `f` for each item; one outcome when all items agree, else one per item with its
    /// TargetRef (OMA DM Protocol §8, MS-MDM §3.1.5).
    fn items(
        &mut self,
        c: &ItemCmd,
        name: &'static str,
        out: &mut Vec<CmdOutcome>,
        mut f: impl FnMut(&mut Self, &Item) -> Result<(StatusCode, Vec<Item>), StatusCode>,
    ) {
        if c.cmd_id.is_empty() {
            out.push(CmdOutcome::of("", Cow::Borrowed(name), StatusCode::BadRequest));
            return;
        }
        if c.items.is_empty() {
            out.push(CmdOutcome::of(&c.cmd_id, Cow::Borrowed(name), StatusCode::IncompleteCommand));
            return;
        }
        let mut run_one = |t: &mut Self, item: &Item| {
            let mark = t.state.mark();
            let effects = t.effects.len();
            match f(t, item) {
                Ok(ok) => ok,
                Err(code) => {
                    t.state.rollback(mark);
                    t.effects.truncate(effects);
                    (code, Vec::new())
                }
            }
        };
        if let [item] = c.items.as_slice() {
            // The usual case: one item, one outcome.
            let (code, results) = run_one(self, item);
            let mut o = CmdOutcome::of(&c.cmd_id, Cow::Borrowed(name), code);
            o.results = results;
            out.push(o);
            return;
        }
        let mut per_item: Vec<(&Item, StatusCode, Vec<Item>)> = Vec::with_capacity(c.items.len());
        for item in &c.items {
            let (code, results) = run_one(self, item);
            per_item.push((item, code, results));
        }
        let all_same = per_item.windows(2).all(|w| w[0].1 == w[1].1);
        if all_same {
            let mut o = CmdOutcome::of(&c.cmd_id, Cow::Borrowed(name), per_item[0].1);
            let mut all = Vec::with_capacity(per_item.iter().map(|(_, _, r)| r.len()).sum());
            per_item.into_iter().for_each(|(_, _, r)| all.extend(r));
            o.results = all;
            out.push(o);
        } else {
            for (item, code, results) in per_item {
                let mut o = CmdOutcome::of(&c.cmd_id, Cow::Borrowed(name), code);
                o.target_refs.push(item.target.clone().unwrap_or_default());
                o.results = results;
                out.push(o);
            }
        }
    }

    fn atomic(&mut self, c: &Container, out: &mut Vec<CmdOutcome>) {
        let mark = self.state.mark();
        let effects = self.effects.len();
        let mut children = Vec::new();
        let mut failed = false;
        // Nodes Added so far in this Atomic: a Replace of one of them is not supported (500,
        // OMA DM RepPro Atomic and Sequence).
        let mut added: Vec<String> = Vec::new();
        for child in &c.commands {
            if failed {
                // Not executed: reported as rolled back with the rest.
                children.push(CmdOutcome::new(child.cmd_id(), child.name(), StatusCode::AtomicRollbackOk));
                continue;
            }
            let start = children.len();
            match child {
                Command::Replace(r) if r.items.iter().any(|i| added.contains(&item_key(i))) => {
                    children.push(CmdOutcome::new(&r.cmd_id, "Replace", StatusCode::CommandFailed));
                    failed = true;
                    continue;
                }
                Command::Add(a) => added.extend(a.items.iter().map(item_key)),
                _ => {}
            }
            self.run(child, true, &mut children);
            failed = children[start..].iter().any(|o| !o.code.is_success());
        }
        if failed {
            self.state.rollback(mark);
            self.effects.truncate(effects);
            for o in &mut children {
                if o.code.is_success() {
                    o.code = StatusCode::AtomicRollbackOk;
                }
                o.results.clear();
            }
        }
        let code = if failed { StatusCode::AtomicFailed } else { StatusCode::Ok };
        out.push(CmdOutcome::new(&c.cmd_id, "Atomic", code));
        out.extend(children);
    }

    fn sequence(&mut self, c: &Container, in_atomic: bool, out: &mut Vec<CmdOutcome>) {
        let at = out.len();
        out.push(CmdOutcome::new(&c.cmd_id, "Sequence", StatusCode::Ok));
        for child in &c.commands {
            self.run(child, in_atomic, out);
        }
        // Inside an Atomic a failed child must fail the Atomic: carry it up on the Sequence.
        if in_atomic && out[at + 1..].iter().any(|o| !o.code.is_success()) {
            out[at].code = StatusCode::CommandFailed;
        }
    }

    fn resolve(&self, uri: &UriRef<'_>) -> Result<Target<'a>, StatusCode> {
        let registry: &'a Registry = self.registry;
        let found = registry
            .locate(uri.scope, &uri.segments)
            .map(|(i, rel)| (registry.csp_and_base(i, uri.scope), rel))
            .filter(|((csp, _), _)| csp.present(self.env));
        let Some(((csp, base), rel)) = found else {
            let above = registry.children_above_roots(uri.scope, &uri.segments);
            return if above.is_empty() { Err(StatusCode::NotFound) } else { Ok(Target::AboveRoots(above)) };
        };
        let rel_len = rel.iter().map(|s| s.len() + 1).sum::<usize>();
        let mut key = String::with_capacity(base.len() + rel_len);
        key.push_str(base);
        // Below the root the key is the decoded segments, each after a `/`: when nothing was
        // decoded, the segments are the end of the LocURI's path as sent, copied at once.
        let tail = uri.plain.filter(|_| rel_len > 0).and_then(|p| p.get(p.len().checked_sub(rel_len - 1)?..));
        if let Some(tail) = tail {
            key.push('/');
            key.push_str(tail);
        }
        let mut chain = Chain::new();
        let mut spec = csp.schema();
        let mut end = base.len();
        chain.push((spec, end));
        let ignore_case = csp.ignore_case();
        for seg in rel {
            let next = if ignore_case { spec.child_ignore_case(seg) } else { spec.child(seg) };
            spec = next.ok_or(StatusCode::NotFound)?;
            if tail.is_none() {
                key.push('/');
                key.push_str(seg);
            }
            end += 1 + seg.len();
            chain.push((spec, end));
        }
        debug_assert_eq!(end, key.len());
        debug_assert_eq!(key, rel.iter().fold(base.to_string(), |k, s| k + "/" + s));
        if self.unsupported.is_some_and(|list| is_listed(list, &key)) {
            return Err(StatusCode::NotFound);
        }
        Ok(Target::Node(Resolved { csp, chain, key, scope: uri.scope }))
    }

    fn cx<'c>(&'c mut self, base: &'c str) -> CspCx<'c> {
        CspCx { state: self.state, env: self.env, base, effects: &mut self.effects }
    }

    /// True when every dynamic node on the path down to `depth` (inclusive) is stored and the
    /// CSP says every node on it is there ([`Csp::exists`]).
    fn path_exists(&mut self, r: &Resolved<'_>, depth: usize) -> bool {
        let csp = r.csp;
        let cx = self.cx(r.base());
        (1..=depth).all(|d| {
            let spec = r.spec_at(d);
            (spec.lifetime == Lifetime::Permanent || cx.state.entry(r.key_at(d)).is_some())
                && csp.exists(&cx, NodeRef { rel: r.rel_at(d), spec, scope: r.scope })
        })
    }

    /// The child list a CSP computes for an interior node ([`Csp::children`]).
    fn computed_children(&mut self, r: &Resolved<'_>) -> Option<Vec<String>> {
        let csp = r.csp;
        let cx = self.cx(r.base());
        csp.children(&cx, r.node())
    }

    /// The value a Get reads for a leaf: computed, stored, or default.
    fn leaf_value(&mut self, r: &Resolved<'_>) -> Option<String> {
        let csp = r.csp;
        let cx = self.cx(r.base());
        if let Some(v) = csp.read(&cx, r.node()) {
            return Some(v);
        }
        cx.state.value(r.key()).map(str::to_string).or_else(|| r.spec().default.map(str::to_string))
    }

    /// Child names of an interior node: computed by the CSP, or fixed children, then stored
    /// dynamic ones.
    fn child_names(&mut self, r: &Resolved<'_>) -> Vec<String> {
        if let Some(names) = self.computed_children(r) {
            return names;
        }
        let mut names: Vec<String> = Vec::new();
        let stored = self.state.child_names(r.key());
        for c in r.spec().children {
            if c.is_placeholder() {
                continue;
            }
            if c.lifetime == Lifetime::Permanent || stored.iter().any(|s| s == c.name) {
                names.push(c.name.to_string());
            }
        }
        for s in stored {
            if !names.contains(&s) {
                names.push(s);
            }
        }
        names
    }

    fn get(&mut self, item: &Item) -> Result<Vec<Item>, StatusCode> {
        let raw = item.target.as_deref().ok_or(StatusCode::BadRequest)?;
        let uri = UriRef::parse(raw).map_err(|_| StatusCode::BadRequest)?;
        let r = match self.resolve(&uri)? {
            Target::AboveRoots(names) => {
                if uri.query.is_some() {
                    return Err(StatusCode::OptionalFeatureNotSupported);
                }
                let data = names.iter().map(|n| encode_segment(n)).collect::<Vec<_>>().join("/");
                return Ok(vec![result_item(uri.raw, Format::Node, None, data)]);
            }
            Target::Node(r) => r,
        };
        if !self.path_exists(&r, r.depth()) {
            return Err(StatusCode::NotFound);
        }
        let spec = r.spec();
        match &uri.query {
            Some(Query::Prop(p)) => return self.prop(&r, uri.raw, p),
            Some(Query::Other(_)) => return Err(StatusCode::OptionalFeatureNotSupported),
            Some(Query::ListStructData) | None => {}
        }
        if !spec.ops.contains(Ops::GET) {
            return Err(StatusCode::CommandNotAllowed);
        }
        if uri.query == Some(Query::ListStructData) {
            let base_uri = uri.raw.split('?').next().unwrap_or(uri.raw);
            let mut items = Vec::new();
            self.struct_data(r, base_uri, &mut items);
            return Ok(items);
        }
        if spec.is_interior() {
            let data = match self.computed_children(&r) {
                Some(names) => names.join("/"),
                None => self.child_names(&r).iter().map(|n| encode_segment(n)).collect::<Vec<_>>().join("/"),
            };
            return Ok(vec![result_item(uri.raw, Format::Node, None, data)]);
        }
        let value = self.leaf_value(&r).ok_or(StatusCode::NotFound)?;
        Ok(vec![result_item(uri.raw, spec.format, Some("text/plain"), value)])
    }

    /// `?list=StructData`: the node and every node below it that has something to show, each
    /// with its own Source LocURI, in breadth-first order: interior nodes carry
    /// `Format node` and an empty `Type` and no Data, leaves carry only their Data. This is the
    /// shape of the Windows reply in the EnterpriseAppManagement seed (its Inventory example:
    /// the Inventory node, then each product node, then the products' leaves).
    fn struct_data(&mut self, r: Resolved<'_>, uri: &str, items: &mut Vec<Item>) {
        let mut queue = std::collections::VecDeque::new();
        queue.push_back((r, uri.to_string()));
        while let Some((node, uri)) = queue.pop_front() {
            let spec = node.spec();
            if !spec.ops.contains(Ops::GET) {
                continue;
            }
            if !spec.is_interior() {
                if let Some(v) = self.leaf_value(&node) {
                    items.push(Item { source: Some(uri), data: Some(v), ..Item::default() });
                }
                continue;
            }
            let mut meta = Meta::format(Format::Node.as_str());
            meta.type_ = Some(String::new());
            items.push(Item { source: Some(uri.clone()), meta: Some(Box::new(meta)), ..Item::default() });
            for name in self.child_names(&node) {
                let Some(child) = spec.child(&name) else { continue };
                let sub = node.child(child, &name);
                if self.path_exists(&sub, sub.depth()) {
                    queue.push_back((sub, format!("{uri}/{}", encode_segment(&name))));
                }
            }
        }
    }

    fn prop(&mut self, r: &Resolved<'_>, raw: &str, prop: &str) -> Result<Vec<Item>, StatusCode> {
        let spec = r.spec();
        let value = match prop {
            "Type" => spec.mime_type().to_string(),
            "Format" => spec.format.as_str().to_string(),
            "Name" => r.name().unwrap_or(spec.name).to_string(),
            "Size" if !spec.is_interior() => {
                self.leaf_value(r).map(|v| v.len().to_string()).ok_or(StatusCode::NotFound)?
            }
            "ACL" => String::new(),
            _ => return Err(StatusCode::OptionalFeatureNotSupported),
        };
        Ok(vec![result_item(raw, Format::Chr, None, value)])
    }

    fn write(
        &mut self,
        op: WriteOp,
        item: &Item,
        cmd_meta: Option<&Meta>,
    ) -> Result<(StatusCode, Vec<Item>), StatusCode> {
        let raw = item.target.as_deref().ok_or(StatusCode::BadRequest)?;
        let uri = UriRef::parse(raw).map_err(|_| StatusCode::BadRequest)?;
        if uri.query.is_some() {
            return Err(StatusCode::BadRequest);
        }
        // A value larger than the device keeps is refused before anything else is looked at
        // (and before it is copied): OMA DM's 413, request entity too large.
        if op != WriteOp::Delete
            && item.data.as_ref().is_some_and(|d| d.len() as u64 > self.env.settings.max_value_bytes())
        {
            return Err(StatusCode::RequestEntityTooLarge);
        }
        let r = match self.resolve(&uri)? {
            Target::Node(r) if r.depth() > 0 || op == WriteOp::Add => r,
            // The roots of the tree and of each CSP are not the server's to write.
            _ => return Err(StatusCode::CommandNotAllowed),
        };
        let spec = r.spec();
        let needed = match op {
            WriteOp::Add => Ops::ADD,
            WriteOp::Replace => Ops::REPLACE,
            WriteOp::Delete => Ops::DELETE,
        };
        let depth = r.depth();
        let key = r.key();
        let stored = self.state.entry(key).is_some();
        // Existence first: a write to a node that is not there is 404 whatever the table says,
        // an Add of a node that is there is 418.
        match op {
            WriteOp::Add => {
                let present = self.path_exists(&r, depth.saturating_sub(1))
                    && match spec.lifetime {
                        Lifetime::Dynamic => stored,
                        Lifetime::Permanent => spec.is_interior() || stored || spec.default.is_some(),
                    };
                if present {
                    return Err(StatusCode::AlreadyExists);
                }
                // Missing dynamic ancestors are created implicitly when the table lets the
                // server add them (the seeds' Atomic examples rely on this).
                for d in 1..depth {
                    let anc = r.spec_at(d);
                    if anc.lifetime == Lifetime::Dynamic
                        && self.state.entry(r.key_at(d)).is_none()
                        && !anc.ops.contains(Ops::ADD)
                    {
                        return Err(StatusCode::NotFound);
                    }
                }
            }
            WriteOp::Replace | WriteOp::Delete => {
                if !self.path_exists(&r, depth) {
                    return Err(StatusCode::NotFound);
                }
            }
        }
        // An interior node has no value to replace (OMA DM Replace on an interior node would be a
        // rename, which Windows does not support); storing one would turn it into a leaf.
        if !spec.ops.contains(needed) || (op == WriteOp::Replace && spec.is_interior()) {
            return Err(StatusCode::CommandNotAllowed);
        }
        let value = match op {
            WriteOp::Delete => None,
            _ => Some(check_value(spec, item, cmd_meta)?),
        };
        let node = r.node();
        let csp = r.csp;
        {
            let cx = self.cx(r.base());
            csp.validate(&cx, op, node, value.as_deref())?;
        }
        match op {
            WriteOp::Add => {
                for d in 1..depth {
                    let k = r.key_at(d);
                    if r.spec_at(d).lifetime == Lifetime::Dynamic && self.state.entry(k).is_none() {
                        self.state.set(k, super::Entry::Interior);
                    }
                }
                if spec.is_interior() {
                    self.state.set(key, super::Entry::Interior);
                } else {
                    self.state.set_value(key, value.unwrap_or_default());
                }
            }
            WriteOp::Replace => self.state.set_value(key, value.unwrap_or_default()),
            WriteOp::Delete => self.state.remove_subtree(key),
        }
        let mut cx = self.cx(r.base());
        csp.after_write(&mut cx, op, node)?;
        Ok((StatusCode::Ok, Vec::new()))
    }

    fn exec(&mut self, item: &Item) -> Result<(StatusCode, Vec<Item>), StatusCode> {
        let raw = item.target.as_deref().ok_or(StatusCode::BadRequest)?;
        let uri = UriRef::parse(raw).map_err(|_| StatusCode::BadRequest)?;
        let Target::Node(r) = self.resolve(&uri)? else { return Err(StatusCode::CommandNotAllowed) };
        let depth = r.depth();
        let node = r.node();
        let csp = r.csp;
        if !self.path_exists(&r, depth) {
            // Some Exec nodes create their missing dynamic ancestors, as an Add would (see
            // `Csp::exec_creates`); the items loop undoes the creation if the Exec fails.
            if !(r.spec().ops.contains(Ops::EXEC) && csp.exec_creates(node) && self.create_ancestors(&r, depth)) {
                return Err(StatusCode::NotFound);
            }
        }
        if !r.spec().ops.contains(Ops::EXEC) {
            return Err(StatusCode::CommandNotAllowed);
        }
        let mark = self.state.mark();
        let effects = self.effects.len();
        let mut cx = self.cx(r.base());
        let code = csp.exec(&mut cx, node, item.data.as_deref());
        if code.is_success() {
            return Ok((code, Vec::new()));
        }
        // The hook's own changes are undone; then the CSP may record the refusal in its nodes
        // (`Csp::exec_refused`), and what it records stays (outside a failed Atomic).
        self.state.rollback(mark);
        self.effects.truncate(effects);
        let mut cx = self.cx(r.base());
        if csp.exec_refused(&mut cx, node, item.data.as_deref(), code) { Ok((code, Vec::new())) } else { Err(code) }
    }

    /// Creates the missing dynamic ancestors of the node at `depth` when the table lets the
    /// server add each of them; true when the whole path exists afterwards.
    fn create_ancestors(&mut self, r: &Resolved<'_>, depth: usize) -> bool {
        for d in 1..depth {
            let (spec, k) = (r.spec_at(d), r.key_at(d));
            if spec.lifetime == Lifetime::Dynamic && self.state.entry(k).is_none() {
                if !spec.ops.contains(Ops::ADD) {
                    return false;
                }
                self.state.set(k, super::Entry::Interior);
            }
        }
        self.path_exists(r, depth)
    }
}

/// The state key an item targets (empty when it has no usable target).
fn item_key(item: &Item) -> String {
    item.target.as_deref().and_then(|t| UriRef::parse(t).ok()).map(|u| u.key()).unwrap_or_default()
}

/// Checks the data of an Add/Replace against the node's format and returns the value to store
/// (borrowed from the item unless a boolean's case changes).
fn check_value<'i>(spec: &NodeSpec, item: &'i Item, cmd_meta: Option<&Meta>) -> Result<Cow<'i, str>, StatusCode> {
    let sent = item.meta.as_ref().and_then(|m| m.format.as_deref()).or(cmd_meta.and_then(|m| m.format.as_deref()));
    if let Some(sent) = sent {
        let sent = Format::parse(sent).ok_or(StatusCode::UnsupportedMediaType)?;
        if !spec.format.accepts(sent) {
            return Err(StatusCode::UnsupportedMediaType);
        }
    }
    if spec.is_interior() {
        return Ok(Cow::Borrowed(""));
    }
    let data = item.data.as_deref().unwrap_or_default();
    let text = crate::syncml::trim(data);
    let ok = match spec.format {
        Format::Int => text.parse::<i64>().is_ok(),
        Format::Bool => text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false"),
        Format::B64 => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).is_ok()
        }
        Format::Float => text.parse::<f64>().is_ok(),
        _ => true,
    };
    if !ok {
        return Err(StatusCode::BadRequest);
    }
    Ok(match spec.format {
        Format::Int | Format::Float => Cow::Borrowed(text),
        Format::Bool if text.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Owned(text.to_ascii_lowercase()),
        Format::Bool => Cow::Borrowed(text),
        _ => Cow::Borrowed(data),
    })
}

fn result_item(uri: &str, format: Format, type_: Option<&str>, data: String) -> Item {
    let mut meta = Meta::format(format.as_str());
    meta.type_ = type_.map(str::to_string);
    Item { source: Some(uri.to_string()), meta: Some(Box::new(meta)), data: Some(data), ..Item::default() }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::tree::Profile;

    const G: Ops = Ops::GET;

    static TABLE: NodeSpec = NodeSpec::interior(
        "Ns",
        G,
        &[NodeSpec::interior("Class", G, &[NodeSpec::interior("<Obj>", G, &[NodeSpec::leaf("Prop", Format::Int, G)])])],
    );

    /// A computed CSP: objects `a b` and `c d` exist under Class, each with Prop = 7.
    struct Computed {
        ignore_case: bool,
    }

    impl Csp for Computed {
        fn name(&self) -> &'static str {
            "Computed"
        }
        fn root(&self) -> &'static str {
            "Ns"
        }
        fn schema(&self) -> &'static NodeSpec {
            &TABLE
        }
        fn ignore_case(&self) -> bool {
            self.ignore_case
        }
        fn exists(&self, _cx: &CspCx<'_>, node: NodeRef<'_>) -> bool {
            node.segments().nth(1).is_none_or(|o| o == "a b" || o == "c d")
        }
        fn children(&self, _cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<Vec<String>> {
            node.rel.eq_ignore_ascii_case("Class").then(|| vec!["a b".to_string(), "c d".to_string()])
        }
        fn read(&self, _cx: &CspCx<'_>, _node: NodeRef<'_>) -> Option<String> {
            Some("7".into())
        }
    }

    fn get(ignore_case: bool, uri: &str) -> (StatusCode, Option<String>) {
        let mut reg = Registry::new();
        reg.register(Computed { ignore_case });
        let mut state = TreeState::new();
        let env = Env::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(), Profile::Win10);
        let mut tree = Tree::new(&reg, &mut state, &env);
        let c = Command::Get(ItemCmd { cmd_id: "1".into(), items: vec![Item::target(uri)], ..ItemCmd::default() });
        let out = tree.execute(&c).remove(0);
        (out.code, out.results.first().and_then(|i| i.data.clone()))
    }

    #[test]
    fn computed_children_are_listed_as_given_and_decide_existence() {
        assert_eq!(get(false, "./Ns/Class"), (StatusCode::Ok, Some("a b/c d".into())));
        assert_eq!(get(false, "./Ns/Class/a%20b/Prop"), (StatusCode::Ok, Some("7".into())));
        assert_eq!(get(false, "./Ns/Class/x/Prop"), (StatusCode::NotFound, None));
        assert_eq!(get(false, "./Ns/Class/x"), (StatusCode::NotFound, None));
    }

    #[test]
    fn only_a_case_insensitive_csp_matches_names_in_any_case() {
        assert_eq!(get(false, "./ns/class/a%20b/prop").0, StatusCode::NotFound);
        assert_eq!(get(false, "./Ns/class/a%20b/Prop").0, StatusCode::NotFound);
        assert_eq!(get(true, "./ns/CLASS/a%20b/prop"), (StatusCode::Ok, Some("7".into())));
        assert_eq!(get(true, "./NS/class"), (StatusCode::Ok, Some("a b/c d".into())));
    }

    #[test]
    fn a_value_over_max_value_bytes_is_413_and_stores_nothing() {
        let reg = crate::csp::registry();
        let mut state = TreeState::new();
        state.set_value("DevDetail/Ext/Microsoft/DeviceName", "PC-1");
        let mut env = Env::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(), Profile::Win10);
        let mut settings = crate::tree::Settings::default();
        settings.0.insert("max_value_bytes".into(), "8".into());
        env.settings = std::sync::Arc::new(settings);
        let mut tree = Tree::new(&reg, &mut state, &env);
        let replace = |data: &str| {
            Command::Replace(ItemCmd {
                cmd_id: "1".into(),
                items: vec![Item {
                    target: Some("./DevDetail/Ext/Microsoft/DeviceName".into()),
                    data: Some(data.into()),
                    ..Item::default()
                }],
                ..ItemCmd::default()
            })
        };
        assert_eq!(tree.execute(&replace("123456789")).remove(0).code, StatusCode::RequestEntityTooLarge);
        assert_eq!(tree.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("PC-1"));
        assert_eq!(tree.execute(&replace("12345678")).remove(0).code, StatusCode::Ok);
        assert_eq!(tree.state.value("DevDetail/Ext/Microsoft/DeviceName"), Some("12345678"));
    }
}
