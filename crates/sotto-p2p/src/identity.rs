//! Who a peer is: the hello that binds a libp2p peer id to a sotto device
//! certificate, and what this node concludes from it.
//!
//! The libp2p key of a node is ephemeral (made at start, never stored), so
//! a passive observer of mDNS cannot link two runs of one device. Noise
//! proves that the remote holds the secret of its peer id; the hello proves
//! that a sotto device vouches for that peer id: it carries the device
//! certificate (signed by the user key) and the device key's signature over
//! `"sotto/v1/p2p-hello" || 0x01 || peer id || hello fields || certificate`.
//! A hello cannot be replayed on another connection (another peer id), and
//! a certificate, which is public, proves nothing without that signature.

use std::collections::BTreeMap;

use libp2p::PeerId;
use sotto_proto::codec::Writer;
use sotto_proto::{verify_device_signature, DeviceCert, DeviceId, DeviceKey, UserPublic};

use crate::wire::{GroupAd, Hello, Proof, MAX_ADVERTISED_GROUPS, MAX_NAME};

const HELLO_CONTEXT: &[u8] = b"sotto/v1/p2p-hello";

/// This device, as the node presents it.
pub struct Identity {
    /// The username this device's user goes by (claimed in hellos).
    pub name: String,
    pub key: DeviceKey,
    pub cert: DeviceCert,
}

impl Identity {
    /// A fresh device key certified by `user` (a new device of that user).
    pub fn new_device<R: rand_core::RngCore + rand_core::CryptoRng>(
        rng: &mut R,
        name: &str,
        user: &sotto_proto::UserKey,
        created_at: u64,
    ) -> Identity {
        let key = DeviceKey::generate(rng);
        let cert = user.certify(&key.public_keys(), created_at);
        Identity {
            name: name.to_string(),
            key,
            cert,
        }
    }

    pub fn user(&self) -> UserPublic {
        self.cert.user
    }

    pub fn device(&self) -> DeviceId {
        self.cert.device
    }
}

/// How far this node trusts what a peer says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// The peer proved the user key this node knows for the claimed name.
    Verified,
    /// The peer proved a user key; the claimed name was not known here
    /// (trusted on first use once a session with it is accepted).
    FirstSeen,
    /// The peer proved a user key, but this node knows another key for the
    /// claimed name: it cannot open a session as that user.
    KeyMismatch,
    /// No proof, or a proof that does not verify: the name is a claim only.
    Unverified,
}

impl Trust {
    /// Whether a session request from this peer may be shown to the user.
    pub fn may_request(self) -> bool {
        matches!(self, Trust::Verified | Trust::FirstSeen)
    }
}

/// What this node knows about a connected peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The claimed username.
    pub name: String,
    pub trust: Trust,
    /// The proved user key and device (absent when unverified).
    pub user: Option<UserPublic>,
    pub device: Option<DeviceId>,
    pub cert: Option<DeviceCert>,
    /// Group sessions the peer hosts (as of its last hello).
    pub groups: Vec<GroupAd>,
    /// Unix ms after which the advertisement is stale.
    pub expires_at: u64,
}

fn signed_bytes(peer: &PeerId, hello: &Hello, cert: &DeviceCert) -> Vec<u8> {
    let mut w = Writer::with_capacity(512);
    let peer = peer.to_bytes();
    w.bytes(HELLO_CONTEXT)
        .u8(1)
        .u8(peer.len() as u8)
        .bytes(&peer);
    hello.write_body(&mut w);
    w.bytes(&cert.encode());
    w.buf
}

/// The hello this node sends on a link: `local` is this node's peer id.
pub fn make_hello(
    identity: &Identity,
    local: &PeerId,
    expires_at: u64,
    groups: Vec<GroupAd>,
) -> Hello {
    let mut hello = Hello {
        name: identity.name.clone(),
        expires_at,
        groups: groups.into_iter().take(MAX_ADVERTISED_GROUPS).collect(),
        proof: None,
    };
    let signature = identity
        .key
        .sign(&signed_bytes(local, &hello, &identity.cert));
    hello.proof = Some(Proof {
        cert: identity.cert,
        signature,
    });
    hello
}

/// Checks a hello received from `peer` (the Noise-authenticated peer id)
/// against the keys this node knows by name.
pub fn judge_hello(
    peer: &PeerId,
    hello: &Hello,
    known: &BTreeMap<String, UserPublic>,
) -> PeerIdentity {
    let proved = hello.proof.as_ref().and_then(|p| {
        let ok = p.cert.verify().is_ok()
            && verify_device_signature(
                &p.cert.device,
                &signed_bytes(peer, hello, &p.cert),
                &p.signature,
            )
            .is_ok();
        ok.then_some(p.cert)
    });
    let name_ok = valid_name(&hello.name);
    let trust = match (&proved, known.get(&hello.name)) {
        (None, _) => Trust::Unverified,
        _ if !name_ok => Trust::Unverified,
        (Some(cert), Some(user)) if cert.user == *user => Trust::Verified,
        (Some(_), Some(_)) => Trust::KeyMismatch,
        (Some(_), None) => Trust::FirstSeen,
    };
    PeerIdentity {
        name: hello.name.clone(),
        trust,
        user: proved.map(|c| c.user),
        device: proved.map(|c| c.device),
        cert: proved,
        groups: hello.groups.clone(),
        expires_at: hello.expires_at,
    }
}

/// Usernames as the client accepts them: 1-64 bytes of `a-z 0-9 . _ -`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}
