//! `device import`: a device template learnt from a capture of a real device.
//!
//! What the device said becomes the template: the values of its Results to the server's Gets
//! (paired by MsgRef and CmdRef with the Get, the LocURI of the Results item or else of the
//! Get's), the DevInfo values of its package 1 Replace, the MS-MDE2 enrollment context
//! (`OSVersion` as DevDetail `SwV`, `OSEdition`, `DeviceName`, `Locale`) and a diagnostics
//! report's nodes. DevInfo and DevDetail leaves go to `[devinfo]`/`[devdetail]`, leaves of other
//! CSPs of mdmsim's table (Microsoft's DDF files) to `[nodes]`, LocURIs answered 404 to
//! `unsupported`. The profile comes from DevDetail `SwV` (6.3 is Windows 8.1, 10.0 Windows 10 and
//! 11), else from the SyncML version (1.1 is older than Windows 10), else win10.
//!
//! Nothing secret is kept: credentials (`Cred`, `Chal`), nodes named like secrets (passwords,
//! keys, tokens, `AAuthSecret`, `AAuthData`), certificate blobs and long opaque blobs are
//! dropped; user names (UPNs, emails), user SIDs and certificate thumbprints are replaced by
//! placeholders of the same shape, in values and in LocURI segments. Serial numbers, host
//! names, MAC addresses, disk sizes, install dates and hardware IDs are marked to vary across a
//! fleet ([`crate::device::vary`]) unless [`ImportOptions::vary`] is off. Every decision is in
//! the [`Report`]: what was kept, varied, masked, dropped (and why), and which captured Gets a
//! device made from the template answers as captured (the template is checked by creating such
//! a device and asking it).

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{Capture, Message, Side};
use crate::csp::devinfo::{DevDetail, DevInfo};
use crate::device::{DEFAULT_PROVIDER_ID, Device, DeviceId, Template};
use crate::syncml::{Command, Item, ItemCmd, StatusCode};
use crate::tree::{Csp, Env, Format, NodeSpec, NodeUri, Profile, Tree};

/// How to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    /// Mark serials, host names, MACs, disk sizes, install dates and hardware IDs to vary
    /// across a fleet (true), or keep every captured value as it is.
    pub vary: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { vary: true }
    }
}

/// One line of the report: a LocURI (or what else was seen), its value as written in the
/// template (or as captured), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub uri: String,
    pub value: String,
    pub why: String,
    /// `FILE:LINE` of the message or report line it came from.
    pub from: String,
}

/// A captured Get that a device made from the template answers differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub uri: String,
    pub captured: String,
    pub device: String,
}

/// What an import did, for people and for `--json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Messages read: (client, server).
    pub messages: (usize, usize),
    pub profile: String,
    /// Why that profile.
    pub profile_from: String,
    /// The OS build (`19043.2364`), when the device said.
    pub os_build: Option<String>,
    /// The captured DeviceID, when it is one (`device new --id` gives it back).
    pub device_id: Option<String>,
    pub kept: Vec<Entry>,
    pub varied: Vec<Entry>,
    pub masked: Vec<Entry>,
    pub unsupported: Vec<Entry>,
    pub dropped: Vec<Entry>,
    /// Captured Gets of leaves (and 404s) a device made from the template was asked.
    pub checked: usize,
    /// Those it answered differently.
    pub mismatches: Vec<Mismatch>,
}

/// The template text and the report.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The template, as TOML text with a header naming the capture.
    pub text: String,
    /// The same template, parsed.
    pub template: Template,
    pub report: Report,
}

/// A value the device reported for a node.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    value: String,
    format: Option<String>,
    from: String,
}

/// A captured Get of one LocURI and what the device answered.
#[derive(Debug, Clone)]
struct CapturedGet {
    uri: String,
    status: Option<String>,
    value: Option<String>,
    format: Option<String>,
}

