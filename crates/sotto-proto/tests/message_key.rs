//! `Device::seal_with_key` and `Opened::message_key`: the key a room member
//! grants opens the same datagram for another device of the recipient.

use rand_core::OsRng;
use sotto_proto::room::open_with_message_key;
use sotto_proto::*;

fn device(user: &UserKey) -> Device {
    let key = DeviceKey::generate(&mut OsRng);
    let cert = user.certify(&key.public_keys(), 1);
    Device::new(key, cert).unwrap()
}

#[test]
fn sealed_key_equals_opened_key_and_opens_the_datagram() {
    let (alice, bob) = (UserKey::generate(&mut OsRng), UserKey::generate(&mut OsRng));
    let mut a = device(&alice);
    let mut b = device(&bob);
    let prekey = b.generate_prekeys(&mut OsRng, 1)[0];
    let bundle = PrekeyBundle {
        cert: *b.cert(),
        prekey,
    }
    .verify(&bob.public())
    .unwrap();
    a.start_session(&mut OsRng, &bundle).unwrap();
    let payload = Payload {
        message_id: [1; 16],
        conversation: [2; 32],
        sender: alice.public(),
        sent_at: 1,
        ttl: 0,
        content_type: content::ROOM_CONTROL,
        body: b"entry".to_vec(),
    };
    let (dg, key) = a.seal_with_key(&mut OsRng, &payload, &[b.id()]).unwrap();
    let opened = b.open(&dg).unwrap();
    assert_eq!(*opened.message_key, *key);
    let (sender, p) = open_with_message_key(&dg, &key).unwrap();
    assert_eq!((sender.device, p), (a.id(), payload));
    let mut wrong = *key;
    wrong[0] ^= 1;
    assert!(open_with_message_key(&dg, &wrong).is_err());
}
