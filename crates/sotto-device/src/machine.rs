//! The machine: one device's state, loaded from its store, and the plumbing
//! every operation shares (committing change sets, the request queue, the
//! operations in flight, events, the clock).

use std::collections::{HashMap, HashSet, VecDeque};

use rand_core::CryptoRngCore;
use sotto_proto::{Device, DeviceCert, DeviceKey, PrekeySecret, Session, UserKey};

use crate::events::Event;
use crate::ops::{FromOutput, Job, Op, OpId, Output, Reply, Step};
use crate::receive::Inbox;
use crate::request::{OutgoingRequest, Owner, Queue, Request, RequestId, Response};
use crate::rooms::RoomRuntime;
use crate::store::{Account, ChangeSet, Store};
use crate::{Error, Result};

/// One device as a state machine. Feed it datagrams
/// ([`Machine::receive`]), commands and the answers to the requests it hands
/// out ([`Machine::poll_request`], [`Machine::handle_response`]); collect
/// results ([`Machine::take_result`]) and events ([`Machine::poll_event`]).
/// It keeps its state in its [`Store`] and does no I/O of its own: the time
/// (`now`, this machine's wall clock in ms) and the randomness come in.
pub struct Machine {
    pub(crate) store: Box<dyn Store>,
    pub(crate) device: Device,
    pub(crate) user_key: Option<UserKey>,
    pub(crate) username: String,
    /// Master clock minus the local clock, ms.
    pub(crate) clock_offset: i64,
    pub(crate) rng: Box<dyn CryptoRngCore + Send + Sync>,
    /// Local wall clock (ms) of the input being handled.
    pub(crate) now: u64,
    pub(crate) queue: Queue,
    jobs: HashMap<OpId, Job>,
    results: HashMap<OpId, Result<Output>>,
    /// Operations the core started itself: their failures become events.
    background: HashSet<OpId>,
    next_op: u64,
    pub(crate) events: VecDeque<Event>,
    pub(crate) inbox: Inbox,
    pub(crate) rooms: RoomRuntime,
    pub(crate) hooks: Hooks,
}

/// Test hooks (set only through the `testing` feature; inert otherwise).
#[derive(Default)]
pub(crate) struct Hooks {
    /// Process and commit received datagrams, never acknowledge them.
    pub skip_ack: bool,
    /// Username hashes room datagrams are not sent to (lost deliveries).
    pub drop_to: Vec<[u8; 32]>,
    /// Added to the master clock for room times.
    pub clock_shift_ms: i64,
}

/// Restores the device (keys, prekeys, sessions) that `store` holds for
/// `account`.
pub(crate) fn load_device(store: &dyn Store, account: &Account) -> Result<Device> {
    let key = DeviceKey::from_bytes(&account.device_key);
    let cert = DeviceCert::decode(&account.device_cert)?;
    let prekeys = store
        .prekeys()?
        .iter()
        .map(|b| PrekeySecret::from_bytes(b))
        .collect::<sotto_proto::Result<Vec<_>>>()?;
    let sessions = store
        .sessions()?
        .iter()
        .map(|b| Session::from_bytes(b))
        .collect::<sotto_proto::Result<Vec<_>>>()?;
    Ok(Device::restore(
        key,
        cert,
        prekeys,
        sessions,
        account.next_prekey_id,
    )?)
}

impl Machine {
    /// The device `store` holds; [`Error::NoAccount`] when it holds none.
    pub fn load(
        store: Box<dyn Store>,
        rng: Box<dyn CryptoRngCore + Send + Sync>,
    ) -> Result<Machine> {
        let account = store.account()?.ok_or(Error::NoAccount)?;
        let device = load_device(&*store, &account)?;
        Ok(Machine {
            user_key: account.user_key.as_ref().map(|k| UserKey::from_bytes(k)),
            username: account.username.clone(),
            clock_offset: account.clock_offset_ms,
            store,
            device,
            rng,
            now: 0,
            queue: Queue::default(),
            jobs: HashMap::new(),
            results: HashMap::new(),
            background: HashSet::new(),
            next_op: 0,
            events: VecDeque::new(),
            inbox: Inbox::default(),
            rooms: RoomRuntime::default(),
            hooks: Hooks::default(),
        })
    }

