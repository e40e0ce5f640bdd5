//! An in-memory network for the core's tests: a directory, prekey pools,
//! mailboxes (items stay until acknowledged), retained datagrams, blocks
//! and link requests, answering the machine's requests as a server would.
//! Devices ([`Node`]) are machines over [`MemoryStore`]s; a test decides
//! when each one receives, in which order, and when it restarts.

use std::collections::{HashMap, HashSet, VecDeque};

use rand_core::CryptoRngCore;
use sotto_proto::room::datagram_id;
use sotto_proto::{
    username_hash, DeviceCert, DeviceId, DevicePublicKeys, SignedPrekey, UserPublic,
};

use super::MemoryStore;
use crate::events::SyncReport;
use crate::link::{Home, NewDevice, NewUser};
use crate::machine::Machine;
use crate::ops::{FromOutput, Op};
use crate::receive::Incoming;
use crate::request::{
    DeliveryTag, Directory, EncodedBundle, LinkWaiting, Lookup, PrekeyCount, Request, Response,
};
use crate::store::Message;
use crate::{Error, Result};

/// One device on the network.
pub struct Node {
    pub machine: Machine,
    pub store: MemoryStore,
    device: DeviceId,
}

impl Node {
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Drops the machine (and everything it held in memory, acknowledgements
    /// not yet sent included) and loads it again from its store.
    pub fn restart(&mut self, rng: Box<dyn CryptoRngCore + Send + Sync>) {
        self.machine = Machine::load(Box::new(self.store.clone()), rng).expect("reload");
    }
}

#[derive(Default)]
struct Pool {
    one_time: VecDeque<SignedPrekey>,
    reserve: Option<SignedPrekey>,
    reserve_served: u32,
}

struct Mail {
    seq: u64,
    datagram: Vec<u8>,
    received_at: u64,
}

struct Waiting {
    device: NewDevice,
    /// The certificate the transport registered and the sealed approval.
    approval: Option<(DeviceCert, Vec<u8>)>,
}

/// The network, with its clock (ms; every device's clock agrees with it).
#[derive(Default)]
pub struct Net {
    pub now: u64,
    /// While set, every directory lookup fails (the directory is down).
    pub lookups_fail: bool,
    users: HashMap<[u8; 32], (UserPublic, Vec<DeviceCert>)>,
    owner: HashMap<DeviceId, [u8; 32]>,
    pools: HashMap<DeviceId, Pool>,
    mail: HashMap<DeviceId, Vec<Mail>>,
    seq: u64,
    retained: HashMap<[u8; 32], (Vec<u8>, HashSet<UserPublic>)>,
    blocks: HashSet<([u8; 32], [u8; 32])>,
    links: HashMap<String, Waiting>,
    links_made: usize,
}

impl Net {
    pub fn new(now: u64) -> Net {
        Net {
            now,
            ..Net::default()
        }
    }

    fn user_of(&self, device: &DeviceId) -> ([u8; 32], UserPublic) {
        let name = self.owner[device];
        (name, self.users[&name].0)
    }

    /// Registers user `name` with a first device.
    pub fn register(&mut self, name: &str, mut rng: Box<dyn CryptoRngCore + Send + Sync>) -> Node {
        let new = NewUser::new(&mut *rng, self.now, name).expect("new user");
        let hash = username_hash(name);
        let cert = *new.cert();
        self.users.insert(hash, (cert.user, vec![cert]));
        self.owner.insert(cert.device, hash);
        self.pools.insert(
            cert.device,
            Pool {
                one_time: new.prekeys().iter().copied().collect(),
                reserve: Some(*new.reserve()),
                reserve_served: 0,
            },
        );
        let store = MemoryStore::default();
        let machine = new
            .finish(Box::new(store.clone()), rng, Home::default())
            .expect("finish registration");
        Node {
            machine,
            store,
            device: cert.device,
        }
    }

    /// A new device asks to be linked; its link id and the code it shows.
    pub fn link_request(&mut self, rng: &mut dyn CryptoRngCore) -> (String, String) {
        let new = NewDevice::new(rng);
        self.links_made += 1;
        let id = format!("link{}", self.links_made);
        let code = new.code(&id).expect("code").to_string();
        self.pools.insert(
            new.public_keys().id,
            Pool {
                one_time: new.prekeys().iter().copied().collect(),
                reserve: Some(*new.reserve()),
                reserve_served: 0,
            },
        );
        self.links.insert(
            id.clone(),
            Waiting {
                device: new,
                approval: None,
            },
        );
        (id, code)
    }

