//! The bearer token of the admin endpoints (`/admin/devices`, `/admin/summary`): they show user
//! e-mails, certificate serials and inventory, so they answer 401 to a request without
//! `Authorization: Bearer <token>` (RFC 6750).
//!
//! Owns creating, reading and checking the token. The token is 32 random bytes as hex, made at
//! the first start and kept in `<state>/admin-token` (mode 0600, only the server's user can read
//! it), so that it stays the same across restarts; the server prints the file's path, never the
//! token. Routing and the 401 answer live in `mod.rs`.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, header};

/// The file name of the token in the state directory.
pub const TOKEN_FILE: &str = "admin-token";

/// The token of a running server, and where it is kept.
#[derive(Clone)]
pub struct AdminToken {
    value: String,
    file: PathBuf,
}

impl std::fmt::Debug for AdminToken {
    // The token is a secret: debug output (and logs made from it) shows the file only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken").field("file", &self.file).finish_non_exhaustive()
    }
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("admin token {file}: {source}")]
    Io { file: String, source: io::Error },
    #[error("admin token {file}: expected 64 hex digits; delete the file to get a new token")]
    Malformed { file: String },
    #[error(
        "admin token {file}: other users can read it (mode {mode:03o}); run `chmod 600` on it, or delete it to get a new token"
    )]
    Exposed { file: String, mode: u32 },
}

/// Whether a request carried the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// The right token.
    Valid,
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token that is not ours.
    Wrong,
}

impl AdminToken {
    /// Reads `<state_dir>/admin-token`, or creates it (mode 0600) with a fresh token.
    pub fn open(state_dir: &Path) -> Result<AdminToken, AdminTokenError> {
        let file = state_dir.join(TOKEN_FILE);
        let io_err = |source| AdminTokenError::Io { file: file.display().to_string(), source };
        std::fs::create_dir_all(state_dir).map_err(io_err)?;
        match create(&file) {
            Ok(value) => return Ok(AdminToken { value, file }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(e)),
        }
        check_mode(&file)?;
        let text = std::fs::read_to_string(&file).map_err(io_err)?;
        let value = text.trim().to_string();
        if value.len() != 64 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(AdminTokenError::Malformed { file: file.display().to_string() });
        }
        Ok(AdminToken { value, file })
    }

    /// The token (what goes after `Bearer `).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The file that holds it.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, headers: &HeaderMap) -> Presented {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Presented::Missing;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else { return Presented::Missing };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Presented::Missing;
        }
        let token = token.trim().as_bytes();
        // Constant-time comparison, so the answer time does not tell how much of a guess was
        // right (openssl's memcmp needs equal lengths, and the length is no secret).
        if token.len() == self.value.len() && openssl::memcmp::eq(token, self.value.as_bytes()) {
            Presented::Valid
        } else {
            Presented::Wrong
        }
    }
}

/// Writes a fresh token to a new file readable by its owner only.
fn create(file: &Path) -> io::Result<String> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).map_err(io::Error::other)?;
    let value = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(file)?;
    // A trailing newline, so that `$(cat admin-token)` and editors see one line.
    if let Err(e) = f.write_all(format!("{value}\n").as_bytes()).and_then(|()| f.sync_all()) {
        let _ = std::fs::remove_file(file);
        return Err(e);
    }
    Ok(value)
}

/// Refuses a token file that other users can read or write.
fn check_mode(file: &Path) -> Result<(), AdminTokenError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(file)
            .map_err(|source| AdminTokenError::Io { file: file.display().to_string(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AdminTokenError::Exposed { file: file.display().to_string(), mode });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn the_token_is_made_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let t = AdminToken::open(dir.path()).unwrap();
        assert_eq!(t.value().len(), 64);
        assert_eq!(AdminToken::open(dir.path()).unwrap().value(), t.value());
        assert!(!format!("{t:?}").contains(t.value()));
        assert_eq!(t.check(&headers(&format!("Bearer {}", t.value()))), Presented::Valid);
        assert_eq!(t.check(&headers(&format!("bearer  {} ", t.value()))), Presented::Valid);
        assert_eq!(t.check(&HeaderMap::new()), Presented::Missing);
        assert_eq!(t.check(&headers(&format!("Basic {}", t.value()))), Presented::Missing);
        assert_eq!(t.check(&headers("Bearer 00")), Presented::Wrong);
        let other = "0".repeat(64);
        assert_eq!(t.check(&headers(&format!("Bearer {other}"))), Presented::Wrong);
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_or_damaged_token_file_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let t = AdminToken::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(t.file()).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(t.file(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AdminToken::open(dir.path()).unwrap_err().to_string();
        assert!(
            e.ends_with("other users can read it (mode 644); run `chmod 600` on it, or delete it to get a new token"),
            "{e}"
        );
        std::fs::set_permissions(t.file(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(t.file(), "short\n").unwrap();
        let e = AdminToken::open(dir.path()).unwrap_err().to_string();
        assert!(e.ends_with("expected 64 hex digits; delete the file to get a new token"), "{e}");
    }
}
