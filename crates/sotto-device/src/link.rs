//! A user's devices: registering a new user with its first device, making
//! a new device ([`NewDevice`], shown as a code), and approving it from the
//! device that holds the user key ([`Machine::approve`]), which then sends
//! the new device the user's name, contacts and block list (link sync).
//!
//! The approval is bound to the code the user typed (a hash of the waiting
//! device's keys); binding it to a secret that never reaches the transport
//! belongs here too when it comes.

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use sotto_proto::{
    content, username_hash, Device, DeviceCert, DeviceId, DeviceKey, DevicePublicKeys, PrekeyKind,
    PrekeySecret, SignedPrekey, UserKey, UserPublic,
};

use crate::body::{LinkSyncBody, SyncContact};
use crate::deliver::{Check, Conversation, Deliver, Delivered, Draft, Target};
use crate::events::DeviceInfo;
use crate::ids::{check_username, conversation_id, random_id};
use crate::machine::Machine;
use crate::ops::{expect, unexpected, Job, Op, OpId, Output, Reply, Step};
use crate::prekeys::{generate_prekeys, PREKEY_BATCH};
use crate::request::{Request, RequestId, Response};
use crate::store::{Account, ChangeSet, Store};
use crate::{Error, Result};

/// Where a new device's account says it talks to: the server and its
/// pinned certificate (empty for none), and the measured clock offset.
#[derive(Clone, Debug, Default)]
pub struct Home {
    pub server_url: String,
    pub server_fingerprint: String,
    pub clock_offset_ms: i64,
}

/// A new user and its first device, until the transport accepted them.
pub struct NewUser {
    username: String,
    user_key: UserKey,
    device: Device,
    prekeys: Vec<SignedPrekey>,
    reserve: SignedPrekey,
}

impl NewUser {
    /// Keys for user `username`: a user key, a device key certified by it
    /// at `master_now`, [`PREKEY_BATCH`] one-time prekeys and a reserve.
    pub fn new(
        mut rng: &mut dyn CryptoRngCore,
        master_now: u64,
        username: &str,
    ) -> Result<NewUser> {
        let username = check_username(username)?;
        let user_key = UserKey::generate(&mut rng);
        let key = DeviceKey::generate(&mut rng);
        let cert = user_key.certify(&key.public_keys(), master_now);
        let mut device = Device::new(key, cert)?;
        let (prekeys, reserve) = generate_prekeys(&mut device, rng, PREKEY_BATCH, true);
        Ok(NewUser {
            username,
            user_key,
            device,
            prekeys,
            reserve: reserve.expect("asked for a reserve"),
        })
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// The device key (signs the registration).
    pub fn device_key(&self) -> &DeviceKey {
        self.device.key()
    }

    pub fn cert(&self) -> &DeviceCert {
        self.device.cert()
    }

    pub fn prekeys(&self) -> &[SignedPrekey] {
        &self.prekeys
    }

    pub fn reserve(&self) -> &SignedPrekey {
        &self.reserve
    }

    /// The transport accepted the registration: stores the account and the
    /// prekey secrets in `store` and returns the running device.
    pub fn finish(
        mut self,
        mut store: Box<dyn Store>,
        rng: Box<dyn CryptoRngCore + Send + Sync>,
        home: Home,
    ) -> Result<Machine> {
        let account = Account {
            username: self.username.clone(),
            user_key: Some(self.user_key.to_bytes()),
            device_key: self.device.key().to_bytes(),
            device_cert: self.device.cert().encode(),
            server_url: home.server_url,
            server_fingerprint: home.server_fingerprint,
            cursor: 0,
            next_prekey_id: self.device.next_prekey_id(),
            clock_offset_ms: home.clock_offset_ms,
        };
        let changes = self.device.take_changes();
        store.commit(ChangeSet {
            account: Some(account),
            prekeys: changes
                .prekeys_added
                .iter()
                .filter_map(|id| Some((*id, Some(self.device.prekey_bytes(*id)?))))
                .collect(),
            ..ChangeSet::default()
        })?;
        Machine::load(store, rng)
    }
}

/// The code suffix: a hash of the waiting device's keys, so the approving
/// device can check it approves this device and not one an attacker
/// slipped in under the same link id.
fn link_code_suffix(device: &DeviceId, dh: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"sotto/v1/link-code\0");
    h.update(device.0);
    h.update(dh);
    hex::encode(&h.finalize()[..6])
}

