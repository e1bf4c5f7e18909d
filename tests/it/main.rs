//! The integration tests of mdmsim: one test binary, one module per area.

/// Shared helpers: the scripted SyncML server, a test CSP, running the binary.
mod support;

/// DMClient CSP: the seed's examples replayed as SyncML against the full CSP registry.
mod dmclient;
/// EnterpriseAppManagement installs with real package downloads from a server on 127.0.0.1.
mod enterprise_app;
/// One device, one management session over HTTP: commands, statuses, faults, the CLI.
mod session;
// Triggers, operation modes, the Machine-mode gate and the clock (issue 6).
/// Scenario files: `scenario check` messages, the shipped scenarios (issue 7).
mod scenario;
mod schedule;
