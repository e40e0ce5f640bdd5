//! The work the core hands out: requests with ids, executed by a shell
//! (the server client, the peer-to-peer node, a test network) and reported
//! back with [`crate::Machine::handle_response`] or
//! [`crate::Machine::fail_request`]. Nothing here names a URL or a peer:
//! "look this user up", "deliver this datagram to these devices".

use std::collections::{HashMap, VecDeque};

use sotto_proto::{DeviceCert, DeviceId, SignedPrekey, UserPublic};

/// Names one request until it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

/// How the transport names a received datagram so that it can be
/// acknowledged (the server's mailbox sequence number; a peer transport
/// picks its own). Opaque to the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryTag(pub u64);

/// Whose devices a lookup asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A user by username hash.
    User([u8; 32]),
    /// This device's own user.
    Own,
}

/// The devices of one user a datagram is sealed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipients {
    pub user: UserPublic,
    pub devices: Vec<DeviceId>,
}

/// One piece of work for the shell.
#[derive(Clone, Debug)]
pub enum Request {
    /// A user's key and device certificates: answer [`Response::User`].
    Lookup(Lookup),
    /// One prekey bundle for each of `devices` of the user with this
    /// username hash: answer [`Response::Bundles`].
    Claim {
        user: [u8; 32],
        devices: Vec<DeviceId>,
    },
    /// Deliver a sealed datagram to the devices it is sealed for (listed
    /// here too, for transports that address devices): answer
    /// [`Response::Posted`] once it is durable with the transport, or
    /// [`Response::Blocked`].
    Post {
        message_id: [u8; 16],
        datagram: Vec<u8>,
        recipients: Vec<Recipients>,
    },
    /// These received datagrams are committed: the transport may forget
    /// them. Answer [`Response::Done`].
    Ack(Vec<DeliveryTag>),
    /// A retained datagram by id (SHA-256 of its bytes): answer
    /// [`Response::Datagram`].
    Fetch { datagram_id: [u8; 32] },
    /// How many one-time prekeys of this device the transport still holds:
    /// answer [`Response::Prekeys`].
    PrekeyStatus,
    /// Publish new prekeys (their secrets are committed already): answer
    /// [`Response::Done`].
    UploadPrekeys {
        one_time: Vec<SignedPrekey>,
        reserve: Option<SignedPrekey>,
    },
    /// The keys of the device waiting under a link id: answer
    /// [`Response::LinkRequest`].
    ReadLink { link_id: String },
    /// Hand the waiting device its certificate (registered by the
    /// transport) and the approval sealed for it (opaque to the
    /// transport): answer [`Response::Done`] or [`Response::LinkGone`].
    ApproveLink {
        link_id: String,
        cert: DeviceCert,
        approval: Vec<u8>,
    },
    /// Refuse datagrams from the user with this username hash.
    Block { user: [u8; 32] },
    /// Accept them again.
    Unblock { user: [u8; 32] },
    /// Forget `device`, a device of this user, for good (lost or stolen):
    /// the transport checks `signature`, made by the user key over the
    /// device id and `time_ms` (`UserKey::sign_removal`). Answer
    /// [`Response::Done`], or [`Response::UnknownDevice`].
    RemoveDevice {
        device: DeviceId,
        time_ms: u64,
        signature: [u8; 64],
    },
}

impl Request {
    /// A short name of the request, for errors.
    pub fn what(&self) -> &'static str {
        match self {
            Request::Lookup(_) => "directory lookup",
            Request::Claim { .. } => "prekey claim",
            Request::Post { .. } => "delivery",
            Request::Ack(_) => "acknowledgement",
            Request::Fetch { .. } => "datagram fetch",
            Request::PrekeyStatus => "prekey status",
            Request::UploadPrekeys { .. } => "prekey upload",
            Request::ReadLink { .. } => "link lookup",
            Request::ApproveLink { .. } => "link approval",
            Request::Block { .. } => "block",
            Request::Unblock { .. } => "unblock",
            Request::RemoveDevice { .. } => "device removal",
        }
    }
}

/// A request with its id.
#[derive(Clone, Debug)]
pub struct OutgoingRequest {
    pub id: RequestId,
    pub request: Request,
}

/// A user as the directory lists it: the user key and the encoded device
/// certificates (the core verifies each against the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directory {
    pub user: UserPublic,
    pub devices: Vec<Vec<u8>>,
    /// The display name of an organisation's sender account, as the
    /// server vouches for it (no ordinary user has one).
    pub organisation: Option<String>,
}

/// One claimed prekey bundle, encoded (the core verifies it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBundle {
    pub cert: Vec<u8>,
    pub prekey: Vec<u8>,
}

/// The transport's count of this device's prekeys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PrekeyCount {
    /// Unclaimed one-time prekeys.
    pub one_time: u32,
    /// How often the reserve key was served since the last refill.
    pub reserve_served: u32,
}

/// The keys of a device waiting to be linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkWaiting {
    pub device: DeviceId,
    pub dh: [u8; 32],
    /// The MAC over the keys under the code's secret
    /// ([`sotto_proto::LinkSecret::request_proof`]).
    pub proof: [u8; 32],
}

/// The answer to a request.
#[derive(Clone, Debug)]
pub enum Response {
    /// `None`: no such user.
    User(Option<Directory>),
    /// `None`: no such user.
    Bundles(Option<Vec<EncodedBundle>>),
    Posted,
    /// The recipient refuses datagrams from this user.
    Blocked,
    /// `None`: not retained (expired, or not this user's to read).
    Datagram(Option<Vec<u8>>),
    Prekeys(PrekeyCount),
    /// `None`: unknown or expired.
    LinkRequest(Option<LinkWaiting>),
    /// The link request expired before it was approved.
    LinkGone,
    /// No such device of this user.
    UnknownDevice,
    Done,
}

/// Who waits for a request's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Op(crate::ops::OpId),
    /// The check of a received datagram's claimed sender (by username).
    Sender(String),
    /// Acknowledgements: nothing waits.
    Nobody,
}

/// Requests not yet taken by the shell, and those in flight.
#[derive(Default)]
pub(crate) struct Queue {
    next: u64,
    out: VecDeque<OutgoingRequest>,
    owners: HashMap<RequestId, (Owner, &'static str)>,
}

impl Queue {
    pub(crate) fn push(&mut self, owner: Owner, request: Request) -> RequestId {
        self.next += 1;
        let id = RequestId(self.next);
        self.owners.insert(id, (owner, request.what()));
        self.out.push_back(OutgoingRequest { id, request });
        id
    }

    /// Queues an acknowledgement, joining the one still waiting at the end
    /// of the queue (one request per batch of datagrams).
    pub(crate) fn ack(&mut self, tag: DeliveryTag) {
        if let Some(OutgoingRequest {
            request: Request::Ack(tags),
            ..
        }) = self.out.back_mut()
        {
            tags.push(tag);
            return;
        }
        self.push(Owner::Nobody, Request::Ack(vec![tag]));
    }

    pub(crate) fn pop(&mut self) -> Option<OutgoingRequest> {
        self.out.pop_front()
    }

    /// Who waited for `id` and what it was; forgets it.
    pub(crate) fn answered(&mut self, id: RequestId) -> Option<(Owner, &'static str)> {
        self.owners.remove(&id)
    }

    /// Drops the queued (not yet taken) requests of `owner`.
    pub(crate) fn cancel(&mut self, owner: &Owner) {
        self.out
            .retain(|r| self.owners.get(&r.id).map(|(o, _)| o) != Some(owner));
        self.owners.retain(|_, (o, _)| o != owner);
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.out.is_empty()
    }
}
