//! The integration test binary: one module per area.

// Triggers, operation modes, the Machine-mode gate and the clock (issue 6).
mod schedule;
