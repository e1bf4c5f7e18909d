//! Fuzz target `session`: see `mdmsim::fuzz_entry::session` for what it runs and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mdmsim::fuzz_entry::session(data));