/// Learns a template from a capture.
pub fn import(cap: &Capture, opts: ImportOptions) -> Imported {
    let mut report = Report {
        messages: (
            cap.messages.iter().filter(|m| m.side == Side::Client).count(),
            cap.messages.iter().filter(|m| m.side == Side::Server).count(),
        ),
        ..Report::default()
    };
    let (seen, gets) = observe(cap, &mut report);

    // The last value of each node wins (a later session saw the device as it is now).
    let mut values: BTreeMap<String, Seen> = BTreeMap::new();
    for s in seen {
        values.insert(s.uri.clone(), s);
    }
    let mut devinfo = BTreeMap::new();
    let mut devdetail = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for (uri, s) in &values {
        let Some(parsed) = NodeUri::parse(uri).ok().filter(|_| uri.starts_with("./")) else {
            report.dropped.push(entry(uri, &s.value, "not an absolute LocURI", &s.from));
            continue;
        };
        if parsed.segments == ["DevInfo", "DevId"] {
            match DeviceId::parse(&s.value) {
                // Said on its own line of the report and in the template's header.
                Ok(id) => report.device_id = Some(id.to_string()),
                Err(_) => {
                    report.dropped.push(entry(uri, &s.value, "the DeviceID, and not one (32 hex digits)", &s.from))
                }
            }
            continue;
        }
        if s.format.as_deref() == Some("node") {
            report.dropped.push(entry(
                uri,
                &shorten(&s.value),
                "an interior node: its listing comes from the leaves below it",
                &s.from,
            ));
            continue;
        }
        let (uri_text, uri_masked) = mask_uri(uri, &parsed);
        if let Some(why) = secret(&parsed.segments, &s.value) {
            // Neither the value nor a thumbprint of its path is shown.
            report.dropped.push(entry(&uri_text, "", why, &s.from));
            continue;
        }
        let (value, masked) = mask_value(&s.value);
        if let Some(why) = masked.or(uri_masked) {
            report.masked.push(entry(&uri_text, &value, why, &s.from));
        }
        let parsed = NodeUri::parse(&uri_text).unwrap_or(parsed);
        let table = match parsed.segments.first().map(String::as_str) {
            Some("DevInfo") if parsed.segments.len() > 1 => Some(("devinfo", DevInfo.schema())),
            Some("DevDetail") if parsed.segments.len() > 1 => Some(("devdetail", DevDetail.schema())),
            _ => None,
        };
        let (value, vary_why) = match (opts.vary, masked) {
            (true, None) => vary(&parsed.segments, &value),
            _ => (value, None),
        };
        let rel = parsed.segments[1..].join("/");
        let fits = match table {
            Some((_, root)) => leaf_format(root, &rel).map(|f| fits_format(f, &value)),
            None => crate::device::is_known_leaf(&parsed).then_some(Ok(())),
        };
        match fits {
            None => {
                let why = match table {
                    Some((name, _)) => format!("not a leaf of mdmsim's {name} table"),
                    None => {
                        "no CSP leaf of this path in mdmsim's table (Microsoft's DDF files; `mdmsim ddf show PATH`)"
                            .to_string()
                    }
                };
                report.dropped.push(entry(&uri_text, &shorten(&value), &why, &s.from));
                continue;
            }
            Some(Err(why)) => {
                report.dropped.push(entry(&uri_text, &shorten(&value), &why, &s.from));
                continue;
            }
            Some(Ok(())) => {}
        }
        match vary_why {
            Some(why) => {
                report.varied.push(entry(&uri_text, &value, &format!("{why}: captured {:?}", s.value), &s.from))
            }
            None if masked.is_none() && uri_masked.is_none() => report.kept.push(entry(&uri_text, &value, "", &s.from)),
            None => {}
        }
        match table {
            Some(("devinfo", _)) => {
                devinfo.insert(rel, value);
            }
            Some(_) => {
                devdetail.insert(rel, value);
            }
            None => {
                nodes.insert(uri_text.clone(), vec![value]);
            }
        }
    }

    let (profile, why) = profile_of(devdetail.get("SwV").map(String::as_str), cap);
    report.profile = profile.as_str().to_string();
    report.profile_from = why;
    report.os_build = devdetail.get("SwV").and_then(|v| os_build(v));

    let unsupported: Vec<String> = report.unsupported.iter().map(|e| e.uri.clone()).collect();
    let template = Template { profile: Some(profile), devinfo, devdetail, nodes, unsupported, ..Template::default() };
    check(&template, &gets, &mut report, profile);
    let text = render(cap, &template, &report);
    Imported { text, template, report }
}

