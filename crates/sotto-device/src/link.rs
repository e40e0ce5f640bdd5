//! A user's devices: registering a new user with its first device, making
//! a new device ([`NewDevice`], shown as a code), and approving it from the
//! device that holds the user key ([`Machine::approve`]), which hands the
//! new device its certificate and the user's name, contacts and block list
//! (link sync) in one approval.
//!
//! The code carries a secret of the new device ([`LinkSecret`], 130 bits)
//! that never reaches the transport: the waiting request proves it was
//! made by the device showing the code, and the approval (certificate and
//! link sync, signed by the user key) is sealed under a key from it. The
//! new device opens it, checks the account against the directory, shows
//! who it joins and only then stores the account (docs/protocol.md,
//! "Linking a device").

use rand_core::CryptoRngCore;
use sotto_proto::{
    user_fingerprint, username_hash, Device, DeviceCert, DeviceKey, DevicePublicKeys, LinkApproval,
    LinkSecret, PrekeyKind, PrekeySecret, SignedPrekey, UserKey, UserPublic,
};
use zeroize::Zeroizing;

use crate::body::{LinkSyncBody, SyncContact};
use crate::directory::contact_record;
use crate::events::DeviceInfo;
use crate::ids::check_username;
use crate::machine::Machine;
use crate::ops::{expect, unexpected, Job, Op, OpId, Output, Reply, Step};
use crate::prekeys::{generate_prekeys, PREKEY_BATCH};
use crate::request::{Directory, Request, RequestId, Response};
use crate::store::{Account, ChangeSet, Contact, Store};
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

/// Link ids go into URL paths: short, URL-safe.
fn valid_link_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new device waiting to be approved by a device of the user it joins.
/// It holds the link secret of its code (never sent to the transport).
pub struct NewDevice {
    key: DeviceKey,
    secrets: Vec<PrekeySecret>,
    prekeys: Vec<SignedPrekey>,
    reserve: SignedPrekey,
    next_prekey_id: u32,
    link_secret: LinkSecret,
}

