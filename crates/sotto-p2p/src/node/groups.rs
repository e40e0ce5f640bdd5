//! Group sessions: pairwise sessions in a star around the host.
//!
//! The host (the creator) invites members over their sessions with it; a
//! member joins explicitly; the host keeps the roster, announces every
//! join and leave to the members, and hands each message on to every
//! current member over that member's own session. There is no group key:
//! a newcomer receives what is sent after it joined, and a member who left
//! (or whose session closed) receives nothing after, because nothing is
//! sent to it; what it received while a member it keeps. See
//! docs/protocol.md, "Group sessions".

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand_core::{OsRng, RngCore};
use sotto_proto::UserPublic;

use super::{Act, Event, Node, Session};
use crate::error::{Error, Result};
use crate::wire::{
    GroupAd, Id, Inner, RosterMember, MAX_ADVERTISED_GROUPS, MAX_DATAGRAM, MAX_ROSTER, MAX_TITLE,
};

/// This node as a group sees it: user key, name, device certificate.
pub(crate) type Me<'a> = (UserPublic, &'a str, sotto_proto::DeviceCert);

/// What the application hears about group sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// The host of a group invites this node (join with
    /// [`Node::group_join`]).
    Invited {
        group: Id,
        title: String,
        host: String,
    },
    /// `name` joined (this node's own name when its join was admitted).
    Joined {
        group: Id,
        title: String,
        name: String,
    },
    Left {
        group: Id,
        title: String,
        name: String,
    },
    Message {
        group: Id,
        title: String,
        from: String,
        user: UserPublic,
        data: Vec<u8>,
    },
    /// The group ended for this node: the host closed it, refused the
    /// join, or the session with the host closed.
    Closed { group: Id, title: String },
}

enum Role {
    Host {
        invited: BTreeSet<UserPublic>,
        /// user -> (name, session with it)
        members: BTreeMap<UserPublic, (String, Id)>,
    },
    Member {
        host: Id,
        joined: bool,
        roster: Vec<RosterMember>,
    },
}

struct Group {
    title: String,
    role: Role,
}

/// A group as listed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupInfo {
    pub id: String,
    pub title: String,
    pub host: bool,
    pub joined: bool,
    pub members: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Groups {
    map: HashMap<Id, Group>,
}

fn ev(e: GroupEvent) -> Act {
    Act::Event(Event::Group(e))
}

