//! The integration tests: one binary, one module per area.

/// The embedded reference MDM server, driven by hand-written SyncML and SOAP.
mod server;
