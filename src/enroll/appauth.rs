//! Application-layer authentication (OMA DM Security, MD5 digest authentication): the MD5 digest, the credentials the
//! w7 APPAUTH blocks / DMAcc `AppAuth` nodes hold, and the [`AppAuth`] state a session consults
//! to put `Cred` on its messages and to react to a 401/407 with `Chal`. Also the user-initiated
//! unenrollment alert and the transcript redaction of secrets.
//!
//! Independent of the session engine: the session calls [`AppAuth::cred`] for every message,
//! [`AppAuth::on_header_status`] with the server's SyncHdr Status, and [`AppAuth::store`] at
//! the end so the next nonce survives for the next session.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};

use super::Secret;
use crate::syncml::{Alert, Command, Cred, Item, Meta, Status, StatusCode, SyncMl};
use crate::tree::TreeState;

/// `syncml:auth-md5`.
const AUTH_MD5: &str = "syncml:auth-md5";
/// `syncml:auth-basic`.
const AUTH_BASIC: &str = "syncml:auth-basic";
/// Where DMAcc accounts live in a device's stored values.
const DMACC: &str = "SyncML/DMAcc";

/// The digest of OMA DM Security, MD5 digest authentication: `b64(MD5(b64(MD5(name ":" secret)) ":" nonce))`.
pub fn digest_md5(name: &str, secret: &str, nonce: &[u8]) -> String {
    let inner = B64.encode(Md5::digest(format!("{name}:{secret}").as_bytes()));
    let mut outer = Md5::new();
    outer.update(inner.as_bytes());
    outer.update(b":");
    outer.update(nonce);
    B64.encode(outer.finalize())
}

/// The authentication type of a credential (`AAUTHTYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthType {
    Basic,
    /// MD5 digest: `syncml:auth-md5`.
    #[default]
    Digest,
}

impl AuthType {
    /// Parses `BASIC`/`DIGEST` or the SyncML names.
    pub fn parse(s: &str) -> Option<AuthType> {
        match s.trim().to_ascii_lowercase().as_str() {
            "basic" | AUTH_BASIC => Some(AuthType::Basic),
            "digest" | AUTH_MD5 => Some(AuthType::Digest),
            _ => None,
        }
    }

    /// The DMAcc / w7 name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Basic => "BASIC",
            AuthType::Digest => "DIGEST",
        }
    }
}

/// One credential set: DMAcc `AppAuth/CLCRED` (the client's) or `SRVCRED` (the server's).
/// `Debug` never shows the secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub auth_type: AuthType,
    pub name: String,
    pub secret: Secret,
    /// The nonce for the next digest (`AAuthData`), raw bytes.
    pub nonce: Vec<u8>,
}

/// What the session does after the server's SyncHdr Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReaction {
    /// The header was accepted; go on (Cred stays on later messages unless the code was 212).
    Accepted,
    /// The server challenged with a new nonce: resend package 1 with the new `Cred`.
    Resend,
    /// Authentication failed for good: stop the session.
    Rejected { code: StatusCode, reason: String },
    /// A header status that is not about authentication (e.g. 500); the session decides.
    Unrelated(StatusCode),
}

/// The application-layer authentication state of one device's account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppAuth {
    /// The DMAcc AccountUID the credentials belong to.
    pub account: String,
    /// CLCRED: what the client sends.
    pub client: Option<Credentials>,
    /// SRVCRED: what the server should prove (kept for completeness; Windows servers do not
    /// send Cred to the client in practice).
    pub server: Option<Credentials>,
    /// 212 received: authenticated for the rest of this session.
    session_authenticated: bool,
    /// Package 1 was already resent after a challenge in this session.
    resent: bool,
}

impl AppAuth {
    /// The credentials a provisioning document gave.
    pub fn from_provisioning(p: &super::Provisioning) -> AppAuth {
        AppAuth {
            account: p.account_uid(),
            client: p.app.client_cred.clone(),
            server: p.app.server_cred.clone(),
            ..AppAuth::default()
        }
    }

    /// The credentials stored in the DMAcc nodes of a device (after provisioning, rekeys and
    /// stored nonces). `None` when the device has no DMAcc account.
    pub fn load(state: &TreeState) -> Option<AppAuth> {
        let account = state.child_names(DMACC).into_iter().next()?;
        let base = format!("{DMACC}/{account}/AppAuth");
        let mut out = AppAuth { account: account.clone(), ..AppAuth::default() };
        for obj in state.child_names(&base) {
            let at = |leaf: &str| state.value(&format!("{base}/{obj}/{leaf}")).map(str::to_string);
            let level = at("AAuthLevel").unwrap_or_else(|| obj.clone()).to_ascii_uppercase();
            let cred = Credentials {
                auth_type: at("AAuthType").and_then(|t| AuthType::parse(&t)).unwrap_or_default(),
                name: at("AAuthName").unwrap_or_default(),
                secret: Secret::new(at("AAuthSecret").unwrap_or_default()),
                nonce: at("AAuthData").and_then(|d| B64.decode(d.trim().as_bytes()).ok()).unwrap_or_default(),
            };
            match level.as_str() {
                "CLCRED" => out.client = Some(cred),
                "SRVCRED" => out.server = Some(cred),
                _ => {}
            }
        }
        Some(out)
    }

