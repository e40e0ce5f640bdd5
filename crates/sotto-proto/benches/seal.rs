//! Sealing to 1..2000 devices on established sessions, opening as one
//! recipient, and, in the same run, the primitives a seal is made of, so
//! each figure can be read as a ratio (docs/PERFORMANCE.md).
//!
//!     cargo bench -p sotto-proto --bench seal -- --measurement-time 3
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) on
//! Linux, so that other work on a shared machine inflates them less than
//! wall-clock time would; set `SOTTO_BENCH_WALL=1` for wall-clock time.

mod common;

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use hmac::{Hmac, Mac};
use rand_core::OsRng;
use sha2::{Digest, Sha256, Sha512};
use sotto_proto::*;
use x25519_dalek::{PublicKey, StaticSecret};

use common::{iter, now};

const COUNTS: [usize; 5] = [1, 10, 100, 1000, 2000];

const BODY: usize = 1024;

struct World {
    alice: UserKey,
    a: Device,
    bobs: Vec<Device>,
}

fn payload(sender: &UserPublic, n: u64) -> Payload {
    let mut message_id = [0u8; 16];
    message_id[..8].copy_from_slice(&n.to_be_bytes());
    Payload {
        message_id,
        conversation: [1; 32],
        sender: *sender,
        sent_at: 1_700_000_000_000 + n,
        ttl: 0,
        content_type: content::TEXT,
        body: vec![0x5a; BODY],
    }
}

/// alice's device with established sessions to `n` devices (of one other
/// user): the recipients opened a first message and answered, so alice's
/// entries carry no init any more.
fn world(n: usize) -> World {
    let rng = &mut OsRng;
    let alice = UserKey::generate(rng);
    let bob = UserKey::generate(rng);
    let key = DeviceKey::generate(rng);
    let cert = alice.certify(&key.public_keys(), 1);
    let mut a = Device::new(key, cert).unwrap();
    let mut bobs = Vec::with_capacity(n);
    for _ in 0..n {
        let key = DeviceKey::generate(rng);
        let cert = bob.certify(&key.public_keys(), 1);
        let mut b = Device::new(key, cert).unwrap();
        let prekey = b.generate_prekeys(rng, 1)[0];
        let bundle = PrekeyBundle { cert, prekey }.verify(&bob.public()).unwrap();
        a.start_session(rng, &bundle).unwrap();
        bobs.push(b);
    }
    let ids: Vec<DeviceId> = bobs.iter().map(Device::id).collect();
    let first = a.seal(rng, &payload(&alice.public(), 0), &ids).unwrap();
    for b in &mut bobs {
        b.open(&first).unwrap();
        let reply = b.seal(rng, &payload(&bob.public(), 1), &[a.id()]).unwrap();
        a.open(&reply).unwrap();
    }
    let check = a.seal(rng, &payload(&alice.public(), 2), &ids).unwrap();
    assert!(Datagram::decode(&check)
        .unwrap()
        .entries
        .iter()
        .all(|e| e.init.is_none()));
    for b in &mut bobs {
        b.open(&check).unwrap();
    }
    a.take_changes();
    World { alice, a, bobs }
}

fn seal(c: &mut Criterion) {
    let mut w = world(*COUNTS.iter().max().unwrap());
    let ids: Vec<DeviceId> = w.bobs.iter().map(Device::id).collect();
    let alice = w.alice.public();
    let sk = SigningKey::generate(&mut OsRng);
    let mut g = c.benchmark_group("seal");
    g.sample_size(20);
    for (n_msg, n) in (10u64..).zip(COUNTS) {
        g.throughput(Throughput::Elements(n as u64));
        let p = payload(&alice, n_msg);
        g.bench_with_input(BenchmarkId::new("sotto", n), &n, |bench, &n| {
            iter(bench, || {
                let dg =
                    w.a.seal(&mut OsRng, black_box(&p), black_box(&ids[..n]))
                        .unwrap();
                // What the caller persists after each seal (ids only).
                black_box(w.a.take_changes());
                dg
            });
        });
        // The floor: only the primitives a seal to n devices is made of,
        // on the same sizes, measured next to it under the same load.
        let dg_len = w.a.seal(&mut OsRng, &p, &ids[..n]).unwrap().len();
        g.bench_with_input(BenchmarkId::new("primitives_only", n), &n, |bench, &n| {
            iter(bench, || primitives_of_a_seal(&sk, &p.body, n, dg_len));
        });
    }
    g.finish();
}

/// What sealing `body` to `n` devices costs in primitives alone: the payload
/// under AES-256-GCM, its SHA-256 digest, per device one hash-ratchet step
/// and one AES-256-GCM wrap of 32 bytes under the 131-byte AAD, SHA-512 over
/// a datagram of `dg_len` bytes and one Ed25519ph signature.
fn primitives_of_a_seal(sk: &SigningKey, body: &[u8], n: usize, dg_len: usize) -> [u8; 64] {
    let mk = [1u8; 32];
    let mut plain = vec![0u8; 97 + body.len()];
    plain[97..].copy_from_slice(body);
    let tag = Aes256Gcm::new((&mk).into())
        .encrypt_in_place_detached(Nonce::from_slice(&[2; 12]), b"sotto/v1/payload", &mut plain)
        .unwrap();
    let digest = Sha256::new()
        .chain_update(&plain)
        .chain_update(tag)
        .finalize();
    let mut aad = [0u8; 131];
    aad[99..].copy_from_slice(&digest);
    let mut ck = [3u8; 32];
    let mut acc = [0u8; 48];
    for i in 0..n {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&ck).unwrap();
        let step = |mut m: Hmac<Sha256>, label: u8| -> [u8; 32] {
            m.update(&[label]);
            m.finalize().into_bytes().into()
        };
        let wk = step(mac.clone(), 1);
        ck = step(mac, 2);
        aad[95..99].copy_from_slice(&(i as u32).to_be_bytes());
        let mut k = mk;
        let t = Aes256Gcm::new((&wk).into())
            .encrypt_in_place_detached(Nonce::from_slice(&[0; 12]), &aad, &mut k)
            .unwrap();
        acc[..32].copy_from_slice(&k);
        acc[32..].copy_from_slice(&t);
        black_box(&acc);
    }
    let dg = vec![0u8; dg_len - 64];
    let mut h = Sha512::new();
    h.update(black_box(&dg));
    sk.sign_prehashed(h, Some(b"sotto/v1/datagram"))
        .unwrap()
        .to_bytes()
}

