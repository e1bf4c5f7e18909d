//! A [`Transcript`] for people: [`text`] for a terminal, [`html`] for a browser. The page is one
//! file with its style inline and nothing fetched when it is viewed (no script, no font, no
//! image), so it can be attached to a bug report or archived by CI as it is.
//!
//! Owns the wording and the layout; pure (strings in, string out). Every value that comes from
//! a transcript is escaped (quick-xml's escaper: `& < > ' "`).

use std::fmt::Write as _;

use quick_xml::escape::escape;

use super::{CommandView, SessionView, Transcript};
use crate::session::Outcome;

/// Characters of a value shown inline before it is cut (the page keeps whole messages below).
const VALUE_MAX: usize = 120;

fn cut(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

/// One line naming a session: id, trigger, mode, alert, start, outcome.
fn session_line(s: &SessionView) -> String {
    match &s.summary {
        Some(x) => {
            let outcome = match x.outcome {
                Outcome::Completed => "completed".to_string(),
                Outcome::Running => "running".to_string(),
                Outcome::Failed => format!("FAILED: {}", x.error.as_deref().unwrap_or("no error recorded")),
            };
            format!(
                "session {} of {}  {}  trigger {}  mode {}  alert {} ({})  {}",
                x.session_id,
                x.device_id,
                x.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                x.trigger,
                x.mode,
                x.alert,
                super::alert_meaning(&x.alert.to_string()),
                outcome
            )
        }
        None => {
            format!("session {} of {} (no summary.json)", s.path, if s.device.is_empty() { "?" } else { &s.device })
        }
    }
}

fn status_text(c: &CommandView) -> String {
    c.status.map_or("no status".to_string(), |s| s.to_string())
}

/// What the device gave back for a command: its Results, else nothing.
fn answer_text(c: &CommandView) -> String {
    c.results.iter().map(|(_, d)| format!("{:?}", cut(d, VALUE_MAX))).collect::<Vec<_>>().join(", ")
}

/// The text form: per session a header line, its alerts, then one line per server command
/// (MsgID/CmdID, command, LocURI, data sent, the device's status, its Results); non-2xx
/// statuses are marked `!`.
pub fn text(t: &Transcript) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "transcript {}: {} session(s), {} enrollment exchange(s)",
        t.root,
        t.sessions.len(),
        t.enrollments.len()
    );
    for e in &t.enrollments {
        let _ = writeln!(out, "\nenrollment ({}):", e.path);
        for s in &e.steps {
            let status = s.status.map_or("no answer".to_string(), |c| format!("HTTP {c}"));
            let mark = if s.status.is_some_and(|c| (200..300).contains(&c)) { " " } else { "!" };
            let _ = writeln!(out, "{mark} {:>2} {:<9} {} {}  {status}", s.n, s.step, s.method, s.url);
            if let Some(err) = &s.error {
                let _ = writeln!(out, "       {err}");
            }
        }
        for p in &e.problems {
            let _ = writeln!(out, "  problem: {p}");
        }
    }
    for s in &t.sessions {
        let _ = writeln!(out, "\n{}", session_line(s));
        if s.path != "." {
            let _ = writeln!(out, "  folder: {}", s.path);
        }
        for a in &s.alerts {
            let items = if a.items.is_empty() { String::new() } else { format!(": {}", a.items.join("; ")) };
            let meaning = if a.meaning.is_empty() { String::new() } else { format!(" ({})", a.meaning) };
            let _ = writeln!(out, "  device alert {}{meaning}{items}", a.code);
        }
        if s.commands.is_empty() {
            let _ = writeln!(out, "  the server sent no command");
        }
        for c in &s.commands {
            let mark = if c.ok() || (c.status.is_none() && c.cmd == "Alert") { " " } else { "!" };
            let indent = if c.parent.is_some() { "  " } else { "" };
            let targets: Vec<String> = c
                .items
                .iter()
                .map(|(u, d)| match d {
                    Some(d) if !d.trim().is_empty() => format!("{u} = {:?}", cut(d, VALUE_MAX)),
                    _ => u.clone(),
                })
                .collect();
            let answer = answer_text(c);
            let _ = writeln!(
                out,
                "{mark} MsgID {} CmdID {:<8} {indent}{:<8} {}  -> {}{}",
                c.msg_id,
                cut(&c.cmd_id, 8),
                c.cmd,
                targets.join(", "),
                status_text(c),
                if answer.is_empty() { String::new() } else { format!("  {answer}") }
            );
        }
        for st in &s.server_statuses {
            let _ = writeln!(
                out,
                "! server answered {} (CmdRef {}) with {} in MsgID {}",
                st.cmd, st.cmd_ref, st.code, st.msg_id
            );
        }
        if let Some(x) = &s.summary {
            for f in &x.findings {
                let _ = writeln!(out, "  finding: {f}");
            }
        }
        for p in &s.problems {
            let _ = writeln!(out, "  problem: {p}");
        }
    }
    out
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f24;background:#fff}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ccd}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #d5d9e0;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#eef1f5}td.uri{font-family:ui-monospace,monospace;word-break:break-all}
tr.bad td{background:#fde8e8}tr.bad td.code{color:#a4000f;font-weight:bold}
tr.child td.cmd{padding-left:1.5em}
.meta{color:#57606a}.finding{color:#8a5300}.problem{color:#a4000f}
pre{background:#f6f8fa;border:1px solid #d5d9e0;padding:6px;overflow:auto;max-height:30em;font-size:12px}
details{margin:.3em 0}summary{cursor:pointer}.tag{display:inline-block;padding:0 6px;border-radius:3px;background:#eef1f5;margin-right:4px}
.tag.failed{background:#fde8e8;color:#a4000f}
"#;

fn e(s: &str) -> String {
    escape(s).into_owned()
}

/// The HTML page (see the module doc).
pub fn html(t: &Transcript) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mdmsim transcript {}</title><style>{STYLE}</style></head><body>\n",
        e(&t.root)
    );
    let _ = writeln!(
        o,
        "<h1>mdmsim transcript</h1><p class=\"meta\">{} &middot; {} session(s) &middot; {} enrollment exchange(s). Rows in red: the device did not answer 2xx (or the server answered the device with something other than 200).</p>",
        e(&t.root),
        t.sessions.len(),
        t.enrollments.len()
    );
    for en in &t.enrollments {
        let _ = writeln!(o, "<h2>Enrollment (MS-MDE2) <span class=\"meta\">{}</span></h2>", e(&en.path));
        o.push_str("<table><tr><th>#</th><th>step</th><th>request</th><th>HTTP status</th></tr>\n");
        for s in &en.steps {
            let ok = s.status.is_some_and(|c| (200..300).contains(&c));
            let status = s.status.map_or("no answer".to_string(), |c| c.to_string());
            let _ = writeln!(
                o,
                "<tr{}><td>{}</td><td>{}</td><td class=\"uri\">{} {}</td><td class=\"code\">{}{}</td></tr>",
                if ok { "" } else { " class=\"bad\"" },
                s.n,
                e(&s.step),
                e(&s.method),
                e(&s.url),
                e(&status),
                s.error.as_deref().map(|x| format!("<br>{}", e(x))).unwrap_or_default()
            );
        }
        o.push_str("</table>\n");
        for s in &en.steps {
            for (what, body) in [("request", &s.request), ("response", &s.response)] {
                if let Some(b) = body {
                    let _ = writeln!(
                        o,
                        "<details><summary>{} {} {what} (secrets masked)</summary><pre>{}</pre></details>",
                        s.n,
                        e(&s.step),
                        e(b)
                    );
                }
            }
        }
        for p in &en.problems {
            let _ = writeln!(o, "<p class=\"problem\">{}</p>", e(p));
        }
    }
    for s in &t.sessions {
        session_html(&mut o, s);
    }
    o.push_str("</body></html>\n");
    o
}

fn session_html(o: &mut String, s: &SessionView) {
    let _ = write!(o, "<h2>{}</h2>\n<p class=\"meta\">", e(&session_line(s)));
    if let Some(x) = &s.summary {
        let failed = x.outcome == Outcome::Failed;
        let _ = write!(
            o,
            "<span class=\"tag\">trigger {}</span><span class=\"tag\">mode {}</span><span class=\"tag\">alert {}</span><span class=\"tag\">{}</span><span class=\"tag{}\">{}</span> {} message(s) sent, {} received",
            e(&x.trigger.to_string()),
            e(&x.mode.to_string()),
            x.alert,
            e(&x.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            if failed { " failed" } else { "" },
            if failed { "failed" } else { "completed" },
            x.messages_sent,
            x.messages_received
        );
    }
    if s.path != "." {
        let _ = write!(o, " &middot; folder {}", e(&s.path));
    }
    o.push_str("</p>\n");
    if !s.alerts.is_empty() {
        o.push_str("<p>Device alerts: ");
        let items: Vec<String> = s
            .alerts
            .iter()
            .map(|a| {
                let mut t = format!("<b>{}</b>", e(&a.code));
                if !a.meaning.is_empty() {
                    let _ = write!(t, " ({})", e(a.meaning));
                }
                if !a.items.is_empty() {
                    let _ = write!(t, ": {}", e(&a.items.join("; ")));
                }
                t
            })
            .collect();
        o.push_str(&items.join(" &middot; "));
        o.push_str("</p>\n");
    }
    if s.commands.is_empty() {
        o.push_str("<p>The server sent no command.</p>\n");
    } else {
        o.push_str("<table><tr><th>MsgID</th><th>CmdID</th><th>command</th><th>LocURI</th><th>data sent</th><th>device status</th><th>Results</th></tr>\n");
        for c in &s.commands {
            let bad = !(c.ok() || (c.status.is_none() && c.cmd == "Alert"));
            let class = match (bad, c.parent.is_some()) {
                (true, true) => " class=\"bad child\"",
                (true, false) => " class=\"bad\"",
                (false, true) => " class=\"child\"",
                (false, false) => "",
            };
            let uris: Vec<String> = c.items.iter().map(|(u, _)| e(u)).collect();
            let data: Vec<String> =
                c.items.iter().map(|(_, d)| e(&cut(d.as_deref().unwrap_or(""), VALUE_MAX))).collect();
            let results: Vec<String> = c.results.iter().map(|(_, d)| e(&cut(d, VALUE_MAX))).collect();
            let _ = writeln!(
                o,
                "<tr{class}><td>{}</td><td>{}</td><td class=\"cmd\">{}</td><td class=\"uri\">{}</td><td class=\"uri\">{}</td><td class=\"code\">{}</td><td class=\"uri\">{}</td></tr>",
                e(&c.msg_id),
                e(&cut(&c.cmd_id, 12)),
                e(&c.cmd),
                uris.join("<br>"),
                data.join("<br>"),
                e(&status_text(c)),
                results.join("<br>")
            );
        }
        o.push_str("</table>\n");
    }
    for st in &s.server_statuses {
        let _ = writeln!(
            o,
            "<table><tr class=\"bad\"><td>server answered {} (CmdRef {}) in MsgID {}</td><td class=\"code\">{}</td></tr></table>",
            e(&st.cmd),
            e(&st.cmd_ref),
            e(&st.msg_id),
            e(&st.code)
        );
    }
    if let Some(x) = &s.summary {
        for f in &x.findings {
            let _ = writeln!(o, "<p class=\"finding\">finding: {}</p>", e(&f.to_string()));
        }
    }
    for p in &s.problems {
        let _ = writeln!(o, "<p class=\"problem\">{}</p>", e(p));
    }
    for m in &s.messages {
        let _ = writeln!(
            o,
            "<details><summary>{} ({} message)</summary><pre>{}</pre></details>",
            e(&m.name),
            if m.client { "device" } else { "server" },
            e(&m.text)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{CommandView, SessionView, Transcript};

    fn sample() -> Transcript {
        let s = SessionView {
            path: "A1/00001".into(),
            device: "A1".into(),
            commands: vec![
                CommandView {
                    msg_id: "1".into(),
                    cmd_id: "2".into(),
                    cmd: "Get".into(),
                    items: vec![("./DevDetail/SwV".into(), None)],
                    status: Some(200),
                    results: vec![("./DevDetail/SwV".into(), "10.0".into())],
                    parent: None,
                },
                CommandView {
                    msg_id: "1".into(),
                    cmd_id: "3".into(),
                    cmd: "Replace".into(),
                    items: vec![("./Vendor/<script>".into(), Some("1".into()))],
                    status: Some(405),
                    results: vec![],
                    parent: None,
                },
            ],
            ..SessionView::default()
        };
        Transcript { root: "t".into(), sessions: vec![s], enrollments: vec![] }
    }

    #[test]
    fn non_2xx_statuses_stand_out_and_values_are_escaped() {
        let t = sample();
        let text = text(&t);
        assert!(text.contains("  MsgID 1 CmdID 2        Get      ./DevDetail/SwV  -> 200  \"10.0\""), "{text}");
        assert!(text.contains("! MsgID 1 CmdID 3        Replace  ./Vendor/<script> = \"1\"  -> 405"), "{text}");
        let page = html(&t);
        assert!(page.contains("<tr class=\"bad\">") && page.contains("<td class=\"code\">405</td>"), "{page}");
        assert!(page.contains("./Vendor/&lt;script&gt;") && !page.contains("<script>"), "{page}");
        for fetch in ["src=", "href=", "<link", "<script", "@import", "url("] {
            assert!(!page.contains(fetch), "nothing fetched at view time: {fetch}");
        }
    }
}
