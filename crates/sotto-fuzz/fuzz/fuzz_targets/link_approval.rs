//! libFuzzer entry for `sotto_fuzz::targets::link_approval` (see that module).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::targets::link_approval::run(data));
