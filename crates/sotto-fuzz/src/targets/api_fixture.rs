//! A fixed device for the API body targets, and genuine bodies made with it
//! (the seeds in `seeds/api_*/`; `cargo test -p sotto-fuzz -- --ignored
//! write_api_seeds` writes them again). Bodies that need signatures
//! (certificates, prekeys) only decode when they carry this device's, so
//! the seeds are what lets a fuzzer reach the checks behind them.

use std::sync::OnceLock;

use sotto_api::*;
use sotto_proto::{DeviceId, DeviceKey, PrekeyKind, UserKey};

use crate::rng::CounterRng;

pub(crate) struct Fixture {
    pub user: UserKey,
    pub device: DeviceKey,
}

pub(crate) fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = CounterRng(7);
        Fixture {
            user: UserKey::generate(&mut rng),
            device: DeviceKey::generate(&mut rng),
        }
    })
}

/// The device whose prekey uploads the `api_prekey_upload` target decodes.
pub(crate) fn device() -> DeviceId {
    fixture().device.id()
}

fn prekeys(n: u32) -> (Vec<String>, String) {
    let f = fixture();
    let mut rng = CounterRng(11);
    let one_time = (1..=n)
        .map(|i| {
            b64::encode(
                &f.device
                    .generate_prekey(&mut rng, i, PrekeyKind::OneTime)
                    .0
                    .encode(),
            )
        })
        .collect();
    let reserve = f
        .device
        .generate_prekey(&mut rng, n + 1, PrekeyKind::Reserve)
        .0;
    (one_time, b64::encode(&reserve.encode()))
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
}

/// (target, seed file name, body): a genuine body for every API target.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let f = fixture();
    let cert = f.user.certify(&f.device.public_keys(), 1);
    let (one_time, reserve) = prekeys(3);
    let hash = hex::encode(username_hash("alice"));
    vec![
        (
            "api_register",
            "genuine",
            json(&RegisterRequest {
                username_hash: hash.clone(),
                cert: b64::encode(&cert.encode()),
                prekeys: one_time.clone(),
                reserve: reserve.clone(),
            }),
        ),
        (
            "api_link",
            "genuine",
            json(&LinkRequest {
                device: hex::encode(f.device.id().0),
                dh: hex::encode(f.device.public_keys().dh),
                proof: hex::encode([7u8; 32]),
                prekeys: one_time.clone(),
                reserve: reserve.clone(),
            }),
        ),
        (
            "api_link_approve",
            "genuine",
            json(&LinkApprove {
                cert: b64::encode(&cert.encode()),
                approval: b64::encode(&[9u8; 60]),
            }),
        ),
        ("api_claim", "all", Vec::new()),
        (
            "api_claim",
            "listed",
            json(&ClaimRequest {
                devices: vec![hex::encode(f.device.id().0)],
            }),
        ),
        (
            "api_prekey_upload",
            "genuine",
            json(&PrekeyUpload {
                prekeys: one_time,
                reserve: Some(reserve),
            }),
        ),
        (
            "api_ack",
            "genuine",
            json(&Ack {
                seqs: vec![1, 2, 70_000],
            }),
        ),
        (
            "api_block",
            "genuine",
            json(&Block {
                username_hash: hash,
            }),
        ),
        (
            "api_remove_device",
            "genuine",
            json(&RemoveDevice {
                time_ms: 1_700_000_000_000,
                signature: b64::encode(&f.user.sign_removal(&f.device.id(), 1_700_000_000_000)),
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use sotto_api::decode;

    /// The seeds must get past the decoders (else the fuzzer starts far
    /// from the checks behind them).
    #[test]
    fn every_seed_is_accepted() {
        let device = super::device();
        for (target, name, body) in super::seeds() {
            let ok = match target {
                "api_register" => decode::register(&body).is_ok(),
                "api_link" => decode::link(&body)
                    .and_then(|l| decode::link_pool(&l))
                    .is_ok(),
                "api_link_approve" => decode::link_approve(&body).is_ok(),
                "api_claim" => decode::claim(&body).is_ok(),
                "api_prekey_upload" => decode::prekey_upload(&device, &body).is_ok(),
                "api_ack" => decode::ack(&body).is_ok(),
                "api_block" => decode::block(&body).is_ok(),
                "api_remove_device" => decode::remove_device(&body).is_ok(),
                other => panic!("no decoder for {other}"),
            };
            assert!(ok, "{target}/{name}");
        }
    }
}
