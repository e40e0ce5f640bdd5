//! What travels between members about a room, inside the payload of a
//! normal datagram (`content::ROOM_CONTROL`, conversation = group id):
//! entries with their message content, and the history request/answer of
//! the unknown-message and recover-lost-communications flows.
//!
//! ```text
//! RoomWire    version u8 (1) || tag u8, then
//!   1 Entry   entry: u32 len + bytes (<= MAX_ENTRY_LEN) || has_content u8 (0/1)
//!             [|| salt [16] || content_type u8 || u32 len + body (<= MAX_CONTENT)]
//!   2 Request group [32] || has_message_id u8 [|| message_id [16]]
//!             || n u8 (<= MAX_HAVE) || n x head [32]
//!   3 Answer  group [32] || more u8 (0/1) || n u32 (<= MAX_ANSWER_ENTRIES) || n x (u32 len + entry)
//!             || g u32 (<= MAX_ANSWER_ENTRIES) || g x grant
//!   grant     1 || entry [32] || datagram_id [32] || message_key [32]
//!           | 2 || entry [32] || salt [16] || content_type u8 || u32 len + body
//! ```

use sha2::Digest;

use crate::codec::{Reader, Writer};
use crate::datagram::{self, Datagram, Payload, MAX_BODY};
use crate::error::{Error, Result};
use crate::keys::DeviceCert;
use crate::PROTOCOL_VERSION;

use super::entry::{message_digest, EntryHash, GroupId, MessageId, MAX_ENTRY_LEN};

/// Largest message body in a room entry.
pub const MAX_CONTENT: usize = MAX_BODY - MAX_ENTRY_LEN - 64;
/// Most heads a history request names.
pub const MAX_HAVE: usize = 64;
/// Most entries (and grants) one answer carries; ask again with the new
/// heads for more.
pub const MAX_ANSWER_ENTRIES: usize = 100_000;
/// Encoded size of entries and grants [`super::RoomLog::answer`] puts in one
/// answer, so that it fits one datagram payload.
pub const ANSWER_BUDGET: usize = MAX_BODY - 4096;
const MIN_ENTRY_LEN: usize = 4;
const MIN_GRANT_LEN: usize = 1 + 32 + 16 + 1 + 4;

/// A room message's content, sealed beside its standard entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageContent {
    /// Random; makes the entry's digest useless for confirming guesses.
    pub salt: [u8; 16],
    /// As [`crate::content`] (e.g. `TEXT`).
    pub content_type: u8,
    pub body: Vec<u8>,
}

impl MessageContent {
    /// The digest its standard entry carries.
    pub fn digest(&self) -> [u8; 32] {
        message_digest(&self.salt, self.content_type, &self.body)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.body.len() > MAX_CONTENT {
            return Err(Error::TooLarge {
                what: "room message",
            });
        }
        Ok(())
    }

    fn write(&self, w: &mut Writer) {
        w.bytes(&self.salt)
            .u8(self.content_type)
            .var_bytes(&self.body);
    }

    fn read(r: &mut Reader<'_>) -> Result<MessageContent> {
        Ok(MessageContent {
            salt: r.array()?,
            content_type: r.u8()?,
            body: r.var_bytes(MAX_CONTENT, "room message")?.to_vec(),
        })
    }
}

/// Asks a member for what the requester lacks: sent to the sender of a
/// message that could not be placed (unknown room, unknown sender, missing
/// parents; `message_id` names it), or to any member to recover history
/// (`message_id` absent, `have` empty on a new device).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRequest {
    pub group: GroupId,
    pub message_id: Option<MessageId>,
    /// The requester's log heads ([`super::RoomLog::heads`]), at most
    /// [`MAX_HAVE`]: the answer leaves out their ancestors.
    pub have: Vec<EntryHash>,
}

/// How to read one message the requester is entitled to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Fetch the datagram by id from the server, open it with the key.
    Key {
        entry: EntryHash,
        datagram_id: [u8; 32],
        message_key: [u8; 32],
    },
    /// The content itself (when the answerer has no key or datagram id,
    /// e.g. past the server's retention window); checked by the requester
    /// against the digest signed by the original sender.
    Content {
        entry: EntryHash,
        content: MessageContent,
    },
}

impl Grant {
    /// Its size in a [`RoomWire::Answer`].
    pub fn encoded_len(&self) -> usize {
        match self {
            Grant::Key { .. } => 1 + 32 + 32 + 32,
            Grant::Content { content, .. } => 1 + 32 + 16 + 1 + 4 + content.body.len(),
        }
    }
}

/// The answer to a [`HistoryRequest`]: the signed entries the requester
/// lacks (control history and message entries, so it can rebuild the log
/// and its head) and grants for the messages it is entitled to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryAnswer {
    pub group: GroupId,
    /// More entries remain: ask again with the new heads.
    pub more: bool,
    /// Encoded entries, in the answerer's resolved order.
    pub entries: Vec<Vec<u8>>,
    pub grants: Vec<Grant>,
}

/// A room protocol message, the body of a `ROOM_CONTROL` payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomWire {
    /// An entry, with its content when it is a standard entry.
    Entry {
        entry: Vec<u8>,
        content: Option<MessageContent>,
    },
    Request(HistoryRequest),
    Answer(HistoryAnswer),
}

