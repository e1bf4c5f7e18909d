//! The integration tests of mdmsim: one test binary, one module per area.

/// Shared helpers: the scripted SyncML server, a test CSP, running the binary.
mod support;

/// One device, one management session over HTTP: commands, statuses, faults, the CLI.
mod session;
