//! Configuration profiles, the way Windows MDM servers deliver and check them (Fleet's
//! `buildCommandFromProfileBytes` in `server/mdm/microsoft/microsoft_mdm.go` and its profile
//! verifier, `server/mdm/microsoft/profile_verifier.go`):
//!
//! 1. In a Maintenance session the profile goes once, as one `<Atomic>` holding a `<Replace>`
//!    per setting (an `<Add>` where a profile file says so), each with its own CmdID.
//! 2. The Atomic's Status decides delivery: 2xx is *delivered*; anything else is *failed*, with
//!    the Atomic's code and each command's (`LocURI: status 216`, as Fleet words its detail).
//!    An `<Add>` that got 418 (the node exists) is sent again as `<Replace>`, as Fleet does.
//! 3. In a *later* Maintenance session the server sends a `<Get>` for every LocURI and compares
//!    each Results value with what it sent: all equal is *verified*; otherwise the profile is
//!    sent again (`management.profile_retries` times, Fleet's `MaxProfileRetries` is 1) and then
//!    *failed verification*, naming each LocURI and the value found.
//!
//! A device whose OS (enrollment `OSVersion`, or `./DevDetail/SwV` read back) is older than the
//! profile's `min_os_version` (10.0 by default: the Policy CSP came with Windows 10) does not
//! get it: *not applicable*. An unknown OS gets it.
//!
//! Owns the profile plans (from the config's settings or a profile file in Fleet's format: a
//! SyncML fragment of `<Replace>`/`<Add>` commands) and the per-device state machine. It does
//! not own the session (`mgmt.rs` calls in with the commands' Statuses and Results) nor HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::config::Config;
use super::records::{ProfileRecord, ProfileSettingRecord, ProfileState};
use crate::syncml::{self, Command, Container, Item, ItemCmd, Meta, StatusCode};

/// The OS a profile needs unless its config says otherwise.
pub const DEFAULT_MIN_OS: &str = "10.0";

/// A profile as the server delivers it: the config entry with its settings resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfilePlan {
    pub name: String,
    pub settings: Vec<PlannedSetting>,
    pub min_os_version: String,
}

/// One setting of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSetting {
    /// `<Add>` instead of `<Replace>` (only from a profile file).
    pub add: bool,
    pub loc_uri: String,
    /// Meta Format and Type, as given.
    pub format: Option<String>,
    pub type_: Option<String>,
    /// The value sent, and expected back.
    pub data: String,
}

/// A profile that cannot be used, naming the profile, the file and the place.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profiles[{index}] {name:?}: file {file}: {source}")]
    Read { index: usize, name: String, file: String, source: std::io::Error },
    #[error("profiles[{index}] {name:?}: file {file}, line {line}, column {column}: {problem}")]
    Malformed { index: usize, name: String, file: String, line: usize, column: usize, problem: String },
    #[error("profiles[{index}] {name:?}: file {file}: {problem}")]
    Invalid { index: usize, name: String, file: String, problem: String },
}

/// The profiles of a config, profile files read (relative to the config file's folder).
pub fn build(config: &Config) -> Result<Vec<ProfilePlan>, ProfileError> {
    let mut out = Vec::new();
    for (index, p) in config.profiles.iter().enumerate() {
        let settings = match &p.file {
            Some(file) => {
                let path: PathBuf = match &config.base_dir {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.clone(),
                };
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|source| ProfileError::Read {
                    index,
                    name: p.name.clone(),
                    file: shown.clone(),
                    source,
                })?;
                parse_fragment(&text).map_err(|e| match e {
                    FragmentError::At { line, column, problem } => ProfileError::Malformed {
                        index,
                        name: p.name.clone(),
                        file: shown.clone(),
                        line,
                        column,
                        problem,
                    },
                    FragmentError::Invalid(problem) => {
                        ProfileError::Invalid { index, name: p.name.clone(), file: shown.clone(), problem }
                    }
                })?
            }
            None => p
                .settings
                .iter()
                .map(|s| PlannedSetting {
                    add: false,
                    loc_uri: s.loc_uri.clone(),
                    format: Some(s.format.clone().unwrap_or_else(|| s.data.format().to_string())),
                    type_: None,
                    data: s.data.text(),
                })
                .collect(),
        };
        out.push(ProfilePlan {
            name: p.name.clone(),
            settings,
            min_os_version: p.min_os_version.clone().unwrap_or_else(|| DEFAULT_MIN_OS.to_string()),
        });
    }
    Ok(out)
}

