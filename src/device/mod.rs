//! One emulated device: its identity, profile, server, template settings, tree values and
//! session counter (the record the store keeps), and how a trigger becomes a session.
//!
//! Owns the device record and its creation from a [`Template`], and turning a trigger (or a
//! scheduler's [`SessionRequest`]) into a session configuration. Who is logged on is kept in
//! the record ([`UserState`]); the trigger → mode rules are the scheduling module's
//! ([`crate::schedule::decide`]). Does not own I/O: the runner stores the record and moves the
//! messages.

pub mod auth;
pub mod engine;
mod id;
pub mod run;
pub(crate) mod template;
pub mod vary;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::enroll::EnrollmentType;
use crate::schedule::{SessionRequest, UserEvent, UserState};
use crate::session::{LoginStatus, Mode, SessionAlert, SessionConfig, Trigger};
use crate::syncml::{Alert, Item, Meta};
use crate::tree::{Env, Profile, Settings, TreeState};

pub use id::{BadDeviceId, DeviceId};
pub use template::{
    BEHAVIOUR_KEYS, BehaviourKey, KeyForm, SettingKind, Template, TemplateApp, TemplateError, is_known_leaf,
};

/// The DMClient provider ID when none is given (the one Intune uses, Microsoft's CSP pages).
pub const DEFAULT_PROVIDER_ID: &str = "MS DM Server";

/// The stored record of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub profile: Profile,
    /// The management server address (ADDR): SyncHdr Target and the POST URL.
    pub server_url: String,
    /// DMClient provider ID.
    pub provider_id: String,
    /// The template's `[behaviour]` settings.
    pub settings: Arc<Settings>,
    /// The device's tree values.
    pub tree: TreeState,
    /// Sessions started so far (the next SessionID is this plus one).
    pub sessions: u64,
    /// When the device was created (pre-provisioned) or enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// Who is logged on: the enrolled user (active, locked, logged off), other users.
    #[serde(default = "UserState::enrolled_active")]
    pub users: UserState,
    /// The MDM enrollment the device's sessions use (client certificate, trusted roots);
    /// `None` for a pre-provisioned device (`device new`) and after an unenrollment.
    #[serde(default)]
    pub enrollment: Option<Enrollment>,
    /// Set when the enrollment was wiped (server- or user-initiated unenrollment): the device
    /// must not run management sessions any more.
    #[serde(default)]
    pub unenrolled: Option<Unenrolled>,
    /// The management server URL that last answered a session, with the DMClient address list
    /// it was cached with (the DMClient CSP page, ManagementServerAddressList: "cache the
    /// successfully connected server URL for the next session"); `None` until a session
    /// connected through a list.
    #[serde(default)]
    pub server_cache: Option<ServerCache>,
    /// When the last session completed (the lost-contact countdown of DMClient
    /// NumberOfDaysAfterLostContactToUnenroll runs from it).
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    /// Client alerts a CSP raised outside a session (an MSI install that finished on a timer),
    /// oldest first, at most [`MAX_PENDING_ALERTS`]: sent in package 1 of the next session and
    /// forgotten once that session completed ([`Device::keep_alert`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_alerts: Vec<PendingAlert>,
    /// The highest SessionID the store has reserved durably for this device in this process
    /// ([`crate::runner::store::Store::reserve_session_ids`]); 0 when none. Not part of the
    /// record: the store keeps its own copy of the lease and, after a crash, starts the counter
    /// past it, so that a SessionID a server may have seen is never sent again.
    #[serde(skip)]
    pub session_lease: u64,
}

/// How many undelivered client alerts a device keeps; past it the oldest is dropped. A device
/// that cannot reach its server for weeks must not grow its record without end, and a server
/// that reads thirty-two install reports in one package 1 learns what it needs from them.
pub const MAX_PENDING_ALERTS: usize = 32;

