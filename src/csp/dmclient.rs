//! DMClient (`./Vendor/MSFT/DMClient`): the enrolment's own settings — identity nodes, server
//! addresses, poll schedules, push, first-sync status, message signing, keep-alive and
//! unenrollment — and the per-user FirstSyncStatus of `./User/Vendor/MSFT/DMClient` (the DMClient CSP page
//! the DMClient CSP page, the authority; DDF `DMClient.xml` only where the DMClient CSP page gives no operations or
//! format).
//!
//! Owns the node table, the rules the DMClient CSP page attaches to writes (one-way values, the poll
//! corrections and refusals, address lists, ranges), the computed values (Push/ChannelURI and
//! Push/Status, MaxSyncApplicationVersion, HWDevID) and pure readers the rest of the device uses:
//! [`poll_config`] + [`PollTimetable`] for the scheduler, [`server_addresses`] + [`AddressList`]
//! for the transport, [`message_signing_required`] and [`keep_alive_enabled`] for the session,
//! [`lost_contact_deadline`] for the lost-contact unenroll timer. Does not own sessions, HTTP,
//! timers or the wipe itself: Unenroll emits [`Effect::Unenroll`] and the device carries it out.
//!
//! Device template settings read here (`[behaviour]` table, all optional):
//! - `poll_requires_add` (bool, default false): the device was polled through the registry
//!   before, so `Provider/<ID>/Poll` does not exist until the server Adds it (the DMClient CSP page: "must first
//!   send an Add command ... before it sends a Get/Replace"); a provider the server Adds over
//!   SyncML then has no Push node either until it is added. Otherwise a provider gets its Poll
//!   and Push nodes when it is created, as enrollment does on Windows.
//! - `strict_poll_schedule` (bool, default false): also refuse a configuration whose three
//!   Number values are 0 (the DMClient CSP page's warning), which by default is accepted as an infinite first
//!   set because Fleet provisions IntervalForFirstSetOfRetries 1 with every Number 0.
//! - `poll_all_zero` (`refuse` default, or `accept`): what the Replace completing an all-zero
//!   poll configuration gets. `refuse`: 500 and the previous value stays (the DMClient CSP page: "it will
//!   cause a configuration failure"). `accept`: stored as sent, which is what the DMClient CSP page's table
//!   "Invalid poll schedule: disable all poll schedules" shows read back; the device then only
//!   has its daily maintenance-window poll.
//! - `maintenance_time` (`HH:MM` local, default `02:00`) and `utc_offset_minutes`: where the
//!   daily fallback poll goes ([`MaintenanceWindow::from_settings`]).
//! - `push_endpoint` (URL, e.g. `http://127.0.0.1:8181/wns`): base of the fake WNS channel; with
//!   a valid PFN, ChannelURI is `<push_endpoint>/<DevId>/<ProviderID>` (percent-encoded) and
//!   Status 0. `push_channel_uri` forces a fixed ChannelURI instead. `push_status` (1..8) forces a
//!   failure status (Microsoft's WNS pages). With neither endpoint nor URI: Status 4.
//! - `enrollment_type` (`Device` or `Full`): EnrollmentType when enrollment stored none.
//! - `aad_joined` (bool): Unenroll is refused with 405 (Microsoft's DMClient CSP page, unenrollment: disabled on
//!   Entra-joined devices).

mod address;
mod poll;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

use crate::syncml::{Alert, AlertCode, Item, Meta, StatusCode};
use crate::tree::{
    ChannelOutcome, Csp, CspCx, Effect, Entry, Format, NodeRef, NodeSpec, Ops, Profile, Scope, Settings, TreeState,
    WriteOp, encode_segment,
};

pub use address::{AddressError, AddressList, LastGood};
pub use poll::{MaintenanceWindow, POLL_VALUES, PollConfig, PollTimetable, RetrySet};

/// State key of the CSP root (device scope).
pub const ROOT_KEY: &str = "Vendor/MSFT/DMClient";

const G: Ops = Ops::GET;
const GA: Ops = Ops::GET.with(Ops::ADD);
const GR: Ops = Ops::GET.with(Ops::REPLACE);
const GRD: Ops = GR.with(Ops::DELETE);
const AGR: Ops = GA.with(Ops::REPLACE);
const AGRD: Ops = Ops::ALL_WRITE;
const AD: Ops = Ops::ADD.with(Ops::DELETE);
const AGD: Ops = GA.with(Ops::DELETE);
const GE: Ops = Ops::GET.with(Ops::EXEC);

const fn chr(name: &'static str, ops: Ops) -> NodeSpec {
    NodeSpec::leaf(name, Format::Chr, ops)
}

const fn int(name: &'static str, ops: Ops) -> NodeSpec {
    NodeSpec::leaf(name, Format::Int, ops)
}

const fn boolean(name: &'static str, ops: Ops) -> NodeSpec {
    NodeSpec::leaf(name, Format::Bool, ops)
}

/// Children of `Provider/<ID>/Poll` (a dynamic node: Add before use, the DMClient CSP page): the six values with
/// the DMClient CSP page's defaults and the two login flags.
const POLL_CHILDREN: &[NodeSpec] = &[
    int("IntervalForFirstSetOfRetries", GR).default("15"),
    int("NumberOfFirstRetries", GR).default("10"),
    int("IntervalForSecondSetOfRetries", GR).default("0"),
    int("NumberOfSecondRetries", GR).default("0"),
    int("IntervalForRemainingScheduledRetries", GR).default("0"),
    int("NumberOfRemainingScheduledRetries", GR).default("0"),
    // Add-able with a default: the default is served by `read`, so that an Add of a node
    // never written is not answered 418 (see SOFT_DEFAULTS).
    boolean("PollOnLogin", AGR),
    boolean("AllUsersPollOnFirstLogin", AGR),
];

const PUSH_CHILDREN: &[NodeSpec] = &[chr("PFN", AGR), chr("ChannelURI", G), int("Status", G)];

const CUSTOM_PAGE_CHILDREN: &[NodeSpec] =
    &[chr("Title", AGRD), chr("BodyText", AGRD), chr("HyperlinkHref", AGRD), chr("HyperlinkText", AGRD)];

const FIRST_SYNC_CHILDREN: &[NodeSpec] = &[
    chr("ExpectedPolicies", AGRD),
    chr("ExpectedNetworkProfiles", AGRD),
    chr("ExpectedMSIAppPackages", AGRD),
    chr("ExpectedModernAppPackages", AGRD),
    chr("ExpectedPFXCerts", AGRD),
    chr("ExpectedSCEPCerts", AGRD),
    int("TimeOutUntilSyncFailure", GR).default("60"),
    boolean("ServerHasFinishedProvisioning", GR).default("false"),
    boolean("IsSyncDone", GR).default("false"),
    // 2 = in progress until the client or the server says 0 (failure) or 1 (success).
    int("WasDeviceSuccessfullyProvisioned", GR).default("2"),
    int("BlockInStatusPage", GR).default("0"),
    boolean("AllowCollectLogsButton", GR).default("false"),
    chr("CustomErrorText", AGRD),
    boolean("SkipDeviceStatusPage", GR).default("true"),
    boolean("SkipUserStatusPage", GR).default("true"),
];

const APP_LAYER_CHILDREN: &[NodeSpec] = &[
    int("SecurityMode", AGRD),
    boolean("UseCertIfRevocationCheckOffline", AGRD),
    chr("Cert0", AGRD),
    chr("Cert1", AGRD),
];

static DMCLIENT: NodeSpec = NodeSpec::interior(
    "DMClient",
    G,
    &[
        // The DMClient CSP page: "For provisioning packages only"; operations from the DDF.
        chr("UpdateManagementServiceAddress", GR),
        chr("HWDevID", G),
        NodeSpec::interior(
            "Provider",
            G,
            &[NodeSpec::interior(
                "<ProviderID>",
                GA,
                &[
                    chr("EntDeviceName", GA),
                    chr("EntDMID", GA),
                    chr("ExchangeID", G),
                    chr("PublisherDeviceID", G),
                    chr("SignedEntDMID", G),
                    chr("CertRenewTimeStamp", G),
                    chr("ManagementServiceAddress", AGR),
                    chr("UPN", GR),
                    chr("HelpPhoneNumber", GRD),
                    chr("HelpWebsite", GRD),
                    chr("HelpEmailAddress", GRD),
                    boolean("RequireMessageSigning", GRD).default("false"),
                    // Default 1.0 is served by `read` (404 on win81, where the node does not exist).
                    chr("SyncApplicationVersion", GRD),
                    chr("MaxSyncApplicationVersion", G),
                    chr("AADResourceID", AGR),
                    boolean("EnableOmaDmKeepAliveMessage", GR).default("false"),
                    chr("AADDeviceID", G),
                    chr("EnrollmentType", G),
                    chr("HWDevID", G),
                    chr("CommercialID", AGRD),
                    chr("ManagementServerAddressList", GR),
                    chr("ManagementServerToUpgradeTo", AGRD),
                    int("NumberOfDaysAfterLostContactToUnenroll", AGRD),
                    boolean("AADSendDeviceToken", AGRD),
                    // Not in the DMClient CSP page; DDF node Intune reads (Microsoft's CSP pages).
                    boolean("ForceAadToken", AGRD),
                    NodeSpec::interior("Poll", GA, POLL_CHILDREN).dynamic(),
                    NodeSpec::interior("Push", AD, PUSH_CHILDREN).dynamic(),
                    NodeSpec::interior("CustomEnrollmentCompletePage", AGD, CUSTOM_PAGE_CHILDREN).dynamic(),
                    // The DMClient CSP page gives no operations for FirstSyncStatus itself: the DDF's.
                    NodeSpec::interior("FirstSyncStatus", AGD, FIRST_SYNC_CHILDREN).dynamic(),
                    // "Required node", Get only: always there.
                    NodeSpec::interior("EnhancedAppLayerSecurity", G, APP_LAYER_CHILDREN),
                    NodeSpec::leaf("Unenroll", Format::Null, GE).default(""),
                ],
            )
            .dynamic()],
        ),
        // Legacy `./Vendor/MSFT/DMClient/Unenroll`, kept for backward compatibility (the DMClient CSP page).
        NodeSpec::leaf("Unenroll", Format::Null, GE).default(""),
    ],
);

/// FirstSyncStatus in user scope: the per-user status page nodes (DDF `./User/Vendor/MSFT/DMClient`;
/// the DMClient CSP page: IsSyncDone and WasDeviceSuccessfullyProvisioned apply "on a per user basis").
const USER_FIRST_SYNC_CHILDREN: &[NodeSpec] = &[
    chr("ExpectedPolicies", AGRD),
    chr("ExpectedNetworkProfiles", AGRD),
    chr("ExpectedMSIAppPackages", AGRD),
    chr("ExpectedModernAppPackages", AGRD),
    chr("ExpectedPFXCerts", AGRD),
    chr("ExpectedSCEPCerts", AGRD),
    boolean("ServerHasFinishedProvisioning", GR).default("false"),
    boolean("IsSyncDone", GR).default("false"),
    int("WasDeviceSuccessfullyProvisioned", GR).default("2"),
    boolean("AllowCollectLogsButton", GR).default("false"),
    chr("CustomErrorText", AGRD),
];

static DMCLIENT_USER: NodeSpec = NodeSpec::interior(
    "DMClient",
    G,
    &[NodeSpec::interior(
        "Provider",
        G,
        &[NodeSpec::interior(
            "<ProviderID>",
            GA,
            &[NodeSpec::interior("FirstSyncStatus", AGD, USER_FIRST_SYNC_CHILDREN).dynamic()],
        )
        .dynamic()],
    )],
);