/// Why a profile file's fragment cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragmentError {
    /// Not SyncML: where (in the file) and what.
    At { line: usize, column: usize, problem: String },
    /// SyncML, but not a profile.
    Invalid(String),
}

/// Reads a profile in Fleet's format: `<Replace>` and `<Add>` commands one after the other, no
/// root element, CmdIDs optional. Each Item becomes one setting.
pub fn parse_fragment(text: &str) -> Result<Vec<PlannedSetting>, FragmentError> {
    // The codec reads whole messages: put the fragment in one, starting on its own line so that
    // line numbers stay the file's.
    const HEAD: &str = "<SyncML><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID>\
        <MsgID>1</MsgID><Target><LocURI>profile</LocURI></Target><Source><LocURI>profile</LocURI></Source>\
        </SyncHdr><SyncBody>\n";
    let wrapped = format!("{HEAD}{}\n</SyncBody></SyncML>", text.trim_start_matches('\u{feff}'));
    let msg = syncml::decode(&wrapped).map_err(|e| {
        let offset = e.offset().saturating_sub(HEAD.len()).min(text.len());
        let (line, column) = syncml::line_col(text, offset);
        FragmentError::At { line, column, problem: e.to_string() }
    })?;
    let mut out: Vec<PlannedSetting> = Vec::new();
    for (n, cmd) in msg.body.commands.iter().enumerate() {
        let (add, c) = match cmd {
            Command::Replace(c) => (false, c),
            Command::Add(c) => (true, c),
            other => {
                return Err(FragmentError::Invalid(format!(
                    "command {} is a <{}>; a profile holds <Replace> and <Add> commands only",
                    n + 1,
                    other.name()
                )));
            }
        };
        if c.items.is_empty() {
            return Err(FragmentError::Invalid(format!("command {} (<{}>) has no <Item>", n + 1, cmd.name())));
        }
        for item in &c.items {
            let Some(uri) = item.target.clone().filter(|u| u.starts_with("./")) else {
                return Err(FragmentError::Invalid(format!(
                    "command {} (<{}>): an Item without a Target LocURI starting with \"./\"",
                    n + 1,
                    cmd.name()
                )));
            };
            if out.iter().any(|s| s.loc_uri == uri) {
                return Err(FragmentError::Invalid(format!("{uri} appears twice")));
            }
            let meta = |f: fn(&Meta) -> &Option<String>| {
                item.meta.as_ref().and_then(|m| f(m).clone()).or_else(|| c.meta.as_ref().and_then(|m| f(m).clone()))
            };
            out.push(PlannedSetting {
                add,
                loc_uri: uri,
                format: meta(|m| &m.format),
                type_: meta(|m| &m.type_),
                data: item.data.clone().unwrap_or_default(),
            });
        }
    }
    if out.is_empty() {
        return Err(FragmentError::Invalid("no <Replace> or <Add> command".into()));
    }
    Ok(out)
}

/// What a CmdID sent for a profile was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileCmd {
    /// The `<Atomic>` itself.
    Atomic,
    /// A `<Replace>`/`<Add>` inside it.
    Write { uri: String },
    /// A verification `<Get>`.
    Verify { uri: String },
}

impl ProfileCmd {
    /// The LocURI the command is about (none for the Atomic).
    pub fn uri(&self) -> Option<&str> {
        match self {
            ProfileCmd::Atomic => None,
            ProfileCmd::Write { uri } | ProfileCmd::Verify { uri } => Some(uri),
        }
    }
}

