//! A fleet run's results: the mergeable JSON report, its HTML page, and the live Prometheus metrics.
pub mod html;
pub mod metrics;
pub mod report;