/// Defaults of nodes that also allow Add: served by [`Csp::read`] rather than the table, because
/// the engine treats a table default as an existing value and would answer an Add with 418.
const SOFT_DEFAULTS: [(&str, &str); 4] = [
    ("Poll/PollOnLogin", "false"),
    ("Poll/AllUsersPollOnFirstLogin", "false"),
    ("EnhancedAppLayerSecurity/SecurityMode", "0"),
    // The DMClient CSP page: "The default value is set." (the DDF says false; the DMClient CSP page wins).
    ("EnhancedAppLayerSecurity/UseCertIfRevocationCheckOffline", "true"),
];

/// The DM session version a Windows 10 client supports (the DMClient CSP page, MaxSyncApplicationVersion).
pub const MAX_SYNC_APPLICATION_VERSION: &str = "2.0";

/// `./Vendor/MSFT/DMClient`.
pub struct DmClient;

impl Csp for DmClient {
    fn name(&self) -> &'static str {
        "DMClient"
    }

    fn root(&self) -> &'static str {
        ROOT_KEY
    }

    fn schema(&self) -> &'static NodeSpec {
        &DMCLIENT
    }

    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        let segs = node.segment_list();
        let stored = || cx.value(node.rel).map(str::to_string);
        match segs.as_slice() {
            ["HWDevID"] | ["Provider", _, "HWDevID"] => stored().or_else(|| derived_hw_dev_id(cx.state)),
            ["Provider", _, "SyncApplicationVersion"] => {
                (cx.env.profile == Profile::Win10).then(|| stored().unwrap_or_else(|| "1.0".into()))
            }
            ["Provider", _, "MaxSyncApplicationVersion"] => {
                (cx.env.profile == Profile::Win10).then(|| MAX_SYNC_APPLICATION_VERSION.into())
            }
            ["Provider", _, "EnrollmentType"] => {
                stored().or_else(|| cx.env.settings.str("enrollment_type").map(str::to_string))
            }
            ["Provider", id, "Push", "ChannelURI"] => {
                Some(push_channel(cx.state, &cx.env.settings, id).channel_uri.unwrap_or_default())
            }
            ["Provider", id, "Push", "Status"] => {
                Some(push_channel(cx.state, &cx.env.settings, id).status.code().to_string())
            }
            ["Provider", id, "Poll", name] if POLL_VALUES.iter().any(|(n, _)| n == name) => {
                let raw = raw_poll_values(|rel| cx.value(&format!("Provider/{id}/{rel}")).map(str::to_string));
                let i = POLL_VALUES.iter().position(|(n, _)| n == name)?;
                Some(raw.corrected().values()[i].to_string())
            }
            ["Provider", _, rest @ ..] => {
                let rest = rest.join("/");
                let soft = SOFT_DEFAULTS.iter().find(|(p, _)| *p == rest).map(|(_, d)| d.to_string());
                soft.map(|d| stored().unwrap_or(d))
            }
            _ => None,
        }
    }

    fn validate(&self, cx: &CspCx<'_>, op: WriteOp, node: NodeRef<'_>, value: Option<&str>) -> Result<(), StatusCode> {
        let segs = node.segment_list();
        let v = value.map(str::trim);
        match (segs.as_slice(), v) {
            (["UpdateManagementServiceAddress"], Some(v)) => {
                let list = AddressList::parse_semicolon(v).map_err(|_| StatusCode::BadRequest)?;
                // The DMClient CSP page: a permutation or subset of the existing list; no new servers.
                let known = provider_ids(cx.state)
                    .iter()
                    .any(|id| server_addresses(cx.state, id).is_some_and(|l| l.contains_all(&list)));
                if known { Ok(()) } else { Err(StatusCode::CommandNotAllowed) }
            }
            (["Provider", _, "ManagementServiceAddress"], Some(v)) => {
                AddressList::parse(v).map(drop).map_err(|_| StatusCode::BadRequest)
            }
            // An empty list unsets it: ManagementServiceAddress is in force again.
            (["Provider", _, "ManagementServerAddressList"], Some(v)) if !v.is_empty() => {
                AddressList::parse(v).map(drop).map_err(|_| StatusCode::BadRequest)
            }
            (["Provider", _, "SyncApplicationVersion"], _) => {
                if cx.env.profile == Profile::Win81 {
                    // "This node is only supported in Windows 10 and later."
                    return Err(StatusCode::NotFound);
                }
                let current = cx.value(node.rel).and_then(parse_version).unwrap_or((1, 0));
                let new = match (op, v) {
                    (WriteOp::Delete, _) => (1, 0),
                    (_, Some(v)) => parse_version(v).ok_or(StatusCode::BadRequest)?,
                    (_, None) => return Err(StatusCode::BadRequest),
                };
                // "Once you set the value to 2.0, it will not go back to 1.0."
                if current >= (2, 0) && new < current { Err(StatusCode::CommandNotAllowed) } else { Ok(()) }
            }
            (["Provider", _, "NumberOfDaysAfterLostContactToUnenroll"], Some(v)) => parse_u32(v).map(drop),
            (["Provider", _, "Poll", name], Some(v)) if POLL_VALUES.iter().any(|(n, _)| n == name) => {
                parse_u32(v).map(drop)
            }
            (["Provider", _, "EnhancedAppLayerSecurity", "SecurityMode"], Some(v)) => {
                // 0 no op, 1 sign, 2 encrypt, 3 sign and encrypt.
                if parse_u32(v)? <= 3 { Ok(()) } else { Err(StatusCode::BadRequest) }
            }
            (["Provider", id, "FirstSyncStatus", leaf], v) => first_sync_rule(cx, id, leaf, v),
            _ => Ok(()),
        }
    }

    fn after_write(&self, cx: &mut CspCx<'_>, op: WriteOp, node: NodeRef<'_>) -> Result<(), StatusCode> {
        let segs: Vec<String> = node.segments().map(str::to_string).collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match segs.as_slice() {
            ["UpdateManagementServiceAddress"] => apply_address_update(cx),
            ["Provider", id, "Poll", name] if POLL_VALUES.iter().any(|(n, _)| n == name) => check_poll(cx, id)?,
            ["Provider", id, "Push", "PFN"] if op != WriteOp::Delete => {
                let pfn = cx.value(node.rel).unwrap_or_default().trim().to_string();
                if is_valid_pfn(&pfn) {
                    let node = format!("Provider/{id}/Push");
                    request_channel(cx.state, &cx.key(&node), &pfn, cx.effects);
                } else {
                    forget_channel(cx.state, &cx.key(&format!("Provider/{id}/Push")));
                }
            }
            _ => {}
        }
        if let (WriteOp::Add, ["Provider", id, ..]) = (op, segs.as_slice()) {
            // A provider created by this Add gets the nodes enrollment gives it on Windows.
            if !cx.env.settings.bool_or("poll_requires_add", false) && !cx.exists(&format!("Provider/{id}/Poll")) {
                cx.create(&format!("Provider/{id}/Poll"));
                cx.create(&format!("Provider/{id}/Push"));
            }
        }
        Ok(())
    }

    fn on_channel(&self, cx: &mut CspCx<'_>, node: &str, outcome: &ChannelOutcome) {
        let push = cx.key(node);
        if !matches!(node.split('/').collect::<Vec<_>>()[..], ["Provider", _, "Push"])
            || cx.state.entry(&push).is_none()
        {
            return;
        }
        let key = |leaf: &str| format!("{push}/{leaf}");
        cx.state.remove_subtree(&key(CHANNEL_RENEWING));
        let (status, uri) = match outcome {
            ChannelOutcome::Granted { uri, .. } => {
                // Counted in the device's own time (a virtual run's is not the service's): a
                // channel lasts 30 days from when the device got it, so its renewal is always
                // ahead of the device.
                let expires = cx.env.now + CHANNEL_LIFETIME;
                cx.state.set_value(&key(CHANNEL_EXPIRY), expires.to_rfc3339());
                (PushStatus::Success, uri.clone())
            }
            ChannelOutcome::Refused(_) | ChannelOutcome::Revoked => (PushStatus::WnsRegistrationFailed, String::new()),
            ChannelOutcome::Unavailable(_) => (PushStatus::NoChannelUri, String::new()),
            ChannelOutcome::Expired => (PushStatus::ChannelUriExpired, String::new()),
            ChannelOutcome::SessionBlocked => {
                if cx.state.value(&key("Status")) == Some("0") {
                    cx.state.set_value(&key("Status"), PushStatus::SessionBlocked.code().to_string());
                }
                return;
            }
        };
        if status != PushStatus::Success {
            cx.state.remove_subtree(&key(CHANNEL_EXPIRY));
        }
        cx.state.set_value(&key("Status"), status.code().to_string());
        cx.state.set_value(&key("ChannelURI"), uri);
        if status == PushStatus::ChannelUriExpired
            && let Some(app) = cx.state.value(&key(CHANNEL_APP)).map(str::to_string)
        {
            // The WNS client asks for a new channel as soon as it learns the old one expired.
            cx.state.set_value(&key(CHANNEL_RENEWING), cx.env.now.to_rfc3339());
            cx.emit(Effect::RequestChannel { csp: "DMClient", node: node.to_string(), app });
        }
    }

    fn next_deadline(&self, cx: &CspCx<'_>) -> Option<DateTime<Utc>> {
        provider_ids(cx.state).iter().filter_map(|id| renewal_due(cx.state, id)).min()
    }

    fn on_deadline(&self, cx: &mut CspCx<'_>) {
        for id in provider_ids(cx.state) {
            if renewal_due(cx.state, &id).is_none_or(|t| t > cx.env.now) {
                continue;
            }
            let push = format!("{}/Push", provider_key(&id));
            let Some(app) = cx.state.value(&format!("{push}/{CHANNEL_APP}")).map(str::to_string) else { continue };
            // Renewed before it expires: the new ChannelURI is what the server reads next.
            cx.state.set_value(&format!("{push}/{CHANNEL_RENEWING}"), cx.env.now.to_rfc3339());
            cx.emit(Effect::RequestChannel { csp: "DMClient", node: format!("Provider/{id}/Push"), app });
        }
    }

    fn exec(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, data: Option<&str>) -> StatusCode {
        if cx.env.settings.bool_or("aad_joined", false) {
            return StatusCode::CommandNotAllowed;
        }
        let segs = node.segment_list();
        let provider = match segs.as_slice() {
            // "Data Field in Threshold is now IGNORED": the provider is the one in the path.
            ["Provider", id, "Unenroll"] => id.to_string(),
            ["Unenroll"] => {
                // Legacy node: Data names the provider; a device with a single provider
                // unenrolls from it whatever the Data says.
                let ids = provider_ids(cx.state);
                let named = data.map(str::trim).filter(|d| ids.iter().any(|i| i == d)).map(str::to_string);
                match (named, ids.as_slice()) {
                    (Some(id), _) => id,
                    (None, [only]) => only.clone(),
                    _ => return StatusCode::NotFound,
                }
            }
            _ => return StatusCode::OptionalFeatureNotSupported,
        };
        cx.emit(Effect::Unenroll {
            reason: format!("server Exec on ./Vendor/MSFT/DMClient/{} (provider {provider})", node.rel),
        });
        StatusCode::Ok
    }
}

/// `./User/Vendor/MSFT/DMClient`: the per-user FirstSyncStatus nodes, with the same one-way
/// rules as the device's.
pub struct DmClientUser;

