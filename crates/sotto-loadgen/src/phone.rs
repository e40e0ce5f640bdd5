//! Registering phone numbers as `sotto register-phone` + `sotto
//! verify-phone` do, over the real API: the device's keys are made, `POST
//! /v1/phone/register` has the server text a code, the code is read from
//! the server's SMS sink ([`crate::sms`]), and `POST /v1/phone/verify`,
//! signed by the new device, registers a new user (a random `tel-` name)
//! with its certificate, signed prekey, one-time prekeys and reserve: the
//! device then receives as any registered device does. Also: opening what
//! a sender sent to such a device.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use reqwest::Method;
use sotto_api::phone::{PhoneStart, PhoneStarted, PhoneVerified, PhoneVerify};
use sotto_api::{b64, paths, Ack, MailboxBatch};

use crate::net::{chain, Api, Result};
use crate::sim::{self, SimDevice};
use crate::sms::SmsSink;

/// A device registered for a phone number.
pub struct PhoneDevice {
    pub number: String,
    pub dev: SimDevice,
    /// Held messages the verify sealed to this device.
    pub delivered: u32,
    /// From the register call to the code read in the sink, us.
    pub otp_wait_us: u32,
    /// From the register call to the verify's answer, us.
    pub total_us: u32,
}

fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Keys for a new device of a new user with a random `tel-` name, as the
/// client makes them for a phone registration.
pub fn new_phone_device(
    one_time: u32,
    now_ms: u64,
) -> Result<(SimDevice, sotto_api::RegisterRequest)> {
    let mut name = [0u8; 8];
    OsRng.fill_bytes(&mut name);
    sim::new_device(&format!("tel-{}", hex::encode(name)), one_time, now_ms)
}

/// `POST /v1/phone/register` (unsigned: the device has no account yet).
async fn start(api: &Api, number: &str) -> Result<PhoneStarted> {
    let req = PhoneStart {
        number: number.to_string(),
        otp: None,
    };
    let r = api
        .http
        .post(format!("{}{}", api.base, paths::PHONE_REGISTER))
        .json(&req)
        .send()
        .await
        .map_err(|e| format!("POST {}: {}", paths::PHONE_REGISTER, chain(&e)))?;
    let status = r.status();
    let body = r
        .bytes()
        .await
        .map_err(|e| format!("POST {}: {e}", paths::PHONE_REGISTER))?;
    if !status.is_success() {
        return Err(format!(
            "POST {} {number}: {status} {}",
            paths::PHONE_REGISTER,
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("POST {}: {e}", paths::PHONE_REGISTER))
}

/// Registers a new device (with `one_time` one-time prekeys) for `number`:
/// asks for a code, reads it from `sink` (waiting up to `otp_limit`),
/// verifies it.
pub async fn register_phone(
    api: &Api,
    sink: &SmsSink,
    number: &str,
    one_time: u32,
    otp_limit: Duration,
) -> Result<PhoneDevice> {
    let (dev, registration) = new_phone_device(one_time, api.server_now_ms())?;
    let waiter = sink.expect(number);
    let t0 = Instant::now();
    start(api, number).await?;
    let otp = waiter.code(otp_limit).await?;
    let otp_wait = t0.elapsed();
    let req = PhoneVerify {
        number: number.to_string(),
        otp,
        by_sms: false,
        username: dev.name.clone(),
        registration,
    };
    let verified: PhoneVerified = api
        .json(dev.key(), Method::POST, paths::PHONE_VERIFY, Some(&req))
        .await?;
    Ok(PhoneDevice {
        number: number.to_string(),
        dev,
        delivered: verified.delivered,
        otp_wait_us: us(otp_wait),
        total_us: us(t0.elapsed()),
    })
}

/// Registers every number of `numbers`, `concurrency` at a time, printing
/// progress every 5 s; fails on the first failure. Devices come back in
/// the order of `numbers`.
pub async fn register_phones(
    api: &Api,
    sink: &SmsSink,
    numbers: Vec<String>,
    one_time: u32,
    concurrency: usize,
    otp_limit: Duration,
) -> Result<Vec<PhoneDevice>> {
    let total = numbers.len();
    let done = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let t0 = Instant::now();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let d = done.load(Relaxed);
                let secs = t0.elapsed().as_secs_f64();
                println!(
                    "register: {d}/{total} numbers in {secs:.0}s ({:.0}/s)",
                    d as f64 / secs
                );
            }
        })
    };
    let mut hs = Vec::with_capacity(total);
    for number in numbers {
        let (api, sink, sem, done) = (api.clone(), sink.clone(), sem.clone(), done.clone());
        hs.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let d = register_phone(&api, &sink, &number, one_time, otp_limit).await;
            done.fetch_add(1, Relaxed);
            d
        }));
    }
    let mut out = Vec::with_capacity(total);
    let mut first_err = None;
    for h in hs {
        match h.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(d) => out.push(d),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    progress.abort();
    match first_err {
        None => Ok(out),
        Some(e) => Err(format!(
            "{} of {total} registrations failed; first: {e}",
            total - out.len()
        )),
    }
}