impl NewDevice {
    /// A device key, [`PREKEY_BATCH`] one-time prekeys, a reserve and a
    /// fresh link secret.
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
        let link_secret = LinkSecret::generate(&mut rng);
        NewDevice {
            key,
            secrets,
            prekeys,
            reserve,
            next_prekey_id: next + 1,
            link_secret,
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

    /// The proof, in the link request, that the device showing the code
    /// is the one whose keys the request carries (a MAC over them under a
    /// key from the link secret).
    pub fn request_proof(&self) -> [u8; 32] {
        self.link_secret.request_proof(&self.key.public_keys())
    }

    /// The code to show the user for the request waiting under `link_id`:
    /// `<link_id>-<26 letters and digits>`, the second part being the link
    /// secret (130 bits).
    /// Zeroized on drop, as the secret.
    pub fn code(&self, link_id: &str) -> Result<Zeroizing<String>> {
        if !valid_link_id(link_id) {
            return Err(Error::BadAnswer(format!("bad link id {link_id:?}")));
        }
        let secret = self.link_secret.text();
        let mut code = Zeroizing::new(String::with_capacity(link_id.len() + 1 + secret.len()));
        code.push_str(link_id);
        code.push('-');
        code.push_str(&secret);
        Ok(code)
    }

    /// Opens the approval the transport handed over for the request under
    /// `link_id`: decrypts it with the link secret and checks the chain
    /// (the certificate is for this device's keys and signed by the user
    /// key it names, which also signed this approval and its link sync).
    /// [`Error::LinkForged`] if anything does not hold: it was not made by
    /// someone holding this device's code.
    pub fn open_approval(&self, link_id: &str, sealed: &[u8]) -> Result<Approval> {
        let keys = self.key.public_keys();
        let plain = self
            .link_secret
            .open_approval(link_id, &keys, sealed)
            .map_err(|_| Error::LinkForged)?;
        let approval = LinkApproval::decode(&plain).map_err(|_| Error::LinkForged)?;
        let user = approval
            .verify(link_id, &keys)
            .map_err(|_| Error::LinkForged)?;
        let sync = LinkSyncBody::decode(&approval.sync).ok_or_else(|| {
            Error::BadAnswer("the approval's account data does not decode".into())
        })?;
        let username = check_username(&sync.username)?;
        Ok(Approval {
            username,
            user,
            cert: approval.cert,
            sync,
        })
    }

    /// Joins the account of `joining` (an approval checked against the
    /// directory): refuses with [`Error::ApprovedByAnotherUser`] if
    /// `expected_user` is given and is not that account's name. Stores the
    /// account with its name, the contacts (verified ones stay verified:
    /// the user key signed them) and the block list, and returns the
    /// running device.
    pub fn finish(
        self,
        joining: Joining,
        expected_user: Option<&str>,
        mut store: Box<dyn Store>,
        rng: Box<dyn CryptoRngCore + Send + Sync>,
        home: Home,
    ) -> Result<Machine> {
        let Joining(a) = joining;
        if let Some(expected) = expected_user {
            let expected = check_username(expected)?;
            if expected != a.username {
                return Err(Error::ApprovedByAnotherUser {
                    approver: a.username,
                    expected,
                });
            }
        }
        let public = self.key.public_keys();
        if a.cert.device != public.id || a.cert.dh != public.dh {
            return Err(Error::LinkForged);
        }
        let mut contacts = Vec::new();
        for c in &a.sync.contacts {
            if let Ok(name) = check_username(&c.username) {
                if name != a.username && !contacts.iter().any(|k: &Contact| k.username == name) {
                    contacts.push(contact_record(&name, &c.user_key, c.verified, &[]));
                }
            }
        }
        let blocks = a
            .sync
            .blocked
            .iter()
            .filter_map(|b| check_username(b).ok())
            .map(|b| (b, true))
            .collect();
        let prekeys = self
            .secrets
            .iter()
            .map(|s| (s.id, Some(s.to_bytes())))
            .collect();
        store.commit(ChangeSet {
            account: Some(Account {
                username: a.username.clone(),
                user_key: None,
                device_key: self.key.to_bytes(),
                device_cert: a.cert.encode(),
                server_url: home.server_url,
                server_fingerprint: home.server_fingerprint,
                cursor: 0,
                next_prekey_id: self.next_prekey_id,
                clock_offset_ms: home.clock_offset_ms,
            }),
            prekeys,
            contacts,
            blocks,
            ..ChangeSet::default()
        })?;
        Machine::load(store, rng)
    }
}

/// An approval that opened with the link secret and whose signatures
/// check: the account it names still has to be checked against the
/// directory ([`Approval::check_directory`]).
pub struct Approval {
    username: String,
    user: UserPublic,
    cert: DeviceCert,
    sync: LinkSyncBody,
}

impl Approval {
    /// The name the approving user gave (not checked yet).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The hash to look the name up under.
    pub fn username_hash(&self) -> [u8; 32] {
        username_hash(&self.username)
    }

    /// Checks the directory's answer for [`Approval::username_hash`]: the
    /// name must be registered to the user key that signed the approval.
    pub fn check_directory(self, directory: Option<&Directory>) -> Result<Joining> {
        match directory {
            Some(d) if d.user == self.user => Ok(Joining(self)),
            _ => Err(Error::LinkUserMismatch {
                username: self.username,
            }),
        }
    }
}

/// An approval checked end to end: the account a new device is about to
/// join. Show [`Joining::username`] and [`Joining::fingerprint`] before
/// [`NewDevice::finish`].
pub struct Joining(Approval);

impl Joining {
    pub fn username(&self) -> &str {
        &self.0.username
    }

    pub fn user_key(&self) -> UserPublic {
        self.0.user
    }