    /// Writes the client's next nonce back to `AppAuth/CLCRED/AAuthData` (the next-nonce rule:
    /// a challenge in one session supplies the nonce of the next).
    pub fn store(&self, state: &mut TreeState) {
        if let Some(c) = &self.client
            && !self.account.is_empty()
        {
            state.set_value(&format!("{DMACC}/{}/AppAuth/CLCRED/AAuthData", self.account), B64.encode(&c.nonce));
        }
    }

    /// Resets the per-session flags; call when a session starts.
    pub fn begin_session(&mut self) {
        self.session_authenticated = false;
        self.resent = false;
    }

    /// The `Cred` for the next message: none without client credentials, after a 212, or for
    /// a digest without a nonce yet (the server will challenge and supply one).
    pub fn cred(&self) -> Option<Cred> {
        let c = self.client.as_ref()?;
        if self.session_authenticated || c.name.is_empty() {
            return None;
        }
        match c.auth_type {
            AuthType::Digest if c.nonce.is_empty() => None,
            AuthType::Digest => Some(Cred {
                meta: Meta::typed(AUTH_MD5, Some("b64")),
                data: digest_md5(&c.name, c.secret.expose(), &c.nonce),
            }),
            AuthType::Basic => Some(Cred {
                meta: Meta::typed(AUTH_BASIC, Some("b64")),
                data: B64.encode(format!("{}:{}", c.name, c.secret.expose())),
            }),
        }
    }

    /// Reacts to the Status the server gave our SyncHdr. Any `Chal` with a NextNonce updates
    /// the nonce, whatever the code.
    pub fn on_header_status(&mut self, status: &Status) -> AuthReaction {
        let code = StatusCode::parse(&status.data).unwrap_or(StatusCode::Other(0));
        let mut nonce_error = None;
        if let Some(chal) = &status.chal {
            let ty = chal.meta.type_.as_deref().and_then(AuthType::parse);
            if let Some(c) = self.client.as_mut() {
                if let Some(ty) = ty {
                    c.auth_type = ty;
                }
                if let Some(n) = &chal.meta.next_nonce {
                    match B64.decode(n.trim().as_bytes()) {
                        Ok(bytes) => c.nonce = bytes,
                        Err(e) => nonce_error = Some(format!("NextNonce {n:?} is not base64: {e}")),
                    }
                }
            }
        }
        match code {
            StatusCode::AuthenticationAccepted => {
                self.session_authenticated = true;
                AuthReaction::Accepted
            }
            c if c.is_success() => AuthReaction::Accepted,
            StatusCode::InvalidCredentials | StatusCode::MissingCredentials => {
                let reason = if let Some(e) = nonce_error {
                    e
                } else if status.chal.is_none() {
                    "no Chal: the server gave no way to authenticate".to_string()
                } else if self.client.as_ref().is_none_or(|c| c.name.is_empty()) {
                    "the server asks for credentials but none were provisioned (APPAUTH APPSRV)".to_string()
                } else if self.resent {
                    "the server refused the credentials after a fresh challenge".to_string()
                } else {
                    self.resent = true;
                    return AuthReaction::Resend;
                };
                AuthReaction::Rejected { code, reason }
            }
            other => AuthReaction::Unrelated(other),
        }
    }
}

/// The package-1 alert of a user-initiated unenrollment (MS-MDM §3.1.5.1, package 1): Alert 1226 with
/// Type `com.microsoft:mdm.unenrollment.userrequest`, Format `int`, Data `1`.
pub fn unenroll_alert(cmd_id: &str) -> Alert {
    Alert {
        cmd_id: cmd_id.to_string(),
        data: "1226".into(),
        items: vec![Item {
            meta: Some(Box::new(Meta::typed("com.microsoft:mdm.unenrollment.userrequest", Some("int")))),
            data: Some("1".into()),
            ..Item::default()
        }],
        ..Alert::default()
    }
}

/// Replaces the Data of every item that writes an `AAuthSecret` with `<redacted>`, so a
/// server's rekey never reaches a transcript or log. Returns how many items were redacted.
pub fn redact_secrets(msg: &mut SyncMl) -> usize {
    fn walk(cmds: &mut [Command]) -> usize {
        let mut n = 0;
        for c in cmds {
            match c {
                Command::Add(i) | Command::Replace(i) => {
                    for item in &mut i.items {
                        let secret = item.target.as_deref().is_some_and(|t| {
                            let t = t.trim_end_matches('/');
                            t.rsplit('/').next().is_some_and(|leaf| leaf.eq_ignore_ascii_case("AAuthSecret"))
                        });
                        if secret && item.data.is_some() {
                            item.data = Some("<redacted>".into());
                            n += 1;
                        }
                    }
                }
                Command::Atomic(c) | Command::Sequence(c) => n += walk(&mut c.commands),
                _ => {}
            }
        }
        n
    }
    walk(&mut msg.body.commands)
}

