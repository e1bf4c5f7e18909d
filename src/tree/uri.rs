//! LocURI handling: scope, normalisation, percent-decoding, queries (MS-MDM §2.2, OMA DM RepPro).
//!
//! `./Vendor/MSFT/X` and `./Device/Vendor/MSFT/X` name the same device node; `./User/...` is the
//! user scope. Segments are compared percent-decoded (`%7B..%7D`, `%20`), while Results echo the
//! LocURI exactly as the server sent it: [`NodeUri::raw`] keeps it.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// The scope a node lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    Device,
    User,
}

/// A query appended to a LocURI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `?list=StructData`: the whole subtree, one item per node (OMA TND §8).
    ListStructData,
    /// `?prop=Name`: a node property (Type, Format, Name, Size, ACL...).
    Prop(String),
    /// Any other query, refused by the engine with 406.
    Other(String),
}

/// A parsed LocURI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUri {
    /// As received (trimmed): what Results echo back.
    pub raw: String,
    pub scope: Scope,
    /// Decoded segments below the scope (`["Vendor", "MSFT", "DMClient"]`); empty for the root.
    pub segments: Vec<String>,
    pub query: Option<Query>,
}

/// Why a LocURI is unusable (answered with 400 by the engine).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("LocURI is empty")]
    Empty,
    #[error("LocURI {0:?} starts with '/'")]
    Absolute(String),
    #[error("LocURI {0:?} has an empty segment")]
    EmptySegment(String),
}

/// Characters escaped when a node name is written into a LocURI or an interior node's child list.
const SEGMENT: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'/').add(b'?').add(b'{').add(b'}').add(b'<').add(b'>');

/// Percent-encodes one node name for use in a LocURI.
pub fn encode_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

impl NodeUri {
    /// Parses a LocURI as a server sends it.
    pub fn parse(raw: &str) -> Result<NodeUri, UriError> {
        let uri = UriRef::parse(raw)?;
        Ok(NodeUri {
            raw: uri.raw.to_string(),
            scope: uri.scope,
            segments: uri.segments.into_iter().map(Cow::into_owned).collect(),
            query: uri.query,
        })
    }

    /// The key of this node in a device's [`super::TreeState`]: decoded segments joined by `/`,
    /// prefixed with `User/` in user scope.
    pub fn key(&self) -> String {
        key_of(self.scope, &self.segments)
    }
}

/// A parsed LocURI that borrows from the text it was parsed from: what the engine uses for every
/// item it executes (a segment is copied only when it has percent escapes to decode).
/// [`NodeUri`] is its owned form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UriRef<'a> {
    /// As received (trimmed): what Results echo back.
    pub raw: &'a str,
    pub scope: Scope,
    /// Decoded segments below the scope; empty for the root. Inline up to the depth of nearly
    /// every LocURI, so that parsing one allocates nothing.
    pub segments: smallvec::SmallVec<[Cow<'a, str>; 8]>,
    pub query: Option<Query>,
    /// The segments as sent, `/`-separated, when none had an escape to decode: then the state
    /// key of a node below a CSP root is that root's key and a suffix of this.
    pub plain: Option<&'a str>,
}

