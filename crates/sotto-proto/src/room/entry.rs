//! Room log entries: what they say, how they are encoded, signed and hashed.
//!
//! Encoding of a signed entry (all integers big-endian):
//!
//! ```text
//! version      u8 = 1
//! group        [32]
//! message_id   [16]
//! n_parents    u8 (<= MAX_PARENTS), then n_parents x [32], strictly ascending
//! sender       device certificate (169 bytes, as in the datagram)
//! sender_name  [32]   the sender's username hash
//! timestamp    u64    server master clock, ms
//! kind         u8     1 authoritative control, 2 non-authoritative control, 3 standard
//! body         kind 3: digest [32]; kind 1/2: op tag u8 + op fields (see `Op`)
//! signature    [64]   Ed25519 by the sender device over "sotto/v1/room-entry" || all of the above
//!                     (for a create, with the group field zeroed)
//! ```
//!
//! A create's group id is SHA-256 over `"sotto/v1/room-group"` and the whole
//! signed create with its group field zeroed ([`GroupId::of_create`]).
//!
//! The entry hash is SHA-256 over these exact bytes. Decoding is canonical
//! (sorted parents and members, known tags and flags only, no trailing
//! bytes), so an entry has exactly one encoding and one hash.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::keys::{DeviceCert, DeviceKey, UserPublic};
use crate::PROTOCOL_VERSION;

use super::Ttl;

/// Most parents an entry may name.
pub const MAX_PARENTS: usize = 16;
/// Longest room title, in bytes of UTF-8.
pub const MAX_TITLE: usize = 256;
/// Longest room description, in bytes of UTF-8.
pub const MAX_DESCRIPTION: usize = 4096;
/// Most members a room may have.
pub const MAX_MEMBERS: usize = 5000;
const MEMBER_LEN: usize = 32 + 32 + 1;
const FIXED_LEN: usize = 1 + 32 + 16 + 1 + DeviceCert::LEN + 32 + 8 + 1 + 64;
/// Largest encoded entry (a create naming [`MAX_MEMBERS`] members).
pub const MAX_ENTRY_LEN: usize = FIXED_LEN
    + MAX_PARENTS * 32
    + 1
    + 32
    + 4
    + MAX_TITLE
    + 4
    + MAX_DESCRIPTION
    + 4
    + 2
    + MAX_MEMBERS * MEMBER_LEN;

const ENTRY_CONTEXT: &[u8] = b"sotto/v1/room-entry";
const GROUP_CONTEXT: &[u8] = b"sotto/v1/room-group";
const DIGEST_CONTEXT: &[u8] = b"sotto/v1/room-message";

macro_rules! id32 {
    ($(#[$m:meta])* $t:ident, $name:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $t(pub [u8; 32]);
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
id32!(
    /// A room's identifier: SHA-256 over `"sotto/v1/room-group"` and the
    /// whole signed create entry with its group field zeroed ([`GroupId::of_create`]).
    /// It commits to everything the create says (creator, salt, time,
    /// members, signature): any other create, even by the same creator with
    /// the same salt, names another room.
    GroupId,
    "GroupId"
);
id32!(
    /// SHA-256 over an encoded signed entry.
    EntryHash,
    "EntryHash"
);

/// A message id, as in [`crate::Payload::message_id`].
pub type MessageId = [u8; 16];

impl GroupId {
    /// The group id a create entry names: `SHA-256("sotto/v1/room-group" ||
    /// encoded create with the group field zeroed)`, signature included.
    /// The create's signature covers the same zeroed encoding, so the
    /// signed entry fixes the id and the id fixes the entry.
    pub fn of_create(entry: &Entry) -> GroupId {
        let mut bytes = entry.encode();
        bytes[GROUP_AT].fill(0);
        let mut h = Sha256::new();
        h.update(GROUP_CONTEXT);
        h.update(&bytes);
        GroupId(h.finalize().into())
    }
}

/// Where the group id sits in an encoded entry (after the version byte).
const GROUP_AT: core::ops::Range<usize> = 1..33;

impl EntryHash {
    /// The hash of an encoded entry.
    pub fn of(bytes: &[u8]) -> EntryHash {
        EntryHash(Sha256::digest(bytes).into())
    }
}

/// The three entry types of the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Changes the room; takes effect only from a current admin.
    Authoritative = 1,
    /// Leave: from any member, about that member only.
    NonAuthoritative = 2,
    /// A chat message.
    Standard = 3,
}

/// A member as the create entry lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user: UserPublic,
    /// The member's username hash, as the creator's directory gave it.
    pub name: [u8; 32],
    pub admin: bool,
}

/// A room's initial state, carried whole by the create entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    pub title: String,
    pub description: String,
    pub ttl: Ttl,
    /// Every member, the creator included (as an admin). Encoded sorted by
    /// user key; [`RoomConfig::normalize`] sorts and dedupes.
    pub members: Vec<Member>,
}

