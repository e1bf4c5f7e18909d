//! Keeps secrets out of transcripts and logs: a copy of a message with credential data and the
//! values of secret nodes replaced by `***` (a password, private key or AAuthSecret
//! never appears in logs or transcripts).
//!
//! Owns the list of what counts as secret. It does not write anything anywhere.

use crate::syncml::{Command, Item, SyncMl};

/// What replaces a secret.
pub const REDACTED: &str = "***";

/// Last LocURI segments whose values are secrets (DMAcc app auth, certificate passwords and
/// keys, enrollment secrets), compared case-insensitively.
const SECRET_LEAVES: [&str; 8] =
    ["AAuthSecret", "AAuthData", "Password", "PFXCertPassword", "PrivateKey", "KeyData", "ClientSecret", "Secret"];

/// True when a LocURI names a secret node.
pub fn is_secret_uri(uri: &str) -> bool {
    let path = uri.split('?').next().unwrap_or(uri);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or(path);
    SECRET_LEAVES.iter().any(|s| last.eq_ignore_ascii_case(s))
}

/// A copy of `msg` safe to write to a transcript or a log.
pub fn redact(msg: &SyncMl) -> SyncMl {
    let mut m = msg.clone();
    if let Some(c) = &mut m.hdr.cred {
        c.data = REDACTED.into();
    }
    for cmd in &mut m.body.commands {
        redact_cmd(cmd);
    }
    m
}

fn redact_cmd(cmd: &mut Command) {
    match cmd {
        Command::Alert(a) => a.items.iter_mut().for_each(redact_item),
        Command::Add(c) | Command::Replace(c) | Command::Delete(c) | Command::Get(c) | Command::Exec(c) => {
            c.items.iter_mut().for_each(redact_item)
        }
        Command::Atomic(c) | Command::Sequence(c) => c.commands.iter_mut().for_each(redact_cmd),
        Command::Status(s) => {
            if let Some(c) = &mut s.cred {
                c.data = REDACTED.into();
            }
            s.items.iter_mut().for_each(redact_item);
        }
        Command::Results(r) => r.items.iter_mut().for_each(redact_item),
        Command::Unsupported { .. } => {}
    }
}

fn redact_item(item: &mut Item) {
    let secret = [&item.target, &item.source].into_iter().flatten().any(|u| is_secret_uri(u));
    if secret && item.data.is_some() {
        item.data = Some(REDACTED.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncml::{Cred, ItemCmd};

    #[test]
    fn credentials_and_secret_nodes_are_masked_and_the_rest_kept() {
        let mut m = SyncMl::default();
        m.hdr.cred = Some(Box::new(Cred { data: "c2VjcmV0".into(), ..Cred::default() }));
        m.body.commands.push(Command::Replace(ItemCmd {
            cmd_id: "1".into(),
            items: vec![
                Item {
                    target: Some("./SyncML/DMAcc/x/AppAuth/CLCRED/AAuthSecret".into()),
                    data: Some("hunter2".into()),
                    ..Item::default()
                },
                Item {
                    target: Some("./DevDetail/Ext/Microsoft/DeviceName".into()),
                    data: Some("PC".into()),
                    ..Item::default()
                },
            ],
            ..ItemCmd::default()
        }));
        let r = redact(&m);
        assert_eq!(r.hdr.cred.as_ref().map(|c| c.data.as_str()), Some(REDACTED));
        let Command::Replace(c) = &r.body.commands[0] else { unreachable!() };
        assert_eq!(c.items[0].data.as_deref(), Some(REDACTED));
        assert_eq!(c.items[1].data.as_deref(), Some("PC"));
        assert!(!crate::syncml::encode(&r).contains("hunter2"));
    }
}
