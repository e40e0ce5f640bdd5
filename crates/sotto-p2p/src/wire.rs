//! The frames of the peer protocol `/sotto/p2p/2`, and their codec.
//!
//! Every frame travels on one libp2p stream (inside Noise) with a `u32`
//! length prefix; the shell refuses a prefix over [`MAX_FRAME`] before it
//! allocates. Decoding is total and bounded (the reads of
//! `sotto_proto::codec`): every input gives a frame or [`Error::Malformed`],
//! never a panic or an allocation larger than the input. The layout is in
//! docs/protocol.md, "Peer to peer".

use sotto_proto::codec::{Reader, Writer};
use sotto_proto::{DeviceCert, SignedPrekey};

use crate::error::{Error, Result};

/// The version byte every frame starts with. Version 2 (`/sotto/p2p/2`):
/// a file is no longer followed by a SHA-256 (`file end`, tag 9, is gone);
/// version 1 peers do not negotiate the stream with version 2 ones.
pub const WIRE_VERSION: u8 = 2;
/// Largest datagram a session carries: far above a chat datagram, and it
/// bounds what one peer makes this node hold per frame.
pub const MAX_DATAGRAM: usize = 1024 * 1024;
/// File chunk size: large enough that the per-chunk AES-GCM and framing
/// cost is noise, small enough that a dropped connection loses little.
pub const CHUNK: usize = 256 * 1024;
/// Bytes of a sealed file-chunk frame before the file bytes: the sealed
/// frame's header, then the chunk's tag, file id, offset and length. A
/// sender reads file bytes into a buffer with this much room in front
/// ([`FileBytes`]), so the frame is built and sealed around them in place.
pub const CHUNK_FRAME_HEAD: usize = SEALED_HEADER + 1 + 16 + 8 + 4;
/// Bytes a file sender may have in flight beyond the receiver's last ack
/// (plus one chunk it may start before the limit): the receiver
/// disconnects a sender whose chunks go further, so an incoming transfer
/// never holds more than this in memory.
pub const MAX_FILE_WINDOW: u64 = 32 << 20;
/// Largest frame: a datagram (or a group delivery of one) with its headers
/// and the AES-GCM tag, rounded up. A file chunk frame is smaller.
pub const MAX_FRAME: usize = MAX_DATAGRAM + 1024;
const _: () = assert!(CHUNK_FRAME_HEAD + CHUNK + 16 <= MAX_FRAME);
/// Usernames as the client checks them (1-64 bytes).
pub const MAX_NAME: usize = 64;
/// Group titles.
pub const MAX_TITLE: usize = 64;
/// File names (one path component).
pub const MAX_FILE_NAME: usize = 255;
/// Group sessions one advertisement lists.
pub const MAX_ADVERTISED_GROUPS: usize = 16;
/// Members one roster lists.
pub const MAX_ROSTER: usize = 256;

/// A 16-byte id (session, file, group).
pub type Id = [u8; 16];

/// File bytes held inside a larger buffer: the frame they arrived in (from
/// `start` on, after the opened chunk's header) or the buffer a sender read
/// them into (after [`CHUNK_FRAME_HEAD`] bytes of room for the frame's
/// header). File bytes go from the link through the AEAD to the disk, and
/// from the disk through the AEAD to the link, with no copy. They are file
/// bytes, not secrets, and are not zeroized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileBytes {
    buf: Vec<u8>,
    start: usize,
}

impl FileBytes {
    /// The bytes of `buf` from `start` on (`start` is clamped to the end).
    pub fn new(buf: Vec<u8>, start: usize) -> FileBytes {
        let start = start.min(buf.len());
        FileBytes { buf, start }
    }

