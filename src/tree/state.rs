//! A device's tree values: the only per-device part of the tree (schemas are shared).
//!
//! Keys are decoded paths below the scope (`Vendor/MSFT/DMClient/Provider/Fleet/EntDMID`), user
//! scope prefixed with `User/`. Entries exist for stored leaf values and for dynamic interior
//! nodes; permanent nodes and defaults come from the schema and cost nothing here.
//!
//! Every change is journalled so that a failed command, a failed Atomic or a session that ends
//! in error can be undone exactly ([`TreeState::mark`] / [`TreeState::rollback`]).
//!
//! Committed changes are also remembered by key until the store takes them
//! ([`TreeState::take_changes`]), so that the end of a session writes the few values it changed
//! instead of the whole tree. A change rolled back before its commit is never seen by the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A stored key. Its text is shared by every device of the process that stores the same key:
/// the devices of a fleet store the same few hundred paths, so an entry costs a pointer rather
/// than a copy of its path (most of a device's memory otherwise).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key(Arc<str>);

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Key::of(&String::deserialize(d)?))
    }
}

/// The keys in use, each once.
struct Keys {
    set: rustc_hash::FxHashSet<Arc<str>>,
    /// The size at which keys nobody holds any more are dropped.
    prune_at: usize,
}

impl Key {
    /// The shared key with this text.
    fn of(text: &str) -> Key {
        static KEYS: Mutex<Option<Keys>> = Mutex::new(None);
        let mut guard = KEYS.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = guard.get_or_insert_with(|| Keys { set: rustc_hash::FxHashSet::default(), prune_at: 4096 });
        if let Some(k) = keys.set.get(text) {
            return Key(Arc::clone(k));
        }
        // Keys only this table holds (their devices removed them or are gone) are dropped when
        // the table has doubled since the last time, so it stays within twice the keys in use.
        if keys.set.len() >= keys.prune_at {
            keys.set.retain(|k| Arc::strong_count(k) > 1);
            keys.prune_at = (keys.set.len() * 2).max(4096);
        }
        let k: Arc<str> = Arc::from(text);
        keys.set.insert(Arc::clone(&k));
        Key(k)
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

/// Entries sorted by key. A device holds tens to a few hundred entries and changes few of them
/// per session; a sorted vector holds them in 40 bytes each with no node overhead (a B-tree's
/// nodes cost about as much again), finds one in as many comparisons, and moves a few kilobytes
/// when a new key comes, which is rare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sorted<V>(Vec<(Key, V)>);

impl<V> Default for Sorted<V> {
    fn default() -> Self {
        Sorted(Vec::new())
    }
}

/// `a.cmp(b)` for keys, eight bytes at a time in place: the keys of a device share long prefixes
/// (`Vendor/MSFT/Policy/Config/`) and every lookup compares a few of them, so the library's
/// comparison (a call per pair) was most of a lookup.
fn cmp_keys(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len().min(b.len());
    // Big-endian words compare as their bytes do, in order.
    let word = |w: &[u8]| u64::from_be_bytes(w.try_into().unwrap_or_default());
    for (x, y) in a[..n].chunks_exact(8).zip(b[..n].chunks_exact(8)) {
        let (x, y) = (word(x), word(y));
        if x != y {
            return x.cmp(&y);
        }
    }
    let i = n - n % 8;
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl<V> Sorted<V> {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| cmp_keys(k.as_str(), key))
    }

    fn get(&self, key: &str) -> Option<&(Key, V)> {
        self.find(key).ok().map(|i| &self.0[i])
    }

    /// The entries from `from` (inclusive) on.
    fn from(&self, from: &str) -> &[(Key, V)] {
        let start = self.0.partition_point(|(k, _)| cmp_keys(k.as_str(), from).is_lt());
        &self.0[start..]
    }

    /// Gives back the spare room of the vector (after a session added keys).
    fn trim(&mut self) {
        if self.0.capacity() > self.0.len() {
            self.0.shrink_to_fit();
        }
    }
}

impl<V> FromIterator<(Key, V)> for Sorted<V> {
    fn from_iter<I: IntoIterator<Item = (Key, V)>>(iter: I) -> Self {
        let mut v: Vec<(Key, V)> = iter.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // The last of equal keys wins, as in a map.
        v.reverse();
        v.dedup_by(|a, b| a.0 == b.0);
        v.reverse();
        v.shrink_to_fit();
        Sorted(v)
    }
}

/// Entries that many devices hold alike (the devices of a fleet made from one template), kept
/// once: a device sharing them stores only the keys where it differs ([`TreeState::share`]).
/// Without it, a fleet's devices each held a hundred-odd entries of which four in five were the
/// same in every device.
#[derive(Debug, Default)]
pub struct SharedEntries(Sorted<Entry>);

impl SharedEntries {
    /// The entries `state` holds now, to be shared.
    pub fn of(state: &TreeState) -> Arc<SharedEntries> {
        Arc::new(SharedEntries(Sorted(state.merged().map(|(k, e)| (k.clone(), e.clone())).collect())))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.0.is_empty()
    }
}

/// Shares entries among states made alike (the devices of a fleet, by template): the first
/// state of each kind gives the entries that it and the later ones of its kind share
/// ([`TreeState::share`]).
#[derive(Debug)]
pub struct Sharing<K> {
    by_kind: std::collections::HashMap<K, Arc<SharedEntries>>,
}

impl<K> Default for Sharing<K> {
    fn default() -> Self {
        Sharing { by_kind: std::collections::HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq> Sharing<K> {
    /// Makes `state` share the entries of its `kind`.
    pub fn share(&mut self, kind: K, state: &mut TreeState) {
        let shared = self.by_kind.entry(kind).or_insert_with(|| SharedEntries::of(state));
        state.share(shared);
    }
}

/// A device's entries in key order: its own over the shared ones, without the shared ones it
/// removed.
struct Merged<'a> {
    own: std::iter::Peekable<std::slice::Iter<'a, (Key, Option<Entry>)>>,
    shared: std::iter::Peekable<std::slice::Iter<'a, (Key, Entry)>>,
}

impl<'a> Iterator for Merged<'a> {
    type Item = (&'a Key, &'a Entry);

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering::*;
        loop {
            let order = match (self.own.peek(), self.shared.peek()) {
                (None, None) => return None,
                (Some(_), None) => Less,
                (None, Some(_)) => Greater,
                (Some((o, _)), Some((s, _))) => cmp_keys(o.as_str(), s.as_str()),
            };
            if order != Less {
                let (k, e) = self.shared.next()?;
                if order == Greater {
                    return Some((k, e));
                }
            }
            // The device's own entry (over the shared one of the same key, if any); a removal
            // hides the shared entry.
            if let (k, Some(e)) = self.own.next()? {
                return Some((k, e));
            }
        }
    }
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A dynamic interior node that exists.
    Interior,
    /// A leaf value: held inline up to 24 bytes (most values: numbers, dates, names), so that a
    /// device's values cost no allocation each.
    Leaf(compact_str::CompactString),
}

/// A position in the journal to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(usize);

/// The stored values of one device.
#[derive(Debug, Clone, Default)]
pub struct TreeState {
    /// The device's own entries: where it differs from `shared` (`None`: a shared key it
    /// removed), or all of them when it shares none.
    own: Sorted<Option<Entry>>,
    shared: Option<Arc<SharedEntries>>,
    /// Each change's key (shared with the entries: journalling a change copies no path) and
    /// the entry it replaced.
    journal: Vec<(Key, Option<Entry>)>,
    /// Keys committed since the store last took them ([`TreeState::take_changes`]).
    changed: BTreeSet<String>,
    /// No store takes the changes ([`TreeState::untracked`]): committing forgets them.
    untracked: bool,
}

impl PartialEq for TreeState {
    /// Two states are equal when they hold the same entries (what is shared, the journal and
    /// the change set are bookkeeping).
    fn eq(&self, other: &Self) -> bool {
        self.merged().eq(other.merged())
    }
}

impl Eq for TreeState {}

/// Written as `{"entries": {key: entry, ...}}`, whatever is shared (as the state always was).
impl Serialize for TreeState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Map<'a>(&'a TreeState);
        impl Serialize for Map<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.merged())
            }
        }
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("TreeState", 1)?;
        st.serialize_field("entries", &Map(self))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for TreeState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Stored {
            entries: BTreeMap<String, Entry>,
        }
        let stored = Stored::deserialize(d)?;
        Ok(TreeState::from_entries(stored.entries))
    }
}

