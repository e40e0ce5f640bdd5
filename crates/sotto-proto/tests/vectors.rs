//! The test vectors of docs/protocol.md: fixed keys and a fixed random
//! stream give exactly the bytes written there. The doc's fenced blocks
//! tagged `vector:<name>` are parsed and compared, so the doc and the code
//! cannot drift apart. On a mismatch the test prints the block to paste.

mod common;

use std::collections::BTreeMap;

use common::*;
use sotto_proto::*;

const DOC: &str = include_str!("../../../docs/protocol.md");

/// `name -> contents` of every block opened by a line "```<lang> vector:<name>".
/// Hex blocks have their whitespace removed; text blocks are kept as written
/// (trimmed).
fn doc_vectors() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix("```") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(lang), Some(tag)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(name) = tag.strip_prefix("vector:") else {
            continue;
        };
        let mut body = Vec::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            body.push(l);
        }
        let value = if lang == "hex" {
            body.concat().split_whitespace().collect::<String>()
        } else {
            body.join("\n").trim().to_string()
        };
        assert!(
            out.insert(name.to_string(), value).is_none(),
            "vector {name} appears twice"
        );
    }
    out
}

/// Everything the vectors are made of, computed by the code.
fn computed() -> Vec<(&'static str, &'static str, String)> {
    let alice = UserKey::from_bytes(&[0xa1; 32]);
    let bob = UserKey::from_bytes(&[0xb1; 32]);
    let mut ak = [0xa2; 64];
    ak[32..].fill(0xa3);
    let mut bk = [0xb2; 64];
    bk[32..].fill(0xb3);
    let (ak, bk) = (DeviceKey::from_bytes(&ak), DeviceKey::from_bytes(&bk));
    let acert = alice.certify(&ak.public_keys(), 1_700_000_000_000);
    let bcert = bob.certify(&bk.public_keys(), 1_700_000_000_000);
    let mut a = Device::new(ak, acert).unwrap();
    let mut b = Device::new(bk, bcert).unwrap();

    let mut rng = TestRng::new("sotto/v1 test vectors");
    let prekey = b.generate_prekeys(&mut rng, 1)[0];
    let reserve = b.generate_reserve(&mut rng);
    let bundle = PrekeyBundle {
        cert: bcert,
        prekey,
    }
    .verify(&bob.public())
    .unwrap();
    let sid = a.start_session(&mut rng, &bundle).unwrap();
    let session = a.session_bytes(&sid).unwrap();
    let (chain_key, index) = send_chain(&session);
    let p = Payload {
        message_id: core::array::from_fn(|i| i as u8),
        conversation: [0x22; 32],
        sender: alice.public(),
        sent_at: 1_700_000_000_123,
        ttl: 86_400,
        content_type: content::TEXT,
        body: b"hello, bob".to_vec(),
    };
    let dg = a.seal(&mut rng, &p, &[b.id()]).unwrap();
    let wrap_key = chain_message_key(chain_key, index, 0);
    let message_key = unwrap_entry(&dg, 0, &wrap_key);

    // The vectors open, and the reply direction works.
    let opened = b.open(&dg).unwrap();
    assert_eq!(opened.payload, p);
    assert_eq!(b.one_time_prekeys(), 0);

    let sn = safety_number(&alice.public(), &bob.public());
    let h = |b: &[u8]| hex::encode(b);
    vec![
        ("alice-user-public", "hex", h(&alice.public().0)),
        (
            "alice-device-public",
            "hex",
            h(&acert.device.0) + &h(&acert.dh),
        ),
        ("bob-user-public", "hex", h(&bob.public().0)),
        (
            "bob-device-public",
            "hex",
            h(&bcert.device.0) + &h(&bcert.dh),
        ),
        ("alice-device-cert", "hex", h(&acert.encode())),
        ("bob-device-cert", "hex", h(&bcert.encode())),
        ("bob-prekey-1", "hex", h(&prekey.encode())),
        ("bob-reserve-2", "hex", h(&reserve.encode())),
        ("session-id", "hex", h(&sid.0)),
        ("alice-send-chain-key-0", "hex", h(&chain_key)),
        ("wrap-key-0", "hex", h(&wrap_key)),
        ("message-key", "hex", h(&message_key)),
        ("datagram", "hex", h(&dg)),
        ("safety-number", "text", sn.grouped()),
        ("safety-qr", "text", sn.qr),
    ]
}

fn block(name: &str, lang: &str, value: &str) -> String {
    let body = if lang == "hex" {
        value
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        value.to_string()
    };
    format!("```{lang} vector:{name}\n{body}\n```")
}

#[test]
fn docs_protocol_md_vectors_match_the_code() {
    let doc = doc_vectors();
    let computed = computed();
    let mut failures = Vec::new();
    for (name, lang, value) in &computed {
        match doc.get(*name) {
            Some(v) if v == value => {}
            _ => failures.push(block(name, lang, value)),
        }
    }
    if !failures.is_empty() {
        panic!(
            "docs/protocol.md vectors differ from the code; the code gives:\n\n{}",
            failures.join("\n\n")
        );
    }
    let known: Vec<&str> = computed.iter().map(|(n, _, _)| *n).collect();
    for name in doc.keys() {
        assert!(
            known.contains(&name.as_str()),
            "docs/protocol.md has a vector {name} no test checks"
        );
    }
}

#[test]
fn the_doc_datagram_decodes_into_the_documented_fields() {
    // Walk the documented layout over the doc's own bytes.
    let doc = doc_vectors();
    let dg = hex::decode(&doc["datagram"]).unwrap();
    let l = layout(&dg);
    assert_eq!(&dg[..2], &[PROTOCOL_VERSION, SUITE_V1]);
    assert_eq!(
        hex::encode(&dg[CERT_AT..CERT_AT + DeviceCert::LEN]),
        doc["alice-device-cert"]
    );
    assert_eq!(l.entries.len(), 1);
    let e = &l.entries[0];
    assert_eq!(
        hex::encode(&dg[e.recipient.clone()]),
        doc["bob-device-public"][..64]
    );
    assert_eq!(hex::encode(&dg[e.session.clone()]), doc["session-id"]);
    assert_eq!(&dg[e.counter.clone()], &[0, 0, 0, 0]);
    assert_eq!(dg[e.flag], 1);
    let init = e.init.clone().unwrap();
    assert_eq!(
        &dg[init.start + 32..init.end],
        &[0, 0, 0, 1, PrekeyKind::OneTime as u8]
    );
    let wrap_key: [u8; 32] = hex::decode(&doc["wrap-key-0"]).unwrap().try_into().unwrap();
    assert_eq!(
        hex::encode(unwrap_entry(&dg, 0, &wrap_key)),
        doc["message-key"]
    );
    // payload: 16 + 32 + 32 + 8 + 4 + 1 + 4 + 10 bytes, + 16 tag
    assert_eq!(l.ciphertext.len(), 97 + 10 + 16);
    assert_eq!(
        u32::from_be_bytes(dg[l.ciphertext_len.clone()].try_into().unwrap()) as usize,
        l.ciphertext.len()
    );
}
