//! Exit codes and the error tag that carries one (see the table in `main.rs`).

// Some codes are only used by commands that later parts of the CLI add.
#![allow(dead_code)]

/// A scenario expectation failed.
pub const EXPECTATION: u8 = 1;
/// Usage or input error.
pub const USAGE: u8 = 2;
/// The server could not be reached.
pub const UNREACHABLE: u8 = 3;
/// The server broke the protocol.
pub const PROTOCOL: u8 = 4;
/// Local state error.
pub const STATE: u8 = 5;

/// An error tagged with the exit code it should end the process with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fail {
    pub code: u8,
    pub message: String,
}

/// Builds a tagged error.
pub fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    Fail { code, message: message.into() }.into()
}

/// The exit code for an error: its tag, or 2 for untagged errors.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.chain().find_map(|c| c.downcast_ref::<Fail>()).map_or(USAGE, |f| f.code)
}
