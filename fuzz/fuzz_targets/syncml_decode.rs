//! Fuzz target `syncml_decode`: see `mdmsim::fuzz_entry::syncml_decode` for what it runs and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mdmsim::fuzz_entry::syncml_decode(data));
