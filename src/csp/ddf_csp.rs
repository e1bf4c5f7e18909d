//! Every CSP that mdmsim models by its DDF facts alone (BitLocker, Defender, Firewall, Reboot,
//! the Policy CSP and the rest of Microsoft's DDF files), with the generic semantics of the
//! DM tree: operations by AccessType (405 otherwise), formats, AllowedValues (a value outside
//! them is 400 and the node keeps its value), dynamic nodes (Add creates, 418 on an existing
//! one, Delete), interior Gets listing children, `./User` and `./Device` scopes, and the OS
//! build that introduced a node (a node newer than the device's DevDetail `SwV` is 404).
//!
//! Settings with a fixed name can be set with Add or Replace and read back once set (a Get of a
//! setting never set is 404, as Windows answers for the Policy CSP's `Config` nodes); nodes the
//! DDF marks Permanent read their DDF default. The Policy CSP also answers
//! `Policy/Result/<Area>/<Policy>` with the effective value: the one set in `Config`, else the
//! DDF default (Microsoft's Policy CSP page).
//!
//! The schema is built once per process from [`crate::ddf::builtin`] and shared by every
//! device (a device stores only its values). CSPs with a hand-written module (DMClient,
//! EnterpriseAppManagement, DevInfo, DevDetail, DMAcc, the WMI bridge) keep it: they follow
//! Microsoft's CSP pages where a page and the DDF disagree.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;

use chrono::{DateTime, Utc};

use crate::ddf::{Allowed, NodeFact};
use crate::syncml::StatusCode;
use crate::tree::{Csp, CspCx, Format, Lifetime, NodeRef, NodeSpec, Ops, Registry, Scope, WriteOp};

const DEVICE: &[Scope] = &[Scope::Device];
const USER: &[Scope] = &[Scope::User];

/// One CSP of the DDF table in one scope.
pub struct DdfCsp {
    name: &'static str,
    root: &'static str,
    scope: Scope,
    schema: &'static NodeSpec,
    /// The DDF fact of each node of `schema`, by the node's address (looked up for every node
    /// of every path a command addresses: a fast hash of an address, not SipHash).
    facts: FxHashMap<usize, Fact>,
    /// Policy CSP only: the `Config/<Area>/<Policy>` facts, by `Area/Policy`.
    policies: Option<BTreeMap<String, NodeFact>>,
    /// What the CSP does beyond the generic semantics, when a file of its own says.
    behaviour: Option<&'static dyn DdfBehaviour>,
}

/// A node's fact with its applicability rules read once, at build time, rather than for every
/// command that passes through the node.
struct Fact {
    fact: NodeFact,
    /// `os_build` as numbers.
    min_build: Option<[u64; 3]>,
    /// `editions` as numbers (the EditionAllowList's hex PRODUCT_* values).
    editions: Option<Box<[u32]>>,
}

impl Fact {
    fn new(fact: NodeFact) -> Self {
        let min_build = fact.os_build.as_deref().map(build_of);
        let editions = fact.editions.as_deref().map(|list| {
            list.split(';')
                .filter_map(|x| {
                    u32::from_str_radix(x.trim().trim_start_matches("0x").trim_start_matches("0X"), 16).ok()
                })
                .collect()
        });
        Fact { fact, min_build, editions }
    }
}

/// Behaviour a CSP known by its DDF facts adds to the generic semantics: computed nodes,
/// checks and side effects of writes, Execs and timers. Each lives in a file of its own
/// (`reboot.rs`, `remote_wipe.rs`, `nodecache.rs`, ...), like the hand-written CSPs. Every hook
/// runs before (or instead of) the generic semantics; its default leaves them alone.
pub trait DdfBehaviour: Send + Sync {
    /// As [`Csp::exists`]; `None` leaves the decision to the DDF facts.
    fn exists(&self, _cx: &CspCx<'_>, _node: NodeRef<'_>) -> Option<bool> {
        None
    }

    /// As [`Csp::children`].
    fn children(&self, _cx: &CspCx<'_>, _node: NodeRef<'_>) -> Option<Vec<String>> {
        None
    }

