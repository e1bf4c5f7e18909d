//! DMAcc: `./SyncML/DMAcc/<AccountUID>`, the OMA-DM account the w7 APPLICATION of the
//! provisioning document maps to (DMAcc DDF; OMA DM Security; MS-MDE2 §2.2.9.1 provisioning document).
//!
//! Node table from the DDF. Secrets follow it: `AAuthSecret` and `AAuthData` allow Add and
//! Replace but not Get, so a server can never read them back (a Get is 405, and
//! `?list=StructData` skips them). Defaults of the DDF (AppID `w7`, AddrType `URI`,
//! ConnRetryFreq 3, backoff 16000/86400000 ms, ...) are served by [`Csp::read`] once the
//! account exists, so that the provisioning `Add`s are not refused as 418.
//!
//! Fleet rekeys with a Replace of `./SyncML/DMAcc/<AccountUID>/AppAuth/CLCRED/AAuthName` and
//! `AAuthSecret` using its own AccountUID (`0x0000800c…`, not the SHA-256 the device used):
//! when the device has exactly one account, a Replace or Get through any other AccountUID is
//! applied to that account (OMA DM Security, MD5 digest authentication). To make such paths resolve, the nodes
//! below `DMAcc` are permanent in the table; the CSP's hooks give back the existence rules
//! (Replace of a value never set is 404, as is anything when no account exists). The cost: a
//! Get of an unknown account's interior node lists the table's children instead of 404, and an
//! Add of an account's interior node itself is 418 (add its leaves instead).

use crate::syncml::StatusCode;
use crate::tree::{Csp, CspCx, Effect, Format, NodeRef, NodeSpec, Ops, WriteOp};

const G: Ops = Ops::GET;
const AG: Ops = Ops::ADD.with(Ops::GET);
const AGR: Ops = Ops::ADD.with(Ops::GET).with(Ops::REPLACE);
const AR: Ops = Ops::ADD.with(Ops::REPLACE);
const AGRD: Ops = Ops::ALL_WRITE;

static DMACC: NodeSpec = NodeSpec::interior(
    "DMAcc",
    G,
    &[NodeSpec::interior(
        "<AccountUID>",
        AGRD,
        &[
            NodeSpec::leaf("AppID", Format::Chr, AGR),
            NodeSpec::leaf("ServerID", Format::Chr, AGR),
            NodeSpec::leaf("Name", Format::Chr, AGR),
            NodeSpec::leaf("PrefConRef", Format::Chr, AGR),
            NodeSpec::interior(
                "AppAddr",
                AG,
                &[NodeSpec::interior(
                    "<ObjectName>",
                    AG,
                    &[
                        NodeSpec::leaf("Addr", Format::Chr, AGR),
                        NodeSpec::leaf("AddrType", Format::Chr, AGR),
                        NodeSpec::interior(
                            "Port",
                            AG,
                            &[NodeSpec::interior("<ObjectName>", AGR, &[NodeSpec::leaf("PortNbr", Format::Chr, AGR)])],
                        ),
                    ],
                )],
            ),
            NodeSpec::leaf("AAuthPref", Format::Chr, AGR),
            NodeSpec::interior(
                "AppAuth",
                AG,
                &[NodeSpec::interior(
                    "<ObjectName>",
                    AG,
                    &[
                        NodeSpec::leaf("AAuthLevel", Format::Chr, AGR),
                        NodeSpec::leaf("AAuthType", Format::Chr, AGR),
                        NodeSpec::leaf("AAuthName", Format::Chr, AGR),
                        // Never readable: the DDF allows only Add and Replace.
                        NodeSpec::leaf("AAuthSecret", Format::Chr, AR),
                        NodeSpec::leaf("AAuthData", Format::Bin, AR),
                    ],
                )],
            ),
            NodeSpec::interior(
                "Ext",
                G,
                &[NodeSpec::interior(
                    "Microsoft",
                    G,
                    &[
                        NodeSpec::leaf("Role", Format::Int, G.with(Ops::REPLACE)),
                        NodeSpec::leaf("ProtoVer", Format::Chr, AGR),
                        NodeSpec::leaf("DefaultEncoding", Format::Chr, AGR),
                        NodeSpec::leaf("UseHwDevID", Format::Bool, AGR),
                        NodeSpec::leaf("ConnRetryFreq", Format::Int, AGR),
                        NodeSpec::leaf("InitialBackOffTime", Format::Int, AGR),
                        NodeSpec::leaf("MaxBackOffTime", Format::Int, AGR),
                        NodeSpec::leaf("BackCompatRetryDisabled", Format::Bool, AGR),
                        NodeSpec::leaf("UseNonceResync", Format::Bool, AGR),
                        NodeSpec::leaf("CRLCheck", Format::Bool, AGR),
                        NodeSpec::leaf("DisableOnRoaming", Format::Bool, AGR),
                        NodeSpec::leaf("SSLCLIENTCERTSEARCHCRITERIA", Format::Chr, AGR),
                        NodeSpec::leaf("InitiateSession", Format::Null, AR),
                    ],
                )],
            ),
        ],
    )],
)
.mime("com.microsoft/1.0/MDM/DMAcc");

