//! Operation modes, triggers and the user-session state of one device, and the rules that map a
//! trigger to the mode of the session it starts (Windows 8.1 MDM operation modes post,
//! the Windows 8.1 MDM operation modes post).
//!
//! Owns: who is logged on (the enrolled user active / locked / logged off, other users, nobody),
//! how reboot/logon/logoff/lock/unlock change it, and the pure function [`decide`] that says
//! whether a trigger starts a session and in which mode. Does not own timers (see
//! [`super::Scheduler`]) nor what a session sends (the session module reads [`Mode`] and
//! [`LoginStatus`] from the request).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::tree::Profile;

/// The user name that means "the user on whose behalf the device was enrolled" in event files
/// and in [`UserEvent::Logon`].
pub const ENROLLED: &str = "enrolled";

/// The operation context of a session, sent as `?mode=` in the query string (the Windows 8.1 MDM operation modes post: "OMA DM
/// Mode"; the Windows 8.1 MDM operation modes post).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// The enrolled user has a session (active or locked): user commands may be impersonated.
    Maintenance,
    /// Started by a push (`MDMAppInstallationTask`, MDMAgent `-App`); `win81` only.
    Apps,
    /// No enrolled-user session: only inventory, password reset and unenrollment are allowed.
    Machine,
}

impl Mode {
    /// The query-string value (`Machine`, `Maintenance`, `Apps`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Maintenance => "Maintenance",
            Mode::Apps => "Apps",
            Mode::Machine => "Machine",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "maintenance" => Ok(Mode::Maintenance),
            "apps" => Ok(Mode::Apps),
            "machine" => Ok(Mode::Machine),
            _ => Err(format!("expected Machine, Maintenance or Apps, found {s:?}")),
        }
    }
}

/// What starts a session. The names are the ones of `mdmsim sync --trigger` and of the printed
/// timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The session run right after enrollment (the enrolling user is logged on).
    Enrollment,
    /// Machine reboot: MDMAgent runs before the enrolled user logged on (the Windows 8.1 MDM operation modes post, case 1).
    Reboot,
    /// A user logged on (the Windows 8.1 MDM operation modes post, case 2; other users per PollOnLogin / AllUsersPollOnFirstLogin).
    Logon,
    /// The nightly maintenance task (the Windows 8.1 MDM operation modes post, case 3; default 02:00 device-local time).
    Nightly,
    /// A WNS push notification arrived.
    Push,
    /// The DMClient poll timetable (first, second and remaining sets).
    Poll,
    /// A manual sync, as a user would start it from Settings (or MDMAgent from a prompt).
    Manual,
}

impl Trigger {
    /// The name used on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Enrollment => "enrollment",
            Trigger::Reboot => "reboot",
            Trigger::Logon => "logon",
            Trigger::Nightly => "nightly",
            Trigger::Push => "push",
            Trigger::Poll => "poll",
            Trigger::Manual => "manual",
        }
    }
}

impl crate::names::Named for Trigger {
    const ALL: &'static [Trigger] = &[
        Trigger::Enrollment,
        Trigger::Reboot,
        Trigger::Logon,
        Trigger::Nightly,
        Trigger::Push,
        Trigger::Poll,
        Trigger::Manual,
    ];

    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of the 1224 `com.microsoft/MDM/LoginStatus` alert in package 1 on `win10`
/// (MS-MDM §3.1.5.1, package 1): `user` when the enrolled user has a session (active or locked), `others`
/// when only other users have one, `none` when nobody is logged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginStatus {
    #[default]
    User,
    Others,
    None,
}

impl LoginStatus {
    /// The alert's Data text.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginStatus::User => "user",
            LoginStatus::Others => "others",
            LoginStatus::None => "none",
        }
    }
}

impl fmt::Display for LoginStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one user's logon session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// At the console and unlocked.
    Active,
    /// Locked, or switched away from (fast user switching keeps the session, locked).
    Locked,
}

/// The summary of who is logged on, in the five cases the issue names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// The enrolled user is logged on and at the console, unlocked.
    EnrolledActive,
    /// The enrolled user is logged on but locked (or another user is at the console).
    EnrolledLocked,
    /// The enrolled user logged on since boot and logged off; nobody else is logged on.
    EnrolledLoggedOff,
    /// The enrolled user has no session; another user does.
    OtherUser,
    /// Nobody logged on since the last reboot.
    Nobody,
}

