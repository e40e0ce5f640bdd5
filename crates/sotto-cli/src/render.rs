//! The words: what the library's typed values say to a person, one line
//! each, naming the command to run next where there is one. (The library
//! names no command or flag; this is the one place that does.)

use sotto_client::{
    Error, GrantProblem, LineContent, Rejection, RoomEvent, RoomLine, RoomNotice, RoomRefusal,
};
use sotto_proto::room::{EntryKind, Problem, VerifyFailure};

/// What a room notice says; `by` did it.
pub fn notice(by: &str, n: &RoomNotice) -> String {
    match n {
        RoomNotice::Created { title, ttl } => {
            format!("{by} created the room \"{title}\" (messages disappear: {ttl})")
        }
        RoomNotice::TitleChanged { from, to } => {
            format!("{by} changed the title from \"{from}\" to \"{to}\"")
        }
        RoomNotice::DescriptionChanged => format!("{by} changed the description"),
        RoomNotice::TtlChanged { from, to } => format!("{by} changed the TTL from {from} to {to}"),
        RoomNotice::MemberAdded(u) => format!("{u} was added by {by}"),
        RoomNotice::MemberRemoved(u) => format!("{u} was removed by {by}"),
        RoomNotice::AdminGranted(u) => format!("{u} was made an admin by {by}"),
        RoomNotice::AdminRevoked(u) => format!("{u} is no longer an admin ({by})"),
        RoomNotice::Deleted => format!("{by} deleted the room"),
        RoomNotice::Left => format!("{by} left"),
        RoomNotice::Discarded { kind, reason } => {
            let what = match kind {
                EntryKind::Standard => "message",
                _ => "change",
            };
            format!("discarded a {what} from {by}: {reason}")
        }
    }
}

/// A timeline line's text: the message, or the notice.
pub fn line_text(l: &RoomLine) -> String {
    match &l.content {
        LineContent::Message(t) => t.clone(),
        LineContent::Notice(n) => notice(&l.from, n),
    }
}

/// A room event as one line: `[title] from: text` or `[title] notice`.
pub fn room_event(e: &RoomEvent) -> String {
    match &e.line.content {
        LineContent::Message(t) => format!("[{}] {}: {t}", e.title, e.line.from),
        LineContent::Notice(n) => format!("[{}] {}", e.title, notice(&e.line.from, n)),
    }
}

/// Why a received datagram was refused.
pub fn rejection(r: &Rejection) -> String {
    use sotto_proto::content;
    match r {
        Rejection::Unopenable(e) => format!("a message could not be opened: {e}"),
        Rejection::UnreadableBody { content_type } => match *content_type {
            content::TEXT => "a message has an unreadable body".into(),
            content::LINK_SYNC => "unreadable link data".into(),
            sotto_client::ROOM_NAMES => "an unreadable room names list".into(),
            other => format!("a message of type {other} has an unreadable body"),
        },
        Rejection::OwnDeviceClaims { claimed } => {
            format!("a message from one of your devices claims to be from {claimed:?}")
        }
        Rejection::NotForYou { from, to } => {
            format!("a message from {from:?} was addressed to {to:?}, not you")
        }
        Rejection::SenderKeyMismatch { claimed } => format!(
            "a message claiming to be from {claimed} is signed by a key other than {claimed}'s known key; \
             compare safety numbers with `sotto verify {claimed}`"
        ),
        Rejection::SenderUnknown { claimed } => {
            format!("a message claims to be from {claimed:?}, who is not registered")
        }
        Rejection::SenderNotOwner { claimed } => {
            format!("a message claims to be from {claimed}, but is not signed by {claimed}'s key")
        }
        Rejection::ForeignLinkSync => "link data from another user was refused".into(),
        Rejection::LinkSyncName { claimed } => {
            format!("link data from one of your devices naming another user ({claimed}) was refused")
        }
        Rejection::OutsideGroup => {
            "a group message that did not come through its group session was refused".into()
        }
        Rejection::NotGroupMember { claimed } => {
            format!("a group message from {claimed:?}, who is not a member, was refused")
        }
        Rejection::UnreadableRoomMessage(e) => format!("an unreadable room message: {e}"),
        Rejection::RoomEntryRefused(e) => format!("a room entry was refused: {e}"),
        Rejection::RoomRequestRefused(e) => format!("a room history request was refused: {e}"),
        Rejection::GrantFailed {
            datagram_id,
            problem,
        } => format!(
            "a granted room message ({}) could not be fetched: {}",
            hex::encode(&datagram_id[..8]),
            grant_problem(problem)
        ),
    }
}

fn grant_problem(p: &GrantProblem) -> String {
    match p {
        GrantProblem::Missing => "the server no longer holds it".into(),
        GrantProblem::IdMismatch => "the fetched datagram does not match its id".into(),
        GrantProblem::Unopenable(e) => format!("it does not open with the granted key: {e}"),
        GrantProblem::NotAnEntry => "a granted datagram is not a room entry".into(),
        GrantProblem::Refused(e) => format!("room: {e}"),
    }
}

fn problem(p: &Problem) -> String {
    match p {
        Problem::HashMismatch => "its hash does not match its bytes".into(),
        Problem::Undecodable(e) => format!("it cannot be decoded ({e})"),
        Problem::Invalid(e) => format!("its signature or certificate is invalid ({e})"),
        Problem::WrongGroup => "it belongs to another room".into(),
        Problem::MissingParent(h) => format!("its parent {} is missing", hex::encode(&h.0[..8])),
        Problem::OutOfOrder => "it is out of the resolved order".into(),
        Problem::HeadMismatch => "the chain does not end at the stored head".into(),
    }
}

