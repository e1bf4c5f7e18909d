//! The DM tree engine: resolves LocURIs against the registered CSPs and executes SyncML commands
//! on a device's values with the Windows status codes. No I/O, no clock: `now` comes in
//! through [`Env`].
//!
//! Owns command semantics (Get/Add/Replace/Delete/Exec/Atomic/Sequence, existence, allowed
//! operations, formats, rollback) and the bound on one stored value (an Add or Replace whose
//! Data is longer than the `max_value_bytes` setting is answered 413 and stores nothing). Does
//! not own what a node means: that is each CSP's [`Csp`] implementation in `src/csp/`. Does not
//! own the session (statuses are returned as [`CmdOutcome`] data; the session turns them into
//! SyncML).

mod exec;
mod schema;
mod state;
mod uri;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::syncml::{Item, StatusCode};

pub use exec::{CmdOutcome, Tree, UNSUPPORTED_KEY};
pub use schema::{Format, Lifetime, NodeSpec, Ops};
pub use state::{Entry, Mark, SharedEntries, Sharing, TreeState};
pub use uri::{NodeUri, Query, Scope, UriError, encode_segment, key_of};

/// Which Windows client a device emulates (the Windows 8.1 MDM operation modes post).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Windows 10/11 (omadmclient): LoginStatus alerts, push = server-initiated session.
    #[default]
    Win10,
    /// Windows 8.1 (MDMAgent.exe): `mode=Apps` for push, DM session version 1.0.
    Win81,
}

impl Profile {
    /// The name used on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Win10 => "win10",
            Profile::Win81 => "win81",
        }
    }
}

impl crate::names::Named for Profile {
    const ALL: &'static [Profile] = &[Profile::Win10, Profile::Win81];

    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// The `[behaviour]` key bounding one node value, in bytes ([`Settings::max_value_bytes`]).
pub const MAX_VALUE_BYTES_KEY: &str = "max_value_bytes";

/// The default bound on one node value: 1 MiB, far above anything a CSP value of a real device
/// holds (a certificate chain or a policy blob is a few KiB) and small enough that a server cannot
/// fill the device's store with one command.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 1 << 20;

/// Per-device behaviour settings from the device template (`[behaviour]` table), read by CSPs
/// with typed getters; unknown keys are ignored by everyone but the CSP that reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings(pub BTreeMap<String, String>);

impl Settings {
    /// A string setting.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// An integer setting, or `default` when absent or not a number.
    pub fn u64_or(&self, key: &str, default: u64) -> u64 {
        self.str(key).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
    }

    /// The longest Data an Add or Replace may store in one node (`max_value_bytes`, default
    /// [`DEFAULT_MAX_VALUE_BYTES`]); a longer one is answered 413 (request entity too large).
    pub fn max_value_bytes(&self) -> u64 {
        self.u64_or(MAX_VALUE_BYTES_KEY, DEFAULT_MAX_VALUE_BYTES)
    }

    /// A boolean setting (`true`/`false`), or `default`.
    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        match self.str(key).map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v == "true" || v == "1" => true,
            Some(v) if v == "false" || v == "0" => false,
            _ => default,
        }
    }
}

/// What the engine is told about the moment and the device when it executes commands.
#[derive(Debug, Clone)]
pub struct Env {
    pub now: DateTime<Utc>,
    pub profile: Profile,
    pub settings: Arc<Settings>,
}

impl Env {
    /// An environment with default settings.
    pub fn new(now: DateTime<Utc>, profile: Profile) -> Self {
        Env { now, profile, settings: Arc::new(Settings::default()) }
    }
}

/// The outcome of a fetch the runner did for a CSP (see [`Effect::Fetch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The body arrived: its size and SHA-256 (hex).
    Done { size: u64, sha256: String },
    /// The server answered with a non-success HTTP status.
    HttpStatus(u16),
    /// Nobody listened at the address.
    ConnectionRefused,
    /// No answer in time.
    Timeout,
    /// The host name did not resolve or another transport error happened.
    Failed(String),
}

