//! Values that vary across a fleet: the small pattern language of template values.
//!
//! A template value may hold patterns in braces, each expanded per device from its DeviceID, so
//! that one template gives a fleet of different but stable devices:
//!
//! | pattern | gives |
//! |---|---|
//! | `{alnum:N}` | N uppercase letters and digits (`DESKTOP-{alnum:7}` → `DESKTOP-4F7H2K9`) |
//! | `{hex:N}` | N uppercase hex digits (a MAC: `00-0C-29-{hex:2}-{hex:2}-{hex:2}`) |
//! | `{digits:N}` | N decimal digits |
//! | `{int:A..B}` | a whole number from A to B, both included (`{int:238000..953000}`) |
//! | `{date:YYYY-MM-DD..YYYY-MM-DD}` | a day in that range, as `YYYY-MM-DD` |
//! | `{datetime:YYYY-MM-DD..YYYY-MM-DD}` | a moment in that range, as `YYYY-MM-DDTHH:MM:SSZ` |
//!
//! N is 1 to 64. A pattern starts with `{` followed by a lowercase word and `:`; any other `{`
//! is plain text (GUIDs in braces stay as they are), and `{{` writes a literal `{`. The checker
//! ([`check`]) refuses an unknown kind, a bad count or range, and a pattern left open.
//!
//! Expansion is a plain function of (DeviceID, value text): the same device always gets the
//! same values, different devices get different ones, and within one device the same value text
//! expands the same everywhere (a `DeviceName` and a `DNSComputerName` both written
//! `DESKTOP-{alnum:7}` agree). Nothing else (time, order of creation) enters it.

use std::borrow::Cow;

use chrono::{Duration, NaiveDate};
use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest as _, Sha256};

/// The pattern kinds, for messages.
pub const KINDS: &[&str] = &["alnum", "hex", "digits", "int", "date", "datetime"];

/// Longest `{alnum:N}`, `{hex:N}` or `{digits:N}`.
const MAX_COUNT: usize = 64;

/// Why a value's pattern cannot be used: where it starts (in characters from the start of the
/// value) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PatternError {
    /// Characters from the start of the value to the pattern's `{`.
    pub offset: usize,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// One piece of a value: text as written, or a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Alnum(usize),
    Hex(usize),
    Digits(usize),
    Int(i64, i64),
    Date(NaiveDate, NaiveDate),
    DateTime(NaiveDate, NaiveDate),
}

/// What a checked value is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// At least one pattern: the value differs from device to device.
    pub varied: bool,
    /// Every expansion is a whole number (only digits, `{digits:N}` and `{int:A..B}`, with an
    /// optional leading `-`), so the value may stand where a node's format is `int`.
    pub integer: bool,
}

/// True when `value` may hold a pattern (a cheap test before [`check`] or [`expand`]).
pub fn may_vary(value: &str) -> bool {
    value.contains('{')
}

/// Checks the patterns of a value.
pub fn check(value: &str) -> Result<Shape, PatternError> {
    let pieces = parse(value)?;
    let varied = pieces.iter().any(|p| !matches!(p, Piece::Text(_)));
    let text: String = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.as_str(),
            Piece::Digits(_) | Piece::Int(..) => "0",
            _ => "x",
        })
        .collect();
    let integer = text.strip_prefix('-').unwrap_or(&text).chars().all(|c| c.is_ascii_digit()) && !text.is_empty();
    Ok(Shape { varied, integer })
}

