//! MSI installs through the EnterpriseDesktopAppManagement CSP, the way Fleet installs its
//! agent (`enqueueInstallFleetdCommand` in Fleet's `server/service/microsoft_mdm.go`) and
//! Microsoft's EnterpriseDesktopAppManagement CSP page describes it:
//!
//! 1. In a Maintenance session, one message carries `<Add>` of
//!    `./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7B<GUID>%7D/DownloadInstall`
//!    (no Data: it only creates the node) and `<Exec>` on it with Meta Format `xml`, Type
//!    `text/plain` and the `MsiInstallJob` as Data: `ContentURL` = the package this server serves
//!    at `/packages/<name>`, `FileHash` = its SHA-256 in upper-case hex, the `Enforcement`
//!    values of the config. Both are top-level commands, Add first, as Fleet sends them. A 418
//!    on the Add (the node is there from an earlier job) changes nothing: the Exec goes anyway.
//! 2. A refused Exec is sent again up to `management.max_attempts` times, then failed.
//! 3. The outcome comes two ways, whichever is first: the device's alert 1224 (or 1226) with
//!    Meta Type `Reversed-Domain-Name:com.microsoft.mdm.win32csp_install`, Source
//!    `.../MSI/<GUID>/DownloadInstall` and Data 0 for success or the error (the CSP page's
//!    alert example), usually in package 1 of a later session; and `<Get>` of
//!    `.../MSI/%7B<GUID>%7D/Status` and `LastError` in every later Maintenance session until
//!    Status is 70 (Enforcement Completed: installed) or 30 / 60 (Download / Enforcement
//!    Failed: failed, with LastError), at most `management.max_status_polls` times.
//!
//! A device whose OS is older than the MSI's `min_os_version` (10.0.10586 by default, where
//! the CSP page starts) does not get the install: not applicable.
//!
//! Owns the job XML and the per-device state machine. It does not own the session (`mgmt.rs`
//! calls in) nor serving the package (`mod.rs`).

use crate::syncml::{Command, Item, ItemCmd, Meta, StatusCode};

use super::profiles::older;
use super::records::{MsiRecord, MsiState};
use super::xml::esc;

/// The Meta Type of the install result alert (the CSP page's alert example).
pub const INSTALL_ALERT: &str = "Reversed-Domain-Name:com.microsoft.mdm.win32csp_install";
/// The OS an MSI install needs unless its config says otherwise (Windows 10 1511).
pub const DEFAULT_MIN_OS: &str = "10.0.10586";

/// An MSI as the server plans it: the config entry plus where and what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsiPlan {
    pub name: String,
    /// `{GUID}` with braces.
    pub product_id: String,
    pub version: String,
    pub url: String,
    pub size: usize,
    /// Lower-case hex SHA-256 of the package (the job carries it upper-case).
    pub sha256: String,
    pub command_line: String,
    pub timeout_minutes: u32,
    pub retry_count: u32,
    pub retry_interval_minutes: u32,
    pub min_os_version: String,
}

/// `./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7B<GUID>%7D` for a `{GUID}`.
pub fn node(product_id: &str) -> String {
    format!(
        "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{}",
        product_id.replace('{', "%7B").replace('}', "%7D")
    )
}

impl MsiPlan {
    /// The product's node, `./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7B<GUID>%7D`.
    pub fn node(&self) -> String {
        node(&self.product_id)
    }

    /// The `MsiInstallJob` the Exec carries (the CSP page's DownloadInstall schema).
    pub fn job_xml(&self) -> String {
        format!(
            "<MsiInstallJob id=\"{id}\"><Product Version=\"{version}\"><Download><ContentURLList>\
             <ContentURL>{url}</ContentURL></ContentURLList></Download><Validation>\
             <FileHash>{hash}</FileHash></Validation><Enforcement><CommandLine>{cmd}</CommandLine>\
             <TimeOut>{timeout}</TimeOut><RetryCount>{retries}</RetryCount>\
             <RetryInterval>{interval}</RetryInterval></Enforcement></Product></MsiInstallJob>",
            id = esc(&self.product_id),
            version = esc(&self.version),
            url = esc(&self.url),
            hash = self.sha256.to_ascii_uppercase(),
            cmd = esc(&self.command_line),
            timeout = self.timeout_minutes,
            retries = self.retry_count,
            interval = self.retry_interval_minutes,
        )
    }

