//! Linking a new device to an existing user: [`Client::link_start`] on the
//! new device, [`Client::approve`] on the device holding the user key,
//! [`LinkPending::wait`] back on the new device. The keys, the code and
//! what the approval must certify are the device core's
//! ([`sotto_device::NewDevice`]); this file moves them over HTTP.

use std::path::Path;
use std::time::Duration;

use rand_core::OsRng;
use reqwest::{Method, StatusCode};
use sotto_api::{b64, paths, LinkCreated, LinkRequest, LinkStatus};
use sotto_device::{DeviceInfo, Home, NewDevice};
use sotto_store::client::ClientStore;

use crate::exec::b64_prekeys;
use crate::net::{Api, Failure, NO_BODY};
use crate::setup::store_or_create;
use crate::{parse_fingerprint, Client, Error, Result};

impl Client {
    /// Starts linking a new device in `home` to an existing user: creates
    /// its keys and asks the server to hold the request. Show
    /// [`LinkPending::code`] to the user, who approves it on an existing
    /// device ([`Client::approve`]); then call [`LinkPending::wait`].
    pub async fn link_start(
        home: &Path,
        passphrase: &str,
        server_url: &str,
        fingerprint: Option<&str>,
    ) -> Result<LinkPending> {
        let expected = fingerprint.map(parse_fingerprint).transpose()?;
        let api = Api::new(server_url, expected)?;
        let store = store_or_create(home, passphrase)?;
        let device = NewDevice::new(&mut OsRng);
        let public = device.public_keys();
        let req = LinkRequest {
            device: hex::encode(public.id.0),
            dh: hex::encode(public.dh),
            prekeys: b64_prekeys(device.prekeys()),
            reserve: b64::encode(&device.reserve().encode()),
        };
        let created: LinkCreated = api
            .call(Method::POST, paths::LINK, Some(&req), Some(device.key()))
            .await?;
        let code = device.code(&created.link_id)?;
        Ok(LinkPending {
            store,
            api,
            device,
            link_id: created.link_id,
            code,
        })
    }

    /// Approves a new device of this user from its link `code` (as printed
    /// by the new device). Needs the user key (the registering device).
    /// Checks the code names the waiting device's keys, certifies them, and
    /// sends the new device this user's name, contacts and block list.
    pub async fn approve(&mut self, code: &str) -> Result<DeviceInfo> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.approve(now, code)?;
        self.run(op).await
    }
}

/// A new device waiting for approval (see [`Client::link_start`]).
pub struct LinkPending {
    store: ClientStore,
    api: Api,
    device: NewDevice,
    link_id: String,
    code: String,
}

impl LinkPending {
    /// The code to show the user; they type it into the approving device.
    /// It names the request and a hash of this device's keys.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The pinned server certificate fingerprint (to show the user).
    pub fn fingerprint(&self) -> Option<String> {
        self.api.fingerprint()
    }

    /// Waits (polling every half second, up to `timeout`) until an
    /// existing device approved the request, stores the certificate, then
    /// syncs until the approving device's link data (username, contacts)
    /// arrived (up to 30 s more; `LinkIncomplete` if it did not).
    pub async fn wait(self, timeout: Duration) -> Result<Client> {
        let LinkPending {
            store,
            api,
            device,
            link_id,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + timeout;
        let path = paths::link_status(&link_id);
        let status = loop {
            let st: LinkStatus = match api.call(Method::GET, &path, NO_BODY, None).await {
                Ok(st) => st,
                Err(Failure::Api(e)) if e.status == StatusCode::NOT_FOUND => {
                    return Err(sotto_device::Error::LinkExpired.into())
                }
                Err(e) => return Err(e.into()),
            };
            if st.approved {
                break st;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(sotto_device::Error::LinkExpired.into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let cert = status
            .cert
            .as_deref()
            .and_then(b64::decode)
            .ok_or_else(|| Error::BadResponse("approved link without a certificate".into()))?;
        let home = Home {
            server_url: api.base.clone(),
            server_fingerprint: api
                .fingerprint()
                .ok_or_else(|| Error::BadResponse("no certificate seen".into()))?,
            clock_offset_ms: api.offset().await?,
        };
        let core = device.finish(&cert, Box::new(store.clone()), Box::new(OsRng), home)?;
        let mut client = Client::assemble(store, core, Some(api));
        let sync_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            client.sync().await?;
            if !client.username().is_empty() {
                return Ok(client);
            }
            if tokio::time::Instant::now() >= sync_deadline {
                return Err(sotto_device::Error::LinkIncomplete.into());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