    /// The whole buffer and where the file bytes start in it.
    pub fn into_parts(self) -> (Vec<u8>, usize) {
        (self.buf, self.start)
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(buf: Vec<u8>) -> FileBytes {
        FileBytes { buf, start: 0 }
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// A group session as its host advertises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupAd {
    pub id: Id,
    pub title: String,
}

/// A member of a group session as the host lists it: the user key and
/// name it proved, and its device's certificate and prekey (each signed by
/// the member's own keys), so that members can seal datagrams for each
/// other's devices without a session of their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterMember {
    pub user: [u8; 32],
    pub name: String,
    pub cert: Option<DeviceCert>,
    pub prekey: Option<SignedPrekey>,
}

/// The device's proof of identity: its certificate (signed by the user
/// key) and the device key's signature binding the hello to this
/// connection's peer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub cert: DeviceCert,
    pub signature: [u8; 64],
}

/// First frame on every link, and resent before its advertisement expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The username the peer claims (checked against known contacts).
    pub name: String,
    /// Unix ms after which the advertisement (name and groups) is stale.
    pub expires_at: u64,
    pub groups: Vec<GroupAd>,
    pub proof: Option<Proof>,
}

/// A session request: the requester's ephemeral key, its certificate and,
/// optionally, a prekey for the device core's pairwise session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub ephemeral: [u8; 32],
    pub cert: DeviceCert,
    pub prekey: Option<SignedPrekey>,
    pub signature: [u8; 64],
}

/// The answer that opens the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept {
    pub request: u64,
    pub ephemeral: [u8; 32],
    pub prekey: Option<SignedPrekey>,
    pub signature: [u8; 64],
}

/// Why a request was refused; the requester is told which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The user said no.
    Declined = 1,
    /// The requester did not prove a user (no or bad certificate).
    Unverified = 2,
    /// The requester proved a user key other than the one known for the
    /// name it claims.
    IdentityMismatch = 3,
    /// Too many requests are waiting for an answer.
    TooManyPending = 4,
    /// The request was not answered in time.
    Expired = 5,
}

impl RejectReason {
    fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            1 => Self::Declined,
            2 => Self::Unverified,
            3 => Self::IdentityMismatch,
            4 => Self::TooManyPending,
            5 => Self::Expired,
            _ => return Err(Error::Malformed("reject reason")),
        })
    }
}

/// A frame on the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Request(Request),
    Accept(Accept),
    Reject {
        request: u64,
        reason: RejectReason,
    },
    /// A message inside a session: AES-256-GCM under the direction's key.
    Sealed {
        session: Id,
        counter: u64,
        ciphertext: Vec<u8>,
    },
}

/// What a sealed frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inner {
    /// Opaque bytes for the device core (a sotto datagram).
    Datagram(Vec<u8>),
    Close,
    /// A file of `size` bytes is coming, in chunks sealed in this session.
    FileOffer {
        id: Id,
        name: String,
        size: u64,
    },
    /// The receiver wants the file from `offset` (its first answer to an
    /// offer, and its resume after a link came back).
    FileWant {
        id: Id,
        offset: u64,
    },
    FileChunk {
        id: Id,
        offset: u64,
        data: Vec<u8>,
    },
    /// The receiver has written everything before `offset`.
    FileAck {
        id: Id,
        offset: u64,
    },
    /// The receiver has every byte of the file, in order, from chunks that
    /// opened in this session, and made it visible (`ok`), or gave up.
    FileResult {
        id: Id,
        ok: bool,
    },
    FileCancel {
        id: Id,
    },
    GroupInvite {
        group: Id,
        title: String,
    },
    GroupJoin {
        group: Id,
    },
    GroupLeave {
        group: Id,
    },
    GroupRoster {
        group: Id,
        title: String,
        members: Vec<RosterMember>,
    },
    /// A member's message for the group, to the host.
    GroupPost {
        group: Id,
        data: Vec<u8>,
    },
    /// The host hands a member's message on to the others.
    GroupDeliver {
        group: Id,
        from_user: [u8; 32],
        from_name: String,
        data: Vec<u8>,
    },
}

fn malformed(what: &'static str) -> impl Fn(sotto_proto::Error) -> Error {
    move |_| Error::Malformed(what)
}

fn read_str(r: &mut Reader<'_>, max: usize, what: &'static str) -> Result<String> {
    let len = r.u8().map_err(malformed(what))? as usize;
    if len > max {
        return Err(Error::Malformed(what));
    }
    let bytes = r.bytes(len).map_err(malformed(what))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Malformed(what))
}