impl Csp for DmClientUser {
    fn name(&self) -> &'static str {
        "DMClient (user)"
    }

    fn root(&self) -> &'static str {
        ROOT_KEY
    }

    fn schema(&self) -> &'static NodeSpec {
        &DMCLIENT_USER
    }

    fn scopes(&self) -> &'static [Scope] {
        &[Scope::User]
    }

    fn validate(&self, cx: &CspCx<'_>, _op: WriteOp, node: NodeRef<'_>, value: Option<&str>) -> Result<(), StatusCode> {
        match node.segment_list().as_slice() {
            ["Provider", id, "FirstSyncStatus", leaf] => first_sync_rule(cx, id, leaf, value.map(str::trim)),
            _ => Ok(()),
        }
    }
}

/// The one-way and range rules of FirstSyncStatus (the DMClient CSP page). `v` is the new value (None: Delete).
fn first_sync_rule(cx: &CspCx<'_>, id: &str, leaf: &str, v: Option<&str>) -> Result<(), StatusCode> {
    let old = |name: &str| cx.value(&format!("Provider/{id}/FirstSyncStatus/{name}")).map(str::to_string);
    match (leaf, v) {
        ("ServerHasFinishedProvisioning", Some(v)) => {
            // "Once set to true, it would reject attempts to change it back to false with
            // CFGMGR_E_COMMANDNOTALLOWED."
            if old(leaf).as_deref() == Some("true") && v.eq_ignore_ascii_case("false") {
                return Err(StatusCode::CommandNotAllowed);
            }
            Ok(())
        }
        ("IsSyncDone", Some(_)) => {
            // "It cannot be set from True to False ... and it cannot be set from True to True."
            if old(leaf).as_deref() == Some("true") { Err(StatusCode::CommandNotAllowed) } else { Ok(()) }
        }
        ("WasDeviceSuccessfullyProvisioned", Some(v)) => {
            let new = parse_u32(v)?;
            if new > 2 {
                return Err(StatusCode::BadRequest);
            }
            // "Once the value is changed to 0 or 1, the value cannot be changed again."
            match old(leaf).as_deref().and_then(|o| o.parse::<u32>().ok()) {
                Some(o @ (0 | 1)) if o != new => Err(StatusCode::CommandNotAllowed),
                _ => Ok(()),
            }
        }
        ("TimeOutUntilSyncFailure", Some(v)) => {
            // Minutes; "maximum value will be 1,440 (one day)".
            if (1..=1440).contains(&parse_u32(v)?) { Ok(()) } else { Err(StatusCode::BadRequest) }
        }
        (l, _) if l.starts_with("Expected") => {
            // "When this node is set, many other DM Client nodes will no longer be able to be
            // changed": the expected-resource lists are frozen once the server says it is done.
            if old("ServerHasFinishedProvisioning").as_deref() == Some("true") {
                Err(StatusCode::CommandNotAllowed)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// After a poll value changed: refuse the configurations the DMClient CSP page calls failures. (Corrections
/// are applied when the values are read, see [`raw_poll_values`].)
fn check_poll(cx: &CspCx<'_>, id: &str) -> Result<(), StatusCode> {
    let cfg = raw_poll_values(|rel| cx.value(&format!("Provider/{id}/{rel}")).map(str::to_string));
    let accept_all_zero = cx.env.settings.str("poll_all_zero").is_some_and(|v| v.trim().eq_ignore_ascii_case("accept"));
    if cfg.is_all_zero() && !accept_all_zero {
        return Err(StatusCode::CommandFailed);
    }
    if cx.env.settings.bool_or("strict_poll_schedule", false) && cfg.all_numbers_zero() && !cfg.is_all_zero() {
        return Err(StatusCode::CommandFailed);
    }
    Ok(())
}

/// UpdateManagementServiceAddress: the device saves the new order where the address in force
/// lives (the DMClient CSP page: "save the address to the same location as the w7 and DMS configuration service
/// providers"), for every provider whose list holds all the given servers.
fn apply_address_update(cx: &mut CspCx<'_>) {
    let Some(list) = cx.value("UpdateManagementServiceAddress").and_then(|v| AddressList::parse_semicolon(v).ok())
    else {
        return;
    };
    for id in provider_ids(cx.state) {
        if server_addresses(cx.state, &id).is_some_and(|l| l.contains_all(&list)) {
            let msal = format!("Provider/{id}/ManagementServerAddressList");
            let in_force = if cx.value(&msal).is_some_and(|v| !v.trim().is_empty()) {
                msal
            } else {
                format!("Provider/{id}/ManagementServiceAddress")
            };
            cx.set(&in_force, list.to_node_value());
        }
    }
}

fn parse_u32(v: &str) -> Result<u32, StatusCode> {
    v.trim().parse::<u32>().map_err(|_| StatusCode::BadRequest)
}

/// `major.minor` (`2.0`), as SyncApplicationVersion is written.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A stable hardware ID derived from the DevId when the device template gave none: 64 hex digits.
fn derived_hw_dev_id(state: &TreeState) -> Option<String> {
    let dev_id = state.value("DevInfo/DevId")?;
    Some(hex::encode_upper(Sha256::digest(format!("mdmsim-hwdevid:{dev_id}").as_bytes())))
}

// ---------------------------------------------------------------------------------------------
// Pure readers for the rest of the device (scheduler, transport, session, enrollment).
// ---------------------------------------------------------------------------------------------

/// The state key of `Provider/<provider_id>` (decoded, device scope).
pub fn provider_key(provider_id: &str) -> String {
    format!("{ROOT_KEY}/Provider/{provider_id}")
}

fn provider_value<'s>(state: &'s TreeState, provider_id: &str, rel: &str) -> Option<&'s str> {
    state.value(&format!("{}/{rel}", provider_key(provider_id)))
}

fn provider_bool(state: &TreeState, provider_id: &str, rel: &str) -> bool {
    provider_value(state, provider_id, rel).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The provider IDs present in the tree, in key order.
pub fn provider_ids(state: &TreeState) -> Vec<String> {
    state.child_names(&format!("{ROOT_KEY}/Provider"))
}

/// Creates `Provider/<provider_id>` as enrollment does: the provider node, and its Poll (unless
/// the template's `poll_requires_add` says the device was polled through the registry before)
/// and Push nodes. Values of the provisioning document are then written with
/// `state.set_value(&format!("{}/EntDMID", provider_key(id)), ...)`.
pub fn create_provider(state: &mut TreeState, provider_id: &str, settings: &Settings) {
    let key = provider_key(provider_id);
    let mut nodes = vec![key.clone(), format!("{key}/Push")];
    if !settings.bool_or("poll_requires_add", false) {
        nodes.push(format!("{key}/Poll"));
    }
    for k in nodes {
        if state.entry(&k).is_none() {
            state.set(&k, Entry::Interior);
        }
    }
}

/// The poll values as the server wrote them (the DMClient CSP page, defaults for values never written), without
/// the corrections.
///
/// mdmsim keeps what the server sent and applies [`PollConfig::corrected`] whenever the values
/// are read (Get, [`poll_config`]): what the server reads back is the corrected configuration
/// (the "two infinite schedules" table), and the result does not depend on the order in which a
/// server sends the six values inside one message (sending every Interval before the Numbers
/// would otherwise make a set look infinite half-way and wrongly disable the next one).
fn raw_poll_values(value: impl Fn(&str) -> Option<String>) -> PollConfig {
    let mut v = [0u32; 6];
    for (i, (name, default)) in POLL_VALUES.iter().enumerate() {
        v[i] = value(&format!("Poll/{name}")).and_then(|s| s.trim().parse().ok()).unwrap_or(*default);
    }
    let flag = |name: &str| value(&format!("Poll/{name}")).is_some_and(|s| s.trim().eq_ignore_ascii_case("true"));
    let mut cfg = PollConfig::from_values(v);
    cfg.poll_on_login = flag("PollOnLogin");
    cfg.all_users_poll_on_first_login = flag("AllUsersPollOnFirstLogin");
    cfg
}

/// A provider's poll configuration as the device reads it back: the DMClient CSP page defaults for values never
/// written (even when the Poll node does not exist yet) and the DMClient CSP page's corrections applied (a
/// set after an infinite set is disabled). `None` when the provider does not exist. Feed it to
/// [`PollTimetable::new`] with the enrollment time for the poll instants.
pub fn poll_config(state: &TreeState, provider_id: &str) -> Option<PollConfig> {
    state.entry(&provider_key(provider_id))?;
    Some(raw_poll_values(|rel| provider_value(state, provider_id, rel).map(str::to_string)).corrected())
}

/// `Poll/PollOnLogin`: start a session at every user login.
pub fn poll_on_login(state: &TreeState, provider_id: &str) -> bool {
    provider_bool(state, provider_id, "Poll/PollOnLogin")
}

/// `Poll/AllUsersPollOnFirstLogin`: start a session at the first login of each user.
pub fn all_users_poll_on_first_login(state: &TreeState, provider_id: &str) -> bool {
    provider_bool(state, provider_id, "Poll/AllUsersPollOnFirstLogin")
}

/// `NumberOfDaysAfterLostContactToUnenroll`; `None` when unset or 0 (no self-unenrollment).
pub fn lost_contact_days(state: &TreeState, provider_id: &str) -> Option<u32> {
    provider_value(state, provider_id, "NumberOfDaysAfterLostContactToUnenroll")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|d| *d > 0)
}

/// When the device unenrolls itself for lack of contact: `last_success` (the end of the last
/// successful session, kept by the device) plus NumberOfDaysAfterLostContactToUnenroll days.
pub fn lost_contact_deadline(
    state: &TreeState,
    provider_id: &str,
    last_success: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let days = lost_contact_days(state, provider_id)?;
    last_success.checked_add_signed(TimeDelta::try_days(i64::from(days))?)
}

/// `EnableOmaDmKeepAliveMessage`: send the 1224 `com.microsoft.mdm.requestpending` alert while a
/// slow command is running.
pub fn keep_alive_enabled(state: &TreeState, provider_id: &str) -> bool {
    provider_bool(state, provider_id, "EnableOmaDmKeepAliveMessage")
}

/// The Meta Type of the keep-alive alert (the DMClient CSP page, EnableOmaDmKeepAliveMessage example).
pub const REQUEST_PENDING_TYPE: &str = "Reversed-Domain-Name:com.microsoft.mdm.requestpending";

/// The alert the session sends while a slow command is pending and
/// [`keep_alive_enabled`] is true: Alert 1224 with one item, Type
/// [`REQUEST_PENDING_TYPE`], Data `1`, exactly as in the DMClient CSP page's example message.
pub fn request_pending_alert(cmd_id: &str) -> Alert {
    Alert {
        cmd_id: cmd_id.to_string(),
        data: AlertCode::ClientEvent.code().to_string(),
        items: vec![Item {
            meta: Some(Box::new(Meta::typed(REQUEST_PENDING_TYPE, None))),
            data: Some("1".into()),
            ..Item::default()
        }],
        ..Alert::default()
    }
}

/// `EntDMID`: the enterprise device ID the server set at enrollment (the transport sends it as
/// `Client-Request-Id`, MS-MDM §2.1 HTTP transport).
pub fn ent_dmid(state: &TreeState, provider_id: &str) -> Option<String> {
    provider_value(state, provider_id, "EntDMID").map(str::to_string)
}

/// `RequireMessageSigning`: every client message carries the CMS detached signature header
/// (see `crate::runner::signing`).
pub fn message_signing_required(state: &TreeState, provider_id: &str) -> bool {
    provider_bool(state, provider_id, "RequireMessageSigning")
}

/// `SyncApplicationVersion` (`1.0` until the server sets `2.0`).
pub fn sync_application_version(state: &TreeState, provider_id: &str) -> String {
    provider_value(state, provider_id, "SyncApplicationVersion").unwrap_or("1.0").trim().to_string()
}

/// The server list in force: ManagementServerAddressList when set (it takes precedence),
/// ManagementServiceAddress otherwise; `None` when neither holds a usable list.
pub fn server_addresses(state: &TreeState, provider_id: &str) -> Option<AddressList> {
    provider_value(state, provider_id, "ManagementServerAddressList")
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| AddressList::parse(v).ok())
        .or_else(|| {
            provider_value(state, provider_id, "ManagementServiceAddress").and_then(|v| AddressList::parse(v).ok())
        })
}

/// `Push/Status` values, in the DMClient CSP page's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushStatus {
    /// 0: Success.
    Success,
    /// 1: Failure: invalid PFN.
    InvalidPfn,
    /// 2: Failure: invalid or expired device authentication with MSA.
    MsaAuthentication,
    /// 3: Failure: WNS client registration failed due to an invalid or revoked PFN.
    WnsRegistrationFailed,
    /// 4: Failure: no Channel URI assigned.
    NoChannelUri,
    /// 5: Failure: Channel URI has expired.
    ChannelUriExpired,
    /// 6: Failure: Channel URI failed to be revoked.
    ChannelUriRevokeFailed,
    /// 7: Failure: push notification received, but unable to establish an OMA-DM session due to
    /// power or connectivity limitations.
    SessionBlocked,
    /// 8: Unknown error.
    Unknown,
}