/// Something a CSP asks the world outside the tree to do. The tree records effects in order;
/// the device and runner carry them out after the command (and drop those of a rolled-back
/// Atomic).
#[allow(clippy::large_enum_variant)] // effects are few and short-lived
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// GET `url` and report back through [`Csp::on_fetch`] with `node` (a key in the state).
    Fetch { csp: &'static str, node: String, url: String },
    /// The device leaves management: wipe the enrollment and stop syncing.
    Unenroll { reason: String },
    /// The device restarts once the session is over (Reboot CSP `RebootNow`): everyone is
    /// logged off and MDMAgent's next run is the reboot's Machine-mode session.
    Reboot { reason: String },
    /// Start a session soon (for example to report a finished install).
    RequestSession { reason: String },
    /// A client alert to send in the next package (e.g. a 1224 or 1226 generic alert item).
    Alert { code: u16, item: Item },
    /// Ask the push notification service (WNS) for a channel for the app `app` (a package family
    /// name, or a Windows 8.1 AppId), as the Windows WNS client does when the DMClient `Push/PFN`
    /// is written; the answer comes back through [`Csp::on_channel`] with `node`.
    RequestChannel { csp: &'static str, node: String, app: String },
}

/// What the push notification service did with a device's channel ([`Effect::RequestChannel`],
/// or the service revoking or expiring it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "kebab-case")]
pub enum ChannelOutcome {
    /// A channel: its URI and when it expires (30 days after it was made, Microsoft's "Windows
    /// Push Notification Services (WNS) overview").
    Granted { uri: String, expires: DateTime<Utc> },
    /// The service refused the app (unknown or revoked package family name, or it is full).
    Refused(String),
    /// No service answered: none in this run, or the device's network is off.
    Unavailable(String),
    /// The service revoked the channel: notifications to it are answered 410.
    Revoked,
    /// The channel expired: notifications to it are answered 410; the device asks for a new one.
    Expired,
    /// A notification came but no session could start (the network is off).
    SessionBlocked,
}

/// The view a CSP gets of the device's tree: values relative to the CSP root, plus the
/// environment. Writes are journalled, so a failing command or Atomic undoes them.
pub struct CspCx<'a> {
    pub state: &'a mut TreeState,
    pub env: &'a Env,
    /// Key of the CSP root in this scope (`Vendor/MSFT/DMClient`, `User/Vendor/MSFT/...`).
    pub base: &'a str,
    pub effects: &'a mut Vec<Effect>,
}

impl CspCx<'_> {
    /// The full key of a path relative to the CSP root (`""` is the root itself).
    pub fn key(&self, rel: &str) -> String {
        let mut k = String::with_capacity(self.base.len() + 1 + rel.len());
        k.push_str(self.base);
        if !rel.is_empty() {
            k.push('/');
            k.push_str(rel);
        }
        k
    }

    /// The stored value at a relative path.
    pub fn value(&self, rel: &str) -> Option<&str> {
        self.state.value(&self.key(rel))
    }

    /// Stores a value at a relative path.
    pub fn set(&mut self, rel: &str, value: impl AsRef<str>) {
        let k = self.key(rel);
        self.state.set_value(&k, value);
    }

    /// Marks a dynamic interior node as existing.
    pub fn create(&mut self, rel: &str) {
        let k = self.key(rel);
        if self.state.entry(&k).is_none() {
            self.state.set(&k, Entry::Interior);
        }
    }

    /// Removes a node and its subtree.
    pub fn remove(&mut self, rel: &str) {
        let k = self.key(rel);
        self.state.remove_subtree(&k);
    }

    /// True when something is stored at the relative path.
    pub fn exists(&self, rel: &str) -> bool {
        self.state.entry(&self.key(rel)).is_some()
    }

    /// Names of stored children of a relative path.
    pub fn children(&self, rel: &str) -> Vec<String> {
        self.state.child_names(&self.key(rel))
    }

    /// Records an effect.
    pub fn emit(&mut self, effect: Effect) {
        self.effects.push(effect);
    }
}

