//! Management server addresses of a DMClient provider as a pure list: parsing the node values and
//! the order in which the transport tries the servers (the DMClient CSP page,
//! ManagementServiceAddress, ManagementServerAddressList, UpdateManagementServiceAddress).
//!
//! Owns the text forms and the order rule. Does not own the HTTP attempts, the retry count or
//! the cache of the URL that worked: the transport keeps a [`LastGood`] per provider and asks
//! [`AddressList::order`] (or [`AddressList::attempts`]) before each session.
//!
//! The rules, from the DMClient CSP page:
//! - ManagementServiceAddress holds one URL, or several as `<URL1><URL2><URL3>`; "if there is only
//!   a single URL, then the <> are not required".
//! - When ManagementServerAddressList is set the device "ignores the value in
//!   ManagementServiceAddress" ([`crate::csp::dmclient::server_addresses`] applies that).
//! - "the device will use the first address on the list and then keep going down the list until
//!   a successful connection is achieved. The DM client should cache the successfully connected
//!   server URL for the next session."
//! - "After the server list is updated, the client uses the updated list at the next session
//!   starting with the first one in the list": a cached URL only counts for the list it was
//!   cached with.
//! - UpdateManagementServiceAddress is semicolon delimited and may only reorder or shorten the
//!   existing list ("You cannot add new servers to the list using this node").

/// Why an address value was refused (answered 400 by the CSP).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No URL at all.
    #[error("the server address list is empty")]
    Empty,
    /// A `<` without its `>`, or text outside the brackets of a `<URL1><URL2>` list.
    #[error("malformed server address list near byte {at}: expected <URL> entries")]
    Malformed { at: usize },
    /// An entry that is not an http(s) URL with a host.
    #[error("server address {entry:?} is not an http:// or https:// URL")]
    NotUrl { entry: String },
}

/// An ordered, non-empty list of management server URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressList {
    urls: Vec<String>,
}

/// What the transport caches after a successful connection: the URL, and the list it belonged to
/// (so that a new list starts again from its first entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LastGood {
    /// The list in force when `url` worked.
    pub list: AddressList,
    /// The URL that answered.
    pub url: String,
}