/// Callers bound `s` (names, titles) before they build a frame.
fn write_str(w: &mut Writer, s: &str) {
    w.u8(s.len() as u8).bytes(s.as_bytes());
}

fn read_prekey(r: &mut Reader<'_>) -> Result<Option<SignedPrekey>> {
    match r.u8().map_err(malformed("prekey flag"))? {
        0 => Ok(None),
        1 => {
            let bytes = r.bytes(SignedPrekey::LEN).map_err(malformed("prekey"))?;
            Ok(Some(
                SignedPrekey::decode(bytes).map_err(malformed("prekey"))?,
            ))
        }
        _ => Err(Error::Malformed("prekey flag")),
    }
}

pub(crate) fn write_prekey(w: &mut Writer, prekey: &Option<SignedPrekey>) {
    match prekey {
        None => {
            w.u8(0);
        }
        Some(p) => {
            w.u8(1).bytes(&p.encode());
        }
    }
}

fn read_cert(r: &mut Reader<'_>) -> Result<DeviceCert> {
    let bytes = r.bytes(DeviceCert::LEN).map_err(malformed("certificate"))?;
    DeviceCert::decode(bytes).map_err(malformed("certificate"))
}

fn read_data(r: &mut Reader<'_>, max: usize, what: &'static str) -> Result<Vec<u8>> {
    Ok(r.var_bytes(max, what).map_err(malformed(what))?.to_vec())
}

impl Hello {
    /// The hello's fields before the proof: what the proof signs (with the
    /// peer id and the certificate).
    pub(crate) fn write_body(&self, w: &mut Writer) {
        write_str(w, &self.name);
        w.u64(self.expires_at).u8(self.groups.len() as u8);
        for g in &self.groups {
            w.bytes(&g.id);
            write_str(w, &g.title);
        }
    }
}

/// The bytes of a [`Frame::Sealed`] before its ciphertext: the length
/// field is patched by [`seal_frame_finish`].
pub(crate) fn sealed_frame_start(session: &Id, counter: u64, capacity: usize) -> Writer {
    let mut w = Writer::with_capacity(capacity + SEALED_HEADER);
    w.u8(WIRE_VERSION).u8(5).bytes(session).u64(counter).u32(0);
    w
}

/// Bytes of a sealed frame before its ciphertext.
pub(crate) const SEALED_HEADER: usize = 2 + 16 + 8 + 4;

/// Writes the ciphertext length (everything after the header).
pub(crate) fn seal_frame_finish(w: &mut Writer) {
    let len = (w.buf.len() - SEALED_HEADER) as u32;
    w.buf[SEALED_HEADER - 4..SEALED_HEADER].copy_from_slice(&len.to_be_bytes());
}

/// The session id and counter of a sealed frame, if `bytes` is one that
/// [`Frame::decode`] accepts (version, tag, length field equal to the rest,
/// within [`MAX_FRAME`]); its ciphertext is `bytes[SEALED_HEADER..]`. The
/// node opens a sealed frame in its own buffer with this, with no copy.
pub(crate) fn sealed_header(bytes: &[u8]) -> Option<(Id, u64)> {
    if bytes.len() > MAX_FRAME || bytes.len() < SEALED_HEADER {
        return None;
    }
    let mut r = Reader::new(&bytes[..SEALED_HEADER]);
    if r.u8().ok()? != WIRE_VERSION || r.u8().ok()? != 5 {
        return None;
    }
    let session = r.array().ok()?;
    let counter = r.u64().ok()?;
    let len = r.u32().ok()? as usize;
    (len == bytes.len() - SEALED_HEADER).then_some((session, counter))
}

/// Bytes of a file chunk message before its data: tag, file id, offset,
/// length.
pub(crate) const CHUNK_HEAD: usize = CHUNK_FRAME_HEAD - SEALED_HEADER;