/// A write the engine applied (or is about to apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    Add,
    Replace,
    Delete,
}

/// A node a command addresses, as a CSP sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    /// Path relative to the CSP root, decoded (`Provider/Fleet/Poll/NumberOfFirstRetries`).
    pub rel: &'a str,
    pub spec: &'static NodeSpec,
    pub scope: Scope,
}

impl<'a> NodeRef<'a> {
    /// The decoded segments of the relative path.
    pub fn segments(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.rel.split('/').filter(|s| !s.is_empty())
    }

    /// [`NodeRef::segments`] as a list to match on, held inline (no allocation) down to the
    /// depth of nearly every node: the hooks of a CSP take their node apart for every command.
    pub fn segment_list(&self) -> smallvec::SmallVec<[&'a str; 6]> {
        self.segments().collect()
    }
}

/// One CSP: its node table and behaviour hooks . Every hook has a default,
/// so a CSP whose nodes are plain values only provides `name`, `root` and `schema`.
pub trait Csp: Send + Sync + 'static {
    /// The CSP name (`DMClient`).
    fn name(&self) -> &'static str;

    /// The path of the root below the scope (`Vendor/MSFT/DMClient`, `DevInfo`).
    fn root(&self) -> &'static str;

    /// The node table; its root's name is the last segment of [`Csp::root`].
    fn schema(&self) -> &'static NodeSpec;

    /// The scopes the CSP exists in.
    fn scopes(&self) -> &'static [Scope] {
        &[Scope::Device]
    }

    /// Whether this device has the CSP at all (e.g. a Windows 8.1-only CSP); when not, every
    /// command on its nodes answers 404.
    fn present(&self, _env: &Env) -> bool {
        true
    }

    /// Whether the root and the fixed node names of this CSP match LocURI segments whatever
    /// their ASCII case (WMI class and property names are case-insensitive, so the WMI bridge
    /// answers `./cimV2/win32_bios` like `./cimv2/Win32_BIOS`). Segments reach the hooks as sent.
    fn ignore_case(&self) -> bool {
        false
    }

    /// Whether a node the table allows is there, for CSPs that compute their nodes instead of
    /// storing them (a WMI instance exists when the device has it). Asked for each node on the
    /// path of a command below the root, after the engine's own check; `false` answers 404.
    fn exists(&self, _cx: &CspCx<'_>, _node: NodeRef<'_>) -> bool {
        true
    }

    /// The children of an interior node when the CSP computes them (WMI class instances);
    /// `None` lists the table's fixed names and the stored ones. A Get writes a computed list
    /// as given, without percent-escaping (the WMI bridge does not escape instance names).
    fn children(&self, _cx: &CspCx<'_>, _node: NodeRef<'_>) -> Option<Vec<String>> {
        None
    }

    /// A computed value for a leaf; `None` reads the stored value (or the default).
    fn read(&self, _cx: &CspCx<'_>, _node: NodeRef<'_>) -> Option<String> {
        None
    }

    /// Checks a write before the engine applies it; an `Err` is the status returned and nothing
    /// changes. `value` is the new data (None for Delete).
    fn validate(
        &self,
        _cx: &CspCx<'_>,
        _op: WriteOp,
        _node: NodeRef<'_>,
        _value: Option<&str>,
    ) -> Result<(), StatusCode> {
        Ok(())
    }

    /// Runs after the engine applied a write: side effects and corrections of stored values. An
    /// `Err` undoes the write and everything the hook changed, and is the status returned.
    fn after_write(&self, _cx: &mut CspCx<'_>, _op: WriteOp, _node: NodeRef<'_>) -> Result<(), StatusCode> {
        Ok(())
    }

    /// Exec on a node whose table allows it. A failure status undoes what the hook changed.
    fn exec(&self, _cx: &mut CspCx<'_>, _node: NodeRef<'_>, _data: Option<&str>) -> StatusCode {
        StatusCode::OptionalFeatureNotSupported
    }

    /// Whether an Exec on `node` whose dynamic ancestors are not there creates them first, as
    /// an Add of the node would, instead of answering 404. Windows runs EnterpriseDesktopAppManagement's
    /// `MSI/<ProductID>/DownloadInstall` without a prior Add (servers in the wild rely on it).
    fn exec_creates(&self, _node: NodeRef<'_>) -> bool {
        false
    }

    /// Called after [`Csp::exec`] answered `code` (a failure) and its changes were undone: a CSP
    /// that reports a refused job in its own nodes (a Status and a LastError, as Windows does for
    /// a malformed MSI job) writes them here and returns true; those writes are kept, unless an
    /// enclosing Atomic fails. False (the default) undoes the command completely.
    fn exec_refused(&self, _cx: &mut CspCx<'_>, _node: NodeRef<'_>, _data: Option<&str>, _code: StatusCode) -> bool {
        false
    }

    /// The earliest instant the CSP wants [`Csp::on_deadline`] called (timers are data).
    fn next_deadline(&self, _cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
        None
    }

    /// Called when `env.now` reached the deadline the CSP asked for.
    fn on_deadline(&self, _cx: &mut CspCx<'_>) {}

    /// The result of a fetch the CSP asked for with [`Effect::Fetch`].
    fn on_fetch(&self, _cx: &mut CspCx<'_>, _node: &str, _outcome: &FetchOutcome) {}

    /// What the push notification service did with a channel the CSP asked for with
    /// [`Effect::RequestChannel`].
    fn on_channel(&self, _cx: &mut CspCx<'_>, _node: &str, _outcome: &ChannelOutcome) {}
}

/// The segments below `root` (`["Vendor", "MSFT", "X"]`) when `segments` start with it (in any
/// ASCII case when `ignore_case`).
fn strip_root<'p, S: AsRef<str>>(root: &[&str], segments: &'p [S], ignore_case: bool) -> Option<&'p [S]> {
    if segments.len() < root.len() {
        return None;
    }
    for (part, seg) in root.iter().zip(segments) {
        let seg = seg.as_ref();
        if seg != *part && !(ignore_case && seg.eq_ignore_ascii_case(part)) {
            return None;
        }
    }
    Some(&segments[root.len()..])
}