    /// As [`Csp::read`].
    fn read(&self, _cx: &CspCx<'_>, _node: NodeRef<'_>) -> Option<String> {
        None
    }

    /// Checked after the DDF's own checks passed (AllowedValues); as [`Csp::validate`].
    fn validate(
        &self,
        _cx: &CspCx<'_>,
        _op: WriteOp,
        _node: NodeRef<'_>,
        _value: Option<&str>,
    ) -> Result<(), StatusCode> {
        Ok(())
    }

    /// As [`Csp::after_write`].
    fn after_write(&self, _cx: &mut CspCx<'_>, _op: WriteOp, _node: NodeRef<'_>) -> Result<(), StatusCode> {
        Ok(())
    }

    /// Exec on the node at `rel` (below the CSP root); the status answered.
    fn exec(&self, _cx: &mut CspCx<'_>, _rel: &str, _data: Option<&str>) -> StatusCode {
        StatusCode::Ok
    }

    /// As [`Csp::exec_creates`].
    fn exec_creates(&self, _rel: &str) -> bool {
        false
    }

    /// As [`Csp::exec_refused`].
    fn exec_refused(&self, _cx: &mut CspCx<'_>, _rel: &str, _data: Option<&str>, _code: StatusCode) -> bool {
        false
    }

    /// As [`Csp::next_deadline`].
    fn next_deadline(&self, _cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
        None
    }

    /// As [`Csp::on_deadline`].
    fn on_deadline(&self, _cx: &mut CspCx<'_>) {}
}

/// The CSPs of the table that have a behaviour file.
fn behaviour_of(scope: Scope, root: &str) -> Option<&'static dyn DdfBehaviour> {
    match (scope, root) {
        (Scope::Device, "Vendor/MSFT/Reboot") => Some(&super::reboot::Reboot),
        (Scope::Device, "Vendor/MSFT/RemoteWipe") => Some(&super::remote_wipe::RemoteWipe),
        (_, "Vendor/MSFT/Policy") => Some(&super::policy_admx::AdmxPolicies),
        (_, "Vendor/MSFT/NodeCache") => Some(&super::nodecache::NodeCache),
        (Scope::Device, "Vendor/MSFT/DeviceManageability") => Some(&super::device_manageability::DeviceManageability),
        (Scope::Device, "Vendor/MSFT/Update") => Some(&super::update::Update),
        (_, "Vendor/MSFT/EnterpriseModernAppManagement") => Some(&super::modern_app::ModernApps),
        _ => None,
    }
}

/// Nodes that Microsoft's CSP pages document and the DDF files of the table lack, from the
/// behaviour files that need them (the Update CSP has no DDF file at all; the
/// EnterpriseModernAppManagement DDF has no `AppInventoryQuery`). A DDF folder that describes a
/// path wins over these.
fn page_facts() -> Vec<NodeFact> {
    [super::update::FACTS, super::modern_app::FACTS]
        .iter()
        .flat_map(|t| {
            crate::ddf::table::decode(t).expect("the page facts of the behaviour files are well-formed (tested)")
        })
        .collect()
}

/// Every node fact of this process: the built-in table (or `--ddf DIR`), then the page facts of
/// the behaviour files for paths the table lacks.
pub fn facts() -> &'static [NodeFact] {
    static ALL: OnceLock<Vec<NodeFact>> = OnceLock::new();
    ALL.get_or_init(|| with_page_facts(FACTS.get_or_init(crate::ddf::builtin).clone()))
}

/// `facts` and the page facts of the behaviour files whose paths `facts` lacks.
pub fn with_page_facts(mut facts: Vec<NodeFact>) -> Vec<NodeFact> {
    let known: std::collections::HashSet<String> = facts.iter().map(|f| f.path.clone()).collect();
    facts.extend(page_facts().into_iter().filter(|f| !known.contains(&f.path)));
    facts
}

fn addr(spec: &NodeSpec) -> usize {
    spec as *const NodeSpec as usize
}

