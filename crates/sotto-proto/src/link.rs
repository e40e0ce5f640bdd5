//! Binding a device link to the code the user carries from the new device
//! to the approving one (docs/protocol.md, "Linking a device").
//!
//! The new device draws a [`LinkSecret`] (26 symbols of a 32-letter
//! alphabet: 130 bits) and shows it in the link code; it never goes to the
//! server. Two keys come from it by HKDF-SHA-256: one MACs the new device's
//! keys in its link request (so the approving device knows the request it
//! read is the one of the device showing the code), the other encrypts the
//! approval (AES-256-GCM, bound to the link id and the new device's keys),
//! so only someone who holds the code can write an approval the new device
//! opens. Inside, the approval carries the device certificate and the link
//! sync, signed together by the user key ([`UserKey::sign_link_approval`]).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use ed25519_dalek::Signature;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::keys::{DeviceCert, DevicePublicKeys, UserKey, UserPublic};
use crate::PROTOCOL_VERSION;

/// Symbols in a link secret.
pub const LINK_SECRET_LEN: usize = 26;
/// The symbols: lowercase letters and digits without look-alikes (no `l`,
/// `o`, `0`, `1`), 32 of them, so each carries 5 bits.
pub const LINK_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// Largest sealed approval (nonce, ciphertext, tag).
pub const MAX_SEALED_APPROVAL: usize = 512 * 1024;
/// Largest link id bound into a link (the server's are 10 characters).
pub const MAX_LINK_ID: usize = 128;

const KDF_SALT: &[u8] = b"sotto/v1/link";
const PROOF_INFO: &[u8] = b"sotto/v1/link/request-proof";
const SEAL_INFO: &[u8] = b"sotto/v1/link/approval-key";
const PROOF_CONTEXT: &[u8] = b"sotto/v1/link-request";
const SEAL_CONTEXT: &[u8] = b"sotto/v1/link-approval";
const SIGN_CONTEXT: &[u8] = b"sotto/v1/link-approval-signature";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The secret half of a link code. Zeroized on drop; compared only through
/// the keys derived from it.
pub struct LinkSecret(Zeroizing<[u8; LINK_SECRET_LEN]>);

impl LinkSecret {
    /// A fresh secret from `rng` (each symbol uniform: 130 bits in all).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut raw = Zeroizing::new([0u8; LINK_SECRET_LEN]);
        rng.fill_bytes(&mut raw[..]);
        let mut s = Zeroizing::new([0u8; LINK_SECRET_LEN]);
        for (out, b) in s.iter_mut().zip(raw.iter()) {
            *out = LINK_ALPHABET[(*b & 31) as usize];
        }
        LinkSecret(s)
    }

    /// The secret as typed (case-insensitive); `None` unless it is
    /// [`LINK_SECRET_LEN`] symbols of [`LINK_ALPHABET`].
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != LINK_SECRET_LEN {
            return None;
        }
        let mut s = Zeroizing::new([0u8; LINK_SECRET_LEN]);
        for (out, b) in s.iter_mut().zip(bytes) {
            let b = b.to_ascii_lowercase();
            if !LINK_ALPHABET.contains(&b) {
                return None;
            }
            *out = b;
        }
        Some(LinkSecret(s))
    }

    /// The symbols, to put in the code shown to the user.
    pub fn text(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.iter().map(|b| *b as char).collect())
    }

    fn key(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), &self.0[..]);
        let mut k = Zeroizing::new([0u8; 32]);
        hk.expand(info, &mut k[..])
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        k
    }

    fn proof_mac(&self, device: &DevicePublicKeys) -> Hmac<Sha256> {
        let key = self.key(PROOF_INFO);
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key[..]).expect("HMAC takes any key length");
        mac.update(PROOF_CONTEXT);
        mac.update(&[PROTOCOL_VERSION]);
        mac.update(&device.id.0);
        mac.update(&device.dh);
        mac
    }

    /// The new device's proof, in its link request, that it holds this
    /// secret: a MAC over its keys.
    pub fn request_proof(&self, device: &DevicePublicKeys) -> [u8; 32] {
        self.proof_mac(device).finalize().into_bytes().into()
    }

    /// Checks a request proof (in constant time): the waiting device's
    /// keys are those of the device that showed this code.
    pub fn check_request_proof(&self, device: &DevicePublicKeys, proof: &[u8; 32]) -> Result<()> {
        self.proof_mac(device)
            .verify_slice(proof)
            .map_err(|_| Error::LinkMismatch)
    }

    /// Encrypts an approval (see [`LinkApproval::encode`]) for the device
    /// `device` waiting under `link_id`: `nonce (12) | ciphertext | tag`.
    pub fn seal_approval<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        link_id: &str,
        device: &DevicePublicKeys,
        approval: &[u8],
    ) -> Result<Vec<u8>> {
        let aad = seal_aad(link_id, device)?;
        if approval.len() + NONCE_LEN + TAG_LEN > MAX_SEALED_APPROVAL {
            return Err(Error::TooLarge { what: "approval" });
        }
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let key = self.key(SEAL_INFO);
        let cipher = Aes256Gcm::new((&*key).into());
        let mut out = Vec::with_capacity(NONCE_LEN + approval.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(approval);
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[NONCE_LEN..])
            .map_err(|_| Error::TooLarge { what: "approval" })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts an approval sealed by [`LinkSecret::seal_approval`] for
    /// this link and device. [`Error::LinkMismatch`] unless it was sealed
    /// with this secret, for this link id and these keys.
    pub fn open_approval(
        &self,
        link_id: &str,
        device: &DevicePublicKeys,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() > MAX_SEALED_APPROVAL {
            return Err(Error::TooLarge { what: "approval" });
        }
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::LinkMismatch);
        }
        let aad = seal_aad(link_id, device)?;
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let key = self.key(SEAL_INFO);
        let cipher = Aes256Gcm::new((&*key).into());
        let mut plain = Zeroizing::new(body.to_vec());
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                &aad,
                &mut plain[..],
                Tag::from_slice(tag),
            )
            .map_err(|_| Error::LinkMismatch)?;
        Ok(plain)
    }
}