/// The CSPs a device has, shared by all devices of a fleet.
#[derive(Clone, Default)]
pub struct Registry {
    csps: Vec<Arc<dyn Csp>>,
    /// For each CSP (same index), the state key of its root in each of its scopes: computed once
    /// here, not at every timer query of every device.
    bases: Vec<Vec<(Scope, String)>>,
    /// For each CSP (same index), the segments of its root.
    roots: Vec<Vec<&'static str>>,
    /// The CSPs that match names exactly (indices, in registration order) by the number of
    /// segments of their root and its last segment (`(3, "DMClient")`): a LocURI is looked up
    /// among the one or two CSPs that can own it instead of all of them, for every item of every
    /// command.
    by_root: rustc_hash::FxHashMap<(usize, &'static str), Vec<usize>>,
    /// The root lengths (in segments) of the CSPs in `by_root`.
    root_lens: Vec<usize>,
    /// The CSPs that match names in any ASCII case ([`Csp::ignore_case`]), in registration order.
    any_case: Vec<usize>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a CSP.
    pub fn register(&mut self, csp: impl Csp) -> &mut Self {
        self.register_shared(Arc::new(csp))
    }

    /// Adds a CSP that is shared with other registries (built once per process).
    pub fn register_shared(&mut self, csp: Arc<dyn Csp>) -> &mut Self {
        let root: Vec<&str> = csp.root().split('/').collect();
        self.bases.push(csp.scopes().iter().map(|&scope| (scope, key_of(scope, &root))).collect());
        let i = self.csps.len();
        let root: Vec<&'static str> = csp.root().split('/').collect();
        if csp.ignore_case() {
            self.any_case.push(i);
        } else {
            let last = root.last().copied().unwrap_or_default();
            self.by_root.entry((root.len(), last)).or_default().push(i);
            if !self.root_lens.contains(&root.len()) {
                self.root_lens.push(root.len());
            }
        }
        self.roots.push(root);
        self.csps.push(csp);
        self
    }

    /// The CSPs in registration order.
    pub fn csps(&self) -> impl Iterator<Item = &dyn Csp> {
        self.csps.iter().map(|c| c.as_ref())
    }

    /// The CSP owning a path in a scope, and the path relative to its root.
    pub fn find<'p, S: AsRef<str>>(&self, scope: Scope, segments: &'p [S]) -> Option<(&dyn Csp, &'p [S])> {
        self.locate(scope, segments).map(|(i, rel)| (self.csps[i].as_ref(), rel))
    }

