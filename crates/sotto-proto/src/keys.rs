//! Identities: the user key, device keys and their certificate, signed
//! prekeys, and the prekey bundle a sender verifies before first contact.
//!
//! Trust runs one way: user key -> device certificate -> prekey signature ->
//! datagram signature. Types make the order hard to skip: a
//! [`VerifiedBundle`] exists only after [`PrekeyBundle::verify`] checked the
//! whole chain against the user key the caller expected.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey as DhPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::PROTOCOL_VERSION;

const CERT_CONTEXT: &[u8] = b"sotto/v1/device-cert";
const PREKEY_CONTEXT: &[u8] = b"sotto/v1/prekey";
const REMOVAL_CONTEXT: &[u8] = b"sotto/v1/remove-device";

/// What the user key signs to remove one of its devices: a context of its
/// own (so the signature can never pass for a certificate), the device and
/// the time.
fn removal_bytes(device: &DeviceId, time_ms: u64) -> Vec<u8> {
    let mut w = Writer::with_capacity(REMOVAL_CONTEXT.len() + 41);
    w.bytes(REMOVAL_CONTEXT).u8(PROTOCOL_VERSION);
    w.bytes(&device.0).u64(time_ms);
    w.buf
}

/// A user's long-term public signing key (Ed25519). Users are identified to
/// each other by this key; safety numbers are computed from it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserPublic(pub [u8; 32]);

/// A device's identifier: its Ed25519 public signing key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub [u8; 32]);

macro_rules! hex_debug {
    ($t:ty, $name:literal) => {
        impl core::fmt::Debug for $t {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, concat!($name, "("))?;
                for b in &self.0[..8] {
                    write!(f, "{b:02x}")?;
                }
                write!(f, "…)")
            }
        }
    };
}
hex_debug!(UserPublic, "UserPublic");
hex_debug!(DeviceId, "DeviceId");

fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey> {
    VerifyingKey::from_bytes(bytes).map_err(|_| Error::BadKey)
}

/// The user's secret signing key. It certifies devices.
pub struct UserKey(pub(crate) SigningKey);

impl UserKey {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        UserKey(SigningKey::generate(rng))
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        UserKey(SigningKey::from_bytes(bytes))
    }

    /// The secret, for the encrypted local store. Zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> UserPublic {
        UserPublic(self.0.verifying_key().to_bytes())
    }

    /// Signs a certificate binding `device` (its signing and X25519 keys) to
    /// this user.
    pub fn certify(&self, device: &DevicePublicKeys, created_at: u64) -> DeviceCert {
        let mut cert = DeviceCert {
            user: self.public(),
            device: device.id,
            dh: device.dh,
            created_at,
            signature: [0; 64],
        };
        cert.signature = self.0.sign(&cert.signed_bytes()).to_bytes();
        cert
    }

    /// Signs the removal of `device` from this user, at `time_ms`.
    pub fn sign_removal(&self, device: &DeviceId, time_ms: u64) -> [u8; 64] {
        self.0.sign(&removal_bytes(device, time_ms)).to_bytes()
    }
}

impl UserPublic {
    /// Checks a [`UserKey::sign_removal`] signature.
    pub fn verify_removal(
        &self,
        device: &DeviceId,
        time_ms: u64,
        signature: &[u8; 64],
    ) -> Result<()> {
        verifying_key(&self.0)?
            .verify_strict(
                &removal_bytes(device, time_ms),
                &Signature::from_bytes(signature),
            )
            .map_err(|_| Error::BadSignature)
    }
}

/// The public half of a device's keys, as a new device shows them to the
/// device that certifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePublicKeys {
    pub id: DeviceId,
    pub dh: [u8; 32],
}

/// A device's secret keys: Ed25519 for signing, X25519 for agreement.
pub struct DeviceKey {
    pub(crate) sign: SigningKey,
    pub(crate) dh: StaticSecret,
}

