//! One OMA-DM management session of one device, as a sans-I/O state machine (OMA DM 1.2
//! protocol as MS-MDM profiles it).
//!
//! Owns package 1, the command loop (SyncHdr status first, one status per server command in
//! order, Results for Gets, MsgID/MsgRef/CmdRef bookkeeping), multi-message packages (Alert
//! 1222), abort (1223), the end of the session, receiving large objects (213, 424, 1225),
//! answering a 401/407 challenge once through an [`Authenticator`], what a session accepts from
//! a server ([`Limits`]: message count, reply, value and large-object sizes) and the RespURI it
//! follows, the [`Gate`] policy seam, the [`Summary`], and masking secrets for transcripts and
//! logs ([`redact`]).
//! It does not own the transport (`runner/`), command semantics (`tree/`), or when a session
//! starts and in which mode (the device and, later, the scheduler decide; the session is told).
//!
//! Use: [`start`] → send the message → [`AwaitingServer::receive`] with the reply body (or
//! [`AwaitingServer::receive_empty`] for an empty HTTP body, [`AwaitingServer::fail`] for a
//! transport error) → [`Next`], until [`Finished`] or [`Failed`].

mod gate;
mod machine;
pub mod mode_gate;
mod redact;
mod summary;

pub use gate::{AllowAll, Finding, Gate, GateCx, Verdict};
pub use machine::{
    Authenticator, AwaitingServer, DeviceCx, Failed, Fault, Finished, KeepAlive, LOGIN_STATUS_TYPE, Limits,
    LoginStatus, Next, SessionAlert, SessionConfig, SessionError, start, start_default,
};
pub use mode_gate::ModeGate;
pub use redact::{REDACTED, is_secret_uri, redact};
pub use summary::{CommandRecord, EffectRecord, Mode, Outcome, Summary, Trigger};