/// A client alert waiting for the next session: the alert code and its one item, in a stored
/// form (the item's Source and Target LocURIs, its Meta Type, Format and Mark, its Data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAlert {
    /// The alert code (1224 for the install reports of Microsoft's EnterpriseDesktopAppManagement CSP page).
    pub code: u16,
    /// When the CSP raised it.
    pub raised_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl PendingAlert {
    /// The stored form of an alert item.
    pub fn new(code: u16, item: &Item, raised_at: DateTime<Utc>) -> PendingAlert {
        let meta = item.meta.as_ref();
        PendingAlert {
            code,
            raised_at,
            source: item.source.clone(),
            target: item.target.clone(),
            meta_type: meta.and_then(|m| m.type_.clone()),
            format: meta.and_then(|m| m.format.clone()),
            mark: meta.and_then(|m| m.mark.clone()),
            data: item.data.clone(),
        }
    }

    /// The SyncML Alert to send (its CmdID is given when package 1 is numbered).
    pub fn alert(&self) -> Alert {
        let meta = Meta {
            type_: self.meta_type.clone(),
            format: self.format.clone(),
            mark: self.mark.clone(),
            ..Meta::default()
        };
        let item = Item {
            source: self.source.clone(),
            target: self.target.clone(),
            meta: (!meta.is_empty()).then_some(Box::new(meta)),
            data: self.data.clone(),
            ..Item::default()
        };
        Alert { data: self.code.to_string(), items: vec![item], ..Alert::default() }
    }
}

impl std::fmt::Display for PendingAlert {
    /// `1224 Reversed-Domain-Name:com.microsoft.mdm.win32csp_install ./Device/...: 0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(t) = &self.meta_type {
            write!(f, " {t}")?;
        }
        if let Some(uri) = self.source.as_ref().or(self.target.as_ref()) {
            write!(f, " {uri}")?;
        }
        if let Some(d) = &self.data {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// The cached server of [`Device::server_cache`] (the stored form of
/// [`crate::csp::dmclient::LastGood`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCache {
    /// The address list in force when `url` answered, in its node form (`<URL1><URL2>`).
    pub list: String,
    /// The URL that answered.
    pub url: String,
}

/// The template's `[nodes]` values in the tree: one value of each list, picked by the DeviceID
/// (the same device always gets the same one, and a fleet varies). Interior nodes on the way are
/// stored as existing, so values under dynamic nodes (a `NetworkIdentifiers/<MAC>`) can be Got.
fn preset_nodes(tree: &mut TreeState, id: &DeviceId, nodes: &std::collections::BTreeMap<String, Vec<String>>) {
    for (uri, values) in nodes {
        let Ok(parsed) = crate::tree::NodeUri::parse(uri) else { continue };
        if values.is_empty() {
            continue;
        }
        let value = vary::expand(template::pick(id, uri, values), id.as_str()).into_owned();
        let segs = &parsed.segments;
        // Ancestors below the CSP root (`Vendor/MSFT/<CSP>` or one segment such as `DevDetail`).
        let root_len = if segs.first().map(String::as_str) == Some("Vendor") { 3 } else { 1 };
        for depth in root_len + 1..segs.len() {
            let k = crate::tree::key_of(parsed.scope, &segs[..depth]);
            if tree.entry(&k).is_none() {
                tree.set(&k, crate::tree::Entry::Interior);
            }
        }
        tree.set_value(&crate::tree::key_of(parsed.scope, segs), value);
    }
}

/// The settings a device created from `template` reads: its `[behaviour]` (and `[wmi]`), plus
/// its `unsupported` LocURIs as tree keys under [`crate::csp::UNSUPPORTED_KEY`], one a line.
pub fn template_settings(template: &Template) -> Arc<Settings> {
    Arc::new(settings_of(template))
}

fn settings_of(template: &Template) -> Settings {
    let mut settings = template.behaviour.clone();
    let keys: Vec<String> = template
        .unsupported
        .iter()
        .filter_map(|uri| crate::tree::NodeUri::parse(uri).ok())
        .map(|u| crate::tree::key_of(u.scope, &u.segments))
        .collect();
    if !keys.is_empty() {
        settings.0.insert(crate::csp::UNSUPPORTED_KEY.to_string(), keys.join("\n"));
    }
    settings
}

