//! Registering this device for a phone number (S4-S6): the server texts a
//! code that the user types ([`Client::phone_register`] then
//! [`Client::phone_verify`] with the code), or the app makes the code,
//! sends it over HTTPS and the handset texts it to the server
//! (`by_sms`; [`Client::phone_verify`] without a code waits for that SMS).
//! The device becomes the first device of a new user with a random name
//! (`tel-` and 16 hex digits): the number is not a username and never
//! leaves the device except to the server. Messages held for the number
//! arrive with the next sync.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use reqwest::Method;
use sotto_api::phone::{PhoneStart, PhoneStarted, PhoneVerified, PhoneVerify};
use sotto_api::{b64, paths, username_hash, RegisterRequest};
use sotto_device::{Home, NewUser};
use sotto_store::client::{ClientStore, PendingPhone};

use crate::exec::b64_prekeys;
use crate::net::{local_ms, Api, ApiResult, Failure};
use crate::setup::store_or_create;
use crate::{parse_fingerprint, Client, Error, Result};

/// What [`Client::phone_register`] started.
#[derive(Clone, Debug)]
pub struct PhoneRegistration {
    /// The pinned server certificate.
    pub fingerprint: String,
    /// Seconds the code stays valid.
    pub expires_in: u64,
    /// `by_sms`: the SMS the handset must send: (text, to number).
    pub sms: Option<(String, String)>,
}

/// Digits of an app-made code.
const APP_OTP_DIGITS: usize = 8;

fn app_otp() -> String {
    let mut out = String::with_capacity(APP_OTP_DIGITS);
    while out.len() < APP_OTP_DIGITS {
        let b = (OsRng.next_u32() & 0xff) as u8;
        // Rejection sampling keeps the digits uniform.
        if b < 250 {
            out.push((b'0' + b % 10) as char);
        }
    }
    out
}

impl Client {
    /// Asks the server at `server_url` to register `number` (E.164) on
    /// this new device in `home`: the server texts a code, or, `by_sms`,
    /// the app makes one and the returned SMS must be sent from the
    /// handset. Finish with [`Client::phone_verify`].
    pub async fn phone_register(
        home: &Path,
        passphrase: &str,
        number: &str,
        server_url: &str,
        fingerprint: Option<&str>,
        by_sms: bool,
    ) -> Result<PhoneRegistration> {
        if !sotto_api::phone::is_e164(number) {
            return Err(Error::BadNumber(number.to_string()));
        }
        let expected = fingerprint.map(parse_fingerprint).transpose()?;
        let api = Api::new(server_url, expected)?;
        let store = store_or_create(home, passphrase)?;
        let otp = by_sms.then(app_otp);
        let req = PhoneStart {
            number: number.to_string(),
            otp: otp.clone(),
        };
        let started: PhoneStarted = api
            .call(Method::POST, paths::PHONE_REGISTER, Some(&req), None)
            .await?;
        let fp = api
            .fingerprint()
            .ok_or_else(|| Error::BadResponse("no certificate seen".into()))?;
        store.set_pending_phone(&PendingPhone {
            number: number.to_string(),
            server_url: api.base.clone(),
            server_fingerprint: fp.clone(),
            otp,
        })?;
        Ok(PhoneRegistration {
            fingerprint: fp,
            expires_in: started.expires_in,
            sms: started.sms_text.zip(started.sms_to),
        })
    }

    /// Finishes a phone registration: with the code the server texted
    /// (`otp`), or, after a `by_sms` start, waiting up to `wait` for the
    /// handset's SMS to reach the server. Returns the new device and how
    /// many held messages were sealed to it.
    pub async fn phone_verify(
        home: &Path,
        passphrase: &str,
        otp: Option<&str>,
        wait: Duration,
    ) -> Result<(Client, u32)> {
        let store = ClientStore::open(home, passphrase)?;
        if store.account()?.is_some() {
            return Err(Error::AlreadyRegistered(home.to_path_buf()));
        }
        let pending = store.pending_phone()?.ok_or(Error::NoPendingPhone)?;
        let (code, by_sms) = match (otp, &pending.otp) {
            (Some(o), _) => (o.trim().to_string(), false),
            (None, Some(app)) => (app.clone(), true),
            (None, None) => return Err(Error::NoPendingPhone),
        };
        let api = Api::new(
            &pending.server_url,
            Some(pending.server_fingerprint.clone()),
        )?;
        let offset = api.offset().await?;
        let now = local_ms().saturating_add_signed(offset);
        let mut name = [0u8; 8];
        OsRng.fill_bytes(&mut name);
        let username = format!("tel-{}", hex::encode(name));
        let new = NewUser::new(&mut OsRng, now, &username)?;
        let req = PhoneVerify {
            number: pending.number.clone(),
            otp: code,
            by_sms,
            username: username.clone(),
            registration: RegisterRequest {
                username_hash: hex::encode(username_hash(&username)),
                cert: b64::encode(&new.cert().encode()),
                prekeys: b64_prekeys(new.prekeys()),
                reserve: b64::encode(&new.reserve().encode()),
            },
        };
        let started = Instant::now();
        let verified = loop {
            let r: ApiResult<PhoneVerified> = api
                .call(
                    Method::POST,
                    paths::PHONE_VERIFY,
                    Some(&req),
                    Some(new.device_key()),
                )
                .await;
            match r {
                Ok(v) => break v,
                Err(Failure::Api(e)) if e.code == "sms_pending" && started.elapsed() < wait => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let home_info = Home {
            server_url: api.base.clone(),
            server_fingerprint: pending.server_fingerprint,
            clock_offset_ms: offset,
        };
        let core = new.finish(Box::new(store.clone()), Box::new(OsRng), home_info)?;
        store.clear_pending_phone()?;
        Ok((Client::assemble(store, core, Some(api)), verified.delivered))
    }

    /// Organisations this device has heard from: username -> display name
    /// (as the server's directory vouched for it).
    pub fn organisations(&self) -> Result<HashMap<String, String>> {
        Ok(self.store.organisations()?.into_iter().collect())
    }
}