impl Groups {
    pub(crate) fn advertised(&self) -> Vec<GroupAd> {
        let mut v: Vec<GroupAd> = self
            .map
            .iter()
            .filter(|(_, g)| matches!(g.role, Role::Host { .. }))
            .map(|(id, g)| GroupAd {
                id: *id,
                title: g.title.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.title.cmp(&b.title));
        v.truncate(MAX_ADVERTISED_GROUPS);
        v
    }

    /// The members of a group this node hosts, itself first, with the
    /// certificates and prekeys of their sessions.
    fn host_roster(
        members: &BTreeMap<UserPublic, (String, Id)>,
        me: &Me<'_>,
        sessions: &HashMap<Id, Session>,
    ) -> Vec<RosterMember> {
        let mut list = vec![RosterMember {
            user: me.0 .0,
            name: me.1.to_string(),
            cert: Some(me.2),
            prekey: None,
        }];
        list.extend(members.iter().map(|(u, (n, sid))| {
            let s = sessions.get(sid);
            RosterMember {
                user: u.0,
                name: n.clone(),
                cert: s.map(|s| s.cert),
                prekey: s.and_then(|s| s.prekey),
            }
        }));
        list
    }

    /// The host announces the roster to every member.
    fn roster_acts(
        id: Id,
        g: &Group,
        me: &Me<'_>,
        sessions: &HashMap<Id, Session>,
        acts: &mut Vec<Act>,
    ) {
        if let Role::Host { members, .. } = &g.role {
            let list = Self::host_roster(members, me, sessions);
            for (_, session) in members.values() {
                acts.push(Act::Seal(
                    *session,
                    Inner::GroupRoster {
                        group: id,
                        title: g.title.clone(),
                        members: list.clone(),
                    },
                ));
            }
        }
    }

    pub(crate) fn session_closed(
        &mut self,
        session: Id,
        me: &Me<'_>,
        sessions: &HashMap<Id, Session>,
    ) -> Vec<Act> {
        let mut acts = Vec::new();
        let mut ended = Vec::new();
        for (id, g) in self.map.iter_mut() {
            match &mut g.role {
                Role::Host { members, .. } => {
                    let gone: Vec<UserPublic> = members
                        .iter()
                        .filter(|(_, (_, s))| *s == session)
                        .map(|(u, _)| *u)
                        .collect();
                    for u in gone {
                        let (name, _) = members.remove(&u).expect("listed");
                        acts.push(ev(GroupEvent::Left {
                            group: *id,
                            title: g.title.clone(),
                            name,
                        }));
                    }
                }
                Role::Member { host, .. } if *host == session => ended.push(*id),
                Role::Member { .. } => {}
            }
        }
        let ids: Vec<Id> = self.map.keys().copied().collect();
        for id in ids {
            if ended.contains(&id) {
                let g = self.map.remove(&id).expect("listed");
                acts.push(ev(GroupEvent::Closed {
                    group: id,
                    title: g.title,
                }));
            } else {
                Self::roster_acts(id, &self.map[&id], me, sessions, &mut acts);
            }
        }
        acts
    }

    /// Group `id`'s title and current members (the host included), as
    /// this node knows them; `None` for a group it is not in.
    pub(crate) fn roster(
        &self,
        id: &Id,
        me: &Me<'_>,
        sessions: &HashMap<Id, Session>,
    ) -> Option<(String, Vec<RosterMember>)> {
        let g = self.map.get(id)?;
        match &g.role {
            Role::Host { members, .. } => {
                Some((g.title.clone(), Self::host_roster(members, me, sessions)))
            }
            Role::Member {
                joined: true,
                roster,
                ..
            } => Some((g.title.clone(), roster.clone())),
            Role::Member { .. } => None,
        }
    }

    /// A group message from the peer of session `sid`.
    pub(crate) fn on_message(
        &mut self,
        sid: Id,
        from: &Session,
        inner: Inner,
        me: &Me<'_>,
        sessions: &HashMap<Id, Session>,
        max_groups: usize,
    ) -> std::result::Result<Vec<Act>, &'static str> {
        let mut acts = Vec::new();
        match inner {
            Inner::GroupInvite { group, title } => {
                if !self.map.contains_key(&group) && self.map.len() < max_groups {
                    self.map.insert(
                        group,
                        Group {
                            title: title.clone(),
                            role: Role::Member {
                                host: sid,
                                joined: false,
                                roster: Vec::new(),
                            },
                        },
                    );
                    acts.push(ev(GroupEvent::Invited {
                        group,
                        title,
                        host: from.name.clone(),
                    }));
                }
            }
            Inner::GroupJoin { group } => {
                let Some(g) = self.map.get_mut(&group) else {
                    return Ok(acts);
                };
                let Role::Host { invited, members } = &mut g.role else {
                    return Ok(acts);
                };
                if !invited.contains(&from.user) || members.len() >= MAX_ROSTER - 1 {
                    acts.push(Act::Seal(sid, Inner::GroupLeave { group }));
                    return Ok(acts);
                }
                members.insert(from.user, (from.name.clone(), sid));
                acts.push(ev(GroupEvent::Joined {
                    group,
                    title: g.title.clone(),
                    name: from.name.clone(),
                }));
                Self::roster_acts(group, g, me, sessions, &mut acts);
            }
            Inner::GroupLeave { group } => {
                let Some(g) = self.map.get_mut(&group) else {
                    return Ok(acts);
                };
                match &mut g.role {
                    Role::Host { members, .. } => {
                        if members.get(&from.user).is_some_and(|(_, s)| *s == sid) {
                            members.remove(&from.user);
                            acts.push(ev(GroupEvent::Left {
                                group,
                                title: g.title.clone(),
                                name: from.name.clone(),
                            }));
                            Self::roster_acts(group, g, me, sessions, &mut acts);
                        }
                    }
                    Role::Member { host, .. } if *host == sid => {
                        let g = self.map.remove(&group).expect("found");
                        acts.push(ev(GroupEvent::Closed {
                            group,
                            title: g.title,
                        }));
                    }
                    Role::Member { .. } => {}
                }
            }
            Inner::GroupRoster {
                group,
                title: _,
                members,
            } => {
                let Some(g) = self.map.get_mut(&group) else {
                    return Ok(acts);
                };
                let Role::Member {
                    host,
                    joined,
                    roster,
                } = &mut g.role
                else {
                    return Ok(acts);
                };
                if *host != sid {
                    return Err("a roster from a peer that does not host the group");
                }
                for m in &members {
                    if !roster.iter().any(|r| r.user == m.user) && (*joined || m.user == me.0 .0) {
                        acts.push(ev(GroupEvent::Joined {
                            group,
                            title: g.title.clone(),
                            name: m.name.clone(),
                        }));
                    }
                }
                for r in roster.iter() {
                    if !members.iter().any(|m| m.user == r.user) {
                        acts.push(ev(GroupEvent::Left {
                            group,
                            title: g.title.clone(),
                            name: r.name.clone(),
                        }));
                    }
                }
                *joined = members.iter().any(|m| m.user == me.0 .0);
                *roster = members;
            }
            Inner::GroupPost { group, data } => {
                let Some(g) = self.map.get(&group) else {
                    return Ok(acts);
                };
                let Role::Host { members, .. } = &g.role else {
                    return Ok(acts);
                };
                if members.get(&from.user).is_none_or(|(_, s)| *s != sid) {
                    return Ok(acts); // not (or no longer) a member
                }
                for (user, (_, session)) in members {
                    if *user != from.user {
                        acts.push(Act::Seal(
                            *session,
                            Inner::GroupDeliver {
                                group,
                                from_user: from.user.0,
                                from_name: from.name.clone(),
                                data: data.clone(),
                            },
                        ));
                    }
                }
                acts.push(ev(GroupEvent::Message {
                    group,
                    title: g.title.clone(),
                    from: from.name.clone(),
                    user: from.user,
                    data,
                }));
            }
            Inner::GroupDeliver {
                group,
                from_user,
                from_name,
                data,
            } => {
                let Some(g) = self.map.get(&group) else {
                    return Ok(acts);
                };
                if let Role::Member {
                    host, joined: true, ..
                } = &g.role
                {
                    if *host != sid {
                        return Err("a group message from a peer that does not host the group");
                    }
                    acts.push(ev(GroupEvent::Message {
                        group,
                        title: g.title.clone(),
                        from: from_name,
                        user: UserPublic(from_user),
                        data,
                    }));
                }
            }
            _ => unreachable!("only group messages are routed here"),
        }
        Ok(acts)
    }
}