fn link_id_bytes(w: &mut Writer, link_id: &str) -> Result<()> {
    if link_id.is_empty() || link_id.len() > MAX_LINK_ID {
        return Err(Error::Malformed { what: "link id" });
    }
    w.u8(link_id.len() as u8).bytes(link_id.as_bytes());
    Ok(())
}

fn seal_aad(link_id: &str, device: &DevicePublicKeys) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(SEAL_CONTEXT.len() + 2 + link_id.len() + 64);
    w.bytes(SEAL_CONTEXT).u8(PROTOCOL_VERSION);
    link_id_bytes(&mut w, link_id)?;
    w.bytes(&device.id.0).bytes(&device.dh);
    Ok(w.buf)
}

/// What the user key signs in an approval: the link, the certificate it
/// issues and a digest of the link sync it hands over.
fn signed_approval(link_id: &str, cert: &DeviceCert, sync: &[u8]) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(SIGN_CONTEXT.len() + 2 + link_id.len() + 200);
    w.bytes(SIGN_CONTEXT).u8(PROTOCOL_VERSION);
    link_id_bytes(&mut w, link_id)?;
    cert.write(&mut w);
    w.bytes(&Sha256::digest(sync));
    Ok(w.buf)
}

impl UserKey {
    /// Signs an approval: `cert` (made by this key) and the link sync
    /// `sync` for the device waiting under `link_id`.
    pub fn sign_link_approval(
        &self,
        link_id: &str,
        cert: &DeviceCert,
        sync: &[u8],
    ) -> Result<[u8; 64]> {
        use ed25519_dalek::Signer;
        Ok(self
            .0
            .sign(&signed_approval(link_id, cert, sync)?)
            .to_bytes())
    }
}

/// The plaintext of an approval:
/// `u8 version | certificate | 64 signature | link sync (rest)`.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkApproval {
    pub cert: DeviceCert,
    /// [`UserKey::sign_link_approval`] by `cert.user`.
    pub signature: [u8; 64],
    /// The link sync body (the device core's format), opaque here.
    pub sync: Vec<u8>,
}