/// Something that changes who is logged on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    /// Everyone is logged off.
    Reboot,
    /// `user` logs on ([`ENROLLED`] for the enrolled user). Logging on a user who already has a
    /// session is a switch back to it, not a logon (the DMClient seed: "login is not the same as
    /// device unlock").
    Logon(String),
    /// `user` logs off; `None` logs off the user at the console.
    Logoff(Option<String>),
    /// The console session is locked.
    Lock,
    /// The console session (or `user`'s session, which comes to the console) is unlocked.
    Unlock(Option<String>),
}

/// What a [`UserEvent`] did, for the trigger rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    /// Nothing changed (e.g. lock with nobody at the console).
    None,
    /// A new logon session of `user`; `first` when the user never logged on this device before.
    Logon { user: String, enrolled: bool, first: bool },
    /// Any other change (logoff, lock, unlock, reboot, switch).
    Other,
}

/// Who is logged on to one device, and who ever logged on (for AllUsersPollOnFirstLogin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// Logon sessions by user name ([`ENROLLED`] for the enrolled user).
    sessions: Sessions,
    /// The user at the console, if any.
    console: Option<CompactString>,
    /// Users who logged on at least once since enrollment.
    seen: Seen,
    /// The enrolled user logged on since the last reboot.
    enrolled_since_boot: bool,
}

/// Logon sessions by user name, in name order, written as a map. A device has one user most of
/// the time (the enrolled one), held in place: a fleet holds two of these per device (the
/// device's and its scheduler's), and B-tree maps cost over a kilobyte for the pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Sessions(SmallVec<[(CompactString, SessionState); 1]>);

impl Sessions {
    fn find(&self, user: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(u, _)| u.as_str().cmp(user))
    }

    fn get(&self, user: &str) -> Option<&SessionState> {
        self.find(user).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, user: &str) -> Option<&mut SessionState> {
        self.find(user).ok().map(|i| &mut self.0[i].1)
    }

    fn contains_key(&self, user: &str) -> bool {
        self.find(user).is_ok()
    }

    /// The user's previous state, if it had a session.
    fn insert(&mut self, user: &str, state: SessionState) -> Option<SessionState> {
        match self.find(user) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, state)),
            Err(i) => {
                self.0.insert(i, (user.into(), state));
                None
            }
        }
    }

    fn remove(&mut self, user: &str) -> Option<SessionState> {
        self.find(user).ok().map(|i| self.0.remove(i).1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn clear(&mut self) {
        self.0 = SmallVec::new();
    }
}

impl Serialize for Sessions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(u, st)| (u, st)))
    }
}

impl<'de> Deserialize<'de> for Sessions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<CompactString, SessionState>::deserialize(d)?;
        Ok(Sessions(map.into_iter().collect()))
    }
}

/// User names in order, each once, written as a list; one held in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen(SmallVec<[CompactString; 1]>);

impl Seen {
    /// True when `user` is new.
    fn insert(&mut self, user: &str) -> bool {
        match self.0.binary_search_by(|u| u.as_str().cmp(user)) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, user.into());
                true
            }
        }
    }

    fn contains(&self, user: &str) -> bool {
        self.0.binary_search_by(|u| u.as_str().cmp(user)).is_ok()
    }
}

impl Serialize for Seen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for Seen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let set = BTreeSet::<CompactString>::deserialize(d)?;
        Ok(Seen(set.into_iter().collect()))
    }
}

impl UserState {
    /// A device just booted: nobody logged on.
    pub fn new() -> Self {
        Self::default()
    }

    /// A device where the enrolled user is logged on and active (the state right after a user
    /// enrolled from their session).
    pub fn enrolled_active() -> Self {
        let mut s = Self::new();
        s.apply(UserEvent::Logon(ENROLLED.into()));
        s
    }

