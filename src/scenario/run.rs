//! The seam between a checked scenario and the multi-device runner: [`RunOptions`] and the
//! typed [`RunError`] of `crate::runner::scenario::execute`.
//!
//! Owns the contract only. The runner owns the loop, the transport and the transcripts.

use std::path::PathBuf;

/// How to run a scenario (from `mdmsim scenario run`).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The MDM server's enrollment/management URL.
    pub server: String,
    /// A PEM file of extra trusted CA certificates.
    pub ca_cert: Option<PathBuf>,
    /// Accept any server certificate (test servers).
    pub insecure: bool,
    /// Write every message of every session under this directory (one subdirectory per
    /// device, the layout of `mdmsim sync --transcript` inside it).
    pub transcript: Option<PathBuf>,
    /// Enroll every device (MS-MDE2) before the run instead of creating it pre-provisioned.
    pub enroll: Option<EnrollAs>,
    /// The push notification service (WNS emulation) the devices' channels are on, whose
    /// notifications wake them; `None`: the devices get no channel.
    pub wns: Option<crate::wns::PushEndpoint>,
}

/// How the devices of a scenario enroll.
#[derive(Debug, Clone)]
pub struct EnrollAs {
    /// The discovery URL (`.../EnrollmentServer/Discovery.svc`).
    pub discovery_url: String,
    pub email: String,
    pub auth: crate::enroll::AuthToken,
}

/// Why a scenario could not run to the end (expectation failures are not errors: they are
/// results).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The server could not be reached (connection, TLS, timeout).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server broke the protocol so that the run could not go on.
    #[error("protocol error by the server: {0}")]
    Protocol(String),
    /// Local state (transcript directory, CA file) unusable.
    #[error("local state: {0}")]
    State(String),
}
