//! What the core tells its user: typed values, no text for people (the CLI
//! renders them).

use sotto_proto::room::RoomError;
use sotto_proto::{DeviceId, UserPublic};

use crate::rooms::RoomEvent;
use crate::store::Message;

/// A device of the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub id: DeviceId,
    /// When its certificate was made (master-clock ms).
    pub created_at: u64,
    /// True for the device this core runs.
    pub this_device: bool,
}

/// A contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactInfo {
    pub username: String,
    pub user_key: UserPublic,
    pub verified: bool,
    pub devices: usize,
}

/// Why a received datagram was refused. It was acknowledged and dropped;
/// nothing of it was kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// It does not open on this device (not for it, bad signature, unknown
    /// session or prekey, altered).
    Unopenable(sotto_proto::Error),
    /// A message of `content_type` whose body does not decode.
    UnreadableBody { content_type: u8 },
    /// One of this user's devices claims to be another user.
    OwnDeviceClaims { claimed: String },
    /// A message addressed to another user.
    NotForYou { from: String, to: String },
    /// Signed by a key other than the one trusted for `claimed`.
    SenderKeyMismatch { claimed: String },
    /// Claims to be from a user who is not registered.
    SenderUnknown { claimed: String },
    /// The directory maps `claimed` to another user key than the signer's.
    SenderNotOwner { claimed: String },
    /// Link data from another user.
    ForeignLinkSync,
    /// Link data from one of this user's devices naming `claimed`, which
    /// is not this user's name (by the directory, or as already known).
    LinkSyncName { claimed: String },
    /// A group-session message that did not arrive inside that group
    /// session (through its host): anyone could inject one otherwise.
    OutsideGroup,
    /// A group-session message whose signer is not a current member.
    NotGroupMember { claimed: String },
    /// A room datagram that does not decode.
    UnreadableRoomMessage(sotto_proto::Error),
    /// The room log refused an entry.
    RoomEntryRefused(RoomError),
    /// A history request that may not be answered.
    RoomRequestRefused(RoomError),
    /// A granted room message that could not be taken in.
    GrantFailed {
        datagram_id: [u8; 32],
        problem: GrantProblem,
    },
}

/// Why a granted room message could not be taken in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantProblem {
    /// The transport no longer holds it.
    Missing,
    /// The bytes fetched are not the datagram named.
    IdMismatch,
    /// It does not open with the granted key.
    Unopenable(sotto_proto::Error),
    /// It is not a room entry.
    NotAnEntry,
    /// The room log refused it.
    Refused(RoomError),
}

/// Something that happened, in the order it happened.
#[derive(Debug)]
pub enum Event {
    /// A message new to this device (received, or sent from another own
    /// device).
    Message(Message),
    /// A datagram that was refused (acknowledged and dropped).
    Rejected(Rejection),
    /// A datagram already seen (delivered again), acknowledged unshown.
    Duplicate,
    /// A datagram from a blocked user, dropped.
    Blocked,
    /// The approving device's account data arrived (linking).
    LinkSync,
    /// A room message or notice.
    Room(RoomEvent),
    /// Work the core started on its own (answering a room request,
    /// fetching granted history) failed.
    Failed(crate::Error),
}

/// What a batch of received datagrams did: the events, counted and
/// collected.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Messages new to this device, oldest first.
    pub messages: Vec<Message>,
    /// Datagrams refused.
    pub rejected: Vec<Rejection>,
    /// Datagrams already seen.
    pub duplicates: usize,
    /// Datagrams from blocked users.
    pub blocked: usize,
    /// Account data received from the approving device (linking).
    pub link_syncs: usize,
    /// Room messages and notices that arrived.
    pub room: Vec<RoomEvent>,
    /// Work started by the core that failed.
    pub failures: Vec<crate::Error>,
}

impl SyncReport {
    pub fn add(&mut self, event: Event) {
        match event {
            Event::Message(m) => self.messages.push(m),
            Event::Rejected(r) => self.rejected.push(r),
            Event::Duplicate => self.duplicates += 1,
            Event::Blocked => self.blocked += 1,
            Event::LinkSync => self.link_syncs += 1,
            Event::Room(r) => self.room.push(r),
            Event::Failed(e) => self.failures.push(e),
        }
    }
}
