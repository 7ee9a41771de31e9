//! Fuzz target `certificate`: see [`amphi_fuzz::certificate`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amphi_fuzz::certificate(data));
