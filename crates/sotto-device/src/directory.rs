//! What this device knows of other users: directory answers checked
//! against the keys it trusts (trust on first use, a changed key refused
//! until accepted), contacts, safety numbers, blocks, and the history.

use sotto_proto::{
    check_contact_key, normalize_username, safety_number, username_hash, ContactKey, DeviceCert,
    DeviceId, SafetyNumber, UserPublic,
};

use crate::events::{ContactInfo, DeviceInfo};
use crate::ids::peer_name;
use crate::machine::Machine;
use crate::ops::{expect, unexpected, Job, Op, OpId, Output, Reply, Step};
use crate::request::{Directory, Lookup, Request, Response};
use crate::store::{ChangeSet, Contact, HistoryQuery, Message};
use crate::{Error, Result};

/// The certificates among `encoded` that decode and were made by `user`'s
/// key.
pub(crate) fn verified_certs(encoded: &[Vec<u8>], user: &UserPublic) -> Vec<DeviceCert> {
    encoded
        .iter()
        .filter_map(|d| DeviceCert::decode(d).ok())
        .filter(|c| c.verify_for(user).is_ok())
        .collect()
}

/// The stored record of contact `username` with key `user` and devices
/// `certs`.
pub(crate) fn contact_record(
    username: &str,
    user: &UserPublic,
    verified: bool,
    certs: &[DeviceCert],
) -> Contact {
    Contact {
        username: username.to_string(),
        username_hash: username_hash(username),
        user_key: user.0,
        verified,
        devices: certs.iter().map(|c| c.encode()).collect(),
    }
}

/// The directory answer of a lookup: `None` is no such user.
pub(crate) fn directory(reply: Reply) -> Result<Option<Directory>> {
    match expect(reply)? {
        Response::User(d) => Ok(d),
        other => Err(unexpected("lookup", &other)),
    }
}

impl Machine {
    /// Checks the key the directory shows for `username` against the one
    /// trusted (trust on first use; [`Error::KeyChanged`] when it differs),
    /// records it with the devices, and returns the verified certificates.
    pub(crate) fn accept_directory(
        &mut self,
        username: &str,
        dir: &Directory,
    ) -> Result<Vec<DeviceCert>> {
        let certs = verified_certs(&dir.devices, &dir.user);
        if !self.username.is_empty() && username == self.username {
            // Oneself: the key is the one that certified this device.
            if dir.user != self.device.cert().user {
                return Err(Error::KeyChanged {
                    username: username.to_string(),
                });
            }
            return Ok(certs);
        }
        let known = self.store.contact(username)?;
        let known_key = known.as_ref().map(|c| UserPublic(c.user_key));
        if let ContactKey::Changed { .. } = check_contact_key(known_key.as_ref(), &dir.user) {
            return Err(Error::KeyChanged {
                username: username.to_string(),
            });
        }
        let verified = known.is_some_and(|c| c.verified);
        self.commit(ChangeSet {
            contacts: vec![contact_record(username, &dir.user, verified, &certs)],
            ..ChangeSet::default()
        })?;
        Ok(certs)
    }

    fn safety_with(&self, user: &UserPublic) -> SafetyNumber {
        safety_number(&self.device.cert().user, user)
    }

    /// This user's devices, as the directory lists them.
    pub fn devices(&mut self, now: u64) -> Op<Vec<DeviceInfo>> {
        self.now = now;
        self.start(Job::Lookup(LookupJob::new(LookupKind::Devices, None)))
    }

