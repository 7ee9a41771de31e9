//! Fuzz target `bundle`: see [`amphi_fuzz::bundle`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amphi_fuzz::bundle(data));
