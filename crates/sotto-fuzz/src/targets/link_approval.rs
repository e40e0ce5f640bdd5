//! What a waiting device does with the approval the server hands it
//! (`NewDevice::open_approval`: decrypt under the link secret, decode,
//! check the certificate and the user key's signature, decode the link
//! sync). The first input byte picks the mode:
//!
//! * 0: the rest is the sealed approval as the server sent it (it must not
//!   open: only someone with the code can seal one);
//! * 1: the rest is the approval's plaintext, sealed with the right secret
//!   (every decoding and signature path after decryption is reached; a
//!   plaintext that does not carry a valid signature must be refused);
//! * 2: the rest is the link sync of a genuine approval, signed by the user
//!   key and sealed (the sync decoder and name checks are reached, and a
//!   sync that decodes with a valid name must be accepted).

use std::sync::OnceLock;

use sotto_device::{Error, LinkSyncBody, NewDevice};
use sotto_proto::{LinkApproval, LinkSecret, UserKey};

use crate::rng::CounterRng;

const LINK_ID: &str = "fuzzlink";

struct Fixture {
    device: NewDevice,
    secret: LinkSecret,
    user: UserKey,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = CounterRng(3);
        let device = NewDevice::new(&mut rng);
        let code = device.code(LINK_ID).expect("valid link id");
        let secret = LinkSecret::parse(code.rsplit_once('-').expect("code").1).expect("secret");
        Fixture {
            device,
            secret,
            user: UserKey::generate(&mut rng),
        }
    })
}

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let keys = f.device.public_keys();
    let mut rng = CounterRng(u64::from(mode));
    match mode % 3 {
        0 => {
            assert!(matches!(
                f.device.open_approval(LINK_ID, rest),
                Err(Error::LinkForged)
            ));
        }
        1 => {
            let Ok(sealed) = f.secret.seal_approval(&mut rng, LINK_ID, &keys, rest) else {
                return;
            };
            if f.device.open_approval(LINK_ID, &sealed).is_ok() {
                // Only a plaintext the user key signed can pass.
                let a = LinkApproval::decode(rest).expect("opened, so it decodes");
                assert!(a.verify(LINK_ID, &keys).is_ok());
            }
        }
        _ => {
            let cert = f.user.certify(&keys, 1);
            let approval = LinkApproval::new(&f.user, LINK_ID, cert, rest.to_vec())
                .expect("valid link id")
                .encode();
            let Ok(sealed) = f.secret.seal_approval(&mut rng, LINK_ID, &keys, &approval) else {
                return;
            };
            let opened = f.device.open_approval(LINK_ID, &sealed);
            let valid = LinkSyncBody::decode(rest)
                .is_some_and(|s| sotto_device::check_username(&s.username).is_ok());
            assert_eq!(opened.is_ok(), valid, "{:?}", opened.err());
            if let Ok(a) = opened {
                assert_eq!(a.username_hash(), sotto_proto::username_hash(a.username()));
            }
        }
    }
}
