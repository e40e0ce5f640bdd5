//! A room's state and the rules that change it: `apply` takes the state
//! resolved so far and one entry, and says what the entry did.

use std::collections::BTreeMap;

use crate::keys::UserPublic;

use super::entry::{Body, Entry, EntryHash, EntryKind, GroupId, MessageId, Op, MAX_MEMBERS};
use super::Ttl;

/// A member as the room state holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's username hash (resolve it through the directory).
    pub name: [u8; 32],
    pub admin: bool,
}

/// A room's state after some prefix of the resolved log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomState {
    pub group: GroupId,
    pub title: String,
    pub description: String,
    pub ttl: Ttl,
    pub members: BTreeMap<UserPublic, MemberInfo>,
    pub creator: UserPublic,
    /// Server time of the create entry, ms.
    pub created_at: u64,
    /// A delete entry was applied: the room is over.
    pub deleted: bool,
}

impl RoomState {
    pub fn is_member(&self, user: &UserPublic) -> bool {
        self.members.contains_key(user)
    }

    pub fn is_admin(&self, user: &UserPublic) -> bool {
        self.members.get(user).is_some_and(|m| m.admin)
    }

    pub fn admins(&self) -> Vec<UserPublic> {
        self.members
            .iter()
            .filter(|(_, m)| m.admin)
            .map(|(u, _)| *u)
            .collect()
    }

    /// Members for display: admins first, each group in user-key order.
    pub fn members_admins_first(&self) -> Vec<(UserPublic, MemberInfo)> {
        let mut v: Vec<(UserPublic, MemberInfo)> =
            self.members.iter().map(|(u, m)| (*u, m.clone())).collect();
        v.sort_by_key(|(u, m)| (!m.admin, *u));
        v
    }
}

/// Why an entry was discarded. Every replica reaches the same reason for
/// the same entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// No create entry precedes it.
    NoRoom,
    /// A second create for a room that exists.
    RoomExists,
    /// The room was deleted before it.
    RoomDeleted,
    /// Its sender is not a member at that point (never was, removed, left).
    NotMember,
    /// An authoritative op from a member who is not an admin at that point.
    NotAdmin,
    /// The sender's username hash is not the one the room lists for them.
    NameMismatch,
    /// Add of a user who is already a member.
    AlreadyMember,
    /// Remove/grant/revoke of a user who is not a member.
    TargetNotMember,
    /// Grant to an admin, or revoke from a non-admin.
    NoChange,
    /// An add beyond [`MAX_MEMBERS`].
    RoomFull,
    /// It claims a time before the room's create entry: nothing may sort
    /// before the create.
    BeforeCreate,
}

impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RejectReason::NoRoom => "the room does not exist yet",
            RejectReason::RoomExists => "the room already exists",
            RejectReason::RoomDeleted => "the room was deleted",
            RejectReason::NotMember => "the sender is not a member",
            RejectReason::NotAdmin => "the sender is not an admin",
            RejectReason::NameMismatch => "the sender's name does not match the member list",
            RejectReason::AlreadyMember => "already a member",
            RejectReason::TargetNotMember => "not a member",
            RejectReason::NoChange => "nothing to change",
            RejectReason::RoomFull => "the room is full",
            RejectReason::BeforeCreate => "it claims a time before the room was created",
        })
    }
}

/// What an entry did, for the room's timeline. Control events are the
/// notices ("bob changed the TTL from 1 day to 1 hour").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Created {
        title: String,
        description: String,
        ttl: Ttl,
        members: Vec<UserPublic>,
        admins: Vec<UserPublic>,
    },
    TitleChanged {
        from: String,
        to: String,
    },
    DescriptionChanged {
        from: String,
        to: String,
    },
    TtlChanged {
        from: Ttl,
        to: Ttl,
    },
    MemberAdded(UserPublic),
    MemberRemoved(UserPublic),
    AdminGranted(UserPublic),
    AdminRevoked(UserPublic),
    Deleted,
    Left,
    /// A standard message was accepted.
    Message,
    /// The entry was discarded.
    Rejected {
        kind: EntryKind,
        reason: RejectReason,
    },
}

/// One event of the room timeline, as the client renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub entry: EntryHash,
    pub message_id: MessageId,
    /// The sending user.
    pub by: UserPublic,
    /// Server time of the entry, ms.
    pub at: u64,
    pub event: Event,
    /// The entry had been resolved before with another outcome (a concurrent
    /// entry that sorts before it arrived later).
    pub revised: bool,
}