impl DeviceKey {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        DeviceKey {
            sign: SigningKey::generate(rng),
            dh: StaticSecret::random_from_rng(rng),
        }
    }

    pub fn id(&self) -> DeviceId {
        DeviceId(self.sign.verifying_key().to_bytes())
    }

    pub fn public_keys(&self) -> DevicePublicKeys {
        DevicePublicKeys {
            id: self.id(),
            dh: DhPublic::from(&self.dh).to_bytes(),
        }
    }

    /// Both secrets (signing then agreement), for the encrypted local store.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        out[..32].copy_from_slice(&self.sign.to_bytes());
        out[32..].copy_from_slice(self.dh.as_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        let mut sign = Zeroizing::new([0u8; 32]);
        sign.copy_from_slice(&bytes[..32]);
        let mut dh = [0u8; 32];
        dh.copy_from_slice(&bytes[32..]);
        DeviceKey {
            sign: SigningKey::from_bytes(&sign),
            dh: StaticSecret::from(dh),
        }
    }

    /// Signs arbitrary bytes with the device key (used for request
    /// authentication by the client).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.sign.sign(msg).to_bytes()
    }

    /// A new prekey with its signature and the secret to keep.
    pub fn generate_prekey<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        id: u32,
        kind: PrekeyKind,
    ) -> (SignedPrekey, PrekeySecret) {
        let secret = StaticSecret::random_from_rng(rng);
        let mut prekey = SignedPrekey {
            id,
            kind,
            public: DhPublic::from(&secret).to_bytes(),
            signature: [0; 64],
        };
        prekey.signature = self.sign.sign(&prekey.signed_bytes(&self.id())).to_bytes();
        (prekey, PrekeySecret { id, kind, secret })
    }

    /// The signed public half of a prekey this device holds (the same bytes
    /// as when it was made: Ed25519 signatures are deterministic).
    pub fn sign_prekey(&self, secret: &PrekeySecret) -> SignedPrekey {
        let mut prekey = SignedPrekey {
            id: secret.id,
            kind: secret.kind,
            public: DhPublic::from(&secret.secret).to_bytes(),
            signature: [0; 64],
        };
        prekey.signature = self.sign.sign(&prekey.signed_bytes(&self.id())).to_bytes();
        prekey
    }
}

/// Verifies an Ed25519 signature made by a device (request authentication).
pub fn verify_device_signature(device: &DeviceId, msg: &[u8], signature: &[u8; 64]) -> Result<()> {
    verifying_key(&device.0)?
        .verify_strict(msg, &Signature::from_bytes(signature))
        .map_err(|_| Error::BadSignature)
}

/// The user key's signature over a device's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCert {
    pub user: UserPublic,
    pub device: DeviceId,
    pub dh: [u8; 32],
    /// Milliseconds since the Unix epoch, by the certifying device's clock.
    pub created_at: u64,
    pub signature: [u8; 64],
}

impl DeviceCert {
    /// Encoded size: version, user, device, dh, created_at, signature.
    pub const LEN: usize = 1 + 32 + 32 + 32 + 8 + 64;

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(CERT_CONTEXT.len() + Self::LEN);
        w.bytes(CERT_CONTEXT).u8(PROTOCOL_VERSION);
        w.bytes(&self.user.0)
            .bytes(&self.device.0)
            .bytes(&self.dh)
            .u64(self.created_at);
        w.buf
    }

    /// Checks the signature under the user key the certificate names.
    pub fn verify(&self) -> Result<()> {
        verifying_key(&self.user.0)?
            .verify_strict(
                &self.signed_bytes(),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| Error::BadCertificate)
    }

    /// Checks the signature and that the user key is the one expected.
    pub fn verify_for(&self, expected: &UserPublic) -> Result<()> {
        if self.user != *expected {
            return Err(Error::BadCertificate);
        }
        self.verify()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        self.write(&mut w);
        w.buf
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u8(PROTOCOL_VERSION)
            .bytes(&self.user.0)
            .bytes(&self.device.0)
            .bytes(&self.dh);
        w.u64(self.created_at).bytes(&self.signature);
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let cert = Self::read(&mut r)?;
        r.finish()?;
        Ok(cert)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(Error::UnknownVersion(version));
        }
        Ok(DeviceCert {
            user: UserPublic(r.array()?),
            device: DeviceId(r.array()?),
            dh: r.array()?,
            created_at: r.u64()?,
            signature: r.array()?,
        })
    }
}

