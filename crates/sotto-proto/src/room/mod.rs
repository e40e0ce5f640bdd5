//! Secure rooms: group chats whose authoritative state lives in their
//! members' devices. Sans-IO like the rest of the crate: the caller passes
//! randomness (an RNG) and the server's master-clock time in, and persists
//! what it gets out ([`RoomLog::records`], [`LocalMeta`]).
//!
//! # The log
//!
//! Each device keeps a [`RoomLog`]: a hash-linked DAG of signed [`Entry`]s.
//! An entry carries the group id, a message id, the hashes of the log heads
//! its sender had seen (its parents, at most [`MAX_PARENTS`]), the sender's
//! device certificate and username hash, a type (authoritative control,
//! non-authoritative control, standard), the server master-clock time, and
//! either a control [`Op`] (create with the full initial state; set title,
//! description, TTL; add/remove member; grant/revoke admin; delete; leave)
//! or, for a chat message, the salted digest of the message content. The
//! message content, its message key and its datagram id travel and are
//! stored beside the entry, outside its hash ([`MessageContent`],
//! [`LocalMeta`]), so that purging a message leaves a tombstone that still
//! verifies. The entry hash ([`EntryHash`]) is SHA-256 over the encoded
//! signed entry.
//!
//! # Why signatures, not a shared secret
//!
//! Every entry is signed by its sender's device key (Ed25519, over
//! `"sotto/v1/room-entry" || entry`), with the device certificate (signed by
//! the user key) attached, so any member verifies any entry on its own. A
//! MAC under a secret shared by the members would prove only that *some*
//! member made the entry: every member holds the same secret, so any member
//! could compute a valid tag over an entry naming another member as sender
//! (an "add" from an admin, a message from the boss), and no one could tell.
//! A signature can be made only with the sender's own device key, so a
//! member cannot forge another member's entry, and the server (which holds
//! neither) cannot forge any.
//!
//! # Resolution: the same state on every device
//!
//! Members send concurrently, so entries arrive in different orders on
//! different devices. The log is resolved in a deterministic order: by
//! [`SortKey`] `(time, height, hash)`, where `time` is the entry's
//! timestamp raised to its parents' largest `time` and `height` is one more
//! than its parents' largest height. Both grow along parent links, so the
//! order is topological; and a key depends only on the entry and its
//! ancestors (fixed by their hashes), so every device that holds the same
//! entries computes the same order, whatever order they arrived in. (This
//! refines "Kahn's algorithm with a (timestamp, hash) tie-break": it gives
//! the same kind of order, but each entry's place is a property of the entry,
//! so a new entry is placed by binary search and only the suffix after it is
//! replayed, from a snapshot kept every 64 positions.)
//!
//! The state is the fold of `state::apply` over that order:
//! authoritative ops take effect only if their sender is an admin in the
//! state resolved just before them; otherwise they are discarded and
//! reported ([`Event::Rejected`]). A leave is accepted from any member. An
//! entry from a user who is not a member at its position (never added,
//! removed, left) is rejected, so a removed member's later entries are
//! rejected everywhere. Two admins editing concurrently converge: both
//! edits are applied in resolved order, the later one wins (and if one
//! admin removed the other first, the other's edit is rejected). The
//! [`LogHead`], a hash chain over the entry hashes in resolved order, is
//! the agreement check between devices, and [`RoomLog::verify`] /
//! [`verify_records`] recompute it, with every hash, signature and parent
//! link, and report the first bad entry.
//!
//! The group id is SHA-256 over `"sotto/v1/room-group"` and the whole signed
//! create entry with its group field zeroed ([`GroupId::of_create`]; the
//! create's signature covers the same zeroed encoding), and the create must
//! show it. It commits to everything the create says, so no one, not even
//! its creator with the same salt, can make a second create for the room:
//! any other create names another group and is refused. Only a create has
//! no parents, every other entry descends from it, and an entry claiming a
//! time before the create's is rejected, so nothing sorts before it.
//!
//! # Names
//!
//! [`RoomLog::names`] gives each member's username hash from the accepted
//! create and adds only; rejected and pending entries never name anyone.
//!
//! # Missing entries and history
//!
//! An entry whose parents are not held waits in a bounded pending set
//! ([`MAX_PENDING`] in all, [`MAX_PENDING_PER_SENDER`] per sender, the
//! oldest evicted first, dropped after [`PENDING_MAX_AGE_MS`]) and is
//! applied when they arrive; it is reported as
//! [`PendingInfo`] so the client sends its sender a [`HistoryRequest`]
//! (group id + message id + own heads). The same request, with no message id,
//! recovers lost communications for a new or lagging device. The answerer's
//! [`RoomLog::answer`] returns the signed entries the requester lacks (all
//! of the control history it needs and the message entries, so it can
//! rebuild the log and head) and [`Grant`]s (message key + datagram id, or
//! the content itself) for exactly the messages accepted while the
//! requester was a member, or all of them for a platform administrator. A
//! requester who is no longer a member gets the entries up to its removal
//! (or leave) only; one who never was gets nothing.
//!
//! # Non-members and storage
//!
//! An entry rejected because its sender is not a member (and is not one
//! now) is reported once and then dropped, unless a member's entry names it
//! as parent. [`RoomLog::take_changes`] gives the records to write since the
//! last call, and [`RoomLog::from_stored`] reloads them without checking
//! every signature again.
//!
//! # TTL
//!
//! [`RoomLog::expired`] lists the standard entries whose TTL (the room TTL in
//! force at their position in the resolved order) has passed at a given
//! master-clock time; [`RoomLog::expire`] also erases their keys. Control
//! entries are kept for the life of the room: they are the state, and every
//! later entry's validity depends on them, so purging them would make the
//! log unverifiable (the seed's alternative, purging control entries once
//! superseded, would break the hash links).
//!
//! # Client flow
//!
//! * create: [`RoomLog::create`] → send `RoomWire::Entry { entry, None }`
//!   to every device of every member ([`RoomLog::recipients`]).
//! * send: [`RoomLog::post`] → `RoomWire::Entry { entry, Some(content) }`.
//! * change: [`RoomLog::propose`] (refuses locally what would be rejected).
//! * receive: [`RoomWire::decode`] the `ROOM_CONTROL` payload, then
//!   [`RoomLog::receive_delivery`] (or [`RoomLog::new`] first for an unknown
//!   group); render [`Update::notices`]; for each [`Update::pending`] send a
//!   [`HistoryRequest`] to its sender; answer requests with
//!   [`RoomLog::answer`]; take answers in with [`RoomLog::receive_answer`].
//! * TTL: call [`RoomLog::expire`] with the master clock and delete what it
//!   lists.
//! * store: [`RoomLog::take_changes`] after each change, reload with
//!   [`RoomLog::from_stored`].
//! * `room log --verify`: [`verify_records`] over the stored records and head.