impl RoomConfig {
    /// Sorts members by user key and merges duplicates (admin if any copy is).
    pub fn normalize(&mut self) {
        self.members.sort_by_key(|m| m.user);
        let mut out: Vec<Member> = Vec::with_capacity(self.members.len());
        for m in self.members.drain(..) {
            match out.last_mut() {
                Some(last) if last.user == m.user => last.admin |= m.admin,
                _ => out.push(m),
            }
        }
        self.members = out;
    }
}

/// What a control entry does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Tag 1: `salt [32] || title || description || ttl u32 || n u16 ||
    /// n x (user [32] || name [32] || flags u8 (bit 0 = admin))`. Strings are
    /// `u32` length + UTF-8.
    Create { salt: [u8; 32], config: RoomConfig },
    /// Tag 2.
    SetTitle(String),
    /// Tag 3.
    SetDescription(String),
    /// Tag 4: seconds, `u32`.
    SetTtl(Ttl),
    /// Tag 5: `user [32] || name [32]`.
    AddMember { user: UserPublic, name: [u8; 32] },
    /// Tag 6.
    RemoveMember(UserPublic),
    /// Tag 7.
    GrantAdmin(UserPublic),
    /// Tag 8.
    RevokeAdmin(UserPublic),
    /// Tag 9: the room ends; later entries are rejected.
    Delete,
    /// Tag 10, non-authoritative: the sender leaves.
    Leave,
}

impl Op {
    pub fn kind(&self) -> EntryKind {
        match self {
            Op::Leave => EntryKind::NonAuthoritative,
            _ => EntryKind::Authoritative,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Op::Create { .. } => 1,
            Op::SetTitle(_) => 2,
            Op::SetDescription(_) => 3,
            Op::SetTtl(_) => 4,
            Op::AddMember { .. } => 5,
            Op::RemoveMember(_) => 6,
            Op::GrantAdmin(_) => 7,
            Op::RevokeAdmin(_) => 8,
            Op::Delete => 9,
            Op::Leave => 10,
        }
    }

    /// Checks the bounds the decoder enforces, so that what is signed can
    /// always be decoded again.
    pub(crate) fn check(&self) -> Result<()> {
        match self {
            Op::Create { config, .. } => {
                check_str(&config.title, MAX_TITLE, "room title")?;
                check_str(&config.description, MAX_DESCRIPTION, "room description")?;
                if config.members.len() > MAX_MEMBERS {
                    return Err(Error::TooLarge {
                        what: "room members",
                    });
                }
                if config.members.windows(2).any(|w| w[0].user >= w[1].user) {
                    return Err(Error::Malformed {
                        what: "room member order",
                    });
                }
                Ok(())
            }
            Op::SetTitle(s) => check_str(s, MAX_TITLE, "room title"),
            Op::SetDescription(s) => check_str(s, MAX_DESCRIPTION, "room description"),
            _ => Ok(()),
        }
    }