impl<'a> UriRef<'a> {
    /// Parses a LocURI as a server sends it (the rules of [`NodeUri::parse`]). Runs for every
    /// item of every command: one pass over the bytes, no allocation but the segment list.
    pub fn parse(raw: &'a str) -> Result<UriRef<'a>, UriError> {
        let raw = crate::syncml::trim(raw);
        if raw.is_empty() {
            return Err(UriError::Empty);
        }
        if raw.starts_with('/') {
            return Err(UriError::Absolute(raw.to_string()));
        }
        let (path, query) = match memchr::memchr(b'?', raw.as_bytes()) {
            Some(q) => (&raw[..q], Some(parse_query(&raw[q + 1..]))),
            None => (raw, None),
        };
        let path = match path.strip_prefix("./") {
            Some(p) => p,
            None if path == "." => "",
            None => path,
        };
        let path = path.trim_end_matches('/');
        // Only the first segment names a scope.
        let (scope, path) = match scope_prefix(path, "User") {
            Some(rest) => (Scope::User, rest),
            None => (Scope::Device, scope_prefix(path, "Device").unwrap_or(path)),
        };
        // One SIMD search for escapes over the whole path: most LocURIs have none, and then every
        // segment stays a slice of the LocURI. The separators are found with a plain byte loop:
        // segments are a few bytes long, shorter than a SIMD search's setup.
        let escaped = memchr::memchr(b'%', path.as_bytes()).is_some();
        let mut segments = smallvec::SmallVec::new();
        let mut rest = path;
        while !path.is_empty() {
            let (seg, after) = match rest.bytes().position(|b| b == b'/') {
                Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
                None => (rest, None),
            };
            if seg.is_empty() {
                return Err(UriError::EmptySegment(raw.to_string()));
            }
            segments.push(if escaped && seg.as_bytes().contains(&b'%') {
                percent_decode_str(seg).decode_utf8_lossy()
            } else {
                Cow::Borrowed(seg)
            });
            match after {
                Some(after) => rest = after,
                None => break,
            }
        }
        Ok(UriRef { raw, scope, segments, query, plain: (!escaped).then_some(path) })
    }

    /// The state key of the node (as [`NodeUri::key`]).
    pub fn key(&self) -> String {
        key_of(self.scope, &self.segments)
    }
}

/// The state key for decoded segments in a scope.
pub fn key_of<S: AsRef<str>>(scope: Scope, segments: &[S]) -> String {
    let mut k = String::with_capacity(5 + segments.iter().map(|s| s.as_ref().len() + 1).sum::<usize>());
    if scope == Scope::User {
        k.push_str("User");
    }
    for s in segments {
        if !k.is_empty() {
            k.push('/');
        }
        k.push_str(s.as_ref());
    }
    k
}

/// What follows `first` when it is the whole first segment of `path` (`User/X` -> `X`).
fn scope_prefix<'p>(path: &'p str, first: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(first)?;
    if rest.is_empty() { Some(rest) } else { rest.strip_prefix('/') }
}

fn parse_query(q: &str) -> Query {
    let q = q.trim();
    if q.eq_ignore_ascii_case("list=StructData") {
        Query::ListStructData
    } else if let Some(p) = q.strip_prefix("prop=") {
        Query::Prop(p.to_string())
    } else {
        Query::Other(q.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_prefix_and_plain_vendor_are_the_same_node() {
        let a = NodeUri::parse("./Vendor/MSFT/DMClient").unwrap();
        let b = NodeUri::parse("./Device/Vendor/MSFT/DMClient").unwrap();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.scope, Scope::Device);
        assert_eq!(a.raw, "./Vendor/MSFT/DMClient");
    }

    #[test]
    fn scope_roots_alone_parse_to_empty_paths() {
        for (raw, scope) in [("./User", Scope::User), ("./Device/", Scope::Device), (".", Scope::Device)] {
            let u = NodeUri::parse(raw).unwrap();
            assert_eq!((u.scope, u.segments.len()), (scope, 0), "{raw}");
        }
        // Only the first segment names a scope.
        let u = NodeUri::parse("./Vendor/User/X").unwrap();
        assert_eq!((u.scope, u.segments.len()), (Scope::Device, 3));
        assert!(matches!(NodeUri::parse("./User//X"), Err(UriError::EmptySegment(_))));
    }

    #[test]
    fn user_scope_has_its_own_keys() {
        let u = NodeUri::parse("./User/Vendor/MSFT/Policy").unwrap();
        assert_eq!(u.scope, Scope::User);
        assert_eq!(u.key(), "User/Vendor/MSFT/Policy");
    }

    #[test]
    fn percent_escapes_are_decoded_for_comparison_and_whitespace_trimmed() {
        let u = NodeUri::parse("\n   ./Vendor/MSFT/NodeCache/MS%20DM%20Server/%7Babc%7D \n").unwrap();
        assert_eq!(u.segments, ["Vendor", "MSFT", "NodeCache", "MS DM Server", "{abc}"]);
        assert_eq!(u.raw, "./Vendor/MSFT/NodeCache/MS%20DM%20Server/%7Babc%7D");
        assert_eq!(encode_segment("MS DM Server"), "MS%20DM%20Server");
        assert_eq!(encode_segment("{abc}"), "%7Babc%7D");
    }

    #[test]
    fn queries_are_recognised() {
        let u = NodeUri::parse("./Vendor/MSFT/X/Inventory?list=StructData").unwrap();
        assert_eq!(u.query, Some(Query::ListStructData));
        assert_eq!(u.segments.last().map(String::as_str), Some("Inventory"));
        let p = NodeUri::parse("./DevInfo/DevId?prop=Type").unwrap();
        assert_eq!(p.query, Some(Query::Prop("Type".into())));
    }

    #[test]
    fn bad_uris_are_refused() {
        assert_eq!(NodeUri::parse("  "), Err(UriError::Empty));
        assert!(matches!(NodeUri::parse("/Vendor"), Err(UriError::Absolute(_))));
        assert!(matches!(NodeUri::parse("./Vendor//MSFT"), Err(UriError::EmptySegment(_))));
    }
}
