//! What a peer-to-peer shell needs of the core beyond what every transport
//! uses: the prekey a peer hands over in its session handshake, the keys a
//! device made with no server publishes when it registers later, and
//! messages to group sessions (sealed by their author for every member's
//! device, relayed by the group's host, taken in only as delivered inside
//! that group from a current member).

use sha2::{Digest, Sha256};
use sotto_proto::{username_hash, DeviceCert, PrekeyKind, SignedPrekey, UserPublic};

use crate::body::{GroupTextBody, GROUP_TEXT};
use crate::deliver::{Check, Conversation, Deliver, Draft, SendText, Target};
use crate::ids::{check_username, peer_name, random_id};
use crate::machine::Machine;
use crate::ops::{Job, Op};
use crate::request::Directory;
use crate::store::{ChangeSet, Message};
use crate::{Error, Result};

/// A group session as the transport that delivered a datagram knows it:
/// its id, its title and the user keys of its current members (the host
/// included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupScope {
    pub id: [u8; 16],
    pub title: String,
    pub members: Vec<UserPublic>,
}

/// A member of a group session to seal a message for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    pub name: String,
    pub user: UserPublic,
}

/// What a device made with no server publishes when it registers: its
/// certificate, its one-time prekeys and its reserve prekey.
#[derive(Clone, Debug)]
pub struct Registration {
    pub username: String,
    pub cert: DeviceCert,
    pub one_time: Vec<SignedPrekey>,
    pub reserve: SignedPrekey,
}

/// The conversation id of a group session (history rows of its messages).
pub fn group_conversation(group: &[u8; 16]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sotto/v1/p2p-group\0");
    h.update(group);
    h.finalize().into()
}

/// How a group's messages are addressed in the history (`to`): `#title`,
/// which no username can be.
pub fn group_address(title: &str) -> String {
    format!("#{title}")
}

impl Machine {
    /// The prekey this device hands a peer in a session handshake: its
    /// newest reserve prekey (made and committed if it has none). A reserve
    /// and not a one-time key, because a group's host hands it on to the
    /// group's other members, who may each start a session on it.
    pub fn p2p_prekey(&mut self, now: u64) -> Result<SignedPrekey> {
        self.now = now;
        if let Some(p) = self.newest_reserve() {
            return Ok(p);
        }
        let mut rng = &mut *self.rng;
        let p = self.device.generate_reserve(&mut rng);
        self.commit(ChangeSet::default())?;
        Ok(p)
    }

    fn newest_reserve(&self) -> Option<SignedPrekey> {
        self.device
            .held_prekeys()
            .into_iter()
            .filter(|p| p.kind == PrekeyKind::Reserve)
            .max_by_key(|p| p.id)
    }

    /// What this device publishes when it registers with a server after it
    /// was made with none ([`crate::NewUser`] then finished with an empty
    /// [`crate::Home`]): the same certificate, so the same user key and
    /// safety numbers. Makes a reserve prekey if it holds none.
    pub fn registration(&mut self, now: u64) -> Result<Registration> {
        let username = self.require_username()?;
        let reserve = self.p2p_prekey(now)?;
        let one_time = self
            .device
            .held_prekeys()
            .into_iter()
            .filter(|p| p.kind == PrekeyKind::OneTime)
            .collect();
        Ok(Registration {
            username,
            cert: *self.device.cert(),
            one_time,
            reserve,
        })
    }

    /// A peer proved `user` (its device `cert`) under `username`, and the
    /// user accepted a session with it: the name is kept as a contact
    /// (trust on first use, as a directory answer would be), so it is
    /// known after a restart. A name known with another key is
    /// [`Error::KeyChanged`] and changes nothing.
    pub fn accept_peer(
        &mut self,
        now: u64,
        username: &str,
        user: UserPublic,
        cert: &DeviceCert,
    ) -> Result<()> {
        self.now = now;
        let name = peer_name(username)?;
        if cert.user != user || cert.verify().is_err() {
            return Err(Error::BadAnswer(
                "a peer certificate of another user".into(),
            ));
        }
        if self
            .store
            .contact(&name)?
            .is_some_and(|c| c.user_key == user.0)
        {
            return Ok(());
        }
        let dir = Directory {
            user,
            devices: vec![cert.encode()],
            organisation: None,
        };
        self.accept_directory(&name, &dir).map(|_| ())
    }

    /// Records the server this device is now registered with.
    pub fn set_server(&mut self, url: &str, fingerprint: &str, clock_offset_ms: i64) -> Result<()> {
        let mut account = self.account()?;
        account.server_url = url.to_string();
        account.server_fingerprint = fingerprint.to_string();
        account.clock_offset_ms = clock_offset_ms;
        self.commit(ChangeSet {
            account: Some(account),
            ..ChangeSet::default()
        })?;
        self.clock_offset = clock_offset_ms;
        Ok(())
    }

    /// Sends `text` to group session `scope`: sealed once for the devices
    /// of `members` (each checked against the key the transport names for
    /// it), stored in this device's history as to `#title`. The transport
    /// hands the datagram to the group's host, which relays it.
    pub fn send_group_text(
        &mut self,
        now: u64,
        scope: &GroupScope,
        members: &[GroupMember],
        text: &str,
    ) -> Result<Op<Message>> {
        self.now = now;
        let me = self.require_username()?;
        let own = self.device.cert().user;
        let body = GroupTextBody {
            sender: me.clone(),
            group: scope.id,
            title: scope.title.clone(),
            text: text.to_string(),
        }
        .encode();
        if body.len() > sotto_proto::datagram::MAX_BODY {
            return Err(Error::TooLarge);
        }
        let targets: Vec<Target> = members
            .iter()
            .filter(|m| m.user != own)
            .filter_map(|m| {
                let name = check_username(&m.name).ok()?;
                Some(Target {
                    name_hash: username_hash(&name),
                    who: name,
                    check: Check::Exact(m.user),
                    certs: None,
                    only: None,
                })
            })
            .collect();
        let to = group_address(&scope.title);
        if targets.is_empty() {
            return Err(Error::NoDevices(to));
        }
        let conversation = group_conversation(&scope.id);
        let draft = Draft {
            message_id: random_id(&mut *self.rng),
            conversation: Conversation::Fixed(conversation),
            content_type: GROUP_TEXT,
            body,
            ttl: 0,
            room: false,
        };
        let row = Message {
            id: draft.message_id,
            conversation,
            from: me,
            to: to.clone(),
            sent_at: 0,
            received_at: 0,
            body: text.to_string(),
            ttl: 0,
            outgoing: true,
        };
        let deliver = Deliver::new(targets, draft).with_history(row);
        Ok(self.start(Job::Text(Box::new(SendText::new(deliver, to)))))
    }
}
