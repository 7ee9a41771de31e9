//! Fuzz target `store_records`: see [`amphi_fuzz::store_records`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amphi_fuzz::store_records(data));