    fn write(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            Op::Create { salt, config } => {
                w.bytes(salt)
                    .var_bytes(config.title.as_bytes())
                    .var_bytes(config.description.as_bytes())
                    .u32(config.ttl.0)
                    .u16(config.members.len() as u16);
                for m in &config.members {
                    w.bytes(&m.user.0).bytes(&m.name).u8(m.admin as u8);
                }
            }
            Op::SetTitle(s) | Op::SetDescription(s) => {
                w.var_bytes(s.as_bytes());
            }
            Op::SetTtl(t) => {
                w.u32(t.0);
            }
            Op::AddMember { user, name } => {
                w.bytes(&user.0).bytes(name);
            }
            Op::RemoveMember(u) | Op::GrantAdmin(u) | Op::RevokeAdmin(u) => {
                w.bytes(&u.0);
            }
            Op::Delete | Op::Leave => {}
        }
    }

    fn read(r: &mut Reader<'_>, total: usize) -> Result<Op> {
        Ok(match r.u8()? {
            1 => {
                let salt = r.array()?;
                let title = read_str(r, MAX_TITLE, "room title")?;
                let description = read_str(r, MAX_DESCRIPTION, "room description")?;
                let ttl = Ttl(r.u32()?);
                let n = r.u16()? as usize;
                if n > MAX_MEMBERS {
                    return Err(Error::TooLarge {
                        what: "room members",
                    });
                }
                // Allocate only for members whose bytes are present.
                if total.saturating_sub(r.position()) < n * MEMBER_LEN {
                    return Err(Error::Truncated);
                }
                let mut members: Vec<Member> = Vec::with_capacity(n);
                for _ in 0..n {
                    let user = UserPublic(r.array()?);
                    let name = r.array()?;
                    let admin = match r.u8()? {
                        0 => false,
                        1 => true,
                        _ => {
                            return Err(Error::Malformed {
                                what: "room member flags",
                            })
                        }
                    };
                    if members.last().is_some_and(|m| m.user >= user) {
                        return Err(Error::Malformed {
                            what: "room member order",
                        });
                    }
                    members.push(Member { user, name, admin });
                }
                Op::Create {
                    salt,
                    config: RoomConfig {
                        title,
                        description,
                        ttl,
                        members,
                    },
                }
            }
            2 => Op::SetTitle(read_str(r, MAX_TITLE, "room title")?),
            3 => Op::SetDescription(read_str(r, MAX_DESCRIPTION, "room description")?),
            4 => Op::SetTtl(Ttl(r.u32()?)),
            5 => Op::AddMember {
                user: UserPublic(r.array()?),
                name: r.array()?,
            },
            6 => Op::RemoveMember(UserPublic(r.array()?)),
            7 => Op::GrantAdmin(UserPublic(r.array()?)),
            8 => Op::RevokeAdmin(UserPublic(r.array()?)),
            9 => Op::Delete,
            10 => Op::Leave,
            _ => return Err(Error::Malformed { what: "room op" }),
        })
    }
}

fn check_str(s: &str, max: usize, what: &'static str) -> Result<()> {
    if s.len() > max {
        Err(Error::TooLarge { what })
    } else {
        Ok(())
    }
}

fn read_str(r: &mut Reader<'_>, max: usize, what: &'static str) -> Result<String> {
    let b = r.var_bytes(max, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| Error::Malformed { what })
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A control entry (authoritative or not, by its op).
    Control(Op),
    /// A standard entry: the salted digest of the message content (see
    /// [`super::MessageContent::digest`]). The content itself, its message
    /// key and its datagram id live beside the entry, outside the hash.
    Message { digest: [u8; 32] },
}

impl Body {
    pub fn kind(&self) -> EntryKind {
        match self {
            Body::Control(op) => op.kind(),
            Body::Message { .. } => EntryKind::Standard,
        }
    }
}

