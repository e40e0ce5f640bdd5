//! libFuzzer entry for `sotto_fuzz::targets::room_entry` (see that module).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::targets::room_entry::run(data));
