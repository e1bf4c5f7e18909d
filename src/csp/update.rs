//! The Update CSP (`./Vendor/MSFT/Update`, Microsoft's Update CSP page): update approvals and
//! what became of them. Microsoft publishes no DDF file for it, so its nodes are the page's
//! tree, written here as facts ([`FACTS`], `ddf_csp` adds them to the table).
//!
//! A simple, timer-driven model of Windows Update:
//! - `Add ApprovedUpdates/<GUID>` approves an update (the GUID with or without braces; anything
//!   else is 400); `ApprovedUpdates/<GUID>/ApprovedTime` is the server's to add.
//! - [`INSTALL_DELAY`] after the approval the update is installed and waits for a restart: it
//!   leaves `InstallableUpdates` and appears in `PendingRebootUpdates/<GUID>` with
//!   `InstalledTime` and `RevisionNumber` (the installable entry's, else 1).
//! - The next restart of the device (Reboot CSP `RebootNow` or a reboot schedule) completes it:
//!   it moves to `InstalledUpdates/<GUID>`.
//! - When the device lists installable updates (the template's `[nodes]`) and the approved GUID
//!   is not one of them, the install fails instead: `FailedUpdates/<GUID>` with `HResult`
//!   -2145124329 (0x80240017, WU_E_NOT_APPLICABLE), `State` 4 (failed at installation) and
//!   `RevisionNumber` 1.
//!
//! `LastSuccessfulScanTime` reads the template's value, else the time of the last install.
//! Updates the template lists under `InstalledUpdates`, `PendingRebootUpdates` or `FailedUpdates`
//! are there from the start. Bookkeeping lives under `@Update/<GUID>` outside the CSP root.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use super::ddf_csp::DdfBehaviour;
use crate::syncml::StatusCode;
use crate::tree::{CspCx, NodeRef, WriteOp};

/// The page's nodes, in the DDF table's format (see `ddf::table`).
pub const FACTS: &str = "./Vendor/MSFT/Update\tnode\tG\t1\tP\t\t\t10.0.10240\t\t\t\t1.0
./Vendor/MSFT/Update/ApprovedUpdates\tnode\tGA\t1\tP\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/ApprovedUpdates/<GUID>\tnode\tGA\t0-*\tN\tServerGeneratedUniqueIdentifier\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/ApprovedUpdates/<GUID>/ApprovedTime\tchr\tGA\t0-1\t\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/FailedUpdates\tnode\tG\t1\tP\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/FailedUpdates/<GUID>\tnode\tG\t0-*\tN\tClientInventory\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/FailedUpdates/<GUID>/HResult\tint\tG\t1\t\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/FailedUpdates/<GUID>/State\tint\tG\t1\t\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/FailedUpdates/<GUID>/RevisionNumber\tint\tG\t1\t\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/InstalledUpdates\tnode\tG\t1\tP\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/InstalledUpdates/<GUID>\tnode\tG\t0-*\tN\tClientInventory\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/InstalledUpdates/<GUID>/RevisionNumber\tint\tG\t1\t\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/InstallableUpdates\tnode\tG\t1\tP\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/InstallableUpdates/<GUID>\tnode\tG\t0-*\tN\tClientInventory\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/InstallableUpdates/<GUID>/Type\tint\tG\t1\t\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/InstallableUpdates/<GUID>/RevisionNumber\tint\tG\t1\t\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/PendingRebootUpdates\tnode\tG\t1\tP\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/PendingRebootUpdates/<GUID>\tnode\tG\t0-*\tN\tClientInventory\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/PendingRebootUpdates/<GUID>/InstalledTime\tchr\tG\t1\t\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/PendingRebootUpdates/<GUID>/RevisionNumber\tint\tG\t1\t\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/LastSuccessfulScanTime\tchr\tG\t1\tP\t\t\t\t\t\t\t1.0
./Vendor/MSFT/Update/DeferUpgrade\tbool\tG\t1\tP\t\t\t\t\t=false\t\t1.0
./Vendor/MSFT/Update/Rollback\tnode\tG\t1\tP\t\t\t10.0.17763\t\t\t\t1.1
./Vendor/MSFT/Update/Rollback/QualityUpdate\tnull\tGE\t1\tP\t\t\t10.0.17763\t\t\t\t1.1
./Vendor/MSFT/Update/Rollback/FeatureUpdate\tnull\tGE\t1\tP\t\t\t10.0.17763\t\t\t\t1.1
./Vendor/MSFT/Update/Rollback/QualityUpdateStatus\tint\tG\t1\tP\t\t\t10.0.17763\t\t=0\t\t1.1
./Vendor/MSFT/Update/Rollback/FeatureUpdateStatus\tint\tG\t1\tP\t\t\t10.0.17763\t\t=0\t\t1.1
";

