//! The client message body: what the client puts in a payload's `body`
//! (docs/protocol.md, "Client message body"). Small, versioned, binary.

use sotto_proto::UserPublic;

/// Version byte of every body this build writes.
pub const BODY_VERSION: u8 = 1;
/// Longest username, in bytes.
pub const MAX_USERNAME: usize = 64;
/// Client content type of a names hint ([`NamesBody`]).
pub const ROOM_NAMES: u8 = 5;
/// Client content type of a message to a peer-to-peer group session
/// ([`GroupTextBody`]).
pub const GROUP_TEXT: u8 = 6;

/// A text message (payload content type `TEXT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextBody {
    /// The sending user's name; receivers check that it hashes to a user
    /// whose key is the one that certified the sending device.
    pub sender: String,
    /// The recipient user's name (lets the sender's own devices file the
    /// copy they receive under the right conversation).
    pub recipient: String,
    pub text: String,
}

/// One contact handed to a newly linked device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncContact {
    pub username: String,
    pub user_key: UserPublic,
    pub verified: bool,
}

/// Link sync (payload content type `LINK_SYNC`): sent by the approving
/// device to a newly linked one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSyncBody {
    pub username: String,
    pub contacts: Vec<SyncContact>,
    pub blocked: Vec<String>,
}

/// A names hint (content type [`ROOM_NAMES`]): the usernames behind a
/// room's member hashes. Sent with each create and add, and before each
/// history answer; a receiver keeps a name only under its own hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamesBody(pub Vec<String>);

/// A message to a peer-to-peer group session (content type
/// [`GROUP_TEXT`]). Receivers take it only as delivered inside that group
/// by its host, from a current member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTextBody {
    /// The sending user's name (checked like a text's sender).
    pub sender: String,
    /// The group session's id.
    pub group: [u8; 16],
    /// Its title (at most 64 bytes).
    pub title: String,
    pub text: String,
}

struct W(Vec<u8>);

impl W {
    fn name(&mut self, s: &str) {
        debug_assert!(s.len() <= 255);
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn name(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        if n > MAX_USERNAME {
            return None;
        }
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

impl TextBody {
    /// `01 | len sender | len recipient | UTF-8 text (rest)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(
            3 + self.sender.len() + self.recipient.len() + self.text.len(),
        ));
        w.0.push(BODY_VERSION);
        w.name(&self.sender);
        w.name(&self.recipient);
        w.0.extend_from_slice(self.text.as_bytes());
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Option<TextBody> {
        let mut r = R(bytes);
        if r.u8()? != BODY_VERSION {
            return None;
        }
        let sender = r.name()?;
        let recipient = r.name()?;
        let text = String::from_utf8(r.0.to_vec()).ok()?;
        Some(TextBody {
            sender,
            recipient,
            text,
        })
    }
}

impl GroupTextBody {
    /// `01 | len sender | group id (16) | len title | UTF-8 text (rest)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(
            19 + self.sender.len() + self.title.len() + self.text.len(),
        ));
        w.0.push(BODY_VERSION);
        w.name(&self.sender);
        w.0.extend_from_slice(&self.group);
        w.name(&self.title);
        w.0.extend_from_slice(self.text.as_bytes());
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Option<GroupTextBody> {
        let mut r = R(bytes);
        if r.u8()? != BODY_VERSION {
            return None;
        }
        let sender = r.name()?;
        let group: [u8; 16] = r.take(16)?.try_into().ok()?;
        let title = r.name()?;
        let text = String::from_utf8(r.0.to_vec()).ok()?;
        Some(GroupTextBody {
            sender,
            group,
            title,
            text,
        })
    }
}

impl LinkSyncBody {
    /// `01 | len username | u16 n, n × (len name | 32 key | u8 verified) |
    /// u16 m, m × len name`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::new());
        w.0.push(BODY_VERSION);
        w.name(&self.username);
        w.0.extend_from_slice(&(self.contacts.len() as u16).to_be_bytes());
        for c in &self.contacts {
            w.name(&c.username);
            w.0.extend_from_slice(&c.user_key.0);
            w.0.push(u8::from(c.verified));
        }
        w.0.extend_from_slice(&(self.blocked.len() as u16).to_be_bytes());
        for b in &self.blocked {
            w.name(b);
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Option<LinkSyncBody> {
        let mut r = R(bytes);
        if r.u8()? != BODY_VERSION {
            return None;
        }
        let username = r.name()?;
        let n = r.u16()?;
        let mut contacts = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let username = r.name()?;
            let key: [u8; 32] = r.take(32)?.try_into().ok()?;
            let verified = match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            contacts.push(SyncContact {
                username,
                user_key: UserPublic(key),
                verified,
            });
        }
        let m = r.u16()?;
        let mut blocked = Vec::with_capacity(m as usize);
        for _ in 0..m {
            blocked.push(r.name()?);
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(LinkSyncBody {
            username,
            contacts,
            blocked,
        })
    }
}

impl NamesBody {
    /// `01 | u16 n | n x len name`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(vec![BODY_VERSION]);
        w.0.extend_from_slice(&(self.0.len() as u16).to_be_bytes());
        for n in &self.0 {
            w.name(n);
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Option<NamesBody> {
        let mut r = R(bytes);
        if r.u8()? != BODY_VERSION {
            return None;
        }
        let n = r.u16()?;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(r.name()?);
        }
        r.0.is_empty().then_some(NamesBody(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let b = TextBody {
            sender: "alice".into(),
            recipient: "bob".into(),
            text: "hi ☃".into(),
        };
        let enc = b.encode();
        assert_eq!(enc[0], 1);
        assert_eq!(TextBody::decode(&enc).unwrap(), b);
        assert!(TextBody::decode(&enc[..3]).is_none());
        let mut v2 = enc.clone();
        v2[0] = 2;
        assert!(TextBody::decode(&v2).is_none());
    }

    #[test]
    fn group_text_round_trip() {
        let b = GroupTextBody {
            sender: "alice".into(),
            group: [7; 16],
            title: "ops".into(),
            text: "standup in 5".into(),
        };
        let enc = b.encode();
        assert_eq!(GroupTextBody::decode(&enc).unwrap(), b);
        for cut in 0..20 {
            assert!(GroupTextBody::decode(&enc[..cut]).is_none(), "{cut}");
        }
        let mut v2 = enc;
        v2[0] = 2;
        assert!(GroupTextBody::decode(&v2).is_none());
    }

    #[test]
    fn link_sync_round_trip() {
        let b = LinkSyncBody {
            username: "bob".into(),
            contacts: vec![SyncContact {
                username: "alice".into(),
                user_key: UserPublic([3; 32]),
                verified: true,
            }],
            blocked: vec!["carol".into()],
        };
        let enc = b.encode();
        assert_eq!(LinkSyncBody::decode(&enc).unwrap(), b);
        let mut long = enc.clone();
        long.push(0);
        assert!(LinkSyncBody::decode(&long).is_none());
        assert!(LinkSyncBody::decode(&enc[..enc.len() - 1]).is_none());
    }

    #[test]
    fn names_round_trip() {
        let b = NamesBody(vec!["alice".into(), "bob".into()]);
        let enc = b.encode();
        assert_eq!(NamesBody::decode(&enc).unwrap(), b);
        assert!(NamesBody::decode(&enc[..enc.len() - 1]).is_none());
        let mut long = enc;
        long.push(1);
        assert!(NamesBody::decode(&long).is_none());
    }
}