/// DDF defaults, served once an account exists (relative to the account).
const DEFAULTS: &[(&str, &str)] = &[
    ("AppID", "w7"),
    ("Ext/Microsoft/UseHwDevID", "false"),
    ("Ext/Microsoft/ConnRetryFreq", "3"),
    ("Ext/Microsoft/InitialBackOffTime", "16000"),
    ("Ext/Microsoft/MaxBackOffTime", "86400000"),
    ("Ext/Microsoft/BackCompatRetryDisabled", "false"),
    ("Ext/Microsoft/UseNonceResync", "false"),
];

/// `./SyncML/DMAcc`.
pub struct DmAcc;

/// The accounts of the device: the AccountUIDs marked as existing by an Add (the table makes
/// `<AccountUID>` permanent, so the engine does not mark them; [`DmAcc::after_write`] does).
fn accounts(cx: &CspCx<'_>) -> Vec<String> {
    cx.children("").into_iter().filter(|a| cx.state.entry(&cx.key(a)).is_some()).collect()
}

/// The account a path is about: its own UID when that account exists, else the single
/// account of the device (the rekey alias), else none.
fn account_for(cx: &CspCx<'_>, uid: &str) -> Option<String> {
    let accounts = accounts(cx);
    if accounts.iter().any(|a| a == uid) {
        return Some(uid.to_string());
    }
    match accounts.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    }
}

fn split(rel: &str) -> (&str, &str) {
    rel.split_once('/').unwrap_or((rel, ""))
}

