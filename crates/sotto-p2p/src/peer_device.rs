//! The device core over peers: the second shell around
//! [`sotto_device::Machine`], beside the server one (`sotto-client`).
//!
//! Chat over a peer session is the core's sealed datagrams, the same bytes a
//! server would carry: [`PeerDevice::send_text`] has the core seal a text
//! for the peer's device and hands the datagram to the session;
//! a datagram that arrives is opened by the core and stored in the same
//! encrypted history (one row per message id, so a message delivered twice,
//! or by the server and by a peer, shows once). The core's requests are
//! answered from what the peer sessions proved, never from a server:
//!
//! | request | answered with |
//! |---|---|
//! | `Lookup(user)` | the user key and device certificates of the peers (with a session, or listed in a group's roster) that proved that name |
//! | `Lookup(own)` | this device's own certificate |
//! | `Claim` | the prekeys the peers handed over in their session handshakes (or their host relayed in a roster) |
//! | `Post` | the datagram inside the session with each recipient device (or to the group's host for a group message) |
//! | `Ack`, `PrekeyStatus`, `UploadPrekeys`, `Block`, `Unblock` | done: nothing to tell a server |
//! | anything else | failed (needs a server) |
//!
//! Every operation takes the home's lock and reloads the core's state if
//! another process (`sotto send`, `sotto inbox`) changed it, as the server
//! shell does.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use sotto_device::{
    DeliveryTag, Directory, EncodedBundle, Event as CoreEvent, FromOutput, GroupMember, GroupScope,
    Incoming, Lookup, Machine, Message, Op, PrekeyCount, Request, Response,
};
use sotto_proto::{username_hash, DeviceCert, DeviceId, SignedPrekey, UserPublic};
use sotto_store::client::{ClientStore, HomeLock};

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::node::{Event, GroupEvent};
use crate::shell::{Handle, ShellEvent};
use crate::wire::{Id, RosterMember};