/// Splits a DDF path into its scope, its CSP root below the scope and the rest:
/// `./Device/Vendor/MSFT/X/a/b` -> (Device, `Vendor/MSFT/X`, `a/b`).
fn split_path(path: &str) -> Option<(Scope, String, String)> {
    let mut segs: Vec<&str> = path.strip_prefix("./")?.split('/').collect();
    let scope = match segs.first() {
        Some(&"Device") => {
            segs.remove(0);
            Scope::Device
        }
        Some(&"User") => {
            segs.remove(0);
            Scope::User
        }
        _ => Scope::Device,
    };
    let root_len = match segs.first() {
        Some(&"Vendor") => 3,
        Some(&"SyncML") => 2,
        _ => 1,
    };
    if segs.len() < root_len {
        return None;
    }
    Some((scope, segs[..root_len].join("/"), segs[root_len..].join("/")))
}

/// A CSP of the table: its scope and its root below the scope.
type RootKey = (Scope, String);

/// Builds the CSPs of `facts`, one per (scope, root), leaving out the roots `taken` (those a
/// hand-written CSP owns).
pub fn from_facts(facts: &[NodeFact], taken: impl Fn(Scope, &str) -> bool) -> Vec<DdfCsp> {
    // (scope, root) -> rel path -> fact, in table order.
    let mut groups: Vec<(RootKey, Vec<(String, NodeFact)>)> = Vec::new();
    for f in facts {
        let Some((scope, root, rel)) = split_path(&f.path) else { continue };
        if taken(scope, &root) {
            continue;
        }
        let key = (scope, root);
        let group = match groups.iter_mut().position(|(k, _)| *k == key) {
            Some(i) => &mut groups[i].1,
            None => {
                groups.push((key, Vec::new()));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        if !group.iter().any(|(r, _)| *r == rel) {
            group.push((rel, f.clone()));
        }
    }
    groups.into_iter().map(|((scope, root), nodes)| build(scope, &root, nodes)).collect()
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn build(scope: Scope, root: &str, nodes: Vec<(String, NodeFact)>) -> DdfCsp {
    let by_rel: HashMap<&str, &NodeFact> = nodes.iter().map(|(r, f)| (r.as_str(), f)).collect();
    // Children of each rel path, in table order, with implicit parents for undescribed ones.
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    for (rel, _) in &nodes {
        let mut path = rel.clone();
        while !path.is_empty() {
            let (parent, _) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            let parent = parent.to_string();
            let list = children.entry(parent.clone()).or_default();
            if !list.contains(&path) {
                list.push(path.clone());
            }
            path = parent;
        }
    }
    let policy = root == "Vendor/MSFT/Policy";
    let root_name = root.rsplit('/').next().unwrap_or(root);
    let spec = spec_of("", root_name, &by_rel, &children, policy);
    let schema: &'static NodeSpec = Box::leak(Box::new(spec));
    let mut facts = FxHashMap::default();
    index(schema, "", &by_rel, &mut facts);
    let policies = policy.then(|| {
        nodes
            .iter()
            .filter_map(|(rel, f)| {
                let rest = rel.strip_prefix("Config/")?;
                (rest.split('/').count() == 2 && f.format != Format::Node).then(|| (rest.to_string(), f.clone()))
            })
            .collect()
    });
    let name = match scope {
        Scope::Device => root_name.to_string(),
        Scope::User => format!("{root_name} (user)"),
    };
    DdfCsp { name: leak(&name), root: leak(root), scope, schema, facts, policies, behaviour: behaviour_of(scope, root) }
}

fn spec_of(
    rel: &str,
    name: &str,
    by_rel: &HashMap<&str, &NodeFact>,
    children: &HashMap<String, Vec<String>>,
    policy: bool,
) -> NodeSpec {
    let kids: Vec<NodeSpec> = children
        .get(rel)
        .map(|list| {
            list.iter()
                .map(|c| {
                    let child_name = c.rsplit('/').next().unwrap_or(c);
                    spec_of(c, child_name, by_rel, children, policy)
                })
                .collect()
        })
        .unwrap_or_default();
    let fact = by_rel.get(rel);
    let has_kids = !kids.is_empty();
    let format = match fact {
        Some(f) if !(has_kids && f.format != Format::Node) => f.format,
        _ if has_kids => Format::Node,
        _ => Format::Node,
    };
    // Policy/Result nodes are computed: always there (the CSP's `exists` decides), never
    // stored; their value is the effective value of the Config policy, in text.
    let computed = policy && (rel == "Result" || rel.starts_with("Result/"));
    // `Config/<AreaName>/<PolicyName>` holds the policies of ingested ADMX files: there when
    // the device knows them (`policy_admx` decides), never created by an Add, text values.
    let admx_slot = policy && (rel == "Config/<AreaName>" || rel == "Config/<AreaName>/<PolicyName>");
    let lifetime = match fact {
        Some(f) if f.dynamic && !computed && !admx_slot => Lifetime::Dynamic,
        _ => Lifetime::Permanent,
    };
    NodeSpec {
        name: leak(name),
        format: if (computed || admx_slot) && format == Format::Null { Format::Chr } else { format },
        ops: fact.map_or(Ops::GET, |f| f.access),
        lifetime,
        default: fact.filter(|f| f.permanent).and_then(|f| f.default.as_deref()).map(leak),
        mime: fact.and_then(|f| f.mime.as_deref()).map(leak),
        children: Box::leak(kids.into_boxed_slice()),
    }
}

fn index(spec: &'static NodeSpec, rel: &str, by_rel: &HashMap<&str, &NodeFact>, out: &mut FxHashMap<usize, Fact>) {
    if let Some(f) = by_rel.get(rel) {
        out.insert(addr(spec), Fact::new((*f).clone()));
    }
    for c in spec.children {
        let child_rel = if rel.is_empty() { c.name.to_string() } else { format!("{rel}/{}", c.name) };
        index(c, &child_rel, by_rel, out);
    }
}

/// Node facts that replace the built-in table for this process (`--ddf DIR`).
static FACTS: OnceLock<Vec<NodeFact>> = OnceLock::new();

/// Makes every registry of this process use `facts` (read from a DDF folder) instead of the
/// built-in table. Call it before the first registry is built; later calls change nothing.
pub fn use_facts(facts: Vec<NodeFact>) {
    let _ = FACTS.set(facts);
}

/// The DDF-backed CSPs of this process's table, built once.
fn builtin(taken: impl Fn(Scope, &str) -> bool) -> &'static [Arc<DdfCsp>] {
    static CSPS: OnceLock<Vec<Arc<DdfCsp>>> = OnceLock::new();
    CSPS.get_or_init(|| from_facts(facts(), taken).into_iter().map(Arc::new).collect())
}

/// Adds the DDF-backed CSPs to a registry that holds the hand-written ones: every CSP root of
/// the built-in table that no registered CSP owns.
pub fn register_all(r: &mut Registry) {
    let hand_written: Vec<(Scope, Vec<String>)> = r
        .csps()
        .flat_map(|c| c.scopes().iter().map(move |s| (*s, c.root().split('/').map(str::to_string).collect())))
        .collect();
    let taken = move |scope: Scope, root: &str| {
        let segs: Vec<&str> = root.split('/').collect();
        hand_written.iter().any(|(s, r)| *s == scope && r.iter().map(String::as_str).eq(segs.iter().copied()))
    };
    for csp in builtin(taken) {
        r.register_shared(csp.clone());
    }
}

/// `major.minor.build` as numbers, for comparing OS builds (`10.0.22631.4460` -> [10, 0, 22631]).
fn build_of(version: &str) -> [u64; 3] {
    let mut out = [0; 3];
    for (slot, p) in out.iter_mut().zip(version.trim().split('.')) {
        *slot = p.trim().parse().unwrap_or(0);
    }
    out
}

/// [`build_of`] of a device's DevDetail/SwV, remembered for the last value seen on this thread:
/// the build is compared for every node on the path of every command, and a device's SwV
/// rarely changes.
fn device_build(swv: &str) -> [u64; 3] {
    thread_local! {
        static LAST: std::cell::RefCell<(String, [u64; 3])> = const { std::cell::RefCell::new((String::new(), [0; 3])) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != swv {
            last.1 = build_of(swv);
            last.0.clear();
            last.0.push_str(swv);
        }
        last.1
    })
}

impl DdfCsp {
    fn fact(&self, spec: &NodeSpec) -> Option<&NodeFact> {
        self.facts.get(&addr(spec)).map(|f| &f.fact)
    }

    /// The Config fact behind `Result/<Area>/<Policy>` (or `Result/<Area>` for `None` policy).
    fn policy_of<'a>(&'a self, rel: &'a str) -> Option<Result<&'a NodeFact, &'a str>> {
        let policies = self.policies.as_ref()?;
        let rest = rel.strip_prefix("Result/")?;
        match rest.split_once('/') {
            // `rest` is `<Area>/<Policy>` itself: the key the policies are stored under.
            Some(_) => policies.get(rest).map(Ok),
            // An area is there when a policy key `<Area>/...` is: the keys after `rest` in order,
            // up to the first that does not start with it (`Area-X/..` sorts before `Area/..`).
            None => policies
                .range::<str, _>((Bound::Excluded(rest), Bound::Unbounded))
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(rest))
                .any(|k| k.as_bytes().get(rest.len()) == Some(&b'/'))
                .then_some(Err(rest)),
        }
    }
}

