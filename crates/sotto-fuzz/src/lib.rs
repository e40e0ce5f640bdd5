//! # sotto-fuzz
//!
//! The bodies of sotto's fuzz targets: every decoder that takes untrusted
//! bytes has a target here. They live in this ordinary workspace crate so
//! that `cargo test` compiles them and runs each over its seed corpus
//! (`seeds/<target>/`) and a few thousand generated inputs
//! (`tests/corpus.rs`); the libFuzzer binaries in `fuzz/` (cargo-fuzz, its
//! own workspace, not built by `cargo test`) are one-line wrappers around
//! [`TARGETS`]. How to run them and what the runs found: docs/protocol.md,
//! "Fuzzing runs".
//!
//! To add a target: a module in `src/targets/` with `pub fn run(&[u8])`, a
//! line in [`TARGETS`], a wrapper in `fuzz/fuzz_targets/` with its `[[bin]]`
//! in `fuzz/Cargo.toml`, and a few seed files in `seeds/<name>/`.

mod rng;
pub mod targets;

/// A target: its name (the cargo-fuzz binary and seed folder) and body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("datagram_decode", targets::datagram_decode::run),
    ("device_open", targets::device_open::run),
    ("api_register", targets::api_register::run),
    ("api_link", targets::api_link::run),
    ("api_link_approve", targets::api_link_approve::run),
    ("api_claim", targets::api_claim::run),
    ("api_prekey_upload", targets::api_prekey_upload::run),
    ("api_ack", targets::api_ack::run),
    ("api_block", targets::api_block::run),
    ("api_remove_device", targets::api_remove_device::run),
    ("api_send_frame", targets::api_send_frame::run),
    ("room_entry", targets::room_entry::run),
    ("room_wire", targets::room_wire::run),
    ("link_approval", targets::link_approval::run),
    ("link_sync", targets::link_sync::run),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
