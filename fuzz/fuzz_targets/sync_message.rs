//! Fuzz target `sync_message`: see [`amphi_fuzz::sync_message`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amphi_fuzz::sync_message(data));
