//! Fuzz target `dashboard_input`: see [`amphi_fuzz::dashboard_input`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amphi_fuzz::dashboard_input(data));