    /// Removes a device of this user (lost or stolen; `device_id` in hex,
    /// as [`Machine::devices`] lists it): the transport forgets it and
    /// refuses it from then on, so other users stop encrypting to it. Only
    /// the device holding the user key can sign that ([`Error::NoUserKey`]).
    pub fn remove_device(&mut self, now: u64, device_id: &str) -> Result<Op<()>> {
        self.now = now;
        let user_key = self.user_key.as_ref().ok_or(Error::NoUserKey)?;
        let unknown = || Error::UnknownDevice(device_id.to_string());
        let bytes = hex::decode(device_id.trim()).map_err(|_| unknown())?;
        let device = DeviceId(bytes.try_into().map_err(|_| unknown())?);
        let time_ms = self.master_now();
        let signature = user_key.sign_removal(&device, time_ms);
        Ok(self.start(Job::Remove(RemoveJob {
            request: Some(Request::RemoveDevice {
                device,
                time_ms,
                signature,
            }),
            id: device_id.to_string(),
        })))
    }

    /// The safety number of this user and `username`, to compare out of
    /// band. Looks the user up (trusting a first key); fails with
    /// [`Error::KeyChanged`] if the directory now shows another key.
    pub fn verify(&mut self, now: u64, username: &str) -> Result<Op<SafetyNumber>> {
        self.lookup_op(now, LookupKind::Verify, username)
    }

    /// The safety number with the key the directory shows for `username`
    /// now, without accepting it: what to compare after
    /// [`Error::KeyChanged`], before [`Machine::trust`].
    pub fn presented_safety_number(
        &mut self,
        now: u64,
        username: &str,
    ) -> Result<Op<SafetyNumber>> {
        self.lookup_op(now, LookupKind::Presented, username)
    }

    /// Accepts the key the directory now shows for `username` (after
    /// [`Error::KeyChanged`]): replaces the stored key, clears "verified",
    /// forgets the sessions with the old key's devices, and returns the
    /// new safety number.
    pub fn trust(&mut self, now: u64, username: &str) -> Result<Op<SafetyNumber>> {
        self.lookup_op(now, LookupKind::Trust, username)
    }

    fn lookup_op(
        &mut self,
        now: u64,
        kind: LookupKind,
        username: &str,
    ) -> Result<Op<SafetyNumber>> {
        self.now = now;
        let name = peer_name(username)?;
        Ok(self.start(Job::Lookup(LookupJob::new(kind, Some(name)))))
    }

    /// Records that the user compared safety numbers with `username` and
    /// they matched.
    pub fn mark_verified(&mut self, username: &str) -> Result<()> {
        let mut c = self
            .store
            .contact(username)?
            .ok_or_else(|| Error::UnknownUser(username.to_string()))?;
        c.verified = true;
        self.commit(ChangeSet {
            contacts: vec![c],
            ..ChangeSet::default()
        })
    }

    /// Refuses messages from `username`: the transport refuses their
    /// datagrams to this user, and this device drops any that still arrive.
    pub fn block(&mut self, now: u64, username: &str) -> Result<Op<()>> {
        self.block_op(now, username, true)
    }

    /// Accepts messages from `username` again.
    pub fn unblock(&mut self, now: u64, username: &str) -> Result<Op<()>> {
        self.block_op(now, username, false)
    }

    fn block_op(&mut self, now: u64, username: &str, block: bool) -> Result<Op<()>> {
        self.now = now;
        let name = peer_name(username)?;
        Ok(self.start(Job::Block(BlockJob { name, block })))
    }

    /// Users this device refuses messages from.
    pub fn blocked(&self) -> Result<Vec<String>> {
        Ok(self.store.blocked()?)
    }

    /// Known contacts.
    pub fn contacts(&self) -> Result<Vec<ContactInfo>> {
        Ok(self
            .store
            .contacts()?
            .into_iter()
            .map(|c| ContactInfo {
                username: c.username,
                user_key: UserPublic(c.user_key),
                verified: c.verified,
                devices: c.devices.len(),
            })
            .collect())
    }