/// Opening as one recipient: fresh datagrams are sealed outside the timed
/// part, in chunks, and opened in order.
fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    for n in [1usize, 2000] {
        let mut w = world(n);
        let ids: Vec<DeviceId> = w.bobs.iter().map(Device::id).collect();
        let alice = w.alice.public();
        // The recipient whose entry is last: the worst case for the lookup.
        let me = n - 1;
        let mut seq = 100u64;
        g.bench_function(BenchmarkId::new("recipient_of", n), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(if n > 100 { 16 } else { 256 });
                    let dgs: Vec<Vec<u8>> = (0..chunk)
                        .map(|_| {
                            seq += 1;
                            w.a.seal(&mut OsRng, &payload(&alice, seq), &ids).unwrap()
                        })
                        .collect();
                    let start = now();
                    for dg in &dgs {
                        black_box(w.bobs[me].open(black_box(dg)).unwrap());
                    }
                    total += now() - start;
                    left -= chunk;
                }
                total
            });
        });
    }
    g.finish();
}

/// The primitives.
fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("primitive");
    let rng = &mut OsRng;

    let secret = StaticSecret::random_from_rng(OsRng);
    let public = PublicKey::from(&StaticSecret::random_from_rng(OsRng));
    g.bench_function("x25519_agreement", |b| {
        iter(b, || black_box(&secret).diffie_hellman(black_box(&public)))
    });

    let sk = SigningKey::generate(rng);
    let vk = sk.verifying_key();
    let msg = [7u8; 64];
    let sig = sk.sign(&msg);
    g.bench_function("ed25519_sign", |b| iter(b, || sk.sign(black_box(&msg))));
    g.bench_function("ed25519_verify", |b| {
        iter(b, || vk.verify(black_box(&msg), black_box(&sig)).unwrap())
    });
    // The datagram signature: Ed25519ph over an (already hashed) datagram.
    g.bench_function("ed25519ph_sign_prehashed", |b| {
        b.iter_custom(|iters| {
            let hashed: Vec<Sha512> = (0..iters)
                .map(|_| Sha512::new().chain_update(msg))
                .collect();
            let start = now();
            for h in hashed {
                black_box(sk.sign_prehashed(h, Some(b"sotto/v1/datagram")).unwrap());
            }
            now() - start
        })
    });

    let key = [9u8; 32];
    let nonce = [3u8; 12];
    let mut kib = vec![0u8; 1024];
    g.throughput(Throughput::Bytes(1024));
    g.bench_function("aes256gcm_seal_1KiB", |b| {
        iter(b, || {
            let cipher = Aes256Gcm::new(black_box(&key).into());
            cipher
                .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"aad", &mut kib)
                .unwrap()
        })
    });
    let block = vec![0u8; 1024];
    g.bench_function("sha512_1KiB", |b| {
        iter(b, || Sha512::digest(black_box(&block)))
    });
    g.bench_function("sha256_1KiB", |b| {
        iter(b, || Sha256::digest(black_box(&block)))
    });
    g.throughput(Throughput::Elements(1));
    // Per recipient entry: a new AES-256 key schedule, 32 bytes under the
    // 131-byte wrap AAD.
    let aad = [1u8; 131];
    g.bench_function("aes256gcm_wrap_32B", |b| {
        iter(b, || {
            let cipher = Aes256Gcm::new(black_box(&key).into());
            let mut mk = [5u8; 32];
            let tag = cipher
                .encrypt_in_place_detached(Nonce::from_slice(&[0; 12]), &aad, &mut mk)
                .unwrap();
            (mk, tag)
        })
    });
    // One hash-ratchet step: the message key and the next chain key, two
    // HMAC-SHA-256 tags under one key (the keyed state computed once).
    let ck = [4u8; 32];
    g.bench_function("hmac_sha256_chain_step", |b| {
        iter(b, || {
            let mac = <Hmac<Sha256> as Mac>::new_from_slice(black_box(&ck)).unwrap();
            let tag = |mut m: Hmac<Sha256>, label: u8| {
                m.update(&[label]);
                m.finalize().into_bytes()
            };
            (tag(mac.clone(), 1), tag(mac, 2))
        })
    });
    // The same with the key set up twice, for comparison.
    g.bench_function("hmac_sha256_twice", |b| {
        iter(b, || {
            let h = |label: u8| {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(black_box(&ck)).unwrap();
                mac.update(&[label]);
                mac.finalize().into_bytes()
            };
            (h(1), h(2))
        })
    });
    g.finish();
}

criterion_group!(benches, primitives, seal, open);
criterion_main!(benches);