    /// Whether a LocURI (an alert's Source) is this product's `DownloadInstall`, its GUID
    /// escaped or not, in any case, in either scope.
    pub fn is_download_install(&self, uri: &str) -> bool {
        let decoded = uri.replace("%7B", "{").replace("%7b", "{").replace("%7D", "}").replace("%7d", "}");
        let Some((_, rest)) = decoded.split_once("/EnterpriseDesktopAppManagement/MSI/") else { return false };
        let mut segs = rest.split('/');
        let id = segs.next().unwrap_or_default();
        id.trim_start_matches('{')
            .trim_end_matches('}')
            .eq_ignore_ascii_case(self.product_id.trim_start_matches('{').trim_end_matches('}'))
            && segs.next().is_none_or(|leaf| leaf == "DownloadInstall")
    }
}

/// What a CmdID sent for an MSI was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsiCmd {
    Add {
        uri: String,
    },
    Exec {
        uri: String,
    },
    /// A `Get` of `Status` or of `LastError`.
    Status {
        uri: String,
    },
    LastError {
        uri: String,
    },
}

impl MsiCmd {
    /// The LocURI the command is about.
    pub fn uri(&self) -> &str {
        match self {
            MsiCmd::Add { uri } | MsiCmd::Exec { uri } | MsiCmd::Status { uri } | MsiCmd::LastError { uri } => uri,
        }
    }
}

/// The server's working state of one MSI on one device (the record is the outcome).
#[derive(Debug, Clone, Default)]
pub struct MsiTrack {
    /// Statuses of this session's Add and Exec.
    add: Option<u16>,
    exec: Option<u16>,
    /// This session's poll: the Status Get's code and value, LastError's value.
    status: Option<(u16, Option<String>)>,
    last_error: Option<String>,
}

/// A fresh record: pending.
pub fn new_record(plan: &MsiPlan) -> MsiRecord {
    MsiRecord {
        product_id: plan.product_id.clone(),
        version: plan.version.clone(),
        url: plan.url.clone(),
        size: plan.size,
        sha256: plan.sha256.clone(),
        state: MsiState::Pending,
        attempts: 0,
        add_status: None,
        exec_status: None,
        alert: None,
        polls: 0,
        last_status: None,
        last_error: None,
    }
}

/// A session starts: an Add/Exec whose Statuses never came goes again.
pub fn start_session(track: &mut MsiTrack, rec: &mut MsiRecord) {
    if rec.state == MsiState::Sent {
        rec.state = MsiState::Pending;
    }
    *track = MsiTrack::default();
}