    /// The keys of the device waiting under `link_id` (what the transport
    /// sees of it).
    pub fn link_keys(&self, link_id: &str) -> DevicePublicKeys {
        self.links[link_id].device.public_keys()
    }

    /// Replaces what the transport hands the waiting device as its
    /// approval (a malicious transport).
    pub fn set_approval(&mut self, link_id: &str, cert: DeviceCert, approval: Vec<u8>) {
        self.links.get_mut(link_id).expect("link").approval = Some((cert, approval));
    }

    /// Takes what the transport holds as the approval of `link_id` (to
    /// hand it elsewhere, as a malicious transport could).
    pub fn take_approval(&mut self, link_id: &str) -> Option<(DeviceCert, Vec<u8>)> {
        self.links.get_mut(link_id)?.approval.take()
    }

    /// Registers `cert` in the directory as a device of `name` (created
    /// with the certificate's user key if unknown): what a malicious
    /// transport can do.
    pub fn register_cert(&mut self, name: &str, cert: DeviceCert) {
        let hash = username_hash(name);
        self.users
            .entry(hash)
            .or_insert_with(|| (cert.user, Vec::new()))
            .1
            .push(cert);
        self.owner.insert(cert.device, hash);
    }

    /// The device waiting under `link_id` takes its approval: opens it,
    /// checks the account against the directory and joins it (refusing
    /// unless it is `expected_user`'s, if given), then syncs.
    pub fn link_finish(
        &mut self,
        link_id: &str,
        expected_user: Option<&str>,
        rng: Box<dyn CryptoRngCore + Send + Sync>,
    ) -> Result<Node> {
        let waiting = self.links.remove(link_id).ok_or(Error::LinkExpired)?;
        let (_, sealed) = waiting.approval.ok_or(Error::LinkExpired)?;
        let approval = waiting.device.open_approval(link_id, &sealed)?;
        let dir = self
            .users
            .get(&approval.username_hash())
            .map(|(u, certs)| Directory {
                user: *u,
                devices: certs.iter().map(|c| c.encode()).collect(),
                organisation: None,
            });
        let joining = approval.check_directory(dir.as_ref())?;
        let device = waiting.device.public_keys().id;
        let store = MemoryStore::default();
        let machine = waiting.device.finish(
            joining,
            expected_user,
            Box::new(store.clone()),
            rng,
            Home::default(),
        )?;
        let mut node = Node {
            machine,
            store,
            device,
        };
        self.sync(&mut node);
        Ok(node)
    }

    /// Links a new device to `existing`'s user: the new device asks, the
    /// existing one approves, the new one opens the approval and joins.
    pub fn link(
        &mut self,
        existing: &mut Node,
        mut rng: Box<dyn CryptoRngCore + Send + Sync>,
    ) -> Node {
        let (id, code) = self.link_request(&mut *rng);
        let op = existing.machine.approve(self.now, &code).expect("approve");
        self.finish(existing, &op).expect("approved");
        let node = self.link_finish(&id, None, rng).expect("finish link");
        assert!(!node.machine.username().is_empty(), "account data arrived");
        node
    }

    /// Carries out every request the node has queued, until none is left.
    pub fn run(&mut self, node: &mut Node) {
        while let Some(req) = node.machine.poll_request() {
            self.carry_out(node, req);
        }
    }

    /// Runs the node until `op` finished; its result.
    pub fn finish<T: FromOutput>(&mut self, node: &mut Node, op: &Op<T>) -> Result<T> {
        loop {
            if let Some(r) = node.machine.take_result(op) {
                self.run(node);
                return r;
            }
            let Some(req) = node.machine.poll_request() else {
                return Err(Error::BadAnswer("the operation waits for nothing".into()));
            };
            self.carry_out(node, req);
        }
    }

    /// Sends a text message.
    pub fn send(&mut self, node: &mut Node, to: &str, text: &str) -> Result<Message> {
        let op = node.machine.send_text(self.now, to, text, 0)?;
        self.finish(node, &op)
    }

