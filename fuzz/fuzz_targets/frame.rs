//! Fuzz target `frame`: see [`amphi_fuzz::frame`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amphi_fuzz::frame(data));
