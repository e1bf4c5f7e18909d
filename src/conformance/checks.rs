//! The checks: what each one drives, how it judges the server, and the rule it judges by.
//!
//! Each check is one [`Spec`] (its name, group, what the rule asks, what Windows does, the
//! public source) and a judge that turns what the server did into a [`Verdict`] with
//! evidence. The enrollment checks judge the run's MS-MDE2 exchange; the session, mode, poll
//! and profile checks judge ordinary sessions of the device ([`ordinary_sessions`]); the
//! robustness and "copes" checks run probe sessions shaped for their rule
//! ([`super::probe::Probe`]); the throttling check judges every message of the run that the
//! server answered with HTTP 429 or 503 ([`super::Watch`]). A check that the run gives nothing
//! to judge is not applicable, and says why.

use chrono::{DateTime, Utc};
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509StoreContext};

use super::probe::{self, Answer, Exchanged, Probe, Trace, describe, status_for, work};
use super::{CheckResult, EnrollmentRun, Evidence, Group, Target, Verdict};
use crate::device::Device;
use crate::session::{LOGIN_STATUS_TYPE, Mode, Outcome, Trigger};
use crate::syncml::{Alert, Command, Item, Meta, Status, StatusCode, SyncMl};
use crate::tree::Profile;

/// A check's fixed words.
pub struct Spec {
    pub id: &'static str,
    pub group: Group,
    pub title: &'static str,
    pub expected: &'static str,
    pub windows: &'static str,
    pub source: &'static str,
}

impl Spec {
    fn result(&self, profile: Profile, verdict: Verdict, observed: String, evidence: Vec<Evidence>) -> CheckResult {
        CheckResult {
            id: self.id.to_string(),
            group: self.group,
            profile,
            title: self.title.to_string(),
            verdict,
            expected: self.expected.to_string(),
            observed,
            windows: self.windows.to_string(),
            source: self.source.to_string(),
            evidence,
        }
    }

    fn na(&self, profile: Profile, why: impl Into<String>) -> CheckResult {
        self.result(profile, Verdict::NotApplicable, why.into(), Vec::new())
    }

    /// Passes when no place broke the rule (`ev` is empty), saying `pass`; fails with the places
    /// otherwise, saying `fail(how many)`.
    fn judged(
        &self,
        profile: Profile,
        ev: Vec<Evidence>,
        pass: impl FnOnce() -> String,
        fail: impl FnOnce(usize) -> String,
    ) -> CheckResult {
        if ev.is_empty() {
            self.result(profile, Verdict::Pass, pass(), ev)
        } else {
            let observed = fail(ev.len());
            self.result(profile, Verdict::Fail, observed, ev)
        }
    }

    /// [`Spec::judged`] over `count` places the run gave to judge; not applicable, saying
    /// `none`, when it gave none.
    fn judged_over(
        &self,
        profile: Profile,
        count: usize,
        none: &str,
        ev: Vec<Evidence>,
        pass: impl FnOnce() -> String,
        fail: impl FnOnce(usize) -> String,
    ) -> CheckResult {
        if count == 0 { self.na(profile, none) } else { self.judged(profile, ev, pass, fail) }
    }
}

/// Every check, in report order.
pub const ALL: &[&Spec] = &[
    &DISCOVERY,
    &XCEP_POLICY,
    &WSTEP_CHAIN,
    &WSTEP_DEVICE_ID,
    &PROVISIONING_COMPLETE,
    &APPAUTH_NONCE,
    &SOAP_FAULT_STATUS,
    &SYNCHDR_STATUS_FIRST,
    &STATUS_PER_COMMAND,
    &MSGREF_CMDREF,
    &FINAL,
    &SESSION_END,
    &LARGE_CMD_IDS,
    &MACHINE_MODE,
    &WNS_MAINTENANCE_ONLY,
    &POLL_SCHEDULE,
    &READ_BACK,
    &ATOMIC_PROFILES,
    &ADD_BEFORE_REPLACE,
    &REPLACE_AFTER_418,
    &CSP_500,
    &CSP_405,
    &CSP_404,
    &DEVICE_DISAPPEARS,
    &REPEATED_PACKAGE_1,
    &MULTI_MESSAGE,
    &KEEP_ALIVE,
    &SESSION_ALERTS,
    &LOGIN_STATUS,
    &GENERIC_ALERT,
    &SIGNED_MESSAGE,
    &MD5_CHALLENGE,
    &MD5_REKEY,
    &LARGE_OBJECT,
    &USER_UNENROLL,
    &THROTTLING,
];

// ---------------------------------------------------------------------------------------------
// Enrollment

pub const DISCOVERY: Spec = Spec {
    id: "discovery",
    group: Group::Enrollment,
    title: "discovery answers with an auth policy the device asked for and an enrollment service",
    expected: "GET of the discovery URL answers 200; Discover answers an AuthPolicy among those the client listed (OnPremise for a password, Federated with an AuthenticationServiceUrl) and an EnrollmentServiceUrl",
    windows: "Windows stops the enrollment when discovery fails or names a policy it did not offer",
    source: "[MS-MDE2] Discovery Service (DiscoverRequest / DiscoverResponse, AuthPolicy)",
};

pub const XCEP_POLICY: Spec = Spec {
    id: "xcep-policy",
    group: Group::Enrollment,
    title: "MS-XCEP GetPolicies answers a policy (key length, hash)",
    expected: "a GetPoliciesResponse with a policy: minimal key length and hash algorithm",
    windows: "Windows warns and enrolls with its defaults (RSA 2048, SHA-256) when the response is nil",
    source: "[MS-MDE2] Enrollment Policy (MS-XCEP GetPoliciesResponse)",
};

pub const WSTEP_CHAIN: Spec = Spec {
    id: "wstep-certificate-chain",
    group: Group::Enrollment,
    title: "the issued client certificate chains to a root the provisioning document installs",
    expected: "the client certificate verifies against the provisioned roots (CertificateStore/Root/System) through the provisioned intermediates",
    windows: "a certificate that does not chain cannot be used for TLS client authentication; the management sessions fail",
    source: "[MS-MDE2] Enrollment Service (MS-WSTEP RequestSecurityTokenResponse), provisioning document CertificateStore",
};

pub const WSTEP_DEVICE_ID: Spec = Spec {
    id: "wstep-deviceid-in-certificate",
    group: Group::Enrollment,
    title: "the client certificate's subject names the DeviceID",
    expected: "the subject CN of the issued certificate holds the DeviceID the client sent in AdditionalContext",
    windows: "servers match sessions to devices by the certificate's CN; Windows sends that DeviceID as SyncHdr Source",
    source: "[MS-MDE2] Enrollment Service (AdditionalContext DeviceID, the issued certificate)",
};

pub const PROVISIONING_COMPLETE: Spec = Spec {
    id: "provisioning-complete",
    group: Group::Enrollment,
    title: "the provisioning document holds the DMAcc account (w7 APPLICATION), APPAUTH and DMClient values",
    expected: "APPLICATION with ADDR, PROVIDER-ID and both APPAUTH blocks (CLIENT and APPSRV), a root certificate, and DMClient Provider values",
    windows: "without ADDR or PROVIDER-ID the device has no server; without APPAUTH it cannot answer an MD5 challenge",
    source: "[MS-MDE2] provisioning document; w7 APPLICATION CSP; DMClient CSP",
};

pub const APPAUTH_NONCE: Spec = Spec {
    id: "appauth-nonce",
    group: Group::Enrollment,
    title: "APPAUTH AAUTHDATA is a base64 nonce",
    expected: "AAUTHDATA of each APPAUTH block is base64 (the initial nonce of OMA DM MD5 authentication)",
    windows: "Windows takes the value as it is; a word such as \"nonce\" becomes the nonce bytes",
    source: "w7 APPLICATION CSP (APPAUTH, AAUTHDATA); OMA DM protocol support (MD5 nonce)",
};

pub const SOAP_FAULT_STATUS: Spec = Spec {
    id: "soap-fault-http-500",
    group: Group::Enrollment,
    title: "a refused enrollment is a SOAP fault sent with HTTP 500",
    expected: "a wrong password is refused with a SOAP fault (s:Authentication) in an HTTP 500 answer",
    windows: "Windows reads the fault either way; other SOAP stacks treat a 200 as success",
    source: "[MS-MDE2] Enrollment Service, SOAP faults (SOAP 1.2 faults are sent with HTTP 500)",
};

