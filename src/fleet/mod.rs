//! Fleets: who each device of a fleet is and how its people use it (identities, the workday
//! behaviour model, the template mix), and what a fleet run measured (the mergeable JSON report,
//! its HTML page, the live Prometheus metrics).
pub mod behaviour;
pub mod html;
pub mod identity;
pub mod metrics;
pub mod mix;
pub mod report;