fn entry(uri: &str, value: &str, why: &str, from: &str) -> Entry {
    Entry { uri: uri.to_string(), value: value.to_string(), why: why.to_string(), from: from.to_string() }
}

/// At most 60 characters of a value, for reports.
fn shorten(v: &str) -> String {
    if v.chars().count() <= 60 {
        v.to_string()
    } else {
        format!("{}… ({} characters)", v.chars().take(40).collect::<String>(), v.chars().count())
    }
}

/// The values the device reported, and the Gets it answered, in capture order.
fn observe(cap: &Capture, report: &mut Report) -> (Vec<Seen>, Vec<CapturedGet>) {
    let mut seen = Vec::new();
    let mut gets = Vec::new();
    // The enrollment context first: the SyncML values below say the same or later.
    for (name, value, place) in &cap.context {
        let uri = match name.as_str() {
            "OSVersion" => "./DevDetail/SwV",
            "OSEdition" => "./DevDetail/Ext/Microsoft/OSEdition",
            "DeviceName" => "./DevDetail/Ext/Microsoft/DeviceName",
            "Locale" => "./DevInfo/Lang",
            "DeviceID" => "./DevInfo/DevId",
            "MAC" | "HWDevID" | "IMEI" => {
                let why = "an enrollment context item with no node a template sets (mdmsim derives it)";
                report.dropped.push(entry(&format!("enrollment {name}"), value, why, place));
                continue;
            }
            _ => continue,
        };
        seen.push(Seen { uri: uri.into(), value: value.clone(), format: None, from: place.clone() });
    }
    for n in &cap.nodes {
        seen.push(Seen { uri: n.uri.clone(), value: n.value.clone(), format: n.format.clone(), from: n.place.clone() });
    }
    for session in cap.sessions() {
        observe_session(session, report, &mut seen, &mut gets);
    }
    (seen, gets)
}