/// How long an approved update takes to download and install (then it waits for a restart).
pub const INSTALL_DELAY: Duration = Duration::minutes(10);
/// WU_E_NOT_APPLICABLE as a signed 32-bit HRESULT.
pub const NOT_APPLICABLE: i32 = 0x8024_0017_u32 as i32;

const META: &str = "@Update";

/// The Update CSP's approvals and timers.
pub struct Update;

fn is_guid(s: &str) -> bool {
    super::is_hyphenated_guid(s.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(s))
}

fn time(v: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v).ok().map(|t| t.to_utc())
}

/// Each tracked update: (GUID, state word, since).
fn tracked(cx: &CspCx<'_>) -> Vec<(String, String, DateTime<Utc>)> {
    cx.state
        .child_names(META)
        .into_iter()
        .filter_map(|g| {
            let v = cx.state.value(&format!("{META}/{g}"))?;
            let (state, at) = v.split_once('|')?;
            Some((g.clone(), state.to_string(), time(at)?))
        })
        .collect()
}

/// When the device last restarted by the Reboot CSP (see `reboot.rs`).
fn last_reboot(cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
    cx.state.value(super::reboot::LAST).and_then(time)
}

impl DdfBehaviour for Update {
    fn validate(
        &self,
        _cx: &CspCx<'_>,
        op: WriteOp,
        node: NodeRef<'_>,
        _value: Option<&str>,
    ) -> Result<(), StatusCode> {
        match node.rel.split('/').collect::<Vec<_>>().as_slice() {
            ["ApprovedUpdates", guid, ..] if op == WriteOp::Add && !is_guid(guid) => Err(StatusCode::BadRequest),
            _ => Ok(()),
        }
    }

    fn after_write(&self, cx: &mut CspCx<'_>, op: WriteOp, node: NodeRef<'_>) -> Result<(), StatusCode> {
        if let (["ApprovedUpdates", guid], WriteOp::Add) = (node.rel.split('/').collect::<Vec<_>>().as_slice(), op) {
            let key = format!("{META}/{guid}");
            if cx.state.value(&key).is_none() {
                let now = cx.env.now.to_rfc3339_opts(SecondsFormat::Secs, true);
                cx.state.set_value(&key, format!("approved|{now}"));
            }
        }
        Ok(())
    }

    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        if node.rel != "LastSuccessfulScanTime" || cx.value("LastSuccessfulScanTime").is_some() {
            return None;
        }
        tracked(cx)
            .into_iter()
            .filter(|(_, s, _)| s != "approved")
            .map(|(_, _, t)| t)
            .max()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    fn next_deadline(&self, cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
        let reboot = last_reboot(cx);
        tracked(cx)
            .into_iter()
            .filter_map(|(_, state, at)| match state.as_str() {
                "approved" => Some(at + INSTALL_DELAY),
                "pending" => reboot.filter(|r| *r >= at),
                _ => None,
            })
            .min()
    }