    /// Takes the datagrams waiting for `device` out of its mailbox, oldest
    /// first (for a test that hands them over another way, e.g. as a peer
    /// transport would).
    pub fn take_mail(&mut self, device: &DeviceId) -> Vec<Vec<u8>> {
        self.mail
            .remove(device)
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.datagram)
            .collect()
    }

    /// The node's unacknowledged mailbox items, oldest first.
    pub fn waiting(&self, device: &DeviceId) -> usize {
        self.mail.get(device).map_or(0, Vec::len)
    }

    /// Delivers the node's waiting items in the order `order` gives them
    /// (indexes into the waiting items; repeats deliver duplicates), then
    /// flushes and runs it. The events it reported.
    pub fn deliver_in(
        &mut self,
        node: &mut Node,
        order: impl Fn(usize) -> Vec<usize>,
    ) -> SyncReport {
        self.hand_over(node, order, true)
    }

    /// Hands the node its waiting items (as [`Net::deliver_in`] orders
    /// them) without carrying out any request it makes: no sender lookup
    /// is answered and no acknowledgement reaches the network (a device
    /// that dies right after).
    pub fn receive_only(&mut self, node: &mut Node, order: impl Fn(usize) -> Vec<usize>) {
        self.hand_over(node, order, false);
    }

    fn hand_over(
        &mut self,
        node: &mut Node,
        order: impl Fn(usize) -> Vec<usize>,
        answer: bool,
    ) -> SyncReport {
        let items: Vec<(u64, Vec<u8>, u64)> = self
            .mail
            .get(&node.device)
            .map(|m| {
                m.iter()
                    .map(|i| (i.seq, i.datagram.clone(), i.received_at))
                    .collect()
            })
            .unwrap_or_default();
        for i in order(items.len()) {
            let Some((seq, datagram, at)) = items.get(i) else {
                continue;
            };
            let incoming = Incoming {
                tag: DeliveryTag(*seq),
                datagram,
                received_at: *at,
            };
            if node.machine.receive(self.now, incoming).is_err() {
                break;
            }
            if answer {
                self.run(node);
            }
        }
        if !answer {
            return SyncReport::default();
        }
        let _ = node.machine.flush(self.now);
        self.run(node);
        let mut report = SyncReport::default();
        while let Some(e) = node.machine.poll_event() {
            report.add(e);
        }
        report
    }

    /// Delivers every waiting item in order (and what that brings, until
    /// nothing more waits for this node).
    pub fn sync(&mut self, node: &mut Node) -> SyncReport {
        let mut report = self.deliver_in(node, |n| (0..n).collect());
        // Items that arrived for this node while it answered.
        for _ in 0..3 {
            if self.waiting(&node.device) == 0 || node.machine.parked() > 0 {
                break;
            }
            let more = self.deliver_in(node, |n| (0..n).collect());
            if more.messages.is_empty() && more.room.is_empty() && more.rejected.is_empty() {
                break;
            }
            merge(&mut report, more);
        }
        report
    }

    fn carry_out(&mut self, node: &mut Node, req: crate::request::OutgoingRequest) {
        let down = self.lookups_fail && matches!(req.request, Request::Lookup(_));
        match (!down)
            .then(|| self.execute(node.device, req.request))
            .flatten()
        {
            Some(r) => node.machine.handle_response(self.now, req.id, r),
            None => node.machine.fail_request(self.now, req.id),
        }
    }

