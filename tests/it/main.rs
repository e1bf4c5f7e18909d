//! The integration test binary: one module per area (see STYLE.md habit 11).

/// DMClient CSP: the seed's examples replayed as SyncML against the full CSP registry.
mod dmclient;
