//! A device's tree values: the only per-device part of the tree (schemas are shared).
//!
//! Keys are decoded paths below the scope (`Vendor/MSFT/DMClient/Provider/Fleet/EntDMID`), user
//! scope prefixed with `User/`. Entries exist for stored leaf values and for dynamic interior
//! nodes; permanent nodes and defaults come from the schema and cost nothing here.
//!
//! Every change is journalled so that a failed command, a failed Atomic or a session that ends
//! in error can be undone exactly ([`TreeState::mark`] / [`TreeState::rollback`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A dynamic interior node that exists.
    Interior,
    /// A leaf value.
    Leaf(String),
}

/// A position in the journal to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(usize);

/// The stored values of one device.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TreeState {
    entries: BTreeMap<String, Entry>,
    #[serde(skip)]
    journal: Vec<(String, Option<Entry>)>,
}

impl PartialEq for TreeState {
    /// Two states are equal when they hold the same entries (the journal is bookkeeping).
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

    /// The entry at `key`.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The leaf value at `key`, if one is stored.
    pub fn value(&self, key: &str) -> Option<&str> {
        match self.entries.get(key) {
            Some(Entry::Leaf(v)) => Some(v),
            _ => None,
        }
    }

    /// Stores an entry, journalling the previous one.
    pub fn set(&mut self, key: &str, entry: Entry) {
        let old = self.entries.insert(key.to_string(), entry);
        self.journal.push((key.to_string(), old));
    }

    /// Stores a leaf value.
    pub fn set_value(&mut self, key: &str, value: impl Into<String>) {
        self.set(key, Entry::Leaf(value.into()));
    }

    /// Removes `key` and everything below it.
    pub fn remove_subtree(&mut self, key: &str) {
        let doomed: Vec<String> = self.subtree_keys(key).collect();
        for k in doomed {
            if let Some(old) = self.entries.remove(&k) {
                self.journal.push((k, Some(old)));
            }
        }
    }

    /// `key` itself (when stored) and every stored key below it, in order.
    pub fn subtree_keys<'a>(&'a self, key: &'a str) -> impl Iterator<Item = String> + 'a {
        let prefix = format!("{key}/");
        let own = self.entries.contains_key(key).then(|| key.to_string());
        own.into_iter().chain(
            self.entries
                .range(prefix.clone()..)
                .take_while(move |(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone()),
        )
    }

    /// Names of the stored direct children of `key` (deduplicated, in order).
    pub fn child_names(&self, key: &str) -> Vec<String> {
        let prefix = if key.is_empty() { String::new() } else { format!("{key}/") };
        let mut names: Vec<String> = Vec::new();
        for (k, _) in self.entries.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(&prefix) else { break };
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
                    self.entries.insert(key, e);
                }
                None => {
                    self.entries.remove(&key);
                }
            }
        }
    }

    /// Forgets the journal (after the changes were committed).
    pub fn commit(&mut self) {
        self.journal.clear();
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
