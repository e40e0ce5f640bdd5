//! One-time prekeys: generating them, and keeping the transport's pool of
//! this device's prekeys (and its reserve key) filled.

use rand_core::CryptoRngCore;
use sotto_proto::{Device, SignedPrekey};

use crate::machine::Machine;
use crate::ops::{expect, unexpected, Job, Op, OpId, Output, Reply, Step};
use crate::request::{PrekeyCount, Request, Response};
use crate::store::ChangeSet;
use crate::Result;

/// One-time prekeys uploaded at registration, linking and each refill.
pub const PREKEY_BATCH: u32 = 100;
/// Refill when fewer one-time prekeys than this are left.
pub const PREKEY_LOW: u32 = 20;

/// Generates `n` one-time prekeys (and a reserve key if `reserve`) on
/// `device`; returns their public halves.
pub(crate) fn generate_prekeys(
    device: &mut Device,
    mut rng: &mut dyn CryptoRngCore,
    n: u32,
    reserve: bool,
) -> (Vec<SignedPrekey>, Option<SignedPrekey>) {
    let one_time = device.generate_prekeys(&mut rng, n);
    let reserve = reserve.then(|| device.generate_reserve(&mut rng));
    (one_time, reserve)
}

#[derive(Clone, Copy)]
enum Mode {
    /// Only report the count.
    Status,
    /// Upload if the pool is low or the reserve was served.
    IfLow,
    /// Upload a batch and a new reserve.
    Always,
}

/// Asks for the pool's count, decides, uploads.
pub(crate) struct Refill {
    mode: Mode,
    uploading: Option<u32>,
}

impl Refill {
    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Result<Step> {
        if let Mode::Always = self.mode {
            return self.upload(m, op, true);
        }
        m.request(op, Request::PrekeyStatus);
        Ok(Step::Wait)
    }

    pub(crate) fn on_reply(&mut self, m: &mut Machine, op: OpId, reply: Reply) -> Result<Step> {
        let response = expect(reply)?;
        if let Some(n) = self.uploading {
            return Ok(Step::Done(Ok(Output::Count(n))));
        }
        let Response::Prekeys(count) = response else {
            return Err(unexpected("prekey status", &response));
        };
        match self.mode {
            Mode::Status => Ok(Step::Done(Ok(Output::Prekeys(count)))),
            _ if count.one_time >= PREKEY_LOW && count.reserve_served == 0 => {
                Ok(Step::Done(Ok(Output::Count(0))))
            }
            _ => self.upload(m, op, count.reserve_served > 0),
        }
    }

    fn upload(&mut self, m: &mut Machine, op: OpId, reserve: bool) -> Result<Step> {
        let (one_time, reserve) =
            generate_prekeys(&mut m.device, &mut *m.rng, PREKEY_BATCH, reserve);
        // Secrets are durable before the public halves leave the device.
        m.commit(ChangeSet::default())?;
        self.uploading = Some(one_time.len() as u32);
        m.request(op, Request::UploadPrekeys { one_time, reserve });
        Ok(Step::Wait)
    }
}

impl Machine {
    fn refill(&mut self, now: u64, mode: Mode) -> Op<u32> {
        self.now = now;
        self.start(Job::Refill(Refill {
            mode,
            uploading: None,
        }))
    }

    /// Refills the transport's pool of this device's one-time prekeys if
    /// fewer than [`PREKEY_LOW`] are left (and replaces the reserve key if
    /// it was served). The result is how many were uploaded.
    pub fn refill_prekeys_if_low(&mut self, now: u64) -> Op<u32> {
        self.refill(now, Mode::IfLow)
    }

    /// Uploads [`PREKEY_BATCH`] new one-time prekeys and a new reserve key.
    pub fn refill_prekeys(&mut self, now: u64) -> Op<u32> {
        self.refill(now, Mode::Always)
    }

    /// The transport's count of this device's unclaimed one-time prekeys.
    pub fn prekey_status(&mut self, now: u64) -> Op<PrekeyCount> {
        self.now = now;
        self.start(Job::Refill(Refill {
            mode: Mode::Status,
            uploading: None,
        }))
    }
}
