//! Set-up shared by the core's tests: seeded randomness, devices on an
//! in-memory network.

#![allow(dead_code)] // each test binary uses its own subset

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::CryptoRngCore;
use sotto_device::testing::{Net, Node};
use sotto_device::{Machine, Message};

/// A reproducible CSPRNG per seed.
pub fn rng(seed: u64) -> Box<dyn CryptoRngCore + Send + Sync> {
    Box::new(ChaCha20Rng::seed_from_u64(seed))
}

/// 2026-01-01, master clock.
pub const T0: u64 = 1_767_225_600_000;

pub fn net() -> Net {
    Net::new(T0)
}

pub fn register(net: &mut Net, name: &str, seed: u64) -> Node {
    net.register(name, rng(seed))
}

pub fn bodies(m: &mut Machine, now: u64) -> Vec<String> {
    m.history(now, None, None)
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect()
}

pub fn texts(msgs: &[Message]) -> Vec<&str> {
    msgs.iter().map(|m| m.body.as_str()).collect()
}