impl LinkApproval {
    /// An approval signed by `user_key`, which must have made `cert`.
    pub fn new(user_key: &UserKey, link_id: &str, cert: DeviceCert, sync: Vec<u8>) -> Result<Self> {
        let signature = user_key.sign_link_approval(link_id, &cert, &sync)?;
        Ok(LinkApproval {
            cert,
            signature,
            sync,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1 + DeviceCert::LEN + 64 + self.sync.len());
        w.u8(PROTOCOL_VERSION);
        self.cert.write(&mut w);
        w.bytes(&self.signature).bytes(&self.sync);
        w.buf
    }

    /// Decodes (bounded: the input is at most a sealed approval's size)
    /// without checking signatures; see [`LinkApproval::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_SEALED_APPROVAL {
            return Err(Error::TooLarge { what: "approval" });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(Error::UnknownVersion(version));
        }
        let cert = DeviceCert::read(&mut r)?;
        let signature = r.array()?;
        let sync = r.bytes(bytes.len() - r.position())?.to_vec();
        Ok(LinkApproval {
            cert,
            signature,
            sync,
        })
    }

    /// Checks the whole chain for the device `device` waiting under
    /// `link_id`: the certificate is for exactly these keys and signed by
    /// the user key it names, and that user key signed this certificate
    /// and this link sync for this link. Returns the user key.
    pub fn verify(&self, link_id: &str, device: &DevicePublicKeys) -> Result<UserPublic> {
        if self.cert.device != device.id || self.cert.dh != device.dh {
            return Err(Error::BadCertificate);
        }
        self.cert.verify()?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.cert.user.0)
            .map_err(|_| Error::BadKey)?;
        key.verify_strict(
            &signed_approval(link_id, &self.cert, &self.sync)?,
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| Error::BadSignature)?;
        Ok(self.cert.user)
    }
}

impl core::fmt::Debug for LinkApproval {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LinkApproval")
            .field("cert", &self.cert)
            .field("sync_len", &self.sync.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DeviceKey;
    use rand_core::OsRng;

    fn setup() -> (LinkSecret, DevicePublicKeys, UserKey) {
        (
            LinkSecret::generate(&mut OsRng),
            DeviceKey::generate(&mut OsRng).public_keys(),
            UserKey::generate(&mut OsRng),
        )
    }

    #[test]
    fn secrets_parse_back_and_are_distinct() {
        let s = LinkSecret::generate(&mut OsRng);
        let text = s.text();
        assert_eq!(text.len(), LINK_SECRET_LEN);
        let back = LinkSecret::parse(&text.to_uppercase()).unwrap();
        assert_eq!(back.0, s.0);
        assert_ne!(LinkSecret::generate(&mut OsRng).0, s.0);
        assert!(LinkSecret::parse(&text[1..]).is_none());
        assert!(LinkSecret::parse(&format!("0{}", &text[1..])).is_none());
    }

    #[test]
    fn request_proof_binds_secret_and_keys() {
        let (s, dev, _) = setup();
        let proof = s.request_proof(&dev);
        s.check_request_proof(&dev, &proof).unwrap();
        let other = DeviceKey::generate(&mut OsRng).public_keys();
        assert_eq!(
            s.check_request_proof(&other, &proof),
            Err(Error::LinkMismatch)
        );
        let stale = LinkSecret::generate(&mut OsRng);
        assert_eq!(
            stale.check_request_proof(&dev, &proof),
            Err(Error::LinkMismatch)
        );
    }

    #[test]
    fn approval_opens_only_with_its_secret_link_and_keys() {
        let (s, dev, user) = setup();
        let cert = user.certify(&dev, 7);
        let approval = LinkApproval::new(&user, "abc", cert, b"sync".to_vec()).unwrap();
        let sealed = s
            .seal_approval(&mut OsRng, "abc", &dev, &approval.encode())
            .unwrap();
        let plain = s.open_approval("abc", &dev, &sealed).unwrap();
        let back = LinkApproval::decode(&plain).unwrap();
        assert_eq!(back, approval);
        assert_eq!(back.verify("abc", &dev).unwrap(), user.public());
        // Another link id, other keys, another secret: refused.
        assert!(s.open_approval("abd", &dev, &sealed).is_err());
        let other = DeviceKey::generate(&mut OsRng).public_keys();
        assert!(s.open_approval("abc", &other, &sealed).is_err());
        let stale = LinkSecret::generate(&mut OsRng);
        assert!(stale.open_approval("abc", &dev, &sealed).is_err());
        // The signature covers the link and the sync.
        assert!(back.verify("abd", &dev).is_err());
        let mut swapped = back.clone();
        swapped.sync = b"other".to_vec();
        assert_eq!(swapped.verify("abc", &dev), Err(Error::BadSignature));
        // A certificate from another user key with the first one's signature.
        let mallory = UserKey::generate(&mut OsRng);
        let mut forged = back;
        forged.cert = mallory.certify(&dev, 7);
        assert_eq!(forged.verify("abc", &dev), Err(Error::BadSignature));
    }

    #[test]
    fn decoding_is_total() {
        for n in 0..300 {
            let _ = LinkApproval::decode(&vec![1u8; n]);
        }
    }
}