/// The enrollment checks, judged from the run's enrollment (all not applicable without one).
pub fn enrollment(run: Option<&EnrollmentRun>, device: &Device, profile: Profile) -> Vec<CheckResult> {
    let specs = [
        &DISCOVERY,
        &XCEP_POLICY,
        &WSTEP_CHAIN,
        &WSTEP_DEVICE_ID,
        &PROVISIONING_COMPLETE,
        &APPAUTH_NONCE,
        &SOAP_FAULT_STATUS,
    ];
    let Some(run) = run else {
        return specs.iter().map(|s| s.na(profile, "no enrollment in this run (--server): give --discovery")).collect();
    };
    let step_ev = |step: &str| -> Vec<Evidence> {
        run.exchanges
            .iter()
            .filter(|x| x.step == step)
            .map(|x| Evidence {
                from: x.step.clone(),
                session_id: String::new(),
                msg_id: String::new(),
                cmd_id: String::new(),
                what: format!(
                    "{} {} -> {}",
                    x.method,
                    x.url,
                    x.status.map_or_else(|| x.error.clone().unwrap_or_default(), |s| format!("HTTP {s}"))
                ),
            })
            .collect()
    };
    let mut out = Vec::new();
    let enrolled = match &run.enrolled {
        Ok(e) => e,
        Err(err) => {
            use crate::runner::enroll::EnrollError as E;
            let step = match err {
                E::Unreachable { step, .. }
                | E::HttpStatus { step, .. }
                | E::Fault { step, .. }
                | E::Malformed { step, .. }
                | E::SignIn { step, .. }
                | E::Certificate { step, .. } => Some(*step),
                E::Config(_) | E::Local(_) => None,
            };
            use crate::runner::enroll::Step;
            // The check whose step failed, and the enrollment step its evidence comes from.
            let failed_at = |s: &Spec| match (s.id, step) {
                ("discovery", Some(Step::Probe | Step::Discover | Step::SignIn)) => Some("discover"),
                ("xcep-policy", Some(Step::Policy)) => Some("policy"),
                ("wstep-certificate-chain", Some(Step::Enroll | Step::Provisioning)) => Some("enroll"),
                _ => None,
            };
            for s in specs {
                out.push(match failed_at(s) {
                    Some(at) => s.result(profile, Verdict::Fail, format!("the enrollment failed: {err}"), step_ev(at)),
                    None => s.na(profile, format!("the enrollment failed before this could be judged: {err}")),
                });
            }
            return out;
        }
    };
    // Discovery.
    let d = &enrolled.discovery;
    let mut ev = step_ev("probe");
    ev.extend(step_ev("discover"));
    let policy = format!("{:?}", d.auth_policy);
    let federated_ok = !policy.eq_ignore_ascii_case("federated") || d.auth_url.is_some();
    out.push(if !d.enrollment_url.is_empty() && federated_ok {
        DISCOVERY.result(
            profile,
            Verdict::Pass,
            format!(
                "AuthPolicy {policy}, EnrollmentServiceUrl {}, version {}",
                d.enrollment_url,
                d.enrollment_version.clone().unwrap_or_else(|| "(none)".into())
            ),
            ev,
        )
    } else {
        DISCOVERY.result(profile, Verdict::Fail, format!("AuthPolicy {policy} without what it needs: {d:?}"), ev)
    });
    // Policy.
    let nil: Vec<_> = enrolled.findings.iter().filter(|f| f.what.starts_with("policy-")).collect();
    out.push(if nil.is_empty() {
        XCEP_POLICY.result(
            profile,
            Verdict::Pass,
            format!("policy: {}-bit keys, {:?}", enrolled.policy.key_bits, enrolled.policy.hash),
            step_ev("policy"),
        )
    } else {
        let mut ev = step_ev("policy");
        ev.extend(nil.iter().map(|f| enroll_ev("policy", f)));
        XCEP_POLICY.result(profile, Verdict::Fail, nil.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "), ev)
    });
    // Certificate chain and DeviceID.
    let prov = &enrolled.provisioning;
    let client = X509::from_der(&prov.client_cert.der);
    let mut ev = step_ev("enroll");
    match &client {
        Ok(cert) => {
            let cn: Vec<String> =
                cert.subject_name().entries_by_nid(Nid::COMMONNAME).filter_map(|e| e.data().to_string().ok()).collect();
            ev.push(Evidence {
                from: "enroll".into(),
                session_id: String::new(),
                msg_id: String::new(),
                cmd_id: String::new(),
                what: format!("client certificate subject CN {cn:?}, store {}", prov.client_cert.store),
            });
            let chain = verify_chain(cert, &prov.roots, &prov.intermediates);
            out.push(match chain {
                Ok(()) => WSTEP_CHAIN.result(
                    profile,
                    Verdict::Pass,
                    format!(
                        "verified against {} provisioned root(s) and {} intermediate(s)",
                        prov.roots.len(),
                        prov.intermediates.len()
                    ),
                    ev.clone(),
                ),
                Err(why) => WSTEP_CHAIN.result(profile, Verdict::Fail, why, ev.clone()),
            });
            let id = device.id.as_str();
            out.push(if cn.iter().any(|c| c.to_ascii_uppercase().contains(&id.to_ascii_uppercase())) {
                WSTEP_DEVICE_ID.result(profile, Verdict::Pass, format!("CN {cn:?} holds DeviceID {id}"), ev)
            } else {
                WSTEP_DEVICE_ID.result(profile, Verdict::Fail, format!("CN {cn:?} does not hold DeviceID {id}"), ev)
            });
        }
        Err(e) => {
            out.push(WSTEP_CHAIN.result(
                profile,
                Verdict::Fail,
                format!("the client certificate is not DER X.509: {e}"),
                ev.clone(),
            ));
            out.push(WSTEP_DEVICE_ID.result(
                profile,
                Verdict::Fail,
                format!("the client certificate is unreadable: {e}"),
                ev,
            ));
        }
    }
    // Provisioning document.
    let app = &prov.app;
    let mut missing = Vec::new();
    if app.addr.trim().is_empty() {
        missing.push("APPLICATION ADDR");
    }
    if app.provider_id.trim().is_empty() {
        missing.push("APPLICATION PROVIDER-ID");
    }
    if app.client_cred.is_none() {
        missing.push("APPAUTH AAUTHLEVEL=APPSRV (the client's credentials, DMAcc CLCRED)");
    }
    if app.server_cred.is_none() {
        missing.push("APPAUTH AAUTHLEVEL=CLIENT (the server's credentials, DMAcc SRVCRED)");
    }
    if prov.roots.is_empty() {
        missing.push("a root certificate (CertificateStore/Root/System)");
    }
    if prov.dmclient.is_empty() {
        missing.push("DMClient Provider values");
    }
    let found = format!(
        "ADDR {}, PROVIDER-ID {}, {} root(s), {} DMClient value(s)",
        app.addr,
        app.provider_id,
        prov.roots.len(),
        prov.dmclient.len()
    );
    out.push(if missing.is_empty() {
        PROVISIONING_COMPLETE.result(profile, Verdict::Pass, found, step_ev("enroll"))
    } else {
        PROVISIONING_COMPLETE.result(
            profile,
            Verdict::Fail,
            format!("missing: {}; found {found}", missing.join(", ")),
            step_ev("enroll"),
        )
    });
    // APPAUTH nonce.
    let nonce: Vec<_> = enrolled.findings.iter().filter(|f| f.what == "nonce-not-base64").collect();
    out.push(if nonce.is_empty() {
        APPAUTH_NONCE.result(profile, Verdict::Pass, "every AAUTHDATA is base64".into(), step_ev("enroll"))
    } else {
        APPAUTH_NONCE.result(
            profile,
            Verdict::Fail,
            nonce.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "),
            nonce.iter().map(|f| enroll_ev("enroll", f)).collect(),
        )
    });
    // SOAP fault status.
    let fault = run
        .refused
        .iter()
        .rev()
        .find(|x| x.response.as_deref().is_some_and(|r| r.contains("Fault") || r.contains("fault")));
    out.push(match fault {
        None if run.refused.is_empty() => {
            SOAP_FAULT_STATUS.na(profile, "no refused enrollment was tried (a token, not a password, was given)")
        }
        None => SOAP_FAULT_STATUS.na(
            profile,
            format!(
                "the enrollment with a wrong password got no SOAP fault (last answer: {})",
                run.refused.last().map_or("none".into(), |x| format!("{} HTTP {:?}", x.step, x.status))
            ),
        ),
        Some(x) => {
            let ev = vec![Evidence {
                from: x.step.clone(),
                session_id: String::new(),
                msg_id: String::new(),
                cmd_id: String::new(),
                what: format!(
                    "{} {} with a wrong password -> HTTP {}: {}",
                    x.method,
                    x.url,
                    x.status.map_or("none".into(), |s| s.to_string()),
                    x.response.as_deref().map(fault_code).unwrap_or_default()
                ),
            }];
            if x.status == Some(500) {
                SOAP_FAULT_STATUS.result(
                    profile,
                    Verdict::Pass,
                    format!("the {} step answered its fault with HTTP 500", x.step),
                    ev,
                )
            } else {
                SOAP_FAULT_STATUS.result(
                    profile,
                    Verdict::Fail,
                    format!(
                        "the {} step answered its fault with HTTP {}",
                        x.step,
                        x.status.map_or("none".into(), |s| s.to_string())
                    ),
                    ev,
                )
            }
        }
    });
    out
}

fn enroll_ev(step: &str, f: &crate::enroll::EnrollFinding) -> Evidence {
    Evidence {
        from: step.into(),
        session_id: String::new(),
        msg_id: String::new(),
        cmd_id: String::new(),
        what: f.to_string(),
    }
}

/// The fault's code and reason, in a line.
fn fault_code(body: &str) -> String {
    let pick = |tag: &str| {
        let start = body.find(&format!(":{tag}>")).or_else(|| body.find(&format!("<{tag}>")))?;
        let rest = &body[start..];
        let open = rest.find('>')? + 1;
        let close = rest[open..].find('<')? + open;
        Some(rest[open..close].trim().to_string())
    };
    [pick("Value"), pick("Text")].into_iter().flatten().collect::<Vec<_>>().join(" ")
}

fn verify_chain(
    cert: &X509,
    roots: &[crate::enroll::CertEntry],
    intermediates: &[crate::enroll::CertEntry],
) -> Result<(), String> {
    let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    for r in roots {
        let c = X509::from_der(&r.der).map_err(|e| format!("root {} is not X.509: {e}", r.thumbprint))?;
        store.add_cert(c).map_err(|e| e.to_string())?;
    }
    let store = store.build();
    let mut chain = Stack::new().map_err(|e| e.to_string())?;
    for i in intermediates {
        let c = X509::from_der(&i.der).map_err(|e| format!("intermediate {} is not X.509: {e}", i.thumbprint))?;
        chain.push(c).map_err(|e| e.to_string())?;
    }
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    let (ok, why) = ctx
        .init(&store, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error().error_string().to_string()))
        })
        .map_err(|e| e.to_string())?;
    if ok {
        Ok(())
    } else {
        Err(format!("the client certificate does not verify against the provisioned roots: {why}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Ordinary sessions and the checks judged from them

/// The ordinary sessions the session, mode, poll and profile checks judge, in order: the
/// first session (the post-enrollment one when the run enrolled), a manual sync, a session
/// after a reboot with nobody logged on (Machine mode), and one at the user's logon.
pub async fn ordinary_sessions(target: &mut Target, now: DateTime<Utc>) -> Vec<Trace> {
    let registry = crate::csp::registry();
    let first = if target.enrollment.is_some() { Trigger::Enrollment } else { Trigger::Manual };
    let mut traces = Vec::new();
    for trigger in [first, Trigger::Manual, Trigger::Reboot, Trigger::Logon] {
        let t = probe::ordinary(target.exchange.as_ref(), &registry, &mut target.device, trigger, false, now).await;
        traces.push(t);
    }
    traces
}

pub const SYNCHDR_STATUS_FIRST: Spec = Spec {
    id: "synchdr-status-first",
    group: Group::Session,
    title: "every server message starts with the Status for the device's SyncHdr",
    expected: "the first command of each server message is a Status with CmdRef 0, Cmd SyncHdr and MsgRef = the device message it answers",
    windows: "Windows reads the SyncHdr status first to learn whether it is authenticated",
    source: "[MS-MDM] Message Syntax; OMA DM 1.2 Representation Protocol (SyncHdr Status)",
};

pub const STATUS_PER_COMMAND: Spec = Spec {
    id: "status-per-command",
    group: Group::Session,
    title: "one Status for every command of the device",
    expected: "every Alert, Replace... the device sends gets a Status naming it by MsgRef and CmdRef",
    windows: "Windows carries on without the Status; the server never says whether it took the alert",
    source: "OMA DM 1.2 Representation Protocol (Status); [MS-MDM] Protocol Details",
};

pub const MSGREF_CMDREF: Spec = Spec {
    id: "msgref-cmdref",
    group: Group::Session,
    title: "MsgRef/CmdRef name messages and commands the device sent; MsgIDs are not repeated",
    expected: "each Status names a device message and command that exist; each server message of a session has its own MsgID",
    windows: "Windows ignores a Status for a command it never sent; a MsgRef to no message ends the session",
    source: "OMA DM 1.2 Representation Protocol (MsgRef, CmdRef, MsgID)",
};

pub const FINAL: Spec = Spec {
    id: "final",
    group: Group::Session,
    title: "the last message of a server package carries <Final/>",
    expected: "a server message that ends its package has <Final/>",
    windows: "a message without Final is an unfinished package: Windows asks for more with Alert 1222 (or ends the session when nothing is left)",
    source: "OMA DM 1.2 Protocol (packages and multiple messages, Final)",
};

pub const SESSION_END: Spec = Spec {
    id: "session-end",
    group: Group::Session,
    title: "sessions end cleanly",
    expected: "each session ends with an empty HTTP 200 or a message without commands, within the device's message bound",
    windows: "a session that fails is rolled back and retried at the next poll",
    source: "[MS-MDM] Protocol Details (the end of a session)",
};

pub const LARGE_CMD_IDS: Spec = Spec {
    id: "large-cmd-ids",
    group: Group::Session,
    title: "CmdIDs are strings: UUIDs and numbers past 32 bits are echoed as they came",
    expected: "the Status for a device command whose CmdID is a UUID (or 4294967297) names that CmdID exactly in CmdRef",
    windows: "CmdIDs are strings; a Status with a rewritten CmdRef answers no command",
    source: "OMA DM 1.2 Representation Protocol (CmdID); [MS-MDM] Message Syntax",
};

/// A finding of the ordinary sessions, as evidence.
fn finding_ev(t: &Trace, f: &crate::session::Finding) -> Evidence {
    Evidence {
        from: "server".into(),
        session_id: t.report.summary.session_id.clone(),
        msg_id: f.msg_id.clone(),
        cmd_id: f.cmd_id.clone(),
        what: f.to_string(),
    }
}

fn answer_ev(session_id: &str, x: &Exchanged) -> Evidence {
    Evidence {
        from: "server".into(),
        session_id: session_id.to_string(),
        msg_id: x.answer.message().map(|m| m.hdr.msg_id.clone()).unwrap_or_default(),
        cmd_id: String::new(),
        what: format!("answer to device MsgID {}: {}", x.sent.hdr.msg_id, x.answer.describe()),
    }
}

fn sent_ev(session_id: &str, m: &SyncMl) -> Evidence {
    Evidence {
        from: "device".into(),
        session_id: session_id.to_string(),
        msg_id: m.hdr.msg_id.clone(),
        cmd_id: String::new(),
        what: describe(m),
    }
}

/// Judges findings named `names` of the ordinary sessions: fail with them, else pass (n/a
/// when no server message was seen at all).
fn by_findings(spec: &Spec, traces: &[Trace], names: &[&str], profile: Profile) -> CheckResult {
    let messages: usize = traces.iter().map(|t| t.log.iter().filter(|x| x.answer.message().is_some()).count()).sum();
    if messages == 0 {
        return spec.na(profile, "the server sent no SyncML message in the ordinary sessions");
    }
    let mut ev = Vec::new();
    for t in traces {
        for f in t.report.summary.findings.iter().filter(|f| names.contains(&f.what.as_str())) {
            ev.push(finding_ev(t, f));
        }
        if let Some(e) = t
            .report
            .summary
            .error
            .as_ref()
            .filter(|e| names.contains(&"unknown-msgref") && e.contains("refers to no message"))
        {
            ev.push(Evidence {
                from: "server".into(),
                session_id: t.report.summary.session_id.clone(),
                msg_id: String::new(),
                cmd_id: String::new(),
                what: e.clone(),
            });
        }
    }
    spec.judged(
        profile,
        ev,
        || format!("{messages} server message(s) in {} session(s), none broke the rule", traces.len()),
        |n| format!("{n} place(s) broke the rule"),
    )
}

/// The session-basics checks judged from the ordinary sessions.
pub fn session_basics(traces: &[Trace], profile: Profile) -> Vec<CheckResult> {
    let mut out = Vec::new();
    // The SyncHdr status first, read from the messages themselves.
    let mut seen = 0;
    let mut ev = Vec::new();
    for t in traces {
        let sid = &t.report.summary.session_id;
        for x in &t.log {
            let Some(m) = x.answer.message() else { continue };
            seen += 1;
            let first_ok = matches!(m.body.commands.first(),
                Some(Command::Status(s)) if s.cmd_ref.trim() == "0" && s.msg_ref.trim() == x.sent.hdr.msg_id.trim());
            if !first_ok {
                ev.push(answer_ev(sid, x));
            }
        }
    }
    out.push(SYNCHDR_STATUS_FIRST.judged_over(
        profile,
        seen,
        "the server sent no SyncML message in the ordinary sessions",
        ev,
        || format!("all {seen} server message(s) start with it"),
        |n| format!("{n} of {seen} server message(s) do not"),
    ));
    out.push(by_findings(&STATUS_PER_COMMAND, traces, &["command-not-statused"], profile));
    out.push(by_findings(
        &MSGREF_CMDREF,
        traces,
        &["status-unknown-cmdref", "repeated-msgid", "unknown-msgref"],
        profile,
    ));
    out.push(by_findings(&FINAL, traces, &["missing-final"], profile));
    // The end of each session.
    let mut ev = Vec::new();
    for t in traces {
        let s = &t.report.summary;
        if s.outcome != Outcome::Completed {
            ev.push(Evidence {
                from: "server".into(),
                session_id: s.session_id.clone(),
                msg_id: String::new(),
                cmd_id: String::new(),
                what: format!("session ({} mode) failed: {}", s.mode, s.error.clone().unwrap_or_default()),
            });
        }
    }
    out.push(SESSION_END.judged(
        profile,
        ev,
        || {
            let ends: Vec<String> = traces
                .iter()
                .map(|t| {
                    t.log.last().map_or("no message".into(), |x| match &x.answer {
                        Answer::Empty => "empty 200".to_string(),
                        a => a.message().map_or("?".into(), |m| format!("MsgID {} without commands", m.hdr.msg_id)),
                    })
                })
                .collect();
            format!("{} session(s) completed: {}", traces.len(), ends.join("; "))
        },
        |n| format!("{n} of {} session(s) failed", traces.len()),
    ));
    out
}

/// Package 1 with a 4294967297 CmdID on the session alert and UUIDs on the other commands.
pub async fn large_cmd_ids(target: &mut Target, now: DateTime<Utc>) -> CheckResult {
    let profile = target.device.profile;
    let registry = crate::csp::registry();
    let mut p = Probe::begin(target.exchange.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let mut pkg = p.package1.clone();
    let mut n = 0u32;
    for c in pkg.body.commands.iter_mut() {
        n += 1;
        let id = if n == 1 { "4294967297".to_string() } else { format!("6f1c2a3b-{n:04}-4c5d-8e9f-0a1b2c3d4e5f") };
        set_cmd_id(c, &id);
    }
    let ids: Vec<(String, String)> =
        pkg.body.commands.iter().map(|c| (c.name().to_string(), c.cmd_id().to_string())).collect();
    let answer = p.send(pkg.clone(), false).await;
    let sid = p.session_id().to_string();
    let log = p.end(&mut target.device);
    let mut ev = vec![sent_ev(&sid, &pkg)];
    ev.extend(log.iter().map(|x| answer_ev(&sid, x)));
    let Some(m) = answer.message() else {
        return LARGE_CMD_IDS.result(
            profile,
            Verdict::Fail,
            format!("package 1 with such CmdIDs got {}", answer.describe()),
            ev,
        );
    };
    // The Replace (DevInfo) is judged: Alerts are judged by their own checks.
    let judged: Vec<&(String, String)> = ids.iter().filter(|(name, _)| name != "Alert").collect();
    if judged.is_empty() {
        return LARGE_CMD_IDS.na(profile, "package 1 had no command besides alerts");
    }
    let missing: Vec<String> =
        judged.iter().filter(|(_, id)| status_for(m, "1", id).is_none()).map(|(n, id)| format!("{n} {id}")).collect();
    if missing.is_empty() {
        LARGE_CMD_IDS.result(
            profile,
            Verdict::Pass,
            format!("Statuses name {}", judged.iter().map(|(_, i)| i.as_str()).collect::<Vec<_>>().join(", ")),
            ev,
        )
    } else {
        LARGE_CMD_IDS.result(profile, Verdict::Fail, format!("no Status names {}", missing.join(", ")), ev)
    }
}

fn set_cmd_id(c: &mut Command, id: &str) {
    match c {
        Command::Alert(a) => a.cmd_id = id.into(),
        Command::Add(i) | Command::Replace(i) | Command::Delete(i) | Command::Get(i) | Command::Exec(i) => {
            i.cmd_id = id.into()
        }
        Command::Atomic(k) | Command::Sequence(k) => k.cmd_id = id.into(),
        Command::Status(s) => s.cmd_id = id.into(),
        Command::Results(r) => r.cmd_id = id.into(),
        Command::Unsupported { cmd_id, .. } => *cmd_id = id.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Operation modes

pub const MACHINE_MODE: Spec = Spec {
    id: "machine-mode",
    group: Group::Modes,
    title: "nothing forbidden in a Machine-mode session",
    expected: "with no enrolled user logged on (mode=Machine, LoginStatus none) the server only reads inventory, resets the password or unenrolls: no configuration, no user-scoped command",
    windows: "MDMAgent runs as SYSTEM without the user's impersonation: such commands fail",
    source: "Windows 8.1 MDM operation modes blog post (Machine mode)",
};

pub const WNS_MAINTENANCE_ONLY: Spec = Spec {
    id: "wns-maintenance-only",
    group: Group::Modes,
    title: "WNS (push) configuration only in Maintenance mode",
    expected: "DMClient Provider/<ID>/Push/PFN is set in a Maintenance-mode session, never in Machine mode",
    windows: "the WNS channel needs the enrolled user; in Machine mode its configuration fails",
    source: "Windows 8.1 MDM operation modes blog post; Push notification support for device management",
};

/// The operation-mode checks, judged from the findings of the device's mode gate.
pub fn modes(traces: &[Trace], profile: Profile) -> Vec<CheckResult> {
    let machine: Vec<&Trace> = traces.iter().filter(|t| t.report.summary.mode == Mode::Machine).collect();
    let mut out = Vec::new();
    let rule = |t: &&Trace, names: &[&str]| -> Vec<Evidence> {
        t.report
            .summary
            .findings
            .iter()
            .filter(|f| names.contains(&f.what.as_str()))
            .map(|f| finding_ev(t, f))
            .collect()
    };
    if machine.is_empty() {
        out.push(MACHINE_MODE.na(profile, "no Machine-mode session ran"));
    } else {
        let ev: Vec<Evidence> =
            traces.iter().flat_map(|t| rule(&t, &["machine-mode-command", "machine-mode-user-scope"])).collect();
        let cmds: u32 = machine.iter().map(|t| t.report.summary.commands.len() as u32).sum();
        out.push(MACHINE_MODE.judged(
            profile,
            ev,
            || format!("{} Machine-mode session(s), {cmds} command(s), none forbidden", machine.len()),
            |n| format!("{n} forbidden command(s) in Machine mode"),
        ));
    }
    let ev: Vec<Evidence> = traces.iter().flat_map(|t| rule(&t, &["machine-mode-wns-configuration"])).collect();
    let pfn_in_maintenance =
        traces.iter().filter(|t| t.report.summary.mode == Mode::Maintenance).any(|t| {
            t.report.summary.commands.iter().any(|c| {
                matches!(c.cmd.as_str(), "Add" | "Replace") && c.targets.iter().any(|u| u.ends_with("/Push/PFN"))
            })
        });
    out.push(if !ev.is_empty() {
        WNS_MAINTENANCE_ONLY.result(
            profile,
            Verdict::Fail,
            format!("{} WNS write(s) outside Maintenance mode", ev.len()),
            ev,
        )
    } else if pfn_in_maintenance {
        WNS_MAINTENANCE_ONLY.result(
            profile,
            Verdict::Pass,
            "Push/PFN written in Maintenance mode only".into(),
            Vec::new(),
        )
    } else {
        WNS_MAINTENANCE_ONLY.na(profile, "the server configured no WNS channel (no Push/PFN write)")
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Poll schedule

pub const POLL_SCHEDULE: Spec = Spec {
    id: "poll-schedule",
    group: Group::Poll,
    title: "the poll schedule is one the device keeps as set",
    expected: "DMClient Poll values the device accepts: not all six 0, no third set after an infinite second set, each write answered 200",
    windows: "all six values 0 is a configuration failure; with an infinite second set the device disables the third (reads back 0)",
    source: "DMClient CSP (Configuring the poll schedule)",
};

const POLL_NODES: [&str; 6] = [
    "IntervalForFirstSetOfRetries",
    "NumberOfFirstRetries",
    "IntervalForSecondSetOfRetries",
    "NumberOfSecondRetries",
    "IntervalForRemainingScheduledRetries",
    "NumberOfRemainingScheduledRetries",
];

/// The poll schedule the device holds after the run's sessions.
pub fn poll_schedule(device: &Device, profile: Profile) -> CheckResult {
    let base = format!("Vendor/MSFT/DMClient/Provider/{}/Poll", device.provider_id);
    let values: Vec<Option<u32>> = POLL_NODES
        .iter()
        .map(|n| device.tree.value(&format!("{base}/{n}")).and_then(|v| v.trim().parse().ok()))
        .collect();
    if values.iter().all(Option::is_none) {
        return POLL_SCHEDULE.na(profile, "the server set no poll schedule (no DMClient Poll value)");
    }
    // A value the server left alone keeps the CSP page's default (10 polls every 15 minutes).
    const DEFAULTS: [u32; 6] = [15, 10, 0, 0, 0, 0];
    let v: Vec<u32> = values.iter().zip(DEFAULTS).map(|(x, d)| x.unwrap_or(d)).collect();
    let shown = POLL_NODES
        .iter()
        .zip(&values)
        .map(|(n, x)| format!("{n}={}", x.map_or("-".into(), |x| x.to_string())))
        .collect::<Vec<_>>()
        .join(", ");
    let ev = vec![Evidence {
        from: "device".into(),
        session_id: String::new(),
        msg_id: String::new(),
        cmd_id: String::new(),
        what: format!("{base}: {shown}"),
    }];
    if v.iter().all(|x| *x == 0) {
        return POLL_SCHEDULE.result(
            profile,
            Verdict::Fail,
            "all six poll values are 0: the device reports a configuration failure".into(),
            ev,
        );
    }
    if v[2] > 0 && v[3] == 0 && (v[4] > 0 || v[5] > 0) {
        return POLL_SCHEDULE.result(
            profile,
            Verdict::Fail,
            "the second set repeats forever and a third set is set too: the device disables the third".into(),
            ev,
        );
    }
    POLL_SCHEDULE.result(profile, Verdict::Pass, shown, ev)
}

// ---------------------------------------------------------------------------------------------
// Profiles

pub const READ_BACK: Spec = Spec {
    id: "read-back",
    group: Group::Profiles,
    title: "what the server sets, it reads back",
    expected: "each Policy CSP setting written is read with Get in a later session",
    windows: "a setting can fail to apply later (a conflicting policy, a reboot); only a Get shows what the device holds",
    source: "Policy CSP; [MS-MDM] Protocol Details (Get)",
};

pub const ATOMIC_PROFILES: Spec = Spec {
    id: "atomic-profiles",
    group: Group::Profiles,
    title: "several settings of one profile go in one Atomic",
    expected: "two or more Policy CSP writes of one message are children of an Atomic",
    windows: "Windows applies an Atomic all or nothing (507 and 216 when one child fails)",
    source: "Policy CSP; OMA DM 1.2 (Atomic)",
};

pub const ADD_BEFORE_REPLACE: Spec = Spec {
    id: "add-before-replace",
    group: Group::Profiles,
    title: "no Replace on a node that needs Add",
    expected: "a node that does not exist yet is created with Add; a Replace of it is answered 404",
    windows: "Windows answers 404 and changes nothing",
    source: "OMA DM 1.2 (Add, Replace); DMClient CSP, EnterpriseAppManagement CSP (nodes created with Add)",
};

pub const REPLACE_AFTER_418: Spec = Spec {
    id: "replace-after-418",
    group: Group::Profiles,
    title: "418 (already exists) is followed by a Replace",
    expected: "an Add answered 418 is sent again as a Replace of the same node",
    windows: "Windows answers an Add of an existing node 418 and keeps the old value",
    source: "OMA DM 1.2 status codes (418 Already exists)",
};

fn norm(uri: &str) -> String {
    let u = uri.trim();
    u.strip_prefix("./Device/").map(|r| format!("./{r}")).unwrap_or_else(|| u.to_string())
}

/// The profile checks, judged from the commands the device answered in the ordinary sessions.
pub fn profiles(traces: &[Trace], profile: Profile) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let is_policy = |u: &str| u.contains("/Policy/Config/");
    // Read back.
    let mut judged = 0;
    let mut ev = Vec::new();
    for (i, t) in traces.iter().enumerate() {
        for c in &t.report.summary.commands {
            if !matches!(c.cmd.as_str(), "Add" | "Replace") || c.status != 200 {
                continue;
            }
            for u in c.targets.iter().filter(|u| is_policy(u)) {
                if i + 1 == traces.len() {
                    continue;
                }
                judged += 1;
                let read = traces[i + 1..].iter().any(|l| {
                    l.report
                        .summary
                        .commands
                        .iter()
                        .any(|g| g.cmd == "Get" && g.targets.iter().any(|x| norm(x) == norm(u)))
                });
                if !read {
                    ev.push(Evidence {
                        from: "server".into(),
                        session_id: t.report.summary.session_id.clone(),
                        msg_id: c.msg_id.clone(),
                        cmd_id: c.cmd_id.clone(),
                        what: format!(
                            "{} {u} (200), never read with Get in the {} later session(s)",
                            c.cmd,
                            traces.len() - i - 1
                        ),
                    });
                }
            }
        }
    }
    out.push(READ_BACK.judged_over(
        profile,
        judged,
        "the server wrote no Policy CSP setting before the last session",
        ev,
        || format!("{judged} setting(s) written, each read back later"),
        |n| format!("{n} of {judged} setting(s) never read back"),
    ));
    // Atomic for several settings.
    let mut in_atomic = 0;
    let mut ev = Vec::new();
    for t in traces {
        for x in &t.log {
            let Some(m) = x.answer.message() else { continue };
            let loose: Vec<&Command> = m
                .body
                .commands
                .iter()
                .filter(|c| {
                    matches!(c, Command::Add(_) | Command::Replace(_))
                        && probe::first_target(c).is_some_and(|u| is_policy(&u))
                })
                .collect();
            in_atomic += m
                .body
                .commands
                .iter()
                .filter(|c| matches!(c, Command::Atomic(k) if k.commands.iter().any(|k| probe::first_target(k).is_some_and(|u| is_policy(&u)))))
                .count();
            if loose.len() >= 2 {
                ev.push(Evidence {
                    from: "server".into(),
                    session_id: t.report.summary.session_id.clone(),
                    msg_id: m.hdr.msg_id.clone(),
                    cmd_id: loose.iter().map(|c| c.cmd_id().to_string()).collect::<Vec<_>>().join(","),
                    what: format!("{} Policy writes outside an Atomic: {}", loose.len(), describe(m)),
                });
            }
        }
    }
    out.push(if !ev.is_empty() {
        ATOMIC_PROFILES.result(
            profile,
            Verdict::Fail,
            format!("{} message(s) with several Policy writes outside an Atomic", ev.len()),
            ev,
        )
    } else if in_atomic > 0 {
        ATOMIC_PROFILES.result(profile, Verdict::Pass, format!("{in_atomic} Atomic(s) of Policy writes"), Vec::new())
    } else {
        ATOMIC_PROFILES.na(profile, "no message held several Policy CSP writes")
    });
    // Replace where Add is needed, and 418.
    let records: Vec<(&Trace, &crate::session::CommandRecord)> =
        traces.iter().flat_map(|t| t.report.summary.commands.iter().map(move |c| (t, c))).collect();
    let replaces = records.iter().filter(|(_, c)| c.cmd == "Replace").count();
    let ev: Vec<Evidence> = records
        .iter()
        .filter(|(_, c)| c.cmd == "Replace" && c.status == 404)
        .map(|(t, c)| Evidence {
            from: "server".into(),
            session_id: t.report.summary.session_id.clone(),
            msg_id: c.msg_id.clone(),
            cmd_id: c.cmd_id.clone(),
            what: format!("Replace {} answered 404: the node does not exist and needs Add", c.targets.join(", ")),
        })
        .collect();
    out.push(if !ev.is_empty() {
        ADD_BEFORE_REPLACE.result(profile, Verdict::Fail, format!("{} Replace(s) of missing nodes", ev.len()), ev)
    } else if replaces > 0 {
        ADD_BEFORE_REPLACE.result(
            profile,
            Verdict::Pass,
            format!("{replaces} Replace(s), each of an existing node"),
            Vec::new(),
        )
    } else {
        ADD_BEFORE_REPLACE.na(profile, "the server sent no Replace")
    });
    let mut judged = 0;
    let mut ev = Vec::new();
    for (i, (t, c)) in records.iter().enumerate() {
        if c.cmd != "Add" || c.status != 418 {
            continue;
        }
        judged += 1;
        let followed = records[i + 1..]
            .iter()
            .any(|(_, r)| r.cmd == "Replace" && r.targets.iter().any(|u| c.targets.iter().any(|x| norm(x) == norm(u))));
        if !followed {
            ev.push(Evidence {
                from: "server".into(),
                session_id: t.report.summary.session_id.clone(),
                msg_id: c.msg_id.clone(),
                cmd_id: c.cmd_id.clone(),
                what: format!("Add {} answered 418, no Replace of it followed", c.targets.join(", ")),
            });
        }
    }
    out.push(REPLACE_AFTER_418.judged_over(
        profile,
        judged,
        "no Add was answered 418",
        ev,
        || format!("{judged} Add(s) answered 418, each followed by a Replace"),
        |n| format!("{n} of {judged} 418(s) not followed by a Replace"),
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// Robustness

pub const CSP_500: Spec = Spec {
    id: "csp-500",
    group: Group::Robustness,
    title: "a command the device answers 500 (the CSP failed)",
    expected: "the server answers the device's reply with SyncML (SyncHdr status first) or an empty 200, and the session ends within the device's bound",
    windows: "a CSP error is an ordinary outcome; the device expects the session to go on",
    source: "OMA DM 1.2 status codes (500 Command failed); [MS-MDM] Protocol Details",
};

pub const CSP_405: Spec = Spec {
    id: "csp-405",
    group: Group::Robustness,
    title: "a command the device answers 405 (not allowed)",
    expected: "the server answers the device's reply with SyncML (SyncHdr status first) or an empty 200, and the session ends within the device's bound",
    windows: "Windows answers 405 to commands a node or a mode does not allow",
    source: "OMA DM 1.2 status codes (405 Command not allowed)",
};

pub const CSP_404: Spec = Spec {
    id: "csp-404",
    group: Group::Robustness,
    title: "a command the device answers 404 (not found)",
    expected: "the server answers the device's reply with SyncML (SyncHdr status first) or an empty 200, and the session ends within the device's bound",
    windows: "Windows answers 404 for nodes that do not exist on this device or edition",
    source: "OMA DM 1.2 status codes (404 Not found)",
};

pub const DEVICE_DISAPPEARS: Spec = Spec {
    id: "device-disappears",
    group: Group::Robustness,
    title: "a device that leaves a session unanswered starts the next one normally",
    expected: "after a session the device abandoned mid-way, the next package 1 (a new SessionID) is answered with SyncML whose SyncHdr status is 200",
    windows: "a device loses its network or is turned off at any moment; its next session starts afresh",
    source: "[MS-MDM] Protocol Details (sessions); OMA DM 1.2 (session abort)",
};

pub const REPEATED_PACKAGE_1: Spec = Spec {
    id: "repeated-package-1",
    group: Group::Robustness,
    title: "a package 1 sent twice (a retry) is answered",
    expected: "the same package 1 (same SessionID, MsgID 1) sent again is answered with SyncML whose SyncHdr status names MsgID 1, not an HTTP error",
    windows: "Windows sends package 1 again when the first answer was lost (connection retries, ConnRetryFreq)",
    source: "w7 APPLICATION CSP (CONNRETRYFREQ); [MS-MDM] Transport",
};

/// Whether a server answer to a device reply is a sane one: SyncML starting with the SyncHdr
/// Status, or an empty 200.
fn sane(x: &Exchanged) -> Result<(), String> {
    match &x.answer {
        Answer::Empty => Ok(()),
        Answer::Message(m) => match m.body.commands.first() {
            Some(Command::Status(s)) if s.cmd_ref.trim() == "0" => Ok(()),
            _ => Err(format!("the answer does not start with the SyncHdr status: {}", describe(m))),
        },
        other => Err(other.describe()),
    }
}

/// The robustness checks: each drives probe sessions of the device.
pub async fn robustness(target: &mut Target, now: DateTime<Utc>) -> Vec<CheckResult> {
    let profile = target.device.profile;
    let registry = crate::csp::registry();
    let mut out = Vec::new();
    for (spec, code) in [
        (&CSP_500, StatusCode::CommandFailed),
        (&CSP_405, StatusCode::CommandNotAllowed),
        (&CSP_404, StatusCode::NotFound),
    ] {
        let mut p =
            Probe::begin(target.exchange.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
        let pkg = p.package1.clone();
        let first = p.send(pkg, false).await;
        let sid = p.session_id().to_string();
        let Some(m) = first.message().cloned().filter(|m| !work(m).is_empty()) else {
            p.end(&mut target.device);
            out.push(spec.na(
                profile,
                format!("the server sent no command to answer (answer to package 1: {})", first.describe()),
            ));
            continue;
        };
        let mut changed = None;
        let mut reply = p.device_reply(&registry, &mut target.device, &m, now);
        if let Some(r) = reply.as_mut() {
            changed = probe::override_first_status(r, code);
        }
        let (Some(reply), Some(cmd_ref)) = (reply, changed) else {
            p.end(&mut target.device);
            out.push(spec.na(profile, "the device's reply had no Status for a server command to change"));
            continue;
        };
        let answer = p.send(reply, false).await;
        let bounded = p.drive(&registry, &mut target.device, answer, now, &mut |_, r| r).await;
        let log = p.end(&mut target.device);
        let mut ev: Vec<Evidence> = Vec::new();
        for x in &log {
            ev.push(sent_ev(&sid, &x.sent));
            ev.push(answer_ev(&sid, x));
        }
        if let Some(e) = ev.get_mut(2) {
            e.cmd_id = cmd_ref.clone();
        }
        let bad = log.iter().skip(1).find_map(|x| sane(x).err());
        out.push(match (bad, bounded) {
            (Some(why), _) => spec.result(
                profile,
                Verdict::Fail,
                format!("after Status {} for CmdID {cmd_ref}: {why}", code.code()),
                ev,
            ),
            (None, false) => spec.result(
                profile,
                Verdict::Fail,
                format!(
                    "after Status {} for CmdID {cmd_ref} the session went past {} messages",
                    code.code(),
                    probe::MAX_PROBE_MESSAGES
                ),
                ev,
            ),
            (None, true) => spec.result(
                profile,
                Verdict::Pass,
                format!(
                    "Status {} for CmdID {cmd_ref} taken; the session ended after {} message(s)",
                    code.code(),
                    log.len()
                ),
                ev,
            ),
        });
    }
    // The device disappears, then comes back.
    let mut gone =
        Probe::begin(target.exchange.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let pkg = gone.package1.clone();
    gone.send(pkg, false).await;
    let gone_sid = gone.session_id().to_string();
    let gone_log = gone.end(&mut target.device);
    let mut back =
        Probe::begin(target.exchange.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let pkg = back.package1.clone();
    let answer = back.send(pkg, false).await;
    let back_sid = back.session_id().to_string();
    back.drive(&registry, &mut target.device, answer.clone(), now, &mut |_, r| r).await;
    let back_log = back.end(&mut target.device);
    let mut ev: Vec<Evidence> = gone_log.iter().map(|x| answer_ev(&gone_sid, x)).collect();
    ev.push(Evidence {
        from: "device".into(),
        session_id: gone_sid.clone(),
        msg_id: String::new(),
        cmd_id: String::new(),
        what: "the device sends nothing more in this session".into(),
    });
    ev.extend(back_log.iter().take(1).map(|x| answer_ev(&back_sid, x)));
    out.push(match answer.message().and_then(|m| status_for(m, "1", "0")) {
        Some(s) if accepted(s) => DEVICE_DISAPPEARS.result(
            profile,
            Verdict::Pass,
            format!(
                "session {back_sid} answered with SyncHdr status {} after session {gone_sid} was abandoned",
                s.data.trim()
            ),
            ev,
        ),
        Some(s) => DEVICE_DISAPPEARS.result(
            profile,
            Verdict::Fail,
            format!("SyncHdr status {} for the next session", s.data.trim()),
            ev,
        ),
        None => DEVICE_DISAPPEARS.result(
            profile,
            Verdict::Fail,
            format!("the next session's package 1 got {}", answer.describe()),
            ev,
        ),
    });
    // Package 1 twice.
    let mut p = Probe::begin(target.exchange.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let pkg = p.package1.clone();
    p.send(pkg.clone(), false).await;
    let again = p.send(pkg, false).await;
    let sid = p.session_id().to_string();
    p.drive(&registry, &mut target.device, again.clone(), now, &mut |_, r| r).await;
    let log = p.end(&mut target.device);
    let ev: Vec<Evidence> = log.iter().take(2).map(|x| answer_ev(&sid, x)).collect();
    out.push(match again.message().and_then(|m| status_for(m, "1", "0").map(|s| (m, s))) {
        Some((_, s)) => REPEATED_PACKAGE_1.result(
            profile,
            Verdict::Pass,
            format!("the repeated package 1 was answered with SyncHdr status {}", s.data.trim()),
            ev,
        ),
        None => REPEATED_PACKAGE_1.result(
            profile,
            Verdict::Fail,
            format!("the repeated package 1 got {}", again.describe()),
            ev,
        ),
    });
    out
}

// ---------------------------------------------------------------------------------------------
// The server copes with the device

pub const MULTI_MESSAGE: Spec = Spec {
    id: "multi-message-package",
    group: Group::Copes,
    title: "a device package in two messages (Alert 1222)",
    expected: "a device message without <Final/> is answered with Statuses and Alert 1222 (send the rest); the next message's commands get their Statuses",
    windows: "Windows splits a package over several messages when it passes MaxMsgSize",
    source: "OMA DM 1.2 Protocol (multiple messages in a package, Alert 1222)",
};

pub const KEEP_ALIVE: Spec = Spec {
    id: "keep-alive-1224",
    group: Group::Copes,
    title: "the device's keep-alive (Alert 1224 request pending) while it works",
    expected: "a keep-alive message is answered with SyncML holding a Status 200 for the alert and no new command, not with the end of the session",
    windows: "Windows sends it when commands take long (DMClient EnableOmaDmKeepAliveMessage); an empty answer ends the session and the results are lost",
    source: "DMClient CSP (EnableOmaDmKeepAliveMessage, com.microsoft.mdm.requestpending)",
};

pub const SESSION_ALERTS: Spec = Spec {
    id: "session-alerts",
    group: Group::Copes,
    title: "client-initiated (1201) and server-initiated (1200) session alerts",
    expected: "package 1 with Alert 1201, and one with Alert 1200, each get a Status 200 for the alert",
    windows: "Windows sends 1200 when a push started the session, 1201 otherwise",
    source: "OMA DM 1.2 alert codes (1200, 1201); [MS-MDM] Protocol Details (package 1)",
};

pub const LOGIN_STATUS: Spec = Spec {
    id: "login-status",
    group: Group::Copes,
    title: "the LoginStatus client event (Alert 1224)",
    expected: "the generic Alert 1224 com.microsoft/MDM/LoginStatus of package 1 gets a Status 200",
    windows: "Windows 10 reports who is logged on in every package 1",
    source: "OMA DM protocol support (LoginStatus); [MS-MDM] package 1",
};

pub const GENERIC_ALERT: Spec = Spec {
    id: "generic-alert-msi",
    group: Group::Copes,
    title: "a generic alert: the result of an MSI install",
    expected: "Alert 1224 of type com.microsoft.mdm.win32csp_install gets a Status 200",
    windows: "Windows reports an MSI install's outcome with this alert, once",
    source: "EnterpriseDesktopAppManagement CSP (the install alert)",
};

pub const SIGNED_MESSAGE: Spec = Spec {
    id: "signed-message",
    group: Group::Copes,
    title: "a signed device message (MDM-Signature header)",
    expected: "a message carrying a CMS detached signature of its body is answered like any other (SyncHdr status 200)",
    windows: "Windows signs every message once DMClient RequireMessageSigning is true",
    source: "DMClient CSP (RequireMessageSigning); [MS-MDE2] (MDM-Signature)",
};

pub const USER_UNENROLL: Spec = Spec {
    id: "user-unenroll-1226",
    group: Group::Copes,
    title: "the user's unenrollment (Alert 1226)",
    expected: "Alert 1226 com.microsoft:mdm.unenrollment.userrequest in package 1 gets a Status 200",
    windows: "Windows sends it once, best effort, when the user disconnects the work account",
    source: "DMClient CSP (unenrollment); OMA DM protocol support (generic alerts)",
};

/// The Status for the alert of package 1 whose code is `code` (and, when given, item type).
fn alert_status<'a>(
    pkg: &SyncMl,
    answer: &'a Answer,
    code: &str,
    ty: Option<&str>,
) -> (Option<String>, Option<&'a Status>) {
    let alert = pkg.body.commands.iter().find_map(|c| match c {
        Command::Alert(a)
            if a.data.trim() == code
                && ty.is_none_or(|t| {
                    a.items.iter().any(|i| i.meta.as_ref().and_then(|m| m.type_.as_deref()) == Some(t))
                }) =>
        {
            Some(a.cmd_id.clone())
        }
        _ => None,
    });
    let status = alert.as_ref().and_then(|id| answer.message().and_then(|m| status_for(m, &pkg.hdr.msg_id, id)));
    (alert, status)
}

/// Judges the Status of one alert of `pkg` in `answer`.
fn judge_alert(
    spec: &Spec,
    profile: Profile,
    sid: &str,
    pkg: &SyncMl,
    answer: &Answer,
    code: &str,
    ty: Option<&str>,
) -> CheckResult {
    let (alert, status) = alert_status(pkg, answer, code, ty);
    let Some(cmd_id) = alert else { return spec.na(profile, format!("package 1 holds no Alert {code}")) };
    let mut ev = vec![sent_ev(sid, pkg)];
    ev.push(Evidence {
        from: "server".into(),
        session_id: sid.to_string(),
        msg_id: answer.message().map(|m| m.hdr.msg_id.clone()).unwrap_or_default(),
        cmd_id: cmd_id.clone(),
        what: answer.describe(),
    });
    match status {
        Some(s) if s.data.trim() == "200" => {
            spec.result(profile, Verdict::Pass, format!("Alert {code} (CmdID {cmd_id}) got Status 200"), ev)
        }
        Some(s) => spec.result(
            profile,
            Verdict::Fail,
            format!("Alert {code} (CmdID {cmd_id}) got Status {}", s.data.trim()),
            ev,
        ),
        None => spec.result(profile, Verdict::Fail, format!("no Status for Alert {code} (CmdID {cmd_id})"), ev),
    }
}

/// The alert of an MSI install that finished (the CSP page's example).
fn msi_alert() -> Alert {
    Alert {
        data: "1224".into(),
        items: vec![Item {
            source: Some(
                "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7B5B7A7F3C-0A2B-4C8D-9E1F-2A3B4C5D6E7F%7D/DownloadInstall".into(),
            ),
            meta: Some(Box::new(Meta {
                type_: Some(crate::csp::desktop_app::ALERT_TYPE.into()),
                format: Some("int".into()),
                mark: Some("informational".into()),
                ..Meta::default()
            })),
            data: Some("0".into()),
            ..Item::default()
        }],
        ..Alert::default()
    }
}

/// The checks of what the server must cope with; the user unenrollment runs last.
pub async fn copes(target: &mut Target, now: DateTime<Utc>) -> Vec<CheckResult> {
    let profile = target.device.profile;
    let registry = crate::csp::registry();
    let ex = target.exchange.clone();
    let mut out = Vec::new();

    // A package 1 in two messages.
    let mut p = Probe::begin(ex.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let sid = p.session_id().to_string();
    let (alerts, rest): (Vec<Command>, Vec<Command>) =
        p.package1.body.commands.clone().into_iter().partition(|c| matches!(c, Command::Alert(_)));
    let first = p.message(1, alerts, false);
    let a1 = p.send(first.clone(), false).await;
    let mut ev = vec![sent_ev(&sid, &first), answer_ev(&sid, p.log.last().expect("just sent"))];
    let asks = a1
        .message()
        .is_some_and(|m| m.body.commands.iter().any(|c| matches!(c, Command::Alert(a) if a.data.trim() == "1222")));
    let result = if !asks {
        MULTI_MESSAGE.result(
            profile,
            Verdict::Fail,
            format!("the first message (no Final) got no Alert 1222: {}", a1.describe()),
            ev,
        )
    } else if rest.is_empty() {
        MULTI_MESSAGE.na(profile, "package 1 had nothing to put in a second message")
    } else {
        let m1 = a1.message().expect("checked above");
        let mut cmds = vec![Command::Status(Status {
            cmd_id: "1".into(),
            msg_ref: m1.hdr.msg_id.clone(),
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            data: "200".into(),
            ..Status::default()
        })];
        let mut ids = Vec::new();
        for (i, mut c) in rest.into_iter().enumerate() {
            let id = (i + 2).to_string();
            set_cmd_id(&mut c, &id);
            ids.push(format!("{} {id}", c.name()));
            cmds.push(c);
        }
        let second = p.message(2, cmds, true);
        let a2 = p.send(second.clone(), false).await;
        ev.push(sent_ev(&sid, &second));
        ev.push(answer_ev(&sid, p.log.last().expect("just sent")));
        let missing: Vec<&String> = ids
            .iter()
            .filter(|n| {
                let id = n.rsplit(' ').next().unwrap_or_default();
                a2.message().and_then(|m| status_for(m, "2", id)).is_none()
            })
            .collect();
        if missing.is_empty() {
            MULTI_MESSAGE.result(
                profile,
                Verdict::Pass,
                "Alert 1222 after the first message; Statuses for the second".into(),
                ev,
            )
        } else {
            MULTI_MESSAGE.result(
                profile,
                Verdict::Fail,
                format!(
                    "the second message's {} got no Status ({})",
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    a2.describe()
                ),
                ev,
            )
        }
    };
    p.end(&mut target.device);
    out.push(result);

    // A keep-alive while the device works on the server's commands.
    let mut p = Probe::begin(ex.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let sid = p.session_id().to_string();
    let pkg = p.package1.clone();
    let a1 = p.send(pkg, false).await;
    let result = match a1.message().filter(|m| !work(m).is_empty()) {
        None => KEEP_ALIVE
            .na(profile, format!("the server sent no command the device could be busy with ({})", a1.describe())),
        Some(m1) => {
            let cmds = vec![
                Command::Status(Status {
                    cmd_id: "1".into(),
                    msg_ref: m1.hdr.msg_id.clone(),
                    cmd_ref: "0".into(),
                    cmd: "SyncHdr".into(),
                    data: "200".into(),
                    ..Status::default()
                }),
                Command::Alert(crate::csp::dmclient::request_pending_alert("2")),
            ];
            let ka = p.message(2, cmds, false);
            let a2 = p.send(ka.clone(), false).await;
            let ev = vec![sent_ev(&sid, &ka), answer_ev(&sid, p.log.last().expect("just sent"))];
            match &a2 {
                Answer::Message(m2) => {
                    let st = status_for(m2, "2", "2");
                    let new_work = work(m2);
                    match (st, new_work.is_empty()) {
                        (Some(s), true) if s.data.trim() == "200" => KEEP_ALIVE.result(
                            profile,
                            Verdict::Pass,
                            "the keep-alive got Status 200 and no new command".into(),
                            ev,
                        ),
                        (Some(s), true) => KEEP_ALIVE.result(
                            profile,
                            Verdict::Fail,
                            format!("the keep-alive alert got Status {}", s.data.trim()),
                            ev,
                        ),
                        (None, _) => {
                            KEEP_ALIVE.result(profile, Verdict::Fail, "no Status for the keep-alive alert".into(), ev)
                        }
                        (Some(_), false) => KEEP_ALIVE.result(
                            profile,
                            Verdict::Fail,
                            format!("{} new command(s) while the device said it was busy", new_work.len()),
                            ev,
                        ),
                    }
                }
                other => {
                    KEEP_ALIVE.result(profile, Verdict::Fail, format!("the keep-alive got {}", other.describe()), ev)
                }
            }
        }
    };
    p.end(&mut target.device);
    out.push(result);

    // Session alerts, LoginStatus and a generic alert, in two ordinary package 1s.
    let mut results_1201 = None;
    let mut statuses = Vec::new();
    for code in ["1201", "1200"] {
        let extra = if code == "1201" { vec![msi_alert()] } else { Vec::new() };
        let mut p = Probe::begin(ex.as_ref(), &registry, &mut target.device, Trigger::Manual, extra, now);
        let sid = p.session_id().to_string();
        let mut pkg = p.package1.clone();
        if let Some(Command::Alert(a)) = pkg.body.commands.first_mut() {
            a.data = code.into();
        }
        let answer = p.send(pkg.clone(), false).await;
        p.drive(&registry, &mut target.device, answer.clone(), now, &mut |_, r| r).await;
        p.end(&mut target.device);
        statuses.push(judge_alert(&SESSION_ALERTS, profile, &sid, &pkg, &answer, code, None));
        if code == "1201" {
            results_1201 = Some((sid, pkg, answer));
        }
    }
    let failed: Vec<&CheckResult> = statuses.iter().filter(|r| r.verdict != Verdict::Pass).collect();
    let ev: Vec<Evidence> = statuses.iter().flat_map(|r| r.evidence.clone()).collect();
    out.push(if failed.is_empty() {
        SESSION_ALERTS.result(profile, Verdict::Pass, "Alert 1201 and Alert 1200 each got Status 200".into(), ev)
    } else {
        let verdict =
            if failed.iter().any(|r| r.verdict == Verdict::Fail) { Verdict::Fail } else { Verdict::NotApplicable };
        SESSION_ALERTS.result(
            profile,
            verdict,
            failed.iter().map(|r| r.observed.clone()).collect::<Vec<_>>().join("; "),
            ev,
        )
    });
    let (sid, pkg, answer) = results_1201.expect("the 1201 probe ran");
    out.push(if profile == Profile::Win10 {
        judge_alert(&LOGIN_STATUS, profile, &sid, &pkg, &answer, "1224", Some(LOGIN_STATUS_TYPE))
    } else {
        LOGIN_STATUS.na(profile, "Windows 8.1 sends no LoginStatus")
    });
    out.push(judge_alert(
        &GENERIC_ALERT,
        profile,
        &sid,
        &pkg,
        &answer,
        "1224",
        Some(crate::csp::desktop_app::ALERT_TYPE),
    ));

    // A signed package 1.
    let mut p = Probe::begin(ex.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let sid = p.session_id().to_string();
    let pkg = p.package1.clone();
    let answer = p.send(pkg.clone(), true).await;
    let unsigned = p.unsigned.clone();
    p.drive(&registry, &mut target.device, answer.clone(), now, &mut |_, r| r).await;
    let log = p.end(&mut target.device);
    let ev: Vec<Evidence> = log.iter().take(1).map(|x| answer_ev(&sid, x)).collect();
    out.push(match (unsigned, answer.message().and_then(|m| status_for(m, "1", "0"))) {
        (Some(why), _) => SIGNED_MESSAGE.na(profile, format!("the device holds no key to sign with ({why})")),
        (None, Some(s)) => {
            let verdict = if accepted(s) { Verdict::Pass } else { Verdict::Fail };
            SIGNED_MESSAGE.result(
                profile,
                verdict,
                format!("the signed package 1 got SyncHdr status {}", s.data.trim()),
                ev,
            )
        }
        (None, None) => {
            SIGNED_MESSAGE.result(profile, Verdict::Fail, format!("the signed package 1 got {}", answer.describe()), ev)
        }
    });

    // MD5 authentication: a challenge, then the nonce it gave in the next session.
    out.extend(md5(target, now).await);

    // A large Results value in chunks.
    out.push(large_object(target, now).await);

    // The user leaves: last, since the server may stop managing the device.
    let mut p = Probe::begin(
        ex.as_ref(),
        &registry,
        &mut target.device,
        Trigger::Manual,
        vec![crate::enroll::unenroll_alert("0")],
        now,
    );
    let sid = p.session_id().to_string();
    let pkg = p.package1.clone();
    let answer = p.send(pkg.clone(), false).await;
    p.drive(&registry, &mut target.device, answer.clone(), now, &mut |_, r| r).await;
    p.end(&mut target.device);
    out.push(judge_alert(&USER_UNENROLL, profile, &sid, &pkg, &answer, "1226", None));
    out
}

// ---------------------------------------------------------------------------------------------
// MD5 authentication, large objects, throttling

pub const MD5_CHALLENGE: Spec = Spec {
    id: "md5-challenge",
    group: Group::Copes,
    title: "a Cred over a stale nonce is challenged (401 and a Chal with a fresh NextNonce), and the retry is accepted",
    expected: "package 1 whose syncml:auth-md5 digest uses a nonce the server never gave is answered with SyncHdr Status 401 (or 407) carrying a Chal (Meta Type syncml:auth-md5, Format b64, a NextNonce), not accepted and not a bare HTTP 401; package 1 sent again with the digest over that NextNonce gets SyncHdr Status 200 or 212",
    windows: "Windows answers a challenge once, with b64(md5(b64(md5(name:secret)):nonce)) over the NextNonce; a bare HTTP 401, or a Chal without a NextNonce, ends the session unauthenticated",
    source: "OMA DM 1.2 Security (MD5 digest authentication, Chal, NextNonce); Microsoft OMA DM protocol support page (authentication); w7 APPLICATION CSP (APPAUTH)",
};

pub const MD5_REKEY: Spec = Spec {
    id: "md5-rekey",
    group: Group::Copes,
    title: "the NextNonce the server gave is the nonce of the next session",
    expected: "a new session whose Cred is the digest over the last NextNonce the server sent gets SyncHdr Status 200 or 212, not another challenge",
    windows: "Windows keeps each NextNonce (DMAcc AppAuth CLCRED AAuthData) and digests the next session's Cred with it",
    source: "OMA DM 1.2 Security (NextNonce, the nonce of the next session); DMAcc CSP (AppAuth, AAuthData)",
};

pub const LARGE_OBJECT: Spec = Spec {
    id: "large-object-from-device",
    group: Group::Copes,
    title: "a Results value the device sends in chunks (MoreData)",
    expected: "each chunk of a Results item sent with <MoreData/> (the first with Meta Size, the whole size) in a message without Final gets Status 213 (chunked item accepted and buffered); the last chunk, without MoreData, is taken and the session goes on",
    windows: "Windows splits an item larger than the server's MaxObjSize or MaxMsgSize into chunks, one per message, and sends the next after the 213",
    source: "OMA DM 1.2 Protocol (Large Object Handling: MoreData, Status 213, Meta Size); OMA DM 1.2 Representation Protocol (MoreData, MaxObjSize)",
};

pub const THROTTLING: Spec = Spec {
    id: "throttling-retry-after",
    group: Group::Copes,
    title: "a throttled message (HTTP 429 or 503) says when to come back, and the retry is taken",
    expected: "an HTTP 429 or 503 answer carries a Retry-After header; the same message sent again after that wait is answered (SyncML or an empty 200) and its session completes",
    windows: "Windows waits as Retry-After asks and sends the same message again; without the header it falls back to its own retry schedule (CONNRETRYFREQ, INITIALBACKOFFTIME, MAXBACKOFFTIME)",
    source: "RFC 9110 (Retry-After; 503 Service Unavailable); RFC 6585 (429 Too Many Requests); w7 APPLICATION CSP (CONNRETRYFREQ, INITIALBACKOFFTIME, MAXBACKOFFTIME)",
};

/// The nonce a stale Cred is digested over: one no server gave.
const STALE_NONCE: &[u8] = b"mdmsim-stale-nonce";

/// The code of the SyncHdr Status for device message `msg_id` in `answer`, and that Status.
fn hdr_status<'a>(answer: &'a Answer, msg_id: &str) -> Option<&'a Status> {
    answer.message().and_then(|m| status_for(m, msg_id.trim(), "0"))
}

fn accepted(s: &Status) -> bool {
    matches!(s.data.trim(), "200" | "212")
}

/// What is wrong with a challenge (`None` when it is a usable MD5 challenge with a fresh nonce).
fn bad_chal(s: &Status) -> Option<String> {
    use base64::Engine as _;
    let Some(chal) = &s.chal else {
        return Some(format!("SyncHdr Status {} without a Chal", s.data.trim()));
    };
    let ty = chal.meta.type_.as_deref().map(str::trim);
    if ty.is_some_and(|t| t != "syncml:auth-md5") {
        return Some(format!("a Chal of type {:?}, not syncml:auth-md5", ty.unwrap_or_default()));
    }
    let Some(n) = chal.meta.next_nonce.as_deref().map(str::trim) else {
        return Some("a Chal without a NextNonce".into());
    };
    match base64::engine::general_purpose::STANDARD.decode(n.as_bytes()) {
        Err(e) => Some(format!("NextNonce {n:?} is not base64: {e}")),
        Ok(b) if b.is_empty() => Some("an empty NextNonce".into()),
        Ok(b) if b == STALE_NONCE => Some("the NextNonce is the stale nonce the device used".into()),
        Ok(_) => None,
    }
}

/// A probe's package 1 with its Cred replaced by an MD5 digest of `name`/`secret` over `nonce`.
fn with_cred(pkg: &SyncMl, name: &str, secret: &str, nonce: &[u8]) -> SyncMl {
    let mut m = pkg.clone();
    m.hdr.cred = Some(Box::new(crate::syncml::Cred {
        meta: Meta::typed("syncml:auth-md5", Some("b64")),
        data: crate::enroll::digest_md5(name, secret, nonce),
    }));
    m
}

/// The MD5 challenge and rekey checks. Every challenge the server sends is kept as the device
/// keeps it (its NextNonce is the next session's nonce), so later probes start in step.
pub async fn md5(target: &mut Target, now: DateTime<Utc>) -> Vec<CheckResult> {
    use crate::enroll::{AppAuth, AuthType};
    let profile = target.device.profile;
    let registry = crate::csp::registry();
    let client = AppAuth::load(&target.device.tree)
        .and_then(|a| a.client)
        .filter(|c| c.auth_type == AuthType::Digest && !c.name.is_empty());
    let Some(client) = client else {
        let why = "the device holds no MD5 credentials: the provisioning document gave no APPAUTH (DMAcc AppAuth CLCRED, AAuthPref DIGEST), so the server does not use application-layer authentication";
        return vec![MD5_CHALLENGE.na(profile, why), MD5_REKEY.na(profile, why)];
    };
    let (name, secret) = (client.name.clone(), client.secret.expose().to_string());
    let keep = |device: &mut Device, log: &[Exchanged]| {
        for x in log {
            if let Some(chal) = x
                .answer
                .message()
                .and_then(|m| status_for(m, x.sent.hdr.msg_id.trim(), "0"))
                .and_then(|s| s.chal.as_ref())
            {
                crate::device::auth::keep_next_nonce(&mut device.tree, Some(chal));
            }
        }
    };

    // A digest over a nonce the server never gave.
    let mut p = Probe::begin(target.exchange.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let sid = p.session_id().to_string();
    let stale = with_cred(&p.package1, &name, &secret, STALE_NONCE);
    let a1 = p.send(stale.clone(), false).await;
    let mut ev = vec![sent_ev(&sid, &stale), answer_ev(&sid, p.log.last().expect("just sent"))];
    ev[0].what = format!("{} (Cred: MD5 digest over a nonce the server never gave)", ev[0].what);
    let first = hdr_status(&a1, &stale.hdr.msg_id).cloned();
    let challenge = match (&a1, &first) {
        (_, Some(s)) if matches!(s.data.trim(), "401" | "407") => match bad_chal(s) {
            Some(why) => {
                Err(MD5_CHALLENGE.result(profile, Verdict::Fail, format!("the stale Cred got {why}"), ev.clone()))
            }
            None => Ok(s.clone()),
        },
        (_, Some(s)) if accepted(s) => {
            // Accepted: does the server check the Cred at all? A wrong secret tells.
            let answer = a1.clone();
            p.drive(&registry, &mut target.device, answer, now, &mut |_, r| r).await;
            let log = p.end(&mut target.device);
            keep(&mut target.device, &log);
            let mut q =
                Probe::begin(target.exchange.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
            let qsid = q.session_id().to_string();
            let wrong = with_cred(&q.package1, &name, &format!("{secret}-not-the-secret"), &client.nonce);
            let a2 = q.send(wrong.clone(), false).await;
            ev.push(sent_ev(&qsid, &wrong));
            ev.push(answer_ev(&qsid, q.log.last().expect("just sent")));
            let refused = hdr_status(&a2, &wrong.hdr.msg_id).is_some_and(|s| !accepted(s));
            q.drive(&registry, &mut target.device, a2, now, &mut |_, r| r).await;
            let log = q.end(&mut target.device);
            keep(&mut target.device, &log);
            return if refused {
                vec![
                    MD5_CHALLENGE.result(
                        profile,
                        Verdict::Fail,
                        format!(
                            "a Cred over a nonce the server never gave got SyncHdr Status {} (accepted), though a wrong secret is refused",
                            s.data.trim()
                        ),
                        ev,
                    ),
                    MD5_REKEY.na(profile, "the server sent no NextNonce to carry over"),
                ]
            } else {
                let why = format!(
                    "the server accepted a Cred over a stale nonce (SyncHdr Status {}) and one with a wrong secret: it does not authenticate by the MD5 Cred (the TLS client certificate, presumably)",
                    s.data.trim()
                );
                vec![MD5_CHALLENGE.result(profile, Verdict::NotApplicable, why.clone(), ev), MD5_REKEY.na(profile, why)]
            };
        }
        (_, Some(s)) => Err(MD5_CHALLENGE.result(
            profile,
            Verdict::Fail,
            format!("the stale Cred got SyncHdr Status {}, neither a challenge (401/407) nor accepted", s.data.trim()),
            ev.clone(),
        )),
        (Answer::Failed(e), None) if e.contains("HTTP 401") || e.contains("HTTP 407") => Err(MD5_CHALLENGE.result(
            profile,
            Verdict::Fail,
            format!("the stale Cred got a bare HTTP error, no SyncML Chal to answer: {e}"),
            ev.clone(),
        )),
        (other, None) => Err(MD5_CHALLENGE.result(
            profile,
            Verdict::Fail,
            format!("the stale Cred got {}", other.describe()),
            ev.clone(),
        )),
    };
    let chal_status = match challenge {
        Ok(s) => s,
        Err(result) => {
            let log = p.end(&mut target.device);
            keep(&mut target.device, &log);
            return vec![result, MD5_REKEY.na(profile, "no usable challenge came, so no NextNonce to carry over")];
        }
    };
    // The device answers the challenge as it does in every session.
    let m1 = a1.message().cloned().expect("a SyncHdr status came in a message");
    let retry = p.device_reply(&registry, &mut target.device, &m1, now);
    let challenge_result = match retry {
        None => MD5_CHALLENGE.result(
            profile,
            Verdict::Fail,
            "the device could not answer the challenge (no credentials for it)".into(),
            ev.clone(),
        ),
        Some(retry) => {
            let a2 = p.send(retry.clone(), false).await;
            ev.push(sent_ev(&sid, &retry));
            ev.push(answer_ev(&sid, p.log.last().expect("just sent")));
            let got = hdr_status(&a2, &retry.hdr.msg_id).cloned();
            p.drive(&registry, &mut target.device, a2.clone(), now, &mut |_, r| r).await;
            match got {
                Some(s) if accepted(&s) => MD5_CHALLENGE.result(
                    profile,
                    Verdict::Pass,
                    format!(
                        "the stale Cred got SyncHdr Status {} with a syncml:auth-md5 Chal and a fresh NextNonce; the digest over it got Status {}",
                        chal_status.data.trim(),
                        s.data.trim()
                    ),
                    ev.clone(),
                ),
                Some(s) => MD5_CHALLENGE.result(
                    profile,
                    Verdict::Fail,
                    format!("the Cred over the server's own NextNonce got SyncHdr Status {}", s.data.trim()),
                    ev.clone(),
                ),
                None => MD5_CHALLENGE.result(
                    profile,
                    Verdict::Fail,
                    format!("the Cred over the server's own NextNonce got {}", a2.describe()),
                    ev.clone(),
                ),
            }
        }
    };
    let log = p.end(&mut target.device);
    keep(&mut target.device, &log);
    if challenge_result.verdict != Verdict::Pass {
        return vec![challenge_result, MD5_REKEY.na(profile, "the challenge was not completed")];
    }

    // The next session digests its Cred over the NextNonce the device kept.
    let mut p = Probe::begin(target.exchange.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let sid = p.session_id().to_string();
    let pkg = p.package1.clone();
    let answer = p.send(pkg.clone(), false).await;
    let ev = vec![sent_ev(&sid, &pkg), answer_ev(&sid, p.log.last().expect("just sent"))];
    let got = hdr_status(&answer, &pkg.hdr.msg_id).cloned();
    p.drive(&registry, &mut target.device, answer.clone(), now, &mut |_, r| r).await;
    let log = p.end(&mut target.device);
    keep(&mut target.device, &log);
    let rekey = match (pkg.hdr.cred.is_some(), got) {
        (false, _) => MD5_REKEY.na(profile, "the device sent no Cred in the next session"),
        (true, Some(s)) if accepted(&s) => MD5_REKEY.result(
            profile,
            Verdict::Pass,
            format!("the next session's Cred, over the kept NextNonce, got SyncHdr Status {}", s.data.trim()),
            ev,
        ),
        (true, Some(s)) => MD5_REKEY.result(
            profile,
            Verdict::Fail,
            format!(
                "the next session's Cred, over the NextNonce the server gave, got SyncHdr Status {}",
                s.data.trim()
            ),
            ev,
        ),
        (true, None) => MD5_REKEY.result(
            profile,
            Verdict::Fail,
            format!("the next session's package 1 got {}", answer.describe()),
            ev,
        ),
    };
    vec![challenge_result, rekey]
}

/// The size of the value a large-object probe sends, and of its chunks.
const LARGE_VALUE_BYTES: usize = 6000;
const CHUNK_BYTES: usize = 2500;
/// What a message holds besides its chunk (SyncHdr, Statuses), at least.
const MESSAGE_OVERHEAD: usize = 1000;

/// The device answers a Get of the server with a value in chunks.
pub async fn large_object(target: &mut Target, now: DateTime<Utc>) -> CheckResult {
    let profile = target.device.profile;
    let registry = crate::csp::registry();
    let mut p = Probe::begin(target.exchange.as_ref(), &registry, &mut target.device, Trigger::Manual, Vec::new(), now);
    let sid = p.session_id().to_string();
    let pkg = p.package1.clone();
    let a1 = p.send(pkg, false).await;
    let get = a1.message().and_then(|m| {
        let gets: Vec<&Command> = work(m).into_iter().filter(|c| matches!(c, Command::Get(_))).collect();
        // A Get that is not a profile's read-back, when there is one.
        gets.iter()
            .find(|c| !probe::first_target(c).is_some_and(|u| u.contains("/Policy/")))
            .or(gets.first())
            .map(|c| (*c).clone())
    });
    let Some(get) = get else {
        p.end(&mut target.device);
        return LARGE_OBJECT
            .na(profile, format!("the server sent no Get for the device to answer ({})", a1.describe()));
    };
    let m1 = a1.message().cloned().expect("a Get came in a message");
    let reply = p.device_reply(&registry, &mut target.device, &m1, now);
    let found = reply.as_ref().and_then(|r| {
        r.body
            .commands
            .iter()
            .position(|c| matches!(c, Command::Results(x) if x.cmd_ref == get.cmd_id() && !x.items.is_empty()))
    });
    let (Some(mut reply), Some(at)) = (reply, found) else {
        p.end(&mut target.device);
        return LARGE_OBJECT.na(
            profile,
            format!(
                "the device had no value to return for Get {} (CmdID {})",
                probe::first_target(&get).unwrap_or_default(),
                get.cmd_id()
            ),
        );
    };
    let Command::Results(results) = reply.body.commands[at].clone() else { unreachable!("found above") };
    // Chunks that fit the server's MaxMsgSize when it gives one (OMA DM 1.2 Representation
    // Protocol, MaxMsgSize in the SyncHdr Meta), with room for the rest of the message.
    let max_msg =
        m1.hdr.meta.as_ref().and_then(|m| m.max_msg_size.as_deref()).and_then(|v| v.trim().parse::<usize>().ok());
    let chunk_bytes = match max_msg {
        Some(n) if n > 2 * MESSAGE_OVERHEAD => CHUNK_BYTES.min(n - MESSAGE_OVERHEAD),
        Some(_) => MESSAGE_OVERHEAD,
        None => CHUNK_BYTES,
    };
    // The device's value, made large: it goes on past the item as a long run of text.
    let own = results.items[0].data.clone().unwrap_or_default();
    let mut value = own.clone();
    let filler = "0123456789abcdefghijklmnopqrstuvwxyz";
    while value.len() < LARGE_VALUE_BYTES {
        value.push_str(filler);
    }
    value.truncate(LARGE_VALUE_BYTES.max(own.len()));
    let chars: Vec<char> = value.chars().collect();
    let chunks: Vec<String> = chars.chunks(chunk_bytes).map(|c| c.iter().collect()).collect();
    let item = |i: usize| {
        let mut it = results.items[0].clone();
        it.data = Some(chunks[i].clone());
        it.more_data = i + 1 < chunks.len();
        if i == 0 {
            let mut meta = it.meta.clone().unwrap_or_default();
            meta.size = Some(value.len().to_string());
            it.meta = Some(meta);
        }
        it
    };
    let mut first = results.clone();
    first.items = vec![item(0)];
    // The chunked item is the last of its message: the next message goes on with it.
    reply.body.commands.remove(at);
    reply.body.commands.push(Command::Results(first));
    reply.body.final_ = false;
    let mut ev = Vec::new();
    let mut msg = reply;
    let mut cmd_id = results.cmd_id.clone();
    let mut bad = None;
    let mut last_answer = String::new();
    for i in 0..chunks.len() {
        let answer = p.send(msg.clone(), false).await;
        let mut sent = sent_ev(&sid, &msg);
        sent.cmd_id = cmd_id.clone();
        sent.what = format!(
            "{} (Results chunk {} of {}, {} bytes{})",
            sent.what,
            i + 1,
            chunks.len(),
            chunks[i].len(),
            if i + 1 < chunks.len() { ", MoreData" } else { "" }
        );
        ev.push(sent);
        ev.push(answer_ev(&sid, p.log.last().expect("just sent")));
        last_answer = answer.describe();
        if i + 1 == chunks.len() {
            if let Err(why) = sane(p.log.last().expect("just sent")) {
                bad = Some(format!("the last chunk got {why}"));
            }
            break;
        }
        let Some(m) = answer.message() else {
            bad = Some(format!("chunk {} got {}", i + 1, answer.describe()));
            break;
        };
        match status_for(m, msg.hdr.msg_id.trim(), cmd_id.trim()) {
            Some(s) if s.data.trim() == "213" => {}
            Some(s) => {
                bad = Some(format!("chunk {} (Results CmdID {cmd_id}) got Status {}, not 213", i + 1, s.data.trim()));
                break;
            }
            None => {
                bad = Some(format!("chunk {} (Results CmdID {cmd_id}) got no Status (213 expected)", i + 1));
                break;
            }
        }
        // The next chunk, in the next message: the Status for the server's header, then the item.
        let next_id = msg.hdr.msg_id.trim().parse::<u64>().unwrap_or(1) + 1;
        cmd_id = (900 + i).to_string();
        let hdr = Command::Status(Status {
            cmd_id: "1".into(),
            msg_ref: m.hdr.msg_id.clone(),
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            data: "200".into(),
            ..Status::default()
        });
        let mut next = results.clone();
        next.cmd_id = cmd_id.clone();
        next.items = vec![item(i + 1)];
        let mut n = msg.clone();
        n.hdr.msg_id = next_id.to_string();
        n.body.commands = vec![hdr, Command::Results(next)];
        n.body.final_ = i + 2 == chunks.len();
        msg = n;
    }
    p.end(&mut target.device);
    let what = format!(
        "a {}-byte value for Get {} (CmdID {}) in {} chunks of at most {chunk_bytes} bytes",
        value.len(),
        probe::first_target(&get).unwrap_or_default(),
        get.cmd_id(),
        chunks.len()
    );
    match bad {
        Some(why) => LARGE_OBJECT.result(profile, Verdict::Fail, format!("{what}: {why}"), ev),
        None => LARGE_OBJECT.result(
            profile,
            Verdict::Pass,
            format!("{what}: each chunk before the last got Status 213; the last got {last_answer}"),
            ev,
        ),
    }
}

/// Judges every message of the run the server throttled: each 429/503 must carry Retry-After,
/// and the retry must be answered and its session complete (`ended`: the ordinary sessions,
/// by SessionID, with the error of those that failed).
pub fn throttling(
    seen: &[super::Throttled],
    ended: &std::collections::BTreeMap<String, Option<String>>,
    profile: Profile,
) -> CheckResult {
    if seen.is_empty() {
        return THROTTLING.na(profile, "the server never answered HTTP 429 or 503 during the run");
    }
    let mut ev = Vec::new();
    let mut broke = 0;
    let mut count = 0;
    for t in seen {
        let mut wrong = Vec::new();
        for th in &t.throttles {
            count += 1;
            let header = match &th.retry_after {
                Some(v) => format!("Retry-After {v}"),
                None => {
                    wrong.push(format!("HTTP {} without Retry-After", th.status));
                    "no Retry-After".into()
                }
            };
            ev.push(Evidence {
                from: "server".into(),
                session_id: t.session_id.clone(),
                msg_id: t.msg_id.clone(),
                cmd_id: String::new(),
                what: format!(
                    "HTTP {} with {header} to device MsgID {}; the device waited {} s and sent it again",
                    th.status,
                    t.msg_id,
                    th.waited.as_secs_f32()
                ),
            });
        }
        match &t.answer {
            Answer::Message(_) | Answer::Empty => {}
            other => wrong.push(format!("the retry got {}", other.describe())),
        }
        if let Some(Some(error)) = ended.get(&t.session_id) {
            wrong.push(format!("session {} failed after the retry: {error}", t.session_id));
        }
        ev.push(Evidence {
            from: "server".into(),
            session_id: t.session_id.clone(),
            msg_id: t.answer.message().map(|m| m.hdr.msg_id.clone()).unwrap_or_default(),
            cmd_id: String::new(),
            what: format!("answer to the retry of device MsgID {}: {}", t.msg_id, t.answer.describe()),
        });
        if !wrong.is_empty() {
            broke += 1;
            ev.push(Evidence {
                from: "server".into(),
                session_id: t.session_id.clone(),
                msg_id: t.msg_id.clone(),
                cmd_id: String::new(),
                what: wrong.join("; "),
            });
        }
    }
    if broke == 0 {
        THROTTLING.result(
            profile,
            Verdict::Pass,
            format!(
                "{count} throttling answer(s) to {} message(s), each with Retry-After; every retry was taken",
                seen.len()
            ),
            ev,
        )
    } else {
        THROTTLING.result(
            profile,
            Verdict::Fail,
            format!("{broke} of {} throttled message(s) broke the rule", seen.len()),
            ev,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::device::run::Throttle;

    fn throttled(retry_after: Option<&str>, answer: Answer) -> super::super::Throttled {
        super::super::Throttled {
            session_id: "7".into(),
            msg_id: "2".into(),
            throttles: vec![Throttle {
                status: 503,
                retry_after: retry_after.map(String::from),
                waited: Duration::from_secs(1),
            }],
            answer,
        }
    }

    #[test]
    fn throttling_is_judged_by_its_retry_after_and_what_the_retry_got() {
        let none = BTreeMap::new();
        let na = throttling(&[], &none, Profile::Win10);
        assert_eq!(na.verdict, Verdict::NotApplicable);
        assert_eq!(na.observed, "the server never answered HTTP 429 or 503 during the run");

        let ok = throttling(&[throttled(Some("1"), Answer::Empty)], &none, Profile::Win10);
        assert_eq!(ok.verdict, Verdict::Pass, "{ok:?}");
        assert!(ok.evidence[0].what.contains("HTTP 503 with Retry-After 1 to device MsgID 2"), "{ok:?}");

        let bare = throttling(&[throttled(None, Answer::Empty)], &none, Profile::Win10);
        assert_eq!(bare.verdict, Verdict::Fail);
        assert!(bare.evidence.iter().any(|e| e.what == "HTTP 503 without Retry-After"), "{bare:?}");

        let lost = throttling(&[throttled(Some("1"), Answer::Failed("reset".into()))], &none, Profile::Win10);
        assert_eq!(lost.verdict, Verdict::Fail);
        assert!(lost.evidence.iter().any(|e| e.what.contains("the retry got no SyncML answer: reset")), "{lost:?}");

        let ended = BTreeMap::from([("7".to_string(), Some("timeout".to_string()))]);
        let failed = throttling(&[throttled(Some("1"), Answer::Empty)], &ended, Profile::Win10);
        assert_eq!(failed.verdict, Verdict::Fail);
        assert!(failed.evidence.iter().any(|e| e.what.contains("session 7 failed after the retry: timeout")));
    }

    #[test]
    fn a_challenge_needs_an_md5_chal_with_a_fresh_base64_nonce() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let status = |ty: Option<&str>, nonce: Option<String>| Status {
            data: "401".into(),
            chal: Some(Box::new(crate::syncml::Chal {
                meta: Meta {
                    type_: ty.map(String::from),
                    format: Some("b64".into()),
                    next_nonce: nonce,
                    ..Meta::default()
                },
            })),
            ..Status::default()
        };
        assert_eq!(bad_chal(&status(Some("syncml:auth-md5"), Some(b64(b"fresh")))), None);
        assert_eq!(
            bad_chal(&Status { data: "401".into(), ..Status::default() }).unwrap(),
            "SyncHdr Status 401 without a Chal"
        );
        assert_eq!(bad_chal(&status(Some("syncml:auth-md5"), None)).unwrap(), "a Chal without a NextNonce");
        assert!(bad_chal(&status(Some("syncml:auth-basic"), Some(b64(b"x")))).unwrap().contains("not syncml:auth-md5"));
        assert!(bad_chal(&status(None, Some("not base64!".into()))).unwrap().contains("is not base64"));
        assert_eq!(
            bad_chal(&status(None, Some(b64(STALE_NONCE)))).unwrap(),
            "the NextNonce is the stale nonce the device used"
        );
    }
}