mod entry;
mod log;
pub mod state;
mod wire;

use core::fmt;
use core::str::FromStr;

pub use entry::{
    message_digest, Body, Draft, Entry, EntryHash, EntryKind, GroupId, Member, MessageId, Op,
    RoomConfig, MAX_DESCRIPTION, MAX_ENTRY_LEN, MAX_MEMBERS, MAX_PARENTS, MAX_TITLE,
};
pub use log::{
    verify_records, Author, Built, Delivery, Expiry, LocalMeta, LogChanges, LogHead, LogRecord,
    PendingInfo, Problem, Recovered, Requester, RoomLog, SortKey, StoredRecord, Update,
    VerifyFailure, MAX_PENDING, MAX_PENDING_PER_SENDER, PENDING_MAX_AGE_MS,
};
pub use state::{Event, MemberInfo, Notice, RejectReason, RoomState};
pub use wire::{
    datagram_id, open_with_message_key, Grant, HistoryAnswer, HistoryRequest, MessageContent,
    RoomWire, MAX_ANSWER_ENTRIES, MAX_CONTENT, MAX_HAVE,
};

use crate::error::Error;

/// A message time-to-live in seconds; 0 is off. Any value is allowed; the
/// UI presets are [`Ttl::PRESETS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(pub u32);