/// The value as device `device_id` has it: every pattern expanded. A value without patterns
/// (or one that does not check, which a checked template never holds) is returned as it is.
pub fn expand<'a>(value: &'a str, device_id: &str) -> Cow<'a, str> {
    if !may_vary(value) {
        return Cow::Borrowed(value);
    }
    let Ok(pieces) = parse(value) else { return Cow::Borrowed(value) };
    if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
        return Cow::Owned(
            pieces.into_iter().map(|p| if let Piece::Text(t) = p { t } else { String::new() }).collect(),
        );
    }
    let digest = Sha256::digest(format!("mdmsim-vary\0{device_id}\0{value}").as_bytes());
    let mut rng = ChaCha20Rng::from_seed(digest.into());
    let mut out = String::with_capacity(value.len());
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Alnum(n) => draw(&mut rng, n, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", &mut out),
            Piece::Hex(n) => draw(&mut rng, n, b"0123456789ABCDEF", &mut out),
            Piece::Digits(n) => draw(&mut rng, n, b"0123456789", &mut out),
            Piece::Int(a, b) => out.push_str(&rng.random_range(a..=b).to_string()),
            Piece::Date(a, b) => {
                let days = rng.random_range(0..=(b - a).num_days());
                out.push_str(&(a + Duration::days(days)).format("%Y-%m-%d").to_string());
            }
            Piece::DateTime(a, b) => {
                let secs = rng.random_range(0..=(b - a).num_seconds() + 86_399);
                let at = a.and_hms_opt(0, 0, 0).unwrap_or_default() + Duration::seconds(secs);
                out.push_str(&at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
        }
    }
    Cow::Owned(out)
}

fn draw(rng: &mut ChaCha20Rng, n: usize, alphabet: &[u8], out: &mut String) {
    for _ in 0..n {
        out.push(alphabet[rng.random_range(0..alphabet.len())] as char);
    }
}

