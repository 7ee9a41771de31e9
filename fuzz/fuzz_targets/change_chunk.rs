//! Fuzz target `change_chunk`: see [`amphi_fuzz::change_chunk`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amphi_fuzz::change_chunk(data));