/// How long an operation waits for another process's operation on the
/// same home.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// The delivery tag of datagrams from peers: the core's mailbox cursor
/// (a server's sequence number) never moves for them.
const PEER_TAG: DeliveryTag = DeliveryTag(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A device of another user as the peer sessions made it known.
#[derive(Clone, Debug)]
struct Known {
    name: String,
    user: UserPublic,
    cert: DeviceCert,
    prekey: Option<SignedPrekey>,
    /// The open peer session with it, if any.
    session: Option<Id>,
}

/// Where the datagram of the operation being run goes.
#[derive(Clone, Copy)]
enum Route {
    /// Inside the session with each recipient device.
    Sessions,
    /// To group session `Id` (its host relays it).
    Group(Id),
}

/// This home's device, driven over peer sessions.
pub struct PeerDevice {
    core: Machine,
    /// What only this shell keeps: the peers to dial again.
    store: ClientStore,
    lock: HomeLock,
    handle: Option<Handle>,
    known: HashMap<DeviceId, Known>,
}

impl PeerDevice {
    /// The device of `home` (its encrypted store opened with `passphrase`).
    pub fn open(home: &Path, passphrase: &str) -> Result<PeerDevice> {
        let store = ClientStore::open(home, passphrase)?;
        let core = Machine::load(Box::new(store.clone()), Box::new(OsRng))?;
        Ok(PeerDevice {
            core,
            store,
            lock: HomeLock::new(home),
            handle: None,
            known: HashMap::new(),
        })
    }

    /// Who this device says it is to peers.
    pub fn identity(&self) -> Identity {
        let d = self.core.device();
        Identity {
            name: self.core.username().to_string(),
            key: sotto_proto::DeviceKey::from_bytes(&d.key().to_bytes()),
            cert: *d.cert(),
        }
    }

    /// The keys this device knows by name (its contacts).
    pub fn contacts(&self) -> Result<Vec<(String, UserPublic)>> {
        Ok(self
            .core
            .contacts()?
            .into_iter()
            .map(|c| (c.username, c.user_key))
            .collect())
    }

    /// The prekey handed to peers in session handshakes.
    pub async fn prekey(&mut self) -> Result<SignedPrekey> {
        let _guard = self.begin().await?;
        Ok(self.core.p2p_prekey(now_ms())?)
    }

    /// Runs over the node of `handle` from now on.
    pub fn attach(&mut self, handle: Handle) {
        self.handle = Some(handle);
    }

    fn handle(&self) -> Result<&Handle> {
        self.handle.as_ref().ok_or(Error::Stopped)
    }

    /// Takes the home's lock; reloads what another process changed.
    async fn begin(&mut self) -> Result<sotto_store::client::Guard> {
        let guard = self
            .lock
            .acquire(LOCK_WAIT, tokio::time::sleep)
            .await?
            .ok_or_else(|| Error::HomeBusy(self.lock.home().to_path_buf()))?;
        if guard.fresh {
            self.core.reload()?;
        }
        Ok(guard)
    }

    /// Takes in what the node reports: sessions opening and closing, and
    /// datagrams (1:1, or relayed in a group session), which the core opens
    /// and stores. Returns what the core made of them.
    pub async fn on_event(&mut self, event: &ShellEvent) -> Vec<CoreEvent> {
        let r = match event {
            ShellEvent::Node(Event::SessionOpened {
                session,
                name,
                user,
                device,
                cert,
                prekey,
                ..
            }) => {
                self.known.insert(
                    *device,
                    Known {
                        name: name.clone(),
                        user: *user,
                        cert: *cert,
                        prekey: *prekey,
                        session: Some(*session),
                    },
                );
                if let Err(e) = self.remember(name, *user, cert).await {
                    tracing::warn!(error = %e, "a peer was not remembered");
                }
                return Vec::new();
            }
            ShellEvent::Node(Event::SessionClosed { session, .. }) => {
                for k in self.known.values_mut() {
                    if k.session == Some(*session) {
                        k.session = None;
                    }
                }
                return Vec::new();
            }
            ShellEvent::Node(Event::Datagram { data, .. }) => self.receive(data, None).await,
            ShellEvent::Node(Event::Group(GroupEvent::Message { group, data, .. })) => {
                match self.group_scope(group).await {
                    Ok((scope, _)) => self.receive(data, Some(&scope)).await,
                    Err(e) => Err(e),
                }
            }
            _ => return Vec::new(),
        };
        match r {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "a datagram from a peer was not taken in");
                Vec::new()
            }
        }
    }

    /// Keeps the name of a peer a session opened with (a contact, trust on
    /// first use) and the address it was dialled at, for the next run.
    async fn remember(&mut self, name: &str, user: UserPublic, cert: &DeviceCert) -> Result<()> {
        {
            let _guard = self.begin().await?;
            self.core.accept_peer(now_ms(), name, user, cert)?;
        }
        let status = self.handle()?.status().await?;
        let address = status
            .peers
            .iter()
            .find(|p| p.name == name && p.user.as_deref() == Some(&hex::encode(user.0)))
            .and_then(|p| p.address.as_deref())
            .and_then(|a| a.parse::<libp2p::Multiaddr>().ok())
            .map(|a| {
                a.iter()
                    .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                    .collect::<libp2p::Multiaddr>()
            });
        if let Some(a) = address {
            self.store.remember_peer(name, &a.to_string(), now_ms())?;
        }
        Ok(())
    }

    /// The peers remembered from earlier runs (most recent first).
    pub fn remembered(&self) -> Result<Vec<sotto_store::client::RememberedPeer>> {
        Ok(self.store.remembered_peers()?)
    }

    /// Dials every remembered peer again (those not reachable are
    /// reported as failed dials).
    pub async fn redial(&self) -> Result<usize> {
        let handle = self.handle()?;
        let mut n = 0;
        for p in self.store.remembered_peers()? {
            if let Ok(a) = p.address.parse() {
                if handle.dial(a).await.is_ok() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn receive(&mut self, data: &[u8], scope: Option<&GroupScope>) -> Result<Vec<CoreEvent>> {
        let _guard = self.begin().await?;
        let now = now_ms();
        let incoming = Incoming {
            tag: PEER_TAG,
            datagram: data,
            received_at: self.core.master_time(now),
        };
        match scope {
            Some(s) => self.core.receive_in_group(now, incoming, s)?,
            None => self.core.receive(now, incoming)?,
        }
        self.drain(Route::Sessions).await;
        let mut events = Vec::new();
        while let Some(e) = self.core.poll_event() {
            events.push(e);
        }
        Ok(events)
    }

    /// Sends `text` to `name` over the open peer session(s) with its
    /// device(s): the core's datagram, stored in this device's history.
    pub async fn send_text(&mut self, name: &str, text: &str) -> Result<Message> {
        let _guard = self.begin().await?;
        let op = self.core.send_text(now_ms(), name, text, 0)?;
        self.run(op, Route::Sessions).await
    }

    /// Sends `text` to group session `group` (hosted here or joined).
    pub async fn send_group_text(&mut self, group: Id, text: &str) -> Result<Message> {
        let (scope, members) = self.group_scope(&group).await?;
        let _guard = self.begin().await?;
        let op = self
            .core
            .send_group_text(now_ms(), &scope, &members, text)?;
        self.run(op, Route::Group(group)).await
    }

    /// Group `group` as the node knows it now; its members' devices are
    /// remembered (for lookups and claims).
    async fn group_scope(&mut self, group: &Id) -> Result<(GroupScope, Vec<GroupMember>)> {
        let (title, roster) = self
            .handle()?
            .group_roster(*group)
            .await?
            .ok_or_else(|| Error::NoGroup(hex::encode(group)))?;
        let own = self.core.device().cert().user;
        for m in &roster {
            self.learn(m, &own);
        }
        let scope = GroupScope {
            id: *group,
            title,
            members: roster.iter().map(|m| UserPublic(m.user)).collect(),
        };
        let members = roster
            .into_iter()
            .map(|m| GroupMember {
                name: m.name,
                user: UserPublic(m.user),
            })
            .collect();
        Ok((scope, members))
    }

    /// Remembers a roster member's device (its certificate must be its
    /// user's, and its prekey its device's; a session's entry is kept).
    fn learn(&mut self, m: &RosterMember, own: &UserPublic) {
        let Some(cert) = m.cert else { return };
        if cert.user.0 != m.user || cert.user == *own || cert.verify().is_err() {
            return;
        }
        let prekey = m.prekey.filter(|p| p.verify(&cert.device).is_ok());
        let entry = self.known.entry(cert.device).or_insert(Known {
            name: m.name.clone(),
            user: cert.user,
            cert,
            prekey,
            session: None,
        });
        if entry.prekey.is_none() {
            entry.prekey = prekey;
        }
    }

    /// Carries out the core's requests until `op` finished; its result.
    async fn run<T: FromOutput>(&mut self, op: Op<T>, route: Route) -> Result<T> {
        loop {
            if let Some(r) = self.core.take_result(&op) {
                self.drain(route).await;
                return Ok(r?);
            }
            let Some(req) = self.core.poll_request() else {
                return Err(Error::Control(
                    "internal: an operation waits for no request".into(),
                ));
            };
            self.step(req, route).await;
        }
    }

    async fn drain(&mut self, route: Route) {
        while let Some(req) = self.core.poll_request() {
            self.step(req, route).await;
        }
    }

    async fn step(&mut self, req: sotto_device::OutgoingRequest, route: Route) {
        let answer = self.execute(&req.request, route).await;
        match answer {
            Some(r) => self.core.handle_response(now_ms(), req.id, r),
            None => self.core.fail_request(now_ms(), req.id),
        }
    }

    /// One request, answered from the peer sessions; `None`: it cannot be
    /// carried out without a server (or the peer is not reachable).
    async fn execute(&self, request: &Request, route: Route) -> Option<Response> {
        Some(match request {
            Request::Lookup(Lookup::Own) => {
                let cert = self.core.device().cert();
                Response::User(Some(Directory {
                    user: cert.user,
                    devices: vec![cert.encode()],
                    organisation: None,
                }))
            }
            Request::Lookup(Lookup::User(hash)) => Response::User(self.directory(hash)),
            Request::Claim { devices, .. } => Response::Bundles(Some(
                devices
                    .iter()
                    .filter_map(|d| {
                        let k = self.known.get(d)?;
                        Some(EncodedBundle {
                            cert: k.cert.encode(),
                            prekey: k.prekey?.encode(),
                        })
                    })
                    .collect(),
            )),
            Request::Post {
                datagram,
                recipients,
                ..
            } => {
                let handle = self.handle().ok()?;
                match route {
                    Route::Group(g) => handle.group_send(g, datagram.clone()).await.ok()?,
                    Route::Sessions => {
                        let sessions: Vec<Id> = recipients
                            .iter()
                            .flat_map(|r| &r.devices)
                            .filter_map(|d| self.known.get(d)?.session)
                            .collect();
                        let mut sent = false;
                        for s in sessions {
                            sent |= handle.send_datagram(s, datagram.clone()).await.is_ok();
                        }
                        if !sent {
                            return None;
                        }
                    }
                }
                Response::Posted
            }
            Request::Ack(_)
            | Request::UploadPrekeys { .. }
            | Request::Block { .. }
            | Request::Unblock { .. } => Response::Done,
            // No pool to refill: peers get prekeys in handshakes.
            Request::PrekeyStatus => Response::Prekeys(PrekeyCount {
                one_time: u32::MAX,
                reserve_served: 0,
            }),
            Request::Fetch { .. } => Response::Datagram(None),
            Request::ReadLink { .. }
            | Request::ApproveLink { .. }
            | Request::RemoveDevice { .. } => return None,
        })
    }

    /// The user a name hash names among the devices peers made known: the
    /// key of the devices with an open session first (their names were
    /// proved to this node and accepted), else of roster entries.
    fn directory(&self, hash: &[u8; 32]) -> Option<Directory> {
        let named: Vec<&Known> = self
            .known
            .values()
            .filter(|k| username_hash(&k.name) == *hash)
            .collect();
        let user = named
            .iter()
            .find(|k| k.session.is_some())
            .or_else(|| named.first())?
            .user;
        Some(Directory {
            user,
            devices: named
                .iter()
                .filter(|k| k.user == user)
                .map(|k| k.cert.encode())
                .collect(),
            // Peers vouch for no organisation: only a server does.
            organisation: None,
        })
    }

    /// This device's history, oldest first (what `sotto inbox` lists).
    pub async fn history(&mut self) -> Result<Vec<Message>> {
        let _guard = self.begin().await?;
        Ok(self.core.history(now_ms(), None, None)?)
    }

    /// True when a peer session with a device of `name` is open.
    pub fn reachable(&self, name: &str) -> bool {
        self.known
            .values()
            .any(|k| k.name == name && k.session.is_some())
    }
}
