//! LocURI globs of scenario expectations: `./Vendor/MSFT/DMClient/Provider/*/Poll/*`.
//!
//! Owns the matcher only. A glob is split on `/` into segments; inside a segment `*` matches any
//! run of characters and `?` one character (never a `/`, so `*` stays within one node name); a
//! segment that is exactly `**` matches zero or more whole segments. Matching is exact
//! otherwise (LocURIs are case-sensitive, MS-MDM §2.2, OMA DM RepPro). No crate in Cargo.toml does
//! segment-aware globbing, hence this small one.

use std::fmt;

/// A checked LocURI glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    segments: Vec<String>,
}

impl Glob {
    /// Checks a glob: non-empty, no empty segment (`a//b`), `**` only as a whole segment.
    pub fn parse(text: &str) -> Result<Glob, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err(
                "expected a LocURI glob such as \"./Vendor/MSFT/DMClient/Provider/*/Poll/*\", found an empty string"
                    .into(),
            );
        }
        let segments: Vec<String> = t.split('/').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("expected a LocURI glob with no empty segment, found {t:?}"));
        }
        if let Some(s) = segments.iter().find(|s| s.contains("**") && s.as_str() != "**") {
            return Err(format!("`**` must be a whole segment (`a/**/b`), found {s:?} in {t:?}"));
        }
        Ok(Glob { text: t.to_string(), segments })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segments, `.` included when the glob starts with `./`.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether the glob uses `**`.
    pub fn has_deep(&self) -> bool {
        self.segments.iter().any(|s| s == "**")
    }

    /// Whether `uri` matches. A leading `./` is optional on both sides, so `Vendor/MSFT/X`
    /// and `./Vendor/MSFT/X` are the same node (servers send both forms).
    pub fn matches(&self, uri: &str) -> bool {
        let pat: Vec<&str> = strip_dot(&self.segments);
        let uri_segs: Vec<&str> = uri.trim().split('/').collect();
        let uri_segs: Vec<&str> = match uri_segs.first() {
            Some(&".") => uri_segs[1..].to_vec(),
            _ => uri_segs,
        };
        match_segments(&pat, &uri_segs)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn strip_dot(segs: &[String]) -> Vec<&str> {
    let v: Vec<&str> = segs.iter().map(String::as_str).collect();
    match v.first() {
        Some(&".") => v[1..].to_vec(),
        _ => v,
    }
}

/// Whole-path match with `**` segments (backtracking bounded by the path length).
fn match_segments(pat: &[&str], uri: &[&str]) -> bool {
    match pat.split_first() {
        None => uri.is_empty(),
        Some((&"**", rest)) => (0..=uri.len()).any(|skip| match_segments(rest, &uri[skip..])),
        Some((p, rest)) => match uri.split_first() {
            Some((u, urest)) => segment_matches(p, u) && match_segments(rest, urest),
            None => false,
        },
    }
}

/// One segment against one name: `*` any run, `?` one character.
pub fn segment_matches(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Classic two-pointer wildcard match with one backtrack point: linear-ish, never recursive.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_within_a_segment() {
        let g = Glob::parse("./Vendor/MSFT/DMClient/Provider/*/Poll/*").unwrap();
        assert!(g.matches("./Vendor/MSFT/DMClient/Provider/MS DM Server/Poll/IntervalForFirstSetOfRetries"));
        assert!(g.matches("Vendor/MSFT/DMClient/Provider/X/Poll/NumberOfFirstRetries"));
        assert!(!g.matches("./Vendor/MSFT/DMClient/Provider/X/Poll"));
        assert!(!g.matches("./Vendor/MSFT/DMClient/Provider/X/Y/Poll/Z"));
        assert!(!g.matches("./vendor/MSFT/DMClient/Provider/X/Poll/Z"), "case-sensitive");
    }

    #[test]
    fn question_mark_and_partial_stars() {
        assert!(segment_matches("Interval*Retries", "IntervalForFirstSetOfRetries"));
        assert!(!segment_matches("Interval*Retries", "IntervalForFirstSetOfRetriesX"));
        assert!(segment_matches("Number?fFirstRetries", "NumberOfFirstRetries"));
        assert!(segment_matches("*", ""));
        assert!(segment_matches("a*b*c", "aXbYbZc"));
        assert!(!segment_matches("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn double_star_spans_segments() {
        let g = Glob::parse("./Vendor/MSFT/EnterpriseModernAppManagement/**/Status").unwrap();
        assert!(g.has_deep());
        assert!(g.matches("./Vendor/MSFT/EnterpriseModernAppManagement/AppInstallation/PFN/Status"));
        assert!(g.matches("./Vendor/MSFT/EnterpriseModernAppManagement/Status"));
        assert!(!g.matches("./Vendor/MSFT/EnterpriseAppManagement/A/Status"));
    }

    #[test]
    fn bad_globs_say_why() {
        assert!(Glob::parse("").unwrap_err().contains("empty string"));
        assert!(Glob::parse("./a//b").unwrap_err().contains("empty segment"));
        assert!(Glob::parse("./a/b**/c").unwrap_err().contains("whole segment"));
    }
}
