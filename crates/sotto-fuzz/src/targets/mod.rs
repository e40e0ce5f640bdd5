//! One module per fuzz target, each with a `run(&[u8])` that must return
//! (never panic) on any input and checks its own invariants with asserts.

pub mod datagram_decode;
pub mod device_open;