impl Node {
    fn me(&self) -> (UserPublic, String) {
        (self.identity.user(), self.identity.name.clone())
    }

    /// Group `group`'s title and current members (the host included), as
    /// this node knows them (host: its sessions; member: the host's last
    /// roster); `None` unless this node hosts or joined it.
    pub fn group_roster(&self, group: &Id) -> Option<(String, Vec<RosterMember>)> {
        let me = (
            self.identity.user(),
            self.identity.name.as_str(),
            self.identity.cert,
        );
        self.groups.roster(group, &me, &self.sessions)
    }

    /// Creates a group session hosted here and invites the peers of
    /// `sessions`. The group is advertised in this node's hellos.
    pub fn group_create(&mut self, title: &str, sessions: &[Id]) -> Result<Id> {
        if title.is_empty() || title.len() > MAX_TITLE {
            return Err(Error::BadName(title.to_string()));
        }
        if self.groups.map.len() >= self.config.max_groups {
            return Err(Error::Busy("groups"));
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        self.groups.map.insert(
            id,
            Group {
                title: title.to_string(),
                role: Role::Host {
                    invited: BTreeSet::new(),
                    members: BTreeMap::new(),
                },
            },
        );
        for s in sessions {
            self.group_invite(&id, s)?;
        }
        self.apply(vec![Act::Advertise]);
        Ok(id)
    }

    /// Host: invites the peer of `session` to `group`.
    pub fn group_invite(&mut self, group: &Id, session: &Id) -> Result<()> {
        let user = self
            .sessions
            .get(session)
            .ok_or_else(|| Error::NoSession(hex::encode(session)))?
            .user;
        let g = self
            .groups
            .map
            .get_mut(group)
            .ok_or_else(|| Error::NoGroup(hex::encode(group)))?;
        let Role::Host { invited, .. } = &mut g.role else {
            return Err(Error::NotGroupHost(g.title.clone()));
        };
        invited.insert(user);
        let title = g.title.clone();
        self.seal(
            session,
            &Inner::GroupInvite {
                group: *group,
                title,
            },
        )
    }

    /// Member: joins a group this node was invited to.
    pub fn group_join(&mut self, group: &Id) -> Result<()> {
        let g = self
            .groups
            .map
            .get(group)
            .ok_or_else(|| Error::NoGroup(hex::encode(group)))?;
        match &g.role {
            Role::Member { host, .. } => {
                let host = *host;
                self.seal(&host, &Inner::GroupJoin { group: *group })
            }
            Role::Host { .. } => Ok(()),
        }
    }

    /// Leaves a group; the host leaving ends it for every member.
    pub fn group_leave(&mut self, group: &Id) -> Result<()> {
        let g = self
            .groups
            .map
            .remove(group)
            .ok_or_else(|| Error::NoGroup(hex::encode(group)))?;
        let (_, my_name) = self.me();
        let mut acts = Vec::new();
        match g.role {
            Role::Host { members, .. } => {
                for (_, session) in members.values() {
                    acts.push(Act::Seal(*session, Inner::GroupLeave { group: *group }));
                }
                acts.push(Act::Advertise);
                acts.push(ev(GroupEvent::Closed {
                    group: *group,
                    title: g.title,
                }));
            }
            Role::Member { host, .. } => {
                acts.push(Act::Seal(host, Inner::GroupLeave { group: *group }));
                acts.push(ev(GroupEvent::Left {
                    group: *group,
                    title: g.title,
                    name: my_name,
                }));
            }
        }
        self.apply(acts);
        Ok(())
    }

    /// Sends opaque bytes to every current member of `group`.
    pub fn group_send(&mut self, group: &Id, data: Vec<u8>) -> Result<()> {
        if data.len() > MAX_DATAGRAM {
            return Err(Error::TooLarge {
                what: "group message",
                len: data.len(),
                max: MAX_DATAGRAM,
            });
        }
        let g = self
            .groups
            .map
            .get(group)
            .ok_or_else(|| Error::NoGroup(hex::encode(group)))?;
        let (me, my_name) = self.me();
        let acts = match &g.role {
            Role::Host { members, .. } => members
                .values()
                .map(|(_, s)| {
                    Act::Seal(
                        *s,
                        Inner::GroupDeliver {
                            group: *group,
                            from_user: me.0,
                            from_name: my_name.clone(),
                            data: data.clone(),
                        },
                    )
                })
                .collect(),
            Role::Member { host, joined, .. } => {
                if !joined {
                    return Err(Error::NoGroup(g.title.clone()));
                }
                vec![Act::Seal(
                    *host,
                    Inner::GroupPost {
                        group: *group,
                        data,
                    },
                )]
            }
        };
        self.apply(acts);
        Ok(())
    }

    /// The groups this node hosts, joined or was invited to.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let (_, my_name) = self.me();
        let mut v: Vec<GroupInfo> = self
            .groups
            .map
            .iter()
            .map(|(id, g)| {
                let (host, joined, members) = match &g.role {
                    Role::Host { members, .. } => (
                        true,
                        true,
                        std::iter::once(my_name.clone())
                            .chain(members.values().map(|(n, _)| n.clone()))
                            .collect(),
                    ),
                    Role::Member { joined, roster, .. } => (
                        false,
                        *joined,
                        roster.iter().map(|m| m.name.clone()).collect(),
                    ),
                };
                GroupInfo {
                    id: hex::encode(id),
                    title: g.title.clone(),
                    host,
                    joined,
                    members,
                }
            })
            .collect();
        v.sort_by(|a, b| a.title.cmp(&b.title));
        v
    }

    /// The id of the group titled `title` (or given as hex id).
    pub fn group_by_title(&self, title: &str) -> Option<Id> {
        self.groups
            .map
            .iter()
            .find(|(id, g)| g.title == title || hex::encode(id) == title)
            .map(|(id, _)| *id)
    }
}
