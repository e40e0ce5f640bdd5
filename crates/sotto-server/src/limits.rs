//! Every bound the server puts on what a client can make it spend: time
//! (read and write timeouts), connections, memory (push queues), disk
//! (mailbox quotas, time to live) and rate. Each field says what it bounds,
//! why, its default, and the `sotto server` flag that sets it (fields
//! without a flag are set from Rust, [`crate::Config::limits`]).
//! docs/api.md, "Limits and behaviour", lists them for clients.

use std::num::NonZeroU32;
use std::time::Duration;

use sotto_store::server::MailboxQuota;

const MIB: u64 = 1 << 20;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Clone, Debug)]
pub struct Limits {
    /// A TLS handshake must finish within this. Default 10 s.
    pub handshake_timeout: Duration,
    /// A request's headers must arrive within this, counted from when the
    /// connection is ready for the next request (so an idle keep-alive
    /// connection is closed after it too). Default 10 s; `--read-timeout`.
    pub header_timeout: Duration,
    /// A request body must keep coming: a gap longer than this between two
    /// pieces ends the request (408) and its connection. Without it, a
    /// client announcing a large body and sending nothing held a connection
    /// slot forever. Default 10 s; `--read-timeout`.
    pub body_timeout: Duration,
    /// A connection whose peer stops reading (a write makes no progress)
    /// for this long is closed, HTTP or WebSocket: a reader that never
    /// reads cannot pin a task, its buffers and its push queue. Default
    /// 10 s.
    pub write_timeout: Duration,
    /// A WebSocket is pinged this often (keeps NAT mappings alive); one
    /// whose peer sends nothing, not even a pong, for two pings in a row
    /// is closed (1001), so a vanished peer does not hold its socket slot
    /// until TCP gives up. Default 30 s.
    pub ping_every: Duration,
    /// HTTP connections served at once; beyond it new ones wait in the
    /// kernel's backlog. Default 8192.
    pub max_connections: usize,
    /// HTTP connections one client address may hold at once (IPv6: one
    /// /64); more are closed at once. Keeps one address from taking every
    /// slot of [`Limits::max_connections`]. Generous for shared addresses
    /// (NAT, load generators). Default 512; `--max-connections-per-ip`.
    pub connections_per_address: usize,
    /// Upgraded WebSockets at once (they leave the HTTP count once
    /// upgraded); more upgrades are answered 503. Default 65536.
    pub max_websockets: usize,
    /// WebSockets one device may hold; a new one closes its oldest. A
    /// device needs one; a few cover reconnects while an old socket dies.
    /// Default 4.
    pub websockets_per_device: usize,
    /// Bytes of push frames queued for one socket; a socket over it is
    /// dropped (its device reconnects and fetches: the mailbox is the
    /// source of truth). Room for a burst of about a thousand small
    /// messages while the device is busy. Default 1 MiB, so a device costs
    /// at most this times [`Limits::websockets_per_device`].
    pub push_queue_bytes: usize,
    /// Datagrams up to this size are pushed inline; larger ones are
    /// announced by id and size (`Push::Notice`) and fetched over HTTP, so
    /// no datagram is too large for the socket and no large payload sits
    /// in a queue. Default 64 KiB.
    pub push_inline_bytes: usize,
    /// Largest datagram accepted (413 above it). Default: the protocol's
    /// maximum (`sotto_proto::datagram::MAX_DATAGRAM`, about 18 MB).
    pub max_datagram: usize,
    /// Unacknowledged bytes one device's mailbox may hold; a send that
    /// would go over is refused (409 `mailbox_full`) and nothing stored is
    /// touched. Default 256 MiB; `--max-mailbox-mb`.
    pub mailbox_bytes: u64,
    /// Unacknowledged bytes all devices of one user may hold together
    /// (bounds a user who links many devices). Default 4 x
    /// [`Limits::mailbox_bytes`]; `--max-mailbox-mb` sets both.
    pub user_mailbox_bytes: u64,
    /// Unacknowledged items older than this are deleted (a device that
    /// never returns cannot keep its mailbox full for ever). Default 30
    /// days; `--unacked-days`.
    pub unacked_ttl: Duration,
    /// Request rates; `None` turns every rate limit off
    /// (`--no-rate-limits`, for load tests on one address only).
    pub rates: Option<Rates>,
}

impl Default for Limits {
    fn default() -> Limits {
        let mailbox = 256 * MIB;
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            ping_every: Duration::from_secs(30),
            max_connections: 8192,
            connections_per_address: 512,
            max_websockets: 65_536,
            websockets_per_device: 4,
            push_queue_bytes: 1 << 20,
            push_inline_bytes: 64 << 10,
            max_datagram: sotto_proto::datagram::MAX_DATAGRAM,
            mailbox_bytes: mailbox,
            user_mailbox_bytes: 4 * mailbox,
            unacked_ttl: 30 * DAY,
            rates: Some(Rates::default()),
        }
    }
}