impl Ttl {
    pub const OFF: Ttl = Ttl(0);
    pub const TEN_MINUTES: Ttl = Ttl(600);
    pub const HOUR: Ttl = Ttl(3600);
    pub const DAY: Ttl = Ttl(86_400);
    pub const WEEK: Ttl = Ttl(7 * 86_400);
    pub const THIRTY_DAYS: Ttl = Ttl(30 * 86_400);
    pub const PRESETS: [Ttl; 6] = [
        Ttl::OFF,
        Ttl::TEN_MINUTES,
        Ttl::HOUR,
        Ttl::DAY,
        Ttl::WEEK,
        Ttl::THIRTY_DAYS,
    ];

    pub fn is_off(self) -> bool {
        self.0 == 0
    }

    /// Milliseconds, or `None` when off.
    pub fn millis(self) -> Option<u64> {
        (!self.is_off()).then_some(self.0 as u64 * 1000)
    }
}

impl fmt::Display for Ttl {
    /// `off`, `10 minutes`, `1 hour`, `1 day`, `1 week`, `30 days`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_off() {
            return f.write_str("off");
        }
        let s = self.0;
        let (n, unit) = [
            (7 * 86_400, "week"),
            (86_400, "day"),
            (3600, "hour"),
            (60, "minute"),
        ]
        .iter()
        .find(|(u, _)| s.checked_rem(*u) == Some(0))
        .map_or((s, "second"), |(u, name)| (s / u, *name));
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

impl FromStr for Ttl {
    type Err = Error;

    /// `off`, `0`, or a number with a unit: `s`, `m`/`min`, `h`, `d`, `w`
    /// (`10m`, `1h`, `1d`, `1w`, `30d`); a bare number is seconds.
    fn from_str(s: &str) -> Result<Ttl, Error> {
        let s = s.trim().to_ascii_lowercase();
        if s == "off" || s == "never" {
            return Ok(Ttl::OFF);
        }
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(digits);
        let bad = Error::Malformed { what: "ttl" };
        let n: u64 = n.parse().map_err(|_| bad.clone())?;
        let mult: u64 = match unit.trim() {
            "" | "s" | "sec" | "seconds" => 1,
            "m" | "min" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            _ => return Err(bad),
        };
        let secs = n.checked_mul(mult).ok_or(bad.clone())?;
        u32::try_from(secs).map(Ttl).map_err(|_| bad)
    }
}

/// Why the room state machine refused something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomError {
    /// Decoding, certificate or signature failure.
    Proto(Error),
    /// The entry or message is for another room.
    WrongGroup,
    /// A local change that would be rejected (e.g. `room set` by a
    /// non-admin): nothing was signed or changed.
    Refused(RejectReason),
    /// A history request from a user who was never a member.
    NotEntitled,
    /// A datagram, grant or content does not match its entry.
    Mismatch { what: &'static str },
    /// No such entry in the log.
    UnknownEntry,
}

impl From<Error> for RoomError {
    fn from(e: Error) -> Self {
        RoomError::Proto(e)
    }
}

impl fmt::Display for RoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomError::Proto(e) => write!(f, "{e}"),
            RoomError::WrongGroup => write!(f, "entry belongs to another room"),
            RoomError::Refused(r) => write!(f, "refused: {r}"),
            RoomError::NotEntitled => write!(f, "the requester was never a member"),
            RoomError::Mismatch { what } => write!(f, "{what} does not match the room entry"),
            RoomError::UnknownEntry => write!(f, "unknown room entry"),
        }
    }
}

impl std::error::Error for RoomError {}
