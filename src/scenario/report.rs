//! What `mdmsim scenario run` prints: the readable pass/fail text and the `--json` object, from
//! the results of each file (the JUnit form is [`super::junit`]).
//!
//! Owns the wording only; pure (returns strings and values, the binary prints them).

use super::build::Built;
use super::expect::ExpectationResult;
use super::run::RunError;

/// The outcome of one scenario file: its results, or why it could not run.
pub type FileOutcome<'a> = (&'a Built, Result<Vec<ExpectationResult>, RunError>);

/// The human report: one `PASS`/`FAIL`/`ERROR` line per file, then one line per expectation,
/// the failures followed by what was seen instead (indented).
pub fn human(outcomes: &[FileOutcome<'_>]) -> String {
    let mut out = String::new();
    for (b, r) in outcomes {
        match r {
            Ok(results) => {
                let failed = results.iter().filter(|x| !x.passed()).count();
                let verdict = if failed == 0 { "PASS" } else { "FAIL" };
                out.push_str(&format!(
                    "{verdict} {} ({}): {} of {} expectations hold\n",
                    b.file,
                    b.name,
                    results.len() - failed,
                    results.len()
                ));
                for x in results {
                    match &x.failure {
                        None => out.push_str(&format!("  ok    {} [{}] {}\n", x.place, x.kind, x.title)),
                        Some(f) => {
                            out.push_str(&format!("  FAIL  {} [{}] {}\n", x.place, x.kind, x.title));
                            for line in f.lines() {
                                out.push_str(&format!("        {line}\n"));
                            }
                        }
                    }
                }
            }
            Err(e) => out.push_str(&format!("ERROR {} ({}): {e}\n", b.file, b.name)),
        }
    }
    out
}

/// The `--json` object: `{"scenarios": [{file, name, passed, expectations | error}]}`.
pub fn json(outcomes: &[FileOutcome<'_>]) -> serde_json::Value {
    let files: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|(b, r)| match r {
            Ok(results) => serde_json::json!({
                "file": b.file,
                "name": b.name,
                "passed": results.iter().all(ExpectationResult::passed),
                "expectations": results.iter().map(|x| serde_json::json!({
                    "place": x.place, "kind": x.kind, "title": x.title,
                    "passed": x.passed(), "failure": x.failure,
                })).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({ "file": b.file, "name": b.name, "passed": false, "error": e.to_string() }),
        })
        .collect();
    serde_json::json!({ "scenarios": files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::check_text;

    fn built(name: &str) -> Built {
        let text = format!(
            "[scenario]\nname = \"{name}\"\n[[device]]\ntemplate = \"win11-laptop\"\n[[expect]]\nkind = \"outcome\"\n"
        );
        check_text(&text, &format!("{name}.toml"), &|p| Err(p.to_string())).unwrap()
    }

    #[test]
    fn pass_fail_and_error_read_as_such() {
        let (a, b, c) = (built("a"), built("b"), built("c"));
        let ok = ExpectationResult { place: "a.toml:5".into(), kind: "outcome", title: "clean".into(), failure: None };
        let bad = ExpectationResult {
            place: "b.toml:5".into(),
            kind: "outcome",
            title: "clean".into(),
            failure: Some("device 01: session 2 ended Failed: HTTP 500\nmore".into()),
        };
        let outcomes: Vec<FileOutcome<'_>> =
            vec![(&a, Ok(vec![ok])), (&b, Ok(vec![bad])), (&c, Err(RunError::Unreachable("refused".into())))];
        let text = human(&outcomes);
        assert!(
            text.contains("PASS a.toml (a): 1 of 1 expectations hold\n  ok    a.toml:5 [outcome] clean\n"),
            "{text}"
        );
        assert!(text.contains("FAIL b.toml (b): 0 of 1 expectations hold\n  FAIL  b.toml:5 [outcome] clean\n        device 01: session 2 ended Failed: HTTP 500\n        more\n"), "{text}");
        assert!(text.contains("ERROR c.toml (c): server unreachable: refused"), "{text}");
        let j = json(&outcomes);
        assert_eq!(j["scenarios"][0]["passed"], true);
        assert_eq!(j["scenarios"][1]["passed"], false);
        assert_eq!(j["scenarios"][1]["expectations"][0]["place"], "b.toml:5");
        assert!(j["scenarios"][1]["expectations"][0]["failure"].as_str().unwrap().contains("HTTP 500"));
        assert_eq!(j["scenarios"][2]["error"], "server unreachable: refused");
    }
}