/// Link ids go into URL paths: short, URL-safe.
fn valid_link_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new device waiting to be approved by a device of the user it joins.
pub struct NewDevice {
    key: DeviceKey,
    secrets: Vec<PrekeySecret>,
    prekeys: Vec<SignedPrekey>,
    reserve: SignedPrekey,
    next_prekey_id: u32,
}

impl NewDevice {
    /// A device key, [`PREKEY_BATCH`] one-time prekeys and a reserve.
    pub fn new(mut rng: &mut dyn CryptoRngCore) -> NewDevice {
        let key = DeviceKey::generate(&mut rng);
        let mut secrets = Vec::new();
        let mut prekeys = Vec::new();
        let mut next = 1u32;
        for _ in 0..PREKEY_BATCH {
            let (p, s) = key.generate_prekey(&mut rng, next, PrekeyKind::OneTime);
            prekeys.push(p);
            secrets.push(s);
            next += 1;
        }
        let (reserve, s) = key.generate_prekey(&mut rng, next, PrekeyKind::Reserve);
        secrets.push(s);
        NewDevice {
            key,
            secrets,
            prekeys,
            reserve,
            next_prekey_id: next + 1,
        }
    }

    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    pub fn public_keys(&self) -> DevicePublicKeys {
        self.key.public_keys()
    }

    pub fn prekeys(&self) -> &[SignedPrekey] {
        &self.prekeys
    }

    pub fn reserve(&self) -> &SignedPrekey {
        &self.reserve
    }

    /// The code to show the user for the request waiting under `link_id`:
    /// `<link_id>-<12 hex>`, the suffix naming this device's keys.
    pub fn code(&self, link_id: &str) -> Result<String> {
        if !valid_link_id(link_id) {
            return Err(Error::BadAnswer(format!("bad link id {link_id:?}")));
        }
        let public = self.key.public_keys();
        Ok(format!(
            "{link_id}-{}",
            link_code_suffix(&public.id, &public.dh)
        ))
    }

    /// The device was approved with certificate `cert`: checks that it
    /// certifies this device's keys, stores the account (its user name
    /// arrives later by link sync) and returns the running device.
    pub fn finish(
        self,
        cert: &[u8],
        mut store: Box<dyn Store>,
        rng: Box<dyn CryptoRngCore + Send + Sync>,
        home: Home,
    ) -> Result<Machine> {
        let cert = DeviceCert::decode(cert)?;
        let public = self.key.public_keys();
        if cert.device != public.id || cert.dh != public.dh {
            return Err(Error::LinkCodeMismatch);
        }
        cert.verify()?;
        let prekeys = self
            .secrets
            .iter()
            .map(|s| (s.id, Some(s.to_bytes())))
            .collect();
        store.commit(ChangeSet {
            account: Some(Account {
                username: String::new(),
                user_key: None,
                device_key: self.key.to_bytes(),
                device_cert: cert.encode(),
                server_url: home.server_url,
                server_fingerprint: home.server_fingerprint,
                cursor: 0,
                next_prekey_id: self.next_prekey_id,
                clock_offset_ms: home.clock_offset_ms,
            }),
            prekeys,
            ..ChangeSet::default()
        })?;
        Machine::load(store, rng)
    }
}

/// Splits a typed code into link id and suffix.
fn parse_code(code: &str) -> Result<(String, String)> {
    let code = code.trim();
    let bad = || Error::BadLinkCode(code.to_string());
    let (link_id, suffix) = code.rsplit_once('-').ok_or_else(bad)?;
    if !valid_link_id(link_id)
        || suffix.len() != 12
        || !suffix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad());
    }
    Ok((link_id.to_string(), suffix.to_lowercase()))
}

enum ApprovePhase {
    Reading,
    Approving(DeviceCert),
    Syncing(DeviceCert, Box<Deliver>),
}

/// Approving a waiting device: read its keys, check the code, certify,
/// hand over the certificate, then send the link sync.
pub(crate) struct Approve {
    link_id: String,
    suffix: String,
    phase: ApprovePhase,
}

