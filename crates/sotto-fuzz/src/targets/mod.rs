//! One module per fuzz target, each with a `run(&[u8])` that must return
//! (never panic) on any input and checks its own invariants with asserts.

pub mod api_ack;
pub mod api_block;
pub mod api_claim;
pub mod api_fixture;
pub mod api_link;
pub mod api_link_approve;
pub mod api_prekey_upload;
pub mod api_register;
pub mod api_remove_device;
pub mod api_send_frame;
pub mod datagram_decode;
pub mod device_open;
pub mod link_approval;
pub mod link_sync;
pub mod room_entry;
pub mod room_fixture;
pub mod room_wire;