/// What a device remembers of its enrollment (MS-MDE2). No secrets: the private key lives in
/// a file of the state directory (0600), referenced by [`Enrollment::files`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub enrollment_type: EnrollmentType,
    /// The discovery URL the device enrolled through.
    pub discovery_url: String,
    /// The enrolling user (email / UPN).
    pub user: String,
    /// DMAcc AccountUID of the w7 account (SHA-256 of PROVIDER-ID).
    pub account_uid: String,
    /// SHA-1 thumbprint (upper hex) of the issued client certificate.
    pub client_cert_thumbprint: String,
    /// The folder, relative to the state directory, holding `device.key` (0600), `device.crt`
    /// (client certificate and intermediates) and `roots.pem` (provisioned roots); `None` while
    /// the material is held in memory only (an in-process fleet).
    pub files: Option<std::path::PathBuf>,
    /// Where the enrollment server departed from MS-MDE2 in ways Windows tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<crate::enroll::EnrollFinding>,
}

/// Who ended an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnenrolledBy {
    /// The server: `DMClient/Provider/<ID>/Unenroll` Exec (Microsoft's DMClient CSP page, unenrollment).
    Server,
    /// The user: `mdmsim unenroll` (Alert 1226 `com.microsoft:mdm.unenrollment.userrequest`).
    User,
    /// The device itself: no successful session for DMClient
    /// `NumberOfDaysAfterLostContactToUnenroll` days.
    LostContact,
}

/// When and by whom the enrollment was wiped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unenrolled {
    pub at: DateTime<Utc>,
    pub by: UnenrolledBy,
    /// The provider (w7 PROVIDER-ID) the device was enrolled with.
    pub provider_id: String,
}

/// How a trigger plays out as a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPlan {
    pub mode: Mode,
    pub alert: SessionAlert,
    /// `Some` on the win10 profile only.
    pub login_status: Option<LoginStatus>,
}

impl SessionPlan {
    /// The plan of a scheduler's session request: its mode, 1200 when server-initiated, and
    /// the LoginStatus alert on win10 only.
    pub fn from_request(r: &SessionRequest, profile: Profile) -> SessionPlan {
        SessionPlan {
            mode: r.mode,
            alert: if r.server_initiated { SessionAlert::ServerInitiated } else { SessionAlert::ClientInitiated },
            login_status: (profile == Profile::Win10).then_some(r.login_status),
        }
    }
}

impl Device {
    /// A pre-provisioned device: the template's DevInfo/DevDetail values and the DeviceID are
    /// written into its tree, and its `[[apps]]` into the EnterpriseAppManagement inventory
    /// (installed at `now` unless the entry says when); all already committed.
    pub fn new(
        id: DeviceId,
        profile: Profile,
        server_url: &str,
        provider_id: &str,
        template: &Template,
        now: DateTime<Utc>,
    ) -> Device {
        Device::with_settings(id, profile, server_url, provider_id, template, template_settings(template), now)
    }

