//! Linking a new device to an existing user: [`Client::link_start`] on the
//! new device, [`Client::approve`] on the device holding the user key,
//! [`LinkPending::wait_approval`] and [`LinkApproved::finish`] back on the
//! new device. The keys, the code and
//! what the approval must certify are the device core's
//! ([`sotto_device::NewDevice`]); this file moves them over HTTP.

use std::path::Path;
use std::time::Duration;

use rand_core::OsRng;
use reqwest::{Method, StatusCode};
use sotto_api::{b64, paths, LinkCreated, LinkRequest, LinkStatus};
use sotto_device::{DeviceInfo, Home, Joining, NewDevice};
use sotto_store::client::ClientStore;
use zeroize::Zeroizing;

use crate::exec::{b64_prekeys, lookup_user};
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
            proof: hex::encode(device.request_proof()),
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
    /// Checks the waiting request was made by the device showing the code,
    /// certifies its keys, and hands it this user's name, contacts and
    /// block list, signed by the user key and sealed under the code.
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
    code: Zeroizing<String>,
}

impl LinkPending {
    /// The code to show the user; they type it into the approving device.
    /// It names the request and carries the link secret (never sent to
    /// the server), which binds the approval to this device.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The pinned server certificate fingerprint (to show the user).
    pub fn fingerprint(&self) -> Option<String> {
        self.api.fingerprint()
    }

    /// Waits (polling every half second, up to `timeout`) until an
    /// existing device approved the request, then checks the approval: it
    /// must open with this device's link secret, carry a certificate for
    /// this device signed by the user key that also signed the approval,
    /// and name a user the directory lists under that key. Nothing is
    /// stored yet: show [`LinkApproved::username`] and
    /// [`LinkApproved::fingerprint`], then [`LinkApproved::finish`].
    pub async fn wait_approval(self, timeout: Duration) -> Result<LinkApproved> {
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
        // Without an approval sealed with this device's code, nobody who
        // holds the code approved: whatever the server says.
        let sealed = status
            .approval
            .as_deref()
            .and_then(b64::decode)
            .ok_or(sotto_device::Error::LinkForged)?;
        let approval = device.open_approval(&link_id, &sealed)?;
        let dir = lookup_user(&api, &approval.username_hash(), Some(device.key())).await?;
        let joining = approval.check_directory(dir.as_ref())?;
        Ok(LinkApproved {
            store,
            api,
            device,
            joining,
        })
    }

    /// [`LinkPending::wait_approval`], then [`LinkApproved::finish`] with
    /// no expected user.
    pub async fn wait(self, timeout: Duration) -> Result<Client> {
        self.wait_approval(timeout).await?.finish(None).await
    }
}

/// A new device whose approval checked out (see
/// [`LinkPending::wait_approval`]), not yet stored.
pub struct LinkApproved {
    store: ClientStore,
    api: Api,
    device: NewDevice,
    joining: Joining,
}

impl LinkApproved {
    /// The user whose account this device is about to join (checked
    /// against the directory).
    pub fn username(&self) -> &str {
        self.joining.username()
    }

    /// That account's safety fingerprint: its half of every safety number
    /// (`verify`) with that user.
    pub fn fingerprint(&self) -> String {
        self.joining.fingerprint()
    }

    /// Joins the account: refuses ([`sotto_device::Error::ApprovedByAnotherUser`],
    /// nothing stored) if `expected_user` is given and is not the approving
    /// user; else stores the account with its name, contacts and block
    /// list, and returns the client.
    pub async fn finish(self, expected_user: Option<&str>) -> Result<Client> {
        let LinkApproved {
            store,
            api,
            device,
            joining,
        } = self;
        let home = Home {
            server_url: api.base.clone(),
            server_fingerprint: api
                .fingerprint()
                .ok_or_else(|| Error::BadResponse("no certificate seen".into()))?,
            clock_offset_ms: api.offset().await?,
        };
        let core = device.finish(
            joining,
            expected_user,
            Box::new(store.clone()),
            Box::new(OsRng),
            home,
        )?;
        Ok(Client::assemble(store, core, Some(api)))
    }
}
