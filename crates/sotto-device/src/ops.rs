//! Operations in flight: a user command (or work the core starts itself)
//! that needs answers from the transport before it can finish. Each is a
//! job that takes the answers to its requests one by one and says when it
//! is done; the caller holds an [`Op`] handle and collects the typed result
//! with [`crate::Machine::take_result`].

use std::marker::PhantomData;

use sotto_proto::SafetyNumber;

use crate::deliver::SendText;
use crate::directory::{BlockJob, LookupJob, RemoveJob};
use crate::events::DeviceInfo;
use crate::link::Approve;
use crate::machine::Machine;
use crate::prekeys::Refill;
use crate::request::{PrekeyCount, RequestId, Response};
use crate::rooms::{FetchGranted, RoomEvent, RoomJob, RoomLine, RoomSummary};
use crate::store::Message;
use crate::{Error, Result};

/// Names an operation in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(pub(crate) u64);

/// A handle on an operation whose result is a `T`.
#[derive(Debug)]
pub struct Op<T> {
    pub(crate) id: OpId,
    _t: PhantomData<fn() -> T>,
}

impl<T> Op<T> {
    pub(crate) fn new(id: OpId) -> Op<T> {
        Op {
            id,
            _t: PhantomData,
        }
    }

    pub fn id(&self) -> OpId {
        self.id
    }
}

/// Every kind of result an operation ends with.
#[derive(Debug)]
pub(crate) enum Output {
    Unit,
    Message(Message),
    Devices(Vec<DeviceInfo>),
    Device(DeviceInfo),
    Safety(SafetyNumber),
    Count(u32),
    Prekeys(PrekeyCount),
    Room(RoomSummary),
    Line(RoomLine),
    Events(Vec<RoomEvent>),
}

/// The result types operations end with.
pub trait FromOutput: Sized {
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn from_output(o: Output) -> Option<Self>;
}

macro_rules! from_output {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl FromOutput for $t {
            #[allow(private_interfaces)]
            fn from_output(o: Output) -> Option<Self> {
                match o {
                    Output::$v(x) => Some(x),
                    _ => None,
                }
            }
        }
    )*};
}

from_output!(
    Message => Message,
    Vec<DeviceInfo> => Devices,
    DeviceInfo => Device,
    SafetyNumber => Safety,
    u32 => Count,
    PrekeyCount => Prekeys,
    RoomSummary => Room,
    RoomLine => Line,
    Vec<RoomEvent> => Events,
);

impl FromOutput for () {
    #[allow(private_interfaces)]
    fn from_output(o: Output) -> Option<Self> {
        matches!(o, Output::Unit).then_some(())
    }
}

/// The answer to one request: the response, or the name of the request the
/// transport could not do.
pub(crate) type Reply = std::result::Result<Response, &'static str>;

/// What a job did with an answer.
pub(crate) enum Step {
    Wait,
    Done(Result<Output>),
}

impl Step {
    pub(crate) fn fail(e: Error) -> Step {
        Step::Done(Err(e))
    }
}

/// Turns a `Result<Step>` from a job's code into a step.
pub(crate) fn step(r: Result<Step>) -> Step {
    r.unwrap_or_else(Step::fail)
}

/// An operation in flight.
pub(crate) enum Job {
    Text(Box<SendText>),
    Lookup(LookupJob),
    Block(BlockJob),
    Remove(RemoveJob),
    Refill(Refill),
    Approve(Box<Approve>),
    Room(Box<RoomJob>),
    Fetch(FetchGranted),
}

impl Job {
    /// Sends the job's first requests (or finishes it at once).
    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Step {
        step(match self {
            Job::Text(j) => j.start(m, op),
            Job::Lookup(j) => j.start(m, op),
            Job::Block(j) => j.start(m, op),
            Job::Remove(j) => j.start(m, op),
            Job::Refill(j) => j.start(m, op),
            Job::Approve(j) => j.start(m, op),
            Job::Room(j) => j.start(m, op),
            Job::Fetch(j) => j.start(m, op),
        })
    }

    /// Takes the answer to request `id`.
    pub(crate) fn on_reply(&mut self, m: &mut Machine, op: OpId, id: RequestId, r: Reply) -> Step {
        step(match self {
            Job::Text(j) => j.on_reply(m, op, id, r),
            Job::Lookup(j) => j.on_reply(m, r),
            Job::Block(j) => j.on_reply(m, r),
            Job::Remove(j) => j.on_reply(r),
            Job::Refill(j) => j.on_reply(m, op, r),
            Job::Approve(j) => j.on_reply(m, op, id, r),
            Job::Room(j) => j.on_reply(m, op, id, r),
            Job::Fetch(j) => j.on_reply(m, r),
        })
    }
}

/// The response a job expected, or why it cannot go on.
pub(crate) fn expect(r: Reply) -> Result<Response> {
    r.map_err(|what| Error::Aborted { what })
}

/// The error for an answer of the wrong kind.
pub(crate) fn unexpected(what: &str, got: &Response) -> Error {
    Error::BadAnswer(format!("{what}: {got:?}"))
}