    /// [`Device::new`] with the template's settings already made ([`template_settings`]): the
    /// devices of a fleet made from one template share one copy.
    pub fn with_settings(
        id: DeviceId,
        profile: Profile,
        server_url: &str,
        provider_id: &str,
        template: &Template,
        settings: Arc<Settings>,
        now: DateTime<Utc>,
    ) -> Device {
        let mut tree = TreeState::new();
        tree.set_value("DevInfo/DevId", id.as_str());
        // Values marked to vary across a fleet are expanded for this DeviceID (device::vary).
        for (k, v) in &template.devinfo {
            tree.set_value(&format!("DevInfo/{k}"), vary::expand(v, id.as_str()));
        }
        for (k, v) in &template.devdetail {
            tree.set_value(&format!("DevDetail/{k}"), vary::expand(v, id.as_str()));
        }
        // Pre-provisioned as bulk provisioning (or enrollment) leaves a device: the DMClient
        // provider with its Poll and Push nodes, and the management address (w7 ADDR).
        crate::csp::dmclient::create_provider(&mut tree, provider_id, &template.behaviour);
        let provider = crate::csp::dmclient::provider_key(provider_id);
        tree.set_value(&format!("{provider}/ManagementServiceAddress"), server_url);
        for app in &template.apps {
            let installed = crate::csp::enterprise_app::InstalledApp {
                product_id: app.product_id.clone(),
                version: app.version.clone(),
                title: app.title.clone(),
                publisher: app.publisher.clone(),
                install_date: app.install_date.unwrap_or(now),
            };
            crate::csp::enterprise_app::preinstall(&mut tree, &app.enterprise_id, &installed);
        }
        preset_nodes(&mut tree, &id, &template.nodes);
        tree.commit();
        Device {
            id,
            profile,
            server_url: server_url.to_string(),
            provider_id: provider_id.to_string(),
            settings,
            tree,
            sessions: 0,
            enrolled_at: now,
            users: UserState::enrolled_active(),
            enrollment: None,
            unenrolled: None,
            server_cache: None,
            last_success: None,
            pending_alerts: Vec::new(),
            session_lease: 0,
        }
    }

    /// True when the next session's SessionID is not covered by a durable lease yet: an engine
    /// that writes through the store's batching writer reserves ids first
    /// ([`crate::runner::store::Store::reserve_session_ids`], many devices at once).
    pub fn needs_lease(&self) -> bool {
        self.sessions >= self.session_lease
    }

    /// The environment the tree engine runs in at `now`.
    pub fn env(&self, now: DateTime<Utc>) -> Env {
        Env { now, profile: self.profile, settings: Arc::clone(&self.settings) }
    }

    /// The mode, session alert and LoginStatus a trigger gives now, outside any schedule (seed
    /// the Windows 8.1 MDM operation modes post; the Windows 8.1 MDM operation modes post), from who is logged on.
    pub fn plan(&self, trigger: Trigger) -> SessionPlan {
        let request = SessionRequest::one_shot(trigger, self.profile, &self.users, self.enrolled_at, false);
        SessionPlan::from_request(&request, self.profile)
    }

    /// Applies what a one-shot trigger means for who is logged on: a reboot logs everyone off,
    /// a logon trigger is the enrolled user's logon.
    pub fn apply_trigger(&mut self, trigger: Trigger) {
        match trigger {
            Trigger::Reboot => {
                self.users.apply(UserEvent::Reboot);
            }
            Trigger::Logon => {
                self.users.apply(UserEvent::Logon(crate::schedule::ENROLLED.into()));
            }
            _ => {}
        }
    }

    /// Keeps an alert a CSP raised outside a session for package 1 of the next one. At most
    /// [`MAX_PENDING_ALERTS`] are kept: past it the oldest is dropped (with a warning in the log)
    /// and returned.
    pub fn keep_alert(&mut self, code: u16, item: &Item, at: DateTime<Utc>) -> Option<PendingAlert> {
        self.pending_alerts.push(PendingAlert::new(code, item, at));
        let dropped = (self.pending_alerts.len() > MAX_PENDING_ALERTS).then(|| self.pending_alerts.remove(0));
        if let Some(d) = &dropped {
            tracing::warn!(
                device = %self.id,
                alert = %d,
                "more than {MAX_PENDING_ALERTS} alerts wait for the next session; the oldest is dropped"
            );
        }
        dropped
    }

    /// One round of the device's CSP timers at `now`: the effects of those that were due, or
    /// `None` when none was. Callers repeat it (bounded) until `None`, carrying out the effects
    /// in between, since a download's outcome can make another step due at once.
    pub fn due_timers(
        &mut self,
        registry: &crate::tree::Registry,
        now: DateTime<Utc>,
    ) -> Option<Vec<crate::tree::Effect>> {
        let env = self.env(now);
        let due = registry.next_deadline(&mut self.tree, &env).is_some_and(|d| d <= now);
        due.then(|| registry.on_deadline(&mut self.tree, &env))
    }

