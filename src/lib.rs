//! mdmsim: an emulator of the device side of Windows MDM (the OMA-DM client of one device or of
//! a fleet), for people who build MDM servers.
//!
//! The protocol and device logic (`syncml`, `tree`, `csp`, `session`, `device`, `schedule`,
//! `enroll`, `scenario`) are sans-I/O: they take `now` and inputs and return outputs and
//! deadlines. `runner` is the I/O shell around them (HTTP, the sled store, the fleet loop and
//! its clock); `server` is the embedded reference MDM server, which shares only `syncml` with
//! the device side. `ddf` holds the node facts of every Windows CSP (from Microsoft's DDF
//! files); `fuzz_entry` is the entry points of the fuzz targets.

pub mod capture;
pub mod conformance;
/// The allocator of every binary built on this library: a session allocates many small strings
/// (LocURIs, values, CmdIDs) that live for one message, which mimalloc serves several times faster
/// than the system allocator (see `cargo bench --bench codec`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod csp;
pub mod ddf;
pub mod device;
pub mod enroll;
pub mod fleet;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod names;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod server;
pub mod session;
pub mod syncml;
pub mod toml_pos;
pub mod transcript;
pub mod tree;
pub mod wns;
