//! Fuzz target `template`: see `mdmsim::fuzz_entry::template` for what it runs and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mdmsim::fuzz_entry::template(data));