/// The MSI's commands for a Maintenance session's reply: Add + Exec when pending, the Status
/// and LastError reads while in progress, else none. `os` is the OS version the device
/// reported, if known. Each CmdID given is pushed to `sent`.
pub fn plan(
    rec: &mut MsiRecord,
    plan: &MsiPlan,
    os: Option<&str>,
    max_polls: u32,
    next_id: &mut dyn FnMut() -> String,
    sent: &mut Vec<(String, MsiCmd)>,
) -> Vec<Command> {
    let node = plan.node();
    match rec.state {
        MsiState::Pending => {
            if os.is_some_and(|v| older(v, &plan.min_os_version)) {
                rec.state = MsiState::NotApplicable;
                return Vec::new();
            }
            let uri = format!("{node}/DownloadInstall");
            let (add_id, exec_id) = (next_id(), next_id());
            sent.push((add_id.clone(), MsiCmd::Add { uri: uri.clone() }));
            sent.push((exec_id.clone(), MsiCmd::Exec { uri: uri.clone() }));
            rec.state = MsiState::Sent;
            rec.attempts += 1;
            let add = ItemCmd { cmd_id: add_id, items: vec![Item::target(&uri)], ..ItemCmd::default() };
            let job = Item {
                target: Some(uri),
                meta: Some(Box::new(Meta::typed("text/plain", Some("xml")))),
                data: Some(plan.job_xml()),
                ..Item::default()
            };
            let exec = ItemCmd { cmd_id: exec_id, items: vec![job], ..ItemCmd::default() };
            vec![Command::Add(add), Command::Exec(exec)]
        }
        MsiState::InProgress if rec.polls >= max_polls => {
            let last = rec.last_status.as_deref().unwrap_or("none");
            rec.state = MsiState::Failed(format!(
                "no install alert and no final Status after {} polls (last Status: {last})",
                rec.polls
            ));
            Vec::new()
        }
        MsiState::InProgress => {
            rec.polls += 1;
            let mut cmds = Vec::new();
            for leaf in ["Status", "LastError"] {
                let uri = format!("{node}/{leaf}");
                let id = next_id();
                let cmd = if leaf == "Status" {
                    MsiCmd::Status { uri: uri.clone() }
                } else {
                    MsiCmd::LastError { uri: uri.clone() }
                };
                sent.push((id.clone(), cmd));
                cmds.push(Command::Get(ItemCmd { cmd_id: id, items: vec![Item::target(&uri)], ..ItemCmd::default() }));
            }
            cmds
        }
        _ => Vec::new(),
    }
}

/// The device's Status for one of the MSI's commands.
pub fn on_status(track: &mut MsiTrack, rec: &mut MsiRecord, cmd: &MsiCmd, code: u16) {
    match cmd {
        MsiCmd::Add { .. } => {
            track.add = Some(code);
            rec.add_status = Some(code);
        }
        MsiCmd::Exec { .. } => {
            track.exec = Some(code);
            rec.exec_status = Some(code);
        }
        MsiCmd::Status { .. } => track.status = Some((code, None)),
        MsiCmd::LastError { .. } => {}
    }
}

/// The device's Results for a Status or LastError read.
pub fn on_result(track: &mut MsiTrack, cmd: &MsiCmd, data: &str) {
    match cmd {
        MsiCmd::Status { .. } => {
            let code = track.status.as_ref().map_or(200, |(c, _)| *c);
            track.status = Some((code, Some(data.trim().to_string())));
        }
        MsiCmd::LastError { .. } => track.last_error = Some(data.trim().to_string()),
        MsiCmd::Add { .. } | MsiCmd::Exec { .. } => {}
    }
}

/// The install result alert for this MSI (`Data` 0 = installed, else the error).
pub fn on_alert(rec: &mut MsiRecord, data: Option<&str>) {
    let data = data.unwrap_or_default().trim().to_string();
    if rec.state == MsiState::NotApplicable {
        return;
    }
    rec.state =
        if data == "0" { MsiState::Installed } else { MsiState::Failed(format!("install alert: {}", hresult(&data))) };
    rec.alert = Some(data);
}

/// After each device message: the Exec's Status and the poll's values decide the next state.
pub fn settle(track: &mut MsiTrack, rec: &mut MsiRecord, max_attempts: u32) {
    if let Some(code) = track.exec.take() {
        let add = track.add.take();
        if rec.state == MsiState::Sent {
            rec.state = if StatusCode::from_code(code).is_success() {
                MsiState::InProgress
            } else if rec.attempts >= max_attempts.max(1) {
                let add = add.map_or("no status".to_string(), |c| c.to_string());
                MsiState::Failed(format!("Exec of DownloadInstall refused: {code} (Add: {add})"))
            } else {
                MsiState::Pending
            };
        }
    }
    let Some((code, value)) = track.status.take() else { return };
    let last_error = track.last_error.take();
    if last_error.is_some() {
        rec.last_error = last_error.clone();
    }
    if !StatusCode::from_code(code).is_success() {
        rec.last_status = Some(format!("Get {code}"));
        return;
    }
    let Some(value) = value else { return };
    rec.last_status = Some(value.clone());
    if rec.state != MsiState::InProgress {
        return;
    }
    let error = || last_error.as_deref().map_or("none".to_string(), hresult);
    rec.state = match value.as_str() {
        "70" => MsiState::Installed,
        "30" => MsiState::Failed(format!("Status 30 (Download Failed), LastError {}", error())),
        "60" => MsiState::Failed(format!("Status 60 (Enforcement Failed), LastError {}", error())),
        _ => MsiState::InProgress,
    };
}