/// The file id and offset of an opened file chunk message (`plain` starts
/// with tag 5), checked as [`Inner::decode`] checks it; its data is
/// `plain[CHUNK_HEAD..]`.
pub(crate) fn chunk_header(plain: &[u8]) -> Result<(Id, u64)> {
    let mut r = Reader::new(plain);
    if r.u8().map_err(malformed("message"))? != 5 {
        return Err(Error::Malformed("message tag"));
    }
    let id = r.array().map_err(malformed("id"))?;
    let offset = r.u64().map_err(malformed("offset"))?;
    r.var_bytes(CHUNK, "file chunk")
        .map_err(malformed("file chunk"))?;
    r.finish().map_err(malformed("message"))?;
    Ok((id, offset))
}

/// Writes the head of a sealed file-chunk frame (before the encryption of
/// `buf[SEALED_HEADER..]`) into `buf[..CHUNK_FRAME_HEAD]`, for `len` bytes of
/// data that follow it and the 16-byte tag that will.
pub(crate) fn write_chunk_frame_head(
    buf: &mut [u8],
    session: &Id,
    counter: u64,
    file: &Id,
    offset: u64,
    len: usize,
) {
    let mut w = Writer::with_capacity(CHUNK_FRAME_HEAD);
    w.u8(WIRE_VERSION)
        .u8(5)
        .bytes(session)
        .u64(counter)
        .u32((CHUNK_HEAD + len + 16) as u32);
    w.u8(5).bytes(file).u64(offset).u32(len as u32);
    buf[..CHUNK_FRAME_HEAD].copy_from_slice(&w.buf);
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.u8(WIRE_VERSION);
        match self {
            Frame::Hello(h) => {
                w.u8(1);
                h.write_body(&mut w);
                match &h.proof {
                    None => {
                        w.u8(0);
                    }
                    Some(p) => {
                        w.u8(1).bytes(&p.cert.encode()).bytes(&p.signature);
                    }
                }
            }
            Frame::Request(q) => {
                w.u8(2)
                    .u64(q.id)
                    .bytes(&q.ephemeral)
                    .bytes(&q.cert.encode());
                write_prekey(&mut w, &q.prekey);
                w.bytes(&q.signature);
            }
            Frame::Accept(a) => {
                w.u8(3).u64(a.request).bytes(&a.ephemeral);
                write_prekey(&mut w, &a.prekey);
                w.bytes(&a.signature);
            }
            Frame::Reject { request, reason } => {
                w.u8(4).u64(*request).u8(*reason as u8);
            }
            Frame::Sealed {
                session,
                counter,
                ciphertext,
            } => {
                w.buf.reserve(ciphertext.len() + 32);
                w.u8(5).bytes(session).u64(*counter).var_bytes(ciphertext);
            }
        }
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame> {
        if bytes.len() > MAX_FRAME {
            return Err(Error::Malformed("frame length"));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8().map_err(malformed("frame"))?;
        if version != WIRE_VERSION {
            return Err(Error::Malformed("frame version"));
        }
        let frame = match r.u8().map_err(malformed("frame"))? {
            1 => {
                let name = read_str(&mut r, MAX_NAME, "name")?;
                let expires_at = r.u64().map_err(malformed("hello"))?;
                let n = r.u8().map_err(malformed("hello"))? as usize;
                if n > MAX_ADVERTISED_GROUPS {
                    return Err(Error::Malformed("advertised groups"));
                }
                let mut groups = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = r.array().map_err(malformed("group id"))?;
                    let title = read_str(&mut r, MAX_TITLE, "group title")?;
                    groups.push(GroupAd { id, title });
                }
                let proof = match r.u8().map_err(malformed("proof flag"))? {
                    0 => None,
                    1 => Some(Proof {
                        cert: read_cert(&mut r)?,
                        signature: r.array().map_err(malformed("hello signature"))?,
                    }),
                    _ => return Err(Error::Malformed("proof flag")),
                };
                Frame::Hello(Hello {
                    name,
                    expires_at,
                    groups,
                    proof,
                })
            }
            2 => Frame::Request(Request {
                id: r.u64().map_err(malformed("request"))?,
                ephemeral: r.array().map_err(malformed("request"))?,
                cert: read_cert(&mut r)?,
                prekey: read_prekey(&mut r)?,
                signature: r.array().map_err(malformed("request signature"))?,
            }),
            3 => Frame::Accept(Accept {
                request: r.u64().map_err(malformed("accept"))?,
                ephemeral: r.array().map_err(malformed("accept"))?,
                prekey: read_prekey(&mut r)?,
                signature: r.array().map_err(malformed("accept signature"))?,
            }),
            4 => Frame::Reject {
                request: r.u64().map_err(malformed("reject"))?,
                reason: RejectReason::from_u8(r.u8().map_err(malformed("reject"))?)?,
            },
            5 => Frame::Sealed {
                session: r.array().map_err(malformed("sealed"))?,
                counter: r.u64().map_err(malformed("sealed"))?,
                ciphertext: read_data(&mut r, MAX_FRAME, "sealed")?,
            },
            _ => return Err(Error::Malformed("frame tag")),
        };
        r.finish().map_err(malformed("frame"))?;
        Ok(frame)
    }
}

