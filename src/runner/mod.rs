//! The I/O shell around the sans-I/O core: HTTP, push, storage, signing.

pub mod signing;
