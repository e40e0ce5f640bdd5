//! Rate limits ([`crate::limits::Rates`]) with `governor`'s keyed GCRA
//! limiters, one per rate. A refused request is a 429 whose `Retry-After`
//! says when the first refusing limiter would let it through. The state is
//! this node's memory (local limits, see `Rates`); the retention task
//! drops idle keys every minute, so memory follows the active keys. Each
//! node has its own: with several nodes a client spreading its requests
//! over them gets each node's allowance (a load balancer that keeps a
//! client on one node keeps the limits as configured).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use sotto_proto::DeviceId;

use crate::api::ApiError;
use crate::limits::{Rate, Rates};

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// The address a client connected from (set on every request by
/// `serve`): what per-address limits count by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    /// The key of an address: IPv4 as is, IPv6 by its /64 (one subscriber
    /// usually holds a whole /64), IPv4-mapped IPv6 as IPv4.
    pub fn key(&self) -> IpAddr {
        match self.0.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            },
            v4 => v4,
        }
    }
}

fn keyed<K: std::hash::Hash + Eq + Clone>(rate: Rate) -> Keyed<K> {
    let quota = Quota::with_period(rate.every)
        .expect("rates have a non-zero period")
        .allow_burst(rate.burst);
    RateLimiter::keyed(quota)
}

pub(crate) struct Limiters {
    claims_per_device: Keyed<DeviceId>,
    claims_per_target: Keyed<(DeviceId, [u8; 32])>,
    claims_per_address: Keyed<IpAddr>,
    lookups_per_device: Keyed<DeviceId>,
    lookups_per_address: Keyed<IpAddr>,
    accounts_per_address: Keyed<IpAddr>,
    link_reads_per_device: Keyed<DeviceId>,
    link_polls_per_address: Keyed<IpAddr>,
    sender_calls_per_key: Keyed<[u8; 32]>,
    sender_calls_per_address: Keyed<IpAddr>,
    otp_per_number: Keyed<[u8; 32]>,
    otp_per_address: Keyed<IpAddr>,
    verify_per_address: Keyed<IpAddr>,
    sms_inbound_per_address: Keyed<IpAddr>,
    /// Refusals (metrics).
    refused: Counter,
}

/// Checks one key against one limiter: a 429 with the wait on refusal.
fn check<K: std::hash::Hash + Eq + Clone>(limiter: &Keyed<K>, key: &K) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(limiter.clock().now());
        ApiError::rate_limited(wait)
    })
}

impl Limiters {
    /// Counts a refusal.
    fn counted(&self, result: Result<(), ApiError>) -> Result<(), ApiError> {
        if result.is_err() {
            self.refused.inc();
        }
        result
    }
}

impl Limiters {
    pub fn new(rates: &Rates, refused: Counter) -> Limiters {
        Limiters {
            claims_per_device: keyed(rates.claims_per_device),
            claims_per_target: keyed(rates.claims_per_target),
            claims_per_address: keyed(rates.claims_per_address),
            lookups_per_device: keyed(rates.lookups_per_device),
            lookups_per_address: keyed(rates.lookups_per_address),
            accounts_per_address: keyed(rates.accounts_per_address),
            link_reads_per_device: keyed(rates.link_reads_per_device),
            link_polls_per_address: keyed(rates.link_polls_per_address),
            sender_calls_per_key: keyed(rates.sender_calls_per_key),
            sender_calls_per_address: keyed(rates.sender_calls_per_address),
            otp_per_number: keyed(rates.otp_per_number),
            otp_per_address: keyed(rates.otp_per_address),
            verify_per_address: keyed(rates.verify_per_address),
            sms_inbound_per_address: keyed(rates.sms_inbound_per_address),
            refused,
        }
    }

    /// A prekey claim by `device` of the user `target` (username hash).
    pub fn claim(
        &self,
        device: DeviceId,
        target: [u8; 32],
        addr: ClientAddr,
    ) -> Result<(), ApiError> {
        self.counted((|| {
            check(&self.claims_per_address, &addr.key())?;
            check(&self.claims_per_device, &device)?;
            check(&self.claims_per_target, &(device, target))
        })())
    }

    pub fn lookup(&self, device: DeviceId, addr: ClientAddr) -> Result<(), ApiError> {
        self.counted(
            check(&self.lookups_per_address, &addr.key())
                .and_then(|()| check(&self.lookups_per_device, &device)),
        )
    }

    /// A registration or a link request (no account yet).
    pub fn account(&self, addr: ClientAddr) -> Result<(), ApiError> {
        self.counted(check(&self.accounts_per_address, &addr.key()))
    }

    pub fn link_read(&self, device: DeviceId) -> Result<(), ApiError> {
        self.counted(check(&self.link_reads_per_device, &device))
    }

    pub fn link_poll(&self, addr: ClientAddr) -> Result<(), ApiError> {
        self.counted(check(&self.link_polls_per_address, &addr.key()))
    }

    /// A sender API call: per client address before the key is checked
    /// (guessing keys), then per key.
    pub fn sender_address(&self, addr: ClientAddr) -> Result<(), ApiError> {
        self.counted(check(&self.sender_calls_per_address, &addr.key()))
    }

    pub fn sender_key(&self, key_hash: [u8; 32]) -> Result<(), ApiError> {
        self.counted(check(&self.sender_calls_per_key, &key_hash))
    }

    /// A request for a one-time password for a number (an SMS costs
    /// money and bothers the number's owner): per number (hashed) and
    /// per client address.
    pub fn otp(&self, number: [u8; 32], addr: ClientAddr) -> Result<(), ApiError> {
        self.counted(check(&self.otp_per_address, &addr.key()))?;
        self.counted(check(&self.otp_per_number, &number))
    }

    /// A one-time password tried, per client address (each OTP also
    /// allows only a few attempts).
    pub fn verify(&self, addr: ClientAddr) -> Result<(), ApiError> {
        self.counted(check(&self.verify_per_address, &addr.key()))
    }

    pub fn sms_inbound(&self, addr: ClientAddr) -> Result<(), ApiError> {
        self.counted(check(&self.sms_inbound_per_address, &addr.key()))
    }

    /// Forgets keys whose limiter is back to a full burst (no information
    /// lost), so the maps hold only recently active devices and addresses.
    pub fn forget_idle(&self) {
        self.claims_per_device.retain_recent();
        self.claims_per_target.retain_recent();
        self.claims_per_address.retain_recent();
        self.lookups_per_device.retain_recent();
        self.lookups_per_address.retain_recent();
        self.accounts_per_address.retain_recent();
        self.link_reads_per_device.retain_recent();
        self.link_polls_per_address.retain_recent();
        self.sender_calls_per_key.retain_recent();
        self.sender_calls_per_address.retain_recent();
        self.otp_per_number.retain_recent();
        self.otp_per_address.retain_recent();
        self.verify_per_address.retain_recent();
        self.sms_inbound_per_address.retain_recent();
    }
}

/// Whole seconds for `Retry-After`, rounded up (at least 1).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_millis().div_ceil(1000) as u64).max(1)
}