#[cfg(test)]
mod tests {
    use openssl::hash::{MessageDigest, hash};

    use super::*;
    use crate::syncml::{Chal, ItemCmd, encode};

    fn creds(nonce: &[u8]) -> AppAuth {
        AppAuth {
            account: "ACC".into(),
            client: Some(Credentials {
                auth_type: AuthType::Digest,
                name: "0123456789ABCDEF0123456789ABCDEF".into(),
                secret: Secret::new("client-secret-1"),
                nonce: nonce.to_vec(),
            }),
            ..AppAuth::default()
        }
    }

    fn status(code: &str, nonce: Option<&str>) -> Status {
        Status {
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            data: code.into(),
            chal: nonce.map(|n| {
                Box::new(Chal {
                    meta: Meta { next_nonce: Some(n.into()), ..Meta::typed("syncml:auth-md5", Some("b64")) },
                })
            }),
            ..Status::default()
        }
    }

    #[test]
    fn digest_matches_an_independent_computation() {
        // Computed with Python's hashlib for this test, and again here with openssl's MD5.
        assert_eq!(
            digest_md5("0123456789ABCDEF0123456789ABCDEF", "client-secret-1", b"client-nonce"),
            "8F+L46zzxeNEPBHZ0pg44A=="
        );
        let inner = B64.encode(hash(MessageDigest::md5(), b"n:s").unwrap());
        let outer = B64.encode(hash(MessageDigest::md5(), &[inner.as_bytes(), b":", &[0, 255, 7]].concat()).unwrap());
        assert_eq!(digest_md5("n", "s", &[0, 255, 7]), outer);
    }

    #[test]
    fn challenge_gives_a_new_nonce_and_one_resend() {
        let mut a = creds(b"");
        a.begin_session();
        assert_eq!(a.cred(), None, "no nonce yet: no digest");
        assert_eq!(a.on_header_status(&status("407", Some(&B64.encode(b"n1")))), AuthReaction::Resend);
        let cred = a.cred().unwrap();
        assert_eq!(cred.meta.type_.as_deref(), Some("syncml:auth-md5"));
        assert_eq!(cred.data, digest_md5("0123456789ABCDEF0123456789ABCDEF", "client-secret-1", b"n1"));
        // A second refusal in the same session is final.
        let r = a.on_header_status(&status("401", Some(&B64.encode(b"n2"))));
        assert!(matches!(r, AuthReaction::Rejected { code: StatusCode::InvalidCredentials, .. }), "{r:?}");
        // 200 keeps Cred on every message (Fleet); 212 drops it for the session.
        a.begin_session();
        assert_eq!(a.on_header_status(&status("200", None)), AuthReaction::Accepted);
        assert!(a.cred().is_some());
        assert_eq!(a.on_header_status(&status("212", None)), AuthReaction::Accepted);
        assert!(a.cred().is_none());
        assert_eq!(a.on_header_status(&status("500", None)), AuthReaction::Unrelated(StatusCode::CommandFailed));
        let r = a.on_header_status(&status("407", None));
        assert!(matches!(r, AuthReaction::Rejected { .. }), "{r:?}");
    }

    #[test]
    fn next_nonce_survives_in_the_tree_and_rekeys_are_loaded() {
        let mut state = TreeState::new();
        let base = "SyncML/DMAcc/ACC/AppAuth/CLCRED";
        state.set_value(&format!("{base}/AAuthLevel"), "CLCRED");
        state.set_value(&format!("{base}/AAuthType"), "DIGEST");
        state.set_value(&format!("{base}/AAuthName"), "old");
        state.set_value(&format!("{base}/AAuthSecret"), "old-secret");
        let mut a = AppAuth::load(&state).unwrap();
        a.begin_session();
        assert_eq!(a.on_header_status(&status("200", Some(&B64.encode(b"next")))), AuthReaction::Accepted);
        a.store(&mut state);
        // The server rekeys (what the DMAcc CSP stores after a Replace).
        state.set_value(&format!("{base}/AAuthName"), "new");
        state.set_value(&format!("{base}/AAuthSecret"), "new-secret");
        let b = AppAuth::load(&state).unwrap();
        assert_eq!(b.cred().unwrap().data, digest_md5("new", "new-secret", b"next"));
    }

    #[test]
    fn unenroll_alert_and_redaction() {
        let mut msg = SyncMl::default();
        msg.body.commands.push(Command::Alert(unenroll_alert("2")));
        msg.body.commands.push(Command::Replace(ItemCmd {
            cmd_id: "3".into(),
            items: vec![Item {
                target: Some("./SyncML/DMAcc/X/AppAuth/CLCRED/AAuthSecret".into()),
                data: Some("s3cret".into()),
                ..Item::default()
            }],
            ..ItemCmd::default()
        }));
        assert_eq!(redact_secrets(&mut msg), 1);
        let text = encode(&msg);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<Data>1226</Data>"), "{text}");
        assert!(text.contains("com.microsoft:mdm.unenrollment.userrequest"), "{text}");
        assert!(text.contains(r#"<Format xmlns="syncml:metinf">int</Format>"#), "{text}");
    }
}
