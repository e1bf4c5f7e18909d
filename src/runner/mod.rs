//! The I/O shell around the sans-I/O core: HTTP, TLS, files.

pub mod enroll;