impl Csp for DmAcc {
    fn name(&self) -> &'static str {
        "DMAcc"
    }

    fn root(&self) -> &'static str {
        "SyncML/DMAcc"
    }

    fn schema(&self) -> &'static NodeSpec {
        &DMACC
    }

    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        let (uid, rest) = split(node.rel);
        let account = account_for(cx, uid)?;
        let real = format!("{account}/{rest}");
        cx.value(&real)
            .map(str::to_string)
            .or_else(|| DEFAULTS.iter().find(|(p, _)| *p == rest).map(|(_, d)| d.to_string()))
    }

    fn validate(&self, cx: &CspCx<'_>, op: WriteOp, node: NodeRef<'_>, _value: Option<&str>) -> Result<(), StatusCode> {
        let (uid, rest) = split(node.rel);
        let exists = accounts(cx).iter().any(|a| a == uid);
        match op {
            // A new account, or more of an existing one.
            WriteOp::Add => Ok(()),
            // An interior node has no value to replace.
            WriteOp::Replace if node.spec.is_interior() => Err(StatusCode::CommandNotAllowed),
            WriteOp::Replace => {
                let account = account_for(cx, uid).ok_or(StatusCode::NotFound)?;
                // Values with a DDF default exist as soon as the account does.
                let has_default = DEFAULTS.iter().any(|(p, _)| *p == rest) || rest == "Ext/Microsoft/Role";
                if has_default || cx.value(&format!("{account}/{rest}")).is_some() {
                    Ok(())
                } else {
                    Err(StatusCode::NotFound)
                }
            }
            WriteOp::Delete if exists || cx.exists(node.rel) => Ok(()),
            WriteOp::Delete => Err(StatusCode::NotFound),
        }
    }

    fn after_write(&self, cx: &mut CspCx<'_>, op: WriteOp, node: NodeRef<'_>) -> Result<(), StatusCode> {
        let (uid, rest) = split(node.rel);
        let marked = cx.state.entry(&cx.key(uid)).is_some();
        match op {
            WriteOp::Add if !marked && !rest.is_empty() => cx.create(uid),
            WriteOp::Replace if !marked => {
                // Written through an alias: move the value to the account it stands for.
                let value = cx.value(node.rel).unwrap_or_default().to_string();
                cx.remove(uid);
                let real = account_for(cx, uid).ok_or(StatusCode::NotFound)?;
                cx.set(&format!("{real}/{rest}"), value);
            }
            _ => {}
        }
        if rest == "Ext/Microsoft/InitiateSession" && op != WriteOp::Delete {
            cx.emit(Effect::RequestSession { reason: "DMAcc Ext/Microsoft/InitiateSession".into() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::syncml::{Command, Item, ItemCmd, Meta};
    use crate::tree::{Env, Profile, Registry, Tree, TreeState};

    fn run(state: &mut TreeState, cmd: Command) -> (StatusCode, Option<String>) {
        let mut reg = Registry::new();
        reg.register(DmAcc);
        let env = Env::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(), Profile::Win10);
        let out = Tree::new(&reg, state, &env).execute(&cmd);
        (out[0].code, out[0].results.first().and_then(|i| i.data.clone()))
    }

    fn item_cmd(uri: &str, data: Option<&str>) -> ItemCmd {
        ItemCmd {
            cmd_id: "1".into(),
            items: vec![Item {
                target: Some(uri.into()),
                data: data.map(str::to_string),
                meta: data.map(|_| Box::new(Meta::format("chr"))),
                ..Item::default()
            }],
            ..ItemCmd::default()
        }
    }

    fn add(s: &mut TreeState, uri: &str, v: &str) -> StatusCode {
        run(s, Command::Add(item_cmd(uri, Some(v)))).0
    }
    fn replace(s: &mut TreeState, uri: &str, v: &str) -> StatusCode {
        run(s, Command::Replace(item_cmd(uri, Some(v)))).0
    }
    fn get(s: &mut TreeState, uri: &str) -> (StatusCode, Option<String>) {
        run(s, Command::Get(item_cmd(uri, None)))
    }

    fn provisioned() -> TreeState {
        let mut s = TreeState::new();
        let base = "./SyncML/DMAcc/ABC";
        assert_eq!(add(&mut s, &format!("{base}/ServerID"), "Fleet"), StatusCode::Ok);
        assert_eq!(add(&mut s, &format!("{base}/AppAuth/CLCRED/AAuthLevel"), "CLCRED"), StatusCode::Ok);
        assert_eq!(add(&mut s, &format!("{base}/AppAuth/CLCRED/AAuthName"), "dev"), StatusCode::Ok);
        assert_eq!(add(&mut s, &format!("{base}/AppAuth/CLCRED/AAuthSecret"), "s1"), StatusCode::Ok);
        s
    }

    #[test]
    fn secrets_are_write_only_and_defaults_show_once_the_account_exists() {
        let mut s = provisioned();
        assert_eq!(get(&mut s, "./SyncML/DMAcc/ABC/AppAuth/CLCRED/AAuthSecret").0, StatusCode::CommandNotAllowed);
        assert_eq!(get(&mut s, "./SyncML/DMAcc/ABC/AppAuth/CLCRED/AAuthName"), (StatusCode::Ok, Some("dev".into())));
        assert_eq!(get(&mut s, "./SyncML/DMAcc/ABC/AppID"), (StatusCode::Ok, Some("w7".into())));
        assert_eq!(get(&mut s, "./SyncML/DMAcc/ABC/Ext/Microsoft/ConnRetryFreq").1.as_deref(), Some("3"));
        assert_eq!(get(&mut s, "./SyncML/DMAcc").1.as_deref(), Some("ABC"));
        let (code, data) = run(&mut s, Command::Get(item_cmd("./SyncML/DMAcc/ABC?list=StructData", None)));
        assert_eq!(code, StatusCode::Ok);
        // The first item is the account's interior node: Format node and no Data, in the shape
        // of the EnterpriseAppManagement CSP page's StructData example.
        assert_eq!(data, None);
        let mut empty = TreeState::new();
        assert_eq!(get(&mut empty, "./SyncML/DMAcc/ABC/AppID").0, StatusCode::NotFound);
        assert_eq!(replace(&mut empty, "./SyncML/DMAcc/ABC/ServerID", "x"), StatusCode::NotFound);
    }

    #[test]
    fn rekey_through_any_account_uid_lands_on_the_single_account() {
        let mut s = provisioned();
        let fleet_uid = format!("0x0000800c{}", "a".repeat(64));
        for (leaf, v) in [("AAuthName", "dev2"), ("AAuthSecret", "s2")] {
            let uri = format!("./SyncML/DMAcc/{fleet_uid}/AppAuth/CLCRED/{leaf}");
            assert_eq!(replace(&mut s, &uri, v), StatusCode::Ok, "{uri}");
        }
        assert_eq!(s.value("SyncML/DMAcc/ABC/AppAuth/CLCRED/AAuthName"), Some("dev2"));
        assert_eq!(s.value("SyncML/DMAcc/ABC/AppAuth/CLCRED/AAuthSecret"), Some("s2"));
        assert_eq!(s.child_names("SyncML/DMAcc"), ["ABC"], "no second account was made");
        // Reading through the alias sees the same account.
        assert_eq!(get(&mut s, &format!("./SyncML/DMAcc/{fleet_uid}/ServerID")).1.as_deref(), Some("Fleet"));
        // Replace of a value that was never set is 404, as in Windows.
        assert_eq!(replace(&mut s, "./SyncML/DMAcc/ABC/Name", "n"), StatusCode::NotFound);
    }
}