impl PushStatus {
    /// The number Push/Status reads.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status for a number 0..=8.
    pub fn from_code(n: u8) -> Option<PushStatus> {
        use PushStatus::*;
        [
            Success,
            InvalidPfn,
            MsaAuthentication,
            WnsRegistrationFailed,
            NoChannelUri,
            ChannelUriExpired,
            ChannelUriRevokeFailed,
            SessionBlocked,
            Unknown,
        ]
        .get(usize::from(n))
        .copied()
    }
}

/// What Push/ChannelURI and Push/Status read for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushChannel {
    pub status: PushStatus,
    /// `None` reads as the empty ChannelURI (the DMClient CSP page: "If no valid PFN is currently set,
    /// ChannelURI will return null").
    pub channel_uri: Option<String>,
}

/// True for a package family name of the form `Name_publisherid` (13-character lower-case base32
/// publisher ID), as WNS registration needs.
pub fn is_valid_pfn(pfn: &str) -> bool {
    let Some((name, publisher)) = pfn.trim().rsplit_once('_') else { return false };
    publisher.len() == 13
        && publisher.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && (3..=50).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// How long before its expiry a channel is renewed: at half of its 30 days (Microsoft's push
/// notification support for device management page; the channel itself lasts 30 days, "Windows
/// Push Notification Services (WNS) overview").
pub const CHANNEL_RENEW_BEFORE_EXPIRY: TimeDelta = TimeDelta::days(15);

/// How long a channel lasts ("Windows Push Notification Services (WNS) overview": 30 days).
pub const CHANNEL_LIFETIME: TimeDelta = TimeDelta::days(30);

/// Device-internal values kept below `Provider/<ID>/Push` next to the nodes (not in the node
/// table, so no command reaches them): when the channel expires, the app it was asked for, and
/// when a renewal was asked (until its answer).
const CHANNEL_EXPIRY: &str = "ChannelExpiry";
const CHANNEL_APP: &str = "ChannelApp";
const CHANNEL_RENEWING: &str = "ChannelRenewing";

/// Asks the push notification service for a channel for `app` below `push_key` (the full key
/// of `Provider/<ID>/Push`): what the channel was is forgotten until the answer comes.
pub fn request_channel(state: &mut TreeState, push_key: &str, app: &str, effects: &mut Vec<Effect>) {
    forget_channel(state, push_key);
    state.set_value(&format!("{push_key}/{CHANNEL_APP}"), app);
    let Some(node) = push_key.strip_prefix(ROOT_KEY).and_then(|r| r.strip_prefix('/')) else { return };
    effects.push(Effect::RequestChannel { csp: "DMClient", node: node.to_string(), app: app.to_string() });
}

fn forget_channel(state: &mut TreeState, push_key: &str) {
    for leaf in ["ChannelURI", "Status", CHANNEL_EXPIRY, CHANNEL_APP, CHANNEL_RENEWING] {
        state.remove_subtree(&format!("{push_key}/{leaf}"));
    }
}

/// Makes every channel the device holds due for renewal at `now`: a run that hosts a new push
/// notification service (the embedded one listens on a new port each time) gets the device a
/// channel there, as the Windows WNS client reconnects when the machine starts.
pub fn renew_channels(state: &mut TreeState, now: DateTime<Utc>) {
    for id in provider_ids(state) {
        if provider_value(state, &id, "Push/Status") != Some("0") {
            continue;
        }
        let push = format!("{}/Push", provider_key(&id));
        state.remove_subtree(&format!("{push}/{CHANNEL_RENEWING}"));
        state.set_value(&format!("{push}/{CHANNEL_EXPIRY}"), (now + CHANNEL_RENEW_BEFORE_EXPIRY).to_rfc3339());
    }
}

/// When the provider's channel is to be renewed: 15 days before it expires, or a day after a
/// renewal asked for got no answer (a run stopped meanwhile).
fn renewal_due(state: &TreeState, provider_id: &str) -> Option<DateTime<Utc>> {
    if provider_value(state, provider_id, "Push/Status") != Some("0") {
        return None;
    }
    let time = |rel: &str| {
        provider_value(state, provider_id, rel)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    if let Some(asked) = time(&format!("Push/{CHANNEL_RENEWING}")) {
        return Some(asked + TimeDelta::days(1));
    }
    Some(time(&format!("Push/{CHANNEL_EXPIRY}"))? - CHANNEL_RENEW_BEFORE_EXPIRY)
}

/// The WNS channel of a provider: the one the push notification service gave the device (see
/// [`request_channel`]), else the template's `push_endpoint` / `push_channel_uri` settings;
/// `push_status` forces a failure status (Microsoft's WNS pages).
pub fn push_channel(state: &TreeState, settings: &Settings, provider_id: &str) -> PushChannel {
    let none = |status| PushChannel { status, channel_uri: None };
    let forced = settings.str("push_status").and_then(|s| s.trim().parse::<u8>().ok()).and_then(PushStatus::from_code);
    if let Some(status) = forced.filter(|s| *s != PushStatus::Success) {
        return none(status);
    }
    // An answer of the service (to a PFN, or to a Windows 8.1 UpdateConfiguration).
    if let Some(status) = provider_value(state, provider_id, "Push/Status")
        .and_then(|s| s.parse::<u8>().ok())
        .and_then(PushStatus::from_code)
    {
        let uri = provider_value(state, provider_id, "Push/ChannelURI").filter(|u| !u.is_empty());
        return PushChannel { status, channel_uri: uri.map(str::to_string) };
    }
    let Some(pfn) = provider_value(state, provider_id, "Push/PFN").filter(|p| !p.trim().is_empty()) else {
        return none(PushStatus::NoChannelUri);
    };
    if !is_valid_pfn(pfn) {
        return none(PushStatus::InvalidPfn);
    }
    if let Some(uri) = settings.str("push_channel_uri").filter(|u| !u.trim().is_empty()) {
        return PushChannel { status: PushStatus::Success, channel_uri: Some(uri.trim().to_string()) };
    }
    if let Some(base) = settings.str("push_endpoint").filter(|u| !u.trim().is_empty()) {
        let dev_id = state.value("DevInfo/DevId").unwrap_or("unknown-device");
        let uri =
            format!("{}/{}/{}", base.trim().trim_end_matches('/'), encode_segment(dev_id), encode_segment(provider_id));
        return PushChannel { status: PushStatus::Success, channel_uri: Some(uri) };
    }
    none(PushStatus::NoChannelUri)
}

/// The device and provider a fake-WNS channel URI made by [`push_channel`] points at: the inverse
/// of `<push_endpoint>/<DevId>/<ProviderID>`, for the loopback push service that receives the
/// server's notification and must wake the right device. `None` for a URI of another endpoint.
pub fn channel_target(channel_uri: &str, push_endpoint: &str) -> Option<(String, String)> {
    let rest = channel_uri.trim().strip_prefix(push_endpoint.trim().trim_end_matches('/'))?.strip_prefix('/')?;
    let (dev, provider) = rest.split_once('/')?;
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned());
    Some((decode(dev)?, decode(provider)?)).filter(|(d, p)| !d.is_empty() && !p.is_empty() && !p.contains('/'))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::syncml::{Command, Container, Item, ItemCmd, decode};
    use crate::tree::{CmdOutcome, Env, Registry, Tree};

    const P: &str = "./Vendor/MSFT/DMClient/Provider/Fleet";

    /// One emulated device: the registry, its tree values and its environment.
    struct Dev {
        reg: Registry,
        state: TreeState,
        env: Env,
        effects: Vec<Effect>,
    }

    impl Dev {
        /// A device with `settings`, enrolled with provider `Fleet` through SyncML.
        fn with(profile: Profile, settings: &[(&str, &str)]) -> Dev {
            let mut reg = Registry::new();
            reg.register(DmClient);
            let mut env = Env::new(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(), profile);
            env.settings = Arc::new(Settings(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
            let mut state = TreeState::new();
            state.set_value("DevInfo/DevId", "0123456789ABCDEF0123456789ABCDEF");
            let mut d = Dev { reg, state, env, effects: Vec::new() };
            assert_eq!(d.add(P, None), StatusCode::Ok);
            assert_eq!(
                d.add(&format!("{P}/ManagementServiceAddress"), Some("https://mdm.example/MDM.svc")),
                StatusCode::Ok
            );
            d
        }

        fn new() -> Dev {
            Dev::with(Profile::Win10, &[])
        }

        fn run(&mut self, cmd: &Command) -> Vec<CmdOutcome> {
            let mut tree = Tree::new(&self.reg, &mut self.state, &self.env);
            let out = tree.execute(cmd);
            self.effects.extend(tree.effects);
            out
        }

        fn write(&mut self, kind: &str, uri: &str, data: Option<&str>) -> StatusCode {
            let item = Item { target: Some(uri.into()), data: data.map(str::to_string), ..Item::default() };
            let c = ItemCmd { cmd_id: "1".into(), items: vec![item], ..ItemCmd::default() };
            let cmd = match kind {
                "Add" => Command::Add(c),
                "Replace" => Command::Replace(c),
                "Delete" => Command::Delete(c),
                _ => Command::Exec(c),
            };
            self.run(&cmd)[0].code
        }

        fn add(&mut self, uri: &str, data: Option<&str>) -> StatusCode {
            self.write("Add", uri, data)
        }

        fn replace(&mut self, uri: &str, data: &str) -> StatusCode {
            self.write("Replace", uri, Some(data))
        }

        fn delete(&mut self, uri: &str) -> StatusCode {
            self.write("Delete", uri, None)
        }

        fn exec(&mut self, uri: &str, data: Option<&str>) -> StatusCode {
            self.write("Exec", uri, data)
        }

        fn get(&mut self, uri: &str) -> (StatusCode, Option<String>) {
            let c = ItemCmd { cmd_id: "9".into(), items: vec![Item::target(uri)], ..ItemCmd::default() };
            let out = self.run(&Command::Get(c));
            (out[0].code, out[0].results.first().and_then(|i| i.data.clone()))
        }

        fn value(&mut self, uri: &str) -> String {
            match self.get(uri) {
                (StatusCode::Ok, Some(v)) => v,
                other => panic!("Get {uri}: {other:?}"),
            }
        }

        /// Decodes a SyncML message from the server and runs its commands, one outcome list each.
        fn message(&mut self, body: &str) -> Vec<CmdOutcome> {
            let text = format!(
                r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>
<SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>0123456789ABCDEF0123456789ABCDEF</LocURI></Target>
<Source><LocURI>https://mdm.example/MDM.svc</LocURI></Source></SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"#
            );
            let msg = decode(&text).expect("test message decodes");
            msg.body.commands.iter().flat_map(|c| self.run(c)).collect()
        }
    }

    fn replace_cmd(id: &str, uri: &str, data: &str) -> Command {
        Command::Replace(ItemCmd {
            cmd_id: id.into(),
            items: vec![Item { target: Some(uri.into()), data: Some(data.into()), ..Item::default() }],
            ..ItemCmd::default()
        })
    }

    fn poll(name: &str) -> String {
        format!("{P}/Poll/{name}")
    }

    fn poll_values(d: &mut Dev) -> Vec<u32> {
        POLL_VALUES.iter().map(|(n, _)| d.value(&poll(n)).parse().unwrap()).collect()
    }

    /// The node table: every node with its operations, as the DMClient CSP page gives them (the README's list).
    #[test]
    fn node_table_has_the_csp_pages_operations() {
        fn walk(spec: &NodeSpec, path: &str, out: &mut Vec<String>) {
            out.push(format!("{path} {} {}", spec.format, spec.ops.names()));
            for c in spec.children {
                walk(c, &format!("{path}/{}", c.name), out);
            }
        }
        let mut got = Vec::new();
        walk(&DMCLIENT, "DMClient", &mut got);
        let p = "DMClient/Provider/<ProviderID>";
        let expected = [
            "DMClient node Get".to_string(),
            "DMClient/UpdateManagementServiceAddress chr Get,Replace".into(),
            "DMClient/HWDevID chr Get".into(),
            "DMClient/Provider node Get".into(),
            format!("{p} node Get,Add"),
            format!("{p}/EntDeviceName chr Get,Add"),
            format!("{p}/EntDMID chr Get,Add"),
            format!("{p}/ExchangeID chr Get"),
            format!("{p}/PublisherDeviceID chr Get"),
            format!("{p}/SignedEntDMID chr Get"),
            format!("{p}/CertRenewTimeStamp chr Get"),
            format!("{p}/ManagementServiceAddress chr Get,Add,Replace"),
            format!("{p}/UPN chr Get,Replace"),
            format!("{p}/HelpPhoneNumber chr Get,Replace,Delete"),
            format!("{p}/HelpWebsite chr Get,Replace,Delete"),
            format!("{p}/HelpEmailAddress chr Get,Replace,Delete"),
            format!("{p}/RequireMessageSigning bool Get,Replace,Delete"),
            format!("{p}/SyncApplicationVersion chr Get,Replace,Delete"),
            format!("{p}/MaxSyncApplicationVersion chr Get"),
            format!("{p}/AADResourceID chr Get,Add,Replace"),
            format!("{p}/EnableOmaDmKeepAliveMessage bool Get,Replace"),
            format!("{p}/AADDeviceID chr Get"),
            format!("{p}/EnrollmentType chr Get"),
            format!("{p}/HWDevID chr Get"),
            format!("{p}/CommercialID chr Get,Add,Replace,Delete"),
            format!("{p}/ManagementServerAddressList chr Get,Replace"),
            format!("{p}/ManagementServerToUpgradeTo chr Get,Add,Replace,Delete"),
            format!("{p}/NumberOfDaysAfterLostContactToUnenroll int Get,Add,Replace,Delete"),
            format!("{p}/AADSendDeviceToken bool Get,Add,Replace,Delete"),
            format!("{p}/ForceAadToken bool Get,Add,Replace,Delete"),
            format!("{p}/Poll node Get,Add"),
            format!("{p}/Poll/IntervalForFirstSetOfRetries int Get,Replace"),
            format!("{p}/Poll/NumberOfFirstRetries int Get,Replace"),
            format!("{p}/Poll/IntervalForSecondSetOfRetries int Get,Replace"),
            format!("{p}/Poll/NumberOfSecondRetries int Get,Replace"),
            format!("{p}/Poll/IntervalForRemainingScheduledRetries int Get,Replace"),
            format!("{p}/Poll/NumberOfRemainingScheduledRetries int Get,Replace"),
            format!("{p}/Poll/PollOnLogin bool Get,Add,Replace"),
            format!("{p}/Poll/AllUsersPollOnFirstLogin bool Get,Add,Replace"),
            format!("{p}/Push node Add,Delete"),
            format!("{p}/Push/PFN chr Get,Add,Replace"),
            format!("{p}/Push/ChannelURI chr Get"),
            format!("{p}/Push/Status int Get"),
            format!("{p}/CustomEnrollmentCompletePage node Get,Add,Delete"),
            format!("{p}/CustomEnrollmentCompletePage/Title chr Get,Add,Replace,Delete"),
            format!("{p}/CustomEnrollmentCompletePage/BodyText chr Get,Add,Replace,Delete"),
            format!("{p}/CustomEnrollmentCompletePage/HyperlinkHref chr Get,Add,Replace,Delete"),
            format!("{p}/CustomEnrollmentCompletePage/HyperlinkText chr Get,Add,Replace,Delete"),
            format!("{p}/FirstSyncStatus node Get,Add,Delete"),
            format!("{p}/FirstSyncStatus/ExpectedPolicies chr Get,Add,Replace,Delete"),
            format!("{p}/FirstSyncStatus/ExpectedNetworkProfiles chr Get,Add,Replace,Delete"),
            format!("{p}/FirstSyncStatus/ExpectedMSIAppPackages chr Get,Add,Replace,Delete"),
            format!("{p}/FirstSyncStatus/ExpectedModernAppPackages chr Get,Add,Replace,Delete"),
            format!("{p}/FirstSyncStatus/ExpectedPFXCerts chr Get,Add,Replace,Delete"),
            format!("{p}/FirstSyncStatus/ExpectedSCEPCerts chr Get,Add,Replace,Delete"),
            format!("{p}/FirstSyncStatus/TimeOutUntilSyncFailure int Get,Replace"),
            format!("{p}/FirstSyncStatus/ServerHasFinishedProvisioning bool Get,Replace"),
            format!("{p}/FirstSyncStatus/IsSyncDone bool Get,Replace"),
            format!("{p}/FirstSyncStatus/WasDeviceSuccessfullyProvisioned int Get,Replace"),
            format!("{p}/FirstSyncStatus/BlockInStatusPage int Get,Replace"),
            format!("{p}/FirstSyncStatus/AllowCollectLogsButton bool Get,Replace"),
            format!("{p}/FirstSyncStatus/CustomErrorText chr Get,Add,Replace,Delete"),
            format!("{p}/FirstSyncStatus/SkipDeviceStatusPage bool Get,Replace"),
            format!("{p}/FirstSyncStatus/SkipUserStatusPage bool Get,Replace"),
            format!("{p}/EnhancedAppLayerSecurity node Get"),
            format!("{p}/EnhancedAppLayerSecurity/SecurityMode int Get,Add,Replace,Delete"),
            format!("{p}/EnhancedAppLayerSecurity/UseCertIfRevocationCheckOffline bool Get,Add,Replace,Delete"),
            format!("{p}/EnhancedAppLayerSecurity/Cert0 chr Get,Add,Replace,Delete"),
            format!("{p}/EnhancedAppLayerSecurity/Cert1 chr Get,Add,Replace,Delete"),
            format!("{p}/Unenroll null Get,Exec"),
            "DMClient/Unenroll null Get,Exec".into(),
        ];
        assert_eq!(got, expected);

        let mut user = Vec::new();
        walk(&DMCLIENT_USER, "DMClient", &mut user);
        let f = "DMClient/Provider/<ProviderID>/FirstSyncStatus";
        let mut expected_user = vec![
            "DMClient node Get".to_string(),
            "DMClient/Provider node Get".into(),
            format!("{p} node Get,Add"),
            format!("{f} node Get,Add,Delete"),
        ];
        for n in ["Policies", "NetworkProfiles", "MSIAppPackages", "ModernAppPackages", "PFXCerts", "SCEPCerts"] {
            expected_user.push(format!("{f}/Expected{n} chr Get,Add,Replace,Delete"));
        }
        expected_user.extend([
            format!("{f}/ServerHasFinishedProvisioning bool Get,Replace"),
            format!("{f}/IsSyncDone bool Get,Replace"),
            format!("{f}/WasDeviceSuccessfullyProvisioned int Get,Replace"),
            format!("{f}/AllowCollectLogsButton bool Get,Replace"),
            format!("{f}/CustomErrorText chr Get,Add,Replace,Delete"),
        ]);
        assert_eq!(user, expected_user);
    }

    #[test]
    fn replace_on_a_get_only_node_is_405_and_the_value_stays() {
        let mut d = Dev::new();
        for node in
            ["ExchangeID", "AADDeviceID", "HWDevID", "MaxSyncApplicationVersion", "Push/ChannelURI", "Push/Status"]
        {
            assert_eq!(d.replace(&format!("{P}/{node}"), "x"), StatusCode::CommandNotAllowed, "{node}");
        }
        assert_eq!(d.value(&format!("{P}/MaxSyncApplicationVersion")), "2.0");
        assert_eq!(d.replace("./Vendor/MSFT/DMClient/HWDevID", "x"), StatusCode::CommandNotAllowed);
        // EntDMID and EntDeviceName are Get/Add: set once at enrollment, never replaced.
        assert_eq!(d.add(&format!("{P}/EntDMID"), Some("dev-1")), StatusCode::Ok);
        assert_eq!(d.replace(&format!("{P}/EntDMID"), "dev-2"), StatusCode::CommandNotAllowed);
        assert_eq!(d.value(&format!("{P}/EntDMID")), "dev-1");
        // UPN is Get/Replace: no Add.
        assert_eq!(d.add(&format!("{P}/UPN"), Some("a@b.c")), StatusCode::CommandNotAllowed);
        assert_eq!(d.replace(&format!("{P}/UPN"), "a@b.c"), StatusCode::Ok);
        assert_eq!(d.value(&format!("{P}/UPN")), "a@b.c");
        // Push has no Get in the DMClient CSP page.
        assert_eq!(d.get(&format!("{P}/Push")).0, StatusCode::CommandNotAllowed);
    }

    #[test]
    fn add_on_an_existing_node_is_418() {
        let mut d = Dev::new();
        assert_eq!(d.add(P, None), StatusCode::AlreadyExists);
        assert_eq!(d.add(&format!("{P}/ManagementServiceAddress"), Some("https://other")), StatusCode::AlreadyExists);
        assert_eq!(d.add(&format!("{P}/Poll"), None), StatusCode::AlreadyExists);
        assert_eq!(d.add(&format!("{P}/EntDeviceName"), Some("PC-1")), StatusCode::Ok);
        assert_eq!(d.add(&format!("{P}/EntDeviceName"), Some("PC-2")), StatusCode::AlreadyExists);
        assert_eq!(d.value(&format!("{P}/EntDeviceName")), "PC-1");
    }

    #[test]
    fn exchange_id_is_404_until_the_device_sets_it() {
        let mut d = Dev::new();
        assert_eq!(d.get(&format!("{P}/ExchangeID")).0, StatusCode::NotFound);
        // The user sets up email: the device stores the ID (not the server).
        d.state.set_value(&format!("{}/ExchangeID", provider_key("Fleet")), "EAS-42");
        assert_eq!(d.value(&format!("{P}/ExchangeID")), "EAS-42");
        // Unknown provider: 404.
        assert_eq!(d.get("./Vendor/MSFT/DMClient/Provider/Other/EntDMID").0, StatusCode::NotFound);
    }

    #[test]
    fn max_sync_application_version_is_2_0_on_win10_and_404_on_win81() {
        let mut d = Dev::new();
        assert_eq!(d.value(&format!("{P}/MaxSyncApplicationVersion")), "2.0");
        let mut old = Dev::with(Profile::Win81, &[]);
        assert_eq!(old.get(&format!("{P}/MaxSyncApplicationVersion")).0, StatusCode::NotFound);
        assert_eq!(old.get(&format!("{P}/SyncApplicationVersion")).0, StatusCode::NotFound);
        assert_eq!(old.replace(&format!("{P}/SyncApplicationVersion"), "2.0"), StatusCode::NotFound);
    }

    #[test]
    fn sync_application_version_goes_from_1_0_to_2_0_and_never_back() {
        let mut d = Dev::new();
        let node = format!("{P}/SyncApplicationVersion");
        assert_eq!(d.value(&node), "1.0");
        assert_eq!(d.replace(&node, "abc"), StatusCode::BadRequest);
        assert_eq!(d.replace(&node, "2.0"), StatusCode::Ok);
        assert_eq!(d.replace(&node, "1.0"), StatusCode::CommandNotAllowed);
        assert_eq!(d.delete(&node), StatusCode::CommandNotAllowed);
        assert_eq!(d.value(&node), "2.0");
        assert_eq!(sync_application_version(&d.state, "Fleet"), "2.0");
    }

    #[test]
    fn poll_defaults_read_back_after_enrollment_and_feed_the_timetable() {
        let mut d = Dev::new();
        assert_eq!(poll_values(&mut d), [15, 10, 0, 0, 0, 0]);
        assert!(d.value(&format!("{P}/Poll")).starts_with("IntervalForFirstSetOfRetries/NumberOfFirstRetries/"));
        let cfg = poll_config(&d.state, "Fleet").unwrap();
        assert_eq!(cfg, PollConfig::default());
        let tt = PollTimetable::new(d.env.now, cfg);
        assert_eq!(tt.instants().nth(9), Some(d.env.now + TimeDelta::minutes(150)));
        // After the ten polls, no infinite set: the daily poll at 02:00.
        assert_eq!(tt.instants().nth(10), Some(Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).unwrap()));
        assert_eq!(poll_config(&d.state, "Nobody"), None);
    }

    #[test]
    fn poll_must_be_added_first_on_a_device_polled_through_the_registry() {
        let mut d = Dev::with(Profile::Win10, &[("poll_requires_add", "true")]);
        let node = poll("IntervalForFirstSetOfRetries");
        assert_eq!(d.get(&node).0, StatusCode::NotFound);
        assert_eq!(d.replace(&node, "30"), StatusCode::NotFound);
        assert_eq!(d.add(&format!("{P}/Poll"), None), StatusCode::Ok);
        assert_eq!(d.value(&node), "15");
        assert_eq!(d.replace(&node, "30"), StatusCode::Ok);
        assert_eq!(d.value(&node), "30");
        assert_eq!(d.add(&format!("{P}/Poll"), None), StatusCode::AlreadyExists);
    }

    /// The DMClient CSP page's four poll tables: "set by the server" in, "actual value queried on device" out.
    #[test]
    fn the_csp_pages_poll_tables() {
        struct Table {
            name: &'static str,
            settings: &'static [(&'static str, &'static str)],
            set: [u32; 6],
            actual: [u32; 6],
        }
        let tables = [
            Table {
                name: "Valid: sigmoid polling schedule with infinite schedule (recommended)",
                settings: &[],
                set: [15, 5, 60, 10, 1440, 0],
                actual: [15, 5, 60, 10, 1440, 0],
            },
            Table {
                name: "Valid: initial enrollment only (no infinite schedule)",
                settings: &[],
                set: [15, 5, 60, 10, 0, 0],
                actual: [15, 5, 60, 10, 0, 0],
            },
            Table {
                // Read back as written when the template accepts it; see the refusal test below
                // for the default.
                name: "Invalid: disable all poll schedules",
                settings: &[("poll_all_zero", "accept")],
                set: [0, 0, 0, 0, 0, 0],
                actual: [0, 0, 0, 0, 0, 0],
            },
            Table {
                name: "Invalid: two infinite schedules",
                settings: &[],
                set: [15, 5, 1440, 0, 1440, 0],
                actual: [15, 5, 1440, 0, 0, 0],
            },
        ];
        for t in tables {
            let mut d = Dev::with(Profile::Win10, t.settings);
            for ((name, _), v) in POLL_VALUES.iter().zip(t.set) {
                assert_eq!(d.replace(&poll(name), &v.to_string()), StatusCode::Ok, "{}: {name}", t.name);
            }
            assert_eq!(poll_values(&mut d), t.actual, "{}", t.name);
        }
    }

    #[test]
    fn an_all_zero_poll_configuration_is_refused_and_the_previous_value_stays() {
        let mut d = Dev::new();
        assert_eq!(d.replace(&poll("IntervalForFirstSetOfRetries"), "0"), StatusCode::Ok);
        // The Replace that would complete the all-zero configuration fails.
        assert_eq!(d.replace(&poll("NumberOfFirstRetries"), "0"), StatusCode::CommandFailed);
        assert_eq!(poll_values(&mut d), [0, 10, 0, 0, 0, 0]);
    }

    #[test]
    fn an_all_zero_poll_configuration_inside_an_atomic_rolls_everything_back() {
        let mut d = Dev::new();
        let cmds = POLL_VALUES
            .iter()
            .enumerate()
            .map(|(i, (name, _))| replace_cmd(&(i + 2).to_string(), &poll(name), "0"))
            .collect();
        let out = d.run(&Command::Atomic(Container { cmd_id: "1".into(), commands: cmds, ..Container::default() }));
        let codes: Vec<u16> = out.iter().map(|o| o.code.code()).collect();
        assert_eq!(codes, [507, 216, 500, 216, 216, 216, 216]);
        assert_eq!(poll_values(&mut d), [15, 10, 0, 0, 0, 0]);
    }

    #[test]
    fn fleets_every_minute_schedule_is_an_infinite_first_set_unless_strict() {
        let fleet = [("IntervalForFirstSetOfRetries", "1"), ("NumberOfFirstRetries", "0")];
        let mut d = Dev::new();
        for (n, v) in fleet {
            assert_eq!(d.replace(&poll(n), v), StatusCode::Ok);
        }
        assert_eq!(poll_values(&mut d), [1, 0, 0, 0, 0, 0]);
        let cfg = poll_config(&d.state, "Fleet").unwrap();
        assert_eq!(cfg.infinite_set(), Some(0));
        let tt = PollTimetable::new(d.env.now, cfg);
        assert_eq!(
            tt.next_after(d.env.now + TimeDelta::days(3)),
            Some(d.env.now + TimeDelta::days(3) + TimeDelta::minutes(1))
        );

        let mut strict = Dev::with(Profile::Win10, &[("strict_poll_schedule", "true")]);
        assert_eq!(strict.replace(&poll("IntervalForFirstSetOfRetries"), "1"), StatusCode::Ok);
        assert_eq!(strict.replace(&poll("NumberOfFirstRetries"), "0"), StatusCode::CommandFailed);
        assert_eq!(poll_values(&mut strict), [1, 10, 0, 0, 0, 0]);
    }

    #[test]
    fn corrections_do_not_depend_on_the_order_the_server_sends_the_values() {
        // Every Interval first, then the Numbers: half-way the second set looks infinite, yet
        // the recommended table reads back exactly as set.
        let mut d = Dev::new();
        for (name, v) in [
            ("IntervalForFirstSetOfRetries", "15"),
            ("IntervalForSecondSetOfRetries", "60"),
            ("IntervalForRemainingScheduledRetries", "1440"),
            ("NumberOfFirstRetries", "5"),
            ("NumberOfSecondRetries", "10"),
            ("NumberOfRemainingScheduledRetries", "0"),
        ] {
            assert_eq!(d.replace(&poll(name), v), StatusCode::Ok, "{name}");
        }
        assert_eq!(poll_values(&mut d), [15, 5, 60, 10, 1440, 0]);
        assert_eq!(poll_config(&d.state, "Fleet").unwrap().infinite_set(), Some(2));
    }

    #[test]
    fn a_set_after_an_infinite_set_reads_back_disabled() {
        let mut d = Dev::new();
        assert_eq!(d.replace(&poll("NumberOfFirstRetries"), "0"), StatusCode::Ok);
        assert_eq!(d.replace(&poll("IntervalForSecondSetOfRetries"), "60"), StatusCode::Ok);
        assert_eq!(d.replace(&poll("NumberOfSecondRetries"), "4"), StatusCode::Ok);
        // The first set is infinite: the second is disabled, its interval reads 0.
        assert_eq!(poll_values(&mut d), [15, 0, 0, 4, 0, 0]);
        assert_eq!(d.replace(&poll("IntervalForFirstSetOfRetries"), "-5"), StatusCode::BadRequest);
        assert_eq!(d.replace(&poll("IntervalForFirstSetOfRetries"), "x"), StatusCode::BadRequest);
    }

    #[test]
    fn no_infinite_schedule_gives_the_daily_maintenance_poll() {
        let mut d = Dev::with(Profile::Win10, &[("maintenance_time", "03:00"), ("utc_offset_minutes", "60")]);
        for ((name, _), v) in POLL_VALUES.iter().zip([15, 5, 60, 10, 0, 0]) {
            assert_eq!(d.replace(&poll(name), &v.to_string()), StatusCode::Ok);
        }
        let tt = PollTimetable::new(d.env.now, poll_config(&d.state, "Fleet").unwrap())
            .with_maintenance(MaintenanceWindow::from_settings(&d.env.settings));
        let polls: Vec<_> = tt.instants().take(17).collect();
        // Last finite poll 09:00 + 75 min + 600 min = 20:15; then 03:00 local = 02:00 UTC daily.
        assert_eq!(polls[14], Utc.with_ymd_and_hms(2026, 3, 1, 20, 15, 0).unwrap());
        assert_eq!(polls[15], Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).unwrap());
        assert_eq!(polls[16], Utc.with_ymd_and_hms(2026, 3, 3, 2, 0, 0).unwrap());
    }

    #[test]
    fn login_poll_flags_are_stored_and_readable_by_the_scheduler() {
        let mut d = Dev::new();
        assert_eq!(d.value(&poll("PollOnLogin")), "false");
        assert!(!poll_on_login(&d.state, "Fleet"));
        assert_eq!(d.add(&poll("PollOnLogin"), Some("true")), StatusCode::Ok);
        assert_eq!(d.add(&poll("PollOnLogin"), Some("false")), StatusCode::AlreadyExists);
        assert_eq!(d.replace(&poll("AllUsersPollOnFirstLogin"), "TRUE"), StatusCode::Ok);
        assert_eq!(d.replace(&poll("AllUsersPollOnFirstLogin"), "yes"), StatusCode::BadRequest);
        assert_eq!(d.value(&poll("PollOnLogin")), "true");
        assert_eq!(d.value(&poll("AllUsersPollOnFirstLogin")), "true");
        assert!(poll_on_login(&d.state, "Fleet"));
        assert!(all_users_poll_on_first_login(&d.state, "Fleet"));
        let cfg = poll_config(&d.state, "Fleet").unwrap();
        assert!(cfg.poll_on_login && cfg.all_users_poll_on_first_login);
    }

    #[test]
    fn management_service_address_takes_one_url_or_a_list() {
        let mut d = Dev::new();
        let node = format!("{P}/ManagementServiceAddress");
        assert_eq!(d.replace(&node, "<https://a.example/MDM><https://b.example/MDM>"), StatusCode::Ok);
        assert_eq!(d.value(&node), "<https://a.example/MDM><https://b.example/MDM>");
        assert_eq!(
            server_addresses(&d.state, "Fleet").unwrap().urls(),
            ["https://a.example/MDM", "https://b.example/MDM"]
        );
        assert_eq!(d.replace(&node, "<https://a.example/MDM"), StatusCode::BadRequest);
        assert_eq!(d.replace(&node, "not a url"), StatusCode::BadRequest);
        assert_eq!(d.value(&node), "<https://a.example/MDM><https://b.example/MDM>");
    }

    #[test]
    fn management_server_address_list_from_the_csp_pages_example_takes_precedence() {
        let mut d = Dev::new();
        // The DMClient CSP page's example, escaped as it travels in the XML.
        let out = d.message(
            r#"<Replace><CmdID>101</CmdID><Item><Target><LocURI>
                  ./Vendor/MSFT/DMClient/Provider/Fleet/ManagementServerAddressList
               </LocURI></Target><Data>&lt;https://server1&gt;&lt;https:// server2&gt; </Data></Item></Replace>
               <Get><CmdID>102</CmdID><Item><Target><LocURI>./Vendor/MSFT/DMClient/Provider/Fleet/ManagementServerAddressList</LocURI></Target></Item></Get>"#,
        );
        assert_eq!(out[0].code, StatusCode::Ok);
        assert_eq!(out[1].results[0].data.as_deref(), Some("<https://server1><https:// server2> "));
        let list = server_addresses(&d.state, "Fleet").unwrap();
        assert_eq!(list.urls(), ["https://server1", "https://server2"]);
        // ManagementServiceAddress is ignored while the list is set, and used again once cleared.
        assert_eq!(d.replace(&format!("{P}/ManagementServerAddressList"), ""), StatusCode::Ok);
        assert_eq!(server_addresses(&d.state, "Fleet").unwrap().urls(), ["https://mdm.example/MDM.svc"]);
    }

    #[test]
    fn update_management_service_address_reorders_but_cannot_add_servers() {
        let mut d = Dev::new();
        assert_eq!(
            d.replace(&format!("{P}/ManagementServiceAddress"), "<https://a><https://b><https://c>"),
            StatusCode::Ok
        );
        let node = "./Vendor/MSFT/DMClient/UpdateManagementServiceAddress";
        assert_eq!(d.replace(node, "https://a;https://z"), StatusCode::CommandNotAllowed);
        assert_eq!(d.replace(node, ""), StatusCode::BadRequest);
        assert_eq!(d.replace(node, "https://c;https://a"), StatusCode::Ok);
        assert_eq!(d.value(node), "https://c;https://a");
        assert_eq!(d.value(&format!("{P}/ManagementServiceAddress")), "<https://c><https://a>");
        assert_eq!(server_addresses(&d.state, "Fleet").unwrap().first(), "https://c");
    }

    #[test]
    fn push_channel_follows_the_pfn_and_the_fake_wns_settings() {
        let pfn = "Contoso.MDM_8wekyb3d8bbwe";
        let mut d = Dev::new();
        let (uri, status) = (format!("{P}/Push/ChannelURI"), format!("{P}/Push/Status"));
        // No PFN yet: empty channel, "no Channel URI assigned".
        assert_eq!((d.value(&uri), d.value(&status)), (String::new(), "4".into()));
        assert_eq!(d.add(&format!("{P}/Push/PFN"), Some("not-a-pfn")), StatusCode::Ok);
        assert_eq!((d.value(&uri), d.value(&status)), (String::new(), "1".into()));
        assert_eq!(d.replace(&format!("{P}/Push/PFN"), pfn), StatusCode::Ok);
        // A valid PFN but no push endpoint configured: no channel.
        assert_eq!((d.value(&uri), d.value(&status)), (String::new(), "4".into()));

        let mut w = Dev::with(Profile::Win10, &[("push_endpoint", "http://127.0.0.1:8181/wns/")]);
        assert_eq!(w.add(&format!("{P}/Push/PFN"), Some(pfn)), StatusCode::Ok);
        assert_eq!(w.value(&uri), "http://127.0.0.1:8181/wns/0123456789ABCDEF0123456789ABCDEF/Fleet");
        assert_eq!(w.value(&status), "0");
        assert_eq!(
            channel_target(&w.value(&uri), "http://127.0.0.1:8181/wns"),
            Some(("0123456789ABCDEF0123456789ABCDEF".into(), "Fleet".into()))
        );
        assert_eq!(channel_target("http://127.0.0.1:8181/wns/MS%20DM%20Server", "http://127.0.0.1:8181/wns"), None);
        assert_eq!(channel_target("http://127.0.0.1:9/wns/A/B", "http://127.0.0.1:8181/wns"), None);

        let mut expired =
            Dev::with(Profile::Win10, &[("push_endpoint", "http://127.0.0.1:1/wns"), ("push_status", "5")]);
        assert_eq!(expired.add(&format!("{P}/Push/PFN"), Some(pfn)), StatusCode::Ok);
        assert_eq!((expired.value(&uri), expired.value(&status)), (String::new(), "5".into()));

        // Deleting Push removes push support: the nodes are gone.
        assert_eq!(w.delete(&format!("{P}/Push")), StatusCode::Ok);
        assert_eq!(w.get(&uri).0, StatusCode::NotFound);
        assert_eq!(push_channel(&w.state, &w.env.settings, "Fleet").status, PushStatus::NoChannelUri);
    }

    #[test]
    fn a_pfn_asks_the_service_for_a_channel_and_its_answers_show_in_channel_uri_and_status() {
        let pfn = "Contoso.MDM_8wekyb3d8bbwe";
        let (uri, status) = (format!("{P}/Push/ChannelURI"), format!("{P}/Push/Status"));
        let mut d = Dev::new();
        assert_eq!(d.add(&format!("{P}/Push/PFN"), Some(pfn)), StatusCode::Ok);
        assert_eq!(
            d.effects,
            [Effect::RequestChannel { csp: "DMClient", node: "Provider/Fleet/Push".into(), app: pfn.into() }]
        );
        d.effects.clear();
        let answer = |d: &mut Dev, outcome: ChannelOutcome| {
            let e = d.reg.on_channel(&mut d.state, &d.env, "DMClient", "Provider/Fleet/Push", &outcome);
            d.effects.extend(e);
        };
        let expires = d.env.now + TimeDelta::days(30);
        answer(&mut d, ChannelOutcome::Granted { uri: "http://127.0.0.1:9/?token=a".into(), expires });
        assert_eq!((d.value(&uri), d.value(&status)), ("http://127.0.0.1:9/?token=a".into(), "0".into()));
        // Renewed 15 days before it expires, for the same app.
        let reg = d.reg.clone();
        assert_eq!(reg.next_deadline(&mut d.state, &d.env), Some(expires - TimeDelta::days(15)));
        d.env.now = expires - TimeDelta::days(15);
        let renew = reg.on_deadline(&mut d.state, &d.env);
        assert!(matches!(&renew[..], [Effect::RequestChannel { app, .. }] if app == pfn), "{renew:?}");
        assert_eq!(reg.next_deadline(&mut d.state, &d.env), Some(d.env.now + TimeDelta::days(1)), "asked once");
        // A notification lost with the network off: 7, the channel stays.
        answer(&mut d, ChannelOutcome::SessionBlocked);
        assert_eq!((d.value(&uri), d.value(&status)), ("http://127.0.0.1:9/?token=a".into(), "7".into()));
        // Revoked: 3 and no channel until the server configures push again.
        answer(&mut d, ChannelOutcome::Revoked);
        assert_eq!((d.value(&uri), d.value(&status)), (String::new(), "3".into()));
        assert!(d.effects.is_empty());
        // Expired: 5, and the device asks for a new channel at once.
        answer(&mut d, ChannelOutcome::Expired);
        assert_eq!(d.value(&status), "5");
        assert!(matches!(&d.effects[..], [Effect::RequestChannel { app, .. }] if app == pfn), "{:?}", d.effects);
        // No service: 4.
        answer(&mut d, ChannelOutcome::Unavailable("none".into()));
        assert_eq!((d.value(&uri), d.value(&status)), (String::new(), "4".into()));
        // An invalid PFN asks nothing and reads 1.
        d.effects.clear();
        assert_eq!(d.replace(&format!("{P}/Push/PFN"), "nope"), StatusCode::Ok);
        assert!(d.effects.is_empty());
        assert_eq!(d.value(&status), "1");
    }

    #[test]
    fn server_has_finished_provisioning_cannot_go_back_to_false() {
        let mut d = Dev::new();
        let node = format!("{P}/FirstSyncStatus/ServerHasFinishedProvisioning");
        assert_eq!(
            d.add(&format!("{P}/FirstSyncStatus/ExpectedPolicies"), Some("./Vendor/MSFT/Policy/Config/X")),
            StatusCode::Ok
        );
        assert_eq!(d.value(&node), "false");
        assert_eq!(d.replace(&node, "true"), StatusCode::Ok);
        assert_eq!(d.replace(&node, "false"), StatusCode::CommandNotAllowed);
        assert_eq!(d.value(&node), "true");
        // The expected lists are frozen once the server is done.
        assert_eq!(d.replace(&format!("{P}/FirstSyncStatus/ExpectedPolicies"), "y"), StatusCode::CommandNotAllowed);
    }

    #[test]
    fn is_sync_done_cannot_go_from_true_to_false_nor_true_to_true() {
        let mut d = Dev::new();
        assert_eq!(d.add(&format!("{P}/FirstSyncStatus"), None), StatusCode::Ok);
        let node = format!("{P}/FirstSyncStatus/IsSyncDone");
        assert_eq!(d.replace(&node, "false"), StatusCode::Ok);
        assert_eq!(d.replace(&node, "true"), StatusCode::Ok);
        assert_eq!(d.replace(&node, "true"), StatusCode::CommandNotAllowed);
        assert_eq!(d.replace(&node, "false"), StatusCode::CommandNotAllowed);
        assert_eq!(d.value(&node), "true");
    }

    #[test]
    fn was_device_successfully_provisioned_is_final_once_0_or_1() {
        let mut d = Dev::new();
        assert_eq!(d.add(&format!("{P}/FirstSyncStatus"), None), StatusCode::Ok);
        let node = format!("{P}/FirstSyncStatus/WasDeviceSuccessfullyProvisioned");
        assert_eq!(d.value(&node), "2");
        assert_eq!(d.replace(&node, "3"), StatusCode::BadRequest);
        assert_eq!(d.replace(&node, "1"), StatusCode::Ok);
        assert_eq!(d.replace(&node, "0"), StatusCode::CommandNotAllowed);
        assert_eq!(d.replace(&node, "2"), StatusCode::CommandNotAllowed);
        assert_eq!(d.value(&node), "1");
    }

    #[test]
    fn user_scope_first_sync_status_has_the_same_one_way_rules() {
        let mut d = Dev::new();
        d.reg.register(DmClientUser);
        let user = "./User/Vendor/MSFT/DMClient/Provider/Fleet/FirstSyncStatus";
        assert_eq!(d.get(&format!("{user}/IsSyncDone")).0, StatusCode::NotFound);
        assert_eq!(
            d.add(&format!("{user}/ExpectedPolicies"), Some("./User/Vendor/MSFT/Policy/Config/A")),
            StatusCode::Ok
        );
        assert_eq!(d.replace(&format!("{user}/IsSyncDone"), "true"), StatusCode::Ok);
        assert_eq!(d.replace(&format!("{user}/IsSyncDone"), "true"), StatusCode::CommandNotAllowed);
        assert_eq!(d.value(&format!("{user}/IsSyncDone")), "true");
        // The device's own node is separate.
        assert_eq!(d.get(&format!("{P}/FirstSyncStatus/IsSyncDone")).0, StatusCode::NotFound);
        // Only FirstSyncStatus exists in user scope.
        assert_eq!(d.get("./User/Vendor/MSFT/DMClient/Provider/Fleet/EntDMID").0, StatusCode::NotFound);
    }

    #[test]
    fn time_out_until_sync_failure_is_1_to_1440_minutes() {
        let mut d = Dev::new();
        assert_eq!(d.add(&format!("{P}/FirstSyncStatus"), None), StatusCode::Ok);
        let node = format!("{P}/FirstSyncStatus/TimeOutUntilSyncFailure");
        assert_eq!(d.value(&node), "60");
        assert_eq!(d.replace(&node, "0"), StatusCode::BadRequest);
        assert_eq!(d.replace(&node, "1441"), StatusCode::BadRequest);
        assert_eq!(d.replace(&node, "1440"), StatusCode::Ok);
        assert_eq!(d.value(&node), "1440");
    }

    #[test]
    fn first_sync_status_refusal_inside_an_atomic_rolls_back_the_rest() {
        let mut d = Dev::new();
        assert_eq!(d.add(&format!("{P}/FirstSyncStatus"), None), StatusCode::Ok);
        let cmds = vec![
            replace_cmd("2", &format!("{P}/FirstSyncStatus/IsSyncDone"), "true"),
            replace_cmd("3", &format!("{P}/FirstSyncStatus/TimeOutUntilSyncFailure"), "5000"),
        ];
        let out = d.run(&Command::Atomic(Container { cmd_id: "1".into(), commands: cmds, ..Container::default() }));
        assert_eq!(out.iter().map(|o| o.code.code()).collect::<Vec<_>>(), [507, 216, 400]);
        assert_eq!(d.value(&format!("{P}/FirstSyncStatus/IsSyncDone")), "false");
    }

    #[test]
    fn keep_alive_signing_and_lost_contact_are_stored_and_readable() {
        let mut d = Dev::new();
        assert!(!keep_alive_enabled(&d.state, "Fleet") && !message_signing_required(&d.state, "Fleet"));
        assert_eq!(d.value(&format!("{P}/RequireMessageSigning")), "false");
        assert_eq!(d.replace(&format!("{P}/EnableOmaDmKeepAliveMessage"), "true"), StatusCode::Ok);
        assert_eq!(d.replace(&format!("{P}/RequireMessageSigning"), "true"), StatusCode::Ok);
        assert!(keep_alive_enabled(&d.state, "Fleet") && message_signing_required(&d.state, "Fleet"));
        assert_eq!(d.delete(&format!("{P}/RequireMessageSigning")), StatusCode::Ok);
        assert_eq!(d.value(&format!("{P}/RequireMessageSigning")), "false");
        assert!(!message_signing_required(&d.state, "Fleet"));

        let node = format!("{P}/NumberOfDaysAfterLostContactToUnenroll");
        assert_eq!(d.get(&node).0, StatusCode::NotFound);
        assert_eq!(d.add(&node, Some("-1")), StatusCode::BadRequest);
        assert_eq!(d.add(&node, Some("30")), StatusCode::Ok);
        assert_eq!(d.value(&node), "30");
        let last = d.env.now;
        assert_eq!(lost_contact_deadline(&d.state, "Fleet", last), Some(last + TimeDelta::days(30)));
        assert_eq!(d.replace(&node, "0"), StatusCode::Ok);
        assert_eq!(lost_contact_deadline(&d.state, "Fleet", last), None);
    }

    #[test]
    fn the_keep_alive_alert_is_the_csp_pages_message() {
        let alert = request_pending_alert("2");
        let msg = crate::syncml::SyncMl {
            body: crate::syncml::SyncBody { commands: vec![Command::Alert(alert)], final_: false },
            ..Default::default()
        };
        let text = crate::syncml::encode(&msg);
        assert!(text.contains("<Alert><CmdID>2</CmdID><Data>1224</Data><Item><Meta>"), "{text}");
        assert!(
            text.contains("Reversed-Domain-Name:com.microsoft.mdm.requestpending</Type></Meta><Data>1</Data>"),
            "{text}"
        );
        assert_eq!(ent_dmid(&Dev::new().state, "Fleet"), None);
    }

    #[test]
    fn unenroll_exec_reports_success_and_asks_the_device_to_leave() {
        let mut d = Dev::new();
        assert_eq!(d.value(&format!("{P}/Unenroll")), "");
        // The DMClient CSP page's example; Data is ignored.
        let out = d.message(
            r#"<Exec><CmdID>2</CmdID><Item><Target><LocURI>./Vendor/MSFT/DMClient/Provider/Fleet/Unenroll</LocURI></Target>
               <Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>TestMDMServer</Data></Item></Exec>"#,
        );
        assert_eq!(out[0].code, StatusCode::Ok);
        assert!(matches!(&d.effects[..], [Effect::Unenroll { reason }] if reason.contains("Fleet")));
        assert_eq!(d.exec("./Vendor/MSFT/DMClient/Provider/Other/Unenroll", None), StatusCode::NotFound);
        assert_eq!(d.replace(&format!("{P}/Unenroll"), "x"), StatusCode::CommandNotAllowed);
    }

    #[test]
    fn legacy_unenroll_picks_the_provider_named_in_data() {
        let mut d = Dev::new();
        assert_eq!(d.exec("./Vendor/MSFT/DMClient/Unenroll", Some("Anything")), StatusCode::Ok);
        assert_eq!(d.add("./Vendor/MSFT/DMClient/Provider/Second", None), StatusCode::Ok);
        assert_eq!(d.exec("./Vendor/MSFT/DMClient/Unenroll", Some("Anything")), StatusCode::NotFound);
        assert_eq!(d.exec("./Vendor/MSFT/DMClient/Unenroll", Some("Second")), StatusCode::Ok);
        assert_eq!(d.effects.len(), 2);
        assert!(matches!(&d.effects[1], Effect::Unenroll { reason } if reason.contains("Second")));
        let mut joined = Dev::with(Profile::Win10, &[("aad_joined", "true")]);
        assert_eq!(joined.exec(&format!("{P}/Unenroll"), None), StatusCode::CommandNotAllowed);
        assert!(joined.effects.is_empty());
    }

    #[test]
    fn help_nodes_and_custom_completion_page_are_stored() {
        let mut d = Dev::new();
        let phone = format!("{P}/HelpPhoneNumber");
        assert_eq!(d.get(&phone).0, StatusCode::NotFound);
        assert_eq!(d.replace(&phone, "+1 555 0100"), StatusCode::Ok);
        assert_eq!(d.value(&phone), "+1 555 0100");
        assert_eq!(d.delete(&phone), StatusCode::Ok);
        assert_eq!(d.get(&phone).0, StatusCode::NotFound);
        assert_eq!(d.add(&phone, Some("x")), StatusCode::CommandNotAllowed);

        let title = format!("{P}/CustomEnrollmentCompletePage/Title");
        assert_eq!(d.get(&title).0, StatusCode::NotFound);
        assert_eq!(d.add(&title, Some("All set")), StatusCode::Ok);
        assert_eq!(d.value(&format!("{P}/CustomEnrollmentCompletePage")), "Title/BodyText/HyperlinkHref/HyperlinkText");
        assert_eq!(d.replace(&title, "Done"), StatusCode::Ok);
        assert_eq!(d.value(&title), "Done");
        assert_eq!(d.delete(&format!("{P}/CustomEnrollmentCompletePage")), StatusCode::Ok);
        assert_eq!(d.get(&title).0, StatusCode::NotFound);
    }

    #[test]
    fn enhanced_app_layer_security_values_and_ranges() {
        let mut d = Dev::new();
        let mode = format!("{P}/EnhancedAppLayerSecurity/SecurityMode");
        assert_eq!(
            d.value(&format!("{P}/EnhancedAppLayerSecurity")),
            "SecurityMode/UseCertIfRevocationCheckOffline/Cert0/Cert1"
        );
        assert_eq!(d.value(&mode), "0");
        assert_eq!(d.value(&format!("{P}/EnhancedAppLayerSecurity/UseCertIfRevocationCheckOffline")), "true");
        assert_eq!(d.add(&mode, Some("4")), StatusCode::BadRequest);
        assert_eq!(d.add(&mode, Some("3")), StatusCode::Ok);
        assert_eq!(d.value(&mode), "3");
        assert_eq!(d.add(&mode, Some("1")), StatusCode::AlreadyExists);
        assert_eq!(d.get(&format!("{P}/EnhancedAppLayerSecurity/Cert0")).0, StatusCode::NotFound);
    }

    #[test]
    fn identity_values_come_from_enrollment_and_the_template() {
        let mut d = Dev::with(Profile::Win10, &[("enrollment_type", "Full")]);
        assert_eq!(d.value(&format!("{P}/EnrollmentType")), "Full");
        let hw = d.value("./Vendor/MSFT/DMClient/HWDevID");
        assert_eq!(hw.len(), 64);
        assert_eq!(d.value(&format!("{P}/HWDevID")), hw);
        assert_eq!(d.get(&format!("{P}/AADDeviceID")).0, StatusCode::NotFound);
        d.state.set_value(&format!("{}/AADDeviceID", provider_key("Fleet")), "aad-1");
        assert_eq!(d.value(&format!("{P}/AADDeviceID")), "aad-1");
        // The root lists its children, providers included.
        assert_eq!(d.value("./Vendor/MSFT/DMClient/Provider"), "Fleet");
        assert_eq!(provider_ids(&d.state), ["Fleet"]);
    }

    #[test]
    fn create_provider_gives_the_nodes_enrollment_gives() {
        let mut state = TreeState::new();
        create_provider(&mut state, "MS DM Server", &Settings::default());
        assert_eq!(provider_ids(&state), ["MS DM Server"]);
        assert_eq!(poll_config(&state, "MS DM Server"), Some(PollConfig::default()));
        assert!(state.entry(&format!("{}/Poll", provider_key("MS DM Server"))).is_some());
        let mut legacy = TreeState::new();
        let mut s = Settings::default();
        s.0.insert("poll_requires_add".into(), "true".into());
        create_provider(&mut legacy, "X", &s);
        assert!(legacy.entry(&format!("{}/Poll", provider_key("X"))).is_none());
    }
}
