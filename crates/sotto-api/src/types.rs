//! Request and response bodies. Every field that carries key material or a
//! datagram is base64 (`b64`) or hex, as its doc says.

use serde::{Deserialize, Serialize};

/// Every error response: `{"error": "...", "code": "..."}` with a 4xx/5xx
/// status. `code` is stable and machine-readable.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

/// Stable error codes.
pub mod codes {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const BLOCKED: &str = "blocked";
    pub const UNKNOWN_USER: &str = "unknown_user";
    pub const UNKNOWN_DEVICE: &str = "unknown_device";
    pub const USERNAME_TAKEN: &str = "username_taken";
    /// The user key or device is registered already (or the link was
    /// approved already).
    pub const ALREADY_REGISTERED: &str = "already_registered";
    pub const TOO_LARGE: &str = "too_large";
    pub const NOT_FOUND: &str = "not_found";
    pub const INTERNAL: &str = "internal";
    /// 429: too many requests of this kind from this device or address;
    /// the `Retry-After` header says how many seconds to wait.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// 409: a recipient device's (or its user's) mailbox holds as many
    /// unacknowledged bytes as the server allows; retry once it fetched.
    pub const MAILBOX_FULL: &str = "mailbox_full";
    /// 409: this exact signed request was already used; sign a new one.
    pub const REPLAYED: &str = "replayed";
    /// 409: a prekey id that this device published before.
    pub const PREKEY_REUSED: &str = "prekey_reused";
    /// 408: the request's body stopped arriving.
    pub const TIMEOUT: &str = "timeout";
    /// 503: the server holds as many connections of this kind as it allows.
    pub const UNAVAILABLE: &str = "unavailable";
}

/// `GET /v1/clock`: the master clock.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Clock {
    pub now_ms: u64,
}

/// `POST /v1/register`, signed by the new device (the device of `cert`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisterRequest {
    /// Hex [`crate::username_hash`].
    pub username_hash: String,
    /// b64 `DeviceCert::encode`.
    pub cert: String,
    /// b64 `SignedPrekey::encode`, one-time prekeys.
    pub prekeys: Vec<String>,
    /// b64 `SignedPrekey::encode`, the reserve prekey.
    pub reserve: String,
}

/// `GET /v1/users/{username_hash}` and `GET /v1/devices` (own user).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserDevices {
    /// Hex user public key.
    pub user: String,
    /// b64 device certificates.
    pub devices: Vec<String>,
    /// Set when the user is an organisation's sender account (a handle
    /// the server operator created): its display name, vouched for by the
    /// server. No ordinary user can have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
}

/// `POST /v1/users/{username_hash}/bundles`: claim one prekey for each
/// listed device of the user (all devices when `devices` is empty).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Hex device ids.
    #[serde(default)]
    pub devices: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bundle {
    /// b64 device certificate.
    pub cert: String,
    /// b64 signed prekey: a one-time prekey, or the reserve when the pool is
    /// empty.
    pub prekey: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClaimResponse {
    pub user: String,
    pub bundles: Vec<Bundle>,
}

/// `POST /v1/prekeys`: refill the calling device's pool.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrekeyUpload {
    pub prekeys: Vec<String>,
    #[serde(default)]
    pub reserve: Option<String>,
}

/// `GET /v1/prekeys` and the answer to `POST /v1/prekeys`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrekeyStatus {
    /// Unclaimed one-time prekeys on the server.
    pub one_time: u32,
    /// How many times the reserve key was served since the last refill.
    pub reserve_served: u32,
}

/// Answer to `POST /v1/messages` (body: the raw datagram,
/// `application/octet-stream`). Sent only once the datagram is durable in
/// every recipient's mailbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendResponse {
    /// Hex SHA-256 of the datagram: how it can be fetched again later.
    pub datagram_id: String,
    /// Number of mailboxes it was stored in.
    pub delivered_to: u32,
}

