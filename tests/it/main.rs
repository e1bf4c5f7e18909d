//! The integration tests of mdmsim: one test binary, one module per area.

/// Shared helpers: the scripted SyncML server, a test CSP, running the binary.
mod support;

/// EnterpriseAppManagement over `mdmsim sync` sessions: installs, failures, 418, uninstall.
mod app_install;
/// Cloning a real device: `device import` of captures, devices answering the captured Gets,
/// values varied by seed, and `syncml replay` against the reference and a scripted server.
mod capture;
/// The command line and the state directory hardened: private state (0700/0600), `--insecure`
/// warnings, credentials from files and the environment, one exit code per failure class in
/// every command, a closed standard output, missing / file / locked state directories.
mod cli_hardening;
/// The reference server's compatibility mode: the fleet and minimal presets, single switches,
/// the Federated sign-in page and its tokens.
mod compat_server;
/// `mdmsim conformance` against the reference server: strict mode passes every check, the
/// fleet and minimal presets fail exactly the checks of their deviations.
mod conformance;
/// `mdmsim run` killed with SIGKILL at a seeded moment: whole devices, SessionIDs never reused.
mod crash;
/// CSP behaviour files over real sessions: ADMX ingestion, NodeCache, DeviceManageability,
/// the Update CSP and EnterpriseModernAppManagement hosted installs on the device's timers.
mod csp_behaviours;
/// `mdmsim ddf`: Microsoft's CSP definition files compiled into the node table.
mod ddf;
/// CSPs known by their DDF facts over real sessions: a Fleet-style Policy profile, BitLocker, Reboot.
mod ddf_csps;
/// `mdmsim demo`: a small fleet enrolls, lives half a day, and agrees with the server.
mod demo;
/// DMClient CSP: the examples of Microsoft's DMClient CSP page replayed as SyncML against the full CSP registry.
mod dmclient;
/// DMClient settings that change sessions: signing, keep-alive, address list, lost contact.
mod dmclient_session;
/// The device engine through the in-process and simulated exchanges, and `mdmsim bench sessions`.
mod engine;
/// Enrollment (MS-MDE2) against a small test enrollment server with a real test CA.
mod enroll;
/// `mdmsim enroll` / `sync` / `unenroll` against the embedded reference server.
mod enroll_cli;
/// EnterpriseAppManagement installs with real package downloads from a server on 127.0.0.1.
mod enterprise_app;
/// The fuzz corpus replayed through the fuzz entry points on stable, and a seeded mutation run.
/// `mdmsim fleet`: shards add up to one run, the same seed gives the same run, flags are checked.
mod fleet;
/// The fleet model: identities in the tree, the workday behaviour and its weekly shape, the
/// template mix and its refusals with FILE:LINE:COLUMN.
mod fleet_model;
mod fuzz_corpus;
/// Hostile and buggy servers: size limits, 429 waits, pretty-printing cost, repeated MsgIDs and
/// RespURI moves, with the binary's peak memory and wall time measured.
mod hostile;
/// EnterpriseDesktopAppManagement MSI installs as Fleet sends them, over `mdmsim sync` and
/// `mdmsim run` sessions: Status 10 to 70 with a real download and hash, the completion Alert
/// 1224 in the next package 1, retries, 404, malformed jobs, no reinstall, uninstall.
mod msi_install;
/// Output a person can read: `sync` names each non-200 status's LocURI, `mdmsim transcript`
/// (text, HTML checked in headless Chromium), the enrollment exchange masked, `device list`.
mod output;
/// Push end to end: the WNS emulation of `mdmsim run`, the reference server's pushes, Apps and
/// Alert 1200 sessions, a revoked channel configured again; the emulation's status codes.
mod push;
/// The README's marked command blocks, run as written against the reference server.
mod readme;
/// `mdmsim enroll` / `sync` against servers as they are in the wild: the reference server's
/// compatibility presets (Fleet's behaviour, a minimal server), Federated sign-in pages.
mod real_servers;
/// Fleet run reports: shard reports merged exactly, the HTML page (in headless Chromium),
/// refusals with exit 2, the Prometheus metrics endpoint.
mod report;
/// `mdmsim run` against the reference server on the virtual clock: modes, polls, events, seeds.
mod run;
/// Scenario files: `scenario check` messages, server-facing expectations, the shipped scenarios
/// against the reference server (pass), a do-nothing server and Fleet-style replies (fail).
mod scenario;
/// Triggers, operation modes, the Machine-mode gate and the clock.
mod schedule;
/// The embedded reference MDM server, driven by hand-written SyncML and SOAP.
mod server;
/// The reference server's admin token, its loopback-only default, and fault injection: each
/// fault on the wire, and a fleet that lives through a faulty server and agrees with it.
mod server_faults;
/// The reference server's configuration profiles (an Atomic of Replaces, verified by Get in a
/// later session) and MSI installs (EnterpriseDesktopAppManagement Add + Exec, the install
/// alert, Status polls), by hand-written SyncML and by devices living a virtual day.
mod server_profiles;
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
