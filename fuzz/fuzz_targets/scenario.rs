//! Fuzz target `scenario`: see `mdmsim::fuzz_entry::scenario` for what it runs and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mdmsim::fuzz_entry::scenario(data));