    fn on_deadline(&self, cx: &mut CspCx<'_>) {
        let now = cx.env.now;
        let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        let reboot = last_reboot(cx);
        let installable = cx.children("InstallableUpdates");
        for (guid, state, at) in tracked(cx) {
            match state.as_str() {
                "approved" if at + INSTALL_DELAY <= now => {
                    if !installable.is_empty() && !installable.contains(&guid) {
                        cx.create("FailedUpdates");
                        cx.create(&format!("FailedUpdates/{guid}"));
                        cx.set(&format!("FailedUpdates/{guid}/HResult"), NOT_APPLICABLE.to_string());
                        cx.set(&format!("FailedUpdates/{guid}/State"), "4");
                        cx.set(&format!("FailedUpdates/{guid}/RevisionNumber"), "1");
                        cx.state.set_value(&format!("{META}/{guid}"), format!("failed|{stamp}"));
                        continue;
                    }
                    let rev = cx.value(&format!("InstallableUpdates/{guid}/RevisionNumber")).unwrap_or("1").to_string();
                    cx.remove(&format!("InstallableUpdates/{guid}"));
                    cx.create(&format!("PendingRebootUpdates/{guid}"));
                    cx.set(&format!("PendingRebootUpdates/{guid}/InstalledTime"), stamp.clone());
                    cx.set(&format!("PendingRebootUpdates/{guid}/RevisionNumber"), rev);
                    cx.state.set_value(&format!("{META}/{guid}"), format!("pending|{stamp}"));
                }
                "pending" if reboot.is_some_and(|r| r >= at && r <= now) => {
                    let rev =
                        cx.value(&format!("PendingRebootUpdates/{guid}/RevisionNumber")).unwrap_or("1").to_string();
                    cx.remove(&format!("PendingRebootUpdates/{guid}"));
                    cx.create(&format!("InstalledUpdates/{guid}"));
                    cx.set(&format!("InstalledUpdates/{guid}/RevisionNumber"), rev);
                    cx.state.set_value(&format!("{META}/{guid}"), format!("installed|{stamp}"));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncml::{Command, Item, ItemCmd};
    use crate::tree::{Env, Profile, Tree, TreeState};

    fn cmd(kind: &str, uri: &str) -> Command {
        let c = ItemCmd { cmd_id: "1".into(), items: vec![Item::target(uri)], ..ItemCmd::default() };
        match kind {
            "Add" => Command::Add(c),
            "Exec" => Command::Exec(c),
            _ => Command::Get(c),
        }
    }

    #[test]
    fn the_page_facts_read() {
        let facts = crate::ddf::table::decode(FACTS).unwrap();
        assert_eq!(facts.len(), 27);
        assert!(is_guid("{6B4A3F6C-1C3A-4F8E-9D3B-2A6F5E4C3B21}") && is_guid("6b4a3f6c-1c3a-4f8e-9d3b-2a6f5e4c3b21"));
        assert!(!is_guid("KB5031455") && !is_guid("{6B4A3F6C-1C3A-4F8E-9D3B-2A6F5E4C3B2}"));
    }

    #[test]
    fn an_approved_update_installs_waits_for_a_reboot_and_the_reboot_installs_it() {
        let registry = crate::csp::registry();
        let t0 = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap().to_utc();
        let mut env = Env::new(t0, Profile::Win10);
        let mut s = TreeState::new();
        s.set_value("DevDetail/SwV", "10.0.22631.4460");
        s.commit();
        let guid = "6b4a3f6c-1c3a-4f8e-9d3b-2a6f5e4c3b21";
        let base = "./Vendor/MSFT/Update";
        let run = |s: &mut TreeState, env: &Env, c: Command| {
            let out = Tree::new(&registry, s, env).execute(&c);
            s.commit();
            (out[0].code, out[0].results.first().and_then(|i| i.data.clone()))
        };
        assert_eq!(run(&mut s, &env, cmd("Add", &format!("{base}/ApprovedUpdates/{guid}"))).0, StatusCode::Ok);
        assert_eq!(run(&mut s, &env, cmd("Add", &format!("{base}/ApprovedUpdates/KB1"))).0, StatusCode::BadRequest);
        assert_eq!(
            run(&mut s, &env, cmd("Get", &format!("{base}/PendingRebootUpdates/{guid}"))).0,
            StatusCode::NotFound
        );
        let due = registry.next_deadline(&mut s, &env).unwrap();
        assert_eq!(due, t0 + INSTALL_DELAY);
        env.now = due;
        registry.on_deadline(&mut s, &env);
        s.commit();
        assert_eq!(run(&mut s, &env, cmd("Get", &format!("{base}/PendingRebootUpdates"))).1.as_deref(), Some(guid));
        assert_eq!(
            run(&mut s, &env, cmd("Get", &format!("{base}/PendingRebootUpdates/{guid}/InstalledTime"))).1.as_deref(),
            Some("2026-03-01T10:10:00Z")
        );
        assert_eq!(run(&mut s, &env, cmd("Get", &format!("{base}/InstalledUpdates"))).1.as_deref(), Some(""));
        assert_eq!(registry.next_deadline(&mut s, &env), None, "waits for a restart");
        env.now = t0 + Duration::hours(1);
        let mut tree = Tree::new(&registry, &mut s, &env);
        assert_eq!(tree.execute(&cmd("Exec", "./Device/Vendor/MSFT/Reboot/RebootNow"))[0].code, StatusCode::Ok);
        s.commit();
        let due = registry.next_deadline(&mut s, &env).unwrap();
        registry.on_deadline(&mut s, &Env { now: due, ..env.clone() });
        s.commit();
        assert_eq!(
            run(&mut s, &env, cmd("Get", &format!("{base}/InstalledUpdates/{guid}/RevisionNumber"))).1.as_deref(),
            Some("1")
        );
        assert_eq!(run(&mut s, &env, cmd("Get", &format!("{base}/PendingRebootUpdates"))).1.as_deref(), Some(""));
        assert_eq!(
            run(&mut s, &env, cmd("Get", &format!("{base}/LastSuccessfulScanTime"))).1.as_deref(),
            Some("2026-03-01T11:00:00Z")
        );
    }
}
