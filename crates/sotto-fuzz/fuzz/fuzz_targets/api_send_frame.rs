//! libFuzzer entry for `sotto_fuzz::targets::api_send_frame` (see that module).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::targets::api_send_frame::run(data));
