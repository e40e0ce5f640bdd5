//! Room traffic: sending entries to member devices, taking room datagrams
//! in during a sync, and the history requests and answers of the
//! unknown-room / unknown-sender and recovery flows.
//!
//! Receiving never touches the network: requests to send, answers to send
//! and datagrams to fetch are queued ([`Outgoing`]) and done by
//! [`Client::room_flush`] once the mailbox is drained.

use std::collections::HashMap;

use rand_core::OsRng;
use reqwest::Method;
use sotto_api::{b64, username_hash, MailboxItem};
use sotto_proto::room::{
    datagram_id, open_with_message_key, Built, EntryHash, EntryKind, Event, Grant, GroupId,
    HistoryAnswer, HistoryRequest, LocalMeta, MessageContent, Recovered, Requester, RoomLog,
    RoomWire, MAX_HAVE,
};
use sotto_proto::{content, DeviceCert, DeviceId, Opened, Payload, UserPublic};

use crate::body::{R as Reader, W as Writer};
use crate::rooms::{member_names, ROOM_NAMES};
use crate::sync::Outcome;
use crate::{check_username, random_id, Client, Error, Result, SyncReport};

/// Room work queued while the mailbox is processed.
pub(crate) enum Outgoing {
    /// Ask `to` (one device, or all of the user's) for history.
    Request {
        to: UserPublic,
        name: [u8; 32],
        device: Option<DeviceId>,
        request: HistoryRequest,
    },
    /// Answer a request from `device`.
    Answer {
        to: UserPublic,
        name: [u8; 32],
        device: DeviceId,
        answer: HistoryAnswer,
        names: Vec<String>,
    },
    /// Fetch a granted datagram by id and take its message in.
    Fetch {
        group: GroupId,
        datagram_id: [u8; 32],
        message_key: [u8; 32],
    },
}

fn encode_names(names: &[String]) -> Vec<u8> {
    let mut w = Writer(vec![crate::BODY_VERSION]);
    w.0.extend_from_slice(&(names.len() as u16).to_be_bytes());
    for n in names {
        w.name(n);
    }
    w.0
}

fn decode_names(bytes: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader(bytes);
    if r.u8()? != crate::BODY_VERSION {
        return None;
    }
    let n = r.u16()?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(r.name()?);
    }
    r.0.is_empty().then_some(out)
}