impl TreeState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// A state holding these entries, committed and with no change to take (as the store loads
    /// it).
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Entry)>) -> Self {
        TreeState { own: entries.into_iter().map(|(k, e)| (Key::of(&k), Some(e))).collect(), ..Self::default() }
    }

    /// The entries in key order.
    fn merged(&self) -> Merged<'_> {
        self.merged_from("")
    }

    /// The entries from `from` (inclusive) on, in key order.
    fn merged_from(&self, from: &str) -> Merged<'_> {
        let shared: &[(Key, Entry)] = self.shared.as_deref().map_or(&[], |s| s.0.from(from));
        Merged { own: self.own.from(from).iter().peekable(), shared: shared.iter().peekable() }
    }

    /// The entry at `key`.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match self.own.find(key) {
            Ok(i) => self.own.0[i].1.as_ref(),
            Err(_) => self.shared.as_deref()?.0.get(key).map(|(_, e)| e),
        }
    }

    /// The leaf value at `key`, if one is stored.
    pub fn value(&self, key: &str) -> Option<&str> {
        match self.entry(key) {
            Some(Entry::Leaf(v)) => Some(v.as_str()),
            _ => None,
        }
    }

    /// Stores an entry, journalling the previous one.
    pub fn set(&mut self, key: &str, entry: Entry) {
        let (key, old) = self.put(key, entry);
        self.journal.push((key, old));
    }

    /// Stores `entry` at `key`; the stored key and the entry it replaced, if any. An entry the
    /// same as the shared one is not kept twice.
    fn put(&mut self, key: &str, entry: Entry) -> (Key, Option<Entry>) {
        let shared = self.shared.as_deref().and_then(|s| s.0.get(key));
        let found = self.own.find(key);
        let own = &mut self.own.0;
        match found {
            Ok(i) => {
                let k = own[i].0.clone();
                let old = match shared {
                    Some((_, e)) if *e == entry => own.remove(i).1,
                    _ => own[i].1.replace(entry),
                };
                (k, old)
            }
            Err(i) => match shared {
                Some((k, e)) => {
                    if *e != entry {
                        own.insert(i, (k.clone(), Some(entry)));
                    }
                    (k.clone(), Some(e.clone()))
                }
                None => {
                    let k = Key::of(key);
                    own.insert(i, (k.clone(), Some(entry)));
                    (k, None)
                }
            },
        }
    }

    /// Removes the entry at `key`; its key and entry when there was one.
    fn delete(&mut self, key: &str) -> Option<(Key, Entry)> {
        let shared = self.shared.as_deref().and_then(|s| s.0.get(key));
        let found = self.own.find(key);
        let own = &mut self.own.0;
        match (found, shared) {
            // A shared key stays marked as removed.
            (Ok(i), Some(_)) => {
                let k = own[i].0.clone();
                own[i].1.take().map(|e| (k, e))
            }
            (Ok(i), None) => {
                let (k, e) = own.remove(i);
                e.map(|e| (k, e))
            }
            (Err(i), Some((k, e))) => {
                own.insert(i, (k.clone(), None));
                Some((k.clone(), e.clone()))
            }
            (Err(_), None) => None,
        }
    }

    /// Stores a leaf value.
    pub fn set_value(&mut self, key: &str, value: impl AsRef<str>) {
        // Copied from the text: a converted String would keep its heap buffer (and its spare
        // capacity) even when the value fits inline.
        self.set(key, Entry::Leaf(compact_str::CompactString::new(value.as_ref())));
    }

    /// Removes `key` and everything below it.
    pub fn remove_subtree(&mut self, key: &str) {
        let doomed: Vec<String> = self.subtree_keys(key).collect();
        for k in doomed {
            if let Some((k, old)) = self.delete(k.as_str()) {
                self.journal.push((k, Some(old)));
            }
        }
    }

    /// `key` itself (when stored) and every stored key below it, in order.
    pub fn subtree_keys<'a>(&'a self, key: &'a str) -> impl Iterator<Item = String> + 'a {
        let prefix = [key, "/"].concat();
        let own = self.entry(key).is_some().then(|| key.to_string());
        let below: Vec<String> = self
            .merged_from(&prefix)
            .take_while(|(k, _)| k.as_str().starts_with(&prefix))
            .map(|(k, _)| k.as_str().to_string())
            .collect();
        own.into_iter().chain(below)
    }

    /// Names of the stored direct children of `key` (deduplicated, in order).
    pub fn child_names(&self, key: &str) -> Vec<String> {
        let prefix = if key.is_empty() { String::new() } else { format!("{key}/") };
        let mut names: Vec<String> = Vec::new();
        for (k, _) in self.merged_from(&prefix) {
            let Some(rest) = k.as_str().strip_prefix(&prefix) else { break };
            let name = rest.split('/').next().unwrap_or(rest);
            if names.last().map(String::as_str) != Some(name) {
                names.push(name.to_string());
            }
        }
        names
    }

    /// The current journal position.
    pub fn mark(&self) -> Mark {
        Mark(self.journal.len())
    }

    /// Undoes every change made since `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        while self.journal.len() > mark.0 {
            let Some((key, old)) = self.journal.pop() else { break };
            match old {
                Some(e) => {
                    self.put(key.as_str(), e);
                }
                None => {
                    self.delete(key.as_str());
                }
            }
        }
    }

    /// Forgets the journal (after the changes were committed); the keys it touched wait for the
    /// store ([`TreeState::take_changes`]).
    pub fn commit(&mut self) {
        // Taken, not drained: a device between sessions holds no journal capacity, nor spare
        // room for entries.
        let journal = std::mem::take(&mut self.journal);
        if !journal.is_empty() {
            self.own.trim();
        }
        if !self.untracked {
            self.changed.extend(journal.into_iter().map(|(k, _)| k.as_str().to_string()));
        }
    }

    /// Shares `shared`: from now on this state stores only where it differs from those entries
    /// (and holds the same entries as before). Uncommitted changes are committed first.
    pub fn share(&mut self, shared: &Arc<SharedEntries>) {
        self.commit();
        let mut own = Vec::new();
        let mut mine = self.merged().peekable();
        let mut theirs = shared.0.0.iter().peekable();
        loop {
            use std::cmp::Ordering::*;
            let order = match (mine.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => Less,
                (None, Some(_)) => Greater,
                (Some((a, _)), Some((b, _))) => cmp_keys(a.as_str(), b.as_str()),
            };
            match order {
                Less => {
                    if let Some((k, e)) = mine.next() {
                        own.push((k.clone(), Some(e.clone())));
                    }
                }
                Greater => {
                    if let Some((k, _)) = theirs.next() {
                        own.push((k.clone(), None));
                    }
                }
                Equal => {
                    if let (Some((k, e)), Some((_, s))) = (mine.next(), theirs.next())
                        && e != s
                    {
                        own.push((k.clone(), Some(e.clone())));
                    }
                }
            }
        }
        own.shrink_to_fit();
        self.own = Sorted(own);
        self.shared = Some(Arc::clone(shared));
    }

    /// For a device no store keeps (a fleet run without a state directory): committed changes
    /// are not remembered for [`TreeState::take_changes`], which then gives nothing, so the
    /// state holds its entries and nothing else between sessions.
    pub fn untracked(&mut self) {
        self.untracked = true;
        self.changed = BTreeSet::new();
    }

    /// True when committed changes wait for the store.
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The committed changes since the last call, in key order: each key with its committed
    /// entry, `None` when it was removed. Changes not yet committed are not taken: a key changed
    /// again after its commit is given with its committed entry, and comes back at the next
    /// commit.
    pub fn take_changes(&mut self) -> Vec<(String, Option<Entry>)> {
        let changed = std::mem::take(&mut self.changed);
        if self.journal.is_empty() {
            return changed
                .into_iter()
                .map(|k| {
                    let e = self.entry(k.as_str()).cloned();
                    (k, e)
                })
                .collect();
        }
        // The first journal entry of a key holds its value as of the last commit.
        let mut before: BTreeMap<&str, &Option<Entry>> = BTreeMap::new();
        for (k, old) in &self.journal {
            before.entry(k.as_str()).or_insert(old);
        }
        changed
            .into_iter()
            .map(|k| {
                let e = match before.get(k.as_str()) {
                    Some(old) => (*old).clone(),
                    None => self.entry(k.as_str()).cloned(),
                };
                (k, e)
            })
            .collect()
    }

    /// True when changes were made since the last commit.
    pub fn is_dirty(&self) -> bool {
        !self.journal.is_empty()
    }

    /// All stored entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.merged().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of stored entries.
    pub fn len(&self) -> usize {
        match &self.shared {
            None => self.own.0.len(),
            Some(_) => self.merged().count(),
        }
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.merged().next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_restores_exactly_the_previous_entries() {
        let mut s = TreeState::new();
        s.set_value("A/x", "1");
        s.set("A/D", Entry::Interior);
        s.set_value("A/D/y", "2");
        s.commit();
        let before = s.clone();
        let m = s.mark();
        s.set_value("A/x", "changed");
        s.remove_subtree("A/D");
        s.set_value("B", "new");
        assert_ne!(s, before);
        s.rollback(m);
        assert_eq!(s, before);
    }

    #[test]
    fn the_store_takes_committed_changes_only_and_once() {
        let mut s = TreeState::new();
        s.set_value("A/x", "1");
        s.set_value("A/y", "1");
        s.commit();
        assert_eq!(
            s.take_changes(),
            [("A/x".to_string(), Some(Entry::Leaf("1".into()))), ("A/y".to_string(), Some(Entry::Leaf("1".into())))]
        );
        assert!(!s.has_changes() && s.take_changes().is_empty(), "taken once");

        // A rolled-back session leaves no change.
        let m = s.mark();
        s.set_value("A/x", "2");
        s.remove_subtree("A/y");
        s.rollback(m);
        s.commit();
        assert!(s.take_changes().is_empty());

        // Committed changes stay until taken, removals included.
        s.set_value("A/x", "3");
        s.remove_subtree("A/y");
        s.commit();
        s.set_value("B", "4");
        s.commit();
        // An uncommitted change is not taken: the committed entry is, and the key comes back.
        s.set_value("A/x", "uncommitted");
        let taken = s.take_changes();
        assert_eq!(
            taken,
            [
                ("A/x".to_string(), Some(Entry::Leaf("3".into()))),
                ("A/y".to_string(), None),
                ("B".to_string(), Some(Entry::Leaf("4".into())))
            ]
        );
        s.commit();
        assert_eq!(s.take_changes(), [("A/x".to_string(), Some(Entry::Leaf("uncommitted".into())))]);
        let loaded = TreeState::from_entries(s.iter().map(|(k, e)| (k.to_string(), e.clone())));
        assert_eq!(loaded, s);
        assert!(!loaded.has_changes() && !loaded.is_dirty());
    }

    /// The same changes on a state that shares entries and on one that holds them all.
    #[test]
    fn a_state_that_shares_entries_behaves_as_one_that_holds_them_all() {
        let mut base = TreeState::new();
        for (k, v) in [("A/x", "1"), ("A/y", "long value that does not fit in place, 40+ bytes"), ("B/z", "3")] {
            base.set_value(k, v);
        }
        base.set("C", Entry::Interior);
        base.set_value("C/w", "4");
        base.commit();
        let shared = SharedEntries::of(&base);
        assert_eq!(shared.len(), 5);

        let mut whole = base.clone();
        whole.set_value("D", "mine");
        whole.commit();
        let mut lean = whole.clone();
        lean.share(&shared);
        assert_eq!(lean, whole);
        assert_eq!(lean.own.0.len(), 1, "only what differs is the device's own: {:?}", lean.own);
        assert_eq!(serde_json::to_string(&lean).unwrap(), serde_json::to_string(&whole).unwrap());

        let m = (whole.mark(), lean.mark());
        for s in [&mut whole, &mut lean] {
            s.set_value("A/x", "changed");
            s.set_value("B/z", "3");
            s.remove_subtree("C");
            s.set_value("E", "new");
        }
        assert_eq!(lean, whole);
        assert_eq!(lean.value("C/w"), None);
        assert_eq!(lean.child_names(""), ["A", "B", "D", "E"]);
        assert_eq!(lean.subtree_keys("A").collect::<Vec<_>>(), ["A/x", "A/y"]);
        assert_eq!(lean.len(), whole.len());
        whole.rollback(m.0);
        lean.rollback(m.1);
        assert_eq!(lean, whole);
        assert_eq!(lean.value("C/w"), Some("4"));

        // Setting a shared key back to the shared value drops the device's own copy.
        lean.set_value("A/x", "other");
        lean.set_value("A/x", "1");
        lean.commit();
        assert_eq!(lean.own.0.len(), 1);

        let loaded: TreeState = serde_json::from_str(&serde_json::to_string(&lean).unwrap()).unwrap();
        assert_eq!(loaded, lean);
    }

    #[test]
    fn an_entry_costs_forty_bytes() {
        assert_eq!(std::mem::size_of::<(Key, Option<Entry>)>(), 40);
    }

    #[test]
    fn keys_compare_as_strings() {
        let keys = [
            "",
            "a",
            "a/",
            "a/b",
            "Vendor/MSFT/Policy",
            "Vendor/MSFT/Policy/Config",
            "Vendor/MSFT/Policy-X",
            "Vendor/MSFT/Polic",
            "é",
            "z",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(cmp_keys(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn child_names_lists_each_direct_child_once() {
        let mut s = TreeState::new();
        s.set("P/a", Entry::Interior);
        s.set_value("P/a/x", "1");
        s.set_value("P/a/y", "1");
        s.set_value("P/b", "1");
        s.set_value("Pz", "1");
        assert_eq!(s.child_names("P"), ["a", "b"]);
        assert_eq!(s.subtree_keys("P/a").collect::<Vec<_>>(), ["P/a", "P/a/x", "P/a/y"]);
    }
}
