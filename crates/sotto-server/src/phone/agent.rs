//! The server's side of a sender account: an ordinary sotto user and
//! device (registered in the directory under the sender's handle) whose
//! keys the server holds, sealed under the hold key. With it the server
//! seals a sender's message to a number's devices as the usual datagram,
//! and opens the replies those devices send to the handle. No I/O here:
//! the caller loads the sessions it needs and saves what changed.

use rand_core::{CryptoRng, OsRng, RngCore};
use sotto_device::{conversation_id, TextBody};
use sotto_proto::{
    content, Device, DeviceCert, DeviceId, DeviceKey, Payload, PrekeyBundle, PrekeySecret, Session,
    SignedPrekey, UserKey, UserPublic,
};
use sotto_store::server::{ClaimedPrekey, NewDevice, NewUser};
use zeroize::Zeroizing;

/// What the server keeps secret for a sender (sealed at rest).
pub struct SenderSecrets {
    pub device_key: DeviceKey,
    pub prekeys: Vec<PrekeySecret>,
    /// Signs the webhook posts (HMAC-SHA-256).
    pub webhook_secret: Zeroizing<[u8; 32]>,
}

impl SenderSecrets {
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        out.extend_from_slice(&self.device_key.to_bytes()[..]);
        out.extend_from_slice(&self.webhook_secret[..]);
        for p in &self.prekeys {
            let b = p.to_bytes();
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(&b);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<SenderSecrets> {
        if bytes.len() < 96 {
            return None;
        }
        let key: [u8; 64] = bytes[..64].try_into().ok()?;
        let key = Zeroizing::new(key);
        let mut webhook_secret = Zeroizing::new([0u8; 32]);
        webhook_secret.copy_from_slice(&bytes[64..96]);
        let mut rest = &bytes[96..];
        let mut prekeys = Vec::new();
        while !rest.is_empty() {
            if rest.len() < 2 {
                return None;
            }
            let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let body = rest.get(2..2 + n)?;
            prekeys.push(PrekeySecret::from_bytes(body).ok()?);
            rest = &rest[2 + n..];
        }
        Some(SenderSecrets {
            device_key: DeviceKey::from_bytes(&key),
            prekeys,
            webhook_secret,
        })
    }
}

/// A new sender identity: its directory entry and its secrets. The user
/// key certifies the one device and is then dropped (zeroized).
pub fn new_identity(handle: &str, now_ms: u64) -> (NewUser, SenderSecrets) {
    let mut rng = OsRng;
    let user_key = UserKey::generate(&mut rng);
    let key = DeviceKey::generate(&mut rng);
    let cert = user_key.certify(&key.public_keys(), now_ms);
    let key_copy = DeviceKey::from_bytes(&key.to_bytes());
    let mut device = Device::new(key, cert).expect("a certificate made for this key");
    let reserve: SignedPrekey = device.generate_reserve(&mut rng);
    let reserve_secret = PrekeySecret::from_bytes(
        &device
            .prekey_bytes(reserve.id)
            .expect("the reserve was just made"),
    )
    .expect("a prekey this build encoded");
    let mut webhook_secret = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut webhook_secret[..]);
    let user = NewUser {
        username_hash: sotto_proto::username_hash(handle),
        user: cert.user,
        device: NewDevice {
            device: cert.device,
            cert: cert.encode(),
            prekeys: Vec::new(),
            reserve: reserve.encode(),
            reserve_id: reserve.id,
        },
    };
    let secrets = SenderSecrets {
        device_key: key_copy,
        prekeys: vec![reserve_secret],
        webhook_secret,
    };
    (user, secrets)
}

/// The sender's device, restored with the sessions the caller loaded.
pub fn device(secrets: &SenderSecrets, cert: &[u8], sessions: Vec<Session>) -> Option<Device> {
    let cert = DeviceCert::decode(cert).ok()?;
    let key = DeviceKey::from_bytes(&secrets.device_key.to_bytes());
    let prekeys = secrets
        .prekeys
        .iter()
        .filter_map(|p| PrekeySecret::from_bytes(&p.to_bytes()).ok())
        .collect();
    Device::restore(key, cert, prekeys, sessions, u32::MAX / 2).ok()
}

/// One text from `handle` to the user `to` (named `to_name`): a payload.
/// Its message id is the sender message's, so that a message sealed twice
/// (a retry) is shown once.
pub fn text_payload(
    message_id: [u8; 16],
    from: &UserPublic,
    handle: &str,
    to: &UserPublic,
    to_name: &str,
    text: &str,
    now_ms: u64,
) -> Payload {
    Payload {
        message_id,
        conversation: conversation_id(from, to),
        sender: *from,
        sent_at: now_ms,
        ttl: 0,
        content_type: content::TEXT,
        body: TextBody {
            sender: handle.to_string(),
            recipient: to_name.to_string(),
            text: text.to_string(),
        }
        .encode(),
    }
}

/// Starts a session with each claimed device (verified against `user`)
/// and seals `payload` to them. Returns the datagram and the devices.
pub fn seal<R: RngCore + CryptoRng>(
    rng: &mut R,
    device: &mut Device,
    user: &UserPublic,
    claimed: &[ClaimedPrekey],
    payload: &Payload,
) -> Result<(Vec<u8>, Vec<DeviceId>), sotto_proto::Error> {
    let mut to = Vec::new();
    for c in claimed {
        let bundle = PrekeyBundle {
            cert: DeviceCert::decode(&c.cert)?,
            prekey: SignedPrekey::decode(&c.prekey)?,
        };
        let verified = bundle.verify(user)?;
        device.start_session(rng, &verified)?;
        to.push(c.device);
    }
    let datagram = device.seal(rng, payload, &to)?;
    Ok((datagram, to))
}