impl Client {
    /// Seals `body` once to every device of `to` (users of the room, by
    /// their username hashes in `names`; this user's other devices for
    /// oneself), or to `only` of them, and posts it. Returns the message key,
    /// the datagram id and whether another device of this user is among the
    /// recipients; `None` when no device could be addressed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn post_to_users(
        &mut self,
        group: &GroupId,
        names: &HashMap<UserPublic, [u8; 32]>,
        to: &[UserPublic],
        only: Option<DeviceId>,
        message_id: [u8; 16],
        content_type: u8,
        body: Vec<u8>,
        ttl: u32,
    ) -> Result<Option<([u8; 32], [u8; 32], bool)>> {
        let own = self.device.cert().user;
        let me = self.device.id();
        let mut devices: Vec<DeviceId> = Vec::new();
        let mut to_own = false;
        for user in to {
            let Some(hash) = names.get(user).copied().or_else(|| {
                (*user == own && !self.username.is_empty()).then(|| username_hash(&self.username))
            }) else {
                continue;
            };
            if self.rooms.drop_to.contains(&hash) {
                continue; // test hook: simulate a lost delivery
            }
            let certs = if *user == own {
                self.own_devices().await?
            } else {
                match self.fetch_by_hash(&hash).await? {
                    // The directory must still map the name to the member's key.
                    Some((u, certs)) if u == *user => certs,
                    _ => continue,
                }
            };
            let certs: Vec<DeviceCert> = certs
                .into_iter()
                .filter(|c| c.device != me && !matches!(only, Some(d) if d != c.device))
                .collect();
            if certs.is_empty() {
                continue;
            }
            let who = hex::encode(&hash[..8]);
            self.ensure_sessions_hash(&hash, &who, user, &certs).await?;
            for c in certs {
                if self.device.has_session(&c.device) && !devices.contains(&c.device) {
                    devices.push(c.device);
                    to_own |= *user == own;
                }
            }
        }
        if devices.is_empty() {
            return Ok(None);
        }
        let payload = Payload {
            message_id,
            conversation: group.0,
            sender: own,
            sent_at: self.room_now().await?,
            ttl,
            content_type,
            body,
        };
        let (datagram, key) = self.device.seal_with_key(&mut OsRng, &payload, &devices)?;
        let id = datagram_id(&datagram);
        let changes = self.device.take_changes();
        {
            let tx = self.store.transaction()?;
            tx.apply_device_changes(&self.device, &changes)?;
            tx.commit()?;
        }
        self.api
            .send(
                Method::POST,
                "/v1/messages",
                Some((datagram, "application/octet-stream")),
                Some(self.device.key()),
            )
            .await?;
        Ok(Some((*key, id, to_own)))
    }

    /// Sends an entry this device made to `built.recipients` and records
    /// the message key and datagram id beside it (for later grants).
    pub(crate) async fn send_entry(
        &mut self,
        log: &mut RoomLog,
        built: &Built,
        content: Option<MessageContent>,
    ) -> Result<()> {
        // Only messages expire; control entries are kept.
        let ttl = match &content {
            Some(_) => log.state().map_or(0, |s| s.ttl.0),
            None => 0,
        };
        let wire = RoomWire::Entry {
            entry: built.bytes.clone(),
            content,
        };
        let body = wire.encode()?;
        let names = member_names(log);
        let group = log.group();
        // The key and datagram id are kept (and later granted) only when
        // every device of this user may fetch the datagram: the server
        // serves it to users owning a recipient device. Otherwise answers
        // carry the content itself, checked against the signed digest.
        if let Some((message_key, datagram_id, true)) = self
            .post_to_users(
                &group,
                &names,
                &built.recipients,
                None,
                built.message_id,
                content::ROOM_CONTROL,
                body,
                ttl,
            )
            .await?
        {
            let _ = log.set_meta(
                &built.hash,
                LocalMeta {
                    message_key: Some(message_key),
                    datagram_id: Some(datagram_id),
                    purged: false,
                },
            );
        }
        Ok(())
    }

    /// Sends the usernames behind member hashes to `to`'s devices.
    pub(crate) async fn send_names(
        &mut self,
        log: &RoomLog,
        to: &[UserPublic],
        names: &[String],
    ) -> Result<()> {
        let map = member_names(log);
        let group = log.group();
        self.post_to_users(
            &group,
            &map,
            to,
            None,
            random_id(),
            ROOM_NAMES,
            encode_names(names),
            0,
        )
        .await?;
        Ok(())
    }

    /// A names hint: each name is kept under its own hash.
    pub(crate) fn room_names_receive(&mut self, opened: &Opened) -> Result<Outcome> {
        let Some(names) = decode_names(&opened.payload.body) else {
            return Ok(Outcome::Rejected("an unreadable room names list".into()));
        };
        for n in names {
            if let Ok(n) = check_username(&n) {
                self.store.put_room_name(&username_hash(&n), &n)?;
            }
        }
        Ok(Outcome::Ignored)
    }

    /// Takes in a `ROOM_CONTROL` datagram: an entry, a history request or
    /// an answer. Network work it calls for is queued.
    pub(crate) fn room_receive(&mut self, opened: &Opened, item: &MailboxItem) -> Result<Outcome> {
        let p = &opened.payload;
        let wire = match RoomWire::decode(&p.body) {
            Ok(w) => w,
            Err(e) => {
                return Ok(Outcome::Rejected(format!(
                    "an unreadable room message: {e}"
                )))
            }
        };
        let group = GroupId(p.conversation);
        match wire {
            RoomWire::Entry { entry, content } => {
                let mut log = self
                    .load_room(&group)?
                    .unwrap_or_else(|| RoomLog::new(group));
                let meta = LocalMeta {
                    message_key: Some(*opened.message_key),
                    datagram_id: b64::decode(&item.datagram).map(|b| datagram_id(&b)),
                    purged: false,
                };
                let delivery = match log.receive_delivery(&opened.sender, p, &entry, content, meta)
                {
                    Ok(d) => d,
                    Err(e) => {
                        return Ok(Outcome::Rejected(format!("a room entry was refused: {e}")))
                    }
                };
                self.take_update(&log, &delivery.update, opened.sender.device)?;
                if let Some(c) = &delivery.content {
                    // Kept even while the entry waits for its parents.
                    self.store_entry_content(&group, &entry, c)?;
                }
                self.drop_rejected(&delivery.update)?;
                self.save_room(&log)?;
                let lines = self.render(&log, &delivery.update.notices);
                self.keep_room(log);
                Ok(Outcome::Room(lines))
            }
            RoomWire::Request(request) => {
                let Some(log) = self.load_room(&group)? else {
                    return Ok(Outcome::Ignored);
                };
                let requester = opened.sender.user;
                let answer = match log.answer(&request, Requester::Member(requester), |h| {
                    self.content_of(h)
                }) {
                    Ok(a) => self.content_for_own(&log, &requester, a),
                    Err(e) => {
                        return Ok(Outcome::Rejected(format!(
                            "a room history request was refused: {e}"
                        )))
                    }
                };
                let names = member_names(&log);
                let Some(name) = names.get(&requester).copied() else {
                    return Ok(Outcome::Ignored);
                };
                let known = self.known_names(&log)?;
                self.keep_room(log);
                self.rooms.outbox.push(Outgoing::Answer {
                    to: requester,
                    name,
                    device: opened.sender.device,
                    answer,
                    names: known,
                });
                Ok(Outcome::Ignored)
            }
            RoomWire::Answer(answer) => {
                let mut log = self
                    .load_room(&group)?
                    .unwrap_or_else(|| RoomLog::new(group));
                let (update, recovered) = log.receive_answer(&answer);
                self.take_update(&log, &update, opened.sender.device)?;
                for r in recovered {
                    match r {
                        Recovered::Content { entry, content } => {
                            self.store_content(&log, &entry, &content)?
                        }
                        Recovered::Fetch {
                            datagram_id,
                            message_key,
                            ..
                        } => self.rooms.outbox.push(Outgoing::Fetch {
                            group,
                            datagram_id,
                            message_key,
                        }),
                    }
                }
                self.drop_rejected(&update)?;
                if answer.more {
                    let names = member_names(&log);
                    if let Some(name) = names.get(&opened.sender.user).copied() {
                        self.rooms.outbox.push(Outgoing::Request {
                            to: opened.sender.user,
                            name,
                            device: Some(opened.sender.device),
                            request: HistoryRequest {
                                group,
                                message_id: None,
                                have: heads(&log),
                            },
                        });
                    }
                }
                if log.state().is_some() {
                    self.save_room(&log)?;
                    let lines = self.render(&log, &update.notices);
                    self.keep_room(log);
                    return Ok(Outcome::Room(lines));
                }
                Ok(Outcome::Ignored)
            }
        }
    }

    /// Stores a delivered message's content under its entry hash (also
    /// while the entry waits for parents; dropped if it is discarded).
    fn store_entry_content(&self, group: &GroupId, entry: &[u8], c: &MessageContent) -> Result<()> {
        let e = sotto_proto::room::Entry::decode(entry)?;
        self.store
            .put_room_message(&sotto_store::client::RoomMessageRow {
                entry: EntryHash::of(entry).0,
                group: group.0,
                sender: e.sender.user.0,
                sent_at: e.timestamp,
                content_type: c.content_type,
                salt: c.salt,
                body: c.body.clone(),
            })?;
        Ok(())
    }

    /// Messages the log discarded (e.g. from a non-member) are not kept.
    fn drop_rejected(&self, update: &sotto_proto::room::Update) -> Result<()> {
        for n in &update.notices {
            if let Event::Rejected {
                kind: EntryKind::Standard,
                ..
            } = n.event
            {
                self.store.delete_room_message(&n.entry.0)?;
            }
        }
        Ok(())
    }

    /// Queues a history request to the sender of each entry now waiting
    /// for parents (unknown room, unknown sender, missing history).
    fn take_update(
        &mut self,
        log: &RoomLog,
        update: &sotto_proto::room::Update,
        via: DeviceId,
    ) -> Result<()> {
        for p in &update.pending {
            let Some(name) = self.pending_sender_name(log, &p.entry) else {
                continue;
            };
            let device = if p.device == via {
                Some(p.device)
            } else {
                None
            };
            let dup = self.rooms.outbox.iter().any(|o| {
                matches!(o, Outgoing::Request { request, device: d, .. } if request.group == log.group() && *d == device)
            });
            if !dup {
                self.rooms.outbox.push(Outgoing::Request {
                    to: p.sender,
                    name,
                    device,
                    request: HistoryRequest {
                        group: log.group(),
                        message_id: Some(p.message_id),
                        have: heads(log),
                    },
                });
            }
        }
        Ok(())
    }

    fn pending_sender_name(&self, log: &RoomLog, entry: &EntryHash) -> Option<[u8; 32]> {
        log.records()
            .iter()
            .find(|r| r.hash == *entry)
            .and_then(|r| sotto_proto::room::Entry::decode(&r.bytes).ok())
            .map(|e| e.sender_name)
    }

    /// A message the requester's own user sent went to the other members'
    /// devices (and to its sender's other devices only if it had any then):
    /// the server may not serve that datagram to the requester, so such
    /// grants carry the content (checked against the signed digest) instead
    /// of the key.
    fn content_for_own(
        &self,
        log: &RoomLog,
        requester: &UserPublic,
        mut answer: HistoryAnswer,
    ) -> HistoryAnswer {
        for g in answer.grants.iter_mut() {
            let Grant::Key { entry, .. } = g else {
                continue;
            };
            let entry = *entry;
            let own = log
                .entry(&entry)
                .is_some_and(|e| e.sender.user == *requester);
            if let (true, Some(content)) = (own, self.content_of(&entry)) {
                *g = Grant::Content { entry, content };
            }
        }
        answer
    }

    fn content_of(&self, entry: &EntryHash) -> Option<MessageContent> {
        // Only the answering device's own rows; a missing row grants nothing.
        let rows = self.store.room_message_by_entry(&entry.0).ok()??;
        Some(MessageContent {
            salt: rows.salt,
            content_type: rows.content_type,
            body: rows.body,
        })
    }

    /// Sends a new member what it is entitled to (the control history, the
    /// message entries, no grants for what preceded its joining), as the
    /// answer to the request it would otherwise send.
    pub(crate) async fn welcome(
        &mut self,
        log: &RoomLog,
        user: UserPublic,
        name: [u8; 32],
    ) -> Result<()> {
        let request = HistoryRequest {
            group: log.group(),
            message_id: None,
            have: Vec::new(),
        };
        let answer = log
            .answer(&request, Requester::Member(user), |h| self.content_of(h))
            .map_err(crate::rooms::room_error)?;
        let answer = self.content_for_own(log, &user, answer);
        let names = HashMap::from([(user, name)]);
        let body = RoomWire::Answer(answer).encode()?;
        self.post_to_users(
            &log.group(),
            &names,
            &[user],
            None,
            random_id(),
            content::ROOM_CONTROL,
            body,
            0,
        )
        .await?;
        Ok(())
    }

    /// Sends what the last sync queued: history requests, answers (with a
    /// names hint first), and fetches of granted datagrams.
    pub(crate) async fn room_flush(&mut self, report: &mut SyncReport) -> Result<()> {
        let queued = std::mem::take(&mut self.rooms.outbox);
        for o in queued {
            match o {
                Outgoing::Request {
                    to,
                    name,
                    device,
                    request,
                } => {
                    if self.request_settled(&request)? {
                        continue;
                    }
                    let names = HashMap::from([(to, name)]);
                    let body = RoomWire::Request(request.clone()).encode()?;
                    self.post_to_users(
                        &request.group,
                        &names,
                        &[to],
                        device,
                        random_id(),
                        content::ROOM_CONTROL,
                        body,
                        0,
                    )
                    .await?;
                }
                Outgoing::Answer {
                    to,
                    name,
                    device,
                    answer,
                    names: known,
                } => {
                    let names = HashMap::from([(to, name)]);
                    let group = answer.group;
                    if !known.is_empty() {
                        self.post_to_users(
                            &group,
                            &names,
                            &[to],
                            Some(device),
                            random_id(),
                            ROOM_NAMES,
                            encode_names(&known),
                            0,
                        )
                        .await?;
                    }
                    let body = RoomWire::Answer(answer).encode()?;
                    self.post_to_users(
                        &group,
                        &names,
                        &[to],
                        Some(device),
                        random_id(),
                        content::ROOM_CONTROL,
                        body,
                        0,
                    )
                    .await?;
                }
                Outgoing::Fetch {
                    group,
                    datagram_id,
                    message_key,
                } => match self.fetch_granted(&group, &datagram_id, &message_key).await {
                    Ok(lines) => report.room_lines.extend(lines),
                    Err(e) => report.rejected.push(format!(
                        "a granted room message ({}) could not be fetched: {e}",
                        hex::encode(&datagram_id[..8])
                    )),
                },
            }
        }
        Ok(())
    }

    /// A request for a message that is no longer waiting for parents (an
    /// answer later in the same sync brought them) need not go out.
    fn request_settled(&self, request: &HistoryRequest) -> Result<bool> {
        let Some(id) = request.message_id else {
            return Ok(false);
        };
        let Some(log) = self.load_room(&request.group)? else {
            return Ok(false);
        };
        Ok(log.state().is_some() && !log.pending().iter().any(|p| p.message_id == id))
    }

    /// Fetches a datagram by id, opens it with a granted key and takes its
    /// entry and content in.
    async fn fetch_granted(
        &mut self,
        group: &GroupId,
        id: &[u8; 32],
        key: &[u8; 32],
    ) -> Result<Vec<String>> {
        let path = format!("/v1/datagrams/{}", hex::encode(id));
        let bytes = self
            .api
            .send(Method::GET, &path, None, Some(self.device.key()))
            .await?;
        if datagram_id(&bytes) != *id {
            return Err(Error::BadResponse(
                "the fetched datagram does not match its id".into(),
            ));
        }
        let (sender, payload) = open_with_message_key(&bytes, key)?;
        let RoomWire::Entry { entry, content } = RoomWire::decode(&payload.body)? else {
            return Err(Error::BadResponse(
                "a granted datagram is not a room entry".into(),
            ));
        };
        let mut log = self
            .load_room(group)?
            .unwrap_or_else(|| RoomLog::new(*group));
        let meta = LocalMeta {
            message_key: Some(*key),
            datagram_id: Some(*id),
            purged: false,
        };
        let d = log
            .receive_delivery(&sender, &payload, &entry, content, meta)
            .map_err(crate::rooms::room_error)?;
        if let Some(c) = &d.content {
            self.store_content(&log, &d.entry, c)?;
        }
        self.save_room(&log)?;
        Ok(self.render(&log, &d.update.notices))
    }

    /// Asks `from` (a member's username; this user's other devices when
    /// `None`) for the history of the room `room` (title or hex id) that
    /// this user is entitled to. The answer arrives with the next syncs.
    pub async fn room_recover(&mut self, room: &str, from: Option<&str>) -> Result<()> {
        let _guard = self.begin().await?;
        let group = match self.find_room(room) {
            Ok(g) => g,
            Err(e) => GroupId(sotto_api::hex32(room.trim()).ok_or(e)?),
        };
        let log = self
            .load_room(&group)?
            .unwrap_or_else(|| RoomLog::new(group));
        let me = self.require_username()?.to_string();
        let from = match from {
            Some(f) => check_username(f)?,
            None => me.clone(),
        };
        let (user, _) = if from == me {
            (self.device.cert().user, Vec::new())
        } else {
            self.resolve(&from).await?
        };
        let names = HashMap::from([(user, username_hash(&from))]);
        let body = RoomWire::Request(HistoryRequest {
            group,
            message_id: None,
            have: heads(&log),
        })
        .encode()?;
        let sent = self
            .post_to_users(
                &group,
                &names,
                &[user],
                None,
                random_id(),
                content::ROOM_CONTROL,
                body,
                0,
            )
            .await?;
        if sent.is_none() {
            return Err(Error::NoDevices(from));
        }
        Ok(())
    }
}

fn heads(log: &RoomLog) -> Vec<EntryHash> {
    let mut h = log.heads();
    h.truncate(MAX_HAVE);
    h
}
