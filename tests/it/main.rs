//! The integration tests of mdmsim: one test binary, one module per area.

/// Shared helpers: the scripted SyncML server, a test CSP, running the binary.
mod support;

/// EnterpriseAppManagement over `mdmsim sync` sessions: installs, failures, 418, uninstall.
mod app_install;
/// The reference server's compatibility mode: the fleet and minimal presets, single switches,
/// the Federated sign-in page and its tokens.
mod compat_server;
/// `mdmsim demo`: a small fleet enrolls, lives half a day, and agrees with the server.
mod demo;
/// DMClient CSP: the seed's examples replayed as SyncML against the full CSP registry.
mod dmclient;
/// DMClient settings that change sessions: signing, keep-alive, address list, lost contact.
mod dmclient_session;
/// Enrollment (MS-MDE2) against a small test enrollment server with a real test CA.
mod enroll;
/// `mdmsim enroll` / `sync` / `unenroll` against the embedded reference server.
mod enroll_cli;
/// EnterpriseAppManagement installs with real package downloads from a server on 127.0.0.1.
mod enterprise_app;
/// The fuzz corpus replayed through the fuzz entry points on stable, and a seeded mutation run.
mod fuzz_corpus;
/// `mdmsim enroll` / `sync` against servers as they are in the wild: the reference server's
/// compatibility presets (Fleet's behaviour, a minimal server), Federated sign-in pages.
mod real_servers;
/// `mdmsim run` against the reference server on the virtual clock: modes, polls, events, seeds.
mod run;
/// Scenario files: `scenario check` messages, the shipped scenarios.
mod scenario;
/// Triggers, operation modes, the Machine-mode gate and the clock.
mod schedule;
/// The embedded reference MDM server, driven by hand-written SyncML and SOAP.
mod server;
/// One device, one management session over HTTP: commands, statuses, faults, the CLI.
mod session;
/// SyncML codec: golden corpus round trips, truncation, malformed input, CLI, mutation robustness.
mod syncml;
/// Device templates: every key checked, refusals with FILE:LINE:COLUMN, the shipped ones load.
mod templates;
/// DM tree engine: the status code of every command semantic, through SyncML commands.
mod tree;
/// The WMI bridge (./cimv2): inventory classes on both profiles, the Windows 8.1 methods, over real sessions.
mod wmi_bridge;