fn observe_session(session: &[Message], report: &mut Report, seen: &mut Vec<Seen>, gets: &mut Vec<CapturedGet>) {
    // The server's Gets and Replaces by (MsgID, CmdID), with their target LocURIs.
    let mut asked: BTreeMap<(String, String), (&'static str, Vec<String>)> = BTreeMap::new();
    let mut last_server_msg = String::new();
    let mut get_index: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for m in session {
        let place = m.place();
        if m.msg.hdr.cred.is_some() {
            report.dropped.push(entry("SyncHdr Cred", "…", "credentials are never kept", &place));
        }
        match m.side {
            Side::Server => {
                last_server_msg = m.msg.hdr.msg_id.clone();
                let mut flat = Vec::new();
                flatten(&m.msg.body.commands, &mut flat);
                for c in flat {
                    let (kind, cmd): (&'static str, &ItemCmd) = match c {
                        Command::Get(g) => ("Get", g),
                        Command::Replace(r) => ("Replace", r),
                        _ => continue,
                    };
                    let uris: Vec<String> = cmd.items.iter().filter_map(|i| i.target.clone()).collect();
                    let key = (m.msg.hdr.msg_id.clone(), cmd.cmd_id.clone());
                    if kind == "Get" {
                        let mut idx = Vec::new();
                        for u in &uris {
                            idx.push(gets.len());
                            gets.push(CapturedGet { uri: u.clone(), status: None, value: None, format: None });
                        }
                        get_index.insert(key.clone(), idx);
                    }
                    asked.insert(key, (kind, uris));
                }
            }
            Side::Client => {
                for c in &m.msg.body.commands {
                    match c {
                        Command::Replace(r) | Command::Add(r) => {
                            for it in &r.items {
                                if let (Some(uri), Some(data)) = (&it.source, &it.data) {
                                    seen.push(Seen {
                                        uri: uri.clone(),
                                        value: data.clone(),
                                        format: format_of(it, None),
                                        from: place.clone(),
                                    });
                                }
                            }
                        }
                        Command::Status(s) => {
                            if s.chal.is_some() {
                                report.dropped.push(entry(
                                    "Status Chal",
                                    "…",
                                    "authentication challenges are never kept",
                                    &place,
                                ));
                            }
                            let msg_ref =
                                if s.msg_ref.is_empty() { last_server_msg.clone() } else { s.msg_ref.clone() };
                            let key = (msg_ref, s.cmd_ref.clone());
                            if let Some(idx) = get_index.get(&key) {
                                for &i in idx {
                                    gets[i].status = Some(s.data.trim().to_string());
                                }
                            }
                            let Some((kind, uris)) = asked.get(&key) else { continue };
                            let code = s.data.trim();
                            if code == "404" || code == "405" {
                                let targets =
                                    if s.target_refs.is_empty() { uris.clone() } else { s.target_refs.clone() };
                                for u in targets {
                                    let why = format!("Status {code} to a {kind}");
                                    if code == "404" {
                                        if !report.unsupported.iter().any(|e| e.uri == u) {
                                            report.unsupported.push(entry(&u, "", &why, &place));
                                        }
                                    } else {
                                        report.dropped.push(entry(
                                            &u,
                                            "",
                                            &format!("{why}: not allowed on this node; mdmsim answers by the DDF's AccessType"),
                                            &place,
                                        ));
                                    }
                                }
                            }
                        }
                        Command::Results(r) => {
                            let msg_ref =
                                if r.msg_ref.is_empty() { last_server_msg.clone() } else { r.msg_ref.clone() };
                            let key = (msg_ref, r.cmd_ref.clone());
                            let targets = asked.get(&key).map(|(_, u)| u.clone()).unwrap_or_default();
                            let idx = get_index.get(&key).cloned().unwrap_or_default();
                            for (n, it) in r.items.iter().enumerate() {
                                let uri = it.source.clone().or_else(|| targets.get(n).cloned());
                                let Some(uri) = uri else {
                                    report.dropped.push(entry(
                                        "Results item",
                                        it.data.as_deref().unwrap_or(""),
                                        "no LocURI and no Get to pair it with",
                                        &place,
                                    ));
                                    continue;
                                };
                                let format = format_of(it, r.meta.as_deref());
                                // The Get item this Results item answers: the same position, or
                                // the one item of a one-item Get.
                                let paired =
                                    idx.get(n).or(idx.first()).filter(|_| idx.len() == r.items.len() || idx.len() == 1);
                                if let Some(&gi) = paired
                                    && gets[gi].value.is_none()
                                {
                                    gets[gi].value = Some(it.data.clone().unwrap_or_default());
                                    gets[gi].format = format.clone();
                                }
                                if format.as_deref() == Some("node") {
                                    report.dropped.push(entry(
                                        &uri,
                                        &shorten(it.data.as_deref().unwrap_or("")),
                                        "an interior node: its listing comes from the leaves below it",
                                        &place,
                                    ));
                                    continue;
                                }
                                if uri.contains('?') {
                                    report.dropped.push(entry(
                                        &uri,
                                        "",
                                        "a query (?list=, ?prop=): its answer is computed",
                                        &place,
                                    ));
                                    continue;
                                }
                                seen.push(Seen {
                                    uri,
                                    value: it.data.clone().unwrap_or_default(),
                                    format,
                                    from: place.clone(),
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The commands of a message with Atomic and Sequence children in line.
fn flatten<'a>(cmds: &'a [Command], out: &mut Vec<&'a Command>) {
    for c in cmds {
        match c {
            Command::Atomic(a) | Command::Sequence(a) => flatten(&a.commands, out),
            other => out.push(other),
        }
    }
}

fn format_of(item: &Item, outer: Option<&crate::syncml::Meta>) -> Option<String> {
    item.meta.as_deref().and_then(|m| m.format.clone()).or_else(|| outer.and_then(|m| m.format.clone()))
}

/// The format of a leaf of a node table, `None` when the path is not a leaf of it.
fn leaf_format(root: &'static NodeSpec, rel: &str) -> Option<Format> {
    let mut spec = root;
    for seg in rel.split('/') {
        spec = spec.child(seg).filter(|c| !c.is_placeholder())?;
    }
    (!spec.is_interior()).then_some(spec.format)
}

/// Whether a DevInfo/DevDetail value fits its node's format as the template checker sees it.
fn fits_format(format: Format, value: &str) -> Result<(), String> {
    let shape = crate::device::vary::check(value).map_err(|e| e.message)?;
    match format {
        Format::Int if !(shape.integer || value.trim().parse::<i64>().is_ok()) => {
            Err(format!("not a whole number, and the node's format is int: {value:?}"))
        }
        Format::Bool if !matches!(value, "true" | "false") => {
            Err(format!("not true or false (format bool): {value:?}"))
        }
        _ => Ok(()),
    }
}

/// Why a node's value is a secret never to keep, by its name or its shape.
fn secret(segments: &[String], value: &str) -> Option<&'static str> {
    let leaf = segments.last().map(|s| s.to_ascii_lowercase()).unwrap_or_default();
    const NAMES: &[&str] = &[
        "secret",
        "password",
        "passwd",
        "token",
        "privatekey",
        "aauthdata",
        "credential",
        "pfx",
        "nonce",
        "recoverykey",
    ];
    if NAMES.iter().any(|n| leaf.contains(n)) || leaf == "pin" || leaf.ends_with("key") && !leaf.ends_with("keyboard") {
        return Some("a secret (by its name): never kept");
    }
    let v = value.trim();
    if v.contains("-----BEGIN") || (v.starts_with("MII") && v.len() > 100 && is_base64(v)) {
        return Some("a certificate or key blob: never kept");
    }
    if v.len() > 200 && is_base64(v) {
        return Some("a long opaque blob (a token or a certificate, perhaps): never kept");
    }
    None
}

fn is_base64(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\r' | b'\n' | b'-' | b'_'))
}

/// A user name, SID or thumbprint in a value replaced by a placeholder of its shape.
fn mask_value(v: &str) -> (String, Option<&'static str>) {
    match kind_of(v.trim()) {
        Some(k) => (placeholder(k, v.trim()), Some(k.why())),
        None => (v.to_string(), None),
    }
}

/// The same for the segments of a LocURI (a user SID in `./User/...` paths, a thumbprint in a
/// CertificateStore path, a UPN as an account name).
fn mask_uri(uri: &str, parsed: &NodeUri) -> (String, Option<&'static str>) {
    let mut why = None;
    let segs: Vec<String> = parsed
        .segments
        .iter()
        .map(|s| match kind_of(s) {
            Some(k) => {
                why = Some(k.why());
                placeholder(k, s)
            }
            None => s.clone(),
        })
        .collect();
    if why.is_none() {
        return (uri.to_string(), None);
    }
    let prefix = if uri.starts_with("./User/") {
        "./User/"
    } else if uri.starts_with("./Device/") {
        "./Device/"
    } else {
        "./"
    };
    let segs: Vec<String> = segs.iter().map(|s| crate::tree::encode_segment(s)).collect();
    (format!("{prefix}{}", segs.join("/")), why)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Personal {
    Email,
    Sid,
    Thumbprint,
}

impl Personal {
    fn why(self) -> &'static str {
        match self {
            Personal::Email => "a user name (UPN or email) replaced",
            Personal::Sid => "a user SID replaced",
            Personal::Thumbprint => "a certificate thumbprint replaced",
        }
    }
}

fn kind_of(v: &str) -> Option<Personal> {
    static EMAIL: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let email = EMAIL.get_or_init(|| regex::Regex::new(r"^[^@\s/]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$").expect("valid"));
    if email.is_match(v) {
        return Some(Personal::Email);
    }
    // Well-known SIDs (S-1-5-18, S-1-5-32-544) name no one; domain and Entra user SIDs do.
    if (v.starts_with("S-1-5-21-") || v.starts_with("S-1-12-1-"))
        && v[2..].bytes().all(|b| b.is_ascii_digit() || b == b'-')
    {
        return Some(Personal::Sid);
    }
    if v.len() == 40 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(Personal::Thumbprint);
    }
    None
}

/// A stand-in of the same shape, derived from the original by a one-way digest so that two
/// different originals stay different.
fn placeholder(kind: Personal, original: &str) -> String {
    let d = Sha256::digest(format!("mdmsim-mask\0{original}").as_bytes());
    let n = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    match kind {
        Personal::Email => format!("user{:04x}@contoso.example", n(0) & 0xffff),
        Personal::Sid => {
            let head = if original.starts_with("S-1-12-1-") { "S-1-12-1" } else { "S-1-5-21" };
            format!(
                "{head}-{}-{}-{}-1001",
                n(0) % 900_000_000 + 100_000_000,
                n(4) % 900_000_000 + 100_000_000,
                n(8) % 900_000_000 + 100_000_000
            )
        }
        Personal::Thumbprint => hex::encode_upper(&d[..20]),
    }
}

/// The value marked to vary across a fleet, and why, when the node is one that differs from
/// device to device.
fn vary(segments: &[String], value: &str) -> (String, Option<String>) {
    let leaf = segments.last().map(String::as_str).unwrap_or_default();
    let lower = leaf.to_ascii_lowercase();
    let v = value.trim();
    if v.is_empty() || v.contains('{') {
        return (value.to_string(), None);
    }
    let varied = if matches!(lower.as_str(), "devicename" | "dnscomputername" | "computername" | "hostname") {
        Some((host_pattern(v), "a host name"))
    } else if lower.contains("serialnumber") || lower == "serial" {
        Some((shape_pattern(v), "a serial number"))
    } else if lower == "hwdevid" {
        Some((shape_pattern(v), "a hardware ID"))
    } else if is_mac(v) && (v.contains('-') || v.contains(':') || lower.contains("mac")) {
        Some((mac_pattern(v), "a MAC address"))
    } else if lower == "totalstorage" || lower.contains("disksize") || lower.contains("storagesize") {
        v.parse::<i64>().ok().filter(|n| *n > 1).map(|n| (format!("{{int:{}..{}}}", n / 2, n + n / 2), "a disk size"))
    } else if lower.contains("installdate") || lower.contains("installtime") {
        date_pattern(v).map(|p| (p, "an install date"))
    } else {
        None
    };
    match varied {
        Some((p, why)) if p != v => (p, Some(why.to_string())),
        _ => (value.to_string(), None),
    }
}

/// `DESKTOP-28FGAI6` → `DESKTOP-{alnum:7}`: the prefix before the last `-` kept.
fn host_pattern(v: &str) -> String {
    match v.rsplit_once('-') {
        Some((head, tail)) if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("{}-{{alnum:{}}}", escape(head), tail.len().min(64))
        }
        _ => shape_pattern(v),
    }
}

/// Each run of letters and digits replaced by a pattern of its length and kind; the rest kept.
fn shape_pattern(v: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.is_empty() {
            return;
        }
        let n = run.len().min(64);
        let kind = if run.bytes().all(|b| b.is_ascii_digit()) {
            "digits"
        } else if run.bytes().all(|b| b.is_ascii_hexdigit()) && run.len() >= 8 {
            "hex"
        } else {
            "alnum"
        };
        out.push_str(&format!("{{{kind}:{n}}}"));
        run.clear();
    };
    for c in v.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push_str(&escape(&c.to_string()));
        }
    }
    flush(&mut run, &mut out);
    out
}

fn is_mac(v: &str) -> bool {
    let hex: String = v.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    let seps = v.len() - hex.len();
    hex.len() == 12
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && (seps == 5 || (seps == 0 && v.len() == 12 && hex.bytes().any(|b| b.is_ascii_alphabetic())))
        && (seps == 0 || v.chars().nth(2).is_some_and(|c| c == '-' || c == ':'))
}

/// A MAC with its maker's prefix (the first three bytes) kept and the rest varied.
fn mac_pattern(v: &str) -> String {
    let sep = v.chars().find(|c| matches!(c, '-' | ':'));
    match sep {
        Some(s) => {
            let parts: Vec<&str> = v.split(s).collect();
            let mut out: Vec<String> = parts[..3].iter().map(|p| p.to_string()).collect();
            out.extend((3..parts.len()).map(|_| "{hex:2}".to_string()));
            out.join(&s.to_string())
        }
        None => format!("{}{{hex:6}}", &v[..6]),
    }
}

/// An install date varied over the two years before it, in its own form.
fn date_pattern(v: &str) -> Option<String> {
    use chrono::{Datelike as _, NaiveDate};
    let day = NaiveDate::parse_from_str(v.get(..10)?, "%Y-%m-%d").ok()?;
    let from = day.with_year(day.year() - 2).unwrap_or(day);
    let range = format!("{}..{}", from.format("%Y-%m-%d"), day.format("%Y-%m-%d"));
    if v.len() == 10 {
        Some(format!("{{date:{range}}}"))
    } else if chrono::DateTime::parse_from_rfc3339(v).is_ok() {
        Some(format!("{{datetime:{range}}}"))
    } else {
        None
    }
}

/// Text written inside a template value: a `{` that would start a pattern doubled.
fn escape(text: &str) -> String {
    text.replace('{', "{{")
}

/// The profile and why.
fn profile_of(swv: Option<&str>, cap: &Capture) -> (Profile, String) {
    if let Some(v) = swv {
        if v.starts_with("6.3") {
            return (Profile::Win81, format!("DevDetail SwV {v}: Windows 8.1"));
        }
        if v.starts_with("10.") {
            return (Profile::Win10, format!("DevDetail SwV {v}: Windows 10 or 11"));
        }
    }
    let old = cap.messages.iter().find(|m| m.msg.hdr.ver_dtd.trim() == "1.1");
    if let Some(m) = old {
        return (Profile::Win81, format!("SyncML 1.1 (VerDTD of {}): older than Windows 10", m.place()));
    }
    let swv = match swv {
        Some(v) => format!("DevDetail SwV {v:?} is no Windows version"),
        None => "no DevDetail SwV".to_string(),
    };
    (Profile::Win10, format!("{swv}, SyncML 1.2: the default"))
}

/// `10.0.19043.2364` → `19043.2364`.
fn os_build(swv: &str) -> Option<String> {
    let parts: Vec<&str> = swv.trim().split('.').collect();
    (parts.len() >= 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then(|| parts[2..].join("."))
}

/// Creates a device from the template (its patterns expanded for the captured DeviceID) and
/// asks it every captured Get of a leaf and every Get answered 404; counts and notes the answers
/// that differ.
fn check(template: &Template, gets: &[CapturedGet], report: &mut Report, profile: Profile) {
    let id =
        report.device_id.as_deref().and_then(|d| DeviceId::parse(d).ok()).unwrap_or_else(|| DeviceId::from_seed(0));
    let full = Template::builtin(profile).overlay(template);
    let now = chrono::Utc::now();
    let mut device = Device::new(id.clone(), profile, "https://mdm.example/MDM.svc", DEFAULT_PROVIDER_ID, &full, now);
    let registry = crate::csp::registry();
    let env: Env = device.env(now);
    for g in gets {
        let want = match (g.status.as_deref(), &g.value) {
            (Some("404"), _) => "404".to_string(),
            (_, Some(v)) if g.format.as_deref() != Some("node") && !g.uri.contains('?') => v.clone(),
            _ => continue,
        };
        if g.uri.trim().ends_with("/DevInfo/DevId") && report.device_id.is_none() {
            continue;
        }
        // A varied, masked or dropped value is not the captured one, by design: not asked.
        let asked = g.uri.trim();
        let shown = NodeUri::parse(asked).map(|p| mask_uri(asked, &p).0).unwrap_or_else(|_| asked.to_string());
        if report.varied.iter().chain(&report.masked).chain(&report.dropped).any(|e| e.uri == asked || e.uri == shown) {
            continue;
        }
        let cmd =
            Command::Get(ItemCmd { cmd_id: "1".into(), items: vec![Item::target(g.uri.trim())], ..ItemCmd::default() });
        let out = Tree::new(&registry, &mut device.tree, &env).execute(&cmd);
        let got = match out.first() {
            Some(o) if o.code == StatusCode::Ok => o.results.first().and_then(|i| i.data.clone()).unwrap_or_default(),
            Some(o) => o.code.code().to_string(),
            None => "no answer".to_string(),
        };
        report.checked += 1;
        if got != want {
            report.mismatches.push(Mismatch { uri: g.uri.trim().to_string(), captured: want, device: got });
        }
    }
}

/// The template as TOML text: a header naming the capture and what was done, then the tables.
fn render(cap: &Capture, t: &Template, r: &Report) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let key = |k: &str| {
        if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            k.to_string()
        } else {
            q(k)
        }
    };
    let mut out = String::new();
    out.push_str("# A device template learnt from a capture by `mdmsim device import`.\n");
    for f in &cap.files {
        out.push_str(&format!("# Capture: {f}\n"));
    }
    out.push_str(&format!("# {} client and {} server SyncML messages.\n", r.messages.0, r.messages.1));
    out.push_str(&format!("# Profile {} ({}).\n", r.profile, r.profile_from));
    if let Some(b) = &r.os_build {
        out.push_str(&format!("# OS build {b}.\n"));
    }
    if let Some(id) = &r.device_id {
        out.push_str(&format!("# The captured DeviceID: `device new --id {id}` gives it back.\n"));
    }
    out.push_str(&format!(
        "# {} values kept, {} varied across a fleet, {} masked, {} dropped, {} unsupported.\n",
        r.kept.len(),
        r.varied.len(),
        r.masked.len(),
        r.dropped.len(),
        r.unsupported.len()
    ));
    out.push_str(&format!("profile = {}\n", q(t.profile.unwrap_or_default().as_str())));
    let comment = |uri: &str| -> String {
        r.varied
            .iter()
            .chain(&r.masked)
            .find(|e| e.uri == uri)
            .map(|e| format!("  # {}", e.why.replace('\n', " ")))
            .unwrap_or_default()
    };
    for (name, table, prefix) in [("devinfo", &t.devinfo, "./DevInfo/"), ("devdetail", &t.devdetail, "./DevDetail/")] {
        if table.is_empty() {
            continue;
        }
        out.push_str(&format!("\n[{name}]\n"));
        for (k, v) in table {
            out.push_str(&format!("{} = {}{}\n", key(k), q(v), comment(&format!("{prefix}{k}"))));
        }
    }
    if !t.nodes.is_empty() {
        out.push_str("\n[nodes]\n");
        for (k, v) in &t.nodes {
            let value = v.first().map(String::as_str).unwrap_or_default();
            out.push_str(&format!("{} = {}{}\n", q(k), q(value), comment(k)));
        }
    }
    if !t.unsupported.is_empty() {
        // A top-level key: it must come before the tables, so it is written as a table-less
        // array by moving it up.
        let list: Vec<String> = t.unsupported.iter().map(|u| q(u)).collect();
        let line = format!(
            "# Answered 404 by the device: every command on these nodes is.\nunsupported = [\n  {},\n]\n",
            list.join(",\n  ")
        );
        let at = out.find("\n[").map_or(out.len(), |i| i + 1);
        out.insert_str(at, &format!("{line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_keep_the_shape_of_what_they_vary() {
        assert_eq!(host_pattern("DESKTOP-28FGAI6"), "DESKTOP-{alnum:7}");
        assert_eq!(shape_pattern("CZC0427K7B"), "{alnum:10}");
        assert_eq!(shape_pattern("034713443553"), "{digits:12}");
        assert_eq!(mac_pattern("00-0C-29-51-60-9D"), "00-0C-29-{hex:2}-{hex:2}-{hex:2}");
        assert!(is_mac("00-0C-29-51-60-9D") && is_mac("001A2B3C4D5E") && !is_mac("123456789012"));
        assert_eq!(date_pattern("2024-11-13T02:41:07Z").as_deref(), Some("{datetime:2022-11-13..2024-11-13}"));
        assert_eq!(vary(&["TotalStorage".into()], "476940").0, "{int:238470..715410}");
        assert_eq!(vary(&["Man".into()], "HP").1, None);
    }

    #[test]
    fn secrets_are_dropped_and_personal_values_replaced_by_the_same_shape() {
        assert!(secret(&["AAuthSecret".into()], "dummy").is_some());
        assert!(secret(&["EncodedCertificate".into()], &format!("MII{}", "A".repeat(200))).is_some());
        assert!(secret(&["Mod".into()], "VMware7,1").is_none());
        let (v, why) = mask_value("jane.doe@contoso.com");
        assert!(v.ends_with("@contoso.example") && why.is_some(), "{v}");
        let (v, _) = mask_value("S-1-5-21-3623811015-3361044348-30300820-1013");
        assert!(v.starts_with("S-1-5-21-") && v.ends_with("-1001") && !v.contains("3623811015"), "{v}");
        assert_eq!(mask_value("S-1-5-18").1, None, "well-known SIDs name no one");
        let uri = "./User/Vendor/MSFT/CertificateStore/My/User/D9A88E04AF18A4D399CEE62F2C71469C3AE1E675/Thumbprint";
        let (masked, why) = mask_uri(uri, &NodeUri::parse(uri).unwrap());
        assert!(why.is_some() && !masked.contains("D9A88E04"), "{masked}");
        assert_eq!(os_build("10.0.19043.2364").as_deref(), Some("19043.2364"));
    }
}
