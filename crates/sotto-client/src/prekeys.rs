//! One-time prekeys: generating them, and keeping the server's pool of
//! this device's prekeys (and its reserve key) filled.

use rand_core::OsRng;
use reqwest::Method;
use sotto_api::{b64, PrekeyUpload};
use sotto_proto::Device;

use crate::net::NO_BODY;
use crate::{Client, PrekeyStatus, Result, PREKEY_BATCH, PREKEY_LOW};

/// Generates `n` one-time prekeys (and a reserve key if `reserve`) on
/// `device`; returns their public halves, base64.
pub(crate) fn generate_prekeys(
    device: &mut Device,
    n: u32,
    reserve: bool,
) -> (Vec<String>, Option<String>) {
    let one_time = device
        .generate_prekeys(&mut OsRng, n)
        .iter()
        .map(|p| b64::encode(&p.encode()))
        .collect();
    let reserve = reserve.then(|| b64::encode(&device.generate_reserve(&mut OsRng).encode()));
    (one_time, reserve)
}

impl Client {
    /// Refills the server's pool of this device's one-time prekeys if fewer
    /// than [`PREKEY_LOW`] are left (and replaces the reserve key if it was
    /// served). Returns how many were uploaded.
    pub async fn refill_prekeys_if_low(&mut self) -> Result<u32> {
        let status = self.prekey_status().await?;
        if status.one_time >= PREKEY_LOW && status.reserve_served == 0 {
            return Ok(0);
        }
        self.upload_prekeys(status.reserve_served > 0).await
    }

    /// Uploads [`PREKEY_BATCH`] new one-time prekeys and a new reserve key.
    pub async fn refill_prekeys(&mut self) -> Result<u32> {
        self.upload_prekeys(true).await
    }

    /// The server's count of this device's unclaimed one-time prekeys.
    pub async fn prekey_status(&self) -> Result<PrekeyStatus> {
        Ok(self
            .api
            .call(Method::GET, "/v1/prekeys", NO_BODY, Some(self.device.key()))
            .await?)
    }

    async fn upload_prekeys(&mut self, reserve: bool) -> Result<u32> {
        let _guard = self.begin().await?;
        let (prekeys, reserve) = generate_prekeys(&mut self.device, PREKEY_BATCH, reserve);
        // Secrets are durable before the public halves leave the device.
        self.store.save_device(&mut self.device)?;
        let n = prekeys.len() as u32;
        let _: PrekeyStatus = self
            .api
            .call(
                Method::POST,
                "/v1/prekeys",
                Some(&PrekeyUpload { prekeys, reserve }),
                Some(self.device.key()),
            )
            .await?;
        Ok(n)
    }
}