impl Csp for DdfCsp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn root(&self) -> &'static str {
        self.root
    }

    fn schema(&self) -> &'static NodeSpec {
        self.schema
    }

    fn scopes(&self) -> &'static [Scope] {
        match self.scope {
            Scope::Device => DEVICE,
            Scope::User => USER,
        }
    }

    fn exists(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> bool {
        if let Some(there) = self.behaviour.and_then(|b| b.exists(cx, node)) {
            return there;
        }
        if self.policies.is_some() && node.rel.starts_with("Result/") {
            return self.policy_of(node.rel).is_some();
        }
        let Some(fact) = self.facts.get(&addr(node.spec)) else { return true };
        if let Some(min) = fact.min_build {
            let device = cx.state.value("DevDetail/SwV").map(device_build).unwrap_or([10, 0, 19045]);
            if min > device {
                return false;
            }
        }
        // The DDF's EditionAllowList (hex PRODUCT_* values) against the device's DevDetail
        // OSEdition (decimal): a node of another edition is not there.
        match &fact.editions {
            Some(list) => {
                let edition =
                    cx.state.value("DevDetail/Ext/Microsoft/OSEdition").and_then(|v| v.trim().parse::<u32>().ok());
                edition.is_none_or(|e| list.contains(&e))
            }
            None => true,
        }
    }

    fn children(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<Vec<String>> {
        if let Some(list) = self.behaviour.and_then(|b| b.children(cx, node)) {
            return Some(list);
        }
        let policies = self.policies.as_ref()?;
        let set = |k: &String| cx.state.value(&cx.key(&format!("Config/{k}"))).is_some();
        match node.rel {
            "Result" => {
                let mut areas: Vec<String> = Vec::new();
                for k in policies.keys().filter(|k| set(k)) {
                    let area = k.split('/').next().unwrap_or(k).to_string();
                    if !areas.contains(&area) {
                        areas.push(area);
                    }
                }
                areas.extend(super::policy_admx::set_areas(cx));
                Some(areas)
            }
            rel => {
                let area = rel.strip_prefix("Result/").filter(|a| !a.contains('/'))?;
                let prefix = format!("{area}/");
                Some(
                    policies
                        .keys()
                        .filter(|k| k.starts_with(&prefix) && set(k))
                        .map(|k| k[prefix.len()..].to_string())
                        .collect(),
                )
            }
        }
    }

    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        if let Some(v) = self.behaviour.and_then(|b| b.read(cx, node)) {
            return Some(v);
        }
        let Ok(fact) = self.policy_of(node.rel)? else { return None };
        let key = node.rel.strip_prefix("Result/")?;
        cx.state.value(&cx.key(&format!("Config/{key}"))).map(str::to_string).or_else(|| fact.default.clone())
    }

    /// An Exec the DDF allows is accepted (200); CSPs with a behaviour file of their own
    /// (Reboot, RemoteWipe) act on it.
    fn exec(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, data: Option<&str>) -> StatusCode {
        self.behaviour.map_or(StatusCode::Ok, |b| b.exec(cx, node.rel, data))
    }

    fn exec_creates(&self, node: NodeRef<'_>) -> bool {
        self.behaviour.is_some_and(|b| b.exec_creates(node.rel))
    }

    fn exec_refused(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, data: Option<&str>, code: StatusCode) -> bool {
        self.behaviour.is_some_and(|b| b.exec_refused(cx, node.rel, data, code))
    }

    fn after_write(&self, cx: &mut CspCx<'_>, op: WriteOp, node: NodeRef<'_>) -> Result<(), StatusCode> {
        self.behaviour.map_or(Ok(()), |b| b.after_write(cx, op, node))
    }

    fn next_deadline(&self, cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
        self.behaviour.and_then(|b| b.next_deadline(cx))
    }

    fn on_deadline(&self, cx: &mut CspCx<'_>) {
        if let Some(b) = self.behaviour {
            b.on_deadline(cx);
        }
    }

    fn validate(&self, cx: &CspCx<'_>, op: WriteOp, node: NodeRef<'_>, value: Option<&str>) -> Result<(), StatusCode> {
        if let (Some(fact), Some(value)) = (self.fact(node.spec), value)
            && op != WriteOp::Delete
            && !node.spec.is_interior()
            && !allowed(&fact.allowed, fact.format, value)
        {
            return Err(StatusCode::BadRequest);
        }
        self.behaviour.map_or(Ok(()), |b| b.validate(cx, op, node, value))
    }
}