    /// The account's safety fingerprint (its half of every safety number).
    pub fn fingerprint(&self) -> String {
        user_fingerprint(&self.0.user)
    }
}

/// Splits a typed code into link id and link secret.
fn parse_code(code: &str) -> Result<(String, LinkSecret)> {
    let code = code.trim();
    let bad = || Error::BadLinkCode(code.to_string());
    let (link_id, secret) = code.rsplit_once('-').ok_or_else(bad)?;
    if !valid_link_id(link_id) {
        return Err(bad());
    }
    let secret = LinkSecret::parse(secret).ok_or_else(bad)?;
    Ok((link_id.to_string(), secret))
}

/// Approving a waiting device: read its request, check it was made by the
/// device showing the code, certify its keys and hand over the sealed
/// approval (certificate and link sync, signed by the user key).
pub(crate) struct Approve {
    link_id: String,
    secret: LinkSecret,
    approved: Option<DeviceCert>,
    /// Test hook: approve without checking the request's proof (an
    /// attacker who has no code, only the link id).
    #[cfg(any(test, feature = "testing"))]
    skip_proof: bool,
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
        _id: RequestId,
        reply: Reply,
    ) -> Result<Step> {
        if let Some(cert) = self.approved {
            return Ok(match expect(reply)? {
                Response::Done => Step::Done(Ok(Output::Device(DeviceInfo {
                    id: cert.device,
                    created_at: cert.created_at,
                    this_device: false,
                }))),
                Response::LinkGone => Step::fail(Error::LinkExpired),
                other => Step::fail(unexpected("link approval", &other)),
            });
        }
        let waiting = match expect(reply)? {
            Response::LinkRequest(Some(w)) => w,
            Response::LinkRequest(None) => return Err(Error::LinkExpired),
            other => return Err(unexpected("link lookup", &other)),
        };
        let keys = DevicePublicKeys {
            id: waiting.device,
            dh: waiting.dh,
        };
        #[cfg(any(test, feature = "testing"))]
        let check = !self.skip_proof;
        #[cfg(not(any(test, feature = "testing")))]
        let check = true;
        if check {
            self.secret
                .check_request_proof(&keys, &waiting.proof)
                .map_err(|_| Error::LinkCodeMismatch)?;
        }
        let user_key = m.user_key.as_ref().ok_or(Error::NoUserKey)?;
        let cert = user_key.certify(&keys, m.master_now());
        let sync = link_sync_body(m)?;
        let user_key = m.user_key.as_ref().ok_or(Error::NoUserKey)?;
        let approval = LinkApproval::new(user_key, &self.link_id, cert, sync)?.encode();
        let mut rng: &mut dyn CryptoRngCore = &mut *m.rng;
        let sealed = self
            .secret
            .seal_approval(&mut rng, &self.link_id, &keys, &approval)
            .map_err(|_| Error::TooLarge)?;
        m.request(
            op,
            Request::ApproveLink {
                link_id: self.link_id.clone(),
                cert,
                approval: sealed,
            },
        );
        self.approved = Some(cert);
        Ok(Step::Wait)
    }
}

/// This user's name, contacts and block list, for a new device.
fn link_sync_body(m: &Machine) -> Result<Vec<u8>> {
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
    Ok(LinkSyncBody {
        username: m.username.clone(),
        contacts,
        blocked: m.store.blocked()?,
    }
    .encode())
}

impl Machine {
    /// Approves a new device of this user from its link `code` (as the new
    /// device showed it). Needs the user key. Checks the waiting request
    /// was made by the device holding the code, certifies its keys, and
    /// hands it, sealed under the code's secret, the certificate and this
    /// user's name, contacts and block list, signed by the user key.
    pub fn approve(&mut self, now: u64, code: &str) -> Result<Op<DeviceInfo>> {
        self.now = now;
        if self.user_key.is_none() {
            return Err(Error::NoUserKey);
        }
        let (link_id, secret) = parse_code(code)?;
        Ok(self.start(Job::Approve(Box::new(Approve {
            link_id,
            secret,
            approved: None,
            #[cfg(any(test, feature = "testing"))]
            skip_proof: false,
        }))))
    }

    /// Test hook: what an attacker with the user key of this account but
    /// no code (only the link id) can do: certify the waiting device and
    /// hand over an approval sealed under a secret it made up.
    #[cfg(any(test, feature = "testing"))]
    pub fn approve_without_code(&mut self, now: u64, link_id: &str) -> Result<Op<DeviceInfo>> {
        self.now = now;
        if self.user_key.is_none() {
            return Err(Error::NoUserKey);
        }
        if !valid_link_id(link_id) {
            return Err(Error::BadLinkCode(link_id.to_string()));
        }
        let mut rng: &mut dyn CryptoRngCore = &mut *self.rng;
        let secret = LinkSecret::generate(&mut rng);
        Ok(self.start(Job::Approve(Box::new(Approve {
            link_id: link_id.to_string(),
            secret,
            approved: None,
            skip_proof: true,
        }))))
    }
}