/// What one device found in its mailbox.
#[derive(Default, Debug)]
pub struct Opened {
    /// The texts of the datagrams that opened, in mailbox order.
    pub texts: Vec<String>,
    /// Items that did not open, or opened to something not a text.
    pub failed: u64,
}

/// Fetches every item in `dev`'s mailbox (`GET /v1/mailbox`, pages of
/// 500), opens each (in seq order), keeps each text body and acknowledges
/// the items (`POST /v1/mailbox/ack`).
pub async fn drain_and_open(api: &Api, dev: &mut SimDevice) -> Result<Opened> {
    let mut out = Opened::default();
    let mut after = 0u64;
    // bounded: 100 pages of 500
    for _ in 0..100 {
        let path = paths::mailbox(after, 500);
        let batch: MailboxBatch = api.json(dev.key(), Method::GET, &path, None::<&()>).await?;
        let mut seqs = Vec::with_capacity(batch.items.len());
        for item in &batch.items {
            after = after.max(item.seq);
            seqs.push(item.seq);
            let text = b64::decode(&item.datagram)
                .and_then(|d| dev.device.open(&d).ok())
                .and_then(|o| sotto_device::TextBody::decode(&o.payload.body));
            match text {
                Some(t) => out.texts.push(t.text),
                None => out.failed += 1,
            }
        }
        dev.device.take_changes();
        if !seqs.is_empty() {
            let _: serde_json::Value = api
                .json(
                    dev.key(),
                    Method::POST,
                    paths::MAILBOX_ACK,
                    Some(&Ack { seqs }),
                )
                .await?;
        }
        if !batch.more || batch.items.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// The text of the `k`-th message of a run, `bytes` long (at least its
/// marker): `lg <run> <k> ` then `x`s.
pub fn message_text(run: u32, k: u64, bytes: usize) -> String {
    let mut s = format!("lg {run:08x} {k} ");
    while s.len() < bytes {
        s.push('x');
    }
    s
}

/// The `k` of a text made by [`message_text`] for `run`.
pub fn message_index(run: u32, text: &str) -> Option<u64> {
    let mut w = text.split(' ');
    (w.next()? == "lg" && w.next()? == format!("{run:08x}")).then_some(())?;
    w.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_texts_carry_their_index() {
        let t = message_text(0xab, 42, 200);
        assert_eq!(t.len(), 200);
        assert_eq!(message_index(0xab, &t), Some(42));
        assert_eq!(message_index(0xac, &t), None);
        assert_eq!(message_index(0xab, &message_text(0xab, 7, 1)), Some(7));
        assert_eq!(message_index(0xab, "Your appointment"), None);
    }
}