/// The server's working state of one profile on one device (the record is the outcome).
#[derive(Debug, Clone, Default)]
pub struct ProfileTrack {
    /// The Status of this session's Atomic, and of each command in it by LocURI.
    atomic: Option<u16>,
    writes: BTreeMap<String, u16>,
    /// Settings this device gets as `<Replace>` although the profile says `<Add>` (418 seen).
    as_replace: BTreeSet<String>,
    /// This session's verification Gets: LocURI -> (Status, Results data).
    gets: BTreeMap<String, (Option<u16>, Option<String>)>,
}

/// A fresh record: pending, every setting with its expected value.
pub fn new_record(plan: &ProfilePlan) -> ProfileRecord {
    ProfileRecord {
        state: ProfileState::Pending,
        detail: None,
        attempts: 0,
        retries: 0,
        delivered_at: None,
        verified_at: None,
        settings: plan
            .settings
            .iter()
            .map(|s| ProfileSettingRecord {
                loc_uri: s.loc_uri.clone(),
                expected: s.data.clone(),
                delivery_status: None,
                get_status: None,
                found: None,
            })
            .collect(),
    }
}

/// A session starts: an Atomic whose Status never came goes again; verification Gets that
/// were not all answered are sent again (the profile is still delivered).
pub fn start_session(track: &mut ProfileTrack, rec: &mut ProfileRecord) {
    if rec.state == ProfileState::Sent {
        rec.state = ProfileState::Pending;
    }
    track.atomic = None;
    track.writes.clear();
    track.gets.clear();
}