/// Whether `value` is one the DDF allows.
fn allowed(a: &Allowed, format: Format, value: &str) -> bool {
    let v = value.trim();
    match a {
        Allowed::Any | Allowed::Xsd | Allowed::Json | Allowed::Sddl => true,
        Allowed::Enum(values) => {
            values.iter().any(|x| x == v)
                || (format == Format::Int
                    && v.parse::<i64>().is_ok_and(|n| values.iter().any(|x| x.trim().parse::<i64>() == Ok(n))))
        }
        Allowed::Flag(flags) => {
            let Ok(n) = v.parse::<u64>() else { return false };
            let mask = flags.iter().filter_map(|f| f.trim().parse::<u64>().ok()).fold(0, |m, f| m | f);
            n & !mask == 0
        }
        Allowed::Range(r) => match range(r) {
            Some((lo, hi)) => v.parse::<i64>().is_ok_and(|n| (lo..=hi).contains(&n)),
            None => true,
        },
        Allowed::Regex(re) => match regex::Regex::new(&format!("^(?:{re})$")) {
            Ok(re) => re.is_match(v),
            Err(_) => true,
        },
        // An ADMX-backed policy takes `<enabled/>` (with its `<data id=... value=.../>`) or
        // `<disabled/>` (Microsoft's "Understanding ADMX-backed policies" page).
        Allowed::Admx { .. } => v.starts_with("<enabled") || v.starts_with("<disabled"),
    }
}

