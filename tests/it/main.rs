//! mdmsim's integration tests: one binary, one module per area.

/// Enrollment (MS-MDE2) against a small test enrollment server with a real test CA.
mod enroll;