    /// The alerts waiting for the next session, oldest first, as package 1 carries them.
    pub fn queued_alerts(&self) -> Vec<Alert> {
        self.pending_alerts.iter().map(PendingAlert::alert).collect()
    }

    /// Forgets the first `n` waiting alerts: a session that carried them completed, so the
    /// server has them. (Alerts of a session that failed stay for the next one.)
    pub fn alerts_delivered(&mut self, n: usize) {
        self.pending_alerts.drain(..n.min(self.pending_alerts.len()));
    }

    /// Wipes the enrollment from the device (Microsoft's DMClient CSP page, unenrollment): the
    /// DMAcc account and the DMClient provider (with its poll schedule) leave the tree and the
    /// record is marked unenrolled, so that later sessions are refused. Returns the folder of
    /// the key and certificate files (relative to the state directory) for the caller to
    /// delete, if the device had one.
    pub fn wipe_enrollment(&mut self, by: UnenrolledBy, now: DateTime<Utc>) -> Option<std::path::PathBuf> {
        let removed = crate::enroll::remove_enrollment(&mut self.tree, &self.provider_id);
        self.tree.commit();
        let files = self.enrollment.take().and_then(|e| e.files);
        self.unenrolled = Some(Unenrolled { at: now, by, provider_id: self.provider_id.clone() });
        tracing::info!(device = %self.id, removed, ?by, "enrollment wiped");
        files
    }

    /// Starts counting a new session and returns its configuration (SessionID = the counter
    /// in decimal, MS-MDM §2.2, OMA DM RepPro).
    pub fn next_session(&mut self, trigger: Trigger) -> SessionConfig {
        let plan = self.plan(trigger);
        self.start_session(trigger, plan)
    }

    /// Starts counting a new session with a given plan (a scheduler's request) and returns its
    /// configuration.
    pub fn start_session(&mut self, trigger: Trigger, plan: SessionPlan) -> SessionConfig {
        self.sessions += 1;
        let mut cfg =
            SessionConfig::new(self.id.as_str(), &self.server_url, &self.sessions.to_string(), plan.mode, trigger);
        cfg.alert = plan.alert;
        cfg.login_status = plan.login_status;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn device(profile: Profile) -> Device {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap();
        Device::new(
            DeviceId::from_seed(1),
            profile,
            "https://mdm.example/MDM.svc",
            "Fleet",
            &Template::builtin(profile),
            now,
        )
    }

    #[test]
    fn creation_writes_the_id_and_template_values_into_the_tree() {
        let d = device(Profile::Win10);
        assert_eq!(d.tree.value("DevInfo/DevId"), Some(d.id.as_str()));
        assert_eq!(d.tree.value("DevInfo/Man"), Some("Dell Inc."));
        assert_eq!(d.tree.value("DevDetail/Ext/Microsoft/SMBIOSSerialNumber"), Some("7HX2Q93"));
        assert!(!d.tree.is_dirty());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Device>(&json).unwrap(), d);
    }

    #[test]
    fn records_written_before_enrollment_fields_existed_still_load() {
        let d = device(Profile::Win10);
        let mut json: serde_json::Value = serde_json::to_value(&d).unwrap();
        let obj = json.as_object_mut().unwrap();
        assert!(obj.remove("enrollment").is_some() && obj.remove("unenrolled").is_some());
        let back: Device = serde_json::from_value(json).unwrap();
        assert_eq!((back.enrollment, back.unenrolled), (None, None));
    }