impl Notice {
    /// An English rendering, with `name` giving a display name for a user.
    /// `None` for [`Event::Message`] (the client shows the message itself).
    pub fn render(&self, name: impl Fn(&UserPublic) -> String) -> Option<String> {
        let by = name(&self.by);
        Some(match &self.event {
            Event::Created { title, ttl, .. } => {
                format!("{by} created the room \"{title}\" (messages disappear: {ttl})")
            }
            Event::TitleChanged { from, to } => {
                format!("{by} changed the title from \"{from}\" to \"{to}\"")
            }
            Event::DescriptionChanged { .. } => format!("{by} changed the description"),
            Event::TtlChanged { from, to } => {
                format!("{by} changed the TTL from {from} to {to}")
            }
            Event::MemberAdded(u) => format!("{} was added by {by}", name(u)),
            Event::MemberRemoved(u) => format!("{} was removed by {by}", name(u)),
            Event::AdminGranted(u) => format!("{} was made an admin by {by}", name(u)),
            Event::AdminRevoked(u) => format!("{} is no longer an admin ({by})", name(u)),
            Event::Deleted => format!("{by} deleted the room"),
            Event::Left => format!("{by} left"),
            Event::Message => return None,
            Event::Rejected { kind, reason } => {
                let what = match kind {
                    EntryKind::Standard => "message",
                    _ => "change",
                };
                format!("discarded a {what} from {by}: {reason}")
            }
        })
    }
}

/// Applies `entry` to the state resolved so far. Never fails: an entry that
/// may not take effect leaves the state as it was and comes back as
/// [`Event::Rejected`].
pub(crate) fn apply(state: &mut Option<RoomState>, entry: &Entry) -> Event {
    let reject = |reason| Event::Rejected {
        kind: entry.kind(),
        reason,
    };
    let user = entry.sender.user;
    let st = match (state.as_mut(), &entry.body) {
        (None, Body::Control(Op::Create { config, .. })) => {
            let members: BTreeMap<UserPublic, MemberInfo> = config
                .members
                .iter()
                .map(|m| {
                    (
                        m.user,
                        MemberInfo {
                            name: m.name,
                            admin: m.admin,
                        },
                    )
                })
                .collect();
            let event = Event::Created {
                title: config.title.clone(),
                description: config.description.clone(),
                ttl: config.ttl,
                members: members.keys().copied().collect(),
                admins: config
                    .members
                    .iter()
                    .filter(|m| m.admin)
                    .map(|m| m.user)
                    .collect(),
            };
            *state = Some(RoomState {
                group: entry.group,
                title: config.title.clone(),
                description: config.description.clone(),
                ttl: config.ttl,
                members,
                creator: user,
                created_at: entry.timestamp,
                deleted: false,
            });
            return event;
        }
        (None, _) => return reject(RejectReason::NoRoom),
        (Some(_), Body::Control(Op::Create { .. })) => return reject(RejectReason::RoomExists),
        (Some(st), _) => st,
    };
    if entry.timestamp < st.created_at {
        return reject(RejectReason::BeforeCreate);
    }
    if st.deleted {
        return reject(RejectReason::RoomDeleted);
    }
    let Some(me) = st.members.get(&user) else {
        return reject(RejectReason::NotMember);
    };
    if me.name != entry.sender_name {
        return reject(RejectReason::NameMismatch);
    }
    let op = match &entry.body {
        Body::Message { .. } => return Event::Message,
        Body::Control(op) => op,
    };
    if op.kind() == EntryKind::Authoritative && !me.admin {
        return reject(RejectReason::NotAdmin);
    }
    match op {
        Op::Create { .. } => reject(RejectReason::RoomExists),
        Op::SetTitle(t) => Event::TitleChanged {
            from: std::mem::replace(&mut st.title, t.clone()),
            to: t.clone(),
        },
        Op::SetDescription(d) => Event::DescriptionChanged {
            from: std::mem::replace(&mut st.description, d.clone()),
            to: d.clone(),
        },
        Op::SetTtl(t) => Event::TtlChanged {
            from: std::mem::replace(&mut st.ttl, *t),
            to: *t,
        },
        Op::AddMember { user: u, name } => {
            if st.members.contains_key(u) {
                reject(RejectReason::AlreadyMember)
            } else if st.members.len() >= MAX_MEMBERS {
                reject(RejectReason::RoomFull)
            } else {
                st.members.insert(
                    *u,
                    MemberInfo {
                        name: *name,
                        admin: false,
                    },
                );
                Event::MemberAdded(*u)
            }
        }
        Op::RemoveMember(u) => match st.members.remove(u) {
            Some(_) => Event::MemberRemoved(*u),
            None => reject(RejectReason::TargetNotMember),
        },
        Op::GrantAdmin(u) | Op::RevokeAdmin(u) => {
            let grant = matches!(op, Op::GrantAdmin(_));
            match st.members.get_mut(u) {
                None => reject(RejectReason::TargetNotMember),
                Some(m) if m.admin == grant => reject(RejectReason::NoChange),
                Some(m) => {
                    m.admin = grant;
                    if grant {
                        Event::AdminGranted(*u)
                    } else {
                        Event::AdminRevoked(*u)
                    }
                }
            }
        }
        Op::Delete => {
            st.deleted = true;
            Event::Deleted
        }
        Op::Leave => {
            st.members.remove(&user);
            Event::Left
        }
    }
}
