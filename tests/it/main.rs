//! The integration test binary: one module per area.

/// EnterpriseAppManagement installs with real package downloads from a server on 127.0.0.1.
mod enterprise_app;