    /// Stored messages, oldest first: all, or only those exchanged with
    /// `with`; the newest `limit` if given. Messages whose TTL ran out by
    /// the master clock are deleted first.
    pub fn history(
        &mut self,
        now: u64,
        with: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Message>> {
        self.now = now;
        self.commit(ChangeSet {
            expire_messages_at: Some(self.master_now()),
            ..ChangeSet::default()
        })?;
        let q = HistoryQuery {
            conversation: None,
            peer: with.map(normalize_username),
            limit,
        };
        Ok(self.store.history(&q)?)
    }
}

#[derive(Clone, Copy)]
pub(crate) enum LookupKind {
    Devices,
    Verify,
    Presented,
    Trust,
}

/// A command that is one directory lookup and a decision.
pub(crate) struct LookupJob {
    kind: LookupKind,
    name: Option<String>,
}

impl LookupJob {
    fn new(kind: LookupKind, name: Option<String>) -> LookupJob {
        LookupJob { kind, name }
    }

    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Result<Step> {
        let lookup = match &self.name {
            Some(n) => Lookup::User(username_hash(n)),
            None => Lookup::Own,
        };
        m.request(op, Request::Lookup(lookup));
        Ok(Step::Wait)
    }

    pub(crate) fn on_reply(&mut self, m: &mut Machine, reply: Reply) -> Result<Step> {
        let dir = directory(reply)?;
        let name = self.name.clone().unwrap_or_default();
        let Some(dir) = dir else {
            return Err(match self.kind {
                LookupKind::Devices => Error::BadAnswer("this user is not in the directory".into()),
                _ => Error::UnknownUser(name),
            });
        };
        let out = match self.kind {
            LookupKind::Devices => {
                let me = m.device.id();
                Output::Devices(
                    verified_certs(&dir.devices, &m.device.cert().user)
                        .into_iter()
                        .map(|c| DeviceInfo {
                            id: c.device,
                            created_at: c.created_at,
                            this_device: c.device == me,
                        })
                        .collect(),
                )
            }
            LookupKind::Verify => {
                m.accept_directory(&name, &dir)?;
                Output::Safety(m.safety_with(&dir.user))
            }
            LookupKind::Presented => Output::Safety(m.safety_with(&dir.user)),
            LookupKind::Trust => {
                let certs = verified_certs(&dir.devices, &dir.user);
                // Sessions with the devices of the old key are of no use.
                if let Some(old) = m.store.contact(&name)? {
                    if old.user_key != dir.user.0 {
                        for d in old
                            .devices
                            .iter()
                            .filter_map(|d| DeviceCert::decode(d).ok())
                        {
                            m.device.forget_peer(&d.device);
                        }
                    }
                }
                m.commit(ChangeSet {
                    contacts: vec![contact_record(&name, &dir.user, false, &certs)],
                    ..ChangeSet::default()
                })?;
                Output::Safety(m.safety_with(&dir.user))
            }
        };
        Ok(Step::Done(Ok(out)))
    }
}

/// Block or unblock: the transport first, then this device.
pub(crate) struct BlockJob {
    name: String,
    block: bool,
}

impl BlockJob {
    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Result<Step> {
        let user = username_hash(&self.name);
        m.request(
            op,
            if self.block {
                Request::Block { user }
            } else {
                Request::Unblock { user }
            },
        );
        Ok(Step::Wait)
    }

    pub(crate) fn on_reply(&mut self, m: &mut Machine, reply: Reply) -> Result<Step> {
        expect(reply)?;
        m.commit(ChangeSet {
            blocks: vec![(self.name.clone(), self.block)],
            ..ChangeSet::default()
        })?;
        Ok(Step::Done(Ok(Output::Unit)))
    }
}

/// Removing a device of this user: one request, signed when it was made.
pub(crate) struct RemoveJob {
    request: Option<Request>,
    /// The id as the user typed it, for the error.
    id: String,
}

impl RemoveJob {
    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Result<Step> {
        if let Some(r) = self.request.take() {
            m.request(op, r);
        }
        Ok(Step::Wait)
    }

    pub(crate) fn on_reply(&mut self, reply: Reply) -> Result<Step> {
        Ok(Step::Done(match expect(reply)? {
            Response::Done => Ok(Output::Unit),
            Response::UnknownDevice => Err(Error::UnknownDevice(self.id.clone())),
            other => Err(unexpected("device removal", &other)),
        }))
    }
}