    /// The network's side of one request.
    fn execute(&mut self, from: DeviceId, request: Request) -> Option<Response> {
        let (from_name, from_user) = self.owner.get(&from).map(|_| self.user_of(&from)).unzip();
        Some(match request {
            Request::Lookup(Lookup::User(h)) => Response::User(self.directory(&h)),
            Request::Lookup(Lookup::Own) => Response::User(self.directory(&from_name?)),
            Request::Claim { user, devices } => {
                let Some((_, certs)) = self.users.get(&user) else {
                    return Some(Response::Bundles(None));
                };
                let certs: Vec<DeviceCert> = certs
                    .iter()
                    .filter(|c| devices.contains(&c.device))
                    .copied()
                    .collect();
                let mut out = Vec::new();
                for c in certs {
                    let pool = self.pools.entry(c.device).or_default();
                    let prekey = match pool.one_time.pop_front() {
                        Some(p) => p,
                        None => {
                            pool.reserve_served += 1;
                            pool.reserve?
                        }
                    };
                    out.push(EncodedBundle {
                        cert: c.encode(),
                        prekey: prekey.encode(),
                    });
                }
                Response::Bundles(Some(out))
            }
            Request::Post {
                datagram,
                recipients,
                ..
            } => {
                let mut allowed = HashSet::from([from_user?]);
                for r in &recipients {
                    let to = self.owner.get(r.devices.first()?).copied()?;
                    if self.blocks.contains(&(to, from_name?)) {
                        return Some(Response::Blocked);
                    }
                    allowed.insert(r.user);
                }
                for d in recipients.iter().flat_map(|r| &r.devices) {
                    self.seq += 1;
                    self.mail.entry(*d).or_default().push(Mail {
                        seq: self.seq,
                        datagram: datagram.clone(),
                        received_at: self.now,
                    });
                }
                self.retained
                    .insert(datagram_id(&datagram), (datagram, allowed));
                Response::Posted
            }
            Request::Ack(tags) => {
                if let Some(m) = self.mail.get_mut(&from) {
                    m.retain(|i| !tags.contains(&DeliveryTag(i.seq)));
                }
                Response::Done
            }
            Request::Fetch { datagram_id } => Response::Datagram(
                self.retained
                    .get(&datagram_id)
                    .filter(|(_, allowed)| from_user.is_some_and(|u| allowed.contains(&u)))
                    .map(|(d, _)| d.clone()),
            ),
            Request::PrekeyStatus => {
                let p = self.pools.entry(from).or_default();
                Response::Prekeys(PrekeyCount {
                    one_time: p.one_time.len() as u32,
                    reserve_served: p.reserve_served,
                })
            }
            Request::UploadPrekeys { one_time, reserve } => {
                let p = self.pools.entry(from).or_default();
                p.one_time.extend(one_time);
                if reserve.is_some() {
                    p.reserve = reserve;
                    p.reserve_served = 0;
                }
                Response::Done
            }
            Request::ReadLink { link_id } => {
                Response::LinkRequest(self.links.get(&link_id).map(|w| {
                    let k = w.device.public_keys();
                    LinkWaiting {
                        device: k.id,
                        dh: k.dh,
                        proof: w.device.request_proof(),
                    }
                }))
            }
            Request::ApproveLink {
                link_id,
                cert,
                approval,
            } => {
                let Some(w) = self.links.get_mut(&link_id) else {
                    return Some(Response::LinkGone);
                };
                if w.approval.is_some() {
                    return Some(Response::LinkGone);
                }
                w.approval = Some((cert, approval));
                let name = from_name?;
                self.users.get_mut(&name)?.1.push(cert);
                self.owner.insert(cert.device, name);
                Response::Done
            }
            Request::Block { user } => {
                self.blocks.insert((from_name?, user));
                Response::Done
            }
            Request::Unblock { user } => {
                self.blocks.remove(&(from_name?, user));
                Response::Done
            }
            Request::RemoveDevice {
                device,
                time_ms,
                signature,
            } => {
                let name = from_name?;
                let (user, certs) = self.users.get_mut(&name)?;
                if user.verify_removal(&device, time_ms, &signature).is_err() {
                    return None;
                }
                let Some(at) = certs.iter().position(|c| c.device == device) else {
                    return Some(Response::UnknownDevice);
                };
                certs.remove(at);
                self.owner.remove(&device);
                self.pools.remove(&device);
                self.mail.remove(&device);
                Response::Done
            }
        })
    }

    fn directory(&self, name: &[u8; 32]) -> Option<Directory> {
        self.users.get(name).map(|(user, certs)| Directory {
            user: *user,
            devices: certs.iter().map(|c| c.encode()).collect(),
            organisation: None,
        })
    }
}

fn merge(into: &mut SyncReport, more: SyncReport) {
    into.messages.extend(more.messages);
    into.rejected.extend(more.rejected);
    into.duplicates += more.duplicates;
    into.blocked += more.blocked;
    into.link_syncs += more.link_syncs;
    into.room.extend(more.room);
    into.failures.extend(more.failures);
}
