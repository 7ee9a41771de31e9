//! Fuzz target `whole_case_file`: see [`amphi_fuzz::whole_case_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amphi_fuzz::whole_case_file(data));