/// One-time prekeys are served once and erased after first use; the reserve
/// (last-resort) prekey is used when the pool is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrekeyKind {
    OneTime = 1,
    Reserve = 2,
}

impl PrekeyKind {
    pub(crate) fn from_u8(v: u8) -> Result<Self> {
        match v {
            1 => Ok(PrekeyKind::OneTime),
            2 => Ok(PrekeyKind::Reserve),
            _ => Err(Error::Malformed {
                what: "prekey kind",
            }),
        }
    }
}

/// A prekey's public half, signed by its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedPrekey {
    pub id: u32,
    pub kind: PrekeyKind,
    pub public: [u8; 32],
    pub signature: [u8; 64],
}

impl SignedPrekey {
    pub const LEN: usize = 4 + 1 + 32 + 64;

    fn signed_bytes(&self, device: &DeviceId) -> Vec<u8> {
        let mut w = Writer::with_capacity(PREKEY_CONTEXT.len() + 72);
        w.bytes(PREKEY_CONTEXT)
            .u8(PROTOCOL_VERSION)
            .bytes(&device.0);
        w.u32(self.id).u8(self.kind as u8).bytes(&self.public);
        w.buf
    }

    /// Checks the signature under `device`'s key.
    pub fn verify(&self, device: &DeviceId) -> Result<()> {
        verifying_key(&device.0)?
            .verify_strict(
                &self.signed_bytes(device),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| Error::BadPrekeySignature)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        w.u32(self.id)
            .u8(self.kind as u8)
            .bytes(&self.public)
            .bytes(&self.signature);
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let prekey = SignedPrekey {
            id: r.u32()?,
            kind: PrekeyKind::from_u8(r.u8()?)?,
            public: r.array()?,
            signature: r.array()?,
        };
        r.finish()?;
        Ok(prekey)
    }
}

/// A prekey's secret half, kept by its device until used.
pub struct PrekeySecret {
    pub id: u32,
    pub kind: PrekeyKind,
    pub(crate) secret: StaticSecret,
}

impl PrekeySecret {
    /// `id`, `kind`, secret: for the encrypted local store.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(37);
        w.u32(self.id)
            .u8(self.kind as u8)
            .bytes(self.secret.as_bytes());
        Zeroizing::new(w.buf)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let id = r.u32()?;
        let kind = PrekeyKind::from_u8(r.u8()?)?;
        let secret = StaticSecret::from(r.array::<32>()?);
        r.finish()?;
        Ok(PrekeySecret { id, kind, secret })
    }
}

/// What a sender fetches to start a session with a device it has never
/// talked to: the device's certificate and one of its prekeys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrekeyBundle {
    pub cert: DeviceCert,
    pub prekey: SignedPrekey,
}

impl PrekeyBundle {
    /// Verifies user key -> device certificate -> prekey signature.
    pub fn verify(&self, expected_user: &UserPublic) -> Result<VerifiedBundle> {
        self.cert.verify_for(expected_user)?;
        self.prekey.verify(&self.cert.device)?;
        Ok(VerifiedBundle(*self))
    }
}

/// A bundle whose chain of signatures has been checked.
#[derive(Clone, Copy, Debug)]
pub struct VerifiedBundle(PrekeyBundle);

impl VerifiedBundle {
    pub fn bundle(&self) -> &PrekeyBundle {
        &self.0
    }
}
