//! The report of a conformance run in its four forms: the text a person reads (the summary
//! table, then every failure with its evidence), JSON, JUnit XML (through the scenario
//! engine's writer, one suite per group) and a self-contained HTML page.
//!
//! Owns the formats only; the verdicts are [`super::checks`]'. Writes no files.

use std::fmt::Write as _;

use serde::Serialize;

use super::{CheckResult, GroupSummary, Report, Verdict};
use crate::names::Named as _;
use crate::scenario::expect::ExpectationResult;
use crate::scenario::junit::{self, SuiteReport};

/// The text report: the summary table, then each failure with its evidence and what Windows
/// does, then a line per check that was not applicable.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "conformance of {}", report.target);
    let _ = writeln!(out, "  {:<12} {:>6} {:>6} {:>6}", "group", "passed", "failed", "n/a");
    let rows = report.summary();
    for r in &rows {
        let _ = writeln!(out, "  {:<12} {:>6} {:>6} {:>6}", r.group.name(), r.passed, r.failed, r.not_applicable);
    }
    let total = |f: fn(&GroupSummary) -> usize| rows.iter().map(f).sum::<usize>();
    let _ = writeln!(
        out,
        "  {:<12} {:>6} {:>6} {:>6}",
        "total",
        total(|r| r.passed),
        total(|r| r.failed),
        total(|r| r.not_applicable)
    );
    for c in report.failures() {
        let _ = writeln!(out);
        let _ = writeln!(out, "FAIL {} [{}, {}]: {}", c.id, c.group.name(), c.profile.name(), c.title);
        let _ = writeln!(out, "  expected: {}", c.expected);
        let _ = writeln!(out, "  observed: {}", c.observed);
        let _ = writeln!(out, "  windows:  {}", c.windows);
        let _ = writeln!(out, "  source:   {}", c.source);
        for e in &c.evidence {
            let _ = writeln!(out, "  evidence: {}", evidence_line(e));
        }
    }
    let na: Vec<&CheckResult> = report.checks.iter().filter(|c| c.verdict == Verdict::NotApplicable).collect();
    if !na.is_empty() {
        let _ = writeln!(out);
        for c in na {
            let _ = writeln!(out, "n/a  {} [{}, {}]: {}", c.id, c.group.name(), c.profile.name(), c.observed);
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{}",
        if report.all_passed() {
            "conformance: every check passed".to_string()
        } else {
            format!("conformance: {} check(s) failed", report.failures().count())
        }
    );
    out
}

fn evidence_line(e: &super::Evidence) -> String {
    let mut place = vec![e.from.clone()];
    if !e.session_id.is_empty() {
        place.push(format!("session {}", e.session_id));
    }
    if !e.msg_id.is_empty() {
        place.push(format!("MsgID {}", e.msg_id));
    }
    if !e.cmd_id.is_empty() {
        place.push(format!("CmdID {}", e.cmd_id));
    }
    format!("[{}] {}", place.join(", "), e.what)
}

/// The JSON form: the target, whether everything passed, the summary table and every check.
pub fn json(report: &Report) -> String {
    #[derive(Serialize)]
    struct Json<'a> {
        target: &'a str,
        passed: bool,
        summary: Vec<GroupSummary>,
        checks: &'a [CheckResult],
    }
    let j =
        Json { target: &report.target, passed: report.all_passed(), summary: report.summary(), checks: &report.checks };
    serde_json::to_string_pretty(&j).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// JUnit XML: one suite per group, one testcase per check and profile (a check that was not
