//! The one error type of the device core. Each variant carries what
//! explains it; `Display` is a plain English line that names no command or
//! flag of any program (the CLI says what to run next).

use sotto_proto::room::{GroupId, RejectReason, RoomError, VerifyFailure};

/// Everything a device operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this store holds no device account")]
    NoAccount,
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("{0} has no other device that could receive the message")]
    NoDevices(String),
    #[error("invalid username {0:?}: use 1-64 letters, digits, '.', '_' or '-'")]
    BadUsername(String),
    #[error("{0} does not accept messages from you (blocked)")]
    Blocked(String),
    #[error("you blocked {0}")]
    YouBlocked(String),
    /// The directory shows another user key for `username` than the one
    /// this device trusted: refused until the user accepts the new key.
    #[error("{username}'s key changed since you last talked: someone may be impersonating them, or they re-registered")]
    KeyChanged { username: String },
    #[error("this device does not hold the user key: only the device that registered can approve or remove devices")]
    NoUserKey,
    /// `0`: the device id as the user gave it.
    #[error("no device {0:?} in this account")]
    UnknownDevice(String),
    #[error("invalid link code {0:?}")]
    BadLinkCode(String),
    #[error(
        "the link code does not match the waiting request: mistyped, or the request was replaced"
    )]
    LinkCodeMismatch,
    #[error("the link request is unknown or expired")]
    LinkExpired,
    /// A device linked by an older client that has not received its name
    /// yet (a device linked now gets it in its approval).
    #[error(
        "this device is linked but has not yet received its account data from the approving device"
    )]
    LinkIncomplete,
    /// The approval handed to a waiting device was not made with its link
    /// code (by someone without the code, or altered, or for another link).
    #[error("the approval was not made with this device's link code: someone without the code tried to approve it")]
    LinkForged,
    /// The approval names `username`, but the directory does not list the
    /// approving user key under that name.
    #[error("the approval names {username:?}, but the directory lists another key (or no user) under that name")]
    LinkUserMismatch { username: String },
    /// A user other than the one the new device was told to join approved
    /// it (`approver`, checked against the directory).
    #[error("approved by another user: {approver}")]
    ApprovedByAnotherUser { approver: String, expected: String },
    #[error("no room {0:?} on this device")]
    UnknownRoom(String),
    #[error("{title:?} names several rooms")]
    AmbiguousRoom { title: String, ids: Vec<GroupId> },
    #[error("{0}")]
    Room(#[from] RoomRefusal),
    #[error("the message is too large")]
    TooLarge,
    /// The transport could not do a request this operation needed (the
    /// shell that ran it knows why and reports that instead).
    #[error("the operation stopped: its {what} request failed")]
    Aborted { what: &'static str },
    /// The transport's answer to a request does not fit the request.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
    #[error("protocol error: {0}")]
    Protocol(#[from] sotto_proto::Error),
    #[error("local store: {0}")]
    Store(#[from] StoreError),
}

/// A room change or query refused before anything was signed or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomRefusal {
    /// Only an admin may do this.
    #[error(
        "only an admin of {title:?} can change it; you are not an admin (nothing was changed)"
    )]
    NotAdmin { title: String },
    /// This user is not (or no longer) a member.
    #[error("you are not a member of {title:?} (nothing was changed)")]
    NotMember { title: String },
    /// The room would reject the change for `reason`.
    #[error("{title:?}: {reason} (nothing was changed)")]
    Rejected { title: String, reason: RejectReason },
    /// A username that is not a member of the room.
    #[error("{0} is not a member of this room")]
    NotAMember(String),
    /// A change with nothing in it.
    #[error("nothing to change")]
    NothingToChange,
    /// The stored log does not verify (`position` counts from 0).
    #[error("the room log is broken at entry {}", .0.position + 1)]
    Broken(VerifyFailure),
    /// The room state machine refused.
    #[error("room: {0}")]
    Log(RoomError),
}

/// A failure of the store behind [`crate::Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Stored bytes that do not decode.
    #[error("the local store is damaged: {0}")]
    Corrupt(String),
    /// The backend failed (disk, database engine).
    #[error("{0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T> = std::result::Result<T, Error>;