impl AddressList {
    /// Parses a ManagementServiceAddress or ManagementServerAddressList value: one URL, or
    /// `<URL1><URL2>...`. Whitespace around and inside entries is dropped (URLs cannot contain
    /// it, and the DMClient CSP page's own example writes `<https:// server2>`).
    pub fn parse(text: &str) -> Result<AddressList, AddressError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(AddressError::Empty);
        }
        if !t.starts_with('<') {
            return AddressList::from_entries([t]);
        }
        let mut entries = Vec::new();
        let mut rest = t;
        while !rest.is_empty() {
            let at = t.len() - rest.len();
            let inner = rest.strip_prefix('<').ok_or(AddressError::Malformed { at })?;
            let end = inner.find('>').ok_or(AddressError::Malformed { at })?;
            entries.push(&inner[..end]);
            rest = inner[end + 1..].trim_start();
        }
        AddressList::from_entries(entries)
    }

    /// Parses an UpdateManagementServiceAddress value: URLs separated by `;`.
    pub fn parse_semicolon(text: &str) -> Result<AddressList, AddressError> {
        AddressList::from_entries(text.split(';').filter(|e| !e.trim().is_empty()))
    }

    fn from_entries<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<AddressList, AddressError> {
        let mut urls = Vec::new();
        for e in entries {
            let url: String = e.chars().filter(|c| !c.is_whitespace()).collect();
            let lower = url.to_ascii_lowercase();
            let host = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
            if !host.is_some_and(|h| !h.is_empty() && !h.starts_with('/')) {
                return Err(AddressError::NotUrl { entry: e.to_string() });
            }
            urls.push(url);
        }
        if urls.is_empty() { Err(AddressError::Empty) } else { Ok(AddressList { urls }) }
    }

    /// The URLs in list order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The first URL (the one a new list starts with).
    pub fn first(&self) -> &str {
        &self.urls[0]
    }

    /// True when every URL of `other` is in this list (a permutation or subset, as
    /// UpdateManagementServiceAddress requires).
    pub fn contains_all(&self, other: &AddressList) -> bool {
        other.urls.iter().all(|u| self.urls.contains(u))
    }

    /// The node form: the single URL, or `<URL1><URL2>...`.
    pub fn to_node_value(&self) -> String {
        if self.urls.len() == 1 { self.urls[0].clone() } else { self.urls.iter().map(|u| format!("<{u}>")).collect() }
    }

    /// The order to try the servers in for the next session: from the cached URL when it was
    /// cached with this very list, going down the list and wrapping around; from the first entry
    /// otherwise (no cache, or a list that changed since).
    pub fn order(&self, cached: Option<&LastGood>) -> Vec<&str> {
        let start =
            cached.filter(|c| c.list == *self).and_then(|c| self.urls.iter().position(|u| *u == c.url)).unwrap_or(0);
        self.urls[start..].iter().chain(&self.urls[..start]).map(String::as_str).collect()
    }

    /// Every connection attempt of a session in order: each URL of [`AddressList::order`] tried
    /// `retries_per_url` times (at least once) before moving on to the next (w7 CONNRETRYFREQ,
    /// default 3, is the usual value).
    pub fn attempts(&self, cached: Option<&LastGood>, retries_per_url: u32) -> Vec<&str> {
        let n = retries_per_url.max(1) as usize;
        self.order(cached).into_iter().flat_map(|u| std::iter::repeat_n(u, n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_url_and_bracket_lists_parse() {
        assert_eq!(
            AddressList::parse(" https://mdm.example/MDM.svc ").unwrap().urls(),
            ["https://mdm.example/MDM.svc"]
        );
        // The DMClient CSP page's own example, with its stray spaces.
        let l = AddressList::parse("<https://server1><https:// server2> ").unwrap();
        assert_eq!(l.urls(), ["https://server1", "https://server2"]);
        assert_eq!(l.to_node_value(), "<https://server1><https://server2>");
        assert_eq!(AddressList::parse_semicolon("https://b;https://a;").unwrap().urls(), ["https://b", "https://a"]);
    }

    #[test]
    fn malformed_values_name_the_problem() {
        assert_eq!(AddressList::parse("  "), Err(AddressError::Empty));
        assert_eq!(AddressList::parse("<https://a><https://b"), Err(AddressError::Malformed { at: 11 }));
        assert_eq!(AddressList::parse("<https://a>x<https://b>"), Err(AddressError::Malformed { at: 11 }));
        assert_eq!(AddressList::parse("ftp://a"), Err(AddressError::NotUrl { entry: "ftp://a".into() }));
        assert_eq!(AddressList::parse("<https://>"), Err(AddressError::NotUrl { entry: "https://".into() }));
    }

    #[test]
    fn order_starts_from_the_cached_url_of_the_same_list_only() {
        let l = AddressList::parse("<https://a><https://b><https://c>").unwrap();
        assert_eq!(l.order(None), ["https://a", "https://b", "https://c"]);
        let cached = LastGood { list: l.clone(), url: "https://b".into() };
        assert_eq!(l.order(Some(&cached)), ["https://b", "https://c", "https://a"]);
        // A new list (here: reordered) starts from its first entry even if it holds the URL.
        let new = AddressList::parse("<https://c><https://b>").unwrap();
        assert_eq!(new.order(Some(&cached)), ["https://c", "https://b"]);
        // A cached URL no longer in the list changes nothing.
        let stale = LastGood { list: l.clone(), url: "https://z".into() };
        assert_eq!(l.order(Some(&stale)), ["https://a", "https://b", "https://c"]);
        assert_eq!(
            l.attempts(Some(&cached), 2),
            ["https://b", "https://b", "https://c", "https://c", "https://a", "https://a"]
        );
        assert_eq!(l.attempts(None, 0).len(), 3);
    }
}
