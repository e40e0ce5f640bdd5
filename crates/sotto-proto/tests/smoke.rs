use rand_core::OsRng;
use sotto_proto::*;

fn device(user: &UserKey) -> Device {
    let key = DeviceKey::generate(&mut OsRng);
    let cert = user.certify(&key.public_keys(), 1);
    Device::new(key, cert).unwrap()
}

fn payload(from: &UserKey, body: &str) -> Payload {
    Payload {
        message_id: [7; 16],
        conversation: [1; 32],
        sender: from.public(),
        sent_at: 5,
        ttl: 0,
        content_type: content::TEXT,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn first_message_then_reply_then_replay() {
    let (alice, bob) = (UserKey::generate(&mut OsRng), UserKey::generate(&mut OsRng));
    let (mut a, mut b) = (device(&alice), device(&bob));
    let pk = b.generate_prekeys(&mut OsRng, 1)[0];
    let bundle = PrekeyBundle { cert: *b.cert(), prekey: pk }.verify(&bob.public()).unwrap();
    a.start_session(&mut OsRng, &bundle).unwrap();
    let dg = a.seal(&mut OsRng, &payload(&alice, "hi"), &[b.id()]).unwrap();
    let opened = b.open(&dg).unwrap();
    assert_eq!(opened.payload.body, b"hi");
    assert_eq!(b.open(&dg).unwrap_err(), Error::Replay);
    assert_eq!(b.one_time_prekeys(), 0);
    let reply = b.seal(&mut OsRng, &payload(&bob, "yo"), &[a.id()]).unwrap();
    assert_eq!(a.open(&reply).unwrap().payload.body, b"yo");
    let dg2 = a.seal(&mut OsRng, &payload(&alice, "2"), &[b.id()]).unwrap();
    assert!(Datagram::decode(&dg2).unwrap().entries[0].init.is_none());
    assert_eq!(b.open(&dg2).unwrap().payload.body, b"2");
}