/// `[lo-hi]` with optional parentheses around negative bounds: `[(-1)-100]`.
fn range(r: &str) -> Option<(i64, i64)> {
    let inner = r.trim().strip_prefix('[')?.strip_suffix(']')?;
    let bound = |s: &str| s.trim().trim_start_matches('(').trim_end_matches(')').parse::<i64>().ok();
    if let Some(rest) = inner.strip_prefix('(') {
        let close = rest.find(')')?;
        let lo = rest[..close].parse().ok()?;
        let hi = bound(rest[close + 1..].strip_prefix('-')?)?;
        return Some((lo, hi));
    }
    let (lo, hi) = inner.split_once('-')?;
    Some((bound(lo)?, bound(hi)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncml::{Command, Item, ItemCmd, Meta};
    use crate::tree::{Effect, Env, Profile, Tree, TreeState};

    fn run(state: &mut TreeState, cmd: Command) -> (StatusCode, Option<String>) {
        let registry = crate::csp::registry();
        let env = Env::new(chrono::Utc::now(), Profile::Win10);
        let out = Tree::new(&registry, state, &env).execute(&cmd);
        let o = &out[0];
        (o.code, o.results.first().and_then(|i| i.data.clone()))
    }

    fn write(kind: &str, uri: &str, format: &str, data: &str) -> Command {
        let item =
            Item { meta: Some(Box::new(Meta::format(format))), data: Some(data.to_string()), ..Item::target(uri) };
        let c = ItemCmd { cmd_id: "1".into(), items: vec![item], ..ItemCmd::default() };
        match kind {
            "Add" => Command::Add(c),
            _ => Command::Replace(c),
        }
    }

    fn get(uri: &str) -> Command {
        Command::Get(ItemCmd { cmd_id: "1".into(), items: vec![Item::target(uri)], ..ItemCmd::default() })
    }

    fn device() -> TreeState {
        let mut s = TreeState::new();
        s.set_value("DevDetail/SwV", "10.0.22631.4460");
        s.commit();
        s
    }

    #[test]
    fn a_policy_is_set_read_back_and_reflected_in_result() {
        let mut s = device();
        let cfg = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
        let result = "./Device/Vendor/MSFT/Policy/Result/Camera/AllowCamera";
        // Unset: Config is 404, Result is the DDF default.
        assert_eq!(run(&mut s, get(cfg)).0, StatusCode::NotFound);
        assert_eq!(run(&mut s, get(result)), (StatusCode::Ok, Some("1".into())));
        // Replace on an unset policy works (as Fleet's profiles send it), and reads back.
        assert_eq!(run(&mut s, write("Replace", cfg, "int", "0")).0, StatusCode::Ok);
        assert_eq!(run(&mut s, get(cfg)), (StatusCode::Ok, Some("0".into())));
        assert_eq!(run(&mut s, get(result)), (StatusCode::Ok, Some("0".into())));
        assert_eq!(run(&mut s, get("./Device/Vendor/MSFT/Policy/Result/Camera")).1.as_deref(), Some("AllowCamera"));
        // A value outside AllowedValues is refused and the node keeps its value.
        assert_eq!(run(&mut s, write("Replace", cfg, "int", "7")).0, StatusCode::BadRequest);
        assert_eq!(run(&mut s, get(cfg)).1.as_deref(), Some("0"));
        // Add on a set policy is 418; an unknown area is 404.
        assert_eq!(run(&mut s, write("Add", cfg, "int", "1")).0, StatusCode::AlreadyExists);
        assert_eq!(run(&mut s, get("./Device/Vendor/MSFT/Policy/Config/NoSuchArea/X")).0, StatusCode::NotFound);
        assert_eq!(run(&mut s, get("./Device/Vendor/MSFT/Policy/Result/NoSuchArea/X")).0, StatusCode::NotFound);
    }

    #[test]
    fn a_csp_only_its_ddf_describes_takes_a_replace_and_returns_it() {
        let mut s = device();
        let uri = "./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption";
        assert_eq!(run(&mut s, write("Replace", uri, "int", "1")).0, StatusCode::Ok);
        assert_eq!(run(&mut s, get(uri)), (StatusCode::Ok, Some("1".into())));
        assert_eq!(run(&mut s, write("Replace", uri, "int", "2")).0, StatusCode::BadRequest);
        assert_eq!(run(&mut s, write("Replace", uri, "int", "one")).0, StatusCode::BadRequest);
        // RebootNow restarts the device after the session.
        let exec = Command::Exec(ItemCmd {
            cmd_id: "1".into(),
            items: vec![Item::target("./Device/Vendor/MSFT/Reboot/RebootNow")],
            ..ItemCmd::default()
        });
        let registry = crate::csp::registry();
        let env = Env::new(chrono::Utc::now(), Profile::Win10);
        let mut tree = Tree::new(&registry, &mut s, &env);
        assert_eq!(tree.execute(&exec)[0].code, StatusCode::Ok);
        assert!(matches!(tree.effects.as_slice(), [Effect::Reboot { .. }]));
        // Get-only nodes refuse writes.
        let now = "./Device/Vendor/MSFT/Reboot/RebootNow";
        assert_eq!(run(&mut s, write("Replace", now, "null", "")).0, StatusCode::CommandNotAllowed);
        // ./Vendor/MSFT is the device scope too; the root lists its children.
        let (code, list) = run(&mut s, get("./Vendor/MSFT/Reboot"));
        assert_eq!(code, StatusCode::Ok);
        assert!(list.unwrap().contains("RebootNow"));
    }

    #[test]
    fn nodes_newer_than_the_device_build_are_not_there() {
        let mut s = device();
        // WeeklyRecurrent carries a placeholder build no device has.
        assert_eq!(run(&mut s, get("./Device/Vendor/MSFT/Reboot/Schedule/WeeklyRecurrent")).0, StatusCode::NotFound);
        assert_eq!(
            run(&mut s, write("Replace", "./Device/Vendor/MSFT/Reboot/Schedule/Single", "chr", "2026-12-06T02:00:00"))
                .0,
            StatusCode::Ok
        );
    }

    /// A node whose DDF EditionAllowList leaves out the device's edition is not there.
    #[test]
    fn nodes_of_other_editions_are_not_there() {
        let facts = crate::ddf::builtin();
        // An Enterprise-only node: in an allow list with 0x4 (Enterprise) but not 0x30 (Pro).
        let only_ent = facts
            .iter()
            .filter(|f| f.format != Format::Node && f.access.contains(Ops::GET) && !f.path.contains('<'))
            .filter(|f| f.path.starts_with("./Device/Vendor/MSFT/Policy/Config/"))
            .find(|f| {
                f.editions
                    .as_deref()
                    .is_some_and(|l| l.split(';').any(|x| x == "0x4") && !l.split(';').any(|x| x == "0x30"))
            })
            .expect("the table has an Enterprise-only policy");
        let set = |edition: &str| {
            let mut s = device();
            s.set_value("DevDetail/Ext/Microsoft/OSEdition", edition);
            s.commit();
            s
        };
        let data = match only_ent.format {
            Format::Int => "0",
            Format::Bool => "false",
            _ => "x",
        };
        let mut pro = set("48");
        let cmd = write("Replace", &only_ent.path, only_ent.format.as_str(), data);
        assert_eq!(run(&mut pro, cmd.clone()).0, StatusCode::NotFound, "{} on Pro", only_ent.path);
        let mut ent = set("4");
        assert_ne!(run(&mut ent, cmd).0, StatusCode::NotFound, "{} on Enterprise", only_ent.path);
    }

    #[test]
    fn allowed_values_of_every_kind() {
        assert!(allowed(&Allowed::Range("[(-1)-100]".into()), Format::Int, "-1"));
        assert!(!allowed(&Allowed::Range("[(-1)-100]".into()), Format::Int, "101"));
        assert!(allowed(&Allowed::Range("[0-4294967295]".into()), Format::Int, "4294967295"));
        assert!(allowed(&Allowed::Flag(vec!["1".into(), "2".into(), "8".into()]), Format::Int, "11"));
        assert!(!allowed(&Allowed::Flag(vec!["1".into(), "2".into()]), Format::Int, "4"));
        let guid = Allowed::Regex(r"\{[0-9A-Fa-f]{8}\}".into());
        assert!(allowed(&guid, Format::Chr, "{0123ABCD}"));
        assert!(!allowed(&guid, Format::Chr, "x{0123ABCD}"));
        let admx = Allowed::Admx { area: "a".into(), name: "n".into(), file: "f".into() };
        assert!(allowed(&admx, Format::Chr, r#"<enabled/><data id="x" value="1"/>"#));
        assert!(!allowed(&admx, Format::Chr, "1"));
    }
}