/// An entry before it is signed. [`Draft::sign`] makes the [`Entry`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub group: GroupId,
    pub message_id: MessageId,
    /// The log heads the sender had seen; sorted and deduped by `sign`.
    pub parents: Vec<EntryHash>,
    /// The sender's username hash.
    pub sender_name: [u8; 32],
    /// Server master clock, ms.
    pub timestamp: u64,
    pub body: Body,
}

impl Draft {
    /// Signs with the device key; `cert` must be that device's certificate.
    pub fn sign(mut self, key: &DeviceKey, cert: &DeviceCert) -> Result<Entry> {
        if cert.device != key.id() {
            return Err(Error::BadCertificate);
        }
        self.parents.sort();
        self.parents.dedup();
        if self.parents.len() > MAX_PARENTS {
            return Err(Error::TooLarge {
                what: "entry parents",
            });
        }
        if let Body::Control(op) = &self.body {
            op.check()?;
        }
        let mut entry = Entry {
            group: self.group,
            message_id: self.message_id,
            parents: self.parents,
            sender: *cert,
            sender_name: self.sender_name,
            timestamp: self.timestamp,
            body: self.body,
            signature: [0; 64],
        };
        let mut w = Writer::with_capacity(ENTRY_CONTEXT.len() + FIXED_LEN + 64);
        w.bytes(ENTRY_CONTEXT);
        entry.write_unsigned(&mut w);
        if entry.is_create() {
            // A create is signed with its group zeroed: the group id is
            // derived from the signed create ([`GroupId::of_create`]).
            w.buf[ENTRY_CONTEXT.len() + GROUP_AT.start..ENTRY_CONTEXT.len() + GROUP_AT.end].fill(0);
        }
        entry.signature = key.sign(&w.buf);
        Ok(entry)
    }
}

/// A signed room log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub group: GroupId,
    pub message_id: MessageId,
    /// Strictly ascending.
    pub parents: Vec<EntryHash>,
    /// The sending device's certificate: user key and device key. Any member
    /// verifies the entry with it alone.
    pub sender: DeviceCert,
    /// The sender's username hash; must match the one the room lists for
    /// the sender's user key.
    pub sender_name: [u8; 32],
    /// Server master clock, ms.
    pub timestamp: u64,
    pub body: Body,
    pub signature: [u8; 64],
}

impl Entry {
    pub fn kind(&self) -> EntryKind {
        self.body.kind()
    }

    pub fn is_create(&self) -> bool {
        matches!(self.body, Body::Control(Op::Create { .. }))
    }

    /// The sending user.
    pub fn user(&self) -> UserPublic {
        self.sender.user
    }