    /// Applies an event and says what changed. User names are compared case-insensitively, as
    /// Windows account names are (they are stored lower-cased).
    pub fn apply(&mut self, event: UserEvent) -> UserChange {
        let norm = |u: String| u.trim().to_lowercase();
        let event = match event {
            UserEvent::Logon(u) => UserEvent::Logon(norm(u)),
            UserEvent::Logoff(u) => UserEvent::Logoff(u.map(norm)),
            UserEvent::Unlock(u) => UserEvent::Unlock(u.map(norm)),
            e => e,
        };
        match event {
            UserEvent::Reboot => {
                self.sessions.clear();
                self.console = None;
                self.enrolled_since_boot = false;
                UserChange::Other
            }
            UserEvent::Logon(user) => {
                self.lock_console();
                self.console = Some(user.as_str().into());
                let enrolled = user == ENROLLED;
                if enrolled {
                    self.enrolled_since_boot = true;
                }
                if self.sessions.insert(&user, SessionState::Active).is_some() {
                    // Switching back to an existing session is an unlock, not a logon.
                    return UserChange::Other;
                }
                let first = self.seen.insert(&user);
                UserChange::Logon { user, enrolled, first }
            }
            UserEvent::Logoff(user) => {
                let Some(user) = user.or_else(|| self.console.as_ref().map(|c| c.to_string())) else {
                    return UserChange::None;
                };
                if self.sessions.remove(&user).is_none() {
                    return UserChange::None;
                }
                if self.console.as_deref() == Some(user.as_str()) {
                    self.console = None;
                }
                UserChange::Other
            }
            UserEvent::Lock => {
                if self.lock_console() {
                    UserChange::Other
                } else {
                    UserChange::None
                }
            }
            UserEvent::Unlock(user) => {
                let Some(user) = user.or_else(|| self.console.as_ref().map(|c| c.to_string())) else {
                    return UserChange::None;
                };
                if !self.sessions.contains_key(&user) {
                    return UserChange::None;
                }
                if self.console.as_deref() != Some(user.as_str()) {
                    self.lock_console();
                    self.console = Some(user.as_str().into());
                }
                self.sessions.insert(&user, SessionState::Active);
                UserChange::Other
            }
        }
    }

    fn lock_console(&mut self) -> bool {
        match self.console.as_ref().and_then(|u| self.sessions.get_mut(u)) {
            Some(s) if *s == SessionState::Active => {
                *s = SessionState::Locked;
                true
            }
            _ => false,
        }
    }

    /// The five-way summary of who is logged on.
    pub fn presence(&self) -> Presence {
        match self.sessions.get(ENROLLED) {
            Some(SessionState::Active) if self.console.as_deref() == Some(ENROLLED) => Presence::EnrolledActive,
            Some(_) => Presence::EnrolledLocked,
            None if !self.sessions.is_empty() => Presence::OtherUser,
            None if self.enrolled_since_boot => Presence::EnrolledLoggedOff,
            None => Presence::Nobody,
        }
    }

    /// True when the enrolled user has a logon session, active or locked (the operation modes post's "active
    /// logged on session": "actively using the system" or "has locked the system, but NOT
    /// logged off").
    pub fn enrolled_logged_on(&self) -> bool {
        self.sessions.contains_key(ENROLLED)
    }

    /// The LoginStatus a `win10` device reports in package 1.
    pub fn login_status(&self) -> LoginStatus {
        if self.enrolled_logged_on() {
            LoginStatus::User
        } else if !self.sessions.is_empty() {
            LoginStatus::Others
        } else {
            LoginStatus::None
        }
    }

    /// The mode a session takes when nothing but the user state decides (nightly maintenance,
    /// poll, win10 push, manual sync): Maintenance when the enrolled user has an active or
    /// locked session, else Machine (the Windows 8.1 MDM operation modes post, case 3).
    pub fn mode(&self) -> Mode {
        if self.enrolled_logged_on() { Mode::Maintenance } else { Mode::Machine }
    }

    /// The user at the console.
    pub fn console(&self) -> Option<&str> {
        self.console.as_deref()
    }

    /// True when `user` logged on at least once since enrollment.
    pub fn has_logged_on(&self, user: &str) -> bool {
        self.seen.contains(user)
    }
}

/// The DMClient poll-on-login settings (`Provider/<ID>/Poll/PollOnLogin`,
/// `Poll/AllUsersPollOnFirstLogin`; both default false).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginPolling {
    /// A session on any user's logon.
    pub poll_on_login: bool,
    /// A session on the first logon of each user.
    pub all_users_poll_on_first_login: bool,
}

/// The mode of the session a trigger starts, and whether it is server-initiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub mode: Mode,
    /// Package 1 carries Alert 1200 instead of 1201 (win10 push).
    pub server_initiated: bool,
    pub login_status: LoginStatus,
}