/// The first bad link of a room log.
pub fn broken(f: &VerifyFailure) -> String {
    let at = f.entry.map(|h| hex::encode(&h.0[..8])).unwrap_or_default();
    format!(
        "the room log is broken at entry {} ({at}): {}",
        f.position + 1,
        problem(&f.problem)
    )
}

fn room_refusal(r: &RoomRefusal) -> String {
    match r {
        RoomRefusal::NotAdmin { title } => format!(
            "only an admin of \"{title}\" can change it; you are not an admin (nothing was changed)"
        ),
        RoomRefusal::NotMember { title } => {
            format!("you are not a member of \"{title}\" (nothing was changed)")
        }
        RoomRefusal::Rejected { title, reason } => {
            format!("\"{title}\": {reason} (nothing was changed)")
        }
        RoomRefusal::NotAMember(who) => format!("{who} is not a member of this room"),
        RoomRefusal::NothingToChange => {
            "nothing to change: pass --title, --description, --ttl, --add, \
             --remove, --admin, --unadmin or --delete"
                .into()
        }
        RoomRefusal::Broken(f) => broken(f),
        RoomRefusal::Log(e) => format!("room: {e}"),
    }
}

/// An error as the one line `sotto` prints, with what to do next.
pub fn error(e: &Error) -> String {
    use sotto_client::DeviceError as D;
    match e {
        Error::Device(d) => match d {
            D::UnknownUser(u) => format!("unknown user {u:?}: check the name, or ask them to register"),
            D::YouBlocked(u) => format!("you blocked {u}: run `sotto unblock {u}` to write to them"),
            D::KeyChanged { username: u } => format!(
                "{u}'s key changed since you last talked: someone may be impersonating them, or they \
                 re-registered. Refusing to send. `sotto verify {u}` shows the new safety number: compare it \
                 with {u} out of band, then accept the key with `sotto verify --accept {u}`"
            ),
            D::NoUserKey => "this device does not hold the user key: approve (or remove) devices from the \
                             device you registered with"
                .into(),
            D::UnknownDevice(id) => format!("no device {id:?} in this account: `sotto devices` lists their ids"),
            D::BadLinkCode(c) => {
                format!("invalid link code {c:?}: type the whole code printed by `sotto link`")
            }
            D::LinkCodeMismatch => "the link code does not match the waiting request: check you typed the whole \
                                    code; do not approve, the request may have been replaced"
                .into(),
            D::LinkForged => "the approval was not made with this device's link code (someone without the code, \
                              or the server, tried to approve it): this device was not linked; run `sotto link` \
                              again"
                .into(),
            D::LinkUserMismatch { username } => format!(
                "the approval names {username}, but the directory lists another key under that name: this \
                 device was not linked; run `sotto link` again"
            ),
            D::ApprovedByAnotherUser { approver, expected } => format!(
                "approved by another user: {approver} (not {expected}); this device was not linked: run \
                 `sotto link` again and approve the code on a device of {expected}"
            ),
            D::LinkIncomplete => "this device is linked but has not yet received its account data from the \
                                  approving device: run `sotto inbox` once that device is online"
                .into(),
            D::LinkExpired => {
                "the link request is unknown or expired: run `sotto link` again on the new device".into()
            }
            D::UnknownRoom(n) => format!(
                "no room {n:?} on this device: see `sotto rooms` (a room is named by its title or its id)"
            ),
            D::AmbiguousRoom { title, ids } => {
                let ids: Vec<String> = ids.iter().map(|g| hex::encode(g.0)).collect();
                format!("{title:?} names several rooms; use the room id instead: {}", ids.join(", "))
            }
            D::Room(r) => room_refusal(r),
            D::BadAnswer(s) => format!("the server sent an unexpected answer: {s}"),
            other => other.to_string(),
        },
        Error::NotRegistered(p) => format!(
            "no sotto account in {}: run `sotto register` or `sotto link` first",
            p.display()
        ),
        Error::AlreadyRegistered(p) => {
            format!("{} already holds a sotto account: use another --home", p.display())
        }
        Error::UsernameTaken(u) => format!("the username {u:?} is taken: choose another"),
        Error::NoServer => "this device has no server (made with `sotto init`): use `sotto p2p` \
                            commands, or publish it with `sotto register USERNAME --server URL`"
            .into(),
        Error::ServerUnreachable { url, reason } => format!(
            "cannot reach the server at {url} ({reason}): check the address and that the server runs"
        ),
        Error::CertificateChanged { pinned, presented } => format!(
            "SERVER CERTIFICATE CHANGED: pinned {pinned}, the server presented {presented}; someone may be \
             intercepting the connection. Refusing to connect. If the operator really replaced the certificate, \
             confirm the new fingerprint with them and pin it with --fingerprint"
        ),
        Error::BadFingerprint(s) => format!(
            "invalid fingerprint {s:?}: expected the 64 hex characters printed by `sotto server`"
        ),
        Error::HomeBusy(p) => format!(
            "{} is in use by another sotto process that did not finish in time: try again",
            p.display()
        ),
        other => other.to_string(),
    }
}

/// `sotto admin migrate`'s line: the schema version now and before.
pub fn schema_version(before: i64, after: i64) -> String {
    if before == after {
        format!("schema version {after} (up to date)")
    } else {
        format!("schema version {after} (was {before})")
    }
}