    /// Reads the device state again from the store (another process with
    /// the same store may have changed it), dropping in-memory state that
    /// was not committed.
    pub fn reload(&mut self) -> Result<()> {
        let account = self.store.account()?.ok_or(Error::NoAccount)?;
        self.device = load_device(&*self.store, &account)?;
        self.username = account.username;
        self.clock_offset = account.clock_offset_ms;
        self.rooms.clear_cache();
        Ok(())
    }

    // ------------------------------------------------------------------
    // Who this device is
    // ------------------------------------------------------------------

    /// This user's name (empty on a linked device until link sync).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// This device's protocol state (keys, certificate).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// True when this device holds the user key (can approve devices).
    pub fn holds_user_key(&self) -> bool {
        self.user_key.is_some()
    }

    /// The stored account.
    pub fn account(&self) -> Result<Account> {
        self.store.account()?.ok_or(Error::NoAccount)
    }

    /// This user's name, or [`Error::LinkIncomplete`] while a linked device
    /// has not received it.
    pub(crate) fn require_username(&self) -> Result<String> {
        if self.username.is_empty() {
            Err(Error::LinkIncomplete)
        } else {
            Ok(self.username.clone())
        }
    }

    // ------------------------------------------------------------------
    // The clock
    // ------------------------------------------------------------------

    /// The master clock at local time `now` (ms), by the last measured
    /// offset.
    pub fn master_time(&self, now: u64) -> u64 {
        now.saturating_add_signed(self.clock_offset)
    }

    /// Master clock minus local clock, ms.
    pub fn clock_offset(&self) -> i64 {
        self.clock_offset
    }

    /// Records a measured offset to the master clock (the transport's clock
    /// minus this machine's, ms); it is kept so that TTLs are judged by the
    /// master clock also when offline.
    pub fn set_clock_offset(&mut self, offset_ms: i64) -> Result<()> {
        if offset_ms != self.clock_offset {
            self.commit(ChangeSet {
                clock_offset_ms: Some(offset_ms),
                ..ChangeSet::default()
            })?;
            self.clock_offset = offset_ms;
        }
        Ok(())
    }

    /// The master clock now (of the input being handled).
    pub(crate) fn master_now(&self) -> u64 {
        self.master_time(self.now)
    }

    /// The master clock for room times (test hook: shifted).
    pub(crate) fn room_now(&self) -> u64 {
        self.master_now()
            .saturating_add_signed(self.hooks.clock_shift_ms)
    }

    // ------------------------------------------------------------------
    // Committing
    // ------------------------------------------------------------------

    /// Adds what the device changed since the last commit to `changes`.
    fn take_device_changes(&mut self, changes: &mut ChangeSet) {
        let c = self.device.take_changes();
        if c.is_empty() {
            return;
        }
        for id in &c.sessions_upserted {
            changes.sessions.push((id.0, self.device.session_bytes(id)));
        }
        for id in &c.sessions_removed {
            changes.sessions.push((id.0, None));
        }
        for id in &c.prekeys_added {
            if let Some(bytes) = self.device.prekey_bytes(*id) {
                changes.prekeys.push((*id, Some(bytes)));
            }
        }
        for id in &c.prekeys_removed {
            changes.prekeys.push((*id, None));
        }
        changes.next_prekey_id = Some(self.device.next_prekey_id());
    }