/// Whether `trigger` starts a session, given the profile and the user state *after* the event
/// that fired it, and in which mode (the operation modes post's rules):
///
/// - reboot → Machine (the enrolled user has not logged on yet);
/// - logon of the enrolled user → Maintenance; logon of another user → a session only with
///   PollOnLogin, or with AllUsersPollOnFirstLogin on that user's first logon, in the mode the
///   user state gives;
/// - nightly, poll, manual sync, enrollment → Maintenance if the enrolled user has an active or
///   locked session, else Machine;
/// - push → Apps on `win81`; on `win10` a server-initiated session (Alert 1200) in the mode the
///   user state gives.
///
/// `logon` is the [`UserChange`] of the logon event (ignored for other triggers); `None` is
/// returned when no session starts.
pub fn decide(
    trigger: Trigger,
    profile: Profile,
    users: &UserState,
    logon: Option<&UserChange>,
    polling: LoginPolling,
) -> Option<Decision> {
    let login_status = users.login_status();
    let by_state = Decision { mode: users.mode(), server_initiated: false, login_status };
    match trigger {
        Trigger::Reboot => Some(Decision { mode: Mode::Machine, server_initiated: false, login_status }),
        Trigger::Logon => match logon? {
            UserChange::Logon { enrolled: true, .. } => Some(Decision { mode: Mode::Maintenance, ..by_state }),
            UserChange::Logon { first, .. } => {
                (polling.poll_on_login || (polling.all_users_poll_on_first_login && *first)).then_some(by_state)
            }
            UserChange::None | UserChange::Other => None,
        },
        Trigger::Push => match profile {
            Profile::Win81 => Some(Decision { mode: Mode::Apps, ..by_state }),
            Profile::Win10 => Some(Decision { server_initiated: true, ..by_state }),
        },
        Trigger::Nightly | Trigger::Poll | Trigger::Manual | Trigger::Enrollment => Some(by_state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logon(s: &mut UserState, user: &str) -> UserChange {
        s.apply(UserEvent::Logon(user.into()))
    }

    #[test]
    fn user_state_is_stored_as_maps_and_lists_of_names() {
        let mut s = UserState::enrolled_active();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"sessions":{"enrolled":"active"},"console":"enrolled","seen":["enrolled"],"enrolled_since_boot":true}"#
        );
        logon(&mut s, "Zoe");
        logon(&mut s, "adam");
        let back: UserState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(back.has_logged_on("zoe") && back.has_logged_on("adam"));
        assert_eq!(back.console(), Some("adam"));
    }

    #[test]
    fn presence_follows_the_five_cases() {
        let mut s = UserState::new();
        assert_eq!(s.presence(), Presence::Nobody);
        logon(&mut s, ENROLLED);
        assert_eq!(s.presence(), Presence::EnrolledActive);
        s.apply(UserEvent::Lock);
        assert_eq!(s.presence(), Presence::EnrolledLocked);
        s.apply(UserEvent::Unlock(None));
        assert_eq!(s.presence(), Presence::EnrolledActive);
        s.apply(UserEvent::Logoff(None));
        assert_eq!(s.presence(), Presence::EnrolledLoggedOff);
        logon(&mut s, "bob");
        assert_eq!(s.presence(), Presence::OtherUser);
        s.apply(UserEvent::Reboot);
        assert_eq!(s.presence(), Presence::Nobody);
    }

    #[test]
    fn fast_user_switching_keeps_the_enrolled_session_locked() {
        let mut s = UserState::enrolled_active();
        logon(&mut s, "bob");
        assert_eq!(s.presence(), Presence::EnrolledLocked);
        assert_eq!(s.login_status(), LoginStatus::User);
        assert_eq!(s.mode(), Mode::Maintenance);
        // Switching back is not a logon.
        assert_eq!(logon(&mut s, ENROLLED), UserChange::Other);
        assert_eq!(s.presence(), Presence::EnrolledActive);
    }

    #[test]
    fn user_names_are_case_insensitive() {
        let mut s = UserState::new();
        assert!(matches!(logon(&mut s, "Enrolled"), UserChange::Logon { enrolled: true, .. }));
        assert!(matches!(logon(&mut s, "Bob"), UserChange::Logon { first: true, .. }));
        s.apply(UserEvent::Logoff(Some("BOB".into())));
        assert!(matches!(logon(&mut s, "bob"), UserChange::Logon { first: false, .. }));
    }

    #[test]
    fn first_logon_is_tracked_across_reboots() {
        let mut s = UserState::new();
        assert!(matches!(logon(&mut s, "bob"), UserChange::Logon { first: true, .. }));
        s.apply(UserEvent::Reboot);
        assert!(matches!(logon(&mut s, "bob"), UserChange::Logon { first: false, .. }));
        assert!(s.has_logged_on("bob"));
    }

    #[test]
    fn other_user_logon_needs_poll_on_login() {
        let mut s = UserState::new();
        let ch = logon(&mut s, "bob");
        let none = LoginPolling::default();
        assert_eq!(decide(Trigger::Logon, Profile::Win10, &s, Some(&ch), none), None);
        let any = LoginPolling { poll_on_login: true, ..none };
        let d = decide(Trigger::Logon, Profile::Win10, &s, Some(&ch), any).unwrap();
        assert_eq!((d.mode, d.login_status), (Mode::Machine, LoginStatus::Others));
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [Mode::Machine, Mode::Maintenance, Mode::Apps] {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
        }
        assert!("Nightly".parse::<Mode>().is_err());
    }
}
