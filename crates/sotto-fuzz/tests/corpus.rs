//! Runs every fuzz target over its committed seeds (`seeds/<target>/`),
//! every truncation and single-byte change of each seed, and a few thousand
//! inputs from a fixed pseudo-random stream. This is not fuzzing (see
//! docs/protocol.md for the libFuzzer runs): it keeps the targets compiling
//! and catches a decoder that panics on the obvious. A target panics (and
//! this test fails) when an input breaks its invariants.

use std::path::PathBuf;

/// Generated inputs per target.
const GENERATED: usize = 2_000;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            out.push(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        }
    }
    out
}

/// splitmix64, so every run feeds the same inputs.
fn stream(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[test]
fn every_target_has_seeds() {
    for (name, _) in sotto_fuzz::TARGETS {
        assert!(
            !seeds(name).is_empty(),
            "no seed files in seeds/{name}/: add a few genuine inputs"
        );
    }
}

#[test]
fn targets_survive_seeds_mutations_and_generated_inputs() {
    for (name, run) in sotto_fuzz::TARGETS {
        let seeds = seeds(name);
        let mut next = stream(name.len() as u64);
        for s in &seeds {
            run(s);
            // Every prefix (bounded, for long seeds) and byte flips.
            for cut in (0..s.len()).step_by((s.len() / 256).max(1)) {
                run(&s[..cut]);
            }
            for _ in 0..64 {
                let mut m = s.clone();
                if m.is_empty() {
                    break;
                }
                let at = next() as usize % m.len();
                m[at] ^= (next() as u8) | 1;
                run(&m);
            }
        }
        for _ in 0..GENERATED {
            let len = next() as usize % 512;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            run(&bytes);
        }
    }
}

/// Writes the API targets' seeds (`seeds/api_*/`) from genuine bodies:
/// `cargo test -p sotto-fuzz -- --ignored write_api_seeds` after a body
/// changes.
#[test]
#[ignore]
fn write_api_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, name, body) in sotto_fuzz::targets::api_fixture::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), body).unwrap();
    }
}

/// Writes the room targets' seeds (`seeds/room_*/`) from a genuine room:
/// `cargo test -p sotto-fuzz -- --ignored write_room_seeds` after the
/// entry or wire format changes.
#[test]
#[ignore]
fn write_room_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, name, body) in sotto_fuzz::targets::room_fixture::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), body).unwrap();
    }
}