/// applicable passes, its title saying so).
pub fn junit(report: &Report) -> String {
    let rows = report.summary();
    let per_group: Vec<(String, Vec<ExpectationResult>)> = rows
        .iter()
        .map(|r| {
            let results = report
                .checks
                .iter()
                .filter(|c| c.group == r.group)
                .map(|c| ExpectationResult {
                    place: format!("{}/{}", c.profile.name(), c.id),
                    kind: c.group.name(),
                    title: match c.verdict {
                        Verdict::NotApplicable => format!("{} (n/a: {})", c.title, c.observed),
                        _ => c.title.clone(),
                    },
                    failure: (c.verdict == Verdict::Fail).then(|| {
                        let mut f = format!("{}; expected: {}; source: {}", c.observed, c.expected, c.source);
                        for e in &c.evidence {
                            f.push('\n');
                            f.push_str(&evidence_line(e));
                        }
                        f
                    }),
                })
                .collect();
            (r.group.name().to_string(), results)
        })
        .collect();
    let suites: Vec<SuiteReport<'_>> = per_group
        .iter()
        .map(|(name, results)| SuiteReport { name, file: &report.target, results, error: None })
        .collect();
    junit::write(&suites)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A self-contained HTML page (inline style, no script, nothing fetched): the summary table,
/// then every check with its verdict, the failures open with their evidence.
pub fn html(report: &Report) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(h, "<title>mdmsim conformance: {}</title>", esc(&report.target));
    h.push_str(
        "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}\
         .na{color:#777}details{margin:.4em 0}code{background:#f4f4f4;padding:0 .2em}</style></head><body>",
    );
    let _ = write!(h, "<h1>mdmsim conformance</h1><p>Target: <code>{}</code>. ", esc(&report.target));
    let _ = write!(
        h,
        "{}</p>",
        if report.all_passed() {
            "Every check passed.".to_string()
        } else {
            format!("<span class=\"fail\">{} check(s) failed.</span>", report.failures().count())
        }
    );
    h.push_str("<table><tr><th>group</th><th>passed</th><th>failed</th><th>n/a</th></tr>");
    for r in report.summary() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.group.name(),
            r.passed,
            r.failed,
            r.not_applicable
        );
    }
    h.push_str("</table><h2>Checks</h2>");
    for c in &report.checks {
        let (class, label) = match c.verdict {
            Verdict::Pass => ("pass", "pass"),
            Verdict::Fail => ("fail", "FAIL"),
            Verdict::NotApplicable => ("na", "n/a"),
        };
        let open = if c.verdict == Verdict::Fail { " open" } else { "" };
        let _ = write!(
            h,
            "<details{open}><summary><span class=\"{class}\">{label}</span> <code>{}</code> [{}, {}] {}</summary><ul>",
            esc(&c.id),
            c.group.name(),
            c.profile.name(),
            esc(&c.title)
        );
        let _ = write!(h, "<li>expected: {}</li>", esc(&c.expected));
        let _ = write!(h, "<li>observed: {}</li>", esc(&c.observed));
        let _ = write!(h, "<li>Windows: {}</li>", esc(&c.windows));
        let _ = write!(h, "<li>source: {}</li>", esc(&c.source));
        for e in &c.evidence {
            let _ = write!(h, "<li>evidence: <code>{}</code></li>", esc(&evidence_line(e)));
        }
        h.push_str("</ul></details>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{Evidence, Group};
    use crate::tree::Profile;

    fn check(id: &str, group: Group, verdict: Verdict) -> CheckResult {
        CheckResult {
            id: id.into(),
            group,
            profile: Profile::Win10,
            title: format!("title of {id}"),
            verdict,
            expected: "e".into(),
            observed: "o <b>".into(),
            windows: "w".into(),
            source: "OMA DM".into(),
            evidence: vec![Evidence {
                from: "server".into(),
                session_id: "3".into(),
                msg_id: "2".into(),
                cmd_id: "5".into(),
                what: "Status".into(),
            }],
        }
    }

    #[test]
    fn the_summary_counts_each_verdict_by_group_and_the_failure_shows_its_evidence() {
        let r = Report {
            target: "https://mdm.example".into(),
            checks: vec![
                check("final", Group::Session, Verdict::Fail),
                check("session-end", Group::Session, Verdict::Pass),
                check("discovery", Group::Enrollment, Verdict::NotApplicable),
            ],
        };
        let rows = r.summary();
        assert_eq!(rows[0].group, Group::Enrollment);
        assert_eq!((rows[1].passed, rows[1].failed, rows[1].not_applicable), (1, 1, 0));
        assert!(!r.all_passed());
        let t = text(&r);
        assert!(t.contains("FAIL final [session, win10]"), "{t}");
        assert!(t.contains("[server, session 3, MsgID 2, CmdID 5] Status"), "{t}");
        assert!(t.contains("1 check(s) failed"), "{t}");
        let x = junit(&r);
        assert!(x.contains("failures=\"1\""), "{x}");
        let page = html(&r);
        assert!(page.contains("o &lt;b&gt;") && !page.contains("<script"), "{page}");
    }
}
