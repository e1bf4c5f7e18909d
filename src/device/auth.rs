//! The application-layer credentials of an enrolled device in its sessions (MS-MDM
//! application-layer authentication; OMA DM Security, MD5 digest authentication): the `Cred`
//! of package 1 from the DMAcc account, the answer to a server's challenge, and the server's
//! NextNonce carried over to the next session. Sans-I/O: reads and writes the device's tree.

use std::sync::Arc;

use crate::enroll::{AppAuth, AuthReaction};
use crate::session::Authenticator;
use crate::syncml::{Chal, Cred, Status};
use crate::tree::TreeState;

/// Answers a SyncHdr challenge with the device's application-layer credentials (MD5 digest
/// over the challenge's NextNonce, OMA DM Security, MD5 digest authentication).
#[derive(Debug)]
struct ChallengeAnswer(AppAuth);

impl Authenticator for ChallengeAnswer {
    fn answer(&self, chal: &Chal) -> Option<Cred> {
        let mut auth = self.0.clone();
        let status = Status {
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            data: "407".into(),
            chal: Some(Box::new(chal.clone())),
            ..Status::default()
        };
        match auth.on_header_status(&status) {
            AuthReaction::Resend => auth.cred(),
            _ => None,
        }
    }
}

/// The credentials of a session: the `Cred` for package 1 (from the DMAcc account's stored
/// name, secret and nonce, after any rekey) and the answer to a challenge. Both `None` for a
/// device without a DMAcc account.
pub fn session_auth(tree: &TreeState) -> (Option<Cred>, Option<Arc<dyn Authenticator>>) {
    let Some(mut auth) = AppAuth::load(tree) else { return (None, None) };
    auth.begin_session();
    if auth.client.is_none() {
        return (None, None);
    }
    (auth.cred(), Some(Arc::new(ChallengeAnswer(auth))))
}

/// Stores the NextNonce of the session's last challenge as the nonce of the next session's
/// credentials (`AppAuth/CLCRED/AAuthData`), keeping the name and secret the tree holds now (a
/// rekey of this session included). Does nothing without a challenge or a DMAcc account.
pub fn keep_next_nonce(tree: &mut TreeState, chal: Option<&Chal>) {
    let Some(chal) = chal.filter(|c| c.meta.next_nonce.is_some()) else { return };
    let Some(mut auth) = AppAuth::load(tree) else { return };
    let status = Status {
        cmd_ref: "0".into(),
        cmd: "SyncHdr".into(),
        data: "200".into(),
        chal: Some(Box::new(chal.clone())),
        ..Status::default()
    };
    auth.on_header_status(&status);
    auth.store(tree);
    tree.commit();
}