impl RoomWire {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::default();
        w.u8(PROTOCOL_VERSION);
        match self {
            RoomWire::Entry { entry, content } => {
                if entry.len() > MAX_ENTRY_LEN {
                    return Err(Error::TooLarge { what: "room entry" });
                }
                w.u8(1).var_bytes(entry);
                match content {
                    None => {
                        w.u8(0);
                    }
                    Some(c) => {
                        c.check()?;
                        w.u8(1);
                        c.write(&mut w);
                    }
                }
            }
            RoomWire::Request(req) => {
                if req.have.len() > MAX_HAVE {
                    return Err(Error::TooLarge {
                        what: "request heads",
                    });
                }
                w.u8(2).bytes(&req.group.0);
                match &req.message_id {
                    None => w.u8(0),
                    Some(id) => w.u8(1).bytes(id),
                };
                w.u8(req.have.len() as u8);
                for h in &req.have {
                    w.bytes(&h.0);
                }
            }
            RoomWire::Answer(a) => {
                if a.entries.len() > MAX_ANSWER_ENTRIES || a.grants.len() > MAX_ANSWER_ENTRIES {
                    return Err(Error::TooLarge {
                        what: "answer entries",
                    });
                }
                w.u8(3)
                    .bytes(&a.group.0)
                    .u8(a.more as u8)
                    .u32(a.entries.len() as u32);
                for e in &a.entries {
                    if e.len() > MAX_ENTRY_LEN {
                        return Err(Error::TooLarge { what: "room entry" });
                    }
                    w.var_bytes(e);
                }
                w.u32(a.grants.len() as u32);
                for g in &a.grants {
                    match g {
                        Grant::Key {
                            entry,
                            datagram_id,
                            message_key,
                        } => {
                            w.u8(1)
                                .bytes(&entry.0)
                                .bytes(datagram_id)
                                .bytes(message_key);
                        }
                        Grant::Content { entry, content } => {
                            content.check()?;
                            w.u8(2).bytes(&entry.0);
                            content.write(&mut w);
                        }
                    }
                }
            }
        }
        if w.buf.len() > MAX_BODY {
            return Err(Error::TooLarge { what: "room wire" });
        }
        Ok(w.buf)
    }

    /// Total and bounded: every input gives a value or an error.
    pub fn decode(bytes: &[u8]) -> Result<RoomWire> {
        if bytes.len() > MAX_BODY {
            return Err(Error::TooLarge { what: "room wire" });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(Error::UnknownVersion(version));
        }
        let out = match r.u8()? {
            1 => {
                let entry = r.var_bytes(MAX_ENTRY_LEN, "room entry")?.to_vec();
                let content = match r.u8()? {
                    0 => None,
                    1 => Some(MessageContent::read(&mut r)?),
                    _ => {
                        return Err(Error::Malformed {
                            what: "room wire flags",
                        })
                    }
                };
                RoomWire::Entry { entry, content }
            }
            2 => {
                let group = GroupId(r.array()?);
                let message_id = match r.u8()? {
                    0 => None,
                    1 => Some(r.array()?),
                    _ => {
                        return Err(Error::Malformed {
                            what: "room wire flags",
                        })
                    }
                };
                let n = r.u8()? as usize;
                if n > MAX_HAVE {
                    return Err(Error::TooLarge {
                        what: "request heads",
                    });
                }
                let mut have = Vec::with_capacity(n);
                for _ in 0..n {
                    have.push(EntryHash(r.array()?));
                }
                RoomWire::Request(HistoryRequest {
                    group,
                    message_id,
                    have,
                })
            }
            3 => {
                let group = GroupId(r.array()?);
                let more = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(Error::Malformed {
                            what: "room wire flags",
                        })
                    }
                };
                let n = count(&mut r, bytes.len(), MIN_ENTRY_LEN, "answer entries")?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(r.var_bytes(MAX_ENTRY_LEN, "room entry")?.to_vec());
                }
                let g = count(&mut r, bytes.len(), MIN_GRANT_LEN, "answer grants")?;
                let mut grants = Vec::with_capacity(g);
                for _ in 0..g {
                    grants.push(match r.u8()? {
                        1 => Grant::Key {
                            entry: EntryHash(r.array()?),
                            datagram_id: r.array()?,
                            message_key: r.array()?,
                        },
                        2 => Grant::Content {
                            entry: EntryHash(r.array()?),
                            content: MessageContent::read(&mut r)?,
                        },
                        _ => return Err(Error::Malformed { what: "grant kind" }),
                    });
                }
                RoomWire::Answer(HistoryAnswer {
                    group,
                    more,
                    entries,
                    grants,
                })
            }
            _ => {
                return Err(Error::Malformed {
                    what: "room wire tag",
                })
            }
        };
        r.finish()?;
        Ok(out)
    }
}

/// A `u32` count, bounded, and only as large as the bytes left can hold.
fn count(r: &mut Reader<'_>, total: usize, min_len: usize, what: &'static str) -> Result<usize> {
    let n = r.u32()? as usize;
    if n > MAX_ANSWER_ENTRIES {
        return Err(Error::TooLarge { what });
    }
    if total.saturating_sub(r.position()) < n * min_len {
        return Err(Error::Truncated);
    }
    Ok(n)
}

/// The server's id for a datagram: SHA-256 of its bytes (what
/// `SendResponse::datagram_id` gives, hex), to keep in [`super::LocalMeta`].
pub fn datagram_id(datagram_bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(datagram_bytes).into()
}

/// Opens a datagram with a message key handed over in a [`Grant::Key`]
/// (the requester has no wrapped entry of its own in it): checks the
/// sender's certificate and the datagram signature, then decrypts. The
/// caller then passes the payload to [`super::RoomLog::receive_delivery`].
pub fn open_with_message_key(
    datagram_bytes: &[u8],
    message_key: &[u8; 32],
) -> Result<(DeviceCert, Payload)> {
    let dg = Datagram::decode(datagram_bytes)?;
    dg.verify()?;
    let payload = datagram::open_payload(message_key, &dg)?;
    if payload.sender != dg.sender.user {
        return Err(Error::SenderMismatch);
    }
    Ok((dg.sender, payload))
}