/// One mailbox entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxItem {
    /// Increasing per device; acknowledge by it.
    pub seq: u64,
    /// b64 datagram.
    pub datagram: String,
    /// Server time it was accepted, ms.
    pub received_at: u64,
}

/// `GET /v1/mailbox?after=SEQ&limit=N`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxBatch {
    pub items: Vec<MailboxItem>,
    /// True when more items wait after the last one returned.
    pub more: bool,
}

/// `POST /v1/mailbox/ack`, and the same JSON as a WebSocket text frame.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    pub seqs: Vec<u64>,
}

/// A new mailbox item too large to push inline: the device fetches it
/// (`GET /v1/mailbox?after=SEQ-1`, or `GET /v1/datagrams/{datagram_id}`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Notice {
    pub seq: u64,
    /// Hex SHA-256 of the datagram.
    pub datagram_id: String,
    /// The datagram's size in bytes.
    pub size: u64,
    pub received_at: u64,
}

/// Server -> device WebSocket text frames (a device sends `Ack` text
/// frames and binary send frames, [`crate::frame`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Push {
    /// A new mailbox item.
    Message(MailboxItem),
    /// A new mailbox item announced by id and size (datagrams over the
    /// server's inline push limit); fetch it over HTTP.
    Notice(Notice),
    /// The device's one-time prekey pool is low (or empty: the reserve key
    /// is being served); the device should upload more.
    PrekeysLow(PrekeyStatus),
    /// The answer to a send frame ([`crate::frame`]), once the datagram is
    /// durable or refused. Only a socket that sent gets these.
    SendResult(SendResult),
}

/// The answer to one send frame on the WebSocket: exactly one of `ok`
/// (what `POST /v1/messages` answers) and `error` (what it would refuse
/// with). Answers may come in any order; `req` says which send it is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendResult {
    pub req: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<SendResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// `POST /v1/link`: a new device asks to join a user. Signed by the new
/// device key (`device`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkRequest {
    /// Hex device id of the new device.
    pub device: String,
    /// Hex X25519 public key of the new device.
    pub dh: String,
    /// Hex MAC over the device's keys under a key from the link code's
    /// secret (which the server never sees): the approving device checks
    /// it to know this request is the one of the device showing the code.
    pub proof: String,
    pub prekeys: Vec<String>,
    pub reserve: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkCreated {
    /// Short id under which the request waits (10 minutes).
    pub link_id: String,
}

/// `GET /v1/link/{link_id}/status`, polled by the new device.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkStatus {
    pub approved: bool,
    /// b64 certificate, once approved.
    #[serde(default)]
    pub cert: Option<String>,
    /// Hex username hash of the user the device joined, once approved.
    #[serde(default)]
    pub username_hash: Option<String>,
    /// b64 approval sealed under the link code's secret (opaque to the
    /// server), once approved: what the new device trusts.
    #[serde(default)]
    pub approval: Option<String>,
}

/// `POST /v1/link/{link_id}/approve`, signed by an existing device of the
/// user.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkApprove {
    /// b64 certificate of the new device, signed by the user key.
    pub cert: String,
    /// b64 approval sealed for the new device under a key from the link
    /// code's secret (at most 512 KiB decoded); the server stores and
    /// hands it over without being able to read or forge it.
    pub approval: String,
}

/// `POST /v1/blocks` and an item of `GET /v1/blocks`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Block {
    /// Hex username hash of the user to refuse datagrams from.
    pub username_hash: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Blocks {
    pub blocked: Vec<String>,
}

/// `DELETE /v1/devices/{device_id}`: removes a device of the caller's user.
/// Signed (as every request) by the calling device, and by the user key:
/// only the device that holds it can remove devices.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoveDevice {
    /// Milliseconds since the Unix epoch (server clock); within the
    /// request clock skew of the server's time.
    pub time_ms: u64,
    /// b64 signature by the user key (`UserKey::sign_removal`) over the
    /// device id and `time_ms`.
    pub signature: String,
}