/// The profile's commands for a Maintenance session's reply: the Atomic when pending, the
/// verification Gets when delivered (in a session after the one that delivered it), else none.
/// `os` is the OS version the device reported, if known. Each CmdID given is pushed to `sent`.
pub fn plan(
    track: &mut ProfileTrack,
    rec: &mut ProfileRecord,
    plan: &ProfilePlan,
    os: Option<&str>,
    next_id: &mut dyn FnMut() -> String,
    sent: &mut Vec<(String, ProfileCmd)>,
) -> Vec<Command> {
    match rec.state {
        ProfileState::Pending => {
            if os.is_some_and(|v| older(v, &plan.min_os_version)) {
                rec.state = ProfileState::NotApplicable;
                rec.detail = Some(format!(
                    "the device reports OS {}, the profile needs {} or later",
                    os.unwrap_or_default(),
                    plan.min_os_version
                ));
                return Vec::new();
            }
            let atomic_id = next_id();
            sent.push((atomic_id.clone(), ProfileCmd::Atomic));
            let mut commands = Vec::new();
            for s in &plan.settings {
                let id = next_id();
                sent.push((id.clone(), ProfileCmd::Write { uri: s.loc_uri.clone() }));
                let meta = Meta { format: s.format.clone(), type_: s.type_.clone(), ..Meta::default() };
                let item = Item {
                    target: Some(s.loc_uri.clone()),
                    meta: (!meta.is_empty()).then_some(Box::new(meta)),
                    data: Some(s.data.clone()),
                    ..Item::default()
                };
                let c = ItemCmd { cmd_id: id, items: vec![item], ..ItemCmd::default() };
                commands.push(if s.add && !track.as_replace.contains(&s.loc_uri) {
                    Command::Add(c)
                } else {
                    Command::Replace(c)
                });
            }
            rec.state = ProfileState::Sent;
            rec.attempts += 1;
            vec![Command::Atomic(Container { cmd_id: atomic_id, commands, ..Container::default() })]
        }
        ProfileState::Delivered => plan
            .settings
            .iter()
            .map(|s| {
                let id = next_id();
                sent.push((id.clone(), ProfileCmd::Verify { uri: s.loc_uri.clone() }));
                track.gets.insert(s.loc_uri.clone(), (None, None));
                Command::Get(ItemCmd { cmd_id: id, items: vec![Item::target(&s.loc_uri)], ..ItemCmd::default() })
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The device's Status for one of the profile's commands.
pub fn on_status(track: &mut ProfileTrack, cmd: &ProfileCmd, code: u16) {
    match cmd {
        ProfileCmd::Atomic => track.atomic = Some(code),
        ProfileCmd::Write { uri } => {
            track.writes.insert(uri.clone(), code);
        }
        ProfileCmd::Verify { uri } => {
            if let Some(g) = track.gets.get_mut(uri) {
                g.0 = Some(code);
            }
        }
    }
}

/// The device's Results for a verification Get (large objects already joined).
pub fn on_result(track: &mut ProfileTrack, cmd: &ProfileCmd, data: &str) {
    if let ProfileCmd::Verify { uri } = cmd
        && let Some(g) = track.gets.get_mut(uri)
    {
        g.1 = Some(data.to_string());
    }
}

/// After each device message: turns the Statuses and Results gathered so far into the
/// profile's next state (delivered, failed, verified, sent again, failed verification).
pub fn settle(track: &mut ProfileTrack, rec: &mut ProfileRecord, plan: &ProfilePlan, retries: u32, now: DateTime<Utc>) {
    if let Some(code) = track.atomic.take() {
        let writes = std::mem::take(&mut track.writes);
        for s in rec.settings.iter_mut() {
            s.delivery_status = writes.get(&s.loc_uri).copied();
        }
        if StatusCode::from_code(code).is_success() {
            rec.state = ProfileState::Delivered;
            rec.delivered_at = Some(now);
        } else {
            // An Add of a node that exists: the device gets a Replace for it (Fleet re-issues
            // these as Replace, `handleResendingAlreadyExistsCommands`).
            let exists: Vec<&String> = plan
                .settings
                .iter()
                .filter(|s| s.add && !track.as_replace.contains(&s.loc_uri))
                .map(|s| &s.loc_uri)
                .filter(|u| writes.get(*u) == Some(&StatusCode::AlreadyExists.code()))
                .collect();
            if !exists.is_empty() {
                track.as_replace.extend(exists.into_iter().cloned());
                rec.state = ProfileState::Pending;
                return;
            }
            let each: Vec<String> = plan
                .settings
                .iter()
                .map(|s| match writes.get(&s.loc_uri) {
                    Some(c) => format!("{}: status {c}", s.loc_uri),
                    None => format!("{}: no status", s.loc_uri),
                })
                .collect();
            rec.state = ProfileState::Failed;
            rec.detail = Some(format!("Atomic status {code}; {}", each.join(", ")));
        }
    }
    if rec.state != ProfileState::Delivered || track.gets.is_empty() {
        return;
    }
    // Every Get answered, and every successful one with its Results.
    let complete = track.gets.values().all(|(st, data)| {
        st.is_some_and(|c| !StatusCode::from_code(c).is_success()) || (st.is_some() && data.is_some())
    });
    if !complete {
        return;
    }
    let gets = std::mem::take(&mut track.gets);
    let mut differences = Vec::new();
    for s in rec.settings.iter_mut() {
        let Some((status, found)) = gets.get(&s.loc_uri) else { continue };
        s.get_status = *status;
        s.found = found.clone();
        let ok = status.is_some_and(|c| StatusCode::from_code(c).is_success());
        match found {
            Some(v) if ok && v.trim() == s.expected.trim() => {}
            Some(v) if ok => differences.push(format!("{}: expected {:?}, found {:?}", s.loc_uri, s.expected, v)),
            _ => differences.push(format!(
                "{}: expected {:?}, found nothing (Get status {})",
                s.loc_uri,
                s.expected,
                status.unwrap_or_default()
            )),
        }
    }
    if differences.is_empty() {
        rec.state = ProfileState::Verified;
        rec.verified_at = Some(now);
        rec.detail = None;
    } else if rec.retries < retries {
        rec.retries += 1;
        rec.state = ProfileState::Pending;
        rec.detail = Some(format!("sent again after verification found: {}", differences.join(", ")));
    } else {
        rec.state = ProfileState::FailedVerification;
        rec.detail = Some(differences.join(", "));
    }
}

/// Whether dotted version `have` is older than `need` (missing parts count as 0; a part that
/// is not a number compares as 0).
pub fn older(have: &str, need: &str) -> bool {
    let parts = |v: &str| v.trim().split('.').map(|p| p.trim().parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
    let (mut a, mut b) = (parts(have), parts(need));
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    a < b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(settings: &[(&str, &str)]) -> ProfilePlan {
        ProfilePlan {
            name: "P".into(),
            settings: settings
                .iter()
                .map(|(u, d)| PlannedSetting {
                    add: false,
                    loc_uri: u.to_string(),
                    format: Some("int".into()),
                    type_: None,
                    data: d.to_string(),
                })
                .collect(),
            min_os_version: DEFAULT_MIN_OS.into(),
        }
    }

    #[test]
    fn fleet_profile_files_parse_and_errors_point_into_the_file() {
        let text = r#"<Replace>
  <Item>
    <Meta><Format xmlns="syncml:metinf">int</Format></Meta>
    <Target><LocURI>./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera</LocURI></Target>
    <Data>0</Data>
  </Item>
</Replace>
<Add><CmdID>2</CmdID><Meta><Format xmlns="syncml:metinf">chr</Format></Meta>
  <Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/Browser/HomePages</LocURI></Target><Data>&lt;https://a&gt;</Data></Item>
</Add>"#;
        let s = parse_fragment(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].add, s[0].format.as_deref(), s[0].data.as_str()), (false, Some("int"), "0"));
        assert_eq!((s[1].add, s[1].format.as_deref(), s[1].data.as_str()), (true, Some("chr"), "<https://a>"));
        let e = parse_fragment("<Replace>\n  <Item><Target></Item>\n</Replace>").unwrap_err();
        assert!(matches!(&e, FragmentError::At { line: 2, .. }), "{e:?}");
        let e = parse_fragment("<Delete><Item><Target><LocURI>./X</LocURI></Target></Item></Delete>").unwrap_err();
        assert_eq!(
            e,
            FragmentError::Invalid("command 1 is a <Delete>; a profile holds <Replace> and <Add> commands only".into())
        );
        assert!(matches!(parse_fragment("  "), Err(FragmentError::Invalid(_))));
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(older("6.3.9600.17031", "10.0"));
        assert!(!older("10.0.19045.5131", "10.0"));
        assert!(older("10.0.10240", "10.0.10586"));
        assert!(!older("10.0", "10.0.0"));
    }

    #[test]
    fn delivery_then_verification_in_a_later_session() {
        let p = plan_of(&[("./A", "0"), ("./B", "9")]);
        let (mut track, mut rec) = (ProfileTrack::default(), new_record(&p));
        let mut n = 0;
        let mut ids = || {
            n += 1;
            n.to_string()
        };
        let mut sent = Vec::new();
        let cmds = plan(&mut track, &mut rec, &p, Some("10.0.19045"), &mut ids, &mut sent);
        assert!(matches!(&cmds[..], [Command::Atomic(a)] if a.commands.len() == 2));
        for (_, c) in &sent {
            on_status(&mut track, c, 200);
        }
        settle(&mut track, &mut rec, &p, 1, Utc::now());
        assert_eq!(rec.state, ProfileState::Delivered);
        start_session(&mut track, &mut rec);
        sent.clear();
        let gets = plan(&mut track, &mut rec, &p, None, &mut ids, &mut sent);
        assert_eq!(gets.len(), 2);
        for (_, c) in &sent {
            on_status(&mut track, c, 200);
            on_result(&mut track, c, if c.uri() == Some("./A") { "0" } else { "10" });
        }
        settle(&mut track, &mut rec, &p, 0, Utc::now());
        assert_eq!(rec.state, ProfileState::FailedVerification);
        assert_eq!(rec.detail.as_deref(), Some(r#"./B: expected "9", found "10""#));
    }
}