/// Splits a value into text and patterns.
fn parse(value: &str) -> Result<Vec<Piece>, PatternError> {
    let chars: Vec<char> = value.chars().collect();
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' && chars.get(i + 1) == Some(&'{') {
            text.push('{');
            i += 2;
            continue;
        }
        let word_len = chars[i + 1..].iter().take_while(|c| c.is_ascii_lowercase()).count();
        if c != '{' || word_len == 0 || chars.get(i + 1 + word_len) != Some(&':') {
            text.push(c);
            i += 1;
            continue;
        }
        let Some(close) = chars[i..].iter().position(|&c| c == '}').map(|p| p + i) else {
            return Err(PatternError {
                offset: i,
                message: format!("the pattern `{}` is not closed with `}}`", chars[i..].iter().collect::<String>()),
            });
        };
        let kind: String = chars[i + 1..i + 1 + word_len].iter().collect();
        let arg: String = chars[i + 2 + word_len..close].iter().collect();
        let whole: String = chars[i..=close].iter().collect();
        let piece = piece(&kind, arg.trim())
            .map_err(|why| PatternError { offset: i, message: format!("the pattern `{whole}` {why}") })?;
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
        i = close + 1;
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// One pattern from its kind and argument; `Err` says what is wrong.
fn piece(kind: &str, arg: &str) -> Result<Piece, String> {
    let count = |arg: &str| -> Result<usize, String> {
        match arg.parse::<usize>() {
            Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
            _ => Err(format!("needs a count from 1 to {MAX_COUNT} (`{{{kind}:7}}`), found {arg:?}")),
        }
    };
    let range = |arg: &str, example: &str| -> Result<(String, String), String> {
        arg.split_once("..")
            .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
            .ok_or_else(|| format!("needs a range FROM..TO (`{{{kind}:{example}}}`), found {arg:?}"))
    };
    match kind {
        "alnum" => count(arg).map(Piece::Alnum),
        "hex" => count(arg).map(Piece::Hex),
        "digits" => count(arg).map(Piece::Digits),
        "int" => {
            let (a, b) = range(arg, "128000..512000")?;
            let (Ok(lo), Ok(hi)) = (a.parse::<i64>(), b.parse::<i64>()) else {
                return Err(format!("needs whole numbers FROM..TO (`{{int:128000..512000}}`), found {arg:?}"));
            };
            if lo > hi {
                return Err(format!("is an empty range: {lo} is above {hi}"));
            }
            Ok(Piece::Int(lo, hi))
        }
        "date" | "datetime" => {
            let (a, b) = range(arg, "2023-01-01..2025-12-31")?;
            let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d");
            let (Ok(lo), Ok(hi)) = (day(&a), day(&b)) else {
                return Err(format!(
                    "needs days YYYY-MM-DD..YYYY-MM-DD (`{{{kind}:2023-01-01..2025-12-31}}`), found {arg:?}"
                ));
            };
            if lo > hi {
                return Err(format!("is an empty range: {lo} is after {hi}"));
            }
            Ok(if kind == "date" { Piece::Date(lo, hi) } else { Piece::DateTime(lo, hi) })
        }
        other => {
            let near = KINDS
                .iter()
                .map(|k| (strsim::damerau_levenshtein(other, k), *k))
                .filter(|(d, _)| *d <= 2)
                .min_by_key(|(d, _)| *d)
                .map(|(_, k)| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            Err(format!("has an unknown kind `{other}`{near}; known kinds: {}", KINDS.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1E08C6E95D8BB843B1278FF45BC60CC6";
    const B: &str = "B5B954E81FBCB94EB79BD08BE625F4EE";

    #[test]
    fn patterns_expand_deterministically_per_device_and_keep_their_shape() {
        let v = "DESKTOP-{alnum:7}";
        let a = expand(v, A);
        assert_eq!(a, expand(v, A), "the same device, the same value");
        assert_ne!(a, expand(v, B), "another device, another value");
        assert!(a.starts_with("DESKTOP-") && a.len() == 15, "{a}");
        assert!(a[8..].chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()), "{a}");
        let mac = expand("00-0C-29-{hex:2}-{hex:2}-{hex:2}", A);
        assert!(mac.starts_with("00-0C-29-") && mac.len() == 17, "{mac}");
        let n: i64 = expand("{int:128000..512000}", A).parse().unwrap();
        assert!((128000..=512000).contains(&n));
        let d = expand("{date:2023-01-01..2023-01-03}", B);
        assert!(["2023-01-01", "2023-01-02", "2023-01-03"].contains(&d.as_ref()), "{d}");
        let t = expand("{datetime:2024-02-29..2024-02-29}", B);
        assert!(t.starts_with("2024-02-29T") && t.ends_with('Z'), "{t}");
        assert_eq!(expand("{digits:4}", A).len(), 4);
    }

    #[test]
    fn plain_text_and_guids_in_braces_are_left_alone() {
        for v in ["Dell Inc.", "{B0322158-C3C2-44EB-8A31-D14A9FEC450E}", "{}", "a{b", "{Word:3}"] {
            assert_eq!(expand(v, A), v);
            assert_eq!(check(v), Ok(Shape { varied: false, integer: false }), "{v}");
        }
        assert_eq!(expand("{{alnum:3}", A), "{alnum:3}");
        assert!(check("-{digits:3}").unwrap().integer);
        assert!(check("{int:-5..5}").unwrap().integer);
        assert!(!check("{hex:3}").unwrap().integer);
        assert!(check("12").unwrap().integer);
    }

    #[test]
    fn bad_patterns_are_refused_with_their_place_and_what_is_accepted() {
        let e = check("PC-{alnm:7}").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("unknown kind `alnm` (did you mean `alnum`?)"), "{e}");
        assert!(check("{alnum:0}").unwrap_err().message.contains("count from 1 to 64"));
        assert!(check("{hex:x}").unwrap_err().message.contains("found \"x\""));
        assert!(check("{int:9..1}").unwrap_err().message.contains("empty range"));
        assert!(check("{int:1-9}").unwrap_err().message.contains("FROM..TO"));
        assert!(check("{date:2025-13-01..2026-01-01}").unwrap_err().message.contains("YYYY-MM-DD"));
        let e = check("x{hex:4").unwrap_err();
        assert_eq!((e.offset, e.message.as_str()), (1, "the pattern `{hex:4` is not closed with `}`"));
    }
}