    #[test]
    fn triggers_pick_modes_as_the_seed_says() {
        let mut d = device(Profile::Win10);
        assert_eq!(d.plan(Trigger::Reboot).mode, Mode::Machine);
        assert_eq!(d.plan(Trigger::Reboot).login_status, Some(LoginStatus::None));
        assert_eq!(d.plan(Trigger::Logon).mode, Mode::Maintenance);
        assert_eq!(d.plan(Trigger::Push).alert, SessionAlert::ServerInitiated);
        assert_eq!(d.plan(Trigger::Push).mode, Mode::Maintenance);
        assert_eq!(d.plan(Trigger::Nightly).mode, Mode::Maintenance);
        d.users = UserState::new();
        assert_eq!(d.plan(Trigger::Nightly).mode, Mode::Machine);
        d.apply_trigger(Trigger::Logon);
        assert_eq!(d.plan(Trigger::Nightly).mode, Mode::Maintenance);
        d.apply_trigger(Trigger::Reboot);
        assert_eq!(d.plan(Trigger::Manual).mode, Mode::Machine);
        let w81 = device(Profile::Win81);
        assert_eq!(w81.plan(Trigger::Push).mode, Mode::Apps);
        assert_eq!(w81.plan(Trigger::Push).alert, SessionAlert::ClientInitiated);
        assert_eq!(w81.plan(Trigger::Logon).login_status, None);
        let cfg = d.next_session(Trigger::Manual);
        assert_eq!((cfg.session_id.as_str(), d.sessions), ("1", 1));
        assert_eq!(d.next_session(Trigger::Manual).session_id, "2");
    }