impl Inner {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        self.encode_into(&mut w);
        w.buf
    }

    /// Appends the encoding to `w` (a sealed frame encrypts it in place).
    pub(crate) fn encode_into(&self, w: &mut Writer) {
        match self {
            Inner::Datagram(d) => {
                w.buf.reserve(d.len() + 8);
                w.u8(1).var_bytes(d);
            }
            Inner::Close => {
                w.u8(2);
            }
            Inner::FileOffer { id, name, size } => {
                w.u8(3).bytes(id);
                write_str(w, name);
                w.u64(*size);
            }
            Inner::FileWant { id, offset } => {
                w.u8(4).bytes(id).u64(*offset);
            }
            Inner::FileChunk { id, offset, data } => {
                w.buf.reserve(data.len() + 32);
                w.u8(5).bytes(id).u64(*offset).var_bytes(data);
            }
            Inner::FileAck { id, offset } => {
                w.u8(6).bytes(id).u64(*offset);
            }
            Inner::FileResult { id, ok } => {
                w.u8(7).bytes(id).u8(*ok as u8);
            }
            Inner::FileCancel { id } => {
                w.u8(8).bytes(id);
            }
            Inner::GroupInvite { group, title } => {
                w.u8(10).bytes(group);
                write_str(w, title);
            }
            Inner::GroupJoin { group } => {
                w.u8(11).bytes(group);
            }
            Inner::GroupLeave { group } => {
                w.u8(12).bytes(group);
            }
            Inner::GroupRoster {
                group,
                title,
                members,
            } => {
                w.u8(13).bytes(group);
                write_str(w, title);
                w.u16(members.len() as u16);
                for m in members {
                    w.bytes(&m.user);
                    write_str(w, &m.name);
                    match &m.cert {
                        Some(c) => {
                            w.u8(1).bytes(&c.encode());
                        }
                        None => {
                            w.u8(0);
                        }
                    }
                    write_prekey(w, &m.prekey);
                }
            }
            Inner::GroupPost { group, data } => {
                w.buf.reserve(data.len() + 32);
                w.u8(14).bytes(group).var_bytes(data);
            }
            Inner::GroupDeliver {
                group,
                from_user,
                from_name,
                data,
            } => {
                w.buf.reserve(data.len() + 128);
                w.u8(15).bytes(group).bytes(from_user);
                write_str(w, from_name);
                w.var_bytes(data);
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Inner> {
        let mut r = Reader::new(bytes);
        let id = |r: &mut Reader<'_>| -> Result<Id> { r.array().map_err(malformed("id")) };
        let u64_ = |r: &mut Reader<'_>| -> Result<u64> { r.u64().map_err(malformed("offset")) };
        let inner = match r.u8().map_err(malformed("message"))? {
            1 => Inner::Datagram(read_data(&mut r, MAX_DATAGRAM, "datagram")?),
            2 => Inner::Close,
            3 => Inner::FileOffer {
                id: id(&mut r)?,
                name: read_str(&mut r, MAX_FILE_NAME, "file name")?,
                size: u64_(&mut r)?,
            },
            4 => Inner::FileWant {
                id: id(&mut r)?,
                offset: u64_(&mut r)?,
            },
            5 => Inner::FileChunk {
                id: id(&mut r)?,
                offset: u64_(&mut r)?,
                data: read_data(&mut r, CHUNK, "file chunk")?,
            },
            6 => Inner::FileAck {
                id: id(&mut r)?,
                offset: u64_(&mut r)?,
            },
            7 => Inner::FileResult {
                id: id(&mut r)?,
                ok: match r.u8().map_err(malformed("file result"))? {
                    0 => false,
                    1 => true,
                    _ => return Err(Error::Malformed("file result")),
                },
            },
            8 => Inner::FileCancel { id: id(&mut r)? },
            // 9 was `file end` (a whole-file SHA-256) in version 1.
            10 => Inner::GroupInvite {
                group: id(&mut r)?,
                title: read_str(&mut r, MAX_TITLE, "group title")?,
            },
            11 => Inner::GroupJoin { group: id(&mut r)? },
            12 => Inner::GroupLeave { group: id(&mut r)? },
            13 => {
                let group = id(&mut r)?;
                let title = read_str(&mut r, MAX_TITLE, "group title")?;
                let n = r.u16().map_err(malformed("roster"))? as usize;
                if n > MAX_ROSTER {
                    return Err(Error::Malformed("roster size"));
                }
                let mut members = Vec::with_capacity(n.min(bytes.len() / 33));
                for _ in 0..n {
                    let user = r.array().map_err(malformed("roster"))?;
                    let name = read_str(&mut r, MAX_NAME, "member name")?;
                    let cert = match r.u8().map_err(malformed("certificate flag"))? {
                        0 => None,
                        1 => Some(read_cert(&mut r)?),
                        _ => return Err(Error::Malformed("certificate flag")),
                    };
                    members.push(RosterMember {
                        user,
                        name,
                        cert,
                        prekey: read_prekey(&mut r)?,
                    });
                }
                Inner::GroupRoster {
                    group,
                    title,
                    members,
                }
            }
            14 => Inner::GroupPost {
                group: id(&mut r)?,
                data: read_data(&mut r, MAX_DATAGRAM, "group message")?,
            },
            15 => Inner::GroupDeliver {
                group: id(&mut r)?,
                from_user: r.array().map_err(malformed("group sender"))?,
                from_name: read_str(&mut r, MAX_NAME, "group sender")?,
                data: read_data(&mut r, MAX_DATAGRAM, "group message")?,
            },
            _ => return Err(Error::Malformed("message tag")),
        };
        r.finish().map_err(malformed("message"))?;
        Ok(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{OsRng, RngCore};
    use sotto_proto::{DeviceKey, PrekeyKind, UserKey};

    fn samples() -> (Vec<Frame>, Vec<Inner>) {
        let user = UserKey::generate(&mut OsRng);
        let key = DeviceKey::generate(&mut OsRng);
        let cert = user.certify(&key.public_keys(), 7);
        let (prekey, _) = key.generate_prekey(&mut OsRng, 1, PrekeyKind::OneTime);
        let frames = vec![
            Frame::Hello(Hello {
                name: "alice".into(),
                expires_at: 9,
                groups: vec![GroupAd {
                    id: [1; 16],
                    title: "ops".into(),
                }],
                proof: Some(Proof {
                    cert,
                    signature: [2; 64],
                }),
            }),
            Frame::Request(Request {
                id: 3,
                ephemeral: [4; 32],
                cert,
                prekey: Some(prekey),
                signature: [5; 64],
            }),
            Frame::Accept(Accept {
                request: 3,
                ephemeral: [6; 32],
                prekey: None,
                signature: [7; 64],
            }),
            Frame::Reject {
                request: 3,
                reason: RejectReason::Expired,
            },
            Frame::Sealed {
                session: [8; 16],
                counter: 9,
                ciphertext: vec![10; 40],
            },
        ];
        let inners = vec![
            Inner::Datagram(vec![1, 2, 3]),
            Inner::Close,
            Inner::FileOffer {
                id: [1; 16],
                name: "a.pdf".into(),
                size: 5,
            },
            Inner::FileWant {
                id: [1; 16],
                offset: 2,
            },
            Inner::FileChunk {
                id: [1; 16],
                offset: 0,
                data: vec![9; 10],
            },
            Inner::FileAck {
                id: [1; 16],
                offset: 10,
            },
            Inner::FileResult {
                id: [1; 16],
                ok: true,
            },
            Inner::FileCancel { id: [1; 16] },
            Inner::GroupInvite {
                group: [3; 16],
                title: "ops".into(),
            },
            Inner::GroupJoin { group: [3; 16] },
            Inner::GroupLeave { group: [3; 16] },
            Inner::GroupRoster {
                group: [3; 16],
                title: "ops".into(),
                members: vec![
                    RosterMember {
                        user: [4; 32],
                        name: "bob".into(),
                        cert: Some(cert),
                        prekey: Some(prekey),
                    },
                    RosterMember {
                        user: [5; 32],
                        name: "carol".into(),
                        cert: None,
                        prekey: None,
                    },
                ],
            },
            Inner::GroupPost {
                group: [3; 16],
                data: vec![5],
            },
            Inner::GroupDeliver {
                group: [3; 16],
                from_user: [4; 32],
                from_name: "bob".into(),
                data: vec![6],
            },
        ];
        (frames, inners)
    }

    #[test]
    fn every_message_round_trips_and_every_strict_prefix_or_extension_is_refused() {
        let (frames, inners) = samples();
        for f in frames {
            let bytes = f.encode();
            assert_eq!(Frame::decode(&bytes).unwrap(), f);
            for n in 0..bytes.len() {
                assert!(Frame::decode(&bytes[..n]).is_err(), "{f:?} prefix {n}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Frame::decode(&longer).is_err());
        }
        for i in inners {
            let bytes = i.encode();
            assert_eq!(Inner::decode(&bytes).unwrap(), i);
            for n in 0..bytes.len() {
                assert!(Inner::decode(&bytes[..n]).is_err(), "{i:?} prefix {n}");
            }
        }
    }

    /// Decoding is total: random bytes and random flips of genuine frames
    /// give a value or an error, never a panic (and never allocate past
    /// the input: the reads are `sotto_proto::codec`'s).
    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let (frames, inners) = samples();
        let mut genuine: Vec<Vec<u8>> = frames.iter().map(Frame::encode).collect();
        genuine.extend(inners.iter().map(Inner::encode));
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                let mut b = vec![0u8; (OsRng.next_u32() % 600) as usize];
                OsRng.fill_bytes(&mut b);
                b
            } else {
                genuine[round % genuine.len()].clone()
            };
            if !bytes.is_empty() {
                let i = OsRng.next_u32() as usize % bytes.len();
                bytes[i] ^= 1 << (OsRng.next_u32() % 8);
            }
            let frame = Frame::decode(&bytes);
            // The node's fast path takes exactly the sealed frames that
            // decode, with the same session and counter.
            match (sealed_header(&bytes), &frame) {
                (
                    Some((s, c)),
                    Ok(Frame::Sealed {
                        session, counter, ..
                    }),
                ) => assert_eq!((s, c), (*session, *counter)),
                (None, Ok(Frame::Sealed { .. })) => panic!("a sealed frame missed"),
                (Some(_), _) => panic!("not a sealed frame: {bytes:?}"),
                (None, _) => {}
            }
            let inner = Inner::decode(&bytes);
            // And exactly the file chunks that decode.
            match (chunk_header(&bytes), &inner) {
                (Ok((i, o)), Ok(Inner::FileChunk { id, offset, .. })) => {
                    assert_eq!((i, o), (*id, *offset))
                }
                (Err(_), Ok(Inner::FileChunk { .. })) => panic!("a chunk missed"),
                (Ok(_), _) => panic!("not a chunk: {bytes:?}"),
                (Err(_), _) => {}
            }
        }
        // A length field claiming 4 GiB is refused before any allocation.
        let mut huge = vec![1u8];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Inner::decode(&huge).is_err());
    }
}
