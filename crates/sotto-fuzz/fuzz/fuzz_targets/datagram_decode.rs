//! libFuzzer entry for `sotto_fuzz::targets::datagram_decode` (see that module).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::targets::datagram_decode::run(data));