    /// [`Registry::find`] by index: the first CSP in registration order whose root starts the
    /// path. Runs for every node a command addresses: only the CSPs whose root starts with the
    /// path's first segment (and the case-insensitive ones) are compared, in place.
    pub(crate) fn locate<'p, S: AsRef<str>>(&self, scope: Scope, segments: &'p [S]) -> Option<(usize, &'p [S])> {
        let matches = |&i: &usize| {
            let c = self.csps[i].as_ref();
            if !c.scopes().contains(&scope) {
                return None;
            }
            strip_root(&self.roots[i], segments, c.ignore_case()).map(|rel| (i, rel))
        };
        let mut best: Option<(usize, &'p [S])> = self.any_case.iter().find_map(matches);
        for &n in &self.root_lens {
            let Some(last) = n.checked_sub(1).and_then(|l| segments.get(l)) else { continue };
            let found = self.by_root.get(&(n, last.as_ref())).and_then(|list| list.iter().find_map(matches));
            if let Some(f) = found
                && best.is_none_or(|b| f.0 < b.0)
            {
                best = Some(f);
            }
        }
        best
    }

    /// The CSP at an index of [`Registry::locate`] and the state key of its root in `scope`.
    pub(crate) fn csp_and_base(&self, i: usize, scope: Scope) -> (&dyn Csp, &str) {
        let base = self.bases[i].iter().find(|(s, _)| *s == scope).map_or("", |(_, b)| b.as_str());
        (self.csps[i].as_ref(), base)
    }

    /// Names below a path that is an ancestor of CSP roots (`Vendor` -> `MSFT`), for Gets on
    /// `./Vendor/MSFT` and the like.
    pub fn children_above_roots<S: AsRef<str>>(&self, scope: Scope, segments: &[S]) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for c in self.csps.iter().filter(|c| c.scopes().contains(&scope)) {
            let root: Vec<&'static str> = c.root().split('/').collect();
            if root.len() > segments.len() && segments.iter().zip(&root).all(|(a, b)| a.as_ref() == *b) {
                let n = root[segments.len()];
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }

    /// The earliest deadline any CSP has on this state.
    pub fn next_deadline(&self, state: &mut TreeState, env: &Env) -> Option<DateTime<Utc>> {
        let mut effects = Vec::new();
        let mut best: Option<DateTime<Utc>> = None;
        for (c, bases) in self.csps.iter().zip(&self.bases) {
            for (_, base) in bases {
                let cx = CspCx { base, state, env, effects: &mut effects };
                if let Some(d) = c.next_deadline(&cx) {
                    best = Some(best.map_or(d, |b| b.min(d)));
                }
            }
        }
        best
    }

    /// Runs every CSP timer that is due at `env.now`; returns the effects they produced.
    pub fn on_deadline(&self, state: &mut TreeState, env: &Env) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (c, bases) in self.csps.iter().zip(&self.bases) {
            for (_, base) in bases {
                let mut cx = CspCx { base, state, env, effects: &mut effects };
                if c.next_deadline(&cx).is_some_and(|d| d <= env.now) {
                    c.on_deadline(&mut cx);
                }
            }
        }
        effects
    }

    /// Delivers a fetch outcome to the CSP that asked for it.
    pub fn on_fetch(
        &self,
        state: &mut TreeState,
        env: &Env,
        csp: &str,
        node: &str,
        outcome: &FetchOutcome,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some((c, bases)) = self.csps.iter().zip(&self.bases).find(|(c, _)| c.name() == csp) {
            let scope = if node.starts_with("User/") { Scope::User } else { Scope::Device };
            if let Some((_, base)) = bases.iter().find(|(s, _)| *s == scope) {
                let mut cx = CspCx { base, state, env, effects: &mut effects };
                c.on_fetch(&mut cx, node, outcome);
            }
        }
        effects
    }

    /// Delivers what the push notification service did with a channel to the CSP that asked
    /// for it.
    pub fn on_channel(
        &self,
        state: &mut TreeState,
        env: &Env,
        csp: &str,
        node: &str,
        outcome: &ChannelOutcome,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some((c, bases)) = self.csps.iter().zip(&self.bases).find(|(c, _)| c.name() == csp)
            && let Some((_, base)) = bases.iter().find(|(s, _)| *s == Scope::Device)
        {
            let mut cx = CspCx { base, state, env, effects: &mut effects };
            c.on_channel(&mut cx, node, outcome);
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static LEAF: NodeSpec = NodeSpec::interior("X", Ops::GET, &[]);

    /// A CSP with a given name, root, scopes and case rule.
    struct Named(&'static str, &'static str, &'static [Scope], bool);

    impl Csp for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn root(&self) -> &'static str {
            self.1
        }
        fn schema(&self) -> &'static NodeSpec {
            &LEAF
        }
        fn scopes(&self) -> &'static [Scope] {
            self.2
        }
        fn ignore_case(&self) -> bool {
            self.3
        }
    }

    fn owner(r: &Registry, scope: Scope, uri: &str) -> Option<(&'static str, usize)> {
        let segs: Vec<&str> = uri.split('/').collect();
        r.find(scope, &segs).map(|(c, rel)| (c.name(), rel.len()))
    }

    #[test]
    fn the_first_registered_csp_owning_a_path_wins_whatever_its_root_length_or_case_rule() {
        const D: &[Scope] = &[Scope::Device];
        const U: &[Scope] = &[Scope::User];
        let mut r = Registry::new();
        r.register(Named("any-case", "vendor/msft/a", D, true));
        r.register(Named("exact-a", "Vendor/MSFT/A", D, false));
        r.register(Named("user-b", "Vendor/MSFT/B", U, false));
        r.register(Named("short", "Vendor", D, false));
        r.register(Named("exact-b", "Vendor/MSFT/B", D, false));
        r.register(Named("later-b", "Vendor/MSFT/B", D, false));
        assert_eq!(owner(&r, Scope::Device, "Vendor/MSFT/A/x"), Some(("any-case", 1)));
        assert_eq!(owner(&r, Scope::Device, "VENDOR/msft/A"), Some(("any-case", 0)));
        // `short` (root `Vendor`) was registered before `exact-b`: it owns all of `Vendor`.
        assert_eq!(owner(&r, Scope::Device, "Vendor/MSFT/B/y/z"), Some(("short", 4)));
        assert_eq!(owner(&r, Scope::User, "Vendor/MSFT/B/y"), Some(("user-b", 1)));
        assert_eq!(owner(&r, Scope::User, "Vendor/MSFT/A"), None);
        assert_eq!(owner(&r, Scope::Device, "DevInfo"), None);
        assert_eq!(owner(&r, Scope::Device, ""), None);
        let mut r = Registry::new();
        r.register(Named("exact-b", "Vendor/MSFT/B", D, false));
        r.register(Named("short", "Vendor", D, false));
        r.register(Named("later-b", "Vendor/MSFT/B", D, false));
        assert_eq!(owner(&r, Scope::Device, "Vendor/MSFT/B/y"), Some(("exact-b", 1)));
        assert_eq!(owner(&r, Scope::Device, "Vendor/MSFT/C"), Some(("short", 2)));
        assert_eq!(owner(&r, Scope::Device, "Vendor/MSFT/b"), Some(("short", 2)));
    }
}
