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

/// Entries from `from` (inclusive) on, in key order.
fn from<'a>(entries: &'a Entries, from: &str) -> impl Iterator<Item = (&'a Key, &'a Entry)> {
    entries.from(from)
}

/// A device's entries: a vector sorted by key. A device holds tens to a few hundred entries
/// and changes few of them per session; a sorted vector holds them in 40 bytes each with no
/// node overhead (a B-tree's nodes cost about as much again), finds one in as many comparisons,
/// and moves a few kilobytes when a new key comes, which is rare.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entries(Vec<(Key, Entry)>);

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

impl Entries {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| cmp_keys(k.as_str(), key))
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Stores `entry` at `key`; the stored key and the previous entry, if any.
    fn insert(&mut self, key: &str, entry: Entry) -> (Key, Option<Entry>) {
        match self.find(key) {
            Ok(i) => (self.0[i].0.clone(), Some(std::mem::replace(&mut self.0[i].1, entry))),
            Err(i) => {
                let k = Key::of(key);
                self.0.insert(i, (k.clone(), entry));
                (k, None)
            }
        }
    }

    /// Stores `entry` at a key already shared (the journal's, on rollback).
    fn insert_key(&mut self, key: Key, entry: Entry) {
        match self.find(key.as_str()) {
            Ok(i) => self.0[i].1 = entry,
            Err(i) => self.0.insert(i, (key, entry)),
        }
    }

    fn remove(&mut self, key: &str) -> Option<(Key, Entry)> {
        self.find(key).ok().map(|i| self.0.remove(i))
    }

    /// Entries from `from` (inclusive) on, in key order.
    fn from(&self, from: &str) -> impl Iterator<Item = (&Key, &Entry)> {
        let start = self.0.partition_point(|(k, _)| cmp_keys(k.as_str(), from).is_lt());
        self.0[start..].iter().map(|(k, e)| (k, e))
    }

    fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.0.iter().map(|(k, e)| (k, e))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Gives back the spare room of the vector (after a session added keys).
    fn trim(&mut self) {
        if self.0.capacity() > self.0.len() {
            self.0.shrink_to_fit();
        }
    }
}

impl FromIterator<(Key, Entry)> for Entries {
    fn from_iter<I: IntoIterator<Item = (Key, Entry)>>(iter: I) -> Self {
        let mut v: Vec<(Key, Entry)> = iter.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // The last of equal keys wins, as in a map.
        v.reverse();
        v.dedup_by(|a, b| a.0 == b.0);
        v.reverse();
        v.shrink_to_fit();
        Entries(v)
    }
}

/// Written as a map from key to entry (as the state always was).
impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, e)| (k, e)))
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Entry>::deserialize(d)?;
        Ok(map.into_iter().map(|(k, e)| (Key::of(&k), e)).collect())
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TreeState {
    entries: Entries,
    /// Each change's key (shared with the entries: journalling a change copies no path) and
    /// the entry it replaced.
    #[serde(skip)]
    journal: Vec<(Key, Option<Entry>)>,
    /// Keys committed since the store last took them ([`TreeState::take_changes`]).
    #[serde(skip)]
    changed: BTreeSet<String>,
    /// No store takes the changes ([`TreeState::untracked`]): committing forgets them.
    #[serde(skip)]
    untracked: bool,
}

impl PartialEq for TreeState {
    /// Two states are equal when they hold the same entries (the journal and the change set are
    /// bookkeeping).
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for TreeState {}

impl TreeState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// A state holding these entries, committed and with no change to take (as the store loads
    /// it).
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Entry)>) -> Self {
        TreeState { entries: entries.into_iter().map(|(k, e)| (Key::of(&k), e)).collect(), ..Self::default() }
    }

    /// The entry at `key`.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The leaf value at `key`, if one is stored.
    pub fn value(&self, key: &str) -> Option<&str> {
        match self.entries.get(key) {
            Some(Entry::Leaf(v)) => Some(v.as_str()),
            _ => None,
        }
    }

    /// Stores an entry, journalling the previous one.
    pub fn set(&mut self, key: &str, entry: Entry) {
        let (key, old) = self.entries.insert(key, entry);
        self.journal.push((key, old));
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
            if let Some((k, old)) = self.entries.remove(k.as_str()) {
                self.journal.push((k, Some(old)));
            }
        }
    }

    /// `key` itself (when stored) and every stored key below it, in order.
    pub fn subtree_keys<'a>(&'a self, key: &'a str) -> impl Iterator<Item = String> + 'a {
        let prefix = [key, "/"].concat();
        let own = self.entries.contains_key(key).then(|| key.to_string());
        let below: Vec<String> = from(&self.entries, &prefix)
            .take_while(|(k, _)| k.as_str().starts_with(&prefix))
            .map(|(k, _)| k.as_str().to_string())
            .collect();
        own.into_iter().chain(below)
    }

    /// Names of the stored direct children of `key` (deduplicated, in order).
    pub fn child_names(&self, key: &str) -> Vec<String> {
        let prefix = if key.is_empty() { String::new() } else { format!("{key}/") };
        let mut names: Vec<String> = Vec::new();
        for (k, _) in from(&self.entries, &prefix) {
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
                Some(e) => self.entries.insert_key(key, e),
                None => {
                    self.entries.remove(key.as_str());
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
        if journal.iter().any(|(_, old)| old.is_none()) {
            self.entries.trim();
        }
        if !self.untracked {
            self.changed.extend(journal.into_iter().map(|(k, _)| k.as_str().to_string()));
        }
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
                    let e = self.entries.get(k.as_str()).cloned();
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
                    None => self.entries.get(k.as_str()).cloned(),
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
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of stored entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
