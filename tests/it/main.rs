//! The integration test binary: one module per area (STYLE.md habit 11).

/// SyncML codec: golden corpus round trips, truncation, malformed input, CLI, mutation robustness.
mod syncml;
/// DM tree engine: the status code of every command semantic, through SyncML commands.
mod tree;