impl Limits {
    /// Sets the mailbox quota of a device to `mb` MiB and of a user to four
    /// times that (`--max-mailbox-mb`).
    pub fn set_mailbox_mb(&mut self, mb: u64) {
        self.mailbox_bytes = mb.saturating_mul(MIB);
        self.user_mailbox_bytes = self.mailbox_bytes.saturating_mul(4);
    }

    /// Sets the time to live of unacknowledged items (`--unacked-days`).
    pub fn set_unacked_days(&mut self, days: u64) {
        self.unacked_ttl = DAY.saturating_mul(days.min(u32::MAX as u64) as u32);
    }

    pub(crate) fn quota(&self) -> MailboxQuota {
        MailboxQuota {
            device_bytes: self.mailbox_bytes,
            user_bytes: self.user_mailbox_bytes,
        }
    }
}

/// A rate: `burst` requests at once, then one more each `every`
/// (a GCRA cell, as `governor` counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: NonZeroU32,
    pub every: Duration,
}

impl Rate {
    pub const fn new(burst: u32, every: Duration) -> Rate {
        Rate {
            burst: match NonZeroU32::new(burst) {
                Some(b) => b,
                None => NonZeroU32::MIN,
            },
            every,
        }
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What costs the server or a user something, limited per device (the
/// signing device) and per client address (IPv6: per /64). Answered 429
/// with `Retry-After` (seconds). Rates are kept in this node's memory: with
/// several nodes each allows its own share.
#[derive(Clone, Debug)]
pub struct Rates {
    /// One-time prekey claims (`POST /v1/users/{h}/bundles`) per claiming
    /// device: a room's first message claims once per member. Default 200
    /// at once, then 5 a second.
    pub claims_per_device: Rate,
    /// Claims by one device of one target user: a session is started once,
    /// so a device asking again and again is draining that user's pool.
    /// Default 5 at once, then one a minute.
    pub claims_per_target: Rate,
    /// Claims per client address. Default 400 at once, then 10 a second.
    pub claims_per_address: Rate,
    /// Directory lookups (`GET /v1/users/{h}`) per device: clients resolve
    /// on every send, guessers probe names. Default 300 at once, then 2 a
    /// second.
    pub lookups_per_device: Rate,
    /// Directory lookups per client address. Default 600 at once, then 5 a
    /// second.
    pub lookups_per_address: Rate,
    /// Accounts and link requests made without an account
    /// (`POST /v1/register`, `POST /v1/link`; a link costs about 64 ms of
    /// CPU and its storage) per client address. Default 20 at once, then
    /// one every 30 s.
    pub accounts_per_address: Rate,
    /// Link requests read or approved (`GET /v1/link/{id}`,
    /// `POST /v1/link/{id}/approve`) per device: link ids must not be
    /// guessable by trying. Default 20 at once, then one every 5 s.
    pub link_reads_per_device: Rate,
    /// Link status polls (`GET /v1/link/{id}/status`, unauthenticated) per
    /// client address; a waiting device polls about twice a second.
    /// Default 120 at once, then 5 a second.
    pub link_polls_per_address: Rate,
    /// Sender API calls per API key. Default 1000 at once, then 200 a
    /// second.
    pub sender_calls_per_key: Rate,
    /// Sender API calls per client address, counted before the key is
    /// checked (a stranger guessing keys). Default 2000 at once, then 400
    /// a second.
    pub sender_calls_per_address: Rate,
    /// One-time passwords asked for one number (`POST
    /// /v1/phone/register`; each may send an SMS). Default 3 at once, then
    /// one a minute, per node; the store also caps them at 10 an hour per
    /// number across all nodes (`api::phone`, `OTP_LIMIT`).
    pub otp_per_number: Rate,
    /// One-time passwords asked per client address. Default 10 at once,
    /// then one every 30 s.
    pub otp_per_address: Rate,
    /// `POST /v1/phone/verify` per client address (each OTP also allows 5
    /// attempts only). Default 20 at once, then one every 10 s.
    pub verify_per_address: Rate,
    /// `POST /v1/sms/inbound` per client address (the provider's). Default
    /// 200 at once, then 50 a second.
    pub sms_inbound_per_address: Rate,
}

impl Default for Rates {
    fn default() -> Rates {
        Rates {
            claims_per_device: Rate::new(200, ms(200)),
            claims_per_target: Rate::new(5, ms(60_000)),
            claims_per_address: Rate::new(400, ms(100)),
            lookups_per_device: Rate::new(300, ms(500)),
            lookups_per_address: Rate::new(600, ms(200)),
            accounts_per_address: Rate::new(20, ms(30_000)),
            link_reads_per_device: Rate::new(20, ms(5_000)),
            link_polls_per_address: Rate::new(120, ms(200)),
            sender_calls_per_key: Rate::new(1000, ms(5)),
            sender_calls_per_address: Rate::new(2000, ms(2)),
            otp_per_number: Rate::new(3, ms(60_000)),
            otp_per_address: Rate::new(10, ms(30_000)),
            verify_per_address: Rate::new(20, ms(10_000)),
            sms_inbound_per_address: Rate::new(200, ms(20)),
        }
    }
}