/// An error code as the device gave it, with its HRESULT form when it is a number
/// (`-2147023293` -> `-2147023293 (0x80070643)`).
fn hresult(text: &str) -> String {
    match text.trim().parse::<i64>() {
        Ok(n) if n != 0 => format!("{n} (0x{:08X})", n as u32),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_() -> MsiPlan {
        MsiPlan {
            name: "fleetd".into(),
            product_id: "{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}".into(),
            version: "1.0.0.0".into(),
            url: "https://127.0.0.1:1/packages/fleetd?a=1&b=2".into(),
            size: 3,
            sha256: "ab01".into(),
            command_line: "/quiet".into(),
            timeout_minutes: 10,
            retry_count: 3,
            retry_interval_minutes: 5,
            min_os_version: DEFAULT_MIN_OS.into(),
        }
    }

    #[test]
    fn the_job_names_the_package_its_hash_and_the_enforcement() {
        let job = plan_().job_xml();
        assert!(
            job.starts_with(
                r#"<MsiInstallJob id="{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}"><Product Version="1.0.0.0">"#
            )
        );
        assert!(job.contains("<ContentURL>https://127.0.0.1:1/packages/fleetd?a=1&amp;b=2</ContentURL>"), "{job}");
        assert!(job.contains("<FileHash>AB01</FileHash>"));
        assert!(job.contains("<CommandLine>/quiet</CommandLine><TimeOut>10</TimeOut><RetryCount>3</RetryCount><RetryInterval>5</RetryInterval>"));
    }

    #[test]
    fn alert_sources_match_the_product_in_any_spelling() {
        let p = plan_();
        assert!(p.is_download_install(
            "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{a427c0aa-e2d5-40df-ace8-0d726a6be096}/DownloadInstall"
        ));
        assert!(p.is_download_install(
            "./Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7BA427C0AA-E2D5-40DF-ACE8-0D726A6BE096%7D/DownloadInstall"
        ));
        assert!(!p.is_download_install("./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{AF9257BA-6BBD-4624-AA9B-0182D50292C3}/DownloadInstall"));
    }

    #[test]
    fn status_60_fails_with_last_error_and_a_refused_exec_is_retried() {
        let p = plan_();
        let (mut t, mut rec) = (MsiTrack::default(), new_record(&p));
        let mut n = 0;
        let mut ids = || {
            n += 1;
            n.to_string()
        };
        let mut sent = Vec::new();
        assert_eq!(plan(&mut rec, &p, None, 5, &mut ids, &mut sent).len(), 2);
        on_status(&mut t, &mut rec, &sent[0].1, 418);
        on_status(&mut t, &mut rec, &sent[1].1, 500);
        settle(&mut t, &mut rec, 2);
        assert_eq!(rec.state, MsiState::Pending, "one refusal of two allowed");
        sent.clear();
        plan(&mut rec, &p, None, 5, &mut ids, &mut sent);
        on_status(&mut t, &mut rec, &sent[1].1, 200);
        settle(&mut t, &mut rec, 2);
        assert_eq!(rec.state, MsiState::InProgress);
        sent.clear();
        plan(&mut rec, &p, None, 5, &mut ids, &mut sent);
        on_status(&mut t, &mut rec, &sent[0].1, 200);
        on_result(&mut t, &sent[0].1, "60");
        on_status(&mut t, &mut rec, &sent[1].1, 200);
        on_result(&mut t, &sent[1].1, "-2147023293");
        settle(&mut t, &mut rec, 2);
        assert_eq!(
            rec.state,
            MsiState::Failed("Status 60 (Enforcement Failed), LastError -2147023293 (0x80070643)".into())
        );
    }
}
