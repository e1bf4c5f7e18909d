//! JUnit XML for CI systems: one `<testsuite>` per scenario file, one `<testcase>` per
//! expectation, a `<failure>` with the engine's message for each one that failed.
//!
//! Owns the XML shape only (written with quick-xml so escaping is right); the verdicts come
//! from [`super::evaluate`]. Does not write files.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::expect::ExpectationResult;

/// The results of one scenario file.
#[derive(Debug, Clone)]
pub struct SuiteReport<'a> {
    /// The scenario's name.
    pub name: &'a str,
    /// The file, as given on the command line.
    pub file: &'a str,
    pub results: &'a [ExpectationResult],
    /// Set when the scenario could not run at all (the run error); every testcase then errors.
    pub error: Option<&'a str>,
}

/// The `<testsuites>` document for `suites`.
pub fn write(suites: &[SuiteReport<'_>]) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing into a Vec cannot fail; the results are ignored for that reason.
    let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    let total: usize = suites.iter().map(|s| s.results.len().max(1)).sum();
    let failures: usize = suites.iter().map(|s| s.results.iter().filter(|r| !r.passed()).count()).sum();
    let errors: usize = suites.iter().filter(|s| s.error.is_some()).count();
    let mut root = BytesStart::new("testsuites");
    root.push_attribute(("name", "mdmsim scenarios"));
    root.push_attribute(("tests", total.to_string().as_str()));
    root.push_attribute(("failures", failures.to_string().as_str()));
    root.push_attribute(("errors", errors.to_string().as_str()));
    let _ = w.write_event(Event::Start(root));
    for s in suites {
        let mut suite = BytesStart::new("testsuite");
        suite.push_attribute(("name", s.name));
        suite.push_attribute(("file", s.file));
        suite.push_attribute(("tests", s.results.len().max(1).to_string().as_str()));
        suite.push_attribute(("failures", s.results.iter().filter(|r| !r.passed()).count().to_string().as_str()));
        suite.push_attribute(("errors", usize::from(s.error.is_some()).to_string().as_str()));
        let _ = w.write_event(Event::Start(suite));
        if let Some(e) = s.error {
            let mut case = BytesStart::new("testcase");
            case.push_attribute(("name", "run"));
            case.push_attribute(("classname", s.file));
            let _ = w.write_event(Event::Start(case));
            let mut err = BytesStart::new("error");
            err.push_attribute(("message", e));
            let _ = w.write_event(Event::Start(err));
            let _ = w.write_event(Event::Text(BytesText::new(e)));
            let _ = w.write_event(Event::End(BytesEnd::new("error")));
            let _ = w.write_event(Event::End(BytesEnd::new("testcase")));
        }
        for r in s.results {
            let mut case = BytesStart::new("testcase");
            let name = format!("{} [{}] {}", r.place, r.kind, r.title);
            case.push_attribute(("name", name.as_str()));
            case.push_attribute(("classname", s.file));
            match &r.failure {
                None => {
                    let _ = w.write_event(Event::Empty(case));
                }
                Some(f) => {
                    let _ = w.write_event(Event::Start(case));
                    let mut fail = BytesStart::new("failure");
                    let first = f.lines().next().unwrap_or(f);
                    fail.push_attribute(("message", first));
                    fail.push_attribute(("type", r.kind));
                    let _ = w.write_event(Event::Start(fail));
                    let _ = w.write_event(Event::Text(BytesText::new(&format!("{}: {}\n{f}", r.place, r.title))));
                    let _ = w.write_event(Event::End(BytesEnd::new("failure")));
                    let _ = w.write_event(Event::End(BytesEnd::new("testcase")));
                }
            }
        }
        let _ = w.write_event(Event::End(BytesEnd::new("testsuite")));
    }
    let _ = w.write_event(Event::End(BytesEnd::new("testsuites")));
    let mut out = String::from_utf8(w.into_inner()).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::Reader;

    #[test]
    fn the_xml_parses_and_carries_the_failures() {
        let results = vec![
            ExpectationResult {
                place: "a.toml:10".into(),
                kind: "session",
                title: "a reboot session".into(),
                failure: None,
            },
            ExpectationResult {
                place: "a.toml:17".into(),
                kind: "node",
                title: "Poll <interval> & \"quotes\"".into(),
                failure: Some("device 01: expected \"15\", found \"0\"\nsecond line".into()),
            },
        ];
        let xml = write(&[SuiteReport { name: "poll", file: "a.toml", results: &results, error: None }]);
        let mut r = Reader::from_str(&xml);
        let (mut cases, mut failures, mut texts) = (0, Vec::new(), String::new());
        loop {
            match r.read_event().expect("well-formed XML") {
                quick_xml::events::Event::Eof => break,
                quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                    if e.name().as_ref() == "testcase" {
                        cases += 1;
                    }
                    if e.name().as_ref() == "failure" {
                        let m = e.try_get_attribute("message").unwrap().unwrap();
                        failures.push(quick_xml::escape::unescape(&m.value).unwrap().into_owned());
                    }
                }
                quick_xml::events::Event::Text(t) => texts.push_str(&t.xml10_content()),
                _ => {}
            }
        }
        assert_eq!(cases, 2);
        assert_eq!(failures, vec!["device 01: expected \"15\", found \"0\"".to_string()]);
        assert!(texts.contains("second line"), "{texts}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
    }
}
