//! The I/O shell around the sans-I/O core: the only place (with `server/` and the binary) that
//! touches the network, the disk and the wall clock.

pub mod fetch;