    #[test]
    fn a_session_past_the_lease_needs_a_new_one() {
        let mut d = device(Profile::Win10);
        assert!(d.needs_lease(), "a new device has no lease");
        d.session_lease = 2;
        assert!(!d.needs_lease());
        d.next_session(Trigger::Manual);
        assert!(!d.needs_lease(), "SessionID 2 is still covered");
        d.next_session(Trigger::Manual);
        assert!(d.needs_lease(), "SessionID 3 is not");
        let back: Device = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back.session_lease, 0, "the lease is the store's, not the record's");
    }

    #[test]
    fn alerts_kept_between_sessions_are_bounded_and_stored_with_the_record() {
        let mut d = device(Profile::Win10);
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
        let item = |n: usize| Item {
            source: Some(format!("./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{{{n}}}/DownloadInstall")),
            meta: Some(Box::new(Meta {
                type_: Some("Reversed-Domain-Name:com.microsoft.mdm.win32csp_install".into()),
                format: Some("int".into()),
                mark: Some("informational".into()),
                ..Meta::default()
            })),
            data: Some("0".into()),
            ..Item::default()
        };
        assert_eq!(d.keep_alert(1224, &item(0), at), None);
        let alerts = d.queued_alerts();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].data, "1224");
        assert_eq!(alerts[0].items, [item(0)], "the item goes out as the CSP raised it");
        // The record keeps them across a restart of mdmsim.
        let back: Device = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back.queued_alerts(), alerts);
        assert_eq!(
            back.pending_alerts[0].to_string(),
            "1224 Reversed-Domain-Name:com.microsoft.mdm.win32csp_install \
             ./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{0}/DownloadInstall: 0"
        );
        // Past the bound the oldest goes, and the caller hears which one.
        for n in 1..MAX_PENDING_ALERTS {
            assert_eq!(d.keep_alert(1224, &item(n), at), None);
        }
        let dropped = d.keep_alert(1224, &item(MAX_PENDING_ALERTS), at).expect("the oldest is dropped");
        assert_eq!(dropped.source, item(0).source);
        assert_eq!(d.pending_alerts.len(), MAX_PENDING_ALERTS);
        assert_eq!(d.queued_alerts()[0].items[0].source, item(1).source);
        d.alerts_delivered(30);
        assert_eq!(d.pending_alerts.len(), 2);
        d.alerts_delivered(5);
        assert!(d.pending_alerts.is_empty());
        // Records written before the field existed still load.
        let mut json: serde_json::Value = serde_json::to_value(&d).unwrap();
        assert!(json.as_object_mut().unwrap().remove("pending_alerts").is_none(), "empty lists are not written");
        let back: Device = serde_json::from_value(json).unwrap();
        assert!(back.pending_alerts.is_empty());
    }

    #[test]
    fn template_apps_are_in_the_inventory_from_the_start() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap();
        let text = "[[apps]]\nenterprise_id = \"4000000001\"\nproduct_id = \"{B0322158-C3C2-44EB-8A31-D14A9FEC450E}\"\n\
                    version = \"1.0.0.0\"\ntitle = \"Sample1\"\npublisher = \"Contoso\"";
        let t = Template::builtin(Profile::Win10).overlay(&Template::parse(text, "t.toml").unwrap());
        let d = Device::new(DeviceId::from_seed(1), Profile::Win10, "https://mdm.example/MDM.svc", "Fleet", &t, now);
        let inv = "Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Inventory/{B0322158-C3C2-44EB-8A31-D14A9FEC450E}";
        assert_eq!(d.tree.value(&format!("{inv}/Title")), Some("Sample1"));
        assert_eq!(d.tree.value(&format!("{inv}/InstallDate")), Some("2026-03-01T08:00:00Z"));
        assert!(!d.tree.is_dirty());
    }

    #[test]
    fn varied_values_are_expanded_per_device_and_unsupported_nodes_answer_404() {
        use crate::syncml::{Command, Item, ItemCmd};
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap();
        let text = "unsupported = [\"./Vendor/MSFT/DeviceStatus/TPM\", \"./DevDetail/Ext/Microsoft/SMBIOSSerialNumber\"]\n\
                    [devdetail.Ext.Microsoft]\n\
                    DeviceName = \"PC-{alnum:6}\"\n[nodes]\n\
                    \"./Vendor/MSFT/DeviceStatus/TPM/SpecificationVersion\" = \"2.0\"\n\
                    \"./Vendor/MSFT/DeviceStatus/OS/Edition\" = [\"{int:1..9}\"]\n";
        let t = Template::builtin(Profile::Win10).overlay(&Template::parse(text, "t.toml").unwrap());
        let make =
            |seed| Device::new(DeviceId::from_seed(seed), Profile::Win10, "https://mdm.example/MDM.svc", "F", &t, now);
        let (mut a, b) = (make(1), make(2));
        let name = |d: &Device| d.tree.value("DevDetail/Ext/Microsoft/DeviceName").unwrap_or_default().to_string();
        assert!(name(&a).starts_with("PC-") && name(&a).len() == 9, "{}", name(&a));
        assert_ne!(name(&a), name(&b));
        assert_eq!(name(&a), name(&make(1)));
        // The same values as the plain function of (template, DeviceID) gives.
        let mine = t.for_device(&a.id);
        assert_eq!(mine.devdetail["Ext/Microsoft/DeviceName"], name(&a));
        assert_eq!(
            mine.nodes["./Vendor/MSFT/DeviceStatus/OS/Edition"],
            [a.tree.value("Vendor/MSFT/DeviceStatus/OS/Edition").unwrap()]
        );
        // The value is stored, but the node is unsupported: 404, as the real device answered.
        let registry = crate::csp::registry();
        let env = a.env(now);
        let get = |uri: &str| {
            Command::Get(ItemCmd { cmd_id: "1".into(), items: vec![Item::target(uri)], ..ItemCmd::default() })
        };
        let mut tree = crate::tree::Tree::new(&registry, &mut a.tree, &env);
        let out = tree.execute(&get("./Vendor/MSFT/DeviceStatus/TPM/SpecificationVersion"));
        assert_eq!(out[0].code.code(), 404);
        let out = tree.execute(&get("./Vendor/MSFT/DeviceStatus/OS/Edition"));
        assert_eq!(out[0].code.code(), 200);
        // A hand-written CSP's node too (a VM without a serial number).
        let out = tree.execute(&get("./DevDetail/Ext/Microsoft/SMBIOSSerialNumber"));
        assert_eq!(out[0].code.code(), 404);
        assert_eq!(tree.execute(&get("./DevDetail/Ext/Microsoft/TotalRAM"))[0].code.code(), 200);
    }
}