    /// Commits `changes` with what the device changed. On failure the
    /// in-memory state goes back to what is stored.
    pub(crate) fn commit(&mut self, mut changes: ChangeSet) -> Result<()> {
        self.take_device_changes(&mut changes);
        if changes.is_empty() {
            return Ok(());
        }
        match self.store.commit(changes) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.rollback();
                Err(e.into())
            }
        }
    }

    /// Drops uncommitted device state (a datagram opened but parked, a
    /// failed commit): the device is read again from the store.
    pub(crate) fn rollback(&mut self) -> Result<()> {
        let account = self.store.account()?.ok_or(Error::NoAccount)?;
        self.device = load_device(&*self.store, &account)?;
        self.rooms.clear_cache();
        Ok(())
    }

    // ------------------------------------------------------------------
    // Requests, operations, events
    // ------------------------------------------------------------------

    /// The next request for the shell to carry out, if any.
    pub fn poll_request(&mut self) -> Option<OutgoingRequest> {
        self.queue.pop()
    }

    /// True when no request waits to be taken.
    pub fn is_idle(&self) -> bool {
        self.queue.is_idle()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The answer to request `id`. `now`: local wall clock, ms.
    pub fn handle_response(&mut self, now: u64, id: RequestId, response: Response) {
        self.now = now;
        self.reply(id, Some(response));
    }

    /// Request `id` could not be carried out (network down, refused for a
    /// reason the core cannot act on). The operation that needed it fails
    /// with [`Error::Aborted`]; a received datagram that waited for it is
    /// dropped unacknowledged (the transport delivers it again).
    pub fn fail_request(&mut self, now: u64, id: RequestId) {
        self.now = now;
        self.reply(id, None);
    }

    fn reply(&mut self, id: RequestId, response: Option<Response>) {
        let Some((owner, what)) = self.queue.answered(id) else {
            return;
        };
        self.route(owner, id, response.ok_or(what));
    }

    fn route(&mut self, owner: Owner, id: RequestId, reply: Reply) {
        match owner {
            Owner::Op(op) => {
                let Some(mut job) = self.jobs.remove(&op) else {
                    return;
                };
                let step = job.on_reply(self, op, id, reply);
                self.settle(op, job, step);
            }
            Owner::Sender(name) => self.sender_answered(&name, reply),
            Owner::Nobody => {}
        }
    }

    /// Starts `job` and returns its handle.
    pub(crate) fn start<T>(&mut self, mut job: Job) -> Op<T> {
        self.next_op += 1;
        let op = OpId(self.next_op);
        let step = job.start(self, op);
        self.settle(op, job, step);
        Op::new(op)
    }

    /// Starts `job` for the core itself: nobody collects its result.
    pub(crate) fn start_background(&mut self, job: Job) {
        let op: Op<()> = self.start(job);
        if !self.take_background(op.id) {
            self.background.insert(op.id);
        }
    }

    /// Files a finished background operation's failure as an event; true
    /// when `op` was finished.
    fn take_background(&mut self, op: OpId) -> bool {
        match self.results.remove(&op) {
            Some(Err(e)) => {
                self.events.push_back(Event::Failed(e));
                true
            }
            Some(Ok(_)) => true,
            None => false,
        }
    }

    fn settle(&mut self, op: OpId, job: Job, step: Step) {
        match step {
            Step::Wait => {
                self.jobs.insert(op, job);
            }
            Step::Done(result) => {
                self.queue.cancel(&Owner::Op(op));
                self.results.insert(op, result);
                if self.background.remove(&op) {
                    self.take_background(op);
                }
            }
        }
    }

    /// The result of `op` once it finished (taken once).
    pub fn take_result<T: FromOutput>(&mut self, op: &Op<T>) -> Option<Result<T>> {
        let r = self.results.remove(&op.id)?;
        Some(r.and_then(|o| {
            T::from_output(o).ok_or_else(|| Error::BadAnswer("result of another kind".into()))
        }))
    }

    /// Queues a request for operation `op`.
    pub(crate) fn request(&mut self, op: OpId, request: Request) -> RequestId {
        self.queue.push(Owner::Op(op), request)
    }
}
