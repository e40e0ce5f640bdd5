//! # sotto-device
//!
//! One sotto device as a state machine: the policy of a device, with no
//! I/O of its own. It decides what a received datagram means (a message, a
//! room entry, a history request or answer, link data, a names hint), which
//! sessions to start, what to seal for whom, what to store, what to answer
//! and when to refill prekeys. It holds no socket, no async runtime, no
//! database and no clock: time (`now`, this machine's wall clock in ms) and
//! randomness come in, and work goes out.
//!
//! The shape is that of quinn-proto's `Connection` and matrix-sdk-crypto's
//! `OlmMachine`:
//!
//! - **In**: datagrams from any transport ([`Machine::receive`], then
//!   [`Machine::flush`] when the transport has handed over what it had),
//!   user commands ([`Machine::send_text`], [`Machine::room_send`], ...),
//!   and the answers to its requests ([`Machine::handle_response`], or
//!   [`Machine::fail_request`]).
//! - **Out**: requests with ids ([`Machine::poll_request`]: look a user up,
//!   claim prekeys, post a datagram to these devices, acknowledge, fetch a
//!   datagram by id, upload prekeys, link calls), typed results of commands
//!   ([`Machine::take_result`] with the command's [`Op`] handle), and events
//!   ([`Machine::poll_event`]: messages, refusals, room lines).
//! - **State**: the [`Store`] trait. Everything one input changes is one
//!   [`ChangeSet`], committed before the datagram it came from is
//!   acknowledged.
//!
//! `sotto-client` is the shell that runs it against a server and the
//! SQLCipher store; a peer-to-peer shell runs the same machine against
//! peers (requests name users and devices, never a server).
//!
//! ```
//! # fn demo(m: &mut sotto_device::Machine, now: u64) -> sotto_device::Result<()> {
//! use sotto_device::{Request, Response};
//! let op = m.send_text(now, "bob", "hello", 0)?;
//! while m.take_result(&op).is_none() {
//!     let Some(req) = m.poll_request() else { break };
//!     // Carry `req.request` out over a transport, then report back:
//!     let answer = match req.request {
//!         Request::Lookup(_) => Response::User(None),
//!         _ => Response::Done,
//!     };
//!     m.handle_response(now, req.id, answer);
//! }
//! # Ok(()) }
//! ```
//!
//! Layout: `machine` (state, commits, the request queue, operations),
//! `receive` (datagrams in), `deliver` (sending to users' devices),
//! `directory` (lookups, contacts, trust, blocks, history), `prekeys`,
//! `link` (new users and devices, approval), `rooms` (the room glue),
//! `body` (the client bodies inside payloads), `store` (the trait),
//! `testing` (feature `testing`: in-memory store and network, the shared
//! store suite, test hooks).

mod body;
mod deliver;
mod directory;
mod error;
mod events;
mod ids;
mod link;
mod machine;
mod ops;
mod p2p;
mod prekeys;
mod receive;
mod request;
mod rooms;
pub mod store;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use body::{
    GroupTextBody, LinkSyncBody, NamesBody, SyncContact, TextBody, BODY_VERSION, GROUP_TEXT,
    MAX_USERNAME, ROOM_NAMES,
};
pub use error::{Error, Result, RoomRefusal, StoreError};
pub use events::{ContactInfo, DeviceInfo, Event, GrantProblem, Rejection, SyncReport};
pub use ids::{check_username, conversation_id};
pub use link::{Approval, Home, Joining, NewDevice, NewUser};
pub use machine::Machine;
pub use ops::{FromOutput, Op, OpId};
pub use p2p::{group_address, group_conversation, GroupMember, GroupScope, Registration};
pub use prekeys::{PREKEY_BATCH, PREKEY_LOW};
pub use receive::Incoming;
pub use request::{
    DeliveryTag, Directory, EncodedBundle, LinkWaiting, Lookup, OutgoingRequest, PrekeyCount,
    Recipients, Request, RequestId, Response,
};
pub use rooms::{
    LineContent, RoomChanges, RoomEvent, RoomLine, RoomLogLine, RoomLogReport, RoomMember,
    RoomNotice, RoomSummary, RoomView,
};
pub use sotto_proto::room::Ttl;
pub use store::{
    Account, ChangeSet, Contact, HistoryQuery, Message, RoomMessageRow, RoomRecord, RoomSave,
    Store, StoreResult,
};
