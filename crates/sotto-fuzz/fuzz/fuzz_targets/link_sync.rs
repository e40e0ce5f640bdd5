//! libFuzzer entry for `sotto_fuzz::targets::link_sync` (see that module).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::targets::link_sync::run(data));