    fn write_unsigned(&self, w: &mut Writer) {
        w.u8(PROTOCOL_VERSION)
            .bytes(&self.group.0)
            .bytes(&self.message_id)
            .u8(self.parents.len() as u8);
        for p in &self.parents {
            w.bytes(&p.0);
        }
        self.sender.write(w);
        w.bytes(&self.sender_name)
            .u64(self.timestamp)
            .u8(self.kind() as u8);
        match &self.body {
            Body::Message { digest } => {
                w.bytes(digest);
            }
            Body::Control(op) => op.write(w),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(FIXED_LEN + self.parents.len() * 32 + 8);
        self.write_unsigned(&mut w);
        w.bytes(&self.signature);
        w.buf
    }

    /// Decodes without checking signatures. Total and bounded.
    pub fn decode(bytes: &[u8]) -> Result<Entry> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(Error::TooLarge { what: "room entry" });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(Error::UnknownVersion(version));
        }
        let group = GroupId(r.array()?);
        let message_id = r.array()?;
        let n = r.u8()? as usize;
        if n > MAX_PARENTS {
            return Err(Error::TooLarge {
                what: "entry parents",
            });
        }
        let mut parents: Vec<EntryHash> = Vec::with_capacity(n);
        for _ in 0..n {
            let p = EntryHash(r.array()?);
            if parents.last().is_some_and(|last| *last >= p) {
                return Err(Error::Malformed {
                    what: "entry parent order",
                });
            }
            parents.push(p);
        }
        let sender = DeviceCert::read(&mut r)?;
        let sender_name = r.array()?;
        let timestamp = r.u64()?;
        let kind = r.u8()?;
        let body = match kind {
            3 => Body::Message { digest: r.array()? },
            1 | 2 => {
                let op = Op::read(&mut r, bytes.len())?;
                if op.kind() as u8 != kind {
                    return Err(Error::Malformed { what: "entry kind" });
                }
                Body::Control(op)
            }
            _ => return Err(Error::Malformed { what: "entry kind" }),
        };
        let signature = r.array()?;
        r.finish()?;
        Ok(Entry {
            group,
            message_id,
            parents,
            sender,
            sender_name,
            timestamp,
            body,
            signature,
        })
    }

    /// Checks the certificate (signed by the user key it names) and the
    /// entry signature (by the certified device). `encoded` must be this
    /// entry's encoding (as decoded from or returned by [`Entry::encode`]).
    pub fn verify(&self, encoded: &[u8]) -> Result<()> {
        self.sender.verify()?;
        let key = VerifyingKey::from_bytes(&self.sender.device.0).map_err(|_| Error::BadKey)?;
        self.verify_with(&key, encoded)
    }

    /// The signature check alone, with an already-checked device key.
    pub(crate) fn verify_with(&self, key: &VerifyingKey, encoded: &[u8]) -> Result<()> {
        let unsigned = encoded
            .len()
            .checked_sub(64)
            .map(|n| &encoded[..n])
            .ok_or(Error::Truncated)?;
        let mut msg = Vec::with_capacity(ENTRY_CONTEXT.len() + unsigned.len());
        msg.extend_from_slice(ENTRY_CONTEXT);
        msg.extend_from_slice(unsigned);
        if self.is_create() {
            let at = ENTRY_CONTEXT.len();
            msg.get_mut(at + GROUP_AT.start..at + GROUP_AT.end)
                .ok_or(Error::Truncated)?
                .fill(0);
        }
        key.verify_strict(&msg, &Signature::from_bytes(&self.signature))
            .map_err(|_| Error::BadSignature)
    }

    /// Checks that hold of an entry on its own, whatever else the log holds:
    /// only a create has no parents; a create names the group derived from
    /// itself ([`GroupId::of_create`]), and lists its sender, under the
    /// sender's name, as admin.
    pub(crate) fn check_standalone(&self) -> Result<()> {
        match &self.body {
            Body::Control(Op::Create { config, .. }) => {
                if !self.parents.is_empty() {
                    return Err(Error::Malformed {
                        what: "create with parents",
                    });
                }
                if GroupId::of_create(self) != self.group {
                    return Err(Error::Malformed {
                        what: "room group id",
                    });
                }
                let me = config.members.iter().find(|m| m.user == self.sender.user);
                match me {
                    Some(m) if m.admin && m.name == self.sender_name => Ok(()),
                    _ => Err(Error::Malformed {
                        what: "room creator",
                    }),
                }
            }
            _ if self.parents.is_empty() => Err(Error::Malformed {
                what: "entry without parents",
            }),
            _ => Ok(()),
        }
    }
}

/// The salted digest a standard entry carries: `SHA-256("sotto/v1/room-message"
/// || salt [16] || content_type u8 || u32 len || body)`. The salt travels
/// only inside the sealed payload, so once the content is purged the digest
/// left in the log cannot be used to confirm a guess of a short message.
pub fn message_digest(salt: &[u8; 16], content_type: u8, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DIGEST_CONTEXT);
    h.update(salt);
    h.update([content_type]);
    h.update((body.len() as u32).to_be_bytes());
    h.update(body);
    h.finalize().into()
}
