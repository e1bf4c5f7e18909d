//! Places in a TOML file: the 1-based line and column of a key or a value named by its path
//! (`["behaviour", "jitter"]`, `["apps", 1, "version"]`), so that a checker that works on plain
//! `toml::Table` values can still say `FILE:LINE:COLUMN:` when it refuses one.
//!
//! Owns reading the spans the `toml` crate's span-keeping parser ([`toml::de::DeTable`]) gives
//! and turning byte offsets into lines and columns. Does not own what any key means: the device
//! template checker (`device::template`) is the user; scenario files keep their own serde spans.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a path into a TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key of a table.
    Key(String),
    /// An entry of an array (0-based), such as one `[[apps]]` table.
    Index(usize),
}

impl From<&str> for Seg {
    fn from(key: &str) -> Seg {
        Seg::Key(key.to_string())
    }
}

impl From<String> for Seg {
    fn from(key: String) -> Seg {
        Seg::Key(key)
    }
}

impl From<usize> for Seg {
    fn from(index: usize) -> Seg {
        Seg::Index(index)
    }
}

/// Which end of an entry a place points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The key (for a table, its header).
    Key,
    /// The value (for a `[[array]]` entry, its header).
    Value,
}

/// A TOML text parsed for its places.
#[derive(Debug)]
pub struct Places<'a> {
    text: &'a str,
    root: DeTable<'a>,
}

/// A TOML text that does not parse: the parser's message and where it points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsable {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What the parser says, on one line.
    pub message: String,
}

/// Parses a TOML document into its values and its places: the one call a checker needs.
pub fn parse_table(text: &str) -> Result<(toml::Table, Places<'_>), Unparsable> {
    let places = Places::parse(text)?;
    // The span-keeping parse accepts a few things the value parse refuses (an integer too large
    // for i64), so this one can still fail.
    let table = text.parse::<toml::Table>().map_err(|e| unparsable(text, &e))?;
    Ok((table, places))
}

impl<'a> Places<'a> {
    /// Parses `text` for its places.
    pub fn parse(text: &'a str) -> Result<Places<'a>, Unparsable> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Places { text, root: root.into_inner() }),
            Err(e) => Err(unparsable(text, &e)),
        }
    }

    /// The line and column of the key or the value at `path`. When the path does not lead
    /// anywhere (a key the checker made up), the deepest entry found on the way is used, and
    /// the start of the text when not even the first step is found.
    pub fn find(&self, path: &[Seg], part: Part) -> (usize, usize) {
        line_col(self.text, self.span(path, part).map_or(0, |s| s.start))
    }

    /// The byte range of the key or the value at `path` (or of the deepest entry found).
    pub fn span(&self, path: &[Seg], part: Part) -> Option<Range<usize>> {
        let mut table = Some(&self.root);
        let mut array: Option<&[Spanned<DeValue<'a>>]> = None;
        let mut best: Option<Range<usize>> = None;
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            let value = match seg {
                Seg::Key(k) => {
                    let Some((key, value)) = table.and_then(|t| t.iter().find(|(key, _)| key.get_ref() == k)) else {
                        return best;
                    };
                    best = Some(if last && part == Part::Key { key.span() } else { value_start(key, value) });
                    value
                }
                Seg::Index(n) => {
                    let Some(value) = array.and_then(|a| a.get(*n)) else { return best };
                    best = Some(value.span());
                    value
                }
            };
            table = value.get_ref().as_table();
            array = value.get_ref().as_array().map(|a| &a[..]);
            if last {
                break;
            }
        }
        best
    }
}

/// Where a value starts; a table made by a header has no span of its own worth showing, so its
/// key's (the header's) stands for it.
fn value_start(key: &Spanned<toml::de::DeString<'_>>, value: &Spanned<DeValue<'_>>) -> Range<usize> {
    let span = value.span();
    if span.is_empty() || span.start < key.span().start { key.span() } else { span }
}

/// 1-based line and column (in characters) of a byte offset of `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn unparsable(text: &str, e: &toml::de::Error) -> Unparsable {
    let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
    Unparsable { line, column, message: one_line(e.message()) }
}

/// A parser message on one line (the `toml` crate's messages may span several).
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "profile = \"win10\"\n\
                       [devdetail.Ext.Microsoft]\n\
                       DeviceName = \"PC\"\n\
                       [behaviour]\n\
                       jittr = true\n\
                       timezone = \"Mars/Olympus\"\n\
                       [[apps]]\n\
                       title = \"A\"\n\
                       [[apps]]\n\
                       title = \"B\"\n";

    fn at(path: &[Seg], part: Part) -> (usize, usize) {
        Places::parse(DOC).unwrap().find(path, part)
    }

    #[test]
    fn keys_and_values_have_their_line_and_column() {
        assert_eq!(at(&["behaviour".into(), "jittr".into()], Part::Key), (5, 1));
        assert_eq!(at(&["behaviour".into(), "timezone".into()], Part::Value), (6, 12));
        assert_eq!(at(&["devdetail".into(), "Ext".into(), "Microsoft".into(), "DeviceName".into()], Part::Key), (3, 1));
        assert_eq!(at(&["profile".into()], Part::Value), (1, 11));
    }

    #[test]
    fn tables_and_array_entries_point_at_their_headers() {
        assert_eq!(at(&["behaviour".into()], Part::Key), (4, 2));
        assert_eq!(at(&["apps".into(), 1.into()], Part::Value).0, 9);
        assert_eq!(at(&["apps".into(), 1.into(), "title".into()], Part::Value), (10, 9));
    }

    #[test]
    fn a_path_that_leads_nowhere_gives_the_deepest_entry_found() {
        assert_eq!(at(&["behaviour".into(), "nope".into()], Part::Key), (4, 2));
        assert_eq!(at(&["apps".into(), 7.into()], Part::Key), (7, 3));
        assert_eq!(at(&["nope".into()], Part::Key), (1, 1));
        assert_eq!(Places::parse(DOC).unwrap().span(&["nope".into()], Part::Key), None);
    }

    #[test]
    fn a_broken_file_says_where() {
        let e = Places::parse("a = 1\n[b\nc = 2\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
        assert!(!e.message.contains('\n'), "{e:?}");
        let e = Places::parse("a = 1\na = 2\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e:?}");
        // Too large for the values, fine for the places: still refused, at the number.
        let e = parse_table("a = 1\nb = 99999999999999999999\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 5), "{e:?}");
    }

    #[test]
    fn columns_count_characters_and_offsets_are_clamped() {
        assert_eq!(line_col("é = \"x\"", 5), (1, 5));
        assert_eq!(line_col("ab\ncd", 99), (2, 3));
        // An offset inside a multi-byte character counts from its start.
        assert_eq!(line_col("é", 1), (1, 1));
    }
}