impl Approve {
    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Result<Step> {
        m.request(
            op,
            Request::ReadLink {
                link_id: self.link_id.clone(),
            },
        );
        Ok(Step::Wait)
    }

    pub(crate) fn on_reply(
        &mut self,
        m: &mut Machine,
        op: OpId,
        id: RequestId,
        reply: Reply,
    ) -> Result<Step> {
        match &mut self.phase {
            ApprovePhase::Reading => {
                let waiting = match expect(reply)? {
                    Response::LinkRequest(Some(w)) => w,
                    Response::LinkRequest(None) => return Err(Error::LinkExpired),
                    other => return Err(unexpected("link lookup", &other)),
                };
                if link_code_suffix(&waiting.device, &waiting.dh) != self.suffix {
                    return Err(Error::LinkCodeMismatch);
                }
                let user_key = m.user_key.as_ref().ok_or(Error::NoUserKey)?;
                let keys = DevicePublicKeys {
                    id: waiting.device,
                    dh: waiting.dh,
                };
                let cert = user_key.certify(&keys, m.master_now());
                m.request(
                    op,
                    Request::ApproveLink {
                        link_id: self.link_id.clone(),
                        cert,
                    },
                );
                self.phase = ApprovePhase::Approving(cert);
                Ok(Step::Wait)
            }
            ApprovePhase::Approving(cert) => {
                match expect(reply)? {
                    Response::Done => {}
                    Response::LinkGone => return Err(Error::LinkExpired),
                    other => return Err(unexpected("link approval", &other)),
                }
                let cert = *cert;
                let mut deliver = Box::new(link_sync(m, cert)?);
                let d = deliver.start(m, op)?;
                self.phase = ApprovePhase::Syncing(cert, deliver);
                Ok(self.synced(m, d))
            }
            ApprovePhase::Syncing(_, deliver) => {
                let d = deliver.on_reply(m, op, id, reply)?;
                Ok(self.synced(m, d))
            }
        }
    }

    fn synced(&self, m: &Machine, d: Option<Delivered>) -> Step {
        let ApprovePhase::Syncing(cert, _) = &self.phase else {
            return Step::Wait;
        };
        match d {
            None => Step::Wait,
            Some(Delivered::Nobody) => Step::fail(Error::NoDevices(m.username.clone())),
            Some(Delivered::Posted { .. }) => Step::Done(Ok(Output::Device(DeviceInfo {
                id: cert.device,
                created_at: cert.created_at,
                this_device: false,
            }))),
        }
    }
}

/// The delivery of this user's name, contacts and block list to the new
/// device `cert`.
fn link_sync(m: &mut Machine, cert: DeviceCert) -> Result<Deliver> {
    let contacts = m
        .store
        .contacts()?
        .into_iter()
        .map(|c| SyncContact {
            username: c.username,
            user_key: UserPublic(c.user_key),
            verified: c.verified,
        })
        .collect();
    let body = LinkSyncBody {
        username: m.username.clone(),
        contacts,
        blocked: m.store.blocked()?,
    }
    .encode();
    let own = m.device.cert().user;
    let target = Target {
        name_hash: username_hash(&m.username),
        who: m.username.clone(),
        check: Check::Own,
        certs: Some(vec![cert]),
        only: None,
    };
    let draft = Draft {
        message_id: random_id(&mut *m.rng),
        conversation: Conversation::Fixed(conversation_id(&own, &own)),
        content_type: content::LINK_SYNC,
        body,
        ttl: 0,
        room: false,
    };
    Ok(Deliver::new(vec![target], draft))
}

impl Machine {
    /// Approves a new device of this user from its link `code` (as the new
    /// device showed it). Needs the user key. Checks the code names the
    /// waiting device's keys, certifies them, and sends the new device this
    /// user's name, contacts and block list.
    pub fn approve(&mut self, now: u64, code: &str) -> Result<Op<DeviceInfo>> {
        self.now = now;
        if self.user_key.is_none() {
            return Err(Error::NoUserKey);
        }
        let (link_id, suffix) = parse_code(code)?;
        Ok(self.start(Job::Approve(Box::new(Approve {
            link_id,
            suffix,
            phase: ApprovePhase::Reading,
        }))))
    }
}
